package bpfctl

import (
	"encoding/hex"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// watchRecord is one line of `map watch -j`.
type watchRecord struct {
	CPU  *int   `json:"cpu,omitempty"`
	Size int    `json:"size"`
	Data string `json:"data"`
}

// watchLost is a perf ring's loss report in `map watch -j`.
type watchLost struct {
	CPU  int    `json:"cpu"`
	Lost uint64 `json:"lost"`
}

func (a *App) mapWatchCommand() *cobra.Command {
	var count int
	var duration time.Duration
	var consume bool
	var buffer int
	cmd := &cobra.Command{
		Use:   "watch PIN",
		Short: "Print ring buffer or perf event array records as they arrive",
		Long: `Print the records programs write to a ring buffer (bpf_ringbuf_output,
reserve/submit) or a perf event array (bpf_perf_event_output) as they
arrive, read through shared memory: one line a record, "SIZE bytes: HEX"
(perf: "cpu N: SIZE bytes: HEX", and "cpu N: lost COUNT samples" when a
ring had no room). With -j, one JSON object a line: {"size", "data" (hex),
"cpu" for perf} or {"cpu", "lost"}.

A ring buffer is watched with read access only, without consuming: its
consumer still gets every record, and watch sees what the consumer has not
let producers overwrite (--consume takes the records instead: write
access). A perf event array has one consumer per slot: watch attaches a
ring of --buffer bytes to each CPU's slot (write access), detaching the
rings another reader had there, as bpftool map event_pipe does; they are
detached again when watch ends.

It stops after --count records or --duration, or at SIGINT/SIGTERM.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 0 || duration < 0 || buffer <= 0 {
				return usagef("--count and --duration must not be negative, --buffer must be positive")
			}
			mode := client.ModeRead
			if consume {
				mode = client.ModeReadWrite
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			// The type decides the mode: open read-only first.
			m, err := c.OpenPinnedMap(args[0], client.ModeRead)
			if err != nil {
				return wrongKind(fail("watch: "+args[0], kOpen, false, err), "map")
			}
			if m.Type() == client.PerfEventArray {
				mode = client.ModeReadWrite
			}
			if mode != client.ModeRead {
				m.Close()
				if m, err = c.OpenPinnedMap(args[0], mode); err != nil {
					return wrongKind(fail("watch: "+args[0], kOpen, false, err), "map")
				}
			}
			defer m.Close()
			var read func() (int, []byte, uint64, error)
			var closeReader func()
			var setDeadline func(time.Time)
			switch m.Type() {
			case client.RingBuf:
				r, err := client.NewRingbufReader(m)
				if err != nil {
					return fail("watch", kRead, false, err)
				}
				var rec client.RingbufRecord
				read = func() (int, []byte, uint64, error) { err := r.ReadInto(&rec); return -1, rec.RawSample, 0, err }
				closeReader, setDeadline = func() { r.Close() }, r.SetDeadline
			case client.PerfEventArray:
				r, err := client.NewPerfReader(m, buffer)
				if err != nil {
					return fail("watch", kWrite, false, err)
				}
				var rec client.PerfRecord
				read = func() (int, []byte, uint64, error) {
					err := r.ReadInto(&rec)
					return rec.CPU, rec.RawSample, rec.LostSamples, err
				}
				closeReader, setDeadline = func() { r.Close() }, r.SetDeadline
			default:
				return usagef("%s is a %s map: watch reads ring buffers and perf event arrays", args[0], mapTypeName(m.Type()))
			}
			defer closeReader()
			if duration > 0 {
				setDeadline(time.Now().Add(duration))
			}
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-sigs:
					closeReader()
				case <-done:
				}
			}()
			for n := 0; count == 0 || n < count; {
				cpu, data, lost, err := read()
				switch {
				case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, client.ErrReaderClosed):
					return nil
				case err != nil:
					return fail("watch", kRead, false, err)
				}
				a.printWatch(cpu, data, lost)
				if lost == 0 {
					n++
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&count, "count", "n", 0, "stop after N records (0: no limit)")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: no limit)")
	f.BoolVar(&consume, "consume", false, "ring buffers: consume the records (needs write access) instead of observing")
	f.IntVar(&buffer, "buffer", 64<<10, "perf event arrays: the bytes of each CPU's ring (rounded up to a power-of-two number of pages)")
	return cmd
}

// printWatch prints one record (cpu < 0: a ring buffer's) or loss report.
func (a *App) printWatch(cpu int, data []byte, lost uint64) {
	switch {
	case a.json && lost != 0:
		a.printJSON(watchLost{CPU: cpu, Lost: lost})
	case a.json:
		rec := watchRecord{Size: len(data), Data: hex.EncodeToString(data)}
		if cpu >= 0 {
			rec.CPU = &cpu
		}
		a.printJSON(rec)
	case lost != 0:
		a.printf("cpu %d: lost %d samples\n", cpu, lost)
	case cpu >= 0:
		a.printf("cpu %d: %d bytes: %s\n", cpu, len(data), hexBytes(data))
	default:
		a.printf("%d bytes: %s\n", len(data), hexBytes(data))
	}
}

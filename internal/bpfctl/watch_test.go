package bpfctl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// watchProgram writes 8 bytes of the packet (from the IP header on) to
// m: bpf_ringbuf_output for a ring buffer, bpf_perf_event_output to the
// current CPU's slot for a perf event array. It returns the helper's
// result.
func watchProgram(t *testing.T, c *client.Conn, m *client.Map) *client.Program {
	t.Helper()
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 8), asm.FnSkbLoadBytes.Call(),
	}
	if m.Type() == client.RingBuf {
		insns = append(insns, asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8), asm.Mov.Imm(asm.R4, 0), asm.FnRingbufOutput.Call())
	} else {
		insns = append(insns, asm.Mov.Reg(asm.R1, asm.R6), asm.LoadMapPtr(asm.R2, m.FD()),
			asm.LoadImm(asm.R3, 0xffffffff, asm.DWord), // BPF_F_CURRENT_CPU
			asm.Mov.Reg(asm.R4, asm.R10), asm.Add.Imm(asm.R4, -8), asm.Mov.Imm(asm.R5, 8),
			asm.FnPerfEventOutput.Call())
	}
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.SocketFilter, License: "GPL", Instructions: append(insns, asm.Return())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestMapWatch: map watch prints each record of a ring buffer or a perf
// event array as it arrives (each line is read before the next record is
// written), as text and as JSON lines, and stops after --count.
func TestMapWatch(t *testing.T) {
	d := startDaemon(t)
	c, err := client.Dial(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ring := client.MapSpec{Type: client.RingBuf, MaxEntries: 4096}
	perf := client.MapSpec{Type: client.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: uint32(client.PossibleCPUs())}
	tests := []struct {
		name string
		spec client.MapSpec
		json bool
		want *regexp.Regexp // %02x is the record's number
	}{
		{name: "ringbuf", spec: ring, want: regexp.MustCompile(`^8 bytes: 45 %02x 00 00 00 00 00 00$`)},
		{name: "ringbuf-json", spec: ring, json: true, want: regexp.MustCompile(`^\{"size":8,"data":"45%02x000000000000"\}$`)},
		{name: "perf", spec: perf, want: regexp.MustCompile(`^cpu \d+: 12 bytes: 45 %02x 00 00 00 00 00 00 00 00 00 00$`)},
		{name: "perf-json", spec: perf, json: true, want: regexp.MustCompile(`^\{"cpu":\d+,"size":12,"data":"45%02x00000000000000000000"\}$`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := c.NewMap(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := c.Pin(m, tc.name, 0o600); err != nil {
				t.Fatal(err)
			}
			p := watchProgram(t, c, m)
			pr, pw := io.Pipe()
			var errb bytes.Buffer
			a := &App{Stdin: strings.NewReader(""), Stdout: pw, Stderr: &errb, Getenv: func(string) string { return "" }}
			args := []string{"--socket", d.socket, "map", "watch", tc.name, "-n", "3"}
			if tc.json {
				args = append(args, "-j")
			}
			code := make(chan int, 1)
			go func() { code <- a.Run(args); pw.Close() }()
			lines := bufio.NewScanner(pr)
			for i := 1; i <= 3; i++ {
				pkt := make([]byte, 14+20)
				pkt[12], pkt[14], pkt[15] = 0x08, 0x45, byte(i)
				// A perf event array takes samples once watch attached
				// its rings: until then the output finds empty slots.
				for give := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					ret, err := p.Run(&client.RunOptions{Data: pkt})
					if err != nil {
						t.Fatal(err)
					}
					if ret == 0 {
						break
					}
					if time.Now().After(give) {
						t.Fatalf("the program's output still fails (%d) after 10s: %s", int32(ret), errb.String())
					}
				}
				if !lines.Scan() {
					t.Fatalf("watch ended before record %d: %v %s", i, lines.Err(), errb.String())
				}
				want := regexp.MustCompile(fmt.Sprintf(tc.want.String(), i))
				if !want.MatchString(lines.Text()) {
					t.Fatalf("record %d: %q, want %s", i, lines.Text(), want)
				}
				if tc.json && !json.Valid(lines.Bytes()) {
					t.Fatalf("not JSON: %q", lines.Text())
				}
			}
			select {
			case c := <-code:
				if c != 0 {
					t.Fatalf("exit %d: %s", c, errb.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("watch did not stop after --count records")
			}
			if lines.Scan() {
				t.Fatalf("extra output %q", lines.Text())
			}
		})
	}
}

// TestMapWatchRefusals: watch reads ring buffers and perf event arrays
// only; --duration ends a watch with nothing to print.
func TestMapWatchRefusals(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "map", "create", "hash", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "h")
	r := d.run(t, "map", "watch", "h")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "ring buffers and perf event arrays") {
		t.Fatalf("watch of a hash: exit %d, stderr %q", r.code, r.stderr)
	}
	r = d.run(t, "map", "watch", "nothing")
	if r.code != ExitFailed {
		t.Fatalf("watch of a missing pin: exit %d, stderr %q", r.code, r.stderr)
	}
	d.mustRun(t, "map", "create", "27", "--key-size", "0", "--value-size", "0", "--max-entries", "4096", "--pin", "rb")
	start := time.Now()
	r = d.mustRun(t, "map", "watch", "rb", "--duration", "100ms")
	if r.stdout != "" || time.Since(start) > 5*time.Second {
		t.Fatalf("an idle watch printed %q", r.stdout)
	}
}

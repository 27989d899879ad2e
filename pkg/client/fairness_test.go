package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/sched"
)

// floodConnsEnv tells a flooder child how many connections to open.
const floodConnsEnv = "BPFD_FLOOD_CONNS"

// spinInsns is a socket filter whose every run executes about 30k
// instructions (tens of microseconds): test runs of it with a huge repeat
// count keep a bulk slot busy until the daemon's 2 s cut.
func spinInsns() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Add.Imm(asm.R0, 1).WithSymbol("loop"),
		asm.JLT.Imm(asm.R0, 10000, "loop"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// longInsns is a straight-line program of n instructions: its
// verification costs in proportion.
func longInsns(n int) asm.Instructions {
	insns := make(asm.Instructions, 0, n+2)
	insns = append(insns, asm.Mov.Imm(asm.R0, 0))
	for i := 0; i < n; i++ {
		insns = append(insns, asm.Add.Imm(asm.R0, int32(i&7)))
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
}

// childFlooder opens $BPFD_FLOOD_CONNS connections to the daemon and, on
// each, loops over bulk work — half verifications of long programs, half
// test runs cut at the daemon's 2 s limit — until stdin closes. It prints
// "flooding" once every connection has a request in flight.
func childFlooder() error {
	n, err := strconv.Atoi(os.Getenv(floodConnsEnv))
	if err != nil || n <= 0 {
		return fmt.Errorf("bad %s", floodConnsEnv)
	}
	path := os.Getenv(socketEnvTest)
	var started sync.WaitGroup
	started.Add(n)
	errs := make(chan error, n)
	// Every connection loads its programs first, then all flood at once.
	flood := make(chan struct{})
	for i := range n {
		go func() {
			c, err := Dial(path)
			if err != nil {
				errs <- err
				started.Done()
				return
			}
			// The flood's verifications may use up the uid's memory
			// quota for a while (ENOMEM): an attacker tries again.
			var spin *Program
			for {
				if spin, err = c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: spinInsns(), License: "GPL"}); err == nil {
					break
				}
				if !errors.Is(err, ErrNoMemory) {
					errs <- err
					started.Done()
					return
				}
				time.Sleep(time.Millisecond)
			}
			long := longInsns(20000)
			started.Done()
			<-flood
			for {
				var err error
				if i%2 == 0 {
					var p *Program
					if p, err = c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: long, License: "GPL"}); err == nil {
						p.Close()
					}
				} else {
					_, err = spin.Run(&RunOptions{Data: make([]byte, 14), Repeat: 1 << 30})
				}
				if errors.Is(err, ErrClosed) {
					return
				}
			}
		}()
	}
	started.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	close(flood)
	fmt.Println("flooding")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// startFlooder starts a flooder child against the daemon at path with
// conns connections (as nobody when we are root) and waits until it
// floods; it is stopped at cleanup.
func startFlooder(t testing.TB, path string, conns int) {
	t.Helper()
	cmd := child(t, "flooder", nil, socketEnvTest+"="+path, fmt.Sprintf("%s=%d", floodConnsEnv, conns))
	startFlooderCmd(t, cmd)
}

func startFlooderCmd(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "flooding" {
		t.Fatalf("flooder: %q, %v", line, err)
	}
}

// TestFairnessUnderFlood: while uid 65534 floods the bulk lane from 16
// connections (verifications and test runs), root's element operations
// and status complete (they never queue behind bulk work), and root's
// own verification and test run complete while the flood still waits for
// slots (DRR serves a newcomer at the next slice boundary). Functional:
// nothing here is timed.
func TestFairnessUnderFlood(t *testing.T) {
	if _, other := childUID(); !other {
		t.Skip("needs root: fairness is between uids, and the flood must run as another one (uid 65534)")
	}
	s := startServer(t)
	c := s.dial(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1024})
	m.SetSharedMemoryReads(false) // lookups are round trips through the fast lane
	for i := range 1024 {
		if err := m.Update(u32(uint32(i)), u64(uint64(i)), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	startFlooder(t, s.path, 16)

	floodWaits := func() bool {
		for _, u := range s.srv.Stats().UIDs {
			if u.UID == 65534 && u.BulkWaiting > 0 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !floodWaits() {
		if time.Now().After(deadline) {
			t.Fatalf("the flood never saturated the bulk lane: %+v", s.srv.Stats())
		}
		time.Sleep(time.Millisecond)
	}

	t1 := time.Now()
	// The fast lane: lookups and status from root, a fixed number of
	// them, while the flood goes on; and the bulk lane, fairly shared:
	// root's verification and test run complete although uid 65534 keeps
	// 15 turns waiting.
	const perWorker = 500
	var lookups, statuses atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, 8)
			for i := uint32(0); i < perWorker; i++ {
				if err := m.Lookup(u32(i%1024), v); err != nil {
					t.Errorf("lookup under flood: %v", err)
					return
				}
				lookups.Add(1)
				if i%16 == 0 {
					if _, err := c.Status(); err != nil {
						t.Errorf("status under flood: %v", err)
						return
					}
					statuses.Add(1)
				}
			}
		}()
	}
	p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: longInsns(20000), License: "GPL"})
	if err != nil {
		t.Fatalf("root's load under flood: %v", err)
	}
	defer p.Close()
	opts := &RunOptions{Data: make([]byte, 14), Repeat: 100}
	if _, err := p.Run(opts); err != nil {
		t.Fatalf("root's test run under flood: %v", err)
	}
	wg.Wait()
	if !floodWaits() {
		t.Fatal("the flood stopped waiting before root's work was done: nothing was shown")
	}
	if lookups.Load() != 2*perWorker || statuses.Load() != 2*((perWorker+15)/16) {
		t.Fatalf("only %d lookups and %d status calls completed", lookups.Load(), statuses.Load())
	}
	var rootCPU, floodCPU float64
	for _, u := range s.srv.Stats().UIDs {
		switch u.UID {
		case 0:
			rootCPU = u.BulkCPU
		case 65534:
			floodCPU = u.BulkCPU
		}
	}
	if rootCPU <= 0 || floodCPU <= 0 {
		t.Fatalf("bulk CPU accounted: root %v s, uid 65534 %v s", rootCPU, floodCPU)
	}
	t.Logf("flood saturated after %v; under it, %d lookups, %d status calls and root's load and run took %v; bulk CPU root %.3f s, uid 65534 %.3f s",
		t1.Sub(t0).Round(time.Millisecond), lookups.Load(), statuses.Load(), time.Since(t1).Round(time.Millisecond), rootCPU, floodCPU)
}

// TestSeccompHeavyProgram: a seccomp program whose decisions take longer
// than a bulk-lane slice has its following decisions run in the bulk lane
// for its owner's uid (visible as that uid's bulk CPU), and they are still
// the program's decisions.
func TestSeccompHeavyProgram(t *testing.T) {
	s := startServerWith(t, func(string) *demux.Config {
		return &demux.Config{Logger: zap.NewNop(), Sched: sched.Config{Slice: 20 * time.Microsecond}}
	})
	c := s.dial(t)
	const (
		retAllow = 0x7fff0000
		retErrno = 0x00050000
	)
	// 50k loop iterations (100k instructions, far beyond 20 µs), then
	// socket(AF_INET6, ...) gets EPERM and everything else is allowed.
	p, err := c.LoadProgram(ProgramSpec{Type: Seccomp, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R0, 0),
		asm.Add.Imm(asm.R0, 1).WithSymbol("spin"),
		asm.JLT.Imm(asm.R0, 50000, "spin"),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // nr
		asm.JNE.Imm(asm.R2, unix.SYS_SOCKET, "allow"),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.DWord), // args[0]
		asm.JNE.Imm(asm.R2, unix.AF_INET6, "allow"),
		asm.Mov.Imm32(asm.R0, retErrno|int32(unix.EPERM)),
		asm.Return(),
		asm.Mov.Imm32(asm.R0, retAllow).WithSymbol("allow"),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cmd := sameUserChild(t, "sockprobe", nil)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	run, err := p.StartSeccomp(cmd, &SeccompOptions{Syscalls: []string{"socket"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	if got, want := strings.TrimSpace(out.String()), "inet=ok inet6=EPERM unix=ok getppid=ok"; got != want {
		t.Fatalf("child saw %q, want %q", got, want)
	}
	uid := uint32(os.Geteuid())
	var cpu float64
	for _, u := range s.srv.Stats().UIDs {
		if u.UID == uid {
			cpu = u.BulkCPU
		}
	}
	if cpu <= 0 {
		t.Fatalf("no decision of the expensive program ran in the bulk lane: %+v", s.srv.Stats().UIDs)
	}
}

// childUringProbe prints what io_uring_setup answers.
func childUringProbe() error {
	var params [120]byte
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	if e != 0 {
		fmt.Println("io_uring_setup " + unix.ErrnoName(e))
		return nil
	}
	unix.Close(int(fd))
	fmt.Println("io_uring_setup ok")
	return nil
}

// TestSeccompIOUringOption: StartSeccomp closes the io_uring route by
// default (io_uring_setup fails with EPERM even though the policy does not
// route it) and AllowIOUring opens it.
func TestSeccompIOUringOption(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	p, err := c.LoadProgram(ProgramSpec{Type: Seccomp, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm32(asm.R0, 0x7fff0000), // SECCOMP_RET_ALLOW
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tt := range []struct {
		name string
		opts SeccompOptions
		want string
	}{
		{name: "default", opts: SeccompOptions{Syscalls: []string{"socket"}}, want: "io_uring_setup EPERM"},
		{name: "allowed", opts: SeccompOptions{Syscalls: []string{"socket"}, AllowIOUring: true}, want: "io_uring_setup ok"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := sameUserChild(t, "uringprobe", nil)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			run, err := p.StartSeccomp(cmd, &tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := run.Wait(); err != nil {
				t.Fatalf("child: %v\n%s", err, out.String())
			}
			if got := strings.TrimSpace(out.String()); got != tt.want {
				t.Fatalf("child saw %q, want %q", got, tt.want)
			}
		})
	}
}

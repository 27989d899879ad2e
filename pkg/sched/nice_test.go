package sched

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadNice returns the nice value of thread tid.
func threadNice(t *testing.T, tid int) int {
	t.Helper()
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		t.Fatal(err)
	}
	return 20 - prio
}

// TestNice: with Config.Nice a turn runs on a thread of that nice value,
// waits in Yield at the daemon's own priority and runs on at Nice again,
// and the thread gets the daemon's priority back when the turn ends;
// without it (or where the priority could not be given back) turns run
// at the daemon's priority.
func TestNice(t *testing.T) {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	base := 20 - prio
	if newNicer(DefaultNice) == nil {
		t.Skipf("this process (nice %d) cannot give a thread its priority back (no CAP_SYS_NICE, RLIMIT_NICE too low)", base)
	}
	tests := []struct {
		name string
		nice int
		want int
	}{
		{name: "default nice", nice: DefaultNice, want: DefaultNice},
		{name: "nice 19", nice: 19, want: 19},
		{name: "beyond 19", nice: 40, want: 19},
		{name: "off", nice: 0, want: base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newFake(t, 1, time.Millisecond)
			s.nicer = newNicer(tt.nice)
			if got := s.Niced(); (tt.nice == 0 && got != 0) || (tt.nice != 0 && got != tt.want) {
				t.Fatalf("Niced() = %d", got)
			}
			var tid, during, afterYield int
			other := -100
			var wg sync.WaitGroup
			s.Run(1, func(turn *Turn) error {
				tid = unix.Gettid()
				during = threadNice(t, tid)
				// Another uid waits: the slice's end makes this turn
				// wait in Yield.
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.Run(2, func(*Turn) error { other = threadNice(t, unix.Gettid()); return nil })
				}()
				waitQueued(t, s, 1)
				clk.advance(2 * time.Millisecond)
				turn.Yield()
				if other == -100 {
					t.Error("Yield did not wait for the other uid's turn")
				}
				afterYield = threadNice(t, unix.Gettid())
				return nil
			})
			wg.Wait()
			if during != tt.want || afterYield != tt.want || other != tt.want {
				t.Errorf("turns ran at nice %d, %d after Yield, %d (other uid); want %d", during, afterYield, other, tt.want)
			}
			// tid ran the turn before it waited (the goroutine may
			// go on on another thread afterwards).
			if got := threadNice(t, tid); got != base {
				t.Errorf("the thread is left at nice %d, want the daemon's %d", got, base)
			}
		})
	}
}

// niceChildEnv makes the test binary report Niced for DefaultNice and exit
// (TestNiceNeedsRestore).
const niceChildEnv = "BPFD_SCHED_TEST_NICE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(niceChildEnv) != "" {
		fmt.Println(New(&Config{Nice: DefaultNice}).Niced())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNiceNeedsRestore: a process that could lower a thread's priority
// but not give it back (an ordinary user: no CAP_SYS_NICE, RLIMIT_NICE 0)
// runs bulk work at its own priority instead of leaving threads niced.
func TestNiceNeedsRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the child as uid 65534")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The binary must be executable by uid 65534.
	dir, err := os.MkdirTemp("", "bpfd-sched-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sched.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), niceChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NICE, &rl); err != nil || rl.Cur != 0 {
		t.Skipf("RLIMIT_NICE is %d here (%v): the child could give priorities back", rl.Cur, err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "0" {
		t.Fatalf("an unprivileged process reports Niced() = %s, want 0", got)
	}
}

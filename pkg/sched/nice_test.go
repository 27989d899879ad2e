package sched

import (
	"sync"
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

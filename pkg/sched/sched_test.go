package sched

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock that only moves when work says it did.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// newFake returns a scheduler on a fake clock (starting far from zero, so
// idle times look old).
func newFake(t *testing.T, slots int, slice time.Duration) (*Scheduler, *fakeClock) {
	t.Helper()
	clk := &fakeClock{}
	clk.ns.Store(int64(time.Hour))
	s := New(&Config{Slots: slots, Slice: slice})
	s.now = clk.now
	t.Cleanup(s.Close)
	return s, clk
}

// waitQueued waits until n turns are waiting in s.
func waitQueued(t *testing.T, s *Scheduler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		w := s.core.nwait
		s.mu.Unlock()
		if w >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d turns queued", w, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// job is simulated work: steps of the given costs, with a Yield after each.
type job struct {
	uid   uint32
	name  string
	steps []time.Duration
}

func slices(n int, d time.Duration) []time.Duration {
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = d
	}
	return s
}

// logger records which job ran each step, in order.
type logger struct {
	mu  sync.Mutex
	log []string
}

func (l *logger) add(s string) {
	l.mu.Lock()
	l.log = append(l.log, s)
	l.mu.Unlock()
}

func (l *logger) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.log...)
}

// start runs j in a goroutine and waits until it is queued (so that the
// order of start calls is the order of arrival).
func start(t *testing.T, s *Scheduler, clk *fakeClock, l *logger, j job, wg *sync.WaitGroup) {
	t.Helper()
	s.mu.Lock()
	before := s.core.nwait
	s.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.Run(j.uid, func(tn *Turn) error {
			for i, d := range j.steps {
				clk.advance(d)
				l.add(fmt.Sprintf("%s%d", j.name, i))
				tn.Yield()
			}
			return nil
		})
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitQueued(t, s, before+1)
}

// TestFairness runs scenarios on one slot with a fake clock, where the
// order of steps is deterministic, and checks who ran when.
func TestFairness(t *testing.T) {
	const q = time.Millisecond
	tests := []struct {
		name  string
		check func(t *testing.T, s *Scheduler, clk *fakeClock, l *logger, wg *sync.WaitGroup)
	}{
		{
			// A blocker holds the slot while a flood of uid 1 and one
			// request of uid 2 queue behind it: uid 2's request runs
			// after at most one slice of uid 1.
			name: "newcomer waits at most one slice",
			check: func(t *testing.T, s *Scheduler, clk *fakeClock, l *logger, wg *sync.WaitGroup) {
				gate := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.Run(9, func(*Turn) error { <-gate; return nil })
				}()
				waitRunning(t, s, 1)
				for i := range 8 {
					start(t, s, clk, l, job{uid: 1, name: fmt.Sprintf("a%d.", i), steps: slices(5, q)}, wg)
				}
				start(t, s, clk, l, job{uid: 2, name: "b", steps: slices(1, q)}, wg)
				close(gate)
				wg.Wait()
				log := l.get()
				if i := index(log, "b0"); i < 0 || i > 1 {
					t.Fatalf("uid 2 ran at step %d: %v", i, log)
				}
			},
		},
		{
			// Two uids flooding alternate slice by slice.
			name: "two floods alternate",
			check: func(t *testing.T, s *Scheduler, clk *fakeClock, l *logger, wg *sync.WaitGroup) {
				gate := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.Run(9, func(*Turn) error { <-gate; return nil })
				}()
				waitRunning(t, s, 1)
				for i := range 4 {
					start(t, s, clk, l, job{uid: 1, name: fmt.Sprintf("a%d.", i), steps: slices(10, q)}, wg)
				}
				for i := range 4 {
					start(t, s, clk, l, job{uid: 2, name: fmt.Sprintf("b%d.", i), steps: slices(10, q)}, wg)
				}
				close(gate)
				wg.Wait()
				log := l.get()
				// While both compete (the first 40 steps: 2×40 are
				// queued), no uid gets two slices in a row... except
				// at the boundary where a turn keeps running because
				// the other uid's turn is still in its round.
				a, b, run, maxRun := 0, 0, 0, 0
				prev := byte(0)
				for _, e := range log[:60] {
					if e[0] == prev {
						run++
					} else {
						run, prev = 1, e[0]
					}
					maxRun = max(maxRun, run)
					if e[0] == 'a' {
						a++
					} else {
						b++
					}
				}
				if maxRun > 2 || a < 25 || b < 25 {
					t.Fatalf("unfair: a=%d b=%d longest run %d: %v", a, b, maxRun, log[:60])
				}
			},
		},
		{
			// An overrun (one uncuttable step of 10 slices) is paid
			// back: the other uid then gets about 10 slices before
			// the offender runs again.
			name: "overrun is debt",
			check: func(t *testing.T, s *Scheduler, clk *fakeClock, l *logger, wg *sync.WaitGroup) {
				gate := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.Run(9, func(*Turn) error { <-gate; return nil })
				}()
				waitRunning(t, s, 1)
				start(t, s, clk, l, job{uid: 1, name: "a", steps: append([]time.Duration{10 * q}, slices(10, q)...)}, wg)
				for i := range 3 {
					start(t, s, clk, l, job{uid: 2, name: fmt.Sprintf("b%d.", i), steps: slices(10, q)}, wg)
				}
				close(gate)
				wg.Wait()
				log := l.get()
				ia := index(log, "a0")
				next := -1
				for i := ia + 1; i < len(log); i++ {
					if log[i][0] == 'a' {
						next = i
						break
					}
				}
				bs := 0
				for _, e := range log[ia+1 : next] {
					if e[0] == 'b' {
						bs++
					}
				}
				if bs < 9 || bs > 12 {
					t.Fatalf("after a 10-slice overrun uid 2 got %d slices: %v", bs, log)
				}
			},
		},
		{
			// Time a uid used while nobody else waited is no debt: a
			// long solo run, then a competitor, and they alternate at
			// once.
			name: "uncontended time is no debt",
			check: func(t *testing.T, s *Scheduler, clk *fakeClock, l *logger, wg *sync.WaitGroup) {
				soloDone := make(chan struct{})
				resume := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.Run(1, func(tn *Turn) error {
						for i := range 50 {
							clk.advance(q)
							l.add(fmt.Sprintf("a%d", i))
							tn.Yield()
							if i == 29 {
								close(soloDone)
								<-resume
							}
						}
						return nil
					})
				}()
				<-soloDone
				for i := range 3 {
					start(t, s, clk, l, job{uid: 2, name: fmt.Sprintf("b%d.", i), steps: slices(10, q)}, wg)
				}
				close(resume)
				wg.Wait()
				log := l.get()
				tail := log[30:50]
				a := 0
				for _, e := range tail {
					if e[0] == 'a' {
						a++
					}
				}
				if a < 7 || a > 13 {
					t.Fatalf("after 30 solo slices uid 1 got %d of 20 contended slices: %v", a, tail)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newFake(t, 1, q)
			var l logger
			var wg sync.WaitGroup
			tt.check(t, s, clk, &l, &wg)
		})
	}
}

func index(log []string, e string) int {
	for i, x := range log {
		if x == e {
			return i
		}
	}
	return -1
}

func waitRunning(t *testing.T, s *Scheduler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		r := len(s.running)
		s.mu.Unlock()
		if r >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d turns running", r, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestSlotsBound: with real goroutines and time, never more than Slots
// functions run at once, every Run returns its function's error, and
// Stats accounts the uids.
func TestSlotsBound(t *testing.T) {
	for _, slots := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(slots), func(t *testing.T) {
			s := New(&Config{Slots: slots, Slice: 50 * time.Microsecond})
			defer s.Close()
			var cur, peak atomic.Int32
			var wg sync.WaitGroup
			errBoom := errors.New("boom")
			for g := range 24 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					uid := uint32(g % 5)
					for i := range 20 {
						err := s.Run(uid, func(tn *Turn) error {
							// Count the functions running between
							// checkpoints (a yielded one waits).
							deadline := time.Now().Add(time.Duration(rand.IntN(200)) * time.Microsecond)
							for {
								n := cur.Add(1)
								for {
									p := peak.Load()
									if n <= p || peak.CompareAndSwap(p, n) {
										break
									}
								}
								for range 100 {
									runtime.Gosched()
								}
								cur.Add(-1)
								if !time.Now().Before(deadline) {
									break
								}
								tn.Yield()
							}
							if i%7 == 3 {
								return errBoom
							}
							return nil
						})
						if (i%7 == 3) != (err == errBoom) {
							t.Errorf("Run returned %v", err)
						}
					}
				}()
			}
			wg.Wait()
			if p := peak.Load(); p > int32(slots) || p < 1 {
				t.Fatalf("peak concurrency %d with %d slots", p, slots)
			}
			for _, f := range s.Stats() {
				if f.Running != 0 || f.Waiting != 0 {
					t.Fatalf("stats after the end: %+v", f)
				}
			}
			s.mu.Lock()
			free, nw, nr := s.free, s.core.nwait, len(s.running)
			s.mu.Unlock()
			if free != slots || nw != 0 || nr != 0 {
				t.Fatalf("free %d waiting %d running %d after the end", free, nw, nr)
			}
		})
	}
}

// TestClose: Close grants every waiting turn, and later Runs go ahead
// without a slot.
func TestClose(t *testing.T) {
	s := New(&Config{Slots: 1})
	gate := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.Run(1, func(*Turn) error { <-gate; return nil })
	}()
	waitRunning(t, s, 1)
	var ran atomic.Int32
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Run(2, func(tn *Turn) error { tn.Yield(); ran.Add(1); return nil })
		}()
	}
	waitQueued(t, s, 5)
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for ran.Load() != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 5 waiting turns ran after Close", ran.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Run(3, func(*Turn) error { return nil }); err != nil {
		t.Fatal(err)
	}
	close(gate)
	wg.Wait()
	s.Close() // idempotent
}

// TestRunAllocs: a warm Run and Yield allocate nothing.
func TestRunAllocs(t *testing.T) {
	s := New(&Config{Slots: 1})
	defer s.Close()
	fn := func(tn *Turn) error { tn.Yield(); return nil }
	s.Run(1, fn)
	if n := testing.AllocsPerRun(100, func() { s.Run(1, fn) }); n != 0 {
		t.Fatalf("Run allocates %.1f times", n)
	}
}

// TestSweep: idle uids are forgotten after forgiveAfter, debt included.
func TestSweep(t *testing.T) {
	s, clk := newFake(t, 1, time.Millisecond)
	s.Run(1, func(*Turn) error { clk.advance(time.Millisecond); return nil })
	// Make uid 2 overrun while uid 3 waits: it leaves in debt.
	gate := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.Run(2, func(*Turn) error { <-gate; clk.advance(50 * time.Millisecond); return nil })
	}()
	waitRunning(t, s, 1)
	go func() { defer wg.Done(); s.Run(3, func(*Turn) error { return nil }) }()
	waitQueued(t, s, 1)
	close(gate)
	wg.Wait()
	debt := false
	for _, f := range s.Stats() {
		if f.UID == 2 && f.CPU != 50*time.Millisecond {
			t.Fatalf("uid 2 used %v, want 50ms", f.CPU)
		}
		if f.UID == 2 && f.Deficit < 0 {
			debt = true
		}
	}
	if !debt {
		t.Fatalf("uid 2 should be known, in debt: %+v", s.Stats())
	}
	clk.advance(2 * forgiveAfter)
	s.Run(4, func(*Turn) error { return nil })
	for _, f := range s.Stats() {
		if f.UID != 4 && (f.Deficit != 0 || f.Running != 0 || f.Waiting != 0) {
			t.Fatalf("idle uids kept after %v: %+v", 2*forgiveAfter, s.Stats())
		}
		if f.CPU <= 0 && (f.UID == 1 || f.UID == 2) {
			t.Fatalf("uid %d's CPU time lost: %+v", f.UID, f)
		}
	}
	s.mu.Lock()
	n := len(s.core.flows)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d flows known after the sweep, want uid 4's", n)
	}
}

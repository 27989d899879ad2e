package percpu

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParsePossible(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
		err  bool
	}{
		{name: "one", in: "0\n", want: 1},
		{name: "range", in: "0-3\n", want: 4},
		{name: "list", in: "0,2-5,7", want: 6},
		{name: "sparse high", in: "0-1,64-65", want: 4},
		{name: "empty", in: "\n", err: true},
		{name: "reversed", in: "3-1", err: true},
		{name: "garbage", in: "a-b", err: true},
		{name: "too many", in: "0-9000", err: true},
		{name: "negative", in: "-1", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePossible([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParsePossible(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

// TestPossibleMatchesSysfs checks Possible against the machine's own list.
func TestPossibleMatchesSysfs(t *testing.T) {
	b, err := os.ReadFile(PossibleFile)
	if err != nil {
		t.Skipf("no %s: %v", PossibleFile, err)
	}
	want, err := ParsePossible(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := Possible(); got != want {
		t.Fatalf("Possible() = %d, sysfs says %d", got, want)
	}
	if Default().N() != want {
		t.Fatalf("Default().N() = %d, want %d", Default().N(), want)
	}
}

// TestExclusive runs many goroutines through a small pool and checks that
// no slot ever has two holders.
func TestExclusive(t *testing.T) {
	p := NewPool(3)
	var owners [3]atomic.Int32
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hint := g
			for i := 0; i < 2000; i++ {
				s := p.Acquire(hint)
				if owners[s].Add(1) != 1 {
					bad.Add(1)
				}
				if i%7 == 0 {
					runtime.Gosched()
				}
				owners[s].Add(-1)
				p.Release(s)
				hint = s
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d times a slot had two holders", bad.Load())
	}
}

// TestAcquireWaits checks that Acquire blocks while every slot is held and
// proceeds once one is released.
func TestAcquireWaits(t *testing.T) {
	p := NewPool(2)
	a, b := p.Acquire(0), p.Acquire(0)
	if a == b {
		t.Fatalf("two holders got slot %d", a)
	}
	got := make(chan int)
	go func() { got <- p.Acquire(0) }()
	select {
	case s := <-got:
		t.Fatalf("Acquire returned slot %d while all were held", s)
	case <-time.After(50 * time.Millisecond):
	}
	p.Release(b)
	select {
	case s := <-got:
		if s != b {
			t.Fatalf("got slot %d, want the released %d", s, b)
		}
		p.Release(s)
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire did not wake after Release")
	}
	p.Release(a)
}

// TestQuiesce checks that Quiesce waits for holders, keeps new ones out
// until released, and that holders resume afterwards.
func TestQuiesce(t *testing.T) {
	p := NewPool(2)
	var inside atomic.Int32
	var quiesced atomic.Bool
	var violations atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hint := g
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := p.Acquire(hint)
				inside.Add(1)
				if quiesced.Load() {
					violations.Add(1)
				}
				runtime.Gosched()
				inside.Add(-1)
				p.Release(s)
				hint = s
			}
		}()
	}
	for i := 0; i < 50; i++ {
		release := p.Quiesce()
		quiesced.Store(true)
		if n := inside.Load(); n != 0 {
			t.Errorf("%d holders inside a quiesce", n)
		}
		time.Sleep(time.Millisecond)
		quiesced.Store(false)
		release()
	}
	close(stop)
	wg.Wait()
	if violations.Load() != 0 {
		t.Fatalf("%d acquisitions during a quiesce", violations.Load())
	}
	// Every slot is free again.
	for i := 0; i < p.N(); i++ {
		if p.slots[i].held.Load() != 0 {
			t.Fatalf("slot %d still held", i)
		}
	}
}

func TestReleaseUnheldPanics(t *testing.T) {
	p := NewPool(1)
	defer func() {
		if recover() == nil {
			t.Fatal("Release of a free slot did not panic")
		}
	}()
	p.Release(0)
}

func TestZeroAllocs(t *testing.T) {
	p := NewPool(2)
	if n := testing.AllocsPerRun(1000, func() { p.Release(p.Acquire(0)) }); n != 0 {
		t.Fatalf("Acquire+Release: %v allocs, want 0", n)
	}
}

// BenchmarkAcquireRelease measures an uncontended slot round trip, and the
// same from every P at once (b.RunParallel), against a sync.Mutex
// Lock/Unlock as the baseline of "the cheapest exclusion Go offers".
func BenchmarkAcquireRelease(b *testing.B) {
	b.Run("pool", func(b *testing.B) {
		b.ReportAllocs()
		p := NewPool(Possible())
		for b.Loop() {
			p.Release(p.Acquire(0))
		}
	})
	b.Run("mutex", func(b *testing.B) {
		b.ReportAllocs()
		var mu sync.Mutex
		for b.Loop() {
			mu.Lock()
			mu.Unlock() //nolint:staticcheck // the baseline
		}
	})
	b.Run("pool-parallel", func(b *testing.B) {
		b.ReportAllocs()
		p := NewPool(Possible())
		var next atomic.Int32
		b.RunParallel(func(pb *testing.PB) {
			hint := int(next.Add(1))
			for pb.Next() {
				hint = p.Acquire(hint)
				p.Release(hint)
			}
		})
	})
}

func BenchmarkGet(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		p := NewPool(Possible())
		for b.Loop() {
			p.Release(p.Get())
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		p := NewPool(Possible())
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p.Release(p.Get())
			}
		})
	})
}

package maps

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchOps is what the benchmarks drive: bpfd's Map or the kernel's map.
type benchTarget struct {
	name string
	m    ops
}

func benchTargets(b *testing.B, s Spec) []benchTarget {
	b.Helper()
	m, err := New(s)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	ts := []benchTarget{{"bpfd", m}}
	if errNoBPF == nil {
		k, err := newKernelMap(b, s)
		if err != nil {
			b.Fatal(err)
		}
		ts = append(ts, benchTarget{"kernel", k})
	} else {
		b.Logf("kernel baseline skipped: %v", errNoBPF)
	}
	for _, t := range ts {
		v := make([]byte, s.ValueSize)
		for i := uint32(0); i < s.MaxEntries; i++ {
			if err := t.m.Update(k32(i), v, UpdateAny); err != nil {
				b.Fatal(err)
			}
		}
	}
	return ts
}

var benchSpecs = []Spec{
	{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 1024},
	{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 1024},
}

func specName(s Spec) string { return TypeName(s.Type) }

func BenchmarkLookup(b *testing.B) {
	for _, s := range benchSpecs {
		for _, t := range benchTargets(b, s) {
			b.Run(fmt.Sprintf("%s/%s", specName(s), t.name), func(b *testing.B) {
				b.ReportAllocs()
				key, v := make([]byte, 4), make([]byte, s.ValueSize)
				var i uint32
				for b.Loop() {
					ne.PutUint32(key, i&1023)
					i++
					if err := t.m.Lookup(key, v); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkUpdate(b *testing.B) {
	for _, s := range benchSpecs {
		for _, t := range benchTargets(b, s) {
			b.Run(fmt.Sprintf("%s/%s", specName(s), t.name), func(b *testing.B) {
				b.ReportAllocs()
				key, v := make([]byte, 4), make([]byte, s.ValueSize)
				var i uint32
				for b.Loop() {
					ne.PutUint32(key, i&1023)
					i++
					if err := t.m.Update(key, v, UpdateAny); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkLookupBatch walks the whole map in batches of 256 and reports
// ns per element.
func BenchmarkLookupBatch(b *testing.B) {
	for _, s := range benchSpecs {
		for _, t := range benchTargets(b, s) {
			b.Run(fmt.Sprintf("%s/%s", specName(s), t.name), func(b *testing.B) {
				b.ReportAllocs()
				bt := batchBuf(s, 256)
				elems := 0
				for b.Loop() {
					bt.HasInBatch = false
					for {
						bt.Count = 256
						err := t.m.LookupBatch(bt)
						elems += int(bt.Count)
						if err != nil {
							break
						}
						bt.InBatch, bt.HasInBatch = bt.OutBatch, true
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(elems), "ns/elem")
			})
		}
	}
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// BenchmarkHashUpdateScaling measures hash update throughput from one
// goroutine and from two (distinct key ranges, like two clients), in the
// same run, and reports the two-thread speed-up (issue 10 asks for ≥ 1.7
// on a 2-core machine: no map-wide lock on the update path). Each
// sub-benchmark's ns/op is per update across all goroutines.
func BenchmarkHashUpdateScaling(b *testing.B) {
	s := Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 1 << 16}
	var cpu atomic.Int64 // the goroutines' thread CPU time in the last run
	run := func(b *testing.B, threads, n int) time.Duration {
		cpu.Store(0)
		m, err := New(s)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		// Insert every key first: the timed updates replace existing
		// elements, and the region's pages are already faulted in (two
		// threads faulting in a fresh region contend in the kernel, which
		// is not what this measures).
		key, v := make([]byte, 4), make([]byte, 8)
		for g := 0; g < threads; g++ {
			for i := uint32(0); i < 1<<14; i++ {
				ne.PutUint32(key, uint32(g)<<14+i)
				if err := m.Update(key, v, UpdateAny); err != nil {
					b.Fatal(err)
				}
			}
		}
		var wg sync.WaitGroup
		start := time.Now()
		for g := 0; g < threads; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				c0 := threadCPU()
				defer func() { cpu.Add(int64(threadCPU() - c0)) }()
				key, v := make([]byte, 4), make([]byte, 8)
				base := uint32(g) << 14
				for i := 0; i < n/threads; i++ {
					ne.PutUint32(key, base+uint32(i)&(1<<14-1))
					if err := m.Update(key, v, UpdateAny); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			run(b, threads, b.N)
		})
	}
	b.Run("speedup", func(b *testing.B) {
		const n = 1 << 20
		var ratios, cpuRatios []float64
		for i := 0; i < b.N; i++ {
			t1 := run(b, 1, n)
			c1 := cpu.Load()
			t2 := run(b, 2, n)
			c2 := cpu.Load()
			ratios = append(ratios, float64(t1)/float64(t2))
			cpuRatios = append(cpuRatios, float64(c2)/float64(c1))
		}
		sort.Float64s(ratios)
		sort.Float64s(cpuRatios)
		b.ReportMetric(ratios[len(ratios)/2], "x-2-thread-speedup")
		// CPU time of the same n updates on two threads over one: 1.0
		// means no contention (no lock spinning, no cache line
		// ping-pong), so two free cores would give 2/ratio; on a loaded
		// machine the wall-clock speed-up is bounded by the cores the
		// threads actually get.
		b.ReportMetric(cpuRatios[len(cpuRatios)/2], "cpu-2/1")
	})
}

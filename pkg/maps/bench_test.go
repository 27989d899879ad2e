package maps

import (
	"fmt"
	"testing"
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

func specName(s Spec) string {
	return map[uint32]string{TypeHash: "hash", TypeArray: "array"}[s.Type]
}

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

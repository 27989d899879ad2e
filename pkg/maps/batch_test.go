package maps

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// newPair creates the same spec in bpfd and, when available, in the kernel.
// The kernel map is nil when bpf(2) is unavailable.
func newPair(t *testing.T, s Spec) (Map, *kernelMap) {
	t.Helper()
	m, err := New(s)
	if err != nil {
		t.Fatalf("New(%+v): %v", s, err)
	}
	t.Cleanup(func() { m.Close() })
	if errNoBPF != nil {
		return m, nil
	}
	k, err := newKernelMap(t, s)
	if err != nil {
		t.Fatalf("kernel create %+v: %v", s, err)
	}
	return m, k
}

func batchBuf(s Spec, n int) *Batch {
	return &Batch{Keys: make([]byte, n*int(s.KeySize)), Values: make([]byte, n*int(s.ValueSize))}
}

// elems returns the first b.Count key/value pairs of b as "key=value"
// strings.
func elems(s Spec, b *Batch) []string {
	var out []string
	for i := uint32(0); i < b.Count; i++ {
		k := b.Keys[i*s.KeySize : (i+1)*s.KeySize]
		v := b.Values[i*s.ValueSize : (i+1)*s.ValueSize]
		out = append(out, fmt.Sprintf("%x=%x", k, v))
	}
	return out
}

// batchScenario is a sequence of operations whose transcript must be the
// same in bpfd and in the kernel, and must match want.
type batchScenario struct {
	name string
	spec Spec
	run  func(t *testing.T, m ops, s Spec) []string
	want []string
}

func fill(t *testing.T, m ops, n int, vs uint32) {
	t.Helper()
	for i := 0; i < n; i++ {
		v := val(int(vs), byte(i+1))
		if err := m.Update(k32(uint32(i)), v, UpdateAny); err != nil {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
}

func rec(err error, b *Batch, extra ...string) string {
	s := fmt.Sprintf("errno=%d count=%d", errnoOf(err), b.Count)
	if len(extra) > 0 {
		s += " " + strings.Join(extra, " ")
	}
	return s
}

var arr10 = Spec{Type: TypeArray, KeySize: 4, ValueSize: 4, MaxEntries: 10}
var hash64 = Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: 64}

var batchScenarios = []batchScenario{
	{
		name: "array walk by 3",
		spec: arr10,
		run: func(t *testing.T, m ops, s Spec) []string {
			fill(t, m, 10, 4)
			var out []string
			b := batchBuf(s, 3)
			for i := 0; i < 6; i++ {
				b.Count = 3
				err := m.LookupBatch(b)
				out = append(out, rec(err, b, fmt.Sprintf("out=%d", b.OutBatch), strings.Join(elems(s, b), ",")))
				b.InBatch, b.HasInBatch = b.OutBatch, true
				if err != nil {
					break
				}
			}
			return out
		},
		want: []string{
			"errno=0 count=3 out=2 00000000=01010101,01000000=02020202,02000000=03030303",
			"errno=0 count=3 out=5 03000000=04040404,04000000=05050505,05000000=06060606",
			"errno=0 count=3 out=8 06000000=07070707,07000000=08080808,08000000=09090909",
			"errno=2 count=1 out=9 09000000=0a0a0a0a",
		},
	},
	{
		name: "array exact count then ENOENT",
		spec: arr10,
		run: func(t *testing.T, m ops, s Spec) []string {
			b := batchBuf(s, 10)
			b.Count = 10
			err := m.LookupBatch(b)
			r1 := rec(err, b, fmt.Sprintf("out=%d", b.OutBatch))
			b.InBatch, b.HasInBatch, b.Count = b.OutBatch, true, 10
			err = m.LookupBatch(b)
			r2 := rec(err, b)
			b.InBatch, b.Count = 100, 2 // out of range restarts at 0
			err = m.LookupBatch(b)
			r3 := rec(err, b, fmt.Sprintf("out=%d", b.OutBatch))
			b.Count = 0
			err = m.LookupBatch(b)
			r4 := rec(err, b)
			b.Count, b.ElemFlags = 2, 4
			err = m.LookupBatch(b)
			r5 := rec(err, b)
			return []string{r1, r2, r3, r4, r5}
		},
		want: []string{"errno=0 count=10 out=9", "errno=2 count=0", "errno=0 count=2 out=1", "errno=0 count=0", "errno=22 count=2"},
	},
	{
		name: "array unsupported and update batch",
		spec: arr10,
		run: func(t *testing.T, m ops, s Spec) []string {
			b := batchBuf(s, 4)
			b.Count = 2
			r1 := rec(m.LookupAndDeleteBatch(b), b)
			b.Count = 2
			r2 := rec(m.DeleteBatch(b), b)
			copy(b.Keys, append(append(append(k32(1), k32(2)...), k32(10)...), k32(3)...))
			copy(b.Values, val(16, 7))
			b.Count = 4
			r3 := rec(m.UpdateBatch(b), b)
			b.Count, b.ElemFlags = 1, UpdateNoExist
			r4 := rec(m.UpdateBatch(b), b)
			b.ElemFlags, b.Count = 0, 10
			b2 := batchBuf(s, 10)
			b2.Count = 4
			r5 := rec(m.LookupBatch(b2), b2, strings.Join(elems(s, b2), ","))
			return []string{r1, r2, r3, r4, r5}
		},
		want: []string{"errno=524 count=2", "errno=524 count=2", "errno=7 count=2", "errno=22 count=1",
			"errno=0 count=4 00000000=00000000,01000000=07070707,02000000=07070707,03000000=00000000"},
	},
	{
		name: "hash empty",
		spec: hash64,
		run: func(t *testing.T, m ops, s Spec) []string {
			b := batchBuf(s, 4)
			b.Count = 4
			r1 := rec(m.LookupBatch(b), b, fmt.Sprintf("out=%d", b.OutBatch))
			b.Count, b.InBatch, b.HasInBatch, b.OutBatch = 4, 64, true, 999
			r2 := rec(m.LookupBatch(b), b)
			b.HasInBatch, b.Count = false, 4
			r3 := rec(m.LookupAndDeleteBatch(b), b, fmt.Sprintf("out=%d", b.OutBatch))
			b.Count = 0
			r4 := rec(m.LookupBatch(b), b)
			b.Count, b.ElemFlags = 1, 1
			r5 := rec(m.LookupBatch(b), b)
			return []string{r1, r2, r3, r4, r5}
		},
		want: []string{"errno=2 count=0 out=64", "errno=2 count=0", "errno=2 count=0 out=64", "errno=0 count=0", "errno=22 count=1"},
	},
	{
		name: "hash walk by 1 hits ENOSPC, full walk sees every key",
		spec: hash64,
		run: func(t *testing.T, m ops, s Spec) []string {
			fill(t, m, 64, 4)
			b := batchBuf(s, 64)
			var nospc bool
			var seen []string
			for i := 0; i < 200; i++ {
				b.Count = 1
				err := m.LookupBatch(b)
				if errnoOf(err) == unix.ENOSPC {
					if b.Count != 0 {
						t.Fatalf("ENOSPC with count %d", b.Count)
					}
					nospc = true
					b.Count = 64 // retry the same bucket with room
					err = m.LookupBatch(b)
				}
				seen = append(seen, elems(s, b)...)
				if err != nil {
					if errnoOf(err) != unix.ENOENT {
						t.Fatalf("batch: %v", err)
					}
					break
				}
				b.InBatch, b.HasInBatch = b.OutBatch, true
			}
			slices.Sort(seen)
			if len(seen) != 64 || !nospc {
				t.Errorf("walk saw %d keys (want 64), ENOSPC seen: %v (want true)", len(seen), nospc)
			}
			return []string{fmt.Sprintf("nospc=%v n=%d", nospc, len(seen)), strings.Join(seen, ",")}
		},
		want: nil, // checked in run; compared between bpfd and kernel
	},
	{
		name: "hash lookup and delete batch empties the map",
		spec: hash64,
		run: func(t *testing.T, m ops, s Spec) []string {
			fill(t, m, 40, 4)
			b := batchBuf(s, 64)
			b.Count = 64
			err := m.LookupAndDeleteBatch(b)
			got := elems(s, b)
			slices.Sort(got)
			r1 := rec(err, b, fmt.Sprintf("out=%d", b.OutBatch))
			b.Count, b.HasInBatch = 64, false
			r2 := rec(m.LookupBatch(b), b)
			return []string{r1, r2, fmt.Sprint(len(got))}
		},
		want: []string{"errno=2 count=40 out=64", "errno=2 count=0", "40"},
	},
	{
		name: "hash delete and update batch partial",
		spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: 4},
		run: func(t *testing.T, m ops, s Spec) []string {
			fill(t, m, 3, 4)
			b := batchBuf(s, 4)
			copy(b.Keys, append(append(append(k32(0), k32(1)...), k32(7)...), k32(2)...))
			b.Count = 4
			r1 := rec(m.DeleteBatch(b), b)
			copy(b.Keys, append(append(append(k32(10), k32(11)...), k32(12)...), k32(13)...))
			copy(b.Values, val(16, 9))
			b.Count = 4
			r2 := rec(m.UpdateBatch(b), b) // {2} + 10, 11, 12 fill it; 13 is E2BIG
			b.Count, b.ElemFlags = 1, UpdateLock
			r3 := rec(m.DeleteBatch(b), b)
			b.ElemFlags = 0
			out := make([]byte, 4)
			r4 := fmt.Sprintf("%d %d %d", errnoOf(m.Lookup(k32(12), out)), errnoOf(m.Lookup(k32(13), out)), errnoOf(m.Lookup(k32(2), out)))
			return []string{r1, r2, r3, r4}
		},
		want: []string{"errno=2 count=2", "errno=7 count=3", "errno=22 count=1", "0 2 0"},
	},
	{
		name: "hash frozen batches",
		spec: hash64,
		run: func(t *testing.T, m ops, s Spec) []string {
			fill(t, m, 2, 4)
			if err := m.Freeze(); err != nil {
				t.Fatal(err)
			}
			b := batchBuf(s, 4)
			var out []string
			for _, f := range []func(*Batch) error{m.UpdateBatch, m.DeleteBatch, m.LookupAndDeleteBatch, m.LookupBatch} {
				b.Count = 2
				out = append(out, rec(f(b), b))
			}
			return out
		},
		want: []string{"errno=1 count=2", "errno=1 count=2", "errno=1 count=2", "errno=2 count=2"},
	},
}

func TestBatch(t *testing.T) {
	for _, sc := range batchScenarios {
		t.Run(sc.name, func(t *testing.T) {
			m, k := newPair(t, sc.spec)
			got := sc.run(t, m, sc.spec)
			if sc.want != nil && !slices.Equal(got, sc.want) {
				t.Errorf("bpfd:\n got %q\nwant %q", got, sc.want)
			}
			if k == nil {
				t.Skipf("kernel half skipped: %v", errNoBPF)
			}
			kgot := sc.run(t, k, sc.spec)
			if !slices.Equal(got, kgot) {
				t.Errorf("bpfd and kernel disagree:\n bpfd   %q\n kernel %q", got, kgot)
			}
		})
	}
}

package maps

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// lpmKey builds a bpf_lpm_trie_key_u8: prefix length, then data.
func lpmKey(prefix uint32, data ...byte) []byte {
	return append(k32(prefix), data...)
}

var lpm4 = Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}

var lpmCases = []tableCase{
	{name: "create lpm", spec: lpm4},
	{name: "create lpm prealloc", spec: withFlags(lpm4, 0), createErr: unix.EINVAL},
	{name: "create lpm key 4", spec: Spec{Type: TypeLPMTrie, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}, createErr: unix.EINVAL},
	{name: "create lpm key 5", spec: Spec{Type: TypeLPMTrie, KeySize: 5, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}},
	{name: "create lpm key 260", spec: Spec{Type: TypeLPMTrie, KeySize: 260, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}},
	{name: "create lpm key 261", spec: Spec{Type: TypeLPMTrie, KeySize: 261, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}, createErr: unix.EINVAL},
	{name: "create lpm value 0", spec: Spec{Type: TypeLPMTrie, KeySize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}, createErr: unix.EINVAL},
	{name: "create lpm value max", spec: Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: kmallocMax - lpmDataMax - lpmNodeSize, MaxEntries: 1, Flags: FlagNoPrealloc}},
	{name: "create lpm value above max", spec: Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: kmallocMax - lpmDataMax - lpmNodeSize + 1, MaxEntries: 1, Flags: FlagNoPrealloc}, createErr: unix.EINVAL},
	{name: "create lpm zero entries", spec: Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: 8, Flags: FlagNoPrealloc}, createErr: unix.EINVAL},
	{name: "create lpm mmapable", spec: withFlags(lpm4, FlagNoPrealloc|FlagMmapable), createErr: unix.EINVAL},

	{name: "lpm longest match", spec: lpm4, steps: []step{
		{op: opLookup, key: lpmKey(32, 192, 168, 1, 1), want: unix.ENOENT},
		{op: opUpdate, key: lpmKey(16, 192, 168, 0, 0), val: v1},
		{op: opUpdate, key: lpmKey(24, 192, 168, 1, 0), val: v2},
		{op: opLookup, key: lpmKey(32, 192, 168, 1, 1), val: v2},
		{op: opLookup, key: lpmKey(32, 192, 168, 2, 1), val: v1},
		{op: opLookup, key: lpmKey(20, 192, 168, 1, 1), val: v1},
		{op: opLookup, key: lpmKey(32, 10, 0, 0, 1), want: unix.ENOENT},
		{op: opLookup, key: lpmKey(33, 192, 168, 1, 1), want: unix.ENOENT},
		{op: opUpdate, key: lpmKey(33, 192, 168, 1, 1), val: v1, want: unix.EINVAL},
		{op: opUpdate, key: lpmKey(16, 192, 168, 0, 0), val: v2, flags: UpdateNoExist, want: unix.EEXIST},
		{op: opUpdate, key: lpmKey(8, 10, 0, 0, 0), val: v2, flags: UpdateExist, want: unix.ENOENT},
		{op: opUpdate, key: lpmKey(8, 10, 0, 0, 0), val: v2, flags: 3, want: unix.EINVAL},
		{op: opNext, val: lpmKey(24, 192, 168, 1, 0)},
		{op: opNext, key: lpmKey(24, 192, 168, 1, 0), val: lpmKey(16, 192, 168, 0, 0)},
		{op: opNext, key: lpmKey(16, 192, 168, 0, 0), want: unix.ENOENT},
		{op: opDelete, key: lpmKey(16, 192, 168, 0, 0)},
		{op: opDelete, key: lpmKey(16, 192, 168, 0, 0), want: unix.ENOENT},
		{op: opDelete, key: lpmKey(40, 192, 168, 0, 0), want: unix.EINVAL},
		{op: opLookup, key: lpmKey(32, 192, 168, 2, 1), want: unix.ENOENT},
		{op: opLookupAndDelete, key: lpmKey(24, 192, 168, 1, 0), want: ENOTSUPP},
	}},
	{name: "lpm full", spec: lpm4, steps: []step{
		{op: opUpdate, key: lpmKey(8, 1, 0, 0, 0), val: v1},
		{op: opUpdate, key: lpmKey(8, 2, 0, 0, 0), val: v1},
		{op: opUpdate, key: lpmKey(8, 3, 0, 0, 0), val: v1},
		{op: opUpdate, key: lpmKey(8, 4, 0, 0, 0), val: v1},
		{op: opUpdate, key: lpmKey(8, 5, 0, 0, 0), val: v1, want: unix.ENOSPC},
		{op: opUpdate, key: lpmKey(8, 4, 0, 0, 0), val: v2},
		{op: opUpdate, key: lpmKey(7, 4, 0, 0, 0), val: v2, want: unix.ENOSPC},
	}},
}

func init() { tableCases = append(tableCases, lpmCases...) }

// walkKeys lists the keys in NextKey order (not sorted: the LPM trie's
// order is the kernel's post-order and must match exactly).
func walkKeys(t *testing.T, m ops, s Spec) []string {
	t.Helper()
	var out []string
	var key []byte
	next := make([]byte, s.KeySize)
	for i := 0; i <= int(s.MaxEntries)+1; i++ {
		if err := m.NextKey(key, next); err != nil {
			if errnoOf(err) != unix.ENOENT {
				t.Fatalf("NextKey: %v", err)
			}
			break
		}
		out = append(out, fmt.Sprintf("%x", next))
		key = bytes.Clone(next)
	}
	return out
}

// TestLPMDifferential runs random updates, deletes and longest-prefix
// lookups on bpfd's and the kernel's tries, comparing every result and
// the whole iteration order (the kernel's post-order) after every step.
func TestLPMDifferential(t *testing.T) {
	needKernel(t)
	for _, s := range []Spec{
		{Type: TypeLPMTrie, KeySize: 8, ValueSize: 4, MaxEntries: 24, Flags: FlagNoPrealloc},
		{Type: TypeLPMTrie, KeySize: 5, ValueSize: 3, MaxEntries: 40, Flags: FlagNoPrealloc},
		{Type: TypeLPMTrie, KeySize: 20, ValueSize: 8, MaxEntries: 16, Flags: FlagNoPrealloc},
	} {
		for seed := uint64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("key%d_max%d_seed%d", s.KeySize, s.MaxEntries, seed), func(t *testing.T) {
				m, k := newPair(t, s)
				r := rand.New(rand.NewPCG(seed, 11))
				ds := int(s.KeySize - 4)
				// Keys from a few bases, so that prefixes share bits.
				bases := make([][]byte, 4)
				for i := range bases {
					bases[i] = make([]byte, ds)
					for j := range bases[i] {
						bases[i][j] = byte(r.Uint32())
					}
				}
				rkey := func() []byte {
					d := bytes.Clone(bases[r.IntN(len(bases))])
					if r.IntN(3) == 0 {
						d[r.IntN(ds)] ^= byte(1 << r.IntN(8))
					}
					p := uint32(r.IntN(ds*8 + 2)) // sometimes beyond the maximum
					return append(k32(p), d...)
				}
				vm, vk := make([]byte, s.ValueSize), make([]byte, s.ValueSize)
				for i := 0; i < 300; i++ {
					key := rkey()
					var em, ek error
					what := ""
					switch op := r.IntN(10); {
					case op < 5:
						v := make([]byte, s.ValueSize)
						for j := range v {
							v[j] = byte(r.Uint32())
						}
						f := uint64(r.IntN(3))
						what = fmt.Sprintf("update %x f%d", key, f)
						em, ek = m.Update(key, v, f), k.Update(key, v, f)
					case op < 8:
						what = fmt.Sprintf("lookup %x", key)
						em, ek = m.Lookup(key, vm), k.Lookup(key, vk)
						if em == nil && ek == nil && !bytes.Equal(vm, vk) {
							t.Fatalf("op %d %s: %x, kernel %x", i, what, vm, vk)
						}
					default:
						what = fmt.Sprintf("delete %x", key)
						em, ek = m.Delete(key), k.Delete(key)
					}
					if errnoOf(em) != errnoOf(ek) {
						t.Fatalf("op %d %s: bpfd %v, kernel %v", i, what, em, ek)
					}
					if a, b := walkKeys(t, m, s), walkKeys(t, k, s); !slices.Equal(a, b) {
						t.Fatalf("op %d %s: iteration differs:\n bpfd   %v\n kernel %v", i, what, a, b)
					}
				}
				// NextKey from an absent key restarts at the first.
				nm, nk := make([]byte, s.KeySize), make([]byte, s.KeySize)
				absent := append(k32(uint32(ds*8)), make([]byte, ds)...)
				em, ek := m.NextKey(absent, nm), k.NextKey(absent, nk)
				if errnoOf(em) != errnoOf(ek) || em == nil && !bytes.Equal(nm, nk) {
					t.Fatalf("next from absent: bpfd %x %v, kernel %x %v", nm, em, nk, ek)
				}
			})
		}
	}
}

// TestLPMBatch walks a trie with lookup batches: every key once, in the
// kernel's order.
func TestLPMBatch(t *testing.T) {
	s := Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: 4, MaxEntries: 32, Flags: FlagNoPrealloc}
	m, k := newPair(t, s)
	for i := 0; i < 20; i++ {
		key := lpmKey(uint32(8+i%24), byte(10+i%3), byte(i), 0, 0)
		if err := m.Update(key, k32(uint32(i)), UpdateAny); err != nil {
			t.Fatal(err)
		}
		if k != nil {
			if err := k.Update(key, k32(uint32(i)), UpdateAny); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := walkKeys(t, m, s)
	if k != nil {
		if kw := walkKeys(t, k, s); !slices.Equal(want, kw) {
			t.Fatalf("iteration differs from the kernel's")
		}
	}
	b := batchBuf(s, 3)
	var got []string
	for i := 0; i < 20; i++ {
		b.Count = 3
		err := m.LookupBatch(b)
		for j := uint32(0); j < b.Count; j++ {
			got = append(got, fmt.Sprintf("%x", b.Keys[j*8:(j+1)*8]))
		}
		if err != nil {
			if errnoOf(err) != unix.ENOENT {
				t.Fatal(err)
			}
			break
		}
		b.InBatch, b.HasInBatch = b.OutBatch, true
	}
	if !slices.Equal(got, want) {
		t.Fatalf("batch walk %v, NextKey walk %v", got, want)
	}
}

package maps

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	queue3 = Spec{Type: TypeQueue, ValueSize: 4, MaxEntries: 3}
	stack3 = Spec{Type: TypeStack, ValueSize: 4, MaxEntries: 3}
	bloom  = Spec{Type: TypeBloomFilter, ValueSize: 8, MaxEntries: 16, Flags: FlagZeroSeed}
)

var queueCases = []tableCase{
	{name: "create queue", spec: queue3},
	{name: "create stack", spec: stack3},
	{name: "create queue key 4", spec: Spec{Type: TypeQueue, KeySize: 4, ValueSize: 4, MaxEntries: 3}, createErr: unix.EINVAL},
	{name: "create queue zero value", spec: Spec{Type: TypeQueue, MaxEntries: 3}, createErr: unix.EINVAL},
	{name: "create queue zero entries", spec: Spec{Type: TypeQueue, ValueSize: 4}, createErr: unix.EINVAL},
	{name: "create queue no prealloc", spec: withFlags(queue3, FlagNoPrealloc), createErr: unix.EINVAL},
	{name: "create queue value above kmalloc", spec: Spec{Type: TypeQueue, ValueSize: kmallocMax + 1, MaxEntries: 1}, createErr: unix.E2BIG},
	{name: "create stack rdonly prog", spec: withFlags(stack3, FlagRdonlyProg)},
	{name: "create bloom", spec: bloom},
	{name: "create bloom seeded 3 hashes", spec: Spec{Type: TypeBloomFilter, ValueSize: 5, MaxEntries: 100, MapExtra: 3}},
	{name: "create bloom map_extra 16", spec: Spec{Type: TypeBloomFilter, ValueSize: 4, MaxEntries: 1, MapExtra: 16}, createErr: unix.EINVAL},
	{name: "create bloom key 4", spec: Spec{Type: TypeBloomFilter, KeySize: 4, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create bloom no prealloc", spec: withFlags(bloom, FlagNoPrealloc), createErr: unix.EINVAL},
	{name: "create map_extra on queue", spec: Spec{Type: TypeQueue, ValueSize: 4, MaxEntries: 1, MapExtra: 1}, createErr: unix.EINVAL},

	{name: "queue order", spec: queue3, steps: []step{
		{op: opLookup, want: unix.ENOENT},
		{op: opLookupAndDelete, want: unix.ENOENT},
		{op: opUpdate, val: k32(1)},
		{op: opUpdate, val: k32(2)},
		{op: opUpdate, val: k32(3)},
		{op: opUpdate, val: k32(4), want: unix.E2BIG},
		{op: opLookup, val: k32(1)},
		{op: opUpdate, val: k32(4), flags: UpdateExist},
		{op: opLookupAndDelete, val: k32(2)},
		{op: opLookupAndDelete, val: k32(3)},
		{op: opLookupAndDelete, val: k32(4)},
		{op: opLookupAndDelete, want: unix.ENOENT},
		{op: opUpdate, val: k32(5), flags: UpdateNoExist, want: unix.EINVAL},
		{op: opUpdate, val: k32(5), flags: 3, want: unix.EINVAL},
		{op: opUpdate, val: k32(5), flags: UpdateLock, want: unix.EINVAL},
		{op: opDelete, want: unix.EINVAL},
		{op: opNext, want: unix.EINVAL},
		{op: opFreeze},
		{op: opUpdate, val: k32(6), want: unix.EPERM},
		{op: opLookupAndDelete, want: unix.EPERM},
	}},
	{name: "stack order", spec: stack3, steps: []step{
		{op: opUpdate, val: k32(1)},
		{op: opUpdate, val: k32(2)},
		{op: opLookup, val: k32(2)},
		{op: opUpdate, val: k32(3)},
		{op: opUpdate, val: k32(4), flags: UpdateExist}, // overwrites the oldest (1)
		{op: opLookupAndDelete, val: k32(4)},
		{op: opLookupAndDelete, val: k32(3)},
		{op: opLookupAndDelete, val: k32(2)},
		{op: opLookupAndDelete, want: unix.ENOENT},
	}},
	{name: "bloom", spec: bloom, steps: []step{
		{op: opLookup, val: val(8, 1), want: unix.ENOENT},
		{op: opUpdate, val: val(8, 1)},
		{op: opLookup, val: val(8, 1)},
		{op: opUpdate, val: val(8, 2), flags: UpdateNoExist, want: unix.EINVAL},
		{op: opUpdate, val: val(8, 2), flags: UpdateExist, want: unix.EINVAL},
		{op: opDelete, want: unix.EOPNOTSUPP},
		{op: opNext, want: unix.EOPNOTSUPP},
		{op: opLookupAndDelete, val: val(8, 1), want: ENOTSUPP},
		{op: opFreeze},
		{op: opUpdate, val: val(8, 3), want: unix.EPERM},
		{op: opLookup, val: val(8, 1)},
	}},
}

func init() {
	tableCases = append(tableCases, queueCases...)
	batchScenarios = append(batchScenarios, batchScenario{
		name: "queue and bloom have no batches",
		spec: queue3,
		run: func(t *testing.T, m ops, s Spec) []string {
			b := &Batch{Count: 1, Values: make([]byte, 4)}
			var out []string
			for _, f := range []func(*Batch) error{m.LookupBatch, m.LookupAndDeleteBatch, m.UpdateBatch, m.DeleteBatch} {
				b.Count = 1
				out = append(out, rec(f(b), b))
			}
			return out
		},
		want: []string{"errno=524 count=1", "errno=524 count=1", "errno=524 count=1", "errno=524 count=1"},
	})
}

// TestQueueDifferential runs random push/pop/peek sequences (with
// overwriting pushes) on bpfd's and the kernel's queues and stacks.
func TestQueueDifferential(t *testing.T) {
	needKernel(t)
	for _, s := range []Spec{
		{Type: TypeQueue, ValueSize: 4, MaxEntries: 5},
		{Type: TypeStack, ValueSize: 4, MaxEntries: 5},
		{Type: TypeQueue, ValueSize: 3, MaxEntries: 1},
		{Type: TypeStack, ValueSize: 7, MaxEntries: 2},
	} {
		for seed := uint64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("%s_v%d_max%d_seed%d", TypeName(s.Type), s.ValueSize, s.MaxEntries, seed), func(t *testing.T) {
				m, k := newPair(t, s)
				r := rand.New(rand.NewPCG(seed, 1))
				vm, vk := make([]byte, s.ValueSize), make([]byte, s.ValueSize)
				for i := 0; i < 300; i++ {
					var em, ek error
					read := false
					switch r.IntN(4) {
					case 0, 1:
						v := make([]byte, s.ValueSize)
						for j := range v {
							v[j] = byte(r.Uint32())
						}
						f := []uint64{UpdateAny, UpdateExist}[r.IntN(2)]
						em, ek = m.Update(nil, v, f), k.Update(nil, v, f)
					case 2:
						em, ek = m.Lookup(nil, vm), k.Lookup(nil, vk)
						read = true
					default:
						em, ek = m.LookupAndDelete(nil, vm), k.LookupAndDelete(nil, vk)
						read = true
					}
					if errnoOf(em) != errnoOf(ek) {
						t.Fatalf("op %d: bpfd %v, kernel %v", i, em, ek)
					}
					if read && em == nil && !bytes.Equal(vm, vk) {
						t.Fatalf("op %d: bpfd %x, kernel %x", i, vm, vk)
					}
				}
			})
		}
	}
}

// TestBloomMatchesKernel: with BPF_F_ZERO_SEED a bpfd bloom filter gives
// the kernel's answer for every value, false positives included, for
// both hash paths (value sizes that are and are not multiples of 4) and
// several hash-function counts and sizes.
func TestBloomMatchesKernel(t *testing.T) {
	needKernel(t)
	for _, s := range []Spec{
		{Type: TypeBloomFilter, ValueSize: 4, MaxEntries: 8, Flags: FlagZeroSeed},
		{Type: TypeBloomFilter, ValueSize: 13, MaxEntries: 50, Flags: FlagZeroSeed, MapExtra: 2},
		{Type: TypeBloomFilter, ValueSize: 16, MaxEntries: 1000, Flags: FlagZeroSeed, MapExtra: 15},
		{Type: TypeBloomFilter, ValueSize: 1, MaxEntries: 3, Flags: FlagZeroSeed, MapExtra: 1},
	} {
		t.Run(fmt.Sprintf("v%d_max%d_k%d", s.ValueSize, s.MaxEntries, s.MapExtra), func(t *testing.T) {
			m, k := newPair(t, s)
			r := rand.New(rand.NewPCG(uint64(s.ValueSize), 2))
			rv := func() []byte {
				v := make([]byte, s.ValueSize)
				for j := range v {
					v[j] = byte(r.Uint32())
				}
				return v
			}
			for i := uint32(0); i < s.MaxEntries; i++ {
				v := rv()
				if em, ek := m.Update(nil, v, 0), k.Update(nil, v, 0); em != nil || ek != nil {
					t.Fatal(em, ek)
				}
			}
			positives := 0
			for i := 0; i < 3000; i++ {
				v := rv()
				em, ek := m.Lookup(nil, v), k.Lookup(nil, v)
				if errnoOf(em) != errnoOf(ek) {
					t.Fatalf("value %x: bpfd %v, kernel %v", v, em, ek)
				}
				if em == nil {
					positives++
				}
			}
			t.Logf("%d false positives in 3000 absent values, same as the kernel", positives)
		})
	}
}

// TestPusher checks the program-side helpers' entry points.
func TestPusher(t *testing.T) {
	q := mustNew(t, queue3).(Pusher)
	v := make([]byte, 4)
	if err := q.Push(0, k32(7), 0); err != nil {
		t.Fatal(err)
	}
	if err := q.Peek(0, v); err != nil || ne.Uint32(v) != 7 {
		t.Fatalf("Peek %x %v", v, err)
	}
	if err := q.Pop(0, v); err != nil || ne.Uint32(v) != 7 {
		t.Fatalf("Pop %x %v", v, err)
	}
	if err := q.Pop(0, v); err != ErrKeyNotExist {
		t.Fatalf("Pop on empty: %v", err)
	}
	b := mustNew(t, bloom).(Pusher)
	if err := b.Pop(0, make([]byte, 8)); err != ErrOpNotSupp {
		t.Fatalf("bloom Pop: %v", err)
	}
}

package maps

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/percpu"
)

var (
	lru4  = Spec{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	lruPC = Spec{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 4}
)

var lruCases = []tableCase{
	{name: "create lru hash", spec: lru4},
	{name: "create lru percpu hash", spec: lruPC},
	{name: "create lru hash no common lru", spec: withFlags(lru4, FlagNoCommonLRU)},
	{name: "create lru percpu hash no common lru", spec: withFlags(lruPC, FlagNoCommonLRU)},
	{name: "create lru hash no prealloc", spec: withFlags(lru4, FlagNoPrealloc), createErr: ENOTSUPP},
	{name: "create lru percpu hash no prealloc", spec: withFlags(lruPC, FlagNoPrealloc), createErr: ENOTSUPP},
	{name: "create hash no common lru", spec: withFlags(hash48, FlagNoCommonLRU), createErr: unix.EINVAL},
	{name: "create lru hash no common lru numa", spec: withFlags(lru4, FlagNoCommonLRU|FlagNumaNode), createErr: unix.EINVAL},
	{name: "create lru hash numa", spec: withFlags(lru4, FlagNumaNode)},
	{name: "create lru hash zero key", spec: Spec{Type: TypeLRUHash, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create lru hash rdonly wronly", spec: withFlags(lru4, FlagRdonly|FlagWronly), createErr: unix.EINVAL},
	{name: "create lru percpu value above 32K", spec: Spec{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 32<<10 + 1, MaxEntries: 1}, createErr: unix.E2BIG},

	{name: "lru flags", spec: lru4, steps: []step{
		{op: opUpdate, key: k32(1), val: v1, flags: UpdateExist, want: unix.ENOENT},
		{op: opUpdate, key: k32(1), val: v1, flags: UpdateNoExist},
		{op: opUpdate, key: k32(1), val: v2, flags: UpdateNoExist, want: unix.EEXIST},
		{op: opUpdate, key: k32(1), val: v2, flags: UpdateExist},
		{op: opLookup, key: k32(1), val: v2},
		{op: opUpdate, key: k32(1), val: v2, flags: 3, want: unix.EINVAL},
		{op: opUpdate, key: k32(1), val: v2, flags: UpdateLock, want: unix.EINVAL},
		{op: opLookupAndDelete, key: k32(1), val: v2},
		{op: opDelete, key: k32(1), want: unix.ENOENT},
		{op: opNext, want: unix.ENOENT},
	}},
	{name: "lru percpu", spec: lruPC, steps: []step{
		{op: opUpdate, key: k32(1), val: pcv(lruPC, 1), flags: UpdateExist, want: unix.ENOENT},
		{op: opUpdate, key: k32(1), val: pcv(lruPC, 1)},
		{op: opLookup, key: k32(1), val: pcv(lruPC, 1)},
		{op: opUpdate, key: k32(1), val: pcv(lruPC, 5), flags: UpdateExist},
		{op: opLookup, key: k32(1), val: pcv(lruPC, 5)},
		{op: opLookupAndDelete, key: k32(1), val: pcv(lruPC, 5)},
		{op: opLookup, key: k32(1), want: unix.ENOENT},
	}},
}

func init() { tableCases = append(tableCases, lruCases...) }

// pinCPU pins the calling goroutine's thread to CPU cpu until the test
// ends, so that the kernel's per-CPU LRU lists are that CPU's, as bpfd's
// slot cpu in a pool where every other slot is held (onSlot). Subtests
// run on goroutines of their own: each pins itself.
func pinCPU(t *testing.T, cpu int) {
	t.Helper()
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	})
}

// slotPool is a pool as large as the machine's CPU count whose slots the
// test holds, but one: syscall-side operations on maps made with its
// Config run on that slot.
type slotPool struct {
	p    *percpu.Pool
	held []int
}

func newSlotPool() *slotPool { return &slotPool{p: percpu.NewPool(percpu.Possible())} }

// only leaves slot cpu free (holding every other).
func (sp *slotPool) only(t *testing.T, cpu int) {
	t.Helper()
	sp.release()
	for i := 0; i < sp.p.N(); i++ {
		if i != cpu {
			sp.held = append(sp.held, sp.p.Acquire(i))
		}
	}
}

func (sp *slotPool) release() {
	for _, s := range sp.held {
		sp.p.Release(s)
	}
	sp.held = sp.held[:0]
}

// onSlot returns a config whose syscall-side operations run on slot cpu
// until cleanup, and the function that frees every slot (register it
// after the maps' Close cleanups: Close quiesces the pool).
func onSlot(t *testing.T, cpu int) (*Config, func()) {
	t.Helper()
	sp := newSlotPool()
	sp.only(t, cpu)
	return &Config{Pool: sp.p}, sp.release
}

// keySet lists the keys a map holds (sorted).
func keySet(t *testing.T, m ops, s Spec) []string {
	t.Helper()
	var out []string
	var key []byte
	next := make([]byte, s.KeySize)
	for i := 0; i <= int(s.MaxEntries); i++ {
		if m.NextKey(key, next) != nil {
			break
		}
		out = append(out, fmt.Sprintf("%x", next))
		key = bytes.Clone(next)
	}
	slices.Sort(out)
	return out
}

// kernelMaxEntries asks the kernel for a map's max_entries
// (BPF_OBJ_GET_INFO_BY_FD).
func kernelMaxEntries(t *testing.T, k *kernelMap) uint32 {
	t.Helper()
	var info [96]byte
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(k.fd), uint32(len(info)), uint64(uintptr(unsafe.Pointer(&info[0])))}
	if _, err := bpf(15, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(&info)
	return ne.Uint32(info[16:]) // type, id, key_size, value_size, max_entries
}

// TestLRUMaxEntries: BPF_F_NO_COMMON_LRU rounds max_entries up to a
// multiple of the CPU count, as the kernel.
func TestLRUMaxEntries(t *testing.T) {
	for _, max := range []uint32{1, 3, 5, 64} {
		s := Spec{Type: TypeLRUHash, KeySize: 4, ValueSize: 4, MaxEntries: max, Flags: FlagNoCommonLRU}
		m, k := newPair(t, s)
		got := m.Spec().MaxEntries
		n := uint32(defaultNCPU())
		if want := (max + n - 1) / n * n; got != want {
			t.Errorf("max_entries %d: bpfd records %d, want %d", max, got, want)
		}
		if k != nil {
			if kw := kernelMaxEntries(t, k); kw != got {
				t.Errorf("max_entries %d: bpfd %d, kernel %d", max, got, kw)
			}
		}
	}
}

// TestLRUDifferential runs random operation sequences on bpfd's and the
// kernel's LRU maps from CPU 0 and compares every result and, after every
// operation, which keys the maps hold: eviction must be the kernel's
// (evicting before the map is full, in the kernel's order).
func TestLRUDifferential(t *testing.T) {
	needKernel(t)
	specs := []Spec{
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 64},
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 300},
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: FlagNoCommonLRU},
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 9, Flags: FlagNoCommonLRU},
		{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 32},
		{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 12, MaxEntries: 8, Flags: FlagNoCommonLRU},
	}
	for _, s := range specs {
		for seed := uint64(1); seed <= 6; seed++ {
			t.Run(fmt.Sprintf("%s_f%d_max%d_seed%d", TypeName(s.Type), s.Flags, s.MaxEntries, seed), func(t *testing.T) {
				pinCPU(t, 0)
				cfg, release := onSlot(t, 0)
				m, err := NewWith(s, cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				t.Cleanup(release)
				k, err := newKernelMap(t, s)
				if err != nil {
					t.Fatal(err)
				}
				s.MaxEntries = m.Spec().MaxEntries
				r := rand.New(rand.NewPCG(seed, 7))
				vs := s.SyscallValueSize()
				vm, vk := make([]byte, vs), make([]byte, vs)
				keyRange := int(s.MaxEntries) * 3
				for i := 0; i < 600; i++ {
					key := k32(uint32(r.IntN(keyRange)))
					var em, ek error
					what := ""
					switch op := r.IntN(10); {
					case op < 6:
						v := make([]byte, vs)
						for j := range v {
							v[j] = byte(r.Uint32())
						}
						f := uint64(r.IntN(4))
						if f == 3 {
							f = UpdateAny
						}
						what = fmt.Sprintf("update %x flags %d", key, f)
						em, ek = m.Update(key, v, f), k.Update(key, v, f)
					case op < 8:
						what = fmt.Sprintf("lookup %x", key)
						em, ek = m.Lookup(key, vm), k.Lookup(key, vk)
						if em == nil && ek == nil && !bytes.Equal(vm, vk) {
							t.Fatalf("op %d %s: %x, kernel %x", i, what, vm, vk)
						}
					case op < 9:
						what = fmt.Sprintf("delete %x", key)
						em, ek = m.Delete(key), k.Delete(key)
					default:
						what = fmt.Sprintf("lookup_and_delete %x", key)
						em, ek = m.LookupAndDelete(key, vm), k.LookupAndDelete(key, vk)
					}
					if errnoOf(em) != errnoOf(ek) {
						t.Fatalf("op %d %s: bpfd %v, kernel %v", i, what, em, ek)
					}
					if km, kk := keySet(t, m, s), keySet(t, k, s); !slices.Equal(km, kk) {
						t.Fatalf("op %d %s: keys differ:\n bpfd   %v\n kernel %v", i, what, km, kk)
					}
				}
			})
		}
	}
}

// TestLRUEvictsBeforeFull shows the kernel behaviour the issue names:
// with the common LRU, free nodes are handed to a CPU's local list in
// batches (target_free), so after another CPU took its batch, a map of
// max_entries keys evicts before it holds max_entries; and one insert
// past full evicts a whole batch. bpfd's slots play the CPUs.
func TestLRUEvictsBeforeFull(t *testing.T) {
	if defaultNCPU() < 2 {
		t.Skip("needs two possible CPUs")
	}
	s := Spec{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 512}
	sp := newSlotPool()
	m, err := NewWith(s, &Config{Pool: sp.p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	t.Cleanup(sp.release)
	var k *kernelMap
	if errNoBPF == nil {
		if k, err = newKernelMap(t, s); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan []int)
	go func() {
		// One insert from CPU 1, then max_entries more from CPU 0.
		var counts []int
		run := func(cpu int, from, to uint32) {
			pinCPU(t, cpu)
			sp.only(t, cpu)
			for i := from; i < to; i++ {
				if err := m.Update(k32(i), zero8, UpdateAny); err != nil {
					t.Error(err)
				}
				if k != nil {
					if err := k.Update(k32(i), zero8, UpdateAny); err != nil {
						t.Error(err)
					}
				}
			}
			sp.release()
		}
		run(1, 0, 1)
		run(0, 1, s.MaxEntries)
		counts = append(counts, len(keySet(t, m, s)))
		if k != nil {
			counts = append(counts, len(keySet(t, k, s)))
		}
		done <- counts
	}()
	counts := <-done
	if counts[0] >= int(s.MaxEntries) {
		t.Fatalf("bpfd holds %d of %d keys after %d inserts: no early eviction", counts[0], s.MaxEntries, s.MaxEntries)
	}
	if len(counts) > 1 && counts[1] != counts[0] {
		t.Fatalf("after %d inserts bpfd holds %d keys, the kernel %d", s.MaxEntries, counts[0], counts[1])
	}
	t.Logf("%d inserts (1 from CPU 1, the rest from CPU 0) into a %d-entry LRU hash leave %d keys", s.MaxEntries, s.MaxEntries, counts[0])
}

// TestLRUProgramRef checks that program-side lookups mark entries (the
// reference bit), so they survive eviction that unmarked ones do not.
func TestLRUProgramRef(t *testing.T) {
	s := Spec{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 64, Flags: FlagNoCommonLRU}
	cfg, release := onSlot(t, 0)
	m, err := NewWith(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	t.Cleanup(release)
	per := s.MaxEntries / uint32(defaultNCPU())
	for i := uint32(0); i < per; i++ {
		m.Update(k32(i), zero8, UpdateAny)
	}
	// Keys 0..3 are looked up by a program; then the slot's list is
	// overfilled: they must survive, some unmarked key must not.
	for i := uint32(0); i < 4; i++ {
		if m.ProgLookup(0, k32(i)) == nil {
			t.Fatalf("key %d missing", i)
		}
	}
	for i := uint32(1000); i < 1000+per/2; i++ {
		m.Update(k32(i), zero8, UpdateAny)
	}
	v := make([]byte, 8)
	for i := uint32(0); i < 4; i++ {
		if err := m.Lookup(k32(i), v); err != nil {
			t.Fatalf("referenced key %d evicted: %v", i, err)
		}
	}
	evicted := 0
	for i := uint32(4); i < per; i++ {
		if m.Lookup(k32(i), v) != nil {
			evicted++
		}
	}
	if evicted == 0 {
		t.Fatal("nothing evicted")
	}
}

// TestLRUReopen: a reopened LRU region evicts exactly as the map it was
// copied from would have (the LRU lists live in the region).
func TestLRUReopen(t *testing.T) {
	for _, s := range []Spec{
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 32},
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 32, Flags: FlagNoCommonLRU},
		{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 32},
	} {
		t.Run(fmt.Sprintf("%s_f%d", TypeName(s.Type), s.Flags), func(t *testing.T) {
			sp := newSlotPool()
			sp.only(t, 0)
			cfg := &Config{Pool: sp.p}
			m, err := NewWith(s, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			r := rand.New(rand.NewPCG(3, 3))
			vs := s.SyscallValueSize()
			step := func(m Map, r *rand.Rand) {
				key := k32(uint32(r.IntN(100)))
				if r.IntN(5) == 0 {
					m.Delete(key)
				} else {
					m.Update(key, make([]byte, vs), UpdateAny)
				}
			}
			for i := 0; i < 200; i++ {
				step(m, r)
			}
			fd := memfdCopy(t, m)
			m2, rep, err := Open(fd, "", cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m2.Close() })
			t.Cleanup(sp.release)
			if rep != (Repair{}) {
				t.Fatalf("clean LRU region repaired: %+v", rep)
			}
			r1, r2 := rand.New(rand.NewPCG(5, 5)), rand.New(rand.NewPCG(5, 5))
			for i := 0; i < 300; i++ {
				step(m, r1)
				step(m2, r2)
				if a, b := keySet(t, m, s), keySet(t, m2, s); !slices.Equal(a, b) {
					t.Fatalf("step %d: original %v, reopened %v", i, a, b)
				}
			}
		})
	}
}

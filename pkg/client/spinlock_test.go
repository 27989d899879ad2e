package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
	"unsafe"
)

// BTF types for the spin lock tests.
var (
	btfU32  = &btf.Int{Name: "unsigned int", Size: 4}
	btfU64  = &btf.Int{Name: "long long unsigned int", Size: 8}
	btfLock = &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: btfU32}}}
)

// lockStruct is a struct of the given members (name, type, byte offset)
// and size.
func lockStruct(name string, size uint32, members ...btf.Member) *btf.Struct {
	return &btf.Struct{Name: name, Size: size, Members: members}
}

func member(name string, t btf.Type, off uint32) btf.Member {
	return btf.Member{Name: name, Type: t, Offset: btf.Bits(off * 8)}
}

// counterValue is struct { u64 a; struct bpf_spin_lock l; u32 pad; u64 b; }
// (24 bytes, lock at 8).
var counterValue = lockStruct("counters", 24, member("a", btfU64, 0), member("l", btfLock, 8),
	member("pad", btfU32, 12), member("b", btfU64, 16))

// errnoOf returns the errno err stands for (0 for nil; -1 for none known).
func errnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	for _, e := range []unix.Errno{unix.EINVAL, unix.E2BIG, unix.EEXIST, unix.EACCES, unix.EOPNOTSUPP,
		unix.Errno(524), unix.EPERM, unix.ENOENT, unix.EFAULT, unix.EBADF, unix.ENOMEM, unix.ENOSPC} {
		if errors.Is(err, e) {
			return e
		}
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return ^unix.Errno(0)
}

// spinLockCreateCases: where a bpf_spin_lock may be, for which map types
// and flags; the kernel decides every answer.
var spinLockCreateCases = []struct {
	name      string
	typ       MapType
	valueSize uint32
	flags     uint32
	value     btf.Type
	lockOff   int // the lock bpfd must find, -1 none (checked when creation succeeds)
}{
	{name: "hash", typ: Hash, valueSize: 24, value: counterValue, lockOff: 8},
	{name: "array", typ: Array, valueSize: 24, value: counterValue, lockOff: 8},
	{name: "lock first", typ: Array, valueSize: 8, value: lockStruct("v", 8, member("l", btfLock, 0), member("x", btfU32, 4)), lockOff: 0},
	{name: "lock only", typ: Hash, valueSize: 4, value: lockStruct("v", 4, member("l", btfLock, 0)), lockOff: 0},
	{name: "value is the lock", typ: Array, valueSize: 4, value: btfLock, lockOff: -1},
	{name: "typedef value", typ: Array, valueSize: 24, value: &btf.Typedef{Name: "ctr_t", Type: counterValue}, lockOff: 8},
	{name: "typedef lock member", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("l", &btf.Typedef{Name: "lock_t", Type: btfLock}, 0), member("x", btfU32, 4)), lockOff: -1},
	{name: "volatile lock member", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("l", &btf.Volatile{Type: btfLock}, 0), member("x", btfU32, 4)), lockOff: -1},
	{name: "nested struct", typ: Hash, valueSize: 16,
		value: lockStruct("outer", 16, member("x", btfU64, 0), member("in", lockStruct("inner", 8, member("y", btfU32, 0), member("l", btfLock, 4)), 8)), lockOff: 12},
	{name: "array of one lock", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("l", &btf.Array{Index: btfU32, Type: btfLock, Nelems: 1}, 0), member("x", btfU32, 4)), lockOff: 0},
	{name: "array of two locks", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("l", &btf.Array{Index: btfU32, Type: btfLock, Nelems: 2}, 0)), lockOff: -1},
	{name: "array of two nested locks", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("in", &btf.Array{Index: btfU32, Type: lockStruct("in", 4, member("l", btfLock, 0)), Nelems: 2}, 0)), lockOff: -1},
	{name: "two locks", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("l1", btfLock, 0), member("l2", btfLock, 4)), lockOff: -1},
	{name: "two locks nested", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("l1", btfLock, 0), member("in", lockStruct("in", 4, member("l2", btfLock, 0)), 4)), lockOff: 0},
	{name: "two locks nested first", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("in", lockStruct("in", 4, member("l1", btfLock, 0)), 0), member("l2", btfLock, 4)), lockOff: 0},
	{name: "union holding a lock", typ: Array, valueSize: 8,
		value: &btf.Union{Name: "u", Size: 8, Members: []btf.Member{member("l", btfLock, 0), member("x", btfU64, 0)}}, lockOff: -1},
	{name: "struct with a union holding a lock", typ: Array, valueSize: 8,
		value: lockStruct("v", 8, member("u", &btf.Union{Name: "u", Size: 8, Members: []btf.Member{member("l", btfLock, 0), member("x", btfU64, 0)}}, 0)), lockOff: -1},
	{name: "bitfield without lock", typ: Array, valueSize: 4,
		value: lockStruct("v", 4, member("a", btfU32, 0), btf.Member{Name: "b", Type: btfU32, Offset: 3, BitfieldSize: 5}), lockOff: -1},
	{name: "percpu hash", typ: PercpuHash, valueSize: 24, value: counterValue},
	{name: "percpu array", typ: PercpuArray, valueSize: 24, value: counterValue},
	{name: "lru hash", typ: LRUHash, valueSize: 24, value: counterValue},
	{name: "lru percpu hash", typ: LRUPercpuHash, valueSize: 24, value: counterValue},
	{name: "hash no prealloc", typ: Hash, valueSize: 24, flags: FlagNoPrealloc, value: counterValue, lockOff: 8},
	{name: "array rdonly prog", typ: Array, valueSize: 24, flags: FlagRdonlyProg, value: counterValue},
	{name: "hash wronly prog", typ: Hash, valueSize: 24, flags: FlagWronlyProg, value: counterValue},
	{name: "array rdonly syscall", typ: Array, valueSize: 24, flags: FlagRdonly, value: counterValue, lockOff: 8},
	{name: "array mmapable", typ: Array, valueSize: 24, flags: FlagMmapable, value: counterValue, lockOff: 8},
	{name: "array inner map template", typ: Array, valueSize: 24, flags: FlagInnerMap, value: counterValue, lockOff: 8},
	{name: "devmap", typ: Devmap, valueSize: 4, value: lockStruct("v", 4, member("l", btfLock, 0))},
	{name: "prog array", typ: ProgArray, valueSize: 4, value: lockStruct("v", 4, member("l", btfLock, 0))},
	{name: "bloom filter", typ: BloomFilter, valueSize: 24, value: counterValue},
}

// kernelLockMap creates the case's map in the kernel: BTF (key type u32
// where the type has keys) loaded with cilium/ebpf, then a raw
// BPF_MAP_CREATE, since cilium/ebpf retries without BTF on EINVAL and
// would hide the kernel's answer.
func kernelLockMap(typ MapType, keySize, valueSize, maxEntries, flags uint32, value btf.Type) (*ebpf.Map, error) {
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		return nil, err
	}
	vid, err := b.Add(value)
	if err != nil {
		return nil, err
	}
	var kid btf.TypeID
	if keySize == 4 {
		if kid, err = b.Add(btfU32); err != nil {
			return nil, err
		}
	}
	h, err := btf.NewHandle(b)
	if err != nil {
		return nil, fmt.Errorf("kernel BTF_LOAD: %w", err)
	}
	defer h.Close()
	var attr [72]byte
	le := binary.NativeEndian
	le.PutUint32(attr[0:], uint32(typ))
	le.PutUint32(attr[4:], keySize)
	le.PutUint32(attr[8:], valueSize)
	le.PutUint32(attr[12:], maxEntries)
	le.PutUint32(attr[16:], flags)
	le.PutUint32(attr[48:], uint32(h.FD()))
	le.PutUint32(attr[52:], uint32(kid))
	le.PutUint32(attr[56:], uint32(vid))
	fd, _, errno := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	if errno != 0 {
		return nil, errno
	}
	return ebpf.NewMapFromFD(int(fd))
}

func keySizeOf(typ MapType) uint32 {
	if typ == Queue || typ == BloomFilter {
		return 0
	}
	return 4
}

// TestSpinLockCreateVsKernel: map creation with a bpf_spin_lock in the
// value's BTF gives the kernel's errno for every placement, type and
// flag, and bpfd records the lock where the kernel finds it.
func TestSpinLockCreateVsKernel(t *testing.T) {
	kernel := true
	if ok, why := kernelAvailable(); !ok {
		kernel = false
		t.Logf("kernel oracle unavailable (%s): checking bpfd against the recorded answers only", why)
	}
	c := newTestConn(t)
	for _, tt := range spinLockCreateCases {
		t.Run(tt.name, func(t *testing.T) {
			ks := keySizeOf(tt.typ)
			spec := MapSpec{Type: tt.typ, KeySize: ks, ValueSize: tt.valueSize, MaxEntries: 4, Flags: tt.flags, Value: tt.value}
			if ks == 4 {
				spec.Key = btfU32
			}
			m, err := c.NewMap(spec)
			got := errnoOf(err)
			if m != nil {
				defer m.Close()
			}
			if !kernel {
				t.Skip("kernel oracle unavailable")
			}
			km, kerr := kernelLockMap(tt.typ, ks, tt.valueSize, 4, tt.flags, tt.value)
			want := errnoOf(kerr)
			if km != nil {
				defer km.Close()
			}
			if got != want {
				t.Fatalf("bpfd: %v (%d), kernel: %v (%d)", err, int(got), kerr, int(want))
			}
			if err != nil {
				return
			}
			if info, err := m.Info(); err != nil || info.SpinLockOffset != tt.lockOff {
				t.Fatalf("Info: lock at %d, %v; want %d", info.SpinLockOffset, err, tt.lockOff)
			}
			info, _ := m.Info()
			recs, err := c.Objects(ObjectFilter{ID: info.ID})
			if err != nil || len(recs) != 1 {
				t.Fatalf("Objects: %v, %v", recs, err)
			}
			if got := recs[0].SpinLockOff; (got == nil) != (tt.lockOff < 0) || got != nil && int(*got) != tt.lockOff {
				t.Fatalf("listing: spin_lock_off %v, want %d", got, tt.lockOff)
			}
			if tt.typ != Hash && tt.typ != Array || tt.flags&FlagRdonly != 0 {
				return
			}
			// Whether the kernel holds a lock: a BPF_F_LOCK lookup passes
			// its check (ENOENT on an empty hash) or fails with EINVAL.
			v := make([]byte, tt.valueSize)
			kErr := errnoOf(km.LookupWithFlags(uint32(0), v, ebpf.LookupLock))
			bErr := errnoOf(m.LookupWithFlags(u32(0), v, LookupLock))
			if kErr != bErr {
				t.Fatalf("F_LOCK lookup: bpfd %v, kernel %v", bErr, kErr)
			}
			// Where: the bytes a plain lookup zeroes.
			kOff := lockOffsetOf(t, kernelMap{km}, int(tt.valueSize))
			bOff := lockOffsetOf(t, m, int(tt.valueSize))
			if kOff != bOff || bOff != tt.lockOff {
				t.Fatalf("lock at %d in bpfd, %d in the kernel, want %d", bOff, kOff, tt.lockOff)
			}
		})
	}
}

// lockOffsetOf probes where bpfd keeps m's lock: the bytes a plain lookup
// returns zeroed after an all-ones update of key 0, or -1 when every
// byte comes back.
func lockOffsetOf(t *testing.T, m mapOps, valueSize int) int {
	t.Helper()
	ones := bytes.Repeat([]byte{0xff}, valueSize)
	if err := m.Update(u32(0), ones, UpdateAny); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, valueSize)
	if err := m.Lookup(u32(0), got); err != nil {
		t.Fatal(err)
	}
	off := -1
	for i := range got {
		if got[i] == 0 {
			if off < 0 {
				off = i
			}
		}
	}
	if off >= 0 && !bytes.Equal(got[off:off+4], make([]byte, 4)) {
		t.Fatalf("lookup %x: zeroed bytes are not a 4-byte lock", got)
	}
	return off
}

// lockOps are the flag-taking operations both backends offer.
type lockOps interface {
	lookupFlags(key, value []byte, flags uint64) error
	lookupDelFlags(key, value []byte, flags uint64) error
	update(key, value []byte, flags uint64) error
	batchUpdate(keys, values []byte, elemFlags uint64) (int, error)
	batchLookup(keys, values []byte, elemFlags uint64) (int, error)
	freeze() error
}

type bpfdLockOps struct{ m *Map }

func (b bpfdLockOps) lookupFlags(k, v []byte, f uint64) error { return b.m.LookupWithFlags(k, v, f) }
func (b bpfdLockOps) lookupDelFlags(k, v []byte, f uint64) error {
	return b.m.LookupAndDeleteWithFlags(k, v, f)
}
func (b bpfdLockOps) update(k, v []byte, f uint64) error { return b.m.Update(k, v, f) }
func (b bpfdLockOps) batchUpdate(k, v []byte, f uint64) (int, error) {
	return b.m.BatchUpdate(k, v, &BatchOptions{ElemFlags: f})
}
func (b bpfdLockOps) batchLookup(k, v []byte, f uint64) (int, error) {
	return b.m.BatchLookup(new(MapBatchCursor), k, v, &BatchOptions{ElemFlags: f})
}
func (b bpfdLockOps) freeze() error { return b.m.Freeze() }

type kernelLockOps struct{ m *ebpf.Map }

func (k kernelLockOps) lookupFlags(key, v []byte, f uint64) error {
	return k.m.LookupWithFlags(key, v, ebpf.MapLookupFlags(f))
}
func (k kernelLockOps) lookupDelFlags(key, v []byte, f uint64) error {
	return k.m.LookupAndDeleteWithFlags(key, v, ebpf.MapLookupFlags(f))
}
func (k kernelLockOps) update(key, v []byte, f uint64) error {
	return k.m.Update(key, v, ebpf.MapUpdateFlags(f))
}
func (k kernelLockOps) batchUpdate(keys, v []byte, f uint64) (int, error) {
	ks, vs := make([]uint32, len(keys)/4), make([][24]byte, len(keys)/4)
	for i := range ks {
		ks[i] = binary.NativeEndian.Uint32(keys[4*i:])
		copy(vs[i][:], v[24*i:])
	}
	return k.m.BatchUpdate(ks, vs, &ebpf.BatchOptions{ElemFlags: f})
}
func (k kernelLockOps) batchLookup(keys, v []byte, f uint64) (int, error) {
	ks, vs := make([]uint32, len(keys)/4), make([][24]byte, len(keys)/4)
	n, err := k.m.BatchLookup(new(ebpf.MapBatchCursor), ks, vs, &ebpf.BatchOptions{ElemFlags: f})
	for i := range ks {
		binary.NativeEndian.PutUint32(keys[4*i:], ks[i])
		copy(v[24*i:], vs[i][:])
	}
	return n, err
}
func (k kernelLockOps) freeze() error { return k.m.Freeze() }

// lockStep is one operation of TestSpinLockOpsVsKernel: its errno and
// output bytes are compared between bpfd and the kernel.
type lockStep struct {
	name string
	run  func(o lockOps) (error, []byte)
}

// counters returns a 24-byte counterValue with a and b set and the lock
// bytes (8..11) set to lock.
func counters(a, b uint64, lock uint32) []byte {
	v := make([]byte, 24)
	binary.NativeEndian.PutUint64(v, a)
	binary.NativeEndian.PutUint32(v[8:], lock)
	binary.NativeEndian.PutUint32(v[12:], 0x5a5a5a5a)
	binary.NativeEndian.PutUint64(v[16:], b)
	return v
}

func lookupStep(name string, key uint32, flags uint64) lockStep {
	return lockStep{name, func(o lockOps) (error, []byte) {
		v := make([]byte, 24)
		err := o.lookupFlags(u32(key), v, flags)
		return err, v
	}}
}

func lookupDelStep(name string, key uint32, flags uint64) lockStep {
	return lockStep{name, func(o lockOps) (error, []byte) {
		v := make([]byte, 24)
		err := o.lookupDelFlags(u32(key), v, flags)
		return err, v
	}}
}

func updateStep(name string, key uint32, v []byte, flags uint64) lockStep {
	return lockStep{name, func(o lockOps) (error, []byte) { return o.update(u32(key), v, flags), nil }}
}

func batchSteps(keys ...uint32) []lockStep {
	var kb, vb []byte
	for i, k := range keys {
		kb = append(kb, u32(k)...)
		vb = append(vb, counters(uint64(100+i), uint64(200+i), 0xffffffff)...)
	}
	lookup := func(name string, flags uint64) lockStep {
		return lockStep{name, func(o lockOps) (error, []byte) {
			k, v := make([]byte, 4*8), make([]byte, 24*8)
			n, err := o.batchLookup(k, v, flags)
			// Order may differ between hash implementations: compare
			// the set of (key, value) pairs, sorted by key.
			return err, sortedPairs(k[:4*n], v[:24*n])
		}}
	}
	return []lockStep{
		{"batch update F_LOCK", func(o lockOps) (error, []byte) {
			n, err := o.batchUpdate(kb, vb, LookupLock)
			return err, u32(uint32(n))
		}},
		{"batch update flags 8", func(o lockOps) (error, []byte) {
			n, err := o.batchUpdate(kb, vb, 8)
			return err, u32(uint32(n))
		}},
		lookup("batch lookup", 0),
		lookup("batch lookup F_LOCK", LookupLock),
		lookup("batch lookup F_LOCK|8", LookupLock|8),
	}
}

func sortedPairs(keys, values []byte) []byte {
	n := len(keys) / 4
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	for i := 1; i < n; i++ {
		for j := i; j > 0 && binary.NativeEndian.Uint32(keys[4*idx[j]:]) < binary.NativeEndian.Uint32(keys[4*idx[j-1]:]); j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	var out []byte
	for _, i := range idx {
		out = append(out, keys[4*i:4*i+4]...)
		out = append(out, values[24*i:24*i+24]...)
	}
	return out
}

// TestSpinLockOpsVsKernel: every syscall operation with and without
// BPF_F_LOCK, on hash and array maps with a lock and on maps without
// one, gives the kernel's errno and the kernel's bytes (the lock field
// zeroed in what lookups return, never overwritten by updates).
func TestSpinLockOpsVsKernel(t *testing.T) {
	if ok, why := kernelAvailable(); !ok {
		t.Skip("kernel oracle: " + why)
	}
	c := newTestConn(t)
	common := []lockStep{
		updateStep("plain update writes around the lock", 1, counters(1, 2, 0xffffffff), UpdateAny),
		lookupStep("plain lookup zeroes the lock", 1, 0),
		lookupStep("F_LOCK lookup", 1, LookupLock),
		lookupStep("lookup flags 8", 1, 8),
		lookupStep("lookup F_LOCK|8", 1, LookupLock|8),
		updateStep("F_LOCK update", 1, counters(3, 4, 0xffffffff), UpdateAny|UpdateLock),
		lookupStep("lookup after F_LOCK update", 1, 0),
		updateStep("F_LOCK|NOEXIST on existing", 1, counters(5, 6, 0), UpdateNoExist|UpdateLock),
		updateStep("F_LOCK|EXIST on existing", 1, counters(7, 8, 0), UpdateExist|UpdateLock),
		lookupStep("lookup after F_LOCK|EXIST", 1, LookupLock),
		updateStep("update flags F_LOCK|3", 1, counters(7, 8, 0), 3|UpdateLock),
		updateStep("update flags 8", 1, counters(7, 8, 0), 8),
		updateStep("F_LOCK|EXIST on missing", 2, counters(9, 9, 0), UpdateExist|UpdateLock),
		updateStep("F_LOCK|NOEXIST on missing", 2, counters(9, 10, 1), UpdateNoExist|UpdateLock),
		lookupStep("lookup inserted under F_LOCK", 2, 0),
		updateStep("F_LOCK out of range", 1000, counters(1, 1, 0), UpdateLock),
		lookupStep("F_LOCK lookup missing", 1000, LookupLock),
		lookupDelStep("lookup-and-delete flags 8", 1, 8),
		lookupDelStep("lookup-and-delete F_LOCK", 1, LookupLock),
		lookupDelStep("lookup-and-delete plain", 2, 0),
		lookupStep("lookup after lookup-and-delete", 1, 0),
	}
	common = append(common, batchSteps(3, 4, 5)...)
	common = append(common,
		lockStep{"freeze", func(o lockOps) (error, []byte) { return o.freeze(), nil }},
		updateStep("F_LOCK update after freeze", 1, counters(1, 1, 0), UpdateLock),
		lookupStep("F_LOCK lookup after freeze", 3, LookupLock),
	)
	tests := []struct {
		name  string
		typ   MapType
		value btf.Type
	}{
		{name: "hash with lock", typ: Hash, value: counterValue},
		{name: "array with lock", typ: Array, value: counterValue},
		{name: "hash without lock", typ: Hash, value: lockStruct("nolock", 24, member("a", btfU64, 0), member("c", btfU64, 8), member("b", btfU64, 16))},
		{name: "array without lock", typ: Array, value: lockStruct("nolock", 24, member("a", btfU64, 0), member("c", btfU64, 8), member("b", btfU64, 16))},
		{name: "array without BTF", typ: Array},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := MapSpec{Type: tt.typ, KeySize: 4, ValueSize: 24, MaxEntries: 8, Value: tt.value}
			if tt.value != nil {
				spec.Key = btfU32
			}
			m, err := c.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var km *ebpf.Map
			if tt.value != nil {
				km, err = kernelLockMap(tt.typ, 4, 24, 8, 0, tt.value)
			} else {
				km, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(tt.typ), KeySize: 4, ValueSize: 24, MaxEntries: 8})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer km.Close()
			b, k := bpfdLockOps{m}, kernelLockOps{km}
			for _, st := range common {
				bErr, bOut := st.run(b)
				kErr, kOut := st.run(k)
				if errnoOf(bErr) != errnoOf(kErr) {
					t.Fatalf("%s: bpfd %v (%d), kernel %v (%d)", st.name, bErr, int(errnoOf(bErr)), kErr, int(errnoOf(kErr)))
				}
				if kErr == nil && !bytes.Equal(bOut, kOut) {
					t.Fatalf("%s: bpfd %x, kernel %x", st.name, bOut, kOut)
				}
			}
		})
	}
}

// TestSpinLockFixtureVsKernel loads the clang-built testdata/bpf/
// spinlock.bpf.o (counters updated in pairs under bpf_spin_lock, in an
// array and a hash) into bpfd and the kernel, runs it on packets of
// several lengths, and compares return values and every value, read
// plainly and with LookupLock.
func TestSpinLockFixtureVsKernel(t *testing.T) {
	if ok, why := kernelAvailable(); !ok {
		t.Skip("kernel oracle: " + why)
	}
	const obj = "../../testdata/bpf/spinlock.bpf.o"
	c := newTestConn(t)
	coll, err := c.LoadCollection(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	kcoll, err := ebpf.LoadCollection(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer kcoll.Close()
	p, kp := coll.Programs["count_locked"], kcoll.Programs["count_locked"]
	for _, n := range []int{14, 60, 64, 130, 200, 60} {
		pkt := make([]byte, n)
		if d := corpusRun(p, kp, pkt, 3); d != "" {
			t.Fatalf("%d-byte packet: %s", n, d)
		}
	}
	for _, name := range []string{"totals", "by_len"} {
		m, km := coll.Maps[name], kcoll.Maps[name]
		for k := uint32(0); k < 4; k++ {
			for _, flags := range []uint64{0, LookupLock} {
				v, kv := make([]byte, 24), make([]byte, 24)
				err := m.LookupWithFlags(u32(k), v, flags)
				kerr := km.LookupWithFlags(k, kv, ebpf.MapLookupFlags(flags))
				if errnoOf(err) != errnoOf(kerr) || !bytes.Equal(v, kv) {
					t.Fatalf("%s[%d] flags %d: bpfd %x %v, kernel %x %v", name, k, flags, v, err, kv, kerr)
				}
				if err == nil && binary.NativeEndian.Uint64(v) == 0 && name == "totals" {
					t.Fatalf("%s[%d]: no packets counted", name, k)
				}
			}
			if name == "totals" {
				break
			}
		}
	}
}

// TestSpinLockMmapVsKernel: an MMAPABLE array whose values hold a lock
// is created, but its values cannot be mapped writable (the kernel
// refuses any mmap of it with ENOTSUPP): a writer could hold the lock
// for ever. bpfd's read-only mapping, which every array has, stays.
func TestSpinLockMmapVsKernel(t *testing.T) {
	if ok, why := kernelAvailable(); !ok {
		t.Skip("kernel oracle: " + why)
	}
	c := newTestConn(t)
	m, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 24, MaxEntries: 4, Flags: FlagMmapable, Key: btfU32, Value: counterValue})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	km, err := kernelLockMap(Array, 4, 24, 4, FlagMmapable, counterValue)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	_, kerr := unix.Mmap(km.FD(), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	mm, err := m.Mmap(&MmapOptions{Writable: true})
	if err == nil {
		mm.Close()
	}
	if errnoOf(err) != errnoOf(kerr) || kerr == nil {
		t.Fatalf("writable mapping: bpfd %v, kernel %v (%d)", err, kerr, int(errnoOf(kerr)))
	}
	ro, err := m.Mmap(nil)
	if err != nil {
		t.Fatalf("read-only mapping: %v", err)
	}
	ro.Close()
}

// TestSpinLockInnerMapVsKernel: a map of maps whose template's values
// hold a lock takes only inner maps with the lock at the same place (the
// kernel's btf_record_equal), and the reverse.
func TestSpinLockInnerMapVsKernel(t *testing.T) {
	if ok, why := kernelAvailable(); !ok {
		t.Skip("kernel oracle: " + why)
	}
	c := newTestConn(t)
	plainT := lockStruct("plain", 24, member("a", btfU64, 0), member("c", btfU64, 8), member("b", btfU64, 16))
	for _, tt := range []struct {
		name        string
		tmpl, inner btf.Type
		want        unix.Errno
	}{
		{"locked template, locked inner", counterValue, counterValue, 0},
		{"locked template, plain inner", counterValue, plainT, unix.EINVAL},
		{"plain template, locked inner", plainT, counterValue, unix.EINVAL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := func(v btf.Type) MapSpec {
				return MapSpec{Type: Array, KeySize: 4, ValueSize: 24, MaxEntries: 1, Key: btfU32, Value: v}
			}
			tmpl, inner := newTestMap(t, c, spec(tt.tmpl)), newTestMap(t, c, spec(tt.inner))
			outer := newTestMap(t, c, MapSpec{Type: ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: tmpl})
			err := outer.Update(u32(0), fdValue(inner), UpdateAny)

			ktmpl, e1 := kernelLockMap(Array, 4, 24, 1, 0, tt.tmpl)
			kinner, e2 := kernelLockMap(Array, 4, 24, 1, 0, tt.inner)
			if e1 != nil || e2 != nil {
				t.Fatal(e1, e2)
			}
			defer ktmpl.Close()
			defer kinner.Close()
			// The outer map by hand, with ktmpl as inner_map_fd
			// (cilium/ebpf would make its own template without BTF).
			var attr [72]byte
			le := binary.NativeEndian
			for i, v := range []uint32{uint32(ArrayOfMaps), 4, 4, 1, 0, uint32(ktmpl.FD())} {
				le.PutUint32(attr[4*i:], v)
			}
			fd, _, errno := unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
			if errno != 0 {
				t.Fatalf("kernel outer map: %v", errno)
			}
			ko, err2 := ebpf.NewMapFromFD(int(fd))
			if err2 != nil {
				t.Fatal(err2)
			}
			defer ko.Close()
			kerr := ko.Update(uint32(0), uint32(kinner.FD()), ebpf.UpdateAny)
			if errnoOf(err) != errnoOf(kerr) || errnoOf(kerr) != tt.want {
				t.Fatalf("storing the inner map: bpfd %v, kernel %v, want errno %d", err, kerr, int(tt.want))
			}
		})
	}
}

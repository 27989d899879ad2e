package maps

import (
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Array is BPF_MAP_TYPE_ARRAY and BPF_MAP_TYPE_PERCPU_ARRAY on flat
// storage: max_entries values (per-CPU: one per CPU slot), each padded to
// 8 bytes, zero-filled at creation, starting on a page boundary
// (BPF_F_MMAPABLE arrays are mapped from there). Keys are native-endian
// uint32 indices, as in the kernel. Each element has a sequence counter
// that syscall-side writers hold while they copy, so mapped readers never
// return a half-written value; program stores go straight to the value,
// as in the kernel. Safe for concurrent use; see the package doc.
type Array struct {
	base
	percpu   bool
	mmapable bool
	view     *mapview.View
}

var _ Map = (*Array)(nil)

// index decodes an array key; callers checked its size.
func index(key []byte) uint32 { return ne.Uint32(key) }

// ValueOffset returns the offset, within Values(), of element i's value
// for CPU slot cpu (cpu is ignored unless the array is per-CPU).
func (a *Array) ValueOffset(i uint32, cpu int) uint64 {
	o := uint64(i) * a.l.ElemSize
	if a.percpu {
		o += uint64(cpu) * a.l.ValStride
	}
	return o
}

func (a *Array) slot(i uint32, cpu int) []byte {
	o := a.l.ValuesOff + a.ValueOffset(i, cpu)
	n := o + uint64(a.spec.ValueSize)
	return a.mem[o:n:n]
}

// elem returns element i's whole storage (every CPU's value, padded).
func (a *Array) elem(i uint32) []byte {
	o := a.l.ValuesOff + uint64(i)*a.l.ElemSize
	n := o + a.l.ElemSize
	return a.mem[o:n:n]
}

func (a *Array) seq(i uint32) *uint32 { return a.u32(a.l.SeqOff + 4*uint64(i)) }

// lockElem and unlockElem hold element i's sequence counter, except in a
// BPF_F_MMAPABLE array: clients may map its region writable, so the
// daemon never waits on a word they can write (their writes and readers'
// reads race as in the kernel).
func (a *Array) lockElem(i uint32) {
	if !a.mmapable {
		seqLock(a.seq(i))
	}
}

func (a *Array) unlockElem(i uint32) {
	if !a.mmapable {
		seqUnlock(a.seq(i))
	}
}

func (a *Array) initRegion() {}

// Lookup implements Map: ErrKeyNotExist for an index out of range.
func (a *Array) Lookup(key, value []byte) error { return a.lookup(key, value, 0) }

// lookup is Lookup with flags 0 or UpdateLock (BPF_F_LOCK: the value is
// copied under its spin lock, never through the view).
func (a *Array) lookup(key, value []byte, flags uint64) error {
	if err := a.canRead(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != a.spec.SyscallValueSize() {
		return ErrValueSize
	}
	s, err := a.enter()
	if err != nil {
		return err
	}
	defer a.leave(s)
	i := index(key)
	if i >= a.spec.MaxEntries {
		return ErrKeyNotExist
	}
	if flags == 0 && !a.mmapable {
		if a.view.Lookup(key, value) == nil {
			return nil
		}
	}
	a.readFlags(i, value, flags)
	return nil
}

// read copies element i in the syscall layout.
func (a *Array) read(i uint32, value []byte) {
	if a.percpu {
		copy(value, a.elem(i))
	} else {
		copy(value, a.slot(i, 0))
		clearLock(value, a.spec.SpinLock)
	}
}

// ValueRef implements Map.
func (a *Array) ValueRef(key []byte) []byte {
	s, err := a.enter()
	if err != nil {
		return nil
	}
	defer a.leave(s)
	return a.ProgLookup(0, key)
}

// ProgLookup implements Map.
func (a *Array) ProgLookup(cpu int, key []byte) []byte {
	if len(key) != 4 {
		return nil
	}
	i := index(key)
	if i >= a.spec.MaxEntries {
		return nil
	}
	return a.slot(i, cpu)
}

// Update implements Map: every element exists, so UpdateNoExist gives
// ErrKeyExist and an index out of range ErrIndexRange (E2BIG).
func (a *Array) Update(key, value []byte, flags uint64) error {
	if err := a.canWrite(); err != nil {
		return err
	}
	if err := CheckUpdateLock(a, flags); err != nil {
		return err // map_update_elem checks BPF_F_LOCK before the index
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != a.spec.SyscallValueSize() {
		return ErrValueSize
	}
	s, err := a.enter()
	if err != nil {
		return err
	}
	defer a.leave(s)
	return a.update(s, key, value, flags, true)
}

// ProgUpdate implements Map.
func (a *Array) ProgUpdate(key, value []byte, flags uint64) error {
	return a.withSlot(func(cpu int) error { return a.ProgUpdateOn(cpu, key, value, flags) })
}

// ProgUpdateOn implements Map.
func (a *Array) ProgUpdateOn(cpu int, key, value []byte, flags uint64) error {
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != int(a.spec.ValueSize) {
		return ErrValueSize
	}
	return a.update(cpu, key, value, flags, false)
}

// update follows map_update_elem's and array_map_update_elem's order of
// checks (BPF_F_LOCK is refused before the index).
func (a *Array) update(cpu int, key, value []byte, flags uint64, allCPUs bool) error {
	if flags&^UpdateLock > UpdateExist {
		return ErrInvalidFlags
	}
	i := index(key)
	if i >= a.spec.MaxEntries {
		return ErrIndexRange
	}
	if flags&UpdateNoExist != 0 {
		return ErrKeyExist
	}
	if flags&UpdateLock != 0 && a.spec.SpinLock == 0 {
		return ErrInvalidFlags
	}
	a.lockElem(i)
	switch {
	case a.percpu && allCPUs:
		// With the padding, as the kernel's copy_map_value_long.
		copy(a.elem(i), value)
	case flags&UpdateLock != 0:
		copyLocked(a.slot(i, cpu), value, a.spec.SpinLock, true)
	default:
		copyAroundLock(a.slot(i, cpu), value, a.spec.SpinLock)
	}
	a.unlockElem(i)
	return nil
}

// Delete implements Map: arrays cannot delete (ErrInvalid, EINVAL), after
// the permission check.
func (a *Array) Delete(key []byte) error {
	if err := a.canWrite(); err != nil {
		return err
	}
	return a.ProgDeleteOn(0, key)
}

// ProgDelete implements Map: always ErrInvalid (or ErrKeySize).
func (a *Array) ProgDelete(key []byte) error { return a.ProgDeleteOn(0, key) }

// ProgDeleteOn implements Map: always ErrInvalid (or ErrKeySize).
func (a *Array) ProgDeleteOn(_ int, key []byte) error {
	if len(key) != 4 {
		return ErrKeySize
	}
	return ErrInvalid
}

// LookupAndDelete implements Map: ErrNotSupported after the permission
// checks, as the kernel.
func (a *Array) LookupAndDelete(key, value []byte) error {
	if err := a.canRead(); err != nil {
		return err
	}
	if err := a.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// arrayNext is array_map_get_next_key: no key or an index out of range gives
// 0, the last index ENOENT.
func arrayNext(max uint32, key []byte) (uint32, error) {
	if key == nil {
		return 0, nil
	}
	i := index(key)
	if i >= max {
		return 0, nil
	}
	if i == max-1 {
		return 0, ErrKeyNotExist
	}
	return i + 1, nil
}

// NextKey implements Map.
func (a *Array) NextKey(key, next []byte) error {
	if err := a.canRead(); err != nil {
		return err
	}
	if key != nil && len(key) != 4 || len(next) != 4 {
		return ErrKeySize
	}
	n, err := arrayNext(a.spec.MaxEntries, key)
	if err != nil {
		return err
	}
	ne.PutUint32(next, n)
	return nil
}

// LookupBatch implements Map, following the kernel's generic_map_lookup_batch:
// the cursor is the index of the last element returned.
func (a *Array) LookupBatch(bt *Batch) error {
	if err := a.canRead(); err != nil {
		return err
	}
	if err := a.checkBatch(bt, true, true); err != nil {
		return err
	}
	max := bt.Count
	if max == 0 {
		return nil
	}
	bt.Count = 0
	s, err := a.enter()
	if err != nil {
		return err
	}
	defer a.leave(s)
	has := bt.HasInBatch
	prev := uint32(0)
	if has {
		prev = a.spec.MaxEntries // out of range: restart at 0, as the kernel
		if bt.InBatch < uint64(a.spec.MaxEntries) {
			prev = uint32(bt.InBatch)
		}
	}
	var cp uint32
	for cp < max {
		var i uint32
		if !has {
			i = 0
		} else if prev >= a.spec.MaxEntries {
			i = 0
		} else if prev == a.spec.MaxEntries-1 {
			err = ErrBatchEnd
			break
		} else {
			i = prev + 1
		}
		ne.PutUint32(a.keyAt(bt, cp), i)
		a.readFlags(i, a.valueAt(bt, cp), bt.ElemFlags)
		cp++
		prev, has = i, true
	}
	bt.Count = cp
	if cp > 0 {
		bt.OutBatch = uint64(prev)
	}
	return err
}

// LookupAndDeleteBatch implements Map: ErrNotSupported after the permission
// checks.
func (a *Array) LookupAndDeleteBatch(bt *Batch) error {
	if err := a.canRead(); err != nil {
		return err
	}
	if err := a.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// DeleteBatch implements Map: ErrNotSupported after the permission check.
func (a *Array) DeleteBatch(bt *Batch) error {
	if err := a.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// UpdateBatch implements Map (generic_map_update_batch).
func (a *Array) UpdateBatch(bt *Batch) error {
	if err := a.canWrite(); err != nil {
		return err
	}
	if err := a.checkBatch(bt, true, true); err != nil {
		return err
	}
	max := bt.Count
	if max == 0 {
		return nil
	}
	bt.Count = 0
	s, err := a.enter()
	if err != nil {
		return err
	}
	defer a.leave(s)
	for i := uint32(0); i < max; i++ {
		if err := a.update(s, a.keyAt(bt, i), a.valueAt(bt, i), bt.ElemFlags, true); err != nil {
			return err
		}
		bt.Count = i + 1
	}
	return nil
}

// Values returns the array's whole value storage and the distance between
// consecutive elements (the value size rounded up to 8, as the kernel's
// elem_size; times the CPU count for a per-CPU array, see ValueOffset),
// so the program layer can expose it to programs as one region. The slice
// aliases the map's memory and is valid until Close; nil after Close.
// Program side: no permission checks.
func (a *Array) Values() (mem []byte, stride uint64) {
	if a.closed.Load() {
		return nil, a.l.ElemSize
	}
	n := a.l.ValuesOff + a.l.ElemSize*uint64(a.spec.MaxEntries)
	return a.mem[a.l.ValuesOff:n:n], a.l.ElemSize
}

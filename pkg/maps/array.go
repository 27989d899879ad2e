package maps

// Array is BPF_MAP_TYPE_ARRAY on flat storage: max_entries values, each
// padded to 8 bytes, zero-filled at creation. Keys are native-endian uint32
// indices, as in the kernel. Safe for
// concurrent use (one RWMutex; see the package doc).
type Array struct {
	base
}

var _ Map = (*Array)(nil)

// index decodes an array key; callers checked its size.
func index(key []byte) uint32 { return ne.Uint32(key) }

func (a *Array) slot(i uint32) []byte {
	o := uint64(i) * a.l.entSize
	n := o + uint64(a.spec.ValueSize)
	return a.mem[o:n:n]
}

// Lookup implements Map: ErrKeyNotExist for an index out of range.
func (a *Array) Lookup(key, value []byte) error {
	if err := a.canRead(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != int(a.spec.ValueSize) {
		return ErrValueSize
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.mem == nil {
		return ErrClosed
	}
	i := index(key)
	if i >= a.spec.MaxEntries {
		return ErrKeyNotExist
	}
	copy(value, a.slot(i))
	return nil
}

// ValueRef implements Map.
func (a *Array) ValueRef(key []byte) []byte {
	if len(key) != 4 {
		return nil
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.mem == nil {
		return nil
	}
	i := index(key)
	if i >= a.spec.MaxEntries {
		return nil
	}
	return a.slot(i)
}

// Update implements Map: every element exists, so UpdateNoExist gives
// ErrKeyExist and an index out of range ErrIndexRange (E2BIG).
func (a *Array) Update(key, value []byte, flags uint64) error {
	if err := a.canWrite(); err != nil {
		return err
	}
	return a.ProgUpdate(key, value, flags)
}

// ProgUpdate implements Map.
func (a *Array) ProgUpdate(key, value []byte, flags uint64) error {
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != int(a.spec.ValueSize) {
		return ErrValueSize
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mem == nil {
		return ErrClosed
	}
	return a.update(key, value, flags)
}

// update follows map_update_elem's and array_map_update_elem's order of
// checks (BPF_F_LOCK is refused before the index); caller holds mu.
func (a *Array) update(key, value []byte, flags uint64) error {
	if flags&UpdateLock != 0 || flags > UpdateExist {
		return ErrInvalidFlags
	}
	i := index(key)
	if i >= a.spec.MaxEntries {
		return ErrIndexRange
	}
	if flags&UpdateNoExist != 0 {
		return ErrKeyExist
	}
	copy(a.slot(i), value)
	return nil
}

// Delete implements Map: arrays cannot delete (ErrInvalid, EINVAL), after
// the permission check.
func (a *Array) Delete(key []byte) error {
	if err := a.canWrite(); err != nil {
		return err
	}
	return a.ProgDelete(key)
}

// ProgDelete implements Map: always ErrInvalid (or ErrKeySize).
func (a *Array) ProgDelete(key []byte) error {
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
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.mem == nil {
		return ErrClosed
	}
	has := bt.HasInBatch
	prev := uint32(0)
	if has {
		prev = a.spec.MaxEntries // out of range: restart at 0, as the kernel
		if bt.InBatch < uint64(a.spec.MaxEntries) {
			prev = uint32(bt.InBatch)
		}
	}
	var cp uint32
	var err error
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
		copy(a.valueAt(bt, cp), a.slot(i))
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
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mem == nil {
		return ErrClosed
	}
	for i := uint32(0); i < max; i++ {
		if err := a.update(a.keyAt(bt, i), a.valueAt(bt, i), UpdateAny); err != nil {
			return err
		}
		bt.Count = i + 1
	}
	return nil
}

// Values returns the array's whole value storage and the distance between
// consecutive values (the value size rounded up to 8, as the kernel's
// elem_size), so the program layer can expose it to programs as one region:
// value i starts at i*stride. The slice aliases the map's memory and is
// valid until Close; nil after Close. Program side: no permission checks.
func (a *Array) Values() (mem []byte, stride uint64) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.mem == nil {
		return nil, a.l.entSize
	}
	n := a.l.entSize * uint64(a.spec.MaxEntries)
	return a.mem[:n:n], a.l.entSize
}

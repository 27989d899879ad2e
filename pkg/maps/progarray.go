package maps

import "sync/atomic"

// ProgArray is the storage of the kernel's fd arrays — BPF_MAP_TYPE_PROG_ARRAY,
// PERF_EVENT_ARRAY and ARRAY_OF_MAPS: max_entries uint32 object ids, 0
// meaning an empty slot, with the kernel's fd-array rules. Key size and
// value size are 4. The layer above owns the meaning of ids: on the
// syscall path it translates the descriptor (or handle) a client passes as
// the value into the object's id before Update, keeps a reference to
// every object it stores, and drops references on Delete, replacement and
// Close; tail calls, map-in-map lookups and perf output read slots with
// Prog. Lookup returns the id, as the kernel's syscall lookup does (a perf
// event array answers ErrNotSupported, as the kernel). Safe for
// concurrent use.
//
// Recommendation for the layer above: keep an id→object table (ids are
// never reused) and resolve Prog(i) through it at use time; a slot holding
// the id of an object that is gone behaves as empty.
type ProgArray struct {
	base
}

var _ Map = (*ProgArray)(nil)

func (p *ProgArray) initRegion() {}

func (p *ProgArray) word(i uint32) *uint32 {
	return p.u32(p.l.ValuesOff + uint64(i)*p.l.ElemSize)
}

func (p *ProgArray) seq(i uint32) *uint32 { return p.u32(p.l.SeqOff + 4*uint64(i)) }

// set stores id in slot i under the slot's sequence counter (so mapped
// readers see each id whole) and returns the id it replaced.
func (p *ProgArray) set(i, id uint32) uint32 {
	seqLock(p.seq(i))
	old := atomic.SwapUint32(p.word(i), id)
	seqUnlock(p.seq(i))
	return old
}

// Prog returns the id in slot i, or 0 if i is out of range, the slot is
// empty or the map is closed. Program side (tail calls, inner map
// lookups, perf output): no permission checks, no slot needed.
func (p *ProgArray) Prog(i uint32) uint32 {
	if i >= p.spec.MaxEntries || p.closed.Load() {
		return 0
	}
	return atomic.LoadUint32(p.word(i))
}

// Lookup implements Map: copies the id; ErrKeyNotExist for an empty slot or
// an index out of range; ErrNotSupported for a perf event array.
func (p *ProgArray) Lookup(key, value []byte) error {
	if err := p.canRead(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != 4 {
		return ErrValueSize
	}
	if p.spec.Type == TypePerfEventArray {
		return ErrNotSupported
	}
	s, err := p.enter()
	if err != nil {
		return err
	}
	defer p.leave(s)
	i := index(key)
	if i >= p.spec.MaxEntries {
		return ErrKeyNotExist
	}
	id := atomic.LoadUint32(p.word(i))
	if id == 0 {
		return ErrKeyNotExist
	}
	ne.PutUint32(value, id)
	return nil
}

// ValueRef implements Map: always nil, slots are not data.
func (p *ProgArray) ValueRef(key []byte) []byte { return nil }

// ProgLookup implements Map: always nil (the program layer resolves
// slots itself with Prog).
func (p *ProgArray) ProgLookup(int, []byte) []byte { return nil }

// Update implements Map: value is an object id (non-zero, ErrInvalid
// otherwise); flags other than UpdateAny give ErrInvalidFlags, an index out
// of range ErrIndexRange (E2BIG), as bpf_fd_array_map_update_elem.
func (p *ProgArray) Update(key, value []byte, flags uint64) error {
	_, err := p.Swap(key, value, flags)
	return err
}

// Swap is Update returning the id the slot held before (0 if empty), so
// the layer above can drop its reference to it.
func (p *ProgArray) Swap(key, value []byte, flags uint64) (uint32, error) {
	if err := p.canWrite(); err != nil {
		return 0, err
	}
	return p.swap(key, value, flags)
}

func (p *ProgArray) swap(key, value []byte, flags uint64) (uint32, error) {
	if len(key) != 4 {
		return 0, ErrKeySize
	}
	if len(value) != 4 {
		return 0, ErrValueSize
	}
	if flags != UpdateAny {
		return 0, ErrInvalidFlags
	}
	s, err := p.enter()
	if err != nil {
		return 0, err
	}
	defer p.leave(s)
	i := index(key)
	if i >= p.spec.MaxEntries {
		return 0, ErrIndexRange
	}
	if ne.Uint32(value) == 0 {
		return 0, ErrInvalid
	}
	return p.set(i, ne.Uint32(value)), nil
}

// ProgUpdate implements Map. (The kernel's verifier refuses program-side
// updates of fd arrays; the program layer does too.)
func (p *ProgArray) ProgUpdate(key, value []byte, flags uint64) error {
	_, err := p.swap(key, value, flags)
	return err
}

// ProgUpdateOn implements Map; see ProgUpdate.
func (p *ProgArray) ProgUpdateOn(_ int, key, value []byte, flags uint64) error {
	return p.ProgUpdate(key, value, flags)
}

// Delete implements Map: ErrIndexRange (E2BIG) out of range, ErrKeyNotExist
// for an empty slot.
func (p *ProgArray) Delete(key []byte) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	_, err := p.Clear(key)
	return err
}

// Clear is Delete without the permission check, returning the id removed.
func (p *ProgArray) Clear(key []byte) (uint32, error) {
	if len(key) != 4 {
		return 0, ErrKeySize
	}
	s, err := p.enter()
	if err != nil {
		return 0, err
	}
	defer p.leave(s)
	i := index(key)
	if i >= p.spec.MaxEntries {
		return 0, ErrIndexRange
	}
	old := p.set(i, 0)
	if old == 0 {
		return 0, ErrKeyNotExist
	}
	return old, nil
}

// ProgDelete implements Map.
func (p *ProgArray) ProgDelete(key []byte) error {
	_, err := p.Clear(key)
	return err
}

// ProgDeleteOn implements Map.
func (p *ProgArray) ProgDeleteOn(_ int, key []byte) error { return p.ProgDelete(key) }

// NextKey implements Map, with the array rules (empty slots are keys too).
func (p *ProgArray) NextKey(key, next []byte) error {
	if err := p.canRead(); err != nil {
		return err
	}
	if key != nil && len(key) != 4 || len(next) != 4 {
		return ErrKeySize
	}
	n, err := arrayNext(p.spec.MaxEntries, key)
	if err != nil {
		return err
	}
	ne.PutUint32(next, n)
	return nil
}

// LookupAndDelete implements Map: ErrNotSupported after permission checks.
func (p *ProgArray) LookupAndDelete(key, value []byte) error {
	if err := p.canRead(); err != nil {
		return err
	}
	if err := p.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// LookupBatch implements Map: ErrNotSupported, as the kernel's prog array.
func (p *ProgArray) LookupBatch(bt *Batch) error {
	if err := p.canRead(); err != nil {
		return err
	}
	return ErrNotSupported
}

// LookupAndDeleteBatch implements Map: ErrNotSupported.
func (p *ProgArray) LookupAndDeleteBatch(bt *Batch) error {
	if err := p.canRead(); err != nil {
		return err
	}
	if err := p.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// UpdateBatch implements Map: ErrNotSupported.
func (p *ProgArray) UpdateBatch(bt *Batch) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// DeleteBatch implements Map: ErrNotSupported.
func (p *ProgArray) DeleteBatch(bt *Batch) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// IDs returns the non-zero ids stored, in slot order (for the layer
// above's bookkeeping and for restore).
func (p *ProgArray) IDs() []uint32 {
	var out []uint32
	if p.closed.Load() {
		return nil
	}
	for i := uint32(0); i < p.spec.MaxEntries; i++ {
		if id := atomic.LoadUint32(p.word(i)); id != 0 {
			out = append(out, id)
		}
	}
	return out
}

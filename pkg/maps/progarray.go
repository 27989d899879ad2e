package maps

// ProgArray is BPF_MAP_TYPE_PROG_ARRAY storage: max_entries uint32 program
// ids, 0 meaning an empty slot, with the kernel's fd-array rules. Key size
// and value size are 4. The program layer owns the meaning of ids: on the
// syscall path it translates the descriptor (or handle) a client passes as
// the value into the program's id before Update, keeps a reference to every
// program it stores, and drops references on Delete, replacement and Close;
// tail calls read slots with Prog. Lookup returns the id, as the kernel's
// syscall lookup does. Safe for concurrent use.
//
// Recommendation for the program layer: keep an id→program table (ids are
// never reused) and resolve Prog(i) through it at tail-call time; a slot
// holding the id of a program that is gone behaves as empty.
type ProgArray struct {
	base
}

var _ Map = (*ProgArray)(nil)

func (p *ProgArray) slot(i uint32) []byte {
	o := uint64(i) * p.l.entSize
	return p.mem[o : o+4 : o+4]
}

// Prog returns the program id in slot i, or 0 if i is out of range, the slot
// is empty or the map is closed. Program side (tail calls): no permission
// checks.
func (p *ProgArray) Prog(i uint32) uint32 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.mem == nil || i >= p.spec.MaxEntries {
		return 0
	}
	return ne.Uint32(p.slot(i))
}

// Lookup implements Map: copies the id; ErrKeyNotExist for an empty slot or
// an index out of range.
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
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.mem == nil {
		return ErrClosed
	}
	i := index(key)
	if i >= p.spec.MaxEntries {
		return ErrKeyNotExist
	}
	id := p.slot(i)
	if ne.Uint32(id) == 0 {
		return ErrKeyNotExist
	}
	copy(value, id)
	return nil
}

// ValueRef implements Map: always nil, slots are not data.
func (p *ProgArray) ValueRef(key []byte) []byte { return nil }

// Update implements Map: value is a program id (non-zero, ErrInvalid
// otherwise); flags other than UpdateAny give ErrInvalidFlags, an index out
// of range ErrIndexRange (E2BIG), as bpf_fd_array_map_update_elem.
func (p *ProgArray) Update(key, value []byte, flags uint64) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	return p.ProgUpdate(key, value, flags)
}

// ProgUpdate implements Map. (The kernel's verifier refuses program-side
// updates of prog arrays; the program layer should too.)
func (p *ProgArray) ProgUpdate(key, value []byte, flags uint64) error {
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != 4 {
		return ErrValueSize
	}
	if flags != UpdateAny {
		return ErrInvalidFlags
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mem == nil {
		return ErrClosed
	}
	i := index(key)
	if i >= p.spec.MaxEntries {
		return ErrIndexRange
	}
	if ne.Uint32(value) == 0 {
		return ErrInvalid
	}
	copy(p.slot(i), value)
	return nil
}

// Delete implements Map: ErrIndexRange (E2BIG) out of range, ErrKeyNotExist
// for an empty slot.
func (p *ProgArray) Delete(key []byte) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	return p.ProgDelete(key)
}

// ProgDelete implements Map.
func (p *ProgArray) ProgDelete(key []byte) error {
	if len(key) != 4 {
		return ErrKeySize
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mem == nil {
		return ErrClosed
	}
	i := index(key)
	if i >= p.spec.MaxEntries {
		return ErrIndexRange
	}
	s := p.slot(i)
	if ne.Uint32(s) == 0 {
		return ErrKeyNotExist
	}
	ne.PutUint32(s, 0)
	return nil
}

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

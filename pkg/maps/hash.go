package maps

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
)

var ne = binary.NativeEndian

// Hash is BPF_MAP_TYPE_HASH on flat storage: chained buckets with 32-bit
// index links. Safe for concurrent use (one RWMutex; see the package doc).
type Hash struct {
	base
	seed maphash.Seed // random per map, like the kernel's hashrnd
	// count, free and bump are guarded by mu.
	count uint32 // live entries
	free  uint32 // head of the free list (entry index + 1), 0 = none
	bump  uint32 // entries ever handed out; entries >= bump are untouched
}

var _ Map = (*Hash)(nil)

// Entry e (1-based) accessors; callers hold mu and have checked mem != nil.

func (h *Hash) ent(e uint32) uint64 { return h.l.entOff + uint64(e-1)*h.l.entSize }

func (h *Hash) head(b uint32) uint32 { return ne.Uint32(h.mem[uint64(b)*4:]) }

func (h *Hash) setHead(b, e uint32) { ne.PutUint32(h.mem[uint64(b)*4:], e) }

func (h *Hash) next(e uint32) uint32 { return ne.Uint32(h.mem[h.ent(e):]) }

func (h *Hash) setNext(e, n uint32) { ne.PutUint32(h.mem[h.ent(e):], n) }

func (h *Hash) keyOf(e uint32) []byte {
	o := h.ent(e) + h.l.keyOff
	return h.mem[o : o+uint64(h.spec.KeySize)]
}

func (h *Hash) valOf(e uint32) []byte {
	o := h.ent(e) + h.l.valOff
	n := o + uint64(h.spec.ValueSize)
	return h.mem[o:n:n]
}

func (h *Hash) hash(key []byte) uint32 {
	v := maphash.Bytes(h.seed, key)
	return uint32(v) ^ uint32(v>>32)
}

// find returns key's bucket, its entry (0 if absent) and the entry before it
// in the chain (0 if it is the head).
func (h *Hash) find(key []byte) (b, e, prev uint32) {
	hv := h.hash(key)
	b = hv & (h.l.nBuckets - 1)
	for e = h.head(b); e != 0; prev, e = e, h.next(e) {
		if ne.Uint32(h.mem[h.ent(e)+4:]) == hv && bytes.Equal(h.keyOf(e), key) {
			return b, e, prev
		}
	}
	return b, 0, 0
}

// Lookup implements Map.
func (h *Hash) Lookup(key, value []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	if len(value) != int(h.spec.ValueSize) {
		return ErrValueSize
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.mem == nil {
		return ErrClosed
	}
	_, e, _ := h.find(key)
	if e == 0 {
		return ErrKeyNotExist
	}
	copy(value, h.valOf(e))
	return nil
}

// ValueRef implements Map.
func (h *Hash) ValueRef(key []byte) []byte {
	if len(key) != int(h.spec.KeySize) {
		return nil
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.mem == nil {
		return nil
	}
	_, e, _ := h.find(key)
	if e == 0 {
		return nil
	}
	return h.valOf(e)
}

// Update implements Map.
func (h *Hash) Update(key, value []byte, flags uint64) error {
	if err := h.canWrite(); err != nil {
		return err
	}
	return h.ProgUpdate(key, value, flags)
}

// ProgUpdate implements Map.
func (h *Hash) ProgUpdate(key, value []byte, flags uint64) error {
	if flags&^UpdateLock > UpdateExist || flags&UpdateLock != 0 {
		return ErrInvalidFlags
	}
	if len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	if len(value) != int(h.spec.ValueSize) {
		return ErrValueSize
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mem == nil {
		return ErrClosed
	}
	return h.update(key, value, flags)
}

// update stores key/value; caller holds mu exclusively and checked sizes.
func (h *Hash) update(key, value []byte, flags uint64) error {
	b, e, _ := h.find(key)
	if e != 0 {
		if flags == UpdateNoExist {
			return ErrKeyExist
		}
		copy(h.valOf(e), value)
		return nil
	}
	if flags == UpdateExist {
		return ErrKeyNotExist
	}
	if h.count >= h.spec.MaxEntries {
		return ErrFull
	}
	if h.free != 0 {
		e = h.free
		h.free = h.next(e)
	} else {
		h.bump++
		e = h.bump
	}
	h.count++
	o := h.ent(e)
	ne.PutUint32(h.mem[o:], h.head(b))
	ne.PutUint32(h.mem[o+4:], h.hash(key))
	copy(h.keyOf(e), key)
	copy(h.valOf(e), value)
	h.setHead(b, e)
	return nil
}

// Delete implements Map.
func (h *Hash) Delete(key []byte) error {
	if err := h.canWrite(); err != nil {
		return err
	}
	return h.ProgDelete(key)
}

// ProgDelete implements Map.
func (h *Hash) ProgDelete(key []byte) error {
	if len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mem == nil {
		return ErrClosed
	}
	return h.delete(key, nil)
}

// delete removes key, first copying its value into value if non-nil; caller
// holds mu exclusively.
func (h *Hash) delete(key, value []byte) error {
	b, e, prev := h.find(key)
	if e == 0 {
		return ErrKeyNotExist
	}
	if value != nil {
		copy(value, h.valOf(e))
	}
	h.unlink(b, e, prev)
	return nil
}

func (h *Hash) unlink(b, e, prev uint32) {
	if prev == 0 {
		h.setHead(b, h.next(e))
	} else {
		h.setNext(prev, h.next(e))
	}
	h.setNext(e, h.free)
	h.free = e
	h.count--
}

// LookupAndDelete implements Map.
func (h *Hash) LookupAndDelete(key, value []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if err := h.canWrite(); err != nil {
		return err
	}
	if len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	if len(value) != int(h.spec.ValueSize) {
		return ErrValueSize
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mem == nil {
		return ErrClosed
	}
	return h.delete(key, value)
}

// NextKey implements Map. Iteration order is bucket order, then chain order
// (newest first), as in the kernel's htab_map_get_next_key.
func (h *Hash) NextKey(key, next []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if key != nil && len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	if len(next) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.mem == nil {
		return ErrClosed
	}
	var b uint32
	if key != nil {
		var e uint32
		b, e, _ = h.find(key)
		if e != 0 {
			if n := h.next(e); n != 0 {
				copy(next, h.keyOf(n))
				return nil
			}
			b++
		} else {
			b = 0
		}
	}
	for ; b < h.l.nBuckets; b++ {
		if e := h.head(b); e != 0 {
			copy(next, h.keyOf(e))
			return nil
		}
	}
	return ErrKeyNotExist
}

// LookupBatch implements Map.
func (h *Hash) LookupBatch(bt *Batch) error { return h.lookupBatch(bt, false) }

// LookupAndDeleteBatch implements Map.
func (h *Hash) LookupAndDeleteBatch(bt *Batch) error { return h.lookupBatch(bt, true) }

// lookupBatch follows the kernel's __htab_map_lookup_and_delete_batch.
func (h *Hash) lookupBatch(bt *Batch, del bool) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if del {
		if err := h.canWrite(); err != nil {
			return err
		}
	}
	if err := h.checkBatch(bt, true, true); err != nil {
		return err
	}
	max := bt.Count
	if max == 0 {
		return nil
	}
	bt.Count = 0
	var cur uint64
	if bt.HasInBatch {
		cur = bt.InBatch
	}
	if cur >= uint64(h.l.nBuckets) {
		return ErrBatchEnd
	}
	if del {
		h.mu.Lock()
		defer h.mu.Unlock()
	} else {
		h.mu.RLock()
		defer h.mu.RUnlock()
	}
	if h.mem == nil {
		return ErrClosed
	}
	b := uint32(cur)
	var total uint32
	var ret error
	for {
		var n uint32
		for e := h.head(b); e != 0; e = h.next(e) {
			n++
		}
		if n > max-total {
			if total == 0 {
				ret = ErrNoSpace
			}
			break
		}
		for e := h.head(b); e != 0; e = h.next(e) {
			copy(h.keyAt(bt, total), h.keyOf(e))
			copy(h.valueAt(bt, total), h.valOf(e))
			total++
		}
		if del {
			for e := h.head(b); e != 0; {
				n := h.next(e)
				h.unlink(b, e, 0)
				e = n
			}
		}
		b++
		if b >= h.l.nBuckets {
			ret = ErrBatchEnd
			break
		}
	}
	bt.OutBatch = uint64(b)
	bt.Count = total
	return ret
}

// UpdateBatch implements Map.
func (h *Hash) UpdateBatch(bt *Batch) error {
	return h.writeBatch(bt, true, func(i uint32) error {
		return h.update(h.keyAt(bt, i), h.valueAt(bt, i), UpdateAny)
	})
}

// DeleteBatch implements Map.
func (h *Hash) DeleteBatch(bt *Batch) error {
	return h.writeBatch(bt, false, func(i uint32) error {
		return h.delete(h.keyAt(bt, i), nil)
	})
}

// writeBatch applies op to elements 0..bt.Count-1 under the write lock,
// stopping at the first failure with bt.Count = elements done, as the
// kernel's generic_map_update_batch and generic_map_delete_batch.
func (h *Hash) writeBatch(bt *Batch, values bool, op func(i uint32) error) error {
	if err := h.canWrite(); err != nil {
		return err
	}
	if err := h.checkBatch(bt, true, values); err != nil {
		return err
	}
	max := bt.Count
	if max == 0 {
		return nil
	}
	bt.Count = 0
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mem == nil {
		return ErrClosed
	}
	for i := uint32(0); i < max; i++ {
		if err := op(i); err != nil {
			return err
		}
		bt.Count = i + 1
	}
	return nil
}

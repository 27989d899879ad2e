package maps

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"sync/atomic"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

var ne = binary.NativeEndian

// Per-slot state of the hash family (mapview.Layout.SlotOff, one
// mapview.SlotStride line per CPU slot).
const (
	slotFreeLock = 0 // u32: 1 while someone pops or pushes this slot's free list
	slotFreeHead = 4 // u32: first free entry (1-based), linked through the entries' next words
	slotExtra    = 8 // u32: this slot's spare entry for replacing updates (plain hash)
)

// Hash is BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_PERCPU_HASH on flat storage:
// chained buckets with 32-bit index links, a sequence counter per bucket
// that writers hold (odd) while they change the chain, per-CPU-slot free
// lists, and, for the plain hash, one spare entry per slot so that an
// update of an existing key writes a complete new entry and swaps it in
// with one store, as the kernel's preallocated hash does (a per-CPU hash
// updates in place, as the kernel's). Lookups never lock (mapview's
// protocol). Safe for concurrent use; see the package doc.
type Hash struct {
	base
	seed    uint64
	percpu  bool
	inPlace bool // update existing values in place (per-CPU hash, hash of maps)
	lru     *lru // LRU hash maps; nil otherwise
	view    *mapview.View
}

var _ Map = (*Hash)(nil)

func (h *Hash) load(off uint64) uint32     { return atomic.LoadUint32(h.u32(off)) }
func (h *Hash) store(off uint64, v uint32) { atomic.StoreUint32(h.u32(off), v) }

// ent returns the offset of entry e (1-based).
func (h *Hash) ent(e uint32) uint64 { return h.l.EntOff + uint64(e-1)*h.l.EntSize }

func (h *Hash) bucketOf(hv uint32) uint64 {
	return h.l.BucketOff + 8*uint64(hv&(h.l.NBuckets-1))
}

func (h *Hash) slotOff(cpu int) uint64 { return h.l.SlotOff + uint64(cpu)*mapview.SlotStride }

// lockBucket takes bucket b's sequence counter (even → odd).
func (h *Hash) lockBucket(b uint64) { seqLock(h.u32(b)) }

func (h *Hash) unlockBucket(b uint64) { seqUnlock(h.u32(b)) }

// lockWord and unlockWord are the per-slot free lists' locks (leaf locks).
func (h *Hash) lockWord(off uint64) { spinLock(h.u32(off)) }

func (h *Hash) unlockWord(off uint64) { spinUnlock(h.u32(off)) }

func (h *Hash) keyOf(e uint32) []byte {
	o := h.ent(e) + h.l.KeyOff
	return h.mem[o : o+uint64(h.spec.KeySize)]
}

// valOf returns entry e's value for CPU cpu (ignored for non-per-CPU
// maps).
func (h *Hash) valOf(e uint32, cpu int) []byte {
	if !h.percpu {
		cpu = 0
	}
	o := h.ent(e) + h.l.ValOff + uint64(cpu)*h.l.ValStride
	n := o + uint64(h.spec.ValueSize)
	return h.mem[o:n:n]
}

// allVals returns entry e's whole value area (every CPU's, padded).
func (h *Hash) allVals(e uint32) []byte {
	o := h.ent(e) + h.l.ValOff
	n := h.ent(e) + h.l.EntSize
	return h.mem[o:n:n]
}

// find walks bucket b for key under the bucket lock: the entry (0 if
// absent) and its predecessor (0 if it is the head).
func (h *Hash) find(b uint64, hv uint32, key []byte) (e, prev uint32) {
	for e = h.load(b + 4); e != 0; prev, e = e, h.load(h.ent(e)) {
		if h.load(h.ent(e)+4) == hv && bytes.Equal(h.keyOf(e), key) {
			return e, prev
		}
	}
	return 0, 0
}

// lookupEntry finds key without locking (mapview's validated walk), or
// under the bucket lock if writers keep interfering. 0 if absent.
func (h *Hash) lookupEntry(key []byte) uint32 {
	off, err := h.view.Find(key)
	switch err {
	case nil:
		return uint32((off-h.l.EntOff)/h.l.EntSize) + 1
	case mapview.ErrNotFound:
		return 0
	}
	hv := mapview.Hash(h.seed, key)
	b := h.bucketOf(hv)
	h.lockBucket(b)
	e, _ := h.find(b, hv, key)
	h.unlockBucket(b)
	return e
}

// initRegion gives each slot its spare entry, or builds the LRU lists.
func (h *Hash) initRegion() {
	if h.lru != nil {
		h.lru.init()
		return
	}
	if h.inPlace {
		return
	}
	for c := 0; c < h.l.NCPU; c++ {
		h.store(h.slotOff(c)+slotExtra, h.spec.MaxEntries+1+uint32(c))
	}
}

func (h *Hash) popFree(cpu int) uint32 {
	st := h.slotOff(cpu)
	if h.load(st+slotFreeHead) == 0 {
		return 0
	}
	h.lockWord(st + slotFreeLock)
	e := h.load(st + slotFreeHead)
	if e != 0 {
		h.store(st+slotFreeHead, h.load(h.ent(e)))
	}
	h.unlockWord(st + slotFreeLock)
	return e
}

func (h *Hash) pushFree(cpu int, e uint32) {
	st := h.slotOff(cpu)
	h.lockWord(st + slotFreeLock)
	h.store(h.ent(e), h.load(st+slotFreeHead))
	h.store(st+slotFreeHead, e)
	h.unlockWord(st + slotFreeLock)
}

// alloc takes a free entry: the slot's own free list, then a never-used
// one, then another slot's free list (the kernel's pcpu_freelist_pop). 0
// when the map is full.
func (h *Hash) alloc(cpu int) uint32 {
	if e := h.popFree(cpu); e != 0 {
		return e
	}
	for {
		n := h.load(mapview.OffBump)
		if n >= h.spec.MaxEntries {
			break
		}
		if atomic.CompareAndSwapUint32(h.u32(mapview.OffBump), n, n+1) {
			return n + 1
		}
	}
	for i := 1; i < h.l.NCPU; i++ {
		if e := h.popFree((cpu + i) % h.l.NCPU); e != 0 {
			return e
		}
	}
	return 0
}

// fill writes key, hash and value into entry e (not yet published).
// allCPUs: value holds every CPU's value (syscall side of a per-CPU
// map); otherwise it is cpu's value and, for a per-CPU map, the other
// CPUs' values are zeroed.
func (h *Hash) fill(e uint32, hv uint32, key, value []byte, cpu int, allCPUs bool) {
	h.store(h.ent(e)+4, hv)
	copy(h.keyOf(e), key)
	h.writeValue(e, value, cpu, allCPUs, true)
	if h.spec.SpinLock != 0 {
		clearLock(h.valOf(e, 0), h.spec.SpinLock) // a fresh value's lock is free
	}
}

// writeValue stores value into entry e: see fill; fresh zeroes the other
// CPUs' values of a per-CPU map when only cpu's is given.
func (h *Hash) writeValue(e uint32, value []byte, cpu int, allCPUs, fresh bool) {
	if !h.percpu {
		copy(h.valOf(e, 0), value)
		return
	}
	if allCPUs {
		// The syscall side copies each value with its padding, as the
		// kernel's copy_map_value_long.
		copy(h.allVals(e), value)
		return
	}
	if fresh {
		for c := 0; c < h.l.NCPU; c++ {
			if c != cpu {
				clear(h.valOf(e, c))
			}
		}
	}
	copy(h.valOf(e, cpu), value)
}

// readValue copies entry e's value as the syscall side sees it.
func (h *Hash) readValue(e uint32, value []byte) {
	if h.percpu {
		copy(value, h.allVals(e))
		return
	}
	copy(value, h.valOf(e, 0))
	clearLock(value, h.spec.SpinLock)
}

func checkUpdateFlags(flags uint64) error {
	if flags&^UpdateLock > UpdateExist {
		return ErrInvalidFlags
	}
	return nil
}

// update stores key/value on behalf of CPU slot cpu (see fill for
// allCPUs); the caller checked flags and sizes. With UpdateLock (a map
// with a spin lock, see updateFlags) an existing key's value is rewritten
// in place under its lock, all under the bucket.
func (h *Hash) update(cpu int, key, value []byte, flags uint64, allCPUs bool) error {
	if h.lru != nil {
		return h.lruUpdate(cpu, key, value, flags, allCPUs)
	}
	lock := flags&UpdateLock != 0
	flags &^= UpdateLock
	hv := mapview.Hash(h.seed, key)
	b := h.bucketOf(hv)
	h.lockBucket(b)
	e, prev := h.find(b, hv, key)
	switch {
	case e != 0 && flags == UpdateNoExist:
		h.unlockBucket(b)
		return ErrKeyExist
	case e == 0 && flags == UpdateExist:
		h.unlockBucket(b)
		return ErrKeyNotExist
	case e != 0 && lock:
		copyLocked(h.valOf(e, 0), value, h.spec.SpinLock, true)
		h.unlockBucket(b)
		return nil
	case e != 0 && h.inPlace:
		h.writeValue(e, value, cpu, allCPUs, false)
		h.unlockBucket(b)
		return nil
	case e != 0:
		// Replace: a complete new entry goes in at the head, then the old
		// one comes out and becomes this slot's spare.
		st := h.slotOff(cpu) + slotExtra
		n := h.load(st)
		h.fill(n, hv, key, value, cpu, allCPUs)
		h.store(h.ent(n), h.load(b+4))
		h.store(b+4, n)
		if prev == 0 {
			prev = n
		}
		h.store(h.ent(prev), h.load(h.ent(e)))
		h.store(st, e)
		h.unlockBucket(b)
		return nil
	}
	n := h.alloc(cpu)
	if n == 0 {
		h.unlockBucket(b)
		return ErrFull
	}
	h.fill(n, hv, key, value, cpu, allCPUs)
	h.store(h.ent(n), h.load(b+4))
	h.store(b+4, n)
	h.unlockBucket(b)
	return nil
}

// unlink removes entry e (predecessor prev, 0 for the head) from bucket
// b; the caller holds b.
func (h *Hash) unlink(b uint64, e, prev uint32) {
	next := h.load(h.ent(e))
	if prev == 0 {
		h.store(b+4, next)
	} else {
		h.store(h.ent(prev), next)
	}
}

// remove deletes key on behalf of slot cpu, first copying its value
// (syscall layout) into value if non-nil.
func (h *Hash) remove(cpu int, key, value []byte) error {
	hv := mapview.Hash(h.seed, key)
	b := h.bucketOf(hv)
	h.lockBucket(b)
	e, prev := h.find(b, hv, key)
	if e == 0 {
		h.unlockBucket(b)
		return ErrKeyNotExist
	}
	if value != nil {
		h.readValue(e, value)
	}
	h.unlink(b, e, prev)
	h.unlockBucket(b)
	h.free(cpu, e)
	return nil
}

// free returns unlinked entry e to the LRU or to slot cpu's free list.
func (h *Hash) free(cpu int, e uint32) {
	if h.lru != nil {
		h.lru.push(e)
		return
	}
	h.pushFree(cpu, e)
}

// lruUpdate is htab_lru_map_update_elem and
// __htab_lru_percpu_map_update_elem: the new element's node comes from
// the LRU before the bucket is locked (which may evict another element),
// even when the flags then refuse the update, as in the kernel.
func (h *Hash) lruUpdate(cpu int, key, value []byte, flags uint64, allCPUs bool) error {
	if flags > UpdateExist {
		return ErrInvalidFlags
	}
	hv := mapview.Hash(h.seed, key)
	var n uint32
	if !h.percpu || flags != UpdateExist {
		if n = h.lru.pop(cpu, hv); n == 0 {
			return ErrNoMemory
		}
		copy(h.keyOf(n), key)
		if !h.percpu {
			h.writeValue(n, value, cpu, allCPUs, true)
		}
	}
	b := h.bucketOf(hv)
	h.lockBucket(b)
	e, prev := h.find(b, hv, key)
	var err error
	switch {
	case e != 0 && flags == UpdateNoExist:
		err = ErrKeyExist
	case e == 0 && flags == UpdateExist:
		err = ErrKeyNotExist
	case h.percpu && e != 0:
		h.lru.setRef(e)
		h.writeValue(e, value, cpu, allCPUs, false)
	case h.percpu:
		h.writeValue(n, value, cpu, allCPUs, true)
		h.store(h.ent(n), h.load(b+4))
		h.store(b+4, n)
		n = 0
	default:
		h.store(h.ent(n), h.load(b+4))
		h.store(b+4, n)
		if e != 0 {
			h.lru.setRef(n)
			if prev == 0 {
				prev = n
			}
			h.store(h.ent(prev), h.load(h.ent(e)))
		}
	}
	h.unlockBucket(b)
	switch {
	case err != nil || h.percpu:
		if n != 0 {
			h.lru.push(n)
		}
	case e != 0:
		h.lru.push(e)
	}
	return err
}

func (h *Hash) checkKV(key, value []byte, vs int) error {
	if len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	if len(value) != vs {
		return ErrValueSize
	}
	return nil
}

// Lookup implements Map.
func (h *Hash) Lookup(key, value []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if err := h.checkKV(key, value, h.spec.SyscallValueSize()); err != nil {
		return err
	}
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	switch err := h.view.Lookup(key, value); err {
	case nil:
		return nil
	case mapview.ErrNotFound:
		return ErrKeyNotExist
	}
	hv := mapview.Hash(h.seed, key)
	b := h.bucketOf(hv)
	h.lockBucket(b)
	defer h.unlockBucket(b)
	e, _ := h.find(b, hv, key)
	if e == 0 {
		return ErrKeyNotExist
	}
	h.readValue(e, value)
	return nil
}

// ValueRef implements Map.
func (h *Hash) ValueRef(key []byte) []byte {
	s, err := h.enter()
	if err != nil {
		return nil
	}
	defer h.leave(s)
	return h.ProgLookup(0, key)
}

// ProgLookup implements Map (ProgValue, hashlookup.go).
func (h *Hash) ProgLookup(cpu int, key []byte) []byte { return h.ProgValue(cpu, key) }

// ProgFind is the program side's allocation-free lookup for the program
// layer's fast path: the offset of key's value for CPU slot cpu within
// Entries(), or false if absent.
func (h *Hash) ProgFind(cpu int, key []byte) (uint64, bool) {
	e := h.lookupEntry(key)
	if e == 0 {
		return 0, false
	}
	if h.lru != nil {
		h.lru.setRef(e)
	}
	if !h.percpu {
		cpu = 0
	}
	return h.ent(e) + h.l.ValOff + uint64(cpu)*h.l.ValStride - h.l.EntOff, true
}

// Entries returns the map's entry area, which ProgFind offsets index:
// program-side value pointers may point into it. It aliases storage and
// is valid until Close.
func (h *Hash) Entries() []byte {
	n := h.l.EntOff + uint64(h.l.NEnts)*h.l.EntSize
	return h.mem[h.l.EntOff:n:n]
}

// Update implements Map.
func (h *Hash) Update(key, value []byte, flags uint64) error {
	if err := h.canWrite(); err != nil {
		return err
	}
	if err := checkUpdateFlags(flags); err != nil {
		return err
	}
	if err := h.checkKV(key, value, h.spec.SyscallValueSize()); err != nil {
		return err
	}
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	return h.updateFlags(s, key, value, flags, true)
}

// ProgUpdate implements Map.
func (h *Hash) ProgUpdate(key, value []byte, flags uint64) error {
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	return h.ProgUpdateOn(s, key, value, flags)
}

// ProgUpdateOn implements Map.
func (h *Hash) ProgUpdateOn(cpu int, key, value []byte, flags uint64) error {
	if err := checkUpdateFlags(flags); err != nil {
		return err
	}
	if err := h.checkKV(key, value, int(h.spec.ValueSize)); err != nil {
		return err
	}
	return h.updateFlags(cpu, key, value, flags, false)
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
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	return h.ProgDeleteOn(s, key)
}

// ProgDeleteOn implements Map.
func (h *Hash) ProgDeleteOn(cpu int, key []byte) error {
	if len(key) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	return h.remove(cpu, key, nil)
}

// LookupAndDelete implements Map.
func (h *Hash) LookupAndDelete(key, value []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if err := h.canWrite(); err != nil {
		return err
	}
	if err := h.checkKV(key, value, h.spec.SyscallValueSize()); err != nil {
		return err
	}
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	return h.remove(s, key, value)
}

// NextKey implements Map. Iteration order is bucket order, then chain order
// (newest first), as in the kernel's htab_map_get_next_key.
func (h *Hash) NextKey(key, next []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if key != nil && len(key) != int(h.spec.KeySize) || len(next) != int(h.spec.KeySize) {
		return ErrKeySize
	}
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	for {
		switch err := h.view.NextKey(key, next); err {
		case nil:
			return nil
		case mapview.ErrNotFound:
			return ErrKeyNotExist
		}
		// Writers kept interfering: try again (each attempt is bounded;
		// a writer holds a bucket only for a few stores).
		runtime.Gosched()
	}
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
	if cur >= uint64(h.l.NBuckets) {
		return ErrBatchEnd
	}
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	bi := uint32(cur)
	var total uint32
	var ret error
	for {
		b := h.l.BucketOff + 8*uint64(bi)
		if h.load(b+4) != 0 {
			h.lockBucket(b)
			var n uint32
			for e := h.load(b + 4); e != 0; e = h.load(h.ent(e)) {
				n++
			}
			if n > max-total {
				h.unlockBucket(b)
				if total == 0 {
					ret = ErrNoSpace
				}
				break
			}
			for e := h.load(b + 4); e != 0; e = h.load(h.ent(e)) {
				copy(h.keyAt(bt, total), h.keyOf(e))
				h.readFlags(e, h.valueAt(bt, total), bt.ElemFlags)
				total++
			}
			var freed uint32
			if del {
				// Unlink the whole chain; free after unlocking, linked
				// through their next words.
				freed = h.load(b + 4)
				h.store(b+4, 0)
			}
			h.unlockBucket(b)
			for e := freed; e != 0; {
				n := h.load(h.ent(e))
				h.free(s, e)
				e = n
			}
		}
		bi++
		if bi >= h.l.NBuckets {
			ret = ErrBatchEnd
			break
		}
	}
	bt.OutBatch = uint64(bi)
	bt.Count = total
	return ret
}

// UpdateBatch implements Map.
func (h *Hash) UpdateBatch(bt *Batch) error {
	return h.writeBatch(bt, true, func(cpu int, i uint32) error {
		return h.updateFlags(cpu, h.keyAt(bt, i), h.valueAt(bt, i), bt.ElemFlags, true)
	})
}

// DeleteBatch implements Map.
func (h *Hash) DeleteBatch(bt *Batch) error {
	return h.writeBatch(bt, false, func(cpu int, i uint32) error {
		return h.remove(cpu, h.keyAt(bt, i), nil)
	})
}

// writeBatch applies op to elements 0..bt.Count-1, stopping at the first
// failure with bt.Count = elements done, as the kernel's
// generic_map_update_batch and generic_map_delete_batch.
func (h *Hash) writeBatch(bt *Batch, values bool, op func(cpu int, i uint32) error) error {
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
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	for i := uint32(0); i < max; i++ {
		if err := op(s, i); err != nil {
			return err
		}
		bt.Count = i + 1
	}
	return nil
}

package maps

import (
	"sync/atomic"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Pusher is implemented by the maps the bpf_map_push_elem,
// bpf_map_pop_elem and bpf_map_peek_elem helpers work on (queue, stack,
// bloom filter): the program side, on CPU slot cpu, ignoring freezing and
// the syscall caps. value is ValueSize bytes.
type Pusher interface {
	// Push adds value. Queue and stack: flags UpdateAny, or UpdateExist
	// to overwrite the oldest element when full (ErrFull otherwise);
	// other flags ErrInvalid. Bloom filter: flags must be UpdateAny.
	Push(cpu int, value []byte, flags uint64) error
	// Pop copies and removes the next element (queue: the oldest; stack:
	// the newest): ErrKeyNotExist (value zeroed) when empty. Bloom
	// filter: ErrOpNotSupp.
	Pop(cpu int, value []byte) error
	// Peek is Pop without removing. Bloom filter: nil if value may be in
	// the set, ErrKeyNotExist if it is not.
	Peek(cpu int, value []byte) error
}

// Queue is BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK on flat storage: a
// ring of max_entries+1 values with head and tail indices in the region,
// under one lock word, exactly the kernel's queue_stack_maps.c. Key size
// is 0. On the syscall side lookup peeks, update pushes (UpdateExist
// overwrites the oldest element when full), lookup-and-delete pops;
// delete and next key are ErrInvalid, batches ErrNotSupported. Safe for
// concurrent use.
type Queue struct {
	base
	stack bool
}

var _ Map = (*Queue)(nil)
var _ Pusher = (*Queue)(nil)

func (q *Queue) initRegion() {}

func (q *Queue) size() uint32 { return q.spec.MaxEntries + 1 }

func (q *Queue) elem(i uint32) []byte {
	vs := uint64(q.spec.ValueSize)
	o := q.l.DataOff + uint64(i)*vs
	return q.mem[o : o+vs : o+vs]
}

func (q *Queue) lock()   { spinLock(q.u32(mapview.OffQueueLock)) }
func (q *Queue) unlock() { spinUnlock(q.u32(mapview.OffQueueLock)) }

func (q *Queue) head() uint32     { return atomic.LoadUint32(q.u32(mapview.OffQueueHead)) }
func (q *Queue) tail() uint32     { return atomic.LoadUint32(q.u32(mapview.OffQueueTail)) }
func (q *Queue) setHead(v uint32) { atomic.StoreUint32(q.u32(mapview.OffQueueHead), v) }
func (q *Queue) setTail(v uint32) { atomic.StoreUint32(q.u32(mapview.OffQueueTail), v) }

// Push implements Pusher.
func (q *Queue) Push(_ int, value []byte, flags uint64) error {
	if len(value) != int(q.spec.ValueSize) {
		return ErrValueSize
	}
	replace := flags&UpdateExist != 0
	if flags&UpdateNoExist != 0 || flags > UpdateExist {
		return ErrInvalidFlags
	}
	q.lock()
	defer q.unlock()
	h, t, n := q.head(), q.tail(), q.size()
	if next := h + 1; next == t || next >= n && t == 0 {
		if !replace {
			return ErrFull
		}
		if t++; t >= n {
			t = 0
		}
		q.setTail(t)
	}
	copy(q.elem(h), value)
	if h++; h >= n {
		h = 0
	}
	q.setHead(h)
	return nil
}

func (q *Queue) get(value []byte, del bool) error {
	if len(value) != int(q.spec.ValueSize) {
		return ErrValueSize
	}
	q.lock()
	defer q.unlock()
	h, t, n := q.head(), q.tail(), q.size()
	if h == t {
		clear(value)
		return ErrKeyNotExist
	}
	if !q.stack {
		copy(value, q.elem(t))
		if del {
			if t++; t >= n {
				t = 0
			}
			q.setTail(t)
		}
		return nil
	}
	i := h - 1
	if i >= n {
		i = n - 1
	}
	copy(value, q.elem(i))
	if del {
		q.setHead(i)
	}
	return nil
}

// Pop implements Pusher.
func (q *Queue) Pop(_ int, value []byte) error { return q.get(value, true) }

// Peek implements Pusher.
func (q *Queue) Peek(_ int, value []byte) error { return q.get(value, false) }

func (q *Queue) syscall(key []byte, f func(cpu int) error) error {
	if len(key) != 0 {
		return ErrKeySize
	}
	return q.withSlot(f)
}

// Lookup implements Map: peek.
func (q *Queue) Lookup(key, value []byte) error {
	if err := q.canRead(); err != nil {
		return err
	}
	return q.syscall(key, func(cpu int) error { return q.Peek(cpu, value) })
}

// Update implements Map: push.
func (q *Queue) Update(key, value []byte, flags uint64) error {
	if err := q.canWrite(); err != nil {
		return err
	}
	return q.syscall(key, func(cpu int) error { return q.Push(cpu, value, flags) })
}

// LookupAndDelete implements Map: pop.
func (q *Queue) LookupAndDelete(key, value []byte) error {
	if err := q.canRead(); err != nil {
		return err
	}
	if err := q.canWrite(); err != nil {
		return err
	}
	return q.syscall(key, func(cpu int) error { return q.Pop(cpu, value) })
}

// Delete implements Map: ErrInvalid, as the kernel.
func (q *Queue) Delete(key []byte) error {
	if err := q.canWrite(); err != nil {
		return err
	}
	return ErrInvalid
}

// NextKey implements Map: ErrInvalid, as the kernel.
func (q *Queue) NextKey(key, next []byte) error {
	if err := q.canRead(); err != nil {
		return err
	}
	return ErrInvalid
}

// ValueRef implements Map: always nil (programs push, pop and peek).
func (q *Queue) ValueRef([]byte) []byte { return nil }

// ProgLookup implements Map: always nil.
func (q *Queue) ProgLookup(int, []byte) []byte { return nil }

// ProgUpdate implements Map: ErrInvalid (the kernel's update_elem).
func (q *Queue) ProgUpdate([]byte, []byte, uint64) error { return ErrInvalid }

// ProgUpdateOn implements Map: ErrInvalid.
func (q *Queue) ProgUpdateOn(int, []byte, []byte, uint64) error { return ErrInvalid }

// ProgDelete implements Map: ErrInvalid.
func (q *Queue) ProgDelete([]byte) error { return ErrInvalid }

// ProgDeleteOn implements Map: ErrInvalid.
func (q *Queue) ProgDeleteOn(int, []byte) error { return ErrInvalid }

// noBatches gives the batch methods of types without them:
// ErrNotSupported (the kernel's BPF_DO_BATCH without an op), after the
// permission checks.
type noBatches struct{ b *base }

func (n noBatches) LookupBatch(*Batch) error {
	if err := n.b.canRead(); err != nil {
		return err
	}
	return ErrNotSupported
}

func (n noBatches) LookupAndDeleteBatch(*Batch) error {
	if err := n.b.canRead(); err != nil {
		return err
	}
	if err := n.b.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

func (n noBatches) UpdateBatch(*Batch) error {
	if err := n.b.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

func (n noBatches) DeleteBatch(*Batch) error {
	if err := n.b.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// LookupBatch implements Map: ErrNotSupported.
func (q *Queue) LookupBatch(b *Batch) error { return noBatches{&q.base}.LookupBatch(b) }

// LookupAndDeleteBatch implements Map: ErrNotSupported.
func (q *Queue) LookupAndDeleteBatch(b *Batch) error {
	return noBatches{&q.base}.LookupAndDeleteBatch(b)
}

// UpdateBatch implements Map: ErrNotSupported.
func (q *Queue) UpdateBatch(b *Batch) error { return noBatches{&q.base}.UpdateBatch(b) }

// DeleteBatch implements Map: ErrNotSupported.
func (q *Queue) DeleteBatch(b *Batch) error { return noBatches{&q.base}.DeleteBatch(b) }

func (q *Queue) validateInto(rep *Repair) error {
	if atomic.LoadUint32(q.u32(mapview.OffQueueLock)) != 0 {
		atomic.StoreUint32(q.u32(mapview.OffQueueLock), 0)
		rep.Unlocked++
	}
	if q.head() >= q.size() || q.tail() >= q.size() {
		return errQueueIndex
	}
	return nil
}

var errQueueIndex = errorString("queue head or tail out of range")

type errorString string

func (e errorString) Error() string { return string(e) }

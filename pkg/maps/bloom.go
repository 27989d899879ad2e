package maps

import (
	"sync/atomic"
	"unsafe"
)

// Bloom is BPF_MAP_TYPE_BLOOM_FILTER on flat storage: the kernel's bit
// array (bloom_filter.c), sized and hashed as the kernel does (jhash with
// the seed plus the function's index; map_extra's low 4 bits are the
// number of hash functions, 0 meaning 5), so that with BPF_F_ZERO_SEED it
// answers exactly as the kernel, false positives included. Key size is 0.
// On the syscall side update adds a value (flags must be UpdateAny) and
// lookup tests one: the value is the lookup's input, nil means it may be
// in the set, ErrKeyNotExist that it is not. Delete and next key are
// ErrOpNotSupp, lookup-and-delete and batches ErrNotSupported. Bits are
// set with atomic ORs: no lock. Safe for concurrent use.
type Bloom struct {
	base
	nhash uint32
	seed  uint32
	mask  uint32
}

var _ Map = (*Bloom)(nil)
var _ Pusher = (*Bloom)(nil)

func (f *Bloom) initRegion() {}

func (f *Bloom) hash(value []byte, i uint32) uint32 {
	var h uint32
	if len(value)%4 == 0 {
		h = jhash2(value, f.seed+i)
	} else {
		h = jhash(value, f.seed+i)
	}
	return h & f.mask
}

func (f *Bloom) word(bit uint32) *uint64 {
	return (*uint64)(unsafe.Pointer(&f.mem[f.l.DataOff+uint64(bit>>6)*8]))
}

// Push implements Pusher: adds value.
func (f *Bloom) Push(_ int, value []byte, flags uint64) error {
	if len(value) != int(f.spec.ValueSize) {
		return ErrValueSize
	}
	if flags != UpdateAny {
		return ErrInvalidFlags
	}
	for i := uint32(0); i < f.nhash; i++ {
		h := f.hash(value, i)
		atomic.OrUint64(f.word(h), 1<<(h&63))
	}
	return nil
}

// Peek implements Pusher: nil if value may be in the set,
// ErrKeyNotExist if it is not. value is not written.
func (f *Bloom) Peek(_ int, value []byte) error {
	if len(value) != int(f.spec.ValueSize) {
		return ErrValueSize
	}
	for i := uint32(0); i < f.nhash; i++ {
		h := f.hash(value, i)
		if atomic.LoadUint64(f.word(h))&(1<<(h&63)) == 0 {
			return ErrKeyNotExist
		}
	}
	return nil
}

// Pop implements Pusher: ErrOpNotSupp, as the kernel.
func (f *Bloom) Pop(int, []byte) error { return ErrOpNotSupp }

func (f *Bloom) syscall(key []byte, fn func(cpu int) error) error {
	if len(key) != 0 {
		return ErrKeySize
	}
	return f.withSlot(fn)
}

// Lookup implements Map: tests value (an input).
func (f *Bloom) Lookup(key, value []byte) error {
	if err := f.canRead(); err != nil {
		return err
	}
	return f.syscall(key, func(cpu int) error { return f.Peek(cpu, value) })
}

// Update implements Map: adds value.
func (f *Bloom) Update(key, value []byte, flags uint64) error {
	if err := f.canWrite(); err != nil {
		return err
	}
	return f.syscall(key, func(cpu int) error { return f.Push(cpu, value, flags) })
}

// Delete implements Map: ErrOpNotSupp.
func (f *Bloom) Delete([]byte) error {
	if err := f.canWrite(); err != nil {
		return err
	}
	return ErrOpNotSupp
}

// NextKey implements Map: ErrOpNotSupp.
func (f *Bloom) NextKey(_, _ []byte) error {
	if err := f.canRead(); err != nil {
		return err
	}
	return ErrOpNotSupp
}

// LookupAndDelete implements Map: ErrNotSupported.
func (f *Bloom) LookupAndDelete(_, _ []byte) error {
	if err := f.canRead(); err != nil {
		return err
	}
	if err := f.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// ValueRef implements Map: nil.
func (f *Bloom) ValueRef([]byte) []byte { return nil }

// ProgLookup implements Map: nil (bloom_map_lookup_elem refuses).
func (f *Bloom) ProgLookup(int, []byte) []byte { return nil }

// ProgUpdate implements Map: ErrInvalid.
func (f *Bloom) ProgUpdate([]byte, []byte, uint64) error { return ErrInvalid }

// ProgUpdateOn implements Map: ErrInvalid.
func (f *Bloom) ProgUpdateOn(int, []byte, []byte, uint64) error { return ErrInvalid }

// ProgDelete implements Map: ErrOpNotSupp.
func (f *Bloom) ProgDelete([]byte) error { return ErrOpNotSupp }

// ProgDeleteOn implements Map: ErrOpNotSupp.
func (f *Bloom) ProgDeleteOn(int, []byte) error { return ErrOpNotSupp }

// LookupBatch implements Map: ErrNotSupported.
func (f *Bloom) LookupBatch(b *Batch) error { return noBatches{&f.base}.LookupBatch(b) }

// LookupAndDeleteBatch implements Map: ErrNotSupported.
func (f *Bloom) LookupAndDeleteBatch(b *Batch) error {
	return noBatches{&f.base}.LookupAndDeleteBatch(b)
}

// UpdateBatch implements Map: ErrNotSupported.
func (f *Bloom) UpdateBatch(b *Batch) error { return noBatches{&f.base}.UpdateBatch(b) }

// DeleteBatch implements Map: ErrNotSupported.
func (f *Bloom) DeleteBatch(b *Batch) error { return noBatches{&f.base}.DeleteBatch(b) }

func (f *Bloom) validateInto(*Repair) error { return nil }

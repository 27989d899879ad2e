package mapview

import (
	"errors"
	"sync/atomic"
	"unsafe"
)

// RingReader consumes a BPF ring buffer's records in place (the consumer
// side of the kernel's ringbuf, as libbpf's ring_buffer__consume): data
// is the ring's data pages mapped twice in a row (2 × size bytes, size a
// power of two), prod the producer position (read-only), cons the
// consumer position: written back after each record when writable,
// otherwise kept privately (an observer that frees no space).
//
// The bytes are untrusted: a record whose length cannot fit the ring is
// ErrCorruptRecord, positions are masked, and Next never reads outside
// data. Not safe for concurrent use (one consumer).
type RingReader struct {
	data     []byte
	mask     uint64
	prod     *uint64
	cons     *uint64
	pos      uint64 // the consumer position as this reader knows it
	writable bool
}

// ErrCorruptRecord: a record header claims a length the ring cannot
// hold (a producer wrote outside its record, or the mapping is not a
// ring buffer).
var ErrCorruptRecord = errors.New("mapview: ring buffer record header is corrupt")

// NewRingReader returns a reader over data (2 × size bytes), with the
// producer and consumer positions at the start of prodPage and consPage
// (each at least 8 bytes, 8-aligned). It fails with ErrGeometry when the
// sizes do not make a ring.
func NewRingReader(data, prodPage, consPage []byte, writable bool) (*RingReader, error) {
	size := uint64(len(data)) / 2
	if size == 0 || size&(size-1) != 0 || uint64(len(data)) != 2*size || len(prodPage) < 8 || len(consPage) < 8 ||
		uintptr(unsafe.Pointer(&prodPage[0]))%8 != 0 || uintptr(unsafe.Pointer(&consPage[0]))%8 != 0 {
		return nil, ErrGeometry
	}
	r := &RingReader{data: data, mask: size - 1,
		prod: (*uint64)(unsafe.Pointer(&prodPage[0])), cons: (*uint64)(unsafe.Pointer(&consPage[0])), writable: writable}
	r.pos = atomic.LoadUint64(r.cons)
	return r, nil
}

// Size returns the ring's data size.
func (r *RingReader) Size() int { return int(r.mask + 1) }

// Pending returns how many bytes the producers have written beyond the
// consumer position (records, headers and padding).
func (r *RingReader) Pending() int {
	p := atomic.LoadUint64(r.prod)
	if p < r.pos || p-r.pos > r.mask+1 {
		return int(r.mask + 1)
	}
	return int(p - r.pos)
}

// Next returns the next committed record's data (aliasing the ring: valid
// until Advance) and the position after it, skipping discarded records
// (advancing past them). ok is false when no committed record is
// available (none written, or the next one still busy).
func (r *RingReader) Next() (rec []byte, next uint64, ok bool, err error) {
	for {
		prod := atomic.LoadUint64(r.prod)
		if r.pos >= prod {
			return nil, 0, false, nil
		}
		off := r.pos & r.mask
		hl := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hl&RingBusyBit != 0 {
			return nil, 0, false, nil
		}
		n := uint64(hl &^ RingDiscardBit)
		if n > r.mask+1-RingHeaderSize {
			return nil, 0, false, ErrCorruptRecord
		}
		after := r.pos + (n+RingHeaderSize+7)&^7
		if hl&RingDiscardBit != 0 {
			r.Advance(after)
			continue
		}
		start := off + RingHeaderSize
		return r.data[start : start+n : start+n], after, true, nil
	}
}

// Advance moves the consumer position to pos (the next value Next
// returned), freeing the space of the records before it when the reader
// is writable.
func (r *RingReader) Advance(pos uint64) {
	r.pos = pos
	if r.writable {
		atomic.StoreUint64(r.cons, pos)
	}
}

// Position returns the consumer position as this reader knows it.
func (r *RingReader) Position() uint64 { return r.pos }

// Writable reports whether the reader writes the consumer position back.
func (r *RingReader) Writable() bool { return r.writable }

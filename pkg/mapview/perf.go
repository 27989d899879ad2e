package mapview

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"unsafe"
)

// Perf rings (the consumer side of a BPF_MAP_TYPE_PERF_EVENT_ARRAY slot,
// as libbpf's perf_buffer and cilium/ebpf's perf.Reader read a kernel
// perf ring): one metadata page laid out as struct perf_event_mmap_page
// (the producer's data_head at PerfOffDataHead, the consumer's data_tail
// at PerfOffDataTail) and a power-of-two number of data pages holding
// records, each a struct perf_event_header (type u32, misc u16, size u16)
// followed by its body. bpf_perf_event_output writes PERF_RECORD_SAMPLE
// records (a u32 size then the raw data, padded so the record is 8-byte
// aligned) and PERF_RECORD_LOST records (id u64, lost u64) for samples
// that did not fit.

// Perf ring metadata offsets and record types, as the kernel's.
const (
	PerfOffDataHead   = 1024
	PerfOffDataTail   = 1032
	PerfOffDataOffset = 1040
	PerfOffDataSize   = 1048
	// PerfOffDetached is bpfd's word in the page's reserved part (struct
	// perf_event_mmap_page's __reserved): non-zero once the ring was
	// detached from its slot, so no record will follow.
	PerfOffDetached  = 96
	PerfRecordLost   = 2
	PerfRecordSample = 9
	// PerfHeaderSize is the size of struct perf_event_header.
	PerfHeaderSize = 8
)

// ErrCorruptPerfRecord: a perf record header claims a size the ring
// cannot hold or that is too small for its type (the mapping is not a
// perf ring, or it was overwritten).
var ErrCorruptPerfRecord = errors.New("mapview: perf ring record is corrupt")

// PerfReader consumes one perf ring's records: it copies each out (a
// record may wrap around the end of the data) and writes data_tail back
// after it, freeing its space for the producer.
//
// The bytes are untrusted: data_head is only compared with the reader's
// own position, record sizes are checked against what was published and
// against their type's minimum, and Next never reads outside the mapping
// nor loops more than once per record. Not safe for concurrent use (one
// consumer per ring).
type PerfReader struct {
	meta []byte
	data []byte
	mask uint64
	head *uint64
	tail *uint64
	pos  uint64
}

// NewPerfReader returns a reader over mem: the metadata page then the
// data pages (a power of two of them, data_offset and data_size as the
// producer published them). It fails with ErrGeometry otherwise. The
// reader starts at the consumer position in the page.
func NewPerfReader(mem []byte) (*PerfReader, error) {
	if len(mem) < 2*PageSize || uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, ErrGeometry
	}
	size := uint64(len(mem) - PageSize)
	le := binary.LittleEndian
	if size&(size-1) != 0 || le.Uint64(mem[PerfOffDataOffset:]) != PageSize || le.Uint64(mem[PerfOffDataSize:]) != size {
		return nil, ErrGeometry
	}
	r := &PerfReader{meta: mem[:PageSize], data: mem[PageSize:], mask: size - 1,
		head: (*uint64)(unsafe.Pointer(&mem[PerfOffDataHead])),
		tail: (*uint64)(unsafe.Pointer(&mem[PerfOffDataTail]))}
	r.pos = atomic.LoadUint64(r.tail)
	return r, nil
}

// Detached reports whether the producer detached the ring (records
// already written can still be read).
func (r *PerfReader) Detached() bool {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.meta[PerfOffDetached]))) != 0
}

// Size returns the ring's data size.
func (r *PerfReader) Size() int { return int(r.mask + 1) }

// Pending returns how many bytes of records wait beyond the reader's
// position (the data size when data_head is out of reach).
func (r *PerfReader) Pending() int {
	h := atomic.LoadUint64(r.head)
	if h < r.pos || h-r.pos > r.mask+1 {
		return int(r.mask + 1)
	}
	return int(h - r.pos)
}

// copyOut copies len(dst) bytes at ring position pos (wrapping).
func (r *PerfReader) copyOut(dst []byte, pos uint64) {
	for len(dst) > 0 {
		n := copy(dst, r.data[pos&r.mask:])
		dst = dst[n:]
		pos += uint64(n)
	}
}

// PerfRecord is one decoded record.
type PerfRecord struct {
	// Type is the record type (PerfRecordSample, PerfRecordLost or
	// another the reader skips the body of).
	Type uint32
	// Lost is the lost-sample count of a PerfRecordLost.
	Lost uint64
}

// Next decodes the next record: for a sample, its raw data is appended
// to buf[:0] and returned; for a lost record, rec.Lost is set. The space
// is freed (data_tail advanced) before Next returns. ok is false when no
// record waits. ErrCorruptPerfRecord (the reader then skips to data_head,
// dropping what it could not decode) when a header cannot be right.
func (r *PerfReader) Next(buf []byte) (out []byte, rec PerfRecord, ok bool, err error) {
	head := atomic.LoadUint64(r.head)
	if head == r.pos {
		return buf[:0], rec, false, nil
	}
	avail := head - r.pos
	if head < r.pos || avail > r.mask+1 || avail < PerfHeaderSize {
		r.skip(head)
		return buf[:0], rec, false, ErrCorruptPerfRecord
	}
	var hdr [PerfHeaderSize + 16]byte
	r.copyOut(hdr[:PerfHeaderSize], r.pos)
	le := binary.LittleEndian
	rec.Type = le.Uint32(hdr[0:])
	size := uint64(le.Uint16(hdr[6:]))
	if size < PerfHeaderSize || size > avail {
		r.skip(head)
		return buf[:0], rec, false, ErrCorruptPerfRecord
	}
	out = buf[:0]
	switch rec.Type {
	case PerfRecordSample:
		if size < PerfHeaderSize+4 {
			r.skip(head)
			return buf[:0], rec, false, ErrCorruptPerfRecord
		}
		r.copyOut(hdr[PerfHeaderSize:PerfHeaderSize+4], r.pos+PerfHeaderSize)
		n := uint64(le.Uint32(hdr[PerfHeaderSize:]))
		if n > size-PerfHeaderSize-4 {
			r.skip(head)
			return buf[:0], rec, false, ErrCorruptPerfRecord
		}
		if uint64(cap(buf)) < n {
			out = make([]byte, n)
		} else {
			out = buf[:n]
		}
		r.copyOut(out, r.pos+PerfHeaderSize+4)
	case PerfRecordLost:
		if size < PerfHeaderSize+16 {
			r.skip(head)
			return buf[:0], rec, false, ErrCorruptPerfRecord
		}
		r.copyOut(hdr[PerfHeaderSize:], r.pos+PerfHeaderSize)
		rec.Lost = le.Uint64(hdr[PerfHeaderSize+8:])
	}
	r.skip(r.pos + size)
	return out, rec, true, nil
}

// skip moves the position to pos and publishes it as data_tail.
func (r *PerfReader) skip(pos uint64) {
	r.pos = pos
	atomic.StoreUint64(r.tail, pos)
}

package client

import (
	"encoding/binary"
	"errors"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// BatchOptions are the kernel's batch flags: ElemFlags applies to each
// element, Flags to the call. As in the kernel, ElemFlags may only hold
// LookupLock (BPF_F_LOCK, 4: copy each value under its bpf_spin_lock, on
// maps whose values hold one) and Flags must be 0: anything else is ErrInvalid. In particular the update
// flags of Update (UpdateNoExist, UpdateExist) are not batch flags.
type BatchOptions struct {
	ElemFlags uint64
	Flags     uint64
}

// MapBatchCursor is where a chunked batch lookup continues. The zero value
// starts at the beginning; pass the same cursor to successive BatchLookup
// or BatchLookupAndDelete calls on one Map. A cursor is not safe for
// concurrent use and may not be shared between Maps.
type MapBatchCursor struct {
	m       *Map
	started bool
	next    uint64 // the daemon's opaque position
}

func (m *Map) batchSizes(keys, values []byte) (int, error) {
	ks, vs := int(m.info.KeySize), m.ValueBufferSize()
	if ks == 0 || len(keys)%ks != 0 || values != nil && len(values) != len(keys)/ks*vs {
		return 0, errBatchSize
	}
	return len(keys) / ks, nil
}

// BatchLookup copies up to len(keysOut)/KeySize elements, starting at
// cursor, into keysOut and valuesOut (flat arrays of keys and values;
// valuesOut must hold as many values as keysOut holds keys) and returns how
// many it copied. As the kernel, it returns ErrKeyNotExist together with
// the final, possibly partial, count once the map is exhausted; that is
// the normal end of a batch walk. ErrNoSpace means the buffers are smaller
// than one hash bucket. Other errors: ErrPermission if m cannot read,
// ErrInvalid for mismatched buffers or a cursor of another map, ErrClosed.
//
// Batches are not snapshots: see Iterate for the consistency they give.
func (m *Map) BatchLookup(cursor *MapBatchCursor, keysOut, valuesOut []byte, opts *BatchOptions) (int, error) {
	return m.batchLookup(wire.CmdMapLookupBatch, cursor, keysOut, valuesOut, opts)
}

// BatchLookupAndDelete is BatchLookup that also deletes every element it
// returns. It needs a descriptor that can read and write (ErrPermission
// otherwise); arrays fail with ErrInvalid as in the kernel.
func (m *Map) BatchLookupAndDelete(cursor *MapBatchCursor, keysOut, valuesOut []byte, opts *BatchOptions) (int, error) {
	return m.batchLookup(wire.CmdMapLookupAndDeleteBatch, cursor, keysOut, valuesOut, opts)
}

func (m *Map) batchLookup(cmd wire.Cmd, cursor *MapBatchCursor, keysOut, valuesOut []byte, opts *BatchOptions) (int, error) {
	if valuesOut == nil {
		return 0, errBatchSize
	}
	count, err := m.batchSizes(keysOut, valuesOut)
	if err != nil {
		return 0, err
	}
	if cursor.m != nil && cursor.m != m {
		return 0, errCursorMap
	}
	a := wire.BatchAttr{Handle: m.handle, Count: uint32(count), InBatch: cursor.next}
	if cursor.started {
		a.HasInBatch = 1
	}
	if opts != nil {
		a.ElemFlags, a.Flags = opts.ElemFlags, opts.Flags
	}
	var ab [wire.BatchAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, cmd, a.Append(ab[:0]), nil); err != nil {
		return 0, err
	}
	defer w.closeFDs()
	opErr := errnoErr(w.hdr.Errno)
	n := int(w.hdr.Ret)
	if w.hdr.DataLen == 0 {
		// No cursor: nothing was walked (a failure before the walk, or a
		// zero count, which the kernel answers with success).
		if n != 0 {
			return 0, errProtocol
		}
		return 0, opErr
	}
	ks, vs := int(m.info.KeySize), m.ValueBufferSize()
	if n < 0 || n > count || int(w.hdr.DataLen) != wire.BatchCursorSize+n*(ks+vs) {
		return 0, errProtocol
	}
	if fd := w.memfd(); fd >= 0 {
		var cur [wire.BatchCursorSize]byte
		if err := preadFull(fd, cur[:], 0); err != nil {
			return 0, err
		}
		if err := preadFull(fd, keysOut[:n*ks], wire.BatchCursorSize); err != nil {
			return 0, err
		}
		if err := preadFull(fd, valuesOut[:n*vs], int64(wire.BatchCursorSize+n*ks)); err != nil {
			return 0, err
		}
		cursor.next = binary.LittleEndian.Uint64(cur[:])
	} else {
		d := w.data
		cursor.next = binary.LittleEndian.Uint64(d)
		d = d[wire.BatchCursorSize:]
		copy(keysOut, d[:n*ks])
		copy(valuesOut, d[n*ks:])
	}
	cursor.m, cursor.started = m, true
	return n, opErr
}

// BatchUpdate stores len(keys)/KeySize elements (flat arrays of keys and
// values) and returns how many it stored; on failure the count says how
// many succeeded before the error (as the kernel: for an argument refused
// before any element, such as unknown flags, the kernel leaves the count
// as the caller passed it, and so does bpfd). Existing keys are replaced.
// Errors as Update, plus ErrInvalid for mismatched buffers. Batches too large for one message travel in a sealed
// memfd.
func (m *Map) BatchUpdate(keys, values []byte, opts *BatchOptions) (int, error) {
	if values == nil {
		return 0, errBatchSize
	}
	count, err := m.batchSizes(keys, values)
	if err != nil {
		return 0, err
	}
	return m.batchWrite(wire.CmdMapUpdateBatch, count, opts, keys, values)
}

// BatchDelete deletes len(keys)/KeySize keys and returns how many it
// deleted; on failure (ErrKeyNotExist for a missing key, as the kernel)
// the count says how many were deleted before it. Other errors as Delete.
func (m *Map) BatchDelete(keys []byte, opts *BatchOptions) (int, error) {
	count, err := m.batchSizes(keys, nil)
	if err != nil {
		return 0, err
	}
	return m.batchWrite(wire.CmdMapDeleteBatch, count, opts, keys)
}

func (m *Map) batchWrite(cmd wire.Cmd, count int, opts *BatchOptions, data ...[]byte) (int, error) {
	a := wire.BatchAttr{Handle: m.handle, Count: uint32(count)}
	if opts != nil {
		a.ElemFlags, a.Flags = opts.ElemFlags, opts.Flags
	}
	var ab [wire.BatchAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, cmd, a.Append(ab[:0]), nil, data...); err != nil {
		return 0, err
	}
	w.closeFDs()
	n := int(w.hdr.Ret)
	if n < 0 || n > count {
		return 0, errProtocol
	}
	return n, errnoErr(w.hdr.Errno)
}

// MapIterator walks a map with batch lookups. Create it with Map.Iterate.
//
// Consistency is the kernel's for BPF_MAP_LOOKUP_BATCH, not a snapshot:
// the walk fetches a chunk of elements per round trip and continues from
// the daemon's cursor. Elements present for the whole walk and not
// modified are returned exactly once; an element inserted or deleted
// during the walk may or may not be returned; a value is the one stored
// when its chunk was fetched, so values of different chunks may be from
// different moments. A MapIterator is not safe for concurrent use.
type MapIterator struct {
	m      *Map
	cursor MapBatchCursor
	chunk  int // elements per batch
	keys   []byte
	values []byte
	n, i   int  // elements in the current chunk, next to return
	last   bool // the daemon reported the end
	err    error
}

// Iterate returns an iterator over m's elements. It needs read access.
func (m *Map) Iterate() *MapIterator {
	ks, vs := int(m.info.KeySize), m.ValueBufferSize()
	chunk := (wire.MaxMessage - wire.ReplyHeaderSize - wire.BatchCursorSize) / max(ks+vs, 1)
	chunk = max(1, min(chunk, int(m.info.MaxEntries)))
	return &MapIterator{m: m, chunk: chunk}
}

// Next copies the next element into keyOut and valueOut (valueOut may be
// nil, or a nil []byte, to walk keys only) and reports whether there was
// one. keyOut and valueOut are []byte of KeySize and ValueBufferSize bytes
// (the zero-allocation path) or typed as for Map.Lookup (cilium/ebpf's
// rules). It returns false at the end and on failure; Err tells which.
func (it *MapIterator) Next(keyOut, valueOut any) bool {
	if k, ok := keyOut.([]byte); ok {
		if v, ok := valueOut.([]byte); ok && (v == nil || len(v) == it.m.ValueBufferSize() || !it.m.info.Type.perCPU()) || valueOut == nil {
			return it.nextBytes(k, v)
		}
	}
	keepContents(keyOut)
	keepContents(valueOut)
	return it.nextTyped(hide(&keyOut), hide(&valueOut))
}

// nextBytes is Next with []byte key and value (value nil: keys only).
func (it *MapIterator) nextBytes(key, value []byte) bool {
	if it.err != nil {
		return false
	}
	if len(key) != int(it.m.info.KeySize) {
		it.err = errKeySize
		return false
	}
	if value != nil && len(value) != it.m.ValueBufferSize() {
		it.err = errValueSize
		return false
	}
	k, v, ok := it.advance()
	if ok {
		copy(key, k)
		copy(value, v)
	}
	return ok
}

// nextTyped is Next off the []byte path (arguments from hide; see
// typed.go).
func (it *MapIterator) nextTyped(keyOut, valueOut any) bool {
	if it.err != nil {
		return false
	}
	ko, vo, err := typedArgs(keyOut, valueOut)
	if err == nil && ko == nil {
		err = errNilValue
	}
	if err != nil {
		it.err = err
		return false
	}
	k, v, ok := it.advance()
	if !ok {
		return false
	}
	if err := unmarshal(ko, k, errKeySize, "key"); err != nil {
		it.err = err
		return false
	}
	if b, isBytes := vo.([]byte); vo != nil && !(isBytes && b == nil) {
		if it.m.info.Type.perCPU() {
			err = unmarshalPerCPU(vo, int(it.m.info.ValueSize), v)
		} else {
			err = unmarshal(vo, v, errValueSize, "value")
		}
		if err != nil {
			it.err = err
			return false
		}
	}
	writeBack(keyOut, ko)
	writeBack(valueOut, vo)
	return true
}

// advance returns the next element's key and value in the iterator's
// buffers, fetching the next chunk when needed; false at the end or on
// failure (it.err).
func (it *MapIterator) advance() (key, value []byte, ok bool) {
	ks, vs := int(it.m.info.KeySize), it.m.ValueBufferSize()
	for it.i == it.n {
		if it.last {
			return nil, nil, false
		}
		if it.keys == nil {
			it.keys, it.values = make([]byte, it.chunk*ks), make([]byte, it.chunk*vs)
		}
		n, err := it.m.BatchLookup(&it.cursor, it.keys, it.values, nil)
		switch {
		case errors.Is(err, ErrKeyNotExist):
			it.last = true
		case errors.Is(err, ErrNoSpace) && it.chunk < int(it.m.info.MaxEntries):
			// A hash bucket holds more than a chunk: grow, as the
			// kernel's users must.
			it.chunk = min(2*it.chunk, int(it.m.info.MaxEntries))
			it.keys = nil
			continue
		case err != nil:
			it.err = err
			return nil, nil, false
		}
		it.n, it.i = n, 0
	}
	key, value = it.keys[it.i*ks:(it.i+1)*ks], it.values[it.i*vs:(it.i+1)*vs]
	it.i++
	return key, value, true
}

// Err returns the error that ended the walk, or nil if it ended because
// the map was exhausted.
func (it *MapIterator) Err() error { return it.err }

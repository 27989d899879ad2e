package client

// Typed keys and values: Map.Lookup, Update, Delete, NextKey,
// LookupAndDelete and MapIterator.Next take keys and values as any, with
// cilium/ebpf's marshalling rules, so code written for cilium/ebpf's
// ebpf.Map moves to bpfd unchanged:
//
//   - []byte is the bytes themselves (the zero-allocation path; for per-CPU
//     maps a []byte of ValueBufferSize bytes is the kernel's whole per-CPU
//     buffer, as before);
//   - a value implementing encoding.BinaryMarshaler (in) or
//     encoding.BinaryUnmarshaler (out) encodes itself;
//   - a string (in) is its bytes; *string and *[]byte (out) receive a
//     fresh copy;
//   - unsafe.Pointer points at exactly KeySize or ValueSize bytes;
//   - anything else (fixed-size integers, arrays and structs, pointers to
//     and slices of them) is encoded as encoding/binary does in the host's
//     byte order; a pointer to or slice of a type without padding or
//     unexported fields is read and written in place, with no copy;
//   - per-CPU maps take a slice with one element per possible CPU (fewer
//     on update: the rest are zero) and fill a slice of PossibleCPUs()
//     elements or a pointer to a slice (made to measure), each element one
//     CPU's value under the rules above;
//   - a program array's value may be a *Program, a map of maps' a *Map,
//     open on the same Conn.
//
// A value that does not encode to the map's size is ErrInvalid, naming
// the Go type and both sizes.

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"
)

// errNilValue: nil given where a key or value is needed.
var errNilValue = invalid("bpfd: nil key or value")

// sizeErr wraps base (errKeySize or errValueSize) with the Go type and
// both sizes; used only off the []byte fast path.
func sizeErr(base error, data any, got, want int) error {
	return fmt.Errorf("%w: %T encodes to %d bytes, want %d", base, data, got, want)
}

// encodeErr reports that data cannot be encoded or decoded at all.
func encodeErr(what string, data any, err error) error {
	return fmt.Errorf("%w: %s %T: %v", ErrInvalid, what, data, err)
}

// marshal encodes data as size bytes under the rules above, into a new
// buffer or data's own memory (data is a heap copy, see typedArg); base
// is errKeySize or errValueSize for a size mismatch.
func marshal(data any, size int, base error, what string) ([]byte, error) {
	var b []byte
	var err error
	switch v := data.(type) {
	case nil:
		return nil, errNilValue
	case []byte:
		b = v
	case encoding.BinaryMarshaler:
		b, err = v.MarshalBinary()
	case string:
		b = []byte(v)
	case unsafe.Pointer:
		if v == nil {
			return nil, errNilValue
		}
		return bytes.Clone(unsafe.Slice((*byte)(v), size)), nil
	default:
		if mem := inPlace(data); mem != nil {
			b = mem
			break
		}
		b, err = binary.Append(nil, binary.NativeEndian, data)
	}
	if err != nil {
		return nil, encodeErr(what, data, err)
	}
	if len(b) != size {
		return nil, sizeErr(base, data, len(b), size)
	}
	return b, nil
}

// unmarshal decodes buf into out under the rules above (out must be a
// pointer, a slice, an encoding.BinaryUnmarshaler or an unsafe.Pointer).
func unmarshal(out any, buf []byte, base error, what string) error {
	switch v := out.(type) {
	case nil:
		return errNilValue
	case encoding.BinaryUnmarshaler:
		if err := v.UnmarshalBinary(buf); err != nil {
			return encodeErr(what, out, err)
		}
		return nil
	case *string:
		*v = string(buf)
		return nil
	case *[]byte:
		*v = bytes.Clone(buf)
		return nil
	case []byte:
		if len(v) != len(buf) {
			return sizeErr(base, out, len(v), len(buf))
		}
		copy(v, buf)
		return nil
	case unsafe.Pointer:
		if v == nil {
			return errNilValue
		}
		copy(unsafe.Slice((*byte)(v), len(buf)), buf)
		return nil
	}
	if mem := inPlace(out); mem != nil {
		if len(mem) != len(buf) {
			return sizeErr(base, out, len(mem), len(buf))
		}
		copy(mem, buf)
		return nil
	}
	if k := reflect.TypeOf(out).Kind(); k != reflect.Pointer && k != reflect.Slice {
		return encodeErr(what, out, errors.New("want a pointer or a slice to decode into"))
	}
	if reflect.ValueOf(out).IsNil() {
		return errNilValue
	}
	if n := binary.Size(out); n >= 0 && n != len(buf) {
		return sizeErr(base, out, n, len(buf))
	}
	if _, err := binary.Decode(buf, binary.NativeEndian, out); err != nil {
		return encodeErr(what, out, err)
	}
	return nil
}

// inPlace returns data's own memory when data is a non-nil pointer to,
// or a slice of, a type whose Go layout is its encoding/binary encoding
// (no padding, no unexported fields): read and written without a copy.
// nil otherwise.
func inPlace(data any) []byte {
	v := reflect.ValueOf(data)
	var size int
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		et := v.Type().Elem()
		if et.Kind() == reflect.Slice {
			v = v.Elem()
			if !flat(v.Type().Elem()) {
				return nil
			}
			size = int(v.Type().Elem().Size()) * v.Len()
			break
		}
		if !flat(et) {
			return nil
		}
		size = int(et.Size())
	case reflect.Slice:
		if !flat(v.Type().Elem()) {
			return nil
		}
		size = int(v.Type().Elem().Size()) * v.Len()
	default:
		return nil
	}
	if size == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(v.UnsafePointer()), size)
}

// flatTypes caches flat's answer per type.
var flatTypes sync.Map // reflect.Type -> bool

// flat reports whether t's memory is exactly its encoding/binary encoding
// in the host's byte order: fixed-size numbers, arrays and structs of
// them, with no padding and only exported fields (a blank field, which
// encoding/binary writes as zeros, takes the copying path).
func flat(t reflect.Type) bool {
	if v, ok := flatTypes.Load(t); ok {
		return v.(bool)
	}
	ok := flatUncached(t)
	flatTypes.Store(t, ok)
	return ok
}

func flatUncached(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Uint8, reflect.Int16, reflect.Uint16,
		reflect.Int32, reflect.Uint32, reflect.Int64, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return flat(t.Elem())
	case reflect.Struct:
		off := uintptr(0)
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Offset != off || !flat(f.Type) {
				return false
			}
			off += f.Type.Size()
		}
		return off == t.Size()
	}
	return false
}

// marshalPerCPU encodes slice (one element per CPU, at most PossibleCPUs
// of them) into buf (ValueBufferSize bytes, zeroed past the last one),
// each element valueSize bytes at a stride of valueSize rounded up to 8.
func marshalPerCPU(slice any, valueSize int, buf []byte) error {
	sv := reflect.ValueOf(slice)
	if sv.Kind() != reflect.Slice {
		return encodeErr("per-CPU value", slice, errors.New("want a slice with one value per CPU"))
	}
	stride, cpus := (valueSize+7)&^7, PossibleCPUs()
	if sv.Len() > cpus {
		return encodeErr("per-CPU value", slice, fmt.Errorf("%d values for %d possible CPUs", sv.Len(), cpus))
	}
	clear(buf)
	for i := range sv.Len() {
		b, err := marshal(sv.Index(i).Interface(), valueSize, errValueSize, "per-CPU value")
		if err != nil {
			return fmt.Errorf("cpu %d: %w", i, err)
		}
		copy(buf[i*stride:], b)
	}
	return nil
}

// perCPUSlice returns the slice a per-CPU lookup fills for out: out
// itself if it is a slice (of PossibleCPUs elements), or, for a pointer
// to a slice, a new slice of PossibleCPUs elements stored through it
// (elements that are pointers point to new zero values).
func perCPUSlice(out any) (reflect.Value, error) {
	v := reflect.ValueOf(out)
	switch {
	case v.Kind() == reflect.Slice:
	case v.Kind() == reflect.Pointer && !v.IsNil() && v.Type().Elem().Kind() == reflect.Slice:
		st := v.Type().Elem()
		s := reflect.MakeSlice(st, PossibleCPUs(), PossibleCPUs())
		if et := st.Elem(); et.Kind() == reflect.Pointer {
			for i := range s.Len() {
				s.Index(i).Set(reflect.New(et.Elem()))
			}
		}
		v.Elem().Set(s)
		v = s
	default:
		return reflect.Value{}, encodeErr("per-CPU value", out, errors.New("want a slice or a pointer to a slice"))
	}
	if v.Len() != PossibleCPUs() {
		return reflect.Value{}, encodeErr("per-CPU value", out, fmt.Errorf("%d elements for %d possible CPUs", v.Len(), PossibleCPUs()))
	}
	return v, nil
}

// unmarshalPerCPU decodes buf (ValueBufferSize bytes) into out, a slice
// or a pointer to a slice (see perCPUSlice).
func unmarshalPerCPU(out any, valueSize int, buf []byte) error {
	s, err := perCPUSlice(out)
	if err != nil {
		return err
	}
	stride := (valueSize + 7) &^ 7
	for i := range s.Len() {
		e := s.Index(i)
		var dst any
		if e.Kind() == reflect.Pointer {
			if e.IsNil() {
				return encodeErr("per-CPU value", out, fmt.Errorf("element %d is nil", i))
			}
			dst = e.Interface()
		} else {
			dst = e.Addr().Interface()
		}
		if err := unmarshal(dst, buf[i*stride:i*stride+valueSize], errValueSize, "per-CPU value"); err != nil {
			return fmt.Errorf("cpu %d: %w", i, err)
		}
	}
	return nil
}

// keyBytes encodes key (a typedArg copy) for m: []byte as is, nil for
// a map without keys (queues, stacks, bloom filters), else under the
// rules above.
func (m *Map) keyBytes(key any) ([]byte, error) {
	if key == nil && m.info.KeySize == 0 {
		return nil, nil
	}
	if k, ok := key.([]byte); ok {
		if len(k) != int(m.info.KeySize) {
			return nil, errKeySize
		}
		return k, nil
	}
	return marshal(key, int(m.info.KeySize), errKeySize, "key")
}

// valueBytes encodes value (a typedArg copy) for an update of m into the
// exchange format (ValueBufferSize bytes).
func (m *Map) valueBytes(value any) ([]byte, error) {
	if m.info.Type.perCPU() {
		if v, ok := value.([]byte); ok && len(v) == m.ValueBufferSize() {
			return v, nil
		}
		buf := make([]byte, m.ValueBufferSize())
		if err := marshalPerCPU(value, int(m.info.ValueSize), buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	if p, ok := value.(*Program); ok && m.info.Type == ProgArray {
		if p == nil {
			return nil, errNilValue
		}
		return binary.NativeEndian.AppendUint32(nil, uint32(p.fd)), nil
	}
	if mm, ok := value.(*Map); ok && (m.info.Type == ArrayOfMaps || m.info.Type == HashOfMaps) {
		if mm == nil {
			return nil, errNilValue
		}
		return binary.NativeEndian.AppendUint32(nil, uint32(mm.fd)), nil
	}
	return marshal(value, int(m.info.ValueSize), errValueSize, "value")
}

// readValue runs read (a lookup into a buffer of ValueBufferSize bytes)
// and decodes the result into out (a typedArg copy).
func (m *Map) readValue(out any, read func([]byte) error) error {
	if out == nil {
		return errNilValue
	}
	buf := make([]byte, m.ValueBufferSize())
	if err := read(buf); err != nil {
		return err
	}
	if m.info.Type.perCPU() {
		return unmarshalPerCPU(out, int(m.info.ValueSize), buf)
	}
	return unmarshal(out, buf, errValueSize, "value")
}

// readKey is readValue for keys (NextKey).
func (m *Map) readKey(out any, read func([]byte) error) error {
	if out == nil {
		return errNilValue
	}
	buf := make([]byte, m.info.KeySize)
	if err := read(buf); err != nil {
		return err
	}
	return unmarshal(out, buf, errKeySize, "key")
}

// Escape analysis and typed arguments. The []byte path must not allocate,
// yet a Go []byte passed as an any is boxed by the caller, on the heap if
// the callee may keep the any itself. The typed path calls user methods
// (MarshalBinary) and reflection, which the compiler assumes keep their
// argument. So the methods hand typed arguments to the typed path hidden
// from escape analysis (hide), and the typed path first copies what the
// argument points at (the box of a value, the target of a pointer) to the
// heap (typedArg) and works only on that copy, writing results back into
// the caller's memory at the end (writeBack). What that object points to
// in turn must be on the heap already: keepContents tells the compiler so
// for every typed argument. No caller memory that may be on its stack
// ever reaches user code, reflection's storage or the connection.

// contentSink is never written: keepContents's store is never executed.
var (
	contentSink []byte
	contentLive bool
)

// keepContents makes escape analysis assume that everything v points to
// (the contents of its box or of its target) is kept, so that callers
// allocate it on the heap; v's own box or target may stay on their stack.
func keepContents(v any) {
	if contentLive {
		contentSink, _ = v.([]byte)
	}
}

// hide returns *p, an interface value whose box or target escape analysis
// no longer traces to the caller (see above). Only typedArg may use it.
func hide(p *any) any {
	x := uintptr(unsafe.Pointer(p))
	return **(**any)(unsafe.Pointer(&x))
}

// typedArg returns a copy of v (from hide) whose box or target is on the
// heap: a pointer to a new copy of the target for a pointer, a new box
// for a value. unsafe.Pointer is returned as is (it is only read and
// written through during the call, never kept). Maps, channels,
// functions and other pointer-shaped values cannot be copied and are
// ErrInvalid.
func typedArg(v any, what string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch p := v.(type) {
	case *Program, *Map:
		return p, nil // a program array's or map of maps' value; always on the heap
	}
	t := reflect.TypeOf(v)
	switch t.Kind() {
	case reflect.UnsafePointer:
		return v, nil
	case reflect.Pointer:
		src := reflect.ValueOf(v)
		if src.IsNil() {
			return nil, errNilValue
		}
		dst := reflect.New(t.Elem())
		dst.Elem().Set(src.Elem())
		return dst.Interface(), nil
	case reflect.Map, reflect.Chan, reflect.Func:
		return nil, fmt.Errorf("%w: %s %s: not a fixed-size value", ErrInvalid, what, t)
	}
	if pointerShaped(t) {
		return nil, fmt.Errorf("%w: %s %s: a single-pointer value: pass a pointer to it", ErrInvalid, what, t)
	}
	dst := reflect.New(t).Elem()
	dst.Set(reflect.ValueOf(v))
	return dst.Interface(), nil
}

// writeBack copies a typedArg copy's target back into the caller's
// (orig, from hide), for outputs passed as pointers.
func writeBack(orig, cp any) {
	if orig == nil || cp == nil || reflect.TypeOf(orig).Kind() != reflect.Pointer {
		return
	}
	reflect.ValueOf(orig).Elem().Set(reflect.ValueOf(cp).Elem())
}

// pointerShaped reports whether t's values are stored in an interface
// directly (a single pointer) rather than boxed.
func pointerShaped(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Chan, reflect.Func:
		return true
	case reflect.Struct:
		return t.NumField() == 1 && pointerShaped(t.Field(0).Type)
	case reflect.Array:
		return t.Len() == 1 && pointerShaped(t.Elem())
	}
	return false
}

// typedArgs runs typedArg on a key and a value (from hide).
func typedArgs(key, value any) (k, v any, err error) {
	if k, err = typedArg(key, "key"); err != nil {
		return nil, nil, err
	}
	if v, err = typedArg(value, "value"); err != nil {
		return nil, nil, err
	}
	return k, v, nil
}

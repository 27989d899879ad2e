// Package btfvalue turns map keys and values into typed values and back,
// by their BTF types, as bpftool's btf_dumper prints them: integers as
// numbers, bools as true/false, enums by name, char arrays as strings,
// structs and unions as objects in member order (bitfields included),
// arrays as lists, data sections as objects of their variables. Types are
// cilium/ebpf's btf package's (parsed by it from the daemon's BTF objects);
// this package only walks them over bytes.
//
// Decode(t, b) returns a Value that marshals to JSON (encoding/json keeps
// struct member order); Encode(t, json) is its inverse: JSON in, the same
// bytes out for every value Decode printed (padding and unnamed bits are
// written as zero, as the compiler and the kernel's zero-initialised maps
// leave them). Integers are exact up to 64 bits (JSON numbers are written
// without floating point); 128-bit integers are hex strings "0x...".
//
// Encode accepts what Decode prints and a little more: a number or a
// "0x..." string for any integer, an enum's number, a list for a char
// array, lists and objects shorter than their type (the rest is zero).
// Unknown struct members, too many elements, numbers out of a field's
// range and more than one member of a union are errors (ErrValue).
//
// Byte order is the host's (x86-64: little-endian), as map contents are.
// Functions here are pure and safe for concurrent use.
package btfvalue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
)

var le = binary.LittleEndian

// ErrValue is wrapped by every error of Encode and Decode.
var ErrValue = errors.New("btfvalue")

func errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrValue, fmt.Sprintf(format, args...))
}

// Value is a decoded key or value: nil, bool, Number, string, []Value or
// Object. It marshals to JSON with encoding/json.
type Value = any

// Number is an exact integer or float as JSON writes it.
type Number = json.Number

// Field is one member of an Object.
type Field struct {
	Name  string
	Value Value
}

// Object is a struct, union or data section: its members in order.
type Object []Field

// MarshalJSON writes o's members in order.
func (o Object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Name)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// maxDepth bounds nesting (BTF from a client may be deep or cyclic
// through pointers; pointers are not followed, but typedef chains are).
const maxDepth = 64

// Decode returns the value of type t in b, which must be exactly t's size
// (ErrValue otherwise, or for a type that has no value: void, functions).
func Decode(t btf.Type, b []byte) (Value, error) {
	n, err := btf.Sizeof(t)
	if err != nil {
		return nil, errorf("size of %v: %v", t, err)
	}
	if n != len(b) {
		return nil, errorf("%d bytes for a %d-byte %v", len(b), n, t)
	}
	return decode(t, b, 0)
}

func decode(t btf.Type, b []byte, depth int) (Value, error) {
	if depth > maxDepth {
		return nil, errorf("types nested deeper than %d", maxDepth)
	}
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		return decodeInt(t, b)
	case *btf.Enum:
		v := readUint(b[:t.Size])
		if t.Signed {
			v = uint64(signExtend(v, int(t.Size)*8))
		}
		for _, e := range t.Values {
			if e.Value == v {
				return e.Name, nil
			}
		}
		if t.Signed {
			return Number(strconv.FormatInt(int64(v), 10)), nil
		}
		return Number(strconv.FormatUint(v, 10)), nil
	case *btf.Pointer:
		return Number(strconv.FormatUint(readUint(b), 10)), nil
	case *btf.Float:
		switch len(b) {
		case 4:
			return Number(strconv.FormatFloat(float64(math.Float32frombits(le.Uint32(b))), 'g', -1, 32)), nil
		case 8:
			return Number(strconv.FormatFloat(math.Float64frombits(le.Uint64(b)), 'g', -1, 64)), nil
		}
		return "0x" + hexLE(b), nil
	case *btf.Array:
		return decodeArray(t, b, depth)
	case *btf.Struct:
		return decodeMembers(t.Members, b, false, depth)
	case *btf.Union:
		return decodeMembers(t.Members, b, true, depth)
	case *btf.Datasec:
		var o Object
		for _, v := range t.Vars {
			vr, ok := v.Type.(*btf.Var)
			if !ok || int(v.Offset)+int(v.Size) > len(b) {
				continue
			}
			val, err := decode(vr.Type, b[v.Offset:v.Offset+v.Size], depth+1)
			if err != nil {
				return nil, err
			}
			o = append(o, Field{vr.Name, val})
		}
		return o, nil
	case *btf.Var:
		return decode(t.Type, b, depth+1)
	}
	return nil, errorf("no value of type %v", t)
}

// readUint reads up to 8 little-endian bytes.
func readUint(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func signExtend(v uint64, bits int) int64 {
	if bits >= 64 {
		return int64(v)
	}
	s := 64 - bits
	return int64(v<<s) >> s
}

// hexLE formats little-endian bytes as a big-endian hex number.
func hexLE(b []byte) string {
	var sb strings.Builder
	for i := len(b) - 1; i >= 0; i-- {
		fmt.Fprintf(&sb, "%02x", b[i])
	}
	return sb.String()
}

func decodeInt(t *btf.Int, b []byte) (Value, error) {
	if t.Size > 8 {
		return "0x" + hexLE(b), nil
	}
	v := readUint(b)
	switch t.Encoding {
	case btf.Bool:
		return v != 0, nil
	case btf.Signed:
		return Number(strconv.FormatInt(signExtend(v, int(t.Size)*8), 10)), nil
	}
	return Number(strconv.FormatUint(v, 10)), nil
}

// isChar reports whether t is a one-byte character type.
func isChar(t btf.Type) bool {
	i, ok := btf.UnderlyingType(t).(*btf.Int)
	return ok && i.Size == 1 && (i.Encoding == btf.Char || i.Name == "char" || i.Name == "signed char" || i.Name == "unsigned char")
}

// printableString returns the string in b if b holds printable characters
// followed only by NULs (at least one), as bpftool prints char arrays.
func printableString(b []byte) (string, bool) {
	end := bytes.IndexByte(b, 0)
	if end < 0 {
		return "", false
	}
	for _, c := range b[:end] {
		if c < 0x20 || c > 0x7e {
			return "", false
		}
	}
	for _, c := range b[end:] {
		if c != 0 {
			return "", false
		}
	}
	return string(b[:end]), true
}

func decodeArray(t *btf.Array, b []byte, depth int) (Value, error) {
	es, err := btf.Sizeof(t.Type)
	if err != nil {
		return nil, errorf("size of %v: %v", t.Type, err)
	}
	if isChar(t.Type) {
		if s, ok := printableString(b); ok {
			return s, nil
		}
	}
	out := make([]Value, 0, t.Nelems)
	for i := 0; i < int(t.Nelems) && (i+1)*es <= len(b); i++ {
		v, err := decode(t.Type, b[i*es:(i+1)*es], depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// decodeMembers decodes a struct's or union's members; anonymous struct
// and union members are inlined, as C names their fields.
func decodeMembers(members []btf.Member, b []byte, union bool, depth int) (Object, error) {
	o := Object{}
	for _, m := range members {
		off := int(m.Offset) / 8
		if m.BitfieldSize > 0 {
			if m.Name == "" {
				continue // unnamed padding bits
			}
			v, err := readBits(m, b)
			if err != nil {
				return nil, err
			}
			o = append(o, Field{m.Name, v})
			continue
		}
		sz, err := btf.Sizeof(m.Type)
		if err != nil {
			return nil, errorf("size of %s: %v", m.Name, err)
		}
		if off+sz > len(b) || m.Offset%8 != 0 {
			return nil, errorf("member %s out of the type", m.Name)
		}
		v, err := decode(m.Type, b[off:off+sz], depth+1)
		if err != nil {
			return nil, err
		}
		if m.Name == "" {
			if inner, ok := v.(Object); ok {
				o = append(o, inner...)
				continue
			}
		}
		o = append(o, Field{m.Name, v})
	}
	return o, nil
}

// bitfield returns a bitfield member's underlying integer.
func bitfield(m btf.Member) (*btf.Int, *btf.Enum) {
	switch t := btf.UnderlyingType(m.Type).(type) {
	case *btf.Int:
		return t, nil
	case *btf.Enum:
		return nil, t
	}
	return nil, nil
}

func readBits(m btf.Member, b []byte) (Value, error) {
	bits := int(m.BitfieldSize)
	start := int(m.Offset)
	if bits > 64 || start+bits > len(b)*8 {
		return nil, errorf("bitfield %s out of the type", m.Name)
	}
	var v uint64
	for i := 0; i < bits; i++ {
		p := start + i
		if b[p/8]>>(p%8)&1 != 0 {
			v |= 1 << i
		}
	}
	it, et := bitfield(m)
	switch {
	case it != nil && it.Encoding == btf.Signed:
		return Number(strconv.FormatInt(signExtend(v, bits), 10)), nil
	case it != nil && it.Encoding == btf.Bool:
		return v != 0, nil
	case et != nil:
		for _, e := range et.Values {
			if e.Value == v {
				return e.Name, nil
			}
		}
	}
	return Number(strconv.FormatUint(v, 10)), nil
}

// Encode returns the bytes of type t holding the JSON value text.
func Encode(t btf.Type, text []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errorf("JSON: %v", err)
	}
	if dec.More() {
		return nil, errorf("JSON: more than one value")
	}
	return EncodeValue(t, v)
}

// EncodeValue is Encode of a value decoded by encoding/json with
// UseNumber (or made by Decode).
func EncodeValue(t btf.Type, v any) ([]byte, error) {
	n, err := btf.Sizeof(t)
	if err != nil {
		return nil, errorf("size of %v: %v", t, err)
	}
	b := make([]byte, n)
	if err := encode(t, v, b, 0, ""); err != nil {
		return nil, err
	}
	return b, nil
}

func encode(t btf.Type, v any, b []byte, depth int, path string) error {
	if depth > maxDepth {
		return errorf("types nested deeper than %d", maxDepth)
	}
	where := func() string { return at(path) }
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		if t.Encoding == btf.Bool {
			if x, ok := v.(bool); ok {
				if x {
					b[0] = 1
				}
				return nil
			}
		}
		return putInt(b, v, t.Encoding == btf.Signed, path)
	case *btf.Enum:
		if s, ok := v.(string); ok && !strings.HasPrefix(s, "0x") {
			for _, e := range t.Values {
				if e.Name == s {
					putUint(b, e.Value)
					return nil
				}
			}
			return errorf("%s%q is not a value of %v", where(), s, t)
		}
		return putInt(b, v, t.Signed, path)
	case *btf.Pointer:
		return putInt(b, v, false, path)
	case *btf.Float:
		num, ok := v.(Number)
		if !ok {
			return errorf("%swant a number, got %s", where(), kind(v))
		}
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil {
			return errorf("%s%v", where(), err)
		}
		switch len(b) {
		case 4:
			le.PutUint32(b, math.Float32bits(float32(f)))
		case 8:
			le.PutUint64(b, math.Float64bits(f))
		default:
			return errorf("%s%d-byte floats are not supported", where(), len(b))
		}
		return nil
	case *btf.Array:
		es, err := btf.Sizeof(t.Type)
		if err != nil {
			return errorf("size of %v: %v", t.Type, err)
		}
		if s, ok := v.(string); ok && isChar(t.Type) {
			if len(s) > len(b) {
				return errorf("%s%d bytes do not fit in char[%d]", where(), len(s), len(b))
			}
			copy(b, s)
			return nil
		}
		list, ok := v.([]any)
		if !ok {
			return errorf("%swant a list, got %s", where(), kind(v))
		}
		if len(list) > int(t.Nelems) {
			return errorf("%s%d elements for an array of %d", where(), len(list), t.Nelems)
		}
		for i, e := range list {
			if err := encode(t.Type, e, b[i*es:(i+1)*es], depth+1, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case *btf.Struct:
		return encodeMembers(t.Members, v, b, false, depth, path)
	case *btf.Union:
		return encodeMembers(t.Members, v, b, true, depth, path)
	case *btf.Datasec:
		obj, ok := asMap(v)
		if !ok {
			return errorf("%swant an object, got %s", where(), kind(v))
		}
		seen := 0
		for _, vs := range t.Vars {
			vr, ok := vs.Type.(*btf.Var)
			if !ok {
				continue
			}
			x, present := obj[vr.Name]
			if !present {
				continue
			}
			seen++
			if int(vs.Offset)+int(vs.Size) > len(b) {
				return errorf("%sout of the section", at(join(path, vr.Name)))
			}
			if err := encode(vr.Type, x, b[vs.Offset:vs.Offset+vs.Size], depth+1, join(path, vr.Name)); err != nil {
				return err
			}
		}
		if seen != len(obj) {
			return errorf("%sunknown variables in %v", where(), keys(obj))
		}
		return nil
	case *btf.Var:
		return encode(t.Type, v, b, depth+1, path)
	}
	return errorf("%sno value of type %v", where(), t)
}

// encodeMembers writes the members of a struct or union named in v (an
// object); anonymous struct and union members take their fields from v
// itself, as decodeMembers inlines them.
func encodeMembers(members []btf.Member, v any, b []byte, union bool, depth int, path string) error {
	obj, ok := asMap(v)
	if !ok {
		return errorf("%swant an object, got %s", at(path), kind(v))
	}
	used := map[string]bool{}
	if err := encodeInto(members, obj, b, union, depth, path, used); err != nil {
		return err
	}
	if len(used) != len(obj) {
		var unknown []string
		for _, k := range keys(obj) {
			if !used[k] {
				unknown = append(unknown, k)
			}
		}
		return errorf("%sunknown members %q", at(path), unknown)
	}
	return nil
}

func encodeInto(members []btf.Member, obj map[string]any, b []byte, union bool, depth int, path string, used map[string]bool) error {
	before := len(used)
	for _, m := range members {
		if m.Name == "" && m.BitfieldSize == 0 {
			var inner []btf.Member
			var innerUnion bool
			switch t := btf.UnderlyingType(m.Type).(type) {
			case *btf.Struct:
				inner = t.Members
			case *btf.Union:
				inner, innerUnion = t.Members, true
			default:
				continue
			}
			sz, err := btf.Sizeof(m.Type)
			off := int(m.Offset) / 8
			if err != nil || off+sz > len(b) {
				return errorf("%sanonymous member out of the type", at(path))
			}
			if err := encodeInto(inner, obj, b[off:off+sz], innerUnion, depth+1, path, used); err != nil {
				return err
			}
			continue
		}
		x, present := obj[m.Name]
		if !present || m.Name == "" {
			continue
		}
		used[m.Name] = true
		p := join(path, m.Name)
		if m.BitfieldSize > 0 {
			if err := writeBits(m, x, b, p); err != nil {
				return err
			}
			continue
		}
		sz, err := btf.Sizeof(m.Type)
		off := int(m.Offset) / 8
		if err != nil || off+sz > len(b) || m.Offset%8 != 0 {
			return errorf("%sout of the type", at(p))
		}
		if err := encode(m.Type, x, b[off:off+sz], depth+1, p); err != nil {
			return err
		}
	}
	if union && len(used)-before > 1 {
		return errorf("%sa union takes one member, got %d", at(path), len(used)-before)
	}
	return nil
}

func writeBits(m btf.Member, x any, b []byte, path string) error {
	bits := int(m.BitfieldSize)
	start := int(m.Offset)
	if bits > 64 || start+bits > len(b)*8 {
		return errorf("%sbitfield out of the type", at(path))
	}
	it, et := bitfield(m)
	var v uint64
	switch {
	case it != nil && it.Encoding == btf.Bool && isBool(x):
		if x.(bool) {
			v = 1
		}
	case et != nil && isString(x):
		found := false
		for _, e := range et.Values {
			if e.Name == x.(string) {
				v, found = e.Value, true
			}
		}
		if !found {
			return errorf("%s%q is not a value of %v", at(path), x, et)
		}
	default:
		var tmp [8]byte
		signed := it != nil && it.Encoding == btf.Signed
		if err := putInt(tmp[:], x, signed, path); err != nil {
			return err
		}
		v = le.Uint64(tmp[:])
		if signed {
			s := int64(v)
			if bits < 64 && (s < -(1<<(bits-1)) || s >= 1<<(bits-1)) {
				return errorf("%s%d does not fit in %d signed bits", at(path), s, bits)
			}
			v &= 1<<bits - 1
		} else if bits < 64 && v>>bits != 0 {
			return errorf("%s%d does not fit in %d bits", at(path), v, bits)
		}
	}
	for i := 0; i < bits; i++ {
		p := start + i
		if v>>i&1 != 0 {
			b[p/8] |= 1 << (p % 8)
		} else {
			b[p/8] &^= 1 << (p % 8)
		}
	}
	return nil
}

// at prefixes a message with the path of the value it is about ("" for
// the whole value).
func at(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

// join names a member of the value at path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// asMap returns an object value (decoded JSON, or an Object) as a map.
func asMap(v any) (map[string]any, bool) {
	switch o := v.(type) {
	case map[string]any:
		return o, true
	case Object:
		m := make(map[string]any, len(o))
		for _, f := range o {
			m[f.Name] = f.Value
		}
		return m, true
	}
	return nil, false
}

func isBool(x any) bool   { _, ok := x.(bool); return ok }
func isString(x any) bool { _, ok := x.(string); return ok }

// putUint writes v little-endian into b (truncated to len(b)).
func putUint(b []byte, v uint64) {
	for i := range b {
		if i < 8 {
			b[i] = byte(v >> (8 * i))
		} else {
			b[i] = 0
		}
	}
}

// putInt writes the integer x (a Number, or a "0x..." string) into b,
// checking it fits len(b) bytes, signed or not.
func putInt(b []byte, x any, signed bool, path string) error {
	var n *big.Int
	switch v := x.(type) {
	case Number:
		var ok bool
		if n, ok = new(big.Int).SetString(string(v), 10); !ok {
			return errorf("%s%s is not an integer", at(path), v)
		}
	case string:
		h, found := strings.CutPrefix(strings.ToLower(v), "0x")
		var ok bool
		if n, ok = new(big.Int).SetString(h, 16); !found || !ok {
			return errorf("%swant a number or a \"0x...\" string, got %q", at(path), v)
		}
	case bool:
		n = big.NewInt(0)
		if v {
			n = big.NewInt(1)
		}
	default:
		return errorf("%swant a number, got %s", at(path), kind(x))
	}
	bits := uint(len(b) * 8)
	lo, hi := new(big.Int), new(big.Int).Lsh(big.NewInt(1), bits) // unsigned [0, 2^bits)
	if signed {
		lo = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), bits-1))
		hi = new(big.Int).Lsh(big.NewInt(1), bits-1)
	}
	if n.Cmp(lo) < 0 || n.Cmp(hi) >= 0 {
		if !(signed && n.Sign() >= 0 && n.Cmp(new(big.Int).Lsh(big.NewInt(1), bits)) < 0 && isHex(x)) {
			return errorf("%s%s does not fit in %d-bit %s", at(path), n, bits, map[bool]string{true: "signed", false: "unsigned"}[signed])
		}
	}
	if n.Sign() < 0 {
		n = new(big.Int).Add(n, new(big.Int).Lsh(big.NewInt(1), bits))
	}
	be := n.Bytes()
	for i := range b {
		b[i] = 0
	}
	for i := 0; i < len(be) && i < len(b); i++ {
		b[i] = be[len(be)-1-i]
	}
	return nil
}

// isHex reports whether x was written as a "0x" string (which may give a
// signed field's bits directly).
func isHex(x any) bool {
	s, ok := x.(string)
	return ok && strings.HasPrefix(strings.ToLower(s), "0x")
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a bool"
	case Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any, Object:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

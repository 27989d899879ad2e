package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// flatValue has no padding: read and written in place.
type flatValue struct {
	Packets uint64
	Bytes   uint64
}

// paddedValue has 4 bytes of padding in Go, none in its encoding (12
// bytes, as encoding/binary and cilium/ebpf write it).
type paddedValue struct {
	A uint32
	B uint64
}

// marshalKey encodes itself (big-endian, to tell it from the default).
type marshalKey struct{ n uint32 }

func (k marshalKey) MarshalBinary() ([]byte, error) {
	return binary.BigEndian.AppendUint32(nil, k.n), nil
}

func (k *marshalKey) UnmarshalBinary(b []byte) error {
	if len(b) != 4 {
		return fmt.Errorf("marshalKey: %d bytes", len(b))
	}
	k.n = binary.BigEndian.Uint32(b)
	return nil
}

// deepKey grows the stack in MarshalBinary and collects garbage: a key
// the caller keeps on its stack must be read correctly all the same.
type deepKey struct {
	Name [4]byte
	Tail []byte
}

func recurse(n int) int {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return recurse(n-1) + int(pad[n%256]&1)
}

func (k deepKey) MarshalBinary() ([]byte, error) {
	recurse(2000) // ~0.5 MB of stack: the goroutine's stack moves
	runtime.GC()
	return append(k.Name[:len(k.Name):len(k.Name)], k.Tail...), nil
}

// typedCase runs the same typed calls on a map (bpfd or the kernel's,
// through cilium/ebpf) and returns what it observed: raw bytes read back
// with []byte and the typed results, formatted.
type typedCase struct {
	name string
	spec MapSpec
	run  func(t *testing.T, m mapOps) []string
}

// rawLookup reads key's value as bytes.
func rawLookup(t *testing.T, m mapOps, key []byte, size int) string {
	t.Helper()
	v := make([]byte, size)
	if err := m.Lookup(key, v); err != nil {
		t.Fatalf("raw lookup %x: %v", key, err)
	}
	return fmt.Sprintf("raw %x", v)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var typedCases = []typedCase{
	{
		name: "hash u32 key, flat struct value",
		spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 16, MaxEntries: 8},
		run: func(t *testing.T, m mapOps) []string {
			must(t, m.Update(uint32(7), flatValue{Packets: 3, Bytes: 84}, UpdateAny))
			must(t, m.Update(ptr(uint32(8)), &flatValue{Packets: 1, Bytes: 2}, UpdateAny))
			var v flatValue
			must(t, m.Lookup(uint32(7), &v))
			var k uint32
			must(t, m.NextKey(nil, &k))
			var next uint32
			must(t, m.NextKey(k, &next))
			var gone flatValue
			must(t, m.LookupAndDelete(uint32(8), &gone))
			err := m.Lookup(uint32(8), &v)
			must(t, m.Delete(ptr(uint32(7))))
			err2 := m.Lookup(uint32(7), &v)
			return []string{rawLookupOr(t, m), fmt.Sprintf("%+v", v), fmt.Sprintf("keys %v", sortedPair(k, next)),
				fmt.Sprintf("%+v", gone), sentinelOf(err), sentinelOf(err2)}
		},
	},
	{
		name: "padded struct, array and string keys",
		spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 12, MaxEntries: 8},
		run: func(t *testing.T, m mapOps) []string {
			must(t, m.Update([4]byte{1, 2, 3, 4}, paddedValue{A: 1, B: 1 << 40}, UpdateAny))
			must(t, m.Update("abcd", &paddedValue{A: 2, B: 3}, UpdateNoExist))
			var v paddedValue
			must(t, m.Lookup("abcd", &v))
			var k [4]byte
			must(t, m.Lookup(&[4]byte{1, 2, 3, 4}, &v))
			var s string
			must(t, m.NextKey(nil, &s))
			var b []byte
			must(t, m.NextKey(nil, &b))
			k = [4]byte(b)
			ok := s == string(k[:]) && (s == "abcd" || s == "\x01\x02\x03\x04")
			return []string{rawLookup(t, m, []byte{1, 2, 3, 4}, 12), rawLookup(t, m, []byte("abcd"), 12),
				fmt.Sprintf("%+v", v), fmt.Sprintf("first key as string and bytes agree: %v", ok)}
		},
	},
	{
		name: "BinaryMarshaler keys, a key on the caller's stack",
		spec: MapSpec{Type: Hash, KeySize: 6, ValueSize: 8, MaxEntries: 8},
		run: func(t *testing.T, m mapOps) []string {
			must(t, m.Update(deepKey{Name: [4]byte{'a', 'b', 'c', 'd'}, Tail: []byte{9, 9}}, uint64(5), UpdateAny))
			var v uint64
			must(t, m.Lookup(&deepKey{Name: [4]byte{'a', 'b', 'c', 'd'}, Tail: []byte{9, 9}}, &v))
			return []string{rawLookup(t, m, []byte{'a', 'b', 'c', 'd', 9, 9}, 8), fmt.Sprint(v)}
		},
	},
	{
		name: "BinaryMarshaler and BinaryUnmarshaler",
		spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8},
		run: func(t *testing.T, m mapOps) []string {
			must(t, m.Update(marshalKey{0x01020304}, marshalKey{5}, UpdateAny))
			var k, v marshalKey
			must(t, m.NextKey(nil, &k))
			must(t, m.Lookup(&k, &v))
			return []string{rawLookup(t, m, []byte{1, 2, 3, 4}, 4), fmt.Sprintf("%x %x", k.n, v.n)}
		},
	},
	{
		name: "per-CPU values as slices",
		spec: MapSpec{Type: PercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 2},
		run: func(t *testing.T, m mapOps) []string {
			n := PossibleCPUs()
			vals := make([]uint32, n)
			for i := range vals {
				vals[i] = uint32(10 + i)
			}
			must(t, m.Update(uint32(0), vals, UpdateAny))
			must(t, m.Update(uint32(1), []uint32{7}, UpdateAny)) // fewer than CPUs: the rest zero
			var got []uint32
			must(t, m.Lookup(uint32(0), &got))
			into := make([]uint32, n)
			must(t, m.Lookup(uint32(1), into))
			ptrs := []*uint32{}
			must(t, m.Lookup(uint32(0), &ptrs))
			short := make([]uint32, n+1)
			err := m.Lookup(uint32(0), short)
			// (No raw read: cilium/ebpf reads a []byte as one byte per
			// CPU; bpfd's []byte of ValueBufferSize is the whole buffer.)
			return []string{fmt.Sprint(got), fmt.Sprint(into), fmt.Sprint(*ptrs[n-1]),
				fmt.Sprint(err != nil && errors.Is(err, ErrInvalid) || err != nil)}
		},
	},
}

func ptr[T any](v T) *T { return &v }

func rawLookupOr(t *testing.T, m mapOps) string {
	t.Helper()
	v := make([]byte, 16)
	if err := m.Lookup(u32(7), v); err != nil {
		return sentinelOf(err)
	}
	return fmt.Sprintf("raw %x", v)
}

func sortedPair(a, b uint32) []uint32 { s := []uint32{a, b}; slices.Sort(s); return s }

func sentinelOf(err error) string {
	for _, e := range []unix.Errno{unix.ENOENT, unix.EINVAL} {
		if errors.Is(err, e) {
			return "errno " + unix.ErrnoName(e)
		}
	}
	return fmt.Sprint(err)
}

// TestTypedValues: keys and values of Go types give the same bytes in a
// bpfd map as cilium/ebpf gives in a kernel map (the oracle), and read
// back the same.
func TestTypedValues(t *testing.T) {
	bpfd := bpfdBackend(t)
	var kernel *backend
	if ok, why := kernelAvailable(); ok {
		kb := kernelBackend(t)
		kernel = &kb
	} else {
		t.Logf("kernel oracle skipped: %s", why)
	}
	for _, tc := range typedCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := bpfd.create(t, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got := tc.run(t, m)
			t.Logf("bpfd: %q", got)
			if kernel == nil {
				return
			}
			km, err := kernel.create(t, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer km.Close()
			want := tc.run(t, km)
			if !slices.Equal(got, want) {
				t.Fatalf("bpfd %q\nkernel %q", got, want)
			}
		})
	}
}

// TestTypedErrors: values that do not fit are ErrInvalid naming the type
// and sizes, before anything is sent.
func TestTypedErrors(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	pc := newTestMap(t, c, MapSpec{Type: PercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err := m.Update(uint32(1), uint64(1), UpdateAny); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"key too long", m.Update(uint64(1), uint64(1), UpdateAny), "uint64 encodes to 8 bytes, want 4"},
		{"value too short", m.Update(uint32(1), uint32(1), UpdateAny), "uint32 encodes to 4 bytes, want 8"},
		{"out too short", m.Lookup(uint32(1), new(uint32)), "encodes to 4 bytes, want 8"},
		{"nil key", m.Delete(nil), "nil key or value"},
		{"nil pointer", m.Lookup(uint32(1), (*uint64)(nil)), "nil key or value"},
		{"map value", m.Update(uint32(1), map[int]int{}, UpdateAny), "not a fixed-size value"},
		{"not encodable", m.Update(uint32(1), struct{ P *int }{}, UpdateAny), "pass a pointer"},
		{"value not a pointer", m.Lookup(uint32(1), uint64(0)), ""},
		{"per-CPU needs a slice", pc.Update(uint32(1), uint64(1), UpdateAny), "want a slice"},
		{"too many CPUs", pc.Update(uint32(1), make([]uint64, PossibleCPUs()+1), UpdateAny), "possible CPUs"},
		{"program into a hash", m.Update(uint32(1), &Program{}, UpdateAny), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, ErrInvalid) {
				t.Fatalf("%v, want ErrInvalid", tc.err)
			}
			if tc.want != "" && !bytes.Contains([]byte(tc.err.Error()), []byte(tc.want)) {
				t.Fatalf("%q does not say %q", tc.err, tc.want)
			}
		})
	}
}

// TestTypedIterate walks a map with typed keys and values.
func TestTypedIterate(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 16, MaxEntries: 64})
	for i := range uint32(40) {
		if err := m.Update(i, flatValue{Packets: uint64(i), Bytes: uint64(i) * 60}, UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	it := m.Iterate()
	var k uint32
	var v flatValue
	seen := map[uint32]bool{}
	for it.Next(&k, &v) {
		if v.Packets != uint64(k) || v.Bytes != uint64(k)*60 || seen[k] {
			t.Fatalf("key %d value %+v (seen %v)", k, v, seen[k])
		}
		seen[k] = true
	}
	if err := it.Err(); err != nil || len(seen) != 40 {
		t.Fatalf("walked %d keys, err %v", len(seen), err)
	}
	// Keys only, and a per-CPU map's values as slices.
	pc := newTestMap(t, c, MapSpec{Type: PercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 3})
	if err := pc.Update(uint32(2), []uint64{1, 2}, UpdateAny); err != nil {
		t.Fatal(err)
	}
	it = pc.Iterate()
	var vals []uint64
	n := 0
	for it.Next(&k, &vals) {
		if want := k == 2 && vals[0] == 1 && (len(vals) < 2 || vals[1] == 2) || k != 2 && vals[0] == 0; !want || len(vals) != PossibleCPUs() {
			t.Fatalf("key %d values %v", k, vals)
		}
		n++
	}
	if it.Err() != nil || n != 3 {
		t.Fatalf("%d elements, %v", n, it.Err())
	}
	it = pc.Iterate()
	n = 0
	for it.Next(&k, nil) {
		n++
	}
	if it.Err() != nil || n != 3 {
		t.Fatalf("keys only: %d, %v", n, it.Err())
	}
	it = m.Iterate()
	if it.Next(&k, new(uint32)) || !errors.Is(it.Err(), ErrInvalid) {
		t.Fatalf("short value: %v", it.Err())
	}
}

// TestTypedProgArray: a *Program of the same Conn is a program array's
// value, as in cilium/ebpf.
func TestTypedProgArray(t *testing.T) {
	c := newTestConn(t)
	pa := newTestMap(t, c, MapSpec{Type: ProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := pa.Update(uint32(1), p, UpdateAny); err != nil {
		t.Fatal(err)
	}
	var id uint32
	if err := pa.Lookup(uint32(1), &id); err != nil {
		t.Fatal(err)
	}
	if info, err := p.Info(); err != nil || id != info.ID {
		t.Fatalf("slot 1 holds %d, program %+v %v", id, info, err)
	}
}

// TestBytesPathNoAllocs: the []byte path of Lookup and NextKey allocates
// nothing, with the []byte passed as an any (served from the mapped
// storage, so the count is the client's alone); the benchmarks show the
// same for round trips to a daemon in another process.
func TestBytesPathNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	key, value, next := u32(1), make([]byte, 8), make([]byte, 4)
	if err := ro.Lookup(key, value); err != nil {
		t.Fatal(err)
	}
	if ro.mapped() == nil {
		t.Fatal("no mapping")
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := ro.Lookup(key, value); err != nil {
			t.Fatal(err)
		}
		if err := ro.NextKey(key, next); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per []byte Lookup+NextKey", n)
	}
}

// TestTypedKeyless: maps without keys take a nil key; a bloom filter's
// lookup tests the typed value given (an input), a queue pops into one.
func TestTypedKeyless(t *testing.T) {
	c := newTestConn(t)
	bf := newTestMap(t, c, MapSpec{Type: BloomFilter, ValueSize: 8, MaxEntries: 100})
	for i := range uint64(20) {
		if err := bf.Update(nil, i, UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	absent := 0
	for i := range uint64(40) {
		err := bf.Lookup(nil, i)
		switch {
		case i < 20 && err != nil:
			t.Fatalf("added %d: %v", i, err)
		case errors.Is(err, ErrKeyNotExist):
			absent++
		}
	}
	if absent < 10 {
		t.Fatalf("only %d of 20 never-added values absent", absent)
	}
	q := newTestMap(t, c, MapSpec{Type: Queue, ValueSize: 4, MaxEntries: 4})
	for _, v := range []uint32{7, 8} {
		if err := q.Update(nil, v, UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	var got uint32
	if err := q.LookupAndDelete(nil, &got); err != nil || got != 7 {
		t.Fatalf("pop: %d, %v", got, err)
	}
	if err := q.Lookup(nil, &got); err != nil || got != 8 {
		t.Fatalf("peek: %d, %v", got, err)
	}
}

// TestTypedMapInMap: a *Map of the same Conn is a map of maps' value, as
// in cilium/ebpf; Lookup gives the inner map's id.
func TestTypedMapInMap(t *testing.T) {
	c := newTestConn(t)
	inner := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	outer := newTestMap(t, c, MapSpec{Type: ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: inner})
	if err := outer.Update(uint32(1), inner, UpdateAny); err != nil {
		t.Fatal(err)
	}
	var id uint32
	if err := outer.Lookup(uint32(1), &id); err != nil {
		t.Fatal(err)
	}
	if info, err := inner.Info(); err != nil || id != info.ID {
		t.Fatalf("slot 1 holds %d, inner map %+v %v", id, info, err)
	}
}

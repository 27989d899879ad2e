package mapview_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

func k32(i uint32) []byte { return binary.NativeEndian.AppendUint32(nil, i) }

func newMap(t testing.TB, s maps.Spec) maps.Map {
	t.Helper()
	m, err := maps.New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// mapRO maps m's storage read-only, as a client does.
func mapRO(t testing.TB, m maps.Map) []byte {
	t.Helper()
	fd, err := m.ReadOnlyFD()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, int(m.MemoryUsage()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

var specs = []maps.Spec{
	{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 64},
	{Type: maps.TypeHash, KeySize: 13, ValueSize: 64, MaxEntries: 16},
	{Type: maps.TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 64},
	{Type: maps.TypePercpuHash, KeySize: 4, ValueSize: 12, MaxEntries: 16},
	{Type: maps.TypePercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 16},
	{Type: maps.TypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 4},
}

func key(s maps.Spec, i uint32) []byte {
	k := make([]byte, s.KeySize)
	binary.NativeEndian.PutUint32(k, i)
	return k
}

// TestViewMatchesMap checks that a mapped view answers lookups and
// iteration exactly as the map's syscall side does.
func TestViewMatchesMap(t *testing.T) {
	for _, s := range specs {
		t.Run(maps.TypeName(s.Type), func(t *testing.T) {
			m := newMap(t, s)
			vs := s.SyscallValueSize()
			for i := uint32(0); i < s.MaxEntries; i += 3 {
				v := bytes.Repeat([]byte{byte(i + 1)}, vs)
				if err := m.Update(key(s, i), v, 0); err != nil {
					t.Fatal(err)
				}
			}
			v, err := mapview.New(mapRO(t, m))
			if err != nil {
				t.Fatal(err)
			}
			if v.ValueSize() != vs {
				t.Fatalf("ValueSize %d, want %d", v.ValueSize(), vs)
			}
			got, want := make([]byte, vs), make([]byte, vs)
			for i := uint32(0); i < s.MaxEntries+2; i++ {
				k := key(s, i)
				em, ev := m.Lookup(k, want), v.Lookup(k, got)
				if (em == nil) != (ev == nil) || em == nil && !bytes.Equal(got, want) {
					t.Fatalf("key %d: map %x %v, view %x %v", i, want, em, got, ev)
				}
				if em != nil && !errors.Is(ev, mapview.ErrNotFound) {
					t.Fatalf("key %d: view %v, want ErrNotFound", i, ev)
				}
			}
			// Iteration order is the map's.
			var km, kv []byte
			nm, nv := make([]byte, s.KeySize), make([]byte, s.KeySize)
			for i := 0; ; i++ {
				em, ev := m.NextKey(km, nm), v.NextKey(kv, nv)
				if (em == nil) != (ev == nil) || em == nil && !bytes.Equal(nm, nv) {
					t.Fatalf("step %d: map %x %v, view %x %v", i, nm, em, nv, ev)
				}
				if em != nil {
					break
				}
				km, kv = bytes.Clone(nm), bytes.Clone(nv)
				if i > int(s.MaxEntries)+1 {
					t.Fatal("iteration does not end")
				}
			}
			if err := v.Lookup(key(s, 0)[:0], got); !errors.Is(err, mapview.ErrSize) {
				t.Fatalf("short key: %v", err)
			}
		})
	}
}

// TestViewConcurrent runs readers on a mapped view while writers update
// (and, for hashes, delete and re-insert) keys with values whose bytes are
// all equal: a reader must only ever see such values, of a version some
// writer wrote, or a clean miss (deleted), or give up with ErrRetry.
func TestViewConcurrent(t *testing.T) {
	for _, s := range []maps.Spec{
		{Type: maps.TypeHash, KeySize: 4, ValueSize: 64, MaxEntries: 8},
		{Type: maps.TypeArray, KeySize: 4, ValueSize: 64, MaxEntries: 8},
		{Type: maps.TypePercpuHash, KeySize: 4, ValueSize: 24, MaxEntries: 8},
	} {
		t.Run(maps.TypeName(s.Type), func(t *testing.T) {
			m := newMap(t, s)
			vs := s.SyscallValueSize()
			v, err := mapview.New(mapRO(t, m))
			if err != nil {
				t.Fatal(err)
			}
			var stop atomic.Bool
			var wg sync.WaitGroup
			var maxWritten atomic.Uint32
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, vs)
					for i := uint32(1); !stop.Load(); i++ {
						b := byte(i)
						for j := range buf {
							buf[j] = b
						}
						if maxWritten.Load() < 255 {
							maxWritten.Add(1)
						}
						k := key(s, i%4)
						if s.Type == maps.TypeHash && i%5 == 0 {
							m.Delete(k)
							continue
						}
						if err := m.Update(k, buf, maps.UpdateAny); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			var bad atomic.Int64
			var seen, retries atomic.Int64
			for r := 0; r < 2; r++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, vs)
					for n := 0; n < 20000; n++ {
						err := v.Lookup(key(s, uint32(n%4)), buf)
						switch {
						case err == nil:
							seen.Add(1)
							stride := int(s.ValueSize+7) &^ 7
							for c := 0; c < vs; c += stride {
								if !bytes.Equal(buf[c:c+int(s.ValueSize)], bytes.Repeat(buf[c:c+1], int(s.ValueSize))) {
									bad.Add(1)
								}
							}
						case errors.Is(err, mapview.ErrRetry):
							retries.Add(1)
						case errors.Is(err, mapview.ErrNotFound):
						default:
							t.Error(err)
							return
						}
					}
				}()
			}
			// Readers finish their count; then stop the writers.
			for seen.Load()+retries.Load() < 1000 && !t.Failed() {
			}
			stop.Store(true)
			wg.Wait()
			if bad.Load() != 0 {
				t.Fatalf("%d torn values seen", bad.Load())
			}
			t.Logf("%d values read, %d gave up after %d retries", seen.Load(), retries.Load(), mapview.MaxRetries)
		})
	}
}

// TestHashDefinition pins the documented hash function to known values,
// so that a change to it (which would break every client) fails here.
func TestHashDefinition(t *testing.T) {
	tests := []struct {
		name string
		seed uint64
		key  []byte
	}{
		{name: "u32", seed: 0, key: k32(1)},
		{name: "u32 seeded", seed: 0x0123456789abcdef, key: k32(1)},
		{name: "13 bytes", seed: 42, key: []byte("hello, world!")},
		{name: "16 bytes", seed: 42, key: bytes.Repeat([]byte{7}, 16)},
		{name: "1 byte", seed: 1, key: []byte{0xff}},
	}
	seen := map[uint32]string{}
	for _, tc := range tests {
		h := mapview.Hash(tc.seed, tc.key)
		// The reference: the documented definition, spelled out.
		if want := refHash(tc.seed, tc.key); h != want {
			t.Errorf("%s: Hash = %#x, definition gives %#x", tc.name, h, want)
		}
		if other, dup := seen[h]; dup {
			t.Errorf("%s and %s collide", tc.name, other)
		}
		seen[h] = tc.name
	}
}

// TestHashFixedSizes checks that the daemon's 4- and 8-byte forms
// compute Hash exactly (clients compute Hash; the daemon files entries
// with the fixed forms).
func TestHashFixedSizes(t *testing.T) {
	tests := []struct {
		name string
		seed uint64
		k    uint64
	}{
		{name: "zero", seed: 0, k: 0},
		{name: "one", seed: 0, k: 1},
		{name: "seeded", seed: 0x0123456789abcdef, k: 0xdeadbeef},
		{name: "all ones", seed: ^uint64(0), k: ^uint64(0)},
	}
	x := uint64(0x9e3779b97f4a7c15)
	for i := range 1000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		tests = append(tests, struct {
			name string
			seed uint64
			k    uint64
		}{name: fmt.Sprintf("xorshift %d", i), seed: x * 0xbf58476d1ce4e5b9, k: x})
	}
	for _, tc := range tests {
		if got, want := mapview.HashU32(tc.seed, uint32(tc.k)), mapview.Hash(tc.seed, binary.LittleEndian.AppendUint32(nil, uint32(tc.k))); got != want {
			t.Errorf("%s: HashU32 = %#x, Hash = %#x", tc.name, got, want)
		}
		if got, want := mapview.HashU64(tc.seed, tc.k), mapview.Hash(tc.seed, binary.LittleEndian.AppendUint64(nil, tc.k)); got != want {
			t.Errorf("%s: HashU64 = %#x, Hash = %#x", tc.name, got, want)
		}
	}
}

func refHash(seed uint64, key []byte) uint32 {
	mix := func(a, b uint64) uint64 {
		// The 128-bit product with math/big, independent of math/bits.
		p := new(big.Int).Mul(new(big.Int).SetUint64(a), new(big.Int).SetUint64(b))
		lo := new(big.Int).And(p, new(big.Int).SetUint64(^uint64(0))).Uint64()
		hi := new(big.Int).Rsh(p, 64).Uint64()
		return hi ^ lo
	}
	const k1, k2, k3 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db, 0x8ebc6af09c88c6e3
	h := seed ^ uint64(len(key))*k1
	for len(key) >= 8 {
		h = mix(h^binary.LittleEndian.Uint64(key), k2)
		key = key[8:]
	}
	if len(key) > 0 {
		var w [8]byte
		copy(w[:], key)
		h = mix(h^binary.LittleEndian.Uint64(w[:])^k3, k2)
	}
	h = mix(h^k1, k3)
	return uint32(h) ^ uint32(h>>32)
}

// TestParseHeaderRefuses checks header validation.
func TestParseHeaderRefuses(t *testing.T) {
	m := newMap(t, specs[0])
	good := bytes.Clone(mapRO(t, m))
	tests := []struct {
		name string
		mut  func(b []byte) []byte
	}{
		{name: "short", mut: func(b []byte) []byte { return b[:100] }},
		{name: "magic", mut: func(b []byte) []byte { b[1] = 'x'; return b }},
		{name: "version", mut: func(b []byte) []byte { b[mapview.OffVersion]++; return b }},
		{name: "header size", mut: func(b []byte) []byte { b[mapview.OffHeaderSize]++; return b }},
		{name: "zero cpus", mut: func(b []byte) []byte { binary.LittleEndian.PutUint32(b[mapview.OffNCPU:], 0); return b }},
		{name: "too many cpus", mut: func(b []byte) []byte { binary.LittleEndian.PutUint32(b[mapview.OffNCPU:], 1<<20); return b }},
		{name: "size field", mut: func(b []byte) []byte { b[mapview.OffSize]++; return b }},
		{name: "truncated", mut: func(b []byte) []byte { return b[:len(b)-4096] }},
		{name: "entries grow", mut: func(b []byte) []byte { b[mapview.OffMaxEntries+2] = 1; return b }},
		{name: "zero key", mut: func(b []byte) []byte { binary.LittleEndian.PutUint32(b[mapview.OffKeySize:], 0); return b }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := mapview.New(tc.mut(bytes.Clone(good))); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := mapview.New(good); err != nil {
		t.Fatalf("good header refused: %v", err)
	}
}

// FuzzView maps arbitrary bytes over a real region (or uses them raw) and
// runs every reader operation: nothing may panic or run without bound.
func FuzzView(f *testing.F) {
	f.Add(byte(0), uint32(4096), []byte{1, 2, 3, 4})
	f.Add(byte(1), uint32(0), []byte("BPFDMAP\x00"))
	f.Add(byte(2), uint32(4096+64), bytes.Repeat([]byte{0xff}, 64))
	f.Add(byte(3), uint32(8192), bytes.Repeat([]byte{1, 0, 0, 0}, 100))
	f.Add(byte(4), uint32(100), []byte{0, 0, 0, 0})
	templates := make([][]byte, len(specs))
	for i, s := range specs {
		m, err := maps.New(s)
		if err != nil {
			f.Fatal(err)
		}
		for j := uint32(0); j < s.MaxEntries; j += 2 {
			m.Update(key(s, j), bytes.Repeat([]byte{byte(j)}, s.SyscallValueSize()), 0)
		}
		fd, _ := m.ReadOnlyFD()
		mem, err := unix.Mmap(fd, 0, int(m.MemoryUsage()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			f.Fatal(err)
		}
		templates[i] = bytes.Clone(mem)
		unix.Munmap(mem)
		unix.Close(fd)
		m.Close()
	}
	f.Fuzz(func(t *testing.T, which byte, off uint32, data []byte) {
		var mem []byte
		if int(which) < len(templates) {
			mem = bytes.Clone(templates[which])
			o := int(off) % len(mem)
			for i, b := range data {
				if o+i >= len(mem) {
					break
				}
				mem[o+i] ^= b
			}
		} else {
			mem = data
		}
		v, err := mapview.New(mem)
		if err != nil {
			return
		}
		h := v.Header()
		val := make([]byte, v.ValueSize())
		next := make([]byte, h.KeySize)
		k := make([]byte, h.KeySize)
		for i := uint32(0); i < 8; i++ {
			if len(k) >= 4 {
				binary.NativeEndian.PutUint32(k, i)
			}
			v.Lookup(k, val)
			v.Find(k)
			v.NextKey(k, next)
		}
		// A full iteration must end within max_entries+1 steps or fail.
		var cur []byte
		for i := 0; i <= int(h.MaxEntries)+1; i++ {
			if v.NextKey(cur, next) != nil {
				break
			}
			cur = bytes.Clone(next)
		}
	})
}

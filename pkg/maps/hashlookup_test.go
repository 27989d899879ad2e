package maps

import (
	"bytes"
	"fmt"
	"testing"
)

// TestProgValue checks the program side's lookup against the syscall
// side's for every hash-family type and several key sizes: present keys
// give the value's storage (the right CPU's for per-CPU maps), absent
// keys and keys of the wrong size nil.
func TestProgValue(t *testing.T) {
	tests := []struct {
		name string
		typ  uint32
		ks   uint32
	}{
		{name: "hash u32", typ: TypeHash, ks: 4},
		{name: "hash u64", typ: TypeHash, ks: 8},
		{name: "hash 13 bytes", typ: TypeHash, ks: 13},
		{name: "hash 1 byte", typ: TypeHash, ks: 1},
		{name: "percpu hash u32", typ: TypePercpuHash, ks: 4},
		{name: "lru hash u64", typ: TypeLRUHash, ks: 8},
		{name: "lru percpu hash 6 bytes", typ: TypeLRUPercpuHash, ks: 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100
			m, err := New(Spec{Type: tc.typ, KeySize: tc.ks, ValueSize: 12, MaxEntries: 2 * n})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			h := m.(*Hash)
			key := func(i int) []byte {
				k := bytes.Repeat([]byte{byte(i)}, int(tc.ks))
				if tc.ks > 1 {
					k[0] = byte(i >> 8)
				}
				return k
			}
			for i := range n {
				for cpu := range h.l.NCPU {
					v := bytes.Repeat([]byte{byte(i + cpu)}, 12)
					if err := h.ProgUpdateOn(cpu, key(2*i), v, UpdateAny); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i := range 2 * n {
				for cpu := range h.l.NCPU {
					got := h.ProgValue(cpu, key(i))
					if i%2 == 1 {
						if got != nil {
							t.Fatalf("key %d (absent): %x", i, got)
						}
						continue
					}
					c := cpu
					if !h.percpu {
						c = h.l.NCPU - 1 // the last update wins
					}
					if want := bytes.Repeat([]byte{byte(i/2 + c)}, 12); !bytes.Equal(got, want) {
						t.Fatalf("key %d cpu %d: %x, want %x", i, cpu, got, want)
					}
					if cap(got) != 12 {
						t.Fatalf("key %d: value capacity %d reaches beyond the value", i, cap(got))
					}
				}
			}
			if v := h.ProgValue(0, make([]byte, tc.ks+1)); v != nil {
				t.Errorf("wrong key size: %x", v)
			}
		})
	}
}

// BenchmarkProgLookup measures the program side's hash lookup (64
// entries, 4-byte keys, as BenchmarkHelperLookup in pkg/prog): ProgValue,
// and the general path it replaced (mapview's validated Find, then the
// entry's value) as the baseline in the same run.
func BenchmarkProgLookup(b *testing.B) {
	m, err := New(Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	h := m.(*Hash)
	for i := range uint32(64) {
		if err := h.Update(k32(i), make([]byte, 8), UpdateAny); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		f    func(key []byte) []byte
	}{
		{"ProgValue", func(key []byte) []byte { return h.ProgValue(0, key) }},
		{"Find", func(key []byte) []byte {
			if e := h.lookupEntry(key); e != 0 {
				return h.valOf(e, 0)
			}
			return nil
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			key := make([]byte, 4)
			var i uint32
			for b.Loop() {
				ne.PutUint32(key, i&63)
				i++
				if bc.f(key) == nil {
					b.Fatal(fmt.Sprintf("key %d not found", i-1))
				}
			}
		})
	}
}

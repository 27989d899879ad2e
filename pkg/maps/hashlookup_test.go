package maps

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/mapview"
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

// TestProgValueChains fills maps to the brim (long chains) and looks up
// every key present and many absent, including an absent key whose
// 32-bit hash equals a present key's (so only the key comparison tells
// them apart), for 4-, 8- and 13-byte keys; the syscall side's Lookup is
// the reference.
func TestProgValueChains(t *testing.T) {
	for _, ks := range []uint32{4, 8, 13} {
		t.Run(fmt.Sprintf("%d-byte keys", ks), func(t *testing.T) {
			const n = 256
			m, err := New(Spec{Type: TypeHash, KeySize: ks, ValueSize: 8, MaxEntries: n})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			h := m.(*Hash)
			key := func(i uint64) []byte {
				k := make([]byte, ks)
				binary.LittleEndian.PutUint32(k, uint32(i))
				if ks >= 8 {
					binary.LittleEndian.PutUint32(k[4:], uint32(i>>32))
				}
				return k
			}
			// Two keys with equal hashes: the first goes in, the second
			// stays out.
			byHash := map[uint32]uint64{}
			var twin [2]uint64
			for i := uint64(n); ; i++ {
				hv := mapview.Hash(h.seed, key(i))
				if j, ok := byHash[hv]; ok {
					twin = [2]uint64{j, i}
					break
				}
				byHash[hv] = i
			}
			present := map[uint64]bool{twin[0]: true}
			for i := uint64(0); len(present) < n; i++ {
				present[i] = true
			}
			for i := range present {
				if err := h.Update(key(i), binary.LittleEndian.AppendUint64(nil, i), UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			check := func(i uint64) {
				t.Helper()
				got := h.ProgValue(0, key(i))
				want := make([]byte, 8)
				if err := h.Lookup(key(i), want); err != nil {
					want = nil
				}
				if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
					t.Fatalf("key %d (present %v): ProgValue %x, Lookup %x", i, present[i], got, want)
				}
				if present[i] != (got != nil) {
					t.Fatalf("key %d: present %v, found %v", i, present[i], got != nil)
				}
			}
			for i := uint64(0); i < 4*n; i++ {
				check(i)
			}
			check(twin[0])
			check(twin[1])
		})
	}
}

// TestProgValueConcurrent looks keys up while writers churn other keys in
// the same buckets: a key present throughout is always found, with its
// value (its entry is never freed, so never reused), and a key never
// inserted is never found, whatever the interleaving (lock-free walks
// that race with writers retry or fall back to the bucket lock).
func TestProgValueConcurrent(t *testing.T) {
	for _, ks := range []uint32{4, 8, 13} {
		t.Run(fmt.Sprintf("%d-byte keys", ks), func(t *testing.T) {
			const stable, churn = 16, 40
			m, err := New(Spec{Type: TypeHash, KeySize: ks, ValueSize: 8, MaxEntries: 64})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			h := m.(*Hash)
			key := func(i int) []byte {
				k := make([]byte, ks)
				binary.LittleEndian.PutUint32(k, uint32(i)*0x9e3779b1)
				return k
			}
			for i := range stable {
				if err := h.Update(key(i), binary.LittleEndian.AppendUint64(nil, uint64(i)), UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			var stop atomic.Bool
			var wg sync.WaitGroup
			for w := range 2 {
				wg.Go(func() {
					v := make([]byte, 8)
					for r := uint64(w); !stop.Load(); r++ {
						i := stable + int(r*7919%churn)
						binary.LittleEndian.PutUint64(v, r)
						if r%3 == 0 {
							h.Delete(key(i))
						} else if err := h.Update(key(i), v, UpdateAny); err != nil && err != ErrFull {
							t.Error(err)
							return
						}
					}
				})
			}
			deadline := time.Now().Add(200 * time.Millisecond)
			lookups := 0
			for time.Now().Before(deadline) {
				for i := range stable {
					v := h.ProgValue(0, key(i))
					if v == nil || binary.LittleEndian.Uint64(v) != uint64(i) {
						t.Fatalf("stable key %d: %x", i, v)
					}
					if v := h.ProgValue(0, key(1000+i)); v != nil {
						t.Fatalf("never inserted key %d found: %x", 1000+i, v)
					}
					lookups += 2
				}
			}
			stop.Store(true)
			wg.Wait()
			t.Logf("%d lookups", lookups)
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

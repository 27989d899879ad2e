package maps

import (
	"encoding/binary"
	"slices"
	"testing"
)

// TestProgForEach walks hashes and arrays with callbacks that stop,
// delete the current and other elements, replace values and insert:
// every element present throughout is seen exactly once, and the count
// is the number of calls.
func TestProgForEach(t *testing.T) {
	key := func(k uint32) []byte { return binary.NativeEndian.AppendUint32(nil, k) }
	val := func(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }
	tests := []struct {
		name string
		typ  uint32
		// during runs inside the callback for element k.
		during func(t *testing.T, m Map, k uint32)
		stopAt int // stop after this many calls (0: never)
		want   []uint32
	}{
		{name: "hash", typ: TypeHash, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{name: "hash stop after 3", typ: TypeHash, stopAt: 3},
		{name: "hash deleting the current element", typ: TypeHash, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
			during: func(t *testing.T, m Map, k uint32) {
				if err := m.(*Hash).ProgDeleteOn(0, key(k)); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "hash replacing the current value", typ: TypeHash, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
			during: func(t *testing.T, m Map, k uint32) {
				if err := m.(*Hash).ProgUpdateOn(0, key(k), val(99), UpdateExist); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "hash inserting new keys", typ: TypeHash,
			during: func(t *testing.T, m Map, k uint32) {
				m.(*Hash).ProgUpdateOn(0, key(k+1000), val(1), UpdateAny) // may be full
			}},
		{name: "lru hash", typ: TypeLRUHash, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{name: "percpu hash", typ: TypePercpuHash, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{name: "array", typ: TypeArray, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
		{name: "array stop after 5", typ: TypeArray, stopAt: 5, want: []uint32{0, 1, 2, 3, 4}},
		{name: "percpu array", typ: TypePercpuArray, want: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(Spec{Type: tt.typ, KeySize: 4, ValueSize: 8, MaxEntries: 16})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			h, isHash := m.(*Hash)
			if isHash {
				for k := range uint32(10) {
					if err := h.ProgUpdateOn(0, key(k), val(uint64(k)), UpdateAny); err != nil {
						t.Fatal(err)
					}
				}
			}
			var seen []uint32
			n, err := m.(ForEacher).ProgForEach(0, func(k, v []byte) (bool, error) {
				if len(k) != 4 || len(v) != 8 {
					t.Fatalf("key %d bytes, value %d bytes", len(k), len(v))
				}
				kk := binary.NativeEndian.Uint32(k)
				seen = append(seen, kk)
				if tt.during != nil {
					tt.during(t, m, kk)
				}
				return tt.stopAt != 0 && len(seen) == tt.stopAt, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != len(seen) {
				t.Fatalf("returned %d, callback called %d times", n, len(seen))
			}
			if tt.stopAt != 0 && n != tt.stopAt {
				t.Fatalf("%d calls, want a stop after %d", n, tt.stopAt)
			}
			slices.Sort(seen)
			if tt.want != nil && !slices.Equal(seen, tt.want) {
				t.Fatalf("saw %v, want %v", seen, tt.want)
			}
			if len(slices.Compact(slices.Clone(seen))) != len(seen) {
				t.Fatalf("saw an element twice: %v", seen)
			}
			if tt.want == nil && tt.stopAt == 0 {
				for k := range uint32(10) {
					if !slices.Contains(seen, k) {
						t.Fatalf("saw %v: key %d, present throughout, missing", seen, k)
					}
				}
			}
		})
	}
}

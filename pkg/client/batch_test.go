package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fillHash creates a hash map with keys 0..n-1 and values key*3, using
// BatchUpdate (in a memfd when large).
func fillHash(t *testing.T, c *Conn, n, maxEntries int) *Map {
	t.Helper()
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: uint32(maxEntries)})
	keys, values := make([]byte, 4*n), make([]byte, 8*n)
	for i := range n {
		binary.LittleEndian.PutUint32(keys[4*i:], uint32(i))
		binary.LittleEndian.PutUint64(values[8*i:], uint64(i)*3)
	}
	got, err := m.BatchUpdate(keys, values, nil)
	if err != nil || got != n {
		t.Fatalf("BatchUpdate(%d) = %d, %v", n, got, err)
	}
	return m
}

// collect walks m with BatchLookup in chunks of chunk elements, checking
// kernel batch rules, and returns key -> value.
func collect(t *testing.T, m *Map, chunk int) map[uint32]uint64 {
	t.Helper()
	seen := map[uint32]uint64{}
	var cur MapBatchCursor
	keys, values := make([]byte, 4*chunk), make([]byte, 8*chunk)
	for calls := 0; ; calls++ {
		if calls > 1<<20 {
			t.Fatal("batch walk does not end")
		}
		n, err := m.BatchLookup(&cur, keys, values, nil)
		if err != nil && !errors.Is(err, ErrKeyNotExist) {
			t.Fatalf("BatchLookup: %v", err)
		}
		if n < 0 || n > chunk {
			t.Fatalf("count %d out of [0,%d]", n, chunk)
		}
		for i := range n {
			k := binary.LittleEndian.Uint32(keys[4*i:])
			if _, dup := seen[k]; dup {
				t.Fatalf("key %d returned twice", k)
			}
			seen[k] = binary.LittleEndian.Uint64(values[8*i:])
		}
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				t.Fatalf("end of batch is %v, want ENOENT", err)
			}
			return seen
		}
	}
}

func TestBatchLookup(t *testing.T) {
	c := newTestConn(t)
	tests := []struct {
		name         string
		n, max, chnk int
	}{
		{"empty", 0, 16, 4},
		{"one chunk", 10, 16, 64},
		{"exact chunks", 64, 64, 16},
		{"partial chunks", 100, 128, 7},
		{"memfd reply", 20000, 20000, 20000},
		{"memfd update, small chunks", 8000, 8192, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fillHash(t, c, tt.n, tt.max)
			seen := collect(t, m, tt.chnk)
			if len(seen) != tt.n {
				t.Fatalf("walked %d keys, want %d", len(seen), tt.n)
			}
			for k, v := range seen {
				if k >= uint32(tt.n) || v != uint64(k)*3 {
					t.Fatalf("key %d value %d", k, v)
				}
			}
		})
	}
}

func TestBatchLookupArray(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 10})
	if err := m.Update(u32(3), u64(33), UpdateAny); err != nil {
		t.Fatal(err)
	}
	var cur MapBatchCursor
	keys, values := make([]byte, 4*4), make([]byte, 8*4)
	var got []uint32
	for {
		n, err := m.BatchLookup(&cur, keys, values, nil)
		for i := range n {
			k := binary.LittleEndian.Uint32(keys[4*i:])
			got = append(got, k)
			want := uint64(0)
			if k == 3 {
				want = 33
			}
			if v := binary.LittleEndian.Uint64(values[8*i:]); v != want {
				t.Fatalf("index %d = %d, want %d", k, v, want)
			}
		}
		if errors.Is(err, ErrKeyNotExist) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 {
			t.Fatalf("non-final chunk has %d elements, want 4", n)
		}
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("array walk %v", got)
	}
}

func TestBatchWritePartial(t *testing.T) {
	c := newTestConn(t)
	m := fillHash(t, c, 4, 4)
	// Deleting 0, 1, 99, 2: the kernel stops at the missing key with
	// ENOENT and reports the two deleted before it.
	n, err := m.BatchDelete(bytes.Join([][]byte{u32(0), u32(1), u32(99), u32(2)}, nil), nil)
	if n != 2 || !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("BatchDelete = %d, %v; want 2, ENOENT", n, err)
	}
	if err := m.Lookup(u32(2), make([]byte, 8)); err != nil {
		t.Fatalf("key after the failure was deleted: %v", err)
	}
	// Map holds 2, 3 (max 4): updating 10, 11, 12 fills it at 12.
	n, err = m.BatchUpdate(bytes.Join([][]byte{u32(10), u32(11), u32(12)}, nil), make([]byte, 24), nil)
	if n != 2 || !errors.Is(err, ErrTooBig) {
		t.Fatalf("BatchUpdate = %d, %v; want 2, E2BIG", n, err)
	}
	if _, err := m.BatchUpdate(u32(1), make([]byte, 7), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mismatched buffers: %v, want EINVAL", err)
	}
	if _, err := m.BatchLookup(&MapBatchCursor{}, u32(1), make([]byte, 8), &BatchOptions{Flags: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown batch flags: %v, want EINVAL", err)
	}
}

func TestBatchLookupAndDelete(t *testing.T) {
	c := newTestConn(t)
	m := fillHash(t, c, 300, 512)
	var cur MapBatchCursor
	keys, values := make([]byte, 4*64), make([]byte, 8*64)
	total := 0
	for {
		n, err := m.BatchLookupAndDelete(&cur, keys, values, nil)
		total += n
		if errors.Is(err, ErrKeyNotExist) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total != 300 {
		t.Fatalf("deleted %d, want 300", total)
	}
	if err := m.NextKey(nil, make([]byte, 4)); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("map not empty after BatchLookupAndDelete: %v", err)
	}
}

func TestBatchCursorOtherMap(t *testing.T) {
	c := newTestConn(t)
	a, b := fillHash(t, c, 100, 128), fillHash(t, c, 1, 128)
	var cur MapBatchCursor
	if _, err := a.BatchLookup(&cur, make([]byte, 4*8), make([]byte, 8*8), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.BatchLookup(&cur, make([]byte, 4*8), make([]byte, 8*8), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cursor of another map: %v, want EINVAL", err)
	}
}

func TestIterate(t *testing.T) {
	c := newTestConn(t)
	tests := []struct {
		name string
		n    int
	}{{"empty", 0}, {"one", 1}, {"many chunks", 20000}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fillHash(t, c, tt.n, max(tt.n, 1))
			it := m.Iterate()
			k, v := make([]byte, 4), make([]byte, 8)
			seen := map[uint32]bool{}
			for it.Next(k, v) {
				key := binary.LittleEndian.Uint32(k)
				if seen[key] || binary.LittleEndian.Uint64(v) != uint64(key)*3 {
					t.Fatalf("key %d seen %v value %d", key, seen[key], binary.LittleEndian.Uint64(v))
				}
				seen[key] = true
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
			if len(seen) != tt.n {
				t.Fatalf("iterated %d keys, want %d", len(seen), tt.n)
			}
			if it.Next(k, v) {
				t.Fatal("Next after the end returned true")
			}
		})
	}
}

// TestIterateConcurrentModification checks the documented consistency:
// keys present throughout the walk come back exactly once while others
// are inserted and deleted.
func TestIterateConcurrentModification(t *testing.T) {
	c := newTestConn(t)
	const stable = 5000
	m := fillHash(t, c, stable, 2*stable)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := u32(stable + i%stable)
			if i/stable%2 == 0 {
				m.Update(k, u64(1), UpdateAny)
			} else {
				m.Delete(k)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for round := range 3 {
		it := m.Iterate()
		k := make([]byte, 4)
		seen := map[uint32]int{}
		for it.Next(k, nil) {
			seen[binary.LittleEndian.Uint32(k)]++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		for i := range uint32(stable) {
			if seen[i] != 1 {
				t.Fatalf("round %d: stable key %d seen %d times", round, i, seen[i])
			}
		}
		for k, n := range seen {
			if n != 1 {
				t.Fatalf("round %d: key %d seen %d times", round, k, n)
			}
		}
	}
}

func TestIterateWriteOnly(t *testing.T) {
	c := newTestConn(t)
	m := fillHash(t, c, 3, 4)
	wo, err := m.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	it := wo.Iterate()
	if it.Next(make([]byte, 4), nil) || !errors.Is(it.Err(), ErrPermission) {
		t.Fatalf("iterating a write-only descriptor: %v, want EPERM", it.Err())
	}
}

package maps

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func mustNew(t testing.TB, s Spec) Map {
	t.Helper()
	m, err := New(s)
	if err != nil {
		t.Fatalf("New(%+v): %v", s, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestSizesAndSentinels(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		call func(m Map) error
		want error
	}{
		{name: "hash short key", spec: hash48, call: func(m Map) error { return m.Lookup(k32(1)[:3], zero8) }, want: ErrKeySize},
		{name: "hash short value", spec: hash48, call: func(m Map) error { return m.Update(k32(1), zero8[:7], 0) }, want: ErrValueSize},
		{name: "array long key", spec: array48, call: func(m Map) error { return m.Update(val(5, 0), zero8, 0) }, want: ErrKeySize},
		{name: "hash missing", spec: hash48, call: func(m Map) error { return m.Lookup(k32(1), zero8) }, want: ErrKeyNotExist},
		{name: "hash batch short buffer", spec: hash48, call: func(m Map) error {
			return m.LookupBatch(&Batch{Count: 2, Keys: make([]byte, 4), Values: make([]byte, 16)})
		}, want: ErrInvalid},
		{name: "closed", spec: hash48, call: func(m Map) error { m.Close(); return m.Lookup(k32(1), zero8) }, want: ErrClosed},
		{name: "closed array", spec: array48, call: func(m Map) error { m.Close(); return m.Update(k32(1), zero8, 0) }, want: ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustNew(t, tc.spec)
			if err := tc.call(m); !errors.Is(err, tc.want) || !errors.Is(err, tc.want.(interface{ Errno() unix.Errno }).Errno()) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestProgramSide checks that ValueRef, ProgUpdate and ProgDelete ignore
// freezing and BPF_F_RDONLY, as the kernel's helpers do, and that ValueRef
// aliases storage.
func TestProgramSide(t *testing.T) {
	for _, s := range []Spec{withFlags(hash48, FlagRdonly), withFlags(array48, 0), withFlags(hash48, FlagNoPrealloc)} {
		t.Run(fmt.Sprintf("type%d_flags%d", s.Type, s.Flags), func(t *testing.T) {
			m := mustNew(t, s)
			if s.Flags&FlagRdonly == 0 {
				if err := m.Freeze(); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.Update(k32(1), v1, 0); !errors.Is(err, ErrPermission) {
				t.Fatalf("syscall Update: %v, want EPERM", err)
			}
			if err := m.ProgUpdate(k32(1), v1, UpdateAny); err != nil {
				t.Fatalf("ProgUpdate: %v", err)
			}
			ref := m.ValueRef(k32(1))
			if !bytes.Equal(ref, v1) || cap(ref) != len(ref) {
				t.Fatalf("ValueRef = %x (cap %d)", ref, cap(ref))
			}
			ref[0] = 0x55 // a program store
			got := make([]byte, 8)
			if err := m.Lookup(k32(1), got); err != nil || got[0] != 0x55 {
				t.Fatalf("Lookup after store through ValueRef: %x, %v", got, err)
			}
			if m.ValueRef(k32(6)) != nil && s.Type == TypeHash {
				t.Fatal("ValueRef of a missing key is not nil")
			}
			if s.Type == TypeHash {
				if err := m.ProgDelete(k32(1)); err != nil {
					t.Fatalf("ProgDelete: %v", err)
				}
				if err := m.ProgDelete(k32(1)); !errors.Is(err, ErrKeyNotExist) {
					t.Fatalf("second ProgDelete: %v", err)
				}
			}
		})
	}
}

func TestProgArray(t *testing.T) {
	m := mustNew(t, progArr4)
	p := m.(*ProgArray)
	if err := m.Update(k32(1), k32(42), UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(k32(2), k32(0), UpdateAny); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Update with id 0: %v", err)
	}
	got := make([]byte, 4)
	if err := m.Lookup(k32(1), got); err != nil || ne.Uint32(got) != 42 {
		t.Fatalf("Lookup = %x, %v", got, err)
	}
	if p.Prog(1) != 42 || p.Prog(0) != 0 || p.Prog(99) != 0 {
		t.Fatal("Prog slots wrong")
	}
	if err := m.Delete(k32(1)); err != nil {
		t.Fatal(err)
	}
	if err := m.Lookup(k32(1), got); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Lookup after Delete: %v", err)
	}
	if err := m.LookupBatch(&Batch{Count: 1}); !errors.Is(err, ENOTSUPP) {
		t.Fatalf("LookupBatch: %v", err)
	}
}

// TestConcurrent hammers one map from many goroutines (run with -race);
// values are written whole under the lock, so every Lookup sees a value
// whose bytes all match.
func TestConcurrent(t *testing.T) {
	for _, s := range []Spec{{Type: TypeHash, KeySize: 4, ValueSize: 64, MaxEntries: 32}, {Type: TypeArray, KeySize: 4, ValueSize: 64, MaxEntries: 32}} {
		t.Run(fmt.Sprintf("type%d", s.Type), func(t *testing.T) {
			m := mustNew(t, s)
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					key, v, out, next := make([]byte, 4), make([]byte, 64), make([]byte, 64), make([]byte, 4)
					b := batchBuf(s, 8)
					for i := 0; i < 2000; i++ {
						ne.PutUint32(key, uint32((i*7+g)%40))
						switch i % 5 {
						case 0, 1:
							for j := range v {
								v[j] = byte(i)
							}
							m.Update(key, v, UpdateAny)
						case 2:
							if m.Lookup(key, out) == nil && !bytes.Equal(out, bytes.Repeat(out[:1], 64)) {
								errs <- fmt.Errorf("torn value %x", out)
								return
							}
						case 3:
							if s.Type == TypeHash {
								m.Delete(key)
							} else {
								m.NextKey(key, next)
							}
						case 4:
							b.Count, b.HasInBatch = 8, false
							m.LookupBatch(b)
						}
					}
				}(g)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}

// TestZeroAllocs asserts the hot paths allocate nothing once warm.
func TestZeroAllocs(t *testing.T) {
	for _, s := range []Spec{{Type: TypeHash, KeySize: 8, ValueSize: 16, MaxEntries: 64}, {Type: TypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 64}} {
		t.Run(fmt.Sprintf("type%d", s.Type), func(t *testing.T) {
			m := mustNew(t, s)
			key, v, next := make([]byte, s.KeySize), make([]byte, 16), make([]byte, s.KeySize)
			b := batchBuf(s, 64)
			var i uint32
			cases := []struct {
				name string
				f    func()
			}{
				{"Update", func() { ne.PutUint32(key, i%64); i++; m.Update(key, v, UpdateAny) }},
				{"Lookup", func() { m.Lookup(key, v) }},
				{"LookupMissing", func() { ne.PutUint32(key, 1000); m.Lookup(key, v); ne.PutUint32(key, 3) }},
				{"NextKey", func() { m.NextKey(key, next) }},
				{"ValueRef", func() { _ = m.ValueRef(key) }},
				{"Delete", func() { m.Delete(key); m.Update(key, v, UpdateAny) }},
				{"LookupAndDelete", func() { m.LookupAndDelete(key, v); m.Update(key, v, UpdateAny) }},
				{"LookupBatch", func() { b.Count, b.HasInBatch = 64, false; m.LookupBatch(b) }},
				{"UpdateBatch", func() { b.Count = 8; m.UpdateBatch(b) }},
				{"LookupAndDeleteBatch+DeleteBatch", func() {
					b.Count, b.HasInBatch = 4, false
					m.LookupAndDeleteBatch(b)
					m.UpdateBatch(b)
					m.DeleteBatch(b)
					m.UpdateBatch(b)
				}},
			}
			for _, c := range cases {
				if n := testing.AllocsPerRun(200, c.f); n != 0 {
					t.Errorf("%s: %v allocs per op, want 0", c.name, n)
				}
			}
		})
	}
}

func TestArrayValues(t *testing.T) {
	m, err := New(Spec{Type: TypeArray, KeySize: 4, ValueSize: 5, MaxEntries: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a := m.(*Array)
	key := []byte{2, 0, 0, 0}
	if err := a.Update(key, []byte{1, 2, 3, 4, 5}, UpdateAny); err != nil {
		t.Fatal(err)
	}
	mem, stride := a.Values()
	if stride != 8 || len(mem) != 24 {
		t.Fatalf("Values: len %d stride %d, want 24 and 8", len(mem), stride)
	}
	if got := mem[2*stride : 2*stride+5]; string(got) != "\x01\x02\x03\x04\x05" {
		t.Fatalf("value 2 at %x", got)
	}
	mem[0] = 9 // writes through are visible to lookups
	v := make([]byte, 5)
	if err := a.Lookup([]byte{0, 0, 0, 0}, v); err != nil || v[0] != 9 {
		t.Fatalf("Lookup after write through Values: %x, %v", v, err)
	}
	a.Close()
	if mem, _ := a.Values(); mem != nil {
		t.Fatal("Values after Close is not nil")
	}
}

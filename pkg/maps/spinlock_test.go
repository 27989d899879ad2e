package maps

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// lockedSpec is a map whose 24-byte values hold a bpf_spin_lock at 8
// (the BTF struct { u64 a; struct bpf_spin_lock l; u32 pad; u64 b; }).
func lockedSpec(typ uint32) Spec {
	return Spec{Type: typ, KeySize: 4, ValueSize: 24, MaxEntries: 8, SpinLock: 8 + 1}
}

// TestSpinLockSpecRules: map_check_btf's rules for where a lock may be.
func TestSpinLockSpecRules(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want error
	}{
		{name: "hash", spec: lockedSpec(TypeHash)},
		{name: "array", spec: lockedSpec(TypeArray)},
		{name: "percpu array", spec: lockedSpec(TypePercpuArray), want: ErrOpNotSupp},
		{name: "lru hash", spec: lockedSpec(TypeLRUHash), want: ErrOpNotSupp},
		{name: "rdonly prog", spec: func() Spec { s := lockedSpec(TypeArray); s.Flags = FlagRdonlyProg; return s }(), want: ErrLockAccess},
		{name: "misaligned", spec: func() Spec { s := lockedSpec(TypeArray); s.SpinLock = 3; return s }(), want: ErrInvalid},
		{name: "past the value", spec: func() Spec { s := lockedSpec(TypeArray); s.SpinLock = 21 + 1; return s }(), want: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.spec.Validate(); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
		})
	}
}

// word returns the lock word of key's value as programs see it.
func word(t *testing.T, m Map, key uint32) *uint32 {
	t.Helper()
	v := m.ValueRef(ne.AppendUint32(nil, key))
	if v == nil {
		t.Fatalf("no value for key %d", key)
	}
	return (*uint32)(unsafe.Pointer(&v[8]))
}

// TestSpinLockRestoreClears: a region reopened after the daemon died with
// a value's lock held (here: left held on purpose) comes back with every
// lock free, counted as repaired, its values and its lock offset kept.
func TestSpinLockRestoreClears(t *testing.T) {
	for _, typ := range []uint32{TypeArray, TypeHash} {
		t.Run(TypeName(typ), func(t *testing.T) {
			m, err := NewWith(lockedSpec(typ), &Config{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			val := bytes.Repeat([]byte{7}, 24)
			for k := uint32(0); k < 3; k++ {
				if err := m.Update(ne.AppendUint32(nil, k), val, UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			SpinLock(word(t, m, 1)) // held when the daemon "dies"
			path := RegionPath(m)
			if err := Detach(m); err != nil {
				t.Fatal(err)
			}
			m2, rep, err := OpenFile(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m2.Close()
			if rep.Unlocked != 1 {
				t.Fatalf("repair %+v, want one lock released", rep)
			}
			if off, ok := m2.Spec().LockOffset(); !ok || off != 8 {
				t.Fatalf("reopened spec lock offset %d, %v", off, ok)
			}
			for k := uint32(0); k < 3; k++ {
				if w := atomic.LoadUint32(word(t, m2, k)); w != 0 {
					t.Fatalf("key %d: lock word %d after reopening", k, w)
				}
			}
			// F_LOCK works (would spin forever on a held lock).
			got := make([]byte, 24)
			if err := LookupFlags(m2, ne.AppendUint32(nil, 1), got, UpdateLock); err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte{7}, 24)
			clear(want[8:12])
			if !bytes.Equal(got, want) {
				t.Fatalf("value %x, want %x", got, want)
			}
		})
	}
}

// TestSpinLockExclusion: syscall-side BPF_F_LOCK updates and lookups
// exclude each other and a "program" holding the value's lock word
// (goroutines writing both counters under SpinLock, as bpf_spin_lock
// does): a locked lookup never sees the two counters differ. A plain
// update never takes the lock word from a holder.
func TestSpinLockExclusion(t *testing.T) {
	for _, typ := range []uint32{TypeArray, TypeHash} {
		t.Run(TypeName(typ), func(t *testing.T) {
			m, err := New(lockedSpec(typ))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			key := ne.AppendUint32(nil, 0)
			if err := m.Update(key, make([]byte, 24), UpdateAny); err != nil {
				t.Fatal(err)
			}
			v := m.ValueRef(key)
			w := (*uint32)(unsafe.Pointer(&v[8]))
			a := (*uint64)(unsafe.Pointer(&v[0]))
			b := (*uint64)(unsafe.Pointer(&v[16]))
			const rounds = 2000
			var wg sync.WaitGroup
			for g := 0; g < 2; g++ { // "programs"
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < rounds; i++ {
						SpinLock(w)
						atomic.StoreUint64(a, atomic.LoadUint64(a)+1)
						atomic.StoreUint64(b, atomic.LoadUint64(b)+1)
						SpinUnlock(w)
					}
				}()
			}
			wg.Add(1)
			go func() { // syscall-side writer: both counters equal
				defer wg.Done()
				buf := make([]byte, 24)
				for i := 0; i < rounds/4; i++ {
					if err := LookupFlags(m, key, buf, UpdateLock); err != nil {
						t.Error(err)
						return
					}
					if err := m.Update(key, buf, UpdateExist|UpdateLock); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			buf := make([]byte, 24)
			for i := 0; i < rounds; i++ {
				if err := LookupFlags(m, key, buf, UpdateLock); err != nil {
					t.Fatal(err)
				}
				if x, y := ne.Uint64(buf), ne.Uint64(buf[16:]); x != y {
					t.Fatalf("F_LOCK lookup saw a=%d b=%d", x, y)
				}
				if !bytes.Equal(buf[8:12], make([]byte, 4)) {
					t.Fatalf("lock field %x returned", buf[8:12])
				}
			}
			wg.Wait()
			if err := LookupFlags(m, key, buf, UpdateLock); err != nil {
				t.Fatal(err)
			}
			// (The syscall writer writes back what it read, so increments
			// made in between are lost; the counters stay equal.)
			if x, y := ne.Uint64(buf), ne.Uint64(buf[16:]); x != y || x == 0 {
				t.Fatalf("final a=%d b=%d, want equal and non-zero", x, y)
			}
		})
	}
}

// TestSpinLockHashUpdateInPlace: a BPF_F_LOCK update of an existing hash
// key rewrites the value where it is (a program's pointer to it sees the
// new value), where a plain update replaces the element; a missing key is
// inserted.
func TestSpinLockHashUpdateInPlace(t *testing.T) {
	m, err := New(lockedSpec(TypeHash))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key := ne.AppendUint32(nil, 5)
	if err := m.Update(key, bytes.Repeat([]byte{1}, 24), UpdateNoExist|UpdateLock); err != nil {
		t.Fatal(err)
	}
	before := m.ValueRef(key)
	if err := m.Update(key, bytes.Repeat([]byte{2}, 24), UpdateExist|UpdateLock); err != nil {
		t.Fatal(err)
	}
	if after := m.ValueRef(key); &after[0] != &before[0] || before[0] != 2 || before[16] != 2 {
		t.Fatalf("F_LOCK update did not rewrite in place: %x", before)
	}
	if w := atomic.LoadUint32((*uint32)(unsafe.Pointer(&before[8]))); w != 0 {
		t.Fatalf("lock word %#x after a locked update, want it free and never copied", w)
	}
	if err := m.Update(key, bytes.Repeat([]byte{3}, 24), UpdateAny); err != nil {
		t.Fatal(err)
	}
	if after := m.ValueRef(key); &after[0] == &before[0] {
		t.Fatal("a plain update rewrote in place; the kernel replaces the element")
	}
}

// TestSpinLockPlainReadsZeroLock: while a program holds a value's lock,
// plain lookups — the daemon's and a client's through a mapping of the
// region (mapview) — return the value with the lock field zeroed, and
// do not wait for the lock.
func TestSpinLockPlainReadsZeroLock(t *testing.T) {
	for _, typ := range []uint32{TypeArray, TypeHash} {
		t.Run(TypeName(typ), func(t *testing.T) {
			m, err := New(lockedSpec(typ))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			key := ne.AppendUint32(nil, 1)
			if err := m.Update(key, bytes.Repeat([]byte{9}, 24), UpdateAny); err != nil {
				t.Fatal(err)
			}
			w := word(t, m, 1)
			SpinLock(w)
			defer SpinUnlock(w)
			want := bytes.Repeat([]byte{9}, 24)
			clear(want[8:12])
			got := make([]byte, 24)
			if err := m.Lookup(key, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("daemon lookup %x, %v; want %x", got, err, want)
			}
			v, err := mapview.New(m.(impl).b().mem[:m.MemoryUsage()])
			if err != nil {
				t.Fatal(err)
			}
			clear(got)
			if err := v.Lookup(key, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("mapped lookup %x, %v; want %x", got, err, want)
			}
			if h := v.Header(); h.SpinLock != 9 {
				t.Fatalf("region header spin lock word %d, want 9", h.SpinLock)
			}
		})
	}
}

package maps

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// mapRO maps a read-only descriptor of m's storage, as a client does.
func mapRO(t *testing.T, m Map) []byte {
	t.Helper()
	fd, err := m.ReadOnlyFD()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, int(m.MemoryUsage()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("read-only mmap: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// TestBackings checks both backends: the region holds a valid header and
// the map's bytes, readers get a descriptor that can never write, and a
// memfd is sealed against resizing and writable mappings.
func TestBackings(t *testing.T) {
	for _, dir := range []string{"", "dir"} {
		name := "memfd"
		if dir != "" {
			name = "file"
		}
		t.Run(name, func(t *testing.T) {
			cfg := &Config{}
			if dir != "" {
				cfg.Dir = t.TempDir()
			}
			m, err := NewWith(array48, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := m.Update(k32(2), v2, 0); err != nil {
				t.Fatal(err)
			}
			ro := mapRO(t, m)
			v, err := mapview.New(ro)
			if err != nil {
				t.Fatalf("mapped region: %v", err)
			}
			got := make([]byte, 8)
			if err := v.Lookup(k32(2), got); err != nil || !bytes.Equal(got, v2) {
				t.Fatalf("view lookup = %x, %v", got, err)
			}
			rfd, err := m.ReadOnlyFD()
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(rfd)
			if _, err := unix.Mmap(rfd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
				t.Fatal("writable mapping through the read-only descriptor succeeded")
			}
			if err := unix.Mprotect(ro[:4096], unix.PROT_READ|unix.PROT_WRITE); err == nil {
				t.Fatal("mprotect to writable of a read-only mapping succeeded")
			}
			if _, err := unix.Pwrite(rfd, []byte{1}, 0); err == nil {
				t.Fatal("pwrite through the read-only descriptor succeeded")
			}
			if err := unix.Ftruncate(rfd, 0); err == nil {
				t.Fatal("ftruncate through the read-only descriptor succeeded")
			}
			path := RegionPath(m)
			if dir == "" {
				if path != "" {
					t.Fatalf("memfd map has path %q", path)
				}
				fd := m.FD()
				if _, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
					t.Fatal("writable mmap of the sealed memfd succeeded")
				}
				if err := unix.Ftruncate(fd, 0); err == nil {
					t.Fatal("ftruncate of the sealed memfd succeeded")
				}
			} else {
				if filepath.Dir(path) != cfg.Dir {
					t.Fatalf("region file %q not in %q", path, cfg.Dir)
				}
				b, err := os.ReadFile(path)
				if err != nil || string(b[:8]) != mapview.Magic {
					t.Fatalf("region file: %v", err)
				}
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if err := m.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if m.FD() != -1 {
				t.Fatal("FD after Close is not -1")
			}
			if _, err := m.ReadOnlyFD(); !errors.Is(err, ErrClosed) {
				t.Fatalf("ReadOnlyFD after Close: %v", err)
			}
			if path != "" {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Fatalf("region file survives Close: %v", err)
				}
			}
		})
	}
}

// TestRetire checks a move: a mapping made before it keeps the bytes of
// the moment of the move and says Retired; the map goes on in a fresh
// region; value pointers taken before the move still reach live storage.
func TestRetire(t *testing.T) {
	for _, s := range []Spec{hash48, array48, {Type: TypePercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 2}} {
		for _, dir := range []bool{false, true} {
			t.Run(specName(s)+map[bool]string{false: "/memfd", true: "/file"}[dir], func(t *testing.T) {
				cfg := &Config{}
				if dir {
					cfg.Dir = t.TempDir()
				}
				m, err := NewWith(s, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				vs := s.SyscallValueSize()
				val := func(b byte) []byte { return bytes.Repeat([]byte{b}, vs) }
				if err := m.Update(k32(1), val(1), 0); err != nil {
					t.Fatal(err)
				}
				ref := m.ValueRef(k32(1))
				old := mapRO(t, m)
				oldView, err := mapview.New(old)
				if err != nil {
					t.Fatal(err)
				}
				path := RegionPath(m)
				if err := m.Retire(); err != nil {
					t.Fatal(err)
				}
				if !oldView.Retired() {
					t.Fatal("old mapping is not marked retired")
				}
				if err := m.Update(k32(1), val(2), 0); err != nil {
					t.Fatal(err)
				}
				ref[0] = 9 // a program store through a pointer taken before the move
				got := make([]byte, vs)
				if err := m.Lookup(k32(1), got); err != nil || got[0] != 9 && s.Type == TypeArray {
					t.Fatalf("live lookup after move = %x, %v", got, err)
				}
				// The snapshot still has value 1, whatever happened since.
				off := bytes.Index(old[mapview.OffData:], val(1))
				if off < 0 {
					t.Fatal("old mapping lost the value of the moment of the move")
				}
				if err := oldView.Lookup(k32(1), got); !errors.Is(err, mapview.ErrRetired) {
					t.Fatalf("lookup through a retired view: %v", err)
				}
				nv, err := mapview.New(mapRO(t, m))
				if err != nil {
					t.Fatal(err)
				}
				if nv.Retired() || nv.Generation() != 1 {
					t.Fatalf("new region: retired %v generation %d", nv.Retired(), nv.Generation())
				}
				if err := nv.Lookup(k32(1), got); err != nil {
					t.Fatal(err)
				}
				want := val(2)
				if s.Type != TypeHash {
					want[0] = 9 // the array value the pointer aliases
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("new mapping sees %x, want %x", got, want)
				}
				if dir && RegionPath(m) != path {
					t.Fatalf("region file moved from %q to %q", path, RegionPath(m))
				}
				if dir {
					ents, _ := os.ReadDir(cfg.Dir)
					if len(ents) != 1 {
						t.Fatalf("%d files in the state directory after a move, want 1", len(ents))
					}
				}
			})
		}
	}
}

// TestRetireUnderLoad moves a map while writers run and checks that no
// write is lost: every update acknowledged before or after the move is
// visible at the end.
func TestRetireUnderLoad(t *testing.T) {
	m := mustNew(t, Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 256})
	var stop atomic.Bool
	var progress atomic.Int64
	done := make(chan [2]uint64)
	for g := 0; g < 2; g++ {
		go func() {
			var last [2]uint64
			v := make([]byte, 8)
			for i := uint64(1); !stop.Load(); i++ {
				ne.PutUint64(v, i)
				if err := m.Update(k32(uint32(g)), v, UpdateAny); err != nil {
					t.Error(err)
					break
				}
				last[g] = i
				progress.Add(1)
			}
			done <- last
		}()
	}
	for i := 0; i < 20; i++ {
		for p := progress.Load(); progress.Load() < p+50; {
			runtime.Gosched()
		}
		fd, err := m.ReadOnlyFD() // a reader: Retire has something to cut off
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		if err := m.Retire(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	last := [2]uint64{}
	for range 2 {
		l := <-done
		last[0] += l[0]
		last[1] += l[1]
	}
	v := make([]byte, 8)
	for g := 0; g < 2; g++ {
		if err := m.Lookup(k32(uint32(g)), v); err != nil || ne.Uint64(v) != last[g] {
			t.Fatalf("key %d: %d, %v; last acknowledged %d", g, ne.Uint64(v), err, last[g])
		}
	}
}

// TestOpen round-trips regions through Open: contents, frozen state and
// further operations survive, for both backends.
func TestOpen(t *testing.T) {
	specs := []Spec{hash48, array48, {Type: TypePercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 8},
		{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 64, Flags: FlagNoPrealloc}, progArr4}
	for _, s := range specs {
		t.Run(specName(s), func(t *testing.T) {
			dir := t.TempDir()
			m, err := NewWith(s, &Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			vs := s.SyscallValueSize()
			n := min(s.MaxEntries, 4)
			if s.Type == TypeHash {
				n = min(n, s.MaxEntries)
			}
			for i := uint32(0); i < n; i++ {
				v := bytes.Repeat([]byte{byte(i + 1)}, vs)
				if err := m.Update(k32(i), v, UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			if s.Type == TypeHash {
				m.Delete(k32(1))
				if err := m.Update(k32(0), bytes.Repeat([]byte{7}, vs), UpdateAny); err != nil { // a replace
					t.Fatal(err)
				}
			}
			if err := m.Freeze(); err != nil {
				t.Fatal(err)
			}
			want := dump(t, m, s)
			// Open a copy of the region file, as a restarted daemon would.
			cp := filepath.Join(t.TempDir(), "copy")
			b, err := os.ReadFile(RegionPath(m))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			m.Close()
			m2, rep, err := OpenFile(cp, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m2.Close()
			if rep != (Repair{}) {
				t.Fatalf("clean region needed repairs: %+v", rep)
			}
			if !m2.Frozen() {
				t.Fatal("frozen state lost")
			}
			if got := dump(t, m2, s); !slicesEqual(got, want) {
				t.Fatalf("contents after Open:\n got %v\nwant %v", got, want)
			}
			// The program side still writes a frozen map.
			if s.Type != TypeProgArray {
				if err := m2.ProgUpdate(k32(3), make([]byte, s.ValueSize), UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// dump lists a map's contents through the syscall side (walking with
// NextKey), including for WRONLY maps via the program side where needed.
func dump(t *testing.T, m Map, s Spec) []string {
	t.Helper()
	var out []string
	var key []byte
	next := make([]byte, s.KeySize)
	v := make([]byte, s.SyscallValueSize())
	for i := 0; i <= int(s.MaxEntries); i++ {
		if err := m.NextKey(key, next); err != nil {
			break
		}
		if err := m.Lookup(next, v); err == nil {
			out = append(out, string(next)+"="+string(v))
		}
		key = bytes.Clone(next)
	}
	return out
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// memfdCopy returns a read-write memfd holding a copy of m's region bytes.
func memfdCopy(t *testing.T, m Map) int {
	t.Helper()
	src := mapRO(t, m)
	fd, err := unix.MemfdCreate("copy", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, src, 0); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestOpenRepairs damages regions the way an interrupted operation does
// and checks Open repairs them into the map the acknowledged operations
// describe.
func TestOpenRepairs(t *testing.T) {
	s := Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 8}
	setup := func(t *testing.T) *Hash {
		m := mustNew(t, s)
		for i := uint32(0); i < 5; i++ {
			if err := m.Update(k32(i), val(8, byte(i+1)), UpdateAny); err != nil {
				t.Fatal(err)
			}
		}
		m.Delete(k32(4))
		return m.(*Hash)
	}
	want := []string{}
	for i := uint32(0); i < 4; i++ {
		want = append(want, string(k32(i))+"="+string(val(8, byte(i+1))))
	}
	tests := []struct {
		name   string
		damage func(h *Hash)
		check  func(t *testing.T, r Repair)
	}{
		{name: "clean", damage: func(h *Hash) {}, check: func(t *testing.T, r Repair) {
			if r != (Repair{}) {
				t.Fatalf("repairs %+v", r)
			}
		}},
		{name: "bucket left locked", damage: func(h *Hash) {
			b := h.bucketOf(mapview.Hash(h.seed, k32(1)))
			atomic.AddUint32(h.u32(b), 1)
		}, check: func(t *testing.T, r Repair) {
			if r.Unlocked != 1 {
				t.Fatalf("repairs %+v", r)
			}
		}},
		{name: "allocated entry never linked", damage: func(h *Hash) {
			if h.alloc(0) == 0 {
				panic("full")
			}
		}, check: func(t *testing.T, r Repair) {
			if r.Leaked != 1 {
				t.Fatalf("repairs %+v", r)
			}
		}},
		{name: "freelist push interrupted", damage: func(h *Hash) {
			// The entry of a deleted key, unlinked but not yet pushed.
			hv := mapview.Hash(h.seed, k32(3))
			b := h.bucketOf(hv)
			e, prev := h.find(b, hv, k32(3))
			h.unlink(b, e, prev)
		}, check: func(t *testing.T, r Repair) {
			if r.Leaked != 1 {
				t.Fatalf("repairs %+v", r)
			}
		}},
		{name: "replace interrupted after publishing", damage: func(h *Hash) {
			// The new copy of key 2 is at the head, the old one still
			// linked, the spare not yet swapped.
			hv := mapview.Hash(h.seed, k32(2))
			b := h.bucketOf(hv)
			st := h.slotOff(0) + slotExtra
			n := h.load(st)
			h.fill(n, hv, k32(2), val(8, 3), 0, true)
			h.store(h.ent(n), h.load(b+4))
			h.store(b+4, n)
			h.store(st, 0) // as if the spare word were mid-update
		}, check: func(t *testing.T, r Repair) {
			if r.Duplicates != 1 {
				t.Fatalf("repairs %+v", r)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			tc.damage(h)
			fd := memfdCopy(t, h)
			m, rep, err := Open(fd, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			tc.check(t, rep)
			w := want
			if tc.name == "freelist push interrupted" {
				w = want[:3]
			}
			if tc.name == "replace interrupted after publishing" {
				w = append(append([]string{}, want[:2]...), string(k32(2))+"="+string(val(8, 3)), want[3])
			}
			got := dump(t, m, s)
			if !sameSet(got, w) {
				t.Fatalf("contents after repair:\n got %q\nwant %q", got, w)
			}
			// Every entry is usable again: the map fills to max_entries.
			for i := uint32(10); ; i++ {
				err := m.Update(k32(i), val(8, 1), UpdateNoExist)
				if errors.Is(err, ErrFull) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if i > 100 {
					t.Fatal("map never fills")
				}
			}
			if n := len(dump(t, m, s)); n != int(s.MaxEntries) {
				t.Fatalf("full map holds %d keys, want %d", n, s.MaxEntries)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestOpenRefuses feeds Open regions it must refuse.
func TestOpenRefuses(t *testing.T) {
	s := Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 8}
	tests := []struct {
		name   string
		damage func(mem []byte)
	}{
		{name: "bad magic", damage: func(mem []byte) { mem[0] = 'X' }},
		{name: "other version", damage: func(mem []byte) { mem[mapview.OffVersion] = 9 }},
		{name: "other cpu count", damage: func(mem []byte) { mem[mapview.OffNCPU] = 99 }},
		{name: "max entries changed", damage: func(mem []byte) { mem[mapview.OffMaxEntries] = 100 }},
		{name: "unknown type", damage: func(mem []byte) { mem[mapview.OffType] = 200 }},
		{name: "bump beyond max", damage: func(mem []byte) { ne.PutUint32(mem[mapview.OffBump:], 99) }},
		{name: "frozen word garbage", damage: func(mem []byte) { mem[mapview.OffFrozen] = 7 }},
		{name: "retired snapshot", damage: func(mem []byte) { mem[mapview.OffRetired] = 1 }},
		{name: "chain out of range", damage: func(mem []byte) {
			l, _ := s.layout(defaultNCPU())
			ne.PutUint32(mem[l.BucketOff+4:], 1000)
		}},
		{name: "chain cycle", damage: func(mem []byte) {
			l, _ := s.layout(defaultNCPU())
			// Entry 1 links to itself.
			for b := uint64(0); b < uint64(l.NBuckets); b++ {
				if e := ne.Uint32(mem[l.BucketOff+8*b+4:]); e != 0 {
					ne.PutUint32(mem[l.EntOff+uint64(e-1)*l.EntSize:], e)
					return
				}
			}
		}},
		{name: "wrong hash", damage: func(mem []byte) {
			l, _ := s.layout(defaultNCPU())
			mem[l.EntOff+l.KeyOff] ^= 0xff // key of entry 1 changed
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustNew(t, s)
			m.Update(k32(1), v1, 0)
			fd := memfdCopy(t, m)
			mem, err := unix.Mmap(fd, 0, int(m.MemoryUsage()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(mem)
			unix.Munmap(mem)
			m2, _, err := Open(fd, "", nil)
			if err == nil {
				m2.Close()
				t.Fatal("Open accepted a damaged region")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
		})
	}
}

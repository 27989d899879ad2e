package maps

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

func mapviewBump() int { return mapview.OffBump }

// FuzzHash runs the operation sequence encoded in data against a hash map
// and a Go reference model: every result and the final contents must agree.
// Each op is 4 bytes: op, key (2 bytes), value/flags byte.
func FuzzHash(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 1, 0, 3, 0, 1, 0, 4, 0, 0, 0, 5, 0, 0})
	f.Add([]byte{0, 1, 1, 9, 1, 1, 1, 0, 2, 1, 1, 0, 3, 9, 9, 0, 4, 1, 1, 0, 5, 7, 7, 0})
	f.Add([]byte{6, 0, 0, 0, 0, 1, 0, 1, 7, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 4
		s := Spec{Type: TypeHash, KeySize: 2, ValueSize: 3, MaxEntries: max}
		m := mustNew(t, s)
		ref := map[[2]byte][3]byte{}
		out, next := make([]byte, 3), make([]byte, 2)
		b := batchBuf(s, max)
		for len(data) >= 4 {
			op, k, x := data[0]%8, [2]byte{data[1], data[2]}, data[3]
			data = data[4:]
			v := [3]byte{x, x ^ 0xff, x + 1}
			old, present := ref[k]
			switch op {
			case 0: // update with flags x%4 (3 is invalid)
				fl := uint64(x % 4)
				err := m.Update(k[:], v[:], fl)
				var want error
				switch {
				case fl == 3:
					want = ErrInvalidFlags
				case fl == UpdateNoExist && present:
					want = ErrKeyExist
				case fl == UpdateExist && !present:
					want = ErrKeyNotExist
				case !present && len(ref) == max:
					want = ErrFull
				}
				if !errors.Is(err, want) && !(err == nil && want == nil) {
					t.Fatalf("Update(%x, flags %d) = %v, want %v", k, fl, err, want)
				}
				if want == nil {
					ref[k] = v
				}
			case 1, 2: // lookup
				err := m.Lookup(k[:], out)
				if present != (err == nil) || present && !bytes.Equal(out, old[:]) {
					t.Fatalf("Lookup(%x) = %x, %v; model %x, %v", k, out, err, old, present)
				}
			case 3: // delete
				if err := m.Delete(k[:]); present != (err == nil) {
					t.Fatalf("Delete(%x) = %v, present %v", k, err, present)
				}
				delete(ref, k)
			case 4: // lookup and delete
				err := m.LookupAndDelete(k[:], out)
				if present != (err == nil) || present && !bytes.Equal(out, old[:]) {
					t.Fatalf("LookupAndDelete(%x) = %x, %v; model %x, %v", k, out, err, old, present)
				}
				delete(ref, k)
			case 5: // next key from k
				err := m.NextKey(k[:], next)
				if len(ref) == 0 != (err != nil) && !(present && err != nil) {
					t.Fatalf("NextKey(%x) = %v with %d keys", k, err, len(ref))
				}
				if err == nil {
					if _, ok := ref[[2]byte(next)]; !ok {
						t.Fatalf("NextKey(%x) = %x, not in model", k, next)
					}
				}
			case 6: // lookup and delete batch of x%5 elements
				b.Count, b.HasInBatch = uint32(x%5), false
				err := m.LookupAndDeleteBatch(b)
				for i := uint32(0); i < b.Count; i++ {
					kk := [2]byte(b.Keys[i*2:])
					if ref[kk] != [3]byte(b.Values[i*3:]) {
						t.Fatalf("batch returned %x=%x, model %x", kk, b.Values[i*3:i*3+3], ref[kk])
					}
					delete(ref, kk)
				}
				if err != nil && !errors.Is(err, ErrBatchEnd) && !errors.Is(err, ErrNoSpace) {
					t.Fatalf("LookupAndDeleteBatch: %v", err)
				}
			case 7: // freeze-free program-side update
				if err := m.ProgUpdate(k[:], v[:], UpdateAny); err == nil {
					ref[k] = v
				} else if present || len(ref) < max {
					t.Fatalf("ProgUpdate(%x): %v", k, err)
				}
			}
		}
		// The NextKey walk must visit exactly the model's keys.
		seen := map[[2]byte]bool{}
		var key []byte
		for m.NextKey(key, next) == nil {
			kk := [2]byte(next)
			if seen[kk] {
				t.Fatalf("walk visited %x twice", kk)
			}
			seen[kk] = true
			if err := m.Lookup(next, out); err != nil || [3]byte(out) != ref[kk] {
				t.Fatalf("walk: %x=%x (%v), model %x", kk, out, err, ref[kk])
			}
			key = bytes.Clone(next)
		}
		if len(seen) != len(ref) {
			t.Fatalf("walk saw %d keys, model has %d", len(seen), len(ref))
		}
	})
}

// FuzzOpen corrupts real regions with arbitrary bytes and reopens them:
// Open must refuse or produce a map whose operations work, never panic
// or loop without bound.
func FuzzOpen(f *testing.F) {
	specs := []Spec{
		{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: TypePercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 4},
		{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4},
		{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 8, Flags: FlagNoCommonLRU},
		{Type: TypeLPMTrie, KeySize: 8, ValueSize: 4, MaxEntries: 8, Flags: FlagNoPrealloc},
		{Type: TypeQueue, ValueSize: 4, MaxEntries: 4},
	}
	var templates [][]byte
	for _, s := range specs {
		m, err := New(s)
		if err != nil {
			f.Fatal(err)
		}
		for i := uint32(0); i < s.MaxEntries; i += 2 {
			key := k32(i)
			switch s.Type {
			case TypeLPMTrie:
				key = lpmKey(8+i, byte(i), 1, 2, 3)
			case TypeQueue:
				key = nil
			}
			m.Update(key, make([]byte, s.SyscallValueSize()), 0)
		}
		m.Delete(k32(2))
		b := make([]byte, m.MemoryUsage())
		if _, err := unix.Pread(m.FD(), b, 0); err != nil {
			f.Fatal(err)
		}
		templates = append(templates, b)
		m.Close()
	}
	f.Add(byte(0), uint32(4096), []byte{1})
	f.Add(byte(0), uint32(mapviewBump()), []byte{3})
	f.Add(byte(1), uint32(8192), bytes.Repeat([]byte{0xff}, 32))
	f.Add(byte(2), uint32(4096), []byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, which byte, off uint32, data []byte) {
		mem := bytes.Clone(templates[int(which)%len(templates)])
		o := int(off) % len(mem)
		for i, b := range data {
			if o+i < len(mem) {
				mem[o+i] ^= b
			}
		}
		fd, err := unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Pwrite(fd, mem, 0); err != nil {
			t.Fatal(err)
		}
		m, _, err := Open(fd, "", nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			return
		}
		defer m.Close()
		s := m.Spec()
		v := make([]byte, s.SyscallValueSize())
		next := make([]byte, s.KeySize)
		for i := uint32(0); i < 12; i++ {
			key := make([]byte, s.KeySize)
			if len(key) >= 4 {
				ne.PutUint32(key, i)
			}
			m.Lookup(key, v)
			m.Update(key, v, UpdateAny)
			m.NextKey(key, next)
			m.LookupAndDelete(key, v)
			if i%3 == 0 {
				m.Delete(key)
			}
		}
		var key []byte
		for i := 0; i <= int(s.MaxEntries)+1; i++ {
			if m.NextKey(key, next) != nil {
				break
			}
			key = bytes.Clone(next)
		}
	})
}

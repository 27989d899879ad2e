package maps

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// contents lists a map's key=value pairs in sorted order, walking it with
// NextKey like a client would.
func contents(t *testing.T, m ops, s Spec) []string {
	t.Helper()
	var out []string
	var key []byte
	next := make([]byte, s.KeySize)
	v := make([]byte, s.SyscallValueSize())
	for i := 0; ; i++ {
		if i > int(s.MaxEntries) {
			t.Fatalf("NextKey walk longer than max_entries")
		}
		if err := m.NextKey(key, next); err != nil {
			if errnoOf(err) != 2 {
				t.Fatalf("NextKey: %v", err)
			}
			break
		}
		if err := m.Lookup(next, v); err != nil {
			t.Fatalf("Lookup(%x) after NextKey: %v", next, err)
		}
		out = append(out, fmt.Sprintf("%x=%x", next, v))
		key = bytes.Clone(next)
	}
	slices.Sort(out)
	return out
}

// TestDifferential runs random operation sequences on bpfd and kernel maps
// side by side and compares every errno, every value and the final contents.
func TestDifferential(t *testing.T) {
	needKernel(t)
	specs := []Spec{
		{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: TypeHash, KeySize: 4, ValueSize: 3, MaxEntries: 5, Flags: FlagNoPrealloc},
		{Type: TypeHash, KeySize: 13, ValueSize: 8, MaxEntries: 3},
		{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: TypeArray, KeySize: 4, ValueSize: 5, MaxEntries: 3},
		{Type: TypePercpuHash, KeySize: 4, ValueSize: 3, MaxEntries: 4},
		{Type: TypePercpuHash, KeySize: 8, ValueSize: 16, MaxEntries: 6, Flags: FlagNoPrealloc},
		{Type: TypePercpuArray, KeySize: 4, ValueSize: 5, MaxEntries: 5},
	}
	for _, s := range specs {
		for seed := uint64(1); seed <= 8; seed++ {
			t.Run(fmt.Sprintf("type%d_k%d_v%d_max%d_seed%d", s.Type, s.KeySize, s.ValueSize, s.MaxEntries, seed), func(t *testing.T) {
				m, k := newPair(t, s)
				r := rand.New(rand.NewPCG(seed, 42))
				keyOf := func() []byte {
					b := make([]byte, s.KeySize)
					ne.PutUint32(b, uint32(r.IntN(int(s.MaxEntries)*2)))
					return b
				}
				vs := s.SyscallValueSize()
				vm, vk := make([]byte, vs), make([]byte, vs)
				nm, nk := make([]byte, s.KeySize), make([]byte, s.KeySize)
				for i := 0; i < 400; i++ {
					key := keyOf()
					var em, ek error
					what := ""
					switch op := r.IntN(10); {
					case op < 4:
						v := make([]byte, vs)
						for j := range v {
							v[j] = byte(r.Uint32())
						}
						f := uint64(r.IntN(5))
						if f == 4 {
							f = UpdateAny
						}
						what = fmt.Sprintf("update %x flags %d", key, f)
						em, ek = m.Update(key, v, f), k.Update(key, v, f)
					case op < 6:
						what = "lookup " + fmt.Sprintf("%x", key)
						em, ek = m.Lookup(key, vm), k.Lookup(key, vk)
						if em == nil && ek == nil && !bytes.Equal(vm, vk) {
							t.Fatalf("op %d %s: value %x, kernel %x", i, what, vm, vk)
						}
					case op < 8:
						what = "delete " + fmt.Sprintf("%x", key)
						em, ek = m.Delete(key), k.Delete(key)
					case op < 9:
						what = "lookup_and_delete " + fmt.Sprintf("%x", key)
						em, ek = m.LookupAndDelete(key, vm), k.LookupAndDelete(key, vk)
						if em == nil && ek == nil && !bytes.Equal(vm, vk) {
							t.Fatalf("op %d %s: value %x, kernel %x", i, what, vm, vk)
						}
					default:
						what = "next " + fmt.Sprintf("%x", key)
						present := k.Lookup(key, vk) == nil
						em, ek = m.NextKey(key, nm), k.NextKey(key, nk)
						if s.Type != TypeArray && s.Type != TypePercpuArray && present {
							// The successor of a present key depends on
							// hash order, which differs from the kernel's
							// (random seeds on both sides); the walk in
							// contents checks iteration as a whole.
							if em == nil && m.Lookup(nm, vm) != nil {
								t.Fatalf("op %d %s: next %x not in map", i, what, nm)
							}
							continue
						}
						if em == nil && ek == nil && (s.Type == TypeArray || s.Type == TypePercpuArray) && !bytes.Equal(nm, nk) {
							t.Fatalf("op %d %s: next %x, kernel %x", i, what, nm, nk)
						}
					}
					if errnoOf(em) != errnoOf(ek) {
						t.Fatalf("op %d %s: bpfd %v, kernel %v", i, what, em, ek)
					}
				}
				if cm, ck := contents(t, m, s), contents(t, k, s); !slices.Equal(cm, ck) {
					t.Fatalf("final contents differ:\n bpfd   %v\n kernel %v", cm, ck)
				}
			})
		}
	}
}

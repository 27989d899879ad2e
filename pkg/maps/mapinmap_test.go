package maps

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelCreateInner creates a kernel map with inner_map_fd set.
func kernelCreateInner(s Spec, inner int) (int, error) {
	a := createAttr{mapType: s.Type, keySize: s.KeySize, valueSize: s.ValueSize, maxEntries: s.MaxEntries,
		mapFlags: s.Flags, innerMapFd: uint32(inner)}
	fd, err := bpf(bpfMapCreate, unsafe.Pointer(&a), unsafe.Sizeof(a))
	return int(fd), err
}

var (
	innerHash   = Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	innerArray  = Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	innerArrayI = Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagInnerMap}
)

// TestMapInMapCreateKernel compares map-of-maps creation with the kernel:
// outer parameters and inner templates of every type bpfd implements.
func TestMapInMapCreateKernel(t *testing.T) {
	needKernel(t)
	aom := Spec{Type: TypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}
	hom := Spec{Type: TypeHashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}
	with := func(s Spec, f func(*Spec)) Spec { f(&s); return s }
	outerOf := Spec{Type: TypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2, Inner: &innerHash}
	tests := []struct {
		name  string
		outer Spec
		inner *Spec // nil: no template
	}{
		{name: "array of hash", outer: aom, inner: &innerHash},
		{name: "hash of hash", outer: hom, inner: &innerHash},
		{name: "array of array", outer: aom, inner: &innerArray},
		{name: "array of inner-map array", outer: aom, inner: &innerArrayI},
		{name: "array of mmapable array", outer: aom, inner: &Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagMmapable}},
		{name: "array of percpu hash", outer: aom, inner: &Spec{Type: TypePercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{name: "hash of percpu array", outer: hom, inner: &Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{name: "array of lru", outer: aom, inner: &Spec{Type: TypeLRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{name: "array of lpm", outer: aom, inner: &Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}},
		{name: "array of queue", outer: aom, inner: &Spec{Type: TypeQueue, ValueSize: 8, MaxEntries: 4}},
		{name: "hash of ringbuf", outer: hom, inner: &Spec{Type: TypeRingbuf, MaxEntries: 4096}},
		{name: "array of bloom", outer: aom, inner: &Spec{Type: TypeBloomFilter, ValueSize: 8, MaxEntries: 4}},
		{name: "array of prog array", outer: aom, inner: &Spec{Type: TypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}},
		{name: "hash of prog array", outer: hom, inner: &Spec{Type: TypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}},
		{name: "array of array of maps", outer: aom, inner: &outerOf},
		{name: "no template", outer: aom},
		{name: "hash no template", outer: hom},
		{name: "value size 8", outer: with(aom, func(s *Spec) { s.ValueSize = 8 }), inner: &innerHash},
		{name: "key size 8", outer: with(aom, func(s *Spec) { s.KeySize = 8 }), inner: &innerHash},
		{name: "max entries 0", outer: with(aom, func(s *Spec) { s.MaxEntries = 0 }), inner: &innerHash},
		{name: "array rdonly prog", outer: with(aom, func(s *Spec) { s.Flags = FlagRdonlyProg }), inner: &innerHash},
		{name: "array rdonly", outer: with(aom, func(s *Spec) { s.Flags = FlagRdonly }), inner: &innerHash},
		{name: "array mmapable", outer: with(aom, func(s *Spec) { s.Flags = FlagMmapable }), inner: &innerHash},
		{name: "array inner-map flag", outer: with(aom, func(s *Spec) { s.Flags = FlagInnerMap }), inner: &innerHash},
		{name: "hash value size 8", outer: with(hom, func(s *Spec) { s.ValueSize = 8 }), inner: &innerHash},
		{name: "hash key size 0", outer: with(hom, func(s *Spec) { s.KeySize = 0 }), inner: &innerHash},
		{name: "hash no prealloc", outer: with(hom, func(s *Spec) { s.Flags = FlagNoPrealloc }), inner: &innerHash},
		{name: "hash wronly prog", outer: with(hom, func(s *Spec) { s.Flags = FlagWronlyProg }), inner: &innerHash},
		{name: "hash rdonly", outer: with(hom, func(s *Spec) { s.Flags = FlagRdonly }), inner: &innerHash},
		{name: "hash no common lru", outer: with(hom, func(s *Spec) { s.Flags = FlagNoCommonLRU }), inner: &innerHash},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The kernel: the template is a real map whose fd is passed.
			ifd := 0 // no template: fd 0 is no map (EINVAL)
			if tc.inner != nil {
				var err error
				if tc.inner.isMapInMap() {
					fd, err := kernelCreateInner(Spec{Type: tc.inner.Type, KeySize: 4, ValueSize: 4, MaxEntries: 2}, mustKernelFD(t, *tc.inner.Inner))
					if err != nil {
						t.Fatal(err)
					}
					ifd = fd
				} else if ifd, err = newKernelFD(*tc.inner); err != nil {
					t.Fatalf("template: %v", err)
				}
				defer unix.Close(ifd)
			}
			kfd, kerr := kernelCreateInner(tc.outer, ifd)
			if kerr == nil {
				unix.Close(kfd)
			}
			s := tc.outer
			s.Inner = tc.inner
			m, err := New(s)
			if err == nil {
				m.Close()
			}
			if errnoOf(err) != errnoOf(kerr) {
				t.Fatalf("bpfd %v, kernel %v", err, kerr)
			}
		})
	}
}

func mustKernelFD(t *testing.T, s Spec) int {
	t.Helper()
	fd, err := newKernelFD(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestMapInMapUpdateKernel compares storing maps in maps of maps with the
// kernel: the template compatibility rules (Compatible), the update flags
// and the errnos of the element commands.
func TestMapInMapUpdateKernel(t *testing.T) {
	needKernel(t)
	type step struct {
		name  string
		op    string // "update", "lookup", "delete", "lookupdel", "freeze"
		key   uint32
		inner *Spec // update: the map stored
		flags uint64
	}
	pcpu := Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	tests := []struct {
		name  string
		outer Spec
		tmpl  Spec
		steps []step
	}{
		{name: "array of hash", outer: Spec{Type: TypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}, tmpl: innerHash,
			steps: []step{
				{name: "same shape", op: "update", key: 0, inner: &innerHash},
				{name: "other max entries (hash: allowed)", op: "update", key: 1, inner: &Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 100}},
				{name: "other value size", op: "update", key: 1, inner: &Spec{Type: TypeHash, KeySize: 4, ValueSize: 16, MaxEntries: 4}},
				{name: "other key size", op: "update", key: 1, inner: &Spec{Type: TypeHash, KeySize: 8, ValueSize: 8, MaxEntries: 4}},
				{name: "other flags", op: "update", key: 1, inner: &Spec{Type: TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagNoPrealloc}},
				{name: "other type", op: "update", key: 1, inner: &innerArray},
				{name: "noexist flag", op: "update", key: 1, inner: &innerHash, flags: UpdateNoExist},
				{name: "exist flag", op: "update", key: 1, inner: &innerHash, flags: UpdateExist},
				{name: "out of range", op: "update", key: 2, inner: &innerHash},
				{name: "lookup", op: "lookup", key: 0},
				{name: "lookup empty", op: "lookup", key: 1},
				{name: "lookup out of range", op: "lookup", key: 5},
				{name: "lookup and delete", op: "lookupdel", key: 0},
				{name: "delete", op: "delete", key: 0},
				{name: "delete empty", op: "delete", key: 0},
				{name: "delete out of range", op: "delete", key: 5},
				{name: "freeze", op: "freeze"},
				{name: "update frozen", op: "update", key: 0, inner: &innerHash},
			}},
		{name: "array of array", outer: Spec{Type: TypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}, tmpl: innerArray,
			steps: []step{
				{name: "same shape", op: "update", key: 0, inner: &innerArray},
				{name: "other max entries", op: "update", key: 1, inner: &Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 8}},
				{name: "inner-map flag on the inner only", op: "update", key: 1, inner: &innerArrayI},
			}},
		{name: "array of inner-map arrays", outer: Spec{Type: TypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}, tmpl: innerArrayI,
			steps: []step{
				{name: "other max entries", op: "update", key: 0, inner: &Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 64, Flags: FlagInnerMap}},
				{name: "without the flag", op: "update", key: 1, inner: &innerArray},
			}},
		{name: "hash of percpu arrays", outer: Spec{Type: TypeHashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}, tmpl: pcpu,
			steps: []step{
				{name: "same", op: "update", key: 7, inner: &pcpu},
				{name: "other max entries", op: "update", key: 8, inner: &Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 9}},
				{name: "full", op: "update", key: 9, inner: &pcpu},
				{name: "noexist present", op: "update", key: 7, inner: &pcpu, flags: UpdateNoExist},
				{name: "exist absent", op: "update", key: 9, inner: &pcpu, flags: UpdateExist},
				{name: "exist present", op: "update", key: 7, inner: &pcpu, flags: UpdateExist},
				{name: "bad flags", op: "update", key: 7, inner: &pcpu, flags: UpdateLock},
				{name: "lookup", op: "lookup", key: 7},
				{name: "lookup absent", op: "lookup", key: 1},
				{name: "lookup and delete", op: "lookupdel", key: 7},
				{name: "delete", op: "delete", key: 7},
				{name: "delete absent", op: "delete", key: 7},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tfd := mustKernelFD(t, tc.tmpl)
			kfd, err := kernelCreateInner(tc.outer, tfd)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(kfd)
			k := &kernelMap{fd: kfd, spec: tc.outer}
			s := tc.outer
			tmpl := tc.tmpl
			s.Inner = &tmpl
			bm, err := New(s)
			if err != nil {
				t.Fatal(err)
			}
			defer bm.Close()
			// ids: the kernel's map ids and bpfd's stand-in ids (any
			// non-zero number the layer above would use) must both
			// come back from lookups of the same slot.
			kids, bids := map[uint32]uint32{}, map[uint32]uint32{}
			nextID := uint32(100)
			for _, st := range tc.steps {
				var kerr, berr error
				switch st.op {
				case "update":
					ifd := mustKernelFD(t, *st.inner)
					var v [4]byte
					ne.PutUint32(v[:], uint32(ifd))
					kerr = k.Update(k32(st.key), v[:], st.flags)
					// bpfd: the layer above checks the template, then stores an id.
					if berr = Compatible(*st.inner, tmpl); berr == nil {
						nextID++
						ne.PutUint32(v[:], nextID)
						berr = bm.Update(k32(st.key), v[:], st.flags)
					}
					if kerr == nil {
						kids[st.key] = kernelMapID(t, ifd)
					}
					if berr == nil {
						bids[st.key] = nextID
					}
				case "lookup":
					var kv, bv [4]byte
					kerr = k.Lookup(k32(st.key), kv[:])
					berr = bm.Lookup(k32(st.key), bv[:])
					if kerr == nil && berr == nil {
						if ne.Uint32(kv[:]) != kids[st.key] {
							t.Errorf("%s: kernel lookup gave id %d, want %d", st.name, ne.Uint32(kv[:]), kids[st.key])
						}
						if ne.Uint32(bv[:]) != bids[st.key] {
							t.Errorf("%s: bpfd lookup gave id %d, want %d", st.name, ne.Uint32(bv[:]), bids[st.key])
						}
						if o, ok := bm.(Outer); !ok || o.InnerID(0, k32(st.key)) != bids[st.key] {
							t.Errorf("%s: program-side InnerID disagrees with the lookup", st.name)
						}
					}
				case "lookupdel":
					var kv, bv [4]byte
					kerr = k.LookupAndDelete(k32(st.key), kv[:])
					berr = bm.LookupAndDelete(k32(st.key), bv[:])
				case "delete":
					kerr = k.Delete(k32(st.key))
					berr = bm.Delete(k32(st.key))
					if berr == nil && bm.(Outer).InnerID(0, k32(st.key)) != 0 {
						t.Errorf("%s: InnerID still finds the deleted slot", st.name)
					}
				case "freeze":
					kerr, berr = k.Freeze(), bm.Freeze()
				}
				if errnoOf(kerr) != errnoOf(berr) {
					t.Errorf("%s: bpfd %v, kernel %v", st.name, berr, kerr)
				}
			}
		})
	}
}

// kernelMapID returns the id of kernel map fd (BPF_OBJ_GET_INFO_BY_FD).
func kernelMapID(t *testing.T, fd int) uint32 {
	t.Helper()
	var info [88]byte // struct bpf_map_info: type, id, ...
	a := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(fd), uint32(len(info)), uint64(uintptr(unsafe.Pointer(&info[0])))}
	if _, err := bpf(15, unsafe.Pointer(&a), unsafe.Sizeof(a)); err != nil {
		t.Fatal(err)
	}
	return ne.Uint32(info[4:])
}

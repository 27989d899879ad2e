package maps

import (
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRedirectMapCreateKernel compares the creation rules of DEVMAP,
// DEVMAP_HASH, CPUMAP and XSKMAP with the kernel, and the flags the
// kernel records (device maps gain BPF_F_RDONLY_PROG).
func TestRedirectMapCreateKernel(t *testing.T) {
	needKernel(t)
	tests := []struct {
		name string
		s    Spec
	}{
		{"devmap 4", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 4}},
		{"devmap 8", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{"devmap 6", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 6, MaxEntries: 4}},
		{"devmap 12", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 12, MaxEntries: 4}},
		{"devmap key 8", Spec{Type: TypeDevmap, KeySize: 8, ValueSize: 4, MaxEntries: 4}},
		{"devmap no entries", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4}},
		{"devmap rdonly prog", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagRdonlyProg}},
		{"devmap wronly prog", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagWronlyProg}},
		{"devmap rdonly", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagRdonly}},
		{"devmap no prealloc", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagNoPrealloc}},
		{"devmap zero seed", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagZeroSeed}},
		{"devmap_hash 4", Spec{Type: TypeDevmapHash, KeySize: 4, ValueSize: 4, MaxEntries: 4}},
		{"devmap_hash 8 wronly", Spec{Type: TypeDevmapHash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagWronly}},
		{"devmap_hash key 8", Spec{Type: TypeDevmapHash, KeySize: 8, ValueSize: 4, MaxEntries: 4}},
		{"devmap_hash too many", Spec{Type: TypeDevmapHash, KeySize: 4, ValueSize: 4, MaxEntries: 1<<31 + 1}},
		{"cpumap 4", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: 4}},
		{"cpumap 8", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{"cpumap 12", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 12, MaxEntries: 4}},
		{"cpumap NR_CPUS", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: nrCPUs()}},
		{"cpumap NR_CPUS+1", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: nrCPUs() + 1}},
		{"cpumap rdonly", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagRdonly}},
		{"cpumap rdonly prog", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagRdonlyProg}},
		{"xskmap", Spec{Type: TypeXSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4}},
		{"xskmap 8", Spec{Type: TypeXSKMap, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{"xskmap rdonly prog", Spec{Type: TypeXSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagRdonlyProg}},
		{"xskmap wronly", Spec{Type: TypeXSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: FlagWronly}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fd, kerr := newKernelFD(tc.s)
			var kflags uint32
			if kerr == nil {
				kflags = kernelMapFlags(t, fd)
				unix.Close(fd)
			}
			m, err := New(tc.s)
			if errnoOf(err) != errnoOf(kerr) {
				t.Fatalf("bpfd %v, kernel %v", err, kerr)
			}
			if err == nil {
				defer m.Close()
				// The kernel keeps BPF_F_RDONLY/WRONLY on the fd,
				// not in the map's flags (for every type).
				if m.Spec().Flags&^(FlagRdonly|FlagWronly) != kflags {
					t.Errorf("flags %#x, kernel %#x", m.Spec().Flags, kflags)
				}
			}
		})
	}
}

// kernelMapFlags returns the map_flags the kernel records for map fd.
func kernelMapFlags(t *testing.T, fd int) uint32 {
	t.Helper()
	var info [88]byte
	getKernelInfo(t, fd, info[:])
	return ne.Uint32(info[20:])
}

// TestRedirectMapOpsKernel runs the same element operations on each
// redirect map type in bpfd and the kernel: update validation (ifindex,
// queue size, CPU, program fds, flags), lookups, deletes, next keys,
// batches.
func TestRedirectMapOpsKernel(t *testing.T) {
	needKernel(t)
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	ncpu := uint32(defaultNCPU())
	v := func(a, b uint32) []byte {
		x := make([]byte, 8)
		ne.PutUint32(x, a)
		ne.PutUint32(x[4:], b)
		return x
	}
	type step struct {
		name  string
		op    string // update, lookup, delete, next, lookupdel, updatebatch, deletebatch, lookupbatch
		key   uint32
		value []byte // update: first ValueSize bytes used
		flags uint64
	}
	devSteps := []step{
		{"lo", "update", 0, v(1, 0), 0},
		{"noexist present", "update", 0, v(1, 0), UpdateNoExist},
		{"noexist absent", "update", 1, v(1, 0), UpdateNoExist},
		{"exist absent", "update", 1, v(1, 0), UpdateExist},
		{"bad flags", "update", 1, v(1, 0), 4},
		{"no such ifindex", "update", 1, v(999999, 0), 0},
		{"ifindex 0", "update", 1, v(0, 0), 0},
		{"ifindex 0 with a program", "update", 1, v(0, 5), 0},
		{"lo with a program", "update", 1, v(1, 1), 0},
		{"lo without a program", "update", 1, v(1, 0xffffffff), 0},
		{"index out of range", "update", 2, v(1, 0), 0},
		{"full", "update", 7, v(1, 0), 0},
		{"lookup 0", "lookup", 0, nil, 0},
		{"lookup 1", "lookup", 1, nil, 0},
		{"lookup out of range", "lookup", 9, nil, 0},
		{"next first", "next", ^uint32(0), nil, 0},
		{"next after absent", "next", 9, nil, 0},
		{"next after 0", "next", 0, nil, 0},
		{"all keys", "walk", 0, nil, 0},
		{"batch lookup", "lookupbatch", 0, nil, 0},
		{"lookup and delete", "lookupdel", 0, nil, 0},
		{"delete 1", "delete", 1, nil, 0},
		{"lookup deleted", "lookup", 1, nil, 0},
		{"delete again", "delete", 1, nil, 0},
		{"delete out of range", "delete", 9, nil, 0},
		{"batch update", "updatebatch", 1, v(1, 0), 0},
		{"batch update bad ifindex", "updatebatch", 1, v(999999, 0), 0},
		{"batch delete", "deletebatch", 1, nil, 0},
	}
	cpuSteps := []step{
		{"qsize 64", "update", 0, v(64, 0), 0},
		{"noexist", "update", 1, v(64, 0), UpdateNoExist},
		{"bad flags", "update", 1, v(64, 0), 4},
		{"qsize 16384", "update", 1, v(16384, 0), 0},
		{"qsize 16385", "update", 1, v(16385, 0), 0},
		{"qsize 0 empties", "update", 1, v(0, 0), 0},
		{"lookup emptied", "lookup", 1, nil, 0},
		{"program", "update", 1, v(64, 1), 0},
		{"no program", "update", 1, v(64, 0xffffffff), 0},
		{"not a possible cpu", "update", ncpu, v(64, 0), 0},
		{"index out of range", "update", ncpu + 2, v(64, 0), 0},
		{"lookup 0", "lookup", 0, nil, 0},
		{"next first", "next", ^uint32(0), nil, 0},
		{"lookup and delete", "lookupdel", 0, nil, 0},
		{"batch update", "updatebatch", 0, v(64, 0), 0},
		{"batch lookup", "lookupbatch", 0, nil, 0},
		{"delete", "delete", 0, nil, 0},
		{"delete again", "delete", 0, nil, 0},
		{"delete out of range", "delete", ncpu + 5, nil, 0},
	}
	xskSteps := []step{
		{"a socket that is no AF_XDP socket", "update", 0, v(uint32(sock), 0), 0},
		{"noexist", "update", 0, v(uint32(sock), 0), UpdateNoExist},
		{"bad flags", "update", 0, v(uint32(sock), 0), 4},
		{"index out of range", "update", 2, v(uint32(sock), 0), 0},
		{"lookup", "lookup", 0, nil, 0},
		{"lookup out of range", "lookup", 9, nil, 0},
		{"next first", "next", ^uint32(0), nil, 0},
		{"delete", "delete", 0, nil, 0},
		{"delete out of range", "delete", 9, nil, 0},
		{"lookup and delete", "lookupdel", 0, nil, 0},
		{"batch delete", "deletebatch", 0, nil, 0},
	}
	tests := []struct {
		name  string
		s     Spec
		steps []step
	}{
		{"devmap 4", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 4, MaxEntries: 2}, devSteps},
		{"devmap 8", Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 8, MaxEntries: 2}, devSteps},
		{"devmap_hash 4", Spec{Type: TypeDevmapHash, KeySize: 4, ValueSize: 4, MaxEntries: 2}, devSteps},
		{"devmap_hash 8", Spec{Type: TypeDevmapHash, KeySize: 4, ValueSize: 8, MaxEntries: 2}, devSteps},
		{"cpumap 4", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: ncpu + 1}, cpuSteps},
		{"cpumap 8", Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 8, MaxEntries: ncpu + 1}, cpuSteps},
		{"xskmap", Spec{Type: TypeXSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 2}, xskSteps},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := newKernelMap(t, tc.s)
			if err != nil {
				t.Fatal(err)
			}
			m := mustNew(t, tc.s)
			vs := int(tc.s.ValueSize)
			for _, st := range tc.steps {
				var kerr, berr error
				switch st.op {
				case "update":
					kerr = k.Update(k32(st.key), st.value[:vs], st.flags)
					berr = m.Update(k32(st.key), st.value[:vs], st.flags)
				case "lookup":
					kv, bv := make([]byte, vs), make([]byte, vs)
					kerr, berr = k.Lookup(k32(st.key), kv), m.Lookup(k32(st.key), bv)
					if kerr == nil && berr == nil && string(kv) != string(bv) {
						t.Errorf("%s: bpfd %x, kernel %x", st.name, bv, kv)
					}
				case "lookupdel":
					kv, bv := make([]byte, vs), make([]byte, vs)
					kerr, berr = k.LookupAndDelete(k32(st.key), kv), m.LookupAndDelete(k32(st.key), bv)
				case "delete":
					kerr, berr = k.Delete(k32(st.key)), m.Delete(k32(st.key))
				case "walk":
					kk, bk := walkRedirectKeys(k), walkRedirectKeys(m)
					if kk != bk {
						t.Errorf("%s: bpfd keys %v, kernel keys %v", st.name, bk, kk)
					}
				case "lookupbatch":
					kb := &Batch{Keys: make([]byte, 16), Values: make([]byte, 4*vs), Count: 4}
					bb := &Batch{Keys: make([]byte, 16), Values: make([]byte, 4*vs), Count: 4}
					kerr, berr = k.LookupBatch(kb), m.LookupBatch(bb)
				case "next":
					if st.key == 0 && tc.s.Type == TypeDevmapHash {
						continue // hash order differs; "walk" compares the keys
					}
					var key []byte
					if st.key != ^uint32(0) {
						key = k32(st.key)
					}
					kn, bn := make([]byte, 4), make([]byte, 4)
					kerr, berr = k.NextKey(key, kn), m.NextKey(key, bn)
					if kerr == nil && berr == nil && string(kn) != string(bn) && tc.s.Type != TypeDevmapHash {
						t.Errorf("%s: bpfd %x, kernel %x", st.name, bn, kn)
					}
				case "updatebatch":
					kb := &Batch{Keys: k32(st.key), Values: st.value[:vs], Count: 1}
					bb := &Batch{Keys: k32(st.key), Values: st.value[:vs], Count: 1}
					kerr, berr = k.UpdateBatch(kb), m.UpdateBatch(bb)
					if kb.Count != bb.Count {
						t.Errorf("%s: count bpfd %d, kernel %d", st.name, bb.Count, kb.Count)
					}
				case "deletebatch":
					kb := &Batch{Keys: k32(st.key), Count: 1}
					bb := &Batch{Keys: k32(st.key), Count: 1}
					kerr, berr = k.DeleteBatch(kb), m.DeleteBatch(bb)
				}
				if errnoOf(kerr) != errnoOf(berr) {
					t.Errorf("%s: bpfd %v, kernel %v", st.name, berr, kerr)
				}
			}
		})
	}
}

// getKernelInfo fills info with BPF_OBJ_GET_INFO_BY_FD of fd.
func getKernelInfo(t *testing.T, fd int, info []byte) {
	t.Helper()
	a := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(fd), uint32(len(info)), ptr(info)}
	if _, err := bpf(15, unsafe.Pointer(&a), unsafe.Sizeof(a)); err != nil {
		t.Fatal(err)
	}
}

// walkRedirectKeys returns the set of m's keys (4-byte), walking NextKey from
// the first, as a sorted string.
func walkRedirectKeys(m interface{ NextKey(key, next []byte) error }) string {
	var keys []uint32
	var cur []byte
	next := make([]byte, 4)
	for len(keys) < 64 && m.NextKey(cur, next) == nil {
		keys = append(keys, ne.Uint32(next))
		cur = append([]byte(nil), next...)
	}
	slices.Sort(keys)
	return fmt.Sprint(keys)
}

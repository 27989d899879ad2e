package maps

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// pcv returns a per-CPU syscall value for spec s: CPU c's value is vs
// bytes of fill+c, padding zero, as the kernel returns it.
func pcv(s Spec, fill byte) []byte {
	n := defaultNCPU()
	stride := int(roundUp8(uint64(s.ValueSize)))
	out := make([]byte, stride*n)
	for c := 0; c < n; c++ {
		copy(out[c*stride:], bytes.Repeat([]byte{fill + byte(c)}, int(s.ValueSize)))
	}
	return out
}

var (
	pcArr  = Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}
	pcHash = Spec{Type: TypePercpuHash, KeySize: 4, ValueSize: 12, MaxEntries: 2}
)

var percpuCases = []tableCase{
	{name: "create percpu array", spec: pcArr},
	{name: "create percpu hash", spec: pcHash},
	{name: "create percpu hash no prealloc", spec: withFlags(pcHash, FlagNoPrealloc)},
	{name: "create percpu array mmapable", spec: withFlags(pcArr, FlagMmapable), createErr: unix.EINVAL},
	{name: "create percpu array numa", spec: withFlags(pcArr, FlagNumaNode), createErr: unix.EINVAL},
	{name: "create percpu hash numa", spec: withFlags(pcHash, FlagNumaNode), createErr: unix.EINVAL},
	{name: "create array numa node 0", spec: withFlags(array48, FlagNumaNode)},
	{name: "create percpu hash no common lru", spec: withFlags(pcHash, FlagNoCommonLRU), createErr: unix.EINVAL},
	{name: "create percpu array value 32K", spec: Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 32 << 10, MaxEntries: 1}},
	{name: "create percpu array value above 32K", spec: Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 32<<10 + 1, MaxEntries: 1}, createErr: unix.E2BIG},
	{name: "create percpu hash value above 32K", spec: Spec{Type: TypePercpuHash, KeySize: 4, ValueSize: 32<<10 + 1, MaxEntries: 1}, createErr: unix.E2BIG},
	{name: "create percpu array key 8", spec: Spec{Type: TypePercpuArray, KeySize: 8, ValueSize: 4, MaxEntries: 1}, createErr: unix.EINVAL},
	{name: "create percpu array rdonly prog", spec: withFlags(pcArr, FlagRdonlyProg)},
	{name: "create map_extra on hash", spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 4, MaxEntries: 1, MapExtra: 1}, createErr: unix.EINVAL},

	{name: "percpu array zero filled", spec: pcArr, steps: []step{{op: opLookup, key: k32(3), val: make([]byte, 8*defaultNCPU())}}},
	{name: "percpu array update and lookup", spec: pcArr, steps: []step{
		{op: opUpdate, key: k32(1), val: pcv(pcArr, 10)},
		{op: opLookup, key: k32(1), val: pcv(pcArr, 10)},
		{op: opUpdate, key: k32(1), val: pcv(pcArr, 20), flags: UpdateExist},
		{op: opLookup, key: k32(1), val: pcv(pcArr, 20)},
		{op: opUpdate, key: k32(1), val: pcv(pcArr, 30), flags: UpdateNoExist, want: unix.EEXIST},
		{op: opUpdate, key: k32(4), val: pcv(pcArr, 30), want: unix.E2BIG},
		{op: opUpdate, key: k32(0), val: pcv(pcArr, 30), flags: UpdateLock, want: unix.EINVAL},
		{op: opUpdate, key: k32(0), val: pcv(pcArr, 30), flags: 3, want: unix.EINVAL},
		{op: opLookup, key: k32(4), want: unix.ENOENT},
		{op: opDelete, key: k32(1), want: unix.EINVAL},
		{op: opLookupAndDelete, key: k32(1), want: ENOTSUPP},
		{op: opNext, key: k32(1), val: k32(2)},
		{op: opFreeze},
		{op: opUpdate, key: k32(1), val: pcv(pcArr, 40), want: unix.EPERM},
	}},
	{name: "percpu hash", spec: pcHash, steps: []step{
		{op: opLookup, key: k32(1), want: unix.ENOENT},
		{op: opUpdate, key: k32(1), val: pcv(pcHash, 1), flags: UpdateExist, want: unix.ENOENT},
		{op: opUpdate, key: k32(1), val: pcv(pcHash, 1), flags: UpdateNoExist},
		{op: opLookup, key: k32(1), val: pcv(pcHash, 1)},
		{op: opUpdate, key: k32(1), val: pcv(pcHash, 5)},
		{op: opLookup, key: k32(1), val: pcv(pcHash, 5)},
		{op: opUpdate, key: k32(2), val: pcv(pcHash, 9)},
		{op: opUpdate, key: k32(3), val: pcv(pcHash, 9), want: unix.E2BIG},
		{op: opUpdate, key: k32(2), val: pcv(pcHash, 7), flags: UpdateExist},
		{op: opLookupAndDelete, key: k32(2), val: pcv(pcHash, 7)},
		{op: opUpdate, key: k32(3), val: pcv(pcHash, 3)},
		{op: opDelete, key: k32(1)},
		{op: opDelete, key: k32(1), want: unix.ENOENT},
		{op: opNext, val: k32(3)},
		{op: opUpdate, key: k32(3), val: pcv(pcHash, 3), flags: UpdateLock, want: unix.EINVAL},
	}},
}

func init() { tableCases = append(tableCases, percpuCases...) }

// TestPercpuProgramSide checks that the program side reads and writes the
// caller's CPU's value only, and that a new key's other values start at
// zero, as the kernel's helpers.
func TestPercpuProgramSide(t *testing.T) {
	n := defaultNCPU()
	for _, s := range []Spec{pcArr, pcHash} {
		t.Run(specName(s), func(t *testing.T) {
			m := mustNew(t, s)
			last := n - 1
			v := bytes.Repeat([]byte{0xaa}, int(s.ValueSize))
			if err := m.ProgUpdateOn(last, k32(1), v, UpdateAny); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, s.SyscallValueSize())
			if err := m.Lookup(k32(1), got); err != nil {
				t.Fatal(err)
			}
			stride := int(roundUp8(uint64(s.ValueSize)))
			for c := 0; c < n; c++ {
				want := make([]byte, s.ValueSize)
				if c == last {
					want = v
				}
				if !bytes.Equal(got[c*stride:c*stride+int(s.ValueSize)], want) {
					t.Fatalf("cpu %d value %x, want %x", c, got[c*stride:c*stride+int(s.ValueSize)], want)
				}
			}
			ref := m.ProgLookup(0, k32(1))
			if ref == nil || len(ref) != int(s.ValueSize) {
				t.Fatalf("ProgLookup = %x", ref)
			}
			ref[0] = 0x55
			m.Lookup(k32(1), got)
			if got[0] != 0x55 || got[last*stride] != 0xaa {
				t.Fatalf("after a store into cpu 0's value: %x", got)
			}
		})
	}
}

func init() {
	pch := Spec{Type: TypePercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 16}
	pca := Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 6}
	walk := func(t *testing.T, m ops, s Spec, del bool) []string {
		fill(t, m, int(min(s.MaxEntries, 10)), uint32(s.SyscallValueSize()))
		var out []string
		b := batchBuf(s, int(s.MaxEntries))
		b.Values = make([]byte, int(s.MaxEntries)*s.SyscallValueSize())
		var seen []string
		for i := 0; i < 40; i++ {
			b.Count = 4
			var err error
			op := m.LookupBatch
			if del {
				op = m.LookupAndDeleteBatch
			}
			err = op(b)
			if errnoOf(err) == unix.ENOSPC {
				// A bucket of more than 4 (hash order differs from the
				// kernel's: random seeds): retry it with room.
				b.Count = s.MaxEntries
				err = op(b)
			}
			seen = append(seen, pcElems(s, b)...)
			if err != nil {
				// Where the walk ends depends on hash order (random seeds).
				out = append(out, unix.Errno(errnoOf(err)).Error())
				break
			}
			b.InBatch, b.HasInBatch = b.OutBatch, true
		}
		sortStrings(seen)
		return append(out, seen...)
	}
	batchScenarios = append(batchScenarios,
		batchScenario{name: "percpu hash walk", spec: pch, run: func(t *testing.T, m ops, s Spec) []string { return walk(t, m, s, false) }},
		batchScenario{name: "percpu hash walk and delete", spec: pch, run: func(t *testing.T, m ops, s Spec) []string {
			out := walk(t, m, s, true)
			return append(out, contentsOps(t, m, s)...)
		}},
		batchScenario{name: "percpu array walk", spec: pca, run: func(t *testing.T, m ops, s Spec) []string { return walk(t, m, s, false) }},
		batchScenario{name: "percpu array update batch", spec: pca, run: func(t *testing.T, m ops, s Spec) []string {
			b := batchBuf(s, 3)
			b.Values = append(append(pcv(s, 1), pcv(s, 2)...), pcv(s, 3)...)
			copy(b.Keys, append(append(k32(0), k32(5)...), k32(6)...))
			b.Count = 3
			r := rec(m.UpdateBatch(b), b)
			return append([]string{r}, contentsOps(t, m, s)...)
		}},
	)
}

// pcElems formats a batch of per-CPU elements.
func pcElems(s Spec, b *Batch) []string {
	var out []string
	vs := uint32(s.SyscallValueSize())
	for i := uint32(0); i < b.Count; i++ {
		out = append(out, string(b.Keys[i*s.KeySize:(i+1)*s.KeySize])+"="+string(b.Values[i*vs:(i+1)*vs]))
	}
	return out
}

// contentsOps walks m with NextKey and Lookup (per-CPU value sizes).
func contentsOps(t *testing.T, m ops, s Spec) []string {
	t.Helper()
	var out []string
	var key []byte
	next := make([]byte, s.KeySize)
	v := make([]byte, s.SyscallValueSize())
	for i := 0; i <= int(s.MaxEntries); i++ {
		if m.NextKey(key, next) != nil {
			break
		}
		err := m.Lookup(next, v)
		out = append(out, string(next)+"="+string(v)+" "+unix.Errno(errnoOf(err)).Error())
		key = bytes.Clone(next)
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

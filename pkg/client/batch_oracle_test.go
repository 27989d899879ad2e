package client

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// batchOps is what the batch oracle table drives: a bpfd Map or a kernel
// map, with 4-byte keys and 8-byte values.
type batchOps interface {
	update(keys []uint32, values []uint64, opts *BatchOptions) (int, error)
	delete(keys []uint32, opts *BatchOptions) (int, error)
	lookup(count int, opts *BatchOptions) error
	lookupAndDelete(count int) error
	Close() error
}

type bpfdBatch struct{ *Map }

func (m bpfdBatch) update(keys []uint32, values []uint64, opts *BatchOptions) (int, error) {
	return m.BatchUpdate(packU32(keys), packU64(values), opts)
}
func (m bpfdBatch) delete(keys []uint32, opts *BatchOptions) (int, error) {
	return m.BatchDelete(packU32(keys), opts)
}
func (m bpfdBatch) lookup(count int, opts *BatchOptions) error {
	_, err := m.BatchLookup(&MapBatchCursor{}, make([]byte, 4*count), make([]byte, 8*count), opts)
	return err
}
func (m bpfdBatch) lookupAndDelete(count int) error {
	_, err := m.BatchLookupAndDelete(&MapBatchCursor{}, make([]byte, 4*count), make([]byte, 8*count), nil)
	return err
}

type kernelBatch struct{ *ebpf.Map }

func ebpfOpts(o *BatchOptions) *ebpf.BatchOptions {
	if o == nil {
		return nil
	}
	return &ebpf.BatchOptions{ElemFlags: o.ElemFlags, Flags: o.Flags}
}
func (m kernelBatch) update(keys []uint32, values []uint64, opts *BatchOptions) (int, error) {
	return m.BatchUpdate(keys, values, ebpfOpts(opts))
}
func (m kernelBatch) delete(keys []uint32, opts *BatchOptions) (int, error) {
	return m.BatchDelete(keys, ebpfOpts(opts))
}
func (m kernelBatch) lookup(count int, opts *BatchOptions) error {
	_, err := m.BatchLookup(&ebpf.MapBatchCursor{}, make([]uint32, count), make([]uint64, count), ebpfOpts(opts))
	return err
}
func (m kernelBatch) lookupAndDelete(count int) error {
	_, err := m.BatchLookupAndDelete(&ebpf.MapBatchCursor{}, make([]uint32, count), make([]uint64, count), nil)
	return err
}

func packU32(v []uint32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func packU64(v []uint64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

// batchStep is one batch call and the count and errno it must give
// (count -1: not checked, as cilium/ebpf does not report it on failure).
type batchStep struct {
	do    string // update, delete, lookup, lookupdel
	keys  []uint32
	opts  *BatchOptions
	count int
	want  unix.Errno
	note  string // why the kernel behaves so, shown when a backend differs
}

var batchCases = []struct {
	name  string
	typ   MapType
	max   uint32
	fill  []uint32
	steps []batchStep
}{
	{name: "hash delete stops at missing key", typ: Hash, max: 4, fill: []uint32{0, 1, 2, 3}, steps: []batchStep{
		{do: "delete", keys: []uint32{0, 1, 99, 2}, count: 2, want: unix.ENOENT},
		{do: "delete", keys: []uint32{2, 3}, count: 2},
	}},
	{name: "hash update stops when full", typ: Hash, max: 4, fill: []uint32{0, 1}, steps: []batchStep{
		{do: "update", keys: []uint32{1, 10, 11, 12}, count: 3, want: unix.E2BIG},
	}},
	{name: "update flags are not batch flags", typ: Hash, max: 4, steps: []batchStep{
		{do: "update", keys: []uint32{1}, opts: &BatchOptions{ElemFlags: UpdateNoExist}, count: 1, want: unix.EINVAL},
		{do: "update", keys: []uint32{1}, opts: &BatchOptions{Flags: 1}, count: 1,
			note: "the kernel's generic_map_update_batch ignores batch.flags (only the lookup batches check it)"},
		{do: "delete", keys: []uint32{1}, opts: &BatchOptions{Flags: 1}, count: 1,
			note: "the kernel's generic_map_delete_batch ignores batch.flags"},
		{do: "delete", keys: []uint32{1}, opts: &BatchOptions{ElemFlags: 1}, count: 1, want: unix.EINVAL},
		{do: "lookup", opts: &BatchOptions{Flags: 1}, count: 4, want: unix.EINVAL},
	}},
	{name: "hash lookup of empty map", typ: Hash, max: 4, steps: []batchStep{
		{do: "lookup", count: 4, want: unix.ENOENT},
		{do: "lookupdel", count: 4, want: unix.ENOENT},
	}},
	{name: "array update out of range", typ: Array, max: 4, steps: []batchStep{
		{do: "update", keys: []uint32{0, 1, 7, 2}, count: 2, want: unix.E2BIG},
	}},
	{name: "array delete", typ: Array, max: 4, steps: []batchStep{
		{do: "delete", keys: []uint32{0}, count: -1, want: ENOTSUPP},
		{do: "lookupdel", count: 4, want: ENOTSUPP},
	}},
	{name: "array lookup", typ: Array, max: 4, steps: []batchStep{
		{do: "lookup", count: 4},
		{do: "lookup", count: 5, want: unix.ENOENT,
			note: "asked for more than the array holds, the kernel walks off the end and says ENOENT (bpfd caps Count at max_entries and loses the end)"},
		{do: "lookup", count: 3},
	}},
}

func runBatchCases(t *testing.T, create func(typ MapType, max uint32) (batchOps, error)) {
	for _, tc := range batchCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := create(tc.typ, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if len(tc.fill) > 0 {
				if n, err := m.update(tc.fill, make([]uint64, len(tc.fill)), nil); err != nil || n != len(tc.fill) {
					t.Fatalf("fill: %d, %v", n, err)
				}
			}
			for i, s := range tc.steps {
				var n int
				var err error
				switch s.do {
				case "update":
					n, err = m.update(s.keys, make([]uint64, len(s.keys)), s.opts)
				case "delete":
					n, err = m.delete(s.keys, s.opts)
				case "lookup":
					n, err = -1, m.lookup(s.count, s.opts)
				case "lookupdel":
					n, err = -1, m.lookupAndDelete(s.count)
				}
				if s.want == 0 && err != nil || s.want != 0 && !errors.Is(err, s.want) {
					t.Fatalf("step %d %s: %v, want errno %d (%s)", i, s.do, err, int(s.want), s.note)
				}
				if n >= 0 && s.count >= 0 && n != s.count {
					t.Fatalf("step %d %s: count %d, want %d", i, s.do, n, s.count)
				}
			}
		})
	}
}

// TestBatchSemantics runs the batch table through bpfd and against real
// kernel maps.
func TestBatchSemantics(t *testing.T) {
	t.Run("bpfd", func(t *testing.T) {
		c := newTestConn(t)
		runBatchCases(t, func(typ MapType, max uint32) (batchOps, error) {
			m, err := c.NewMap(MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: max})
			return bpfdBatch{m}, err
		})
	})
	t.Run("kernel", func(t *testing.T) {
		if ok, why := kernelAvailable(); !ok {
			t.Skip("kernel oracle: " + why)
		}
		runBatchCases(t, func(typ MapType, max uint32) (batchOps, error) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(typ), KeySize: 4, ValueSize: 8, MaxEntries: max})
			return kernelBatch{m}, err
		})
	})
}

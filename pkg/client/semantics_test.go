package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// mapOps is what the semantics table drives: a bpfd Map or a kernel map.
type mapOps interface {
	Lookup(key, value any) error
	Update(key, value any, flags uint64) error
	Delete(key any) error
	NextKey(key, next any) error
	LookupAndDelete(key, value any) error
	Freeze() error
	Close() error
}

// backend creates maps for the table.
type backend struct {
	name   string
	create func(t *testing.T, spec MapSpec) (mapOps, error)
}

func bpfdBackend(t *testing.T) backend {
	c := newTestConn(t)
	return backend{name: "bpfd", create: func(t *testing.T, spec MapSpec) (mapOps, error) {
		m, err := c.NewMap(spec)
		if err != nil {
			return nil, err
		}
		return m, nil
	}}
}

// kernelMap adapts a cilium/ebpf map (the real bpf(2)) to mapOps.
type kernelMap struct{ m *ebpf.Map }

func (k kernelMap) Lookup(key, value any) error { return k.m.Lookup(key, value) }
func (k kernelMap) Update(key, value any, flags uint64) error {
	return k.m.Update(key, value, ebpf.MapUpdateFlags(flags))
}
func (k kernelMap) Delete(key any) error { return k.m.Delete(key) }
func (k kernelMap) NextKey(key, next any) error {
	if b, ok := key.([]byte); ok && b == nil {
		return k.m.NextKey(nil, next)
	}
	return k.m.NextKey(key, next)
}
func (k kernelMap) LookupAndDelete(key, value any) error { return k.m.LookupAndDelete(key, value) }
func (k kernelMap) Freeze() error                        { return k.m.Freeze() }
func (k kernelMap) Close() error                         { return k.m.Close() }

// kernelAvailable reports whether bpf(2) map creation works here, with the
// reason when it does not.
func kernelAvailable() (bool, string) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return false, "cannot lift RLIMIT_MEMLOCK: " + err.Error()
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return false, "bpf(BPF_MAP_CREATE) unavailable: " + err.Error()
	}
	m.Close()
	return true, ""
}

func kernelBackend(t *testing.T) backend {
	t.Helper()
	if ok, why := kernelAvailable(); !ok {
		t.Skip("kernel oracle: " + why)
	}
	return backend{name: "kernel", create: func(t *testing.T, spec MapSpec) (mapOps, error) {
		m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{
			Type: ebpf.MapType(spec.Type), KeySize: spec.KeySize, ValueSize: spec.ValueSize,
			MaxEntries: spec.MaxEntries, Flags: spec.Flags, Name: spec.Name,
		}, ebpf.MapOptions{})
		if err != nil {
			return nil, err
		}
		return kernelMap{m}, nil
	}}
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// op is one step of a semantics case.
type op struct {
	do    string // update, lookup, delete, next, lookupdel, freeze
	key   []byte // next: nil = first key
	value []byte // update: the value; lookup, lookupdel: the value expected on success
	flags uint64
	want  unix.Errno // 0 = success
	next  []byte     // next: the key expected
}

func (o op) run(t *testing.T, m mapOps, valueSize int) {
	t.Helper()
	var err error
	got := make([]byte, valueSize)
	switch o.do {
	case "update":
		err = m.Update(o.key, o.value, o.flags)
	case "lookup":
		err = m.Lookup(o.key, got)
	case "lookupdel":
		err = m.LookupAndDelete(o.key, got)
	case "delete":
		err = m.Delete(o.key)
	case "freeze":
		err = m.Freeze()
	case "next":
		got = make([]byte, 4)
		err = m.NextKey(o.key, got)
	default:
		t.Fatalf("unknown op %q", o.do)
	}
	if o.want == 0 {
		if err != nil {
			t.Fatalf("%s(%x): %v, want success", o.do, o.key, err)
		}
	} else if !errors.Is(err, o.want) {
		t.Fatalf("%s(%x) = %v, want %v (%d)", o.do, o.key, err, o.want, int(o.want))
	}
	if err != nil {
		return
	}
	switch o.do {
	case "lookup", "lookupdel":
		if o.value != nil && !bytes.Equal(got, o.value) {
			t.Fatalf("%s(%x) value %x, want %x", o.do, o.key, got, o.value)
		}
	case "next":
		if !bytes.Equal(got, o.next) {
			t.Fatalf("next(%x) = %x, want %x", o.key, got, o.next)
		}
	}
}

var (
	hash4x8  = MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2}
	array4x8 = MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 2}
)

// semanticsCases cover the kernel's errno for every misuse the issue lists.
var semanticsCases = []struct {
	name      string
	spec      MapSpec
	createErr unix.Errno
	ops       []op
}{
	{name: "hash noexist on existing", spec: hash4x8, ops: []op{
		{do: "update", key: u32(1), value: u64(10), flags: UpdateNoExist},
		{do: "update", key: u32(1), value: u64(11), flags: UpdateNoExist, want: unix.EEXIST},
		{do: "lookup", key: u32(1), value: u64(10)},
	}},
	{name: "hash exist on missing", spec: hash4x8, ops: []op{
		{do: "update", key: u32(1), value: u64(10), flags: UpdateExist, want: unix.ENOENT},
		{do: "update", key: u32(1), value: u64(10)},
		{do: "update", key: u32(1), value: u64(12), flags: UpdateExist},
		{do: "lookup", key: u32(1), value: u64(12)},
	}},
	{name: "hash full", spec: hash4x8, ops: []op{
		{do: "update", key: u32(1), value: u64(1)},
		{do: "update", key: u32(2), value: u64(2)},
		{do: "update", key: u32(3), value: u64(3), want: unix.E2BIG},
		{do: "update", key: u32(2), value: u64(4)},
		{do: "update", key: u32(3), value: u64(3), flags: UpdateNoExist, want: unix.E2BIG},
		{do: "delete", key: u32(1)},
		{do: "update", key: u32(3), value: u64(3)},
	}},
	{name: "hash missing key", spec: hash4x8, ops: []op{
		{do: "lookup", key: u32(7), want: unix.ENOENT},
		{do: "delete", key: u32(7), want: unix.ENOENT},
		{do: "lookupdel", key: u32(7), want: unix.ENOENT},
	}},
	{name: "hash lookup and delete", spec: hash4x8, ops: []op{
		{do: "update", key: u32(5), value: u64(50)},
		{do: "lookupdel", key: u32(5), value: u64(50)},
		{do: "lookup", key: u32(5), want: unix.ENOENT},
	}},
	{name: "hash unknown update flags", spec: hash4x8, ops: []op{
		{do: "update", key: u32(1), value: u64(1), flags: 1 << 10, want: unix.EINVAL},
		{do: "update", key: u32(1), value: u64(1), flags: 3, want: unix.EINVAL},
	}},
	{name: "hash next key", spec: hash4x8, ops: []op{
		{do: "next", key: nil, want: unix.ENOENT},
		{do: "update", key: u32(9), value: u64(9)},
		{do: "next", key: nil, next: u32(9)},
		{do: "next", key: u32(1234), next: u32(9)},
		{do: "next", key: u32(9), want: unix.ENOENT},
	}},
	{name: "array out of range", spec: array4x8, ops: []op{
		{do: "update", key: u32(2), value: u64(1), want: unix.E2BIG},
		{do: "lookup", key: u32(2), want: unix.ENOENT},
		{do: "lookup", key: u32(1), value: u64(0)},
		{do: "update", key: u32(1), value: u64(7)},
		{do: "lookup", key: u32(1), value: u64(7)},
	}},
	{name: "array update flags", spec: array4x8, ops: []op{
		{do: "update", key: u32(0), value: u64(1), flags: UpdateNoExist, want: unix.EEXIST},
		{do: "update", key: u32(0), value: u64(1), flags: UpdateExist},
		{do: "update", key: u32(0), value: u64(1), flags: 1 << 10, want: unix.EINVAL},
	}},
	{name: "array delete", spec: array4x8, ops: []op{
		{do: "delete", key: u32(0), want: unix.EINVAL},
		{do: "delete", key: u32(5), want: unix.EINVAL},
	}},
	{name: "array lookup and delete", spec: array4x8, ops: []op{
		{do: "lookupdel", key: u32(0), want: ENOTSUPP},
	}},
	{name: "array next key", spec: array4x8, ops: []op{
		{do: "next", key: nil, next: u32(0)},
		{do: "next", key: u32(0), next: u32(1)},
		{do: "next", key: u32(1), want: unix.ENOENT},
		{do: "next", key: u32(99), next: u32(0)},
	}},
	{name: "frozen", spec: hash4x8, ops: []op{
		{do: "update", key: u32(1), value: u64(1)},
		{do: "freeze"},
		{do: "update", key: u32(1), value: u64(2), want: unix.EPERM},
		{do: "delete", key: u32(1), want: unix.EPERM},
		{do: "lookupdel", key: u32(1), want: unix.EPERM},
		{do: "lookup", key: u32(1), value: u64(1)},
		{do: "freeze", want: unix.EPERM}, // a frozen map has no write permission left
	}},
	{name: "rdonly map", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagRdonly}, ops: []op{
		{do: "update", key: u32(1), value: u64(1), want: unix.EPERM},
		{do: "delete", key: u32(1), want: unix.EPERM},
		{do: "lookup", key: u32(1), want: unix.ENOENT},
	}},
	{name: "wronly map", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagWronly}, ops: []op{
		{do: "update", key: u32(1), value: u64(1)},
		{do: "lookup", key: u32(1), want: unix.EPERM},
		{do: "next", key: nil, want: unix.EPERM},
		{do: "delete", key: u32(1)},
	}},
	{name: "create zero key size", spec: MapSpec{Type: Hash, KeySize: 0, ValueSize: 8, MaxEntries: 2}, createErr: unix.EINVAL},
	{name: "create zero value size", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 0, MaxEntries: 2}, createErr: unix.EINVAL},
	{name: "create zero entries", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 0}, createErr: unix.EINVAL},
	{name: "create array key size 8", spec: MapSpec{Type: Array, KeySize: 8, ValueSize: 8, MaxEntries: 2}, createErr: unix.EINVAL},
	{name: "create unknown flag", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: 1 << 30}, createErr: unix.EINVAL},
	{name: "create rdonly and wronly", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagRdonly | FlagWronly}, createErr: unix.EINVAL},
	{name: "create array no prealloc", spec: MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagNoPrealloc}, createErr: unix.EINVAL},
	{name: "lru hash", spec: MapSpec{Type: LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4}, ops: []op{
		{do: "update", key: u32(1), value: u64(1), flags: UpdateExist, want: unix.ENOENT},
		{do: "update", key: u32(1), value: u64(1)},
		{do: "update", key: u32(1), value: u64(2), flags: UpdateNoExist, want: unix.EEXIST},
		{do: "lookup", key: u32(1), value: u64(1)},
		{do: "update", key: u32(1), value: u64(1), flags: 4, want: unix.EINVAL},
		{do: "lookupdel", key: u32(1), value: u64(1)},
		{do: "delete", key: u32(1), want: unix.ENOENT},
	}},
	{name: "create lru no prealloc", spec: MapSpec{Type: LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagNoPrealloc}, createErr: ENOTSUPP},
	{name: "create percpu array mmapable", spec: MapSpec{Type: PercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagMmapable}, createErr: unix.EINVAL},
	{name: "create hash mmapable", spec: MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagMmapable}, createErr: unix.EINVAL},
	{name: "create percpu hash", spec: MapSpec{Type: PercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 2}},
	{name: "queue", spec: MapSpec{Type: Queue, ValueSize: 8, MaxEntries: 2}, ops: []op{
		{do: "lookup", want: unix.ENOENT},
		{do: "update", value: u64(1)},
		{do: "update", value: u64(2)},
		{do: "update", value: u64(3), want: unix.E2BIG},
		{do: "update", value: u64(3), flags: UpdateExist},
		{do: "lookup", value: u64(2)},
		{do: "lookupdel", value: u64(2)},
		{do: "lookupdel", value: u64(3)},
		{do: "lookupdel", want: unix.ENOENT},
		{do: "delete", want: unix.EINVAL},
	}},
	{name: "stack", spec: MapSpec{Type: Stack, ValueSize: 8, MaxEntries: 2}, ops: []op{
		{do: "update", value: u64(1)},
		{do: "update", value: u64(2)},
		{do: "lookupdel", value: u64(2)},
		{do: "lookup", value: u64(1)},
	}},
	{name: "create queue key", spec: MapSpec{Type: Queue, KeySize: 4, ValueSize: 8, MaxEntries: 2}, createErr: unix.EINVAL},
	{name: "create lru percpu hash no common lru", spec: MapSpec{Type: LRUPercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: FlagNoCommonLRU}},
}

func runSemantics(t *testing.T, b backend) {
	for _, tc := range semanticsCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := b.create(t, tc.spec)
			if tc.createErr != 0 {
				if err == nil {
					m.Close()
				}
				if !errors.Is(err, tc.createErr) {
					t.Fatalf("create(%+v) = %v, want %v", tc.spec, err, tc.createErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("create(%+v): %v", tc.spec, err)
			}
			defer m.Close()
			for _, o := range tc.ops {
				o.run(t, m, int(tc.spec.ValueSize))
			}
		})
	}
}

// TestMapSemantics runs the errno table through bpfd and, when bpf(2) is
// available, against real kernel maps: both must give the same results.
func TestMapSemantics(t *testing.T) {
	t.Run("bpfd", func(t *testing.T) { runSemantics(t, bpfdBackend(t)) })
	t.Run("kernel", func(t *testing.T) { runSemantics(t, kernelBackend(t)) })
}

// TestSentinelsMatchErrnos checks that every sentinel matches its errno
// both ways, and that the wire table returns them.
func TestSentinelsMatchErrnos(t *testing.T) {
	tests := []struct {
		name  string
		errno unix.Errno
		want  error
	}{
		{"ENOENT", unix.ENOENT, ErrKeyNotExist},
		{"EEXIST", unix.EEXIST, ErrKeyExist},
		{"EPERM", unix.EPERM, ErrPermission},
		{"EACCES", unix.EACCES, ErrAccess},
		{"EBADF", unix.EBADF, ErrBadDescriptor},
		{"EINVAL", unix.EINVAL, ErrInvalid},
		{"E2BIG", unix.E2BIG, ErrTooBig},
		{"ENOSPC", unix.ENOSPC, ErrNoSpace},
		{"ENOMEM", unix.ENOMEM, ErrNoMemory},
		{"EBUSY", unix.EBUSY, ErrBusy},
		{"EOPNOTSUPP", unix.EOPNOTSUPP, ErrNotSupported},
		{"ENOTSUPP", ENOTSUPP, ErrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := errnoErr(uint32(tt.errno))
			if !errors.Is(err, tt.want) || !errors.Is(err, tt.errno) {
				t.Fatalf("errnoErr(%d) = %v: errors.Is(%v) = %v, errors.Is(errno) = %v",
					tt.errno, err, tt.want, errors.Is(err, tt.want), errors.Is(err, tt.errno))
			}
			var e unix.Errno
			if !errors.As(err, &e) || e != tt.errno {
				t.Fatalf("errors.As(%v) = %v, want %v", err, e, tt.errno)
			}
		})
	}
	if err := errnoErr(uint32(unix.EMFILE)); err != unix.EMFILE {
		t.Fatalf("unlisted errno: got %v, want the bare errno", err)
	}
	if errnoErr(0) != nil {
		t.Fatal("errno 0 is not success")
	}
	if !errors.Is(ErrClosed, unix.EBADF) || errors.Is(ErrClosed, ErrBadDescriptor) {
		t.Fatal("ErrClosed must match EBADF but not the daemon's ErrBadDescriptor")
	}
}

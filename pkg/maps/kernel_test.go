package maps

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the kernel oracle: a raw bpf(2) map with the same method set
// as Map (the parts the tests compare), so tests control every attr field
// (flags, cursors, elem_flags) exactly.

const (
	bpfMapCreate              = 0
	bpfMapLookupElem          = 1
	bpfMapUpdateElem          = 2
	bpfMapDeleteElem          = 3
	bpfMapGetNextKey          = 4
	bpfMapLookupAndDeleteElem = 21
	bpfMapFreeze              = 22
	bpfMapLookupBatch         = 24
	bpfMapLookupAndDeleteBat  = 25
	bpfMapUpdateBatch         = 26
	bpfMapDeleteBatch         = 27
)

type createAttr struct {
	mapType, keySize, valueSize, maxEntries, mapFlags, innerMapFd, numaNode uint32
	name                                                                    [16]byte
	ifindex, btfFd, btfKey, btfValue, btfVmlinux                            uint32
	mapExtra                                                                uint64
	rest                                                                    [48]byte
}

type elemAttr struct {
	fd    uint32
	_     uint32
	key   uint64
	value uint64
	flags uint64
}

type batchAttr struct {
	inBatch, outBatch, keys, values uint64
	count, fd                       uint32
	elemFlags, flags                uint64
}

func bpf(cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
	if e != 0 {
		return r, e
	}
	return r, nil
}

func ptr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// kernelMap is a real kernel map, the oracle.
type kernelMap struct {
	fd   int
	spec Spec
	cur  [8]byte // batch cursor storage (kernel writes up to key_size / 4 bytes)
	out  [8]byte
}

var errNoBPF error

func init() {
	if os.Geteuid() != 0 {
		errNoBPF = errors.New("not root: bpf(2) map creation needs CAP_BPF")
		return
	}
	fd, err := newKernelFD(Spec{Type: TypeArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		errNoBPF = err
		return
	}
	unix.Close(fd)
}

// needKernel skips the test when bpf(2) is unavailable.
func needKernel(t testing.TB) {
	t.Helper()
	if errNoBPF != nil {
		t.Skipf("kernel oracle unavailable: %v", errNoBPF)
	}
}

func newKernelFD(s Spec) (int, error) {
	a := createAttr{mapType: s.Type, keySize: s.KeySize, valueSize: s.ValueSize, maxEntries: s.MaxEntries,
		mapFlags: s.Flags, numaNode: s.NumaNode, mapExtra: s.MapExtra}
	copy(a.name[:], s.Name)
	fd, err := bpf(bpfMapCreate, unsafe.Pointer(&a), unsafe.Sizeof(a))
	return int(fd), err
}

func newKernelMap(t testing.TB, s Spec) (*kernelMap, error) {
	t.Helper()
	fd, err := newKernelFD(s)
	if err != nil {
		return nil, err
	}
	k := &kernelMap{fd: fd, spec: s}
	t.Cleanup(func() { unix.Close(fd) })
	return k, nil
}

func (k *kernelMap) elem(cmd uintptr, key, value []byte, flags uint64) error {
	a := elemAttr{fd: uint32(k.fd), key: ptr(key), value: ptr(value), flags: flags}
	_, err := bpf(cmd, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	return err
}

func (k *kernelMap) Lookup(key, value []byte) error { return k.elem(bpfMapLookupElem, key, value, 0) }
func (k *kernelMap) Update(key, value []byte, flags uint64) error {
	return k.elem(bpfMapUpdateElem, key, value, flags)
}
func (k *kernelMap) Delete(key []byte) error        { return k.elem(bpfMapDeleteElem, key, nil, 0) }
func (k *kernelMap) NextKey(key, next []byte) error { return k.elem(bpfMapGetNextKey, key, next, 0) }
func (k *kernelMap) LookupAndDelete(key, value []byte) error {
	return k.elem(bpfMapLookupAndDeleteElem, key, value, 0)
}
func (k *kernelMap) Freeze() error { return k.elem(bpfMapFreeze, nil, nil, 0) }

func (k *kernelMap) batch(cmd uintptr, b *Batch) error {
	a := batchAttr{keys: ptr(b.Keys), values: ptr(b.Values), count: b.Count, fd: uint32(k.fd), elemFlags: b.ElemFlags}
	if cmd == bpfMapLookupBatch || cmd == bpfMapLookupAndDeleteBat {
		if b.HasInBatch {
			ne.PutUint64(k.cur[:], b.InBatch)
			a.inBatch = ptr(k.cur[:])
		}
		k.out = [8]byte{}
		if b.HasInBatch {
			// The kernel writes the cursor only on some paths; start from
			// the input so an unwritten cursor reads back unchanged.
			k.out = k.cur
		}
		a.outBatch = ptr(k.out[:])
	}
	_, err := bpf(cmd, unsafe.Pointer(&a), unsafe.Sizeof(a))
	b.Count = a.count
	if cmd == bpfMapLookupBatch || cmd == bpfMapLookupAndDeleteBat {
		// htab writes a u32 bucket index, the generic batch the 4-byte key.
		b.OutBatch = uint64(ne.Uint32(k.out[:]))
	}
	runtime.KeepAlive(b)
	return err
}

func (k *kernelMap) LookupBatch(b *Batch) error { return k.batch(bpfMapLookupBatch, b) }
func (k *kernelMap) LookupAndDeleteBatch(b *Batch) error {
	return k.batch(bpfMapLookupAndDeleteBat, b)
}
func (k *kernelMap) UpdateBatch(b *Batch) error { return k.batch(bpfMapUpdateBatch, b) }
func (k *kernelMap) DeleteBatch(b *Batch) error { return k.batch(bpfMapDeleteBatch, b) }

// ops is the method set both a Map and a kernelMap have.
type ops interface {
	Lookup(key, value []byte) error
	Update(key, value []byte, flags uint64) error
	Delete(key []byte) error
	NextKey(key, next []byte) error
	LookupAndDelete(key, value []byte) error
	Freeze() error
	LookupBatch(b *Batch) error
	LookupAndDeleteBatch(b *Batch) error
	UpdateBatch(b *Batch) error
	DeleteBatch(b *Batch) error
}

var _ ops = (*kernelMap)(nil)
var _ ops = Map(nil)

// errnoOf reduces an error to its errno for comparison (0 for nil).
func errnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.Errno(0xffff)
}

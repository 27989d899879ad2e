package client

import (
	"errors"
	"io"
	"os"
	"sync/atomic"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

var _ io.Closer = (*Map)(nil)

// MapType is a map type, numbered as the kernel's enum bpf_map_type.
type MapType uint32

// Map types bpfd implements.
const (
	Hash  MapType = 1 // BPF_MAP_TYPE_HASH
	Array MapType = 2 // BPF_MAP_TYPE_ARRAY
	// ProgArray holds programs for tail calls: values are program
	// descriptors (Update takes a Program's FD, as the kernel does; a
	// lookup returns the program's id). Updating needs write mode on the
	// map and read mode on the program.
	ProgArray MapType = 3 // BPF_MAP_TYPE_PROG_ARRAY
	// PercpuHash and PercpuArray keep one value per possible CPU; see
	// Map.ValueBufferSize for the value layout.
	PercpuHash    MapType = 5  // BPF_MAP_TYPE_PERCPU_HASH
	PercpuArray   MapType = 6  // BPF_MAP_TYPE_PERCPU_ARRAY
	LRUHash       MapType = 9  // BPF_MAP_TYPE_LRU_HASH
	LRUPercpuHash MapType = 10 // BPF_MAP_TYPE_LRU_PERCPU_HASH
	// Queue and Stack have no keys (KeySize 0, key nil): Update pushes
	// (UpdateExist overwrites the oldest element when full), Lookup
	// peeks, LookupAndDelete pops.
	Queue MapType = 22 // BPF_MAP_TYPE_QUEUE
	Stack MapType = 23 // BPF_MAP_TYPE_STACK
	// BloomFilter has no keys: Update adds a value; Lookup tests the value
	// it is given (nil: maybe present; ErrKeyNotExist: absent) and
	// writes nothing.
	BloomFilter MapType = 30 // BPF_MAP_TYPE_BLOOM_FILTER
	// LPMTrie keys are a uint32 prefix length (native endian) then the
	// data; Lookup finds the longest matching prefix. Needs
	// FlagNoPrealloc, as the kernel.
	LPMTrie MapType = 11 // BPF_MAP_TYPE_LPM_TRIE
	// ArrayOfMaps and HashOfMaps hold maps (see mapinmap.go): values are
	// map descriptors on Update, map ids on Lookup.
	ArrayOfMaps MapType = 12 // BPF_MAP_TYPE_ARRAY_OF_MAPS
	HashOfMaps  MapType = 13 // BPF_MAP_TYPE_HASH_OF_MAPS
	// Devmap, DevmapHash, CPUMap and XSKMap are the targets of
	// bpf_redirect_map in XDP programs (see docs/maps.md for what their
	// updates check; an XSKMap stays empty: bpfd holds no AF_XDP
	// sockets).
	Devmap     MapType = 14 // BPF_MAP_TYPE_DEVMAP
	CPUMap     MapType = 16 // BPF_MAP_TYPE_CPUMAP
	XSKMap     MapType = 17 // BPF_MAP_TYPE_XSKMAP
	DevmapHash MapType = 25 // BPF_MAP_TYPE_DEVMAP_HASH
)

// String returns the kernel's name for t without the prefix, e.g. "Hash".
func (t MapType) String() string {
	switch t {
	case Hash:
		return "Hash"
	case Array:
		return "Array"
	case ProgArray:
		return "ProgArray"
	case PercpuHash:
		return "PerCPUHash"
	case PercpuArray:
		return "PerCPUArray"
	case LRUHash:
		return "LRUHash"
	case LRUPercpuHash:
		return "LRUCPUHash"
	case Queue:
		return "Queue"
	case Stack:
		return "Stack"
	case BloomFilter:
		return "BloomFilter"
	case LPMTrie:
		return "LPMTrie"
	case ArrayOfMaps:
		return "ArrayOfMaps"
	case HashOfMaps:
		return "HashOfMaps"
	case Devmap:
		return "DevMap"
	case CPUMap:
		return "CPUMap"
	case XSKMap:
		return "XSKMap"
	case DevmapHash:
		return "DevMapHash"
	}
	return "MapType(" + itoa(uint64(t)) + ")"
}

// Map creation flags, as the kernel's BPF_F_* map_flags.
const (
	// FlagNoPrealloc: hash maps allocate entries on demand.
	FlagNoPrealloc uint32 = 1 << 0
	// FlagRdonly: descriptors of the map can only read (writes: EPERM).
	FlagRdonly uint32 = 1 << 3
	// FlagWronly: descriptors of the map can only write (reads: EPERM).
	FlagWronly uint32 = 1 << 4
	// FlagRdonlyProg: programs may only read the map.
	FlagRdonlyProg uint32 = 1 << 7
	// FlagWronlyProg: programs may only write the map.
	FlagWronlyProg uint32 = 1 << 8
	// FlagNoCommonLRU: an LRU hash keeps one LRU list per CPU.
	FlagNoCommonLRU uint32 = 1 << 1
	// FlagNumaNode: MapSpec.NumaNode is meaningful.
	FlagNumaNode uint32 = 1 << 2
	// FlagZeroSeed: hash and bloom filter seeds are 0 (deterministic).
	FlagZeroSeed uint32 = 1 << 6
	// FlagMmapable: an array's values may also be mapped writable
	// (Map.Mmap), as the kernel's BPF_F_MMAPABLE.
	FlagMmapable uint32 = 1 << 10
	// FlagPreserveElems: perf event array entries outlive their fd.
	FlagPreserveElems uint32 = 1 << 11
	// FlagInnerMap: an inner-map template of any max_entries.
	FlagInnerMap uint32 = 1 << 12
)

// Update flags, as the kernel's BPF_ANY, BPF_NOEXIST and BPF_EXIST.
const (
	UpdateAny     uint64 = 0 // create or replace
	UpdateNoExist uint64 = 1 // create only (EEXIST if present)
	UpdateExist   uint64 = 2 // replace only (ENOENT if missing)
)

// Mode is a descriptor's access mode: a set of ModeRead, ModeWrite and
// ModeDestroy.
type Mode uint8

// Access modes. On maps, read allows Lookup, NextKey, batch and iterator
// lookups and Info; write allows Update, Delete, Freeze and their batch
// forms; LookupAndDelete needs both.
//
// ModeDestroy is the right to end the object for everyone (Destroy) and
// to see and prune everything lent from it (Lineage, RevokeNode). The
// creating descriptor (NewMap, LoadProgram) has it; Reopen never passes it
// on; a pin made from a descriptor holding it passes it only to the pin
// file's owner (OpenPinnedMap with ModeDestroy in mode). docs/security.md
// explains the model.
const (
	ModeRead      Mode = 1
	ModeWrite     Mode = 2
	ModeDestroy   Mode = 4
	ModeReadWrite Mode = ModeRead | ModeWrite
	// ModeAll is every right.
	ModeAll Mode = ModeReadWrite | ModeDestroy
)

// String returns the rights as letters: "r", "rw", "rwd", "d", or "-".
func (m Mode) String() string { return wire.Mode(m).String() }

// Data returns m without ModeDestroy.
func (m Mode) Data() Mode { return m & ModeReadWrite }

// MapSpec describes a map to create. It is plain data; NewMap validates it
// (through the daemon, with the kernel's rules).
type MapSpec struct {
	// InnerMap is the inner-map template of an ArrayOfMaps or
	// HashOfMaps (the kernel's inner_map_fd): a Map open on the same
	// Conn, any mode; only its shape is used. Ignored for other types.
	InnerMap *Map

	Type       MapType
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Flags      uint32 // FlagNoPrealloc, FlagRdonly, ...
	Name       string // at most 15 bytes, as BPF_OBJ_NAME_LEN
	// Key and Value, if set, are the key's and value's types (as
	// cilium/ebpf's MapSpec): NewMap loads them as a BTF object that the
	// map keeps, so tools print and parse keys and values as types. Their
	// sizes must be KeySize and ValueSize (ErrInvalid). Value alone may be
	// set. Alternatively BTF names a loaded BTF object and KeyTypeID and
	// ValueTypeID types in it (see btf.go).
	Key, Value  btf.Type
	BTF         *BTF
	KeyTypeID   btf.TypeID
	ValueTypeID btf.TypeID
}

// MapInfo describes a map as seen through one descriptor.
type MapInfo struct {
	Type        MapType
	KeySize     uint32
	ValueSize   uint32
	MaxEntries  uint32
	Flags       uint32
	ID          uint32 // daemon-wide id, never reused while the daemon runs
	Name        string
	Mode        Mode // this descriptor's mode
	Frozen      bool
	MemoryUsage uint64 // bytes charged to the owner's quota
	OwnerUID    uint32
	// Node is the descriptor's node in the map's lineage (see Lineage,
	// RevokeNode): unique within the map, stable across daemon restarts.
	Node uint64
	// BTFID is the id of the map's BTF object (0: created without type
	// information); BTFKeyTypeID and BTFValueTypeID the types in it
	// (Map.Types returns them).
	BTFID          uint32
	BTFKeyTypeID   btf.TypeID
	BTFValueTypeID btf.TypeID
	// SpinLockOffset is the offset of the values' struct bpf_spin_lock
	// (found in the value's BTF at creation; see spinlock.go), -1 when
	// they hold none.
	SpinLockOffset int
}

func mapInfo(o *wire.ObjInfo) MapInfo {
	return MapInfo{
		Type: MapType(o.Type), KeySize: o.KeySize, ValueSize: o.ValueSize,
		MaxEntries: o.MaxEntries, Flags: o.Flags, ID: o.ID,
		Name: wire.NameString(o.Name), Mode: Mode(o.Mode), Frozen: o.Frozen != 0,
		MemoryUsage: o.MemoryUsage, OwnerUID: o.OwnerUID, Node: o.Node,
		BTFID: o.BTFID, BTFKeyTypeID: btf.TypeID(o.BTFKeyTypeID), BTFValueTypeID: btf.TypeID(o.BTFValueTypeID),
		SpinLockOffset: int(o.SpinLock) - 1,
	}
}

// Map is a map reached through one descriptor: a handle on its Conn plus
// the descriptor (a kernel fd owned by the Map) that can be passed to other
// processes.
//
// A Map is safe for concurrent use; its operations pipeline on the Conn.
// Operations after Close, or after the Conn was closed or lost, return
// ErrClosed. A Map must be closed to release its handle and descriptor.
type Map struct {
	ref
	info MapInfo                     // as of creation; Frozen may change
	shm  atomic.Pointer[sharedReads] // the shared-memory read path (mmap.go)
}

// newMap builds a Map from a reply carrying handle (Ret), the descriptor fd
// (the caller passes ownership) and ObjInfo. On failure it releases the
// handle and closes fd.
func (c *Conn) newMap(w *waiter, fd int) (*Map, error) {
	r, o, err := c.newRef(w, fd, wire.ObjMap)
	if err != nil {
		return nil, err
	}
	m := &Map{ref: r, info: mapInfo(o)}
	c.byFD.Store(fd, m)
	return m, nil
}

// newRef reads the handle and ObjInfo of a reply that made a descriptor
// (fd, whose ownership passes) for an object of kind. On failure it
// releases the handle and closes fd.
func (c *Conn) newRef(w *waiter, fd int, kind wire.ObjType) (ref, *wire.ObjInfo, error) {
	handle := uint32(w.hdr.Ret)
	data, err := w.payload()
	o := new(wire.ObjInfo)
	if err == nil && !o.Parse(data) {
		err = errProtocol
	}
	if err == nil && o.ObjType != kind {
		err = ErrInvalid
	}
	if err != nil || fd < 0 {
		if err == nil {
			err = errProtocol
		}
		c.release(handle)
		if fd >= 0 {
			unix.Close(fd)
		}
		return ref{}, nil, err
	}
	return ref{c: c, handle: handle, fd: fd}, o, nil
}

// NewMap creates a map and returns it with a read-write descriptor (capped
// by FlagRdonly/FlagWronly). The Map owns the descriptor. It returns
// ErrInvalid for parameters the kernel would refuse, ErrNoSpace or
// ErrNoMemory when a quota is exhausted, ErrNotSupported for an
// unimplemented type, and ErrClosed if c is closed.
func (c *Conn) NewMap(spec MapSpec) (*Map, error) {
	if len(spec.Name) >= wire.ObjNameLen {
		return nil, errName
	}
	a := wire.MapCreateAttr{MapType: uint32(spec.Type), KeySize: spec.KeySize,
		ValueSize: spec.ValueSize, MaxEntries: spec.MaxEntries, MapFlags: spec.Flags}
	copy(a.Name[:], spec.Name)
	if err := c.innerMapAttr(&spec, &a); err != nil {
		return nil, err
	}
	closeBTF, err := c.specBTF(&spec, &a)
	if err != nil {
		return nil, err
	}
	defer closeBTF()
	var ab [wire.MapCreateAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := c.do(w, nil, wire.CmdMapCreate, a.Append(ab[:0]), nil); err != nil {
		return nil, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return nil, err
	}
	return c.newMap(w, w.takeFD(0))
}

// ImportMap presents a map descriptor received from elsewhere (typically
// with ReceiveDescriptors) and returns a Map for it with the descriptor's
// mode. The caller keeps ownership of fd: ImportMap duplicates it and the
// Map owns the copy. It returns ErrBadDescriptor if fd is not a bpfd
// descriptor (the daemon identifies descriptors by socket cookie),
// ErrInvalid if it names an object that is not a map, and an
// *os.SyscallError if fd cannot be duplicated.
func (c *Conn) ImportMap(fd int) (*Map, error) {
	var m *Map
	err := c.importFD(fd, func(w *waiter, dup int) (err error) {
		m, err = c.newMap(w, dup)
		return err
	})
	return m, err
}

// importFD presents a duplicate of fd with CmdImport and hands the reply
// and the duplicate (which build then owns) to build.
func (c *Conn) importFD(fd int, build func(w *waiter, dup int) error) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	var ab [wire.ImportAttrSize]byte
	attr := (&wire.ImportAttr{}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	fds := [1]int{dup}
	if err := c.do(w, nil, wire.CmdImport, attr, fds[:]); err != nil {
		unix.Close(dup)
		return err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		unix.Close(dup)
		return err
	}
	return build(w, dup)
}

// release drops a handle, ignoring failures (a lost connection drops every
// handle anyway).
func (c *Conn) release(handle uint32) error {
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: handle}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	if err := c.do(w, nil, wire.CmdRelease, attr, nil); err != nil {
		return err
	}
	w.closeFDs()
	return errnoErr(w.hdr.Errno)
}

// FD returns the map's descriptor. It is owned by m and invalid after
// m.Close; pass it to SendDescriptors to share the map with another process
// with m's mode (use Reopen first to share less).
func (m *Map) FD() int { return m.fd }

// KeySize returns the map's key size in bytes.
func (m *Map) KeySize() int { return int(m.info.KeySize) }

// ValueSize returns the map's value size in bytes.
func (m *Map) ValueSize() int { return int(m.info.ValueSize) }

// Type returns the map's type.
func (m *Map) Type() MapType { return m.info.Type }

// Mode returns the mode of m's descriptor.
func (m *Map) Mode() Mode { return m.info.Mode }

// Close releases m's handle and closes its descriptor. The map itself lives
// on while other descriptors or handles refer to it. A second Close
// returns ErrClosed.
func (m *Map) Close() error {
	m.closeShared()
	return m.ref.close()
}

// close releases r's handle and closes its descriptor; ErrClosed the
// second time.
func (r *ref) close() error {
	c := r.c
	c.sendMu.Lock()
	if r.closed {
		c.sendMu.Unlock()
		return ErrClosed
	}
	r.closed = true
	c.sendMu.Unlock()
	c.byFD.Delete(r.fd)
	// No request for r is sent from now on, and the handle is not reused
	// before the release below, so nothing can reach another object.
	err := c.release(r.handle)
	if errors.Is(err, ErrClosed) {
		err = nil // the connection's handles are gone already
	}
	if cerr := unix.Close(r.fd); cerr != nil && err == nil {
		err = os.NewSyscallError("close", cerr)
	}
	return err
}

// elem runs a single-element command: key (and value) as data, reply data
// into out (which must be exactly outLen bytes long on success).
func (m *Map) elem(cmd wire.Cmd, flags uint64, out []byte, data ...[]byte) error {
	var ab [wire.ElemAttrSize]byte
	attr := (&wire.ElemAttr{Handle: m.handle, Flags: flags}).Append(ab[:0])
	w := getWaiter()
	w.out = out
	err := m.c.do(w, &m.ref, cmd, attr, nil, data...)
	if err == nil {
		err = errnoErr(w.hdr.Errno)
		if err == nil && out != nil {
			if w.hdr.Flags&wire.ReplyFlagMemfd != 0 || len(w.data) != len(out) {
				err = errProtocol
			}
		}
		if w.nfd > 0 {
			w.closeFDs()
		}
	}
	putWaiter(w)
	return err
}

// Lookup copies the value stored under key into valueOut. With []byte
// key and value (the zero-allocation path) key must be KeySize bytes and
// value ValueBufferSize bytes (ErrInvalid otherwise); other types follow
// cilium/ebpf's rules (see typed.go: a pointer to a fixed-size struct, a
// slice of one value per CPU for per-CPU maps, encoding.BinaryUnmarshaler,
// ...; ErrInvalid if they do not fit). It returns ErrKeyNotExist for a
// missing key, ErrPermission if m cannot read, and ErrClosed after Close.
func (m *Map) Lookup(key, valueOut any) error {
	if k, ok := key.([]byte); ok || key == nil { // nil: a map without keys
		if v, ok := valueOut.([]byte); ok {
			return m.lookupBytes(k, v)
		}
	}
	keepContents(key)
	keepContents(valueOut)
	return m.lookupTyped(hide(&key), hide(&valueOut), m.lookupBytes)
}

// lookupTyped is Lookup and LookupAndDelete off the []byte path (key and
// valueOut from hide; see typed.go).
func (m *Map) lookupTyped(key, valueOut any, op func(k, v []byte) error) error {
	k, v, err := typedArgs(key, valueOut)
	if err != nil {
		return err
	}
	kb, err := m.keyBytes(k)
	if err != nil {
		return err
	}
	if m.info.Type == BloomFilter {
		// The value is the one to test: an input.
		vb, err := m.valueBytes(v)
		if err != nil {
			return err
		}
		return op(kb, vb)
	}
	if err := m.readValue(v, func(b []byte) error { return op(kb, b) }); err != nil {
		return err
	}
	writeBack(valueOut, v)
	return nil
}

func (m *Map) lookupBytes(key, value []byte) error {
	if len(key) != int(m.info.KeySize) {
		return errKeySize
	}
	if len(value) != m.ValueBufferSize() {
		return errValueSize
	}
	if m.info.Type == BloomFilter {
		return m.elem(wire.CmdMapLookupElem, 0, nil, value)
	}
	if done, err := m.sharedLookup(key, value); done {
		return err
	}
	return m.elem(wire.CmdMapLookupElem, 0, value, key)
}

// Update stores value under key. flags is UpdateAny, UpdateNoExist or
// UpdateExist. key and value are []byte (KeySize and ValueBufferSize
// bytes; the zero-allocation path) or any type cilium/ebpf's rules encode
// to the map's sizes (typed.go; for a program array also a *Program of
// this Conn). It returns ErrKeyExist (UpdateNoExist on a present key),
// ErrKeyNotExist (UpdateExist on a missing key), ErrTooBig (full hash map,
// array index out of range), ErrInvalid (bad flags, sizes or types),
// ErrPermission (m cannot write, or the map is frozen) and ErrClosed.
func (m *Map) Update(key, value any, flags uint64) error {
	if k, ok := key.([]byte); ok || key == nil { // nil: a map without keys
		if v, ok := value.([]byte); ok {
			return m.updateBytes(k, v, flags)
		}
	}
	keepContents(key)
	keepContents(value)
	return m.updateTyped(hide(&key), hide(&value), flags)
}

// updateTyped is Update off the []byte path (key and value from hide).
func (m *Map) updateTyped(key, value any, flags uint64) error {
	k, v, err := typedArgs(key, value)
	if err != nil {
		return err
	}
	kb, err := m.keyBytes(k)
	if err != nil {
		return err
	}
	vb, err := m.valueBytes(v)
	if err != nil {
		return err
	}
	return m.updateBytes(kb, vb, flags)
}

func (m *Map) updateBytes(key, value []byte, flags uint64) error {
	if len(key) != int(m.info.KeySize) {
		return errKeySize
	}
	if len(value) != m.ValueBufferSize() {
		return errValueSize
	}
	if m.info.Type == ProgArray {
		// As with the kernel, the value is a program's descriptor.
		v, err := m.c.progArrayValue(value)
		if err != nil {
			return err
		}
		value = v
	}
	if m.info.Type == ArrayOfMaps || m.info.Type == HashOfMaps {
		// As with the kernel, the value is a map's descriptor.
		v, err := m.c.mapInMapValue(value)
		if err != nil {
			return err
		}
		value = v
	}
	return m.elem(wire.CmdMapUpdateElem, flags, nil, key, value)
}

// Delete removes key ([]byte of KeySize bytes, or any type cilium/ebpf's
// rules encode to KeySize bytes). It returns ErrKeyNotExist for a missing
// key, ErrInvalid for arrays (whose elements cannot be deleted) and for a
// key of the wrong size, ErrPermission if m cannot write or the map is
// frozen, and ErrClosed.
func (m *Map) Delete(key any) error {
	if k, ok := key.([]byte); ok || key == nil && m.info.KeySize == 0 {
		return m.deleteBytes(k)
	}
	keepContents(key)
	return m.deleteTyped(hide(&key))
}

// deleteTyped is Delete off the []byte path (key from hide).
func (m *Map) deleteTyped(key any) error {
	k, err := typedArg(key, "key")
	if err != nil {
		return err
	}
	kb, err := m.keyBytes(k)
	if err != nil {
		return err
	}
	return m.deleteBytes(kb)
}

func (m *Map) deleteBytes(key []byte) error {
	if len(key) != int(m.info.KeySize) {
		return errKeySize
	}
	return m.elem(wire.CmdMapDeleteElem, 0, nil, key)
}

// NextKey stores in nextKeyOut the key following key (the first key if
// key is nil; for hash maps also if key is missing, as the kernel does).
// Keys are []byte of KeySize bytes or typed as for Lookup. It returns
// ErrKeyNotExist after the last key, ErrPermission if m cannot read, and
// ErrClosed.
func (m *Map) NextKey(key, nextKeyOut any) error {
	if k, ok := key.([]byte); ok || key == nil { // nil: the first key
		if n, ok := nextKeyOut.([]byte); ok {
			return m.nextKeyBytes(k, n)
		}
	}
	keepContents(key)
	keepContents(nextKeyOut)
	return m.nextKeyTyped(hide(&key), hide(&nextKeyOut))
}

// nextKeyTyped is NextKey off the []byte path (arguments from hide).
func (m *Map) nextKeyTyped(key, nextKeyOut any) error {
	k, n, err := typedArgs(key, nextKeyOut)
	if err != nil {
		return err
	}
	kb, isBytes := k.([]byte) // a nil []byte: the first key, as nil
	if !isBytes && k != nil {
		if kb, err = m.keyBytes(k); err != nil {
			return err
		}
	}
	if err := m.readKey(n, func(b []byte) error { return m.nextKeyBytes(kb, b) }); err != nil {
		return err
	}
	writeBack(nextKeyOut, n)
	return nil
}

func (m *Map) nextKeyBytes(key, next []byte) error {
	if key != nil && len(key) != int(m.info.KeySize) || len(next) != int(m.info.KeySize) {
		return errKeySize
	}
	if done, err := m.sharedNextKey(key, next); done {
		return err
	}
	return m.elem(wire.CmdMapGetNextKey, 0, next, key)
}

// LookupAndDelete copies the value under key into valueOut and removes
// the key in one step. Keys and values as Lookup; errors as Lookup and
// Delete; arrays give ErrNotSupported or ErrInvalid as the kernel does.
func (m *Map) LookupAndDelete(key, valueOut any) error {
	if k, ok := key.([]byte); ok || key == nil { // nil: a map without keys
		if v, ok := valueOut.([]byte); ok {
			return m.lookupAndDeleteBytes(k, v)
		}
	}
	keepContents(key)
	keepContents(valueOut)
	return m.lookupTyped(hide(&key), hide(&valueOut), m.lookupAndDeleteBytes)
}

func (m *Map) lookupAndDeleteBytes(key, value []byte) error {
	if len(key) != int(m.info.KeySize) {
		return errKeySize
	}
	if len(value) != m.ValueBufferSize() {
		return errValueSize
	}
	return m.elem(wire.CmdMapLookupAndDeleteElem, 0, value, key)
}

// Freeze makes the map read-only for every descriptor, forever: later
// writes fail with ErrPermission. It returns ErrPermission if m cannot
// write or the map is already frozen (as the kernel: a frozen map has no
// write permission left), and ErrClosed.
func (m *Map) Freeze() error {
	return m.elem(wire.CmdMapFreeze, 0, nil)
}

// Reopen returns a new Map on the same Conn with a new descriptor of mode
// mode, which must be a subset of m's mode (ErrPermission otherwise;
// ErrInvalid for an empty or unknown mode). The new Map owns its
// descriptor and is independent of m: closing one leaves the other open.
func (m *Map) Reopen(mode Mode) (*Map, error) {
	if !wire.Mode(mode).Valid() {
		return nil, errMode
	}
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: m.handle, Mode: wire.Mode(mode)}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, wire.CmdReopen, attr, nil); err != nil {
		return nil, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return nil, err
	}
	return m.c.newMap(w, w.takeFD(0))
}

// Info asks the daemon for the map's current description as seen through
// m (including whether it is frozen). It returns ErrClosed after Close.
func (m *Map) Info() (MapInfo, error) {
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: m.handle}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, wire.CmdObjGetInfo, attr, nil); err != nil {
		return MapInfo{}, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return MapInfo{}, err
	}
	data, err := w.payload()
	if err != nil {
		return MapInfo{}, err
	}
	var o wire.ObjInfo
	if !o.Parse(data) {
		return MapInfo{}, errProtocol
	}
	return mapInfo(&o), nil
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// revoke revokes the descriptor r was made with (see Map.Revoke), then
// closes r.
func (r *ref) revoke() error {
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: r.handle}).Append(ab[:0])
	if err := r.c.simple(r, wire.CmdRevoke, attr, nil); err != nil {
		return err
	}
	return r.close()
}

// Revoke takes back the descriptor m was made with by Reopen (or by
// OpenPinnedMap): every handle and descriptor derived from it, in this
// process and in every process that received it (imported it, reopened it
// further), stops working — operations fail with ErrBadDescriptor, and so
// do imports of it — every pin made from any of them is removed (with
// everything opened from those pins), also from the daemon's saved state,
// and m is closed. The kernel cannot take back an fd it gave away; bpfd
// can, because it holds the other end. Only the Map that Reopen returned
// may revoke (ErrPermission for an imported one); the descriptor made by
// creating the map cannot be revoked (ErrInvalid: Destroy the map
// instead). After a daemon restart, when the Map that could revoke is
// gone, the owner revokes with RevokeNode.
func (m *Map) Revoke() error { return m.ref.revoke() }

// destroy destroys r's object (see Map.Destroy), then closes r.
func (r *ref) destroy() error {
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: r.handle}).Append(ab[:0])
	if err := r.c.simple(r, wire.CmdDestroy, attr, nil); err != nil {
		return err
	}
	return r.close()
}

// Destroy destroys the map: every descriptor and handle of it, in every
// process (imported, reopened, opened from a pin), is revoked and every
// pin file of it removed, at once; m is closed. It needs the destroy
// right (ModeDestroy: the Map NewMap returned, an import of its
// descriptor, or OpenPinnedMap with ModeDestroy by the owner of a pin made
// from one of those): ErrPermission otherwise, whatever the map's
// BPF_F_RDONLY/BPF_F_WRONLY flags.
func (m *Map) Destroy() error { return m.ref.destroy() }

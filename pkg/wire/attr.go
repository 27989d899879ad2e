package wire

import "encoding/binary"

// Mode is an access mode: a set of ModeRead, ModeWrite and ModeDestroy.
//
// Read and write are the data rights (see docs/protocol.md for what each
// command needs). ModeDestroy is the right to end the object for everyone
// (CmdDestroy) and to revoke any part of its lineage (CmdRevokeNode,
// CmdLineage). Only the object's creating descriptor starts with it; REOPEN
// never passes it on; a pin made through a handle holding it passes it
// only to the pin file's owner (docs/security.md, "The destroy right").
type Mode uint32

// Access modes.
const (
	ModeRead      Mode = 1
	ModeWrite     Mode = 2
	ModeDestroy   Mode = 4
	ModeReadWrite Mode = ModeRead | ModeWrite
	// ModeAll is every right a mode may hold.
	ModeAll Mode = ModeReadWrite | ModeDestroy
)

// Valid reports whether m is a non-empty subset of ModeAll.
func (m Mode) Valid() bool { return m != 0 && m&^ModeAll == 0 }

// Data returns m's data rights (read and write), without ModeDestroy.
func (m Mode) Data() Mode { return m & ModeReadWrite }

// String returns the rights of m as letters in the order r, w, d ("r",
// "rw", "rwd", "d", ...), or "-" for none.
func (m Mode) String() string {
	var b [3]byte
	n := 0
	for _, r := range [...]struct {
		bit Mode
		c   byte
	}{{ModeRead, 'r'}, {ModeWrite, 'w'}, {ModeDestroy, 'd'}} {
		if m&r.bit != 0 {
			b[n] = r.c
			n++
		}
	}
	if n == 0 {
		return "-"
	}
	return string(b[:n])
}

// ParseMode is the inverse of Mode.String: it accepts the letters r, w and
// d in that order, each at most once, and "-" for the empty mode.
func ParseMode(s string) (Mode, bool) {
	if s == "-" {
		return 0, true
	}
	var m Mode
	next := 0
	for i := 0; i < len(s); i++ {
		var bit Mode
		var pos int
		switch s[i] {
		case 'r':
			bit, pos = ModeRead, 0
		case 'w':
			bit, pos = ModeWrite, 1
		case 'd':
			bit, pos = ModeDestroy, 2
		default:
			return 0, false
		}
		if pos < next {
			return 0, false
		}
		next = pos + 1
		m |= bit
	}
	return m, s != ""
}

// ObjType says what kind of object a handle or descriptor names.
type ObjType uint32

// Object kinds.
const (
	ObjMap  ObjType = 1
	ObjProg ObjType = 2
)

var le = binary.LittleEndian

// MapCreateAttr is CmdMapCreate's attr (72 bytes; old clients send the
// first 40). Reply: Ret = handle, fd 0 = descriptor (mode read-write,
// capped by BPF_F_RDONLY/WRONLY), data = ObjInfo.
//
// Layout: @0 MapType, @4 KeySize, @8 ValueSize, @12 MaxEntries, @16
// MapFlags, @20 zero, @24 Name; @40 InnerMapHandle, @44 NumaNode, @48
// MapExtra (u64); @56 BTFHandle, @60 BTFKeyTypeID, @64 BTFValueTypeID
// (as bpf_attr's btf_fd, btf_key_type_id, btf_value_type_id); @68 zero.
type MapCreateAttr struct {
	MapType    uint32
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	MapFlags   uint32
	Name       [ObjNameLen]byte
	// InnerMapHandle names the inner map of a map-in-map (0: none).
	InnerMapHandle uint32
	// NumaNode is the kernel's numa_node (with BPF_F_NUMA_NODE).
	NumaNode uint32
	// MapExtra is the kernel's map_extra (bloom filter hash count).
	MapExtra uint64
	// BTFHandle names a BTF object (BTF_LOAD) describing the key and the
	// value: BTFKeyTypeID and BTFValueTypeID are type ids in it, whose
	// sizes must be the key and value sizes. 0: no type information.
	BTFHandle      uint32
	BTFKeyTypeID   uint32
	BTFValueTypeID uint32
}

// MapCreateAttrSize is the encoded size of MapCreateAttr; MapCreateAttrV1Size
// the size before InnerMapHandle.
const (
	MapCreateAttrSize   = 72
	MapCreateAttrV1Size = 40
)

// Append appends a's encoding to b.
func (a *MapCreateAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.MapType)
	b = le.AppendUint32(b, a.KeySize)
	b = le.AppendUint32(b, a.ValueSize)
	b = le.AppendUint32(b, a.MaxEntries)
	b = le.AppendUint32(b, a.MapFlags)
	b = le.AppendUint32(b, 0)
	b = append(b, a.Name[:]...)
	b = le.AppendUint32(b, a.InnerMapHandle)
	b = le.AppendUint32(b, a.NumaNode)
	b = le.AppendUint64(b, a.MapExtra)
	b = le.AppendUint32(b, a.BTFHandle)
	b = le.AppendUint32(b, a.BTFKeyTypeID)
	b = le.AppendUint32(b, a.BTFValueTypeID)
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr (see Attr) of MapCreateAttrSize
// bytes. The pad words must be zero (false otherwise).
func (a *MapCreateAttr) Parse(b []byte) bool {
	a.MapType = le.Uint32(b[0:])
	a.KeySize = le.Uint32(b[4:])
	a.ValueSize = le.Uint32(b[8:])
	a.MaxEntries = le.Uint32(b[12:])
	a.MapFlags = le.Uint32(b[16:])
	copy(a.Name[:], b[24:40])
	a.InnerMapHandle = le.Uint32(b[40:])
	a.NumaNode = le.Uint32(b[44:])
	a.MapExtra = le.Uint64(b[48:])
	a.BTFHandle = le.Uint32(b[56:])
	a.BTFKeyTypeID = le.Uint32(b[60:])
	a.BTFValueTypeID = le.Uint32(b[64:])
	return le.Uint32(b[20:]) == 0 && le.Uint32(b[68:]) == 0
}

// ElemAttr is the attr of the single-element map commands (16 bytes):
// CmdMapLookupElem (data: key; reply data: value), CmdMapUpdateElem (data:
// key then value), CmdMapDeleteElem (data: key), CmdMapGetNextKey (data: key,
// or empty for the first key; reply data: next key),
// CmdMapLookupAndDeleteElem (data: key; reply data: value), CmdMapFreeze (no
// data). Flags are the kernel's per-command flags (BPF_ANY, BPF_NOEXIST,
// BPF_EXIST for update; zero elsewhere).
type ElemAttr struct {
	Handle uint32
	Flags  uint64
}

// ElemAttrSize is the encoded size of ElemAttr.
const ElemAttrSize = 16

// Append appends a's encoding to b.
func (a *ElemAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	b = le.AppendUint32(b, 0)
	return le.AppendUint64(b, a.Flags)
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *ElemAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.Flags = le.Uint64(b[8:])
	return le.Uint32(b[4:]) == 0
}

// BatchAttr is the attr of the batch commands (32 bytes), with the kernel's
// BPF_MAP_*_BATCH semantics. Count is the number of elements asked for (or
// supplied, for update and delete). InBatch is the cursor from a previous
// reply, used when HasInBatch is 1 (0 starts from the beginning).
//
// Request data: update: Count keys then Count values; delete: Count keys;
// lookup and lookup-and-delete: none. Reply: Ret = elements done (also on
// error, for the partial count); data = OutBatch cursor (8 bytes, lookup
// commands only) then the keys then the values found.
type BatchAttr struct {
	Handle     uint32
	Count      uint32
	ElemFlags  uint64
	Flags      uint64
	HasInBatch uint32
	InBatch    uint64
}

// BatchAttrSize is the encoded size of BatchAttr.
const BatchAttrSize = 40

// BatchCursorSize is the size of the out-batch cursor leading a batch
// lookup reply.
const BatchCursorSize = 8

// Append appends a's encoding to b.
func (a *BatchAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	b = le.AppendUint32(b, a.Count)
	b = le.AppendUint64(b, a.ElemFlags)
	b = le.AppendUint64(b, a.Flags)
	b = le.AppendUint32(b, a.HasInBatch)
	b = le.AppendUint32(b, 0)
	return le.AppendUint64(b, a.InBatch)
}

// Parse decodes a from a normalised attr; false if a pad word is set or
// HasInBatch is neither 0 nor 1.
func (a *BatchAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.Count = le.Uint32(b[4:])
	a.ElemFlags = le.Uint64(b[8:])
	a.Flags = le.Uint64(b[16:])
	a.HasInBatch = le.Uint32(b[24:])
	a.InBatch = le.Uint64(b[32:])
	return le.Uint32(b[28:]) == 0 && a.HasInBatch <= 1
}

// HandleAttr is the attr of commands that name one handle and a mode (8
// bytes): CmdObjGetInfo (Mode 0; reply data: ObjInfo), CmdRelease (Mode 0),
// CmdReopen (Mode: the new descriptor's mode, a subset of the handle's;
// reply: Ret = new handle, fd 0 = new descriptor, data = ObjInfo),
// CmdRevoke (Mode 0; revokes the descriptor the handle was created
// through or imported from, with everything derived from it).
type HandleAttr struct {
	Handle uint32
	Mode   Mode
}

// HandleAttrSize is the encoded size of HandleAttr.
const HandleAttrSize = 8

// Append appends a's encoding to b.
func (a *HandleAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	return le.AppendUint32(b, uint32(a.Mode))
}

// Parse decodes a from a normalised attr.
func (a *HandleAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.Mode = Mode(le.Uint32(b[4:]))
	return true
}

// ImportAttr is CmdImport's attr (8 bytes). The request carries exactly one
// fd: a descriptor. Mode 0 keeps the descriptor's mode; otherwise it must be
// a subset of it. Reply: Ret = handle, data = ObjInfo. The daemon closes the
// fd it received; the client keeps its own.
type ImportAttr struct {
	Mode Mode
}

// ImportAttrSize is the encoded size of ImportAttr.
const ImportAttrSize = 8

// Append appends a's encoding to b.
func (a *ImportAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, uint32(a.Mode))
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr.
func (a *ImportAttr) Parse(b []byte) bool {
	a.Mode = Mode(le.Uint32(b[0:]))
	return le.Uint32(b[4:]) == 0
}

// HelloAttr is CmdHello's attr (8 bytes): the client's protocol version.
// Reply: Ret = the server's protocol version, data = the server's version
// string.
type HelloAttr struct {
	Version uint32
}

// HelloAttrSize is the encoded size of HelloAttr.
const HelloAttrSize = 8

// Append appends a's encoding to b.
func (a *HelloAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Version)
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr.
func (a *HelloAttr) Parse(b []byte) bool {
	a.Version = le.Uint32(b[0:])
	return le.Uint32(b[4:]) == 0
}

// ObjInfo describes an object as seen through one handle (80 bytes on the
// wire). Map fields are zero for programs and vice versa.
type ObjInfo struct {
	ObjType     ObjType
	Mode        Mode   // the handle's (and its descriptor's) mode
	ID          uint32 // daemon-wide object id, never reused while the daemon runs
	Type        uint32 // map type or program type, kernel numbering
	KeySize     uint32
	ValueSize   uint32
	MaxEntries  uint32
	Flags       uint32 // map flags
	Frozen      uint32 // 1 if the map is frozen
	InsnCount   uint32 // programs: instruction count
	Name        [ObjNameLen]byte
	MemoryUsage uint64 // bytes charged to the owner's quota
	Tag         [8]byte
	OwnerUID    uint32
	// Node is the lineage node (docs/design.md, "The authority tree") of
	// the handle's descriptor: an id unique within the object, never
	// reused, stable across daemon restarts. CmdLineage lists the nodes,
	// CmdRevokeNode revokes one.
	Node uint64
	// BTFID is the id of the object's BTF object (0: none); for maps,
	// BTFKeyTypeID and BTFValueTypeID are the key's and value's type
	// ids in it.
	BTFID          uint32
	BTFKeyTypeID   uint32
	BTFValueTypeID uint32
	// SpinLock (maps, at 100, once padding: older servers send 0) is one
	// more than the offset of the values' struct bpf_spin_lock, 0 for
	// none (maps.Spec.SpinLock).
	SpinLock uint32
}

// ObjInfoSize is the encoded size of ObjInfo; ObjInfoV1Size the size
// before the BTF fields (a reply of an older server: they read as 0).
const (
	ObjInfoSize   = 104
	ObjInfoV1Size = 88
)

// Append appends o's encoding to b.
func (o *ObjInfo) Append(b []byte) []byte {
	for _, v := range [...]uint32{uint32(o.ObjType), uint32(o.Mode), o.ID, o.Type,
		o.KeySize, o.ValueSize, o.MaxEntries, o.Flags, o.Frozen, o.InsnCount} {
		b = le.AppendUint32(b, v)
	}
	b = append(b, o.Name[:]...)
	b = le.AppendUint64(b, o.MemoryUsage)
	b = append(b, o.Tag[:]...)
	b = le.AppendUint32(b, o.OwnerUID)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, o.Node)
	b = le.AppendUint32(b, o.BTFID)
	b = le.AppendUint32(b, o.BTFKeyTypeID)
	b = le.AppendUint32(b, o.BTFValueTypeID)
	return le.AppendUint32(b, o.SpinLock)
}

// Parse decodes o; false if b is shorter than ObjInfoV1Size. Longer input
// (from a newer server) is accepted and the tail ignored; the fields of a
// shorter one (an older server) are 0.
func (o *ObjInfo) Parse(b []byte) bool {
	if len(b) < ObjInfoV1Size {
		return false
	}
	f := [...]*uint32{(*uint32)(&o.ObjType), (*uint32)(&o.Mode), &o.ID, &o.Type,
		&o.KeySize, &o.ValueSize, &o.MaxEntries, &o.Flags, &o.Frozen, &o.InsnCount}
	for i, p := range f {
		*p = le.Uint32(b[4*i:])
	}
	copy(o.Name[:], b[40:56])
	o.MemoryUsage = le.Uint64(b[56:])
	copy(o.Tag[:], b[64:72])
	o.OwnerUID = le.Uint32(b[72:])
	o.Node = le.Uint64(b[80:])
	o.BTFID, o.BTFKeyTypeID, o.BTFValueTypeID, o.SpinLock = 0, 0, 0, 0
	if len(b) >= ObjInfoSize {
		o.BTFID = le.Uint32(b[88:])
		o.BTFKeyTypeID = le.Uint32(b[92:])
		o.BTFValueTypeID = le.Uint32(b[96:])
		o.SpinLock = le.Uint32(b[100:])
	}
	return true
}

// NameString returns a NUL-terminated name as a string.
func NameString(n [ObjNameLen]byte) string {
	for i, c := range n {
		if c == 0 {
			return string(n[:i])
		}
	}
	return string(n[:])
}

// AttrSize returns the attr size this version knows for cmd, and false for
// a command this version does not know.
func AttrSize(cmd Cmd) (int, bool) {
	switch cmd {
	case CmdMapCreate:
		return MapCreateAttrSize, true
	case CmdMapLookupElem, CmdMapUpdateElem, CmdMapDeleteElem, CmdMapGetNextKey,
		CmdMapLookupAndDeleteElem, CmdMapFreeze:
		return ElemAttrSize, true
	case CmdMapLookupBatch, CmdMapLookupAndDeleteBatch, CmdMapUpdateBatch, CmdMapDeleteBatch:
		return BatchAttrSize, true
	case CmdObjGetInfo, CmdRelease, CmdReopen, CmdRevoke, CmdProgDump, CmdDestroy, CmdLineage:
		return HandleAttrSize, true
	case CmdRevokeNode:
		return RevokeNodeAttrSize, true
	case CmdImport:
		return ImportAttrSize, true
	case CmdHello:
		return HelloAttrSize, true
	case CmdStatus, CmdDaemonUpgrade:
		return 0, true
	case CmdImportAt:
		return ImportAtAttrSize, true
	case CmdProgLoad:
		return ProgLoadAttrSize, true
	case CmdProgTestRun:
		return TestRunAttrSize, true
	case CmdProgAttach:
		return AttachAttrSize, true
	case CmdObjPin:
		return ObjPinAttrSize, true
	case CmdObjGet:
		return ObjGetAttrSize, true
	case CmdPinMkdir:
		return PinMkdirAttrSize, true
	case CmdLinkCreate, CmdLinkDetach, CmdLinkInfo, CmdLinkList:
		return linkAttrSize(cmd), true
	case CmdMapStorage:
		return MapStorageAttrSize, true
	case CmdPerfRing:
		return PerfRingAttrSize, true
	case CmdObjList:
		return ListAttrSize, true
	case CmdBTFLoad:
		return BTFLoadAttrSize, true
	case CmdBTFGet:
		return HandleAttrSize, true
	}
	return 0, false
}

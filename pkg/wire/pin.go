package wire

// CmdPinMkdir makes a directory under the daemon's pin root as the caller
// (attr PinMkdirAttr, data: the path). bpf(2) has no equivalent: bpffs
// directories are made with mkdir(2), but bpfd's pin root may be a
// directory only the daemon can write.
const CmdPinMkdir Cmd = 0x106

func init() { cmdNames[CmdPinMkdir] = "PIN_MKDIR" }

// MaxPinPath caps the length of a pin path in OBJ_PIN and PIN_MKDIR, as
// PATH_MAX (including the NUL the kernel would count).
const MaxPinPath = 4095

// ObjPinAttr is CmdObjPin's attr (16 bytes). The request data is the pin
// path, PathLen bytes without a NUL: relative to the daemon's pin root, or
// absolute and inside it. FileMode holds the new file's permission bits
// (at most 0777). The pin's access is capped at the handle's mode; the
// file is owned by the caller. Reply: Ret 0, no data, no fds.
type ObjPinAttr struct {
	Handle   uint32
	FileMode uint32
	PathLen  uint32
}

// ObjPinAttrSize is the encoded size of ObjPinAttr.
const ObjPinAttrSize = 16

// Append appends a's encoding to b.
func (a *ObjPinAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	b = le.AppendUint32(b, a.FileMode)
	b = le.AppendUint32(b, a.PathLen)
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *ObjPinAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.FileMode = le.Uint32(b[4:])
	a.PathLen = le.Uint32(b[8:])
	return le.Uint32(b[12:]) == 0
}

// ObjGetAttr is CmdObjGet's attr (8 bytes). The request carries exactly one
// fd: a pin file the client opened itself (O_RDONLY, O_WRONLY or O_RDWR).
// The granted mode is the fd's open mode intersected with the pin's mode;
// Mode 0 asks for all of it, otherwise Mode must be a subset of it. Reply:
// Ret = handle, fd 0 = a new descriptor with that mode, data = ObjInfo.
// The daemon closes the fd it received; the client keeps its own.
type ObjGetAttr struct {
	Mode Mode
}

// ObjGetAttrSize is the encoded size of ObjGetAttr.
const ObjGetAttrSize = 8

// Append appends a's encoding to b.
func (a *ObjGetAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, uint32(a.Mode))
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *ObjGetAttr) Parse(b []byte) bool {
	a.Mode = Mode(le.Uint32(b[0:]))
	return le.Uint32(b[4:]) == 0
}

// PinMkdirAttr is CmdPinMkdir's attr (8 bytes). The request data is the
// directory path (PathLen bytes, as in ObjPinAttr); FileMode its permission
// bits (at most 0777). The directory is owned by the caller. Reply: Ret 0.
type PinMkdirAttr struct {
	FileMode uint32
	PathLen  uint32
}

// PinMkdirAttrSize is the encoded size of PinMkdirAttr.
const PinMkdirAttrSize = 8

// Append appends a's encoding to b.
func (a *PinMkdirAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.FileMode)
	return le.AppendUint32(b, a.PathLen)
}

// Parse decodes a from a normalised attr.
func (a *PinMkdirAttr) Parse(b []byte) bool {
	a.FileMode = le.Uint32(b[0:])
	a.PathLen = le.Uint32(b[4:])
	return true
}

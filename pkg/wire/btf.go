package wire

// BTF objects: type information (the kernel's BTF format) describing map
// keys and values and programs, as bpf(2)'s BPF_BTF_LOAD makes them. A
// map created with a BTF handle keeps its BTF object alive; clients
// fetch it (BTF_GET) to print and parse keys and values as types.

const (
	// CmdBTFLoad loads raw BTF (attr: BTFLoadAttr; data: the BTF blob, as
	// the .BTF section of an ELF object: header, types, strings). The
	// daemon parses and checks it. Reply: Ret = handle, fd 0 = a
	// descriptor (mode read), data = ObjInfo (ObjType ObjBTF, ID = the
	// BTF id, MemoryUsage). Errors: EINVAL (malformed BTF, flags, pad),
	// E2BIG (larger than MaxBTFSize), ENOMEM/ENOSPC (quotas).
	CmdBTFLoad Cmd = 18
	// CmdBTFGet returns the BTF of an object (attr: HandleAttr, Mode 0;
	// the handle names a map, program or BTF object, with any mode).
	// Reply: Ret = the BTF id, data = the raw BTF. ENOENT if the object
	// has none.
	CmdBTFGet Cmd = 0x171
)

// MaxBTFSize caps a BTF blob, as the kernel's BTF_MAX_SIZE (16 MiB).
const MaxBTFSize = 16 << 20

func init() {
	cmdNames[CmdBTFLoad] = "BTF_LOAD"
	cmdNames[CmdBTFGet] = "BTF_GET"
}

// BTFLoadAttr is CmdBTFLoad's attr (16 bytes).
type BTFLoadAttr struct {
	Flags uint32 // must be 0
}

// BTFLoadAttrSize is the encoded size of BTFLoadAttr.
const BTFLoadAttrSize = 16

// Append appends a's encoding to b.
func (a *BTFLoadAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Flags)
	b = le.AppendUint32(b, 0)
	return le.AppendUint64(b, 0)
}

// Parse decodes a from a normalised attr; false if a pad word is set.
func (a *BTFLoadAttr) Parse(b []byte) bool {
	a.Flags = le.Uint32(b[0:])
	return le.Uint32(b[4:]) == 0 && le.Uint64(b[8:]) == 0
}

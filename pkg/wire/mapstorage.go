package wire

// Map storage: a holder of a read descriptor maps the map's storage into
// its own address space (package mapview describes the format) and reads
// it without a round trip. bpfd's own commands 0x140-0x14f.

// CmdMapStorage hands out a descriptor of a map's storage. See
// MapStorageAttr.
const CmdMapStorage Cmd = 0x140

func init() { cmdNames[CmdMapStorage] = "MAP_STORAGE" }

// MapStorage flags (MapStorageAttr.Flags and MapStorageInfo.Flags).
const (
	// StorageWritable asks for (and marks) a descriptor that may be
	// mapped writable: BPF_F_MMAPABLE arrays only, through a handle with
	// read and write modes, as the kernel's mmap of such a map.
	StorageWritable uint32 = 1 << 0
	// StorageRing marks a ring buffer's storage (reply only): fd 1 is
	// the consumer page (its first 8 bytes the consumer position;
	// writable when StorageWritable, which needs write mode), fd 2 an
	// eventfd that becomes readable when a record the consumer waits for
	// is committed, and once when the storage moves.
	StorageRing uint32 = 1 << 1
)

// MapStorageAttr is CmdMapStorage's attr (8 bytes). The handle needs read
// mode (EPERM otherwise: a write-only descriptor maps nothing), and write
// mode too with StorageWritable. For a ring buffer the reply also carries
// the consumer page and an eventfd (StorageRing); StorageWritable asks
// for a writable consumer page (consuming frees space: a write). Reply: fd 0 = the storage (an O_RDONLY
// descriptor of the region's memfd or file, or O_RDWR with
// StorageWritable; the client owns it), data = MapStorageInfo. Errors:
// EPERM (mode; StorageWritable on a frozen map), EACCES (StorageWritable
// on a BPF_F_RDONLY_PROG map), ENOTSUPP (StorageWritable on a map that is
// not an MMAPABLE array), EINVAL (unknown flags, not a map).
type MapStorageAttr struct {
	Handle uint32
	Flags  uint32
}

// MapStorageAttrSize is the encoded size of MapStorageAttr.
const MapStorageAttrSize = 8

// Append appends a's encoding to b.
func (a *MapStorageAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	return le.AppendUint32(b, a.Flags)
}

// Parse decodes a from a normalised attr.
func (a *MapStorageAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.Flags = le.Uint32(b[4:])
	return true
}

// MapStorageInfo is CmdMapStorage's reply data (24 bytes).
type MapStorageInfo struct {
	// Size is the region's size in bytes (map it whole, from offset 0).
	Size uint64
	// DataOff is where an MMAPABLE array's values start (page aligned):
	// a writable mapping covers [DataOff, Size).
	DataOff uint64
	// Generation is the region's move counter when the descriptor was
	// made (the header's Generation).
	Generation uint32
	// Flags: StorageWritable if fd 0 may be mapped writable.
	Flags uint32
}

// MapStorageInfoSize is the encoded size of MapStorageInfo.
const MapStorageInfoSize = 24

// Append appends i's encoding to b.
func (i *MapStorageInfo) Append(b []byte) []byte {
	b = le.AppendUint64(b, i.Size)
	b = le.AppendUint64(b, i.DataOff)
	b = le.AppendUint32(b, i.Generation)
	return le.AppendUint32(b, i.Flags)
}

// Parse decodes i; false if b is shorter than MapStorageInfoSize.
func (i *MapStorageInfo) Parse(b []byte) bool {
	if len(b) < MapStorageInfoSize {
		return false
	}
	i.Size = le.Uint64(b[0:])
	i.DataOff = le.Uint64(b[8:])
	i.Generation = le.Uint32(b[16:])
	i.Flags = le.Uint32(b[20:])
	return true
}

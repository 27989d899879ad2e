package wire

// Listing objects (bpftool's "map show", "prog show", "link show" with no
// argument, and by id or name).

// CmdObjList lists the objects the caller may see (attr: ListAttr; no
// data). Reply: Ret = number of records, data = JSON array of
// ObjectRecord, sorted by id. The caller sees the objects its uid owns,
// and those it holds a handle of on this connection; uid 0 sees all.
// Holder processes (ListFlagHolders) are named for the caller's own
// processes; uid 0 sees every holder.
const CmdObjList Cmd = 0x170

// ObjBTF is the kind of BTF objects (type information of maps and
// programs, as the kernel's BPF_BTF_LOAD makes).
const ObjBTF ObjType = 4

func init() { cmdNames[CmdObjList] = "OBJ_LIST" }

// List flags.
const (
	// ListFlagHolders fills Pids: the processes holding descriptors of
	// each object (a scan of /proc, slower).
	ListFlagHolders uint32 = 1 << 0
)

// ListAttr is CmdObjList's attr (16 bytes). Kind 0 lists every kind, else
// only ObjMap, ObjProg, ObjLink or ObjBTF; ID 0 lists all, else only that
// object (an empty list if the caller may not see it); Name, if not
// empty, only objects of that name.
type ListAttr struct {
	Kind  ObjType
	Flags uint32
	ID    uint32
	Name  [ObjNameLen]byte
}

// ListAttrSize is the encoded size of ListAttr.
const ListAttrSize = 32

// Append appends a's encoding to b.
func (a *ListAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, uint32(a.Kind))
	b = le.AppendUint32(b, a.Flags)
	b = le.AppendUint32(b, a.ID)
	b = le.AppendUint32(b, 0)
	return append(b, a.Name[:]...)
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *ListAttr) Parse(b []byte) bool {
	a.Kind = ObjType(le.Uint32(b[0:]))
	a.Flags = le.Uint32(b[4:])
	a.ID = le.Uint32(b[8:])
	copy(a.Name[:], b[16:32])
	return le.Uint32(b[12:]) == 0
}

// ObjectRecord describes one object in CmdObjList's reply, with bpftool's
// field names where bpftool has the field. Fields of other kinds are
// omitted.
type ObjectRecord struct {
	ID       uint32 `json:"id"`
	Kind     string `json:"kind"` // "map", "prog", "link", "btf"
	Type     uint32 `json:"type"` // map or program type, kernel numbering
	Name     string `json:"name"`
	OwnerUID uint32 `json:"uid"`
	// LoadedAt is when the object was created (unix seconds, as
	// bpftool's loaded_at); LoaderPID and LoaderComm the creating process
	// (0 and "" for objects restored at start).
	LoadedAt   int64  `json:"loaded_at"`
	LoaderPID  int32  `json:"loader_pid,omitempty"`
	LoaderComm string `json:"loader_comm,omitempty"`
	Memlock    uint64 `json:"bytes_memlock"`
	BTFID      uint32 `json:"btf_id,omitempty"`
	// Descriptors is how many live descriptors the object has, Pinned its
	// pin files (absolute paths), Pids the processes holding descriptors
	// (ListFlagHolders) and OtherPids how many more the caller may not
	// see.
	Descriptors int         `json:"descriptors"`
	Pinned      []string    `json:"pinned,omitempty"`
	Pids        []PidRecord `json:"pids,omitempty"`
	OtherPids   int         `json:"other_pids,omitempty"`

	// Maps.
	Flags      uint32 `json:"flags,omitempty"`
	KeySize    uint32 `json:"bytes_key,omitempty"`
	ValueSize  uint32 `json:"bytes_value,omitempty"`
	MaxEntries uint32 `json:"max_entries,omitempty"`
	Frozen     bool   `json:"frozen,omitempty"`
	// SpinLockOff is the offset of the values' struct bpf_spin_lock, nil
	// when they hold none.
	SpinLockOff *uint32 `json:"spin_lock_off,omitempty"`

	// Programs.
	Tag         string          `json:"tag,omitempty"` // hex
	GPL         bool            `json:"gpl_compatible,omitempty"`
	Insns       uint32          `json:"insns,omitempty"`
	MapIDs      []uint32        `json:"map_ids,omitempty"`
	RunCount    uint64          `json:"run_cnt,omitempty"`
	RunTimeNs   uint64          `json:"run_time_ns,omitempty"`
	Seccomp     []SeccompRecord `json:"seccomp,omitempty"`
	ProgID      uint32          `json:"prog_id,omitempty"`       // links: the program
	Attachments int             `json:"attachments,omitempty"`   // programs: seccomp attachments and links using it
	UsedByProgs []uint32        `json:"used_by_progs,omitempty"` // maps: programs using it
}

// PidRecord is a process holding a descriptor of an object.
type PidRecord struct {
	PID  int32  `json:"pid"`
	Comm string `json:"comm"`
}

// SeccompRecord is one seccomp attachment of a program and its decision
// counters.
type SeccompRecord struct {
	ID       uint32            `json:"id"`
	UID      uint32            `json:"uid"`
	PID      int32             `json:"pid,omitempty"` // the attaching client, if the caller may see it
	Comm     string            `json:"comm,omitempty"`
	Attached int64             `json:"attached_at"` // unix seconds
	Routed   uint64            `json:"routed"`
	Allowed  uint64            `json:"allowed"`
	Denied   map[string]uint64 `json:"denied,omitempty"` // by errno name
	Killed   uint64            `json:"killed"`
	Faults   uint64            `json:"faults,omitempty"`
	RunNs    uint64            `json:"run_time_ns"`
}

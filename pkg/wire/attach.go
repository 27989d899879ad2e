package wire

// Attach types of CmdProgAttach. bpfd's own start at 0x1000, outside the
// kernel's enum bpf_attach_type.
const (
	// AttachSeccomp: the request's one fd is a seccomp user-notification
	// listener (SECCOMP_FILTER_FLAG_NEW_LISTENER); bpfd answers every
	// notification by running the program, a Seccomp program held with
	// read mode, on the syscall's struct seccomp_data. The attachment
	// holds the program alive and ends when no task uses the filter any
	// more. Reply: Ret = attachment id.
	AttachSeccomp uint32 = 0x1000
)

// AttachAttr is CmdProgAttach's attr (16 bytes).
type AttachAttr struct {
	Handle     uint32
	AttachType uint32
	Flags      uint32
}

// AttachAttrSize is the encoded size of AttachAttr.
const AttachAttrSize = 16

// Append appends a's encoding to b.
func (a *AttachAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	b = le.AppendUint32(b, a.AttachType)
	b = le.AppendUint32(b, a.Flags)
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *AttachAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.AttachType = le.Uint32(b[4:])
	a.Flags = le.Uint32(b[8:])
	return le.Uint32(b[12:]) == 0
}

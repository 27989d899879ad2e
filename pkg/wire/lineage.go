package wire

// Lineage commands (bpfd's own; sec-authority's range 0x120-0x12f). They
// need a handle holding ModeDestroy: the object's owner sees and prunes
// the tree of everything it lent (docs/design.md, "The authority tree").
const (
	// CmdRevokeNode revokes one node of the handle's object's lineage and
	// its whole subtree (attr RevokeNodeAttr). Reply: Ret = nodes killed.
	CmdRevokeNode Cmd = 0x120
	// CmdLineage lists the handle's object's lineage (attr HandleAttr,
	// Mode 0). Reply: Ret = node count, data = JSON array of LineageNode.
	CmdLineage Cmd = 0x121
)

func init() {
	cmdNames[CmdRevokeNode] = "REVOKE_NODE"
	cmdNames[CmdLineage] = "LINEAGE"
}

// RevokeNodeAttr is CmdRevokeNode's attr (16 bytes): Handle names the
// object and must hold ModeDestroy; Node is the lineage node to revoke (an
// ObjInfo.Node or a LineageNode.ID).
type RevokeNodeAttr struct {
	Handle uint32
	Node   uint64
}

// RevokeNodeAttrSize is the encoded size of RevokeNodeAttr.
const RevokeNodeAttrSize = 16

// Append appends a's encoding to b.
func (a *RevokeNodeAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	b = le.AppendUint32(b, 0)
	return le.AppendUint64(b, a.Node)
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *RevokeNodeAttr) Parse(b []byte) bool {
	a.Handle = le.Uint32(b[0:])
	a.Node = le.Uint64(b[8:])
	return le.Uint32(b[4:]) == 0
}

// Lineage node kinds (LineageNode.Kind).
const (
	NodeDescriptor = "descriptor" // a descriptor (dead ones: closed, or of an earlier run)
	NodePin        = "pin"        // a pin file
)

// LineageNode is one node of an object's authority tree, as CmdLineage
// reports it (JSON).
type LineageNode struct {
	ID     uint64 `json:"id"`
	Parent uint64 `json:"parent,omitempty"` // 0 for the root
	Kind   string `json:"kind"`             // NodeDescriptor or NodePin
	Mode   string `json:"mode"`             // Mode.String()
	// UID is the uid a descriptor was made for, or a pin's maker.
	UID uint32 `json:"uid"`
	// Live is false for a node that can no longer be used (a closed
	// descriptor, a descriptor of an earlier run of the daemon, an
	// unpinned pin) but still has live descendants.
	Live bool `json:"live"`
	// Handles counts the live handles made from a descriptor.
	Handles int `json:"handles,omitempty"`
	// Path is a live pin's path relative to the pin root.
	Path string `json:"path,omitempty"`
	// Uses counts what was made through the node and keeps using its
	// authority (programs loaded with its map handles, links, slots and
	// seccomp attachments made with its program handles); Objects are
	// the ids of those programs and links. Revoking the node ends them.
	Uses    int      `json:"uses,omitempty"`
	Objects []uint32 `json:"objects,omitempty"`
}

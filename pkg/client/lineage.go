package client

import (
	"encoding/json"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// LineageNode is one node of an object's lineage, the tree of everything
// that holds authority over it (docs/design.md, "The authority tree"): the
// creating descriptor at the root; below a descriptor, the descriptors
// reopened from it and the pins made through it; below a pin, the
// descriptors opened from it.
type LineageNode struct {
	ID     uint64 // unique within the object, never reused, stable across daemon restarts
	Parent uint64 // 0 for the root
	Pin    bool   // a pin (false: a descriptor)
	Mode   Mode
	// UID is the uid a descriptor was made for, or the uid that made a
	// pin.
	UID uint32
	// Live is false for a node that can no longer be used (a closed
	// descriptor, one of an earlier run of the daemon, an unlinked pin)
	// but still has live descendants: revoking it still reaches them.
	Live    bool
	Handles int    // live handles on a descriptor, in all processes
	Path    string // a live pin's path relative to the pin root
	// Uses counts what was made through the node and keeps its
	// authority: programs loaded with its map handles, links, program
	// array slots and seccomp attachments made with its program handles.
	// Objects are the ids of those programs and links. Revoking the node
	// destroys them (and clears the slots, ends the attachments).
	Uses    int
	Objects []uint32
}

// lineage asks for r's object's lineage.
func (r *ref) lineage() ([]LineageNode, error) {
	w, err := r.c.handleCmd(r, wire.CmdLineage, 0)
	if err != nil {
		return nil, err
	}
	defer putWaiter(w)
	defer w.closeFDs()
	data, err := w.payload()
	if err != nil {
		return nil, err
	}
	var raw []wire.LineageNode
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, errProtocol
	}
	out := make([]LineageNode, 0, len(raw))
	for _, n := range raw {
		m, ok := wire.ParseMode(n.Mode)
		if !ok {
			return nil, errProtocol
		}
		out = append(out, LineageNode{ID: n.ID, Parent: n.Parent, Pin: n.Kind == wire.NodePin, Mode: Mode(m),
			UID: n.UID, Live: n.Live, Handles: n.Handles, Path: n.Path, Uses: n.Uses, Objects: n.Objects})
	}
	return out, nil
}

// revokeNode revokes node of r's object.
func (r *ref) revokeNode(node uint64) (int, error) {
	var ab [wire.RevokeNodeAttrSize]byte
	attr := (&wire.RevokeNodeAttr{Handle: r.handle, Node: node}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	if err := r.c.do(w, r, wire.CmdRevokeNode, attr, nil); err != nil {
		return 0, err
	}
	w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return 0, err
	}
	return int(w.hdr.Ret), nil
}

// Lineage returns the map's lineage, parents before children: who holds
// what was lent from it, and the pins made from that. It needs the destroy
// right (ModeDestroy): ErrPermission otherwise; ErrClosed if m or its Conn
// is closed.
func (m *Map) Lineage() ([]LineageNode, error) { return m.ref.lineage() }

// RevokeNode revokes one node of the map's lineage (a LineageNode.ID, or
// the MapInfo.Node of a descriptor this process lent) and everything
// below it, in every process: descriptors and handles stop working
// (ErrBadDescriptor), pins are removed, also from the daemon's saved state.
// It is how the owner takes back what it lent when the Map that Reopen
// returned is gone — closed, or lost in a daemon restart. It returns how
// many nodes it revoked (node and its descendants). It needs the destroy right: ErrPermission
// otherwise; ErrKeyNotExist (ENOENT) for a node the map does not have;
// ErrClosed if m or its Conn is closed.
func (m *Map) RevokeNode(node uint64) (int, error) { return m.ref.revokeNode(node) }

// Lineage is Map.Lineage for a program.
func (p *Program) Lineage() ([]LineageNode, error) { return p.ref.lineage() }

// RevokeNode is Map.RevokeNode for a program.
func (p *Program) RevokeNode(node uint64) (int, error) { return p.ref.revokeNode(node) }

package demux

import (
	"encoding/json"
	"sort"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Errors of the destroy right.
var (
	// ErrNotOwner: DESTROY, REVOKE_NODE or LINEAGE through a handle
	// without the destroy right.
	ErrNotOwner = errno.New(unix.EPERM, "demux: the handle does not hold the destroy right (only the creating descriptor, and descriptors its owner opens from a pin made with it, do)")
	// ErrDestroyNotDelegable: REOPEN asked for the destroy right.
	ErrDestroyNotDelegable = errno.New(unix.EPERM, "demux: REOPEN never passes the destroy right on")
	// ErrNoNode: REVOKE_NODE names no live node of the object.
	ErrNoNode = errno.New(unix.ENOENT, "demux: no such lineage node in the object")
)

// ownerHandleAttr is ownerHandle for a command whose attr is a HandleAttr
// with no mode and which carries no data (DESTROY, LINEAGE).
func (c *conn) ownerHandleAttr(a, data []byte) (*handle, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return nil, err
	}
	return c.ownerHandle(h)
}

// ownerHandle returns the handle id if it holds the destroy right.
func (c *conn) ownerHandle(id uint32) (*handle, error) {
	hd, err := c.lookup(id)
	if err != nil {
		return nil, err
	}
	if hd.mode&wire.ModeDestroy == 0 {
		return nil, ErrNotOwner
	}
	return hd, nil
}

// destroy executes CmdDestroy: the object's whole lineage is revoked
// (docs/design.md, "The authority tree"). It needs the destroy right.
func (c *conn) destroy(a, data []byte) (int64, error) {
	hd, err := c.ownerHandleAttr(a, data)
	if err != nil {
		return 0, err
	}
	o := hd.obj
	_, err = c.revokeNodes(hd, func(r *registry, free []*Object, killed *[]*Descriptor) ([]*Object, int) {
		n := len(o.nodes)
		return r.revokeTreeLocked(o, free, killed), n
	})
	c.srv.log.Debug("destroyed", zap.Uint32("id", o.id), zap.Uint32("uid", c.uid))
	return 0, err
}

// revokeNode executes CmdRevokeNode: the owner revokes one node of the
// object's lineage and its subtree.
func (c *conn) revokeNode(a, data []byte) (int64, error) {
	var at wire.RevokeNodeAttr
	if !at.Parse(a) || len(data) != 0 {
		return 0, ErrInvalid
	}
	hd, err := c.ownerHandle(at.Handle)
	if err != nil {
		return 0, err
	}
	o := hd.obj
	n, err := c.revokeNodes(hd, func(r *registry, free []*Object, killed *[]*Descriptor) ([]*Object, int) {
		d := o.nodes[at.Node]
		if d == nil {
			return free, -1
		}
		n := subtreeSize(d)
		return r.revokeLocked(d, free, killed), n
	})
	if n < 0 {
		return 0, ErrNoNode
	}
	c.srv.log.Debug("revoked lineage node", zap.Uint32("id", o.id), zap.Uint64("node", at.Node),
		zap.Uint32("uid", c.uid))
	return int64(n), err
}

// subtreeSize counts d and its descendants. registry.mu must be held.
func subtreeSize(d *Descriptor) int {
	n := 1
	for _, ch := range d.children {
		n += subtreeSize(ch)
	}
	return n
}

// revokeNodes runs revoke under the registry lock (and the pins' save lock
// before it), then closes the freed objects and removes the files and
// records of the pins it killed. It returns revoke's count, and the
// persistence error if the pins' records could not be updated.
func (c *conn) revokeNodes(hd *handle, revoke func(*registry, []*Object, *[]*Descriptor) ([]*Object, int)) (int, error) {
	ps := c.srv.pins
	if ps != nil {
		ps.saveMu.Lock()
		defer ps.saveMu.Unlock()
	}
	r := c.reg
	var killed []*Descriptor
	r.mu.Lock()
	if hd.dead.Load() {
		r.mu.Unlock()
		return 0, ErrBadHandle
	}
	free, n := revoke(r, nil, &killed)
	r.mu.Unlock()
	var err error
	if ps != nil {
		err = ps.dropPins(killed)
	}
	closeObjects(free)
	// Revoked holders may have mapped the map's storage: cut them off.
	c.srv.retireStorage(hd.obj)
	return n, err
}

// lineage executes CmdLineage: the object's tree, for its owner.
func (c *conn) lineage(a, data []byte) (int64, error) {
	hd, err := c.ownerHandleAttr(a, data)
	if err != nil {
		return 0, err
	}
	r := c.reg
	r.mu.Lock()
	nodes := r.lineageLocked(hd.obj)
	pinOf := map[uint64]*Descriptor{}
	for _, d := range hd.obj.nodes {
		if d.kind == nodePin && !d.dead && d.pin != nil {
			pinOf[d.id] = d
		}
	}
	r.mu.Unlock()
	if ps := c.srv.pins; ps != nil {
		for i := range nodes {
			if d := pinOf[nodes[i].ID]; d != nil {
				if rel, _, err := ps.store.Stat(d.pin); err == nil {
					nodes[i].Path = rel
				}
			}
		}
	}
	sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	b, err := json.Marshal(nodes)
	if err != nil {
		return 0, err
	}
	copy(c.alloc(len(b)), b)
	return int64(len(nodes)), nil
}

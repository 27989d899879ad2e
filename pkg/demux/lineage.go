package demux

import (
	"slices"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/pins"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// The authority tree (docs/design.md, "The authority tree").
//
// Every holder of authority over an object is a node of the object's
// lineage tree, and every node hangs below the node its authority came
// from:
//
//   - the creating descriptor (MAP_CREATE, PROG_LOAD) is the root, and the
//     only node ever made without a parent;
//   - a descriptor made by REOPEN is a child of the handle's descriptor;
//   - a pin is a child of the descriptor of the handle it was made with;
//   - a descriptor made by OBJ_GET is a child of the pin it was opened
//     from;
//   - a handle (IMPORT, or the one made with a descriptor) hangs on its
//     descriptor.
//
// A node's mode is a subset of its parent's (OBJ_GET's destroy right
// included: it comes from the pin, which had it from its maker). Revoking
// a node kills its whole subtree: descriptors (their peer end is closed),
// handles (they answer EBADF), pins (their file is removed and their
// persisted record updated before the command answers). The tree of a
// pinned object is persisted with its pins (the ancestors of every pin),
// so a restored pin is restored in its place, below dead stand-ins for the
// descriptors of the earlier run, and revoking an ancestor still reaches
// it.
//
// Closing a descriptor or unpinning a pin is not a revocation: the node
// dies but what was derived from it lives on. A dead node stays linked
// while it has live descendants or handles, so that revoking an ancestor
// still reaches them, and is pruned when the last goes.

// nodeKind says what a lineage node stands for.
type nodeKind uint8

const (
	nodeDesc nodeKind = iota // a descriptor (dead: closed, revoked, or of an earlier run)
	nodePin                  // a pin file
)

// Descriptor is a node of an object's lineage: a descriptor (the client
// end of a socketpair, known by its cookie, whose peer end the daemon
// holds) or a pin. kind, id, obj, mode and uid are immutable once linked;
// everything else is guarded by registry.mu.
type Descriptor struct {
	id   uint64 // unique within obj, never reused
	kind nodeKind
	obj  *Object
	mode wire.Mode
	// uid is, for a descriptor, the uid charged for the fd the daemon
	// holds; for a pin, the uid that made it.
	uid  uint32
	dead bool // closed, revoked, unpinned, or of an earlier run

	cookie uint64 // descriptors made in this run; 0 otherwise
	peer   int    // descriptors: the daemon's end; -1 once closed
	ino    uint64 // descriptors: the client end's inode, to find holder processes (list.go)

	// pin is a pin node's file in the store; nil for a pin of an earlier
	// run that was not restored.
	pin *pins.Pin
	// attrs are a pin's file attributes as last persisted. Guarded by
	// pinSet.saveMu.
	attrs pins.Attrs

	parent   *Descriptor          // nil for the root
	children []*Descriptor        // nodes derived from this one
	handles  map[*handle]struct{} // descriptors: handles whose source this is
	// uses are what keeps exercising the authority of this node beyond
	// the handle it was made with (see use).
	uses map[use]struct{}
}

// A use is authority a node granted that outlives the command: a program
// loaded through a map handle of the node (it keeps reading or writing
// the map), a link made through a program handle, a program-array slot
// filled through a program handle, a seccomp attachment made through a
// program handle. The node is not pruned while it has uses, and revoking
// it ends them: the program or link is destroyed (its whole tree revoked,
// with everything derived from it in turn), the slot cleared, the
// attachment ended. So no authority outlives its source by being turned
// into an object.
type use struct {
	obj   *Object     // a program (using the node's map) or a link (of the node's program)
	array *Object     // a program array whose slot key holds the node's program
	key   uint32      // the slot, with array
	att   *attachment // a seccomp attachment of the node's program
	outer *Object     // a map of maps whose entry okey holds the node's map
	okey  string      // the entry's key, with outer
}

// addUseLocked records u on d. r.mu must be held.
func addUseLocked(d *Descriptor, u use) {
	if d.uses == nil {
		d.uses = map[use]struct{}{}
	}
	d.uses[u] = struct{}{}
}

// dropUseLocked forgets u on d (the use ended by itself) and prunes d if
// nothing else keeps it. r.mu must be held.
func (r *registry) dropUseLocked(d *Descriptor, u use) {
	if d == nil {
		return
	}
	delete(d.uses, u)
	r.prune(d)
}

// addViaLocked records that object o (a program or a link) uses the
// authority of node d. r.mu must be held.
func addViaLocked(o *Object, d *Descriptor) {
	for _, v := range o.via {
		if v == d {
			return
		}
	}
	o.via = append(o.via, d)
	addUseLocked(d, use{obj: o})
}

// endUsesLocked revokes what d's uses made (see use). r.mu must be held.
func (r *registry) endUsesLocked(d *Descriptor, free []*Object, killed *[]*Descriptor) []*Object {
	for u := range d.uses {
		delete(d.uses, u)
		switch {
		case u.obj != nil:
			free = r.revokeTreeLocked(u.obj, free, killed)
		case u.array != nil:
			free = r.clearSlotLocked(u.array, u.key, free)
		case u.outer != nil:
			free = r.dropInnerLocked(u.outer, u.okey, free)
		case u.att != nil:
			u.att.cancel()
		}
	}
	return free
}

// linkLocked gives d an id (unless restored with one) and links it below
// parent (nil: a root) in d.obj's tree. r.mu must be held.
func (r *registry) linkLocked(d *Descriptor, parent *Descriptor) {
	o := d.obj
	if d.id == 0 {
		o.lastNode++
		d.id = o.lastNode
	} else if d.id > o.lastNode {
		o.lastNode = d.id
	}
	if o.nodes == nil {
		o.nodes = map[uint64]*Descriptor{}
	}
	o.nodes[d.id] = d
	d.parent = parent
	if parent != nil {
		parent.children = append(parent.children, d)
	}
	r.persistNode(d)
}

// newPinNodeLocked links the new pin node n below the descriptor src,
// takes the pin's reference on the object and charges the pin to its
// maker's descriptors (the daemon holds an fd for it). r.mu must be held.
func (r *registry) newPinNodeLocked(n *Descriptor, src *Descriptor) {
	r.linkLocked(n, src)
	r.chargePinLocked(n)
}

// chargePinLocked makes n a live pin: a reference on the object, one of
// its maker's descriptors. r.mu must be held.
func (r *registry) chargePinLocked(n *Descriptor) {
	n.dead = false
	n.obj.refs++
	r.usage(n.uid).descs++
	r.pins++
}

// killDesc closes d's peer end, marks d dead and drops its reference;
// objects whose last reference went are appended to free. Its children
// live on. r.mu must be held.
func (r *registry) killDesc(d *Descriptor, free []*Object) []*Object {
	if d.dead {
		r.prune(d)
		return free
	}
	d.dead = true
	r.persistDead(d)
	if d.peer >= 0 {
		unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, d.peer, nil)
		unix.Close(d.peer)
		d.peer = -1
		delete(r.descs, d.cookie)
		r.usage(d.uid).descs--
	}
	free = r.unref(d.obj, free)
	r.prune(d)
	return free
}

// killPinLocked marks the pin node n dead and drops the pin's reference;
// its children live on. The caller removes the pin from the store and the
// persisted record (pinSet.dropPins). r.mu must be held.
func (r *registry) killPinLocked(n *Descriptor, free []*Object) []*Object {
	if n.dead {
		r.prune(n)
		return free
	}
	n.dead = true
	r.persistDead(n)
	r.usage(n.uid).descs--
	r.pins--
	free = r.unref(n.obj, free)
	r.prune(n)
	return free
}

// prune unlinks dead nodes that nothing depends on any more (no children,
// no handles), up the lineage. A dead node with live handles or
// descendants stays linked, so revoking an ancestor still reaches them.
// r.mu must be held.
func (r *registry) prune(d *Descriptor) {
	for d != nil && d.dead && len(d.children) == 0 && len(d.handles) == 0 && len(d.uses) == 0 {
		if d.obj.nodes[d.id] == d {
			delete(d.obj.nodes, d.id)
			r.persistDrop(d)
		}
		p := d.parent
		if p == nil {
			return
		}
		for i, ch := range p.children {
			if ch == d {
				last := len(p.children) - 1
				p.children[i] = p.children[last]
				p.children[last] = nil
				p.children = p.children[:last]
				break
			}
		}
		d.parent = nil
		d = p
	}
}

// revokeLocked kills d, its descendants and every handle made from them.
// Pin nodes killed are appended to *killed: the caller removes their files
// and records once r.mu is released (pinSet.dropPins). r.mu must be held.
func (r *registry) revokeLocked(d *Descriptor, free []*Object, killed *[]*Descriptor) []*Object {
	for len(d.children) > 0 {
		n := len(d.children)
		free = r.revokeLocked(d.children[n-1], free, killed)
		if len(d.children) == n { // prune unlinks it; never loop forever
			d.children[n-1].parent = nil
			d.children = d.children[:n-1]
		}
	}
	for h := range d.handles {
		free = r.releaseHandleLocked(h, free)
	}
	free = r.endUsesLocked(d, free, killed)
	if d.kind == nodePin {
		if !d.dead {
			*killed = append(*killed, d)
		}
		return r.killPinLocked(d, free)
	}
	return r.killDesc(d, free)
}

// revokeTreeLocked revokes every node of o (DESTROY, or o was made
// through a node being revoked). r.mu must be held.
func (r *registry) revokeTreeLocked(o *Object, free []*Object, killed *[]*Descriptor) []*Object {
	for len(o.nodes) > 0 {
		var root *Descriptor
		for _, d := range o.nodes {
			root = d
			break
		}
		for root.parent != nil {
			root = root.parent
		}
		free = r.revokeLocked(root, free, killed)
		if o.nodes[root.id] == root { // defensive: never loop forever
			delete(o.nodes, root.id)
		}
	}
	return free
}

// lineageLocked describes o's tree for CmdLineage, parents before
// children. r.mu must be held; pin paths are filled in by the caller.
func (r *registry) lineageLocked(o *Object) []wire.LineageNode {
	var out []wire.LineageNode
	var walk func(d *Descriptor)
	walk = func(d *Descriptor) {
		n := wire.LineageNode{ID: d.id, Kind: wire.NodeDescriptor, Mode: d.mode.String(), UID: d.uid,
			Live: !d.dead, Handles: len(d.handles), Uses: len(d.uses)}
		for u := range d.uses {
			if u.obj != nil {
				n.Objects = append(n.Objects, u.obj.id)
			}
		}
		slices.Sort(n.Objects)
		if d.parent != nil {
			n.Parent = d.parent.id
		}
		if d.kind == nodePin {
			n.Kind = wire.NodePin
		}
		out = append(out, n)
		for _, ch := range d.children {
			walk(ch)
		}
	}
	for _, d := range o.nodes {
		if d.parent == nil {
			walk(d)
		}
	}
	return out
}

package demux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/pins"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// PinnedObject is a snapshot of one pinned object, for persistence across
// daemon restarts. It is plain data; the Persister owns its encoding.
type PinnedObject struct {
	// Key names the object's record, stable across restarts: 32 hex
	// digits, chosen when the object is first pinned.
	Key string
	// Kind is the object's kind: wire.ObjMap (Spec, Frozen, Entries,
	// Partial) or wire.ObjProg (Prog).
	Kind wire.ObjType
	// Owner is the uid the object is charged to.
	Owner uint32
	// Spec is the map's spec.
	Spec maps.Spec
	// Frozen is the map's frozen flag.
	Frozen bool
	// Entries holds the map's contents: the elements maps.Dump gives,
	// each key ‖ value in the encoding EachEntry reads (fixed sizes from
	// maps.DumpSizes; ring buffer records length-prefixed). Arrays omit
	// all-zero values.
	Entries []byte
	// Partial is set when the contents could not be read: a hash map
	// created with BPF_F_WRONLY has no read path to enumerate it. Entries
	// is then empty.
	Partial bool
	// Pins are the object's pin files.
	Pins []PinRecord
	// Nodes are the dead ancestors of the pins in the object's lineage
	// (descriptors of this run or an earlier one, unpinned pins), each
	// listed once, so that a restored pin is restored in its place in the
	// tree (docs/design.md, "The authority tree").
	Nodes []NodeRecord
	// NextNode is the last lineage node id given out: restored objects
	// continue above it, so ids are never reused.
	NextNode uint64
	// PinRoot is the absolute pin root the pins belong to. A record is
	// never restored under another pin root.
	PinRoot string
	// Prog is a pinned program (Kind wire.ObjProg).
	Prog *PinnedProg
	// Region is the base name of the map's region file in the runtime
	// directory (Config.RuntimeDir): after a restart in the same boot
	// the map is that file, with every store made before the crash;
	// Entries are for a restart after a reboot.
	Region string
	// BTF is a map's type information, if it was created with some.
	BTF *PinnedBTF
}

// PinnedBTF is a pinned map's BTF: the raw blob it was created with and
// its key and value type ids (btf.go).
type PinnedBTF struct {
	Raw                    []byte
	KeyTypeID, ValueTypeID uint32
}

// NodeRecord is a dead lineage node kept for the pins below it.
type NodeRecord struct {
	ID     uint64
	Parent uint64 // 0 for the root
	Pin    bool   // an unpinned pin (false: a descriptor)
	Mode   wire.Mode
	UID    uint32
}

// PinnedProg is what restores a pinned program: its instructions (map
// references naming indexes into Maps) and the maps it uses.
type PinnedProg struct {
	Type     uint32
	Name     string
	License  string
	Insns    []byte
	LineInfo map[int]string
	Maps     []PinnedProgMap
	// AttachType is the program's expected attach type (0: none).
	AttachType uint32
}

// PinnedProgMap is one map a pinned program uses, with the access the
// program had. Key names the map's own record when the map is pinned too:
// the restored program then uses that restored map, so that pins of the
// map and the program still share it. Otherwise (or if that record cannot
// be restored) the map is recreated from the snapshot here, for the
// program alone. Program arrays come back empty (their slots named
// programs of the previous run).
//
// Uses are the lineage nodes of the map the program got its access from
// (the nodes of the handles it was loaded with), and Nodes those nodes and
// their ancestors: the restored program hangs in the map's lineage where
// it did, so revoking one of those nodes after a restart still destroys
// it. A record without Uses (an older one) hangs it below the map's root.
type PinnedProgMap struct {
	Key         string
	Read, Write bool
	Spec        maps.Spec
	Frozen      bool
	Entries     []byte
	Partial     bool
	Uses        []uint64
	Nodes       []NodeRecord
	// Region is the map's region file (see PinnedObject.Region).
	Region string
}

// PinRecord describes one pin file of a PinnedObject.
type PinRecord struct {
	Path string    // relative to the pin root (follows renames inside it)
	Mode wire.Mode // the rights the pin grants at most (ModeDestroy: to its file's owner only)
	// Node and Parent place the pin in the object's lineage (Parent is
	// a Nodes entry or another pin; 0 only in records of version 1).
	Node, Parent uint64
	Perm         os.FileMode // the file's permission bits when recorded
	UID          uint32      // the file's owner when recorded
	GID          uint32
	ACL          []byte // the file's system.posix_acl_access when recorded; nil if none
	Ino          uint64 // the file's inode, to recognise it at restore
}

// Persister durably records pinned objects. The server calls it from one
// goroutine at a time (never concurrently), without registry locks held;
// a SavePinned that fails makes the OBJ_PIN that caused it fail.
type Persister interface {
	// SavePinned records obj whole (contents and pins), replacing any
	// earlier record with the same Key.
	SavePinned(obj *PinnedObject) error
	// SavePins records only the pin part of obj (Key, Pins, Nodes,
	// NextNode, PinRoot) when nothing else changed: a pin removed or
	// revoked, a pin file's attributes changed. The object's record
	// exists (SavePinned came first).
	SavePins(obj *PinnedObject) error
	// RemovePinned deletes the record named key (the object's last pin
	// is gone). A missing record is not an error.
	RemovePinned(key string) error
}

// save snapshots o and hands it to the persister. saveMu must be held.
func (ps *pinSet) save(o *Object) error {
	if o.link != nil {
		return nil // links are not persisted (closePins)
	}
	po, err := ps.snapshot(o)
	if err != nil {
		return err
	}
	if po == nil {
		return nil
	}
	return ps.srv.cfg.Persister.SavePinned(po)
}

// snapshot returns o's PinnedObject with its contents, or nil if o has no
// pins left. saveMu must be held (so pins cannot be added meanwhile); o is
// alive while it has pins.
func (ps *pinSet) snapshot(o *Object) (*PinnedObject, error) {
	po, err := ps.snapshotPins(o)
	if po == nil || err != nil {
		return nil, err
	}
	po.Kind, po.Owner, po.Spec = o.kind, o.owner, o.spec
	if o.m != nil {
		po.Region = regionName(o.m)
	}
	if o.m != nil && (o.spec.Type == maps.TypeProgArray || isMapInMapSpec(o.spec)) {
		// Slots name programs (maps) of this run: a program array (a
		// map of maps) comes back empty, as one a pinned program uses.
		po.Frozen = o.m.Frozen()
	} else if o.m != nil {
		po.BTF = o.pinnedBTF()
		po.Frozen = o.m.Frozen()
		var err error
		po.Entries, po.Partial, err = dumpMap(o.m, o.spec)
		if err != nil {
			return nil, fmt.Errorf("reading map %d for persistence: %w", o.id, err)
		}
	}
	if o.p != nil {
		pp := &PinnedProg{Type: uint32(o.p.Type()), AttachType: o.p.AttachType(), Name: o.p.Name(), License: o.p.License(),
			Insns: o.p.Insns(), LineInfo: o.p.LineInfo()}
		// o.deps is fixed while o lives, and o lives while pinned.
		for i, ref := range o.p.Maps() {
			dep := o.deps[i]
			pm := PinnedProgMap{Read: ref.Read, Write: ref.Write, Spec: dep.spec, Frozen: dep.m.Frozen(),
				Region: regionName(dep.m)}
			pm.Uses, pm.Nodes = ps.srv.reg.usesOf(o, dep)
			ps.mu.Lock()
			if pd := ps.objs[dep]; pd != nil {
				pm.Key = pd.key
			}
			ps.mu.Unlock()
			if dep.spec.Type != maps.TypeProgArray && !isMapInMapSpec(dep.spec) {
				var err error
				if pm.Entries, pm.Partial, err = dumpMap(dep.m, dep.spec); err != nil {
					return nil, fmt.Errorf("reading map %d of program %d for persistence: %w", dep.id, o.id, err)
				}
			}
			pp.Maps = append(pp.Maps, pm)
		}
		po.Prog = pp
	}
	return po, nil
}

// snapshotPins returns the pin part of o's PinnedObject (Key, Pins, Nodes,
// NextNode, PinRoot), or nil if o has no pins left, and records the pin
// files' attributes as persisted. saveMu must be held.
func (ps *pinSet) snapshotPins(o *Object) (*PinnedObject, error) {
	ps.mu.Lock()
	pd := ps.objs[o]
	var list []*Descriptor
	var key string
	if pd != nil {
		list = append(list, pd.pins...)
		key = pd.key
	}
	ps.mu.Unlock()
	if len(list) == 0 {
		return nil, nil
	}
	po := &PinnedObject{Key: key, Kind: o.kind, Owner: o.owner, PinRoot: ps.store.Root()}
	var kept []*Descriptor
	attrs := map[*Descriptor]pins.Attrs{}
	for _, n := range list {
		rel, a, err := ps.store.Attrs(n.pin)
		if err != nil {
			continue // its name is gone; the watcher is about to unpin it
		}
		kept = append(kept, n)
		attrs[n] = a
		po.Pins = append(po.Pins, PinRecord{Path: rel, Mode: n.mode, Node: n.id,
			Perm: a.Perm, UID: a.UID, GID: a.GID, ACL: a.ACL, Ino: n.pin.Ino()})
	}
	if len(kept) == 0 {
		return nil, nil
	}
	// The ancestors of the kept pins, each once; a kept pin that is an
	// ancestor of another is a PinRecord, not a NodeRecord.
	r := ps.srv.reg
	isPin := map[uint64]bool{}
	for _, n := range kept {
		isPin[n.id] = true
	}
	seen := map[uint64]bool{}
	r.mu.Lock()
	po.NextNode = o.lastNode
	for i, n := range kept {
		if n.parent != nil {
			po.Pins[i].Parent = n.parent.id
		}
		for a := n.parent; a != nil && !seen[a.id]; a = a.parent {
			seen[a.id] = true
			if isPin[a.id] {
				continue
			}
			nr := NodeRecord{ID: a.id, Pin: a.kind == nodePin, Mode: a.mode, UID: a.uid}
			if a.parent != nil {
				nr.Parent = a.parent.id
			}
			po.Nodes = append(po.Nodes, nr)
		}
	}
	r.mu.Unlock()
	sort.Slice(po.Nodes, func(i, j int) bool { return po.Nodes[i].ID < po.Nodes[j].ID })
	for n, a := range attrs {
		n.attrs = a
	}
	return po, nil
}

// dumpMap returns m's entries as key ‖ value pairs (values in the
// syscall layout), read from storage (maps.Dump): BPF_F_RDONLY and
// BPF_F_WRONLY maps alike. The bool is always false (it said, before
// dumps came from storage, that a BPF_F_WRONLY map could not be read).
func dumpMap(m maps.Map, spec maps.Spec) ([]byte, bool, error) {
	var out []byte
	err := maps.Dump(m, func(k, v []byte) error {
		out = appendEntry(out, spec, k, v)
		return nil
	})
	return out, false, err
}

// Restore errors.
var (
	ErrRestoreKind    = errors.New("demux: cannot restore this kind of pinned object")
	ErrNoPins         = errors.New("demux: no pin of the object could be restored")
	ErrRestoreRoot    = errors.New("demux: the record belongs to another pin root")
	ErrRestoreLineage = errors.New("demux: the record's lineage is malformed")
)

// RestorePinned recreates a pinned object recorded by an earlier run (see
// Persister): the map or program, charged to po.Owner's quota, with po's
// contents and frozen flag, its pins, and the lineage above them: each
// pin is restored in its place in the object's tree, below dead
// stand-ins for the descriptors of the earlier run, with at most the
// rights of its parent (a record can never widen a pin). A pin file still
// present is adopted if it is the same file (inode and owner as recorded);
// a missing one is created again as its recorded owner with exactly its
// recorded attributes (permission bits, group, ACL), with missing parent
// directories (0755, owned by the pin's owner). Pins that cannot be
// restored are logged and skipped. It returns the number of pins
// restored; with none, the object is dropped and ErrNoPins returned.
// Other failures: ErrPinsDisabled, ErrRestoreRoot (po.PinRoot is set and
// is not this server's pin root), ErrRestoreLineage, ErrRestoreKind, the
// quota errors (ErrQuotaObjects, ErrQuotaMemory) and the map's own
// (invalid spec, entries of the wrong size). After a successful restore
// the record is saved again (new inodes, new paths). Call it before
// serving; it is safe for concurrent use.
func (s *Server) RestorePinned(po *PinnedObject) (int, error) { return s.restorePinned(po, nil) }

// restorePinned is RestorePinned; into, if not nil, is the object po
// describes, already restored from the runtime state (the journal, or an
// upgrade's handoff) with its lineage: only po's pins are restored into
// it, on the nodes it has with the same ids, and a failure leaves it be.
func (s *Server) restorePinned(po *PinnedObject, into *Object) (int, error) {
	ps := s.pins
	if ps == nil {
		return 0, ErrPinsDisabled
	}
	if po.PinRoot != "" && filepath.Clean(po.PinRoot) != ps.store.Root() {
		return 0, fmt.Errorf("%w: %s, not %s", ErrRestoreRoot, po.PinRoot, ps.store.Root())
	}
	if err := checkLineage(po); err != nil {
		return 0, err
	}
	o := into
	var err error
	switch {
	case o != nil:
	case po.Kind == wire.ObjMap && (po.Spec.Type == maps.TypeProgArray || isMapInMapSpec(po.Spec)):
		o, err = s.restoreMap(po.Owner, po.Spec, po.Frozen, nil, po.Region)
	case po.Kind == wire.ObjMap:
		o, err = s.restoreMap(po.Owner, po.Spec, po.Frozen, po.Entries, po.Region)
		if err == nil && po.BTF != nil {
			if berr := s.restoreBTF(o, po.Owner, po.BTF); berr != nil {
				// The map comes back; its type information does not.
				s.log.Warn("saved map's BTF cannot be restored; the map comes back without it",
					zap.String("key", po.Key), zap.Error(berr))
			}
		}
	case po.Kind == wire.ObjProg && po.Prog != nil:
		o, err = s.restoreProg(po.Owner, po.Prog)
	default:
		return 0, ErrRestoreKind
	}
	if err != nil {
		return 0, err
	}
	r := s.reg

	// The tree, every node dead until its pin is restored.
	nodes := map[uint64]*Descriptor{}
	parents := map[uint64]uint64{}
	if into != nil {
		// Nodes the runtime state has are the same nodes.
		r.mu.Lock()
		for _, nr := range po.Nodes {
			if d := o.nodes[nr.ID]; d != nil {
				nodes[nr.ID] = d
			}
		}
		for _, pr := range po.Pins {
			if d := o.nodes[pr.Node]; d != nil && d.kind == nodePin && d.dead {
				nodes[pr.Node] = d
			}
		}
		r.mu.Unlock()
	}
	for _, nr := range po.Nodes {
		if nodes[nr.ID] != nil {
			continue
		}
		kind := nodeDesc
		if nr.Pin {
			kind = nodePin
		}
		nodes[nr.ID] = &Descriptor{id: nr.ID, kind: kind, obj: o, mode: nr.Mode, uid: nr.UID, dead: true, peer: -1}
		parents[nr.ID] = nr.Parent
	}
	for _, pr := range po.Pins {
		if nodes[pr.Node] == nil {
			nodes[pr.Node] = &Descriptor{id: pr.Node, kind: nodePin, obj: o, mode: pr.Mode, uid: pr.UID, dead: true, peer: -1}
		}
		parents[pr.Node] = pr.Parent
	}
	r.mu.Lock()
	o.lastNode = max(o.lastNode, po.NextNode)
	// Parents first (ids grow down the tree, but do not rely on it).
	var link func(id uint64) *Descriptor
	link = func(id uint64) *Descriptor {
		d := nodes[id]
		if _, done := o.nodes[id]; done {
			return d
		}
		var parent *Descriptor
		if pid := parents[id]; pid != 0 {
			parent = link(pid)
			d.mode &= parent.mode // never wider than what it came from
		} else {
			d.mode &= o.cap | wire.ModeDestroy
		}
		r.linkLocked(d, parent)
		return d
	}
	ids := make([]uint64, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		link(id)
	}
	r.mu.Unlock()

	fail := func(err error) (int, error) {
		if into != nil {
			return 0, err
		}
		r.mu.Lock()
		o.nodes, o.refs = nil, o.refs+1
		free := r.unref(o, nil)
		r.mu.Unlock()
		closeObjects(free)
		return 0, err
	}
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	var got []*Descriptor
	for _, rec := range po.Pins {
		n := nodes[rec.Node]
		p, err := ps.restorePin(n, rec)
		if err != nil {
			s.log.Warn("cannot restore pin", zap.String("path", rec.Path), zap.Error(err))
			continue
		}
		n.pin = p
		got = append(got, n)
	}
	if len(got) == 0 {
		return fail(ErrNoPins)
	}
	ps.mu.Lock()
	r.mu.Lock()
	for _, n := range got {
		r.chargePinLocked(n)
	}
	for _, id := range ids {
		r.prune(nodes[id])
	}
	r.mu.Unlock()
	ps.objs[o] = &pinned{key: po.Key, pins: got}
	ps.mu.Unlock()
	if per := s.cfg.Persister; per != nil {
		// A map taken back in place (its region named by the record)
		// has a record that still describes it: only the pins are
		// written again, not its contents (a restart after a crash then
		// costs no copy of the maps). Otherwise the whole record.
		var err error
		if o.m != nil && po.Region != "" && po.Region == regionName(o.m) {
			// And the pins only if they changed (a pin file re-created,
			// a node pruned).
			var now *PinnedObject
			if now, err = ps.snapshotPins(o); err == nil && (now == nil || !samePins(now, po)) {
				err = ps.persistPins(o, po.Key, false)
			}
		} else {
			err = ps.save(o)
		}
		if err != nil {
			s.log.Warn("cannot save restored pins", zap.Uint32("id", o.id), zap.Error(err))
		}
	}
	s.log.Info("restored pinned object", zap.Uint32("id", o.id), zap.String("kind", kindName(o.kind)),
		zap.String("name", wire.NameString(o.name)), zap.Int("pins", len(got)))
	return len(got), nil
}

// samePins reports whether a and b record the same pins (what SavePins
// writes).
func samePins(a, b *PinnedObject) bool {
	return a.Key == b.Key && a.PinRoot == b.PinRoot && a.NextNode == b.NextNode &&
		reflect.DeepEqual(a.Pins, b.Pins) && reflect.DeepEqual(a.Nodes, b.Nodes)
}

// checkLineage validates the tree of a record: node ids unique and not
// 0, every parent a node of the record, no cycles, pins with valid modes.
func checkLineage(po *PinnedObject) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrRestoreLineage, why) }
	parents := map[uint64]uint64{}
	for _, nr := range po.Nodes {
		if _, dup := parents[nr.ID]; dup || nr.ID == 0 || nr.Mode&^wire.ModeAll != 0 {
			return bad("bad or repeated node id or mode")
		}
		parents[nr.ID] = nr.Parent
	}
	for _, pr := range po.Pins {
		if _, dup := parents[pr.Node]; dup || pr.Node == 0 || !pr.Mode.Valid() {
			return bad("bad or repeated pin node id or mode")
		}
		parents[pr.Node] = pr.Parent
	}
	for id := range parents {
		// Walk up: at most len(parents) steps to a root.
		cur := id
		for steps := 0; ; steps++ {
			p := parents[cur]
			if p == 0 {
				break
			}
			if _, ok := parents[p]; !ok {
				return bad(fmt.Sprintf("node %d has an unknown parent %d", cur, p))
			}
			if steps > len(parents) {
				return bad("cycle")
			}
			cur = p
		}
		if id > po.NextNode {
			return bad(fmt.Sprintf("node %d beyond the last id given out (%d)", id, po.NextNode))
		}
	}
	return nil
}

func kindName(k wire.ObjType) string {
	if k == wire.ObjProg {
		return "prog"
	}
	return "map"
}

// restoreMap recreates a map charged to owner with its contents, and
// registers it with no references (the caller adds them, or drops it
// with unref). After a restart in the same boot the map is its region
// file (region, in the runtime directory) when that is still there and
// consistent: every store made before the daemon went down is in it;
// otherwise it is made anew from entries and frozen.
func (s *Server) restoreMap(owner uint32, spec maps.Spec, frozen bool, entries []byte, region string) (*Object, error) {
	if _, err := CountEntries(spec, entries); err != nil {
		return nil, err
	}
	mem, err := spec.MemoryUsage()
	if err != nil {
		return nil, err
	}
	r := s.reg
	unreserve := func() {
		r.mu.Lock()
		r.unreserveLocked(owner, mem)
		r.mu.Unlock()
	}
	r.mu.Lock()
	err = r.reserveLocked(owner, mem)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m := s.openRuntimeRegion(spec, region)
	if m == nil {
		m, err = s.newMap(maps.AsCreated(spec))
		if err != nil {
			unreserve()
			return nil, err
		}
		// Frozen and BPF_F_RDONLY maps are written too.
		if err := EachEntry(spec, entries, func(k, v []byte) error { return maps.RestoreElem(m, k, v) }); err != nil {
			m.Close()
			unreserve()
			return nil, fmt.Errorf("restoring entry: %w", err)
		}
		if frozen {
			m.Freeze()
		}
	}
	emptyMapInMap(m)
	o := &Object{kind: wire.ObjMap, cap: wire.ModeReadWrite, mem: mem, m: m, spec: spec}
	copy(o.name[:], spec.Name)
	switch {
	case spec.Flags&maps.FlagRdonly != 0:
		o.cap = wire.ModeRead
	case spec.Flags&maps.FlagWronly != 0:
		o.cap = wire.ModeWrite
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.addObjectLocked(o, owner); err != nil {
		r.unreserveLocked(owner, mem)
		m.Close()
		return nil, err
	}
	return o, nil
}

// restoreProg reloads a pinned program charged to owner: each map it uses
// is the restored map of the recorded key when there is one, else a new
// map from the record's snapshot. The program is verified again.
func (s *Server) restoreProg(owner uint32, pp *PinnedProg) (*Object, error) {
	r := s.reg
	var deps, fresh []*Object
	dropFresh := func() {
		r.mu.Lock()
		var free []*Object
		for _, o := range fresh {
			o.refs++
			free = r.unref(o, free)
		}
		r.mu.Unlock()
		closeObjects(free)
	}
	var refs []prog.MapRef
	for _, pm := range pp.Maps {
		o := s.pins.objectByKey(pm.Key)
		if o == nil || o.m == nil || o.spec != pm.Spec {
			var err error
			if o, err = s.restoreMap(owner, pm.Spec, pm.Frozen, pm.Entries, pm.Region); err != nil {
				dropFresh()
				return nil, fmt.Errorf("map %q of the program: %w", pm.Spec.Name, err)
			}
			fresh = append(fresh, o)
		}
		deps = append(deps, o)
		refs = append(refs, prog.MapRef{Map: o.m, Read: pm.Read, Write: pm.Write, Name: pm.Spec.Name})
	}
	p, err := s.load(nil, owner, &prog.Spec{Type: prog.Type(pp.Type), Insns: pp.Insns, Maps: refs, License: pp.License,
		Name: pp.Name, LineInfo: pp.LineInfo, AttachType: pp.AttachType}, &prog.Env{Programs: r.progByID, Maps: r.mapByID, Trace: s.trace})
	if err != nil {
		dropFresh()
		return nil, err
	}
	mem := progMemory(p)
	o := &Object{kind: wire.ObjProg, cap: wire.ModeReadWrite, mem: mem, p: p}
	copy(o.name[:], pp.Name)
	r.mu.Lock()
	for i, pm := range pp.Maps {
		if err := checkUses(deps[i], pm); err != nil {
			r.mu.Unlock()
			dropFresh()
			return nil, err
		}
	}
	if err := r.reserveLocked(owner, mem); err != nil {
		r.mu.Unlock()
		dropFresh()
		return nil, err
	}
	if err := r.addObjectLocked(o, owner); err != nil {
		r.unreserveLocked(owner, mem)
		r.mu.Unlock()
		dropFresh()
		return nil, err
	}
	o.deps = deps
	for i, d := range deps {
		d.refs++
		d.progRefs++
		r.restoreUsesLocked(o, d, pp.Maps[i])
	}
	r.mu.Unlock()
	return o, nil
}

// usesOf returns the ids of the nodes of map m that program p uses, and
// those nodes with their ancestors (see PinnedProgMap.Uses).
func (r *registry) usesOf(p, m *Object) ([]uint64, []NodeRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var uses []uint64
	var nodes []NodeRecord
	seen := map[uint64]bool{}
	for _, v := range p.via {
		if v.obj != m {
			continue
		}
		uses = append(uses, v.id)
		for a := v; a != nil && !seen[a.id]; a = a.parent {
			seen[a.id] = true
			nr := NodeRecord{ID: a.id, Pin: a.kind == nodePin, Mode: a.mode, UID: a.uid}
			if a.parent != nil {
				nr.Parent = a.parent.id
			}
			nodes = append(nodes, nr)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return uses, nodes
}

// checkUses validates the lineage of a program's map record against the
// map m it is restored with: node ids not 0, parents older than their
// children (so no cycles) and known, every use a node.
func checkUses(m *Object, pm PinnedProgMap) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: map %q of the program: %s", ErrRestoreLineage, pm.Spec.Name, why)
	}
	known := map[uint64]bool{}
	for id := range m.nodes {
		known[id] = true
	}
	ids := append([]NodeRecord(nil), pm.Nodes...)
	sort.Slice(ids, func(i, j int) bool { return ids[i].ID < ids[j].ID })
	for _, nr := range ids {
		if nr.ID == 0 || nr.Mode&^wire.ModeAll != 0 || nr.Parent >= nr.ID && nr.Parent != 0 ||
			nr.Parent != 0 && !known[nr.Parent] {
			return bad(fmt.Sprintf("bad node %d", nr.ID))
		}
		known[nr.ID] = true
	}
	for _, u := range pm.Uses {
		if !known[u] {
			return bad(fmt.Sprintf("use of unknown node %d", u))
		}
	}
	return nil
}

// restoreUsesLocked hangs program p in map m's lineage as pm records
// (checked by checkUses): missing nodes are added as dead stand-ins, never
// wider than their parents. Without uses (an older record) p hangs below
// m's root, which is made if m has none. r.mu must be held.
func (r *registry) restoreUsesLocked(p, m *Object, pm PinnedProgMap) {
	nodes := append([]NodeRecord(nil), pm.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	for _, nr := range nodes {
		if m.nodes[nr.ID] != nil {
			continue
		}
		kind := nodeDesc
		if nr.Pin {
			kind = nodePin
		}
		d := &Descriptor{id: nr.ID, kind: kind, obj: m, mode: nr.Mode, uid: nr.UID, dead: true, peer: -1}
		var parent *Descriptor
		if nr.Parent != 0 {
			parent = m.nodes[nr.Parent]
			d.mode &= parent.mode
		} else {
			d.mode &= m.cap | wire.ModeDestroy
		}
		r.linkLocked(d, parent)
	}
	uses := pm.Uses
	if len(uses) == 0 {
		var root *Descriptor
		for _, d := range m.nodes {
			if d.parent == nil && (root == nil || d.id < root.id) {
				root = d
			}
		}
		if root == nil {
			root = &Descriptor{kind: nodeDesc, obj: m, mode: m.cap | wire.ModeDestroy, uid: m.owner, dead: true, peer: -1}
			r.linkLocked(root, nil)
		}
		uses = []uint64{root.id}
	}
	for _, id := range uses {
		addViaLocked(p, m.nodes[id])
	}
}

// objectByKey returns the pinned object whose record is key, or nil.
func (ps *pinSet) objectByKey(key string) *Object {
	if key == "" {
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for o, pd := range ps.objs {
		if pd.key == key {
			return o
		}
	}
	return nil
}

// errReplaced: the file at a recorded pin path is not the pin file.
var errReplaced = errors.New("the file at the pin path is not the recorded pin file (other inode or owner); not adopting it")

// restorePin adopts or re-creates the pin of node n. saveMu must be held.
func (ps *pinSet) restorePin(n *Descriptor, rec PinRecord) (*pins.Pin, error) {
	if n.mode == 0 {
		return nil, fmt.Errorf("%w: the pin grants nothing its lineage allows", ErrInvalid)
	}
	check := func(st *unix.Stat_t) error {
		if rec.Ino != 0 && st.Ino != rec.Ino || st.Uid != rec.UID {
			return errReplaced
		}
		return nil
	}
	o := n.obj
	p, err := ps.store.AdoptChecked(rec.Path, n, uint32(n.mode), check)
	if err == nil {
		if _, a, aerr := ps.store.Attrs(p); aerr == nil {
			n.attrs = a
		}
		return p, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	if p := ps.srv.reg.persist; p != nil && p.sameBoot {
		// The pin root is this boot's: the file was unlinked while the
		// daemon was down, which unpins.
		return nil, fmt.Errorf("pin file %s was removed while the daemon was down: unpinned", rec.Path)
	}
	cr := pins.Creds{UID: rec.UID, GID: rec.GID}
	content := pinContent(o, n.mode)
	p, err = ps.store.Create(rec.Path, rec.Perm.Perm(), cr, n, uint32(n.mode), content)
	if errors.Is(err, unix.ENOENT) {
		// A parent directory is missing (the pin root was emptied, e.g. by
		// a reboot): make the missing ones as the pin's owner.
		rel, rerr := ps.store.Rel(rec.Path)
		if rerr != nil {
			return nil, rerr
		}
		var dirs []string
		for d := filepath.Dir(rel); d != "." && d != "/"; d = filepath.Dir(d) {
			dirs = append(dirs, d)
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := ps.store.Mkdir(dirs[i], 0o755, cr); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, err
			}
		}
		p, err = ps.store.Create(rec.Path, rec.Perm.Perm(), cr, n, uint32(n.mode), content)
	}
	if err != nil {
		return nil, err
	}
	// Exactly the recorded attributes: the group (creation gives the
	// directory's or the creator's) and the ACL.
	want := pins.Attrs{Perm: rec.Perm.Perm(), UID: rec.UID, GID: rec.GID, ACL: rec.ACL}
	if err := ps.store.SetAttrs(p, want); err != nil && (len(rec.ACL) > 0 || os.Geteuid() == 0) {
		ps.store.Remove(p)
		return nil, fmt.Errorf("restoring the attributes of pin %s: %w", rec.Path, err)
	}
	if _, a, aerr := ps.store.Attrs(p); aerr == nil {
		n.attrs = a
	}
	return p, nil
}

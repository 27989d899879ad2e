package demux

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/state"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Persistence of the registry (package state; docs/design.md, "Storage
// and lifetime").
//
// With Config.RuntimeDir set, every map's storage is a file there, and
// every change to the registry — an object made or gone, a lineage node
// linked, dead or pruned, a program-array slot filled or emptied, a
// seccomp listener attached or detached — is appended to the journal
// there, under the registry lock, before the command that made it
// answers. With Config.FDStore set, the daemon's end of every descriptor,
// every seccomp listener and every netfilter queue socket is also kept in
// systemd's fd store, under a name the journal records. Element
// operations touch neither: their bytes are in the region files already.
//
// The persister's methods are called with registry.mu held (the journal
// order is the registry's order) and do nothing on a nil persister or
// while a restore is under way (the journal is rewritten whole when it
// ends).

// persister writes the registry's changes to the journal and the fd
// store. Its fields are set before serving; restoring is guarded by
// registry.mu.
type persister struct {
	dir string
	jn  *state.Journal
	fds *state.FDStore
	log *zap.Logger
	// restoring is set while Restore rebuilds the registry. Guarded by
	// registry.mu.
	restoring bool
	// sameBoot: the previous process ran in this boot (Restore.SameBoot).
	sameBoot bool
	// warned is set once a journal or store failure was logged.
	warned atomic.Bool
	// atts lists the server's seccomp attachments (for compaction).
	atts func() []*attachment
	// lastFlush is when every pinned object was last saved to the
	// state directory (unix nanoseconds; 0: never).
	lastFlush atomic.Int64
}

// fail logs the first persistence failure (later ones are the same
// story): from now on a crash loses what the journal or store missed.
func (p *persister) fail(what string, err error) {
	if err == nil || p.warned.Swap(true) {
		return
	}
	p.log.Error("persistence failed: descriptors and objects made from now on may not survive a crash of the daemon",
		zap.String("what", what), zap.Error(err))
}

func (p *persister) active() bool { return p != nil && p.jn != nil && !p.restoring }

func (p *persister) append(r *state.Record) {
	p.fail("journal", p.jn.Append(r))
}

// objectAdded journals a new object (before its first node) and keeps
// a link's queue sockets in the fd store. r.mu is held.
func (r *registry) persistObject(o *Object) {
	p := r.persist
	if p == nil {
		return
	}
	if o.link != nil {
		for i, lq := range o.link.queues {
			p.storeDup(state.FDName(state.PrefixQueue, uint64(o.id), uint64(i)), lq.q.Dup)
		}
	}
	if !p.active() {
		return
	}
	rec := r.objectRecordLocked(o, false)
	p.append(&state.Record{Op: state.OpObject, Object: &rec})
	if p.jn.NeedsCompaction() {
		p.fail("journal compaction", p.jn.Compact(r.imageLocked(nil)))
	}
}

// storeDup keeps a duplicate of an fd in the fd store under name.
func (p *persister) storeDup(name string, dup func() (int, error)) {
	if p == nil || p.fds == nil {
		return
	}
	fd, err := dup()
	if err != nil {
		p.fail("fd store", err)
		return
	}
	defer closeFD(fd)
	p.fail("fd store", p.fds.Store(name, fd))
}

// persistGone journals the death of o and takes its fds out of the
// store. r.mu is held.
func (r *registry) persistGone(o *Object) {
	p := r.persist
	if p == nil {
		return
	}
	if o.link != nil && p.fds != nil {
		for i := range o.link.queues {
			p.fds.Remove(state.FDName(state.PrefixQueue, uint64(o.id), uint64(i)))
		}
	}
	if p.active() {
		p.append(&state.Record{Op: state.OpDelete, ID: o.id})
	}
}

// persistNode journals node d (new, or changed: a pin restored to life)
// and keeps a live descriptor's daemon end in the fd store. r.mu is held.
func (r *registry) persistNode(d *Descriptor) {
	p := r.persist
	if p == nil {
		return
	}
	if d.peer >= 0 && !d.dead && p.fds != nil && !p.restoring {
		p.fail("fd store", p.fds.Store(descFDName(d), d.peer))
	}
	if p.active() {
		n := nodeRecord(d)
		p.append(&state.Record{Op: state.OpNode, ID: d.obj.id, Node: &n})
	}
}

// persistDead journals that node d died (before its daemon end is
// closed) and takes that end out of the store. r.mu is held.
func (r *registry) persistDead(d *Descriptor) {
	p := r.persist
	if p == nil {
		return
	}
	if d.peer >= 0 && p.fds != nil {
		p.fds.Remove(descFDName(d))
	}
	if p.active() {
		p.append(&state.Record{Op: state.OpDead, ID: d.obj.id, NodeID: d.id})
	}
}

// persistDrop journals that node d was pruned. r.mu is held.
func (r *registry) persistDrop(d *Descriptor) {
	if p := r.persist; p.active() {
		p.append(&state.Record{Op: state.OpDrop, ID: d.obj.id, NodeID: d.id})
	}
}

// persistSlot journals slot k of program array o (filled, or emptied
// when it holds nothing now). r.mu is held.
func (r *registry) persistSlot(o *Object, k uint32) {
	p := r.persist
	if !p.active() {
		return
	}
	if prog := o.slots[k]; prog != nil {
		s := state.Slot{Key: k, Prog: prog.id}
		if v := o.slotVia[k]; v != nil {
			s.Via = v.id
		}
		p.append(&state.Record{Op: state.OpSlot, ID: o.id, Slot: &s})
		return
	}
	p.append(&state.Record{Op: state.OpUnslot, ID: o.id, Key: k})
}

// persistAttach journals a seccomp attachment and keeps its listener in
// the fd store (attached true), or the end of one.
func (s *Server) persistAttach(at *attachment, attached bool) {
	r := s.reg
	p := r.persist
	if p == nil {
		return
	}
	name := state.FDName(state.PrefixSeccomp, uint64(at.id))
	r.mu.Lock()
	defer r.mu.Unlock()
	if !attached {
		if p.fds != nil {
			p.fds.Remove(name)
		}
		if p.active() {
			p.append(&state.Record{Op: state.OpDetach, ID: at.id})
		}
		return
	}
	if !p.restoring {
		p.storeDup(name, at.l.Dup)
	}
	if p.active() {
		a := attachmentRecord(at)
		p.append(&state.Record{Op: state.OpAttach, Attachment: &a})
	}
}

func attachmentRecord(at *attachment) state.Attachment {
	a := state.Attachment{ID: at.id, Prog: at.obj.id, UID: at.uid, FD: state.FDName(state.PrefixSeccomp, uint64(at.id))}
	if at.via != nil {
		a.Via = at.via.id
	}
	return a
}

func descFDName(d *Descriptor) string { return state.FDName(state.PrefixDescriptor, d.cookie) }

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// nodeRecord describes lineage node d.
func nodeRecord(d *Descriptor) state.Node {
	n := state.Node{ID: d.id, Pin: d.kind == nodePin, Mode: uint8(d.mode), UID: d.uid, Dead: d.dead}
	if d.parent != nil {
		n.Parent = d.parent.id
	}
	if !d.dead && d.peer >= 0 {
		n.Cookie, n.FD = d.cookie, descFDName(d)
	}
	return n
}

// objectRecordLocked describes o (with its nodes and slots if full).
// r.mu is held.
func (r *registry) objectRecordLocked(o *Object, full bool) state.Object {
	so := state.Object{ID: o.id, Key: o.key, Owner: o.owner, Cap: uint8(o.cap), Mem: o.mem,
		Name: wire.NameString(o.name), LastNode: o.lastNode}
	switch {
	case o.m != nil:
		so.Kind = state.KindMap
		so.Map = &state.Map{Spec: o.spec}
		if path := maps.RegionPath(o.m); path != "" {
			so.Map.Region = filepath.Base(path)
		}
	case o.p != nil:
		so.Kind = state.KindProg
		sp := &state.Prog{Type: uint32(o.p.Type()), Name: o.p.Name(), License: o.p.License(),
			Insns: o.p.Insns(), LineInfo: o.p.LineInfo()}
		for i, ref := range o.p.Maps() {
			if i >= len(o.deps) {
				break
			}
			pm := state.ProgMap{ID: o.deps[i].id, Read: ref.Read, Write: ref.Write}
			for _, v := range o.via {
				if v.obj == o.deps[i] {
					pm.Via = append(pm.Via, v.id)
				}
			}
			sp.Maps = append(sp.Maps, pm)
		}
		so.Prog = sp
	case o.link != nil:
		so.Kind = state.KindLink
		l := o.link
		sl := &state.Link{Prog: l.prog.id, First: l.first, Flags: l.flags, Created: l.created.Unix()}
		if len(l.queues) > 0 {
			sl.MaxLen = l.queues[0].q.Config().MaxLen
		}
		for i := range l.queues {
			sl.Queues = append(sl.Queues, state.FDName(state.PrefixQueue, uint64(o.id), uint64(i)))
		}
		for _, v := range o.via {
			sl.Via = append(sl.Via, v.id)
		}
		so.Link = sl
	}
	if !full {
		return so
	}
	ids := make([]uint64, 0, len(o.nodes))
	for id := range o.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		so.Nodes = append(so.Nodes, nodeRecord(o.nodes[id]))
	}
	keys := make([]uint32, 0, len(o.slots))
	for k := range o.slots {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		s := state.Slot{Key: k, Prog: o.slots[k].id}
		if v := o.slotVia[k]; v != nil {
			s.Via = v.id
		}
		so.Slots = append(so.Slots, s)
	}
	return so
}

// imageLocked returns the registry as an Image: objects in id order with
// their nodes and slots, and the seccomp attachments (atts, if not nil,
// else the server's). r.mu is held.
func (r *registry) imageLocked(atts []*attachment) *state.Image {
	img := &state.Image{LastID: r.lastID}
	ids := make([]uint32, 0, len(r.objects))
	for id := range r.objects {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		img.Objects = append(img.Objects, r.objectRecordLocked(r.objects[id], true))
	}
	if atts == nil && r.persist != nil && r.persist.atts != nil {
		atts = r.persist.atts()
	}
	for _, at := range atts {
		img.Attachments = append(img.Attachments, attachmentRecord(at))
	}
	return img
}

// list returns the live attachments in id order.
func (att *attachments) list() []*attachment {
	att.mu.Lock()
	defer att.mu.Unlock()
	out := make([]*attachment, 0, len(att.byID))
	for _, at := range att.byID {
		out = append(out, at)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// newObjectKey returns a fresh object key: 32 hex digits, the name of
// the object's records across restarts.
func newObjectKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newMap creates the storage of a new map: a file in the runtime
// directory when there is one, else a memfd.
func (s *Server) newMap(spec maps.Spec) (maps.Map, error) {
	var cfg *maps.Config
	if s.cfg.RuntimeDir != "" {
		cfg = &maps.Config{Dir: s.cfg.RuntimeDir}
	}
	return maps.NewWith(spec, cfg)
}

// JournalStats describes the persistence of the registry, for status.
type JournalStats struct {
	RuntimeDir   string `json:"runtime_dir,omitempty"`
	JournalBytes int64  `json:"journal_bytes"`
	JournalError string `json:"journal_error,omitempty"`
	FDStore      int    `json:"fd_store"` // fds kept in systemd's fd store
	LastFlush    string `json:"last_flush,omitempty"`
}

// persistStats returns the persistence figures.
func (s *Server) persistStats() JournalStats {
	js := JournalStats{RuntimeDir: s.cfg.RuntimeDir}
	p := s.reg.persist
	if p == nil {
		return js
	}
	if p.jn != nil {
		js.JournalBytes = p.jn.Size()
		if err := p.jn.Err(); err != nil {
			js.JournalError = err.Error()
		}
	}
	js.FDStore = p.fds.Stored()
	if t := p.lastFlush.Load(); t != 0 {
		js.LastFlush = time.Unix(0, t).UTC().Format(time.RFC3339)
	}
	return js
}

// FlushPinned saves every pinned object to the Persister now (its
// contents dumped from storage, pins and lineage), as Shutdown does: the
// copy a restart after a reboot comes back from. It returns how many
// objects it saved and the first failure (the others are still tried;
// failures are logged). Without pins or a Persister it does nothing.
func (s *Server) FlushPinned() (int, error) {
	ps := s.pins
	if ps == nil || s.cfg.Persister == nil {
		return 0, nil
	}
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	ps.mu.Lock()
	if ps.closed {
		ps.mu.Unlock()
		return 0, ErrServerClosed
	}
	objs := make([]*Object, 0, len(ps.objs))
	for o := range ps.objs {
		objs = append(objs, o)
	}
	ps.mu.Unlock()
	n := 0
	var first error
	for _, o := range objs {
		if err := ps.save(o); err != nil {
			s.log.Error("cannot save pinned object", zap.Uint32("id", o.id), zap.Error(err))
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	if p := s.reg.persist; p != nil && first == nil {
		p.lastFlush.Store(time.Now().UnixNano())
	}
	return n, first
}

// endJournal removes the journal after a clean shutdown: every object and
// descriptor is gone and their region files with them; pinned objects
// were saved to the state directory (closePins). A successor in the same
// boot then restores from those records alone, instead of replaying a
// journal whose storage no longer exists.
func (s *Server) endJournal() {
	s.reg.mu.Lock()
	p := s.reg.persist
	s.reg.mu.Unlock()
	if p == nil || p.jn == nil {
		return
	}
	if err := p.jn.Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("cannot remove the journal after a clean shutdown", zap.Error(err))
	}
}

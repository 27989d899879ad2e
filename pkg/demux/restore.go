package demux

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/state"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Restore is what a server is rebuilt from when a daemon starts again
// (Server.Restore): the registry of the process before it, and the pin
// records of the state directory.
type Restore struct {
	// Image is the registry of the previous process: handed over by an
	// upgrade (Upgrade), or replayed from the journal in the runtime
	// directory after a crash or a stop in the same boot. Nil: none
	// (first start, a reboot, or a journal that could not be read).
	Image *state.Image
	// Upgrade is set when Image was handed over by a live process: the
	// fds it names are Image.FDs, and it has connections.
	Upgrade bool
	// FDs are the fds the service manager handed back from its store,
	// by name (state.ListenFDs). The server takes them: what it does not
	// use it closes and removes from the store.
	FDs map[string][]int
	// Pinned are the pin records of the state directory (Persister).
	Pinned []*PinnedObject
	// SameBoot is set when the pin root and the runtime directory are
	// this boot's: a pin file missing now was unlinked while the daemon
	// was down (so it is not re-created), and region files hold the maps.
	SameBoot bool
}

// RestoreReport says what Restore brought back.
type RestoreReport struct {
	Objects     int // objects restored
	Descriptors int // live descriptors taken back (their holders' fds work on)
	Pins        int
	Attachments int // seccomp listeners served again
	Links       int // netfilter queue links deciding again
	Conns       int // connections taken over (upgrades)
	// Repaired names the maps whose regions needed repairs, with what.
	Repaired []string
	// Refused names what could not be restored, with why.
	Refused []string
}

// fdSet is the fds a restore may use, by name; each is used once.
type fdSet struct {
	byName map[string][]int
	used   map[int]bool
}

func newFDSet(rs *Restore) *fdSet {
	f := &fdSet{byName: map[string][]int{}, used: map[int]bool{}}
	for n, l := range rs.FDs {
		f.byName[n] = append(f.byName[n], l...)
	}
	if rs.Upgrade && rs.Image != nil {
		for n, fd := range rs.Image.FDs {
			f.byName[n] = append(f.byName[n], fd)
		}
	}
	return f
}

// take returns an unused fd named name (which the caller then owns), or
// -1.
func (f *fdSet) take(name string) int {
	if name == "" {
		return -1
	}
	for _, fd := range f.byName[name] {
		if !f.used[fd] {
			f.used[fd] = true
			return fd
		}
	}
	return -1
}

// rest returns the fds not taken, by name.
func (f *fdSet) rest() map[string][]int {
	out := map[string][]int{}
	for n, l := range f.byName {
		for _, fd := range l {
			if !f.used[fd] {
				out[n] = append(out[n], fd)
			}
		}
	}
	return out
}

// regionName returns the base name of m's region file, or "" for a
// memfd.
func regionName(m maps.Map) string {
	if p := maps.RegionPath(m); p != "" {
		return filepath.Base(p)
	}
	return ""
}

func (s *Server) mapsConfig() *maps.Config {
	if s.cfg.RuntimeDir == "" {
		return nil
	}
	return &maps.Config{Dir: s.cfg.RuntimeDir}
}

// openRegion takes back the storage of a map of the previous process:
// the fd named fdName when there is one, else the region file in the
// runtime directory. It validates and repairs it (maps.Open), checks it
// is a map of spec, and logs repairs. Refusals are logged naming the map
// and returned; a refused region file is renamed with ".corrupt" for an
// operator to look at.
func (s *Server) openRegion(spec maps.Spec, region, fdName string, fds *fdSet, rep *RestoreReport) (maps.Map, error) {
	var m maps.Map
	var repair maps.Repair
	var err error
	path := ""
	if s.cfg.RuntimeDir != "" && region != "" && maps.IsRegionFile(region) {
		path = filepath.Join(s.cfg.RuntimeDir, region)
	}
	if fd := fds.take(fdName); fd >= 0 {
		m, repair, err = maps.Open(fd, path, s.mapsConfig())
	} else if path != "" {
		m, repair, err = maps.OpenFile(path, s.mapsConfig())
	} else {
		return nil, fmt.Errorf("map %q: no storage to restore (neither a region file nor a handed-over fd)", spec.Name)
	}
	if err == nil {
		got := m.Spec()
		if got.Type != spec.Type || got.KeySize != spec.KeySize || got.ValueSize != spec.ValueSize ||
			got.MaxEntries != spec.MaxEntries || got.Flags != spec.Flags {
			maps.Detach(m)
			err = fmt.Errorf("%w: the region holds a map of type %s, sizes %d/%d, %d entries, flags %#x, not the one recorded",
				maps.ErrCorrupt, maps.TypeName(got.Type), got.KeySize, got.ValueSize, got.MaxEntries, got.Flags)
		}
	}
	if err != nil {
		s.log.Error("map storage refused: it cannot be proven consistent", zap.String("map", spec.Name),
			zap.String("region", region), zap.Error(err))
		if path != "" {
			if _, serr := os.Stat(path); serr == nil {
				os.Rename(path, path+".corrupt")
			}
		}
		rep.Refused = append(rep.Refused, fmt.Sprintf("map %q (region %s): %v", spec.Name, region, err))
		return nil, err
	}
	if repair != (maps.Repair{}) {
		s.log.Warn("map storage repaired after an interrupted operation", zap.String("map", spec.Name),
			zap.String("region", region), zap.Int("locks_released", repair.Unlocked),
			zap.Int("leaked_entries_freed", repair.Leaked), zap.Int("duplicates_removed", repair.Duplicates))
		rep.Repaired = append(rep.Repaired, fmt.Sprintf("%s: %+v", spec.Name, repair))
	}
	return m, nil
}

// openRuntimeRegion returns the map a pin record's region file holds
// after a restart in the same boot, or nil (not same boot, no file, or
// refused: logged).
func (s *Server) openRuntimeRegion(spec maps.Spec, region string) maps.Map {
	p := s.reg.persist
	if p == nil || !p.sameBoot || region == "" || s.cfg.RuntimeDir == "" {
		return nil
	}
	path := filepath.Join(s.cfg.RuntimeDir, region)
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	var rep RestoreReport
	m, err := s.openRegion(spec, region, "", &fdSet{}, &rep)
	if err != nil {
		return nil
	}
	return m
}

// mapCap is the cap BPF_F_RDONLY / BPF_F_WRONLY put on every descriptor.
func mapCap(spec maps.Spec) wire.Mode {
	switch {
	case spec.Flags&maps.FlagRdonly != 0:
		return wire.ModeRead
	case spec.Flags&maps.FlagWronly != 0:
		return wire.ModeWrite
	}
	return wire.ModeReadWrite
}

// chargeLocked charges uid for a restored object whatever its quota (it
// existed before; a lowered quota only refuses new objects) and logs when
// the uid is over it. r.mu is held.
func (s *Server) chargeLocked(uid uint32, mem uint64) {
	r := s.reg
	u := r.usage(uid)
	u.objects++
	u.mem += mem
	r.total += mem
	if q := s.cfg.quotaFor(uid); u.objects > q.Objects || u.mem > q.MapMemory {
		s.log.Warn("restored objects exceed the uid's quota; new objects are refused until it frees some",
			zap.Uint32("uid", uid), zap.Int("objects", u.objects), zap.Uint64("map_memory", u.mem))
	}
}

// Restore rebuilds the server from what a previous process left (see
// Restore) and starts journaling. Call it once, before serving, even
// with nothing to restore (an empty Restore): the journal starts here.
//
// First the objects of rs.Image, under their old ids: maps from their
// regions (validated and repaired; one that cannot be proven consistent
// is refused with a log line naming it), programs verified again, links
// bound to their queues again; then their lineage (live descriptors
// whose daemon end came back are live again, in every process that holds
// them), program-array slots, the uses of lineage nodes, seccomp
// attachments. Then the pins of rs.Pinned, into those objects (or, for
// a record whose object is not in the image, as RestorePinned does); a
// pin file missing in the same boot was unlinked and is not re-created.
// For an upgrade, the connections and their handles. What nothing refers
// to any more is dropped; fds and region files nothing uses are closed
// and removed. It returns what it restored; failures of single objects
// are in the report, not errors. The error is the journal's, when it
// cannot be written (objects then survive a crash only through their
// pin records).
func (s *Server) Restore(rs *Restore) (*RestoreReport, error) {
	rep := &RestoreReport{}
	r := s.reg
	var p *persister
	if s.cfg.RuntimeDir != "" || s.cfg.FDStore != nil {
		p = &persister{dir: s.cfg.RuntimeDir, fds: s.cfg.FDStore, log: s.log, restoring: true,
			sameBoot: rs.SameBoot, atts: s.attach.list}
	}
	r.mu.Lock()
	r.persist = p
	r.mu.Unlock()
	fds := newFDSet(rs)
	if p != nil && rs.Image != nil {
		for _, n := range rs.Image.Stored {
			p.fds.Adopt(n)
		}
	}
	for name := range rs.FDs {
		if _, _, ours := state.ParseFDName(name); ours && p != nil {
			p.fds.Adopt(name)
		}
	}
	byKey := map[string]*Object{}
	var starts []func()
	if rs.Image != nil {
		starts = s.restoreImage(rs.Image, fds, byKey, rep)
	}

	// Pins. Maps first: a program's record names the maps it shares
	// with their own pins.
	pinned := append([]*PinnedObject(nil), rs.Pinned...)
	sort.SliceStable(pinned, func(i, j int) bool { return pinned[i].Kind == wire.ObjMap && pinned[j].Kind != wire.ObjMap })
	for _, po := range pinned {
		into := byKey[po.Key]
		n, err := s.restorePinned(po, into)
		if err != nil {
			name := po.Spec.Name
			if po.Prog != nil {
				name = po.Prog.Name
			}
			s.log.Error("cannot restore pinned object", zap.String("key", po.Key), zap.String("name", name), zap.Error(err))
			rep.Refused = append(rep.Refused, fmt.Sprintf("pins of %q (%s): %v", name, po.Key, err))
			continue
		}
		rep.Pins += n
		if into == nil {
			rep.Objects++
		}
	}
	if rs.Upgrade && rs.Image != nil {
		starts = append(starts, s.restoreConns(rs.Image, fds, rep)...)
	}

	// Drop what nothing refers to, and dead nodes nothing depends on.
	r.mu.Lock()
	var free []*Object
	for _, o := range r.objects {
		if o.refs == 0 {
			o.refs++
			free = r.unref(o, free)
		}
	}
	for _, o := range r.objects {
		var dead []*Descriptor
		for _, d := range o.nodes {
			if d.dead {
				dead = append(dead, d)
			}
		}
		for _, d := range dead {
			r.prune(d)
		}
	}
	r.mu.Unlock()
	closeObjects(free)

	// Fds nothing took: closed, and out of the store.
	for name, l := range fds.rest() {
		for _, fd := range l {
			unix.Close(fd)
		}
		if _, _, ours := state.ParseFDName(name); ours && p != nil {
			p.fds.Remove(name)
		}
	}

	// Start serving what runs by itself, then the journal.
	for _, f := range starts {
		f()
	}
	var jerr error
	r.mu.Lock()
	if p != nil {
		p.restoring = false
		if p.fds != nil {
			for _, d := range r.descs {
				p.fail("fd store", p.fds.Store(descFDName(d), d.peer))
			}
		}
		if s.cfg.RuntimeDir != "" {
			img := r.imageLocked(nil)
			p.jn, jerr = state.CreateJournal(state.JournalPath(s.cfg.RuntimeDir), img)
		}
	}
	regions := map[string]bool{}
	for _, o := range r.objects {
		if o.m != nil {
			regions[regionName(o.m)] = true
		}
	}
	r.mu.Unlock()
	if p != nil && s.cfg.RuntimeDir != "" {
		s.sweepRegions(regions)
	}
	if jerr != nil {
		s.log.Error("cannot write the journal: descriptors will not survive a crash", zap.Error(jerr))
	}
	s.log.Info("restored", zap.Int("objects", rep.Objects), zap.Int("descriptors", rep.Descriptors),
		zap.Int("pins", rep.Pins), zap.Int("attachments", rep.Attachments), zap.Int("links", rep.Links),
		zap.Int("connections", rep.Conns), zap.Int("repaired", len(rep.Repaired)), zap.Int("refused", len(rep.Refused)))
	return rep, jerr
}

// sweepRegions removes region files of the runtime directory that no
// live map uses (what objects that died with the previous process left).
func (s *Server) sweepRegions(keep map[string]bool) {
	ents, err := os.ReadDir(s.cfg.RuntimeDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); maps.IsRegionFile(n) && !keep[n] {
			if os.Remove(filepath.Join(s.cfg.RuntimeDir, n)) == nil {
				s.log.Debug("removed the storage of a map that did not survive", zap.String("region", n))
			}
		}
	}
}

// restoreImage restores img's objects (see Restore) and returns what
// starts them running (links, attachments) once the restore is done.
func (s *Server) restoreImage(img *state.Image, fds *fdSet, byKey map[string]*Object, rep *RestoreReport) []func() {
	if err := img.Check(); err != nil {
		s.log.Error("the previous process's registry is inconsistent; restoring pins only", zap.Error(err))
		rep.Refused = append(rep.Refused, "registry: "+err.Error())
		return nil
	}
	r := s.reg
	r.mu.Lock()
	r.lastID = max(r.lastID, img.LastID)
	r.mu.Unlock()
	objs := map[uint32]*Object{}
	recs := map[uint32]*state.Object{}
	refuse := func(so *state.Object, err error) {
		s.log.Error("object not restored", zap.Uint32("id", so.ID), zap.String("kind", so.Kind),
			zap.String("name", so.Name), zap.Error(err))
		rep.Refused = append(rep.Refused, fmt.Sprintf("%s %q (id %d): %v", so.Kind, so.Name, so.ID, err))
	}
	register := func(so *state.Object, o *Object) {
		o.id, o.key, o.owner = so.ID, so.Key, so.Owner
		copy(o.name[:], so.Name)
		r.mu.Lock()
		r.objects[o.id] = o
		r.indexProg(o)
		s.chargeLocked(o.owner, o.mem)
		r.mu.Unlock()
		objs[o.id] = o
		recs[o.id] = so
		if so.Key != "" {
			byKey[so.Key] = o
		}
		rep.Objects++
	}
	// Maps, then programs (they use maps), then links (they use
	// programs).
	for i := range img.Objects {
		so := &img.Objects[i]
		if so.Map == nil {
			continue
		}
		m, err := s.openRegion(so.Map.Spec, so.Map.Region, so.Map.FD, fds, rep)
		if err != nil {
			continue // logged
		}
		emptyMapInMap(m)
		spec := m.Spec()
		spec.Inner = so.Map.Spec.Inner
		register(so, &Object{kind: wire.ObjMap, cap: mapCap(spec), mem: m.MemoryUsage(), m: m, spec: spec})
	}
	for i := range img.Objects {
		so := &img.Objects[i]
		if so.Prog == nil {
			continue
		}
		o, err := s.restoreImageProg(so, objs)
		if err != nil {
			refuse(so, err)
			continue
		}
		register(so, o)
	}
	var starts []func()
	for i := range img.Objects {
		so := &img.Objects[i]
		if so.Link == nil {
			continue
		}
		o, err := s.restoreImageLink(so, objs, fds)
		if err != nil {
			refuse(so, err)
			continue
		}
		register(so, o)
		rep.Links++
		l := o.link
		starts = append(starts, func() {
			for _, lq := range l.queues {
				l.wg.Add(1)
				go lq.work()
			}
		})
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	// Lineage.
	for id, o := range objs {
		rep.Descriptors += s.restoreNodesLocked(o, recs[id], fds)
	}
	// Uses and references between objects.
	for id, o := range objs {
		so := recs[id]
		switch {
		case so.Prog != nil:
			for i, pm := range so.Prog.Maps {
				m := o.deps[i]
				for _, v := range pm.Via {
					if d := m.nodes[v]; d != nil {
						addViaLocked(o, d)
					}
				}
			}
		case so.Link != nil:
			for _, v := range so.Link.Via {
				if d := o.deps[0].nodes[v]; d != nil {
					addViaLocked(o, d)
				}
			}
		case so.Map != nil && o.spec.Type == maps.TypeProgArray:
			s.restoreSlotsLocked(o, so, objs)
		}
	}
	// Seccomp attachments.
	for _, a := range img.Attachments {
		po := objs[a.Prog]
		fd := fds.take(a.FD)
		if po == nil || po.p == nil || fd < 0 {
			if fd >= 0 {
				unix.Close(fd)
			}
			s.log.Warn("seccomp attachment not restored: its program or listener is gone; the filtered processes' routed syscalls fail with ENOSYS",
				zap.Uint32("attachment", a.ID), zap.Uint32("prog", a.Prog))
			continue
		}
		l, err := seccomp.NewListener(fd)
		if err != nil {
			s.log.Warn("seccomp attachment not restored", zap.Uint32("attachment", a.ID), zap.Error(err))
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		at := &attachment{id: a.ID, obj: po, uid: a.UID, l: l, cancel: cancel}
		if a.Via != 0 {
			if d := po.nodes[a.Via]; d != nil {
				at.via = d
				addUseLocked(d, use{att: at})
			}
		}
		r.usage(a.UID).descs++
		po.refs++
		att := &s.attach
		att.mu.Lock()
		if att.byID == nil {
			att.byID = map[uint32]*attachment{}
		}
		att.byID[at.id] = at
		att.lastID = max(att.lastID, at.id)
		att.wg.Add(1)
		att.n.Add(1)
		att.mu.Unlock()
		rep.Attachments++
		starts = append(starts, func() { go s.serveSeccomp(ctx, at) })
	}
	return starts
}

// restoreImageProg loads a program of the image again (verified again),
// using the restored maps.
func (s *Server) restoreImageProg(so *state.Object, objs map[uint32]*Object) (*Object, error) {
	sp := so.Prog
	var refs []prog.MapRef
	var deps []*Object
	for _, pm := range sp.Maps {
		m := objs[pm.ID]
		if m == nil || m.m == nil {
			return nil, fmt.Errorf("map %d it uses was not restored", pm.ID)
		}
		refs = append(refs, prog.MapRef{Map: m.m, Read: pm.Read, Write: pm.Write, Name: wire.NameString(m.name)})
		deps = append(deps, m)
	}
	r := s.reg
	p, err := s.load(nil, so.Owner, &prog.Spec{Type: prog.Type(sp.Type), Insns: sp.Insns, Maps: refs,
		License: sp.License, Name: sp.Name, LineInfo: sp.LineInfo}, &prog.Env{Programs: r.progByID, Maps: r.mapByID, Trace: s.trace})
	if err != nil {
		return nil, fmt.Errorf("verifying it again: %w", err)
	}
	o := &Object{kind: wire.ObjProg, cap: wire.ModeReadWrite, mem: progMemory(p), p: p}
	r.mu.Lock()
	o.deps = deps
	for _, d := range deps {
		d.refs++
		d.progRefs++
	}
	r.mu.Unlock()
	return o, nil
}

// restoreImageLink binds a link of the image to its queues again: the
// queue sockets come from the fds handed over (an upgrade, or systemd's
// fd store); without them the link cannot be restored (binding a queue
// needs the authority of the client that made it).
func (s *Server) restoreImageLink(so *state.Object, objs map[uint32]*Object, fds *fdSet) (*Object, error) {
	sl := so.Link
	po := objs[sl.Prog]
	if po == nil || po.p == nil {
		return nil, fmt.Errorf("its program %d was not restored", sl.Prog)
	}
	var qfds []int
	for _, name := range sl.Queues {
		fd := fds.take(name)
		if fd < 0 {
			for _, q := range qfds {
				unix.Close(q)
			}
			return nil, fmt.Errorf("its queue socket %s is gone (only systemd's fd store or an upgrade keeps it)", name)
		}
		qfds = append(qfds, fd)
	}
	l := &link{srv: s, prog: po, uid: so.Owner, first: sl.First, flags: sl.Flags, created: time.Unix(sl.Created, 0)}
	mem, err := l.openQueues(qfds, sl.MaxLen)
	if err != nil {
		for _, lq := range l.queues {
			lq.close()
		}
		return nil, fmt.Errorf("configuring its queues again: %w", err)
	}
	o := &Object{kind: wire.ObjLink, cap: wire.ModeReadWrite, mem: mem, link: l}
	l.obj = o
	r := s.reg
	r.mu.Lock()
	o.deps = []*Object{po}
	po.refs++
	po.progRefs++
	r.mu.Unlock()
	ls := &s.links
	ls.mu.Lock()
	if ls.links == nil {
		ls.links = map[*link]struct{}{}
	}
	ls.links[l] = struct{}{}
	ls.mu.Unlock()
	return o, nil
}

// restoreNodesLocked rebuilds o's lineage from its record: every node
// dead until proven live — a descriptor whose daemon end came back is
// live again (its holders' fds work on), pins come alive when their files
// are restored. Modes can only narrow down the tree. It returns the
// number of live descriptors. r.mu is held.
func (s *Server) restoreNodesLocked(o *Object, so *state.Object, fds *fdSet) int {
	r := s.reg
	recs := map[uint64]*state.Node{}
	for i := range so.Nodes {
		recs[so.Nodes[i].ID] = &so.Nodes[i]
	}
	o.lastNode = max(o.lastNode, so.LastNode)
	live := 0
	var link func(id uint64) *Descriptor
	link = func(id uint64) *Descriptor {
		if d := o.nodes[id]; d != nil {
			return d
		}
		n := recs[id]
		kind := nodeDesc
		if n.Pin {
			kind = nodePin
		}
		d := &Descriptor{id: n.ID, kind: kind, obj: o, mode: wire.Mode(n.Mode), uid: n.UID, dead: true, peer: -1,
			handles: map[*handle]struct{}{}}
		var parent *Descriptor
		if n.Parent != 0 && recs[n.Parent] != nil {
			parent = link(n.Parent)
			d.mode &= parent.mode
		} else {
			d.mode &= o.cap | wire.ModeDestroy
		}
		if kind == nodeDesc && !n.Dead && n.FD != "" && n.Cookie != 0 {
			if fd := fds.take(n.FD); fd >= 0 {
				if err := r.adoptPeerLocked(d, fd, n.Cookie); err != nil {
					s.log.Warn("descriptor not restored", zap.Uint32("obj", o.id), zap.Uint64("node", n.ID), zap.Error(err))
					unix.Close(fd)
				} else {
					live++
				}
			}
		}
		r.linkLocked(d, parent)
		return d
	}
	ids := make([]uint64, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		link(id)
	}
	return live
}

// adoptPeerLocked makes d a live descriptor whose daemon end is fd (taken
// over) and whose client end has cookie c: watched for hangup, charged to
// d.uid, holding a reference on d.obj. r.mu is held.
func (r *registry) adoptPeerLocked(d *Descriptor, fd int, c uint64) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		return fmt.Errorf("fd %d is not a descriptor's end", fd)
	}
	if r.descs[c] != nil {
		return fmt.Errorf("descriptor cookie %d twice", c)
	}
	unix.CloseOnExec(fd)
	ev := unix.EpollEvent{Events: unix.EPOLLHUP}
	setToken(&ev, c)
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	d.cookie, d.peer, d.dead = c, fd, false
	r.descs[c] = d
	r.usage(d.uid).descs++
	d.obj.refs++
	return nil
}

// restoreSlotsLocked fills program array o's slots as the image records
// them, each with its reference and use, and makes the region agree (an
// update the journal did not record was never acknowledged). r.mu is
// held.
func (s *Server) restoreSlotsLocked(o *Object, so *state.Object, objs map[uint32]*Object) {
	want := map[uint32]uint32{}
	for _, sl := range so.Slots {
		p := objs[sl.Prog]
		if p == nil || p.p == nil || sl.Key >= o.spec.MaxEntries {
			continue
		}
		want[sl.Key] = p.id
		if o.slots == nil {
			o.slots = map[uint32]*Object{}
			o.slotVia = map[uint32]*Descriptor{}
		}
		o.slots[sl.Key] = p
		p.refs++
		if d := p.nodes[sl.Via]; sl.Via != 0 && d != nil {
			o.slotVia[sl.Key] = d
			addUseLocked(d, use{array: o, key: sl.Key})
		}
	}
	var key [4]byte
	have := map[uint32]uint32{}
	maps.Dump(o.m, func(k, v []byte) error {
		have[binary.NativeEndian.Uint32(k)] = binary.NativeEndian.Uint32(v)
		return nil
	})
	for k, id := range have {
		if want[k] != id {
			binary.NativeEndian.PutUint32(key[:], k)
			if pa, ok := o.m.(*maps.ProgArray); ok {
				pa.Clear(key[:])
			}
		}
	}
	for k, id := range want {
		if have[k] != id {
			binary.NativeEndian.PutUint32(key[:], k)
			maps.RestoreSlot(o.m, key[:], id)
		}
	}
}

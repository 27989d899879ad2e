package demux

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Object is a daemon object (a map; programs later) in the registry. Its
// identity fields are immutable after creation; refs is guarded by the
// registry's mutex. Safe for concurrent use.
type Object struct {
	id    uint32
	key   string // 32 hex digits naming the object's records across restarts (persist.go)
	kind  wire.ObjType
	owner uint32    // uid charged for it
	cap   wire.Mode // cap on every descriptor's and handle's mode
	mem   uint64    // bytes charged to owner's MapMemory
	name  [wire.ObjNameLen]byte

	m    maps.Map // kind == wire.ObjMap
	spec maps.Spec

	p    *prog.Program // kind == wire.ObjProg
	deps []*Object     // maps a program uses, a link's program; each holds a reference

	link *link // kind == wire.ObjLink (links.go)

	refs int // guarded by registry.mu
	// progRefs counts the references held by programs (deps), so that
	// refs-progRefs are the user references (descriptors, handles, pins).
	// Guarded by registry.mu.
	progRefs int
	// slots holds, for a PROG_ARRAY, the program object in each occupied
	// slot; each holds a reference. Like the kernel, the slots are cleared
	// when the last user reference goes, which breaks the cycle of a
	// program tail-calling through an array it references. Guarded by
	// registry.mu.
	slots map[uint32]*Object
	// slotVia is, for each occupied slot, the lineage node of the
	// program handle that filled it (a use of that node). Guarded by
	// registry.mu.
	slotVia map[uint32]*Descriptor
	// mim is, for a map of maps, the inner map of each entry (mapinmap.go).
	// Guarded by registry.mu.
	mim *mapInMap
	// via are the lineage nodes whose authority this object (a program,
	// a link) was made with: the map handles' nodes of a program, the
	// program handle's node of a link. Each holds a use (lineage.go);
	// revoking one destroys this object. Guarded by registry.mu.
	via []*Descriptor
	// nodes is the object's authority tree (lineage.go): every linked
	// node by id — live descriptors and pins, and dead ones that still
	// have live descendants or handles. Guarded by registry.mu.
	nodes map[uint64]*Descriptor
	// lastNode is the last node id given out; ids are never reused
	// within the object's life, across restarts too. Guarded by
	// registry.mu.
	lastNode uint64

	// stats: run statistics and creation audit (stats.go).
	stats objStats

	btf    *btfBlob // kind == wire.ObjBTF (btf.go)
	btfRef btfRef   // maps and programs: their BTF object, holding a reference (btf.go)
}

// ID returns the object's daemon-wide id.
func (o *Object) ID() uint32 { return o.id }

// Kind returns the object's kind.
func (o *Object) Kind() wire.ObjType { return o.kind }

// info fills i with o's description as seen with mode.
func (o *Object) info(i *wire.ObjInfo, mode wire.Mode) {
	*i = wire.ObjInfo{ObjType: o.kind, Mode: mode, ID: o.id, Name: o.name,
		MemoryUsage: o.mem, OwnerUID: o.owner}
	if o.p != nil {
		i.Type = uint32(o.p.Type())
		i.InsnCount = uint32(len(o.p.Insns()) / 8)
		i.Tag = progTag(o.p.Insns())
	}
	if o.link != nil {
		i.Type = wire.AttachNFQueue
	}
	if o.m != nil {
		i.Type = o.spec.Type
		i.KeySize = o.spec.KeySize
		i.ValueSize = o.spec.ValueSize
		i.MaxEntries = o.spec.MaxEntries
		i.Flags = o.spec.Flags
		if o.m.Frozen() {
			i.Frozen = 1
		}
	}
	o.btfInfo(i)
}

// close releases what o holds. Called once, without the registry lock.
func (o *Object) close() {
	if o.link != nil {
		o.link.stop()
	}
	if o.m != nil {
		o.m.Close()
	}
}

// handle is one entry of a connection's handle table. obj, mode, src and
// maker are immutable; dead is set (under registry.mu) by release or
// revocation, which also drops the handle's object reference.
type handle struct {
	obj   *Object
	mode  wire.Mode
	src   *Descriptor
	maker bool // made together with src (create or reopen), so may revoke it
	dead  atomic.Bool
}

// usage is one uid's current consumption. Guarded by registry.mu.
type usage struct {
	mem     uint64 // object storage (maps, programs): Quota.MapMemory
	objects int
	descs   int
	conns   int
	// transient is the memory held for the uid besides objects and
	// descriptors: connections, requests and replies in flight, reply
	// memfds not yet freed, verifier state (memory.go). mem + transient
	// + descs*descCost is checked against Quota.Memory.
	transient uint64
}

// registry holds every object and descriptor of the daemon.
type registry struct {
	cfg *Config

	mu      sync.Mutex
	objects map[uint32]*Object     // guarded by mu
	descs   map[uint64]*Descriptor // by cookie; guarded by mu
	uids    map[uint32]*usage      // guarded by mu
	// total is the mem and transient bytes of every uid, checked with
	// the descriptors' cost against Config.MaxMemory; guarded by mu.
	total    uint64
	lastID   uint32 // guarded by mu
	pins     int    // live pin nodes (each costs an fd, as a descriptor); guarded by mu
	maxDescs int
	closed   bool // guarded by mu

	// persist journals the registry's changes (persist.go); nil when
	// nothing outlives the process.
	persist *persister

	handles atomic.Int64 // live handles, for Stats
	// innerMaps has, by id, every map stored in a map of maps, for
	// programs to resolve without taking mu (mapinmap.go).
	innerMaps sync.Map
	// progs has, by id, every live program, for tail calls to resolve
	// without taking mu (progByID).
	progs  sync.Map
	epfd   int
	wakefd int // eventfd that stops the watcher
	done   chan struct{}
}

const wakeToken = 0 // cookies are never 0

func newRegistry(cfg *Config, maxDescs int) (*registry, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	r := &registry{cfg: cfg, objects: map[uint32]*Object{}, descs: map[uint64]*Descriptor{},
		uids: map[uint32]*usage{}, maxDescs: maxDescs, epfd: epfd, wakefd: wfd, done: make(chan struct{})}
	go r.watch()
	return r, nil
}

// setToken stores a 64-bit token in an epoll event's data (Fd and Pad are
// the two halves of epoll_data). Tokens are descriptor cookies, never
// reused, so a stale event for a closed and reused fd number is harmless.
func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// watch is the one goroutine waiting for hangups on descriptor peer ends.
func (r *registry) watch() {
	defer close(r.done)
	var evs [128]unix.EpollEvent
	for {
		n, err := unix.EpollWait(r.epfd, evs[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			r.cfg.Logger.Sugar().Warnw("epoll_wait failed; descriptor hangups no longer detected", "error", err)
			return
		}
		for i := range evs[:n] {
			t := token(&evs[i])
			if t == wakeToken {
				return
			}
			r.hangup(t)
		}
	}
}

func (r *registry) usage(uid uint32) *usage {
	u := r.uids[uid]
	if u == nil {
		u = &usage{}
		r.uids[uid] = u
	}
	return u
}

// hangup handles EPOLLHUP on the peer end of the descriptor with cookie c.
func (r *registry) hangup(c uint64) {
	var free []*Object
	r.mu.Lock()
	if d := r.descs[c]; d != nil {
		free = r.killDesc(d, free)
	}
	r.mu.Unlock()
	closeObjects(free)
}

// unref drops one reference on o. r.mu must be held. When o dies, the
// references it held (a program's maps, a program array's programs) are
// dropped too.
func (r *registry) unref(o *Object, free []*Object) []*Object {
	o.refs--
	if o.refs > 0 {
		if o.refs == o.progRefs && len(o.slots) > 0 {
			free = r.clearSlotsLocked(o, free)
		}
		return free
	}
	delete(r.objects, o.id)
	r.progs.Delete(o.id)
	r.persistGone(o)
	r.unreserveLocked(o.owner, o.mem)
	free = append(free, o)
	for _, v := range o.via {
		r.dropUseLocked(v, use{obj: o})
	}
	o.via = nil
	for _, d := range o.deps {
		d.progRefs--
		free = r.unref(d, free)
	}
	o.deps = nil
	r.innerMaps.Delete(o.id)
	free = r.dropInnersLocked(o, free)
	if b := o.btfRef.obj; b != nil {
		o.btfRef.obj = nil
		free = r.unref(b, free)
	}
	return r.clearSlotsLocked(o, free)
}

func closeObjects(objs []*Object) {
	for _, o := range objs {
		o.close()
	}
}

// reserveLocked charges uid for one object of mem bytes, or fails with
// ErrQuotaObjects / ErrQuotaMemory. unref returns the charge when the
// object dies; unreserveLocked when creation fails before registration.
// r.mu must be held.
func (r *registry) reserveLocked(uid uint32, mem uint64) error {
	if r.closed {
		return ErrServerClosed
	}
	q := r.cfg.quotaFor(uid)
	u := r.usage(uid)
	if u.objects+1 > q.Objects {
		return ErrQuotaObjects
	}
	if u.mem+mem > q.MapMemory || u.mem+mem < u.mem {
		return ErrQuotaMemory
	}
	if err := r.memCheckLocked(u, q, mem); err != nil {
		return err
	}
	u.objects++
	u.mem += mem
	r.total += mem
	return nil
}

func (r *registry) unreserveLocked(uid uint32, mem uint64) {
	u := r.usage(uid)
	u.objects--
	u.mem -= mem
	r.total -= mem
}

// addObjectLocked gives o (already reserved for uid) an id and registers
// it with no references; the caller adds the descriptor's and handle's at
// once, under the same lock. r.mu must be held.
func (r *registry) addObjectLocked(o *Object, uid uint32) error {
	if r.lastID == ^uint32(0) {
		return ErrIDsExhausted
	}
	r.lastID++
	o.id = r.lastID
	o.owner = uid
	if o.key == "" {
		o.key = newObjectKey()
	}
	if o.stats.loadedAt.IsZero() {
		o.stats.loadedAt = time.Now()
	}
	r.objects[o.id] = o
	r.indexProg(o)
	return nil
}

// reserveNewLocked reserves mem for a new object of uid's and checks that
// uid may hold the descriptor that will name it; on failure nothing stays
// reserved. r.mu must be held.
func (r *registry) reserveNewLocked(uid uint32, mem uint64) error {
	if err := r.reserveLocked(uid, mem); err != nil {
		return err
	}
	if err := r.descCheck(uid); err != nil {
		r.unreserveLocked(uid, mem)
		return err
	}
	return nil
}

// descCheck checks that uid may hold one more descriptor (or pin: each
// costs the daemon an fd). r.mu must be held.
func (r *registry) descCheck(uid uint32) error {
	u, q := r.usage(uid), r.cfg.quotaFor(uid)
	if len(r.descs)+r.pins >= r.maxDescs || u.descs+1 > q.Descriptors {
		return ErrQuotaDescs
	}
	return r.memCheckLocked(u, q, descCost)
}

// newDescLocked makes a descriptor for (o, mode) charged to uid as a child
// of parent in o's lineage (a descriptor it was reopened from, or a pin it
// was opened from; nil only for the creating descriptor), and takes a
// reference on o.
// It returns the client end, which the caller owns (sends, then closes).
// r.mu must be held.
func (r *registry) newDescLocked(o *Object, mode wire.Mode, uid uint32, parent *Descriptor) (*Descriptor, int, error) {
	if r.closed {
		return nil, -1, ErrServerClosed
	}
	if err := r.descCheck(uid); err != nil {
		return nil, -1, err
	}
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if err == unix.EMFILE || err == unix.ENFILE {
			return nil, -1, ErrQuotaDescs
		}
		return nil, -1, os.NewSyscallError("socketpair", err)
	}
	peer, client := p[0], p[1]
	fail := func(err error) (*Descriptor, int, error) {
		unix.Close(peer)
		unix.Close(client)
		return nil, -1, err
	}
	cookie, err := scmrights.Cookie(client)
	if err != nil {
		return fail(err)
	}
	// The daemon never reads its end: refuse data a client might queue.
	if err := unix.Shutdown(peer, unix.SHUT_RD); err != nil {
		return fail(os.NewSyscallError("shutdown", err))
	}
	// EPOLLHUP only: after SHUT_RD, EPOLLRDHUP would fire at once; EPOLLHUP
	// means both directions are shut, i.e. the client end is gone.
	ev := unix.EpollEvent{Events: unix.EPOLLHUP}
	setToken(&ev, cookie)
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, peer, &ev); err != nil {
		return fail(os.NewSyscallError("epoll_ctl", err))
	}
	d := &Descriptor{kind: nodeDesc, cookie: cookie, obj: o, mode: mode, uid: uid, peer: peer,
		handles: map[*handle]struct{}{}}
	var st unix.Stat_t
	if unix.Fstat(client, &st) == nil {
		d.ino = st.Ino
	}
	r.linkLocked(d, parent)
	r.descs[cookie] = d
	r.usage(uid).descs++
	o.refs++
	return d, client, nil
}

// newHandleLocked makes a handle on d's object with mode and takes a
// reference. r.mu must be held.
func (r *registry) newHandleLocked(d *Descriptor, mode wire.Mode, maker bool) *handle {
	h := &handle{obj: d.obj, mode: mode, src: d, maker: maker}
	d.handles[h] = struct{}{}
	d.obj.refs++
	r.handles.Add(1)
	return h
}

// releaseHandle drops h (idempotent).
func (r *registry) releaseHandle(h *handle) {
	var free []*Object
	r.mu.Lock()
	free = r.releaseHandleLocked(h, free)
	r.mu.Unlock()
	closeObjects(free)
}

func (r *registry) releaseHandleLocked(h *handle, free []*Object) []*Object {
	if h.dead.Load() {
		return free
	}
	h.dead.Store(true)
	releasePerfRings(h)
	delete(h.src.handles, h)
	r.handles.Add(-1)
	free = r.unref(h.obj, free)
	r.prune(h.src)
	return free
}

// lookupDesc returns the live descriptor whose client end is fd, or
// ErrBadDescriptor. It does not close fd.
func (r *registry) lookupDescLocked(fd int) (*Descriptor, error) {
	c, err := scmrights.Cookie(fd)
	if err != nil {
		return nil, ErrBadDescriptor
	}
	d := r.descs[c]
	if d == nil || d.dead {
		return nil, ErrBadDescriptor
	}
	return d, nil
}

// close stops the watcher, closes every descriptor peer end and every
// object. Handles still in connection tables become dead.
func (r *registry) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	var one = [8]byte{1}
	unix.Write(r.wakefd, one[:])
	r.mu.Unlock()
	<-r.done

	var free []*Object
	r.mu.Lock()
	for _, d := range r.descs {
		for h := range d.handles {
			free = r.releaseHandleLocked(h, free)
		}
		free = r.killDesc(d, free)
	}
	// Objects still referenced (by handles of connections that did not
	// finish) are closed too.
	for _, o := range r.objects {
		delete(r.objects, o.id)
		r.progs.Delete(o.id)
		free = append(free, o)
	}
	r.mu.Unlock()
	closeObjects(free)
	unix.Close(r.epfd)
	unix.Close(r.wakefd)
}

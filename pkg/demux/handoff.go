package demux

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/state"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Planned upgrades (docs/persistence.md, "Upgrades").
//
// Handoff brings the server to a standstill at request boundaries: the
// listeners stop accepting, every connection finishes the request it is
// executing, sends its reply and stops reading (what a client pipelined
// stays queued in its socket for the next process), seccomp listeners
// stop receiving (notifications wait in the kernel), link workers stop
// receiving (packets wait in their kernel queues), the hangup watcher and
// the pin watcher stop. Then it describes everything (state.Image) with
// the fds that go with it. The daemon execs the new binary with them
// (state.Exec); if that fails, Resume undoes the standstill. The new
// process rebuilds the server (Restore with Upgrade set) and answers the
// queued requests, so clients see a pause and nothing else.

// Handoff errors.
var (
	ErrUpgradeBusy   = errno.New(unix.EBUSY, "demux: an upgrade is already under way")
	ErrUpgradeDenied = errno.New(unix.EPERM, "demux: only root or the daemon's own user may upgrade the daemon")
	ErrNoUpgrade     = errno.New(unix.EOPNOTSUPP, "demux: this daemon cannot upgrade itself (no binary to execute)")
	ErrHandoffStuck  = errno.New(unix.ETIMEDOUT, "demux: the server did not come to a standstill in time; upgrade abandoned")
)

// handoff is the server's upgrade state. Safe for concurrent use.
type handoff struct {
	mu   sync.Mutex
	cond *sync.Cond
	// active is set from the start of Handoff until Resume. Guarded by mu.
	active bool
	// resume is closed by Resume. Guarded by mu.
	resume chan struct{}
	// parked are the connections and listeners standing still, and the
	// attachments whose serving goroutine ended for the handoff. Guarded
	// by mu.
	parked   map[*conn]bool
	lnParked map[*net.UnixListener]bool
	atts     []*attachment
	// pending is the connection whose CmdDaemonUpgrade waits for the
	// outcome. Guarded by mu.
	pending *conn
	start   time.Time
	// dups are the fds Handoff duplicated (closed by Resume).
	dups []int
}

func (ho *handoff) init() {
	if ho.cond == nil {
		ho.cond = sync.NewCond(&ho.mu)
		ho.parked = map[*conn]bool{}
		ho.lnParked = map[*net.UnixListener]bool{}
	}
}

// isActive reports whether a handoff is under way.
func (ho *handoff) isActive() bool {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	return ho.active
}

// park makes connection c stand still during a handoff (its read
// deadline woke it at a request boundary): it returns true after Resume,
// with the deadline cleared, and false at once when no handoff is under
// way (a shutdown). It never returns if the process is replaced.
func (s *Server) park(c *conn) bool {
	ho := &s.ho
	if !ho.wait(func() { ho.parked[c] = true }, func() { delete(ho.parked, c) }) {
		return false
	}
	select {
	case <-c.stopping:
		return false // shut down meanwhile: drain as a stop does
	default:
	}
	c.nc.SetReadDeadline(time.Time{})
	return true
}

// parkListener is park for a listener whose accept deadline fired.
func (s *Server) parkListener(ln *net.UnixListener) bool {
	ho := &s.ho
	if !ho.wait(func() { ho.lnParked[ln] = true }, func() { delete(ho.lnParked, ln) }) {
		return false
	}
	ln.SetDeadline(time.Time{})
	return true
}

// wait parks the caller until Resume when a handoff is under way (false
// at once otherwise): enter records it as parked and wakes the handoff
// waiting for everyone to park, leave forgets it after Resume; both run
// under ho.mu.
func (ho *handoff) wait(enter, leave func()) bool {
	ho.mu.Lock()
	if !ho.active {
		ho.mu.Unlock()
		return false
	}
	ho.init()
	enter()
	ho.cond.Broadcast()
	resume := ho.resume
	ho.mu.Unlock()
	<-resume
	ho.mu.Lock()
	leave()
	ho.mu.Unlock()
	return true
}

// parkAttachment reports whether at's serving goroutine ended for a
// handoff (it then must not end the attachment); Resume starts it again.
func (s *Server) parkAttachment(at *attachment) bool {
	ho := &s.ho
	ho.mu.Lock()
	defer ho.mu.Unlock()
	if !ho.active {
		return false
	}
	ho.init()
	ho.atts = append(ho.atts, at)
	ho.cond.Broadcast()
	return true
}

// wake makes waitFor look again (a connection ended: the handoff no
// longer waits for it).
func (ho *handoff) wake() {
	ho.mu.Lock()
	if ho.cond != nil {
		ho.cond.Broadcast()
	}
	ho.mu.Unlock()
}

// waitFor waits until ok holds (called with ho.mu held) or the deadline.
func (ho *handoff) waitFor(deadline time.Time, ok func() bool) bool {
	t := time.AfterFunc(time.Until(deadline), func() {
		ho.mu.Lock()
		ho.cond.Broadcast()
		ho.mu.Unlock()
	})
	defer t.Stop()
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		ho.cond.Wait()
	}
	return true
}

// Handoff brings the server to a standstill (see the section comment)
// within timeout and returns its image, with img.FDs naming every fd the
// next process needs (listeners, connections, descriptors' daemon ends,
// memfd storage, seccomp listeners, queue sockets) — all open, none
// close-on-exec cleared yet (state.Exec does that). The caller adds its
// own fds (locks) to img.FDs and execs; if the exec returns, it must call
// Resume. It fails with ErrUpgradeBusy if a handoff is under way,
// ErrServerClosed after Shutdown, and ErrHandoffStuck (after resuming)
// if some connection or worker did not stop in time.
func (s *Server) Handoff(timeout time.Duration) (*state.Image, error) {
	ho := &s.ho
	ho.mu.Lock()
	ho.init()
	if ho.active {
		ho.mu.Unlock()
		return nil, ErrUpgradeBusy
	}
	ho.active, ho.resume, ho.start, ho.atts, ho.dups = true, make(chan struct{}), time.Now(), nil, nil
	ho.mu.Unlock()
	deadline := time.Now().Add(timeout)
	stuck := func(what string) (*state.Image, error) {
		s.log.Warn("upgrade abandoned: the server did not stand still", zap.String("waiting_for", what))
		s.Resume(ErrHandoffStuck)
		return nil, ErrHandoffStuck
	}

	// Listeners first, so that no connection starts meanwhile.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.Resume(ErrServerClosed)
		return nil, ErrServerClosed
	}
	lns := make([]*net.UnixListener, 0, len(s.lns))
	for ln := range s.lns {
		lns = append(lns, ln)
		ln.SetDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	ho.mu.Lock()
	ok := ho.waitFor(deadline, func() bool { return len(ho.lnParked) == len(lns) })
	ho.mu.Unlock()
	if !ok {
		return stuck("listeners")
	}
	// Connections, at their next request boundary.
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	ho.mu.Lock()
	ok = ho.waitFor(deadline, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			if !ho.parked[c] {
				return false
			}
		}
		return true
	})
	ho.mu.Unlock()
	if !ok {
		return stuck("connections")
	}
	// The connections to hand over are those standing still now: some of
	// the first list may have ended meanwhile.
	s.mu.Lock()
	conns = conns[:0]
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Seccomp listeners: their goroutines end, the listeners stay open.
	atts := s.attach.list()
	for _, at := range atts {
		at.cancel()
	}
	ho.mu.Lock()
	ok = ho.waitFor(deadline, func() bool { return len(ho.atts) == len(atts) })
	ho.mu.Unlock()
	if !ok {
		return stuck("seccomp listeners")
	}
	// Link workers end; their queues stay bound.
	s.links.mu.Lock()
	links := make([]*link, 0, len(s.links.links))
	for l := range s.links.links {
		links = append(links, l)
	}
	s.links.mu.Unlock()
	for _, l := range links {
		for _, lq := range l.queues {
			lq.q.Wake()
		}
	}
	for _, l := range links {
		l.wg.Wait()
	}
	// The watchers: no hangup and no unpin changes the registry now.
	s.reg.pauseWatch()
	if s.pins != nil {
		s.pins.saveMu.Lock()
	}

	img, err := s.imageForHandoff(conns, atts, links, lns)
	if err != nil {
		s.Resume(err)
		return nil, err
	}
	return img, nil
}

// imageForHandoff describes the standing-still server.
func (s *Server) imageForHandoff(conns []*conn, atts []*attachment, links []*link, lns []*net.UnixListener) (*state.Image, error) {
	ho := &s.ho
	r := s.reg
	fds := map[string]int{}
	dup := func(name string, f func() (int, error)) error {
		fd, err := f()
		if err != nil {
			return fmt.Errorf("handing over %s: %w", name, err)
		}
		ho.dups = append(ho.dups, fd)
		fds[name] = fd
		return nil
	}
	img := &state.Image{Version: s.cfg.Version, Started: ho.start.UnixNano(), FDs: fds}
	for i, ln := range lns {
		name := "l" + strconv.Itoa(i)
		if err := dup(name, func() (int, error) { return rawDup(ln) }); err != nil {
			return nil, err
		}
		img.Listeners = append(img.Listeners, name)
	}
	for _, at := range atts {
		if err := dup(state.FDName(state.PrefixSeccomp, uint64(at.id)), at.l.Dup); err != nil {
			return nil, err
		}
	}
	for _, l := range links {
		for i, lq := range l.queues {
			if err := dup(state.FDName(state.PrefixQueue, uint64(l.obj.id), uint64(i)), lq.q.Dup); err != nil {
				return nil, err
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.imageLocked(atts)
	img.LastID, img.Objects, img.Attachments = reg.LastID, reg.Objects, reg.Attachments
	for i := range img.Objects {
		so := &img.Objects[i]
		o := r.objects[so.ID]
		for _, n := range so.Nodes {
			if n.FD != "" {
				fds[n.FD] = o.nodes[n.ID].peer
			}
		}
		if so.Map != nil && so.Map.Region == "" {
			// A memfd: the fd is the storage.
			so.Map.FD = "m" + strconv.FormatUint(uint64(so.ID), 36)
			fds[so.Map.FD] = o.m.FD()
		}
	}
	for i, c := range conns {
		sc := state.Conn{FD: "c" + strconv.Itoa(i), UID: c.uid, GID: c.gid, PID: c.pid}
		fd, err := rawFD(c.nc)
		if err != nil {
			return nil, fmt.Errorf("handing over a connection: %w", err)
		}
		fds[sc.FD] = fd
		for num, h := range c.handles {
			if h == nil {
				continue
			}
			if h.dead.Load() {
				sc.Handles = append(sc.Handles, state.Handle{Num: uint32(num), Dead: true})
				continue
			}
			sc.Handles = append(sc.Handles, state.Handle{Num: uint32(num), Obj: h.obj.id, Node: h.src.id,
				Mode: uint8(h.mode), Maker: h.maker})
		}
		ho.mu.Lock()
		sc.Pending = ho.pending == c
		ho.mu.Unlock()
		img.Conns = append(img.Conns, sc)
	}
	if p := r.persist; p != nil && p.fds != nil {
		img.Stored = p.fds.Names()
	}
	if err := img.Check(); err != nil {
		return nil, fmt.Errorf("the registry does not describe itself consistently: %w", err)
	}
	return img, nil
}

// rawDup returns a close-on-exec duplicate of ln's socket.
func rawDup(ln *net.UnixListener) (int, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// rawFD returns nc's socket fd (owned by nc).
func rawFD(nc *net.UnixConn) (int, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// Resume ends a handoff that did not replace the process (err says why:
// the exec's error, or the handoff's own): everything runs again as
// before, and the connection that asked for the upgrade is answered with
// err.
func (s *Server) Resume(err error) {
	ho := &s.ho
	ho.mu.Lock()
	if !ho.active {
		ho.mu.Unlock()
		return
	}
	ho.active = false
	atts, dups, pending := ho.atts, ho.dups, ho.pending
	ho.atts, ho.dups, ho.pending = nil, nil, nil
	started := ho.start
	ho.mu.Unlock()
	for _, fd := range dups {
		unix.Close(fd)
	}
	s.reg.resumeWatch()
	if s.pins != nil {
		s.pins.saveMu.TryLock() // held if Handoff got that far
		s.pins.saveMu.Unlock()
	}
	s.links.mu.Lock()
	for l := range s.links.links {
		if !l.detached.Load() {
			for _, lq := range l.queues {
				l.wg.Add(1)
				go lq.work()
			}
		}
	}
	s.links.mu.Unlock()
	for _, at := range atts {
		s.restartSeccomp(at)
	}
	if pending != nil {
		// Answered before the connection reads again: replies stay in
		// order.
		pending.resetReply()
		pending.send(0, err)
	}
	ho.mu.Lock()
	close(ho.resume)
	ho.mu.Unlock()
	s.log.Warn("upgrade abandoned; serving on", zap.Error(err), zap.Duration("pause", time.Since(started)))
}

// restartSeccomp serves a parked attachment again.
func (s *Server) restartSeccomp(at *attachment) {
	ctx, cancel := context.WithCancel(context.Background())
	r := s.reg
	r.mu.Lock()
	at.cancel = cancel
	r.mu.Unlock()
	s.attach.wg.Add(1)
	go s.serveSeccomp(ctx, at)
}

// pauseWatch stops the hangup watcher (hangups wait in epoll); resumeWatch
// starts it again.
func (r *registry) pauseWatch() {
	var one = [8]byte{1}
	unix.Write(r.wakefd, one[:])
	<-r.done
}

func (r *registry) resumeWatch() {
	var b [8]byte
	unix.Read(r.wakefd, b[:])
	r.done = make(chan struct{})
	go r.watch()
}

// errDeferredReply is what a command returns when its reply comes later
// (the upgrade's, from the new process or Resume).
var errDeferredReply = errors.New("demux: reply deferred")

// daemonUpgrade executes CmdDaemonUpgrade: the caller must be root or
// the daemon's uid. The connection stops here; the reply comes from the
// new process (or from Resume).
func (c *conn) daemonUpgrade(data []byte) (int64, error) {
	if len(data) != 0 {
		return 0, ErrInvalid
	}
	if c.uid != 0 && c.uid != uint32(os.Geteuid()) {
		return 0, ErrUpgradeDenied
	}
	up := c.srv.cfg.Upgrade
	if up == nil {
		return 0, ErrNoUpgrade
	}
	ho := &c.srv.ho
	ho.mu.Lock()
	ho.init()
	if ho.active || ho.pending != nil {
		ho.mu.Unlock()
		return 0, ErrUpgradeBusy
	}
	ho.pending = c
	ho.mu.Unlock()
	go func() {
		if err := up(); err != nil {
			// Handoff or exec failed. If the handoff got under way,
			// Resume answered the requester; otherwise waitDeferred does.
			ho.mu.Lock()
			if ho.pending == c && !ho.active {
				ho.pending, c.deferredErr = nil, err
				ho.cond.Broadcast()
			}
			ho.mu.Unlock()
		}
	}()
	return 0, errDeferredReply
}

// restoreConns takes over the connections of an upgrade's image with
// their handle tables, and returns what starts serving them.
func (s *Server) restoreConns(img *state.Image, fds *fdSet, rep *RestoreReport) []func() {
	var starts []func()
	r := s.reg
	for _, sc := range img.Conns {
		fd := fds.take(sc.FD)
		if fd < 0 {
			continue
		}
		f := os.NewFile(uintptr(fd), "bpfd-conn")
		fc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			s.log.Warn("connection not taken over", zap.Error(err))
			continue
		}
		nc, ok := fc.(*net.UnixConn)
		if !ok {
			fc.Close()
			continue
		}
		c, err := newConn(s, nc)
		if err != nil {
			s.log.Warn("connection not taken over", zap.Error(err))
			nc.Close()
			continue
		}
		hs := append([]state.Handle(nil), sc.Handles...)
		sort.Slice(hs, func(i, j int) bool { return hs[i].Num < hs[j].Num })
		r.mu.Lock()
		for _, h := range hs {
			if int(h.Num) >= s.cfg.MaxHandles+1 {
				continue
			}
			var hd *handle
			if o := r.objects[h.Obj]; !h.Dead && o != nil {
				if d := o.nodes[h.Node]; d != nil {
					hd = r.newHandleLocked(d, wire.Mode(h.Mode)&d.mode, h.Maker)
				}
			}
			if hd == nil {
				hd = &handle{}
				hd.dead.Store(true)
			}
			c.setHandle(h.Num, hd)
		}
		r.mu.Unlock()
		rep.Conns++
		pending := sc.Pending
		starts = append(starts, func() {
			if pending {
				res := wire.UpgradeResult{FromVersion: img.Version, ToVersion: s.cfg.Version, PID: os.Getpid(),
					PauseNs: time.Now().UnixNano() - img.Started, Objects: rep.Objects,
					Descriptors: rep.Descriptors, Conns: rep.Conns}
				b, _ := json.Marshal(res)
				c.resetReply()
				copy(c.alloc(len(b)), b)
				c.send(0, nil)
			}
			s.admitConn(c, true)
		})
	}
	return starts
}

// setHandle puts hd in handle slot num (growing the table; the numbers
// skipped go to the free list).
func (c *conn) setHandle(num uint32, hd *handle) {
	for uint32(len(c.handles)) <= num {
		if n := uint32(len(c.handles)); n != num && n != 0 {
			c.free = append(c.free, n)
		}
		c.handles = append(c.handles, nil)
	}
	for i, f := range c.free {
		if f == num {
			c.free = append(c.free[:i], c.free[i+1:]...)
			break
		}
	}
	c.handles[num] = hd
	c.nhandles++
}

// waitDeferred holds connection c after its CmdDaemonUpgrade: it counts
// as standing still for the handoff, and returns once the request is
// answered — by Resume, or here if the upgrade failed before the handoff
// began — with c's read deadline cleared. If the handoff replaces the
// process it never returns (the new process answers).
func (s *Server) waitDeferred(c *conn) {
	ho := &s.ho
	ho.mu.Lock()
	ho.init()
	ho.parked[c] = true
	ho.cond.Broadcast()
	for {
		if ho.active {
			resume := ho.resume
			ho.mu.Unlock()
			<-resume
			ho.mu.Lock()
			break
		}
		if ho.pending != c {
			err := c.deferredErr
			c.deferredErr = nil
			delete(ho.parked, c)
			ho.mu.Unlock()
			c.resetReply()
			c.send(0, err)
			return
		}
		ho.cond.Wait()
	}
	delete(ho.parked, c)
	ho.mu.Unlock()
	c.nc.SetReadDeadline(time.Time{})
}

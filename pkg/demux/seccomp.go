package demux

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Attach errors.
var (
	ErrAttachType = errno.New(unix.EINVAL, "demux: unknown attach type")
	ErrProgType   = errno.New(unix.EINVAL, "demux: program type does not fit the attach type")
)

// attachments are the seccomp listeners the daemon serves. Safe for
// concurrent use.
type attachments struct {
	mu     sync.Mutex
	byID   map[uint32]*attachment // guarded by mu
	lastID uint32                 // guarded by mu
	closed bool                   // guarded by mu
	wg     sync.WaitGroup
	n      atomic.Int64
}

// attachment is one seccomp listener answered by one program. It holds a
// reference on the program object and a descriptor slot of its uid.
type attachment struct {
	id     uint32
	obj    *Object
	uid    uint32
	l      *seccomp.Listener
	cancel context.CancelFunc
	// via is the lineage node of the program handle it was made with;
	// it holds a use of it (revoking the node cancels the attachment).
	// Guarded by registry.mu.
	via *Descriptor

	// task adapts the seccomp task to prog.Task; reused by the serving
	// goroutine, so a notification allocates nothing.
	task seccompTask
	// lastFault rate-limits fault logging (one a second).
	lastFault time.Time
	// heavy is set while the program's decisions take longer than a
	// bulk-lane slice: they then run in the bulk lane (fairly against
	// other uids' bulk work) instead of the fast lane; see decide.
	heavy bool
	// run is the bulk-lane closure for heavy decisions and yield its
	// check-in within a run (both made once); turn is the bulk-lane turn
	// of the decision in progress.
	run    func(*sched.Turn) error
	yield  func() error
	turn   *sched.Turn
	waited time.Duration // by the decision in progress, in yield
	// data is the notification being decided, for run.
	data *[seccomp.SizeofData]byte
	ret  uint32
	err  error
	took time.Duration // how long the last decision took, in either lane
	// stats counts decisions (stats.go).
	stats seccompStats
}

// seccompTask is "current" for a seccomp program: the notifying task.
type seccompTask struct{ t *seccomp.Task }

// PidTgid implements prog.Task.
func (a *seccompTask) PidTgid() uint64 {
	tgid, _ := a.t.TGID()
	return uint64(tgid)<<32 | uint64(a.t.PID())
}

// UidGid implements prog.Task (real ids, as the kernel's helper).
func (a *seccompTask) UidGid() uint64 {
	uid, _, _ := a.t.UID()
	gid, _, _ := a.t.GID()
	return uint64(gid)<<32 | uint64(uid)
}

// Comm implements prog.Task.
func (a *seccompTask) Comm() [16]byte {
	c, _ := a.t.Comm()
	return c
}

var _ prog.Task = (*seccompTask)(nil)

// progAttach executes CmdProgAttach. For AttachSeccomp the one fd is a
// seccomp listener; the handle must name a Seccomp program with read mode
// (running it on one's own syscalls is using it, as a test run is).
func (c *conn) progAttach(a, data []byte, fds []int) (int64, error) {
	var at wire.AttachAttr
	if !at.Parse(a) || at.Flags != 0 || len(data) != 0 {
		return 0, ErrInvalid
	}
	if at.AttachType != wire.AttachSeccomp {
		return 0, ErrAttachType
	}
	if len(fds) != 1 {
		return 0, ErrFDs
	}
	hd, err := c.progHandle(at.Handle, wire.ModeRead)
	if err != nil {
		return 0, err
	}
	if hd.obj.p.Type() != prog.Seccomp {
		return 0, ErrProgType
	}
	// The received fd is closed after the request; keep a duplicate.
	lfd, err := unix.FcntlInt(uintptr(fds[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, ErrQuotaDescs
	}
	l, err := seccomp.NewListener(lfd) // takes lfd, closes it on failure
	if err != nil {
		return 0, err
	}
	s := c.srv
	at2 := &attachment{obj: hd.obj, uid: c.uid, l: l}
	at2.stats.attachedAt, at2.stats.pid, at2.stats.comm = time.Now(), c.pid, c.comm()
	r := c.reg
	r.mu.Lock()
	if hd.dead.Load() {
		r.mu.Unlock()
		l.Close()
		return 0, ErrBadHandle
	}
	if err := r.descCheck(c.uid); err != nil {
		r.mu.Unlock()
		l.Close()
		return 0, err
	}
	if err := r.chargeLocked(c.uid, attachCost); err != nil {
		r.mu.Unlock()
		l.Close()
		return 0, err
	}
	r.usage(c.uid).descs++
	hd.obj.refs++
	// The attachment keeps using the program handle's authority:
	// revoking its node ends the attachment.
	at2.via = hd.src
	ctx, cancel := context.WithCancel(context.Background())
	at2.cancel = cancel
	addUseLocked(hd.src, use{att: at2})
	r.mu.Unlock()

	att := &s.attach
	att.mu.Lock()
	if att.closed {
		att.mu.Unlock()
		s.endAttachment(at2)
		return 0, ErrServerClosed
	}
	if att.byID == nil {
		att.byID = map[uint32]*attachment{}
	}
	att.lastID++
	at2.id = att.lastID
	att.byID[at2.id] = at2
	att.wg.Add(1)
	att.n.Add(1)
	att.mu.Unlock()
	s.persistAttach(at2, true)
	go s.serveSeccomp(ctx, at2)
	s.log.Debug("seccomp attached", zap.Uint32("attachment", at2.id), zap.Uint32("prog", hd.obj.id),
		zap.Uint32("uid", c.uid))
	return int64(at2.id), nil
}

// serveSeccomp answers notifications until no task uses the filter, the
// daemon shuts down or the listener fails; then it ends the attachment.
func (s *Server) serveSeccomp(ctx context.Context, at *attachment) {
	defer s.attach.wg.Done()
	p := at.obj.p
	at.yield = func() error { at.waited += at.turn.Yield(); return nil }
	at.run = func(t *sched.Turn) error {
		at.turn, at.waited = t, 0
		t0 := time.Now()
		at.ret, at.err = p.RunSeccompYield(at.data, &at.task, at.yield)
		at.took = time.Since(t0) - at.waited // its own running time
		at.turn = nil
		return nil
	}
	err := at.l.Serve(ctx, func(n *seccomp.Notif, t *seccomp.Task) seccomp.Verdict {
		at.task.t = t
		ret, err := s.decide(at, (*[seccomp.SizeofData]byte)(n.DataBytes()))
		took := at.took // measured by decide: run statistics cost no clock read
		at.task.t = nil
		if err != nil {
			// A verified program does not fault; if one does, fail
			// closed.
			if now := time.Now(); now.Sub(at.lastFault) >= time.Second {
				at.lastFault = now
				s.log.Warn("seccomp program faulted; syscall denied with EPERM",
					zap.String("prog", p.Name()), zap.Uint32("pid", n.PID), zap.Error(err))
			}
			s.decided(at, n.Data.NR, t, seccomp.Deny(unix.EPERM), true, took)
			return seccomp.Deny(unix.EPERM)
		}
		v := seccomp.VerdictFromRet(ret)
		s.decided(at, n.Data.NR, t, v, false, took)
		return v
	})
	if errors.Is(err, context.Canceled) && s.parkAttachment(at) {
		return // an upgrade: the listener goes to the next process
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("seccomp listener failed", zap.Uint32("attachment", at.id), zap.Error(err))
	}
	s.endAttachment(at)
	s.log.Debug("seccomp detached", zap.Uint32("attachment", at.id))
}

// decide runs the attachment's program on one notification. Decisions run
// in the fast lane, at once on the attachment's goroutine, as long as they
// are cheap; a program whose decision took longer than a bulk-lane slice
// has its following decisions run in the bulk lane, for the attaching uid
// (so an expensive filter costs its owner's CPU share, not everyone's
// latency), until one takes less than an eighth of a slice again.
func (s *Server) decide(at *attachment, data *[seccomp.SizeofData]byte) (uint32, error) {
	slice := s.sched.Slice()
	if !at.heavy {
		t0 := time.Now()
		ret, err := at.obj.p.RunSeccomp(data, &at.task)
		if at.took = time.Since(t0); at.took > slice {
			at.heavy = true
		}
		return ret, err
	}
	at.data = data
	s.sched.Run(at.uid, at.run)
	at.data = nil
	if at.took < slice/8 {
		at.heavy = false
	}
	return at.ret, at.err
}

// endAttachment closes the listener and drops what the attachment held.
func (s *Server) endAttachment(at *attachment) {
	at.l.Close()
	att := &s.attach
	att.mu.Lock()
	registered := att.byID[at.id] == at
	if registered {
		delete(att.byID, at.id)
		att.n.Add(-1)
	}
	att.mu.Unlock()
	if registered {
		s.persistAttach(at, false)
	}
	r := s.reg
	r.mu.Lock()
	r.usage(at.uid).descs--
	r.unchargeLocked(at.uid, attachCost)
	r.dropUseLocked(at.via, use{att: at})
	at.via = nil
	free := r.unref(at.obj, nil)
	r.mu.Unlock()
	closeObjects(free)
}

// closeAttachments stops serving every listener (the filtered tasks' routed
// syscalls then fail with ENOSYS) and waits for the serving goroutines.
func (s *Server) closeAttachments() {
	att := &s.attach
	att.mu.Lock()
	att.closed = true
	for _, at := range att.byID {
		at.cancel()
	}
	att.mu.Unlock()
	att.wg.Wait()
}

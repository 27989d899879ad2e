package seccomp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Sentinel errors of Listener.
var (
	// ErrNotListener: NewListener was given an fd that is not a seccomp
	// notify fd.
	ErrNotListener = errno.New(unix.EINVAL, "seccomp: not a seccomp listener fd")
	// ErrNoTasks: no task uses the filter any more (the listener polls
	// POLLHUP); nothing will ever arrive on it again.
	ErrNoTasks = errno.New(unix.ENOENT, "seccomp: no task uses the filter")
	// ErrNotifGone: the notification is no longer valid: its task died or
	// a signal interrupted the syscall (it will be notified again with a
	// new id if it restarts).
	ErrNotifGone = errno.New(unix.ENOENT, "seccomp: notification no longer valid")
	// ErrClosed: the Listener was closed.
	ErrClosed = errno.New(unix.EBADF, "seccomp: listener closed")
)

// listenerLink is what readlink(/proc/PID/fd/N) says for a listener: the
// kernel makes it with anon_inode_getfile("seccomp notify", …), and anon
// inodes read back as "anon_inode:" + name.
const listenerLink = "anon_inode:seccomp notify"

// SizeofData is sizeof(struct seccomp_data).
const SizeofData = 64

// Data is struct seccomp_data (linux/seccomp.h), the context of a seccomp
// program. Its memory layout is exactly the kernel's; see Notif.DataBytes.
type Data struct {
	NR                 int32     // syscall number (x86_64)
	Arch               uint32    // AUDIT_ARCH_*; always AUDIT_ARCH_X86_64 here
	InstructionPointer uint64    // user IP at the syscall
	Args               [6]uint64 // syscall arguments, as raw registers
}

// Notif is struct seccomp_notif: one routed syscall waiting for a verdict.
type Notif struct {
	ID    uint64 // cookie for Respond and IDValid; unique per listener
	PID   uint32 // thread id of the task, in the receiver's pid namespace (0 if not visible)
	Flags uint32 // currently always 0
	Data  Data
}

// Compile-time layout checks against the kernel structs.
var (
	_ [SizeofData]byte = [unsafe.Sizeof(Data{})]byte{}
	_ [80]byte         = [unsafe.Sizeof(Notif{})]byte{}
	_ [24]byte         = [unsafe.Sizeof(notifResp{})]byte{}
)

// DataBytes returns the 64 bytes of n.Data as the kernel laid them out, in
// native byte order (little-endian: the package is x86_64 only). The slice
// aliases n; it is the context an eBPF seccomp program runs on. No copy, no
// allocation.
func (n *Notif) DataBytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&n.Data)), SizeofData)
}

// notifResp is struct seccomp_notif_resp.
type notifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

// Action is what a Verdict tells the kernel to do with a routed syscall.
type Action uint8

// Actions.
const (
	// ActionAllow runs the syscall as if no filter existed
	// (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Integer arguments cannot have
	// changed since the notification; memory behind pointer arguments can
	// (seccomp_unotify(2)), which is why filters decide on integers only.
	ActionAllow Action = iota
	// ActionErrno fails the syscall with Verdict.Errno without running it.
	ActionErrno
	// ActionKill kills the whole process with SIGKILL (through a pidfd).
	ActionKill
)

// Verdict is the answer to one notification. The zero value allows.
type Verdict struct {
	Action Action
	Errno  unix.Errno // for ActionErrno; clamped to MAX_ERRNO (4095); 0 returns 0 without running the syscall
}

// Common verdicts.
var (
	Allow = Verdict{Action: ActionAllow}
	Kill  = Verdict{Action: ActionKill}
)

// Deny returns a verdict failing the syscall with e.
func Deny(e unix.Errno) Verdict { return Verdict{Action: ActionErrno, Errno: e} }

// VerdictFromRet maps a seccomp filter return value (SECCOMP_RET_*, as a
// classic or eBPF seccomp program returns it) to a Verdict, following the
// kernel: ALLOW and LOG allow; ERRNO fails with its data (clamped to
// MAX_ERRNO); KILL_PROCESS, KILL_THREAD and everything a supervisor cannot
// honour (TRAP, TRACE, USER_NOTIF, unknown actions, which the kernel treats as
// KILL_PROCESS) kill. Killing a thread is widened to the process.
func VerdictFromRet(ret uint32) Verdict {
	switch ret & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_LOG:
		return Allow
	case unix.SECCOMP_RET_ERRNO:
		return Deny(unix.Errno(min(ret&unix.SECCOMP_RET_DATA, maxErrno)))
	default:
		return Kill
	}
}

// Listener is the supervisor end of a seccomp filter (the
// SECCOMP_FILTER_FLAG_NEW_LISTENER fd), registered with Go's netpoller.
//
// Concurrency: Recv (and Serve, which calls it) must be used by one goroutine
// at a time; Respond, IDValid, Task reads and Close are safe from any
// goroutine.
type Listener struct {
	f  *os.File
	rc syscall.RawConn
	fd int // same fd as f; valid while closed is false, guarded by mu (read)

	mu     sync.RWMutex // write-held by Close while it closes fd
	closed atomic.Bool

	// Recv state: used by one goroutine at a time (see above).
	readFn  func(fd uintptr) bool
	pollFds [1]unix.PollFd
	rn      *Notif
	rerr    error
}

// NewListener takes ownership of fd, a seccomp listener (from Install, Start,
// or received over SCM_RIGHTS), sets it non-blocking and registers it with
// the netpoller. On failure fd is closed and the error is ErrNotListener or
// the syscall error.
func NewListener(fd int) (*Listener, error) {
	var buf [64]byte
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf[:])
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("readlink listener fd: %w", err)
	}
	if string(buf[:n]) != listenerLink {
		unix.Close(fd)
		return nil, fmt.Errorf("%w (%q)", ErrNotListener, buf[:n])
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "seccomp notify")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &Listener{f: f, rc: rc, fd: fd}
	l.readFn = l.tryRecv
	return l, nil
}

// Close closes the listener. Tasks waiting in a routed syscall, and any that
// make one later, get ENOSYS (the kernel's answer when nobody listens). A
// blocked Recv or Serve returns ErrClosed. Close returns ErrClosed if already
// closed.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Swap(true) {
		return ErrClosed
	}
	return l.f.Close()
}

// SetDeadline sets a deadline for Recv (and so Serve); the zero time clears
// it. A Recv past the deadline returns an error matching
// os.ErrDeadlineExceeded.
func (l *Listener) SetDeadline(t time.Time) error { return l.f.SetReadDeadline(t) }

// tryRecv is the RawConn.Read callback: it receives one notification into
// l.rn if one is pending and reports whether Recv is done. SECCOMP_IOCTL_NOTIF_RECV
// ignores O_NONBLOCK and blocks when nothing is pending, and the netpoller is
// edge-triggered, so readiness is checked with poll(2) first.
func (l *Listener) tryRecv(fd uintptr) bool {
	for {
		l.pollFds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		_, err := unix.Poll(l.pollFds[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.rerr = os.NewSyscallError("poll", err)
			return true
		}
		ev := l.pollFds[0].Revents
		switch {
		case ev&unix.POLLIN != 0:
			*l.rn = Notif{} // the kernel rejects a non-zeroed buffer (EINVAL)
			_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(l.rn)))
			switch e {
			case 0:
				l.rerr = nil
				return true
			case unix.EINTR, unix.ENOENT:
				// ENOENT: the notification was withdrawn (signal) between
				// poll and recv. Look again.
				continue
			default:
				l.rerr = os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", e)
				return true
			}
		case ev&unix.POLLHUP != 0:
			l.rerr = ErrNoTasks
			return true
		case ev&(unix.POLLERR|unix.POLLNVAL) != 0:
			l.rerr = os.NewSyscallError("poll", unix.EBADF)
			return true
		}
		return false
	}
}

// Recv waits for the next notification and stores it in n (which it zeroes
// first). It returns ErrNoTasks once no task uses the filter (the last
// filtered task has exited; it need not be reaped), ErrClosed after Close, an error
// matching os.ErrDeadlineExceeded past the deadline, or the ioctl error.
// Transient withdrawals (the notifying task was interrupted) are skipped.
// Recv does not allocate.
func (l *Listener) Recv(n *Notif) error {
	l.rn = n
	err := l.rc.Read(l.readFn)
	l.rn = nil
	if err != nil {
		if l.closed.Load() {
			return ErrClosed
		}
		return err
	}
	return l.rerr
}

// ioctl runs a listener ioctl under the read lock, so Close cannot close (and
// the process reuse) the fd number meanwhile.
func (l *Listener) ioctl(req uintptr, arg unsafe.Pointer) unix.Errno {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		return unix.EBADF
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), req, uintptr(arg))
	return e
}

// IDValid reports whether notification id is still pending: its task is alive
// and still waiting in the syscall (SECCOMP_IOCTL_NOTIF_ID_VALID). Check it
// after reading anything about the task (e.g. /proc/PID) and before acting on
// what was read: only then is it known that PID still named the notifying
// task (seccomp_unotify(2)). It returns nil if valid, ErrNotifGone if not,
// ErrClosed after Close, or the ioctl error.
func (l *Listener) IDValid(id uint64) error {
	switch e := l.ioctl(seccompIoctlNotifIDValid, unsafe.Pointer(&id)); e {
	case 0:
		return nil
	case unix.ENOENT:
		return ErrNotifGone
	case unix.EBADF:
		if l.closed.Load() {
			return ErrClosed
		}
		fallthrough
	default:
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)", e)
	}
}

// Respond answers notification n with v (SECCOMP_IOCTL_NOTIF_SEND):
//
//   - ActionAllow: flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE, val = error = 0;
//   - ActionErrno: error = -Errno, val = 0;
//   - ActionKill: opens a pidfd for n.PID (PIDFD_THREAD, falling back to the
//     thread group read from /proc on kernels before 6.9), checks IDValid so
//     the pidfd is known to name the notifying task, sends SIGKILL with
//     pidfd_send_signal, then answers EPERM. The task never sees that errno:
//     SIGKILL is already pending and it dies on the way out of the syscall;
//     the answer only releases the notification at once (usually the kernel
//     has already dropped it and Respond returns nil).
//
// It returns nil on success, ErrNotifGone if the notification is no longer
// pending (task dead or interrupted: nothing to answer), ErrClosed after
// Close, or the ioctl error. Respond does not allocate except on kill.
func (l *Listener) Respond(n *Notif, v Verdict) error {
	resp := notifResp{id: n.ID}
	switch v.Action {
	case ActionAllow:
		resp.flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
	case ActionErrno:
		resp.error = -int32(min(uint32(v.Errno), maxErrno))
	default: // ActionKill, and unknown actions fail closed.
		if err := l.kill(n); err != nil {
			return err
		}
		resp.error = -int32(unix.EPERM)
	}
	switch e := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp)); e {
	case 0:
		return nil
	case unix.ENOENT:
		if v.Action == ActionKill {
			return nil // killed; the kernel dropped the notification
		}
		return ErrNotifGone
	case unix.EBADF:
		if l.closed.Load() {
			return ErrClosed
		}
		fallthrough
	default:
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_SEND)", e)
	}
}

// kill sends SIGKILL to the process of the task behind n.
func (l *Listener) kill(n *Notif) error {
	if n.PID == 0 {
		return fmt.Errorf("seccomp: kill: task not visible in this pid namespace: %w", unix.ESRCH)
	}
	pidfd, err := unix.PidfdOpen(int(n.PID), pidfdThread)
	if err == unix.EINVAL {
		// Before Linux 6.9 pidfd_open takes thread-group leaders only.
		var t Task
		t.reset(l, n)
		tgid, terr := t.TGID()
		if terr != nil {
			return terr
		}
		pidfd, err = unix.PidfdOpen(int(tgid), 0)
	}
	if err == unix.ESRCH {
		return ErrNotifGone
	}
	if err != nil {
		return os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	// The pid may have been reused between Recv and pidfd_open; if the
	// notification is still pending, the task is alive, so the pidfd
	// (which pins its struct pid) names it.
	if err := l.IDValid(n.ID); err != nil {
		return err
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil {
		if err == unix.ESRCH {
			return nil // died meanwhile
		}
		return os.NewSyscallError("pidfd_send_signal", err)
	}
	return nil
}

// Serve receives notifications and answers each with decide(n, task) until no
// task uses the filter any more (returns nil), ctx is done (returns
// ctx.Err(); the listener stays open and usable), Close is called (returns
// ErrClosed), or a receive or respond error occurs (returned). Notifications
// withdrawn before the answer (ErrNotifGone) are skipped.
//
// decide runs on Serve's goroutine, one notification at a time; n and task are
// only valid during the call. task reads /proc lazily and checks IDValid after
// each read. A decide that panics is not recovered. Serve does not allocate
// per notification on its own (decide and Task reads may). Serve must not be
// called concurrently with itself or Recv on the same Listener.
func (l *Listener) Serve(ctx context.Context, decide func(n *Notif, task *Task) Verdict) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.f.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		l.f.SetReadDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-woken // let the wake-up finish before anyone resets the deadline
		}
	}()

	var (
		n    Notif
		task Task
	)
	for {
		if err := l.Recv(&n); err != nil {
			switch {
			case errors.Is(err, ErrNoTasks):
				return nil
			case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
				return ctx.Err()
			}
			return err
		}
		task.reset(l, &n)
		v := decide(&n, &task)
		if err := l.Respond(&n, v); err != nil && !errors.Is(err, ErrNotifGone) {
			return err
		}
	}
}

// Dup returns a new close-on-exec descriptor of the listener, owned by
// the caller, for keeping the filter's listener alive beyond this
// process (systemd's fd store, a daemon upgrade). ErrClosed after Close.
func (l *Listener) Dup() (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		return -1, ErrClosed
	}
	fd, err := unix.FcntlInt(uintptr(l.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	return fd, nil
}

package bpfemu

import (
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/seccomp"
)

// notifier wraps the seccomp user-notification listener the supervisor
// answers. Unlike seccomp.Listener it receives with a blocking poll on a
// thread of its own (Serve locks one), which keeps the notification round
// trip free of netpoller hand-offs, and it can answer with a value and
// install descriptors (SECCOMP_IOCTL_NOTIF_ADDFD).
//
// Concurrency: recv is used by the serving goroutine only; respond,
// respondFD, addFD and valid are safe from any goroutine. close waits for
// every ioctl in progress (mu).
type notifier struct {
	mu     sync.RWMutex // read-held around every ioctl; write-held by close
	fd     int          // the listener; -1 once closed, guarded by mu
	wake   int          // eventfd that interrupts recv; guarded by mu
	noSend atomic.Bool  // SECCOMP_ADDFD_FLAG_SEND is unknown (before Linux 5.14)
	pollFd [2]unix.PollFd
}

// answerer is what answering a notification needs of the listener: the
// notifier, or a test's stand-in.
type answerer interface {
	valid(id uint64) error
	respond(id uint64, val int64, e unix.Errno) error
	allow(id uint64) error
	respondFD(id uint64, src int, cloexec bool) (int, error)
}

var _ answerer = (*notifier)(nil)

// seccompNotifAddfd is struct seccomp_notif_addfd (linux/seccomp.h).
type seccompNotifAddfd struct {
	id         uint64
	flags      uint32
	srcfd      uint32
	newfd      uint32
	newfdFlags uint32
}

// seccompNotifResp is struct seccomp_notif_resp.
type seccompNotifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

var (
	_ [24]byte = [unsafe.Sizeof(seccompNotifAddfd{})]byte{}
	_ [24]byte = [unsafe.Sizeof(seccompNotifResp{})]byte{}
)

// newNotifier takes ownership of the listener fd. It asks for synchronous
// wake-ups (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6; ignored where
// unknown): the notifying task and the supervisor then hand the CPU to
// each other like the two ends of a pipe.
func newNotifier(fd int) (*notifier, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	unix.CloseOnExec(fd)
	// The listener may have been made non-blocking by whoever held it;
	// recv polls first, so either is fine.
	unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS,
		uintptr(unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP))
	return &notifier{fd: fd, wake: wake}, nil
}

// close closes the listener: tasks still waiting, and later routed
// syscalls, get ENOSYS. A recv in progress returns errNotifierClosed.
func (n *notifier) close() {
	n.interrupt()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd >= 0 {
		unix.Close(n.fd)
		unix.Close(n.wake)
		n.fd, n.wake = -1, -1
	}
}

// interrupt makes a blocked recv return errNotifierClosed soon.
func (n *notifier) interrupt() {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.wake >= 0 {
		var one = [8]byte{1}
		unix.Write(n.wake, one[:])
	}
}

// recv waits for the next notification. It returns errNoTasks once no task
// uses the filter, errNotifierClosed after interrupt or close, or the
// syscall error. It does not allocate.
func (n *notifier) recv(out *seccomp.Notif) error {
	for {
		n.mu.RLock()
		if n.fd < 0 {
			n.mu.RUnlock()
			return errNotifierClosed
		}
		n.pollFd[0] = unix.PollFd{Fd: int32(n.fd), Events: unix.POLLIN}
		n.pollFd[1] = unix.PollFd{Fd: int32(n.wake), Events: unix.POLLIN}
		n.mu.RUnlock()
		// The fds cannot be closed under poll: close interrupts first and
		// then waits for the read lock, which recv does not hold here; a
		// reused number would be polled at worst once more.
		_, err := unix.Poll(n.pollFd[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n.pollFd[1].Revents != 0 {
			return errNotifierClosed
		}
		ev := n.pollFd[0].Revents
		switch {
		case ev&unix.POLLIN != 0:
			*out = seccomp.Notif{}
			e := n.ioctl(unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(out))
			switch e {
			case 0:
				return nil
			case unix.EINTR, unix.ENOENT:
				continue // withdrawn between poll and recv
			case unix.EBADF:
				return errNotifierClosed
			}
			return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", e)
		case ev&unix.POLLHUP != 0:
			return errNoTasks
		case ev&(unix.POLLERR|unix.POLLNVAL) != 0:
			return errNotifierClosed
		}
	}
}

func (n *notifier) ioctl(req uintptr, arg unsafe.Pointer) unix.Errno {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.fd < 0 {
		return unix.EBADF
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), req, uintptr(arg))
	return e
}

// valid reports whether notification id is still pending
// (SECCOMP_IOCTL_NOTIF_ID_VALID): its task is alive and waiting in the
// syscall, so a pid read from the notification still names it. It returns
// nil or errTaskGone.
func (n *notifier) valid(id uint64) error {
	if e := n.ioctl(unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)); e != 0 {
		return errTaskGone
	}
	return nil
}

// respond completes notification id: the syscall returns val, or fails
// with e when e != 0. errTaskGone if the task no longer waits.
func (n *notifier) respond(id uint64, val int64, e unix.Errno) error {
	r := seccompNotifResp{id: id}
	if e != 0 {
		r.error = -int32(e)
	} else {
		r.val = val
	}
	if n.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r)) != 0 {
		return errTaskGone
	}
	return nil
}

// allow lets the syscall run in the kernel as if it was not routed
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE). The supervisor uses it only for
// calls it does not emulate (paths outside the bpffs prefix): the process
// could make them itself anyway, so the time-of-check race that makes
// CONTINUE unfit for security decisions does not matter here.
func (n *notifier) allow(id uint64) error {
	r := seccompNotifResp{id: id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	if n.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r)) != 0 {
		return errTaskGone
	}
	return nil
}

// respondFD installs a copy of src (the caller keeps src) in the task
// behind notification id, O_CLOEXEC when cloexec, and completes the
// syscall with the new fd number as its value, atomically where the kernel
// can (SECCOMP_ADDFD_FLAG_SEND, Linux 5.14): the fd is installed if and
// only if the task sees it. It returns the new fd number, errTaskGone, or
// the ioctl's errno (EMFILE: the task's fd table is full).
func (n *notifier) respondFD(id uint64, src int, cloexec bool) (int, error) {
	a := seccompNotifAddfd{id: id, srcfd: uint32(src)}
	if cloexec {
		a.newfdFlags = unix.O_CLOEXEC
	}
	if !n.noSend.Load() {
		a.flags = unix.SECCOMP_ADDFD_FLAG_SEND
		r, _, e := n.ioctlRet(unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINVAL:
			n.noSend.Store(true) // before Linux 5.14: install, then respond
		case unix.ENOENT:
			return -1, errTaskGone
		default:
			return -1, e
		}
		a.flags = 0
	}
	r, _, e := n.ioctlRet(unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
	switch e {
	case 0:
	case unix.ENOENT:
		return -1, errTaskGone
	default:
		return -1, e
	}
	// Without FLAG_SEND the fd stays installed even if the task dies
	// before the answer; it then dies with the task's fd table.
	return int(r), n.respond(id, int64(r), 0)
}

func (n *notifier) ioctlRet(req uintptr, arg unsafe.Pointer) (uintptr, uintptr, unix.Errno) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.fd < 0 {
		return 0, 0, unix.EBADF
	}
	return unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), req, uintptr(arg))
}

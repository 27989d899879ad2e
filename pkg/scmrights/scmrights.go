// Package scmrights passes file descriptors over Unix sockets (SCM_RIGHTS)
// and reads peer credentials. It is shared by the daemon (pkg/demux) and the
// client (pkg/client).
//
// Every receive uses MSG_CMSG_CLOEXEC, so a received fd is never inherited
// by a child the receiver forks. Every fd the kernel hands over is either
// returned to the caller (who then owns it) or closed before the call
// returns: when the control data was truncated (MSG_CTRUNC, ErrCtrunc), when
// a message carries more fds than the caller allows (ErrTooManyFDs), when
// the data was truncated (MSG_TRUNC, ErrTrunc), or when a control message is
// malformed.
//
// API:
//
//	Sendmsg(fd int, b []byte, fds []int) error
//	Recvmsg(fd int, b, oob []byte, fds []int) (n int, fdsOut []int, flags int, err error)
//	RecvmsgSpill(fd int, b, big, oob []byte, fds []int) (msg []byte, spilled bool, fdsOut []int, flags int, err error)
//	OOBSize(maxFDs int) int
//	PeerCred(fd int) (unix.Ucred, error)
//	PeerPidfd(fd int) (int, error)
//	Cookie(fd int) (uint64, error)
//	NewConn(c syscall.Conn) (*Conn, error) // *net.UnixConn, integrated with Go's poller
//	(*Conn).RecvSpill(b []byte, spill Spill, oob []byte, fds []int) // a big buffer lent only to long messages
//	SendConn(c syscall.Conn, b []byte, fds ...int) error
//	RecvConn(c syscall.Conn, b []byte, maxFDs int) (n int, fds []int, err error)
//
// The raw-fd functions issue one system call on the fd as it is (blocking or
// not); on a non-blocking fd they return unix.EAGAIN wrapped in an
// *os.SyscallError. Conn does the same through a net.Conn's RawConn and so
// waits in Go's network poller instead of blocking a thread.
//
// Recvmsg and Conn.Recv do not allocate: the caller supplies the data
// buffer, the control buffer (size it with OOBSize) and the fd slice, whose
// capacity is the cap on fds per message.
//
// Errors from system calls are *os.SyscallError naming the call; the
// package's own failures are the sentinels below, bound to errnos with
// pkg/errno. All functions are safe for concurrent use on distinct fds.
package scmrights

import (
	"os"
	"unsafe"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"golang.org/x/sys/unix"
)

// Sentinel errors. Each matches its errno with errors.Is.
var (
	// ErrCtrunc: the kernel truncated the control data (MSG_CTRUNC); every
	// fd received was closed.
	ErrCtrunc = errno.New(unix.EINVAL, "scmrights: control data truncated (MSG_CTRUNC)")
	// ErrTrunc: the datagram was longer than the buffer (MSG_TRUNC); every
	// fd received was closed.
	ErrTrunc = errno.New(unix.EMSGSIZE, "scmrights: message truncated (MSG_TRUNC)")
	// ErrTooManyFDs: a message carried more fds than the caller allows; all
	// were closed. Sendmsg returns it for more than MaxSendFDs fds.
	ErrTooManyFDs = errno.New(unix.EINVAL, "scmrights: too many fds in one message")
	// ErrBadControl: a control message was malformed; every fd received
	// was closed.
	ErrBadControl = errno.New(unix.EINVAL, "scmrights: malformed control message")
	// ErrNoPidfd: neither SO_PEERPIDFD nor pidfd_open is available.
	ErrNoPidfd = errno.New(unix.ENOSYS, "scmrights: pidfds not supported")
)

// MaxSendFDs is the most fds Sendmsg passes in one message: the kernel's
// SCM_MAX_FD.
const MaxSendFDs = 253

// OOBSize returns the control buffer size needed to receive maxFDs fds in
// one SCM_RIGHTS message.
func OOBSize(maxFDs int) int { return unix.CmsgSpace(maxFDs * 4) }

const sizeofCmsghdr = unix.SizeofCmsghdr

// putRights writes an SCM_RIGHTS control message for fds into oob, which
// must hold OOBSize(len(fds)) bytes, and returns the used prefix.
func putRights(oob []byte, fds []int) []byte {
	n := unix.CmsgSpace(len(fds) * 4)
	oob = oob[:n]
	clear(oob)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(len(fds) * 4))
	data := oob[unix.CmsgLen(0):]
	for i, fd := range fds {
		*(*int32)(unsafe.Pointer(&data[4*i])) = int32(fd)
	}
	return oob
}

// sendmsg is sendmsg(2) with one iovec and optional control data, with
// MSG_NOSIGNAL so a closed peer yields EPIPE rather than SIGPIPE.
func sendmsg(fd int, b, oob []byte) error {
	var iov unix.Iovec
	var msg unix.Msghdr
	var dummy [1]byte
	if len(b) > 0 {
		iov.Base = &b[0]
	} else {
		iov.Base = &dummy[0]
	}
	iov.SetLen(len(b))
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	_, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL)
	if e != 0 {
		return e
	}
	return nil
}

// recvmsg is recvmsg(2) with one iovec, MSG_CMSG_CLOEXEC always set.
func recvmsg(fd int, b, oob []byte) (n, oobn, flags int, err error) {
	var iov unix.Iovec
	var msg unix.Msghdr
	var dummy [1]byte
	if len(b) > 0 {
		iov.Base = &b[0]
	} else {
		iov.Base = &dummy[0]
	}
	iov.SetLen(len(b))
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_CMSG_CLOEXEC)
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// recvmsg2 is recvmsg with two iovecs: b1, then b2.
func recvmsg2(fd int, b1, b2, oob []byte) (n, oobn, flags int, err error) {
	if len(b2) == 0 {
		return recvmsg(fd, b1, oob)
	}
	var iov [2]unix.Iovec
	var msg unix.Msghdr
	var dummy [1]byte
	if len(b1) > 0 {
		iov[0].Base = &b1[0]
	} else {
		iov[0].Base = &dummy[0]
	}
	iov[0].SetLen(len(b1))
	iov[1].Base = &b2[0]
	iov[1].SetLen(len(b2))
	msg.Iov = &iov[0]
	msg.Iovlen = 2
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_CMSG_CLOEXEC)
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// spillTail is the part of a spill buffer past the small buffer's length.
func spillTail(big []byte, small int) []byte {
	if len(big) <= small {
		return nil
	}
	return big[small:]
}

// RecvmsgSpill is Recvmsg with Conn.RecvSpill's buffers: the message goes
// into b and, past len(b), into big[len(b):]; msg is b[:n] or, for a longer
// message, big[:n] (b's part copied there). big is the caller's and is
// never retained. Failures are Recvmsg's.
func RecvmsgSpill(fd int, b, big, oob []byte, fds []int) (msg []byte, spilled bool, fdsOut []int, flags int, err error) {
	n, oobn, flags, err := recvmsg2(fd, b, spillTail(big, len(b)), oob)
	if err != nil {
		return nil, false, fds[:0], 0, os.NewSyscallError("recvmsg", err)
	}
	fdsOut, err = ParseRights(oob[:oobn], fds, flags)
	if err != nil || n <= len(b) {
		return b[:min(n, len(b))], false, fdsOut, flags, err
	}
	copy(big, b)
	return big[:n], true, fdsOut, flags, nil
}

// Sendmsg sends b as one message on the socket fd with fds attached as
// SCM_RIGHTS (none if fds is empty). The caller keeps ownership of fds: the
// kernel duplicates them into the message. It returns ErrTooManyFDs for more
// than MaxSendFDs fds and an *os.SyscallError("sendmsg") otherwise; it does
// not allocate for up to 16 fds.
func Sendmsg(fd int, b []byte, fds []int) error {
	if len(fds) > MaxSendFDs {
		return ErrTooManyFDs
	}
	var stack [sizeofCmsghdr + 16*4]byte
	var oob []byte
	if len(fds) > 0 {
		if n := OOBSize(len(fds)); n <= len(stack) {
			oob = putRights(stack[:n], fds)
		} else {
			oob = putRights(make([]byte, n), fds)
		}
	}
	if err := sendmsg(fd, b, oob); err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	return nil
}

// Recvmsg receives one message from the socket fd into b, with control data
// into oob (size it with OOBSize), always with MSG_CMSG_CLOEXEC. Received fds
// are appended to fds[:0] and returned as fdsOut; cap(fds) is the most a
// message may carry. The caller owns the fds in fdsOut.
//
// On ErrCtrunc, ErrTrunc, ErrTooManyFDs and ErrBadControl every fd the
// message carried has been closed and fdsOut is empty, but n and flags
// describe the message. A zero-length read with no error is end of stream
// (for SOCK_SEQPACKET: the peer closed, or sent an empty message). System
// call failures are *os.SyscallError("recvmsg"). Recvmsg does not allocate.
func Recvmsg(fd int, b, oob []byte, fds []int) (n int, fdsOut []int, flags int, err error) {
	n, oobn, flags, err := recvmsg(fd, b, oob)
	if err != nil {
		return 0, fds[:0], 0, os.NewSyscallError("recvmsg", err)
	}
	fdsOut, err = ParseRights(oob[:oobn], fds, flags)
	return n, fdsOut, flags, err
}

// ParseRights extracts the fds of every SCM_RIGHTS control message in oob
// (as returned by recvmsg) into fds[:0], closing them all and failing if
// flags has MSG_CTRUNC (ErrCtrunc) or MSG_TRUNC (ErrTrunc), if they number
// more than cap(fds) (ErrTooManyFDs), or if oob is malformed
// (ErrBadControl). Control messages of other types are ignored. It does not
// allocate; on success the caller owns the returned fds.
func ParseRights(oob []byte, fds []int, flags int) ([]int, error) {
	fds = fds[:0]
	var failure error
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		failure = ErrCtrunc
	case flags&unix.MSG_TRUNC != 0:
		failure = ErrTrunc
	}
	for len(oob) >= sizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			if failure == nil {
				failure = ErrBadControl
			}
			break
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			data := oob[unix.CmsgLen(0):l]
			for i := 0; i+4 <= len(data); i += 4 {
				fd := int(*(*int32)(unsafe.Pointer(&data[i])))
				if failure == nil && len(fds) == cap(fds) {
					failure = ErrTooManyFDs
				}
				if failure != nil {
					unix.Close(fd)
					continue
				}
				fds = append(fds, fd)
			}
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	if failure != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fds[:0], failure
	}
	return fds, nil
}

// CloseAll closes every fd in fds, ignoring errors. It is the cleanup for a
// received fd slice the caller decided not to keep.
func CloseAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// PeerCred returns the credentials of the peer of the Unix socket fd as of
// connect(2) or socketpair(2) (SO_PEERCRED). Failure is an
// *os.SyscallError("getsockopt").
func PeerCred(fd int) (unix.Ucred, error) {
	var u unix.Ucred
	l := uint32(unix.SizeofUcred)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERCRED,
		uintptr(unsafe.Pointer(&u)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return u, os.NewSyscallError("getsockopt", e)
	}
	return u, nil
}

// PeerPidfd returns a new pidfd (O_CLOEXEC, owned by the caller) for the
// peer of the Unix socket fd. It uses SO_PEERPIDFD (Linux 6.5+), which
// names exactly the process that connected. Where that option is missing it
// falls back to pidfd_open(2) on SO_PEERCRED's pid, which is racy: the pid
// may have been reused if the peer already exited. It returns ErrNoPidfd if
// neither works and *os.SyscallError for other failures.
func PeerPidfd(fd int) (int, error) {
	var pidfd int32 = -1
	l := uint32(4)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD,
		uintptr(unsafe.Pointer(&pidfd)), uintptr(unsafe.Pointer(&l)), 0)
	if e == 0 {
		return int(pidfd), nil
	}
	if e != unix.ENOPROTOOPT && e != unix.EINVAL {
		return -1, os.NewSyscallError("getsockopt", e)
	}
	u, err := PeerCred(fd)
	if err != nil {
		return -1, err
	}
	pfd, err := unix.PidfdOpen(int(u.Pid), 0)
	if err != nil {
		if err == unix.ENOSYS {
			return -1, ErrNoPidfd
		}
		return -1, os.NewSyscallError("pidfd_open", err)
	}
	unix.CloseOnExec(pfd)
	return pfd, nil
}

// Cookie returns the socket cookie of fd (SO_COOKIE): a 64-bit number the
// kernel assigns to a socket on first query and never reuses while the
// system runs. Query it before sending the socket away if you need to
// recognise it later. Failure is an *os.SyscallError("getsockopt").
func Cookie(fd int) (uint64, error) {
	var c uint64
	l := uint32(8)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_COOKIE,
		uintptr(unsafe.Pointer(&c)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, os.NewSyscallError("getsockopt", e)
	}
	return c, nil
}

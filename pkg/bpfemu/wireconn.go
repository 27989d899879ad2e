package bpfemu

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/sealed"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// rawReply is the daemon's answer to one request.
type rawReply struct {
	Errno unix.Errno
	Ret   int64
	Data  []byte // reply data: a prefix of the caller's out buffer when it fits, else new
	FDs   []int  // descriptors of the reply (not the data memfd), the caller's to close
}

// wireConn is the supervisor's connection to bpfd: the wire protocol of
// docs/protocol.md spoken synchronously on a blocking socket. One request
// is in flight at a time (mu), which is all one connection gives anyway:
// the daemon executes a connection's requests in order.
//
// Why not pkg/client: the supervisor answers a notification on a thread
// that blocks in the kernel twice (for the notification and for bpfd's
// reply); waiting for the reply in the same blocking recvmsg lets the
// kernel wake that thread directly, where a netpoller wait costs a
// scheduler hand-off on every call. The emulated round trip is the
// product's hot path (docs/emulation.md, benchmarks).
//
// Concurrency: do and close are safe for concurrent use.
type wireConn struct {
	mu     sync.Mutex
	fd     int    // guarded by mu; -1 once closed
	msg    []byte // request encoding, guarded by mu
	rbuf   []byte // reply datagram, guarded by mu
	oob    []byte // guarded by mu
	rfds   []int  // guarded by mu
	broken error  // guarded by mu: why the connection is unusable
}

// errConnLost: the connection to bpfd broke; every later request fails.
var errConnLost = fmt.Errorf("bpfemu: connection to bpfd lost: %w", unix.EIO)

// dialWire connects to the daemon at path and checks its protocol version.
func dialWire(path string) (*wireConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	w := &wireConn{fd: fd, msg: make([]byte, 0, 256), rbuf: make([]byte, wire.MaxMessage),
		oob: make([]byte, scmrights.OOBSize(wire.MaxFDs)), rfds: make([]int, 0, wire.MaxFDs)}
	var ab [wire.HelloAttrSize]byte
	r, err := w.do(wire.CmdHello, (&wire.HelloAttr{Version: wire.Version}).Append(ab[:0]), nil, nil)
	if err != nil {
		w.close()
		return nil, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 || r.Ret != wire.Version {
		w.close()
		return nil, fmt.Errorf("bpfemu: bpfd at %s speaks protocol %d (errno %d), not %d: %w",
			path, r.Ret, r.Errno, wire.Version, unix.EPROTO)
	}
	return w, nil
}

func (w *wireConn) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
	if w.broken == nil {
		w.broken = errConnLost
	}
}

// do sends cmd with attr, fds (the caller keeps them) and the
// concatenation of data (in a sealed memfd when it does not fit one
// message), and returns the reply. The error is a transport failure; the
// daemon's errno is in the reply. Without fds, with data fitting one
// message and a reply fitting out, it does not allocate.
func (w *wireConn) do(cmd wire.Cmd, attr []byte, fds []int, out []byte, data ...[]byte) (rawReply, error) {
	total := 0
	for _, d := range data {
		total += len(d)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return rawReply{}, w.broken
	}
	h := wire.ReqHeader{Cmd: cmd, AttrLen: uint32(len(attr)), DataLen: uint32(total)}
	inline := wire.ReqHeaderSize+len(attr)+total <= wire.MaxMessage
	if !inline {
		if total > wire.MaxMemfdData {
			return rawReply{}, unix.E2BIG
		}
		mfd, err := sealed.Memfd("bpfemu-request", data...)
		if err != nil {
			return rawReply{}, err
		}
		defer unix.Close(mfd)
		h.Flags |= wire.ReqFlagMemfd
		fds = append(fds[:len(fds):len(fds)], mfd)
	}
	w.msg = wire.AppendReqHeader(w.msg[:0], h)
	w.msg = append(w.msg, attr...)
	if inline {
		for _, d := range data {
			w.msg = append(w.msg, d...)
		}
	}
	if err := scmrights.Sendmsg(w.fd, w.msg, fds); err != nil {
		return rawReply{}, w.fail(err)
	}
	var n int
	var rfds []int
	var err error
	for {
		n, rfds, _, err = scmrights.Recvmsg(w.fd, w.rbuf, w.oob, w.rfds[:0])
		if err == nil || !errorsIsEINTR(err) {
			break
		}
	}
	if err != nil || n == 0 {
		scmrights.CloseAll(rfds)
		if err == nil {
			err = unix.ECONNRESET
		}
		return rawReply{}, w.fail(err)
	}
	hdr, payload, perr := wire.ParseReply(w.rbuf[:n])
	if perr != nil || (hdr.Flags&wire.ReplyFlagMemfd != 0 && len(rfds) == 0) {
		scmrights.CloseAll(rfds)
		return rawReply{}, w.fail(perr)
	}
	r := rawReply{Errno: unix.Errno(hdr.Errno), Ret: hdr.Ret}
	if hdr.Flags&wire.ReplyFlagMemfd != 0 {
		mfd := rfds[len(rfds)-1]
		rfds = rfds[:len(rfds)-1]
		buf := out
		if len(buf) < int(hdr.DataLen) {
			buf = make([]byte, hdr.DataLen)
		}
		err := preadFull(mfd, buf[:hdr.DataLen])
		unix.Close(mfd)
		if err != nil {
			scmrights.CloseAll(rfds)
			return rawReply{}, w.fail(err)
		}
		payload = buf[:hdr.DataLen]
	} else if len(payload) <= len(out) {
		payload = out[:copy(out, payload)]
	} else {
		payload = append([]byte(nil), payload...)
	}
	r.Data = payload
	if len(rfds) > 0 {
		r.FDs = append([]int(nil), rfds...)
	}
	return r, nil
}

// fail marks the connection broken (called with mu held).
func (w *wireConn) fail(err error) error {
	if w.broken == nil {
		w.broken = fmt.Errorf("%w: %v", errConnLost, err)
	}
	return w.broken
}

func errorsIsEINTR(err error) bool {
	se, ok := err.(*os.SyscallError)
	return ok && se.Err == unix.EINTR
}

// preadFull fills b from the start of fd.
func preadFull(fd int, b []byte) error {
	off := int64(0)
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return unix.EPROTO
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

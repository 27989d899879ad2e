package scmrights

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Conn sends and receives messages with fds on a socket owned by a Go
// net.Conn (such as *net.UnixConn), waiting in Go's network poller rather
// than blocking a thread. It holds no buffers of its own: the caller
// supplies them, so Send and Recv do not allocate.
//
// Send and Recv may run concurrently with each other; concurrent calls of
// the same method are serialized. Conn does not own the socket: closing the
// net.Conn is the caller's job, after which calls fail.
type Conn struct {
	rc syscall.RawConn

	rmu   sync.Mutex // guards the r* fields
	rfn   func(fd uintptr) bool
	rb    []byte
	roob  []byte
	rn    int
	roobn int
	rflg  int
	rerr  error

	wmu  sync.Mutex // guards the w* fields
	wfn  func(fd uintptr) bool
	wb   []byte
	woob []byte
	werr error
}

// NewConn returns a Conn for c's socket. It fails only if c's SyscallConn
// fails.
func NewConn(c syscall.Conn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	cn := &Conn{rc: rc, woob: make([]byte, OOBSize(MaxSendFDs))}
	cn.rfn = cn.doRead
	cn.wfn = cn.doWrite
	return cn, nil
}

func (c *Conn) doRead(fd uintptr) bool {
	c.rn, c.roobn, c.rflg, c.rerr = recvmsg(int(fd), c.rb, c.roob)
	return c.rerr != unix.EAGAIN
}

func (c *Conn) doWrite(fd uintptr) bool {
	c.werr = sendmsg(int(fd), c.wb, c.woob)
	return c.werr != unix.EAGAIN
}

// Recv is Recvmsg on c's socket: it waits for one message, reads it into b
// and its control data into oob, and returns the fds it carried in fds[:0]
// (at most cap(fds); see Recvmsg for the failures, which close every fd
// received). A closed net.Conn yields the net package's error (errors.Is
// net.ErrClosed).
func (c *Conn) Recv(b, oob []byte, fds []int) (n int, fdsOut []int, flags int, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rb, c.roob = b, oob
	c.rerr = nil
	err = c.rc.Read(c.rfn)
	c.rb, c.roob = nil, nil
	if err != nil {
		return 0, fds[:0], 0, err
	}
	if c.rerr != nil {
		return 0, fds[:0], 0, os.NewSyscallError("recvmsg", c.rerr)
	}
	fdsOut, err = ParseRights(oob[:c.roobn], fds, c.rflg)
	return c.rn, fdsOut, c.rflg, err
}

// Send is Sendmsg on c's socket: it sends b as one message with fds
// attached, waiting while the socket buffer is full. The caller keeps
// ownership of fds. It returns ErrTooManyFDs for more than MaxSendFDs fds,
// *os.SyscallError("sendmsg") for a failed call, or the net package's error
// for a closed net.Conn.
func (c *Conn) Send(b []byte, fds []int) error {
	if len(fds) > MaxSendFDs {
		return ErrTooManyFDs
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wb = b
	if len(fds) > 0 {
		c.woob = putRights(c.woob[:cap(c.woob)], fds)
	} else {
		c.woob = c.woob[:0]
	}
	c.werr = nil
	err := c.rc.Write(c.wfn)
	c.wb = nil
	if err != nil {
		return err
	}
	if c.werr != nil {
		return os.NewSyscallError("sendmsg", c.werr)
	}
	return nil
}

// Control runs f with the socket's fd, as syscall.RawConn.Control. The fd
// is valid only during f.
func (c *Conn) Control(f func(fd int)) error {
	return c.rc.Control(func(fd uintptr) { f(int(fd)) })
}

// PeerCred returns SO_PEERCRED of c's socket (see PeerCred).
func (c *Conn) PeerCred() (unix.Ucred, error) {
	var u unix.Ucred
	var err error
	if cerr := c.Control(func(fd int) { u, err = PeerCred(fd) }); cerr != nil {
		return u, cerr
	}
	return u, err
}

// SendConn sends b with fds attached as one message on c (typically a
// *net.UnixConn). The caller keeps ownership of fds. It is a one-shot
// convenience around NewConn and Conn.Send; it allocates.
func SendConn(c syscall.Conn, b []byte, fds ...int) error {
	cn, err := NewConn(c)
	if err != nil {
		return err
	}
	return cn.Send(b, fds)
}

// RecvConn receives one message into b on c, accepting at most maxFDs fds
// (more: all closed, ErrTooManyFDs). The caller owns the returned fds. It is
// a one-shot convenience around NewConn and Conn.Recv; it allocates. A
// message whose data did not fit b fails with ErrTrunc.
func RecvConn(c syscall.Conn, b []byte, maxFDs int) (n int, fds []int, err error) {
	cn, err := NewConn(c)
	if err != nil {
		return 0, nil, err
	}
	if maxFDs < 0 {
		return 0, nil, errors.New("scmrights: negative maxFDs")
	}
	n, fds, _, err = cn.Recv(b, make([]byte, OOBSize(max(maxFDs, 1))), make([]int, 0, maxFDs))
	return n, fds, err
}

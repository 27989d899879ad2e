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

	rmu    sync.Mutex // guards the r* fields
	rfn    func(fd uintptr) bool
	rsfn   func(fd uintptr) bool // doReadSpill
	rb     []byte
	roob   []byte
	rspill Spill
	rbig   []byte // the spill buffer taken for the current read, or nil
	rn     int
	roobn  int
	rflg   int
	rerr   error

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
	cn.rsfn = cn.doReadSpill
	cn.wfn = cn.doWrite
	return cn, nil
}

func (c *Conn) doRead(fd uintptr) bool {
	c.rn, c.roobn, c.rflg, c.rerr = recvmsg(int(fd), c.rb, c.roob)
	return c.rerr != unix.EAGAIN
}

// doReadSpill is doRead for RecvSpill: the spill buffer is taken only now
// that the socket is readable, and given back unless the message reached
// it.
func (c *Conn) doReadSpill(fd uintptr) bool {
	big := c.rspill.Get()
	c.rn, c.roobn, c.rflg, c.rerr = recvmsg2(int(fd), c.rb, spillTail(big, len(c.rb)), c.roob)
	if c.rerr == nil && c.rn > len(c.rb) {
		c.rbig = big
	} else {
		c.rspill.Put(big)
	}
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

// Spill lends RecvSpill the buffer a message longer than the caller's
// small one continues in. Get must return a buffer at least as long as
// that small one; Put takes back a buffer Get returned.
type Spill interface {
	Get() []byte
	Put([]byte)
}

// RecvSpill is Recv for callers that keep a small buffer per connection
// and lend a big one only to the messages that need it: the message is
// read into b and, past len(b), into the buffer spill.Get returns, from
// its offset len(b) on. Get is called only once the socket is readable
// (never while Recv waits) and the buffer goes back to Put at once unless
// the message reached it. The message is returned as msg: b[:n], or, for
// a longer one, the spill buffer's first n bytes (RecvSpill copies b's
// part there); then spilled is true and the caller owns the spill buffer
// until it gives it back with spill.Put. Failures are Recv's (a message
// longer than the spill buffer: ErrTrunc, nothing spilled).
func (c *Conn) RecvSpill(b []byte, spill Spill, oob []byte, fds []int) (msg []byte, spilled bool, fdsOut []int, flags int, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rb, c.roob, c.rspill = b, oob, spill
	c.rerr = nil
	err = c.rc.Read(c.rsfn)
	big := c.rbig
	c.rb, c.roob, c.rspill, c.rbig = nil, nil, nil, nil
	if err == nil && c.rerr != nil {
		err = os.NewSyscallError("recvmsg", c.rerr)
	}
	if err != nil {
		if big != nil {
			spill.Put(big)
		}
		return nil, false, fds[:0], 0, err
	}
	fdsOut, err = ParseRights(oob[:c.roobn], fds, c.rflg)
	if big == nil {
		return b[:c.rn], false, fdsOut, c.rflg, err
	}
	if err != nil {
		spill.Put(big)
		return b[:len(b)], false, fdsOut, c.rflg, err
	}
	copy(big, b)
	return big[:c.rn], true, fdsOut, c.rflg, nil
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

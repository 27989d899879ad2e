package demux

import (
	"errors"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// conn is one client connection. Everything in it is owned by the
// connection's goroutine, except stopping (set by Shutdown).
type conn struct {
	srv *Server
	reg *registry
	nc  *net.UnixConn
	sc  *scmrights.Conn
	uid uint32
	gid uint32
	pid int32

	ptask *prog.StaticTask // the client as "current" for test runs

	handles  []*handle // index = handle number; 0 is never used
	free     []uint32  // free handle numbers
	nhandles int

	rbuf  []byte // request datagram
	oob   []byte
	fds   []int  // received fds, cap wire.MaxFDs
	wbuf  []byte // reply datagram: header then inline data
	out   []byte // reply data being built (in wbuf or big)
	big   []byte // scratch for data larger than one message
	bigIn bool   // out lives in big
	sfds  [2]int // reply fds
	nsfd  int
	ascr  [wire.MaxAttr]byte // attr zero-extension scratch
	info  wire.ObjInfo
	batch batchScratch
	// inBulk is set while the request runs in the bulk lane (see
	// goBulk); lastPeerCheck is when bulk work last checked that the
	// client is still connected.
	inBulk        bool
	lastPeerCheck time.Time

	stopping chan struct{}
}

func newConn(s *Server, nc *net.UnixConn) (*conn, error) {
	sc, err := scmrights.NewConn(nc)
	if err != nil {
		return nil, err
	}
	c := &conn{srv: s, reg: s.reg, nc: nc, sc: sc,
		handles:  make([]*handle, 1, 16),
		rbuf:     make([]byte, wire.MaxMessage),
		oob:      make([]byte, scmrights.OOBSize(wire.MaxFDs)),
		fds:      make([]int, 0, wire.MaxFDs),
		wbuf:     make([]byte, wire.MaxMessage),
		stopping: make(chan struct{}),
	}
	u, err := sc.PeerCred()
	if err != nil {
		return nil, err
	}
	c.uid, c.gid, c.pid = u.Uid, u.Gid, u.Pid
	return c, nil
}

// stop makes the connection finish: its blocked read returns, it answers
// what is queued and exits. Called with srv.mu held.
func (c *conn) stop() {
	select {
	case <-c.stopping:
	default:
		close(c.stopping)
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// serve runs the connection until the client closes it, it fails, or the
// server stops; then it releases every handle.
func (c *conn) serve() {
	log := c.srv.log
	log.Debug("connection opened", zap.Uint32("uid", c.uid), zap.Int32("pid", c.pid))
	defer func() {
		c.nc.Close()
		for i, h := range c.handles {
			if h != nil {
				c.reg.releaseHandle(h)
				c.handles[i] = nil
			}
		}
		log.Debug("connection closed", zap.Uint32("uid", c.uid), zap.Int32("pid", c.pid))
	}()
	for {
		n, fds, _, err := c.sc.Recv(c.rbuf, c.oob, c.fds)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.drain()
				return
			}
			rerr := recvErr(err)
			if rerr == nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Debug("receive failed", zap.Error(err))
				}
				return
			}
			c.resetReply()
			if !c.send(0, rerr) {
				return
			}
			continue
		}
		if n == 0 && len(fds) == 0 {
			return // end of stream
		}
		if !c.handle(c.rbuf[:n], fds) {
			return
		}
	}
}

// recvErr returns the error to answer a message that could not be
// received whole (its fds already closed), or nil if the connection is
// unusable.
func recvErr(err error) error {
	switch {
	case errors.Is(err, scmrights.ErrTrunc):
		return ErrMsgSize
	case errors.Is(err, scmrights.ErrCtrunc), errors.Is(err, scmrights.ErrTooManyFDs),
		errors.Is(err, scmrights.ErrBadControl):
		return ErrFDs
	}
	return nil
}

// drain answers the requests already queued in the socket at shutdown.
func (c *conn) drain() {
	for {
		var n int
		var fds []int
		var err error
		cerr := c.sc.Control(func(fd int) {
			n, fds, _, err = scmrights.Recvmsg(fd, c.rbuf, c.oob, c.fds)
		})
		if cerr != nil {
			return
		}
		if err != nil {
			rerr := recvErr(err)
			if rerr == nil {
				return // EAGAIN: nothing left, or the socket failed
			}
			c.resetReply()
			if !c.send(0, rerr) {
				return
			}
			continue
		}
		if n == 0 && len(fds) == 0 {
			return
		}
		if !c.handle(c.rbuf[:n], fds) {
			return
		}
	}
}

func (c *conn) resetReply() {
	c.out = c.wbuf[wire.ReplyHeaderSize:wire.ReplyHeaderSize]
	c.bigIn = false
	c.nsfd = 0
}

// handle executes one request and sends its reply; false if the
// connection is broken. Every fd in fds is closed before it returns.
func (c *conn) handle(msg []byte, fds []int) bool {
	t0 := time.Now()
	c.resetReply()
	ret, err := c.exec(msg, fds)
	scmrights.CloseAll(fds)
	ok := c.send(ret, err)
	c.srv.reqs.request(msg, err, time.Since(t0))
	for _, fd := range c.sfds[:c.nsfd] {
		unix.Close(fd)
	}
	c.nsfd = 0
	return ok
}

// alloc extends the reply data by n bytes and returns them. Small replies
// stay in the datagram buffer; larger ones move to the scratch buffer (and
// travel in a memfd if they exceed a message).
func (c *conn) alloc(n int) []byte {
	l := len(c.out)
	if !c.bigIn && l+n <= cap(c.out) {
		c.out = c.out[:l+n]
		return c.out[l:]
	}
	if !c.bigIn {
		if cap(c.big) < l+n {
			c.big = make([]byte, 0, l+n)
		}
		c.big = append(c.big[:0], c.out...)
		c.out = c.big
		c.bigIn = true
	}
	if cap(c.out) < l+n {
		nb := make([]byte, l, max(l+n, 2*cap(c.out)))
		copy(nb, c.out)
		c.out = nb
		c.big = nb
	}
	c.out = c.out[:l+n]
	return c.out[l:]
}

// addFD attaches fd (owned by the connection until the reply is sent) to
// the reply.
func (c *conn) addFD(fd int) { c.sfds[c.nsfd] = fd; c.nsfd++ }

// send sends the reply with err's errno; false if the connection broke.
func (c *conn) send(ret int64, err error) bool {
	h := wire.ReplyHeader{Ret: ret}
	if err != nil {
		e := errnoOf(err)
		h.Errno = uint32(e)
		if e == unix.EIO {
			c.srv.log.Warn("request failed", zap.Error(err), zap.Uint32("uid", c.uid))
		}
	}
	msg := c.wbuf[:wire.ReplyHeaderSize]
	data := c.out
	if c.bigIn {
		if len(data) <= len(c.wbuf)-wire.ReplyHeaderSize {
			msg = append(msg, data...)
			h.DataLen = uint32(len(data))
		} else {
			mfd, merr := sealedMemfd(data)
			if merr != nil {
				c.srv.log.Warn("reply memfd failed", zap.Error(merr))
				h = wire.ReplyHeader{Errno: uint32(errno.Of(merr, unix.ENOMEM))}
			} else {
				c.addFD(mfd)
				h.Flags |= wire.ReplyFlagMemfd
				h.DataLen = uint32(len(data))
			}
		}
	} else {
		msg = c.wbuf[:wire.ReplyHeaderSize+len(data)]
		h.DataLen = uint32(len(data))
	}
	wire.AppendReplyHeader(c.wbuf[:0], h)
	if serr := c.sc.Send(msg, c.sfds[:c.nsfd]); serr != nil {
		if !errors.Is(serr, unix.EPIPE) && !errors.Is(serr, net.ErrClosed) {
			c.srv.log.Warn("send reply failed", zap.Error(serr), zap.Uint32("uid", c.uid))
		}
		return false
	}
	return true
}

// errnoOf is errno.Of with an allocation-free path for the sentinels that
// element operations return (errors.As would allocate).
func errnoOf(err error) unix.Errno {
	switch e := err.(type) {
	case *errno.Error:
		return e.Errno()
	case unix.Errno:
		return e
	}
	return errno.Of(err, unix.EIO)
}

// sealedMemfd returns a new memfd holding data, sealed against any change.
// The caller owns it.
func sealedMemfd(data []byte) (int, error) {
	fd, err := unix.MemfdCreate("bpfd-reply", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	for off := 0; off < len(data); {
		n, err := unix.Pwrite(fd, data[off:], int64(off))
		if err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("pwrite", err)
		}
		off += n
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

// SealsRequired are the seals a request memfd must carry: its content and
// size can no longer change once the daemon reads it.
const SealsRequired = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW

// mapMemfd checks that fd is a memfd sealed with SealsRequired holding at
// least n bytes and maps its first n bytes read-only. The caller unmaps.
func mapMemfd(fd int, n uint32) ([]byte, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&SealsRequired != SealsRequired {
		return nil, ErrMemfd
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size < int64(n) {
		return nil, ErrMemfd
	}
	if n == 0 {
		return nil, nil
	}
	b, err := unix.Mmap(fd, 0, int(n), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// newHandleSlot stores h in a free slot and returns its number.
func (c *conn) addHandle(h *handle) uint32 {
	c.nhandles++
	if n := len(c.free); n > 0 {
		id := c.free[n-1]
		c.free = c.free[:n-1]
		c.handles[id] = h
		return id
	}
	c.handles = append(c.handles, h)
	return uint32(len(c.handles) - 1)
}

// handle returns the live handle id, or ErrBadHandle.
func (c *conn) lookup(id uint32) (*handle, error) {
	if id == 0 || uint64(id) >= uint64(len(c.handles)) {
		return nil, ErrBadHandle
	}
	h := c.handles[id]
	if h == nil || h.dead.Load() {
		return nil, ErrBadHandle
	}
	return h, nil
}

// removeHandle frees slot id (which must hold a handle) and drops the
// handle.
func (c *conn) removeHandle(id uint32) {
	h := c.handles[id]
	c.handles[id] = nil
	c.free = append(c.free, id)
	c.nhandles--
	c.reg.releaseHandle(h)
}

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
//
// Memory: a connection keeps only small buffers (smallBuf each for the
// request and the reply); a request or reply that does not fit borrows a
// big buffer from the server's pool for the request's duration, and a
// reply larger than a message is built directly in the memfd that carries
// it. Everything is charged to the connection's uid (memory.go): the
// connection's fixed cost while it lives, borrowed buffers and mapped
// request memfds while the request runs, reply memfds until their last
// copy anywhere is closed.
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
	// handleSlots is how many handle slots are charged to the uid (in
	// handleChunk steps, as the table grows).
	handleSlots int

	rbuf []byte // small request buffer (smallBuf); long requests spill into a pooled big buffer
	oob  []byte
	fds  []int // received fds, cap wire.MaxFDs
	// spilled is the big buffer the current request was received into, or
	// nil.
	spilled []byte
	wbuf    []byte // small reply datagram: header then inline data (smallBuf)
	out     []byte // reply data being built: in wbuf, in rbig after its header, or in the reply memfd's mapping
	rep     replyBuf
	// allocErr is why the reply could not grow (memory quota or cap): the
	// request then fails with it, whatever it returns.
	allocErr error
	// req is the memory charged for the request in progress (borrowed
	// buffers, mapped request memfd, verifier state, test-run copies);
	// released when its reply is sent.
	req  uint64
	sfds [4]int // reply fds (a descriptor or up to 3 storage fds, and a reply memfd)
	nsfd int
	ascr [wire.MaxAttr]byte // attr zero-extension scratch
	info wire.ObjInfo
	// batch is the reusable batch state.
	batch batchScratch
	// inBulk is set while the request runs in the bulk lane (see
	// goBulk); lastPeerCheck is when bulk work last checked that the
	// client is still connected.
	inBulk        bool
	lastPeerCheck time.Time

	stopping chan struct{}
	// deferredErr is the outcome of this connection's CmdDaemonUpgrade
	// when it failed before the handoff began. Guarded by Server.ho.mu.
	deferredErr error
}

// replyBuf is where a reply too large for wbuf is built: a borrowed big
// buffer (inline replies up to a message), or a memfd mapped writable
// (larger ones, which travel as that memfd).
type replyBuf struct {
	big     []byte // borrowed from the server's pool (whole buffer), or nil
	mfd     int    // the reply memfd, or -1
	mapping []byte // its writable mapping (len = its size)
	mcharge uint64 // bytes of the memfd charged to the uid
}

func newConn(s *Server, nc *net.UnixConn) (*conn, error) {
	sc, err := scmrights.NewConn(nc)
	if err != nil {
		return nil, err
	}
	c := &conn{srv: s, reg: s.reg, nc: nc, sc: sc,
		handles:  make([]*handle, 1, 16),
		rbuf:     make([]byte, smallBuf),
		oob:      make([]byte, scmrights.OOBSize(wire.MaxFDs)),
		fds:      make([]int, 0, wire.MaxFDs),
		wbuf:     make([]byte, smallBuf),
		rep:      replyBuf{mfd: -1},
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
// server stops; then it releases every handle and what the handle table
// was charged.
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
		c.reg.uncharge(c.uid, uint64(c.handleSlots)*handleCost)
		c.handleSlots = 0
		log.Debug("connection closed", zap.Uint32("uid", c.uid), zap.Int32("pid", c.pid))
	}()
	for {
		msg, spilled, fds, _, err := c.sc.RecvSpill(c.rbuf, &c.srv.bigBufs, c.oob, c.fds)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if c.srv.park(c) {
					continue // an upgrade that did not happen
				}
				c.drain()
				c.goodbye()
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
		if len(msg) == 0 && len(fds) == 0 {
			return // end of stream
		}
		if spilled {
			c.spilled = msg[:cap(msg)]
		}
		if !c.handle(msg, fds) {
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
	big := c.srv.bigBufs.Get()
	defer c.srv.bigBufs.Put(big)
	for {
		var msg []byte
		var fds []int
		var err error
		cerr := c.sc.Control(func(fd int) {
			msg, _, fds, _, err = scmrights.RecvmsgSpill(fd, c.rbuf, big, c.oob, c.fds)
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
		if len(msg) == 0 && len(fds) == 0 {
			return
		}
		if !c.handle(msg, fds) {
			return
		}
	}
}

// resetReply discards the reply being built (its data, borrowed buffer or
// memfd, fds, and a failed allocation), keeping the request's charges.
func (c *conn) resetReply() {
	c.releaseReplyBuf()
	c.out = c.wbuf[wire.ReplyHeaderSize:wire.ReplyHeaderSize]
	c.allocErr = nil
	c.nsfd = 0
}

// handle executes one request and sends its reply; false if the
// connection is broken. Every fd in fds is closed before it returns, and
// everything the request was charged is released.
func (c *conn) handle(msg []byte, fds []int) bool {
	t0 := time.Now()
	c.resetReply()
	var ret int64
	var err error
	if c.spilled != nil {
		// The request borrowed a big buffer to arrive in.
		err = c.chargeReq(bigBuf)
	}
	if err == nil {
		ret, err = c.exec(msg, fds)
	}
	scmrights.CloseAll(fds)
	if c.spilled != nil {
		c.srv.bigBufs.Put(c.spilled)
		c.spilled = nil
	}
	if err == errDeferredReply {
		c.releaseReplyBuf()
		c.endRequest()
		c.srv.waitDeferred(c)
		return true
	}
	if c.allocErr != nil {
		c.releaseReplyBuf()
		c.out = c.wbuf[wire.ReplyHeaderSize:wire.ReplyHeaderSize]
		ret, err = 0, c.allocErr
		for _, fd := range c.sfds[:c.nsfd] {
			unix.Close(fd)
		}
		c.nsfd = 0
	}
	ok := c.send(ret, err)
	c.srv.reqs.request(msg, err, time.Since(t0))
	for _, fd := range c.sfds[:c.nsfd] {
		unix.Close(fd)
	}
	c.nsfd = 0
	c.releaseReplyBuf()
	c.endRequest()
	return ok
}

// alloc extends the reply data by n bytes and returns them. Small replies
// stay in the connection's buffer; larger ones move to a borrowed big
// buffer, and replies larger than a message are built in the memfd that
// will carry them; each move is charged to the uid. If the uid's memory
// quota or the daemon's cap does not allow it, alloc returns nil and the
// request fails with that error (ENOMEM) whatever it returns: callers that
// index the result must check for nil; copy into nil is harmless.
func (c *conn) alloc(n int) []byte {
	if c.allocErr != nil {
		return nil
	}
	l := len(c.out)
	if l+n <= cap(c.out) {
		c.out = c.out[:l+n]
		return c.out[l:]
	}
	need := l + n
	var err error
	if need <= bigBuf-wire.ReplyHeaderSize && c.rep.big == nil {
		err = c.borrowReplyBuf()
	} else {
		err = c.growReplyMemfd(need)
	}
	if err != nil {
		c.allocErr = err
		return nil
	}
	c.out = c.out[:need]
	return c.out[l:]
}

// borrowReplyBuf moves the reply data into a borrowed big buffer (charged
// to the uid for the request).
func (c *conn) borrowReplyBuf() error {
	if err := c.chargeReq(bigBuf); err != nil {
		return err
	}
	b := c.srv.bigBufs.Get()
	l := copy(b[wire.ReplyHeaderSize:], c.out)
	c.rep.big = b
	c.out = b[wire.ReplyHeaderSize : wire.ReplyHeaderSize+l]
	return nil
}

// growReplyMemfd makes the reply's memfd (or grows it) to hold at least
// need bytes, mapped writable, and moves the reply data there. Its pages
// are charged to the uid until the memfd is freed everywhere.
func (c *conn) growReplyMemfd(need int) error {
	size := int(pageRound(uint64(max(need, 2*len(c.rep.mapping)))))
	if size > wire.MaxMemfdData {
		size = int(pageRound(uint64(need)))
		if need > wire.MaxMemfdData {
			return ErrTooLarge
		}
	}
	add := uint64(size) - c.rep.mcharge
	if err := c.reg.charge(c.uid, add); err != nil {
		return err
	}
	c.rep.mcharge += add
	l := len(c.out)
	if c.rep.mfd < 0 {
		fd, err := unix.MemfdCreate("bpfd-reply", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return errno.Of(os.NewSyscallError("memfd_create", err), unix.ENOMEM)
		}
		c.rep.mfd = fd
	}
	if err := unix.Ftruncate(c.rep.mfd, int64(size)); err != nil {
		return errno.Of(os.NewSyscallError("ftruncate", err), unix.ENOMEM)
	}
	var m []byte
	var err error
	if c.rep.mapping == nil {
		m, err = unix.Mmap(c.rep.mfd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err == nil {
			copy(m, c.out)
		}
	} else {
		m, err = unix.Mremap(c.rep.mapping, size, unix.MREMAP_MAYMOVE)
	}
	if err != nil {
		return errno.Of(os.NewSyscallError("mmap", err), unix.ENOMEM)
	}
	c.rep.mapping = m
	if c.rep.big != nil {
		c.srv.bigBufs.Put(c.rep.big)
		c.rep.big = nil
	}
	c.out = m[:l]
	return nil
}

// releaseReplyBuf gives back the borrowed reply buffer and drops the
// reply memfd if it was not sent (its charge with it).
func (c *conn) releaseReplyBuf() {
	if c.rep.big != nil {
		c.srv.bigBufs.Put(c.rep.big)
		c.rep.big = nil
	}
	if c.rep.mapping != nil {
		unix.Munmap(c.rep.mapping)
		c.rep.mapping = nil
	}
	if c.rep.mfd >= 0 {
		unix.Close(c.rep.mfd)
		c.rep.mfd = -1
	}
	if c.rep.mcharge > 0 {
		c.reg.uncharge(c.uid, c.rep.mcharge)
		c.rep.mcharge = 0
	}
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
	data := c.out
	var msg []byte
	switch {
	case c.rep.mapping != nil:
		mfd, merr := c.sealReply(len(data))
		if merr != nil {
			c.srv.log.Warn("reply memfd failed", zap.Error(merr))
			h = wire.ReplyHeader{Errno: uint32(errno.Of(merr, unix.ENOMEM))}
		} else {
			c.addFD(mfd)
			h.Flags |= wire.ReplyFlagMemfd
			h.DataLen = uint32(len(data))
		}
		msg = c.wbuf[:wire.ReplyHeaderSize]
	case c.rep.big != nil:
		msg = c.rep.big[:wire.ReplyHeaderSize+len(data)]
		h.DataLen = uint32(len(data))
	default:
		msg = c.wbuf[:wire.ReplyHeaderSize+len(data)]
		h.DataLen = uint32(len(data))
	}
	wire.AppendReplyHeader(msg[:0], h)
	if serr := c.sc.Send(msg, c.sfds[:c.nsfd]); serr != nil {
		if !errors.Is(serr, unix.EPIPE) && !errors.Is(serr, net.ErrClosed) {
			c.srv.log.Warn("send reply failed", zap.Error(serr), zap.Uint32("uid", c.uid))
		}
		return false
	}
	return true
}

// sealReply finishes the reply memfd holding n bytes: unmapped, cut to n,
// sealed against any change, and handed to the server's tracker, which
// keeps its pages charged to the uid until the last copy anywhere is
// closed. It returns the memfd, which the connection closes after sending.
func (c *conn) sealReply(n int) (int, error) {
	unix.Munmap(c.rep.mapping)
	c.rep.mapping = nil
	fd := c.rep.mfd
	if err := unix.Ftruncate(fd, int64(n)); err != nil {
		return -1, os.NewSyscallError("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	// The pages beyond n went with the truncation.
	keep := pageRound(uint64(n))
	if keep < c.rep.mcharge {
		c.reg.uncharge(c.uid, c.rep.mcharge-keep)
		c.rep.mcharge = keep
	}
	if err := c.srv.memfds.track(fd, c.uid, c.rep.mcharge); err != nil {
		return -1, err
	}
	// Charge and fd now belong to the tracker and the reply.
	c.rep.mcharge = 0
	c.rep.mfd = -1
	return fd, nil
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

// SealsRequired are the seals a request memfd must carry: its content and
// size can no longer change once the daemon reads it.
const SealsRequired = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW

// mapMemfd checks that fd is a memfd sealed with SealsRequired holding at
// least n bytes and maps its first n bytes read-only, charged to the
// connection's uid for the request. The caller unmaps.
func (c *conn) mapMemfd(fd int, n uint32) ([]byte, error) {
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
	if err := c.chargeReq(pageRound(uint64(n))); err != nil {
		return nil, err
	}
	b, err := unix.Mmap(fd, 0, int(n), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// addHandle stores h in a free slot and returns its number. A table
// growing past what is charged charges another handleChunk slots to the
// uid (without failing: the table is bounded by MaxHandles, and the next
// request that needs memory sees the charge).
func (c *conn) addHandle(h *handle) uint32 {
	c.nhandles++
	if c.nhandles > c.handleSlots {
		c.reg.forceCharge(c.uid, handleChunk*handleCost)
		c.handleSlots += handleChunk
	}
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

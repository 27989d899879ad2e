package client

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/defaults"
	"github.com/bpfd-project/bpfd/internal/sealed"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

var _ io.Closer = (*Conn)(nil)

// SocketEnv is the environment variable that overrides the default socket
// path, for Dial("") as for the daemon.
const SocketEnv = defaults.SocketEnv

// DefaultSocket returns the first socket path Dial("") tries: $BPFD_SOCKET
// if set; otherwise /run/bpfd/bpfd.sock for root and
// $XDG_RUNTIME_DIR/bpfd/bpfd.sock for other users (with XDG_RUNTIME_DIR
// unset, /run/user/UID/bpfd/bpfd.sock if that directory is the user's,
// as bpfd decides; else the system socket). DefaultSockets lists every
// path Dial("") tries.
func DefaultSocket() string { return DefaultSockets()[0] }

// DefaultSockets returns the socket paths Dial("") tries, in order:
// $BPFD_SOCKET alone if set; for root /run/bpfd/bpfd.sock; for other users
// the socket of their own bpfd (in their runtime directory, when they have
// one), then the system socket /run/bpfd/bpfd.sock.
func DefaultSockets() []string { return defaults.ClientSockets(os.Geteuid(), os.Getenv) }

// Conn is a connection to bpfd: one SOCK_SEQPACKET Unix socket on which
// this process names objects by handles local to the connection.
//
// A Conn is safe for concurrent use. Requests from concurrent goroutines are
// pipelined: each is sent as soon as the socket accepts it, without waiting
// for earlier replies, and the daemon answers in order. Whichever waiting
// goroutine holds the read side reads replies and hands each to the
// goroutine that sent the matching request, so no extra goroutine runs.
//
// Closing a Conn releases every handle the daemon holds for it; Maps made
// on it keep their descriptors (close them with Map.Close) but their
// operations fail with ErrClosed.
type Conn struct {
	uc *net.UnixConn
	sc *scmrights.Conn

	// sendMu serialises sending a request with queueing its waiter, so
	// queue order is wire order. It also guards Map.closed.
	sendMu sync.Mutex

	qMu   sync.Mutex
	queue []*waiter // guarded by qMu: sent requests awaiting replies, FIFO
	qHead int       // guarded by qMu

	// readMu is held by the goroutine reading replies (see wait).
	readMu sync.Mutex
	rbuf   []byte // guarded by readMu
	roob   []byte // guarded by readMu
	rfds   []int  // guarded by readMu

	// byFD maps the descriptors of this connection's open Maps and
	// Programs to them, so that instructions naming a descriptor can be
	// sent with its handle.
	byFD sync.Map

	closed  atomic.Bool
	down    atomic.Bool // set by fail: the connection is unusable
	sent    uint64      // requests sent, guarded by sendMu (tests count round trips)
	errMu   sync.Mutex
	err     error // guarded by errMu: why the connection is unusable
	version string
	path    string // the socket dialed

	// rc reconnects after a daemon crash (reconnect.go). uc and sc are
	// replaced by a reconnection, with sendMu, readMu and rc.mu held.
	rc reconnector
}

// connError is the error operations return once the connection to the
// daemon is lost. It matches ErrClosed (and so EBADF) with errors.Is and
// unwraps to the cause.
type connError struct{ cause error }

func (e *connError) Error() string { return "bpfd: connection to daemon lost: " + e.cause.Error() }

func (e *connError) Is(target error) bool { return target == ErrClosed || target == unix.EBADF }

func (e *connError) Unwrap() error { return e.cause }

// Dial connects to the daemon listening on the SOCK_SEQPACKET socket at
// path and checks that it speaks this protocol version. With path "" it
// tries DefaultSockets in order and connects to the first that answers.
// The returned Conn must be closed. It fails with a *DialError (naming
// every path tried, matching the connect errno with errors.Is) when no
// socket can be reached, and with ErrNotSupported if the daemon speaks
// another protocol version.
func Dial(path string) (*Conn, error) {
	paths := []string{path}
	if path == "" {
		paths = DefaultSockets()
	}
	var de DialError
	for _, p := range paths {
		uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: p, Net: "unixpacket"})
		if err != nil {
			de.Tried = append(de.Tried, DialAttempt{Path: p, Err: err})
			continue
		}
		return dialed(uc, p)
	}
	return nil, &de
}

// dialed completes Dial on uc, connected to path.
func dialed(uc *net.UnixConn, path string) (*Conn, error) {
	sc, err := scmrights.NewConn(uc)
	if err != nil {
		uc.Close()
		return nil, err
	}
	c := &Conn{
		uc:    uc,
		sc:    sc,
		queue: make([]*waiter, 0, 64),
		rbuf:  make([]byte, wire.MaxMessage),
		roob:  make([]byte, scmrights.OOBSize(wire.MaxFDs)),
		rfds:  make([]int, 0, wire.MaxFDs),
		path:  path,
	}
	if err := c.hello(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) hello() error {
	w := getWaiter()
	defer putWaiter(w)
	var ab [wire.HelloAttrSize]byte
	attr := (&wire.HelloAttr{Version: wire.Version}).Append(ab[:0])
	if err := c.do(w, nil, wire.CmdHello, attr, nil); err != nil {
		return err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return err
	}
	if w.hdr.Ret != wire.Version {
		return ErrNotSupported
	}
	data, err := w.payload()
	if err != nil {
		return err
	}
	c.version = string(data)
	return nil
}

// ServerVersion returns the version string the daemon reported when the
// connection was made.
func (c *Conn) ServerVersion() string { return c.version }

// Close closes the connection. The daemon then drops every handle of this
// connection; requests still waiting for replies fail with ErrClosed. Maps
// made on c stay open until closed. A second Close returns ErrClosed.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return ErrClosed
	}
	c.fail(ErrClosed)
	return nil
}

// failed returns the error that made c unusable, or nil.
func (c *Conn) failed() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// fail makes c unusable with err (the first error wins) and closes the
// socket, so that a goroutine reading replies wakes up and fails every
// request still queued.
func (c *Conn) fail(err error) {
	c.errMu.Lock()
	if c.err == nil {
		if err != ErrClosed {
			err = &connError{cause: err}
		}
		c.err = err
	}
	c.errMu.Unlock()
	c.down.Store(true)
	c.currentConn().Close()
}

// waiter is one request in flight: the request encoding and, once done,
// the reply. Waiters are pooled; a waiter belongs to the goroutine that got
// it from the pool, except that the goroutine reading replies fills in the
// reply fields and then sets done (which orders those writes before the
// owner's reads).
type waiter struct {
	msg []byte // the encoded request

	done atomic.Bool   // set, after the fields below, by whoever delivers the reply
	wake chan struct{} // capacity 1: reply delivered, or take the read side
	err  error
	hdr  wire.ReplyHeader
	out  []byte // where the reply data goes when it fits
	data []byte // the reply data: out[:n] or buf
	buf  []byte
	fds  [wire.MaxFDs]int
	nfd  int
}

var waiterPool = sync.Pool{New: func() any {
	return &waiter{msg: make([]byte, 0, 256), wake: make(chan struct{}, 1)}
}}

const maxPooledBuf = 4096

func getWaiter() *waiter { return waiterPool.Get().(*waiter) }

func putWaiter(w *waiter) {
	w.done.Store(false)
	w.err, w.hdr, w.out, w.data, w.nfd = nil, wire.ReplyHeader{}, nil, nil, 0
	select {
	case <-w.wake: // a stale wake-up
	default:
	}
	if cap(w.msg) > maxPooledBuf {
		w.msg = make([]byte, 0, 256)
	}
	if cap(w.buf) > maxPooledBuf {
		w.buf = nil
	}
	waiterPool.Put(w)
}

// signal wakes w's goroutine without blocking.
func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// complete delivers a transport error as w's outcome.
func (w *waiter) complete(err error) {
	w.err = err
	w.done.Store(true)
	w.signal()
}

// closeFDs closes every fd of the reply that the caller did not take.
func (w *waiter) closeFDs() {
	for _, fd := range w.fds[:w.nfd] {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	w.nfd = 0
}

// takeFD returns the reply's i'th fd, which the caller then owns, or -1.
func (w *waiter) takeFD(i int) int {
	if i >= w.nfd {
		return -1
	}
	fd := w.fds[i]
	w.fds[i] = -1
	return fd
}

// memfd returns the reply's data memfd (still owned by w), or -1 when the
// data is inline or missing.
func (w *waiter) memfd() int {
	if w.hdr.Flags&wire.ReplyFlagMemfd == 0 || w.nfd == 0 {
		return -1
	}
	return w.fds[w.nfd-1]
}

// payload returns the reply's data, reading it from the memfd into w.buf if
// it came in one.
func (w *waiter) payload() ([]byte, error) {
	if w.hdr.Flags&wire.ReplyFlagMemfd == 0 {
		return w.data, nil
	}
	fd := w.memfd()
	if fd < 0 {
		return nil, errProtocol
	}
	n := int(w.hdr.DataLen)
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	w.buf = w.buf[:n]
	if err := preadFull(fd, w.buf, 0); err != nil {
		return nil, err
	}
	return w.buf, nil
}

// do sends the request cmd|attr|data (with fds attached; the caller keeps
// them) on behalf of m (nil for none) and waits for its reply, which it
// leaves in w. Data that does not fit one message travels in a sealed
// memfd. The error is a transport or encoding failure; the daemon's errno
// is in w.hdr.Errno.
func (c *Conn) do(w *waiter, m *ref, cmd wire.Cmd, attr []byte, fds []int, data ...[]byte) error {
	total := 0
	for _, d := range data {
		total += len(d)
	}
	h := wire.ReqHeader{Cmd: cmd, AttrLen: uint32(len(attr)), DataLen: uint32(total)}
	memfd := -1
	if wire.ReqHeaderSize+len(attr)+total > wire.MaxMessage {
		if total > wire.MaxMemfdData {
			return ErrTooBig
		}
		var err error
		if memfd, err = sealed.Memfd("bpfd-request", data...); err != nil {
			return err
		}
		defer unix.Close(memfd)
		h.Flags |= wire.ReqFlagMemfd
		fds = append(fds[:len(fds):len(fds)], memfd)
	}
	w.msg = wire.AppendReqHeader(w.msg[:0], h)
	w.msg = append(w.msg, attr...)
	if memfd < 0 {
		for _, d := range data {
			w.msg = append(w.msg, d...)
		}
	}
	return c.roundTrip(w, m, fds)
}

// roundTrip sends w.msg and waits for the reply. While the Conn
// reconnects (reconnect.go) it waits, then sends on the new connection.
func (c *Conn) roundTrip(w *waiter, m *ref, fds []int) error {
	for {
		c.sendMu.Lock()
		if m != nil && m.closed {
			c.sendMu.Unlock()
			return ErrClosed
		}
		if m != nil && m.lost {
			c.sendMu.Unlock()
			return ErrDescriptorLost
		}
		if err := c.failed(); err != nil {
			c.sendMu.Unlock()
			return err
		}
		if c.reconnecting() {
			c.sendMu.Unlock()
			c.waitReady()
			continue
		}
		uc := c.uc
		c.push(w)
		c.sent++
		err := c.sc.Send(w.msg, fds)
		if err != nil {
			// No reply can come for w: replies are in order and w is last.
			c.popTail(w)
		}
		c.sendMu.Unlock()
		if err != nil {
			if errors.Is(err, unix.ETOOMANYREFS) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				return err // this request failed; the connection is fine
			}
			if c.broke(uc, err) == ErrInterrupted {
				continue // not sent: send it on the new connection
			}
			return c.failed()
		}
		break
	}
	c.wait(w)
	return w.err
}

func (c *Conn) push(w *waiter) {
	c.qMu.Lock()
	if c.qHead > 0 && c.qHead == len(c.queue) {
		c.queue, c.qHead = c.queue[:0], 0
	}
	c.queue = append(c.queue, w)
	c.qMu.Unlock()
}

func (c *Conn) popTail(w *waiter) {
	c.qMu.Lock()
	if n := len(c.queue); n > c.qHead && c.queue[n-1] == w {
		c.queue[n-1] = nil
		c.queue = c.queue[:n-1]
	}
	c.qMu.Unlock()
}

func (c *Conn) pop() *waiter {
	c.qMu.Lock()
	defer c.qMu.Unlock()
	if c.qHead == len(c.queue) {
		return nil
	}
	w := c.queue[c.qHead]
	c.queue[c.qHead] = nil
	c.qHead++
	if c.qHead == len(c.queue) {
		c.queue, c.qHead = c.queue[:0], 0
	}
	return w
}

// wait returns once w's reply has arrived or the connection failed.
//
// There is no reader goroutine: a waiting goroutine that finds the read
// side free takes it and reads replies, handing each to its waiter (and
// waking it), until its own has come; then it wakes the oldest waiter
// still pending, which takes the read side over. Every other waiter sleeps
// on its channel until its reply is delivered or it is asked to read.
func (c *Conn) wait(w *waiter) {
	for {
		if c.readMu.TryLock() {
			for !w.done.Load() {
				if err := c.readOne(); err != nil {
					// A reconnection (ErrInterrupted), or the end.
					err = c.broke(c.uc, err)
					for q := c.pop(); q != nil; q = c.pop() {
						q.complete(err)
					}
				}
			}
			c.readMu.Unlock()
			c.wakeHead()
			return
		}
		<-w.wake
		if w.done.Load() {
			return
		}
	}
}

// wakeHead wakes the oldest pending waiter so that it takes the read side.
// A waiter woken for nothing (its reply came meanwhile, or it was recycled)
// just checks again.
func (c *Conn) wakeHead() {
	c.qMu.Lock()
	var h *waiter
	if c.qHead < len(c.queue) {
		h = c.queue[c.qHead]
	}
	c.qMu.Unlock()
	if h != nil {
		h.signal()
	}
}

// readOne reads one reply and delivers it to the oldest waiter. An error
// means the connection is unusable. Called with readMu held.
func (c *Conn) readOne() error {
	n, fds, _, err := c.sc.Recv(c.rbuf, c.roob, c.rfds)
	if err != nil && n == 0 && !errors.Is(err, scmrights.ErrTrunc) {
		return err
	}
	if n == 0 {
		return io.EOF
	}
	if n >= wire.ReplyHeaderSize && binary.LittleEndian.Uint32(c.rbuf[4:])&wire.ReplyFlagGoodbye != 0 {
		scmrights.CloseAll(fds)
		return errGoodbye // the daemon shuts down: no reply follows
	}
	w := c.pop()
	if w == nil {
		scmrights.CloseAll(fds)
		return errProtocol // a reply nobody asked for
	}
	if err != nil { // fds were closed; fail this request only
		w.complete(err)
		return nil
	}
	h, data, perr := wire.ParseReply(c.rbuf[:n])
	if perr != nil || len(fds) > len(w.fds) || (h.Flags&wire.ReplyFlagMemfd != 0 && len(fds) == 0) {
		scmrights.CloseAll(fds)
		w.complete(errProtocol)
		return nil
	}
	w.hdr = h
	w.nfd = copy(w.fds[:], fds)
	if len(data) <= len(w.out) {
		w.data = w.out[:copy(w.out, data)]
	} else {
		w.buf = append(w.buf[:0], data...)
		w.data = w.buf
	}
	w.complete(nil)
	return nil
}

// ref is what a Map and a Program share: a handle on a Conn and the
// descriptor, a kernel fd owned by the object.
type ref struct {
	c      *Conn
	handle uint32
	fd     int
	closed bool // guarded by c.sendMu
	// lost is set when the descriptor did not survive a restart of the
	// daemon (reconnect.go). Guarded by c.sendMu.
	lost bool
}

// mapByFD returns the open Map of c whose descriptor is fd, or nil.
func (c *Conn) mapByFD(fd int) *Map {
	v, _ := c.byFD.Load(fd)
	m, _ := v.(*Map)
	return m
}

// progByFD returns the open Program of c whose descriptor is fd, or nil.
func (c *Conn) progByFD(fd int) *Program {
	v, _ := c.byFD.Load(fd)
	p, _ := v.(*Program)
	return p
}

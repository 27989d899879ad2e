package client

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Riding through a daemon restart (docs/persistence.md, "What survives what").
//
// A daemon that shuts down says so (wire.ReplyFlagGoodbye) before it
// closes a connection; one that upgrades itself keeps the connection (the
// new process takes it over) and the client notices nothing. A
// connection that ends without a goodbye belongs to a daemon that
// crashed, and the service manager restarts it: the Conn then dials its
// socket again (for up to DialConfig.ReconnectTimeout), presents every
// descriptor of its open Maps, Programs and Links again under the handle
// numbers they had (wire.CmdImportAt), and carries on. Requests that were
// in flight when the daemon died fail with ErrInterrupted (they may or may
// not have been carried out); requests made meanwhile wait for the new
// connection. A descriptor the restarted daemon does not know any more
// (without systemd's fd store only pins survive a crash) makes its
// object's operations fail with ErrDescriptorLost.

// Errors of a daemon restart.
var (
	// ErrInterrupted: the daemon went away while the request was in
	// flight; it may or may not have been carried out (ECONNRESET). The
	// Conn reconnects: later requests work.
	ErrInterrupted = errno.New(unix.ECONNRESET, "bpfd: the daemon went away while this request was in flight; it may or may not have been carried out")
	// ErrDescriptorLost: the object's descriptor did not survive a
	// restart of the daemon (without systemd's fd store only pins do);
	// open its pin again (EBADF).
	ErrDescriptorLost = errno.New(unix.EBADF, "bpfd: this descriptor did not survive the daemon's restart; open its pin again")
)

// errGoodbye: the daemon said it shuts down for good.
var errGoodbye = errno.New(unix.ESHUTDOWN, "bpfd: the daemon shut down")

// DefaultReconnectTimeout is how long a Conn waits for a crashed daemon
// to come back before it gives up (then every request fails with
// ErrClosed).
const DefaultReconnectTimeout = 30 * time.Second

// DialConfig configures DialWith. A nil *DialConfig, and every zero
// field, means the default. Nothing here needs privilege.
type DialConfig struct {
	// NoReconnect makes a connection that ends without the daemon saying
	// it shuts down fail for good, as one the daemon closed, instead of
	// reconnecting.
	NoReconnect bool
	// ReconnectTimeout bounds how long requests wait for a crashed
	// daemon to come back (0: DefaultReconnectTimeout).
	ReconnectTimeout time.Duration
}

// DialWith is Dial with a configuration (nil: the defaults, as Dial).
// It fails as Dial does.
func DialWith(path string, cfg *DialConfig) (*Conn, error) {
	c, err := Dial(path)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		c.rc.off = cfg.NoReconnect
		c.rc.timeout = cfg.ReconnectTimeout
	}
	return c, nil
}

// reconnector is a Conn's reconnection state. Safe for concurrent use.
type reconnector struct {
	mu   sync.Mutex
	cond *sync.Cond
	// off and timeout are set before the Conn is used.
	off     bool
	timeout time.Duration
	// active is set while a reconnection is under way. Guarded by mu.
	active bool
	// goodbye is set once the daemon said it shuts down. Guarded by mu.
	goodbye bool
	// count counts completed reconnections. Guarded by mu.
	count int
}

func (rc *reconnector) init() {
	if rc.cond == nil {
		rc.cond = sync.NewCond(&rc.mu)
	}
}

// Reconnects returns how many times c reconnected after the daemon went
// away.
func (c *Conn) Reconnects() int {
	c.rc.mu.Lock()
	defer c.rc.mu.Unlock()
	return c.rc.count
}

// broke handles the failure of c's transport uc with cause: it starts a
// reconnection (or joins one under way) and returns ErrInterrupted for the
// requests that were in flight, or makes c unusable and returns why.
func (c *Conn) broke(uc *net.UnixConn, cause error) error {
	rc := &c.rc
	rc.mu.Lock()
	rc.init()
	if errors.Is(cause, errGoodbye) {
		rc.goodbye = true
	}
	if uc != c.uc {
		// A socket a reconnection already replaced: what was sent on it
		// is lost, the Conn is fine.
		rc.mu.Unlock()
		uc.Close()
		return ErrInterrupted
	}
	ok := !rc.off && !rc.goodbye && !c.closed.Load() && c.failed() == nil
	if ok && !rc.active {
		rc.active = true
		go c.reconnect(cause)
	}
	rc.mu.Unlock()
	if !ok {
		c.fail(cause)
		return c.failed()
	}
	uc.Close()
	return ErrInterrupted
}

// waitReady waits while a reconnection is under way.
func (c *Conn) waitReady() {
	rc := &c.rc
	rc.mu.Lock()
	rc.init()
	for rc.active {
		rc.cond.Wait()
	}
	rc.mu.Unlock()
}

// reconnecting reports whether a reconnection is under way.
func (c *Conn) reconnecting() bool {
	c.rc.mu.Lock()
	defer c.rc.mu.Unlock()
	return c.rc.active
}

// reconnect dials the daemon again until it answers or the timeout ends,
// presents every open object's descriptor under its handle number, and
// puts the new connection in place.
func (c *Conn) reconnect(cause error) {
	rc := &c.rc
	timeout := rc.timeout
	if timeout <= 0 {
		timeout = DefaultReconnectTimeout
	}
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		if c.closed.Load() {
			c.endReconnect(nil, nil, "", nil, ErrClosed)
			return
		}
		uc, sc, version, err := redial(c.path)
		if err == nil {
			var lost []*ref
			if lost, err = c.presentAll(sc); err == nil {
				c.endReconnect(uc, sc, version, lost, nil)
				return
			}
			uc.Close()
		}
		if time.Now().After(deadline) {
			c.endReconnect(nil, nil, "", nil, cause)
			return
		}
		time.Sleep(delay)
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// endReconnect puts the new connection in place (uc not nil) or gives up
// with err. Requests still queued were sent on the old connection: they
// fail with ErrInterrupted.
func (c *Conn) endReconnect(uc *net.UnixConn, sc *scmrights.Conn, version string, lost []*ref, err error) {
	c.sendMu.Lock()
	c.readMu.Lock()
	for q := c.pop(); q != nil; q = c.pop() {
		q.complete(ErrInterrupted)
	}
	rc := &c.rc
	rc.mu.Lock()
	if uc != nil && c.closed.Load() {
		uc.Close() // closed meanwhile
		uc, err = nil, ErrClosed
	}
	if uc != nil {
		c.uc, c.sc, c.version = uc, sc, version
		for _, r := range lost {
			r.lost = true
			c.byFD.Delete(r.fd)
		}
		rc.count++
	}
	rc.active = false
	rc.cond.Broadcast()
	rc.mu.Unlock()
	c.readMu.Unlock()
	c.sendMu.Unlock()
	if uc == nil {
		c.fail(err)
	}
}

// currentConn returns c's socket.
func (c *Conn) currentConn() *net.UnixConn {
	c.rc.mu.Lock()
	defer c.rc.mu.Unlock()
	return c.uc
}

// redial connects to path and says hello.
func redial(path string) (*net.UnixConn, *scmrights.Conn, string, error) {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, nil, "", err
	}
	sc, err := scmrights.NewConn(uc)
	if err != nil {
		uc.Close()
		return nil, nil, "", err
	}
	var ab [wire.HelloAttrSize]byte
	h, data, err := exchange(sc, wire.CmdHello, (&wire.HelloAttr{Version: wire.Version}).Append(ab[:0]), nil)
	if err == nil && (h.Errno != 0 || h.Ret != wire.Version) {
		err = ErrNotSupported
	}
	if err != nil {
		uc.Close()
		return nil, nil, "", err
	}
	return uc, sc, string(data), nil
}

// exchange sends one request on a connection nobody else uses yet and
// reads its reply (fds in the reply are closed).
func exchange(sc *scmrights.Conn, cmd wire.Cmd, attr []byte, fds []int) (wire.ReplyHeader, []byte, error) {
	msg := wire.AppendReqHeader(nil, wire.ReqHeader{Cmd: cmd, AttrLen: uint32(len(attr))})
	msg = append(msg, attr...)
	if err := sc.Send(msg, fds); err != nil {
		return wire.ReplyHeader{}, nil, err
	}
	buf := make([]byte, wire.MaxMessage)
	oob := make([]byte, scmrights.OOBSize(wire.MaxFDs))
	n, rfds, _, err := sc.Recv(buf, oob, make([]int, 0, wire.MaxFDs))
	scmrights.CloseAll(rfds)
	if err != nil {
		return wire.ReplyHeader{}, nil, err
	}
	if n >= wire.ReplyHeaderSize && binary.LittleEndian.Uint32(buf[4:])&wire.ReplyFlagGoodbye != 0 {
		return wire.ReplyHeader{}, nil, errGoodbye
	}
	h, data, err := wire.ParseReply(buf[:n])
	if err != nil {
		return h, nil, errProtocol
	}
	return h, append([]byte(nil), data...), nil
}

// presentAll presents the descriptor of every open object of c on sc
// under its handle number, and returns the objects whose descriptor the
// daemon no longer knows. A transport failure is returned as an error.
func (c *Conn) presentAll(sc *scmrights.Conn) ([]*ref, error) {
	var refs []*ref
	c.byFD.Range(func(_, v any) bool {
		switch o := v.(type) {
		case *Map:
			refs = append(refs, &o.ref)
		case *Program:
			refs = append(refs, &o.ref)
		case *Link:
			refs = append(refs, &o.ref)
		}
		return true
	})
	var lost []*ref
	for _, r := range refs {
		c.sendMu.Lock()
		closed := r.closed
		c.sendMu.Unlock()
		if closed {
			continue
		}
		dup, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, os.NewSyscallError("fcntl", err)
		}
		var ab [wire.ImportAtAttrSize]byte
		h, _, err := exchange(sc, wire.CmdImportAt, (&wire.ImportAtAttr{Handle: r.handle}).Append(ab[:0]), []int{dup})
		unix.Close(dup)
		if err != nil {
			return nil, err
		}
		if h.Errno != 0 {
			lost = append(lost, r)
		}
	}
	return lost, nil
}

package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Errors of Open and Queue.
var (
	ErrNotQueueSocket = errno.New(unix.EINVAL, "nfqueue: not a NETLINK_NETFILTER socket")
	ErrNotBound       = errno.New(unix.ENODEV, "nfqueue: the socket is not bound to that queue")
	ErrClosed         = errno.New(unix.EBADF, "nfqueue: queue closed")
	ErrConfigReply    = errno.New(unix.EIO, "nfqueue: no reply from the kernel to a queue configuration")
	ErrNotOwner       = errno.New(unix.EPERM, "nfqueue: the kernel refused to configure the queue: another socket owns it, or this process lacks CAP_NET_ADMIN over its network namespace")
)

// MaxCopyRange is the most payload bytes nfnetlink_queue copies per
// packet (NFQNL_MAX_COPY_RANGE).
const MaxCopyRange = 0xffff

// Config configures a queue the caller's socket is bound to. nil or zero
// fields mean the defaults.
type Config struct {
	// CopyRange is how many payload bytes the kernel copies per packet
	// (copy mode NFQNL_COPY_PACKET); 0 means MaxCopyRange. A longer
	// packet arrives cut, with Packet.CapLen its real length.
	CopyRange uint32
	// Flags are NFQA_CFG_F_* bits to set (FlagGSO, FlagFailOpen); every
	// other bit of the mask GSO|FAIL_OPEN is cleared.
	Flags uint32
	// MaxLen is the kernel queue's length (NFQA_CFG_QUEUE_MAXLEN); 0
	// leaves the kernel's default (1024). Beyond it the kernel drops (or,
	// with FlagFailOpen, accepts) packets and counts them.
	MaxLen uint32
	// Batch is how many datagrams one Receive may return (recvmmsg);
	// 0 means 64.
	Batch int
	// Spin makes Receive poll an empty socket for a few tens of
	// microseconds before waiting on the runtime poller: more
	// throughput under load, a little CPU after each burst.
	Spin bool
	// ReadBuffer is the socket's receive buffer in bytes; 0 means 8 MiB
	// (SO_RCVBUFFORCE when privileged, else SO_RCVBUF capped by
	// net.core.rmem_max).
	ReadBuffer int
}

// mmsghdr is struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// Queue is the daemon's side of one bound nfnetlink_queue socket: it
// applies the configuration, receives queued packets in batches and sends
// verdicts. Receive, Datagram and Send are for one goroutine at a time
// (the queue's worker); Stats, Wake and Close may be called from any.
type Queue struct {
	num    uint16
	portid uint32
	cfg    Config
	conn   *socket.Conn
	rc     syscall.RawConn
	netns  int // fd of the socket's network namespace, or -1

	// Receive state: owned by the worker.
	bufSize int
	bufs    []byte
	iov     []unix.Iovec
	hdrs    []mmsghdr
	n       int   // datagrams in the last Receive
	rerr    error // error of the last recvmmsg
	rtime   time.Duration
	spin    bool // poll an empty socket for spinFor before parking
	readFn  func(fd uintptr) bool

	closed atomic.Bool
}

// Open takes a NETLINK_NETFILTER socket the caller bound to queue (see
// Bind) and configures it with cfg: copy mode NFQNL_COPY_PACKET with
// cfg.CopyRange, the flags, the length. The kernel checks at every
// configuration message that the socket's opener and this process may
// administer the socket's network namespace (CAP_NET_ADMIN) and that the
// socket owns the queue. Open takes ownership of fd (closed on failure).
// It returns ErrNotQueueSocket for another kind of fd, ErrNotBound when
// the socket does not own queue, and the kernel's errno (EPERM) otherwise.
// Packets the kernel queued before the configuration (without payload)
// are sent back through the hook (NF_REPEAT) to be queued again.
func Open(fd int, queue uint16, cfg *Config) (*Queue, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if c.CopyRange == 0 || c.CopyRange > MaxCopyRange {
		c.CopyRange = MaxCopyRange
	}
	if c.Batch <= 0 {
		c.Batch = 64
	}
	if c.ReadBuffer <= 0 {
		c.ReadBuffer = 8 << 20
	}
	dom, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	proto, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err1 != nil || err2 != nil || dom != unix.AF_NETLINK || proto != unix.NETLINK_NETFILTER {
		unix.Close(fd)
		return nil, ErrNotQueueSocket
	}
	sa, err := unix.Getsockname(fd)
	nl, ok := sa.(*unix.SockaddrNetlink)
	if err != nil || !ok || nl.Pid == 0 {
		unix.Close(fd)
		return nil, ErrNotBound
	}
	q := &Queue{num: queue, portid: nl.Pid, cfg: c, netns: -1}
	// Buffers fit the largest datagram: the payload plus the message's
	// header and attributes.
	q.bufSize = align4(int(c.CopyRange) + 1024)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, c.ReadBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, c.ReadBuffer)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 1<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	}
	// Overruns are counted by the kernel (queue_user_dropped); do not
	// fail reads with ENOBUFS for them.
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	if ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS); err == nil {
		unix.CloseOnExec(ns)
		q.netns = ns
	}
	conn, err := socket.New(fd, "nfqueue")
	if err != nil {
		q.closeNetNS()
		unix.Close(fd)
		return nil, err
	}
	q.conn = conn
	if q.rc, err = conn.SyscallConn(); err != nil {
		q.Close()
		return nil, err
	}
	q.bufs = make([]byte, q.bufSize*c.Batch)
	q.iov = make([]unix.Iovec, c.Batch)
	q.hdrs = make([]mmsghdr, c.Batch)
	for i := range q.hdrs {
		q.iov[i].Base = &q.bufs[i*q.bufSize]
		q.iov[i].SetLen(q.bufSize)
		q.hdrs[i].hdr.Iov = &q.iov[i]
		q.hdrs[i].hdr.SetIovlen(1)
	}
	q.readFn = q.recv
	q.spin = c.Spin
	if err := q.configure(); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// configure sends the queue's parameters, flags and length, each
// acknowledged by the kernel.
func (q *Queue) configure() error {
	var b []byte
	var params [5]byte
	binary.BigEndian.PutUint32(params[:], q.cfg.CopyRange)
	params[4] = copyPacket
	var seq uint32 = 1
	b, off := appendHeader(b, msgConfig, unix.NLM_F_ACK, seq, unix.AF_UNSPEC, q.num)
	b = finish(appendAttr(b, cfgParams, params[:]), off)
	var flags, mask [4]byte
	binary.BigEndian.PutUint32(flags[:], q.cfg.Flags&(FlagGSO|FlagFailOpen))
	binary.BigEndian.PutUint32(mask[:], FlagGSO|FlagFailOpen)
	seq++
	b, off = appendHeader(b, msgConfig, unix.NLM_F_ACK, seq, unix.AF_UNSPEC, q.num)
	b = finish(appendAttr(appendAttr(b, cfgFlags, flags[:]), cfgMask, mask[:]), off)
	if q.cfg.MaxLen > 0 {
		var ml [4]byte
		binary.BigEndian.PutUint32(ml[:], q.cfg.MaxLen)
		seq++
		b, off = appendHeader(b, msgConfig, unix.NLM_F_ACK, seq, unix.AF_UNSPEC, q.num)
		b = finish(appendAttr(b, cfgMaxLen, ml[:]), off)
	}
	if _, err := q.conn.Write(b); err != nil {
		return err
	}
	// Read until every configuration message is acknowledged. Packets
	// queued before the parameters took effect come without payload:
	// send them through the hook again.
	acked := uint32(0)
	deadline := time.Now().Add(5 * time.Second)
	q.conn.SetReadDeadline(deadline)
	defer q.conn.SetReadDeadline(time.Time{})
	var repeat []byte
	var p Packet
	for acked < seq {
		n, err := q.Receive()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return ErrConfigReply
			}
			return err
		}
		for i := 0; i < n; i++ {
			for b := q.Datagram(i); len(b) > 0; {
				msg, rest, err := Split(b)
				if err != nil {
					break
				}
				b = rest
				switch Classify(msg) {
				case KindError:
					s := binary.NativeEndian.Uint32(msg[8:])
					if s == 0 || s > seq {
						continue
					}
					switch e := ErrorCode(msg); e {
					case 0:
						acked++
					case unix.ENODEV:
						return ErrNotBound
					case unix.EPERM:
						return ErrNotOwner
					default:
						return fmt.Errorf("nfqueue: configure queue %d: %w", q.num, e)
					}
				case KindPacket:
					if Parse(msg, &p) == nil && p.Payload == nil {
						repeat = AppendVerdict(repeat, q.num, p.ID, verdictRepeat, nil)
					}
				}
			}
		}
	}
	if len(repeat) > 0 {
		if err := q.Send(repeat); err != nil {
			return err
		}
	}
	return nil
}

// verdictRepeat is NF_REPEAT: run the hook again (which queues the packet
// again, now with its payload).
const verdictRepeat = 4

// Repeat is the verdict for a packet that arrived without payload (queued
// before the queue was configured): the kernel runs the hook again.
const Repeat = verdictRepeat

// Num returns the queue number.
func (q *Queue) Num() uint16 { return q.num }

// PortID returns the socket's netlink port id.
func (q *Queue) PortID() uint32 { return q.portid }

// Config returns the configuration in effect (defaults filled in).
func (q *Queue) Config() Config { return q.cfg }

// spinFor is how long Receive keeps polling an empty socket before it
// parks on the runtime poller: under load the next packet is usually
// microseconds away, and a poller wake-up costs more than that.
const spinFor = 50 * time.Microsecond

// recv is the RawConn read callback: one recvmmsg, without blocking; on
// an empty socket it polls again for up to spinFor.
func (q *Queue) recv(fd uintptr) bool {
	var spinStart time.Time
	for {
		t := time.Now()
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&q.hdrs[0])),
			uintptr(len(q.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			q.n, q.rerr = int(n), nil
			q.rtime = time.Since(t)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if q.spin {
				if spinStart.IsZero() {
					spinStart = t
				}
				if t.Sub(spinStart) < spinFor {
					continue
				}
			}
			return false
		case unix.ENOBUFS:
			// The kernel could not deliver some packets (counted in
			// its stats); what is queued is still readable.
			continue
		}
		q.n, q.rerr = 0, os.NewSyscallError("recvmmsg", e)
		return true
	}
}

// Receive waits for queued packets and reads up to the batch size of
// datagrams at once (recvmmsg). It returns how many; Datagram(i) returns
// each. It returns os.ErrDeadlineExceeded after Wake, ErrClosed after
// Close, or the syscall's error. It allocates nothing.
func (q *Queue) Receive() (int, error) {
	if q.closed.Load() {
		return 0, ErrClosed
	}
	for i := range q.hdrs {
		q.hdrs[i].len = 0
		q.hdrs[i].hdr.Flags = 0
	}
	if err := q.rc.Read(q.readFn); err != nil {
		if q.closed.Load() {
			return 0, ErrClosed
		}
		return 0, err
	}
	return q.n, q.rerr
}

// RecvTime returns how long the last Receive's successful recvmmsg took
// (the syscall, not the wait for packets).
func (q *Queue) RecvTime() time.Duration { return q.rtime }

// Datagram returns the i-th datagram of the last Receive (one or more
// netlink messages, see Split). A datagram cut by the buffer
// (MSG_TRUNC) is returned as received: its parse fails. The slice is
// valid until the next Receive.
func (q *Queue) Datagram(i int) []byte {
	n := min(int(q.hdrs[i].len), q.bufSize)
	return q.bufs[i*q.bufSize : i*q.bufSize+n]
}

// Send writes verdict messages (AppendVerdict, AppendVerdictBatch) to the
// kernel. Errors for single messages come back asynchronously as
// NLMSG_ERROR messages on the receive side.
func (q *Queue) Send(b []byte) error {
	if q.closed.Load() {
		return ErrClosed
	}
	_, err := q.conn.Write(b)
	return err
}

// Wake makes a Receive that is waiting (or the next one) return
// os.ErrDeadlineExceeded, so its goroutine can stop; Rearm undoes it.
func (q *Queue) Wake() { q.conn.SetReadDeadline(time.Unix(1, 0)) }

// Rearm clears a Wake.
func (q *Queue) Rearm() { q.conn.SetReadDeadline(time.Time{}) }

// ReceiveNow is Receive without waiting, for draining at detach: it
// reads what the socket holds now, whatever read deadline Wake set (a
// deadline in the past makes the poller refuse before reading anything),
// and returns 0 when nothing is queued. It returns ErrClosed after Close
// or the syscall's error.
func (q *Queue) ReceiveNow() (int, error) {
	if q.closed.Load() {
		return 0, ErrClosed
	}
	for i := range q.hdrs {
		q.hdrs[i].len = 0
		q.hdrs[i].hdr.Flags = 0
	}
	q.n, q.rerr = 0, nil
	spin := q.spin
	q.spin = false
	err := q.rc.Control(func(fd uintptr) { q.recv(fd) })
	q.spin = spin
	if err != nil {
		if q.closed.Load() {
			return 0, ErrClosed
		}
		return 0, err
	}
	return q.n, q.rerr
}

// NetNS returns an fd of the socket's network namespace (SIOCGSKNS), or
// -1 when the daemon may not have it. The Queue owns it.
func (q *Queue) NetNS() int { return q.netns }

func (q *Queue) closeNetNS() {
	if q.netns >= 0 {
		unix.Close(q.netns)
		q.netns = -1
	}
}

// Close closes the socket: the kernel then destroys the queue instance
// and drops every packet still waiting for a verdict (the fail-closed
// path); with no listener left, packets reaching the NFQUEUE rule are
// dropped unless the rule has --queue-bypass. Idempotent.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	q.closeNetNS()
	if q.conn != nil {
		return q.conn.Close()
	}
	return nil
}

// Dup returns a new close-on-exec descriptor of the queue's socket,
// owned by the caller, for keeping the binding alive beyond this process
// (systemd's fd store, a daemon upgrade): Open on it configures the same
// queue again. ErrClosed after Close.
func (q *Queue) Dup() (int, error) {
	if q.closed.Load() {
		return -1, ErrClosed
	}
	dup := -1
	var derr error
	err := q.rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return dup, nil
}

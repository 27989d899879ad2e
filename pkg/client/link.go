package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/nfqueue"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// LinkInfo describes a link and its counters (see wire.LinkInfo).
type LinkInfo = wire.LinkInfo

// LinkStats are a link's counters: packets, bytes, verdicts, program
// errors, the kernel's queue drops, decision time.
type LinkStats = wire.LinkStats

// NFQueueOptions configures Program.AttachNFQueue. nil means the defaults.
type NFQueueOptions struct {
	// Queues is how many consecutive queues, from the queue given, the
	// link serves (an iptables rule's --queue-balance A:B); 0 means 1,
	// at most 8. Each queue gets its own worker in the daemon.
	Queues uint16
	// FailOpen sets NFQA_CFG_F_FAIL_OPEN: when a queue is full the
	// kernel accepts packets instead of dropping them. At detach, the
	// packets still waiting are accepted (dropped without it).
	FailOpen bool
	// MaxLen is the kernel queue's length; 0 keeps the kernel's (1024).
	MaxLen uint32
	// NetNS is an fd of the network namespace whose queues to bind; 0
	// means the calling thread's. Entering another namespace needs
	// CAP_SYS_ADMIN there.
	NetNS int
}

var errQueues = invalid("bpfd: NFQueueOptions.Queues must be at most 8, and the queue range within 0-65535")

// AttachNFQueue makes p decide every packet that netfilter sends to queue
// (iptables ... -j NFQUEUE --queue-num queue), and returns the link. The
// caller binds the queue itself, in its own network namespace (or
// opts.NetNS), with its own authority: the kernel requires CAP_NET_ADMIN
// there. The bound sockets go to the daemon with the request; this
// process keeps no copy. p must have write mode (attaching is a write).
//
// XDP programs see an Ethernet frame and decide XDP_PASS → accept,
// XDP_DROP and XDP_ABORTED → drop, XDP_TX and XDP_REDIRECT → drop
// (counted apart); packets they rewrite are reinjected rewritten. Socket
// filters see the packet from its network header with an skb context;
// 0 drops, anything else accepts. A program fault drops the packet and
// counts it. The link lasts until Detach, or until its last holder (this
// Link, its reopened copies, its pins) is gone; when the daemon stops, the
// kernel drops queued traffic unless the rule has --queue-bypass.
//
// Errors: ErrPermission (EPERM) without CAP_NET_ADMIN over the namespace
// or without write mode on p; ErrBusy (EBUSY) when a queue is bound
// already; ErrInvalid for a program type other than XDP and socket filter
// or bad options; ErrNoSpace/ErrNoMemory (quotas); ErrClosed.
func (p *Program) AttachNFQueue(queue uint16, opts *NFQueueOptions) (*Link, error) {
	var o NFQueueOptions
	if opts != nil {
		o = *opts
	}
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.Queues > wire.MaxLinkQueues || uint32(queue)+uint32(o.Queues) > 1<<16 {
		return nil, errQueues
	}
	if p.Mode()&ModeWrite == 0 {
		return nil, ErrPermission
	}
	fds := make([]int, 0, o.Queues)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i := uint16(0); i < o.Queues; i++ {
		fd, err := nfqueue.Bind(queue+i, &nfqueue.BindConfig{NetNS: o.NetNS})
		if err != nil {
			// The client's sentinels (ErrPermission, ErrBusy) match
			// too.
			var e unix.Errno
			if errors.As(err, &e) {
				return nil, fmt.Errorf("%w: queue %d: %w", errnoErr(uint32(e)), queue+i, err)
			}
			return nil, err
		}
		fds = append(fds, fd)
	}
	a := wire.LinkCreateAttr{ProgHandle: p.handle, AttachType: wire.AttachNFQueue,
		QueueFirst: uint32(queue), QueueCount: uint32(o.Queues), MaxLen: o.MaxLen}
	if o.FailOpen {
		a.Flags |= wire.LinkFlagFailOpen
	}
	var ab [wire.LinkCreateAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := p.c.do(w, &p.ref, wire.CmdLinkCreate, a.Append(ab[:0]), fds); err != nil {
		return nil, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return nil, err
	}
	return p.c.newLink(w, w.takeFD(0))
}

// Link is an attachment of a program to live traffic, reached through a
// descriptor like a Map or a Program: it can be pinned (Conn.Pin or
// Link.Pin), reopened read-only for someone who may watch but not detach
// it, passed to other processes, and it is detached when Detach is called
// or its last holder is gone. Read mode lets one read its Info; write mode
// lets one Detach it.
//
// A Link is safe for concurrent use. It must be closed to release its
// handle and descriptor (which detaches it if nothing else holds it).
type Link struct {
	ref
	mode Mode
	id   uint32
}

var (
	_ io.Closer = (*Link)(nil)
	_ Pinner    = (*Link)(nil)
)

func (l *Link) pinTarget() *ref { return &l.ref }

func (c *Conn) newLink(w *waiter, fd int) (*Link, error) {
	r, o, err := c.newRef(w, fd, wire.ObjLink)
	if err != nil {
		return nil, err
	}
	l := &Link{ref: r, mode: Mode(o.Mode), id: o.ID}
	c.byFD.Store(fd, l)
	return l, nil
}

// FD returns the link's descriptor, owned by l.
func (l *Link) FD() int { return l.fd }

// ID returns the link's daemon-wide id.
func (l *Link) ID() uint32 { return l.id }

// Mode returns the mode of l's descriptor.
func (l *Link) Mode() Mode { return l.mode }

// Pin pins the link at path (see Conn.Pin). A pinned link keeps deciding
// packets after every descriptor is closed, until the pin file is
// unlinked, the link is detached, or the daemon stops (links are not
// restored at restart: binding a queue needs the client's authority).
func (l *Link) Pin(path string, perm os.FileMode) error {
	return l.c.Pin(l, path, perm)
}

// Info returns the link's description and counters. It needs read mode
// (ErrPermission otherwise); ErrClosed after Close.
func (l *Link) Info() (LinkInfo, error) {
	w, err := l.c.handleCmd(&l.ref, wire.CmdLinkInfo, 0)
	if err != nil {
		return LinkInfo{}, err
	}
	defer putWaiter(w)
	defer w.closeFDs()
	data, err := w.payload()
	if err != nil {
		return LinkInfo{}, err
	}
	var li LinkInfo
	if err := json.Unmarshal(data, &li); err != nil {
		return LinkInfo{}, errors.Join(errProtocol, err)
	}
	return li, nil
}

// Stats returns the link's counters (Info's).
func (l *Link) Stats() (LinkStats, error) {
	li, err := l.Info()
	return li.LinkStats, err
}

// Detach stops the link at once: the packets still waiting get the
// fail-open or fail-closed verdict, and the queues are released (the
// kernel then drops, or with --queue-bypass accepts, what reaches the
// rule). The Link stays open for Info. It needs write mode
// (ErrPermission); detaching twice is ErrBadDescriptor (EBADF).
func (l *Link) Detach() error {
	w, err := l.c.handleCmd(&l.ref, wire.CmdLinkDetach, 0)
	if err != nil {
		return err
	}
	w.closeFDs()
	putWaiter(w)
	return nil
}

// Reopen returns a new descriptor of the link with mode, a subset of l's
// (ErrPermission otherwise): a read-only one lets its holder watch the
// link's counters but not detach it.
func (l *Link) Reopen(mode Mode) (*Link, error) {
	w, err := l.c.handleCmd(&l.ref, wire.CmdReopen, wire.Mode(mode))
	if err != nil {
		return nil, err
	}
	defer putWaiter(w)
	defer w.closeFDs()
	return l.c.newLink(w, w.takeFD(0))
}

// Close releases l's handle and closes its descriptor; when nothing else
// holds the link (no other descriptor, no pin), it is detached. A second
// Close returns ErrClosed.
func (l *Link) Close() error { return l.ref.close() }

// ImportLink presents a link descriptor received from another process
// (SCM_RIGHTS) and returns a Link working on a duplicate it owns. Errors
// as ImportMap; ErrInvalid if fd is not a link.
func (c *Conn) ImportLink(fd int) (*Link, error) {
	var l *Link
	err := c.importFD(fd, func(w *waiter, dup int) (err error) {
		l, err = c.newLink(w, dup)
		return err
	})
	return l, err
}

// OpenPinnedLink is OpenPinnedMap for a pinned link.
func (c *Conn) OpenPinnedLink(path string, mode Mode) (*Link, error) {
	var l *Link
	err := c.openPinned(path, mode, func(w *waiter, fd int) (err error) {
		l, err = c.newLink(w, fd)
		return err
	})
	return l, err
}

// Links lists the caller's links (every link, for root) with their
// counters.
func (c *Conn) Links() ([]LinkInfo, error) {
	var out []LinkInfo
	if err := c.callPayload(wire.CmdLinkList, nil, func(data []byte) error {
		if err := json.Unmarshal(data, &out); err != nil {
			return errors.Join(errProtocol, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

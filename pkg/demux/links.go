package demux

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/maphash"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/nfqueue"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Links: programs deciding live packets of netfilter queues (issue 12).
//
// A link is an object of kind wire.ObjLink. Its descriptors and handles
// live in the same lineage tree as maps' and programs'; the link holds a
// reference on its program (deps), and its workers run the program on
// every queued packet, one goroutine per queue, without a round trip to
// any client. The link is detached when its last holder goes (the
// object's close) or by LINK_DETACH, and at daemon shutdown.

// Link errors.
var (
	ErrLinkQueues   = errno.New(unix.EINVAL, "demux: a link needs 1 to 8 queue sockets, one per queue, in a queue range within 0-65535")
	ErrLinkProgType = errno.New(unix.EINVAL, "demux: only XDP and socket-filter programs attach to netfilter queues")
	ErrDetached     = errno.New(unix.EBADF, "demux: the link is already detached")
	ErrNotLink      = errno.New(unix.EINVAL, "demux: handle does not name a link")
)

// linkSet is every live link of the server, for LINK_LIST and shutdown.
// Safe for concurrent use.
type linkSet struct {
	mu     sync.Mutex
	links  map[*link]struct{} // guarded by mu
	closed bool               // guarded by mu
}

// link is one attachment of a program to netfilter queues. Immutable
// after creation except detached (atomic) and the queues' counters.
type link struct {
	srv      *Server
	obj      *Object // the link object (set before the workers start)
	prog     *Object
	uid      uint32
	first    uint16
	flags    uint32
	copy     uint32
	created  time.Time
	queues   []*linkQueue
	detached atomic.Bool
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// linkQueue is one queue of a link and its worker's state. Everything
// but stats is owned by the worker goroutine.
type linkQueue struct {
	l     *link
	q     *nfqueue.Queue
	st    *nfqueue.StatsReader // nil when the daemon may not read them
	run   *prog.Runner
	xdp   bool
	frame []byte // XDP: Ethernet header + payload, what the program sees
	l3off int    // offset of the payload in frame
	out   []byte // verdict messages of one batch
	pk    nfqueue.Packet
	seed  maphash.Seed
	macs  *macCache

	// pending VERDICT_BATCH run: count packets up to lastID, verdict v.
	runN    int
	runID   uint32
	runV    uint32
	stats   linkCounters
	lastLog time.Time
}

// linkCounters are a queue's counters, written by its worker and read by
// LINK_INFO.
type linkCounters struct {
	packets, bytes                             atomic.Uint64
	pass, drop, aborted, tx, redirect, invalid atomic.Uint64
	errors, rewritten, rewriteDropped, repeat  atomic.Uint64
	nlErrors, programNs, ioNs, batches         atomic.Uint64
	decisionNs                                 atomic.Uint64
	hist                                       [histBuckets]atomic.Uint64
}

// Decision-time histogram: log-linear, 4 buckets per power of two.
const histBuckets = 64 * 4

func histBucket(ns uint64) int {
	if ns < 4 {
		return int(ns)
	}
	e := bits.Len64(ns) - 1 // ns in [2^e, 2^(e+1))
	return e*4 + int(ns>>(e-2))&3
}

// histUpper returns the upper bound of bucket i.
func histUpper(i int) uint64 {
	if i < 4 {
		return uint64(i)
	}
	if i < 8 { // unused: 4 and more start at bucket 8
		return 3
	}
	e, sub := i/4, uint64(i%4)
	return (uint64(1)<<e + (sub+1)<<(e-2)) - 1
}

// Program results.
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
	ethHdrLen   = 14
)

// linkCreate executes CmdLinkCreate.
func (c *conn) linkCreate(a, data []byte, fds []int) (int64, error) {
	var at wire.LinkCreateAttr
	at.Parse(a)
	if len(data) != 0 || at.Flags&^wire.LinkFlagFailOpen != 0 {
		return 0, ErrInvalid
	}
	if at.AttachType != wire.AttachNFQueue {
		return 0, ErrAttachType
	}
	if at.QueueCount == 0 || at.QueueCount > wire.MaxLinkQueues || int(at.QueueCount) != len(fds) ||
		uint64(at.QueueFirst)+uint64(at.QueueCount) > 1<<16 {
		return 0, ErrLinkQueues
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	// Attaching to a shared attach point is a write (DESIGN.md).
	hd, err := c.progHandle(at.ProgHandle, wire.ModeWrite)
	if err != nil {
		return 0, err
	}
	p := hd.obj.p
	if p.Type() != prog.XDP && p.Type() != prog.SocketFilter {
		return 0, ErrLinkProgType
	}
	l := &link{srv: c.srv, prog: hd.obj, uid: c.uid, first: uint16(at.QueueFirst), flags: at.Flags,
		created: time.Now()}
	fail := func(err error) (int64, error) {
		for _, lq := range l.queues {
			lq.close()
		}
		return 0, err
	}
	dups := make([]int, 0, len(fds))
	for _, fd := range fds {
		// The received fds are closed after the request; keep
		// duplicates.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, d := range dups {
				unix.Close(d)
			}
			return 0, ErrQuotaDescs
		}
		dups = append(dups, dup)
	}
	mem, err := l.openQueues(dups, at.MaxLen)
	if err != nil {
		return fail(err)
	}
	r := c.reg
	r.mu.Lock()
	if err := r.reserveNewLocked(c.uid, mem); err != nil {
		r.mu.Unlock()
		return fail(err)
	}
	if hd.dead.Load() || hd.obj.refs == 0 {
		r.unreserveLocked(c.uid, mem)
		r.mu.Unlock()
		return fail(ErrBadHandle)
	}
	r.mu.Unlock()
	o := &Object{kind: wire.ObjLink, cap: wire.ModeReadWrite, mem: mem, name: hd.obj.name, link: l}
	l.obj = o
	ls := &c.srv.links
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		r.mu.Lock()
		r.unreserveLocked(c.uid, mem)
		r.mu.Unlock()
		return fail(ErrServerClosed)
	}
	if ls.links == nil {
		ls.links = map[*link]struct{}{}
	}
	ls.links[l] = struct{}{}
	ls.mu.Unlock()
	id, err := c.install(o, func() error {
		// Under the registry lock: the link holds its program, and
		// hangs in the lineage of the program handle it was made with
		// (revoking that destroys the link).
		if hd.dead.Load() {
			return ErrBadHandle
		}
		o.deps = []*Object{hd.obj}
		hd.obj.refs++
		hd.obj.progRefs++
		addViaLocked(o, hd.src)
		return nil
	})
	if err != nil {
		// install closed o, which stopped the (not yet started) link.
		return 0, err
	}
	for _, lq := range l.queues {
		l.wg.Add(1)
		go lq.work()
	}
	c.srv.log.Debug("link attached", zap.Uint32("link", o.id), zap.Uint32("prog", hd.obj.id),
		zap.Uint16("queue", l.first), zap.Int("queues", len(l.queues)), zap.Uint32("uid", c.uid))
	return id, nil
}

// openQueues configures the queue sockets fds (taken over: closed on
// failure, and every one of them whatever happens) for l, first queue
// first, and returns the bytes of buffers they cost. On failure the
// queues opened so far stay in l.queues for the caller to close.
func (l *link) openQueues(fds []int, maxLen uint32) (uint64, error) {
	p := l.prog.p
	// Copy what the program can read: an XDP program addresses the
	// linear part of its frame, a socket filter the whole packet.
	l.copy = nfqueue.MaxCopyRange
	if p.Type() == prog.XDP {
		l.copy = prog.XDPMaxLinear - ethHdrLen
	}
	cfg := &nfqueue.Config{CopyRange: l.copy, Flags: nfqueue.FlagGSO, MaxLen: maxLen, Spin: true}
	if l.flags&wire.LinkFlagFailOpen != 0 {
		cfg.Flags |= nfqueue.FlagFailOpen
	}
	// Batches of about 1 MiB of buffers.
	cfg.Batch = max(8, min(64, (1<<20)/(int(l.copy)+1024)))
	var mem uint64
	for i, fd := range fds {
		q, err := nfqueue.Open(fd, l.first+uint16(i), cfg)
		if err != nil {
			for _, rest := range fds[i+1:] {
				unix.Close(rest)
			}
			return 0, err
		}
		lq := &linkQueue{l: l, q: q, run: p.NewRunner(), xdp: p.Type() == prog.XDP, seed: maphash.MakeSeed(),
			out: make([]byte, 0, 256<<10)}
		if lq.xdp {
			lq.frame = make([]byte, 64+int(l.copy)) // room for a bridge L2 header
		}
		if st, err := nfqueue.OpenStats(q.NetNS()); err == nil {
			lq.st = st
		}
		lq.macs = newMacCache(q.NetNS())
		l.queues = append(l.queues, lq)
		mem += uint64(q.Config().Batch)*uint64(int(l.copy)+1024) + uint64(cap(lq.out)) + uint64(len(lq.frame))
	}
	return mem, nil
}

// linkCmd dispatches the link commands.
func (c *conn) linkCmd(cmd wire.Cmd, a, data []byte, fds []int) (int64, error) {
	switch cmd {
	case wire.CmdLinkCreate:
		return c.linkCreate(a, data, fds)
	case wire.CmdLinkDetach:
		return c.linkDetach(a, data)
	case wire.CmdLinkInfo:
		return c.linkInfo(a, data)
	}
	return c.linkList(data)
}

// linkHandle returns the link behind handle id if its mode includes need.
func (c *conn) linkHandle(id uint32, need wire.Mode) (*handle, error) {
	hd, err := c.lookup(id)
	if err != nil {
		return nil, err
	}
	if hd.obj.link == nil {
		return nil, ErrNotLink
	}
	if hd.mode&need != need {
		return nil, ErrPermission
	}
	return hd, nil
}

// linkDetach executes CmdLinkDetach: it needs write on the link. The
// link stops deciding packets at once; its descriptors stay valid for
// LINK_INFO. A second detach is EBADF.
func (c *conn) linkDetach(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	hd, err := c.linkHandle(h, wire.ModeWrite)
	if err != nil {
		return 0, err
	}
	if !hd.obj.link.stop() {
		return 0, ErrDetached
	}
	return 0, nil
}

// linkInfo executes CmdLinkInfo: it needs read on the link.
func (c *conn) linkInfo(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	hd, err := c.linkHandle(h, wire.ModeRead)
	if err != nil {
		return 0, err
	}
	li := hd.obj.link.info()
	li.Mode = hd.mode.String()
	b, err := json.Marshal(li)
	if err != nil {
		return 0, err
	}
	copy(c.alloc(len(b)), b)
	return 0, nil
}

// linkList executes CmdLinkList: the caller's links (every link for
// root), as a JSON array of wire.LinkInfo.
func (c *conn) linkList(data []byte) (int64, error) {
	if len(data) != 0 {
		return 0, ErrInvalid
	}
	ls := &c.srv.links
	ls.mu.Lock()
	list := make([]*link, 0, len(ls.links))
	for l := range ls.links {
		if c.uid == 0 || l.uid == c.uid {
			list = append(list, l)
		}
	}
	ls.mu.Unlock()
	out := make([]wire.LinkInfo, 0, len(list))
	for _, l := range list {
		out = append(out, l.info())
	}
	sortLinkInfos(out)
	b, err := json.Marshal(out)
	if err != nil {
		return 0, err
	}
	copy(c.alloc(len(b)), b)
	return int64(len(out)), nil
}

func sortLinkInfos(s []wire.LinkInfo) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].ID < s[j-1].ID; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// info describes l with its counters.
func (l *link) info() wire.LinkInfo {
	li := wire.LinkInfo{ID: l.obj.id, Type: "nfqueue", ProgID: l.prog.id, ProgName: wire.NameString(l.prog.name),
		ProgType: l.prog.p.Type().String(), OwnerUID: l.uid, FailOpen: l.flags&wire.LinkFlagFailOpen != 0,
		Detached: l.detached.Load(), CopyRange: l.copy, CreatedAt: l.created.Unix()}
	var hist [histBuckets]uint64
	for i, lq := range l.queues {
		qs := wire.LinkQueueStats{Queue: int(l.first) + i}
		lq.fill(&qs.LinkStats, &hist)
		li.Queues = append(li.Queues, qs.Queue)
		li.PerQueue = append(li.PerQueue, qs)
		s, t := &li.LinkStats, &qs.LinkStats
		s.Packets += t.Packets
		s.Bytes += t.Bytes
		s.Pass += t.Pass
		s.Drop += t.Drop
		s.Aborted += t.Aborted
		s.TX += t.TX
		s.Redirect += t.Redirect
		s.Invalid += t.Invalid
		s.Errors += t.Errors
		s.Rewritten += t.Rewritten
		s.RewriteDropped += t.RewriteDropped
		s.Repeated += t.Repeated
		s.NetlinkErrors += t.NetlinkErrors
		s.KernelQueueDropped += t.KernelQueueDropped
		s.KernelUserDropped += t.KernelUserDropped
		s.KernelWaiting += t.KernelWaiting
		s.ProgramNs += t.ProgramNs
		s.IONs += t.IONs
		s.Batches += t.Batches
		s.DecisionMeanNs += t.DecisionMeanNs * t.Packets // summed, divided below
	}
	if li.Packets > 0 {
		li.DecisionMeanNs /= li.Packets
	} else {
		li.DecisionMeanNs = 0
	}
	li.DecisionP99Ns = p99(&hist)
	return li
}

// fill copies lq's counters into s and adds its histogram to hist.
func (lq *linkQueue) fill(s *wire.LinkStats, hist *[histBuckets]uint64) {
	c := &lq.stats
	s.Packets, s.Bytes = c.packets.Load(), c.bytes.Load()
	s.Pass, s.Drop, s.Aborted = c.pass.Load(), c.drop.Load(), c.aborted.Load()
	s.TX, s.Redirect, s.Invalid = c.tx.Load(), c.redirect.Load(), c.invalid.Load()
	s.Errors, s.Rewritten, s.RewriteDropped = c.errors.Load(), c.rewritten.Load(), c.rewriteDropped.Load()
	s.Repeated, s.NetlinkErrors = c.repeat.Load(), c.nlErrors.Load()
	s.ProgramNs, s.IONs, s.Batches = c.programNs.Load(), c.ioNs.Load(), c.batches.Load()
	if s.Packets > 0 {
		s.DecisionMeanNs = c.decisionNs.Load() / s.Packets
	}
	var h [histBuckets]uint64
	for i := range c.hist {
		h[i] = c.hist[i].Load()
		hist[i] += h[i]
	}
	s.DecisionP99Ns = p99(&h)
	if lq.st != nil {
		if ks, err := lq.st.Read(lq.q.Num()); err == nil && ks.PortID == lq.q.PortID() {
			s.KernelQueueDropped = uint64(ks.QueueDropped)
			s.KernelUserDropped = uint64(ks.UserDropped)
			s.KernelWaiting = uint64(ks.Waiting)
		}
	}
}

// p99 returns the 99th percentile of a decision-time histogram (the
// upper bound of its bucket), 0 when empty.
func p99(h *[histBuckets]uint64) uint64 {
	var n uint64
	for _, v := range h {
		n += v
	}
	if n == 0 {
		return 0
	}
	want := (n*99 + 99) / 100
	var acc uint64
	for i, v := range h {
		acc += v
		if acc >= want {
			return histUpper(i)
		}
	}
	return histUpper(histBuckets - 1)
}

// stop detaches l: it wakes every worker, which settles the packets still
// waiting (accepted when fail-open, dropped otherwise) and closes its
// socket, and waits for them. It reports whether this call detached it.
func (l *link) stop() bool {
	if !l.detached.CompareAndSwap(false, true) {
		return false
	}
	for _, lq := range l.queues {
		lq.q.Wake()
	}
	l.wg.Wait()
	for _, lq := range l.queues {
		lq.close()
	}
	ls := &l.srv.links
	ls.mu.Lock()
	delete(ls.links, l)
	ls.mu.Unlock()
	if l.obj != nil {
		l.srv.log.Debug("link detached", zap.Uint32("link", l.obj.id))
	}
	return true
}

// closeLinks detaches every link (daemon shutdown): the kernel then drops
// packets reaching the queues (accepts them with --queue-bypass).
func (s *Server) closeLinks() {
	ls := &s.links
	ls.mu.Lock()
	ls.closed = true
	list := make([]*link, 0, len(ls.links))
	for l := range ls.links {
		list = append(list, l)
	}
	ls.mu.Unlock()
	for _, l := range list {
		l.stop()
	}
}

func (lq *linkQueue) close() {
	lq.q.Close()
	if lq.st != nil {
		lq.st.Close()
	}
	lq.macs.close()
}

// work is a queue's worker: receive a batch, decide every packet, send
// the verdicts in one write; at detach, settle what is still queued.
func (lq *linkQueue) work() {
	defer lq.l.wg.Done()
	for {
		n, err := lq.q.Receive()
		if err != nil {
			if lq.l.detached.Load() || errors.Is(err, nfqueue.ErrClosed) {
				lq.drain()
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if lq.l.srv.ho.isActive() {
					return // an upgrade: the queue goes to the next process
				}
				lq.q.Rearm()
				continue
			}
			lq.l.srv.log.Warn("netfilter queue receive failed; link stopped",
				zap.Uint16("queue", lq.q.Num()), zap.Error(err))
			lq.l.detached.Store(true)
			return
		}
		lq.batch(n, lq.q.RecvTime())
	}
}

// batch decides the n datagrams of the last Receive and sends the
// verdicts. recvNs is the time the receive syscall took.
func (lq *linkQueue) batch(n int, recvNs time.Duration) {
	c := &lq.stats
	lq.out = lq.out[:0]
	var progNs uint64
	for i := 0; i < n; i++ {
		for b := lq.q.Datagram(i); len(b) > 0; {
			msg, rest, err := nfqueue.Split(b)
			if err != nil {
				c.nlErrors.Add(1)
				break
			}
			b = rest
			switch nfqueue.Classify(msg) {
			case nfqueue.KindError:
				if nfqueue.ErrorCode(msg) != 0 {
					c.nlErrors.Add(1)
				}
			case nfqueue.KindPacket:
				if nfqueue.Parse(msg, &lq.pk) != nil {
					c.nlErrors.Add(1)
					continue
				}
				if lq.l.detached.Load() {
					// Detached mid-batch: what is not decided yet is
					// still waiting, and gets the fail verdict.
					lq.add(lq.pk.ID, lq.failVerdict())
					continue
				}
				progNs += lq.decide(&lq.pk)
			}
		}
	}
	lq.flushRun()
	t := time.Now()
	if len(lq.out) > 0 {
		if err := lq.q.Send(lq.out); err != nil && !lq.l.detached.Load() {
			lq.logf("cannot send verdicts", err)
		}
	}
	c.ioNs.Add(uint64(recvNs) + uint64(time.Since(t)))
	c.programNs.Add(progNs)
	c.batches.Add(1)
}

// decide runs the program on one packet and appends its verdict; it
// returns the program's run time.
func (lq *linkQueue) decide(p *nfqueue.Packet) uint64 {
	c := &lq.stats
	if p.Payload == nil {
		// Queued before the configuration: through the hook again.
		lq.single(p.ID, nfqueue.Repeat, nil)
		c.repeat.Add(1)
		return 0
	}
	start := time.Now()
	var ret uint64
	var err error
	var runNs time.Duration
	if lq.xdp {
		frame := lq.buildFrame(p)
		meta := prog.XDPMeta{IngressIfindex: p.InDev}
		if meta.IngressIfindex == 0 {
			meta.IngressIfindex = p.OutDev
		}
		t := time.Now()
		ret, err = lq.run.RunXDP(frame, &meta)
		runNs = time.Since(t)
	} else {
		meta := lq.skbMeta(p)
		t := time.Now()
		ret, err = lq.run.RunSocketFilter(p.Payload, &meta)
		runNs = time.Since(t)
	}
	lq.l.prog.RecordRuns(1, runNs) // prog show's run_cnt and run_time_ns (stats.go)
	verdict := nfqueue.Drop
	var payload []byte
	switch {
	case err != nil:
		c.errors.Add(1)
		lq.logf("program faulted; packet dropped", err)
	case !lq.xdp:
		if uint32(ret) != 0 {
			verdict = nfqueue.Accept
			c.pass.Add(1)
		} else {
			c.drop.Add(1)
		}
	default:
		switch uint32(ret) {
		case xdpPass:
			verdict = nfqueue.Accept
			c.pass.Add(1)
			// A rewrite of the packet (past the Ethernet header) is
			// reinjected.
			if l3 := lq.frame[lq.l3off : lq.l3off+len(p.Payload)]; string(l3) != string(p.Payload) {
				if p.Truncated() {
					verdict = nfqueue.Drop
					c.rewriteDropped.Add(1)
				} else {
					payload = l3
					c.rewritten.Add(1)
				}
			}
		case xdpDrop:
			c.drop.Add(1)
		case xdpAborted:
			c.aborted.Add(1)
		case xdpTX:
			c.tx.Add(1)
		case xdpRedirect:
			c.redirect.Add(1)
		default:
			c.invalid.Add(1)
		}
	}
	if payload != nil {
		lq.single(p.ID, verdict, payload)
	} else {
		lq.add(p.ID, verdict)
	}
	d := uint64(time.Since(start))
	c.decisionNs.Add(d)
	c.hist[histBucket(d)].Add(1)
	// Last: a reader that sees the packet counted sees its verdict.
	c.bytes.Add(uint64(p.CapLen))
	c.packets.Add(1)
	return uint64(runNs)
}

// add appends verdict v for packet id, batching runs of equal verdicts
// into one NFQNL_MSG_VERDICT_BATCH (packets arrive in id order and each
// batch is settled before the next is read, so a batch verdict up to id
// covers exactly the run).
func (lq *linkQueue) add(id, v uint32) {
	if lq.runN > 0 && lq.runV != v {
		lq.flushRun()
	}
	lq.runN++
	lq.runID, lq.runV = id, v
}

// single appends a verdict of its own (with a payload, or NF_REPEAT),
// after the pending run.
func (lq *linkQueue) single(id, v uint32, payload []byte) {
	lq.flushRun()
	lq.out = nfqueue.AppendVerdict(lq.out, lq.q.Num(), id, v, payload)
}

func (lq *linkQueue) flushRun() {
	switch {
	case lq.runN == 1:
		lq.out = nfqueue.AppendVerdict(lq.out, lq.q.Num(), lq.runID, lq.runV, nil)
	case lq.runN > 1:
		lq.out = nfqueue.AppendVerdictBatch(lq.out, lq.q.Num(), lq.runID, lq.runV)
	}
	lq.runN = 0
}

// buildFrame writes the Ethernet frame an XDP program sees for p into
// lq.frame: the link-layer header of the message when it has one (bridge
// family), else a synthesized one (destination: the receiving
// interface's address, source: the message's hardware address, EtherType
// the packet's), then the payload.
func (lq *linkQueue) buildFrame(p *nfqueue.Packet) []byte {
	f := lq.frame
	if len(p.L2Hdr) >= ethHdrLen && len(p.L2Hdr) <= 64 && len(p.L2Hdr)+len(p.Payload) <= cap(f) {
		n := copy(f, p.L2Hdr)
		lq.l3off = n
		n += copy(f[n:], p.Payload)
		return f[:n]
	}
	lq.l3off = ethHdrLen
	clear(f[:12])
	in := p.InDev != 0
	if in {
		lq.macs.get(p.InDev, (*[6]byte)(f[0:6]))
		if len(p.HwAddr) == 6 {
			copy(f[6:12], p.HwAddr)
		}
	} else if p.OutDev != 0 {
		lq.macs.get(p.OutDev, (*[6]byte)(f[6:12]))
	}
	binary.BigEndian.PutUint16(f[12:], p.HwProtocol)
	n := copy(f[ethHdrLen:], p.Payload)
	return f[:ethHdrLen+n]
}

// skbMeta fills the __sk_buff fields a socket filter reads, as the kernel
// sets them for the packet (see docs: pkt_type from the destination
// address, hash a flow hash).
func (lq *linkQueue) skbMeta(p *nfqueue.Packet) prog.SkbMeta {
	m := prog.SkbMeta{Len: p.CapLen, Mark: p.Mark, Protocol: uint32(bits.ReverseBytes16(p.HwProtocol)),
		Priority: p.Priority}
	switch p.Hook {
	case nfqueue.HookLocalOut, nfqueue.HookPostRouting:
		m.Ifindex = p.OutDev
	default:
		m.Ifindex, m.IngressIfindex = p.InDev, p.InDev
		m.PktType = pktType(p)
	}
	if m.Ifindex == 0 {
		m.Ifindex = p.InDev | p.OutDev
	}
	if p.VlanProto != 0 {
		m.VlanPresent, m.VlanTCI, m.VlanProto = 1, uint32(p.VlanTCI), uint32(bits.ReverseBytes16(p.VlanProto))
	}
	m.Hash = lq.flowHash(p)
	return m
}

// PACKET_* types.
const (
	packetHost      = 0
	packetBroadcast = 1
	packetMulticast = 2
)

// pktType infers an incoming packet's skb->pkt_type from its destination
// address (the message does not carry the link-layer destination).
func pktType(p *nfqueue.Packet) uint32 {
	b := p.Payload
	switch p.HwProtocol {
	case unix.ETH_P_IP:
		if len(b) >= 20 {
			if b[16]&0xf0 == 0xe0 {
				return packetMulticast
			}
			if b[16] == 255 && b[17] == 255 && b[18] == 255 && b[19] == 255 {
				return packetBroadcast
			}
		}
	case unix.ETH_P_IPV6:
		if len(b) >= 40 && b[24] == 0xff {
			return packetMulticast
		}
	}
	return packetHost
}

// flowHash is the packet's flow hash (skb->hash): a keyed hash of the
// addresses, protocol and ports, the same for every packet of a flow and
// never 0, like the kernel's (whose key is also a random boot-time one).
func (lq *linkQueue) flowHash(p *nfqueue.Packet) uint32 {
	b := p.Payload
	var key []byte
	switch {
	case p.HwProtocol == unix.ETH_P_IP && len(b) >= 20:
		ihl := int(b[0]&0xf) * 4
		key = b[12:20]
		if (b[9] == unix.IPPROTO_TCP || b[9] == unix.IPPROTO_UDP) && len(b) >= ihl+4 && ihl >= 20 {
			h := maphash.Bytes(lq.seed, key) ^ uint64(b[9])<<56 ^ uint64(binary.BigEndian.Uint32(b[ihl:]))
			return uint32(h>>32^h) | 1
		}
	case p.HwProtocol == unix.ETH_P_IPV6 && len(b) >= 40:
		key = b[8:40]
		if (b[6] == unix.IPPROTO_TCP || b[6] == unix.IPPROTO_UDP) && len(b) >= 44 {
			h := maphash.Bytes(lq.seed, key) ^ uint64(b[6])<<56 ^ uint64(binary.BigEndian.Uint32(b[40:]))
			return uint32(h>>32^h) | 1
		}
	default:
		return 0
	}
	h := maphash.Bytes(lq.seed, key)
	return uint32(h>>32^h) | 1
}

// failVerdict is the verdict of packets a detached link did not decide.
func (lq *linkQueue) failVerdict() uint32 {
	if lq.l.flags&wire.LinkFlagFailOpen != 0 {
		return nfqueue.Accept
	}
	return nfqueue.Drop
}

// drain settles the packets still queued when the link stops (those the
// socket holds, not yet read): accepted when fail-open, dropped
// otherwise, then the socket is closed (the kernel drops anything that
// arrives in between).
func (lq *linkQueue) drain() {
	v := lq.failVerdict()
	for {
		n, err := lq.q.ReceiveNow()
		if err != nil || n == 0 {
			break
		}
		lq.out = lq.out[:0]
		for i := 0; i < n; i++ {
			for b := lq.q.Datagram(i); len(b) > 0; {
				msg, rest, err := nfqueue.Split(b)
				if err != nil {
					break
				}
				b = rest
				if nfqueue.Classify(msg) == nfqueue.KindPacket && nfqueue.Parse(msg, &lq.pk) == nil {
					lq.add(lq.pk.ID, v)
				}
			}
		}
		lq.flushRun()
		if len(lq.out) > 0 {
			lq.q.Send(lq.out)
		}
	}
	lq.q.Close()
}

// logf logs a worker problem at most once a second.
func (lq *linkQueue) logf(msg string, err error) {
	if now := time.Now(); now.Sub(lq.lastLog) >= time.Second {
		lq.lastLog = now
		lq.l.srv.log.Warn(msg, zap.Uint32("link", lq.l.obj.id), zap.Uint16("queue", lq.q.Num()), zap.Error(err))
	}
}

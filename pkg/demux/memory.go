package demux

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Memory accounting.
//
// Every byte the daemon holds for a client is charged to the client's uid
// and checked against its Quota.Memory, and the sum over all uids against
// Config.MaxMemory, before the memory is taken:
//
//   - objects (usage.mem, also capped by Quota.MapMemory): map storage;
//     programs' instructions (raw and decoded), line info and kept log;
//   - descriptors: descCost each (the record, its lineage links and epoll
//     registration; the socket pair itself is kernel memory);
//   - connections: connCost each while connected (the conn, its small
//     buffers, its goroutine), handle tables in handleChunk steps;
//   - seccomp attachments: attachCost each;
//   - requests in flight (released when the reply is sent): a big buffer
//     borrowed to receive a long request or build a long inline reply; a
//     request memfd while it is mapped; verifier state (verifyFixed, plus
//     verifyPerInsn per instruction, plus the saved states as the
//     verifier reports them); test-run copies of the packet and context;
//   - reply memfds: their pages from the moment they are written until
//     the last copy anywhere (the client's fds, fds in flight in a socket,
//     mappings) is gone, which the daemon learns from inotify (the
//     memfd's inode is dropped: IN_IGNORED).
//
// What is not charged: the Go runtime's own overhead (heap metadata,
// garbage not yet collected, idle pooled buffers), the fixed cost of the
// daemon itself, and kernel memory outside the daemon's address space
// (socket buffers of queued requests belong to the sending client's
// socket). docs/security.md states the resulting bound on the daemon's
// RSS.

// Buffer sizes and costs charged.
const (
	// smallBuf is the size of a connection's own request and reply
	// buffers: element operations, handles and status fit.
	smallBuf = 4096
	// bigBuf is the size of the buffers lent to long requests and
	// replies: one message.
	bigBuf = wire.MaxMessage
	// descCost is charged per descriptor.
	descCost = 1024
	// handleCost is charged per handle-table slot, handleChunk slots at
	// a time.
	handleCost  = 256
	handleChunk = 64
	// attachCost is charged per seccomp attachment: its goroutine,
	// listener and task buffers.
	attachCost = 16 << 10
	// stackCost is what a goroutine's stack is counted as.
	stackCost = 8 << 10
	// progFixedCost is charged per program beyond its instructions: its
	// record, map slots, pooled VMs.
	progFixedCost = 16 << 10
	// progInsnCost is charged per instruction of a loaded program: the
	// raw copy kept for dumps and the decoded form.
	progInsnCost = 8 + 16
	// verifyPerInsn and verifyFixed are charged while a program is
	// verified: the verifier's per-instruction tables, and its log
	// (capped at 1 MiB) with the copies made of it. Saved states are
	// charged as the verifier reports them (verifier.Env.Charge).
	verifyPerInsn = 192
	verifyFixed   = 3 << 20
)

// connCost is charged per connection while it lives: the conn, its own
// buffers, its goroutine, and its socket's Go wrappers (2 KiB).
var connCost = uint64(unsafe.Sizeof(conn{})) + 2*smallBuf + uint64(scmrights.OOBSize(wire.MaxFDs)) +
	wire.MaxFDs*8 + stackCost + 2048

// Memory errors. Both are ENOMEM, as the kernel's allocation failures.
var (
	// ErrMemoryQuota: the uid's Quota.Memory does not allow the request.
	ErrMemoryQuota = errno.New(unix.ENOMEM, "demux: memory quota exceeded")
	// ErrDaemonMemory: the daemon's memory cap (Config.MaxMemory) is
	// reached.
	ErrDaemonMemory = errno.New(unix.ENOMEM, "demux: the daemon's memory cap is reached")
)

// pageRound rounds n up to whole pages.
func pageRound(n uint64) uint64 {
	const page = 4096
	return (n + page - 1) &^ (page - 1)
}

// memCheckLocked checks that n more bytes fit u's Quota.Memory (q) and
// the daemon's cap. r.mu must be held.
func (r *registry) memCheckLocked(u *usage, q Quota, n uint64) error {
	used := u.mem + u.transient + uint64(u.descs)*descCost
	if used+n > q.Memory || used+n < used {
		return ErrMemoryQuota
	}
	global := r.total + uint64(len(r.descs)+r.pins)*descCost
	if global+n > r.cfg.MaxMemory || global+n < global {
		return ErrDaemonMemory
	}
	return nil
}

// chargeLocked charges n transient bytes to uid, or fails with
// ErrMemoryQuota or ErrDaemonMemory. r.mu must be held.
func (r *registry) chargeLocked(uid uint32, n uint64) error {
	u := r.usage(uid)
	if err := r.memCheckLocked(u, r.cfg.quotaFor(uid), n); err != nil {
		return err
	}
	u.transient += n
	r.total += n
	return nil
}

// charge is chargeLocked taking the lock.
func (r *registry) charge(uid uint32, n uint64) error {
	if n == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chargeLocked(uid, n)
}

// forceCharge charges n transient bytes to uid even beyond its quota (for
// small, bounded growth that cannot be refused where it happens).
func (r *registry) forceCharge(uid uint32, n uint64) {
	r.mu.Lock()
	r.usage(uid).transient += n
	r.total += n
	r.mu.Unlock()
}

// uncharge returns n transient bytes charged to uid.
func (r *registry) uncharge(uid uint32, n uint64) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	r.unchargeLocked(uid, n)
	r.mu.Unlock()
}

func (r *registry) unchargeLocked(uid uint32, n uint64) {
	u := r.usage(uid)
	u.transient -= n
	r.total -= n
}

// chargeReq charges n bytes to the connection's uid for the request in
// progress (released by endRequest).
func (c *conn) chargeReq(n uint64) error {
	if err := c.reg.charge(c.uid, n); err != nil {
		return err
	}
	c.req += n
	return nil
}

// endRequest releases what the request was charged.
func (c *conn) endRequest() {
	c.reg.uncharge(c.uid, c.req)
	c.req = 0
}

// tryAlloc is alloc for optional reply data (a verifier log): nil, without
// failing the request, when memory does not allow it.
func (c *conn) tryAlloc(n int) []byte {
	if c.allocErr != nil {
		return nil
	}
	b := c.alloc(n)
	if b == nil {
		c.allocErr = nil
	}
	return b
}

// bufPool lends the big buffers (one message long) of long requests and
// replies. It implements scmrights.Spill. Safe for concurrent use.
type bufPool struct{ p sync.Pool }

// Get returns a big buffer.
func (b *bufPool) Get() []byte {
	if a, ok := b.p.Get().(*[bigBuf]byte); ok {
		return a[:]
	}
	return new([bigBuf]byte)[:]
}

// Put takes back a buffer Get returned (whole).
func (b *bufPool) Put(buf []byte) { b.p.Put((*[bigBuf]byte)(buf[:bigBuf])) }

// DefaultMaxMemory is the default cap on the daemon's memory: half of the
// memory it may use, the smaller of the machine's (MemTotal) and its
// cgroup's limit (cgroup v2 memory.max, or v1 memory.limit_in_bytes), so
// that the daemon refuses work (ENOMEM) well before the kernel's OOM
// killer would act. 1 GiB if neither can be read.
func DefaultMaxMemory() uint64 {
	limit := memTotal()
	if cg := cgroupMemoryLimit(); cg > 0 && (limit == 0 || cg < limit) {
		limit = cg
	}
	if limit == 0 {
		return 1 << 30
	}
	return limit / 2
}

// memTotal returns MemTotal from /proc/meminfo in bytes, or 0.
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// cgroupMemoryLimit returns this process's cgroup memory limit in bytes,
// or 0 if there is none or it cannot be read.
func cgroupMemoryLimit() uint64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			file = "/sys/fs/cgroup" + parts[2] + "/memory.max"
		case strings.Contains(","+parts[1]+",", ",memory,"):
			file = "/sys/fs/cgroup/memory" + parts[2] + "/memory.limit_in_bytes"
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(v))
		if s == "max" {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n >= 1<<62 { // v1 "unlimited" is a huge number
			continue
		}
		return n
	}
	return 0
}

// memfdTracker keeps the reply memfds the daemon handed out charged to
// their uid until the kernel frees them: an inotify watch on each memfd's
// inode reports IN_IGNORED when the inode is dropped, i.e. when the last
// file description (the client's fds, fds in flight in a socket queue,
// mappings, reopened copies) is gone. The watch does not keep the inode
// alive. Safe for concurrent use.
type memfdTracker struct {
	log *zap.Logger
	reg *registry

	mu     sync.Mutex
	f      *os.File               // the inotify fd; nil when the tracker is off; guarded by mu
	byWD   map[int32]trackedMemfd // guarded by mu
	closed bool                   // guarded by mu
	done   chan struct{}
}

type trackedMemfd struct {
	uid   uint32
	bytes uint64
}

// newMemfdTracker starts the tracker's reader. If inotify is unavailable
// the tracker still works, degraded: a memfd's charge then ends when its
// reply is sent (track returns at once).
func newMemfdTracker(log *zap.Logger, reg *registry) *memfdTracker {
	t := &memfdTracker{log: log, reg: reg, byWD: map[int32]trackedMemfd{}, done: make(chan struct{})}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		log.Warn("inotify unavailable: reply memfds are charged only until they are sent", zap.Error(err))
		close(t.done)
		return t
	}
	t.f = os.NewFile(uintptr(fd), "inotify")
	go t.read(t.f)
	return t
}

// track charges bytes of memfd fd to uid until the memfd is freed
// everywhere. The caller has charged the bytes already; on failure
// (ErrDaemonMemory: no watch could be added — the kernel's per-user limit
// on inotify watches) the charge is returned and the reply must not be
// sent. With no inotify, the charge is returned at once.
func (t *memfdTracker) track(fd int, uid uint32, bytes uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil || t.closed {
		t.reg.uncharge(uid, bytes)
		return nil
	}
	var path [32]byte
	p := strconv.AppendInt(append(path[:0], "/proc/self/fd/"...), int64(fd), 10)
	var wd int
	var werr error
	cerr := rawControl(t.f, func(ifd int) {
		wd, werr = unix.InotifyAddWatch(ifd, string(p), unix.IN_DELETE_SELF|unix.IN_EXCL_UNLINK)
	})
	if cerr != nil || werr != nil {
		t.reg.uncharge(uid, bytes)
		if werr == unix.ENOSPC {
			return ErrDaemonMemory
		}
		if werr == nil {
			werr = cerr
		}
		return errno.Of(os.NewSyscallError("inotify_add_watch", werr), unix.ENOMEM)
	}
	if old, ok := t.byWD[int32(wd)]; ok {
		// Cannot happen (one watch per inode, and the inode is new);
		// keep the books right if it does.
		t.reg.uncharge(old.uid, old.bytes)
	}
	t.byWD[int32(wd)] = trackedMemfd{uid: uid, bytes: bytes}
	return nil
}

// rawControl runs f with f's fd.
func rawControl(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// outstanding returns the number of reply memfds still charged and their
// bytes.
func (t *memfdTracker) outstanding() (n int, bytes uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.byWD {
		n++
		bytes += m.bytes
	}
	return n, bytes
}

// read handles inotify events from f until the tracker is closed.
func (t *memfdTracker) read(f *os.File) {
	defer close(t.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return // closed
		}
		overflow := false
		t.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				overflow = true
				continue
			}
			if ev.Mask&unix.IN_IGNORED == 0 {
				continue
			}
			if m, ok := t.byWD[ev.Wd]; ok {
				delete(t.byWD, ev.Wd)
				t.reg.uncharge(m.uid, m.bytes)
			}
		}
		t.mu.Unlock()
		if overflow {
			t.reconcile()
		}
	}
}

// reconcile recovers from a lost event (queue overflow): the watches the
// kernel still has are listed in the inotify fd's fdinfo; every tracked
// memfd not among them was freed.
func (t *memfdTracker) reconcile() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return
	}
	ifd := -1
	rawControl(t.f, func(fd int) { ifd = fd })
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(ifd))
	if err != nil {
		t.log.Warn("inotify overflow and fdinfo unreadable; reply memfd charges kept", zap.Error(err))
		return
	}
	live := map[int32]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "inotify wd:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if wd, err := strconv.ParseInt(f[0], 16, 32); err == nil {
			live[int32(wd)] = true
		}
	}
	for wd, m := range t.byWD {
		if !live[wd] {
			delete(t.byWD, wd)
			t.reg.uncharge(m.uid, m.bytes)
		}
	}
}

// close stops tracking: every charge still held is returned.
func (t *memfdTracker) close() {
	t.mu.Lock()
	t.closed = true
	f := t.f
	t.f = nil
	for wd, m := range t.byWD {
		delete(t.byWD, wd)
		t.reg.uncharge(m.uid, m.bytes)
	}
	t.mu.Unlock()
	if f != nil {
		f.Close()
	}
	<-t.done
}

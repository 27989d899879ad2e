package bpfemu

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// object is a bpfd object the supervisor holds on the process's behalf: a
// handle on the supervisor's connection and the supervisor's own copy of
// the descriptor the process holds (which keeps the descriptor's identity:
// its socket inode cannot be reused while the copy lives).
type object struct {
	handle uint32
	fd     int    // the supervisor's copy of the descriptor; owned
	ino    uint64 // the descriptor's socket inode
	gen    uint64 // table generation when the object was added
	info   wire.ObjInfo

	busy int // calls using the object now; guarded by table.mu

	// A program's dump, fetched once (progDump); guarded by table.mu.
	dumped bool
	xlated []byte
	mapIDs []uint32

	// A map's storage mapped for reads (view.go); retired mappings wait
	// for the object to go (guarded by table.mu).
	view    atomic.Pointer[mapState]
	retired [][]byte
}

// fdKey names an fd number in one task's fd table.
type fdKey struct{ tid, fd int32 }

// table maps the fds of the traced tasks to the objects behind them.
//
// An fd number is resolved to its object by asking whether the task's fd
// and the supervisor's copy are the same open file (kcmp KCMP_FILE, one
// syscall); an fd seen for the first time is fetched with pidfd_getfd and
// identified by its socket inode, and a descriptor the supervisor has
// never seen is presented to bpfd (IMPORT), exactly as a pkg/client
// program presents a descriptor it received.
//
// The supervisor's copies keep objects alive, so collect drops every
// object no traced task holds any more (it reads /proc/TID/fd): the
// process's close(2) of its last copy then frees the object in the daemon,
// like the kernel's, within one collection period.
//
// Concurrency: all fields are guarded by mu; objects are used outside mu
// only while their busy count is raised.
type table struct {
	mu    sync.Mutex
	byIno map[uint64]*object
	byFD  map[fdKey]*object
	tids  map[int32]struct{} // tasks that made a routed call
	gen   uint64             // incremented by every collection
}

func (t *table) init() {
	t.byIno = map[uint64]*object{}
	t.byFD = map[fdKey]*object{}
	t.tids = map[int32]struct{}{}
}

// kcmpFile is KCMP_FILE from linux/kcmp.h.
const kcmpFile = 0

// sameFile reports whether fd ours of this process and fd theirs of task
// tid are the same open file (kcmp(2)). ESRCH: the task is gone; EBADF:
// theirs is not open.
func sameFile(self, tid int, ours, theirs int) (bool, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(tid), kcmpFile,
		uintptr(ours), uintptr(theirs), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, 0
}

// getFD duplicates fd of task tid into the supervisor (pidfd_getfd),
// O_CLOEXEC. EBADF if the task has no such fd, errTaskGone if the task
// died.
func (c *call) getFD(fd int32) (int, error) {
	pidfd, err := unix.PidfdOpen(c.tid, unix.O_EXCL) // PIDFD_THREAD (Linux 6.9)
	if err == unix.EINVAL {
		var tgid int
		if tgid, err = c.tgid(); err != nil {
			return -1, err
		}
		pidfd, err = unix.PidfdOpen(tgid, 0)
	}
	if err != nil {
		return -1, errTaskGone
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if verr := c.s.ans.valid(c.id); verr != nil {
		if err == nil {
			unix.Close(dup)
		}
		return -1, verr
	}
	if err != nil {
		if err == unix.ESRCH {
			return -1, errTaskGone
		}
		return -1, unix.EBADF
	}
	return dup, nil
}

// tgid reads the thread-group id of the calling task from /proc.
func (c *call) tgid() (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.tid) + "/status")
	if err != nil {
		return 0, errTaskGone
	}
	if err := c.s.ans.valid(c.id); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err == nil {
				return n, nil
			}
		}
	}
	return 0, errTaskGone
}

// resolve returns the object behind fd in the calling task, with its busy
// count raised (put it back with s.put). Errors: EBADF (fd not open),
// EINVAL (open but not a bpfd descriptor, as the kernel's "not a bpf
// object"), errTaskGone, or a transport error.
func (c *call) resolve(fd int32) (*object, error) {
	if fd < 0 {
		return nil, unix.EBADF
	}
	s := c.s
	t := &s.tab
	key := fdKey{int32(c.tid), fd}
	t.mu.Lock()
	o := t.byFD[key]
	if o != nil {
		o.busy++
	}
	t.mu.Unlock()
	if o != nil {
		same, e := sameFile(s.pid, c.tid, o.fd, int(fd))
		c.dirty = true // about the task: checked with what is read next
		if e == 0 && same {
			return o, nil
		}
		t.mu.Lock()
		o.busy--
		if t.byFD[key] == o {
			delete(t.byFD, key)
		}
		t.mu.Unlock()
		if e == unix.ESRCH {
			return nil, errTaskGone
		}
	}
	dup, err := c.getFD(fd)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(dup)
		return nil, unix.EINVAL
	}
	t.mu.Lock()
	if o = t.byIno[st.Ino]; o != nil {
		o.busy++
		t.byFD[key] = o
		t.mu.Unlock()
		unix.Close(dup)
		return o, nil
	}
	t.mu.Unlock()
	o, err = s.importFD(dup)
	if err != nil {
		unix.Close(dup)
		return nil, err
	}
	o.ino = st.Ino
	return s.add(o, key), nil
}

// importFD presents dup (which stays the caller's on failure, the new
// object's on success) to bpfd. EINVAL if bpfd does not know it.
func (s *Supervisor) importFD(dup int) (*object, error) {
	var ab [wire.ImportAttrSize]byte
	attr := (&wire.ImportAttr{}).Append(ab[:0])
	var out [wire.ObjInfoSize + 64]byte
	r, err := s.conn.do(wire.CmdImport, attr, []int{dup}, out[:])
	if err != nil {
		return nil, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		if r.Errno == unix.EBADF {
			return nil, unix.EINVAL // a socket, but not a bpfd descriptor
		}
		return nil, r.Errno
	}
	o := &object{handle: uint32(r.Ret), fd: dup}
	if !o.info.Parse(r.Data) {
		s.releaseHandle(o.handle)
		return nil, unix.EIO
	}
	return o, nil
}

// add inserts o (fd and ino set) unless an object with the same inode
// arrived meanwhile, in which case o is dropped and the other returned.
// The returned object has its busy count raised and is cached for key
// (when key.fd >= 0).
func (s *Supervisor) add(o *object, key fdKey) *object {
	t := &s.tab
	t.mu.Lock()
	if prev := t.byIno[o.ino]; prev != nil {
		prev.busy++
		if key.fd >= 0 {
			t.byFD[key] = prev
		}
		t.mu.Unlock()
		s.drop(o)
		return prev
	}
	o.gen = t.gen
	o.busy++
	t.byIno[o.ino] = o
	if key.fd >= 0 {
		t.byFD[key] = o
	}
	t.mu.Unlock()
	return o
}

// put ends a call's use of o.
func (s *Supervisor) put(o *object) {
	if o == nil {
		return
	}
	s.tab.mu.Lock()
	o.busy--
	s.tab.mu.Unlock()
}

// newObject wraps a descriptor bpfd just made for the supervisor (fd owned,
// handle, ObjInfo in data) into an unregistered object.
func (s *Supervisor) newObject(fd int, handle uint32, data []byte) (*object, error) {
	o := &object{handle: handle, fd: fd}
	var st unix.Stat_t
	if fd < 0 || !o.info.Parse(data) || unix.Fstat(fd, &st) != nil {
		s.drop(o)
		return nil, unix.EIO
	}
	o.ino = st.Ino
	return o, nil
}

// drop releases an object's handle and closes its descriptor copy.
func (s *Supervisor) drop(o *object) {
	unmapViews(o)
	s.releaseHandle(o.handle)
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

func (s *Supervisor) releaseHandle(h uint32) {
	if h == 0 {
		return
	}
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: h}).Append(ab[:0])
	s.conn.do(wire.CmdRelease, attr, nil, nil) // a lost connection drops it anyway
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// seen records that task tid makes routed calls, so that collect looks at
// its fd table.
func (s *Supervisor) seen(tid int) {
	t := &s.tab
	t.mu.Lock()
	t.tids[int32(tid)] = struct{}{}
	t.mu.Unlock()
}

// collect drops every object that no traced task holds a descriptor of,
// and forgets tasks that are gone. Objects added after the scan started
// and objects in use are kept.
func (s *Supervisor) collect() {
	t := &s.tab
	t.mu.Lock()
	if len(t.byIno) == 0 {
		t.mu.Unlock()
		return
	}
	gen := t.gen
	t.gen++
	tids := make([]int32, 0, len(t.tids))
	for tid := range t.tids {
		tids = append(tids, tid)
	}
	t.mu.Unlock()

	held := map[uint64]bool{}
	var gone []int32
	var buf [64]byte
	for _, tid := range tids {
		dir := "/proc/" + strconv.Itoa(int(tid)) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
				gone = append(gone, tid)
			}
			continue
		}
		for _, e := range ents {
			n, err := unix.Readlink(dir+"/"+e.Name(), buf[:])
			if err != nil {
				continue
			}
			if ino, ok := socketInode(buf[:n]); ok {
				held[ino] = true
			}
		}
	}

	var victims []*object
	t.mu.Lock()
	for _, tid := range gone {
		delete(t.tids, tid)
	}
	for ino, o := range t.byIno {
		if held[ino] || o.busy > 0 || o.gen > gen {
			continue
		}
		delete(t.byIno, ino)
		victims = append(victims, o)
	}
	for k, o := range t.byFD {
		if slices.Contains(victims, o) || slices.Contains(gone, k.tid) {
			delete(t.byFD, k)
		}
	}
	t.mu.Unlock()
	for _, o := range victims {
		s.drop(o)
	}
}

// socketInode parses "socket:[N]", the link /proc/PID/fd shows for a
// socket.
func socketInode(link []byte) (uint64, bool) {
	const pre = "socket:["
	if len(link) < len(pre)+2 || string(link[:len(pre)]) != pre || link[len(link)-1] != ']' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(link[len(pre):len(link)-1]), 10, 64)
	return n, err == nil
}

// objects returns the objects of kind the supervisor holds, by id (for the
// GET_NEXT_ID family). When several handles name one object the one with
// the widest mode is kept.
func (s *Supervisor) objects(kind wire.ObjType) map[uint32]*object {
	t := &s.tab
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[uint32]*object{}
	for _, o := range t.byIno {
		if o.info.ObjType != kind {
			continue
		}
		if p := out[o.info.ID]; p == nil || (o.info.Mode&^p.info.Mode) != 0 {
			out[o.info.ID] = o
		}
	}
	return out
}

// hold raises o's busy count (o must be registered).
func (s *Supervisor) hold(o *object) {
	s.tab.mu.Lock()
	o.busy++
	s.tab.mu.Unlock()
}

// closeObjects drops every object (at Close).
func (s *Supervisor) closeObjects() {
	t := &s.tab
	t.mu.Lock()
	objs := make([]*object, 0, len(t.byIno))
	for _, o := range t.byIno {
		objs = append(objs, o)
	}
	t.init()
	t.mu.Unlock()
	for _, o := range objs {
		s.drop(o)
	}
}

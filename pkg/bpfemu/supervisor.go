package bpfemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/percpu"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// DefaultBPFFS is the directory emulated processes see as the bpf
// filesystem when Config.BPFFS is empty.
const DefaultBPFFS = "/sys/fs/bpf"

// CollectInterval is how often the supervisor looks for objects the
// traced processes no longer hold (see Supervisor).
const CollectInterval = time.Second

// Config configures a Supervisor. Plain data; nil means defaults.
type Config struct {
	// Socket is the daemon's socket; empty means client.DefaultSocket()
	// ($BPFD_SOCKET, else the default path). The supervisor opens a
	// connection of its own: every object the traced processes use is
	// reached through it, with the rights of the descriptors they hold.
	// It needs no privilege.
	Socket string
	// BPFFS is the directory the traced processes see as the bpf
	// filesystem: pins, pin directories, statfs, stat, open, unlink and
	// rename of paths under it are answered from the daemon's pin root.
	// Empty means DefaultBPFFS. It must be absolute and clean.
	BPFFS string
	// PinRoot is the daemon's pin root as this process sees it; empty asks
	// the daemon (STATUS). A daemon without pins leaves only bpf(2)
	// without OBJ_PIN/OBJ_GET, which then fail with EPERM/EACCES as for a
	// path outside any bpffs.
	PinRoot string
	// BPFOnly routes only bpf(2) itself: no filesystem emulation (pins
	// still work through bpf(2); statfs of the prefix is not bpffs, so
	// libbpf and bpftool refuse to pin there). Cheaper for programs that
	// open many files.
	BPFOnly bool
	// Trace, if not nil, receives one line per routed call (command,
	// result): a debugging aid.
	Trace io.Writer
}

// Supervisor answers the bpf(2) calls of processes filtered by a seccomp
// user-notification filter (and the file system calls tools make around
// it) by acting as an ordinary bpfd client: see the package doc.
//
// Concurrency: Serve runs once; Close may be called from any goroutine,
// also while Serve runs (it makes Serve return). Calls are answered on
// Serve's thread, except program loads, test runs and batches, which run
// on goroutines of their own so that a long verification does not hold up
// the other threads' lookups.
type Supervisor struct {
	conn    *wireConn
	bpffs   string
	pinRoot string // "" without pins
	bpfOnly bool
	trace   io.Writer
	traceMu sync.Mutex

	rootFD int // the pin root (O_PATH), -1 without pins

	n       *notifier // set once by Serve, before it checks closed
	ans     answerer  // how calls answer: n, or a test's fake
	nptr    atomic.Pointer[notifier]
	serveWG sync.WaitGroup // Serve running
	tab     table
	listed  atomic.Int64 // UnixNano of the last collection for a listing
	serving atomic.Bool
	closed  atomic.Bool
	wg      sync.WaitGroup // calls answered on goroutines of their own

	ncpu int // possible CPUs: per-CPU value layout
	pid  int // this process

	progMeta sync.Map // program id → progMeta, for programs loaded here
	limits   sync.Map // tgid → unix.Rlimit: RLIMIT_MEMLOCK as the task set it (rlimit.go)

	callPool sync.Pool
}

// New connects to bpfd and returns a Supervisor acting through that
// connection (closed by Close). It asks the daemon for its pin root unless
// cfg.PinRoot is set. Errors: ErrBadPrefix, the connection's
// (*os.PathError), or the daemon's.
func New(cfg *Config) (*Supervisor, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	s := &Supervisor{bpffs: cfg.BPFFS, pinRoot: cfg.PinRoot, bpfOnly: cfg.BPFOnly, trace: cfg.Trace}
	if s.bpffs == "" {
		s.bpffs = DefaultBPFFS
	}
	if !filepath.IsAbs(s.bpffs) || filepath.Clean(s.bpffs) != s.bpffs {
		return nil, fmt.Errorf("%w: %q", ErrBadPrefix, s.bpffs)
	}
	sock := cfg.Socket
	if sock == "" {
		sock = client.DefaultSocket()
	}
	conn, err := dialWire(sock)
	if err != nil {
		return nil, err
	}
	s.conn = conn
	if s.pinRoot == "" {
		root, err := daemonPinRoot(conn)
		if err != nil {
			conn.close()
			return nil, err
		}
		s.pinRoot = root
	}
	s.rootFD = -1
	if s.pinRoot != "" {
		s.pinRoot = filepath.Clean(s.pinRoot)
		fd, err := unix.Open(s.pinRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			conn.close()
			return nil, &os.PathError{Op: "open", Path: s.pinRoot, Err: err}
		}
		s.rootFD = fd
	}
	s.ncpu = percpu.Possible()
	s.pid = os.Getpid()
	s.tab.init()
	s.callPool.New = func() any { return &call{s: s} }
	return s, nil
}

// daemonPinRoot asks the daemon for its pin root ("" if pins are off).
func daemonPinRoot(c *wireConn) (string, error) {
	r, err := c.do(wire.CmdStatus, nil, nil, nil)
	if err != nil {
		return "", err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return "", r.Errno
	}
	var st struct {
		PinRoot string `json:"pin_root"`
	}
	if err := json.Unmarshal(r.Data, &st); err != nil {
		return "", fmt.Errorf("bpfemu: daemon status: %w", err)
	}
	return st.PinRoot, nil
}

// Syscalls returns the x86_64 syscall numbers the supervisor answers; a
// filter must route exactly these to its listener (ExecConfig.Syscalls of
// pkg/seccomp). Routed calls the supervisor does not emulate (paths
// outside the bpffs prefix, fds that are not its) run in the kernel
// unchanged (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
func (s *Supervisor) Syscalls() []uint32 {
	if s.bpfOnly {
		return []uint32{unix.SYS_BPF}
	}
	return fsSyscalls()
}

// Serve answers the notifications of listenerFD, a seccomp listener whose
// filter routes s.Syscalls() (it takes ownership of the fd), until no task
// uses the filter any more (nil), ctx is done (ctx.Err()), or Close is
// called (nil). Objects still held are kept until Close, so that a caller
// may inspect them; Close releases them. ErrServing if called twice.
func (s *Supervisor) Serve(ctx context.Context, listenerFD int) error {
	if s.serving.Swap(true) {
		unix.Close(listenerFD)
		return ErrServing
	}
	s.serveWG.Add(1)
	defer s.serveWG.Done()
	n, err := newNotifier(listenerFD)
	if err != nil {
		return err
	}
	s.n, s.ans = n, n
	s.nptr.Store(n)
	if s.closed.Load() {
		return nil
	}
	stop := context.AfterFunc(ctx, n.interrupt)
	defer stop()

	gcDone := make(chan struct{})
	gcStop := make(chan struct{})
	go func() {
		defer close(gcDone)
		t := time.NewTicker(CollectInterval)
		defer t.Stop()
		for {
			select {
			case <-gcStop:
				return
			case <-t.C:
				s.collect()
			}
		}
	}()
	defer func() {
		close(gcStop)
		<-gcDone
		s.wg.Wait()
	}()

	// One OS thread receives and answers, so that the notification round
	// trip does not wait for the Go scheduler.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		c := s.callPool.Get().(*call)
		err := n.recv(&c.notif)
		if err != nil {
			s.callPool.Put(c)
			switch {
			case errors.Is(err, errNoTasks):
				return nil
			case errors.Is(err, errNotifierClosed):
				if ctx.Err() != nil && !s.closed.Load() {
					return ctx.Err()
				}
				return nil
			}
			return err
		}
		c.start()
		if c.slow() {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				c.answer()
				s.callPool.Put(c)
			}()
			continue
		}
		c.answer()
		s.callPool.Put(c)
	}
}

// Close stops Serve (tasks waiting in a routed call, and later routed
// calls, fail with ENOSYS, the kernel's answer when nobody listens) and
// releases every handle and descriptor copy the supervisor holds, and
// closes its connection to bpfd.
func (s *Supervisor) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	n := s.nptr.Load()
	if n != nil {
		n.interrupt()
	}
	s.serveWG.Wait()
	if n != nil {
		n.close()
	}
	s.closeObjects()
	if s.rootFD >= 0 {
		unix.Close(s.rootFD)
		s.rootFD = -1
	}
	s.conn.close()
	return nil
}

// call is one notification being answered: its task, and scratch space.
// Calls are pooled; a call is used by one goroutine at a time.
type call struct {
	s     *Supervisor
	notif seccomp.Notif
	id    uint64
	tid   int
	buf   []byte // scratch, see scratch
	buf2  []byte // second scratch buffer, see scratch2
	attr  bpfAttr
	uattr uint64 // the bpf(2) call's attr pointer and size
	usize uint32
	dirty bool // read from the task since the last validity check
}

const maxPooledScratch = 1 << 20

func (c *call) start() {
	c.id, c.tid, c.dirty = c.notif.ID, int(c.notif.PID), false
	if cap(c.buf) > maxPooledScratch {
		c.buf = nil
	}
	if cap(c.buf2) > maxPooledScratch {
		c.buf2 = nil
	}
}

// scratch returns a buffer of n bytes, reused across calls.
func (c *call) scratch(n int) []byte {
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	return c.buf[:n]
}

// scratch2 is scratch for a second buffer needed at the same time.
func (c *call) scratch2(n int) []byte {
	if cap(c.buf2) < n {
		c.buf2 = make([]byte, n)
	}
	return c.buf2[:n]
}

// slow reports whether the call may take long (verification, test runs,
// batches) and is better answered on a goroutine of its own.
func (c *call) slow() bool {
	if c.notif.Data.NR != unix.SYS_BPF {
		return false
	}
	switch c.notif.Data.Args[0] {
	case cmdProgLoad, cmdProgTestRun, cmdBTFLoad, cmdMapLookupBatch, cmdMapLookupAndDeleteBatch,
		cmdMapUpdateBatch, cmdMapDeleteBatch:
		return true
	}
	return false
}

// answer handles the notification and responds to it.
func (c *call) answer() {
	s := c.s
	if c.tid == 0 {
		// The task is not visible in our pid namespace: nothing about it
		// can be read. Let the kernel say what it says to an
		// unprivileged caller.
		s.ans.allow(c.id)
		return
	}
	s.seen(c.tid)
	var val int64
	var err error
	if c.notif.Data.NR == unix.SYS_BPF {
		val, err = c.bpf()
	} else {
		val, err = c.fs()
	}
	if s.trace != nil {
		s.traceCall(c, val, err)
	}
	switch {
	case err == nil:
		s.ans.respond(c.id, val, 0)
	case err == errAnswered || err == errTaskGone:
	case err == errContinue:
		s.ans.allow(c.id)
	default:
		s.ans.respond(c.id, 0, errnoOf(err))
	}
}

// errnoOf maps a handler error to the errno the process sees: errnos as
// they are; a lost daemon connection (or any other failure of the
// supervisor itself) is EIO.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	var ee *errno.Error
	if errors.As(err, &ee) && ee.Errno() != 0 {
		return ee.Errno()
	}
	return unix.EIO
}

func (s *Supervisor) traceCall(c *call, val int64, err error) {
	what := syscallName(c.notif.Data.NR)
	if c.notif.Data.NR == unix.SYS_BPF {
		what = "bpf(" + cmdName(c.notif.Data.Args[0]) + ")"
	}
	res := fmt.Sprintf("= %d", val)
	switch {
	case err == errContinue:
		res = "(kernel)"
	case err == errAnswered:
		res = "= new fd"
	case err != nil:
		res = "= " + errnoOf(err).Error()
	}
	s.traceMu.Lock()
	fmt.Fprintf(s.trace, "bpfemu: tid %d %s %s\n", c.tid, what, res)
	s.traceMu.Unlock()
}

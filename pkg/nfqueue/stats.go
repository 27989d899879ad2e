package nfqueue

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// ErrNoStats: the kernel lists no such queue in its statistics.
var ErrNoStats = errno.New(unix.ENOENT, "nfqueue: queue not in /proc/net/netfilter/nfnetlink_queue")

// KernelStats is one line of /proc/net/netfilter/nfnetlink_queue: the
// kernel's view of a queue instance.
type KernelStats struct {
	Queue     uint16 `json:"queue"`
	PortID    uint32 `json:"portid"`
	Waiting   uint32 `json:"waiting"` // packets queued, waiting for a verdict
	CopyMode  uint8  `json:"copy_mode"`
	CopyRange uint32 `json:"copy_range"`
	// QueueDropped counts packets dropped (or, fail-open, accepted)
	// because the queue was full.
	QueueDropped uint32 `json:"queue_dropped"`
	// UserDropped counts packets the kernel could not deliver to the
	// socket (receive buffer full).
	UserDropped uint32 `json:"user_dropped"`
	IDSequence  uint32 `json:"id_sequence"` // last packet id handed out
}

// ParseStats finds queue's line in the content of
// /proc/net/netfilter/nfnetlink_queue ("queue portid waiting copy_mode
// copy_range queue_dropped user_dropped id_sequence 1" per line). It
// returns ErrNoStats when the queue is not listed.
func ParseStats(b []byte, queue uint16) (KernelStats, error) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var f [8]uint64
		n := 0
		for _, w := range bytes.Fields(line) {
			if n == len(f) {
				break
			}
			v, err := strconv.ParseUint(string(w), 10, 32)
			if err != nil {
				break
			}
			f[n] = v
			n++
		}
		if n < len(f) || f[0] != uint64(queue) {
			continue
		}
		return KernelStats{Queue: queue, PortID: uint32(f[1]), Waiting: uint32(f[2]), CopyMode: uint8(f[3]),
			CopyRange: uint32(f[4]), QueueDropped: uint32(f[5]), UserDropped: uint32(f[6]), IDSequence: uint32(f[7])}, nil
	}
	return KernelStats{}, ErrNoStats
}

// StatsReader reads the kernel's queue statistics of one network
// namespace. Safe for concurrent use.
type StatsReader struct {
	mu  sync.Mutex
	f   *os.File // guarded by mu
	buf []byte   // guarded by mu
}

// OpenStats opens /proc/net/netfilter/nfnetlink_queue of the network
// namespace netns (an fd, as Queue.NetNS; -1 for the caller's own). The
// file stays bound to that namespace. Entering another namespace needs
// CAP_SYS_ADMIN; the error is the kernel's. The caller's own namespace is
// never entered (OwnNetNS), so a daemon without CAP_SYS_ADMIN (bpfd.service)
// reads the statistics of the queues in its own namespace.
func OpenStats(netns int) (*StatsReader, error) {
	const path = "/proc/thread-self/net/netfilter/nfnetlink_queue"
	if netns < 0 || OwnNetNS(netns) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return &StatsReader{f: f}, nil
	}
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// A thread whose namespace could not be restored is never
		// unlocked: it dies with this goroutine.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, err}
			return
		}
		defer self.Close()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, os.NewSyscallError("setns", err)}
			return
		}
		f, err := os.Open(path)
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- res{f, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return &StatsReader{f: r.f}, nil
}

// OwnNetNS reports whether netns (an fd of a network namespace, as
// Queue.NetNS) is the calling thread's own network namespace: then
// nothing needs to enter it (setns, which needs CAP_SYS_ADMIN).
func OwnNetNS(netns int) bool {
	var a, b unix.Stat_t
	if netns < 0 || unix.Fstat(netns, &a) != nil || unix.Stat("/proc/thread-self/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Read returns queue's statistics (ErrNoStats when the kernel does not
// list it: nobody bound it).
func (r *StatsReader) Read(queue uint16) (KernelStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return KernelStats{}, ErrClosed
	}
	if r.buf == nil {
		r.buf = make([]byte, 64<<10)
	}
	n, err := r.f.ReadAt(r.buf, 0)
	if n == 0 && err != nil {
		return KernelStats{}, fmt.Errorf("nfqueue: read stats: %w", err)
	}
	return ParseStats(r.buf[:n], queue)
}

// Close closes the file. Idempotent.
func (r *StatsReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

package demux

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// The bulk lane. Work whose cost a client controls and that can take
// milliseconds or more — verifying a program, a test run, a batch
// operation that does not fit one message, creating a large map, a seccomp
// decision by a program that proved expensive — runs through the server's
// scheduler (pkg/sched): on a bounded number of slots, fairly per uid, cut
// into slices at the points where it can pause. Everything else (element
// operations, status, handles, pins, cheap seccomp decisions) is the fast
// lane: it runs at once on the connection's goroutine and never waits
// behind bulk work. A connection's requests still execute one at a time in
// arrival order, so replies keep request order (pipelining).

// bulkBatchBytes is the size above which a batch operation (its request
// or reply data) runs in the bulk lane: more than fits one message.
const bulkBatchBytes = 64 << 10

// bulkMapBytes is the map size above which MAP_CREATE runs in the bulk
// lane (populating the region is proportional to its size).
const bulkMapBytes = 1 << 20

// goBulk reports whether a request that is heavy must move to the bulk
// lane: true once, then the request re-enters its handler inside the lane
// (which calls endBulk when done) and goBulk says false.
func (c *conn) goBulk(heavy bool) bool {
	if !heavy || c.inBulk {
		return false
	}
	c.inBulk = true
	return true
}

func (c *conn) endBulk() { c.inBulk = false }

// batchBytes is the data a batch operation moves: the reply of a lookup
// batch (its count capped at the map's size, as batchOp does), the
// request of an update or delete batch.
func batchBytes(cmd wire.Cmd, count uint32, spec *maps.Spec, dataLen int) uint64 {
	switch cmd {
	case wire.CmdMapLookupBatch, wire.CmdMapLookupAndDeleteBatch:
		return uint64(min(count, spec.MaxEntries)) * (uint64(spec.KeySize) + uint64(spec.SyscallValueSize()))
	}
	return uint64(dataLen)
}

// ErrPeerGone: the client closed its connection while its bulk request
// waited or ran; the work is abandoned (nobody would read the reply).
var ErrPeerGone = errno.New(unix.ECONNRESET, "demux: client closed the connection; request abandoned")

// bulk runs fn in the bulk lane for the connection's uid and returns its
// result. If the client has closed the connection by the time the turn
// comes, fn does not run (ErrPeerGone).
func (c *conn) bulk(fn func(t *sched.Turn) (int64, error)) (int64, error) {
	var ret int64
	err := c.srv.sched.Run(c.uid, func(t *sched.Turn) error {
		if c.peerGone() {
			return ErrPeerGone
		}
		var err error
		ret, err = fn(t)
		return err
	})
	return ret, err
}

// yield is a checkpoint of the connection's bulk work: the scheduler's
// (see sched.Turn.Yield), then, when the turn had to wait or a slice has
// passed, whether the client is still there (ErrPeerGone if not).
func (c *conn) yield(t *sched.Turn) (time.Duration, error) {
	w := t.Yield()
	now := time.Now()
	if w > 0 || now.Sub(c.lastPeerCheck) >= c.srv.sched.Slice() {
		c.lastPeerCheck = now
		if c.peerGone() {
			return w, ErrPeerGone
		}
	}
	return w, nil
}

// peerGone reports whether the client closed its end of the connection
// (POLLHUP: both directions shut; a client that only shut down writing
// still gets its replies).
func (c *conn) peerGone() bool {
	gone := false
	c.sc.Control(func(fd int) {
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd[:], 0); err == nil && n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			gone = true
		}
	})
	return gone
}

// load is prog.Load in the bulk lane for uid: the verification yields to
// other uids at the scheduler's slice boundaries. c is the requesting
// connection (nil when restoring pinned programs): the load stops with
// ErrPeerGone if its client leaves.
func (s *Server) load(c *conn, uid uint32, spec *prog.Spec, env *prog.Env) (*prog.Program, error) {
	var p *prog.Program
	err := s.sched.Run(uid, func(t *sched.Turn) error {
		if c != nil && c.peerGone() {
			return ErrPeerGone
		}
		e := *env
		if c != nil {
			e.Charge = func(n int) error { return c.chargeReq(uint64(n)) }
		}
		e.Yield = func() error {
			if c == nil {
				t.Yield()
				return nil
			}
			_, err := c.yield(t)
			return err
		}
		var err error
		p, err = prog.Load(spec, &e)
		return err
	})
	return p, err
}

// BulkNice returns the nice value bulk work runs at (Config.Sched.Nice),
// or 0 when it runs at the daemon's priority (not configured, or the
// process could not give threads their priority back).
func (s *Server) BulkNice() int { return s.sched.Niced() }

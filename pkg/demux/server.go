package demux

import (
	"context"
	"errors"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Server serves the bpfd protocol. Create it with NewServer, run Serve on
// one or more listeners, stop it with Shutdown. All methods are safe for
// concurrent use.
type Server struct {
	cfg  Config
	log  *zap.Logger
	reg  *registry
	pins *pinSet // nil when Config.PinRoot is empty

	attach attachments // seccomp listeners being served
	ho     handoff     // a planned upgrade under way (handoff.go)
	links  linkSet     // links deciding netfilter queues (links.go)
	reqs   reqStats    // request counters (reqstats.go)
	// seccompTotal counts every seccomp decision (stats.go); its
	// identity fields are unused.
	seccompTotal seccompStats
	started      time.Time
	// sched runs the bulk lane (verification, test runs, large batches,
	// expensive seccomp programs) on a bounded number of slots, fairly
	// per uid; see bulk.go.
	sched *sched.Scheduler
	// bigBufs lends big buffers to long requests and replies; memfds
	// keeps reply memfds charged until they are freed (memory.go).
	bigBufs bufPool
	memfds  *memfdTracker

	mu       sync.Mutex
	lns      map[*net.UnixListener]struct{} // guarded by mu
	conns    map[*conn]struct{}             // guarded by mu
	closing  bool                           // guarded by mu
	connWG   sync.WaitGroup
	nconns   atomic.Int64
	shutOnce sync.Once
}

// NewServer returns a server configured by cfg (nil: defaults). It starts
// the goroutine that watches descriptors; Shutdown stops it. It fails only
// if epoll or eventfd cannot be created (*os.SyscallError), or the pin root
// (Config.PinRoot) cannot be opened or created.
func NewServer(cfg *Config) (*Server, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.MaxHandles <= 0 {
		c.MaxHandles = DefaultMaxHandles
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxDescriptors <= 0 {
		c.MaxDescriptors = DefaultMaxDescriptors
	}
	if c.MaxMemory == 0 {
		c.MaxMemory = DefaultMaxMemory()
	}
	// Leave room under RLIMIT_NOFILE for connections, memfds and the
	// runtime: descriptors never take the last quarter.
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<40 {
		if lim := int(rl.Cur) * 3 / 4; lim < c.MaxDescriptors {
			c.MaxDescriptors = max(lim, 1)
		}
		if lim := int(rl.Cur) / 8; lim < c.MaxConns {
			c.MaxConns = max(lim, 1)
		}
	}
	s := &Server{cfg: c, log: c.Logger, lns: map[*net.UnixListener]struct{}{}, conns: map[*conn]struct{}{}, started: time.Now(),
		sched: sched.New(&c.Sched)}
	reg, err := newRegistry(&s.cfg, c.MaxDescriptors)
	if err != nil {
		return nil, err
	}
	s.reg = reg
	s.memfds = newMemfdTracker(s.log, reg)
	if err := s.openPins(); err != nil {
		s.memfds.close()
		reg.close()
		return nil, err
	}
	return s, nil
}

// Serve accepts connections on ln and serves each on its own goroutine
// until Shutdown, then returns ErrServerClosed. Serve owns ln and closes
// it. Any other accept failure that is not temporary is returned.
func (s *Server) Serve(ln *net.UnixListener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.AcceptUnix()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if s.parkListener(ln) {
				continue // an upgrade that did not happen
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) ||
				errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) ||
				errors.Is(err, unix.ECONNABORTED) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.startConn(nc)
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) startConn(nc *net.UnixConn) {
	c, err := newConn(s, nc)
	if err != nil {
		s.log.Warn("connection setup failed", zap.Error(err))
		nc.Close()
		return
	}
	s.admitConn(c, false)
}

// admitConn counts c against its uid's and the daemon's connection
// limits (unless taken over: a connection the previous process had
// admitted is admitted whatever the limits are now) and serves it on a
// goroutine of its own.
func (s *Server) admitConn(c *conn, takenOver bool) {
	nc := c.nc
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.reg.mu.Lock()
	u := s.reg.usage(c.uid)
	over := !takenOver && (len(s.conns) >= s.cfg.MaxConns || u.conns >= s.cfg.quotaFor(c.uid).Conns)
	var merr error
	if !over {
		// The connection's own memory is charged while it lives (one
		// taken over from the previous process whatever the quota).
		if takenOver {
			u.transient += connCost
			s.reg.total += connCost
			u.conns++
		} else if merr = s.reg.chargeLocked(c.uid, connCost); merr == nil {
			u.conns++
		}
	}
	s.reg.mu.Unlock()
	if over || merr != nil {
		s.mu.Unlock()
		why := "too many connections"
		if merr != nil {
			why = merr.Error()
		}
		s.log.Warn("connection refused: "+why, zap.Uint32("uid", c.uid), zap.Int32("pid", c.pid))
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	s.nconns.Add(1)
	go func() {
		defer s.connWG.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.ho.wake()
		s.reg.mu.Lock()
		s.reg.usage(c.uid).conns--
		s.reg.unchargeLocked(c.uid, connCost)
		s.reg.mu.Unlock()
		s.nconns.Add(-1)
	}()
}

// Shutdown stops the server: it closes the listeners, lets every
// connection answer the requests it has already received (including those
// queued in its socket), closes the connections, then closes every
// descriptor and object. If ctx ends first, connections are closed at once
// and ctx's error is returned (resources are still released). Later calls
// return nil at once.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.shutOnce.Do(func() { err = s.shutdown(ctx) })
	return err
}

func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.closeLinks()
	s.closeAttachments()
	s.sched.Close()
	s.closePins()
	s.memfds.close()
	s.reg.close()
	s.endJournal()
	return err
}

// Stats is a snapshot of the daemon's state, for bpfctl status (CmdStatus
// returns it as JSON).
type Stats struct {
	Objects     int        `json:"objects"`
	Maps        int        `json:"maps"`
	Connections int        `json:"connections"`
	Descriptors int        `json:"descriptors"`
	Pins        int        `json:"pins"` // live pins (each also counts as one of its maker's descriptors)
	Handles     int64      `json:"handles"`
	MapMemory   uint64     `json:"map_memory"`
	UIDs        []UIDStats `json:"uids,omitempty"`
	PinRoot     string     `json:"pin_root,omitempty"` // absolute; empty when pins are disabled
	Programs    int        `json:"programs"`
	Attachments int64      `json:"attachments"` // seccomp listeners served
	Started     time.Time  `json:"started"`     // when the server was made
	Uptime      float64    `json:"uptime_seconds"`
	// BulkSlots is how many bulk-lane turns (verifications, test runs,
	// large batches) run at once; BulkSlice how long one runs before it
	// gives way to another uid's (seconds).
	BulkSlots int     `json:"bulk_slots"`
	BulkSlice float64 `json:"bulk_slice_seconds"`
	// Persistence says where map storage and the registry's journal live
	// and how they fare (persist.go).
	Persistence JournalStats `json:"persistence"`
	// Memory is every byte charged to any uid (what Quota.Memory counts,
	// summed); MaxMemory the daemon-wide cap on it (Config.MaxMemory).
	Memory    uint64 `json:"memory"`
	MaxMemory uint64 `json:"max_memory"`
	// ReplyMemfds are the reply memfds handed out and not yet freed
	// everywhere (still charged to their uid).
	ReplyMemfds int `json:"reply_memfds"`
	// Seccomp are the seccomp attachments and their decision counters
	// (CmdStatus: the caller's uid's; uid 0: all). Stats leaves it nil.
	Seccomp []SeccompStat `json:"seccomp,omitempty"`
}

// UIDStats is one uid's consumption and quota.
type UIDStats struct {
	UID         uint32 `json:"uid"`
	Objects     int    `json:"objects"`
	MapMemory   uint64 `json:"map_memory"`
	Descriptors int    `json:"descriptors"`
	Connections int    `json:"connections"`
	Quota       Quota  `json:"quota"`
	// Memory is every byte charged to the uid (Quota.Memory counts it):
	// MapMemory, its descriptors, connections, requests in flight and
	// reply memfds not yet freed.
	Memory uint64 `json:"memory"`
	// BulkCPU is the CPU time the uid's bulk-lane turns used (seconds,
	// since the daemon started); BulkRunning and BulkWaiting are its
	// turns holding and waiting for a slot.
	BulkCPU     float64 `json:"bulk_cpu_seconds,omitempty"`
	BulkRunning int     `json:"bulk_running,omitempty"`
	BulkWaiting int     `json:"bulk_waiting,omitempty"`
}

// Stats returns a snapshot of the server's objects, connections,
// descriptors and memory. It takes the registry lock briefly.
func (s *Server) Stats() Stats {
	var st Stats
	st.PinRoot = s.PinRoot()
	st.Connections = int(s.nconns.Load())
	st.Handles = s.reg.handles.Load()
	st.Attachments = s.attach.n.Load()
	st.Started = s.started
	st.Uptime = time.Since(s.started).Seconds()
	st.BulkSlots, st.BulkSlice = s.sched.Slots(), s.sched.Slice().Seconds()
	st.Persistence = s.persistStats()
	flows := s.sched.Stats()
	st.ReplyMemfds, _ = s.memfds.outstanding()
	st.MaxMemory = s.cfg.MaxMemory
	r := s.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	st.Objects = len(r.objects)
	st.Descriptors = len(r.descs)
	st.Pins = r.pins
	st.Memory = r.total + uint64(len(r.descs)+r.pins)*descCost
	for _, o := range r.objects {
		switch o.kind {
		case wire.ObjMap:
			st.Maps++
		case wire.ObjProg:
			st.Programs++
		}
		st.MapMemory += o.mem
	}
	byUID := map[uint32]int{}
	for uid, u := range r.uids {
		if *u == (usage{}) {
			continue
		}
		byUID[uid] = len(st.UIDs)
		st.UIDs = append(st.UIDs, UIDStats{UID: uid, Objects: u.objects, MapMemory: u.mem,
			Descriptors: u.descs, Connections: u.conns, Quota: s.cfg.quotaFor(uid),
			Memory: u.mem + u.transient + uint64(u.descs)*descCost})
	}
	for _, f := range flows {
		i, ok := byUID[f.UID]
		if !ok {
			i = len(st.UIDs)
			st.UIDs = append(st.UIDs, UIDStats{UID: f.UID, Quota: s.cfg.quotaFor(f.UID)})
		}
		u := &st.UIDs[i]
		u.BulkCPU, u.BulkRunning, u.BulkWaiting = f.CPU.Seconds(), f.Running, f.Waiting
	}
	sort.Slice(st.UIDs, func(i, j int) bool { return st.UIDs[i].UID < st.UIDs[j].UID })
	return st
}

// Package sched shares the daemon's CPU fairly between uids: it decides
// which of the waiting pieces of bulk work — program verifications, test
// runs, large batch operations, seccomp programs that proved expensive —
// runs next, and for how long.
//
// # Two lanes
//
// Work the daemon does for clients falls into two lanes. The fast lane —
// single-element map operations, status, handle bookkeeping, seccomp
// decisions of cheap programs — is a few microseconds per request; it runs
// at once on the connection's (or the attachment's) own goroutine and never
// waits here. The bulk lane is everything whose cost a client controls and
// that can take milliseconds to seconds; it runs only while holding one of
// a bounded number of slots, handed out by this package. Keeping the slots
// below the number of CPUs (Config.Slots defaults to GOMAXPROCS−1, at
// least 1) keeps at least one CPU for the fast lane however much bulk work
// is queued: a flood of test runs cannot delay another user's lookup by
// more than the Go scheduler's own latency. The kernel, which shares the
// CPUs between threads, is told the same with Config.Nice: the thread
// running a turn runs at a lower priority (nice.go), so a fast-lane thread
// that wakes preempts it at once.
//
// # Fairness: deficit round robin per uid
//
// Slots go to uids (flows) by deficit round robin, in FQ-CoDel's variant
// (RFC 8290): a uid that becomes active is served before the uids already
// competing (so it waits at most until a slot reaches its next slice
// boundary), then joins the round robin of old flows; each turn reserves a
// quantum (Config.Slice) of its uid's deficit and is charged the CPU time
// it really used. Within a uid, turns are served in arrival order, and a
// turn that is cut at a slice boundary goes back behind the uid's other
// waiting turns.
//
// Work is cut into slices cooperatively: a turn calls Turn.Yield at points
// where it can pause (between test-run repeats, every 65536 instructions
// of a program run, every 512 verifier steps). Yield is a clock read
// unless the slice is over and someone else waits; then the turn gives its
// slot up and waits for its uid's next turn. A piece of work that cannot
// be cut (a batch operation) overruns its slice; the overrun is charged to
// its uid as debt, which the uid pays back by being passed over in later
// rounds, so overruns cost the offender, not the others. Time used while
// nobody else waited is recorded (Stats) but is not debt: DRR orders
// competitors, it does not ration an idle machine.
//
// Guarantee: with S slots, a turn of a uid that is not in debt waits for a
// slot at most until the first of the S running turns reaches a slice
// boundary (at most Slice after its last Yield, plus whatever one uncuttable
// step overruns), however many turns other uids have queued; once it runs,
// each other competing uid gets at most one slice per round per slot
// before it runs again.
//
// # Concurrency and allocation
//
// A Scheduler is safe for concurrent use; its state is guarded by one
// mutex, held only to queue and grant (never while work runs). A Turn
// belongs to the goroutine running its function. Run allocates nothing
// once warm (turns are pooled); Yield allocates nothing.
//
// Why a package of its own: fair scheduling is a mechanism with its own
// invariants and tests (deficits, lists, slices), independent of the wire
// protocol; pkg/demux decides what is bulk work and runs it through here.
package sched

import (
	"runtime"
	"sort"
	"sync"
	"time"
)

// Defaults.
const (
	// DefaultSlice is the default slice (and DRR quantum): how long a
	// turn runs before it yields to another uid's waiting turn.
	DefaultSlice = time.Millisecond
)

// Config configures a Scheduler. Nil or zero fields mean the defaults.
type Config struct {
	// Slots is how many turns run at once. Zero: GOMAXPROCS−1, at least
	// 1, so that one CPU stays free for the fast lane.
	Slots int
	// Slice is how long a turn runs before Yield gives its slot to a
	// waiting turn, and the DRR quantum. Zero: DefaultSlice.
	Slice time.Duration
	// Nice is the nice value (1-19) the thread running a turn takes
	// while it runs it (see nice.go); zero leaves priorities alone.
	// Ignored unless the process may give a thread its priority back
	// (CAP_SYS_NICE, or RLIMIT_NICE covering its own nice value); see
	// Scheduler.Niced. bpfd uses DefaultNice.
	Nice int
}

// DefaultSlots returns the default number of slots: GOMAXPROCS−1, at least
// 1.
func DefaultSlots() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// Scheduler hands out slots to turns, fairly per uid. Create it with New.
// Safe for concurrent use.
type Scheduler struct {
	slice time.Duration
	slots int
	now   func() time.Time // time.Now; tests substitute a fake clock
	nicer *nicer           // nil: bulk threads keep their priority

	mu      sync.Mutex
	core    drr     // guarded by mu
	free    int     // free slots; guarded by mu
	running []*Turn // turns holding a slot; guarded by mu
	// cpu is the CPU time each uid's turns used since the scheduler
	// started (flows come and go; this stays); guarded by mu.
	cpu       map[uint32]time.Duration
	closed    bool      // guarded by mu
	lastSweep time.Time // guarded by mu

	pool sync.Pool // of *Turn
}

// New returns a scheduler configured by cfg (nil: defaults).
func New(cfg *Config) *Scheduler {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Slots <= 0 {
		c.Slots = DefaultSlots()
	}
	if c.Slice <= 0 {
		c.Slice = DefaultSlice
	}
	return &Scheduler{slice: c.Slice, slots: c.Slots, now: time.Now, core: newDRR(c.Slice), free: c.Slots,
		running: make([]*Turn, 0, c.Slots), cpu: map[uint32]time.Duration{}, nicer: newNicer(c.Nice)}
}

// Niced returns the nice value turns run at, or 0 when they keep the
// daemon's priority (Config.Nice zero, or not allowed here).
func (s *Scheduler) Niced() int {
	if s.nicer == nil || !s.nicer.on.Load() {
		return 0
	}
	return s.nicer.nice
}

// Slots returns the number of slots.
func (s *Scheduler) Slots() int { return s.slots }

// Slice returns the slice length.
func (s *Scheduler) Slice() time.Duration { return s.slice }

// Turn is one piece of work of one uid holding (or waiting for) a slot. It
// is valid only inside the function passed to Run, and belongs to the
// goroutine running it.
type Turn struct {
	s     *Scheduler
	f     *flow         // guarded by s.mu after Run queued it
	ready chan struct{} // a slot was granted (capacity 1)
	start time.Time     // when the current slice started
	// contended records that another turn waited for a slot at some
	// point during the current slice; guarded by s.mu.
	contended bool
	free      bool // runs without a slot (after Close); owned by the goroutine
	// niced: the goroutine is locked to its thread, whose priority is
	// lowered (Config.Nice); owned by the goroutine.
	niced bool
}

// Run waits until uid's turn comes, runs fn on the calling goroutine while
// holding one slot, releases the slot and returns fn's error. fn should
// call t.Yield at points where it may pause. After Close, fn runs at once
// without a slot. Run allocates nothing once warm.
func (s *Scheduler) Run(uid uint32, fn func(t *Turn) error) error {
	t := s.getTurn()
	now := s.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		t.free = true
		t.start = now
		err := fn(t)
		s.putTurn(t)
		return err
	}
	t.f = s.core.flow(uid)
	s.core.push(t, true, now)
	s.dispatchLocked()
	s.mu.Unlock()
	<-t.ready
	t.start = s.now()

	t.niced = s.nicer.enter()
	err := fn(t)
	if t.niced {
		s.nicer.leave()
		t.niced = false
	}

	now = s.now()
	if !t.free {
		s.mu.Lock()
		s.chargeLocked(t, now.Sub(t.start))
		s.core.release(t.f, now)
		s.unrunLocked(t)
		s.dispatchLocked()
		s.maybeSweepLocked(now)
		s.mu.Unlock()
	}
	s.putTurn(t)
	return err
}

// Yield is a checkpoint: if the turn's slice is over and another turn
// waits, it gives the slot up and waits for its uid's next turn; it
// returns how long it waited (zero if it kept the slot), so that callers
// measuring their own run time can leave the wait out. Yield is a clock
// read when the slice is not over. It allocates nothing.
func (t *Turn) Yield() time.Duration {
	if t.free {
		return 0
	}
	s := t.s
	now := s.now()
	used := now.Sub(t.start)
	if used < s.slice {
		return 0
	}
	s.mu.Lock()
	if s.closed {
		// Close granted everyone; keep going without accounting.
		s.mu.Unlock()
		return 0
	}
	s.chargeLocked(t, used)
	if s.core.nwait == 0 {
		// Nobody waits: keep the slot for a new slice.
		t.contended = false
		t.f.grants++
		s.mu.Unlock()
		t.start = now
		return 0
	}
	// Back behind the uid's other waiting turns; the slot goes to whoever
	// DRR picks (possibly this uid again).
	t.f.running--
	t.contended = false
	s.unrunLocked(t)
	s.core.push(t, false, now)
	s.dispatchLocked()
	s.mu.Unlock()
	// Waiting at the daemon's priority, on any thread.
	if t.niced {
		s.nicer.leave()
	}
	<-t.ready
	if t.niced {
		t.niced = s.nicer.enter()
	}
	t.start = s.now()
	return t.start.Sub(now)
}

// chargeLocked accounts used to t's uid: always to its CPU total, and to
// its deficit if anyone competed during the slice. s.mu must be held.
func (s *Scheduler) chargeLocked(t *Turn, used time.Duration) {
	s.core.charge(t.f, used, t.contended || s.core.nwait > 0)
	s.cpu[t.f.uid] += used
}

// dispatchLocked grants free slots to waiting turns; if turns still wait
// afterwards, every running turn's slice becomes contended. s.mu must be
// held.
func (s *Scheduler) dispatchLocked() {
	for s.free > 0 {
		t := s.core.pop()
		if t == nil {
			return
		}
		s.free--
		t.contended = false
		s.running = append(s.running, t)
		t.ready <- struct{}{}
	}
	if s.core.nwait > 0 {
		for _, r := range s.running {
			r.contended = true
		}
	}
}

// unrunLocked takes t off the running list and frees its slot. s.mu must
// be held.
func (s *Scheduler) unrunLocked(t *Turn) {
	for i, r := range s.running {
		if r == t {
			last := len(s.running) - 1
			s.running[i] = s.running[last]
			s.running[last] = nil
			s.running = s.running[:last]
			break
		}
	}
	s.free++
}

func (s *Scheduler) maybeSweepLocked(now time.Time) {
	if now.Sub(s.lastSweep) < forgiveAfter {
		return
	}
	s.lastSweep = now
	s.core.sweep(now)
}

// Close stops scheduling: every waiting turn is granted at once, later
// Run calls run their function without waiting, and Yield no longer
// pauses. Used at shutdown, so that the requests already received finish.
func (s *Scheduler) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for {
		t := s.core.pop()
		if t == nil {
			break
		}
		s.free--
		s.running = append(s.running, t)
		t.ready <- struct{}{}
	}
}

func (s *Scheduler) getTurn() *Turn {
	if t, ok := s.pool.Get().(*Turn); ok {
		return t
	}
	return &Turn{s: s, ready: make(chan struct{}, 1)}
}

func (s *Scheduler) putTurn(t *Turn) {
	t.f, t.contended, t.free = nil, false, false
	s.pool.Put(t)
}

// FlowStats is one uid's use of the bulk lane.
type FlowStats struct {
	UID uint32 `json:"uid"`
	// CPU is the time its turns held slots since the scheduler started.
	CPU time.Duration `json:"cpu_ns"`
	// Running and Waiting are its turns holding and waiting for a slot.
	Running int `json:"running"`
	Waiting int `json:"waiting"`
	// Deficit is its DRR deficit; negative is debt from overruns.
	Deficit time.Duration `json:"deficit_ns"`
}

// Stats returns a snapshot of every uid that used the bulk lane or is
// competing for it now, by uid.
func (s *Scheduler) Stats() []FlowStats {
	s.mu.Lock()
	out := make([]FlowStats, 0, len(s.cpu))
	for uid, cpu := range s.cpu {
		out = append(out, FlowStats{UID: uid, CPU: cpu})
	}
	idx := make(map[uint32]int, len(out))
	for i, f := range out {
		idx[f.UID] = i
	}
	for _, f := range s.core.flows {
		i, ok := idx[f.uid]
		if !ok {
			i = len(out)
			out = append(out, FlowStats{UID: f.uid})
		}
		out[i].Running, out[i].Waiting, out[i].Deficit = f.running, f.waiting.len(), f.deficit
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

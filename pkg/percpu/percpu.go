// Package percpu gives bpfd what the kernel gets from disabling preemption:
// a small set of "CPU" slots, as many as the kernel has possible CPUs, of
// which a program invocation (or a map operation that needs "the current
// CPU") holds exactly one while it runs. No two holders ever share a slot,
// so per-CPU map values, per-CPU free lists and LRU local lists indexed by
// the slot are touched by one goroutine at a time, exactly as a kernel
// per-CPU variable is touched by one CPU; bpf_get_smp_processor_id returns
// the slot.
//
// # Why a pool of its own
//
// Goroutines migrate between threads and threads between CPUs, so the CPU
// a goroutine runs on says nothing about exclusivity. A slot is taken with
// one compare-and-swap on a cache line of its own, starting from a hint
// (the slot the caller held last, usually free again), and given back with
// one store, so holding one costs a few nanoseconds and two holders on two
// cores never share a written cache line.
//
// The number of slots is the number of possible CPUs
// (/sys/devices/system/cpu/possible), independent of runtime.NumCPU and
// GOMAXPROCS: per-CPU values on the syscall side are one value per possible
// CPU, so clients written for the kernel size their buffers the same way.
// When every slot is held, Acquire waits; holders run one program
// invocation or one map operation and never block, so the wait is short.
// Scheduling which requests run at all (fairness between clients) is the
// business of the layer above (pkg/sched); slots sit below it.
//
// # Quiesce
//
// Quiesce takes every slot, waiting for current holders to finish and
// keeping new ones out, and returns a function that gives them back. With
// every slot held no program runs and no map operation that needs a slot
// is under way: it is bpfd's synchronize_rcu. pkg/maps uses it to move a
// map's live storage to a fresh region when a mapping of it must be cut off
// (revocation), so that no program or writer can store into the old region
// after its contents were copied.
//
// # Rules
//
//   - Never Acquire while holding a slot of the same pool, and never
//     Quiesce while holding one: both would wait for themselves.
//   - Hold a slot for one invocation or one operation, never across a
//     blocking call (I/O, a channel, a lock someone else may hold while
//     waiting for a slot).
//
// A Pool is safe for concurrent use.
package percpu

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// MaxCPUs bounds the slot count (the kernel's NR_CPUS upper limit on
// x86-64 is 8192).
const MaxCPUs = 8192

// PossibleFile is where the kernel lists its possible CPUs.
const PossibleFile = "/sys/devices/system/cpu/possible"

var possible = sync.OnceValues(func() (int, error) {
	b, err := os.ReadFile(PossibleFile)
	if err != nil {
		return 0, err
	}
	return ParsePossible(b)
})

// Possible returns the number of possible CPUs, as num_possible_cpus() in
// the kernel: the count of CPUs listed in /sys/devices/system/cpu/possible.
// If the file cannot be read or parsed it falls back to runtime.NumCPU().
func Possible() int {
	n, err := possible()
	if err != nil || n < 1 {
		return max(1, min(runtime.NumCPU(), MaxCPUs))
	}
	return n
}

// ParsePossible parses a kernel CPU list ("0-3", "0,2-5\n") and returns
// how many CPUs it names. It returns an error for malformed input, an
// empty list or more than MaxCPUs CPUs.
func ParsePossible(b []byte) (int, error) {
	s := string(bytes.TrimSpace(b))
	if s == "" {
		return 0, fmt.Errorf("percpu: empty CPU list")
	}
	n := 0
	for s != "" {
		var part string
		if i := bytes.IndexByte([]byte(s), ','); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			part, s = s, ""
		}
		lo, hi := part, part
		if i := bytes.IndexByte([]byte(part), '-'); i >= 0 {
			lo, hi = part[:i], part[i+1:]
		}
		a, err1 := strconv.ParseUint(lo, 10, 32)
		z, err2 := strconv.ParseUint(hi, 10, 32)
		if err1 != nil || err2 != nil || z < a || z >= MaxCPUs {
			return 0, fmt.Errorf("percpu: bad CPU list entry %q", part)
		}
		n += int(z - a + 1)
		if n > MaxCPUs {
			return 0, fmt.Errorf("percpu: more than %d CPUs", MaxCPUs)
		}
	}
	return n, nil
}

// slot is one CPU slot on a cache line of its own.
type slot struct {
	held atomic.Uint32 // 1 while held
	_    [60]byte
}

// Pool is a set of CPU slots. Safe for concurrent use.
type Pool struct {
	slots []slot

	// draining is set while Quiesce collects slots: Acquire then waits
	// instead of competing, so a quiesce cannot starve.
	draining atomic.Bool
	waiters  atomic.Int32

	mu   sync.Mutex // guards the condition's waits
	cond *sync.Cond
	qmu  sync.Mutex // serialises Quiesce calls

	// hints remembers, per P (sync.Pool keeps per-P caches), the slot last
	// taken there, so that goroutines on different Ps start from different
	// slots. Its New hands out pointers into hintArr: no allocation.
	hints   sync.Pool
	hintArr []hint
	hintN   atomic.Uint32
}

// hint is atomic because two Ps may end up with the same hint (New
// cycles through hintArr); a stale hint only costs a retry.
type hint struct {
	slot atomic.Int32
	_    [60]byte
}

// NewPool returns a pool of n slots (1 ≤ n ≤ MaxCPUs; clamped).
func NewPool(n int) *Pool {
	n = max(1, min(n, MaxCPUs))
	p := &Pool{slots: make([]slot, n), hintArr: make([]hint, 64)}
	for i := range p.hintArr {
		p.hintArr[i].slot.Store(int32(i % n))
	}
	p.cond = sync.NewCond(&p.mu)
	p.hints.New = func() any {
		return &p.hintArr[(p.hintN.Add(1)-1)%uint32(len(p.hintArr))]
	}
	return p
}

var defaultPool = sync.OnceValue(func() *Pool { return NewPool(Possible()) })

// Default returns the process-wide pool of Possible() slots, the one the
// daemon's programs and maps share (like the machine's CPUs).
func Default() *Pool { return defaultPool() }

// N returns the number of slots.
func (p *Pool) N() int { return len(p.slots) }

// try takes a free slot, starting at hint; it returns -1 if none is free.
func (p *Pool) try(hint int) int {
	n := len(p.slots)
	if uint(hint) >= uint(n) {
		hint = 0
	}
	for i, j := 0, hint; i < n; i++ {
		if p.slots[j].held.Load() == 0 && p.slots[j].held.CompareAndSwap(0, 1) {
			return j
		}
		if j++; j == n {
			j = 0
		}
	}
	return -1
}

// Acquire takes a slot and returns its index, waiting while every slot is
// held (or a Quiesce is collecting them). hint is the slot to try first:
// pass the slot the caller held last (any value is accepted). The caller
// must Release the slot, and must not hold another slot of p.
func (p *Pool) Acquire(hint int) int {
	if !p.draining.Load() {
		if s := p.try(hint); s >= 0 {
			return s
		}
		// Briefly spin: holders run for microseconds.
		for i := 0; i < 4; i++ {
			runtime.Gosched()
			if p.draining.Load() {
				break
			}
			if s := p.try(hint); s >= 0 {
				return s
			}
		}
	}
	p.waiters.Add(1)
	p.mu.Lock()
	s := -1
	for {
		if !p.draining.Load() {
			if s = p.try(hint); s >= 0 {
				break
			}
		}
		p.cond.Wait()
	}
	p.mu.Unlock()
	p.waiters.Add(-1)
	return s
}

// Get takes a slot like Acquire, choosing the hint itself: the slot last
// taken on the same P (Go's per-thread scheduler context), so concurrent
// callers on different threads start from different slots and rarely
// touch each other's cache lines. The caller must Release the slot. It
// allocates nothing once warm.
func (p *Pool) Get() int {
	h := p.hints.Get().(*hint)
	s := p.Acquire(int(h.slot.Load()))
	h.slot.Store(int32(s))
	p.hints.Put(h)
	return s
}

// Release gives slot s back. Releasing a slot not held is a bug; it panics.
func (p *Pool) Release(s int) {
	h := &p.slots[s].held
	if h.Load() != 1 {
		panic("percpu: Release of a slot not held")
	}
	h.Store(0)
	if p.waiters.Load() > 0 {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// Quiesce takes every slot, waiting for their holders to release them
// while keeping new holders out, and returns a function that gives them
// all back (call it exactly once). While it holds them, nothing that runs
// under a slot is under way. Quiesce calls are serialised. The caller must
// not hold a slot of p.
func (p *Pool) Quiesce() (release func()) {
	p.qmu.Lock()
	p.draining.Store(true)
	p.mu.Lock()
	for i := range p.slots {
		for !p.slots[i].held.CompareAndSwap(0, 1) {
			// Woken by the Release of a holder (Release broadcasts when
			// anyone waits; count ourselves as a waiter).
			p.waiters.Add(1)
			if p.slots[i].held.CompareAndSwap(0, 1) {
				p.waiters.Add(-1)
				break
			}
			p.cond.Wait()
			p.waiters.Add(-1)
		}
	}
	p.mu.Unlock()
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			panic("percpu: Quiesce release called twice")
		}
		for i := range p.slots {
			p.slots[i].held.Store(0)
		}
		p.draining.Store(false)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
		p.qmu.Unlock()
	}
}

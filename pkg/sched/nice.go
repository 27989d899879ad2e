package sched

import (
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Bulk work at a lower OS priority.
//
// The slots keep one CPU for the fast lane as far as the Go scheduler is
// concerned, but the kernel shares the CPUs between threads: a fast-lane
// goroutine woken by a request waits for its thread to be scheduled, and
// a bulk turn's thread competing for the same CPU delays it by up to the
// kernel's scheduling latency (milliseconds on a loaded machine). With
// Config.Nice, the thread running a turn takes that nice value while it
// runs it (setpriority on the thread, which the goroutine is locked to),
// and gets the daemon's own priority back when the turn ends or waits in
// Yield: the kernel then preempts bulk work as soon as a fast-lane thread
// wakes, and bulk work yields to the rest of the machine too. Threads are
// locked only while they run a turn (at most Slots of them).
//
// Giving a thread its priority back is lowering its nice value, which the
// kernel allows only with CAP_SYS_NICE or an RLIMIT_NICE that covers the
// daemon's own nice value (bpfd.service: LimitNICE=+0). New probes it on a
// throw-away thread; where it fails, Nice is ignored (Niced reports it), so
// a thread never keeps a lowered priority.

// DefaultNice is the nice value bpfd gives the threads running bulk work
// (the daemon's --bulk-nice default): weight 110 against 1024 for nice 0,
// so a fast-lane thread preempts it at once and bulk work still gets a
// tenth of a contended CPU.
const DefaultNice = 10

// nicer lowers and restores the priority of bulk threads. Safe for
// concurrent use.
type nicer struct {
	nice int         // the bulk nice value
	base int         // the daemon's own nice value, restored after a turn
	on   atomic.Bool // false once a restore failed
}

// newNicer returns a nicer for nice, or nil when nice is not above the
// process's own nice value or a thread's priority could not be restored.
func newNicer(nice int) *nicer {
	if nice <= 0 {
		return nil
	}
	nice = min(nice, 19)
	// getpriority(2)'s raw value is 20 − nice.
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return nil
	}
	base := 20 - prio
	if nice <= base {
		return nil
	}
	ok := make(chan bool)
	go func() {
		// Never unlocked: if the thread kept the lowered priority it
		// ends with this goroutine.
		runtime.LockOSThread()
		tid := unix.Gettid()
		if unix.Setpriority(unix.PRIO_PROCESS, tid, nice) != nil {
			ok <- false
			return
		}
		ok <- unix.Setpriority(unix.PRIO_PROCESS, tid, base) == nil
	}()
	if !<-ok {
		return nil
	}
	n := &nicer{nice: nice, base: base}
	n.on.Store(true)
	return n
}

// enter locks the calling goroutine to its thread and lowers the
// thread's priority. It returns whether it did (then leave must follow).
func (n *nicer) enter() bool {
	if n == nil || !n.on.Load() {
		return false
	}
	runtime.LockOSThread()
	if unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), n.nice) != nil {
		runtime.UnlockOSThread()
		return false
	}
	return true
}

// leave gives the thread its priority back and unlocks it. Should that
// fail (the probe said it would not), the goroutine stays locked to the
// thread, so the lowered priority never reaches other goroutines, and
// nicing stops.
func (n *nicer) leave() {
	if unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), n.base) != nil {
		n.on.Store(false)
		return
	}
	runtime.UnlockOSThread()
}

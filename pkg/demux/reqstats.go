package demux

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Request statistics: how many requests of each command were answered
// with each errno, and how long they took (from receipt to the reply sent),
// as a histogram per command. Every counter is preallocated when the
// server is made, so counting allocates nothing and element operations
// stay allocation-free (alloc_test.go); a request costs two clock reads
// and three atomic adds.

const (
	// cmdSlots: kernel commands 0..63, then bpfd's 0x100..0x1ff; the
	// last slot takes every other number.
	cmdSlots       = 64 + 256 + 1
	cmdOther       = cmdSlots - 1
	errnoSlots     = 32
	errnoOther     = errnoSlots - 1
	reqHistBuckets = 24 // upper bounds 1 µs · 2^i, i < reqHistBuckets; then +Inf
)

// countedErrnos are the errnos requests are counted by; others share the
// last slot.
var countedErrnos = [...]unix.Errno{0, unix.EPERM, unix.ENOENT, unix.EINTR, unix.EIO, unix.ENXIO, unix.E2BIG,
	unix.EBADF, unix.ENOMEM, unix.EACCES, unix.EFAULT, unix.EEXIST, unix.ENOTDIR, unix.EISDIR, unix.EINVAL,
	unix.EMFILE, unix.ENOSPC, unix.ENAMETOOLONG, unix.ELOOP, unix.EMSGSIZE, unix.EOPNOTSUPP, unix.ESHUTDOWN,
	unix.EAGAIN, unix.ENOSYS, unix.ECHILD, unix.ESRCH, unix.EBUSY, unix.ENODEV, unix.ERANGE, 524 /* ENOTSUPP */}

// errnoSlot maps an errno below 1024 to its slot (errnoOther if not
// counted on its own).
var errnoSlot [1024]uint8

func init() {
	for i := range errnoSlot {
		errnoSlot[i] = errnoOther
	}
	for i, e := range countedErrnos {
		errnoSlot[e] = uint8(i)
	}
}

// reqStats are the server's request counters. Safe for concurrent use.
type reqStats struct {
	count [cmdSlots][errnoSlots]atomic.Uint64
	hist  [cmdSlots][reqHistBuckets + 1]atomic.Uint64
	sumNs [cmdSlots]atomic.Uint64
}

func cmdSlot(c wire.Cmd) int {
	switch {
	case c < 64:
		return int(c)
	case c >= 0x100 && c < 0x200:
		return 64 + int(c-0x100)
	}
	return cmdOther
}

func slotCmd(i int) (wire.Cmd, bool) {
	switch {
	case i < 64:
		return wire.Cmd(i), true
	case i < cmdOther:
		return wire.Cmd(0x100 + i - 64), true
	}
	return 0, false
}

// request counts one request (msg is its datagram, as received) answered
// with err after d.
func (r *reqStats) request(msg []byte, err error, d time.Duration) {
	slot := cmdOther
	if len(msg) >= 4 {
		slot = cmdSlot(wire.Cmd(binary.LittleEndian.Uint32(msg)))
	}
	es := 0
	if err != nil {
		es = errnoOther
		if e := errnoOf(err); e < unix.Errno(len(errnoSlot)) {
			es = int(errnoSlot[e])
		}
	}
	r.count[slot][es].Add(1)
	us := (uint64(max(d, 0)) + 999) / 1000   // rounded up: a bound is an upper bound
	b := min(bits.Len64(us), reqHistBuckets) // us < 2^b: bound 2^b µs
	if us != 0 && us == 1<<(b-1) {
		b-- // exactly a power of two: its own bucket's upper bound
	}
	r.hist[slot][b].Add(1)
	r.sumNs[slot].Add(uint64(max(d, 0)))
}

// HistogramBounds are the upper bounds (seconds) of RequestStat.Buckets,
// without the final +Inf.
var HistogramBounds = func() []float64 {
	b := make([]float64, reqHistBuckets)
	for i := range b {
		b[i] = float64(uint64(1)<<i) * 1e-6
	}
	return b
}()

// RequestStat counts the requests of one command.
type RequestStat struct {
	Cmd     wire.Cmd
	Other   bool                  // Cmd stands for every unknown command number
	ByErrno map[unix.Errno]uint64 // 0 = success; OtherErrno for errnos not counted on their own
	Count   uint64
	Sum     time.Duration
	// Buckets[i] counts requests that took at most HistogramBounds[i]
	// (cumulative, as Prometheus histograms); the count is Count.
	Buckets []uint64
}

// OtherErrno stands for the errnos RequestStat does not count one by one.
const OtherErrno = unix.Errno(^uint32(0) >> 1)

// RequestStats returns the counters of every command that has been
// received at least once.
func (s *Server) RequestStats() []RequestStat {
	r := &s.reqs
	var out []RequestStat
	for slot := range r.count {
		var st RequestStat
		for e := range r.count[slot] {
			n := r.count[slot][e].Load()
			if n == 0 {
				continue
			}
			if st.ByErrno == nil {
				st.ByErrno = map[unix.Errno]uint64{}
			}
			errno := OtherErrno
			if e < len(countedErrnos) {
				errno = countedErrnos[e]
			}
			st.ByErrno[errno] += n
		}
		if st.ByErrno == nil {
			continue
		}
		cmd, ok := slotCmd(slot)
		st.Cmd, st.Other = cmd, !ok
		st.Sum = time.Duration(r.sumNs[slot].Load())
		st.Buckets = make([]uint64, reqHistBuckets)
		var cum uint64
		for b := range reqHistBuckets {
			cum += r.hist[slot][b].Load()
			st.Buckets[b] = cum
		}
		st.Count = cum + r.hist[slot][reqHistBuckets].Load()
		out = append(out, st)
	}
	return out
}

package demux

import (
	"bytes"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Observability of objects and seccomp attachments: what bpftool's
// "prog show" reports (run count and run time as the kernel's bpf_stats,
// load time, loader), and per-attachment seccomp decision counters.
//
// Program run statistics are always on. Counting a run costs two atomic
// adds and two monotonic clock reads (time.Now via the vDSO); a seccomp
// decision or a test run costs microseconds, so the overhead stays below
// a few percent (BenchmarkRunStats measures it against the same run
// without counting). Tail-called programs count in the program that
// started the run, as in the kernel.

// objStats is the observability state of an Object. Its fields are set
// once at creation (loadedAt, loader) or atomic (runs, runNs).
type objStats struct {
	runs  atomic.Uint64 // program runs (test runs count each repeat)
	runNs atomic.Uint64 // nanoseconds spent in them

	loadedAt time.Time // when the object was created (restored: when restored)
	// loaderPID and loaderComm describe the process that created the
	// object (0 and "" for restored objects); the loader's uid is the
	// object's owner.
	loaderPID  int32
	loaderComm string
}

// RecordRuns adds n runs of o's program taking d in all to its statistics
// (prog show, metrics). Attach points outside this package (links) call
// it for every run they make; it does not allocate and is safe for
// concurrent use.
func (o *Object) RecordRuns(n uint64, d time.Duration) {
	o.stats.runs.Add(n)
	if d > 0 {
		o.stats.runNs.Add(uint64(d))
	}
}

// Runs returns o's run count and total run time.
func (o *Object) Runs() (uint64, time.Duration) {
	return o.stats.runs.Load(), time.Duration(o.stats.runNs.Load())
}

// procComm returns the comm of process pid ("" if it cannot be read).
func procComm(pid int32) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

// noteCreator records c's client as the creator of o. Called once, before
// o is visible.
func (c *conn) noteCreator(o *Object) {
	o.stats.loadedAt = time.Now()
	o.stats.loaderPID = c.pid
	o.stats.loaderComm = c.comm()
}

// comm returns the connection's client's comm, read once.
func (c *conn) comm() string {
	if c.ptask != nil {
		return strings.TrimRight(string(c.ptask.Name[:]), "\x00")
	}
	return procComm(c.pid)
}

// maxCountedErrno bounds the per-errno deny counters; larger errnos share
// the last slot.
const maxCountedErrno = 255

// seccompStats counts one attachment's decisions. Counters are atomic:
// the serving goroutine writes, status and metrics read.
type seccompStats struct {
	routed  atomic.Uint64 // notifications answered
	allowed atomic.Uint64 // SECCOMP_RET_ALLOW and SECCOMP_RET_LOG
	killed  atomic.Uint64 // any other action: the process was killed
	faults  atomic.Uint64 // program faults (denied with EPERM, also counted there)
	runNs   atomic.Uint64 // time spent deciding
	// denied[e] counts SECCOMP_RET_ERRNO verdicts with errno e;
	// denied[maxCountedErrno] also those beyond it.
	denied [maxCountedErrno + 1]atomic.Uint64

	attachedAt time.Time
	pid        int32  // the attaching client
	comm       string // its comm at attach time

	// Deny logging, rate-limited to denyLogBurst per second; only the
	// serving goroutine touches these.
	logWindow  time.Time
	logged     int
	suppressed int
}

// denyLogBurst is how many deny decisions an attachment logs per second;
// the count of suppressed ones is logged with the next.
const denyLogBurst = 10

// count records one decision that took d.
func (st *seccompStats) count(v seccomp.Verdict, fault bool, d time.Duration) {
	st.routed.Add(1)
	st.runNs.Add(uint64(d))
	if fault {
		st.faults.Add(1)
	}
	switch v.Action {
	case seccomp.ActionAllow:
		st.allowed.Add(1)
	case seccomp.ActionErrno:
		st.denied[min(int(v.Errno), maxCountedErrno)].Add(1)
	default:
		st.killed.Add(1)
	}
}

// decided counts a decision of at's program for task t and logs denies
// and kills at info (rate-limited) with the task's process id (its
// thread-group id; the thread id too when it differs), comm and the
// program.
func (s *Server) decided(at *attachment, nr int32, t *seccomp.Task, v seccomp.Verdict, fault bool, d time.Duration) {
	at.stats.count(v, fault, d)
	s.seccompTotal.count(v, fault, d)
	at.obj.RecordRuns(1, d)
	if v.Action == seccomp.ActionAllow {
		return
	}
	st := &at.stats
	now := time.Now()
	if now.Sub(st.logWindow) >= time.Second {
		st.logWindow, st.logged = now, 0
	}
	if st.logged >= denyLogBurst {
		st.suppressed++
		return
	}
	st.logged++
	tid := t.PID()
	pid, err := t.TGID()
	if err != nil {
		pid = tid // the task is gone: its thread id is all there is
	}
	comm, _ := t.Comm()
	fields := []zap.Field{zap.Uint32("pid", pid), zap.ByteString("comm", bytes.TrimRight(comm[:], "\x00")),
		zap.String("prog", at.obj.p.Name()), zap.Uint32("prog_id", at.obj.id), zap.Uint32("attachment", at.id),
		zap.String("syscall", seccomp.SyscallName(uint32(nr))), zap.Int32("nr", nr)}
	if tid != pid {
		fields = append(fields, zap.Uint32("tid", tid))
	}
	if st.suppressed > 0 {
		fields = append(fields, zap.Int("suppressed", st.suppressed))
		st.suppressed = 0
	}
	if v.Action == seccomp.ActionErrno {
		s.log.Info("seccomp deny", append(fields, zap.String("errno", unix.ErrnoName(v.Errno)))...)
	} else {
		s.log.Info("seccomp kill", fields...)
	}
}

// SeccompStat describes one seccomp attachment and its decisions.
type SeccompStat struct {
	ID         uint32                `json:"id"`
	ProgID     uint32                `json:"prog_id"`
	ProgName   string                `json:"prog_name"`
	UID        uint32                `json:"uid"`
	PID        int32                 `json:"pid"`  // the client that attached it
	Comm       string                `json:"comm"` // its comm then
	AttachedAt time.Time             `json:"attached_at"`
	Routed     uint64                `json:"routed"`
	Allowed    uint64                `json:"allowed"`
	Denied     map[string]uint64     `json:"denied,omitempty"` // by errno name
	Killed     uint64                `json:"killed"`
	Faults     uint64                `json:"faults,omitempty"`
	RunTime    time.Duration         `json:"run_time_ns"`
	denied     map[unix.Errno]uint64 // by errno, for metrics
}

// DeniedByErrno returns the deny counts by errno.
func (s *SeccompStat) DeniedByErrno() map[unix.Errno]uint64 { return s.denied }

// SeccompStats returns the live seccomp attachments and their counters,
// by id.
func (s *Server) SeccompStats() []SeccompStat {
	att := &s.attach
	att.mu.Lock()
	list := make([]*attachment, 0, len(att.byID))
	for _, a := range att.byID {
		list = append(list, a)
	}
	att.mu.Unlock()
	out := make([]SeccompStat, 0, len(list))
	for _, a := range list {
		out = append(out, a.stat())
	}
	sortByID(out, func(x SeccompStat) uint32 { return x.ID })
	return out
}

func (a *attachment) stat() SeccompStat {
	st := &a.stats
	out := SeccompStat{ID: a.id, ProgID: a.obj.id, ProgName: a.obj.p.Name(), UID: a.uid, PID: st.pid, Comm: st.comm,
		AttachedAt: st.attachedAt, Routed: st.routed.Load(), Allowed: st.allowed.Load(), Killed: st.killed.Load(),
		Faults: st.faults.Load(), RunTime: time.Duration(st.runNs.Load())}
	fillDenied(&out, st)
	return out
}

// sortByID sorts s by id.
func sortByID[T any](s []T, id func(T) uint32) {
	sort.Slice(s, func(i, j int) bool { return id(s[i]) < id(s[j]) })
}

// ProgStat is one program's run statistics.
type ProgStat struct {
	ID      uint32
	Name    string
	Type    uint32
	Owner   uint32
	Runs    uint64
	RunTime time.Duration
}

// ProgStats returns every live program's run statistics, by id.
func (s *Server) ProgStats() []ProgStat {
	r := s.reg
	r.mu.Lock()
	out := make([]ProgStat, 0, 16)
	for _, o := range r.objects {
		if o.p == nil {
			continue
		}
		runs, d := o.Runs()
		out = append(out, ProgStat{ID: o.id, Name: o.p.Name(), Type: uint32(o.p.Type()), Owner: o.owner, Runs: runs, RunTime: d})
	}
	r.mu.Unlock()
	sortByID(out, func(x ProgStat) uint32 { return x.ID })
	return out
}

// seccompFor returns the seccomp attachments uid may see in STATUS: its
// own (uid 0: all).
func (s *Server) seccompFor(uid uint32) []SeccompStat {
	all := s.SeccompStats()
	out := all[:0]
	for _, st := range all {
		if uid == 0 || st.UID == uid {
			out = append(out, st)
		}
	}
	return out
}

// SeccompTotals returns the decisions of every seccomp attachment since
// the server started, ended ones included (identity fields empty).
func (s *Server) SeccompTotals() SeccompStat {
	st := &s.seccompTotal
	out := SeccompStat{Routed: st.routed.Load(), Allowed: st.allowed.Load(), Killed: st.killed.Load(),
		Faults: st.faults.Load(), RunTime: time.Duration(st.runNs.Load())}
	fillDenied(&out, st)
	return out
}

func fillDenied(out *SeccompStat, st *seccompStats) {
	for e := range st.denied {
		if n := st.denied[e].Load(); n > 0 {
			if out.denied == nil {
				out.denied, out.Denied = map[unix.Errno]uint64{}, map[string]uint64{}
			}
			out.denied[unix.Errno(e)] = n
			name := unix.ErrnoName(unix.Errno(e))
			if name == "" || e == maxCountedErrno {
				name = "errno" + strconv.Itoa(e)
			}
			out.Denied[name] = n
		}
	}
}

// ObjectsByKind counts the live objects by kind ("map", "prog", "link",
// "btf").
func (s *Server) ObjectsByKind() map[string]int {
	out := map[string]int{"map": 0, "prog": 0, "link": 0, "btf": 0}
	s.reg.mu.Lock()
	for _, o := range s.reg.objects {
		out[objKindName(o.kind)]++
	}
	s.reg.mu.Unlock()
	return out
}

// LinkInfos returns every live link with its counters, by id (for metrics;
// LINK_LIST answers clients).
func (s *Server) LinkInfos() []wire.LinkInfo {
	ls := &s.links
	ls.mu.Lock()
	list := make([]*link, 0, len(ls.links))
	for l := range ls.links {
		list = append(list, l)
	}
	ls.mu.Unlock()
	out := make([]wire.LinkInfo, 0, len(list))
	for _, l := range list {
		out = append(out, l.info())
	}
	sortByID(out, func(li wire.LinkInfo) uint32 { return li.ID })
	return out
}

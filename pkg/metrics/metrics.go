// Package metrics exposes bpfd's counters to Prometheus: requests by
// command and errno with latency histograms, objects, descriptors,
// handles, connections, memory and objects by uid, program runs and run
// time, seccomp decisions, and link packet counters.
//
// Collection: the daemon keeps every counter itself, preallocated and
// updated with atomic adds on its own paths (pkg/demux's reqstats.go and
// stats.go); nothing here runs per request. A Collector reads them when
// Prometheus scrapes (a prometheus.Collector producing const metrics), so
// series of objects that are gone disappear at once and the element path
// stays allocation-free.
//
// Exposure: off by default. Listen accepts a Unix socket ("unix:PATH",
// made mode 0600: only the daemon's user, or whom it chmods the socket to,
// may scrape) or a loopback TCP address ("127.0.0.1:9477", "[::1]:9477",
// "localhost:9477"); any other address is refused, because the metrics
// name uids, programs and their activity. On a loopback port every local
// user can scrape; prefer the Unix socket on shared machines.
//
// Label cardinality is bounded by the daemon's quotas: programs and
// attachments are per object (at most the objects uids may hold), uids per
// active uid, commands and errnos by fixed tables.
//
// A Collector is safe for concurrent use.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Source is what a Collector reads: a *demux.Server.
type Source interface {
	Stats() demux.Stats
	RequestStats() []demux.RequestStat
	ProgStats() []demux.ProgStat
	SeccompStats() []demux.SeccompStat
	SeccompTotals() demux.SeccompStat
	ObjectsByKind() map[string]int
}

var _ Source = (*demux.Server)(nil)

// LinkSource returns the live links with their counters; attach points
// register one with AddLinkSource (the daemon registers
// (*demux.Server).LinkInfos).
type LinkSource func() []wire.LinkInfo

// Collector is a prometheus.Collector of a daemon's counters.
type Collector struct {
	src     Source
	version string

	mu    sync.Mutex
	links []LinkSource // guarded by mu
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector reading src; version is reported by
// bpfd_build_info.
func NewCollector(src Source, version string) *Collector {
	return &Collector{src: src, version: version}
}

// AddLinkSource registers a source of link counters (packets, bytes,
// verdicts, errors, kernel drops), exposed as bpfd_link_*.
func (c *Collector) AddLinkSource(ls LinkSource) {
	c.mu.Lock()
	c.links = append(c.links, ls)
	c.mu.Unlock()
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("bpfd_"+name, help, labels, nil)
}

var (
	dBuild       = desc("build_info", "bpfd's version (value 1).", "version")
	dStart       = desc("start_time_seconds", "When the daemon started (unix time).")
	dRequests    = desc("requests_total", "Requests answered, by command and errno (OK for success).", "command", "errno")
	dLatency     = desc("request_duration_seconds", "Time from a request's receipt to its reply being sent, by command.", "command")
	dObjects     = desc("objects", "Live objects by kind.", "kind")
	dDescriptors = desc("descriptors", "Live descriptors (each one fd held by the daemon).")
	dHandles     = desc("handles", "Live handles on all connections.")
	dConns       = desc("connections", "Open client connections.")
	dMapMemory   = desc("map_memory_bytes", "Memory charged for objects, all uids.")
	dUIDMemory   = desc("uid_memory_bytes", "Memory charged to a uid's objects.", "uid")
	dUIDMemQuota = desc("uid_memory_quota_bytes", "A uid's memory quota.", "uid")
	dUIDObjects  = desc("uid_objects", "Objects a uid owns.", "uid")
	dUIDDescs    = desc("uid_descriptors", "Descriptors charged to a uid.", "uid")
	dUIDConns    = desc("uid_connections", "A uid's open connections.", "uid")
	dProgRuns    = desc("program_runs_total", "Runs of a program (test runs count each repeat; seccomp decisions; link packets).", "id", "name", "type")
	dProgTime    = desc("program_run_seconds_total", "Time spent running a program.", "id", "name", "type")
	dSecAttach   = desc("seccomp_attachments", "Live seccomp attachments.")
	dSecTotal    = desc("seccomp_decisions_total", "Seccomp decisions of every attachment since start, by action (allow, errno, kill) and errno.", "action", "errno")
	dSecFaults   = desc("seccomp_faults_total", "Seccomp program faults (the syscall was denied with EPERM).")
	dSecAtt      = desc("seccomp_attachment_decisions_total", "Decisions of a live seccomp attachment, by action and errno.", "attachment", "prog_id", "prog", "uid", "action", "errno")
	dLinkPackets = desc("link_packets_total", "Packets a link's program decided.", "link", "type", "prog_id", "prog")
	dLinkBytes   = desc("link_bytes_total", "Bytes of the packets a link decided.", "link", "type", "prog_id", "prog")
	dLinkVerdict = desc("link_verdicts_total", "A link's verdicts by program result.", "link", "type", "prog_id", "prog", "verdict")
	dLinkErrors  = desc("link_errors_total", "A link's program faults (each packet dropped).", "link", "type", "prog_id", "prog")
	dLinkDropped = desc("link_kernel_dropped_total", "Packets the kernel dropped before the link saw them, by reason.", "link", "type", "prog_id", "prog", "reason")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dBuild, dStart, dRequests, dLatency, dObjects, dDescriptors, dHandles,
		dConns, dMapMemory, dUIDMemory, dUIDMemQuota, dUIDObjects, dUIDDescs, dUIDConns, dProgRuns, dProgTime,
		dSecAttach, dSecTotal, dSecFaults, dSecAtt, dLinkPackets, dLinkBytes, dLinkVerdict, dLinkErrors, dLinkDropped} {
		ch <- d
	}
}

// errnoLabel names an errno for the errno label: "OK" for success,
// "other" for those counted together.
func errnoLabel(e unix.Errno) string {
	switch e {
	case 0:
		return "OK"
	case demux.OtherErrno:
		return "other"
	case 524:
		return "ENOTSUPP"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return "errno" + strconv.Itoa(int(e))
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(dBuild, 1, c.version)
	st := c.src.Stats()
	gauge(dStart, float64(st.Started.UnixNano())/1e9)
	gauge(dDescriptors, float64(st.Descriptors))
	gauge(dHandles, float64(st.Handles))
	gauge(dConns, float64(st.Connections))
	gauge(dMapMemory, float64(st.MapMemory))
	for _, u := range st.UIDs {
		uid := strconv.FormatUint(uint64(u.UID), 10)
		gauge(dUIDMemory, float64(u.MapMemory), uid)
		gauge(dUIDMemQuota, float64(u.Quota.MapMemory), uid)
		gauge(dUIDObjects, float64(u.Objects), uid)
		gauge(dUIDDescs, float64(u.Descriptors), uid)
		gauge(dUIDConns, float64(u.Connections), uid)
	}
	for kind, n := range c.src.ObjectsByKind() {
		gauge(dObjects, float64(n), kind)
	}

	for _, r := range c.src.RequestStats() {
		cmd := r.Cmd.String()
		if r.Other {
			cmd = "unknown"
		}
		for e, n := range r.ByErrno {
			counter(dRequests, float64(n), cmd, errnoLabel(e))
		}
		buckets := make(map[float64]uint64, len(demux.HistogramBounds))
		for i, b := range demux.HistogramBounds {
			buckets[b] = r.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(dLatency, r.Count, r.Sum.Seconds(), buckets, cmd)
	}

	for _, p := range c.src.ProgStats() {
		id, typ := strconv.FormatUint(uint64(p.ID), 10), prog.Type(p.Type).String()
		counter(dProgRuns, float64(p.Runs), id, p.Name, typ)
		counter(dProgTime, p.RunTime.Seconds(), id, p.Name, typ)
	}

	tot := c.src.SeccompTotals()
	decisions(counter, dSecTotal, &tot)
	counter(dSecFaults, float64(tot.Faults))
	live := c.src.SeccompStats()
	gauge(dSecAttach, float64(len(live)))
	for i := range live {
		a := &live[i]
		decisions(counter, dSecAtt, a, strconv.FormatUint(uint64(a.ID), 10), strconv.FormatUint(uint64(a.ProgID), 10),
			a.ProgName, strconv.FormatUint(uint64(a.UID), 10))
	}

	c.mu.Lock()
	links := append([]LinkSource(nil), c.links...)
	c.mu.Unlock()
	for _, src := range links {
		for _, l := range src() {
			lab := []string{strconv.FormatUint(uint64(l.ID), 10), l.Type, strconv.FormatUint(uint64(l.ProgID), 10), l.ProgName}
			counter(dLinkPackets, float64(l.Packets), lab...)
			counter(dLinkBytes, float64(l.Bytes), lab...)
			counter(dLinkErrors, float64(l.Errors), lab...)
			for _, v := range []struct {
				name string
				n    uint64
			}{{"pass", l.Pass}, {"drop", l.Drop}, {"aborted", l.Aborted}, {"tx", l.TX}, {"redirect", l.Redirect}, {"invalid", l.Invalid}} {
				counter(dLinkVerdict, float64(v.n), append(lab, v.name)...)
			}
			counter(dLinkDropped, float64(l.KernelQueueDropped), append(lab, "queue_full")...)
			counter(dLinkDropped, float64(l.KernelUserDropped), append(lab, "socket_full")...)
		}
	}
}

// decisions emits the seccomp decision counters of s with the leading
// labels lead.
func decisions(counter func(*prometheus.Desc, float64, ...string), d *prometheus.Desc, s *demux.SeccompStat, lead ...string) {
	with := func(action, errno string) []string { return append(append([]string(nil), lead...), action, errno) }
	counter(d, float64(s.Allowed), with("allow", "")...)
	counter(d, float64(s.Killed), with("kill", "")...)
	for e, n := range s.DeniedByErrno() {
		counter(d, float64(n), with("errno", errnoLabel(e))...)
	}
}

// NewRegistry returns a registry with c, the Go runtime's and the
// process's collectors.
func NewRegistry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ErrNotLocal: a metrics address that is neither a Unix socket nor a
// loopback TCP address.
var ErrNotLocal = errors.New("metrics: the address must be unix:PATH or a loopback host:port (127.0.0.1, [::1], localhost)")

// Listen opens the metrics listener at addr: "unix:PATH" (a stream
// socket, mode 0600; a stale socket file is replaced, anything else at
// PATH is refused) or a loopback "host:port". It returns ErrNotLocal for
// any other address. The caller closes the listener (Serve does).
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, fmt.Errorf("%w: empty socket path", ErrNotLocal)
		}
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode().Type() != os.ModeSocket {
				return nil, fmt.Errorf("metrics: %s exists and is not a socket; not removing it", path)
			}
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("metrics: something already serves %s", path)
			}
			os.Remove(path)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
		return ln, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotLocal, err)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: %q", ErrNotLocal, addr)
		}
	}
	if host == "localhost" {
		addr = net.JoinHostPort("127.0.0.1", addr[strings.LastIndexByte(addr, ':')+1:])
	}
	return net.Listen("tcp", addr)
}

// Serve answers GET /metrics (the Prometheus text or protobuf format, as
// negotiated) on ln from reg until ctx ends, then closes ln (removing a
// Unix socket's file) and returns nil; or returns the serving error.
func Serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bpfd metrics are at /metrics", http.StatusNotFound)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			srv.Shutdown(sctx)
			cancel()
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if ua, ok := ln.Addr().(*net.UnixAddr); ok {
		os.Remove(ua.Name)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

package metrics

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

const roleEnv = "BPFD_METRICS_TEST_ROLE"

func TestMain(m *testing.M) {
	// The test binary is also StartSeccomp's shim, and a filtered child.
	client.SeccompShimMain()
	if os.Getenv(roleEnv) == "sockets" {
		// Three routed socket() calls: AF_INET6 twice (EPERM), AF_UNIX once.
		for _, fam := range []int{unix.AF_INET6, unix.AF_UNIX, unix.AF_INET6} {
			if fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
				unix.Close(fd)
			}
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// scrape GETs /metrics over the Unix socket at path and parses it.
func scrape(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := hc.Get("http://bpfd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want (counter, gauge, or a histogram's count), and whether one
// was found.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
outer:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue outer
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestScrape drives known traffic through a daemon and checks what its
// metrics endpoint says about it.
func TestScrape(t *testing.T) {
	dir := t.TempDir()
	srv, err := demux.NewServer(&demux.Config{Logger: zap.NewNop(), Version: "metrics-test"})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bpfd.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	col := NewCollector(srv, "metrics-test")
	fake := []wire.LinkInfo{{ID: 9, Type: "nfqueue", ProgID: 4, ProgName: "ports",
		LinkStats: wire.LinkStats{Packets: 10, Bytes: 1000, Pass: 7, Drop: 3, KernelQueueDropped: 2}}}
	col.AddLinkSource(func() []wire.LinkInfo { return fake })
	mpath := filepath.Join(dir, "metrics.sock")
	mln, err := Listen("unix:" + mpath)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(mpath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("metrics socket: %v %v, want mode 0600", fi, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, mln, NewRegistry(col)) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(mpath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("metrics socket left behind: %v", err)
		}
	})

	// Known traffic: 2 maps, 5 updates, 5 deletes of missing keys; a
	// program tested 4 times; 3 routed syscalls.
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 512, Name: "counts"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	for i := range uint32(3) {
		if err := m.Update(u32(i), make([]byte, 8), client.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	h, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// (Lookups read the map's storage mapped into the client: no
	// request. Deletes and updates are requests.)
	for i := range uint32(5) {
		if err := h.Delete(u32(i)); !errors.Is(err, client.ErrKeyNotExist) {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	for i := range uint32(2) {
		if err := h.Update(u32(i), make([]byte, 8), client.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	policy := asm.Instructions{
		// socket(AF_INET6, ...) → SECCOMP_RET_ERRNO|EPERM, else allow.
		asm.LoadMem(asm.R2, asm.R1, 16, asm.DWord),
		asm.JNE.Imm(asm.R2, unix.AF_INET6, "allow"),
		asm.Mov.Imm32(asm.R0, 0x00050000|int32(unix.EPERM)),
		asm.Return(),
		asm.Mov.Imm32(asm.R0, 0x7fff0000).WithSymbol("allow"),
		asm.Return(),
	}
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.Seccomp, Instructions: policy, License: "GPL", Name: "policy"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	seccompData := make([]byte, 64)
	binary.LittleEndian.PutUint32(seccompData, 41)
	if _, err := p.Run(&client.RunOptions{Context: seccompData, Repeat: 4}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=sockets")
	run, err := p.StartSeccomp(cmd, &client.SeccompOptions{Syscalls: []string{"socket"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("filtered child: %v", err)
	}

	fams := scrape(t, mpath)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bpfd_build_info", map[string]string{"version": "metrics-test"}, 1},
		{"bpfd_requests_total", map[string]string{"command": "MAP_UPDATE_ELEM", "errno": "OK"}, 5},
		{"bpfd_requests_total", map[string]string{"command": "MAP_DELETE_ELEM", "errno": "ENOENT"}, 5},
		{"bpfd_requests_total", map[string]string{"command": "MAP_CREATE", "errno": "OK"}, 2},
		{"bpfd_requests_total", map[string]string{"command": "PROG_TEST_RUN", "errno": "OK"}, 1},
		{"bpfd_request_duration_seconds", map[string]string{"command": "MAP_DELETE_ELEM"}, 5},
		{"bpfd_objects", map[string]string{"kind": "map"}, 2},
		{"bpfd_objects", map[string]string{"kind": "prog"}, 1},
		{"bpfd_program_runs_total", map[string]string{"name": "policy", "type": "seccomp"}, 4 + 3},
		{"bpfd_seccomp_decisions_total", map[string]string{"action": "errno", "errno": "EPERM"}, 2},
		{"bpfd_seccomp_decisions_total", map[string]string{"action": "allow"}, 1},
		{"bpfd_seccomp_decisions_total", map[string]string{"action": "kill"}, 0},
		{"bpfd_link_packets_total", map[string]string{"link": "9", "prog": "ports"}, 10},
		{"bpfd_link_verdicts_total", map[string]string{"link": "9", "verdict": "drop"}, 3},
		{"bpfd_link_kernel_dropped_total", map[string]string{"link": "9", "reason": "queue_full"}, 2},
		{"bpfd_uid_memory_bytes", map[string]string{"uid": fmt.Sprint(os.Getuid())}, -1},
		{"bpfd_connections", nil, 1},
		{"go_goroutines", nil, -1},
	} {
		got, ok := value(fams, tc.name, tc.labels)
		if !ok || tc.want >= 0 && got != tc.want || tc.want < 0 && got <= 0 {
			t.Errorf("%s%v = %v (found %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if got, _ := value(fams, "bpfd_program_run_seconds_total", map[string]string{"name": "policy"}); got <= 0 {
		t.Errorf("program run time %v", got)
	}
	// The latency histogram's buckets are cumulative and end with all.
	for _, mf := range fams["bpfd_request_duration_seconds"].Metric {
		hist := mf.Histogram
		prev := uint64(0)
		for _, b := range hist.Bucket {
			if b.GetCumulativeCount() < prev {
				t.Fatalf("buckets not cumulative: %v", hist)
			}
			prev = b.GetCumulativeCount()
		}
		if prev > hist.GetSampleCount() {
			t.Fatalf("bucket count %d above the sample count %d", prev, hist.GetSampleCount())
		}
	}
}

func TestListenRefusesRemote(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		ok         bool
	}{
		{name: "loopback v4", addr: "127.0.0.1:0", ok: true},
		{name: "loopback v6", addr: "[::1]:0", ok: true},
		{name: "localhost", addr: "localhost:0", ok: true},
		{name: "any", addr: ":9477"},
		{name: "all v4", addr: "0.0.0.0:9477"},
		{name: "remote", addr: "192.0.2.1:9477"},
		{name: "name", addr: "example.com:9477"},
		{name: "no port", addr: "127.0.0.1"},
		{name: "empty unix", addr: "unix:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := Listen(tc.addr)
			if tc.ok {
				if err != nil {
					if strings.Contains(err.Error(), "address not available") || strings.Contains(err.Error(), "cannot assign") {
						t.Skipf("no %s on this machine: %v", tc.addr, err)
					}
					t.Fatal(err)
				}
				ln.Close()
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q) accepted", tc.addr)
			}
			if !errors.Is(err, ErrNotLocal) {
				t.Fatalf("Listen(%q): %v, want ErrNotLocal", tc.addr, err)
			}
		})
	}
	// Nothing but a socket is replaced at a unix: path.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := Listen("unix:" + f); err == nil {
		t.Fatal("Listen over a regular file")
	}
}

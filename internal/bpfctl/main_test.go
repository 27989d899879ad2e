package bpfctl

import (
	"github.com/bpfd-project/bpfd/pkg/client"

	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/sched"
)

func TestMain(m *testing.M) {
	// The test binary is also the shim of bpfctl seccomp exec.
	client.SeccompShimMain()
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role))
	}
	// Children re-executed under -race need not linger a second at exit.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	// Start the runtime's network poller so its fds are in the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := listFDs()
	code := m.Run()
	if code == 0 {
		// The daemon closes descriptors' peer ends on hangup,
		// asynchronously; give it a moment.
		deadline := time.Now().Add(5 * time.Second)
		for len(listFDs()) > len(before) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := listFDs(); len(after) > len(before) {
			fmt.Fprintf(os.Stderr, "FAIL: leaked fds: %d open before the tests, %d after\nbefore: %v\nafter:  %v\n",
				len(before), len(after), before, after)
			code = 1
		}
	}
	os.Exit(code)
}

// listFDs describes the process's open fds ("n -> target").
func listFDs() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used
		}
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}

// testQuota makes status output the same for root and other users.
var testQuota = demux.Quota{MapMemory: 64 << 20, Objects: 100, Descriptors: 1000, Conns: 50}

// daemon is an in-process bpfd with a pin root, for one test.
type daemon struct {
	dir     string // temporary directory holding the socket and pins
	socket  string
	pinRoot string
	srv     *demux.Server
}

// settle waits until the daemon has seen every descriptor and connection
// of earlier commands closed (it learns of hangups asynchronously), so that status
// counts are deterministic.
func (d *daemon) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := d.srv.Stats(); st.Descriptors == 0 && st.Connections == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startDaemon starts an in-process bpfd; it is shut down at cleanup.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{dir: dir, socket: filepath.Join(dir, "bpfd.sock"), pinRoot: filepath.Join(dir, "pins")}
	srv, err := demux.NewServer(&demux.Config{Logger: zap.NewNop(), PinRoot: d.pinRoot, Version: "test",
		DefaultQuota: testQuota, RootQuota: testQuota,
		// The machine's CPU count and memory would show in status.
		Sched: sched.Config{Slots: 1}, MaxMemory: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: d.socket, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	d.srv = srv
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return d
}

// result is one bpfctl run.
type result struct {
	code           int
	stdout, stderr string
}

// run runs bpfctl in process against d with args.
func (d *daemon) run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		Getenv: func(string) string { return "" },
		Owner:  func(uid, gid uint32) string { return "OWNER" },
		Uptime: func(client.Status) string { return "UPTIME" },
		Time:   func(int64) string { return "TIME" }}
	code := a.Run(append([]string{"--socket", d.socket}, args...))
	return result{code, out.String(), errb.String()}
}

// mustRun is run that fails the test unless bpfctl exits 0.
func (d *daemon) mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := d.run(t, args...)
	if r.code != 0 {
		t.Fatalf("bpfctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

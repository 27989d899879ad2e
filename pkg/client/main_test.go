package client

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/pkg/demux"
)

// roleEnv names the role a re-executed test binary plays (see runChild).
const roleEnv = "BPFD_CLIENT_TEST_ROLE"

// socketEnvTest passes the daemon socket path to a child.
const socketEnvTest = "BPFD_CLIENT_TEST_SOCKET"

func TestMain(m *testing.M) {
	// The test binary is also the seccomp shim of StartSeccomp's tests.
	SeccompShimMain()
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runChild(role))
	}
	// Start the runtime's network poller so its fds are in the baseline.
	if a, b, err := socketpair(); err == nil {
		a.Close()
		b.Close()
	}
	before := listFDs()
	code := m.Run()
	if testBin != "" {
		os.RemoveAll(filepath.Dir(testBin))
	}
	if code == 0 {
		// Daemon goroutines close descriptors' peer ends on hangup,
		// asynchronously; give them a moment.
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

func countFDs(t testing.TB) int {
	t.Helper()
	return len(listFDs())
}

// socketpair returns the two ends of a SOCK_SEQPACKET socketpair as
// *net.UnixConn.
func socketpair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1], nil
}

// sharedDir returns a fresh directory under os.TempDir() that every user may
// traverse (t.TempDir() is 0700, which a child running as nobody cannot
// enter), removed at the end of the test.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bpfd-client-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// server is an in-process bpfd serving on a socket in a shared directory.
type server struct {
	srv  *demux.Server
	path string
	dir  string
}

// startServer starts an in-process daemon; it is shut down at cleanup.
func startServer(t testing.TB) *server {
	t.Helper()
	return startServerWith(t, func(string) *demux.Config { return &demux.Config{Logger: zap.NewNop()} })
}

// startServerPins is startServer with a pin root in the shared directory.
func startServerPins(t testing.TB) *server {
	t.Helper()
	return startServerWith(t, func(dir string) *demux.Config {
		return &demux.Config{Logger: zap.NewNop(), PinRoot: filepath.Join(dir, "pins")}
	})
}

// startServerWith starts an in-process daemon configured by cfg (given the
// shared directory); it is shut down at cleanup.
func startServerWith(t testing.TB, cfg func(dir string) *demux.Config) *server {
	t.Helper()
	dir := sharedDir(t)
	s, err := serveWith(filepath.Join(dir, "bpfd.sock"), cfg(dir))
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// serve starts a daemon on path, with a socket anyone may connect to.
func serve(path string) (*server, error) {
	return serveWith(path, &demux.Config{Logger: zap.NewNop()})
}

// serveWith is serve with a configuration.
func serveWith(path string, cfg *demux.Config) (*server, error) {
	srv, err := demux.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	go srv.Serve(ln)
	return &server{srv: srv, path: path}, nil
}

// dial connects to s; the Conn is closed at cleanup.
func (s *server) dial(t testing.TB) *Conn {
	t.Helper()
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newTestConn starts a daemon and connects to it.
func newTestConn(t testing.TB) *Conn {
	t.Helper()
	return startServer(t).dial(t)
}

// newTestMap creates a map closed at cleanup.
func newTestMap(t testing.TB, c *Conn, spec MapSpec) *Map {
	t.Helper()
	m, err := c.NewMap(spec)
	if err != nil {
		t.Fatalf("NewMap(%+v): %v", spec, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var (
	testBinOnce sync.Once
	testBin     string
	testBinErr  error
)

// sharedTestBinary returns a copy of the test binary that any user may
// execute (go test's build directory is private to root). TestMain removes
// it.
func sharedTestBinary(t testing.TB) string {
	t.Helper()
	testBinOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			testBinErr = err
			return
		}
		dir, err := os.MkdirTemp("", "bpfd-client-bin-")
		if err != nil {
			testBinErr = err
			return
		}
		os.Chmod(dir, 0o755)
		b, err := os.ReadFile(self)
		if err != nil {
			testBinErr = err
			return
		}
		testBin = filepath.Join(dir, "client.test")
		testBinErr = os.WriteFile(testBin, b, 0o755)
	})
	if testBinErr != nil {
		t.Fatal(testBinErr)
	}
	return testBin
}

// childUID is the uid children run as: nobody when we are root (so they
// are really another user), ourselves otherwise.
func childUID() (uint32, bool) {
	if os.Geteuid() == 0 {
		return 65534, true
	}
	return uint32(os.Geteuid()), false
}

// child returns a command re-executing the test binary in role, with extra
// files as fds 3, 4, ... and env (KEY=value) added. As root it runs as
// uid/gid 65534.
func child(t testing.TB, role string, extra []*os.File, env ...string) *exec.Cmd {
	t.Helper()
	cmd := sameUserChild(t, role, extra, env...)
	if uid, ok := childUID(); ok {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, NoSetGroups: true}}
	}
	return cmd
}

// sameUserChild is child running as this process's user.
func sameUserChild(t testing.TB, role string, extra []*os.File, env ...string) *exec.Cmd {
	t.Helper()
	bin := sharedTestBinary(t)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=" + role}, env...)...)
	cmd.ExtraFiles = extra
	return cmd
}

// runChild runs a child role and returns its exit code.
func runChild(role string) int {
	var err error
	switch role {
	case "importer":
		err = childImporter()
	case "leaker":
		err = childLeaker()
	case "echo":
		err = childEcho()
	case "daemon":
		err = childDaemon()
	case "sockprobe":
		err = childSockProbe()
	case "latency":
		err = childSyscallLatency()
	case "attacker":
		err = childAttacker()
	case "flooder":
		err = childFlooder()
	case "amplifier":
		err = childAmplifier()
	case "uringprobe":
		err = childUringProbe()
	case "porteditor":
		err = childPortEditor()
	case "nfqattach":
		err = childNFQAttach()
	case "mapreader":
		err = childMapReader()
	case "lister":
		err = childLister()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child %s (uid %d): %v\n", role, os.Getuid(), err)
		return 1
	}
	return 0
}

// fdConn turns inherited fd n into a *net.UnixConn.
func fdConn(n int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(n), "inherited")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// trimOutput shortens child output for error messages.
func trimOutput(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}

// snapshot is the part of the daemon's Stats that must return to its
// baseline once objects are gone.
type snapshot struct {
	objects, descriptors int
	memory               uint64
	uidObjects           map[uint32]int
	uidMemory            map[uint32]uint64
}

func (s *server) stats(t testing.TB) snapshot {
	t.Helper()
	st := s.srv.Stats()
	snap := snapshot{objects: st.Objects, descriptors: st.Descriptors, memory: st.MapMemory,
		uidObjects: map[uint32]int{}, uidMemory: map[uint32]uint64{}}
	for _, u := range st.UIDs {
		if u.Objects != 0 || u.MapMemory != 0 {
			snap.uidObjects[u.UID] = u.Objects
			snap.uidMemory[u.UID] = u.MapMemory
		}
	}
	return snap
}

func (a snapshot) equal(b snapshot) bool {
	return a.objects == b.objects && a.descriptors == b.descriptors && a.memory == b.memory &&
		fmt.Sprint(a.uidObjects) == fmt.Sprint(b.uidObjects) && fmt.Sprint(a.uidMemory) == fmt.Sprint(b.uidMemory)
}

// waitStats waits until the daemon is back at base: objects freed,
// descriptors closed, memory and per-uid quota returned.
func (s *server) waitStats(t testing.TB, base snapshot) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := s.stats(t)
		if now.equal(base) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not return to baseline:\nnow  %+v\nbase %+v", now, base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

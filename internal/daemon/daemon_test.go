package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/state/statetest"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// When BPFD_TEST_DAEMON is set the test binary is the daemon: Run with the
// rest of the arguments.
func TestMain(m *testing.M) {
	// The test binary is also the seccomp shim and a client (caps_test.go,
	// upgrade_test.go, fdstore_test.go).
	client.SeccompShimMain()
	if role := os.Getenv(clientRoleEnv); role != "" {
		os.Exit(runClientRole(role))
	}
	if os.Getenv("BPFD_TEST_HOLDER") == "1" {
		os.Exit(holderMain())
	}
	if os.Getenv("BPFD_TEST_SYSCALLER") == "1" {
		os.Exit(syscallerMain())
	}
	if os.Getenv("BPFD_TEST_DAEMON") == "1" {
		statetest.ChildListenPID() // the fake service manager's LISTEN_PID
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		os.Exit(Run(args))
	}
	os.Exit(m.Run())
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseOptionsPrecedence(t *testing.T) {
	rootDefault := "/run/bpfd/bpfd.sock"
	userDefault := "/run/user/1000/bpfd/bpfd.sock"
	want := func(root, user string) string {
		if os.Geteuid() == 0 {
			return root
		}
		return user
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{name: "default", env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, want: want(rootDefault, userDefault)},
		{name: "env beats default", env: map[string]string{"BPFD_SOCKET": "/tmp/e.sock", "XDG_RUNTIME_DIR": "/x"}, want: "/tmp/e.sock"},
		{name: "flag beats env", args: []string{"--socket", "/tmp/f.sock"}, env: map[string]string{"BPFD_SOCKET": "/tmp/e.sock"}, want: "/tmp/f.sock"},
		{name: "flag with equals", args: []string{"--socket=/tmp/g.sock"}, want: "/tmp/g.sock"},
		{name: "bad log format", args: []string{"--socket=/x", "--log-format", "xml"}, wantErr: true},
		{name: "bad log level", args: []string{"--socket=/x", "--log-level", "loud"}, wantErr: true},
		{name: "stray argument", args: []string{"--socket=/x", "extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := ParseOptions(tt.args, env(tt.env), &stderr)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %+v, want an error", o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Socket != tt.want {
				t.Fatalf("socket %q, want %q", o.Socket, tt.want)
			}
		})
	}
}

func TestDefaultSocket(t *testing.T) {
	if p, err := DefaultSocket(0, env(nil)); err != nil || p != "/run/bpfd/bpfd.sock" {
		t.Fatalf("root: %q %v", p, err)
	}
	if p, err := DefaultSocket(1000, env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"})); err != nil || p != "/run/user/1000/bpfd/bpfd.sock" {
		t.Fatalf("user: %q %v", p, err)
	}
	if _, err := DefaultSocket(2147483000, env(nil)); !errors.Is(err, ErrNoRuntimeDir) {
		t.Fatalf("no runtime dir: %v", err)
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--version"}, env(nil), &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "bpfd ") {
		t.Fatalf("output %q", out.String())
	}
}

// hello dials path and checks a daemon answers CmdHello.
func hello(t *testing.T, path string) {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := wire.HelloAttr{Version: wire.Version}
	msg := wire.AppendReqHeader(nil, wire.ReqHeader{Cmd: wire.CmdHello, AttrLen: wire.HelloAttrSize})
	if _, err := c.Write(a.Append(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := wire.ParseReply(buf[:n])
	if err != nil || h.Errno != 0 || h.Ret != wire.Version {
		t.Fatalf("hello reply %+v %v", h, err)
	}
}

func TestMainServesAndStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "bpfd.sock")
	dirs := tempDirsArgs(t)
	ctx, cancel := context.WithCancel(context.Background())
	var errb bytes.Buffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, append([]string{"--socket", path, "--log-format", "json"}, dirs...), env(nil), &bytes.Buffer{}, &errb)
	}()
	waitSocket(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v, want 0666", fi.Mode().Perm())
	}
	hello(t, path)
	// A second daemon on the same path refuses to start.
	var errb2 bytes.Buffer
	if code := Main(context.Background(), append([]string{"--socket", path}, tempDirsArgs(t)...), env(nil), &bytes.Buffer{}, &errb2); code != ExitError {
		t.Fatalf("second daemon exit %d, want %d", code, ExitError)
	}
	if !strings.Contains(errb2.String(), "already serving") {
		t.Errorf("second daemon log lacks the reason: %s", errb2.String())
	}
	// So does a second daemon on another socket with the same state
	// directory (issue 9 item 8): it names the holder.
	errb2.Reset()
	other := filepath.Join(t.TempDir(), "other.sock")
	if code := Main(context.Background(), append([]string{"--socket", other}, dirs...), env(nil), &bytes.Buffer{}, &errb2); code != ExitError {
		t.Fatalf("daemon sharing the state directory: exit %d, want %d", code, ExitError)
	}
	if want := fmt.Sprintf("in use by another bpfd (pid %d)", os.Getpid()); !strings.Contains(errb2.String(), want) {
		t.Errorf("daemon sharing the state directory: log lacks %q: %s", want, errb2.String())
	}
	if _, err := os.Lstat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused daemon left a socket: %v", err)
	}
	// And a daemon with another pin root on the same state directory,
	// once the first is gone, is refused too (below).
	hello(t, path) // the first is unharmed
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
	errb2.Reset()
	otherPins := []string{"--pin-root", filepath.Join(t.TempDir(), "pins"), dirs[2], dirs[3]}
	if code := Main(context.Background(), append([]string{"--socket", other}, otherPins...), env(nil), &bytes.Buffer{}, &errb2); code != ExitError {
		t.Fatalf("daemon with another pin root: exit %d, want %d", code, ExitError)
	}
	if !strings.Contains(errb2.String(), "belongs to another pin root") || !strings.Contains(errb2.String(), dirs[1]) {
		t.Errorf("daemon with another pin root: log lacks the reason: %s", errb2.String())
	}
}

func TestListenStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bpfd.sock")
	// A stale socket: bound, then its listener gone without unlinking.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal("stale socket not present:", err)
	}
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
	// A regular file in the way is never removed.
	reg := filepath.Join(dir, "file")
	os.WriteFile(reg, []byte("x"), 0o644)
	if _, err := Listen(reg); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if _, err := os.Stat(reg); err != nil {
		t.Fatal("regular file removed")
	}
}

// tempDirsArgs returns --pin-root and --state-dir flags naming fresh
// temporary directories, so that tests never touch the machine's defaults.
func tempDirsArgs(t *testing.T) []string {
	t.Helper()
	d := t.TempDir()
	return []string{"--pin-root", filepath.Join(d, "pins"), "--state-dir", filepath.Join(d, "state")}
}

func waitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unixpacket", path); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start listening on %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSIGTERM runs the daemon as a real process and stops it with SIGTERM
// while a request pipeline is in flight.
func TestSIGTERM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bpfd.sock")
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--", "--socket", path, "--log-level", "debug"}, tempDirsArgs(t)...)...)
	cmd.Env = append(os.Environ(), "BPFD_TEST_DAEMON=1")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitSocket(t, path)
	hello(t, path)
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello(t, path) // c is accepted by now
	const inFlight = 50
	a := wire.HelloAttr{Version: wire.Version}
	msg := a.Append(wire.AppendReqHeader(nil, wire.ReqHeader{Cmd: wire.CmdHello, AttrLen: wire.HelloAttrSize}))
	for range inFlight {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	for i := range inFlight {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("reply %d of the in-flight requests: %v", i, err)
		}
		if h, _, err := wire.ParseReply(buf[:n]); err != nil || h.Errno != 0 {
			t.Fatalf("reply %d: %+v %v", i, h, err)
		}
	}
	// Then the goodbye (the daemon stops for good: do not reconnect), and
	// the end of the connection.
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no goodbye after the in-flight replies: %v", err)
	}
	if h, _, err := wire.ParseReply(buf[:n]); err != nil || h.Flags&wire.ReplyFlagGoodbye == 0 || h.Errno != uint32(syscall.ESHUTDOWN) {
		t.Fatalf("want a goodbye after the in-flight replies, got %+v %v", h, err)
	}
	if n, err := c.Read(buf); err == nil && n > 0 {
		t.Fatalf("unexpected message after the goodbye")
	}
	err = cmd.Wait()
	if err != nil {
		t.Fatalf("daemon exited with %v; log:\n%s", err, errb.String())
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
	if !strings.Contains(errb.String(), "shutting down") {
		t.Fatalf("log lacks shutdown: %s", errb.String())
	}
}

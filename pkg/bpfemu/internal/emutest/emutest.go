// Package emutest holds what the tests of pkg/bpfemu share: an in-process
// bpfd whose socket and pin root other users may reach, and helpers to
// build the test programs. It is imported by tests only.
package emutest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/demux"
)

// RoleEnv names the part a re-executed test binary plays (see the
// TestMain of pkg/bpfemu).
const RoleEnv = "BPFEMU_TEST_ROLE"

// Nobody is the unprivileged uid and gid the tests run emulated tools as.
const Nobody = 65534

// Daemon is an in-process bpfd for one test.
type Daemon struct {
	Dir     string // world-searchable directory holding the socket and pins
	Socket  string
	PinRoot string
	Srv     *demux.Server
}

// StartDaemon starts bpfd on a socket in a new directory that any user can
// reach (when root: the tests run tools as Nobody). It shuts down at
// cleanup.
func StartDaemon(t testing.TB) *Daemon {
	t.Helper()
	dir := WorldDir(t)
	d := &Daemon{Dir: dir, Socket: filepath.Join(dir, "bpfd.sock"), PinRoot: filepath.Join(dir, "pins")}
	srv, err := demux.NewServer(&demux.Config{Logger: zap.NewNop(), PinRoot: d.PinRoot, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: d.Socket, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	d.Srv = srv
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("daemon shutdown: %v", err)
		}
	})
	return d
}

// Settle waits until the daemon holds no descriptor, connection and
// object any more (it learns of hangups asynchronously), and reports
// whether it got there within the timeout.
func (d *Daemon) Settle(timeout time.Duration) (demux.Stats, bool) {
	deadline := time.Now().Add(timeout)
	for {
		st := d.Srv.Stats()
		if st.Descriptors == 0 && st.Connections == 0 && st.Objects == 0 {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RequireNotify skips unless the kernel has what the supervisor needs:
// seccomp user notification with descriptor installation (Linux 5.9) and
// pidfd_getfd (Linux 5.6).
func RequireNotify(t testing.TB) {
	t.Helper()
	var sizes [3]uint16
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&sizes))); e != 0 {
		t.Skipf("seccomp user notification unavailable: %v", e)
	}
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("pidfd_open unavailable: %v", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, 0, 0)
	if err != nil {
		t.Skipf("pidfd_getfd unavailable: %v", err)
	}
	unix.Close(fd)
}

// WorldDir returns a new temporary directory every user may search and
// read (t.TempDir is private to its owner).
func WorldDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// GoBuildErr builds the package at pkg (a path relative to the module
// root, "./...") into a static binary in dir and returns its path.
func GoBuildErr(dir, pkg, name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// moduleRoot finds the directory holding go.mod above the working
// directory (a test's package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no go.mod above %s", dir)
}

// CopyExecutable copies the file at src into dir with mode 0755 (a test
// binary under the go build cache is private to its owner).
func CopyExecutable(t testing.TB, src, dir string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

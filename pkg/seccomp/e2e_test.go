package seccomp

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// child is a filtered command stopped in its shim, with its listener.
type child struct {
	proc   *Process
	l      *Listener
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	waited bool
}

// roleCmd returns an unstarted command running this test binary in role.
func roleCmd(t *testing.T, role string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	return cmd
}

// startChild starts target under the filter described by cfg and wraps the
// listener; cleanup kills and reaps the child and closes the listener.
func startChild(t *testing.T, target *exec.Cmd, cfg *ExecConfig) *child {
	t.Helper()
	requireNotify(t)
	c := &child{stdout: new(bytes.Buffer), stderr: new(bytes.Buffer)}
	target.Stdout, target.Stderr = c.stdout, c.stderr
	proc, fd, err := StartFiltered(target, cfg)
	if err != nil {
		t.Fatalf("StartFiltered: %v", err)
	}
	c.proc = proc
	l, err := NewListener(fd)
	if err != nil {
		proc.Cmd.Process.Kill()
		proc.Cmd.Wait()
		t.Fatalf("NewListener: %v", err)
	}
	c.l = l
	t.Cleanup(func() {
		if !c.waited {
			c.proc.Cmd.Process.Kill()
			c.proc.Cmd.Wait()
		}
		c.l.Close()
	})
	return c
}

// serve runs Serve in the background and returns a channel with its result.
func (c *child) serve(ctx context.Context, decide func(*Notif, *Task) Verdict) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.l.Serve(ctx, decide) }()
	return done
}

// wait reaps the child and returns its wait status.
func (c *child) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	err := c.proc.Cmd.Wait()
	c.waited = true
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	return c.proc.Cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// socketPolicy denies socket(AF_INET6) with EPERM and allows the rest.
func socketPolicy(n *Notif, _ *Task) Verdict {
	if n.Data.NR == unix.SYS_SOCKET && n.Data.Args[0] == unix.AF_INET6 {
		return Deny(unix.EPERM)
	}
	return Allow
}

func TestSocketPolicy(t *testing.T) {
	c := startChild(t, roleCmd(t, "sockets"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	var seen []Notif
	done := c.serve(context.Background(), func(n *Notif, task *Task) Verdict {
		seen = append(seen, *n)
		return socketPolicy(n, task)
	})
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := c.proc.Release(); !errors.Is(err, ErrReleased) {
		t.Fatalf("second Release: %v, want ErrReleased", err)
	}
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve after the child exited: %v, want nil", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v; stderr: %s", ws, c.stderr)
	}
	got := parseLines(c.stdout.String())
	want := map[string]string{
		"AF_INET":      "ok",
		"AF_INET6":     unix.EPERM.Error(),
		"AF_UNIX":      "ok",
		"listener-fds": "0", // O_CLOEXEC: gone at execve
		"Seccomp:":     "2",
		"NoNewPrivs:":  "1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: child says %q, want %q (output %q)", k, got[k], v, c.stdout)
		}
	}
	// Only routed syscalls reach the supervisor: the Go runtime of the
	// child made hundreds of other syscalls.
	if len(seen) != 3 {
		t.Errorf("supervisor saw %d notifications, want 3", len(seen))
	}
	for _, n := range seen {
		if n.Data.NR != unix.SYS_SOCKET || n.Data.Arch != unix.AUDIT_ARCH_X86_64 || n.PID == 0 || n.Data.InstructionPointer == 0 {
			t.Errorf("unexpected notification %+v", n)
		}
	}
}

func TestKillVerdict(t *testing.T) {
	c := startChild(t, roleCmd(t, "sockets"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	done := c.serve(context.Background(), func(n *Notif, _ *Task) Verdict {
		if n.Data.Args[0] == unix.AF_INET6 {
			return Kill
		}
		return Allow
	})
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL", ws)
	}
	if got := parseLines(c.stdout.String()); got["AF_INET"] != "ok" || got["AF_INET6"] != "" {
		t.Fatalf("child output %q: want AF_INET ok and nothing after", c.stdout)
	}
}

func TestX32Killed(t *testing.T) {
	c := startChild(t, roleCmd(t, "x32"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	var notified int
	done := c.serve(context.Background(), func(*Notif, *Task) Verdict { notified++; return Allow })
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// SECCOMP_RET_KILL_PROCESS delivers SIGSYS.
	if !ws.Signaled() || ws.Signal() != unix.SIGSYS {
		t.Fatalf("child: %v (output %q), want killed by SIGSYS", ws, c.stdout)
	}
	if notified != 0 {
		t.Fatalf("%d notifications, want none", notified)
	}
}

func TestAllMode(t *testing.T) {
	target := exec.Command("/bin/sh", "-c", "echo hello; /bin/cat /proc/self/status")
	c := startChild(t, target, &ExecConfig{All: true})
	counts := map[int32]int{}
	done := c.serve(context.Background(), func(n *Notif, _ *Task) Verdict {
		counts[n.Data.NR]++
		return Allow
	})
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v; stderr %s", ws, c.stderr)
	}
	if !strings.HasPrefix(c.stdout.String(), "hello\n") || !strings.Contains(c.stdout.String(), "Seccomp:\t2") {
		t.Fatalf("output %q", c.stdout)
	}
	// The shim's execve, sh's fork/exec of cat and their writes all passed
	// through the supervisor.
	for _, nr := range []int32{unix.SYS_EXECVE, unix.SYS_WRITE, unix.SYS_OPENAT, unix.SYS_EXIT_GROUP} {
		if counts[nr] == 0 {
			t.Errorf("no %s notification (saw %v)", SyscallName(uint32(nr)), counts)
		}
	}
}

func TestListenerCloseENOSYS(t *testing.T) {
	c := startChild(t, roleCmd(t, "sockets"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	// Hold the first socket() (AF_INET) in decide while the listener is
	// closed under it: the waiting syscall and every later one get ENOSYS.
	gotFirst, closed := make(chan Notif, 1), make(chan struct{})
	var calls int
	done := c.serve(context.Background(), func(n *Notif, _ *Task) Verdict {
		calls++
		if calls == 1 {
			gotFirst <- *n
			<-closed
		}
		return Allow
	})
	released := make(chan error, 1)
	go func() { released <- c.proc.Release() }()
	n := <-gotFirst
	if n.Data.NR != unix.SYS_SOCKET || n.Data.Args[0] != unix.AF_INET {
		t.Fatalf("first notification %+v, want socket(AF_INET)", n)
	}
	if err := c.l.Close(); err != nil {
		t.Fatal(err)
	}
	close(closed)
	if err := waitServe(t, done); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v, want ErrClosed", err)
	}
	if calls != 1 {
		t.Fatalf("decide called %d times, want 1", calls)
	}
	if err := c.l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.l.IDValid(n.ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("IDValid after Close: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatalf("Release: %v", err)
	}
	ws := c.wait(t)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v; stderr %s", ws, c.stderr)
	}
	got := parseLines(c.stdout.String())
	for _, fam := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
		if got[fam] != unix.ENOSYS.Error() {
			t.Errorf("%s: %q, want ENOSYS (output %q)", fam, got[fam], c.stdout)
		}
	}
}

func TestServeContextCancel(t *testing.T) {
	target := roleCmd(t, "wait")
	// Not StdinPipe: target is never started, so os/exec would not close
	// the child's end in this process.
	pr, stdin, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	target.Stdin = pr
	c := startChild(t, target, &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	pr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := c.serve(ctx, socketPolicy)
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := waitServe(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after cancel: %v, want context.Canceled", err)
	}
	// The listener still works: serve again and let the child finish.
	done = c.serve(context.Background(), socketPolicy)
	stdin.Close()
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("second Serve: %v", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v; stderr %s", ws, c.stderr)
	}
	if got := parseLines(c.stdout.String()); got["AF_INET"] != "ok" || got["AF_INET6"] != unix.EPERM.Error() {
		t.Fatalf("output %q", c.stdout)
	}
}

func TestIDValidAfterDeath(t *testing.T) {
	c := startChild(t, roleCmd(t, "sockets"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	go c.proc.Release() // returns once the child is killed below
	var n Notif
	if err := c.l.Recv(&n); err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if err := c.l.IDValid(n.ID); err != nil {
		t.Fatalf("IDValid while the task waits: %v", err)
	}
	var task Task
	task.reset(c.l, &n)
	tgid, err := task.TGID()
	if err != nil || tgid != uint32(c.proc.Pid()) {
		t.Fatalf("TGID = %d, %v; want %d", tgid, err, c.proc.Pid())
	}
	c.proc.Cmd.Process.Kill()
	c.wait(t)
	if err := c.l.IDValid(n.ID); !errors.Is(err, ErrNotifGone) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("IDValid after death: %v, want ErrNotifGone", err)
	}
	task.reset(c.l, &n)
	if _, err := task.TGID(); !errors.Is(err, ErrTaskGone) && !errors.Is(err, ErrNotifGone) {
		t.Fatalf("TGID of a dead task: %v", err)
	}
	if err := c.l.Respond(&n, Allow); !errors.Is(err, ErrNotifGone) {
		t.Fatalf("Respond to a dead task: %v, want ErrNotifGone", err)
	}
	// Nobody uses the filter any more: Recv reports it.
	if err := c.l.Recv(&n); !errors.Is(err, ErrNoTasks) {
		t.Fatalf("Recv after the last task: %v, want ErrNoTasks", err)
	}
}

// TestTaskCredentials runs the filtered command as nobody and reads its ids
// and comm through Task.
func TestTaskCredentials(t *testing.T) {
	requireRoot(t)
	target := exec.Command("/bin/cat", "/proc/self/status")
	target.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	c := startChild(t, target, &ExecConfig{Syscalls: []uint32{unix.SYS_OPENAT}})
	type seen struct {
		pid, tgid, uid, euid, gid, egid uint32
		comm                            string
		err                             error
	}
	var all []seen
	done := c.serve(context.Background(), func(n *Notif, task *Task) Verdict {
		var s seen
		s.pid = task.PID()
		s.tgid, s.err = task.TGID()
		if s.err == nil {
			s.uid, s.euid, s.err = task.UID()
		}
		if s.err == nil {
			s.gid, s.egid, s.err = task.GID()
		}
		if s.err == nil {
			var comm [TaskCommLen]byte
			comm, s.err = task.Comm()
			s.comm = string(bytes.TrimRight(comm[:], "\x00"))
		}
		all = append(all, s)
		return Allow
	})
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v; stderr %s", ws, c.stderr)
	}
	if !strings.Contains(c.stdout.String(), "Uid:\t65534\t65534") {
		t.Fatalf("cat output %q", c.stdout)
	}
	if len(all) == 0 {
		t.Fatal("no openat notifications")
	}
	pid := uint32(c.proc.Pid())
	for _, s := range all {
		if s.err != nil {
			t.Fatalf("task read: %v", s.err)
		}
		if s.pid != pid || s.tgid != pid || s.uid != 65534 || s.euid != 65534 || s.gid != 65534 || s.egid != 65534 {
			t.Errorf("task %+v, want pid=tgid=%d and ids 65534", s, pid)
		}
	}
	if last := all[len(all)-1].comm; last != "cat" {
		t.Errorf("comm of the last notification %q, want cat", last)
	}
}

func TestStartFilteredExecFailure(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-binary")
	c := startChild(t, &exec.Cmd{Path: missing, Args: []string{missing}}, &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	err := c.proc.Release()
	if !errors.Is(err, ErrShim) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Release: %v, want ErrShim naming ENOENT", err)
	}
	if ws := c.wait(t); !ws.Exited() || ws.ExitStatus() != shimExit {
		t.Fatalf("shim: %v, want exit %d", ws, shimExit)
	}
}

func TestStartFilteredNoShimMain(t *testing.T) {
	requireRoot(t)
	requireNotify(t)
	// /bin/true does not call ShimMain: it exits without installing.
	_, _, err := StartFiltered(exec.Command("/bin/sh"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}, Shim: []string{"/bin/true"}})
	if !errors.Is(err, ErrShim) || !strings.Contains(err.Error(), "ShimMain") {
		t.Fatalf("StartFiltered with a non-shim: %v", err)
	}
}

func TestListenerDeadline(t *testing.T) {
	c := startChild(t, roleCmd(t, "sockets"), &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	// Nothing is routed before Release: Recv must time out, proving the fd
	// is in the netpoller (deadlines work).
	if err := c.l.SetDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatalf("SetDeadline: %v", err)
	}
	var n Notif
	if err := c.l.Recv(&n); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv: %v, want deadline exceeded", err)
	}
	if err := c.l.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := c.serve(context.Background(), socketPolicy)
	if err := c.proc.Release(); err != nil {
		t.Fatal(err)
	}
	c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatal(err)
	}
}

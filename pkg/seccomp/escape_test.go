package seccomp

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// runEscape runs role under a policy that routes socket(2) and denies
// socket(AF_INET6) with EPERM, configured by cfg, and returns its output
// lines by name, its wait status and how many AF_INET6 socket calls the
// policy saw.
func runEscape(t *testing.T, target *exec.Cmd, cfg ExecConfig) (map[string]string, syscall.WaitStatus, int) {
	t.Helper()
	if cfg.Syscalls == nil && !cfg.All {
		cfg.Syscalls = []uint32{unix.SYS_SOCKET}
	}
	c := startChild(t, target, &cfg)
	seen6 := 0
	done := c.serve(context.Background(), func(n *Notif, task *Task) Verdict {
		if n.Data.NR == unix.SYS_SOCKET && n.Data.Args[0] == unix.AF_INET6 {
			seen6++
		}
		return socketPolicy(n, task)
	})
	if err := c.proc.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ws := c.wait(t)
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return parseLines(c.stdout.String()), ws, seen6
}

// TestEscapeRoutes tries, from a filtered process, every known route
// around a seccomp policy (docs/security.md, "Routes around a seccomp
// policy"); each is refused, or decided by the policy. The opt-ins show
// what they expose.
func TestEscapeRoutes(t *testing.T) {
	tests := []struct {
		name    string
		role    string
		cfg     ExecConfig
		killed  bool              // by SIGSYS (SECCOMP_RET_KILL_PROCESS)
		fault   string            // this line saying "fault" means the route does not exist here
		want    map[string]string // output lines
		policy6 int               // AF_INET6 socket calls the policy decided
	}{
		{name: "32-bit entry point (int 0x80) getpid", role: "int80-getpid", killed: true, fault: "int80-getpid"},
		{name: "socketcall through int 0x80", role: "int80-socketcall", killed: true, fault: "int80-socketcall"},
		{name: "x32 syscall numbers", role: "x32", killed: true},
		{name: "io_uring refused by default", role: "iouring",
			want: map[string]string{"io_uring_setup": "EPERM", "io_uring_enter": "EPERM", "io_uring_register": "EPERM"}},
		{name: "io_uring opted in walks around the policy", role: "iouring", cfg: ExecConfig{AllowIOUring: true},
			want: map[string]string{"io_uring_setup": "ok", "io_uring_enter": "EBADF", "io_uring_register": "!EPERM",
				"iouring-socket": "ok"}},
		{name: "a stacked allow-all filter changes nothing", role: "stack-allow", policy6: 1,
			want: map[string]string{"stack-install": "ok", "socket-inet6": "EPERM", "socket-inet": "ok"}},
		{name: "a stacked errno filter restricts further", role: "stack-errno",
			want: map[string]string{"stack-install": "ok", "socket-inet6": "EACCES", "socket-inet": "EACCES"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines, ws, seen6 := runEscape(t, roleCmd(t, tt.role), tt.cfg)
			if tt.fault != "" && lines[tt.fault] == "fault" {
				t.Skip("this kernel has no 32-bit compat entry point (int $0x80 faults before any syscall): the route does not exist here; TestBuildFilter checks the filter's answer to AUDIT_ARCH_I386")
			}
			if tt.killed {
				if !ws.Signaled() || ws.Signal() != unix.SIGSYS {
					t.Fatalf("child: %v, output %v; want killed by SIGSYS", ws, lines)
				}
				return
			}
			if ws.ExitStatus() != 0 {
				t.Fatalf("child: %v, output %v", ws, lines)
			}
			for k, v := range tt.want {
				if not, ok := strings.CutPrefix(v, "!"); ok {
					if lines[k] == "" || lines[k] == not {
						t.Errorf("%s: %q, want anything but %q (all: %v)", k, lines[k], not, lines)
					}
					continue
				}
				if lines[k] != v {
					t.Errorf("%s: %q, want %q (all: %v)", k, lines[k], v, lines)
				}
			}
			if seen6 != tt.policy6 {
				t.Errorf("the policy decided %d AF_INET6 socket calls, want %d", seen6, tt.policy6)
			}
		})
	}
}

// TestPtraceContained: a filtered process cannot ptrace, read the memory
// of, or open /proc/PID/mem of an unfiltered sibling of the same uid (it
// is in a Landlock domain of its own); with AllowPtrace it can — the
// route the containment closes.
func TestPtraceContained(t *testing.T) {
	if _, err := landlockABI(); err != nil {
		t.Skipf("no Landlock here (%v): the filter's fallback (Policy.DenyPtrace) is checked by TestBuildFilter", err)
	}
	sib := exec.Command("sleep", "60")
	if err := sib.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sib.Process.Kill(); sib.Wait() })
	tests := []struct {
		name string
		cfg  ExecConfig
		want map[string]string
	}{
		{name: "contained", want: map[string]string{"ptrace-seize": "EPERM", "process_vm_readv": "EPERM", "proc-mem": "EACCES"}},
		{name: "opted out", cfg: ExecConfig{AllowPtrace: true},
			want: map[string]string{"ptrace-seize": "ok", "process_vm_readv": "EFAULT", "proc-mem": "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := roleCmd(t, "ptrace")
			cmd.Env = append(cmd.Env, "BPFD_SIBLING_PID="+strconv.Itoa(sib.Process.Pid))
			lines, ws, _ := runEscape(t, cmd, tt.cfg)
			if ws.ExitStatus() != 0 {
				t.Fatalf("child: %v, output %v", ws, lines)
			}
			for k, v := range tt.want {
				if lines[k] != v {
					t.Errorf("%s: %q, want %q (all: %v)", k, lines[k], v, lines)
				}
			}
		})
	}
}

// TestSetuidNoNewPrivs: a setuid-root binary executed under the filter
// runs with the caller's ids (no_new_privs), while the same binary
// executed without it gains root. Needs root (to make the binary and
// run the child as uid 65534).
func TestSetuidNoNewPrivs(t *testing.T) {
	requireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bpfd-setuid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	suid := filepath.Join(dir, "suid.test")
	if err := os.WriteFile(suid, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(suid, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
	cmd := exec.Command(suid)
	cmd.Env = append(os.Environ(), roleEnv+"=euid")
	cmd.SysProcAttr = nobody
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("control run: %v", err)
	}
	if strings.TrimSpace(string(out)) != "euid 0" {
		t.Skipf("setuid bits do not apply under %s (nosuid mount?): %q", dir, out)
	}
	target := exec.Command(suid)
	target.Env = append(os.Environ(), roleEnv+"=euid")
	target.SysProcAttr = nobody
	lines, ws, _ := runEscape(t, target, ExecConfig{})
	if ws.ExitStatus() != 0 || lines["euid"] != "65534" {
		t.Fatalf("under the filter: %v, euid %q; want 65534 (no_new_privs)", ws, lines["euid"])
	}
}

// TestInstallTSYNC: Install filters every thread of the process, those
// that existed before it and those made after (SECCOMP_FILTER_FLAG_TSYNC
// and inheritance), as the kernel reports per task and as routed syscalls
// on each thread show.
func TestInstallTSYNC(t *testing.T) {
	requireNotify(t)
	out, err := roleCmd(t, "tsync").CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	lines := parseLines(string(out))
	for _, name := range []string{"before0", "before1", "before2", "before3", "after0", "after1", "after2", "after3"} {
		if lines[name] != "EACCES" {
			t.Errorf("%s: getppid %q, want EACCES (denied by the listener)", name, lines[name])
		}
	}
	var tasks, mode2 int
	if f := strings.Fields(lines["tasks"]); len(f) == 3 {
		tasks, _ = strconv.Atoi(f[0])
		mode2, _ = strconv.Atoi(f[2])
	}
	if tasks == 0 || mode2 != tasks {
		t.Errorf("%d of %d tasks in seccomp mode 2", mode2, tasks)
	}
	if n, _ := strconv.Atoi(lines["after-threads-made-after-install"]); n == 0 {
		t.Errorf("no thread made after Install was tested: %s", out)
	}
}

// TestNestedListener: a filtered process cannot take over its own
// notifications with a listener of its own. While the supervisor's
// listener lives, the kernel refuses a second one in the chain (EBUSY; or
// bpfd's filter first, EPERM); once it is gone (the daemon stopped), the
// kernel would allow one and the process could answer its own routed
// syscalls with "continue" — bpfd's filter refuses it (EPERM), unless
// AllowNestedListeners, which this test shows opening the route.
func TestNestedListener(t *testing.T) {
	tests := []struct {
		name string
		cfg  ExecConfig
		want map[string]string
	}{
		{name: "refused", want: map[string]string{"socket-inet6": "EPERM", "live-install": "EPERM",
			"detached-socket-inet6": "ENOSYS", "detached-install": "EPERM"}},
		{name: "opted in", cfg: ExecConfig{AllowNestedListeners: true},
			want: map[string]string{"socket-inet6": "EPERM", "live-install": "EBUSY",
				"detached-socket-inet6": "ENOSYS", "detached-install": "ok", "detached-nested-socket-inet6": "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := roleCmd(t, "nested-listener")
			inR, inW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer inW.Close()
			outR, outW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer outR.Close()
			target.Stdin = inR
			cfg := tt.cfg
			cfg.Syscalls = []uint32{unix.SYS_SOCKET}
			requireNotify(t)
			target.Stdout, target.Stderr = outW, os.Stderr
			proc, fd, err := StartFiltered(target, &cfg)
			inR.Close()
			outW.Close()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proc.Cmd.Process.Kill(); proc.Cmd.Wait() })
			l, err := NewListener(fd)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- l.Serve(context.Background(), socketPolicy) }()
			if err := proc.Release(); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(outR)
			lines := map[string]string{}
			read := func(until string) {
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						t.Fatalf("child output ended before %q: %v (so far %v)", until, err, lines)
					}
					k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
					lines[k] = v
					if k == until {
						return
					}
				}
			}
			read("live-install")
			// The supervisor goes away (as when the daemon stops).
			l.Close()
			<-done
			inW.Write([]byte("go\n"))
			read("detached-install")
			if lines["detached-install"] == "ok" {
				read("detached-nested-socket-inet6")
			}
			proc.Cmd.Wait()
			for k, v := range tt.want {
				if lines[k] != v {
					t.Errorf("%s: %q, want %q (all: %v)", k, lines[k], v, lines)
				}
			}
		})
	}
}

// TestStartAsOtherUserWithoutPtrace: starting a filtered command as
// another user needs CAP_SETUID/CAP_SETGID, as for any exec.Cmd, but not
// CAP_SYS_PTRACE: the shim takes the new credentials itself after the
// parent took the listener from it. The parent here runs with
// CAP_SYS_PTRACE removed from its bounding set (setpriv).
func TestStartAsOtherUserWithoutPtrace(t *testing.T) {
	requireRoot(t)
	requireNotify(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--bounding-set", "-sys_ptrace", "--inh-caps", "-all", "--", exe)
	cmd.Env = append(os.Environ(), roleEnv+"=start-as-nobody")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("parent without CAP_SYS_PTRACE: %v\n%s", err, out)
	}
	lines := parseLines(string(out))
	if lines["parent-ptrace-cap"] != "no" || lines["euid"] != "65534" || lines["target-exit"] != "0" {
		t.Fatalf("got %v", lines)
	}
}

// roleStartAsNobody starts the "euid" role as uid 65534 under a filter
// and prints what it printed, with whether this process holds
// CAP_SYS_PTRACE.
func roleStartAsNobody() int {
	status, _ := os.ReadFile("/proc/self/status")
	has := "yes"
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var mask uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &mask); err == nil && mask&(1<<unix.CAP_SYS_PTRACE) == 0 {
				has = "no"
			}
		}
	}
	fmt.Printf("parent-ptrace-cap %s\n", has)
	// The shim's own binary (this one), reachable by uid 65534 whatever
	// the directories above it.
	target := exec.Command("/proc/self/exe")
	target.Env = append(os.Environ(), roleEnv+"=euid")
	target.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
	var buf strings.Builder
	target.Stdout = &buf
	proc, fd, err := StartFiltered(target, &ExecConfig{Syscalls: []uint32{unix.SYS_SOCKET}})
	if err != nil {
		fmt.Printf("start %v\n", err)
		return 1
	}
	l, err := NewListener(fd)
	if err != nil {
		fmt.Printf("listener %v\n", err)
		return 1
	}
	go l.Serve(context.Background(), socketPolicy)
	if err := proc.Release(); err != nil {
		fmt.Printf("release %v\n", err)
		return 1
	}
	proc.Cmd.Wait()
	l.Close()
	fmt.Print(buf.String())
	fmt.Printf("target-exit %d\n", proc.Cmd.ProcessState.ExitCode())
	return 0
}

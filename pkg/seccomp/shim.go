package seccomp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// shimEnv marks a process started by StartFiltered as a shim. Its value is
// "CFG,GO,STATUS": the shim's fd numbers of the config pipe (read), the go
// pipe (read) and the status pipe (write).
const shimEnv = "BPFD_SECCOMP_SHIM"

// Status pipe protocol, shim to parent: statusInstalling right before
// Install; then, only on failure, statusError followed by a message. EOF
// without a message means the shim executed the command (the pipe is
// O_CLOEXEC) or died.
const (
	statusInstalling = 'I'
	statusError      = 'E'
)

// shimExit is the shim's exit status when it fails before execve (as sh
// does for a command it cannot run).
const shimExit = 127

// Sentinel errors of StartFiltered, TakeListener and Process.
var (
	// ErrShim: the shim failed (before or at execve); the message says why.
	ErrShim = errno.New(unix.ECHILD, "seccomp: shim failed")
	// ErrTimeout: the filter did not appear in time.
	ErrTimeout = errno.New(unix.ETIMEDOUT, "seccomp: timed out waiting for the filter")
	// ErrReleased: Release was called twice.
	ErrReleased = errno.New(unix.EALREADY, "seccomp: process already released")
)

// shimConfig travels from StartFiltered to the shim over the config pipe.
type shimConfig struct {
	Path                 string   `json:"path"`
	Args                 []string `json:"args"`
	Syscalls             []uint32 `json:"syscalls"`
	All                  bool     `json:"all"`
	AllowIOUring         bool     `json:"allow_io_uring,omitempty"`
	AllowNestedListeners bool     `json:"allow_nested_listeners,omitempty"`
	AllowPtrace          bool     `json:"allow_ptrace,omitempty"`
	// Cred, when set, is what the shim becomes right before execve,
	// after the parent took the listener (so the parent needs no ptrace
	// privilege over a process of another user).
	Cred *shimCred `json:"cred,omitempty"`
}

// shimCred is the command's syscall.Credential.
type shimCred struct {
	UID         uint32   `json:"uid"`
	GID         uint32   `json:"gid"`
	Groups      []uint32 `json:"groups"`
	NoSetGroups bool     `json:"no_set_groups"`
}

// become switches the calling thread (the one that execs) to cred.
func (c *shimCred) become() error {
	if !c.NoSetGroups {
		var p unsafe.Pointer
		if len(c.Groups) > 0 {
			p = unsafe.Pointer(&c.Groups[0])
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(c.Groups)), uintptr(p), 0); e != 0 {
			return os.NewSyscallError("setgroups", e)
		}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.GID), uintptr(c.GID), uintptr(c.GID)); e != 0 {
		return os.NewSyscallError("setresgid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.UID), uintptr(c.UID), uintptr(c.UID)); e != 0 {
		return os.NewSyscallError("setresuid", e)
	}
	return nil
}

// ShimMain turns this process into a shim if StartFiltered started it as one,
// and then never returns; otherwise it returns at once. Call it first thing in
// main (or TestMain) of any binary that serves as a shim, before flag
// parsing and before starting goroutines that make syscalls.
//
// As a shim it reads its command from the parent, installs the filter
// (Install), waits on the go pipe for Process.Release (that read may itself be
// routed: the supervisor is attached by then), removes its marker from the
// environment and execve's the command. On any failure it reports to the
// parent and exits with status 127.
func ShimMain() {
	v, ok := os.LookupEnv(shimEnv)
	if !ok {
		return
	}
	os.Unsetenv(shimEnv)
	os.Exit(runShim(v))
}

func runShim(v string) int {
	var fds [3]int
	parts := strings.Split(v, ",")
	if len(parts) != 3 {
		fmt.Fprintf(os.Stderr, "seccomp shim: bad %s=%q\n", shimEnv, v)
		return shimExit
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 3 {
			fmt.Fprintf(os.Stderr, "seccomp shim: bad %s=%q\n", shimEnv, v)
			return shimExit
		}
		fds[i] = n
	}
	cfgFD, goFD, statusFD := fds[0], fds[1], fds[2]
	// Nothing of ours may reach the command.
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	fail := func(format string, args ...any) int {
		msg := append([]byte{statusError}, fmt.Sprintf(format, args...)...)
		unix.Write(statusFD, msg)
		return shimExit
	}

	cfgFile := os.NewFile(uintptr(cfgFD), "seccomp shim config")
	raw, err := io.ReadAll(cfgFile)
	cfgFile.Close()
	if err != nil {
		return fail("read config: %v", err)
	}
	var cfg shimConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fail("decode config: %v", err)
	}
	// no_new_privs, the Landlock domain and the filter are per thread
	// until TSYNC; the thread that sets them up is the one that execs,
	// so the command inherits all three.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("prctl(PR_SET_NO_NEW_PRIVS): %v", err)
	}
	policy := &Policy{Syscalls: cfg.Syscalls, All: cfg.All, AllowIOUring: cfg.AllowIOUring,
		AllowNestedListeners: cfg.AllowNestedListeners}
	if !cfg.AllowPtrace {
		if err := containPtrace(); errors.Is(err, ErrNoLandlock) {
			policy.DenyPtrace = true
		} else if err != nil {
			return fail("contain ptrace: %v", err)
		}
	}
	if _, err := unix.Write(statusFD, []byte{statusInstalling}); err != nil {
		return shimExit
	}
	// From here on, routed syscalls block until the supervisor answers.
	if _, err := InstallPolicy(policy); err != nil {
		return fail("install filter: %v", err)
	}
	var b [1]byte
	for {
		n, err := unix.Read(goFD, b[:])
		if err == unix.EINTR {
			continue
		}
		if n != 1 {
			return fail("not released (go pipe: n=%d err=%v)", n, err)
		}
		break
	}
	if cfg.Cred != nil {
		// On this thread, the one that execs: the command gets these
		// ids; the shim's other threads end with the exec.
		if err := cfg.Cred.become(); err != nil {
			return fail("set credentials: %v", err)
		}
	}
	err = syscall.Exec(cfg.Path, cfg.Args, os.Environ())
	return fail("exec %s: %v", cfg.Path, err)
}

// ExecConfig says how StartFiltered filters a command. Plain data. The
// command runs with no_new_privs (setuid and file-capability bits do not
// apply), under the filter of Policy (io_uring and nested listeners
// refused unless allowed here), and — unless AllowPtrace — in a Landlock
// domain of its own, so that it cannot ptrace processes outside its own
// descendants (docs/security.md, "Routes around a seccomp policy").
type ExecConfig struct {
	// Syscalls are the x86_64 numbers routed to the listener (see
	// ParseSyscalls); ignored if All.
	Syscalls []uint32
	// All routes every syscall.
	All bool
	// AllowIOUring and AllowNestedListeners open those routes (see
	// Policy): the command's io_uring operations and syscalls it notifies
	// to a listener of its own then bypass the policy.
	AllowIOUring         bool
	AllowNestedListeners bool
	// AllowPtrace leaves the command able to ptrace (and read or write
	// the memory of) any process its credentials allow, including
	// unfiltered siblings, which it could then make run any syscall. By
	// default the shim puts it in a Landlock domain of its own (no file
	// access changes), so it may trace only its own descendants, which
	// are filtered too; on kernels without Landlock the filter refuses
	// ptrace, process_vm_readv/writev and pidfd_getfd instead
	// (Policy.DenyPtrace; writes to /proc/PID/mem then stay possible
	// where the kernel's own checks allow them).
	AllowPtrace bool
	// Shim is the argv of the shim: a binary whose main calls ShimMain
	// first; Shim[0] is the path executed. Nil means the running binary
	// ("/proc/self/exe").
	Shim []string
	// Timeout bounds the wait for the shim to install its filter; 0 means
	// 10 seconds.
	Timeout time.Duration
}

// Process is a filtered command started by StartFiltered, stopped in its shim
// until Release.
//
// Concurrency: Release may be called once, from any goroutine; Cmd follows
// os/exec's rules.
type Process struct {
	// Cmd is the started shim; after Release its process is the command.
	// Wait with Cmd.Wait (only after Release, or after killing it: the shim
	// waits for Release forever otherwise).
	Cmd *exec.Cmd

	goW    *os.File
	status chan string // final status message; "" if none
}

// Pid returns the process id of the filtered process.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Release lets the shim execve the command, then waits until it did: it
// returns nil once the command runs (or the shim died silently: see
// Cmd.Wait), an error wrapping ErrShim with the shim's message if execve
// failed, or ErrReleased on a second call. The supervisor must be answering
// the listener before Release: the shim's own syscalls may be routed, and
// Release waits for them.
func (p *Process) Release() error {
	if p.goW == nil {
		return ErrReleased
	}
	_, werr := p.goW.Write([]byte{1})
	p.goW.Close()
	p.goW = nil
	msg := <-p.status
	if msg != "" {
		return fmt.Errorf("%w: %s", ErrShim, msg)
	}
	if werr != nil && !errors.Is(werr, syscall.EPIPE) {
		return fmt.Errorf("seccomp: release: %w", werr)
	}
	return nil
}

// StartFiltered starts target (an unstarted *exec.Cmd describing the command:
// Path, Args, Env, Dir, Stdin, Stdout, Stderr, ExtraFiles and SysProcAttr are
// honoured, e.g. SysProcAttr.Credential to run it as another user; do not
// use target.StdinPipe and friends: target is never started, so os/exec would
// not close the child's ends) through a
// shim that installs the filter described by cfg, takes the listener out of
// the shim (pidfd_getfd), and returns with the shim stopped before execve.
//
// The caller owns listenerFD (O_CLOEXEC): hand it to the supervisor (e.g.
// NewListener, or over SCM_RIGHTS), then call proc.Release. The listener
// is taken from the shim, a child of the caller running with the caller's
// credentials, so no privilege is needed for that (ptrace access to one's
// own child); SysProcAttr.Credential (which needs CAP_SETUID/CAP_SETGID,
// as for any exec.Cmd) is applied by the shim itself right before execve.
// target itself is not started and cannot be reused.
//
// On failure no process is left running; errors are BuildFilter's, os/exec's,
// ErrShim (with the shim's message), ErrTimeout, or the syscall error.
func StartFiltered(target *exec.Cmd, cfg *ExecConfig) (proc *Process, listenerFD int, err error) {
	if target.Err != nil {
		return nil, -1, target.Err
	}
	if target.Process != nil {
		return nil, -1, errors.New("seccomp: StartFiltered: target already started")
	}
	if cfg == nil {
		cfg = &ExecConfig{}
	}
	if _, err := BuildPolicy(&Policy{Syscalls: cfg.Syscalls, All: cfg.All}); err != nil {
		return nil, -1, err
	}
	shimArgv := cfg.Shim
	if len(shimArgv) == 0 {
		shimArgv = []string{"/proc/self/exe"}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	args := target.Args
	if len(args) == 0 {
		args = []string{target.Path}
	}
	// Credentials are the shim's to apply, after the listener is taken.
	spa := target.SysProcAttr
	var cred *shimCred
	if spa != nil && spa.Credential != nil {
		c := spa.Credential
		cred = &shimCred{UID: c.Uid, GID: c.Gid, Groups: c.Groups, NoSetGroups: c.NoSetGroups}
		cp := *spa
		cp.Credential = nil
		spa = &cp
	}
	rawCfg, err := json.Marshal(shimConfig{Path: target.Path, Args: args, Syscalls: cfg.Syscalls, All: cfg.All,
		AllowIOUring: cfg.AllowIOUring, AllowNestedListeners: cfg.AllowNestedListeners, AllowPtrace: cfg.AllowPtrace,
		Cred: cred})
	if err != nil {
		return nil, -1, err
	}

	var files []*os.File // closed on return: the parent's copies of child ends
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	cfgR, cfgW, err := pipe()
	if err != nil {
		return nil, -1, err
	}
	goR, goW, err := pipe()
	if err != nil {
		return nil, -1, err
	}
	stR, stW, err := pipe()
	if err != nil {
		return nil, -1, err
	}

	env := target.Env
	if env == nil {
		env = os.Environ()
	}
	env = slicesDeleteEnv(env, shimEnv)
	base := 3 + len(target.ExtraFiles)
	env = append(env, fmt.Sprintf("%s=%d,%d,%d", shimEnv, base, base+1, base+2))

	shim := &exec.Cmd{
		Path:        shimArgv[0],
		Args:        shimArgv,
		Env:         env,
		Dir:         target.Dir,
		Stdin:       target.Stdin,
		Stdout:      target.Stdout,
		Stderr:      target.Stderr,
		ExtraFiles:  append(append([]*os.File(nil), target.ExtraFiles...), cfgR, goR, stW),
		SysProcAttr: spa,
	}
	if err := shim.Start(); err != nil {
		return nil, -1, err
	}
	fail := func(err error) (*Process, int, error) {
		shim.Process.Kill()
		shim.Wait()
		return nil, -1, err
	}
	// The child's ends must go now, or the status pipe never reports EOF.
	cfgR.Close()
	goR.Close()
	stW.Close()
	files = nil // goW, stR and cfgW are handled below
	defer func() {
		if err != nil {
			goW.Close()
		}
	}()
	go func() {
		cfgW.Write(rawCfg) // EPIPE if the shim died: the status pipe says so
		cfgW.Close()
	}()

	installing := make(chan struct{})
	status := make(chan string, 1)
	go readStatus(stR, installing, status)

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case <-installing:
	case msg := <-status:
		status <- msg
		return fail(shimError(msg, "exited before installing the filter (does its main call seccomp.ShimMain?)"))
	case <-deadline.C:
		return fail(fmt.Errorf("%w: shim did not start installing", ErrTimeout))
	}
	fd, err := takeListener(shim.Process.Pid, deadline.C, status)
	if err != nil {
		return fail(err)
	}
	return &Process{Cmd: shim, goW: goW, status: status}, fd, nil
}

func shimError(msg, silent string) error {
	if msg == "" {
		return fmt.Errorf("%w: %s", ErrShim, silent)
	}
	return fmt.Errorf("%w: %s", ErrShim, msg)
}

// readStatus reads the status pipe to EOF: it closes installing when the
// shim announces the install, then sends the error message ("" if none) on
// status, and closes r.
func readStatus(r *os.File, installing chan<- struct{}, status chan<- string) {
	defer r.Close()
	var all []byte
	buf := make([]byte, 512)
	announced := false
	for {
		n, err := r.Read(buf)
		all = append(all, buf[:n]...)
		if !announced && len(all) > 0 && all[0] == statusInstalling {
			announced = true
			close(installing)
		}
		if err != nil {
			break
		}
	}
	msg := ""
	if announced {
		all = all[1:]
	}
	if len(all) > 0 {
		msg = strings.TrimPrefix(string(all), string(rune(statusError)))
	}
	status <- msg
}

func slicesDeleteEnv(env []string, key string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// TakeListener waits up to timeout for process pid to hold a seccomp listener
// (as after it called Install) and returns a duplicate of it in this process
// (pidfd_getfd(2)), O_CLOEXEC and owned by the caller. It polls
// /proc/PID/fd, because once the filter is in place the process may not be
// able to say so (its writes may be routed). Needs ptrace access to pid
// (PTRACE_MODE_ATTACH_REALCREDS). Errors: ErrTimeout, or the syscall error
// (ESRCH if the process is gone).
func TakeListener(pid int, timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	return takeListener(pid, t.C, nil)
}

// takeListener polls until the listener shows up in pid's fd table, the
// deadline fires, or died delivers (the shim's final status).
func takeListener(pid int, deadline <-chan time.Time, died chan string) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	wait := 50 * time.Microsecond
	for {
		fdnum, err := findListener(dir)
		if err != nil {
			return -1, err
		}
		if fdnum >= 0 {
			return getfd(pid, fdnum)
		}
		select {
		case msg := <-died:
			died <- msg // keep it for Release
			return -1, shimError(msg, "exited while installing the filter")
		case <-deadline:
			return -1, fmt.Errorf("%w (pid %d)", ErrTimeout, pid)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
}

// findListener returns the number of the first listener fd in dir
// (/proc/PID/fd), or -1.
func findListener(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return -1, fmt.Errorf("seccomp: %s: %w", dir, unix.ESRCH)
		}
		return -1, err
	}
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || link != listenerLink {
			continue // closed meanwhile, or not ours
		}
		n, err := strconv.Atoi(e.Name())
		if err == nil {
			return n, nil
		}
	}
	return -1, nil
}

// getfd duplicates fd fdnum of process pid into this process and checks that
// the copy is a listener (the number could have been reused meanwhile).
func getfd(pid, fdnum int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, fdnum, 0)
	if err != nil {
		return -1, os.NewSyscallError("pidfd_getfd", err)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || link != listenerLink {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: pid %d fd %d changed under us (%q)", ErrNotListener, pid, fdnum, link)
	}
	return fd, nil
}

package bpfctl

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// fdSpec is one descriptor bpfctl exec passes: "[NAME=]PIN[:r|w|rw]".
type fdSpec struct {
	prog bool
	name string
	pin  string
	mode client.Mode
	// named and modeSet say whether NAME= and :MODE were given.
	named, modeSet bool
}

// parseFDSpec parses "[NAME=]PIN[:r|w|rw]"; the mode defaults to r and
// the name to the pin's base name.
func parseFDSpec(s string, prog bool) (fdSpec, error) {
	sp := fdSpec{prog: prog, pin: s, mode: client.ModeRead}
	if i := strings.LastIndexByte(sp.pin, ':'); i >= 0 {
		m, err := parseMode(sp.pin[i+1:])
		if err != nil {
			return sp, usagef("%q: %v", s, err)
		}
		sp.mode, sp.pin, sp.modeSet = m, sp.pin[:i], true
	}
	if i := strings.IndexByte(sp.pin, '='); i >= 0 && !strings.Contains(sp.pin[:i], "/") {
		sp.name, sp.pin, sp.named = sp.pin[:i], sp.pin[i+1:], true
		if sp.name == "" {
			return sp, usagef("%q: empty name before '='", s)
		}
	}
	if sp.pin == "" {
		return sp, usagef("%q: no pin path", s)
	}
	if sp.name == "" {
		sp.name = filepath.Base(sp.pin)
	}
	if strings.ContainsAny(sp.name, ":\x00") {
		return sp, usagef("%q: the name %q may not contain ':'; give one with NAME=PIN", s, sp.name)
	}
	return sp, nil
}

// fdSpecs collects --map and --prog in command-line order.
type fdSpecs struct {
	list *[]fdSpec
	prog bool
}

func (f fdSpecs) String() string { return "" }
func (f fdSpecs) Type() string   { return "[NAME=]PIN[:r|w|rw]" }
func (f fdSpecs) Set(s string) error {
	sp, err := parseFDSpec(s, f.prog)
	if err != nil {
		return err
	}
	*f.list = append(*f.list, sp)
	return nil
}

// execEnv returns env without inherited-descriptor variables, plus ours.
func execEnv(env []string, socket string, names []string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == client.InheritFDsEnv || k == client.InheritNamesEnv || k == client.SocketEnv {
			continue
		}
		out = append(out, kv)
	}
	return append(out, client.InheritFDsEnv+"="+strconv.Itoa(len(names)),
		client.InheritNamesEnv+"="+strings.Join(names, ":"), client.SocketEnv+"="+socket)
}

func (a *App) execCommand() *cobra.Command {
	var specs []fdSpec
	var bpf bpfOptions
	cmd := &cobra.Command{
		Use:   "exec [--bpf] [--map [NAME=]PIN[:r|w|rw]]... [--prog [NAME=]PIN[:r|w|rw]]... -- CMD [ARGS...]",
		Short: "Run a command with descriptors of pinned objects",
		Long: `Open each pin with the access asked for (r when none is given; never more
than the pin grants) and run CMD with the descriptors open as fds 3, 4, ...
in the order given, with BPFD_FDS set to their number, BPFD_FDNAMES to their
names joined by ':' (NAME, or the pin's base name), and BPFD_SOCKET to the
daemon's socket. CMD needs no pin path and gets no more access than given:
in Go, client.InheritedDescriptors() and Conn.ImportInherited(name).

bpfctl exits with CMD's exit status (128+N if a signal N killed it), 127 if
CMD was not found, 126 if it could not be started. SIGTERM and SIGHUP are
passed on to CMD; SIGINT and SIGQUIT from the terminal reach CMD directly.

With --bpf, CMD's own bpf(2) calls are answered by bpfd: unmodified tools
(bpftool, libbpf and cilium/ebpf programs, static binaries too) run as any
user. Paths under --bpffs (default /sys/fs/bpf) are pins under the daemon's
pin root. bpfctl supervises CMD through seccomp user notification as an
ordinary bpfd client: CMD can do exactly what a client holding the same
descriptors could. bpfctl then waits until every process started from CMD
has exited. See docs/emulation.md.`,
		Example: "  bpfctl exec --map ports:r --map cfg=config/main:rw -- ./agent --verbose\n" +
			"  bpfctl exec --bpf -- bpftool map create /sys/fs/bpf/counts type hash key 4 value 8 entries 64 name counts\n" +
			"  bpfctl exec --bpf --map ports:r -- ./my-libbpf-app",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() > 0 {
				return usagef("exec: put the command after --")
			}
			if bpf.enabled {
				return a.runExecBPF(specs, args, &bpf)
			}
			if cmd.Flags().Changed("bpffs") || bpf.only || bpf.trace {
				return usagef("exec: --bpffs, --bpf-only and --bpf-trace go with --bpf")
			}
			return a.runExec(specs, args, func(c *exec.Cmd) (*exec.Cmd, error) { return c, c.Start() })
		},
	}
	bpf.flags(cmd.Flags())
	cmd.Flags().Var(fdSpecs{&specs, false}, "map", "map pin to pass, with access r, w or rw (repeatable)")
	cmd.Flags().Var(fdSpecs{&specs, true}, "prog", "program pin to pass, with access r, w or rw (repeatable)")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// runExec opens the descriptors of specs and runs args with them through
// start, which returns the started process (the command itself, or a
// shim that becomes it).
func (a *App) runExec(specs []fdSpec, args []string, start func(*exec.Cmd) (*exec.Cmd, error)) error {
	names := make([]string, len(specs))
	seen := map[string]bool{}
	for i, sp := range specs {
		if seen[sp.name] {
			return usagef("exec: two descriptors named %q; name them with NAME=PIN", sp.name)
		}
		seen[sp.name] = true
		names[i] = sp.name
	}
	var objs []io.Closer
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
		for _, o := range objs {
			o.Close()
		}
	}()
	if len(specs) > 0 {
		c, err := a.dial()
		if err != nil {
			return err
		}
		for _, sp := range specs {
			var obj io.Closer
			var fd int
			if sp.prog {
				p, err := c.OpenPinnedProgram(sp.pin, sp.mode)
				if err != nil {
					return fail("exec: "+sp.pin, kOpen, false, err)
				}
				obj, fd = p, p.FD()
			} else {
				m, err := c.OpenPinnedMap(sp.pin, sp.mode)
				if err != nil {
					return fail("exec: "+sp.pin, kOpen, false, err)
				}
				obj, fd = m, m.FD()
			}
			objs = append(objs, obj)
			dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return fail("exec", kOther, false, os.NewSyscallError("fcntl", err))
			}
			files = append(files, os.NewFile(uintptr(dup), sp.name))
		}
	}
	child := exec.Command(args[0], args[1:]...)
	if child.Err == nil && strings.Contains(args[0], "/") {
		// exec.Command looks up bare names only; check a path too, so
		// that seccomp exec (whose shim execs it) fails the same way.
		_, child.Err = exec.LookPath(args[0])
	}
	if child.Err != nil {
		// Not found on $PATH, or not executable: exit as a shell would,
		// before any descriptor or filter is set up.
		code := ExitCannotExec
		if errors.Is(child.Err, exec.ErrNotFound) || errors.Is(child.Err, os.ErrNotExist) {
			code = ExitNoCommand
		}
		cause := child.Err
		var ee *exec.Error
		if errors.As(cause, &ee) {
			cause = ee.Err
		}
		return &cliError{code: code, msg: "exec: " + args[0] + ": " + errText(cause), errno: errnoOf(cause)}
	}
	child.Stdin, child.Stdout, child.Stderr = a.Stdin, a.Stdout, a.Stderr
	child.ExtraFiles = files
	child.Env = execEnv(os.Environ(), a.socketPath(), names)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	child, err := start(child)
	if err != nil {
		var ce *cliError
		if errors.As(err, &ce) {
			return err
		}
		code := ExitCannotExec
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = ExitNoCommand
		}
		return &cliError{code: code, msg: "exec: " + args[0] + ": " + errText(err), errno: errnoOf(err)}
	}
	// The child holds its own copies now; let go of ours and of the
	// connection so the daemon does not keep them on our account.
	for _, f := range files {
		f.Close()
	}
	files = nil
	for _, o := range objs {
		o.Close()
	}
	objs = nil
	if a.conn != nil {
		a.conn.Close()
		a.conn = nil
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM || s == syscall.SIGHUP {
					child.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err = child.Wait()
	close(done)
	if err == nil {
		return nil
	}
	var xe *exec.ExitError
	if !errors.As(err, &xe) {
		return fail("exec: wait", kOther, false, err)
	}
	if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return &exitError{code: 128 + int(ws.Signal())}
	}
	return &exitError{code: xe.ExitCode()}
}

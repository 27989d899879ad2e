package client

import (
	"errors"
	"fmt"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// AttachSeccomp hands a seccomp user-notification listener to bpfd: from
// then on bpfd answers every syscall the filter routes by running p (a
// Seccomp program, held with read mode) on its struct seccomp_data, until
// no task uses the filter any more. The attachment keeps the program
// alive. The caller keeps listenerFD (bpfd receives a copy); close it
// afterwards. It returns the attachment id, or ErrInvalid (not a listener,
// not a Seccomp program), ErrPermission (no read mode), ErrClosed.
func (p *Program) AttachSeccomp(listenerFD int) (uint32, error) {
	a := wire.AttachAttr{Handle: p.handle, AttachType: wire.AttachSeccomp}
	var ab [wire.AttachAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	fds := [1]int{listenerFD}
	if err := p.c.do(w, &p.ref, wire.CmdProgAttach, a.Append(ab[:0]), fds[:]); err != nil {
		return 0, err
	}
	w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return 0, err
	}
	return uint32(w.hdr.Ret), nil
}

// ErrShim is StartSeccomp's error when the shim fails before the command
// runs (its message says why); it matches unix.ECHILD.
var ErrShim = seccomp.ErrShim

// SeccompOptions says which syscalls StartSeccomp routes to the program.
type SeccompOptions struct {
	// Syscalls are x86_64 syscall names or numbers ("openat", "41").
	Syscalls []string
	// All routes every syscall (slow: each one is a round trip).
	All bool
	// Shim is the argv of the shim binary (see SeccompShimMain); nil means
	// the running binary.
	Shim []string
	// Routes around the policy stay closed unless opened here
	// (docs/security.md, "Routes around a seccomp policy").
	// AllowIOUring lets the command use io_uring, whose operations (open,
	// socket, connect, read, write...) never pass the filter; by default
	// io_uring_setup, io_uring_enter and io_uring_register fail with EPERM.
	AllowIOUring bool
	// AllowNestedListeners lets the command install seccomp filters with a
	// listener of its own, which could answer its own routed syscalls once
	// bpfd's listener is gone; by default that fails with EPERM.
	AllowNestedListeners bool
	// AllowPtrace lets the command ptrace, and read or write the memory
	// of, processes outside its own descendants (unfiltered siblings it
	// could make run any syscall); by default it runs in a Landlock domain
	// of its own that forbids that.
	AllowPtrace bool
}

// SeccompShimMain must be called first thing in main by a binary that
// starts filtered commands with StartSeccomp (it is the shim that installs
// the filter): it returns at once unless the process was started as a
// shim, in which case it never returns.
func SeccompShimMain() { seccomp.ShimMain() }

// StartSeccomp starts cmd (not yet started; its Path, Args, Env, Dir,
// files and SysProcAttr are honoured) under a seccomp filter whose routed
// syscalls bpfd decides with p: syscalls not chosen never leave the
// kernel. It returns the running command, to Wait for. The filter is
// installed by a shim (the running binary, which must call
// SeccompShimMain, or opts.Shim) before cmd's execve, with no_new_privs
// set, so cmd runs under the filter from its first instruction. Errors:
// ErrInvalid for an unknown syscall name; those of AttachSeccomp; the
// shim's (ErrShim, with its message).
func (p *Program) StartSeccomp(cmd *exec.Cmd, opts *SeccompOptions) (*exec.Cmd, error) {
	if opts == nil {
		opts = &SeccompOptions{}
	}
	cfg := &seccomp.ExecConfig{All: opts.All, Shim: opts.Shim, AllowIOUring: opts.AllowIOUring,
		AllowNestedListeners: opts.AllowNestedListeners, AllowPtrace: opts.AllowPtrace}
	if !opts.All {
		if len(opts.Syscalls) == 0 {
			return nil, invalid("bpfd: StartSeccomp: no syscalls to route (set Syscalls or All)")
		}
		for _, name := range opts.Syscalls {
			nrs, err := seccomp.ParseSyscalls(name)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			cfg.Syscalls = append(cfg.Syscalls, nrs...)
		}
	}
	proc, lfd, err := seccomp.StartFiltered(cmd, cfg)
	if err != nil {
		return nil, err
	}
	_, err = p.AttachSeccomp(lfd)
	unix.Close(lfd)
	if err != nil {
		proc.Cmd.Process.Kill()
		proc.Cmd.Wait()
		return nil, err
	}
	if err := proc.Release(); err != nil {
		proc.Cmd.Wait()
		return nil, errors.Join(err, fmt.Errorf("bpfd: starting %s under seccomp", cmd.Path))
	}
	return proc.Cmd, nil
}

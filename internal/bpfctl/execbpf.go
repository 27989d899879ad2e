package bpfctl

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"

	"github.com/spf13/pflag"

	"github.com/bpfd-project/bpfd/pkg/bpfemu"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
)

// bpfOptions are the flags of bpfctl exec --bpf.
type bpfOptions struct {
	enabled bool   // --bpf
	bpffs   string // --bpffs
	only    bool   // --bpf-only
	trace   bool   // --bpf-trace
}

func (o *bpfOptions) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.enabled, "bpf", false, "answer CMD's own bpf(2) calls with bpfd (unmodified tools, as any user)")
	fs.StringVar(&o.bpffs, "bpffs", bpfemu.DefaultBPFFS, "with --bpf: the directory CMD sees as the bpf filesystem (pins go to the daemon's pin root)")
	fs.BoolVar(&o.only, "bpf-only", false, "with --bpf: route bpf(2) only, no file system emulation of the bpffs directory")
	fs.BoolVar(&o.trace, "bpf-trace", false, "with --bpf: print every emulated call on stderr")
}

// runExecBPF is bpfctl exec --bpf: CMD runs under a seccomp filter that
// routes its bpf(2) calls (and the file system calls tools make around
// them) to a supervisor in this process, which answers them as an
// ordinary client of bpfd on a connection of its own. bpfctl waits until
// no process started from CMD uses the filter any more.
func (a *App) runExecBPF(specs []fdSpec, args []string, o *bpfOptions) error {
	var trace io.Writer
	if o.trace {
		trace = a.Stderr
	}
	sup, err := bpfemu.New(&bpfemu.Config{Socket: a.socketPath(), BPFFS: o.bpffs, BPFOnly: o.only, Trace: trace})
	if err != nil {
		if errors.Is(err, bpfemu.ErrBadPrefix) {
			return usagef("exec: --bpffs: %v", err)
		}
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Op == "connect" {
			return &cliError{code: ExitUnreachable, msg: "cannot talk to bpfd at " + a.socketPath() + ": " + errText(err),
				errno: errnoOf(err), hint: "is bpfd running? Point bpfctl at its socket with --socket or $BPFD_SOCKET"}
		}
		return fail("exec --bpf", kOther, false, err)
	}
	defer sup.Close()
	var served chan error
	err = a.runExec(specs, args, func(child *exec.Cmd) (*exec.Cmd, error) {
		if child.Err != nil {
			return nil, child.Err
		}
		proc, lfd, err := seccomp.StartFiltered(child, &seccomp.ExecConfig{Syscalls: sup.Syscalls()})
		if err != nil {
			return nil, err
		}
		served = make(chan error, 1)
		go func() { served <- sup.Serve(context.Background(), lfd) }()
		if err := proc.Release(); err != nil {
			proc.Cmd.Process.Kill()
			proc.Cmd.Wait()
			return nil, err
		}
		return proc.Cmd, nil
	})
	if served != nil {
		// CMD exited; its descendants may still use bpf(2).
		if serr := <-served; serr != nil && err == nil {
			err = fail("exec --bpf", kOther, false, serr)
		}
	}
	return err
}

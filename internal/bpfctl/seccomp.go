package bpfctl

import (
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
)

func (a *App) seccompCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "seccomp",
		Short: "Run commands under eBPF seccomp filters decided by bpfd",
	}
	cmd.AddCommand(a.seccompExecCommand())
	return cmd
}

func (a *App) seccompExecCommand() *cobra.Command {
	var (
		progPin  string
		syscalls string
		all      bool
		specs    []fdSpec
	)
	cmd := &cobra.Command{
		Use:   "exec --prog PIN (--syscalls NAME,...|--all) [--map [NAME=]PIN[:r|w|rw]]... -- CMD [ARGS...]",
		Short: "Run a command with its syscalls decided by a pinned seccomp program",
		Long: `Run CMD under a seccomp filter (no_new_privs is set) that routes the chosen
syscalls (x86_64 names or numbers, comma-separated) to bpfd; bpfd answers each
by running the pinned Seccomp program, opened here with read access, on the
syscall's struct seccomp_data: allow, an errno, or kill. Syscalls not chosen
never leave the kernel; --all routes every syscall (slow). Filters see
syscall numbers and integer arguments; memory behind pointers is out of reach.

--map and --prog pass descriptors to CMD as bpfctl exec does. bpfctl exits
with CMD's status, as bpfctl exec.`,
		Example: "  bpfctl seccomp exec --prog policy --syscalls socket,connect -- curl -6 http://[::1]/\n" +
			"  bpfctl seccomp exec --prog policy --syscalls socket --map counts:r -- ./agent",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() > 0 {
				return usagef("seccomp exec: put the command after --")
			}
			if progPin == "" {
				return usagef("seccomp exec: --prog PIN is required")
			}
			if (syscalls == "") == !all {
				return usagef("seccomp exec: give either --syscalls or --all")
			}
			opts := &client.SeccompOptions{All: all}
			if syscalls != "" {
				opts.Syscalls = strings.Split(syscalls, ",")
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			p, err := c.OpenPinnedProgram(progPin, client.ModeRead)
			if err != nil {
				return fail("seccomp exec: "+progPin, kOpen, false, err)
			}
			return a.runExec(specs, args, func(child *exec.Cmd) (*exec.Cmd, error) {
				// The attachment holds the program; our descriptor can go.
				defer p.Close()
				run, err := p.StartSeccomp(child, opts)
				if err != nil {
					return nil, fail("seccomp exec: "+progPin, kOther, false, err)
				}
				return run, nil
			})
		},
	}
	cmd.Flags().StringVar(&progPin, "prog", "", "pin of the Seccomp program that decides")
	cmd.Flags().StringVar(&syscalls, "syscalls", "", "syscalls to route, e.g. openat,connect,socket or numbers")
	cmd.Flags().BoolVar(&all, "all", false, "route every syscall")
	cmd.Flags().Var(fdSpecs{&specs, false}, "map", "map pin to pass, with access r, w or rw (repeatable)")
	cmd.Flags().Var(fdSpecs{&specs, true}, "prog-fd", "program pin to pass, with access r, w or rw (repeatable)")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

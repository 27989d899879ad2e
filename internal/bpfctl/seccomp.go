package bpfctl

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
)

func (a *App) seccompCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "seccomp",
		Short: "Run commands under eBPF seccomp filters decided by bpfd",
	}
	cmd.AddCommand(a.seccompExecCommand())
	return cmd
}

// parseSyscallList checks a --syscalls list: every word an x86_64 syscall
// name, every number one the table knows. A usage error names the word
// (and suggests close names).
func parseSyscallList(list string) ([]string, error) {
	var out []string
	for _, w := range strings.Split(list, ",") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		if _, ok := seccomp.SyscallNumber(w); ok {
			out = append(out, w)
			continue
		}
		if n, err := strconv.ParseUint(w, 10, 32); err == nil {
			if seccomp.SyscallName(uint32(n)) == "" {
				return nil, usagef("--syscalls: %d is not an x86_64 syscall number", n)
			}
			out = append(out, w)
			continue
		}
		ce := &cliError{code: ExitUsage, msg: fmt.Sprintf("--syscalls: unknown syscall %q", w)}
		if s := seccomp.SimilarSyscalls(w); len(s) > 0 {
			ce.hint = "did you mean " + quoteList(s) + "?"
		} else {
			ce.hint = "give x86_64 syscall names as in asm/unistd_64.h (openat, connect) or numbers"
		}
		return nil, ce
	}
	if len(out) == 0 {
		return nil, usagef("--syscalls: no syscall given")
	}
	return out, nil
}

func (a *App) seccompExecCommand() *cobra.Command {
	var (
		filterPin string
		syscalls  string
		all       bool
		specs     []fdSpec
		open      client.SeccompOptions // the --allow-* routes
	)
	cmd := &cobra.Command{
		Use:   "exec --filter PIN (--syscalls NAME,...|--all) [--map [NAME=]PIN[:r|w|rw]]... [--prog [NAME=]PIN[:r|w|rw]]... -- CMD [ARGS...]",
		Short: "Run a command with its syscalls decided by a pinned seccomp program",
		Long: `Run CMD under a seccomp filter (no_new_privs is set) that routes the chosen
syscalls (x86_64 names or numbers, comma-separated) to bpfd; bpfd answers each
by running the pinned Seccomp program --filter, opened here with read access,
on the syscall's struct seccomp_data: allow, an errno, or kill. Syscalls not
chosen never leave the kernel; --all routes every syscall (slow). Filters see
syscall numbers and integer arguments; memory behind pointers is out of reach.

Routes around a policy stay closed: io_uring (its operations never pass a
filter) fails with EPERM, a seccomp listener of CMD's own is refused, and CMD
cannot ptrace processes outside its own descendants (a Landlock domain).
--allow-io-uring, --allow-nested-listeners and --allow-ptrace open them; see
docs/security.md for what each exposes.

--map and --prog pass descriptors to CMD exactly as bpfctl exec does. bpfctl
exits with CMD's status, 127 if CMD was not found and 126 if it could not be
started, as bpfctl exec.`,
		Example: "  bpfctl seccomp exec --filter policy --syscalls socket,connect -- curl -6 http://[::1]/\n" +
			"  bpfctl seccomp exec --filter policy --syscalls socket --map counts:r -- ./agent",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() > 0 {
				return usagef("seccomp exec: put the command after --")
			}
			if filterPin == "" {
				ce := &cliError{code: ExitUsage, msg: "seccomp exec: --filter PIN is required"}
				if len(specs) > 0 && specs[len(specs)-1].prog {
					ce.hint = "--filter names the program that decides; --prog passes program descriptors to CMD, as in bpfctl exec"
				}
				return ce
			}
			if (syscalls == "") == !all {
				return usagef("seccomp exec: give either --syscalls or --all")
			}
			opts := &client.SeccompOptions{All: all, AllowIOUring: open.AllowIOUring,
				AllowNestedListeners: open.AllowNestedListeners, AllowPtrace: open.AllowPtrace}
			if syscalls != "" {
				var err error
				if opts.Syscalls, err = parseSyscallList(syscalls); err != nil {
					return err
				}
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			p, err := c.OpenPinnedProgram(filterPin, client.ModeRead)
			if err != nil {
				return fail("seccomp exec: "+filterPin, kOpen, false, err)
			}
			if info, err := p.Info(); err == nil && info.Type != client.Seccomp {
				p.Close()
				return &cliError{code: ExitFailed, msg: fmt.Sprintf("seccomp exec: %s is a %s program, not a seccomp one", filterPin, info.Type),
					hint: "load a seccomp program (bpfctl prog load --type seccomp, or SEC(\"seccomp\") in C) and pass its pin to --filter"}
			}
			// The attachment holds the program; our descriptor can go
			// once it is made, or when starting fails.
			defer p.Close()
			return a.runExec(specs, args, func(child *exec.Cmd) (*exec.Cmd, error) {
				run, err := p.StartSeccomp(child, opts)
				p.Close()
				if err != nil {
					return nil, fail("seccomp exec: "+filterPin, kOther, false, err)
				}
				return run, nil
			})
		},
	}
	cmd.Flags().StringVar(&filterPin, "filter", "", "pin of the Seccomp program that decides the routed syscalls")
	cmd.Flags().StringVar(&syscalls, "syscalls", "", "syscalls to route, e.g. openat,connect,socket or numbers")
	cmd.Flags().BoolVar(&all, "all", false, "route every syscall")
	cmd.Flags().BoolVar(&open.AllowIOUring, "allow-io-uring", false, "let CMD use io_uring, whose operations bypass the policy")
	cmd.Flags().BoolVar(&open.AllowNestedListeners, "allow-nested-listeners", false, "let CMD install seccomp filters with a listener of its own")
	cmd.Flags().BoolVar(&open.AllowPtrace, "allow-ptrace", false, "let CMD ptrace processes outside its own descendants")
	cmd.Flags().Var(fdSpecs{&specs, false}, "map", "map pin to pass, with access r, w or rw (repeatable)")
	cmd.Flags().Var(fdSpecs{&specs, true}, "prog", "program pin to pass, with access r, w or rw (repeatable)")
	cmd.Flags().SetInterspersed(false)
	cmd.RegisterFlagCompletionFunc("syscalls", func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		head, last := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			head, last = toComplete[:i+1], toComplete[i+1:]
		}
		var out []cobra.Completion
		for _, n := range seccomp.SyscallNames() {
			if strings.HasPrefix(n, last) {
				out = append(out, head+n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	})
	return cmd
}

// Example 01: an eBPF program as the seccomp filter of a command.
//
// The program (bpf/deny_inet6.bpf.c) is loaded into bpfd. A command is then
// started under a seccomp filter that routes its socket() calls to bpfd,
// which runs the program on each call's struct seccomp_data and answers:
// socket(AF_INET6, ...) fails with EPERM, other families are allowed.
// Syscalls that are not routed never leave the kernel.
//
// The command is this binary again, in the "probe" role: it tries three
// socket families and prints what each returned. It runs once without the
// filter and once under it, as uid 65534 when the example runs as root.
//
// Run bpfd first (`make run`), then `go run ./examples/01-seccomp-deny`.
package main

import (
	_ "embed"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/examples/internal/demo"
	"github.com/bpfd-project/bpfd/pkg/client"
)

//go:embed bpf/deny_inet6.bpf.o
var filterELF []byte

func main() {
	// This binary also serves as the shim that installs the seccomp
	// filter in the child before it runs the command: first thing in main.
	client.SeccompShimMain()

	if len(os.Args) > 1 && os.Args[1] == "probe" {
		probe()
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "01-seccomp-deny:", err)
		os.Exit(1)
	}
}

func run() error {
	// Connect to the running bpfd ($BPFD_SOCKET or the default socket).
	c, err := client.Dial("")
	if err != nil {
		return err
	}
	defer c.Close()

	filter, err := demo.LoadProgram(c, filterELF, "deny_inet6", nil)
	if err != nil {
		return err
	}
	defer filter.Close()
	fmt.Printf("loaded seccomp program %q (%v) into bpfd\n", "deny_inet6", filter.Type())

	fmt.Println("without the filter:")
	if err := demo.Untrusted("probe").Run(); err != nil {
		return fmt.Errorf("probe: %w", err)
	}

	fmt.Println("under the filter, socket() routed to bpfd:")
	cmd, err := filter.StartSeccomp(demo.Untrusted("probe"), &client.SeccompOptions{Syscalls: []string{"socket"}})
	if err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("filtered probe: %w", err)
	}
	return nil
}

// probe is the command: it creates a socket of each family and prints what
// socket() returned.
func probe() {
	for _, f := range []struct {
		name   string
		family int
	}{
		{"AF_INET", unix.AF_INET},
		{"AF_INET6", unix.AF_INET6},
		{"AF_UNIX", unix.AF_UNIX},
	} {
		fd, err := unix.Socket(f.family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		fmt.Printf("  %s socket(%s, SOCK_DGRAM) = %s\n", demo.Uid(), f.name, demo.Result(err))
	}
}

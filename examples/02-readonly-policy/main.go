// Example 02: a read-only map referenced from a seccomp filter.
//
// The policy is a hash map from syscall number to the errno that syscall
// must fail with. The filter (bpf/policy.bpf.c, program "filter") is
// loaded through a read-only descriptor of that map: it can look the
// policy up, never change it. A variant that writes the map (program
// "tamper") is refused by bpfd's verifier with EACCES when loaded through
// the same read-only descriptor; the kernel would have accepted it.
//
// A command (this binary again, role "probe", as uid 65534 when run as
// root) then runs under the filter and makes the syscalls the policy names.
//
// Run bpfd first (`make run`), then `go run ./examples/02-readonly-policy`.
package main

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/examples/internal/demo"
	"github.com/bpfd-project/bpfd/pkg/client"
)

//go:embed bpf/policy.bpf.o
var policyELF []byte

// The policy: syscall number -> errno.
var policy = []struct {
	name  string
	nr    uint32
	errno unix.Errno
}{
	{"socket", unix.SYS_SOCKET, unix.EACCES},
	{"mkdirat", unix.SYS_MKDIRAT, unix.EROFS},
}

func main() {
	client.SeccompShimMain() // this binary is also the seccomp shim

	if len(os.Args) > 1 && os.Args[1] == "probe" {
		probe()
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "02-readonly-policy:", err)
		os.Exit(1)
	}
}

func run() error {
	c, err := client.Dial("")
	if err != nil {
		return err
	}
	defer c.Close()

	// Create the policy map and fill it through its read-write descriptor.
	rw, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 64, Name: "policy"})
	if err != nil {
		return err
	}
	defer rw.Close()
	for _, p := range policy {
		if err := rw.Update(u32(p.nr), u32(uint32(p.errno)), client.UpdateAny); err != nil {
			return err
		}
		fmt.Printf("policy: %s (%d) -> %s\n", p.name, p.nr, unix.ErrnoName(p.errno))
	}

	// A read-only descriptor of the same map: the filter gets only this.
	ro, err := rw.Reopen(client.ModeRead)
	if err != nil {
		return err
	}
	defer ro.Close()
	fmt.Printf("read-only descriptor: mode %v; update through it = %s\n",
		ro.Mode(), demo.Result(ro.Update(u32(unix.SYS_SOCKET), u32(0), client.UpdateAny)))

	filter, err := demo.LoadProgram(c, policyELF, "filter", map[string]*client.Map{"policy": ro})
	if err != nil {
		return err
	}
	defer filter.Close()
	fmt.Println(`load "filter" (reads policy) through the read-only descriptor: ok`)

	tamper, err := demo.LoadProgram(c, policyELF, "tamper", map[string]*client.Map{"policy": ro})
	var verr *client.VerifierError
	switch {
	case err == nil:
		tamper.Close()
		return errors.New(`"tamper" loaded through a read-only descriptor`)
	case !errors.As(err, &verr):
		return err
	}
	fmt.Printf("load \"tamper\" (writes policy) through the read-only descriptor: %s\n", unix.ErrnoName(verr.Errno))
	for _, line := range strings.Split(strings.TrimSpace(verr.Log), "\n") {
		fmt.Println("  verifier:", line)
	}

	fmt.Println("under the filter, socket, mkdirat and uname routed to bpfd:")
	cmd, err := filter.StartSeccomp(demo.Untrusted("probe"),
		&client.SeccompOptions{Syscalls: []string{"socket", "mkdirat", "uname"}})
	if err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("filtered probe: %w", err)
	}
	return nil
}

// probe is the filtered command: it makes the syscalls the policy names,
// and one it does not, and prints what they returned.
func probe() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	fmt.Printf("  %s socket(AF_INET, SOCK_STREAM) = %s\n", demo.Uid(), demo.Result(err))

	// Allowed, this would fail with ENOENT: the parent does not exist.
	err = unix.Mkdir("/nonexistent/bpfd-example", 0o755)
	fmt.Printf("  %s mkdir(\"/nonexistent/bpfd-example\") = %s\n", demo.Uid(), demo.Result(err))

	var uts unix.Utsname
	err = unix.Uname(&uts)
	fmt.Printf("  %s uname() = %s\n", demo.Uid(), demo.Result(err))
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// Example 03: a map the filter writes and the filtered process can only
// read.
//
// The filter (bpf/counts.bpf.c) counts the syscalls routed to it in an
// array indexed by syscall number, and allows them all. It is loaded with
// the map's read-write descriptor. The filtered process (this binary
// again, role "counter", as uid 65534 when run as root) inherits a
// read-only descriptor of the map as its fd 3, presents it to bpfd
// (ImportMap) and reads its own counts. Its attempts to change them, or to
// reopen the descriptor with write access, fail with EPERM.
//
// Run bpfd first (`make run`), then `go run ./examples/03-syscall-counts`.
package main

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/examples/internal/demo"
	"github.com/bpfd-project/bpfd/pkg/client"
)

//go:embed bpf/counts.bpf.o
var countsELF []byte

// The syscalls routed to the filter (and so counted). The Go runtime
// makes neither on its own, so the counts are exactly the counter's calls.
var counted = []struct {
	name string
	nr   uint32
}{
	{"getppid", unix.SYS_GETPPID},
	{"getcwd", unix.SYS_GETCWD},
}

// countsFD is the fd number of the read-only descriptor in the counter:
// the first of exec.Cmd.ExtraFiles.
const countsFD = 3

func main() {
	client.SeccompShimMain() // this binary is also the seccomp shim

	if len(os.Args) > 1 && os.Args[1] == "counter" {
		if err := counter(); err != nil {
			fmt.Fprintln(os.Stderr, "03-syscall-counts counter:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "03-syscall-counts:", err)
		os.Exit(1)
	}
}

func run() error {
	c, err := client.Dial("")
	if err != nil {
		return err
	}
	defer c.Close()

	counts, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 512, Name: "counts"})
	if err != nil {
		return err
	}
	defer counts.Close()

	// The filter gets the map with the read-write descriptor's mode.
	filter, err := demo.LoadProgram(c, countsELF, "count", map[string]*client.Map{"counts": counts})
	if err != nil {
		return err
	}
	defer filter.Close()

	// The filtered process gets a read-only descriptor, and nothing else.
	ro, err := counts.Reopen(client.ModeRead)
	if err != nil {
		return err
	}
	defer ro.Close()
	// ExtraFiles wants an *os.File; give it a duplicate, so that ro keeps
	// its own descriptor.
	dup, err := unix.FcntlInt(uintptr(ro.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	roFile := os.NewFile(uintptr(dup), "counts (read-only)")
	defer roFile.Close()

	cmd := demo.Untrusted("counter")
	cmd.ExtraFiles = []*os.File{roFile} // fd 3 in the counter
	var names []string
	for _, s := range counted {
		names = append(names, s.name)
	}
	fmt.Printf("running the counter under the filter (routed: %v), with a read-only descriptor of \"counts\" as fd %d\n", names, countsFD)
	proc, err := filter.StartSeccomp(cmd, &client.SeccompOptions{Syscalls: names})
	if err != nil {
		return err
	}
	roFile.Close() // the counter has its copy
	if err := proc.Wait(); err != nil {
		return fmt.Errorf("counter: %w", err)
	}

	// The loader reads the same map through its own descriptor.
	for _, s := range counted {
		n, err := lookup(counts, s.nr)
		if err != nil {
			return err
		}
		fmt.Printf("loader reads: counts[%s] = %d\n", s.name, n)
	}
	return nil
}

// counter is the filtered process: it makes some routed syscalls, then
// reads its own counts through the read-only descriptor it inherited.
func counter() error {
	for range 3 {
		unix.Getppid()
	}
	buf := make([]byte, unix.PathMax)
	for range 2 {
		if _, err := unix.Getcwd(buf); err != nil {
			return err
		}
	}
	fmt.Printf("  %s called getppid 3 times and getcwd 2 times\n", demo.Uid())

	c, err := client.Dial("")
	if err != nil {
		return err
	}
	defer c.Close()
	counts, err := c.ImportMap(countsFD)
	if err != nil {
		return err
	}
	defer counts.Close()
	unix.Close(countsFD) // ImportMap made its own copy
	fmt.Printf("  %s imported fd %d: map %q, mode %v\n", demo.Uid(), countsFD, "counts", counts.Mode())

	for _, s := range counted {
		n, err := lookup(counts, s.nr)
		if err != nil {
			return err
		}
		fmt.Printf("  %s reads: counts[%s] = %d\n", demo.Uid(), s.name, n)
	}
	zero := binary.NativeEndian.AppendUint64(nil, 0)
	err = counts.Update(key(unix.SYS_GETPPID), zero, client.UpdateAny)
	fmt.Printf("  %s update counts[getppid] = 0: %s\n", demo.Uid(), demo.Result(err))
	rw, err := counts.Reopen(client.ModeReadWrite)
	if err == nil {
		rw.Close()
	}
	fmt.Printf("  %s reopen read-write: %s\n", demo.Uid(), demo.Result(err))
	return nil
}

func key(nr uint32) []byte { return binary.NativeEndian.AppendUint32(nil, nr) }

func lookup(m *client.Map, nr uint32) (uint64, error) {
	v := make([]byte, 8)
	if err := m.Lookup(key(nr), v); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint64(v), nil
}

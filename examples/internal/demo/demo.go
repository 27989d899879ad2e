// Package demo is the plumbing the bpfd examples share, kept out of their
// main.go files so that those show only what a bpfd user writes: starting
// the untrusted side of an example as a separate process (as nobody when
// run as root), loading one program of a clang-built ELF object with its
// maps bound to descriptors the example chose, and printing syscall
// results.
//
// It is an internal package of the examples, not an API of bpfd.
package demo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Nobody is the uid and gid the untrusted side of an example runs as when
// the example runs as root.
const Nobody = 65534

// Untrusted returns an unstarted command that runs this example's binary
// again with role as its first argument, followed by args: the untrusted
// side of the example. When this process runs as root, the command runs as
// uid and gid Nobody with no supplementary groups; otherwise as the same
// user. Its environment names the socket this process uses (BPFD_SOCKET),
// since another user's default socket path differs. Stdout and stderr are
// this process's.
//
// The binary is executed as /proc/self/exe, which works for Nobody even when
// the binary sits in a directory Nobody cannot search (as `go run` builds
// it as root); the binary file itself must be executable by others.
func Untrusted(role string, args ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", append([]string{role}, args...)...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), client.SocketEnv+"="+client.DefaultSocket())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody, Groups: []uint32{}},
		}
	}
	return cmd
}

// LoadProgram loads the program called name from the clang-built eBPF ELF
// object elf into bpfd over c, with each map the program references bound
// to maps[map name]: the program gets each map with that descriptor's
// mode (Conn.LoadCollectionSpec with CollectionOptions.MapReplacements
// and only this program). The program's type comes from its ELF section ("seccomp", "xdp",
// "socket"). The caller owns the returned Program.
//
// It fails if the object does not parse or has no such program, if a map
// the program references is missing from maps, and with LoadProgram's
// errors (a *client.VerifierError for a refused program).
func LoadProgram(c *client.Conn, elf []byte, name string, maps map[string]*client.Map) (*client.Program, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		return nil, err
	}
	ps, ok := spec.Programs[name]
	if !ok {
		return nil, fmt.Errorf("no program %q in the object", name)
	}
	for _, ins := range ps.Instructions {
		if ref := ins.Reference(); ref != "" && ins.IsLoadFromMap() && maps[ref] == nil {
			return nil, fmt.Errorf("program %q uses map %q, which was not given", name, ref)
		}
	}
	coll, err := c.LoadCollectionSpec(spec, &client.CollectionOptions{MapReplacements: maps, Programs: []string{name}})
	if err != nil {
		return nil, err
	}
	p := coll.Programs[name]
	delete(coll.Programs, name) // the caller owns it
	coll.Close()
	return p, nil
}

// Result describes the outcome of a call for the examples' output: "ok"
// for nil, the errno's name for an error carrying an errno ("EPERM"), and
// the error's text otherwise.
func Result(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// Uid returns a prefix naming the calling process's uid, for the untrusted
// sides' output: "[uid 65534]".
func Uid() string { return fmt.Sprintf("[uid %d]", os.Getuid()) }

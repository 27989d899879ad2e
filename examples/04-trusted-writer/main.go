// Example 04: a map the filter reads and a trusted process writes while
// the filtered process runs.
//
// This process is the trusted writer: it creates the policy map (syscall
// number -> errno) and keeps its read-write descriptor, the only one that
// can write. The filter (bpf/policy.bpf.c) is loaded through a read-only
// descriptor. The filtered process (this binary again, role "worker", as
// uid 65534 when run as root) creates a socket each time it reads a line
// on its stdin and reports the result on its stdout; the writer changes
// the policy between two requests, so the next socket() sees the change.
// The pipes make the order deterministic: each change is made before the
// request that should observe it is sent.
//
// Run bpfd first (`make run`), then `go run ./examples/04-trusted-writer`.
package main

import (
	"bufio"
	_ "embed"
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/examples/internal/demo"
	"github.com/bpfd-project/bpfd/pkg/client"
)

//go:embed bpf/policy.bpf.o
var policyELF []byte

func main() {
	client.SeccompShimMain() // this binary is also the seccomp shim

	if len(os.Args) > 1 && os.Args[1] == "worker" {
		worker()
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "04-trusted-writer:", err)
		os.Exit(1)
	}
}

func run() error {
	c, err := client.Dial("")
	if err != nil {
		return err
	}
	defer c.Close()

	// The only write descriptor of the policy: it stays in this process.
	policy, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 64, Name: "policy"})
	if err != nil {
		return err
	}
	defer policy.Close()

	// The filter reads the policy through a read-only descriptor.
	ro, err := policy.Reopen(client.ModeRead)
	if err != nil {
		return err
	}
	filter, err := demo.LoadProgram(c, policyELF, "filter", map[string]*client.Map{"policy": ro})
	ro.Close() // the loaded filter keeps its own reference to the map
	if err != nil {
		return err
	}
	defer filter.Close()

	// Two pipes: requests to the worker's stdin, replies from its stdout.
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer reqW.Close()
	repR, repW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		return err
	}
	defer repR.Close()
	cmd := demo.Untrusted("worker")
	cmd.Stdin, cmd.Stdout = reqR, repW
	proc, err := filter.StartSeccomp(cmd, &client.SeccompOptions{Syscalls: []string{"socket"}})
	reqR.Close() // the worker holds its ends
	repW.Close()
	if err != nil {
		return err
	}
	err = converse(policy, reqW, repR)
	reqW.Close() // end of requests: the worker exits
	if werr := proc.Wait(); err == nil {
		err = werr
	}
	return err
}

// converse changes the policy step by step and, after each change, asks
// the worker for one socket() and prints its report.
func converse(policy *client.Map, requests *os.File, replies *os.File) error {
	in := bufio.NewScanner(replies)
	key := binary.NativeEndian.AppendUint32(nil, unix.SYS_SOCKET)
	errnoValue := func(e unix.Errno) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(e)) }
	changes := []struct {
		what  string
		apply func() error
	}{
		{"policy is empty", func() error { return nil }},
		{"writer: policy[socket] = EACCES", func() error { return policy.Update(key, errnoValue(unix.EACCES), client.UpdateAny) }},
		{"writer: policy[socket] = ENETDOWN", func() error { return policy.Update(key, errnoValue(unix.ENETDOWN), client.UpdateExist) }},
		{"writer: delete policy[socket]", func() error { return policy.Delete(key) }},
	}
	for _, ch := range changes {
		if err := ch.apply(); err != nil {
			return fmt.Errorf("%s: %w", ch.what, err)
		}
		fmt.Println(ch.what)
		// The change is in the map before the request leaves.
		if _, err := requests.Write([]byte("socket\n")); err != nil {
			return err
		}
		if !in.Scan() {
			return fmt.Errorf("worker stopped: %v", in.Err())
		}
		fmt.Println(in.Text())
	}
	return nil
}

// worker is the filtered process: one socket() per request line.
func worker() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		fmt.Printf("  %s socket(AF_INET, SOCK_STREAM) = %s\n", demo.Uid(), demo.Result(err))
	}
}

// Command bpfctl is the command-line interface of bpfd: it creates, inspects
// and pins maps and programs, runs programs, and hands descriptors to other
// commands. See docs/bpfctl.md; the logic lives in internal/bpfctl.
package main

import (
	"os"

	"github.com/bpfd-project/bpfd/internal/bpfctl"
	"github.com/bpfd-project/bpfd/pkg/client"
)

func main() {
	// bpfctl seccomp exec re-executes bpfctl as the shim that installs the
	// filter; in that role this never returns.
	client.SeccompShimMain()
	os.Exit(bpfctl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Command bpfd is the bpfd daemon: a userspace bpf(2) serving eBPF maps
// (and later programs) over a Unix socket. See internal/daemon for flags.
package main

import (
	"os"

	"github.com/bpfd-project/bpfd/internal/daemon"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int { return daemon.Run(args) }

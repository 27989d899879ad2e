// Command bpfd is the bpfd daemon: a userspace bpf(2) serving eBPF maps
// (and later programs) over a Unix socket. See internal/daemon for flags.
package main

import (
	"os"
	"runtime"

	"github.com/bpfd-project/bpfd/internal/daemon"
)

// The main goroutine keeps the main thread for itself: threads that take a
// user's filesystem credentials to create pins end with their goroutine,
// but the runtime parks the main thread instead of ending it, and
// /proc/PID/status (what operators read) shows the main thread.
func init() { runtime.LockOSThread() }

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int { return daemon.Run(args) }

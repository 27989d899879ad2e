package client

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// syscallNs times n raw calls of nr and returns the mean in ns.
func syscallNs(nr uintptr, n int) float64 {
	start := time.Now()
	for range n {
		unix.RawSyscall(nr, 0, 0, 0)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// childSyscallLatency runs under the filter: it times getppid (routed to
// bpfd) and getpid (not routed) and prints both.
func childSyscallLatency() error {
	n, err := strconv.Atoi(os.Getenv("BPFD_BENCH_N"))
	if err != nil {
		return err
	}
	syscallNs(unix.SYS_GETPPID, 100) // warm up
	routed := syscallNs(unix.SYS_GETPPID, n)
	notRouted := syscallNs(unix.SYS_GETPID, n)
	fmt.Printf("%f %f\n", routed, notRouted)
	return nil
}

// BenchmarkSeccompLatency measures, in one run, a syscall routed through a
// seccomp filter to bpfd and answered by an eBPF program ("allow"), one
// the filter lets through in the kernel, and the same syscalls with no
// filter; it reports ns per call and the ratios.
func BenchmarkSeccompLatency(b *testing.B) {
	c := newTestConn(b)
	allow := asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), // nr: the program reads its context
		asm.Mov.Imm(asm.R0, 0x7fff0000),          // SECCOMP_RET_ALLOW
		asm.Return(),
	}
	p, err := c.LoadProgram(ProgramSpec{Type: Seccomp, Instructions: allow, License: "GPL", Name: "allow"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	n := max(b.N, 1000)
	baseRouted := syscallNs(unix.SYS_GETPPID, n)
	baseNot := syscallNs(unix.SYS_GETPID, n)

	cmd := sameUserChild(b, "latency", nil, "BPFD_BENCH_N="+strconv.Itoa(n))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	b.ResetTimer()
	run, err := p.StartSeccomp(cmd, &SeccompOptions{Syscalls: []string{"getppid"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		b.Fatalf("child: %v\n%s", err, out.String())
	}
	b.StopTimer()
	var routed, notRouted float64
	if _, err := fmt.Sscan(out.String(), &routed, &notRouted); err != nil {
		b.Fatalf("child output %q: %v", out.String(), err)
	}
	b.ReportMetric(baseRouted, "ns/getppid-nofilter")
	b.ReportMetric(routed, "ns/getppid-routed")
	b.ReportMetric(baseNot, "ns/getpid-nofilter")
	b.ReportMetric(notRouted, "ns/getpid-notrouted")
	b.ReportMetric(routed/baseRouted, "x-routed")
	b.ReportMetric(notRouted/baseNot, "x-notrouted")
}

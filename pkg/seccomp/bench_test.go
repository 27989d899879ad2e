package seccomp

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchEnv carries the iteration count to the bench child.
const benchEnv = "BPFD_SECCOMP_BENCH_N"

// benchChild measures syscall latency inside one process, before and after it
// filters itself, and prints the total nanoseconds of each loop:
//
//	getpid unfiltered, getppid unfiltered, getpid filtered (not routed),
//	getppid filtered (routed, answered by the parent)
//
// The loop must run in the filtered process, so the child measures.
func benchChild() int {
	n, err := strconv.Atoi(os.Getenv(benchEnv))
	if err != nil || n <= 0 {
		fmt.Fprintf(os.Stderr, "bad %s\n", benchEnv)
		return 2
	}
	loop := func(nr uintptr) int64 {
		start := time.Now()
		for range n {
			unix.RawSyscall(nr, 0, 0, 0)
		}
		return time.Since(start).Nanoseconds()
	}
	loop(unix.SYS_GETPID) // warm up
	a := loop(unix.SYS_GETPID)
	a2 := loop(unix.SYS_GETPPID)
	if _, err := Install([]uint32{unix.SYS_GETPPID}, false); err != nil {
		fmt.Fprintf(os.Stderr, "install: %v\n", err)
		return 1
	}
	unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0) // waits until the parent serves
	b := loop(unix.SYS_GETPID)
	c := loop(unix.SYS_GETPPID)
	fmt.Printf("%d %d %d %d\n", a, a2, b, c)
	return 0
}

// BenchmarkSyscallLatency reports, in one run and one child process, the
// latency of getpid without a filter, getpid under the filter but not routed,
// and a routed getppid answered "allow" (SECCOMP_USER_NOTIF_FLAG_CONTINUE) by
// Serve in this process, against getppid without a filter. b.N is the
// iteration count of each loop; the built-in ns/op also covers spawning the
// child. allocs/op counts this process's allocations, i.e. Serve's per
// notification.
func BenchmarkSyscallLatency(b *testing.B) {
	requireNotifyB(b)
	b.ReportAllocs()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"=bench", benchEnv+"="+strconv.Itoa(b.N))
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	fd, err := TakeListener(cmd.Process.Pid, 10*time.Second)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		b.Fatal(err)
	}
	l, err := NewListener(fd)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		b.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		done <- l.Serve(context.Background(), func(*Notif, *Task) Verdict { return Allow })
	}()
	if err := cmd.Wait(); err != nil {
		b.Fatalf("child: %v: %s", err, errOut.String())
	}
	if err := <-done; err != nil {
		b.Fatalf("Serve: %v", err)
	}
	var a, a2, fb, c float64
	if _, err := fmt.Sscan(out.String(), &a, &a2, &fb, &c); err != nil {
		b.Fatalf("child output %q: %v", out.String(), err)
	}
	n := float64(b.N)
	b.ReportMetric(a/n, "ns/getpid-nofilter")
	b.ReportMetric(fb/n, "ns/getpid-notrouted")
	b.ReportMetric(a2/n, "ns/getppid-nofilter")
	b.ReportMetric(c/n, "ns/getppid-routed")
	b.ReportMetric(fb/a, "x-notrouted/nofilter")
	b.ReportMetric(c/a2, "x-routed/nofilter")
}

func requireNotifyB(b *testing.B) {
	b.Helper()
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptrOf(&action)); e != 0 {
		b.Skipf("seccomp user notification unavailable: %v", e)
	}
}

package seccomp

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// roleEnv makes the test binary, executed as a filtered command, play a child
// role instead of running tests.
const roleEnv = "BPFD_SECCOMP_TEST_ROLE"

func TestMain(m *testing.M) {
	ShimMain() // the test binary is also the shim
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	// Start the netpoller (its epoll fd and wake-up pipe) before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := fdList()
	code := m.Run()
	if code == 0 {
		// Give exec.Cmd goroutines and finalizers a moment.
		deadline := time.Now().Add(2 * time.Second)
		after := fdList()
		for len(after) > len(before) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			after = fdList()
		}
		if len(after) != len(before) {
			fmt.Fprintf(os.Stderr, "FAIL: leaked fds: before %v\nafter %v\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

// fdList lists this process's fds with their link targets.
func fdList() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range ents {
		link, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"->"+link)
	}
	return out
}

// runRole runs a child role in a filtered process and returns its exit code.
func runRole(role string) int {
	switch role {
	case "sockets":
		probeSockets()
		return 0
	case "wait":
		// Block until stdin closes, then make one routed syscall.
		bufio.NewReader(os.Stdin).ReadString('\n')
		probeSockets()
		return 0
	case "x32":
		// getpid through the x32 syscall number space: the filter kills.
		unix.Syscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
		fmt.Println("survived")
		return 0
	case "bench":
		return benchChild()
	}
	if fn, ok := escapeRoles[role]; ok {
		return fn()
	}
	fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
	return 2
}

// probeSockets prints one line per address family with the outcome of
// socket(2), then what it sees of seccomp in its own process.
func probeSockets() {
	for _, fam := range []struct {
		name string
		af   int
	}{{"AF_INET", unix.AF_INET}, {"AF_INET6", unix.AF_INET6}, {"AF_UNIX", unix.AF_UNIX}} {
		fd, err := unix.Socket(fam.af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Printf("%s %v\n", fam.name, err)
			continue
		}
		unix.Close(fd)
		fmt.Printf("%s ok\n", fam.name)
	}
	n := 0
	for _, l := range fdList() {
		if strings.HasSuffix(l, "->"+listenerLink) {
			n++
		}
	}
	fmt.Printf("listener-fds %d\n", n)
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "Seccomp:" || f[0] == "NoNewPrivs:") {
			fmt.Printf("%s %s\n", f[0], f[1])
		}
	}
}

// parseLines turns "KEY VALUE..." lines into a map.
func parseLines(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		m[k] = v
	}
	return m
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the child as uid 65534 (CAP_SETUID, CAP_SETGID)")
	}
}

// requireNotify skips when the kernel lacks seccomp user notification.
func requireNotify(t *testing.T) {
	t.Helper()
	// SECCOMP_GET_ACTION_AVAIL for SECCOMP_RET_USER_NOTIF.
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptrOf(&action))
	if e != 0 {
		t.Skipf("seccomp user notification unavailable: %v", e)
	}
}

func itoa(n int) string           { return strconv.Itoa(n) }
func uintptrOf(p *uint32) uintptr { return uintptr(unsafe.Pointer(p)) }

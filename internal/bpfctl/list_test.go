package bpfctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Child roles of list_test.go (see runChild).
const (
	// holdRole holds its inherited descriptors, writes its pid to
	// $BPFCTL_TEST_DIR/ready and exits when $BPFCTL_TEST_DIR/go exists.
	holdRole = "hold"
	// sockHoldRole makes socket(AF_INET6) and socket(AF_INET) calls,
	// then holds as holdRole.
	sockHoldRole = "sockets-hold"
)

func childHold(sockets bool) int {
	dir := os.Getenv("BPFCTL_TEST_DIR")
	if sockets {
		for _, fam := range []int{unix.AF_INET6, unix.AF_INET, unix.AF_INET6} {
			if fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
				unix.Close(fd)
			}
		}
	}
	os.WriteFile(filepath.Join(dir, "ready.tmp"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	os.Rename(filepath.Join(dir, "ready.tmp"), filepath.Join(dir, "ready"))
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
			return 0
		}
	}
	return 9
}

// startHolder runs args (an exec or seccomp exec of this test binary in
// role) in the background; it returns the child's pid once it is ready,
// and a function that lets it finish and returns bpfctl's result.
func startHolder(t *testing.T, d *daemon, role string, args ...string) (int32, func() result) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(childRoleEnv, role)
	t.Setenv("BPFCTL_TEST_DIR", dir)
	done := make(chan result, 1)
	go func() { done <- d.run(t, append(args, "--", os.Args[0], "-test.run=^$")...) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "ready"))
		if err == nil {
			pid, _ := strconv.Atoi(string(b))
			return int32(pid), func() result {
				os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
				return <-done
			}
		}
		select {
		case r := <-done:
			t.Fatalf("child ended before it was ready: %+v", r)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("child never ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShowHolders: map show names the processes holding descriptors of a
// map, and prog show and status show a live seccomp attachment's decision
// counters, gone when the filtered process is.
func TestShowHolders(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "prog", "load", "../../testdata/bpf/seccomp_policy.bpf.o", "--pin-dir", "sec")
	d.mustRun(t, "map", "create", "array", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "m")

	pid, finish := startHolder(t, d, holdRole, "exec", "--map", "m", "--map", "x=sec/counts")
	var m mapRecordJSON
	if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "map", "show", "m").stdout), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Pids) != 1 || m.Pids[0].PID != pid || m.Pids[0].Comm == "" || m.Descriptors < 1 {
		t.Fatalf("holders of m: %+v, want the child %d", m, pid)
	}
	if out := d.mustRun(t, "map", "show", "name", "counts").stdout; !strings.Contains(out, "\tpids "+m.Pids[0].Comm+"("+strconv.Itoa(int(pid))+")\n") {
		t.Fatalf("map show name counts:\n%s", out)
	}
	if r := finish(); r.code != 0 {
		t.Fatalf("holder: %+v", r)
	}
	d.settle(t)
	if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "map", "show", "m").stdout), &m); err != nil || len(m.Pids) != 0 {
		t.Fatalf("holders after the child exited: %+v %v", m.Pids, err)
	}

	_, finish = startHolder(t, d, sockHoldRole, "seccomp", "exec", "--filter", "sec/policy", "--syscalls", "socket")
	var p progRecordJSON
	if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "prog", "show", "sec/policy").stdout), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Seccomp) != 1 {
		t.Fatalf("seccomp attachments: %+v", p)
	}
	s := p.Seccomp[0]
	if s.Routed != 3 || s.Allowed != 1 || s.Denied["EPERM"] != 2 || s.Killed != 0 || s.PID != int32(os.Getpid()) || p.RunCnt != 3 {
		t.Fatalf("seccomp counters %+v (run_cnt %d); want 3 routed, 1 allowed, 2 EPERM, attached by pid %d", s, p.RunCnt, os.Getpid())
	}
	out := d.mustRun(t, "prog", "show", "sec/policy").stdout
	if !strings.Contains(out, "routed 3  allowed 1  denied EPERM:2  killed 0") {
		t.Fatalf("prog show:\n%s", out)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "status").stdout), &st); err != nil || len(st.Seccomp) != 1 ||
		st.Seccomp[0].Denied["EPERM"] != 2 || st.Seccomp[0].ProgName != "policy" {
		t.Fatalf("status seccomp: %+v %v", st.Seccomp, err)
	}
	if out := d.mustRun(t, "status").stdout; !strings.Contains(out, "policy") || !strings.Contains(out, "EPERM:2") {
		t.Fatalf("status:\n%s", out)
	}
	if r := finish(); r.code != 0 {
		t.Fatalf("filtered child: %+v", r)
	}
	// The attachment ends when the daemon sees no task uses the filter.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		p = progRecordJSON{}
		if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "prog", "show", "sec/policy").stdout), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Seccomp) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attachment still listed after the child exited: %+v", p.Seccomp)
		}
	}
	if p.RunCnt != 3 {
		t.Fatalf("run_cnt %d after the attachment ended, want 3", p.RunCnt)
	}
}

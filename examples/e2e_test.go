// Package examples_test runs the five scenario examples end to end: it
// builds bpfd and every example, starts bpfd on a private socket, runs each
// example binary against it as a user would (the untrusted sides run as
// uid 65534 when the test runs as root), checks what each printed, and
// checks that the daemon freed every object and exits cleanly on SIGTERM.
package examples_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// raceEnv keeps binaries built with -race from sleeping a second at exit
// (the race runtime's default), which would add seconds to every example.
const raceEnv = "GORACE=atexit_sleep_ms=0"

// examples are the example directories, in scenario order.
var examples = []string{
	"01-seccomp-deny",
	"02-readonly-policy",
	"03-syscall-counts",
	"04-trusted-writer",
	"05-port-filter",
}

// TestExamples is the end-to-end acceptance test of the five scenarios
// (DESIGN.md, "The five scenarios").
func TestExamples(t *testing.T) {
	requireUserNotif(t)
	dir := publicTempDir(t)
	build(t, dir)
	sock := startDaemon(t, dir)

	uid := "[uid " + fmt.Sprint(os.Getuid()) + "]"
	if os.Geteuid() == 0 {
		uid = "[uid 65534]"
	}
	// want lists, in order, regular expressions that whole output lines
	// must match; L quotes a literal line, with {uid} standing for the
	// untrusted side's "[uid N]".
	L := func(s string) string { return "^" + regexp.QuoteMeta(strings.ReplaceAll(s, "{uid}", uid)) + "$" }
	tests := []struct {
		name string
		want []string
		// exact: the output has no other lines.
		exact bool
	}{
		{
			name: "01-seccomp-deny",
			want: []string{
				L(`loaded seccomp program "deny_inet6" (seccomp) into bpfd`),
				L(`without the filter:`),
				L(`  {uid} socket(AF_INET, SOCK_DGRAM) = ok`),
				// The kernel may lack IPv6; the filter's answer does not depend on it.
				"^" + regexp.QuoteMeta("  "+uid+" socket(AF_INET6, SOCK_DGRAM) = ") + "(ok|EAFNOSUPPORT)$",
				L(`  {uid} socket(AF_UNIX, SOCK_DGRAM) = ok`),
				L(`under the filter, socket() routed to bpfd:`),
				L(`  {uid} socket(AF_INET, SOCK_DGRAM) = ok`),
				L(`  {uid} socket(AF_INET6, SOCK_DGRAM) = EPERM`),
				L(`  {uid} socket(AF_UNIX, SOCK_DGRAM) = ok`),
			},
			exact: true,
		},
		{
			name: "02-readonly-policy",
			want: []string{
				L(`policy: socket (41) -> EACCES`),
				L(`policy: mkdirat (258) -> EROFS`),
				L(`read-only descriptor: mode r; update through it = EPERM`),
				L(`load "filter" (reads policy) through the read-only descriptor: ok`),
				L(`load "tamper" (writes policy) through the read-only descriptor: EACCES`),
				// The log names the instruction, disassembled, and the source line.
				`^  verifier: ; (.*/)?policy\.bpf\.c:\d+: \*err = 0;`,
				`^  verifier: \d+: \(63\) \*\(u32 \*\)\(r0 \+0\) = r1: write into map 'policy' denied: program's handle has read-only access$`,
				L(`under the filter, socket, mkdirat and uname routed to bpfd:`),
				L(`  {uid} socket(AF_INET, SOCK_STREAM) = EACCES`),
				L(`  {uid} mkdir("/nonexistent/bpfd-example") = EROFS`),
				L(`  {uid} uname() = ok`),
			},
		},
		{
			name: "03-syscall-counts",
			want: []string{
				L(`running the counter under the filter (routed: [getppid getcwd]), with a read-only descriptor of "counts" as fd 3`),
				L(`  {uid} called getppid 3 times and getcwd 2 times`),
				L(`  {uid} imported fd 3: map "counts", mode r`),
				L(`  {uid} reads: counts[getppid] = 3`),
				L(`  {uid} reads: counts[getcwd] = 2`),
				L(`  {uid} update counts[getppid] = 0: EPERM`),
				L(`  {uid} reopen read-write: EPERM`),
				L(`loader reads: counts[getppid] = 3`),
				L(`loader reads: counts[getcwd] = 2`),
			},
			exact: true,
		},
		{
			name: "04-trusted-writer",
			want: []string{
				L(`policy is empty`),
				L(`  {uid} socket(AF_INET, SOCK_STREAM) = ok`),
				L(`writer: policy[socket] = EACCES`),
				L(`  {uid} socket(AF_INET, SOCK_STREAM) = EACCES`),
				L(`writer: policy[socket] = ENETDOWN`),
				L(`  {uid} socket(AF_INET, SOCK_STREAM) = ENETDOWN`),
				L(`writer: delete policy[socket]`),
				L(`  {uid} socket(AF_INET, SOCK_STREAM) = ok`),
			},
			exact: true,
		},
		{
			name: "05-port-filter",
			want: []string{
				L(`loaded xdp program "port_filter"; ports map created`),
				L(`sent the editor a write-only descriptor of "ports"`),
				L(`  {uid} holds one descriptor: a Hash map, mode w`),
				L(`  {uid} lookup(443) = EPERM`),
				L(`  {uid} next key = EPERM`),
				L(`  {uid} dump = EPERM`),
				L(`  {uid} use its descriptor as a program = EINVAL`),
				L(`  {uid} load a program that looks up "ports" = EACCES`),
				`^` + regexp.QuoteMeta(`  `+uid+`   verifier: `) + `\d+: \(85\) call bpf_map_lookup_elem#1: .*denied: program's handle has write-only access$`,
				L(`  ports []: tcp4:443=DROP udp4:53=DROP tcp6:443=DROP udp6:53=DROP tcp6:22=DROP`),
				L(`editor: add 443`),
				L(`  ports [443]: tcp4:443=PASS udp4:53=DROP tcp6:443=PASS udp6:53=DROP tcp6:22=DROP`),
				L(`editor: add 53`),
				L(`  ports [53 443]: tcp4:443=PASS udp4:53=PASS tcp6:443=PASS udp6:53=PASS tcp6:22=DROP`),
				L(`editor: del 443`),
				L(`  ports [53]: tcp4:443=DROP udp4:53=PASS tcp6:443=DROP udp6:53=PASS tcp6:22=DROP`),
			},
			exact: true,
		},
	}
	if len(tests) != len(examples) {
		t.Fatalf("%d expectations for %d examples", len(tests), len(examples))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runExample(t, filepath.Join(dir, tt.name), sock)
			checkOutput(t, out, tt.want, tt.exact)
		})
	}

	// Everything the examples made is gone once they have exited: their
	// descriptors closed, their connections and their filtered processes'
	// attachments ended. The daemon learns of some of it asynchronously
	// (hangups), so poll for a while.
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	freed := func(st client.Status) bool {
		return st.Objects == 0 && st.Maps == 0 && st.MapMemory == 0 &&
			st.Descriptors == 0 && st.Handles == 0 && st.Connections == 1 // this one
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status()
		if err != nil {
			t.Fatal(err)
		}
		if freed(st) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bpfd still holds resources after every example exited: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireUserNotif skips the test when the kernel lacks seccomp user
// notification (SECCOMP_GET_ACTION_AVAIL for SECCOMP_RET_USER_NOTIF), on
// which scenarios 1-4 rest.
func requireUserNotif(t *testing.T) {
	t.Helper()
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action)))
	if e != 0 {
		t.Skipf("seccomp user notification unavailable (SECCOMP_GET_ACTION_AVAIL: %v): the examples need it", e)
	}
}

// publicTempDir returns a temporary directory that uid 65534 can search,
// for the binaries and bpfd's socket, removed at the end of the test.
func publicTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bpfd-examples-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// build compiles bpfd and every example into dir (with the race detector
// when the test has it).
func build(t *testing.T, dir string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	pkgs := []string{"./cmd/bpfd"}
	for _, e := range examples {
		pkgs = append(pkgs, "./examples/"+e)
	}
	args := append(append([]string{"build"}, buildFlags...), "-o", dir+"/")
	cmd := exec.Command(goTool, append(args, pkgs...)...)
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// startDaemon starts bpfd from dir on a socket in dir, with its own pin root
// and state directory, waits until it answers, and returns the socket
// path. Cleanup stops it with SIGTERM and fails the test unless it exits
// with status 0; its log is shown if the test failed.
func startDaemon(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "run", "bpfd.sock")
	var log bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, "bpfd"), "--socket", sock,
		"--pin-root", filepath.Join(dir, "pins"), "--state-dir", filepath.Join(dir, "state"))
	cmd.Env = append(os.Environ(), raceEnv)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		defer func() {
			if t.Failed() {
				t.Logf("bpfd log:\n%s", log.String())
			}
		}()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM bpfd: %v", err)
			return
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("bpfd did not exit cleanly on SIGTERM: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("bpfd did not exit within 10s of SIGTERM")
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := client.Dial(sock)
		if err == nil {
			c.Close()
			return sock
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("bpfd exited at start: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bpfd does not answer on %s: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runExample runs the example binary bin against the daemon at sock and
// returns its standard output; it fails the test if the example fails or
// takes longer than 30 seconds.
func runExample(t *testing.T, bin, sock string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), client.SocketEnv+"="+sock, raceEnv)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second // the untrusted children share the pipes
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s timed out\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), stdout.String(), stderr.String())
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		t.Fatalf("%s failed: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), err, stdout.String(), stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("%s wrote to stderr:\n%s", filepath.Base(bin), stderr.String())
	}
	return stdout.String()
}

// checkOutput checks that out's lines match want's regular expressions in
// order (and that there are no other lines, if exact).
func checkOutput(t *testing.T, out string, want []string, exact bool) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if exact && len(lines) != len(want) {
		t.Fatalf("output has %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	i := 0
	for _, w := range want {
		re := regexp.MustCompile(w)
		for i < len(lines) && !re.MatchString(lines[i]) {
			if exact {
				t.Fatalf("line %d is %q, want a match for %s\noutput:\n%s", i+1, lines[i], w, out)
			}
			i++
		}
		if i == len(lines) {
			t.Fatalf("no line (in order) matches %s\noutput:\n%s", w, out)
		}
		i++
	}
}

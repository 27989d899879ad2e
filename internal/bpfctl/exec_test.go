package bpfctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// childRoleEnv names the role a re-executed test binary plays.
const childRoleEnv = "BPFCTL_TEST_ROLE"

// runChild is the re-executed test binary: it plays role and returns its
// exit code.
func runChild(role string) int {
	switch role {
	case "inherit":
		return childInherit()
	case "inherit-check":
		list, err := client.InheritedDescriptors()
		_, fdsSet := os.LookupEnv(client.InheritFDsEnv)
		_, namesSet := os.LookupEnv(client.InheritNamesEnv)
		if fdsSet || namesSet {
			fmt.Println("env still set")
			return 1
		}
		if err != nil {
			fmt.Printf("err %s\n", unix.ErrnoName(errnoOf(err)))
			return 0
		}
		var names []string
		for _, in := range list {
			flags, err := unix.FcntlInt(uintptr(in.FD), unix.F_GETFD, 0)
			if err != nil || flags&unix.FD_CLOEXEC == 0 {
				fmt.Printf("fd %d not close-on-exec\n", in.FD)
				return 1
			}
			names = append(names, fmt.Sprintf("%s=%d", in.Name, in.FD))
		}
		fmt.Printf("ok [%s]\n", strings.Join(names, " "))
		return 0
	case holdRole:
		return childHold(false)
	case sockHoldRole:
		return childHold(true)
	case "kill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "sockets":
		for _, f := range []struct {
			name   string
			family int
		}{{"inet", unix.AF_INET}, {"inet6", unix.AF_INET6}, {"unix", unix.AF_UNIX}} {
			fd, err := unix.Socket(f.family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				fmt.Printf("%s %s\n", f.name, unix.ErrnoName(err.(unix.Errno)))
				continue
			}
			unix.Close(fd)
			fmt.Printf("%s ok\n", f.name)
		}
		list, err := client.InheritedDescriptors()
		fmt.Printf("inherited %d %v\n", len(list), err)
		return 3
	}
	fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
	return 100
}

// childInherit receives "counts" (read-only) and "rw" (read-write) from
// bpfctl exec, reads through the first, fails to write through it, writes
// through the second and exits 7.
func childInherit() int {
	list, err := client.InheritedDescriptors()
	if err != nil {
		fmt.Println("InheritedDescriptors:", err)
		return 1
	}
	for _, in := range list {
		fmt.Printf("inherited %s fd %d\n", in.Name, in.FD)
	}
	c, err := client.Dial("") // $BPFD_SOCKET, set by bpfctl exec
	if err != nil {
		fmt.Println("Dial:", err)
		return 1
	}
	defer c.Close()
	ro, err := c.ImportInherited("counts")
	if err != nil {
		fmt.Println("ImportInherited counts:", err)
		return 1
	}
	defer ro.Close()
	key, value := make([]byte, 4), make([]byte, 8)
	if err := ro.Lookup(key, value); err != nil {
		fmt.Println("Lookup:", err)
		return 1
	}
	fmt.Printf("counts mode %s value %d\n", ro.Mode(), binary.LittleEndian.Uint64(value))
	binary.LittleEndian.PutUint64(value, 41)
	err = ro.Update(key, value, client.UpdateAny)
	fmt.Printf("update through counts: EPERM=%v\n", errors.Is(err, unix.EPERM))
	rw, err := c.ImportInherited("rw")
	if err != nil {
		fmt.Println("ImportInherited rw:", err)
		return 1
	}
	defer rw.Close()
	binary.LittleEndian.PutUint64(value, 42)
	if err := rw.Update(key, value, client.UpdateAny); err != nil {
		fmt.Println("Update rw:", err)
		return 1
	}
	fmt.Printf("rw mode %s updated\n", rw.Mode())
	_, err = c.ImportInherited("nosuch")
	fmt.Printf("nosuch: ErrNotInherited=%v\n", errors.Is(err, client.ErrNotInherited))
	return 7
}

func TestExecPassesDescriptors(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "map", "create", "array", "--key-size", "4", "--value-size", "8", "--max-entries", "1", "--pin", "cnt")
	d.mustRun(t, "map", "update", "cnt", "--key-u32", "0", "--value-u64", "5")
	t.Setenv(childRoleEnv, "inherit")
	r := d.run(t, "exec", "--map", "counts=cnt:r", "--map", "rw=cnt:rw", "--", os.Args[0], "-test.run=^$")
	want := "inherited counts fd 3\ninherited rw fd 4\ncounts mode r value 5\nupdate through counts: EPERM=true\n" +
		"rw mode rw updated\nnosuch: ErrNotInherited=true\n"
	if r.code != 7 || r.stdout != want {
		t.Fatalf("exec: exit %d (want the child's 7)\nstdout:\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}
	r = d.mustRun(t, "map", "lookup", "cnt", "--key-u32", "0")
	if r.stdout != "key: 00 00 00 00  value: 2a 00 00 00 00 00 00 00\n" {
		t.Errorf("after the child's write: %q", r.stdout)
	}
}

func TestExecExitCodes(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "map", "create", "hash", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "m", "--file-mode", "0600")
	d.mustRun(t, "map", "create", "hash", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "other")
	d.mustRun(t, "reopen", "m", "--mode", "r", "--pin", "m.ro")
	tests := []struct {
		name string
		role string
		args []string
		code int
		out  string
	}{
		{name: "true", args: []string{"exec", "--", "true"}, code: 0},
		{name: "false", args: []string{"exec", "--", "false"}, code: 1},
		{name: "exit status", args: []string{"exec", "--map", "m", "--", "sh", "-c", "exit 42"}, code: 42},
		{name: "env", args: []string{"exec", "--map", "m", "--map", "x=other:rw", "--", "sh", "-c", `echo $BPFD_FDS $BPFD_FDNAMES`}, code: 0, out: "2 m:x\n"},
		{name: "no command", args: []string{"exec", "--", "/nonexistent/cmd"}, code: ExitNoCommand},
		{name: "not executable", args: []string{"exec", "--", "/dev/null"}, code: ExitCannotExec},
		{name: "signal", role: "kill", args: []string{"exec", "--", os.Args[0], "-test.run=^$"}, code: 128 + 9},
		{name: "duplicate name", args: []string{"exec", "--map", "m", "--map", "m", "--", "true"}, code: ExitUsage},
		{name: "bad mode", args: []string{"exec", "--map", "m:rwx", "--", "true"}, code: ExitUsage},
		{name: "more than the pin grants", args: []string{"exec", "--map", "m.ro:rw", "--", "true"}, code: ExitFailed},
		{name: "no such pin", args: []string{"exec", "--map", "nosuch", "--", "true"}, code: ExitFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.role != "" {
				t.Setenv(childRoleEnv, tc.role)
			}
			r := d.run(t, tc.args...)
			if r.code != tc.code || (tc.out != "" && r.stdout != tc.out) {
				t.Errorf("exit %d, want %d; stdout %q (want %q); stderr %q", r.code, tc.code, r.stdout, tc.out, r.stderr)
			}
		})
	}
}

// TestInheritedDescriptors runs client.InheritedDescriptors in a child
// with hand-made environments.
func TestInheritedDescriptors(t *testing.T) {
	sock, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s0, s1 := os.NewFile(uintptr(sock[0]), "s0"), os.NewFile(uintptr(sock[1]), "s1")
	defer s0.Close()
	defer s1.Close()
	reg, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	tests := []struct {
		name  string
		env   []string
		files []*os.File
		want  string
	}{
		{name: "unset", want: "ok []\n"},
		{name: "zero", env: []string{"BPFD_FDS=0"}, want: "ok []\n"},
		{name: "named", env: []string{"BPFD_FDS=2", "BPFD_FDNAMES=a:b"}, files: []*os.File{s0, s1}, want: "ok [a=3 b=4]\n"},
		{name: "unnamed", env: []string{"BPFD_FDS=2"}, files: []*os.File{s0, s1}, want: "ok [fd3=3 fd4=4]\n"},
		{name: "empty name", env: []string{"BPFD_FDS=2", "BPFD_FDNAMES=:b"}, files: []*os.File{s0, s1}, want: "ok [fd3=3 b=4]\n"},
		{name: "bad count", env: []string{"BPFD_FDS=x"}, want: "err EINVAL\n"},
		{name: "negative count", env: []string{"BPFD_FDS=-1"}, want: "err EINVAL\n"},
		{name: "names mismatch", env: []string{"BPFD_FDS=2", "BPFD_FDNAMES=a"}, files: []*os.File{s0, s1}, want: "err EINVAL\n"},
		{name: "fd not open", env: []string{"BPFD_FDS=3"}, files: []*os.File{s0, s1}, want: "err EBADF\n"},
		{name: "not a socket", env: []string{"BPFD_FDS=1"}, files: []*os.File{reg}, want: "err EBADF\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(execEnvWithout(os.Environ()), append(tc.env, childRoleEnv+"=inherit-check")...)
			cmd.ExtraFiles = tc.files
			out, err := cmd.CombinedOutput()
			if err != nil || string(out) != tc.want {
				t.Errorf("child: %v, output %q, want %q", err, out, tc.want)
			}
		})
	}
}

// execEnvWithout drops inheritance variables from env.
func execEnvWithout(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "BPFD_FD") {
			out = append(out, kv)
		}
	}
	return out
}

// TestSeccompExec runs a child under the seccomp_policy fixture through
// bpfctl seccomp exec: socket(AF_INET6) gets EPERM, the child's exit code
// comes back, a read-only map reaches it, and the calls were counted.
func TestSeccompExec(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "prog", "load", "../../testdata/bpf/seccomp_policy.bpf.o", "--pin-dir", "sec")
	t.Setenv(childRoleEnv, "sockets")
	r := d.run(t, "seccomp", "exec", "--filter", "sec/policy", "--syscalls", "socket", "--map", "counts=sec/counts:r",
		"--", os.Args[0], "-test.run=^$")
	want := "inet ok\ninet6 EPERM\nunix ok\ninherited 1 <nil>\n"
	if r.code != 3 || r.stdout != want {
		t.Fatalf("seccomp exec: exit %d (want the child's 3)\nstdout:\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}
	r = d.mustRun(t, "map", "lookup", "sec/counts", "--key-u32", "41")
	if r.stdout != "{\n    \"key\": 41,\n    \"value\": 3\n}\n" {
		t.Errorf("socket calls counted: %q", r.stdout)
	}
	d.mustRun(t, "prog", "load", "--type", "socket_filter", "--asm", "testdata/count.s", "--map", "0=sec/counts", "--pin", "sf")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // a part of stderr
	}{
		{name: "no syscalls", args: []string{"seccomp", "exec", "--filter", "sec/policy", "--", "true"}, code: ExitUsage},
		{name: "no filter", args: []string{"seccomp", "exec", "--all", "--", "true"}, code: ExitUsage, stderr: "--filter PIN is required"},
		{name: "--prog for the filter", args: []string{"seccomp", "exec", "--prog", "sec/policy", "--all", "--", "true"}, code: ExitUsage,
			stderr: "--prog passes program descriptors to CMD"},
		{name: "unknown syscall", args: []string{"seccomp", "exec", "--filter", "sec/policy", "--syscalls", "socket,sockte", "--", "true"},
			code: ExitUsage, stderr: `unknown syscall "sockte": did you mean "socket"?`},
		{name: "syscall number not in the table", args: []string{"seccomp", "exec", "--filter", "sec/policy", "--syscalls", "999", "--", "true"},
			code: ExitUsage, stderr: "999 is not an x86_64 syscall number"},
		{name: "not a program", args: []string{"seccomp", "exec", "--filter", "sec/counts", "--syscalls", "socket", "--", "true"}, code: ExitFailed},
		{name: "not a seccomp program", args: []string{"seccomp", "exec", "--filter", "sf", "--syscalls", "socket", "--", "true"},
			code: ExitFailed, stderr: "sf is a socket_filter program, not a seccomp one"},
		{name: "command not found", args: []string{"seccomp", "exec", "--filter", "sec/policy", "--syscalls", "socket", "--", "/nonexistent/cmd"},
			code: ExitNoCommand, stderr: "no such file or directory"},
		{name: "command not executable", args: []string{"seccomp", "exec", "--filter", "sec/policy", "--syscalls", "socket", "--", "/dev/null"},
			code: ExitCannotExec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(t, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", r.code, tc.code, r.stderr, tc.stderr)
			}
		})
	}
}

func TestDestroy(t *testing.T) {
	d := startDaemon(t)
	d.mustRun(t, "map", "create", "array", "--key-size", "4", "--value-size", "4", "--max-entries", "1", "--pin", "m", "--file-mode", "0644")
	d.mustRun(t, "reopen", "m", "--mode", "r", "--pin", "m.ro")
	if r := d.run(t, "destroy", "m.ro"); r.code != ExitFailed {
		t.Fatalf("destroy through a read-only pin: exit %d, want %d; %s", r.code, ExitFailed, r.stderr)
	}
	d.mustRun(t, "destroy", "m")
	for _, pin := range []string{"m", "m.ro"} {
		if r := d.run(t, "map", "show", pin); r.code == 0 {
			t.Errorf("pin %s still works after destroy: %s", pin, r.stdout)
		}
	}
}

package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childSockProbe makes the syscalls the seccomp tests route and prints
// what each returned.
func childSockProbe() error {
	var out []string
	for _, f := range []struct {
		name   string
		family int
	}{{"inet", unix.AF_INET}, {"inet6", unix.AF_INET6}, {"unix", unix.AF_UNIX}} {
		fd, err := unix.Socket(f.family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			out = append(out, f.name+"="+unix.ErrnoName(err.(unix.Errno)))
			continue
		}
		unix.Close(fd)
		out = append(out, f.name+"=ok")
	}
	_, _, e := unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
	if e != 0 {
		out = append(out, "getppid="+unix.ErrnoName(e))
	} else {
		out = append(out, "getppid=ok")
	}
	fmt.Println(strings.Join(out, " "))
	return nil
}

// TestStartSeccomp runs a child under the seccomp_policy fixture: socket
// (AF_INET6) gets EPERM, other families work, a syscall in the "denied"
// map gets the errno stored there, and every routed syscall is counted.
func TestStartSeccomp(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	coll, err := c.LoadCollection(fixture("seccomp_policy"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	policy := coll.Programs["policy"]
	if policy.Type() != Seccomp {
		t.Fatalf("policy has type %v", policy.Type())
	}
	denied := coll.Maps["denied"]
	if err := denied.Update(u32le(unix.SYS_GETPPID), u32le(uint32(unix.EACCES)), UpdateAny); err != nil {
		t.Fatal(err)
	}

	cmd := sameUserChild(t, "sockprobe", nil)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	run, err := policy.StartSeccomp(cmd, &SeccompOptions{Syscalls: []string{"socket", "getppid"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	if got, want := strings.TrimSpace(out.String()), "inet=ok inet6=EPERM unix=ok getppid=EACCES"; got != want {
		t.Fatalf("child saw %q, want %q", got, want)
	}
	v := make([]byte, 8)
	if err := coll.Maps["counts"].Lookup(u32le(unix.SYS_SOCKET), v); err != nil || binary.LittleEndian.Uint64(v) != 3 {
		t.Fatalf("socket calls counted: %d, %v; want 3", binary.LittleEndian.Uint64(v), err)
	}
	// Once the child is gone the attachment ends and releases the program.
	deadline := time.Now().Add(10 * time.Second)
	for s.srv.Stats().Attachments != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the attachment outlived the filtered process")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAttachSeccompErrors covers what AttachSeccomp refuses.
func TestAttachSeccompErrors(t *testing.T) {
	c := newTestConn(t)
	coll, err := c.LoadCollection(fixture("seccomp_policy"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	sock, err := c.LoadCollection(fixture("loop"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	policy := coll.Programs["policy"]
	wo, err := policy.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	tests := []struct {
		name string
		p    *Program
		fd   int
		want error
	}{
		{"not a listener", policy, int(r.Fd()), ErrInvalid},
		{"not a seccomp program", sock.Programs["squares"], int(r.Fd()), ErrInvalid},
		{"no read mode", wo, int(r.Fd()), ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.p.AttachSeccomp(tt.fd); !errors.Is(err, tt.want) {
				t.Fatalf("AttachSeccomp = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := policy.StartSeccomp(exec.Command("/bin/true"), &SeccompOptions{Syscalls: []string{"no_such_call"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown syscall name: %v", err)
	}
}

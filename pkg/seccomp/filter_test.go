package seccomp

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyscallTable(t *testing.T) {
	tests := []struct {
		name string
		nr   uint32
	}{
		{"read", 0},
		{"write", 1},
		{"socket", 41},
		{"connect", 42},
		{"execve", 59},
		{"openat", 257},
		{"seccomp", 317},
		{"pidfd_getfd", 438},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nr, ok := SyscallNumber(tt.name)
			if !ok || nr != tt.nr {
				t.Fatalf("SyscallNumber(%q) = %d, %v; want %d", tt.name, nr, ok, tt.nr)
			}
			if got := SyscallName(tt.nr); got != tt.name {
				t.Fatalf("SyscallName(%d) = %q, want %q", tt.nr, got, tt.name)
			}
		})
	}
	if _, ok := SyscallNumber("no_such_syscall"); ok {
		t.Fatal("unknown name found")
	}
	// The table must agree with golang.org/x/sys for what both know.
	for name, nr := range map[string]uint32{"getpid": unix.SYS_GETPID, "ioctl": unix.SYS_IOCTL, "pidfd_open": unix.SYS_PIDFD_OPEN, "clone3": unix.SYS_CLONE3} {
		if got, ok := SyscallNumber(name); !ok || got != nr {
			t.Errorf("%s = %d, %v; x/sys says %d", name, got, ok, nr)
		}
	}
}

// TestSyscallTableGenerated checks that the committed table matches what the
// generator makes from the installed header.
func TestSyscallTableGenerated(t *testing.T) {
	const header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
	src, err := os.ReadFile(header)
	if err != nil {
		t.Skipf("no kernel header to compare with: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(src), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "#define" && strings.HasPrefix(f[1], "__NR_") {
			n++
			name := strings.TrimPrefix(f[1], "__NR_")
			nr, ok := SyscallNumber(name)
			if !ok || SyscallName(nr) == "" || itoa(int(nr)) != f[2] {
				t.Errorf("%s: table has %d, %v; header says %s", name, nr, ok, f[2])
			}
		}
	}
	if n != len(syscallTable) {
		t.Errorf("header has %d syscalls, table %d: run go generate", n, len(syscallTable))
	}
}

func TestParseSyscalls(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []uint32
		wantErr error
	}{
		{name: "names", in: "openat,connect", want: []uint32{257, 42}},
		{name: "spaces and blanks", in: " socket , ,read,", want: []uint32{41, 0}},
		{name: "numbers", in: "41,257", want: []uint32{41, 257}},
		{name: "duplicates", in: "socket,41,socket", want: []uint32{41}},
		{name: "empty", in: "", want: nil},
		{name: "unknown", in: "openat,frobnicate", wantErr: ErrUnknownSyscall},
		{name: "x32 number", in: "1073741824", wantErr: ErrBadSyscall},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSyscalls(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, unix.EINVAL) {
					t.Fatalf("err = %v, want %v (EINVAL)", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// runCBPF interprets the subset of classic BPF BuildFilter emits over a
// struct seccomp_data; it fails the test on anything else.
func runCBPF(t *testing.T, prog []unix.SockFilter, data []byte) uint32 {
	t.Helper()
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case bpfLdWAbs:
			a = binary.LittleEndian.Uint32(data[in.K:])
		case bpfJeqK, bpfJgeK, bpfJsetK:
			cond := a == in.K
			switch in.Code {
			case bpfJgeK:
				cond = a >= in.K
			case bpfJsetK:
				cond = a&in.K != 0
			}
			if cond {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case bpfRetK:
			return in.K
		default:
			t.Fatalf("pc %d: unexpected opcode %#x", pc, in.Code)
		}
	}
	t.Fatal("fell off the end of the program")
	return 0
}

func TestBuildFilter(t *testing.T) {
	const (
		notify = unix.SECCOMP_RET_USER_NOTIF
		allow  = unix.SECCOMP_RET_ALLOW
		kill   = unix.SECCOMP_RET_KILL_PROCESS
	)
	routed := []uint32{unix.SYS_SOCKET, unix.SYS_OPENAT, unix.SYS_CONNECT, unix.SYS_SOCKET}
	many := make([]uint32, 0, 400)
	for nr := uint32(0); nr < 400; nr += 2 {
		many = append(many, nr)
	}
	const eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	const i386 = 0x40000003 // AUDIT_ARCH_I386: int 0x80, sysenter, 32-bit syscall
	tests := []struct {
		name     string
		syscalls []uint32
		all      bool
		policy   Policy // its Syscalls and All are the fields above
		arch     uint32
		nr       uint32
		args     [2]uint64
		want     uint32
	}{
		{name: "routed socket", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_SOCKET, want: notify},
		{name: "routed openat", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_OPENAT, want: notify},
		{name: "not routed getpid", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_GETPID, want: allow},
		{name: "wrong arch i386", syscalls: routed, arch: 0x40000003, nr: unix.SYS_GETPID, want: kill},
		{name: "wrong arch routed nr", syscalls: routed, arch: 0x40000003, nr: unix.SYS_SOCKET, want: kill},
		{name: "x32 getpid", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | unix.SYS_GETPID, want: kill},
		{name: "x32 socket", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | unix.SYS_SOCKET, want: kill},
		{name: "nr -1 passes", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: 0xffffffff, want: allow},
		{name: "all routes getpid", all: true, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_GETPID, want: notify},
		{name: "all still kills x32", all: true, arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit, want: kill},
		{name: "all still kills arch", all: true, arch: 0x40000003, nr: 1, want: kill},
		{name: "many routed last", syscalls: many, arch: unix.AUDIT_ARCH_X86_64, nr: 398, want: notify},
		{name: "many not routed", syscalls: many, arch: unix.AUDIT_ARCH_X86_64, nr: 399, want: allow},
		{name: "many not routed high", syscalls: many, arch: unix.AUDIT_ARCH_X86_64, nr: 450, want: allow},
		{name: "i386 socketcall", syscalls: routed, arch: i386, nr: 102, want: kill},
		{name: "io_uring_setup refused", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_IO_URING_SETUP, want: eperm},
		{name: "io_uring_enter refused even in all", all: true, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_IO_URING_ENTER, want: eperm},
		{name: "io_uring_register refused", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_IO_URING_REGISTER, want: eperm},
		{name: "io_uring allowed", syscalls: routed, policy: Policy{AllowIOUring: true}, arch: unix.AUDIT_ARCH_X86_64,
			nr: unix.SYS_IO_URING_SETUP, want: allow},
		{name: "io_uring allowed and routed", all: true, policy: Policy{AllowIOUring: true}, arch: unix.AUDIT_ARCH_X86_64,
			nr: unix.SYS_IO_URING_SETUP, want: notify},
		{name: "seccomp with a new listener refused", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_SECCOMP,
			args: [2]uint64{unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_TSYNC}, want: eperm},
		{name: "seccomp listener flag in the high word ignored", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_SECCOMP,
			args: [2]uint64{unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER << 32}, want: allow},
		{name: "seccomp filter without a listener", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_SECCOMP,
			args: [2]uint64{unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC}, want: allow},
		{name: "seccomp other operation", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_SECCOMP,
			args: [2]uint64{unix.SECCOMP_GET_ACTION_AVAIL, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER}, want: allow},
		{name: "seccomp without a listener routed in all", all: true, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_SECCOMP,
			args: [2]uint64{unix.SECCOMP_SET_MODE_FILTER, 0}, want: notify},
		{name: "seccomp listener allowed", syscalls: routed, policy: Policy{AllowNestedListeners: true}, arch: unix.AUDIT_ARCH_X86_64,
			nr: unix.SYS_SECCOMP, args: [2]uint64{unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER}, want: allow},
		{name: "ptrace allowed by default", syscalls: routed, arch: unix.AUDIT_ARCH_X86_64, nr: unix.SYS_PTRACE, want: allow},
		{name: "ptrace denied without Landlock", syscalls: routed, policy: Policy{DenyPtrace: true}, arch: unix.AUDIT_ARCH_X86_64,
			nr: unix.SYS_PTRACE, want: eperm},
		{name: "process_vm_writev denied without Landlock", all: true, policy: Policy{DenyPtrace: true}, arch: unix.AUDIT_ARCH_X86_64,
			nr: unix.SYS_PROCESS_VM_WRITEV, want: eperm},
		{name: "pidfd_getfd denied without Landlock", syscalls: routed, policy: Policy{DenyPtrace: true}, arch: unix.AUDIT_ARCH_X86_64,
			nr: unix.SYS_PIDFD_GETFD, want: eperm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			p.Syscalls, p.All = tt.syscalls, tt.all
			prog, err := BuildPolicy(&p)
			if err != nil {
				t.Fatal(err)
			}
			if len(prog) > 4096 {
				t.Fatalf("program has %d instructions, more than BPF_MAXINSNS", len(prog))
			}
			var n Notif
			n.Data.NR = int32(tt.nr)
			n.Data.Arch = tt.arch
			n.Data.Args[0], n.Data.Args[1] = tt.args[0], tt.args[1]
			if got := runCBPF(t, prog, n.DataBytes()); got != tt.want {
				t.Fatalf("filter returned %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestBuildFilterErrors(t *testing.T) {
	tests := []struct {
		name     string
		syscalls []uint32
		wantErr  error
	}{
		{name: "nothing routed", syscalls: nil, wantErr: ErrNoSyscalls},
		{name: "x32 number", syscalls: []uint32{1, x32SyscallBit | 1}, wantErr: ErrBadSyscall},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := BuildFilter(tt.syscalls, false); !errors.Is(err, tt.wantErr) || !errors.Is(err, unix.EINVAL) {
				t.Fatalf("BuildFilter err = %v, want %v", err, tt.wantErr)
			}
			// Install fails the same way before touching the process.
			if _, err := Install(tt.syscalls, false); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Install err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "Seccomp:\t0") {
		t.Fatal("a failed Install left a filter on the test process")
	}
}

func TestVerdictFromRet(t *testing.T) {
	tests := []struct {
		name string
		ret  uint32
		want Verdict
	}{
		{"allow", unix.SECCOMP_RET_ALLOW, Allow},
		{"log", unix.SECCOMP_RET_LOG, Allow},
		{"errno EPERM", unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM), Deny(unix.EPERM)},
		{"errno 0", unix.SECCOMP_RET_ERRNO, Deny(0)},
		{"errno clamped", unix.SECCOMP_RET_ERRNO | 0xffff, Deny(4095)},
		{"kill process", unix.SECCOMP_RET_KILL_PROCESS, Kill},
		{"kill thread", unix.SECCOMP_RET_KILL_THREAD, Kill},
		{"trap", unix.SECCOMP_RET_TRAP | 5, Kill},
		{"trace", unix.SECCOMP_RET_TRACE, Kill},
		{"user notif", unix.SECCOMP_RET_USER_NOTIF, Kill},
		{"unknown action", 0x12340000, Kill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerdictFromRet(tt.ret); got != tt.want {
				t.Fatalf("VerdictFromRet(%#x) = %+v, want %+v", tt.ret, got, tt.want)
			}
		})
	}
}

func TestDataBytesLayout(t *testing.T) {
	n := Notif{ID: 7, PID: 9, Data: Data{
		NR: 41, Arch: unix.AUDIT_ARCH_X86_64, InstructionPointer: 0x1122334455667788,
		Args: [6]uint64{10, 1, 2, 3, 1 << 40, ^uint64(0)},
	}}
	b := n.DataBytes()
	if len(b) != SizeofData {
		t.Fatalf("len = %d", len(b))
	}
	want := make([]byte, SizeofData)
	le := binary.LittleEndian
	le.PutUint32(want[0:], 41)
	le.PutUint32(want[4:], unix.AUDIT_ARCH_X86_64)
	le.PutUint64(want[8:], 0x1122334455667788)
	for i, a := range n.Data.Args {
		le.PutUint64(want[16+8*i:], a)
	}
	if string(b) != string(want) {
		t.Fatalf("DataBytes = %x\nwant        %x", b, want)
	}
	b[0] = 42 // aliases n
	if n.Data.NR != 42 {
		t.Fatal("DataBytes does not alias the notification")
	}
}

func TestNewListenerRejects(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := unix.Dup(int(r.Fd()))
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewListener(fd); !errors.Is(err, ErrNotListener) {
		t.Fatalf("NewListener(pipe) err = %v, want ErrNotListener", err)
	}
	// fd was closed by NewListener (the fd-leak check in TestMain agrees).
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("fd still open after failed NewListener: %v", err)
	}
}

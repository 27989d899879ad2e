package seccomp

import (
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Kernel values that golang.org/x/sys/unix does not define.
const (
	// x32SyscallBit is __X32_SYSCALL_BIT from asm/unistd.h: x32 syscalls
	// enter through the x86_64 entry point (same AUDIT_ARCH) with this bit
	// set in the number, so the arch check alone does not exclude them.
	x32SyscallBit = 0x40000000

	// seccompIoctlNotifIDValid is SECCOMP_IOCTL_NOTIF_ID_VALID from
	// linux/seccomp.h: SECCOMP_IOW(2, __u64) = _IOW('!', 2, __u64).
	// (Kernels before 5.8 only knew the historical _IOR encoding 0x80082102;
	// current kernels accept both.)
	seccompIoctlNotifIDValid = 0x40082102

	// pidfdThread is PIDFD_THREAD from linux/pidfd.h (Linux 6.9): O_EXCL.
	// It lets pidfd_open accept a thread id that is not a thread-group
	// leader.
	pidfdThread = unix.O_EXCL

	// maxErrno is MAX_ERRNO from linux/err.h; the kernel clamps
	// SECCOMP_RET_ERRNO data to it.
	maxErrno = 4095

	// offsetof(struct seccomp_data, nr), (…, arch) and the low word of
	// args[i] (little-endian).
	offsetNR   = 0
	offsetArch = 4
	offsetArgs = 16
)

// Sentinel errors of Install and the filter builder.
var (
	// ErrNoSyscalls: a filter that routes nothing was requested.
	ErrNoSyscalls = errno.New(unix.EINVAL, "seccomp: no syscalls to route")
	// ErrBadSyscall: a syscall number with the x32 bit (or higher) set.
	ErrBadSyscall = errno.New(unix.EINVAL, "seccomp: syscall number out of the x86_64 range")
	// ErrTSYNC: another thread of the process could not be synchronised to
	// the new filter (SECCOMP_FILTER_FLAG_TSYNC_ESRCH reports ESRCH).
	ErrTSYNC = errno.New(unix.ESRCH, "seccomp: cannot synchronise the filter to all threads")
)

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const (
	bpfLdWAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJgeK   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	bpfJsetK  = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfRetK   = unix.BPF_RET | unix.BPF_K
)

// Policy describes the classic-BPF filter of a filtered process
// (BuildPolicy, InstallPolicy): which syscalls go to the listener, and
// which routes around any policy stay closed. Plain data. The guards are
// on unless a field opts out; docs/security.md ("Routes around a seccomp
// policy") lists every route and its status.
type Policy struct {
	// Syscalls are the x86_64 numbers routed to the listener (see
	// ParseSyscalls); ignored if All.
	Syscalls []uint32
	// All routes every syscall.
	All bool
	// AllowIOUring lets io_uring_setup, io_uring_enter and
	// io_uring_register through like any other syscall. By default they
	// fail with EPERM, before routing (as container runtimes' default
	// profiles do): the operations a ring submits — openat, socket,
	// connect, accept, read, write, send, recv and more — are executed by
	// the kernel without ever passing a seccomp filter, so a process with
	// a ring walks around any policy on those syscalls.
	AllowIOUring bool
	// AllowNestedListeners lets the process install seccomp filters of
	// its own with a user-notification listener
	// (SECCOMP_FILTER_FLAG_NEW_LISTENER). By default that seccomp(2)
	// call fails with EPERM: when two filters answer a syscall with
	// SECCOMP_RET_USER_NOTIF, the kernel notifies only the most recently
	// installed one, so the process could answer its own syscalls with
	// "continue" and the policy would never see them. Filters without a
	// listener (prctl(PR_SET_SECCOMP) or seccomp(2) without the flag) are
	// always allowed: stacking them can only restrict.
	AllowNestedListeners bool
	// DenyPtrace makes ptrace, process_vm_readv, process_vm_writev and
	// pidfd_getfd fail with EPERM: the fallback containment when Landlock
	// is unavailable (see ExecConfig.AllowPtrace). It also stops the
	// process from tracing its own children, and it cannot cover opening
	// /proc/PID/mem (a path the filter cannot see).
	DenyPtrace bool
}

// ptraceSyscalls are the syscalls that reach another process's memory or
// fds with ptrace's permission check.
var ptraceSyscalls = []uint32{unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_PIDFD_GETFD}

// ioUringSyscalls are io_uring's entry points.
var ioUringSyscalls = []uint32{unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER}

// retEPERM is SECCOMP_RET_ERRNO with EPERM.
const retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)

// BuildFilter is BuildPolicy with every guard on.
func BuildFilter(syscalls []uint32, all bool) ([]unix.SockFilter, error) {
	return BuildPolicy(&Policy{Syscalls: syscalls, All: all})
}

// BuildPolicy returns the classic-BPF seccomp program that InstallPolicy
// loads:
//
//   - arch != AUDIT_ARCH_X86_64: SECCOMP_RET_KILL_PROCESS (the 32-bit
//     entry points — int 0x80, sysenter, 32-bit syscall — report
//     AUDIT_ARCH_I386, socketcall included);
//   - nr has the x32 bit (nr >= 0x40000000) and is not -1:
//     SECCOMP_RET_KILL_PROCESS (-1 is what a tracer sets to skip a syscall;
//     it passes, as in libseccomp);
//   - io_uring_setup, io_uring_enter, io_uring_register: SECCOMP_RET_ERRNO
//     with EPERM, unless p.AllowIOUring;
//   - with p.DenyPtrace, ptrace, process_vm_readv, process_vm_writev and
//     pidfd_getfd: SECCOMP_RET_ERRNO with EPERM;
//   - seccomp(SECCOMP_SET_MODE_FILTER, flags with
//     SECCOMP_FILTER_FLAG_NEW_LISTENER, ...): SECCOMP_RET_ERRNO with EPERM,
//     unless p.AllowNestedListeners;
//   - p.All, or nr in p.Syscalls: SECCOMP_RET_USER_NOTIF;
//   - anything else: SECCOMP_RET_ALLOW.
//
// Except for seccomp(2) itself, the program depends on nr and arch only, so
// the kernel's per-syscall action cache (Linux 5.11) lets non-routed
// syscalls skip the filter entirely. Duplicates in p.Syscalls are ignored.
// It returns ErrNoSyscalls if nothing is routed and ErrBadSyscall for a
// number the filter cannot express.
func BuildPolicy(p *Policy) ([]unix.SockFilter, error) {
	syscalls, all := p.Syscalls, p.All
	nrs := slices.Clone(syscalls)
	slices.Sort(nrs)
	nrs = slices.Compact(nrs)
	for _, nr := range nrs {
		if nr >= x32SyscallBit {
			return nil, fmt.Errorf("%w: %#x", ErrBadSyscall, nr)
		}
	}
	if !all && len(nrs) == 0 {
		return nil, ErrNoSyscalls
	}
	prog := []unix.SockFilter{
		{Code: bpfLdWAbs, K: offsetArch},
		{Code: bpfJeqK, Jt: 1, Jf: 0, K: unix.AUDIT_ARCH_X86_64},
		{Code: bpfRetK, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: bpfLdWAbs, K: offsetNR},
		{Code: bpfJeqK, Jt: 2, Jf: 0, K: 0xffffffff},
		{Code: bpfJgeK, Jt: 0, Jf: 1, K: x32SyscallBit},
		{Code: bpfRetK, K: unix.SECCOMP_RET_KILL_PROCESS},
	}
	var denied []uint32
	if !p.AllowIOUring {
		denied = append(denied, ioUringSyscalls...)
	}
	if p.DenyPtrace {
		denied = append(denied, ptraceSyscalls...)
	}
	for _, nr := range denied {
		prog = append(prog,
			unix.SockFilter{Code: bpfJeqK, Jt: 0, Jf: 1, K: nr},
			unix.SockFilter{Code: bpfRetK, K: retEPERM},
		)
	}
	if !p.AllowNestedListeners {
		// seccomp(SECCOMP_SET_MODE_FILTER, flags, ...) with the
		// NEW_LISTENER flag: EPERM. Both arguments are unsigned int, so
		// their low words are all the kernel reads. A is nr again after
		// the block on every path that falls through.
		prog = append(prog,
			unix.SockFilter{Code: bpfJeqK, Jt: 0, Jf: 5, K: unix.SYS_SECCOMP},
			unix.SockFilter{Code: bpfLdWAbs, K: offsetArgs + 0*8},
			unix.SockFilter{Code: bpfJeqK, Jt: 0, Jf: 3, K: unix.SECCOMP_SET_MODE_FILTER},
			unix.SockFilter{Code: bpfLdWAbs, K: offsetArgs + 1*8},
			unix.SockFilter{Code: bpfJsetK, Jt: 0, Jf: 1, K: unix.SECCOMP_FILTER_FLAG_NEW_LISTENER},
			unix.SockFilter{Code: bpfRetK, K: retEPERM},
			unix.SockFilter{Code: bpfLdWAbs, K: offsetNR},
		)
	}
	if all {
		return append(prog, unix.SockFilter{Code: bpfRetK, K: unix.SECCOMP_RET_USER_NOTIF}), nil
	}
	// Two instructions per syscall keeps every jump offset at 0 or 1, so
	// the 8-bit jt/jf never overflow however many syscalls are routed.
	for _, nr := range nrs {
		prog = append(prog,
			unix.SockFilter{Code: bpfJeqK, Jt: 0, Jf: 1, K: nr},
			unix.SockFilter{Code: bpfRetK, K: unix.SECCOMP_RET_USER_NOTIF},
		)
	}
	return append(prog, unix.SockFilter{Code: bpfRetK, K: unix.SECCOMP_RET_ALLOW}), nil
}

// Install is InstallPolicy with every guard on.
func Install(syscalls []uint32, all bool) (listenerFD int, err error) {
	return InstallPolicy(&Policy{Syscalls: syscalls, All: all})
}

// InstallPolicy filters the calling process with BuildPolicy(p) and
// returns the listener fd (SECCOMP_FILTER_FLAG_NEW_LISTENER), owned by the
// caller and O_CLOEXEC, so it disappears at execve.
//
// It sets PR_SET_NO_NEW_PRIVS and installs with SECCOMP_FILTER_FLAG_TSYNC
// (a Go process is multi-threaded: every thread must be filtered) and
// SECCOMP_FILTER_FLAG_TSYNC_ESRCH (the kernel refuses TSYNC|NEW_LISTENER
// without it, since the return value is the fd and cannot also carry the id
// of a thread that failed to synchronise). Both calls run on one locked OS
// thread: no_new_privs is per thread, and TSYNC copies it to the others.
//
// It also asks for SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19; left
// out on older kernels): once the supervisor has received a notification,
// the task waits for the answer ignoring non-fatal signals, so each syscall
// is decided exactly once (a Go target's preemption signals would otherwise
// restart the syscall and notify it again, e.g. counting it twice).
//
// Irreversible: once it succeeds, routed syscalls of every thread block until
// a supervisor holding the listener answers them (or the listener is closed:
// ENOSYS). It returns the filter builder's errors, ErrTSYNC, or the syscall
// error (wrapped with the call's name).
func InstallPolicy(p *Policy) (listenerFD int, err error) {
	prog, err := BuildPolicy(p)
	if err != nil {
		return -1, err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER |
		unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH |
		unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags,
		uintptr(unsafe.Pointer(&fprog)))
	if e == unix.EINVAL {
		// WAIT_KILLABLE_RECV is Linux 5.19+.
		flags &^= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
		fd, _, e = unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags,
			uintptr(unsafe.Pointer(&fprog)))
	}
	runtime.KeepAlive(prog)
	switch {
	case e == unix.ESRCH:
		return -1, ErrTSYNC
	case e != 0:
		return -1, fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", e)
	}
	return int(fd), nil
}

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

	// offsetof(struct seccomp_data, nr) and (…, arch).
	offsetNR   = 0
	offsetArch = 4
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
	bpfRetK   = unix.BPF_RET | unix.BPF_K
)

// BuildFilter returns the classic-BPF seccomp program that Install loads:
//
//   - arch != AUDIT_ARCH_X86_64: SECCOMP_RET_KILL_PROCESS;
//   - nr has the x32 bit (nr >= 0x40000000) and is not -1:
//     SECCOMP_RET_KILL_PROCESS (-1 is what a tracer sets to skip a syscall;
//     it passes, as in libseccomp);
//   - all, or nr in syscalls: SECCOMP_RET_USER_NOTIF;
//   - anything else: SECCOMP_RET_ALLOW.
//
// The program depends on nr and arch only, so the kernel's per-syscall action
// cache (Linux 5.11) lets non-routed syscalls skip the filter entirely.
// Duplicates in syscalls are ignored. It returns ErrNoSyscalls if nothing is
// routed and ErrBadSyscall for a number the filter cannot express.
func BuildFilter(syscalls []uint32, all bool) ([]unix.SockFilter, error) {
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

// Install filters the calling process with BuildFilter(syscalls, all) and
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
func Install(syscalls []uint32, all bool) (listenerFD int, err error) {
	prog, err := BuildFilter(syscalls, all)
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

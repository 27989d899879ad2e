package seccomp

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// ErrNoLandlock: the kernel has no Landlock (not built in, or not enabled
// at boot), so ptrace containment falls back to the filter (see
// Policy.DenyPtrace).
var ErrNoLandlock = errno.New(unix.EOPNOTSUPP, "seccomp: Landlock unavailable")

// landlockABI returns the kernel's Landlock ABI version, or ErrNoLandlock.
func landlockABI() (int, error) {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		if e == unix.ENOSYS || e == unix.EOPNOTSUPP {
			return 0, ErrNoLandlock
		}
		return 0, os.NewSyscallError("landlock_create_ruleset", e)
	}
	return int(v), nil
}

// containPtrace puts the calling thread (and so everything it execs or
// forks from then on) in a Landlock domain of its own, whose only rule
// changes nothing about file access: the ruleset handles just
// LANDLOCK_ACCESS_FS_MAKE_BLOCK and allows it beneath "/" (making block
// devices needs CAP_MKNOD anyway). What the domain does change is ptrace:
// a process in a Landlock domain may ptrace — and open /proc/PID/mem, use
// process_vm_readv/writev or pidfd_getfd on — only processes in the same
// domain or one nested in it, i.e. its own descendants, never a sibling or
// its parent. The thread must have no_new_privs set (Landlock requires it
// of unprivileged callers). It returns ErrNoLandlock without Landlock, or
// the syscall error.
func containPtrace() error {
	if _, err := landlockABI(); err != nil {
		return err
	}
	// struct landlock_ruleset_attr as in ABI 1: handled_access_fs only
	// (the kernel accepts the shorter struct).
	attr := struct{ handledAccessFS uint64 }{unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK}
	rfd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if e != 0 {
		return os.NewSyscallError("landlock_create_ruleset", e)
	}
	defer unix.Close(int(rfd))
	root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
	if err != nil {
		return os.NewSyscallError("open /", err)
	}
	defer unix.Close(root)
	rule := unix.LandlockPathBeneathAttr{Allowed_access: unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK, Parent_fd: int32(root)}
	if _, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, rfd, unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&rule)), 0, 0, 0); e != 0 {
		return os.NewSyscallError("landlock_add_rule", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, rfd, 0, 0); e != 0 {
		return os.NewSyscallError("landlock_restrict_self", e)
	}
	return nil
}

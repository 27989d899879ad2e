// Package compat issues syscalls through the 32-bit compat entry point
// (int $0x80) of an x86-64 kernel, which Go's syscall package cannot. The
// seccomp tests use it to check that a filtered process cannot walk around
// its policy through the i386 syscall table (where socketcall lives): the
// kernel reports such syscalls with AUDIT_ARCH_I386, and bpfd's filter
// kills the process.
//
// Only for tests: with the compat entry point enabled it runs an arbitrary
// i386 syscall in the calling thread.
package compat

// Int80 executes int $0x80 with eax = nr and ebx, ecx, edx = a1, a2, a3
// (the i386 syscall convention) and returns eax (a negative errno on
// failure). Pointer arguments must be 32-bit addresses, so pass numbers
// only.
func Int80(nr, a1, a2, a3 uintptr) uintptr

// I386 syscall numbers used by the tests (arch/x86/entry/syscalls/syscall_32.tbl).
const (
	I386Getpid     = 20
	I386Socketcall = 102
	// SysSocket is socketcall's call number for socket(2).
	SysSocket = 1
)

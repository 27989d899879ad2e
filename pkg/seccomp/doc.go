// Package seccomp holds the kernel mechanics that let bpfd act as a seccomp
// filter through seccomp user notification (seccomp_unotify(2)).
//
// The kernel runs only classic BPF as seccomp filters. A filtered process
// installs a small classic-BPF filter (Install) that kills on a foreign
// architecture, sends the chosen syscalls to a listener fd
// (SECCOMP_RET_USER_NOTIF) and allows everything else inside the kernel. The
// supervisor (bpfd) holds the listener and answers each notification with a
// Verdict (Listener.Serve): allow (SECCOMP_USER_NOTIF_FLAG_CONTINUE), an
// errno, or kill (SIGKILL through a pidfd).
//
// Because a syscall routed to a listener nobody holds yet blocks, a process
// cannot filter itself and then send its own listener anywhere if sendmsg is
// routed. Start therefore runs the command through a shim: a re-executed
// binary that calls ShimMain first thing in main. The shim installs the
// filter and waits; the parent takes the listener out of the shim with
// pidfd_getfd(2), hands it to the supervisor, and calls Process.Release to
// let the shim execve the command. The listener is O_CLOEXEC, so the command
// never holds it.
//
// # Routes around a policy
//
// A filter that can be walked around is not a filter. The shim and the
// classic-BPF filter (BuildPolicy) close every known route, each tested
// from inside a filtered process (escape_test.go):
//
//   - the 32-bit entry points (int 0x80, sysenter, 32-bit syscall: the
//     i386 table, socketcall included) report AUDIT_ARCH_I386 and kill the
//     process; x32 numbers (the 0x40000000 bit) kill it too;
//   - io_uring: its operations are executed without passing any seccomp
//     filter, so io_uring_setup, io_uring_enter and io_uring_register fail
//     with EPERM (Policy.AllowIOUring opens them);
//   - a second filter with a listener of the process's own would receive
//     the process's routed syscalls once bpfd's listener is gone (the
//     kernel notifies only the most recent listener, and refuses a second
//     one only while the first lives): seccomp(2) with
//     SECCOMP_FILTER_FLAG_NEW_LISTENER fails with EPERM
//     (Policy.AllowNestedListeners opens it); other stacked filters only
//     restrict;
//   - ptrace, process_vm_readv/writev, /proc/PID/mem and pidfd_getfd on
//     an unfiltered sibling: the shim puts the command in a Landlock domain
//     of its own (no file access changes), so it can reach only its own
//     descendants (ExecConfig.AllowPtrace opts out; without Landlock the
//     filter refuses those syscalls, Policy.DenyPtrace);
//   - setuid and file-capability binaries: no_new_privs;
//   - threads: the filter is installed with SECCOMP_FILTER_FLAG_TSYNC and
//     inherited by every thread and child made later.
//
// The package is x86_64 only: the filter checks AUDIT_ARCH_X86_64 and the
// syscall table (SyscallNumber) is generated from asm/unistd_64.h.
//
// Why a package of its own: it is an attach point, a kernel interface with its
// own lifetime rules (listener, notification ids, tasks), independent of the
// daemon's wire protocol; it imports nothing of bpfd but pkg/errno.
package seccomp

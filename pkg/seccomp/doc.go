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
// The package is x86_64 only: the filter checks AUDIT_ARCH_X86_64 and the
// syscall table (SyscallNumber) is generated from asm/unistd_64.h.
//
// Why a package of its own: it is an attach point, a kernel interface with its
// own lifetime rules (listener, notification ids, tasks), independent of the
// daemon's wire protocol; it imports nothing of bpfd but pkg/errno.
package seccomp

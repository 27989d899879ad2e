package bpfemu

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Sentinel errors of the package's API.
var (
	// ErrBadPrefix: Config.BPFFS is not an absolute, clean path.
	ErrBadPrefix = errno.New(unix.EINVAL, "bpfemu: the bpffs prefix must be an absolute clean path")
	// ErrNoPins: the daemon has pins disabled and Config.PinRoot is empty,
	// so paths under the bpffs prefix have nowhere to go.
	ErrNoPins = errno.New(unix.EOPNOTSUPP, "bpfemu: the daemon has no pin root")
	// ErrServing: Serve was called twice.
	ErrServing = errno.New(unix.EBUSY, "bpfemu: supervisor already serving")
)

// Internal outcomes of a handler, never returned to the process as such.
var (
	// errTaskGone: the notifying task died or left the syscall (its
	// notification is no longer valid); nothing is answered.
	errTaskGone = errno.New(unix.ESRCH, "bpfemu: notifying task is gone")
	// errContinue: the call is not emulated; the kernel runs it.
	errContinue = errno.New(0, "bpfemu: let the kernel run the call")
	// errAnswered: the handler has completed the notification itself
	// (it installed a descriptor with SECCOMP_ADDFD_FLAG_SEND).
	errAnswered = errno.New(0, "bpfemu: answered")
	// errNoTasks: no task uses the filter any more.
	errNoTasks = errno.New(unix.ENOENT, "bpfemu: no task uses the filter")
	// errNotifierClosed: the listener was closed or interrupted.
	errNotifierClosed = errno.New(unix.EBADF, "bpfemu: listener closed")
)

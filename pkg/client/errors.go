package client

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Sentinel errors. Each stands for the kernel errno bpf(2) returns for the
// same misuse, so both errors.Is(err, ErrKeyNotExist) and
// errors.Is(err, unix.ENOENT) hold for an error a method returns.
var (
	// ErrKeyNotExist: no such key (ENOENT); also the end of a batch lookup
	// or of NextKey.
	ErrKeyNotExist = errno.New(unix.ENOENT, "bpfd: key does not exist")
	// ErrKeyExist: UpdateNoExist on a present key (EEXIST).
	ErrKeyExist = errno.New(unix.EEXIST, "bpfd: key already exists")
	// ErrPermission: the descriptor's mode (or the map's BPF_F_RDONLY /
	// BPF_F_WRONLY, or a frozen map) forbids the operation (EPERM).
	ErrPermission = errno.New(unix.EPERM, "bpfd: operation not permitted")
	// ErrAccess: a permission refusal from the verifier or a pin (EACCES).
	ErrAccess = errno.New(unix.EACCES, "bpfd: permission denied")
	// ErrBadDescriptor: the daemon does not know the handle or the
	// descriptor presented (EBADF).
	ErrBadDescriptor = errno.New(unix.EBADF, "bpfd: bad descriptor")
	// ErrInvalid: invalid argument (EINVAL).
	ErrInvalid = errno.New(unix.EINVAL, "bpfd: invalid argument")
	// ErrTooBig: a full map, an index out of range, or an attr from a newer
	// protocol the daemon does not understand (E2BIG).
	ErrTooBig = errno.New(unix.E2BIG, "bpfd: argument too big")
	// ErrNoSpace: a quota on objects is exhausted, or a batch too small for
	// one bucket (ENOSPC).
	ErrNoSpace = errno.New(unix.ENOSPC, "bpfd: no space left (quota)")
	// ErrNoMemory: the memory quota is exhausted (ENOMEM).
	ErrNoMemory = errno.New(unix.ENOMEM, "bpfd: out of memory (quota)")
	// ErrBusy: the object is busy (EBUSY).
	ErrBusy = errno.New(unix.EBUSY, "bpfd: resource busy")
	// ErrNotSupported: the daemon does not support the command or the map
	// type (EOPNOTSUPP). Errors carrying the kernel's ENOTSUPP (524), as
	// lookup-and-delete on an array, match it too.
	ErrNotSupported = errno.New(unix.EOPNOTSUPP, "bpfd: operation not supported")
	// ErrClosed: the Map or Conn was closed by this process, or the
	// connection to the daemon was lost (EBADF, like an fd used after
	// close(2); it is not ErrBadDescriptor, which the daemon returns).
	ErrClosed = errno.New(unix.EBADF, "bpfd: use of closed map or connection")
)

// ENOTSUPP is the kernel-internal errno 524 that bpf(2) nevertheless
// returns for some unsupported operations (lookup-and-delete on an array);
// bpfd returns it for the same cases.
const ENOTSUPP = unix.Errno(524)

// errENOTSUPP stands for ENOTSUPP and also matches ErrNotSupported.
var errENOTSUPP error = &aliasError{err: errno.New(ENOTSUPP, "bpfd: operation not supported by this map type"), alias: ErrNotSupported}

// aliasError is an *errno.Error that also matches a second sentinel.
type aliasError struct {
	err   *errno.Error
	alias error
}

func (e *aliasError) Error() string { return e.err.Error() }

func (e *aliasError) Is(target error) bool { return target == e.alias || e.err.Is(target) }

func (e *aliasError) Unwrap() error { return e.err.Errno() }

// errnoErrors is the one table from wire errnos to sentinels. An errno
// missing here is returned as the unix.Errno itself.
var errnoErrors = map[unix.Errno]error{
	unix.ENOENT:     ErrKeyNotExist,
	unix.EEXIST:     ErrKeyExist,
	unix.EPERM:      ErrPermission,
	unix.EACCES:     ErrAccess,
	unix.EBADF:      ErrBadDescriptor,
	unix.EINVAL:     ErrInvalid,
	unix.E2BIG:      ErrTooBig,
	unix.ENOSPC:     ErrNoSpace,
	unix.ENOMEM:     ErrNoMemory,
	unix.EBUSY:      ErrBusy,
	unix.EOPNOTSUPP: ErrNotSupported,
	ENOTSUPP:        errENOTSUPP,
}

// errnoErr returns the error for wire errno e (nil for 0). It never
// allocates.
func errnoErr(e uint32) error {
	if e == 0 {
		return nil
	}
	if err, ok := errnoErrors[unix.Errno(e)]; ok {
		return err
	}
	return unix.Errno(e)
}

// Errors for misuse detected before anything is sent. They match
// ErrInvalid (and EINVAL) and are pre-built so that hot paths never format.
var (
	errKeySize   = invalid("bpfd: key length does not match the map's key size")
	errValueSize = invalid("bpfd: value length does not match the map's value size")
	errBatchSize = invalid("bpfd: batch buffers are not whole, matching multiples of key and value size")
	errCursorMap = invalid("bpfd: batch cursor used with a different map")
	errMode      = invalid("bpfd: invalid mode")
	errTooMany   = invalid("bpfd: no descriptors, or too many for one message")
	errName      = invalid("bpfd: map name longer than 15 bytes")
	errProtocol  = errno.New(unix.EPROTO, "bpfd: malformed reply from daemon")
)

func invalid(msg string) error {
	return &aliasError{err: errno.New(unix.EINVAL, msg), alias: ErrInvalid}
}

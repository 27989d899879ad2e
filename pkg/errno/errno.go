// Package errno binds bpfd's sentinel errors to the kernel errnos they stand
// for, so that every package can declare its own sentinels while one table
// (Of) turns any error into the errno that travels on the wire.
//
// A sentinel made with New satisfies errors.Is both for itself and for its
// errno:
//
//	var ErrKeyNotExist = errno.New(unix.ENOENT, "key does not exist")
//	errors.Is(err, ErrKeyNotExist) // true
//	errors.Is(err, unix.ENOENT)    // true
//
// Wrapping with fmt.Errorf("...: %w", ErrKeyNotExist) keeps both.
package errno

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Error is an error bound to a kernel errno. Values are immutable and safe
// for concurrent use; compare them with errors.Is.
type Error struct {
	errno unix.Errno
	msg   string
}

// New returns a sentinel error with message msg standing for errno e.
func New(e unix.Errno, msg string) *Error { return &Error{errno: e, msg: msg} }

// Error returns the message.
func (e *Error) Error() string { return e.msg }

// Errno returns the kernel errno e stands for.
func (e *Error) Errno() unix.Errno { return e.errno }

// Is reports whether target is e itself or the errno e stands for.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case unix.Errno:
		return t == e.errno
	case *Error:
		return t == e
	}
	return false
}

// Unwrap returns the errno, so errors.As(err, &unix.Errno) works too.
func (e *Error) Unwrap() error { return e.errno }

// Of returns the wire errno for err: 0 for nil, the errno of the first *Error
// or unix.Errno in err's chain, and fallback otherwise.
func Of(err error, fallback unix.Errno) unix.Errno {
	if err == nil {
		return 0
	}
	var be *Error
	if errors.As(err, &be) {
		return be.errno
	}
	var ue unix.Errno
	if errors.As(err, &ue) {
		return ue
	}
	return fallback
}

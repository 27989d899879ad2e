package client

import (
	"errors"
	"strings"
)

// DialAttempt is one socket Dial tried and why it failed.
type DialAttempt struct {
	Path string
	Err  error // a *net.OpError from connect(2)
}

// DialError is Dial's failure to reach a daemon on any socket it tried.
// errors.Is matches the errno of each attempt (unix.ENOENT: no socket
// there; unix.ECONNREFUSED: a stale socket nobody serves; unix.EACCES).
type DialError struct {
	Tried []DialAttempt
}

// Error lists every path tried with its errno text.
func (e *DialError) Error() string {
	var sb strings.Builder
	sb.WriteString("bpfd: cannot connect to ")
	for i, a := range e.Tried {
		if i > 0 {
			sb.WriteString(", nor to ")
		}
		sb.WriteString(a.Path)
		sb.WriteString(": ")
		sb.WriteString(causeText(a.Err))
	}
	return sb.String()
}

// Unwrap returns the attempts' errors.
func (e *DialError) Unwrap() []error {
	out := make([]error, len(e.Tried))
	for i, a := range e.Tried {
		out[i] = a.Err
	}
	return out
}

// causeText is err without net.OpError's "dial unixpacket PATH:" prefix.
func causeText(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// Socket returns the socket path c is connected to.
func (c *Conn) Socket() string { return c.path }

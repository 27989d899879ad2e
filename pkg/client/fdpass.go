package client

import (
	"net"

	"github.com/bpfd-project/bpfd/pkg/scmrights"
)

// SendDescriptors sends fds (for example Map.FD() of a map to share) over
// conn as SCM_RIGHTS attached to a one-byte message, so it works on stream,
// datagram and seqpacket Unix sockets. The caller keeps ownership of fds:
// the receiver gets its own copies. It returns ErrInvalid-matching errors
// for no fds or more than the kernel's 253, and the sendmsg failure
// otherwise.
func SendDescriptors(conn *net.UnixConn, fds ...int) error {
	if len(fds) == 0 || len(fds) > scmrights.MaxSendFDs {
		return errTooMany
	}
	return scmrights.SendConn(conn, []byte{0}, fds...)
}

// ReceiveDescriptors receives one message sent by SendDescriptors on conn
// and returns the fds it carried (close-on-exec), which the caller then
// owns. A message with more than max fds, or whose control data was
// truncated, fails and every fd it carried is closed. A closed peer gives
// io.EOF-like failure: a zero-byte read returns ErrClosed.
func ReceiveDescriptors(conn *net.UnixConn, max int) ([]int, error) {
	if max <= 0 || max > scmrights.MaxSendFDs {
		return nil, errTooMany
	}
	var b [1]byte
	n, fds, err := scmrights.RecvConn(conn, b[:], max)
	if err != nil {
		return nil, err
	}
	if n == 0 && len(fds) == 0 {
		return nil, ErrClosed
	}
	return fds, nil
}

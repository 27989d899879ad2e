package client

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// RawReply is the daemon's answer to one Conn.Raw request.
type RawReply struct {
	// Errno is the daemon's errno (0 on success). A failing reply may
	// still carry Ret and Data (batch partial counts, verifier logs).
	Errno unix.Errno
	// Ret is the command's return value (handle, count, r0, ...).
	Ret int64
	// Data is the reply data: a prefix of the out buffer Raw was given
	// when it fits there, else a new slice. A reply whose data came in a
	// memfd has been read into it already.
	Data []byte
	// FDs are the descriptors the reply carried (not counting the data
	// memfd); the caller owns and must close them.
	FDs []int
}

// Raw sends one request of the wire protocol (docs/protocol.md): cmd with
// attr, the data (concatenated; moved into a sealed memfd when it does not
// fit one message) and fds attached (the caller keeps them; the daemon
// closes its copies), and returns the reply. It is the building block of
// clients that speak the protocol themselves (the bpf(2) emulator of
// pkg/bpfemu): attrs and handles are the caller's business, nothing is
// checked before sending, and handles it creates are the caller's to
// release (CmdRelease).
//
// The error is a transport failure (ErrClosed once the connection is lost,
// ErrTooBig for data beyond wire.MaxMemfdData, errors sending fds); the
// daemon's errno is in the reply. Raw is safe for concurrent use and
// pipelines like every other request; a reply without fds whose data fits
// out allocates nothing.
func (c *Conn) Raw(cmd wire.Cmd, attr []byte, fds []int, out []byte, data ...[]byte) (RawReply, error) {
	w := getWaiter()
	defer putWaiter(w)
	w.out = out
	if err := c.do(w, nil, cmd, attr, fds, data...); err != nil {
		return RawReply{}, err
	}
	r := RawReply{Errno: unix.Errno(w.hdr.Errno), Ret: w.hdr.Ret}
	payload, err := w.payload()
	if err != nil {
		w.closeFDs()
		return RawReply{}, err
	}
	switch {
	case len(payload) == 0:
		r.Data = out[:0:len(out)]
	case w.hdr.Flags&wire.ReplyFlagMemfd == 0 && len(out) >= len(payload) && &payload[0] == &out[0]:
		r.Data = payload
	case len(out) >= len(payload):
		r.Data = out[:copy(out, payload)]
	default:
		r.Data = append([]byte(nil), payload...)
	}
	n := w.nfd
	if w.hdr.Flags&wire.ReplyFlagMemfd != 0 {
		n-- // the data memfd stays with w and is closed below
	}
	for i := 0; i < n; i++ {
		r.FDs = append(r.FDs, w.takeFD(i))
	}
	w.closeFDs()
	return r, nil
}

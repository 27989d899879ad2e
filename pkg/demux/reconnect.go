package demux

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// ErrHandleInUse: CmdImportAt names a handle number the connection uses.
var ErrHandleInUse = errno.New(unix.EEXIST, "demux: that handle number is in use on this connection")

// importAt executes CmdImportAt: CmdImport under the handle number the
// client asks for (a client presenting its descriptors again after a
// daemon restart keeps its handle numbers). The handle is not a maker
// handle (REVOKE by it is refused: the owner revokes with REVOKE_NODE).
func (c *conn) importAt(a, data []byte, fds []int) (int64, error) {
	var at wire.ImportAtAttr
	if !at.Parse(a) || len(data) != 0 {
		return 0, ErrInvalid
	}
	if at.Handle == 0 || int(at.Handle) > c.srv.cfg.MaxHandles {
		return 0, ErrInvalid
	}
	if int(at.Handle) < len(c.handles) && c.handles[at.Handle] != nil {
		return 0, ErrHandleInUse
	}
	hd, err := c.importHandle(fds, at.Mode)
	if err != nil {
		return 0, err
	}
	c.setHandle(at.Handle, hd)
	c.putInfo(hd)
	return int64(at.Handle), nil
}

// goodbye tells the client that the daemon is shutting down for good
// (wire.ReplyFlagGoodbye), after the last reply: a client that sees the
// connection end without it reconnects, one that sees it does not.
func (c *conn) goodbye() {
	var b [wire.ReplyHeaderSize]byte
	msg := wire.AppendReplyHeader(b[:0], wire.ReplyHeader{Errno: uint32(unix.ESHUTDOWN), Flags: wire.ReplyFlagGoodbye})
	c.sc.Send(msg, nil)
}

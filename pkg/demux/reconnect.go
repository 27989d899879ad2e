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
	if len(fds) != 1 {
		if len(fds) == 0 {
			return 0, ErrBadDescriptor
		}
		return 0, ErrFDs
	}
	if at.Mode != 0 && !at.Mode.Valid() || at.Handle == 0 || int(at.Handle) > c.srv.cfg.MaxHandles {
		return 0, ErrInvalid
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	if int(at.Handle) < len(c.handles) && c.handles[at.Handle] != nil {
		return 0, ErrHandleInUse
	}
	r := c.reg
	r.mu.Lock()
	d, err := r.lookupDescLocked(fds[0])
	if err != nil {
		r.mu.Unlock()
		return 0, err
	}
	mode := at.Mode
	if mode == 0 {
		mode = d.mode
	}
	if mode&^d.mode != 0 {
		r.mu.Unlock()
		return 0, ErrPermission
	}
	hd := r.newHandleLocked(d, mode, false)
	r.mu.Unlock()
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

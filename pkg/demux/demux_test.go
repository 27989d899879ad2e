package demux

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

func TestEndToEnd(t *testing.T) {
	srv, path := startServer(t, nil)
	c := dial(t, path)
	r := c.do(wire.CmdHello, (&wire.HelloAttr{Version: wire.Version}).Append(nil), nil)
	if r.h.Errno != 0 || r.h.Ret != wire.Version || string(r.data) != "dev" {
		t.Fatalf("hello: %+v %q", r.h, r.data)
	}
	h, fd := c.createMap(maps.TypeHash, 4, 8, 16, 0)
	val := []byte("abcdefgh")
	if r := c.do(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(u32(7), val)); r.h.Errno != 0 {
		t.Fatalf("update: %v", r.errno())
	}
	r = c.do(wire.CmdMapLookupElem, elemAttr(h, 0), u32(7))
	if r.h.Errno != 0 || !bytes.Equal(r.data, val) {
		t.Fatalf("lookup: %v %q", r.errno(), r.data)
	}
	// Reopen read-only, import it on a second connection.
	r = c.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
	if r.h.Errno != 0 || len(r.fds) != 1 {
		t.Fatalf("reopen: %v fds %v", r.errno(), r.fds)
	}
	rofd := r.fds[0]
	c2 := dial(t, path)
	r = c2.do(wire.CmdImport, importAttr(0), nil, rofd)
	if r.h.Errno != 0 {
		t.Fatalf("import: %v", r.errno())
	}
	var info wire.ObjInfo
	if !info.Parse(r.data) || info.Mode != wire.ModeRead || info.KeySize != 4 || info.ValueSize != 8 {
		t.Fatalf("import info %+v", info)
	}
	h2 := uint32(r.h.Ret)
	r = c2.do(wire.CmdMapLookupElem, elemAttr(h2, 0), u32(7))
	if r.h.Errno != 0 || !bytes.Equal(r.data, val) {
		t.Fatalf("lookup through import: %v %q", r.errno(), r.data)
	}
	if r := c2.do(wire.CmdMapUpdateElem, elemAttr(h2, 0), cat(u32(7), val)); r.errno() != unix.EPERM {
		t.Fatalf("update through read-only: %v", r.errno())
	}
	if r := c2.do(wire.CmdReopen, handleAttr(h2, wire.ModeReadWrite), nil); r.errno() != unix.EPERM {
		t.Fatalf("reopen rw from r: %v", r.errno())
	}
	if r := c2.do(wire.CmdRelease, handleAttr(h2, 0), nil); r.h.Errno != 0 {
		t.Fatalf("release: %v", r.errno())
	}
	if r := c2.do(wire.CmdMapLookupElem, elemAttr(h2, 0), u32(7)); r.errno() != unix.EBADF {
		t.Fatalf("lookup after release: %v", r.errno())
	}
	st := srv.Stats()
	if st.Objects != 1 || st.Descriptors != 2 {
		t.Fatalf("stats %+v", st)
	}
	_ = fd
}

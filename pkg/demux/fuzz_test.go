package demux

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// FuzzRequest feeds arbitrary datagrams (optionally with an fd attached) to
// a connection holding a hash map (handle 1), an array (handle 2) and a
// read-only reopen (handle 3). The server must never panic, must answer
// every datagram with exactly one well-formed reply, and must close every
// fd it is given.
func FuzzRequest(f *testing.F) {
	for _, seed := range [][]byte{
		request(wire.CmdHello, (&wire.HelloAttr{Version: 1}).Append(nil), nil),
		request(wire.CmdMapLookupElem, elemAttr(1, 0), u32(1)),
		request(wire.CmdMapUpdateElem, elemAttr(1, 0), cat(u32(1), u32(2))),
		request(wire.CmdMapGetNextKey, elemAttr(2, 0), nil),
		request(wire.CmdMapLookupBatch, (&wire.BatchAttr{Handle: 1, Count: 4}).Append(nil), nil),
		request(wire.CmdMapUpdateBatch, (&wire.BatchAttr{Handle: 2, Count: 1}).Append(nil), cat(u32(0), u32(9))),
		request(wire.CmdReopen, handleAttr(1, wire.ModeRead), nil),
		request(wire.CmdRevoke, handleAttr(3, 0), nil),
		request(wire.CmdImport, importAttr(0), nil),
		request(wire.CmdMapCreate, mapCreateAttr(maps.TypeHash, 4, 4, 2, 0, "f"), nil),
		request(wire.CmdRelease, handleAttr(2, 0), nil),
		request(wire.CmdStatus, nil, nil),
		{},
		{0xff, 0xff, 0xff, 0xff},
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	c, cl := directConn(f)
	rbuf := make([]byte, wire.MaxMessage)
	oob := make([]byte, scmrights.OOBSize(wire.MaxFDs))
	rfds := make([]int, 0, wire.MaxFDs)
	setup := func(msg []byte) {
		c.handle(msg, nil)
		_, got, _, _ := scmrights.Recvmsg(cl, rbuf, oob, rfds)
		scmrights.CloseAll(got)
	}
	setup(request(wire.CmdMapCreate, mapCreateAttr(maps.TypeHash, 4, 4, 16, 0, "h"), nil))
	setup(request(wire.CmdMapCreate, mapCreateAttr(maps.TypeArray, 4, 4, 16, 0, "a"), nil))
	setup(request(wire.CmdReopen, handleAttr(1, wire.ModeRead), nil))
	f.Fuzz(func(t *testing.T, msg []byte, withFD bool) {
		var fds []int
		var p [2]int
		if withFD {
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			fds = []int{p[0]}
		}
		if !c.handle(msg, fds) {
			t.Fatal("connection broke")
		}
		if withFD {
			// The daemon closed the read end: writing now fails with EPIPE.
			if _, err := unix.Write(p[1], []byte{1}); err != unix.EPIPE {
				t.Fatalf("daemon kept a received fd open (write: %v)", err)
			}
			unix.Close(p[1])
		}
		n, got, _, err := scmrights.Recvmsg(cl, rbuf, oob, rfds)
		scmrights.CloseAll(got)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := wire.ParseReply(rbuf[:n]); err != nil {
			t.Fatalf("malformed reply: %v", err)
		}
	})
}

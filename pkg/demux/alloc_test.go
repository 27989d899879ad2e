package demux

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// directConn returns a server connection driven directly by the test (no
// goroutine), and the raw client end of its socket.
func directConn(t testing.TB) (*conn, int) {
	t.Helper()
	srv, err := NewServer(&Config{Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(p[0]), "server")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newConn(srv, nc.(*net.UnixConn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i, h := range c.handles {
			if h != nil {
				c.reg.releaseHandle(h)
				c.handles[i] = nil
			}
		}
		nc.Close()
		unix.Close(p[1])
		srv.Shutdown(context.Background())
	})
	return c, p[1]
}

func request(cmd wire.Cmd, attr, data []byte) []byte {
	b := wire.AppendReqHeader(nil, wire.ReqHeader{Cmd: cmd, AttrLen: uint32(len(attr)), DataLen: uint32(len(data))})
	return append(append(b, attr...), data...)
}

func TestElemOpsDoNotAllocate(t *testing.T) {
	c, cl := directConn(t)
	rbuf := make([]byte, wire.MaxMessage)
	oob := make([]byte, scmrights.OOBSize(wire.MaxFDs))
	fds := make([]int, 0, wire.MaxFDs)
	roundTrip := func(msg []byte) wire.ReplyHeader {
		if !c.handle(msg, nil) {
			t.Fatal("handle failed")
		}
		n, got, _, err := scmrights.Recvmsg(cl, rbuf, oob, fds)
		if err != nil {
			t.Fatal(err)
		}
		scmrights.CloseAll(got)
		h, _, err := wire.ParseReply(rbuf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, typ := range []uint32{maps.TypeHash, maps.TypeArray} {
		r := roundTrip(request(wire.CmdMapCreate, mapCreateAttr(typ, 4, 64, 128, 0, "a"), nil))
		if r.Errno != 0 {
			t.Fatalf("create: %d", r.Errno)
		}
		h := uint32(r.Ret)
		key := u32(3)
		tests := []struct {
			name string
			msg  []byte
		}{
			{name: "update", msg: request(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(key, make([]byte, 64)))},
			{name: "lookup", msg: request(wire.CmdMapLookupElem, elemAttr(h, 0), key)},
			{name: "next key", msg: request(wire.CmdMapGetNextKey, elemAttr(h, 0), key)},
			{name: "lookup missing", msg: request(wire.CmdMapLookupElem, elemAttr(h, 0), u32(1000))},
			{name: "bad handle", msg: request(wire.CmdMapLookupElem, elemAttr(h+100, 0), key)},
		}
		for _, tt := range tests {
			roundTrip(tt.msg) // warm
			if a := testing.AllocsPerRun(500, func() { roundTrip(tt.msg) }); a != 0 {
				t.Errorf("type %d %s: %.1f allocations per request, want 0", typ, tt.name, a)
			}
		}
	}
}

func BenchmarkLookupDispatch(b *testing.B) {
	c, cl := directConn(b)
	rbuf := make([]byte, wire.MaxMessage)
	c.handle(request(wire.CmdMapCreate, mapCreateAttr(maps.TypeHash, 4, 64, 128, 0, "a"), nil), nil)
	n, fds, _, _ := scmrights.Recvmsg(cl, rbuf, make([]byte, 64), make([]int, 0, 2))
	scmrights.CloseAll(fds)
	h, _, _ := wire.ParseReply(rbuf[:n])
	upd := request(wire.CmdMapUpdateElem, elemAttr(uint32(h.Ret), 0), cat(u32(1), make([]byte, 64)))
	c.handle(upd, nil)
	scmrights.Recvmsg(cl, rbuf, nil, nil)
	msg := request(wire.CmdMapLookupElem, elemAttr(uint32(h.Ret), 0), u32(1))
	b.ReportAllocs()
	for b.Loop() {
		c.handle(msg, nil)
		scmrights.Recvmsg(cl, rbuf, nil, nil)
	}
}

func TestCyclesKeepFDBaseline(t *testing.T) {
	srv, path := startServer(t, nil)
	c := dial(t, path)
	c.do(wire.CmdHello, (&wire.HelloAttr{Version: wire.Version}).Append(nil), nil)
	cycles := 2000
	if testing.Short() {
		cycles = 200
	}
	base := countFDs()
	for i := range cycles {
		r := c.do(wire.CmdMapCreate, mapCreateAttr(maps.TypeHash, 4, 4, 4, 0, ""), nil)
		if r.h.Errno != 0 {
			t.Fatalf("cycle %d create: %v", i, r.errno())
		}
		h, fd := uint32(r.h.Ret), r.fds[0]
		r2 := c.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
		if r2.h.Errno != 0 {
			t.Fatalf("cycle %d reopen: %v", i, r2.errno())
		}
		r3 := c.do(wire.CmdImport, importAttr(0), nil, r2.fds[0])
		for _, hh := range []uint32{h, uint32(r2.h.Ret), uint32(r3.h.Ret)} {
			if r := c.do(wire.CmdRelease, handleAttr(hh, 0), nil); r.h.Errno != 0 {
				t.Fatalf("cycle %d release: %v", i, r.errno())
			}
		}
		unix.Close(fd)
		unix.Close(r2.fds[0])
		r.fds[0], r2.fds[0] = -1, -1
	}
	waitStats(t, srv, "all objects freed", func(st Stats) bool { return st.Objects == 0 && st.Descriptors == 0 })
	// The stats count an object gone under the registry lock; its storage
	// is closed after the lock is released, a moment later on a loaded
	// machine.
	n := countFDs()
	for deadline := time.Now().Add(10 * time.Second); n != base && time.Now().Before(deadline); n = countFDs() {
		time.Sleep(10 * time.Millisecond)
	}
	if n != base {
		t.Fatalf("fd count %d after %d cycles, baseline %d", n, cycles, base)
	}
}

package demux

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func TestMain(m *testing.M) {
	// Start Go's network poller (its epoll fd and eventfd stay open) before
	// taking the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := countFDs()
	code := m.Run()
	// Descriptor hangups are processed asynchronously; give them a moment.
	deadline := time.Now().Add(2 * time.Second)
	for countFDs() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := countFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "fd leak: %d fds open before tests, %d after\n", before, after)
		code = 1
	}
	os.Exit(code)
}

// startServer runs a server on a socket in a temporary directory, shut
// down at cleanup.
func startServer(t testing.TB, cfg *Config) (*Server, string) {
	t.Helper()
	if cfg == nil {
		cfg = &Config{Logger: zap.NewNop()}
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bpfd.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, path
}

// client speaks raw wire messages.
type client struct {
	t    testing.TB
	nc   *net.UnixConn
	sc   *scmrights.Conn
	rbuf []byte
	oob  []byte
	fds  []int
	wbuf []byte
}

func dial(t testing.TB, path string) *client {
	t.Helper()
	nc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := scmrights.NewConn(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, nc: nc, sc: sc, rbuf: make([]byte, wire.MaxMessage),
		oob: make([]byte, scmrights.OOBSize(wire.MaxFDs)), fds: make([]int, 0, wire.MaxFDs)}
	t.Cleanup(func() { nc.Close() })
	return c
}

type reply struct {
	h    wire.ReplyHeader
	data []byte
	fds  []int
}

func (r reply) errno() unix.Errno { return unix.Errno(r.h.Errno) }

// send sends one request.
func (c *client) send(cmd wire.Cmd, flags uint32, attr, data []byte, fds ...int) {
	c.t.Helper()
	c.wbuf = wire.AppendReqHeader(c.wbuf[:0], wire.ReqHeader{Cmd: cmd, Flags: flags,
		AttrLen: uint32(len(attr)), DataLen: uint32(len(data))})
	c.wbuf = append(c.wbuf, attr...)
	if flags&wire.ReqFlagMemfd == 0 {
		c.wbuf = append(c.wbuf, data...)
	}
	if err := c.sc.Send(c.wbuf, fds); err != nil {
		c.t.Fatalf("send %v: %v", cmd, err)
	}
}

// recv receives one reply; its fds are closed at cleanup unless the test
// takes them (set to -1).
func (c *client) recv() reply {
	c.t.Helper()
	n, fds, _, err := c.sc.Recv(c.rbuf, c.oob, c.fds)
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	h, data, err := wire.ParseReply(c.rbuf[:n])
	if err != nil {
		c.t.Fatalf("parse reply: %v", err)
	}
	r := reply{h: h, data: append([]byte(nil), data...), fds: append([]int(nil), fds...)}
	c.t.Cleanup(func() { scmrights.CloseAll(r.fds) })
	if h.Flags&wire.ReplyFlagMemfd != 0 {
		mfd := fds[len(fds)-1]
		r.data = make([]byte, h.DataLen)
		if _, err := unix.Pread(mfd, r.data, 0); err != nil {
			c.t.Fatal(err)
		}
	}
	return r
}

func (c *client) do(cmd wire.Cmd, attr, data []byte, fds ...int) reply {
	c.t.Helper()
	c.send(cmd, 0, attr, data, fds...)
	return c.recv()
}

func mapCreateAttr(typ, ks, vs, n, flags uint32, name string) []byte {
	a := wire.MapCreateAttr{MapType: typ, KeySize: ks, ValueSize: vs, MaxEntries: n, MapFlags: flags}
	copy(a.Name[:], name)
	return a.Append(nil)
}

func elemAttr(h uint32, flags uint64) []byte {
	a := wire.ElemAttr{Handle: h, Flags: flags}
	return a.Append(nil)
}

func handleAttr(h uint32, m wire.Mode) []byte {
	a := wire.HandleAttr{Handle: h, Mode: m}
	return a.Append(nil)
}

func importAttr(m wire.Mode) []byte {
	a := wire.ImportAttr{Mode: m}
	return a.Append(nil)
}

// createMap creates a map and returns its handle and descriptor (closed at
// cleanup).
func (c *client) createMap(typ, ks, vs, n, flags uint32) (uint32, int) {
	c.t.Helper()
	r := c.do(wire.CmdMapCreate, mapCreateAttr(typ, ks, vs, n, flags, "m"), nil)
	if r.h.Errno != 0 {
		c.t.Fatalf("map create: %v", r.errno())
	}
	if len(r.fds) != 1 {
		c.t.Fatalf("map create returned %d fds", len(r.fds))
	}
	return uint32(r.h.Ret), r.fds[0]
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func cat(bs ...[]byte) []byte {
	var o []byte
	for _, b := range bs {
		o = append(o, b...)
	}
	return o
}

// waitStats polls until cond holds for the server's stats.
func waitStats(t testing.TB, srv *Server, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := srv.Stats()
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v", what, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

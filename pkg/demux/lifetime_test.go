package demux

import (
	"net"
	"os"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

func TestDescriptorHangupFreesObject(t *testing.T) {
	srv, path := startServer(t, nil)
	c := dial(t, path)
	r := c.do(wire.CmdMapCreate, mapCreateAttr(maps.TypeHash, 4, 4, 8, 0, "x"), nil)
	h, fd := uint32(r.h.Ret), r.fds[0]
	// A copy in flight over SCM_RIGHTS keeps the descriptor alive.
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	if err := scmrights.Sendmsg(p[0], []byte("d"), []int{fd}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	r.fds[0] = -1
	if r := c.do(wire.CmdRelease, handleAttr(h, 0), nil); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if st := srv.Stats(); st.Objects != 1 || st.Descriptors != 1 {
		t.Fatalf("object died while a descriptor copy was in flight: %+v", st)
	}
	// Receive the in-flight copy and import it: still the same object.
	_, fds, _, err := scmrights.Recvmsg(p[1], make([]byte, 8), make([]byte, scmrights.OOBSize(1)), make([]int, 0, 1))
	if err != nil || len(fds) != 1 {
		t.Fatal(err, fds)
	}
	r = c.do(wire.CmdImport, importAttr(0), nil, fds[0])
	if r.h.Errno != 0 {
		t.Fatalf("import of in-flight copy: %v", r.errno())
	}
	unix.Close(fds[0])
	unix.Close(p[0])
	// Only the handle holds it now; releasing it frees the map and its quota.
	if r := c.do(wire.CmdRelease, handleAttr(uint32(r.h.Ret), 0), nil); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	waitStats(t, srv, "object freed", func(st Stats) bool {
		return st.Objects == 0 && st.Descriptors == 0 && st.MapMemory == 0 && st.Handles == 0
	})
}

func TestConnectionCloseDropsHandles(t *testing.T) {
	srv, path := startServer(t, nil)
	c := dial(t, path)
	_, fd := c.createMap(maps.TypeArray, 4, 4, 8, 0)
	unix.Close(fd)
	c.nc.Close()
	waitStats(t, srv, "object freed after close", func(st Stats) bool {
		return st.Objects == 0 && st.Connections == 0 && len(st.UIDs) == 0
	})
}

func TestImportForeignSocket(t *testing.T) {
	srv, path := startServer(t, nil)
	c := dial(t, path)
	c.createMap(maps.TypeHash, 4, 4, 8, 0)
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	cookie, _ := scmrights.Cookie(p[1])
	var pipe [2]int
	unix.Pipe2(pipe[:], unix.O_CLOEXEC)
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	for _, tc := range []struct {
		name string
		fd   int
	}{{"foreign socket", p[1]}, {"pipe", pipe[0]}, {"connection socket", connFD(t, c.nc)}} {
		if r := c.do(wire.CmdImport, importAttr(0), nil, tc.fd); r.errno() != unix.EBADF {
			t.Fatalf("%s: import errno %v, want EBADF", tc.name, r.errno())
		}
	}
	// The daemon closed its copy of the foreign socket at once: once ours is
	// closed too, p[0] sees hangup.
	unix.Close(p[1])
	pfd := []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 2000); err != nil || n != 1 || pfd[0].Revents&unix.POLLHUP == 0 {
		t.Fatalf("daemon kept a copy of the rejected socket (cookie %d): poll %d %v %#x", cookie, n, err, pfd[0].Revents)
	}
	if st := srv.Stats(); st.Descriptors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func connFD(t *testing.T, c *net.UnixConn) int {
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func TestRevoke(t *testing.T) {
	srv, path := startServer(t, nil)
	a := dial(t, path)
	b := dial(t, path)
	h, _ := a.createMap(maps.TypeHash, 4, 4, 8, 0)
	r := a.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
	weak, weakFD := uint32(r.h.Ret), r.fds[0]
	// A derived descriptor, reopened from the weak one by the importer.
	r = b.do(wire.CmdImport, importAttr(0), nil, weakFD)
	bh := uint32(r.h.Ret)
	r = b.do(wire.CmdReopen, handleAttr(bh, wire.ModeRead), nil)
	bh2, derivedFD := uint32(r.h.Ret), r.fds[0]
	if r := b.do(wire.CmdRevoke, handleAttr(bh, 0), nil); r.errno() != unix.EPERM {
		t.Fatalf("revoke by an importer: %v, want EPERM", r.errno())
	}
	if r := a.do(wire.CmdRevoke, handleAttr(weak, 0), nil); r.h.Errno != 0 {
		t.Fatalf("revoke: %v", r.errno())
	}
	for _, tc := range []struct {
		name string
		c    *client
		h    uint32
	}{{"maker", a, weak}, {"importer", b, bh}, {"derived", b, bh2}} {
		if r := tc.c.do(wire.CmdMapLookupElem, elemAttr(tc.h, 0), u32(1)); r.errno() != unix.EBADF {
			t.Fatalf("%s handle after revoke: %v, want EBADF", tc.name, r.errno())
		}
	}
	for _, fd := range []int{weakFD, derivedFD} {
		if r := b.do(wire.CmdImport, importAttr(0), nil, fd); r.errno() != unix.EBADF {
			t.Fatalf("import of revoked descriptor: %v", r.errno())
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 1000); n != 1 || pfd[0].Revents&unix.POLLHUP == 0 {
			t.Fatalf("revoked descriptor sees no hangup: %#x", pfd[0].Revents)
		}
	}
	// The original handle is untouched.
	if r := a.do(wire.CmdMapLookupElem, elemAttr(h, 0), u32(1)); r.errno() != unix.ENOENT {
		t.Fatalf("original handle: %v", r.errno())
	}
	if r := b.do(wire.CmdRelease, handleAttr(bh, 0), nil); r.h.Errno != 0 {
		t.Fatalf("release of revoked handle: %v", r.errno())
	}
	if st := srv.Stats(); st.Descriptors != 1 || st.Handles != 1 {
		t.Fatalf("stats after revoke %+v", st)
	}
}

func TestQuotas(t *testing.T) {
	uid := uint32(os.Getuid())
	cfg := &Config{Logger: zap.NewNop(), MaxHandles: 6,
		Quotas: map[uint32]Quota{uid: {MapMemory: 1 << 20, Objects: 3, Descriptors: 5}}}
	srv, path := startServer(t, cfg)
	c := dial(t, path)
	if r := c.do(wire.CmdMapCreate, mapCreateAttr(maps.TypeArray, 4, 4096, 1024, 0, ""), nil); r.errno() != unix.ENOMEM {
		t.Fatalf("over memory quota: %v", r.errno())
	}
	h1, _ := c.createMap(maps.TypeArray, 4, 4, 4, 0)
	c.createMap(maps.TypeArray, 4, 4, 4, 0)
	c.createMap(maps.TypeArray, 4, 4, 4, 0)
	if r := c.do(wire.CmdMapCreate, mapCreateAttr(maps.TypeArray, 4, 4, 4, 0, ""), nil); r.errno() != unix.ENOSPC {
		t.Fatalf("over object quota: %v", r.errno())
	}
	fd := -1
	for i := range 2 {
		r := c.do(wire.CmdReopen, handleAttr(h1, wire.ModeRead), nil)
		if r.h.Errno != 0 {
			t.Fatalf("reopen %d: %v", i, r.errno())
		}
		fd = r.fds[0]
	}
	if r := c.do(wire.CmdReopen, handleAttr(h1, wire.ModeRead), nil); r.errno() != unix.ENOSPC {
		t.Fatalf("over descriptor quota: %v", r.errno())
	}
	st := srv.Stats()
	if len(st.UIDs) != 1 || st.UIDs[0].Descriptors != 5 || st.UIDs[0].Objects != 3 {
		t.Fatalf("stats %+v", st)
	}
	// 5 handles held, cap 6: one import fits, the next does not.
	if r := c.do(wire.CmdImport, importAttr(0), nil, fd); r.h.Errno != 0 {
		t.Fatalf("import: %v", r.errno())
	}
	if r := c.do(wire.CmdImport, importAttr(0), nil, fd); r.errno() != unix.EMFILE {
		t.Fatalf("over handle cap: %v", r.errno())
	}
}

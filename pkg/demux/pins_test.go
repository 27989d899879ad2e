package demux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// pinEnv is a server with pins whose socket and pin root sit in a
// world-traversable directory, so that a child running as another uid can
// reach both.
type pinEnv struct {
	srv  *Server
	sock string
	root string // pin root
}

func traversableDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bpfd-demux-pins-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startPinServer starts a server with a pin root (and cfg's Persister).
// The returned function shuts it down (also run at cleanup).
func startPinServer(t testing.TB, base string, per Persister) (*pinEnv, func()) {
	t.Helper()
	if base == "" {
		base = traversableDir(t)
	}
	e := &pinEnv{sock: filepath.Join(base, "bpfd.sock"), root: filepath.Join(base, "pins")}
	srv, err := NewServer(&Config{Logger: zap.NewNop(), PinRoot: e.root, Persister: per})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	os.Remove(e.sock)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(e.sock, 0o666)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := <-done; err != ErrServerClosed {
				t.Errorf("Serve returned %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return e, stop
}

func pinAttr(h uint32, perm uint32, path string) []byte {
	a := wire.ObjPinAttr{Handle: h, FileMode: perm, PathLen: uint32(len(path))}
	return a.Append(nil)
}

func objGetAttr(m wire.Mode) []byte {
	a := wire.ObjGetAttr{Mode: m}
	return a.Append(nil)
}

func mkdirAttr(perm uint32, path string) []byte {
	a := wire.PinMkdirAttr{FileMode: perm, PathLen: uint32(len(path))}
	return a.Append(nil)
}

func (c *client) pin(h uint32, perm uint32, path string) unix.Errno {
	c.t.Helper()
	return c.do(wire.CmdObjPin, pinAttr(h, perm, path), []byte(path)).errno()
}

// get opens path with flags and presents it with OBJ_GET asking for mode;
// it returns the reply (the open's own error is fatal).
func (c *client) get(path string, flags int, mode wire.Mode) reply {
	c.t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		c.t.Fatalf("open %s: %v", path, err)
	}
	defer unix.Close(fd)
	return c.do(wire.CmdObjGet, objGetAttr(mode), nil, fd)
}

// createMapOwned is createMap, but the caller owns (and must close) the
// descriptor.
func (c *client) createMapOwned(typ, ks, vs, n uint32) (uint32, int) {
	c.t.Helper()
	r := c.do(wire.CmdMapCreate, mapCreateAttr(typ, ks, vs, n, 0, "m"), nil)
	if r.h.Errno != 0 || len(r.fds) != 1 {
		c.t.Fatalf("map create: %v", r.errno())
	}
	fd := r.fds[0]
	r.fds[0] = -1
	return uint32(r.h.Ret), fd
}

func replyInfo(t testing.TB, r reply) wire.ObjInfo {
	t.Helper()
	var o wire.ObjInfo
	if !o.Parse(r.data) {
		t.Fatalf("reply data is not an ObjInfo: %d bytes", len(r.data))
	}
	return o
}

func TestPinGetModes(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeHash, 4, 4, 8, 0)
	if r := c.do(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(u32(1), u32(42))); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if e := c.pin(h, 0o600, "m"); e != 0 {
		t.Fatalf("pin: %v", e)
	}
	// A read-only handle pins a read-only object view, whatever the file
	// mode allows.
	rr := c.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
	if rr.h.Errno != 0 {
		t.Fatal(rr.errno())
	}
	if e := c.pin(uint32(rr.h.Ret), 0o666, "ro"); e != 0 {
		t.Fatalf("pin ro: %v", e)
	}
	st, err := os.Stat(filepath.Join(e.root, "m"))
	if err != nil || st.Mode().Perm() != 0o600 || !st.Mode().IsRegular() {
		t.Fatalf("pin file: %v %v", st, err)
	}
	content, _ := os.ReadFile(filepath.Join(e.root, "m"))
	if !bytes.Contains(content, []byte("type: map\n")) {
		t.Errorf("pin content %q", content)
	}

	tests := []struct {
		name     string
		path     string
		flags    int
		ask      wire.Mode
		want     wire.Mode
		wantErr  unix.Errno
		lookupOK bool
	}{
		// "m" was pinned through the creating handle: its file's owner
		// (this test's uid) gets the destroy right too.
		{name: "rdonly", path: "m", flags: unix.O_RDONLY, want: wire.ModeRead | wire.ModeDestroy, lookupOK: true},
		{name: "wronly", path: "m", flags: unix.O_WRONLY, want: wire.ModeWrite | wire.ModeDestroy},
		{name: "rdwr", path: "m", flags: unix.O_RDWR, want: wire.ModeAll, lookupOK: true},
		{name: "rdwr asks read", path: "m", flags: unix.O_RDWR, ask: wire.ModeRead, want: wire.ModeRead, lookupOK: true},
		{name: "rdonly asks write", path: "m", flags: unix.O_RDONLY, ask: wire.ModeWrite, wantErr: unix.EACCES},
		{name: "O_PATH grants the owner only destroy", path: "m", flags: unix.O_PATH, want: wire.ModeDestroy},
		{name: "O_PATH asks read", path: "m", flags: unix.O_PATH, ask: wire.ModeRead, wantErr: unix.EACCES},
		{name: "bad mode", path: "m", flags: unix.O_RDONLY, ask: 8, wantErr: unix.EINVAL},
		// "ro" was pinned through a reopened read-only handle: no
		// destroy right, whoever owns the file.
		{name: "ro pin opened rdwr", path: "ro", flags: unix.O_RDWR, want: wire.ModeRead, lookupOK: true},
		{name: "ro pin opened wronly", path: "ro", flags: unix.O_WRONLY, wantErr: unix.EACCES},
		{name: "ro pin O_PATH", path: "ro", flags: unix.O_PATH, wantErr: unix.EACCES},
		{name: "ro pin asks destroy", path: "ro", flags: unix.O_RDONLY, ask: wire.ModeRead | wire.ModeDestroy, wantErr: unix.EACCES},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.get(filepath.Join(e.root, tt.path), tt.flags, tt.ask)
			if r.errno() != tt.wantErr {
				t.Fatalf("OBJ_GET errno %v, want %v", r.errno(), tt.wantErr)
			}
			if tt.wantErr != 0 {
				if len(r.fds) != 0 {
					t.Fatal("failed reply carried fds")
				}
				return
			}
			if len(r.fds) != 1 {
				t.Fatalf("OBJ_GET returned %d fds", len(r.fds))
			}
			if o := replyInfo(t, r); o.Mode != tt.want || o.ObjType != wire.ObjMap || o.KeySize != 4 {
				t.Fatalf("info %+v, want mode %v", o, tt.want)
			}
			nh := uint32(r.h.Ret)
			lr := c.do(wire.CmdMapLookupElem, elemAttr(nh, 0), u32(1))
			if tt.lookupOK != (lr.h.Errno == 0) {
				t.Fatalf("lookup through %v handle: %v", tt.want, lr.errno())
			}
			if tt.lookupOK && !bytes.Equal(lr.data, u32(42)) {
				t.Fatalf("lookup = %x", lr.data)
			}
			ur := c.do(wire.CmdMapUpdateElem, elemAttr(nh, 0), cat(u32(2), u32(7)))
			if wantOK := tt.want&wire.ModeWrite != 0; wantOK != (ur.h.Errno == 0) {
				t.Fatalf("update through %v handle: %v", tt.want, ur.errno())
			}
			// The descriptor imports with the same mode elsewhere.
			c2 := dial(t, e.sock)
			ir := c2.do(wire.CmdImport, importAttr(0), nil, r.fds[0])
			if ir.h.Errno != 0 || replyInfo(t, ir).Mode != tt.want {
				t.Fatalf("import of OBJ_GET descriptor: %v", ir.errno())
			}
		})
	}
}

func TestPinErrors(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeArray, 4, 8, 4, 0)
	if e := c.pin(h, 0o644, "taken"); e != 0 {
		t.Fatal(e)
	}
	other := filepath.Join(t.TempDir(), "notpin")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cmd  wire.Cmd
		attr []byte
		data []byte
		fds  []int
		want unix.Errno
	}{
		{"pin existing path", wire.CmdObjPin, pinAttr(h, 0o600, "taken"), []byte("taken"), nil, unix.EEXIST},
		{"pin bad handle", wire.CmdObjPin, pinAttr(99, 0o600, "x"), []byte("x"), nil, unix.EBADF},
		{"pin outside root", wire.CmdObjPin, pinAttr(h, 0o600, "/tmp/x"), []byte("/tmp/x"), nil, unix.EINVAL},
		{"pin dotdot", wire.CmdObjPin, pinAttr(h, 0o600, "../x"), []byte("../x"), nil, unix.EINVAL},
		{"pin setuid bit", wire.CmdObjPin, pinAttr(h, 0o4755, "x"), []byte("x"), nil, unix.EINVAL},
		{"pin path length mismatch", wire.CmdObjPin, pinAttr(h, 0o600, "xy"), []byte("x"), nil, unix.EINVAL},
		{"pin empty path", wire.CmdObjPin, pinAttr(h, 0o600, ""), nil, nil, unix.EINVAL},
		{"pin NUL in path", wire.CmdObjPin, pinAttr(h, 0o600, "a\x00b"), []byte("a\x00b"), nil, unix.EINVAL},
		{"pin missing dir", wire.CmdObjPin, pinAttr(h, 0o600, "nodir/x"), []byte("nodir/x"), nil, unix.ENOENT},
		{"pin with fd", wire.CmdObjPin, pinAttr(h, 0o600, "y"), []byte("y"), []int{0}, unix.EINVAL},
		{"get no fd", wire.CmdObjGet, objGetAttr(0), nil, nil, unix.EBADF},
		{"get data", wire.CmdObjGet, objGetAttr(0), []byte("x"), []int{0}, unix.EINVAL},
		{"mkdir bad perm", wire.CmdPinMkdir, mkdirAttr(0o1777, "d"), []byte("d"), nil, unix.EINVAL},
		{"mkdir outside", wire.CmdPinMkdir, mkdirAttr(0o755, "/etc/d"), []byte("/etc/d"), nil, unix.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := c.do(tt.cmd, tt.attr, tt.data, tt.fds...); r.errno() != tt.want {
				t.Fatalf("errno %v, want %v", r.errno(), tt.want)
			}
		})
	}
	t.Run("get non-pin file", func(t *testing.T) {
		if r := c.get(other, unix.O_RDONLY, 0); r.errno() != unix.EBADF {
			t.Fatalf("errno %v, want EBADF", r.errno())
		}
	})
	t.Run("get pin root dir", func(t *testing.T) {
		if r := c.get(e.root, unix.O_RDONLY, 0); r.errno() != unix.EBADF {
			t.Fatalf("errno %v, want EBADF", r.errno())
		}
	})
	t.Run("mkdir then pin inside, absolute path", func(t *testing.T) {
		if r := c.do(wire.CmdPinMkdir, mkdirAttr(0o750, "dir"), []byte("dir")); r.h.Errno != 0 {
			t.Fatal(r.errno())
		}
		if st, err := os.Stat(filepath.Join(e.root, "dir")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o750 {
			t.Fatalf("dir: %v %v", st, err)
		}
		abs := filepath.Join(e.root, "dir", "p")
		if e := c.pin(h, 0o600, abs); e != 0 {
			t.Fatal(e)
		}
		if r := c.get(abs, unix.O_RDONLY, 0); r.h.Errno != 0 {
			t.Fatal(r.errno())
		}
		if r := c.do(wire.CmdPinMkdir, mkdirAttr(0o750, "dir"), []byte("dir")); r.errno() != unix.EEXIST {
			t.Fatalf("second mkdir: %v", r.errno())
		}
	})
}

func TestPinsDisabled(t *testing.T) {
	_, path := startServer(t, nil)
	c := dial(t, path)
	h, _ := c.createMap(maps.TypeArray, 4, 4, 1, 0)
	if e := c.pin(h, 0o600, "x"); e != unix.EOPNOTSUPP {
		t.Fatalf("pin without pin root: %v", e)
	}
	if r := c.do(wire.CmdObjGet, objGetAttr(0), nil, 0); r.errno() != unix.EOPNOTSUPP {
		t.Fatalf("get without pin root: %v", r.errno())
	}
}

func TestPinSymlinkNeverFollowed(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeArray, 4, 4, 1, 0)
	outside := traversableDir(t)
	if err := os.Symlink(outside, filepath.Join(e.root, "evil")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(e.root, "evilfile")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cmd  wire.Cmd
		path string
	}{
		{"pin through symlinked dir", wire.CmdObjPin, "evil/p"},
		{"pin at a symlink", wire.CmdObjPin, "evilfile"},
		{"absolute path through symlink", wire.CmdObjPin, filepath.Join(e.root, "evil", "q")},
		{"mkdir through symlinked dir", wire.CmdPinMkdir, "evil/d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var attr []byte
			if tt.cmd == wire.CmdObjPin {
				attr = pinAttr(h, 0o644, tt.path)
			} else {
				attr = mkdirAttr(0o755, tt.path)
			}
			if r := c.do(tt.cmd, attr, []byte(tt.path)); r.h.Errno == 0 {
				t.Fatalf("%v %s followed a symlink", tt.cmd, tt.path)
			}
		})
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("files created outside the pin root: %v", ents)
	}
}

func TestUnlinkUnpinsAndFrees(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	c := dial(t, e.sock)
	h, fd := c.createMapOwned(maps.TypeHash, 4, 4, 4)
	for _, p := range []string{"a", "b"} {
		if e := c.pin(h, 0o600, p); e != 0 {
			t.Fatal(e)
		}
	}
	// Nothing but the pins holds the map now.
	unix.Close(fd)
	if r := c.do(wire.CmdRelease, handleAttr(h, 0), nil); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	waitStats(t, e.srv, "descriptor gone", func(st Stats) bool { return st.Descriptors == 0 && st.Handles == 0 })
	if st := e.srv.Stats(); st.Objects != 1 {
		t.Fatalf("pinned object freed: %+v", st)
	}
	// An fd opened before the unlink yields nothing after it.
	early, err := unix.Open(filepath.Join(e.root, "a"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(early)
	if err := os.Remove(filepath.Join(e.root, "a")); err != nil {
		t.Fatal(err)
	}
	if r := c.do(wire.CmdObjGet, objGetAttr(0), nil, early); r.errno() != unix.ENOENT {
		t.Fatalf("OBJ_GET of an unlinked pin: %v, want ENOENT", r.errno())
	}
	// The other pin still holds the object.
	time.Sleep(50 * time.Millisecond)
	if st := e.srv.Stats(); st.Objects != 1 {
		t.Fatalf("object freed with a pin left: %+v", st)
	}
	// A handle from the remaining pin, then unlink it: the handle keeps the
	// object; releasing the handle frees it.
	r := c.get(filepath.Join(e.root, "b"), unix.O_RDONLY, 0)
	if r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if err := os.Remove(filepath.Join(e.root, "b")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if st := e.srv.Stats(); st.Objects != 1 {
		t.Fatalf("object freed while a handle holds it: %+v", st)
	}
	unix.Close(r.fds[0])
	r.fds[0] = -1
	if rr := c.do(wire.CmdRelease, handleAttr(uint32(r.h.Ret), 0), nil); rr.h.Errno != 0 {
		t.Fatal(rr.errno())
	}
	waitStats(t, e.srv, "object freed", func(st Stats) bool {
		return st.Objects == 0 && st.MapMemory == 0 && st.Descriptors == 0
	})
}

// memPersister records pinned objects in memory.
type memPersister struct {
	mu       sync.Mutex
	objs     map[string]*PinnedObject
	saves    int
	pinSaves int
	removes  int
	fail     error
}

func (m *memPersister) SavePinned(po *PinnedObject) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if m.objs == nil {
		m.objs = map[string]*PinnedObject{}
	}
	m.objs[po.Key] = po
	m.saves++
	return nil
}

// SavePins replaces the pin part of key's record, as a Persister that
// keeps the two apart would.
func (m *memPersister) SavePins(po *PinnedObject) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	old := m.objs[po.Key]
	if old == nil {
		return fmt.Errorf("SavePins of %s before SavePinned", po.Key)
	}
	cp := *old
	cp.Pins, cp.Nodes, cp.NextNode, cp.PinRoot = po.Pins, po.Nodes, po.NextNode, po.PinRoot
	m.objs[po.Key] = &cp
	m.pinSaves++
	return nil
}

func (m *memPersister) RemovePinned(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	m.removes++
	return nil
}

func (m *memPersister) only(t testing.TB) *PinnedObject {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.objs) != 1 {
		t.Fatalf("%d persisted objects, want 1", len(m.objs))
	}
	for _, po := range m.objs {
		return po
	}
	return nil
}

func TestPinPersistAndRestore(t *testing.T) {
	base := traversableDir(t)
	per := &memPersister{}
	e, stop := startPinServer(t, base, per)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeHash, 4, 4, 16, 0)
	c.do(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(u32(1), u32(10)))
	if e := c.pin(h, 0o640, "keep"); e != 0 {
		t.Fatal(e)
	}
	// Saved at pin time, with the contents of the moment.
	po := per.only(t)
	if len(po.Pins) != 1 || po.Pins[0].Path != "keep" || po.Pins[0].Perm != 0o640 || po.Pins[0].Mode != wire.ModeAll {
		t.Fatalf("record at pin time: %+v", po)
	}
	if !bytes.Equal(po.Entries, cat(u32(1), u32(10))) {
		t.Fatalf("entries at pin time %x", po.Entries)
	}
	// Changes after the pin reach the record at shutdown; a rename inside
	// the root is followed.
	c.do(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(u32(2), u32(20)))
	if r := c.do(wire.CmdMapFreeze, elemAttr(h, 0), nil); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if err := os.Rename(filepath.Join(e.root, "keep"), filepath.Join(e.root, "moved")); err != nil {
		t.Fatal(err)
	}
	// A second map pinned then unpinned leaves no record.
	h2, _ := c.createMap(maps.TypeArray, 4, 4, 2, 0)
	if e := c.pin(h2, 0o600, "gone"); e != 0 {
		t.Fatal(e)
	}
	if err := os.Remove(filepath.Join(e.root, "gone")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		per.mu.Lock()
		n := len(per.objs)
		per.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unpinned object's record not removed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.nc.Close()
	stop()
	po = per.only(t)
	if !po.Frozen || len(po.Pins) != 1 || po.Pins[0].Path != "moved" || len(po.Entries) != 16 {
		t.Fatalf("record at shutdown: %+v", po)
	}

	// A new server restores the map behind the same (adopted) pin file.
	per2 := &memPersister{}
	e2, _ := startPinServer(t, base, per2)
	n, err := e2.srv.RestorePinned(po)
	if err != nil || n != 1 {
		t.Fatalf("RestorePinned = %d, %v", n, err)
	}
	if got := per2.only(t); got.Key != po.Key || got.Pins[0].Ino != po.Pins[0].Ino {
		t.Fatalf("restored record %+v, want the same key and inode as %+v", got, po)
	}
	c2 := dial(t, e2.sock)
	r := c2.get(filepath.Join(e2.root, "moved"), unix.O_RDWR, 0)
	if r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	o := replyInfo(t, r)
	if o.Frozen != 1 || o.MaxEntries != 16 {
		t.Fatalf("restored info %+v", o)
	}
	for k, v := range map[uint32]uint32{1: 10, 2: 20} {
		lr := c2.do(wire.CmdMapLookupElem, elemAttr(uint32(r.h.Ret), 0), u32(k))
		if lr.h.Errno != 0 || !bytes.Equal(lr.data, u32(v)) {
			t.Fatalf("restored lookup %d: %v %x", k, lr.errno(), lr.data)
		}
	}
	// A pin file replaced by another file is not adopted; a missing one is
	// re-created (with its directory).
	replaced := *po
	replaced.Key = "0123456789abcdef0123456789abcdef"
	replaced.Nodes, replaced.NextNode = nil, 9
	replaced.Pins = []PinRecord{{Path: "impostor", Mode: wire.ModeRead, Node: 9, Perm: 0o644, Ino: 1}}
	os.WriteFile(filepath.Join(e2.root, "impostor"), nil, 0o666)
	if _, err := e2.srv.RestorePinned(&replaced); !errors.Is(err, ErrNoPins) {
		t.Fatalf("restore over an impostor file: %v", err)
	}
	replaced.Pins = []PinRecord{{Path: "sub/dir/again", Mode: wire.ModeRead, Node: 9, Perm: 0o644}}
	if n, err := e2.srv.RestorePinned(&replaced); err != nil || n != 1 {
		t.Fatalf("restore with a missing file: %d %v", n, err)
	}
	if st, err := os.Stat(filepath.Join(e2.root, "sub/dir/again")); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("re-created pin: %v %v", st, err)
	}
	if r := c2.get(filepath.Join(e2.root, "sub/dir/again"), unix.O_RDWR, 0); r.h.Errno != 0 || replyInfo(t, r).Mode != wire.ModeRead {
		t.Fatalf("re-created pin grants %v %v", r.errno(), replyInfo(t, r).Mode)
	}
}

func TestPinPersistFailureUndoesPin(t *testing.T) {
	per := &memPersister{fail: errors.New("disk full")}
	e, _ := startPinServer(t, "", per)
	c := dial(t, e.sock)
	h, fd := c.createMapOwned(maps.TypeArray, 4, 4, 1)
	unix.Close(fd)
	if e := c.pin(h, 0o600, "p"); e == 0 {
		t.Fatal("pin succeeded although it could not be persisted")
	}
	if _, err := os.Lstat(filepath.Join(e.root, "p")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin file left behind: %v", err)
	}
	// The pin's reference was dropped: closing the connection frees the map.
	c.nc.Close()
	waitStats(t, e.srv, "object freed", func(st Stats) bool { return st.Objects == 0 })
}

// The cross-uid test: root pins maps; a child process running as uid 65534
// opens the pin files itself and gets exactly what the kernel lets it open.

const childEnv = "BPFD_DEMUX_PIN_CHILD"

func TestPinsAcrossUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the other side as uid 65534")
	}
	e, _ := startPinServer(t, "", nil)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeHash, 4, 4, 8, 0)
	c.do(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(u32(5), u32(55)))
	for _, p := range []struct {
		path string
		perm uint32
	}{{"secret", 0o640}, {"public", 0o644}, {"shared", 0o666}} {
		if e := c.pin(h, p.perm, p.path); e != 0 {
			t.Fatalf("pin %s: %v", p.path, e)
		}
	}

	// The test binary must be somewhere uid 65534 can execute it.
	bin := filepath.Join(traversableDir(t), "demux.test")
	copyFile(t, os.Args[0], bin, 0o755)
	cmd := exec.Command(bin, "-test.run=^TestPinChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1", "BPFD_SOCK="+e.sock, "BPFD_PINS="+e.root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPinChild") {
		t.Fatalf("child as uid 65534: %v\n%s", err, out)
	}
	// What the child made is the child's.
	for _, p := range []string{"nobody", "nobody/mine"} {
		st, err := os.Stat(filepath.Join(e.root, p))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65534 || sys.Gid != 65534 {
			t.Fatalf("%s owned by %d:%d, want 65534:65534", p, sys.Uid, sys.Gid)
		}
	}
	// And root's pins were not touched.
	if st, _ := os.Stat(filepath.Join(e.root, "secret")); st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("secret pin changed owner")
	}
}

// TestPinChild is the uid 65534 side of TestPinsAcrossUIDs.
func TestPinChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("runs only as the child of TestPinsAcrossUIDs")
	}
	if os.Geteuid() != 65534 {
		t.Fatalf("child runs as uid %d", os.Geteuid())
	}
	root := os.Getenv("BPFD_PINS")
	c := dial(t, os.Getenv("BPFD_SOCK"))
	// 0640 root:root — the kernel refuses the open.
	if _, err := unix.Open(filepath.Join(root, "secret"), unix.O_RDONLY, 0); err != unix.EACCES {
		t.Fatalf("open 0640 pin of another user: %v, want EACCES", err)
	}
	// 0644 — read-only: O_RDWR fails in the kernel, O_RDONLY gives a read
	// handle.
	if _, err := unix.Open(filepath.Join(root, "public"), unix.O_RDWR, 0); err != unix.EACCES {
		t.Fatalf("open 0644 pin O_RDWR: %v, want EACCES", err)
	}
	r := c.get(filepath.Join(root, "public"), unix.O_RDONLY, 0)
	if r.h.Errno != 0 || replyInfo(t, r).Mode != wire.ModeRead {
		t.Fatalf("OBJ_GET of 0644 pin: %v", r.errno())
	}
	ph := uint32(r.h.Ret)
	if lr := c.do(wire.CmdMapLookupElem, elemAttr(ph, 0), u32(5)); lr.h.Errno != 0 || !bytes.Equal(lr.data, u32(55)) {
		t.Fatalf("lookup through read pin: %v", lr.errno())
	}
	if ur := c.do(wire.CmdMapUpdateElem, elemAttr(ph, 0), cat(u32(5), u32(0))); ur.errno() != unix.EPERM {
		t.Fatalf("update through read pin: %v, want EPERM", ur.errno())
	}
	// Asking the daemon for more than the open granted is refused.
	if r := c.get(filepath.Join(root, "public"), unix.O_RDONLY, wire.ModeReadWrite); r.errno() != unix.EACCES {
		t.Fatalf("OBJ_GET asking rw on an O_RDONLY fd: %v", r.errno())
	}
	// 0666 — read-write.
	if r := c.get(filepath.Join(root, "shared"), unix.O_RDWR, 0); r.h.Errno != 0 || replyInfo(t, r).Mode != wire.ModeReadWrite {
		t.Fatalf("OBJ_GET of 0666 pin O_RDWR: %v", r.errno())
	}
	// Unlinking root's pin in the sticky root is refused by the kernel.
	if err := os.Remove(filepath.Join(root, "shared")); !errors.Is(err, unix.EPERM) {
		t.Fatalf("unlink of root's pin: %v, want EPERM", err)
	}
	// Its own directory and pin, owned by it.
	if r := c.do(wire.CmdPinMkdir, mkdirAttr(0o755, "nobody"), []byte("nobody")); r.h.Errno != 0 {
		t.Fatalf("mkdir: %v", r.errno())
	}
	mh, _ := c.createMap(maps.TypeArray, 4, 4, 1, 0)
	if e := c.pin(mh, 0o600, "nobody/mine"); e != 0 {
		t.Fatalf("pin own map: %v", e)
	}
	if r := c.get(filepath.Join(root, "nobody/mine"), unix.O_RDWR, 0); r.h.Errno != 0 {
		t.Fatalf("OBJ_GET own pin: %v", r.errno())
	}
}

func copyFile(t testing.TB, src, dst string, perm os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

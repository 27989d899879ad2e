package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDefaultSocket(t *testing.T) {
	tests := []struct {
		name, env, xdg string
		want           string
	}{
		{name: "env override", env: "/tmp/x.sock", xdg: "/run/user/7", want: "/tmp/x.sock"},
		{name: "default", xdg: "/run/user/7", want: map[bool]string{true: "/run/bpfd/bpfd.sock", false: "/run/user/7/bpfd/bpfd.sock"}[os.Geteuid() == 0]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(SocketEnv, tt.env)
			t.Setenv("XDG_RUNTIME_DIR", tt.xdg)
			if got := DefaultSocket(); got != tt.want {
				t.Fatalf("DefaultSocket() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDialEnv(t *testing.T) {
	s := startServer(t)
	t.Setenv(SocketEnv, s.path)
	c, err := Dial("")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ServerVersion() == "" {
		t.Fatal("no server version")
	}
	if _, err := Dial(filepath.Join(s.dir, "missing.sock")); err == nil {
		t.Fatal("Dial of a missing socket succeeded")
	}
}

// TestPipelining sends from many goroutines on one Conn and checks that
// every reply reaches the goroutine that asked.
func TestPipelining(t *testing.T) {
	c := newTestConn(t)
	const n = 256
	m := fillHash(t, c, n, n)
	arr := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: n})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, 8)
			for i := range 300 {
				k := uint32((g*131 + i*7) % n)
				if err := m.Lookup(u32(k), v); err != nil {
					errs <- err
					return
				}
				if got := binary.LittleEndian.Uint64(v); got != uint64(k)*3 {
					errs <- errors.New("reply for another request: key " + itoa(uint64(k)) + " got " + itoa(got))
					return
				}
				// Each goroutine owns index g of the array.
				if err := arr.Update(u32(uint32(g)), u64(uint64(i)), UpdateAny); err != nil {
					errs <- err
					return
				}
				if err := arr.Lookup(u32(uint32(g)), v); err != nil || binary.LittleEndian.Uint64(v) != uint64(i) {
					errs <- errors.New("array reply mismatch")
					return
				}
				if err := m.Lookup(u32(n+uint32(g)), v); !errors.Is(err, ErrKeyNotExist) {
					errs <- errors.New("missing key did not give ENOENT")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.Lookup(u32(1), make([]byte, 8)); !errors.Is(err, ErrClosed) || !errors.Is(err, unix.EBADF) {
		t.Fatalf("Lookup after Close: %v", err)
	}
	// The reopened map is independent.
	if err := m2.Lookup(u32(1), make([]byte, 8)); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("reopened map after closing the original: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Conn.Close: %v", err)
	}
	if err := m2.Lookup(u32(1), make([]byte, 8)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lookup after Conn.Close: %v", err)
	}
	if _, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4}); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewMap after Conn.Close: %v", err)
	}
	if err := m2.Close(); err != nil {
		t.Fatalf("closing a Map of a closed Conn: %v", err)
	}
}

// TestConcurrentClose closes a Map and its Conn while goroutines use them:
// every call either works or fails with ErrClosed, and nothing hangs.
func TestConcurrentClose(t *testing.T) {
	s := startServer(t)
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	m := fillHash(t, c, 16, 16)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, 8)
			for i := 0; ; i++ {
				err := m.Lookup(u32(uint32(i%16)), v)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	m2, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, 8)
			for {
				err := m2.Lookup(u32(1), v)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	c.Close()
	wg.Wait()
	m2.Close()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestLostConnection(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	// A Shutdown of the daemon ends the connection.
	ctx := t.Context()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	err := m.Lookup(u32(0), make([]byte, 8))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Lookup after the daemon went away: %v", err)
	}
}

func TestImportMapOwnership(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err := m.Update(u32(1), u64(11), UpdateAny); err != nil {
		t.Fatal(err)
	}
	// Import on the same connection: the caller's fd stays open and
	// usable; the imported Map has its own.
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	im, err := c.ImportMap(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if im.FD() == fd {
		t.Fatal("ImportMap kept the caller's fd")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("caller's fd closed by ImportMap/Close: %v", err)
	}
	im2, err := c.ImportMap(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	unix.Close(fd)
	v := make([]byte, 8)
	if err := im2.Lookup(u32(1), v); err != nil || !bytes.Equal(v, u64(11)) {
		t.Fatalf("lookup through import: %x, %v", v, err)
	}
	if info, err := im2.Info(); err != nil || info.Mode != ModeAll {
		t.Fatalf("imported Info: %+v, %v", info, err)
	}
	if _, err := c.ImportMap(-1); err == nil {
		t.Fatal("ImportMap(-1) succeeded")
	}
}

func TestInfo(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 16, MaxEntries: 8, Name: "info_test"})
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != Array || info.KeySize != 4 || info.ValueSize != 16 || info.MaxEntries != 8 ||
		info.Name != "info_test" || info.Mode != ModeAll || info.Frozen || info.ID == 0 || info.MemoryUsage == 0 {
		t.Fatalf("Info = %+v", info)
	}
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if info, err := m.Info(); err != nil || !info.Frozen {
		t.Fatalf("after Freeze: %+v, %v", info, err)
	}
	w, err := m.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if info2, err := w.Info(); err != nil || info2.Mode != ModeWrite || info2.ID != info.ID {
		t.Fatalf("write-only Info = %+v, %v", info2, err)
	}
	if _, err := m.Reopen(0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Reopen(0): %v", err)
	}
	if _, err := w.Reopen(ModeRead); !errors.Is(err, ErrPermission) {
		t.Fatalf("Reopen(read) of write-only: %v", err)
	}
	if _, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "much_too_long_a_name"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("long name: %v", err)
	}
}

func TestSizeChecks(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	tests := []struct {
		name string
		err  error
	}{
		{"short key", m.Lookup(make([]byte, 3), make([]byte, 8))},
		{"long value", m.Lookup(make([]byte, 4), make([]byte, 9))},
		{"update short value", m.Update(make([]byte, 4), make([]byte, 1), UpdateAny)},
		{"delete long key", m.Delete(make([]byte, 5))},
		{"next short out", m.NextKey(nil, make([]byte, 2))},
		{"batch ragged keys", second(m.BatchDelete(make([]byte, 6), nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, ErrInvalid) {
				t.Fatalf("%v, want EINVAL", tt.err)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	want := s.srv.Stats()
	if st.Objects != want.Objects || st.Maps != 1 || st.MapMemory != info.MemoryUsage || st.Connections != want.Connections {
		t.Fatalf("Status = %+v, server stats %+v", st, want)
	}
	if len(st.UIDs) == 0 || st.UIDs[0].Quota.Objects == 0 {
		t.Fatalf("no per-uid quota in %+v", st)
	}
}

// TestLargeUpdateMemfd sends a batch far larger than a message (sealed
// memfd) and reads it back in one reply memfd.
func TestLargeUpdateMemfd(t *testing.T) {
	c := newTestConn(t)
	const n = 1 << 16
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: n})
	keys, values := make([]byte, 4*n), make([]byte, 8*n)
	for i := range n {
		binary.LittleEndian.PutUint32(keys[4*i:], uint32(i))
		binary.LittleEndian.PutUint64(values[8*i:], ^uint64(i))
	}
	if got, err := m.BatchUpdate(keys, values, nil); err != nil || got != n {
		t.Fatalf("BatchUpdate = %d, %v", got, err)
	}
	gotK, gotV := make([]byte, 4*n), make([]byte, 8*n)
	cnt, err := m.BatchLookup(&MapBatchCursor{}, gotK, gotV, nil)
	if cnt != n || (err != nil && !errors.Is(err, ErrKeyNotExist)) {
		t.Fatalf("BatchLookup = %d, %v", cnt, err)
	}
	if !bytes.Equal(gotK, keys) || !bytes.Equal(gotV, values) {
		t.Fatal("batch round trip through memfds changed the data")
	}
}

// TestElementOpsDoNotAllocate: once warm, the element round trips and a
// failed lookup allocate nothing in the client.
func TestElementOpsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	k, missing, v := u32(1), u32(2), make([]byte, 8)
	if err := m.Update(k, v, UpdateAny); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   func()
	}{
		{"lookup", func() { m.Lookup(k, v) }},
		{"failed lookup", func() { m.Lookup(missing, v) }},
		{"update", func() { m.Update(k, v, UpdateExist) }},
		{"next key", func() { m.NextKey(nil, missing) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(200, tt.op); n != 0 {
				t.Fatalf("%v allocations per op", n)
			}
		})
	}
}

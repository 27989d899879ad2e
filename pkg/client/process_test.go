package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startChild starts role with one end of a fresh socketpair as its fd 3
// and returns the other end. Output goes to the test log; the child must
// exit 0 by cleanup.
func startChild(t *testing.T, role string, env ...string) (*os.File, *bytes.Buffer, func() error) {
	t.Helper()
	a, b, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bf, err := b.File()
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	af, err := a.File()
	a.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { af.Close() })
	cmd := child(t, role, []*os.File{bf}, env...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return af, out, cmd.Wait
}

// TestDescriptorAcrossUsers is the scenario: process A (this
// test) creates a map, reopens it read-only and sends that descriptor to
// process B running as another uid. B imports it: lookups work, writes and
// an upgrading reopen fail with EPERM, and a socket of B's own presented as
// a descriptor fails with EBADF. When everything is closed the map is freed
// and its quota returned.
func TestDescriptorAcrossUsers(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	base := s.stats(t)
	m, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(u32(1), u64(100), UpdateAny); err != nil {
		t.Fatal(err)
	}
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := ro.Info(); err != nil || info.Mode != ModeRead || info.Name != "shared" {
		t.Fatalf("read-only Info = %+v, %v", info, err)
	}
	if live := s.stats(t); live.objects != base.objects+1 || live.memory <= base.memory {
		t.Fatalf("with the map alive: %+v, base %+v", live, base)
	}

	peer, out, wait := startChild(t, "importer", socketEnvTest+"="+s.path)
	pc, err := fdConn(int(peer.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := SendDescriptors(pc, ro.FD()); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("importer: %v\n%s", err, trimOutput(out.Bytes()))
	}
	t.Logf("importer:\n%s", trimOutput(out.Bytes()))

	// B's failed writes changed nothing.
	v := make([]byte, 8)
	if err := m.Lookup(u32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 100 {
		t.Fatalf("after B: value %x, %v", v, err)
	}
	if err := m.Lookup(u32(2), v); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("B's update went through: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	s.waitStats(t, base)
}

// childImporter is process B of TestDescriptorAcrossUsers.
func childImporter() error {
	pc, err := fdConn(3)
	if err != nil {
		return err
	}
	defer pc.Close()
	fds, err := ReceiveDescriptors(pc, 1)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := c.ImportMap(fds[0])
	unix.Close(fds[0]) // ImportMap made its own copy
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil || info.Mode != ModeRead || info.KeySize != 4 || info.ValueSize != 8 {
		return fmt.Errorf("info %+v, %v", info, err)
	}
	v := make([]byte, 8)
	if err := m.Lookup(u32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 100 {
		return fmt.Errorf("lookup: %x, %v", v, err)
	}
	if err := m.NextKey(nil, make([]byte, 4)); err != nil {
		return fmt.Errorf("next key: %v", err)
	}
	eperm := []struct {
		name string
		err  error
	}{
		{"Update", m.Update(u32(2), u64(2), UpdateAny)},
		{"Update existing", m.Update(u32(1), u64(2), UpdateExist)},
		{"Delete", m.Delete(u32(1))},
		{"Freeze", m.Freeze()},
		{"LookupAndDelete", m.LookupAndDelete(u32(1), v)},
		{"Reopen(rw)", reopenErr(m, ModeReadWrite)},
		{"Reopen(w)", reopenErr(m, ModeWrite)},
		{"BatchUpdate", second(m.BatchUpdate(u32(3), u64(3), nil))},
		{"BatchDelete", second(m.BatchDelete(u32(1), nil))},
	}
	for _, e := range eperm {
		if !errors.Is(e.err, ErrPermission) || !errors.Is(e.err, unix.EPERM) {
			return fmt.Errorf("%s through a read-only descriptor: %v, want EPERM", e.name, e.err)
		}
		fmt.Printf("%s: %v (EPERM as expected)\n", e.name, e.err)
	}
	ro2, err := m.Reopen(ModeRead)
	if err != nil {
		return fmt.Errorf("reopen read-only: %w", err)
	}
	ro2.Close()

	// A socket B made itself is not a descriptor.
	x, y, err := socketpair()
	if err != nil {
		return err
	}
	defer x.Close()
	defer y.Close()
	xf, err := x.File()
	if err != nil {
		return err
	}
	defer xf.Close()
	if _, err := c.ImportMap(int(xf.Fd())); !errors.Is(err, ErrBadDescriptor) || !errors.Is(err, unix.EBADF) {
		return fmt.Errorf("importing my own socket: %v, want EBADF", err)
	}
	fmt.Println("own socket: EBADF as expected")
	// Nor is a pipe.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := c.ImportMap(p[0]); !errors.Is(err, ErrBadDescriptor) {
		return fmt.Errorf("importing a pipe: %v, want EBADF", err)
	}
	fmt.Printf("uid %d: lookups work, writes refused\n", os.Getuid())
	return nil
}

func reopenErr(m *Map, mode Mode) error {
	r, err := m.Reopen(mode)
	if err == nil {
		r.Close()
	}
	return err
}

func second(_ int, err error) error { return err }

// TestChildExitReleases: a child that imports a descriptor, makes another
// and exits without closing anything still releases its references.
func TestChildExitReleases(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	base := s.stats(t)
	m, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	peer, out, wait := startChild(t, "leaker", socketEnvTest+"="+s.path)
	pc, err := fdConn(int(peer.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := SendDescriptors(pc, ro.FD()); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(pc, b[:]); err != nil {
		t.Fatalf("leaker did not report: %v\n%s", err, trimOutput(out.Bytes()))
	}
	// The child alone keeps the map alive now.
	ro.Close()
	m.Close()
	time.Sleep(50 * time.Millisecond)
	if live := s.stats(t); live.objects != base.objects+1 {
		t.Fatalf("map freed while the child holds it: %+v, base %+v", live, base)
	}
	if _, err := pc.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("leaker: %v\n%s", err, trimOutput(out.Bytes()))
	}
	s.waitStats(t, base)
}

// childLeaker imports a descriptor, reopens it, reports, and exits when
// told without closing anything.
func childLeaker() error {
	pc, err := fdConn(3)
	if err != nil {
		return err
	}
	fds, err := ReceiveDescriptors(pc, 1)
	if err != nil {
		return err
	}
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	m, err := c.ImportMap(fds[0])
	if err != nil {
		return err
	}
	if _, err := m.Reopen(ModeRead); err != nil {
		return err
	}
	if _, err := pc.Write([]byte{1}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := pc.Read(b[:]); err != nil {
		return err
	}
	os.Exit(0) // without closing c, m, the reopened map or fds[0]
	return nil
}

// TestFDBaseline: the daemon's fd count (this process's, minus the
// client's) returns to its baseline after many create/reopen/close cycles.
func TestFDBaseline(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	base := s.stats(t)
	before := countFDs(t)
	cycles := 10000
	if testing.Short() {
		cycles = 1000
	}
	spec := MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	for i := range cycles {
		m, err := c.NewMap(spec)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		r, err := m.Reopen(ModeRead)
		if err != nil {
			t.Fatalf("cycle %d: reopen: %v", i, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for countFDs(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := countFDs(t); after > before {
		t.Fatalf("fds: %d before %d cycles, %d after", before, cycles, after)
	}
	s.waitStats(t, base)
}

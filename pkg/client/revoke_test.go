package client

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRevoke: A hands a reopened read-only descriptor to B (another
// connection, as another process would have); B imports it and reopens it
// further; A revokes: B's handles, B's own reopened descriptor and any
// later import all fail, while A's original map is untouched.
func TestRevoke(t *testing.T) {
	s := startServer(t)
	a, b := s.dial(t), s.dial(t)
	m := newTestMap(t, a, MapSpec{Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	given, err := unix.Dup(ro.FD()) // what B received over SCM_RIGHTS
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(given)
	bm, err := b.ImportMap(given)
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	bm2, err := bm.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer bm2.Close()
	v := make([]byte, 4)
	if err := bm2.Lookup(u32le(0), v); err != nil {
		t.Fatalf("lookup before revocation: %v", err)
	}

	// Only the maker may revoke.
	if err := bm.Revoke(); !errors.Is(err, ErrPermission) {
		t.Fatalf("an importer's Revoke: %v, want ErrPermission", err)
	}
	if err := m.Revoke(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoking a creating descriptor: %v, want ErrInvalid", err)
	}
	if err := ro.Revoke(); err != nil {
		t.Fatal(err)
	}
	for name, x := range map[string]*Map{"imported": bm, "reopened from the import": bm2} {
		if err := x.Lookup(u32le(0), v); !errors.Is(err, ErrBadDescriptor) {
			t.Errorf("%s after revocation: %v, want ErrBadDescriptor", name, err)
		}
	}
	if _, err := b.ImportMap(given); !errors.Is(err, ErrBadDescriptor) {
		t.Errorf("importing the revoked descriptor: %v, want ErrBadDescriptor", err)
	}
	if err := m.Lookup(u32le(0), v); err != nil {
		t.Errorf("the original map after revocation: %v", err)
	}
	if err := ro.Lookup(u32le(0), v); !errors.Is(err, ErrClosed) {
		t.Errorf("the revoked Map itself: %v, want ErrClosed", err)
	}
}

// TestDestroy: destroying a map revokes every descriptor and handle of it
// everywhere (an import whose fd was closed, a descriptor reopened from
// it, a handle opened from a pin), removes its pins and destroys the
// program loaded through it; only the destroy right may destroy.
func TestDestroy(t *testing.T) {
	s := startServerPins(t)
	a, b := s.dial(t), s.dial(t)
	m, err := a.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: counterProg(m), License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := a.Pin(m, "victim", 0o644); err != nil {
		t.Fatal(err)
	}
	// B imports a descriptor and closes its fd: the handle lives on.
	fd, _ := unix.Dup(m.FD())
	bm, err := b.ImportMap(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	bro, err := bm.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer bro.Close()
	pinned, err := b.OpenPinnedMap("victim", ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()

	if err := bro.Destroy(); !errors.Is(err, ErrPermission) {
		t.Fatalf("Destroy through a reopened read-only descriptor: %v, want ErrPermission", err)
	}
	if err := pinned.Destroy(); !errors.Is(err, ErrPermission) {
		t.Fatalf("Destroy through a read-only pin handle: %v, want ErrPermission", err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 8)
	for name, x := range map[string]*Map{"import with its fd closed": bm, "reopened": bro, "opened from the pin": pinned} {
		if err := x.Lookup(u32le(0), v); !errors.Is(err, ErrBadDescriptor) {
			t.Errorf("%s after Destroy: %v, want ErrBadDescriptor", name, err)
		}
	}
	if _, err := b.OpenPinnedMap("victim", ModeRead); !errors.Is(err, unix.ENOENT) {
		t.Errorf("the pin after Destroy: %v, want ENOENT", err)
	}
	// The program loaded through the map's handle hangs in its lineage:
	// it is destroyed with it, and nothing is left.
	if _, err := p.Run(&RunOptions{Data: ethFrame(), Repeat: 3}); !errors.Is(err, ErrBadDescriptor) {
		t.Fatalf("program using the destroyed map: %v, want ErrBadDescriptor", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := s.srv.Stats(); st.Objects != 0 || st.Descriptors != 0; st = s.srv.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("after Destroy: %d objects, %d descriptors; want none", st.Objects, st.Descriptors)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package client

import (
	"errors"
	"testing"

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

package pins

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// events records the store's callbacks.
type events struct {
	mu       sync.Mutex
	unpinned []*Pin
	changed  []*Pin
}

func (e *events) onUnpin(p *Pin) {
	e.mu.Lock()
	e.unpinned = append(e.unpinned, p)
	e.mu.Unlock()
}

func (e *events) onChange(p *Pin) {
	e.mu.Lock()
	e.changed = append(e.changed, p)
	e.mu.Unlock()
}

// wait waits until cond holds for e.
func (e *events) wait(t *testing.T, what string, cond func(*events) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		e.mu.Lock()
		ok := cond(e)
		e.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newEventStore(t *testing.T) (*Store, *events, string) {
	t.Helper()
	base, err := os.MkdirTemp("", "bpfd-pins-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	t.Cleanup(func() { os.RemoveAll(base) })
	ev := &events{}
	s, err := Open(filepath.Join(base, "pins"), ev.onUnpin, ev.onChange)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ev, base
}

func openFD(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestHardLinksAreNotPins is issue 9's seventh break: a hard link to a
// pin file, outside the pin root or next to the pin, reaches the inode but
// never the pin; unlinking the pin's own name unpins although the link
// keeps the inode alive; the link then opens nothing.
func TestHardLinksAreNotPins(t *testing.T) {
	s, ev, base := newEventStore(t)
	p, err := s.Create("m", 0o666, Creds{}, "obj", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	pinPath := filepath.Join(s.Root(), "m")
	outside := filepath.Join(base, "outside-link")
	inside := filepath.Join(s.Root(), "inside-link")
	for _, l := range []string{outside, inside} {
		if err := os.Link(pinPath, l); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		path string
		want error
	}{
		{"the pin's name", pinPath, nil},
		{"hard link outside the root", outside, ErrNotPinName},
		{"hard link inside the root", inside, ErrNotPinName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := s.Resolve(openFD(t, tt.path, unix.O_RDONLY))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (got == p) {
				t.Fatalf("Resolve = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	early := openFD(t, pinPath, unix.O_RDONLY)

	// Unlinking the name unpins, although two links remain.
	if err := os.Remove(pinPath); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "unpin", func(e *events) bool { return len(e.unpinned) == 1 && e.unpinned[0] == p })
	for name, fd := range map[string]int{"outside link": openFD(t, outside, unix.O_RDONLY),
		"opened before the unlink": early} {
		if _, _, err := s.Resolve(fd); !errors.Is(err, ErrNotPin) && !errors.Is(err, ErrUnpinned) {
			t.Errorf("%s after unpin: %v, want ErrNotPin or ErrUnpinned", name, err)
		}
	}
	if len(s.Pins()) != 0 {
		t.Fatalf("pins left: %v", s.Pins())
	}
}

// TestBindMountIsNotPin: the pin file bind-mounted at another path — in a
// private mount namespace, as an unprivileged user with a user namespace,
// or a container, could — reaches the inode but is not the pin; the pin
// opened by its own path in that namespace (a container that mounts the
// pin root at the same path) is.
func TestBindMountIsNotPin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	s, _, base := newEventStore(t)
	if _, err := s.Create("m", 0o644, Creds{}, "obj", 3, nil); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(base, "bound")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A goroutine on a locked thread with its own mount namespace opens
	// the file through the bind mount; the mount is never visible to
	// anything else and dies with the thread. The store (the daemon)
	// sees the fd from its own namespace.
	type result struct {
		fd, same int
		err      error
	}
	res := make(chan result, 1)
	go func() {
		runtimeLockOSThreadForever()
		r := result{fd: -1, same: -1}
		r.err = func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
				return err
			}
			if err := unix.Mount(filepath.Join(s.Root(), "m"), target, "", unix.MS_BIND, ""); err != nil {
				return err
			}
			var err error
			if r.fd, err = unix.Open(target, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
				return err
			}
			// The namespace's copy of the pin root's mount, at the
			// same path.
			r.same, err = unix.Open(filepath.Join(s.Root(), "m"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			return err
		}()
		res <- r
	}()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer unix.Close(r.fd)
	defer unix.Close(r.same)
	if p, _, err := s.Resolve(r.same); err != nil || p == nil {
		t.Fatalf("the pin opened by its path in another mount namespace: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(r.fd, &st); err != nil || st.Ino != s.Pins()[0].Ino() {
		t.Fatalf("the bind mount does not show the pin's inode: %v", err)
	}
	if _, _, err := s.Resolve(r.fd); !errors.Is(err, ErrNotPinName) {
		t.Fatalf("bind-mounted pin: %v, want ErrNotPinName", err)
	}
}

// TestNameMovesAndRenames: a pin follows renames inside the root, and is
// unpinned when its name leaves the root (rename out, or a directory above
// it renamed out, which sends no event: noticed when presented) or is
// replaced by another file; names ending in " (deleted)" are refused.
func TestNameMovesAndRenames(t *testing.T) {
	s, ev, base := newEventStore(t)
	if err := os.Mkdir(filepath.Join(s.Root(), "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := s.Create("d/a", 0o644, Creds{}, "a", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Renamed inside the root: still the pin, under its new name.
	if err := os.Rename(filepath.Join(s.Root(), "d/a"), filepath.Join(s.Root(), "d/b")); err != nil {
		t.Fatal(err)
	}
	if rel, _, err := s.Stat(p); err != nil || rel != "d/b" {
		t.Fatalf("Stat after rename = %q, %v", rel, err)
	}
	if got, _, err := s.Resolve(openFD(t, filepath.Join(s.Root(), "d/b"), unix.O_RDONLY)); got != p || err != nil {
		t.Fatalf("Resolve after rename = %v, %v", got, err)
	}
	// Its directory moved out of the root: no event of its own reaches
	// the file; the next presentation finds the name gone and unpins (a
	// late event of the rename above may have noticed first: then the
	// pin is already forgotten).
	held := openFD(t, filepath.Join(s.Root(), "d/b"), unix.O_RDONLY)
	if err := os.Rename(filepath.Join(s.Root(), "d"), filepath.Join(base, "d")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Resolve(openFD(t, filepath.Join(base, "d/b"), unix.O_RDONLY)); !errors.Is(err, ErrUnpinned) && !errors.Is(err, ErrNotPin) {
		t.Fatalf("Resolve of a pin moved out of the root: %v, want ErrUnpinned (or ErrNotPin)", err)
	}
	ev.wait(t, "unpin of the moved pin", func(e *events) bool { return len(e.unpinned) == 1 })
	if _, _, err := s.Resolve(held); !errors.Is(err, ErrNotPin) {
		t.Fatalf("fd opened before the move: %v, want ErrNotPin", err)
	}

	// Renamed out of the root directly: IN_MOVE_SELF unpins at once.
	q, err := s.Create("q", 0o644, Creds{}, "q", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(s.Root(), "q"), filepath.Join(base, "q")); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "unpin of the pin renamed out", func(e *events) bool { return len(e.unpinned) == 2 && e.unpinned[1] == q })

	// Replaced by another file (rename over it).
	r, err := s.Create("r", 0o644, Creds{}, "r", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root(), "impostor"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(s.Root(), "impostor"), filepath.Join(s.Root(), "r")); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "unpin of the replaced pin", func(e *events) bool { return len(e.unpinned) == 3 && e.unpinned[2] == r })

	if _, err := s.Create("x (deleted)", 0o644, Creds{}, "x", 3, nil); !errors.Is(err, ErrDeletedName) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Create of a name ending in (deleted): %v", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Root(), "x (deleted)")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused pin left a file")
	}
}

// TestAttrsAndChanges: a pin file's attributes (mode, owner, group, ACL)
// are read back exactly, SetAttrs sets them, and each change reaches
// onChange.
func TestAttrsAndChanges(t *testing.T) {
	s, ev, _ := newEventStore(t)
	p, err := s.Create("m", 0o640, Creds{}, "obj", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, a, err := s.Attrs(p)
	if err != nil || a.Perm != 0o640 || a.UID != uint32(os.Geteuid()) || a.ACL != nil {
		t.Fatalf("Attrs = %+v, %v", a, err)
	}
	if err := os.Chmod(filepath.Join(s.Root(), "m"), 0o600); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "change on chmod", func(e *events) bool { return len(e.changed) > 0 && e.changed[0] == p })
	if _, a, _ := s.Attrs(p); a.Perm != 0o600 {
		t.Fatalf("Attrs after chmod: %+v", a)
	}
	// The ACL's mask is the group bits, as the kernel keeps them.
	acl := testACL(65534, 6)
	want := Attrs{Perm: 0o660, UID: a.UID, GID: a.GID, ACL: acl}
	if os.Geteuid() == 0 {
		want.UID, want.GID = 65534, 65534
	}
	if err := s.SetAttrs(p, want); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("no POSIX ACLs on this filesystem: %v", err)
		}
		t.Fatal(err)
	}
	_, got, err := s.Attrs(p)
	if err != nil || !got.Equal(want) {
		t.Fatalf("Attrs after SetAttrs = %+v, %v; want %+v", got, err, want)
	}
}

// testACL is a POSIX access ACL (the kernel's xattr encoding) granting
// user:uid the permission bits perm, with the mask allowing them and the
// file's group getting read.
func testACL(uid uint32, perm uint16) []byte {
	const (
		tagUserObj  = 0x01
		tagUser     = 0x02
		tagGroupObj = 0x04
		tagMask     = 0x10
		tagOther    = 0x20
		undefinedID = 0xffffffff
	)
	b := []byte{2, 0, 0, 0} // version 2
	add := func(tag, perm uint16, id uint32) {
		b = append(b, byte(tag), byte(tag>>8), byte(perm), byte(perm>>8),
			byte(id), byte(id>>8), byte(id>>16), byte(id>>24))
	}
	add(tagUserObj, 6, undefinedID)
	add(tagUser, perm, uid)
	add(tagGroupObj, 4, undefinedID)
	add(tagMask, 4|perm, undefinedID)
	add(tagOther, 0, undefinedID)
	return b
}

// runtimeLockOSThreadForever locks the goroutine to its thread and never
// unlocks it, so the thread (with whatever namespace it entered) exits
// with the goroutine.
func runtimeLockOSThreadForever() { runtime.LockOSThread() }

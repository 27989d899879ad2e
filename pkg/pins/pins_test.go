package pins

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Start the runtime's netpoller (epoll and eventfd fds) before taking
	// the baseline, so only this package's fds are counted.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := countFDs()
	code := m.Run()
	if after := countFDs(); code == 0 && after > before {
		os.Stderr.WriteString("pins: leaked file descriptors\n")
		code = 1
	}
	os.Exit(code)
}

func countFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// newStore opens a store in a fresh world-traversable directory, so tests
// can act as another uid.
func newStore(t *testing.T, onUnpin func(*Pin)) *Store {
	t.Helper()
	base, err := os.MkdirTemp("", "bpfd-pins-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	s, err := Open(filepath.Join(base, "pins"), onUnpin, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRel(t *testing.T) {
	s := newStore(t, nil)
	tests := []struct {
		name    string
		path    string
		want    string
		wantErr bool
	}{
		{"relative", "a/b", "a/b", false},
		{"absolute inside", filepath.Join(s.Root(), "x"), "x", false},
		{"absolute outside", "/etc/passwd", "", true},
		{"dotdot escape", "../x", "", true},
		{"dotdot inside", "a/../b", "b", false},
		{"root itself", s.Root(), "", true},
		{"empty", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Rel(tt.path)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Rel(%q) = %q, %v", tt.path, got, err)
			}
		})
	}
}

func TestCreateResolve(t *testing.T) {
	s := newStore(t, nil)
	obj := "map#1"
	p, err := s.Create("m", 0o640, Creds{}, obj, 3, []byte("type=map\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(s.Root(), "m"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("pin mode %v, want 0640", st.Mode().Perm())
	}
	if _, err := s.Create("m", 0o640, Creds{}, obj, 3, nil); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second Create: %v, want EEXIST", err)
	}

	tests := []struct {
		name string
		flag int
		want uint32
	}{
		{"rdonly", os.O_RDONLY, 1},
		{"wronly", os.O_WRONLY, 2},
		{"rdwr", os.O_RDWR, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.OpenFile(filepath.Join(s.Root(), "m"), tt.flag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, op, err := s.Resolve(int(f.Fd()))
			if err != nil || got != p || op.Access != tt.want || op.Owner != uint32(os.Geteuid()) {
				t.Fatalf("Resolve = %v, %+v, %v; want pin, access %d, owner %d", got, op, err, tt.want, os.Geteuid())
			}
		})
	}

	// An O_PATH fd was never checked for access: it grants nothing.
	pfd, err := unix.Open(filepath.Join(s.Root(), "m"), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	if got, op, err := s.Resolve(pfd); err != nil || got != p || op.Access != 0 {
		t.Fatalf("Resolve(O_PATH) = %v, %+v, %v; want access 0", got, op, err)
	}

	// Files that are not pins.
	other, err := os.CreateTemp("", "notpin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(other.Name())
	defer other.Close()
	if _, _, err := s.Resolve(int(other.Fd())); !errors.Is(err, ErrNotPin) || !errors.Is(err, unix.EBADF) {
		t.Fatalf("Resolve(other file) = %v, want ErrNotPin", err)
	}
	dir, err := os.Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if _, _, err := s.Resolve(int(dir.Fd())); !errors.Is(err, ErrNotPin) {
		t.Fatalf("Resolve(dir) = %v, want ErrNotPin", err)
	}
}

func TestSymlinksNeverFollowed(t *testing.T) {
	s := newStore(t, nil)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(s.Root(), "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(s.Root(), "filelink")); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path string }{
		{"symlinked dir", "link/pin"},
		{"symlink as the pin itself", "filelink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Create(tt.path, 0o600, Creds{}, nil, 3, nil); err == nil {
				t.Fatalf("Create(%q) followed a symlink", tt.path)
			}
		})
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("a file was created outside the root: %v", ents)
	}
	if err := s.Mkdir("link/d", 0o755, Creds{}); !errors.Is(err, ErrOutside) {
		t.Fatalf("Mkdir through symlink: %v, want ErrOutside", err)
	}
}

func TestUnlinkUnpins(t *testing.T) {
	unpinned := make(chan *Pin, 1)
	s := newStore(t, func(p *Pin) { unpinned <- p })
	p, err := s.Create("gone", 0o600, Creds{}, "obj", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(s.Root(), "gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(filepath.Join(s.Root(), "gone")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-unpinned:
		if got != p {
			t.Fatalf("unpinned %v, want %v", got, p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("unlink was not noticed")
	}
	// An fd opened before the unlink no longer yields the object.
	if _, _, err := s.Resolve(int(f.Fd())); !errors.Is(err, ErrNotPin) && !errors.Is(err, ErrUnpinned) {
		t.Fatalf("Resolve after unlink: %v", err)
	}
	if len(s.Pins()) != 0 {
		t.Fatalf("pins left: %v", s.Pins())
	}
}

func TestMkdirAndCreateAsOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as uid 65534")
	}
	s := newStore(t, nil)
	nobody := Creds{UID: 65534, GID: 65534}
	if err := s.Mkdir("mine", 0o750, nobody); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(s.Root(), "mine"))
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*unixStat)
	if sys.Uid != 65534 || sys.Gid != 65534 || st.Mode().Perm() != 0o750 {
		t.Fatalf("dir owner %d:%d mode %v", sys.Uid, sys.Gid, st.Mode().Perm())
	}
	if _, err := s.Create("mine/p", 0o644, nobody, "obj", 3, nil); err != nil {
		t.Fatal(err)
	}
	st, _ = os.Stat(filepath.Join(s.Root(), "mine/p"))
	if sys := st.Sys().(*unixStat); sys.Uid != 65534 {
		t.Fatalf("pin owner %d, want 65534", sys.Uid)
	}

	// Root's directory is not writable by nobody: the kernel says EACCES.
	if err := s.Mkdir("roots", 0o755, Creds{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("roots/p", 0o644, nobody, "obj", 3, nil); !errors.Is(err, unix.EACCES) {
		t.Fatalf("Create in root's dir as nobody: %v, want EACCES", err)
	}
	// And nobody cannot make directories inside it either.
	if err := s.Mkdir("roots/d", 0o755, nobody); !errors.Is(err, unix.EACCES) {
		t.Fatalf("Mkdir in root's dir as nobody: %v, want EACCES", err)
	}
	// The thread that acted as nobody is gone: this goroutine is still root.
	if f, err := os.Create(filepath.Join(s.Root(), "roots", "rootfile")); err != nil {
		t.Fatalf("credentials leaked into the daemon: %v", err)
	} else {
		f.Close()
	}
	if !strings.HasPrefix(s.Root(), os.TempDir()) {
		t.Fatalf("unexpected root %s", s.Root())
	}
}

func TestAdopt(t *testing.T) {
	s := newStore(t, nil)
	if err := os.WriteFile(filepath.Join(s.Root(), "old"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := s.Adopt("old", "restored", 3)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(s.Root(), "old"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, op, err := s.Resolve(int(f.Fd())); got != p || op.Access != 1 || err != nil {
		t.Fatalf("Resolve(adopted) = %v, %+v, %v", got, op, err)
	}
	if _, err := s.Adopt("missing", "x", 3); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Adopt(missing) = %v, want ENOENT", err)
	}
}

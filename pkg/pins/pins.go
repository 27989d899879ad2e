// Package pins implements bpfd's filesystem pins (docs/design.md, "Pins"): a pin
// is a regular file under the pin root; whoever can open the file can get
// the object back with the access the open granted. The kernel, not bpfd,
// checks permissions (modes, ACLs, LSMs, mount namespaces).
//
// It is a package of its own because the job is the filesystem namespace:
// resolving client paths safely beneath the root (openat2 with
// RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS), creating files with the caller's
// credentials, identifying presented fds by inode, and noticing unlinks
// (inotify) so that an unlinked pin stops holding its object.
//
// A pin is a name, not an inode: the daemon holds the dentry the pin was
// created under (an O_PATH fd, which follows renames), and the pin lives
// exactly as long as that name exists beneath the root. Unlinking the name
// unpins even if other hard links to the file exist; moving it out of the
// root unpins; a presented fd opens the pin only if it was opened through
// the pin's name (its path, as the daemon's mount namespace sees it, is the
// pin's): a hard link elsewhere, or the file bind-mounted at another path,
// reaches the inode but not the pin. Names ending in " (deleted)" (the
// kernel's mark of an unlinked dentry in /proc/self/fd) are refused.
//
// Files are created and directories made on a dedicated OS thread whose
// filesystem uid and gid (setfsuid/setfsgid, and no supplementary groups)
// are the caller's, so the kernel applies the caller's permissions and the
// new file belongs to the caller. When the daemon is not root it cannot
// take another identity; files are then created with the daemon's own
// credentials.
package pins

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Errors.
var (
	// ErrNotPin: a presented fd is not an open pin file of this store
	// (EBADF), or the path does not name one.
	ErrNotPin = errno.New(unix.EBADF, "not a bpfd pin")
	// ErrUnpinned: the pin file was unlinked (ENOENT).
	ErrUnpinned = errno.New(unix.ENOENT, "pin was unlinked")
	// ErrOutside: a path lies outside the pin root or crosses a symlink
	// (EXDEV from the kernel is reported as EINVAL, as bpf(2) reports a
	// pin path outside bpffs).
	ErrOutside = errno.New(unix.EINVAL, "path is not beneath the pin root or crosses a symlink")
	// ErrClosed: the store is closed.
	ErrClosed = errno.New(unix.EBADF, "pin store closed")
	// ErrNotPinName: a presented fd is the pin's file but was opened
	// through another name (a hard link, or a bind mount at another
	// path): only the pin's own path under the pin root opens it (EBADF).
	ErrNotPinName = errno.New(unix.EBADF, "file opened through a name that is not the pin's (a hard link or a bind mount outside the pin root); open the pin by its path under the pin root")
	// ErrDeletedName: a pin path whose last element ends in " (deleted)",
	// which the daemon could not tell from an unlinked name (EINVAL).
	ErrDeletedName = errno.New(unix.EINVAL, `pin names may not end in " (deleted)"`)
)

// deletedSuffix is what the kernel appends to the path of an unlinked
// dentry in /proc/self/fd.
const deletedSuffix = " (deleted)"

type fileKey struct {
	dev, ino uint64
}

// Pin is one pinned object. Its fields are read-only after Create.
type Pin struct {
	// Path is the pin's path relative to the root, as created.
	Path string
	// Object is the caller's object; the store never looks at it.
	Object any
	// Mode caps the access any opener gets (the pinned handle's mode, as
	// wire.Mode bits: 1 read, 2 write).
	Mode uint32

	fd  int // O_PATH fd holding the inode, owned by the store
	key fileKey
	wd  int32
}

// Ino returns the inode number of p's file.
func (p *Pin) Ino() uint64 { return p.key.ino }

// Creds are the credentials a pin operation is performed with.
type Creds struct {
	UID, GID uint32
}

// Attrs are the attributes of a pin file that decide who may open it: its
// permission bits, owner, group and POSIX access ACL. The daemon records
// them whenever they change so that a pin re-created at restore gets
// exactly the last ones (never wider ones).
type Attrs struct {
	Perm     os.FileMode // permission bits (0777)
	UID, GID uint32
	// ACL is the raw system.posix_acl_access extended attribute; nil
	// when the file has none.
	ACL []byte
}

// Equal reports whether a and b are the same attributes.
func (a Attrs) Equal(b Attrs) bool {
	return a.Perm == b.Perm && a.UID == b.UID && a.GID == b.GID && string(a.ACL) == string(b.ACL)
}

// aclXattr is the extended attribute holding a file's access ACL.
const aclXattr = "system.posix_acl_access"

// Opened describes a presented open pin file (see Resolve).
type Opened struct {
	// Access is what the open granted: 1 read (O_RDONLY), 2 write
	// (O_WRONLY), 3 both (O_RDWR), 0 for an O_PATH fd.
	Access uint32
	// Owner is the file's owner now.
	Owner uint32
}

// Store is the set of pins under one root. It is safe for concurrent use.
type Store struct {
	root     string
	rootFD   int // O_PATH|O_DIRECTORY
	ino      *os.File
	onUnpin  func(*Pin)
	onChange func(*Pin)

	mu     sync.Mutex
	closed bool             // guarded by mu
	byKey  map[fileKey]*Pin // guarded by mu
	byWD   map[int32]*Pin   // guarded by mu
	done   chan struct{}
}

// Open opens the pin root dir, creating it if missing with mode 01777 (like
// /tmp: every user may pin, nobody may unlink another's pin), and
// starts watching its pins. onUnpin, if not nil, is called from the
// store's goroutine, without locks held, for each pin whose name is gone
// (unlinked, replaced, or moved out of the root); the pin is already
// forgotten by then. onChange, if not nil, is called likewise when a
// live pin file's inode changed attributes (mode, owner, ACL, links,
// times): the caller compares Attrs with what it recorded. The caller must
// Close the store.
func Open(root string, onUnpin, onChange func(*Pin)) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("pin root: %w", err)
		}
		if err := os.Chmod(root, 0o777|os.ModeSticky); err != nil {
			return nil, fmt.Errorf("pin root: %w", err)
		}
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open pin root", err)
	}
	inoFD, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		unix.Close(rootFD)
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	s := &Store{
		root:     root,
		rootFD:   rootFD,
		ino:      os.NewFile(uintptr(inoFD), "inotify"),
		onUnpin:  onUnpin,
		onChange: onChange,
		byKey:    make(map[fileKey]*Pin),
		byWD:     make(map[int32]*Pin),
		done:     make(chan struct{}),
	}
	go s.watch()
	return s, nil
}

// Root returns the absolute path of the pin root.
func (s *Store) Root() string { return s.root }

// Rel turns a client's path into a path relative to the root: a relative
// path is taken under the root; an absolute one must lie inside it. It
// returns ErrOutside otherwise. It does not touch the filesystem; the
// kernel enforces the rest when the path is opened.
func (s *Store) Rel(path string) (string, error) {
	if path == "" {
		return "", ErrOutside
	}
	if filepath.IsAbs(path) {
		rel, err := filepath.Rel(s.root, filepath.Clean(path))
		if err != nil {
			return "", ErrOutside
		}
		path = rel
	}
	path = filepath.Clean(path)
	if path == "." || path == ".." || strings.HasPrefix(path, "../") || filepath.IsAbs(path) {
		return "", ErrOutside
	}
	return path, nil
}

var resolveFlags = uint64(unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS)

// Create makes a new pin file at path (see Rel) with permission bits perm,
// as the user creds, writes content (informational only) into it, and
// records obj under it. An existing file gives EEXIST; a missing parent
// directory ENOENT; a parent the caller may not write EACCES; a symlink
// anywhere on the path ErrOutside.
func (s *Store) Create(path string, perm os.FileMode, creds Creds, obj any, mode uint32, content []byte) (*Pin, error) {
	rel, err := s.Rel(path)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(rel, deletedSuffix) {
		return nil, ErrDeletedName
	}
	var fd int
	err = s.asUser(creds, func() error {
		var err error
		fd, err = unix.Openat2(s.rootFD, rel, &unix.OpenHow{
			Flags:   unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Mode:    uint64(perm.Perm()),
			Resolve: resolveFlags,
		})
		if err != nil {
			return err
		}
		// The umask applied at creation; set the bits asked for.
		if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, pathErr("create pin", path, err)
	}
	if _, err := unix.Write(fd, content); err != nil {
		unix.Close(fd)
		s.unlinkQuiet(rel)
		return nil, os.NewSyscallError("write pin", err)
	}
	p, err := s.hold(fd, rel, obj, mode)
	unix.Close(fd)
	if err != nil {
		s.unlinkQuiet(rel)
		return nil, err
	}
	return p, nil
}

// Adopt records an existing pin file at path (created by an earlier run of
// the daemon) for obj, without creating it. It returns ErrNotPin if path
// is not a regular file beneath the root.
func (s *Store) Adopt(path string, obj any, mode uint32) (*Pin, error) {
	return s.AdoptChecked(path, obj, mode, nil)
}

// AdoptChecked is Adopt with a check of the file found at path: check (if
// not nil) sees the file's stat and may refuse it with an error, which
// AdoptChecked returns; the file is then not adopted. It lets the daemon
// refuse a file that replaced its pin while it was not running (another
// inode or owner).
func (s *Store) AdoptChecked(path string, obj any, mode uint32, check func(*unix.Stat_t) error) (*Pin, error) {
	rel, err := s.Rel(path)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(rel, deletedSuffix) {
		return nil, ErrDeletedName
	}
	fd, err := unix.Openat2(s.rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: resolveFlags,
	})
	if err != nil {
		return nil, pathErr("adopt pin", path, err)
	}
	defer unix.Close(fd)
	if check != nil {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, os.NewSyscallError("fstat", err)
		}
		if err := check(&st); err != nil {
			return nil, err
		}
	}
	return s.hold(fd, rel, obj, mode)
}

// Stat returns the pin's current name relative to the root (it follows
// renames within the root) and its file's stat. It fails with ErrUnpinned
// if the name is gone (unlinked, replaced, moved out of the root), and
// ErrClosed if p is no longer held.
func (s *Store) Stat(p *Pin) (string, unix.Stat_t, error) {
	var st unix.Stat_t
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byKey[p.key] != p {
		return p.Path, st, ErrClosed
	}
	if err := unix.Fstat(p.fd, &st); err != nil {
		return p.Path, st, os.NewSyscallError("fstat", err)
	}
	if st.Nlink == 0 {
		return p.Path, st, ErrUnpinned
	}
	rel, _, err := s.nameOf(p)
	if err != nil {
		return p.Path, st, err
	}
	return rel, st, nil
}

// Attrs returns p's file's current attributes (see Attrs) and its path
// relative to the root. Errors as Stat.
func (s *Store) Attrs(p *Pin) (string, Attrs, error) {
	rel, st, err := s.Stat(p)
	if err != nil {
		return rel, Attrs{}, err
	}
	a := Attrs{Perm: os.FileMode(st.Mode & 0o777), UID: st.Uid, GID: st.Gid}
	a.ACL, err = getACL(fmt.Sprintf("/proc/self/fd/%d", p.fd))
	return rel, a, err
}

// getACL reads path's access ACL; nil if it has none (or the filesystem
// has no ACLs).
func getACL(path string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Getxattr(path, aclXattr, buf)
		switch {
		case err == nil:
			return buf[:n:n], nil
		case err == unix.ERANGE && len(buf) < 1<<16:
			buf = make([]byte, 4*len(buf))
		case err == unix.ENODATA || err == unix.EOPNOTSUPP:
			return nil, nil
		default:
			return nil, os.NewSyscallError("getxattr", err)
		}
	}
}

// SetAttrs gives p's file the attributes a: ACL, then owner and group,
// then permission bits (so the ACL's mask ends as the bits say). It is
// for re-creating a pin with its recorded attributes; the daemon needs the
// privilege to chown.
func (s *Store) SetAttrs(p *Pin, a Attrs) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byKey[p.key] != p {
		return ErrClosed
	}
	path := fmt.Sprintf("/proc/self/fd/%d", p.fd)
	if len(a.ACL) > 0 {
		if err := unix.Setxattr(path, aclXattr, a.ACL, 0); err != nil {
			return os.NewSyscallError("setxattr", err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(p.fd, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if st.Uid != a.UID || st.Gid != a.GID {
		if err := unix.Chown(path, int(a.UID), int(a.GID)); err != nil {
			return os.NewSyscallError("chown", err)
		}
	}
	if err := unix.Chmod(path, uint32(a.Perm.Perm())); err != nil {
		return os.NewSyscallError("chmod", err)
	}
	return nil
}

// nameOf returns the pin's name (its path relative to the root, following
// renames inside it) and the root's absolute path, or ErrUnpinned if the
// name is gone: unlinked (even if other links to the inode exist), moved
// out of the root, or no longer naming the pin's inode.
func (s *Store) nameOf(p *Pin) (string, string, error) {
	// A rename inside the root between reading the name and looking it
	// up makes the lookup fail: only a name that stays the same while
	// it fails is gone.
	link := fmt.Sprintf("/proc/self/fd/%d", p.fd)
	for {
		target, err := os.Readlink(link)
		if err != nil {
			return "", "", ErrUnpinned
		}
		rel, root, err := s.checkName(p, target)
		if err == nil {
			return rel, root, nil
		}
		if again, rerr := os.Readlink(link); rerr != nil || again == target {
			return "", "", err
		}
	}
}

// checkName checks that target, the path of p's dentry, is a live name
// beneath the root that names p's inode.
func (s *Store) checkName(p *Pin, target string) (string, string, error) {
	if strings.HasSuffix(target, deletedSuffix) {
		return "", "", ErrUnpinned
	}
	root, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", s.rootFD))
	if err != nil {
		return "", "", ErrUnpinned
	}
	rel, err := filepath.Rel(root, target)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", "", ErrUnpinned
	}
	fd, err := unix.Openat2(s.rootFD, rel, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		return "", "", ErrUnpinned
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	if err != nil || (fileKey{st.Dev, st.Ino}) != p.key {
		return "", "", ErrUnpinned
	}
	return rel, root, nil
}

func (s *Store) unlinkQuiet(rel string) {
	dir, base := filepath.Split(rel)
	dfd, err := unix.Openat2(s.rootFD, dirOrDot(dir), &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		return
	}
	unix.Unlinkat(dfd, base, 0)
	unix.Close(dfd)
}

func dirOrDot(d string) string {
	if d == "" {
		return "."
	}
	return d
}

// hold records the file open at fd as a pin: it keeps its own O_PATH fd so
// the inode cannot be reused, and watches it for unlinks.
func (s *Store) hold(fd int, rel string, obj any, mode uint32) (*Pin, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, ErrNotPin
	}
	pfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("reopen pin", err)
	}
	wd, err := unix.InotifyAddWatch(int(s.ino.Fd()), fmt.Sprintf("/proc/self/fd/%d", pfd), unix.IN_ATTRIB|unix.IN_MOVE_SELF)
	if err != nil {
		unix.Close(pfd)
		return nil, os.NewSyscallError("inotify_add_watch", err)
	}
	p := &Pin{Path: rel, Object: obj, Mode: mode, fd: pfd, key: fileKey{st.Dev, st.Ino}, wd: int32(wd)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		unix.Close(pfd)
		return nil, ErrClosed
	}
	if old, ok := s.byKey[p.key]; ok {
		// Same inode already pinned (Adopt of a known file).
		unix.Close(pfd)
		return old, unix.EEXIST
	}
	s.byKey[p.key] = p
	s.byWD[p.wd] = p
	return p, nil
}

// Resolve identifies a pin from an fd a client opened on a pin file and
// says what the open granted (see Opened). The fd must have been opened
// through the pin's name: ErrNotPinName for the pin's file reached through
// another name (a hard link, a bind mount at another path). It returns
// ErrUnpinned for a pin whose name is gone and ErrNotPin for any other
// fd. The caller keeps ownership of fd.
func (s *Store) Resolve(fd int) (*Pin, Opened, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, Opened{}, ErrNotPin
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, Opened{}, ErrNotPin
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, Opened{}, ErrNotPin
	}
	var o Opened
	switch fl & unix.O_ACCMODE {
	case unix.O_RDONLY:
		o.Access = 1
	case unix.O_WRONLY:
		o.Access = 2
	case unix.O_RDWR:
		o.Access = 3
	}
	if fl&unix.O_PATH != 0 {
		o.Access = 0 // an O_PATH fd was never checked for access
	}
	o.Owner = st.Uid
	if st.Nlink == 0 {
		// Unlinked: unpinned, whether or not the watcher has noticed yet.
		return nil, Opened{}, ErrUnpinned
	}
	s.mu.Lock()
	p, ok := s.byKey[fileKey{st.Dev, st.Ino}]
	s.mu.Unlock()
	if !ok {
		return nil, Opened{}, ErrNotPin
	}
	rel, root, err := s.nameOf(p)
	if err != nil {
		// The name is gone but the watcher has not seen it yet (a
		// directory above it moved out of the root sends no event):
		// unpin now.
		s.unpinNow(p)
		return nil, Opened{}, ErrUnpinned
	}
	// The path of the presented open file (its own dentry, so a hard
	// link has its own) must be the pin's. Equal strings are the same
	// dentry: two live names cannot share a path, and an unlinked one
	// ends in " (deleted)", which pin names never do.
	got, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || got != filepath.Join(root, rel) {
		return nil, Opened{}, ErrNotPinName
	}
	return p, o, nil
}

// unpinNow forgets p and calls onUnpin (on a new goroutine: the caller may
// hold locks onUnpin takes).
func (s *Store) unpinNow(p *Pin) {
	s.mu.Lock()
	gone := !s.closed && s.forgetLocked(p)
	s.mu.Unlock()
	if gone && s.onUnpin != nil {
		go s.onUnpin(p)
	}
}

// Mkdir makes a directory at path (see Rel) with permission bits perm as
// the user creds. Errors are the kernel's (EEXIST, ENOENT, EACCES) or
// ErrOutside.
func (s *Store) Mkdir(path string, perm os.FileMode, creds Creds) error {
	rel, err := s.Rel(path)
	if err != nil {
		return err
	}
	dir, base := filepath.Split(rel)
	err = s.asUser(creds, func() error {
		dfd, err := unix.Openat2(s.rootFD, dirOrDot(dir), &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		if err := unix.Mkdirat(dfd, base, uint32(perm.Perm())); err != nil {
			return err
		}
		// Undo the umask without following a symlink raced into place.
		cfd, err := unix.Openat2(dfd, base, &unix.OpenHow{
			Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveFlags})
		if err != nil {
			return err
		}
		defer unix.Close(cfd)
		return unix.Fchmod(cfd, uint32(perm.Perm()))
	})
	return pathErr("mkdir", path, err)
}

// Remove unlinks p's file under its current name (following renames
// inside the root), if that name still refers to p's inode, and forgets p
// without calling onUnpin. It is for undoing a pin whose creation failed
// later on, and for revoked pins. Errors are ignored: the pin is forgotten
// in any case.
func (s *Store) Remove(p *Pin) {
	name := p.Path
	s.mu.Lock()
	if !s.closed && s.byKey[p.key] == p {
		if rel, _, err := s.nameOf(p); err == nil {
			name = rel
		}
	}
	s.mu.Unlock()
	s.Forget(p) // first, so that the unlink does not reach onUnpin
	dir, base := filepath.Split(name)
	dfd, err := unix.Openat2(s.rootFD, dirOrDot(dir), &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err == nil {
		var st unix.Stat_t
		if unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil &&
			(fileKey{st.Dev, st.Ino}) == p.key {
			unix.Unlinkat(dfd, base, 0)
		}
		unix.Close(dfd)
	}
}

// Pins returns a snapshot of the live pins.
func (s *Store) Pins() []*Pin {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Pin, 0, len(s.byKey))
	for _, p := range s.byKey {
		out = append(out, p)
	}
	return out
}

// Forget drops p from the store without touching its file (the daemon
// destroyed the object). Safe to call for a pin already gone.
func (s *Store) Forget(p *Pin) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(p)
}

func (s *Store) forgetLocked(p *Pin) bool {
	if s.byKey[p.key] != p {
		return false
	}
	delete(s.byKey, p.key)
	delete(s.byWD, p.wd)
	unix.InotifyRmWatch(int(s.ino.Fd()), uint32(p.wd))
	unix.Close(p.fd)
	return true
}

// Close stops watching and releases every pin's fd; pin files stay. It
// does not call onUnpin. Idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, p := range s.byKey {
		unix.Close(p.fd)
	}
	s.byKey, s.byWD = nil, nil
	s.mu.Unlock()
	err := s.ino.Close()
	<-s.done
	unix.Close(s.rootFD)
	return err
}

// watch reads inotify events until the store closes, unpinning files whose
// link count dropped to zero.
func (s *Store) watch() {
	defer close(s.done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := s.ino.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&(unix.IN_ATTRIB|unix.IN_MOVE_SELF|unix.IN_IGNORED) == 0 {
				continue
			}
			s.check(ev.Wd)
		}
	}
}

func (s *Store) check(wd int32) {
	s.mu.Lock()
	p, ok := s.byWD[wd]
	if !ok {
		s.mu.Unlock()
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(p.fd, &st); err != nil {
		s.mu.Unlock()
		return
	}
	if st.Nlink > 0 {
		if _, _, err := s.nameOf(p); err == nil {
			s.mu.Unlock()
			if s.onChange != nil {
				s.onChange(p)
			}
			return
		}
	}
	gone := s.forgetLocked(p)
	s.mu.Unlock()
	if gone && s.onUnpin != nil {
		s.onUnpin(p)
	}
}

// asUser runs fn on a fresh OS thread whose filesystem credentials are
// creds (when the process may take them), then lets that thread die, so
// the changed credentials never serve another goroutine.
func (s *Store) asUser(creds Creds, fn func() error) error {
	if os.Geteuid() != 0 || (creds.UID == 0 && creds.GID == 0) {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			errc <- os.NewSyscallError("setgroups", e)
			return
		}
		unix.RawSyscall(unix.SYS_SETFSGID, uintptr(creds.GID), 0, 0)
		unix.RawSyscall(unix.SYS_SETFSUID, uintptr(creds.UID), 0, 0)
		// setfs[ug]id report the previous id; read back to confirm.
		if cur, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0); uint32(cur) != creds.UID {
			errc <- errors.New("setfsuid failed")
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func pathErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%s %s: %w", op, path, ErrOutside)
	}
	var be *errno.Error
	if errors.As(err, &be) {
		return fmt.Errorf("%s %s: %w", op, path, err)
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

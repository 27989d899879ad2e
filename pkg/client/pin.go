package client

import (
	"encoding/json"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Pinner is an object that can be pinned with Conn.Pin: a *Map or a
// *Program.
type Pinner interface {
	// pinTarget returns the object's connection, handle and closed flag.
	pinTarget() *ref
}

var (
	_ Pinner = (*Map)(nil)
	_ Pinner = (*Program)(nil)
)

func (m *Map) pinTarget() *ref { return &m.ref }

// Pin makes a pin file for obj at path with permission bits perm (at most
// 0777): path is relative to the daemon's pin root, or absolute inside it.
// The file belongs to the calling user; whoever can open it gets the
// object back (OpenPinnedMap) with at most obj's mode, and as much of it
// as the open allowed. The pin keeps the object alive until the file is
// unlinked. It returns ErrKeyExist (EEXIST) if path exists, ErrKeyNotExist
// (ENOENT) if its directory does not, ErrAccess (EACCES) if the user may
// not write the directory, ErrInvalid for a path outside the pin root or
// through a symlink, or perm beyond 0777, ErrNotSupported if the daemon
// has pins disabled, and ErrClosed if obj or c is closed. obj must belong
// to c (ErrInvalid otherwise).
func (c *Conn) Pin(obj Pinner, path string, perm os.FileMode) error {
	r := obj.pinTarget()
	if r.c != c {
		return errPinConn
	}
	if perm&^0o777 != 0 {
		return errPinPerm
	}
	if len(path) == 0 || len(path) > wire.MaxPinPath {
		return errPinPath
	}
	var ab [wire.ObjPinAttrSize]byte
	attr := (&wire.ObjPinAttr{Handle: r.handle, FileMode: uint32(perm), PathLen: uint32(len(path))}).Append(ab[:0])
	return c.simple(r, wire.CmdObjPin, attr, nil, []byte(path))
}

// PinMkdir makes a directory at path under the daemon's pin root (relative,
// or absolute inside it) with permission bits perm (at most 0777), owned
// by the calling user. Errors as Pin: ErrKeyExist, ErrKeyNotExist,
// ErrAccess, ErrInvalid, ErrNotSupported, ErrClosed.
func (c *Conn) PinMkdir(path string, perm os.FileMode) error {
	if perm&^0o777 != 0 {
		return errPinPerm
	}
	if len(path) == 0 || len(path) > wire.MaxPinPath {
		return errPinPath
	}
	var ab [wire.PinMkdirAttrSize]byte
	attr := (&wire.PinMkdirAttr{FileMode: uint32(perm), PathLen: uint32(len(path))}).Append(ab[:0])
	return c.simple(nil, wire.CmdPinMkdir, attr, nil, []byte(path))
}

// simple runs a command whose reply carries nothing but an errno.
func (c *Conn) simple(m *ref, cmd wire.Cmd, attr []byte, fds []int, data ...[]byte) error {
	w := getWaiter()
	defer putWaiter(w)
	if err := c.do(w, m, cmd, attr, fds, data...); err != nil {
		return err
	}
	w.closeFDs()
	return errnoErr(w.hdr.Errno)
}

// OpenPinnedMap opens the pin file at path itself (O_RDONLY for ModeRead,
// O_WRONLY for ModeWrite, O_RDWR for ModeReadWrite, O_PATH for ModeDestroy
// alone), so that the kernel checks the file's permissions, presents the
// open file to the daemon and returns the pinned map with exactly mode (at
// most what the pin allows). ModeDestroy is granted only to the pin
// file's owner, and only by a pin made from a descriptor holding it. A
// relative path is taken under the daemon's pin root (asked from the
// daemon). The file is closed before it returns; the Map owns its new
// descriptor.
//
// Errors: the open's own (*os.PathError, matching unix.EACCES when the
// file's permissions refuse mode, unix.ENOENT for a missing file);
// ErrAccess (EACCES) when the pin grants less than mode (for ModeDestroy:
// the caller does not own the pin file, or the pin never had it);
// ErrKeyNotExist (ENOENT) when the pin was unlinked or revoked meanwhile;
// ErrBadDescriptor (EBADF) when the file is not a pin, or was reached
// through another name than the pin's (a hard link, a bind mount at
// another path: open the pin by its path under the pin root); ErrInvalid
// for a bad mode or a pinned object that is not a map; ErrNotSupported if
// the daemon has pins disabled; ErrClosed if c is closed.
func (c *Conn) OpenPinnedMap(path string, mode Mode) (*Map, error) {
	var m *Map
	err := c.openPinned(path, mode, func(w *waiter, fd int) (err error) {
		m, err = c.newMap(w, fd)
		return err
	})
	return m, err
}

// openPinned opens the pin file at path with the open flags of mode,
// presents it with OBJ_GET and hands the reply and the new descriptor (which
// build then owns) to build.
func (c *Conn) openPinned(path string, mode Mode, build func(w *waiter, fd int) error) error {
	if !wire.Mode(mode).Valid() {
		return errMode
	}
	var flags int
	switch mode.Data() {
	case ModeRead:
		flags = unix.O_RDONLY
	case ModeWrite:
		flags = unix.O_WRONLY
	case ModeReadWrite:
		flags = unix.O_RDWR
	default:
		flags = unix.O_PATH // the destroy right alone: no data access checked
	}
	if !filepath.IsAbs(path) {
		root, err := c.pinRoot()
		if err != nil {
			return err
		}
		path = filepath.Join(root, path)
	}
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var ab [wire.ObjGetAttrSize]byte
	attr := (&wire.ObjGetAttr{Mode: wire.Mode(mode)}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	fds := [1]int{fd}
	if err := c.do(w, nil, wire.CmdObjGet, attr, fds[:]); err != nil {
		return err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return err
	}
	return build(w, w.takeFD(0))
}

// pinRoot asks the daemon for its pin root (CmdStatus). ErrNotSupported
// if pins are disabled.
func (c *Conn) pinRoot() (string, error) {
	var st struct {
		PinRoot string `json:"pin_root"`
	}
	if err := c.callPayload(wire.CmdStatus, nil, func(data []byte) error {
		if err := json.Unmarshal(data, &st); err != nil {
			return &statusError{err}
		}
		return nil
	}); err != nil {
		return "", err
	}
	if st.PinRoot == "" {
		return "", ErrNotSupported
	}
	return st.PinRoot, nil
}

var (
	errPinConn = invalid("bpfd: the object belongs to another connection")
	errPinPerm = invalid("bpfd: pin permission bits beyond 0777")
	errPinPath = invalid("bpfd: pin path empty or longer than PATH_MAX")
)

package demux

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/pins"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Pin errors.
var (
	ErrPinsDisabled = errno.New(unix.EOPNOTSUPP, "demux: pins are disabled (no pin root configured)")
	ErrPinPath      = errno.New(unix.EINVAL, "demux: pin path is empty, contains NUL or does not match PathLen")
	ErrPinPathLong  = errno.New(unix.ENAMETOOLONG, "demux: pin path longer than wire.MaxPinPath")
	ErrPinPerm      = errno.New(unix.EINVAL, "demux: pin file mode has bits beyond 0777")
	ErrPinAccess    = errno.New(unix.EACCES, "demux: the pin file was not opened for the access asked for")
)

// pinSet is the server's pins: the store (files under the pin root) and,
// per pinned object, its pins and persistence key. Each pin holds one
// reference on its object, dropped when the pin file's last link goes.
//
// Lock order: saveMu, then mu, then registry.mu. saveMu serialises the
// commands and callbacks that change pins and persist them (file creation
// and fsyncs happen under it); mu guards objs and is held only briefly, so
// OBJ_GET never waits for disk I/O.
type pinSet struct {
	srv   *Server
	store *pins.Store

	saveMu sync.Mutex
	mu     sync.Mutex
	objs   map[*Object]*pinned // guarded by mu
	closed bool                // guarded by mu
}

// pinned is the pin bookkeeping of one object.
type pinned struct {
	key  string      // persistence key, stable across restarts
	pins []*pins.Pin // guarded by pinSet.mu
}

// openPins opens the pin store when the server has a pin root.
func (s *Server) openPins() error {
	if s.cfg.PinRoot == "" {
		return nil
	}
	ps := &pinSet{srv: s, objs: map[*Object]*pinned{}}
	st, err := pins.Open(s.cfg.PinRoot, ps.unpinned)
	if err != nil {
		return err
	}
	ps.store = st
	s.pins = ps
	return nil
}

// closePins saves every pinned object (Config.Persister) and closes the
// store; the pin files stay. Called by Shutdown once no connection runs,
// before the registry closes the objects.
func (s *Server) closePins() {
	ps := s.pins
	if ps == nil {
		return
	}
	ps.saveMu.Lock()
	ps.mu.Lock()
	ps.closed = true
	objs := make([]*Object, 0, len(ps.objs))
	for o := range ps.objs {
		objs = append(objs, o)
	}
	ps.mu.Unlock()
	if p := s.cfg.Persister; p != nil {
		for _, o := range objs {
			if err := ps.save(o); err != nil {
				s.log.Error("cannot save pinned object", zap.Uint32("id", o.id), zap.Error(err))
			}
		}
	}
	// Without a persister nothing outlives the daemon; program pins (a
	// program cannot be recovered from its pin file) are removed rather
	// than left naming nothing.
	ps.mu.Lock()
	for _, o := range objs {
		if o.p == nil || s.cfg.Persister != nil {
			continue
		}
		if pd := ps.objs[o]; pd != nil {
			for _, p := range pd.pins {
				ps.store.Remove(p)
			}
		}
	}
	ps.mu.Unlock()
	ps.saveMu.Unlock()
	// Not under saveMu: Close waits for the watcher, which may be waiting
	// for saveMu in unpinned (it will then see closed).
	ps.store.Close()
}

// PinRoot returns the absolute pin root, or "" when pins are disabled.
func (s *Server) PinRoot() string {
	if s.pins == nil {
		return ""
	}
	return s.pins.store.Root()
}

// pinPath validates a pin path sent as request data.
func pinPath(data []byte, n uint32) (string, error) {
	if n > wire.MaxPinPath {
		return "", ErrPinPathLong
	}
	if n == 0 || uint32(len(data)) != n || bytes.IndexByte(data, 0) >= 0 {
		return "", ErrPinPath
	}
	return string(data), nil
}

// creds returns the caller's credentials for pin file operations.
func (c *conn) creds() (pins.Creds, error) {
	u, err := c.sc.PeerCred()
	if err != nil {
		return pins.Creds{}, err
	}
	return pins.Creds{UID: u.Uid, GID: u.Gid}, nil
}

// pinContent is the informational content of a pin file.
func pinContent(o *Object, mode wire.Mode) []byte {
	kind := "map"
	if o.kind != wire.ObjMap {
		kind = "prog"
	}
	s := fmt.Sprintf("type: %s\nid: %d\nname: %s\nmode: %s\nowner_uid: %d\n",
		kind, o.id, wire.NameString(o.name), mode, o.owner)
	if o.m != nil {
		s += fmt.Sprintf("map_type: %d\nkey_size: %d\nvalue_size: %d\nmax_entries: %d\nmap_flags: %#x\n",
			o.spec.Type, o.spec.KeySize, o.spec.ValueSize, o.spec.MaxEntries, o.spec.Flags)
	}
	return []byte(s)
}

func newPinKey() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// objPin executes CmdObjPin: a pin file for the handle's object, capped at
// the handle's mode, owned by the caller.
func (c *conn) objPin(a, data []byte) (int64, error) {
	var at wire.ObjPinAttr
	if !at.Parse(a) {
		return 0, ErrInvalid
	}
	hd, err := c.lookup(at.Handle)
	if err != nil {
		return 0, err
	}
	path, err := pinPath(data, at.PathLen)
	if err != nil {
		return 0, err
	}
	if at.FileMode&^0o777 != 0 {
		return 0, ErrPinPerm
	}
	ps := c.srv.pins
	if ps == nil {
		return 0, ErrPinsDisabled
	}
	cr, err := c.creds()
	if err != nil {
		return 0, err
	}
	return 0, ps.pin(hd, path, os.FileMode(at.FileMode), cr)
}

// pin creates the pin file, takes the object reference and persists the
// object; on any failure the file is removed again.
func (ps *pinSet) pin(hd *handle, path string, perm os.FileMode, cr pins.Creds) error {
	o := hd.obj
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	ps.mu.Lock()
	closed := ps.closed
	ps.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	p, err := ps.store.Create(path, perm, cr, o, uint32(hd.mode), pinContent(o, hd.mode))
	if err != nil {
		return err
	}
	r := ps.srv.reg
	ps.mu.Lock()
	r.mu.Lock()
	if hd.dead.Load() || r.closed {
		r.mu.Unlock()
		ps.mu.Unlock()
		ps.store.Remove(p)
		return ErrBadHandle
	}
	o.refs++
	r.mu.Unlock()
	pd := ps.objs[o]
	fresh := pd == nil
	if fresh {
		key, kerr := newPinKey()
		if kerr != nil {
			ps.mu.Unlock()
			ps.undo(o, p, nil)
			return kerr
		}
		pd = &pinned{key: key}
		ps.objs[o] = pd
	}
	pd.pins = append(pd.pins, p)
	ps.mu.Unlock()
	if ps.srv.cfg.Persister != nil {
		if err := ps.save(o); err != nil {
			ps.srv.log.Warn("cannot persist pin; pin removed", zap.String("path", p.Path), zap.Error(err))
			ps.undo(o, p, pd)
			return err
		}
	}
	ps.srv.log.Debug("pinned", zap.Uint32("id", o.id), zap.String("path", p.Path),
		zap.Uint32("uid", cr.UID), zap.Stringer("mode", hd.mode))
	return nil
}

// undo removes pin p of o again (after a failure) and drops its reference.
// pd is o's bookkeeping if p was already added to it. saveMu must be held.
func (ps *pinSet) undo(o *Object, p *pins.Pin, pd *pinned) {
	ps.store.Remove(p)
	ps.mu.Lock()
	if pd != nil {
		pd.pins = removePin(pd.pins, p)
		if len(pd.pins) == 0 {
			delete(ps.objs, o)
		}
	}
	r := ps.srv.reg
	r.mu.Lock()
	free := r.unref(o, nil)
	r.mu.Unlock()
	ps.mu.Unlock()
	closeObjects(free)
}

func removePin(list []*pins.Pin, p *pins.Pin) []*pins.Pin {
	for i, q := range list {
		if q == p {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			return list[:last]
		}
	}
	return list
}

// unpinned is the store's callback for a pin file whose last link was
// removed: the pin's reference is dropped, and the object's record updated
// or removed.
func (ps *pinSet) unpinned(p *pins.Pin) {
	o, ok := p.Object.(*Object)
	if !ok {
		return
	}
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	ps.mu.Lock()
	pd := ps.objs[o]
	if ps.closed || pd == nil {
		ps.mu.Unlock()
		return
	}
	n := len(pd.pins)
	pd.pins = removePin(pd.pins, p)
	if len(pd.pins) == n {
		ps.mu.Unlock()
		return // already undone
	}
	last := len(pd.pins) == 0
	if last {
		delete(ps.objs, o)
	}
	r := ps.srv.reg
	r.mu.Lock()
	// Other pins (if any) keep o alive for the save below; if this was the
	// last reference, free holds o, closed at the end.
	free := r.unref(o, nil)
	r.mu.Unlock()
	ps.mu.Unlock()
	ps.srv.log.Debug("unpinned", zap.Uint32("id", o.id), zap.String("path", p.Path), zap.Bool("freed", len(free) > 0))
	if per := ps.srv.cfg.Persister; per != nil {
		var err error
		if last {
			err = per.RemovePinned(pd.key)
		} else {
			err = ps.save(o)
		}
		if err != nil {
			ps.srv.log.Warn("cannot update persisted pins", zap.Uint32("id", o.id), zap.Error(err))
		}
	}
	closeObjects(free)
}

// objGet executes CmdObjGet: a presented pin file fd becomes a handle and
// a new descriptor with the mode its open granted.
func (c *conn) objGet(a, data []byte, fds []int) (int64, error) {
	var at wire.ObjGetAttr
	if !at.Parse(a) || len(data) != 0 {
		return 0, ErrInvalid
	}
	switch {
	case len(fds) == 0:
		return 0, pins.ErrNotPin
	case len(fds) > 1:
		return 0, ErrFDs
	}
	if at.Mode != 0 && !at.Mode.Valid() {
		return 0, ErrInvalid
	}
	ps := c.srv.pins
	if ps == nil {
		return 0, ErrPinsDisabled
	}
	p, granted, err := ps.store.Resolve(fds[0])
	if err != nil {
		return 0, err
	}
	mode := wire.Mode(granted)
	if mode == 0 {
		return 0, ErrPinAccess
	}
	if at.Mode != 0 {
		if at.Mode&^mode != 0 {
			return 0, ErrPinAccess
		}
		mode = at.Mode
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	o, ok := p.Object.(*Object)
	if !ok {
		return 0, pins.ErrNotPin
	}
	r := c.reg
	ps.mu.Lock()
	pd := ps.objs[o]
	live := pd != nil && containsPin(pd.pins, p)
	if !live {
		ps.mu.Unlock()
		return 0, pins.ErrUnpinned
	}
	r.mu.Lock()
	d, cfd, err := r.newDescLocked(o, mode, c.uid, nil)
	if err != nil {
		r.mu.Unlock()
		ps.mu.Unlock()
		return 0, err
	}
	hd := r.newHandleLocked(d, mode, true)
	r.mu.Unlock()
	ps.mu.Unlock()
	c.addFD(cfd)
	id := c.addHandle(hd)
	c.putInfo(hd)
	return int64(id), nil
}

func containsPin(list []*pins.Pin, p *pins.Pin) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

// pinMkdir executes CmdPinMkdir.
func (c *conn) pinMkdir(a, data []byte) (int64, error) {
	var at wire.PinMkdirAttr
	at.Parse(a)
	path, err := pinPath(data, at.PathLen)
	if err != nil {
		return 0, err
	}
	if at.FileMode&^0o777 != 0 {
		return 0, ErrPinPerm
	}
	ps := c.srv.pins
	if ps == nil {
		return 0, ErrPinsDisabled
	}
	cr, err := c.creds()
	if err != nil {
		return 0, err
	}
	return 0, ps.store.Mkdir(path, os.FileMode(at.FileMode), cr)
}

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
	ErrPinDestroy   = errno.New(unix.EACCES, "demux: a pin passes the destroy right only to the pin file's owner, and only if it was made through a handle holding it")
)

// pinSet is the server's pins: the store (files under the pin root) and,
// per pinned object, its live pin nodes and persistence key. Each live pin
// node holds one reference on its object, dropped when the pin's name goes
// or the pin is revoked.
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
	key  string        // persistence key, stable across restarts
	pins []*Descriptor // live pin nodes; guarded by pinSet.mu
}

// openPins opens the pin store when the server has a pin root.
func (s *Server) openPins() error {
	if s.cfg.PinRoot == "" {
		return nil
	}
	ps := &pinSet{srv: s, objs: map[*Object]*pinned{}}
	st, err := pins.Open(s.cfg.PinRoot, ps.unpinned, ps.changed)
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
	// than left naming nothing. Link pins are always removed: a link's
	// queues were bound with its client's authority, which a restarted
	// daemon does not have (links.go).
	var remove []*pins.Pin
	ps.mu.Lock()
	for _, o := range objs {
		if o.link == nil && (o.p == nil || s.cfg.Persister != nil) {
			continue
		}
		if pd := ps.objs[o]; pd != nil {
			for _, n := range pd.pins {
				remove = append(remove, n.pin)
			}
		}
	}
	ps.mu.Unlock()
	for _, p := range remove {
		ps.store.Remove(p)
	}
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
	switch o.kind {
	case wire.ObjProg:
		kind = "prog"
	case wire.ObjLink:
		kind = "link"
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
	if err := c.srv.pinnable(hd.obj); err != nil {
		return 0, err
	}
	cr, err := c.creds()
	if err != nil {
		return 0, err
	}
	return 0, ps.pin(hd, path, os.FileMode(at.FileMode), cr)
}

// pin creates the pin file, links its node below the handle's descriptor
// (taking a reference on the object) and persists the object; on any
// failure the file is removed again.
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
	n := &Descriptor{kind: nodePin, obj: o, mode: hd.mode, uid: cr.UID, peer: -1}
	p, err := ps.store.Create(path, perm, cr, n, uint32(hd.mode), pinContent(o, hd.mode))
	if err != nil {
		return err
	}
	n.pin = p
	if _, a, err := ps.store.Attrs(p); err == nil {
		n.attrs = a
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
	if err := r.descCheck(cr.UID); err != nil {
		r.mu.Unlock()
		ps.mu.Unlock()
		ps.store.Remove(p)
		return err
	}
	r.newPinNodeLocked(n, hd.src)
	r.mu.Unlock()
	pd := ps.objs[o]
	if pd == nil {
		// The object's own key names its records, so that a restart
		// finds its storage and journal entry under the same name.
		key := o.key
		if key == "" {
			var kerr error
			if key, kerr = newPinKey(); kerr != nil {
				ps.mu.Unlock()
				ps.undo(n, nil)
				return kerr
			}
		}
		pd = &pinned{key: key}
		ps.objs[o] = pd
	}
	pd.pins = append(pd.pins, n)
	ps.mu.Unlock()
	if ps.srv.cfg.Persister != nil {
		if err := ps.save(o); err != nil {
			ps.srv.log.Warn("cannot persist pin; pin removed", zap.String("path", p.Path), zap.Error(err))
			ps.undo(n, pd)
			return err
		}
	}
	ps.srv.log.Debug("pinned", zap.Uint32("id", o.id), zap.String("path", p.Path),
		zap.Uint32("uid", cr.UID), zap.Stringer("mode", hd.mode), zap.Uint64("node", n.id))
	return nil
}

// undo removes pin node n again (after a failure) and drops its
// reference. pd is its object's bookkeeping if n was already added to it.
// saveMu must be held.
func (ps *pinSet) undo(n *Descriptor, pd *pinned) {
	ps.store.Remove(n.pin)
	ps.mu.Lock()
	if pd != nil {
		pd.pins = removeNode(pd.pins, n)
		if len(pd.pins) == 0 {
			delete(ps.objs, n.obj)
		}
	}
	r := ps.srv.reg
	r.mu.Lock()
	free := r.killPinLocked(n, nil)
	r.mu.Unlock()
	ps.mu.Unlock()
	closeObjects(free)
}

func removeNode(list []*Descriptor, n *Descriptor) []*Descriptor {
	for i, q := range list {
		if q == n {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			return list[:last]
		}
	}
	return list
}

// unpinned is the store's callback for a pin whose name is gone: the pin
// node dies (what was derived from it lives on), its reference is
// dropped, and the object's record updated or removed.
func (ps *pinSet) unpinned(p *pins.Pin) {
	n, ok := p.Object.(*Descriptor)
	if !ok {
		return
	}
	o := n.obj
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	ps.mu.Lock()
	pd := ps.objs[o]
	if ps.closed || pd == nil {
		ps.mu.Unlock()
		return
	}
	k := len(pd.pins)
	pd.pins = removeNode(pd.pins, n)
	if len(pd.pins) == k {
		ps.mu.Unlock()
		return // already undone or revoked
	}
	last := len(pd.pins) == 0
	if last {
		delete(ps.objs, o)
	}
	r := ps.srv.reg
	r.mu.Lock()
	// Other pins (if any) keep o alive for the save below; if this was the
	// last reference, free holds o, closed at the end.
	free := r.killPinLocked(n, nil)
	r.mu.Unlock()
	ps.mu.Unlock()
	ps.srv.log.Debug("unpinned", zap.Uint32("id", o.id), zap.String("path", p.Path), zap.Bool("freed", len(free) > 0))
	if err := ps.persistPins(o, pd.key, last); err != nil {
		ps.srv.log.Warn("cannot update persisted pins", zap.Uint32("id", o.id), zap.Error(err))
	}
	closeObjects(free)
}

// changed is the store's callback for a live pin file whose attributes
// may have changed: if its mode, owner, group or ACL differ from what was
// recorded, the object's pins are persisted again, so that a restore
// never gives the pin wider (or other) permissions than it last had.
func (ps *pinSet) changed(p *pins.Pin) {
	n, ok := p.Object.(*Descriptor)
	if !ok {
		return
	}
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	ps.mu.Lock()
	pd := ps.objs[n.obj]
	live := !ps.closed && pd != nil && containsNode(pd.pins, n)
	ps.mu.Unlock()
	if !live {
		return
	}
	_, a, err := ps.store.Attrs(p)
	if err != nil || a.Equal(n.attrs) {
		return
	}
	if err := ps.persistPins(n.obj, pd.key, false); err != nil {
		ps.srv.log.Warn("cannot record changed pin attributes", zap.Uint32("id", n.obj.id),
			zap.String("path", p.Path), zap.Error(err))
	}
}

// persistPins records o's pins (all of them gone: its record is removed).
// saveMu must be held.
func (ps *pinSet) persistPins(o *Object, key string, gone bool) error {
	per := ps.srv.cfg.Persister
	if per == nil {
		return nil
	}
	if gone {
		return per.RemovePinned(key)
	}
	po, err := ps.snapshotPins(o)
	if err != nil || po == nil {
		return err
	}
	return per.SavePins(po)
}

// dropPins removes the files and records of pin nodes killed by a
// revocation (revokeLocked already marked them dead and dropped their
// references). saveMu must be held. It returns the first persistence
// error: the pins are gone now, but a crash before their objects' records
// are written again could bring them back.
func (ps *pinSet) dropPins(killed []*Descriptor) error {
	if len(killed) == 0 {
		return nil
	}
	type touched struct {
		key  string
		gone bool
	}
	objs := map[*Object]*touched{}
	var remove []*pins.Pin
	ps.mu.Lock()
	for _, n := range killed {
		if n.pin != nil {
			remove = append(remove, n.pin)
		}
		pd := ps.objs[n.obj]
		if pd == nil {
			continue
		}
		pd.pins = removeNode(pd.pins, n)
		t := &touched{key: pd.key, gone: len(pd.pins) == 0}
		if t.gone {
			delete(ps.objs, n.obj)
		}
		objs[n.obj] = t
	}
	ps.mu.Unlock()
	for _, p := range remove {
		ps.store.Remove(p)
	}
	var first error
	for o, t := range objs {
		if err := ps.persistPins(o, t.key, t.gone); err != nil {
			ps.srv.log.Warn("cannot persist revoked pins", zap.Uint32("id", o.id), zap.Error(err))
			if first == nil {
				first = err
			}
		}
	}
	return first
}

func containsNode(list []*Descriptor, n *Descriptor) bool {
	for _, q := range list {
		if q == n {
			return true
		}
	}
	return false
}

// objGet executes CmdObjGet: a presented pin file fd becomes a handle and
// a new descriptor, a child of the pin in the object's lineage, with the
// data rights the open granted (capped by the pin's) and, for the pin
// file's owner only, the pin's destroy right.
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
	p, op, err := ps.store.Resolve(fds[0])
	if err != nil {
		return 0, err
	}
	n, ok := p.Object.(*Descriptor)
	if !ok {
		return 0, pins.ErrNotPin
	}
	granted := wire.Mode(op.Access) & n.mode.Data()
	if n.mode&wire.ModeDestroy != 0 && op.Owner == c.uid {
		granted |= wire.ModeDestroy
	}
	mode := granted
	if at.Mode != 0 {
		if at.Mode&^granted != 0 {
			if at.Mode&wire.ModeDestroy != 0 && granted&wire.ModeDestroy == 0 {
				return 0, ErrPinDestroy
			}
			return 0, ErrPinAccess
		}
		mode = at.Mode
	}
	if mode == 0 {
		return 0, ErrPinAccess
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	r := c.reg
	r.mu.Lock()
	if n.dead {
		r.mu.Unlock()
		return 0, pins.ErrUnpinned
	}
	d, cfd, err := r.newDescLocked(n.obj, mode, c.uid, n)
	if err != nil {
		r.mu.Unlock()
		return 0, err
	}
	hd := r.newHandleLocked(d, mode, true)
	r.mu.Unlock()
	c.addFD(cfd)
	id := c.addHandle(hd)
	c.putInfo(hd)
	return int64(id), nil
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

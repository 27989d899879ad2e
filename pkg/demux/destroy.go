package demux

import (
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// ErrNotOwner: DESTROY through a handle that is not a full-mode handle of
// a root descriptor.
var ErrNotOwner = errno.New(unix.EPERM, "demux: only a full-mode handle of a root descriptor (made by create or OBJ_GET) may destroy the object")

// destroy executes CmdDestroy: DESIGN.md's "destroying an object revokes
// everything at once".
func (c *conn) destroy(a, data []byte) (int64, error) {
	var at wire.HandleAttr
	at.Parse(a)
	if at.Mode != 0 || len(data) != 0 {
		return 0, ErrInvalid
	}
	hd, err := c.lookup(at.Handle)
	if err != nil {
		return 0, err
	}
	o := hd.obj
	r := c.reg
	r.mu.Lock()
	// A live handle keeps its descriptor linked, so parent is reliable.
	root := hd.src.parent == nil
	r.mu.Unlock()
	if hd.mode != o.cap || !root {
		return 0, ErrNotOwner
	}
	if ps := c.srv.pins; ps != nil {
		ps.unpinAll(o)
	}
	var free []*Object
	r.mu.Lock()
	for d := range o.roots {
		free = r.revokeLocked(d, free)
		delete(o.roots, d)
	}
	r.mu.Unlock()
	closeObjects(free)
	c.srv.log.Debug("destroyed", zap.Uint32("id", o.id), zap.Uint32("uid", c.uid))
	return 0, nil
}

// unpinAll removes every pin file of o, drops their references and o's
// persisted record.
func (ps *pinSet) unpinAll(o *Object) {
	ps.saveMu.Lock()
	defer ps.saveMu.Unlock()
	ps.mu.Lock()
	pd := ps.objs[o]
	if pd == nil || ps.closed {
		ps.mu.Unlock()
		return
	}
	delete(ps.objs, o)
	ps.mu.Unlock()
	for _, p := range pd.pins {
		ps.store.Remove(p)
	}
	r := ps.srv.reg
	r.mu.Lock()
	var free []*Object
	for range pd.pins {
		free = r.unref(o, free)
	}
	r.mu.Unlock()
	closeObjects(free)
	if per := ps.srv.cfg.Persister; per != nil {
		if err := per.RemovePinned(pd.key); err != nil {
			ps.srv.log.Warn("cannot remove the record of a destroyed object", zap.Uint32("id", o.id), zap.Error(err))
		}
	}
}

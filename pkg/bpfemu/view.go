package bpfemu

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Shared-memory reads.
//
// bpfd maps a map's storage read-only into any holder of a read
// descriptor (MAP_STORAGE, package mapview). The supervisor uses that for
// the traced processes' lookups and next-key calls: a map they read gets
// mapped into the supervisor on first use, and BPF_MAP_LOOKUP_ELEM and
// BPF_MAP_GET_NEXT_KEY are then answered from the mapping, without a
// round trip to bpfd, as pkg/client's reads are. Whenever the view cannot
// answer (a writer kept racing, a type it does not serve) the call goes to
// bpfd. When the storage moves away (a descriptor was revoked, the map
// destroyed), the mapping is a retired snapshot: the supervisor drops it
// and asks bpfd, whose answer (EBADF for a revoked descriptor) is the
// call's, and maps the live storage again when bpfd still lets it.

// mapState is an object's mapping; nil until the first read, and
// noView once reads must go to bpfd.
type mapState struct {
	mem  []byte
	view *mapview.View
}

var noView = &mapState{}

// viewOf returns o's mapping for reads, making it on first use, or nil.
// o must be busy (its mapping is unmapped only by drop, which waits for
// that).
func (c *call) viewOf(o *object) *mapview.View {
	st := o.view.Load()
	if st == noView {
		return nil
	}
	if st != nil {
		return st.view
	}
	if o.info.Mode&wire.ModeRead == 0 {
		o.view.Store(noView)
		return nil
	}
	at := wire.MapStorageAttr{Handle: o.handle}
	var ab [wire.MapStorageAttrSize]byte
	var out [wire.MapStorageInfoSize + 16]byte
	r, err := c.do(wire.CmdMapStorage, at.Append(ab[:0]), nil, out[:])
	if err != nil {
		return nil
	}
	if r.Errno != 0 || len(r.FDs) != 1 {
		closeAll(r.FDs)
		o.view.Store(noView) // a daemon without the command, a revoked descriptor
		return nil
	}
	defer closeAll(r.FDs)
	var info wire.MapStorageInfo
	if !info.Parse(r.Data) || info.Size == 0 || info.Size > mapview.MaxRegionSize {
		o.view.Store(noView)
		return nil
	}
	mem, err := unix.Mmap(r.FDs[0], 0, int(info.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		o.view.Store(noView)
		return nil
	}
	v, err := mapview.New(mem)
	if err != nil || v.ValueSize() != c.s.syscallValueSize(&o.info) {
		unix.Munmap(mem)
		o.view.Store(noView)
		return nil
	}
	if !o.view.CompareAndSwap(nil, &mapState{mem: mem, view: v}) {
		unix.Munmap(mem) // another call mapped it first
		if st := o.view.Load(); st != noView {
			return st.view
		}
		return nil
	}
	return v
}

// retire drops o's mapping after the view said its storage moved; the
// next read maps the live storage again (if bpfd still lets the handle).
// The old mapping stays mapped until the object goes, since another call
// may be reading it.
func (c *call) retire(o *object) {
	st := o.view.Load()
	if st == nil || st == noView {
		return
	}
	if o.view.CompareAndSwap(st, nil) {
		c.s.tab.mu.Lock()
		o.retired = append(o.retired, st.mem)
		c.s.tab.mu.Unlock()
	}
}

// unmapViews unmaps o's mappings (the object is being dropped: no call
// uses it).
func unmapViews(o *object) {
	if st := o.view.Swap(noView); st != nil && st != noView {
		unix.Munmap(st.mem)
	}
	for _, m := range o.retired {
		unix.Munmap(m)
	}
	o.retired = nil
}

// viewLookup answers a lookup from the mapping: done reports whether err
// (nil or ENOENT) is the answer; otherwise ask bpfd.
func (c *call) viewLookup(o *object, key, value []byte) (done bool, err error) {
	v := c.viewOf(o)
	if v == nil {
		return false, nil
	}
	switch v.Lookup(key, value) {
	case nil:
		return true, nil
	case mapview.ErrNotFound:
		return true, unix.ENOENT
	case mapview.ErrRetired:
		c.retire(o)
	}
	return false, nil
}

// viewNextKey is viewLookup for BPF_MAP_GET_NEXT_KEY.
func (c *call) viewNextKey(o *object, key, next []byte) (done bool, err error) {
	v := c.viewOf(o)
	if v == nil {
		return false, nil
	}
	switch v.NextKey(key, next) {
	case nil:
		return true, nil
	case mapview.ErrNotFound:
		return true, unix.ENOENT
	case mapview.ErrRetired:
		c.retire(o)
	}
	return false, nil
}

package demux

import (
	"encoding/binary"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Maps of maps (ARRAY_OF_MAPS, HASH_OF_MAPS).
//
// Creation names the inner template by handle (MapCreateAttr's
// InnerMapHandle, the kernel's inner_map_fd): any map handle of the
// connection, any mode — only the template's shape is copied, the map is
// not referenced afterwards. An update's value is a map handle of the
// connection (the client library translates descriptors, as for the
// kernel's fds); the map must be compatible with the template
// (maps.Compatible, EINVAL) and the handle must carry every right a
// program holding the outer map could exercise on it: read and write,
// as far as the inner map's own BPF_F_RDONLY/WRONLY cap allows (EPERM
// otherwise). The stored entry takes a reference on the inner map and,
// like a program-array slot, keeps using the authority of the handle's
// lineage node: revoking that node (or anything above it), or destroying
// the inner map, clears the entry. So an outer map is never a way around
// revocation: whoever loses a descriptor also loses what they stored
// with it, and the programs using the outer map find the entry empty from
// the next lookup on. A lookup on the syscall side returns the inner
// map's id, as the kernel's; ids give no access by themselves.
//
// Entries live as long as the outer map (the kernel's rule; inner maps
// cannot hold maps or programs, so there are no cycles to break), and
// come back empty after a daemon restart: the references they stand for
// belong to the run that made them.

// mapInMap is the bookkeeping of a map of maps. Guarded by registry.mu.
type mapInMap struct {
	inner map[string]*Object     // key -> the inner map stored there (holds a reference)
	via   map[string]*Descriptor // key -> the lineage node of the handle that stored it (a use)
}

// isMapInMap reports whether hd names a map of maps.
func isMapInMap(hd *handle) bool { return hd.obj.m != nil && isMapInMapSpec(hd.obj.spec) }

// isMapInMapSpec reports whether s is ARRAY_OF_MAPS or HASH_OF_MAPS.
func isMapInMapSpec(s maps.Spec) bool {
	return s.Type == maps.TypeArrayOfMaps || s.Type == maps.TypeHashOfMaps
}

// isFDMap reports whether hd names a map whose values are references
// (program arrays, maps of maps): batch writes are refused on them.
func isFDMap(hd *handle) bool { return isProgArray(hd) || isMapInMap(hd) }

// mapCreateSpec builds the spec a MAP_CREATE request asks for, with the
// inner template of a map of maps resolved (EBADF for a dead or unknown
// handle, EINVAL for one that names no map; the kernel ignores
// inner_map_fd for other types, and so does bpfd).
func (c *conn) mapCreateSpec(at *wire.MapCreateAttr) (maps.Spec, error) {
	spec := maps.Spec{Type: at.MapType, KeySize: at.KeySize, ValueSize: at.ValueSize,
		MaxEntries: at.MaxEntries, Flags: at.MapFlags, Name: wire.NameString(at.Name),
		NumaNode: at.NumaNode, MapExtra: at.MapExtra}
	if spec.Type != maps.TypeArrayOfMaps && spec.Type != maps.TypeHashOfMaps {
		return spec, nil
	}
	if at.InnerMapHandle == 0 {
		return spec, ErrInvalid
	}
	hd, err := c.lookup(at.InnerMapHandle)
	if err != nil {
		return spec, err
	}
	if hd.obj.m == nil {
		return spec, ErrInvalid
	}
	tmpl := hd.obj.spec
	spec.Inner = &tmpl
	return spec, nil
}

// mapInMapElem updates or deletes an entry of a map of maps (see the file
// comment). data is the key, then for an update the inner map's handle.
func (c *conn) mapInMapElem(cmd wire.Cmd, hd *handle, at *wire.ElemAttr, data []byte) (int64, error) {
	o := hd.obj
	ks := int(o.spec.KeySize)
	if len(data) < ks {
		return 0, ErrDataLen
	}
	key := data[:ks]
	r := c.reg
	if cmd == wire.CmdMapDeleteElem {
		if len(data) != ks {
			return 0, ErrDataLen
		}
		r.mu.Lock()
		err := o.m.Delete(key)
		var free []*Object
		if err == nil {
			free = r.dropInnerLocked(o, string(key), free)
		}
		r.mu.Unlock()
		closeObjects(free)
		return 0, err
	}
	if len(data) != ks+4 {
		return 0, ErrDataLen
	}
	if o.m.Frozen() {
		return 0, maps.ErrPermission
	}
	if o.spec.Type == maps.TypeArrayOfMaps {
		// The kernel's fd arrays check flags and the index before the fd.
		if at.Flags != maps.UpdateAny {
			return 0, maps.ErrInvalidFlags
		}
		if binary.NativeEndian.Uint32(key) >= o.spec.MaxEntries {
			return 0, maps.ErrIndexRange
		}
	}
	ih, err := c.lookup(binary.NativeEndian.Uint32(data[ks:]))
	if err != nil {
		return 0, err
	}
	if ih.obj.m == nil || o.spec.Inner == nil {
		return 0, ErrInvalid
	}
	if err := maps.Compatible(ih.obj.spec, *o.spec.Inner); err != nil {
		return 0, err
	}
	if need := wire.ModeReadWrite & ih.obj.cap; ih.mode&need != need {
		return 0, ErrPermission
	}
	var id [4]byte
	binary.NativeEndian.PutUint32(id[:], ih.obj.id)
	r.mu.Lock()
	if ih.dead.Load() || hd.dead.Load() {
		r.mu.Unlock()
		return 0, ErrBadHandle
	}
	if err := o.m.Update(key, id[:], at.Flags); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	k := string(key)
	// Replaced (or refilled): the update above already stored the new id.
	free := r.forgetInnerLocked(o, k, nil)
	if o.mim == nil {
		o.mim = &mapInMap{inner: map[string]*Object{}, via: map[string]*Descriptor{}}
	}
	o.mim.inner[k] = ih.obj
	ih.obj.refs++
	r.innerMaps.Store(ih.obj.id, ih.obj.m)
	o.mim.via[k] = ih.src
	addUseLocked(ih.src, use{outer: o, okey: k})
	r.mu.Unlock()
	closeObjects(free)
	return 0, nil
}

// forgetInnerLocked drops the bookkeeping of o's entry k (its reference
// and its use) without touching the storage. r.mu must be held.
func (r *registry) forgetInnerLocked(o *Object, k string, free []*Object) []*Object {
	if o.mim == nil {
		return free
	}
	in := o.mim.inner[k]
	if in == nil {
		return free
	}
	delete(o.mim.inner, k)
	if v := o.mim.via[k]; v != nil {
		delete(o.mim.via, k)
		r.dropUseLocked(v, use{outer: o, okey: k})
	}
	return r.unref(in, free)
}

// dropInnerLocked clears o's entry k: from the storage (so programs no
// longer find it), then its bookkeeping. r.mu must be held.
func (r *registry) dropInnerLocked(o *Object, k string, free []*Object) []*Object {
	if o.mim == nil || o.mim.inner[k] == nil {
		return free
	}
	if o.m != nil {
		// The program-side delete: frozen and BPF_F_RDONLY outer
		// maps are cleared too.
		o.m.ProgDelete([]byte(k))
	}
	return r.forgetInnerLocked(o, k, free)
}

// dropInnersLocked clears every entry of o (when o dies). r.mu must be
// held.
func (r *registry) dropInnersLocked(o *Object, free []*Object) []*Object {
	if o.mim == nil {
		return free
	}
	for k := range o.mim.inner {
		free = r.dropInnerLocked(o, k, free)
	}
	return free
}

// mapByID resolves a map id stored in a map of maps, for programs
// (prog.Env.Maps): nil if no such map lives. It takes no lock (a program
// calls it holding a CPU slot, and registry.mu holders may wait for
// one); a map is entered when first stored in a map of maps and leaves
// when it dies.
func (r *registry) mapByID(id uint32) maps.Map {
	if m, ok := r.innerMaps.Load(id); ok {
		return m.(maps.Map)
	}
	return nil
}

// emptyMapInMap clears a map of maps restored from a region or a saved
// image: its ids name maps of an earlier run, whose references are gone.
// Dump and the program-side delete ignore BPF_F_RDONLY/WRONLY and
// freezing.
func emptyMapInMap(m maps.Map) {
	if !isMapInMapSpec(m.Spec()) {
		return
	}
	var keys [][]byte
	maps.Dump(m, func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	for _, k := range keys {
		m.ProgDelete(k)
	}
}

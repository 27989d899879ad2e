package prog

import (
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// Maps of maps on the program side. bpf_map_lookup_elem on an
// ARRAY_OF_MAPS or HASH_OF_MAPS returns the inner map stored under the
// key (the verifier types the result as a map pointer of the outer map's
// inner template), which the program then passes to the map helpers.
//
// At run time the outer map yields an id (maps.Outer.InnerID), Env.Maps
// resolves it to the map, and the run records the map in its own table
// (runCtx.inner): the pointer the program gets is mapPtrTag | innerBit |
// index in that table. So a pointer stays bound to the map it was looked
// up as for the rest of the run, like the kernel's RCU-protected map
// pointer, while an update of the outer map (an atomic 32-bit store of
// the new id) is seen by the next lookup: swapping an inner map is atomic
// for running programs. The map cannot go away under the run: closing a
// map waits for the invocations holding a CPU slot of its pool.
//
// The access a program has to an inner map is its access to the outer
// map, intersected with what the template allows programs
// (BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG) and, as for a map referenced
// directly, with the template's syscall caps (BPF_F_RDONLY, BPF_F_WRONLY
// cap every descriptor of such a map): innerAccess. The verifier checks
// loads and stores against the same access.

// innerBit marks a map pointer naming an entry of the run's inner-map
// table rather than one of the program's references.
const innerBit = uint64(1) << 31

// innerRef is one inner map a run looked up.
type innerRef struct {
	ref  MapRef
	slot mapSlot
}

// innerAccess is the access a program holding outer has to the maps
// stored in it (tmpl is the outer map's inner template).
func innerAccess(outer MapRef, tmpl *maps.Spec) (read, write bool) {
	f := tmpl.Flags
	read = outer.Read && f&(maps.FlagWronlyProg|maps.FlagWronly) == 0
	write = outer.Write && f&(maps.FlagRdonlyProg|maps.FlagRdonly) == 0
	return read, write
}

// innerInfo is the verifier's description of outer's inner template
// (nil for other maps). Read and Write are the template's own limits; the
// verifier intersects them with the access to the outer map.
func innerInfo(s maps.Spec) *verifier.MapInfo {
	if s.Inner == nil || (s.Type != maps.TypeArrayOfMaps && s.Type != maps.TypeHashOfMaps) {
		return nil
	}
	t := s.Inner
	r, w := innerAccess(MapRef{Read: true, Write: true}, t)
	return &verifier.MapInfo{Type: t.Type, KeySize: t.KeySize, ValueSize: t.ValueSize,
		MaxEntries: t.MaxEntries, Flags: t.Flags, Read: r, Write: w, Name: t.Name, SpinLock: t.SpinLock}
}

// lookupInner is bpf_map_lookup_elem on an outer map: the inner map
// stored under key as a map pointer, or NULL.
func lookupInner(rc *runCtx, ref *MapRef, key []byte) uint64 {
	o, ok := ref.Map.(maps.Outer)
	if !ok || rc.p.env.Maps == nil {
		return 0
	}
	id := o.InnerID(rc.cpu, key)
	if id == 0 {
		return 0
	}
	m := rc.p.env.Maps(id)
	if m == nil {
		return 0
	}
	if rc.innerGen != rc.gen {
		clear(rc.inner)
		rc.inner = rc.inner[:0]
		rc.innerGen = rc.gen
	}
	tmpl := ref.Map.Spec().Inner
	if tmpl == nil {
		return 0
	}
	read, write := innerAccess(*ref, tmpl)
	for i := range rc.inner {
		if r := &rc.inner[i].ref; r.Map == m && r.Read == read && r.Write == write {
			return mapPtrTag | innerBit | uint64(i)
		}
	}
	if uint64(len(rc.inner)) >= innerBit {
		return 0
	}
	sp := m.Spec()
	in := innerRef{ref: MapRef{Map: m, Name: sp.Name, Read: read, Write: write},
		slot: mapSlot{keySize: int(sp.KeySize), valueSize: int(sp.ValueSize), maxEntries: sp.MaxEntries, static: -1}}
	rc.inner = append(rc.inner, in)
	return mapPtrTag | innerBit | uint64(len(rc.inner)-1)
}

// innerArg resolves a map pointer with innerBit set (see mapArg).
func innerArg(rc *runCtx, i uint64) (*MapRef, *mapSlot, bool) {
	i &^= innerBit
	if rc.innerGen != rc.gen || i >= uint64(len(rc.inner)) {
		return nil, nil, false
	}
	return &rc.inner[i].ref, &rc.inner[i].slot, true
}

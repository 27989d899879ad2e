package maps

import "sync/atomic"

// Maps of maps: BPF_MAP_TYPE_ARRAY_OF_MAPS (a ProgArray: max_entries
// uint32 slots) and BPF_MAP_TYPE_HASH_OF_MAPS (a HashOfMaps: a hash whose
// 4-byte values are updated in place). Both store the ids of inner maps;
// the layer above (pkg/demux) translates the descriptor or handle a
// client passes into the inner map's id after checking it against the
// outer map's inner template with Compatible, keeps a reference to every
// inner map stored, and resolves ids at program run time (pkg/prog's
// Env.Maps). Spec.Inner is the template: given at creation (the kernel's
// inner_map_fd), mandatory for these two types, and copied — the
// template map itself is not referenced afterwards, as in the kernel.

// Outer is implemented by the maps-of-maps storage: the program side of
// bpf_map_lookup_elem on an outer map.
type Outer interface {
	Map
	// InnerID returns the id stored under key, or 0 if there is none
	// (empty slot, absent key, wrong key size, closed map). Program side:
	// no permission checks; cpu is the caller's CPU slot.
	InnerID(cpu int, key []byte) uint32
}

var (
	_ Outer = (*ProgArray)(nil)
	_ Outer = (*HashOfMaps)(nil)
)

// InnerID implements Outer for ARRAY_OF_MAPS (and is Prog for the other
// fd arrays).
func (p *ProgArray) InnerID(_ int, key []byte) uint32 {
	if len(key) != 4 {
		return 0
	}
	return p.Prog(index(key))
}

// HashOfMaps is BPF_MAP_TYPE_HASH_OF_MAPS: a hash map of inner map ids
// (value size 4), with the kernel's update flags (BPF_NOEXIST, BPF_EXIST)
// and errnos; lookups on the syscall side return the id. The value of a
// present key is replaced in place under its bucket's sequence counter,
// so a running program sees either the old or the new inner map, never a
// mixture. Safe for concurrent use.
type HashOfMaps struct {
	*Hash
}

// InnerID implements Outer.
func (h *HashOfMaps) InnerID(cpu int, key []byte) uint32 {
	if len(key) != int(h.spec.KeySize) {
		return 0
	}
	v := h.Hash.ProgLookup(cpu, key)
	if len(v) < 4 {
		return 0
	}
	return atomic.LoadUint32((*uint32)(mapviewPtr(v, 0)))
}

// ValueRef implements Map: always nil (values are ids, not data).
func (h *HashOfMaps) ValueRef([]byte) []byte { return nil }

// ProgLookup implements Map: always nil (the program layer resolves
// inner maps with InnerID).
func (h *HashOfMaps) ProgLookup(int, []byte) []byte { return nil }

// LookupAndDelete implements Map: ErrNotSupported (ENOTSUPP) after the
// permission checks, as the kernel's hash of maps.
func (h *HashOfMaps) LookupAndDelete(key, value []byte) error {
	if err := h.canRead(); err != nil {
		return err
	}
	if err := h.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// isMapInMap reports whether s is ARRAY_OF_MAPS or HASH_OF_MAPS.
func (s Spec) isMapInMap() bool { return s.Type == TypeArrayOfMaps || s.Type == TypeHashOfMaps }

// checkInner applies the kernel's bpf_map_meta_alloc rules to s.Inner:
// only maps of maps have one; the template may not itself be a map of
// maps (EINVAL: one level only) or a program array (ENOTSUPP: it has no
// map_meta_equal), and must be a valid spec.
func (s Spec) checkInner() error {
	if s.Inner == nil {
		return nil
	}
	if !s.isMapInMap() {
		return ErrInvalid
	}
	in := s.Inner
	switch {
	case in.isMapInMap():
		return ErrInvalid
	case in.Type == TypeProgArray:
		return ErrNotSupported
	}
	return nil
}

// Compatible reports whether a map of spec inner may be stored in a map
// of maps whose template is tmpl: nil, or ErrInvalid (EINVAL) unless the
// kernel's map_meta_equal holds — same type, key size, value size and
// flags, and for arrays (per-CPU too) the same max_entries unless the template has
// BPF_F_INNER_MAP; maps of maps and program arrays are never compatible.
func Compatible(inner, tmpl Spec) error {
	if inner.isMapInMap() || inner.Type == TypeProgArray {
		return ErrInvalid
	}
	if inner.Type != tmpl.Type || inner.KeySize != tmpl.KeySize || inner.ValueSize != tmpl.ValueSize ||
		inner.Flags != tmpl.Flags || inner.SpinLock != tmpl.SpinLock {
		return ErrInvalid
	}
	if (inner.Type == TypeArray || inner.Type == TypePercpuArray) && tmpl.Flags&FlagInnerMap == 0 && inner.MaxEntries != tmpl.MaxEntries {
		return ErrInvalid
	}
	return nil
}

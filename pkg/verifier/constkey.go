package verifier

// This file holds the kernel's rule that lets a lookup in an array with a
// constant, in-range key skip the NULL check (Linux 6.14's "bpf:
// verifier: Support eliding map lookup nullness", as in 6.18's
// kernel/bpf/verifier.c: can_elide_value_nullness, get_constant_map_key,
// and the PTR_MAYBE_NULL drop in check_helper_call), and the narrow-spill
// record that rule reads.
//
// The kernel's rule, followed exactly:
//
//   - Only bpf_map_lookup_elem, only on BPF_MAP_TYPE_ARRAY and
//     BPF_MAP_TYPE_PERCPU_ARRAY, and never on a map created with
//     BPF_F_INNER_MAP (its max_entries does not bound the inner maps that
//     replace it; stable kernels carry this fix, "bpf: Keep dynamic inner
//     array lookups nullable"). An inner array without the flag counts:
//     every map stored in the outer map has the template's max_entries.
//   - The key pointer is a stack pointer at a constant offset.
//   - Stack contents, in the 8-byte slot holding the key's first byte,
//     from that byte up to the slot's end (the key cannot span slots):
//     if at least key_size bytes are STACK_ZERO, the key is 0;
//     otherwise the slot must hold a spilled scalar whose spilled bytes,
//     counted from the key's first byte, number exactly key_size, and the
//     spilled register must be a known constant: its full 64-bit value is
//     the key (the kernel reads var_off.value, not the key's bytes).
//   - The key must be >= 0 and < max_entries as a signed 64-bit value.
//
// The kernel keeps a scalar stored at an 8-byte-aligned slot start as a
// spill even when the store is narrower than 8 bytes (check_stack_write_fixed_off,
// save_register_state), and an immediate stored there by BPF_ST as a spill
// of the sign-extended immediate. bpfd's stack keeps those bytes as plain
// data for loads (package doc), and records the narrow spill on the slot
// only for this rule: its size and, when constant, the stored register's
// (or immediate's) untruncated value. Any other write into the slot drops
// the record and, like the kernel's scrub_spilled_slot, turns the slot's
// zero bytes into plain data.

// Map flag BPF_F_INNER_MAP.
const mapFlagInnerMap = 1 << 12

// canElideNullness reports whether a lookup in m may return a non-NULL
// value pointer for a constant in-range key (can_elide_value_nullness).
func canElideNullness(m *MapInfo) bool {
	if m.Flags&mapFlagInnerMap != 0 {
		return false
	}
	return m.Type == MapTypeArray || m.Type == MapTypePercpuArray
}

// constMapKey returns the key that key register p points at when the
// verifier knows it exactly (get_constant_map_key), for a key of size
// bytes. ok is false when it does not.
func constMapKey(st *state, p reg, size int) (key int64, ok bool) {
	if p.typ != ptrToStack || !p.vo.isConst() || size <= 0 {
		return 0, false
	}
	o := int(p.off) + int(int64(p.vo.value))
	if o >= 0 || o < -MaxStack {
		return 0, false
	}
	f := st.frames[p.frame]
	i, k0 := byteIndex(o)
	if i >= len(f.stack) {
		return 0, false
	}
	s := &f.stack[i]
	// kindOf is the kernel's view of byte b: narrow-spilled bytes are
	// spill bytes there.
	kindOf := func(b int) uint8 {
		if b < int(s.narrow) {
			return stSpill
		}
		return s.kind[b]
	}
	n := 0
	for b := k0; b < 8 && kindOf(b) == stZero; b++ {
		n++
	}
	if n >= size {
		return 0, true
	}
	full := s.kind[0] == stSpill && s.spill.typ == scalarValue
	if !full && s.narrow == 0 {
		return 0, false
	}
	n = 0
	for b := k0; b < 8 && kindOf(b) == stSpill; b++ {
		n++
	}
	if n != size {
		return 0, false
	}
	switch {
	case full && s.spill.isConst():
		return int64(s.spill.vo.value), true
	case !full && s.nconst:
		return int64(s.nval), true
	}
	return 0, false
}

// elideLookupNull reports whether a bpf_map_lookup_elem on map mapIdx
// with key register p returns a value pointer that cannot be NULL.
func (v *verifier) elideLookupNull(st *state, mapIdx int32, p reg) bool {
	m := &v.env.Maps[mapIdx]
	if !canElideNullness(m) {
		return false
	}
	key, ok := constMapKey(st, p, int(m.KeySize))
	return ok && key >= 0 && key < int64(m.MaxEntries)
}

// setNarrow records a narrow (1, 2 or 4 byte) scalar store at the start
// of slot s, wide being the stored value before truncation; the bytes
// the previous record covered beyond the new one become plain data, as
// the kernel's mark_stack_slot_misc makes them.
func setNarrow(s *slot, size int, wide *reg) {
	for b := size; b < int(s.narrow); b++ {
		if s.kind[b] == stZero {
			s.kind[b] = stMisc
		}
	}
	s.narrow = uint8(size)
	s.nconst = wide.typ == scalarValue && wide.isConst()
	s.nval = 0
	if s.nconst {
		s.nval = wide.vo.value
	}
}

// dropNarrow forgets slot s's narrow-spill record before another write
// into the slot; like the kernel's scrub_spilled_slot, every initialised
// byte of the slot becomes plain data.
func dropNarrow(s *slot) {
	if s.narrow == 0 {
		return
	}
	for b := range s.kind {
		if s.kind[b] != stInvalid {
			s.kind[b] = stMisc
		}
	}
	s.narrow, s.nconst, s.nval = 0, false, 0
}

// dropNarrowSpill forgets slot s's narrow-spill record before a
// variable-offset write that may touch it: the kernel then no longer
// sees a spilled register there, and the record's bytes, spill bytes to
// it, are no zero bytes.
func dropNarrowSpill(s *slot) {
	for b := 0; b < int(s.narrow); b++ {
		if s.kind[b] == stZero {
			s.kind[b] = stMisc
		}
	}
	s.narrow, s.nconst, s.nval = 0, false, 0
}

// narrowEqual reports whether two slots carry the same narrow-spill
// record (pruning: the record decides which lookups skip the NULL check,
// and it also decides how the slot's zero bytes count, so a record on
// either side must be matched exactly).
func narrowEqual(os, cs *slot) bool {
	return cs.narrow == os.narrow && cs.nconst == os.nconst && cs.nval == os.nval
}

package maps

// restorer is implemented by every map type whose values are data: it
// stores one element of a Dump back (see RestoreElem).
type restorer interface {
	restoreElem(key, value []byte) error
}

// RestoreElem stores value under key with UpdateAny, as the syscall side
// would (value in the syscall layout, Spec.SyscallValueSize bytes) but
// ignoring BPF_F_RDONLY and freezing, for rebuilding a map from a Dump of
// it. It returns the map's update errors, ErrInvalid for a type whose
// values are not data (fd arrays: see RestoreSlot), and ErrClosed.
func RestoreElem(m Map, key, value []byte) error {
	r, ok := m.(restorer)
	if !ok {
		return ErrInvalid
	}
	return r.restoreElem(key, value)
}

func (h *Hash) restoreElem(key, value []byte) error {
	if err := h.checkKV(key, value, h.spec.SyscallValueSize()); err != nil {
		return err
	}
	return h.withSlot(func(cpu int) error { return h.update(cpu, key, value, UpdateAny, true) })
}

func (a *Array) restoreElem(key, value []byte) error {
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != a.spec.SyscallValueSize() {
		return ErrValueSize
	}
	return a.withSlot(func(cpu int) error { return a.update(cpu, key, value, UpdateAny, true) })
}

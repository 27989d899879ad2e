package maps

// RestoreElem stores value under key with UpdateAny, as the syscall side
// would (value in the syscall layout, Spec.SyscallValueSize bytes) but
// ignoring BPF_F_RDONLY and freezing, for rebuilding a map from a saved
// copy of its contents. It returns the map's update errors, ErrInvalid for
// a type whose values are not data (fd arrays), and ErrClosed.
func RestoreElem(m Map, key, value []byte) error {
	switch t := m.(type) {
	case *Hash:
		if err := t.checkKV(key, value, t.spec.SyscallValueSize()); err != nil {
			return err
		}
		return t.withSlot(func(cpu int) error { return t.update(cpu, key, value, UpdateAny, true) })
	case *Array:
		if len(key) != 4 {
			return ErrKeySize
		}
		if len(value) != t.spec.SyscallValueSize() {
			return ErrValueSize
		}
		return t.withSlot(func(cpu int) error { return t.update(cpu, key, value, UpdateAny, true) })
	}
	return ErrInvalid
}

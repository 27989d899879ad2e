package interp

// SetRegion makes the dynamic region ptr designates (a pointer
// AddRegionAccess returned during this run) address buf with access acc
// instead of its previous memory. Helpers that hand a callback one
// element after another (bpf_for_each_map_elem) use it so that an
// iteration over many elements holds two regions, not two per element;
// a pointer the program kept from an earlier element then designates the
// current one, with the same bounds checks against it. It fails with
// ErrOutOfBounds when ptr is not a dynamic region of this run or buf is
// larger than MaxRegionSize.
func (vm *VM) SetRegion(ptr uint64, buf []byte, acc Access) error {
	idx := ptr >> 32
	if ptr&0xffffffff != 0 || idx < dynamicBase || idx >= uint64(len(vm.regions)) || uint64(len(buf)) > MaxRegionSize {
		return &Fault{Code: FaultOutOfBounds, PC: vm.pc, Addr: ptr, Size: len(buf)}
	}
	vm.regions[idx] = newRegion(buf, acc)
	return nil
}

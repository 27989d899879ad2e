package interp

// StaticIndex is StaticPointer's inverse: the static region index and
// offset ptr designates, or false when ptr is not a static-region pointer.
func StaticIndex(ptr uint64) (int, uint32, bool) {
	i := int(ptr>>32) - staticBase
	if i < 0 || i >= MaxStaticRegions {
		return 0, 0, false
	}
	return i, uint32(ptr), true
}

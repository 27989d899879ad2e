package maps

// ForEacher is implemented by the map types bpf_for_each_map_elem
// iterates (the kernel's map_for_each_callback): hash, per-CPU hash, LRU
// hash, LRU per-CPU hash, array, per-CPU array.
type ForEacher interface {
	// ProgForEach calls fn with each element's key and value, in storage
	// order, until fn returns stop or an error, and returns how many
	// calls were made (the helper's result) and fn's error. value is
	// CPU slot cpu's for per-CPU maps, the element's storage itself
	// (program writes through it are the map's); key is a copy the
	// caller may not keep after fn returns. fn may update and delete
	// elements of the map, as the kernel's callbacks may: an element
	// deleted before it is reached is not visited. Program side: no mode
	// checks, no LRU reference marks (the kernel's iteration marks none).
	ProgForEach(cpu int, fn func(key, value []byte) (stop bool, err error)) (int, error)
}

var (
	_ ForEacher = (*Hash)(nil)
	_ ForEacher = (*Array)(nil)
)

// ProgForEach implements ForEacher as the kernel's
// bpf_for_each_array_elem: indexes 0 to max_entries-1, key the index.
func (a *Array) ProgForEach(cpu int, fn func(key, value []byte) (bool, error)) (int, error) {
	var key [4]byte
	n := 0
	for i := uint32(0); i < a.spec.MaxEntries; i++ {
		ne.PutUint32(key[:], i)
		stop, err := fn(key[:], a.slot(i, cpu))
		n++
		if err != nil || stop {
			return n, err
		}
	}
	return n, nil
}

// ProgForEach implements ForEacher as the kernel's
// bpf_for_each_hash_elem: bucket after bucket, each chain in order. The
// bucket lock is held only to step along the chain, never while fn runs
// (fn may update the same bucket). After fn, the walk goes on from the
// entry's successor if the entry is still linked, else from the successor
// it had before fn (as the kernel's RCU walk continues from a removed
// element's next): entries fn inserted (at the head) are not visited, a
// value fn replaced is not visited twice.
func (h *Hash) ProgForEach(cpu int, fn func(key, value []byte) (bool, error)) (int, error) {
	key := make([]byte, h.spec.KeySize)
	n := 0
	for bi := uint32(0); bi < h.l.NBuckets; bi++ {
		b := h.l.BucketOff + 8*uint64(bi)
		h.lockBucket(b)
		e := h.load(b + 4)
		for steps := uint32(0); e != 0 && steps <= h.l.NEnts; steps++ {
			copy(key, h.keyOf(e))
			nx := h.load(h.ent(e))
			h.unlockBucket(b)
			stop, err := fn(key, h.valOf(e, cpu))
			n++
			if err != nil || stop {
				return n, err
			}
			h.lockBucket(b)
			switch {
			case h.linked(b, e):
				e = h.load(h.ent(e))
			case h.linked(b, nx):
				e = nx
			default:
				e = 0
			}
		}
		h.unlockBucket(b)
	}
	return n, nil
}

// linked reports whether entry e is on bucket b's chain (b held); the
// walk is bounded by the entry count.
func (h *Hash) linked(b uint64, e uint32) bool {
	if e == 0 {
		return false
	}
	x := h.load(b + 4)
	for i := uint32(0); x != 0 && i <= h.l.NEnts; i++ {
		if x == e {
			return true
		}
		x = h.load(h.ent(x))
	}
	return false
}

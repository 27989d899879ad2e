package maps

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// The program side's hash lookup (bpf_map_lookup_elem from a program),
// the hottest map path: one function that hashes the key (the fixed-size
// forms of mapview.Hash for 4- and 8-byte keys), walks the bucket with
// mapview's validated lock-free protocol and returns the value, with no
// interface call, no division and no allocation. It reads the daemon's
// own mapping, which a move remaps in place (b.mem never changes while
// the map is open, and moves wait for every CPU slot, which a running
// program holds), so it needs no retired-region check.

// ProgValue is ProgLookup for a caller holding the concrete *Hash (the
// program layer resolves it once at load): key's value for CPU slot cpu,
// aliasing storage, or nil when key is absent or of the wrong size.
func (h *Hash) ProgValue(cpu int, key []byte) []byte {
	if len(key) != int(h.spec.KeySize) {
		return nil
	}
	off := h.progFind(key)
	if off == 0 {
		return nil
	}
	if h.lru != nil {
		h.lru.setRef(uint32((off-h.l.EntOff)/h.l.EntSize) + 1)
	}
	if !h.percpu {
		cpu = 0
	}
	o := off + h.l.ValOff + uint64(cpu)*h.l.ValStride
	n := o + uint64(h.spec.ValueSize)
	return h.mem[o:n:n]
}

// progFind returns the offset in the region of key's entry, 0 if absent:
// mapview.View.Find's walk (bounded, validated by the bucket's sequence
// counter, at most mapview.MaxRetries attempts), then the bucket lock if
// writers kept interfering.
func (h *Hash) progFind(key []byte) uint64 {
	var hv uint32
	switch len(key) {
	case 4:
		hv = mapview.HashU32(h.seed, binary.LittleEndian.Uint32(key))
	case 8:
		hv = mapview.HashU64(h.seed, binary.LittleEndian.Uint64(key))
	default:
		hv = mapview.Hash(h.seed, key)
	}
	l := &h.l
	b := l.BucketOff + 8*uint64(hv&(l.NBuckets-1))
	seq := h.u32(b)
	head := h.u32(b + 4)
	for range mapview.MaxRetries {
		s1 := atomic.LoadUint32(seq)
		if s1&1 != 0 {
			continue
		}
		found, ok := h.walk(atomic.LoadUint32(head), hv, key)
		if ok && atomic.LoadUint32(seq) == s1 {
			return found
		}
	}
	h.lockBucket(b)
	e, _ := h.find(b, hv, key)
	h.unlockBucket(b)
	if e == 0 {
		return 0
	}
	return h.ent(e)
}

// walk follows a chain from entry e for key: the entry's offset (0 when
// the chain ends without it), or false when the chain makes no sense
// (an index out of range, a loop), which only a concurrent writer can
// cause and the caller's validation retries.
func (h *Hash) walk(e, hv uint32, key []byte) (uint64, bool) {
	l := &h.l
	mem := h.mem
	for steps := uint32(0); e != 0; steps++ {
		if e > l.NEnts || steps > l.NEnts {
			return 0, false
		}
		off := l.EntOff + uint64(e-1)*l.EntSize
		next := atomic.LoadUint32(h.u32(off))
		if atomic.LoadUint32(h.u32(off+4)) == hv {
			k := mem[off+l.KeyOff:]
			switch len(key) {
			case 4:
				if ne.Uint32(k) == ne.Uint32(key) {
					return off, true
				}
			case 8:
				if ne.Uint64(k) == ne.Uint64(key) {
					return off, true
				}
			default:
				if string(k[:len(key)]) == string(key) {
					return off, true
				}
			}
		}
		e = next
	}
	return 0, true
}

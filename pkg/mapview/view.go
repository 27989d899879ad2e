package mapview

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"unsafe"
)

// View errors. A caller (the client library) answers ErrRetry, ErrRetired
// and ErrUnsupported by falling back to a round trip to the daemon.
var (
	// ErrNotFound: the key is not in the map (or the index is out of range,
	// or an fd-array slot is empty).
	ErrNotFound = errors.New("mapview: key not found")
	// ErrRetry: the read kept overlapping writers (or saw bytes that make
	// no sense) for MaxRetries attempts and gave up.
	ErrRetry = errors.New("mapview: read kept racing with writers; use the daemon")
	// ErrRetired: the region is a snapshot left behind by a move (the
	// map's live storage is elsewhere now, or the map is gone).
	ErrRetired = errors.New("mapview: region is a retired snapshot")
	// ErrUnsupported: this view cannot serve the operation for this map
	// type.
	ErrUnsupported = errors.New("mapview: operation not served by the mapped view")
	// ErrSize: a key or value buffer has the wrong size.
	ErrSize = errors.New("mapview: key or value buffer has the wrong size")
)

// View reads a map region without locks: the daemon's storage mapped into
// a client (read-only) or the daemon's own mapping. The bytes are never
// trusted: every index is checked against the geometry, every chain walk
// is bounded, every read of something a writer may change is validated by
// a sequence counter and retried at most MaxRetries times. A View never
// panics and never loops without bound, whatever the bytes are, and never
// writes. Safe for concurrent use.
type View struct {
	mem    []byte
	h      Header
	l      Layout
	vsize  int // syscall value size: ValueSize, or NCPU*ValStride for per-CPU maps
	fdLike bool
}

// New returns a View of mem, a whole region. It fails with ErrHeader or
// ErrGeometry when the header does not describe a region of len(mem)
// bytes. mem must stay mapped while the View is used.
func New(mem []byte) (*View, error) {
	h, l, err := ParseHeader(mem)
	if err != nil {
		return nil, err
	}
	v := &View{mem: mem, h: h, l: l, vsize: int(h.ValueSize)}
	if l.PerCPU {
		v.vsize = int(l.ValStride) * int(l.NCPU)
	}
	switch h.Type {
	case TypeProgArray, TypeArrayOfMaps, TypeDevmap, TypeCPUMap, TypePerfEventArray, TypeXSKMap:
		v.fdLike = true
	}
	return v, nil
}

// Header returns the region's header.
func (v *View) Header() Header { return v.h }

// Layout returns the region's geometry.
func (v *View) Layout() Layout { return v.l }

// ValueSize returns the size of a value as Lookup copies it: the map's
// value size, or for per-CPU maps one value per CPU slot each rounded up
// to 8 bytes (the kernel's syscall layout).
func (v *View) ValueSize() int { return v.vsize }

func (v *View) u32(off uint64) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&v.mem[off])))
}

// Retired reports whether the region is a retired snapshot.
func (v *View) Retired() bool { return v.u32(OffRetired) != 0 }

// Frozen reports whether the map was frozen (as of now, or as of the
// snapshot for a retired region).
func (v *View) Frozen() bool { return v.u32(OffFrozen) != 0 }

// Generation returns the region's generation counter.
func (v *View) Generation() uint32 { return v.u32(OffGeneration) }

// Lookup copies the value of key into value, as BPF_MAP_LOOKUP_ELEM would.
// value must be ValueSize() bytes and key the map's key size (ErrSize).
// It returns nil, ErrNotFound, or ErrRetry / ErrRetired / ErrUnsupported
// when the caller must ask the daemon instead. It allocates nothing.
func (v *View) Lookup(key, value []byte) error {
	if len(key) != int(v.h.KeySize) || len(value) != v.vsize {
		return ErrSize
	}
	if v.Retired() {
		return ErrRetired
	}
	switch v.l.Family {
	case FamilyArray:
		if v.h.Type == TypePerfEventArray || v.h.Type == TypeXSKMap {
			return ErrUnsupported
		}
		return v.arrayLookup(binary.NativeEndian.Uint32(key), value)
	case FamilyHash:
		return v.hashLookup(key, value)
	}
	return ErrUnsupported
}

func (v *View) arrayLookup(i uint32, value []byte) error {
	if i >= v.h.MaxEntries {
		return ErrNotFound
	}
	seq := v.l.SeqOff + 4*uint64(i)
	off := v.l.ValuesOff + uint64(i)*v.l.ElemSize
	src := v.mem[off : off+uint64(len(value))]
	for try := 0; try < MaxRetries; try++ {
		s1 := v.u32(seq)
		if s1&1 != 0 {
			continue
		}
		copy(value, src)
		if v.u32(seq) == s1 {
			if v.fdLike && binary.NativeEndian.Uint32(value) == 0 {
				return ErrNotFound
			}
			ClearSpinLock(&v.h, value)
			return nil
		}
	}
	return ErrRetry
}

// entry returns the offset of entry e (1-based), or false when e is out
// of range.
func (v *View) entry(e uint32) (uint64, bool) {
	if e == 0 || e > v.l.NEnts {
		return 0, false
	}
	return v.l.EntOff + uint64(e-1)*v.l.EntSize, true
}

func (v *View) keyEqual(off uint64, key []byte) bool {
	k := v.mem[off+v.l.KeyOff : off+v.l.KeyOff+uint64(len(key))]
	if len(key) == 4 {
		return binary.NativeEndian.Uint32(k) == binary.NativeEndian.Uint32(key)
	}
	return string(k) == string(key)
}

// walkResult is the outcome of one validated chain walk.
const (
	walkRetry = iota
	walkFound
	walkMissing
)

// find walks key's bucket once: walkFound with the entry offset (and its
// successor in the chain), walkMissing, or walkRetry when a writer
// interfered or the chain made no sense. It copies the value into value
// when value is not nil, before validating.
func (v *View) find(key []byte, hv uint32, value []byte) (int, uint64, uint32) {
	b := v.l.BucketOff + 8*uint64(hv&(v.l.NBuckets-1))
	s1 := v.u32(b)
	if s1&1 != 0 {
		return walkRetry, 0, 0
	}
	e := v.u32(b + 4)
	for steps := uint32(0); e != 0; steps++ {
		off, ok := v.entry(e)
		if !ok || steps > v.l.NEnts {
			return walkRetry, 0, 0
		}
		next := v.u32(off)
		if v.u32(off+4) == hv && v.keyEqual(off, key) {
			if value != nil {
				copy(value, v.mem[off+v.l.ValOff:off+v.l.ValOff+uint64(len(value))])
			}
			if v.u32(b) != s1 {
				return walkRetry, 0, 0
			}
			return walkFound, off, next
		}
		e = next
	}
	if v.u32(b) != s1 {
		return walkRetry, 0, 0
	}
	return walkMissing, 0, 0
}

func (v *View) hashLookup(key, value []byte) error {
	hv := Hash(v.h.Seed, key)
	for try := 0; try < MaxRetries; try++ {
		switch r, _, _ := v.find(key, hv, value); r {
		case walkFound:
			if v.h.Type == TypeHashOfMaps && binary.NativeEndian.Uint32(value) == 0 {
				return ErrNotFound
			}
			ClearSpinLock(&v.h, value)
			return nil
		case walkMissing:
			return ErrNotFound
		}
	}
	return ErrRetry
}

// NextKey writes into next the key that follows key in the map's
// iteration order (the first key when key is nil, or for hash maps when
// key is absent), as BPF_MAP_GET_NEXT_KEY. It returns nil, ErrNotFound
// after the last key, ErrSize, or ErrRetry / ErrRetired / ErrUnsupported.
func (v *View) NextKey(key, next []byte) error {
	ks := int(v.h.KeySize)
	if key != nil && len(key) != ks || len(next) != ks {
		return ErrSize
	}
	if v.Retired() {
		return ErrRetired
	}
	switch v.l.Family {
	case FamilyArray:
		max := v.h.MaxEntries
		i := uint32(0)
		if key != nil {
			k := binary.NativeEndian.Uint32(key)
			switch {
			case k >= max:
			case k == max-1:
				return ErrNotFound
			default:
				i = k + 1
			}
		}
		binary.NativeEndian.PutUint32(next, i)
		return nil
	case FamilyHash:
		return v.hashNext(key, next)
	}
	return ErrUnsupported
}

func (v *View) hashNext(key, next []byte) error {
	for try := 0; try < MaxRetries; try++ {
		start := uint32(0)
		if key != nil {
			hv := Hash(v.h.Seed, key)
			r, _, n := v.find(key, hv, nil)
			if r == walkRetry {
				continue
			}
			if r == walkFound {
				if n != 0 {
					switch v.copyKey(n, hv&(v.l.NBuckets-1), next) {
					case walkFound:
						return nil
					case walkRetry:
						continue
					}
					// The successor left the bucket: go on from the
					// next bucket, as a walk that saw no successor.
				}
				start = hv&(v.l.NBuckets-1) + 1
			}
		}
		r := v.firstFrom(start, next)
		if r == walkRetry {
			continue
		}
		if r == walkMissing {
			return ErrNotFound
		}
		return nil
	}
	return ErrRetry
}

// copyKey copies the key of entry e, which should be in bucket b, into
// next, validated by b's sequence counter.
func (v *View) copyKey(e, b uint32, next []byte) int {
	boff := v.l.BucketOff + 8*uint64(b)
	s1 := v.u32(boff)
	if s1&1 != 0 {
		return walkRetry
	}
	off, ok := v.entry(e)
	if !ok {
		return walkRetry
	}
	copy(next, v.mem[off+v.l.KeyOff:off+v.l.KeyOff+uint64(len(next))])
	if v.u32(boff) != s1 {
		return walkRetry
	}
	return walkFound
}

// firstFrom copies the first key of the first non-empty bucket ≥ b.
func (v *View) firstFrom(b uint32, next []byte) int {
	for ; b < v.l.NBuckets; b++ {
		boff := v.l.BucketOff + 8*uint64(b)
		for try := 0; ; try++ {
			if try == MaxRetries {
				return walkRetry
			}
			s1 := v.u32(boff)
			if s1&1 != 0 {
				continue
			}
			e := v.u32(boff + 4)
			if e == 0 {
				if v.u32(boff) != s1 {
					continue
				}
				break
			}
			off, ok := v.entry(e)
			if !ok {
				return walkRetry
			}
			copy(next, v.mem[off+v.l.KeyOff:off+v.l.KeyOff+uint64(len(next))])
			if v.u32(boff) != s1 {
				continue
			}
			return walkFound
		}
	}
	return walkMissing
}

// Find returns the offset in the region of key's hash entry, validated
// against concurrent writers at the time of the walk: nil, ErrNotFound, or
// ErrRetry / ErrRetired / ErrUnsupported (not a hash-family region) / ErrSize.
// The entry may be changed or reused by a writer right after; the daemon
// uses it for program-side value pointers, which have exactly the kernel's
// semantics there.
func (v *View) Find(key []byte) (uint64, error) {
	if len(key) != int(v.h.KeySize) {
		return 0, ErrSize
	}
	if v.l.Family != FamilyHash {
		return 0, ErrUnsupported
	}
	if v.Retired() {
		return 0, ErrRetired
	}
	hv := Hash(v.h.Seed, key)
	for try := 0; try < MaxRetries; try++ {
		switch r, off, _ := v.find(key, hv, nil); r {
		case walkFound:
			return off, nil
		case walkMissing:
			return 0, ErrNotFound
		}
	}
	return 0, ErrRetry
}

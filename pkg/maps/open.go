package maps

import (
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Repair is what Open fixed in a region (all zero for a region a live map
// left between operations).
type Repair struct {
	// Unlocked counts sequence counters and lock words found held (a
	// writer was interrupted) and released.
	Unlocked int
	// Leaked counts hash entries on no list (an insert, delete or
	// allocation was interrupted) returned to a free list.
	Leaked int
	// Duplicates counts older copies of a key found after a newer one in
	// the same chain (a replacing update was interrupted) and removed.
	Duplicates int
	// Rebuilt counts LRU list sets rebuilt from the table because they
	// were inconsistent (LRU order is lost; contents are kept).
	Rebuilt int
}

// Open makes a live map of an existing region: fd is a read-write
// descriptor of a backing a map of this package wrote (a memfd passed
// along, or a file under Config.Dir after a daemon restart, whose path
// is given so that moves and Close keep managing it; "" for a memfd). Open
// takes ownership of fd (closing it on failure).
//
// Nothing in the region is trusted. The header must describe a geometry
// whose size is the file's, laid out for cfg's pool size (a different CPU
// count changes every per-CPU layout: ErrCorrupt), and with parameters the
// kernel's rules accept. Then every index and count is checked: hash
// chains (entries in range, on at most one list, stored hash matching the
// key and the bucket, no cycles), per-slot free lists and spare entries,
// the bump index, the frozen word. Open repairs what an operation
// interrupted at any point can leave (see Repair) and refuses anything
// else with ErrCorrupt, wrapped with the reason.
func Open(fd int, path string, cfg *Config) (Map, Repair, error) {
	var rep Repair
	r, err := openRegion(fd, path)
	if err != nil {
		return nil, rep, err
	}
	fail := func(format string, a ...any) (Map, Repair, error) {
		unix.Munmap(r.mem)
		unix.Close(r.fd)
		r.mem = nil
		return nil, rep, fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	h, l, err := mapview.ParseHeader(r.mem)
	if err != nil {
		return fail("header: %v", err)
	}
	pool := cfg.pool()
	if int(h.NCPU) != pool.N() {
		return fail("laid out for %d CPUs, this machine has %d", h.NCPU, pool.N())
	}
	spec := Spec{Type: h.Type, KeySize: h.KeySize, ValueSize: h.ValueSize, MaxEntries: h.MaxEntries,
		Flags: h.Flags, Name: mapview.NameString(h.Name), MapExtra: h.MapExtra, SpinLock: h.SpinLock}
	want, err := spec.layout(pool.N())
	if err != nil {
		return fail("parameters refused: %v", err)
	}
	if want != l || spec.maxEntries(pool.N()) != spec.MaxEntries {
		return fail("geometry does not match its parameters")
	}
	r.name = spec.Name
	r.populate = spec.Flags&FlagNoPrealloc == 0
	if l.Family == mapview.FamilyRing {
		// Map the data pages a second time after the region.
		unix.Munmap(r.mem)
		r.mem, r.aliasOff, r.aliasLen = nil, l.DataOff, l.DataSize
		mem, err := r.mapAll(r.fd)
		if err != nil {
			unix.Close(r.fd)
			return nil, rep, err
		}
		r.mem = mem
	}
	// Writable client mappings only for what New allows them (a file
	// carries no seals to say so; a memfd sealed against future writes
	// can give none whatever its type).
	r.writable = r.writable && spec.Type == TypeArray && spec.Flags&FlagMmapable != 0 && spec.SpinLock == 0
	m, err := build(spec, l, r, pool, h.Seed)
	if err != nil {
		return fail("%v", err)
	}
	b := m.b()
	switch fz := atomic.LoadUint32(b.u32(mapview.OffFrozen)); fz {
	case 0:
	case 1:
		b.frozen.Store(true)
	default:
		return fail("frozen word %d", fz)
	}
	if atomic.LoadUint32(b.u32(mapview.OffRetired)) != 0 {
		return fail("region is a retired snapshot")
	}
	if err := m.validateInto(&rep); err != nil {
		return fail("%v", err)
	}
	rep.Unlocked += clearSpinLocks(m)
	return m, rep, nil
}

// OpenFile opens the region file at path (see Open).
func OpenFile(path string, cfg *Config) (Map, Repair, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, Repair{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return Open(fd, path, cfg)
}

// RegionPath returns the file backing m with the file backend, or "" for
// a memfd.
func RegionPath(m Map) string {
	b := m.(impl).b()
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if b.reg == nil {
		return ""
	}
	return b.reg.path
}

// unlockSeq releases a sequence counter left odd by an interrupted writer.
func unlockSeqRepair(p *uint32, rep *Repair) {
	if atomic.LoadUint32(p)&1 != 0 {
		atomic.AddUint32(p, 1)
		rep.Unlocked++
	}
}

func (a *Array) validateInto(rep *Repair) error {
	for i := uint32(0); i < a.spec.MaxEntries; i++ {
		unlockSeqRepair(a.seq(i), rep)
	}
	return nil
}

func (p *ProgArray) validateInto(rep *Repair) error {
	for i := uint32(0); i < p.spec.MaxEntries; i++ {
		unlockSeqRepair(p.seq(i), rep)
	}
	return nil
}

// validateInto checks a hash region's chains, free lists and spares, and
// repairs interrupted operations (see Open).
func (h *Hash) validateInto(rep *Repair) error {
	max, nents := h.spec.MaxEntries, h.l.NEnts
	bump := h.load(mapview.OffBump)
	if bump > max {
		return fmt.Errorf("bump index %d beyond %d entries", bump, max)
	}
	// where[e]: 0 unseen, 1 in a chain, 2 free, 3 spare.
	where := make([]uint8, nents+1)
	usable := func(e uint32) bool { return e >= 1 && e <= nents && (e <= bump || e > max) }
	if h.lru != nil {
		usable = func(e uint32) bool { return e >= 1 && e <= nents }
	}
	for bi := uint32(0); bi < h.l.NBuckets; bi++ {
		b := h.l.BucketOff + 8*uint64(bi)
		unlockSeqRepair(h.u32(b), rep)
		prev := uint32(0)
		for e := h.load(b + 4); e != 0; {
			if !usable(e) {
				return fmt.Errorf("bucket %d links entry %d outside the used range", bi, e)
			}
			if where[e] != 0 {
				return fmt.Errorf("entry %d is linked twice", e)
			}
			where[e] = 1
			key := h.keyOf(e)
			hv := mapview.Hash(h.seed, key)
			if h.load(h.ent(e)+4) != hv || hv&(h.l.NBuckets-1) != bi {
				return fmt.Errorf("entry %d in bucket %d has a hash that does not match its key", e, bi)
			}
			next := h.load(h.ent(e))
			// An older copy of the key further down: a replacing update
			// was interrupted after publishing the new entry.
			dup := false
			for q := h.load(b + 4); q != e; q = h.load(h.ent(q)) {
				if string(h.keyOf(q)) == string(key) {
					dup = true
					break
				}
			}
			if dup {
				h.unlink(b, e, prev)
				where[e] = 0
				rep.Duplicates++
			} else {
				prev = e
			}
			e = next
		}
	}
	if h.lru != nil {
		inChain := make([]bool, nents+1)
		for e := range where {
			inChain[e] = where[e] == 1
		}
		h.lru.validate(inChain, rep)
		return nil
	}
	for c := 0; c < h.l.NCPU; c++ {
		st := h.slotOff(c)
		if atomic.LoadUint32(h.u32(st+slotFreeLock)) != 0 {
			atomic.StoreUint32(h.u32(st+slotFreeLock), 0)
			rep.Unlocked++
		}
		prev := uint32(0)
		for e := h.load(st + slotFreeHead); e != 0; {
			if !usable(e) || where[e] != 0 {
				// A push was interrupted between linking and publishing,
				// or the list is damaged: cut it here, the rest leaks
				// and is recovered below.
				if prev == 0 {
					h.store(st+slotFreeHead, 0)
				} else {
					h.store(h.ent(prev), 0)
				}
				break
			}
			where[e] = 2
			prev, e = e, h.load(h.ent(e))
		}
		if !h.inPlace {
			x := h.load(st + slotExtra)
			if usable(x) && where[x] == 0 {
				where[x] = 3
			} else {
				h.store(st+slotExtra, 0)
			}
		}
	}
	var leaked []uint32
	for e := uint32(1); e <= nents; e++ {
		if usable(e) && where[e] == 0 {
			leaked = append(leaked, e)
		}
	}
	if !h.inPlace {
		for c := 0; c < h.l.NCPU; c++ {
			st := h.slotOff(c) + slotExtra
			if h.load(st) != 0 {
				continue
			}
			if len(leaked) > 0 {
				h.store(st, leaked[len(leaked)-1])
				leaked = leaked[:len(leaked)-1]
				rep.Leaked++
				continue
			}
			e := h.popFree(c)
			for i := 1; e == 0 && i < h.l.NCPU; i++ {
				e = h.popFree((c + i) % h.l.NCPU)
			}
			if e == 0 && bump < max {
				bump++
				h.store(mapview.OffBump, bump)
				e = bump
			}
			if e == 0 {
				return fmt.Errorf("no spare entry left for slot %d", c)
			}
			h.store(st, e)
		}
	}
	for _, e := range leaked {
		h.pushFree(0, e)
		rep.Leaked++
	}
	return nil
}

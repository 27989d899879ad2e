package maps

import (
	"sync/atomic"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// The LRU of BPF_MAP_TYPE_LRU_HASH and LRU_PERCPU_HASH: the kernel's
// algorithm (kernel/bpf/bpf_lru_list.c), step for step, on flat storage,
// so that eviction is observably the kernel's — it evicts before the map
// is full (free nodes are handed to a CPU's local list in batches), the
// common LRU vs BPF_F_NO_COMMON_LRU, the order of the active and inactive
// lists, the reference bit that program lookups set. CPU slots
// (package percpu) stand for the kernel's CPUs.
//
// Nodes are the map's entries (1..NEnts) plus sentinel list heads above
// them. Each list is circular and doubly linked through 32-bit node
// indices. Entry nodes keep their links and state in the entry's LRU
// header:
//
//	+8  prev u32   +12 next u32   +16 state u32 (type | cpu<<8)   +20 ref u32
//
// Common LRU, at Layout.LRUOff: one global list (lock, active and
// inactive counts, the next-inactive-rotation node, the active, inactive
// and free heads), then per CPU slot a local list (lock, next CPU to steal
// from, the pending and free heads). BPF_F_NO_COMMON_LRU: per CPU slot a
// whole list of the global kind, and each node belongs to one CPU.
// Everything is in the region, so a reopened map keeps its LRU order.

// Node types (enum bpf_lru_list_type).
const (
	lruActive       = 0
	lruInactive     = 1
	lruFree         = 2
	lruLocalFree    = 3
	lruLocalPending = 4
)

// Kernel constants.
const (
	localFreeTarget  = 128 // LOCAL_FREE_TARGET
	localNrScans     = localFreeTarget
	percpuFreeTarget = 4 // PERCPU_FREE_TARGET
	percpuNrScans    = percpuFreeTarget
)

// Offsets within an LRU list (global, or per CPU with BPF_F_NO_COMMON_LRU).
const (
	llLock     = 0
	llActive   = 4  // count of active nodes
	llInactive = 8  // count of inactive nodes
	llNIR      = 12 // next_inactive_rotation (node index)
	llHeads    = 16 // three heads: active, inactive, free (8 bytes each)
)

// Offsets within a CPU's local list (common LRU).
const (
	locLock      = 0
	locNextSteal = 4
	locHeads     = 8 // two heads: pending, free
)

// lru is a Hash's LRU state accessors. Immutable after creation.
type lru struct {
	h       *Hash
	percpu  bool // BPF_F_NO_COMMON_LRU
	nents   uint32
	off     uint64 // Layout.LRUOff
	ncpu    int
	nrScans int
	target  int // target_free (common LRU)
}

func newLRU(h *Hash) *lru {
	l := &lru{h: h, percpu: h.spec.Flags&FlagNoCommonLRU != 0, nents: h.l.NEnts, off: h.l.LRUOff, ncpu: h.l.NCPU}
	if l.percpu {
		l.nrScans = percpuNrScans
	} else {
		l.nrScans = localNrScans
		l.target = max(1, min(int(h.l.NEnts)/l.ncpu/2, localFreeTarget))
	}
	return l
}

// list returns the offset of the LRU list of cpu (the global one for the
// common LRU).
func (l *lru) list(cpu int) uint64 {
	if l.percpu {
		return l.off + uint64(cpu)*mapview.SlotStride
	}
	return l.off
}

func (l *lru) local(cpu int) uint64 {
	return l.off + mapview.SlotStride + uint64(cpu)*mapview.SlotStride
}

// Sentinel node indices.
func (l *lru) head(cpu, t int) uint32 {
	if l.percpu {
		return l.nents + 1 + uint32(3*cpu+t)
	}
	return l.nents + 1 + uint32(t)
}

func (l *lru) localHead(cpu, t int) uint32 { // t: 0 pending, 1 free
	return l.nents + 4 + uint32(2*cpu+t)
}

// link returns the offset of node i's [prev, next] pair.
func (l *lru) link(i uint32) uint64 {
	if i <= l.nents {
		return l.h.ent(i) + 8
	}
	s := i - l.nents - 1
	if l.percpu {
		return l.off + uint64(s/3)*mapview.SlotStride + llHeads + 8*uint64(s%3)
	}
	if s < 3 {
		return l.off + llHeads + 8*uint64(s)
	}
	s -= 3
	return l.local(int(s/2)) + locHeads + 8*uint64(s%2)
}

func (l *lru) prev(i uint32) uint32        { return l.h.load(l.link(i)) }
func (l *lru) next(i uint32) uint32        { return l.h.load(l.link(i) + 4) }
func (l *lru) setPrev(i, v uint32)         { l.h.store(l.link(i), v) }
func (l *lru) setNext(i, v uint32)         { l.h.store(l.link(i)+4, v) }
func (l *lru) typ(i uint32) int            { return int(l.h.load(l.h.ent(i)+16) & 0xff) }
func (l *lru) cpu(i uint32) int            { return int(l.h.load(l.h.ent(i)+16) >> 8) }
func (l *lru) setState(i uint32, t, c int) { l.h.store(l.h.ent(i)+16, uint32(t)|uint32(c)<<8) }
func (l *lru) setType(i uint32, t int)     { l.setState(i, t, l.cpu(i)) }
func (l *lru) isRef(i uint32) bool         { return l.h.load(l.h.ent(i)+20) != 0 }
func (l *lru) clearRef(i uint32)           { l.h.store(l.h.ent(i)+20, 0) }

// setRef is bpf_lru_node_set_ref: programs' lookups mark nodes.
func (l *lru) setRef(i uint32) {
	p := l.h.u32(l.h.ent(i) + 20)
	if atomic.LoadUint32(p) == 0 {
		atomic.StoreUint32(p, 1)
	}
}

// List primitives (include/linux/list.h).

func (l *lru) initHead(hd uint32)   { l.setPrev(hd, hd); l.setNext(hd, hd) }
func (l *lru) empty(hd uint32) bool { return l.next(hd) == hd }

func (l *lru) del(i uint32) {
	p, n := l.prev(i), l.next(i)
	l.setNext(p, n)
	l.setPrev(n, p)
}

// add inserts i right after hd (at the list's front).
func (l *lru) add(i, hd uint32) {
	n := l.next(hd)
	l.setPrev(i, hd)
	l.setNext(i, n)
	l.setPrev(n, i)
	l.setNext(hd, i)
}

func (l *lru) move(i, hd uint32) { l.del(i); l.add(i, hd) }

// Counts of the list at lo.
func (l *lru) countInc(lo uint64, t int) {
	if t < lruFree {
		p := lo + llActive + 4*uint64(t)
		l.h.store(p, l.h.load(p)+1)
	}
}

func (l *lru) countDec(lo uint64, t int) {
	if t < lruFree {
		p := lo + llActive + 4*uint64(t)
		l.h.store(p, l.h.load(p)-1)
	}
}

// lists[t] of the list at lo (owned by cpu for the per-CPU LRU).
func (l *lru) lhead(cpu, t int) uint32 { return l.head(cpu, t) }

// init sets up a fresh region's lists and hands every node to them, as
// bpf_lru_populate.
func (l *lru) init() {
	if l.percpu {
		for c := 0; c < l.ncpu; c++ {
			lo := l.list(c)
			for t := 0; t < 3; t++ {
				l.initHead(l.head(c, t))
			}
			l.h.store(lo+llNIR, l.head(c, lruInactive))
		}
		per := l.nents / uint32(l.ncpu)
		i := uint32(0)
		for c := 0; c < l.ncpu && i < l.nents; c++ {
			for {
				n := i + 1
				l.setState(n, lruFree, c)
				l.clearRef(n)
				l.add(n, l.head(c, lruFree))
				i++
				if i == l.nents || i%per == 0 {
					break
				}
			}
		}
		return
	}
	for t := 0; t < 3; t++ {
		l.initHead(l.head(0, t))
	}
	l.h.store(l.off+llNIR, l.head(0, lruInactive))
	for c := 0; c < l.ncpu; c++ {
		lo := l.local(c)
		l.h.store(lo+locNextSteal, uint32(c))
		l.initHead(l.localHead(c, 0))
		l.initHead(l.localHead(c, 1))
	}
	for n := uint32(1); n <= l.nents; n++ {
		l.setState(n, lruFree, 0)
		l.clearRef(n)
		l.add(n, l.head(0, lruFree))
	}
}

// The kernel's list operations on the list at lo of cpu.

func (l *lru) nir(lo uint64) uint32       { return l.h.load(lo + llNIR) }
func (l *lru) setNIR(lo uint64, v uint32) { l.h.store(lo+llNIR, v) }

func (l *lru) moveToFree(lo uint64, n, freeHead uint32, tgt int) {
	if n == l.nir(lo) {
		l.setNIR(lo, l.prev(l.nir(lo)))
	}
	l.countDec(lo, l.typ(n))
	l.setType(n, tgt)
	l.move(n, freeHead)
}

func (l *lru) moveIn(lo uint64, cpu int, n uint32, tgt int) {
	l.countInc(lo, tgt)
	l.setType(n, tgt)
	l.clearRef(n)
	l.move(n, l.head(cpu, tgt))
}

func (l *lru) nodeMove(lo uint64, cpu int, n uint32, tgt int) {
	if t := l.typ(n); t != tgt {
		l.countDec(lo, t)
		l.countInc(lo, tgt)
		l.setType(n, tgt)
	}
	l.clearRef(n)
	if n == l.nir(lo) {
		l.setNIR(lo, l.prev(l.nir(lo)))
	}
	l.move(n, l.head(cpu, tgt))
}

func (l *lru) inactiveLow(lo uint64) bool {
	return l.h.load(lo+llInactive) < l.h.load(lo+llActive)
}

func (l *lru) rotateActive(lo uint64, cpu int) {
	active := l.head(cpu, lruActive)
	first := l.next(active)
	i := 0
	for n := l.prev(active); n != active; {
		p := l.prev(n)
		if l.isRef(n) {
			l.nodeMove(lo, cpu, n, lruActive)
		} else {
			l.nodeMove(lo, cpu, n, lruInactive)
		}
		i++
		if i == l.nrScans || n == first {
			break
		}
		n = p
	}
}

func (l *lru) rotateInactive(lo uint64, cpu int) {
	inactive := l.head(cpu, lruInactive)
	if l.empty(inactive) {
		return
	}
	last := l.next(l.nir(lo))
	if last == inactive {
		last = l.next(last)
	}
	cur := l.nir(lo)
	next := inactive
	for i := 0; i < l.nrScans; {
		if cur == inactive {
			cur = l.prev(cur)
			continue
		}
		next = l.prev(cur)
		if l.isRef(cur) {
			l.nodeMove(lo, cpu, cur, lruActive)
		}
		if cur == last {
			break
		}
		cur = next
		i++
	}
	l.setNIR(lo, next)
}

func (l *lru) shrinkInactive(lo uint64, cpu int, tgt int, freeHead uint32, freeType int) int {
	inactive := l.head(cpu, lruInactive)
	shrunk, i := 0, 0
	for n := l.prev(inactive); n != inactive; {
		p := l.prev(n)
		if l.isRef(n) {
			l.nodeMove(lo, cpu, n, lruActive)
		} else if l.h.lruDelete(n) {
			l.moveToFree(lo, n, freeHead, freeType)
			shrunk++
			if shrunk == tgt {
				break
			}
		}
		i++
		if i == l.nrScans {
			break
		}
		n = p
	}
	return shrunk
}

func (l *lru) rotate(lo uint64, cpu int) {
	if l.inactiveLow(lo) {
		l.rotateActive(lo, cpu)
	}
	l.rotateInactive(lo, cpu)
}

func (l *lru) shrink(lo uint64, cpu int, tgt int, freeHead uint32, freeType int) int {
	if n := l.shrinkInactive(lo, cpu, tgt, freeHead, freeType); n > 0 {
		return n
	}
	force := l.head(cpu, lruInactive)
	if l.empty(force) {
		force = l.head(cpu, lruActive)
	}
	for n := l.prev(force); n != force; {
		p := l.prev(n)
		if l.h.lruDelete(n) {
			l.moveToFree(lo, n, freeHead, freeType)
			return 1
		}
		n = p
	}
	return 0
}

// localFlush is __local_list_flush: the CPU's pending nodes go to the
// global list, oldest first.
func (l *lru) localFlush(lo uint64, cpu int) {
	pending := l.localHead(cpu, 0)
	for n := l.prev(pending); n != pending; {
		p := l.prev(n)
		if l.isRef(n) {
			l.moveIn(lo, 0, n, lruActive)
		} else {
			l.moveIn(lo, 0, n, lruInactive)
		}
		n = p
	}
}

// popFreeToLocal refills cpu's local free list from the global list
// (bpf_lru_list_pop_free_to_local).
func (l *lru) popFreeToLocal(cpu int) {
	lo := l.list(0)
	spinLock(l.h.u32(lo + llLock))
	l.localFlush(lo, cpu)
	l.rotate(lo, 0)
	locFree := l.localHead(cpu, 1)
	nfree := 0
	free := l.head(0, lruFree)
	for n := l.next(free); n != free; {
		nx := l.next(n)
		l.moveToFree(lo, n, locFree, lruLocalFree)
		nfree++
		if nfree == l.target {
			break
		}
		n = nx
	}
	if nfree < l.target {
		l.shrink(lo, 0, l.target-nfree, locFree, lruLocalFree)
	}
	spinUnlock(l.h.u32(lo + llLock))
}

func (l *lru) localPopFree(cpu int) uint32 {
	hd := l.localHead(cpu, 1)
	if l.empty(hd) {
		return 0
	}
	n := l.next(hd)
	l.del(n)
	return n
}

func (l *lru) localAddPending(cpu int, n uint32, hv uint32) {
	l.h.store(l.h.ent(n)+4, hv)
	l.setState(n, lruLocalPending, cpu)
	l.clearRef(n)
	l.add(n, l.localHead(cpu, 0))
}

func (l *lru) localPopPending(cpu int) uint32 {
	pending := l.localHead(cpu, 0)
	for _, force := range [2]bool{false, true} {
		for n := l.prev(pending); n != pending; n = l.prev(n) {
			if (!l.isRef(n) || force) && l.h.lruDelete(n) {
				l.del(n)
				return n
			}
		}
	}
	return 0
}

// pop is bpf_lru_pop_free for CPU slot cpu: a free node for a new
// element with hash hv (0 when none can be found, which the kernel
// reports as ENOMEM).
func (l *lru) pop(cpu int, hv uint32) uint32 {
	if l.percpu {
		lo := l.list(cpu)
		spinLock(l.h.u32(lo + llLock))
		defer spinUnlock(l.h.u32(lo + llLock))
		l.rotate(lo, cpu)
		free := l.head(cpu, lruFree)
		if l.empty(free) {
			l.shrink(lo, cpu, percpuFreeTarget, free, lruFree)
		}
		if l.empty(free) {
			return 0
		}
		n := l.next(free)
		l.h.store(l.h.ent(n)+4, hv)
		l.clearRef(n)
		l.nodeMove(lo, cpu, n, lruInactive)
		return n
	}
	loc := l.local(cpu)
	spinLock(l.h.u32(loc + locLock))
	n := l.localPopFree(cpu)
	if n == 0 {
		l.popFreeToLocal(cpu)
		n = l.localPopFree(cpu)
	}
	if n != 0 {
		l.localAddPending(cpu, n, hv)
	}
	spinUnlock(l.h.u32(loc + locLock))
	if n != 0 {
		return n
	}
	first := int(l.h.load(loc + locNextSteal))
	steal := first
	for {
		sl := l.local(steal)
		spinLock(l.h.u32(sl + locLock))
		n = l.localPopFree(steal)
		if n == 0 {
			n = l.localPopPending(steal)
		}
		spinUnlock(l.h.u32(sl + locLock))
		steal = (steal + 1) % l.ncpu
		if n != 0 || steal == first {
			break
		}
	}
	l.h.store(loc+locNextSteal, uint32(steal))
	if n != 0 {
		spinLock(l.h.u32(loc + locLock))
		l.localAddPending(cpu, n, hv)
		spinUnlock(l.h.u32(loc + locLock))
	}
	return n
}

// push is bpf_lru_push_free: node n, out of the hash table, is free again.
func (l *lru) push(n uint32) {
	if l.percpu {
		lo := l.list(l.cpu(n))
		spinLock(l.h.u32(lo + llLock))
		l.nodeMove(lo, l.cpu(n), n, lruFree)
		spinUnlock(l.h.u32(lo + llLock))
		return
	}
	if l.typ(n) == lruLocalPending {
		c := l.cpu(n)
		loc := l.local(c)
		spinLock(l.h.u32(loc + locLock))
		if l.typ(n) == lruLocalPending {
			l.setType(n, lruLocalFree)
			l.clearRef(n)
			l.move(n, l.localHead(c, 1))
			spinUnlock(l.h.u32(loc + locLock))
			return
		}
		spinUnlock(l.h.u32(loc + locLock))
	}
	lo := l.list(0)
	spinLock(l.h.u32(lo + llLock))
	l.nodeMove(lo, 0, n, lruFree)
	spinUnlock(l.h.u32(lo + llLock))
}

// lruDelete is htab_lru_map_delete_node: the LRU asks to drop node n
// from the hash table (to reuse it); false if n is not linked (a node in
// flight between the LRU and the table).
func (h *Hash) lruDelete(n uint32) bool {
	b := h.bucketOf(h.load(h.ent(n) + 4))
	h.lockBucket(b)
	defer h.unlockBucket(b)
	prev := uint32(0)
	for e := h.load(b + 4); e != 0; prev, e = e, h.load(h.ent(e)) {
		if e == n {
			h.unlink(b, e, prev)
			return true
		}
	}
	return false
}

// validate checks a reopened region's LRU lists against the hash chains
// (inChain marks the entries linked in the table): links symmetric, every
// entry on exactly one list of the right type, table entries on the
// active, inactive or pending lists and no others. Lock words are
// released, counts recomputed, the rotation pointer checked. An entry
// that an interrupted update left on a pending or LRU list without being
// in the table is freed. Anything else makes it rebuild the lists from
// the table (LRU order is lost, contents are not). It reports what it did
// in rep.
func (l *lru) validate(inChain []bool, rep *Repair) {
	type listRef struct {
		head uint32
		cpu  int
		typ  int
		lo   uint64 // list (global / per-CPU) for counts, 0 for local lists
	}
	var lists []listRef
	unlock := func(off uint64) {
		if atomic.LoadUint32(l.h.u32(off)) != 0 {
			atomic.StoreUint32(l.h.u32(off), 0)
			rep.Unlocked++
		}
	}
	if l.percpu {
		for c := 0; c < l.ncpu; c++ {
			unlock(l.list(c) + llLock)
			for t := 0; t < 3; t++ {
				lists = append(lists, listRef{l.head(c, t), c, t, l.list(c)})
			}
		}
	} else {
		unlock(l.list(0) + llLock)
		for t := 0; t < 3; t++ {
			lists = append(lists, listRef{l.head(0, t), 0, t, l.list(0)})
		}
		for c := 0; c < l.ncpu; c++ {
			unlock(l.local(c) + locLock)
			lists = append(lists, listRef{l.localHead(c, 0), c, lruLocalPending, 0}, listRef{l.localHead(c, 1), c, lruLocalFree, 0})
		}
	}
	seen := make([]bool, l.nents+1)
	ok := true
	var ghosts []uint32
	maxNode := l.nents + 3 + 2*uint32(l.ncpu) + 3*uint32(l.ncpu)
	for _, lr := range lists {
		prev := lr.head
		n := l.next(lr.head)
		for steps := uint32(0); n != lr.head; steps++ {
			if n == 0 || n > l.nents || steps > l.nents || seen[n] || l.prev(n) != prev {
				ok = false
				break
			}
			seen[n] = true
			t := l.typ(n)
			// A node on a local free list keeps the cpu of wherever it
			// was last (popFreeToLocal moves it without setting one, as
			// the kernel's __bpf_lru_node_move_to_free): only pending
			// nodes' cpus name their list.
			if t != lr.typ || (l.percpu || lr.lo == 0) && l.cpu(n) != lr.cpu && t != lruFree && t != lruLocalFree {
				ok = false
				break
			}
			if l.percpu && l.cpu(n) != lr.cpu {
				ok = false
				break
			}
			live := t == lruActive || t == lruInactive || t == lruLocalPending
			if inChain[n] != live {
				if !live {
					ok = false // a table entry on a free list
					break
				}
				ghosts = append(ghosts, n)
			}
			prev, n = n, l.next(n)
		}
		if !ok || l.prev(lr.head) != prev || maxNode < lr.head {
			ok = false
			break
		}
	}
	for e := uint32(1); ok && e <= l.nents; e++ {
		if !seen[e] {
			ok = false
		}
	}
	if !ok {
		l.rebuild(inChain)
		rep.Rebuilt++
		return
	}
	for _, n := range ghosts {
		// Not in the table: only an interrupted update can have left it
		// there. Give it back, as the update would have.
		if l.typ(n) == lruLocalPending {
			l.setType(n, lruLocalFree)
			l.move(n, l.localHead(l.cpu(n), 1))
		} else {
			lo := l.list(0)
			c := 0
			if l.percpu {
				c = l.cpu(n)
				lo = l.list(c)
			}
			l.countDec(lo, l.typ(n))
			l.setType(n, lruFree)
			l.move(n, l.head(c, lruFree))
		}
		rep.Leaked++
	}
	for c := 0; c < l.ncpu; c++ {
		if !l.percpu && c > 0 {
			break
		}
		lo := l.list(c)
		var cnt [2]uint32
		for t := 0; t < 2; t++ {
			hd := l.head(c, t)
			for n := l.next(hd); n != hd; n = l.next(n) {
				cnt[t]++
			}
		}
		l.h.store(lo+llActive, cnt[0])
		l.h.store(lo+llInactive, cnt[1])
		nir, inactive := l.nir(lo), l.head(c, lruInactive)
		if nir != inactive && (nir == 0 || nir > l.nents || l.typ(nir) != lruInactive || l.percpu && l.cpu(nir) != c) {
			l.setNIR(lo, inactive)
		}
	}
	if !l.percpu {
		for c := 0; c < l.ncpu; c++ {
			if ns := l.h.load(l.local(c) + locNextSteal); int(ns) >= l.ncpu {
				l.h.store(l.local(c)+locNextSteal, uint32(c))
			}
		}
	}
}

// rebuild puts every table entry on the inactive list and every other
// entry on a free list (of its CPU for BPF_F_NO_COMMON_LRU, spread as at
// creation).
func (l *lru) rebuild(inChain []bool) {
	per := l.nents / uint32(l.ncpu)
	if per == 0 {
		per = 1
	}
	if l.percpu {
		for c := 0; c < l.ncpu; c++ {
			for t := 0; t < 3; t++ {
				l.initHead(l.head(c, t))
			}
			l.setNIR(l.list(c), l.head(c, lruInactive))
			l.h.store(l.list(c)+llActive, 0)
			l.h.store(l.list(c)+llInactive, 0)
		}
	} else {
		for t := 0; t < 3; t++ {
			l.initHead(l.head(0, t))
		}
		l.setNIR(l.list(0), l.head(0, lruInactive))
		l.h.store(l.list(0)+llActive, 0)
		l.h.store(l.list(0)+llInactive, 0)
		for c := 0; c < l.ncpu; c++ {
			l.initHead(l.localHead(c, 0))
			l.initHead(l.localHead(c, 1))
			l.h.store(l.local(c)+locNextSteal, uint32(c))
		}
	}
	for n := uint32(1); n <= l.nents; n++ {
		c := 0
		if l.percpu {
			c = min(int((n-1)/per), l.ncpu-1)
		}
		l.clearRef(n)
		if inChain[n] {
			l.setState(n, lruInactive, c)
			l.add(n, l.head(c, lruInactive))
			l.countInc(l.list(c), lruInactive)
		} else {
			l.setState(n, lruFree, c)
			l.add(n, l.head(c, lruFree))
		}
	}
}

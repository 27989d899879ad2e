package maps

import (
	"encoding/binary"
	"math/bits"
	"runtime"
	"sync/atomic"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// LPMTrie is BPF_MAP_TYPE_LPM_TRIE on flat storage: the kernel's
// lpm_trie.c — a binary trie of prefixes with intermediate nodes, longest
// prefix match on lookup, updates that replace, insert below, insert
// above or split with an intermediate node, deletes that trim them, and
// get_next_key in the kernel's post-order (more specific keys first).
// Keys are struct bpf_lpm_trie_key_u8: a native-endian u32 prefix length
// then data_size = key_size-4 bytes (big-endian bit order). It needs
// BPF_F_NO_PREALLOC, as the kernel; ENOSPC when full.
//
// Nodes come from a pool in the region (Layout.NEnts = 2*max_entries+2:
// every real and intermediate node plus the two an update allocates
// before freeing). One lock word serialises writers; a trie-wide
// sequence counter lets lookups run without it (a walk is at most
// max_prefixlen+1 nodes deep), retried while a writer changes the trie.
// Safe for concurrent use.
type LPMTrie struct {
	base
	dataSize  uint32
	maxPrefix uint32
	// stack is get_next_key's path and keyBuf a key, both scratch
	// guarded by the trie lock.
	stack  []uint32
	keyBuf []byte
}

var _ Map = (*LPMTrie)(nil)

// Node fields.
const (
	lpmChild0 = 0
	lpmChild1 = 4
	lpmPrefix = 8
	lpmFlags  = 12
	lpmIM     = 1 // LPM_TREE_NODE_FLAG_IM: an intermediate node
)

func (t *LPMTrie) initRegion() {}

func (t *LPMTrie) node(n uint32) uint64 { return t.l.EntOff + uint64(n-1)*t.l.EntSize }
func (t *LPMTrie) ld(off uint64) uint32 { return atomic.LoadUint32(t.u32(off)) }
func (t *LPMTrie) st(off uint64, v uint32) {
	atomic.StoreUint32(t.u32(off), v)
}
func (t *LPMTrie) child(n uint32, b uint32) uint32 { return t.ld(t.node(n) + 4*uint64(b)) }
func (t *LPMTrie) setChild(n, b, c uint32)         { t.st(t.node(n)+4*uint64(b), c) }
func (t *LPMTrie) prefix(n uint32) uint32          { return t.ld(t.node(n) + lpmPrefix) }
func (t *LPMTrie) im(n uint32) bool                { return t.ld(t.node(n)+lpmFlags)&lpmIM != 0 }
func (t *LPMTrie) data(n uint32) []byte {
	o := t.node(n) + t.l.KeyOff
	return t.mem[o : o+uint64(t.dataSize) : o+uint64(t.dataSize)]
}
func (t *LPMTrie) value(n uint32) []byte {
	o := t.node(n) + t.l.ValOff
	e := o + uint64(t.spec.ValueSize)
	return t.mem[o:e:e]
}

func (t *LPMTrie) lock() {
	spinLock(t.u32(mapview.OffTrieLock))
	atomic.AddUint32(t.u32(mapview.OffTrieSeq), 1)
}

func (t *LPMTrie) unlock() {
	atomic.AddUint32(t.u32(mapview.OffTrieSeq), 1)
	spinUnlock(t.u32(mapview.OffTrieLock))
}

// slot is a link: a node's child word, or the root word.
func (t *LPMTrie) rootSlot() uint64             { return mapview.OffTrieRoot }
func (t *LPMTrie) childSlot(n, b uint32) uint64 { return t.node(n) + 4*uint64(b) }

// key splits a bpf_lpm_trie_key_u8.
func (t *LPMTrie) key(k []byte) (uint32, []byte) { return ne.Uint32(k), k[4:] }

func extractBit(data []byte, i uint32) uint32 {
	return uint32(data[i/8]>>(7-i%8)) & 1
}

// matchLen is __longest_prefix_match of node n and key (prefixlen, data).
func (t *LPMTrie) matchLen(n uint32, kp uint32, kd []byte) uint32 {
	limit := min(t.prefix(n), kp)
	nd := t.data(n)
	var pl uint32
	i := 0
	for ; i+8 <= len(nd); i += 8 {
		diff := binary.BigEndian.Uint64(nd[i:]) ^ binary.BigEndian.Uint64(kd[i:])
		pl += uint32(bits.LeadingZeros64(diff))
		if pl >= limit {
			return limit
		}
		if diff != 0 {
			return pl
		}
	}
	for ; i < len(nd); i++ {
		pl += uint32(bits.LeadingZeros8(nd[i] ^ kd[i]))
		if pl >= limit {
			return limit
		}
		if nd[i] != kd[i] {
			return pl
		}
	}
	return pl
}

// find is trie_lookup_elem: the node of the longest prefix matching key,
// or 0. The caller holds the lock, or validates with the sequence counter.
func (t *LPMTrie) find(kp uint32, kd []byte) uint32 {
	if kp > t.maxPrefix {
		return 0
	}
	found := uint32(0)
	n := t.ld(t.rootSlot())
	for depth := uint32(0); n != 0; depth++ {
		if n > t.l.NEnts || depth > t.maxPrefix+1 {
			return 0 // a walk racing with a writer; the caller retries
		}
		ml := t.matchLen(n, kp, kd)
		if ml == t.maxPrefix {
			return n
		}
		p := t.prefix(n)
		if ml < p {
			break
		}
		if !t.im(n) {
			found = n
		}
		if p >= t.maxPrefix {
			break
		}
		n = t.child(n, extractBit(kd, p))
	}
	return found
}

// lookupNode finds key without the lock if writers let it, else with it.
func (t *LPMTrie) lookupNode(key []byte) uint32 {
	kp, kd := t.key(key)
	seq := t.u32(mapview.OffTrieSeq)
	for try := 0; try < mapview.MaxRetries; try++ {
		s1 := atomic.LoadUint32(seq)
		if s1&1 != 0 {
			runtime.Gosched()
			continue
		}
		n := t.find(kp, kd)
		if atomic.LoadUint32(seq) == s1 {
			return n
		}
	}
	spinLock(t.u32(mapview.OffTrieLock))
	n := t.find(kp, kd)
	spinUnlock(t.u32(mapview.OffTrieLock))
	return n
}

// allocNode takes a node from the pool (the trie lock is held).
func (t *LPMTrie) allocNode() uint32 {
	if n := t.ld(mapview.OffTrieFree); n != 0 {
		t.st(mapview.OffTrieFree, t.child(n, 0))
		return n
	}
	b := t.ld(mapview.OffTrieBump)
	if b >= t.l.NEnts {
		return 0
	}
	t.st(mapview.OffTrieBump, b+1)
	return b + 1
}

func (t *LPMTrie) freeNode(n uint32) {
	t.setChild(n, 0, t.ld(mapview.OffTrieFree))
	t.setChild(n, 1, 0)
	t.st(mapview.OffTrieFree, n)
}

func (t *LPMTrie) checkAdd(flags uint64) error {
	if flags == UpdateExist {
		return ErrKeyNotExist
	}
	e := t.ld(mapview.OffTrieEntries)
	if e == t.spec.MaxEntries {
		return ErrNoSpaceFull
	}
	t.st(mapview.OffTrieEntries, e+1)
	return nil
}

// ErrNoSpaceFull: an LPM trie holds max_entries prefixes (ENOSPC, as the
// kernel, where other maps say E2BIG).
var ErrNoSpaceFull = ErrNoSpace

// update is trie_update_elem.
func (t *LPMTrie) update(key, value []byte, flags uint64) error {
	if flags > UpdateExist {
		return ErrInvalidFlags
	}
	kp, kd := t.key(key)
	if kp > t.maxPrefix {
		return ErrInvalid
	}
	t.lock()
	defer t.unlock()
	nn := t.allocNode()
	if nn == 0 {
		return ErrNoMemory
	}
	t.st(t.node(nn)+lpmFlags, 0)
	copy(t.value(nn), value)
	t.st(t.node(nn)+lpmPrefix, kp)
	t.setChild(nn, 0, 0)
	t.setChild(nn, 1, 0)
	copy(t.data(nn), kd)

	slot := t.rootSlot()
	var n, ml uint32
	for depth := uint32(0); ; depth++ {
		n = t.ld(slot)
		if n == 0 || depth > t.maxPrefix+1 {
			break
		}
		ml = t.matchLen(n, kp, kd)
		if t.prefix(n) != ml || t.prefix(n) == kp {
			break
		}
		slot = t.childSlot(n, extractBit(kd, t.prefix(n)))
	}
	fail := func(err error) error {
		t.freeNode(nn)
		return err
	}
	if n == 0 {
		if err := t.checkAdd(flags); err != nil {
			return fail(err)
		}
		t.st(slot, nn)
		return nil
	}
	if t.prefix(n) == ml {
		// The same prefix: replace the node (an intermediate one becomes
		// real).
		if !t.im(n) {
			if flags == UpdateNoExist {
				return fail(ErrKeyExist)
			}
		} else if err := t.checkAdd(flags); err != nil {
			return fail(err)
		}
		t.setChild(nn, 0, t.child(n, 0))
		t.setChild(nn, 1, t.child(n, 1))
		t.st(slot, nn)
		t.freeNode(n)
		return nil
	}
	if err := t.checkAdd(flags); err != nil {
		return fail(err)
	}
	if ml == kp {
		// The new prefix is an ancestor of n.
		t.setChild(nn, extractBit(t.data(n), ml), n)
		t.st(slot, nn)
		return nil
	}
	im := t.allocNode()
	if im == 0 {
		t.st(mapview.OffTrieEntries, t.ld(mapview.OffTrieEntries)-1)
		return fail(ErrNoMemory)
	}
	t.st(t.node(im)+lpmPrefix, ml)
	t.st(t.node(im)+lpmFlags, lpmIM)
	copy(t.data(im), t.data(n))
	if extractBit(kd, ml) != 0 {
		t.setChild(im, 0, n)
		t.setChild(im, 1, nn)
	} else {
		t.setChild(im, 0, nn)
		t.setChild(im, 1, n)
	}
	t.st(slot, im)
	return nil
}

// remove is trie_delete_elem, copying the value first when value is not
// nil.
func (t *LPMTrie) remove(key, value []byte) error {
	kp, kd := t.key(key)
	if kp > t.maxPrefix {
		return ErrInvalid
	}
	t.lock()
	defer t.unlock()
	trim := t.rootSlot()
	trim2 := trim
	var parent, n, ml uint32
	for depth := uint32(0); ; depth++ {
		n = t.ld(trim)
		if n == 0 || depth > t.maxPrefix+1 {
			break
		}
		ml = t.matchLen(n, kp, kd)
		if t.prefix(n) != ml || t.prefix(n) == kp {
			break
		}
		parent, trim2 = n, trim
		trim = t.childSlot(n, extractBit(kd, t.prefix(n)))
	}
	if n == 0 || t.prefix(n) != kp || t.prefix(n) != ml || t.im(n) {
		return ErrKeyNotExist
	}
	if value != nil {
		copy(value, t.value(n))
	}
	t.st(mapview.OffTrieEntries, t.ld(mapview.OffTrieEntries)-1)
	c0, c1 := t.child(n, 0), t.child(n, 1)
	if c0 != 0 && c1 != 0 {
		t.st(t.node(n)+lpmFlags, t.ld(t.node(n)+lpmFlags)|lpmIM)
		return nil
	}
	if parent != 0 && t.im(parent) && c0 == 0 && c1 == 0 {
		if n == t.child(parent, 0) {
			t.st(trim2, t.child(parent, 1))
		} else {
			t.st(trim2, t.child(parent, 0))
		}
		t.freeNode(parent)
		t.freeNode(n)
		return nil
	}
	switch {
	case c0 != 0:
		t.st(trim, c0)
	case c1 != 0:
		t.st(trim, c1)
	default:
		t.st(trim, 0)
	}
	t.freeNode(n)
	return nil
}

// leftmost is find_leftmost of trie_get_next_key: the first node in
// post-order below root.
func (t *LPMTrie) leftmost(root uint32) uint32 {
	var next uint32
	for n, depth := root, uint32(0); n != 0 && depth <= t.maxPrefix+1; depth++ {
		if t.im(n) {
			n = t.child(n, 0)
			continue
		}
		next = n
		n = t.child(n, 0)
		if n == 0 {
			n = t.child(next, 1)
		}
	}
	return next
}

// nextNode is trie_get_next_key: the node after key (nil: the first) in
// the kernel's post-order, or 0 at the end. The trie lock is held.
func (t *LPMTrie) nextNode(key []byte) uint32 {
	root := t.ld(t.rootSlot())
	if root == 0 {
		return 0
	}
	if key == nil {
		return t.leftmost(root)
	}
	kp, kd := t.key(key)
	if kp > t.maxPrefix {
		return t.leftmost(root)
	}
	st := t.stack[:0]
	var n, ml uint32
	for n = root; n != 0 && len(st) <= int(t.maxPrefix)+1; {
		st = append(st, n)
		ml = t.matchLen(n, kp, kd)
		if t.prefix(n) != ml || t.prefix(n) == kp {
			break
		}
		n = t.child(n, extractBit(kd, t.prefix(n)))
	}
	if n == 0 || t.prefix(n) != ml || t.im(n) {
		return t.leftmost(root)
	}
	n = st[len(st)-1]
	for i := len(st) - 1; i > 0; i-- {
		p := st[i-1]
		if t.child(p, 0) == n {
			if r := t.child(p, 1); r != 0 {
				return t.leftmost(r)
			}
		}
		if !t.im(p) {
			return p
		}
		n = p
	}
	return 0
}

func (t *LPMTrie) writeKey(n uint32, out []byte) {
	ne.PutUint32(out, t.prefix(n))
	copy(out[4:], t.data(n))
}

func (t *LPMTrie) checkKey(key []byte) error {
	if len(key) != int(t.spec.KeySize) {
		return ErrKeySize
	}
	return nil
}

// Lookup implements Map: the value of the longest prefix matching key.
func (t *LPMTrie) Lookup(key, value []byte) error {
	if err := t.canRead(); err != nil {
		return err
	}
	if err := t.checkKey(key); err != nil {
		return err
	}
	if len(value) != int(t.spec.ValueSize) {
		return ErrValueSize
	}
	return t.withSlot(func(int) error {
		t.lock()
		defer t.unlock()
		n := t.find(t.key(key))
		if n == 0 {
			return ErrKeyNotExist
		}
		copy(value, t.value(n))
		return nil
	})
}

// ValueRef implements Map.
func (t *LPMTrie) ValueRef(key []byte) []byte { return t.ProgLookup(0, key) }

// ProgLookup implements Map: the longest prefix match's value.
func (t *LPMTrie) ProgLookup(_ int, key []byte) []byte {
	if len(key) != int(t.spec.KeySize) || t.closed.Load() {
		return nil
	}
	n := t.lookupNode(key)
	if n == 0 {
		return nil
	}
	return t.value(n)
}

// Update implements Map: ErrNoSpace (ENOSPC) when full, ErrInvalid for a
// prefix length beyond data_size*8.
func (t *LPMTrie) Update(key, value []byte, flags uint64) error {
	if err := t.canWrite(); err != nil {
		return err
	}
	return t.ProgUpdate(key, value, flags)
}

// ProgUpdate implements Map.
func (t *LPMTrie) ProgUpdate(key, value []byte, flags uint64) error {
	return t.withSlot(func(cpu int) error { return t.ProgUpdateOn(cpu, key, value, flags) })
}

// ProgUpdateOn implements Map.
func (t *LPMTrie) ProgUpdateOn(_ int, key, value []byte, flags uint64) error {
	if err := t.checkKey(key); err != nil {
		return err
	}
	if len(value) != int(t.spec.ValueSize) {
		return ErrValueSize
	}
	return t.update(key, value, flags)
}

// Delete implements Map: exact prefix only.
func (t *LPMTrie) Delete(key []byte) error {
	if err := t.canWrite(); err != nil {
		return err
	}
	return t.ProgDelete(key)
}

// ProgDelete implements Map.
func (t *LPMTrie) ProgDelete(key []byte) error {
	return t.withSlot(func(cpu int) error { return t.ProgDeleteOn(cpu, key) })
}

// ProgDeleteOn implements Map.
func (t *LPMTrie) ProgDeleteOn(_ int, key []byte) error {
	if err := t.checkKey(key); err != nil {
		return err
	}
	return t.remove(key, nil)
}

// LookupAndDelete implements Map: ErrNotSupported, as the kernel.
func (t *LPMTrie) LookupAndDelete(_, _ []byte) error {
	if err := t.canRead(); err != nil {
		return err
	}
	if err := t.canWrite(); err != nil {
		return err
	}
	return ErrNotSupported
}

// NextKey implements Map, in the kernel's post-order.
func (t *LPMTrie) NextKey(key, next []byte) error {
	if err := t.canRead(); err != nil {
		return err
	}
	if key != nil {
		if err := t.checkKey(key); err != nil {
			return err
		}
	}
	if len(next) != int(t.spec.KeySize) {
		return ErrKeySize
	}
	return t.withSlot(func(int) error {
		t.lock()
		defer t.unlock()
		n := t.nextNode(key)
		if n == 0 {
			return ErrKeyNotExist
		}
		t.writeKey(n, next)
		return nil
	})
}

// LookupBatch implements Map as the kernel's generic_map_lookup_batch
// (get_next_key then lookup, element by element). The cursor is opaque:
// the node index of the last key returned (the kernel's is the key
// itself; bpfd's wire cursor is 8 bytes). A cursor whose node no longer
// holds a prefix restarts from the first key, as the kernel does for a
// deleted key.
func (t *LPMTrie) LookupBatch(bt *Batch) error {
	if err := t.canRead(); err != nil {
		return err
	}
	if err := t.checkBatch(bt, true, true); err != nil {
		return err
	}
	max := bt.Count
	if max == 0 {
		return nil
	}
	bt.Count = 0
	return t.withSlot(func(int) error {
		t.lock()
		defer t.unlock()
		var prev []byte
		if bt.HasInBatch {
			prev = t.keyBuf
			if c := bt.InBatch; c >= 1 && c <= uint64(t.ld(mapview.OffTrieBump)) && !t.im(uint32(c)) && t.isLinked(uint32(c)) {
				t.writeKey(uint32(c), prev)
			} else {
				// A prefix length beyond the trie's: the walk restarts
				// at the first key, as the kernel's for a missing key.
				ne.PutUint32(prev, ^uint32(0))
			}
		}
		var cp uint32
		var last uint32
		for cp < max {
			n := t.nextNode(prev)
			if n == 0 {
				bt.Count = cp
				if cp > 0 {
					bt.OutBatch = uint64(last)
				}
				return ErrBatchEnd
			}
			out := t.keyAt(bt, cp)
			t.writeKey(n, out)
			copy(t.valueAt(bt, cp), t.value(n))
			prev, last = out, n
			cp++
		}
		bt.Count = cp
		bt.OutBatch = uint64(last)
		return nil
	})
}

// isLinked reports whether node n is reachable from the root (the trie
// lock is held).
func (t *LPMTrie) isLinked(n uint32) bool {
	kp, kd := t.prefix(n), t.data(n)
	c := t.ld(t.rootSlot())
	for depth := uint32(0); c != 0 && depth <= t.maxPrefix+1; depth++ {
		if c == n {
			return true
		}
		p := t.prefix(c)
		if p >= kp || t.matchLen(c, kp, kd) < p {
			return false
		}
		c = t.child(c, extractBit(kd, p))
	}
	return false
}

// LookupAndDeleteBatch implements Map: ErrNotSupported, as the kernel.
func (t *LPMTrie) LookupAndDeleteBatch(b *Batch) error {
	return noBatches{&t.base}.LookupAndDeleteBatch(b)
}

// UpdateBatch implements Map (generic_map_update_batch).
func (t *LPMTrie) UpdateBatch(bt *Batch) error {
	return t.writeBatch(bt, true, func(i uint32) error {
		return t.update(t.keyAt(bt, i), t.valueAt(bt, i), bt.ElemFlags)
	})
}

// DeleteBatch implements Map (generic_map_delete_batch).
func (t *LPMTrie) DeleteBatch(bt *Batch) error {
	return t.writeBatch(bt, false, func(i uint32) error { return t.remove(t.keyAt(bt, i), nil) })
}

func (t *LPMTrie) writeBatch(bt *Batch, values bool, op func(i uint32) error) error {
	if err := t.canWrite(); err != nil {
		return err
	}
	if err := t.checkBatch(bt, true, values); err != nil {
		return err
	}
	max := bt.Count
	if max == 0 {
		return nil
	}
	bt.Count = 0
	return t.withSlot(func(int) error {
		for i := uint32(0); i < max; i++ {
			if err := op(i); err != nil {
				return err
			}
			bt.Count = i + 1
		}
		return nil
	})
}

// validateInto checks a reopened trie: every node reachable from the
// root in range and reached once, children more specific than their
// parent, intermediate nodes with two children; the real-node count; the
// free list. Unreachable nodes go back to the free list.
func (t *LPMTrie) validateInto(rep *Repair) error {
	if atomic.LoadUint32(t.u32(mapview.OffTrieLock)) != 0 {
		t.st(mapview.OffTrieLock, 0)
		rep.Unlocked++
	}
	if s := t.ld(mapview.OffTrieSeq); s&1 != 0 {
		t.st(mapview.OffTrieSeq, s+1)
		rep.Unlocked++
	}
	bump := t.ld(mapview.OffTrieBump)
	if bump > t.l.NEnts {
		return errorString("trie bump index out of range")
	}
	seen := make([]bool, t.l.NEnts+1)
	var real uint32
	var walk func(n, minPrefix uint32, depth uint32) error
	walk = func(n, minPrefix, depth uint32) error {
		if n == 0 {
			return nil
		}
		if n > bump || seen[n] || depth > t.maxPrefix+1 {
			return errorString("trie links a node out of range or twice")
		}
		seen[n] = true
		p := t.prefix(n)
		if p > t.maxPrefix || p < minPrefix {
			return errorString("trie node prefix out of order")
		}
		if t.im(n) {
			if t.child(n, 0) == 0 || t.child(n, 1) == 0 {
				return errorString("intermediate trie node without two children")
			}
		} else {
			real++
		}
		for b := uint32(0); b < 2; b++ {
			if err := walk(t.child(n, b), p+1, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(t.ld(t.rootSlot()), 0, 0); err != nil {
		return err
	}
	if real > t.spec.MaxEntries {
		return errorString("trie holds more prefixes than max_entries")
	}
	t.st(mapview.OffTrieEntries, real)
	// Rebuild the free list from every allocated node not in the trie.
	t.st(mapview.OffTrieFree, 0)
	for n := bump; n >= 1; n-- {
		if !seen[n] {
			t.freeNode(n)
		}
	}
	return nil
}

package maps

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Persistence.
//
// A map's region is its whole state (see the package doc), so keeping a
// map across a daemon restart needs no copy at all when the region is a
// file under Config.Dir on a filesystem that outlives the process (tmpfs
// under /run): every store the daemon made is in the page cache the
// moment it is made, kill -9 or not. Open (OpenFile) takes such a file
// back after validating and repairing it. Detach lets a daemon that shuts
// down cleanly leave the file in place for its successor.
//
// For reboots a copy must be taken. Dump reads every element straight
// from storage, whatever the map's BPF_F_RDONLY / BPF_F_WRONLY caps and
// frozen state (they restrict the syscall side, not the daemon), each
// element consistently (under its bucket's or element's sequence
// counter); RestoreElem writes such a copy back into a fresh map.
//
// Every map type must implement both (the persistence test enumerates the
// types New accepts and fails for one without them).

// dumper is implemented by every map type whose contents can be dumped.
type dumper interface {
	dump(scratch []byte, fn func(key, value []byte) error) error
}

// Dump calls fn with every element of m, key and value in the syscall
// layout (Spec.KeySize and Spec.SyscallValueSize bytes; fd arrays: the
// object id each slot holds), read from storage: the syscall caps
// (BPF_F_RDONLY, BPF_F_WRONLY) and freezing do not apply. Arrays skip
// all-zero values; fd arrays empty slots. Each element is read whole
// (under its sequence counter); the dump as a whole is not an atomic
// snapshot of the map when writers run concurrently. key and value are
// only valid during the call, and fn must not call m's methods (it runs
// without a CPU slot, so it may block). It returns fn's first error,
// ErrClosed, or ErrNotSupported for a type without a dump.
func Dump(m Map, fn func(key, value []byte) error) error {
	d, ok := m.(dumper)
	if !ok {
		return ErrNotSupported
	}
	return d.dump(nil, fn)
}

// dump implements dumper: bucket by bucket, each copied under its lock
// (holding a slot only for the copy), then handed to fn.
func (h *Hash) dump(buf []byte, fn func(key, value []byte) error) error {
	ks, vs := int(h.spec.KeySize), h.spec.SyscallValueSize()
	for bi := uint32(0); bi < h.l.NBuckets; bi++ {
		b := h.l.BucketOff + 8*uint64(bi)
		s, err := h.enter()
		if err != nil {
			return err
		}
		if h.load(b+4) == 0 {
			h.leave(s)
			continue
		}
		buf = buf[:0]
		h.lockBucket(b)
		for e := h.load(b + 4); e != 0; e = h.load(h.ent(e)) {
			buf = append(buf, h.keyOf(e)...)
			n := len(buf)
			buf = grow(buf, vs)
			h.readValue(e, buf[n:])
		}
		h.unlockBucket(b)
		h.leave(s)
		for off := 0; off+ks+vs <= len(buf); off += ks + vs {
			if err := fn(buf[off:off+ks], buf[off+ks:off+ks+vs]); err != nil {
				return err
			}
		}
	}
	return nil
}

// dump implements dumper: element by element, skipping zero values.
func (a *Array) dump(buf []byte, fn func(key, value []byte) error) error {
	vs := a.spec.SyscallValueSize()
	buf = grow(buf[:0], 4+vs)
	key, val := buf[:4], buf[4:]
	for i := uint32(0); i < a.spec.MaxEntries; i++ {
		s, err := a.enter()
		if err != nil {
			return err
		}
		a.lockElem(i)
		a.read(i, val)
		a.unlockElem(i)
		a.leave(s)
		if allZero(val) {
			continue
		}
		ne.PutUint32(key, i)
		if err := fn(key, val); err != nil {
			return err
		}
	}
	return nil
}

// dump implements dumper: the non-empty slots and their ids.
func (p *ProgArray) dump(_ []byte, fn func(key, value []byte) error) error {
	var key, val [4]byte
	for i := uint32(0); i < p.spec.MaxEntries; i++ {
		if p.closed.Load() {
			return ErrClosed
		}
		id := p.Prog(i)
		if id == 0 {
			continue
		}
		ne.PutUint32(key[:], i)
		ne.PutUint32(val[:], id)
		if err := fn(key[:], val[:]); err != nil {
			return err
		}
	}
	return nil
}

// grow extends b by n zero bytes.
func grow(b []byte, n int) []byte {
	l := len(b)
	if cap(b)-l < n {
		nb := make([]byte, l, 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	b = b[:l+n]
	clear(b[l:])
	return b
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// RestoreSlot stores id in slot key of an fd array (PROG_ARRAY,
// PERF_EVENT_ARRAY, ARRAY_OF_MAPS), ignoring BPF_F_RDONLY and freezing,
// for rebuilding one from a saved copy. The layer above takes the
// references the slot stands for. ErrInvalid for another map type, and
// the errors of ProgArray.Swap otherwise.
func RestoreSlot(m Map, key []byte, id uint32) error {
	p, ok := m.(*ProgArray)
	if !ok {
		return ErrInvalid
	}
	var v [4]byte
	ne.PutUint32(v[:], id)
	_, err := p.swap(key, v[:], UpdateAny)
	return err
}

// Detach ends the daemon's use of m without ending the map: it waits for
// operations in flight, unmaps the region and closes the backing, but
// leaves a file backing in place and live (not retired), for OpenFile to
// take back after a restart. A memfd backing is simply closed (its bytes
// are gone unless another process holds it). Afterwards m behaves as
// after Close. It returns ErrClosed if m was already closed or detached.
func Detach(m Map) error {
	b := m.(impl).b()
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if !b.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	b.pool.Quiesce()()
	if x, ok := b.self.(interface{ detachExtra() }); ok {
		x.detachExtra()
	}
	r := b.reg
	err := unix.Munmap(r.mem)
	r.mem = nil
	if cerr := unix.Close(r.fd); err == nil {
		err = cerr
	}
	r.fd = -1
	b.mem = nil
	if err != nil {
		return os.NewSyscallError("munmap/close", err)
	}
	return nil
}

// RegionSuffix ends the name of every region file the file backend makes.
const RegionSuffix = ".region"

// IsRegionFile reports whether name (a base name) is one the file backend
// gives region files: what a daemon may remove from Config.Dir as an
// orphan after a restart.
func IsRegionFile(name string) bool {
	return strings.HasPrefix(name, "map-") && strings.HasSuffix(name, RegionSuffix) &&
		filepath.Base(name) == name
}

// errNoFallocate reports whether err from fallocate(2) means the
// filesystem cannot preallocate (then the file is extended sparse), as
// opposed to a real shortage of space.
func errNoFallocate(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

// DumpSizes returns the sizes of the keys and values Dump gives for maps
// of spec (and RestoreElem takes): Spec.KeySize and SyscallValueSize,
// except for a bloom filter, whose contents are its bit array — keys are
// u32 word indexes and values the non-zero u64 words (the values added
// cannot be read back), after the hash seed under BloomSeedKey, and a ring buffer, whose contents are the
// records not yet consumed — no key, values of any size (value -1).
func DumpSizes(spec Spec) (key, value int) {
	switch spec.Type {
	case TypeBloomFilter:
		return 4, 8
	case TypeRingbuf:
		return 0, -1
	}
	return int(spec.KeySize), spec.SyscallValueSize()
}

// dump implements dumper: oldest element first (queue) or bottom first
// (stack), so that pushing them back in order rebuilds the same map.
func (q *Queue) dump(buf []byte, fn func(key, value []byte) error) error {
	vs := int(q.spec.ValueSize)
	s, err := q.enter()
	if err != nil {
		return err
	}
	q.lock()
	h, t, n := q.head(), q.tail(), q.size()
	buf = buf[:0]
	for i := t; i != h; {
		buf = append(buf, q.elem(i)...)
		if i++; i >= n {
			i = 0
		}
	}
	q.unlock()
	q.leave(s)
	for off := 0; off+vs <= len(buf); off += vs {
		if err := fn(nil, buf[off:off+vs]); err != nil {
			return err
		}
	}
	return nil
}

func (q *Queue) restoreElem(key, value []byte) error {
	if len(key) != 0 {
		return ErrKeySize
	}
	// Push ignores the syscall caps; UpdateExist drops the oldest if a
	// dump holds more than fits (it never does).
	return q.withSlot(func(cpu int) error { return q.Push(cpu, value, UpdateExist) })
}

// BloomSeedKey is the key under which a bloom filter's dump gives its
// hash seed (value: the u64 seed), first: the bits mean nothing under
// another seed, so a filter rebuilt from a dump takes the seed back
// before its words.
const BloomSeedKey = ^uint32(0)

// dump implements dumper: the hash seed (BloomSeedKey), then the non-zero
// words of the bit array.
func (f *Bloom) dump(_ []byte, fn func(key, value []byte) error) error {
	var k [4]byte
	var v [8]byte
	ne.PutUint32(k[:], BloomSeedKey)
	ne.PutUint64(v[:], binary.LittleEndian.Uint64(f.mem[mapview.OffSeed:]))
	if err := fn(k[:], v[:]); err != nil {
		return err
	}
	words := (f.mask + 1 + 63) / 64
	for i := uint32(0); i < words; i++ {
		if f.closed.Load() {
			return ErrClosed
		}
		w := atomic.LoadUint64(f.word(i * 64))
		if w == 0 {
			continue
		}
		ne.PutUint32(k[:], i)
		ne.PutUint64(v[:], w)
		if err := fn(k[:], v[:]); err != nil {
			return err
		}
	}
	return nil
}

func (f *Bloom) restoreElem(key, value []byte) error {
	if len(key) != 4 || len(value) != 8 {
		return ErrInvalid
	}
	i := ne.Uint32(key)
	if i == BloomSeedKey {
		// Restores run before the map is shared: no lookup races the
		// seed's change.
		seed := ne.Uint64(value)
		f.seed = uint32(seed)
		binary.LittleEndian.PutUint64(f.mem[mapview.OffSeed:], seed)
		return nil
	}
	if uint64(i)*64 > uint64(f.mask) {
		return ErrInvalid
	}
	return f.withSlot(func(int) error {
		atomic.OrUint64(f.word(i*64), ne.Uint64(value))
		return nil
	})
}

// dump implements dumper: every real (not intermediate) node of the
// trie, key (prefix length ‖ data) and value, read under the trie lock.
func (t *LPMTrie) dump(buf []byte, fn func(key, value []byte) error) error {
	ks, vs := int(t.spec.KeySize), int(t.spec.ValueSize)
	s, err := t.enter()
	if err != nil {
		return err
	}
	t.lock()
	buf = buf[:0]
	var walk func(n uint32, depth int)
	walk = func(n uint32, depth int) {
		// A trie is at most max_prefixlen+1 deep; deeper is a cycle
		// (never in a live map) and ends the walk.
		if n == 0 || n > t.l.NEnts || depth > int(t.maxPrefix)+1 {
			return
		}
		if !t.im(n) {
			buf = ne.AppendUint32(buf, t.prefix(n))
			buf = append(buf, t.data(n)...)
			buf = append(buf, t.value(n)...)
		}
		walk(t.child(n, 0), depth+1)
		walk(t.child(n, 1), depth+1)
	}
	walk(t.ld(t.rootSlot()), 0)
	t.unlock()
	t.leave(s)
	for off := 0; off+ks+vs <= len(buf); off += ks + vs {
		if err := fn(buf[off:off+ks], buf[off+ks:off+ks+vs]); err != nil {
			return err
		}
	}
	return nil
}

func (t *LPMTrie) restoreElem(key, value []byte) error {
	if err := t.checkKey(key); err != nil {
		return err
	}
	if len(value) != int(t.spec.ValueSize) {
		return ErrValueSize
	}
	return t.withSlot(func(int) error { return t.update(key, value, UpdateAny) })
}

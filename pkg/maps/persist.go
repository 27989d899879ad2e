package maps

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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

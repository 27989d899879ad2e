package maps

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Spin locks in map values: struct bpf_spin_lock and BPF_F_LOCK.
//
// A hash or array map whose value type (in the BTF named at creation)
// holds a struct bpf_spin_lock records the lock's offset in
// Spec.SpinLock and in its region's header (mapview.OffSpinLock), so a
// reopened region, a client mapping and the verifier all see it. The
// lock is the value's own 4-byte word in the region, 0 when free and 1
// when held, taken by compare-and-swap and spun on (yielding the
// goroutine after a few attempts): the same word programs lock with
// bpf_spin_lock, whichever goroutine of the daemon runs them, so the
// syscall side's BPF_F_LOCK copies exclude programs' critical sections
// and each other as in the kernel. No Go mutex stands for it.
//
// The syscall side as the kernel's: a plain lookup returns the value with
// the lock's bytes zeroed (check_and_init_map_value), a plain update
// never stores into the lock word (copy_map_value); with BPF_F_LOCK a
// lookup, update, lookup-and-delete and the batch commands' elem_flags
// copy the value while holding its lock; BPF_F_LOCK on a map without a
// lock is ErrInvalidFlags (EINVAL). A hash update with BPF_F_LOCK of an
// existing key rewrites the value in place under the lock, otherwise it
// inserts as a plain update does.
//
// A lock word held when the daemon died would never be released: Open
// (restore after a restart or crash) clears every lock word of a
// reopened region, counting those it found held in Repair.Unlocked.

// ErrLockAccess is map creation's refusal of a spin lock in a map with
// BPF_F_RDONLY_PROG or BPF_F_WRONLY_PROG (EACCES, as map_check_btf).
var ErrLockAccess = errno.New(unix.EACCES, "maps: a map with a bpf_spin_lock must be readable and writable by programs")

// LockOffset returns the offset of the values' struct bpf_spin_lock and
// true, or false when s has none.
func (s Spec) LockOffset() (uint32, bool) {
	if s.SpinLock == 0 {
		return 0, false
	}
	return s.SpinLock - 1, true
}

// checkSpinLock applies map_check_btf's rules to s's lock, after the
// type's own checks (the kernel allocates the map first): only hash and
// array maps may hold one (ErrOpNotSupp, EOPNOTSUPP), not with the
// program access flags (ErrLockAccess, EACCES), and it must lie 4-byte
// aligned inside the value (ErrInvalid; a BTF parser normally refuses
// that earlier).
func (s Spec) checkSpinLock() error {
	off, ok := s.LockOffset()
	if !ok {
		return nil
	}
	if s.Flags&(FlagRdonlyProg|FlagWronlyProg) != 0 || s.Type == TypeDevmap || s.Type == TypeDevmapHash {
		// Device maps are BPF_F_RDONLY_PROG whatever the caller asked.
		return ErrLockAccess
	}
	if s.Type != TypeHash && s.Type != TypeArray {
		return ErrOpNotSupp
	}
	if off%4 != 0 || uint64(off)+4 > uint64(s.ValueSize) {
		return ErrInvalid
	}
	return nil
}

// SpinLock takes the lock word w (a value's struct bpf_spin_lock in a
// region): compare-and-swap 0 → 1, spinning, and yielding the goroutine
// after a few failed attempts. It never gives up: a holder releases
// within its bounded critical section (a program may not call helpers
// or exit while holding it; the syscall side holds it for one copy).
func SpinLock(w *uint32) { spinLock(w) }

// SpinUnlock releases a lock word taken with SpinLock.
func SpinUnlock(w *uint32) { spinUnlock(w) }

// lockWord returns the lock word of a value slice v (which must hold the
// lock at off, 4-byte aligned in memory).
func lockWord(v []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&v[off])) }

// clearLock zeroes the lock field of value (a lookup's result) on a map
// whose Spec.SpinLock is sl.
func clearLock(value []byte, sl uint32) {
	if sl != 0 {
		clear(value[sl-1 : sl+3])
	}
}

// copyAroundLock copies src into dst except the 4 bytes at the lock's
// offset (copy_map_value). sl is Spec.SpinLock; 0 copies everything.
func copyAroundLock(dst, src []byte, sl uint32) {
	if sl == 0 {
		copy(dst, src)
		return
	}
	off := sl - 1
	copy(dst[:off], src[:off])
	copy(dst[off+4:], src[off+4:])
}

// copyLocked copies under the lock of the stored value: into the stored
// value from src (toStore) or from it into dst, leaving the lock word of
// the destination alone, and zeroes a lookup's lock field
// (copy_map_value_locked and check_and_init_map_value).
func copyLocked(stored, other []byte, sl uint32, toStore bool) {
	w := lockWord(stored, sl-1)
	spinLock(w)
	if toStore {
		copyAroundLock(stored, other, sl)
	} else {
		copyAroundLock(other, stored, sl)
	}
	spinUnlock(w)
	if !toStore {
		clearLock(other, sl)
	}
}

// lockFlagErr is the answer to BPF_F_LOCK on a map without a lock, after
// the permission check the kernel makes first.
func lockFlagErr(perm func() error) error {
	if err := perm(); err != nil {
		return err
	}
	return ErrInvalidFlags
}

// CheckUpdateLock applies BPF_MAP_UPDATE_ELEM's BPF_F_LOCK check, which
// the kernel makes for every map type after the write permission check and
// before anything else: UpdateLock in flags on a map without a spin lock
// is ErrPermission (EPERM) if the syscall side cannot write m (frozen,
// BPF_F_RDONLY), ErrInvalidFlags (EINVAL) otherwise. nil when the flags
// pass this check (the map's Update checks the rest).
func CheckUpdateLock(m Map, flags uint64) error {
	if flags&UpdateLock == 0 || m.Spec().SpinLock != 0 {
		return nil
	}
	b := m.(impl).b()
	return lockFlagErr(b.canWrite)
}

// LookupFlags is Map.Lookup with BPF_MAP_LOOKUP_ELEM's flags, in the
// kernel's order of checks: flags other than UpdateLock (BPF_F_LOCK) are
// ErrInvalidFlags (EINVAL); then the read permission (ErrPermission,
// EPERM); UpdateLock on a map without a spin lock is ErrInvalidFlags;
// with it the value is copied while holding its lock, the lock field
// zeroed. The other errors are Lookup's.
func LookupFlags(m Map, key, value []byte, flags uint64) error {
	if flags == 0 {
		return m.Lookup(key, value)
	}
	if flags&^UpdateLock != 0 {
		return ErrInvalidFlags
	}
	b := m.(impl).b()
	if m.Spec().SpinLock == 0 {
		return lockFlagErr(b.canRead)
	}
	switch l := m.(type) {
	case *Array:
		return l.lookup(key, value, UpdateLock)
	case *Hash:
		return l.lookupLocked(key, value, false)
	}
	return ErrInvalidFlags
}

// LookupAndDeleteFlags is Map.LookupAndDelete with
// BPF_MAP_LOOKUP_AND_DELETE_ELEM's flags, in the kernel's order: flags
// other than UpdateLock are ErrInvalidFlags (EINVAL); then read and write
// permission (ErrPermission, EPERM); any flag on a queue or stack, or
// UpdateLock on a map without a spin lock, ErrInvalidFlags; then the
// map's own LookupAndDelete (arrays: ErrNotSupported, ENOTSUPP), a hash
// copying the value under its lock.
func LookupAndDeleteFlags(m Map, key, value []byte, flags uint64) error {
	if flags == 0 {
		return m.LookupAndDelete(key, value)
	}
	if flags&^UpdateLock != 0 {
		return ErrInvalidFlags
	}
	b := m.(impl).b()
	if m.Spec().SpinLock == 0 {
		return lockFlagErr(func() error {
			if err := b.canRead(); err != nil {
				return err
			}
			return b.canWrite()
		})
	}
	if h, ok := m.(*Hash); ok {
		if err := h.canRead(); err != nil {
			return err
		}
		if err := h.canWrite(); err != nil {
			return err
		}
		return h.lookupLocked(key, value, true)
	}
	return m.LookupAndDelete(key, value)
}

// readFlags copies element i for a lookup (flags 0 or UpdateLock),
// holding its sequence counter.
func (a *Array) readFlags(i uint32, value []byte, flags uint64) {
	a.lockElem(i)
	if flags&UpdateLock != 0 {
		copyLocked(a.slot(i, 0), value, a.spec.SpinLock, false)
	} else {
		a.read(i, value)
	}
	a.unlockElem(i)
}

// lookupLocked is a hash's BPF_F_LOCK lookup (and with del, its
// lookup-and-delete): the value is copied under its lock while the
// bucket is held, so the entry cannot be replaced meanwhile.
func (h *Hash) lookupLocked(key, value []byte, del bool) error {
	if err := h.checkKV(key, value, h.spec.SyscallValueSize()); err != nil {
		return err
	}
	s, err := h.enter()
	if err != nil {
		return err
	}
	defer h.leave(s)
	hv := mapview.Hash(h.seed, key)
	b := h.bucketOf(hv)
	h.lockBucket(b)
	e, prev := h.find(b, hv, key)
	if e == 0 {
		h.unlockBucket(b)
		return ErrKeyNotExist
	}
	copyLocked(h.valOf(e, 0), value, h.spec.SpinLock, false)
	if del {
		h.unlink(b, e, prev)
	}
	h.unlockBucket(b)
	if del {
		h.free(s, e)
	}
	return nil
}

// readFlags copies entry e's value for a lookup batch (flags 0 or
// UpdateLock); the caller holds its bucket.
func (h *Hash) readFlags(e uint32, value []byte, flags uint64) {
	if flags&UpdateLock != 0 {
		copyLocked(h.valOf(e, 0), value, h.spec.SpinLock, false)
		return
	}
	h.readValue(e, value)
}

// updateFlags is update with BPF_F_LOCK allowed: UpdateLock on a map
// without a lock is ErrInvalidFlags; with it update rewrites an existing
// key's value in place under its lock (htab_map_update_elem) and inserts
// a missing key as a plain update would.
func (h *Hash) updateFlags(cpu int, key, value []byte, flags uint64, allCPUs bool) error {
	if flags&UpdateLock != 0 && h.spec.SpinLock == 0 {
		return ErrInvalidFlags
	}
	return h.update(cpu, key, value, flags, allCPUs)
}

// clearSpinLocks releases every lock word of a reopened region (a word
// saved while held would never be released) and returns how many were
// held.
func clearSpinLocks(m Map) int {
	off, ok := m.Spec().LockOffset()
	if !ok {
		return 0
	}
	n := 0
	release := func(v []byte) {
		if atomic.SwapUint32(lockWord(v, off), 0) != 0 {
			n++
		}
	}
	switch l := m.(type) {
	case *Array:
		for i := uint32(0); i < l.spec.MaxEntries; i++ {
			release(l.slot(i, 0))
		}
	case *Hash:
		for e := uint32(1); e <= l.l.NEnts; e++ {
			release(l.valOf(e, 0))
		}
	}
	return n
}

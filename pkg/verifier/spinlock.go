package verifier

import "golang.org/x/sys/unix"

// bpf_spin_lock (93) and bpf_spin_unlock (94): the rules of kernel
// 6.18's verifier (process_spin_lock and the checks around it), compared
// with the kernel case by case in TestSpinLockVsKernel.
//
//   - The argument must be a non-NULL map value pointer (EACCES
//     otherwise) with a constant offset that lands exactly on the value's
//     struct bpf_spin_lock (MapInfo.SpinLock), in a map that has one
//     (EINVAL otherwise).
//   - One lock at a time; bpf_spin_unlock must name the lock held: the
//     same map and the same lookup's pointer (the kernel's reg->id,
//     which a null check keeps for values of maps with a lock).
//   - While a lock is held: no helper call but bpf_spin_unlock, no
//     LD_ABS/LD_IND, no exit from the main program (all EINVAL).
//     bpf-to-bpf calls are allowed, as in 6.18.
//   - Loads, stores, atomics and helper memory arguments that touch the
//     lock's 4 bytes are refused (EACCES), held or not.
//
// Which program types may use a map with a lock is the program layer's
// business (the kernel refuses socket filters and tracing programs when
// the map is referenced).

// Spin lock helper numbers (enum bpf_func_id).
const (
	FnSpinLock   int32 = 93
	FnSpinUnlock int32 = 94
)

// ArgPtrToSpinLock needs a map value pointer to the value's
// struct bpf_spin_lock (the kernel's ARG_PTR_TO_SPIN_LOCK), which the
// call takes; argPtrToHeldSpinLock the same, naming the lock held, which
// the call releases.
const (
	ArgPtrToSpinLock     ArgType = 120
	argPtrToHeldSpinLock ArgType = 121
)

// spinLockHelpers returns the prototypes of bpf_spin_lock and
// bpf_spin_unlock (void, as the kernel's).
func spinLockHelpers() map[int32]*HelperProto {
	return map[int32]*HelperProto{
		FnSpinLock:   {Name: "spin_lock", Args: [5]ArgType{ArgPtrToSpinLock}, Ret: RetVoid},
		FnSpinUnlock: {Name: "spin_unlock", Args: [5]ArgType{argPtrToHeldSpinLock}, Ret: RetVoid},
	}
}

// lockState is the bpf_spin_lock a path holds: held, and which (the
// map's index and the pointer's id).
type lockState struct {
	held bool
	idx  int32
	id   uint32
}

// lockIncludes reports whether old's held lock corresponds to cur's.
func lockIncludes(old, cur *state, im *idmap) bool {
	if old.lock.held != cur.lock.held {
		return false
	}
	return !old.lock.held || old.lock.idx == cur.lock.idx && im.check(old.lock.id, cur.lock.id)
}

// lockedCall refuses a helper call other than bpf_spin_unlock while a
// lock is held.
func (v *verifier) lockedCall(st *state, fn int32) error {
	if st.lock.held && fn != FnSpinUnlock {
		return v.errf(st, st.pc, unix.EINVAL, "function calls are not allowed while holding a lock")
	}
	return nil
}

// lockedLdAbs refuses LD_ABS/LD_IND while a lock is held.
func (v *verifier) lockedLdAbs(st *state) error {
	if st.lock.held {
		return v.errf(st, st.pc, unix.EINVAL, "BPF_LD_[ABS|IND] cannot be used inside bpf_spin_lock-ed region")
	}
	return nil
}

// lockedExit refuses an exit from the main program while a lock is held.
func (v *verifier) lockedExit(st *state) error {
	if len(st.frames) == 1 && st.lock.held {
		return v.errf(st, st.pc, unix.EINVAL, "BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region")
	}
	return nil
}

// lockField refuses an access of size bytes at p+off into a map value
// that overlaps the value's bpf_spin_lock (check_map_access's field
// check; after the bounds check).
func (v *verifier) lockField(st *state, p reg, off, size int) error {
	sl := v.env.Maps[p.idx].SpinLock
	if sl == 0 {
		return nil
	}
	lo := int64(p.off) + int64(off) + p.smin
	hi := int64(p.off) + int64(off) + int64(p.umax) + int64(size)
	if lock := int64(sl - 1); lo < lock+4 && lock < hi {
		return v.errf(st, st.pc, unix.EACCES, "bpf_spin_lock cannot be accessed directly by load/store")
	}
	return nil
}

// spinLockArg checks bpf_spin_lock's or bpf_spin_unlock's argument in
// register regno and takes or releases the lock.
func (v *verifier) spinLockArg(st *state, lock bool, regno uint8) error {
	r := st.cur().regs[regno]
	if r.typ != ptrToMapValue || r.ref != 0 {
		return v.errf(st, st.pc, unix.EACCES, "R%d type=%s expected=map_value", regno, r.typ)
	}
	if err := v.mapAccess(st, r.idx, false, "bpf_spin_lock on"); err != nil {
		return err // bpfd's per-handle modes: the lock is for readers of the value
	}
	if !r.isConst() {
		return v.errf(st, st.pc, unix.EINVAL, "R%d doesn't have constant offset. bpf_spin_lock has to be at the constant offset", regno)
	}
	m := v.env.Maps[r.idx]
	if m.SpinLock == 0 {
		return v.errf(st, st.pc, unix.EINVAL, "map '%s' has no valid bpf_spin_lock", m.Name)
	}
	if off := int64(r.off) + int64(r.vo.value); off != int64(m.SpinLock-1) {
		return v.errf(st, st.pc, unix.EINVAL, "off %d doesn't point to 'struct bpf_spin_lock' that is at %d", off, m.SpinLock-1)
	}
	if lock {
		if st.lock.held {
			return v.errf(st, st.pc, unix.EINVAL, "Locking two bpf_spin_locks are not allowed")
		}
		st.lock = lockState{held: true, idx: r.idx, id: r.id}
		return nil
	}
	if !st.lock.held {
		return v.errf(st, st.pc, unix.EINVAL, "bpf_spin_unlock without taking a lock")
	}
	if st.lock.idx != r.idx || st.lock.id != r.id {
		return v.errf(st, st.pc, unix.EINVAL, "bpf_spin_unlock of different lock")
	}
	st.lock = lockState{}
	return nil
}

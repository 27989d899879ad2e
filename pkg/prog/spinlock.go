package prog

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// bpf_spin_lock (93) and bpf_spin_unlock (94). The lock is the value's
// own 4-byte word in the map's region (maps.SpinLock: compare-and-swap,
// spinning, yielding the goroutine), the same word the syscall side's
// BPF_F_LOCK copies take, so runs on any of the daemon's goroutines and
// the syscall side exclude each other. The verifier guarantees the
// argument points at a value's lock, one lock at a time, no helper call
// and no exit while it is held; the run remembers the held word so that
// a run ending abnormally (a fault, an exhausted budget) still releases
// it, and a run holding it never pauses at a scheduler's yield point
// (others may be spinning on it).

// Spin lock helper numbers.
const (
	HelperSpinLock   = verifier.FnSpinLock
	HelperSpinUnlock = verifier.FnSpinUnlock
)

// errLockArg: the verifier let through a pointer that is no lock word.
var errLockArg = errno.New(unix.EFAULT, "prog: bpf_spin_lock argument is not an aligned map value word")

// spinLockUse is the kernel's check_map_prog_compatibility for maps with
// a lock: socket filters may not use them (EINVAL), whether or not they
// take the lock. (Tracing programs neither; bpfd has none. Seccomp
// programs, bpfd's own type, may.)
func spinLockUse(t Type, s maps.Spec) error {
	if s.SpinLock == 0 || t != SocketFilter {
		return nil
	}
	const msg = "socket filter progs cannot use bpf_spin_lock yet"
	return &verifier.Error{Errno: unix.EINVAL, PC: -1, Msg: msg, Log: msg + "\n"}
}

// lockWordArg returns the lock word r1 designates.
func lockWordArg(vm *interp.VM, r1 uint64) (*uint32, error) {
	b, err := vm.Mem(r1, 4, false)
	if err != nil {
		return nil, err
	}
	p := unsafe.Pointer(&b[0])
	if uintptr(p)%4 != 0 {
		return nil, errLockArg
	}
	return (*uint32)(p), nil
}

func helperSpinLock(vm *interp.VM, r1, _, _, _, _ uint64) (uint64, error) {
	w, err := lockWordArg(vm, r1)
	if err != nil {
		return 0, err
	}
	maps.SpinLock(w)
	vm.Context.(*runCtx).spin = w
	return 0, nil
}

func helperSpinUnlock(vm *interp.VM, r1, _, _, _, _ uint64) (uint64, error) {
	w, err := lockWordArg(vm, r1)
	if err != nil {
		return 0, err
	}
	rc := vm.Context.(*runCtx)
	if rc.spin == w {
		rc.spin = nil
	}
	maps.SpinUnlock(w)
	return 0, nil
}

// releaseSpin releases the lock a run ended holding (abnormally: the
// verifier refuses an exit while it is held).
func (rc *runCtx) releaseSpin() {
	maps.SpinUnlock(rc.spin)
	rc.spin = nil
}

// lockAwareYield wraps a run's yield function: no pause while the run
// holds a bpf_spin_lock.
func lockAwareYield(vm *interp.VM, yield func() error) func() error {
	return func() error {
		if rc, ok := vm.Context.(*runCtx); ok && rc.spin != nil {
			return nil
		}
		return yield()
	}
}

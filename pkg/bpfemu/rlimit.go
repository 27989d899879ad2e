package bpfemu

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// RLIMIT_MEMLOCK.
//
// Kernels before 5.11 charged bpf memory to RLIMIT_MEMLOCK, so libbpf,
// bpftool and cilium/ebpf raise it to infinity before loading anything
// (libbpf only when its memcg probe fails, which it does against bpfd: the
// probe uses a helper bpfd lacks). An unprivileged process may not raise
// its hard limit, and libbpf then warns. bpfd charges its own per-uid
// quotas and ignores RLIMIT_MEMLOCK, so the supervisor answers a raise of
// RLIMIT_MEMLOCK beyond the hard limit with success without changing the
// real limit, and later reads of it from the same process with the value
// it set. Every other rlimit call, and lowering RLIMIT_MEMLOCK, runs in
// the kernel.

// rlimit answers prlimit64(pid, resource, new, old) (setrlimit and
// getrlimit are prlimit64 of the caller with one side).
func (c *call) rlimit(pid int32, resource uint64, unew, uold uint64) (int64, error) {
	if resource != unix.RLIMIT_MEMLOCK {
		return 0, errContinue
	}
	tgid, err := c.tgid()
	if err != nil {
		return 0, err
	}
	if pid != 0 && int(pid) != tgid {
		return 0, errContinue
	}
	s := c.s
	var set unix.Rlimit
	if unew != 0 {
		b := (*[16]byte)(unsafe.Pointer(&set))
		if err := c.read(unew, b[:]); err != nil {
			return 0, err
		}
		if set.Cur > set.Max {
			return 0, unix.EINVAL
		}
		var real unix.Rlimit
		if err := unix.Prlimit(tgid, unix.RLIMIT_MEMLOCK, nil, &real); err != nil {
			return 0, errContinue
		}
		if set.Max <= real.Max {
			s.limits.Delete(tgid)
			return 0, errContinue // allowed anyway: let the kernel do it
		}
	}
	if uold != 0 {
		v, ok := s.limits.Load(tgid)
		if !ok {
			if unew == 0 {
				return 0, errContinue
			}
			var real unix.Rlimit
			if err := unix.Prlimit(tgid, unix.RLIMIT_MEMLOCK, nil, &real); err != nil {
				return 0, errContinue
			}
			v = real
		}
		old := v.(unix.Rlimit)
		b := (*[16]byte)(unsafe.Pointer(&old))
		if err := c.write(uold, b[:]); err != nil {
			return 0, err
		}
	}
	if unew != 0 {
		s.limits.Store(tgid, set)
	}
	return 0, nil
}

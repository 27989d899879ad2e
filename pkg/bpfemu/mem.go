package bpfemu

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// userTop is the end of x86_64 user space (TASK_SIZE_MAX with 4-level
// paging is 0x7ffffffff000; 5-level paging raises it). Addresses at or
// above 1<<56 can never be user memory; the kernel's access_ok refuses
// them with EFAULT before touching anything.
const userTop = 1 << 56

// maxRemoteIO caps one transfer from or to the process (the kernel's
// MAX_RW_COUNT is INT_MAX rounded down to a page).
const maxRemoteIO = 1<<31 - 4096

// Task memory.
//
// Every read from the process is followed by SECCOMP_IOCTL_NOTIF_ID_VALID:
// the notification's tid was valid when the notification arrived, but the
// task may have died and the number been reused since; a read is only
// trusted if the notification is still pending afterwards (the task cannot
// come back, so the pid named it throughout). Every write is preceded by
// the same check. What remains is a window of a few microseconds between
// that check and the write, in which the task would have to be killed and
// its pid reused by another process of the same user (process_vm_writev
// needs ptrace access): seccomp_unotify(2) accepts the same window for
// /proc/PID/mem.
//
// process_vm_readv/writev honour page protections as copy_from_user and
// copy_to_user do (a write into read-only memory is EFAULT), which
// /proc/PID/mem does not.

// readAttr is read without the validity check: the bpf(2) attr, read
// first of all. Nothing is done with what it says before c.validate runs
// (c.do and the next read or write check), so one ioctl covers it and the
// read after it.
func (c *call) readAttr(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if addr >= userTop || uint64(len(b)) > userTop-addr {
		return unix.EFAULT
	}
	local := unix.Iovec{Base: &b[0]}
	local.SetLen(len(b))
	remote := unix.RemoteIovec{Base: uintptr(addr), Len: len(b)}
	n, err := processVM(unix.SYS_PROCESS_VM_READV, c.tid, &local, &remote)
	c.dirty = true
	if err == unix.ESRCH {
		return errTaskGone
	}
	if err != nil || n != len(b) {
		// Refusing is harmless whoever the pid names now.
		return unix.EFAULT
	}
	return nil
}

// validate checks the notification if something was read since the last
// check.
func (c *call) validate() error {
	if !c.dirty {
		return nil
	}
	if err := c.s.ans.valid(c.id); err != nil {
		return err
	}
	c.dirty = false
	return nil
}

// do sends a request to bpfd on the call's behalf, once what the call read
// from the task is known to be the task's.
func (c *call) do(cmd wire.Cmd, attr []byte, fds []int, out []byte, data ...[]byte) (rawReply, error) {
	if err := c.validate(); err != nil {
		return rawReply{}, err
	}
	return c.s.conn.do(cmd, attr, fds, out, data...)
}

// read fills b from the process's memory at addr. EFAULT (as the kernel's
// copy_from_user) for an address that is not readable in full, errTaskGone
// if the task died.
func (c *call) read(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if addr >= userTop || uint64(len(b)) > userTop-addr || len(b) > maxRemoteIO {
		return unix.EFAULT
	}
	local := unix.Iovec{Base: &b[0]}
	local.SetLen(len(b))
	remote := unix.RemoteIovec{Base: uintptr(addr), Len: len(b)}
	n, err := processVM(unix.SYS_PROCESS_VM_READV, c.tid, &local, &remote)
	if err == unix.ESRCH {
		return errTaskGone
	}
	if verr := c.s.ans.valid(c.id); verr != nil {
		return verr
	}
	c.dirty = false
	if err != nil || n != len(b) {
		return unix.EFAULT
	}
	return nil
}

// write copies b into the process's memory at addr (EFAULT, errTaskGone as
// read).
func (c *call) write(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if addr >= userTop || uint64(len(b)) > userTop-addr || len(b) > maxRemoteIO {
		return unix.EFAULT
	}
	if err := c.s.ans.valid(c.id); err != nil {
		return err
	}
	c.dirty = false
	local := unix.Iovec{Base: &b[0]}
	local.SetLen(len(b))
	remote := unix.RemoteIovec{Base: uintptr(addr), Len: len(b)}
	n, err := processVM(unix.SYS_PROCESS_VM_WRITEV, c.tid, &local, &remote)
	if err == unix.ESRCH {
		return errTaskGone
	}
	if err != nil || n != len(b) {
		return unix.EFAULT
	}
	return nil
}

// processVM is process_vm_readv/writev with one iovec on each side,
// without the allocation of the x/sys wrappers' slice conversions.
func processVM(nr uintptr, pid int, local *unix.Iovec, remote *unix.RemoteIovec) (int, error) {
	r, _, e := unix.Syscall6(nr, uintptr(pid), uintptr(unsafe.Pointer(local)), 1,
		uintptr(unsafe.Pointer(remote)), 1, 0)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

// read2 is read of two buffers in one system call (empty ones are
// skipped).
func (c *call) read2(addr1 uint64, b1 []byte, addr2 uint64, b2 []byte) error {
	if len(b1) == 0 {
		return c.read(addr2, b2)
	}
	if len(b2) == 0 {
		return c.read(addr1, b1)
	}
	for _, r := range [2]struct {
		a uint64
		n int
	}{{addr1, len(b1)}, {addr2, len(b2)}} {
		if r.a >= userTop || uint64(r.n) > userTop-r.a || r.n > maxRemoteIO {
			return unix.EFAULT
		}
	}
	var local [2]unix.Iovec
	local[0] = unix.Iovec{Base: &b1[0]}
	local[0].SetLen(len(b1))
	local[1] = unix.Iovec{Base: &b2[0]}
	local[1].SetLen(len(b2))
	remote := [2]unix.RemoteIovec{{Base: uintptr(addr1), Len: len(b1)}, {Base: uintptr(addr2), Len: len(b2)}}
	r, _, e := unix.Syscall6(unix.SYS_PROCESS_VM_READV, uintptr(c.tid), uintptr(unsafe.Pointer(&local[0])), 2,
		uintptr(unsafe.Pointer(&remote[0])), 2, 0)
	if e == unix.ESRCH {
		return errTaskGone
	}
	if err := c.s.ans.valid(c.id); err != nil {
		return err
	}
	c.dirty = false
	if e != 0 || int(r) != len(b1)+len(b2) {
		return unix.EFAULT
	}
	return nil
}

// write32 stores a u32 at addr (the kernel's put_user of an output field).
func (c *call) write32(addr uint64, v uint32) error {
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	return c.write(addr, b[:])
}

// readString reads a NUL-terminated string of at most max bytes (the NUL
// included) at addr, as strncpy_from_user: EFAULT if it is not readable up
// to its NUL, ENAMETOOLONG if no NUL comes within max bytes. It reads page
// by page so that a string ending just before an unmapped page is fine.
func (c *call) readString(addr uint64, max int) (string, error) {
	if addr == 0 || addr >= userTop {
		return "", unix.EFAULT
	}
	buf := c.scratch(max)
	n := 0
	for n < max {
		chunk := int(4096 - (addr+uint64(n))%4096)
		chunk = min(chunk, max-n)
		if err := c.read(addr+uint64(n), buf[n:n+chunk]); err != nil {
			return "", err
		}
		for i := n; i < n+chunk; i++ {
			if buf[i] == 0 {
				return string(buf[:i]), nil
			}
		}
		n += chunk
	}
	return "", unix.ENAMETOOLONG
}

package bpfemu

import (
	"encoding/binary"
	"os"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/bpfemu/internal/emutest"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
)

// selfAnswerer stands in for the seccomp listener when the "traced task"
// is the test process itself: notifications are always valid, and a
// descriptor "installed in the task" is a duplicate in this process, as
// SECCOMP_IOCTL_NOTIF_ADDFD would make it in the task.
type selfAnswerer struct {
	mu  sync.Mutex
	fds []int // installed, for the leak check
}

func (f *selfAnswerer) valid(uint64) error                      { return nil }
func (f *selfAnswerer) respond(uint64, int64, unix.Errno) error { return nil }
func (f *selfAnswerer) allow(uint64) error                      { return nil }
func (f *selfAnswerer) respondFD(_ uint64, src int, cloexec bool) (int, error) {
	cmd := unix.F_DUPFD
	if cloexec {
		cmd = unix.F_DUPFD_CLOEXEC
	}
	fd, err := unix.FcntlInt(uintptr(src), cmd, 0)
	if err != nil {
		return -1, err.(unix.Errno)
	}
	f.mu.Lock()
	f.fds = append(f.fds, fd)
	f.mu.Unlock()
	return fd, nil
}

// harness runs the supervisor's handlers on calls "made" by the test
// process itself: its memory is read and written with process_vm_readv and
// process_vm_writev, its fds resolved with pidfd_getfd and kcmp, exactly
// as for a traced process, without seccomp.
type harness struct {
	s   *Supervisor
	d   *emutest.Daemon
	ans *selfAnswerer
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	d := emutest.StartDaemon(t)
	s, err := New(&Config{Socket: d.Socket})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{s: s, d: d, ans: &selfAnswerer{}}
	s.ans = h.ans
	t.Cleanup(func() { s.Close() })
	return h
}

// syscall makes the supervisor answer syscall nr with args as if this
// process had made it, and returns what the process would see.
func (h *harness) syscall(nr int32, args ...uint64) (int64, unix.Errno) {
	c := h.s.callPool.Get().(*call)
	defer h.s.callPool.Put(c)
	c.notif = seccomp.Notif{ID: 1, PID: uint32(os.Getpid()), Data: seccomp.Data{NR: nr, Arch: unix.AUDIT_ARCH_X86_64}}
	copy(c.notif.Data.Args[:], args)
	c.start()
	var val int64
	var err error
	if nr == unix.SYS_BPF {
		val, err = c.bpf()
	} else {
		val, err = c.fs()
	}
	switch {
	case err == nil || err == errAnswered:
		return val, 0
	case err == errContinue:
		r, _, e := unix.Syscall6(uintptr(nr), uintptr(args0(args, 0)), uintptr(args0(args, 1)),
			uintptr(args0(args, 2)), uintptr(args0(args, 3)), uintptr(args0(args, 4)), uintptr(args0(args, 5)))
		return int64(r), e
	}
	return 0, errnoOf(err)
}

func args0(a []uint64, i int) uint64 {
	if i < len(a) {
		return a[i]
	}
	return 0
}

// bpfFunc makes one bpf(2) call: cmd, the attr in memory, the size.
type bpfFunc func(cmd int, attr []byte, size int) (int, unix.Errno)

// kernelBPF is the real system call.
func kernelBPF(cmd int, attr []byte, size int) (int, unix.Errno) {
	var p unsafe.Pointer
	if len(attr) > 0 {
		p = unsafe.Pointer(&attr[0])
	}
	r, _, e := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(p), uintptr(size))
	runtime.KeepAlive(attr)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// bpf is the emulated system call.
func (h *harness) bpf(cmd int, attr []byte, size int) (int, unix.Errno) {
	var p uint64
	if len(attr) > 0 {
		p = addr(attr)
	}
	r, e := h.syscall(unix.SYS_BPF, uint64(cmd), p, uint64(size))
	runtime.KeepAlive(attr)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// addr is the address of b's first byte (b must be heap memory: the
// garbage collector does not move it).
func addr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func put64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
func get32(b []byte, off int) uint32    { return binary.LittleEndian.Uint32(b[off:]) }

// requireKernelBPF skips unless bpf(2) works for this process (root).
func requireKernelBPF(t testing.TB) {
	t.Helper()
	a := make([]byte, 128)
	put32(a, mcMapType, mapArray)
	put32(a, mcKeySize, 4)
	put32(a, mcValueSize, 4)
	put32(a, mcMaxEntries, 1)
	fd, e := kernelBPF(cmdMapCreate, a, 128)
	if e != 0 {
		t.Skipf("the kernel oracle needs bpf(2) (root): %v", e)
	}
	unix.Close(fd)
}

// unsafePointer is unsafe.Pointer for test helpers that pass addresses.
func unsafePointer(p *byte) unsafe.Pointer { return unsafe.Pointer(p) }

package seccomp

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/seccomp/internal/compat"
)

// escapeRoles are the child roles of the escape tests: each tries one
// route around a policy from inside a filtered process and prints what
// happened, one "name result" line per attempt.
var escapeRoles = map[string]func() int{
	"int80-getpid":     roleInt80Getpid,
	"int80-socketcall": roleInt80Socketcall,
	"iouring":          roleIOUring,
	"stack-allow":      roleStackAllow,
	"stack-errno":      roleStackErrno,
	"nested-listener":  roleNestedListener,
	"ptrace":           rolePtrace,
	"euid":             func() int { fmt.Printf("euid %d\n", os.Geteuid()); return 0 },
	"tsync":            roleTSYNC,
	"start-as-nobody":  roleStartAsNobody,
}

// errName is "ok" for nil, else the errno's name.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(unix.Errno); ok {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// int80 runs an i386 syscall and prints its result, or "fault" if the
// kernel has no compat entry point (the instruction faults before any
// syscall, so no filter could see it).
func int80(name string, nr, a1, a2, a3 uintptr) {
	debug.SetPanicOnFault(true)
	defer func() {
		if recover() != nil {
			fmt.Printf("%s fault\n", name)
		}
	}()
	r := int32(compat.Int80(nr, a1, a2, a3))
	if r < 0 {
		fmt.Printf("%s %s\n", name, unix.ErrnoName(unix.Errno(-r)))
		return
	}
	fmt.Printf("%s ok\n", name)
}

func roleInt80Getpid() int {
	int80("int80-getpid", compat.I386Getpid, 0, 0, 0)
	return 0
}

// roleInt80Socketcall calls socketcall(SYS_SOCKET, args) with args
// pointing at {AF_INET6, SOCK_DGRAM, 0} in a 32-bit address: the i386
// route to socket(2). (If the kernel has the entry point, the filter
// kills the process before the pointer matters.)
func roleInt80Socketcall() int {
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_32BIT)
	if err != nil {
		fmt.Printf("int80-socketcall mmap %v\n", err)
		return 1
	}
	args := (*[3]uint32)(unsafe.Pointer(&mem[0]))
	args[0], args[1], args[2] = unix.AF_INET6, unix.SOCK_DGRAM, 0
	int80("int80-socketcall", compat.I386Socketcall, compat.SysSocket, uintptr(unsafe.Pointer(&mem[0])), 0)
	return 0
}

// io_uring, by hand: enough of liburing to submit one IORING_OP_SOCKET.
const (
	ioringOpSocket     = 45
	ioringEnterGetevts = 1
	ioringOffSQRing    = 0
	ioringOffCQRing    = 0x8000000
	ioringOffSQEs      = 0x10000000
)

type ioSqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type ioCqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type ioUringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  ioSqringOffsets
	CQOff                                                                  ioCqringOffsets
}

type ioUringSQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	RWFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   uint32
	Addr3       uint64
	Pad         uint64
}

// roleIOUring tries io_uring's three entry points, and where the ring can
// be set up, creates an AF_INET6 socket through IORING_OP_SOCKET, which no
// seccomp filter ever sees.
func roleIOUring() int {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, ^uintptr(0), 0, 0, 0, 0, 0)
	fmt.Printf("io_uring_enter %s\n", errName(errnoOrNil(e)))
	_, _, e = unix.Syscall6(unix.SYS_IO_URING_REGISTER, ^uintptr(0), 0, 0, 0, 0, 0)
	fmt.Printf("io_uring_register %s\n", errName(errnoOrNil(e)))
	var p ioUringParams
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	fmt.Printf("io_uring_setup %s\n", errName(errnoOrNil(e)))
	if e != 0 {
		return 0
	}
	defer unix.Close(int(fd))
	sq, err := unix.Mmap(int(fd), ioringOffSQRing, int(p.SQOff.Array+p.SQEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		fmt.Printf("iouring-socket mmap-sq %v\n", err)
		return 0
	}
	cq, err := unix.Mmap(int(fd), ioringOffCQRing, int(p.CQOff.Cqes+p.CQEntries*16), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		fmt.Printf("iouring-socket mmap-cq %v\n", err)
		return 0
	}
	sqes, err := unix.Mmap(int(fd), ioringOffSQEs, int(p.SQEntries)*int(unsafe.Sizeof(ioUringSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		fmt.Printf("iouring-socket mmap-sqes %v\n", err)
		return 0
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	sqe := (*ioUringSQE)(unsafe.Pointer(&sqes[0]))
	*sqe = ioUringSQE{Opcode: ioringOpSocket, Fd: unix.AF_INET6, Off: unix.SOCK_DGRAM, UserData: 7}
	tail := *u32(sq, p.SQOff.Tail)
	mask := *u32(sq, p.SQOff.RingMask)
	*(*uint32)(unsafe.Pointer(&sq[p.SQOff.Array+4*(tail&mask)])) = 0
	*u32(sq, p.SQOff.Tail) = tail + 1
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, fd, 1, 1, ioringEnterGetevts, 0, 0); e != 0 {
		fmt.Printf("iouring-socket enter %s\n", unix.ErrnoName(e))
		return 0
	}
	head := *u32(cq, p.CQOff.Head)
	cqe := cq[p.CQOff.Cqes+16*(head&*u32(cq, p.CQOff.RingMask)):]
	res := int32(*u32(cqe, 8))
	if res < 0 {
		fmt.Printf("iouring-socket %s\n", unix.ErrnoName(unix.Errno(-res)))
		return 0
	}
	family, err := unix.GetsockoptInt(int(res), unix.SOL_SOCKET, unix.SO_DOMAIN)
	unix.Close(int(res))
	if err != nil || family != unix.AF_INET6 {
		fmt.Printf("iouring-socket family %d %v\n", family, err)
		return 0
	}
	fmt.Println("iouring-socket ok")
	return 0
}

func errnoOrNil(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// installOwn installs a classic-BPF filter of the process's own with
// seccomp(2) and flags, returning the new listener (if asked) or 0.
func installOwn(prog []unix.SockFilter, flags uintptr) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// probeSocket6 prints the outcome of socket(AF_INET6) and socket(AF_INET).
func probeSocket(name string, family int) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	fmt.Printf("%s %s\n", name, errName(err))
}

// roleStackAllow stacks a filter that allows everything: the policy still
// decides (stacking can only restrict).
func roleStackAllow() int {
	_, err := installOwn([]unix.SockFilter{{Code: bpfRetK, K: unix.SECCOMP_RET_ALLOW}}, unix.SECCOMP_FILTER_FLAG_TSYNC)
	fmt.Printf("stack-install %s\n", errName(err))
	probeSocket("socket-inet6", unix.AF_INET6)
	probeSocket("socket-inet", unix.AF_INET)
	return 0
}

// roleStackErrno stacks a filter failing socket(2) with EACCES: it takes
// effect (a stacked filter restricts further).
func roleStackErrno() int {
	prog := []unix.SockFilter{
		{Code: bpfLdWAbs, K: offsetNR},
		{Code: bpfJeqK, Jt: 0, Jf: 1, K: unix.SYS_SOCKET},
		{Code: bpfRetK, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)},
		{Code: bpfRetK, K: unix.SECCOMP_RET_ALLOW},
	}
	_, err := installOwn(prog, unix.SECCOMP_FILTER_FLAG_TSYNC)
	fmt.Printf("stack-install %s\n", errName(err))
	probeSocket("socket-inet6", unix.AF_INET6)
	probeSocket("socket-inet", unix.AF_INET)
	return 0
}

// nestedListener installs, on the calling goroutine's own thread only (no
// TSYNC), a filter sending socket(2) to a listener of its own. If that
// works, another thread answers every notification with "continue" and
// socket(AF_INET6) is tried on the filtered thread: the kernel notifies
// only the most recently installed filter's listener, so the outer policy
// never sees it. It prints "<name>-install" and, if installed,
// "<name>-nested-socket-inet6".
func nestedListener(name string) {
	prog := []unix.SockFilter{
		{Code: bpfLdWAbs, K: offsetNR},
		{Code: bpfJeqK, Jt: 0, Jf: 1, K: unix.SYS_SOCKET},
		{Code: bpfRetK, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: bpfRetK, K: unix.SECCOMP_RET_ALLOW},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // this thread only; it ends with the goroutine
		lfd, err := installOwn(prog, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER)
		fmt.Printf("%s-install %s\n", name, errName(err))
		if err != nil {
			return
		}
		l, err := NewListener(lfd)
		if err != nil {
			fmt.Printf("%s-listener %v\n", name, err)
			return
		}
		defer l.Close()
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() { // another goroutine, so another thread: not under the new filter
			defer close(served)
			l.Serve(ctx, func(*Notif, *Task) Verdict { return Allow })
		}()
		probeSocket(name+"-nested-socket-inet6", unix.AF_INET6)
		cancel()
		<-served
	}()
	<-done
}

// roleNestedListener tries the nested-listener route twice: while the
// supervisor's listener is alive (the kernel itself refuses a second
// listener in a filter chain: EBUSY), and, after a line on stdin, once the
// test has closed the supervisor's listener (the kernel then forgets it,
// routed syscalls fail with ENOSYS, and only bpfd's filter stands between
// the process and a listener of its own).
func roleNestedListener() int {
	probeSocket("socket-inet6", unix.AF_INET6)
	nestedListener("live")
	bufio.NewReader(os.Stdin).ReadString('\n')
	probeSocket("detached-socket-inet6", unix.AF_INET6)
	nestedListener("detached")
	return 0
}

// rolePtrace tries the routes into a sibling process ($BPFD_SIBLING_PID,
// same uid, not filtered): PTRACE_SEIZE, process_vm_readv, opening its
// /proc/PID/mem.
func rolePtrace() int {
	pid, err := strconv.Atoi(os.Getenv("BPFD_SIBLING_PID"))
	if err != nil {
		fmt.Println("ptrace no sibling")
		return 1
	}
	err = unix.PtraceSeize(pid)
	if err == nil {
		unix.PtraceDetach(pid)
	}
	fmt.Printf("ptrace-seize %s\n", errName(err))
	var b [8]byte
	local := []unix.Iovec{{Base: &b[0], Len: 8}}
	remote := []unix.RemoteIovec{{Base: uintptr(0x400000), Len: 8}}
	_, err = unix.ProcessVMReadv(pid, local, remote, 0)
	// EFAULT means the call was allowed (the address is just not mapped).
	fmt.Printf("process_vm_readv %s\n", errName(err))
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err == nil {
		f.Close()
	}
	var pe *os.PathError
	if ok := asPathError(err, &pe); ok {
		err = pe.Err
	}
	fmt.Printf("proc-mem %s\n", errName(err))
	return 0
}

func asPathError(err error, pe **os.PathError) bool {
	p, ok := err.(*os.PathError)
	if ok {
		*pe = p
	}
	return ok
}

// roleTSYNC checks that Install filters every thread: threads that exist
// before it (locked, waiting) and threads made after. It routes getppid
// and serves its own listener from a goroutine (ioctl and poll are not
// routed), denying with EACCES, then makes every thread call getppid and
// reads each task's Seccomp mode from /proc.
func roleTSYNC() int {
	const before, after = 4, 4
	type req struct{ done chan string }
	var wg sync.WaitGroup
	start := func(n int, name string, ready *sync.WaitGroup, reqs []chan req) {
		for i := range n {
			ready.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				ready.Done()
				r := <-reqs[i]
				_, _, e := unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
				r.done <- fmt.Sprintf("%s%d %s tid=%d", name, i, errName(errnoOrNil(e)), unix.Gettid())
			}()
		}
	}
	mk := func(n int) []chan req {
		c := make([]chan req, n)
		for i := range c {
			c[i] = make(chan req)
		}
		return c
	}
	taskIDs := func() map[string]bool {
		ents, _ := os.ReadDir("/proc/self/task")
		m := map[string]bool{}
		for _, e := range ents {
			m[e.Name()] = true
		}
		return m
	}
	var ready sync.WaitGroup
	pre := mk(before)
	start(before, "before", &ready, pre)
	ready.Wait()
	old := taskIDs()
	lfd, err := Install([]uint32{unix.SYS_GETPPID}, false)
	if err != nil {
		fmt.Printf("install %v\n", err)
		return 1
	}
	l, err := NewListener(lfd)
	if err != nil {
		fmt.Printf("listener %v\n", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		l.Serve(ctx, func(*Notif, *Task) Verdict { return Deny(unix.EACCES) })
	}()
	post := mk(after)
	start(after, "after", &ready, post)
	ready.Wait()
	var lines []string
	for _, chans := range [][]chan req{pre, post} {
		for _, c := range chans {
			r := req{done: make(chan string)}
			c <- r
			lines = append(lines, <-r.done)
		}
	}
	// The kernel's view: every live task of the process in mode 2
	// (filter). Tasks already exiting are left out: TSYNC skips them.
	ents, _ := os.ReadDir("/proc/self/task")
	modes := map[string]int{}
	var tasks []string
	var others []string
	for _, tk := range ents {
		b, err := os.ReadFile("/proc/self/task/" + tk.Name() + "/status")
		if err != nil {
			continue
		}
		var mode, state string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "Seccomp:":
				mode = f[1]
			case len(f) >= 2 && f[0] == "State:":
				state = f[1]
			}
		}
		if state == "X" || state == "Z" {
			continue
		}
		tasks = append(tasks, tk.Name())
		modes[mode]++
		if mode != "2" {
			others = append(others, tk.Name()+":"+mode+":"+state)
		}
	}
	if len(others) > 0 {
		fmt.Printf("not-filtered %s\n", strings.Join(others, ","))
	}
	newAfter := 0
	for _, line := range lines {
		i := strings.LastIndex(line, "tid=")
		if strings.HasPrefix(line, "after") && !old[line[i+4:]] {
			newAfter++
		}
		fmt.Println(line[:i-1])
	}
	fmt.Printf("tasks %d mode2 %d\n", len(tasks), modes["2"])
	fmt.Printf("after-threads-made-after-install %d\n", newAfter)
	cancel()
	<-served
	wg.Wait()
	l.Close()
	return 0
}

package prog

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
)

// Kernel helper numbers (enum bpf_func_id).
const (
	HelperMapLookupElem     = 1
	HelperMapUpdateElem     = 2
	HelperMapDeleteElem     = 3
	HelperKtimeGetNs        = 5
	HelperTracePrintk       = 6
	HelperGetPrandomU32     = 7
	HelperGetSmpProcessorID = 8
	HelperTailCall          = 12
	HelperGetCurrentPidTgid = 14
	HelperGetCurrentUidGid  = 15
	HelperGetCurrentComm    = 16
	HelperSkbLoadBytes      = 26 // socket filters only
	HelperKtimeGetBootNs    = 125
	HelperLoop              = 181
)

// HelperName returns the kernel's name of helper n ("bpf_map_lookup_elem"),
// or "" for a helper bpfd does not know.
func HelperName(n int32) string {
	if s := mapHelperName(n); s != "" {
		return s
	}
	switch n {
	case HelperMapLookupElem:
		return "bpf_map_lookup_elem"
	case HelperMapUpdateElem:
		return "bpf_map_update_elem"
	case HelperMapDeleteElem:
		return "bpf_map_delete_elem"
	case HelperKtimeGetNs:
		return "bpf_ktime_get_ns"
	case HelperTracePrintk:
		return "bpf_trace_printk"
	case HelperGetPrandomU32:
		return "bpf_get_prandom_u32"
	case HelperGetSmpProcessorID:
		return "bpf_get_smp_processor_id"
	case HelperTailCall:
		return "bpf_tail_call"
	case HelperGetCurrentPidTgid:
		return "bpf_get_current_pid_tgid"
	case HelperGetCurrentUidGid:
		return "bpf_get_current_uid_gid"
	case HelperGetCurrentComm:
		return "bpf_get_current_comm"
	case HelperKtimeGetBootNs:
		return "bpf_ktime_get_boot_ns"
	case HelperLoop:
		return "bpf_loop"
	}
	return typeHelperName(n)
}

// Task is the task a program runs on behalf of ("current"): the client
// that asked for a test run, or the process whose syscall a seccomp
// program decides.
type Task interface {
	// PidTgid returns tgid<<32 | pid (thread id), as
	// bpf_get_current_pid_tgid.
	PidTgid() uint64
	// UidGid returns gid<<32 | uid, as bpf_get_current_uid_gid.
	UidGid() uint64
	// Comm returns the task's name, NUL-padded.
	Comm() [16]byte
}

// StaticTask is a Task whose values are known in advance.
type StaticTask struct {
	PID, TGID, UID, GID uint32
	Name                [16]byte
}

// PidTgid implements Task.
func (t *StaticTask) PidTgid() uint64 { return uint64(t.TGID)<<32 | uint64(t.PID) }

// UidGid implements Task.
func (t *StaticTask) UidGid() uint64 { return uint64(t.GID)<<32 | uint64(t.UID) }

// Comm implements Task.
func (t *StaticTask) Comm() [16]byte { return t.Name }

// runCtx is the per-run state helpers reach through vm.Context.
type runCtx struct {
	p    *Program // the running program; changes on tail calls
	task Task
	// cpu is the CPU slot the invocation holds (package percpu):
	// per-CPU values are indexed by it, bpf_get_smp_processor_id
	// returns it. Also the hint for the next invocation's slot.
	cpu int
	pkt []byte // socket filters: the packet from the network header on
	// spin is the bpf_spin_lock word the run holds, nil for none
	// (spinlock.go).
	spin *uint32

	frame      []byte  // socket filters: the packet buffer (LD_ABS, load_bytes_relative)
	netOff     int     // socket filters: offset of the network header in frame
	macOff     int     // socket filters: offset of the MAC header in frame, -1 if none
	xdp        xdpBuff // XDP: the packet buffer, kept across repeats
	sockCookie uint64  // socket filters: the run's socket cookie (0: none yet)
	sockUID    uint32  // socket filters: the run's socket owner
	// sock is the run's socket as __sk_buff.sk shows it (struct
	// bpf_sock), read-only to the program; hasSock is false in live runs,
	// where sk is NULL.
	sock    [bpfSockSize]byte
	hasSock bool

	// gen numbers runs, so values cached by an earlier run are stale
	// without clearing the cache.
	gen uint64
	// inner are the inner maps this run looked up in maps of maps
	// (mapinmap.go), valid while innerGen == gen.
	inner    []innerRef
	innerGen uint64
	// values caches, per run, the region each hash-map value found by a
	// lookup got, so that looking the same entry up again reuses it.
	values [64]valueRegion
}

// valueRegion is one entry of runCtx.values.
type valueRegion struct {
	data  *byte // first byte of the value
	gen   uint64
	ptr   uint64 // the program's pointer to it
	write bool   // the region is writable
}

func errRet(e unix.Errno) uint64 { return uint64(-int64(e)) }

func (p *Program) helperTable() map[int32]interp.HelperFunc {
	t := p.baseHelpers()
	addTypeHelperFuncs(p.typ, t)
	for n, f := range mapHelperFuncs() {
		t[n] = f
	}
	t[HelperSpinLock], t[HelperSpinUnlock] = helperSpinLock, helperSpinUnlock // spinlock.go
	return t
}

// baseHelpers are the helpers every program type may call.
func (p *Program) baseHelpers() map[int32]interp.HelperFunc {
	return map[int32]interp.HelperFunc{
		HelperMapLookupElem:     helperLookup,
		HelperMapUpdateElem:     helperUpdate,
		HelperMapDeleteElem:     helperDelete,
		HelperKtimeGetNs:        helperKtime,
		HelperTracePrintk:       helperTracePrintk,
		HelperGetPrandomU32:     helperPrandom,
		HelperGetSmpProcessorID: helperSmpProcessorID,
		HelperTailCall:          helperTailCall,
		HelperGetCurrentPidTgid: helperPidTgid,
		HelperGetCurrentUidGid:  helperUidGid,
		HelperGetCurrentComm:    helperComm,
		HelperKtimeGetBootNs:    helperBootNs,
		HelperLoop:              helperLoop,
	}
}

// mapArg decodes a map pointer argument. The verifier guarantees its
// type; a bad value here is an internal error, reported as a fault.
func mapArg(vm *interp.VM, r uint64) (*runCtx, *MapRef, *mapSlot, error) {
	rc := vm.Context.(*runCtx)
	// The common case, inlined into the helper: one of the program's
	// own references (no inner-map bit, in range).
	if i := r - mapPtrTag; i < uint64(len(rc.p.refs)) && i < uint64(len(rc.p.slots)) {
		return rc, &rc.p.refs[i], &rc.p.slots[i], nil
	}
	return mapArgSlow(rc, r)
}

func mapArgSlow(rc *runCtx, r uint64) (*runCtx, *MapRef, *mapSlot, error) {
	if r&tagMask != mapPtrTag {
		return nil, nil, nil, errBadMapPtr
	}
	i := r &^ tagMask
	if i&innerBit != 0 {
		// An inner map a lookup in a map of maps returned (mapinmap.go).
		ref, sl, ok := innerArg(rc, i)
		if !ok {
			return nil, nil, nil, errBadMapPtr
		}
		return rc, ref, sl, nil
	}
	if i >= uint64(len(rc.p.refs)) {
		return nil, nil, nil, errBadMapPtr
	}
	return rc, &rc.p.refs[i], &rc.p.slots[i], nil
}

var errBadMapPtr = errnoInternal("helper called with an invalid map pointer")

type errnoInternal string

func (e errnoInternal) Error() string { return string(e) }

func helperLookup(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	rc, ref, sl, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	key, err := vm.Mem(r2, sl.keySize, false)
	if err != nil {
		return 0, err
	}
	if h := sl.hash; h != nil {
		v := h.ProgValue(rc.cpu, key)
		if v == nil {
			return 0, nil
		}
		return valuePointer(vm, rc, ref, v)
	}
	if sl.outer {
		return lookupInner(rc, ref, key), nil
	}
	if sl.static >= 0 {
		i := binary.NativeEndian.Uint32(key)
		if i >= sl.maxEntries {
			return 0, nil
		}
		off := uint64(i) * sl.stride
		if sl.percpu {
			off += uint64(rc.cpu) * sl.valStride
		}
		return interp.StaticPointer(sl.static, uint32(off)), nil
	}
	v := ref.Map.ProgLookup(rc.cpu, key)
	if v == nil {
		return 0, nil
	}
	return valuePointer(vm, rc, ref, v)
}

// valuePointer returns the program's pointer to map value v (a region
// with ref's access), reusing the one this run already got for it.
func valuePointer(vm *interp.VM, rc *runCtx, ref *MapRef, v []byte) (uint64, error) {
	data := unsafe.SliceData(v)
	e := &rc.values[(uintptr(unsafe.Pointer(data))>>3)%uintptr(len(rc.values))]
	if e.data == data && e.gen == rc.gen && e.write == ref.Write {
		return e.ptr, nil
	}
	ptr, err := vm.AddRegionAccess(v, ref.access())
	if err != nil {
		return 0, err
	}
	*e = valueRegion{data: data, gen: rc.gen, ptr: ptr, write: ref.Write}
	return ptr, nil
}

func helperUpdate(vm *interp.VM, r1, r2, r3, r4, _ uint64) (uint64, error) {
	_, ref, sl, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	key, err := vm.Mem(r2, sl.keySize, false)
	if err != nil {
		return 0, err
	}
	val, err := vm.Mem(r3, sl.valueSize, false)
	if err != nil {
		return 0, err
	}
	if err := ref.Map.ProgUpdateOn(vm.Context.(*runCtx).cpu, key, val, r4); err != nil {
		return errRet(errnoOf(err)), nil
	}
	return 0, nil
}

func helperDelete(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	_, ref, sl, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	key, err := vm.Mem(r2, sl.keySize, false)
	if err != nil {
		return 0, err
	}
	if err := ref.Map.ProgDeleteOn(vm.Context.(*runCtx).cpu, key); err != nil {
		return errRet(errnoOf(err)), nil
	}
	return 0, nil
}

func helperKtime(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano()), nil
}

func helperBootNs(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano()), nil
}

func helperPrandom(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
	return uint64(rand.Uint32()), nil
}

// helperSmpProcessorID returns the CPU slot the invocation holds: no
// other invocation runs on it meanwhile, as on a kernel CPU with
// preemption disabled.
func helperSmpProcessorID(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
	return uint64(vm.Context.(*runCtx).cpu), nil
}

func helperTailCall(vm *interp.VM, _, r2, r3, _, _ uint64) (uint64, error) {
	rc, ref, _, err := mapArg(vm, r2)
	if err != nil {
		return 0, err
	}
	pa, ok := ref.Map.(*maps.ProgArray)
	if !ok || rc.p.env.Programs == nil {
		return errRet(unix.ENOENT), nil
	}
	id := pa.Prog(uint32(r3))
	if id == 0 {
		return errRet(unix.ENOENT), nil
	}
	target := rc.p.env.Programs(id)
	if target == nil || target.typ != rc.p.typ {
		return errRet(unix.ENOENT), nil
	}
	if !vm.TailCall(target.code) {
		return errRet(unix.ENOENT), nil
	}
	rc.p = target
	return 0, nil
}

func currentTask(vm *interp.VM) Task {
	if rc, ok := vm.Context.(*runCtx); ok && rc.task != nil {
		return rc.task
	}
	return noTask
}

var noTask = &StaticTask{}

func helperPidTgid(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
	return currentTask(vm).PidTgid(), nil
}

func helperUidGid(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
	return currentTask(vm).UidGid(), nil
}

func helperComm(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	buf, err := vm.Mem(r1, int(uint32(r2)), true)
	if err != nil {
		return 0, err
	}
	if len(buf) == 0 {
		return errRet(unix.EINVAL), nil
	}
	comm := currentTask(vm).Comm()
	n := copy(buf[:len(buf)-1], comm[:])
	for i := 0; i < n; i++ {
		if buf[i] == 0 {
			n = i
			break
		}
	}
	clear(buf[n:])
	return 0, nil
}

// helperLoop is bpf_loop(nr_loops, callback_fn, callback_ctx, flags): it
// calls the callback subprogram with (index, ctx) until it returns 1 or
// nr_loops calls were made, and returns the number of calls.
func helperLoop(vm *interp.VM, r1, r2, r3, r4, _ uint64) (uint64, error) {
	const maxLoops = 1 << 23 // BPF_MAX_LOOPS
	if r4 != 0 {
		return errRet(unix.EINVAL), nil
	}
	if r1 > maxLoops {
		return errRet(unix.E2BIG), nil
	}
	if r2&tagMask != funcPtrTag {
		return 0, errBadFuncPtr
	}
	pc := int(r2 &^ tagMask)
	var i uint64
	for i = 0; i < r1; {
		ret, err := vm.Call(pc, i, r3)
		if err != nil {
			return 0, err
		}
		i++
		if ret == 1 {
			break
		}
	}
	return i, nil
}

var errBadFuncPtr = errnoInternal("bpf_loop called with an invalid callback")

// helperTracePrintk is bpf_trace_printk(fmt, fmt_size, a1, a2, a3).
func helperTracePrintk(vm *interp.VM, r1, r2, r3, r4, r5 uint64) (uint64, error) {
	f, err := vm.Mem(r1, int(uint32(r2)), false)
	if err != nil {
		return 0, err
	}
	rc := vm.Context.(*runCtx)
	msg, ok := formatPrintk(vm, f, [3]uint64{r3, r4, r5})
	if !ok {
		return errRet(unix.EINVAL), nil
	}
	if rc.p.env.Trace != nil {
		if n, ok := rc.p.trace.allow(time.Now()); ok {
			if n > 0 {
				rc.p.env.Trace(rc.p.name, "("+strconv.Itoa(n)+" trace lines suppressed)")
			}
			rc.p.env.Trace(rc.p.name, msg)
		}
	}
	return uint64(len(msg)), nil
}

// formatPrintk formats like the kernel's bpf_trace_printk: the format must
// be NUL-terminated inside its size, take at most three arguments, and use
// only %d %i %u %x %X %c %s %p with l/ll modifiers and %%.
func formatPrintk(vm *interp.VM, f []byte, args [3]uint64) (string, bool) {
	end := -1
	for i, c := range f {
		if c == 0 {
			end = i
			break
		}
	}
	if end < 0 {
		return "", false
	}
	f = f[:end]
	out := make([]byte, 0, len(f)+32)
	argi := 0
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(f) {
			return "", false
		}
		if f[i] == '%' {
			out = append(out, '%')
			continue
		}
		if argi >= 3 {
			return "", false
		}
		long := 0
		for i < len(f) && f[i] == 'l' && long < 2 {
			long++
			i++
		}
		if i >= len(f) {
			return "", false
		}
		a := args[argi]
		argi++
		switch f[i] {
		case 'd', 'i':
			if long == 0 {
				out = strconv.AppendInt(out, int64(int32(a)), 10)
			} else {
				out = strconv.AppendInt(out, int64(a), 10)
			}
		case 'u':
			if long == 0 {
				a = uint64(uint32(a))
			}
			out = strconv.AppendUint(out, a, 10)
		case 'x', 'X':
			if long == 0 {
				a = uint64(uint32(a))
			}
			s := strconv.FormatUint(a, 16)
			if f[i] == 'X' {
				s = upper(s)
			}
			out = append(out, s...)
		case 'c':
			if long != 0 {
				return "", false
			}
			out = append(out, byte(a))
		case 'p':
			out = append(out, "0x"...)
			out = strconv.AppendUint(out, a, 16)
		case 's':
			if long != 0 {
				return "", false
			}
			out = appendCString(vm, out, a)
		default:
			return "", false
		}
	}
	return string(out), true
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// appendCString appends the NUL-terminated string at ptr (at most 64
// bytes), or "(fault)" when it is not readable, as the kernel prints for a
// failed probe read.
func appendCString(vm *interp.VM, out []byte, ptr uint64) []byte {
	for i := uint64(0); i < 64; i++ {
		b, err := vm.Mem(ptr+i, 1, false)
		if err != nil {
			if i == 0 {
				return append(out, "(fault)"...)
			}
			return out
		}
		if b[0] == 0 {
			return out
		}
		out = append(out, b[0])
	}
	return out
}

// rateLimiter is a token bucket for trace output: a burst of 100 lines,
// refilled at 50 lines a second. Safe for concurrent use.
type rateLimiter struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

func newRateLimiter() *rateLimiter { return &rateLimiter{tokens: 100} }

// allow reports whether a line may go out now, and how many were
// suppressed since the last one that did.
func (r *rateLimiter) allow(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() {
		r.tokens = min(100, r.tokens+now.Sub(r.last).Seconds()*50)
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		return 0, false
	}
	r.tokens--
	n := r.suppressed
	r.suppressed = 0
	return n, true
}

// helperSkbLoadBytes is bpf_skb_load_bytes(skb, offset, to, len): it copies
// len packet bytes from offset (relative to the network header, where a
// socket filter's skb data starts) into to, or zeroes to and returns
// -EFAULT when they are not all in the packet.
func helperSkbLoadBytes(vm *interp.VM, _, r2, r3, r4, _ uint64) (uint64, error) {
	to, err := vm.Mem(r3, int(uint32(r4)), true)
	if err != nil {
		return 0, err
	}
	rc := vm.Context.(*runCtx)
	off, n := uint64(uint32(r2)), uint64(len(to))
	if off > uint64(len(rc.pkt)) || n > uint64(len(rc.pkt))-off || uint32(r2) > 1<<31-1 {
		clear(to)
		return errRet(unix.EFAULT), nil
	}
	copy(to, rc.pkt[off:off+n])
	return 0, nil
}

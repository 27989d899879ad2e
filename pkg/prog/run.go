package prog

import (
	"encoding/binary"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

func errnoOf(err error) unix.Errno { return errno.Of(err, unix.EINVAL) }

// Test-run packet sizes, as the 6.18 kernel's on x86-64 with 4 KiB pages
// (one page less headroom and the skb/xdp tail): a socket filter's packet
// must fit the skb's linear part; an XDP packet beyond its linear part goes
// into fragments the program cannot address directly, up to the frags
// limit.
const (
	skbMaxData   = 3712
	xdpMaxLinear = 3520
	xdpMaxData   = 73152
)

// ErrDataTooBig: an XDP test-run packet larger than the kernel can
// build (ENOMEM, as the kernel answers).
var ErrDataTooBig = errno.New(unix.ENOMEM, "test run packet larger than the kernel's XDP limit")

// MaxTestRunTime bounds the wall time of one TestRun's repeats: the
// daemon's cores are shared, so a huge Repeat stops there with
// ErrInterrupted, as the kernel's test run stops with EINTR when its
// caller is interrupted.
const MaxTestRunTime = 2 * time.Second

// ErrInterrupted: TestRun's repeats ran longer than MaxTestRunTime.
var ErrInterrupted = errno.New(unix.EINTR, "test run interrupted: repeats exceeded the time budget; ask for fewer")

// RunOptions are the inputs of a test run, as BPF_PROG_TEST_RUN's.
type RunOptions struct {
	// Data is the packet (socket filter, XDP): at least 14 bytes, an
	// Ethernet frame, as the kernel requires.
	Data []byte
	// Context is the context in: for Seccomp a struct seccomp_data (64
	// bytes); for socket filters an optional struct __sk_buff whose only
	// non-zero fields may be mark, priority and cb; for XDP an optional
	// struct xdp_md that must be zero. Nil means defaults.
	Context []byte
	// Repeat runs the program this many times (0 means 1); the result is
	// the last run's, the duration the mean.
	Repeat uint32
	// Task is "current" for the helpers that ask; nil means a task with
	// every id zero.
	Task Task
	// Yield, when not nil, is called between repeats. It may block (the
	// caller's scheduler, pkg/sched, runs other work meanwhile) and
	// returns how long it did: that time counts neither in the run's
	// Duration nor against MaxTestRunTime. A non-nil error stops the run
	// and TestRun returns it (e.g. the client that asked has gone).
	Yield func() (time.Duration, error)
}

// RunResult is a test run's output.
type RunResult struct {
	// Ret is r0 at exit (the kernel reports its low 32 bits).
	Ret uint64
	// DataOut is the packet after the run: for socket filters the
	// Ethernet header comes back zeroed, as the kernel's test run does.
	DataOut []byte
	// ContextOut is the context after the run.
	ContextOut []byte
	// Duration is the mean time of one run.
	Duration time.Duration
}

// MaxRegions is how many map values one run may address (each distinct
// hash-map value a lookup returns is one; repeated lookups of the same
// value reuse it; array values and globals cost none).
const MaxRegions = 1 << 16

func (p *Program) vm() *interp.VM {
	if vm, ok := p.vms.Get().(*interp.VM); ok {
		return vm
	}
	vm := interp.NewVM(&interp.VMConfig{MaxRegions: MaxRegions})
	vm.Context = &runCtx{}
	return vm
}

// TestRun runs p as BPF_PROG_TEST_RUN does: on a copy of opts.Data and
// opts.Context. It returns ErrDataSize or ErrCtxSize (EINVAL) for inputs
// the kernel would refuse, and an *interp.Fault if the run faults (which a
// verified program should never do).
func (p *Program) TestRun(opts *RunOptions) (*RunResult, error) {
	repeat := max(opts.Repeat, 1)
	switch p.typ {
	case SocketFilter, XDP:
		if len(opts.Data) < ethHdrLen {
			return nil, ErrDataSize
		}
		if p.typ == SocketFilter && len(opts.Data) > skbMaxData {
			return nil, ErrDataSize
		}
		if p.typ == XDP && len(opts.Data) > xdpMaxData {
			return nil, ErrDataTooBig
		}
		if p.typ == SocketFilter {
			// The kernel's skb test run pulls the network header of
			// IPv4 and IPv6 frames and fails when it is not there.
			l3 := len(opts.Data) - ethHdrLen
			switch uint16(opts.Data[12])<<8 | uint16(opts.Data[13]) {
			case 0x0800:
				if l3 < 20 {
					return nil, ErrDataSize
				}
			case 0x86dd:
				if l3 < 40 {
					return nil, ErrDataSize
				}
			}
		}
	case Seccomp:
		if len(opts.Data) != 0 {
			return nil, ErrDataSize
		}
		if len(opts.Context) != SeccompDataSize {
			return nil, ErrCtxSize
		}
	}
	if err := p.checkCtxIn(opts.Context); err != nil {
		return nil, err
	}
	vm := p.vm()
	defer p.vms.Put(vm)
	rc := vm.Context.(*runCtx)
	// Each run starts from the same input, as the kernel's repeat does.
	ctx := make([]byte, p.ctxSize+24)
	pkt := make([]byte, len(opts.Data))
	var ret uint64
	var waited time.Duration // in opts.Yield, left out of the run time
	// Short runs check in with opts.Yield every 16 repeats, long ones
	// (judged by the first) after each, so a slice ends close to its
	// length either way without a clock read per short run.
	stride := uint32(16)
	start := time.Now()
	for i := uint32(0); i < repeat; i++ {
		if i > 0 && opts.Yield != nil && i%stride == 0 {
			w, err := opts.Yield()
			if err != nil {
				return nil, err
			}
			waited += w
		}
		// Long runs check the budget after each repeat, short ones every
		// 64, so the cut comes close to MaxTestRunTime either way.
		if (stride == 1 || i&63 == 63) && i > 0 && time.Since(start)-waited > MaxTestRunTime {
			return nil, ErrInterrupted
		}
		rc.p, rc.task = p, opts.Task
		rc.gen++
		copy(pkt, opts.Data)
		clear(ctx)
		copy(ctx, opts.Context)
		r1, err := p.prepare(vm, ctx, pkt)
		if err != nil {
			return nil, err
		}
		ret, err = p.runOnSlot(vm, rc, r1)
		if err != nil {
			rc.pkt = nil
			return nil, err
		}
		if i == 0 && time.Since(start) > 20*time.Microsecond {
			stride = 1
		}
	}
	rc.pkt = nil
	elapsed := time.Since(start) - waited
	res := &RunResult{Ret: ret, Duration: elapsed / time.Duration(repeat)}
	switch p.typ {
	case SocketFilter:
		res.DataOut = make([]byte, len(pkt))
		copy(res.DataOut[ethHdrLen:], pkt[ethHdrLen:])
		res.ContextOut = ctx[:skbSize:skbSize]
	case XDP:
		res.DataOut = pkt
		res.ContextOut = ctx[:xdpSize:xdpSize]
		// The kernel reports data offsets, not pointers, in ctx out.
		clear(res.ContextOut[xdpData : xdpDataMeta+4])
	case Seccomp:
		res.ContextOut = ctx[:SeccompDataSize:SeccompDataSize]
	}
	return res, nil
}

// checkCtxIn refuses context input the kernel's test run refuses.
func (p *Program) checkCtxIn(in []byte) error {
	switch p.typ {
	case SocketFilter:
		if len(in) == 0 {
			return nil
		}
		if len(in) > skbSize {
			return ErrCtxSize
		}
		for i, c := range in {
			switch {
			case i >= skbMark && i < skbMark+4, i >= skbPriority && i < skbPriority+4,
				i >= skbCB && i < skbCB+20:
				continue
			}
			if c != 0 {
				return ErrCtxSize
			}
		}
	case XDP:
		if len(in) > xdpSize {
			return ErrCtxSize
		}
		for _, c := range in {
			if c != 0 {
				return ErrCtxSize
			}
		}
	}
	return nil
}

// prepare fills the context for one run and adds the regions the program
// addresses; it returns r1 (the context pointer).
func (p *Program) prepare(vm *interp.VM, ctx, pkt []byte) (uint64, error) {
	le := binary.LittleEndian
	switch p.typ {
	case SocketFilter:
		// The kernel's test run pulls the Ethernet header: the program
		// sees the packet from the network header on.
		le.PutUint32(ctx[skbLen:], uint32(len(pkt)-ethHdrLen))
		le.PutUint32(ctx[skbProtocol:], uint32(pkt[12])|uint32(pkt[13])<<8)
		le.PutUint32(ctx[skbIfindex:], 1)
		le.PutUint32(ctx[skbWireLen:], 0)
		vm.Context.(*runCtx).pkt = pkt[ethHdrLen:]
		return vm.AddRegion(ctx[:skbSize], true)
	case XDP:
		// The program addresses the linear part only; the rest stands
		// for the fragments (returned unchanged in data out).
		linear := pkt[:min(len(pkt), xdpMaxLinear)]
		data, err := vm.AddRegion(linear, true)
		if err != nil {
			return 0, err
		}
		le.PutUint32(ctx[xdpIngressIfindex:], 1)
		// Shadow pointer fields after the struct: context loads of
		// data, data_end and data_meta were rewritten to read them.
		le.PutUint64(ctx[xdpSize+0:], data)
		le.PutUint64(ctx[xdpSize+8:], data+uint64(len(linear)))
		le.PutUint64(ctx[xdpSize+16:], data)
		return vm.AddRegion(ctx[:xdpSize+24], false)
	default: // Seccomp: read-only struct seccomp_data
		return vm.AddRegion(ctx[:SeccompDataSize], false)
	}
}

// shadow offsets of the packet pointer fields, by context offset.
func shadowOffset(t Type, off int) (int, bool) {
	if t != XDP {
		return 0, false
	}
	switch off {
	case xdpData:
		return xdpSize, true
	case xdpDataEnd:
		return xdpSize + 8, true
	case xdpDataMeta:
		return xdpSize + 16, true
	}
	return 0, false
}

// RunSeccomp runs a Seccomp program on data (struct seccomp_data) for task
// and returns its SECCOMP_RET_* action word. It is the daemon's hot path
// for routed syscalls: no allocation once warm.
func (p *Program) RunSeccomp(data *[SeccompDataSize]byte, task Task) (uint32, error) {
	vm := p.vm()
	defer p.vms.Put(vm)
	rc := vm.Context.(*runCtx)
	rc.p, rc.task = p, task
	rc.gen++
	r1, err := vm.AddRegion(data[:], false)
	if err != nil {
		return 0, err
	}
	ret, err := p.runOnSlot(vm, rc, r1)
	rc.task = nil
	return uint32(ret), err
}

// runOnSlot runs one invocation holding a CPU slot of the program's pool
// (see package percpu), starting from the slot the VM's last invocation
// held.
func (p *Program) runOnSlot(vm *interp.VM, rc *runCtx, r1 uint64) (uint64, error) {
	pool := p.pool()
	rc.cpu = pool.Acquire(rc.cpu)
	ret, err := vm.Run(p.code, r1)
	pool.Release(rc.cpu)
	return ret, err
}

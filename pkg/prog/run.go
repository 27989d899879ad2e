package prog

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
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
	xdpMaxLinear = xdpFrameSize - xdpHeadroom - xdpTailroom // 3520
	xdpMaxData   = xdpMaxLinear + 17*xdpFragSize            // MAX_SKB_FRAGS pages
)

// ErrDataTooBig: an XDP test-run packet larger than the kernel can
// build (ENOMEM, as the kernel answers).
var ErrDataTooBig = errno.New(unix.ENOMEM, "test run packet larger than the kernel's XDP limit")

// ErrAttachTestRun: XDP programs for CPU maps and device maps
// (expected attach type BPF_XDP_CPUMAP / BPF_XDP_DEVMAP) cannot be test
// run, as in the kernel.
var ErrAttachTestRun = errno.New(unix.EINVAL, "test run of an XDP program for a CPU or device map")

// ErrNoDevice: a test-run context names an interface that does not exist
// in the daemon's network namespace.
var ErrNoDevice = errno.New(unix.ENODEV, "test run context names no interface")

// ErrCtxTail: a test-run context longer than the type's context has
// non-zero bytes past it (E2BIG, as the kernel's bpf_ctx_init).
var ErrCtxTail = errno.New(unix.E2BIG, "test run context has non-zero bytes past its struct")

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
	// Ethernet frame, as the kernel requires. For XDP with a context
	// whose data field is non-zero, the first data bytes are the
	// metadata in front of the frame.
	Data []byte
	// Context is the context in: for Seccomp a struct seccomp_data (64
	// bytes); for socket filters an optional struct __sk_buff whose only
	// non-zero fields may be mark, priority, ingress_ifindex, ifindex,
	// cb, tstamp, wire_len, gso_segs, gso_size and hwtstamp; for XDP an
	// optional struct xdp_md with data (the metadata length), data_end
	// (len(Data)), ingress_ifindex and rx_queue_index. Nil means
	// defaults. Bytes past the struct must be zero.
	Context []byte
	// Repeat runs the program this many times (0 means 1) on the same
	// packet and context, each run seeing what the previous one left, as
	// the kernel's repeat does; the result is the last run's, the
	// duration the mean.
	Repeat uint32
	// Task is "current" for the helpers that ask; nil means a task with
	// every id zero.
	Task Task
	// Yield, when not nil, is called between repeats, and within a run
	// every interp.YieldChunk instructions. It may block (the
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
	// Ethernet header comes back zeroed, as the kernel's test run does;
	// for XDP it starts at the metadata and includes the fragments.
	DataOut []byte
	// ContextOut is the context after the run, as the kernel writes it
	// back: the context in (or zeros) with the fields the kernel copies
	// out updated.
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
// opts.Context, Repeat times on the same buffers. It returns ErrDataSize,
// ErrCtxSize or ErrAttachTestRun (EINVAL), ErrDataTooBig (ENOMEM),
// ErrNoDevice (ENODEV) or ErrCtxTail (E2BIG) for inputs the kernel would
// refuse, ErrInterrupted when the repeats take too long, and an
// *interp.Fault if the run faults (which a verified program should never
// do).
func (p *Program) TestRun(opts *RunOptions) (*RunResult, error) {
	repeat := max(opts.Repeat, 1)
	if p.typ == XDP && (p.attach == AttachXDPCPUMap || p.attach == AttachXDPDevMap) {
		return nil, ErrAttachTestRun
	}
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
	vm := p.vm()
	defer p.vms.Put(vm)
	var waited time.Duration // in opts.Yield, left out of the run time
	if opts.Yield != nil {
		// One long run checks in too, every interp.YieldChunk
		// instructions.
		vm.SetYield(lockAwareYield(vm, func() error {
			w, err := opts.Yield()
			waited += w
			return err
		}))
		defer vm.SetYield(nil)
	}
	rc := vm.Context.(*runCtx)
	rc.frame, rc.pkt, rc.xdp, rc.netOff, rc.macOff = nil, nil, xdpBuff{}, 0, -1
	rc.sockCookie, rc.sockUID, rc.hasSock = 0, 0, false
	defer func() {
		rc.frame, rc.pkt, rc.task, rc.xdp = nil, nil, nil, xdpBuff{}
		vm.SetPacket(nil, 0, 0, -1)
	}()

	var ctx, ctxOut []byte
	var err error
	switch p.typ {
	case SocketFilter:
		if ctx, ctxOut, err = p.skbSetup(rc, vm, opts); err != nil {
			return nil, err
		}
	case XDP:
		if ctx, ctxOut, err = p.xdpSetup(rc, opts); err != nil {
			return nil, err
		}
	default: // Seccomp
		ctx = append([]byte(nil), opts.Context...)
	}

	var ret uint64
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
		r1, err := p.regions(vm, rc, ctx)
		if err != nil {
			return nil, err
		}
		ret, err = p.runOnSlot(vm, rc, r1)
		if err != nil {
			return nil, err
		}
		// A long first run (judged by the instructions it executed,
		// about 20 µs of interpretation, not by a clock that a loaded
		// machine or the race detector slows) yields after each run.
		if i == 0 && vm.Executed() > 4096 {
			stride = 1
		}
	}
	elapsed := time.Since(start) - waited
	res := &RunResult{Ret: ret, Duration: elapsed / time.Duration(repeat)}
	le := binary.LittleEndian
	switch p.typ {
	case SocketFilter:
		res.DataOut = make([]byte, len(rc.frame))
		copy(res.DataOut[ethHdrLen:], rc.frame[ethHdrLen:])
		// convert_skb_to___skb: the fields the kernel copies back.
		for _, f := range []int{skbMark, skbPriority, skbIngressIfindex, skbIfindex, skbGSOSegs} {
			copy(ctxOut[f:f+4], ctx[f:f+4])
		}
		copy(ctxOut[skbCB:skbCB+20], ctx[skbCB:skbCB+20])
		res.ContextOut = ctxOut
	case XDP:
		x := &rc.xdp
		res.DataOut = x.out()
		le.PutUint32(ctxOut[xdpData:], uint32(x.data-x.meta))
		le.PutUint32(ctxOut[xdpDataEnd:], uint32(x.end-x.meta))
		res.ContextOut = ctxOut
	case Seccomp:
		res.ContextOut = ctx[:SeccompDataSize:SeccompDataSize]
	}
	return res, nil
}

// ctxIn copies a context in into a buffer of size bytes; bytes past size
// must be zero (E2BIG otherwise, as the kernel's bpf_ctx_init).
func ctxIn(in []byte, size int) ([]byte, error) {
	out := make([]byte, size)
	copy(out, in)
	if len(in) > size {
		for _, c := range in[size:] {
			if c != 0 {
				return nil, ErrCtxTail
			}
		}
	}
	return out, nil
}

// skbSetup builds a socket filter's skb as bpf_prog_test_run_skb does:
// the frame goes through eth_type_trans on the loopback device (or the
// context's ifindex), and the __sk_buff fields a test run may set come
// from the context in. It returns the program's context and the context
// out (the context in, to be updated after the run).
func (p *Program) skbSetup(rc *runCtx, vm *interp.VM, opts *RunOptions) (ctx, ctxOut []byte, err error) {
	if ctxOut, err = ctxIn(opts.Context, skbSize); err != nil {
		return nil, nil, err
	}
	le := binary.LittleEndian
	for i, c := range ctxOut {
		switch {
		case i >= skbMark && i < skbMark+4, i >= skbPriority && i < skbIfindex+4,
			i >= skbCB && i < skbCB+20, i >= skbTstamp && i < skbGSOSegs+4,
			i >= skbGSOSize && i < skbGSOSize+4, i >= skbHwtstamp && i < skbHwtstamp+8:
			continue
		}
		if c != 0 {
			return nil, nil, ErrCtxSize
		}
	}
	frame := append([]byte(nil), opts.Data...)
	l3len := uint32(len(frame) - ethHdrLen)
	ifindex := uint32(1) // the loopback device
	if in := le.Uint32(ctxOut[skbIfindex:]); in > 1 {
		if _, err := net.InterfaceByIndex(int(in)); err != nil {
			return nil, nil, ErrNoDevice
		}
		ifindex = in
	}
	if wl := le.Uint32(ctxOut[skbWireLen:]); wl != 0 && (wl < l3len || wl > 65536) {
		return nil, nil, ErrCtxSize
	} else if wl == 0 {
		// cb->pkt_len: the skb's length unless the caller set it.
		le.PutUint32(ctxOut[skbWireLen:], l3len)
	}
	if le.Uint32(ctxOut[skbGSOSegs:]) > 65535 {
		return nil, nil, ErrCtxSize
	}
	ctx = make([]byte, skbSize+8) // the shadow sk pointer after it
	for _, f := range []int{skbMark, skbPriority, skbIngressIfindex, skbGSOSegs, skbGSOSize} {
		copy(ctx[f:f+4], ctxOut[f:f+4])
	}
	copy(ctx[skbCB:skbCB+20], ctxOut[skbCB:skbCB+20])
	le.PutUint32(ctx[skbLen:], l3len)
	le.PutUint32(ctx[skbIfindex:], ifindex)
	le.PutUint32(ctx[skbPktType:], pktType(frame, ifindex))
	proto := ethProtocol(frame)
	le.PutUint32(ctx[skbProtocol:], uint32(proto>>8)|uint32(proto&0xff)<<8)
	rc.frame, rc.pkt, rc.netOff, rc.macOff = frame, frame[ethHdrLen:], ethHdrLen, 0
	fillTestSock(&rc.sock, frame, proto)
	rc.hasSock = true
	// LD_ABS/LD_IND: skb->data and the network header are past the
	// Ethernet header, the MAC header at the frame's start.
	vm.SetPacket(frame, ethHdrLen, ethHdrLen, 0)
	return ctx, ctxOut, nil
}

// Socket values of a test run (bpf_prog_test_run_skb's socket: sk_alloc
// with AF_UNSPEC, sock_init_data, then the family and addresses of an IPv4
// or IPv6 packet).
const (
	afInet       = 2
	afInet6      = 10
	tcpClose     = 7 // sk_state after sock_init_data
	ethPIPv4     = 0x0800
	ethPIPv6     = 0x86dd
	ipv4SrcOff   = 12
	ipv6SrcOff   = 8
	ipv6AddrSize = 16
)

// fillTestSock fills struct bpf_sock as a socket filter's test run shows
// its socket: the family and addresses from the packet when it is IPv4 or
// IPv6 (proto is eth_type_trans's, host order), state TCP_CLOSE, no bound
// device, no ports, no receive queue (-1).
func fillTestSock(sk *[bpfSockSize]byte, frame []byte, proto uint16) {
	clear(sk[:])
	le := binary.LittleEndian
	l3 := frame[ethHdrLen:]
	switch proto {
	case ethPIPv4: // the test run made sure the header is there
		le.PutUint32(sk[sockFamily:], afInet)
		copy(sk[sockSrcIP4:sockSrcIP4+4], l3[ipv4SrcOff:ipv4SrcOff+4])
		copy(sk[sockDstIP4:sockDstIP4+4], l3[ipv4SrcOff+4:ipv4SrcOff+8])
	case ethPIPv6:
		le.PutUint32(sk[sockFamily:], afInet6)
		copy(sk[sockSrcIP6:sockSrcIP6+ipv6AddrSize], l3[ipv6SrcOff:ipv6SrcOff+ipv6AddrSize])
		copy(sk[sockDstIP6:sockDstIP6+ipv6AddrSize], l3[ipv6SrcOff+ipv6AddrSize:ipv6SrcOff+2*ipv6AddrSize])
	}
	le.PutUint32(sk[sockState:], tcpClose)
	le.PutUint32(sk[sockRxQueueMapping:], 0xffffffff) // -1
}

// Packet types (linux/if_packet.h).
const (
	packetHost      = 0
	packetBroadcast = 1
	packetMulticast = 2
	packetOtherHost = 3
)

// pktType is eth_type_trans's classification of the destination MAC for
// the receiving device: its own address is PACKET_HOST, its broadcast
// address PACKET_BROADCAST, other group addresses PACKET_MULTICAST,
// anything else PACKET_OTHERHOST. The loopback device's address and
// broadcast address are both all zeros.
func pktType(frame []byte, ifindex uint32) uint32 {
	dst := net.HardwareAddr(frame[0:6])
	own, bcast := make(net.HardwareAddr, 6), make(net.HardwareAddr, 6)
	if ifindex != 1 {
		if ifi, err := net.InterfaceByIndex(int(ifindex)); err == nil && len(ifi.HardwareAddr) == 6 {
			own = ifi.HardwareAddr
			bcast = deviceBroadcast(ifi.Name)
		}
	}
	switch {
	case string(dst) == string(own):
		return packetHost
	case dst[0]&1 == 0:
		return packetOtherHost
	case string(dst) == string(bcast):
		return packetBroadcast
	}
	return packetMulticast
}

// deviceBroadcast reads an interface's link-layer broadcast address.
func deviceBroadcast(name string) net.HardwareAddr {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "broadcast"))
	if err == nil {
		if a, err := net.ParseMAC(string(trimNL(b))); err == nil && len(a) == 6 {
			return a
		}
	}
	return net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// EtherTypes eth_type_trans gives frames whose type field is a length.
const (
	ethP8023    = 0x0001
	ethP8022    = 0x0004
	ethP8023Min = 0x0600
)

// ethProtocol is eth_type_trans's skb->protocol (host order): the
// EtherType, or for an 802.3 frame (a length below 0x600) ETH_P_802_3
// when the payload starts with 0xFFFF (raw IPX) and ETH_P_802_2 (LLC)
// otherwise.
func ethProtocol(frame []byte) uint16 {
	t := uint16(frame[12])<<8 | uint16(frame[13])
	if t >= ethP8023Min {
		return t
	}
	if len(frame) >= ethHdrLen+2 && frame[14] == 0xff && frame[15] == 0xff {
		return ethP8023
	}
	return ethP8022
}

// xdpSetup builds an XDP test run's buffer as bpf_prog_test_run_xdp
// does: headroom (less the metadata the context asks for), the linear
// part, fragments of a page each for the rest.
func (p *Program) xdpSetup(rc *runCtx, opts *RunOptions) (ctx, ctxOut []byte, err error) {
	if ctxOut, err = ctxIn(opts.Context, xdpSize); err != nil {
		return nil, nil, err
	}
	le := binary.LittleEndian
	size := len(opts.Data)
	ingress, rxq := uint32(1), uint32(0)
	metalen := 0
	if len(opts.Context) > 0 {
		data, end := le.Uint32(ctxOut[xdpData:]), le.Uint32(ctxOut[xdpDataEnd:])
		if le.Uint32(ctxOut[xdpDataMeta:]) != 0 || end != uint32(size) || data > end || data&3 != 0 || data > xdpMaxMeta {
			return nil, nil, ErrCtxSize
		}
		if le.Uint32(ctxOut[xdpEgressIfindex:]) != 0 {
			return nil, nil, ErrCtxSize
		}
		in, q := le.Uint32(ctxOut[xdpIngressIfindex:]), le.Uint32(ctxOut[xdpRxQueueIndex:])
		if in == 0 && q != 0 {
			return nil, nil, ErrCtxSize
		}
		if in != 0 {
			ifi, err := net.InterfaceByIndex(int(in))
			if err != nil {
				return nil, nil, ErrNoDevice
			}
			if int(q) >= rxQueues(ifi.Name) {
				return nil, nil, ErrCtxSize
			}
			ingress, rxq = in, q
		}
		metalen = int(data)
	}
	x := &rc.xdp
	x.buf = make([]byte, xdpFrameSize)
	x.meta = xdpHeadroom - metalen
	linear := min(size, xdpMaxLinear+metalen)
	copy(x.buf[x.meta:], opts.Data[:linear])
	x.data = xdpHeadroom
	x.end = x.meta + linear
	for rest := opts.Data[linear:]; len(rest) > 0; {
		n := min(len(rest), xdpFragSize)
		f := make([]byte, n, xdpFragSize)
		copy(f, rest[:n])
		x.frags = append(x.frags, f)
		rest = rest[n:]
	}
	ctx = make([]byte, xdpSize+24)
	le.PutUint32(ctx[xdpIngressIfindex:], ingress)
	le.PutUint32(ctx[xdpRxQueueIndex:], rxq)
	x.ctx = ctx
	return ctx, ctxOut, nil
}

// rxQueues counts an interface's receive queues.
func rxQueues(name string) int {
	m, _ := filepath.Glob(filepath.Join("/sys/class/net", name, "queues", "rx-*"))
	return max(len(m), 1)
}

// regions adds, for one run, the memory the program addresses and
// returns r1 (the context pointer). The buffers persist across repeats.
func (p *Program) regions(vm *interp.VM, rc *runCtx, ctx []byte) (uint64, error) {
	switch p.typ {
	case SocketFilter:
		// The socket: its own read-only region, its address in the
		// shadow field after the context (context loads of sk were
		// rewritten to read it). Live runs have none: sk is NULL.
		var sk uint64
		if rc.hasSock {
			var err error
			if sk, err = vm.AddRegion(rc.sock[:], false); err != nil {
				return 0, err
			}
		}
		binary.LittleEndian.PutUint64(ctx[skbShadowSk:], sk)
		return vm.AddRegion(ctx[:skbSize+8], true)
	case XDP:
		// One region for the whole frame: the helpers move data,
		// data_end and data_meta inside it and rewrite the shadow
		// pointer fields that follow the context (context loads of
		// those fields were rewritten to read them).
		x := &rc.xdp
		base, err := vm.AddRegion(x.buf, true)
		if err != nil {
			return 0, err
		}
		x.base = base
		x.sync()
		return vm.AddRegion(ctx[:xdpSize+24], false)
	default: // Seccomp: read-only struct seccomp_data
		return vm.AddRegion(ctx[:SeccompDataSize], false)
	}
}

// shadow offsets of the pointer fields, by context offset.
func shadowOffset(t Type, off int) (int, bool) {
	if t == SocketFilter && off == skbSk {
		return skbShadowSk, true
	}
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
	return p.runSeccomp(data, task, nil)
}

// RunSeccompYield is RunSeccomp checking in with yield every
// interp.YieldChunk instructions (interp.VM.SetYield): for a decision
// that runs in a scheduler's bulk lane, which yield may pause. A non-nil
// error from yield stops the run (a budget fault wrapping it).
func (p *Program) RunSeccompYield(data *[SeccompDataSize]byte, task Task, yield func() error) (uint32, error) {
	return p.runSeccomp(data, task, yield)
}

func (p *Program) runSeccomp(data *[SeccompDataSize]byte, task Task, yield func() error) (uint32, error) {
	vm := p.vm()
	defer p.vms.Put(vm)
	if yield != nil {
		vm.SetYield(lockAwareYield(vm, yield))
		defer vm.SetYield(nil)
	}
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
	if rc.spin != nil {
		rc.releaseSpin()
	}
	pool.Release(rc.cpu)
	return ret, err
}

package prog

import (
	"encoding/binary"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

// Live runs: programs deciding real packets (netfilter queues, see
// pkg/nfqueue and the demux's links) rather than test-run copies.

// XDPMaxLinear is how many bytes of a frame an XDP program addresses
// (data to data_end): the kernel's linear part with 4 KiB pages. Bytes
// beyond stand for fragments the program cannot reach directly.
const XDPMaxLinear = xdpMaxLinear

// XDPMeta is what an XDP program's struct xdp_md says besides the packet.
type XDPMeta struct {
	IngressIfindex uint32
	RxQueueIndex   uint32
}

// SkbMeta is what a socket filter's struct __sk_buff says about a live
// packet, as the kernel sets the fields (Protocol in network byte order,
// as skb->protocol, so 0x0008 for IPv4 on little-endian).
type SkbMeta struct {
	Len            uint32 // skb->len: the whole packet, from the network header
	PktType        uint32 // PACKET_HOST, PACKET_BROADCAST, ...
	Mark           uint32
	Protocol       uint32 // skb->protocol, __be16
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	Hash           uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32 // __be16
	GSOSegs        uint32
	GSOSize        uint32
}

// Runner runs one program on live packets, one packet at a time. It owns
// its interpreter state and context buffer, so a run allocates nothing;
// each run holds a CPU slot of the program's pool (package percpu), as
// every invocation does.
// Not safe for concurrent use: give each worker its own.
type Runner struct {
	p   *Program
	vm  *interp.VM
	rc  *runCtx
	ctx [skbSize + 24]byte
}

// NewRunner returns a Runner for p.
func (p *Program) NewRunner() *Runner {
	vm := interp.NewVM(&interp.VMConfig{MaxRegions: MaxRegions})
	rc := &runCtx{}
	vm.Context = rc
	return &Runner{p: p, vm: vm, rc: rc}
}

// Program returns the program the Runner runs.
func (r *Runner) Program() *Program { return r.p }

// RunXDP runs an XDP program on frame, an Ethernet frame the program may
// rewrite in place: data is frame's first byte, data_end is after its
// first XDPMaxLinear bytes at most, data_meta equals data (no metadata).
// It returns r0 (XDP_ABORTED 0, XDP_DROP 1, XDP_PASS 2, XDP_TX 3,
// XDP_REDIRECT 4, or anything the program returned), or an
// *interp.Fault when the run faults (caught out-of-bounds access, budget).
func (r *Runner) RunXDP(frame []byte, m *XDPMeta) (uint64, error) {
	le := binary.LittleEndian
	r.rc.p, r.rc.task = r.p, nil
	r.rc.gen++
	ctx := r.ctx[:xdpSize+24]
	clear(ctx)
	linear := frame[:min(len(frame), xdpMaxLinear)]
	// bpf_xdp_load_bytes and the like see the linear part; the
	// adjust helpers need a test run's buffer (EOPNOTSUPP here).
	r.rc.xdp = xdpBuff{buf: linear, end: len(linear)}
	data, err := r.vm.AddRegion(linear, true)
	if err != nil {
		return 0, err
	}
	le.PutUint32(ctx[xdpIngressIfindex:], m.IngressIfindex)
	le.PutUint32(ctx[xdpRxQueueIndex:], m.RxQueueIndex)
	le.PutUint64(ctx[xdpSize+0:], data)
	le.PutUint64(ctx[xdpSize+8:], data+uint64(len(linear)))
	le.PutUint64(ctx[xdpSize+16:], data)
	r1, err := r.vm.AddRegion(ctx, false)
	if err != nil {
		return 0, err
	}
	return r.p.runOnSlot(r.vm, r.rc, r1)
}

// RunSocketFilter runs a socket filter on pkt, the packet from its
// network header on (what bpf_skb_load_bytes reads), with the context
// fields of m. It returns r0 (0 drops; otherwise the bytes to keep,
// which a netfilter verdict reads as accept) or an *interp.Fault.
func (r *Runner) RunSocketFilter(pkt []byte, m *SkbMeta) (uint64, error) {
	le := binary.LittleEndian
	r.rc.p, r.rc.task = r.p, nil
	r.rc.gen++
	r.rc.pkt = pkt
	// LD_ABS/LD_IND and bpf_skb_load_bytes_relative: the packet starts
	// at its network header; there is no MAC header.
	r.rc.frame, r.rc.netOff, r.rc.macOff = pkt, 0, -1
	r.vm.SetPacket(pkt, 0, 0, -1)
	// The shadow sk pointer after the context stays 0: a live packet
	// has no socket here, __sk_buff.sk reads NULL.
	ctx := r.ctx[:skbSize+8]
	clear(ctx)
	for _, f := range [...]struct {
		off int
		v   uint32
	}{
		{skbLen, m.Len}, {skbPktType, m.PktType}, {skbMark, m.Mark}, {skbProtocol, m.Protocol},
		{skbPriority, m.Priority}, {skbIngressIfindex, m.IngressIfindex}, {skbIfindex, m.Ifindex},
		{skbHash, m.Hash}, {skbVlanPresent, m.VlanPresent}, {skbVlanTCI, m.VlanTCI},
		{skbVlanProto, m.VlanProto}, {skbGSOSegs, m.GSOSegs}, {skbGSOSize, m.GSOSize},
	} {
		le.PutUint32(ctx[f.off:], f.v)
	}
	r1, err := r.vm.AddRegion(ctx, true)
	if err != nil {
		r.rc.pkt, r.rc.frame = nil, nil
		return 0, err
	}
	ret, err := r.p.runOnSlot(r.vm, r.rc, r1)
	r.rc.pkt, r.rc.frame = nil, nil
	r.vm.SetPacket(nil, 0, 0, -1)
	return ret, err
}

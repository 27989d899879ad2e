package nfqueue

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// nfnetlink_queue numbers (linux/netfilter/nfnetlink_queue.h,
// linux/netfilter/nfnetlink.h, linux/netfilter.h).
const (
	subsysQueue = 3 // NFNL_SUBSYS_QUEUE

	msgPacket       = 0 // NFQNL_MSG_PACKET
	msgVerdict      = 1 // NFQNL_MSG_VERDICT
	msgConfig       = 2 // NFQNL_MSG_CONFIG
	msgVerdictBatch = 3 // NFQNL_MSG_VERDICT_BATCH

	// Packet attributes (enum nfqnl_attr_type).
	attrPacketHdr     = 1
	attrVerdictHdr    = 2
	attrMark          = 3
	attrTimestamp     = 4
	attrIfIndexInDev  = 5
	attrIfIndexOutDev = 6
	attrIfIndexPhysIn = 7
	attrIfIndexPhysOt = 8
	attrHwAddr        = 9
	attrPayload       = 10
	attrCapLen        = 13
	attrSkbInfo       = 14
	attrVlan          = 19
	attrL2Hdr         = 20
	attrPriority      = 21

	// Config attributes (enum nfqnl_attr_config).
	cfgCmd      = 1
	cfgParams   = 2
	cfgMaxLen   = 3
	cfgMask     = 4
	cfgFlags    = 5
	cmdBind     = 1 // NFQNL_CFG_CMD_BIND
	cmdUnbind   = 2
	cmdPFBind   = 3
	copyPacket  = 2 // NFQNL_COPY_PACKET
	nlaTypeMask = 0x3fff

	nlmsgHdrLen  = 16 // struct nlmsghdr
	nfgenHdrLen  = 4  // struct nfgenmsg
	nlaHdrLen    = 4  // struct nlattr
	packetHdrLen = 7  // struct nfqnl_msg_packet_hdr (packed)
	hwHdrLen     = 12 // struct nfqnl_msg_packet_hw
)

// Config flags (NFQA_CFG_F_*).
const (
	// FlagFailOpen is NFQA_CFG_F_FAIL_OPEN: when the queue is full the
	// kernel accepts packets instead of dropping them.
	FlagFailOpen uint32 = 1
	// FlagGSO is NFQA_CFG_F_GSO: GSO packets reach userspace whole
	// instead of being segmented first.
	FlagGSO uint32 = 4
)

// Verdicts (NF_DROP, NF_ACCEPT).
const (
	Drop   uint32 = 0
	Accept uint32 = 1
)

// Netfilter hooks (enum nf_inet_hooks), as Packet.Hook reports them.
const (
	HookPreRouting  = 0
	HookLocalIn     = 1
	HookForward     = 2
	HookLocalOut    = 3
	HookPostRouting = 4
)

// NFQA_SKB_INFO bits.
const (
	SkbCsumNotReady    uint32 = 1
	SkbGSO             uint32 = 2
	SkbCsumNotVerified uint32 = 4
)

// Message errors. They describe malformed input from the socket; a
// worker counts and skips them.
var (
	ErrTruncated = errno.New(unix.EINVAL, "nfqueue: truncated netlink message")
	ErrNotPacket = errno.New(unix.EINVAL, "nfqueue: not a queued-packet message")
	ErrNoID      = errno.New(unix.EINVAL, "nfqueue: packet message without a packet header")
)

// Packet is one queued packet as nfnetlink_queue presents it. Slices alias
// the receive buffer and are valid until the next receive into it. The
// zero value is an empty packet; Parse overwrites every field.
type Packet struct {
	Queue      uint16 // res_id of the message: the queue number
	Family     uint8  // nfgen_family: AF_INET, AF_INET6, AF_BRIDGE...
	ID         uint32 // packet id, the verdict's key
	HwProtocol uint16 // EtherType (host order) of the payload
	Hook       uint8  // netfilter hook (HookLocalIn...)
	Mark       uint32 // skb mark (0 when absent)
	InDev      uint32 // ifindex the packet came in on, 0 if none
	OutDev     uint32 // ifindex it goes out on, 0 if none
	PhysInDev  uint32
	PhysOutDev uint32
	Priority   uint32
	SkbInfo    uint32 // NFQA_SKB_INFO bits
	// CapLen is the packet's real length when Payload was cut to the
	// queue's copy range, otherwise len(Payload).
	CapLen uint32
	// HwAddr is the source hardware address (NFQA_HWADDR), nil if the
	// message has none.
	HwAddr []byte
	// L2Hdr is the whole link-layer header (NFQA_L2HDR, bridge family),
	// nil if the message has none.
	L2Hdr []byte
	// VlanTCI and VlanProto are the VLAN tag (host order), VlanProto 0
	// when untagged.
	VlanTCI, VlanProto uint16
	// Payload is the packet from the network header on (for the bridge
	// family, from the L3 header after L2Hdr).
	Payload []byte
}

// Truncated reports whether Payload holds less than the whole packet.
func (p *Packet) Truncated() bool { return p.CapLen > uint32(len(p.Payload)) }

// Split returns the first netlink message of b and the rest (messages are
// NLMSG_ALIGNed). It returns ErrTruncated when b does not hold a whole
// message. It never allocates.
func Split(b []byte) (msg, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return nil, nil, ErrTruncated
	}
	n := int(binary.NativeEndian.Uint32(b))
	if n < nlmsgHdrLen || n > len(b) {
		return nil, nil, ErrTruncated
	}
	a := align4(n)
	if a > len(b) {
		a = len(b)
	}
	return b[:n], b[a:], nil
}

// Kind classifies a netlink message from the queue socket.
type Kind int

// Message kinds.
const (
	KindOther  Kind = iota // anything else: ignored
	KindPacket             // a queued packet: Parse it
	KindError              // NLMSG_ERROR: ErrorCode says which
	KindDone               // NLMSG_DONE
)

// Classify returns what msg (one message from Split) is.
func Classify(msg []byte) Kind {
	if len(msg) < nlmsgHdrLen {
		return KindOther
	}
	switch t := binary.NativeEndian.Uint16(msg[4:]); t {
	case unix.NLMSG_ERROR:
		return KindError
	case unix.NLMSG_DONE:
		return KindDone
	case subsysQueue<<8 | msgPacket:
		return KindPacket
	}
	return KindOther
}

// ErrorCode returns the errno of an NLMSG_ERROR message (0 for an ack),
// or EINVAL when msg is too short to say.
func ErrorCode(msg []byte) unix.Errno {
	if len(msg) < nlmsgHdrLen+4 {
		return unix.EINVAL
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(msg[nlmsgHdrLen:])))
}

// Parse decodes a queued-packet message (one message from Split) into p.
// Unknown attributes are skipped. It returns ErrNotPacket for another
// message type, ErrTruncated for a malformed one, ErrNoID without a
// packet header. It never allocates: p's slices alias msg.
func Parse(msg []byte, p *Packet) error {
	*p = Packet{}
	if len(msg) < nlmsgHdrLen+nfgenHdrLen {
		return ErrTruncated
	}
	if int(binary.NativeEndian.Uint32(msg)) != len(msg) {
		return ErrTruncated
	}
	if binary.NativeEndian.Uint16(msg[4:]) != subsysQueue<<8|msgPacket {
		return ErrNotPacket
	}
	p.Family = msg[nlmsgHdrLen]
	p.Queue = binary.BigEndian.Uint16(msg[nlmsgHdrLen+2:])
	b := msg[nlmsgHdrLen+nfgenHdrLen:]
	haveHdr := false
	capLen := uint32(0)
	for len(b) > 0 {
		if len(b) < nlaHdrLen {
			return ErrTruncated
		}
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < nlaHdrLen || l > len(b) {
			return ErrTruncated
		}
		v := b[nlaHdrLen:l]
		next := align4(l)
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
		switch typ {
		case attrPacketHdr:
			if len(v) < packetHdrLen {
				return ErrTruncated
			}
			p.ID = binary.BigEndian.Uint32(v)
			p.HwProtocol = binary.BigEndian.Uint16(v[4:])
			p.Hook = v[6]
			haveHdr = true
		case attrMark:
			if !be32(v, &p.Mark) {
				return ErrTruncated
			}
		case attrIfIndexInDev:
			if !be32(v, &p.InDev) {
				return ErrTruncated
			}
		case attrIfIndexOutDev:
			if !be32(v, &p.OutDev) {
				return ErrTruncated
			}
		case attrIfIndexPhysIn:
			if !be32(v, &p.PhysInDev) {
				return ErrTruncated
			}
		case attrIfIndexPhysOt:
			if !be32(v, &p.PhysOutDev) {
				return ErrTruncated
			}
		case attrPriority:
			if !be32(v, &p.Priority) {
				return ErrTruncated
			}
		case attrSkbInfo:
			if !be32(v, &p.SkbInfo) {
				return ErrTruncated
			}
		case attrCapLen:
			if !be32(v, &capLen) {
				return ErrTruncated
			}
		case attrHwAddr:
			if len(v) < hwHdrLen {
				return ErrTruncated
			}
			n := int(binary.BigEndian.Uint16(v))
			if n > hwHdrLen-4 {
				return ErrTruncated
			}
			p.HwAddr = v[4 : 4+n : 4+n]
		case attrL2Hdr:
			p.L2Hdr = v[:len(v):len(v)]
		case attrVlan:
			// Nested: NFQA_VLAN_PROTO (1), NFQA_VLAN_TCI (2), be16.
			for w := v; len(w) >= nlaHdrLen; {
				wl := int(binary.NativeEndian.Uint16(w))
				if wl < nlaHdrLen || wl > len(w) {
					return ErrTruncated
				}
				if wl >= nlaHdrLen+2 {
					switch binary.NativeEndian.Uint16(w[2:]) & nlaTypeMask {
					case 1:
						p.VlanProto = binary.BigEndian.Uint16(w[4:])
					case 2:
						p.VlanTCI = binary.BigEndian.Uint16(w[4:])
					}
				}
				w = w[min(align4(wl), len(w)):]
			}
		case attrPayload:
			p.Payload = v[:len(v):len(v)]
		}
	}
	if !haveHdr {
		return ErrNoID
	}
	p.CapLen = max(capLen, uint32(len(p.Payload)))
	return nil
}

func be32(v []byte, out *uint32) bool {
	if len(v) < 4 {
		return false
	}
	*out = binary.BigEndian.Uint32(v)
	return true
}

func align4(n int) int { return (n + 3) &^ 3 }

// appendHeader appends a netlink header and nfgenmsg for an
// nfnetlink_queue message of type msg about queue, with length to be
// fixed by finish. It returns the offset of the message.
func appendHeader(b []byte, msg uint16, flags uint16, seq uint32, family uint8, queue uint16) ([]byte, int) {
	off := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set by finish
	b = binary.NativeEndian.AppendUint16(b, subsysQueue<<8|msg)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // to the kernel
	b = append(b, family, 0)                   // NFNETLINK_V0
	b = binary.BigEndian.AppendUint16(b, queue)
	return b, off
}

// appendAttr appends one attribute with value v, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, v ...[]byte) []byte {
	n := nlaHdrLen
	for _, p := range v {
		n += len(p)
	}
	b = binary.NativeEndian.AppendUint16(b, uint16(n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	for _, p := range v {
		b = append(b, p...)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// finish sets the length of the message starting at off.
func finish(b []byte, off int) []byte {
	binary.NativeEndian.PutUint32(b[off:], uint32(len(b)-off))
	return b
}

// AppendVerdict appends an NFQNL_MSG_VERDICT message for packet id of
// queue: verdict (Accept or Drop) and, if payload is not nil, the
// packet's new content (from the network header on; the kernel replaces
// the packet with it, trimming or extending it to its length). It never
// allocates when b has room.
func AppendVerdict(b []byte, queue uint16, id, verdict uint32, payload []byte) []byte {
	b, off := appendHeader(b, msgVerdict, 0, 0, unix.AF_UNSPEC, queue)
	var vh [8]byte
	binary.BigEndian.PutUint32(vh[0:], verdict)
	binary.BigEndian.PutUint32(vh[4:], id)
	b = appendAttr(b, attrVerdictHdr, vh[:])
	if payload != nil {
		b = appendAttr(b, attrPayload, payload)
	}
	return finish(b, off)
}

// AppendVerdictBatch appends an NFQNL_MSG_VERDICT_BATCH message: verdict
// for every packet of queue with an id up to id that is still waiting.
// It never allocates when b has room.
func AppendVerdictBatch(b []byte, queue uint16, id, verdict uint32) []byte {
	b, off := appendHeader(b, msgVerdictBatch, 0, 0, unix.AF_UNSPEC, queue)
	var vh [8]byte
	binary.BigEndian.PutUint32(vh[0:], verdict)
	binary.BigEndian.PutUint32(vh[4:], id)
	b = appendAttr(b, attrVerdictHdr, vh[:])
	return finish(b, off)
}

// AppendPacket appends a queued-packet message as the kernel builds one
// (for tests, fuzz seeds and benchmarks of the receive path).
func AppendPacket(b []byte, p *Packet) []byte {
	b, off := appendHeader(b, msgPacket, 0, 0, p.Family, p.Queue)
	binary.NativeEndian.PutUint16(b[off+6:], 0) // the kernel sets no flags
	var ph [packetHdrLen]byte
	binary.BigEndian.PutUint32(ph[0:], p.ID)
	binary.BigEndian.PutUint16(ph[4:], p.HwProtocol)
	ph[6] = p.Hook
	b = appendAttr(b, attrPacketHdr, ph[:])
	u32 := func(b []byte, typ uint16, v uint32) []byte {
		var x [4]byte
		binary.BigEndian.PutUint32(x[:], v)
		return appendAttr(b, typ, x[:])
	}
	if p.Mark != 0 {
		b = u32(b, attrMark, p.Mark)
	}
	if p.InDev != 0 {
		b = u32(b, attrIfIndexInDev, p.InDev)
	}
	if p.OutDev != 0 {
		b = u32(b, attrIfIndexOutDev, p.OutDev)
	}
	if p.HwAddr != nil {
		var hw [hwHdrLen]byte
		binary.BigEndian.PutUint16(hw[0:], uint16(len(p.HwAddr)))
		copy(hw[4:], p.HwAddr)
		b = appendAttr(b, attrHwAddr, hw[:])
	}
	if p.L2Hdr != nil {
		b = appendAttr(b, attrL2Hdr, p.L2Hdr)
	}
	if p.CapLen > uint32(len(p.Payload)) {
		b = u32(b, attrCapLen, p.CapLen)
	}
	if p.SkbInfo != 0 {
		b = u32(b, attrSkbInfo, p.SkbInfo)
	}
	if p.Payload != nil {
		b = appendAttr(b, attrPayload, p.Payload)
	}
	return finish(b, off)
}

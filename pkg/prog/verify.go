package prog

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// verified is what Load needs from the verifier's acceptance.
type verified struct {
	log      string
	ctxLoads []ctxLoad
	dead     []int // instructions no path executes
	narrow   []narrowLoad
}

// narrowLoad is a narrow context load rewritten into a load of size
// bytes at off (skbNarrowTarget).
type narrowLoad struct {
	pc, size, off int
}

// ctxLoad is a context load of a packet pointer field, rewritten into a
// 64-bit load of the shadow field at shadowOff.
type ctxLoad struct {
	pc        int
	shadowOff int
}

// Context layouts the verifier enforces, per program type: the fields the
// 6.18 kernel lets each type read (and, for socket filters, write: cb
// only), checked against the kernel by TestContextAccessMatchesKernel.
var (
	skbContext = verifier.ContextSpec{Name: "__sk_buff", Size: skbSize, Fields: func() []verifier.ContextField {
		f := []verifier.ContextField{
			{Name: "len", Off: skbLen, Size: 4, Narrow: true},
			{Name: "pkt_type", Off: skbPktType, Size: 4, Narrow: true},
			{Name: "mark", Off: skbMark, Size: 4, Narrow: true},
			{Name: "queue_mapping", Off: skbQueueMapping, Size: 4, Narrow: true},
			{Name: "protocol", Off: skbProtocol, Size: 4, Narrow: true},
			{Name: "vlan_present", Off: skbVlanPresent, Size: 4, Narrow: true},
			{Name: "vlan_tci", Off: skbVlanTCI, Size: 4, Narrow: true},
			{Name: "vlan_proto", Off: skbVlanProto, Size: 4, Narrow: true},
			{Name: "priority", Off: skbPriority, Size: 4, Narrow: true},
			{Name: "ingress_ifindex", Off: skbIngressIfindex, Size: 4, Narrow: true},
			{Name: "ifindex", Off: skbIfindex, Size: 4, Narrow: true},
			{Name: "tc_index", Off: skbTCIndex, Size: 4, Narrow: true},
		}
		// cb[0..4] as one field: the kernel allows 8-byte loads and
		// stores of cb[0..1] and cb[2..3] as well as narrow ones.
		f = append(f, verifier.ContextField{Name: "cb", Off: skbCB, Size: 20, Narrow: true, Write: true})
		return append(f,
			verifier.ContextField{Name: "hash", Off: skbHash, Size: 4, Narrow: true},
			verifier.ContextField{Name: "napi_id", Off: skbNapiID, Size: 4, Narrow: true},
			verifier.ContextField{Name: "gso_segs", Off: skbGSOSegs, Size: 4, Narrow: true},
			// The socket (PTR_TO_SOCK_COMMON_OR_NULL): 8-byte loads only.
			verifier.ContextField{Name: "sk", Off: skbSk, Size: 8, Kind: verifier.FieldSockCommonOrNull},
			verifier.ContextField{Name: "gso_size", Off: skbGSOSize, Size: 4, Narrow: true},
		)
	}()}

	// sockCommon is struct bpf_sock read through __sk_buff.sk: the
	// fields the 6.18 kernel's bpf_sock_common_is_valid_access allows
	// (not type, protocol, mark, priority), with its narrow-load rules
	// (family, src_port, state and rx_queue_mapping narrow only at their
	// first byte, dst_port in its first two), checked against the kernel
	// by TestSockFieldsMatchKernel.
	sockCommon = verifier.ContextSpec{Name: "bpf_sock", Size: bpfSockSize, Fields: []verifier.ContextField{
		{Name: "bound_dev_if", Off: sockBoundDevIf, Size: 4},
		{Name: "family", Off: sockFamily, Size: 4, Narrow: true, NarrowStarts: 1},
		{Name: "src_ip4", Off: sockSrcIP4, Size: 4, Narrow: true},
		// The IPv6 addresses are four fields each: 8-byte loads of
		// them are refused.
		{Name: "src_ip6[0]", Off: sockSrcIP6, Size: 4, Narrow: true},
		{Name: "src_ip6[1]", Off: sockSrcIP6 + 4, Size: 4, Narrow: true},
		{Name: "src_ip6[2]", Off: sockSrcIP6 + 8, Size: 4, Narrow: true},
		{Name: "src_ip6[3]", Off: sockSrcIP6 + 12, Size: 4, Narrow: true},
		{Name: "src_port", Off: sockSrcPort, Size: 4, Narrow: true, NarrowStarts: 1},
		{Name: "dst_port", Off: sockDstPort, Size: 4, Narrow: true, NarrowStarts: 2},
		{Name: "dst_ip4", Off: sockDstIP4, Size: 4, Narrow: true},
		{Name: "dst_ip6[0]", Off: sockDstIP6, Size: 4, Narrow: true},
		{Name: "dst_ip6[1]", Off: sockDstIP6 + 4, Size: 4, Narrow: true},
		{Name: "dst_ip6[2]", Off: sockDstIP6 + 8, Size: 4, Narrow: true},
		{Name: "dst_ip6[3]", Off: sockDstIP6 + 12, Size: 4, Narrow: true},
		{Name: "state", Off: sockState, Size: 4, Narrow: true, NarrowStarts: 1},
		{Name: "rx_queue_mapping", Off: sockRxQueueMapping, Size: 4, Narrow: true, NarrowStarts: 1},
	}}

	xdpContext = verifier.ContextSpec{Name: "xdp_md", Size: xdpSize, Fields: []verifier.ContextField{
		{Name: "data", Off: xdpData, Size: 4, Kind: verifier.FieldPacketStart},
		{Name: "data_end", Off: xdpDataEnd, Size: 4, Kind: verifier.FieldPacketEnd},
		{Name: "data_meta", Off: xdpDataMeta, Size: 4, Kind: verifier.FieldPacketMeta},
		// 6.18 refuses narrow loads of xdp_md and egress_ifindex
		// (devmap programs only).
		{Name: "ingress_ifindex", Off: xdpIngressIfindex, Size: 4},
		{Name: "rx_queue_index", Off: xdpRxQueueIndex, Size: 4},
	}}

	// xdpDevmapContext is xdp_md for programs run by a device map
	// (expected attach type BPF_XDP_DEVMAP): egress_ifindex is readable.
	xdpDevmapContext = verifier.ContextSpec{Name: "xdp_md", Size: xdpSize, Fields: append(append([]verifier.ContextField(nil), xdpContext.Fields...),
		verifier.ContextField{Name: "egress_ifindex", Off: xdpEgressIfindex, Size: 4})}

	seccompContext = verifier.ContextSpec{Name: "seccomp_data", Size: SeccompDataSize, Fields: func() []verifier.ContextField {
		f := []verifier.ContextField{
			{Name: "nr", Off: 0, Size: 4, Narrow: true},
			{Name: "arch", Off: 4, Size: 4, Narrow: true},
			{Name: "instruction_pointer", Off: 8, Size: 8, Narrow: true},
		}
		for i := uint32(0); i < 6; i++ {
			f = append(f, verifier.ContextField{Name: fmt.Sprintf("args[%d]", i), Off: 16 + 8*i, Size: 8, Narrow: true})
		}
		return f
	}()}
)

// gplCompatible reports whether the kernel's license_is_gpl_compatible
// accepts license.
func gplCompatible(license string) bool {
	switch license {
	case "GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL":
		return true
	}
	return false
}

// verify runs the verifier over spec with the program's map access; yield
// and charge (may be nil) go to verifier.Env.
func verify(spec *Spec, refs []MapRef, yield func() error, charge func(int) error) (*verified, error) {
	env := &verifier.Env{Helpers: verifier.KernelHelpers(), Yield: yield, Charge: charge}
	switch spec.Type {
	case SocketFilter:
		env.Context = skbContext
		env.SockCommon = sockCommon
		env.LegacyPacket = true
	case XDP:
		env.Context = xdpContext
		if spec.AttachType == AttachXDPDevMap {
			env.Context = xdpDevmapContext
		}
		env.PacketWrite = true
	case Seccomp:
		env.Context = seccompContext
	}
	addTypeHelpers(spec.Type, env.Helpers)
	restrictMapHelpers(spec.Type, env.Helpers)
	// bpf_trace_printk is GPL-only in the kernel.
	if !gplCompatible(spec.License) {
		for pc := 0; pc+8 <= len(spec.Insns); pc += 8 {
			in := spec.Insns[pc : pc+8]
			if in[0] == 0x85 && in[1]>>4 == 0 && int32(le32(in[4:])) == verifier.FnTracePrintk {
				return nil, &verifier.Error{Errno: unix.EINVAL, PC: pc / 8,
					Msg: "cannot call GPL-restricted function from non-GPL compatible program",
					Log: fmt.Sprintf("%d: cannot call GPL-restricted function from non-GPL compatible program (license %q)\n", pc/8, spec.License)}
			}
		}
	}
	for _, r := range refs {
		s := r.Map.Spec()
		if err := spinLockUse(spec.Type, s); err != nil {
			return nil, err
		}
		env.Maps = append(env.Maps, verifier.MapInfo{Type: s.Type, KeySize: s.KeySize, ValueSize: s.ValueSize,
			MaxEntries: s.MaxEntries, Flags: s.Flags, Read: r.Read, Write: r.Write, Name: r.Name, Inner: innerInfo(s),
			SpinLock: s.SpinLock})
	}
	if len(spec.LineInfo) > 0 {
		// BTF line info marks the first instruction of each source line;
		// like the kernel's log, a line holds until the next entry.
		n := len(spec.Insns) / 8
		env.LineInfo = make(map[int]verifier.LineInfo, n)
		var cur verifier.LineInfo
		have := false
		for pc := 0; pc < n; pc++ {
			if line, ok := spec.LineInfo[pc]; ok {
				cur, have = parseLine(line), true
			}
			if have {
				env.LineInfo[pc] = cur
			}
		}
	}
	env.Verbose = spec.LogLevel >= 2
	res, err := verifier.Verify(spec.Insns, env)
	if err != nil {
		return nil, err
	}
	v := &verified{log: res.Log, dead: res.Dead}
	for _, a := range res.CtxAccesses {
		if a.Kind == verifier.FieldScalar {
			fd := env.Context.Fields[a.Field]
			if t, ok := skbNarrowTarget[fd.Off]; ok && spec.Type == SocketFilter && !a.Write && a.Size >= t && a.Size < int(fd.Size) {
				v.narrow = append(v.narrow, narrowLoad{pc: a.Insn, size: t, off: int(fd.Off)})
			}
			continue
		}
		fd := env.Context.Fields[a.Field]
		off, ok := shadowOffset(spec.Type, int(fd.Off))
		if !ok || a.Write || a.Size != int(fd.Size) {
			return nil, fmt.Errorf("%w: insn %d: unexpected packet pointer access", ErrInvalid, a.Insn)
		}
		v.ctxLoads = append(v.ctxLoads, ctxLoad{pc: a.Insn, shadowOff: off})
	}
	return v, nil
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// parseLine splits "file:line: text" (as the client sends line info) into
// a verifier.LineInfo; anything else is kept as text.
func parseLine(s string) verifier.LineInfo {
	file, rest, ok := strings.Cut(s, ":")
	if !ok {
		return verifier.LineInfo{Text: s}
	}
	num, text, ok := strings.Cut(rest, ":")
	n := 0
	for _, c := range num {
		if c < '0' || c > '9' {
			return verifier.LineInfo{Text: s}
		}
		n = n*10 + int(c-'0')
	}
	if !ok {
		return verifier.LineInfo{File: file, Line: n}
	}
	return verifier.LineInfo{File: file, Line: n, Text: strings.TrimSpace(text)}
}

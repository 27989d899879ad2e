// Package prog loads, verifies and runs bpfd's eBPF programs: program types
// and their contexts, the kernel helpers, map references resolved with the
// access each handle grants, and BPF_PROG_TEST_RUN semantics that match the
// kernel's. It ties pkg/verifier (is it safe?) to pkg/interp (run it) and
// pkg/maps (what it touches).
//
// # Helper memory
//
// A map value a program reaches keeps its handle's mode in the
// interpreter: read-only, write-only or neither (interp.Access). Helpers
// read and write program memory only through interp.VM.Mem/MemAccess,
// which check that mode as a load or store does, so a program holding a
// map through a write-only handle cannot read it through any helper
// (trace_printk's %s prints "(fault)" for it), nor write a read-only one.
// helper_audit_test.go lists every helper with the program memory it
// touches and probes each against forbidden regions; a new helper must
// be added there.
//
// # Test runs
//
// TestRun follows BPF_PROG_TEST_RUN of the 6.18 kernel on x86-64, checked
// against it by the *MatchesKernel tests: a socket filter's frame goes
// through eth_type_trans on the loopback device (pkt_type from the
// destination MAC, protocol ETH_P_802_3/ETH_P_802_2 for 802.3 frames,
// skb->data at the network header, LD_ABS/LD_IND relative to it); an XDP
// packet sits after 256 bytes of headroom in a 4 KiB frame, bytes past the
// 3520-byte linear part in page-sized fragments, and data out starts at
// the metadata. Repeat reruns the program on the buffers the previous run
// left, as the kernel does. The context in and out follow the kernel's
// rules field by field.
//
// Helpers by type, as the kernel's func_proto tables: socket filters get
// bpf_skb_load_bytes, bpf_skb_load_bytes_relative, bpf_get_socket_cookie
// and bpf_get_socket_uid; XDP programs bpf_xdp_adjust_head/_tail/_meta,
// bpf_xdp_load_bytes/_store_bytes, bpf_xdp_get_buff_len, bpf_csum_diff,
// bpf_fib_lookup and bpf_redirect; every type the base helpers (maps, time, random,
// trace_printk, tail calls, bpf_loop). bpf_skb_store_bytes and the l3/l4
// checksum helpers are tc helpers in the kernel and are not offered to
// these types there either.
//
// # Differences from the kernel
//
//   - __sk_buff.sk (PTR_TO_SOCK_COMMON_OR_NULL, read-only struct
//     bpf_sock fields) is the kernel's test-run socket in test runs:
//     family and addresses from an IPv4/IPv6 packet, state TCP_CLOSE,
//     rx_queue_mapping -1, the rest 0. Live runs (Runner) have no
//     socket: sk reads NULL.
//   - bpf_get_socket_cookie answers a cookie bpfd numbers itself (never
//     0, one per test run, shared by its repeats), not the kernel's
//     counter; bpf_get_socket_uid answers 0, the owner of a test run's
//     socket in the kernel too.
//   - bpf_get_numa_node_id answers 0: bpfd's runs are bound to no node.
//   - bpf_fib_lookup reads the routing state of the calling thread's
//     network namespace through rtnetlink at each call (fib.go lists
//     what it cannot see: multipath hashing, path MTU exceptions, VRFs;
//     docs/programs.md has the full list).
//   - In live runs (Runner) the XDP adjust helpers answer EOPNOTSUPP:
//     the packet is the caller's buffer, without headroom or tailroom.
//   - Values a test run cannot observe are bpfd's own: timestamps come
//     from the daemon's clocks.
package prog

import "fmt"

// Type is a program type, numbered as the kernel's enum bpf_prog_type.
// bpfd's own types (Seccomp) start at 0x1000, outside the kernel's range.
type Type uint32

// Program types.
const (
	SocketFilter Type = 1
	XDP          Type = 6
	// Seccomp programs run on struct seccomp_data for every syscall a
	// seccomp user-notification filter routes to bpfd, and return a
	// SECCOMP_RET_* action.
	Seccomp Type = 0x1000
)

// String returns the type's name as bpftool prints it.
func (t Type) String() string {
	switch t {
	case SocketFilter:
		return "socket_filter"
	case XDP:
		return "xdp"
	case Seccomp:
		return "seccomp"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// ParseType returns the type named s (as String prints it, or the kernel's
// BPF_PROG_TYPE_ suffix in lower case), and false for an unknown name.
func ParseType(s string) (Type, bool) {
	switch s {
	case "socket_filter", "socket", "socketfilter":
		return SocketFilter, true
	case "xdp":
		return XDP, true
	case "seccomp":
		return Seccomp, true
	}
	return 0, false
}

// Context layouts, as in include/uapi/linux/bpf.h and linux/seccomp.h.
const (
	skbSize = 192 // struct __sk_buff
	xdpSize = 24  // struct xdp_md
	// SeccompDataSize is the size of struct seccomp_data.
	SeccompDataSize = 64

	// __sk_buff field offsets.
	skbLen            = 0
	skbPktType        = 4
	skbMark           = 8
	skbQueueMapping   = 12
	skbProtocol       = 16
	skbVlanPresent    = 20
	skbVlanTCI        = 24
	skbVlanProto      = 28
	skbPriority       = 32
	skbIngressIfindex = 36
	skbIfindex        = 40
	skbTCIndex        = 44
	skbCB             = 48 // u32 cb[5]
	skbHash           = 68
	skbTCClassid      = 72
	skbData           = 76
	skbDataEnd        = 80
	skbNapiID         = 84
	skbFamily         = 88
	skbDataMeta       = 140
	skbTstamp         = 152
	skbWireLen        = 160
	skbGSOSegs        = 164
	skbGSOSize        = 176
	skbHwtstamp       = 184
	skbSk             = 168 // __bpf_md_ptr(struct bpf_sock *, sk)

	// skbShadowSk is where the program's pointer to the run's socket
	// sits, after the context (loads of sk are rewritten to read it).
	skbShadowSk = skbSize

	// struct bpf_sock, as a sock_common pointer reads it.
	bpfSockSize        = 80
	sockBoundDevIf     = 0
	sockFamily         = 4
	sockSrcIP4         = 24
	sockSrcIP6         = 28
	sockSrcPort        = 44
	sockDstPort        = 48
	sockDstIP4         = 52
	sockDstIP6         = 56
	sockState          = 72
	sockRxQueueMapping = 76

	// xdp_md field offsets.
	xdpData           = 0
	xdpDataEnd        = 4
	xdpDataMeta       = 8
	xdpIngressIfindex = 12
	xdpRxQueueIndex   = 16
	xdpEgressIfindex  = 20

	// ethHdrLen is ETH_HLEN: the socket-filter test run starts the packet
	// after it, as the kernel's does.
	ethHdrLen = 14
)

// Expected attach types (enum bpf_attach_type) bpfd knows for XDP.
const (
	AttachXDPDevMap uint32 = 33
	AttachXDPCPUMap uint32 = 35
	AttachXDP       uint32 = 37
)

// Seccomp return actions (linux/seccomp.h), for programs of type Seccomp.
const (
	SeccompRetKillProcess uint32 = 0x80000000
	SeccompRetKillThread  uint32 = 0x00000000
	SeccompRetTrap        uint32 = 0x00030000
	SeccompRetErrno       uint32 = 0x00050000
	SeccompRetUserNotif   uint32 = 0x7fc00000
	SeccompRetTrace       uint32 = 0x7ff00000
	SeccompRetLog         uint32 = 0x7ffc0000
	SeccompRetAllow       uint32 = 0x7fff0000

	SeccompRetActionFull uint32 = 0xffff0000
	SeccompRetData       uint32 = 0x0000ffff
)

// skbNarrowTarget gives, for the __sk_buff fields whose sk_buff member is
// narrower than the 4-byte field, that member's size. The kernel rewrites
// a narrow load of such a field into a load of the member, and shifts and
// masks only when the load is narrower than the member: a load at least
// as wide as the member returns the whole member whatever its offset
// inside the field (a 2-byte load of protocol at offset 18 returns the
// protocol, not 0). pkg/prog rewrites those loads the same way.
var skbNarrowTarget = map[uint32]int{
	skbPktType:      1,
	skbQueueMapping: 2,
	skbProtocol:     2,
	skbVlanTCI:      2,
	skbVlanProto:    2,
	skbTCIndex:      2,
	skbGSOSegs:      2,
	skbGSOSize:      2,
}

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

	// xdp_md field offsets.
	xdpData           = 0
	xdpDataEnd        = 4
	xdpDataMeta       = 8
	xdpIngressIfindex = 12
	xdpRxQueueIndex   = 16

	// ethHdrLen is ETH_HLEN: the socket-filter test run starts the packet
	// after it, as the kernel's does.
	ethHdrLen = 14
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

package wire

// Links: an attachment of a program to a live attach point (a netfilter
// queue), reached through a descriptor like maps and programs.

// ObjLink is the object kind of links.
const ObjLink ObjType = 3

// Link commands. LINK_CREATE and LINK_DETACH keep the kernel's numbers
// (enum bpf_cmd); the others are bpfd's own (0x160-0x16f).
const (
	CmdLinkCreate Cmd = 28
	CmdLinkDetach Cmd = 34
	CmdLinkInfo   Cmd = 0x160
	CmdLinkList   Cmd = 0x161
)

func init() {
	cmdNames[CmdLinkCreate] = "LINK_CREATE"
	cmdNames[CmdLinkDetach] = "LINK_DETACH"
	cmdNames[CmdLinkInfo] = "LINK_INFO"
	cmdNames[CmdLinkList] = "LINK_LIST"
}

// AttachNFQueue: LINK_CREATE's attach type for netfilter queues. The
// request carries QueueCount fds: NETLINK_NETFILTER sockets the caller
// opened and bound, in order, to queues QueueFirst, QueueFirst+1, ...
// (nfqueue.Bind), so that the kernel checked the caller's CAP_NET_ADMIN.
const AttachNFQueue uint32 = 0x1001

// LinkCreate flags.
const (
	// LinkFlagFailOpen sets NFQA_CFG_F_FAIL_OPEN (an overfull queue
	// accepts instead of dropping) and makes detach accept the packets
	// still waiting instead of dropping them.
	LinkFlagFailOpen uint32 = 1
)

// MaxLinkQueues is the most queues one link spans (one fd each).
const MaxLinkQueues = MaxFDs

// LinkCreateAttr is CmdLinkCreate's attr (24 bytes). The program handle
// needs write mode (attaching is a write, DESIGN.md). Reply: Ret = link
// handle, fd 0 = link descriptor (mode read-write), data = ObjInfo
// (ObjType ObjLink, Type the attach type, Name the program's).
type LinkCreateAttr struct {
	ProgHandle uint32
	AttachType uint32
	Flags      uint32
	QueueFirst uint32 // first queue number (≤ 65535)
	QueueCount uint32 // 1..MaxLinkQueues; as many fds
	MaxLen     uint32 // kernel queue length; 0 = the kernel's default
}

// LinkCreateAttrSize is the encoded size of LinkCreateAttr.
const LinkCreateAttrSize = 24

// Append appends a's encoding to b.
func (a *LinkCreateAttr) Append(b []byte) []byte {
	for _, v := range [...]uint32{a.ProgHandle, a.AttachType, a.Flags, a.QueueFirst, a.QueueCount, a.MaxLen} {
		b = le.AppendUint32(b, v)
	}
	return b
}

// Parse decodes a from a normalised attr.
func (a *LinkCreateAttr) Parse(b []byte) bool {
	f := [...]*uint32{&a.ProgHandle, &a.AttachType, &a.Flags, &a.QueueFirst, &a.QueueCount, &a.MaxLen}
	for i, p := range f {
		*p = le.Uint32(b[4*i:])
	}
	return true
}

// LinkInfo is the JSON reply of CmdLinkInfo (one link) and, as a list, of
// CmdLinkList.
type LinkInfo struct {
	ID        uint32           `json:"id"`
	Type      string           `json:"type"` // "nfqueue"
	ProgID    uint32           `json:"prog_id"`
	ProgName  string           `json:"prog_name"`
	ProgType  string           `json:"prog_type"`
	OwnerUID  uint32           `json:"owner_uid"`
	Queues    []int            `json:"queues"`
	FailOpen  bool             `json:"fail_open"`
	Detached  bool             `json:"detached"`
	CopyRange uint32           `json:"copy_range"`
	Mode      string           `json:"mode,omitempty"` // of the handle asked through
	CreatedAt int64            `json:"created_unix"`
	LinkStats                  // summed over the queues
	PerQueue  []LinkQueueStats `json:"per_queue"`
}

// LinkStats are a link's counters.
type LinkStats struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Verdicts by program result: XDP pass, drop, aborted, tx, redirect,
	// invalid (any other value); socket filters count pass and drop.
	Pass     uint64 `json:"pass"`
	Drop     uint64 `json:"drop"`
	Aborted  uint64 `json:"aborted"`
	TX       uint64 `json:"tx"`
	Redirect uint64 `json:"redirect"`
	Invalid  uint64 `json:"invalid"`
	// Errors: program faults (each packet dropped).
	Errors uint64 `json:"errors"`
	// Rewritten: packets accepted with the program's new content.
	Rewritten uint64 `json:"rewritten"`
	// RewriteDropped: rewritten packets longer than the copy range,
	// which cannot be reinjected whole and are dropped.
	RewriteDropped uint64 `json:"rewrite_dropped"`
	// Repeated: packets queued before the queue was configured, sent
	// through the hook again.
	Repeated uint64 `json:"repeated"`
	// NetlinkErrors: error messages from the kernel (e.g. a verdict for
	// a packet that was gone) and undecodable messages.
	NetlinkErrors uint64 `json:"netlink_errors"`
	// KernelQueueDropped and KernelUserDropped are the kernel's counters
	// (nfnetlink_queue stats): packets dropped because the queue was full,
	// and because the socket's receive buffer was.
	KernelQueueDropped uint64 `json:"kernel_queue_dropped"`
	KernelUserDropped  uint64 `json:"kernel_user_dropped"`
	KernelWaiting      uint64 `json:"kernel_waiting"`
	// Decision time per packet (frame, program run, verdict): mean and
	// 99th percentile, nanoseconds.
	DecisionMeanNs uint64 `json:"decision_mean_ns"`
	DecisionP99Ns  uint64 `json:"decision_p99_ns"`
	// Busy time split: program runs, and netlink I/O (recvmmsg and
	// verdict writes), nanoseconds in all.
	ProgramNs uint64 `json:"program_ns"`
	IONs      uint64 `json:"io_ns"`
	Batches   uint64 `json:"batches"`
}

// LinkQueueStats are one queue's counters.
type LinkQueueStats struct {
	Queue int `json:"queue"`
	LinkStats
}

// linkAttrSize is AttrSize for the link commands.
func linkAttrSize(cmd Cmd) int {
	switch cmd {
	case CmdLinkCreate:
		return LinkCreateAttrSize
	case CmdLinkList:
		return 0
	}
	return HandleAttrSize // LINK_DETACH, LINK_INFO: Handle, Mode 0
}

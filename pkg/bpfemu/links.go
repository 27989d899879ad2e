package bpfemu

import (
	"encoding/binary"
	"encoding/json"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Attach points.
//
// bpfd's attach points are its own, so their bpf(2) form is bpfd's too,
// numbered outside the kernel's enum bpf_attach_type like bpfd's wire
// protocol numbers them:
//
//   - BPF_PROG_ATTACH with attach_type 0x1000 (wire.AttachSeccomp):
//     target_fd is a seccomp user-notification listener of the task,
//     attach_bpf_fd a Seccomp program; bpfd decides the filter's routed
//     syscalls with the program. Returns 0.
//   - BPF_LINK_CREATE with attach_type 0x1001 (wire.AttachNFQueue):
//     prog_fd the program, target_fd a NETLINK_NETFILTER socket the task
//     bound to queue link_create.nfqueue.queue_first (the kernel checked
//     its CAP_NET_ADMIN then), flags as wire's link flags, and in
//     link_create's union: queue_first u32 @16, queue_count u32 @20 (0 means
//     1), max_len u32 @24, and for several queues fds u64 @32, a pointer
//     to queue_count socket fds in queue order (target_fd is then
//     ignored). Returns a link fd.
//   - BPF_LINK_DETACH of such a link fd.
//
// Kernel attach types bpfd has no counterpart of are EINVAL, as on a
// kernel without them.

// Offsets of link_create's nfqueue form (see above).
const (
	lcQueueFirst = 16
	lcQueueCount = 20
	lcMaxLen     = 24
	lcFDs        = 32
	lcEnd        = 40
)

// progAttach answers BPF_PROG_ATTACH for seccomp listeners.
func (c *call) progAttach(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(paEnd) {
		return 0, unix.EINVAL
	}
	if a.u32(paAttachType) != wire.AttachSeccomp || a.u32(paAttachFlags) != 0 ||
		a.u32(paReplaceBPFFD) != 0 || a.u32(paRelativeFD) != 0 || a.u64(paExpectedRevision) != 0 {
		return 0, unix.EINVAL
	}
	s := c.s
	p, err := c.resolve(int32(a.u32(paAttachBPFFD)))
	if err != nil {
		return 0, err
	}
	defer s.put(p)
	if p.info.ObjType != wire.ObjProg {
		return 0, unix.EINVAL
	}
	listener, err := c.getFD(int32(a.u32(paTargetFD)))
	if err != nil {
		return 0, err
	}
	defer unix.Close(listener)
	at := wire.AttachAttr{Handle: p.handle, AttachType: wire.AttachSeccomp}
	var ab [wire.AttachAttrSize]byte
	r, err := c.do(wire.CmdProgAttach, at.Append(ab[:0]), []int{listener}, nil)
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return 0, r.Errno
	}
	return 0, nil
}

// linkCreate answers BPF_LINK_CREATE for netfilter queues.
func (c *call) linkCreate(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(lcEnd) || a.u32(lcAttachType) != wire.AttachNFQueue || a[28] != 0 {
		return 0, unix.EINVAL
	}
	s := c.s
	p, err := c.resolve(int32(a.u32(lcProgFD)))
	if err != nil {
		return 0, err
	}
	defer s.put(p)
	if p.info.ObjType != wire.ObjProg {
		return 0, unix.EINVAL
	}
	n := a.u32(lcQueueCount)
	if n == 0 {
		n = 1
	}
	if n > wire.MaxLinkQueues {
		return 0, unix.E2BIG
	}
	taskFDs := []int32{int32(a.u32(lcTargetFD))}
	if ufds := a.u64(lcFDs); ufds != 0 {
		b := make([]byte, 4*n)
		if err := c.read(ufds, b); err != nil {
			return 0, err
		}
		taskFDs = taskFDs[:0]
		for i := uint32(0); i < n; i++ {
			taskFDs = append(taskFDs, int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
	} else if n != 1 {
		return 0, unix.EINVAL
	}
	var fds []int
	defer func() { closeAll(fds) }()
	for _, fd := range taskFDs {
		dup, err := c.getFD(fd)
		if err != nil {
			return 0, err
		}
		fds = append(fds, dup)
	}
	at := wire.LinkCreateAttr{ProgHandle: p.handle, AttachType: wire.AttachNFQueue, Flags: a.u32(lcFlags),
		QueueFirst: a.u32(lcQueueFirst), QueueCount: n, MaxLen: a.u32(lcMaxLen)}
	var ab [wire.LinkCreateAttrSize]byte
	var out [wire.ObjInfoSize + 64]byte
	r, err := c.do(wire.CmdLinkCreate, at.Append(ab[:0]), fds, out[:])
	if err != nil {
		return 0, err
	}
	if r.Errno != 0 || len(r.FDs) != 1 {
		closeAll(r.FDs)
		if r.Errno == 0 {
			s.releaseHandle(uint32(r.Ret))
			return 0, unix.EIO
		}
		return 0, r.Errno
	}
	return c.install(r.FDs[0], uint32(r.Ret), r.Data, nil)
}

// linkDetach answers BPF_LINK_DETACH.
func (c *call) linkDetach(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(ldEnd) {
		return 0, unix.EINVAL
	}
	o, err := c.resolve(int32(a.u32(ldLinkFD)))
	if err != nil {
		return 0, err
	}
	defer c.s.put(o)
	if o.info.ObjType != wire.ObjLink {
		return 0, unix.EINVAL
	}
	var ab [wire.HandleAttrSize]byte
	return c.simple(wire.CmdLinkDetach, handleAttr(ab[:], o.handle, 0))
}

// Offsets in struct bpf_link_info.
const (
	liType      = 0
	liID        = 4
	liProgID    = 8
	linkInfoLen = 64 // sizeof(struct bpf_link_info), Linux 6.18
)

// linkInfo answers BPF_OBJ_GET_INFO_BY_FD for a link: type (bpfd's attach
// type, there being no kernel link type for it), id and program id; the
// union is left zero.
func (c *call) linkInfo(o *object, uinfo uint64, ulen uint32) (int64, error) {
	n, err := c.infoLen(uinfo, ulen, linkInfoLen)
	if err != nil {
		return 0, err
	}
	var info [linkInfoLen]byte
	le := binary.LittleEndian
	le.PutUint32(info[liType:], o.info.Type)
	le.PutUint32(info[liID:], o.info.ID)
	var ab [wire.HandleAttrSize]byte
	if r, err := c.do(wire.CmdLinkInfo, handleAttr(ab[:], o.handle, 0), nil, nil); err == nil {
		closeAll(r.FDs)
		var li wire.LinkInfo
		if r.Errno == 0 && json.Unmarshal(r.Data, &li) == nil {
			le.PutUint32(info[liProgID:], li.ProgID)
		}
	}
	if err := c.write(uinfo, info[:n]); err != nil {
		return 0, err
	}
	return 0, c.writeAttr32(inInfoLen, uint32(n))
}

package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Errors of Bind.
var (
	ErrPermission = errno.New(unix.EPERM, "nfqueue: binding a netfilter queue needs CAP_NET_ADMIN over its network namespace")
	ErrBusy       = errno.New(unix.EBUSY, "nfqueue: the netfilter queue is already bound by another socket")
)

// BindConfig says where Bind binds. nil means the calling thread's
// network namespace.
type BindConfig struct {
	// NetNS is an fd of the network namespace whose queue to bind
	// (0: the calling thread's). Opening a socket in another namespace
	// needs CAP_SYS_ADMIN there (setns).
	NetNS int
}

// Bind opens a NETLINK_NETFILTER socket in the caller's (or cfg.NetNS's)
// network namespace and binds it to nfnetlink_queue queue, with the
// caller's own authority: the kernel checks that the caller may
// administer that namespace (CAP_NET_ADMIN). It returns the socket's fd,
// close-on-exec, which the caller owns (bpfd's client hands it to the
// daemon with an attach request, then closes its copy).
//
// Errors: ErrPermission (EPERM) without CAP_NET_ADMIN, ErrBusy (EBUSY)
// when another socket holds the queue, the socket's own errors otherwise.
func Bind(queue uint16, cfg *BindConfig) (int, error) {
	var ncfg netlink.Config
	if cfg != nil {
		ncfg.NetNS = cfg.NetNS
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &ncfg)
	if err != nil {
		return -1, fmt.Errorf("nfqueue: netlink socket: %w", err)
	}
	defer c.Close()
	// An obsolete command that the kernel accepts as a no-op, after the
	// capability check every nfnetlink message passes: EPERM here means
	// the caller lacks CAP_NET_ADMIN, so EPERM from BIND below means the
	// queue belongs to someone else.
	if err := configCmd(c, queue, cmdPFBind); err != nil {
		if errors.Is(err, unix.EPERM) {
			return -1, ErrPermission
		}
		return -1, fmt.Errorf("nfqueue: %w", err)
	}
	if err := configCmd(c, queue, cmdBind); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) {
			return -1, ErrBusy
		}
		return -1, fmt.Errorf("nfqueue: bind queue %d: %w", queue, err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("nfqueue: dup: %w", derr)
	}
	// Closing c now leaves the socket open through fd: the binding lives
	// as long as the socket does.
	return fd, nil
}

// configCmd sends an NFQNL_CFG_CMD for queue and waits for the
// acknowledgement.
func configCmd(c *netlink.Conn, queue uint16, cmd uint8) error {
	ae := netlink.NewAttributeEncoder()
	// struct nfqnl_msg_config_cmd: u8 command, u8 pad, be16 pf.
	var cc [4]byte
	cc[0] = cmd
	binary.BigEndian.PutUint16(cc[2:], unix.AF_INET)
	ae.Bytes(cfgCmd, cc[:])
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	var hdr [nfgenHdrLen]byte
	hdr[0] = unix.AF_UNSPEC
	binary.BigEndian.PutUint16(hdr[2:], queue)
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(subsysQueue<<8 | msgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr[:], attrs...),
	})
	return err
}

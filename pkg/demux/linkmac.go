package demux

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/nfqueue"
)

// macCache resolves interface indexes of a link's network namespace to
// hardware addresses (rtnetlink RTM_GETLINK in that namespace), for the
// Ethernet headers bpfd synthesizes for XDP programs. A miss refreshes the
// table at most once a second; the hit path allocates nothing. Safe for
// concurrent use.
type macCache struct {
	netns int // borrowed from the queue; -1: unknown namespace

	mu      sync.Mutex
	macs    map[uint32][6]byte // guarded by mu
	refresh time.Time          // guarded by mu
}

func newMacCache(netns int) *macCache {
	return &macCache{netns: netns, macs: map[uint32][6]byte{}}
}

// get writes ifindex's hardware address into out (zeros when unknown).
func (m *macCache) get(ifindex uint32, out *[6]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mac, ok := m.macs[ifindex]; ok {
		*out = mac
		return
	}
	*out = [6]byte{}
	if m.netns < 0 || time.Since(m.refresh) < time.Second {
		return
	}
	m.refresh = time.Now()
	if macs, err := linkAddrs(m.netns); err == nil {
		m.macs = macs
		*out = macs[ifindex]
	}
}

// close forgets the namespace (the queue owns its fd).
func (m *macCache) close() {
	m.mu.Lock()
	m.netns = -1
	m.mu.Unlock()
}

// linkAddrs dumps the interfaces of network namespace netns with their
// 6-byte hardware addresses. The daemon's own namespace is dumped without
// entering it (setns needs CAP_SYS_ADMIN, which bpfd.service does not
// grant); another namespace only with CAP_SYS_ADMIN.
func linkAddrs(netns int) (map[uint32][6]byte, error) {
	cfg := &netlink.Config{NetNS: netns}
	if nfqueue.OwnNetNS(netns) {
		cfg.NetNS = 0
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request | netlink.Dump},
		Data:   make([]byte, unix.SizeofIfInfomsg),
	})
	if err != nil {
		return nil, err
	}
	out := make(map[uint32][6]byte, len(msgs))
	for _, msg := range msgs {
		if len(msg.Data) < unix.SizeofIfInfomsg {
			continue
		}
		idx := binary.NativeEndian.Uint32(msg.Data[4:8])
		ad, err := netlink.NewAttributeDecoder(msg.Data[unix.SizeofIfInfomsg:])
		if err != nil {
			continue
		}
		for ad.Next() {
			if ad.Type() == unix.IFLA_ADDRESS {
				if b := ad.Bytes(); len(b) == 6 {
					out[idx] = [6]byte(b)
				}
			}
		}
	}
	return out, nil
}

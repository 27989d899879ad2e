package prog

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// The routing state bpf_fib_lookup answers from, read through rtnetlink
// (route, rule, link, address, neighbour and netconf dumps) from the
// network namespace of the calling thread: the daemon's, or in a test the
// namespace the test thread entered. Nothing is cached: every lookup sees
// the tables as they are at that moment, as the kernel's does.

// fibLink is a network device.
type fibLink struct {
	index int32
	name  string
	flags uint32 // IFF_*
	mtu   uint32
	addr  []byte // link-layer address
}

// fibAddr is an interface address.
type fibAddr struct {
	index  int32
	local  netip.Addr
	prefix netip.Prefix // the address's subnet
	scope  uint8
	flags  uint32 // IFA_F_*
}

// fibNexthop is one path of a route.
type fibNexthop struct {
	oif   int32
	gw    netip.Addr // invalid: none (IPv4 routes may have an IPv6 gateway)
	flags uint32     // RTNH_F_*
	encap bool       // a lightweight tunnel
}

// fibRoute is one route of one table.
type fibRoute struct {
	table    uint32
	typ      uint8
	scope    uint8
	tos      uint8
	dst      netip.Prefix
	src      netip.Prefix // IPv6 source routing (invalid: none)
	priority uint32
	prefsrc  netip.Addr
	mtu      uint32 // RTAX_MTU metric (0: none)
	mtuLock  bool   // RTAX_LOCK has RTAX_MTU
	pref     uint8  // IPv6 router preference (RTA_PREF)
	expires  bool   // IPv6: has an expiry (RTA_EXPIRES); dumps omit expired ones
	nhs      []fibNexthop
}

// fibRule is one policy routing rule.
type fibRule struct {
	priority   uint32
	action     uint8
	flags      uint32
	table      uint32
	tos        uint8
	src, dst   netip.Prefix // invalid: any
	iif, oif   int32        // 0: any; -1: a name no device has
	mark, mask uint32
	tunID      bool
	l3mdev     bool
	uidStart   uint32
	uidEnd     uint32
	ipProto    uint8
	sport      [2]uint16 // range, 0/0: any
	dport      [2]uint16
	gotoPrio   uint32 // FR_ACT_GOTO target
	suppressPL int32  // -1: none
}

// fibNeigh is one neighbour entry.
type fibNeigh struct {
	index  int32
	dst    netip.Addr
	lladdr []byte
	state  uint16
}

// fibState is what one lookup reads.
type fibState struct {
	links    map[int32]*fibLink
	addrs    []fibAddr
	routes   []fibRoute
	rules    []fibRule
	fwd      map[int32]int32 // netconf forwarding by ifindex (-1: all)
	hasConf  map[int32]bool  // the device has this family's configuration
	neighs   []fibNeigh
	nsFamily int
}

// Netlink constants x/sys/unix lacks.
const (
	rtmGetNetconf   = 82
	rtmNewNetconf   = 80
	netconfaIfindex = 1
	netconfaFwd     = 2

	fraDst             = 1
	fraSrc             = 2
	fraIifname         = 3
	fraGoto            = 4
	fraPriority        = 6
	fraFwmark          = 10
	fraTunID           = 12
	fraSuppressPrefix  = 14
	fraTable           = 15
	fraFwmask          = 16
	fraOifname         = 17
	fraL3mdev          = 19
	fraUIDRange        = 20
	fraIPProto         = 22
	fraSportRange      = 23
	fraDportRange      = 24
	frActToTbl         = 1
	frActGoto          = 2
	frActNop           = 3
	frActBlackhole     = 6
	frActUnreachable   = 7
	frActProhibit      = 8
	fibRuleInvert      = 2
	rtaxLock           = 1
	rtaxMTU            = 2
	nudValid           = unix.NUD_PERMANENT | unix.NUD_NOARP | unix.NUD_REACHABLE | unix.NUD_PROBE | unix.NUD_STALE | unix.NUD_DELAY
	rtnhFDead          = 1
	rtnhFLinkdown      = 16
	ifaFSecondary      = 0x01
	ifaFDadfailed      = 0x08
	ifaFDeprecated     = 0x20
	ifaFTentative      = 0x40
	rtScopeLink        = 253
	rtScopeHost        = 254
	loopbackIfindex    = 1
	rtTableMain        = 254
	rtTableLocal       = 255
	rtTableDefault     = 253
	rtmSizeofRtmsg     = 12
	rtmSizeofIfinfo    = 16
	rtmSizeofIfaddr    = 8
	rtmSizeofNdmsg     = 12
	rtmSizeofRuleHdr   = 12
	rtmSizeofNetconf   = 4
	rtmSizeofRtnexthop = 8
)

var errFibDump = errors.New("malformed rtnetlink dump")

// rtAttrs walks the attributes in b, calling fn with each type (nested
// flag cleared) and payload.
func rtAttrs(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&0x3fff, b[4:l])
		al := (l + 3) &^ 3
		if al > len(b) {
			return
		}
		b = b[al:]
	}
}

// dump runs one rtnetlink dump and calls fn with each message of type
// want and its payload.
func dump(req, family int, want uint16, fn func([]byte)) error {
	b, err := syscall.NetlinkRIB(req, family)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e < 0 {
					return syscall.Errno(-e)
				}
			}
			return errFibDump
		case want:
			fn(m.Data)
		}
	}
	return nil
}

func addrFrom(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a
}

func u32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(b)
}

// readFib reads what a lookup in family needs.
func readFib(family int) (*fibState, error) {
	s := &fibState{links: map[int32]*fibLink{}, fwd: map[int32]int32{}, hasConf: map[int32]bool{}, nsFamily: family}
	err := dump(unix.RTM_GETLINK, unix.AF_UNSPEC, unix.RTM_NEWLINK, func(b []byte) {
		if len(b) < rtmSizeofIfinfo {
			return
		}
		l := &fibLink{index: int32(binary.NativeEndian.Uint32(b[4:])), flags: binary.NativeEndian.Uint32(b[8:])}
		rtAttrs(b[rtmSizeofIfinfo:], func(t uint16, v []byte) {
			switch t {
			case unix.IFLA_ADDRESS:
				l.addr = slices.Clone(v)
			case unix.IFLA_IFNAME:
				if i := slices.Index(v, 0); i >= 0 {
					v = v[:i]
				}
				l.name = string(v)
			case unix.IFLA_MTU:
				l.mtu = u32(v)
			}
		})
		s.links[l.index] = l
	})
	if err != nil {
		return nil, err
	}
	byName := func(name string) int32 {
		for _, l := range s.links {
			if l.name == name {
				return l.index
			}
		}
		return -1
	}
	if err := dump(rtmGetNetconf, family, rtmNewNetconf, func(b []byte) {
		if len(b) < rtmSizeofNetconf {
			return
		}
		var idx int32
		var fwd int32 = -1
		rtAttrs(b[rtmSizeofNetconf:], func(t uint16, v []byte) {
			switch t {
			case netconfaIfindex:
				idx = int32(u32(v))
			case netconfaFwd:
				fwd = int32(u32(v))
			}
		})
		s.hasConf[idx] = true
		s.fwd[idx] = fwd
	}); err != nil {
		return nil, err
	}
	if err := dump(unix.RTM_GETADDR, family, unix.RTM_NEWADDR, func(b []byte) {
		if len(b) < rtmSizeofIfaddr {
			return
		}
		a := fibAddr{index: int32(binary.NativeEndian.Uint32(b[4:])), scope: b[3], flags: uint32(b[2])}
		var address netip.Addr
		rtAttrs(b[rtmSizeofIfaddr:], func(t uint16, v []byte) {
			switch t {
			case unix.IFA_ADDRESS:
				address = addrFrom(v)
			case unix.IFA_LOCAL:
				a.local = addrFrom(v)
			case unix.IFA_FLAGS:
				a.flags = u32(v)
			}
		})
		if !a.local.IsValid() {
			a.local = address
		}
		if !a.local.IsValid() {
			return
		}
		a.prefix, _ = a.local.Prefix(int(b[1]))
		s.addrs = append(s.addrs, a)
	}); err != nil {
		return nil, err
	}
	if err := dump(unix.RTM_GETROUTE, family, unix.RTM_NEWROUTE, func(b []byte) {
		if len(b) < rtmSizeofRtmsg {
			return
		}
		r := fibRoute{table: uint32(b[4]), typ: b[7], scope: b[6], tos: b[3]}
		dstLen, srcLen := int(b[1]), int(b[2])
		flags := binary.NativeEndian.Uint32(b[8:])
		var dst, src netip.Addr
		nh := fibNexthop{flags: flags}
		var multi []byte
		rtAttrs(b[rtmSizeofRtmsg:], func(t uint16, v []byte) {
			switch t {
			case unix.RTA_DST:
				dst = addrFrom(v)
			case unix.RTA_SRC:
				src = addrFrom(v)
			case unix.RTA_OIF:
				nh.oif = int32(u32(v))
			case unix.RTA_GATEWAY:
				nh.gw = addrFrom(v)
			case unix.RTA_VIA:
				if len(v) >= 2 {
					nh.gw = addrFrom(v[2:])
				}
			case unix.RTA_ENCAP:
				nh.encap = true
			case unix.RTA_PRIORITY:
				r.priority = u32(v)
			case unix.RTA_PREFSRC:
				r.prefsrc = addrFrom(v)
			case unix.RTA_TABLE:
				r.table = u32(v)
			case unix.RTA_PREF:
				if len(v) > 0 {
					r.pref = v[0]
				}
			case unix.RTA_EXPIRES:
				r.expires = true
			case unix.RTA_MULTIPATH:
				multi = v
			case unix.RTA_METRICS:
				rtAttrs(v, func(t uint16, v []byte) {
					switch t {
					case rtaxMTU:
						r.mtu = u32(v)
					case rtaxLock:
						r.mtuLock = u32(v)&(1<<rtaxMTU) != 0
					}
				})
			}
		})
		zero := netip.IPv4Unspecified()
		if family == unix.AF_INET6 {
			zero = netip.IPv6Unspecified()
		}
		if !dst.IsValid() {
			dst = zero
		}
		r.dst, _ = dst.Prefix(dstLen)
		if srcLen > 0 && src.IsValid() {
			r.src, _ = src.Prefix(srcLen)
		}
		if multi != nil {
			for len(multi) >= rtmSizeofRtnexthop {
				l := int(binary.NativeEndian.Uint16(multi))
				if l < rtmSizeofRtnexthop || l > len(multi) {
					break
				}
				p := fibNexthop{flags: uint32(multi[2]), oif: int32(binary.NativeEndian.Uint32(multi[4:]))}
				rtAttrs(multi[rtmSizeofRtnexthop:l], func(t uint16, v []byte) {
					switch t {
					case unix.RTA_GATEWAY:
						p.gw = addrFrom(v)
					case unix.RTA_VIA:
						if len(v) >= 2 {
							p.gw = addrFrom(v[2:])
						}
					case unix.RTA_ENCAP:
						p.encap = true
					}
				})
				r.nhs = append(r.nhs, p)
				multi = multi[(l+3)&^3:]
			}
		} else {
			r.nhs = []fibNexthop{nh}
		}
		s.routes = append(s.routes, r)
	}); err != nil {
		return nil, err
	}
	if err := dump(unix.RTM_GETRULE, family, unix.RTM_NEWRULE, func(b []byte) {
		if len(b) < rtmSizeofRuleHdr {
			return
		}
		r := fibRule{table: uint32(b[4]), action: b[7], tos: b[3], flags: binary.NativeEndian.Uint32(b[8:]), suppressPL: -1, uidEnd: ^uint32(0)}
		dstLen, srcLen := int(b[1]), int(b[2])
		var hasMark, hasMask bool
		rtAttrs(b[rtmSizeofRuleHdr:], func(t uint16, v []byte) {
			switch t {
			case fraDst:
				r.dst, _ = addrFrom(v).Prefix(dstLen)
			case fraSrc:
				r.src, _ = addrFrom(v).Prefix(srcLen)
			case fraIifname:
				r.iif = byName(string(trimNul(v)))
			case fraOifname:
				r.oif = byName(string(trimNul(v)))
			case fraGoto:
				r.gotoPrio = u32(v)
			case fraPriority:
				r.priority = u32(v)
			case fraFwmark:
				r.mark, hasMark = u32(v), true
			case fraFwmask:
				r.mask, hasMask = u32(v), true
			case fraTunID:
				r.tunID = true
			case fraSuppressPrefix:
				r.suppressPL = int32(u32(v))
			case fraTable:
				r.table = u32(v)
			case fraL3mdev:
				r.l3mdev = len(v) > 0 && v[0] != 0
			case fraUIDRange:
				if len(v) >= 8 {
					r.uidStart, r.uidEnd = u32(v), u32(v[4:])
				}
			case fraIPProto:
				if len(v) > 0 {
					r.ipProto = v[0]
				}
			case fraSportRange:
				if len(v) >= 4 {
					r.sport = [2]uint16{binary.NativeEndian.Uint16(v), binary.NativeEndian.Uint16(v[2:])}
				}
			case fraDportRange:
				if len(v) >= 4 {
					r.dport = [2]uint16{binary.NativeEndian.Uint16(v), binary.NativeEndian.Uint16(v[2:])}
				}
			}
		})
		if hasMark && !hasMask {
			r.mask = ^uint32(0)
		}
		s.rules = append(s.rules, r)
	}); err != nil {
		return nil, err
	}
	slices.SortStableFunc(s.rules, func(a, b fibRule) int { return int64Cmp(int64(a.priority), int64(b.priority)) })
	if err := dump(unix.RTM_GETNEIGH, family, unix.RTM_NEWNEIGH, func(b []byte) {
		if len(b) < rtmSizeofNdmsg {
			return
		}
		n := fibNeigh{index: int32(binary.NativeEndian.Uint32(b[4:])), state: binary.NativeEndian.Uint16(b[8:])}
		rtAttrs(b[rtmSizeofNdmsg:], func(t uint16, v []byte) {
			switch t {
			case unix.NDA_DST:
				n.dst = addrFrom(v)
			case unix.NDA_LLADDR:
				n.lladdr = slices.Clone(v)
			}
		})
		s.neighs = append(s.neighs, n)
	}); err != nil {
		return nil, err
	}
	return s, nil
}

func trimNul(v []byte) []byte {
	if i := slices.Index(v, 0); i >= 0 {
		return v[:i]
	}
	return v
}

func int64Cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// neigh returns the neighbour entry for addr on the device, if valid.
func (s *fibState) neigh(index int32, addr netip.Addr) *fibNeigh {
	for i := range s.neighs {
		n := &s.neighs[i]
		if n.index == index && n.dst == addr {
			if n.state&nudValid == 0 {
				return nil
			}
			return n
		}
	}
	return nil
}

// defaultRules reports whether the rules are the ones a namespace starts
// with (IPv4: local, main, default), so the kernel's local and main
// tables are still merged into one.
func (s *fibState) defaultRules() bool {
	if len(s.rules) != 3 {
		return false
	}
	for i, want := range [][2]uint32{{0, rtTableLocal}, {32766, rtTableMain}, {32767, rtTableDefault}} {
		r := s.rules[i]
		if r.priority != want[0] || r.table != want[1] || r.action != frActToTbl || r.src.IsValid() || r.dst.IsValid() ||
			r.iif != 0 || r.oif != 0 || r.mask != 0 || r.tos != 0 || r.flags != 0 || r.ipProto != 0 || r.suppressPL != -1 {
			return false
		}
	}
	return true
}

// tableExists reports whether the kernel would find table id.
func (s *fibState) tableExists(id uint32) bool {
	if id == rtTableMain || id == rtTableLocal {
		return true
	}
	for i := range s.routes {
		if s.routes[i].table == id {
			return true
		}
	}
	return false
}

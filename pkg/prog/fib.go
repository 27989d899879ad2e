package prog

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

// bpf_fib_lookup: struct bpf_fib_lookup (linux/bpf.h), its flags and
// return codes.
const (
	fibParamsSize = 64

	fibFamily   = 0  // u8 in: AF_INET/AF_INET6; out: the nexthop's
	fibL4Proto  = 1  // u8
	fibSport    = 2  // be16
	fibDport    = 4  // be16
	fibTotLen   = 6  // u16 in: L3 length; out: mtu_result
	fibIfindex  = 8  // u32 in: L3 device; out: egress device
	fibTos      = 12 // u8 tos (IPv4), be32 flowinfo (IPv6); out: u32 rt_metric
	fibSrc      = 16 // be32 / in6_addr
	fibDst      = 32 // be32 / in6_addr; out: the gateway if any
	fibVlanTbid = 48 // out: be16 h_vlan_proto, be16 h_vlan_TCI; in: u32 tbid
	fibMark     = 52 // in: u32 mark; out: smac[6], dmac[6]
	fibSmac     = 52
	fibDmac     = 58

	// BPF_FIB_LOOKUP_* flags.
	FibLookupDirect    = 1 << 0
	FibLookupOutput    = 1 << 1
	FibLookupSkipNeigh = 1 << 2
	FibLookupTBID      = 1 << 3
	FibLookupSrc       = 1 << 4
	FibLookupMark      = 1 << 5
	fibLookupMask      = FibLookupDirect | FibLookupOutput | FibLookupSkipNeigh | FibLookupTBID | FibLookupSrc | FibLookupMark

	// BPF_FIB_LKUP_RET_* codes.
	FibRetSuccess     = 0
	FibRetBlackhole   = 1
	FibRetUnreachable = 2
	FibRetProhibit    = 3
	FibRetNotFwded    = 4
	FibRetFwdDisabled = 5
	FibRetUnsuppLWT   = 6
	FibRetNoNeigh     = 7
	FibRetFragNeeded  = 8
	FibRetNoSrcAddr   = 9
)

// fibFlow is the flow a lookup routes (the kernel's flowi4/flowi6).
type fibFlow struct {
	iif, oif     int32
	dst, src     netip.Addr
	tos          uint8 // IPv4: the TOS byte; IPv6: the traffic class
	proto        uint8
	sport, dport uint16 // host order
	mark         uint32
	// IPv6 only: the device routes are scored against (the lookup's
	// device, input or output), and whether the source address counts
	// for rules (RT6_LOOKUP_F_HAS_SADDR: input lookups only).
	scoreOif int32
	hasSaddr bool
	v6       bool
}

// What bpf_fib_lookup cannot see from userspace, so answers differently
// from the kernel (docs/programs.md): the hash choosing a multipath
// route's nexthop (bpfd takes the first live one), path MTU exceptions
// and per-device IPv6 MTUs, VRFs (l3mdev rules never match), whether the
// IPv4 local and main tables were ever unmerged (inferred from the rules
// being the defaults), empty tables, and RFC 6724 source selection rules
// beyond 1, 2, 3, 5, 6 and 8.

// helperFibLookup is bpf_fib_lookup(ctx, params, plen, flags) for XDP
// (bpf_xdp_fib_lookup: MTU checked), answered from the routing, rule,
// neighbour and device tables of the calling thread's network namespace
// (fib_tables.go).
func helperFibLookup(vm *interp.VM, _, r2, r3, r4, _ uint64) (uint64, error) {
	plen := int(int32(r3))
	if plen < 0 {
		plen = 0
	}
	p, err := vm.MemAccess(r2, plen, interp.Read|interp.Write)
	if err != nil {
		return 0, err
	}
	if plen < fibParamsSize {
		return errRet(unix.EINVAL), nil
	}
	if uint32(r4)&^fibLookupMask != 0 || r4>>32 != 0 {
		return errRet(unix.EINVAL), nil
	}
	flags := uint32(r4)
	switch p[fibFamily] {
	case unix.AF_INET:
		return fibLookup4(p, flags), nil
	case unix.AF_INET6:
		return fibLookup6(p, flags), nil
	}
	return errRet(unix.EAFNOSUPPORT), nil
}

func fibRet(code int) uint64 { return uint64(code) }

// fibDumpErr is what a lookup answers when the tables cannot be read.
func fibDumpErr(err error) uint64 {
	if e, ok := err.(unix.Errno); ok {
		return errRet(e)
	}
	return errRet(unix.EIO)
}

// fibSetFwdParams is bpf_fib_set_fwd_params: no VLAN, the MTU.
func fibSetFwdParams(p []byte, mtu uint32) uint64 {
	binary.BigEndian.PutUint32(p[fibVlanTbid:], 0)
	if mtu != 0 {
		binary.NativeEndian.PutUint16(p[fibTotLen:], uint16(mtu))
	}
	return fibRet(FibRetSuccess)
}

// flowFromParams reads the flow fields common to both families.
func flowFromParams(p []byte, flags uint32) fibFlow {
	ifindex := int32(binary.NativeEndian.Uint32(p[fibIfindex:]))
	fl := fibFlow{
		proto: p[fibL4Proto],
		sport: binary.BigEndian.Uint16(p[fibSport:]),
		dport: binary.BigEndian.Uint16(p[fibDport:]),
	}
	if flags&FibLookupOutput != 0 {
		fl.iif, fl.oif = loopbackIfindex, ifindex
	} else {
		fl.iif = ifindex
	}
	if flags&FibLookupMark != 0 && flags&FibLookupDirect == 0 {
		fl.mark = binary.NativeEndian.Uint32(p[fibMark:])
	}
	return fl
}

// fibLookup4 is bpf_ipv4_fib_lookup with check_mtu.
func fibLookup4(p []byte, flags uint32) uint64 {
	s, err := readFib(unix.AF_INET)
	if err != nil {
		return fibDumpErr(err)
	}
	ifindex := int32(binary.NativeEndian.Uint32(p[fibIfindex:]))
	if _, ok := s.links[ifindex]; !ok {
		return errRet(unix.ENODEV)
	}
	if !s.hasConf[ifindex] || s.fwd[ifindex] <= 0 {
		return fibRet(FibRetFwdDisabled)
	}
	fl := flowFromParams(p, flags)
	fl.tos = p[fibTos]
	fl.dst = netip.AddrFrom4([4]byte(p[fibDst : fibDst+4]))
	fl.src = netip.AddrFrom4([4]byte(p[fibSrc : fibSrc+4]))

	var r *fibRoute
	var nh *fibNexthop
	var e unix.Errno
	if flags&FibLookupDirect != 0 {
		tbid := directTable(p, flags)
		if !s.tableExists(tbid) {
			return fibRet(FibRetNotFwded)
		}
		r, nh, e = s.lookup4(s.tableSet4(tbid), &fl)
	} else {
		r, nh, e = s.rules4(&fl)
	}
	switch e {
	case 0:
	case unix.EINVAL:
		return fibRet(FibRetBlackhole)
	case unix.EHOSTUNREACH:
		return fibRet(FibRetUnreachable)
	case unix.EACCES:
		return fibRet(FibRetProhibit)
	default:
		return fibRet(FibRetNotFwded)
	}
	if r.typ != unix.RTN_UNICAST {
		return fibRet(FibRetNotFwded)
	}
	// ip_mtu_from_fib_result: a locked route MTU, else the device's
	// (path MTU exceptions are not visible here).
	dev := s.links[nh.oif]
	var mtu uint32
	if r.mtuLock {
		mtu = r.mtu
	}
	if mtu == 0 && dev != nil {
		mtu = min(dev.mtu, 0xffff)
	}
	if uint32(binary.NativeEndian.Uint16(p[fibTotLen:])) > mtu {
		binary.NativeEndian.PutUint16(p[fibTotLen:], uint16(mtu))
		return fibRet(FibRetFragNeeded)
	}
	if nh.encap {
		return fibRet(FibRetUnsuppLWT)
	}
	binary.NativeEndian.PutUint32(p[fibTos:], r.priority)
	binary.NativeEndian.PutUint32(p[fibIfindex:], uint32(nh.oif))
	if flags&FibLookupSrc != 0 {
		src := r.prefsrc
		if !src.IsValid() {
			var gw netip.Addr
			if nh.gw.Is4() {
				gw = nh.gw
			}
			src = s.selectAddr4(nh.oif, gw, r.scope)
		}
		if !src.IsValid() {
			return fibRet(FibRetNoSrcAddr)
		}
		a := src.As4()
		copy(p[fibSrc:fibSrc+4], a[:])
	}
	dst := fl.dst
	switch {
	case nh.gw.Is4():
		dst = nh.gw
		a := dst.As4()
		copy(p[fibDst:fibDst+4], a[:])
	case nh.gw.Is6():
		dst = nh.gw
		p[fibFamily] = unix.AF_INET6
		a := dst.As16()
		copy(p[fibDst:fibDst+16], a[:])
	}
	if flags&FibLookupSkipNeigh == 0 {
		key := dst
		if dev != nil && dev.flags&(unix.IFF_LOOPBACK|unix.IFF_POINTOPOINT) != 0 && key.Is4() {
			key = netip.IPv4Unspecified()
		}
		if dst.Is6() {
			s6, err := readFib(unix.AF_INET6)
			if err != nil {
				return fibDumpErr(err)
			}
			s.neighs = s6.neighs
		}
		n := s.neigh(nh.oif, key)
		if n == nil {
			return fibRet(FibRetNoNeigh)
		}
		fibSetMacs(p, n.lladdr, dev)
	}
	return fibSetFwdParams(p, mtu)
}

func fibSetMacs(p, lladdr []byte, dev *fibLink) {
	var d, s [6]byte
	copy(d[:], lladdr)
	if dev != nil {
		copy(s[:], dev.addr)
	}
	copy(p[fibDmac:fibDmac+6], d[:])
	copy(p[fibSmac:fibSmac+6], s[:])
}

// tableSet4 is the set of tables a lookup in table id searches: while
// the rules are the defaults, the kernel keeps local and main merged.
func (s *fibState) tableSet4(id uint32) func(uint32) bool {
	if (id == rtTableMain || id == rtTableLocal) && s.defaultRules() {
		return func(t uint32) bool { return t == rtTableMain || t == rtTableLocal }
	}
	return func(t uint32) bool { return t == id }
}

// lookup4 is fib_table_lookup over the tables in set: the longest
// matching prefix, then routes by TOS and priority; a reject route ends
// the lookup with its error; a route whose nexthops are all dead or (for
// an output lookup) on another device is skipped. EAGAIN: no route.
func (s *fibState) lookup4(set func(uint32) bool, fl *fibFlow) (*fibRoute, *fibNexthop, unix.Errno) {
	var cands []*fibRoute
	for i := range s.routes {
		r := &s.routes[i]
		if set(r.table) && r.dst.Contains(fl.dst) {
			cands = append(cands, r)
		}
	}
	slices.SortStableFunc(cands, func(a, b *fibRoute) int {
		if a.dst.Bits() != b.dst.Bits() {
			return b.dst.Bits() - a.dst.Bits()
		}
		if a.tos != b.tos {
			return int(b.tos) - int(a.tos)
		}
		return int64Cmp(int64(a.priority), int64(b.priority))
	})
	for _, r := range cands {
		if r.tos != 0 && r.tos != fl.tos&0x1c {
			continue
		}
		switch r.typ {
		case unix.RTN_BLACKHOLE, unix.RTN_NAT, unix.RTN_XRESOLVE:
			return nil, nil, unix.EINVAL
		case unix.RTN_UNREACHABLE:
			return nil, nil, unix.EHOSTUNREACH
		case unix.RTN_PROHIBIT:
			return nil, nil, unix.EACCES
		case unix.RTN_THROW:
			return nil, nil, unix.EAGAIN
		}
		for i := range r.nhs {
			nh := &r.nhs[i]
			if nh.flags&rtnhFDead != 0 || fl.oif != 0 && nh.oif != fl.oif {
				continue
			}
			return r, nh, 0
		}
	}
	return nil, nil, unix.EAGAIN
}

// rules4 is fib_lookup: the policy rules, or while they are the
// defaults the merged main table then the default table.
func (s *fibState) rules4(fl *fibFlow) (*fibRoute, *fibNexthop, unix.Errno) {
	if s.defaultRules() {
		r, nh, e := s.lookup4(s.tableSet4(rtTableMain), fl)
		if e != 0 && s.tableExists(rtTableDefault) {
			r, nh, e = s.lookup4(s.tableSet4(rtTableDefault), fl)
		}
		if e == unix.EAGAIN {
			e = unix.ENETUNREACH
		}
		return r, nh, e
	}
	for i := 0; i < len(s.rules); i++ {
		rule := &s.rules[i]
	jumped:
		if !s.ruleMatch(rule, fl) {
			continue
		}
		var r *fibRoute
		var nh *fibNexthop
		var e unix.Errno
		switch rule.action {
		case frActGoto:
			j := slices.IndexFunc(s.rules, func(x fibRule) bool { return x.priority == rule.gotoPrio })
			if j < 0 {
				continue
			}
			i, rule = j, &s.rules[j]
			goto jumped
		case frActNop:
			continue
		case frActToTbl:
			e = unix.EAGAIN
			if s.tableExists(rule.table) {
				r, nh, e = s.lookup4(s.tableSet4(rule.table), fl)
			}
		case frActUnreachable:
			e = unix.ENETUNREACH
		case frActProhibit:
			e = unix.EACCES
		default:
			e = unix.EINVAL
		}
		if e == 0 && rule.suppressPL >= 0 && r.dst.Bits() <= int(rule.suppressPL) {
			continue
		}
		if e != unix.EAGAIN {
			return r, nh, e
		}
	}
	return nil, nil, unix.ENETUNREACH
}

// ruleMatch is fib_rule_match with fib4_rule_match / fib6_rule_match.
func (s *fibState) ruleMatch(r *fibRule, fl *fibFlow) bool {
	m := func() bool {
		if r.iif != 0 && r.iif != fl.iif || r.oif != 0 && r.oif != fl.oif {
			return false
		}
		if (r.mark^fl.mark)&r.mask != 0 || r.tunID || r.l3mdev {
			return false
		}
		if r.uidStart > 0 { // the lookup's uid is 0
			return false
		}
		if r.src.IsValid() && (!r.src.Contains(fl.src) || fl.v6 && !fl.hasSaddr) || r.dst.IsValid() && !r.dst.Contains(fl.dst) {
			return false
		}
		if r.tos != 0 && r.tos&0xfc != fl.tos&0xfc {
			return false
		}
		if r.ipProto != 0 && r.ipProto != fl.proto {
			return false
		}
		if r.sport != [2]uint16{} && (fl.sport < r.sport[0] || fl.sport > r.sport[1]) {
			return false
		}
		if r.dport != [2]uint16{} && (fl.dport < r.dport[0] || fl.dport > r.dport[1]) {
			return false
		}
		return true
	}()
	if r.flags&fibRuleInvert != 0 {
		return !m
	}
	return m
}

// selectAddr4 is inet_select_addr: a primary address of the device of
// at most scope, preferring one on dst's subnet; else one of any device
// not of link scope.
func (s *fibState) selectAddr4(index int32, dst netip.Addr, scope uint8) netip.Addr {
	var addr netip.Addr
	for _, a := range s.addrs {
		if a.index != index || a.flags&ifaFSecondary != 0 || !a.local.Is4() {
			continue
		}
		if min(a.scope, rtScopeHost) > scope {
			continue
		}
		if !dst.IsValid() || a.prefix.Contains(dst) {
			return a.local
		}
		if !addr.IsValid() {
			addr = a.local
		}
	}
	if addr.IsValid() {
		return addr
	}
	idx := make([]int32, 0, len(s.links))
	for i := range s.links {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		for _, a := range s.addrs {
			if a.index == i && a.flags&ifaFSecondary == 0 && a.local.Is4() && a.scope != rtScopeLink && a.scope <= scope {
				return a.local
			}
		}
	}
	return netip.Addr{}
}

// fibLookup6 is bpf_ipv6_fib_lookup with check_mtu.
func fibLookup6(p []byte, flags uint32) uint64 {
	dst := netip.AddrFrom16([16]byte(p[fibDst : fibDst+16]))
	src := netip.AddrFrom16([16]byte(p[fibSrc : fibSrc+16]))
	// Link-local, multicast and loopback addresses are never forwarded.
	if need6Strict(dst) || need6Strict(src) {
		return fibRet(FibRetNotFwded)
	}
	s, err := readFib(unix.AF_INET6)
	if err != nil {
		return fibDumpErr(err)
	}
	ifindex := int32(binary.NativeEndian.Uint32(p[fibIfindex:]))
	if _, ok := s.links[ifindex]; !ok {
		return errRet(unix.ENODEV)
	}
	if !s.hasConf[ifindex] || s.fwd[-1] <= 0 {
		return fibRet(FibRetFwdDisabled)
	}
	fl := flowFromParams(p, flags)
	fl.dst, fl.src = dst, src
	fl.tos = uint8(binary.BigEndian.Uint32(p[fibTos:]) >> 20)
	// bpf_ipv6_fib_lookup scores routes against the device in both
	// directions, and only input lookups pass the source to the rules.
	fl.v6, fl.scoreOif, fl.hasSaddr = true, ifindex, flags&FibLookupOutput == 0

	var r *fibRoute
	var nh *fibNexthop
	if flags&FibLookupDirect != 0 {
		tbid := directTable(p, flags)
		if !s.tableExists(tbid) {
			return fibRet(FibRetNotFwded)
		}
		r, nh = s.lookup6(tbid, &fl)
	} else {
		var ok bool
		if r, nh, ok = s.rules6(&fl); !ok {
			return fibRet(FibRetNotFwded)
		}
	}
	if r == nil {
		return fibRet(FibRetNotFwded)
	}
	switch r.typ {
	case unix.RTN_UNICAST:
	case unix.RTN_BLACKHOLE:
		return fibRet(FibRetBlackhole)
	case unix.RTN_UNREACHABLE:
		return fibRet(FibRetUnreachable)
	case unix.RTN_PROHIBIT:
		return fibRet(FibRetProhibit)
	default:
		return fibRet(FibRetNotFwded)
	}
	// ip6_mtu_from_fib6: a locked route MTU, else the device's IPv6 MTU
	// (path MTU exceptions are not visible here).
	dev := s.links[nh.oif]
	var mtu uint32
	if r.mtuLock {
		mtu = r.mtu
	}
	if mtu == 0 {
		mtu = 1280
		if dev != nil {
			mtu = max(mtu, dev.mtu)
		}
	}
	mtu = min(mtu, 0xffff+40)
	if uint32(binary.NativeEndian.Uint16(p[fibTotLen:])) > mtu {
		binary.NativeEndian.PutUint16(p[fibTotLen:], uint16(mtu))
		return fibRet(FibRetFragNeeded)
	}
	if nh.encap {
		return fibRet(FibRetUnsuppLWT)
	}
	next := dst
	if nh.gw.IsValid() {
		next = nh.gw
		a := next.As16()
		copy(p[fibDst:fibDst+16], a[:])
	}
	binary.NativeEndian.PutUint32(p[fibTos:], r.priority)
	binary.NativeEndian.PutUint32(p[fibIfindex:], uint32(nh.oif))
	if flags&FibLookupSrc != 0 {
		a := r.prefsrc
		if !a.IsValid() {
			a = s.selectAddr6(nh.oif, dst)
		}
		if !a.IsValid() {
			return fibRet(FibRetNoSrcAddr)
		}
		b := a.As16()
		copy(p[fibSrc:fibSrc+16], b[:])
	}
	if flags&FibLookupSkipNeigh == 0 {
		n := s.neigh(nh.oif, next)
		if n == nil {
			return fibRet(FibRetNoNeigh)
		}
		fibSetMacs(p, n.lladdr, dev)
	}
	return fibSetFwdParams(p, mtu)
}

// need6Strict is rt6_need_strict: multicast, link-local or loopback.
func need6Strict(a netip.Addr) bool {
	return a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsLoopback()
}

// lookup6 is fib6_table_lookup in table id: the longest matching
// destination (then source) prefix with a usable route; among its routes
// those of the lowest metric first, the best scored (on the lookup's
// output device, router preference) winning, the others only when none
// of those is usable.
func (s *fibState) lookup6(id uint32, fl *fibFlow) (*fibRoute, *fibNexthop) {
	var cands []*fibRoute
	for i := range s.routes {
		r := &s.routes[i]
		if r.table == id && r.dst.Contains(fl.dst) && (!r.src.IsValid() || r.src.Contains(fl.src)) {
			cands = append(cands, r)
		}
	}
	slices.SortStableFunc(cands, func(a, b *fibRoute) int {
		if a.dst.Bits() != b.dst.Bits() {
			return b.dst.Bits() - a.dst.Bits()
		}
		if a.src.Bits() != b.src.Bits() {
			return b.src.Bits() - a.src.Bits()
		}
		return int64Cmp(int64(a.priority), int64(b.priority))
	})
	for len(cands) > 0 {
		n := 1
		for n < len(cands) && cands[n].dst == cands[0].dst && cands[n].src == cands[0].src {
			n++
		}
		node := cands[:n]
		cands = cands[n:]
		first := 0
		for first < len(node) && node[first].priority == node[0].priority {
			first++
		}
		for _, group := range [][]*fibRoute{node[:first], node[first:]} {
			var best *fibRoute
			var bestNh *fibNexthop
			score := -1
			for _, r := range group {
				nh := &r.nhs[0]
				if nh.flags&rtnhFDead != 0 {
					continue
				}
				m := 0
				if fl.scoreOif == 0 || nh.oif == fl.scoreOif {
					m = 2
				}
				m |= int(r.pref^2) << 2
				if m > score {
					best, bestNh, score = r, nh, m
				}
			}
			if best != nil {
				// fib6_select_path: the first live nexthop of a
				// multipath route (the kernel hashes the flow).
				for i := range best.nhs {
					if best.nhs[i].flags&rtnhFDead == 0 {
						return best, &best.nhs[i]
					}
				}
				return best, bestNh
			}
		}
	}
	return nil, nil
}

// rules6 is fib6_lookup through the policy rules; ok false: a rule
// refused the lookup.
func (s *fibState) rules6(fl *fibFlow) (*fibRoute, *fibNexthop, bool) {
	for i := 0; i < len(s.rules); i++ {
		rule := &s.rules[i]
	jumped:
		if !s.ruleMatch6(rule, fl) {
			continue
		}
		switch rule.action {
		case frActGoto:
			j := slices.IndexFunc(s.rules, func(x fibRule) bool { return x.priority == rule.gotoPrio })
			if j < 0 {
				continue
			}
			i, rule = j, &s.rules[j]
			goto jumped
		case frActNop:
			continue
		case frActToTbl:
			if !s.tableExists(rule.table) {
				continue
			}
			r, nh := s.lookup6(rule.table, fl)
			if r == nil || rule.suppressPL >= 0 && r.dst.Bits() <= int(rule.suppressPL) {
				continue
			}
			return r, nh, true
		default:
			return nil, nil, false
		}
	}
	return nil, nil, true
}

// ruleMatch6 is ruleMatch with the IPv6 DSCP of the traffic class.
func (s *fibState) ruleMatch6(r *fibRule, fl *fibFlow) bool {
	return s.ruleMatch(r, fl)
}

// ip6Label is the label of the kernel's default address selection
// policy table (RFC 6724).
func ip6Label(a netip.Addr) int {
	for _, e := range []struct {
		p string
		l int
	}{{"::1/128", 0}, {"2001:10::/28", 7}, {"2001:20::/28", 8}, {"::ffff:0:0/96", 4}, {"2001::/32", 6}, {"2002::/16", 2},
		{"3ffe::/16", 12}, {"fec0::/10", 11}, {"fc00::/7", 5}, {"::/96", 3}} {
		if netip.MustParsePrefix(e.p).Contains(a) {
			return e.l
		}
	}
	return 1
}

// scope6 is the RFC 4291 scope of an address (1 node, 2 link, 5 site,
// 14 global).
func scope6(a netip.Addr) int {
	switch {
	case a.IsLoopback():
		return 1
	case a.IsLinkLocalUnicast():
		return 2
	case netip.MustParsePrefix("fec0::/10").Contains(a):
		return 5
	case a.IsMulticast():
		return int(a.As16()[1] & 0xf)
	}
	return 14
}

// selectAddr6 is ipv6_dev_get_saddr's source address selection (RFC
// 6724 rules 1 same address, 2 scope, 3 not deprecated, 5 outgoing
// interface, 6 label, 8 longest matching prefix) over the addresses of
// every device (of the outgoing one only for link-scope destinations).
func (s *fibState) selectAddr6(oif int32, dst netip.Addr) netip.Addr {
	dscope := scope6(dst)
	var best *fibAddr
	var bestKey []int
	for i := range s.addrs {
		a := &s.addrs[i]
		if !a.local.Is6() || a.local.Is4In6() || a.flags&(ifaFTentative|ifaFDadfailed) != 0 || a.local.IsMulticast() || a.local.IsUnspecified() {
			continue
		}
		if dscope <= 2 && a.index != oif {
			continue
		}
		sc := scope6(a.local)
		scopeKey := -sc
		if sc < dscope {
			scopeKey = sc - 128
		}
		common := 0
		x, y := a.local.As16(), dst.As16()
		for common < 128 && (x[common/8]>>(7-common%8))&1 == (y[common/8]>>(7-common%8))&1 {
			common++
		}
		common = min(common, a.prefix.Bits())
		key := []int{b2i(a.local == dst), scopeKey, b2i(a.flags&ifaFDeprecated == 0), b2i(a.index == oif), b2i(ip6Label(a.local) == ip6Label(dst)), common}
		if best == nil || slices.Compare(key, bestKey) > 0 {
			best, bestKey = a, key
		}
	}
	if best == nil {
		return netip.Addr{}
	}
	return best.local
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// directTable is the table a BPF_FIB_LOOKUP_DIRECT lookup uses: main, or
// with BPF_FIB_LOOKUP_TBID the one params names (its field is cleared, as
// the kernel does; 0 is main, as fib_get_table's).
func directTable(p []byte, flags uint32) uint32 {
	if flags&FibLookupTBID == 0 {
		return rtTableMain
	}
	tbid := binary.NativeEndian.Uint32(p[fibVlanTbid:])
	binary.NativeEndian.PutUint32(p[fibVlanTbid:], 0)
	if tbid == 0 {
		return rtTableMain
	}
	return tbid
}

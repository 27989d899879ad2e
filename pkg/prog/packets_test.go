package prog_test

import "encoding/binary"

// Packet builders for tests: Ethernet frames carrying IPv4 or IPv6 with TCP
// or UDP, checksums left zero (nothing here checks them).

const (
	ipProtoTCP = 6
	ipProtoUDP = 17
)

func ethernet(etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

func l4(proto uint8, sport, dport uint16) []byte {
	if proto == ipProtoTCP {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], sport)
		binary.BigEndian.PutUint16(h[2:], dport)
		h[12] = 5 << 4
		return h
	}
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], 8)
	return h
}

func ipv4(proto uint8, sport, dport uint16) []byte {
	seg := l4(proto, sport, dport)
	h := make([]byte, 20, 20+len(seg))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(seg)))
	h[8] = 64
	h[9] = proto
	copy(h[12:], []byte{10, 0, 0, 1})
	copy(h[16:], []byte{10, 0, 0, 2})
	return ethernet(0x0800, append(h, seg...))
}

func ipv6(proto uint8, sport, dport uint16) []byte {
	seg := l4(proto, sport, dport)
	h := make([]byte, 40, 40+len(seg))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(seg)))
	h[6] = proto
	h[7] = 64
	h[8], h[23] = 0xfd, 1
	h[24], h[39] = 0xfd, 2
	return ethernet(0x86dd, append(h, seg...))
}

// testPackets covers every branch of the fixtures' parsers.
func testPackets() map[string][]byte {
	arp := ethernet(0x0806, make([]byte, 28))
	badIHL := ipv4(ipProtoTCP, 1, 80)
	badIHL[14] = 0x44
	icmp := ipv4(1, 0, 0)
	return map[string][]byte{
		"ipv4 tcp 80":       ipv4(ipProtoTCP, 40000, 80),
		"ipv4 tcp 22":       ipv4(ipProtoTCP, 40000, 22),
		"ipv4 udp 53":       ipv4(ipProtoUDP, 5353, 53),
		"ipv4 udp 123":      ipv4(ipProtoUDP, 123, 123),
		"ipv6 tcp 443":      ipv6(ipProtoTCP, 50000, 443),
		"ipv6 udp 53":       ipv6(ipProtoUDP, 5353, 53),
		"ipv6 udp 9":        ipv6(ipProtoUDP, 9, 9),
		"arp":               arp,
		"icmp":              icmp,
		"ipv4 bad ihl":      badIHL,
		"ipv4 truncated":    ipv4(ipProtoTCP, 1, 80)[:30],
		"ipv6 truncated":    ipv6(ipProtoUDP, 1, 53)[:50],
		"ipv4 tcp trunc l4": ipv4(ipProtoTCP, 1, 80)[:40],
		"ethernet only":     ethernet(0x0800, nil),
		"big":               append(ipv4(ipProtoUDP, 1, 53), make([]byte, 1400)...),
	}
}

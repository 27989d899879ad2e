package prog_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// fibProg is an XDP program that copies struct bpf_fib_lookup from the
// first 64 bytes of the packet to the stack, calls bpf_fib_lookup with
// plen bytes and the flags at packet offset 64, writes the params back
// and the helper's return value at offset 72, and passes the packet.
func fibProg(plen int32) asm.Instructions {
	p := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Add.Imm(asm.R4, 80),
		asm.JGT.Reg(asm.R4, asm.R3, "short"),
	}
	for off := int16(0); off < 64; off += 8 {
		p = append(p, asm.LoadMem(asm.R0, asm.R7, off, asm.DWord), asm.StoreMem(asm.RFP, off-64, asm.R0, asm.DWord))
	}
	p = append(p,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -64),
		asm.Mov.Imm(asm.R3, plen),
		asm.LoadMem(asm.R4, asm.R7, 64, asm.Word),
		asm.FnFibLookup.Call(),
		asm.StoreMem(asm.R7, 72, asm.R0, asm.DWord),
	)
	for off := int16(0); off < 64; off += 8 {
		p = append(p, asm.LoadMem(asm.R0, asm.RFP, off-64, asm.DWord), asm.StoreMem(asm.R7, off, asm.R0, asm.DWord))
	}
	return append(p,
		asm.Mov.Imm(asm.R0, 2), // XDP_PASS
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("short"),
		asm.Return(),
	)
}

// fibCase is one lookup: the params and flags.
type fibCase struct {
	family       uint8
	proto        uint8
	sport, dport uint16
	totLen       uint16
	ifindex      uint32
	tos          uint32 // IPv4 tos byte, or IPv6 flowinfo (host order)
	src, dst     netip.Addr
	tbidOrMark   uint32 // tbid (TBID) or mark (MARK)
	flags        uint32
}

func (c fibCase) frame() []byte {
	f := make([]byte, 80)
	f[0], f[1] = c.family, c.proto
	binary.BigEndian.PutUint16(f[2:], c.sport)
	binary.BigEndian.PutUint16(f[4:], c.dport)
	binary.NativeEndian.PutUint16(f[6:], c.totLen)
	binary.NativeEndian.PutUint32(f[8:], c.ifindex)
	if c.dst.Is6() {
		binary.BigEndian.PutUint32(f[12:], c.tos)
		a, b := c.src.As16(), c.dst.As16()
		copy(f[16:], a[:])
		copy(f[32:], b[:])
	} else {
		f[12] = uint8(c.tos)
		a, b := c.src.As4(), c.dst.As4()
		copy(f[16:], a[:])
		copy(f[32:], b[:])
	}
	if c.flags&prog.FibLookupTBID != 0 {
		binary.NativeEndian.PutUint32(f[48:], c.tbidOrMark)
	} else {
		binary.NativeEndian.PutUint32(f[52:], c.tbidOrMark)
	}
	binary.NativeEndian.PutUint32(f[64:], c.flags)
	return f
}

func (c fibCase) String() string {
	return fmt.Sprintf("family %d if %d dst %v src %v tos %#x proto %d ports %d>%d tot_len %d tbid/mark %d flags %#x",
		c.family, c.ifindex, c.dst, c.src, c.tos, c.proto, c.sport, c.dport, c.totLen, c.tbidOrMark, c.flags)
}

// fibNetwork builds the namespace the lookups route in: two veth pairs
// whose near ends (va, vb) carry addresses and routes of every kind
// (gateways, direct, metrics, reject types, a locked MTU, a preferred
// source, another table), neighbours in every state, and forwarding on
// except on vb for IPv4.
func fibNetwork(t *testing.T) (*netnstest.NS, map[string]uint32) {
	ns := netnstest.New(t, "bpfdfib")
	ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	// One ip -batch for the links, addresses, routes and neighbours (the
	// family follows from the addresses).
	var batch []string
	for _, l := range []struct{ name, peer, mac, mtu, v4, v6 string }{
		{"va", "pa", "02:00:00:00:0a:01", "1500", "198.18.1.1/24", "fd00:1::1/64"},
		{"vb", "pb", "02:00:00:00:0b:01", "1400", "198.18.2.1/24", "fd00:2::1/64"},
	} {
		batch = append(batch,
			"link add "+l.name+" address "+l.mac+" mtu "+l.mtu+" type veth peer name "+l.peer,
			"addr add "+l.v4+" dev "+l.name,
			"addr add "+l.v6+" dev "+l.name+" nodad",
			"link set "+l.peer+" up",
			"link set "+l.name+" up")
	}
	batch = append(batch, "addr add 198.18.3.1/24 dev vb") // a second subnet on vb
	for _, r := range []string{
		"198.18.10.0/24 via 198.18.1.2 dev va",
		"198.18.20.0/24 via 198.18.2.2 dev vb metric 50",
		"198.18.20.0/24 via 198.18.1.2 dev va metric 100",
		"198.18.21.0/24 via 198.18.1.3 dev va",
		"blackhole 198.18.30.0/24",
		"unreachable 198.18.31.0/24",
		"prohibit 198.18.32.0/24",
		"throw 198.18.34.0/24",
		"198.18.40.0/24 dev va",
		"198.18.50.0/24 via 198.18.1.2 mtu lock 1300",
		"198.18.51.0/24 via 198.18.1.2 mtu 1200",
		"198.18.60.0/24 via 198.18.1.2 src 198.18.2.1",
		"198.18.70.0/24 via 198.18.2.2 table 100",
		"198.18.72.0/24 via 198.18.1.2 tos 0x10",
		"198.18.128.0/17 via 198.18.1.2",
		"fd00:10::/64 via fd00:1::2 dev va",
		"fd00:20::/64 via fd00:2::2 dev vb metric 50",
		"fd00:20::/64 via fd00:1::2 dev va metric 100",
		"blackhole fd00:30::/64",
		"unreachable fd00:31::/64",
		"prohibit fd00:32::/64",
		"fd00:40::/64 dev va",
		"fd00:50::/64 via fd00:1::2 mtu 1300",
		"fd00:60::/64 via fd00:1::2 src fd00:2::1",
		"fd00:70::/64 via fd00:2::2 table 100",
		// Same prefix and metric on two devices: the lookup's device wins.
		"fd00:80::/64 via fd00:1::2 dev va metric 10",
	} {
		batch = append(batch, "route add "+r)
	}
	batch = append(batch, "route append fd00:80::/64 dev vb metric 10")
	for _, n := range []string{
		"198.18.1.2 lladdr 02:00:00:00:0a:02 nud permanent dev va",
		"198.18.2.2 lladdr 02:00:00:00:0b:02 nud stale dev vb",
		"198.18.40.5 lladdr 02:00:00:00:0a:05 nud reachable dev va",
		"198.18.40.6 lladdr 02:00:00:00:0a:06 nud noarp dev va",
		"198.18.40.7 nud incomplete dev va",
		"fd00:1::2 lladdr 02:00:00:00:0a:12 nud permanent dev va",
		"fd00:2::2 lladdr 02:00:00:00:0b:12 nud stale dev vb",
		"fd00:40::5 lladdr 02:00:00:00:0a:15 nud delay dev va",
	} {
		batch = append(batch, "neigh replace "+n)
	}
	file := filepath.Join(t.TempDir(), "fib.batch")
	if err := os.WriteFile(file, []byte(strings.Join(batch, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.MustRun(t, "ip", "-batch", file)
	ns.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.vb.forwarding=0")
	idx := map[string]uint32{}
	if err := ns.Do(func() error {
		for _, name := range []string{"lo", "va", "vb", "pa"} {
			i, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			idx[name] = uint32(i.Index)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ns, idx
}

// fibCases is a fixed set of lookups plus n drawn at random from the
// same pools of addresses, devices and flags.
func fibCases(idx map[string]uint32, n int, seed uint64) []fibCase {
	v4 := []string{"198.18.10.9", "198.18.20.9", "198.18.21.9", "198.18.30.9", "198.18.31.9", "198.18.32.9", "198.18.33.9",
		"198.18.34.9", "198.18.40.5", "198.18.40.6", "198.18.40.7", "198.18.40.8", "198.18.50.9", "198.18.51.9", "198.18.60.9",
		"198.18.70.9", "198.18.72.9", "198.18.200.9", "198.18.1.1", "198.18.1.255", "198.18.2.2", "198.18.1.2", "127.0.0.1",
		"10.9.9.9", "224.0.0.5", "255.255.255.255", "0.0.0.0"}
	v4src := []string{"0.0.0.0", "198.18.99.5", "198.18.1.1", "198.18.200.1"}
	v6 := []string{"fd00:10::9", "fd00:20::9", "fd00:30::9", "fd00:31::9", "fd00:32::9", "fd00:33::9", "fd00:40::5", "fd00:40::6",
		"fd00:50::9", "fd00:60::9", "fd00:70::9", "fd00:80::9", "fd00:1::1", "fd00:1::2", "fd00:2::2", "2001:db8::1", "fe80::1", "ff02::1", "::1", "::"}
	v6src := []string{"::", "fd00:99::5", "fd00:1::1", "fe80::5"}
	ifs := []uint32{idx["va"], idx["vb"], idx["lo"], idx["pa"], 999}
	var cases []fibCase
	// Every flag alone and a few together, on a forwarded route.
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		dst, src := netip.MustParseAddr("198.18.10.9"), netip.MustParseAddr("198.18.99.5")
		if fam == unix.AF_INET6 {
			dst, src = netip.MustParseAddr("fd00:10::9"), netip.MustParseAddr("fd00:99::5")
		}
		for _, fl := range []uint32{0, 1, 2, 4, 8, 16, 32, 1 | 8, 2 | 16, 4 | 16, 1 | 32, 64, 1 << 31} {
			cases = append(cases, fibCase{family: fam, ifindex: idx["va"], dst: dst, src: src, flags: fl, tbidOrMark: 100})
		}
		for _, tl := range []uint16{0, 1280, 1300, 1400, 1401, 1500, 1501, 9000} {
			cases = append(cases, fibCase{family: fam, ifindex: idx["va"], dst: dst, src: src, totLen: tl})
		}
	}
	for _, fam := range []uint8{0, 1, 3, 10 + 1} {
		cases = append(cases, fibCase{family: fam, ifindex: idx["va"], dst: netip.MustParseAddr("198.18.10.9"), src: netip.IPv4Unspecified()})
	}
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	pick := func(s []string) netip.Addr { return netip.MustParseAddr(s[r.IntN(len(s))]) }
	for range n {
		c := fibCase{ifindex: ifs[r.IntN(len(ifs))], flags: uint32(r.IntN(64))}
		if r.IntN(2) == 0 {
			c.family, c.dst, c.src = unix.AF_INET, pick(v4), pick(v4src)
			c.tos = []uint32{0, 0x10, 0x14, 0xb8}[r.IntN(4)]
		} else {
			c.family, c.dst, c.src = unix.AF_INET6, pick(v6), pick(v6src)
			c.tos = []uint32{0, 0x00100000, 0x0b800000}[r.IntN(3)]
		}
		c.proto = []uint8{0, unix.IPPROTO_TCP, unix.IPPROTO_UDP}[r.IntN(3)]
		c.sport, c.dport = []uint16{0, 53, 1234}[r.IntN(3)], []uint16{0, 53, 80}[r.IntN(3)]
		c.totLen = []uint16{0, 60, 1250, 1300, 1350, 1400, 1450, 1500, 1600}[r.IntN(9)]
		c.tbidOrMark = []uint32{0, 7, 100, 254, 255, 12345}[r.IntN(6)]
		cases = append(cases, c)
	}
	return cases
}

// TestFibLookupMatchesKernel runs bpf_fib_lookup in bpfd and in the
// kernel's XDP test run on the same params inside a network namespace the
// test builds, first with the default policy rules (the kernel's merged
// local and main tables), then with rules of every selector (source,
// mark, destination, input device, protocol and ports, suppress_prefixlength,
// reject actions): same return values and same params out, byte for byte.
func TestFibLookupMatchesKernel(t *testing.T) {
	needKernel(t)
	ns, idx := fibNetwork(t)
	n := 300
	if testing.Short() {
		n = 60
	}
	compare := func(t *testing.T, cases []fibCase, plen int32) {
		insns := fibProg(plen)
		p, err := prog.Load(&prog.Spec{Type: prog.XDP, Insns: marshalInsns(t, insns), License: "GPL"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "GPL"})
		if err != nil {
			t.Fatal(err)
		}
		defer kp.Close()
		var fails int
		rets := map[int64]int{}
		if err := ns.Do(func() error {
			for _, c := range cases {
				in := c.frame()
				kout := make([]byte, len(in))
				kret, kerr := kp.Run(&ebpf.RunOptions{Data: in, DataOut: kout})
				res, err := p.TestRun(&prog.RunOptions{Data: in})
				if err != nil || kerr != nil {
					return fmt.Errorf("%v: bpfd %v, kernel %v", c, err, kerr)
				}
				rets[int64(binary.NativeEndian.Uint64(kout[72:]))]++
				if uint32(res.Ret) != kret || !bytes.Equal(res.DataOut, kout) {
					if fails++; fails <= 10 {
						t.Errorf("%v:\n bpfd   ret %d %s\n kernel ret %d %s", c,
							int64(binary.NativeEndian.Uint64(res.DataOut[72:])), fibHex(res.DataOut),
							int64(binary.NativeEndian.Uint64(kout[72:])), fibHex(kout))
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d lookups, %d differ; kernel return values: %v", len(cases), fails, rets)
	}
	t.Run("default rules", func(t *testing.T) { compare(t, fibCases(idx, n, 1), 64) })
	t.Run("short params", func(t *testing.T) { compare(t, fibCases(idx, 0, 1)[:4], 63) })
	for _, r := range [][]string{
		{"ip", "rule", "add", "pref", "50", "lookup", "main", "suppress_prefixlength", "16"},
		{"ip", "rule", "add", "pref", "100", "from", "198.18.99.0/24", "lookup", "100"},
		{"ip", "rule", "add", "pref", "101", "fwmark", "7", "lookup", "100"},
		{"ip", "rule", "add", "pref", "102", "to", "198.18.33.0/24", "prohibit"},
		{"ip", "rule", "add", "pref", "103", "iif", "vb", "to", "198.18.10.0/24", "blackhole"},
		{"ip", "rule", "add", "pref", "104", "ipproto", "udp", "dport", "53", "to", "198.18.200.0/24", "unreachable"},
		{"ip", "rule", "add", "pref", "105", "not", "from", "198.18.0.0/15", "lookup", "100"},
		{"ip", "rule", "add", "pref", "106", "to", "198.18.34.0/24", "goto", "108"},
		{"ip", "rule", "add", "pref", "107", "to", "198.18.34.0/24", "blackhole"},
		{"ip", "rule", "add", "pref", "108", "to", "198.18.34.0/24", "lookup", "100"},
		{"ip", "-6", "rule", "add", "pref", "100", "from", "fd00:99::/64", "lookup", "100"},
		{"ip", "-6", "rule", "add", "pref", "101", "fwmark", "7", "lookup", "100"},
		{"ip", "-6", "rule", "add", "pref", "102", "to", "fd00:33::/64", "prohibit"},
		{"ip", "-6", "rule", "add", "pref", "103", "oif", "va", "to", "fd00:20::/64", "lookup", "100"},
	} {
		ns.MustRun(t, r...)
	}
	t.Run("policy rules", func(t *testing.T) { compare(t, fibCases(idx, n, 2), 64) })
}

// TestFibLookupVerifierMatchesKernel: the params must be writable memory
// of plen bytes, as the kernel's verifier requires, and initialised: a
// privileged kernel loader may pass stack bytes never written, bpfd
// refuses them as it refuses every read of them (pkg/verifier/doc.go).
func TestFibLookupVerifierMatchesKernel(t *testing.T) {
	needKernel(t)
	call := func(prep asm.Instructions, plen int32) asm.Instructions {
		p := append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}, prep...)
		return append(p,
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R3, plen),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnFibLookup.Call(),
			asm.Return())
	}
	zero64 := asm.Instructions{asm.Mov.Imm(asm.R0, 0)}
	for off := int16(-64); off < 0; off += 8 {
		zero64 = append(zero64, asm.StoreMem(asm.RFP, off, asm.R0, asm.DWord))
	}
	stack := func(off int32) asm.Instructions {
		return asm.Instructions{asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, off)}
	}
	tests := []struct {
		name   string
		insns  asm.Instructions
		strict bool // refused by bpfd only (uninitialised stack)
	}{
		{"initialised stack", call(append(append(asm.Instructions{}, zero64...), stack(-64)...), 64), false},
		{"uninitialised stack", call(stack(-64), 64), true},
		{"half initialised", call(append(append(asm.Instructions{}, zero64[:5]...), stack(-64)...), 64), true},
		{"plen past the stack", call(append(append(asm.Instructions{}, zero64...), stack(-64)...), 72), false},
		{"plen zero", call(append(append(asm.Instructions{}, zero64...), stack(-64)...), 0), false},
		{"short plen", call(append(append(asm.Instructions{}, zero64...), stack(-64)...), 32), false},
		{"ctx as params", call(asm.Instructions{asm.Mov.Reg(asm.R2, asm.R1)}, 64), false},
		{"null params", call(asm.Instructions{asm.Mov.Imm(asm.R2, 0)}, 64), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: tt.insns, License: "GPL"},
				ebpf.ProgramOptions{LogDisabled: true})
			if kp != nil {
				kp.Close()
			}
			_, err := prog.Load(&prog.Spec{Type: prog.XDP, Insns: marshalInsns(t, tt.insns), License: "GPL"}, nil)
			if tt.strict {
				if kerr != nil || err == nil || !strings.Contains(err.Error(), "not initialized") {
					t.Fatalf("want bpfd refusing uninitialised stack, kernel accepting: bpfd %v, kernel %v", err, kerr)
				}
				return
			}
			if (err == nil) != (kerr == nil) {
				t.Fatalf("bpfd %v, kernel %v", err, kerr)
			}
		})
	}
}

func fibHex(b []byte) string {
	var s strings.Builder
	for i := 0; i < 80; i += 8 {
		fmt.Fprintf(&s, "%x ", b[i:i+8])
	}
	return s.String()
}

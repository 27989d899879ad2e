package prog_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/prog"
)

// TestRunnerMatchesTestRun: a live run of the committed XDP and
// socket-filter fixtures gives the verdict and packet a test run gives
// on the same bytes, without allocating.
func TestRunnerMatchesTestRun(t *testing.T) {
	xdp := loadFixture(t, "xdp_ports").progs["xdp_ports"]
	sock := loadFixture(t, "counter").progs["count_proto"]
	for _, p := range []*prog.Program{xdp, sock} {
		r := p.NewRunner()
		for name, pkt := range testPackets() {
			t.Run(p.Name()+"/"+name, func(t *testing.T) {
				tr, err := p.TestRun(&prog.RunOptions{Data: pkt})
				if err != nil {
					t.Skipf("test run refuses it: %v", err)
				}
				frame := append([]byte(nil), pkt...)
				var ret uint64
				if p.Type() == prog.XDP {
					ret, err = r.RunXDP(frame, &prog.XDPMeta{IngressIfindex: 1})
				} else {
					l3 := frame[14:]
					ret, err = r.RunSocketFilter(l3, &prog.SkbMeta{Len: uint32(len(l3)),
						Protocol: uint32(frame[12]) | uint32(frame[13])<<8, Ifindex: 1})
				}
				if err != nil {
					t.Fatal(err)
				}
				if ret != tr.Ret {
					t.Fatalf("live run %d, test run %d", ret, tr.Ret)
				}
				if p.Type() == prog.XDP && !bytes.Equal(frame, tr.DataOut) {
					t.Fatalf("packet out differs:\nlive %x\ntest %x", frame, tr.DataOut)
				}
			})
		}
	}
}

// TestRunnerContext: the context fields a live socket filter and XDP
// program read are the ones the caller gave, and a rewrite lands in the
// caller's buffer.
func TestRunnerContext(t *testing.T) {
	// r0 = skb->mark ^ skb->ifindex ^ skb->hash ^ skb->pkt_type ^ skb->ingress_ifindex ^ skb->len
	sf := asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 8, asm.Word),
		asm.LoadMem(asm.R2, asm.R1, 40, asm.Word),
		asm.Xor.Reg(asm.R0, asm.R2),
		asm.LoadMem(asm.R2, asm.R1, 68, asm.Word),
		asm.Xor.Reg(asm.R0, asm.R2),
		asm.LoadMem(asm.R2, asm.R1, 4, asm.Word),
		asm.Xor.Reg(asm.R0, asm.R2),
		asm.LoadMem(asm.R2, asm.R1, 36, asm.Word),
		asm.Xor.Reg(asm.R0, asm.R2),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.Xor.Reg(asm.R0, asm.R2),
		asm.Return(),
	}
	p := loadAsm(t, prog.SocketFilter, sf)
	m := prog.SkbMeta{Len: 60, PktType: 2, Mark: 0x1000, Ifindex: 0x20000, Hash: 0x300000, IngressIfindex: 0x4000000}
	ret, err := p.NewRunner().RunSocketFilter(make([]byte, 60), &m)
	if want := uint64(60 ^ 2 ^ 0x1000 ^ 0x20000 ^ 0x300000 ^ 0x4000000); err != nil || ret != want {
		t.Fatalf("socket filter = %#x, %v; want %#x", ret, err, want)
	}
	// XDP: write 0xab at data[14] if data+15 <= data_end; return ingress_ifindex.
	x := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.LoadMem(asm.R0, asm.R1, 12, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 15),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.StoreImm(asm.R2, 14, 0xab, asm.Byte),
		asm.Return().WithSymbol("out"),
	}
	px := loadAsm(t, prog.XDP, x)
	frame := make([]byte, 64)
	ret, err = px.NewRunner().RunXDP(frame, &prog.XDPMeta{IngressIfindex: 9})
	if err != nil || ret != 9 || frame[14] != 0xab {
		t.Fatalf("xdp = %d, %v, frame[14] = %#x", ret, err, frame[14])
	}
}

func loadAsm(t *testing.T, typ prog.Type, insns asm.Instructions) *prog.Program {
	t.Helper()
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	p, err := prog.Load(&prog.Spec{Type: typ, Insns: buf.Bytes(), License: "GPL"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunnerNoAllocs(t *testing.T) {
	f := loadFixture(t, "xdp_ports")
	r := f.progs["xdp_ports"].NewRunner()
	pkt := testPackets()["ipv4 udp 53"]
	frame := append([]byte(nil), pkt...)
	meta := &prog.XDPMeta{IngressIfindex: 3}
	if n := testing.AllocsPerRun(1000, func() {
		copy(frame, pkt)
		if _, err := r.RunXDP(frame, meta); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("RunXDP: %v allocations per run", n)
	}
	s := loadFixture(t, "counter").progs["count_proto"].NewRunner()
	sm := &prog.SkbMeta{Len: uint32(len(pkt) - 14), Protocol: 8}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := s.RunSocketFilter(pkt[14:], sm); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("RunSocketFilter: %v allocations per run", n)
	}
}

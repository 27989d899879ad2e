package prog_test

import (
	"fmt"
	"sort"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/prog"
)

// skLoad is a socket filter reading __sk_buff.sk, null-checking it
// (12345 when NULL), then loading size bytes at off through it (sign
// extended when sx) and returning the low or high half of the result.
func skLoad(off int16, size asm.Size, sx, high bool) asm.Instructions {
	ld := asm.LoadMem(asm.R0, asm.R2, off, size)
	if sx {
		ld = asm.LoadMemSX(asm.R0, asm.R2, off, size)
	}
	p := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 168, asm.DWord),
		asm.Mov.Imm(asm.R0, 12345),
		asm.JEq.Imm(asm.R2, 0, "out"),
		ld,
	}
	if high {
		p = append(p, asm.RSh.Imm(asm.R0, 32))
	}
	return append(p, asm.Return().WithSymbol("out"))
}

// TestSockFieldsMatchKernel reads struct bpf_sock through __sk_buff.sk at
// every offset with every size, zero and sign extended, in bpfd and in
// the kernel: the same loads are accepted, and on IPv4, IPv6 and other
// packets they read the same 64-bit values as in the kernel's test run.
func TestSockFieldsMatchKernel(t *testing.T) {
	needKernel(t)
	pkts := testPackets()
	pkts["vlan ipv4"] = ethernet(0x8100, append([]byte{0, 42, 0x08, 0x00}, ipv4(ipProtoUDP, 1, 53)[14:]...))
	pkts["802.3 llc"] = ethernet(0x0026, append([]byte{0xaa, 0xaa, 0x03}, make([]byte, 35)...))
	var names []string
	for n := range pkts {
		names = append(names, n)
	}
	sort.Strings(names)
	var accepted, runs int
	for _, size := range []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord} {
		for off := int16(0); off < 88; off += int16(size.Sizeof()) {
			for _, sx := range []bool{false, true} {
				if sx && size == asm.DWord {
					continue
				}
				name := fmt.Sprintf("off %d size %d sx %v", off, size.Sizeof(), sx)
				for _, high := range []bool{false, true} {
					insns := skLoad(off, size, sx, high)
					kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, Instructions: insns, License: "GPL"},
						ebpf.ProgramOptions{LogDisabled: true})
					p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, insns), License: "GPL"}, nil)
					if (err == nil) != (kerr == nil) {
						t.Errorf("%s: bpfd %v, kernel %v", name, err, kerr)
					}
					if err != nil || kerr != nil {
						if kp != nil {
							kp.Close()
						}
						break
					}
					if !high {
						accepted++
					}
					for _, n := range names {
						runs++
						res, err := p.TestRun(&prog.RunOptions{Data: pkts[n]})
						kret, kerr := kp.Run(&ebpf.RunOptions{Data: pkts[n]})
						if (err != nil) != (kerr != nil) {
							t.Errorf("%s, %s: bpfd %v, kernel %v", name, n, err, kerr)
							continue
						}
						if err == nil && uint32(res.Ret) != kret {
							t.Errorf("%s (high half %v), %s: bpfd %#x, kernel %#x", name, high, n, uint32(res.Ret), kret)
						}
					}
					kp.Close()
				}
			}
		}
	}
	if accepted == 0 {
		t.Fatal("no load through sk accepted")
	}
	t.Logf("%d loads through sk accepted by both, %d runs compared", accepted, runs)
}

// TestSockLiveIsNull: a live run (a netfilter-queued packet) has no
// socket, so __sk_buff.sk reads NULL.
func TestSockLiveIsNull(t *testing.T) {
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, skLoad(4, asm.Word, false, false)), License: "GPL"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pkt := ipv4(ipProtoUDP, 1, 53)
	ret, err := p.NewRunner().RunSocketFilter(pkt[14:], &prog.SkbMeta{Len: uint32(len(pkt) - 14), Protocol: 0x0008})
	if err != nil {
		t.Fatal(err)
	}
	if ret != 12345 {
		t.Fatalf("live run read sk as non-NULL: returned %d, want 12345", ret)
	}
	res, err := p.TestRun(&prog.RunOptions{Data: pkt})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ret != 2 { // AF_INET
		t.Fatalf("test run: family %d, want 2", res.Ret)
	}
}

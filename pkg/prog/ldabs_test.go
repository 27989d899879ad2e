package prog_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// ldAbsProg returns r0 = 1000 + LD_ABS[k] (size), or 0 when the load ends
// the program.
func ldAbsProg(k int32, size asm.Size) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadAbs(k, size),
		asm.Add.Imm(asm.R0, 1000),
		asm.Return(),
	}
}

// ldIndProg returns r0 = 1000 + LD_IND[x + k] (size), with x a 64-bit
// register value, or 0 when the load ends the program.
func ldIndProg(x int64, k int32, size asm.Size) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadImm(asm.R7, x, asm.DWord),
		asm.LoadInd(asm.R0, asm.R7, k, size),
		asm.Add.Imm(asm.R0, 1000),
		asm.Return(),
	}
}

// ldAbsFrame is a 60-byte IPv4/TCP frame whose bytes are all distinct
// enough to tell offsets apart.
func ldAbsFrame() []byte {
	f := ipv4(ipProtoTCP, 0x1234, 0x5678)
	for i := range f {
		if i >= 34 {
			f[i] = byte(0x80 + i)
		}
	}
	return append(f, 0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad)
}

// TestLdAbsSemantics pins the kernel's semantics on one frame, root or
// not: loads are relative to the network header (the test run pulls the
// Ethernet header), big-endian, and a load past the end returns 0 from
// the program.
func TestLdAbsSemantics(t *testing.T) {
	frame := ldAbsFrame()
	l3 := len(frame) - 14
	tests := []struct {
		name  string
		insns asm.Instructions
		want  uint64
	}{
		{"abs byte 0 is the IP version", ldAbsProg(0, asm.Byte), 1000 + 0x45},
		{"abs half 2 is the IP length, big-endian", ldAbsProg(2, asm.Half), 1000 + (uint64(frame[16])<<8 | uint64(frame[17]))},
		{"abs word 12 is the source address", ldAbsProg(12, asm.Word), 1000 + 0x0a000001},
		{"abs last byte", ldAbsProg(int32(l3-1), asm.Byte), 1000 + 0xad},
		{"abs word straddling the end", ldAbsProg(int32(l3-3), asm.Word), 0},
		{"abs past the end", ldAbsProg(int32(l3), asm.Byte), 0},
		{"abs -1", ldAbsProg(-1, asm.Byte), 0},
		{"net off 0", ldAbsProg(interp.SKFNetOff, asm.Byte), 1000 + 0x45},
		{"net off 9 is the protocol", ldAbsProg(interp.SKFNetOff+9, asm.Byte), 1000 + ipProtoTCP},
		{"ll off 12 is the ethertype", ldAbsProg(interp.SKFLLOff+12, asm.Half), 1000 + 0x0800},
		{"ll off 0 is the destination MAC", ldAbsProg(interp.SKFLLOff, asm.Word), 1000 + 0x02000000},
		{"below ll off", ldAbsProg(interp.SKFLLOff-1, asm.Byte), 0},
		{"ind base + k", ldIndProg(9, 0, asm.Byte), 1000 + ipProtoTCP},
		{"ind negative base", ldIndProg(-4, 13, asm.Byte), 1000 + ipProtoTCP},
		{"ind 64-bit base truncated to int", ldIndProg(1<<32+9, 0, asm.Byte), 1000 + ipProtoTCP},
		{"ind into net off", ldIndProg(interp.SKFNetOff, 9, asm.Byte), 1000 + ipProtoTCP},
		{"ind past the end", ldIndProg(int64(l3), 0, asm.Half), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, tt.insns), License: "GPL"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.TestRun(&prog.RunOptions{Data: frame})
			if err != nil {
				t.Fatal(err)
			}
			if res.Ret != tt.want {
				t.Fatalf("returned %#x, want %#x", res.Ret, tt.want)
			}
		})
	}
}

// TestLdAbsMatchesKernel runs LD_ABS and LD_IND of every size at offsets
// around every boundary (packet start and end, the SKF_NET_OFF and
// SKF_LL_OFF areas, int32 wrap-around) on frames of several lengths, in
// bpfd and in the kernel, and requires the same results.
func TestLdAbsMatchesKernel(t *testing.T) {
	needKernel(t)
	frames := map[string][]byte{
		"ipv4 tcp":      ldAbsFrame(),
		"ethernet only": ethernet(0x88b5, nil),
		"arp":           ethernet(0x0806, make([]byte, 28)),
		"ipv6 udp":      ipv6(ipProtoUDP, 1, 2),
	}
	var offsets []int32
	for _, base := range []int32{0, interp.SKFNetOff, interp.SKFLLOff} {
		for _, d := range []int32{-2, -1, 0, 1, 2, 3, 11, 12, 13, 14, 15, 26, 27, 28, 29, 39, 40, 41, 45, 46, 47, 48, 60, 61, 62, 64} {
			offsets = append(offsets, base+d)
		}
	}
	offsets = append(offsets, math.MinInt32, math.MaxInt32, -0x1000, 0xfffff, interp.SKFNetOff+0xfffff)
	sizes := []asm.Size{asm.Byte, asm.Half, asm.Word}
	type pair struct {
		name  string
		insns asm.Instructions
	}
	var progs []pair
	for _, k := range offsets {
		for _, sz := range sizes {
			progs = append(progs, pair{fmt.Sprintf("abs %d %v", k, sz), ldAbsProg(k, sz)})
		}
	}
	for _, x := range []int64{0, 7, -7, 1 << 32, -1 << 32, math.MaxInt32, interp.SKFLLOff} {
		for _, k := range []int32{0, 13, -20, interp.SKFNetOff} {
			progs = append(progs, pair{fmt.Sprintf("ind %d+%d", x, k), ldIndProg(x, k, asm.Half)})
		}
	}
	for _, pp := range progs {
		p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, pp.insns), License: "GPL"}, nil)
		if err != nil {
			t.Fatalf("%s: %v", pp.name, err)
		}
		kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, Instructions: pp.insns, License: "GPL"})
		if err != nil {
			t.Fatalf("%s: kernel: %v", pp.name, err)
		}
		for fname, frame := range frames {
			compareRun(t, pp.name+"/"+fname, p, kp, frame)
		}
		kp.Close()
	}
}

// TestLdAbsVerifier: the verifier's rules for legacy loads match the
// kernel's: only socket filters, R6 the context, reserved fields zero.
func TestLdAbsVerifier(t *testing.T) {
	tests := []struct {
		name  string
		typ   prog.Type
		insns asm.Instructions
		ok    bool
		// kernel differs from ok where bpfd is deliberately stricter
		// (pkg/verifier's doc).
		kernel *bool
	}{
		{"socket filter", prog.SocketFilter, ldAbsProg(0, asm.Byte), true, nil},
		{"xdp", prog.XDP, ldAbsProg(0, asm.Byte), false, nil},
		{"r6 not ctx", prog.SocketFilter, asm.Instructions{asm.Mov.Imm(asm.R6, 0), asm.LoadAbs(0, asm.Byte), asm.Return()}, false, nil},
		{"r6 unset", prog.SocketFilter, asm.Instructions{asm.LoadAbs(0, asm.Byte), asm.Return()}, false, nil},
		{"dword", prog.SocketFilter, asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadAbs(0, asm.DWord), asm.Return()}, false, nil},
		{"ind from pointer", prog.SocketFilter, asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadInd(asm.R0, asm.R10, 0, asm.Byte), asm.Return()}, false, &yes},
		{"r1 clobbered", prog.SocketFilter, asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadAbs(0, asm.Byte), asm.Mov.Reg(asm.R0, asm.R1), asm.Return()}, false, nil},
		{"r0 is unknown afterwards", prog.SocketFilter, asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadAbs(0, asm.Byte),
			asm.Mov.Imm(asm.R2, 0), asm.StoreMem(asm.R10, -8, asm.R2, asm.DWord), asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Reg(asm.R1, asm.R0), asm.LoadMem(asm.R0, asm.R1, -8, asm.Byte), asm.Return()}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := prog.Load(&prog.Spec{Type: tt.typ, Insns: marshalInsns(t, tt.insns), License: "GPL"}, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("Load: %v, want ok=%v", err, tt.ok)
			}
			if os0() {
				return
			}
			ktyp := ebpf.SocketFilter
			if tt.typ == prog.XDP {
				ktyp = ebpf.XDP
			}
			kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ktyp, Instructions: tt.insns, License: "GPL"}, ebpf.ProgramOptions{LogDisabled: true})
			if kerr == nil {
				kp.Close()
			}
			want := tt.ok
			if tt.kernel != nil {
				want = *tt.kernel
			}
			if (kerr == nil) != want {
				t.Fatalf("kernel: %v, want ok=%v", kerr, want)
			}
		})
	}
}

var yes = true

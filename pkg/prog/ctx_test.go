package prog_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/prog"
)

// TestContextAccessMatchesKernel loads, for every context offset, a 4-byte
// read, a 1-byte read and a 4-byte write (and, at 8-byte aligned offsets,
// an 8-byte read and write) in bpfd and in the kernel, and requires the
// same verdict: the context layouts are the kernel's. __sk_buff.sk is one
// of them: an 8-byte read only.
func TestContextAccessMatchesKernel(t *testing.T) {
	needKernel(t)
	tests := []struct {
		name  string
		typ   prog.Type
		ktyp  ebpf.ProgramType
		size  int
		sizes []asm.Size
	}{
		{"socket filter", prog.SocketFilter, ebpf.SocketFilter, 192, []asm.Size{asm.Word, asm.Byte}},
		{"xdp", prog.XDP, ebpf.XDP, 24, []asm.Size{asm.Word, asm.Byte}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for off := 0; off < tt.size; off += 4 {
				var cases []asm.Instructions
				for _, sz := range tt.sizes {
					cases = append(cases, asm.Instructions{asm.LoadMem(asm.R0, asm.R1, int16(off), sz), asm.Mov.Imm(asm.R0, 0), asm.Return()})
				}
				cases = append(cases, asm.Instructions{asm.StoreImm(asm.R1, int16(off), 0, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()})
				if off%8 == 0 {
					cases = append(cases,
						asm.Instructions{asm.LoadMem(asm.R0, asm.R1, int16(off), asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
						asm.Instructions{asm.Mov.Imm(asm.R2, 0), asm.StoreMem(asm.R1, int16(off), asm.R2, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()})
				}
				for _, insns := range cases {
					kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: tt.ktyp, Instructions: insns, License: "GPL"},
						ebpf.ProgramOptions{LogDisabled: true})
					if kerr == nil {
						kp.Close()
					}
					_, err := prog.Load(&prog.Spec{Type: tt.typ, Insns: marshalInsns(t, insns), License: "GPL"}, nil)
					if (err == nil) != (kerr == nil) {
						t.Errorf("%v: bpfd %v, kernel %v", fmt.Sprint(insns[0]), err, kerr)
					}
				}
			}
		})
	}
}

// TestTestRunSizesMatchKernel runs packets around the kernel's size limits
// through a program returning skb->len (socket filter) or data_end - data
// (XDP), in bpfd and in the kernel: same errors, same values, same data
// out.
func TestTestRunSizesMatchKernel(t *testing.T) {
	needKernel(t)
	tests := []struct {
		name  string
		typ   prog.Type
		ktyp  ebpf.ProgramType
		insns asm.Instructions
		sizes []int
	}{
		{"socket filter", prog.SocketFilter, ebpf.SocketFilter,
			asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), asm.Return()},
			[]int{14, 3000, 3711, 3712, 3713, 10000}},
		{"xdp", prog.XDP, ebpf.XDP,
			asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.LoadMem(asm.R0, asm.R1, 4, asm.Word), asm.Sub.Reg(asm.R0, asm.R2), asm.Return()},
			[]int{14, 3519, 3520, 3521, 10000, 73152, 73153}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := prog.Load(&prog.Spec{Type: tt.typ, Insns: marshalInsns(t, tt.insns), License: "GPL"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: tt.ktyp, Instructions: tt.insns, License: "GPL"})
			if err != nil {
				t.Fatal(err)
			}
			defer kp.Close()
			for _, n := range tt.sizes {
				pkt := make([]byte, n)
				pkt[12] = 0x88 // not IP
				for i := 14; i < n; i++ {
					pkt[i] = byte(i)
				}
				res, err := p.TestRun(&prog.RunOptions{Data: pkt})
				kopts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, n+64)}
				kret, kerr := kp.Run(kopts)
				if (err != nil) != (kerr != nil) {
					t.Errorf("%d bytes: bpfd %v, kernel %v", n, err, kerr)
					continue
				}
				if err != nil {
					continue
				}
				if uint32(res.Ret) != kret || string(res.DataOut) != string(kopts.DataOut) {
					t.Errorf("%d bytes: bpfd %d (%d out), kernel %d (%d out)", n, res.Ret, len(res.DataOut), kret, len(kopts.DataOut))
				}
			}
		})
	}
}

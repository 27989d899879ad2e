package prog_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/prog"
)

// TestContextAccessMatchesKernel loads, for every context offset, a 4-byte
// read, a 1-byte read and a 4-byte write in bpfd and in the kernel, and
// requires the same verdict: the context layouts are the kernel's.
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

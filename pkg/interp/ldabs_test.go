package interp_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

// TestLegacyPacket checks BPF_ABS/BPF_IND: decoding (only with
// Config.LegacyPacket, reserved fields zero) and the kernel's semantics
// over VM.SetPacket (pkg/prog compares them with the kernel).
func TestLegacyPacket(t *testing.T) {
	if _, err := interp.Load(raw(t, asm.LoadAbs(0, asm.Byte), asm.Return()), nil); !errors.Is(err, interp.ErrInvalidInsn) {
		t.Fatalf("LD_ABS without LegacyPacket: %v", err)
	}
	bad := asm.LoadAbs(0, asm.Byte)
	bad.Src = asm.R1
	if _, err := interp.Load(raw(t, bad, asm.Return()), &interp.Config{LegacyPacket: true}); !errors.Is(err, interp.ErrInvalidInsn) {
		t.Fatalf("LD_ABS with a source register: %v", err)
	}
	// MAC header (14 bytes) at 0, network header at 14, skb->data at 14.
	pkt := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 0x08, 0x00, 0x45, 0x00, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef}
	tests := []struct {
		name  string
		insns []asm.Instruction
		want  uint64
	}{
		{"abs byte", []asm.Instruction{asm.LoadAbs(0, asm.Byte)}, 0x45},
		{"abs half big-endian", []asm.Instruction{asm.LoadAbs(2, asm.Half)}, 0x1234},
		{"abs word zero-extended", []asm.Instruction{asm.LoadAbs(4, asm.Word)}, 0xdeadbeef},
		{"abs past end returns 0", []asm.Instruction{asm.LoadAbs(5, asm.Word), asm.Mov.Imm(asm.R0, 7)}, 0},
		{"net off", []asm.Instruction{asm.LoadAbs(interp.SKFNetOff+2, asm.Half)}, 0x1234},
		{"ll off", []asm.Instruction{asm.LoadAbs(interp.SKFLLOff+12, asm.Half)}, 0x0800},
		{"below ll off", []asm.Instruction{asm.LoadAbs(interp.SKFLLOff-1, asm.Byte), asm.Mov.Imm(asm.R0, 7)}, 0},
		{"negative", []asm.Instruction{asm.LoadAbs(-1, asm.Byte), asm.Mov.Imm(asm.R0, 7)}, 0},
		{"ind", []asm.Instruction{asm.Mov.Imm(asm.R1, 3), asm.LoadInd(asm.R0, asm.R1, 1, asm.Word)}, 0xdeadbeef},
		{"ind wraps to int32", []asm.Instruction{asm.LoadImm(asm.R1, 1<<32|2, asm.DWord), asm.LoadInd(asm.R0, asm.R1, 0, asm.Half)}, 0x1234},
		{"exit from subprogram only", []asm.Instruction{callLocal(2), asm.Add.Imm(asm.R0, 100), asm.Return(),
			asm.LoadAbs(100, asm.Byte), asm.Mov.Imm(asm.R0, 7)}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := interp.Load(raw(t, append(tt.insns, asm.Return())...), &interp.Config{LegacyPacket: true})
			if err != nil {
				t.Fatal(err)
			}
			vm := interp.NewVM(nil)
			vm.SetPacket(pkt, 14, 14, 0)
			got, err := vm.Run(p)
			if err != nil || got != tt.want {
				t.Fatalf("Run = %#x, %v; want %#x", got, err, tt.want)
			}
		})
	}
	// Without a MAC header, SKF_LL_OFF loads fail.
	p, _ := interp.Load(raw(t, asm.LoadAbs(interp.SKFLLOff, asm.Byte), asm.Mov.Imm(asm.R0, 7), asm.Return()), &interp.Config{LegacyPacket: true})
	vm := interp.NewVM(nil)
	vm.SetPacket(pkt, 14, 14, -1)
	if got, err := vm.Run(p); err != nil || got != 0 {
		t.Fatalf("LL load without MAC header: %d, %v", got, err)
	}
}

package interp_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

// fusedLine is a straight-line program made of the pairs Load fuses
// (fuse.go): each mov + ALU immediate form and an add + ja. It returns
// 0x1234+5 &0xff <<4 >>2 +1.
func fusedLine() ([]asm.Instruction, uint64) {
	return []asm.Instruction{
		lddw(asm.R6, 0x1234),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Imm(asm.R1, 5),
		asm.Mov.Reg(asm.R2, asm.R1), asm.And.Imm(asm.R2, 0xff),
		asm.Mov.Reg(asm.R3, asm.R2), asm.LSh.Imm(asm.R3, 4),
		asm.Mov.Reg(asm.R4, asm.R3), asm.RSh.Imm(asm.R4, 2),
		asm.Add.Imm(asm.R4, 1), off(asm.Ja.Imm(asm.R0, 0, ""), 0),
		asm.Mov.Reg(asm.R0, asm.R4),
		asm.Return(),
	}, ((0x1234+5)&0xff)<<4>>2 + 1
}

// TestFusedBudget: a budget that runs out between the halves of a fused
// pair stops the run exactly where the unfused instructions would: the
// executed count is the budget and the fault names the next instruction.
func TestFusedBudget(t *testing.T) {
	insns, want := fusedLine()
	p := load(t, nil, insns...)
	// Raw slot of each instruction in execution order (lddw takes two).
	var slots []int
	for i, s := 0, 0; i < len(insns); i++ {
		slots = append(slots, s)
		s += int(insns[i].Size() / asm.InstructionSize)
	}
	total := uint64(len(insns))
	for budget := uint64(1); budget <= total; budget++ {
		vm := interp.NewVM(&interp.VMConfig{Budget: budget})
		r0, err := vm.Run(p)
		if budget == total {
			if err != nil || r0 != want || vm.Executed() != total {
				t.Fatalf("budget %d: Run = %#x, %v, executed %d; want %#x", budget, r0, err, vm.Executed(), want)
			}
			continue
		}
		var f *interp.Fault
		if !errors.As(err, &f) || !errors.Is(err, interp.ErrBudget) {
			t.Fatalf("budget %d: Run = %#x, %v; want a budget fault", budget, r0, err)
		}
		if vm.Executed() != budget || f.PC != slots[budget] {
			t.Errorf("budget %d: executed %d, fault at pc %d; want %d at pc %d", budget, vm.Executed(), f.PC, budget, slots[budget])
		}
	}
}

// TestFusedYield: a yield (SetYield) that falls between the halves of a
// fused pair resumes with the second half, keeping the first half's
// effect: the result is that of the unfused program whatever the
// alignment of the chunk boundary.
func TestFusedYield(t *testing.T) {
	pairs := []struct {
		name string
		pair []asm.Instruction
		want func(r0 uint64) uint64
	}{
		{name: "mov add", pair: []asm.Instruction{asm.Mov.Reg(asm.R1, asm.R0), asm.Add.Imm(asm.R1, 7)},
			want: func(r0 uint64) uint64 { return r0 + 7 }},
		{name: "mov and", pair: []asm.Instruction{asm.Mov.Reg(asm.R1, asm.R0), asm.And.Imm(asm.R1, 0x3ff0)},
			want: func(r0 uint64) uint64 { return r0 & 0x3ff0 }},
		{name: "mov lsh", pair: []asm.Instruction{asm.Mov.Reg(asm.R1, asm.R0), asm.LSh.Imm(asm.R1, 3)},
			want: func(r0 uint64) uint64 { return r0 << 3 }},
		{name: "mov rsh", pair: []asm.Instruction{asm.Mov.Reg(asm.R1, asm.R0), asm.RSh.Imm(asm.R1, 3)},
			want: func(r0 uint64) uint64 { return r0 >> 3 }},
		{name: "add ja", pair: []asm.Instruction{asm.Mov.Reg(asm.R1, asm.R0), asm.Add.Imm(asm.R1, 7),
			off(asm.Ja.Imm(asm.R0, 0, ""), 1), asm.Add.Imm(asm.R1, 1000)},
			want: func(r0 uint64) uint64 { return r0 + 7 }},
	}
	for _, pc := range pairs {
		// mov r0, 0; n × (add r0, 1; jlt r0, n): 1 + 2n instructions
		// before the pair, so n around YieldChunk/2 puts the boundary
		// before, inside and after it.
		for _, n := range []int32{interp.YieldChunk/2 - 2, interp.YieldChunk/2 - 1, interp.YieldChunk / 2} {
			insns := []asm.Instruction{
				asm.Mov.Imm(asm.R0, 0),
				asm.Add.Imm(asm.R0, 1),
				off(asm.JLT.Imm(asm.R0, n, ""), -2),
			}
			insns = append(insns, pc.pair...)
			insns = append(insns, asm.Mov.Reg(asm.R0, asm.R1), asm.Return())
			p := load(t, nil, insns...)
			vm := interp.NewVM(nil)
			calls := 0
			vm.SetYield(func() error { calls++; return nil })
			r0, err := vm.Run(p)
			if err != nil || r0 != pc.want(uint64(n)) || calls != 1 {
				t.Errorf("%s, n=%d: Run = %#x, %v after %d check-ins; want %#x after 1", pc.name, n, r0, err, calls, pc.want(uint64(n)))
			}
		}
	}
}

// TestFusedJumpIntoSecondHalf: a jump to the second instruction of a
// fused pair runs it alone.
func TestFusedJumpIntoSecondHalf(t *testing.T) {
	for _, tc := range []struct {
		name string
		r1   int32
		want uint64
	}{
		{name: "jump past the mov", r1: 10, want: 15},
		{name: "fall into the pair", r1: 11, want: 105},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, nil,
				asm.Mov.Imm(asm.R1, tc.r1),
				asm.Mov.Imm(asm.R6, 100),
				off(asm.JEq.Imm(asm.R1, 10, ""), 1),
				asm.Mov.Reg(asm.R1, asm.R6), // fused with the next
				asm.Add.Imm(asm.R1, 5),      // the jump's target
				asm.Mov.Reg(asm.R0, asm.R1),
				asm.Return())
			if r0, err := p.Run(nil); err != nil || r0 != tc.want {
				t.Fatalf("Run = %d, %v; want %d", r0, err, tc.want)
			}
		})
	}
}

package bpfasm

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"
)

func withOffset(ins asm.Instruction, off int16) asm.Instruction {
	ins.Offset = off
	return ins
}

func withConstant(ins asm.Instruction, c int64) asm.Instruction {
	ins.Constant = c
	return ins
}

// TestCiliumEncoding cross-checks encodings against github.com/cilium/ebpf/asm,
// an independent encoder, for every instruction class.
func TestCiliumEncoding(t *testing.T) {
	callx := asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call).SetSource(asm.RegSource), Dst: asm.R2}
	tests := []struct {
		name string
		ins  asm.Instruction
		text string
	}{
		// ALU64 / ALU
		{"mov imm", asm.Mov.Imm(asm.R0, 1), "mov %r0, 1"},
		{"mov reg", asm.Mov.Reg(asm.R6, asm.R1), "mov %r6, %r1"},
		{"mov32 imm", asm.Mov.Imm32(asm.R0, -5), "mov32 %r0, -5"},
		{"add imm", asm.Add.Imm(asm.R1, 0x7fffffff), "add %r1, 0x7fffffff"},
		{"add32 reg", asm.Add.Reg32(asm.R1, asm.R2), "add32 %r1, %r2"},
		{"sub imm", asm.Sub.Imm(asm.R3, 42), "sub %r3, 42"},
		{"mul32 reg", asm.Mul.Reg32(asm.R4, asm.R5), "mul32 %r4, %r5"},
		{"div imm", asm.Div.Imm(asm.R0, 3), "div %r0, 3"},
		{"sdiv reg", asm.SDiv.Reg(asm.R0, asm.R1), "sdiv %r0, %r1"},
		{"sdiv32 imm", asm.SDiv.Imm32(asm.R0, -7), "sdiv32 %r0, -7"},
		{"or imm", asm.Or.Imm(asm.R9, 0xff), "or %r9, 0xff"},
		{"and32 imm", asm.And.Imm32(asm.R9, 1), "and32 %r9, 1"},
		{"lsh imm", asm.LSh.Imm(asm.R2, 32), "lsh %r2, 32"},
		{"rsh32 reg", asm.RSh.Reg32(asm.R2, asm.R3), "rsh32 %r2, %r3"},
		{"neg", asm.Neg.Imm(asm.R7, 0), "neg %r7"},
		{"neg32", asm.Neg.Imm32(asm.R7, 0), "neg32 %r7"},
		{"mod reg", asm.Mod.Reg(asm.R1, asm.R2), "mod %r1, %r2"},
		{"smod32 reg", asm.SMod.Reg32(asm.R1, asm.R2), "smod32 %r1, %r2"},
		{"xor imm", asm.Xor.Imm(asm.R1, -1), "xor %r1, -1"},
		{"arsh32 imm", asm.ArSh.Imm32(asm.R1, 3), "arsh32 %r1, 3"},
		{"movsx8 64", asm.MovSX8.Reg(asm.R6, asm.R5), "movsx864 %r6, %r5"},
		{"movsx16 32", asm.MovSX16.Reg32(asm.R4, asm.R3), "movsx1632 %r4, %r3"},
		{"movsx32 64", asm.MovSX32.Reg(asm.R0, asm.R9), "movsx3264 %r0, %r9"},
		{"le16", asm.HostTo(asm.LE, asm.R0, asm.Half), "le16 %r0"},
		{"le64", asm.HostTo(asm.LE, asm.R1, asm.DWord), "le64 %r1"},
		{"be32", asm.HostTo(asm.BE, asm.R0, asm.Word), "be32 %r0"},
		{"bswap16", asm.BSwap(asm.R0, asm.Half), "bswap16 %r0"},
		{"bswap64", asm.BSwap(asm.R3, asm.DWord), "bswap64 %r3"},
		// JMP / JMP32
		{"ja", withOffset(asm.Ja.Label("x"), 3), "ja +3"},
		{"ja32", withConstant(asm.LongJump("x"), -70000), "ja32 -70000"},
		{"jeq imm", withOffset(asm.JEq.Imm(asm.R1, 5, "x"), 2), "jeq %r1, 5, +2"},
		{"jne reg", withOffset(asm.JNE.Reg(asm.R1, asm.R2, "x"), -4), "jne %r1, %r2, -4"},
		{"jgt imm", withOffset(asm.JGT.Imm(asm.R1, 1, "x"), 1), "jgt %r1, 1, +1"},
		{"jge32 reg", withOffset(asm.JGE.Reg32(asm.R3, asm.R4, "x"), 1), "jge32 %r3, %r4, +1"},
		{"jlt32 imm", withOffset(asm.JLT.Imm32(asm.R1, -1, "x"), 0), "jlt32 %r1, -1, +0"},
		{"jle reg", withOffset(asm.JLE.Reg(asm.R1, asm.R10, "x"), 7), "jle %r1, %r10, +7"},
		{"jset imm", withOffset(asm.JSet.Imm(asm.R1, 0x80, "x"), 1), "jset %r1, 0x80, +1"},
		{"jsgt32 reg", withOffset(asm.JSGT.Reg32(asm.R1, asm.R2, "x"), 1), "jsgt32 %r1, %r2, +1"},
		{"jsge imm", withOffset(asm.JSGE.Imm(asm.R1, -3, "x"), 1), "jsge %r1, -3, +1"},
		{"jslt reg", withOffset(asm.JSLT.Reg(asm.R1, asm.R2, "x"), 1), "jslt %r1, %r2, +1"},
		{"jsle32 imm", withOffset(asm.JSLE.Imm32(asm.R1, 9, "x"), -1), "jsle32 %r1, 9, -1"},
		{"call helper", asm.FnMapLookupElem.Call(), "call 1"},
		{"call local", withConstant(asm.Call.Label("f"), 4), "call local +4"},
		{"callx", callx, "call %r2"},
		{"exit", asm.Return(), "exit"},
		// LD
		{"lddw", asm.LoadImm(asm.R0, 0x1122334455667788, asm.DWord), "lddw %r0, 0x1122334455667788"},
		{"lddw negative", asm.LoadImm(asm.R2, -1, asm.DWord), "lddw %r2, -1"},
		{"lddw map fd", asm.LoadMapPtr(asm.R1, 9), "lddw %r1, map_fd 9"},
		{"lddw map value", asm.LoadMapValue(asm.R1, 9, 24), "lddw %r1, map_value 9, 24"},
		// LDX
		{"ldxb", asm.LoadMem(asm.R0, asm.R1, 2, asm.Byte), "ldxb %r0, [%r1+2]"},
		{"ldxh", asm.LoadMem(asm.R0, asm.R1, -2, asm.Half), "ldxh %r0, [%r1-2]"},
		{"ldxw", asm.LoadMem(asm.R0, asm.R10, -4, asm.Word), "ldxw %r0, [%r10-4]"},
		{"ldxdw", asm.LoadMem(asm.R0, asm.R1, 32767, asm.DWord), "ldxdw %r0, [%r1+32767]"},
		{"ldxsb", asm.LoadMemSX(asm.R0, asm.R10, -1, asm.Byte), "ldxsb %r0, [%r10-1]"},
		{"ldxsh", asm.LoadMemSX(asm.R0, asm.R10, -2, asm.Half), "ldxsh %r0, [%r10-2]"},
		{"ldxsw", asm.LoadMemSX(asm.R0, asm.R10, -32768, asm.Word), "ldxsw %r0, [%r10-32768]"},
		// ST
		{"stb", asm.StoreImm(asm.R10, -1, 0x7f, asm.Byte), "stb [%r10-1], 0x7f"},
		{"sth", asm.StoreImm(asm.R1, 2, 0x2211, asm.Half), "sth [%r1+2], 0x2211"},
		{"stw", asm.StoreImm(asm.R10, -4, -1, asm.Word), "stw [%r10-4], 0xffffffff"},
		// asm.StoreImm refuses DWord; the opcode helper does not.
		{"stdw", asm.Instruction{OpCode: asm.StoreImmOp(asm.DWord), Dst: asm.R10, Offset: -8, Constant: 0x11223344}, "stdw [%r10-8], 0x11223344"},
		// STX
		{"stxb", asm.StoreMem(asm.R10, -1, asm.R1, asm.Byte), "stxb [%r10-1], %r1"},
		{"stxh", asm.StoreMem(asm.R1, 0, asm.R2, asm.Half), "stxh [%r1], %r2"},
		{"stxw", asm.StoreMem(asm.R1, 4, asm.R2, asm.Word), "stxw [%r1+4], %r2"},
		{"stxdw", asm.StoreMem(asm.R10, -16, asm.R9, asm.DWord), "stxdw [%r10-16], %r9"},
		// atomics
		{"xadd dw", asm.StoreXAdd(asm.R10, asm.R1, asm.DWord), "lock add [%r10+0], %r1"},
		{"lock add32", asm.AddAtomic.Mem(asm.R10, asm.R1, asm.Word, -4), "lock add32 [%r10-4], %r1"},
		{"lock fetch add", asm.FetchAdd.Mem(asm.R10, asm.R1, asm.DWord, -8), "lock fetch add [%r10-8], %r1"},
		{"lock and", asm.AndAtomic.Mem(asm.R10, asm.R1, asm.DWord, -8), "lock and [%r10-8], %r1"},
		{"lock fetch and32", asm.FetchAnd.Mem(asm.R10, asm.R3, asm.Word, -4), "lock fetch and32 [%r10-4], %r3"},
		{"lock or32", asm.OrAtomic.Mem(asm.R10, asm.R1, asm.Word, -4), "lock or32 [%r10-4], %r1"},
		{"lock fetch or", asm.FetchOr.Mem(asm.R10, asm.R3, asm.DWord, -8), "lock fetch or [%r10-8], %r3"},
		{"lock xor", asm.XorAtomic.Mem(asm.R10, asm.R1, asm.DWord, -8), "lock xor [%r10-8], %r1"},
		{"lock fetch xor32", asm.FetchXor.Mem(asm.R10, asm.R1, asm.Word, -8), "lock fetch xor32 [%r10-8], %r1"},
		{"lock xchg", asm.Xchg.Mem(asm.R10, asm.R1, asm.DWord, -8), "lock xchg [%r10-8], %r1"},
		{"lock xchg32", asm.Xchg.Mem(asm.R10, asm.R1, asm.Word, -8), "lock xchg32 [%r10-8], %r1"},
		{"lock cmpxchg", asm.CmpXchg.Mem(asm.R10, asm.R1, asm.DWord, -8), "lock cmpxchg [%r10-8], %r1"},
		{"lock cmpxchg32", asm.CmpXchg.Mem(asm.R10, asm.R1, asm.Word, -8), "lock cmpxchg32 [%r10-8], %r1"},
	}
	classes := map[asm.Class]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if _, err := tt.ins.Marshal(&buf, binary.LittleEndian); err != nil {
				t.Fatalf("cilium Marshal(%v): %v", tt.ins, err)
			}
			want := buf.Bytes()
			atomic := tt.ins.OpCode.AtomicOp() != asm.InvalidAtomic
			if atomic {
				// cilium/ebpf v0.22 Marshal computes the immediate before
				// moving the atomic operation into it, so it always writes
				// 0; put the operation where its own Unmarshal (and the
				// kernel) reads it.
				binary.LittleEndian.PutUint32(want[4:8], uint32(tt.ins.OpCode.AtomicOp()>>8))
			}
			classes[tt.ins.OpCode.Class()] = true
			got, err := Assemble(tt.text)
			if err != nil {
				t.Fatalf("Assemble(%q): %v", tt.text, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Assemble(%q)\n got % x\nwant % x (cilium %v)", tt.text, got, want, tt.ins)
			}
			// And the other direction: cilium decodes our bytes back to
			// the instruction it was asked to build.
			var dec asm.Instruction
			if err := dec.Unmarshal(bytes.NewReader(got), binary.LittleEndian, "linux"); err != nil {
				t.Fatalf("cilium Unmarshal: %v", err)
			}
			if dec.OpCode != tt.ins.OpCode || dec.Dst != tt.ins.Dst || dec.Src != tt.ins.Src || dec.Offset != tt.ins.Offset ||
				(!atomic && dec.Constant != tt.ins.Constant) {
				t.Fatalf("cilium decodes %q as %v, want %v", tt.text, dec, tt.ins)
			}
			// The disassembly is the canonical spelling; it must reassemble.
			text, err := Disassemble(got)
			if err != nil {
				t.Fatalf("Disassemble: %v", err)
			}
			if again, err := Assemble(text); err != nil || !bytes.Equal(again, got) {
				t.Fatalf("%q does not reassemble: % x, %v", text, again, err)
			}
		})
	}
	for _, c := range []asm.Class{asm.LdClass, asm.LdXClass, asm.StClass, asm.StXClass, asm.ALUClass, asm.JumpClass, asm.Jump32Class, asm.ALU64Class} {
		if !classes[c] {
			t.Errorf("class %v not covered", c)
		}
	}
}

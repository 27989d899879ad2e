// Package progen generates random eBPF programs for differential testing:
// each program terminates (jumps go forward only), reads only stack memory
// it initialised, keeps r10 out of arithmetic, and ends by folding every
// register and stack slot into r0, so a program that the kernel verifier
// accepts computes the same r0 in the kernel and in any correct
// interpreter. It is shared by the tests of pkg/interp and of the program
// layer.
//
// The generator is deterministic for a given *rand.Rand; it is not safe for
// concurrent use with the same *rand.Rand.
package progen

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/cilium/ebpf/asm"
)

// Options tunes Generate. The zero value gives 64 body items with every
// instruction class enabled.
type Options struct {
	// Body is the number of random items (an item is one instruction or a
	// short sequence such as a masked shift); 0 means 64.
	Body int
	// NoAtomics leaves out atomic instructions.
	NoAtomics bool
	// NoV4 leaves out the cpu v4 instructions (sdiv/smod, movsx, bswap,
	// sign-extending loads, gotol) for kernels older than 6.6.
	NoV4 bool
	// Input makes the program read its starting values (r0-r9, the stack
	// slots and the 64-bit constants of the body) from an input buffer
	// through bpf_skb_load_bytes (helper 26) instead of holding them as
	// immediates; see GenerateInput. The kernel verifier tracks constants
	// exactly and hard-wires branches it decides statically, so with
	// immediates a kernel comparison tests the verifier's constant folding
	// as much as the instructions' run-time semantics; with Input it tests
	// the run-time semantics.
	Input bool
}

// InputRegs is the number of 64-bit values after the stack slots in an
// Input program's buffer: r0-r9, then values the body reloads.
const InputRegs = 16

// InputSize is the size of an Input program's buffer.
const InputSize = 8 * (Slots + InputRegs)

// HelperSkbLoadBytes is bpf_skb_load_bytes(ctx, offset, to, len), which an
// Input program calls once, first, as skb_load_bytes(r1, 0, r10-InputSize,
// InputSize): a runner other than the kernel must provide it.
const HelperSkbLoadBytes = 26

// Slots is the number of 8-byte stack slots the programs use, at
// r10-8*Slots .. r10-1; all are initialised first.
const Slots = 8

// Atomic returns an atomic instruction. It exists because
// github.com/cilium/ebpf v0.22's asm.AtomicOp.Mem marshals every atomic
// operation as ADD (the immediate is computed before the operation is
// moved into it); this form carries the operation in Constant, which the
// marshaller does encode.
func Atomic(op asm.AtomicOp, dst, src asm.Register, size asm.Size, off int16) asm.Instruction {
	return asm.Instruction{
		OpCode:   asm.AddAtomic.OpCode(size),
		Dst:      dst,
		Src:      src,
		Offset:   off,
		Constant: int64(op >> 8),
	}
}

// StoreImm returns *(size *)(dst + off) = imm for every size, DWord
// included (asm.StoreImm refuses DWord).
func StoreImm(dst asm.Register, off int16, imm int32, size asm.Size) asm.Instruction {
	return asm.Instruction{OpCode: asm.StoreImmOp(size), Dst: dst, Offset: off, Constant: int64(imm)}
}

// item is one unit of the body; jump items get their offset once every
// item's position is known.
type item struct {
	insns  []asm.Instruction
	target int  // for jumps: index of the item jumped to (len(items) = epilogue)
	long   bool // the jump is gotol: its offset is in Constant
}

type gen struct {
	rng  *rand.Rand
	opts Options
}

func (g *gen) reg() asm.Register { return asm.Register(g.rng.IntN(10)) } // r0-r9

func (g *gen) imm() int32 {
	switch g.rng.IntN(4) {
	case 0:
		return int32(g.rng.IntN(16)) - 8
	case 1:
		return []int32{0, 1, -1, 0x7fffffff, -0x80000000, 0xff, 0xffff, 32, 63, 64}[g.rng.IntN(10)]
	}
	return int32(g.rng.Uint32())
}

func (g *gen) imm64() int64 {
	if g.rng.IntN(2) == 0 {
		return int64(g.imm())
	}
	return int64(g.rng.Uint64())
}

var (
	aluOps  = []asm.ALUOp{asm.Add, asm.Sub, asm.Mul, asm.Div, asm.Or, asm.And, asm.LSh, asm.RSh, asm.Mod, asm.Xor, asm.Mov, asm.ArSh, asm.Neg}
	aluV4   = []asm.ALUOp{asm.SDiv, asm.SMod}
	jmpOps  = []asm.JumpOp{asm.JEq, asm.JGT, asm.JGE, asm.JSet, asm.JNE, asm.JSGT, asm.JSGE, asm.JLT, asm.JLE, asm.JSLT, asm.JSLE}
	atomics = []asm.AtomicOp{asm.AddAtomic, asm.OrAtomic, asm.AndAtomic, asm.XorAtomic, asm.FetchAdd, asm.FetchOr, asm.FetchAnd, asm.FetchXor, asm.Xchg, asm.CmpXchg}
	sizes   = []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}
)

// stackOff returns an aligned offset for an access of size s within the
// initialised slots.
func (g *gen) stackOff(s asm.Size) int16 {
	n := int16(s.Sizeof())
	slot := int16(g.rng.IntN(Slots))
	return -8*(slot+1) + n*int16(g.rng.IntN(8/int(n)))
}

func (g *gen) alu() []asm.Instruction {
	ops := aluOps
	if !g.opts.NoV4 {
		ops = append(ops[:len(ops):len(ops)], aluV4...)
	}
	op := ops[g.rng.IntN(len(ops))]
	is32 := g.rng.IntN(3) == 0
	dst, src := g.reg(), g.reg()
	width := int32(64)
	if is32 {
		width = 32
	}
	if op == asm.Neg {
		if is32 {
			return []asm.Instruction{asm.Neg.Imm32(dst, 0)}
		}
		return []asm.Instruction{asm.Neg.Imm(dst, 0)}
	}
	shift := op == asm.LSh || op == asm.RSh || op == asm.ArSh
	if g.rng.IntN(2) == 0 { // immediate
		v := g.imm()
		switch {
		case shift:
			v = int32(g.rng.IntN(int(width)))
		case (op == asm.Div || op == asm.Mod || op == asm.SDiv || op == asm.SMod) && v == 0:
			v = 3 // the verifier refuses division by the constant 0
		}
		if is32 {
			return []asm.Instruction{op.Imm32(dst, v)}
		}
		return []asm.Instruction{op.Imm(dst, v)}
	}
	var pre []asm.Instruction
	if shift { // a known shift amount >= width is refused: mask it
		pre = []asm.Instruction{asm.And.Imm(src, width-1)}
	}
	if op == asm.Mov && !g.opts.NoV4 && g.rng.IntN(3) == 0 {
		movsx := []asm.ALUOp{asm.MovSX8, asm.MovSX16, asm.MovSX32}
		if is32 {
			return []asm.Instruction{movsx[g.rng.IntN(2)].Reg32(dst, src)}
		}
		return []asm.Instruction{movsx[g.rng.IntN(3)].Reg(dst, src)}
	}
	if is32 {
		return append(pre, op.Reg32(dst, src))
	}
	return append(pre, op.Reg(dst, src))
}

func (g *gen) swap() []asm.Instruction {
	s := []asm.Size{asm.Half, asm.Word, asm.DWord}[g.rng.IntN(3)]
	dst := g.reg()
	switch g.rng.IntN(3) {
	case 0:
		return []asm.Instruction{asm.HostTo(asm.LE, dst, s)}
	case 1:
		return []asm.Instruction{asm.HostTo(asm.BE, dst, s)}
	}
	if g.opts.NoV4 {
		return []asm.Instruction{asm.HostTo(asm.BE, dst, s)}
	}
	return []asm.Instruction{asm.BSwap(dst, s)}
}

func (g *gen) mem() []asm.Instruction {
	s := sizes[g.rng.IntN(4)]
	off := g.stackOff(s)
	switch g.rng.IntN(4) {
	case 0:
		if s != asm.DWord && !g.opts.NoV4 {
			return []asm.Instruction{asm.LoadMemSX(g.reg(), asm.R10, off, s)}
		}
		return []asm.Instruction{asm.LoadMem(g.reg(), asm.R10, off, s)}
	case 1:
		return []asm.Instruction{asm.LoadMem(g.reg(), asm.R10, off, s)}
	case 2:
		return []asm.Instruction{asm.StoreMem(asm.R10, off, g.reg(), s)}
	}
	return []asm.Instruction{StoreImm(asm.R10, off, g.imm(), s)}
}

func (g *gen) atomic() []asm.Instruction {
	s := []asm.Size{asm.Word, asm.DWord}[g.rng.IntN(2)]
	return []asm.Instruction{Atomic(atomics[g.rng.IntN(len(atomics))], asm.R10, g.reg(), s, g.stackOff(s))}
}

func (g *gen) cond() asm.Instruction {
	op := jmpOps[g.rng.IntN(len(jmpOps))]
	dst := g.reg()
	switch g.rng.IntN(4) {
	case 0:
		return op.Imm(dst, g.imm(), "")
	case 1:
		return op.Imm32(dst, g.imm(), "")
	case 2:
		return op.Reg(dst, g.reg(), "")
	}
	return op.Reg32(dst, g.reg(), "")
}

// jump returns a conditional forward jump, or a conditional jump over an
// unconditional one (so that the code the latter skips stays reachable, as
// the verifier requires).
func (g *gen) jump(i, n int) item {
	target := i + 1 + g.rng.IntN(n-i) // (i, n]: n is the epilogue
	if g.rng.IntN(5) == 0 {
		ja := asm.Ja.Label("")
		if !g.opts.NoV4 && g.rng.IntN(2) == 0 {
			ja = asm.LongJump("")
		}
		c := g.cond()
		c.Offset = 1
		return item{insns: []asm.Instruction{c, ja}, target: target, long: ja.OpCode.Class() == asm.Jump32Class}
	}
	return item{insns: []asm.Instruction{g.cond()}, target: target}
}

// Generate returns a random program; see the package documentation for
// what it guarantees. opts may be nil.
func Generate(rng *rand.Rand, opts *Options) asm.Instructions {
	g := &gen{rng: rng}
	if opts != nil {
		g.opts = *opts
	}
	n := g.opts.Body
	if n <= 0 {
		n = 64
	}
	var prologue asm.Instructions
	if g.opts.Input {
		// The buffer lands at r10-InputSize: values, then the slots on top.
		prologue = append(prologue,
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, -InputSize),
			asm.Mov.Imm(asm.R4, InputSize),
			asm.FnSkbLoadBytes.Call())
		for r := asm.R0; r <= asm.R9; r++ {
			prologue = append(prologue, asm.LoadMem(r, asm.R10, inputOff(int(r)), asm.DWord))
		}
	} else {
		for r := asm.R0; r <= asm.R9; r++ {
			if g.rng.IntN(2) == 0 {
				prologue = append(prologue, asm.LoadImm(r, g.imm64(), asm.DWord))
			} else {
				prologue = append(prologue, asm.Mov.Imm(r, g.imm()))
			}
		}
		for s := range Slots {
			prologue = append(prologue, StoreImm(asm.R10, int16(-8*(s+1)), g.imm(), asm.DWord))
		}
	}

	items := make([]item, n)
	for i := range items {
		switch k := g.rng.IntN(20); {
		case k < 9:
			items[i] = item{insns: g.alu()}
		case k < 10:
			items[i] = item{insns: g.swap()}
		case k < 11 && g.opts.Input:
			items[i] = item{insns: []asm.Instruction{asm.LoadMem(g.reg(), asm.R10, inputOff(10+g.rng.IntN(InputRegs-10)), asm.DWord)}}
		case k < 11:
			items[i] = item{insns: []asm.Instruction{asm.LoadImm(g.reg(), g.imm64(), asm.DWord)}}
		case k < 14:
			items[i] = item{insns: g.mem()}
		case k < 16 && !g.opts.NoAtomics:
			items[i] = item{insns: g.atomic()}
		default:
			items[i] = g.jump(i, n)
		}
	}
	// Raw positions of the items (relative to the first), then offsets.
	pos := make([]int, n+1)
	for i, it := range items {
		size := 0
		for _, ins := range it.insns {
			size += int(ins.Size() / asm.InstructionSize)
		}
		pos[i+1] = pos[i] + size
	}
	insns := prologue
	for i, it := range items {
		last := it.insns[len(it.insns)-1]
		if !last.OpCode.Class().IsJump() {
			insns = append(insns, it.insns...)
			continue
		}
		// The jump is the item's last instruction.
		rel := pos[it.target] - pos[i+1]
		if it.long {
			last.Constant = int64(rel)
		} else {
			last.Offset = int16(rel)
		}
		insns = append(insns, it.insns[:len(it.insns)-1]...)
		insns = append(insns, last)
	}
	// Epilogue: fold r1-r9 and the stack into r0, then the high half into
	// the low one (BPF_PROG_TEST_RUN reports 32 bits).
	for r := asm.R1; r <= asm.R9; r++ {
		insns = append(insns, asm.Mul.Imm(asm.R0, 0x3b9aca07), asm.Xor.Reg(asm.R0, r))
	}
	for s := range Slots {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R10, int16(-8*(s+1)), asm.DWord),
			asm.Mul.Imm(asm.R0, 0x3b9aca07), asm.Xor.Reg(asm.R0, asm.R1))
	}
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R0), asm.RSh.Imm(asm.R1, 32), asm.Xor.Reg(asm.R0, asm.R1),
		asm.Return())
	return insns
}

// inputOff is the stack offset of value i of an Input program's buffer.
func inputOff(i int) int16 { return int16(-InputSize + 8*i) }

// GenerateInput returns a program generated with opts.Input set and the
// InputSize-byte buffer it expects from bpf_skb_load_bytes: random values
// drawn like the immediates Generate would have used. For the kernel, pass
// the buffer as the packet after a 14-byte Ethernet header (a socket
// filter's skb data starts after it).
func GenerateInput(rng *rand.Rand, opts *Options) (asm.Instructions, []byte) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	o.Input = true
	g := &gen{rng: rng, opts: o}
	in := make([]byte, InputSize)
	for i := range Slots + InputRegs {
		var v uint64
		if g.rng.IntN(2) == 0 {
			v = uint64(g.imm64())
		} else {
			v = uint64(int64(g.imm()))
		}
		binary.LittleEndian.PutUint64(in[8*i:], v)
	}
	return Generate(rng, &o), in
}

// IsCmpXchg32 reports whether ins is a 32-bit BPF_CMPXCHG.
func IsCmpXchg32(ins asm.Instruction) bool {
	return ins.OpCode.Class() == asm.StXClass && ins.OpCode.Mode() == asm.AtomicMode &&
		ins.OpCode.Size() == asm.Word && (ins.OpCode.AtomicOp() == asm.CmpXchg || ins.Constant == int64(asm.CmpXchg>>8))
}

// ZeroExtendCmpXchg returns a copy of insns with w0 = w0 inserted after
// every 32-bit BPF_CMPXCHG, jumps adjusted so that a jump to the
// instruction after a cmpxchg still lands after the inserted one. RFC 9669
// already zero-extends the value a cmpxchg loads into r0, so the program
// computes the same; it exists to work around kernels that drop that
// zero extension (see the kernel differential test of pkg/interp). The
// relative jumps of insns must be resolved (Offset, or Constant for
// gotol), as Generate returns them.
func ZeroExtendCmpXchg(insns asm.Instructions) asm.Instructions {
	// pos[i] is the raw position of insns[i]; shift[i] the number of
	// cmpxchgs before it.
	pos := make([]int, len(insns)+1)
	shift := make([]int, len(insns)+1)
	for i, ins := range insns {
		pos[i+1] = pos[i] + int(ins.Size()/asm.InstructionSize)
		shift[i+1] = shift[i]
		if IsCmpXchg32(ins) {
			shift[i+1]++
		}
	}
	index := make(map[int]int, len(insns)+1)
	for i, p := range pos {
		index[p] = i
	}
	moved := func(raw int) int { return raw + shift[index[raw]] }
	out := make(asm.Instructions, 0, len(insns)+shift[len(insns)])
	for i, ins := range insns {
		if ins.OpCode.Class().IsJump() && ins.OpCode.JumpOp() != asm.Call && ins.OpCode.JumpOp() != asm.Exit {
			next := pos[i+1]
			if ins.OpCode.Class() == asm.Jump32Class && ins.OpCode.JumpOp() == asm.Ja {
				ins.Constant = int64(moved(next+int(ins.Constant)) - moved(next))
			} else {
				ins.Offset = int16(moved(next+int(ins.Offset)) - moved(next))
			}
		}
		out = append(out, ins)
		if IsCmpXchg32(ins) {
			out = append(out, asm.Mov.Reg32(asm.R0, asm.R0))
		}
	}
	return out
}

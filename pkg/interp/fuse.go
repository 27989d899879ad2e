package interp

// Fused pairs. A few two-instruction sequences that compilers emit all the
// time (a stack pointer argument: r2 = r10; r2 += -4; a masked or shifted
// copy: r1 = r6; r1 &= 63; a loop's back edge: r6 += 1; goto loop) run as
// one dispatch of the run loop. Load rewrites the first slot of such a
// pair into a fused opcode that carries both halves; the second slot
// keeps its instruction, so a jump to it runs it alone. Semantics stay
// those of the two instructions exactly: the instruction budget is
// charged for both, and when it runs out between them the run stops at
// the second, as it would have (see the run loop).
//
// Only pairs whose second half cannot fault are fused (ALU with an
// immediate, ja), so no fault ever has to name the second instruction.

// fusedMov maps the opcode of an ALU64 immediate instruction that follows
// dst = src (same dst) to the fused opcode.
var fusedMov = [numOps]uint8{
	opAdd64K: opMovAdd64K,
	opAnd64K: opMovAnd64K,
	opLsh64K: opMovLsh64K,
	opRsh64K: opMovRsh64K,
}

// fuse rewrites the first slot of every fusable pair of p.
func (p *Program) fuse() {
	n := len(p.insns) - 1 // the last slot is the opFallOff sentinel
	for pc := 0; pc+1 < n; pc++ {
		a, b := &p.insns[pc], p.insns[pc+1]
		switch {
		case a.op == opMov64X && b.dst == a.dst && fusedMov[b.op] != 0:
			a.op, a.imm = fusedMov[b.op], b.imm
		case a.op == opAdd64K && b.op == opJa:
			a.op, a.off = opAdd64KJa, b.off
		}
	}
}

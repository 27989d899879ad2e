package verifier

// Value relevance: which registers' scalar values can still influence a
// safety decision. Pruning ignores the values of the others (a state whose
// only difference from a fully explored one is in such scalars is covered
// by it), which is what the kernel's precision tracking achieves for
// counters and sums that no check ever looks at.
//
// The analysis is static and per subprogram. A register is relevant at an
// instruction if, on some path from there within its subprogram, its value
// flows (through ALU operations and register moves) into a relevant use:
//
//   - the base of a load, store or atomic operation, and the value stored
//     by STX or an atomic (stack contents are always compared in full, so
//     whatever reaches the stack counts as used);
//   - both operands of a conditional jump (branch outcomes, refinements,
//     null and packet checks);
//   - both operands of a 64-bit ADD or SUB of two registers when either may
//     hold a pointer (pointer arithmetic checks the scalar's bounds);
//   - R1-R5 at any call (helper arguments with sizes and constants,
//     bpf-to-bpf arguments, bpf_loop's count and context);
//   - R6 and the index register of LD_ABS/LD_IND;
//   - R0 at an exit, except from the main program when Env.Return is nil
//     (its R0 is then only type-checked: a scalar).
//
// Every other check on a register is on its type, which pruning still
// compares. Which registers may hold pointers comes from a forward pass
// that over-approximates register types (regKinds).

// Register kinds for the forward pass.
const (
	kScalar   uint8 = 1 << iota
	kPtr            // a pointer whose loads give scalars (map value, map, func)
	kCtxStack       // a context or stack pointer: its loads may give pointers
	kAny      = kScalar | kPtr | kCtxStack
)

// pruneMode switches pruning relaxations off, for tests.
type pruneMode uint8

const (
	noRelevance pruneMode = 1 << iota // compare live scalars in full
	noLiveness                        // compare every register in full
	fullPruning = noRelevance | noLiveness
)

// allRegs marks every register relevant.
const allRegs uint16 = 1<<11 - 1

// succs returns the successors of pc within its subprogram.
func (v *verifier) succs(pc int, buf []int) []int {
	in := v.insns[pc]
	buf = buf[:0]
	switch {
	case in.isLdImm64():
		return append(buf, pc+2)
	case in.isJmp() && in.aluOp() == jmpEXIT:
		return buf
	case in.class() == clsJMP && in.aluOp() == jmpCALL:
		return append(buf, pc+1)
	case in.isJmp():
		t, _ := v.jumpTarget(pc)
		buf = append(buf, t)
		if in.aluOp() != jmpJA {
			buf = append(buf, pc+1)
		}
		return buf
	}
	return append(buf, pc+1)
}

// regKinds computes, for every instruction, a superset of the kinds each
// register may hold before it runs.
func (v *verifier) regKinds() [][11]uint8 {
	n := len(v.insns)
	kinds := make([][11]uint8, n)
	seen := make([]bool, n)
	var work []int
	join := func(pc int, k *[11]uint8) {
		if pc < 0 || pc >= n {
			return
		}
		changed := !seen[pc]
		seen[pc] = true
		for r := range k {
			if kinds[pc][r]|k[r] != kinds[pc][r] {
				kinds[pc][r] |= k[r]
				changed = true
			}
		}
		if changed {
			work = append(work, pc)
		}
	}
	for _, s := range v.subprogs {
		var k [11]uint8
		for r := 1; r <= 5; r++ {
			k[r] = kAny
		}
		k[10] = kCtxStack
		join(s, &k)
	}
	var buf []int
	for len(work) > 0 {
		pc := work[len(work)-1]
		work = work[:len(work)-1]
		k := kinds[pc]
		in := v.insns[pc]
		switch in.class() {
		case clsALU, clsALU64:
			op := in.aluOp()
			src := kScalar
			if in.srcX() && op != aluEND && op != aluNEG {
				src = k[in.src]
			}
			switch {
			case op == aluMOV && in.class() == clsALU64 && in.off == 0:
				k[in.dst] = src
			case (op == aluADD || op == aluSUB) && in.class() == clsALU64:
				k[in.dst] |= src | kScalar
			default:
				k[in.dst] = kScalar
			}
		case clsLDX:
			if k[in.src]&kCtxStack != 0 {
				k[in.dst] = kAny
			} else {
				k[in.dst] = kScalar
			}
		case clsSTX:
			if in.mode() == modeATOMIC && in.imm&atomicFETCH != 0 {
				if in.imm == atomicCMPXCHG {
					k[0] = kScalar
				} else {
					k[in.src] = kScalar
				}
			}
		case clsLD:
			if in.isLdImm64() {
				k[in.dst] = kPtr
				if in.src == 0 {
					k[in.dst] = kScalar
				}
			} else {
				k[0] = kScalar
				for r := 1; r <= 5; r++ {
					k[r] = 0
				}
			}
		case clsJMP, clsJMP32:
			if in.aluOp() == jmpCALL {
				k[0] = kAny
				if p := v.helpers[in.imm]; in.src != pseudoCall && p != nil {
					switch p.Ret {
					case RetInteger:
						k[0] = kScalar
					case RetVoid:
						k[0] = 0
					case RetMapValueOrNull:
						k[0] = kPtr
					}
				}
				for r := 1; r <= 5; r++ {
					k[r] = 0
				}
			}
		}
		buf = v.succs(pc, buf)
		for _, s := range buf {
			join(s, &k)
		}
	}
	return kinds
}

// regSets are register sets before an instruction (bit r for register r).
type regSets struct {
	live uint16 // registers some path may read before writing them
	rel  uint16 // live registers whose scalar values are relevant
}

// relevance computes the live and relevant registers of every instruction.
func (v *verifier) relevance() []regSets {
	n := len(v.insns)
	sets := make([]regSets, n)
	if v.pruneMode&noLiveness != 0 {
		for i := range sets {
			sets[i] = regSets{allRegs, allRegs}
		}
		return sets
	}
	defer func() {
		if v.pruneMode&noRelevance != 0 {
			for i := range sets {
				sets[i].rel = allRegs
			}
		}
	}()
	kinds := v.regKinds()
	preds := make([][]int, n)
	var buf []int
	for pc := 0; pc < n; pc++ {
		if v.ldimmHi[pc] {
			continue
		}
		for _, s := range v.succs(pc, buf) {
			if s >= 0 && s < n {
				preds[s] = append(preds[s], pc)
			}
		}
	}
	bit := func(r uint8) uint16 { return 1 << r }
	work := make([]int, 0, n)
	queued := make([]bool, n)
	for pc := 0; pc < n; pc++ {
		if !v.ldimmHi[pc] {
			work = append(work, pc)
			queued[pc] = true
		}
	}
	for len(work) > 0 {
		pc := work[len(work)-1]
		work = work[:len(work)-1]
		queued[pc] = false
		var out, liveOut uint16
		buf = v.succs(pc, buf)
		for _, s := range buf {
			if s >= 0 && s < n {
				out |= sets[s].rel
				liveOut |= sets[s].live
			}
		}
		in := v.insns[pc]
		// defs: written; srcs: read to compute the written value; uses:
		// read for a safety check; reads: read at all.
		var defs, srcs, uses, reads uint16
		switch in.class() {
		case clsALU, clsALU64:
			op := in.aluOp()
			defs = bit(in.dst)
			if op != aluMOV {
				srcs |= bit(in.dst)
			}
			if in.srcX() && op != aluEND && op != aluNEG {
				srcs |= bit(in.src)
				if in.class() == clsALU64 && (op == aluADD || op == aluSUB) &&
					(kinds[pc][in.dst]|kinds[pc][in.src])&(kPtr|kCtxStack) != 0 {
					uses |= bit(in.dst) | bit(in.src)
				}
			}
		case clsLDX:
			defs = bit(in.dst)
			uses = bit(in.src)
		case clsST:
			uses = bit(in.dst)
		case clsSTX:
			uses = bit(in.dst) | bit(in.src)
			if in.mode() == modeATOMIC && in.imm == atomicCMPXCHG {
				uses |= bit(0)
			}
		case clsLD:
			if in.isLdImm64() {
				defs = bit(in.dst)
			} else {
				defs = 0x3f // R0-R5
				uses = bit(6)
				if in.mode() == modeIND {
					uses |= bit(in.src)
				}
			}
		case clsJMP, clsJMP32:
			switch in.aluOp() {
			case jmpEXIT:
				if v.subprogOf[pc] != 0 || v.env.Return != nil {
					uses = bit(0)
				}
			case jmpCALL:
				defs = 0x3f
				uses = 0x3e // R1-R5
			case jmpJA:
			default:
				uses = bit(in.dst)
				if in.srcX() {
					uses |= bit(in.src)
				}
			}
		}
		if in.class() == clsJMP || in.class() == clsJMP32 {
			switch in.aluOp() {
			case jmpEXIT:
				reads = bit(0)
			case jmpCALL:
				reads = 0x3e
			}
		}
		reads |= srcs | uses
		r := out&^defs | uses
		if out&defs != 0 {
			r |= srcs
		}
		l := liveOut&^defs | reads
		if r|sets[pc].rel != sets[pc].rel || l|sets[pc].live != sets[pc].live {
			sets[pc].rel |= r
			sets[pc].live |= l
			for _, p := range preds[pc] {
				if !queued[p] {
					queued[p] = true
					work = append(work, p)
				}
			}
		}
	}
	return sets
}

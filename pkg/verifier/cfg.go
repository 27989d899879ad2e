package verifier

import (
	"sort"

	"golang.org/x/sys/unix"
)

// checkInsn validates opcode and reserved fields of insns[pc] (EINVAL).
func (v *verifier) checkInsn(pc int) error {
	in := v.insns[pc]
	bad := func(format string, args ...any) error { return v.errf(nil, pc, unix.EINVAL, format, args...) }
	if in.dst > 10 {
		return bad("R%d is invalid", in.dst)
	}
	if in.src > 10 && in.class() != clsLD {
		return bad("R%d is invalid", in.src)
	}
	switch in.class() {
	case clsALU, clsALU64:
		op := in.aluOp()
		w64 := in.class() == clsALU64
		switch op {
		case aluNEG:
			if in.srcX() || in.src != 0 || in.imm != 0 || in.off != 0 {
				return bad("BPF_NEG uses reserved fields")
			}
		case aluEND:
			if in.off != 0 || in.src != 0 || (in.imm != 16 && in.imm != 32 && in.imm != 64) || (w64 && in.srcX()) {
				return bad("BPF_END uses reserved fields")
			}
		case aluADD, aluSUB, aluMUL, aluDIV, aluOR, aluAND, aluLSH, aluRSH, aluMOD, aluXOR, aluMOV, aluARSH:
			okOff := in.off == 0
			if (op == aluDIV || op == aluMOD) && in.off == 1 {
				okOff = true
			}
			if op == aluMOV && in.srcX() && (in.off == 8 || in.off == 16 || (w64 && in.off == 32)) {
				okOff = true
			}
			if in.srcX() {
				if in.imm != 0 || !okOff {
					return bad("BPF_ALU uses reserved fields")
				}
			} else if in.src != 0 || !okOff {
				return bad("BPF_ALU uses reserved fields")
			}
			if !in.srcX() && (op == aluDIV || op == aluMOD) && in.imm == 0 {
				return bad("div by zero")
			}
			if !in.srcX() && (op == aluLSH || op == aluRSH || op == aluARSH) {
				width := int32(32)
				if w64 {
					width = 64
				}
				if in.imm < 0 || in.imm >= width {
					return bad("invalid shift %d", in.imm)
				}
			}
		default:
			return bad("invalid BPF_ALU opcode %x", op)
		}
	case clsLDX:
		if (in.mode() != modeMEM && in.mode() != modeMEMSX) || in.imm != 0 || (in.mode() == modeMEMSX && in.size() == 8) {
			return bad("BPF_LDX uses reserved fields")
		}
	case clsST:
		if in.mode() != modeMEM || in.src != 0 {
			return bad("BPF_ST uses reserved fields")
		}
	case clsSTX:
		switch in.mode() {
		case modeMEM:
			if in.imm != 0 {
				return bad("BPF_STX uses reserved fields")
			}
		case modeATOMIC:
			if in.size() != 4 && in.size() != 8 {
				return bad("invalid atomic operand size")
			}
			switch in.imm {
			case aluADD, aluOR, aluAND, aluXOR, aluADD | atomicFETCH, aluOR | atomicFETCH,
				aluAND | atomicFETCH, aluXOR | atomicFETCH, atomicXCHG, atomicCMPXCHG:
			default:
				return bad("BPF_ATOMIC uses invalid atomic opcode %02x", in.imm)
			}
		default:
			return bad("unknown opcode %02x", in.op)
		}
	case clsLD:
		switch {
		case in.isLdImm64():
			if pc+1 >= len(v.insns) {
				return bad("invalid bpf_ld_imm64 insn")
			}
			nx := v.insns[pc+1]
			if in.off != 0 || nx.op != 0 || nx.dst != 0 || nx.src != 0 || nx.off != 0 {
				return bad("invalid bpf_ld_imm64 insn")
			}
			switch in.src {
			case 0, pseudoMapValue:
			case pseudoMapFD, pseudoFunc:
				if nx.imm != 0 {
					return bad("invalid bpf_ld_imm64 insn")
				}
			default:
				return bad("unsupported bpf_ld_imm64 pseudo src %d", in.src)
			}
		case in.mode() == modeABS || in.mode() == modeIND:
			if in.size() == 8 || in.dst != 0 || in.off != 0 || (in.mode() == modeABS && in.src != 0) {
				return bad("BPF_LD_[ABS|IND] uses reserved fields")
			}
		default:
			return bad("unknown opcode %02x", in.op)
		}
	case clsJMP, clsJMP32:
		op := in.aluOp()
		j32 := in.class() == clsJMP32
		switch op {
		case jmpJA:
			if in.srcX() || in.src != 0 || in.dst != 0 || (!j32 && in.imm != 0) || (j32 && in.off != 0) {
				return bad("BPF_JA uses reserved fields")
			}
		case jmpCALL:
			if j32 || in.srcX() || in.dst != 0 || in.off != 0 {
				return bad("BPF_CALL uses reserved fields")
			}
			if in.src == 2 {
				return bad("kernel function calls are not supported")
			}
			if in.src != 0 && in.src != pseudoCall {
				return bad("BPF_CALL uses reserved fields")
			}
		case jmpEXIT:
			if j32 || in.srcX() || in.src != 0 || in.dst != 0 || in.off != 0 || in.imm != 0 {
				return bad("BPF_EXIT uses reserved fields")
			}
		case jmpJEQ, jmpJGT, jmpJGE, jmpJSET, jmpJNE, jmpJSGT, jmpJSGE, jmpJLT, jmpJLE, jmpJSLT, jmpJSLE:
			if in.srcX() {
				if in.imm != 0 {
					return bad("BPF_JMP/JMP32 uses reserved fields")
				}
			} else if in.src != 0 {
				return bad("BPF_JMP/JMP32 uses reserved fields")
			}
		default:
			return bad("invalid BPF_JMP/JMP32 opcode %x", op)
		}
	}
	return nil
}

// jumpTarget returns the target of a jump at pc, and false if insns[pc] is
// not a jump (calls and exits are not jumps).
func (v *verifier) jumpTarget(pc int) (int, bool) {
	in := v.insns[pc]
	if in.class() != clsJMP && in.class() != clsJMP32 {
		return 0, false
	}
	switch in.aluOp() {
	case jmpCALL, jmpEXIT:
		return 0, false
	case jmpJA:
		if in.class() == clsJMP32 {
			return pc + int(in.imm) + 1, true
		}
	}
	return pc + int(in.off) + 1, true
}

// checkCFG validates every instruction, finds subprograms and checks
// jumps, reachability and recursion.
func (v *verifier) checkCFG() error {
	n := len(v.insns)
	v.ldimmHi = make([]bool, n)
	starts := map[int]bool{0: true}
	for pc := 0; pc < n; pc++ {
		if err := v.checkInsn(pc); err != nil {
			return err
		}
		in := v.insns[pc]
		if in.isLdImm64() {
			v.ldimmHi[pc+1] = true
			if in.src == pseudoFunc {
				t := pc + int(in.imm) + 1
				if t < 0 || t >= n {
					return v.errf(nil, pc, unix.EINVAL, "function pointer to insn %d out of range", t)
				}
				starts[t] = true
				v.isCallback[t] = true
			}
			pc++
			continue
		}
		if in.class() == clsJMP && in.aluOp() == jmpCALL && in.src == pseudoCall {
			t := pc + int(in.imm) + 1
			if t < 0 || t >= n {
				return v.errf(nil, pc, unix.EINVAL, "function call to insn %d out of range", t)
			}
			starts[t] = true
		}
	}
	for s := range starts {
		if v.ldimmHi[s] {
			return v.errf(nil, s, unix.EINVAL, "function starts in the middle of ldimm64 insn %d", s-1)
		}
		v.subprogs = append(v.subprogs, s)
	}
	sort.Ints(v.subprogs)
	v.subprogOf = make([]int, n)
	for i, s := range v.subprogs {
		end := n
		if i+1 < len(v.subprogs) {
			end = v.subprogs[i+1]
		}
		for pc := s; pc < end; pc++ {
			v.subprogOf[pc] = i
		}
		last := v.insns[end-1]
		if v.ldimmHi[end-1] || last.class() != clsJMP || (last.aluOp() != jmpEXIT && last.aluOp() != jmpJA) {
			return v.errf(nil, end-1, unix.EINVAL, "last insn is not an exit or jmp")
		}
	}
	// Jump targets: in range, same subprogram, not into LD_IMM64.
	for pc := 0; pc < n; pc++ {
		if v.ldimmHi[pc] {
			continue
		}
		t, ok := v.jumpTarget(pc)
		if !ok {
			continue
		}
		if t < 0 || t >= n || v.subprogOf[t] != v.subprogOf[pc] {
			return v.errf(nil, pc, unix.EINVAL, "jump out of range from insn %d to %d", pc, t)
		}
		if v.ldimmHi[t] {
			return v.errf(nil, pc, unix.EINVAL, "jump into the middle of ldimm64 insn %d", t-1)
		}
		v.pruneAt[t] = true
	}
	// Reachability: walk from every subprogram start that is reached.
	seen := make([]bool, n)
	work := []int{0}
	seen[0] = true
	push := func(t int) {
		if t >= 0 && t < n && !seen[t] {
			seen[t] = true
			work = append(work, t)
		}
	}
	v.callees = make([][]int, len(v.subprogs))
	for len(work) > 0 {
		pc := work[len(work)-1]
		work = work[:len(work)-1]
		in := v.insns[pc]
		sp := v.subprogOf[pc]
		switch {
		case in.isLdImm64():
			if in.src == pseudoFunc {
				t := pc + int(in.imm) + 1
				push(t)
				v.callees[sp] = append(v.callees[sp], v.subprogOf[t])
			}
			push(pc + 2)
		case in.isJmp() && in.aluOp() == jmpEXIT:
		case in.class() == clsJMP && in.aluOp() == jmpCALL:
			if in.src == pseudoCall {
				t := pc + int(in.imm) + 1
				push(t)
				v.callees[sp] = append(v.callees[sp], v.subprogOf[t])
			}
			push(pc + 1)
		case in.isJmp():
			t, _ := v.jumpTarget(pc)
			push(t)
			if in.aluOp() != jmpJA {
				push(pc + 1)
			}
		default:
			push(pc + 1)
		}
	}
	for pc := 0; pc < n; pc++ {
		if !seen[pc] && !v.ldimmHi[pc] {
			return v.errf(nil, pc, unix.EINVAL, "unreachable insn %d", pc)
		}
	}
	// Recursion: the static call graph must be acyclic.
	color := make([]int, len(v.subprogs))
	var visit func(int) error
	visit = func(s int) error {
		color[s] = 1
		for _, c := range v.callees[s] {
			if color[c] == 1 {
				return v.errf(nil, v.subprogs[s], unix.E2BIG, "recursive call from subprog at insn %d to insn %d: the call stack would be too deep", v.subprogs[s], v.subprogs[c])
			}
			if color[c] == 0 {
				if err := visit(c); err != nil {
					return err
				}
			}
		}
		color[s] = 2
		return nil
	}
	for s := range v.subprogs {
		if color[s] == 0 {
			if err := visit(s); err != nil {
				return err
			}
		}
	}
	for _, s := range v.subprogs {
		v.pruneAt[s] = true
	}
	return nil
}

package verifier

import (
	"math"
)

// jump handles JMP/JMP32: conditional and unconditional jumps, calls, exit.
func (v *verifier) jump(st *state, in insn) (bool, error) {
	op := in.aluOp()
	pc := st.pc
	switch op {
	case jmpJA:
		t, _ := v.jumpTarget(pc)
		st.pc = t
		v.jmps++
		return false, nil
	case jmpEXIT:
		return v.exit(st)
	case jmpCALL:
		if in.src == pseudoCall {
			return false, v.pseudoCall(st, pc+int(in.imm)+1, nil, -1)
		}
		return false, v.callHelper(st, in)
	}
	v.jmps++
	f := st.cur()
	if err := v.readReg(st, in.dst); err != nil {
		return false, err
	}
	j32 := in.class() == clsJMP32
	var src reg
	srcIsReg := in.srcX()
	if srcIsReg {
		if err := v.readReg(st, in.src); err != nil {
			return false, err
		}
		src = f.regs[in.src]
	} else if j32 {
		src = constScalar(uint64(uint32(in.imm)))
	} else {
		src = constScalar(uint64(int64(in.imm)))
	}
	dst := f.regs[in.dst]
	target := pc + int(in.off) + 1

	// Null checks of map_value_or_null and sock_common_or_null.
	if !j32 && (op == jmpJEQ || op == jmpJNE) && isZero(src) && dst.typ.orNull() {
		other, err := v.push(st, target)
		if err != nil {
			return false, err
		}
		// Taken branch: JEQ -> null, JNE -> non-null.
		markNull(other, dst.id, op == jmpJEQ)
		markNull(st, dst.id, op == jmpJNE)
		st.pc = pc + 1
		return false, nil
	}
	if !j32 && (op == jmpJEQ || op == jmpJNE) && isZero(dst) && src.typ.orNull() {
		other, err := v.push(st, target)
		if err != nil {
			return false, err
		}
		markNull(other, src.id, op == jmpJEQ)
		markNull(st, src.id, op == jmpJNE)
		st.pc = pc + 1
		return false, nil
	}
	if dst.typ != scalarValue || src.typ != scalarValue {
		taken := -1
		// A non-null pointer compared with 0.
		if (op == jmpJEQ || op == jmpJNE) && (isZero(src) && dst.typ != scalarValue && !dst.typ.orNull() ||
			isZero(dst) && src.typ != scalarValue && !src.typ.orNull()) {
			taken = 0
			if op == jmpJNE {
				taken = 1
			}
		}
		switch taken {
		case 0:
			st.pc = pc + 1
			return false, nil
		case 1:
			st.pc = target
			return false, nil
		}
		other, err := v.push(st, target)
		if err != nil {
			return false, err
		}
		if !j32 {
			v.pktCompare(st, other, op, dst, src)
		}
		st.pc = pc + 1
		return false, nil
	}

	// Scalar comparison.
	taken := branchTaken(op, dst, src, j32)
	if taken == 1 {
		st.pc = target
		return false, nil
	}
	if taken == 0 {
		st.pc = pc + 1
		return false, nil
	}
	// Refine both outcomes; a branch whose refinement is empty is dead.
	tDst, tSrc := dst, src
	fDst, fSrc := dst, src
	okT := refineCond(op, &tDst, &tSrc, true, j32)
	okF := refineCond(op, &fDst, &fSrc, false, j32)
	if okT {
		other, err := v.push(st, target)
		if err != nil {
			return false, err
		}
		applyRefined(other, in, tDst, tSrc, srcIsReg)
	}
	if !okF {
		return true, nil
	}
	applyRefined(st, in, fDst, fSrc, srcIsReg)
	st.pc = pc + 1
	return false, nil
}

func isZero(r reg) bool { return r.typ == scalarValue && r.isConst() && r.vo.value == 0 }

// markNull turns every register with id into NULL (scalar 0) or the
// pointer it was when not NULL (map value, map pointer of maptypes.go,
// socket). A NULL that carried a reference releases it.
func markNull(st *state, id uint32, isNull bool) {
	var ref uint32
	st.forEachReg(func(r *reg) {
		if r.typ.orNull() && r.id == id {
			if isNull {
				if r.ref != 0 {
					ref = r.ref
				}
				*r = constScalar(0)
			} else {
				r.typ = r.typ.nonNull()
				if !r.keepID {
					r.id = 0
				}
			}
		}
	})
	if ref != 0 {
		dropRef(st, ref)
	}
}

// applyRefined stores refined registers back, and into scalars linked by id.
func applyRefined(st *state, in insn, dst, src reg, srcIsReg bool) {
	f := st.cur()
	set := func(regno uint8, r reg) {
		f.regs[regno] = r
		if r.id != 0 {
			st.forEachReg(func(x *reg) {
				if x.typ == scalarValue && x.id == r.id {
					*x = r
				}
			})
		}
	}
	set(in.dst, dst)
	if srcIsReg {
		set(in.src, src)
	}
}

// view32 returns a register standing for the low 32 bits of r, zero- or
// sign-extended to 64 bits.
func view32(r reg, signed bool) reg {
	if signed {
		if r.smin >= math.MinInt32 && r.smax <= math.MaxInt32 {
			return r
		}
		z := view32(r, false)
		if z.umax <= math.MaxInt32 {
			return z
		}
		s := unknownScalar()
		s.smin, s.smax = math.MinInt32, math.MaxInt32
		s.sync()
		return s
	}
	if r.fits32() {
		return r
	}
	z := reg{typ: scalarValue, vo: r.vo.cast(4)}
	z.setBoundsFromTnum()
	z.sync()
	return z
}

func isSignedJmp(op uint8) bool {
	return op == jmpJSGT || op == jmpJSGE || op == jmpJSLT || op == jmpJSLE
}

// branchTaken returns 1 if the condition always holds, 0 if never, -1 if
// it depends.
func branchTaken(op uint8, a, b reg, j32 bool) int {
	if j32 {
		s := isSignedJmp(op)
		a, b = view32(a, s), view32(b, s)
		if s && b.isConst() {
			b = constScalar(uint64(int64(int32(uint32(b.vo.value)))))
		}
	}
	tf := func(t, f bool) int {
		if t {
			return 1
		}
		if f {
			return 0
		}
		return -1
	}
	switch op {
	case jmpJEQ, jmpJNE:
		eq := a.isConst() && b.isConst() && a.vo.value == b.vo.value
		ne := a.umin > b.umax || a.umax < b.umin || a.smin > b.smax || a.smax < b.smin ||
			(a.vo.value^b.vo.value)&^(a.vo.mask|b.vo.mask) != 0
		if op == jmpJEQ {
			return tf(eq, ne)
		}
		return tf(ne, eq)
	case jmpJGT:
		return tf(a.umin > b.umax, a.umax <= b.umin)
	case jmpJGE:
		return tf(a.umin >= b.umax, a.umax < b.umin)
	case jmpJLT:
		return tf(a.umax < b.umin, a.umin >= b.umax)
	case jmpJLE:
		return tf(a.umax <= b.umin, a.umin > b.umax)
	case jmpJSGT:
		return tf(a.smin > b.smax, a.smax <= b.smin)
	case jmpJSGE:
		return tf(a.smin >= b.smax, a.smax < b.smin)
	case jmpJSLT:
		return tf(a.smax < b.smin, a.smin >= b.smax)
	case jmpJSLE:
		return tf(a.smax <= b.smin, a.smin > b.smax)
	case jmpJSET:
		return tf(a.vo.value&b.vo.value != 0, a.vo.umax()&b.vo.umax() == 0)
	}
	return -1
}

var negate = map[uint8]uint8{
	jmpJEQ: jmpJNE, jmpJNE: jmpJEQ, jmpJGT: jmpJLE, jmpJLE: jmpJGT, jmpJGE: jmpJLT, jmpJLT: jmpJGE,
	jmpJSGT: jmpJSLE, jmpJSLE: jmpJSGT, jmpJSGE: jmpJSLT, jmpJSLT: jmpJSGE,
}

// refineCond narrows a and b assuming the condition is (or, with taken
// false, is not) true. It returns false if that is impossible.
func refineCond(op uint8, a, b *reg, taken, j32 bool) bool {
	if op == jmpJSET {
		if !taken && b.isConst() {
			// No bit of b is set in a.
			a.vo = tnum{a.vo.value &^ b.vo.value, a.vo.mask &^ b.vo.value}
			a.setBoundsFromTnumKeep()
			return a.sync()
		}
		return true
	}
	if !taken {
		op = negate[op]
	}
	if j32 {
		// Only exact when the 32-bit views are the registers themselves.
		s := isSignedJmp(op)
		exact := func(r *reg) bool {
			if s {
				return r.smin >= math.MinInt32 && r.smax <= math.MaxInt32
			}
			return r.fits32()
		}
		bb := *b
		if s && bb.isConst() {
			bb = constScalar(uint64(int64(int32(uint32(bb.vo.value)))))
		}
		if !exact(a) || !exact(&bb) {
			return true
		}
		if !refine64(op, a, &bb) {
			return false
		}
		if !b.isConst() {
			*b = bb
		}
		return true
	}
	return refine64(op, a, b)
}

// setBoundsFromTnumKeep intersects the bounds with the tnum's.
func (r *reg) setBoundsFromTnumKeep() {
	r.umin = max(r.umin, r.vo.umin())
	r.umax = min(r.umax, r.vo.umax())
}

func refine64(op uint8, a, b *reg) bool {
	switch op {
	case jmpJEQ:
		if (a.vo.value^b.vo.value)&^(a.vo.mask|b.vo.mask) != 0 {
			return false
		}
		a.umin, a.umax = max(a.umin, b.umin), min(a.umax, b.umax)
		a.smin, a.smax = max(a.smin, b.smin), min(a.smax, b.smax)
		a.vo = a.vo.intersect(b.vo)
		id := b.id
		*b = *a
		b.id = id
	case jmpJNE:
		if b.isConst() {
			c := b.vo.value
			if a.umin == c {
				if c == math.MaxUint64 {
					return false
				}
				a.umin++
			}
			if a.umax == c {
				if c == 0 {
					return false
				}
				a.umax--
			}
			if a.smin == int64(c) && int64(c) != math.MaxInt64 {
				a.smin++
			}
			if a.smax == int64(c) && int64(c) != math.MinInt64 {
				a.smax--
			}
		} else if a.isConst() {
			return refine64(jmpJNE, b, a)
		}
	case jmpJGT: // a > b
		if b.umin == math.MaxUint64 || a.umax == 0 {
			return false
		}
		a.umin = max(a.umin, b.umin+1)
		b.umax = min(b.umax, a.umax-1)
	case jmpJGE:
		a.umin = max(a.umin, b.umin)
		b.umax = min(b.umax, a.umax)
	case jmpJLT:
		return refine64(jmpJGT, b, a)
	case jmpJLE:
		return refine64(jmpJGE, b, a)
	case jmpJSGT:
		if b.smin == math.MaxInt64 || a.smax == math.MinInt64 {
			return false
		}
		a.smin = max(a.smin, b.smin+1)
		b.smax = min(b.smax, a.smax-1)
	case jmpJSGE:
		a.smin = max(a.smin, b.smin)
		b.smax = min(b.smax, a.smax)
	case jmpJSLT:
		return refine64(jmpJSGT, b, a)
	case jmpJSLE:
		return refine64(jmpJSGE, b, a)
	}
	return a.sync() && b.sync()
}

// pktCompare applies packet range proofs (find_good_pkt_pointers): st is
// the fall-through state, other the jump-taken state.
func (v *verifier) pktCompare(st, other *state, op uint8, dst, src reg) {
	var ptr reg
	var ptrIsDst bool
	switch {
	case dst.typ == ptrToPacket && src.typ == ptrToPacketEnd, dst.typ == ptrToPacketMeta && src.typ == ptrToPacket:
		ptr, ptrIsDst = dst, true
	case src.typ == ptrToPacket && dst.typ == ptrToPacketEnd, src.typ == ptrToPacketMeta && dst.typ == ptrToPacket:
		ptr = src
	default:
		return
	}
	var inTaken, open bool
	switch op {
	case jmpJGT:
		inTaken, open = !ptrIsDst, !ptrIsDst
	case jmpJLT:
		inTaken, open = ptrIsDst, ptrIsDst
	case jmpJGE:
		inTaken, open = !ptrIsDst, ptrIsDst
	case jmpJLE:
		inTaken, open = ptrIsDst, !ptrIsDst
	default:
		return
	}
	target := st
	if inTaken {
		target = other
	}
	if ptr.off < 0 || ptr.umax > maxPacketOff || int64(ptr.umax)+int64(ptr.off) > maxPacketOff {
		return
	}
	rng := ptr.off
	if open {
		rng++
	}
	target.forEachReg(func(r *reg) {
		if r.typ == ptr.typ && r.id == ptr.id && r.rng < rng {
			r.rng = rng
		}
	})
}

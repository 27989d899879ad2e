package verifier

import (
	"math"
	"math/bits"
)

// scalarALU computes dst = dst op src on scalars. For 32-bit operations
// both operands are first truncated and the result is zero-extended.
func scalarALU(op uint8, dst *reg, src reg, w32 bool, signedDivMod bool) {
	dst.id = 0
	if w32 {
		dst.truncate32()
		src.truncate32()
	}
	width := uint64(64)
	if w32 {
		width = 32
	}
	a, b := *dst, src
	r := reg{typ: scalarValue}
	r.setUnknownBounds()
	switch op {
	case aluADD:
		r.vo = a.vo.add(b.vo)
		if s, ok1 := addOK(a.smin, b.smin); ok1 {
			if t, ok2 := addOK(a.smax, b.smax); ok2 {
				r.smin, r.smax = s, t
			}
		}
		if hi, c := bits.Add64(a.umax, b.umax, 0); c == 0 {
			r.umin, r.umax = a.umin+b.umin, hi
		}
	case aluSUB:
		r.vo = a.vo.sub(b.vo)
		if s, ok1 := subOK(a.smin, b.smax); ok1 {
			if t, ok2 := subOK(a.smax, b.smin); ok2 {
				r.smin, r.smax = s, t
			}
		}
		if a.umin >= b.umax {
			r.umin, r.umax = a.umin-b.umax, a.umax-b.umin
		}
	case aluMUL:
		r.vo = a.vo.mul(b.vo)
		if a.umax <= math.MaxUint32 && b.umax <= math.MaxUint32 {
			r.umin, r.umax = a.umin*b.umin, a.umax*b.umax
		}
	case aluAND:
		r.vo = a.vo.and(b.vo)
		r.umax = min(a.umax, b.umax)
		if a.smin >= 0 || b.smin >= 0 {
			r.smin = 0
		}
	case aluOR:
		r.vo = a.vo.or(b.vo)
		r.umin = max(a.umin, b.umin)
	case aluXOR:
		r.vo = a.vo.xor(b.vo)
	case aluLSH, aluRSH, aluARSH:
		if !b.isConst() || b.vo.value >= width {
			break // unknown amount: unknown result
		}
		k := uint8(b.vo.value)
		switch op {
		case aluLSH:
			r.vo = a.vo.lsh(k)
			if k == 0 || a.umax < 1<<(64-k) {
				r.umin, r.umax = a.umin<<k, a.umax<<k
			}
		case aluRSH:
			r.vo = a.vo.rsh(k)
			r.umin, r.umax = a.umin>>k, a.umax>>k
		case aluARSH:
			if w32 {
				r.vo = a.vo.arsh(k, true)
				if a.umax <= math.MaxInt32 {
					r.umin, r.umax = a.umin>>k, a.umax>>k
				}
			} else {
				r.vo = a.vo.arsh(k, false)
				r.smin, r.smax = a.smin>>k, a.smax>>k
			}
		}
	case aluDIV, aluMOD:
		// Unknown, as in the kernel (which keeps no bounds for division);
		// matching it keeps differential testing against it meaningful.
	case aluNEG:
		r.vo = tconst(0).sub(a.vo)
		if a.smin != math.MinInt64 {
			r.smin, r.smax = -a.smax, -a.smin
		}
	}
	if a.isConst() && b.isConst() {
		if c, ok := constFold(op, a.vo.value, b.vo.value, w32, signedDivMod); ok {
			r.setConst(c)
		}
	}
	if !r.sync() {
		r.setUnknownBounds()
	}
	if w32 && !r.fits32() {
		r.vo = r.vo.cast(4)
		r.setBoundsFromTnum()
		r.sync()
	}
	*dst = r
}

func addOK(a, b int64) (int64, bool) {
	s := a + b
	return s, (s > a) == (b > 0)
}

func subOK(a, b int64) (int64, bool) {
	s := a - b
	return s, (s < a) == (b > 0)
}

// constFold evaluates op on constants with the interpreter's semantics.
func constFold(op uint8, a, b uint64, w32, sdm bool) (uint64, bool) {
	if w32 {
		a, b = uint64(uint32(a)), uint64(uint32(b))
	}
	var r uint64
	switch op {
	case aluADD:
		r = a + b
	case aluSUB:
		r = a - b
	case aluMUL:
		r = a * b
	case aluAND:
		r = a & b
	case aluOR:
		r = a | b
	case aluXOR:
		r = a ^ b
	case aluNEG:
		r = -a
	default:
		return 0, false
	}
	if w32 {
		r = uint64(uint32(r))
	}
	return r, true
}

// signExtend returns src sign-extended from bits bits, as a scalar.
func signExtend(src reg, nbits int) reg {
	if src.isConst() {
		s := 64 - uint(nbits)
		return constScalar(uint64(int64(src.vo.value<<s) >> s))
	}
	if src.typ == scalarValue && src.umax < 1<<(nbits-1) {
		src.id = 0
		return src
	}
	r := unknownScalar()
	r.smin, r.smax = -(1 << (nbits - 1)), 1<<(nbits-1)-1
	r.sync()
	return r
}

// sizedScalar returns an unknown scalar loaded from size bytes, zero- or
// sign-extended.
func sizedScalar(size int, signExt bool) reg {
	r := unknownScalar()
	if size >= 8 {
		return r
	}
	if signExt {
		r.smin, r.smax = -(1 << (size*8 - 1)), 1<<(size*8-1)-1
	} else {
		r.umin, r.umax = 0, 1<<(size*8)-1
	}
	r.sync()
	return r
}

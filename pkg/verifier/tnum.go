package verifier

import (
	"fmt"
	"math/bits"
)

// tnum is a tracked number (kernel/bpf/tnum.c): bits set in mask are
// unknown, the other bits are those of value.
type tnum struct{ value, mask uint64 }

var tnumUnknown = tnum{0, ^uint64(0)}

func tconst(v uint64) tnum { return tnum{v, 0} }

// trange returns the tnum of all numbers in [min, max].
func trange(min, max uint64) tnum {
	chi := min ^ max
	b := 64 - bits.LeadingZeros64(chi)
	if b > 63 {
		return tnumUnknown
	}
	delta := uint64(1)<<b - 1
	return tnum{min &^ delta, delta}
}

func (a tnum) isConst() bool { return a.mask == 0 }
func (a tnum) lsh(s uint8) tnum {
	return tnum{a.value << s, a.mask << s}
}
func (a tnum) rsh(s uint8) tnum {
	return tnum{a.value >> s, a.mask >> s}
}
func (a tnum) arsh(s uint8, w32 bool) tnum {
	if w32 {
		return tnum{uint64(uint32(int32(uint32(a.value)) >> s)), uint64(uint32(int32(uint32(a.mask)) >> s))}
	}
	return tnum{uint64(int64(a.value) >> s), uint64(int64(a.mask) >> s)}
}
func (a tnum) add(b tnum) tnum {
	sm := a.mask + b.mask
	sv := a.value + b.value
	sigma := sm + sv
	chi := sigma ^ sv
	mu := chi | a.mask | b.mask
	return tnum{sv &^ mu, mu}
}
func (a tnum) sub(b tnum) tnum {
	dv := a.value - b.value
	alpha := dv + a.mask
	beta := dv - b.mask
	chi := alpha ^ beta
	mu := chi | a.mask | b.mask
	return tnum{dv &^ mu, mu}
}
func (a tnum) and(b tnum) tnum {
	alpha := a.value | a.mask
	beta := b.value | b.mask
	v := a.value & b.value
	return tnum{v, alpha & beta &^ v}
}
func (a tnum) or(b tnum) tnum {
	v := a.value | b.value
	mu := a.mask | b.mask
	return tnum{v, mu &^ v}
}
func (a tnum) xor(b tnum) tnum {
	v := a.value ^ b.value
	mu := a.mask | b.mask
	return tnum{v &^ mu, mu}
}
func (a tnum) mul(b tnum) tnum {
	accV := a.value * b.value
	accM := tconst(0)
	for a.value != 0 || a.mask != 0 {
		if a.value&1 != 0 {
			accM = accM.add(tnum{0, b.mask})
		} else if a.mask&1 != 0 {
			accM = accM.add(tnum{0, b.value | b.mask})
		}
		a = a.rsh(1)
		b = b.lsh(1)
	}
	return tconst(accV).add(accM)
}
func (a tnum) intersect(b tnum) tnum {
	v := a.value | b.value
	mu := a.mask & b.mask
	return tnum{v &^ mu, mu}
}

// cast truncates to size bytes.
func (a tnum) cast(size int) tnum {
	if size >= 8 {
		return a
	}
	m := uint64(1)<<(uint(size)*8) - 1
	return tnum{a.value & m, a.mask & m}
}

// in reports whether every value of b is a value of a.
func (a tnum) in(b tnum) bool {
	if b.mask&^a.mask != 0 {
		return false
	}
	return a.value == b.value&^a.mask
}

func (a tnum) umin() uint64 { return a.value }
func (a tnum) umax() uint64 { return a.value | a.mask }
func (a tnum) smin() int64 {
	if a.mask>>63 != 0 {
		return int64(a.value | 1<<63)
	}
	return int64(a.value)
}
func (a tnum) smax() int64 {
	if a.mask>>63 != 0 {
		return int64((a.value | a.mask) &^ (1 << 63))
	}
	return int64(a.value | a.mask)
}

func (a tnum) String() string { return fmt.Sprintf("(%#x; %#x)", a.value, a.mask) }

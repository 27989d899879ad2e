package verifier

import (
	"fmt"
	"math"
	"strings"
)

type regType uint8

const (
	notInit regType = iota
	scalarValue
	ptrToCtx
	ptrToStack
	ptrToMapValue
	ptrToMapValueOrNull
	constPtrToMap
	ptrToPacket
	ptrToPacketMeta
	ptrToPacketEnd
	ptrToFunc
	constPtrToMapOrNull // maptypes.go: an inner map from a map-in-map lookup
	ptrToSockCommon
	ptrToSockCommonOrNull
	ptrToMapKey // foreach.go: a bpf_for_each_map_elem callback's key (read-only)
)

var regTypeNames = [...]string{"?", "scalar", "ctx", "fp", "map_value", "map_value_or_null",
	"map_ptr", "pkt", "pkt_meta", "pkt_end", "func", "map_ptr_or_null", "sock_common", "sock_common_or_null", "map_key"}

func (t regType) String() string { return regTypeNames[t] }

func (t regType) isPkt() bool { return t == ptrToPacket || t == ptrToPacketMeta }

// orNull reports whether t may be NULL and must be null-checked before
// use; nonNull is what a successful check makes of it.
func (t regType) orNull() bool {
	return t == ptrToMapValueOrNull || t == constPtrToMapOrNull || t == ptrToSockCommonOrNull
}

func (t regType) nonNull() regType {
	switch t {
	case ptrToMapValueOrNull:
		return ptrToMapValue
	case constPtrToMapOrNull:
		return constPtrToMap
	case ptrToSockCommonOrNull:
		return ptrToSockCommon
	}
	return t
}

// reg is the abstract value of a register or spilled slot. For scalars the
// bounds describe the value; for pointers they describe the variable part
// of the offset, off being the fixed part.
type reg struct {
	typ        regType
	frame      uint8 // ptrToStack: frame number
	keepID     bool  // a map value of a map with a bpf_spin_lock: the null check keeps id (spinlock.go)
	off        int32
	rng        int32 // packet pointers: bytes proven accessible from the var part
	id         uint32
	ref        uint32 // an acquired reference this pointer carries (maptypes.go), 0 none
	idx        int32  // map index, or subprog start for ptrToFunc
	vo         tnum
	smin, smax int64
	umin, umax uint64
}

func unknownScalar() reg {
	r := reg{typ: scalarValue}
	r.setUnknownBounds()
	return r
}

func constScalar(v uint64) reg {
	r := reg{typ: scalarValue}
	r.setConst(v)
	return r
}

func (r *reg) setUnknownBounds() {
	r.vo = tnumUnknown
	r.smin, r.smax = math.MinInt64, math.MaxInt64
	r.umin, r.umax = 0, math.MaxUint64
}

func (r *reg) setConst(v uint64) {
	r.vo = tconst(v)
	r.smin, r.smax = int64(v), int64(v)
	r.umin, r.umax = v, v
}

// setBoundsFromTnum derives all bounds from vo alone.
func (r *reg) setBoundsFromTnum() {
	r.umin, r.umax = r.vo.umin(), r.vo.umax()
	r.smin, r.smax = r.vo.smin(), r.vo.smax()
}

func (r *reg) isConst() bool { return r.vo.isConst() }

// sync tightens bounds against each other (reg_bounds_sync); it returns
// false if the register can hold no value at all (an impossible branch).
func (r *reg) sync() bool {
	for range 2 {
		r.umin = max(r.umin, r.vo.umin())
		r.umax = min(r.umax, r.vo.umax())
		r.smin = max(r.smin, r.vo.smin())
		r.smax = min(r.smax, r.vo.smax())
		// Signed range that does not cross the sign boundary bounds the unsigned one.
		if r.smin >= 0 || r.smax < 0 {
			r.umin = max(r.umin, uint64(r.smin))
			r.umax = min(r.umax, uint64(r.smax))
		}
		// Unsigned range within one sign half bounds the signed one.
		if int64(r.umin) <= int64(r.umax) {
			r.smin = max(r.smin, int64(r.umin))
			r.smax = min(r.smax, int64(r.umax))
		}
		if r.umin > r.umax || r.smin > r.smax {
			return false
		}
		r.vo = r.vo.intersect(trange(r.umin, r.umax))
		if r.vo.value&r.vo.mask != 0 {
			return false
		}
	}
	return r.umin <= r.umax && r.smin <= r.smax
}

// fits32 reports whether the value is known to fit in 32 bits unsigned.
func (r *reg) fits32() bool { return r.umax <= math.MaxUint32 }

// truncate32 zero-extends the low 32 bits (what any 32-bit ALU result is).
func (r *reg) truncate32() {
	if r.fits32() {
		return
	}
	r.vo = r.vo.cast(4)
	r.setBoundsFromTnum()
	r.sync()
}

func (r *reg) boundsString() string {
	if r.isConst() {
		return fmt.Sprintf("%d", int64(r.vo.value))
	}
	var parts []string
	if r.smin != math.MinInt64 && r.smin != int64(r.umin) {
		parts = append(parts, fmt.Sprintf("smin=%d", r.smin))
	}
	if r.smax != math.MaxInt64 && uint64(r.smax) != r.umax {
		parts = append(parts, fmt.Sprintf("smax=%d", r.smax))
	}
	if r.umin != 0 {
		parts = append(parts, fmt.Sprintf("umin=%d", r.umin))
	}
	if r.umax != math.MaxUint64 {
		parts = append(parts, fmt.Sprintf("umax=%d", r.umax))
	}
	if r.vo.mask != math.MaxUint64 && !(r.vo == trange(r.umin, r.umax)) {
		parts = append(parts, "var_off="+r.vo.String())
	}
	return strings.Join(parts, ",")
}

func (r *reg) hasVarOff() bool { return !(r.vo.isConst() && r.vo.value == 0) }

func (v *verifier) regString(r *reg) string {
	switch r.typ {
	case notInit:
		return "?"
	case scalarValue:
		if r.isConst() {
			return r.boundsString()
		}
		return "scalar(" + r.boundsString() + ")"
	case ptrToStack:
		s := fmt.Sprintf("fp%d", r.off)
		if r.frame != 0 {
			s = fmt.Sprintf("fp[%d]%d", r.frame, r.off)
		}
		if r.hasVarOff() {
			s += "(var=" + r.boundsString() + ")"
		}
		return s
	}
	var parts []string
	if r.id != 0 {
		parts = append(parts, fmt.Sprintf("id=%d", r.id))
	}
	switch r.typ {
	case ptrToMapValue, ptrToMapValueOrNull, constPtrToMap, constPtrToMapOrNull, ptrToMapKey:
		parts = append(parts, "map="+v.mapName(r.idx))
		if r.typ != constPtrToMap && r.typ != constPtrToMapOrNull && r.idx >= 0 && int(r.idx) < len(v.env.Maps) {
			m := v.env.Maps[r.idx]
			parts = append(parts, fmt.Sprintf("ks=%d,vs=%d", m.KeySize, m.ValueSize))
		}
	case ptrToFunc:
		parts = append(parts, fmt.Sprintf("insn=%d", r.idx))
	}
	if r.off != 0 {
		parts = append(parts, fmt.Sprintf("off=%d", r.off))
	}
	if r.typ.isPkt() {
		parts = append(parts, fmt.Sprintf("r=%d", r.rng))
	}
	if r.hasVarOff() {
		parts = append(parts, "var=("+r.boundsString()+")")
	}
	return r.typ.String() + "(" + strings.Join(parts, ",") + ")"
}

// Stack byte kinds.
const (
	stInvalid uint8 = iota
	stMisc
	stZero
	stSpill
)

// slot is 8 bytes of stack: slot i covers fp-8*(i+1) .. fp-8*i-1, byte k of
// it is fp-8*(i+1)+k.
type slot struct {
	kind  [8]uint8
	spill reg // valid when all kinds are stSpill
	// A narrow scalar store at the slot's start, which the kernel keeps
	// as a spill (constkey.go): its size (0 none), and its untruncated
	// value when constant. Loads see only kind.
	narrow uint8
	nconst bool
	nval   uint64
}

type frame struct {
	regs       [11]reg
	stack      []slot
	callsite   int // insn index of the call in the caller; -1 for main
	subprog    int // index into verifier.subprogs
	callback   bool
	cbArg      reg   // bpf_loop callback: the context argument, for re-entry
	cbRetIdx   int   // bpf_loop callback: insn to continue at in the caller
	cbMap      int32 // bpf_for_each_map_elem callback: the map's index; -1 for bpf_loop
	depth      int   // deepest stack byte touched (positive)
	frameIndex uint8
}

func (f *frame) clone() *frame {
	n := *f
	n.stack = append([]slot(nil), f.stack...)
	return &n
}

func (f *frame) grow(off int) {
	n := (-off + 7) / 8
	for len(f.stack) < n {
		f.stack = append(f.stack, slot{})
	}
	if -off > f.depth {
		f.depth = -off
	}
}

// byteIndex returns the slot and byte index of fp+off.
func byteIndex(off int) (int, int) {
	i := (-off - 1) / 8
	return i, off + 8*(i+1)
}

func (f *frame) kindAt(off int) uint8 {
	i, k := byteIndex(off)
	if i >= len(f.stack) {
		return stInvalid
	}
	return f.stack[i].kind[k]
}

type state struct {
	frames []*frame
	cp     *checkpoint
	pc     int
	trail  []int        // recent instruction indexes of this path, for logs
	refs   []acquireRef // references held (maptypes.go): released before exit
	lock   lockState    // the bpf_spin_lock held (spinlock.go)
}

func (s *state) cur() *frame { return s.frames[len(s.frames)-1] }

func (s *state) clone() *state {
	n := &state{cp: s.cp, pc: s.pc, lock: s.lock}
	n.frames = make([]*frame, len(s.frames))
	for i, f := range s.frames {
		n.frames[i] = f.clone()
	}
	n.trail = append([]int(nil), s.trail...)
	n.refs = append([]acquireRef(nil), s.refs...)
	return n
}

// checkpoint is a state kept at a prune point. pending counts the paths
// still being explored from it (the current one, queued branches, child
// checkpoints not yet done); when it drops to zero the state is known safe
// and later states it includes can be pruned.
type checkpoint struct {
	st      *state
	parent  *checkpoint
	pending int
	pc      int
	hits    int // states pruned against this one
	misses  int // comparisons for pruning that failed
}

// forEachReg calls fn for every register and spilled register of s.
func (s *state) forEachReg(fn func(r *reg)) {
	for _, f := range s.frames {
		for i := range f.regs {
			fn(&f.regs[i])
		}
		for i := range f.stack {
			if f.stack[i].kind[0] == stSpill {
				fn(&f.stack[i].spill)
			}
		}
	}
}

// idmap checks that ids correspond one to one between two states.
type idmap struct{ m map[uint32]uint32 }

func (im *idmap) check(old, cur uint32) bool {
	if old == 0 && cur == 0 {
		return true
	}
	if old == 0 || cur == 0 {
		return false
	}
	if im.m == nil {
		im.m = map[uint32]uint32{}
	}
	if c, ok := im.m[old]; ok {
		return c == cur
	}
	im.m[old] = cur
	return true
}

// rangeWithin reports whether cur's bounds are inside old's.
func rangeWithin(old, cur *reg) bool {
	return old.umin <= cur.umin && cur.umax <= old.umax &&
		old.smin <= cur.smin && cur.smax <= old.smax && old.vo.in(cur.vo)
}

// regsafe reports whether every concrete value cur may hold is one old
// may hold, so that old's verified continuation covers cur's.
func regsafe(old, cur *reg, im *idmap) bool {
	if old.typ == notInit {
		return true
	}
	if old.typ != cur.typ {
		return false
	}
	if (old.ref != 0 || cur.ref != 0) && !im.check(old.ref, cur.ref) {
		return false
	}
	switch old.typ {
	case scalarValue:
		if !rangeWithin(old, cur) {
			return false
		}
		// Old scalars linked by id had bounds checks propagate between
		// them; cur's must be linked the same way.
		return old.id == 0 || (cur.id != 0 && im.check(old.id, cur.id))
	case ptrToMapValueOrNull, constPtrToMapOrNull, ptrToSockCommonOrNull:
		if !im.check(old.id, cur.id) {
			return false
		}
	case ptrToPacket, ptrToPacketMeta:
		if cur.rng < old.rng || !im.check(old.id, cur.id) {
			return false
		}
	case ptrToMapValue:
		if (old.keepID || cur.keepID) && !im.check(old.id, cur.id) {
			return false // which lookup it came from matters to bpf_spin_unlock
		}
	}
	return old.off == cur.off && old.idx == cur.idx && old.frame == cur.frame && rangeWithin(old, cur)
}

// stateIncludes reports whether old includes cur (cur may be pruned when
// old was fully explored). sets describes the registers of the innermost
// frame (see relevance.go): one no path reads before writing it matches
// anything, and a live one whose scalar value matters to no safety check
// matches any scalar when old holds a scalar. Registers of caller frames
// and all stack slots are compared in full.
func stateIncludes(old, cur *state, sets regSets) bool {
	if len(old.frames) != len(cur.frames) || len(old.refs) != len(cur.refs) {
		return false
	}
	im := &idmap{}
	if !refsInclude(old, cur, im) || !lockIncludes(old, cur, im) {
		return false
	}
	for i := range old.frames {
		of, cf := old.frames[i], cur.frames[i]
		if of.callsite != cf.callsite || of.callback != cf.callback || of.cbRetIdx != cf.cbRetIdx || of.cbMap != cf.cbMap {
			return false
		}
		if of.callback && !regsafe(&of.cbArg, &cf.cbArg, im) {
			return false
		}
		top := i == len(old.frames)-1
		for r := range of.regs {
			if top && sets.live&(1<<r) == 0 {
				continue
			}
			if top && sets.rel&(1<<r) == 0 && of.regs[r].typ == scalarValue && cf.regs[r].typ == scalarValue {
				continue
			}
			if !regsafe(&of.regs[r], &cf.regs[r], im) {
				return false
			}
		}
		for s := range of.stack {
			os := &of.stack[s]
			var cs *slot
			if s < len(cf.stack) {
				cs = &cf.stack[s]
			} else {
				cs = &slot{}
			}
			if os.kind[0] == stSpill && os.kind[7] == stSpill {
				if cs.kind[0] != stSpill || cs.kind[7] != stSpill {
					// A spilled scalar is readable as misc bytes too, but
					// keep it simple: demand the same shape.
					return false
				}
				if !regsafe(&os.spill, &cs.spill, im) {
					return false
				}
				continue
			}
			if !narrowEqual(os, cs) {
				return false
			}
			for k := range 8 {
				ok := os.kind[k]
				ck := cs.kind[k]
				switch ok {
				case stInvalid:
				case stMisc:
					if ck == stInvalid || (ck == stSpill && cs.spill.typ != scalarValue) {
						return false
					}
				case stZero:
					if ck != stZero {
						return false
					}
				case stSpill:
					return false
				}
			}
		}
	}
	return true
}

// statesEqual reports whether a and b are the same state, every register
// compared (exact-repeat detection must not ignore irrelevant values).
func statesEqual(a, b *state) bool {
	all := regSets{allRegs, allRegs}
	return stateIncludes(a, b, all) && stateIncludes(b, a, all)
}

package verifier

import (
	"slices"

	"golang.org/x/sys/unix"
)

// pseudoCall enters the subprogram at target. cb is non-nil for a
// callback: for bpf_loop (cbMap -1) the callee gets R1 = index, R2 = the
// context argument; for bpf_for_each_map_elem (cbMap the map's index) R1 =
// the map, R2 = the element's key, R3 = its value, R4 = the context
// argument (foreach.go).
func (v *verifier) pseudoCall(st *state, target int, cb *reg, cbMap int32) error {
	if len(st.frames) >= MaxCallFrames {
		return v.errf(st, st.pc, unix.E2BIG, "the call stack of %d frames is too deep", len(st.frames)+1)
	}
	caller := st.cur()
	callee := &frame{callsite: st.pc, subprog: v.subprogOf[target], frameIndex: uint8(len(st.frames))}
	if cb != nil {
		callee.callback = true
		callee.cbArg = *cb
		callee.cbRetIdx = st.pc + 1
		callee.cbMap = cbMap
		if cbMap >= 0 {
			forEachArgs(callee, *cb, cbMap)
		} else {
			callee.regs[1] = unknownScalar()
			callee.regs[2] = *cb
		}
	} else {
		callee.cbMap = -1
		for r := 1; r <= 5; r++ {
			callee.regs[r] = caller.regs[r]
		}
	}
	callee.regs[10] = reg{typ: ptrToStack, frame: callee.frameIndex}
	for r := 0; r <= 5; r++ {
		caller.regs[r] = reg{}
	}
	st.frames = append(st.frames, callee)
	st.pc = target
	return nil
}

// exit handles BPF_EXIT from the main program, a subprogram or a callback.
func (v *verifier) exit(st *state) (bool, error) {
	if err := v.lockedExit(st); err != nil {
		return false, err
	}
	f := st.cur()
	r0 := f.regs[0]
	if r0.typ == notInit {
		return false, v.errf(st, st.pc, unix.EACCES, "R0 !read_ok")
	}
	if len(st.frames) == 1 {
		if err := v.checkRefsReleased(st); err != nil {
			return false, err
		}
		if r0.typ != scalarValue {
			return false, v.errf(st, st.pc, unix.EACCES, "R0 leaks addr as return value")
		}
		if rr := v.env.Return; rr != nil && (r0.smin < rr.Min || r0.smax > rr.Max) {
			return false, v.errf(st, st.pc, unix.EACCES, "At program exit the register R0 has %s should have been in [%d, %d]",
				v.regString(&r0), rr.Min, rr.Max)
		}
		return true, nil
	}
	if f.callback {
		if r0.typ != scalarValue || r0.smin < 0 || r0.smax > 1 {
			return false, v.errf(st, st.pc, unix.EINVAL, "At callback return the register R0 has %s should have been in [0, 1]", v.regString(&r0))
		}
		// Another iteration: re-enter the callback from this state.
		again, err := v.push(st, st.pc)
		if err != nil {
			return false, err
		}
		again.frames = again.frames[:len(again.frames)-1]
		again.pc = f.callsite
		start := v.subprogs[f.subprog]
		cbArg := f.cbArg
		if err := v.pseudoCall(again, start, &cbArg, f.cbMap); err != nil {
			return false, err
		}
		again.cur().regs[0] = reg{}
		// The caller continues after the helper call with R0 = its result.
		st.frames = st.frames[:len(st.frames)-1]
		c := st.cur()
		c.regs[0] = unknownScalar()
		st.pc = f.cbRetIdx
		return false, nil
	}
	if r0.typ == ptrToStack && int(r0.frame) == len(st.frames)-1 {
		return false, v.errf(st, st.pc, unix.EINVAL, "cannot return stack pointer to the caller")
	}
	st.frames = st.frames[:len(st.frames)-1]
	c := st.cur()
	c.regs[0] = r0
	st.pc = f.callsite + 1
	return false, nil
}

// memArg checks helper memory argument regno: size bytes (sizeReg's umax
// when sizeReg is not nil) readable (or writable when write) memory.
func (v *verifier) memArg(st *state, regno uint8, size int, zeroOK, write bool) error {
	f := st.cur()
	p := f.regs[regno]
	if size == 0 {
		if zeroOK {
			return nil
		}
		return v.errf(st, st.pc, unix.EACCES, "R%d invalid zero-sized read", regno)
	}
	switch p.typ {
	case ptrToStack:
		if write && p.hasVarOff() {
			return v.errf(st, st.pc, unix.EACCES, "R%d variable-offset stack pointer passed as helper output buffer", regno)
		}
		if p.hasVarOff() {
			// Reads: every byte in the possible range must be initialised.
			for b := 0; b < size; b++ {
				if _, err := v.access(st, regno, int16(b), 1, false, nil, false); err != nil {
					return err
				}
			}
			return nil
		}
		fr := st.frames[p.frame]
		o := int(p.off)
		if o < -MaxStack || o+size > 0 {
			return v.errf(st, st.pc, unix.EACCES, "invalid indirect access to stack R%d off=%d size=%d", regno, o, size)
		}
		fr.grow(o)
		v.depth[fr.subprog] = max(v.depth[fr.subprog], -o)
		for b := o; b < o+size; b++ {
			i, k := byteIndex(b)
			s := &fr.stack[i]
			if write {
				dropNarrow(s)
				if s.kind[0] == stSpill {
					s.kind = [8]uint8{stMisc, stMisc, stMisc, stMisc, stMisc, stMisc, stMisc, stMisc}
					s.spill = reg{}
				}
				s.kind[k] = stMisc
				continue
			}
			if s.kind[k] == stInvalid {
				return v.errf(st, st.pc, unix.EACCES, "invalid indirect read from stack R%d off %d+%d size %d (fp%d is not initialized)", regno, o, b-o, size, b)
			}
			if s.kind[k] == stSpill && s.spill.typ != scalarValue {
				return v.errf(st, st.pc, unix.EACCES, "invalid indirect read from stack R%d off %d+%d size %d: spilled %s", regno, o, b-o, size, s.spill.typ)
			}
		}
		return nil
	case ptrToMapValue:
		what := "helper read from"
		if write {
			what = "helper write into"
		}
		if err := v.mapAccess(st, p.idx, write, what); err != nil {
			return err
		}
		if err := v.boundedAccess(st, regno, p, 0, size, int64(v.env.Maps[p.idx].ValueSize), "map value"); err != nil {
			return err
		}
		return v.lockField(st, p, 0, size)
	case ptrToMapKey:
		return v.keyAccess(st, regno, p, 0, size, write)
	case ptrToPacket, ptrToPacketMeta:
		if write && !v.env.PacketWrite {
			return v.errf(st, st.pc, unix.EACCES, "helper access to the packet is not allowed for writing")
		}
		if p.smin < 0 || int(p.off) < 0 || int(p.off)+size > int(p.rng) {
			return v.errf(st, st.pc, unix.EACCES, "invalid access to packet, off=%d size=%d, R%d(id=%d,off=%d,r=%d)", p.off, size, regno, p.id, p.off, p.rng)
		}
		return nil
	}
	return v.errf(st, st.pc, unix.EACCES, "R%d type=%s expected=fp, pkt, map_value", regno, p.typ)
}

// callHelper checks a helper call against its prototype.
func (v *verifier) callHelper(st *state, in insn) error {
	f := st.cur()
	if err := v.lockedCall(st, in.imm); err != nil {
		return err
	}
	proto := v.helpers[in.imm]
	name := helperName(in.imm, proto)
	if proto == nil {
		return v.errf(st, st.pc, unix.EINVAL, "unknown func %s", name)
	}
	mapIdx := int32(-1)
	var ac mapsArgs // what the map-type argument kinds collected (maptypes.go)
	var cbTarget = -1
	var cbArg reg
	nonNull := false // a lookup with a constant in-range array key (constkey.go)
	for i, at := range proto.Args {
		regno := uint8(i + 1)
		if at == ArgNone {
			continue
		}
		if err := v.readReg(st, regno); err != nil {
			return err
		}
		r := f.regs[regno]
		mismatch := func(want string) error {
			return v.errf(st, st.pc, unix.EACCES, "R%d type=%s expected=%s", regno, r.typ, want)
		}
		switch at {
		case ArgAnything:
		case ArgConstMapPtr:
			if r.typ != constPtrToMap {
				return mismatch("map_ptr")
			}
			mapIdx = r.idx
			m := v.env.Maps[mapIdx]
			if len(proto.MapTypes) > 0 && !slices.Contains(proto.MapTypes, m.Type) ||
				len(proto.MapTypes) == 0 && m.Type == MapTypeProgArray && in.imm != FnForEachMapElem {
				return v.errf(st, st.pc, unix.EINVAL, "cannot pass map_type %d into func %s", m.Type, name)
			}
			if proto.MapRead {
				if err := v.mapAccess(st, mapIdx, false, "call "+name+" on"); err != nil {
					return err
				}
			}
			if proto.MapWrite {
				if err := v.mapAccess(st, mapIdx, true, "call "+name+" on"); err != nil {
					return err
				}
			}
		case ArgPtrToMapKey, ArgPtrToMapValue:
			if mapIdx < 0 {
				return v.errf(st, st.pc, unix.EACCES, "invalid map_ptr to access map->key")
			}
			m := v.env.Maps[mapIdx]
			size := m.KeySize
			if at == ArgPtrToMapValue {
				size = m.ValueSize
			}
			if err := v.memArg(st, regno, int(size), false, false); err != nil {
				return err
			}
			if at == ArgPtrToMapKey && in.imm == FnMapLookupElem {
				nonNull = v.elideLookupNull(st, mapIdx, r)
			}
		case ArgPtrToMem, ArgPtrToUninitMem, ArgPtrToMemRW:
			if i+1 >= len(proto.Args) || (proto.Args[i+1] != ArgConstSize && proto.Args[i+1] != ArgConstSizeOrZero) {
				return v.errf(st, st.pc, unix.EINVAL, "helper %s prototype: memory argument without size", name)
			}
			if r.typ == scalarValue && isZero(r) && proto.Args[i+1] == ArgConstSizeOrZero {
				continue
			}
			if err := v.readReg(st, regno+1); err != nil {
				return err
			}
			sz := f.regs[regno+1]
			if sz.typ != scalarValue {
				return v.errf(st, st.pc, unix.EACCES, "R%d type=%s expected=scalar", regno+1, sz.typ)
			}
			if sz.smin < 0 {
				return v.errf(st, st.pc, unix.EACCES, "R%d min value is negative, either use unsigned or 'var &= const'", regno+1)
			}
			if sz.umax >= maxVarOff {
				return v.errf(st, st.pc, unix.EACCES, "R%d unbounded memory access, use 'var &= const' or 'if (var < const)'", regno+1)
			}
			zeroOK := proto.Args[i+1] == ArgConstSizeOrZero
			if sz.umin == 0 && !zeroOK {
				return v.errf(st, st.pc, unix.EACCES, "R%d invalid zero-sized read: u64=[%d,%d]", regno+1, sz.umin, sz.umax)
			}
			if at != ArgPtrToUninitMem {
				if err := v.memArg(st, regno, int(sz.umax), zeroOK, false); err != nil {
					return err
				}
			}
			if at != ArgPtrToMem {
				if err := v.memArg(st, regno, int(sz.umax), zeroOK, true); err != nil {
					return err
				}
			}
		case ArgConstSize, ArgConstSizeOrZero:
			if r.typ != scalarValue {
				return mismatch("scalar")
			}
		case ArgPtrToCtx:
			if r.typ != ptrToCtx {
				return mismatch("ctx")
			}
			if r.off != 0 || r.hasVarOff() {
				return v.errf(st, st.pc, unix.EACCES, "dereference of modified ctx ptr R%d off=%d disallowed", regno, r.off)
			}
		case ArgPtrToFunc:
			if r.typ != ptrToFunc {
				return mismatch("func")
			}
			cbTarget = int(r.idx)
		case ArgPtrToStackOrNull:
			if !(r.typ == ptrToStack && !r.hasVarOff()) && !isZero(r) {
				return mismatch("fp or null")
			}
			cbArg = r
		default:
			ok, err := v.mapsArg(st, proto, name, i, at, mapIdx, &ac)
			if err != nil {
				return err
			}
			if !ok {
				return v.errf(st, st.pc, unix.EINVAL, "helper %s prototype: bad argument type %d", name, at)
			}
		}
	}
	// A callback over a map that cannot iterate: the kernel's
	// set_map_elem_callback_state refuses it before the compatibility
	// check (foreach.go).
	if in.imm == FnForEachMapElem && mapIdx >= 0 && !slices.Contains(forEachMapTypes, v.env.Maps[mapIdx].Type) {
		return v.errf(st, st.pc, errENOTSUPP, "callback function not allowed for map")
	}
	// The map type against the helper, after the arguments, as the
	// kernel's check_map_func_compatibility.
	if mapIdx >= 0 && !mapFuncCompatible(v.env.Maps[mapIdx].Type, in.imm) {
		return v.errf(st, st.pc, unix.EINVAL, "cannot pass map_type %d into func %s", v.env.Maps[mapIdx].Type, name)
	}
	if proto.TailCall {
		if len(st.refs) > 0 {
			return v.errf(st, st.pc, unix.EINVAL, "tail_call would lead to reference leak")
		}
		v.tailCalls = true
	}
	if ac.release != 0 {
		v.releaseRef(st, ac.release)
	}
	if proto.ChangesPacket {
		st.forEachReg(func(r *reg) {
			if r.typ.isPkt() || r.typ == ptrToPacketEnd {
				*r = unknownScalar()
			}
		})
	}
	if v.helpersUsed == nil {
		v.helpersUsed = map[int32]bool{}
	}
	v.helpersUsed[in.imm] = true
	// Return value.
	var r0 reg
	switch proto.Ret {
	case RetInteger:
		r0 = unknownScalar()
	case RetVoid:
	case RetMapValueOrNull:
		if mapIdx < 0 {
			return v.errf(st, st.pc, unix.EINVAL, "helper %s prototype: map value return without map argument", name)
		}
		r0 = reg{typ: ptrToMapValueOrNull, idx: mapIdx, id: v.newID(), keepID: v.env.Maps[mapIdx].SpinLock != 0}
		if nonNull {
			// The kernel gives the value an id only when its map
			// holds a bpf_spin_lock (check_helper_call).
			r0.typ = ptrToMapValue
			if !r0.keepID {
				r0.id = 0
			}
		}
		if inner, ok := v.innerMap(mapIdx); ok {
			// A map-in-map lookup returns the inner map (maptypes.go).
			r0 = reg{typ: constPtrToMapOrNull, idx: inner, id: r0.id}
		}
	default:
		var err error
		if r0, err = v.mapsRet(st, proto, name, mapIdx, &ac); err != nil {
			return err
		}
	}
	if cbTarget >= 0 {
		// Zero iterations: continue after the call right away.
		skip, err := v.push(st, st.pc+1)
		if err != nil {
			return err
		}
		sf := skip.cur()
		for r := 1; r <= 5; r++ {
			sf.regs[r] = reg{}
		}
		sf.regs[0] = r0
		// One or more iterations.
		cbMap := int32(-1)
		if in.imm == FnForEachMapElem {
			cbMap = mapIdx
		}
		return v.pseudoCall(st, cbTarget, &cbArg, cbMap)
	}
	for r := 1; r <= 5; r++ {
		f.regs[r] = reg{}
	}
	f.regs[0] = r0
	st.pc++
	return nil
}

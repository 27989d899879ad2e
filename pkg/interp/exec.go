package interp

import (
	"encoding/binary"
	"math/bits"
)

// exec is the run loop. Registers live in a local array indexed with &15 so
// the compiler drops bounds checks; memory goes through ld/st, which the
// compiler inlines. Fault paths jump to out.
//
// It starts at pc in frame base (0 for a run; above the calling frame for
// VM.Call) and returns at the exit of frame base. The budget left is shared
// through vm.left across nested invocations.
func (vm *VM) exec(p *Program, pc, base int, args *[5]uint64) (uint64, error) {
	var regs [16]uint64
	regs[1], regs[2], regs[3], regs[4], regs[5] = args[0], args[1], args[2], args[3], args[4]
	regs[10] = stackTop(base)
	clear(vm.stack[base*StackSize : (base+1)*StackSize])

	insns := p.insns
	helpers := p.helpers
	regions := vm.regions
	budget := vm.left
	frame := base
	var ferr error

	for {
		// The inner loop runs the instructions that need no function
		// call, so the compiler keeps its state in registers; anything
		// else (calls, exit, atomics, failed accesses, the budget running
		// out) leaves it with pc at that instruction, not yet charged.
	inner:
		for budget != 0 {
			in := &insns[pc]
			pc++
			budget--
			switch in.op {
			// ALU64
			case opAdd64K:
				regs[in.dst&15] += uint64(in.imm)
			case opAdd64X:
				regs[in.dst&15] += regs[in.src&15]
			case opSub64K:
				regs[in.dst&15] -= uint64(in.imm)
			case opSub64X:
				regs[in.dst&15] -= regs[in.src&15]
			case opMul64K:
				regs[in.dst&15] *= uint64(in.imm)
			case opMul64X:
				regs[in.dst&15] *= regs[in.src&15]
			case opDiv64K:
				regs[in.dst&15] = div64(regs[in.dst&15], uint64(in.imm))
			case opDiv64X:
				regs[in.dst&15] = div64(regs[in.dst&15], regs[in.src&15])
			case opSdiv64K:
				regs[in.dst&15] = sdiv64(regs[in.dst&15], uint64(in.imm))
			case opSdiv64X:
				regs[in.dst&15] = sdiv64(regs[in.dst&15], regs[in.src&15])
			case opOr64K:
				regs[in.dst&15] |= uint64(in.imm)
			case opOr64X:
				regs[in.dst&15] |= regs[in.src&15]
			case opAnd64K:
				regs[in.dst&15] &= uint64(in.imm)
			case opAnd64X:
				regs[in.dst&15] &= regs[in.src&15]
			case opLsh64K:
				regs[in.dst&15] <<= uint64(in.imm) & 63
			case opLsh64X:
				regs[in.dst&15] <<= regs[in.src&15] & 63
			case opRsh64K:
				regs[in.dst&15] >>= uint64(in.imm) & 63
			case opRsh64X:
				regs[in.dst&15] >>= regs[in.src&15] & 63
			case opNeg64:
				regs[in.dst&15] = -regs[in.dst&15]
			case opMod64K:
				regs[in.dst&15] = mod64(regs[in.dst&15], uint64(in.imm))
			case opMod64X:
				regs[in.dst&15] = mod64(regs[in.dst&15], regs[in.src&15])
			case opSmod64K:
				regs[in.dst&15] = smod64(regs[in.dst&15], uint64(in.imm))
			case opSmod64X:
				regs[in.dst&15] = smod64(regs[in.dst&15], regs[in.src&15])
			case opXor64K:
				regs[in.dst&15] ^= uint64(in.imm)
			case opXor64X:
				regs[in.dst&15] ^= regs[in.src&15]
			case opMov64K:
				regs[in.dst&15] = uint64(in.imm)
			case opMov64X:
				regs[in.dst&15] = regs[in.src&15]
			case opMovsx8To64:
				regs[in.dst&15] = uint64(int8(regs[in.src&15]))
			case opMovsx16To64:
				regs[in.dst&15] = uint64(int16(regs[in.src&15]))
			case opMovsx32To64:
				regs[in.dst&15] = uint64(int32(regs[in.src&15]))
			case opArsh64K:
				regs[in.dst&15] = uint64(int64(regs[in.dst&15]) >> (uint64(in.imm) & 63))
			case opArsh64X:
				regs[in.dst&15] = uint64(int64(regs[in.dst&15]) >> (regs[in.src&15] & 63))

			// ALU32: operate on the low 32 bits, zero-extend the result.
			case opAdd32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) + uint32(in.imm))
			case opAdd32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) + uint32(regs[in.src&15]))
			case opSub32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) - uint32(in.imm))
			case opSub32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) - uint32(regs[in.src&15]))
			case opMul32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) * uint32(in.imm))
			case opMul32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) * uint32(regs[in.src&15]))
			case opDiv32K:
				regs[in.dst&15] = uint64(div32(uint32(regs[in.dst&15]), uint32(in.imm)))
			case opDiv32X:
				regs[in.dst&15] = uint64(div32(uint32(regs[in.dst&15]), uint32(regs[in.src&15])))
			case opSdiv32K:
				regs[in.dst&15] = uint64(sdiv32(uint32(regs[in.dst&15]), uint32(in.imm)))
			case opSdiv32X:
				regs[in.dst&15] = uint64(sdiv32(uint32(regs[in.dst&15]), uint32(regs[in.src&15])))
			case opOr32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) | uint32(in.imm))
			case opOr32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) | uint32(regs[in.src&15]))
			case opAnd32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) & uint32(in.imm))
			case opAnd32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) & uint32(regs[in.src&15]))
			case opLsh32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) << (uint32(in.imm) & 31))
			case opLsh32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) << (uint32(regs[in.src&15]) & 31))
			case opRsh32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) >> (uint32(in.imm) & 31))
			case opRsh32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) >> (uint32(regs[in.src&15]) & 31))
			case opNeg32:
				regs[in.dst&15] = uint64(-uint32(regs[in.dst&15]))
			case opMod32K:
				regs[in.dst&15] = uint64(mod32(uint32(regs[in.dst&15]), uint32(in.imm)))
			case opMod32X:
				regs[in.dst&15] = uint64(mod32(uint32(regs[in.dst&15]), uint32(regs[in.src&15])))
			case opSmod32K:
				regs[in.dst&15] = uint64(smod32(uint32(regs[in.dst&15]), uint32(in.imm)))
			case opSmod32X:
				regs[in.dst&15] = uint64(smod32(uint32(regs[in.dst&15]), uint32(regs[in.src&15])))
			case opXor32K:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) ^ uint32(in.imm))
			case opXor32X:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]) ^ uint32(regs[in.src&15]))
			case opMov32K:
				regs[in.dst&15] = uint64(uint32(in.imm))
			case opMov32X:
				regs[in.dst&15] = uint64(uint32(regs[in.src&15]))
			case opMovsx8To32:
				regs[in.dst&15] = uint64(uint32(int32(int8(regs[in.src&15]))))
			case opMovsx16To32:
				regs[in.dst&15] = uint64(uint32(int32(int16(regs[in.src&15]))))
			case opArsh32K:
				regs[in.dst&15] = uint64(uint32(int32(regs[in.dst&15]) >> (uint32(in.imm) & 31)))
			case opArsh32X:
				regs[in.dst&15] = uint64(uint32(int32(regs[in.dst&15]) >> (uint32(regs[in.src&15]) & 31)))

			case opLe16:
				regs[in.dst&15] = uint64(uint16(regs[in.dst&15]))
			case opLe32:
				regs[in.dst&15] = uint64(uint32(regs[in.dst&15]))
			case opLe64:
			case opSwap16:
				regs[in.dst&15] = uint64(bits.ReverseBytes16(uint16(regs[in.dst&15])))
			case opSwap32:
				regs[in.dst&15] = uint64(bits.ReverseBytes32(uint32(regs[in.dst&15])))
			case opSwap64:
				regs[in.dst&15] = bits.ReverseBytes64(regs[in.dst&15])

			// JMP
			case opJa:
				pc = int(in.off)
			case opJeqK:
				if regs[in.dst&15] == uint64(in.imm) {
					pc = int(in.off)
				}
			case opJeqX:
				if regs[in.dst&15] == regs[in.src&15] {
					pc = int(in.off)
				}
			case opJgtK:
				if regs[in.dst&15] > uint64(in.imm) {
					pc = int(in.off)
				}
			case opJgtX:
				if regs[in.dst&15] > regs[in.src&15] {
					pc = int(in.off)
				}
			case opJgeK:
				if regs[in.dst&15] >= uint64(in.imm) {
					pc = int(in.off)
				}
			case opJgeX:
				if regs[in.dst&15] >= regs[in.src&15] {
					pc = int(in.off)
				}
			case opJsetK:
				if regs[in.dst&15]&uint64(in.imm) != 0 {
					pc = int(in.off)
				}
			case opJsetX:
				if regs[in.dst&15]&regs[in.src&15] != 0 {
					pc = int(in.off)
				}
			case opJneK:
				if regs[in.dst&15] != uint64(in.imm) {
					pc = int(in.off)
				}
			case opJneX:
				if regs[in.dst&15] != regs[in.src&15] {
					pc = int(in.off)
				}
			case opJsgtK:
				if int64(regs[in.dst&15]) > in.imm {
					pc = int(in.off)
				}
			case opJsgtX:
				if int64(regs[in.dst&15]) > int64(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJsgeK:
				if int64(regs[in.dst&15]) >= in.imm {
					pc = int(in.off)
				}
			case opJsgeX:
				if int64(regs[in.dst&15]) >= int64(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJltK:
				if regs[in.dst&15] < uint64(in.imm) {
					pc = int(in.off)
				}
			case opJltX:
				if regs[in.dst&15] < regs[in.src&15] {
					pc = int(in.off)
				}
			case opJleK:
				if regs[in.dst&15] <= uint64(in.imm) {
					pc = int(in.off)
				}
			case opJleX:
				if regs[in.dst&15] <= regs[in.src&15] {
					pc = int(in.off)
				}
			case opJsltK:
				if int64(regs[in.dst&15]) < in.imm {
					pc = int(in.off)
				}
			case opJsltX:
				if int64(regs[in.dst&15]) < int64(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJsleK:
				if int64(regs[in.dst&15]) <= in.imm {
					pc = int(in.off)
				}
			case opJsleX:
				if int64(regs[in.dst&15]) <= int64(regs[in.src&15]) {
					pc = int(in.off)
				}

			// JMP32
			case opJeq32K:
				if uint32(regs[in.dst&15]) == uint32(in.imm) {
					pc = int(in.off)
				}
			case opJeq32X:
				if uint32(regs[in.dst&15]) == uint32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJgt32K:
				if uint32(regs[in.dst&15]) > uint32(in.imm) {
					pc = int(in.off)
				}
			case opJgt32X:
				if uint32(regs[in.dst&15]) > uint32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJge32K:
				if uint32(regs[in.dst&15]) >= uint32(in.imm) {
					pc = int(in.off)
				}
			case opJge32X:
				if uint32(regs[in.dst&15]) >= uint32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJset32K:
				if uint32(regs[in.dst&15])&uint32(in.imm) != 0 {
					pc = int(in.off)
				}
			case opJset32X:
				if uint32(regs[in.dst&15])&uint32(regs[in.src&15]) != 0 {
					pc = int(in.off)
				}
			case opJne32K:
				if uint32(regs[in.dst&15]) != uint32(in.imm) {
					pc = int(in.off)
				}
			case opJne32X:
				if uint32(regs[in.dst&15]) != uint32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJsgt32K:
				if int32(regs[in.dst&15]) > int32(in.imm) {
					pc = int(in.off)
				}
			case opJsgt32X:
				if int32(regs[in.dst&15]) > int32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJsge32K:
				if int32(regs[in.dst&15]) >= int32(in.imm) {
					pc = int(in.off)
				}
			case opJsge32X:
				if int32(regs[in.dst&15]) >= int32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJlt32K:
				if uint32(regs[in.dst&15]) < uint32(in.imm) {
					pc = int(in.off)
				}
			case opJlt32X:
				if uint32(regs[in.dst&15]) < uint32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJle32K:
				if uint32(regs[in.dst&15]) <= uint32(in.imm) {
					pc = int(in.off)
				}
			case opJle32X:
				if uint32(regs[in.dst&15]) <= uint32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJslt32K:
				if int32(regs[in.dst&15]) < int32(in.imm) {
					pc = int(in.off)
				}
			case opJslt32X:
				if int32(regs[in.dst&15]) < int32(regs[in.src&15]) {
					pc = int(in.off)
				}
			case opJsle32K:
				if int32(regs[in.dst&15]) <= int32(in.imm) {
					pc = int(in.off)
				}
			case opJsle32X:
				if int32(regs[in.dst&15]) <= int32(regs[in.src&15]) {
					pc = int(in.off)
				}

			case opLdImm64:
				regs[in.dst&15] = uint64(in.imm)
				pc++

			// Fused pairs (fuse.go): pc is at the second instruction,
			// charged only if the budget allows it; otherwise only the
			// first half runs and the loop stops before the second.
			case opMovAdd64K:
				if budget == 0 {
					regs[in.dst&15] = regs[in.src&15]
					continue
				}
				budget--
				pc++
				regs[in.dst&15] = regs[in.src&15] + uint64(in.imm)
			case opMovAnd64K:
				if budget == 0 {
					regs[in.dst&15] = regs[in.src&15]
					continue
				}
				budget--
				pc++
				regs[in.dst&15] = regs[in.src&15] & uint64(in.imm)
			case opMovLsh64K:
				if budget == 0 {
					regs[in.dst&15] = regs[in.src&15]
					continue
				}
				budget--
				pc++
				regs[in.dst&15] = regs[in.src&15] << (uint64(in.imm) & 63)
			case opMovRsh64K:
				if budget == 0 {
					regs[in.dst&15] = regs[in.src&15]
					continue
				}
				budget--
				pc++
				regs[in.dst&15] = regs[in.src&15] >> (uint64(in.imm) & 63)
			case opAdd64KJa:
				regs[in.dst&15] += uint64(in.imm)
				if budget == 0 {
					continue
				}
				budget--
				pc = int(in.off)

			// Loads.
			case opLdxB:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 1); b != nil {
					regs[in.dst&15] = uint64(b[0])
				} else {
					pc--
					budget++
					break inner
				}
			case opLdxH:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 2); b != nil {
					regs[in.dst&15] = uint64(binary.LittleEndian.Uint16(b))
				} else {
					pc--
					budget++
					break inner
				}
			case opLdxW:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 4); b != nil {
					regs[in.dst&15] = uint64(binary.LittleEndian.Uint32(b))
				} else {
					pc--
					budget++
					break inner
				}
			case opLdxDW:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 8); b != nil {
					regs[in.dst&15] = binary.LittleEndian.Uint64(b)
				} else {
					pc--
					budget++
					break inner
				}
			case opLdxsB:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 1); b != nil {
					regs[in.dst&15] = uint64(int8(b[0]))
				} else {
					pc--
					budget++
					break inner
				}
			case opLdxsH:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 2); b != nil {
					regs[in.dst&15] = uint64(int16(binary.LittleEndian.Uint16(b)))
				} else {
					pc--
					budget++
					break inner
				}
			case opLdxsW:
				a := regs[in.src&15] + uint64(in.off)
				if b := ld(regions, a, 4); b != nil {
					regs[in.dst&15] = uint64(int32(binary.LittleEndian.Uint32(b)))
				} else {
					pc--
					budget++
					break inner
				}

			// Stores.
			case opStB:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 1); b != nil {
					v := uint64(in.imm)
					b[0] = byte(v)
				} else {
					pc--
					budget++
					break inner
				}
			case opStxB:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 1); b != nil {
					v := regs[in.src&15]
					b[0] = byte(v)
				} else {
					pc--
					budget++
					break inner
				}
			case opStH:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 2); b != nil {
					v := uint64(in.imm)
					binary.LittleEndian.PutUint16(b, uint16(v))
				} else {
					pc--
					budget++
					break inner
				}
			case opStxH:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 2); b != nil {
					v := regs[in.src&15]
					binary.LittleEndian.PutUint16(b, uint16(v))
				} else {
					pc--
					budget++
					break inner
				}
			case opStW:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 4); b != nil {
					v := uint64(in.imm)
					binary.LittleEndian.PutUint32(b, uint32(v))
				} else {
					pc--
					budget++
					break inner
				}
			case opStxW:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 4); b != nil {
					v := regs[in.src&15]
					binary.LittleEndian.PutUint32(b, uint32(v))
				} else {
					pc--
					budget++
					break inner
				}
			case opStDW:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 8); b != nil {
					v := uint64(in.imm)
					binary.LittleEndian.PutUint64(b, v)
				} else {
					pc--
					budget++
					break inner
				}
			case opStxDW:
				a := regs[in.dst&15] + uint64(in.off)
				if b := st(regions, a, 8); b != nil {
					v := regs[in.src&15]
					binary.LittleEndian.PutUint64(b, v)
				} else {
					pc--
					budget++
					break inner
				}

			default:
				pc--
				budget++
				break inner
			}
		}
		if budget == 0 {
			if vm.reserve > 0 && vm.yield != nil {
				// A chunk is done (SetYield): check in, then go on
				// with the next one.
				if err := vm.yield(); err != nil {
					ferr = &Fault{Code: FaultBudget, PC: pc, Err: err}
					goto out
				}
				budget = min(vm.reserve, YieldChunk)
				vm.reserve -= budget
				continue
			}
			ferr = &Fault{Code: FaultBudget, PC: pc}
			goto out
		}
		in := &insns[pc]
		pc++
		budget--
		switch in.op {
		// Calls.
		case opCall, opCallx:
			n := uint64(in.imm)
			if in.op == opCallx {
				n = regs[in.dst&15]
				if n == 0 || n >= uint64(len(helpers)) || helpers[n] == nil {
					ferr = &Fault{Code: FaultBadCall, PC: pc - 1, Addr: n}
					goto out
				}
			}
			vm.pc, vm.frame, vm.left = pc-1, frame, budget
			v, err := helpers[n](vm, regs[1], regs[2], regs[3], regs[4], regs[5])
			budget = vm.left
			if err != nil {
				ferr = &Fault{Code: FaultHelper, PC: pc - 1, Err: err}
				goto out
			}
			regs[0] = v
			regions = vm.regions
			if t := vm.tail; t != nil {
				vm.tail = nil
				p = t
				vm.cur = t
				insns, helpers = p.insns, p.helpers
				vm.install(p)
				regions = vm.regions
				frame, pc = 0, 0
				clear(vm.stack[:StackSize])
				regs[10] = stackTop(0)
			}
		case opCallLocal:
			if frame+1 >= MaxFrames {
				ferr = &Fault{Code: FaultCallDepth, PC: pc - 1}
				goto out
			}
			f := &vm.frames[frame]
			f.ret, f.r6, f.r7, f.r8, f.r9 = pc, regs[6], regs[7], regs[8], regs[9]
			frame++
			clear(vm.stack[frame*StackSize : (frame+1)*StackSize])
			regs[10] = stackTop(frame)
			pc = int(in.off)
		case opExit:
			if frame == base {
				vm.left = budget
				return regs[0], nil
			}
			frame--
			f := &vm.frames[frame]
			pc, regs[6], regs[7], regs[8], regs[9] = f.ret, f.r6, f.r7, f.r8, f.r9
			regs[10] = stackTop(frame)

		// Atomics.
		case opAtomAdd32, opAtomOr32, opAtomAnd32, opAtomXor32,
			opAtomFetchAdd32, opAtomFetchOr32, opAtomFetchAnd32, opAtomFetchXor32, opXchg32:
			a := regs[in.dst&15] + uint64(in.off)
			rel := int(in.op - opAtomAdd32)
			var b []byte
			if rel >= 4 { // fetch forms and xchg read the old value
				b = rmw(regions, a, 4)
			} else {
				b = st(regions, a, 4)
			}
			if b == nil {
				ferr = vm.atomicFault(pc-1, a, 4)
				goto out
			}
			old := rmw32(b, rel&3|rel>>3<<2, uint32(regs[in.src&15]))
			if rel >= 4 { // fetch forms and xchg
				regs[in.src&15] = uint64(old)
			}
		case opCmpxchg32:
			a := regs[in.dst&15] + uint64(in.off)
			b := rmw(regions, a, 4)
			if b == nil {
				ferr = vm.atomicFault(pc-1, a, 4)
				goto out
			}
			regs[0] = uint64(cmpxchg32(b, uint32(regs[0]), uint32(regs[in.src&15])))
		case opAtomAdd64, opAtomOr64, opAtomAnd64, opAtomXor64,
			opAtomFetchAdd64, opAtomFetchOr64, opAtomFetchAnd64, opAtomFetchXor64, opXchg64:
			a := regs[in.dst&15] + uint64(in.off)
			rel := int(in.op - opAtomAdd64)
			var b []byte
			if rel >= 4 { // fetch forms and xchg read the old value
				b = rmw(regions, a, 8)
			} else {
				b = st(regions, a, 8)
			}
			if b == nil {
				ferr = vm.atomicFault(pc-1, a, 8)
				goto out
			}
			old := rmw64(b, rel&3|rel>>3<<2, regs[in.src&15])
			if rel >= 4 {
				regs[in.src&15] = old
			}
		case opCmpxchg64:
			a := regs[in.dst&15] + uint64(in.off)
			b := rmw(regions, a, 8)
			if b == nil {
				ferr = vm.atomicFault(pc-1, a, 8)
				goto out
			}
			regs[0] = cmpxchg64(b, regs[0], regs[in.src&15])

		case opLdAbsB, opLdAbsH, opLdAbsW, opLdIndB, opLdIndH, opLdIndW:
			k := in.imm
			if in.op >= opLdIndB {
				// The kernel adds in 64 bits, then passes an int.
				k = int64(regs[in.src&15] + uint64(in.imm))
			}
			size := [...]int{1, 2, 4}[(in.op-opLdAbsB)%3]
			v, ok := vm.ldPacket(int32(k), size)
			if ok {
				regs[0] = v
				break
			}
			// Out of the packet: r0 = 0 and exit, as the kernel's
			// rewrite (w0 ^= w0; exit) does.
			regs[0] = 0
			if frame == base {
				vm.left = budget
				return 0, nil
			}
			frame--
			f := &vm.frames[frame]
			pc, regs[6], regs[7], regs[8], regs[9] = f.ret, f.r6, f.r7, f.r8, f.r9
			regs[10] = stackTop(frame)

		case opFallOff:
			ferr = &Fault{Code: FaultFallOff, PC: pc - 1}
			goto out
		case opLdxB, opLdxH, opLdxW, opLdxDW, opLdxsB, opLdxsH, opLdxsW,
			opStB, opStH, opStW, opStDW, opStxB, opStxH, opStxW, opStxDW:
			// The inner loop found the access invalid.
			ferr = vm.insnFault(pc-1, in, &regs)
			goto out
		default: // opInvalid: unreachable by construction
			ferr = &Fault{Code: FaultInternal, PC: pc - 1, Err: ErrInvalidInsn}
			goto out
		}
	}
out:
	vm.left = budget
	return 0, ferr
}

func div64(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mod64(a, b uint64) uint64 {
	if b == 0 {
		return a
	}
	return a % b
}

// sdiv64 divides as signed; Go defines MinInt64 / -1 = MinInt64.
func sdiv64(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	return uint64(int64(a) / int64(b))
}

// smod64 is the truncated signed remainder; MinInt64 % -1 = 0.
func smod64(a, b uint64) uint64 {
	if b == 0 {
		return a
	}
	return uint64(int64(a) % int64(b))
}

func div32(a, b uint32) uint32 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mod32(a, b uint32) uint32 {
	if b == 0 {
		return a
	}
	return a % b
}

func sdiv32(a, b uint32) uint32 {
	if b == 0 {
		return 0
	}
	return uint32(int32(a) / int32(b))
}

func smod32(a, b uint32) uint32 {
	if b == 0 {
		return a
	}
	return uint32(int32(a) % int32(b))
}

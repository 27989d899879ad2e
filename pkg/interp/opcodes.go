package interp

// Raw encoding (RFC 9669 section 3).
const (
	clsLD    = 0x00
	clsLDX   = 0x01
	clsST    = 0x02
	clsSTX   = 0x03
	clsALU   = 0x04
	clsJMP   = 0x05
	clsJMP32 = 0x06
	clsALU64 = 0x07

	srcX = 0x08

	aluADD  = 0x00
	aluSUB  = 0x10
	aluMUL  = 0x20
	aluDIV  = 0x30
	aluOR   = 0x40
	aluAND  = 0x50
	aluLSH  = 0x60
	aluRSH  = 0x70
	aluNEG  = 0x80
	aluMOD  = 0x90
	aluXOR  = 0xa0
	aluMOV  = 0xb0
	aluARSH = 0xc0
	aluEND  = 0xd0

	jmpJA   = 0x00
	jmpJEQ  = 0x10
	jmpJGT  = 0x20
	jmpJGE  = 0x30
	jmpJSET = 0x40
	jmpJNE  = 0x50
	jmpJSGT = 0x60
	jmpJSGE = 0x70
	jmpCALL = 0x80
	jmpEXIT = 0x90
	jmpJLT  = 0xa0
	jmpJLE  = 0xb0
	jmpJSLT = 0xc0
	jmpJSLE = 0xd0

	sizeW  = 0x00
	sizeH  = 0x08
	sizeB  = 0x10
	sizeDW = 0x18

	modeIMM    = 0x00
	modeABS    = 0x20
	modeIND    = 0x40
	modeMEM    = 0x60
	modeMEMSX  = 0x80
	modeATOMIC = 0xc0

	atomicFetch   = 0x01
	atomicADD     = 0x00
	atomicOR      = 0x40
	atomicAND     = 0x50
	atomicXOR     = 0xa0
	atomicXCHG    = 0xe0 | atomicFetch
	atomicCMPXCHG = 0xf0 | atomicFetch

	pseudoCall = 1 // CALL src: bpf-to-bpf call
)

// Dense opcodes of the decoded form. The run loop switches on these.
const (
	opInvalid uint8 = iota // never reached: second slot of LD_IMM64
	opFallOff              // sentinel slot after the last instruction

	// ALU64; "K" = immediate, "X" = register source.
	opAdd64K
	opAdd64X
	opSub64K
	opSub64X
	opMul64K
	opMul64X
	opDiv64K
	opDiv64X
	opSdiv64K
	opSdiv64X
	opOr64K
	opOr64X
	opAnd64K
	opAnd64X
	opLsh64K
	opLsh64X
	opRsh64K
	opRsh64X
	opNeg64
	opMod64K
	opMod64X
	opSmod64K
	opSmod64X
	opXor64K
	opXor64X
	opMov64K
	opMov64X
	opMovsx8To64
	opMovsx16To64
	opMovsx32To64
	opArsh64K
	opArsh64X

	// ALU (32-bit).
	opAdd32K
	opAdd32X
	opSub32K
	opSub32X
	opMul32K
	opMul32X
	opDiv32K
	opDiv32X
	opSdiv32K
	opSdiv32X
	opOr32K
	opOr32X
	opAnd32K
	opAnd32X
	opLsh32K
	opLsh32X
	opRsh32K
	opRsh32X
	opNeg32
	opMod32K
	opMod32X
	opSmod32K
	opSmod32X
	opXor32K
	opXor32X
	opMov32K
	opMov32X
	opMovsx8To32
	opMovsx16To32
	opArsh32K
	opArsh32X

	// Byte order. BPF_TO_LE is a truncation on our little-endian memory
	// model; BPF_TO_BE and the ALU64 BSWAP are byte swaps.
	opLe16
	opLe32
	opLe64
	opSwap16
	opSwap32
	opSwap64

	// Jumps; off holds the absolute target.
	opJa
	opJeqK
	opJeqX
	opJgtK
	opJgtX
	opJgeK
	opJgeX
	opJsetK
	opJsetX
	opJneK
	opJneX
	opJsgtK
	opJsgtX
	opJsgeK
	opJsgeX
	opJltK
	opJltX
	opJleK
	opJleX
	opJsltK
	opJsltX
	opJsleK
	opJsleX
	opJeq32K
	opJeq32X
	opJgt32K
	opJgt32X
	opJge32K
	opJge32X
	opJset32K
	opJset32X
	opJne32K
	opJne32X
	opJsgt32K
	opJsgt32X
	opJsge32K
	opJsge32X
	opJlt32K
	opJlt32X
	opJle32K
	opJle32X
	opJslt32K
	opJslt32X
	opJsle32K
	opJsle32X

	opCall      // imm: helper number
	opCallLocal // off: target
	opCallx     // dst: register holding the helper number
	opExit

	opLdImm64 // imm: the 64-bit value

	opLdxB
	opLdxH
	opLdxW
	opLdxDW
	opLdxsB
	opLdxsH
	opLdxsW
	opStB
	opStH
	opStW
	opStDW
	opStxB
	opStxH
	opStxW
	opStxDW

	opAtomAdd32
	opAtomOr32
	opAtomAnd32
	opAtomXor32
	opAtomFetchAdd32
	opAtomFetchOr32
	opAtomFetchAnd32
	opAtomFetchXor32
	opXchg32
	opCmpxchg32
	opAtomAdd64
	opAtomOr64
	opAtomAnd64
	opAtomXor64
	opAtomFetchAdd64
	opAtomFetchOr64
	opAtomFetchAnd64
	opAtomFetchXor64
	opXchg64
	opCmpxchg64

	// Legacy packet access (BPF_LD | BPF_ABS/BPF_IND): r0 = big-endian
	// packet bytes at imm (ABS) or src + imm (IND); see VM.SetPacket.
	opLdAbsB
	opLdAbsH
	opLdAbsW
	opLdIndB
	opLdIndH
	opLdIndW

	// Fused pairs (fuse.go): the instruction in their slot and the next
	// one, which keeps its own slot for jumps to it.
	opMovAdd64K // dst = src; dst += imm
	opMovAnd64K // dst = src; dst &= imm
	opMovLsh64K // dst = src; dst <<= imm
	opMovRsh64K // dst = src; dst >>= imm
	opAdd64KJa  // dst += imm; goto off

	numOps
)

// aluOps maps the raw ALU operation (op>>4) to the dense K opcode of the
// 64-bit form; X is K+1 and the 32-bit form is K+alu32Delta. NEG and END are
// handled separately.
var aluOps = [16]uint8{
	aluADD >> 4:  opAdd64K,
	aluSUB >> 4:  opSub64K,
	aluMUL >> 4:  opMul64K,
	aluDIV >> 4:  opDiv64K,
	aluOR >> 4:   opOr64K,
	aluAND >> 4:  opAnd64K,
	aluLSH >> 4:  opLsh64K,
	aluRSH >> 4:  opRsh64K,
	aluMOD >> 4:  opMod64K,
	aluXOR >> 4:  opXor64K,
	aluMOV >> 4:  opMov64K,
	aluARSH >> 4: opArsh64K,
}

const alu32Delta = opAdd32K - opAdd64K

// jmpOps maps the raw conditional jump (op>>4) to the dense K opcode of the
// 64-bit form; X is K+1 and the 32-bit form is K+jmp32Delta.
var jmpOps = [16]uint8{
	jmpJEQ >> 4:  opJeqK,
	jmpJGT >> 4:  opJgtK,
	jmpJGE >> 4:  opJgeK,
	jmpJSET >> 4: opJsetK,
	jmpJNE >> 4:  opJneK,
	jmpJSGT >> 4: opJsgtK,
	jmpJSGE >> 4: opJsgeK,
	jmpJLT >> 4:  opJltK,
	jmpJLE >> 4:  opJleK,
	jmpJSLT >> 4: opJsltK,
	jmpJSLE >> 4: opJsleK,
}

const jmp32Delta = opJeq32K - opJeqK

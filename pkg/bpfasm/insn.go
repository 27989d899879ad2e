package bpfasm

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Instruction classes, sources, sizes and modes (RFC 9669, section 3).
const (
	classLD    = 0x00
	classLDX   = 0x01
	classST    = 0x02
	classSTX   = 0x03
	classALU   = 0x04
	classJMP   = 0x05
	classJMP32 = 0x06
	classALU64 = 0x07

	srcK = 0x00 // immediate operand
	srcX = 0x08 // register operand

	sizeW  = 0x00
	sizeH  = 0x08
	sizeB  = 0x10
	sizeDW = 0x18

	modeIMM    = 0x00
	modeMEM    = 0x60
	modeMEMSX  = 0x80
	modeATOMIC = 0xc0

	aluNeg = 0x80
	aluMov = 0xb0
	aluEnd = 0xd0
	aluDiv = 0x30
	aluMod = 0x90

	jmpJA   = 0x00
	jmpCall = 0x80
	jmpExit = 0x90

	opLDDW = classLD | modeIMM | sizeDW // 0x18

	atomicFetch   = 0x01
	atomicXchg    = 0xe0 | atomicFetch
	atomicCmpxchg = 0xf0 | atomicFetch

	// Pseudo source values (Linux uapi bpf.h).
	pseudoMapFD    = 1 // lddw: imm is a map descriptor
	pseudoMapValue = 2 // lddw: imm is a map descriptor, imm2 an offset into its value
	pseudoCall     = 1 // call: imm is a pc-relative local function
	pseudoKfunc    = 2 // call: imm is a runtime (kfunc) id

	// MaxReg is the highest register number the assembler accepts (%r10,
	// the read-only frame pointer).
	MaxReg = 10
)

// InsnSize is the size in bytes of one instruction slot; lddw takes two.
const InsnSize = 8

var aluNames = [16]string{"add", "sub", "mul", "div", "or", "and", "lsh", "rsh", "neg", "mod", "xor", "mov", "arsh", "", "", ""}

var jmpNames = [16]string{"ja", "jeq", "jgt", "jge", "jset", "jne", "jsgt", "jsge", "", "", "jlt", "jle", "jslt", "jsle", "", ""}

var sizeSuffix = map[uint8]string{sizeB: "b", sizeH: "h", sizeW: "w", sizeDW: "dw"}

// Instruction is one decoded eBPF instruction in bpf_attr.insns layout. lddw
// (opcode 0x18) occupies two slots: Imm holds the low 32 bits of its
// constant and Imm2 the immediate of the second slot (the high 32 bits);
// Imm2 is zero for every other instruction.
//
// An Instruction is plain data; it is safe to copy and to use concurrently.
type Instruction struct {
	Opcode uint8
	Dst    uint8 // 0-15 (4 bits on the wire)
	Src    uint8 // 0-15 (4 bits on the wire)
	Offset int16
	Imm    int32
	Imm2   int32
}

// Slots returns the number of 8-byte slots the instruction occupies: 2 for
// lddw, 1 otherwise.
func (ins Instruction) Slots() int {
	if ins.Opcode == opLDDW {
		return 2
	}
	return 1
}

// Imm64 returns the 64-bit constant of an lddw (Imm | Imm2<<32).
func (ins Instruction) Imm64() int64 {
	return int64(uint64(uint32(ins.Imm)) | uint64(uint32(ins.Imm2))<<32)
}

// AppendBinary appends the little-endian encoding (8 or 16 bytes) to b. It
// fails with ErrInvalidInstruction if Dst or Src does not fit in 4 bits, or
// Imm2 is non-zero on an instruction other than lddw.
func (ins Instruction) AppendBinary(b []byte) ([]byte, error) {
	if ins.Dst > 15 || ins.Src > 15 {
		return b, &DecodeError{Msg: fmt.Sprintf("register number out of range (dst %d, src %d)", ins.Dst, ins.Src), Err: ErrInvalidInstruction}
	}
	if ins.Imm2 != 0 && ins.Opcode != opLDDW {
		return b, &DecodeError{Msg: fmt.Sprintf("opcode %#02x: only lddw has a second immediate", ins.Opcode), Err: ErrInvalidInstruction}
	}
	b = append(b, ins.Opcode, ins.Dst|ins.Src<<4)
	b = binary.LittleEndian.AppendUint16(b, uint16(ins.Offset))
	b = binary.LittleEndian.AppendUint32(b, uint32(ins.Imm))
	if ins.Opcode == opLDDW {
		b = append(b, 0, 0, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(ins.Imm2))
	}
	return b, nil
}

// MarshalBinary returns the 8- or 16-byte encoding; see AppendBinary.
func (ins Instruction) MarshalBinary() ([]byte, error) {
	return ins.AppendBinary(make([]byte, 0, 16))
}

// Encode marshals a program; it fails like AppendBinary, naming the index
// of the offending instruction in DecodeError.PC (slot index).
func Encode(insns []Instruction) ([]byte, error) {
	out := make([]byte, 0, len(insns)*InsnSize)
	pc := 0
	for _, ins := range insns {
		var err error
		out, err = ins.AppendBinary(out)
		if err != nil {
			de := err.(*DecodeError)
			de.PC = pc
			return nil, de
		}
		pc += ins.Slots()
	}
	return out, nil
}

// Decode decodes the instruction at the start of b: 8 bytes, or 16 for
// lddw. It only splits fields and does not check that the instruction is
// valid (Text does). It fails with ErrTruncated if b is too short, and with
// ErrInvalidInstruction if the second slot of an lddw has a non-zero
// opcode, register or offset field.
func Decode(b []byte) (Instruction, error) {
	if len(b) < InsnSize {
		return Instruction{}, &DecodeError{Msg: fmt.Sprintf("need %d bytes, have %d", InsnSize, len(b)), Err: ErrTruncated}
	}
	ins := Instruction{
		Opcode: b[0],
		Dst:    b[1] & 0x0f,
		Src:    b[1] >> 4,
		Offset: int16(binary.LittleEndian.Uint16(b[2:4])),
		Imm:    int32(binary.LittleEndian.Uint32(b[4:8])),
	}
	if ins.Opcode != opLDDW {
		return ins, nil
	}
	if len(b) < 2*InsnSize {
		return Instruction{}, &DecodeError{Msg: "lddw: missing second slot", Err: ErrTruncated}
	}
	if b[8] != 0 || b[9] != 0 || b[10] != 0 || b[11] != 0 {
		return Instruction{}, &DecodeError{PC: 1, Msg: fmt.Sprintf("lddw: second slot must have zero opcode, registers and offset, got % x", b[8:12]), Err: ErrInvalidInstruction}
	}
	ins.Imm2 = int32(binary.LittleEndian.Uint32(b[12:16]))
	return ins, nil
}

// String returns Text, or for an instruction Text rejects a description
// such as "invalid(op=0x07 dst=0 src=0 off=1 imm=1)". It never fails, which
// makes it suitable for logs.
func (ins Instruction) String() string {
	s, err := ins.Text()
	if err != nil {
		return fmt.Sprintf("invalid(op=%#02x dst=%d src=%d off=%d imm=%d)", ins.Opcode, ins.Dst, ins.Src, ins.Offset, ins.Imm)
	}
	return s
}

// Text renders the instruction in the assembler's syntax, such that
// Assemble(Text()) yields the same bytes. Jump and local call targets are
// rendered as relative "+N"/"-N". It fails with ErrInvalidInstruction (a
// *DecodeError with PC 0) for an unknown opcode, a register above %r10, or a
// field the encoding requires to be zero that is not.
func (ins Instruction) Text() (string, error) {
	if ins.Dst > MaxReg || ins.Src > MaxReg {
		return "", ins.invalid("register out of range (dst %%r%d, src %%r%d)", ins.Dst, ins.Src)
	}
	if ins.Opcode != opLDDW && ins.Imm2 != 0 {
		return "", ins.invalid("second immediate on a single-slot instruction")
	}
	op := ins.Opcode
	switch op & 0x07 {
	case classALU, classALU64:
		return ins.textALU()
	case classJMP, classJMP32:
		return ins.textJMP()
	case classLD:
		return ins.textLD()
	case classLDX:
		mode, size := op&0xe0, op&0x18
		if err := ins.zero(0, 0, 0, 1); err != nil {
			return "", err
		}
		switch {
		case mode == modeMEM:
			return fmt.Sprintf("ldx%s %s, %s", sizeSuffix[size], reg(ins.Dst), mem(ins.Src, ins.Offset)), nil
		case mode == modeMEMSX && size != sizeDW:
			return fmt.Sprintf("ldxs%s %s, %s", sizeSuffix[size], reg(ins.Dst), mem(ins.Src, ins.Offset)), nil
		}
	case classST:
		if op&0xe0 == modeMEM {
			if err := ins.zero(0, 1, 0, 0); err != nil {
				return "", err
			}
			return fmt.Sprintf("st%s %s, %s", sizeSuffix[op&0x18], mem(ins.Dst, ins.Offset), imm32(ins.Imm)), nil
		}
	case classSTX:
		mode, size := op&0xe0, op&0x18
		switch {
		case mode == modeMEM:
			if err := ins.zero(0, 0, 0, 1); err != nil {
				return "", err
			}
			return fmt.Sprintf("stx%s %s, %s", sizeSuffix[size], mem(ins.Dst, ins.Offset), reg(ins.Src)), nil
		case mode == modeATOMIC && (size == sizeW || size == sizeDW):
			return ins.textAtomic()
		}
	}
	return "", ins.invalid("unknown opcode")
}

func (ins Instruction) textALU() (string, error) {
	op := ins.Opcode
	is32 := op&0x07 == classALU
	sfx := ""
	if is32 {
		sfx = "32"
	}
	code, src := op&0xf0, op&srcX
	switch code {
	case aluNeg:
		if src != 0 {
			return "", ins.invalid("neg takes no source operand")
		}
		if err := ins.zero(0, 1, 1, 1); err != nil {
			return "", err
		}
		return fmt.Sprintf("neg%s %s", sfx, reg(ins.Dst)), nil
	case aluEnd:
		if err := ins.zero(0, 1, 1, 0); err != nil {
			return "", err
		}
		if ins.Imm != 16 && ins.Imm != 32 && ins.Imm != 64 {
			return "", ins.invalid("byte swap width must be 16, 32 or 64, got %d", ins.Imm)
		}
		var name string
		switch {
		case is32 && src == srcK:
			name = "le"
		case is32:
			name = "be"
		case src == srcK:
			name = "bswap"
		default:
			return "", ins.invalid("unknown opcode")
		}
		return fmt.Sprintf("%s%d %s", name, ins.Imm, reg(ins.Dst)), nil
	case 0xe0, 0xf0:
		return "", ins.invalid("unknown opcode")
	}
	name := aluNames[code>>4]
	switch {
	case ins.Offset == 0:
	case ins.Offset == 1 && (code == aluDiv || code == aluMod):
		name = "s" + name
	case code == aluMov && src == srcX && (ins.Offset == 8 || ins.Offset == 16 || (ins.Offset == 32 && !is32)):
		if err := ins.zero(0, 0, 0, 1); err != nil {
			return "", err
		}
		w := "64"
		if is32 {
			w = "32"
		}
		return fmt.Sprintf("movsx%d%s %s, %s", ins.Offset, w, reg(ins.Dst), reg(ins.Src)), nil
	default:
		return "", ins.invalid("offset must be 0, got %d", ins.Offset)
	}
	if src == srcX {
		if err := ins.zero(0, 0, 0, 1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s%s %s, %s", name, sfx, reg(ins.Dst), reg(ins.Src)), nil
	}
	if err := ins.zero(0, 1, 0, 0); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%s %s, %s", name, sfx, reg(ins.Dst), imm32(ins.Imm)), nil
}

func (ins Instruction) textJMP() (string, error) {
	op := ins.Opcode
	is32 := op&0x07 == classJMP32
	code, src := op&0xf0, op&srcX
	switch {
	case code == jmpJA && src == srcK && !is32:
		if err := ins.zero(1, 1, 0, 1); err != nil {
			return "", err
		}
		return "ja " + rel(int64(ins.Offset)), nil
	case code == jmpJA && src == srcK && is32:
		if err := ins.zero(1, 1, 1, 0); err != nil {
			return "", err
		}
		return "ja32 " + rel(int64(ins.Imm)), nil
	case code == jmpExit && src == srcK && !is32:
		if err := ins.zero(1, 1, 1, 1); err != nil {
			return "", err
		}
		return "exit", nil
	case code == jmpCall && src == srcX && !is32:
		if err := ins.zero(0, 1, 1, 1); err != nil {
			return "", err
		}
		return "call " + reg(ins.Dst), nil
	case code == jmpCall && src == srcK && !is32:
		if err := ins.zero(1, 0, 1, 0); err != nil {
			return "", err
		}
		switch ins.Src {
		case 0:
			return "call " + imm32(ins.Imm), nil
		case pseudoCall:
			return "call local " + rel(int64(ins.Imm)), nil
		case pseudoKfunc:
			return "call runtime " + imm32(ins.Imm), nil
		}
		return "", ins.invalid("call: unknown source %d", ins.Src)
	}
	name := jmpNames[code>>4]
	if name == "" || name == "ja" {
		return "", ins.invalid("unknown opcode")
	}
	if is32 {
		name += "32"
	}
	if src == srcX {
		if err := ins.zero(0, 0, 0, 1); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s, %s, %s", name, reg(ins.Dst), reg(ins.Src), rel(int64(ins.Offset))), nil
	}
	if err := ins.zero(0, 1, 0, 0); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s, %s, %s", name, reg(ins.Dst), imm32(ins.Imm), rel(int64(ins.Offset))), nil
}

func (ins Instruction) textLD() (string, error) {
	if ins.Opcode != opLDDW {
		return "", ins.invalid("unknown opcode (legacy packet loads are not supported)")
	}
	if err := ins.zero(0, 0, 1, 0); err != nil {
		return "", err
	}
	switch ins.Src {
	case 0:
		return fmt.Sprintf("lddw %s, %s", reg(ins.Dst), imm64(ins.Imm64())), nil
	case pseudoMapFD:
		if ins.Imm2 != 0 {
			return "", ins.invalid("lddw map_fd: second immediate must be 0, got %d", ins.Imm2)
		}
		return fmt.Sprintf("lddw %s, map_fd %s", reg(ins.Dst), imm32(ins.Imm)), nil
	case pseudoMapValue:
		return fmt.Sprintf("lddw %s, map_value %s, %s", reg(ins.Dst), imm32(ins.Imm), imm32(ins.Imm2)), nil
	}
	return "", ins.invalid("lddw: unsupported pseudo source %d", ins.Src)
}

func (ins Instruction) textAtomic() (string, error) {
	if err := ins.zero(0, 0, 0, 0); err != nil {
		return "", err
	}
	sfx := ""
	if ins.Opcode&0x18 == sizeW {
		sfx = "32"
	}
	var name string
	switch ins.Imm {
	case 0x00, 0x40, 0x50, 0xa0:
		name = aluNames[ins.Imm>>4]
	case 0x01, 0x41, 0x51, 0xa1:
		name = "fetch " + aluNames[ins.Imm>>4]
	case atomicXchg:
		name = "xchg"
	case atomicCmpxchg:
		name = "cmpxchg"
	default:
		return "", ins.invalid("unknown atomic operation %#x", ins.Imm)
	}
	return fmt.Sprintf("lock %s%s %s, %s", name, sfx, mem(ins.Dst, ins.Offset), reg(ins.Src)), nil
}

// zero checks that the fields flagged 1 (dst, src, off, imm) are zero.
func (ins Instruction) zero(dst, src, off, imm int) error {
	switch {
	case dst == 1 && ins.Dst != 0:
		return ins.invalid("dst register must be 0, got %d", ins.Dst)
	case src == 1 && ins.Src != 0:
		return ins.invalid("src register must be 0, got %d", ins.Src)
	case off == 1 && ins.Offset != 0:
		return ins.invalid("offset must be 0, got %d", ins.Offset)
	case imm == 1 && ins.Imm != 0:
		return ins.invalid("immediate must be 0, got %d", ins.Imm)
	}
	return nil
}

func (ins Instruction) invalid(format string, args ...any) error {
	return &DecodeError{Msg: fmt.Sprintf("opcode %#02x: ", ins.Opcode) + fmt.Sprintf(format, args...), Err: ErrInvalidInstruction}
}

func reg(r uint8) string { return "%r" + strconv.Itoa(int(r)) }

func mem(r uint8, off int16) string {
	if off < 0 {
		return fmt.Sprintf("[%%r%d%d]", r, off)
	}
	return fmt.Sprintf("[%%r%d+%d]", r, off)
}

func rel(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10)
	}
	return "+" + strconv.FormatInt(n, 10)
}

// imm32 renders small values in signed decimal and others as the hex of
// their 32-bit pattern; Assemble reads both back to the same bits.
func imm32(v int32) string {
	if v > -65536 && v < 65536 {
		return strconv.FormatInt(int64(v), 10)
	}
	return "0x" + strconv.FormatUint(uint64(uint32(v)), 16)
}

func imm64(v int64) string {
	if v > -65536 && v < 65536 {
		return strconv.FormatInt(v, 10)
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

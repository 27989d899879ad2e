package verifier

import (
	"encoding/binary"
	"fmt"
)

// Instruction classes and fields (kernel uapi/linux/bpf.h, RFC 9669).
const (
	clsLD    = 0x00
	clsLDX   = 0x01
	clsST    = 0x02
	clsSTX   = 0x03
	clsALU   = 0x04
	clsJMP   = 0x05
	clsJMP32 = 0x06
	clsALU64 = 0x07

	srcK = 0x00
	srcX = 0x08

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

	atomicFETCH   = 0x01
	atomicXCHG    = 0xe0 | atomicFETCH
	atomicCMPXCHG = 0xf0 | atomicFETCH

	pseudoMapFD    = 1
	pseudoMapValue = 2
	pseudoCall     = 1
	pseudoFunc     = 4
)

// insn is one decoded 8-byte instruction.
type insn struct {
	op       uint8
	dst, src uint8
	off      int16
	imm      int32
}

func (i insn) class() uint8 { return i.op & 0x07 }
func (i insn) aluOp() uint8 { return i.op & 0xf0 }
func (i insn) srcX() bool   { return i.op&srcX != 0 }
func (i insn) mode() uint8  { return i.op & 0xe0 }
func (i insn) size() int {
	switch i.op & 0x18 {
	case sizeW:
		return 4
	case sizeH:
		return 2
	case sizeB:
		return 1
	}
	return 8
}
func (i insn) isLdImm64() bool { return i.op == clsLD|modeIMM|sizeDW }

func decode(b []byte) []insn {
	n := len(b) / 8
	out := make([]insn, n)
	for k := range out {
		p := b[k*8:]
		out[k] = insn{op: p[0], dst: p[1] & 0x0f, src: p[1] >> 4,
			off: int16(binary.LittleEndian.Uint16(p[2:])), imm: int32(binary.LittleEndian.Uint32(p[4:]))}
	}
	return out
}

var aluNames = map[uint8]string{
	aluADD: "+=", aluSUB: "-=", aluMUL: "*=", aluDIV: "/=", aluOR: "|=", aluAND: "&=",
	aluLSH: "<<=", aluRSH: ">>=", aluMOD: "%=", aluXOR: "^=", aluMOV: "=", aluARSH: "s>>=",
}

var jmpNames = map[uint8]string{
	jmpJEQ: "==", jmpJGT: ">", jmpJGE: ">=", jmpJSET: "&", jmpJNE: "!=", jmpJSGT: "s>",
	jmpJSGE: "s>=", jmpJLT: "<", jmpJLE: "<=", jmpJSLT: "s<", jmpJSLE: "s<=",
}

var sizeNames = map[int]string{1: "u8", 2: "u16", 4: "u32", 8: "u64"}

// disasm prints insns[pc] the way the kernel's verifier log does:
// "(7b) *(u64 *)(r10 -8) = r1".
func (v *verifier) disasm(pc int) string {
	in := v.insns[pc]
	s := fmt.Sprintf("(%02x) ", in.op)
	r := func(n uint8, w bool) string {
		if w {
			return fmt.Sprintf("w%d", n)
		}
		return fmt.Sprintf("r%d", n)
	}
	switch in.class() {
	case clsALU, clsALU64:
		w := in.class() == clsALU
		op := in.aluOp()
		switch {
		case op == aluNEG:
			return s + fmt.Sprintf("%s = -%s", r(in.dst, w), r(in.dst, w))
		case op == aluEND:
			kind := "le"
			if in.srcX() {
				kind = "be"
			}
			if !w {
				kind = "bswap"
			}
			return s + fmt.Sprintf("r%d = %s%d r%d", in.dst, kind, in.imm, in.dst)
		case op == aluMOV && in.off != 0 && in.srcX():
			return s + fmt.Sprintf("%s = (s%d)%s", r(in.dst, w), in.off, r(in.src, w))
		}
		name, ok := aluNames[op]
		if !ok {
			name = "?"
		}
		if (op == aluDIV || op == aluMOD) && in.off == 1 {
			name = "s" + name
		}
		if in.srcX() {
			return s + fmt.Sprintf("%s %s %s", r(in.dst, w), name, r(in.src, w))
		}
		return s + fmt.Sprintf("%s %s %d", r(in.dst, w), name, in.imm)
	case clsJMP, clsJMP32:
		w := in.class() == clsJMP32
		switch in.aluOp() {
		case jmpCALL:
			if in.src == pseudoCall {
				return s + fmt.Sprintf("call pc%+d", in.imm)
			}
			var p *HelperProto
			if v.env != nil {
				p = v.helpers[in.imm]
			}
			return s + "call " + helperName(in.imm, p)
		case jmpEXIT:
			return s + "exit"
		case jmpJA:
			if w {
				return s + fmt.Sprintf("gotol pc%+d", in.imm)
			}
			return s + fmt.Sprintf("goto pc%+d", in.off)
		}
		name, ok := jmpNames[in.aluOp()]
		if !ok {
			name = "?"
		}
		if in.srcX() {
			return s + fmt.Sprintf("if %s %s %s goto pc%+d", r(in.dst, w), name, r(in.src, w), in.off)
		}
		return s + fmt.Sprintf("if %s %s 0x%x goto pc%+d", r(in.dst, w), name, uint32(in.imm), in.off)
	case clsLDX:
		sx := ""
		if in.mode() == modeMEMSX {
			sx = "s"
		}
		return s + fmt.Sprintf("r%d = *(%s%s *)(r%d %+d)", in.dst, sx, sizeNames[in.size()], in.src, in.off)
	case clsST:
		return s + fmt.Sprintf("*(%s *)(r%d %+d) = %d", sizeNames[in.size()], in.dst, in.off, in.imm)
	case clsSTX:
		if in.mode() == modeATOMIC {
			w := in.size() == 4
			ptr := fmt.Sprintf("(%s *)(r%d %+d)", sizeNames[in.size()], in.dst, in.off)
			bits := "64"
			if w {
				bits = ""
			}
			switch uint32(in.imm) {
			case aluADD, aluOR, aluAND, aluXOR:
				return s + fmt.Sprintf("lock *%s %s %s", ptr, aluNames[uint8(in.imm)], r(in.src, w))
			case atomicXCHG:
				return s + fmt.Sprintf("%s = atomic%s_xchg(%s, %s)", r(in.src, w), bits, ptr, r(in.src, w))
			case atomicCMPXCHG:
				return s + fmt.Sprintf("%s = atomic%s_cmpxchg(%s, %s, %s)", r(0, w), bits, ptr, r(0, w), r(in.src, w))
			}
			if in.imm&atomicFETCH != 0 {
				names := map[int32]string{aluADD: "add", aluOR: "or", aluAND: "and", aluXOR: "xor"}
				return s + fmt.Sprintf("%s = atomic%s_fetch_%s(%s, %s)", r(in.src, w), bits, names[in.imm&^atomicFETCH], ptr, r(in.src, w))
			}
			return s + fmt.Sprintf("atomic op 0x%x on %s", in.imm, ptr)
		}
		return s + fmt.Sprintf("*(%s *)(r%d %+d) = r%d", sizeNames[in.size()], in.dst, in.off, in.src)
	case clsLD:
		if in.isLdImm64() {
			var hi int32
			if pc+1 < len(v.insns) {
				hi = v.insns[pc+1].imm
			}
			switch in.src {
			case pseudoMapFD:
				return s + fmt.Sprintf("r%d = map[%s]", in.dst, v.mapName(in.imm))
			case pseudoMapValue:
				return s + fmt.Sprintf("r%d = map_value[%s]%+d", in.dst, v.mapName(in.imm), hi)
			case pseudoFunc:
				return s + fmt.Sprintf("r%d = func pc%+d", in.dst, in.imm)
			}
			return s + fmt.Sprintf("r%d = 0x%x", in.dst, uint64(uint32(in.imm))|uint64(uint32(hi))<<32)
		}
		if in.mode() == modeABS {
			return s + fmt.Sprintf("r0 = *(%s *)skb[%d]", sizeNames[in.size()], in.imm)
		}
		if in.mode() == modeIND {
			return s + fmt.Sprintf("r0 = *(%s *)skb[r%d + %d]", sizeNames[in.size()], in.src, in.imm)
		}
	}
	return s + fmt.Sprintf("unknown opcode %02x", in.op)
}

func (v *verifier) mapName(idx int32) string {
	if v.env != nil && idx >= 0 && int(idx) < len(v.env.Maps) {
		if n := v.env.Maps[idx].Name; n != "" {
			return "'" + n + "'"
		}
	}
	return fmt.Sprintf("#%d", idx)
}

func (i insn) isJmp() bool { return i.class() == clsJMP || i.class() == clsJMP32 }

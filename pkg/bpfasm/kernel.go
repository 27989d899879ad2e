package bpfasm

import (
	"fmt"
	"strconv"
)

// KernelSyntax configures KernelText, which prints instructions the way
// the kernel's verifier log and bpftool's "prog dump xlated" do
// ("(bf) r6 = r1", "(85) call bpf_map_lookup_elem#1"). Nil functions take
// the defaults noted. A KernelSyntax is plain data, safe for concurrent
// use.
type KernelSyntax struct {
	// HelperName returns the kernel name of helper n ("bpf_map_lookup_elem")
	// or "" if unknown; the call prints as "call NAME#n", or "call #n".
	HelperName func(n int32) string
	// Map formats the imm of an lddw map reference (src 1: value false;
	// src 2: value true, off the offset into the value). Nil: bpftool's
	// "map[id:N]" and "map[id:N][0]+OFF", for instructions whose imm is
	// a map id.
	Map func(imm int32, value bool, off int32) string
}

// KernelText renders the instruction at insns[0:8] (insns[0:16] for lddw)
// in kernel syntax, without the "PC: " prefix, and returns the number of
// bytes it consumed (8 or 16). Every decodable opcode prints, including
// ones Assemble does not accept; an undecodable slot prints as
// "(OP) unknown opcode OP" with 8 bytes consumed. It fails only for fewer
// than 8 bytes, or an lddw without its second slot (*DecodeError wrapping
// ErrTruncated).
func (ks *KernelSyntax) KernelText(insns []byte) (string, int, error) {
	if len(insns) < InsnSize {
		return "", 0, &DecodeError{Msg: "truncated instruction", Err: ErrTruncated}
	}
	in := Instruction{Opcode: insns[0], Dst: insns[1] & 0x0f, Src: insns[1] >> 4,
		Offset: int16(uint16(insns[2]) | uint16(insns[3])<<8),
		Imm:    int32(uint32(insns[4]) | uint32(insns[5])<<8 | uint32(insns[6])<<16 | uint32(insns[7])<<24)}
	n := InsnSize
	if in.Opcode == opLDDW {
		if len(insns) < 2*InsnSize {
			return "", 0, &DecodeError{Msg: "lddw without its second slot", Err: ErrTruncated}
		}
		in.Imm2 = int32(uint32(insns[12]) | uint32(insns[13])<<8 | uint32(insns[14])<<16 | uint32(insns[15])<<24)
		n = 2 * InsnSize
	}
	return fmt.Sprintf("(%02x) ", in.Opcode) + ks.body(in), n, nil
}

var kAluOps = [16]string{"+=", "-=", "*=", "/=", "|=", "&=", "<<=", ">>=", "", "%=", "^=", "=", "s>>=", "", "", ""}

var kJmpOps = [16]string{"", "==", ">", ">=", "&", "!=", "s>", "s>=", "", "", "<", "<=", "s<", "s<=", "", ""}

var kSizes = map[uint8]string{sizeB: "u8", sizeH: "u16", sizeW: "u32", sizeDW: "u64"}

func kReg(n uint8, w bool) string {
	if w {
		return "w" + strconv.Itoa(int(n))
	}
	return "r" + strconv.Itoa(int(n))
}

func (ks *KernelSyntax) body(in Instruction) string {
	op := in.Opcode
	cls := op & 0x07
	code := op & 0xf0
	x := op&srcX != 0
	switch cls {
	case classALU, classALU64:
		w := cls == classALU
		switch {
		case code == aluNeg:
			return fmt.Sprintf("%s = -%s", kReg(in.Dst, w), kReg(in.Dst, w))
		case code == aluEnd:
			kind := "le"
			if x {
				kind = "be"
			}
			if !w {
				kind = "bswap"
			}
			return fmt.Sprintf("r%d = %s%d r%d", in.Dst, kind, in.Imm, in.Dst)
		case code == aluMov && in.Offset != 0 && x:
			return fmt.Sprintf("%s = (s%d)%s", kReg(in.Dst, w), in.Offset, kReg(in.Src, w))
		}
		name := kAluOps[code>>4]
		if name == "" {
			break
		}
		if (code == aluDiv || code == aluMod) && in.Offset == 1 {
			name = "s" + name
		}
		if x {
			return fmt.Sprintf("%s %s %s", kReg(in.Dst, w), name, kReg(in.Src, w))
		}
		return fmt.Sprintf("%s %s %d", kReg(in.Dst, w), name, in.Imm)
	case classJMP, classJMP32:
		w := cls == classJMP32
		switch code {
		case jmpCall:
			switch in.Src {
			case pseudoCall:
				return fmt.Sprintf("call pc%+d", in.Imm)
			case pseudoKfunc:
				return fmt.Sprintf("call kernel-function#%d", in.Imm)
			}
			name := ""
			if ks.HelperName != nil {
				name = ks.HelperName(in.Imm)
			}
			return fmt.Sprintf("call %s#%d", name, in.Imm)
		case jmpExit:
			return "exit"
		case jmpJA:
			if w {
				return fmt.Sprintf("gotol pc%+d", in.Imm)
			}
			return fmt.Sprintf("goto pc%+d", in.Offset)
		}
		name := kJmpOps[code>>4]
		if name == "" {
			break
		}
		if x {
			return fmt.Sprintf("if %s %s %s goto pc%+d", kReg(in.Dst, w), name, kReg(in.Src, w), in.Offset)
		}
		return fmt.Sprintf("if %s %s 0x%x goto pc%+d", kReg(in.Dst, w), name, uint32(in.Imm), in.Offset)
	case classLDX:
		sx := ""
		if op&0xe0 == modeMEMSX {
			sx = "s"
		}
		return fmt.Sprintf("r%d = *(%s%s *)(r%d %+d)", in.Dst, sx, kSizes[op&0x18], in.Src, in.Offset)
	case classST:
		return fmt.Sprintf("*(%s *)(r%d %+d) = %d", kSizes[op&0x18], in.Dst, in.Offset, in.Imm)
	case classSTX:
		size := op & 0x18
		if op&0xe0 == modeATOMIC {
			w := size == sizeW
			ptr := fmt.Sprintf("(%s *)(r%d %+d)", kSizes[size], in.Dst, in.Offset)
			bits := "64"
			if w {
				bits = ""
			}
			imm := uint32(in.Imm)
			switch imm {
			case 0x00, 0x40, 0x50, 0xa0: // add, or, and, xor
				return fmt.Sprintf("lock *%s %s %s", ptr, kAluOps[imm>>4], kReg(in.Src, w))
			case atomicXchg:
				return fmt.Sprintf("%s = atomic%s_xchg(%s, %s)", kReg(in.Src, w), bits, ptr, kReg(in.Src, w))
			case atomicCmpxchg:
				return fmt.Sprintf("%s = atomic%s_cmpxchg(%s, %s, %s)", kReg(0, w), bits, ptr, kReg(0, w), kReg(in.Src, w))
			}
			names := map[uint32]string{0x00: "add", 0x40: "or", 0x50: "and", 0xa0: "xor"}
			if imm&atomicFetch != 0 && names[imm&^atomicFetch] != "" {
				return fmt.Sprintf("%s = atomic%s_fetch_%s(%s, %s)", kReg(in.Src, w), bits, names[imm&^atomicFetch], ptr, kReg(in.Src, w))
			}
			return fmt.Sprintf("atomic op 0x%x on %s", imm, ptr)
		}
		return fmt.Sprintf("*(%s *)(r%d %+d) = r%d", kSizes[size], in.Dst, in.Offset, in.Src)
	case classLD:
		if op == opLDDW {
			switch in.Src {
			case pseudoMapFD, pseudoMapValue:
				value := in.Src == pseudoMapValue
				if ks.Map != nil {
					return fmt.Sprintf("r%d = %s", in.Dst, ks.Map(in.Imm, value, in.Imm2))
				}
				if value {
					return fmt.Sprintf("r%d = map[id:%d][0]+%d", in.Dst, uint32(in.Imm), in.Imm2)
				}
				return fmt.Sprintf("r%d = map[id:%d]", in.Dst, uint32(in.Imm))
			case 4: // BPF_PSEUDO_FUNC
				return fmt.Sprintf("r%d = func pc%+d", in.Dst, in.Imm)
			}
			return fmt.Sprintf("r%d = 0x%x", in.Dst, uint64(in.Imm64()))
		}
		switch op & 0xe0 {
		case 0x20: // BPF_ABS
			return fmt.Sprintf("r0 = *(%s *)skb[%d]", kSizes[op&0x18], in.Imm)
		case 0x40: // BPF_IND
			return fmt.Sprintf("r0 = *(%s *)skb[r%d + %d]", kSizes[op&0x18], in.Src, in.Imm)
		}
	}
	return fmt.Sprintf("unknown opcode %02x", op)
}

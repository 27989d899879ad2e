package bpfasm

import (
	"fmt"
	"strings"
)

// Disassemble renders raw instructions (bpf_attr.insns format) as text that
// Assemble accepts and turns back into the same bytes, one instruction per
// line, each line ending in "\n". Jump and local-call targets are written
// as relative offsets ("+N"/"-N").
//
// It returns ErrEmpty for no bytes, and a *DecodeError naming the slot at
// fault (wrapping ErrTruncated or ErrInvalidInstruction) if the length is
// not a multiple of 8, an lddw lacks its second slot, or an instruction is
// not one the assembler can express (unknown opcode, register above %r10,
// or a reserved field that is not zero).
func Disassemble(insns []byte) (string, error) {
	if len(insns) == 0 {
		return "", ErrEmpty
	}
	if len(insns)%InsnSize != 0 {
		return "", &DecodeError{PC: len(insns) / InsnSize, Msg: fmt.Sprintf("length %d is not a multiple of %d", len(insns), InsnSize), Err: ErrTruncated}
	}
	var sb strings.Builder
	for off := 0; off < len(insns); {
		text, n, err := DisassembleOne(insns[off:])
		if err != nil {
			de := err.(*DecodeError)
			de.PC += off / InsnSize
			return "", de
		}
		sb.WriteString(text)
		sb.WriteByte('\n')
		off += n
	}
	return sb.String(), nil
}

// DisassembleOne renders the instruction at insns[0:8] (insns[0:16] for
// lddw) and returns its text and the number of bytes it consumed (8 or 16).
// It fails like Disassemble, with a *DecodeError whose PC is relative to
// insns.
func DisassembleOne(insns []byte) (text string, n int, err error) {
	ins, err := Decode(insns)
	if err != nil {
		return "", 0, err
	}
	text, err = ins.Text()
	if err != nil {
		return "", 0, err
	}
	return text, ins.Slots() * InsnSize, nil
}

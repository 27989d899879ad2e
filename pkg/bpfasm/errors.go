package bpfasm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, and each also matches unix.EINVAL with errors.Is, which is the errno
// the kernel returns for a malformed program.
var (
	// ErrEmpty: the source holds no instruction (only blanks, comments and
	// labels), or Disassemble was given no bytes.
	ErrEmpty = errno.New(unix.EINVAL, "program has no instructions")
	// ErrSyntax: a malformed line or operand (unknown directive, missing
	// memory operand, bad number, empty operand).
	ErrSyntax = errno.New(unix.EINVAL, "syntax error")
	// ErrMnemonic: an unknown mnemonic or lock operation.
	ErrMnemonic = errno.New(unix.EINVAL, "invalid mnemonic")
	// ErrOperandCount: a mnemonic with the wrong number of operands.
	ErrOperandCount = errno.New(unix.EINVAL, "invalid number of operands")
	// ErrRegister: a register outside %r0-%r10 or a malformed register name.
	ErrRegister = errno.New(unix.EINVAL, "invalid register")
	// ErrRange: an immediate, offset or jump distance that does not fit its
	// field.
	ErrRange = errno.New(unix.EINVAL, "value out of range")
	// ErrLabel: an undefined, duplicate or malformed label.
	ErrLabel = errno.New(unix.EINVAL, "invalid label")
	// ErrInvalidInstruction: bytes that are not an instruction this package
	// can render (unknown opcode, or a field the encoding requires to be
	// zero is not).
	ErrInvalidInstruction = errno.New(unix.EINVAL, "invalid instruction")
	// ErrTruncated: a byte slice whose length is not a whole number of
	// instructions, or an lddw missing its second half.
	ErrTruncated = errno.New(unix.EINVAL, "truncated instruction")
)

// Error is an assembly error: where in the source it happened and what is
// wrong. Err is one of the package's sentinels; errors.Is(e, ErrRegister)
// and errors.Is(e, unix.EINVAL) both work through Unwrap.
//
// Values are immutable once returned and safe for concurrent use.
type Error struct {
	Line int    // 1-based source line number.
	Col  int    // 1-based column (in bytes) of the offending token, 0 if the whole line.
	Text string // the source line, comment removed and trimmed.
	Msg  string // what is wrong, e.g. `invalid register "%r50" (want %r0-%r10)`.
	Err  error  // sentinel: ErrSyntax, ErrMnemonic, ErrRegister, ...
}

// Error returns "line L:C: msg: text".
func (e *Error) Error() string {
	pos := fmt.Sprintf("line %d", e.Line)
	if e.Col > 0 {
		pos = fmt.Sprintf("line %d:%d", e.Line, e.Col)
	}
	if e.Text == "" {
		return fmt.Sprintf("bpfasm: %s: %s", pos, e.Msg)
	}
	return fmt.Sprintf("bpfasm: %s: %s (in %q)", pos, e.Msg, e.Text)
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// DecodeError reports why raw bytes could not be decoded or rendered.
// Values are immutable once returned and safe for concurrent use.
type DecodeError struct {
	PC  int    // index of the instruction slot (8-byte unit) at fault.
	Msg string // what is wrong, e.g. "opcode 0x07: offset must be 0, got 1".
	Err error  // sentinel: ErrInvalidInstruction, ErrTruncated or ErrEmpty.
}

// Error returns "insn PC: msg".
func (e *DecodeError) Error() string {
	return fmt.Sprintf("bpfasm: insn %d: %s", e.PC, e.Msg)
}

// Unwrap returns the sentinel.
func (e *DecodeError) Unwrap() error { return e.Err }

package bpfasm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAssembleEncoding pins encodings that are easy to get wrong, byte by
// byte (opcode, regs, offset LE, imm LE).
func TestAssembleEncoding(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"mov imm", "mov %r0, 1", "b7000000 01000000"},
		{"mov32 reg", "mov32 %r1, %r2", "bc210000 00000000"},
		{"no percent", "add r3, r4", "0f430000 00000000"},
		{"add64 alias", "add64 %r3, 4", "07030000 04000000"},
		{"negative imm", "mov %r1, -1", "b7010000 ffffffff"},
		{"hex imm bit pattern", "mov32 %r1, 0xffffffff", "b4010000 ffffffff"},
		{"min int32", "mov %r1, -2147483648", "b7010000 00000080"},
		{"sdiv sets offset 1", "sdiv32 %r0, %r1", "3c100100 00000000"},
		{"smod imm", "smod %r0, -3", "97000100 fdffffff"},
		{"movsx832", "movsx832 %r2, %r1", "bc120800 00000000"},
		{"movsx3264", "movsx3264 %r0, %r9", "bf902000 00000000"},
		{"neg", "neg %r5", "87050000 00000000"},
		{"le16", "le16 %r0", "d4000000 10000000"},
		{"be64", "be64 %r0", "dc000000 40000000"},
		{"bswap32", "bswap32 %r0", "d7000000 20000000"},
		{"swap alias", "swap64 %r0", "d7000000 40000000"},
		{"ldxsh", "ldxsh %r0, [%r10-2]", "89a0 feff 00000000"},
		{"ldxdw no offset", "ldxdw %r0, [%r1]", "79100000 00000000"},
		{"mem spaces hex offset", "ldxb %r0, [ %r1 + 0x2 ]", "71100200 00000000"},
		{"stdw", "stdw [%r10-8], 0x11223344", "7a0af8ff 44332211"},
		{"stxh", "stxh [%r1+4], %r2", "6b210400 00000000"},
		{"lock add", "lock add [%r10-8], %r1", "db1af8ff 00000000"},
		{"lock fetch and32", "lock fetch and32 [%r10-4], %r3", "c33afcff 51000000"},
		{"lock xchg", "lock xchg [%r1+0], %r2", "db210000 e1000000"},
		{"lock fetch xchg", "lock fetch xchg [%r1+0], %r2", "db210000 e1000000"},
		{"lock cmpxchg32", "lock cmpxchg32 [%r10-8], %r1", "c31af8ff f1000000"},
		{"lddw", "lddw %r0, 0x1122334455667788", "18000000 88776655 00000000 44332211"},
		{"lddw negative", "lddw %r1, -2", "18010000 feffffff 00000000 ffffffff"},
		{"lddw decimal above int32", "lddw %r0, 2147483648", "18000000 00000080 00000000 00000000"},
		{"lddw map_fd", "lddw %r1, map_fd 7", "18110000 07000000 00000000 00000000"},
		{"lddw map_value", "lddw %r2, map_value 3, 16", "18220000 03000000 00000000 10000000"},
		{"call helper", "call 5", "85000000 05000000"},
		{"call helper keyword", "call helper 1", "85000000 01000000"},
		{"callx dst field", "call %r2", "8d020000 00000000"},
		{"call runtime", "call runtime 9", "85200000 09000000"},
		{"call local label", "call local f\nexit\nf:\nexit", "85100000 01000000 95000000 00000000 95000000 00000000"},
		{"ja literal", "ja +1\nexit\nexit", "05000100 00000000 95000000 00000000 95000000 00000000"},
		{"ja backwards", "l: ja l", "0500ffff 00000000"},
		{"ja32 label in imm", "ja32 t\nexit\nt: exit", "06000000 01000000 95000000 00000000 95000000 00000000"},
		{"jeq32 imm", "jeq32 %r1, 5, +0\nexit", "16010000 05000000 95000000 00000000"},
		{"jsle reg", "jsle %r1, %r2, -1", "dd21ffff 00000000"},
		{"lddw counts two slots", "ja l\nlddw %r0, 1\nl: exit", "05000200 00000000 18000000 01000000 00000000 00000000 95000000 00000000"},
		{"implicit exit label", "jne %r1, 0, exit\nmov %r0, 1\nexit\nexit", "55010100 00000000 b7000000 01000000 95000000 00000000 95000000 00000000"},
		{"explicit exit label wins", "ja exit\nexit\nexit:\nexit", "05000100 00000000 95000000 00000000 95000000 00000000"},
		{"comments blanks crlf", "# header\r\n\r\n  mov %r0, 0 # trailing\r\n\texit\r\n", "b7000000 00000000 95000000 00000000"},
		{"label and insn on a line", "a: b: exit", "95000000 00000000"},
		{"trailing spaces", "lock cmpxchg [%r10-8], %r1 ", "db1af8ff f1000000"},
		{"offset bounds", "stxb [%r1-32768], %r2\nstxb [%r1+32767], %r2", "73210080 00000000 7321ff7f 00000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Assemble(tt.src)
			if err != nil {
				t.Fatalf("Assemble(%q): %v", tt.src, err)
			}
			if want := unhex(t, tt.want); !bytes.Equal(got, want) {
				t.Fatalf("Assemble(%q)\n got % x\nwant % x", tt.src, got, want)
			}
		})
	}
}

// TestAssembleErrors checks the sentinel, the position and the message of
// assembly errors.
func TestAssembleErrors(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		err       error
		line, col int
		msg       string // substring of the message
	}{
		{"empty", "", ErrEmpty, 0, 0, ""},
		{"comments only", "# nothing\n   \n# here", ErrEmpty, 0, 0, ""},
		{"labels only", "a:\nb:", ErrEmpty, 0, 0, ""},
		{"unknown mnemonic", "mov %r0, 1\nldxq %r0, %r1", ErrMnemonic, 2, 1, `"ldxq"`},
		{"uppercase mnemonic", "MOV %r0, 1", ErrMnemonic, 1, 1, `"MOV"`},
		{"directive", ".section text", ErrSyntax, 1, 1, "unknown directive"},
		{"section line", "-- Unknown directive", ErrSyntax, 1, 1, "unknown directive"},
		{"register 11", "mov %r11, 1", ErrRegister, 1, 5, `"%r11"`},
		{"register 50", "or %r0, %r50", ErrRegister, 1, 9, `"%r50"`},
		{"register leading zero", "mov %r01, 1", ErrRegister, 1, 5, ""},
		{"register junk", "mov %rx, 1", ErrRegister, 1, 5, ""},
		{"memory register", "ldxw %r0, [%r11+1]", ErrRegister, 1, 12, ""},
		{"too few operands", "lddw %r0", ErrOperandCount, 1, 1, "takes 2"},
		{"too many operands", "exit %r0", ErrOperandCount, 1, 1, "takes 0"},
		{"neg two operands", "neg %r0, 1", ErrOperandCount, 1, 1, ""},
		{"empty operand", "mov %r0,, 1", ErrSyntax, 1, 9, "empty operand"},
		{"trailing comma", "mov %r0, 1,", ErrSyntax, 1, 12, "empty operand"},
		{"imm32 decimal overflow", "mov32 %r0, 2147483648", ErrRange, 1, 12, "out of 32-bit range"},
		{"imm32 decimal underflow", "mov %r0, -2147483649", ErrRange, 1, 10, ""},
		{"imm32 hex overflow", "mov32 %r0, 0x100000000", ErrRange, 1, 12, ""},
		{"imm32 negative hex overflow", "mov %r0, -0x80000001", ErrRange, 1, 10, ""},
		{"imm64 overflow", "lddw %r0, 0x10000000000000000", ErrRange, 1, 11, "64 bits"},
		{"imm64 negative overflow", "lddw %r0, -9223372036854775809", ErrRange, 1, 11, ""},
		{"bad number", "mov %r0, 12abc", ErrSyntax, 1, 10, "invalid number"},
		{"label as immediate", "mov %r0, foo", ErrSyntax, 1, 10, ""},
		{"offset overflow", "ldxb %r0, [%r1+0x10000]", ErrRange, 1, 15, "16-bit"},
		{"offset 32768", "stb [%r1+32768], 1", ErrRange, 1, 9, ""},
		{"offset underflow", "stb [%r1-32769], 1", ErrRange, 1, 9, ""},
		{"no memory operand", "ldxb %r0, %r1", ErrSyntax, 1, 11, "memory operand"},
		{"bad memory offset", "ldxb %r0, [%r1+x]", ErrSyntax, 1, 15, ""},
		{"undefined label", "ja NOT_A_LABEL\nexit", ErrLabel, 1, 4, `"NOT_A_LABEL"`},
		{"duplicate label", "a: exit\na: exit", ErrLabel, 2, 1, "already defined at line 1"},
		{"bad label name", "1a: exit", ErrLabel, 1, 1, ""},
		{"unsigned jump literal", "ja 5", ErrSyntax, 1, 4, "signed offset"},
		{"jump literal range", "ja +32768", ErrRange, 1, 4, ""},
		{"lock alone", "lock", ErrOperandCount, 1, 1, "missing operation"},
		{"lock one operand", "lock or [%r10-8]", ErrOperandCount, 1, 1, "takes 2"},
		{"lock bad op", "lock sub [%r10-8], %r1", ErrMnemonic, 1, 6, `"sub"`},
		{"lock fetch alone", "lock fetch", ErrOperandCount, 1, 1, ""},
		{"lock imm source", "lock add [%r10-8], 1", ErrRegister, 1, 20, ""},
		{"map_fd without number", "lddw %r1, map_fd", ErrSyntax, 1, 11, ""},
		{"map_value without offset", "lddw %r1, map_value 1", ErrOperandCount, 1, 6, ""},
		{"movsx register only", "movsx864 %r0, 5", ErrRegister, 1, 15, ""},
		{"movsx3232 does not exist", "movsx3232 %r0, %r1", ErrMnemonic, 1, 1, ""},
		{"error on later line", "mov %r0, 1\n\n  add %r0, %r99\nexit", ErrRegister, 3, 12, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Assemble(tt.src)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Assemble(%q) = %v, want %v", tt.src, err, tt.err)
			}
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("error %v does not match EINVAL", err)
			}
			if tt.err == ErrEmpty {
				return
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %T is not *Error", err)
			}
			if ae.Line != tt.line || ae.Col != tt.col {
				t.Errorf("position = %d:%d, want %d:%d (%v)", ae.Line, ae.Col, tt.line, tt.col, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q does not contain %q", err.Error(), tt.msg)
			}
		})
	}
}

// TestDisassembleRejects checks that encodings the assembler cannot produce
// are refused with the slot index, rather than rendered lossily.
func TestDisassembleRejects(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		err  error
		pc   int
	}{
		{"empty", "", ErrEmpty, 0},
		{"short", "b7000000 010000", ErrTruncated, 0},
		{"lddw missing half", "95000000 00000000 18000000 01000000", ErrTruncated, 1},
		{"lddw second slot opcode", "18000000 01000000 07000000 00000000", ErrInvalidInstruction, 1},
		{"alu imm with offset", "07000100 01000000", ErrInvalidInstruction, 0},
		{"alu reg with imm", "0f100000 01000000", ErrInvalidInstruction, 0},
		{"alu imm with src", "07100000 01000000", ErrInvalidInstruction, 0},
		{"register 11", "b70b0000 01000000", ErrInvalidInstruction, 0},
		{"neg with reg source", "8f000000 00000000", ErrInvalidInstruction, 0},
		{"end width 8", "d4000000 08000000", ErrInvalidInstruction, 0},
		{"bswap reg source", "df000000 10000000", ErrInvalidInstruction, 0},
		{"movsx32 in alu32", "bc102000 00000000", ErrInvalidInstruction, 0},
		{"div offset 2", "3f100200 00000000", ErrInvalidInstruction, 0},
		{"exit with imm", "95000000 01000000", ErrInvalidInstruction, 0},
		{"call with dst", "85010000 01000000", ErrInvalidInstruction, 0},
		{"call src 3", "85300000 01000000", ErrInvalidInstruction, 0},
		{"ja with imm", "05000000 01000000", ErrInvalidInstruction, 0},
		{"jmp32 exit", "96000000 00000000", ErrInvalidInstruction, 0},
		{"may_goto", "e5000000 00000000", ErrInvalidInstruction, 0},
		{"ld abs", "20000000 00000000", ErrInvalidInstruction, 0},
		{"ldxsdw", "99100000 00000000", ErrInvalidInstruction, 0},
		{"atomic byte", "d3100000 00000000", ErrInvalidInstruction, 0},
		{"atomic unknown op", "db100000 10000000", ErrInvalidInstruction, 0},
		{"lddw pseudo 3", "18310000 01000000 00000000 00000000", ErrInvalidInstruction, 0},
		{"lddw map_fd high imm", "18110000 01000000 00000000 01000000", ErrInvalidInstruction, 0},
		{"at pc 2", "95000000 00000000 95000000 00000000 ff000000 00000000", ErrInvalidInstruction, 2},
		{"after lddw", "18000000 01000000 00000000 00000000 ff000000 00000000", ErrInvalidInstruction, 2},
		{"ragged length", "95000000 00000000 95", ErrTruncated, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Disassemble(unhex(t, tt.hex))
			if !errors.Is(err, tt.err) {
				t.Fatalf("Disassemble = %v, want %v", err, tt.err)
			}
			var de *DecodeError
			if tt.err != ErrEmpty && (!errors.As(err, &de) || de.PC != tt.pc) {
				t.Fatalf("error %v: want *DecodeError at pc %d", err, tt.pc)
			}
		})
	}
}

// TestDisassembleAllOpcodes tries every opcode with a spread of field values
// and checks that whatever Disassemble accepts reassembles to the same bytes
// (the fuzz property, exhaustively over opcodes), and that every documented
// mnemonic is reachable from some encoding.
func TestDisassembleAllOpcodes(t *testing.T) {
	regs := []uint8{0x00, 0x21, 0x0a, 0xa0, 0xb0, 0x0f}
	offs := []uint16{0, 1, 8, 16, 32, 0xffff, 0x8000}
	imms := []uint32{0, 1, 16, 32, 64, 0x40, 0x41, 0x51, 0xa1, 0xe1, 0xf1, 0xffffffff, 0x80000000, 0x12345}
	accepted := map[string]bool{}
	for op := 0; op < 256; op++ {
		for _, r := range regs {
			for _, o := range offs {
				for _, imm := range imms {
					b := []byte{byte(op), r, byte(o), byte(o >> 8), byte(imm), byte(imm >> 8), byte(imm >> 16), byte(imm >> 24)}
					if op == opLDDW {
						b = append(b, 0, 0, 0, 0, 0x78, 0x56, 0x34, 0x12)
					}
					text, err := Disassemble(b)
					if err != nil {
						continue
					}
					accepted[strings.Fields(text)[0]] = true
					again, err := Assemble(text)
					if err != nil || !bytes.Equal(again, b) {
						t.Fatalf("% x -> %q -> % x, %v", b, text, again, err)
					}
				}
			}
		}
	}
	for m := range mnemonics {
		switch {
		case strings.HasPrefix(m, "swap"), strings.HasSuffix(m, "64") && !strings.HasPrefix(m, "movsx") &&
			!strings.HasPrefix(m, "le") && !strings.HasPrefix(m, "be") && !strings.HasPrefix(m, "bswap"):
			continue // aliases, never emitted
		}
		if !accepted[m] {
			t.Errorf("mnemonic %q is never produced by the disassembler", m)
		}
	}
	if !accepted["lock"] {
		t.Error("no atomic instruction was disassembled")
	}
}

// TestInstruction covers the Instruction helpers directly.
func TestInstruction(t *testing.T) {
	insns, err := Parse("lddw %r3, 0x8877665544332211\nmov %r0, 0\nexit")
	if err != nil {
		t.Fatal(err)
	}
	if len(insns) != 3 || insns[0].Slots() != 2 || insns[1].Slots() != 1 {
		t.Fatalf("Parse = %+v", insns)
	}
	if got := uint64(insns[0].Imm64()); got != 0x8877665544332211 {
		t.Errorf("Imm64 = %#x", got)
	}
	if got := insns[0].String(); got != "lddw %r3, 0x8877665544332211" {
		t.Errorf("String = %q", got)
	}
	bad := Instruction{Opcode: 0x07, Offset: 1, Imm: 1}
	if got := bad.String(); got != "invalid(op=0x07 dst=0 src=0 off=1 imm=1)" {
		t.Errorf("String of invalid = %q", got)
	}
	if _, err := (Instruction{Opcode: 0xb7, Dst: 16}).MarshalBinary(); !errors.Is(err, ErrInvalidInstruction) {
		t.Errorf("MarshalBinary(dst 16) = %v", err)
	}
	_, err = Encode([]Instruction{{Opcode: opLDDW}, {Opcode: 0x95, Imm2: 1}})
	var de *DecodeError
	if !errors.As(err, &de) || de.PC != 2 {
		t.Errorf("Encode with Imm2 on exit = %v, want DecodeError at pc 2", err)
	}
	text, n, err := DisassembleOne(unhex(t, "18000000 01000000 00000000 00000000 95000000 00000000"))
	if err != nil || n != 16 || text != "lddw %r0, 1" {
		t.Errorf("DisassembleOne = %q, %d, %v", text, n, err)
	}
}

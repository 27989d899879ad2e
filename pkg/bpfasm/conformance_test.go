package bpfasm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/bpfasm/datafile"
)

// conformanceDir locates the bpf_conformance data: $BPF_CONFORMANCE_DIR, or
// the shared checkout next to the repository. It skips the test if absent.
func conformanceDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("BPF_CONFORMANCE_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "bpf_conformance")
	}
	if _, err := os.Stat(filepath.Join(dir, "tests")); err != nil {
		t.Skipf("bpf_conformance suite not found at %s (set BPF_CONFORMANCE_DIR): %v", dir, err)
	}
	return dir
}

type suiteFile struct {
	name string
	f    *datafile.File
}

func loadDir(t testing.TB, dir string) []suiteFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.data"))
	if err != nil {
		t.Fatal(err)
	}
	var out []suiteFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := datafile.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, suiteFile{filepath.Base(p), f})
	}
	return out
}

// TestConformanceSuite assembles every program of the suite, compares with
// the raw section where there is one, and checks the disassembly round trip.
func TestConformanceSuite(t *testing.T) {
	files := loadDir(t, filepath.Join(conformanceDir(t), "tests"))
	if len(files) < 313 {
		t.Fatalf("found %d test files, want at least 313", len(files))
	}
	withRaw := 0
	for _, sf := range files {
		t.Run(sf.name, func(t *testing.T) {
			if !sf.f.HasAsm {
				t.Fatal("no asm section")
			}
			b, err := Assemble(sf.f.Asm)
			if err != nil {
				t.Fatalf("Assemble: %v (asm starts at file line %d)", err, sf.f.AsmLine)
			}
			if sf.f.Raw != nil {
				withRaw++
				if !bytes.Equal(b, sf.f.Raw) {
					t.Fatalf("asm and raw differ:\nasm % x\nraw % x", b, sf.f.Raw)
				}
			}
			text, err := Disassemble(b)
			if err != nil {
				t.Fatalf("Disassemble: %v", err)
			}
			again, err := Assemble(text)
			if err != nil {
				t.Fatalf("reassemble: %v\n%s", err, text)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("round trip changed bytes:\n% x\n% x\n%s", b, again, text)
			}
			text2, err := Disassemble(again)
			if err != nil || text2 != text {
				t.Fatalf("disassembly not stable (%v):\n%s\n---\n%s", err, text, text2)
			}
		})
	}
	if withRaw == 0 {
		t.Error("no test file has both asm and raw; expected lddw.data")
	}
}

// TestConformanceNegative checks that every malformed-assembly case of the
// suite's negative/ folder fails with the expected sentinel and a line
// number.
func TestConformanceNegative(t *testing.T) {
	dir := filepath.Join(conformanceDir(t), "negative")
	files := loadDir(t, dir)
	want := map[string]error{
		"empty.data":                     ErrEmpty, // no asm section at all
		"empty_instructions.data":        ErrEmpty, // a result but no program
		"invalid_imm32_dec_range.data":   ErrRange,
		"invalid_imm32_hex_range.data":   ErrRange,
		"invalid_label.data":             ErrLabel,
		"invalid_lock.data":              ErrOperandCount,
		"invalid_lock2.data":             ErrOperandCount,
		"invalid_mnemonic.data":          ErrMnemonic,
		"invalid_offset.data":            ErrSyntax,
		"invalid_offset_range.data":      ErrRange,
		"invalid_operand_count.data":     ErrOperandCount,
		"invalid_register.data":          ErrRegister,
		"invalid_unknown_directive.data": ErrEmpty, // "-- Unknown directive" opens a section; asm is left empty
	}
	// These two test the upstream runner itself (a wrong expected result, an
	// expected error text); their programs are valid and must assemble.
	valid := map[string]bool{"error.data": true, "incorrect_return_value_high_bits.data": true}
	seen := 0
	for _, sf := range files {
		t.Run(sf.name, func(t *testing.T) {
			switch {
			case strings.HasPrefix(sf.name, "unused-"):
				// `-- raw` programs with a reserved field set: they are the
				// interpreter loader's to reject, not the assembler's. The
				// disassembler must refuse them too (it renders only what
				// the assembler can produce).
				if sf.f.Raw == nil || sf.f.HasAsm {
					t.Fatal("unused-* file without a raw section or with asm")
				}
				if _, err := Disassemble(sf.f.Raw); !errors.Is(err, ErrInvalidInstruction) {
					t.Fatalf("Disassemble = %v, want ErrInvalidInstruction", err)
				}
			case valid[sf.name]:
				if _, err := Assemble(sf.f.Asm); err != nil {
					t.Fatalf("valid program failed: %v", err)
				}
			default:
				sentinel, ok := want[sf.name]
				if !ok {
					t.Fatalf("new negative file: add it to the table with the error it must produce")
				}
				seen++
				_, err := Assemble(sf.f.Asm)
				if !errors.Is(err, sentinel) {
					t.Fatalf("Assemble = %v, want %v", err, sentinel)
				}
				var ae *Error
				if sentinel != ErrEmpty && (!errors.As(err, &ae) || ae.Line < 1) {
					t.Fatalf("error %v carries no line number", err)
				}
				t.Logf("%v", err)
			}
		})
	}
	if seen != len(want) {
		t.Errorf("checked %d malformed files, table has %d: a file is missing", seen, len(want))
	}
}

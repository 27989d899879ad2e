package interp_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/bpfasm"
	"github.com/bpfd-project/bpfd/pkg/bpfasm/datafile"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

// conformanceDir finds the bpf_conformance data: $BPF_CONFORMANCE_DIR, or
// ../shared/bpf_conformance relative to the repository root.
func conformanceDir(t *testing.T) string {
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

// conformanceConfig is the runner configuration the suite expects: helper 5
// exists (it returns r1).
var conformanceConfig = &interp.Config{
	Helpers: map[int32]interp.HelperFunc{
		5: func(_ *interp.VM, r1, _, _, _, _ uint64) (uint64, error) { return r1, nil },
	},
}

// runDataFile runs one .data file and returns a non-nil error describing
// the first disagreement with its expectations.
func runDataFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	f, err := datafile.Parse(b)
	if err != nil {
		return err
	}
	prog := f.Raw
	if f.HasAsm {
		asm, err := bpfasm.Assemble(f.Asm)
		if err != nil {
			if f.HasError {
				return nil // expected failure, reported by the assembler
			}
			return fmt.Errorf("assemble: %w", err)
		}
		if prog != nil && string(prog) != string(asm) {
			return fmt.Errorf("asm and raw sections disagree:\nasm % x\nraw % x", asm, prog)
		}
		prog = asm
	}
	p, err := interp.Load(prog, conformanceConfig)
	if err == nil {
		var r0 uint64
		r0, err = p.Run(f.Mem)
		if err == nil {
			switch {
			case f.HasError:
				return fmt.Errorf("expected error %q, got r0 = %#x", f.Error, r0)
			case !f.HasResult:
				return fmt.Errorf("file has neither result nor error")
			case r0 != f.Result:
				return fmt.Errorf("r0 = %#x, want %#x", r0, f.Result)
			}
			return nil
		}
	}
	if f.HasError {
		return nil
	}
	return fmt.Errorf("unexpected error: %w", err)
}

func TestConformance(t *testing.T) {
	dir := conformanceDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "tests", "*.data"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no tests in %s", dir)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".data"), func(t *testing.T) {
			if err := runDataFile(path); err != nil {
				t.Error(err)
			}
		})
	}
	t.Logf("%d conformance files", len(files))
}

// TestConformanceNegative checks the cases a correct runner must flag: every
// unused-*.data program must fail Load, and the harness must report the
// deliberately wrong expectation in incorrect_return_value_high_bits.data.
func TestConformanceNegative(t *testing.T) {
	dir := conformanceDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "negative", "unused-*.data"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no unused-*.data in %s/negative", dir)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".data"), func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := datafile.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if f.Raw == nil || !f.HasError {
				t.Fatalf("expected a raw program with an error section")
			}
			_, err = interp.Load(f.Raw, conformanceConfig)
			if !errors.Is(err, interp.ErrInvalidInsn) {
				t.Fatalf("Load(% x) = %v, want ErrInvalidInsn", f.Raw, err)
			}
		})
	}
	t.Logf("%d unused-field cases rejected", len(files))

	t.Run("incorrect_return_value_high_bits", func(t *testing.T) {
		err := runDataFile(filepath.Join(dir, "negative", "incorrect_return_value_high_bits.data"))
		if err == nil || !strings.Contains(err.Error(), "r0 = 0x8877665544332211, want 0x8977665544332211") {
			t.Fatalf("harness did not report the wrong expectation: %v", err)
		}
	})
	t.Run("error", func(t *testing.T) {
		// "or %r0, %r10" is valid: the file's expected error must be
		// reported as unmet.
		err := runDataFile(filepath.Join(dir, "negative", "error.data"))
		if err == nil || !strings.Contains(err.Error(), "expected error") {
			t.Fatalf("harness did not report the unmet error expectation: %v", err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := interp.Load(nil, nil); !errors.Is(err, interp.ErrProgramSize) {
			t.Fatalf("Load(empty) = %v, want ErrProgramSize", err)
		}
	})
}

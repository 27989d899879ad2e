package datafile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want File
	}{
		{
			name: "asm mem result",
			in:   "# Copyright\n# SPDX\n-- asm\nldxb %r0, [%r1+2]\nexit\n-- mem\naa bb 11\ncc # trailing comment\n-- result\n0x11\n",
			want: File{Asm: "ldxb %r0, [%r1+2]\nexit", HasAsm: true, AsmLine: 4, Mem: []byte{0xaa, 0xbb, 0x11, 0xcc}, Result: 0x11, HasResult: true},
		},
		{
			name: "raw words and result decimal",
			in:   "-- raw\n0x5566778800000018\n0x1122334400000000\n-- result\n42",
			want: File{Raw: []byte{0x18, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11}, Result: 42, HasResult: true},
		},
		{
			name: "raw bytes and empty error",
			in:   "# header\n-- raw\n07 00 01 00 01 00 00 00\n95 00 00 00 00 00 00 00\n-- error\n",
			want: File{Raw: []byte{7, 0, 1, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}, HasError: true},
		},
		{
			name: "error text and uppercase hex",
			in:   "-- asm\nexit\n-- mem\nFF ee\n-- error\nInvalid register",
			want: File{Asm: "exit", HasAsm: true, AsmLine: 2, Mem: []byte{0xff, 0xee}, Error: "Invalid register", HasError: true},
		},
		{
			name: "negative decimal result",
			in:   "-- result\n-1\n",
			want: File{Result: 0xffffffffffffffff, HasResult: true},
		},
		{
			name: "hex result mixed case",
			in:   "-- result\n0x10000000A",
			want: File{Result: 0x10000000a, HasResult: true},
		},
		{
			name: "unknown sections kept",
			in:   "-- c\nint x;\n-- asm\n\n-- Unknown directive\n-- error\nboom",
			want: File{HasAsm: true, AsmLine: 4, Error: "boom", HasError: true, Other: map[string]string{"c": "int x;", "Unknown directive": ""}},
		},
		{
			name: "no sections",
			in:   "# only comments\n",
			want: File{},
		},
		{
			name: "crlf",
			in:   "-- asm\r\nexit\r\n-- result\r\n0x1\r\n",
			want: File{Asm: "exit", HasAsm: true, AsmLine: 2, Result: 1, HasResult: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, got, &tt.want)
		})
	}
}

func checkFile(t *testing.T, got, want *File) {
	t.Helper()
	if got.Asm != want.Asm || got.HasAsm != want.HasAsm || got.AsmLine != want.AsmLine {
		t.Errorf("asm = %q/%v/%d, want %q/%v/%d", got.Asm, got.HasAsm, got.AsmLine, want.Asm, want.HasAsm, want.AsmLine)
	}
	if !bytes.Equal(got.Raw, want.Raw) || (got.Raw == nil) != (want.Raw == nil) {
		t.Errorf("raw = % x, want % x", got.Raw, want.Raw)
	}
	if !bytes.Equal(got.Mem, want.Mem) || (got.Mem == nil) != (want.Mem == nil) {
		t.Errorf("mem = % x, want % x", got.Mem, want.Mem)
	}
	if got.Result != want.Result || got.HasResult != want.HasResult {
		t.Errorf("result = %#x/%v, want %#x/%v", got.Result, got.HasResult, want.Result, want.HasResult)
	}
	if got.Error != want.Error || got.HasError != want.HasError {
		t.Errorf("error = %q/%v, want %q/%v", got.Error, got.HasError, want.Error, want.HasError)
	}
	if len(got.Other) != len(want.Other) {
		t.Errorf("other = %q, want %q", got.Other, want.Other)
	}
	for k, v := range want.Other {
		if got.Other[k] != v {
			t.Errorf("other[%q] = %q, want %q", k, got.Other[k], v)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"bad mem byte", "-- mem\n11 zz\n"},
		{"mem byte too wide", "-- mem\n112\n"},
		{"bad raw word", "-- raw\n0xzz\n"},
		{"bad raw byte", "-- raw\n07 00 0g\n"},
		{"two results", "-- result\n1 2\n"},
		{"empty result", "-- result\n# nothing\n"},
		{"bad result", "-- result\n0xg\n"},
		{"result overflow", "-- result\n18446744073709551616\n"},
		{"repeated section", "-- asm\nexit\n-- asm\nexit\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if !errors.Is(err, ErrFormat) || !errors.Is(err, unix.EINVAL) {
				t.Fatalf("Parse = %v, want ErrFormat", err)
			}
		})
	}
}

// TestSuite parses every file of the bpf_conformance suite.
func TestSuite(t *testing.T) {
	dir := os.Getenv("BPF_CONFORMANCE_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "bpf_conformance")
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*", "*.data"))
	if len(paths) == 0 {
		t.Skipf("bpf_conformance suite not found at %s (set BPF_CONFORMANCE_DIR)", dir)
	}
	var asm, raw, result, errs int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Parse(b)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if f.HasAsm {
			asm++
		}
		if f.Raw != nil {
			raw++
			if len(f.Raw)%8 != 0 {
				t.Errorf("%s: raw length %d", p, len(f.Raw))
			}
		}
		if f.HasResult {
			result++
		}
		if f.HasError {
			errs++
		}
		if filepath.Base(p) == "lddw.data" {
			want := []byte{0x18, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 0x95, 0, 0, 0, 0, 0, 0, 0}
			if !bytes.Equal(f.Raw, want) || f.Result != 0x1122334455667788 {
				t.Errorf("lddw.data: raw % x result %#x", f.Raw, f.Result)
			}
		}
	}
	t.Logf("%d files: %d asm, %d raw, %d result, %d error", len(paths), asm, raw, result, errs)
	// Counts from the README: 313 tests (326 asm sections overall, one file
	// has raw too), 45 unused-* raw files.
	if asm < 313+10 || raw < 46 {
		t.Errorf("too few sections parsed: %d asm, %d raw", asm, raw)
	}
}

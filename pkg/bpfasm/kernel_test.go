package bpfasm

import (
	"errors"
	"strings"
	"testing"
)

func TestKernelText(t *testing.T) {
	helpers := map[int32]string{1: "bpf_map_lookup_elem", 12: "bpf_tail_call"}
	ks := &KernelSyntax{HelperName: func(n int32) string { return helpers[n] }}
	tests := []struct {
		name string
		asm  string
		want string
	}{
		{name: "mov reg", asm: "mov %r6, %r1", want: "(bf) r6 = r1"},
		{name: "mov32 imm", asm: "mov32 %r0, -1", want: "(b4) w0 = -1"},
		{name: "add imm", asm: "add %r2, -4", want: "(07) r2 += -4"},
		{name: "arsh", asm: "arsh %r1, 3", want: "(c7) r1 s>>= 3"},
		{name: "neg", asm: "neg %r3", want: "(87) r3 = -r3"},
		{name: "be16", asm: "be16 %r1", want: "(dc) r1 = be16 r1"},
		{name: "le32", asm: "le32 %r1", want: "(d4) r1 = le32 r1"},
		{name: "ldxw", asm: "ldxw %r1, [%r6+16]", want: "(61) r1 = *(u32 *)(r6 +16)"},
		{name: "stw imm", asm: "stw [%r10-4], 0", want: "(62) *(u32 *)(r10 -4) = 0"},
		{name: "stxdw", asm: "stxdw [%r10-8], %r1", want: "(7b) *(u64 *)(r10 -8) = r1"},
		{name: "lock add", asm: "lock add [%r0+8], %r1", want: "(db) lock *(u64 *)(r0 +8) += r1"},
		{name: "jeq imm", asm: "jeq %r0, 0, +3", want: "(15) if r0 == 0x0 goto pc+3"},
		{name: "jsgt reg", asm: "jsgt %r1, %r2, -2", want: "(6d) if r1 s> r2 goto pc-2"},
		{name: "jlt32", asm: "jlt32 %r1, 5, +1", want: "(a6) if w1 < 0x5 goto pc+1"},
		{name: "ja", asm: "ja +12", want: "(05) goto pc+12"},
		{name: "call helper", asm: "call 1", want: "(85) call bpf_map_lookup_elem#1"},
		{name: "call unknown helper", asm: "call 99", want: "(85) call #99"},
		{name: "exit", asm: "exit", want: "(95) exit"},
		{name: "lddw", asm: "lddw %r1, 0x1122334455667788", want: "(18) r1 = 0x1122334455667788"},
		{name: "lddw map", asm: "lddw %r1, map_fd 7", want: "(18) r1 = map[id:7]"},
		{name: "lddw map value", asm: "lddw %r2, map_value 3, 16", want: "(18) r2 = map[id:3][0]+16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := Assemble(tc.asm)
			if err != nil {
				t.Fatalf("assemble %q: %v", tc.asm, err)
			}
			got, n, err := ks.KernelText(raw)
			if err != nil || got != tc.want || n != len(raw) {
				t.Errorf("KernelText(%q) = %q, %d, %v; want %q, %d", tc.asm, got, n, err, tc.want, len(raw))
			}
		})
	}
	if _, _, err := ks.KernelText([]byte{0x18, 0, 0, 0, 0, 0, 0, 0}); !errors.Is(err, ErrTruncated) {
		t.Errorf("lddw without its second slot: %v", err)
	}
	if got, n, err := ks.KernelText([]byte{0xff, 0, 0, 0, 0, 0, 0, 0}); err != nil || n != 8 || !strings.Contains(got, "unknown opcode ff") {
		t.Errorf("unknown opcode: %q %d %v", got, n, err)
	}
}

// FuzzKernelText: any bytes print without panicking, consuming 8 or 16
// bytes, or fail with ErrTruncated.
func FuzzKernelText(f *testing.F) {
	for _, s := range []string{"mov %r6, %r1\nexit", "lddw %r1, map_fd 1", "lock add [%r0+8], %r1", "call 1"} {
		raw, err := Assemble(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	ks := &KernelSyntax{}
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			text, n, err := ks.KernelText(b)
			if err != nil {
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("error %v", err)
				}
				return
			}
			if (n != 8 && n != 16) || text == "" {
				t.Fatalf("consumed %d, text %q", n, text)
			}
			b = b[n:]
		}
	})
}

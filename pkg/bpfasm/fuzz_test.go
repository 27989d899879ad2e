package bpfasm

import (
	"bytes"
	"testing"
)

// FuzzAssemble: Assemble never panics; whatever it accepts disassembles and
// reassembles to the same bytes. Seeds: testdata/fuzz/FuzzAssemble.
func FuzzAssemble(f *testing.F) {
	f.Add("mov %r0, 1\nexit")
	f.Add("l: jne %r1, 0x10, l\nlock fetch add32 [%r10-4], %r1\ncall local l\nexit")
	f.Fuzz(func(t *testing.T, src string) {
		b, err := Assemble(src)
		if err != nil {
			return
		}
		text, err := Disassemble(b)
		if err != nil {
			t.Fatalf("Assemble(%q) = % x, which Disassemble rejects: %v", src, b, err)
		}
		again, err := Assemble(text)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip of %q: % x -> %q -> % x, %v", src, b, text, again, err)
		}
	})
}

// FuzzDisassemble: Disassemble never panics on arbitrary bytes, and
// whatever it accepts reassembles to the same bytes. Seeds:
// testdata/fuzz/FuzzDisassemble.
func FuzzDisassemble(f *testing.F) {
	f.Add([]byte{0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		text, err := Disassemble(b)
		if err != nil {
			return
		}
		again, err := Assemble(text)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("% x -> %q -> % x, %v", b, text, again, err)
		}
	})
}

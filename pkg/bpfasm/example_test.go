package bpfasm_test

import (
	"fmt"

	"github.com/bpfd-project/bpfd/pkg/bpfasm"
)

func Example() {
	insns, err := bpfasm.Assemble(`
		# return 1 if the first byte of the input is 0x11
		ldxb %r2, [%r1+0]
		mov %r0, 0
		jne %r2, 0x11, out
		mov %r0, 1
	out:
		exit
	`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d bytes\n", len(insns))
	text, err := bpfasm.Disassemble(insns)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(text)
	// Output:
	// 40 bytes
	// ldxb %r2, [%r1+0]
	// mov %r0, 0
	// jne %r2, 17, +1
	// mov %r0, 1
	// exit
}

func ExampleAssemble_error() {
	_, err := bpfasm.Assemble("mov %r0, 1\nor %r0, %r50\nexit")
	fmt.Println(err)
	// Output:
	// bpfasm: line 2:9: invalid register "%r50" (want %r0-%r10) (in "or %r0, %r50")
}

func ExampleDisassembleOne() {
	raw := []byte{0x18, 0x01, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11}
	text, n, err := bpfasm.DisassembleOne(raw)
	fmt.Println(text, n, err)
	// Output:
	// lddw %r1, 0x1122334455667788 16 <nil>
}

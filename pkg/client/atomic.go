package client

import (
	"github.com/cilium/ebpf/asm"
)

// setAtomicImm sets the Constant of every BPF_ATOMIC instruction of insns
// to its operation (BPF_FETCH and the op, as the kernel's imm). cilium/ebpf
// v0.22 keeps the operation in the OpCode and its Marshal takes the
// immediate from Constant before moving the operation there, so without
// this every atomic instruction is encoded with imm 0 — a plain BPF_ADD: a
// fetch-add, and, or, xor, xchg or cmpxchg silently becomes an add that
// fetches nothing (and, loaded through a write-only handle, one the
// verifier rightly allows although the instruction meant reads the map).
// Marshal then encodes them right, for bpfd and for the kernel alike.
func setAtomicImm(insns asm.Instructions) {
	for i := range insns {
		if op := insns[i].OpCode.AtomicOp(); op != asm.InvalidAtomic {
			insns[i].Constant = int64(op >> 8)
		}
	}
}

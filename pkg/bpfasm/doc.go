// Package bpfasm assembles and disassembles eBPF programs written in the
// ubpf-style text syntax of the bpf_conformance suite, and is the syntax
// bpfctl accepts in .s files and the verifier log uses to show instructions.
//
// Assemble turns text into raw instructions (bpf_attr.insns layout: 8 bytes
// per slot, little-endian, lddw taking two slots); Disassemble does the
// reverse such that Assemble(Disassemble(b)) == b for every b Disassemble
// accepts. Parse, Decode, Encode and Instruction expose the steps.
//
// # Syntax
//
// One instruction per line. '#' starts a comment anywhere. A line may start
// with one or more labels "name:" (letters, digits, '_' and '.', not
// starting with a digit). Registers are %r0-%r10 ("r0" without '%' is also
// accepted). Numbers are decimal or 0x-prefixed hex, optionally signed. A
// 32-bit immediate must be a signed 32-bit decimal (-2147483648..2147483647)
// or a hex literal up to 0xffffffff, which is taken as its bit pattern.
// Memory operands are [%rN], [%rN+off] or [%rN-off] with off in the int16
// range. Jump targets are labels or signed literals "+N"/"-N" counted in
// slots from the next instruction. The label "exit", when not defined,
// names the first exit instruction (as in bpf_conformance).
//
//	ALU (64-bit; the "32" suffix selects the 32-bit class, "64" is accepted)
//	  add sub mul div sdiv or and lsh rsh mod smod xor mov arsh  %rD, %rS|imm
//	  neg %rD
//	  movsx832 movsx1632 movsx864 movsx1664 movsx3264  %rD, %rS
//	  le16 le32 le64 be16 be32 be64  %rD      (byte order conversion)
//	  bswap16 bswap32 bswap64  %rD            (alias: swap16 swap32 swap64)
//	Jumps ("32" suffix compares 32-bit subregisters)
//	  ja target            ja32 target        (ja32: 32-bit offset in imm)
//	  jeq jgt jge jlt jle jset jne jsgt jsge jslt jsle  %rD, %rS|imm, target
//	  call imm             call helper imm    (helper call)
//	  call local target    (pc-relative function call, src 1)
//	  call runtime imm     (kfunc call, src 2)
//	  call %rN             (callx: register in the dst field)
//	  exit
//	Loads and stores
//	  lddw %rD, imm64      lddw %rD, map_fd N      lddw %rD, map_value N, off
//	  ldxb ldxh ldxw ldxdw  %rD, [%rS+off]
//	  ldxsb ldxsh ldxsw     %rD, [%rS+off]    (sign-extending)
//	  stb sth stw stdw      [%rD+off], imm
//	  stxb stxh stxw stxdw  [%rD+off], %rS
//	Atomics (64-bit; "32" suffix on the operation for 32-bit)
//	  lock [fetch] add|and|or|xor[32]  [%rD+off], %rS
//	  lock xchg[32] | cmpxchg[32]      [%rD+off], %rS
//
// Legacy packet loads (LD_ABS/LD_IND), load-acquire/store-release, may_goto
// and lddw pseudo sources other than map_fd and map_value are not
// supported; Disassemble rejects them with ErrInvalidInstruction.
//
// All functions are pure and safe for concurrent use.
package bpfasm

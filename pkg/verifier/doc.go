// Package verifier decides whether an eBPF program is safe to run, before
// the interpreter (pkg/interp) ever sees it. It is pure analysis over raw
// instructions (bpf_attr.insns format, 8 bytes each, little-endian): it
// imports neither the interpreter nor the map implementation. The program
// layer (pkg/prog) describes everything outside the instructions in an Env:
// the context layout, the maps the program references (with the access the
// program's handles grant), the helper prototypes and the allowed return
// range.
//
// The analysis follows the Linux kernel verifier (kernel/bpf/verifier.c) in
// structure and in its error numbers:
//
//   - a control-flow pass: jump targets in range and not into the second
//     half of LD_IMM64, no unreachable instruction, no fall-through off the
//     end of a subprogram, no recursion, valid opcodes with zero reserved
//     fields (EINVAL);
//   - a path-sensitive abstract interpretation of every path: register
//     types (scalar, ctx, stack, map value, map value or null, packet,
//     packet end, packet meta, map pointer, function pointer), scalars as
//     tnums plus signed/unsigned 64-bit bounds, stack slots byte by byte
//     with register spill/fill, null checks, packet range proofs, helper
//     prototypes, bpf-to-bpf calls and bpf_loop callbacks (EACCES);
//   - state pruning at jump targets against fully explored, more general
//     states, exact-repeat detection for infinite loops (EINVAL) and a
//     complexity limit on processed instructions (E2BIG).
//
// Deliberate differences from the kernel (all on the strict side):
//
//   - Access modes: a helper that writes a map (update, delete) needs a
//     write-mode handle, one that reads it (lookup, tail call) a read-mode
//     handle; a store into a map value needs write mode, a load read mode
//     (MapInfo.Read/Write). The kernel lets a read-only fd load a writing
//     program; bpfd does not.
//   - A pointer may not leave the program in R0 ("R0 leaks addr as return
//     value"), as for an unprivileged kernel user; otherwise the rules are
//     those of a privileged loader (pointer subtraction, spilling pointers
//     into map values and so on are allowed, the interpreter's addresses
//     being sandboxed anyway).
//   - Scalars track 64-bit bounds and a tnum; 32-bit operations and JMP32
//     comparisons are exact when the operands fit in 32 bits and otherwise
//     widen to the full 32-bit range (the kernel keeps separate 32-bit
//     bounds). There is no precision or liveness tracking: pruning compares
//     every register and stack byte by range inclusion, which explores more
//     states than the kernel but never fewer.
//   - Variable-offset stack writes need every byte they may touch to be
//     initialised already; variable-offset stack pointers cannot be passed
//     to helpers as writable memory.
//   - Each frame has 512 bytes of stack; a call chain may be at most 8
//     frames deep and its combined stack (each frame rounded up to 32 bytes,
//     as the kernel does) at most 512 bytes.
//   - A bpf_loop callback is verified for zero, one and any number of
//     iterations (the callback is re-entered from its own exit state until
//     pruning converges), and must return 0 or 1.
//
// Verify is safe for concurrent use with distinct or shared Envs, as long as
// nobody mutates an Env while a call uses it.
package verifier

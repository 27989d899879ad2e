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
//     with register spill/fill, null checks (an ARRAY or PERCPU_ARRAY
//     lookup with a key known exactly and in range needs none, by kernel
//     6.18's rule: constkey.go), packet range proofs, helper
//     prototypes, bpf-to-bpf calls and bpf_loop and bpf_for_each_map_elem
//     callbacks (EACCES);
//   - state pruning at jump targets against fully explored, more general
//     states, exact-repeat detection for infinite loops (EINVAL) and a
//     complexity limit on processed instructions (E2BIG). Like the
//     kernel, pruning ignores registers no path reads before writing them
//     (liveness) and the values of scalars no safety check depends on
//     (the kernel's precision tracking; see below), so that a loop
//     counting or summing map lookups converges.
//
// Deliberate differences from the kernel (all on the strict side):
//
//   - Access modes: a helper that writes a map (update, delete) needs a
//     write-mode handle, one that reads it (lookup, tail call) a read-mode
//     handle; a store into a map value needs write mode, a load read mode
//     (MapInfo.Read/Write). The kernel lets a read-only fd load a writing
//     program; bpfd does not.
//   - Atomic read-modify-write on a map value needs write mode, and read
//     mode too when it fetches the old value.
//   - A pointer may not leave the program: not in R0 at exit ("R0 leaks
//     addr as return value") and not stored into a map value, the packet
//     or the context ("leaks addr into map"), as for an unprivileged kernel
//     user. Otherwise the rules are a privileged loader's: pointers may be
//     subtracted from each other and compared.
//   - Reading stack bytes never written is refused ("invalid read from
//     stack"), as older kernels and unprivileged loaders do.
//   - Scalars track 64-bit bounds and a tnum; 32-bit operations and JMP32
//     comparisons are exact when the operands fit in 32 bits and otherwise
//     widen to the full 32-bit range (the kernel keeps separate 32-bit
//     bounds). Division and modulo results are unknown, as in the kernel.
//     Copies of a scalar are linked, so a bounds check on one refines the
//     others. Only 8-byte aligned spills keep a register's type and
//     bounds; narrower stores make the bytes plain initialised data (a
//     narrow store at a slot's start is also recorded, as the kernel's
//     narrow spill, for the constant-key lookup rule alone).
//   - Liveness and precision are static, per subprogram, rather than the
//     kernel's backtracking along the explored path (relevance.go). A
//     register's scalar value is relevant where some path may carry it,
//     through ALU operations and moves, into a safety decision: a memory
//     access base, a value stored (the stack is always compared in full),
//     a conditional jump operand, pointer arithmetic (a 64-bit add or
//     subtract of two registers either of which a forward type pass says
//     may be a pointer), R1-R5 at any call, R6 and the index of LD_ABS/IND,
//     and R0 at exit unless it is the main program's and Env.Return is
//     nil. At a prune point, a register of the innermost frame that is not
//     live matches anything, and a live but irrelevant scalar matches any
//     scalar; caller frames, stack slots and pointers are compared in full.
//     Exact-repeat (infinite loop) detection still compares everything.
//     This is coarser than the kernel in places (every jump operand and
//     every stored value counts; a spilled scalar is always compared), so
//     some programs still explore more states than in the kernel.
//   - Legacy packet loads (LD_ABS/LD_IND, Env.LegacyPacket) are refused
//     inside a subprogram (the kernel allows them there only with BTF
//     function info, which bpfd's loader does not pass), and LD_IND needs a
//     scalar index: the kernel lets a privileged loader index the packet
//     with a pointer, which would leak address bits through the load's
//     success or failure.
//   - Up to 1024 recent states per prune point are tried for pruning, and
//     complete ones that keep failing to match are forgotten, as in the
//     kernel; exact repeats are looked for among the 64 most recent.
//   - Stack accesses must be aligned to their size, as in the kernel.
//   - Variable-offset stack writes need every byte they may touch to be
//     initialised already; variable-offset stack pointers cannot be passed
//     to helpers as writable memory.
//   - Each frame has 512 bytes of stack; a call chain may be at most 8
//     frames deep and its combined stack (each frame rounded up to 32 bytes,
//     as the kernel does) at most 512 bytes.
//   - A bpf_loop callback is verified for zero, one and any number of
//     iterations (the callback is re-entered from its own exit state until
//     pruning converges), and must return 0 or 1 (EINVAL otherwise, as
//     the kernel). A bpf_for_each_map_elem callback is verified the same
//     way with the kernel's arguments (map, read-only key, value, ctx).
//   - bpf_for_each_map_elem needs read access to the map (a write-only
//     handle or BPF_F_WRONLY_PROG map is refused, EACCES): the callback
//     would see every key. The kernel only refuses loads from the value.
//   - Besides the instruction limit, the memory held by saved states is
//     capped (128 MiB); a program exceeding it fails with E2BIG.
//   - bpf_spin_lock and bpf_spin_unlock (spinlock.go) follow kernel
//     6.18's rules; bpfd adds that the program's handle must be able to
//     read the map (EACCES otherwise): the lock serves readers of the
//     value, and a write-only handle or BPF_F_WRONLY_PROG map (which the
//     kernel refuses to give a lock at all) has none.
//
// Verify is safe for concurrent use with distinct or shared Envs, as long as
// nobody mutates an Env while a call uses it.
package verifier

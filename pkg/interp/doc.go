// Package interp is bpfd's eBPF instruction-set interpreter (RFC 9669).
//
// A program is decoded and checked once by Load into a compact form (one
// 16-byte slot per raw instruction, a dense opcode, operands unpacked, jump
// targets resolved, helpers bound); Run then executes it with a tight switch
// that performs no allocation, map lookup or interface call per instruction.
// A few two-instruction sequences compilers emit constantly (dst = src
// followed by an add, and, or shift of dst by an immediate; an add
// immediate followed by ja) run as one dispatch; the second instruction
// keeps its own slot, so jumps to it, the instruction budget, yields and
// faults behave exactly as for the two instructions (fuse.go).
//
// # Memory model
//
// Programs never see Go pointers. A pointer is a 64-bit value
//
//	region index << 32 | offset
//
// that names one of the regions the interpreter knows. Index 0 is never a
// region, so 0 and small scalars are never valid pointers. Every region has
// an Access: Read, Write, both or neither (a map value reached through a
// read-only, write-only or no-access handle). Every load, store and atomic
// is bounds-checked against its region and checked against its access
// (loads and fetching atomics need Read, stores and atomics Write); a bad
// access stops the run with a *Fault carrying the PC, the address, the size
// and the kind of access. Helpers reach program memory only through
// VM.Mem / VM.MemAccess, which apply the same checks, so no helper can read
// for a program what the program could not load (or write what it could
// not store). The regions are:
//
//   - the stack: one 512-byte region per call frame (MaxFrames of them);
//     r10 holds the top of the current frame's region and is read-only;
//   - static regions, fixed in Config.StaticRegions at Load: their pointers
//     (StaticPointer) are known before Load, stable across runs, and may be
//     embedded in LD_IMM64 immediates by a program layer (map values,
//     .data/.rodata);
//   - dynamic regions, added with VM.AddRegion by the caller before Run
//     (context, packet) or by helpers during a run (a hash-map value); they
//     are all dropped when Run returns.
//
// # Semantics
//
// Division by zero yields 0, modulo by zero leaves dst unchanged (truncated
// to 32 bits for 32-bit operations), shift amounts are masked, signed
// INT_MIN/-1 yields INT_MIN and INT_MIN%-1 yields 0, exactly as RFC 9669
// specifies. Memory is little-endian. Legacy packet access (BPF_ABS/BPF_IND)
// is accepted when Config.LegacyPacket is set and follows the Linux
// kernel's socket-filter semantics (VM.SetPacket): big-endian, offsets
// relative to skb->data or, through SKFNetOff/SKFLLOff, to the network or
// MAC header, and a load outside the packet ends the frame with r0 = 0.
// The kernel-only extensions (kfunc calls, load-acquire/store-release,
// may_goto) are rejected at Load.
//
// # Concurrency
//
// A *Program is immutable after Load and safe for concurrent use by any
// number of goroutines. A *VM holds the per-run state (registers, stacks,
// dynamic regions) and must be used by one goroutine at a time; reuse it:
// once warm, Run does not allocate. Static regions are shared by every run of
// a program: atomic instructions on them are atomic (sync/atomic) when the
// address is naturally aligned; plain loads and stores from concurrent runs
// race exactly as they do in the kernel.
package interp

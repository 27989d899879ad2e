package verifier

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Kernel limits the verifier applies.
const (
	// MaxStack is the stack size of one frame in bytes.
	MaxStack = 512
	// MaxCallFrames is the deepest bpf-to-bpf call chain, main included.
	MaxCallFrames = 8
	// DefaultMaxInsnsProcessed is the kernel's complexity limit.
	DefaultMaxInsnsProcessed = 1_000_000
	// MaxInsns is the largest program accepted, in instructions.
	MaxInsns = 1_000_000
	// maxPendingBranches mirrors BPF_COMPLEXITY_LIMIT_JMP_SEQ.
	maxPendingBranches = 8192
)

// Map types the verifier treats specially (kernel numbering).
const (
	MapTypeProgArray uint32 = 3
)

// FieldKind says what a load of a context field yields.
type FieldKind uint8

// Context field kinds.
const (
	// FieldScalar loads a number.
	FieldScalar FieldKind = iota
	// FieldPacketStart loads a pointer to the first packet byte (data).
	FieldPacketStart
	// FieldPacketEnd loads a pointer one past the last packet byte (data_end).
	FieldPacketEnd
	// FieldPacketMeta loads a pointer to the packet metadata (data_meta).
	FieldPacketMeta
	// FieldSockCommonOrNull loads a pointer to the socket the packet
	// belongs to, or NULL (__sk_buff.sk): the kernel's
	// PTR_TO_SOCK_COMMON_OR_NULL. It must be null-checked; then
	// Env.SockCommon says what may be read through it. Nothing may be
	// written through it and no arithmetic is allowed on it.
	FieldSockCommonOrNull
)

func (k FieldKind) String() string {
	switch k {
	case FieldScalar:
		return "scalar"
	case FieldPacketStart:
		return "pkt"
	case FieldPacketEnd:
		return "pkt_end"
	case FieldPacketMeta:
		return "pkt_meta"
	case FieldSockCommonOrNull:
		return "sock_common_or_null"
	}
	return fmt.Sprintf("FieldKind(%d)", uint8(k))
}

// ContextField is one accessible field of the program's context.
type ContextField struct {
	// Name is used in logs and in Result.CtxAccesses (e.g. "data_end").
	Name string
	// Off and Size locate the field in the context, in bytes.
	Off, Size uint32
	// Kind is what a load yields. Pointer kinds may only be loaded with
	// exactly Size bytes at Off and are never writable.
	Kind FieldKind
	// Write allows stores of scalars (STX) into the field.
	Write bool
	// Narrow allows loads (and, with Write, stores) of 1, 2 or 4 bytes
	// inside a scalar field at an offset aligned to the access size.
	Narrow bool
	// NarrowStarts, when not 0, limits narrow accesses to those starting
	// in the field's first NarrowStarts bytes (the kernel allows a narrow
	// load of bpf_sock.family only at its first byte, of dst_port in its
	// first two).
	NarrowStarts uint32
}

// ContextSpec describes the context R1 points to at program entry.
// Accesses outside the listed fields fail with EACCES
// "invalid bpf_context access off=%d size=%d".
type ContextSpec struct {
	// Name is the C type, for logs ("__sk_buff").
	Name string
	// Size is the context size in bytes.
	Size uint32
	// Fields lists the accessible fields; they must not overlap.
	Fields []ContextField
}

// MapInfo describes one map a program references. LD_IMM64 with src 1
// (BPF_PSEUDO_MAP_FD) or 2 (BPF_PSEUDO_MAP_VALUE) carries an index into
// Env.Maps in its imm field.
type MapInfo struct {
	// Type, KeySize, ValueSize, MaxEntries and Flags are the map's
	// creation attributes, kernel numbering.
	Type, KeySize, ValueSize, MaxEntries, Flags uint32
	// Read and Write are the access the program's handle grants, already
	// intersected with BPF_F_RDONLY_PROG/BPF_F_WRONLY_PROG by the caller.
	Read, Write bool
	// Name is used in logs.
	Name string
	// SpinLock, when not 0, is one more than the offset of the values'
	// struct bpf_spin_lock (maps.Spec.SpinLock): bpf_spin_lock takes a
	// pointer to exactly there, and no load or store may touch it
	// (spinlock.go).
	SpinLock uint32
	// Inner is the inner-map template of an ARRAY_OF_MAPS or
	// HASH_OF_MAPS: a lookup returns a map pointer of this shape
	// (maptypes.go). Nil otherwise.
	Inner *MapInfo
}

// ArgType constrains one helper argument, like the kernel's enum
// bpf_arg_type.
type ArgType uint8

// Helper argument types.
const (
	// ArgNone marks an unused argument (the register is not read).
	ArgNone ArgType = iota
	// ArgAnything accepts any initialised register.
	ArgAnything
	// ArgConstMapPtr needs a map pointer (LD_IMM64 src 1). It must precede
	// ArgPtrToMapKey/ArgPtrToMapValue arguments.
	ArgConstMapPtr
	// ArgPtrToMapKey needs readable, initialised memory of the map's key size.
	ArgPtrToMapKey
	// ArgPtrToMapValue needs readable, initialised memory of the map's value size.
	ArgPtrToMapValue
	// ArgPtrToMem needs readable initialised memory; its size is the next
	// argument, which must be ArgConstSize or ArgConstSizeOrZero.
	ArgPtrToMem
	// ArgPtrToUninitMem needs writable memory the helper fills; its size is
	// the next argument. The memory counts as initialised after the call.
	ArgPtrToUninitMem
	// ArgPtrToMemRW needs memory that is readable, initialised and
	// writable: the helper reads it and writes results back (the kernel's
	// ARG_PTR_TO_MEM | MEM_WRITE, as bpf_fib_lookup's params). Its size
	// is the next argument.
	ArgPtrToMemRW
	// ArgConstSize is a bounded size > 0 for the preceding memory argument.
	ArgConstSize
	// ArgConstSizeOrZero is a bounded size >= 0 for the preceding memory argument.
	ArgConstSizeOrZero
	// ArgPtrToCtx needs the unmodified context pointer.
	ArgPtrToCtx
	// ArgPtrToFunc needs a function pointer (LD_IMM64 src 4); the callback
	// is verified as bpf_loop's (see package doc).
	ArgPtrToFunc
	// ArgPtrToStackOrNull accepts a stack pointer or the scalar 0; it is
	// passed to the callback as its second argument.
	ArgPtrToStackOrNull
)

// RetType is a helper's return type.
type RetType uint8

// Helper return types.
const (
	// RetInteger returns an unknown scalar in R0.
	RetInteger RetType = iota
	// RetVoid leaves R0 uninitialised.
	RetVoid
	// RetMapValueOrNull returns a pointer to a value of the ArgConstMapPtr
	// map, or NULL; it must be null-checked before use.
	RetMapValueOrNull
)

// HelperProto is a helper's prototype.
type HelperProto struct {
	// Name is the kernel name without the bpf_ prefix ("map_lookup_elem").
	Name string
	// Args are the constraints on R1-R5.
	Args [5]ArgType
	// Ret is the type of R0 after the call.
	Ret RetType
	// MapRead and MapWrite are the access the call needs on the map passed
	// as ArgConstMapPtr (EACCES otherwise).
	MapRead, MapWrite bool
	// MapTypes, when not empty, lists the only map types the helper
	// accepts; otherwise any type but PROG_ARRAY is accepted.
	MapTypes []uint32
	// TailCall marks bpf_tail_call.
	TailCall bool
	// ChangesPacket marks helpers that may move the packet's bounds
	// (bpf_xdp_adjust_head and the like): after the call every packet
	// pointer, in registers and spilled, becomes an unknown scalar, as
	// the kernel's clear_all_pkt_pointers does for a privileged loader;
	// the program must load data and data_end from the context again.
	ChangesPacket bool
}

// ReturnRange is the inclusive range R0 must be in at program exit,
// compared as signed 64-bit numbers.
type ReturnRange struct {
	Min, Max int64
}

// LineInfo is the source line of an instruction, from BTF line info.
type LineInfo struct {
	File string
	Line int
	Text string
}

// Env describes everything a program may touch besides its instructions.
// The zero value is a program with an empty context, no maps and the
// default helpers.
type Env struct {
	// Context is the layout of what R1 points to at entry.
	Context ContextSpec
	// Maps are the maps LD_IMM64 pseudo instructions refer to by index.
	Maps []MapInfo
	// Helpers maps kernel helper numbers to prototypes. Nil means
	// KernelHelpers(); an empty non-nil map allows no helper.
	Helpers map[int32]*HelperProto
	// Return, when not nil, is the allowed R0 range at exit. R0 must always
	// be an initialised scalar.
	Return *ReturnRange
	// SockCommon lists what may be read through a non-null pointer a
	// FieldSockCommonOrNull field yields (struct bpf_sock, as the
	// kernel's bpf_sock_common_is_valid_access allows it); only
	// FieldScalar fields without Write make sense here.
	SockCommon ContextSpec
	// PacketWrite allows stores through packet pointers (XDP).
	PacketWrite bool
	// LegacyPacket allows BPF_LD ABS/IND packet loads (socket filters);
	// R6 must hold the context at those instructions.
	LegacyPacket bool
	// MaxInsnsProcessed is the complexity limit; 0 means
	// DefaultMaxInsnsProcessed.
	MaxInsnsProcessed int
	// LineInfo maps instruction indexes to source lines, printed with
	// the failing instruction.
	LineInfo map[int]LineInfo
	// Verbose adds a trace of every processed instruction with register
	// states to the log (like log_level 2). It slows verification down.
	Verbose bool
	// Yield, when not nil, is called every YieldEvery processed
	// instructions. It may block: the caller's scheduler (pkg/sched)
	// pauses a verification there to let other work run. A non-nil error
	// stops verification and is returned as is (e.g. the client that
	// asked has gone).
	Yield func() error
	// Charge, when not nil, is called each time the memory held by saved
	// verifier states grows past another ChargeStep bytes (with the bytes
	// newly held, a multiple of ChargeStep), so that the caller can
	// account it to whoever asked for the verification. The sum charged is
	// the high-water mark rounded up; it is never handed back during the
	// call (the caller releases it when Verify returns). A non-nil error
	// stops verification with ENOMEM, the error's text in the log.
	Charge func(bytes int) error
}

// YieldEvery is how many processed instructions pass between calls of
// Env.Yield.
const YieldEvery = 512

// ChargeStep is the granularity of Env.Charge.
const ChargeStep = 1 << 20

// CtxAccess is one instruction that accesses the context.
type CtxAccess struct {
	// Insn is the instruction index.
	Insn int
	// Field indexes Env.Context.Fields.
	Field int
	// Size is the access size in bytes.
	Size int
	// Kind is the field's kind (pointer kinds are what the program layer
	// rewrites into 64-bit loads from its shadow fields).
	Kind FieldKind
	// Write is true for stores.
	Write bool
}

// Result describes an accepted program.
type Result struct {
	// InsnsProcessed counts instructions symbolically executed.
	InsnsProcessed int
	// TotalStates is the number of states kept for pruning.
	TotalStates int
	// Subprogs are the start indexes of the subprograms; Subprogs[0] is 0.
	Subprogs []int
	// StackDepth is the max stack depth in bytes of each subprogram,
	// rounded up to 8.
	StackDepth []int
	// CtxAccesses lists every instruction that accesses the context,
	// ordered by index.
	CtxAccesses []CtxAccess
	// TailCalls is true if the program calls bpf_tail_call.
	TailCalls bool
	// Callbacks lists the subprogram starts used as callbacks (bpf_loop,
	// bpf_for_each_map_elem).
	Callbacks []int
	// Helpers lists, in increasing order, the helper numbers the program
	// calls on some verified path.
	Helpers []int32
	// Dead lists, in increasing order, the instructions no verified path
	// executes (code behind branches the verifier proved never taken, as
	// CO-RE guards leave). The kernel replaces them with traps; a program
	// layer should too, since they may hold what the interpreter refuses
	// (a poisoned CO-RE relocation).
	Dead []int
	// Log is a human summary (and a trace when Env.Verbose).
	Log string
}

// Error is a verification failure. It matches its errno with errors.Is
// (unix.EACCES for unsafe programs, unix.EINVAL for malformed ones,
// unix.E2BIG for too complex ones), and errno.Of maps it to that errno.
type Error struct {
	// Errno is what the kernel returns for the same problem.
	Errno unix.Errno
	// PC is the failing instruction index, or -1.
	PC int
	// Msg is the one-line reason.
	Msg string
	// Log names the instruction, disassembled, with the source line if
	// known, the register and stack state of the failing path, and Msg.
	Log string
}

// Error returns "verifier: insn PC: Msg".
func (e *Error) Error() string {
	if e.PC < 0 {
		return "verifier: " + e.Msg
	}
	return fmt.Sprintf("verifier: insn %d: %s", e.PC, e.Msg)
}

// Is reports whether target is e's errno.
func (e *Error) Is(target error) bool {
	t, ok := target.(unix.Errno)
	return ok && t == e.Errno
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

package interp

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Limits.
const (
	// InsnSize is the size of one raw instruction (struct bpf_insn).
	InsnSize = 8
	// MaxInsns is the largest program Load accepts, in raw instructions
	// (the kernel's BPF_COMPLEXITY_LIMIT_INSNS).
	MaxInsns = 1 << 20
	// MaxFrames is the deepest bpf-to-bpf call chain, counting the
	// program's own frame (the kernel's MAX_CALL_FRAMES).
	MaxFrames = 8
	// StackSize is the size of each frame's stack region.
	StackSize = 512
	// MaxStaticRegions is the most static regions a Program may have.
	MaxStaticRegions = 256
	// MaxRegionSize is the largest region: offsets are 32 bits.
	MaxRegionSize = 1<<32 - 1
	// MaxHelper bounds helper numbers in Config.Helpers.
	MaxHelper = 1 << 16
	// MaxTailCalls is how many tail calls one run may make (the kernel's
	// MAX_TAIL_CALL_CNT).
	MaxTailCalls = 33
)

// Region index space: 0 is null, then the stack frames, then the static
// regions, then the dynamic ones.
const (
	stackBase   = 1
	staticBase  = stackBase + MaxFrames
	dynamicBase = staticBase + MaxStaticRegions
)

// HelperFunc implements a helper called with BPF_CALL imm (or callx). It
// receives r1-r5 and returns the new r0. A non-nil error stops the run with
// a *Fault of code FaultHelper wrapping it. A helper may use vm.Mem to reach
// pointer arguments, vm.AddRegion to return pointers to new memory, vm.Context
// for the caller's per-run data, and vm.TailCall. Helpers run on the VM's
// goroutine; they must not keep slices returned by vm.Mem after returning.
type HelperFunc func(vm *VM, r1, r2, r3, r4, r5 uint64) (uint64, error)

// Region is memory a program may address. It is readable unless NoRead
// is set, and writable when Writable is: a write-only region (NoRead and
// Writable) is a map value reached through a write-only handle.
type Region struct {
	Data     []byte // len(Data) <= MaxRegionSize
	Writable bool
	NoRead   bool
}

// Config parameterises Load. The zero value (or nil) means no helpers, no
// static regions, strict LD_IMM64.
type Config struct {
	// Helpers maps kernel helper numbers (0 < n < MaxHelper) to their
	// implementations. A CALL of a number not present fails Load with
	// ErrUnknownHelper; callx of one fails the run with ErrBadCall.
	Helpers map[int32]HelperFunc
	// StaticRegions are addressable by every run of the program through
	// StaticPointer(i, off); their memory is shared by concurrent runs.
	StaticRegions []Region
	// LegacyPacket accepts the legacy packet loads BPF_LD | BPF_ABS and
	// BPF_LD | BPF_IND (8, 16 and 32 bits; socket filters). They read
	// the packet given to VM.SetPacket, with the kernel's semantics (see
	// SetPacket); without it they are rejected at Load.
	LegacyPacket bool
	// AllowPseudoImm64 accepts LD_IMM64 with a non-zero src field and
	// treats its 64-bit immediate literally. By default such instructions
	// are rejected: a program layer resolves pseudo forms (map fds, map
	// values) into plain values before Load.
	AllowPseudoImm64 bool
}

// StaticPointer returns the pointer value of offset off in static region i
// (an index into Config.StaticRegions). It is a pure function of (i, off),
// so a program layer can resolve pseudo LD_IMM64 instructions before Load.
// It returns 0 when i is out of range.
func StaticPointer(i int, off uint32) uint64 {
	if i < 0 || i >= MaxStaticRegions {
		return 0
	}
	return uint64(staticBase+i)<<32 | uint64(off)
}

// insn is one decoded instruction slot.
type insn struct {
	op  uint8
	dst uint8
	src uint8
	_   uint8
	off int32 // memory offset, or absolute jump/call target
	imm int64 // sign-extended imm, LD_IMM64 value, or helper number
}

// Program is a decoded, checked program. It is immutable and safe for
// concurrent use; run it with a VM.
type Program struct {
	insns   []insn // len = raw instruction count + 1 (opFallOff sentinel)
	helpers []HelperFunc
	static  []region
	vmPool  sync.Pool
}

// Len returns the number of raw instructions (LD_IMM64 counts as two).
func (p *Program) Len() int { return len(p.insns) - 1 }

// Load decodes raw little-endian instructions (bpf_attr.insns format) into a
// Program. It rejects, with a *LoadError wrapping ErrInvalidInsn,
// ErrUnknownHelper, ErrProgramSize or ErrConfig, anything that is not valid
// RFC 9669 (including non-zero reserved fields), writes to r10, jumps outside
// the program or into the middle of LD_IMM64, and calls of unregistered
// helpers. cfg may be nil.
func Load(raw []byte, cfg *Config) (*Program, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if len(raw) == 0 || len(raw)%InsnSize != 0 || len(raw)/InsnSize > MaxInsns {
		return nil, &LoadError{PC: -1, Err: ErrProgramSize, Reason: fmt.Sprintf("%d bytes", len(raw))}
	}
	p := &Program{}
	if len(cfg.StaticRegions) > MaxStaticRegions {
		return nil, &LoadError{PC: -1, Err: ErrConfig, Reason: fmt.Sprintf("%d static regions, at most %d", len(cfg.StaticRegions), MaxStaticRegions)}
	}
	for i, r := range cfg.StaticRegions {
		if uint64(len(r.Data)) > MaxRegionSize {
			return nil, &LoadError{PC: -1, Err: ErrConfig, Reason: fmt.Sprintf("static region %d too large", i)}
		}
		acc := Read
		if r.NoRead {
			acc = 0
		}
		if r.Writable {
			acc |= Write
		}
		p.static = append(p.static, newRegion(r.Data, acc))
	}
	maxHelper := int32(-1)
	for n := range cfg.Helpers {
		if n <= 0 || n >= MaxHelper || cfg.Helpers[n] == nil {
			return nil, &LoadError{PC: -1, Err: ErrConfig, Reason: fmt.Sprintf("helper number %d", n)}
		}
		maxHelper = max(maxHelper, n)
	}
	p.helpers = make([]HelperFunc, maxHelper+1)
	for n, f := range cfg.Helpers {
		p.helpers[n] = f
	}

	n := len(raw) / InsnSize
	p.insns = make([]insn, n+1)
	p.insns[n].op = opFallOff
	d := decoder{raw: raw, n: n, cfg: cfg, p: p}
	for pc := 0; pc < n; pc++ {
		skip, err := d.decode(pc)
		if err != nil {
			return nil, err
		}
		pc += skip
	}
	// Jump targets must be instruction starts.
	for pc := 0; pc < n; pc++ {
		in := &p.insns[pc]
		if isJump(in.op) && p.insns[in.off].op == opInvalid {
			return nil, &LoadError{PC: pc, Err: ErrInvalidInsn, Reason: fmt.Sprintf("jump into the middle of ld_imm64 at %d", in.off)}
		}
	}
	p.fuse()
	return p, nil
}

func isJump(op uint8) bool {
	return op == opJa || op == opCallLocal || (op >= opJeqK && op <= opJsle32X)
}

type decoder struct {
	raw []byte
	n   int
	cfg *Config
	p   *Program
}

func (d *decoder) errf(pc int, format string, args ...any) error {
	return &LoadError{PC: pc, Err: ErrInvalidInsn, Reason: fmt.Sprintf(format, args...)}
}

// decode decodes the instruction at pc and returns how many extra slots it
// used (1 for LD_IMM64).
func (d *decoder) decode(pc int) (int, error) {
	b := d.raw[pc*InsnSize : pc*InsnSize+InsnSize]
	code := b[0]
	dst := b[1] & 0x0f
	src := b[1] >> 4
	off := int16(binary.LittleEndian.Uint16(b[2:]))
	imm := int32(binary.LittleEndian.Uint32(b[4:]))
	out := &d.p.insns[pc]
	out.dst, out.src, out.off, out.imm = dst, src, int32(off), int64(imm)

	if dst > 10 || src > 10 {
		return 0, d.errf(pc, "opcode %#02x: invalid register r%d/r%d", code, dst, src)
	}
	// zero checks a list of fields that must be zero.
	type field struct {
		name string
		v    int64
	}
	zero := func(fs ...field) error {
		for _, f := range fs {
			if f.v != 0 {
				return d.errf(pc, "opcode %#02x: reserved field %s is %d", code, f.name, f.v)
			}
		}
		return nil
	}
	fSrc, fDst, fOff, fImm := field{"src", int64(src)}, field{"dst", int64(dst)}, field{"offset", int64(off)}, field{"imm", int64(imm)}
	writesDst := func() error {
		if dst == 10 {
			return d.errf(pc, "opcode %#02x: r10 is read-only", code)
		}
		return nil
	}
	target := func(rel int64) (int32, error) {
		t := int64(pc) + 1 + rel
		if t < 0 || t >= int64(d.n) {
			return 0, d.errf(pc, "jump target %d out of range [0, %d)", t, d.n)
		}
		return int32(t), nil
	}

	switch class := code & 0x07; class {
	case clsALU, clsALU64:
		is64 := class == clsALU64
		op := code & 0xf0
		x := code&srcX != 0
		if err := writesDst(); err != nil {
			return 0, err
		}
		switch op {
		case aluNEG:
			if x {
				return 0, d.errf(pc, "opcode %#02x: neg with register source", code)
			}
			if err := zero(fSrc, fOff, fImm); err != nil {
				return 0, err
			}
			out.op = opNeg32
			if is64 {
				out.op = opNeg64
			}
			return 0, nil
		case aluEND:
			if err := zero(fSrc, fOff); err != nil {
				return 0, err
			}
			if is64 && x {
				return 0, d.errf(pc, "opcode %#02x: reserved byte-swap form", code)
			}
			var ops [3]uint8
			if is64 || x { // BSWAP, or TO_BE
				ops = [3]uint8{opSwap16, opSwap32, opSwap64}
			} else { // TO_LE
				ops = [3]uint8{opLe16, opLe32, opLe64}
			}
			switch imm {
			case 16:
				out.op = ops[0]
			case 32:
				out.op = ops[1]
			case 64:
				out.op = ops[2]
			default:
				return 0, d.errf(pc, "opcode %#02x: byte swap width %d", code, imm)
			}
			return 0, nil
		}
		base := aluOps[op>>4]
		if base == 0 {
			return 0, d.errf(pc, "unknown ALU opcode %#02x", code)
		}
		if x {
			if err := zero(fImm); err != nil {
				return 0, err
			}
		} else if err := zero(fSrc); err != nil {
			return 0, err
		}
		switch {
		case off == 0:
		case off == 1 && (op == aluDIV || op == aluMOD):
			base += opSdiv64K - opDiv64K
		case x && op == aluMOV && (off == 8 || off == 16 || (off == 32 && is64)):
			switch {
			case is64 && off == 8:
				out.op = opMovsx8To64
			case is64 && off == 16:
				out.op = opMovsx16To64
			case is64:
				out.op = opMovsx32To64
			case off == 8:
				out.op = opMovsx8To32
			default:
				out.op = opMovsx16To32
			}
			return 0, nil
		default:
			return 0, d.errf(pc, "opcode %#02x: reserved field offset is %d", code, off)
		}
		if !is64 {
			if op == aluARSH {
				base = opArsh32K
			} else {
				base += alu32Delta
			}
		}
		if x {
			base++
		}
		out.op = base
		return 0, nil

	case clsJMP, clsJMP32:
		op := code & 0xf0
		x := code&srcX != 0
		switch op {
		case jmpJA:
			if x {
				return 0, d.errf(pc, "opcode %#02x: ja with register source", code)
			}
			rel := int64(off)
			if class == clsJMP32 { // gotol: 32-bit offset in imm
				if err := zero(fSrc, fDst, fOff); err != nil {
					return 0, err
				}
				rel = int64(imm)
			} else if err := zero(fSrc, fDst, fImm); err != nil {
				return 0, err
			}
			t, err := target(rel)
			if err != nil {
				return 0, err
			}
			out.op, out.off = opJa, t
			return 0, nil
		case jmpCALL:
			if class != clsJMP {
				return 0, d.errf(pc, "opcode %#02x: call in JMP32 class", code)
			}
			if x { // callx: register in dst
				if err := zero(fSrc, fOff, fImm); err != nil {
					return 0, err
				}
				out.op = opCallx
				return 0, nil
			}
			if err := zero(fDst, fOff); err != nil {
				return 0, err
			}
			switch src {
			case 0:
				if imm <= 0 || int(imm) >= len(d.p.helpers) || d.p.helpers[imm] == nil {
					return 0, &LoadError{PC: pc, Err: ErrUnknownHelper, Reason: fmt.Sprintf("helper %d is not available", imm)}
				}
				out.op = opCall
			case pseudoCall:
				t, err := target(int64(imm))
				if err != nil {
					return 0, err
				}
				out.op, out.off = opCallLocal, t
			default:
				return 0, d.errf(pc, "call with src %d (kfunc calls are not supported)", src)
			}
			return 0, nil
		case jmpEXIT:
			if class != clsJMP || x {
				return 0, d.errf(pc, "invalid exit opcode %#02x", code)
			}
			if err := zero(fSrc, fDst, fOff, fImm); err != nil {
				return 0, err
			}
			out.op = opExit
			return 0, nil
		}
		base := jmpOps[op>>4]
		if base == 0 {
			return 0, d.errf(pc, "unknown jump opcode %#02x", code)
		}
		if x {
			if err := zero(fImm); err != nil {
				return 0, err
			}
			base++
		} else if err := zero(fSrc); err != nil {
			return 0, err
		}
		if class == clsJMP32 {
			base += jmp32Delta
		}
		t, err := target(int64(off))
		if err != nil {
			return 0, err
		}
		out.op, out.off = base, t
		return 0, nil

	case clsLD:
		if mode := code & 0xe0; (mode == modeABS || mode == modeIND) && code&0x18 != sizeDW {
			if !d.cfg.LegacyPacket {
				return 0, d.errf(pc, "opcode %#02x: legacy packet access is not enabled", code)
			}
			if err := zero(fDst, fOff); err != nil {
				return 0, err
			}
			if mode == modeABS {
				if err := zero(fSrc); err != nil {
					return 0, err
				}
			}
			ops := [4]uint8{opLdAbsW, opLdAbsH, opLdAbsB}
			if mode == modeIND {
				ops = [4]uint8{opLdIndW, opLdIndH, opLdIndB}
			}
			out.op = ops[(code>>3)&3]
			return 0, nil
		}
		if code != clsLD|modeIMM|sizeDW {
			return 0, d.errf(pc, "opcode %#02x: only LD_IMM64 and legacy packet loads are supported in the LD class", code)
		}
		if err := writesDst(); err != nil {
			return 0, err
		}
		if err := zero(fOff); err != nil {
			return 0, err
		}
		if src != 0 && !d.cfg.AllowPseudoImm64 {
			return 0, d.errf(pc, "ld_imm64 with unresolved pseudo source %d", src)
		}
		if pc+1 >= d.n {
			return 0, d.errf(pc, "ld_imm64 truncated")
		}
		nb := d.raw[(pc+1)*InsnSize : (pc+2)*InsnSize]
		if nb[0] != 0 || nb[1] != 0 || nb[2] != 0 || nb[3] != 0 {
			return 0, d.errf(pc+1, "ld_imm64 second slot has non-zero opcode, registers or offset")
		}
		hi := binary.LittleEndian.Uint32(nb[4:])
		out.op = opLdImm64
		out.src = 0
		out.imm = int64(uint64(hi)<<32 | uint64(uint32(imm)))
		d.p.insns[pc+1] = insn{op: opInvalid}
		return 1, nil

	case clsLDX:
		if err := writesDst(); err != nil {
			return 0, err
		}
		if err := zero(fImm); err != nil {
			return 0, err
		}
		switch code & 0xe0 {
		case modeMEM:
			out.op = [4]uint8{opLdxW, opLdxH, opLdxB, opLdxDW}[(code>>3)&3]
		case modeMEMSX:
			if code&0x18 == sizeDW {
				return 0, d.errf(pc, "opcode %#02x: sign-extending 64-bit load", code)
			}
			out.op = [4]uint8{opLdxsW, opLdxsH, opLdxsB}[(code>>3)&3]
		default:
			return 0, d.errf(pc, "opcode %#02x: unsupported load mode", code)
		}
		return 0, nil

	case clsST:
		if code&0xe0 != modeMEM {
			return 0, d.errf(pc, "opcode %#02x: unsupported store mode", code)
		}
		if err := zero(fSrc); err != nil {
			return 0, err
		}
		out.op = [4]uint8{opStW, opStH, opStB, opStDW}[(code>>3)&3]
		return 0, nil

	case clsSTX:
		switch code & 0xe0 {
		case modeMEM:
			if err := zero(fImm); err != nil {
				return 0, err
			}
			out.op = [4]uint8{opStxW, opStxH, opStxB, opStxDW}[(code>>3)&3]
			return 0, nil
		case modeATOMIC:
		default:
			return 0, d.errf(pc, "opcode %#02x: unsupported store mode", code)
		}
		var base uint8
		switch code & 0x18 {
		case sizeW:
			base = opAtomAdd32
		case sizeDW:
			base = opAtomAdd64
		default:
			return 0, d.errf(pc, "opcode %#02x: atomic operations are 32 or 64 bits", code)
		}
		var rel uint8
		switch imm {
		case atomicADD, atomicOR, atomicAND, atomicXOR,
			atomicADD | atomicFetch, atomicOR | atomicFetch, atomicAND | atomicFetch, atomicXOR | atomicFetch:
			rel = [16]uint8{atomicOR >> 4: 1, atomicAND >> 4: 2, atomicXOR >> 4: 3}[(imm>>4)&15]
			if imm&atomicFetch != 0 {
				rel += 4
				if src == 10 {
					return 0, d.errf(pc, "atomic fetch into r10")
				}
			}
		case atomicXCHG:
			rel = opXchg32 - opAtomAdd32
			if src == 10 {
				return 0, d.errf(pc, "xchg into r10")
			}
		case atomicCMPXCHG:
			rel = opCmpxchg32 - opAtomAdd32
		default:
			return 0, d.errf(pc, "unknown atomic operation %#x", imm)
		}
		out.op = base + rel
		return 0, nil
	}
	return 0, d.errf(pc, "unknown opcode %#02x", code)
}

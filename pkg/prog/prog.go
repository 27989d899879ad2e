package prog

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/percpu"
)

// Limits.
const (
	// MaxInsns is the most instructions a program may have (the kernel's
	// BPF_COMPLEXITY_LIMIT_INSNS for privileged loaders).
	MaxInsns = 1 << 20
	// MaxMaps is the most maps one program may reference
	// (MAX_USED_MAPS).
	MaxMaps = 64
)

// Errors.
var (
	ErrInvalid     = errno.New(unix.EINVAL, "invalid program")
	ErrType        = errno.New(unix.EINVAL, "unknown program type")
	ErrTooManyMaps = errno.New(unix.E2BIG, "program references too many maps")
	ErrDataSize    = errno.New(unix.EINVAL, "test run data size invalid for this program type")
	ErrCtxSize     = errno.New(unix.EINVAL, "test run context invalid for this program type")
	ErrNoRun       = errno.New(unix.EOPNOTSUPP, "program type cannot be test run this way")
)

// MapRef is a map a program references, with the access the program's
// loader granted through its handle (DESIGN.md: access modes flow into
// programs). Load folds the map's BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG
// flags in.
type MapRef struct {
	Map   maps.Map
	Read  bool // lookups, loads from values
	Write bool // update, delete, stores into values
	Name  string
}

// Spec describes a program to load. It is plain data.
type Spec struct {
	Type Type
	// Insns are raw instructions (bpf_attr.insns format). LD_IMM64 with
	// src 1 (BPF_PSEUDO_MAP_FD) names Maps[imm]; src 2
	// (BPF_PSEUDO_MAP_VALUE) names Maps[imm] at the offset in the second
	// imm; src 4 (BPF_PSEUDO_FUNC) names a subprogram by relative offset.
	Insns   []byte
	Maps    []MapRef
	License string
	Name    string
	// LineInfo maps instruction indexes to source lines, for the log.
	LineInfo map[int]string
	// LogLevel > 0 keeps the verifier's log of a successful load too.
	LogLevel uint32
	// AttachType is the kernel's expected_attach_type (enum
	// bpf_attach_type): for XDP, AttachXDPDevMap or AttachXDPCPUMap
	// marks a program for a device or CPU map (it cannot be test run;
	// a devmap program may read egress_ifindex). 0 means none.
	AttachType uint32
}

// TraceFunc receives bpf_trace_printk output of program name; it is called
// on the running goroutine and must not block.
type TraceFunc func(name, msg string)

// Env is what programs reach outside themselves. The zero value works:
// no tail-call targets, trace output dropped.
type Env struct {
	// Programs resolves a program id stored in a PROG_ARRAY (tail calls).
	Programs func(id uint32) *Program
	// Maps resolves a map id stored in a map of maps (ARRAY_OF_MAPS,
	// HASH_OF_MAPS) when a program looks it up; nil, or a nil result,
	// makes the lookup return NULL. The map must stay usable while the
	// invocation that got it runs (closing a map waits for invocations
	// on its pool).
	Maps func(id uint32) maps.Map
	// Trace receives bpf_trace_printk output, already rate-limited.
	Trace TraceFunc
	// Pool is the CPU slot pool invocations run on (package percpu); nil
	// means percpu.Default(). It must be the pool of the maps the
	// program uses.
	Pool *percpu.Pool
	// Yield and Charge are passed to the verifier while Load verifies
	// the program (see verifier.Env) and not kept afterwards.
	Yield  func() error
	Charge func(bytes int) error
}

// Program is a verified, loaded program. It is immutable and safe for
// concurrent runs.
type Program struct {
	typ      Type
	attach   uint32
	name     string
	license  string
	insns    []byte // as loaded (pseudo instructions unresolved), for dumps
	lineInfo map[int]string
	refs     []MapRef
	code     *interp.Program
	env      Env
	log      string
	trace    *rateLimiter
	vms      sync.Pool
	ctxSize  int
	// slots has, per map reference, what helpers need on every call,
	// so they make no interface call or map lookup for it.
	slots []mapSlot
}

// mapSlot is a map reference's run-time facts.
type mapSlot struct {
	keySize, valueSize int
	maxEntries         uint32
	static             int    // static region of an array's values, or -1
	stride             uint64 // array: bytes between elements
	percpu             bool   // per-CPU array: add cpu*valStride
	valStride          uint64 // per-CPU array: bytes between CPUs' values
	outer              bool   // a map of maps: lookups return inner maps
	// hash is the map when it is a hash-family *maps.Hash (hash, LRU
	// hash, their per-CPU forms): lookups call it directly.
	hash *maps.Hash
}

// Type returns the program type.
func (p *Program) Type() Type { return p.typ }

// AttachType returns the expected attach type the program was loaded
// with (0: none).
func (p *Program) AttachType() uint32 { return p.attach }

// Name returns the program name.
func (p *Program) Name() string { return p.name }

// License returns the license the program was loaded with.
func (p *Program) License() string { return p.license }

// Insns returns the instructions as loaded (map references still naming
// the loader's indexes). The slice must not be modified.
func (p *Program) Insns() []byte { return p.insns }

// LineInfo returns the source lines by instruction index (may be nil).
func (p *Program) LineInfo() map[int]string { return p.lineInfo }

// Maps returns the maps the program references.
func (p *Program) Maps() []MapRef { return p.refs }

// Log returns the verifier log kept at load (Spec.LogLevel > 0).
func (p *Program) Log() string { return p.log }

// Pointer values that the program layer hands programs for things that are
// not memory. Their high word is a region index the interpreter never
// hands out, so any load or store through them faults.
const (
	mapPtrTag  = uint64(0xfffffffe) << 32
	funcPtrTag = uint64(0xfffffffd) << 32
	tagMask    = uint64(0xffffffff) << 32
)

// Load verifies spec and prepares it to run. On a verifier refusal it
// returns a *VerifierError (EACCES or EINVAL, E2BIG for a program too
// complex) whose log names the instruction; other failures return
// ErrInvalid, ErrType or ErrTooManyMaps.
func Load(spec *Spec, env *Env) (*Program, error) {
	if spec.Type != SocketFilter && spec.Type != XDP && spec.Type != Seccomp {
		return nil, fmt.Errorf("%w %d", ErrType, uint32(spec.Type))
	}
	switch {
	case spec.AttachType == 0:
	case spec.Type == XDP && (spec.AttachType == AttachXDP || spec.AttachType == AttachXDPDevMap || spec.AttachType == AttachXDPCPUMap):
	default:
		return nil, fmt.Errorf("%w: expected attach type %d for %v", ErrInvalid, spec.AttachType, spec.Type)
	}
	if len(spec.Insns) == 0 || len(spec.Insns)%8 != 0 || len(spec.Insns)/8 > MaxInsns {
		return nil, fmt.Errorf("%w: %d bytes of instructions", ErrInvalid, len(spec.Insns))
	}
	if len(spec.Maps) > MaxMaps {
		return nil, ErrTooManyMaps
	}
	refs := make([]MapRef, len(spec.Maps))
	for i, r := range spec.Maps {
		if r.Map == nil {
			return nil, fmt.Errorf("%w: map %d is nil", ErrInvalid, i)
		}
		f := r.Map.Spec().Flags
		r.Read = r.Read && f&maps.FlagWronlyProg == 0
		r.Write = r.Write && f&maps.FlagRdonlyProg == 0
		if r.Name == "" {
			r.Name = r.Map.Spec().Name
		}
		refs[i] = r
	}
	p := &Program{
		typ:      spec.Type,
		attach:   spec.AttachType,
		name:     spec.Name,
		license:  spec.License,
		insns:    append([]byte(nil), spec.Insns...),
		lineInfo: spec.LineInfo,
		refs:     refs,
		trace:    newRateLimiter(),
	}
	var hooks Env
	if env != nil {
		p.env = *env
		hooks = *env
		p.env.Yield, p.env.Charge = nil, nil
	}
	vr, err := verify(spec, refs, hooks.Yield, hooks.Charge)
	if err != nil {
		return nil, err
	}
	if spec.LogLevel > 0 {
		p.log = vr.log
	}
	code, statics, err := p.resolve(vr)
	if err != nil {
		return nil, err
	}
	p.code, err = interp.Load(code, &interp.Config{
		Helpers:       p.helperTable(),
		StaticRegions: statics,
		LegacyPacket:  p.typ == SocketFilter,
	})
	if err != nil {
		// The verifier accepted what the interpreter refuses: a bug in
		// one of them; refuse the program rather than run it.
		return nil, fmt.Errorf("%w: interpreter refused verified program: %v", ErrInvalid, err)
	}
	switch p.typ {
	case SocketFilter:
		p.ctxSize = skbSize
	case XDP:
		p.ctxSize = xdpSize
	case Seccomp:
		p.ctxSize = SeccompDataSize
	}
	return p, nil
}

// resolve rewrites the verified program for the interpreter: pseudo
// LD_IMM64 become tagged map pointers, static-region pointers and
// function pointers; context loads of packet pointers become 64-bit loads
// of the shadow fields that follow the context.
func (p *Program) resolve(vr *verified) ([]byte, []interp.Region, error) {
	code := append([]byte(nil), p.insns...)
	// Like the kernel's sanitize_dead_code: instructions no path runs
	// become "ja -1" (they may hold a poisoned CO-RE relocation the
	// interpreter would refuse).
	for _, pc := range vr.dead {
		copy(code[pc*8:pc*8+8], []byte{0x05, 0, 0xff, 0xff, 0, 0, 0, 0})
	}
	var statics []interp.Region
	staticOf := make(map[int]int) // map index -> static region index
	arrayRegion := func(i int) (int, bool) {
		if s, ok := staticOf[i]; ok {
			return s, true
		}
		a, ok := p.refs[i].Map.(*maps.Array)
		if !ok || len(statics) >= interp.MaxStaticRegions {
			return 0, false
		}
		mem, _ := a.Values()
		statics = append(statics, interp.Region{Data: mem, Writable: p.refs[i].Write, NoRead: !p.refs[i].Read})
		staticOf[i] = len(statics) - 1
		return len(statics) - 1, true
	}
	n := len(code) / 8
	for pc := 0; pc < n; pc++ {
		ins := code[pc*8 : pc*8+8]
		if ins[0] != 0x18 || pc+1 >= n {
			continue
		}
		src := ins[1] >> 4
		imm := binary.LittleEndian.Uint32(ins[4:])
		imm2 := binary.LittleEndian.Uint32(code[(pc+1)*8+4:])
		var v uint64
		switch src {
		case 0:
			pc++
			continue
		case 1: // BPF_PSEUDO_MAP_FD
			v = mapPtrTag | uint64(imm)
		case 2: // BPF_PSEUDO_MAP_VALUE
			if p.refs[imm].Map.Spec().Type != maps.TypeArray {
				return nil, nil, fmt.Errorf("%w: insn %d: direct value access needs an array map", ErrInvalid, pc)
			}
			s, ok := arrayRegion(int(imm))
			if !ok {
				return nil, nil, fmt.Errorf("%w: insn %d: direct value access needs an array map", ErrInvalid, pc)
			}
			v = interp.StaticPointer(s, imm2)
		case 4: // BPF_PSEUDO_FUNC
			v = funcPtrTag | uint64(int64(pc)+1+int64(int32(imm)))
		default:
			return nil, nil, fmt.Errorf("%w: insn %d: unsupported ld_imm64 src %d", ErrInvalid, pc, src)
		}
		ins[1] &= 0x0f
		binary.LittleEndian.PutUint32(ins[4:], uint32(v))
		binary.LittleEndian.PutUint32(code[(pc+1)*8+4:], uint32(v>>32))
		pc++
	}
	for i := range p.refs {
		if _, ok := p.refs[i].Map.(*maps.Array); ok {
			arrayRegion(i)
		}
	}
	if err := p.resolveMapRegions(&statics, staticOf); err != nil {
		return nil, nil, err
	}
	for _, nl := range vr.narrow {
		ins := code[nl.pc*8 : nl.pc*8+8]
		sz := map[int]byte{1: 0x10, 2: 0x08, 4: 0x00}[nl.size]
		ins[0] = ins[0]&^0x18 | sz
		binary.LittleEndian.PutUint16(ins[2:], uint16(nl.off))
	}
	for _, cl := range vr.ctxLoads {
		ins := code[cl.pc*8 : cl.pc*8+8]
		// ldxw dst, [src+off] -> ldxdw dst, [src+shadow]
		ins[0] = 0x79
		binary.LittleEndian.PutUint16(ins[2:], uint16(cl.shadowOff))
	}
	p.slots = make([]mapSlot, len(p.refs))
	for i, r := range p.refs {
		sp := r.Map.Spec()
		sl := mapSlot{keySize: int(sp.KeySize), valueSize: int(sp.ValueSize), maxEntries: sp.MaxEntries, static: -1}
		if st, ok := staticOf[i]; ok {
			sl.static = st
		}
		sl.outer = sp.Type == maps.TypeArrayOfMaps || sp.Type == maps.TypeHashOfMaps
		sl.hash, _ = r.Map.(*maps.Hash)
		if a, ok := r.Map.(*maps.Array); ok && sl.static >= 0 {
			_, sl.stride = a.Values()
			if sp.PerCPU() {
				sl.percpu = true
				sl.valStride = (uint64(sp.ValueSize) + 7) &^ 7
			}
		}
		p.slots[i] = sl
	}
	return code, statics, nil
}

// access is the interpreter access of the map's memory (values, direct
// value pointers) for a program holding r.
func (r *MapRef) access() interp.Access {
	var a interp.Access
	if r.Read {
		a |= interp.Read
	}
	if r.Write {
		a |= interp.Write
	}
	return a
}

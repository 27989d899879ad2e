package interp

import (
	"bytes"
	"fmt"
)

// Defaults for VMConfig.
const (
	// DefaultBudget is the default instruction budget of one run: 16 Mi
	// instructions, a few tens of milliseconds of interpretation, enough for
	// a byte loop over a megabyte.
	DefaultBudget = 1 << 24
	// DefaultMaxRegions is the default cap on dynamic regions per run.
	DefaultMaxRegions = 1024
)

// VMConfig parameterises NewVM; nil or zero fields mean the defaults.
type VMConfig struct {
	// Budget is the most instructions one Run may execute, tail calls and
	// bpf-to-bpf calls included; more stops the run with ErrBudget.
	Budget uint64
	// MaxRegions caps the dynamic regions (AddRegion) alive in one run,
	// those the caller adds before Run included; more fails with
	// ErrRegionLimit.
	MaxRegions int
}

// region is one addressable memory range. r and w are the same memory, or
// nil when the program may not read (r) or write (w) it: a load checks its
// bounds against r, a store against w, so a mode check costs nothing
// beyond the bounds check. n is the length either way, for fault
// classification.
type region struct {
	r, w []byte
	n    uint64
}

// newRegion builds the region of buf with access acc.
func newRegion(buf []byte, acc Access) region {
	rg := region{n: uint64(len(buf))}
	if acc&Read != 0 {
		rg.r = buf
	}
	if acc&Write != 0 {
		rg.w = buf
	}
	return rg
}

// Access is what a program (or a helper on its behalf) may do with a
// region: Read, Write, both, or neither (0).
type Access uint8

// Access bits.
const (
	Read Access = 1 << iota
	Write
	ReadWrite = Read | Write
)

type frame struct {
	ret            int
	r6, r7, r8, r9 uint64
}

// VM is the per-run state of the interpreter: registers, the stack frames
// and the dynamic regions. A VM runs one program at a time and is not safe
// for concurrent use; give each goroutine its own, and reuse it: once warm,
// Run does not allocate. Different VMs may run the same *Program
// concurrently.
type VM struct {
	stack [MaxFrames * StackSize]byte // first: 8-byte aligned

	// Context is free for the caller: helpers read it through the VM. The
	// VM never touches it; it survives across runs until the caller
	// changes it.
	Context any

	budget  uint64
	maxDyn  int
	regions []region // len dynamicBase+dynamic count, cap dynamicBase+maxDyn
	frames  [MaxFrames]frame
	prog    *Program // program whose static regions are installed
	nstatic int

	pc        int      // pc of the instruction calling a helper
	frame     int      // frame of the instruction calling a helper
	nested    int      // VM.Call invocations under way
	cur       *Program // program running now (changes on tail calls)
	tail      *Program // pending tail call, set by TailCall
	tailCalls int
	left      uint64 // budget left when the last run stopped
	running   bool
	// yield (SetYield) is called every YieldChunk instructions of a run;
	// reserve is the budget held back from left until the next chunk.
	yield   func() error
	reserve uint64

	// Legacy packet access (SetPacket).
	pkt     []byte
	pktData int // offset of skb->data in pkt
	pktNet  int // offset of the network header in pkt
	pktMac  int // offset of the MAC header in pkt, -1 if none
}

// NewVM returns a VM; cfg may be nil.
func NewVM(cfg *VMConfig) *VM {
	vm := &VM{budget: DefaultBudget, maxDyn: DefaultMaxRegions}
	if cfg != nil {
		if cfg.Budget != 0 {
			vm.budget = cfg.Budget
		}
		if cfg.MaxRegions > 0 {
			vm.maxDyn = cfg.MaxRegions
		}
	}
	// The table grows on demand up to maxDyn (the run loop reloads it
	// after every helper call); a warm VM keeps its capacity.
	vm.regions = make([]region, dynamicBase, dynamicBase+min(vm.maxDyn, 64))
	for i := range MaxFrames {
		vm.regions[stackBase+i] = newRegion(vm.stack[i*StackSize:(i+1)*StackSize:(i+1)*StackSize], ReadWrite)
	}
	return vm
}

// stackTop returns r10 for frame f.
func stackTop(f int) uint64 { return uint64(stackBase+f)<<32 | StackSize }

// Executed returns how many instructions the last Run executed.
func (vm *VM) Executed() uint64 { return vm.budget - vm.left - vm.reserve }

// YieldChunk is how many instructions a run executes between calls of the
// function set with SetYield.
const YieldChunk = 1 << 16

// SetYield makes the VM call f (nil: nothing) every YieldChunk
// instructions of each run, from the goroutine running it: f may block
// (a scheduler giving the CPU to other work, pkg/sched), and a non-nil
// error stops the run with a FaultBudget fault wrapping it. It costs the
// run loop nothing: the instruction budget is handed out in chunks.
// Not safe to call while the VM runs.
func (vm *VM) SetYield(f func() error) { vm.yield = f }

// AddRegion makes buf addressable by the program, readable and (when
// writable) writable, and returns the pointer to its first byte; it is
// AddRegionAccess with Read or ReadWrite.
func (vm *VM) AddRegion(buf []byte, writable bool) (uint64, error) {
	if writable {
		return vm.AddRegionAccess(buf, ReadWrite)
	}
	return vm.AddRegionAccess(buf, Read)
}

// AddRegionAccess makes buf addressable by the program with access acc
// and returns the pointer to its first byte. Loads (and helpers reading
// through Mem) need Read, stores, atomics (and helpers writing) need
// Write: a region without Read is write-only (a map value reached
// through a write-only handle), one with neither can only be passed
// around. Before Run it passes context or packet memory; from a helper it
// hands the program new memory (e.g. a map value). Regions are dropped
// when Run returns; the VM keeps buf only until then, and never copies
// it. It fails with ErrRegionLimit when the VM already holds
// VMConfig.MaxRegions dynamic regions, and with ErrOutOfBounds when buf
// is larger than MaxRegionSize.
func (vm *VM) AddRegionAccess(buf []byte, acc Access) (uint64, error) {
	if uint64(len(buf)) > MaxRegionSize {
		return 0, &Fault{Code: FaultOutOfBounds, PC: vm.pc, Size: len(buf)}
	}
	if len(vm.regions)-dynamicBase >= vm.maxDyn {
		return 0, &Fault{Code: FaultRegionLimit, PC: vm.pc}
	}
	vm.regions = append(vm.regions, newRegion(buf, acc))
	return uint64(len(vm.regions)-1) << 32, nil
}

// Mem is the one accessor through which helpers reach program memory: it
// translates a program pointer into the size bytes it designates,
// checking the region's access like a load (write false: the helper reads
// them) or a store (write true: the helper writes them) does. Every
// helper that reads or writes memory on a program's behalf must use it
// (or MemAccess), so that a program cannot make a helper read what it may
// not load, or write what it may not store (a map value through a
// write-only or read-only handle). It fails with a *Fault
// (ErrOutOfBounds; ErrReadOnly for a write into a region without Write;
// ErrWriteOnly for a read of a region without Read) unless [ptr,
// ptr+size) lies inside one region. The slice aliases the region: it is
// valid until the helper returns.
func (vm *VM) Mem(ptr uint64, size int, write bool) ([]byte, error) {
	// The common case, inlined into the helper: inside a region that
	// allows the access. Anything else (a fault to classify) goes the
	// long way.
	if i, o := ptr>>32, ptr&0xffffffff; i < uint64(len(vm.regions)) && size >= 0 {
		r := &vm.regions[i]
		b := r.r
		if write {
			b = r.w
		}
		if n := o + uint64(size); b != nil && n <= uint64(len(b)) {
			return b[o:n:n], nil
		}
	}
	return vm.memSlow(ptr, size, write)
}

func (vm *VM) memSlow(ptr uint64, size int, write bool) ([]byte, error) {
	if write {
		return vm.MemAccess(ptr, size, Write)
	}
	return vm.MemAccess(ptr, size, Read)
}

// MemAccess is Mem for an access acc that may be both Read and Write (a
// helper that updates memory in place). acc 0 only checks the bounds.
func (vm *VM) MemAccess(ptr uint64, size int, acc Access) ([]byte, error) {
	if size < 0 {
		return nil, &Fault{Code: FaultOutOfBounds, PC: vm.pc, Addr: ptr, Size: size, Write: acc&Write != 0}
	}
	idx, o := ptr>>32, ptr&0xffffffff
	if idx == 0 || idx >= uint64(len(vm.regions)) || o+uint64(size) > vm.regions[idx].n {
		return nil, &Fault{Code: FaultOutOfBounds, PC: vm.pc, Addr: ptr, Size: size, Write: acc&Write != 0}
	}
	r := &vm.regions[idx]
	buf := r.r
	if acc&Write != 0 {
		if r.w == nil {
			return nil, &Fault{Code: FaultReadOnly, PC: vm.pc, Addr: ptr, Size: size, Write: true}
		}
		buf = r.w
	}
	if acc&Read != 0 && r.r == nil {
		return nil, &Fault{Code: FaultWriteOnly, PC: vm.pc, Addr: ptr, Size: size}
	}
	if buf == nil {
		buf = r.w
	}
	if buf == nil {
		return nil, nil // acc 0 on a region with no access: bounds only
	}
	return buf[o : o+uint64(size) : o+uint64(size)], nil
}

// Offsets of the kernel's ancillary packet areas for legacy packet loads
// (linux/filter.h): an offset at or above SKFNetOff is relative to the
// network header, one at or above SKFLLOff to the link-layer (MAC) header.
const (
	SKFNetOff = -0x100000
	SKFLLOff  = -0x200000
)

// SetPacket gives the legacy packet loads (Config.LegacyPacket) of the
// next runs their packet: pkt holds it from its first byte, data is the
// offset of what the program sees as its start (skb->data), net and mac
// the offsets of the network and MAC headers (mac -1: none). As in the
// kernel, a load at offset k >= 0 reads pkt[data+k:], SKFNetOff+j reads
// pkt[net+j:], SKFLLOff+j reads pkt[mac+j:]; values are big-endian and
// zero-extended; a load any byte of which is outside pkt ends the current
// frame with r0 = 0, as the kernel's rewrite of these instructions does.
// The VM keeps pkt until the next SetPacket; nil forgets it.
func (vm *VM) SetPacket(pkt []byte, data, net, mac int) {
	vm.pkt, vm.pktData, vm.pktNet, vm.pktMac = pkt, data, net, mac
}

// ldPacket is a legacy packet load of size bytes at offset k.
func (vm *VM) ldPacket(k int32, size int) (uint64, bool) {
	var at int
	switch {
	case k >= 0:
		at = vm.pktData + int(k)
	case k >= SKFNetOff:
		at = vm.pktNet + int(k-SKFNetOff)
	case k >= SKFLLOff && vm.pktMac >= 0:
		at = vm.pktMac + int(k-SKFLLOff)
	default:
		return 0, false
	}
	if at < 0 || at+size > len(vm.pkt) {
		return 0, false
	}
	b := vm.pkt[at : at+size]
	switch size {
	case 1:
		return uint64(b[0]), true
	case 2:
		return uint64(b[0])<<8 | uint64(b[1]), true
	}
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3]), true
}

// TailCall asks the VM to continue, once the calling helper returns, at the
// start of p with the current r1 and a fresh stack, discarding every call
// frame (as bpf_tail_call; the target's exit ends the run). It reports
// false, and changes nothing, when p is nil or the run already made
// MaxTailCalls tail calls: the helper should then return normally, as
// bpf_tail_call does on failure. Only a helper may call it, during Run.
func (vm *VM) TailCall(p *Program) bool {
	if p == nil || !vm.running || vm.nested > 0 || vm.tailCalls >= MaxTailCalls {
		return false
	}
	vm.tail = p
	vm.tailCalls++
	return true
}

// install makes p's static regions the addressable ones.
func (vm *VM) install(p *Program) {
	if vm.prog == p {
		return
	}
	n := copy(vm.regions[staticBase:], p.static)
	clear(vm.regions[staticBase+n : staticBase+max(n, vm.nstatic)])
	vm.nstatic = n
	vm.prog = p
}

// Run executes p with r1-r5 set from args (missing ones are 0) and r10 at
// the top of a zeroed 512-byte stack, and returns r0 at the program's final
// exit. Dynamic regions added before Run are addressable during it; all of
// them are dropped when Run returns. On failure Run returns a *Fault
// (errors.Is with ErrOutOfBounds, ErrReadOnly, ErrBudget, ErrCallDepth,
// ErrFallOff, ErrBadCall, ErrHelper, ErrRegionLimit or ErrInternal), or
// ErrArgs for more than five arguments.
func (vm *VM) Run(p *Program, args ...uint64) (r0 uint64, err error) {
	if len(args) > 5 {
		return 0, ErrArgs
	}
	var a [5]uint64
	copy(a[:], args)
	vm.running = true
	defer func() {
		if x := recover(); x != nil {
			r0, err = 0, &Fault{Code: FaultInternal, PC: vm.pc, Err: fmt.Errorf("panic: %v", x)}
		}
		vm.running = false
		vm.cur = nil
		vm.nested = 0
		vm.tail = nil
		vm.tailCalls = 0
		clear(vm.regions[dynamicBase:])
		vm.regions = vm.regions[:dynamicBase]
	}()
	vm.install(p)
	vm.cur = p
	vm.left, vm.reserve = vm.budget, 0
	if vm.yield != nil && vm.budget > YieldChunk {
		vm.left, vm.reserve = YieldChunk, vm.budget-YieldChunk
	}
	return vm.exec(p, 0, 0, &a)
}

// Call runs the function of the running program that starts at
// instruction pc, as a bpf-to-bpf call made from the frame of the calling
// helper (r1-r5 from args, a fresh frame above the caller's, r6-r9 of no
// concern to the caller), and returns its r0. It lets helpers such as
// bpf_loop invoke callbacks. The run's instruction budget is shared. Only a
// helper may call it, during Run; a tail call inside the callee fails as
// bpf_tail_call does. It returns ErrBadCall for a pc that does not start an
// instruction, ErrCallDepth when no frame is left, and the callee's fault
// otherwise (which the helper should return, ending the run).
func (vm *VM) Call(pc int, args ...uint64) (uint64, error) {
	p := vm.cur
	if !vm.running || p == nil || len(args) > 5 {
		return 0, &Fault{Code: FaultBadCall, PC: vm.pc}
	}
	if pc < 0 || pc >= len(p.insns)-1 || p.insns[pc].op == opInvalid {
		return 0, &Fault{Code: FaultBadCall, PC: vm.pc, Addr: uint64(pc)}
	}
	base := vm.frame + 1
	if base >= MaxFrames {
		return 0, &Fault{Code: FaultCallDepth, PC: vm.pc}
	}
	var a [5]uint64
	copy(a[:], args)
	savedPC, savedFrame := vm.pc, vm.frame
	vm.nested++
	r0, err := vm.exec(p, pc, base, &a)
	vm.nested--
	vm.pc, vm.frame = savedPC, savedFrame
	return r0, err
}

// Run is a convenience for tests and tools following the conformance
// suite's convention: r1 points to a writable copy of mem (0 when mem is
// nil), r2 = len(mem), no context. It uses a pooled VM with the default
// configuration; errors are those of VM.Run.
func (p *Program) Run(mem []byte) (uint64, error) {
	vm, _ := p.vmPool.Get().(*VM)
	if vm == nil {
		vm = NewVM(nil)
	}
	defer p.vmPool.Put(vm)
	var r1 uint64
	if mem != nil {
		var err error
		if r1, err = vm.AddRegion(bytes.Clone(mem), true); err != nil {
			return 0, err
		}
	}
	return vm.Run(p, r1, uint64(len(mem)))
}

// memFault classifies a failed access at address a.
func (vm *VM) memFault(pc int, a uint64, size int, write bool) error {
	code := FaultOutOfBounds
	if idx, o := a>>32, a&0xffffffff; idx < uint64(len(vm.regions)) && o+uint64(size) <= vm.regions[idx].n {
		if write {
			code = FaultReadOnly
		} else {
			code = FaultWriteOnly
		}
	}
	return &Fault{Code: code, PC: pc, Addr: a, Size: size, Write: write}
}

// atomicFault classifies a failed atomic at a: a write-only region
// refuses the fetching forms, a read-only one every form.
func (vm *VM) atomicFault(pc int, a uint64, size int) error {
	if idx, o := a>>32, a&0xffffffff; idx < uint64(len(vm.regions)) && o+uint64(size) <= vm.regions[idx].n &&
		vm.regions[idx].w != nil {
		return &Fault{Code: FaultWriteOnly, PC: pc, Addr: a, Size: size, Write: true}
	}
	return vm.memFault(pc, a, size, true)
}

// ld returns the size bytes at a, or nil when they are not inside a
// readable region.
func ld(regions []region, a, size uint64) []byte {
	i := a >> 32
	if i >= uint64(len(regions)) {
		return nil
	}
	b := regions[i].r
	o := a & 0xffffffff
	if o+size > uint64(len(b)) {
		return nil
	}
	return b[o : o+size : o+size]
}

// st is ld for writing: the region must be writable.
func st(regions []region, a, size uint64) []byte {
	i := a >> 32
	if i >= uint64(len(regions)) {
		return nil
	}
	b := regions[i].w
	o := a & 0xffffffff
	if o+size > uint64(len(b)) {
		return nil
	}
	return b[o : o+size : o+size]
}

// rmw is st for atomics that also return the old value: the region must
// be readable and writable.
func rmw(regions []region, a, size uint64) []byte {
	i := a >> 32
	if i >= uint64(len(regions)) || regions[i].r == nil {
		return nil
	}
	return st(regions, a, size)
}

// insnFault builds the fault of the load or store in at pc, whose access
// the run loop found invalid.
func (vm *VM) insnFault(pc int, in *insn, regs *[16]uint64) error {
	size, write := 0, false
	base := in.src
	switch in.op {
	case opLdxB, opLdxsB:
		size = 1
	case opLdxH, opLdxsH:
		size = 2
	case opLdxW, opLdxsW:
		size = 4
	case opLdxDW:
		size = 8
	case opStB, opStxB:
		size, write = 1, true
	case opStH, opStxH:
		size, write = 2, true
	case opStW, opStxW:
		size, write = 4, true
	default: // opStDW, opStxDW
		size, write = 8, true
	}
	if write {
		base = in.dst
	}
	return vm.memFault(pc, regs[base&15]+uint64(in.off), size, write)
}

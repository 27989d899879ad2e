package verifier

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	maxVarOff    = 1 << 29 // BPF_MAX_VAR_OFF
	maxPacketOff = 0xffff  // MAX_PACKET_OFF
	maxVisited   = 64      // recent states checked for an exact repeat per visit
	maxPruneScan = 1024    // recent states compared for pruning per visit
	maxTrail     = 24      // instruction indexes kept per path for logs
	maxLogBytes  = 1 << 20 // verbose trace cap
)

// maxStateBytes bounds the memory held by queued and saved states, so
// that a hostile program cannot make the daemon allocate without bound
// before the instruction limit is reached. A variable for tests.
var maxStateBytes = 128 << 20

// stateBytes estimates the memory a copy of st holds.
func stateBytes(st *state) int {
	n := 64
	for _, f := range st.frames {
		n += int(unsafe.Sizeof(frame{})) + len(f.stack)*int(unsafe.Sizeof(slot{}))
	}
	return n
}

// account adds n bytes of saved state, failing past maxStateBytes, and
// tells Env.Charge about each new ChargeStep of the high-water mark.
func (v *verifier) account(st *state, n int) error {
	v.stateBytes += n
	if v.stateBytes > maxStateBytes {
		return v.errf(st, st.pc, unix.E2BIG, "BPF program is too complex: %d bytes of verifier state after %d insns", v.stateBytes, v.processed)
	}
	if v.env.Charge != nil && v.stateBytes > v.charged {
		step := (v.stateBytes - v.charged + ChargeStep - 1) / ChargeStep * ChargeStep
		if err := v.env.Charge(step); err != nil {
			return v.errf(st, st.pc, unix.ENOMEM, "BPF program needs more verifier memory than allowed: %d bytes of verifier state after %d insns: %v", v.stateBytes, v.processed, err)
		}
		v.charged += step
	}
	return nil
}

// insnAux is what the verifier learns about one instruction across paths.
type insnAux struct {
	ctxField int // auxNone, auxOther, auxSock, or a context field index
	ctxSize  int
	ctxWrite bool
}

type verifier struct {
	env         *Env
	userMaps    int             // len(env.Maps) given; synthetic entries follow (maptypes.go)
	recordMaps  map[int64]int32 // ring buffer record size*2+readable -> its synthetic map entry
	innerOf     map[int32]int32 // map-in-map index -> its inner template's synthetic entry
	wideStore   *reg            // during a BPF_ST/STX check: the value before truncation to the store's size (constkey.go)
	helpers     map[int32]*HelperProto
	insns       []insn
	ldimmHi     []bool
	pruneAt     []bool
	isCallback  []bool
	subprogs    []int
	subprogOf   []int
	callees     [][]int
	depth       []int
	aux         []insnAux
	visited     [][]*checkpoint
	completeAt  []int // complete checkpoints in visited, per insn
	pending     []*state
	processed   int
	maxInsns    int
	idGen       uint32
	tailCalls   bool
	states      int
	lastCpInsn  int
	lastCpJmps  int
	jmps        int
	trace       strings.Builder
	reached     []bool // instructions some path executed
	stateBytes  int    // memory held by pending states and checkpoints
	charged     int    // bytes reported to Env.Charge
	helpersUsed map[int32]bool
	relevant    []regSets // per insn: live and relevant registers (relevance.go)
	pruneMode   pruneMode // tests: what pruning may ignore
}

// Verify checks the program insns (raw bpf_attr.insns bytes) against env.
// A nil env means the zero Env. It returns a *Error with Errno EINVAL for
// malformed programs, EACCES for unsafe ones and E2BIG for programs that
// are too large or too complex; the error's Log says why.
func Verify(insns []byte, env *Env) (*Result, error) {
	res, _, err := verify(insns, env)
	return res, err
}

func verify(insns []byte, env *Env) (*Result, *verifier, error) {
	return verifyPruning(insns, env, 0)
}

// verifyPruning is verify with some of the pruning relaxations off; for
// tests.
func verifyPruning(insns []byte, env *Env, mode pruneMode) (*Result, *verifier, error) {
	v, err := newVerifier(insns, env)
	if err != nil {
		return nil, v, err
	}
	v.pruneMode = mode
	res, err := v.run()
	return res, v, err
}

func newVerifier(insns []byte, env *Env) (*verifier, error) {
	if env == nil {
		env = &Env{}
	}
	v := &verifier{env: env, helpers: env.Helpers, maxInsns: env.MaxInsnsProcessed}
	// A private copy: the verifier appends synthetic map entries (inner
	// map templates, ring buffer records; maptypes.go).
	e := *env
	v.env = &e
	v.userMaps = len(e.Maps)
	v.addInnerTemplates()
	if v.helpers == nil {
		v.helpers = KernelHelpers()
	}
	if v.maxInsns <= 0 {
		v.maxInsns = DefaultMaxInsnsProcessed
	}
	switch {
	case len(insns) == 0:
		return nil, v.errf(nil, -1, unix.EINVAL, "empty program")
	case len(insns)%8 != 0:
		return nil, v.errf(nil, -1, unix.EINVAL, "program length %d is not a multiple of 8", len(insns))
	case len(insns)/8 > MaxInsns:
		return nil, v.errf(nil, -1, unix.E2BIG, "program of %d insns is too large (max %d)", len(insns)/8, MaxInsns)
	}
	v.insns = decode(insns)
	n := len(v.insns)
	v.pruneAt = make([]bool, n)
	v.isCallback = make([]bool, n)
	if err := v.checkCFG(); err != nil {
		return v, err
	}
	return v, nil
}

// run explores the program after the control-flow checks.
func (v *verifier) run() (*Result, error) {
	env := v.env
	n := len(v.insns)
	v.reached = make([]bool, n)
	v.depth = make([]int, len(v.subprogs))
	v.aux = make([]insnAux, n)
	for i := range v.aux {
		v.aux[i].ctxField = auxNone
	}
	v.visited = make([][]*checkpoint, n)
	v.completeAt = make([]int, n)
	v.relevant = v.relevance()
	if err := v.explore(); err != nil {
		return nil, err
	}
	if err := v.checkStackDepth(); err != nil {
		return nil, err
	}
	res := &Result{InsnsProcessed: v.processed, TotalStates: v.states, Subprogs: v.subprogs, TailCalls: v.tailCalls}
	for _, d := range v.depth {
		res.StackDepth = append(res.StackDepth, (d+7)&^7)
	}
	for pc, a := range v.aux {
		if a.ctxField >= 0 {
			res.CtxAccesses = append(res.CtxAccesses, CtxAccess{Insn: pc, Field: a.ctxField, Size: a.ctxSize,
				Kind: env.Context.Fields[a.ctxField].Kind, Write: a.ctxWrite})
		}
	}
	for h := range v.helpersUsed {
		res.Helpers = append(res.Helpers, h)
	}
	slices.Sort(res.Helpers)
	for pc, r := range v.reached {
		// The second half of LD_IMM64 goes with its first.
		if v.ldimmHi[pc] {
			r = v.reached[pc-1]
		}
		if !r {
			res.Dead = append(res.Dead, pc)
		}
	}
	for pc, cb := range v.isCallback {
		if cb {
			res.Callbacks = append(res.Callbacks, pc)
		}
	}
	var b strings.Builder
	if env.Verbose {
		b.WriteString(v.trace.String())
	}
	fmt.Fprintf(&b, "processed %d insns (limit %d), total_states %d\n", v.processed, v.maxInsns, v.states)
	fmt.Fprintf(&b, "stack depth")
	for _, d := range res.StackDepth {
		fmt.Fprintf(&b, " %d", d)
	}
	b.WriteString("\n")
	res.Log = b.String()
	return res, nil
}

// errf builds an *Error for pc with the state st (may be nil).
func (v *verifier) errf(st *state, pc int, e unix.Errno, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	var b strings.Builder
	if v.env.Verbose {
		b.WriteString(v.trace.String())
	}
	if st != nil && len(st.trail) > 1 {
		b.WriteString("path:")
		for _, p := range st.trail {
			fmt.Fprintf(&b, " %d", p)
		}
		b.WriteString("\n")
	}
	if pc >= 0 && pc < len(v.insns) {
		if li, ok := v.env.LineInfo[pc]; ok {
			fmt.Fprintf(&b, "; %s:%d: %s\n", li.File, li.Line, strings.TrimSpace(li.Text))
		}
		fmt.Fprintf(&b, "%d: %s\n", pc, v.disasm(pc))
	}
	if st != nil {
		b.WriteString(v.stateString(st))
		b.WriteString("\n")
	}
	if pc >= 0 && pc < len(v.insns) {
		fmt.Fprintf(&b, "%d: %s: %s\n", pc, v.disasm(pc), msg)
	} else {
		b.WriteString(msg + "\n")
	}
	return &Error{Errno: e, PC: pc, Msg: msg, Log: b.String()}
}

func (v *verifier) stateString(st *state) string {
	var parts []string
	for fi, f := range st.frames {
		prefix := ""
		if len(st.frames) > 1 {
			prefix = fmt.Sprintf("frame%d: ", fi)
			if fi > 0 {
				prefix = "\n" + prefix
			}
		}
		var p []string
		for i := range f.regs {
			if f.regs[i].typ != notInit {
				p = append(p, fmt.Sprintf("R%d=%s", i, v.regString(&f.regs[i])))
			}
		}
		for i := range f.stack {
			s := &f.stack[i]
			off := -8 * (i + 1)
			if s.kind[0] == stSpill {
				p = append(p, fmt.Sprintf("fp%d=%s", off, v.regString(&s.spill)))
				continue
			}
			var c [8]byte
			any := false
			for k := 7; k >= 0; k-- {
				c[7-k] = "?mz"[min(s.kind[k], 2)]
				any = any || s.kind[k] != stInvalid
			}
			if any {
				p = append(p, fmt.Sprintf("fp%d=%s", off, c[:]))
			}
		}
		parts = append(parts, prefix+strings.Join(p, " "))
	}
	return strings.Join(parts, "")
}

func (v *verifier) newID() uint32 {
	v.idGen++
	return v.idGen
}

// explore runs every path of the program.
func (v *verifier) explore() error {
	f := &frame{callsite: -1}
	for i := range f.regs {
		f.regs[i].typ = notInit
	}
	f.regs[1] = reg{typ: ptrToCtx}
	f.regs[10] = reg{typ: ptrToStack}
	st := &state{frames: []*frame{f}}
	for st != nil {
		if v.pruneAt[st.pc] {
			pruned, err := v.visit(st)
			if err != nil {
				return err
			}
			if pruned {
				v.finish(st)
				st = v.pop()
				continue
			}
		}
		v.processed++
		if v.env.Yield != nil && v.processed%YieldEvery == 0 {
			if err := v.env.Yield(); err != nil {
				return err
			}
		}
		v.reached[st.pc] = true
		if v.processed > v.maxInsns {
			return v.errf(st, st.pc, unix.E2BIG, "BPF program is too large. Processed %d insn", v.processed)
		}
		if len(st.trail) >= maxTrail {
			copy(st.trail, st.trail[1:])
			st.trail = st.trail[:maxTrail-1]
		}
		st.trail = append(st.trail, st.pc)
		if v.env.Verbose && v.trace.Len() < maxLogBytes {
			fmt.Fprintf(&v.trace, "%d: %s ; %s\n", st.pc, v.disasm(st.pc), v.stateString(st))
		}
		done, err := v.step(st)
		if err != nil {
			return err
		}
		if done {
			v.finish(st)
			st = v.pop()
		}
	}
	return nil
}

func (v *verifier) pop() *state {
	if len(v.pending) == 0 {
		return nil
	}
	st := v.pending[len(v.pending)-1]
	v.pending = v.pending[:len(v.pending)-1]
	v.stateBytes -= stateBytes(st)
	if v.env.Verbose && v.trace.Len() < maxLogBytes {
		fmt.Fprintf(&v.trace, "from %d to %d: %s\n", st.trail[len(st.trail)-1], st.pc, v.stateString(st))
	}
	return st
}

// push queues a copy of st to continue at pc.
func (v *verifier) push(st *state, pc int) (*state, error) {
	if len(v.pending) >= maxPendingBranches {
		return nil, v.errf(st, st.pc, unix.E2BIG, "The sequence of %d jumps is too complex.", len(v.pending))
	}
	n := st.clone()
	n.pc = pc
	if err := v.account(st, stateBytes(n)); err != nil {
		return nil, err
	}
	if n.cp != nil {
		n.cp.pending++
	}
	v.pending = append(v.pending, n)
	return n, nil
}

// finish ends a path: its checkpoints may become complete.
func (v *verifier) finish(st *state) {
	for c := st.cp; c != nil; c = c.parent {
		c.pending--
		if c.pending > 0 {
			return
		}
		v.completeAt[c.pc]++
	}
}

func isAncestor(c, cp *checkpoint) bool {
	for ; cp != nil; cp = cp.parent {
		if cp == c {
			return true
		}
	}
	return false
}

// visit looks for a state at st.pc that includes st; it may add st as a
// new checkpoint.
func (v *verifier) visit(st *state) (bool, error) {
	list := v.visited[st.pc]
	cb := v.isCallback[st.pc]
	repeatFrom := max(0, len(list)-maxVisited)
	from := repeatFrom
	if v.completeAt[st.pc] > 0 || cb {
		from = max(0, len(list)-maxPruneScan)
	}
	kept := list[:from]
	var err error
	pruned := false
	for i, c := range list[from:] {
		switch {
		case pruned || err != nil:
		case c.pending == 0 || cb:
			// bpf_loop iterations are bounded by the helper: a state
			// included in one still being explored is covered by it.
			if stateIncludes(c.st, st, v.relevant[st.pc]) {
				c.hits++
				pruned = true
				break
			}
			// Like the kernel, forget complete states that keep missing
			// (children keep the checkpoint for its pending count only).
			c.misses++
			if c.pending == 0 && c.misses > 3*c.hits+3 {
				v.stateBytes -= stateBytes(c.st)
				v.completeAt[st.pc]--
				c.st = nil
				continue
			}
		case from+i >= repeatFrom && statesEqual(c.st, st) && isAncestor(c, st.cp):
			err = v.errf(st, st.pc, unix.EINVAL, "infinite loop detected at insn %d", st.pc)
		}
		kept = append(kept, c)
	}
	clear(list[len(kept):])
	v.visited[st.pc] = kept
	if pruned || err != nil {
		return pruned, err
	}
	insns := v.processed - v.lastCpInsn
	jmps := v.jmps - v.lastCpJmps
	add := cb || (jmps >= 2 && insns >= 8)
	if v.states > 1<<16 {
		add = cb || jmps >= 20 || insns >= 100
	}
	if !add {
		return false, nil
	}
	v.lastCpInsn, v.lastCpJmps = v.processed, v.jmps
	c := &checkpoint{st: st.clone(), parent: st.cp, pending: 1, pc: st.pc}
	c.st.trail = nil
	if err := v.account(st, stateBytes(c.st)); err != nil {
		return false, err
	}
	clearSingletonIDs(c.st)
	st.cp = c
	v.visited[st.pc] = append(v.visited[st.pc], c)
	v.states++
	return false, nil
}

// clearSingletonIDs drops scalar ids no other register shares: they link
// nothing, and would only make regsafe demand a link in later states.
func clearSingletonIDs(st *state) {
	count := map[uint32]int{}
	st.forEachReg(func(r *reg) {
		if r.typ == scalarValue && r.id != 0 {
			count[r.id]++
		}
	})
	st.forEachReg(func(r *reg) {
		if r.typ == scalarValue && r.id != 0 && count[r.id] == 1 {
			r.id = 0
		}
	})
}

// checkStackDepth enforces the combined stack size of call chains.
func (v *verifier) checkStackDepth() error {
	memo := make([]int, len(v.subprogs))
	for i := range memo {
		memo[i] = -1
	}
	var chain func(int) int
	chain = func(s int) int {
		if memo[s] >= 0 {
			return memo[s]
		}
		best := 0
		for _, c := range v.callees[s] {
			best = max(best, chain(c))
		}
		memo[s] = (max(v.depth[s], 1)+31)&^31 + best
		return memo[s]
	}
	if total := chain(0); total > MaxStack {
		return v.errf(nil, -1, unix.EACCES, "combined stack size of call chains is %d. Too large", total)
	}
	return nil
}

// readReg checks that register r may be read.
func (v *verifier) readReg(st *state, r uint8) error {
	if st.cur().regs[r].typ == notInit {
		return v.errf(st, st.pc, unix.EACCES, "R%d !read_ok", r)
	}
	return nil
}

func (v *verifier) writeReg(st *state, r uint8) error {
	if r == 10 {
		return v.errf(st, st.pc, unix.EACCES, "frame pointer is read only")
	}
	return nil
}

// step executes the instruction at st.pc. done reports the end of the path.
func (v *verifier) step(st *state) (bool, error) {
	pc := st.pc
	in := v.insns[pc]
	f := st.cur()
	switch in.class() {
	case clsALU, clsALU64:
		if err := v.alu(st, in); err != nil {
			return false, err
		}
		st.pc++
	case clsLDX:
		if err := v.readReg(st, in.src); err != nil {
			return false, err
		}
		if err := v.writeReg(st, in.dst); err != nil {
			return false, err
		}
		val, err := v.access(st, in.src, in.off, in.size(), false, nil, in.mode() == modeMEMSX)
		if err != nil {
			return false, err
		}
		f.regs[in.dst] = val
		st.pc++
	case clsST, clsSTX:
		if err := v.readReg(st, in.dst); err != nil {
			return false, err
		}
		if in.class() == clsST {
			c := constScalar(uint64(int64(in.imm)))
			wide := c
			if in.size() < 8 {
				c = constScalar(uint64(int64(in.imm)) & (1<<(8*in.size()) - 1))
			}
			v.wideStore = &wide
			_, err := v.access(st, in.dst, in.off, in.size(), true, &c, false)
			v.wideStore = nil
			if err != nil {
				return false, err
			}
		} else {
			if err := v.readReg(st, in.src); err != nil {
				return false, err
			}
			if in.mode() == modeATOMIC {
				if err := v.atomic(st, in); err != nil {
					return false, err
				}
			} else {
				val := f.regs[in.src]
				wide := val
				if in.size() < 8 && val.typ == scalarValue {
					val.vo = val.vo.cast(in.size())
					val.setBoundsFromTnum()
					val.sync()
				}
				v.wideStore = &wide
				_, err := v.access(st, in.dst, in.off, in.size(), true, &val, false)
				v.wideStore = nil
				if err != nil {
					return false, err
				}
			}
		}
		st.pc++
	case clsLD:
		if in.isLdImm64() {
			if err := v.ldImm64(st, in); err != nil {
				return false, err
			}
			st.pc += 2
			return false, nil
		}
		if err := v.ldAbs(st, in); err != nil {
			return false, err
		}
		st.pc++
	case clsJMP, clsJMP32:
		return v.jump(st, in)
	}
	return false, nil
}

func (v *verifier) ldImm64(st *state, in insn) error {
	if err := v.writeReg(st, in.dst); err != nil {
		return err
	}
	f := st.cur()
	hi := v.insns[st.pc+1].imm
	switch in.src {
	case 0:
		f.regs[in.dst] = constScalar(uint64(uint32(in.imm)) | uint64(uint32(hi))<<32)
	case pseudoMapFD, pseudoMapValue:
		if in.imm < 0 || int(in.imm) >= v.userMaps {
			return v.errf(st, st.pc, unix.EINVAL, "map index %d is not pointing to a valid map", in.imm)
		}
		if in.src == pseudoMapFD {
			f.regs[in.dst] = reg{typ: constPtrToMap, idx: in.imm}
			return nil
		}
		m := v.env.Maps[in.imm]
		if m.Type != 2 || m.MaxEntries != 1 {
			return v.errf(st, st.pc, unix.EINVAL, "map %s does not allow direct value access (needs an array with max_entries 1)", v.mapName(in.imm))
		}
		if uint32(hi) >= m.ValueSize {
			return v.errf(st, st.pc, unix.EINVAL, "invalid access to map value pointer, value_size=%d off=%d", m.ValueSize, uint32(hi))
		}
		f.regs[in.dst] = reg{typ: ptrToMapValue, idx: in.imm, off: hi}
	case pseudoFunc:
		f.regs[in.dst] = reg{typ: ptrToFunc, idx: int32(st.pc + int(in.imm) + 1)}
	}
	return nil
}

func (v *verifier) ldAbs(st *state, in insn) error {
	if !v.env.LegacyPacket {
		return v.errf(st, st.pc, unix.EINVAL, "BPF_LD_[ABS|IND] instructions not allowed for this program type")
	}
	f := st.cur()
	if len(st.frames) > 1 {
		return v.errf(st, st.pc, unix.EINVAL, "BPF_LD_[ABS|IND] instructions cannot be mixed with bpf-to-bpf calls")
	}
	if err := v.lockedLdAbs(st); err != nil {
		return err
	}
	if err := v.readReg(st, 6); err != nil {
		return err
	}
	if r6 := f.regs[6]; r6.typ != ptrToCtx || r6.off != 0 || r6.hasVarOff() {
		return v.errf(st, st.pc, unix.EINVAL, "at the time of BPF_LD_ABS|IND R6 != pointer to skb")
	}
	if in.mode() == modeIND {
		if err := v.readReg(st, in.src); err != nil {
			return err
		}
		if f.regs[in.src].typ != scalarValue {
			return v.errf(st, st.pc, unix.EACCES, "R%d is not a scalar", in.src)
		}
	}
	for r := 1; r <= 5; r++ {
		f.regs[r] = reg{}
	}
	// As the kernel: R0 is unknown (the rewrite calls a helper
	// returning u64), not bounded by the load size.
	f.regs[0] = unknownScalar()
	return nil
}

func (v *verifier) alu(st *state, in insn) error {
	f := st.cur()
	op := in.aluOp()
	w32 := in.class() == clsALU
	if op != aluMOV {
		if err := v.readReg(st, in.dst); err != nil {
			return err
		}
	}
	var src reg
	if in.srcX() && op != aluEND && op != aluNEG {
		if err := v.readReg(st, in.src); err != nil {
			return err
		}
		src = f.regs[in.src]
	} else if w32 {
		src = constScalar(uint64(uint32(in.imm)))
	} else {
		src = constScalar(uint64(int64(in.imm)))
	}
	if err := v.writeReg(st, in.dst); err != nil {
		return err
	}
	dst := &f.regs[in.dst]
	switch op {
	case aluMOV:
		switch {
		case in.off != 0: // movsx
			if src.typ != scalarValue {
				*dst = unknownScalar()
			} else {
				*dst = signExtend(src, int(in.off))
			}
			if w32 {
				dst.truncate32()
			}
		case w32:
			if src.typ != scalarValue {
				*dst = sizedScalar(4, false)
			} else {
				src.id = 0
				src.truncate32()
				*dst = src
			}
		default:
			if in.srcX() && src.typ == scalarValue && !src.isConst() {
				// Link the copies so a later bounds check on one refines both.
				if src.id == 0 {
					src.id = v.newID()
					f.regs[in.src].id = src.id
				}
			}
			*dst = src
		}
		return nil
	case aluEND:
		if dst.typ != scalarValue {
			return v.errf(st, st.pc, unix.EACCES, "R%d pointer arithmetic with endian operator prohibited", in.dst)
		}
		size := int(in.imm) / 8
		swap := in.srcX() || !w32 // to_be on a little-endian machine, or bswap
		if swap && !dst.isConst() {
			*dst = sizedScalar(size, false)
		} else if swap {
			x := dst.vo.value
			switch size {
			case 2:
				x = uint64(uint16(x)>>8 | uint16(x)<<8)
			case 4:
				x = uint64(uint32(x)>>24 | (uint32(x)>>8)&0xff00 | (uint32(x)<<8)&0xff0000 | uint32(x)<<24)
			case 8:
				var y uint64
				for i := 0; i < 8; i++ {
					y = y<<8 | (x>>(8*i))&0xff
				}
				x = y
			}
			*dst = constScalar(x)
		} else {
			dst.id = 0
			dst.vo = dst.vo.cast(size)
			lo, hi := dst.umin, dst.umax
			dst.setBoundsFromTnum()
			if size == 8 || hi < 1<<(8*size) {
				dst.umin, dst.umax = lo, hi
				dst.smin, dst.smax = int64(math.MinInt64), int64(math.MaxInt64)
			}
			dst.sync()
		}
		return nil
	}
	if dst.typ == scalarValue && src.typ == scalarValue {
		if op == aluNEG {
			src = constScalar(0)
		}
		scalarALU(op, dst, src, w32, in.off == 1)
		return nil
	}
	return v.ptrALU(st, in, dst, src)
}

// ptrALU handles arithmetic with a pointer operand.
func (v *verifier) ptrALU(st *state, in insn, dst *reg, src reg) error {
	op := in.aluOp()
	rd := in.dst
	if in.class() == clsALU {
		return v.errf(st, st.pc, unix.EACCES, "R%d 32-bit pointer arithmetic prohibited", rd)
	}
	if dst.typ != scalarValue && src.typ != scalarValue {
		if op == aluSUB {
			// Pointer difference: a number (allowed for privileged loaders).
			*dst = unknownScalar()
			return nil
		}
		return v.errf(st, st.pc, unix.EACCES, "R%d pointer %s pointer prohibited", rd, aluNames[op])
	}
	if op != aluADD && op != aluSUB {
		return v.errf(st, st.pc, unix.EACCES, "R%d pointer arithmetic with %s operator prohibited", rd, strings.TrimSuffix(aluNames[op], "="))
	}
	ptr, off := *dst, src
	if dst.typ == scalarValue {
		if op == aluSUB {
			return v.errf(st, st.pc, unix.EACCES, "R%d tried to subtract pointer from scalar", rd)
		}
		ptr, off = src, *dst
	}
	switch ptr.typ {
	case ptrToMapValueOrNull, ptrToSockCommonOrNull:
		return v.errf(st, st.pc, unix.EACCES, "R%d pointer arithmetic on %s prohibited, null-check it first", rd, ptr.typ)
	case constPtrToMap, ptrToFunc, constPtrToMapOrNull, ptrToSockCommon:
		return v.errf(st, st.pc, unix.EACCES, "R%d pointer arithmetic on %s prohibited", rd, ptr.typ)
	case ptrToPacketEnd:
		return v.errf(st, st.pc, unix.EACCES, "R%d pointer arithmetic on pkt_end prohibited", rd)
	}
	if off.isConst() {
		c := int64(off.vo.value)
		if op == aluSUB {
			c = -c
		}
		if c >= maxVarOff || c <= -maxVarOff {
			return v.errf(st, st.pc, unix.EINVAL, "R%d math between %s pointer and %d is not allowed", rd, ptr.typ, c)
		}
		n := int64(ptr.off) + c
		if n >= maxVarOff || n <= -maxVarOff {
			return v.errf(st, st.pc, unix.EINVAL, "R%d %s pointer offset %d is not allowed", rd, ptr.typ, n)
		}
		ptr.off = int32(n)
		*dst = ptr
		return nil
	}
	if off.smin <= -maxVarOff || off.smax >= maxVarOff && op == aluSUB {
		return v.errf(st, st.pc, unix.EINVAL, "R%d math between %s pointer and register with unbounded min value is not allowed", rd, ptr.typ)
	}
	varPart := ptr
	varPart.typ = scalarValue
	scalarALU(op, &varPart, off, false, false)
	if varPart.smin <= -maxVarOff || varPart.smin >= maxVarOff {
		return v.errf(st, st.pc, unix.EINVAL, "R%d value %d makes %s pointer be out of bounds", rd, varPart.smin, ptr.typ)
	}
	ptr.vo, ptr.smin, ptr.smax, ptr.umin, ptr.umax = varPart.vo, varPart.smin, varPart.smax, varPart.umin, varPart.umax
	if ptr.typ.isPkt() {
		ptr.id = v.newID()
		ptr.rng = 0
	}
	*dst = ptr
	return nil
}

// mapAccess checks access mode on map idx; what is "read from"/"write into".
func (v *verifier) mapAccess(st *state, idx int32, write bool, what string) error {
	m := v.env.Maps[idx]
	if write && !m.Write {
		mode := "no"
		if m.Read {
			mode = "read-only"
		}
		return v.errf(st, st.pc, unix.EACCES, "%s map %s denied: program's handle has %s access", what, v.mapName(idx), mode)
	}
	if !write && !m.Read {
		mode := "no"
		if m.Write {
			mode = "write-only"
		}
		return v.errf(st, st.pc, unix.EACCES, "%s map %s denied: program's handle has %s access", what, v.mapName(idx), mode)
	}
	return nil
}

// access checks a load (write=false) or store of size bytes at reg rp + off
// and returns the loaded value. val is the stored value for stores.
func (v *verifier) access(st *state, rp uint8, off int16, size int, write bool, val *reg, signExt bool) (reg, error) {
	f := st.cur()
	p := f.regs[rp]
	pc := st.pc
	switch p.typ {
	case ptrToCtx:
	case ptrToSockCommon:
		// The kernel rewrites socket accesses like context ones: one
		// instruction may not serve both kinds of pointer.
		if err := v.setAux(st, auxSock, size, write); err != nil {
			return reg{}, err
		}
	default:
		if err := v.setAux(st, auxOther, size, write); err != nil {
			return reg{}, err
		}
	}
	switch p.typ {
	case ptrToStack:
		return v.stackAccess(st, rp, p, int(off), size, write, val, signExt)
	case ptrToMapValue:
		m := v.env.Maps[p.idx]
		what := "read from"
		if write {
			what = "write into"
		}
		if err := v.mapAccess(st, p.idx, write, what); err != nil {
			return reg{}, err
		}
		if err := v.boundedAccess(st, rp, p, int(off), size, int64(m.ValueSize), "map value"); err != nil {
			return reg{}, err
		}
		if err := v.lockField(st, p, int(off), size); err != nil {
			return reg{}, err
		}
		if write && val.typ != scalarValue {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d leaks addr into map", v.insns[pc].src)
		}
		return sizedScalar(size, signExt), nil
	case ptrToMapKey:
		if err := v.keyAccess(st, rp, p, int(off), size, write); err != nil {
			return reg{}, err
		}
		return sizedScalar(size, signExt), nil
	case ptrToCtx:
		return v.ctxAccess(st, rp, p, int(off), size, write, val, signExt)
	case ptrToPacket, ptrToPacketMeta:
		if write && !v.env.PacketWrite {
			return reg{}, v.errf(st, pc, unix.EACCES, "cannot write into packet")
		}
		if p.smin < 0 {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d min value is negative, either use unsigned index or do a if (index >=0) check.", rp)
		}
		o := int64(p.off) + int64(off)
		if o < 0 || o+int64(size) > int64(p.rng) || int64(p.umax)+o > maxPacketOff {
			return reg{}, v.errf(st, pc, unix.EACCES, "invalid access to packet, off=%d size=%d, R%d(id=%d,off=%d,r=%d)", o, size, rp, p.id, p.off, p.rng)
		}
		if write && val.typ != scalarValue {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d leaks addr into packet", v.insns[pc].src)
		}
		return sizedScalar(size, signExt), nil
	case ptrToSockCommon:
		if write {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d cannot write into %s", rp, p.typ)
		}
		// No arithmetic on socket pointers: the offset is the
		// instruction's.
		spec := &v.env.SockCommon
		if _, ok := findField(spec, int(off), size, false, signExt); !ok {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d invalid %s access off=%d size=%d", rp, p.typ, off, size)
		}
		return sizedScalar(size, signExt), nil
	case ptrToMapValueOrNull, ptrToSockCommonOrNull:
		return reg{}, v.errf(st, pc, unix.EACCES, "R%d invalid mem access '%s' (null-check it first)", rp, p.typ)
	}
	return reg{}, v.errf(st, pc, unix.EACCES, "R%d invalid mem access '%s'", rp, p.typ)
}

// boundedAccess checks [p+off, p+off+size) within [0, limit).
func (v *verifier) boundedAccess(st *state, rp uint8, p reg, off, size int, limit int64, what string) error {
	o := int64(p.off) + int64(off)
	if p.smin < 0 && (p.smin <= -maxVarOff || o+p.smin < 0) {
		return v.errf(st, st.pc, unix.EACCES, "R%d min value is negative, either use unsigned index or do a if (index >=0) check.", rp)
	}
	if p.umax >= maxVarOff {
		return v.errf(st, st.pc, unix.EACCES, "R%d unbounded memory access, make sure to bounds check any such access", rp)
	}
	lo := o + p.smin
	hi := o + int64(p.umax) + int64(size)
	if p.smin < 0 {
		hi = o + max(p.smax, 0) + int64(size)
	}
	if lo < 0 || hi > limit {
		if p.hasVarOff() {
			return v.errf(st, st.pc, unix.EACCES, "invalid access to %s, value_size=%d off=%d size=%d (var %s)", what, limit, o, size, p.boundsString())
		}
		return v.errf(st, st.pc, unix.EACCES, "invalid access to %s, value_size=%d off=%d size=%d", what, limit, o, size)
	}
	return nil
}

// Values of insnAux.ctxField besides context field indexes.
const (
	auxNone  = -1 // no memory access seen yet
	auxOther = -2 // an access through a pointer that is neither ctx nor a socket
	auxSock  = -3 // an access through a socket pointer
)

func (v *verifier) setAux(st *state, field, size int, write bool) error {
	a := &v.aux[st.pc]
	if a.ctxField == auxNone {
		a.ctxField, a.ctxSize, a.ctxWrite = field, size, write
		return nil
	}
	if a.ctxField != field {
		return v.errf(st, st.pc, unix.EINVAL, "same insn cannot be used with different pointers")
	}
	return nil
}

func (v *verifier) ctxAccess(st *state, rp uint8, p reg, off, size int, write bool, val *reg, signExt bool) (reg, error) {
	pc := st.pc
	if p.off != 0 || p.hasVarOff() {
		return reg{}, v.errf(st, pc, unix.EACCES, "dereference of modified ctx ptr R%d off=%d disallowed", rp, p.off)
	}
	in := v.insns[pc]
	// BPF_ST into writable context fields is allowed, as since Linux 6.3
	// ("bpf: allow ctx writes using BPF_ST_MEM instructions").
	if in.class() == clsSTX && in.mode() == modeATOMIC {
		return reg{}, v.errf(st, pc, unix.EACCES, "BPF_ATOMIC stores into R%d ctx is not allowed", rp)
	}
	i, ok := findField(&v.env.Context, off, size, write, signExt)
	if !ok {
		return reg{}, v.errf(st, pc, unix.EACCES, "invalid bpf_context access off=%d size=%d", off, size)
	}
	if write && val.typ != scalarValue {
		return reg{}, v.errf(st, pc, unix.EACCES, "R%d leaks addr into ctx", in.src)
	}
	if err := v.setAux(st, i, size, write); err != nil {
		return reg{}, err
	}
	switch v.env.Context.Fields[i].Kind {
	case FieldPacketStart:
		return reg{typ: ptrToPacket}, nil
	case FieldPacketEnd:
		return reg{typ: ptrToPacketEnd}, nil
	case FieldPacketMeta:
		return reg{typ: ptrToPacketMeta}, nil
	case FieldSockCommonOrNull:
		return reg{typ: ptrToSockCommonOrNull, id: v.newID()}, nil
	}
	return sizedScalar(size, signExt), nil
}

// findField returns the index of the field of spec an access of size
// bytes at off may touch: inside one field, exactly the field for pointer
// kinds, aligned to its size when narrower (and within NarrowStarts), a
// store only into a writable scalar field, sign extension only from a
// scalar one.
func findField(spec *ContextSpec, off, size int, write, signExt bool) (int, bool) {
	if off < 0 || off+size > int(spec.Size) {
		return 0, false
	}
	for i := range spec.Fields {
		fd := &spec.Fields[i]
		if off < int(fd.Off) || off+size > int(fd.Off+fd.Size) {
			continue
		}
		exact := off == int(fd.Off) && size == int(fd.Size)
		if !exact {
			if fd.Kind != FieldScalar || !fd.Narrow || off%size != 0 {
				return 0, false
			}
			if fd.NarrowStarts != 0 && size < int(fd.Size) && off-int(fd.Off) >= int(fd.NarrowStarts) {
				return 0, false
			}
		}
		if write && (!fd.Write || fd.Kind != FieldScalar) {
			return 0, false
		}
		if signExt && fd.Kind != FieldScalar {
			return 0, false
		}
		return i, true
	}
	return 0, false
}

// stackAccess handles loads and stores through a stack pointer.
func (v *verifier) stackAccess(st *state, rp uint8, p reg, off, size int, write bool, val *reg, signExt bool) (reg, error) {
	pc := st.pc
	f := st.frames[p.frame]
	o := int(p.off) + off
	// The kernel always demands aligned stack accesses.
	if a := uint64(size - 1); (uint64(o)+p.vo.value)&a != 0 || p.vo.mask&a != 0 {
		return reg{}, v.errf(st, pc, unix.EACCES, "misaligned stack access off %d+%d size %d", p.off, off, size)
	}
	if p.hasVarOff() {
		if p.smin <= -maxVarOff || p.smax >= maxVarOff {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d unbounded variable-offset stack access", rp)
		}
		lo, hi := o+int(p.smin), o+int(p.smax)+size
		if lo < -MaxStack || hi > 0 {
			return reg{}, v.errf(st, pc, unix.EACCES, "invalid variable-offset stack access R%d var_off=%s off=%d size=%d", rp, p.vo, o, size)
		}
		if write && val.typ != scalarValue {
			return reg{}, v.errf(st, pc, unix.EACCES, "R%d variable-offset spill of a pointer is not allowed", v.insns[pc].src)
		}
		f.grow(lo)
		v.depth[f.subprog] = max(v.depth[f.subprog], -lo)
		for b := lo; b < hi; b++ {
			i, k := byteIndex(b)
			s := &f.stack[i]
			if s.kind[k] == stInvalid {
				return reg{}, v.errf(st, pc, unix.EACCES, "invalid variable-offset %s stack R%d: fp%d is not initialized (var_off=%s off=%d size=%d)",
					map[bool]string{false: "read from", true: "write to"}[write], rp, b, p.vo, o, size)
			}
			if s.kind[k] == stSpill && s.spill.typ != scalarValue && !write {
				return reg{}, v.errf(st, pc, unix.EACCES, "invalid variable-offset read from stack R%d: fp%d holds a spilled pointer", rp, b)
			}
		}
		if write {
			for b := lo; b < hi; b++ {
				i, k := byteIndex(b)
				s := &f.stack[i]
				dropNarrowSpill(s)
				if s.kind[k] == stSpill {
					s.kind = [8]uint8{stMisc, stMisc, stMisc, stMisc, stMisc, stMisc, stMisc, stMisc}
					s.spill = reg{}
				}
				s.kind[k] = stMisc
			}
			return reg{}, nil
		}
		return sizedScalar(size, signExt), nil
	}
	if o < -MaxStack || o+size > 0 {
		what := "read from"
		if write {
			what = "write to"
		}
		return reg{}, v.errf(st, pc, unix.EACCES, "invalid %s stack R%d off=%d size=%d", what, rp, o, size)
	}
	if write {
		if val.typ != scalarValue && (size != 8 || o%8 != 0) {
			return reg{}, v.errf(st, pc, unix.EACCES, "invalid size of register spill")
		}
		if val.typ == ptrToStack && val.frame > p.frame {
			return reg{}, v.errf(st, pc, unix.EINVAL, "cannot spill pointers to stack into stack frame of the caller")
		}
		f.grow(o)
		v.depth[f.subprog] = max(v.depth[f.subprog], -o)
		if size == 8 && o%8 == 0 {
			i, _ := byteIndex(o)
			f.stack[i] = slot{kind: [8]uint8{stSpill, stSpill, stSpill, stSpill, stSpill, stSpill, stSpill, stSpill}, spill: *val}
			return reg{}, nil
		}
		kind := stMisc
		if val.isConst() && val.vo.value == 0 {
			kind = stZero
		}
		// A narrow scalar store (BPF_ST/STX, not an atomic) at a slot's
		// start is a spill to the kernel; any other store scrubs such a
		// spill (constkey.go).
		narrow := o%8 == 0 && val.typ == scalarValue && v.wideStore != nil
		if !narrow {
			for b := o; b < o+size; b++ {
				i, _ := byteIndex(b)
				dropNarrow(&f.stack[i])
			}
		}
		for b := o; b < o+size; b++ {
			i, k := byteIndex(b)
			s := &f.stack[i]
			if s.kind[0] == stSpill {
				// Like the kernel, forget what a partly overwritten spill held.
				s.kind = [8]uint8{stMisc, stMisc, stMisc, stMisc, stMisc, stMisc, stMisc, stMisc}
				s.spill = reg{}
			}
			s.kind[k] = kind
		}
		if narrow {
			i, _ := byteIndex(o)
			setNarrow(&f.stack[i], size, v.wideStore)
		}
		return reg{}, nil
	}
	i, _ := byteIndex(o)
	if i < len(f.stack) && size == 8 && o%8 == 0 && f.stack[i].kind[0] == stSpill {
		r := f.stack[i].spill
		return r, nil
	}
	allZero := true
	for b := o; b < o+size; b++ {
		i, k := byteIndex(b)
		kind := stInvalid
		if i < len(f.stack) {
			kind = f.stack[i].kind[k]
		}
		switch kind {
		case stInvalid:
			return reg{}, v.errf(st, pc, unix.EACCES, "invalid read from stack R%d off %d+%d size %d (fp%d is not initialized)", rp, p.off, off, size, b)
		case stSpill:
			sp := &f.stack[i].spill
			if sp.typ != scalarValue {
				return reg{}, v.errf(st, pc, unix.EACCES, "invalid size of register fill: R%d off %d+%d size %d reads part of a spilled %s", rp, p.off, off, size, sp.typ)
			}
			if !(sp.isConst() && sp.vo.value == 0) {
				allZero = false
			}
		case stMisc:
			allZero = false
		}
	}
	if allZero {
		return constScalar(0), nil
	}
	return sizedScalar(size, signExt), nil
}

// atomic handles BPF_ATOMIC read-modify-write instructions.
func (v *verifier) atomic(st *state, in insn) error {
	f := st.cur()
	p := f.regs[in.dst]
	src := f.regs[in.src]
	fetch := in.imm&atomicFETCH != 0
	if src.typ != scalarValue {
		return v.errf(st, st.pc, unix.EACCES, "R%d leaks addr into mem", in.src)
	}
	if in.imm == atomicCMPXCHG {
		if err := v.readReg(st, 0); err != nil {
			return err
		}
		if f.regs[0].typ != scalarValue {
			return v.errf(st, st.pc, unix.EACCES, "R0 leaks addr into mem")
		}
	}
	switch p.typ {
	case ptrToMapValue:
		if err := v.mapAccess(st, p.idx, true, "atomic update of"); err != nil {
			return err
		}
		if fetch {
			if err := v.mapAccess(st, p.idx, false, "atomic fetch from"); err != nil {
				return err
			}
		}
		m := v.env.Maps[p.idx]
		if err := v.boundedAccess(st, in.dst, p, int(in.off), in.size(), int64(m.ValueSize), "map value"); err != nil {
			return err
		}
		if err := v.lockField(st, p, int(in.off), in.size()); err != nil {
			return err
		}
		if err := v.setAux(st, auxOther, in.size(), true); err != nil {
			return err
		}
	case ptrToStack:
		old, err := v.access(st, in.dst, in.off, in.size(), false, nil, false)
		if err != nil {
			return err
		}
		if old.typ != scalarValue {
			return v.errf(st, st.pc, unix.EACCES, "BPF_ATOMIC on a spilled %s is not allowed", old.typ)
		}
		u := unknownScalar()
		if _, err := v.access(st, in.dst, in.off, in.size(), true, &u, false); err != nil {
			return err
		}
	default:
		return v.errf(st, st.pc, unix.EACCES, "BPF_ATOMIC stores into R%d %s is not allowed", in.dst, p.typ)
	}
	if fetch {
		r := in.src
		if in.imm == atomicCMPXCHG {
			r = 0
		}
		f.regs[r] = sizedScalar(in.size(), false)
	}
	return nil
}

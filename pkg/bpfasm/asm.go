package bpfasm

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// kind is the operand shape of a mnemonic.
type kind uint8

const (
	kALU   kind = iota // op dst, src|imm
	kNeg               // neg dst
	kMovSX             // movsxNM dst, src
	kEnd               // le16/be32/bswap64 dst
	kJA                // ja target (offset)
	kJA32              // ja32 target (imm)
	kJcc               // jxx dst, src|imm, target
	kCall              // call imm | call %reg | call local target | call runtime imm
	kExit              // exit
	kLddw              // lddw dst, imm64 | map_fd N | map_value N, off
	kLdx               // ldxX dst, [src+off]
	kSt                // stX [dst+off], imm
	kStx               // stxX [dst+off], src
)

// operand counts per kind (lddw map_value takes 3, checked separately).
var operandCount = [...]int{kALU: 2, kNeg: 1, kMovSX: 2, kEnd: 1, kJA: 1, kJA32: 1, kJcc: 3, kCall: 1, kExit: 0, kLddw: 2, kLdx: 2, kSt: 2, kStx: 2}

type spec struct {
	kind kind
	op   uint8 // opcode, without the source bit for kALU/kJcc
	off  int16 // fixed offset (sdiv/smod 1, movsx width)
	imm  int32 // fixed immediate (byte swap width)
}

// mnemonics maps every accepted mnemonic to its encoding. Built once by
// init and read-only afterwards.
var mnemonics = map[string]spec{}

// lockOps maps a lock operation (without "fetch" and width suffix) to its
// immediate.
var lockOps = map[string]int32{"add": 0x00, "or": 0x40, "and": 0x50, "xor": 0xa0, "xchg": atomicXchg, "cmpxchg": atomicCmpxchg}

func init() {
	for i, name := range aluNames {
		if name == "" {
			continue
		}
		code := uint8(i << 4)
		k := kALU
		if code == aluNeg {
			k = kNeg
		}
		mnemonics[name] = spec{kind: k, op: classALU64 | code}
		mnemonics[name+"64"] = spec{kind: k, op: classALU64 | code}
		mnemonics[name+"32"] = spec{kind: k, op: classALU | code}
		if code == aluDiv || code == aluMod {
			mnemonics["s"+name] = spec{kind: kALU, op: classALU64 | code, off: 1}
			mnemonics["s"+name+"64"] = spec{kind: kALU, op: classALU64 | code, off: 1}
			mnemonics["s"+name+"32"] = spec{kind: kALU, op: classALU | code, off: 1}
		}
	}
	for _, w := range []int16{8, 16, 32} {
		mnemonics[fmt.Sprintf("movsx%d64", w)] = spec{kind: kMovSX, op: classALU64 | aluMov | srcX, off: w}
		if w != 32 {
			mnemonics[fmt.Sprintf("movsx%d32", w)] = spec{kind: kMovSX, op: classALU | aluMov | srcX, off: w}
		}
	}
	for _, w := range []int32{16, 32, 64} {
		n := strconv.Itoa(int(w))
		mnemonics["le"+n] = spec{kind: kEnd, op: classALU | aluEnd | srcK, imm: w}
		mnemonics["be"+n] = spec{kind: kEnd, op: classALU | aluEnd | srcX, imm: w}
		mnemonics["bswap"+n] = spec{kind: kEnd, op: classALU64 | aluEnd | srcK, imm: w}
		mnemonics["swap"+n] = spec{kind: kEnd, op: classALU64 | aluEnd | srcK, imm: w} // ubpf spelling
	}
	for i, name := range jmpNames {
		if name == "" || name == "ja" {
			continue
		}
		mnemonics[name] = spec{kind: kJcc, op: classJMP | uint8(i<<4)}
		mnemonics[name+"32"] = spec{kind: kJcc, op: classJMP32 | uint8(i<<4)}
	}
	mnemonics["ja"] = spec{kind: kJA, op: classJMP | jmpJA}
	mnemonics["ja32"] = spec{kind: kJA32, op: classJMP32 | jmpJA}
	mnemonics["call"] = spec{kind: kCall, op: classJMP | jmpCall}
	mnemonics["exit"] = spec{kind: kExit, op: classJMP | jmpExit}
	mnemonics["lddw"] = spec{kind: kLddw, op: opLDDW}
	for size, sfx := range sizeSuffix {
		mnemonics["ldx"+sfx] = spec{kind: kLdx, op: classLDX | modeMEM | size}
		mnemonics["st"+sfx] = spec{kind: kSt, op: classST | modeMEM | size}
		mnemonics["stx"+sfx] = spec{kind: kStx, op: classSTX | modeMEM | size}
		if size != sizeDW {
			mnemonics["ldxs"+sfx] = spec{kind: kLdx, op: classLDX | modeMEMSX | size}
		}
	}
}

// token is an operand or word with its 1-based column in the source line.
type token struct {
	s   string
	col int
}

type fixup struct {
	idx   int // index in insns
	pc    int // slot of the instruction
	label token
	imm   bool // target goes in Imm (ja32, call local), else Offset
	line  int
	text  string
}

type labelDef struct{ pc, line int }

type assembler struct {
	insns     []Instruction
	pc        int
	labels    map[string]labelDef
	fixups    []fixup
	firstExit int
	line      int
	text      string
}

// Assemble assembles ubpf-style text into raw eBPF instructions: 8 bytes
// each, little-endian, in bpf_attr.insns format (lddw takes 16 bytes).
// The syntax is described in the package documentation.
//
// It returns ErrEmpty if src holds no instruction, and otherwise a *Error
// naming the first faulty line, column and problem (wrapping ErrSyntax,
// ErrMnemonic, ErrOperandCount, ErrRegister, ErrRange or ErrLabel).
func Assemble(src string) ([]byte, error) {
	insns, err := Parse(src)
	if err != nil {
		return nil, err
	}
	return Encode(insns)
}

// Parse is Assemble without the final encoding: it returns one Instruction
// per mnemonic (an lddw is one Instruction of two slots), with labels
// resolved. It fails exactly like Assemble.
func Parse(src string) ([]Instruction, error) {
	a := &assembler{labels: map[string]labelDef{}, firstExit: -1}
	for i, raw := range strings.Split(src, "\n") {
		a.line = i + 1
		if err := a.parseLine(raw); err != nil {
			return nil, err
		}
	}
	if len(a.insns) == 0 {
		return nil, ErrEmpty
	}
	for _, f := range a.fixups {
		def, ok := a.labels[f.label.s]
		target := def.pc
		if !ok {
			if f.label.s != "exit" || a.firstExit < 0 {
				return nil, &Error{Line: f.line, Col: f.label.col, Text: f.text, Msg: fmt.Sprintf("undefined label %q", f.label.s), Err: ErrLabel}
			}
			target = a.firstExit // implicit label: the first exit instruction
		}
		d := int64(target) - int64(f.pc) - 1
		if f.imm {
			a.insns[f.idx].Imm = int32(d) // |d| < 2^31 slots: bounded by source size
			continue
		}
		if d < math.MinInt16 || d > math.MaxInt16 {
			return nil, &Error{Line: f.line, Col: f.label.col, Text: f.text, Msg: fmt.Sprintf("jump to %q is %d instructions away, beyond the 16-bit offset (use ja32)", f.label.s, d), Err: ErrRange}
		}
		a.insns[f.idx].Offset = int16(d)
	}
	return a.insns, nil
}

func (a *assembler) errf(sentinel error, col int, format string, args ...any) error {
	return &Error{Line: a.line, Col: col, Text: a.text, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

// word splits the first whitespace-delimited word off s (which starts at
// column col), returning it and the rest with its column.
func word(s string, col int) (w token, rest string, restCol int) {
	trimmed := strings.TrimLeft(s, " \t")
	col += len(s) - len(trimmed)
	end := strings.IndexAny(trimmed, " \t")
	if end < 0 {
		return token{trimmed, col}, "", col + len(trimmed)
	}
	return token{trimmed[:end], col}, trimmed[end:], col + end
}

func (a *assembler) parseLine(raw string) error {
	raw = strings.TrimSuffix(raw, "\r")
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	a.text = strings.TrimSpace(raw)
	rest, col := raw, 1
	var mn token
	for {
		mn, rest, col = word(rest, col)
		if mn.s == "" {
			return nil
		}
		if !strings.HasSuffix(mn.s, ":") {
			break
		}
		name := mn.s[:len(mn.s)-1]
		if !isIdent(name) {
			return a.errf(ErrLabel, mn.col, "invalid label name %q", name)
		}
		if prev, dup := a.labels[name]; dup {
			return a.errf(ErrLabel, mn.col, "label %q already defined at line %d", name, prev.line)
		}
		a.labels[name] = labelDef{pc: a.pc, line: a.line}
	}
	if strings.HasPrefix(mn.s, ".") || strings.HasPrefix(mn.s, "-") {
		return a.errf(ErrSyntax, mn.col, "unknown directive %q", mn.s)
	}
	if mn.s == "lock" {
		return a.parseLock(mn, rest, col)
	}
	sp, ok := mnemonics[mn.s]
	if !ok {
		return a.errf(ErrMnemonic, mn.col, "invalid mnemonic %q", mn.s)
	}
	callMode := token{}
	if sp.kind == kCall {
		if w, r, c := word(rest, col); w.s == "local" || w.s == "helper" || w.s == "runtime" {
			callMode, rest, col = w, r, c
		}
	}
	ops, err := a.operands(rest, col)
	if err != nil {
		return err
	}
	want := operandCount[sp.kind]
	if sp.kind == kLddw && len(ops) == 3 {
		want = 3
	}
	if len(ops) != want {
		return a.errf(ErrOperandCount, mn.col, "%s takes %d operand(s), got %d", mn.s, want, len(ops))
	}
	ins := Instruction{Opcode: sp.op, Offset: sp.off, Imm: sp.imm}
	switch sp.kind {
	case kALU, kJcc:
		if ins.Dst, err = a.reg(ops[0]); err != nil {
			return err
		}
		if isRegLike(ops[1].s) {
			ins.Opcode |= srcX
			if ins.Src, err = a.reg(ops[1]); err != nil {
				return err
			}
		} else if ins.Imm, err = a.imm32(ops[1]); err != nil {
			return err
		}
		if sp.kind == kJcc {
			if ins.Offset, err = a.target(ops[2], false); err != nil {
				return err
			}
		}
	case kNeg, kEnd:
		if ins.Dst, err = a.reg(ops[0]); err != nil {
			return err
		}
	case kMovSX:
		if ins.Dst, err = a.reg(ops[0]); err != nil {
			return err
		}
		if ins.Src, err = a.reg(ops[1]); err != nil {
			return err
		}
	case kJA:
		if ins.Offset, err = a.target(ops[0], false); err != nil {
			return err
		}
	case kJA32:
		if ins.Imm, err = a.targetImm(ops[0]); err != nil {
			return err
		}
	case kExit:
		if a.firstExit < 0 {
			a.firstExit = a.pc
		}
	case kCall:
		switch {
		case callMode.s == "local":
			ins.Src = pseudoCall
			if ins.Imm, err = a.targetImm(ops[0]); err != nil {
				return err
			}
		case callMode.s == "runtime":
			ins.Src = pseudoKfunc
			if ins.Imm, err = a.imm32(ops[0]); err != nil {
				return err
			}
		case isRegLike(ops[0].s):
			ins.Opcode |= srcX
			if ins.Dst, err = a.reg(ops[0]); err != nil {
				return err
			}
		default:
			if ins.Imm, err = a.imm32(ops[0]); err != nil {
				return err
			}
		}
	case kLddw:
		if err := a.lddw(&ins, ops); err != nil {
			return err
		}
	case kLdx:
		if ins.Dst, err = a.reg(ops[0]); err != nil {
			return err
		}
		if ins.Src, ins.Offset, err = a.mem(ops[1]); err != nil {
			return err
		}
	case kSt:
		if ins.Dst, ins.Offset, err = a.mem(ops[0]); err != nil {
			return err
		}
		if ins.Imm, err = a.imm32(ops[1]); err != nil {
			return err
		}
	case kStx:
		if ins.Dst, ins.Offset, err = a.mem(ops[0]); err != nil {
			return err
		}
		if ins.Src, err = a.reg(ops[1]); err != nil {
			return err
		}
	}
	a.emit(ins)
	return nil
}

func (a *assembler) emit(ins Instruction) {
	a.insns = append(a.insns, ins)
	a.pc += ins.Slots()
}

// parseLock parses "lock [fetch] op[32] [%rD+off], %rS".
func (a *assembler) parseLock(mn token, rest string, col int) error {
	op, rest, col := word(rest, col)
	fetch := false
	if op.s == "fetch" {
		fetch = true
		op, rest, col = word(rest, col)
	}
	if op.s == "" {
		return a.errf(ErrOperandCount, mn.col, "lock: missing operation (want lock [fetch] add|and|or|xor|xchg|cmpxchg[32] [%%rD+off], %%rS)")
	}
	name, opcode := op.s, uint8(classSTX|modeATOMIC|sizeDW)
	if n, ok := strings.CutSuffix(name, "32"); ok {
		name, opcode = n, classSTX|modeATOMIC|sizeW
	}
	imm, ok := lockOps[name]
	if !ok {
		return a.errf(ErrMnemonic, op.col, "invalid lock operation %q (want add, and, or, xor, xchg or cmpxchg, with optional 32 suffix)", op.s)
	}
	if fetch {
		imm |= atomicFetch
	}
	ops, err := a.operands(rest, col)
	if err != nil {
		return err
	}
	if len(ops) != 2 {
		return a.errf(ErrOperandCount, mn.col, "lock %s takes 2 operands ([%%rD+off], %%rS), got %d", op.s, len(ops))
	}
	ins := Instruction{Opcode: opcode, Imm: imm}
	if ins.Dst, ins.Offset, err = a.mem(ops[0]); err != nil {
		return err
	}
	if ins.Src, err = a.reg(ops[1]); err != nil {
		return err
	}
	a.emit(ins)
	return nil
}

func (a *assembler) lddw(ins *Instruction, ops []token) error {
	var err error
	if ins.Dst, err = a.reg(ops[0]); err != nil {
		return err
	}
	kw, arg, argCol := word(ops[1].s, ops[1].col)
	switch kw.s {
	case "map_fd", "map_value":
		if strings.TrimSpace(arg) == "" {
			return a.errf(ErrSyntax, kw.col, "%s needs a descriptor number", kw.s)
		}
		trimmed := strings.TrimLeft(arg, " \t")
		n := token{trimmed, argCol + len(arg) - len(trimmed)}
		if ins.Imm, err = a.imm32(n); err != nil {
			return err
		}
		if kw.s == "map_fd" {
			if len(ops) != 2 {
				return a.errf(ErrOperandCount, ops[0].col, "lddw with map_fd takes 2 operands, got %d", len(ops))
			}
			ins.Src = pseudoMapFD
			return nil
		}
		if len(ops) != 3 {
			return a.errf(ErrOperandCount, ops[0].col, "lddw with map_value takes 3 operands (%%rD, map_value N, offset), got %d", len(ops))
		}
		ins.Src = pseudoMapValue
		ins.Imm2, err = a.imm32(ops[2])
		return err
	}
	if len(ops) != 2 {
		return a.errf(ErrOperandCount, ops[0].col, "lddw takes 2 operands, got %d", len(ops))
	}
	v, err := a.imm64(ops[1])
	if err != nil {
		return err
	}
	ins.Imm, ins.Imm2 = int32(uint32(v)), int32(uint32(uint64(v)>>32))
	return nil
}

// operands splits s on commas into trimmed, non-empty tokens.
func (a *assembler) operands(s string, col int) ([]token, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []token
	for {
		part, rest, more := strings.Cut(s, ",")
		trimmed := strings.TrimLeft(part, " \t")
		c := col + len(part) - len(trimmed)
		trimmed = strings.TrimRight(trimmed, " \t")
		if trimmed == "" {
			return nil, a.errf(ErrSyntax, c, "empty operand")
		}
		out = append(out, token{trimmed, c})
		if !more {
			return out, nil
		}
		s, col = rest, col+len(part)+1
	}
}

func isRegLike(s string) bool {
	if strings.HasPrefix(s, "%") {
		return true
	}
	if len(s) < 2 || s[0] != 'r' {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (a *assembler) reg(t token) (uint8, error) {
	s := strings.TrimPrefix(t.s, "%")
	if n, ok := strings.CutPrefix(s, "r"); ok && n != "" && len(n) <= 2 && (n == "0" || n[0] != '0') {
		if v, err := strconv.ParseUint(n, 10, 8); err == nil && v <= MaxReg {
			return uint8(v), nil
		}
	}
	return 0, a.errf(ErrRegister, t.col, "invalid register %q (want %%r0-%%r10)", t.s)
}

// mem parses "[%rN]", "[%rN+off]" or "[%rN-off]".
func (a *assembler) mem(t token) (uint8, int16, error) {
	if !strings.HasPrefix(t.s, "[") || !strings.HasSuffix(t.s, "]") {
		return 0, 0, a.errf(ErrSyntax, t.col, "expected a memory operand like [%%r1+8], got %q", t.s)
	}
	inner := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, t.s[1:len(t.s)-1])
	i := strings.IndexAny(inner, "+-")
	regPart, offPart := inner, ""
	if i >= 0 {
		regPart, offPart = inner[:i], inner[i:]
	}
	r, err := a.reg(token{regPart, t.col + 1})
	if err != nil {
		return 0, 0, err
	}
	if offPart == "" {
		return r, 0, nil
	}
	off, err := a.offset16(token{offPart, t.col + 1 + i})
	return r, off, err
}

// target parses a jump target: a label (resolved later) or a signed
// literal "+N"/"-N" that must fit an int16 offset.
func (a *assembler) target(t token, imm bool) (int16, error) {
	if strings.HasPrefix(t.s, "+") || strings.HasPrefix(t.s, "-") {
		return a.offset16(t)
	}
	if !isIdent(t.s) {
		return 0, a.errf(ErrSyntax, t.col, "jump target %q is neither a label nor a signed offset like +3", t.s)
	}
	a.fixups = append(a.fixups, fixup{idx: len(a.insns), pc: a.pc, label: t, imm: imm, line: a.line, text: a.text})
	return 0, nil
}

// targetImm is target for the 32-bit pc-relative immediates of ja32 and
// call local.
func (a *assembler) targetImm(t token) (int32, error) {
	if strings.HasPrefix(t.s, "+") || strings.HasPrefix(t.s, "-") {
		neg, _, mag, err := a.number(t)
		if err != nil {
			return 0, err
		}
		if v, ok := signed(neg, mag, math.MinInt32, math.MaxInt32); ok {
			return int32(v), nil
		}
		return 0, a.errf(ErrRange, t.col, "relative target %s out of 32-bit range", t.s)
	}
	_, err := a.target(t, true)
	return 0, err
}

func (a *assembler) offset16(t token) (int16, error) {
	neg, _, mag, err := a.number(t)
	if err != nil {
		return 0, err
	}
	if v, ok := signed(neg, mag, math.MinInt16, math.MaxInt16); ok {
		return int16(v), nil
	}
	return 0, a.errf(ErrRange, t.col, "offset %s out of 16-bit signed range", t.s)
}

// imm32 accepts a signed 32-bit decimal, or a hex literal up to 0xffffffff
// (taken as its bit pattern, so 0xffffffff is -1).
func (a *assembler) imm32(t token) (int32, error) {
	neg, hex, mag, err := a.number(t)
	if err != nil {
		return 0, err
	}
	if hex && !neg && mag <= math.MaxUint32 {
		return int32(uint32(mag)), nil
	}
	if v, ok := signed(neg, mag, math.MinInt32, math.MaxInt32); ok {
		return int32(v), nil
	}
	return 0, a.errf(ErrRange, t.col, "immediate %s out of 32-bit range (want -2147483648..2147483647, or hex up to 0xffffffff)", t.s)
}

// imm64 accepts any value from -2^63 to 2^64-1, decimal or hex.
func (a *assembler) imm64(t token) (int64, error) {
	neg, _, mag, err := a.number(t)
	if err != nil {
		return 0, err
	}
	if !neg {
		return int64(mag), nil
	}
	if v, ok := signed(neg, mag, math.MinInt64, 0); ok {
		return v, nil
	}
	return 0, a.errf(ErrRange, t.col, "immediate %s out of 64-bit range", t.s)
}

// number parses an optionally signed decimal or 0x-prefixed hex literal.
func (a *assembler) number(t token) (neg, hex bool, mag uint64, err error) {
	s := t.s
	switch {
	case strings.HasPrefix(s, "-"):
		neg, s = true, s[1:]
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	}
	base := 10
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		hex, base, s = true, 16, s[2:]
	}
	if s == "" || s[0] == '+' || s[0] == '-' || strings.Contains(s, "_") {
		return false, false, 0, a.errf(ErrSyntax, t.col, "invalid number %q", t.s)
	}
	mag, perr := strconv.ParseUint(s, base, 64)
	if perr != nil {
		if ne, ok := perr.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return false, false, 0, a.errf(ErrRange, t.col, "number %s does not fit in 64 bits", t.s)
		}
		return false, false, 0, a.errf(ErrSyntax, t.col, "invalid number %q", t.s)
	}
	return neg, hex, mag, nil
}

// signed applies the sign to mag and reports whether it lies in [lo, hi].
func signed(neg bool, mag uint64, lo, hi int64) (int64, bool) {
	if !neg {
		if mag > uint64(hi) {
			return 0, false
		}
		return int64(mag), true
	}
	if mag > uint64(-(lo+1))+1 {
		return 0, false
	}
	return -int64(mag), true // mag == 2^63 wraps to MinInt64, as intended
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

package verifier

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// progGen makes random, plausibly structured programs: ALU on a few
// registers, stack spills and fills, context loads, map lookups with and
// without null checks, accesses through map values with constant and
// variable offsets, and forward conditional jumps.
type progGen struct {
	r   *rand.Rand
	xdp bool
	// subprograms called so far
	subScalar, subStack bool
}

// genRegs are the scalar registers; R7 and R8 hold map values (or NULL)
// and R6 the context.
var genRegs = []asm.Register{asm.R0, asm.R2, asm.R3, asm.R4, asm.R5, asm.R9}

var genImms = []int32{0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 255, 256, -1, -8, -16, 0x7fffffff, -0x80000000, 4096}

func (g *progGen) reg() asm.Register { return genRegs[g.r.Intn(len(genRegs))] }
func (g *progGen) imm() int32        { return genImms[g.r.Intn(len(genImms))] }
func (g *progGen) size() asm.Size {
	return []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}[g.r.Intn(4)]
}

func (g *progGen) item(n, i int) asm.Instructions {
	r := g.r
	label := func(j int) string { return fmt.Sprintf("L%d", j) }
	switch k := r.Intn(20); {
	case k < 6: // ALU
		ops := []asm.ALUOp{asm.Add, asm.Sub, asm.Mul, asm.Div, asm.Or, asm.And, asm.LSh, asm.RSh, asm.Mod, asm.Xor, asm.Mov, asm.ArSh}
		op := ops[r.Intn(len(ops))]
		dst := g.reg()
		if r.Intn(2) == 0 {
			v := g.imm()
			if op == asm.LSh || op == asm.RSh || op == asm.ArSh {
				v = int32(r.Intn(32))
			}
			if (op == asm.Div || op == asm.Mod) && v == 0 {
				v = 3
			}
			if r.Intn(3) == 0 {
				return asm.Instructions{op.Imm32(dst, v)}
			}
			return asm.Instructions{op.Imm(dst, v)}
		}
		if r.Intn(3) == 0 {
			return asm.Instructions{op.Reg32(dst, g.reg())}
		}
		return asm.Instructions{op.Reg(dst, g.reg())}
	case k < 8: // stack store
		off := int16(-8 * (1 + r.Intn(8)))
		if r.Intn(4) == 0 {
			off += int16(r.Intn(8))
		}
		if r.Intn(3) == 0 {
			return asm.Instructions{asm.StoreImm(asm.RFP, off, int64(g.imm()), []asm.Size{asm.Byte, asm.Half, asm.Word}[r.Intn(3)])}
		}
		return asm.Instructions{asm.StoreMem(asm.RFP, off, g.reg(), g.size())}
	case k < 10: // stack load
		off := int16(-8 * (1 + r.Intn(8)))
		if r.Intn(4) == 0 {
			off += int16(r.Intn(8))
		}
		return asm.Instructions{asm.LoadMem(g.reg(), asm.RFP, off, g.size())}
	case k < 11 && g.xdp && r.Intn(2) == 0 && i+1 < n: // packet bounds check and access
		end := int32(1 + r.Intn(40))
		off := int16(r.Intn(44))
		p := asm.Instructions{
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, end),
		}
		t := label(i + 1 + r.Intn(n-i))
		switch r.Intn(4) {
		case 0:
			p = append(p, asm.JGT.Reg(asm.R4, asm.R3, t))
		case 1:
			p = append(p, asm.JLT.Reg(asm.R3, asm.R4, t))
		case 2:
			p = append(p, asm.JGE.Reg(asm.R4, asm.R3, t))
		default:
			p = append(p, asm.JLE.Reg(asm.R3, asm.R4, t))
		}
		sz := []asm.Size{asm.Byte, asm.Half, asm.Word}[r.Intn(3)]
		if r.Intn(3) == 0 {
			return append(p, asm.StoreMem(asm.R2, off, g.reg(), sz))
		}
		return append(p, asm.LoadMem(g.reg(), asm.R2, off, sz))
	case k < 11: // ctx load
		if g.xdp {
			return asm.Instructions{asm.LoadMem(g.reg(), asm.R6, int16(4*r.Intn(6)), asm.Word)}
		}
		if r.Intn(3) == 0 { // legacy packet load (R6 holds the context)
			sz := []asm.Size{asm.Byte, asm.Half, asm.Word}[r.Intn(3)]
			k := []int32{0, 1, 9, 12, 23, 40, 4095, -1, -0x100000, -0x100000 + 9, -0x200000 + 12, -0x200001}[r.Intn(12)]
			if r.Intn(2) == 0 {
				return asm.Instructions{asm.LoadAbs(k, sz)}
			}
			return asm.Instructions{asm.LoadInd(asm.R0, g.reg(), k, sz)}
		}
		offs := []int16{0, 4, 8, 16, 36, 48, 52, 68}
		return asm.Instructions{asm.LoadMem(g.reg(), asm.R6, offs[r.Intn(len(offs))], asm.Word)}
	case k < 13: // map lookup into r7 or r8 (callee-saved), maybe null-checked
		dst := []asm.Register{asm.R7, asm.R8}[r.Intn(2)]
		m := r.Intn(2)
		p := asm.Instructions{
			asm.StoreImm(asm.RFP, -4, int64(r.Intn(3)), asm.Word),
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Reg(dst, asm.R0),
		}
		if r.Intn(5) != 0 && i+1 < n {
			p = append(p, asm.JEq.Imm(dst, 0, label(i+1+r.Intn(n-i))))
		}
		return p
	case k < 15: // access through r7/r8 (map value or whatever they hold)
		base := []asm.Register{asm.R7, asm.R8}[r.Intn(2)]
		off := int16(r.Intn(18) * 4)
		if base == asm.R7 {
			off = int16(r.Intn(5) * 4)
		}
		if r.Intn(2) == 0 {
			return asm.Instructions{asm.LoadMem(g.reg(), base, off, []asm.Size{asm.Byte, asm.Half, asm.Word}[r.Intn(3)])}
		}
		return asm.Instructions{asm.StoreMem(base, off, g.reg(), asm.Word)}
	case k < 16: // variable offset through a map value
		idx := g.reg()
		base := []asm.Register{asm.R7, asm.R8}[r.Intn(2)]
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, base),
			asm.Add.Reg(asm.R1, idx),
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Byte),
		}
	case k < 17 && r.Intn(2) == 0: // bounded loop on R1
		lbl := fmt.Sprintf("loop%d", i)
		body := asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			asm.Add.Imm(asm.R1, 1).WithSymbol(lbl),
			asm.Add.Reg(g.reg(), asm.R1),
		}
		if r.Intn(2) == 0 {
			return append(body, asm.JLT.Imm(asm.R1, int32(1+r.Intn(20)), lbl))
		}
		return append(body, asm.JNE.Imm32(asm.R1, int32(1+r.Intn(20)), lbl))
	case k < 17: // bpf-to-bpf call with a scalar or a stack pointer
		if r.Intn(2) == 0 {
			g.subScalar = true
			return asm.Instructions{asm.Mov.Reg(asm.R1, g.reg()), asm.Call.Label("sub_scalar"), asm.Mov.Reg(g.reg(), asm.R0)}
		}
		g.subStack = true
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(-8*(1+r.Intn(8)))),
			asm.Call.Label("sub_stack"), asm.Mov.Reg(g.reg(), asm.R0),
		}
	default: // forward conditional jump
		if i+1 >= n {
			return asm.Instructions{asm.Mov.Imm(asm.R0, 0)}
		}
		ops := []asm.JumpOp{asm.JEq, asm.JNE, asm.JGT, asm.JGE, asm.JLT, asm.JLE, asm.JSGT, asm.JSGE, asm.JSLT, asm.JSLE, asm.JSet}
		op := ops[r.Intn(len(ops))]
		t := label(i + 1 + r.Intn(n-i))
		if r.Intn(2) == 0 {
			if r.Intn(3) == 0 {
				return asm.Instructions{op.Imm32(g.reg(), g.imm(), t)}
			}
			return asm.Instructions{op.Imm(g.reg(), g.imm(), t)}
		}
		return asm.Instructions{op.Reg(g.reg(), g.reg(), t)}
	}
}

func (g *progGen) program() asm.Instructions {
	n := 5 + g.r.Intn(30)
	p := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	if g.r.Intn(4) != 0 {
		p = append(p, asm.Mov.Imm(asm.R1, 0))
		for off := int16(-64); off < 0; off += 8 {
			p = append(p, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
		}
	}
	for m, dst := range []asm.Register{asm.R7, asm.R8} {
		p = append(p,
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Reg(dst, asm.R0),
		)
		if g.r.Intn(8) != 0 {
			p = append(p, asm.JEq.Imm(dst, 0, fmt.Sprintf("L%d", n)))
		}
	}
	for _, r := range genRegs {
		if g.r.Intn(12) != 0 {
			p = append(p, asm.Mov.Imm(r, g.imm()))
		}
	}
	for i := range n {
		it := g.item(n, i)
		it[0] = it[0].WithSymbol(fmt.Sprintf("L%d", i))
		p = append(p, it...)
	}
	end := asm.Mov.Imm(asm.R0, 0)
	if g.r.Intn(2) == 0 {
		end = asm.And.Imm(asm.R0, 0xff)
	}
	p = append(p, end.WithSymbol(fmt.Sprintf("L%d", n)), asm.Return())
	if g.subScalar {
		p = append(p,
			asm.Mov.Imm(asm.R0, 1).WithSymbol("sub_scalar"),
			asm.JGT.Imm(asm.R1, 5, "sub_scalar_out"),
			asm.Mov.Reg(asm.R0, asm.R1),
			asm.Mul.Imm(asm.R0, 3),
			asm.Return().WithSymbol("sub_scalar_out"),
		)
	}
	if g.subStack {
		p = append(p,
			asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord).WithSymbol("sub_stack"),
			asm.Mov.Imm(asm.R2, 9),
			asm.StoreMem(asm.R1, 0, asm.R2, asm.DWord),
			asm.Return(),
		)
	}
	return p
}

// TestKernelDifferentialRandom loads random programs into the kernel and
// into Verify: whatever Verify accepts, the kernel must accept too (the
// other direction is allowed: bpfd is stricter by design).
func TestKernelDifferentialRandom(t *testing.T) {
	kernelAvailable(t)
	n := 3000
	if testing.Short() {
		n = 300
	}
	seed := int64(1)
	if s, err := strconv.ParseInt(os.Getenv("BPFD_DIFF_SEED"), 10, 64); err == nil {
		seed = s // explore further: BPFD_DIFF_SEED=n go test -run TestKernelDifferentialRandom
	}
	r := rand.New(rand.NewSource(seed))
	var both, onlyKernel, neither, deadPaths int
	reasons := map[string]int{}
	deadline := time.Now().Add(budget(45 * time.Second))
	for i := range n {
		if time.Now().After(deadline) {
			t.Logf("time budget reached after %d programs", i)
			n = i
			break
		}
		g := &progGen{r: r, xdp: i%2 == 1}
		insns := g.program()
		raw := marshal(t, insns)
		env := socketEnv(countsMap, readOnly(configMap))
		typ := ebpf.SocketFilter
		if g.xdp {
			env, typ = xdpEnv(countsMap, readOnly(configMap)), ebpf.XDP
		}
		env.Maps[0].ValueSize = 16
		_, v, err := verify(raw, env)
		kerr := kernelLoad(t, raw, env, typ)
		switch {
		case err == nil && kerr != nil:
			// Legitimate when bpfd proved the kernel's failing path dead
			// (it tracks some operations, like division, more precisely).
			if pc := kernelFailPC(kerr); pc >= 0 && pc < len(v.reached) && !v.reached[pc] {
				deadPaths++
				t.Logf("program %d: kernel fails at insn %d, which bpfd proved unreachable", i, pc)
				continue
			}
			t.Errorf("program %d: bpfd accepts, kernel rejects: %v\n%v", i, kerr, insns)
		case err == nil:
			both++
		case kerr == nil:
			onlyKernel++
			var ve *Error
			if errors.As(err, &ve) && onlyKernel <= 12 {
				t.Logf("program %d: only the kernel accepts: %s", i, ve.Msg)
			}
		default:
			neither++
			var ve *Error
			if errors.As(err, &ve) {
				reasons[reasonKey(ve.Msg)]++
			}
		}
	}
	t.Logf("%d programs: both accept %d, only kernel %d, both reject %d, kernel rejects on a path bpfd proved dead %d",
		n, both, onlyKernel, neither, deadPaths)
	t.Logf("reasons both reject: %v", reasons)
}

// reasonKey shortens a message to its words without numbers.
func reasonKey(msg string) string {
	var w []string
	for _, f := range strings.Fields(msg) {
		if strings.ContainsAny(f, "0123456789") {
			continue
		}
		w = append(w, f)
		if len(w) == 4 {
			break
		}
	}
	return strings.Join(w, " ")
}

var kernelInsnRe = regexp.MustCompile(`^\s*(\d+): \(`)

// kernelFailPC returns the instruction the kernel's log ends at, or -1.
func kernelFailPC(err error) int {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return -1
	}
	for i := len(ve.Log) - 1; i >= 0; i-- {
		if m := kernelInsnRe.FindStringSubmatch(ve.Log[i]); m != nil {
			pc, _ := strconv.Atoi(m[1])
			return pc
		}
	}
	return -1
}

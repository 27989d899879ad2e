package interp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/internal/progen"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

// raw marshals instructions (jump offsets set by hand) to bpf_attr.insns bytes.
func raw(t testing.TB, insns ...asm.Instruction) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := asm.Instructions(insns).Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return buf.Bytes()
}

// load loads insns with cfg and fails the test on error.
func load(t testing.TB, cfg *interp.Config, insns ...asm.Instruction) *interp.Program {
	t.Helper()
	p, err := interp.Load(raw(t, insns...), cfg)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

// off sets a jump's offset.
func off(ins asm.Instruction, o int16) asm.Instruction { ins.Offset = o; return ins }

func callLocal(rel int64) asm.Instruction {
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoCall, Constant: rel}
}

func callx(r asm.Register) asm.Instruction {
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call).SetSource(asm.RegSource), Dst: r}
}

const (
	minInt64 = math.MinInt64
	u64Max   = math.MaxUint64
)

type runCase struct {
	name  string
	insns []asm.Instruction
	mem   []byte
	want  uint64
}

func runCases(t *testing.T, cases []runCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			insns := append(append([]asm.Instruction{}, tc.insns...), asm.Return())
			p := load(t, nil, insns...)
			got, err := p.Run(tc.mem)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got != tc.want {
				t.Fatalf("r0 = %#x, want %#x", got, tc.want)
			}
		})
	}
}

func lddw(r asm.Register, v uint64) asm.Instruction { return asm.LoadImm(r, int64(v), asm.DWord) }

func TestALU64(t *testing.T) {
	runCases(t, []runCase{
		{name: "add imm sign-extends", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 1), asm.Add.Imm(asm.R0, -2)}, want: u64Max},
		{name: "add reg", insns: []asm.Instruction{lddw(asm.R0, 1<<40), lddw(asm.R1, 5), asm.Add.Reg(asm.R0, asm.R1)}, want: 1<<40 + 5},
		{name: "sub", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 3), asm.Sub.Imm(asm.R0, 5)}, want: u64Max - 1},
		{name: "mul", insns: []asm.Instruction{lddw(asm.R0, 1<<33), asm.Mov.Imm(asm.R1, 3), asm.Mul.Reg(asm.R0, asm.R1)}, want: 3 << 33},
		{name: "div imm is unsigned of sign-extended", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1), asm.Div.Imm(asm.R0, -1)}, want: 1},
		{name: "div by zero reg", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 7), asm.Mov.Imm(asm.R1, 0), asm.Div.Reg(asm.R0, asm.R1)}, want: 0},
		{name: "div by zero imm", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 7), asm.Div.Imm(asm.R0, 0)}, want: 0},
		{name: "mod by zero keeps dst", insns: []asm.Instruction{lddw(asm.R0, 0x1_0000_0007), asm.Mov.Imm(asm.R1, 0), asm.Mod.Reg(asm.R0, asm.R1)}, want: 0x1_0000_0007},
		{name: "mod", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 17), asm.Mod.Imm(asm.R0, 5)}, want: 2},
		{name: "sdiv", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -7), asm.SDiv.Imm(asm.R0, 2)}, want: uint64(math.MaxUint64 - 2)},
		{name: "sdiv intmin by -1", insns: []asm.Instruction{lddw(asm.R0, 1<<63), asm.Mov.Imm(asm.R1, -1), asm.SDiv.Reg(asm.R0, asm.R1)}, want: 1 << 63},
		{name: "sdiv by zero", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -7), asm.SDiv.Imm(asm.R0, 0)}, want: 0},
		{name: "smod sign follows dividend", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -7), asm.SMod.Imm(asm.R0, 2)}, want: u64Max},
		{name: "smod intmin by -1", insns: []asm.Instruction{lddw(asm.R0, 1<<63), asm.SMod.Imm(asm.R0, -1)}, want: 0},
		{name: "smod by zero keeps dst", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -7), asm.Mov.Imm(asm.R1, 0), asm.SMod.Reg(asm.R0, asm.R1)}, want: uint64(math.MaxUint64 - 6)},
		{name: "or and xor", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 0xf0), asm.Or.Imm(asm.R0, 0x0f), asm.And.Imm(asm.R0, 0x3c), asm.Xor.Imm(asm.R0, 0x11)}, want: 0x2d},
		{name: "lsh masks amount", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 1), asm.Mov.Imm(asm.R1, 65), asm.LSh.Reg(asm.R0, asm.R1)}, want: 2},
		{name: "rsh", insns: []asm.Instruction{lddw(asm.R0, 1<<63), asm.RSh.Imm(asm.R0, 62)}, want: 2},
		{name: "arsh", insns: []asm.Instruction{lddw(asm.R0, 1<<63), asm.Mov.Imm(asm.R1, 62+64), asm.ArSh.Reg(asm.R0, asm.R1)}, want: u64Max - 1},
		{name: "neg", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 5), asm.Neg.Imm(asm.R0, 0)}, want: uint64(math.MaxUint64 - 4)},
		{name: "mov imm sign-extends", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1)}, want: u64Max},
		{name: "movsx8", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, 0x180), asm.MovSX8.Reg(asm.R0, asm.R1)}, want: u64Max - 0x7f},
		{name: "movsx16", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, 0x8000), asm.MovSX16.Reg(asm.R0, asm.R1)}, want: u64Max - 0x7fff},
		{name: "movsx32", insns: []asm.Instruction{lddw(asm.R1, 0x1_8000_0000), asm.MovSX32.Reg(asm.R0, asm.R1)}, want: u64Max - 0x7fff_ffff},
		{name: "bswap16", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.BSwap(asm.R0, asm.Half)}, want: 0x8877},
		{name: "bswap32", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.BSwap(asm.R0, asm.Word)}, want: 0x88776655},
		{name: "bswap64", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.BSwap(asm.R0, asm.DWord)}, want: 0x8877665544332211},
		{name: "le16 truncates", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.HostTo(asm.LE, asm.R0, asm.Half)}, want: 0x7788},
		{name: "le32 truncates", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.HostTo(asm.LE, asm.R0, asm.Word)}, want: 0x55667788},
		{name: "le64 keeps", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.HostTo(asm.LE, asm.R0, asm.DWord)}, want: 0x1122334455667788},
		{name: "be16 swaps", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.HostTo(asm.BE, asm.R0, asm.Half)}, want: 0x8877},
		{name: "be64 swaps", insns: []asm.Instruction{lddw(asm.R0, 0x1122334455667788), asm.HostTo(asm.BE, asm.R0, asm.DWord)}, want: 0x8877665544332211},
	})
}

func TestALU32(t *testing.T) {
	runCases(t, []runCase{
		{name: "add zero-extends", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1), asm.Add.Imm32(asm.R0, 2)}, want: 1},
		{name: "sub wraps", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, 0), asm.Sub.Imm32(asm.R0, 1)}, want: 0xffffffff},
		{name: "mul", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, 0x10000), asm.Mul.Reg32(asm.R0, asm.R0)}, want: 0},
		{name: "div by zero", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1), asm.Mov.Imm(asm.R1, 0), asm.Div.Reg32(asm.R0, asm.R1)}, want: 0},
		{name: "div uses low bits of divisor", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, 10), lddw(asm.R1, 0x1_0000_0002), asm.Div.Reg32(asm.R0, asm.R1)}, want: 5},
		{name: "mod by zero truncates dst", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1), asm.Mov.Imm(asm.R1, 0), asm.Mod.Reg32(asm.R0, asm.R1)}, want: 0xffffffff},
		{name: "sdiv", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, -8), asm.SDiv.Imm32(asm.R0, 2)}, want: 0xfffffffc},
		{name: "sdiv intmin by -1", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, math.MinInt32), asm.SDiv.Imm32(asm.R0, -1)}, want: 0x80000000},
		{name: "smod", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, -7), asm.SMod.Imm32(asm.R0, 3)}, want: 0xffffffff},
		{name: "smod by zero truncates dst", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -7), asm.SMod.Imm32(asm.R0, 0)}, want: 0xfffffff9},
		{name: "lsh masks 31", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, 1), asm.LSh.Imm32(asm.R0, 33)}, want: 2},
		{name: "rsh", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1), asm.RSh.Imm32(asm.R0, 28)}, want: 0xf},
		{name: "arsh", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, math.MinInt32), asm.Mov.Imm(asm.R1, 31), asm.ArSh.Reg32(asm.R0, asm.R1)}, want: 0xffffffff},
		{name: "neg", insns: []asm.Instruction{asm.Mov.Imm32(asm.R0, 1), asm.Neg.Imm32(asm.R0, 0)}, want: 0xffffffff},
		{name: "or and xor", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, -1), asm.And.Imm32(asm.R0, 0xff), asm.Or.Imm32(asm.R0, 0x100), asm.Xor.Imm32(asm.R0, 1)}, want: 0x1fe},
		{name: "mov reg truncates", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, -1), asm.Mov.Reg32(asm.R0, asm.R1)}, want: 0xffffffff},
		{name: "movsx8 zero-extends", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, 0x80), asm.MovSX8.Reg32(asm.R0, asm.R1)}, want: 0xffffff80},
		{name: "movsx16 zero-extends", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, 0x8000), asm.MovSX16.Reg32(asm.R0, asm.R1)}, want: 0xffff8000},
	})
}

func TestJumps(t *testing.T) {
	// Each program: r0 = 1, then the jump skips "r0 = 2" when taken.
	type jc struct {
		name  string
		setup []asm.Instruction
		jump  asm.Instruction
		taken bool
	}
	r1 := func(v int64) asm.Instruction { return lddw(asm.R1, uint64(v)) }
	r2 := func(v int64) asm.Instruction { return lddw(asm.R2, uint64(v)) }
	cases := []jc{
		{"ja", nil, asm.Ja.Label(""), true},
		{"jeq imm", []asm.Instruction{r1(-1)}, asm.JEq.Imm(asm.R1, -1, ""), true},
		{"jeq32 imm high bits ignored", []asm.Instruction{r1(0x1_0000_0005)}, asm.JEq.Imm32(asm.R1, 5, ""), true},
		{"jeq64 imm high bits count", []asm.Instruction{r1(0x1_0000_0005)}, asm.JEq.Imm(asm.R1, 5, ""), false},
		{"jne reg", []asm.Instruction{r1(1), r2(2)}, asm.JNE.Reg(asm.R1, asm.R2, ""), true},
		{"jgt unsigned", []asm.Instruction{r1(-1)}, asm.JGT.Imm(asm.R1, 1, ""), true},
		{"jsgt signed", []asm.Instruction{r1(-1)}, asm.JSGT.Imm(asm.R1, 1, ""), false},
		{"jge equal", []asm.Instruction{r1(3), r2(3)}, asm.JGE.Reg(asm.R1, asm.R2, ""), true},
		{"jsge", []asm.Instruction{r1(-3), r2(-3)}, asm.JSGE.Reg(asm.R1, asm.R2, ""), true},
		{"jlt", []asm.Instruction{r1(1)}, asm.JLT.Imm(asm.R1, -1, ""), true},
		{"jslt", []asm.Instruction{r1(1)}, asm.JSLT.Imm(asm.R1, -1, ""), false},
		{"jle", []asm.Instruction{r1(5), r2(4)}, asm.JLE.Reg(asm.R1, asm.R2, ""), false},
		{"jsle", []asm.Instruction{r1(-5), r2(4)}, asm.JSLE.Reg(asm.R1, asm.R2, ""), true},
		{"jset", []asm.Instruction{r1(6)}, asm.JSet.Imm(asm.R1, 2, ""), true},
		{"jset miss", []asm.Instruction{r1(6)}, asm.JSet.Imm(asm.R1, 1, ""), false},
		{"jset32 reg", []asm.Instruction{r1(0x1_0000_0000), r2(0x1_0000_0000)}, asm.JSet.Reg32(asm.R1, asm.R2, ""), false},
		{"jgt32 reg", []asm.Instruction{r1(0x2), r2(0x1_0000_0001)}, asm.JGT.Reg32(asm.R1, asm.R2, ""), true},
		{"jsgt32", []asm.Instruction{r1(0x8000_0000)}, asm.JSGT.Imm32(asm.R1, 0, ""), false},
		{"jsge32 reg", []asm.Instruction{r1(0), r2(0xffff_ffff)}, asm.JSGE.Reg32(asm.R1, asm.R2, ""), true},
		{"jge32", []asm.Instruction{r1(0xffff_ffff)}, asm.JGE.Imm32(asm.R1, -1, ""), true},
		{"jlt32", []asm.Instruction{r1(0x1_0000_0000)}, asm.JLT.Imm32(asm.R1, 1, ""), true},
		{"jle32 reg", []asm.Instruction{r1(7), r2(6)}, asm.JLE.Reg32(asm.R1, asm.R2, ""), false},
		{"jslt32 reg", []asm.Instruction{r1(0xffff_ffff), r2(0)}, asm.JSLT.Reg32(asm.R1, asm.R2, ""), true},
		{"jsle32", []asm.Instruction{r1(0x7fff_ffff)}, asm.JSLE.Imm32(asm.R1, -1, ""), false},
		{"jne32 reg", []asm.Instruction{r1(0x1_0000_0000), r2(0)}, asm.JNE.Reg32(asm.R1, asm.R2, ""), false},
		{"jeq32 reg", []asm.Instruction{r1(0x1_0000_0000), r2(0)}, asm.JEq.Reg32(asm.R1, asm.R2, ""), true},
		{"jne32 imm", []asm.Instruction{r1(3)}, asm.JNE.Imm32(asm.R1, 3, ""), false},
		{"gotol", nil, asm.LongJump(""), true},
	}
	var rc []runCase
	for _, c := range cases {
		j := off(c.jump, 1)
		if c.name == "gotol" {
			j.Constant, j.Offset = 1, 0
		}
		want := uint64(2)
		if c.taken {
			want = 1
		}
		insns := append(append([]asm.Instruction{asm.Mov.Imm(asm.R0, 1)}, c.setup...), j, asm.Mov.Imm(asm.R0, 2))
		rc = append(rc, runCase{name: c.name, insns: insns, want: want})
	}
	runCases(t, rc)
}

func TestMemory(t *testing.T) {
	mem := []byte{0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0, 0, 0, 0, 0, 0, 0, 0}
	runCases(t, []runCase{
		{name: "ldxb", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R1, 1, asm.Byte)}, mem: mem, want: 0x82},
		{name: "ldxh", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R1, 1, asm.Half)}, mem: mem, want: 0x8382},
		{name: "ldxw", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R1, 4, asm.Word)}, mem: mem, want: 0x88878685},
		{name: "ldxdw", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord)}, mem: mem, want: 0x8887868584838281},
		{name: "ldxsb", insns: []asm.Instruction{asm.LoadMemSX(asm.R0, asm.R1, 0, asm.Byte)}, mem: mem, want: 0xffffffffffffff81},
		{name: "ldxsh", insns: []asm.Instruction{asm.LoadMemSX(asm.R0, asm.R1, 0, asm.Half)}, mem: mem, want: 0xffffffffffff8281},
		{name: "ldxsw", insns: []asm.Instruction{asm.LoadMemSX(asm.R0, asm.R1, 0, asm.Word)}, mem: mem, want: 0xffffffff84838281},
		{name: "ldx last byte", insns: []asm.Instruction{asm.Add.Imm(asm.R1, 15), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, mem: mem, want: 0},
		{name: "stb sth stw stdw", insns: []asm.Instruction{
			progen.StoreImm(asm.R10, -8, -1, asm.DWord),
			asm.StoreImm(asm.R10, -8, 0x11, asm.Byte),
			asm.StoreImm(asm.R10, -7, 0x2222, asm.Half),
			asm.StoreImm(asm.R10, -4, 0x33, asm.Word),
			asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord),
		}, want: 0x00000033ff222211},
		{name: "stx sizes", insns: []asm.Instruction{
			lddw(asm.R2, 0x1122334455667788),
			asm.StoreMem(asm.R1, 8, asm.R2, asm.DWord),
			asm.StoreMem(asm.R1, 8, asm.R2, asm.Byte),
			asm.StoreMem(asm.R1, 9, asm.R2, asm.Half),
			asm.StoreMem(asm.R1, 12, asm.R2, asm.Word),
			asm.LoadMem(asm.R0, asm.R1, 8, asm.DWord),
		}, mem: mem, want: 0x5566778855778888},
		{name: "stack starts zeroed", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R10, -512, asm.DWord)}, want: 0},
		{name: "r10 is the top of the stack", insns: []asm.Instruction{asm.StoreImm(asm.R10, -1, 7, asm.Byte), asm.LoadMem(asm.R0, asm.R10, -1, asm.Byte)}, want: 7},
	})
}

func TestAtomics(t *testing.T) {
	type ac struct {
		name string
		op   asm.AtomicOp
		size asm.Size
		mem  uint64 // initial [r10-8]
		src  uint64
		r0   uint64 // for cmpxchg
		// expected memory afterwards and register (src for fetch, r0 for cmpxchg)
		wantMem, wantReg uint64
	}
	cases := []ac{
		{"add64", asm.AddAtomic, asm.DWord, 10, 5, 0, 15, 5},
		{"fetch add64", asm.FetchAdd, asm.DWord, 10, 5, 0, 15, 10},
		{"or64", asm.OrAtomic, asm.DWord, 0xf0, 0x0f, 0, 0xff, 0x0f},
		{"fetch or64", asm.FetchOr, asm.DWord, 0xf0, 0x0f, 0, 0xff, 0xf0},
		{"and64", asm.AndAtomic, asm.DWord, 0xf0, 0x3c, 0, 0x30, 0x3c},
		{"fetch and64", asm.FetchAnd, asm.DWord, 0xf0, 0x3c, 0, 0x30, 0xf0},
		{"xor64", asm.XorAtomic, asm.DWord, 0xff, 0x0f, 0, 0xf0, 0x0f},
		{"fetch xor64", asm.FetchXor, asm.DWord, 0xff, 0x0f, 0, 0xf0, 0xff},
		{"xchg64", asm.Xchg, asm.DWord, 1 << 40, 3, 0, 3, 1 << 40},
		{"cmpxchg64 match", asm.CmpXchg, asm.DWord, 1 << 40, 3, 1 << 40, 3, 1 << 40},
		{"cmpxchg64 miss", asm.CmpXchg, asm.DWord, 1 << 40, 3, 1, 1 << 40, 1 << 40},
		{"add32 keeps high word", asm.AddAtomic, asm.Word, 0x1_ffff_ffff, 1, 0, 0x1_0000_0000, 1},
		{"fetch add32 zero-extends", asm.FetchAdd, asm.Word, 0x1_ffff_ffff, 1 | 1<<40, 0, 0x1_0000_0000, 0xffff_ffff},
		{"fetch or32", asm.FetchOr, asm.Word, 0x10, 0x01, 0, 0x11, 0x10},
		{"fetch and32", asm.FetchAnd, asm.Word, 0x11, 0x01, 0, 0x01, 0x11},
		{"fetch xor32", asm.FetchXor, asm.Word, 0x11, 0x01, 0, 0x10, 0x11},
		{"or32", asm.OrAtomic, asm.Word, 0x10, 0x01, 0, 0x11, 0x01},
		{"and32", asm.AndAtomic, asm.Word, 0x11, 0x01, 0, 0x01, 0x01},
		{"xor32", asm.XorAtomic, asm.Word, 0x11, 0x01, 0, 0x10, 0x01},
		{"xchg32", asm.Xchg, asm.Word, 0x5_0000_0007, 9, 0, 0x5_0000_0009, 7},
		{"cmpxchg32 compares low bits", asm.CmpXchg, asm.Word, 0x5_0000_0007, 9, 0x1_0000_0007, 0x5_0000_0009, 7},
		{"cmpxchg32 miss", asm.CmpXchg, asm.Word, 7, 9, 8, 7, 7},
	}
	for _, c := range cases {
		reg := asm.R1
		if c.op == asm.CmpXchg {
			reg = asm.R0
		}
		for _, stack := range []bool{true, false} {
			name := c.name + "/mem"
			base := asm.R6
			if stack {
				name = c.name + "/stack"
				base = asm.R10
			}
			t.Run(name, func(t *testing.T) {
				// r6 = r1 + 8 (an aligned slot in mem), or r10-8 on the stack.
				p := load(t, nil,
					asm.Mov.Reg(asm.R6, asm.R1), asm.Add.Imm(asm.R6, 16),
					lddw(asm.R2, c.mem), asm.StoreMem(base, -8, asm.R2, asm.DWord),
					lddw(asm.R1, c.src), lddw(asm.R0, c.r0),
					progen.Atomic(c.op, base, asm.R1, c.size, -8),
					asm.StoreMem(asm.R6, 0, reg, asm.DWord),
					asm.LoadMem(asm.R0, base, -8, asm.DWord),
					asm.Return())
				got, err := p.Run(make([]byte, 24))
				if err != nil {
					t.Fatal(err)
				}
				if got != c.wantMem {
					t.Errorf("memory = %#x, want %#x", got, c.wantMem)
				}
				// The register was stored at r6; read it back with a second program.
				if c.op == asm.AddAtomic || c.op == asm.OrAtomic || c.op == asm.AndAtomic || c.op == asm.XorAtomic {
					return
				}
				chk := load(t, nil,
					asm.Mov.Reg(asm.R6, asm.R1), asm.Add.Imm(asm.R6, 16),
					lddw(asm.R2, c.mem), asm.StoreMem(base, -8, asm.R2, asm.DWord),
					lddw(asm.R1, c.src), lddw(asm.R0, c.r0),
					progen.Atomic(c.op, base, asm.R1, c.size, -8),
					asm.Mov.Reg(asm.R0, reg),
					asm.Return())
				if got, err := chk.Run(make([]byte, 24)); err != nil || got != c.wantReg {
					t.Errorf("register = %#x, %v, want %#x", got, err, c.wantReg)
				}
			})
		}
	}
}

func TestAtomicMisaligned(t *testing.T) {
	// A misaligned atomic still works inside the region (the kernel verifier
	// would refuse it; the interpreter only guarantees confinement).
	p := load(t, nil,
		asm.Mov.Imm(asm.R2, 5),
		progen.Atomic(asm.AddAtomic, asm.R1, asm.R2, asm.DWord, 1),
		progen.Atomic(asm.FetchAdd, asm.R1, asm.R2, asm.Word, 1),
		progen.Atomic(asm.Xchg, asm.R1, asm.R2, asm.Word, 5),
		progen.Atomic(asm.CmpXchg, asm.R1, asm.R2, asm.Word, 5),
		asm.LoadMem(asm.R0, asm.R1, 1, asm.DWord),
		asm.Return())
	got, err := p.Run(make([]byte, 9))
	if want := uint64(5<<32 | 10); err != nil || got != want {
		t.Fatalf("Run = %#x, %v; want %#x", got, err, want)
	}
}

func TestCallLocal(t *testing.T) {
	t.Run("frames", func(t *testing.T) {
		// main: stores 1 at its [r10-8], r6=6, calls f; f writes its own
		// [r10-8], clobbers r6; main then returns [r10-8]*100 + r6 + f's r0.
		p := load(t, nil,
			progen.StoreImm(asm.R10, -8, 1, asm.DWord),
			asm.Mov.Imm(asm.R6, 6),
			asm.Mov.Reg(asm.R1, asm.R10),
			callLocal(5),
			asm.LoadMem(asm.R1, asm.R10, -8, asm.DWord),
			asm.Mul.Imm(asm.R1, 100),
			asm.Add.Reg(asm.R0, asm.R1),
			asm.Add.Reg(asm.R0, asm.R6),
			asm.Return(),
			// f: the stack is fresh, the caller's frame reachable through r1.
			asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord), // 0
			progen.StoreImm(asm.R10, -8, 50, asm.DWord),
			asm.LoadMem(asm.R2, asm.R1, -8, asm.DWord), // 1 from the caller
			asm.Add.Reg(asm.R0, asm.R2),
			asm.Mov.Imm(asm.R6, 1000),
			asm.Return(),
		)
		got, err := p.Run(nil)
		if err != nil || got != 100+6+1 {
			t.Fatalf("Run = %d, %v; want 107", got, err)
		}
	})
	t.Run("depth", func(t *testing.T) {
		// f recurses while r1 > 0: depth r1+1 frames.
		mk := func(depth int32) *interp.Program {
			return load(t, nil,
				asm.Mov.Imm(asm.R1, depth-1),
				callLocal(1),
				asm.Return(),
				// f:
				off(asm.JEq.Imm(asm.R1, 0, ""), 2),
				asm.Sub.Imm(asm.R1, 1),
				callLocal(-3),
				asm.Mov.Imm(asm.R0, 42),
				asm.Return())
		}
		if got, err := mk(interp.MaxFrames - 1).Run(nil); err != nil || got != 42 {
			t.Fatalf("%d frames: %d, %v", interp.MaxFrames, got, err)
		}
		_, err := mk(interp.MaxFrames).Run(nil)
		var f *interp.Fault
		if !errors.Is(err, interp.ErrCallDepth) || !errors.As(err, &f) || f.PC != 5 {
			t.Fatalf("%d frames: %v, want ErrCallDepth at pc 5", interp.MaxFrames+1, err)
		}
	})
}

func TestFaults(t *testing.T) {
	ro := make([]byte, 16)
	cfg := &interp.Config{
		StaticRegions: []interp.Region{{Data: ro}},
		Helpers: map[int32]interp.HelperFunc{
			1: func(*interp.VM, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
				return 0, errors.New("boom")
			},
		},
	}
	cases := []struct {
		name  string
		insns []asm.Instruction
		mem   []byte
		want  error
		pc    int
		addr  uint64
	}{
		{name: "null load", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, 0), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, want: interp.ErrOutOfBounds, pc: 1, addr: 0},
		{name: "scalar load", insns: []asm.Instruction{asm.Mov.Imm(asm.R1, 4096), asm.LoadMem(asm.R0, asm.R1, 0, asm.Word)}, want: interp.ErrOutOfBounds, pc: 1, addr: 4096},
		{name: "past end of mem", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R1, 1, asm.DWord)}, mem: make([]byte, 8), want: interp.ErrOutOfBounds},
		{name: "below mem", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R1, -1, asm.Byte)}, mem: make([]byte, 8), want: interp.ErrOutOfBounds},
		{name: "above stack", insns: []asm.Instruction{asm.StoreImm(asm.R10, 0, 1, asm.Byte)}, want: interp.ErrOutOfBounds},
		{name: "below stack", insns: []asm.Instruction{asm.StoreImm(asm.R10, -513, 1, asm.Byte)}, want: interp.ErrOutOfBounds},
		{name: "straddling stack top", insns: []asm.Instruction{asm.LoadMem(asm.R0, asm.R10, -4, asm.DWord)}, want: interp.ErrOutOfBounds},
		{name: "read-only store", insns: []asm.Instruction{lddw(asm.R1, interp.StaticPointer(0, 0)), asm.StoreImm(asm.R1, 0, 1, asm.Byte)}, want: interp.ErrReadOnly, pc: 2, addr: interp.StaticPointer(0, 0)},
		{name: "read-only atomic", insns: []asm.Instruction{lddw(asm.R1, interp.StaticPointer(0, 8)), progen.Atomic(asm.AddAtomic, asm.R1, asm.R1, asm.DWord, 0)}, want: interp.ErrReadOnly, pc: 2, addr: interp.StaticPointer(0, 8)},
		{name: "absent static region", insns: []asm.Instruction{lddw(asm.R1, interp.StaticPointer(1, 0)), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, want: interp.ErrOutOfBounds, pc: 2, addr: interp.StaticPointer(1, 0)},
		{name: "fall off", insns: []asm.Instruction{asm.Mov.Imm(asm.R0, 0)}, want: interp.ErrFallOff, pc: 1},
		{name: "infinite loop", insns: []asm.Instruction{off(asm.Ja.Label(""), -1)}, want: interp.ErrBudget},
		{name: "helper error", insns: []asm.Instruction{asm.FnMapLookupElem.Call()}, want: interp.ErrHelper},
		{name: "callx unknown", insns: []asm.Instruction{asm.Mov.Imm(asm.R2, 2), callx(asm.R2)}, want: interp.ErrBadCall, pc: 1, addr: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, cfg, tc.insns...)
			_, err := p.Run(tc.mem)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			var f *interp.Fault
			if !errors.As(err, &f) {
				t.Fatalf("%T is not a *Fault", err)
			}
			if tc.pc != 0 && f.PC != tc.pc {
				t.Errorf("PC = %d, want %d", f.PC, tc.pc)
			}
			if tc.addr != 0 && f.Addr != tc.addr {
				t.Errorf("Addr = %#x, want %#x", f.Addr, tc.addr)
			}
			if f.Error() == "" {
				t.Error("empty message")
			}
		})
	}
	if string(ro) != string(make([]byte, 16)) {
		t.Fatal("read-only region modified")
	}
}

func TestBudget(t *testing.T) {
	p := load(t, nil, asm.Mov.Imm(asm.R0, 0), asm.Add.Imm(asm.R0, 1), asm.Add.Imm(asm.R0, 1), asm.Return())
	for _, tc := range []struct {
		name   string
		budget uint64
		ok     bool
	}{
		{name: "exact", budget: 4, ok: true},
		{name: "one short", budget: 3},
		{name: "one", budget: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := interp.NewVM(&interp.VMConfig{Budget: tc.budget})
			r0, err := vm.Run(p)
			if tc.ok {
				if err != nil || r0 != 2 || vm.Executed() != 4 {
					t.Fatalf("Run = %d, %v, executed %d", r0, err, vm.Executed())
				}
				return
			}
			if !errors.Is(err, interp.ErrBudget) || vm.Executed() != tc.budget {
				t.Fatalf("Run = %v, executed %d; want ErrBudget after %d", err, vm.Executed(), tc.budget)
			}
		})
	}
}

func TestLoadReject(t *testing.T) {
	enc := func(code, regs byte, off int16, imm int32) []byte {
		b := []byte{code, regs, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint16(b[2:], uint16(off))
		binary.LittleEndian.PutUint32(b[4:], uint32(imm))
		return b
	}
	exit := enc(0x95, 0, 0, 0)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	cases := []struct {
		name string
		prog []byte
		cfg  *interp.Config
		want error
	}{
		{name: "empty", prog: nil, want: interp.ErrProgramSize},
		{name: "partial insn", prog: exit[:7], want: interp.ErrProgramSize},
		{name: "unknown opcode", prog: cat(enc(0xff, 0, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "register 11", prog: cat(enc(0xb7, 0x0b, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "write r10", prog: cat(enc(0xb7, 0x0a, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "ldx into r10", prog: cat(enc(0x79, 0xaa, -8, 0), exit), want: interp.ErrInvalidInsn},
		{name: "fetch into r10", prog: cat(enc(0xdb, 0xa1, -8, 1), exit), want: interp.ErrInvalidInsn},
		{name: "jump out of range", prog: cat(enc(0x05, 0, 5, 0), exit), want: interp.ErrInvalidInsn},
		{name: "jump backwards out of range", prog: cat(enc(0x05, 0, -2, 0), exit), want: interp.ErrInvalidInsn},
		{name: "jump into lddw", prog: cat(enc(0x05, 0, 1, 0), enc(0x18, 0, 0, 1), enc(0, 0, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "lddw truncated", prog: cat(exit, enc(0x18, 0, 0, 1)), want: interp.ErrInvalidInsn},
		{name: "lddw second slot opcode", prog: cat(enc(0x18, 0, 0, 1), enc(0x18, 0, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "lddw pseudo src", prog: cat(enc(0x18, 0x10, 0, 1), enc(0, 0, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "ld abs", prog: cat(enc(0x20, 0, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "ldxsdw", prog: cat(enc(0x99, 0x10, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "neg reg", prog: cat(enc(0x8f, 0, 0, 0), exit), want: interp.ErrInvalidInsn},
		{name: "div offset 2", prog: cat(enc(0x37, 0, 2, 1), exit), want: interp.ErrInvalidInsn},
		{name: "movsx32 in alu32", prog: cat(enc(0xbc, 0x10, 32, 0), exit), want: interp.ErrInvalidInsn},
		{name: "movsx imm", prog: cat(enc(0xb7, 0, 8, 0), exit), want: interp.ErrInvalidInsn},
		{name: "bswap reg form", prog: cat(enc(0xdf, 0, 0, 16), exit), want: interp.ErrInvalidInsn},
		{name: "swap width 8", prog: cat(enc(0xd4, 0, 0, 8), exit), want: interp.ErrInvalidInsn},
		{name: "atomic byte", prog: cat(enc(0xd3, 0x1a, -8, 0), exit), want: interp.ErrInvalidInsn},
		{name: "load-acquire", prog: cat(enc(0xdb, 0x1a, -8, 0x100), exit), want: interp.ErrInvalidInsn},
		{name: "kfunc call", prog: cat(enc(0x85, 0x20, 0, 1), exit), want: interp.ErrInvalidInsn},
		{name: "call32", prog: cat(enc(0x86, 0, 0, 1), exit), want: interp.ErrInvalidInsn},
		{name: "callx with imm", prog: cat(enc(0x8d, 0x01, 0, 1), exit), want: interp.ErrInvalidInsn},
		{name: "unknown helper", prog: cat(enc(0x85, 0, 0, 1), exit), want: interp.ErrUnknownHelper},
		{name: "call local out of range", prog: cat(enc(0x85, 0x10, 0, 5), exit), want: interp.ErrInvalidInsn},
		{name: "helper number zero", prog: exit, cfg: &interp.Config{Helpers: map[int32]interp.HelperFunc{0: helperR1}}, want: interp.ErrConfig},
		{name: "too many static regions", prog: exit, cfg: &interp.Config{StaticRegions: make([]interp.Region, interp.MaxStaticRegions+1)}, want: interp.ErrConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := interp.Load(tc.prog, tc.cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Load = %v, want %v", err, tc.want)
			}
			var le *interp.LoadError
			if !errors.As(err, &le) || le.Error() == "" {
				t.Fatalf("%T is not a *LoadError", err)
			}
		})
	}

	t.Run("pseudo lddw allowed by opt-in", func(t *testing.T) {
		p, err := interp.Load(cat(enc(0x18, 0x20, 0, 7), enc(0, 0, 0, 1), exit), &interp.Config{AllowPseudoImm64: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := p.Run(nil); err != nil || got != 1<<32|7 {
			t.Fatalf("Run = %#x, %v", got, err)
		}
		if p.Len() != 3 {
			t.Fatalf("Len = %d, want 3", p.Len())
		}
	})
}

func helperR1(_ *interp.VM, r1, _, _, _, _ uint64) (uint64, error) { return r1, nil }

func TestHelpers(t *testing.T) {
	type ctx struct{ calls int }
	const (
		hSum    = 1 // r0 = sum of r1..r5, counts calls in vm.Context
		hRegion = 2 // r0 = pointer to a new 8-byte region holding r1
		hFill   = 3 // fills [r1, r1+r2) with 0xab through vm.Mem
		hTail   = 12
	)
	var target *interp.Program
	cfg := &interp.Config{Helpers: map[int32]interp.HelperFunc{
		hSum: func(vm *interp.VM, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			vm.Context.(*ctx).calls++
			return r1 + r2 + r3 + r4 + r5, nil
		},
		hRegion: func(vm *interp.VM, r1, _, _, _, _ uint64) (uint64, error) {
			buf := binary.LittleEndian.AppendUint64(nil, r1)
			return vm.AddRegion(buf, false)
		},
		hFill: func(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
			b, err := vm.Mem(r1, int(r2), true)
			if err != nil {
				return 0, err
			}
			for i := range b {
				b[i] = 0xab
			}
			return 0, nil
		},
		hTail: func(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
			if !vm.TailCall(target) {
				return ^uint64(0), nil
			}
			return 0, nil
		},
	}}
	target = load(t, cfg, asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte), asm.Add.Imm(asm.R0, 1000), asm.Return())

	t.Run("args and context", func(t *testing.T) {
		p := load(t, cfg, asm.Mov.Imm(asm.R1, 1), asm.Mov.Imm(asm.R2, 2), asm.Mov.Imm(asm.R3, 3), asm.Mov.Imm(asm.R4, 4), asm.Mov.Imm(asm.R5, 5),
			asm.FnMapLookupElem.Call(), asm.Return())
		vm := interp.NewVM(nil)
		c := &ctx{}
		vm.Context = c
		if got, err := vm.Run(p); err != nil || got != 15 || c.calls != 1 {
			t.Fatalf("Run = %d, %v, calls %d", got, err, c.calls)
		}
	})
	t.Run("new region", func(t *testing.T) {
		p := load(t, cfg, asm.Mov.Imm(asm.R1, 77), asm.FnMapUpdateElem.Call(), asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return())
		if got, err := p.Run(nil); err != nil || got != 77 {
			t.Fatalf("Run = %d, %v", got, err)
		}
		// The region is read-only and gone after the run.
		p = load(t, cfg, asm.Mov.Imm(asm.R1, 77), asm.FnMapUpdateElem.Call(), asm.StoreImm(asm.R0, 0, 1, asm.Byte), asm.Return())
		if _, err := p.Run(nil); !errors.Is(err, interp.ErrReadOnly) {
			t.Fatalf("store into read-only helper region: %v", err)
		}
	})
	t.Run("mem", func(t *testing.T) {
		p := load(t, cfg, asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -16), asm.Mov.Imm(asm.R2, 16), asm.FnMapDeleteElem.Call(),
			asm.LoadMem(asm.R0, asm.R10, -9, asm.DWord), asm.Return())
		if got, err := p.Run(nil); err != nil || got != 0x00abababababababab {
			t.Fatalf("Run = %#x, %v", got, err)
		}
		p = load(t, cfg, asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -16), asm.Mov.Imm(asm.R2, 17), asm.FnMapDeleteElem.Call(), asm.Return())
		if _, err := p.Run(nil); !errors.Is(err, interp.ErrHelper) || !errors.Is(err, interp.ErrOutOfBounds) {
			t.Fatalf("Mem past the stack: %v", err)
		}
	})
	t.Run("tail call", func(t *testing.T) {
		p := load(t, cfg, asm.FnTailCall.Call(), asm.Mov.Imm(asm.R0, 1), asm.Return())
		if got, err := p.Run([]byte{5}); err != nil || got != 1005 {
			t.Fatalf("Run = %d, %v; want 1005", got, err)
		}
	})
	t.Run("tail call limit", func(t *testing.T) {
		// A program that tail-calls itself: after MaxTailCalls the helper
		// falls through and the program returns its counter from memory.
		var self *interp.Program
		cfg := &interp.Config{Helpers: map[int32]interp.HelperFunc{hTail: func(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
			if !vm.TailCall(self) {
				return 1, nil
			}
			return 0, nil
		}}}
		self = load(t, cfg,
			asm.Mov.Imm(asm.R2, 1), progen.Atomic(asm.AddAtomic, asm.R1, asm.R2, asm.DWord, 0),
			asm.FnTailCall.Call(),
			asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord), asm.Return())
		vm := interp.NewVM(nil)
		mem := make([]byte, 8)
		ptr, err := vm.AddRegion(mem, true)
		if err != nil {
			t.Fatal(err)
		}
		// r1 was clobbered by nothing: the helper does not change it.
		if got, err := vm.Run(self, ptr); err != nil || got != interp.MaxTailCalls+1 {
			t.Fatalf("Run = %d, %v; want %d", got, err, interp.MaxTailCalls+1)
		}
	})
	t.Run("callx", func(t *testing.T) {
		p := load(t, cfg, asm.Mov.Imm(asm.R1, 40), asm.Mov.Imm(asm.R2, 2), asm.Mov.Imm(asm.R6, hSum), callx(asm.R6), asm.Return())
		vm := interp.NewVM(nil)
		vm.Context = &ctx{}
		if got, err := vm.Run(p); err != nil || got != 42 {
			t.Fatalf("Run = %d, %v", got, err)
		}
	})
	t.Run("region limit", func(t *testing.T) {
		p := load(t, cfg, asm.FnMapUpdateElem.Call(), asm.FnMapUpdateElem.Call(), asm.FnMapUpdateElem.Call(), asm.Return())
		vm := interp.NewVM(&interp.VMConfig{MaxRegions: 2})
		if _, err := vm.Run(p); !errors.Is(err, interp.ErrRegionLimit) {
			t.Fatalf("Run: %v, want ErrRegionLimit", err)
		}
		// Regions are released after each run.
		p = load(t, cfg, asm.FnMapUpdateElem.Call(), asm.FnMapUpdateElem.Call(), asm.Return())
		for range 3 {
			if _, err := vm.Run(p); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("too many args", func(t *testing.T) {
		vm := interp.NewVM(nil)
		if _, err := vm.Run(target, 1, 2, 3, 4, 5, 6); !errors.Is(err, interp.ErrArgs) {
			t.Fatalf("Run: %v", err)
		}
	})
}

func TestStaticRegions(t *testing.T) {
	shared := make([]byte, 64)
	rodata := []byte("hello, world")
	cfg := &interp.Config{StaticRegions: []interp.Region{{Data: shared, Writable: true}, {Data: rodata}}}
	// counter += 1 atomically at shared[8]; return counter + rodata[7].
	p := load(t, cfg,
		lddw(asm.R1, interp.StaticPointer(0, 8)),
		asm.Mov.Imm(asm.R2, 1),
		progen.Atomic(asm.FetchAdd, asm.R1, asm.R2, asm.DWord, 0),
		lddw(asm.R3, interp.StaticPointer(1, 7)),
		asm.LoadMem(asm.R0, asm.R3, 0, asm.Byte),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Return())
	const workers, runs = 4, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm := interp.NewVM(nil)
			for range runs {
				if _, err := vm.Run(p); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := binary.LittleEndian.Uint64(shared[8:]); got != workers*runs {
		t.Fatalf("counter = %d, want %d", got, workers*runs)
	}
	if got, err := p.Run(nil); err != nil || got != 'w'+workers*runs {
		t.Fatalf("Run = %d, %v", got, err)
	}
	// A VM alternating between programs sees each one's static regions.
	other := load(t, &interp.Config{StaticRegions: []interp.Region{{Data: []byte{9}}}},
		lddw(asm.R1, interp.StaticPointer(0, 0)), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte), asm.Return())
	vm := interp.NewVM(nil)
	for i := range 3 {
		if got, err := vm.Run(other); err != nil || got != 9 {
			t.Fatalf("other run %d: %d, %v", i, got, err)
		}
		if _, err := vm.Run(p); err != nil {
			t.Fatal(err)
		}
	}
	if interp.StaticPointer(-1, 0) != 0 || interp.StaticPointer(interp.MaxStaticRegions, 0) != 0 {
		t.Fatal("StaticPointer out of range is not 0")
	}
}

func TestRunAllocs(t *testing.T) {
	cfg := &interp.Config{Helpers: map[int32]interp.HelperFunc{1: helperR1}}
	p := load(t, cfg,
		progen.StoreImm(asm.R10, -8, 3, asm.DWord),
		asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Byte),
		asm.Add.Reg(asm.R0, asm.R2),
		callLocal(1),
		asm.Return(),
		asm.Add.Imm(asm.R0, 1),
		asm.FnMapLookupElem.Call(),
		asm.Return())
	vm := interp.NewVM(nil)
	mem := []byte{4}
	run := func() {
		ptr, err := vm.AddRegion(mem, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vm.Run(p, ptr); err != nil {
			t.Fatal(err)
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("warm Run allocates %v times", n)
	}
}

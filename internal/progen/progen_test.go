package progen_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/internal/progen"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *progen.Options
	}{
		{name: "defaults", opts: nil},
		{name: "short", opts: &progen.Options{Body: 4}},
		{name: "no v4 no atomics", opts: &progen.Options{NoV4: true, NoAtomics: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marshal := func(seed uint64) []byte {
				var buf bytes.Buffer
				insns := progen.Generate(rand.New(rand.NewPCG(seed, 1)), tc.opts)
				if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
					t.Fatal(err)
				}
				return buf.Bytes()
			}
			if !bytes.Equal(marshal(42), marshal(42)) {
				t.Fatal("same seed, different programs")
			}
			for seed := range uint64(200) {
				p, err := interp.Load(marshal(seed), nil)
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if _, err := p.Run(nil); err != nil {
					t.Fatalf("seed %d: generated program faults: %v", seed, err)
				}
			}
		})
	}
}

// run returns r0 of insns in the interpreter.
func run(t *testing.T, insns asm.Instructions) uint64 {
	t.Helper()
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	p, err := interp.Load(buf.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r0, err := p.Run(nil)
	if err != nil {
		t.Fatal(err)
	}
	return r0
}

func TestZeroExtendCmpXchg(t *testing.T) {
	// A jump to the instruction after a cmpxchg must land after the
	// inserted w0 = w0, or it would clear the upper half of r0 on a path
	// that never ran the cmpxchg.
	for _, tc := range []struct {
		name  string
		taken int32 // r1: 7 jumps over the cmpxchg
		want  uint64
	}{
		{name: "jump over the cmpxchg", taken: 7, want: 0xffffffff},
		{name: "through the cmpxchg", taken: 0, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insns := asm.Instructions{
				asm.LoadImm(asm.R0, -0xffffffff+4, asm.DWord), // 0xffffffff_00000005
				progen.StoreImm(asm.R10, -8, 5, asm.DWord),
				asm.Mov.Imm(asm.R1, tc.taken),
				{OpCode: asm.JEq.Op(asm.ImmSource), Dst: asm.R1, Offset: 1, Constant: 7},
				progen.Atomic(asm.CmpXchg, asm.R10, asm.R1, asm.Word, -8),
				asm.RSh.Imm(asm.R0, 32),
				asm.Return(),
			}
			zext := progen.ZeroExtendCmpXchg(insns)
			if len(zext) != len(insns)+1 {
				t.Fatalf("%d instructions, want %d", len(zext), len(insns)+1)
			}
			if got := run(t, insns); got != tc.want {
				t.Fatalf("original: r0 = %#x, want %#x", got, tc.want)
			}
			if got := run(t, zext); got != tc.want {
				t.Fatalf("with zero extension: r0 = %#x, want %#x\n%v", got, tc.want, zext)
			}
		})
	}
	t.Run("random programs compute the same", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 7))
		changed := 0
		for i := range 300 {
			insns := progen.Generate(rng, nil)
			zext := progen.ZeroExtendCmpXchg(insns)
			if len(zext) != len(insns) {
				changed++
			}
			for j, ins := range zext {
				if progen.IsCmpXchg32(ins) && zext[j+1].OpCode != asm.Mov.Op32(asm.RegSource) {
					t.Fatalf("program %d: no w0 = w0 after instruction %d", i, j)
				}
			}
			if a, b := run(t, insns), run(t, zext); a != b {
				t.Fatalf("program %d: r0 %#x, with zero extensions %#x\n%v", i, a, b, zext)
			}
		}
		if changed == 0 {
			t.Fatal("no program had a 32-bit cmpxchg")
		}
		t.Logf("%d of 300 programs had 32-bit cmpxchgs", changed)
	})
}

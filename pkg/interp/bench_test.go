package interp_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

// aluProgram returns a straight-line program of n ALU instructions (64- and
// 32-bit, register and immediate forms) plus exit.
func aluProgram(n int) asm.Instructions {
	rng := rand.New(rand.NewPCG(1, 2))
	ops := []asm.ALUOp{asm.Add, asm.Sub, asm.Xor, asm.Or, asm.And, asm.Mul, asm.LSh, asm.RSh, asm.Mov}
	var insns asm.Instructions
	for r := asm.R0; r <= asm.R9; r++ {
		insns = append(insns, asm.Mov.Imm(r, int32(r)+1))
	}
	for len(insns) < n {
		op := ops[rng.IntN(len(ops))]
		dst, src := asm.Register(rng.IntN(10)), asm.Register(rng.IntN(10))
		imm := int32(rng.IntN(31) + 1)
		switch rng.IntN(4) {
		case 0:
			insns = append(insns, op.Imm(dst, imm))
		case 1:
			insns = append(insns, op.Imm32(dst, imm))
		case 2:
			if op == asm.LSh || op == asm.RSh {
				insns = append(insns, op.Imm(dst, imm))
			} else {
				insns = append(insns, op.Reg(dst, src))
			}
		default:
			insns = append(insns, asm.Add.Reg32(dst, src))
		}
	}
	return append(insns, asm.Return())
}

// copyLoop copies n bytes from [r6] to [r7], summing them into r9: seven
// instructions per byte. The caller sets r6 and r7.
func copyLoop(n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R8, 0),
		asm.Mov.Imm(asm.R9, 0),
		asm.LoadMem(asm.R3, asm.R6, 0, asm.Byte),
		asm.StoreMem(asm.R7, 0, asm.R3, asm.Byte),
		asm.Add.Reg(asm.R9, asm.R3),
		asm.Add.Imm(asm.R6, 1),
		asm.Add.Imm(asm.R7, 1),
		asm.Add.Imm(asm.R8, 1),
		off(asm.JLT.Imm(asm.R8, n, ""), -7),
		asm.Mov.Reg(asm.R0, asm.R9),
		asm.Return(),
	}
}

const copyInsnsPerByte = 7

func marshal(b testing.TB, insns asm.Instructions) []byte {
	b.Helper()
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// hashProgram returns a straight-line program of about n ALU instructions:
// unrolled splitmix64 rounds over four lanes (r1-r4), the kind of
// arithmetic a real program does (hashing, checksums), folded into r0.
func hashProgram(n int) asm.Instructions {
	var insns asm.Instructions
	for r := asm.R0; r <= asm.R4; r++ {
		insns = append(insns, asm.Mov.Imm(r, int32(r)*7+1))
	}
	insns = append(insns,
		asm.LoadImm(asm.R6, -7046029254386353131, asm.DWord), // 0x9e3779b97f4a7c15
		asm.LoadImm(asm.R7, -4658895280553007687, asm.DWord), // 0xbf58476d1ce4e5b9
		asm.LoadImm(asm.R8, -7723592293110705685, asm.DWord), // 0x94d049bb133111eb
	)
	for lane := 0; len(insns) < n-3; lane = (lane + 1) % 4 {
		x := asm.R1 + asm.Register(lane)
		insns = append(insns,
			asm.Add.Reg(x, asm.R6), // x += golden
			asm.Mov.Reg(asm.R5, x),
			asm.RSh.Imm(asm.R5, 30),
			asm.Xor.Reg(x, asm.R5),
			asm.Mul.Reg(x, asm.R7),
			asm.Mov.Reg(asm.R5, x),
			asm.RSh.Imm(asm.R5, 27),
			asm.Xor.Reg(x, asm.R5),
			asm.Mul.Reg(x, asm.R8),
			asm.Mov.Reg(asm.R5, x),
			asm.RSh.Imm(asm.R5, 31),
			asm.Xor.Reg(x, asm.R5),
			asm.Xor.Reg(asm.R0, x),
		)
	}
	return append(insns, asm.Mov.Reg(asm.R1, asm.R0), asm.RSh.Imm(asm.R1, 32), asm.Xor.Reg(asm.R0, asm.R1), asm.Return())
}

// BenchmarkALU: a 4096-instruction straight-line ALU program of random
// operations, the worst case for an interpreter's dispatch (nearly every
// instruction's handler is a mispredicted indirect branch).
func BenchmarkALU(b *testing.B) {
	benchStraightLine(b, aluProgram(4096))
}

// BenchmarkALUHash: a 4096-instruction straight-line ALU program of
// unrolled splitmix64 rounds, realistic arithmetic.
func BenchmarkALUHash(b *testing.B) {
	benchStraightLine(b, hashProgram(4096))
}

// TestBenchProgramsAgreeWithKernel checks that the benchmarks' programs
// compute the same thing in the interpreter and in the kernel.
func TestBenchProgramsAgreeWithKernel(t *testing.T) {
	kernelOK(t)
	for name, insns := range map[string]asm.Instructions{"alu": aluProgram(4096), "hash": hashProgram(4096)} {
		t.Run(name, func(t *testing.T) {
			p, err := interp.Load(marshal(t, insns), nil)
			if err != nil {
				t.Fatal(err)
			}
			want, err := p.Run(nil)
			if err != nil {
				t.Fatal(err)
			}
			kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
			if err != nil {
				t.Fatal(err)
			}
			defer kp.Close()
			got, err := kp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
			if err != nil || got != uint32(want) {
				t.Fatalf("kernel %#x (%v), interpreter %#x", got, err, uint32(want))
			}
		})
	}
}

// benchStraightLine measures ns per instruction of insns in the
// interpreter and, in the same run, in the kernel (JIT).
func benchStraightLine(b *testing.B, insns asm.Instructions) {
	b.Run("interp", func(b *testing.B) {
		p, err := interp.Load(marshal(b, insns), nil)
		if err != nil {
			b.Fatal(err)
		}
		vm := interp.NewVM(nil)
		b.ReportAllocs()
		var executed uint64
		for b.Loop() {
			if _, err := vm.Run(p); err != nil {
				b.Fatal(err)
			}
			executed += vm.Executed()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(executed), "ns/insn")
	})
	b.Run("kernel", func(b *testing.B) {
		kernelOK(b)
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
		if err != nil {
			b.Fatal(err)
		}
		defer prog.Close()
		kernelBench(b, prog, make([]byte, 64), float64(len(insns)))
	})
}

// kernelBench runs prog b.N times inside the kernel (BPF_PROG_TEST_RUN with
// repeat) and reports ns per instruction for insnsPerRun instructions.
func kernelBench(b *testing.B, prog *ebpf.Program, data []byte, insnsPerRun float64) {
	b.Helper()
	b.ReportAllocs()
	var total time.Duration
	var runs int
	for b.Loop() {
		// One syscall repeats the program many times; b.N counts runs.
		const repeat = 256
		_, d, err := prog.Benchmark(data, repeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		total += d * repeat
		runs += repeat
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(runs)/insnsPerRun, "ns/insn")
}

// BenchmarkCopyLoop: a byte-copy loop over 1 MiB (7 instructions per byte)
// in the interpreter; the kernel copies 16 KiB inside an array map value
// (the verifier walks every iteration, so 1 MiB would exceed its budget).
func BenchmarkCopyLoop(b *testing.B) {
	b.Run("interp", func(b *testing.B) {
		const n = 1 << 20
		insns := append(asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Mov.Reg(asm.R7, asm.R1),
			asm.Add.Imm(asm.R7, n),
		}, copyLoop(n)...)
		p, err := interp.Load(marshal(b, insns), nil)
		if err != nil {
			b.Fatal(err)
		}
		vm := interp.NewVM(nil)
		mem := make([]byte, 2*n)
		for i := range n {
			mem[i] = byte(i)
		}
		b.ReportAllocs()
		var executed uint64
		for b.Loop() {
			ptr, err := vm.AddRegion(mem, true)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := vm.Run(p, ptr); err != nil {
				b.Fatal(err)
			}
			executed += vm.Executed()
		}
		if !bytes.Equal(mem[:n], mem[n:]) {
			b.Fatal("copy loop did not copy")
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(executed), "ns/insn")
	})
	b.Run("kernel", func(b *testing.B) {
		kernelOK(b)
		const n = 16 << 10
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 2 * n, MaxEntries: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		insns := append(asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			off(asm.JNE.Imm(asm.R0, 0, ""), 1),
			asm.Return(),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.Mov.Reg(asm.R7, asm.R0),
			asm.Add.Imm(asm.R7, n),
		}, copyLoop(n)...)
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
		if err != nil {
			b.Fatal(err)
		}
		defer prog.Close()
		kernelBench(b, prog, make([]byte, 64), float64(n*copyInsnsPerByte+15))
	})
}

// BenchmarkHelperCall measures the run loop's cost of a helper call: a
// loop of 1000 calls of a helper that returns its r1, against the same
// loop with the call replaced by r0 = r1 (the baseline, same run), in ns
// per iteration.
func BenchmarkHelperCall(b *testing.B) {
	const n = 1000
	loop := func(body asm.Instruction) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R6, 0),
			asm.Mov.Imm(asm.R7, 0),
			asm.JGE.Imm(asm.R6, n, "done").WithSymbol("loop"),
			asm.Mov.Reg(asm.R1, asm.R6),
			body,
			asm.Add.Reg(asm.R7, asm.R0),
			asm.Add.Imm(asm.R6, 1),
			asm.Ja.Label("loop"),
			asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("done"),
			asm.Return(),
		}
	}
	cfg := &interp.Config{Helpers: map[int32]interp.HelperFunc{
		5: func(_ *interp.VM, r1, _, _, _, _ uint64) (uint64, error) { return r1, nil },
	}}
	for _, bc := range []struct {
		name string
		body asm.Instruction
	}{
		{"call", asm.BuiltinFunc(5).Call()},
		{"inline", asm.Mov.Reg(asm.R0, asm.R1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := interp.Load(marshal(b, loop(bc.body)), cfg)
			if err != nil {
				b.Fatal(err)
			}
			vm := interp.NewVM(nil)
			b.ReportAllocs()
			for b.Loop() {
				if r0, err := vm.Run(p); err != nil || r0 != n*(n-1)/2 {
					b.Fatalf("Run = %d, %v", r0, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/iter")
		})
	}
}

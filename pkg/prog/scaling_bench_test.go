package prog_test

import (
	"encoding/binary"
	"os"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// Update scaling: an XDP program makes updateCalls hash updates per run,
// to keys base+(i&16383), where base is the packet's first word; two
// packets with bases 0 and 1<<14 give two writers distinct key ranges of
// the same map, as two programs on two CPUs would have.
const (
	updateCalls   = 1000
	updateEntries = 1 << 16
	updateRepeat  = 200 // runs per TestRun call
	updateRounds  = 8   // TestRun calls per measurement and writer count
)

// updateLoop is the program: updateCalls bpf_map_update_elem calls,
// returning XDP_PASS.
func updateLoop(mapFD int) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 4),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R8, asm.R2, 0, asm.Word), // base
		asm.Mov.Imm(asm.R7, 0),                   // i
		asm.JGE.Imm(asm.R7, updateCalls, "out").WithSymbol("loop"),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.And.Imm(asm.R1, 1<<14-1),
		asm.Add.Reg(asm.R1, asm.R8),
		asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
		asm.StoreMem(asm.R10, -16, asm.R7, asm.DWord),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Add.Imm(asm.R7, 1),
		asm.Ja.Label("loop"),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("out"), // XDP_PASS
		asm.Return(),
	}
}

// updatePackets returns the two writers' packets: 64 bytes each, the
// first word the writer's key base.
func updatePackets() [2][]byte {
	var p [2][]byte
	for w := range p {
		p[w] = make([]byte, 64)
		binary.NativeEndian.PutUint32(p[w], uint32(w)<<14)
	}
	return p
}

// writerSpeedup runs run(writer, rounds) from one writer for
// updateRounds rounds, then from two writers at once for updateRounds/2
// rounds each, b.N times, and returns the median ratio of the two wall
// times (the same updates in both).
func writerSpeedup(b *testing.B, run func(w, rounds int)) float64 {
	measure := func(writers int) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				run(w, updateRounds/writers)
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var ratios []float64
	for range b.N {
		t1 := measure(1)
		t2 := measure(2)
		ratios = append(ratios, float64(t1)/float64(t2))
	}
	sort.Float64s(ratios)
	return ratios[len(ratios)/2]
}

// BenchmarkHelperUpdateScaling measures in-program hash updates from one
// writer and from two writers at once (distinct key ranges of one map),
// in bpfd (two test runs on two CPU slots) and in the kernel (two
// BPF_PROG_TEST_RUN calls on two threads), in the same run, and reports
// each one's two-writer speed-up and their ratio.
func BenchmarkHelperUpdateScaling(b *testing.B) {
	pkts := updatePackets()
	var bpfd float64
	b.Run("bpfd", func(b *testing.B) {
		m, err := maps.New(maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: updateEntries})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := prog.Load(&prog.Spec{Type: prog.XDP, Insns: marshalInsns(b, updateLoop(0)),
			Maps: []prog.MapRef{{Map: m, Read: true, Write: true}}, License: "GPL"}, nil)
		if err != nil {
			b.Fatal(err)
		}
		bpfd = writerSpeedup(b, func(w, rounds int) {
			for range rounds {
				if res, err := p.TestRun(&prog.RunOptions{Data: pkts[w], Repeat: updateRepeat}); err != nil || res.Ret != 2 {
					b.Errorf("run: %v, %+v", err, res)
					return
				}
			}
		})
		b.ReportMetric(bpfd, "x-2-writer-speedup")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("kernel", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("kernel baseline needs root")
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: updateEntries})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: updateLoop(m.FD())})
		if err != nil {
			b.Fatal(err)
		}
		defer kp.Close()
		k := writerSpeedup(b, func(w, rounds int) {
			for range rounds {
				if ret, _, err := kp.Benchmark(pkts[w], updateRepeat, nil); err != nil || ret != 2 {
					b.Errorf("run: %v, %d", err, ret)
					return
				}
			}
		})
		b.ReportMetric(k, "x-2-writer-speedup")
		if bpfd > 0 {
			b.ReportMetric(bpfd/k, "bpfd/kernel")
		}
		b.ReportMetric(0, "ns/op")
	})
}

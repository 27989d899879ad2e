package prog_test

import (
	"encoding/binary"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// benchFixtures are the fixture programs the benchmarks measure, with a
// packet each.
var benchFixtures = []struct{ fixture, prog, pkt string }{
	{"xdp_ports", "xdp_ports", "ipv4 tcp 80"},
	{"counter", "count_proto", "ipv4 udp 53"},
	{"config", "xdp_config", "ipv4 udp 53"},
	{"globals", "globals", "ipv4 udp 53"},
	{"loop", "sum_bytes", "big"},
	{"loop", "squares", "ipv4 udp 53"},
	{"calls", "calls", "ipv4 udp 53"},
}

// BenchmarkLoad measures verification and load of each fixture program in
// bpfd and, as the baseline in the same run, the kernel's load (verifier
// and JIT) of the same program.
func BenchmarkLoad(b *testing.B) {
	for _, bf := range benchFixtures {
		b.Run(bf.prog+"/bpfd", func(b *testing.B) {
			f := loadFixture(b, bf.fixture)
			p := f.progs[bf.prog]
			refs := p.Maps()
			spec := &prog.Spec{Type: p.Type(), Insns: p.Insns(), Maps: refs, License: "GPL", Name: bf.prog}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := prog.Load(spec, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bf.prog+"/kernel", func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("kernel baseline needs root")
			}
			spec, err := ebpf.LoadCollectionSpec(fixturePath(bf.fixture))
			if err != nil {
				b.Fatal(err)
			}
			coll, err := ebpf.NewCollection(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer coll.Close()
			ps := spec.Programs[bf.prog].Copy()
			opts := ebpf.ProgramOptions{LogDisabled: true}
			// Resolve map references once against the loaded maps.
			for i := range ps.Instructions {
				if r := ps.Instructions[i].Reference(); r != "" && ps.Instructions[i].IsLoadFromMap() {
					ps.Instructions[i].AssociateMap(coll.Maps[r])
				}
			}
			b.ResetTimer()
			for range b.N {
				kp, err := ebpf.NewProgramWithOptions(ps, opts)
				if err != nil {
					b.Fatal(err)
				}
				kp.Close()
			}
		})
	}
}

// BenchmarkTestRun measures BPF_PROG_TEST_RUN per run (repeat 1000) of each
// fixture in bpfd and in the kernel (JIT), in the same run.
func BenchmarkTestRun(b *testing.B) {
	const repeat = 1000
	pkts := testPackets()
	for _, bf := range benchFixtures {
		pkt := pkts[bf.pkt]
		b.Run(bf.prog+"/bpfd", func(b *testing.B) {
			f := loadFixture(b, bf.fixture)
			p := f.progs[bf.prog]
			opts := &prog.RunOptions{Data: pkt, Repeat: repeat}
			var total time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				res, err := p.TestRun(opts)
				if err != nil {
					b.Fatal(err)
				}
				total += res.Duration
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/run")
		})
		b.Run(bf.prog+"/kernel", func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("kernel baseline needs root")
			}
			spec, err := ebpf.LoadCollectionSpec(fixturePath(bf.fixture))
			if err != nil {
				b.Fatal(err)
			}
			coll, err := ebpf.NewCollection(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer coll.Close()
			kp := coll.Programs[bf.prog]
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				_, d, err := kp.Benchmark(pkt, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/run")
		})
	}
}

// lookupLoop is a socket filter that looks up key (i & 63) in a hash map
// n times in a bounded loop and returns how many it found (the C shape
// "for (i = 0; i < n; i++) if (bpf_map_lookup_elem(&m, &k)) found++;").
func lookupLoop(mapFD, n int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R6, 0), // i
		asm.Mov.Imm(asm.R7, 0), // found
		asm.JGE.Imm(asm.R6, int32(n), "done").WithSymbol("loop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.And.Imm(asm.R1, 63),
		asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "next"),
		asm.Add.Imm(asm.R7, 1),
		asm.Add.Imm(asm.R6, 1).WithSymbol("next"),
		asm.Ja.Label("loop"),
		asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("done"),
		asm.Return(),
	}
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// BenchmarkHelperLookup measures bpf_map_lookup_elem on a 64-entry hash
// map from inside a program (1000 calls per run), in bpfd and in the
// kernel: ns per helper call, loop overhead included on both sides.
func BenchmarkHelperLookup(b *testing.B) {
	const calls = 1000
	pkt := testPackets()["ipv4 udp 53"]
	b.Run("bpfd", func(b *testing.B) {
		m, err := maps.New(maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		for i := range uint32(64) {
			m.Update(binary.LittleEndian.AppendUint32(nil, i), make([]byte, 8), maps.UpdateAny)
		}
		p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(b, lookupLoop(0, calls)),
			Maps: []prog.MapRef{{Map: m, Read: true}}, License: "GPL"}, nil)
		if err != nil {
			b.Fatal(err)
		}
		opts := &prog.RunOptions{Data: pkt, Repeat: 100}
		var total, cpu time.Duration
		// The run is synchronous: the thread's CPU time is the run's,
		// without the time other processes took the CPU (the kernel's
		// test run measures with preemption disabled).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			c0 := threadCPU()
			res, err := p.TestRun(opts)
			cpu += threadCPU() - c0
			if err != nil {
				b.Fatalf("run: %v", err)
			}
			if res.Ret != calls {
				b.Fatalf("found %d", res.Ret)
			}
			total += res.Duration
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/calls, "ns/call")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/calls/float64(opts.Repeat), "cpu-ns/call")
	})
	b.Run("kernel", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("kernel baseline needs root")
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		for i := range uint32(64) {
			m.Update(i, uint64(0), ebpf.UpdateAny)
		}
		kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
			Instructions: lookupLoop(m.FD(), calls)})
		if err != nil {
			b.Fatal(err)
		}
		defer kp.Close()
		var total time.Duration
		b.ResetTimer()
		for range b.N {
			ret, d, err := kp.Benchmark(pkt, 100, nil)
			if err != nil || ret != calls {
				b.Fatalf("run: %v, found %d", err, ret)
			}
			total += d
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/calls, "ns/call")
	})
}

package demux

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/seccomp"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// countingPolicy is a seccomp program like the fixtures' policy: it counts
// the syscall in an array and allows it.
func countingPolicy(tb testing.TB) *prog.Program {
	tb.Helper()
	m, err := maps.New(maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 512})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm32(asm.R0, int32(prog.SeccompRetAllow)).WithSymbol("out"),
		asm.Return(),
	}
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		tb.Fatal(err)
	}
	p, err := prog.Load(&prog.Spec{Type: prog.Seccomp, Insns: buf.Bytes(), License: "GPL",
		Maps: []prog.MapRef{{Map: m, Read: true, Write: true}}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestDecisionStatsDoNotAllocate: counting a seccomp decision and a
// program run allocates nothing.
func TestDecisionStatsDoNotAllocate(t *testing.T) {
	o := &Object{kind: wire.ObjProg}
	var st seccompStats
	deny := seccomp.Deny(unix.EACCES)
	if n := testing.AllocsPerRun(1000, func() {
		st.count(deny, false, time.Microsecond)
		o.RecordRuns(1, time.Microsecond)
	}); n != 0 {
		t.Fatalf("counting allocates %.1f times", n)
	}
	if st.routed.Load() == 0 || st.denied[unix.EACCES].Load() != st.routed.Load() {
		t.Fatalf("counted %d routed, %d EACCES", st.routed.Load(), st.denied[unix.EACCES].Load())
	}
	if runs, d := o.Runs(); runs != st.routed.Load() || d != time.Duration(runs)*time.Microsecond {
		t.Fatalf("runs %d in %v", runs, d)
	}
}

func TestReqStatsBuckets(t *testing.T) {
	var r reqStats
	msg := binary.LittleEndian.AppendUint32(nil, uint32(wire.CmdMapLookupElem))
	for _, tc := range []struct {
		d      time.Duration
		bucket int
	}{
		{0, 0}, {time.Microsecond, 0}, {1500 * time.Nanosecond, 1}, {2 * time.Microsecond, 1},
		{3 * time.Microsecond, 2}, {time.Millisecond, 10}, {time.Hour, reqHistBuckets},
	} {
		before := r.hist[cmdSlot(wire.CmdMapLookupElem)][tc.bucket].Load()
		r.request(msg, nil, tc.d)
		if r.hist[cmdSlot(wire.CmdMapLookupElem)][tc.bucket].Load() != before+1 {
			t.Errorf("%v not counted in bucket %d", tc.d, tc.bucket)
		}
	}
	r.request(msg, maps.ErrKeyNotExist, time.Microsecond)
	r.request(binary.LittleEndian.AppendUint32(nil, 0x999), ErrUnknownCmd, time.Microsecond)
	if n := testing.AllocsPerRun(100, func() { r.request(msg, maps.ErrKeyNotExist, time.Microsecond) }); n != 0 {
		t.Fatalf("counting a request allocates %.1f times", n)
	}
	// AllocsPerRun runs the function once more to warm up.
	if got := r.count[cmdSlot(wire.CmdMapLookupElem)][errnoSlot[unix.ENOENT]].Load(); got != 102 {
		t.Errorf("ENOENT lookups counted %d, want 102", got)
	}
	if got := r.count[cmdOther][errnoSlot[unix.EINVAL]].Load(); got != 1 {
		t.Errorf("unknown command counted %d", got)
	}
}

// BenchmarkRunStats is the cost of always-on run statistics on the
// daemon's hottest run path, a seccomp decision: the program run alone
// (baseline) and with its timing and counting (two clock reads, the
// attachment's and the program's counters), in the same run.
func BenchmarkRunStats(b *testing.B) {
	p := countingPolicy(b)
	var data [prog.SeccompDataSize]byte
	binary.LittleEndian.PutUint32(data[0:], 39)
	task := &prog.StaticTask{PID: 1, TGID: 1}
	b.Run("run", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := p.RunSeccomp(&data, task); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("run+stats", func(b *testing.B) {
		o := &Object{kind: wire.ObjProg, p: p}
		var st seccompStats
		b.ReportAllocs()
		for range b.N {
			t0 := time.Now()
			ret, err := p.RunSeccomp(&data, task)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t0)
			st.count(seccomp.VerdictFromRet(ret), false, d)
			o.RecordRuns(1, d)
		}
	})
}

// BenchmarkRequestStats is what counting one request adds to its
// handling (two clock reads, the command/errno counter, the histogram),
// beside BenchmarkLookupDispatch (a whole element lookup, counted) for
// the ratio.
func BenchmarkRequestStats(b *testing.B) {
	var r reqStats
	msg := binary.LittleEndian.AppendUint32(nil, uint32(wire.CmdMapLookupElem))
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		r.request(msg, nil, time.Since(t0))
	}
}

package verifier

import (
	"errors"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// TestRelevanceBits checks the analysis on the counting loop: at the loop
// head the index (R6) matters, the count (R7) only when the return value
// is constrained.
func TestRelevanceBits(t *testing.T) {
	tests := []struct {
		name     string
		env      *Env
		wantR7   bool
		notLive  []uint8
		wantLive []uint8
	}{
		{name: "unconstrained return", env: socketEnv(countsMap), wantLive: []uint8{6, 9}, notLive: []uint8{0, 7}},
		{name: "constrained return", env: &Env{Context: skbCtx, Maps: []MapInfo{countsMap}, Return: &ReturnRange{Max: 1}},
			wantLive: []uint8{6, 7, 9}, notLive: []uint8{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			after := asm.Instructions{asm.LoadMem(asm.R0, asm.R9, 0, asm.Word), asm.Mov.Reg(asm.R0, asm.R7)}
			v, err := newVerifier(marshal(t, countingLoop(10, false, after)), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			rel := v.relevance()
			const head = 3 // the loop condition
			for _, r := range tc.wantLive {
				if rel[head].rel&(1<<r) == 0 {
					t.Errorf("R%d not relevant at the loop head (%016b)", r, rel[head].rel)
				}
			}
			for _, r := range tc.notLive {
				if rel[head].rel&(1<<r) != 0 {
					t.Errorf("R%d relevant at the loop head (%016b)", r, rel[head].rel)
				}
			}
		})
	}
}

// TestRelevancePruning compares processed instructions with and without
// the relevance analysis.
func TestRelevancePruning(t *testing.T) {
	tests := []struct {
		name      string
		insns     asm.Instructions
		env       *Env
		fullErrno unix.Errno // what full pruning says; 0: accepted
		max       int        // processed insns with relevance at most
	}{
		{name: "counting hits of 1000 lookups", insns: countingLoop(1000, false, nil), env: socketEnv(countsMap),
			fullErrno: unix.E2BIG, max: 40_000},
		{name: "summing 1000 looked-up values", insns: countingLoop(1000, true, nil), env: socketEnv(countsMap),
			max: 40_000},
		{name: "bounded loop", insns: boundedLoop(), env: socketEnv(), max: 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := marshal(t, tc.insns)
			res, err := Verify(raw, tc.env)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if res.InsnsProcessed > tc.max {
				t.Errorf("processed %d insns, want at most %d", res.InsnsProcessed, tc.max)
			}
			fenv := tc.env
			if tc.fullErrno == unix.E2BIG && quick() {
				// Full pruning runs until the instruction limit:
				// under -race or -short a limit of 5 times the
				// relevance analysis' bound shows the same gap.
				e := *tc.env
				e.MaxInsnsProcessed = 5 * tc.max
				fenv = &e
			}
			full, _, ferr := verifyPruning(raw, fenv, fullPruning)
			if tc.fullErrno == 0 {
				if ferr != nil {
					t.Fatalf("full pruning rejects: %v", ferr)
				}
				t.Logf("processed %d insns (full pruning %d)", res.InsnsProcessed, full.InsnsProcessed)
				return
			}
			if !errors.Is(ferr, tc.fullErrno) {
				t.Fatalf("full pruning: %v, want %v", ferr, tc.fullErrno)
			}
			t.Logf("processed %d insns (full pruning: %v)", res.InsnsProcessed, ferr)
		})
	}
}

// checkRelevanceSound fails if the relevance analysis let Verify accept
// raw while full pruning finds an error other than the complexity limit.
func checkRelevanceSound(t *testing.T, raw []byte, env *Env) {
	t.Helper()
	_, _, err := verify(raw, env)
	if err != nil {
		return
	}
	_, _, ferr := verifyPruning(raw, env, fullPruning)
	if ferr != nil && !errors.Is(ferr, unix.E2BIG) {
		t.Fatalf("accepted with relevance, rejected with full pruning: %v\n%s", ferr, ferr.(*Error).Log)
	}
}

// TestRelevanceRandom runs random programs with and without the relevance
// analysis: whatever it lets through must pass full pruning too.
func TestRelevanceRandom(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	seed := int64(1)
	if s, err := strconv.ParseInt(os.Getenv("BPFD_DIFF_SEED"), 10, 64); err == nil {
		seed = s
	}
	r := rand.New(rand.NewSource(seed))
	for i := range n {
		g := &progGen{r: r, xdp: i%2 == 1}
		raw := marshal(t, g.program())
		env := socketEnv(countsMap, readOnly(configMap))
		if g.xdp {
			env = xdpEnv(countsMap, readOnly(configMap))
		}
		env.Return = &ReturnRange{Min: 0, Max: 255}
		if i%3 == 0 {
			env.Return = nil
		}
		checkRelevanceSound(t, raw, env)
	}
}

// loopProgram makes a random short loop whose counters R7 and R8 change
// conditionally (after a map lookup) and may then be used unsafely after
// the loop: as a map value index, a return value or a branch condition.
// The loop runs at most maxN times.
func loopProgram(r *rand.Rand, maxN int) asm.Instructions {
	ctr := func() asm.Register { return []asm.Register{asm.R7, asm.R8}[r.Intn(2)] }
	p := asm.Instructions{
		asm.Mov.Imm(asm.R6, 0),
		asm.Mov.Imm(asm.R7, 0),
		asm.Mov.Imm(asm.R8, int32(r.Intn(3))),
		asm.StoreMem(asm.RFP, -16, asm.R8, asm.DWord),
		asm.JGE.Imm(asm.R6, int32(1+r.Intn(maxN)), "done").WithSymbol("loop"),
		asm.StoreMem(asm.RFP, -4, asm.R6, asm.Word),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "next"),
	}
	for range 1 + r.Intn(3) {
		switch r.Intn(7) {
		case 0:
			p = append(p, asm.Add.Imm(ctr(), int32(1+r.Intn(4))))
		case 1:
			p = append(p, asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte), asm.Add.Reg(ctr(), asm.R1))
		case 2:
			p = append(p, asm.Mov.Reg(ctr(), ctr()))
		case 3:
			p = append(p, asm.StoreMem(asm.RFP, -16, ctr(), asm.DWord))
		case 4:
			p = append(p, asm.LoadMem(ctr(), asm.RFP, -16, asm.DWord))
		case 5:
			p = append(p, asm.Mul.Imm(ctr(), 2))
		default:
			p = append(p, asm.JGT.Imm(ctr(), int32(r.Intn(8)), "next"), asm.Add.Imm(ctr(), 1))
		}
	}
	p = append(p,
		asm.Add.Imm(asm.R6, 1).WithSymbol("next"),
		asm.Ja.Label("loop"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("done"),
	)
	switch r.Intn(4) {
	case 0: // index into config[0]
		c := ctr()
		p = append(p, asm.StoreImm(asm.RFP, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, 1),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4), asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"))
		if r.Intn(2) == 0 {
			p = append(p, asm.JGT.Imm(c, int32(r.Intn(70)), "out"))
		}
		p = append(p, asm.Add.Reg(asm.R0, c), asm.LoadMem(asm.R0, asm.R0, 0, asm.Byte))
	case 1: // return value
		p = append(p, asm.Mov.Reg(asm.R0, ctr()))
	case 2: // a branch on a counter guarding a null dereference
		p = append(p, asm.JLT.Imm(ctr(), int32(r.Intn(8)), "out"), asm.LoadMem(asm.R0, asm.R0, 0, asm.Byte))
	default: // a spilled counter as an index
		p = append(p, asm.StoreImm(asm.RFP, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, 1),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4), asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"), asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord),
			asm.Add.Reg(asm.R0, asm.R1), asm.LoadMem(asm.R0, asm.R0, 0, asm.Byte))
	}
	return append(p, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
}

// TestRelevanceLoops checks random short loops with conditional counters:
// the relevance analysis must give the same verdict as full pruning.
func TestRelevanceLoops(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var accepted, rejected int
	for i := range 2000 {
		insns := loopProgram(r, 6)
		raw := marshal(t, insns)
		env := socketEnv(countsMap, configMap)
		if i%2 == 0 {
			env.Return = &ReturnRange{Min: 0, Max: int64(r.Intn(8))}
		}
		_, _, err := verify(raw, env)
		_, _, ferr := verifyPruning(raw, env, fullPruning)
		if (err == nil) != (ferr == nil) || err != nil && !errors.Is(err, ferr.(*Error).Errno) {
			t.Fatalf("program %d: relevance: %v, full pruning: %v\n%v", i, err, ferr, insns)
		}
		if err == nil {
			accepted++
		} else {
			rejected++
		}
	}
	t.Logf("accepted %d, rejected %d", accepted, rejected)
}

// TestRelevanceLoopsKernel loads random loops, up to 40 iterations, into
// the kernel: what Verify accepts, the kernel must accept too.
func TestRelevanceLoopsKernel(t *testing.T) {
	kernelAvailable(t)
	r := rand.New(rand.NewSource(2))
	var both, onlyKernel, neither int
	n := 300
	if testing.Short() {
		n = 50
	}
	// A time budget as well: the kernel's verifier and the 20M-insn
	// recheck of programs it gives up on are slow on a loaded machine.
	deadline := time.Now().Add(budget(60 * time.Second))
	for i := range n {
		if time.Now().After(deadline) {
			t.Logf("time budget reached after %d programs", i)
			break
		}
		insns := loopProgram(r, 40)
		raw := marshal(t, insns)
		env := socketEnv(countsMap, configMap)
		_, _, err := verify(raw, env)
		kerr := kernelLoadLog(t, raw, env, ebpf.SocketFilter, false)
		switch {
		case err == nil && kerr != nil && errors.Is(kerr, unix.E2BIG):
			// The kernel gave up: a resource limit, not a verdict. Fine
			// if bpfd proves it safe without the relevance analysis too
			// (liveness alone avoids the kernel's blow-up here), given
			// more room.
			big := *env
			big.MaxInsnsProcessed = 20_000_000
			fres, _, ferr := verifyPruning(raw, &big, noRelevance)
			if ferr != nil {
				t.Fatalf("program %d: only the relevance analysis accepts, kernel too complex: %v\n%v", i, ferr, insns)
			}
			res, _, _ := verify(raw, env)
			t.Logf("program %d: kernel too complex; bpfd processed %d insns (%d without relevance)", i, res.InsnsProcessed, fres.InsnsProcessed)
			both++
		case err == nil && kerr != nil:
			t.Fatalf("program %d: bpfd accepts, kernel rejects: %v\n%v", i, kerr, insns)
		case err == nil:
			both++
		case kerr == nil:
			onlyKernel++
		default:
			neither++
		}
	}
	t.Logf("both accept %d, only kernel %d, both reject %d", both, onlyKernel, neither)
}

package interp_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

// TestYield: with SetYield, a run checks in every YieldChunk instructions
// (one long run is cut as test-run repeats are), keeps its result and
// its budget, and stops with a budget fault wrapping the hook's error
// when the hook says so.
func TestYield(t *testing.T) {
	// r0 counts to n: 2 instructions per iteration, plus 2.
	loop := func(n int32) *interp.Program {
		return load(t, nil,
			asm.Mov.Imm(asm.R0, 0),
			asm.Add.Imm(asm.R0, 1),
			off(asm.JLT.Imm(asm.R0, n, ""), -2),
			asm.Return())
	}
	stop := errors.New("stop")
	tests := []struct {
		name     string
		n        int32
		budget   uint64
		stopAt   int // the hook's call that fails (0: never)
		calls    int
		executed uint64
		err      error
	}{
		{name: "short run, no check-in", n: 1000, budget: 1 << 24, calls: 0, executed: 2*1000 + 2},
		{name: "long run checks in", n: 200000, budget: 1 << 24, calls: (2*200000 + 2) / interp.YieldChunk, executed: 2*200000 + 2},
		{name: "budget still binds", n: 200000, budget: 3 * interp.YieldChunk / 2, calls: 1,
			executed: 3 * interp.YieldChunk / 2, err: interp.ErrBudget},
		{name: "hook stops the run", n: 200000, budget: 1 << 24, stopAt: 2, calls: 2,
			executed: 2 * interp.YieldChunk, err: stop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := interp.NewVM(&interp.VMConfig{Budget: tt.budget})
			calls := 0
			vm.SetYield(func() error {
				calls++
				if calls == tt.stopAt {
					return stop
				}
				return nil
			})
			r0, err := vm.Run(loop(tt.n))
			if tt.err == nil && (err != nil || r0 != uint64(tt.n)) {
				t.Fatalf("Run = %d, %v; want %d", r0, err, tt.n)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("Run err = %v, want %v", err, tt.err)
			}
			if calls != tt.calls || vm.Executed() != tt.executed {
				t.Fatalf("%d check-ins, %d executed; want %d, %d", calls, vm.Executed(), tt.calls, tt.executed)
			}
		})
	}
	// Without a hook nothing changes: the whole budget at once.
	vm := interp.NewVM(&interp.VMConfig{Budget: 3 * interp.YieldChunk / 2})
	if _, err := vm.Run(loop(200000)); !errors.Is(err, interp.ErrBudget) || vm.Executed() != 3*interp.YieldChunk/2 {
		t.Fatalf("no hook: %v after %d", err, vm.Executed())
	}
}

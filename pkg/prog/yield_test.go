package prog_test

import (
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/prog"
)

// TestRunYield: RunOptions.Yield is called between repeats (every 16 for
// short runs), and the time it reports waiting is left out of the run's
// duration.
func TestRunYield(t *testing.T) {
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, License: "GPL",
		Insns: marshalInsns(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		repeat uint32
		yields int
	}{
		{name: "one run", repeat: 1, yields: 0},
		{name: "sixteen runs", repeat: 16, yields: 0},
		{name: "many runs", repeat: 1000, yields: 1000 / 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yields := 0
			var waited time.Duration
			opts := &prog.RunOptions{Data: make([]byte, 14), Repeat: tt.repeat, Yield: func() time.Duration {
				yields++
				t0 := time.Now()
				time.Sleep(200 * time.Microsecond)
				d := time.Since(t0)
				waited += d
				return d
			}}
			start := time.Now()
			res, err := p.TestRun(opts)
			wall := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if yields != tt.yields {
				t.Fatalf("Yield called %d times, want %d", yields, tt.yields)
			}
			// Arithmetic, not timing: the reported total cannot include
			// what Yield said it waited.
			if total := res.Duration * time.Duration(tt.repeat); total > wall-waited {
				t.Fatalf("duration %v × %d exceeds wall %v − waited %v", res.Duration, tt.repeat, wall, waited)
			}
		})
	}
}

package prog_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// TestRunYield: RunOptions.Yield is called between repeats — every 16
// for short runs, after each for long ones (judged by the first run, so
// either may happen here, e.g. under the race detector) — and the time it
// reports waiting is left out of the run's duration.
func TestRunYield(t *testing.T) {
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, License: "GPL",
		Insns: marshalInsns(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		repeat uint32
	}{
		{name: "one run", repeat: 1},
		{name: "sixteen runs", repeat: 16},
		{name: "many runs", repeat: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yields := 0
			var waited time.Duration
			opts := &prog.RunOptions{Data: make([]byte, 14), Repeat: tt.repeat, Yield: func() (time.Duration, error) {
				yields++
				t0 := time.Now()
				time.Sleep(200 * time.Microsecond)
				d := time.Since(t0)
				waited += d
				return d, nil
			}}
			start := time.Now()
			res, err := p.TestRun(opts)
			wall := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			short, long := int(tt.repeat-1)/16, int(tt.repeat-1)
			if yields != short && yields != long {
				t.Fatalf("Yield called %d times, want %d (every 16 repeats) or %d (after each)", yields, short, long)
			}
			// Arithmetic, not timing: the reported total cannot include
			// what Yield said it waited.
			if total := res.Duration * time.Duration(tt.repeat); total > wall-waited {
				t.Fatalf("duration %v × %d exceeds wall %v − waited %v", res.Duration, tt.repeat, wall, waited)
			}
		})
	}
}

// TestRunYieldStops: an error from RunOptions.Yield stops the run and is
// returned.
func TestRunYieldStops(t *testing.T) {
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, License: "GPL",
		Insns: marshalInsns(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone := errors.New("client gone")
	yields := 0
	_, err = p.TestRun(&prog.RunOptions{Data: make([]byte, 14), Repeat: 1 << 20, Yield: func() (time.Duration, error) {
		yields++
		if yields == 3 {
			return 0, gone
		}
		return 0, nil
	}})
	if err != gone || yields != 3 {
		t.Fatalf("TestRun = %v after %d yields, want the Yield error after 3", err, yields)
	}
}

// TestRunYieldWithinARun: one long run (a loop of 200k instructions) checks
// in with RunOptions.Yield every interp.YieldChunk instructions, and so
// does a seccomp decision through RunSeccompYield.
func TestRunYieldWithinARun(t *testing.T) {
	loop := asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Add.Imm(asm.R0, 1).WithSymbol("l"),
		asm.JLT.Imm(asm.R0, 100000, "l"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	want := (2*100000 + 3) / interp.YieldChunk
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, License: "GPL", Insns: marshalInsns(t, loop)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	yields := 0
	if _, err := p.TestRun(&prog.RunOptions{Data: make([]byte, 14), Repeat: 1,
		Yield: func() (time.Duration, error) { yields++; return 0, nil }}); err != nil {
		t.Fatal(err)
	}
	if yields != want {
		t.Fatalf("one run of 200k instructions checked in %d times, want %d", yields, want)
	}
	sp, err := prog.Load(&prog.Spec{Type: prog.Seccomp, License: "GPL", Insns: marshalInsns(t, loop)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	yields = 0
	var data [prog.SeccompDataSize]byte
	if _, err := sp.RunSeccompYield(&data, nil, func() error { yields++; return nil }); err != nil {
		t.Fatal(err)
	}
	if yields != want {
		t.Fatalf("a seccomp decision of 200k instructions checked in %d times, want %d", yields, want)
	}
	stop := errors.New("stop")
	if _, err := sp.RunSeccompYield(&data, nil, func() error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("RunSeccompYield = %v, want the yield's error", err)
	}
}

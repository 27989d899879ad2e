package verifier

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// stateHeavy returns a program that saves well over a MiB of verifier
// state: a full stack, then 300 forks.
func stateHeavy() asm.Instructions {
	p := asm.Instructions{asm.LoadMem(asm.R1, asm.R1, 0, asm.Word), asm.Mov.Imm(asm.R0, 0)}
	for off := int16(-512); off < 0; off += 8 {
		p = append(p, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	for i := range 300 {
		p = append(p, asm.JEq.Imm(asm.R1, int32(i), fmt.Sprintf("l%d", i)), asm.Mov.Imm(asm.R0, 1).WithSymbol(fmt.Sprintf("l%d", i)))
	}
	return append(p, asm.Return())
}

// TestEnvHooks: Env.Yield is called every YieldEvery processed
// instructions; Env.Charge sees the state memory's high-water mark in
// ChargeStep steps, and a refusal stops verification with ENOMEM.
func TestEnvHooks(t *testing.T) {
	insns := marshal(t, stateHeavy())
	tests := []struct {
		name    string
		refuse  int // refuse charges beyond this many bytes; 0: never
		wantErr bool
	}{
		{name: "accepted"},
		{name: "refused past one step", refuse: ChargeStep, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := socketEnv()
			yields, charged, calls := 0, 0, 0
			env.Yield = func() error { yields++; return nil }
			env.Charge = func(n int) error {
				calls++
				if n <= 0 || n%ChargeStep != 0 {
					t.Errorf("Charge(%d): not a positive multiple of ChargeStep", n)
				}
				if tt.refuse > 0 && charged+n > tt.refuse {
					return errors.New("over quota")
				}
				charged += n
				return nil
			}
			res, err := Verify(insns, env)
			if tt.wantErr {
				var ve *Error
				if !errors.Is(err, unix.ENOMEM) || !errors.As(err, &ve) || !strings.Contains(ve.Log, "over quota") {
					t.Fatalf("Verify = %v, want ENOMEM naming the refusal", err)
				}
				if charged > tt.refuse {
					t.Fatalf("charged %d beyond the refusal at %d", charged, tt.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if charged < ChargeStep || calls == 0 {
				t.Fatalf("charged %d bytes in %d calls; the program holds more than a MiB of state", charged, calls)
			}
			if want := res.InsnsProcessed / YieldEvery; yields != want {
				t.Fatalf("Yield called %d times for %d processed instructions, want %d", yields, res.InsnsProcessed, want)
			}
		})
	}
}

// TestEnvYieldStops: an error from Env.Yield stops verification and is
// returned as is.
func TestEnvYieldStops(t *testing.T) {
	env := socketEnv()
	gone := errors.New("client gone")
	env.Yield = func() error { return gone }
	if _, err := Verify(marshal(t, stateHeavy()), env); err != gone {
		t.Fatalf("Verify = %v, want the Yield error", err)
	}
}

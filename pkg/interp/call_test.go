package interp_test

import (
	"errors"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/bpfasm"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

// loopHelper calls the function at pc r2 with (i, r3) for i < r1 and sums
// the results, like a bpf_loop whose callbacks return values to add.
func loopHelper(vm *interp.VM, r1, r2, r3, _, _ uint64) (uint64, error) {
	var sum uint64
	for i := uint64(0); i < r1; i++ {
		v, err := vm.Call(int(r2), i, r3)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func TestCallFromHelper(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    uint64
		wantErr error
	}{
		{name: "callback squares", src: `
			mov %r6, 7
			mov %r1, 10
			mov %r2, 7
			mov %r3, 0
			call 100
			add %r0, %r6      # r6 survives the callbacks
			exit
			mov %r0, %r1      # callback(i): i*i, clobbers r6 in its own frame
			mul %r0, %r1
			mov %r6, 99
			stxdw [%r10-8], %r6
			exit`, want: 285 + 7},
		{name: "callback on caller stack", src: `
			stdw [%r10-8], 0
			mov %r1, 4
			mov %r2, 8
			mov %r3, %r10
			add %r3, -8
			call 100
			ldxdw %r0, [%r10-8]
			exit
			ldxdw %r0, [%r2]   # callback(i, ctx): *ctx += i + 1
			add %r0, %r1
			add %r0, 1
			stxdw [%r2], %r0
			mov %r0, 0
			exit`, want: 1 + 2 + 3 + 4},
		{name: "bad pc", src: `
			mov %r1, 1
			mov %r2, 1000
			call 100
			exit`, wantErr: interp.ErrBadCall},
		{name: "pc inside lddw", src: `
			mov %r1, 1
			mov %r2, 5
			call 100
			exit
			lddw %r0, 0x100000000
			exit`, wantErr: interp.ErrBadCall},
		{name: "budget shared", src: `
			mov %r1, 1000000
			mov %r2, 4
			call 100
			exit
			ja -1`, wantErr: interp.ErrBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := bpfasm.Assemble(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			p, err := interp.Load(raw, &interp.Config{Helpers: map[int32]interp.HelperFunc{100: loopHelper}})
			if err != nil {
				t.Fatal(err)
			}
			vm := interp.NewVM(&interp.VMConfig{Budget: 1 << 16})
			got, err := vm.Run(p)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Run = %d, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Run = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestCallOutsideRun(t *testing.T) {
	vm := interp.NewVM(nil)
	if _, err := vm.Call(0); !errors.Is(err, interp.ErrBadCall) {
		t.Fatalf("Call outside Run: %v, want ErrBadCall", err)
	}
}

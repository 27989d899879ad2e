package interp_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/interp"
)

const fuzzBudget = 1 << 12

// FuzzRun loads arbitrary bytes as a program and runs it on arbitrary
// memory. It checks that nothing panics, that a run never executes more
// than its budget, and that memory outside the regions (guard bytes around
// the context region, a read-only static region) is never written.
func FuzzRun(f *testing.F) {
	f.Add([]byte{0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}, []byte{1, 2, 3})
	f.Add([]byte{0x71, 0x10, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}, []byte{7})
	f.Add([]byte{0x05, 0, 0xff, 0xff, 0, 0, 0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, prog, mem []byte) {
		guard := bytes.Repeat([]byte{0xa5}, 64)
		ro := bytes.Repeat([]byte{0x5a}, 64)
		buf := append(append(append([]byte{}, guard...), mem...), guard...)
		region := buf[len(guard) : len(guard)+len(mem) : len(guard)+len(mem)]
		cfg := &interp.Config{
			StaticRegions: []interp.Region{{Data: ro[8:56:56]}},
			Helpers: map[int32]interp.HelperFunc{
				// 1: a new 16-byte writable region.
				1: func(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
					return vm.AddRegion(make([]byte, 16), true)
				},
				// 2: memset(r1, 0xff, r2) through vm.Mem.
				2: func(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
					b, err := vm.Mem(r1, int(r2&0xffff), true)
					if err != nil {
						return 0, err
					}
					for i := range b {
						b[i] = 0xff
					}
					return 0, nil
				},
				5: func(_ *interp.VM, r1, _, _, _, _ uint64) (uint64, error) { return r1, nil },
			},
		}
		var self *interp.Program
		cfg.Helpers[12] = func(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) {
			vm.TailCall(self)
			return 0, nil
		}
		p, err := interp.Load(prog, cfg)
		if err != nil {
			var le *interp.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load error %T is not a *LoadError: %v", err, err)
			}
			return
		}
		self = p
		vm := interp.NewVM(&interp.VMConfig{Budget: fuzzBudget, MaxRegions: 8})
		ptr, err := vm.AddRegion(region, true)
		if err != nil {
			t.Fatal(err)
		}
		_, err = vm.Run(p, ptr, uint64(len(region)))
		if errors.Is(err, interp.ErrInternal) {
			t.Fatalf("interpreter panicked: %v", err)
		}
		if err != nil {
			var fault *interp.Fault
			if !errors.As(err, &fault) {
				t.Fatalf("Run error %T is not a *Fault: %v", err, err)
			}
		}
		if vm.Executed() > fuzzBudget {
			t.Fatalf("executed %d instructions, budget %d", vm.Executed(), fuzzBudget)
		}
		if !bytes.Equal(buf[:len(guard)], guard) || !bytes.Equal(buf[len(guard)+len(mem):], guard) {
			t.Fatal("guard bytes around the context region changed")
		}
		if !bytes.Equal(ro, bytes.Repeat([]byte{0x5a}, 64)) {
			t.Fatal("read-only static region changed")
		}
	})
}

package interp_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/internal/progen"
	"github.com/bpfd-project/bpfd/pkg/interp"
)

// TestRegionAccess checks every instruction kind and the helper accessor
// against regions of each access: read-write, read-only, write-only and
// none. Static region 0 is write-only, 1 has no access, 2 is read-only.
func TestRegionAccess(t *testing.T) {
	secret := bytes.Repeat([]byte{0x5a}, 16)
	none := bytes.Repeat([]byte{0x33}, 16)
	ro := bytes.Repeat([]byte{0x11}, 16)
	const (
		hRead  = 1 // r0 = first byte of [r1, r1+r2) read through vm.Mem
		hWrite = 2 // writes 0xab into [r1, r1+r2) through vm.Mem
		hRW    = 3 // increments the first byte of [r1, r1+1) through MemAccess(ReadWrite)
		hNone  = 4 // MemAccess(0): bounds only, returns 1 when it succeeds
	)
	cfg := &interp.Config{
		StaticRegions: []interp.Region{{Data: secret, Writable: true, NoRead: true}, {Data: none, NoRead: true}, {Data: ro}},
		Helpers: map[int32]interp.HelperFunc{
			hRead: func(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
				b, err := vm.Mem(r1, int(r2), false)
				if err != nil {
					return 0, err
				}
				return uint64(b[0]), nil
			},
			hWrite: func(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
				b, err := vm.Mem(r1, int(r2), true)
				if err != nil {
					return 0, err
				}
				for i := range b {
					b[i] = 0xab
				}
				return 0, nil
			},
			hRW: func(vm *interp.VM, r1, _, _, _, _ uint64) (uint64, error) {
				b, err := vm.MemAccess(r1, 1, interp.ReadWrite)
				if err != nil {
					return 0, err
				}
				b[0]++
				return 0, nil
			},
			hNone: func(vm *interp.VM, r1, _, _, _, _ uint64) (uint64, error) {
				if _, err := vm.MemAccess(r1, 4, 0); err != nil {
					return 0, err
				}
				return 1, nil
			},
		},
	}
	wo := interp.StaticPointer(0, 0)
	no := interp.StaticPointer(1, 0)
	rd := interp.StaticPointer(2, 0)
	call := func(h int32) asm.Instruction { return asm.BuiltinFunc(h).Call() }
	cases := []struct {
		name  string
		insns []asm.Instruction
		want  error  // nil: the run succeeds
		ret   uint64 // r0 on success
	}{
		{name: "load from write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, want: interp.ErrWriteOnly},
		{name: "sign-extending load from write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.LoadMemSX(asm.R0, asm.R1, 4, asm.Word)}, want: interp.ErrWriteOnly},
		{name: "store into write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.StoreImm(asm.R1, 8, 7, asm.Word), asm.Mov.Imm(asm.R0, 0)}},
		{name: "atomic add into write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Mov.Imm(asm.R2, 1),
			progen.Atomic(asm.AddAtomic, asm.R1, asm.R2, asm.Word, 0), asm.Mov.Imm(asm.R0, 0)}},
		{name: "fetch add on write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Mov.Imm(asm.R2, 1),
			progen.Atomic(asm.FetchAdd, asm.R1, asm.R2, asm.DWord, 0), asm.Mov.Reg(asm.R0, asm.R2)}, want: interp.ErrWriteOnly},
		{name: "xchg on write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Mov.Imm(asm.R2, 1),
			progen.Atomic(asm.Xchg, asm.R1, asm.R2, asm.Word, 0), asm.Mov.Reg(asm.R0, asm.R2)}, want: interp.ErrWriteOnly},
		{name: "cmpxchg on write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Mov.Imm(asm.R2, 1), asm.Mov.Imm(asm.R0, 0),
			progen.Atomic(asm.CmpXchg, asm.R1, asm.R2, asm.DWord, 0)}, want: interp.ErrWriteOnly},
		{name: "helper read of write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Mov.Imm(asm.R2, 1), call(hRead)}, want: interp.ErrWriteOnly},
		{name: "helper write into write-only", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Add.Imm(asm.R1, 12), asm.Mov.Imm(asm.R2, 4), call(hWrite), asm.Mov.Imm(asm.R0, 0)}},
		{name: "helper read-write of write-only", insns: []asm.Instruction{lddw(asm.R1, wo), call(hRW)}, want: interp.ErrWriteOnly},
		{name: "load from no-access", insns: []asm.Instruction{lddw(asm.R1, no), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, want: interp.ErrWriteOnly},
		{name: "store into no-access", insns: []asm.Instruction{lddw(asm.R1, no), asm.StoreImm(asm.R1, 0, 1, asm.Byte)}, want: interp.ErrReadOnly},
		{name: "atomic add into no-access", insns: []asm.Instruction{lddw(asm.R1, no), asm.Mov.Imm(asm.R2, 1),
			progen.Atomic(asm.AddAtomic, asm.R1, asm.R2, asm.Word, 0)}, want: interp.ErrReadOnly},
		{name: "helper read of no-access", insns: []asm.Instruction{lddw(asm.R1, no), asm.Mov.Imm(asm.R2, 1), call(hRead)}, want: interp.ErrWriteOnly},
		{name: "helper write into no-access", insns: []asm.Instruction{lddw(asm.R1, no), asm.Mov.Imm(asm.R2, 1), call(hWrite)}, want: interp.ErrReadOnly},
		{name: "helper bounds-only on no-access", insns: []asm.Instruction{lddw(asm.R1, no), call(hNone)}, ret: 1},
		{name: "helper bounds-only past the end", insns: []asm.Instruction{lddw(asm.R1, no), asm.Add.Imm(asm.R1, 13), call(hNone)}, want: interp.ErrOutOfBounds},
		{name: "helper read of read-only", insns: []asm.Instruction{lddw(asm.R1, rd), asm.Mov.Imm(asm.R2, 16), call(hRead)}, ret: 0x11},
		{name: "helper write into read-only", insns: []asm.Instruction{lddw(asm.R1, rd), asm.Mov.Imm(asm.R2, 1), call(hWrite)}, want: interp.ErrReadOnly},
		{name: "helper read-write of read-only", insns: []asm.Instruction{lddw(asm.R1, rd), call(hRW)}, want: interp.ErrReadOnly},
		{name: "helper read past write-only end", insns: []asm.Instruction{lddw(asm.R1, wo), asm.Add.Imm(asm.R1, 8), asm.Mov.Imm(asm.R2, 9), call(hRead)}, want: interp.ErrOutOfBounds},
		{name: "helper read-write of stack", insns: []asm.Instruction{asm.StoreImm(asm.R10, -8, 41, asm.Word), asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -8),
			call(hRW), asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord)}, ret: 42},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, cfg, append(tc.insns, asm.Return())...)
			got, err := p.Run(nil)
			if tc.want == nil {
				if err != nil || got != tc.ret {
					t.Fatalf("Run = %#x, %v; want %#x", got, err, tc.ret)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			var f *interp.Fault
			if !errors.As(err, &f) || f.Error() == "" {
				t.Fatalf("%v is not a described *Fault", err)
			}
		})
	}
	// Nothing leaked into the regions that may not be written, and the
	// writes into the write-only one landed.
	if !bytes.Equal(none, bytes.Repeat([]byte{0x33}, 16)) || !bytes.Equal(ro, bytes.Repeat([]byte{0x11}, 16)) {
		t.Fatalf("protected regions changed: none %x ro %x", none, ro)
	}
	if secret[8] != 7 || secret[12] != 0xab {
		t.Fatalf("write-only region %x: stores did not land", secret)
	}
}

// TestAddRegionAccess checks dynamic regions of each access, as helpers
// hand them out (a map value looked up through a handle's mode).
func TestAddRegionAccess(t *testing.T) {
	for _, tc := range []struct {
		name        string
		acc         interp.Access
		load, store error
	}{
		{"read-write", interp.ReadWrite, nil, nil},
		{"read", interp.Read, nil, interp.ErrReadOnly},
		{"write", interp.Write, interp.ErrWriteOnly, nil},
		{"none", 0, interp.ErrWriteOnly, interp.ErrReadOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte{9, 0, 0, 0, 0, 0, 0, 0}
			cfg := &interp.Config{Helpers: map[int32]interp.HelperFunc{
				1: func(vm *interp.VM, _, _, _, _, _ uint64) (uint64, error) { return vm.AddRegionAccess(buf, tc.acc) },
			}}
			ldp := load(t, cfg, asm.FnMapLookupElem.Call(), asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return())
			if got, err := ldp.Run(nil); !errors.Is(err, tc.load) || (err == nil && got != 9) {
				t.Errorf("load: %d, %v; want %v", got, err, tc.load)
			}
			stp := load(t, cfg, asm.FnMapLookupElem.Call(), asm.StoreImm(asm.R0, 0, 5, asm.Byte), asm.Mov.Imm(asm.R0, 0), asm.Return())
			if _, err := stp.Run(nil); !errors.Is(err, tc.store) {
				t.Errorf("store: %v; want %v", err, tc.store)
			}
		})
	}
}

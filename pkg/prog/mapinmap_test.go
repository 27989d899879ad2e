package prog_test

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// mimProg looks outer[okey] up, then inner[1] in the map found; with
// write it stores value+5 back (bpf_map_update_elem on the inner map)
// and returns value+5, else the value; 1000 for no inner map, 2000 for
// no value.
func mimProg(okey int32, write bool) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Imm(asm.R1, okey), asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Mov.Imm(asm.R0, 1000), asm.Return(),
		asm.Mov.Reg(asm.R6, asm.R0).WithSymbol("found"),
		asm.Mov.Imm(asm.R1, 1), asm.StoreMem(asm.R10, -8, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "val"),
		asm.Mov.Imm(asm.R0, 2000), asm.Return(),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord).WithSymbol("val"),
	}
	if write {
		insns = append(insns,
			asm.Add.Imm(asm.R7, 5), asm.StoreMem(asm.R10, -16, asm.R7, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -16),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
		)
	}
	return append(insns, asm.Mov.Reg(asm.R0, asm.R7), asm.Return())
}

// TestMapInMapPrograms runs programs that look inner maps up in
// ARRAY_OF_MAPS and HASH_OF_MAPS, read and update them, in bpfd and the
// kernel, with the outer entry swapped between runs: the same results,
// and the same refusals for programs misusing the inner map pointer.
func TestMapInMapPrograms(t *testing.T) {
	inner := maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	for _, outerType := range []uint32{maps.TypeArrayOfMaps, maps.TypeHashOfMaps} {
		t.Run(maps.TypeName(outerType), func(t *testing.T) {
			// bpfd's side: inner maps by id, resolved through Env.Maps.
			byID := map[uint32]maps.Map{}
			var kInner []*ebpf.Map
			newInner := func(id uint32, v uint64) {
				m, err := maps.New(inner)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				var val [8]byte
				binary.NativeEndian.PutUint64(val[:], v)
				if err := m.Update(u32(1), val[:], 0); err != nil {
					t.Fatal(err)
				}
				byID[id] = m
				if os.Geteuid() == 0 {
					k, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { k.Close() })
					if err := k.Put(uint32(1), v); err != nil {
						t.Fatal(err)
					}
					kInner = append(kInner, k)
				}
			}
			newInner(101, 41)
			newInner(102, 42)
			tmpl := inner
			outer, err := maps.New(maps.Spec{Type: outerType, KeySize: 4, ValueSize: 4, MaxEntries: 4, Inner: &tmpl})
			if err != nil {
				t.Fatal(err)
			}
			defer outer.Close()
			var kOuter *ebpf.Map
			if os.Geteuid() == 0 {
				kOuter, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(outerType), KeySize: 4, ValueSize: 4, MaxEntries: 4,
					InnerMap: &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4}})
				if err != nil {
					t.Fatal(err)
				}
				defer kOuter.Close()
			}
			store := func(key uint32, which int) {
				t.Helper()
				if err := outer.Update(u32(key), u32(uint32(101+which)), 0); err != nil {
					t.Fatal(err)
				}
				if kOuter != nil {
					if err := kOuter.Put(key, kInner[which]); err != nil {
						t.Fatal(err)
					}
				}
			}
			env := &prog.Env{Maps: func(id uint32) maps.Map { return byID[id] }}
			run := func(insns asm.Instructions) (uint64, uint64, bool) {
				t.Helper()
				bp, berr := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, build(insns, []int{0})),
					Maps: []prog.MapRef{{Map: outer, Read: true, Write: true}}, License: "GPL"}, env)
				var bret, kret uint64
				if berr == nil {
					res, err := bp.TestRun(&prog.RunOptions{Data: make([]byte, 64)})
					if err != nil {
						t.Fatalf("bpfd run: %v", err)
					}
					bret = res.Ret
				}
				if kOuter == nil {
					return bret, bret, berr == nil
				}
				kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
					Instructions: build(insns, []int{kOuter.FD()})}, ebpf.ProgramOptions{LogDisabled: true})
				if (berr == nil) != (kerr == nil) {
					t.Fatalf("bpfd load: %v; kernel load: %v", berr, kerr)
				}
				if kerr == nil {
					defer kp.Close()
					r, err := kp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
					if err != nil {
						t.Fatal(err)
					}
					kret = uint64(r)
				}
				return bret, kret, berr == nil
			}
			check := func(what string, insns asm.Instructions, want uint64) {
				t.Helper()
				b, k, ok := run(insns)
				if !ok {
					t.Fatalf("%s: refused", what)
				}
				if b != k || b != want {
					t.Fatalf("%s: bpfd %d, kernel %d, want %d", what, b, k, want)
				}
			}
			check("empty outer", mimProg(0, false), 1000)
			store(0, 0)
			check("inner A", mimProg(0, false), 41)
			check("inner A, write", mimProg(0, true), 46)
			check("inner A after write", mimProg(0, false), 46)
			store(0, 1) // swap
			check("inner B after swap", mimProg(0, false), 42)
			check("absent outer key", mimProg(3, false), 1000)
			// Misuse: the inner map pointer used without a NULL check,
			// stored through, or the outer map updated by the program.
			// (Loads through a map pointer, which the kernel types
			// with BTF as struct bpf_map, are not compared: bpfd's
			// verifier refuses them; see pkg/verifier's doc.)
			for _, bad := range []struct {
				name  string
				insns asm.Instructions
			}{
				{"no null check", asm.Instructions{
					asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
					asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
					asm.FnMapLookupElem.Call(),
					asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
					asm.FnMapLookupElem.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}},
				{"store through the map pointer", asm.Instructions{
					asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
					asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
					asm.FnMapLookupElem.Call(), asm.JEq.Imm(asm.R0, 0, "out"),
					asm.Mov.Imm(asm.R1, 1), asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
					asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()}},
				{"update the outer map", asm.Instructions{
					asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
					asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
					asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -4), asm.Mov.Imm(asm.R4, 0),
					asm.FnMapUpdateElem.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}},
			} {
				if _, _, ok := run(bad.insns); ok {
					t.Errorf("%s: loaded", bad.name)
				}
			}
		})
	}
}

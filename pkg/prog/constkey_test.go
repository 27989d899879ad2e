package prog_test

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/maps"
)

// TestConstKeyLookupRun runs a program that uses two array lookups with
// constant keys (a 4-byte immediate at fp-8, a zeroed key at fp-12)
// without NULL checks, which the verifier accepts as kernel 6.18 does
// (pkg/verifier/constkey.go), in bpfd and the kernel: the same return
// value and the same value left in the map.
func TestConstKeyLookupRun(t *testing.T) {
	p := newMapPair(t, maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	put := func(k uint32, v uint64) {
		key, val := binary.LittleEndian.AppendUint32(nil, k), binary.LittleEndian.AppendUint64(nil, v)
		if err := p.m.Update(key, val, 0); err != nil {
			t.Fatal(err)
		}
		if p.k != nil {
			if err := p.k.Put(key, val); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(2, 41)
	put(0, 5)
	insns := asm.Instructions{
		asm.StoreImm(asm.R10, -8, 2, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord), asm.Add.Imm(asm.R1, 1), asm.StoreMem(asm.R6, 0, asm.R1, asm.DWord),
		asm.StoreImm(asm.R10, -12, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -12),
		asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.LSh.Imm(asm.R0, 8),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord), asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
	}
	bret, kret, berr, _ := runBoth(t, insns, []pair{p}, make([]byte, 64))
	if berr != nil {
		t.Fatalf("bpfd load: %v", berr)
	}
	if want := uint64(5<<8 + 42); bret != want {
		t.Errorf("bpfd returned %d, want %d", bret, want)
	}
	key := binary.LittleEndian.AppendUint32(nil, 2)
	val := make([]byte, 8)
	if err := p.m.Lookup(key, val); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(val); got != 42 {
		t.Errorf("bpfd map[2] = %d, want 42", got)
	}
	if p.k == nil {
		t.Log("kernel comparison skipped: needs root for bpf(2)")
		return
	}
	if kret != bret {
		t.Errorf("kernel returned %d, bpfd %d", kret, bret)
	}
	var kv uint64
	if err := p.k.Lookup(key, &kv); err != nil {
		t.Fatal(err)
	}
	if kv != 42 {
		t.Errorf("kernel map[2] = %d, want 42", kv)
	}
}

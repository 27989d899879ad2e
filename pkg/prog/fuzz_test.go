package prog_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/internal/progen"
	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// FuzzVerifiedRun is the verifier's soundness check: whatever program it
// accepts must run on any packet without a fault of the interpreter's
// sandbox (out of bounds, read-only, falling off, bad call, call depth).
// Running out of budget is not unsound and is allowed.
func FuzzVerifiedRun(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 16 {
		insns, input := progen.GenerateInput(rng, &progen.Options{Body: 8 + rng.IntN(48)})
		f.Add(marshalInsns(f, insns), append(make([]byte, 14), input...))
	}
	// A lookup, a bounds-checked access and an update.
	f.Add(marshalInsns(f, asm.Instructions{
		asm.StoreImm(asm.R10, -4, 3, asm.Word),
		asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.And.Imm(asm.R1, 7),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Byte),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}), make([]byte, 64))
	// Legacy packet loads: absolute, indirect from a packet byte, and
	// through the SKF_NET_OFF / SKF_LL_OFF areas.
	f.Add(marshalInsns(f, asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadAbs(0, asm.Byte),
		asm.And.Imm(asm.R0, 0x0f),
		asm.LSh.Imm(asm.R0, 2),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadInd(asm.R0, asm.R7, 2, asm.Half),
		asm.LoadAbs(-0x100000+9, asm.Byte),
		asm.LoadAbs(-0x200000+12, asm.Word),
		asm.Return(),
	}), []byte{0x45, 0, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24})

	// Packet helpers: adjust the head, reload and check the bounds,
	// write through the new data pointer; adjust the tail and meta; copy
	// bytes out and back; a checksum diff over the stack.
	f.Add(marshalInsns(f, asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, -4),
		asm.FnXdpAdjustHead.Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 8),
		asm.FnXdpAdjustTail.Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -8),
		asm.FnXdpAdjustMeta.Call(),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 8),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.StoreImm(asm.R2, 0, 0x11, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 16),
		asm.FnXdpLoadBytes.Call(),
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, 16),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("out"),
		asm.Return(),
	}), make([]byte, 64))
	f.Add(marshalInsns(f, asm.Instructions{
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 8),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbLoadBytesRelative.Call(),
		asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord),
		asm.Return(),
	}), make([]byte, 32))
	// __sk_buff.sk, null-checked, read at every size (sock_test.go).
	for _, sz := range []asm.Size{asm.Byte, asm.Half, asm.Word} {
		f.Add(marshalInsns(f, skLoad(4, sz, false, false)), make([]byte, 40))
	}
	// bpf_fib_lookup on params taken from the packet (fib_test.go).
	f.Add(marshalInsns(f, fibProg(64)), append([]byte{2, 6, 0, 1, 0, 2, 0, 0, 1}, make([]byte, 80)...))

	hash, err := maps.New(maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 16, MaxEntries: 8})
	if err != nil {
		f.Fatal(err)
	}
	array, err := maps.New(maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 8})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { hash.Close(); array.Close() })
	hash.Update([]byte{3, 0, 0, 0}, make([]byte, 16), maps.UpdateAny)
	refs := []prog.MapRef{{Map: array, Read: true, Write: true}, {Map: hash, Read: true, Write: true}}

	f.Fuzz(func(t *testing.T, raw, pkt []byte) {
		if len(raw) == 0 || len(raw)%8 != 0 || len(raw) > 8*1024 {
			return
		}
		for _, typ := range []prog.Type{prog.SocketFilter, prog.XDP} {
			p, err := prog.Load(&prog.Spec{Type: typ, Insns: raw, Maps: refs, License: "GPL"}, nil)
			if err != nil {
				continue
			}
			if len(pkt) > 3000 {
				pkt = pkt[:3000] // within both types' test-run limits
			}
			data := append(make([]byte, 14), pkt...)
			data[12] = 0x88 // not IP: any length is a valid skb test run
			_, err = p.TestRun(&prog.RunOptions{Data: data})
			if err == nil || errors.Is(err, interp.ErrBudget) {
				continue
			}
			t.Fatalf("%v program accepted by the verifier faulted: %v\n%x", typ, err, raw)
		}
	})
}

func marshalInsns(tb testing.TB, insns asm.Instructions) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := insns.Marshal(&b, binary.LittleEndian); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

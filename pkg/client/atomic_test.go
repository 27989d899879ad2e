package client

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// TestAtomicsEncoded: every atomic operation reaches the daemon as itself
// (cilium/ebpf's Marshal encodes them all as a plain add; see
// setAtomicImm): each program applies one to a map value holding 12 and
// returns what the operation fetched.
func TestAtomicsEncoded(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	tests := []struct {
		name      string
		op        asm.AtomicOp
		src       int32
		wantRet   uint64
		wantValue uint64
	}{
		{"add", asm.AddAtomic, 5, 5, 17}, // no fetch: the source register keeps 5
		{"fetch-add", asm.FetchAdd, 5, 12, 17},
		{"fetch-and", asm.FetchAnd, 10, 12, 8},
		{"fetch-or", asm.FetchOr, 3, 12, 15},
		{"fetch-xor", asm.FetchXor, 5, 12, 9},
		{"xchg", asm.Xchg, 99, 12, 99},
		{"cmpxchg", asm.CmpXchg, 42, 12, 42}, // R0 = 12 matches
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := m.Update(u32le(0), binary.LittleEndian.AppendUint64(nil, 12), UpdateAny); err != nil {
				t.Fatal(err)
			}
			ret := asm.R1
			if tt.op == asm.CmpXchg {
				ret = asm.R0
			}
			insns := asm.Instructions{
				asm.StoreImm(asm.R10, -4, 0, asm.Word),
				asm.LoadMapPtr(asm.R1, m.FD()),
				asm.Mov.Reg(asm.R2, asm.R10),
				asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.Mov.Reg(asm.R7, asm.R0),
				asm.Mov.Imm(asm.R0, 12), // cmpxchg's expected value
				asm.Mov.Imm(asm.R1, tt.src),
				tt.op.Mem(asm.R7, asm.R1, asm.DWord, 0),
				asm.Mov.Reg(asm.R0, ret),
				asm.Return(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return(),
			}
			p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: insns, License: "GPL"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			got, err := p.Run(&RunOptions{Data: ethFrame()})
			if err != nil {
				t.Fatal(err)
			}
			v := make([]byte, 8)
			if err := m.Lookup(u32le(0), v); err != nil {
				t.Fatal(err)
			}
			if got != uint32(tt.wantRet) || binary.LittleEndian.Uint64(v) != tt.wantValue {
				t.Fatalf("returned %d, value %d; want %d and %d", got, binary.LittleEndian.Uint64(v), tt.wantRet, tt.wantValue)
			}
		})
	}
	// The encoding itself: imm is the kernel's BPF_FETCH|op.
	var buf bytes.Buffer
	insns := asm.Instructions{asm.Xchg.Mem(asm.R7, asm.R1, asm.DWord, 0)}
	setAtomicImm(insns)
	insns.Marshal(&buf, binary.LittleEndian)
	raw := buf.Bytes()
	if imm := binary.LittleEndian.Uint32(raw[4:]); imm != 0xe1 {
		t.Fatalf("xchg encoded with imm %#x, want 0xe1 (BPF_XCHG)", imm)
	}
}

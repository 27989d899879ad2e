package prog_test

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/percpu"
)

// forEachCbRef is R2 = &cb (bpf_for_each_map_elem's callback).
var forEachCbRef = asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("cb")

// forEachProg iterates map 0 with a callback that adds (key+1)*(value+7)
// to the sum in the context (fp-8), adds key+1 to the value, deletes the
// element when del and the key is even, and stops after key stopKey
// (-1: never). The program returns sum*64 + the helper's result.
func forEachProg(flags int32, stopKey int32, del bool) asm.Instructions {
	insns := asm.Instructions{
		btf.WithFuncMetadata(asm.Mov.Imm(asm.R1, 0), funcBTF("main", btf.GlobalFunc, 1)),
		asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0), forEachCbRef,
		asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, flags), asm.FnForEachMapElem.Call(),
		asm.LoadMem(asm.R1, asm.R10, -8, asm.DWord), asm.LSh.Imm(asm.R1, 6), asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
		// cb(map, key, value, ctx)
		btf.WithFuncMetadata(asm.LoadMem(asm.R5, asm.R2, 0, asm.Word), funcBTF("cb", btf.StaticFunc, 4)).WithSymbol("cb"),
		asm.Add.Imm(asm.R5, 1),
		asm.LoadMem(asm.R6, asm.R3, 0, asm.DWord),
		asm.Mov.Reg(asm.R7, asm.R6), asm.Add.Imm(asm.R7, 7), asm.Mul.Reg(asm.R7, asm.R5),
		asm.LoadMem(asm.R8, asm.R4, 0, asm.DWord), asm.Add.Reg(asm.R8, asm.R7), asm.StoreMem(asm.R4, 0, asm.R8, asm.DWord),
		asm.Add.Reg(asm.R6, asm.R5), asm.StoreMem(asm.R3, 0, asm.R6, asm.DWord),
		asm.Mov.Reg(asm.R9, asm.R5), // key+1, kept across the delete
	}
	if del {
		insns = append(insns,
			asm.Mov.Reg(asm.R6, asm.R5), asm.And.Imm(asm.R6, 1), asm.JNE.Imm(asm.R6, 1, "keep"),
			asm.FnMapDeleteElem.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("keep"))
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 0),
		asm.JNE.Imm(asm.R9, stopKey+1, "ret"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return().WithSymbol("ret"))
}

// funcBTF is the BTF of a function taking params 64-bit integers and
// returning one: the kernel needs func_info for programs with callbacks.
func funcBTF(name string, linkage btf.FuncLinkage, params int) *btf.Func {
	u64 := &btf.Int{Name: "u64", Size: 8}
	proto := &btf.FuncProto{Return: u64}
	for i := range params {
		proto.Params = append(proto.Params, btf.FuncParam{Name: string(rune('a' + i)), Type: u64})
	}
	return &btf.Func{Name: name, Type: proto, Linkage: linkage}
}

// TestForEachMapElem runs bpf_for_each_map_elem over every map type it
// takes, in bpfd and the kernel with the same contents: the same result
// (the callbacks' sum and the number of elements seen), the same map
// afterwards (values written through the callback's value pointer,
// elements deleted from inside the callback), -EINVAL for flags. Hash
// iteration orders differ between bpfd and the kernel, so early stops
// are compared on arrays only.
func TestForEachMapElem(t *testing.T) {
	needKernel(t)
	ncpu := percpu.Possible()
	tests := []struct {
		name      string
		typ       uint32
		flags     int32
		stop      int32
		del, hash bool
		entries   uint32 // 0: 8
	}{
		{name: "hash", typ: maps.TypeHash, stop: -1, hash: true},
		{name: "hash deleting from the callback", typ: maps.TypeHash, stop: -1, del: true, hash: true},
		{name: "lru hash", typ: maps.TypeLRUHash, stop: -1, hash: true},
		{name: "lru hash deleting from the callback", typ: maps.TypeLRUHash, stop: -1, del: true, hash: true},
		{name: "percpu hash", typ: maps.TypePercpuHash, stop: -1, hash: true},
		{name: "lru percpu hash", typ: maps.TypeLRUPercpuHash, stop: -1, hash: true},
		{name: "array", typ: maps.TypeArray, stop: -1},
		{name: "array stopping at key 3", typ: maps.TypeArray, stop: 3},
		{name: "percpu array", typ: maps.TypePercpuArray, stop: -1},
		{name: "percpu array stopping at key 5", typ: maps.TypePercpuArray, stop: 5},
		// More elements than a run may hold regions (1024): the
		// callback's two regions are rebound to each element.
		{name: "array of 3000", typ: maps.TypeArray, stop: -1, entries: 3000},
		{name: "hash of 3000", typ: maps.TypeHash, stop: -1, hash: true, entries: 3000},
		{name: "hash with flags", typ: maps.TypeHash, flags: 1, stop: -1, hash: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := uint32(8)
			if tt.entries != 0 {
				entries = tt.entries
			}
			p := newMapPair(t, maps.Spec{Type: tt.typ, KeySize: 4, ValueSize: 8, MaxEntries: entries})
			pc := tt.typ == maps.TypePercpuHash || tt.typ == maps.TypeLRUPercpuHash || tt.typ == maps.TypePercpuArray
			keys := []uint32{0, 1, 2, 3, 4, 5, 6, 7}
			if tt.hash {
				keys = []uint32{3, 10, 11, 42, 7}
			}
			if tt.entries != 0 {
				keys = keys[:0]
				for k := range tt.entries {
					if tt.hash {
						k *= 7
					}
					keys = append(keys, k)
				}
			}
			for _, k := range keys {
				v := uint64(k)*5 + 2
				kb := binary.NativeEndian.AppendUint32(nil, k)
				if pc {
					all := make([]uint64, ncpu)
					var b []byte
					for i := range all {
						all[i] = v
						b = binary.NativeEndian.AppendUint64(b, v)
					}
					if err := p.m.Update(kb, b, 0); err != nil {
						t.Fatal(err)
					}
					if err := p.k.Update(k, all, ebpf.UpdateAny); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := p.m.Update(kb, binary.NativeEndian.AppendUint64(nil, v), 0); err != nil {
					t.Fatal(err)
				}
				if err := p.k.Update(k, v, ebpf.UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			bret, kret, berr, kerr := runBoth(t, forEachProg(tt.flags, tt.stop, tt.del), []pair{p}, make([]byte, 64))
			if berr != nil || kerr != nil {
				t.Fatalf("load: bpfd %v, kernel %v", berr, kerr)
			}
			if uint32(bret) != uint32(kret) {
				t.Fatalf("bpfd returned %#x, kernel %#x", uint32(bret), uint32(kret))
			}
			t.Logf("result %#x (sum %d, %d elements)", uint32(kret), uint32(kret)>>6, int32(kret<<26)>>26)
			// The maps afterwards: the same keys, the same values (per-CPU:
			// the same total over the CPUs, whichever CPU ran).
			got := dumpSum(t, p.m, ncpu, pc)
			want := map[uint32]uint64{}
			it := p.k.Iterate()
			var k uint32
			if pc {
				var vs []uint64
				for it.Next(&k, &vs) {
					var s uint64
					for _, v := range vs {
						s += v
					}
					want[k] = s
				}
			} else {
				var v uint64
				for it.Next(&k, &v) {
					want[k] = v
				}
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("bpfd map %v, kernel map %v", got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("bpfd map %v, kernel map %v", got, want)
				}
			}
		})
	}
}

// dumpSum reads every element of m: key → value (per-CPU: the sum over
// the CPUs).
func dumpSum(t *testing.T, m maps.Map, ncpu int, pc bool) map[uint32]uint64 {
	t.Helper()
	out := map[uint32]uint64{}
	vs := 8
	if pc {
		vs = 8 * ncpu
	}
	val := make([]byte, vs)
	var key []byte
	next := make([]byte, 4)
	for m.NextKey(key, next) == nil {
		if err := m.Lookup(next, val); err != nil {
			t.Fatal(err)
		}
		var s uint64
		for o := 0; o < vs; o += 8 {
			s += binary.NativeEndian.Uint64(val[o:])
		}
		out[binary.NativeEndian.Uint32(next)] = s
		key = append(key[:0], next...)
	}
	return out
}

package verifier

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// forEachFunc is the BTF of a function taking params 64-bit integers:
// the kernel needs func_info for programs with callbacks.
func forEachFunc(name string, linkage btf.FuncLinkage, params int) *btf.Func {
	u64 := &btf.Int{Name: "u64", Size: 8}
	proto := &btf.FuncProto{Return: u64}
	for i := range params {
		proto.Params = append(proto.Params, btf.FuncParam{Name: string(rune('a' + i)), Type: u64})
	}
	return &btf.Func{Name: name, Type: proto, Linkage: linkage}
}

// forEachCall is main: bpf_for_each_map_elem(map 0, cb, ctx, 0), ctx
// fp-8 (or R3 as set by ctx when not nil), then cb's body.
func forEachCall(ctx asm.Instructions, cb ...asm.Instruction) asm.Instructions {
	p := asm.Instructions{
		btf.WithFuncMetadata(asm.Mov.Imm(asm.R1, 0), forEachFunc("main", btf.GlobalFunc, 1)),
		asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0), loadFunc(asm.R2, "cb"),
		asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8),
	}
	p = append(p, ctx...)
	p = append(p, asm.Mov.Imm(asm.R4, 0), asm.FnForEachMapElem.Call(), asm.Return())
	cb[0] = btf.WithFuncMetadata(cb[0], forEachFunc("cb", btf.StaticFunc, 4)).WithSymbol("cb")
	return append(p, cb...)
}

// TestForEachCallbacks checks bpf_for_each_map_elem's prototype and
// callback verification against the kernel's verdicts: key read-only,
// value writable only with write access, return value in [0, 1], the map
// types that iterate, the context on the stack.
func TestForEachCallbacks(t *testing.T) {
	hash := MapInfo{Type: MapTypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Read: true, Write: true, Name: "h"}
	arr := MapInfo{Type: MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Read: true, Write: true, Name: "a"}
	typed := func(typ uint32, ks uint32) MapInfo {
		m := hash
		m.Type, m.KeySize = typ, ks
		if typ == MapTypeProgArray {
			m.ValueSize = 4
		}
		return m
	}
	ret0 := []asm.Instruction{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	body := func(insns ...asm.Instruction) []asm.Instruction { return append(insns, ret0...) }
	// readWrite reads the key and the value, adds them into the value
	// and into the context.
	readWrite := body(
		asm.LoadMem(asm.R5, asm.R2, 0, asm.Word), asm.LoadMem(asm.R6, asm.R3, 0, asm.DWord),
		asm.Add.Reg(asm.R6, asm.R5), asm.StoreMem(asm.R3, 0, asm.R6, asm.DWord),
		asm.LoadMem(asm.R7, asm.R4, 0, asm.DWord), asm.Add.Reg(asm.R7, asm.R6), asm.StoreMem(asm.R4, 0, asm.R7, asm.DWord))
	tests := []struct {
		name      string
		m         MapInfo
		ctx       asm.Instructions
		cb        []asm.Instruction
		errno     unix.Errno
		log       string
		kernelDev string // why the kernel's verdict differs
	}{
		{name: "hash: read key and value, write value and ctx", m: hash, cb: readWrite},
		{name: "array: read key and value, write value and ctx", m: arr, cb: readWrite},
		{name: "percpu array", m: typed(MapTypePercpuArray, 4), cb: readWrite},
		{name: "lru percpu hash", m: typed(MapTypeLRUPercpuHash, 4), cb: readWrite},
		{name: "NULL ctx", m: hash, ctx: asm.Instructions{asm.Mov.Imm(asm.R3, 0)}, cb: ret0},
		{name: "key passed to map_lookup_elem", m: hash, cb: body(asm.FnMapLookupElem.Call())},
		{name: "stop: return 1", m: hash, cb: []asm.Instruction{asm.Mov.Imm(asm.R0, 1), asm.Return()}},
		{name: "write into the key", m: hash, cb: body(asm.StoreImm(asm.R2, 0, 1, asm.Word)),
			errno: unix.EACCES, log: "write to change key"},
		{name: "read past the key", m: hash, cb: body(asm.LoadMem(asm.R5, asm.R2, 4, asm.Word)),
			errno: unix.EACCES, log: "map key"},
		{name: "read past the value", m: hash, cb: body(asm.LoadMem(asm.R5, asm.R3, 8, asm.DWord)),
			errno: unix.EACCES, log: "map value"},
		{name: "return 2", m: hash, cb: []asm.Instruction{asm.Mov.Imm(asm.R0, 2), asm.Return()},
			errno: unix.EINVAL, log: "should have been in [0, 1]"},
		{name: "value write through a read-only handle", m: readOnly(hash), cb: body(asm.StoreImm(asm.R3, 0, 1, asm.Word)),
			errno: unix.EACCES, log: "denied"},
		{name: "value read through a read-only handle", m: readOnly(hash), cb: body(asm.LoadMem(asm.R5, asm.R3, 0, asm.DWord))},
		{name: "iteration through a write-only handle", m: writeOnly(hash), cb: ret0,
			errno: unix.EACCES, log: "denied",
			kernelDev: "bpfd refuses the iteration on a write-only handle: the callback would see every key"},
		{name: "ctx not on the stack", m: hash, ctx: asm.Instructions{asm.Mov.Reg(asm.R3, asm.R1)}, cb: ret0,
			errno: unix.EACCES, log: "expected=fp"},
		{name: "program array", m: typed(MapTypeProgArray, 4), cb: ret0, errno: errENOTSUPP, log: "not allowed for map"},
		{name: "queue", m: MapInfo{Type: MapTypeQueue, ValueSize: 8, MaxEntries: 4, Read: true, Write: true}, cb: ret0, errno: errENOTSUPP, log: "not allowed for map"},
		{name: "lpm trie", m: MapInfo{Type: MapTypeLPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 4, Flags: unix.BPF_F_NO_PREALLOC, Read: true, Write: true},
			cb: ret0, errno: errENOTSUPP, log: "not allowed for map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			insns := forEachCall(tt.ctx, append([]asm.Instruction(nil), tt.cb...)...)
			env := socketEnv(tt.m)
			_, err := Verify(marshal(t, insns), env)
			if tt.errno == 0 {
				if err != nil {
					t.Fatalf("rejected: %v\n%s", err, err.(*Error).Log)
				}
			} else {
				var ve *Error
				if !errors.As(err, &ve) || ve.Errno != tt.errno || !strings.Contains(ve.Log, tt.log) {
					t.Fatalf("got %v, want %v with %q in the log", err, tt.errno, tt.log)
				}
			}
			if os.Geteuid() != 0 || tt.kernelDev != "" {
				return
			}
			kerr := kernelLoadFuncs(t, insns, tt.m)
			var kerrno unix.Errno
			if kerr != nil && !errors.As(kerr, &kerrno) {
				t.Fatalf("kernel: %v", kerr)
			}
			if kerrno != tt.errno {
				t.Fatalf("kernel: %v, bpfd: %v", kerr, err)
			}
		})
	}
}

// kernelLoadFuncs loads insns (with their BTF function metadata) as a
// socket filter into the kernel, with map 0 created as m.
func kernelLoadFuncs(t *testing.T, insns asm.Instructions, m MapInfo) error {
	t.Helper()
	flags := m.Flags
	if !m.Write {
		flags |= unix.BPF_F_RDONLY_PROG
	}
	if !m.Read {
		flags |= unix.BPF_F_WRONLY_PROG
	}
	km, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(m.Type), KeySize: m.KeySize, ValueSize: m.ValueSize,
		MaxEntries: m.MaxEntries, Flags: flags})
	if err != nil {
		t.Fatalf("kernel map: %v", err)
	}
	defer km.Close()
	out := append(asm.Instructions(nil), insns...)
	for i := range out {
		if out[i].OpCode.IsDWordLoad() && out[i].Src == asm.PseudoMapFD {
			out[i].Constant = int64(km.FD())
		}
	}
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, Instructions: out, License: "GPL"},
		ebpf.ProgramOptions{})
	if err == nil {
		p.Close()
	}
	if os.Getenv("FOREACH_LOG") != "" {
		t.Logf("kernel: %+v", err)
	}
	return err
}

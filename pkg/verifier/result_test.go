package verifier

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

func TestResult(t *testing.T) {
	tests := []struct {
		name  string
		insns asm.Instructions
		env   *Env
		check func(t *testing.T, r *Result)
	}{
		{name: "packet pointer loads are reported for rewriting", insns: packetParser(), env: xdpEnv(),
			check: func(t *testing.T, r *Result) {
				want := []CtxAccess{
					{Insn: 0, Field: 0, Size: 4, Kind: FieldPacketStart},
					{Insn: 1, Field: 1, Size: 4, Kind: FieldPacketEnd},
				}
				if !slices.Equal(r.CtxAccesses, want) {
					t.Errorf("CtxAccesses = %+v, want %+v", r.CtxAccesses, want)
				}
			}},
		{name: "subprograms and their stack depth", insns: bpfToBpf(), env: socketEnv(),
			check: func(t *testing.T, r *Result) {
				if !slices.Equal(r.Subprogs, []int{0, 8}) || !slices.Equal(r.StackDepth, []int{8, 16}) {
					t.Errorf("Subprogs = %v StackDepth = %v, want [0 8] [8 16]", r.Subprogs, r.StackDepth)
				}
				if r.TailCalls || len(r.Callbacks) != 0 {
					t.Errorf("unexpected tail calls/callbacks: %+v", r)
				}
			}},
		{name: "callbacks", insns: bpfLoop(0), env: socketEnv(),
			check: func(t *testing.T, r *Result) {
				if !slices.Equal(r.Helpers, []int32{FnLoop}) {
					t.Errorf("Helpers = %v", r.Helpers)
				}
				if !slices.Equal(r.Callbacks, []int{11}) || !slices.Equal(r.Subprogs, []int{0, 11}) {
					t.Errorf("Callbacks = %v Subprogs = %v, want [11] [0 11]", r.Callbacks, r.Subprogs)
				}
			}},
		{name: "tail calls", insns: tailCall(), env: socketEnv(jmpMap),
			check: func(t *testing.T, r *Result) {
				if !r.TailCalls || !slices.Equal(r.Helpers, []int32{FnTailCall}) {
					t.Errorf("TailCalls = %v Helpers = %v", r.TailCalls, r.Helpers)
				}
			}},
		{name: "bounded loop is explored iteration by iteration", insns: boundedLoop(), env: socketEnv(),
			check: func(t *testing.T, r *Result) {
				if r.InsnsProcessed < 300 || r.InsnsProcessed > 1000 {
					t.Errorf("InsnsProcessed = %d, want about 3 per iteration", r.InsnsProcessed)
				}
				if !strings.Contains(r.Log, "processed") {
					t.Errorf("log: %q", r.Log)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Verify(marshal(t, tt.insns), tt.env)
			if err != nil {
				t.Fatalf("%v\n%s", err, err.(*Error).Log)
			}
			tt.check(t, r)
		})
	}
}

func TestErrorLog(t *testing.T) {
	env := socketEnv(readOnly(configMap))
	env.LineInfo = map[int]LineInfo{8: {File: "prog.c", Line: 12, Text: "\tv->hits = 1;"}}
	_, err := Verify(marshal(t, storeToMap()), env)
	var ve *Error
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *Error", err)
	}
	for _, want := range []string{
		"; prog.c:12: v->hits = 1;\n8: (7b) *(u64 *)(r0 +0) = r1\n",
		"R0=map_value(map='config',ks=4,vs=64) R1=1 R10=fp0",
		"write into map 'config' denied: program's handle has read-only access",
	} {
		if !strings.Contains(ve.Log, want) {
			t.Errorf("log lacks %q:\n%s", want, ve.Log)
		}
	}
	if ve.PC != 8 || ve.Errno != unix.EACCES {
		t.Errorf("PC = %d Errno = %v", ve.PC, ve.Errno)
	}
	if !errors.Is(err, unix.EACCES) || errno.Of(err, unix.EIO) != unix.EACCES {
		t.Errorf("errno matching failed for %v", err)
	}
	if got := err.Error(); got != "verifier: insn 8: write into map 'config' denied: program's handle has read-only access" {
		t.Errorf("Error() = %q", got)
	}
}

func TestVerboseLog(t *testing.T) {
	env := xdpEnv()
	env.Verbose = true
	r, err := Verify(marshal(t, packetParser()), env)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"0: (61) r2 = *(u32 *)(r1 +0) ; R1=ctx() R10=fp0",
		"4: (2d) if r4 > r3 goto pc+8",
		"R2=pkt(r=42)",
		"from 4 to 13:",
	} {
		if !strings.Contains(r.Log, want) {
			t.Errorf("log lacks %q:\n%s", want, r.Log)
		}
	}
}

func TestDisasm(t *testing.T) {
	insns := asm.Instructions{
		asm.Mov.Imm(asm.R0, -1),
		asm.Add.Reg32(asm.R1, asm.R2),
		asm.LoadMem(asm.R2, asm.R1, 76, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.StoreImm(asm.RFP, -4, 7, asm.Word),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.StoreXAdd(asm.R0, asm.R1, asm.Word),
		asm.JGT.Reg(asm.R2, asm.R3, "x"),
		asm.JEq.Imm32(asm.R0, 5, "x"),
		asm.FnMapLookupElem.Call(),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Return().WithSymbol("x"),
	}
	want := []string{
		"(b7) r0 = -1",
		"(0c) w1 += w2",
		"(61) r2 = *(u32 *)(r1 +76)",
		"(7b) *(u64 *)(r10 -8) = r1",
		"(62) *(u32 *)(r10 -4) = 7",
		"(db) lock *(u64 *)(r0 +0) += r1",
		"(c3) lock *(u32 *)(r0 +0) += w1",
		"(2d) if r2 > r3 goto pc+5",
		"(16) if w0 == 0x5 goto pc+4",
		"(85) call bpf_map_lookup_elem#1",
		"(dc) r1 = be16 r1",
		"(18) r1 = map['config']",
		"(95) exit",
	}
	v := &verifier{env: socketEnv(configMap), helpers: KernelHelpers(), insns: decode(marshal(t, insns))}
	pc := 0
	for i, w := range want {
		if got := v.disasm(pc); got != w {
			t.Errorf("insn %d: got %q, want %q", i, got, w)
		}
		pc++
		if v.insns[pc-1].isLdImm64() {
			pc++
		}
	}
}

func TestDisasmRaw(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{name: "fetch add", raw: rawInsn(0xc3, 0, 1, 4, 0x01), want: "(c3) w1 = atomic_fetch_add((u32 *)(r0 +4), w1)"},
		{name: "cmpxchg", raw: rawInsn(0xdb, 2, 3, -8, 0xf1), want: "(db) r0 = atomic64_cmpxchg((u64 *)(r2 -8), r0, r3)"},
		{name: "movsx", raw: rawInsn(0xbf, 1, 2, 8, 0), want: "(bf) r1 = (s8)r2"},
		{name: "sdiv", raw: rawInsn(0x3f, 1, 2, 1, 0), want: "(3f) r1 s/= r2"},
		{name: "ldsx", raw: rawInsn(0x91, 1, 2, 3, 0), want: "(91) r1 = *(su8 *)(r2 +3)"},
		{name: "pseudo call", raw: rawInsn(0x85, 0, 1, 0, 4), want: "(85) call pc+4"},
		{name: "unknown helper", raw: rawInsn(0x85, 0, 0, 0, 999), want: "(85) call #999"},
		{name: "ld_abs", raw: rawInsn(0x28, 0, 0, 0, 12), want: "(28) r0 = *(u16 *)skb[12]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &verifier{env: socketEnv(), helpers: KernelHelpers(), insns: decode(tt.raw)}
			if got := v.disasm(0); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStateMemoryLimit(t *testing.T) {
	defer func(old int) { maxStateBytes = old }(maxStateBytes)
	maxStateBytes = 1 << 20
	p := asm.Instructions{asm.LoadMem(asm.R1, asm.R1, 0, asm.Word), asm.Mov.Imm(asm.R0, 0)}
	for off := int16(-512); off < 0; off += 8 {
		p = append(p, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	for i := range 300 {
		p = append(p, asm.JEq.Imm(asm.R1, int32(i), fmt.Sprintf("l%d", i)), asm.Mov.Imm(asm.R0, 1).WithSymbol(fmt.Sprintf("l%d", i)))
	}
	p = append(p, asm.Return())
	_, err := Verify(marshal(t, p), socketEnv())
	if !errors.Is(err, unix.E2BIG) || !strings.Contains(err.(*Error).Log, "too complex") {
		t.Fatalf("err = %v, want E2BIG too complex", err)
	}
	maxStateBytes = 128 << 20
	if _, err := Verify(marshal(t, p), socketEnv()); err != nil {
		t.Fatalf("with the default limit: %v", err)
	}
}

package verifier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Maps used by the table programs; Env.Maps index order is the slice order.
var (
	countsMap = MapInfo{Type: uint32(ebpf.Hash), KeySize: 4, ValueSize: 16, MaxEntries: 64, Read: true, Write: true, Name: "counts"}
	configMap = MapInfo{Type: uint32(ebpf.Array), KeySize: 4, ValueSize: 64, MaxEntries: 4, Read: true, Write: true, Name: "config"}
	jmpMap    = MapInfo{Type: uint32(ebpf.ProgramArray), KeySize: 4, ValueSize: 4, MaxEntries: 4, Read: true, Write: true, Name: "jmp"}
	dataMap   = MapInfo{Type: uint32(ebpf.Array), KeySize: 4, ValueSize: 16, MaxEntries: 1, Read: true, Write: true, Name: ".data"}
)

func readOnly(m MapInfo) MapInfo  { m.Write = false; return m }
func writeOnly(m MapInfo) MapInfo { m.Read = false; return m }

// rawInsn encodes one instruction, for encodings asm will not produce.
func rawInsn(op uint8, dst, src uint8, off int16, imm int32) []byte {
	b := make([]byte, 8)
	b[0] = op
	b[1] = dst | src<<4
	binary.LittleEndian.PutUint16(b[2:], uint16(off))
	binary.LittleEndian.PutUint32(b[4:], uint32(imm))
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	exitInsn = rawInsn(0x95, 0, 0, 0, 0)
	mov0     = rawInsn(0xb7, 0, 0, 0, 0) // r0 = 0
)

// Program builders.

func packetParser() asm.Instructions {
	// XDP: drop UDP to port 53 over IPv4 with a fixed 20-byte header.
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 42),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0008, "pass"), // htons(ETH_P_IP)
		asm.LoadMem(asm.R5, asm.R2, 23, asm.Byte),
		asm.JNE.Imm(asm.R5, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 36, asm.Half),
		asm.JNE.Imm(asm.R5, 0x3500, "pass"), // htons(53)
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	}
}

func packetParserIHL() asm.Instructions {
	// XDP: variable IPv4 header length (ihl*4), then read the UDP port.
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 34),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte),
		asm.And.Imm(asm.R5, 0x0f),
		asm.LSh.Imm(asm.R5, 2),
		asm.Mov.Reg(asm.R6, asm.R2),
		asm.Add.Reg(asm.R6, asm.R5),
		asm.Add.Imm(asm.R6, 14),
		asm.Mov.Reg(asm.R7, asm.R6),
		asm.Add.Imm(asm.R7, 8),
		asm.JGT.Reg(asm.R7, asm.R3, "pass"),
		asm.LoadMem(asm.R0, asm.R6, 2, asm.Half),
		asm.And.Imm(asm.R0, 3),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	}
}

func hashCounter() asm.Instructions {
	// Socket filter: counts[skb->protocol].packets += 1, or insert.
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, 16, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "insert"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
		asm.FetchAdd.Mem(asm.R0, asm.R1, asm.DWord, 8),
		asm.Ja.Label("out"),
		asm.Mov.Imm(asm.R1, 1).WithSymbol("insert"),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -24),
		asm.Mov.Imm(asm.R4, 1), // BPF_NOEXIST
		asm.FnMapUpdateElem.Call(),
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Word).WithSymbol("out"),
		asm.Return(),
	}
}

// lookupKey0 emits key=0 on the stack at fp-4 and a lookup in map idx.
func lookupKey0(idx int) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, idx),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
	}
}

func arrayIndex(check bool, limit int32) asm.Instructions {
	// Socket filter: return config[0].words[skb->len] with a bounds check.
	p := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	p = append(p, lookupKey0(0)...)
	p = append(p,
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
	)
	if check {
		p = append(p, asm.JGE.Imm(asm.R1, limit, "out"))
	}
	p = append(p,
		asm.LSh.Imm(asm.R1, 2),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	return p
}

func boundedLoop() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Mov.Imm(asm.R1, 0),
		asm.Add.Reg(asm.R0, asm.R1).WithSymbol("loop"),
		asm.Add.Imm(asm.R1, 1),
		asm.JLT.Imm(asm.R1, 100, "loop"),
		asm.Return(),
	}
}

func boundedLoop32() asm.Instructions {
	// The same with 32-bit registers (clang -mcpu=v3).
	return asm.Instructions{
		asm.Mov.Imm32(asm.R0, 0),
		asm.Mov.Imm32(asm.R1, 0),
		asm.Add.Reg32(asm.R0, asm.R1).WithSymbol("loop"),
		asm.Add.Imm32(asm.R1, 1),
		asm.JLT.Imm32(asm.R1, 100, "loop"),
		asm.Return(),
	}
}

// countingLoop is a socket filter looking up key (i & 63) in map 0 for i
// in [0, n) and counting the hits in R7 (sum: adding up the first word of
// each value found instead). after runs once the loop is done, with R7
// the count and R9 the context; the program returns R0 as after leaves it.
func countingLoop(n int32, sum bool, after asm.Instructions) asm.Instructions {
	hit := asm.Add.Imm(asm.R7, 1)
	if sum {
		hit = asm.Add.Reg(asm.R7, asm.R1)
	}
	p := asm.Instructions{
		asm.Mov.Reg(asm.R9, asm.R1),
		asm.Mov.Imm(asm.R6, 0), // i
		asm.Mov.Imm(asm.R7, 0), // found, or sum
		asm.JGE.Imm(asm.R6, n, "done").WithSymbol("loop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.And.Imm(asm.R1, 63),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "next"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		hit,
		asm.Add.Imm(asm.R6, 1).WithSymbol("next"),
		asm.Ja.Label("loop"),
		asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("done"),
	}
	p = append(p, after...)
	return append(p, asm.Return())
}

// indexByCount reads config[0] at word offset R7 (the loop's count), with
// no bounds check: safe only if the count stays below 16.
func indexByCount() asm.Instructions {
	return seq(lookupKey0(1), asm.Instructions{
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LSh.Imm(asm.R7, 2),
		asm.Add.Reg(asm.R0, asm.R7),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
	})
}

// untilFound loops until n lookups of key 0 have succeeded: the loop bound
// is on the conditionally incremented counter, and a path where the lookup
// keeps failing repeats the same state forever.
func untilFound(n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R7, 0),
		asm.JGE.Imm(asm.R7, n, "done").WithSymbol("loop"),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "loop"),
		asm.Add.Imm(asm.R7, 1),
		asm.Ja.Label("loop"),
		asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("done"),
		asm.Return(),
	}
}

func bpfToBpf() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 7),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R6, 3),
		asm.Call.Label("sub"),
		asm.Add.Reg(asm.R0, asm.R6), // callee-saved
		asm.Return(),
		asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord).WithSymbol("sub"),
		asm.Mov.Imm(asm.R2, 1),
		asm.StoreMem(asm.RFP, -16, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.RFP, -16, asm.DWord),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Return(),
	}
}

func loadFunc(dst asm.Register, label string) asm.Instruction {
	return asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: dst, Src: asm.PseudoFunc, Constant: -1}.WithReference(label)
}

func bpfLoop(ret int32) asm.Instructions {
	// Socket filter: sum 0..9 through bpf_loop into a stack counter.
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R1, 10),
		loadFunc(asm.R2, "cb"),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord),
		asm.Return(),
		asm.LoadMem(asm.R3, asm.R2, 0, asm.DWord).WithSymbol("cb"),
		asm.Add.Reg(asm.R3, asm.R1),
		asm.StoreMem(asm.R2, 0, asm.R3, asm.DWord),
		asm.Mov.Imm(asm.R0, ret),
		asm.Return(),
	}
}

func tailCall() asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 1),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

func globals() asm.Instructions {
	return asm.Instructions{
		asm.LoadMapValue(asm.R1, 0, 8),
		asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord),
		asm.Add.Imm(asm.R0, 1),
		asm.StoreMem(asm.R1, 0, asm.R0, asm.DWord),
		asm.Return(),
	}
}

func nullDeref() asm.Instructions {
	return append(lookupKey0(0), asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return())
}

func storeToMap() asm.Instructions {
	p := lookupKey0(0)
	return append(p,
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

func readFromMap() asm.Instructions {
	p := lookupKey0(0)
	return append(p,
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

func updateMap() asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -72, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -64, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -56, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -48, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -40, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -32, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -72),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// noBTF marks programs the kernel refuses for lack of BTF func_info, which
// it needs for callbacks and hand-assembled programs do not carry.
const noBTF = "the kernel needs BTF func_info for bpf_loop callbacks"

// callChain makes main call f1, which calls f2, ... down to f(n-1).
func callChain(n int) asm.Instructions {
	p := asm.Instructions{asm.Call.Label("f1"), asm.Return()}
	for i := 1; i < n; i++ {
		name := fmt.Sprintf("f%d", i)
		if i+1 < n {
			p = append(p, asm.Call.Label(fmt.Sprintf("f%d", i+1)).WithSymbol(name), asm.Return())
		} else {
			p = append(p, asm.Mov.Imm(asm.R0, 0).WithSymbol(name), asm.Return())
		}
	}
	return p
}

// seq concatenates instruction lists.
func seq(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

type vcase struct {
	name      string
	insns     asm.Instructions // or raw
	raw       []byte
	env       *Env
	progType  ebpf.ProgramType // for the kernel cross-check; 0 = not meaningful there
	errno     unix.Errno       // 0: accept
	log       string           // substring of the log (or of Result.Log)
	kernelDev string           // why the kernel differs (deliberate deviation)
}

func (c *vcase) bytes(t testing.TB) []byte {
	if c.raw != nil {
		return c.raw
	}
	return marshal(t, c.insns)
}

func cases() []vcase {
	cfgFull := func() *Env {
		e := socketEnv(configMap)
		e.Maps[0].ValueSize = 16 * 4
		return e
	}
	return []vcase{
		// Accepted.
		{name: "packet parser eth/ip/udp", insns: packetParser(), env: xdpEnv(), progType: ebpf.XDP},
		{name: "packet parser variable ihl", insns: packetParserIHL(), env: xdpEnv(), progType: ebpf.XDP},
		{name: "hash counter lookup null-check atomic add", insns: hashCounter(), env: socketEnv(countsMap), progType: ebpf.SocketFilter},
		{name: "array index with bounds check", insns: arrayIndex(true, 16), env: cfgFull(), progType: ebpf.SocketFilter},
		{name: "bounded loop to 100", insns: boundedLoop(), env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "bounded loop to 100 alu32", insns: boundedLoop32(), env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "bpf-to-bpf call with caller stack pointer", insns: bpfToBpf(), env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "bpf_loop callback", insns: bpfLoop(0), env: socketEnv(), progType: ebpf.SocketFilter, log: "processed",
			kernelDev: noBTF},
		{name: "tail call", insns: tailCall(), env: socketEnv(jmpMap), progType: ebpf.SocketFilter},
		{name: "global data direct access", insns: globals(), env: socketEnv(dataMap), progType: ebpf.SocketFilter},
		{name: "division by register", insns: asm.Instructions{
			asm.LoadMem(asm.R1, asm.R1, 0, asm.Word), asm.Mov.Imm(asm.R0, 100),
			asm.Div.Reg(asm.R0, asm.R1), asm.Mod.Reg(asm.R0, asm.R1), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "read-only map read", insns: readFromMap(), env: socketEnv(readOnly(configMap)), progType: ebpf.SocketFilter},
		{name: "write-only map update", insns: updateMap(), env: socketEnv(writeOnly(configMap)), progType: ebpf.SocketFilter},
		{name: "legacy ld_abs", insns: asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadAbs(12, asm.Half), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter},

		// Rejected: control flow.
		{name: "out-of-range jump", raw: cat(mov0, rawInsn(0x05, 0, 0, 5, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "jump out of range from insn 1 to 7"},
		{name: "jump into ld_imm64", raw: cat(rawInsn(0x05, 0, 0, 1, 0), rawInsn(0x18, 0, 0, 0, 1), rawInsn(0, 0, 0, 0, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "jump into the middle of ldimm64 insn 1"},
		{name: "unreachable insn", raw: cat(mov0, exitInsn, mov0, exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "unreachable insn 2"},
		{name: "fall off the end", raw: cat(mov0),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "last insn is not an exit or jmp"},
		{name: "bad opcode", raw: cat(rawInsn(0xff, 0, 0, 0, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "invalid BPF_ALU opcode f0"},
		{name: "reserved field set", raw: cat(rawInsn(0xb7, 0, 3, 0, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "uses reserved fields"},
		{name: "infinite loop", raw: cat(mov0, rawInsn(0x15, 0, 0, -1, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "infinite loop detected at insn 1"},
		// The loop body is long so that the 1M-instruction budget runs
		// out after fewer iterations: the kernel's (and with -race
		// bpfd's) time goes into per-iteration state checks.
		{name: "unbounded loop", insns: append(append(asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
			asm.Add.Imm(asm.R0, 1).WithSymbol("loop")},
			slices.Repeat(asm.Instructions{asm.Mov.Reg(asm.R3, asm.R0)}, 500)...),
			asm.JNE.Reg(asm.R0, asm.R2, "loop"),
			asm.Return()),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.E2BIG, log: "BPF program is too large"},
		{name: "recursion", insns: asm.Instructions{
			asm.Call.Label("f"), asm.Return(),
			asm.Call.Label("f").WithSymbol("f"), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.E2BIG, log: "recursive call"},

		// Rejected: registers and stack.
		{name: "uninitialised register", insns: asm.Instructions{asm.Mov.Reg(asm.R0, asm.R5), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R5 !read_ok"},
		{name: "uninitialised r0 at exit", insns: asm.Instructions{asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R0 !read_ok"},
		{name: "uninitialised stack read", insns: asm.Instructions{asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid read from stack",
			kernelDev: "kernels since 6.x let privileged programs read uninitialised stack"},
		{name: "stack overflow", insns: asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.StoreMem(asm.RFP, -520, asm.R1, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid write to stack R10 off=-520 size=8"},
		{name: "write to r10", raw: cat(rawInsn(0xb7, 10, 0, 0, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "frame pointer is read only"},
		{name: "pointer leak in r0", insns: asm.Instructions{asm.Mov.Reg(asm.R0, asm.RFP), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R0 leaks addr as return value",
			kernelDev: "a privileged kernel loader may return pointers; bpfd never lets one out"},
		{name: "pointer multiplication", insns: asm.Instructions{asm.Mov.Reg(asm.R0, asm.RFP), asm.Mul.Imm(asm.R0, 2), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "pointer arithmetic with * operator prohibited"},

		// Rejected: maps.
		{name: "null dereference without check", insns: nullDeref(), env: socketEnv(countsMap), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "invalid mem access 'map_value_or_null'"},
		{name: "array index without bounds check", insns: arrayIndex(false, 0), env: cfgFull(), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "R0 unbounded memory access"},
		{name: "array index off by one", insns: arrayIndex(true, 17), env: cfgFull(), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "invalid access to map value, value_size=64"},
		{name: "write through read-only map", insns: storeToMap(), env: socketEnv(readOnly(configMap)), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "8: (7b) *(u64 *)(r0 +0) = r1: write into map 'config' denied: program's handle has read-only access"},
		{name: "update through read-only map", insns: updateMap(), env: socketEnv(readOnly(configMap)), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "call bpf_map_update_elem#2 on map 'config' denied: program's handle has read-only access"},
		{name: "lookup through write-only map", insns: readFromMap(), env: socketEnv(writeOnly(configMap)), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "call bpf_map_lookup_elem#1 on map 'config' denied: program's handle has write-only access"},
		{name: "write into read-only global", insns: globals(), env: socketEnv(readOnly(dataMap)), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "write into map '.data' denied"},
		{name: "tail call on a hash map", insns: tailCall(), env: socketEnv(countsMap), progType: ebpf.SocketFilter,
			errno: unix.EINVAL, log: "cannot pass map_type 1 into func bpf_tail_call#12"},

		// Rejected: helpers and context.
		{name: "unknown helper", raw: cat(rawInsn(0x85, 0, 0, 0, 999), exitInsn), env: socketEnv(), progType: ebpf.SocketFilter,
			errno: unix.EINVAL, log: "unknown func #999"},
		{name: "helper bpfd does not implement", raw: cat(rawInsn(0x85, 0, 0, 0, 113), exitInsn), env: socketEnv(),
			errno: unix.EINVAL, log: "unknown func bpf_probe_read_kernel#113"},
		{name: "bad ctx offset", insns: asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 76, asm.Word), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid bpf_context access off=76 size=4"},
		{name: "ctx beyond size", insns: asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 400, asm.Word), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid bpf_context access off=400 size=4"},
		{name: "packet read without bounds proof", insns: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte), asm.Return()},
			env: xdpEnv(), progType: ebpf.XDP, errno: unix.EACCES, log: "invalid access to packet, off=0 size=1"},
		{name: "packet read beyond proof", insns: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2), asm.Add.Imm(asm.R4, 4), asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.LoadMem(asm.R0, asm.R2, 2, asm.Word), asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("out"), asm.Return()},
			env: xdpEnv(), progType: ebpf.XDP, errno: unix.EACCES, log: "invalid access to packet, off=2 size=4, R2(id=0,off=0,r=4)"},
		{name: "callback returns 2", insns: bpfLoop(2), env: socketEnv(), progType: ebpf.SocketFilter,
			errno: unix.EINVAL, log: "At callback return the register R0 has 2 should have been in [0, 1]",
			kernelDev: noBTF},

		// More accepted shapes.
		{name: "linked scalar copies share a bounds check", insns: seq(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)},
			lookupKey0(0),
			asm.Instructions{
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
				asm.Mov.Reg(asm.R2, asm.R1),
				asm.JGT.Imm(asm.R1, 15, "out"),
				asm.LSh.Imm(asm.R2, 2),
				asm.Add.Reg(asm.R0, asm.R2),
				asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
				asm.Return(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return()}),
			env: cfgFull(), progType: ebpf.SocketFilter},
		{name: "jmp32 bounds check", insns: seq(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)},
			lookupKey0(0),
			asm.Instructions{
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
				asm.JGT.Imm32(asm.R1, 15, "out"),
				asm.LSh.Imm(asm.R1, 2),
				asm.Add.Reg(asm.R0, asm.R1),
				asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
				asm.Return(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return()}),
			env: cfgFull(), progType: ebpf.SocketFilter},
		{name: "variable stack index within initialised buffer", insns: asm.Instructions{
			asm.Mov.Imm(asm.R2, 0),
			asm.StoreMem(asm.RFP, -16, asm.R2, asm.DWord),
			asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),
			asm.LoadMem(asm.R1, asm.R1, 0, asm.Word),
			asm.And.Imm(asm.R1, 15),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Add.Reg(asm.R2, asm.R1),
			asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
			asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "skb cb write and narrow len read", insns: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Half),
			asm.StoreMem(asm.R1, 48, asm.R2, asm.Word),
			asm.LoadMem(asm.R0, asm.R1, 48, asm.Word),
			asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter},

		// More rejections.
		{name: "bounds check on a copy made before the check", insns: seq(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)},
			lookupKey0(0),
			asm.Instructions{
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
				asm.Mov.Reg(asm.R2, asm.R1),
				asm.Add.Imm(asm.R2, 1),
				asm.JGT.Imm(asm.R1, 15, "out"),
				asm.LSh.Imm(asm.R2, 2),
				asm.Add.Reg(asm.R0, asm.R2),
				asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
				asm.Return(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return()}),
			env: cfgFull(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R0 unbounded memory access"},
		{name: "variable stack read of uninitialised bytes", insns: asm.Instructions{
			asm.Mov.Imm(asm.R2, 0),
			asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),
			asm.LoadMem(asm.R1, asm.R1, 0, asm.Word),
			asm.And.Imm(asm.R1, 15),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Add.Reg(asm.R2, asm.R1),
			asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
			asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "fp-16 is not initialized",
			kernelDev: "kernels since 6.x let privileged programs read uninitialised stack"},
		{name: "modified ctx pointer", insns: asm.Instructions{
			asm.Add.Imm(asm.R1, 4), asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "dereference of modified ctx ptr R1 off=4 disallowed"},
		{name: "pkt_end arithmetic", insns: asm.Instructions{
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), asm.Add.Imm(asm.R3, -1), asm.Mov.Imm(asm.R0, 2), asm.Return()},
			env: xdpEnv(), progType: ebpf.XDP, errno: unix.EACCES, log: "pointer arithmetic on pkt_end prohibited"},
		{name: "callee returns its stack pointer", insns: asm.Instructions{
			asm.Call.Label("f"), asm.Mov.Imm(asm.R0, 0), asm.Return(),
			asm.Mov.Reg(asm.R0, asm.RFP).WithSymbol("f"), asm.Add.Imm(asm.R0, -8), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "cannot return stack pointer to the caller"},
		{name: "spill of callee stack pointer into caller frame", insns: asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8), asm.Call.Label("f"), asm.Mov.Imm(asm.R0, 0), asm.Return(),
			asm.Mov.Reg(asm.R2, asm.RFP).WithSymbol("f"), asm.StoreMem(asm.R1, 0, asm.R2, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "cannot spill pointers to stack into stack frame of the caller"},
		{name: "division by constant zero", raw: cat(mov0, rawInsn(0x37, 0, 0, 0, 0), exitInsn),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "div by zero"},
		{name: "ld_abs without ctx in r6", insns: asm.Instructions{asm.LoadAbs(12, asm.Half), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R6 !read_ok"},
		{name: "call chain of 9 frames", insns: callChain(9), env: socketEnv(), progType: ebpf.SocketFilter,
			errno: unix.E2BIG, log: "the call stack of 9 frames is too deep"},
		{name: "call chain of 8 frames", insns: callChain(8), env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "combined stack too large", insns: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, -512, asm.R1, asm.DWord),
			asm.Call.Label("f"), asm.Return(),
			asm.Mov.Imm(asm.R1, 0).WithSymbol("f"), asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "combined stack size of call chains is 544. Too large"},
		{name: "jump into another subprogram", insns: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0), asm.JEq.Imm(asm.R0, 0, "inside"), asm.Call.Label("f"), asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("f"), asm.Mov.Imm(asm.R0, 2).WithSymbol("inside"), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "jump out of range from insn 1 to 5"},
		{name: "complexity limit", insns: boundedLoop(), env: &Env{Context: skbCtx, MaxInsnsProcessed: 50},
			errno: unix.E2BIG, log: "BPF program is too large. Processed 51 insn"},
		{name: "nil env accepts a trivial program", raw: cat(mov0, exitInsn)},

		// Relevance: values no safety check depends on do not block pruning.
		{name: "loop counting lookup hits", insns: countingLoop(1000, false, nil), env: socketEnv(countsMap), progType: ebpf.SocketFilter},
		{name: "loop summing looked-up values", insns: countingLoop(1000, true, nil), env: socketEnv(countsMap), progType: ebpf.SocketFilter},
		// A constrained return value makes the count matter: every count is
		// explored, which a long loop cannot afford (nor can the kernel).
		{name: "loop count checked against the return range", insns: countingLoop(20, false, nil),
			env: &Env{Context: skbCtx, Maps: []MapInfo{countsMap}, Return: &ReturnRange{Min: 0, Max: 20}}},
		{name: "loop count outside the return range", insns: countingLoop(20, false, nil),
			env:   &Env{Context: skbCtx, Maps: []MapInfo{countsMap}, Return: &ReturnRange{Min: 0, Max: 19}},
			errno: unix.EACCES, log: "At program exit the register R0 has 20 should have been in [0, 19]"},
		{name: "long loop count checked against the return range", insns: countingLoop(1000, false, nil),
			env:   &Env{Context: skbCtx, Maps: []MapInfo{countsMap}, Return: &ReturnRange{Min: 0, Max: 1000}, MaxInsnsProcessed: 100_000},
			errno: unix.E2BIG, log: "BPF program is too large"},
		{name: "small loop count in range as an index", insns: countingLoop(15, false, indexByCount()),
			env: socketEnv(countsMap, configMap), progType: ebpf.SocketFilter},
		{name: "loop count as an unchecked index", insns: countingLoop(16, false, indexByCount()),
			env: socketEnv(countsMap, configMap), progType: ebpf.SocketFilter,
			errno: unix.EACCES, log: "invalid access to map value, value_size=64 off=64 size=4"},
		{name: "loop count as a packet offset", insns: countingLoop(8, false, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R9, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R9, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 4),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.Add.Reg(asm.R2, asm.R7),
			asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		}), env: xdpEnv(countsMap), progType: ebpf.XDP, errno: unix.EACCES, log: "invalid access to packet"},
		{name: "loop bounded by a conditional counter", insns: untilFound(10), env: socketEnv(countsMap), progType: ebpf.SocketFilter,
			errno: unix.EINVAL, log: "infinite loop detected"},

		// __sk_buff.sk: PTR_TO_SOCK_COMMON_OR_NULL.
		{name: "sk null-checked then read", insns: skRead(true, asm.DWord, asm.Instructions{
			asm.LoadMem(asm.R3, asm.R2, 4, asm.Word),     // family
			asm.LoadMem(asm.R4, asm.R2, 25, asm.Byte),    // src_ip4, second byte
			asm.LoadMem(asm.R4, asm.R2, 49, asm.Byte),    // dst_port, second byte
			asm.LoadMemSX(asm.R4, asm.R2, 76, asm.Half),  // rx_queue_mapping
			asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord), // spill
			asm.LoadMem(asm.R5, asm.RFP, -8, asm.DWord),  // fill
			asm.LoadMem(asm.R0, asm.R5, 62, asm.Half),    // dst_ip6[1], upper half
		}), env: socketEnv(), progType: ebpf.SocketFilter},
		{name: "sk read without null check", insns: skRead(false, asm.DWord, asm.Instructions{asm.LoadMem(asm.R0, asm.R2, 4, asm.Word)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R2 invalid mem access 'sock_common_or_null'"},
		{name: "sk loaded with 4 bytes", insns: skRead(false, asm.Word, nil),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid bpf_context access off=168 size=4"},
		{name: "sk field not in sock_common", insns: skRead(true, asm.DWord, asm.Instructions{asm.LoadMem(asm.R0, asm.R2, 16, asm.Word)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R2 invalid sock_common access off=16 size=4"},
		{name: "sk family narrow past its start", insns: skRead(true, asm.DWord, asm.Instructions{asm.LoadMem(asm.R0, asm.R2, 5, asm.Byte)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid sock_common access off=5 size=1"},
		{name: "sk dst_port half past its start", insns: skRead(true, asm.DWord, asm.Instructions{asm.LoadMem(asm.R0, asm.R2, 50, asm.Half)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid sock_common access off=50 size=2"},
		{name: "sk 8-byte read", insns: skRead(true, asm.DWord, asm.Instructions{asm.LoadMem(asm.R0, asm.R2, 24, asm.DWord)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "invalid sock_common access off=24 size=8"},
		{name: "sk written", insns: skRead(true, asm.DWord, asm.Instructions{asm.StoreImm(asm.R2, 0, 1, asm.Word)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R2 cannot write into sock_common"},
		{name: "sk pointer arithmetic", insns: skRead(true, asm.DWord, asm.Instructions{asm.Add.Imm(asm.R2, 4), asm.LoadMem(asm.R0, asm.R2, 0, asm.Word)}),
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R2 pointer arithmetic on sock_common prohibited"},
		{name: "sk pointer arithmetic before the null check", insns: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 168, asm.DWord), asm.Add.Imm(asm.R2, 4), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EACCES, log: "R2 pointer arithmetic on sock_common_or_null prohibited"},
		{name: "sk one insn for sock and stack", insns: asm.Instructions{
			asm.Mov.Imm(asm.R3, 0),
			asm.StoreMem(asm.RFP, -8, asm.R3, asm.DWord),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.LoadMem(asm.R2, asm.R1, 168, asm.DWord),
			asm.JEq.Imm(asm.R2, 0, "load"),
			asm.Mov.Reg(asm.R3, asm.R2),
			asm.LoadMem(asm.R0, asm.R3, 0, asm.Word).WithSymbol("load"),
			asm.Return()},
			env: socketEnv(), progType: ebpf.SocketFilter, errno: unix.EINVAL, log: "same insn cannot be used with different pointers"},
	}
}

// skRead is a socket filter that loads __sk_buff.sk into R2 (with size
// bytes: DWord is right), null-checks it when check is set, runs body and
// returns 0 (or R0 as body leaves it).
func skRead(check bool, size asm.Size, body asm.Instructions) asm.Instructions {
	p := asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 168, size), asm.Mov.Imm(asm.R0, 0)}
	if check {
		p = append(p, asm.JEq.Imm(asm.R2, 0, "out"))
	}
	p = append(p, body...)
	return append(p, asm.Return().WithSymbol("out"))
}

func TestVerify(t *testing.T) {
	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Verify(tc.bytes(t), tc.env) // a nil env is the zero Env
			if tc.errno == 0 {
				if err != nil {
					t.Fatalf("rejected: %v\n%s", err, err.(*Error).Log)
				}
				if !strings.Contains(res.Log, tc.log) {
					t.Fatalf("log lacks %q:\n%s", tc.log, res.Log)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %v", tc.errno)
			}
			var ve *Error
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not *Error", err)
			}
			if !errors.Is(err, tc.errno) {
				t.Fatalf("err = %v (%v), want %v\n%s", err, ve.Errno, tc.errno, ve.Log)
			}
			if !strings.Contains(ve.Log, tc.log) {
				t.Fatalf("log lacks %q:\n%s", tc.log, ve.Log)
			}
		})
	}
}

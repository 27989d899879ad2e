package verifier

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Spin lock test maps: 24-byte values struct { u64 a; struct
// bpf_spin_lock l; u32 pad; u64 b; } (lock at 8), and the same size
// without a lock.
var (
	btfU32   = &btf.Int{Name: "unsigned int", Size: 4}
	btfU64   = &btf.Int{Name: "long long unsigned int", Size: 8}
	btfLockT = &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: btfU32}}}
	lockedV  = &btf.Struct{Name: "locked", Size: 24, Members: []btf.Member{
		{Name: "a", Type: btfU64}, {Name: "l", Type: btfLockT, Offset: 64},
		{Name: "pad", Type: btfU32, Offset: 96}, {Name: "b", Type: btfU64, Offset: 128}}}
	plainV = &btf.Struct{Name: "plain", Size: 24, Members: []btf.Member{
		{Name: "a", Type: btfU64}, {Name: "c", Type: btfU64, Offset: 64}, {Name: "b", Type: btfU64, Offset: 128}}}

	lockArray = MapInfo{Type: MapTypeArray, KeySize: 4, ValueSize: 24, MaxEntries: 1, Read: true, Write: true, Name: "lock_array", SpinLock: 9}
	lockHash  = MapInfo{Type: MapTypeHash, KeySize: 4, ValueSize: 24, MaxEntries: 4, Read: true, Write: true, Name: "lock_hash", SpinLock: 9}
	plainArr  = MapInfo{Type: MapTypeArray, KeySize: 4, ValueSize: 24, MaxEntries: 1, Read: true, Write: true, Name: "plain"}
)

// kernelBTFMap creates m in the kernel with BTF value type value (key
// u32), by a raw BPF_MAP_CREATE (cilium/ebpf would retry without BTF).
func kernelBTFMap(t *testing.T, m MapInfo, value btf.Type) *ebpf.Map {
	t.Helper()
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vid, err := b.Add(value)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := b.Add(btfU32)
	if err != nil {
		t.Fatal(err)
	}
	h, err := btf.NewHandle(b)
	if err != nil {
		t.Fatalf("kernel BTF: %v", err)
	}
	defer h.Close()
	var attr [72]byte
	le := binary.NativeEndian
	le.PutUint32(attr[0:], m.Type)
	le.PutUint32(attr[4:], m.KeySize)
	le.PutUint32(attr[8:], m.ValueSize)
	le.PutUint32(attr[12:], m.MaxEntries)
	le.PutUint32(attr[16:], m.Flags)
	le.PutUint32(attr[48:], uint32(h.FD()))
	le.PutUint32(attr[52:], uint32(kid))
	le.PutUint32(attr[56:], uint32(vid))
	fd, _, e := unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	if e != 0 {
		t.Fatalf("kernel map %s: %v", m.Name, e)
	}
	km, err := ebpf.NewMapFromFD(int(fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	return km
}

// kernelLoadLock loads insns as typ into the kernel with env's maps
// (those with SpinLock created with lockedV, the others with plainV).
func kernelLoadLock(t *testing.T, insns asm.Instructions, maps []MapInfo, typ ebpf.ProgramType) error {
	t.Helper()
	fds := make([]int, len(maps))
	for i, m := range maps {
		if m.Type == MapTypeProgArray {
			km, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: m.MaxEntries})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { km.Close() })
			fds[i] = km.FD()
			continue
		}
		v := btf.Type(plainV)
		if m.SpinLock != 0 {
			v = lockedV
		}
		fds[i] = kernelBTFMap(t, m, v).FD()
	}
	out := append(asm.Instructions(nil), insns...)
	for i := range out {
		if out[i].OpCode.IsDWordLoad() && (out[i].Src == asm.PseudoMapFD || out[i].Src == asm.PseudoMapValue) {
			idx := int(uint32(out[i].Constant))
			out[i].Constant = int64(out[i].Constant)&^0xffffffff | int64(uint32(fds[idx]))
		}
	}
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: typ, Instructions: out, License: "GPL"},
		ebpf.ProgramOptions{})
	if err == nil {
		p.Close()
	}
	if os.Getenv("SPINLOCK_LOG") != "" {
		t.Logf("kernel: %+v", err)
	}
	return err
}

// lookup0 looks key 0 up in map idx and leaves the non-NULL value in dst
// (returning 0 from the program when absent).
func lookup0(idx int, dst asm.Register) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, idx),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"+dst.String()),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Reg(dst, asm.R0).WithSymbol("found" + dst.String()),
	}
}

func lockAt(r asm.Register, off int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Reg(asm.R1, r), asm.Add.Imm(asm.R1, off), asm.FnSpinLock.Call()}
}

func unlockAt(r asm.Register, off int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Reg(asm.R1, r), asm.Add.Imm(asm.R1, off), asm.FnSpinUnlock.Call()}
}

var lockRet0 = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

// withSub gives main and the static subprogram "sub" their BTF function
// metadata and joins them.
func withSub(main, sub asm.Instructions) asm.Instructions {
	main = append(asm.Instructions(nil), main...)
	sub = append(asm.Instructions(nil), sub...)
	main[0] = btf.WithFuncMetadata(main[0], forEachFunc("main", btf.GlobalFunc, 1))
	sub[0] = btf.WithFuncMetadata(sub[0], forEachFunc("sub", btf.StaticFunc, 1)).WithSymbol("sub")
	return append(main, sub...)
}

// withLoopCallback is main calling bpf_loop(4, cb, NULL, 0), then cb.
func withLoopCallback(cb asm.Instructions) asm.Instructions {
	main := asm.Instructions{
		btf.WithFuncMetadata(asm.Mov.Imm(asm.R1, 4), forEachFunc("main", btf.GlobalFunc, 1)),
		loadFunc(asm.R2, "cb"), asm.Mov.Imm(asm.R3, 0), asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return(),
	}
	cb = append(asm.Instructions(nil), cb...)
	cb[0] = btf.WithFuncMetadata(cb[0], forEachFunc("cb", btf.StaticFunc, 2)).WithSymbol("cb")
	return append(main, cb...)
}

// xaddAt is a 32-bit atomic add of src into dst+off.
func xaddAt(dst, src asm.Register, off int16) asm.Instruction {
	in := asm.StoreXAdd(dst, src, asm.Word)
	in.Offset = off
	return in
}

// incr adds 1 to the u64 at r+off.
func incr(r asm.Register, off int16) asm.Instructions {
	return asm.Instructions{asm.LoadMem(asm.R3, r, off, asm.DWord), asm.Add.Imm(asm.R3, 1), asm.StoreMem(r, off, asm.R3, asm.DWord)}
}

// TestSpinLockVsKernel: bpf_spin_lock and bpf_spin_unlock programs that
// kernel 6.18 accepts or rejects, with the errno it gives, compared case
// by case (root; otherwise only bpfd's answers are checked).
func TestSpinLockVsKernel(t *testing.T) {
	tests := []struct {
		name  string
		maps  []MapInfo
		insns asm.Instructions
		errno unix.Errno
	}{
		{name: "lock, two stores, unlock", maps: []MapInfo{lockArray},
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), incr(asm.R6, 0), incr(asm.R6, 16), unlockAt(asm.R6, 8), lockRet0)},
		{name: "hash", maps: []MapInfo{lockHash},
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), incr(asm.R6, 16), unlockAt(asm.R6, 8), lockRet0)},
		{name: "wrong offset", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 0), unlockAt(asm.R6, 0), lockRet0)},
		{name: "map without lock", maps: []MapInfo{plainArr}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), unlockAt(asm.R6, 8), lockRet0)},
		{name: "exit holding the lock", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), lockRet0)},
		{name: "unlock without lock", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), unlockAt(asm.R6, 8), lockRet0)},
		{name: "lock twice", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), lockAt(asm.R6, 8), unlockAt(asm.R6, 8), lockRet0)},
		{name: "helper call while locked", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), asm.Instructions{asm.FnKtimeGetNs.Call()}, unlockAt(asm.R6, 8), lockRet0)},
		{name: "tail call while locked", maps: []MapInfo{lockArray, {Type: MapTypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 1, Read: true, Write: true, Name: "progs"}},
			errno: unix.EINVAL,
			insns: seq(asm.Instructions{asm.Mov.Reg(asm.R9, asm.R1)}, lookup0(0, asm.R6), lockAt(asm.R6, 8),
				asm.Instructions{asm.Mov.Reg(asm.R1, asm.R9), asm.LoadMapPtr(asm.R2, 1), asm.Mov.Imm(asm.R3, 0), asm.FnTailCall.Call()},
				unlockAt(asm.R6, 8), lockRet0)},
		{name: "load of the lock", maps: []MapInfo{lockArray}, errno: unix.EACCES,
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.LoadMem(asm.R0, asm.R6, 8, asm.Word)}, lockRet0)},
		{name: "store overlapping the lock", maps: []MapInfo{lockArray}, errno: unix.EACCES,
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R6, 4, asm.R1, asm.DWord)}, lockRet0)},
		{name: "store next to the lock", maps: []MapInfo{lockArray},
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R6, 12, asm.R1, asm.Word), asm.StoreMem(asm.R6, 0, asm.R1, asm.DWord)}, lockRet0)},
		{name: "atomic add on the lock", maps: []MapInfo{lockArray}, errno: unix.EACCES,
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.Mov.Imm(asm.R1, 1), xaddAt(asm.R6, asm.R1, 8)}, lockRet0)},
		{name: "unlock through another lookup", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lookup0(0, asm.R7), lockAt(asm.R6, 8), unlockAt(asm.R7, 8), lockRet0)},
		{name: "unlock through a copy", maps: []MapInfo{lockArray},
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.Mov.Reg(asm.R7, asm.R6), asm.Add.Imm(asm.R7, 8)},
				lockAt(asm.R6, 8), unlockAt(asm.R7, 0), lockRet0)},
		{name: "variable offset", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord), asm.And.Imm(asm.R7, 8),
				asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Reg(asm.R1, asm.R7), asm.FnSpinLock.Call()}, unlockAt(asm.R6, 8), lockRet0)},
		{name: "stack pointer", maps: []MapInfo{lockArray}, errno: unix.EACCES,
			insns: seq(asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord), asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -8), asm.FnSpinLock.Call()}, lockRet0)},
		{name: "value not null-checked", maps: []MapInfo{lockHash}, errno: unix.EACCES,
			insns: seq(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(), asm.Mov.Reg(asm.R1, asm.R0), asm.FnSpinLock.Call()}, lockRet0)},
		{name: "lock on one branch", maps: []MapInfo{lockArray},
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord), asm.JEq.Imm(asm.R7, 0, "skip")},
				lockAt(asm.R6, 8), incr(asm.R6, 16), unlockAt(asm.R6, 8), asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol("skip"), asm.Return()})},
		{name: "unlock on one branch only", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), asm.Instructions{asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord), asm.JEq.Imm(asm.R7, 0, "skip")},
				unlockAt(asm.R6, 8), asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol("skip"), asm.Return()})},
		{name: "bounded loop under the lock", maps: []MapInfo{lockArray},
			insns: seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), asm.Instructions{asm.Mov.Imm(asm.R7, 0),
				asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord).WithSymbol("loop"), asm.Add.Imm(asm.R3, 1), asm.StoreMem(asm.R6, 0, asm.R3, asm.DWord),
				asm.Add.Imm(asm.R7, 1), asm.JLT.Imm(asm.R7, 10, "loop")}, unlockAt(asm.R6, 8), lockRet0)},
		{name: "direct value", maps: []MapInfo{lockArray},
			insns: seq(asm.Instructions{asm.LoadMapValue(asm.R6, 0, 0)}, lockAt(asm.R6, 8), incr(asm.R6, 0), unlockAt(asm.R6, 8), lockRet0)},
		{name: "value as helper memory", maps: []MapInfo{lockArray, plainArr}, errno: unix.EACCES,
			insns: seq(lookup0(0, asm.R6), asm.Instructions{asm.LoadMapPtr(asm.R1, 1), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.Mov.Reg(asm.R3, asm.R6), asm.Mov.Imm(asm.R4, 0), asm.FnMapUpdateElem.Call()}, lockRet0)},
		{name: "bpf-to-bpf call while locked", maps: []MapInfo{lockArray},
			insns: withSub(seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), asm.Instructions{asm.Call.Label("sub")}, unlockAt(asm.R6, 8), lockRet0),
				asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})},
		{name: "subprogram returns holding the lock", maps: []MapInfo{lockArray},
			insns: withSub(seq(lookup0(0, asm.R6), asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Call.Label("sub")}, unlockAt(asm.R6, 8), lockRet0),
				asm.Instructions{asm.Add.Imm(asm.R1, 8), asm.FnSpinLock.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()})},
		{name: "helper call in a subprogram while locked", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: withSub(seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), asm.Instructions{asm.Call.Label("sub")}, unlockAt(asm.R6, 8), lockRet0),
				asm.Instructions{asm.FnGetPrandomU32.Call(), asm.Return()})},
		{name: "lock and unlock in a bpf_loop callback", maps: []MapInfo{lockArray},
			insns: withLoopCallback(seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), incr(asm.R6, 0), unlockAt(asm.R6, 8), lockRet0))},
		{name: "bpf_loop callback returns holding the lock", maps: []MapInfo{lockArray}, errno: unix.EINVAL,
			insns: withLoopCallback(seq(lookup0(0, asm.R6), lockAt(asm.R6, 8), lockRet0))},
		{name: "locked map without taking it", maps: []MapInfo{lockArray},
			insns: seq(lookup0(0, asm.R6), incr(asm.R6, 16), lockRet0)},
	}
	kernel := os.Geteuid() == 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(marshal(t, tt.insns), xdpEnv(tt.maps...))
			var got unix.Errno
			if err != nil {
				var ve *Error
				if !errors.As(err, &ve) {
					t.Fatalf("bpfd: %v", err)
				}
				got = ve.Errno
			}
			if got != tt.errno {
				t.Errorf("bpfd: %v, want errno %d", err, int(tt.errno))
			}
			if !kernel {
				return
			}
			kerr := kernelLoadLock(t, tt.insns, tt.maps, ebpf.XDP)
			var kerrno unix.Errno
			if kerr != nil && !errors.As(kerr, &kerrno) {
				t.Fatalf("kernel: %v", kerr)
			}
			if kerrno != tt.errno {
				t.Fatalf("kernel: %v, want errno %d (bpfd: %v)", kerr, int(tt.errno), err)
			}
		})
	}
}

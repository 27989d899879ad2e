package prog_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// The spin lock tests' maps: 24-byte values struct { u64 a; struct
// bpf_spin_lock l; u32 pad; u64 b; }, lock at 8.
var (
	slU32   = &btf.Int{Name: "unsigned int", Size: 4}
	slU64   = &btf.Int{Name: "long long unsigned int", Size: 8}
	slLock  = &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: slU32}}}
	slValue = &btf.Struct{Name: "counters", Size: 24, Members: []btf.Member{
		{Name: "a", Type: slU64}, {Name: "l", Type: slLock, Offset: 64},
		{Name: "pad", Type: slU32, Offset: 96}, {Name: "b", Type: slU64, Offset: 128}}}
)

func lockSpec(typ uint32) maps.Spec {
	return maps.Spec{Type: typ, KeySize: 4, ValueSize: 24, MaxEntries: 4, SpinLock: 8 + 1}
}

// newLockPair is newMapPair for a map whose values hold a lock: the
// kernel's is created with BTF (a raw BPF_MAP_CREATE: cilium/ebpf would
// retry without BTF).
func newLockPair(t *testing.T, s maps.Spec) pair {
	t.Helper()
	m, err := maps.New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	p := pair{m: m}
	if os.Geteuid() != 0 {
		return p
	}
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vid, err := b.Add(slValue)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := b.Add(slU32)
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
	for i, v := range []uint32{s.Type, s.KeySize, s.ValueSize, s.MaxEntries, s.Flags} {
		le.PutUint32(attr[4*i:], v)
	}
	le.PutUint32(attr[48:], uint32(h.FD()))
	le.PutUint32(attr[52:], uint32(kid))
	le.PutUint32(attr[56:], uint32(vid))
	fd, _, e := unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	if e != 0 {
		t.Fatalf("kernel map: %v", e)
	}
	k, err := ebpf.NewMapFromFD(int(fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	p.k = k
	return p
}

// lockedCounters is an XDP program: look key 0 up in map 0, then under
// the value's lock add 1 to a and 3 to b; return XDP_PASS (or XDP_DROP
// when the key is absent).
var lockedCounters = asm.Instructions{
	asm.StoreImm(asm.R10, -4, 0, asm.Word),
	asm.Mov.Reg(asm.R2, asm.R10),
	asm.Add.Imm(asm.R2, -4),
	asm.LoadMapPtr(asm.R1, 0),
	asm.FnMapLookupElem.Call(),
	asm.JNE.Imm(asm.R0, 0, "found"),
	asm.Mov.Imm(asm.R0, 1),
	asm.Return(),
	asm.Mov.Reg(asm.R6, asm.R0).WithSymbol("found"),
	asm.Mov.Reg(asm.R1, asm.R6),
	asm.Add.Imm(asm.R1, 8),
	asm.FnSpinLock.Call(),
	asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord),
	asm.Add.Imm(asm.R3, 1),
	asm.StoreMem(asm.R6, 0, asm.R3, asm.DWord),
	asm.LoadMem(asm.R3, asm.R6, 16, asm.DWord),
	asm.Add.Imm(asm.R3, 3),
	asm.StoreMem(asm.R6, 16, asm.R3, asm.DWord),
	asm.Mov.Reg(asm.R1, asm.R6),
	asm.Add.Imm(asm.R1, 8),
	asm.FnSpinUnlock.Call(),
	asm.Mov.Imm(asm.R0, 2),
	asm.Return(),
}

// lockedUpdate is an XDP program: bpf_map_update_elem(map 0, key 0,
// {a: 10, lock: all ones, b: 20}, BPF_F_LOCK).
var lockedUpdate = asm.Instructions{
	asm.StoreImm(asm.R10, -4, 0, asm.Word),
	asm.Mov.Imm(asm.R1, 10),
	asm.StoreMem(asm.R10, -32, asm.R1, asm.DWord),
	asm.Mov.Imm(asm.R1, -1),
	asm.StoreMem(asm.R10, -24, asm.R1, asm.DWord),
	asm.Mov.Imm(asm.R1, 20),
	asm.StoreMem(asm.R10, -16, asm.R1, asm.DWord),
	asm.LoadMapPtr(asm.R1, 0),
	asm.Mov.Reg(asm.R2, asm.R10),
	asm.Add.Imm(asm.R2, -4),
	asm.Mov.Reg(asm.R3, asm.R10),
	asm.Add.Imm(asm.R3, -32),
	asm.Mov.Imm(asm.R4, 4), // BPF_F_LOCK
	asm.FnMapUpdateElem.Call(),
	asm.Return(),
}

func loadXDP(t testing.TB, insns asm.Instructions, m maps.Map) (*prog.Program, error) {
	t.Helper()
	return prog.Load(&prog.Spec{Type: prog.XDP, Insns: marshalInsns(t, build(insns, []int{0})),
		Maps: []prog.MapRef{{Map: m, Read: true, Write: true, Name: "counters"}}, License: "GPL"}, nil)
}

// TestSpinLockTestRunVsKernel: programs taking a value's lock and
// updating with BPF_F_LOCK, on arrays and hashes, run in bpfd and in the
// kernel: the same return values and the same values afterwards, read
// plainly (lock field zeroed) and with BPF_F_LOCK.
func TestSpinLockTestRunVsKernel(t *testing.T) {
	needKernel(t)
	pkt := make([]byte, 64)
	for _, typ := range []uint32{maps.TypeArray, maps.TypeHash} {
		t.Run(maps.TypeName(typ), func(t *testing.T) {
			p := newLockPair(t, lockSpec(typ))
			key := u32(0)
			zero := make([]byte, 24)
			if err := p.m.Update(key, zero, maps.UpdateAny); err != nil {
				t.Fatal(err)
			}
			if err := p.k.Update(key, zero, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			for _, pr := range []struct {
				name  string
				insns asm.Instructions
				runs  uint32
			}{{"counters", lockedCounters, 5}, {"update F_LOCK", lockedUpdate, 1}, {"counters again", lockedCounters, 3}} {
				bp, err := loadXDP(t, pr.insns, p.m)
				if err != nil {
					t.Fatalf("%s: bpfd load: %v", pr.name, err)
				}
				kp, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
					Instructions: build(pr.insns, []int{p.k.FD()})}, ebpf.ProgramOptions{})
				if err != nil {
					t.Fatalf("%s: kernel load: %v", pr.name, err)
				}
				defer kp.Close()
				res, err := bp.TestRun(&prog.RunOptions{Data: pkt, Repeat: pr.runs})
				if err != nil {
					t.Fatal(err)
				}
				kret, err := kp.Run(&ebpf.RunOptions{Data: pkt, Repeat: pr.runs})
				if err != nil {
					t.Fatal(err)
				}
				if res.Ret != uint64(kret) {
					t.Fatalf("%s: bpfd returned %d, kernel %d", pr.name, res.Ret, kret)
				}
				for _, flags := range []uint64{0, maps.UpdateLock} {
					bv, kv := make([]byte, 24), make([]byte, 24)
					if err := maps.LookupFlags(p.m, key, bv, flags); err != nil {
						t.Fatal(err)
					}
					if err := p.k.LookupWithFlags(key, kv, ebpf.MapLookupFlags(flags)); err != nil {
						t.Fatal(err)
					}
					if string(bv) != string(kv) {
						t.Fatalf("%s: value %x in bpfd, %x in the kernel (flags %d)", pr.name, bv, kv, flags)
					}
				}
			}
		})
	}
}

// TestSpinLockSocketFilterRefused: as the kernel, a socket filter may not
// use a map whose values hold a lock (EINVAL at load), even without
// taking it.
func TestSpinLockSocketFilterRefused(t *testing.T) {
	p := newLockPair(t, lockSpec(maps.TypeArray))
	insns := asm.Instructions{asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R0, 0), asm.Return()}
	_, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, build(insns, []int{0})),
		Maps: []prog.MapRef{{Map: p.m, Read: true, Write: true}}, License: "GPL"}, nil)
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("bpfd: %v, want EINVAL", err)
	}
	if p.k == nil {
		return
	}
	kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: build(insns, []int{p.k.FD()})}, ebpf.ProgramOptions{})
	if kerr == nil {
		kp.Close()
	}
	if !errors.Is(kerr, unix.EINVAL) {
		t.Fatalf("kernel: %v, want EINVAL", kerr)
	}
}

// TestSpinLockRace: several goroutines run lockedCounters at once (each
// invocation on its own CPU slot, as concurrent runs in the daemon) while
// the syscall side reads the value with BPF_F_LOCK: a locked read never
// sees b != 3a, and afterwards a counts every run (no increment lost, so
// the runs excluded each other). Run with -race.
func TestSpinLockRace(t *testing.T) {
	for _, typ := range []uint32{maps.TypeArray, maps.TypeHash} {
		t.Run(maps.TypeName(typ), func(t *testing.T) {
			m, err := maps.New(lockSpec(typ))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			key := u32(0)
			if err := m.Update(key, make([]byte, 24), maps.UpdateAny); err != nil {
				t.Fatal(err)
			}
			p, err := loadXDP(t, lockedCounters, m)
			if err != nil {
				t.Fatal(err)
			}
			const goroutines, runs = 4, 300
			var wg sync.WaitGroup
			done := make(chan struct{})
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pkt := make([]byte, 64)
					for i := 0; i < runs; i++ {
						if _, err := p.TestRun(&prog.RunOptions{Data: pkt}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			go func() { wg.Wait(); close(done) }()
			v := make([]byte, 24)
			reads := 0
			var bad error
			for loop := true; loop; {
				select {
				case <-done:
					loop = false
				default:
				}
				if err := maps.LookupFlags(m, key, v, maps.UpdateLock); err != nil {
					bad = err
				} else if a, b := binary.NativeEndian.Uint64(v), binary.NativeEndian.Uint64(v[16:]); b != 3*a && bad == nil {
					bad = fmt.Errorf("F_LOCK lookup %d saw a=%d b=%d", reads, a, b)
				}
				reads++
			}
			// (The runs are over: the map may be closed.)
			if bad != nil {
				t.Fatal(bad)
			}
			if err := maps.LookupFlags(m, key, v, maps.UpdateLock); err != nil {
				t.Fatal(err)
			}
			a, b := binary.NativeEndian.Uint64(v), binary.NativeEndian.Uint64(v[16:])
			if a != goroutines*runs || b != 3*a {
				t.Fatalf("after %d runs: a=%d b=%d (an increment was lost: no mutual exclusion)", goroutines*runs, a, b)
			}
		})
	}
}

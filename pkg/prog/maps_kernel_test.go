package prog_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// pair is one map in bpfd and the same map in the kernel (nil without
// bpf(2)).
type pair struct {
	m maps.Map
	k *ebpf.Map
}

func newMapPair(t *testing.T, s maps.Spec) pair {
	t.Helper()
	m, err := maps.New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	p := pair{m: m}
	if os.Geteuid() == 0 {
		k, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(s.Type), KeySize: s.KeySize, ValueSize: s.ValueSize,
			MaxEntries: s.MaxEntries, Flags: s.Flags, MapExtra: s.MapExtra})
		if err != nil {
			t.Fatalf("kernel map: %v", err)
		}
		t.Cleanup(func() { k.Close() })
		p.k = k
	}
	return p
}

// build rewrites the map references of insns (asm.LoadMapPtr with map
// index i) into ids[i]: the index itself for bpfd, the fd for the kernel.
func build(insns asm.Instructions, ids []int) asm.Instructions {
	out := make(asm.Instructions, len(insns))
	copy(out, insns)
	for i, in := range out {
		if in.OpCode.IsDWordLoad() && in.Src == asm.PseudoMapFD {
			out[i].Constant = int64(ids[in.Constant])
		}
	}
	return out
}

// runBoth loads insns (map references by index into ps) as a socket
// filter into bpfd and the kernel and runs both once on pkt: it returns
// both return values, or fails the test if one side refuses what the
// other accepts. kernelErr/bpfdErr report refusals when both refuse.
func runBoth(t *testing.T, insns asm.Instructions, ps []pair, pkt []byte) (uint64, uint64, error, error) {
	t.Helper()
	idx := make([]int, len(ps))
	for i := range idx {
		idx[i] = i
	}
	refs := make([]prog.MapRef, len(ps))
	for i, p := range ps {
		refs[i] = prog.MapRef{Map: p.m, Read: true, Write: true}
	}
	bp, berr := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, build(insns, idx)), Maps: refs, License: "GPL"}, nil)
	var bret uint64
	if berr == nil {
		res, err := bp.TestRun(&prog.RunOptions{Data: pkt})
		if err != nil {
			t.Fatalf("bpfd run: %v", err)
		}
		bret = res.Ret
	}
	if ps == nil || len(ps) > 0 && ps[0].k == nil {
		return bret, 0, berr, nil
	}
	fds := make([]int, len(ps))
	for i, p := range ps {
		fds[i] = p.k.FD()
	}
	kp, kerr := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: build(insns, fds)}, ebpf.ProgramOptions{LogDisabled: true})
	var kret uint64
	if kerr == nil {
		defer kp.Close()
		r, err := kp.Run(&ebpf.RunOptions{Data: pkt})
		if err != nil {
			t.Fatalf("kernel run: %v", err)
		}
		kret = uint64(r)
	}
	if (berr == nil) != (kerr == nil) {
		t.Fatalf("bpfd load: %v; kernel load: %v", berr, kerr)
	}
	return bret, kret, berr, kerr
}

// storeU64 stores imm at fp-off (8 bytes).
func storeU64(off int16, imm int64) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R1, int32(imm)), asm.StoreMem(asm.R10, -off, asm.R1, asm.DWord)}
}

// TestQueueStackHelpers runs bpf_map_push_elem, pop and peek on queues
// and stacks, with overwriting pushes and an empty pop, in bpfd and the
// kernel: the same return value and the same contents left.
func TestQueueStackHelpers(t *testing.T) {
	for _, typ := range []uint32{maps.TypeQueue, maps.TypeStack} {
		t.Run(maps.TypeName(typ), func(t *testing.T) {
			p := newMapPair(t, maps.Spec{Type: typ, ValueSize: 8, MaxEntries: 2})
			var insns asm.Instructions
			push := func(v int64, flags int32) {
				insns = append(insns, storeU64(8, v)...)
				insns = append(insns,
					asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
					asm.Mov.Imm(asm.R3, flags), asm.FnMapPushElem.Call(),
					// r9 = r9*8 + (ret & 7): a trace of every result
					asm.LSh.Imm(asm.R9, 3), asm.And.Imm(asm.R0, 7), asm.Add.Reg(asm.R9, asm.R0))
			}
			pop := func(fn asm.BuiltinFunc) {
				insns = append(insns,
					asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -16),
					fn.Call(), asm.LSh.Imm(asm.R9, 3), asm.And.Imm(asm.R0, 7), asm.Add.Reg(asm.R9, asm.R0),
					asm.LoadMem(asm.R1, asm.R10, -16, asm.DWord), asm.LSh.Imm(asm.R9, 4), asm.Add.Reg(asm.R9, asm.R1))
			}
			insns = append(insns, asm.Mov.Imm(asm.R9, 0), asm.StoreImm(asm.R10, -16, 0, asm.Word), asm.StoreImm(asm.R10, -12, 0, asm.Word))
			pop(asm.FnMapPopElem) // empty: -ENOENT, value zeroed
			push(1, 0)
			push(2, 0)
			push(3, 0) // full: -E2BIG
			push(4, 2) // BPF_EXIST: overwrites the oldest
			pop(asm.FnMapPeekElem)
			pop(asm.FnMapPopElem)
			push(5, 1) // BPF_NOEXIST: -EINVAL
			insns = append(insns, asm.Mov.Reg(asm.R0, asm.R9), asm.Return())
			b, k, berr, kerr := runBoth(t, insns, []pair{p}, make([]byte, 64))
			if berr != nil || kerr != nil {
				t.Fatal(berr, kerr)
			}
			if p.k != nil && uint32(b) != uint32(k) { // the kernel reports 32 bits
				t.Fatalf("bpfd returned %#x, kernel %#x", b, k)
			}
			v, kv := make([]byte, 8), make([]byte, 8)
			for {
				e1 := p.m.LookupAndDelete(nil, v)
				if p.k == nil {
					if e1 != nil {
						break
					}
					continue
				}
				e2 := p.k.LookupAndDelete(nil, kv)
				if (e1 == nil) != (e2 == nil) || e1 == nil && !bytes.Equal(v, kv) {
					t.Fatalf("left: bpfd %x %v, kernel %x %v", v, e1, kv, e2)
				}
				if e1 != nil {
					break
				}
			}
		})
	}
}

// TestRingbufHelpers: a program reserves and submits, outputs, reserves
// and discards, queries; bpfd and the kernel return the same query
// answer and a consumer reads the same records from both rings.
func TestRingbufHelpers(t *testing.T) {
	p := newMapPair(t, maps.Spec{Type: maps.TypeRingbuf, MaxEntries: 4096})
	insns := asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R2, 16), asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "fail"),
		asm.StoreImm(asm.R0, 0, 0x11223344, asm.Word),
		asm.StoreImm(asm.R0, 8, 0x55, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0),
		asm.FnRingbufSubmit.Call(),
		asm.StoreImm(asm.R10, -8, 0x7777, asm.Word), asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
		asm.Mov.Imm(asm.R3, 8), asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R2, 8), asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0),
		asm.FnRingbufDiscard.Call(),
		asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R2, 0), // BPF_RB_AVAIL_DATA
		asm.FnRingbufQuery.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("fail"),
		asm.Return(),
	}
	b, k, berr, kerr := runBoth(t, insns, []pair{p}, make([]byte, 64))
	if berr != nil || kerr != nil {
		t.Fatal(berr, kerr)
	}
	if want := uint64((8 + 16) + (8 + 8) + (8 + 8)); b != want {
		t.Fatalf("bpfd query = %d, want %d", b, want)
	}
	if p.k != nil && b != k {
		t.Fatalf("bpfd query %d, kernel %d", b, k)
	}
	// Consume bpfd's ring.
	rb := p.m.(*maps.Ringbuf)
	consFD, err := rb.ConsumerFD(true)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(consFD)
	cons, err := unix.Mmap(consFD, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(cons)
	prodFD, err := rb.ReadOnlyFD()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(prodFD)
	region, err := unix.Mmap(prodFD, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(region)
	rd, err := mapview.NewRingReader(rb.Data(), region[mapview.OffRingProducer:], cons, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		rec, next, ok, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, fmt.Sprintf("%x", rec))
		rd.Advance(next)
	}
	if p.k == nil {
		return
	}
	r, err := ringbuf.NewReader(p.k)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(time.Second))
	var want []string
	for {
		rec, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("%x", rec.RawSample))
		if len(want) == 2 {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records: bpfd %v, kernel %v", got, want)
	}
}

// TestMapHelperRefusals: programs the kernel's verifier refuses for the
// map helpers bpfd refuses with the same errno.
func TestMapHelperRefusals(t *testing.T) {
	needKernel(t)
	queue := maps.Spec{Type: maps.TypeQueue, ValueSize: 8, MaxEntries: 2}
	hash := maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 2}
	ring := maps.Spec{Type: maps.TypeRingbuf, MaxEntries: 4096}
	reserve := asm.Instructions{asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R2, 8), asm.Mov.Imm(asm.R3, 0), asm.FnRingbufReserve.Call()}
	tests := []struct {
		name  string
		spec  maps.Spec
		insns asm.Instructions
	}{
		{name: "lookup on a queue", spec: queue, insns: asm.Instructions{
			asm.StoreImm(asm.R10, -8, 0, asm.Word), asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}},
		{name: "push on a hash", spec: hash, insns: asm.Instructions{
			asm.StoreImm(asm.R10, -8, 0, asm.Word), asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 0), asm.FnMapPushElem.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}},
		{name: "update on a ring buffer", spec: ring, insns: asm.Instructions{
			asm.StoreImm(asm.R10, -8, 0, asm.Word), asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, 0), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8), asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}},
		{name: "reserve never submitted", spec: ring, insns: append(append(asm.Instructions{}, reserve...),
			asm.Mov.Imm(asm.R0, 0), asm.Return())},
		{name: "reserve not submitted on one path", spec: ring, insns: append(append(asm.Instructions{}, reserve...),
			asm.JEq.Imm(asm.R0, 0, "out"), asm.LoadMem(asm.R1, asm.R6, 0, asm.Word), asm.JEq.Imm(asm.R1, 7, "out"),
			asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0), asm.FnRingbufSubmit.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{name: "record used after submit", spec: ring, insns: append(append(asm.Instructions{}, reserve...),
			asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R6, asm.R0),
			asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0), asm.FnRingbufSubmit.Call(),
			asm.StoreImm(asm.R6, 0, 1, asm.Word),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{name: "record submitted twice", spec: ring, insns: append(append(asm.Instructions{}, reserve...),
			asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R6, asm.R0),
			asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0), asm.FnRingbufSubmit.Call(),
			asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.FnRingbufSubmit.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{name: "record written beyond its size", spec: ring, insns: append(append(asm.Instructions{}, reserve...),
			asm.JEq.Imm(asm.R0, 0, "out"), asm.StoreImm(asm.R0, 8, 1, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0), asm.FnRingbufSubmit.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{name: "record submitted at an offset", spec: ring, insns: append(append(asm.Instructions{}, reserve...),
			asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R1, asm.R0), asm.Add.Imm(asm.R1, 4), asm.Mov.Imm(asm.R2, 0),
			asm.FnRingbufSubmit.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{name: "reserve of a variable size", spec: ring, insns: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R3, 0),
			asm.FnRingbufReserve.Call(), asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R0), asm.Mov.Imm(asm.R2, 0), asm.FnRingbufSubmit.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newMapPair(t, tc.spec)
			insns := append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}, tc.insns...)
			_, _, berr, kerr := runBoth(t, insns, []pair{p}, make([]byte, 64))
			if berr == nil || kerr == nil {
				t.Fatalf("bpfd %v, kernel %v: both must refuse", berr, kerr)
			}
			var be, ke unix.Errno
			var ve *verifier.Error
			if errors.As(berr, &ve) {
				be = ve.Errno
			}
			errors.As(kerr, &ke)
			if be != ke {
				t.Fatalf("bpfd %v (%d), kernel %v (%d)", berr, be, kerr, ke)
			}
		})
	}
}

var _ = binary.LittleEndian

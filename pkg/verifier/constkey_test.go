package verifier

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Maps for the constant-key tests: 8-byte values, 4 entries.
var (
	ckArray       = MapInfo{Type: MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Read: true, Write: true, Name: "arr"}
	ckPercpuArray = MapInfo{Type: MapTypePercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Read: true, Write: true, Name: "pcpu"}
	ckHash        = MapInfo{Type: MapTypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Read: true, Write: true, Name: "hash"}
	ckInnerFlag   = MapInfo{Type: MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: mapFlagInnerMap, Read: true, Write: true, Name: "inner_flag"}
	ckReadOnly    = MapInfo{Type: MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 4, Read: true, Name: "ro"}
)

func ckOuter(inner MapInfo) MapInfo {
	return MapInfo{Type: MapTypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, Read: true, Write: true, Name: "outer", Inner: &inner}
}

// ckLookup is: key set up by key, r2 = fp+off, lookup in map 0, then a
// load from the value with no NULL check, return 0.
func ckLookup(key asm.Instructions, off int32) asm.Instructions {
	return seq(key, asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, off),
		asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(),
		asm.LoadMem(asm.R3, asm.R0, 0, asm.DWord),
		asm.Mov.Imm(asm.R0, 0), asm.Return(),
	})
}

// ckStoreReg stores the 64-bit constant c from r1 at fp+off with size sz.
func ckStoreReg(off int16, c int64, sz asm.Size) asm.Instructions {
	return asm.Instructions{asm.LoadImm(asm.R1, c, asm.DWord), asm.StoreMem(asm.R10, off, asm.R1, sz)}
}

// TestConstKeyLookupVsKernel: bpf_map_lookup_elem with a key the
// verifier knows exactly returns a non-NULL value pointer on arrays
// (kernel 6.14+, as in 6.18), so a program may use it without a NULL
// check; every case is loaded in bpfd and (as root) in the kernel, and
// both must give the same verdict and errno.
func TestConstKeyLookupVsKernel(t *testing.T) {
	unknown := asm.Instructions{asm.FnGetPrandomU32.Call(), asm.And.Imm(asm.R0, 1), asm.StoreMem(asm.R10, -4, asm.R0, asm.Word)}
	tests := []struct {
		name  string
		maps  []MapInfo
		insns asm.Instructions
		errno unix.Errno // 0: accepted
	}{
		{name: "spilled constant key in range", maps: []MapInfo{ckArray},
			insns: ckLookup(ckStoreReg(-8, 3, asm.Word), -8)},
		{name: "ST immediate key in range", maps: []MapInfo{ckArray},
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -8, 2, asm.Word)}, -8)},
		{name: "key equal to max_entries", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(ckStoreReg(-8, 4, asm.Word), -8)},
		{name: "negative immediate key", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -8, -1, asm.Word)}, -8)},
		{name: "narrow spill of a wide register", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(ckStoreReg(-8, 1<<32|1, asm.Word), -8)},
		{name: "key from an unknown register", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(unknown, -4)},
		{name: "key from a bounded register", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.FnGetPrandomU32.Call(), asm.And.Imm(asm.R0, 1), asm.StoreMem(asm.R10, -8, asm.R0, asm.Word)}, -8)},
		{name: "zeroed stack key", maps: []MapInfo{ckArray},
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word)}, -4)},
		{name: "zero register stored unaligned", maps: []MapInfo{ckArray},
			insns: ckLookup(asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R10, -4, asm.R1, asm.Word)}, -4)},
		{name: "zero bytes from two stores", maps: []MapInfo{ckArray},
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Half), asm.StoreImm(asm.R10, -2, 0, asm.Half)}, -4)},
		{name: "nonzero immediate stored unaligned", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -4, 1, asm.Word)}, -4)},
		{name: "8-byte spill read as a 4-byte key", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(ckStoreReg(-8, 1, asm.DWord), -8)},
		{name: "8-byte zero spill read as a 4-byte key", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(ckStoreReg(-8, 0, asm.DWord), -8)},
		{name: "upper half of an 8-byte spill", maps: []MapInfo{ckArray},
			insns: ckLookup(ckStoreReg(-8, 2, asm.DWord), -4)},
		{name: "upper half of a spill above max_entries", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(ckStoreReg(-8, 9, asm.DWord), -4)},
		{name: "two-byte narrow spill", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(seq(ckStoreReg(-8, 1, asm.Half), asm.Instructions{asm.StoreImm(asm.R10, -6, 0, asm.Half)}), -8)},
		{name: "spill overwritten in part", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(seq(ckStoreReg(-8, 1, asm.Word), asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word)}), -8)},
		{name: "zero spill then a store beside it", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(seq(ckStoreReg(-8, 0, asm.Word), asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word)}), -8)},
		{name: "atomic add on the key", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -8, 1, asm.Word), asm.Mov.Imm(asm.R1, 0), xaddAt(asm.R10, asm.R1, -8)}, -8)},
		{name: "helper writes the key", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -8, 0, asm.Word), asm.StoreImm(asm.R10, -4, 0, asm.Word),
				asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -8), asm.Mov.Imm(asm.R2, 8), asm.FnGetCurrentComm.Call()}, -8)},
		{name: "per-CPU array", maps: []MapInfo{ckPercpuArray},
			insns: ckLookup(ckStoreReg(-8, 3, asm.Word), -8)},
		{name: "per-CPU array out of range", maps: []MapInfo{ckPercpuArray}, errno: unix.EACCES,
			insns: ckLookup(ckStoreReg(-8, 4, asm.Word), -8)},
		{name: "hash map still needs the check", maps: []MapInfo{ckHash}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word)}, -4)},
		{name: "BPF_F_INNER_MAP array", maps: []MapInfo{ckInnerFlag}, errno: unix.EACCES,
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word)}, -4)},
		{name: "read-only handle, load", maps: []MapInfo{ckReadOnly},
			insns: ckLookup(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word)}, -4)},
		{name: "read-only handle, store", maps: []MapInfo{ckReadOnly}, errno: unix.EACCES,
			insns: seq(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(), asm.Mov.Imm(asm.R1, 1), asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()})},
		{name: "NULL check kept", maps: []MapInfo{ckArray},
			insns: seq(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(), asm.JEq.Imm(asm.R0, 0, "out"),
				asm.LoadMem(asm.R3, asm.R0, 0, asm.DWord), asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()})},
		{name: "value past its end", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: seq(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(), asm.LoadMem(asm.R3, asm.R0, 4, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()})},
		{name: "key known on one path only", maps: []MapInfo{ckArray}, errno: unix.EACCES,
			insns: seq(asm.Instructions{asm.FnGetPrandomU32.Call(), asm.StoreImm(asm.R10, -8, 1, asm.Word), asm.JEq.Imm(asm.R0, 0, "go"),
				asm.StoreMem(asm.R10, -8, asm.R0, asm.Word), asm.Mov.Imm(asm.R0, 0).WithSymbol("go")}, ckLookup(nil, -8))},
		{name: "key known on both paths", maps: []MapInfo{ckArray},
			insns: seq(asm.Instructions{asm.FnGetPrandomU32.Call(), asm.StoreImm(asm.R10, -8, 1, asm.Word), asm.JEq.Imm(asm.R0, 0, "go"),
				asm.StoreImm(asm.R10, -8, 3, asm.Word), asm.Mov.Imm(asm.R0, 0).WithSymbol("go")}, ckLookup(nil, -8))},
		{name: "inner array through a map of maps", maps: []MapInfo{ckOuter(ckArray)},
			insns: seq(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(), asm.JNE.Imm(asm.R0, 0, "found"), asm.Return(),
				asm.Mov.Reg(asm.R1, asm.R0).WithSymbol("found"), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(), asm.LoadMem(asm.R3, asm.R0, 0, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()})},
		{name: "BPF_F_INNER_MAP inner array through a map of maps", maps: []MapInfo{ckOuter(ckInnerFlag)}, errno: unix.EACCES,
			insns: seq(asm.Instructions{asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, 0), asm.FnMapLookupElem.Call(), asm.JNE.Imm(asm.R0, 0, "found"), asm.Return(),
				asm.Mov.Reg(asm.R1, asm.R0).WithSymbol("found"), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(), asm.LoadMem(asm.R3, asm.R0, 0, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()})},
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
				if err != nil {
					t.Logf("%s", err.(*Error).Log)
				}
			}
			if !kernel {
				return
			}
			kerr := ckKernelLoad(t, tt.insns, tt.maps)
			var kerrno unix.Errno
			if kerr != nil && !errors.As(kerr, &kerrno) {
				t.Fatalf("kernel: %v", kerr)
			}
			if kerrno != tt.errno {
				t.Fatalf("kernel: %+v, want errno %d (bpfd: %v)", kerr, int(tt.errno), err)
			}
		})
	}
}

// ckKernelLoad loads insns as XDP into the kernel with maps created
// there (map references by index into maps; a map without Write gets
// BPF_F_RDONLY_PROG).
func ckKernelLoad(t *testing.T, insns asm.Instructions, maps []MapInfo) error {
	t.Helper()
	spec := func(m MapInfo) *ebpf.MapSpec {
		flags := m.Flags
		if !m.Write {
			flags |= unix.BPF_F_RDONLY_PROG
		}
		return &ebpf.MapSpec{Type: ebpf.MapType(m.Type), KeySize: m.KeySize, ValueSize: m.ValueSize, MaxEntries: m.MaxEntries, Flags: flags}
	}
	fds := make([]int, len(maps))
	for i, m := range maps {
		s := spec(m)
		if m.Inner != nil {
			s.InnerMap = spec(*m.Inner)
		}
		km, err := ebpf.NewMap(s)
		if err != nil {
			t.Fatalf("kernel map %s: %v", m.Name, err)
		}
		t.Cleanup(func() { km.Close() })
		fds[i] = km.FD()
	}
	out := append(asm.Instructions(nil), insns...)
	for i := range out {
		if out[i].OpCode.IsDWordLoad() && out[i].Src == asm.PseudoMapFD {
			out[i].Constant = int64(fds[out[i].Constant])
		}
	}
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: out, License: "GPL"}, ebpf.ProgramOptions{})
	if err == nil {
		p.Close()
	}
	return err
}

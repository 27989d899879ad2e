package prog_test

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// TestRedirectMapMatchesKernel test-runs XDP programs returning
// bpf_redirect_map(map, key, flags) and bpf_redirect(ifindex, flags) in
// bpfd and the kernel, for every redirect map type with one target at
// key 0 (none for an XSKMAP: bpfd holds no AF_XDP sockets, and the
// kernel's map stays empty too), keys present, absent and out of range,
// and flags giving the fallback actions, broadcast and invalid bits: the
// same action every time. A socket filter may not call redirect_map.
func TestRedirectMapMatchesKernel(t *testing.T) {
	root := os.Geteuid() == 0
	if !root {
		t.Log("not root: comparing with the kernel's expected actions only")
	}
	entry := map[uint32][]byte{
		maps.TypeDevmap:     binary.NativeEndian.AppendUint32(nil, 1), // lo
		maps.TypeDevmapHash: binary.NativeEndian.AppendUint32(nil, 1),
		maps.TypeCPUMap:     binary.NativeEndian.AppendUint32(nil, 64), // queue size, CPU 0
	}
	for _, typ := range []uint32{maps.TypeDevmap, maps.TypeDevmapHash, maps.TypeCPUMap, maps.TypeXSKMap} {
		t.Run(maps.TypeName(typ), func(t *testing.T) {
			s := maps.Spec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 2}
			m, err := maps.New(s)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var km *ebpf.Map
			if root {
				if km, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.MapType(typ), KeySize: 4, ValueSize: 4, MaxEntries: 2}); err != nil {
					t.Fatal(err)
				}
				defer km.Close()
			}
			if v := entry[typ]; v != nil {
				if err := m.Update(u32(0), v, 0); err != nil {
					t.Fatal(err)
				}
				if km != nil {
					if err := km.Put(uint32(0), v); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, key := range []int32{0, 1, 7, -1} {
				for _, flags := range []int32{0, 1, 2, 3, 4, 8, 8 | 2, 16 | 1, 32, -1} {
					insns := asm.Instructions{
						asm.LoadMapPtr(asm.R1, 0),
						asm.Mov.Imm(asm.R2, key),
						asm.Mov.Imm(asm.R3, flags),
						asm.FnRedirectMap.Call(),
						asm.Return(),
					}
					bp, err := prog.Load(&prog.Spec{Type: prog.XDP, Insns: marshalInsns(t, build(insns, []int{0})),
						Maps: []prog.MapRef{{Map: m, Read: true, Write: true}}, License: "GPL"}, nil)
					if err != nil {
						t.Fatal(err)
					}
					res, err := bp.TestRun(&prog.RunOptions{Data: make([]byte, 64)})
					if err != nil {
						t.Fatal(err)
					}
					want := expectedRedirect(typ, key, flags, entry[typ] != nil)
					if km != nil {
						kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: build(insns, []int{km.FD()})})
						if err != nil {
							t.Fatal(err)
						}
						r, err := kp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
						kp.Close()
						if err != nil {
							t.Fatal(err)
						}
						want = uint64(r)
					}
					if res.Ret != want {
						t.Errorf("key %d, flags %#x: bpfd %d, kernel %d", key, flags, res.Ret, want)
					}
				}
			}
			// Socket filters have no redirect_map.
			insns := asm.Instructions{asm.LoadMapPtr(asm.R1, 0), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0),
				asm.FnRedirectMap.Call(), asm.Return()}
			if _, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, build(insns, []int{0})),
				Maps: []prog.MapRef{{Map: m, Read: true}}, License: "GPL"}, nil); err == nil {
				t.Error("a socket filter calling bpf_redirect_map loaded")
			}
		})
	}
	// bpf_redirect: XDP_REDIRECT, or XDP_ABORTED with any flag.
	for _, flags := range []int32{0, 1, 8} {
		insns := asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.Mov.Imm(asm.R2, flags), asm.FnRedirect.Call(), asm.Return()}
		bp, err := prog.Load(&prog.Spec{Type: prog.XDP, Insns: marshalInsns(t, insns), License: "GPL"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := bp.TestRun(&prog.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(4)
		if flags != 0 {
			want = 0
		}
		if root {
			kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
			if err != nil {
				t.Fatal(err)
			}
			r, err := kp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
			kp.Close()
			if err != nil {
				t.Fatal(err)
			}
			want = uint64(r)
		}
		if res.Ret != want {
			t.Errorf("bpf_redirect flags %#x: bpfd %d, kernel %d", flags, res.Ret, want)
		}
	}
}

// expectedRedirect is the kernel's __bpf_xdp_redirect_map result, for
// runs without the kernel.
func expectedRedirect(typ uint32, key, flags int32, hasEntry bool) uint64 {
	allowed := uint64(3)
	if typ == maps.TypeDevmap || typ == maps.TypeDevmapHash {
		allowed |= 8 | 16
	}
	f := uint64(int64(flags))
	if f&^allowed != 0 {
		return 0
	}
	if (key == 0 && hasEntry) || f&8 != 0 {
		return 4
	}
	return f & 3
}

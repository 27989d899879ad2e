package prog_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

func needKernel(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel oracle needs root for bpf(2) and BPF_PROG_TEST_RUN")
	}
}

// setup is fixture-specific map preparation, applied identically to the
// bpfd maps and the kernel's.
type setup struct {
	key, value []byte
	mapName    string
}

func u16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// TestKernelDifferentialFixtures loads each clang-built fixture into bpfd
// and into the kernel, runs both on the same packets and requires the same
// return values, packets out and final map contents.
func TestKernelDifferentialFixtures(t *testing.T) {
	needKernel(t)
	tests := []struct {
		name    string
		fixture string
		progs   []string
		setup   []setup
	}{
		{name: "port filter", fixture: "xdp_ports", progs: []string{"xdp_ports"},
			setup: []setup{{u16(80), []byte{1}, "ports"}, {u16(53), []byte{1}, "ports"}, {u16(443), []byte{0}, "ports"}}},
		{name: "hash counter", fixture: "counter", progs: []string{"count_proto"}},
		{name: "array config", fixture: "config", progs: []string{"xdp_config"},
			setup: []setup{{u32(0), u32(100), "config"}, {u32(1), u32(2), "config"}, {u32(2), u32(0x02), "config"}, {u32(3), u32(0x07), "config"}}},
		{name: "array config unset", fixture: "config", progs: []string{"xdp_config"}},
		{name: "global data", fixture: "globals", progs: []string{"globals"}},
		{name: "bounded loops", fixture: "loop", progs: []string{"sum_bytes", "squares"}},
		{name: "bpf-to-bpf calls", fixture: "calls", progs: []string{"calls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := loadFixture(t, tt.fixture)
			kcoll, err := ebpf.NewCollection(f.spec)
			if err != nil {
				t.Fatalf("kernel load: %v", err)
			}
			defer kcoll.Close()
			for _, s := range tt.setup {
				if err := f.maps[s.mapName].Update(s.key, s.value, maps.UpdateAny); err != nil {
					t.Fatal(err)
				}
				if err := kcoll.Maps[s.mapName].Update(s.key, s.value, ebpf.UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			pkts := testPackets()
			names := make([]string, 0, len(pkts))
			for n := range pkts {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, pname := range tt.progs {
				for _, n := range names {
					compareRun(t, pname+"/"+n, f.progs[pname], kcoll.Programs[pname], pkts[n])
				}
			}
			for mname, m := range f.maps {
				got, want := dump(t, m), kernelDump(t, kcoll.Maps[mname])
				if !equalDumps(got, want) {
					t.Errorf("map %s after runs:\nbpfd   %v\nkernel %v", mname, got, want)
				}
			}
		})
	}
}

func compareRun(t *testing.T, name string, p *prog.Program, kp *ebpf.Program, pkt []byte) {
	t.Helper()
	res, err := p.TestRun(&prog.RunOptions{Data: pkt})
	kout := make([]byte, len(pkt)+256)
	kopts := &ebpf.RunOptions{Data: pkt, DataOut: kout}
	kret, kerr := kp.Run(kopts)
	if (err != nil) != (kerr != nil) {
		t.Errorf("%s: bpfd err %v, kernel err %v", name, err, kerr)
		return
	}
	if err != nil {
		return
	}
	if uint32(res.Ret) != kret {
		t.Errorf("%s: bpfd returned %#x, kernel %#x", name, uint32(res.Ret), kret)
	}
	if !bytes.Equal(res.DataOut, kopts.DataOut) {
		t.Errorf("%s: data out differs: %s", name, bytesDiff(res.DataOut, kopts.DataOut))
	}
}

func equalDumps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestTailCalls checks PROG_ARRAY tail calls against the kernel: slots 0
// and 1 hold programs, 2 and 3 are empty.
func TestTailCalls(t *testing.T) {
	f := loadFixture(t, "tailcall")
	f.byID[1], f.byID[2] = f.progs["slot0"], f.progs["slot1"]
	jt := f.maps["jump_table"]
	if err := jt.Update(u32(0), u32(1), maps.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := jt.Update(u32(1), u32(2), maps.UpdateAny); err != nil {
		t.Fatal(err)
	}
	want := map[int]uint32{0: 100, 1: 200, 2: 1, 3: 1}
	var kcoll *ebpf.Collection
	if os.Geteuid() == 0 {
		var err error
		if kcoll, err = ebpf.NewCollection(f.spec); err != nil {
			t.Fatal(err)
		}
		defer kcoll.Close()
		kjt := kcoll.Maps["jump_table"]
		kjt.Update(uint32(0), kcoll.Programs["slot0"], ebpf.UpdateAny)
		kjt.Update(uint32(1), kcoll.Programs["slot1"], ebpf.UpdateAny)
	}
	for extra := range 4 {
		// skb->len is the frame length minus the Ethernet header.
		pkt := make([]byte, 14+20+extra)
		res, err := f.progs["entry"].TestRun(&prog.RunOptions{Data: pkt})
		if err != nil {
			t.Fatal(err)
		}
		slot := (20 + extra) % 4
		if uint32(res.Ret) != want[slot] {
			t.Errorf("len %d: bpfd returned %d, want %d", len(pkt), res.Ret, want[slot])
		}
		if kcoll != nil {
			kret, err := kcoll.Programs["entry"].Run(&ebpf.RunOptions{Data: pkt})
			if err != nil {
				t.Fatal(err)
			}
			if kret != uint32(res.Ret) {
				t.Errorf("len %d: kernel returned %d, bpfd %d", len(pkt), kret, res.Ret)
			}
		}
	}
}

// TestPortFilterVerdicts pins the port filter's verdicts, so the kernel
// comparison above is known to compare something: allowed ports pass,
// others drop, non-IP passes, malformed drops.
func TestPortFilterVerdicts(t *testing.T) {
	const pass, drop = 2, 1
	f := loadFixture(t, "xdp_ports")
	for _, port := range []uint16{80, 53} {
		if err := f.maps["ports"].Update(u16(port), []byte{1}, maps.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	pkts := testPackets()
	tests := []struct {
		name string
		want uint64
	}{
		{"ipv4 tcp 80", pass}, {"ipv4 tcp 22", drop}, {"ipv4 udp 53", pass}, {"ipv6 udp 53", pass},
		{"ipv6 tcp 443", drop}, {"arp", pass}, {"icmp", pass}, {"ipv4 bad ihl", drop},
		{"ipv4 truncated", drop}, {"ipv6 truncated", drop}, {"ipv4 tcp trunc l4", drop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := f.progs["xdp_ports"].TestRun(&prog.RunOptions{Data: pkts[tt.name]})
			if err != nil {
				t.Fatal(err)
			}
			if res.Ret != tt.want {
				t.Fatalf("verdict %d, want %d", res.Ret, tt.want)
			}
		})
	}
	// The stats array counted every verdict.
	st := dump(t, f.maps["stats"])
	if st["00000000"] != fmt.Sprintf("%x", u64le(5)) || st["01000000"] != fmt.Sprintf("%x", u64le(6)) {
		t.Fatalf("stats %v, want 5 passed and 6 dropped", st)
	}
}

func u64le(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// os0 reports whether the kernel oracle is unavailable (not root).
func os0() bool { return os.Geteuid() != 0 }

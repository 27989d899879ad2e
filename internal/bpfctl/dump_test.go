package bpfctl

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// reLogInsn is an instruction line of a level-2 verifier log:
// "7: (15) if r0 == 0x0 goto pc+3 ; R0=...".
var reLogInsn = regexp.MustCompile(`^(\d+): (\([0-9a-f]{2}\) .*?)(?: ; .*)?$`)

// TestDumpMatchesVerifierLog: prog dump prints every instruction of the
// fixtures exactly as the verifier log does (map references aside: the
// log names the map, the dump its id, as bpftool's xlated dump).
func TestDumpMatchesVerifierLog(t *testing.T) {
	d := startDaemon(t)
	c, err := client.Dial(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	compared := 0
	for _, obj := range []string{"counter", "xdp_ports", "seccomp_policy", "loop", "calls", "globals"} {
		spec, err := ebpf.LoadCollectionSpec("../../testdata/bpf/" + obj + ".bpf.o")
		if err != nil {
			t.Fatal(err)
		}
		maps := map[string]*client.Map{}
		for name, ms := range spec.Maps {
			m, err := c.NewMap(client.MapSpec{Type: client.MapType(ms.Type), KeySize: ms.KeySize, ValueSize: ms.ValueSize,
				MaxEntries: ms.MaxEntries})
			if err != nil {
				t.Fatalf("%s: map %s: %v", obj, name, err)
			}
			defer m.Close()
			maps[name] = m
		}
		for name, ps := range spec.Programs {
			insns := append(asm.Instructions(nil), ps.Instructions...)
			for i := range insns {
				if ref := insns[i].Reference(); ref != "" && insns[i].IsLoadFromMap() {
					if err := insns[i].AssociateMap(maps[ref]); err != nil {
						t.Fatal(err)
					}
				}
			}
			typ := client.SocketFilter
			switch {
			case ps.Type == ebpf.XDP:
				typ = client.XDP
			case strings.HasPrefix(ps.SectionName, "seccomp"):
				typ = client.Seccomp
			}
			p, err := c.LoadProgram(client.ProgramSpec{Type: typ, Instructions: insns, License: ps.License, LogLevel: 2,
				LogSize: 1 << 22})
			if err != nil {
				t.Fatalf("%s/%s: %v", obj, name, err)
			}
			logText := map[int]string{}
			for _, l := range strings.Split(p.VerifierLog(), "\n") {
				if m := reLogInsn.FindStringSubmatch(l); m != nil {
					pc, _ := strconv.Atoi(m[1])
					if _, seen := logText[pc]; !seen {
						logText[pc] = m[2]
					}
				}
			}
			pin := obj + "_" + name
			if err := c.Pin(p, pin, 0o600); err != nil {
				t.Fatal(err)
			}
			p.Close()
			var dump []dumpLine
			if err := json.Unmarshal([]byte(d.mustRun(t, "-j", "prog", "dump", pin).stdout), &dump); err != nil {
				t.Fatal(err)
			}
			for _, l := range dump {
				want, ok := logText[l.PC]
				if !ok {
					continue // not reached by the verifier (dead code)
				}
				if strings.HasPrefix(want, "(18) ") && strings.Contains(want, "= map") {
					if !strings.Contains(l.Disasm, "= map[id:") {
						t.Errorf("%s pc %d: dump %q, want a map[id:N] reference", pin, l.PC, l.Disasm)
					}
					continue
				}
				compared++
				if l.Disasm != want {
					t.Errorf("%s pc %d: dump %q, verifier log %q", pin, l.PC, l.Disasm, want)
				}
			}
		}
	}
	if compared < 100 {
		t.Fatalf("compared only %d instructions", compared)
	}
}

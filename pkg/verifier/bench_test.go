package verifier

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// BenchmarkVerifyFixtures measures verification of each clang fixture by
// bpfd and, as the baseline in the same run, the kernel's load time
// (verification plus JIT) for the same program.
func BenchmarkVerifyFixtures(b *testing.B) {
	objs, _ := filepath.Glob("../../testdata/bpf/*.o")
	for _, obj := range objs {
		coll, err := ebpf.LoadCollectionSpec(obj)
		if err != nil {
			b.Fatal(err)
		}
		var names []string
		for name := range coll.Programs {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			prog := coll.Programs[name]
			base := strings.TrimSuffix(filepath.Base(obj), ".bpf.o") + "/" + name
			b.Run(base+"/bpfd", func(b *testing.B) {
				insns, env := specEnv(b, coll, prog, nil)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Verify(insns, env); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(base+"/kernel", func(b *testing.B) {
				if os.Geteuid() != 0 {
					b.Skip("kernel baseline needs root for bpf(2)")
				}
				if prog.Type == ebpf.UnspecifiedProgram {
					b.Skip("bpfd-only program type")
				}
				spec := prog.Copy()
				for _, ref := range mapRefs(spec) {
					ms := coll.Maps[ref].Copy()
					m, err := ebpf.NewMap(ms)
					if err != nil {
						b.Skipf("kernel map %s: %v", ref, err)
					}
					b.Cleanup(func() { m.Close() })
					if err := spec.Instructions.AssociateMap(ref, m); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				for b.Loop() {
					p, err := ebpf.NewProgram(spec)
					if err != nil {
						b.Fatal(err)
					}
					p.Close()
				}
			})
		}
	}
}

func mapRefs(p *ebpf.ProgramSpec) []string {
	seen := map[string]bool{}
	var out []string
	for _, ins := range p.Instructions {
		if ref := ins.Reference(); ins.IsLoadFromMap() && ref != "" && !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
	}
	return out
}

package client

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// ciliumTestdata returns the path of a file of cilium/ebpf's testdata in
// the module cache (go.mod requires the module, so its source is there
// whenever this package builds), skipping when it is missing.
func ciliumTestdata(t *testing.T, rel string) string {
	t.Helper()
	version := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/cilium/ebpf" {
				version = d.Version
			}
		}
	}
	if version == "" {
		version = "v0.22.0"
	}
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			home, _ := os.UserHomeDir()
			gopath = filepath.Join(home, "go")
		}
		cache = filepath.Join(gopath, "pkg", "mod")
	}
	p := filepath.Join(cache, "github.com", "cilium", "ebpf@"+version, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("cilium/ebpf testdata not in the module cache: %v", err)
	}
	return p
}

// TestCORERelocations loads cilium/ebpf's CO-RE test objects as its own
// tests do: relocs against its own BTF (programs named err_* carry a
// relocation that cannot be satisfied and must fail to load, the others
// must load and return 0), and relocs_read against the BTF of
// relocs_read_tgt (each program reads fields at relocated offsets and
// returns the line of a failed check, or 0).
func TestCORERelocations(t *testing.T) {
	c := newTestConn(t)
	for _, tc := range []struct {
		obj, target string
	}{
		{"btf/testdata/relocs-el.elf", ""},
		{"btf/testdata/relocs_read-el.elf", "btf/testdata/relocs_read_tgt-el.elf"},
		{"btf/testdata/relocs_enum-el.elf", ""},
	} {
		t.Run(filepath.Base(tc.obj), func(t *testing.T) {
			spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, tc.obj))
			if err != nil {
				t.Fatal(err)
			}
			target := spec.Types
			if tc.target != "" {
				tspec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, tc.target))
				if err != nil {
					t.Fatal(err)
				}
				target = tspec.Types
			}
			loaded := 0
			for name := range spec.Programs {
				t.Run(name, func(t *testing.T) {
					coll, err := c.LoadCollectionSpec(spec, &CollectionOptions{Programs: []string{name}, KernelTypes: target})
					if strings.HasPrefix(name, "err_") {
						if err == nil {
							coll.Close()
							t.Fatal("a poisoned relocation loaded")
						}
						var ve *VerifierError
						if !errors.As(err, &ve) && !errors.Is(err, ErrCORE) {
							t.Fatalf("want a verifier refusal or ErrCORE, got %v", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					defer coll.Close()
					loaded++
					ret, err := coll.Programs[name].Run(&RunOptions{Data: make([]byte, 14)})
					if err != nil {
						t.Fatal(err)
					}
					if ret != 0 {
						t.Fatalf("check failed at line %d of the source", ret)
					}
				})
			}
			if loaded == 0 && !t.Failed() {
				t.Fatal("no program loaded")
			}
		})
	}
}

// TestCOREAgainstHostKernel relocates cilium/ebpf's relocs object against
// the running kernel's BTF, as a user's CO-RE object is: programs whose
// relocations the kernel's types satisfy load, the others fail on their
// poisoned instruction, exactly when cilium/ebpf's kernel loader agrees
// (root) or at least without loading a poisoned program (not root).
func TestCOREAgainstHostKernel(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("no kernel BTF at /sys/kernel/btf/vmlinux")
	}
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "btf/testdata/relocs_read-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestConn(t)
	for name, ps := range spec.Programs {
		coll, err := c.LoadCollectionSpec(spec, &CollectionOptions{Programs: []string{name}})
		if err == nil {
			coll.Close()
		}
		if os.Geteuid() != 0 {
			continue
		}
		kp, kerr := ebpf.NewProgramWithOptions(ps, ebpf.ProgramOptions{LogDisabled: true})
		if kerr == nil {
			kp.Close()
		}
		if (err == nil) != (kerr == nil) {
			t.Errorf("%s: bpfd %v, kernel %v", name, err, kerr)
		}
	}
}

// TestKconfigExterns loads cilium/ebpf's kconfig object: it reads
// LINUX_KERNEL_VERSION, LINUX_HAS_SYSCALL_WRAPPER, CONFIG_HZ,
// CONFIG_BPF_SYSCALL (a tristate) and CONFIG_DEFAULT_HOSTNAME (a string)
// and returns the line of the first that is unset.
func TestKconfigExterns(t *testing.T) {
	if _, err := readKconfig(); err != nil {
		t.Skipf("no kernel config on this machine: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "testdata/kconfig-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestConn(t)
	coll, err := c.LoadCollectionSpec(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	ret, err := coll.Programs["kconfig"].Run(&RunOptions{Data: make([]byte, 14)})
	if err != nil || ret != 0 {
		t.Fatalf("Run = %d, %v (a nonzero result is the source line of an unset value)", ret, err)
	}
	if os.Geteuid() == 0 {
		kcoll, err := ebpf.NewCollection(spec)
		if err != nil && strings.Contains(err.Error(), "tracefs") {
			// cilium/ebpf probes LINUX_HAS_SYSCALL_WRAPPER through
			// tracefs, which this machine has not mounted.
			t.Logf("bpfd correct; kernel comparison not possible: %v", err)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer kcoll.Close()
		kret, err := kcoll.Programs["kconfig"].Run(&ebpf.RunOptions{Data: make([]byte, 14)})
		if err != nil || kret != ret {
			t.Fatalf("kernel: %d, %v; bpfd %d", kret, err, ret)
		}
	}
}

// TestKconfigValues checks the value encodings against a config text.
func TestKconfigValues(t *testing.T) {
	cfg, err := parseKconfig(strings.NewReader("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_HZ=250\nCONFIG_S=\"hello\"\nCONFIG_X=0x10\n"))
	if err != nil {
		t.Fatal(err)
	}
	boolT := &btf.Int{Size: 1, Encoding: btf.Bool}
	u32T := &btf.Int{Size: 4}
	s32T := &btf.Int{Size: 4, Encoding: btf.Signed}
	tri := &btf.Enum{Name: "libbpf_tristate", Size: 4}
	str := &btf.Array{Type: &btf.Int{Size: 1, Encoding: btf.Char}, Nelems: 3}
	tests := []struct {
		name string
		typ  btf.Type
		key  string
		want []byte
		err  bool
	}{
		{"bool y", boolT, "CONFIG_A", []byte{1}, false},
		{"bool n", boolT, "CONFIG_B", []byte{0}, false},
		{"bool m", boolT, "CONFIG_C", nil, true},
		{"tristate m", tri, "CONFIG_C", []byte{2, 0, 0, 0}, false},
		{"tristate y", tri, "CONFIG_A", []byte{1, 0, 0, 0}, false},
		{"tristate n", tri, "CONFIG_B", []byte{0, 0, 0, 0}, false},
		{"int", u32T, "CONFIG_HZ", []byte{250, 0, 0, 0}, false},
		{"hex int", s32T, "CONFIG_X", []byte{16, 0, 0, 0}, false},
		{"string cut", str, "CONFIG_S", []byte("hel"), false},
		{"string into int", u32T, "CONFIG_S", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, max(len(tt.want), 4))
			if b, ok := tt.typ.(*btf.Int); ok && b.Encoding == btf.Bool {
				dst = dst[:1]
			}
			if _, ok := tt.typ.(*btf.Array); ok {
				dst = dst[:3]
			}
			err := putKconfig(dst, tt.typ, cfg[tt.key])
			if (err != nil) != tt.err {
				t.Fatalf("putKconfig: %v, want error %v", err, tt.err)
			}
			if err == nil && string(dst[:len(tt.want)]) != string(tt.want) {
				t.Fatalf("stored %x, want %x", dst, tt.want)
			}
		})
	}
}

// TestVariablesSet: values set with CollectionSpec.Variables[...].Set
// before loading reach the program, as with cilium/ebpf.
func TestVariablesSet(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(fixture("globals"))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Variables) == 0 {
		t.Fatal("the globals fixture declares no variables")
	}
	c := newTestConn(t)
	run := func(spec *ebpf.CollectionSpec) (uint32, []byte) {
		t.Helper()
		coll, err := c.LoadCollectionSpec(spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer coll.Close()
		out := make([]byte, 64)
		ret, err := coll.Programs["globals"].Run(&RunOptions{Data: make([]byte, 64), DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		return ret, out
	}
	before, _ := run(spec)
	changed := spec.Copy()
	n := 0
	for name, v := range changed.Variables {
		if v.Size() == 4 {
			if err := v.Set(uint32(0x1000 + n)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			n++
		}
	}
	if n == 0 {
		t.Skip("no 4-byte variable to set")
	}
	after, _ := run(changed)
	if after == before {
		t.Fatalf("result %d unchanged after setting %d variables", after, n)
	}
	if os.Geteuid() == 0 {
		kcoll, err := ebpf.NewCollection(changed)
		if err != nil {
			t.Fatal(err)
		}
		defer kcoll.Close()
		kret, err := kcoll.Programs["globals"].Run(&ebpf.RunOptions{Data: make([]byte, 64)})
		if err != nil || kret != after {
			t.Fatalf("kernel returned %d, %v; bpfd %d", kret, err, after)
		}
	}
}

// TestPerfEventArrayDefaults: a perf event array declared without sizes
// or entries (as objects usually declare it) is created as cilium/ebpf
// creates it: 4-byte keys and values, one entry per possible CPU, at most.
func TestPerfEventArrayDefaults(t *testing.T) {
	c := newTestConn(t)
	tests := []struct {
		name       string
		maxEntries uint32
		want       uint32
	}{
		{name: "no entries", maxEntries: 0, want: uint32(PossibleCPUs())},
		{name: "one entry", maxEntries: 1, want: 1},
		{name: "more entries than CPUs", maxEntries: uint32(PossibleCPUs()) + 64, want: uint32(PossibleCPUs())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{
				"events": {Name: "events", Type: ebpf.PerfEventArray, MaxEntries: tt.maxEntries},
			}}
			coll, err := c.LoadCollectionSpec(spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer coll.Close()
			m := coll.Maps["events"]
			if m.Type() != PerfEventArray || m.KeySize() != 4 || m.ValueSize() != 4 || m.info.MaxEntries != tt.want {
				t.Fatalf("created %v key %d value %d entries %d, want perf event array 4/4/%d",
					m.Type(), m.KeySize(), m.ValueSize(), m.info.MaxEntries, tt.want)
			}
		})
	}
}

package verifier

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestFixtures verifies every program of the clang-built fixtures in
// ../../testdata/bpf: all must be accepted with full access.
func TestFixtures(t *testing.T) {
	objs, err := filepath.Glob("../../testdata/bpf/*.o")
	if err != nil || len(objs) == 0 {
		t.Fatalf("no fixtures found: %v", err)
	}
	for _, obj := range objs {
		coll, err := ebpf.LoadCollectionSpec(obj)
		if err != nil {
			t.Fatalf("%s: %v", obj, err)
		}
		for name, prog := range coll.Programs {
			t.Run(filepath.Base(obj)+"/"+name, func(t *testing.T) {
				insns, env := specEnv(t, coll, prog, nil)
				res, err := Verify(insns, env)
				if err != nil {
					var ve *Error
					errors.As(err, &ve)
					t.Fatalf("rejected: %v\n%s", err, ve.Log)
				}
				t.Logf("%s: %s", name, res.Log)
			})
		}
	}
}

// TestFixturesAccessModes loads the fixtures with narrowed handles.
func TestFixturesAccessModes(t *testing.T) {
	tests := []struct {
		name, obj, prog, mapName string
		read, write              bool
		wantErr                  bool
		wantLog                  string
	}{
		{name: "counter read-only", obj: "counter", prog: "count_proto", mapName: "by_proto", read: true,
			wantErr: true, wantLog: "handle has read-only access"},
		{name: "counter write-only", obj: "counter", prog: "count_proto", mapName: "by_proto", write: true,
			wantErr: true, wantLog: "handle has write-only access"},
		{name: "config read-only", obj: "config", prog: "xdp_config", mapName: "config", read: true},
		{name: "config write-only", obj: "config", prog: "xdp_config", mapName: "config", write: true,
			wantErr: true, wantLog: "bpf_map_lookup_elem#1 on map 'config' denied"},
		{name: "globals rodata read-only", obj: "globals", prog: "globals", mapName: ".rodata", read: true},
		{name: "globals bss read-only", obj: "globals", prog: "globals", mapName: ".bss", read: true,
			wantErr: true, wantLog: "write into map '.bss' denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll, err := ebpf.LoadCollectionSpec("../../testdata/bpf/" + tt.obj + ".bpf.o")
			if err != nil {
				t.Fatal(err)
			}
			prog := coll.Programs[tt.prog]
			if prog == nil {
				t.Fatalf("no program %s", tt.prog)
			}
			insns, env := specEnv(t, coll, prog, map[string][2]bool{tt.mapName: {tt.read, tt.write}})
			_, err = Verify(insns, env)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("rejected: %v\n%s", err, err.(*Error).Log)
				}
				return
			}
			if !errors.Is(err, unix.EACCES) {
				t.Fatalf("err = %v, want EACCES", err)
			}
			if log := err.(*Error).Log; !strings.Contains(log, tt.wantLog) {
				t.Fatalf("log does not contain %q:\n%s", tt.wantLog, log)
			}
			t.Logf("log:\n%s", err.(*Error).Log)
		})
	}
}

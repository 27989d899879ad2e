package prog_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// fixture is one clang-built object loaded into bpfd's program layer (and,
// when root, into the kernel) from the same ELF spec.
type fixture struct {
	spec  *ebpf.CollectionSpec
	maps  map[string]maps.Map
	progs map[string]*prog.Program
	// byID resolves tail-call targets.
	byID map[uint32]*prog.Program
}

// idx is an asm.FDer whose "fd" is an index into a program's map list:
// cilium/ebpf encodes it into the LD_IMM64 immediate, preserving the value
// offset of direct loads.
type idx int

func (i idx) FD() int { return int(i) }

func fixturePath(name string) string {
	return filepath.Join("..", "..", "testdata", "bpf", name+".bpf.o")
}

// progType maps a section's program type onto bpfd's.
func progType(t ebpf.ProgramType, section string) (prog.Type, bool) {
	switch {
	case section == "seccomp":
		return prog.Seccomp, true
	case t == ebpf.SocketFilter:
		return prog.SocketFilter, true
	case t == ebpf.XDP:
		return prog.XDP, true
	}
	return 0, false
}

// loadFixture creates name's maps in bpfd (with their initial contents,
// freezing .rodata as libbpf does) and loads every program with full
// access to them.
func loadFixture(t testing.TB, name string) *fixture {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(fixturePath(name))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{spec: spec, maps: map[string]maps.Map{}, progs: map[string]*prog.Program{}, byID: map[uint32]*prog.Program{}}
	for mname, ms := range spec.Maps {
		m, err := maps.New(maps.Spec{Type: uint32(ms.Type), KeySize: ms.KeySize, ValueSize: ms.ValueSize,
			MaxEntries: ms.MaxEntries, Flags: ms.Flags})
		if err != nil {
			t.Fatalf("map %s: %v", mname, err)
		}
		t.Cleanup(func() { m.Close() })
		for _, kv := range ms.Contents {
			k, v := marshal(t, kv.Key, ms.KeySize), marshal(t, kv.Value, ms.ValueSize)
			if err := m.Update(k, v, maps.UpdateAny); err != nil {
				t.Fatalf("map %s contents: %v", mname, err)
			}
		}
		if mname == ".rodata" {
			m.Freeze()
		}
		f.maps[mname] = m
	}
	env := &prog.Env{Programs: func(id uint32) *prog.Program { return f.byID[id] }}
	for pname, ps := range spec.Programs {
		typ, ok := progType(ps.Type, ps.SectionName)
		if !ok {
			t.Fatalf("program %s: unsupported type %v", pname, ps.Type)
		}
		insns := append(asm.Instructions(nil), ps.Instructions...)
		var refs []prog.MapRef
		index := map[string]int{}
		for i := range insns {
			r := insns[i].Reference()
			if !insns[i].IsLoadFromMap() || r == "" {
				continue
			}
			n, ok := index[r]
			if !ok {
				m, ok := f.maps[r]
				if !ok {
					t.Fatalf("program %s references unknown map %s", pname, r)
				}
				n = len(refs)
				index[r] = n
				refs = append(refs, prog.MapRef{Map: m, Read: true, Write: true, Name: r})
			}
			if err := insns[i].AssociateMap(idx(n)); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
			t.Fatalf("program %s: %v", pname, err)
		}
		p, err := prog.Load(&prog.Spec{Type: typ, Insns: buf.Bytes(), Maps: refs, License: ps.License, Name: pname}, env)
		if err != nil {
			t.Fatalf("program %s: %v", pname, err)
		}
		f.progs[pname] = p
	}
	return f
}

func marshal(t testing.TB, v any, size uint32) []byte {
	t.Helper()
	switch v := v.(type) {
	case []byte:
		return v
	case uint32:
		return binary.LittleEndian.AppendUint32(nil, v)
	}
	b := make([]byte, size)
	if _, err := binary.Encode(b, binary.LittleEndian, v); err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return b
}

// dump returns a map's contents as key -> value hex strings.
func dump(t *testing.T, m maps.Map) map[string]string {
	t.Helper()
	sp := m.Spec()
	out := map[string]string{}
	key, next := make([]byte, sp.KeySize), make([]byte, sp.KeySize)
	val := make([]byte, sp.ValueSize)
	var cur []byte
	for {
		if err := m.NextKey(cur, next); err != nil {
			break
		}
		copy(key, next)
		cur = key
		if err := m.Lookup(key, val); err == nil {
			out[fmt.Sprintf("%x", key)] = fmt.Sprintf("%x", val)
		}
	}
	return out
}

func kernelDump(t *testing.T, m *ebpf.Map) map[string]string {
	t.Helper()
	out := map[string]string{}
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[fmt.Sprintf("%x", k)] = fmt.Sprintf("%x", v)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Collection is the maps and programs of one ELF object, by name.
type Collection struct {
	Maps     map[string]*Map
	Programs map[string]*Program

	borrowed map[string]bool // maps from CollectionOptions.MapReplacements
}

// CollectionOptions change how a collection is loaded. The zero value
// creates every map and loads every program.
type CollectionOptions struct {
	// MapReplacements are maps to use instead of creating the ELF maps of
	// those names, through their descriptors' modes: a program gets such
	// a map with exactly that descriptor's access (a read-only descriptor
	// makes a program that writes the map fail to load with EACCES). The
	// collection lists them in Maps but does not close them.
	MapReplacements map[string]*Map
	// Programs, if not empty, are the only programs loaded, and only the
	// maps they use are created (as cilium/ebpf's LoadAndAssign): parts
	// of the object bpfd lacks do not stop the load.
	Programs []string
	// KernelTypes, if not nil, is the BTF CO-RE relocations are applied
	// against instead of the host kernel's /sys/kernel/btf/vmlinux (as
	// cilium/ebpf's ProgramOptions.KernelTypes).
	KernelTypes *btf.Spec
}

// Close closes every map and program of the collection (the objects live
// on while pins or other descriptors hold them), except maps given as
// replacements.
func (coll *Collection) Close() error {
	var errs []error
	for _, p := range coll.Programs {
		if err := p.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	for name, m := range coll.Maps {
		if coll.borrowed[name] {
			continue
		}
		if err := m.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LoadCollection parses the clang-built eBPF ELF object at path (with
// github.com/cilium/ebpf, which never touches the kernel to parse) and
// loads it into bpfd: see LoadCollectionSpec.
func (c *Conn) LoadCollection(path string) (*Collection, error) {
	return c.LoadCollectionWithOptions(path, nil)
}

// LoadCollectionWithOptions is LoadCollection with options (nil: none).
func (c *Conn) LoadCollectionWithOptions(path string, opts *CollectionOptions) (*Collection, error) {
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("bpfd: %w", err)
	}
	return c.LoadCollectionSpec(spec, opts)
}

// LoadCollectionSpec creates spec's maps in bpfd with their initial
// contents (freezing .rodata, as libbpf does) unless opts replaces them,
// loads every program (or opts.Programs) with its map references resolved
// (read-write for the maps it created), and fills program arrays whose ELF
// contents name programs. Programs in the "seccomp" section get the
// Seccomp type. On failure nothing created stays open and the error names
// the map or program (a *VerifierError for a refused program).
func (c *Conn) LoadCollectionSpec(spec *ebpf.CollectionSpec, opts *CollectionOptions) (coll *Collection, err error) {
	if opts == nil {
		opts = &CollectionOptions{}
	}
	// Not the named result: "return nil, err" clears that before the
	// deferred cleanup runs.
	built := &Collection{Maps: map[string]*Map{}, Programs: map[string]*Program{}, borrowed: map[string]bool{}}
	defer func() {
		if err != nil {
			built.Close()
		}
	}()
	coll = built
	for name, m := range opts.MapReplacements {
		if _, ok := spec.Maps[name]; !ok {
			return nil, fmt.Errorf("bpfd: replacement for map %s, which the object does not have", name)
		}
		coll.Maps[name], coll.borrowed[name] = m, true
	}
	names := opts.Programs
	if len(names) == 0 {
		names = sortedKeys(spec.Programs)
	}
	// With a program subset, only the maps those programs use are
	// created, as cilium/ebpf's LoadAndAssign does: maps of types bpfd
	// lacks in other parts of the object do not stop the load.
	wanted := map[string]bool{}
	kconfig := kconfigSection(spec)
	for _, name := range names {
		ps, ok := spec.Programs[name]
		if !ok {
			return nil, fmt.Errorf("bpfd: no program %s in the object", name)
		}
		for i := range ps.Instructions {
			if ref := ps.Instructions[i].Reference(); ref != "" && ps.Instructions[i].IsLoadFromMap() {
				wanted[ref] = true
			}
		}
	}
	// The object's type information, for the maps' keys and values and
	// the programs (best effort: without it everything still loads).
	types := c.collectionBTF(spec)
	defer types.close()
	for _, name := range sortedKeys(spec.Maps) {
		if coll.borrowed[name] || len(opts.Programs) > 0 && !wanted[name] {
			continue
		}
		ms := spec.Maps[name]
		m, err := c.newSpecMap(spec, name, ms, types)
		if err != nil {
			return nil, fmt.Errorf("bpfd: map %s: %w", name, err)
		}
		coll.Maps[name] = m
	}
	var kconfigMap *Map
	defer func() {
		if kconfigMap != nil {
			kconfigMap.Close() // the programs hold it
		}
	}()
	for _, name := range names {
		ps := spec.Programs[name]
		typ, err := programType(ps)
		if err != nil {
			return nil, fmt.Errorf("bpfd: program %s: %w", name, err)
		}
		insns := append(asm.Instructions(nil), ps.Instructions...)
		if err := applyCORE(insns, opts.KernelTypes); err != nil {
			return nil, fmt.Errorf("bpfd: program %s: %w", name, err)
		}
		for i := range insns {
			if sym, weak := ksymName(&insns[i]); sym != "" {
				// A kernel address: nothing a userspace daemon can
				// give a program. A weak extern reads 0, as libbpf
				// gives for a symbol the kernel lacks; a strong one
				// cannot load.
				if !weak || insns[i].OpCode != asm.LoadImmOp(asm.DWord) {
					return nil, fmt.Errorf("bpfd: program %s: %w: instruction %d reads kernel symbol %s (__ksym)", name, ErrNotSupported, i, sym)
				}
				insns[i].Constant = 0
				insns[i].Src = 0
				continue
			}
			ref := insns[i].Reference()
			if !insns[i].IsLoadFromMap() {
				continue
			}
			off, isKconfig := uint32(0), false
			if ref == "" && insns[i].Src == asm.PseudoMapValue && kconfig != nil {
				off, isKconfig = kconfigOffset(&insns[i])
			}
			if ref == "" && !isKconfig {
				continue
			}
			m, ok := coll.Maps[ref]
			if isKconfig {
				// An extern __kconfig read: a load from the .kconfig
				// map bpfd fills as libbpf does.
				if kconfigMap == nil {
					if kconfigMap, err = c.newKconfigMap(kconfig); err != nil {
						return nil, fmt.Errorf("bpfd: program %s: .kconfig: %w", name, err)
					}
				}
				if err := insns[i].AssociateMap(kconfigMap); err != nil {
					return nil, fmt.Errorf("bpfd: program %s: %w", name, err)
				}
				insns[i].Constant = int64(uint64(off) << 32)
				continue
			}
			if !ok {
				return nil, fmt.Errorf("bpfd: program %s references missing map %s", name, ref)
			}
			if err := insns[i].AssociateMap(m); err != nil {
				return nil, fmt.Errorf("bpfd: program %s: %w", name, err)
			}
		}
		p, err := c.LoadProgram(ProgramSpec{Type: typ, Instructions: insns, License: ps.License, Name: truncName(name),
			AttachType: uint32(ps.AttachType), BTF: types.btfObj()})
		if err != nil {
			return nil, fmt.Errorf("bpfd: program %s: %w", name, err)
		}
		coll.Programs[name] = p
	}
	// Program arrays whose contents name programs (libbpf's
	// __array(values, ...) initialisers).
	for name, ms := range spec.Maps {
		if ms.Type != ebpf.ProgramArray || coll.borrowed[name] || coll.Maps[name] == nil {
			continue // not created: no loaded program uses it
		}
		for _, kv := range ms.Contents {
			pname, ok := kv.Value.(string)
			if !ok {
				continue
			}
			p, ok := coll.Programs[pname]
			if !ok {
				if len(opts.Programs) > 0 {
					continue // not loaded on purpose
				}
				return nil, fmt.Errorf("bpfd: map %s: contents name missing program %s", name, pname)
			}
			key, err := encodeValue(kv.Key, 4)
			if err != nil {
				return nil, fmt.Errorf("bpfd: map %s: %w", name, err)
			}
			val := binary.NativeEndian.AppendUint32(nil, uint32(p.FD()))
			if err := coll.Maps[name].Update(key, val, UpdateAny); err != nil {
				return nil, fmt.Errorf("bpfd: map %s: %w", name, err)
			}
		}
	}
	return coll, nil
}

// newKconfigMap creates the read-only .kconfig map of an object's
// __kconfig externs, with their values (kconfigValues), frozen.
func (c *Conn) newKconfigMap(ds *btf.Datasec) (*Map, error) {
	data, err := kconfigValues(ds)
	if err != nil {
		return nil, err
	}
	m, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: ds.Size, MaxEntries: 1, Flags: FlagRdonlyProg, Name: ".kconfig"})
	if err != nil {
		return nil, err
	}
	if err := m.Update(make([]byte, 4), data, UpdateAny); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.Freeze(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// newSpecMap creates one map of an ELF object with its contents (for a
// data section, with spec's VariableSpec values written over them).
func (c *Conn) newSpecMap(spec *ebpf.CollectionSpec, name string, ms *ebpf.MapSpec, types *collTypes) (*Map, error) {
	orig := ms // its types are the ones collectionBTF added (a Copy copies them)
	data, isData, err := applyVariables(spec, name, ms)
	if err != nil {
		return nil, err
	}
	if isData {
		ms = ms.Copy()
		ms.Contents = []ebpf.MapKV{{Key: uint32(0), Value: data}}
	}
	mspec := MapSpec{Type: MapType(ms.Type), KeySize: ms.KeySize, ValueSize: ms.ValueSize,
		MaxEntries: ms.MaxEntries, Flags: ms.Flags, Name: truncName(name)}
	if ms.Type == ebpf.PerfEventArray {
		// As cilium/ebpf creates them: 4-byte keys and values (the
		// object usually leaves them out), one ring per possible CPU
		// at most.
		if mspec.KeySize == 0 {
			mspec.KeySize = 4
		}
		if mspec.ValueSize == 0 {
			mspec.ValueSize = 4
		}
		if n := uint32(PossibleCPUs()); mspec.MaxEntries == 0 || mspec.MaxEntries > n {
			mspec.MaxEntries = n
		}
	}
	types.forMap(&mspec, orig)
	m, err := c.NewMap(mspec)
	if err != nil {
		return nil, err
	}
	if ms.Type != ebpf.ProgramArray {
		for _, kv := range ms.Contents {
			k, err := encodeValue(kv.Key, int(ms.KeySize))
			if err == nil {
				var v []byte
				if v, err = encodeValue(kv.Value, int(ms.ValueSize)); err == nil {
					err = m.Update(k, v, UpdateAny)
				}
			}
			if err != nil {
				m.Close()
				return nil, fmt.Errorf("contents: %w", err)
			}
		}
	}
	if name == ".rodata" || ms.Flags&FlagRdonlyProg != 0 && len(ms.Contents) > 0 {
		if err := m.Freeze(); err != nil {
			m.Close()
			return nil, fmt.Errorf("freeze: %w", err)
		}
	}
	return m, nil
}

// programType maps an ELF program onto bpfd's types.
func programType(ps *ebpf.ProgramSpec) (ProgramType, error) {
	switch {
	case ps.SectionName == "seccomp" || len(ps.SectionName) > 8 && ps.SectionName[:8] == "seccomp/":
		return Seccomp, nil
	case ps.Type == ebpf.SocketFilter:
		return SocketFilter, nil
	case ps.Type == ebpf.XDP:
		return XDP, nil
	}
	return 0, fmt.Errorf("%w: program type %v (section %q)", ErrNotSupported, ps.Type, ps.SectionName)
}

// encodeValue encodes an ELF map key or value of size bytes.
func encodeValue(v any, size int) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		if len(b) != size {
			return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalid, len(b), size)
		}
		return b, nil
	}
	b := make([]byte, size)
	n, err := binary.Encode(b, binary.NativeEndian, v)
	if err != nil || n != size {
		return nil, fmt.Errorf("%w: cannot encode %T as %d bytes", ErrInvalid, v, size)
	}
	return b, nil
}

// truncName fits an ELF name into an object name (15 bytes), as libbpf
// does.
func truncName(n string) string {
	if len(n) > 15 {
		return n[:15]
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package client

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Loader features of LoadCollectionSpec that need the host: CO-RE
// relocations against the running kernel's BTF, __kconfig externs, and
// cilium/ebpf's VariableSpec values for global data.

// ErrCORE wraps a CO-RE relocation that cannot be applied (no kernel BTF,
// a malformed relocation). A relocation whose target does not exist in
// the kernel is not an error here: as in the kernel's path, the
// instruction is poisoned and the program fails verification only if it
// can reach it.
var ErrCORE = errors.New("bpfd: CO-RE relocation failed")

// kernelBTF is the host kernel's BTF (/sys/kernel/btf/vmlinux), loaded
// once.
var kernelBTF = sync.OnceValues(btf.LoadKernelSpec)

// applyCORE applies the CO-RE relocations of insns (in place) against the
// host kernel's BTF with cilium/ebpf's relocation engine, as
// cilium/ebpf's loader and libbpf do. Fixups whose target is missing
// poison their instruction (a call to an unknown helper), which the
// verifier refuses where reachable and the loader sanitises where not.
func applyCORE(insns asm.Instructions, target *btf.Spec) error {
	var relos []*btf.CORERelocation
	var at []*asm.Instruction
	iter := insns.Iterate()
	for iter.Next() {
		if r := btf.CORERelocationMetadata(iter.Ins); r != nil {
			relos = append(relos, r)
			at = append(at, iter.Ins)
		}
	}
	if len(relos) == 0 {
		return nil
	}
	if target == nil {
		var err error
		if target, err = kernelBTF(); err != nil {
			return fmt.Errorf("%w: load kernel BTF: %v", ErrCORE, err)
		}
	}
	// Local type IDs (bpf_core_type_id_local) number types of a BTF
	// blob of their own, as cilium/ebpf's builder does.
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCORE, err)
	}
	fixups, err := btf.CORERelocate(relos, []*btf.Spec{target}, binary.LittleEndian, b.Add)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCORE, err)
	}
	for i, f := range fixups {
		if err := f.Apply(at[i]); err != nil {
			return fmt.Errorf("%w: instruction %d: %v", ErrCORE, i, err)
		}
	}
	return nil
}

// applyVariables returns the contents of a data-section map (.data,
// .rodata, .bss and their named variants) with the values of spec's
// VariableSpecs in that section written over them, as cilium/ebpf does
// before creating the map. It returns nil contents for other maps.
func applyVariables(spec *ebpf.CollectionSpec, name string, ms *ebpf.MapSpec) ([]byte, bool, error) {
	if !isDataSection(name) || ms.Type != ebpf.Array || ms.MaxEntries != 1 || ms.KeySize != 4 {
		return nil, false, nil
	}
	var set bool
	data := make([]byte, ms.ValueSize)
	if len(ms.Contents) == 1 {
		v, ok := ms.Contents[0].Value.([]byte)
		if !ok || len(v) != int(ms.ValueSize) {
			return nil, false, fmt.Errorf("%w: data section contents", ErrInvalid)
		}
		copy(data, v)
		set = true
	}
	for vname, vs := range spec.Variables {
		if vs.SectionName != name || vs.Value == nil {
			continue
		}
		end := uint64(vs.Offset) + uint64(len(vs.Value))
		if end > uint64(len(data)) {
			return nil, false, fmt.Errorf("%w: variable %s exceeds its section", ErrInvalid, vname)
		}
		copy(data[vs.Offset:end], vs.Value)
		set = true
	}
	return data, set, nil
}

func isDataSection(name string) bool {
	for _, p := range []string{".data", ".rodata", ".bss"} {
		if name == p || strings.HasPrefix(name, p+".") {
			return true
		}
	}
	return false
}

// kconfigSection is the .kconfig datasec of an object: the __kconfig
// externs its programs read.
func kconfigSection(spec *ebpf.CollectionSpec) *btf.Datasec {
	if spec.Types == nil {
		return nil
	}
	var ds *btf.Datasec
	if err := spec.Types.TypeByName(".kconfig", &ds); err != nil {
		return nil
	}
	return ds
}

// kconfigValues resolves the externs of ds as libbpf does:
// LINUX_KERNEL_VERSION from the running kernel's release,
// LINUX_HAS_SYSCALL_WRAPPER (x86-64: 1), CONFIG_* from
// /boot/config-$(uname -r) or /proc/config.gz (y, n and m for bool and
// libbpf_tristate, numbers, strings). A CONFIG_* the kernel's config
// lacks is an error, as with cilium/ebpf.
func kconfigValues(ds *btf.Datasec) ([]byte, error) {
	data := make([]byte, ds.Size)
	configs := map[string]btf.VarSecinfo{}
	for _, vsi := range ds.Vars {
		v, ok := vsi.Type.(*btf.Var)
		if !ok {
			return nil, fmt.Errorf("%w: .kconfig entry %T", ErrInvalid, vsi.Type)
		}
		if uint64(vsi.Offset)+uint64(vsi.Size) > uint64(len(data)) {
			return nil, fmt.Errorf("%w: .kconfig entry %s out of bounds", ErrInvalid, v.Name)
		}
		switch v.Name {
		case "LINUX_KERNEL_VERSION":
			if it, ok := btf.UnderlyingType(v.Type).(*btf.Int); !ok || it.Size != 4 {
				return nil, fmt.Errorf("%w: LINUX_KERNEL_VERSION must be a 32-bit integer", ErrInvalid)
			}
			kv, err := kernelVersion()
			if err != nil {
				return nil, err
			}
			binary.NativeEndian.PutUint32(data[vsi.Offset:], kv)
		case "LINUX_HAS_SYSCALL_WRAPPER":
			if err := putKconfig(data[vsi.Offset:vsi.Offset+vsi.Size], v.Type, "y"); err != nil {
				return nil, fmt.Errorf("%s: %w", v.Name, err)
			}
		default:
			if !strings.HasPrefix(v.Name, "CONFIG_") {
				return nil, fmt.Errorf("%w: unknown __kconfig extern %s", ErrNotSupported, v.Name)
			}
			configs[v.Name] = vsi
		}
	}
	if len(configs) == 0 {
		return data, nil
	}
	cfg, err := readKconfig()
	if err != nil {
		return nil, err
	}
	for n, vsi := range configs {
		val, ok := cfg[n]
		if !ok {
			return nil, fmt.Errorf("%w: config option %s does not exist on this kernel", ErrNotSupported, n)
		}
		v := vsi.Type.(*btf.Var)
		if err := putKconfig(data[vsi.Offset:vsi.Offset+vsi.Size], v.Type, val); err != nil {
			return nil, fmt.Errorf("%s=%s: %w", n, val, err)
		}
	}
	return data, nil
}

// kernelVersion is KERNEL_VERSION(a, b, c) of the running kernel's
// release, c capped at 255 as libbpf does.
func kernelVersion() (uint32, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0, os.NewSyscallError("uname", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var v [3]uint32
	for i, f := range strings.SplitN(rel, ".", 3) {
		end := 0
		for end < len(f) && f[end] >= '0' && f[end] <= '9' {
			end++
		}
		n, _ := strconv.ParseUint(f[:end], 10, 32)
		v[i] = uint32(n)
	}
	return v[0]<<16 | v[1]<<8 | min(v[2], 255), nil
}

// readKconfig parses the running kernel's configuration.
func readKconfig() (map[string]string, error) {
	var u unix.Utsname
	unix.Uname(&u)
	var r io.Reader
	if f, err := os.Open("/boot/config-" + unix.ByteSliceToString(u.Release[:])); err == nil {
		defer f.Close()
		r = f
	} else if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("bpfd: /proc/config.gz: %w", err)
		}
		r = zr
	} else {
		return nil, fmt.Errorf("%w: neither /boot/config-%s nor /proc/config.gz provide the kernel's config", ErrNotSupported, unix.ByteSliceToString(u.Release[:]))
	}
	return parseKconfig(r)
}

// parseKconfig reads NAME=value lines; "# CONFIG_X is not set" is n.
func parseKconfig(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if n, ok := bytes.CutPrefix(line, []byte("# ")); ok {
			if name, ok := bytes.CutSuffix(n, []byte(" is not set")); ok && bytes.HasPrefix(name, []byte("CONFIG_")) {
				out[string(name)] = "n"
			}
			continue
		}
		name, val, ok := bytes.Cut(line, []byte("="))
		if !ok || !bytes.HasPrefix(name, []byte("CONFIG_")) {
			continue
		}
		out[string(name)] = string(val)
	}
	return out, sc.Err()
}

// putKconfig stores a config value into an extern of type t, as libbpf:
// bool takes y/n, enum libbpf_tristate y/n/m (1/0/2), char arrays quoted
// strings (cut to the array as cilium/ebpf does), integers numbers (or
// y/n for 1/0).
func putKconfig(dst []byte, t btf.Type, val string) error {
	t = btf.UnderlyingType(t)
	switch tt := t.(type) {
	case *btf.Int:
		if tt.Encoding == btf.Bool {
			switch val {
			case "y":
				dst[0] = 1
			case "n":
				dst[0] = 0
			default:
				return fmt.Errorf("%w: %q for a bool", ErrInvalid, val)
			}
			return nil
		}
		switch val {
		case "y":
			val = "1"
		case "n":
			val = "0"
		case "m":
			return fmt.Errorf("%w: %q for an integer", ErrInvalid, val)
		}
		var n uint64
		var err error
		if tt.Encoding == btf.Signed {
			var s int64
			s, err = strconv.ParseInt(val, 0, int(tt.Size*8))
			n = uint64(s)
		} else {
			n, err = strconv.ParseUint(val, 0, int(tt.Size*8))
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		switch tt.Size {
		case 1:
			dst[0] = byte(n)
		case 2:
			binary.NativeEndian.PutUint16(dst, uint16(n))
		case 4:
			binary.NativeEndian.PutUint32(dst, uint32(n))
		case 8:
			binary.NativeEndian.PutUint64(dst, n)
		default:
			return fmt.Errorf("%w: %d-byte integer", ErrInvalid, tt.Size)
		}
		return nil
	case *btf.Enum:
		if tt.Name != "libbpf_tristate" || len(dst) != 4 {
			return fmt.Errorf("%w: enum %s (only libbpf_tristate)", ErrInvalid, tt.Name)
		}
		v := map[string]uint32{"n": 0, "y": 1, "m": 2}
		n, ok := v[val]
		if !ok {
			return fmt.Errorf("%w: %q for libbpf_tristate", ErrInvalid, val)
		}
		binary.NativeEndian.PutUint32(dst, n)
		return nil
	case *btf.Array:
		if !strings.HasPrefix(val, `"`) || !strings.HasSuffix(val, `"`) || len(val) < 2 {
			return fmt.Errorf("%w: %s is not a string", ErrInvalid, val)
		}
		// As cilium/ebpf: the string is cut to the array, without
		// room for a NUL (libbpf keeps one).
		copy(dst, val[1:len(val)-1])
		return nil
	}
	return fmt.Errorf("%w: extern of type %T", ErrInvalid, t)
}

// ciliumMeta returns the value of the instruction metadata cilium/ebpf's
// ELF reader attached under an unexported key whose value has type
// typeName ("*ebpf.kconfigMeta"), walking asm.Metadata's list through
// reflection (the keys cannot be named outside cilium/ebpf). It returns
// an invalid Value when there is none (or a cilium/ebpf whose layout
// differs).
func ciliumMeta(ins *asm.Instruction, typeName string) (found reflect.Value) {
	defer func() {
		if recover() != nil {
			found = reflect.Value{}
		}
	}()
	md := reflect.ValueOf(&ins.Metadata).Elem()
	if md.Kind() != reflect.Struct || md.NumField() != 1 {
		return reflect.Value{}
	}
	for e := md.Field(0); e.Kind() == reflect.Pointer && !e.IsNil(); e = e.Elem().FieldByName("next") {
		v := e.Elem().FieldByName("value")
		if v.Kind() != reflect.Interface || v.IsNil() {
			continue
		}
		if v = v.Elem(); v.Kind() == reflect.Pointer && !v.IsNil() && v.Type().String() == typeName {
			return v.Elem()
		}
	}
	return reflect.Value{}
}

// kconfigOffset returns the offset in .kconfig of the __kconfig extern
// an instruction reads (cilium/ebpf's *ebpf.kconfigMeta{Map, Offset}).
func kconfigOffset(ins *asm.Instruction) (uint32, bool) {
	m := ciliumMeta(ins, "*ebpf.kconfigMeta")
	if !m.IsValid() {
		return 0, false
	}
	f := m.FieldByName("Offset")
	if f.Kind() != reflect.Uint32 {
		return 0, false
	}
	return uint32(f.Uint()), true
}

// ksymName returns the kernel symbol an instruction's __ksym extern
// names (cilium/ebpf's *ebpf.ksymMeta{Binding, Name}), or "", and
// whether the extern is weak.
func ksymName(ins *asm.Instruction) (string, bool) {
	m := ciliumMeta(ins, "*ebpf.ksymMeta")
	if !m.IsValid() {
		return "", false
	}
	weak := false
	if b := m.FieldByName("Binding"); b.CanInt() {
		weak = b.Int() == 2 // elf.STB_WEAK
	} else if b.CanUint() {
		weak = b.Uint() == 2
	}
	if f := m.FieldByName("Name"); f.Kind() == reflect.String {
		return f.String(), weak
	}
	return "?", weak
}

package bpfctl

import (
	"encoding/binary"
	"errors"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// mapTypes are the map type names bpfctl accepts and prints (the kernel's
// enum bpf_map_type without the prefix, lower case, as bpftool).
var mapTypes = map[string]client.MapType{
	"hash": 1, "array": 2, "prog_array": 3, "perf_event_array": 4, "percpu_hash": 5,
	"percpu_array": 6, "stack_trace": 7, "cgroup_array": 8, "lru_hash": 9,
	"lru_percpu_hash": 10, "lpm_trie": 11, "array_of_maps": 12, "hash_of_maps": 13,
	"devmap": 14, "sockmap": 15, "cpumap": 16, "xskmap": 17, "sockhash": 18,
	"cgroup_storage": 19, "reuseport_sockarray": 20, "percpu_cgroup_storage": 21,
	"queue": 22, "stack": 23, "sk_storage": 24, "devmap_hash": 25, "struct_ops": 26,
	"ringbuf": 27, "inode_storage": 28, "task_storage": 29, "bloom_filter": 30,
	"user_ringbuf": 31, "cgrp_storage": 32, "arena": 33,
}

// mapTypeNames returns the type names, in kernel order.
func mapTypeNames() []string {
	out := make([]string, 0, len(mapTypes))
	for n := range mapTypes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return mapTypes[out[i]] < mapTypes[out[j]] })
	return out
}

func mapTypeName(t client.MapType) string {
	for n, v := range mapTypes {
		if v == t {
			return n
		}
	}
	return "type(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// mapFlagNames are the BPF_F_* map flags by bpfctl name.
var mapFlagNames = []struct {
	name string
	flag uint32
}{
	{"no_prealloc", client.FlagNoPrealloc},
	{"rdonly", client.FlagRdonly},
	{"wronly", client.FlagWronly},
	{"rdonly_prog", client.FlagRdonlyProg},
	{"wronly_prog", client.FlagWronlyProg},
}

// parseMapType parses a type name or number.
func parseMapType(s string) (client.MapType, error) {
	if t, ok := mapTypes[strings.ToLower(s)]; ok {
		return t, nil
	}
	if v, err := strconv.ParseUint(s, 0, 32); err == nil {
		return client.MapType(v), nil
	}
	return 0, usagef("unknown map type %q (a name as bpftool's, e.g. hash, array, percpu_array, lru_hash, ringbuf, prog_array, or a number)", s)
}

// parseMapFlags parses "no_prealloc,rdonly" or a number, or a mix.
func parseMapFlags(s string) (uint32, error) {
	var flags uint32
	for _, f := range splitTrim(s, ",") {
		found := false
		for _, n := range mapFlagNames {
			if strings.EqualFold(f, n.name) {
				flags |= n.flag
				found = true
			}
		}
		if found {
			continue
		}
		v, err := strconv.ParseUint(f, 0, 32)
		if err != nil {
			return 0, usagef("unknown map flag %q (no_prealloc, rdonly, wronly, rdonly_prog, wronly_prog or a number)", f)
		}
		flags |= uint32(v)
	}
	return flags, nil
}

// parsePerm parses an octal file mode such as 0640.
func parsePerm(flag, s string) (os.FileMode, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || v > 0o777 {
		return 0, usagef("--%s %q: want octal permission bits such as 0640", flag, s)
	}
	return os.FileMode(v), nil
}

// parseMode parses r, w or rw.
func parseMode(s string) (client.Mode, error) {
	switch s {
	case "r":
		return client.ModeRead, nil
	case "w":
		return client.ModeWrite, nil
	case "rw", "wr":
		return client.ModeReadWrite, nil
	}
	return 0, usagef("access mode %q: want r, w or rw", s)
}

func (a *App) mapCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "map",
		Short: "Create, inspect and edit maps",
	}
	cmd.AddCommand(a.mapCreateCommand(), a.showCommand("map"),
		a.mapLookupCommand(), a.mapUpdateCommand(), a.mapDeleteCommand(), a.mapGetNextCommand(),
		a.mapDumpCommand(), a.mapFreezeCommand(),
		a.mapWatchCommand())
	return cmd
}

// openMap opens the map pinned at pin with mode.
func (a *App) openMap(op, pin string, mode client.Mode) (*client.Map, error) {
	c, err := a.dial()
	if err != nil {
		return nil, err
	}
	m, err := c.OpenPinnedMap(pin, mode)
	if err != nil {
		return nil, wrongKind(fail(op+": "+pin, kOpen, false, err), "map")
	}
	return m, nil
}

func (a *App) mapCreateCommand() *cobra.Command {
	var keySize, valueSize, maxEntries uint32
	var flags, name, pin, perm string
	cmd := &cobra.Command{
		Use:   "create TYPE --key-size N --value-size N --max-entries N --pin PATH",
		Short: "Create a map and pin it",
		Long: `Create a map of TYPE (bpftool's names: hash, array, prog_array, percpu_hash,
percpu_array, lru_hash, lpm_trie, queue, stack, ringbuf, bloom_filter, ...;
or a number; the daemon refuses types it does not implement) and pin it at
PATH with permission bits --file-mode. The pin is what keeps the map alive.`,
		Example: "  bpfctl map create hash --key-size 4 --value-size 8 --max-entries 1024 --name ports --pin ports --file-mode 0640",
		Args:    cobra.ExactArgs(1),
		ValidArgsFunction: func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return prefixed(mapTypeNames(), toComplete), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseMapType(args[0])
			if err != nil {
				return err
			}
			fl, err := parseMapFlags(flags)
			if err != nil {
				return err
			}
			p, err := parsePerm("file-mode", perm)
			if err != nil {
				return err
			}
			c, err := a.dial()
			if err != nil {
				return err
			}
			m, err := c.NewMap(client.MapSpec{Type: t, KeySize: keySize, ValueSize: valueSize,
				MaxEntries: maxEntries, Flags: fl, Name: name})
			if err != nil {
				return fail("create", kCreate, false, err)
			}
			defer m.Close()
			if err := c.Pin(m, pin, p); err != nil {
				return fail("pin "+pin, kPin, false, err)
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&keySize, "key-size", 0, "key size in bytes")
	f.Uint32Var(&valueSize, "value-size", 0, "value size in bytes")
	f.Uint32Var(&maxEntries, "max-entries", 0, "maximum number of entries")
	f.StringVar(&flags, "flags", "", "map flags: no_prealloc,rdonly,wronly,rdonly_prog,wronly_prog or a number")
	f.StringVar(&name, "name", "", "map name (at most 15 bytes)")
	f.StringVar(&pin, "pin", "", "pin path (relative: under the pin root)")
	f.StringVar(&perm, "file-mode", "0600", "permission bits of the pin file (octal)")
	for _, n := range []string{"key-size", "value-size", "max-entries", "pin"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

// elemCommand builds a map element command: the pin, then bpftool-style
// positional key/value words, with typed shortcuts.
type elemCmd struct {
	key, value *typedFlags
}

func (a *App) newElemCommand(use, short string, withValue bool) (*cobra.Command, *elemCmd) {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
	}
	e := &elemCmd{key: addTypedFlags(cmd.Flags(), "key")}
	if withValue {
		e.value = addTypedFlags(cmd.Flags(), "value")
	}
	return cmd, e
}

// printElem prints one element as bpftool does.
func (a *App) printElem(key, value []byte) {
	if len(key) > 16 || len(value) > 16 {
		a.printf("key:\n%svalue:\n%s", hexLines(key), hexLines(value))
		return
	}
	a.printf("key: %s  value: %s\n", hexBytes(key), hexBytes(value))
}

type elemJSON struct {
	Key   []string `json:"key"`
	Value []string `json:"value"`
}

// openKeyOnly is the start of the commands that take a pin and a key and
// nothing else (lookup, delete, getnext): it parses the key, opens the pin
// with mode and resolves the key against the map's key size (required: a
// key must be given). The caller closes the map.
func (a *App) openKeyOnly(op string, args []string, e *elemCmd, mode client.Mode, required bool) (*client.Map, []byte, error) {
	ea, err := splitElemArgs(args[1:])
	if err != nil {
		return nil, nil, err
	}
	if ea.hasValue || ea.hasFlag {
		return nil, nil, usagef("%s takes only a key", op)
	}
	m, err := a.openMap(op, args[0], mode)
	if err != nil {
		return nil, nil, err
	}
	if len(ea.key) > 0 && ea.key[0] == "json" {
		var kt btf.Type
		if et := a.typesOf(m); et != nil {
			kt = et.key
		}
		if ea.key, err = jsonWords("key", ea.key, kt, 0); err != nil {
			m.Close()
			return nil, nil, err
		}
	}
	key, err := resolveBytes("key", ea.key, ea.hasKey, e.key, m.KeySize(), required)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, key, nil
}

// printElement prints one element of m: typed when m has BTF (et not
// nil), else as bytes (per CPU for per-CPU maps), as bpftool does; with
// -j the bytes, and "formatted" with BTF. It returns what -j prints, for
// lists.
func (a *App) elementOut(m *client.Map, et *elemTypes, key, value []byte) (any, error) {
	if et != nil {
		typed, err := et.element(m.ValueSize(), key, value)
		if err != nil {
			return nil, fail("format", kRead, false, err)
		}
		if a.json {
			return formattedJSON{jsonBytes(key), jsonBytes(value), typed}, nil
		}
		return typed, nil
	}
	if a.json {
		return elemJSON{jsonBytes(key), jsonBytes(value)}, nil
	}
	return nil, nil
}

// printBytesElem prints an element without BTF: per CPU for per-CPU
// maps.
func (a *App) printBytesElem(m *client.Map, key, value []byte) {
	if len(value) == m.ValueSize() {
		a.printElem(key, value)
		return
	}
	stride := (m.ValueSize() + 7) &^ 7
	if len(key) > 16 {
		a.printf("key:\n%s", hexLines(key))
	} else {
		a.printf("key: %s\n", hexBytes(key))
	}
	for cpu := 0; cpu*stride < len(value); cpu++ {
		a.printf("value (CPU %02d): %s\n", cpu, hexBytes(value[cpu*stride:cpu*stride+m.ValueSize()]))
	}
}

func (a *App) mapLookupCommand() *cobra.Command {
	cmd, e := a.newElemCommand("lookup PIN key BYTES...", "Look up a key", false)
	cmd.Example = "  bpfctl map lookup ports key 0x50 0x00 0x00 0x00\n  bpfctl map lookup ports key hex 50 00 00 00\n  bpfctl map lookup ports --key-u32 80"
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, key, err := a.openKeyOnly("lookup", args, e, client.ModeRead, true)
		if err != nil {
			return err
		}
		defer m.Close()
		value := valueBuffer(m)
		if err := m.Lookup(key, value); err != nil {
			return fail("lookup", kRead, true, err)
		}
		et := a.typesOf(m)
		out, err := a.elementOut(m, et, key, value)
		switch {
		case err != nil:
			return err
		case a.json:
			a.printJSON(out)
		case et != nil:
			return a.printTyped(out)
		default:
			a.printBytesElem(m, key, value)
		}
		return nil
	}
	return cmd
}

func (a *App) mapUpdateCommand() *cobra.Command {
	cmd, e := a.newElemCommand("update PIN key BYTES... value (BYTES...|pinned PROG) [any|exist|noexist]", "Create or replace an element", true)
	cmd.Long = `Store a value under a key. Keys and values are bytes as bpftool takes them
(see 'bpfctl map --help'). In a program array (prog_array) the value is a
program: "value pinned PROG" names it by its pin, which is opened with read
access (a tail call runs the program, as a test run does).`
	cmd.Example = "  bpfctl map update ports key 0x50 0 0 0 value 1 0 0 0 0 0 0 0 noexist\n  bpfctl map update ports --key-u32 80 --value-u64 1 --exist\n" +
		"  bpfctl map update jmp key 0 0 0 0 value pinned progs/slot0"
	var exist, noexist, anyFlag bool
	cmd.Flags().BoolVar(&exist, "exist", false, "replace only (BPF_EXIST; no such key: exit 4)")
	cmd.Flags().BoolVar(&noexist, "noexist", false, "create only (BPF_NOEXIST)")
	cmd.Flags().BoolVar(&anyFlag, "any", false, "create or replace (BPF_ANY, the default)")
	cmd.MarkFlagsMutuallyExclusive("exist", "noexist", "any")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ea, err := splitElemArgs(args[1:])
		if err != nil {
			return err
		}
		flag := ea.flag
		if exist || noexist || anyFlag {
			if ea.hasFlag {
				return usagef("update flag given both as a word and as --exist/--noexist/--any")
			}
			switch {
			case exist:
				flag = client.UpdateExist
			case noexist:
				flag = client.UpdateNoExist
			}
		}
		m, err := a.openMap("update", args[0], client.ModeWrite)
		if err != nil {
			return err
		}
		defer m.Close()
		var key, value []byte
		if m.Type() == client.ProgArray {
			if key, err = resolveBytes("key", ea.key, ea.hasKey, e.key, m.KeySize(), true); err != nil {
				return err
			}
			p, err := a.progArrayValue(ea, e)
			if err != nil {
				return err
			}
			defer p.Close()
			value = binary.NativeEndian.AppendUint32(nil, uint32(p.FD()))
		} else {
			et := a.typesOf(m)
			var kt, vt btf.Type
			perCPU := 0
			if et != nil {
				kt, vt, perCPU = et.key, et.value, et.perCPU
			}
			if ea.key, err = jsonWords("key", ea.key, kt, 0); err != nil {
				return err
			}
			jsonValue := len(ea.value) > 0 && ea.value[0] == "json"
			if ea.value, err = jsonWords("value", ea.value, vt, perCPU); err != nil {
				return err
			}
			if key, err = resolveBytes("key", ea.key, ea.hasKey, e.key, m.KeySize(), true); err != nil {
				return err
			}
			size := m.ValueSize()
			if jsonValue {
				size = m.ValueBufferSize()
			}
			if value, err = resolveBytes("value", ea.value, ea.hasValue, e.value, size, true); err != nil {
				return err
			}
			if len(value) != m.ValueBufferSize() {
				// One value for every CPU of a per-CPU map, as bpftool.
				stride := (m.ValueSize() + 7) &^ 7
				all := make([]byte, m.ValueBufferSize())
				for off := 0; off < len(all); off += stride {
					copy(all[off:], value)
				}
				value = all
			}
		}
		if err := m.Update(key, value, flag); err != nil {
			return writeFail("update", m, true, err)
		}
		if a.json {
			a.printJSON(nil)
		}
		return nil
	}
	return cmd
}

func (a *App) mapDeleteCommand() *cobra.Command {
	cmd, e := a.newElemCommand("delete PIN key BYTES...", "Delete a key", false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, key, err := a.openKeyOnly("delete", args, e, client.ModeWrite, true)
		if err != nil {
			return err
		}
		defer m.Close()
		if err := m.Delete(key); err != nil {
			return writeFail("delete", m, true, err)
		}
		if a.json {
			a.printJSON(nil)
		}
		return nil
	}
	return cmd
}

func (a *App) mapGetNextCommand() *cobra.Command {
	cmd, e := a.newElemCommand("getnext PIN [key BYTES...]", "Print the key after a key (the first key without one)", false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, key, err := a.openKeyOnly("getnext", args, e, client.ModeRead, false)
		if err != nil {
			return err
		}
		defer m.Close()
		next := make([]byte, m.KeySize())
		if err := m.NextKey(key, next); err != nil {
			return fail("getnext", kRead, true, err)
		}
		if a.json {
			a.printJSON(struct {
				Key     []string `json:"key"`
				NextKey []string `json:"next_key"`
			}{jsonBytes(key), jsonBytes(next)})
			return nil
		}
		if key == nil {
			a.printf("key: None\n")
		} else {
			a.printf("key:\n%s", hexLines(key))
		}
		a.printf("next key:\n%s", hexLines(next))
		return nil
	}
	return cmd
}

func (a *App) mapDumpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dump PIN",
		Short: "Print every element",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.openMap("dump", args[0], client.ModeRead)
			if err != nil {
				return err
			}
			defer m.Close()
			it := m.Iterate()
			key, value := make([]byte, m.KeySize()), valueBuffer(m)
			et := a.typesOf(m)
			elems := []any{}
			n := 0
			for it.Next(key, value) {
				n++
				out, err := a.elementOut(m, et, key, value)
				switch {
				case err != nil:
					return err
				case out != nil:
					elems = append(elems, out)
				default:
					a.printBytesElem(m, key, value)
				}
			}
			if err := it.Err(); err != nil {
				return fail("dump", kRead, false, err)
			}
			switch {
			case a.json:
				a.printJSON(elems)
			case et != nil:
				return a.printTyped(elems)
			default:
				a.printf("Found %d element", n)
				if n != 1 {
					a.printf("s")
				}
				a.printf("\n")
			}
			return nil
		},
	}
}

func (a *App) mapFreezeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "freeze PIN",
		Short: "Make a map read-only for everyone, forever",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.openMap("freeze", args[0], client.ModeWrite)
			if err != nil {
				return err
			}
			defer m.Close()
			if err := m.Freeze(); err != nil {
				return writeFail("freeze", m, false, err)
			}
			if a.json {
				a.printJSON(nil)
			}
			return nil
		},
	}
}

// writeFail is fail for a write through m, naming why an EPERM happened:
// a frozen map, a BPF_F_RDONLY map, or a read-only descriptor.
func writeFail(op string, m *client.Map, elem bool, err error) error {
	out := fail(op, kWrite, elem, err)
	var ce *cliError
	if !errors.As(out, &ce) || ce.errno != unix.EPERM {
		return out
	}
	info, ierr := m.Info()
	switch {
	case ierr != nil:
	case info.Frozen:
		ce.hint = "the map is frozen (bpfctl map freeze): nobody can write it any more"
	case info.Flags&client.FlagRdonly != 0:
		ce.hint = "the map was created with BPF_F_RDONLY (--flags rdonly): its descriptors can only read"
	case info.Mode&client.ModeWrite == 0:
		ce.hint = "this descriptor is read-only; reopen the pin with write access or ask its owner"
	}
	return out
}

// progArrayValue opens the program a program array update names:
// "value pinned PROG". The caller closes it.
func (a *App) progArrayValue(ea elemArgs, e *elemCmd) (*client.Program, error) {
	if w, _, _ := e.value.get(); w != 0 || !ea.hasValue || len(ea.value) != 2 || ea.value[0] != "pinned" {
		return nil, &cliError{code: ExitUsage, msg: "a program array's value is a program",
			hint: "give it as: value pinned PROG (the program's pin)"}
	}
	return a.openProg("update", ea.value[1], true)
}

// wrongKind fixes the hint of an EINVAL from opening a pin as a want
// ("map" or "program"): the pin names the other kind of object.
func wrongKind(err error, want string) error {
	var ce *cliError
	if errors.As(err, &ce) && ce.errno == unix.EINVAL {
		ce.hint = "the pin is not a " + want + " ('bpfctl pin ls' shows what each pin is)"
	}
	return err
}

package bpfctl

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/bpfasm"
	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/prog"
)

// progTypes are the program type names bpfctl accepts.
var progTypes = map[string]client.ProgramType{
	"socket_filter": client.SocketFilter, "socket": client.SocketFilter,
	"xdp": client.XDP, "seccomp": client.Seccomp,
}

func parseProgType(s string) (client.ProgramType, error) {
	if t, ok := progTypes[strings.ToLower(s)]; ok {
		return t, nil
	}
	if v, err := strconv.ParseUint(s, 0, 32); err == nil {
		return client.ProgramType(v), nil
	}
	return 0, usagef("unknown program type %q (socket_filter, xdp, seccomp or a number)", s)
}

func (a *App) progCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prog",
		Short: "Load, inspect and run programs",
	}
	cmd.AddCommand(a.progLoadCommand(), a.showCommand("prog"),
		a.progDumpCommand(), a.progRunCommand(), a.progAttachCommand())
	return cmd
}

// openProg opens the program pinned at pin for reading (or, for a
// write-only pin, writing, when readOnly is false).
func (a *App) openProg(op, pin string, readOnly bool) (*client.Program, error) {
	c, err := a.dial()
	if err != nil {
		return nil, err
	}
	p, err := c.OpenPinnedProgram(pin, client.ModeRead)
	if err != nil && !readOnly && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
		if p2, err2 := c.OpenPinnedProgram(pin, client.ModeWrite); err2 == nil {
			p, err = p2, nil
		}
	}
	if err != nil {
		return nil, wrongKind(fail(op+": "+pin, kOpen, false, err), "program")
	}
	return p, nil
}

// mapBinding is one --map of prog load: map_fd Index in the assembly
// names the map pinned at the pin.
type mapBinding struct {
	index int
	spec  fdSpec
}

// bindMaps resolves --map specs to indexes: a numeric NAME is the index
// (map_fd N); otherwise the index is the flag's position, from 0.
func bindMaps(specs []fdSpec) ([]mapBinding, error) {
	out := make([]mapBinding, len(specs))
	seen := map[int]bool{}
	for i, sp := range specs {
		idx := i
		if sp.named {
			if v, err := strconv.Atoi(sp.name); err == nil && v >= 0 {
				idx = v
			}
		}
		if seen[idx] {
			return nil, usagef("--map: two maps bound to map_fd %d", idx)
		}
		seen[idx] = true
		out[i] = mapBinding{idx, sp}
	}
	return out, nil
}

// rewriteMapRefs replaces the map indexes of LD_IMM64 map references
// (map_fd N, map_value N, off) in raw with the descriptors fds[N].
func rewriteMapRefs(raw []byte, fds map[int]int) error {
	for pc := 0; pc+8 <= len(raw); pc += 8 {
		if raw[pc] != 0x18 {
			continue
		}
		if pc+16 > len(raw) {
			return usagef("instruction %d: lddw without its second half", pc/8)
		}
		if src := raw[pc+1] >> 4; src == 1 || src == 2 {
			idx := int(int32(binary.LittleEndian.Uint32(raw[pc+4:])))
			fd, ok := fds[idx]
			if !ok {
				return usagef("instruction %d references map_fd %d, but no --map binds it (--map %d=PIN)", pc/8, idx, idx)
			}
			binary.LittleEndian.PutUint32(raw[pc+4:], uint32(fd))
		}
		pc += 8
	}
	return nil
}

// openAnyMode opens a map pin with as much access as it grants: rw, else
// r, else w.
func openAnyMode(c *client.Conn, pin string) (*client.Map, error) {
	var err error
	for _, m := range []client.Mode{client.ModeReadWrite, client.ModeRead, client.ModeWrite} {
		var mp *client.Map
		mp, err = c.OpenPinnedMap(pin, m)
		if err == nil {
			return mp, nil
		}
		if !errors.Is(err, unix.EACCES) {
			return nil, err
		}
	}
	return nil, err
}

type progLoadFlags struct {
	typ, asmFile, rawFile, pin, pinDir, perm, name, license string
	maps                                                    []fdSpec
	logLevel                                                uint32
}

// mapFlag collects prog load's --map, remembering whether a name was
// given.
type mapFlag struct{ f *progLoadFlags }

func (m mapFlag) String() string { return "" }
func (m mapFlag) Type() string   { return "N=PIN[:r|w|rw]" }
func (m mapFlag) Set(s string) error {
	sp, err := parseFDSpec(s, false)
	if err != nil {
		return err
	}
	m.f.maps = append(m.f.maps, sp)
	return nil
}

func (a *App) progLoadCommand() *cobra.Command {
	f := &progLoadFlags{}
	cmd := &cobra.Command{
		Use:   "load {OBJ.o --pin-dir DIR | --type T (--asm FILE.s | --raw FILE.bin) [--map N=PIN]... --pin PATH}",
		Short: "Load a program (or every program and map of an ELF object) and pin it",
		Long: `With OBJ.o (a clang-built eBPF ELF object), create its maps, load its
programs and pin each, by name, under --pin-dir (made if missing).

With --asm (bpfasm text, as pkg/bpfasm documents) or --raw (bpf_attr.insns
bytes), load one program of --type (socket_filter, xdp, seccomp or a number)
and pin it at --pin. Map references are "lddw %rN, map_fd IDX" (and
"map_value IDX, OFF"): --map IDX=PIN binds IDX to the map pinned at PIN;
--map PIN without an index binds the flag's position (first --map is 0).
A ":r", ":w" or ":rw" suffix opens the map with that access, and the
verifier holds the program to it; without one, the map is opened with as
much access as its pin grants.`,
		Example: "  bpfctl prog load counter.bpf.o --pin-dir counter\n" +
			"  bpfctl prog load --type socket_filter --asm filter.s --map 0=ports:r --pin filter",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePerm("file-mode", f.perm)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				if f.pinDir == "" || f.typ != "" || f.asmFile != "" || f.rawFile != "" || f.pin != "" || len(f.maps) != 0 {
					return usagef("prog load OBJ.o takes --pin-dir DIR (and not --type, --asm, --raw, --map or --pin)")
				}
				return a.loadObject(args[0], f.pinDir, p)
			}
			if f.pinDir != "" {
				return usagef("--pin-dir goes with an ELF object: prog load OBJ.o --pin-dir DIR")
			}
			if f.typ == "" || f.pin == "" || (f.asmFile == "") == (f.rawFile == "") {
				return usagef("prog load needs --type, one of --asm or --raw, and --pin")
			}
			return a.loadOne(f, p)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.pinDir, "pin-dir", "", "directory to pin an object's maps and programs in (by name)")
	fl.StringVar(&f.typ, "type", "", "program type: socket_filter, xdp, seccomp or a number")
	fl.StringVar(&f.asmFile, "asm", "", "bpfasm source file")
	fl.StringVar(&f.rawFile, "raw", "", "raw instructions file (8 bytes each, little-endian)")
	fl.Var(mapFlag{f}, "map", "bind map_fd N to a pinned map: N=PIN[:r|w|rw] (repeatable)")
	fl.StringVar(&f.pin, "pin", "", "pin path of the program")
	fl.StringVar(&f.perm, "file-mode", "0600", "permission bits of the pin files (octal)")
	fl.StringVar(&f.name, "name", "", "program name (default: the file's base name, at most 15 bytes)")
	fl.StringVar(&f.license, "license", "GPL", "license string")
	fl.Uint32Var(&f.logLevel, "log-level", 0, "verifier log level (1: summary, 2: every instruction)")
	cmd.RegisterFlagCompletionFunc("type", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"socket_filter", "xdp", "seccomp"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// loadOne loads one program from --asm or --raw and pins it.
func (a *App) loadOne(f *progLoadFlags, perm os.FileMode) error {
	typ, err := parseProgType(f.typ)
	if err != nil {
		return err
	}
	file := f.asmFile + f.rawFile
	src, err := os.ReadFile(file)
	if err != nil {
		return fail("load", kFile, false, err)
	}
	raw := src
	if f.asmFile != "" {
		raw, err = bpfasm.Assemble(string(src))
		if err != nil {
			return &cliError{code: ExitUsage, msg: "load: " + file + ": " + err.Error(), errno: errnoOf(err)}
		}
	} else if len(raw)%8 != 0 || len(raw) == 0 {
		return usagef("load: %s: %d bytes is not a whole number of 8-byte instructions", file, len(raw))
	}
	binds, err := bindMaps(f.maps)
	if err != nil {
		return err
	}
	c, err := a.dial()
	if err != nil {
		return err
	}
	fds := map[int]int{}
	for _, b := range binds {
		var m *client.Map
		var err error
		if !b.spec.modeSet {
			m, err = openAnyMode(c, b.spec.pin)
		} else {
			m, err = c.OpenPinnedMap(b.spec.pin, b.spec.mode)
		}
		if err != nil {
			return fail("load: map "+b.spec.pin, kOpen, false, err)
		}
		defer m.Close()
		fds[b.index] = m.FD()
	}
	if err := rewriteMapRefs(raw, fds); err != nil {
		return err
	}
	insns, err := asm.AppendInstructions(nil, bytes.NewReader(raw), binary.LittleEndian, "linux")
	if err != nil {
		return usagef("load: %s: %v", file, err)
	}
	name := f.name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
		name = strings.Map(func(r rune) rune {
			if r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return '_'
		}, name)
		if len(name) > 15 {
			name = name[:15]
		}
	}
	p, err := c.LoadProgram(client.ProgramSpec{Type: typ, Instructions: insns, License: f.license,
		Name: name, LogLevel: f.logLevel})
	if err != nil {
		return fail("load", kCreate, false, err)
	}
	defer p.Close()
	if f.logLevel > 0 && p.VerifierLog() != "" && !a.json {
		fmt.Fprint(a.Stderr, p.VerifierLog())
	}
	if err := c.Pin(p, f.pin, perm); err != nil {
		return fail("pin "+f.pin, kPin, false, err)
	}
	if a.json {
		a.printJSON(nil)
	}
	return nil
}

// pinnedJSON is one object prog load OBJ.o pinned.
type pinnedJSON struct {
	Type string `json:"type"`
	Name string `json:"name"`
	Pin  string `json:"pin"`
}

// loadObject loads an ELF object and pins its maps and programs by name
// under dir. On failure it removes the pins it made.
func (a *App) loadObject(obj, dir string, perm os.FileMode) (err error) {
	if _, err := os.Stat(obj); err != nil {
		return fail("load", kFile, false, err)
	}
	c, err := a.dial()
	if err != nil {
		return err
	}
	coll, err := c.LoadCollection(obj)
	if err != nil {
		return fail("load "+obj, kCreate, false, err)
	}
	defer coll.Close()
	if err := c.PinMkdir(dir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fail("mkdir "+dir, kPin, false, err)
	}
	var made []string
	defer func() {
		if err == nil || len(made) == 0 {
			return
		}
		root, rerr := a.pinRoot()
		if rerr != nil {
			return
		}
		for _, p := range made {
			if !filepath.IsAbs(p) {
				p = filepath.Join(root, p)
			}
			os.Remove(p)
		}
	}()
	var out []pinnedJSON
	pin := func(kind, name string, o client.Pinner) error {
		path := filepath.Join(dir, name)
		if err := c.Pin(o, path, perm); err != nil {
			return fail("pin "+path, kPin, false, err)
		}
		made = append(made, path)
		out = append(out, pinnedJSON{kind, name, path})
		return nil
	}
	for _, n := range sortedNames(coll.Maps) {
		if err := pin("map", n, coll.Maps[n]); err != nil {
			return err
		}
	}
	for _, n := range sortedNames(coll.Programs) {
		if err := pin("prog", n, coll.Programs[n]); err != nil {
			return err
		}
	}
	if a.json {
		a.printJSON(out)
		return nil
	}
	for _, o := range out {
		a.printf("%-4s  %-16s  %s\n", o.Type, o.Name, o.Pin)
	}
	return nil
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dumpLine is one instruction of prog dump's JSON.
type dumpLine struct {
	PC     int    `json:"pc"`
	Bytes  string `json:"bytes"`
	Disasm string `json:"disasm"`
	Src    string `json:"src,omitempty"`
}

func (a *App) progDumpCommand() *cobra.Command {
	var syntax string
	cmd := &cobra.Command{
		Use:   "dump PIN",
		Short: "Disassemble a pinned program, with its source lines when known",
		Long: `Print the program's instructions as bpftool's "prog dump xlated" and the
verifier log do ("   5: (85) call bpf_map_lookup_elem#1"), each preceded by
its source line ("; file.c:12: text") when the program was loaded with line
info. Map references show the map's daemon-wide id ("r1 = map[id:3]").

With --syntax ubpf, print bpfasm (ubpf-style) syntax instead, which
'bpfctl prog load --asm' reads back; map references then show the id as
"map_fd ID  # map id ID".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if syntax != "kernel" && syntax != "ubpf" {
				return usagef("--syntax %q: want kernel or ubpf", syntax)
			}
			p, err := a.openProg("dump", args[0], true)
			if err != nil {
				return err
			}
			defer p.Close()
			insns, lines, err := p.Dump()
			if err != nil {
				return fail("dump", kRead, false, err)
			}
			out := disassemble(insns, lines, syntax == "ubpf")
			if a.json {
				if out == nil {
					out = []dumpLine{}
				}
				a.printJSON(out)
				return nil
			}
			last := ""
			for _, l := range out {
				// As bpftool: a source line once, where it starts; none
				// for compiler-made code (line 0).
				if l.Src != "" && l.Src != last && !strings.Contains(l.Src, ":0: ") {
					a.printf("; %s\n", l.Src)
				}
				last = l.Src
				a.printf("%4d: %s\n", l.PC, l.Disasm)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&syntax, "syntax", "kernel", "instruction syntax: kernel (bpftool xlated, verifier log) or ubpf (bpfasm)")
	cmd.RegisterFlagCompletionFunc("syntax", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"kernel", "ubpf"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// kernelSyntax prints dumped instructions (map references naming ids).
var kernelSyntax = &bpfasm.KernelSyntax{HelperName: prog.HelperName}

// disassemble renders a dump's instructions, in kernel syntax or
// (ubpf) bpfasm syntax, with their source lines.
func disassemble(insns []byte, lines map[int]string, ubpf bool) []dumpLine {
	var out []dumpLine
	for pc := 0; pc*8 < len(insns); {
		var text string
		var n int
		var err error
		if ubpf {
			text, n, err = bpfasm.DisassembleOne(insns[pc*8:])
			if err == nil && insns[pc*8] == 0x18 {
				if src := insns[pc*8+1] >> 4; src == 1 || src == 2 {
					text += fmt.Sprintf("  # map id %d", binary.LittleEndian.Uint32(insns[pc*8+4:]))
				}
			}
		} else {
			text, n, err = kernelSyntax.KernelText(insns[pc*8:])
		}
		if err != nil {
			text, n = "(bad instruction: "+err.Error()+")", 8
		}
		out = append(out, dumpLine{PC: pc, Bytes: hex.EncodeToString(insns[pc*8 : pc*8+n]), Disasm: text, Src: lines[pc]})
		pc += n / 8
	}
	return out
}

// parseHex parses hex digits, ignoring spaces and an optional 0x.
func parseHex(flag, s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, usagef("--%s: %v (want hex digits such as \"0a 1b\" or \"0a1b\")", flag, err)
	}
	return b, nil
}

// readInput returns the bytes of --NAME FILE or --NAME-hex HEX.
func readInput(name, file, hexText string, hasHex bool) ([]byte, error) {
	switch {
	case file != "" && hasHex:
		return nil, usagef("--%s and --%s-hex both given", name, name)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fail("run", kFile, false, err)
		}
		return b, nil
	case hasHex:
		return parseHex(name+"-hex", hexText)
	}
	return nil, nil
}

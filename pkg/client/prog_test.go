package client

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

func fixture(name string) string {
	return filepath.Join("..", "..", "testdata", "bpf", name+".bpf.o")
}

func u32le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64le(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// counterProg adds 1 to value 0 of an array map through a lookup and an
// atomic add: it reads and writes the map.
func counterProg(m *Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// readProg returns value 0 of an array map: it only reads the map.
func readProg(m *Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

func ethFrame() []byte { return make([]byte, 14+20) }

func TestLoadAndRunProgram(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Name: "counter"})
	p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: counterProg(m), License: "GPL", Name: "count"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	opts := &RunOptions{Data: ethFrame(), Repeat: 5}
	if ret, err := p.Run(opts); err != nil || ret != 0 {
		t.Fatalf("Run = %d, %v", ret, err)
	}
	v := make([]byte, 8)
	if err := m.Lookup(u32le(0), v); err != nil || binary.LittleEndian.Uint64(v) != 5 {
		t.Fatalf("counter after 5 runs: %x, %v", v, err)
	}
	info, err := p.Info()
	if err != nil || info.Type != SocketFilter || info.Name != "count" || info.Mode != ModeAll || info.InsnCount != 11 {
		t.Fatalf("Info = %+v, %v", info, err)
	}
}

// TestAccessModesInPrograms is DESIGN.md's rule: a program gets each map
// with its loader's handle mode, and the verifier enforces it.
func TestAccessModesInPrograms(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	wo, err := m.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()

	tests := []struct {
		name    string
		insns   asm.Instructions
		wantErr unix.Errno
		wantLog string
	}{
		{"write through read-only", counterProg(ro), unix.EACCES, "read-only"},
		{"read through read-only", readProg(ro), 0, ""},
		{"lookup through write-only", readProg(wo), unix.EACCES, "write-only"},
		{"read-write", counterProg(m), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: tt.insns, License: "GPL"})
			if tt.wantErr == 0 {
				if err != nil {
					t.Fatal(err)
				}
				p.Close()
				return
			}
			var ve *VerifierError
			if !errors.As(err, &ve) || !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrAccess) {
				t.Fatalf("LoadProgram = %v, want a verifier error %v", err, tt.wantErr)
			}
			if !strings.Contains(ve.Log, tt.wantLog) {
				t.Fatalf("log does not say %q:\n%s", tt.wantLog, ve.Log)
			}
		})
	}
}

// TestVerifierNegativeSet loads programs that must be refused through the
// daemon and checks the errno and the log line.
func TestVerifierNegativeSet(t *testing.T) {
	c := newTestConn(t)
	m := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	tests := []struct {
		name    string
		typ     ProgramType
		insns   asm.Instructions
		errno   unix.Errno
		logLine string
	}{
		{"out-of-range jump", SocketFilter, asm.Instructions{{OpCode: asm.Ja.Op(asm.ImmSource), Offset: 5}, asm.Mov.Imm(asm.R0, 0), asm.Return()}, unix.EINVAL, "jump out of range"},
		{"uninitialised register", SocketFilter, asm.Instructions{asm.Mov.Reg(asm.R0, asm.R5), asm.Return()}, unix.EACCES, "R5 !read_ok"},
		{"uninitialised stack", SocketFilter, asm.Instructions{asm.LoadMem(asm.R0, asm.R10, -8, asm.DWord), asm.Return()}, unix.EACCES, "invalid read from stack"},
		{"null dereference", SocketFilter, asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word), asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4), asm.FnMapLookupElem.Call(), asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return(),
		}, unix.EACCES, "map_value_or_null"},
		{"packet without bounds check", XDP, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte), asm.Return(),
		}, unix.EACCES, "invalid access to packet"},
		{"stack overflow", SocketFilter, asm.Instructions{asm.StoreImm(asm.R10, -520, 0, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()}, unix.EACCES, "invalid write to stack"},
		{"unbounded loop", SocketFilter, asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), asm.JGT.Imm(asm.R0, 5, "l").WithSymbol("l"), asm.Return(),
		}, unix.EINVAL, "infinite loop"},
		{"unknown helper", SocketFilter, append(asm.Instructions{asm.FnSkbStoreBytes.Call()}, ret0...), unix.EINVAL, "unknown func bpf_skb_store_bytes#9"},
		{"bad context offset", SocketFilter, asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 76, asm.Word), asm.Return()}, unix.EACCES, "invalid bpf_context access off=76 size=4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.LoadProgram(ProgramSpec{Type: tt.typ, Instructions: tt.insns, License: "GPL"})
			if err == nil {
				p.Close()
				t.Fatal("program loaded")
			}
			var ve *VerifierError
			if !errors.As(err, &ve) || ve.Errno != tt.errno {
				t.Fatalf("LoadProgram = %v, want errno %v", err, tt.errno)
			}
			if !strings.Contains(ve.Log, tt.logLine) {
				t.Fatalf("log lacks %q:\n%s", tt.logLine, ve.Log)
			}
		})
	}
}

func TestLoadCollectionPortFilter(t *testing.T) {
	c := newTestConn(t)
	coll, err := c.LoadCollection(fixture("xdp_ports"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	ports, p := coll.Maps["ports"], coll.Programs["xdp_ports"]
	if ports == nil || p == nil {
		t.Fatalf("collection: %v", coll)
	}
	pkt := udp4(53)
	run := func() uint32 {
		t.Helper()
		out := make([]byte, len(pkt))
		opts := &RunOptions{Data: pkt, DataOut: out}
		ret, err := p.Run(opts)
		if err != nil {
			t.Fatal(err)
		}
		if string(opts.DataOut) != string(pkt) {
			t.Fatalf("data out differs")
		}
		return ret
	}
	const drop, pass = 1, 2
	if got := run(); got != drop {
		t.Fatalf("port 53 not in the map: verdict %d, want XDP_DROP", got)
	}
	if err := ports.Update(binary.LittleEndian.AppendUint16(nil, 53), []byte{1}, UpdateAny); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != pass {
		t.Fatalf("port 53 allowed: verdict %d, want XDP_PASS", got)
	}
}

func udp4(dport uint16) []byte {
	b := make([]byte, 14+20+8)
	b[12], b[13] = 0x08, 0x00
	b[14] = 0x45
	b[14+9] = 17
	binary.BigEndian.PutUint16(b[14+20+2:], dport)
	return b
}

func TestLoadCollectionTailCalls(t *testing.T) {
	c := newTestConn(t)
	coll, err := c.LoadCollection(fixture("tailcall"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	jt := coll.Maps["jump_table"]
	for slot, name := range []string{"slot0", "slot1"} {
		if err := jt.Update(u32le(uint32(slot)), u32le(uint32(coll.Programs[name].FD())), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	// A value that is not a program descriptor of this connection.
	if err := jt.Update(u32le(2), u32le(12345), UpdateAny); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Update with a non-program value: %v, want ErrInvalid", err)
	}
	want := []uint32{100, 200, 1, 1}
	for extra := range 4 {
		pkt := make([]byte, 14+20+extra)
		pkt[12] = 0x08 // IPv4: the kernel needs the 20-byte header
		ret, err := coll.Programs["entry"].Run(&RunOptions{Data: pkt})
		if err != nil {
			t.Fatal(err)
		}
		if ret != want[(20+extra)%4] {
			t.Errorf("len %d: %d, want %d", len(pkt), ret, want[(20+extra)%4])
		}
	}
}

func TestProgramReopenAndDump(t *testing.T) {
	c := newTestConn(t)
	coll, err := c.LoadCollection(fixture("counter"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	p := coll.Programs["count_proto"]
	ro, err := p.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Reopen(ModeReadWrite); !errors.Is(err, ErrPermission) || !errors.Is(err, unix.EPERM) {
		t.Fatalf("Reopen(rw) of a read-only program: %v, want EPERM", err)
	}
	if _, err := ro.Run(&RunOptions{Data: ethFrame()}); err != nil {
		t.Fatalf("Run through read-only: %v", err)
	}
	wo, err := p.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	if _, err := wo.Run(&RunOptions{Data: ethFrame()}); !errors.Is(err, ErrPermission) {
		t.Fatalf("Run through write-only: %v, want EPERM", err)
	}
	insns, lines, err := ro.Dump()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := ro.Info()
	if len(insns) != 8*info.InsnCount || len(lines) == 0 {
		t.Fatalf("Dump: %d bytes for %d insns, %d lines", len(insns), info.InsnCount, len(lines))
	}
	found := false
	for _, l := range lines {
		if strings.Contains(l, "counter.bpf.c:") && strings.Contains(l, "bpf_map_lookup_elem") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no source line naming the lookup: %v", lines)
	}
}

func TestPinProgram(t *testing.T) {
	s := startServerPins(t)
	c := s.dial(t)
	coll, err := c.LoadCollection(fixture("loop"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	if err := c.Pin(coll.Programs["squares"], "squares", 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := c.OpenPinnedProgram("squares", ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if ret, err := p.Run(&RunOptions{Data: ethFrame()}); err != nil || ret != 285 {
		t.Fatalf("pinned squares: %d, %v; want 285", ret, err)
	}
	obj, err := c.OpenPinned("squares", ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if _, ok := obj.(*Program); !ok {
		t.Fatalf("OpenPinned returned %T", obj)
	}
}

// TestVerifierLogNamesSourceLine loads the clang-built port filter with its
// "ports" map write-only: the lookup is refused, and the log names the
// instruction, shows it disassembled, the registers, and the C line.
func TestVerifierLogNamesSourceLine(t *testing.T) {
	c := newTestConn(t)
	spec, err := ebpf.LoadCollectionSpec(fixture("xdp_ports"))
	if err != nil {
		t.Fatal(err)
	}
	ports := newTestMap(t, c, MapSpec{Type: Hash, KeySize: 2, ValueSize: 1, MaxEntries: 256})
	stats := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	wo, err := ports.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	insns := append(asm.Instructions(nil), spec.Programs["xdp_ports"].Instructions...)
	if err := insns.AssociateMap("ports", wo); err != nil {
		t.Fatal(err)
	}
	if err := insns.AssociateMap("stats", stats); err != nil {
		t.Fatal(err)
	}
	_, err = c.LoadProgram(ProgramSpec{Type: XDP, Instructions: insns, License: "GPL"})
	var ve *VerifierError
	if !errors.As(err, &ve) || ve.Errno != unix.EACCES {
		t.Fatalf("LoadProgram = %v, want EACCES", err)
	}
	for _, want := range []string{
		"xdp_ports.bpf.c:",                    // the C source line
		"bpf_map_lookup_elem(&ports, &dport)", // its text
		"call bpf_map_lookup_elem#1",          // the instruction disassembled
		"R1",                                  // register states
		"write-only",                          // the reason
	} {
		if !strings.Contains(ve.Log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", ve.Log)
	}
}

// TestLoadCollectionOptions binds an existing read-only map in place of an
// ELF map: the writing program is refused (EACCES) and nothing the failed
// load created stays; a reading program loads alone.
func TestLoadCollectionOptions(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	base := s.stats(t)
	counts := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 512})
	ro, err := counts.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	_, err = c.LoadCollectionWithOptions(fixture("seccomp_policy"),
		&CollectionOptions{MapReplacements: map[string]*Map{"counts": ro}})
	var ve *VerifierError
	if !errors.As(err, &ve) || !errors.Is(err, unix.EACCES) {
		t.Fatalf("policy counting through a read-only map: %v, want EACCES", err)
	}
	var en unix.Errno
	if !errors.As(err, &en) || en != unix.EACCES {
		t.Fatalf("errors.As(err, &errno) = %v", en)
	}
	if _, err := c.LoadCollectionWithOptions(fixture("seccomp_policy"), &CollectionOptions{Programs: []string{"nope"}}); err == nil {
		t.Fatal("a missing program loaded")
	}
	// The read-write map works, and the collection leaves it open.
	coll, err := c.LoadCollectionWithOptions(fixture("seccomp_policy"),
		&CollectionOptions{MapReplacements: map[string]*Map{"counts": counts}, Programs: []string{"policy"}})
	if err != nil {
		t.Fatal(err)
	}
	if coll.Maps["counts"] != counts {
		t.Fatal("the replacement is not the collection's map")
	}
	if err := coll.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := counts.Info(); err != nil {
		t.Fatalf("collection closed a map it borrowed: %v", err)
	}
	counts.Close()
	ro.Close()
	s.waitStats(t, base)
}

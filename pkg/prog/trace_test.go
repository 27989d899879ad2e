package prog_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/pkg/prog"
)

// printkProg stores fmt (NUL-terminated) on the stack and calls
// bpf_trace_printk(fmt, len, a1, a2, a3), returning its result.
func printkProg(format string, args ...int64) asm.Instructions {
	b := append([]byte(format), 0)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	var insns asm.Instructions
	base := -len(b)
	for i := 0; i < len(b); i += 8 {
		var v int64
		for j := 7; j >= 0; j-- {
			v = v<<8 | int64(b[i+j])
		}
		insns = append(insns, asm.LoadImm(asm.R1, v, asm.DWord), asm.StoreMem(asm.R10, int16(base+i), asm.R1, asm.DWord))
	}
	insns = append(insns, asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, int32(base)), asm.Mov.Imm(asm.R2, int32(len(format)+1)))
	for i, a := range args {
		insns = append(insns, asm.LoadImm(asm.R3+asm.Register(i), a, asm.DWord))
	}
	return append(insns, asm.FnTracePrintk.Call(), asm.Return())
}

func TestTracePrintk(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	env := &prog.Env{Trace: func(name, msg string) {
		mu.Lock()
		lines = append(lines, name+": "+msg)
		mu.Unlock()
	}}
	tests := []struct {
		name    string
		format  string
		args    []int64
		want    string
		license string
		loadErr bool
		ret     int64
	}{
		{name: "ints", format: "n=%d u=%u x=%x", args: []int64{-5, 7, 255}, want: "n=-5 u=7 x=ff", license: "GPL"},
		{name: "long", format: "%lld %llx %%", args: []int64{-1 << 40, 1 << 36}, want: "-1099511627776 1000000000 %", license: "GPL"},
		{name: "bad verb", format: "%q", args: []int64{1}, license: "GPL", ret: -22},
		{name: "too many args", format: "%d %d %d %d", args: []int64{1, 2, 3}, license: "GPL", ret: -22},
		{name: "not GPL", format: "x", license: "MIT", loadErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			lines = nil
			mu.Unlock()
			p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, printkProg(tt.format, tt.args...)),
				License: tt.license, Name: "tracer"}, env)
			if tt.loadErr {
				if err == nil || !strings.Contains(err.Error(), "GPL") {
					t.Fatalf("Load = %v, want the GPL-only refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.TestRun(&prog.RunOptions{Data: make([]byte, 14)})
			if err != nil {
				t.Fatal(err)
			}
			if tt.ret != 0 {
				if int64(res.Ret) != tt.ret || len(lines) != 0 {
					t.Fatalf("returned %d and printed %q, want %d and nothing", int64(res.Ret), lines, tt.ret)
				}
				return
			}
			if len(lines) != 1 || lines[0] != "tracer: "+tt.want || int(res.Ret) != len(tt.want) {
				t.Fatalf("printed %q, returned %d; want %q", lines, res.Ret, tt.want)
			}
		})
	}
}

// TestTracePrintkRateLimit: a program printing in a loop is cut at the
// burst, and the next line that goes out says how many were dropped.
func TestTracePrintkRateLimit(t *testing.T) {
	var lines []string
	env := &prog.Env{Trace: func(_, msg string) { lines = append(lines, msg) }}
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, printkProg("tick")),
		License: "GPL", Name: "ticker"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.TestRun(&prog.RunOptions{Data: make([]byte, 14), Repeat: 1000}); err != nil {
		t.Fatal(err)
	}
	if len(lines) < 100 || len(lines) > 110 {
		t.Fatalf("%d lines went out of 1000, want about the burst of 100", len(lines))
	}
}

// TestTestRunTimeBudget: a huge repeat count stops with EINTR instead of
// holding a daemon core for minutes.
func TestTestRunTimeBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("takes MaxTestRunTime")
	}
	loop := asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Add.Imm(asm.R0, 1).WithSymbol("l"),
		asm.JLT.Imm(asm.R0, 100000, "l"),
		asm.Return(),
	}
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, loop), License: "GPL"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 2^30 repeats of a 100000-instruction loop would take days: EINTR
	// says the time budget stopped them (how soon is not asserted: timings
	// depend on the machine's load).
	_, err = p.TestRun(&prog.RunOptions{Data: make([]byte, 14), Repeat: 1 << 30})
	if !errors.Is(err, prog.ErrInterrupted) || !errors.Is(err, unix.EINTR) {
		t.Fatalf("TestRun = %v, want EINTR", err)
	}
}

// TestManyLookupsInOneRun: a program may find map entries any number of
// times in one run (the kernel has no limit); each found value is memory
// the program addresses.
func TestManyLookupsInOneRun(t *testing.T) {
	m, err := maps.New(maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range uint32(64) {
		m.Update(binary.LittleEndian.AppendUint32(nil, i), make([]byte, 8), maps.UpdateAny)
	}
	const calls = 5000
	p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, lookupLoop(0, calls)),
		Maps: []prog.MapRef{{Map: m, Read: true}}, License: "GPL"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.TestRun(&prog.RunOptions{Data: make([]byte, 14)})
	if err != nil || res.Ret != calls {
		t.Fatalf("TestRun = %v, %v; want %d hits", res, err, calls)
	}
}

// TestRunSeccompAllocs: deciding a syscall (the daemon's hot path: array
// and hash lookups, an atomic add) allocates nothing once warm.
func TestRunSeccompAllocs(t *testing.T) {
	f := loadFixture(t, "seccomp_policy")
	p := f.progs["policy"]
	if err := f.maps["denied"].Update(binary.LittleEndian.AppendUint32(nil, 39), binary.LittleEndian.AppendUint32(nil, 13), maps.UpdateAny); err != nil {
		t.Fatal(err)
	}
	var data [prog.SeccompDataSize]byte
	binary.LittleEndian.PutUint32(data[0:], 39) // getpid: denied with EACCES
	task := &prog.StaticTask{PID: 1, TGID: 1}
	ret, err := p.RunSeccomp(&data, task)
	if err != nil || ret != prog.SeccompRetErrno|13 {
		t.Fatalf("RunSeccomp = %#x, %v", ret, err)
	}
	if n := testing.AllocsPerRun(1000, func() { p.RunSeccomp(&data, task) }); n != 0 {
		t.Fatalf("RunSeccomp allocates %.1f times per call", n)
	}
}

// TestTracePrintkWriteOnlyMap: a program holding a map through a
// write-only handle cannot read it through trace_printk's %s (issue 9:
// modes are confidentiality too). The same program through a read-write
// handle prints the value, so the test sees the difference.
func TestTracePrintkWriteOnlyMap(t *testing.T) {
	m, err := maps.New(maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Update(make([]byte, 4), []byte("hunter2\x00\x00\x00\x00\x00\x00\x00\x00\x00"), maps.UpdateAny); err != nil {
		t.Fatal(err)
	}
	fmtProg := printkProg("%s")
	// printkProg ends with call, exit: load the map value into r3 first.
	insns := append(asm.Instructions{}, fmtProg[:len(fmtProg)-2]...)
	insns = append(insns, asm.LoadMapValue(asm.R3, 0, 0), asm.FnTracePrintk.Call(), asm.Return())
	for _, tt := range []struct {
		name        string
		read, write bool
		want        string
	}{
		{"write-only handle", false, true, "(fault)"},
		{"read-write handle", true, true, "hunter2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var lines []string
			p, err := prog.Load(&prog.Spec{Type: prog.SocketFilter, Insns: marshalInsns(t, insns), License: "GPL",
				Maps: []prog.MapRef{{Map: m, Read: tt.read, Write: tt.write}}},
				&prog.Env{Trace: func(_, msg string) { lines = append(lines, msg) }})
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.TestRun(&prog.RunOptions{Data: make([]byte, 14)})
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != 1 || lines[0] != tt.want || res.Ret != uint64(len(tt.want)) {
				t.Fatalf("printed %q, returned %d; want %q", lines, res.Ret, tt.want)
			}
		})
	}
}

package client

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// perfProgram outputs the first 8 bytes of the packet (the IP header on)
// to perf event array m's slot of the CPU it runs on, returning the
// helper's result.
func perfProgram(t *testing.T, c *Conn, m *Map) *Program {
	t.Helper()
	p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 8), asm.FnSkbLoadBytes.Call(),
		asm.Mov.Reg(asm.R1, asm.R6), asm.LoadMapPtr(asm.R2, m.FD()),
		asm.LoadImm(asm.R3, 0xffffffff, asm.DWord), // BPF_F_CURRENT_CPU
		asm.Mov.Reg(asm.R4, asm.R10), asm.Add.Imm(asm.R4, -8), asm.Mov.Imm(asm.R5, 8),
		asm.FnPerfEventOutput.Call(),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newPerfMap(t *testing.T, c *Conn) *Map {
	t.Helper()
	m, err := c.NewMap(MapSpec{Type: PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: uint32(PossibleCPUs())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestPerfReader: samples a program writes come out of a PerfReader in
// order, with their CPU and without round trips; Read waits for them,
// honours the deadline and is interrupted by Close; PollFD polls readable
// when a sample arrives.
func TestPerfReader(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m := newPerfMap(t, c)
	p := perfProgram(t, c, m)
	r, err := NewPerfReader(m, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.BufferSize() != 4096 {
		t.Fatalf("BufferSize %d", r.BufferSize())
	}
	r.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with no sample: %v", err)
	}
	r.SetDeadline(time.Time{})
	got := make(chan PerfRecord, 1)
	go func() {
		rec, err := r.Read()
		if err != nil {
			t.Error(err)
		}
		got <- rec
	}()
	if res, err := p.Run(&RunOptions{Data: ringPacket(0x45)}); err != nil || res != 0 {
		t.Fatal(res, err)
	}
	select {
	case rec := <-got:
		// 8 bytes of sample, padded to 12 so the record is 8-aligned.
		if len(rec.RawSample) != 12 || rec.RawSample[0] != 0x45 || rec.LostSamples != 0 || rec.CPU < 0 || rec.CPU >= PossibleCPUs() {
			t.Fatalf("record %+v", rec)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not wake up for a sample")
	}
	// PollFD: readable once a sample is there.
	if _, err := p.Run(&RunOptions{Data: ringPacket(0x45 | 1<<8)}); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(r.PollFD()), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
		t.Fatalf("poll of PollFD: %d %v", n, err)
	}
	for i := uint64(2); i <= 100; i++ {
		if _, err := p.Run(&RunOptions{Data: ringPacket(0x45 | i<<8)}); err != nil {
			t.Fatal(err)
		}
	}
	before := sentCount(c)
	var rec PerfRecord
	seen := 0
	for i := uint64(1); i <= 100; i++ {
		if err := r.ReadInto(&rec); err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint64(rec.RawSample); v>>8 != i && PossibleCPUs() == 1 {
			t.Fatalf("sample %d: %x", i, rec.RawSample)
		}
		seen++
	}
	if n := sentCount(c) - before; n != 0 {
		t.Fatalf("%d round trips while reading 100 samples", n)
	}
	if rec.Remaining != 0 {
		t.Fatalf("remaining %d after draining", rec.Remaining)
	}
	done := make(chan error, 1)
	go func() { _, err := r.Read(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrReaderClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt Read")
	}
	if err := r.Close(); !errors.Is(err, ErrReaderClosed) {
		t.Fatalf("second Close: %v", err)
	}
	// Closing detached the rings: the program's output finds empty slots.
	if res, err := p.Run(&RunOptions{Data: ringPacket(0x45)}); err != nil || int32(res) != -int32(unix.ENOENT) {
		t.Fatalf("output after Close: %d %v, want -ENOENT", int32(res), err)
	}
}

// TestPerfReaderLost: samples that do not fit are counted and reported
// in a lost record, as the kernel's PERF_RECORD_LOST.
func TestPerfReaderLost(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m := newPerfMap(t, c)
	p := perfProgram(t, c, m)
	r, err := NewPerfReaderWithOptions(m, 1, PerfReaderOptions{WakeupEvents: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const n = 300
	full := 0
	for i := 0; i < n; i++ {
		res, err := p.Run(&RunOptions{Data: ringPacket(0x45)})
		if err != nil {
			t.Fatal(err)
		}
		if int32(res) == -int32(unix.ENOSPC) {
			full++
		}
	}
	if full == 0 {
		t.Fatal("a one-page ring took 300 samples")
	}
	samples, lost := 0, uint64(0)
	r.SetDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		rec, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.LostSamples != 0 {
			lost += rec.LostSamples
		} else {
			samples++
		}
		if samples+int(lost) == n-full {
			// The loss is reported before the next sample: write one.
			p.Run(&RunOptions{Data: ringPacket(0x45)})
		}
	}
	if lost != uint64(full) || samples != n-full+1 {
		t.Fatalf("read %d samples and %d lost, want %d and %d", samples, lost, n-full+1, full)
	}
}

// TestPerfReaderAccess: a reader needs write mode and a perf event array;
// a reader whose rings are detached by others (its descriptor revoked, a
// second reader taking the slots) reads what they held, then gets EBADF.
func TestPerfReaderAccess(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m := newPerfMap(t, c)
	p := perfProgram(t, c, m)
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := NewPerfReader(ro, 4096); !errors.Is(err, ErrPermission) {
		t.Fatalf("reader on a read-only descriptor: %v", err)
	}
	arr, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Close()
	if _, err := NewPerfReader(arr, 4096); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reader on an array: %v", err)
	}
	if err := m.Update([]byte{0, 0, 0, 0}, []byte{1, 0, 0, 0}, 0); !errors.Is(err, ErrBadDescriptor) {
		t.Fatalf("syscall-side update: %v", err)
	}
	tests := []struct {
		name string
		cut  func(t *testing.T, rw *Map)
	}{
		{name: "descriptor revoked", cut: func(t *testing.T, rw *Map) {
			if err := rw.Revoke(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "slots taken by another reader", cut: func(t *testing.T, rw *Map) {
			r2, err := NewPerfReader(m, 4096)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r2.Close() })
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rw, err := m.Reopen(ModeReadWrite)
			if err != nil {
				t.Fatal(err)
			}
			defer rw.Close()
			r, err := NewPerfReader(rw, 4096)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, err := p.Run(&RunOptions{Data: ringPacket(0x45)}); err != nil {
				t.Fatal(err)
			}
			tc.cut(t, rw)
			r.SetDeadline(time.Now().Add(5 * time.Second))
			if rec, err := r.Read(); err != nil || rec.RawSample[0] != 0x45 {
				t.Fatalf("the sample written before: %+v %v", rec, err)
			}
			if _, err := r.Read(); !errors.Is(err, ErrBadDescriptor) {
				t.Fatalf("Read with every ring detached: %v", err)
			}
		})
	}
}

// TestPerfReaderConcurrentWriters: programs running on two goroutines
// while a reader reads: every sample read is one a program wrote, whole,
// never twice, and every successful output is read.
func TestPerfReaderConcurrentWriters(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m := newPerfMap(t, c)
	p := perfProgram(t, c, m)
	r, err := NewPerfReaderWithOptions(m, 8192, PerfReaderOptions{WakeupEvents: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const writers, each = 2, 400
	ok := make(chan int, writers)
	for w := 0; w < writers; w++ {
		go func() {
			n := 0
			for i := 0; i < each; i++ {
				res, err := p.Run(&RunOptions{Data: ringPacket(0x45 | uint64(w)<<8 | uint64(i)<<16)})
				if err != nil {
					t.Error(err)
					break
				}
				if res == 0 {
					n++
				}
			}
			ok <- n
		}()
	}
	want, done := 0, 0
	seen := make(map[uint64]bool)
	var rec PerfRecord
	give := time.Now().Add(30 * time.Second)
	for done < writers || len(seen) < want {
		if time.Now().After(give) {
			t.Fatalf("after 30s: read %d samples, %d outputs succeeded so far", len(seen), want)
		}
		select {
		case n := <-ok:
			want += n
			done++
		default:
		}
		r.SetDeadline(time.Now().Add(20 * time.Millisecond))
		err := r.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.LostSamples != 0 {
			continue
		}
		v := binary.LittleEndian.Uint64(rec.RawSample)
		if len(rec.RawSample) != 12 || binary.LittleEndian.Uint32(rec.RawSample[8:]) != 0 ||
			v&0xff != 0x45 || (v>>8)&0xff >= writers || v>>16 >= each || seen[v] {
			t.Fatalf("sample %x was never written (or read twice)", rec.RawSample)
		}
		seen[v] = true
	}
	if len(seen) != want {
		t.Fatalf("read %d samples, %d outputs succeeded", len(seen), want)
	}
}

package client

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
)

// ringProgram outputs the first 8 bytes of the packet (after the
// Ethernet header the socket-filter test run strips, the IP header) to
// ring buffer m as one record.
func ringProgram(t *testing.T, c *Conn, m *Map) *Program {
	t.Helper()
	p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 8), asm.FnSkbLoadBytes.Call(),
		asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
		asm.Mov.Imm(asm.R3, 8), asm.Mov.Imm(asm.R4, 0), asm.FnRingbufOutput.Call(),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func ringPacket(v uint64) []byte {
	pkt := make([]byte, 14+20)
	binary.LittleEndian.PutUint64(pkt[14:], v)
	pkt[12], pkt[13] = 0x08, 0x00
	pkt[14] = 0x45
	return pkt
}

// TestRingbufReader: records a program writes through the daemon come out
// of a RingbufReader in order, without round trips; Read waits for them,
// honours the deadline and is interrupted by Close.
func TestRingbufReader(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m, err := c.NewMap(MapSpec{Type: RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := ringProgram(t, c, m)
	r, err := NewRingbufReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.BufferSize() != 4096 {
		t.Fatalf("BufferSize %d", r.BufferSize())
	}
	// Nothing yet: the deadline passes.
	r.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read on an empty ring: %v", err)
	}
	r.SetDeadline(time.Time{})
	// A Read waiting for a record gets it when the program writes it.
	got := make(chan RingbufRecord, 1)
	go func() {
		rec, err := r.Read()
		if err != nil {
			t.Error(err)
		}
		got <- rec
	}()
	time.Sleep(20 * time.Millisecond)
	if _, err := p.Run(&RunOptions{Data: ringPacket(0x45)}); err != nil {
		t.Fatal(err)
	}
	select {
	case rec := <-got:
		if binary.LittleEndian.Uint64(rec.RawSample)&0xff != 0x45 {
			t.Fatalf("record %x", rec.RawSample)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not wake up for a record")
	}
	// Many records, in order, with no round trip per record.
	for i := uint64(1); i <= 100; i++ {
		if _, err := p.Run(&RunOptions{Data: ringPacket(0x45 | i<<8)}); err != nil {
			t.Fatal(err)
		}
	}
	before := sentCount(c)
	var rec RingbufRecord
	for i := uint64(1); i <= 100; i++ {
		if err := r.ReadInto(&rec); err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint64(rec.RawSample); v>>8 != i {
			t.Fatalf("record %d: %x", i, rec.RawSample)
		}
	}
	if n := sentCount(c) - before; n != 0 {
		t.Fatalf("%d round trips while reading 100 records", n)
	}
	if rec.Remaining != 0 || r.AvailableBytes() != 0 {
		t.Fatalf("remaining %d, available %d after draining", rec.Remaining, r.AvailableBytes())
	}
	// Close interrupts a waiting Read.
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
}

// TestRingbufObserverAndRevocation: a read-only holder observes records
// without consuming them (its own position); when another descriptor is
// revoked the storage moves and both readers follow it; a reader whose
// descriptor is revoked gets EBADF.
func TestRingbufObserverAndRevocation(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m, err := c.NewMap(MapSpec{Type: RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := ringProgram(t, c, m)
	consumer, err := NewRingbufReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	observer, err := NewRingbufReader(ro)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	run := func(v uint64) {
		t.Helper()
		if _, err := p.Run(&RunOptions{Data: ringPacket(0x45 | v<<8)}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(r *RingbufReader) uint64 {
		t.Helper()
		r.SetDeadline(time.Now().Add(5 * time.Second))
		rec, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(rec.RawSample) >> 8
	}
	run(1)
	if v := read(observer); v != 1 {
		t.Fatalf("observer read %d", v)
	}
	if consumer.AvailableBytes() != 16 {
		t.Fatalf("the observer consumed: consumer sees %d bytes", consumer.AvailableBytes())
	}
	if v := read(consumer); v != 1 {
		t.Fatalf("consumer read %d", v)
	}
	// Revoking another descriptor moves the storage; both follow.
	other, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Mmap(nil); err != nil {
		t.Fatal(err)
	}
	if err := other.Revoke(); err != nil {
		t.Fatal(err)
	}
	run(2)
	if v := read(consumer); v != 2 {
		t.Fatalf("consumer after the move read %d", v)
	}
	if v := read(observer); v != 2 {
		t.Fatalf("observer after the move read %d", v)
	}
	// The observer's descriptor revoked: it cannot follow the next move.
	if err := ro.Revoke(); err != nil {
		t.Fatal(err)
	}
	run(3)
	observer.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := observer.Read(); !errors.Is(err, ErrBadDescriptor) && !errors.Is(err, ErrClosed) {
		t.Fatalf("revoked observer: %v", err)
	}
	if v := read(consumer); v != 3 {
		t.Fatalf("consumer read %d", v)
	}
}

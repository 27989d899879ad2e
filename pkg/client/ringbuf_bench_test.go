package client

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
)

// ringLoop outputs 64 records of 16 bytes to ring buffer fd per run.
func ringLoop(fd int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R7, 0),
		asm.StoreMem(asm.R10, -8, asm.R7, asm.DWord),
		asm.StoreMem(asm.R10, -16, asm.R7, asm.DWord).WithSymbol("loop"),
		asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -16),
		asm.Mov.Imm(asm.R3, 16), asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.Add.Imm(asm.R7, 1),
		asm.JLT.Imm(asm.R7, 64, "loop"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// BenchmarkRingbufRecords measures records per second from a program to
// a Go consumer through a ring buffer, bpfd (program test runs through
// the daemon, RingbufReader) against the kernel (BPF_PROG_TEST_RUN,
// cilium/ebpf's ringbuf.Reader) in the same run: 16-byte records, 64 a
// run, 256 KiB rings, the consumer reading concurrently. Records a full
// ring refused are not counted (records/s counts what the consumer got).
func BenchmarkRingbufRecords(b *testing.B) {
	const ringSize, perRun, repeat = 256 << 10, 64, 16
	type side struct {
		run  func() error
		read func() error
		stop func()
	}
	measure := func(b *testing.B, sd side) {
		var got atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if err := sd.read(); err != nil {
					return
				}
				got.Add(1)
			}
		}()
		b.ResetTimer()
		start := time.Now()
		for b.Loop() {
			if err := sd.run(); err != nil {
				b.Fatal(err)
			}
		}
		// Let the consumer drain what was produced.
		for last := int64(-1); got.Load() != last; time.Sleep(10 * time.Millisecond) {
			last = got.Load()
		}
		elapsed := time.Since(start)
		sd.stop()
		<-done
		b.ReportMetric(float64(got.Load())/elapsed.Seconds(), "records/s")
		b.ReportMetric(float64(got.Load())/float64(b.N*perRun*repeat), "delivered")
	}
	pkt := ringPacket(1)
	b.Run("bpfd", func(b *testing.B) {
		s := startServer(b)
		c := s.dial(b)
		m, err := c.NewMap(MapSpec{Type: RingBuf, MaxEntries: ringSize})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Instructions: ringLoop(m.FD())})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		r, err := NewRingbufReader(m)
		if err != nil {
			b.Fatal(err)
		}
		var rec RingbufRecord
		b.ReportAllocs()
		measure(b, side{
			run:  func() error { _, err := p.Run(&RunOptions{Data: pkt, Repeat: repeat}); return err },
			read: func() error { return r.ReadInto(&rec) },
			stop: func() { r.Close() },
		})
	})
	b.Run("kernel", func(b *testing.B) {
		if ok, why := kernelAvailable(); !ok {
			b.Skip(why)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: ringSize})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: ringLoop(m.FD())})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		r, err := ringbuf.NewReader(m)
		if err != nil {
			b.Fatal(err)
		}
		var rec ringbuf.Record
		b.ReportAllocs()
		measure(b, side{
			run:  func() error { _, _, err := p.Benchmark(pkt, repeat, nil); return err },
			read: func() error { return r.ReadInto(&rec) },
			stop: func() { r.Close() },
		})
	})
}

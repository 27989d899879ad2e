package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/pkg/demux"

	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Benchmark sizes: a 4-byte key and an 8-byte value, 64k entries.
const (
	benchEntries = 1 << 16
	// echoSize is the size of a lookup request (header, ElemAttr, key);
	// the echo sends it both ways.
	echoSize = wire.ReqHeaderSize + wire.ElemAttrSize + 4
)

// latencies records per-operation durations for a median.
type latencies struct{ d []time.Duration }

// reset empties l, keeping room for up to 1<<20 samples (b.Loop decides
// the iteration count as it goes, so size for the most we keep).
func (l *latencies) reset() {
	if l.d == nil {
		l.d = make([]time.Duration, 0, 1<<20)
	}
	l.d = l.d[:0]
}

func (l *latencies) add(d time.Duration) {
	if len(l.d) < cap(l.d) {
		l.d = append(l.d, d)
	}
}

func (l *latencies) median() float64 {
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return float64(l.d[len(l.d)/2].Nanoseconds())
}

// BenchmarkCore runs, in one run, the raw SOCK_SEQPACKET echo between two
// processes (the floor), single Lookup and Update round trips to a daemon
// in another process, pipelined lookups on one connection, a batch lookup
// of 64k elements, and, when bpf(2) is available, the kernel's own lookup
// and batch lookup on the same sizes. EchoLookupInterleaved alternates echo
// and lookup for a ratio that machine load cannot skew; Summary reports the
// ratios. Round trips go process to process: the daemon runs in a child
// (the in-process demux server, re-executed), like the echo.
func BenchmarkCore(b *testing.B) {
	path := startDaemonChild(b)
	c, err := Dial(path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: benchEntries})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	// Round trips are what this benchmark measures (BenchmarkSharedLookup
	// measures reads through the mapped storage).
	m.SetSharedMemoryReads(false)
	keys, values := make([]byte, 4*benchEntries), make([]byte, 8*benchEntries)
	for i := range benchEntries {
		binary.LittleEndian.PutUint32(keys[4*i:], uint32(i))
		binary.LittleEndian.PutUint64(values[8*i:], uint64(i))
	}
	if n, err := m.BatchUpdate(keys, values, nil); err != nil || n != benchEntries {
		b.Fatalf("fill: %d, %v", n, err)
	}

	type result struct{ nsOp, p50 float64 }
	res := map[string]result{}
	var lat latencies
	record := func(name string, b *testing.B, perOp int) {
		r := result{nsOp: float64(b.Elapsed().Nanoseconds()) / float64(b.N*perOp), p50: lat.median()}
		res[name] = r
		if r.p50 > 0 {
			b.ReportMetric(r.p50, "p50-ns")
		}
	}

	b.Run("Echo", func(b *testing.B) {
		sc := startEchoChild(b)
		msg, buf := make([]byte, echoSize), make([]byte, wire.MaxMessage)
		oob, fds := make([]byte, scmrights.OOBSize(wire.MaxFDs)), make([]int, 0, wire.MaxFDs)
		lat.reset()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			t0 := time.Now()
			if err := sc.Send(msg, nil); err != nil {
				b.Fatal(err)
			}
			if n, _, _, err := sc.Recv(buf, oob, fds); err != nil || n != echoSize {
				b.Fatal(n, err)
			}
			lat.add(time.Since(t0))
		}
		record("echo", b, 1)
	})
	// Echo and Lookup alternate op by op, so that load from elsewhere on
	// the machine (which comes in phases) hits both alike: the fairest
	// ratio to the floor.
	var lookupVsEcho []float64 // one per run (-count)
	b.Run("EchoLookupInterleaved", func(b *testing.B) {
		sc := startEchoChild(b)
		msg, buf := make([]byte, echoSize), make([]byte, wire.MaxMessage)
		oob, fds := make([]byte, scmrights.OOBSize(wire.MaxFDs)), make([]int, 0, wire.MaxFDs)
		k, v := make([]byte, 4), make([]byte, 8)
		var echoLat latencies
		echoLat.reset()
		lat.reset()
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			t0 := time.Now()
			if err := sc.Send(msg, nil); err != nil {
				b.Fatal(err)
			}
			if n, _, _, err := sc.Recv(buf, oob, fds); err != nil || n != echoSize {
				b.Fatal(n, err)
			}
			t1 := time.Now()
			binary.LittleEndian.PutUint32(k, i%benchEntries)
			i++
			if err := m.Lookup(k, v); err != nil {
				b.Fatal(err)
			}
			echoLat.add(t1.Sub(t0))
			lat.add(time.Since(t1))
		}
		e, l := echoLat.median(), lat.median()
		b.ReportMetric(e, "echo-p50-ns")
		b.ReportMetric(l, "lookup-p50-ns")
		if e > 0 {
			lookupVsEcho = append(lookupVsEcho, l/e)
			b.ReportMetric(l/e, "lookup/echo")
		}
	})
	b.Run("Lookup", func(b *testing.B) {
		k, v := make([]byte, 4), make([]byte, 8)
		lat.reset()
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			binary.LittleEndian.PutUint32(k, i%benchEntries)
			i++
			t0 := time.Now()
			if err := m.Lookup(k, v); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
		}
		record("lookup", b, 1)
	})
	b.Run("Update", func(b *testing.B) {
		k, v := make([]byte, 4), make([]byte, 8)
		lat.reset()
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			binary.LittleEndian.PutUint32(k, i%benchEntries)
			i++
			t0 := time.Now()
			if err := m.Update(k, v, UpdateExist); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
		}
		record("update", b, 1)
	})
	b.Run("PipelinedLookup", func(b *testing.B) {
		lat.reset()
		b.ReportAllocs()
		b.SetParallelism(8)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			k, v := make([]byte, 4), make([]byte, 8)
			i := uint32(0)
			for pb.Next() {
				binary.LittleEndian.PutUint32(k, i%benchEntries)
				i += 7
				if err := m.Lookup(k, v); err != nil {
					panic(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
	})
	b.Run("BatchLookup", func(b *testing.B) {
		kOut, vOut := make([]byte, 4*benchEntries), make([]byte, 8*benchEntries)
		lat.reset()
		b.ReportAllocs()
		for b.Loop() {
			var cur MapBatchCursor
			total := 0
			for {
				n, err := m.BatchLookup(&cur, kOut, vOut, nil)
				total += n
				if errors.Is(err, ErrKeyNotExist) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if total != benchEntries {
				b.Fatalf("batch walked %d", total)
			}
		}
		record("batch", b, benchEntries)
		b.ReportMetric(res["batch"].nsOp, "ns/elem")
	})

	km, kerr := kernelBenchMap()
	if km != nil {
		defer km.Close()
	}
	b.Run("KernelLookup", func(b *testing.B) {
		if kerr != nil {
			b.Skip("kernel oracle: " + kerr.Error())
		}
		k, v := make([]byte, 4), make([]byte, 8)
		lat.reset()
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			binary.LittleEndian.PutUint32(k, i%benchEntries)
			i++
			t0 := time.Now()
			if err := km.Lookup(k, v); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
		}
		record("klookup", b, 1)
	})
	b.Run("KernelBatchLookup", func(b *testing.B) {
		if kerr != nil {
			b.Skip("kernel oracle: " + kerr.Error())
		}
		kOut, vOut := make([]uint32, benchEntries), make([]uint64, benchEntries)
		lat.reset()
		b.ReportAllocs()
		for b.Loop() {
			var cur ebpf.MapBatchCursor
			total := 0
			for {
				n, err := km.BatchLookup(&cur, kOut, vOut, nil)
				total += n
				if errors.Is(err, ebpf.ErrKeyNotExist) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if total != benchEntries {
				b.Fatalf("kernel batch walked %d", total)
			}
		}
		record("kbatch", b, benchEntries)
		b.ReportMetric(res["kbatch"].nsOp, "ns/elem")
	})
	b.Run("Summary", func(b *testing.B) {
		for b.Loop() {
		}
		if r := medianOf(lookupVsEcho); r > 0 {
			b.ReportMetric(r, "lookup/echo-p50") // median over the runs
		}
		if e, l := res["echo"], res["lookup"]; e.nsOp > 0 && l.nsOp > 0 {
			b.ReportMetric(l.nsOp/e.nsOp, "lookup/echo-mean")
		}
		if k, bt := res["kbatch"], res["batch"]; k.nsOp > 0 && bt.nsOp > 0 {
			b.ReportMetric(bt.nsOp/k.nsOp, "batch/kernel")
		}
		if k, l := res["klookup"], res["lookup"]; k.nsOp > 0 {
			b.ReportMetric(l.nsOp/k.nsOp, "lookup/kernel")
		}
		b.ReportMetric(0, "ns/op")
	})
}

// kernelBenchMap returns a kernel hash map filled like the bpfd one, or
// why it cannot.
func kernelBenchMap() (*ebpf.Map, error) {
	if ok, why := kernelAvailable(); !ok {
		return nil, errors.New(why)
	}
	km, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: benchEntries})
	if err != nil {
		return nil, err
	}
	ks, vs := make([]uint32, benchEntries), make([]uint64, benchEntries)
	for i := range ks {
		ks[i], vs[i] = uint32(i), uint64(i)
	}
	if _, err := km.BatchUpdate(ks, vs, nil); err != nil {
		km.Close()
		return nil, err
	}
	return km, nil
}

// startEchoChild starts a child process echoing every SOCK_SEQPACKET
// message back and returns this end of the socketpair.
func startEchoChild(b *testing.B) *scmrights.Conn {
	b.Helper()
	a, c, err := socketpair()
	if err != nil {
		b.Fatal(err)
	}
	cf, err := c.File()
	c.Close()
	if err != nil {
		b.Fatal(err)
	}
	cmd := sameUserChild(b, "echo", []*os.File{cf})
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	cf.Close()
	b.Cleanup(func() {
		a.Close()
		cmd.Wait()
	})
	sc, err := scmrights.NewConn(a)
	if err != nil {
		b.Fatal(err)
	}
	return sc
}

// childEcho echoes messages on fd 3 until the peer closes, receiving and
// sending the way the daemon does.
func childEcho() error {
	uc, err := fdConn(3)
	if err != nil {
		return err
	}
	defer uc.Close()
	sc, err := scmrights.NewConn(uc)
	if err != nil {
		return err
	}
	buf := make([]byte, wire.MaxMessage)
	oob, fds := make([]byte, scmrights.OOBSize(wire.MaxFDs)), make([]int, 0, wire.MaxFDs)
	for {
		n, _, _, err := sc.Recv(buf, oob, fds)
		if err != nil || n == 0 {
			return nil
		}
		if err := sc.Send(buf[:n], nil); err != nil {
			return nil
		}
	}
}

// startDaemonChild runs the daemon in a child process (so round trips are
// process to process, like the echo) and returns its socket path.
func startDaemonChild(b *testing.B) string {
	b.Helper()
	dir := sharedDir(b)
	path := filepath.Join(dir, "bpfd.sock")
	cmd := sameUserChild(b, "daemon", nil, socketEnvTest+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		b.Fatalf("daemon child: %q, %v", line, err)
	}
	return path
}

// childDaemon serves on $BPFD_CLIENT_TEST_SOCKET until stdin closes;
// $BPFD_CLIENT_TEST_MEMQUOTA ("MEMORY,MAPMEMORY") sets the default quota's
// memory limits.
func childDaemon() error {
	// Bulk work at the nice value bpfd gives it (the daemon's
	// --bulk-nice default).
	cfg := &demux.Config{Logger: zap.NewNop(), Sched: sched.Config{Nice: sched.DefaultNice}}
	if q := os.Getenv(memQuotaEnv); q != "" {
		var mem, mapMem uint64
		if _, err := fmt.Sscanf(q, "%d,%d", &mem, &mapMem); err != nil {
			return fmt.Errorf("%s=%q: %w", memQuotaEnv, q, err)
		}
		cfg.DefaultQuota = demux.Quota{Memory: mem, MapMemory: mapMem}
	}
	s, err := serveWith(os.Getenv(socketEnvTest), cfg)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	var b [1]byte
	os.Stdin.Read(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

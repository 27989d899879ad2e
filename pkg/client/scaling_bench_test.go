package client

import (
	"encoding/binary"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/scmrights"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// scalingUpdates is how many updates one measurement makes in all.
const scalingUpdates = 1 << 15

// BenchmarkUpdateScaling measures hash updates from one client and from
// two clients at once (each on its own connection and goroutine, distinct
// key ranges), through a daemon in another process, the same from one
// and two raw socket echoes (the transport's floor), and the kernel's
// bpf(2) updates from one and two threads on a map of the same shape, in
// the same run. It reports the two-client speed-up (issue 10 asks for
// ≥ 1.7 on a 2-core machine) as the median over b.N alternating
// measurements, and the kernel's in the same run.
func BenchmarkUpdateScaling(b *testing.B) {
	path := startDaemonChild(b)
	var clients [2]*Conn
	for i := range clients {
		c, err := Dial(path)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	m, err := clients[0].NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: benchEntries})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	// The second client's own descriptor of the same map.
	m2, err := clients[1].ImportMap(m.FD())
	if err != nil {
		b.Fatal(err)
	}
	defer m2.Close()
	bpfdMaps := []func(k, v []byte) error{
		func(k, v []byte) error { return m.Update(k, v, UpdateAny) },
		func(k, v []byte) error { return m2.Update(k, v, UpdateAny) },
	}
	var kernelMaps []func(k, v []byte) error
	if km, err := kernelBenchMap(); err != nil {
		b.Logf("kernel baseline skipped: %v", err)
	} else {
		defer km.Close()
		u := func(k, v []byte) error { return km.Update(k, v, 0) }
		kernelMaps = []func(k, v []byte) error{u, u}
	}

	// run makes scalingUpdates updates from the first `threads` updaters
	// at once and returns the wall time.
	run := func(b *testing.B, up []func(k, v []byte) error, threads int) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for g := range threads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, v := make([]byte, 4), make([]byte, 8)
				base := uint32(g) << 14
				for i := range scalingUpdates / threads {
					binary.LittleEndian.PutUint32(k, base+uint32(i)&(1<<14-1))
					binary.LittleEndian.PutUint64(v, uint64(i))
					if err := up[g](k, v); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	speedup := func(b *testing.B, up []func(k, v []byte) error) float64 {
		var ratios []float64
		for range b.N {
			t1 := run(b, up, 1)
			t2 := run(b, up, 2)
			ratios = append(ratios, float64(t1)/float64(t2))
		}
		sort.Float64s(ratios)
		return ratios[len(ratios)/2]
	}
	// The floor: the same round trips as raw SOCK_SEQPACKET echoes, one
	// echo child per updater. One round trip costs the two processes
	// about as much CPU as its wall time, so two at once on two cores can
	// only gain what the single one left idle.
	var echoes []func(k, v []byte) error
	for range 2 {
		sc := startEchoChild(b)
		msg, buf := make([]byte, echoSize), make([]byte, wire.MaxMessage)
		oob, fds := make([]byte, scmrights.OOBSize(wire.MaxFDs)), make([]int, 0, wire.MaxFDs)
		echoes = append(echoes, func(k, v []byte) error {
			if err := sc.Send(msg, nil); err != nil {
				return err
			}
			_, _, _, err := sc.Recv(buf, oob, fds)
			return err
		})
	}
	var echo, bpfd float64
	b.Run("echo", func(b *testing.B) {
		echo = speedup(b, echoes)
		b.ReportMetric(echo, "x-2-pair-speedup")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("bpfd", func(b *testing.B) {
		bpfd = speedup(b, bpfdMaps)
		b.ReportMetric(bpfd, "x-2-client-speedup")
		if echo > 0 {
			b.ReportMetric(bpfd/echo, "bpfd/echo")
		}
		b.ReportMetric(0, "ns/op")
	})
	if kernelMaps == nil {
		return
	}
	b.Run("kernel", func(b *testing.B) {
		k := speedup(b, kernelMaps)
		b.ReportMetric(k, "x-2-thread-speedup")
		b.ReportMetric(bpfd/k, "bpfd/kernel")
		b.ReportMetric(0, "ns/op")
	})
}

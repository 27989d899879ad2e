package client

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/percpu"
	"github.com/bpfd-project/bpfd/pkg/sched"
)

// TestTailCallsDuringSlotUpdates runs tail-calling programs on every CPU
// slot while a program array slot and a map of maps' entry are replaced
// over and over: every run ends in one of the two targets, no run fails
// and nothing blocks. A program resolves its tail call's target while it
// holds a CPU slot; progByID takes no registry lock, so no holder of that
// lock that waits for a CPU slot can deadlock against a tail call (the
// same rule as mapByID's for maps of maps).
func TestTailCallsDuringSlotUpdates(t *testing.T) {
	s := startServerWith(t, func(string) *demux.Config {
		return &demux.Config{Logger: zap.NewNop(), Sched: sched.Config{Slots: percpu.Default().N()}}
	})
	c := s.dial(t)
	pa, err := c.NewMap(MapSpec{Type: ProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	var targets [2]*Program
	for i := range targets {
		targets[i], err = c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, int32(i+1)), asm.Return(),
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer targets[i].Close()
	}
	caller, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMapPtr(asm.R2, pa.FD()), asm.Mov.Imm(asm.R3, 0), asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0), asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	if err := pa.Update(uint32(0), targets[0], UpdateAny); err != nil {
		t.Fatal(err)
	}
	var inners [2]*Map
	for i := range inners {
		if inners[i], err = c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}); err != nil {
			t.Fatal(err)
		}
		defer inners[i].Close()
	}
	outer, err := c.NewMap(MapSpec{Type: ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inners[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()

	budget := time.Second
	if testing.Short() {
		budget = 300 * time.Millisecond
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	pkt := make([]byte, 64)
	for range 2 * percpu.Default().N() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ret, err := caller.Run(&RunOptions{Data: pkt, Repeat: 200})
				if err != nil {
					errs <- err
					return
				}
				if ret != 1 && ret != 2 {
					errs <- &unexpectedRet{ret}
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			if err := pa.Update(uint32(0), targets[i%2], UpdateAny); err != nil {
				errs <- err
				return
			}
			if err := outer.Update(uint32(0), inners[i%2], UpdateAny); err != nil {
				errs <- err
				return
			}
		}
	}()
	time.Sleep(budget)
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("runs and program array updates still blocked 60 s after the end: deadlock")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

type unexpectedRet struct{ ret uint32 }

func (e *unexpectedRet) Error() string {
	return fmt.Sprintf("tail call returned %d, want 1 or 2", e.ret)
}

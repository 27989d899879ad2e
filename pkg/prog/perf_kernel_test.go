package prog_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/perf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/percpu"
)

// TestPerfEventOutputHelper runs bpf_perf_event_output with the kernel's
// flag forms (BPF_F_CURRENT_CPU, an index, BPF_F_CTXLEN_MASK appending
// packet bytes) and its failures (a packet too short, an empty slot, an
// index beyond max_entries, unknown flag bits) in bpfd and the kernel:
// the same return values, and a consumer of every CPU's ring reads the
// same samples from both.
func TestPerfEventOutputHelper(t *testing.T) {
	ncpu := percpu.Default().N()
	spec := maps.Spec{Type: maps.TypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: uint32(ncpu)}
	pkt := make([]byte, 64)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	tests := []struct {
		name     string
		flags    uint64
		noReader bool // no ring in any slot
		want     int64
	}{
		{name: "current cpu", flags: maps.PerfCurrentCPU},
		{name: "current cpu with 10 packet bytes", flags: maps.PerfCurrentCPU | 10<<32},
		{name: "all the packet", flags: maps.PerfCurrentCPU | 50<<32},
		{name: "more than the packet", flags: maps.PerfCurrentCPU | 51<<32, want: -int64(unix.EFAULT)},
		{name: "empty slot", flags: 0, noReader: true, want: -int64(unix.ENOENT)},
		{name: "index beyond max_entries", flags: uint64(ncpu), want: -int64(unix.E2BIG)},
		{name: "unknown flag bit", flags: maps.PerfCurrentCPU | 1<<52, want: -int64(unix.EINVAL)},
	}
	var bpfdGot, kernelGot []string
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPerfPair(t, spec)
			insns := asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.StoreImm(asm.R10, -8, int64(0x1000+i), asm.Word), asm.StoreImm(asm.R10, -4, 0x5a5a5a5a, asm.Word),
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.LoadMapPtr(asm.R2, 0),
				asm.LoadImm(asm.R3, int64(tc.flags), asm.DWord),
				asm.Mov.Reg(asm.R4, asm.R10), asm.Add.Imm(asm.R4, -8),
				asm.Mov.Imm(asm.R5, 8),
				asm.FnPerfEventOutput.Call(),
				asm.Return(),
			}
			pa := p.m.(*maps.PerfEventArray)
			readers := make([]*mapview.PerfReader, ncpu)
			if tc.noReader {
				readers = nil
			}
			for cpu := range readers {
				r, err := pa.AttachRing(uint32(cpu), maps.PerfOptions{CPU: cpu, Pages: 1, WakeupEvents: 1}, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				readers[cpu] = mapRing(t, r)
			}
			var kr *perf.Reader
			if p.k != nil && !tc.noReader {
				var err error
				if kr, err = perf.NewReader(p.k, 4096); err != nil {
					t.Fatal(err)
				}
				defer kr.Close()
			}
			b, k, berr, kerr := runBoth(t, insns, []pair{p}, pkt)
			if berr != nil || kerr != nil {
				t.Fatal(berr, kerr)
			}
			if int64(b) != tc.want {
				t.Fatalf("bpfd returned %d, want %d", int64(b), tc.want)
			}
			if p.k != nil && uint32(b) != uint32(k) { // the kernel's test run returns 32 bits
				t.Fatalf("bpfd returned %d, kernel %d", int32(b), int32(k))
			}
			for _, rd := range readers {
				for {
					out, rec, ok, err := rd.Next(nil)
					if err != nil {
						t.Fatal(err)
					}
					if !ok {
						break
					}
					if rec.Type != mapview.PerfRecordSample {
						t.Fatalf("record type %d", rec.Type)
					}
					bpfdGot = append(bpfdGot, fmt.Sprintf("%s %x", tc.name, out))
				}
			}
			if kr == nil {
				return
			}
			kr.SetDeadline(time.Now().Add(50 * time.Millisecond))
			for {
				rec, err := kr.Read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if rec.LostSamples != 0 {
					t.Fatalf("kernel lost %d", rec.LostSamples)
				}
				kernelGot = append(kernelGot, fmt.Sprintf("%s %x", tc.name, rec.RawSample))
			}
		})
	}
	if len(bpfdGot) != 3 {
		t.Fatalf("bpfd samples: %q, want 3", bpfdGot)
	}
	if !bytes.Contains([]byte(bpfdGot[1]), []byte(fmt.Sprintf("%x", pkt[14:24]))) {
		t.Fatalf("the packet bytes (from the network header) are not in %q", bpfdGot[1])
	}
	if os.Geteuid() != 0 {
		t.Log("not root: bpfd's samples not compared with the kernel's")
		return
	}
	sort.Strings(bpfdGot)
	sort.Strings(kernelGot)
	if fmt.Sprint(bpfdGot) != fmt.Sprint(kernelGot) {
		t.Fatalf("samples:\nbpfd   %q\nkernel %q", bpfdGot, kernelGot)
	}
}

// newPerfPair is newMapPair for a perf event array: cilium/ebpf would
// clamp the kernel map's max_entries to the possible CPUs.
func newPerfPair(t *testing.T, s maps.Spec) pair {
	t.Helper()
	m, err := maps.New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	p := pair{m: m}
	if os.Geteuid() != 0 {
		return p
	}
	attr := [5]uint32{s.Type, s.KeySize, s.ValueSize, s.MaxEntries, s.Flags}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		t.Fatalf("kernel map: %v", errno)
	}
	if p.k, err = ebpf.NewMapFromFD(int(fd)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.k.Close() })
	return p
}

// mapRing maps a perf ring as its consumer.
func mapRing(t *testing.T, r *maps.PerfRing) *mapview.PerfReader {
	t.Helper()
	memfd, wake, err := r.FDs()
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(wake)
	mem, err := unix.Mmap(memfd, 0, int(r.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(memfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	rd, err := mapview.NewPerfReader(mem)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

package bpfemu_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// benchSamples is how many operations each side times.
const benchSamples = 5000

// median runs f n times and returns the median duration.
func median(n int, f func() error) (time.Duration, error) {
	d := make([]time.Duration, n)
	for i := range d {
		t := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		d[i] = time.Since(t)
	}
	slices.Sort(d)
	return d[n/2], nil
}

// BenchmarkEmulatedMapOps measures, in one run, a hash map lookup and
// update three ways: emulated (a cilium/ebpf program under bpfctl exec
// --bpf, its bpf(2) answered through seccomp user notification by the
// supervisor: lookups from the map's storage mapped into the supervisor,
// updates by bpfd; and the same from the libbpf C program where gcc and
// libbpf-dev are installed), native (pkg/client in a process of its own against the
// same daemon: a lookup as a round trip, and from its own mapping, and an
// update) and the kernel's own bpf(2). It reports the medians in ns and
// the ratios of the emulated calls to a native bpfd round trip (the
// target is at most 2) and to the kernel. Timings are reported, never
// asserted.
func BenchmarkEmulatedMapOps(b *testing.B) {
	e := newEnv(b)
	prog := e.ciliumprog(b)
	b.ReportAllocs()
	var emuLookup, emuUpdate, cLookup, cUpdate, natLookup, natMapped, natUpdate, kLookup, kUpdate time.Duration
	cprog := libbpfBench(b, e)
	for i := 0; i < b.N; i++ {
		// Emulated.
		r := runCmd(b, e.emulatedCmd(prog, "-bench", fmt.Sprint(benchSamples)), 5*time.Minute)
		var lk, up int64
		if _, err := fmt.Sscanf(r.out, "lookup %d update %d", &lk, &up); err != nil || r.code != 0 {
			b.Fatalf("emulated bench: %v", r)
		}
		emuLookup, emuUpdate = time.Duration(lk), time.Duration(up)
		if cprog != "" {
			// The same from C through libbpf.
			r := runCmd(b, e.emulatedCmd(cprog, "-bench", fmt.Sprint(benchSamples)), 5*time.Minute)
			if _, err := fmt.Sscanf(r.out, "lookup %d update %d", &lk, &up); err != nil || r.code != 0 {
				b.Fatalf("emulated C bench: %v", r)
			}
			cLookup, cUpdate = time.Duration(lk), time.Duration(up)
		}

		// Native pkg/client, in a process of its own as the emulated
		// program is.
		cmd := exec.Command(e.self, e.d.Socket, fmt.Sprint(benchSamples))
		cmd.Env = append(os.Environ(), roleEnv+"=native-bench")
		r = runCmd(b, cmd, 5*time.Minute)
		var mapped int64
		if _, err := fmt.Sscanf(r.out, "lookup %d mapped %d update %d", &lk, &mapped, &up); err != nil || r.code != 0 {
			b.Fatalf("native bench: %v", r)
		}
		natLookup, natMapped, natUpdate = time.Duration(lk), time.Duration(mapped), time.Duration(up)

		// The kernel.
		key, val, out := binary.LittleEndian.AppendUint32(nil, 1), make([]byte, 8), make([]byte, 8)
		kLookup, kUpdate = kernelMapOps(b, key, val, out)
	}
	b.ReportMetric(float64(emuLookup.Nanoseconds()), "emu-lookup-ns")
	b.ReportMetric(float64(natLookup.Nanoseconds()), "native-lookup-ns")
	b.ReportMetric(float64(natMapped.Nanoseconds()), "native-mapped-lookup-ns")
	b.ReportMetric(float64(kLookup.Nanoseconds()), "kernel-lookup-ns")
	b.ReportMetric(float64(emuUpdate.Nanoseconds()), "emu-update-ns")
	b.ReportMetric(float64(natUpdate.Nanoseconds()), "native-update-ns")
	b.ReportMetric(float64(kUpdate.Nanoseconds()), "kernel-update-ns")
	b.ReportMetric(float64(emuLookup)/float64(natLookup), "emu/native-lookup")
	b.ReportMetric(float64(emuUpdate)/float64(natUpdate), "emu/native-update")
	b.ReportMetric(float64(emuLookup)/float64(max(kLookup, 1)), "emu/kernel-lookup")
	if cprog != "" {
		b.ReportMetric(float64(cLookup.Nanoseconds()), "emu-c-lookup-ns")
		b.ReportMetric(float64(cUpdate.Nanoseconds()), "emu-c-update-ns")
		b.ReportMetric(float64(cLookup)/float64(natLookup), "emu-c/native-lookup")
		b.ReportMetric(float64(cUpdate)/float64(natUpdate), "emu-c/native-update")
	}
}

// libbpfBench compiles the libbpf test program for its -bench mode, or
// returns "" (and says why) where gcc or libbpf-dev are missing.
func libbpfBench(b *testing.B, e *env) string {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		b.Log("no gcc: the C program's figures are left out")
		return ""
	}
	if _, err := os.Stat("/usr/include/bpf/libbpf.h"); err != nil {
		b.Log("no libbpf-dev: the C program's figures are left out")
		return ""
	}
	bin := filepath.Join(e.dir, "libbpfprog")
	if out, err := exec.Command(gcc, "-O2", "-Wall", "-o", bin, "testdata/libbpfprog.c", "-lbpf").CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// nativeBench is the native-bench role: n lookups (round trips, then from
// the client's own mapping of the storage) and n updates through
// pkg/client against the daemon at socket: "lookup NS mapped NS update NS".
func nativeBench(socket, count string) int {
	var n int
	fmt.Sscan(count, &n)
	c, err := client.Dial(socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	key, val, out := binary.LittleEndian.AppendUint32(nil, 1), make([]byte, 8), make([]byte, 8)
	if err := m.Update(key, val, client.UpdateAny); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m.SetSharedMemoryReads(false)
	lk, err := median(n, func() error { return m.Lookup(key, out) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m.SetSharedMemoryReads(true)
	mapped, err := median(n, func() error { return m.Lookup(key, out) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	up, err := median(n, func() error { return m.Update(key, val, client.UpdateAny) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("lookup %d mapped %d update %d\n", lk.Nanoseconds(), mapped.Nanoseconds(), up.Nanoseconds())
	return 0
}

// kernelMapOps times lookups and updates of a kernel hash map (0 when
// bpf(2) is not available).
func kernelMapOps(b *testing.B, key, val, out []byte) (time.Duration, time.Duration) {
	attr := make([]byte, 128)
	binary.LittleEndian.PutUint32(attr[0:], 1) // BPF_MAP_TYPE_HASH
	binary.LittleEndian.PutUint32(attr[4:], 4)
	binary.LittleEndian.PutUint32(attr[8:], 8)
	binary.LittleEndian.PutUint32(attr[12:], 16)
	fd, _, e := unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), 128)
	if e != 0 {
		return 0, 0
	}
	defer unix.Close(int(fd))
	elem := make([]byte, 32)
	binary.LittleEndian.PutUint32(elem[0:], uint32(fd))
	binary.LittleEndian.PutUint64(elem[8:], uint64(uintptr(unsafe.Pointer(&key[0]))))
	op := func(cmd uintptr, value []byte) func() error {
		return func() error {
			binary.LittleEndian.PutUint64(elem[16:], uint64(uintptr(unsafe.Pointer(&value[0]))))
			if _, _, e := unix.Syscall(unix.SYS_BPF, cmd, uintptr(unsafe.Pointer(&elem[0])), 32); e != 0 {
				return e
			}
			return nil
		}
	}
	up, err := median(benchSamples, op(2, val))
	if err != nil {
		b.Fatal(err)
	}
	lk, err := median(benchSamples, op(1, out))
	if err != nil {
		b.Fatal(err)
	}
	return lk, up
}

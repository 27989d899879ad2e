package daemon

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Benchmarks of what persistence costs (docs/persistence.md, "Figures"):
// the pause of an upgrade under load and the restart time with many
// pinned maps. The runtime directory is on tmpfs (/dev/shm) when the
// machine has it, as /run is in production.

// benchRuntimeDir returns a fresh runtime directory on tmpfs if possible.
func benchRuntimeDir(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "bpfd-bench-")
	if err != nil {
		return filepath.Join(b.TempDir(), "runtime")
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// benchDaemon starts a daemon process serving sock, logging warnings
// only, and waits until it answers.
func benchDaemon(b *testing.B, sock, pins, state, runtime string) *exec.Cmd {
	b.Helper()
	cmd := daemonCmd("--socket", sock, "--pin-root", pins, "--state-dir", state, "--runtime-dir", runtime,
		"--log-level", "warn", "--flush-interval", "0")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := client.DialWith(sock, &client.DialConfig{NoReconnect: true})
		if err == nil {
			_, err = c.Status()
			c.Close()
			if err == nil {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon did not answer: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func benchEnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// pct returns the p-th percentile of sorted durations, in microseconds.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i].Nanoseconds()) / 1e3
}

// BenchmarkUpgradePause measures request latency across `bpfctl daemon
// upgrade` with 100 connections (each a client doing lookups in a loop,
// one request at a time) and 10,000 live descriptors
// (BPFD_BENCH_CONNS, BPFD_BENCH_DESCS change them). Each iteration is one
// upgrade; the metrics are the p50/p99/max latency of every request
// answered from 200 ms before the upgrade to 200 ms after it ("across"),
// the same over a window without an upgrade just before ("steady", the
// baseline), and the pause the daemon reports.
func BenchmarkUpgradePause(b *testing.B) {
	conns, descs := benchEnvInt("BPFD_BENCH_CONNS", 100), benchEnvInt("BPFD_BENCH_DESCS", 10000)
	dir := b.TempDir()
	sock := filepath.Join(dir, "bpfd.sock")
	benchDaemon(b, sock, filepath.Join(dir, "pins"), filepath.Join(dir, "state"), benchRuntimeDir(b))
	ctl, err := client.Dial(sock)
	if err != nil {
		b.Fatal(err)
	}
	defer ctl.Close()
	type worker struct {
		c *client.Conn
		m *client.Map
	}
	ws := make([]worker, conns)
	for i := range ws {
		c, err := client.Dial(sock)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Update(u32b(1), u64b(1), client.UpdateAny); err != nil {
			b.Fatal(err)
		}
		m.SetSharedMemoryReads(false) // round trips are what is measured
		ws[i] = worker{c, m}
	}
	// Live descriptors: read-only reopens spread over the connections.
	for i := 0; i < descs-conns; i++ {
		d, err := ws[i%conns].m.Reopen(client.ModeRead)
		if err != nil {
			b.Fatalf("descriptor %d: %v", i, err)
		}
		defer d.Close()
	}
	type sample struct {
		end time.Time
		lat time.Duration
	}
	var mu sync.Mutex
	var samples []sample
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func(w worker) {
			defer wg.Done()
			v := make([]byte, 8)
			var mine []sample
			for !stop.Load() {
				t0 := time.Now()
				if err := w.m.Lookup(u32b(1), v); err != nil {
					b.Errorf("lookup: %v", err)
					return
				}
				t1 := time.Now()
				mine = append(mine, sample{t1, t1.Sub(t0)})
			}
			mu.Lock()
			samples = append(samples, mine...)
			mu.Unlock()
		}(w)
	}
	window := 200 * time.Millisecond
	type mark struct{ steady, before, after time.Time }
	var marks []mark
	var pause time.Duration
	b.ReportAllocs()
	for b.Loop() {
		steady := time.Now()
		time.Sleep(2 * window)
		before := time.Now()
		time.Sleep(window)
		res, err := ctl.UpgradeDaemon()
		if err != nil {
			b.Fatalf("upgrade: %v", err)
		}
		pause += time.Duration(res.PauseNs)
		time.Sleep(window)
		marks = append(marks, mark{steady, before, time.Now()})
	}
	stop.Store(true)
	wg.Wait()
	var steadyLat, acrossLat []time.Duration
	for _, s := range samples {
		for _, m := range marks {
			switch {
			case s.end.After(m.steady.Add(window/2)) && s.end.Before(m.before):
				steadyLat = append(steadyLat, s.lat)
			case s.end.After(m.before) && s.end.Before(m.after):
				acrossLat = append(acrossLat, s.lat)
			}
		}
	}
	sort.Slice(steadyLat, func(i, j int) bool { return steadyLat[i] < steadyLat[j] })
	sort.Slice(acrossLat, func(i, j int) bool { return acrossLat[i] < acrossLat[j] })
	b.ReportMetric(float64(pause.Microseconds())/1e3/float64(len(marks)), "pause-ms")
	b.ReportMetric(pct(steadyLat, 0.5), "steady-p50-us")
	b.ReportMetric(pct(steadyLat, 0.99), "steady-p99-us")
	b.ReportMetric(pct(acrossLat, 0.5), "across-p50-us")
	b.ReportMetric(pct(acrossLat, 0.99), "across-p99-us")
	b.ReportMetric(pct(acrossLat, 1), "across-max-us")
}

// BenchmarkRestart measures how long a daemon takes from its start to
// its first answer with 1,000 pinned array maps totalling 1 GiB, every
// byte written (BPFD_BENCH_MAPS and BPFD_BENCH_MAP_KIB change the count
// and the size of each map): after a kill -9 (the maps are their region
// files on tmpfs, taken back in place), and after a simulated reboot
// (the runtime directory emptied: contents reloaded from the state
// directory's records, written at the clean stop before).
func BenchmarkRestart(b *testing.B) {
	nmaps, kib := benchEnvInt("BPFD_BENCH_MAPS", 1000), benchEnvInt("BPFD_BENCH_MAP_KIB", 1024)
	dir := b.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	runtime := benchRuntimeDir(b)
	cmd := benchDaemon(b, sock, pins, state, runtime)
	c, err := client.Dial(sock)
	if err != nil {
		b.Fatal(err)
	}
	const vs = 4096
	entries := kib * 1024 / vs
	keys, vals := make([]byte, 4*entries), make([]byte, vs*entries)
	for i := 0; i < entries; i++ {
		binary.NativeEndian.PutUint32(keys[4*i:], uint32(i))
	}
	for i := range vals {
		vals[i] = byte(i*7 + 1)
	}
	for i := 0; i < nmaps; i++ {
		m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: vs, MaxEntries: uint32(entries)})
		if err != nil {
			b.Fatalf("map %d: %v", i, err)
		}
		if n, err := m.BatchUpdate(keys, vals, nil); err != nil || n != entries {
			b.Fatalf("filling map %d: %d %v", i, n, err)
		}
		if err := c.Pin(m, "m"+strconv.Itoa(i), 0o600); err != nil {
			b.Fatalf("pin %d: %v", i, err)
		}
		m.Close()
	}
	c.Close()
	restart := func(sig syscall.Signal, reboot bool) time.Duration {
		cmd.Process.Signal(sig)
		cmd.Wait()
		if reboot {
			os.RemoveAll(runtime)
		}
		t0 := time.Now()
		cmd = benchDaemon(b, sock, pins, state, runtime)
		return time.Since(t0)
	}
	check := func() {
		c, err := client.Dial(sock)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		m, err := c.OpenPinnedMap("m"+strconv.Itoa(nmaps-1), client.ModeRead)
		if err != nil {
			b.Fatalf("after the restart: %v", err)
		}
		defer m.Close()
		v := make([]byte, vs)
		if err := m.Lookup(u32b(uint32(entries-1)), v); err != nil || v[0] != vals[(entries-1)*vs] {
			b.Fatalf("contents after the restart: %v", err)
		}
	}
	var crash, reboot time.Duration
	b.ResetTimer()
	for b.Loop() {
		crash += restart(syscall.SIGKILL, false)
		check()
		restart(syscall.SIGTERM, false) // the records are written at the clean stop
		reboot += restart(syscall.SIGTERM, true)
		check()
	}
	n := float64(b.N)
	b.ReportMetric(float64(crash.Milliseconds())/n, "after-kill9-ms")
	b.ReportMetric(float64(reboot.Milliseconds())/n, "after-reboot-ms")
	b.ReportMetric(float64(nmaps)*float64(kib)/1024, "MiB")
}

package daemon

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// holderMain is a process that holds a descriptor another process passed
// it (fd 3 is the socket it arrives on) across a daemon upgrade: it
// imports it on a connection of its own, looks up, says "ready", waits for
// a line on stdin, and looks up and updates again through the same
// connection and descriptor.
func holderMain() int {
	conn, err := net.FileConn(os.NewFile(3, "passer"))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fds, err := client.ReceiveDescriptors(conn.(*net.UnixConn), 1)
	if err != nil || len(fds) != 1 {
		fmt.Println("error receiving", err)
		return 1
	}
	c, err := client.Dial(os.Getenv("BPFD_TEST_SOCKET"))
	if err != nil {
		fmt.Println("error dialing", err)
		return 1
	}
	m, err := c.ImportMap(fds[0])
	if err != nil {
		fmt.Println("error importing", err)
		return 1
	}
	v := make([]byte, 8)
	if err := m.Lookup(u32b(7), v); err != nil {
		fmt.Println("error lookup before", err)
		return 1
	}
	fmt.Println("ready", binary.LittleEndian.Uint64(v))
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 1
	}
	if err := m.Lookup(u32b(7), v); err != nil {
		fmt.Println("error lookup after", err)
		return 1
	}
	if err := m.Update(u32b(8), u64b(88), client.UpdateAny); err != nil {
		fmt.Println("error update after", err)
		return 1
	}
	fmt.Println("after", binary.LittleEndian.Uint64(v), c.Reconnects())
	return 0
}

// TestUpgradeUnderLoad upgrades a daemon (DAEMON_UPGRADE: it execs the
// binary it was started from, here this test binary) while clients
// update and look up steadily on connections of their own and another
// process holds a descriptor it was passed: no request fails, no update
// is lost, every connection is taken over (none reconnects), and the
// descriptor passed between processes before the upgrade works after.
func TestUpgradeUnderLoad(t *testing.T) {
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, errb := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1024, Name: "load"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(m, "load", 0o600); err != nil {
		t.Fatal(err)
	}
	unpinned, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := unpinned.Update(u32b(1), u64b(11), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(u32b(7), u64b(77), client.UpdateAny); err != nil {
		t.Fatal(err)
	}

	// Another process gets a read-write descriptor of m over SCM_RIGHTS.
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine := os.NewFile(uintptr(pair[0]), "mine")
	theirs := os.NewFile(uintptr(pair[1]), "theirs")
	defer mine.Close()
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), "BPFD_TEST_HOLDER=1", "BPFD_TEST_SOCKET="+sock)
	holder.ExtraFiles = []*os.File{theirs}
	hin, _ := holder.StdinPipe()
	hout, _ := holder.StdoutPipe()
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	defer holder.Process.Kill()
	uc, err := net.FileConn(mine)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.SendDescriptors(uc.(*net.UnixConn), m.FD()); err != nil {
		t.Fatal(err)
	}
	hr := bufio.NewReader(hout)
	if line, _ := hr.ReadString('\n'); line != "ready 77\n" {
		t.Fatalf("holder before the upgrade: %q", line)
	}

	// Steady load: writers on connections of their own, each its keys.
	const writers = 4
	var stop atomic.Bool
	var wg sync.WaitGroup
	acked := make([][]uint64, writers)
	errs := make(chan error, writers)
	var ops atomic.Int64
	for w := 0; w < writers; w++ {
		wc, err := client.Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		wm, err := wc.OpenPinnedMap("load", client.ModeReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		acked[w] = make([]uint64, 16)
		wg.Add(1)
		go func(w int, wc *client.Conn, wm *client.Map) {
			defer wg.Done()
			v := make([]byte, 8)
			for n := uint64(1); !stop.Load(); n++ {
				k := uint32(100 + w*16 + int(n%16))
				if err := wm.Update(u32b(k), u64b(n), client.UpdateAny); err != nil {
					errs <- fmt.Errorf("writer %d update: %w", w, err)
					return
				}
				acked[w][n%16] = n
				if err := wm.Lookup(u32b(k), v); err != nil || binary.LittleEndian.Uint64(v) != n {
					errs <- fmt.Errorf("writer %d lookup of what it just wrote: %x %v", w, v, err)
					return
				}
				ops.Add(2)
			}
			if wc.Reconnects() != 0 {
				errs <- fmt.Errorf("writer %d's connection reconnected instead of being taken over", w)
			}
		}(w, wc, wm)
	}
	// The upgrade starts while every writer is busy, and the test goes
	// on until they did as much again after it.
	waitUntil(t, time.Minute, "the writers to start", func() bool { return ops.Load() >= 200 })
	before := ops.Load()
	res, err := c.UpgradeDaemon()
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, errb.String())
	}
	after := ops.Load()
	waitUntil(t, time.Minute, "the writers to go on after the upgrade", func() bool {
		return ops.Load() >= after+200 || len(errs) > 0
	})
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("daemon log:\n%s", errb.String())
	}
	if res.PID != cmd.Process.Pid || res.Conns < writers+1 || res.Objects < 2 || res.PauseNs <= 0 {
		t.Fatalf("upgrade result %+v (daemon pid %d)", res, cmd.Process.Pid)
	}
	t.Logf("upgrade: %+v; %d operations before, %d in all", res, before, ops.Load())

	// No update lost; the objects and descriptors of before work.
	v := make([]byte, 8)
	for w := 0; w < writers; w++ {
		for i, n := range acked[w] {
			if n == 0 {
				continue
			}
			k := uint32(100 + w*16 + i)
			if err := m.Lookup(u32b(k), v); err != nil || binary.LittleEndian.Uint64(v) != n {
				t.Fatalf("key %d after the upgrade: %x %v, want %d", k, v, err, n)
			}
		}
	}
	if err := unpinned.Lookup(u32b(1), v); err != nil || binary.LittleEndian.Uint64(v) != 11 {
		t.Fatalf("unpinned map after the upgrade: %x %v", v, err)
	}
	if c.Reconnects() != 0 {
		t.Fatal("the upgrading connection reconnected")
	}
	io.WriteString(hin, "go\n")
	line, _ := hr.ReadString('\n')
	if line != "after 77 0\n" {
		t.Fatalf("holder after the upgrade: %q", line)
	}
	if err := holder.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	if err := m.Lookup(u32b(8), v); err != nil || binary.LittleEndian.Uint64(v) != 88 {
		t.Fatalf("the holder's update after the upgrade: %x %v", v, err)
	}
	if !strings.Contains(errb.String(), `"upgraded": true`) {
		t.Fatalf("the daemon did not restart from a handoff:\n%s", errb.String())
	}
	// A second upgrade works too, and a clean stop after it.
	if _, err := c.UpgradeDaemon(); err != nil {
		t.Fatalf("second upgrade: %v\n%s", err, errb.String())
	}
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
}

// TestUpgradeFailureServesOn checks that an upgrade whose binary cannot
// be executed leaves the daemon serving as before, and that SIGHUP
// upgrades like DAEMON_UPGRADE.
func TestUpgradeFailureServesOn(t *testing.T) {
	dir := t.TempDir()
	// A copy of the test binary that the test can remove.
	bin := filepath.Join(dir, "bpfd-copy")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd := exec.Command(bin, "-test.run=^$", "--", "--socket", sock, "--pin-root", pins, "--state-dir", state, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "BPFD_TEST_DAEMON=1")
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitSocket(t, sock)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(u32b(0), u64b(5), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	// SIGHUP upgrades (the binary is there).
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errb.String(), `"upgraded": true`) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not upgrade:\n%s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Now the binary is gone: the upgrade fails, the daemon serves on.
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpgradeDaemon(); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("upgrade to a missing binary: %v\n%s", err, errb.String())
	}
	v := make([]byte, 8)
	if err := m.Lookup(u32b(0), v); err != nil || binary.LittleEndian.Uint64(v) != 5 {
		t.Fatalf("after a failed upgrade: %x %v", v, err)
	}
	if err := m.Update(u32b(1), u64b(6), client.UpdateAny); err != nil {
		t.Fatalf("update after a failed upgrade: %v", err)
	}
	c2, err := client.Dial(sock)
	if err != nil {
		t.Fatalf("new connection after a failed upgrade: %v", err)
	}
	c2.Close()
	if c.Reconnects() != 0 {
		t.Fatal("reconnected")
	}
}

package daemon

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/state/statetest"
)

// syscallerMain is a process under a seccomp filter routing socket(2):
// for each line on stdin it calls socket(AF_UNIX, SOCK_DGRAM) and prints
// the errno it got ("OK" if none).
func syscallerMain() int {
	in := bufio.NewReader(os.Stdin)
	for {
		if _, err := in.ReadString('\n'); err != nil {
			return 0
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			fmt.Println(unix.ErrnoName(err.(unix.Errno)))
			continue
		}
		unix.Close(fd)
		fmt.Println("OK")
	}
}

// sdProc is a daemon process run by sdDaemon.
type sdProc struct {
	cmd    *exec.Cmd
	errb   *syncBuffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// stop signals the daemon and waits for it to exit.
func (p *sdProc) stop(sig syscall.Signal) error {
	p.cmd.Process.Signal(sig)
	<-p.exited
	return p.err
}

// sdDaemon runs the daemon (this test binary) under the fake service
// manager sd, with fd store args, as systemd starts a service: NOTIFY_SOCKET
// set, the stored fds passed. It returns once the daemon said READY=1.
func sdDaemon(t *testing.T, sd *statetest.Systemd, args ...string) *sdProc {
	t.Helper()
	cmd := daemonCmd(append(args, "--log-level", "debug")...)
	files := sd.Prepare(cmd, nil)
	p := &sdProc{cmd: cmd, errb: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.errb
	skip := len(sd.States())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.exited })
	if !sd.WaitState("READY=1", skip, p.exited) {
		t.Fatalf("daemon never ready:\n%s", p.errb.String())
	}
	return p
}

// probe asks the syscaller for one socket(2) and returns what it got,
// or "" if nothing came within wait.
func probe(t *testing.T, in io.Writer, out *bufio.Reader, wait time.Duration) (string, func() string) {
	t.Helper()
	io.WriteString(in, "probe\n")
	ch := make(chan string, 1)
	go func() {
		line, _ := out.ReadString('\n')
		ch <- strings.TrimSpace(line)
	}()
	select {
	case s := <-ch:
		return s, nil
	case <-time.After(wait):
		return "", func() string { return <-ch }
	}
}

// TestFDStoreKeepsDescriptors runs the daemon under a fake service
// manager with its fd store (--fd-store), kills it (SIGKILL) while a
// client updates steadily, and starts it again as systemd does, with
// the stored fds: every descriptor the client holds works again — an
// unpinned map, a read-only reopened descriptor of it (still read-only),
// a program — the client reconnects by itself with at most the one
// request in flight failing (ErrInterrupted), and a process filtered by a
// seccomp program of the daemon waits while the daemon is down and is
// decided by it after (the listener was in the store too).
func TestFDStoreKeepsDescriptors(t *testing.T) {
	sd := statetest.NewSystemd(t, 4096)
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	args := []string{"--socket", sock, "--pin-root", pins, "--state-dir", state, "--fd-store", "4096"}
	d := sdDaemon(t, sd, args...)

	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64, Name: "unpinned"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(u32b(1), u64b(11), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	ro, err := m.Reopen(client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.Seccomp, License: "GPL", Name: "deny",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0x50000|int32(unix.EACCES)), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	filtered := exec.Command(os.Args[0], "-test.run=^$")
	filtered.Env = append(os.Environ(), "BPFD_TEST_SYSCALLER=1")
	fin, _ := filtered.StdinPipe()
	fout, _ := filtered.StdoutPipe()
	run, err := p.StartSeccomp(filtered, &client.SeccompOptions{Syscalls: []string{"socket"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { fin.Close(); run.Process.Kill(); run.Wait() }()
	fr := bufio.NewReader(fout)
	if got, _ := probe(t, fin, fr, 10*time.Second); got != "EACCES" {
		t.Fatalf("filtered socket() before the crash: %q", got)
	}

	// A steady writer on the same connection.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var acked atomic.Uint64
	var failures []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := uint64(1); !stop.Load(); n++ {
			if err := m.Update(u32b(2), u64b(n), client.UpdateAny); err != nil {
				failures = append(failures, err)
				continue
			}
			acked.Store(n)
		}
	}()
	waitUntil(t, time.Minute, "the writer to start", func() bool { return acked.Load() >= 20 })
	stored := sd.Store()
	var names []string
	for _, s := range stored {
		names = append(names, s.Name)
	}
	if len(stored) < 4 { // the map's two descriptors, the program's, the listener
		t.Fatalf("fd store holds %v", names)
	}
	d.stop(syscall.SIGKILL)
	// The daemon is down: the filtered process's routed syscall waits
	// (fails closed) instead of failing with ENOSYS.
	got, rest := probe(t, fin, fr, 300*time.Millisecond)
	if got != "" {
		t.Fatalf("routed syscall while the daemon is down answered %q, want it to wait", got)
	}
	d = sdDaemon(t, sd, args...)
	errb := d.errb
	if got := rest(); got != "EACCES" {
		t.Fatalf("routed syscall made while the daemon was down, after its restart: %q\n%s", got, errb.String())
	}
	// The writer rides through the crash: it goes on after the restart.
	atRestart := acked.Load()
	waitUntil(t, time.Minute, "the writer to go on after the restart", func() bool { return acked.Load() >= atRestart+20 })
	stop.Store(true)
	wg.Wait()
	for _, err := range failures {
		if !errors.Is(err, client.ErrInterrupted) {
			t.Errorf("writer: %v", err)
		}
	}
	if len(failures) > 1 {
		t.Errorf("%d requests failed across the crash, want at most the one in flight", len(failures))
	}
	if t.Failed() {
		t.Fatalf("daemon log:\n%s", errb.String())
	}
	if c.Reconnects() != 1 {
		t.Fatalf("reconnected %d times", c.Reconnects())
	}
	v := make([]byte, 8)
	if err := m.Lookup(u32b(1), v); err != nil || binary.LittleEndian.Uint64(v) != 11 {
		t.Fatalf("unpinned map after the crash: %x %v\n%s", v, err, errb.String())
	}
	if err := m.Lookup(u32b(2), v); err != nil || binary.LittleEndian.Uint64(v) != acked.Load() {
		t.Fatalf("the writer's key after the crash: %d %v, last acknowledged %d", binary.LittleEndian.Uint64(v), err, acked.Load())
	}
	if err := ro.Lookup(u32b(1), v); err != nil {
		t.Fatalf("read-only descriptor after the crash: %v", err)
	}
	if err := ro.Update(u32b(1), u64b(0), client.UpdateAny); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("read-only descriptor writes after the crash: %v", err)
	}
	if got, _ := probe(t, fin, fr, 10*time.Second); got != "EACCES" {
		t.Fatalf("filtered socket() after the crash: %q", got)
	}
	// The descriptor works in a fresh process too (its cookie is known).
	c2, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := c2.ImportMap(m.FD())
	if err != nil {
		t.Fatalf("import of a descriptor made before the crash: %v", err)
	}
	m2.Close()
	c2.Close()
	// Closing a descriptor removes it from the store.
	before := len(sd.Store())
	ro.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(sd.Store()) >= before {
		if time.Now().After(deadline) {
			t.Fatalf("a closed descriptor stayed in the fd store: %v", sd)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, errb.String())
	}
}

// TestCrashWithoutFDStore documents what a crash keeps without systemd's
// fd store: pins and map contents survive, descriptors do not (the
// client reconnects, and operations on a lost descriptor fail with
// ErrDescriptorLost), and a filtered process's routed syscalls fail with
// ENOSYS (its listener died with the daemon). A pin file removed while
// the daemon was down stays removed.
func TestCrashWithoutFDStore(t *testing.T) {
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, _ := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unpinned, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(pinned, "kept", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(pinned, "removed", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pinned.Update(u32b(0), u64b(42), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.Seccomp, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0x50000|int32(unix.EACCES)), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	filtered := exec.Command(os.Args[0], "-test.run=^$")
	filtered.Env = append(os.Environ(), "BPFD_TEST_SYSCALLER=1")
	fin, _ := filtered.StdinPipe()
	fout, _ := filtered.StdoutPipe()
	run, err := p.StartSeccomp(filtered, &client.SeccompOptions{Syscalls: []string{"socket"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { fin.Close(); run.Process.Kill(); run.Wait() }()
	fr := bufio.NewReader(fout)
	if got, _ := probe(t, fin, fr, 10*time.Second); got != "EACCES" {
		t.Fatalf("filtered socket() before the crash: %q", got)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if got, _ := probe(t, fin, fr, 10*time.Second); got != "ENOSYS" {
		t.Fatalf("filtered socket() once the daemon died: %q, want ENOSYS", got)
	}
	if err := os.Remove(filepath.Join(pins, "removed")); err != nil {
		t.Fatal(err)
	}
	_, errb := startDaemon(t, sock, pins, state)
	v := make([]byte, 8)
	if err := unpinned.Lookup(u32b(0), v); !errors.Is(err, client.ErrDescriptorLost) {
		t.Fatalf("unpinned map after a crash without the fd store: %v\n%s", err, errb.String())
	}
	if err := pinned.Lookup(u32b(0), v); !errors.Is(err, client.ErrDescriptorLost) {
		t.Fatalf("descriptor of a pinned map after a crash without the fd store: %v", err)
	}
	kept, err := c.OpenPinnedMap("kept", client.ModeRead)
	if err != nil {
		t.Fatalf("pin after the crash: %v\n%s", err, errb.String())
	}
	if err := kept.Lookup(u32b(0), v); err != nil || binary.LittleEndian.Uint64(v) != 42 {
		t.Fatalf("pinned map after the crash: %x %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(pins, "removed")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a pin removed while the daemon was down came back: %v", err)
	}
	if c.Reconnects() != 1 {
		t.Fatalf("reconnected %d times", c.Reconnects())
	}
}

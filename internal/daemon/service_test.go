package daemon

import (
	"bytes"
	"context"
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
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// needTool returns the path of a systemd tool, skipping the test when it
// is missing, except under CI=true, where .ci/run installs it and its
// absence is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing under CI (.ci/run installs the systemd package)", name)
		}
		t.Skipf("%s not installed (apt-get install systemd); skipping", name)
	}
	return p
}

// daemonCmd returns a command running this test binary as the daemon
// (see TestMain) with args.
func daemonCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "BPFD_TEST_DAEMON=1")
	return cmd
}

// syncBuffer is a bytes.Buffer safe for a writing child and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	dir := t.TempDir()
	// The units as shipped, with ExecStart pointing at an executable that
	// exists here (this test binary stands in for bpfd).
	for _, u := range []string{"bpfd.socket", "bpfd.service"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		if u == "bpfd.service" {
			if !bytes.Contains(b, []byte("ExecStart=/usr/local/bin/bpfd ")) {
				t.Fatal("bpfd.service: ExecStart does not start /usr/local/bin/bpfd")
			}
			b = bytes.Replace(b, []byte("/usr/local/bin/bpfd"), []byte(os.Args[0]), 1)
			// Every flag ExecStart passes must exist.
			for _, line := range strings.Split(string(b), "\n") {
				if args, ok := strings.CutPrefix(line, "ExecStart="+os.Args[0]+" "); ok {
					if _, err := ParseOptions(strings.Fields(args), env(nil), io.Discard); err != nil {
						t.Fatalf("ExecStart flags rejected: %v", err)
					}
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sa, "verify", filepath.Join(dir, "bpfd.socket"), filepath.Join(dir, "bpfd.service")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// notifyListener binds a datagram socket standing in for systemd's
// notification socket and returns the address to put in NOTIFY_SOCKET and
// a channel of received messages.
func notifyListener(t *testing.T, abstract bool) (string, <-chan string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		name = fmt.Sprintf("@bpfd-test-notify-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return name, ch
}

func expectNotify(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			for _, line := range strings.Split(m, "\n") {
				if line == want {
					return
				}
			}
		case <-timeout:
			t.Fatalf("no %s notification", want)
		}
	}
}

func TestSdNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			addr, ch := notifyListener(t, abstract)
			sock := filepath.Join(t.TempDir(), "bpfd.sock")
			e := map[string]string{"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "100000",
				"WATCHDOG_PID": fmt.Sprint(os.Getpid())}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			var errb syncBuffer
			go func() {
				done <- Main(ctx, append([]string{"--socket", sock}, tempDirsArgs(t)...), env(e), io.Discard, &errb)
			}()
			expectNotify(t, ch, "READY=1")
			// READY comes once the socket is served.
			hello(t, sock)
			expectNotify(t, ch, "WATCHDOG=1")
			expectNotify(t, ch, "WATCHDOG=1")
			cancel()
			expectNotify(t, ch, "STOPPING=1")
			if code := <-done; code != ExitOK {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
		})
	}
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want time.Duration
		err  error
	}{
		{"unset", nil, 0, ErrNoWatchdog},
		{"half", map[string]string{"WATCHDOG_USEC": "30000000"}, 15 * time.Second, nil},
		{"our pid", map[string]string{"WATCHDOG_USEC": "2000", "WATCHDOG_PID": "42"}, time.Millisecond, nil},
		{"other pid", map[string]string{"WATCHDOG_USEC": "2000", "WATCHDOG_PID": "43"}, 0, ErrNoWatchdog},
		{"garbage", map[string]string{"WATCHDOG_USEC": "soon"}, 0, ErrNoWatchdog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := WatchdogInterval(env(tt.env), 42)
			if d != tt.want || !errors.Is(err, tt.err) && err != tt.err {
				t.Fatalf("WatchdogInterval = %v, %v; want %v, %v", d, err, tt.want, tt.err)
			}
		})
	}
	if NewNotifier(env(nil)) != nil || NewNotifier(env(map[string]string{"NOTIFY_SOCKET": "relative"})) != nil {
		t.Fatal("NewNotifier without a usable NOTIFY_SOCKET")
	}
	var n *Notifier
	if err := n.Notify("READY=1"); err != nil {
		t.Fatalf("nil Notifier: %v", err)
	}
}

func TestActivationListenerNotForUs(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"unset", nil},
		{"other pid", map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "1"}},
		{"no fds", map[string]string{"LISTEN_PID": fmt.Sprint(os.Getpid()), "LISTEN_FDS": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := ActivationListener(env(tt.env), os.Getpid())
			if ln != nil || err != nil {
				t.Fatalf("ActivationListener = %v, %v; want nothing", ln, err)
			}
		})
	}
}

// TestSocketActivation runs the daemon under systemd-socket-activate: the
// daemon serves the passed SOCK_SEQPACKET socket, a client works through
// it, and a stream socket is refused.
func TestSocketActivation(t *testing.T) {
	ssa := needTool(t, "systemd-socket-activate")
	dir := t.TempDir()
	sock := filepath.Join(dir, "act.sock")
	dirs := tempDirsArgs(t)
	cmd := exec.Command(ssa, append([]string{"--seqpacket", "-l", sock, "-E", "BPFD_TEST_DAEMON=1",
		os.Args[0], "-test.run=^$", "--", "--socket", filepath.Join(dir, "unused.sock")}, dirs...)...)
	var errb syncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitPath(t, sock)
	// The first connection makes systemd-socket-activate exec the daemon.
	// The socket file appears at bind, a moment before listen: retry a
	// refused connection.
	var c *client.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err = client.Dial(sock)
		if err == nil || !errors.Is(err, unix.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, errb.String())
	}
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(u32b(1), u32b(7), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(m, "act", 0o600); err != nil {
		t.Fatal(err)
	}
	m2, err := c.OpenPinnedMap("act", client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 4)
	if err := m2.Lookup(u32b(1), v); err != nil || !bytes.Equal(v, u32b(7)) {
		t.Fatalf("lookup through activated socket: %v %x", err, v)
	}
	m2.Close()
	m.Close()
	c.Close()
	if _, err := os.Stat(filepath.Join(dir, "unused.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the daemon bound its own socket although one was passed")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), `"socket_activated": true`) {
		t.Fatalf("log does not say socket-activated:\n%s", errb.String())
	}

	// A stream socket is not what bpfd speaks: it refuses to start.
	sock2 := filepath.Join(dir, "stream.sock")
	cmd2 := exec.Command(ssa, append([]string{"-l", sock2, "-E", "BPFD_TEST_DAEMON=1",
		os.Args[0], "-test.run=^$", "--", "--socket", filepath.Join(dir, "unused2.sock")}, dirs...)...)
	var errb2 syncBuffer
	cmd2.Stderr = &errb2
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd2.Process.Kill(); cmd2.Wait() })
	waitPath(t, sock2)
	// The socket file appears at bind, before systemd-socket-activate
	// listens: until then a connect is refused.
	var sc net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		sc, err = net.Dial("unix", sock2)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	werr := make(chan error, 1)
	go func() { werr <- cmd2.Wait() }()
	select {
	case err := <-werr:
		if err == nil || !strings.Contains(errb2.String(), "SOCK_SEQPACKET") {
			t.Fatalf("daemon on a stream socket: exit %v\n%s", err, errb2.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon kept running on a stream socket")
	}
}

func waitPath(t *testing.T, p string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func u32b(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func u64b(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// startDaemon starts the daemon process on sock with the given pin root
// and state dir, and waits until it answers.
func startDaemon(t *testing.T, sock, pins, state string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := daemonCmd("--socket", sock, "--pin-root", pins, "--state-dir", state, "--log-level", "debug")
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitSocket(t, sock)
	return cmd, errb
}

func stopDaemon(t *testing.T, cmd *exec.Cmd, errb *syncBuffer, sig syscall.Signal) {
	t.Helper()
	cmd.Process.Signal(sig)
	err := cmd.Wait()
	if sig == syscall.SIGTERM && err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, errb.String())
	}
}

// TestRestartKeepsPinnedMaps: pin, fill a map, SIGTERM, start again: the
// same pin path yields the same contents. After a crash (SIGKILL), the pins
// survive with the contents of their last write.
func TestRestartKeepsPinnedMaps(t *testing.T) {
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, errb := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64, Name: "persist"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PinMkdir("app", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(m, "app/counts", 0o640); err != nil {
		t.Fatal(err)
	}
	ro, err := m.Reopen(client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(ro, filepath.Join(pins, "app", "counts.ro"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < 50; i++ {
		if err := m.Update(u32b(i), u64b(uint64(i)*1000), client.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	arr, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 4, MaxEntries: 8, Name: "frozen"})
	if err != nil {
		t.Fatal(err)
	}
	arr.Update(u32b(3), u32b(33), client.UpdateAny)
	if err := arr.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(arr, "frozen", 0o600); err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(filepath.Join(pins, "app", "counts"))
	c.Close()
	stopDaemon(t, cmd, errb, syscall.SIGTERM)

	cmd, errb = startDaemon(t, sock, pins, state)
	c, err = client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check := func(path string, mode client.Mode, n uint32) *client.Map {
		t.Helper()
		m, err := c.OpenPinnedMap(path, mode)
		if err != nil {
			t.Fatalf("OpenPinnedMap(%s) after restart: %v\n%s", path, err, errb.String())
		}
		v := make([]byte, 8)
		for i := uint32(0); i < n; i++ {
			if err := m.Lookup(u32b(i), v); err != nil || binary.LittleEndian.Uint64(v) != uint64(i)*1000 {
				t.Fatalf("%s[%d] after restart: %v %x", path, i, err, v)
			}
		}
		return m
	}
	m = check("app/counts", client.ModeReadWrite, 50)
	if st2, _ := os.Stat(filepath.Join(pins, "app", "counts")); !os.SameFile(st1, st2) {
		t.Fatal("pin file was re-created instead of adopted")
	}
	// Both pins name the same object again.
	mro := check("app/counts.ro", client.ModeRead, 50)
	if err := m.Update(u32b(99), u64b(99000), client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 8)
	if err := mro.Lookup(u32b(99), v); err != nil {
		t.Fatalf("the two pins are different objects after restart: %v", err)
	}
	if _, err := c.OpenPinnedMap("app/counts.ro", client.ModeReadWrite); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("read-only pin opened rw after restart: %v", err)
	}
	fa, err := c.OpenPinnedMap("frozen", client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := fa.Info()
	v4 := make([]byte, 4)
	if err != nil || !info.Frozen || fa.Lookup(u32b(3), v4) != nil || !bytes.Equal(v4, u32b(33)) {
		t.Fatalf("frozen array after restart: %+v %v %x", info, err, v4)
	}

	// A crash: every acknowledged write survives, also those made after
	// the pin (the map's storage is its region file in the runtime
	// directory).
	m3, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	m3.Update(u32b(0), u32b(1), client.UpdateAny)
	if err := c.Pin(m3, "crash", 0o600); err != nil {
		t.Fatal(err)
	}
	m3.Update(u32b(0), u32b(2), client.UpdateAny)
	c.Close()
	stopDaemon(t, cmd, errb, syscall.SIGKILL)
	_, errb = startDaemon(t, sock, pins, state)
	c, err = client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mc, err := c.OpenPinnedMap("crash", client.ModeRead)
	if err != nil {
		t.Fatalf("pin lost in a crash: %v\n%s", err, errb.String())
	}
	if err := mc.Lookup(u32b(0), v4); err != nil || !bytes.Equal(v4, u32b(2)) {
		t.Fatalf("crashed map holds %x, want 2, the last value written before the crash: %v", v4, err)
	}
	// The map pinned before the clean shutdown survived the crash too.
	check("app/counts", client.ModeRead, 50)
	// Unpinning removes the record: a restart does not bring it back.
	if err := os.Remove(filepath.Join(pins, "frozen")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, _ := filepath.Glob(filepath.Join(state, "pinned-*"))
		if len(ents) == 4 { // the state and pins files of the two other objects
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state files after unpin: %v\n%s", ents, errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tcp4 is an Ethernet/IPv4/TCP frame to dport.
func tcp4(dport uint16) []byte {
	b := make([]byte, 14+20+20)
	b[12], b[13] = 0x08, 0x00
	b[14] = 0x45
	b[14+9] = 6
	binary.BigEndian.PutUint16(b[14+20+2:], dport)
	b[14+20+12] = 5 << 4
	return b
}

// TestRestartKeepsPinnedPrograms: a pinned program survives a clean
// restart, bound to the restored map it shares with that map's own pin
// (a change through the map pin changes the program's verdicts), with its
// unpinned map's contents.
func TestRestartKeepsPinnedPrograms(t *testing.T) {
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, errb := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := c.LoadCollection("../../testdata/bpf/xdp_ports.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	const drop, pass = 1, 2
	if err := coll.Maps["ports"].Update(binary.LittleEndian.AppendUint16(nil, 80), []byte{1}, client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := c.PinMkdir("fw", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(coll.Maps["ports"], "fw/ports", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(coll.Programs["xdp_ports"], "fw/xdp_ports", 0o644); err != nil {
		t.Fatal(err)
	}
	if ret, err := coll.Programs["xdp_ports"].Run(&client.RunOptions{Data: tcp4(80)}); err != nil || ret != pass {
		t.Fatalf("before restart: %d, %v", ret, err)
	}
	coll.Close()
	c.Close()
	stopDaemon(t, cmd, errb, syscall.SIGTERM)

	cmd, errb = startDaemon(t, sock, pins, state)
	c, err = client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.OpenPinnedProgram("fw/xdp_ports", client.ModeRead)
	if err != nil {
		t.Fatalf("pinned program after restart: %v\n%s", err, errb.String())
	}
	defer p.Close()
	run := func() uint32 {
		t.Helper()
		ret, err := p.Run(&client.RunOptions{Data: tcp4(80)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	if got := run(); got != pass {
		t.Fatalf("port 80 after restart: verdict %d, want pass", got)
	}
	info, err := p.Info()
	if err != nil || info.Name != "xdp_ports" || info.Type != client.XDP {
		t.Fatalf("Info after restart: %+v, %v", info, err)
	}
	ports, err := c.OpenPinnedMap("fw/ports", client.ModeReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer ports.Close()
	if err := ports.Delete(binary.LittleEndian.AppendUint16(nil, 80)); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != drop {
		t.Fatalf("after deleting port 80 through the map's pin: verdict %d, want drop (program and pin must share the map)", got)
	}
	st, err := c.Status()
	if err != nil || st.Programs != 1 || st.Maps != 2 {
		t.Fatalf("status after restart: %+v, %v (want the program, its pinned map and its stats map)", st, err)
	}
	if strings.Contains(errb.String(), "cannot restore") {
		t.Fatalf("restore errors:\n%s", errb.String())
	}
	stopDaemon(t, cmd, errb, syscall.SIGTERM)
}

// TestRestartKeepsAuthority: the authority tree and pin permissions
// survive restarts and crashes of a real daemon. A pin made from a lent
// (reopened) descriptor comes back lent — without the destroy right,
// below the descriptor it came from — and the owner revokes it after the
// restart (REVOKE_NODE through its own pin): it does not come back after a
// crash. A pin chmod'ed after it was made, whose file is gone when the
// daemon comes back from a crash, is re-created with the last mode, not
// the first.
func TestRestartKeepsAuthority(t *testing.T) {
	dir := t.TempDir()
	sock, pins, state := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"), filepath.Join(dir, "state")
	cmd, errb := startDaemon(t, sock, pins, state)
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.NewMap(client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "owned"})
	if err != nil {
		t.Fatal(err)
	}
	m.Update(u32b(0), u32b(7), client.UpdateAny)
	for _, p := range []struct {
		name string
		perm os.FileMode
	}{{"own", 0o600}, {"perm", 0o644}} {
		if err := c.Pin(m, p.name, p.perm); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := m.Reopen(client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := ro.Info()
	lentNode := info.Node
	if err := c.Pin(ro, "lent", 0o644); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stopDaemon(t, cmd, errb, syscall.SIGTERM)

	cmd, errb = startDaemon(t, sock, pins, state)
	c, err = client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	lent, err := c.OpenPinnedMap("lent", client.ModeRead)
	if err != nil {
		t.Fatalf("lent pin after restart: %v\n%s", err, errb.String())
	}
	if err := lent.Destroy(); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("destroy through the restored lent pin: %v", err)
	}
	if _, err := c.OpenPinnedMap("lent", client.ModeRead|client.ModeDestroy); !errors.Is(err, client.ErrAccess) {
		t.Fatalf("destroy right from the restored lent pin: %v", err)
	}
	// The permissions change after pin time is recorded at once.
	if err := os.Chmod(filepath.Join(pins, "perm"), 0o600); err != nil {
		t.Fatal(err)
	}
	own, err := c.OpenPinnedMap("own", client.ModeAll)
	if err != nil {
		t.Fatalf("own pin after restart: %v", err)
	}
	nodes, err := own.Lineage()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range nodes {
		if n.ID == lentNode && !n.Live && !n.Pin {
			found = true
		}
	}
	if !found {
		t.Fatalf("restored lineage %+v lacks the lent descriptor %d", nodes, lentNode)
	}
	if n, err := own.RevokeNode(lentNode); err != nil || n < 3 { // the descriptor, its pin, the one opened from it
		t.Fatalf("RevokeNode(%d) after restart = %d, %v", lentNode, n, err)
	}
	if err := lent.Lookup(u32b(0), make([]byte, 4)); !errors.Is(err, client.ErrBadDescriptor) {
		t.Fatalf("descriptor from the revoked restored pin: %v", err)
	}
	// Wait until the chmod is in the record (the pins file changes).
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(state + "/" + pinsFileOf(t, state))
		if bytes.Contains(b, []byte(`"path":"perm","mode":"rwd"`)) && bytes.Contains(b, []byte(`"perm":384`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chmod never reached the record: %s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	stopDaemon(t, cmd, errb, syscall.SIGKILL)
	// A reboot emptied /run: the runtime directory (map storage, the
	// journal) and part of the pin root. (In the same boot a pin file
	// gone is a pin unlinked while the daemon was down, and stays gone.)
	if err := os.Remove(filepath.Join(pins, "perm")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(DefaultRuntimeDir(pins)); err != nil {
		t.Fatal(err)
	}
	_, errb = startDaemon(t, sock, pins, state)
	// The daemon binds its socket before it restores, and serves after:
	// a request answered means the restore is done.
	c, err = client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(pins, "lent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the revoked pin came back after a crash: %v\n%s", err, errb.String())
	}
	st, err := os.Stat(filepath.Join(pins, "perm"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("re-created pin: %v %v, want mode 0600 (the last recorded)\n%s", st, err, errb.String())
	}
	own, err = c.OpenPinnedMap("own", client.ModeAll)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 4)
	if err := own.Lookup(u32b(0), v); err != nil || !bytes.Equal(v, u32b(7)) {
		t.Fatalf("the owner's map after it all: %x %v", v, err)
	}
}

// pinsFileOf returns the name of the only pins file in state.
func pinsFileOf(t *testing.T, state string) string {
	t.Helper()
	ents, _ := filepath.Glob(filepath.Join(state, "pinned-*.pins"))
	if len(ents) != 1 {
		t.Fatalf("pins files: %v", ents)
	}
	return filepath.Base(ents[0])
}

// waitUntil polls cond until it holds, failing the test with what after
// limit (a bound for a loaded machine, not a timing expectation).
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

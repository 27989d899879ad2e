package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// clientRoleEnv makes the test binary play a client role (runClientRole).
const clientRoleEnv = "BPFD_TEST_CLIENT_ROLE"

// runClientRole runs a client-side role of the capability test.
func runClientRole(role string) int {
	var err error
	switch role {
	case "capsclient":
		err = capsClient(os.Getenv("BPFD_TEST_SOCKET"), os.Getenv("BPFD_TEST_PINS"))
	case "getppid":
		// Routed to a program whose verdict is kill.
		unix.Getppid()
		fmt.Println("survived")
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "client role %s: %v\n", role, err)
		return 1
	}
	return 0
}

// capsClient does, as an ordinary user, what needs each of the service's
// capabilities, and prints one "what result" line for each.
func capsClient(sock, pinRoot string) error {
	c, err := client.Dial(sock)
	if err != nil {
		return err
	}
	defer c.Close()
	spec := client.MapSpec{Type: client.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	top, err := c.NewMap(spec)
	if err != nil {
		return err
	}
	inDir, err := c.NewMap(spec)
	if err != nil {
		return err
	}
	owner := func(name string) string {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(pinRoot, name), &st); err != nil {
			return errName(err)
		}
		return fmt.Sprint(st.Uid)
	}
	// CAP_SETUID/SETGID: pin files and directories belong to their user.
	fmt.Printf("pin-top %s\n", errName(c.Pin(top, "top", 0o600)))
	fmt.Printf("pin-top-owner %s\n", owner("top"))
	fmt.Printf("mkdir %s\n", errName(c.PinMkdir("d", 0o700)))
	fmt.Printf("pin-in-dir %s\n", errName(c.Pin(inDir, "d/p", 0o600)))
	// CAP_FOWNER (sticky pin root) and CAP_DAC_OVERRIDE (a 0700
	// directory of the user's): destroying removes the pin files.
	fmt.Printf("destroy-top %s\n", errName(top.Destroy()))
	fmt.Printf("after-destroy-top %s\n", owner("top"))
	fmt.Printf("destroy-in-dir %s\n", errName(inDir.Destroy()))
	fmt.Printf("after-destroy-in-dir %s\n", owner("d/p"))
	// Pins kept for the restore phase: one at the top, one in a
	// directory the test then makes setgid.
	keep, err := c.NewMap(spec)
	if err != nil {
		return err
	}
	fmt.Printf("pin-keep %s\n", errName(c.Pin(keep, "keep", 0o640)))
	fmt.Printf("mkdir-g %s\n", errName(c.PinMkdir("g", 0o770)))
	fmt.Printf("pin-g-keep %s\n", errName(c.Pin(keep, "g/keep", 0o640)))
	// CAP_KILL: a seccomp program's kill verdict on this user's process.
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.Seccomp, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.Mov.Imm32(asm.R0, 0x7fff0000), // SECCOMP_RET_ALLOW
		asm.JNE.Imm(asm.R2, unix.SYS_GETPPID, "out"),
		asm.Mov.Imm32(asm.R0, int32(-0x80000000)), // SECCOMP_RET_KILL_PROCESS
		asm.Return().WithSymbol("out"),
	}})
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), clientRoleEnv+"=getppid")
	var out strings.Builder
	cmd.Stdout = &out
	run, err := p.StartSeccomp(cmd, &client.SeccompOptions{Syscalls: []string{"getppid"}})
	if err != nil {
		return err
	}
	run.Wait()
	ws := run.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		fmt.Printf("kill-verdict %s\n", unix.SignalName(ws.Signal()))
	case strings.Contains(out.String(), "survived"):
		fmt.Println("kill-verdict survived")
	default:
		fmt.Printf("kill-verdict exit-%d\n", ws.ExitStatus())
	}
	return nil
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return "error"
}

// capsLinkQueue and capsLinkPort: the netfilter queue and UDP port of the
// link phase, inside the test's own network namespace.
const (
	capsLinkQueue = 41
	capsLinkPort  = 7941
)

// capsLink attaches an XDP program that passes everything to netfilter
// queue capsLinkQueue of ns, as root (binding a queue needs CAP_NET_ADMIN
// in the client, whatever the daemon holds), and sends a datagram that
// the iptables rule queues: it arrives only if the daemon could configure
// the queue and send its verdict, both of which the kernel allows only to
// a sender with CAP_NET_ADMIN (nfnetlink's netlink_net_capable). It
// returns the "link-attach" and "link-verdict" results.
func capsLink(t *testing.T, sock string, ns *netnstest.NS) (attach, verdict string) {
	t.Helper()
	c, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.LoadProgram(client.ProgramSpec{Type: client.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, 2), // XDP_PASS
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l, err := p.AttachNFQueue(capsLinkQueue, &client.NFQueueOptions{NetNS: ns.FD()})
	if err != nil {
		return errName(err), "not-attached"
	}
	defer l.Close()
	defer l.Detach()
	var u *net.UDPConn
	lo := net.IPv4(127, 0, 0, 1)
	if err := ns.Do(func() (err error) {
		u, err = net.ListenUDP("udp", &net.UDPAddr{IP: lo, Port: capsLinkPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := ns.Do(func() error {
		s, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: lo, Port: capsLinkPort})
		if err != nil {
			return err
		}
		defer s.Close()
		_, err = s.Write([]byte("decide me"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "decide me" {
		return "ok", "none"
	}
	st, err := l.Stats()
	if err != nil || st.Pass != 1 {
		return "ok", fmt.Sprintf("stats-%v-%d", err, st.Pass)
	}
	return "ok", "pass"
}

// unitCapabilities returns the capabilities systemd/bpfd.service keeps.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "systemd", "bpfd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("bpfd.service has no CapabilityBoundingSet")
	return nil
}

// TestServiceCapabilities runs the daemon as root with exactly the
// capabilities of systemd/bpfd.service (setpriv --bounding-set) and checks
// that what an ordinary user (uid 65534) does through it works: pins that
// belong to the user, in the sticky pin root and in a 0700 directory of
// the user's, removed again by DESTROY, and a seccomp kill verdict on the
// user's process. Then it takes each capability away in turn and shows
// the operation it is there for failing — so the unit grants nothing the
// code does not use (CAP_SYS_PTRACE among them: it is not in the unit,
// and everything passes). The restore phase (a new boot: pin files gone)
// shows CAP_FOWNER and CAP_CHOWN, which restores need. The daemon runs in
// a network namespace the test creates (its host namespace, as the
// service's is the machine's: the unit has no PrivateNetwork), where a
// root client attaches a program to a netfilter queue and a queued
// datagram gets the program's verdict: CAP_NET_ADMIN's reason.
func TestServiceCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon runs as root with the unit's capabilities, the client as uid 65534")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	caps := unitCapabilities(t)
	for _, c := range caps {
		if c == "CAP_SYS_PTRACE" {
			t.Fatal("bpfd.service grants CAP_SYS_PTRACE, which the daemon does not use")
		}
	}
	bin := sharedBinary(t)
	// prlimit gives the daemon the unit's LimitNICE=+0; raising the hard
	// RLIMIT_NICE needs CAP_SYS_RESOURCE, which containers may lack.
	prlimit, _ := exec.LookPath("prlimit")
	if prlimit != "" {
		if out, err := exec.Command(prlimit, "--nice=20:20", "--", "true").CombinedOutput(); err != nil {
			t.Logf("no LimitNICE phase (niced bulk work unproven): %v: %s", err, out)
			prlimit = ""
		}
	}
	netMissing := netnstest.Missing()
	if netMissing != "" {
		t.Logf("no link phase (CAP_NET_ADMIN unproven): %s", netMissing)
	}
	want := map[string]string{"link-attach": "ok", "link-verdict": "pass", "pin-top": "ok", "pin-top-owner": "65534", "mkdir": "ok", "pin-in-dir": "ok",
		"destroy-top": "ok", "after-destroy-top": "ENOENT", "destroy-in-dir": "ok", "after-destroy-in-dir": "ENOENT",
		"kill-verdict": "SIGKILL", "pin-keep": "ok", "mkdir-g": "ok", "pin-g-keep": "ok",
		"restored-keep": "65534:65534:640", "restored-g-keep": "65534:0:640"}
	tests := []struct {
		name    string
		without string
		changed map[string]string // what differs from want without the capability
	}{
		{name: "the unit's capabilities"},
		// Pins cannot be created as their user.
		{name: "without CAP_SETUID", without: "CAP_SETUID", changed: map[string]string{"pin-top": "!ok",
			"pin-top-owner": "ENOENT", "mkdir": "!ok", "pin-in-dir": "!ok", "pin-keep": "!ok", "mkdir-g": "!ok",
			"pin-g-keep": "!ok", "restored-keep": "ENOENT", "restored-g-keep": "ENOENT"}},
		// A pin file of mode 0600 cannot be watched (inotify needs read
		// access), a 0700 directory of the user's cannot be searched.
		{name: "without CAP_DAC_OVERRIDE", without: "CAP_DAC_OVERRIDE", changed: map[string]string{"pin-top": "!ok",
			"pin-top-owner": "ENOENT", "pin-in-dir": "!ok", "after-destroy-in-dir": "*", "pin-keep": "!ok",
			"pin-g-keep": "!ok", "restored-keep": "ENOENT", "restored-g-keep": "ENOENT"}},
		// A restored pin file cannot be given its recorded mode.
		{name: "without CAP_FOWNER", without: "CAP_FOWNER", changed: map[string]string{"restored-keep": "ENOENT",
			"restored-g-keep": "ENOENT"}},
		// A restored pin file cannot be given its recorded group.
		{name: "without CAP_CHOWN", without: "CAP_CHOWN", changed: map[string]string{"restored-g-keep": "ENOENT"}},
		// The kill verdict cannot be carried out on another user's process.
		{name: "without CAP_KILL", without: "CAP_KILL", changed: map[string]string{"kill-verdict": "!SIGKILL"}},
		// The daemon cannot configure the queue its client bound, nor
		// send verdicts: nfnetlink checks the sender's CAP_NET_ADMIN.
		{name: "without CAP_NET_ADMIN", without: "CAP_NET_ADMIN", changed: map[string]string{"link-attach": "!ok",
			"link-verdict": "!pass"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var keep []string
			for _, c := range caps {
				if c != tt.without {
					keep = append(keep, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
				}
			}
			dir, err := os.MkdirTemp("", "bpfd-caps-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			os.Chmod(dir, 0o755)
			sock, pins, state, runtimeDir := filepath.Join(dir, "bpfd.sock"), filepath.Join(dir, "pins"),
				filepath.Join(dir, "state"), filepath.Join(dir, "runtime")
			errb := &syncBuffer{}
			var ns *netnstest.NS
			var inNS []string // the daemon's command prefix
			if netMissing == "" {
				ns = netnstest.New(t, "bcap")
				ns.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", fmt.Sprint(capsLinkPort), "-j", "NFQUEUE",
					"--queue-num", fmt.Sprint(capsLinkQueue))
				inNS = []string{"ip", "netns", "exec", ns.Name}
			}
			// The unit's LimitNICE=+0 (RLIMIT_NICE 20), with which the
			// daemon gives bulk threads their priority back without
			// CAP_SYS_NICE.
			var limits []string
			if prlimit != "" {
				limits = []string{prlimit, "--nice=20:20", "--"}
			}
			start := func() *exec.Cmd {
				args := append(append(append([]string{}, inNS...), limits...), setpriv, "--bounding-set", "-all,"+strings.Join(keep, ","), "--inh-caps", "-all", "--",
					bin, "-test.run=^$", "--", "--socket", sock, "--pin-root", pins, "--state-dir", state,
					"--runtime-dir", runtimeDir)
				d := exec.Command(args[0], args[1:]...)
				d.Env = append(os.Environ(), "BPFD_TEST_DAEMON=1")
				d.Stderr = errb
				if err := d.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Process.Kill(); d.Wait() })
				waitSocket(t, sock)
				if err := waitCaps(d.Process.Pid, len(keep)); err != nil {
					t.Fatal(err)
				}
				return d
			}
			d := start()
			if prlimit != "" {
				// Bulk work runs niced (sched.Config.Nice) under the
				// unit: the start-up log says so.
				deadline := time.Now().Add(5 * time.Second)
				for !strings.Contains(errb.String(), `"bulk_nice": 10`) {
					if time.Now().After(deadline) {
						t.Fatalf("the daemon runs bulk work at its own priority under the unit's limits:\n%s", errb.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}

			c := exec.Command(bin, "-test.run=^$")
			c.Env = append(os.Environ(), clientRoleEnv+"=capsclient", "BPFD_TEST_SOCKET="+sock, "BPFD_TEST_PINS="+pins)
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
			out, err := c.Output()
			if err != nil {
				t.Fatalf("client: %v\n%s\ndaemon: %s", err, out, errb.String())
			}
			got := map[string]string{}
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				k, v, _ := strings.Cut(sc.Text(), " ")
				got[k] = v
			}
			if ns != nil {
				got["link-attach"], got["link-verdict"] = capsLink(t, sock, ns)
				t.Logf("link: attach %s, verdict %s", got["link-attach"], got["link-verdict"])
			}

			// Restore after a reboot: the pin files are gone and the
			// daemon re-creates them as their owner, then gives them
			// exactly their recorded attributes. g/keep's group is
			// changed to root's (recorded by the daemon) and its
			// directory made setgid with the user's group, so that
			// re-creating it there gives it the wrong group.
			g := filepath.Join(pins, "g")
			os.Chown(filepath.Join(g, "keep"), 65534, 0)
			os.Chmod(g, 0o770|os.ModeSetgid)
			d.Process.Signal(syscall.SIGTERM)
			d.Wait()
			os.Remove(filepath.Join(pins, "keep"))
			os.Remove(filepath.Join(g, "keep"))
			// Another boot: the runtime directory's recorded boot id
			// changes.
			os.WriteFile(filepath.Join(runtimeDir, "boot-id"), []byte("00000000-0000-0000-0000-000000000000\n"), 0o600)
			start()
			hello(t, sock) // answered once the restore is done
			for _, name := range []string{"keep", "g/keep"} {
				var st unix.Stat_t
				key := "restored-" + strings.ReplaceAll(name, "/", "-")
				if err := unix.Lstat(filepath.Join(pins, name), &st); err != nil {
					got[key] = errName(err)
				} else {
					got[key] = fmt.Sprintf("%d:%d:%o", st.Uid, st.Gid, st.Mode&0o777)
				}
			}
			for k, v := range want {
				if ns == nil && strings.HasPrefix(k, "link-") {
					continue
				}
				w := v
				if cv, ok := tt.changed[k]; ok {
					w = cv
				}
				if w == "*" {
					continue
				}
				if not, ok := strings.CutPrefix(w, "!"); ok {
					if got[k] == not {
						t.Errorf("%s: %q without %s, want anything else (all: %v)", k, got[k], tt.without, got)
					}
					continue
				}
				if got[k] != w {
					t.Errorf("%s: %q, want %q (all: %v)", k, got[k], w, got)
				}
			}
		})
	}
}

// waitCaps checks that process pid runs with n effective capabilities.
// It looks at every thread and takes the most: a thread that served pins
// as their user (setfsuid drops the file capabilities) may be the main
// thread, which the Go runtime parks instead of ending, so
// /proc/PID/status alone can show fewer.
func waitCaps(pid, n int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil || len(tasks) == 0 {
			return fmt.Errorf("daemon %d: no threads (%v)", pid, err)
		}
		most, mostMask := -1, uint64(0)
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			if err != nil {
				continue // the thread ended
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
					var mask uint64
					fmt.Sscanf(strings.TrimSpace(v), "%x", &mask)
					if bits := popcount(mask); bits > most {
						most, mostMask = bits, mask
					}
				}
			}
		}
		if most == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon runs with %d effective capabilities (%#x), want %d", most, mostMask, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// sharedBinary returns a copy of the test binary that uid 65534 may
// execute (go test's build directory is private to root).
func sharedBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bpfd-daemon-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "daemon.test")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

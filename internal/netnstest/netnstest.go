// Package netnstest gives tests private network namespaces: each test
// creates its own (unique names, so tests of several packages and several
// helpers can run at once on one machine), joins them with veth pairs,
// installs netfilter rules in them with iptables, and removes them at
// cleanup. Traffic never leaves these namespaces: addresses come from the
// benchmarking range 198.18.0.0/15 (RFC 2544) and the ULA fd00::/8, and
// exist only inside them.
//
// Everything here needs root; Require skips a test with the reason when
// the machine cannot do it (not root, no ip(8) or iptables, no NFQUEUE
// target in the kernel).
package netnstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is one network namespace made by New. Safe for concurrent use.
type NS struct {
	Name string
	f    *os.File // /run/netns/Name, held open
}

var seq atomic.Int64

// IPTables is the iptables binary that works on this machine with the
// NFQUEUE target (iptables-nft or iptables-legacy), found by Require.
var (
	iptOnce  sync.Once
	iptables string
	ip6table string
	iptErr   string
)

// Require skips t unless the process is root and ip(8) and an iptables
// with the NFQUEUE target work here.
func Require(t testing.TB) {
	t.Helper()
	if why := Missing(); why != "" {
		t.Skip(why)
	}
}

// Missing returns why Require would skip, or "" when namespaces and the
// NFQUEUE target work here: for a test that does its namespace part only
// when it can.
func Missing() string {
	if os.Geteuid() != 0 {
		return "network namespaces and netfilter queues need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "ip(8) not installed (iproute2)"
	}
	iptOnce.Do(probe)
	return iptErr
}

// probe finds an iptables flavour whose NFQUEUE target works, in a
// throwaway namespace.
func probe() {
	name := fmt.Sprintf("bpfdprobe%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		iptErr = fmt.Sprintf("cannot create a network namespace: %v: %s", err, out)
		return
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	var tried []string
	for _, pair := range [][2]string{{"iptables", "ip6tables"}, {"iptables-nft", "ip6tables-nft"}, {"iptables-legacy", "ip6tables-legacy"}} {
		if _, err := exec.LookPath(pair[0]); err != nil {
			continue
		}
		ok := true
		for _, bin := range pair {
			out, err := exec.Command("ip", "netns", "exec", name, bin, "-A", "INPUT", "-p", "udp", "--dport", "9",
				"-j", "NFQUEUE", "--queue-num", "9").CombinedOutput()
			if err != nil {
				tried = append(tried, fmt.Sprintf("%s: %v: %s", bin, err, strings.TrimSpace(string(out))))
				ok = false
				break
			}
		}
		if ok {
			iptables, ip6table = pair[0], pair[1]
			return
		}
	}
	if len(tried) == 0 {
		iptErr = "iptables not installed (.ci/run installs it)"
		return
	}
	iptErr = "no iptables with a working NFQUEUE target: " + strings.Join(tried, "; ")
}

// IPTables returns the iptables and ip6tables binaries Require found.
func IPTables() (string, string) { return iptables, ip6table }

// New creates a network namespace named after prefix, the process id and
// a counter, with its loopback up, and removes it at t's cleanup.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	Require(t)
	name := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatal(err)
	}
	n := &NS{Name: name, f: f}
	t.Cleanup(func() {
		f.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

// FD returns an fd of the namespace (valid until cleanup).
func (n *NS) FD() int { return int(n.f.Fd()) }

// Run runs a command inside the namespace (ip netns exec) and returns
// its combined output.
func (n *NS) Run(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails t on error.
func (n *NS) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// IPT runs iptables (v6: ip6tables) with args inside the namespace.
func (n *NS) IPT(t testing.TB, v6 bool, args ...string) {
	t.Helper()
	bin := iptables
	if v6 {
		bin = ip6table
	}
	n.MustRun(t, append([]string{bin, "-w"}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace: sockets fn
// opens and processes it starts (their netns is the thread's) belong to
// the namespace. The thread is discarded afterwards if it cannot go back.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(n.FD(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- os.NewSyscallError("setns", err)
			return
		}
		err = fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Pair is two namespaces joined by a veth pair, A (198.18.0.1, fd00:bd::1)
// and B (198.18.0.2, fd00:bd::2), both up, IPv6 without duplicate address
// detection so the addresses work at once.
type Pair struct {
	A, B         *NS
	AIfindex     int // ifindex of A's veth end (in A)
	BIfindex     int // ifindex of B's veth end (in B)
	AMAC, BMAC   net.HardwareAddr
	A4, B4       net.IP
	A6, B6       net.IP
	AName, BName string
}

// NewPair creates two namespaces and a veth pair between them.
func NewPair(t testing.TB, prefix string) *Pair {
	t.Helper()
	a, b := New(t, prefix+"a"), New(t, prefix+"b")
	p := &Pair{A: a, B: b, AName: "veth0", BName: "veth1",
		A4: net.IPv4(198, 18, 0, 1).To4(), B4: net.IPv4(198, 18, 0, 2).To4(),
		A6: net.ParseIP("fd00:bd::1"), B6: net.ParseIP("fd00:bd::2")}
	a.MustRun(t, "ip", "link", "add", p.AName, "type", "veth", "peer", "name", p.BName, "netns", b.Name)
	a.MustRun(t, "ip", "addr", "add", "198.18.0.1/24", "dev", p.AName)
	a.MustRun(t, "ip", "addr", "add", "fd00:bd::1/64", "dev", p.AName, "nodad")
	a.MustRun(t, "ip", "link", "set", p.AName, "up")
	b.MustRun(t, "ip", "addr", "add", "198.18.0.2/24", "dev", p.BName)
	b.MustRun(t, "ip", "addr", "add", "fd00:bd::2/64", "dev", p.BName, "nodad")
	b.MustRun(t, "ip", "link", "set", p.BName, "up")
	for _, side := range []struct {
		ns   *NS
		name string
		idx  *int
		mac  *net.HardwareAddr
	}{{a, p.AName, &p.AIfindex, &p.AMAC}, {b, p.BName, &p.BIfindex, &p.BMAC}} {
		err := side.ns.Do(func() error {
			ifc, err := net.InterfaceByName(side.name)
			if err != nil {
				return err
			}
			*side.idx, *side.mac = ifc.Index, ifc.HardwareAddr
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Neighbour entries up front: no ARP or NDP packets in the way of
	// the first packets a test counts.
	a.MustRun(t, "ip", "neigh", "replace", "198.18.0.2", "lladdr", p.BMAC.String(), "dev", p.AName, "nud", "permanent")
	a.MustRun(t, "ip", "neigh", "replace", "fd00:bd::2", "lladdr", p.BMAC.String(), "dev", p.AName, "nud", "permanent")
	b.MustRun(t, "ip", "neigh", "replace", "198.18.0.1", "lladdr", p.AMAC.String(), "dev", p.BName, "nud", "permanent")
	b.MustRun(t, "ip", "neigh", "replace", "fd00:bd::1", "lladdr", p.AMAC.String(), "dev", p.BName, "nud", "permanent")
	return p
}

// SharedBinary returns a copy of the running test binary that any user
// may execute (go test's build directory is private to root), removed at
// t's cleanup: children re-executed as uid 65534 run it.
func SharedBinary(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bpfd-netns-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := dir + "/" + "test.bin"
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

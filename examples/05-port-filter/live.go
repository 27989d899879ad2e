package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
)

// Live mode (`05-port-filter live`, as root): the same filter decides real
// traffic. Two network namespaces, "a" and "b", are joined by a veth pair;
// in b an iptables rule sends every TCP and UDP packet to netfilter queue
// 5, and the unchanged port_filter program is attached to that queue
// (Program.AttachNFQueue: this process binds the queue with its own
// CAP_NET_ADMIN and hands the socket to bpfd). After each edit by the
// untrusted editor, real UDP datagrams and TCP connections go from a to b
// and the verdicts printed are what arrived. The namespaces are removed at
// the end; addresses exist only inside them.

const liveQueue = 5

// netns is a network namespace made by this example.
type netns struct {
	name string
	f    *os.File
}

func newNetns(name string) (*netns, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		return nil, err
	}
	return &netns{name: name, f: f}, nil
}

func (n *netns) remove() {
	n.f.Close()
	exec.Command("ip", "netns", "del", n.name).Run()
}

// run runs a command inside the namespace.
func (n *netns) run(args ...string) error {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// do runs fn on a thread inside the namespace (sockets it opens live
// there).
func (n *netns) do(fn func() error) error {
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
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
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

// testbed is the two namespaces and what listens in b.
type testbed struct {
	a, b    *netns
	closers []io.Closer
}

const macA, macB = "02:00:00:00:05:0a", "02:00:00:00:05:0b"

var (
	addrB4 = net.IPv4(198, 18, 0, 2)
	addrB6 = net.ParseIP("fd00:bd::2")
)

func setupTestbed() (*testbed, error) {
	id := strconv.Itoa(os.Getpid())
	tb := &testbed{}
	var err error
	if tb.a, err = newNetns("bpfd-ex05-" + id + "-a"); err != nil {
		return nil, err
	}
	if tb.b, err = newNetns("bpfd-ex05-" + id + "-b"); err != nil {
		tb.a.remove()
		return nil, err
	}
	iptables := "iptables"
	steps := [][]string{
		{"a", "ip", "link", "set", "lo", "up"},
		{"b", "ip", "link", "set", "lo", "up"},
		{"a", "ip", "link", "add", "veth0", "address", macA, "type", "veth", "peer", "name", "veth1", "address", macB, "netns", tb.b.name},
		{"a", "ip", "addr", "add", "198.18.0.1/24", "dev", "veth0"},
		{"a", "ip", "addr", "add", "fd00:bd::1/64", "dev", "veth0", "nodad"},
		{"a", "ip", "link", "set", "veth0", "up"},
		{"b", "ip", "addr", "add", "198.18.0.2/24", "dev", "veth1"},
		{"b", "ip", "addr", "add", "fd00:bd::2/64", "dev", "veth1", "nodad"},
		{"b", "ip", "link", "set", "veth1", "up"},
		// Neighbours known up front: the first probes need no ARP or
		// neighbour discovery (which would wait for link-local DAD).
		{"a", "ip", "neigh", "replace", "198.18.0.2", "lladdr", macB, "dev", "veth0", "nud", "permanent"},
		{"a", "ip", "neigh", "replace", "fd00:bd::2", "lladdr", macB, "dev", "veth0", "nud", "permanent"},
		{"b", "ip", "neigh", "replace", "198.18.0.1", "lladdr", macA, "dev", "veth1", "nud", "permanent"},
		{"b", "ip", "neigh", "replace", "fd00:bd::1", "lladdr", macA, "dev", "veth1", "nud", "permanent"},
	}
	for _, v := range []string{iptables, "ip6tables"} {
		for _, proto := range []string{"tcp", "udp"} {
			steps = append(steps, []string{"b", v, "-w", "-A", "INPUT", "-p", proto, "-j", "NFQUEUE",
				"--queue-num", strconv.Itoa(liveQueue)})
		}
	}
	for _, s := range steps {
		ns := tb.a
		if s[0] == "b" {
			ns = tb.b
		}
		if err := ns.run(s[1:]...); err != nil {
			tb.close()
			return nil, err
		}
	}
	// Listeners in b: TCP and UDP on every port the demo probes.
	err = tb.b.do(func() error {
		for _, ip := range []net.IP{addrB4, addrB6} {
			for _, port := range []int{22, 53, 443} {
				addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return err
				}
				tb.closers = append(tb.closers, ln)
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
				u, err := net.ListenPacket("udp", addr)
				if err != nil {
					return err
				}
				tb.closers = append(tb.closers, u)
			}
		}
		return nil
	})
	if err != nil {
		tb.close()
		return nil, err
	}
	return tb, nil
}

func (tb *testbed) close() {
	for _, c := range tb.closers {
		c.Close()
	}
	tb.b.remove()
	tb.a.remove()
}

// udpConn returns b's UDP socket on ip:port.
func (tb *testbed) udpConn(ip net.IP, port int) net.PacketConn {
	want := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	for _, c := range tb.closers {
		if pc, ok := c.(net.PacketConn); ok && pc.LocalAddr().String() == want {
			return pc
		}
	}
	return nil
}

// probe sends real traffic from a to b for one of the demo's packets and
// reports whether it arrived: a UDP datagram, or a TCP connection.
func (tb *testbed) probe(name string) (bool, error) {
	proto, port, _ := strings.Cut(name, ":")
	p, _ := strconv.Atoi(port)
	ip := addrB4
	if strings.HasSuffix(proto, "6") {
		ip = addrB6
	}
	addr := net.JoinHostPort(ip.String(), port)
	const wait = 300 * time.Millisecond
	if strings.HasPrefix(proto, "tcp") {
		ok := false
		err := tb.a.do(func() error {
			c, err := net.DialTimeout("tcp", addr, wait)
			if err == nil {
				ok = true
				c.Close()
			}
			return nil
		})
		return ok, err
	}
	msg := "probe " + name + " " + strconv.FormatInt(time.Now().UnixNano(), 10)
	err := tb.a.do(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
	if err != nil {
		return false, err
	}
	pc := tb.udpConn(ip, p)
	buf := make([]byte, 256)
	pc.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return false, nil
		}
		if string(buf[:n]) == msg {
			return true, nil
		}
	}
}

// live runs the example on real traffic.
func live(c *client.Conn, ports *client.Map, filter *client.Program) error {
	if os.Geteuid() != 0 {
		return errors.New("live mode needs root (network namespaces, iptables, CAP_NET_ADMIN to bind the queue)")
	}
	tb, err := setupTestbed()
	if err != nil {
		return err
	}
	defer tb.close()
	fmt.Printf("namespaces a and b joined by a veth pair; in b, TCP and UDP go to nfqueue %d\n", liveQueue)
	link, err := filter.AttachNFQueue(liveQueue, &client.NFQueueOptions{NetNS: int(tb.b.f.Fd())})
	if err != nil {
		return err
	}
	defer link.Close()
	fmt.Printf("attached port_filter to nfqueue %d: real packets are decided by bpfd\n", liveQueue)
	show := func() error {
		list, err := portList(ports)
		if err != nil {
			return err
		}
		out := make([]string, len(packets))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var perr error
		for i, p := range packets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := tb.probe(p.name)
				v := "DROP"
				if ok {
					v = "PASS"
				}
				mu.Lock()
				out[i] = p.name + "=" + v
				if err != nil {
					perr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if perr != nil {
			return perr
		}
		fmt.Printf("  ports %v: %s\n", list, strings.Join(out, " "))
		return nil
	}
	if err := runEditor(ports, show); err != nil {
		return err
	}
	st, err := link.Stats()
	if err != nil {
		return err
	}
	fmt.Printf("link: %d packets, %d passed, %d dropped, %d program errors\n", st.Packets, st.Pass, st.Drop, st.Errors)
	return nil
}

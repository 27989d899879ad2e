package nfqueue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
)

const roleEnv = "BPFD_NFQUEUE_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "bind" {
		// A child: try to bind the queue named by the argument in the
		// namespace it was started in; print the errno name.
		q, _ := strconv.Atoi(os.Getenv("BPFD_NFQUEUE_TEST_QUEUE"))
		fd, err := Bind(uint16(q), nil)
		if err == nil {
			unix.Close(fd)
			fmt.Println("ok")
			os.Exit(0)
		}
		var e unix.Errno
		if errors.As(err, &e) {
			fmt.Println(unix.ErrnoName(e))
		} else {
			fmt.Println(err)
		}
		os.Exit(0)
	}
	// Fail on leaked fds (sockets, namespaces, stats files).
	if a, b, err := os.Pipe(); err == nil { // the runtime poller's fds in the baseline
		a.Close()
		b.Close()
	}
	before := countFDs()
	code := m.Run()
	if code == 0 {
		if after := countFDs(); after > before {
			fmt.Fprintf(os.Stderr, "FAIL: leaked fds: %d open before the tests, %d after\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	return len(ents)
}

// udpListen opens a UDP socket in ns on port, v6 or not.
func udpListen(t *testing.T, ns *netnstest.NS, ip net.IP, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func udpDial(t *testing.T, ns *netnstest.NS, to net.IP, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: to, Port: port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvWithin returns the datagrams that arrive on c within d.
func recvWithin(c *net.UDPConn, d time.Duration) []string {
	var got []string
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

// TestLiveVerdicts binds a queue in a namespace, decides real UDP
// datagrams sent across a veth pair (accept, drop, rewrite), and checks
// what the receiver gets and what the kernel's statistics say.
func TestLiveVerdicts(t *testing.T) {
	p := netnstest.NewPair(t, "nfq")
	const qnum = 7
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "5000:5001", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(qnum))
	p.B.IPT(t, true, "-A", "INPUT", "-p", "udp", "--dport", "5000:5001", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(qnum))

	fd, err := Bind(qnum, &BindConfig{NetNS: p.B.FD()})
	if err != nil {
		t.Fatal(err)
	}
	// A second socket cannot take the queue.
	if fd2, err := Bind(qnum, &BindConfig{NetNS: p.B.FD()}); !errors.Is(err, ErrBusy) || !errors.Is(err, unix.EBUSY) {
		if err == nil {
			unix.Close(fd2)
		}
		t.Fatalf("second Bind = %v, want EBUSY", err)
	}
	q, err := Open(fd, qnum, &Config{CopyRange: 512, Flags: FlagGSO, MaxLen: 256, Batch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.NetNS() < 0 {
		t.Fatal("no network namespace fd (SIOCGSKNS) as root")
	}
	sr, err := OpenStats(q.NetNS())
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	st, err := sr.Read(qnum)
	if err != nil || st.PortID != q.PortID() || st.CopyMode != copyPacket || st.CopyRange != 512 {
		t.Fatalf("stats after Open: %+v, %v (portid %d)", st, err, q.PortID())
	}

	// The worker: port 5000 accepts, 5001 drops; "rewrite" payloads are
	// changed (IPv4: UDP checksum zeroed, meaning none).
	var mu sync.Mutex
	seen := map[string]*Packet{}
	done := make(chan error, 1)
	go func() {
		var pk Packet
		out := make([]byte, 0, 64<<10)
		for {
			n, err := q.Receive()
			if err != nil {
				done <- err
				return
			}
			out = out[:0]
			for i := 0; i < n; i++ {
				for b := q.Datagram(i); len(b) > 0; {
					msg, rest, err := Split(b)
					if err != nil {
						break
					}
					b = rest
					if Classify(msg) != KindPacket || Parse(msg, &pk) != nil {
						continue
					}
					if pk.Payload == nil {
						out = AppendVerdict(out, pk.Queue, pk.ID, Repeat, nil)
						continue
					}
					l4 := 20
					if pk.HwProtocol == unix.ETH_P_IPV6 {
						l4 = 40
					}
					dport := binary.BigEndian.Uint16(pk.Payload[l4+2:])
					data := pk.Payload[l4+8:]
					cp := pk
					cp.Payload = append([]byte(nil), pk.Payload...)
					cp.HwAddr = append([]byte(nil), pk.HwAddr...)
					mu.Lock()
					seen[string(data)] = &cp
					mu.Unlock()
					switch {
					case bytes.HasPrefix(data, []byte("rewrite")) && pk.HwProtocol == unix.ETH_P_IP:
						copy(data, "REWRITE")
						binary.BigEndian.PutUint16(pk.Payload[l4+6:], 0)
						out = AppendVerdict(out, pk.Queue, pk.ID, Accept, pk.Payload)
					case dport == 5000:
						out = AppendVerdict(out, pk.Queue, pk.ID, Accept, nil)
					default:
						out = AppendVerdictBatch(out, pk.Queue, pk.ID, Drop)
					}
				}
			}
			if len(out) > 0 {
				if err := q.Send(out); err != nil {
					done <- err
					return
				}
			}
		}
	}()

	for _, v6 := range []bool{false, true} {
		name, dst := "v4", p.B4
		if v6 {
			name, dst = "v6", p.B6
		}
		t.Run(name, func(t *testing.T) {
			l0 := udpListen(t, p.B, dst, 5000)
			l1 := udpListen(t, p.B, dst, 5001)
			s0 := udpDial(t, p.A, dst, 5000)
			s1 := udpDial(t, p.A, dst, 5001)
			msgs := []string{"hello-" + name, "rewrite-" + name}
			for _, m := range msgs {
				if _, err := s0.Write([]byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s1.Write([]byte("dropped-" + name)); err != nil {
				t.Fatal(err)
			}
			got0 := recvWithin(l0, 500*time.Millisecond)
			want0 := []string{"hello-" + name, "REWRITE-" + name}
			if v6 {
				want0[1] = "rewrite-" + name // not rewritten: a v6 UDP checksum cannot be zero
			}
			if strings.Join(got0, ",") != strings.Join(want0, ",") {
				t.Errorf("port 5000 got %q, want %q", got0, want0)
			}
			if got1 := recvWithin(l1, 200*time.Millisecond); len(got1) != 0 {
				t.Errorf("port 5001 got %q, want nothing (dropped)", got1)
			}
			mu.Lock()
			pk := seen["hello-"+name]
			mu.Unlock()
			if pk == nil {
				t.Fatal("the worker never saw the packet")
			}
			wantProto := uint16(unix.ETH_P_IP)
			fam := uint8(unix.AF_INET)
			if v6 {
				wantProto, fam = unix.ETH_P_IPV6, unix.AF_INET6
			}
			if pk.HwProtocol != wantProto || pk.Family != fam || pk.Hook != HookLocalIn || pk.InDev != uint32(p.BIfindex) ||
				pk.OutDev != 0 || !bytes.Equal(pk.HwAddr, p.AMAC) || pk.Queue != qnum || pk.Truncated() {
				t.Errorf("packet metadata %+v (veth ifindex %d, peer mac %s)", pk, p.BIfindex, p.AMAC)
			}
		})
	}
	// A packet longer than the copy range arrives cut, with its real
	// length.
	t.Run("copy range", func(t *testing.T) {
		l0 := udpListen(t, p.B, p.B4, 5000)
		s0 := udpDial(t, p.A, p.B4, 5000)
		big := "big-" + strings.Repeat("x", 1000)
		s0.Write([]byte(big))
		if got := recvWithin(l0, 500*time.Millisecond); len(got) != 1 || got[0] != big {
			t.Fatalf("got %d datagrams", len(got))
		}
		mu.Lock()
		defer mu.Unlock()
		for k, pk := range seen {
			if strings.HasPrefix(k, "big-") {
				if len(pk.Payload) != 512 || pk.CapLen != uint32(20+8+len(big)) || !pk.Truncated() {
					t.Fatalf("payload %d bytes, caplen %d", len(pk.Payload), pk.CapLen)
				}
				return
			}
		}
		t.Fatal("big packet not seen")
	})
	st, err = sr.Read(qnum)
	if err != nil || st.Waiting != 0 || st.IDSequence < 7 {
		t.Errorf("stats at the end: %+v, %v", st, err)
	}
	// Wake stops the worker's Receive.
	q.Wake()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("worker ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wake did not stop Receive")
	}
}

// TestClosedQueueDrops checks the kernel's fail-closed behaviour: once the
// socket is closed, the rule drops, unless it has --queue-bypass.
func TestClosedQueueDrops(t *testing.T) {
	p := netnstest.NewPair(t, "nfqc")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "6000", "-j", "NFQUEUE", "--queue-num", "3")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "6001", "-j", "NFQUEUE", "--queue-num", "4", "--queue-bypass")
	fd, err := Bind(3, &BindConfig{NetNS: p.B.FD()})
	if err != nil {
		t.Fatal(err)
	}
	q, err := Open(fd, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	l0 := udpListen(t, p.B, p.B4, 6000)
	l1 := udpListen(t, p.B, p.B4, 6001)
	udpDial(t, p.A, p.B4, 6000).Write([]byte("closed"))
	udpDial(t, p.A, p.B4, 6001).Write([]byte("bypass"))
	if got := recvWithin(l0, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("no listener, no bypass: got %q, want a drop", got)
	}
	if got := recvWithin(l1, 300*time.Millisecond); len(got) != 1 {
		t.Errorf("no listener, --queue-bypass: got %q, want the datagram", got)
	}
}

// TestBindUnprivileged: a process without CAP_NET_ADMIN cannot bind a
// queue (EPERM), even as the only claimant.
func TestBindUnprivileged(t *testing.T) {
	ns := netnstest.New(t, "nfqu")
	var out bytes.Buffer
	cmd := exec.Command(netnstest.SharedBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=bind", "BPFD_NFQUEUE_TEST_QUEUE=11")
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := ns.Do(func() error { return cmd.Run() }); err != nil {
		t.Fatalf("child: %v: %s", err, out.String())
	}
	if got := strings.TrimSpace(out.String()); got != "EPERM" {
		t.Fatalf("unprivileged Bind: %q, want EPERM", got)
	}
	// Open refuses what is not a netfilter socket.
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s, 1, nil); !errors.Is(err, ErrNotQueueSocket) {
		t.Fatalf("Open(unix socket) = %v", err)
	}
	// Nor a netfilter socket that does not own the queue.
	var nfd int
	if err := ns.Do(func() error {
		var err error
		nfd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err == nil {
			err = unix.Bind(nfd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(nfd, 12, nil); !errors.Is(err, ErrNotBound) {
		t.Fatalf("Open(unbound netfilter socket) = %v", err)
	}
}

// TestReceiveNowAfterWake: after Wake (a read deadline in the past),
// Receive reads nothing, but ReceiveNow still reads every packet the
// socket holds, so a detaching link can settle them: accepted here, they
// all arrive.
func TestReceiveNowAfterWake(t *testing.T) {
	const n = 5
	p := netnstest.NewPair(t, "nfqw")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "6100", "-j", "NFQUEUE", "--queue-num", "5")
	fd, err := Bind(5, &BindConfig{NetNS: p.B.FD()})
	if err != nil {
		t.Fatal(err)
	}
	q, err := Open(fd, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := OpenStats(p.B.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := udpListen(t, p.B, p.B4, 6100)
	s := udpDial(t, p.A, p.B4, 6100)
	for i := range n {
		s.Write([]byte(fmt.Sprint(i)))
	}
	// Every datagram queued, and so sent to the socket.
	for deadline := time.Now().Add(30 * time.Second); ; {
		ks, err := st.Read(5)
		if err != nil {
			t.Fatal(err)
		}
		if ks.IDSequence >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("datagrams never all queued: %+v", ks)
		}
		time.Sleep(time.Millisecond)
	}
	q.Wake()
	if _, err := q.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive after Wake: %v, want os.ErrDeadlineExceeded", err)
	}
	var out []byte
	var pk Packet
	got := 0
	for {
		k, err := q.ReceiveNow()
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
		for i := range k {
			for b := q.Datagram(i); len(b) > 0; {
				msg, rest, err := Split(b)
				if err != nil {
					t.Fatal(err)
				}
				b = rest
				if Classify(msg) == KindPacket && Parse(msg, &pk) == nil {
					out = AppendVerdict(out, pk.Queue, pk.ID, Accept, nil)
					got++
				}
			}
		}
	}
	if got != n {
		t.Fatalf("ReceiveNow read %d packets, want %d", got, n)
	}
	if err := q.Send(out); err != nil {
		t.Fatal(err)
	}
	if r := recvWithin(l, time.Second); len(r) != n {
		t.Errorf("accepted after ReceiveNow: %q arrived, want %d datagrams", r, n)
	}
}

package client

import (
	"bufio"
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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
)

// portFilterObj is scenario 5's program, unchanged.
var portFilterObj = filepath.Join("..", "..", "examples", "05-port-filter", "bpf", "port_filter.bpf.o")

// sendUDP sends one datagram from ns to to:port.
func sendUDP(t *testing.T, ns *netnstest.NS, to net.IP, port int, msg string) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: to, Port: port})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listenUDP opens a UDP socket on ip:port in ns, closed at cleanup.
func listenUDP(t *testing.T, ns *netnstest.NS, ip net.IP, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// received returns the datagrams arriving on c within d.
func received(c *net.UDPConn, d time.Duration) []string {
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

// listenTCP accepts connections on ip:port in ns until cleanup.
func listenTCP(t *testing.T, ns *netnstest.NS, ip net.IP, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
}

// connectTCP reports whether a TCP connection from ns to ip:port is
// established (and greeted) within d.
func connectTCP(ns *netnstest.NS, ip net.IP, port int, d time.Duration) bool {
	ok := false
	ns.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)), d)
		if err != nil {
			return nil
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(d))
		b := make([]byte, 2)
		_, err = io.ReadFull(c, b)
		ok = err == nil && string(b) == "hi"
		return nil
	})
	return ok
}

// queueRules sends TCP and UDP to ports lo:hi of ns's INPUT to queue q,
// for IPv4 and IPv6.
func queueRules(t *testing.T, ns *netnstest.NS, lo, hi, q int, extra ...string) {
	t.Helper()
	for _, v6 := range []bool{false, true} {
		for _, proto := range []string{"udp", "tcp"} {
			ns.IPT(t, v6, append([]string{"-A", "INPUT", "-p", proto, "--dport", fmt.Sprintf("%d:%d", lo, hi),
				"-j", "NFQUEUE", "--queue-num", strconv.Itoa(q)}, extra...)...)
		}
	}
}

// editor is a uid-65534 process holding only a write-only descriptor of
// a map, editing it on request.
type editor struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startEditor(t *testing.T, s *server, m *Map) *editor {
	t.Helper()
	wo, err := m.Reopen(ModeWrite)
	if err != nil {
		t.Fatal(err)
	}
	f := dupFile(t, wo.FD())
	defer f.Close()
	cmd := child(t, "porteditor", []*os.File{f}, socketEnvTest+"="+s.path)
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	wo.Close()
	if err != nil {
		t.Fatal(err)
	}
	e := &editor{cmd: cmd, in: in, out: bufio.NewReader(outp)}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	if got := e.do(t, "check"); got != "EPERM" {
		t.Fatalf("the editor can read the port map: %q", got)
	}
	return e
}

// dupFile returns an *os.File of a duplicate of fd (an *os.File closes
// its fd when collected, so it must own one).
func dupFile(t *testing.T, fd int) *os.File {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(d), "descriptor")
}

func (e *editor) do(t *testing.T, req string) string {
	t.Helper()
	fmt.Fprintln(e.in, req)
	line, err := e.out.ReadString('\n')
	if err != nil {
		t.Fatalf("editor: %v", err)
	}
	return strings.TrimSpace(line)
}

// childPortEditor: fd 3 is a map descriptor; stdin lines "add N", "del N"
// edit it (2-byte keys, 1-byte values), "check" tries to read it.
func childPortEditor() error {
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := c.ImportMap(3)
	unix.Close(3)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		op, arg, _ := strings.Cut(sc.Text(), " ")
		n, _ := strconv.Atoi(arg)
		key := binary.NativeEndian.AppendUint16(nil, uint16(n))
		var err error
		switch op {
		case "add":
			err = m.Update(key, []byte{1}, UpdateAny)
		case "del":
			err = m.Delete(key)
		case "check":
			err = m.Lookup(key, make([]byte, 1))
		}
		res := "ok"
		var e unix.Errno
		if errors.As(err, &e) {
			res = unix.ErrnoName(e)
		} else if err != nil {
			res = err.Error()
		}
		fmt.Println(res)
	}
	return nil
}

// childNFQAttach: fd 3 is a program descriptor; attach it to the queue
// in $BPFD_TEST_QUEUE of the namespace the child was started in; print
// the errno name (or "ok").
func childNFQAttach() error {
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := c.ImportProgram(3)
	unix.Close(3)
	if err != nil {
		return err
	}
	q, _ := strconv.Atoi(os.Getenv("BPFD_TEST_QUEUE"))
	l, err := p.AttachNFQueue(uint16(q), nil)
	if err == nil {
		l.Close()
		fmt.Println("ok")
		return nil
	}
	var e unix.Errno
	if errors.As(err, &e) {
		fmt.Println(unix.ErrnoName(e))
	} else {
		fmt.Println(err)
	}
	return nil
}

func linkInfo(t *testing.T, l *Link) LinkInfo {
	t.Helper()
	li, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return li
}

// TestLinkPortFilter is scenario 5 on live traffic: the unchanged
// port_filter program decides real TCP connects and UDP datagrams across
// a veth pair, IPv4 and IPv6, as a uid-65534 editor with a write-only
// descriptor of the port map changes it.
func TestLinkPortFilter(t *testing.T) {
	p := netnstest.NewPair(t, "lnk")
	queueRules(t, p.B, 7000, 7001, 5)
	s := startServer(t)
	c := s.dial(t)
	coll, err := c.LoadCollection(portFilterObj)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	filter, ports := coll.Programs["port_filter"], coll.Maps["ports"]
	l, err := filter.AttachNFQueue(5, &NFQueueOptions{NetNS: p.B.FD()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The queue is taken.
	if l2, err := filter.AttachNFQueue(5, &NFQueueOptions{NetNS: p.B.FD()}); !errors.Is(err, ErrBusy) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second attach = %v, want EBUSY", err)
	}
	ed := startEditor(t, s, ports)
	for _, v6 := range []bool{false, true} {
		name, dst := "v4", p.B4
		if v6 {
			name, dst = "v6", p.B6
		}
		t.Run(name, func(t *testing.T) {
			u0 := listenUDP(t, p.B, dst, 7000)
			u1 := listenUDP(t, p.B, dst, 7001)
			listenTCP(t, p.B, dst, 7000)
			listenTCP(t, p.B, dst, 7001)
			check := func(step string, want0, want1 bool) {
				t.Helper()
				sendUDP(t, p.A, dst, 7000, step+"-0")
				sendUDP(t, p.A, dst, 7001, step+"-1")
				got0, got1 := len(received(u0, 300*time.Millisecond)) == 1, len(received(u1, 100*time.Millisecond)) == 1
				tcp0, tcp1 := connectTCP(p.A, dst, 7000, 400*time.Millisecond), connectTCP(p.A, dst, 7001, 400*time.Millisecond)
				if got0 != want0 || tcp0 != want0 || got1 != want1 || tcp1 != want1 {
					t.Errorf("%s: port 7000 udp %v tcp %v (want %v); port 7001 udp %v tcp %v (want %v)",
						step, got0, tcp0, want0, got1, tcp1, want1)
				}
			}
			check("empty map", false, false)
			if r := ed.do(t, "add 7000"); r != "ok" {
				t.Fatal(r)
			}
			check("7000 added", true, false)
			ed.do(t, "add 7001")
			ed.do(t, "del 7000")
			check("7000 removed, 7001 added", false, true)
			ed.do(t, "del 7001")
			check("both removed", false, false)
		})
	}
	li := linkInfo(t, l)
	if li.Type != "nfqueue" || li.ProgName != "port_filter" || len(li.Queues) != 1 || li.Queues[0] != 5 ||
		li.Pass == 0 || li.Drop == 0 || li.Packets != li.Pass+li.Drop || li.Bytes == 0 || li.Errors != 0 ||
		li.DecisionMeanNs == 0 || li.DecisionP99Ns < li.DecisionMeanNs/2 || li.Detached {
		t.Errorf("link info: %+v", li)
	}
	list, err := c.Links()
	if err != nil || len(list) != 1 || list[0].ID != l.ID() {
		t.Errorf("Links() = %+v, %v", list, err)
	}
	// A read-only copy may watch, not detach.
	ro, err := l.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Info(); err != nil {
		t.Errorf("read-only Info: %v", err)
	}
	if err := ro.Detach(); !errors.Is(err, ErrPermission) {
		t.Errorf("read-only Detach = %v, want EPERM", err)
	}
	ro.Close()
	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); !errors.Is(err, ErrBadDescriptor) || !errors.Is(err, unix.EBADF) {
		t.Errorf("second Detach = %v, want EBADF", err)
	}
	if li := linkInfo(t, l); !li.Detached {
		t.Errorf("detached link says %+v", li)
	}
	// Detached, no listener, no --queue-bypass: the kernel drops.
	ed.do(t, "add 7000")
	u := listenUDP(t, p.B, p.B4, 7000)
	sendUDP(t, p.A, p.B4, 7000, "after detach")
	if got := received(u, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("after detach: %q got through", got)
	}
}

// TestLinkCloseDetaches: closing the last holder detaches; a pin keeps
// the link alive until unlinked.
func TestLinkCloseDetaches(t *testing.T) {
	p := netnstest.NewPair(t, "lcl")
	queueRules(t, p.B, 7100, 7100, 6, "--queue-bypass")
	s := startServerPins(t)
	c := s.dial(t)
	prog := loadPassDrop(t, c, XDP, 2) // XDP_PASS
	l, err := prog.AttachNFQueue(6, &NFQueueOptions{NetNS: p.B.FD()})
	if err != nil {
		t.Fatal(err)
	}
	u := listenUDP(t, p.B, p.B4, 7100)
	sendUDP(t, p.A, p.B4, 7100, "through")
	if got := received(u, 300*time.Millisecond); len(got) != 1 {
		t.Fatalf("pass program: got %q", got)
	}
	if err := l.Pin("lnk", 0o600); err != nil {
		t.Fatal(err)
	}
	l.Close()
	time.Sleep(100 * time.Millisecond)
	list, _ := c.Links()
	if len(list) != 1 || list[0].Packets != 1 {
		t.Fatalf("pinned link after close: %+v", list)
	}
	// Unlinking the pin drops the last holder: detached, the queue is
	// free again (the rule's --queue-bypass accepts meanwhile).
	if err := os.Remove(filepath.Join(s.dir, "pins", "lnk")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		list, _ := c.Links()
		if len(list) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link still there after its pin was removed: %+v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l2, err := prog.AttachNFQueue(6, &NFQueueOptions{NetNS: p.B.FD()})
	if err != nil {
		t.Fatalf("queue not free after the link went: %v", err)
	}
	// A pinned link does not outlive the daemon: its pin file goes at
	// shutdown (a restarted daemon could not bind the queue again).
	if err := l2.Pin("lnk2", 0o600); err != nil {
		t.Fatal(err)
	}
	l2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "pins", "lnk2")); !os.IsNotExist(err) {
		t.Errorf("link pin after shutdown: %v", err)
	}
}

// loadPassDrop loads a program of typ returning ret.
func loadPassDrop(t *testing.T, c *Conn, typ ProgramType, ret int32) *Program {
	t.Helper()
	p, err := c.LoadProgram(ProgramSpec{Type: typ, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestLinkUnprivileged: a uid-65534 process holding a read-write program
// descriptor cannot attach it to a queue of the namespace it runs in
// (EPERM from the kernel, at bind), and a read-only descriptor cannot
// attach at all.
func TestLinkUnprivileged(t *testing.T) {
	ns := netnstest.New(t, "lun")
	s := startServer(t)
	c := s.dial(t)
	prog := loadPassDrop(t, c, XDP, 2)
	f := dupFile(t, prog.FD())
	defer f.Close()
	cmd := child(t, "nfqattach", []*os.File{f}, socketEnvTest+"="+s.path, "BPFD_TEST_QUEUE=9")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Do(cmd.Run); err != nil {
		t.Fatalf("child: %v: %s", err, out.String())
	}
	if got := strings.TrimSpace(out.String()); got != "EPERM" {
		t.Fatalf("unprivileged attach: %q, want EPERM", got)
	}
	ro, err := prog.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.AttachNFQueue(9, &NFQueueOptions{NetNS: ns.FD()}); !errors.Is(err, ErrPermission) {
		t.Fatalf("attach through a read-only descriptor = %v, want EPERM", err)
	}
	seccompProg, err := c.LoadProgram(ProgramSpec{Type: Seccomp, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0x7fff0000), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer seccompProg.Close()
	if _, err := seccompProg.AttachNFQueue(9, &NFQueueOptions{NetNS: ns.FD()}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("attach a seccomp program = %v, want EINVAL", err)
	}
}

// TestLinkDaemonStops: when bpfd stops, the kernel drops queued traffic
// (fail-closed) unless the rule has --queue-bypass (fail-open).
func TestLinkDaemonStops(t *testing.T) {
	p := netnstest.NewPair(t, "lds")
	queueRules(t, p.B, 7200, 7200, 7)
	queueRules(t, p.B, 7201, 7201, 8, "--queue-bypass")
	s := startServer(t)
	c := s.dial(t)
	prog := loadPassDrop(t, c, XDP, 2)
	l, err := prog.AttachNFQueue(7, &NFQueueOptions{NetNS: p.B.FD(), Queues: 2, FailOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if li := linkInfo(t, l); len(li.Queues) != 2 || li.Queues[1] != 8 || !li.FailOpen {
		t.Fatalf("link over two queues: %+v", li)
	}
	u0, u1 := listenUDP(t, p.B, p.B4, 7200), listenUDP(t, p.B, p.B4, 7201)
	sendUDP(t, p.A, p.B4, 7200, "a")
	sendUDP(t, p.A, p.B4, 7201, "b")
	if len(received(u0, 300*time.Millisecond)) != 1 || len(received(u1, 100*time.Millisecond)) != 1 {
		t.Fatal("traffic does not pass while bpfd runs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p.A, p.B4, 7200, "closed")
	sendUDP(t, p.A, p.B4, 7201, "bypass")
	if got := received(u0, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("fail-closed rule let %q through after bpfd stopped", got)
	}
	if got := received(u1, 300*time.Millisecond); len(got) != 1 {
		t.Errorf("--queue-bypass rule after bpfd stopped: got %q, want the datagram", got)
	}
}

package client

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
	"github.com/bpfd-project/bpfd/pkg/nfqueue"
)

// capture is an AF_PACKET socket on B's veth end: it sees each frame as
// it arrived, before netfilter.
type capture struct{ fd int }

func newCapture(t *testing.T, p *netnstest.Pair) *capture {
	t.Helper()
	var fd int
	err := p.B.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(bits.ReverseBytes16(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: bits.ReverseBytes16(unix.ETH_P_ALL), Ifindex: p.BIfindex})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &capture{fd: fd}
}

// next returns the next incoming UDP frame to port.
func (c *capture) next(t *testing.T, port uint16) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := buf[:n]
		if n >= 14+20+8 && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_IP && f[23] == unix.IPPROTO_UDP &&
			binary.BigEndian.Uint16(f[14+int(f[14]&0xf)*4+2:]) == port {
			return append([]byte(nil), f...)
		}
	}
}

// verdictOf names the counter a link moved between two snapshots.
func verdictOf(a, b LinkStats) string {
	var out []string
	for _, c := range []struct {
		name string
		d    uint64
	}{{"pass", b.Pass - a.Pass}, {"drop", b.Drop - a.Drop}, {"aborted", b.Aborted - a.Aborted},
		{"tx", b.TX - a.TX}, {"redirect", b.Redirect - a.Redirect}, {"invalid", b.Invalid - a.Invalid},
		{"error", b.Errors - a.Errors}} {
		if c.d != 0 {
			out = append(out, fmt.Sprintf("%s+%d", c.name, c.d))
		}
	}
	return strings.Join(out, ",")
}

// waitPackets waits until l counted n packets.
func waitPackets(t *testing.T, l *Link, n uint64) LinkStats {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := l.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Packets >= n || time.Now().After(deadline) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLinkDifferential: for the committed XDP fixtures (sum_bytes, whose
// verdict depends on every byte of the frame, and xdp_ports) and the
// socket-filter fixture count_proto, the verdict a link gives each live
// packet equals the verdict of a test run on the same bytes, captured on
// the wire (AF_PACKET) before netfilter queued them.
func TestLinkDifferential(t *testing.T) {
	p := netnstest.NewPair(t, "ldf")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "7400:7401", "-j", "NFQUEUE", "--queue-num", "10")
	s := startServer(t)
	c := s.dial(t)
	loop, err := c.LoadCollection(filepath.Join("..", "..", "testdata", "bpf", "loop.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	xp, err := c.LoadCollection(filepath.Join("..", "..", "testdata", "bpf", "xdp_ports.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	defer xp.Close()
	if err := xp.Maps["ports"].Update(binary.NativeEndian.AppendUint16(nil, 7400), []byte{1}, UpdateAny); err != nil {
		t.Fatal(err)
	}
	cnt, err := c.LoadCollection(filepath.Join("..", "..", "testdata", "bpf", "counter.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	defer cnt.Close()
	// A socket filter whose verdict depends on skb->len: odd lengths
	// accepted (the whole packet), even ones dropped.
	odd, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, License: "GPL", Name: "odd_len",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.R0),
			asm.And.Imm(asm.R2, 1),
			asm.JNE.Imm(asm.R2, 0, "out"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return().WithSymbol("out"),
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer odd.Close()
	capt := newCapture(t, p)
	u0, u1 := listenUDP(t, p.B, p.B4, 7400), listenUDP(t, p.B, p.B4, 7401)

	for _, tc := range []struct {
		name string
		prog *Program
		xdp  bool
	}{
		{"sum_bytes", loop.Programs["sum_bytes"], true},
		{"xdp_ports", xp.Programs["xdp_ports"], true},
		{"count_proto", cnt.Programs["count_proto"], false},
		{"odd_len", odd, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.prog.AttachNFQueue(10, &NFQueueOptions{NetNS: p.B.FD()})
			if err != nil {
				t.Fatal(err)
			}
			// Detach is synchronous (the queue is free when it returns);
			// Close alone frees it once the daemon sees the hangup.
			defer l.Close()
			defer l.Detach()
			seen := map[string]int{}
			var total uint64
			var lens uint64
			for i := 0; i < 24; i++ {
				port := 7400 + i%2
				before := waitPackets(t, l, total)
				sendUDP(t, p.A, p.B4, port, fmt.Sprintf("%s-%d-%s", tc.name, i, strings.Repeat("x", i)))
				frame := capt.next(t, uint16(port))
				total++
				after := waitPackets(t, l, total)
				live := verdictOf(before, after)
				ret, err := tc.prog.Run(&RunOptions{Data: frame})
				if err != nil {
					t.Fatal(err)
				}
				want := map[uint32]string{0: "aborted+1", 1: "drop+1", 2: "pass+1", 3: "tx+1", 4: "redirect+1"}[ret]
				if !tc.xdp {
					want = "pass+1"
					if ret == 0 {
						want = "drop+1"
					}
					lens += uint64(len(frame) - 14)
				}
				if live != want {
					t.Errorf("packet %d (%x): live %q, test run %d (%q)", i, frame, live, ret, want)
				}
				seen[live]++
				u := u0
				if port == 7401 {
					u = u1
				}
				if got := len(received(u, 50*time.Millisecond)); (got == 1) != (live == "pass+1") {
					t.Errorf("packet %d: verdict %s but %d datagrams arrived", i, live, got)
				}
			}
			t.Logf("%s: verdicts %v", tc.name, seen)
			if (tc.name == "sum_bytes" || tc.name == "odd_len") && len(seen) < 2 {
				t.Errorf("sum_bytes gave one verdict only (%v): the packets do not vary", seen)
			}
			if tc.name == "count_proto" {
				// The program's map effects match too: every live
				// packet counted with skb->len as the kernel sets it
				// (the test runs above counted the same again).
				v := make([]byte, 16)
				key := binary.NativeEndian.AppendUint32(nil, uint32(bits.ReverseBytes16(unix.ETH_P_IP)))
				if err := cnt.Maps["by_proto"].Lookup(key, v); err != nil {
					t.Fatal(err)
				}
				if n, b := binary.NativeEndian.Uint64(v), binary.NativeEndian.Uint64(v[8:]); n != 2*total || b != 2*lens {
					t.Errorf("by_proto[IPv4] = %d packets, %d bytes; want %d, %d", n, b, 2*total, 2*lens)
				}
			}
		})
	}
}

// TestLinkRewriteAndFaults: a packet an XDP program rewrites arrives
// rewritten; a program fault (the instruction budget, caught at run time)
// drops the packet and counts it, and the link keeps deciding; XDP_REDIRECT
// drops and is counted.
func TestLinkRewriteAndFaults(t *testing.T) {
	p := netnstest.NewPair(t, "lrw")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "7500:7504", "-j", "NFQUEUE", "--queue-num", "11")
	s := startServer(t)
	c := s.dial(t)
	// IPv4, no options: UDP dport at 36, payload at 42.
	//   7500 and payload[0] == 'r': payload[0] = 'R', UDP checksum = 0, PASS
	//   7502: bpf_loop(70000) whose callback looks up its index in a
	//         hash map of 70000 entries: each value found is one more
	//         memory region of the run, and past the interpreter's
	//         limit (prog.MaxRegions, 65536) the run faults
	//   7504: XDP_REDIRECT
	//   else: PASS
	be16 := func(v uint16) int32 { return int32(bits.ReverseBytes16(v)) }
	const entries = 70000
	big, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 1, MaxEntries: entries, Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	keys, values := make([]byte, 0, 4*entries), make([]byte, entries)
	for i := range entries {
		keys = binary.NativeEndian.AppendUint32(keys, uint32(i))
	}
	if n, err := big.BatchUpdate(keys, values, nil); err != nil || n != entries {
		t.Fatalf("BatchUpdate: %d, %v", n, err)
	}
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 43),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 36, asm.Half),
		asm.JEq.Imm(asm.R5, be16(7502), "fault"),
		asm.JEq.Imm(asm.R5, be16(7504), "redirect"),
		asm.JNE.Imm(asm.R5, be16(7500), "pass"),
		asm.LoadMem(asm.R5, asm.R2, 42, asm.Byte),
		asm.JNE.Imm(asm.R5, 'r', "pass"),
		asm.StoreImm(asm.R2, 42, 'R', asm.Byte),
		asm.StoreImm(asm.R2, 40, 0, asm.Half),
		asm.Ja.Label("pass"),
		asm.Mov.Imm(asm.R1, entries).WithSymbol("fault"),
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("cb"),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.Ja.Label("pass"),
		asm.Mov.Imm(asm.R0, 4).WithSymbol("redirect"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
		asm.StoreMem(asm.R10, -4, asm.R1, asm.Word).WithSymbol("cb"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, big.FD()),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	prog, err := c.LoadProgram(ProgramSpec{Type: XDP, Instructions: insns, License: "GPL", Name: "rewrite"})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := prog.AttachNFQueue(11, &NFQueueOptions{NetNS: p.B.FD()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u0 := listenUDP(t, p.B, p.B4, 7500)
	sendUDP(t, p.A, p.B4, 7500, "rewrite me")
	sendUDP(t, p.A, p.B4, 7500, "leave me")
	if got := received(u0, 500*time.Millisecond); strings.Join(got, "|") != "Rewrite me|leave me" {
		t.Errorf("receiver got %q, want the first datagram rewritten", got)
	}
	u2, u3, u4 := listenUDP(t, p.B, p.B4, 7502), listenUDP(t, p.B, p.B4, 7503), listenUDP(t, p.B, p.B4, 7504)
	sendUDP(t, p.A, p.B4, 7502, "fault")
	// The faulting run takes a while (70000 lookups; longer under -race
	// on a loaded machine): wait for its verdict.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := l.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Errors == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fault counted: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := received(u2, 100*time.Millisecond); len(got) != 0 {
		t.Errorf("a faulting run let %q through", got)
	}
	sendUDP(t, p.A, p.B4, 7503, "after the fault")
	if got := received(u3, time.Second); len(got) != 1 {
		t.Errorf("after a fault the link no longer passes packets: got %q", got)
	}
	sendUDP(t, p.A, p.B4, 7504, "redirect")
	if got := received(u4, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("XDP_REDIRECT let %q through", got)
	}
	st := waitPackets(t, l, 5)
	if st.Packets != 5 || st.Rewritten != 1 || st.Errors != 1 || st.Redirect != 1 || st.Pass != 3 {
		t.Errorf("stats %+v", st)
	}
}

// TestLinkDetachSettlesQueued: packets still queued when a link is
// detached get the fail verdict: accepted with FailOpen, dropped without.
// A slow program (bpf_loop of 2^18 empty iterations, then XDP_DROP) keeps
// packets waiting while the test detaches.
func TestLinkDetachSettlesQueued(t *testing.T) {
	p := netnstest.NewPair(t, "lds")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "7700", "-j", "NFQUEUE", "--queue-num", "13")
	s := startServer(t)
	c := s.dial(t)
	slow, err := c.LoadProgram(ProgramSpec{Type: XDP, License: "GPL", Name: "slow", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R1, 1<<18),
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("cb"),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.Mov.Imm(asm.R0, 1), // XDP_DROP
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("cb"),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	u := listenUDP(t, p.B, p.B4, 7700)
	var sender *net.UDPConn
	if err := p.A.Do(func() (err error) {
		sender, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: p.B4, Port: 7700})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	for _, failOpen := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail-open=%v", failOpen), func(t *testing.T) {
			l, err := slow.AttachNFQueue(13, &NFQueueOptions{NetNS: p.B.FD(), FailOpen: failOpen})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			const n = 20
			for i := range n {
				sender.Write([]byte(fmt.Sprint(i)))
			}
			// Every datagram is in the queue (decided, or waiting in the
			// kernel for a verdict) before detaching: on a loaded machine
			// the stack may still hold some in its backlog.
			// The kernel numbers queued packets 1, 2, ... per queue
			// instance (id_sequence in its statistics).
			kst, err := nfqueue.OpenStats(p.B.FD())
			if err != nil {
				t.Fatal(err)
			}
			defer kst.Close()
			deadline := time.Now().Add(30 * time.Second)
			for {
				ks, err := kst.Read(13)
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
			waitPackets(t, l, 1)
			// Detach does not wait for the program to decide the rest
			// of its batch (st.Packets < n below).
			if err := l.Detach(); err != nil {
				t.Fatal(err)
			}
			st, _ := l.Stats()
			// Fail-open: wait (on a loaded machine, for long) until the
			// undecided datagrams have all arrived, then a little more
			// for any extra; fail-closed: none may arrive in a window.
			want := 0
			if failOpen {
				want = n - int(st.Packets)
			}
			got := 0
			for end := time.Now().Add(30 * time.Second); got < want && time.Now().Before(end); {
				got += len(received(u, 100*time.Millisecond))
			}
			got += len(received(u, 300*time.Millisecond))
			t.Logf("decided %d (dropped by the program), %d arrived", st.Packets, got)
			if st.Pass != 0 || st.Drop != st.Packets || st.Packets == n {
				t.Fatalf("stats %+v", st)
			}
			if failOpen && got != want {
				t.Errorf("fail-open detach: %d arrived, want the %d not yet decided", got, want)
			}
			if !failOpen && got != 0 {
				t.Errorf("fail-closed detach: %d arrived, want none", got)
			}
		})
	}
}

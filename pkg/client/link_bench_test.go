package client

import (
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/netnstest"
)

// BenchmarkNFQueue measures live filtering through a netfilter queue,
// inside two private network namespaces joined by a veth pair: UDP
// datagrams in 64-byte Ethernet frames (22 bytes of payload) from a to b,
// with
//
//   - no-rule: no netfilter rule at all (the baseline);
//   - iptables-pass / iptables-ports: the same jobs done in the kernel by
//     iptables (accept everything; accept the allowed port, drop other
//     UDP);
//   - nfqueue-pass / nfqueue-port_filter: every datagram queued to bpfd
//     and decided by a trivial XDP_PASS program, or by scenario 5's
//     port_filter with the port allowed.
//
// throughput/* sends as fast as one sender thread can and reports what
// arrives: pkts/s and its ratio to no-rule's (measured in the same run);
// allocs/op is per packet, for the whole process (sender and receiver use
// raw syscalls, so it is the daemon's). For the queue cases it also
// reports, from the link's counters, the daemon's cost per packet split
// into netlink I/O (recvmmsg, verdict writes) and program runs, and the
// program's share of it. latency/* sends one datagram at a time and
// reports the median one-way time (same clock) and the difference to
// no-rule's median: the latency the queue adds.
//
// Figures are never asserted; `make bench` prints them.
func BenchmarkNFQueue(b *testing.B) {
	p := netnstest.NewPair(b, "bnq")
	s := startServer(b)
	c := s.dial(b)
	coll, err := c.LoadCollection(portFilterObj)
	if err != nil {
		b.Fatal(err)
	}
	defer coll.Close()
	const port = 7600
	if err := coll.Maps["ports"].Update(binary.NativeEndian.AppendUint16(nil, port), []byte{1}, UpdateAny); err != nil {
		b.Fatal(err)
	}
	pass, err := c.LoadProgram(ProgramSpec{Type: XDP, License: "GPL", Name: "pass",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer pass.Close()

	// The receiver: a UDP socket in b, counting datagrams.
	var rfd int
	if err := p.B.Do(func() (err error) {
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.SetsockoptInt(rfd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
			err = unix.Bind(rfd, &unix.SockaddrInet4{Port: port, Addr: [4]byte(p.B4)})
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer unix.Close(rfd)
	// The sender: a connected UDP socket in a.
	var sfd int
	if err := p.A.Do(func() (err error) {
		sfd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.SetsockoptInt(sfd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
			err = unix.Connect(sfd, &unix.SockaddrInet4{Port: port, Addr: [4]byte(p.B4)})
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer unix.Close(sfd)
	payload := make([]byte, 64-14-20-8)

	type mode struct {
		name  string
		rules [][]string
		prog  *Program
	}
	modes := []mode{
		{name: "no-rule"},
		{name: "iptables-pass", rules: [][]string{{"-A", "INPUT", "-p", "udp", "-j", "ACCEPT"}}},
		{name: "iptables-ports", rules: [][]string{{"-A", "INPUT", "-p", "udp", "--dport", "7600", "-j", "ACCEPT"},
			{"-A", "INPUT", "-p", "udp", "-j", "DROP"}}},
		{name: "nfqueue-pass", rules: [][]string{{"-A", "INPUT", "-p", "udp", "-j", "NFQUEUE", "--queue-num", "12"}}, prog: pass},
		{name: "nfqueue-port_filter", rules: [][]string{{"-A", "INPUT", "-p", "udp", "-j", "NFQUEUE", "--queue-num", "12"}},
			prog: coll.Programs["port_filter"]},
	}
	setup := func(b *testing.B, m mode) *Link {
		b.Helper()
		p.B.IPT(b, false, "-F", "INPUT")
		for _, r := range m.rules {
			p.B.IPT(b, false, r...)
		}
		if m.prog == nil {
			return nil
		}
		l, err := m.prog.AttachNFQueue(12, &NFQueueOptions{NetNS: p.B.FD(), MaxLen: 8192})
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	teardown := func(l *Link) {
		if l != nil {
			l.Detach()
			l.Close()
		}
	}
	drain := func() {
		buf := make([]byte, 64)
		for {
			if _, err := unix.Read(rfd, buf); err != nil {
				return
			}
		}
	}
	// flush drops what an earlier case left in the receiver's buffer.
	flush := func() {
		time.Sleep(50 * time.Millisecond)
		unix.SetNonblock(rfd, true)
		drain()
		unix.SetNonblock(rfd, false)
	}
	flush()

	var baseRate, baseLatency float64
	for _, m := range modes {
		b.Run("throughput/"+m.name, func(b *testing.B) {
			l := setup(b, m)
			defer teardown(l)
			flush()
			var before LinkStats
			if l != nil {
				before, _ = l.Stats()
			}
			tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
			unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			var got atomic.Int64
			var last atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				rb := newMmsg(64, 64)
				for got.Load() < int64(b.N) {
					n, err := rb.recv(rfd)
					if err == unix.EINTR {
						continue
					}
					if err != nil {
						return // 200 ms without a datagram: the rest was dropped
					}
					got.Add(int64(n))
					last.Store(time.Now().UnixNano())
				}
			}()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			sb := newMmsg(64, len(payload))
			for left := b.N; left > 0; {
				n, err := sb.send(sfd, min(left, 64))
				if err != nil && err != unix.EINTR && err != unix.ENOBUFS && err != unix.EAGAIN {
					b.Fatal(err)
				}
				left -= n
			}
			wg.Wait()
			b.StopTimer()
			elapsed := time.Duration(last.Load() - start.UnixNano())
			if got.Load() == 0 || elapsed <= 0 {
				b.Fatalf("nothing arrived (%d)", got.Load())
			}
			rate := float64(got.Load()) / elapsed.Seconds()
			b.ReportMetric(rate, "pkts/s")
			b.ReportMetric(100*float64(int64(b.N)-got.Load())/float64(b.N), "lost%")
			if m.name == "no-rule" {
				baseRate = rate
			} else if baseRate > 0 {
				b.ReportMetric(rate/baseRate, "x-no-rule")
			}
			if l != nil {
				after, err := l.Stats()
				if err != nil {
					b.Fatal(err)
				}
				n := float64(after.Packets - before.Packets)
				if n > 0 {
					prog := float64(after.ProgramNs-before.ProgramNs) / n
					io := float64(after.IONs-before.IONs) / n
					dec := float64(after.DecisionMeanNs) // mean over the link's life
					b.ReportMetric(io/1000, "io-µs/pkt")
					b.ReportMetric(prog/1000, "prog-µs/pkt")
					b.ReportMetric((io+dec)/1000, "daemon-µs/pkt")
					b.ReportMetric(100*prog/(io+dec), "prog-share%")
					b.ReportMetric(n/float64(after.Batches-before.Batches), "pkts/batch")
				}
				b.ReportMetric(float64(after.KernelQueueDropped+after.KernelUserDropped), "kernel-drops")
			}
		})
		b.Run("latency/"+m.name, func(b *testing.B) {
			l := setup(b, m)
			defer teardown(l)
			flush()
			tv := unix.NsecToTimeval(int64(time.Second))
			unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			buf := make([]byte, 64)
			samples := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := unix.Write(sfd, payload); err != nil {
					b.Fatal(err)
				}
				for {
					_, err := unix.Read(rfd, buf)
					if err == nil {
						break
					}
					if err != unix.EINTR {
						b.Fatalf("datagram %d lost: %v", i, err)
					}
				}
				samples = append(samples, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(samples)
			med := float64(samples[len(samples)/2].Nanoseconds()) / 1000
			b.ReportMetric(med, "median-µs")
			if m.name == "no-rule" {
				baseLatency = med
			} else if baseLatency > 0 {
				b.ReportMetric(med-baseLatency, "added-µs")
			}
		})
	}
}

// mmsg is a batch of datagram buffers for sendmmsg/recvmmsg.
type mmsg struct {
	bufs []byte
	size int
	iov  []unix.Iovec
	hdrs []mmsghdr
}

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

func newMmsg(n, size int) *mmsg {
	m := &mmsg{bufs: make([]byte, n*size), size: size, iov: make([]unix.Iovec, n), hdrs: make([]mmsghdr, n)}
	for i := range m.hdrs {
		m.iov[i].Base = &m.bufs[i*size]
		m.iov[i].SetLen(size)
		m.hdrs[i].hdr.Iov = &m.iov[i]
		m.hdrs[i].hdr.SetIovlen(1)
	}
	return m
}

// send sends n datagrams (sendmmsg) and returns how many went.
func (m *mmsg) send(fd, n int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(n), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// recv waits for at least one datagram and takes up to a batch
// (recvmmsg, MSG_WAITFORONE).
func (m *mmsg) recv(fd int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)),
		unix.MSG_WAITFORONE, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

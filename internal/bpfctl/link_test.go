package bpfctl

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/internal/netnstest"
	"github.com/bpfd-project/bpfd/pkg/client"
)

// TestLinkCommands: prog attach with --pin in a private network
// namespace, link show (text and JSON) with counters of real traffic,
// link detach, detach again (EBADF), and the usage errors.
func TestLinkCommands(t *testing.T) {
	p := netnstest.NewPair(t, "ctl")
	p.B.IPT(t, false, "-A", "INPUT", "-p", "udp", "--dport", "7300", "-j", "NFQUEUE", "--queue-num", "3")
	d := startDaemon(t)
	obj := filepath.Join("..", "..", "examples", "05-port-filter", "bpf", "port_filter.bpf.o")
	d.mustRun(t, "prog", "load", obj, "--pin-dir", "pf")
	d.mustRun(t, "map", "update", "pf/ports", "--key-u16", "7300", "value", "1")
	// bpfctl binds the queue in its own namespace: run it in B's.
	var r result
	if err := p.B.Do(func() error {
		r = d.run(t, "prog", "attach", "pf/port_filter", "nfqueue", "3", "--pin", "pf/link")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r.code != 0 || !strings.Contains(r.stdout, "attached to nfqueue 3") {
		t.Fatalf("attach: %+v", r)
	}
	var u *net.UDPConn
	p.B.Do(func() (err error) { u, err = net.ListenUDP("udp", &net.UDPAddr{IP: p.B4, Port: 7300}); return })
	defer u.Close()
	p.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: p.B4, Port: 7300})
		if err == nil {
			c.Write([]byte("x"))
			c.Close()
		}
		return err
	})
	u.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := u.Read(make([]byte, 16)); err != nil {
		t.Fatalf("datagram to an allowed port: %v", err)
	}
	r = d.mustRun(t, "link", "show", "pf/link")
	if !strings.Contains(r.stdout, "nfqueue  prog") || !strings.Contains(r.stdout, "port_filter (xdp)  queues 3  fail-closed") ||
		!strings.Contains(r.stdout, "packets 1 ") || !strings.Contains(r.stdout, "pass 1 ") {
		t.Errorf("link show:\n%s", r.stdout)
	}
	r = d.mustRun(t, "-j", "link", "show")
	var list []client.LinkInfo
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].Pass != 1 || list[0].Queues[0] != 3 {
		t.Errorf("link show -j: %s (%v)", r.stdout, err)
	}
	d.mustRun(t, "link", "detach", "pf/link")
	r = d.run(t, "link", "detach", "pf/link")
	if r.code != ExitFailed || !strings.Contains(r.stderr, "EBADF") || !strings.Contains(r.stderr, "already detached") {
		t.Errorf("second detach: %+v", r)
	}
	for _, args := range [][]string{
		{"prog", "attach", "pf/port_filter", "tc", "3"},
		{"prog", "attach", "pf/port_filter", "nfqueue", "x"},
		{"prog", "attach", "pf/port_filter", "nfqueue", "3", "--queues", "4-5"},
		{"prog", "attach", "pf/port_filter", "nfqueue", "3", "--queues", "3-20"},
	} {
		if r := d.run(t, args...); r.code != ExitUsage {
			t.Errorf("%v: exit %d, want usage (%s)", args, r.code, r.stderr)
		}
	}
}

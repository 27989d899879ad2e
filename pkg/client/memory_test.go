package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// memQuotaEnv sets the daemon child's default quota: "MEMORY,MAPMEMORY"
// in bytes (see childDaemon).
const memQuotaEnv = "BPFD_CLIENT_TEST_MEMQUOTA"

// Amplification attack parameters (issue 9): one uid, a 32 MiB map, 40
// connections doing whole-map batch lookups and keeping every reply.
const (
	ampConns     = 40
	ampTries     = 4 // batch lookups per connection
	ampValueSize = 4096
	ampEntries   = 8192 // × 4 KiB values = 32 MiB
	// The attacker's quota: room for the map and a few replies.
	ampMapQuota = 40 << 20
	ampMemQuota = 128 << 20
)

// hoardBatch asks for a whole-map batch lookup on m and keeps the reply's
// memfd open (as an attacker would, so that its pages stay alive). It
// returns the memfd (-1 if none) and the daemon's errno as an error.
func hoardBatch(m *Map, count uint32) (int, error) {
	a := wire.BatchAttr{Handle: m.handle, Count: count}
	var ab [wire.BatchAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, wire.CmdMapLookupBatch, a.Append(ab[:0]), nil); err != nil {
		return -1, err
	}
	fd := -1
	if w.hdr.Flags&wire.ReplyFlagMemfd != 0 {
		fd = w.takeFD(w.nfd - 1)
	}
	w.closeFDs()
	return fd, errnoErr(w.hdr.Errno)
}

// childAmplifier runs the amplification attack against the daemon at
// $BPFD_CLIENT_TEST_SOCKET: a 32 MiB array, imported on 40 connections,
// each asking ampTries times for the whole map in one batch and keeping
// every reply memfd. It prints "done ok=N enomem=M other=K", holds
// everything until stdin closes, then exits.
func childAmplifier() error {
	path := os.Getenv(socketEnvTest)
	c, err := Dial(path)
	if err != nil {
		return err
	}
	m, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: ampValueSize, MaxEntries: ampEntries, Name: "amp"})
	if err != nil {
		return fmt.Errorf("the 32 MiB map: %w", err)
	}
	var ok, nomem, other atomic.Int64
	var mu sync.Mutex
	var kept []int
	var firstOther error
	var wg sync.WaitGroup
	for range ampConns {
		cc, err := Dial(path)
		if err != nil {
			return err
		}
		mi, err := cc.ImportMap(m.FD())
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ampTries {
				fd, err := hoardBatch(mi, ampEntries)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrNoMemory) || errors.Is(err, ErrTooBig):
					nomem.Add(1)
				default:
					other.Add(1)
					mu.Lock()
					if firstOther == nil {
						firstOther = err
					}
					mu.Unlock()
				}
				if fd >= 0 {
					mu.Lock()
					kept = append(kept, fd)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("done ok=%d enomem=%d other=%d kept=%d\n", ok.Load(), nomem.Load(), other.Load(), len(kept))
	if firstOther != nil {
		fmt.Fprintf(os.Stderr, "amplifier: unexpected error: %v\n", firstOther)
	}
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// rssBytes returns VmRSS of process pid.
func rssBytes(t testing.TB, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// ampUIDs returns the attackers' uids: three unprivileged uids when root
// (the invariant is about every uid at its quota at once), this process's
// own uid otherwise.
func ampUIDs() []uint32 {
	if os.Geteuid() == 0 {
		return []uint32{65534, 65533, 65532}
	}
	return []uint32{uint32(os.Geteuid())}
}

// ampOverhead is the daemon's stated fixed overhead over its baseline
// RSS: the Go runtime's slack (garbage not yet collected, pooled
// buffers) and the daemon's own maps and goroutines.
const ampOverhead = 48 << 20

// TestAmplificationBounded is issue 9's memory attack against a real
// daemon process: each attacker uid (three at once when root: 65534,
// 65533, 65532) with a 32 MiB map and 40 connections asking for the whole
// map in one batch, again and again, keeping every reply. Before the fix
// the daemon kept a reply-sized buffer per connection plus each reply's
// memfd (1.36 GB RSS for one uid with a 32 MiB quota). Now every reply is
// charged to its uid until its last copy is closed: once a uid's quota
// (128 MiB) is full it gets ENOMEM, no uid is charged beyond its quota,
// and the daemon's RSS stays below its baseline plus the sum of the
// attackers' quotas plus a stated fixed overhead (ampOverhead; a
// functional bound, not a timing). When the attackers go, every charge
// comes back.
func TestAmplificationBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("moves a few hundred MiB through a daemon process")
	}
	dir := sharedDir(t)
	path := dir + "/bpfd.sock"
	d := sameUserChild(t, "daemon", nil, socketEnvTest+"="+path,
		fmt.Sprintf("%s=%d,%d", memQuotaEnv, ampMemQuota, ampMapQuota))
	stdin, err := d.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := d.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.Stderr = os.Stderr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); d.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("daemon child: %q, %v", line, err)
	}
	pid := d.Process.Pid
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := rssBytes(t, pid)

	// Sample the daemon's RSS all along.
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r := rssBytes(t, pid); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	// Every attacker at once, each as its own uid.
	uids := ampUIDs()
	type attacker struct {
		uid                    uint32
		cmd                    *exec.Cmd
		stdin                  io.WriteCloser
		line                   string
		err                    error
		ok, nomem, other, kept int
	}
	atk := make([]*attacker, len(uids))
	var wg sync.WaitGroup
	for i, uid := range uids {
		a := &attacker{uid: uid, cmd: sameUserChild(t, "amplifier", nil, socketEnvTest+"="+path)}
		if os.Geteuid() == 0 {
			a.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, NoSetGroups: true}}
		}
		if a.stdin, err = a.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		out, err := a.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		a.cmd.Stderr = os.Stderr
		if err := a.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.stdin.Close(); a.cmd.Wait() })
		atk[i] = a
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.line, a.err = bufio.NewReader(out).ReadString('\n')
		}()
	}
	wg.Wait()
	for _, a := range atk {
		if a.err != nil {
			t.Fatalf("amplifier uid %d: %v", a.uid, a.err)
		}
		if _, err := fmt.Sscanf(strings.TrimSpace(a.line), "done ok=%d enomem=%d other=%d kept=%d",
			&a.ok, &a.nomem, &a.other, &a.kept); err != nil {
			t.Fatalf("amplifier uid %d said %q", a.uid, a.line)
		}
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	close(stopSampling)
	<-sampled
	// The reply memfds the attackers hoard are no longer mapped by the
	// daemon (not in its RSS) but their pages are still memory it made
	// (charged to its cgroup): they count in its footprint.
	footprint := rssBytes(t, pid)
	held := map[uint32]uint64{}
	for _, u := range st.UIDs {
		held[u.UID] = u.Memory
	}
	var quotas, charged uint64
	for _, a := range atk {
		t.Logf("attacker uid %d: %d replies, %d ENOMEM/E2BIG, %d other, %d memfds kept; charged %d MiB of %d MiB",
			a.uid, a.ok, a.nomem, a.other, a.kept, held[a.uid]>>20, ampMemQuota>>20)
		if a.other != 0 {
			t.Errorf("uid %d: %d requests failed with something other than ENOMEM/E2BIG", a.uid, a.other)
		}
		if a.nomem == 0 {
			t.Errorf("uid %d was never refused", a.uid)
		}
		if held[a.uid] > ampMemQuota {
			t.Errorf("uid %d holds %d bytes, beyond its quota %d", a.uid, held[a.uid], ampMemQuota)
		}
		quotas += ampMemQuota
		charged += held[a.uid]
		footprint += uint64(a.kept) * ampEntries * ampValueSize
	}
	// The bound: the daemon's baseline, what the attackers' quotas allow,
	// and the stated fixed overhead: far below the 1.36 GB one unfixed
	// uid reached.
	bound := base + quotas + ampOverhead
	t.Logf("%d uids at their quotas: %d MiB charged of %d MiB; daemon RSS %d MiB at start, peak %d MiB; at the end RSS + hoarded replies %d MiB; bound %d MiB (baseline + quotas + %d MiB)",
		len(atk), charged>>20, quotas>>20, base>>20, peak.Load()>>20, footprint>>20, bound>>20, ampOverhead>>20)
	if peak.Load() > bound {
		t.Fatalf("daemon RSS peaked at %d MiB, bound %d MiB", peak.Load()>>20, bound>>20)
	}
	if footprint > bound {
		t.Fatalf("daemon RSS plus the replies clients hoard: %d MiB, bound %d MiB", footprint>>20, bound>>20)
	}
	for _, a := range atk {
		a.stdin.Close()
		if err := a.cmd.Wait(); err != nil {
			t.Fatalf("amplifier uid %d: %v", a.uid, err)
		}
	}
	// Everything comes back once the attackers are gone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status()
		if err != nil {
			t.Fatal(err)
		}
		var left uint64
		for _, u := range st.UIDs {
			if slices.Contains(uids, u.UID) && u.UID != uint32(os.Geteuid()) {
				left += u.Memory
			}
		}
		if left == 0 && st.ReplyMemfds == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the attackers left: %d bytes still charged to them, %d reply memfds outstanding", left, st.ReplyMemfds)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

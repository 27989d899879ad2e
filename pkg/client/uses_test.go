package client

import (
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfd-project/bpfd/internal/netnstest"
)

// What is made through a lent descriptor dies when it is revoked
// (docs/design.md, "The authority tree": uses): a program loaded through
// a lent map descriptor, a program-array slot filled, a seccomp attachment
// and a netfilter-queue link made through a lent program descriptor. The
// owner's objects stay.

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRevokeEndsPrograms: the holder of a lent read-only map descriptor
// loads a program through it and puts the program in its own program
// array; the holder of a lent program descriptor puts that program in the
// same array. Revoking the map descriptor destroys the holder's program
// (its descriptors die, its slot empties); revoking the program
// descriptor empties its slot. The owner's map and program work on.
func TestRevokeEndsPrograms(t *testing.T) {
	s := startServer(t)
	owner, holder := s.dial(t), s.dial(t)
	m := newTestMap(t, owner, MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err := m.Update(u32le(0), u64(41), UpdateAny); err != nil {
		t.Fatal(err)
	}
	q, err := owner.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: readProg(m), License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	lentMap, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	lentProg, err := q.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}

	hm, err := holder.ImportMap(lentMap.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer hm.Close()
	hp, err := holder.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: readProg(hm), License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Close()
	hq, err := holder.ImportProgram(lentProg.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer hq.Close()
	pa := newTestMap(t, holder, MapSpec{Type: ProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	for i, p := range []*Program{hp, hq} {
		if err := pa.Update(u32le(uint32(i)), u32le(uint32(p.FD())), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	if ret, err := hp.Run(&RunOptions{Data: ethFrame()}); err != nil || ret != 41 {
		t.Fatalf("the holder's program before the revocation: %d, %v", ret, err)
	}
	nodes, err := m.Lineage()
	if err != nil {
		t.Fatal(err)
	}
	used := false
	for _, n := range nodes {
		if n.ID == mustInfo(t, lentMap).Node && n.Uses == 1 && len(n.Objects) == 1 {
			used = true
		}
	}
	if !used {
		t.Fatalf("lineage %+v does not show the holder's program on the lent node", nodes)
	}

	slot := make([]byte, 4)
	if err := lentMap.Revoke(); err != nil {
		t.Fatal(err)
	}
	if _, err := hp.Run(&RunOptions{Data: ethFrame()}); !errors.Is(err, ErrBadDescriptor) {
		t.Fatalf("the holder's program after its map descriptor was revoked: %v", err)
	}
	if err := pa.Lookup(u32le(0), slot); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("slot of the destroyed program: %v", err)
	}
	if err := pa.Lookup(u32le(1), slot); err != nil {
		t.Fatalf("slot of the lent program before its revocation: %v", err)
	}
	if err := lentProg.Revoke(); err != nil {
		t.Fatal(err)
	}
	if err := pa.Lookup(u32le(1), slot); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("slot filled through the revoked program descriptor: %v", err)
	}
	if ret, err := q.Run(&RunOptions{Data: ethFrame()}); err != nil || ret != 41 {
		t.Fatalf("the owner's program after the revocations: %d, %v", ret, err)
	}
}

func mustInfo(t *testing.T, m *Map) MapInfo {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestRevokeEndsSeccompAttachment: a process lent a read descriptor of
// the owner's seccomp program runs a command under it; revoking the
// descriptor ends the attachment (the daemon stops answering; the
// command's routed syscalls then fail with ENOSYS, as when the daemon
// stops).
func TestRevokeEndsSeccompAttachment(t *testing.T) {
	s := startServer(t)
	owner, holder := s.dial(t), s.dial(t)
	coll, err := owner.LoadCollection(fixture("seccomp_policy"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	lent, err := coll.Programs["policy"].Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	hp, err := holder.ImportProgram(lent.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Close()
	cmd, err := hp.StartSeccomp(exec.Command("sleep", "30"), &SeccompOptions{Syscalls: []string{"socket"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the attachment", func() bool { return s.srv.Stats().Attachments == 1 })
	if err := lent.Revoke(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the attachment to end", func() bool { return s.srv.Stats().Attachments == 0 })
	if _, err := coll.Programs["policy"].Info(); err != nil {
		t.Fatalf("the owner's program: %v", err)
	}
}

// TestRevokeEndsLink: a process lent a read-write descriptor of the
// owner's XDP program attaches it to a netfilter queue; revoking the
// descriptor destroys the link: its descriptor dies and the queue is free.
func TestRevokeEndsLink(t *testing.T) {
	ns := netnstest.New(t, "rvl")
	s := startServer(t)
	owner, holder := s.dial(t), s.dial(t)
	p, err := owner.LoadProgram(ProgramSpec{Type: XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	lent, err := p.Reopen(ModeReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	hp, err := holder.ImportProgram(lent.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Close()
	l, err := hp.AttachNFQueue(9, &NFQueueOptions{NetNS: ns.FD()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Info(); err != nil {
		t.Fatal(err)
	}
	if err := lent.Revoke(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Info(); !errors.Is(err, ErrBadDescriptor) {
		t.Fatalf("the link made through the revoked descriptor: %v", err)
	}
	waitFor(t, "the link to go", func() bool {
		list, err := holder.Links()
		return err == nil && len(list) == 0
	})
	// The queue is free: the owner attaches there itself.
	l2, err := p.AttachNFQueue(9, &NFQueueOptions{NetNS: ns.FD()})
	if err != nil {
		t.Fatalf("queue after the revoked link: %v", err)
	}
	l2.Close()
}

package bpfemu

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/client"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// TestRevokedDescriptor: a descriptor the task holds is revoked by the
// client that lent it: the task's next calls through it fail with EBADF,
// also lookups the supervisor had been answering from shared memory.
func TestRevokedDescriptor(t *testing.T) {
	h := newHarness(t)
	c, err := client.Dial(h.d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(client.MapSpec{Type: client.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, val := le32(7), le64(70)
	if err := m.Update(key, val, client.UpdateAny); err != nil {
		t.Fatal(err)
	}
	lent, err := m.Reopen(client.ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer lent.Close()
	// The task's copy of the lent descriptor.
	fd, err := unix.FcntlInt(uintptr(lent.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	k, out := make([]byte, 4), make([]byte, 8)
	copy(k, key)
	el := make([]byte, 32)
	put32(el, elMapFD, uint32(fd))
	put64(el, elKey, addr(k))
	put64(el, elValue, addr(out))
	for i := 0; i < 3; i++ { // the later ones from the mapping
		if _, e := h.bpf(cmdMapLookupElem, el, 32); e != 0 || string(out) != string(val) {
			t.Fatalf("lookup %d through the lent descriptor: %v %x", i, e, out)
		}
	}
	mapped := false
	for _, o := range h.s.objects(wire.ObjMap) {
		if st := o.view.Load(); st != nil && st != noView {
			mapped = true
		}
	}
	if !mapped {
		t.Fatal("the lookups were not answered from shared memory")
	}
	if _, e := h.bpf(cmdMapUpdateElem, el, 32); e != unix.EPERM {
		t.Fatalf("update through the read-only descriptor: %v, want EPERM", e)
	}
	if err := lent.Revoke(); err != nil {
		t.Fatal(err)
	}
	if _, e := h.bpf(cmdMapLookupElem, el, 32); e != unix.EBADF {
		t.Fatalf("lookup after revocation: %v, want EBADF", e)
	}
	next := make([]byte, 4)
	put64(el, elValue, addr(next))
	if _, e := h.bpf(cmdMapGetNextKey, el, 32); e != unix.EBADF {
		t.Fatalf("next key after revocation: %v, want EBADF", e)
	}
}

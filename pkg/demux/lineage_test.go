package demux

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// The authority tree in one process (the cross-uid versions are in
// pkg/client's adversarial suite).

func revokeNodeAttr(h uint32, node uint64) []byte {
	a := wire.RevokeNodeAttr{Handle: h, Node: node}
	return a.Append(nil)
}

// lineage returns the object's tree as CmdLineage reports it through h.
func (c *client) lineage(h uint32) []wire.LineageNode {
	c.t.Helper()
	r := c.do(wire.CmdLineage, handleAttr(h, 0), nil)
	if r.h.Errno != 0 {
		c.t.Fatalf("LINEAGE: %v", r.errno())
	}
	var out []wire.LineageNode
	if err := json.Unmarshal(r.data, &out); err != nil || int64(len(out)) != r.h.Ret {
		c.t.Fatalf("LINEAGE reply %q (ret %d): %v", r.data, r.h.Ret, err)
	}
	return out
}

// waitGone waits until path no longer exists.
func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists", path)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestRevokeReachesPins is issue 9's first break: the holder of a
// reopened (revocable) descriptor pins it, opens its pin, reopens and pins
// again; the maker revokes. Every pin made below the revoked descriptor is
// removed (file and persisted record), every descriptor opened from them
// dies, a file opened before the revocation no longer opens the object,
// and the owner's own pin and handles are untouched.
func TestRevokeReachesPins(t *testing.T) {
	per := &memPersister{}
	e, _ := startPinServer(t, "", per)
	owner, holder := dial(t, e.sock), dial(t, e.sock)
	h, _ := owner.createMap(maps.TypeArray, 4, 4, 1, 0)
	if r := owner.do(wire.CmdMapUpdateElem, elemAttr(h, 0), cat(u32(0), u32(7))); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if e := owner.pin(h, 0o600, "own"); e != 0 {
		t.Fatal(e)
	}
	rr := owner.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
	if rr.h.Errno != 0 {
		t.Fatal(rr.errno())
	}
	lent, lentFD := uint32(rr.h.Ret), rr.fds[0]
	if o := replyInfo(t, rr); o.Mode != wire.ModeRead || o.Node == 0 {
		t.Fatalf("reopened info %+v: want mode r and a node id", o)
	}

	ir := holder.do(wire.CmdImport, importAttr(0), nil, lentFD)
	if ir.h.Errno != 0 {
		t.Fatal(ir.errno())
	}
	hh := uint32(ir.h.Ret)
	if e := holder.pin(hh, 0o644, "lent"); e != 0 {
		t.Fatal(e)
	}
	// The pin grants no more than the lent descriptor: read, no destroy,
	// although the holder owns the pin file.
	gr := holder.get(filepath.Join(e.root, "lent"), unix.O_RDWR, 0)
	if gr.h.Errno != 0 || replyInfo(t, gr).Mode != wire.ModeRead {
		t.Fatalf("OBJ_GET of the lent pin: %v %+v", gr.errno(), replyInfo(t, gr))
	}
	fromPin := uint32(gr.h.Ret)
	rr2 := holder.do(wire.CmdReopen, handleAttr(fromPin, wire.ModeRead), nil)
	if rr2.h.Errno != 0 {
		t.Fatal(rr2.errno())
	}
	if e := holder.pin(uint32(rr2.h.Ret), 0o644, "lent2"); e != 0 {
		t.Fatal(e)
	}
	// A file opened before the revocation.
	early, err := unix.Open(filepath.Join(e.root, "lent2"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(early)
	if got := per.only(t); len(got.Pins) != 3 {
		t.Fatalf("persisted pins before the revocation: %+v", got.Pins)
	}

	if r := owner.do(wire.CmdRevoke, handleAttr(lent, 0), nil); r.h.Errno != 0 {
		t.Fatalf("REVOKE: %v", r.errno())
	}
	for _, p := range []string{"lent", "lent2"} {
		if _, err := os.Lstat(filepath.Join(e.root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin %s survived the revocation: %v", p, err)
		}
	}
	if r := holder.do(wire.CmdObjGet, objGetAttr(0), nil, early); r.errno() != unix.ENOENT {
		t.Errorf("OBJ_GET of a revoked pin opened earlier: %v, want ENOENT", r.errno())
	}
	for name, hd := range map[string]uint32{"import": hh, "opened from the pin": fromPin, "reopened from that": uint32(rr2.h.Ret)} {
		if r := holder.do(wire.CmdMapLookupElem, elemAttr(hd, 0), u32(0)); r.errno() != unix.EBADF {
			t.Errorf("%s after revocation: %v, want EBADF", name, r.errno())
		}
	}
	// The record holds the owner's pin only, the revoked pins are gone
	// from it: a restart does not bring them back.
	got := per.only(t)
	if len(got.Pins) != 1 || got.Pins[0].Path != "own" || got.Pins[0].Mode != wire.ModeAll {
		t.Fatalf("persisted pins after the revocation: %+v", got.Pins)
	}
	if r := owner.do(wire.CmdMapLookupElem, elemAttr(h, 0), u32(0)); r.h.Errno != 0 || string(r.data) != string(u32(7)) {
		t.Fatalf("owner's handle after the revocation: %v %x", r.errno(), r.data)
	}
	if r := owner.get(filepath.Join(e.root, "own"), unix.O_RDONLY, 0); r.h.Errno != 0 {
		t.Fatalf("owner's pin after the revocation: %v", r.errno())
	}
}

// TestDestroyRight: issue 9's second and third breaks. Only a handle
// holding the destroy right may destroy: not a pin-minted descriptor of a
// delegate, not a reader of a BPF_F_RDONLY map nor a writer of a
// BPF_F_WRONLY one, not a reopened descriptor; the creator may, whatever
// the map's flags. REOPEN never passes the right; IMPORT keeps it (the fd
// is the capability) or drops it.
func TestDestroyRight(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	owner, other := dial(t, e.sock), dial(t, e.sock)
	for _, tc := range []struct {
		name  string
		flags uint32
		cap   wire.Mode
	}{
		{"plain", 0, wire.ModeReadWrite},
		{"BPF_F_RDONLY", maps.FlagRdonly, wire.ModeRead},
		{"BPF_F_WRONLY", maps.FlagWronly, wire.ModeWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, fd := owner.createMap(maps.TypeArray, 4, 4, 1, tc.flags)
			if e := owner.pin(h, 0o600, "own-"+tc.name); e != 0 {
				t.Fatal(e)
			}
			// A reopened descriptor with every data right the map has.
			rr := owner.do(wire.CmdReopen, handleAttr(h, tc.cap), nil)
			if rr.h.Errno != 0 {
				t.Fatal(rr.errno())
			}
			if r := owner.do(wire.CmdReopen, handleAttr(h, tc.cap|wire.ModeDestroy), nil); r.errno() != unix.EPERM {
				t.Fatalf("REOPEN asking for the destroy right: %v, want EPERM", r.errno())
			}
			// The delegate pins it and opens its own pin: no destroy.
			ir := other.do(wire.CmdImport, importAttr(0), nil, rr.fds[0])
			if ir.h.Errno != 0 {
				t.Fatal(ir.errno())
			}
			if e := other.pin(uint32(ir.h.Ret), 0o600, "lent-"+tc.name); e != 0 {
				t.Fatal(e)
			}
			flags := unix.O_RDWR
			if tc.cap == wire.ModeRead {
				flags = unix.O_RDONLY
			} else if tc.cap == wire.ModeWrite {
				flags = unix.O_WRONLY
			}
			gr := other.get(filepath.Join(e.root, "lent-"+tc.name), flags, 0)
			if gr.h.Errno != 0 || replyInfo(t, gr).Mode != tc.cap {
				t.Fatalf("delegate's pin: %v %v", gr.errno(), replyInfo(t, gr).Mode)
			}
			for name, hd := range map[string]uint32{"import": uint32(ir.h.Ret), "pin-minted": uint32(gr.h.Ret),
				"reopened": uint32(rr.h.Ret)} {
				c := other
				if name == "reopened" {
					c = owner
				}
				if r := c.do(wire.CmdDestroy, handleAttr(hd, 0), nil); r.errno() != unix.EPERM {
					t.Fatalf("DESTROY through the %s handle: %v, want EPERM", name, r.errno())
				}
			}
			// Importing the creating descriptor keeps the right, or
			// drops it when asked.
			ir2 := other.do(wire.CmdImport, importAttr(tc.cap), nil, fd)
			if ir2.h.Errno != 0 || replyInfo(t, ir2).Mode != tc.cap {
				t.Fatalf("import dropping the right: %v", ir2.errno())
			}
			if r := other.do(wire.CmdDestroy, handleAttr(uint32(ir2.h.Ret), 0), nil); r.errno() != unix.EPERM {
				t.Fatalf("DESTROY through an import without the right: %v", r.errno())
			}
			// Still intact: the owner's pin opens.
			if r := owner.get(filepath.Join(e.root, "own-"+tc.name), unix.O_PATH, wire.ModeDestroy); r.h.Errno != 0 {
				t.Fatalf("owner's pin after the refusals: %v", r.errno())
			}
			if r := owner.do(wire.CmdDestroy, handleAttr(h, 0), nil); r.h.Errno != 0 {
				t.Fatalf("the creator's DESTROY: %v", r.errno())
			}
			for _, p := range []string{"own-", "lent-"} {
				if _, err := os.Lstat(filepath.Join(e.root, p+tc.name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("pin %s%s survived DESTROY", p, tc.name)
				}
			}
		})
	}
	waitStats(t, e.srv, "every map freed", func(st Stats) bool { return st.Objects == 0 && st.Descriptors == 0 })
}

// TestOwnerPinPassesDestroy: a pin made with the destroy right passes it
// to its file's owner only; a descriptor opened from it by the owner may
// destroy; another uid owning no file gets the data rights alone.
func TestOwnerPinPassesDestroy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the pin file to another uid")
	}
	e, _ := startPinServer(t, "", nil)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeArray, 4, 4, 1, 0)
	if e := c.pin(h, 0o666, "m"); e != 0 {
		t.Fatal(e)
	}
	path := filepath.Join(e.root, "m")
	if r := c.get(path, unix.O_RDWR, 0); r.h.Errno != 0 || replyInfo(t, r).Mode != wire.ModeAll {
		t.Fatalf("owner's OBJ_GET: %v %v", r.errno(), replyInfo(t, r).Mode)
	}
	// The file now belongs to someone else: this uid is no longer its
	// owner, so the pin passes the data rights only.
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	r := c.get(path, unix.O_RDWR, 0)
	if r.h.Errno != 0 || replyInfo(t, r).Mode != wire.ModeReadWrite {
		t.Fatalf("non-owner's OBJ_GET: %v %v", r.errno(), replyInfo(t, r).Mode)
	}
	if r := c.do(wire.CmdDestroy, handleAttr(uint32(r.h.Ret), 0), nil); r.errno() != unix.EPERM {
		t.Fatalf("DESTROY through a non-owner's pin descriptor: %v", r.errno())
	}
	if r := c.get(path, unix.O_RDWR, wire.ModeAll); r.errno() != unix.EACCES {
		t.Fatalf("non-owner asking for the destroy right: %v, want EACCES", r.errno())
	}
}

// TestLineageAndRevokeNode: the owner sees the whole tree (descriptors,
// pins with their paths, dead nodes kept for their descendants) and
// revokes any branch by node id; nobody else may.
func TestLineageAndRevokeNode(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	owner, holder := dial(t, e.sock), dial(t, e.sock)
	h, _ := owner.createMap(maps.TypeHash, 4, 4, 4, 0)
	rr := owner.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
	if rr.h.Errno != 0 {
		t.Fatal(rr.errno())
	}
	lentNode := replyInfo(t, rr).Node
	ir := holder.do(wire.CmdImport, importAttr(0), nil, rr.fds[0])
	if ir.h.Errno != 0 || replyInfo(t, ir).Node != lentNode {
		t.Fatalf("import: %v, node %d want %d", ir.errno(), replyInfo(t, ir).Node, lentNode)
	}
	if e := holder.pin(uint32(ir.h.Ret), 0o644, "lent"); e != 0 {
		t.Fatal(e)
	}
	// The maker lets go of its handle and the descriptor's fds close:
	// the descriptor node dies but stays for the pin below it.
	owner.do(wire.CmdRelease, handleAttr(uint32(rr.h.Ret), 0), nil)
	holder.do(wire.CmdRelease, handleAttr(uint32(ir.h.Ret), 0), nil)
	unix.Close(rr.fds[0])
	rr.fds[0] = -1
	var nodes []wire.LineageNode
	deadline := time.Now().Add(3 * time.Second)
	for {
		nodes = owner.lineage(h)
		if len(nodes) == 3 && !nodes[1].Live || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if len(nodes) != 3 {
		t.Fatalf("lineage %+v, want root, dead lent descriptor, pin", nodes)
	}
	root, lentD, pin := nodes[0], nodes[1], nodes[2]
	if root.Parent != 0 || !root.Live || root.Mode != "rwd" || root.Kind != wire.NodeDescriptor || root.Handles != 1 {
		t.Errorf("root %+v", root)
	}
	if lentD.ID != lentNode || lentD.Parent != root.ID || lentD.Live || lentD.Mode != "r" {
		t.Errorf("lent descriptor %+v", lentD)
	}
	if pin.Kind != wire.NodePin || pin.Parent != lentD.ID || !pin.Live || pin.Path != "lent" || pin.Mode != "r" {
		t.Errorf("pin %+v", pin)
	}

	// Only the destroy right sees or revokes.
	gr := holder.get(filepath.Join(e.root, "lent"), unix.O_RDONLY, 0)
	if gr.h.Errno != 0 {
		t.Fatal(gr.errno())
	}
	if r := holder.do(wire.CmdLineage, handleAttr(uint32(gr.h.Ret), 0), nil); r.errno() != unix.EPERM {
		t.Fatalf("LINEAGE without the destroy right: %v", r.errno())
	}
	if r := holder.do(wire.CmdRevokeNode, revokeNodeAttr(uint32(gr.h.Ret), root.ID), nil); r.errno() != unix.EPERM {
		t.Fatalf("REVOKE_NODE without the destroy right: %v", r.errno())
	}
	if r := owner.do(wire.CmdRevokeNode, revokeNodeAttr(h, 9999), nil); r.errno() != unix.ENOENT {
		t.Fatalf("REVOKE_NODE of an unknown node: %v", r.errno())
	}
	r := owner.do(wire.CmdRevokeNode, revokeNodeAttr(h, lentD.ID), nil)
	if r.h.Errno != 0 || r.h.Ret != 3 { // the dead descriptor, the pin, the holder's descriptor
		t.Fatalf("REVOKE_NODE: %v, ret %d", r.errno(), r.h.Ret)
	}
	if _, err := os.Lstat(filepath.Join(e.root, "lent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("revoked pin file left")
	}
	if r := holder.do(wire.CmdMapLookupElem, elemAttr(uint32(gr.h.Ret), 0), u32(0)); r.errno() != unix.EBADF {
		t.Fatalf("descriptor from the revoked pin: %v", r.errno())
	}
	if got := owner.lineage(h); len(got) != 1 || got[0].ID != root.ID {
		t.Fatalf("lineage after the revocation %+v", got)
	}
}

// TestRestoredLineage: a pin made from a delegate's descriptor is restored
// in its place after a restart: still without the destroy right, still
// below (a dead stand-in for) the descriptor it came from, and the owner
// can revoke that descriptor after the restart by its node id.
func TestRestoredLineage(t *testing.T) {
	base := traversableDir(t)
	per := &memPersister{}
	e, stop := startPinServer(t, base, per)
	owner, holder := dial(t, e.sock), dial(t, e.sock)
	h, _ := owner.createMap(maps.TypeArray, 4, 4, 1, 0)
	if e := owner.pin(h, 0o600, "own"); e != 0 {
		t.Fatal(e)
	}
	rr := owner.do(wire.CmdReopen, handleAttr(h, wire.ModeRead), nil)
	if rr.h.Errno != 0 {
		t.Fatal(rr.errno())
	}
	lentNode := replyInfo(t, rr).Node
	ir := holder.do(wire.CmdImport, importAttr(0), nil, rr.fds[0])
	if ir.h.Errno != 0 {
		t.Fatal(ir.errno())
	}
	if e := holder.pin(uint32(ir.h.Ret), 0o644, "lent"); e != 0 {
		t.Fatal(e)
	}
	owner.nc.Close()
	holder.nc.Close()
	stop()
	po := per.only(t)

	per2 := &memPersister{}
	e2, _ := startPinServer(t, base, per2)
	if n, err := e2.srv.RestorePinned(po); err != nil || n != 2 {
		t.Fatalf("RestorePinned = %d, %v", n, err)
	}
	c := dial(t, e2.sock)
	lr := c.get(filepath.Join(e2.root, "lent"), unix.O_RDWR, 0)
	if lr.h.Errno != 0 || replyInfo(t, lr).Mode != wire.ModeRead {
		t.Fatalf("restored delegate pin: %v %v", lr.errno(), replyInfo(t, lr).Mode)
	}
	if r := c.do(wire.CmdDestroy, handleAttr(uint32(lr.h.Ret), 0), nil); r.errno() != unix.EPERM {
		t.Fatalf("DESTROY through the restored delegate pin: %v", r.errno())
	}
	or := c.get(filepath.Join(e2.root, "own"), unix.O_RDWR, 0)
	if or.h.Errno != 0 || replyInfo(t, or).Mode != wire.ModeAll {
		t.Fatalf("restored owner pin: %v %v", or.errno(), replyInfo(t, or).Mode)
	}
	oh := uint32(or.h.Ret)
	nodes := c.lineage(oh)
	var lent *wire.LineageNode
	for i := range nodes {
		if nodes[i].ID == lentNode {
			lent = &nodes[i]
		}
	}
	if lent == nil || lent.Live || lent.Kind != wire.NodeDescriptor {
		t.Fatalf("restored lineage %+v lacks the dead lent descriptor %d", nodes, lentNode)
	}
	// New nodes continue above the restored ids.
	if n := replyInfo(t, or).Node; n <= po.NextNode {
		t.Fatalf("new node %d reuses an id (last given out %d)", n, po.NextNode)
	}
	if r := c.do(wire.CmdRevokeNode, revokeNodeAttr(oh, lentNode), nil); r.h.Errno != 0 {
		t.Fatalf("REVOKE_NODE after the restart: %v", r.errno())
	}
	if _, err := os.Lstat(filepath.Join(e2.root, "lent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("revoked restored pin left")
	}
	if r := c.do(wire.CmdMapLookupElem, elemAttr(uint32(lr.h.Ret), 0), u32(0)); r.errno() != unix.EBADF {
		t.Fatalf("descriptor from the revoked restored pin: %v", r.errno())
	}
	if got := per2.only(t); len(got.Pins) != 1 || got.Pins[0].Path != "own" {
		t.Fatalf("record after the revocation: %+v", got.Pins)
	}
}

// TestRestoreNeverWidens: a record cannot give a pin more than its parent
// had (a tampered or stale record), nor restore under another pin root,
// nor restore a malformed tree.
func TestRestoreNeverWidens(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	base := &PinnedObject{Key: "00112233445566778899aabbccddeeff", Kind: wire.ObjMap,
		Spec:     maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 4, MaxEntries: 1},
		Nodes:    []NodeRecord{{ID: 1, Mode: wire.ModeAll}, {ID: 2, Parent: 1, Mode: wire.ModeRead}},
		Pins:     []PinRecord{{Path: "p", Mode: wire.ModeAll, Node: 3, Parent: 2, Perm: 0o644}},
		NextNode: 3}
	if n, err := e.srv.RestorePinned(base); err != nil || n != 1 {
		t.Fatalf("RestorePinned = %d, %v", n, err)
	}
	c := dial(t, e.sock)
	if r := c.get(filepath.Join(e.root, "p"), unix.O_RDWR, 0); r.h.Errno != 0 || replyInfo(t, r).Mode != wire.ModeRead {
		t.Fatalf("pin below a read-only node restored with %v (%v), want r", replyInfo(t, r).Mode, r.errno())
	}
	for _, tc := range []struct {
		name string
		mod  func(po *PinnedObject)
		want error
	}{
		{"other pin root", func(po *PinnedObject) { po.PinRoot = "/elsewhere" }, ErrRestoreRoot},
		{"unknown parent", func(po *PinnedObject) { po.Pins[0].Parent = 7 }, ErrRestoreLineage},
		{"cycle", func(po *PinnedObject) {
			po.Nodes = []NodeRecord{{ID: 1, Parent: 2, Mode: wire.ModeAll}, {ID: 2, Parent: 1, Mode: wire.ModeAll}}
		}, ErrRestoreLineage},
		{"id beyond NextNode", func(po *PinnedObject) { po.NextNode = 2 }, ErrRestoreLineage},
		{"repeated id", func(po *PinnedObject) { po.Pins[0].Node = 2 }, ErrRestoreLineage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			po := *base
			po.Key = "ffeeddccbbaa99887766554433221100"
			po.Nodes = append([]NodeRecord(nil), base.Nodes...)
			po.Pins = append([]PinRecord(nil), base.Pins...)
			po.Pins[0].Path = "q-" + tc.name
			tc.mod(&po)
			if _, err := e.srv.RestorePinned(&po); !errors.Is(err, tc.want) {
				t.Fatalf("RestorePinned = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRestoreKeepsLastAttributes is issue 9's ninth break: a pin made
// 0644, then chmod'ed to 0600 and given an ACL and another group; the
// daemon crashes and the pin file is gone (a reboot emptied /run). The
// record written when the attributes changed — not the one of pin time —
// brings the pin back with exactly the last attributes.
func TestRestoreKeepsLastAttributes(t *testing.T) {
	base := traversableDir(t)
	per := &memPersister{}
	e, stop := startPinServer(t, base, per)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeArray, 4, 4, 1, 0)
	if e := c.pin(h, 0o644, "p"); e != 0 {
		t.Fatal(e)
	}
	path := filepath.Join(e.root, "p")
	waitRecord := func(what string, ok func(PinRecord) bool) PinRecord {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			per.mu.Lock()
			var rec *PinRecord
			for _, po := range per.objs {
				if len(po.Pins) == 1 {
					r := po.Pins[0]
					rec = &r
				}
			}
			per.mu.Unlock()
			if rec != nil && ok(*rec) {
				return *rec
			}
			if time.Now().After(deadline) {
				t.Fatalf("record never showed %s: %+v", what, rec)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	waitRecord("mode 0600", func(r PinRecord) bool { return r.Perm == 0o600 })
	wantGID := uint32(os.Getegid())
	if os.Geteuid() == 0 {
		wantGID = 65534
		if err := os.Chown(path, -1, int(wantGID)); err != nil {
			t.Fatal(err)
		}
		waitRecord("the new group", func(r PinRecord) bool { return r.GID == wantGID })
	}
	// An ACL granting uid 65534 read (mask r, so group bits r: 0640).
	acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 254, 255, 0, 0,
		4, 0, 0, 0, 255, 255, 255, 255, 16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255}
	withACL := true
	if err := unix.Setxattr(path, "system.posix_acl_access", acl, 0); err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) {
			t.Fatal(err)
		}
		withACL = false
		t.Logf("no POSIX ACLs on %s: checking mode and group only", path)
	}
	want := waitRecord("the last attributes", func(r PinRecord) bool {
		return !withACL || string(r.ACL) == string(acl) && r.Perm == 0o640
	})
	if per.pinSaves == 0 {
		t.Fatal("attribute changes were recorded by full saves, not SavePins")
	}
	crashed := *per.only(t) // the record as a crash would leave it
	c.nc.Close()
	stop()

	// The pin file is gone when the daemon comes back.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	per2 := &memPersister{}
	e2, _ := startPinServer(t, base, per2)
	if n, err := e2.srv.RestorePinned(&crashed); err != nil || n != 1 {
		t.Fatalf("RestorePinned = %d, %v", n, err)
	}
	np := filepath.Join(e2.root, "p")
	var st unix.Stat_t
	if err := unix.Stat(np, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != uint32(want.Perm) || st.Uid != want.UID || st.Gid != wantGID {
		t.Fatalf("restored pin mode %o uid %d gid %d, want %o %d %d", st.Mode&0o777, st.Uid, st.Gid, want.Perm, want.UID, wantGID)
	}
	if withACL {
		got := make([]byte, 256)
		n, err := unix.Getxattr(np, "system.posix_acl_access", got)
		if err != nil || string(got[:n]) != string(acl) {
			t.Fatalf("restored ACL %v, %v; want %v", got[:max(n, 0)], err, acl)
		}
	}
}

// refProg is a socket filter referencing map 0 (LD_IMM64 of a map) and
// returning 0.
func refProg() []byte {
	return []byte{
		0x18, 0x11, 0, 0, 0, 0, 0, 0, // r1 = map 0
		0, 0, 0, 0, 0, 0, 0, 0,
		0xb7, 0, 0, 0, 0, 0, 0, 0, // r0 = 0
		0x95, 0, 0, 0, 0, 0, 0, 0, // exit
	}
}

// TestRestoredProgramUses: a pinned program that was loaded through a
// lent (reopened) map descriptor is restored hanging on that descriptor's
// node in the map's lineage: after the restart the owner revokes the node
// and the program is destroyed — its pin removed, its memory freed — while
// the map and its owner's pin stay. LINEAGE shows the use.
func TestRestoredProgramUses(t *testing.T) {
	e, _ := startPinServer(t, "", nil)
	spec := maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 4, MaxEntries: 1, Name: "m"}
	mapRec := &PinnedObject{Key: "00112233445566778899aabbccddeeff", Kind: wire.ObjMap, Spec: spec,
		Nodes: []NodeRecord{{ID: 1, Mode: wire.ModeAll}},
		Pins:  []PinRecord{{Path: "m", Mode: wire.ModeAll, Node: 2, Parent: 1, Perm: 0o600}}, NextNode: 4}
	if _, err := e.srv.RestorePinned(mapRec); err != nil {
		t.Fatal(err)
	}
	progRec := &PinnedObject{Key: "ffeeddccbbaa99887766554433221100", Kind: wire.ObjProg,
		Prog: &PinnedProg{Type: 1, Name: "p", License: "GPL", Insns: refProg(),
			Maps: []PinnedProgMap{{Key: mapRec.Key, Read: true, Spec: spec, Uses: []uint64{3},
				Nodes: []NodeRecord{{ID: 1, Mode: wire.ModeAll}, {ID: 3, Parent: 1, Mode: wire.ModeRead}}}}},
		Nodes: []NodeRecord{{ID: 1, Mode: wire.ModeAll}},
		Pins:  []PinRecord{{Path: "p", Mode: wire.ModeAll, Node: 2, Parent: 1, Perm: 0o600}}, NextNode: 2}
	if _, err := e.srv.RestorePinned(progRec); err != nil {
		t.Fatal(err)
	}
	c := dial(t, e.sock)
	mr := c.get(filepath.Join(e.root, "m"), unix.O_RDWR, 0)
	if mr.h.Errno != 0 {
		t.Fatal(mr.errno())
	}
	mh := uint32(mr.h.Ret)
	var used *wire.LineageNode
	nodes := c.lineage(mh)
	for i := range nodes {
		if nodes[i].ID == 3 {
			used = &nodes[i]
		}
	}
	if used == nil || used.Live || used.Uses != 1 || len(used.Objects) != 1 {
		t.Fatalf("lineage %+v: node 3 should be a dead descriptor used by the program", nodes)
	}
	if r := c.do(wire.CmdRevokeNode, revokeNodeAttr(mh, 3), nil); r.h.Errno != 0 {
		t.Fatalf("REVOKE_NODE: %v", r.errno())
	}
	if _, err := os.Lstat(filepath.Join(e.root, "p")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the program's pin survived the revocation of the map node it used")
	}
	waitStats(t, e.srv, "the program freed", func(st Stats) bool { return st.Programs == 0 && st.Maps == 1 })
	if r := c.do(wire.CmdMapLookupElem, elemAttr(mh, 0), u32(0)); r.h.Errno != 0 {
		t.Fatalf("the map after the revocation: %v", r.errno())
	}
	// A record whose uses name no node of the map is refused.
	bad := *progRec
	bad.Key = "0123456789abcdef0123456789abcdef"
	bp := *progRec.Prog
	bp.Maps = []PinnedProgMap{{Key: mapRec.Key, Read: true, Spec: spec, Uses: []uint64{77}}}
	bad.Prog = &bp
	bad.Pins = []PinRecord{{Path: "p2", Mode: wire.ModeAll, Node: 2, Parent: 1, Perm: 0o600}}
	if _, err := e.srv.RestorePinned(&bad); !errors.Is(err, ErrRestoreLineage) {
		t.Fatalf("program record with an unknown use: %v", err)
	}
	waitStats(t, e.srv, "nothing left of the refused record", func(st Stats) bool { return st.Objects == 1 })
}

// TestPinsChargeDescriptors: each pin costs the daemon an fd, so it counts
// as one of its maker's descriptors: a uid cannot hold the daemon's fds
// beyond its quota by pinning a descriptor it was lent again and again.
func TestPinsChargeDescriptors(t *testing.T) {
	base := traversableDir(t)
	q := Quota{Descriptors: 3}
	srv, err := NewServer(&Config{PinRoot: filepath.Join(base, "pins"), DefaultQuota: q, RootQuota: q})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(base, "s.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := dial(t, sock)
	h, _ := c.createMap(maps.TypeArray, 4, 4, 1, 0) // descriptor 1
	for _, p := range []string{"a", "b"} {          // descriptors 2, 3
		if e := c.pin(h, 0o600, p); e != 0 {
			t.Fatalf("pin %s: %v", p, e)
		}
	}
	if e := c.pin(h, 0o600, "c"); e != unix.ENOSPC {
		t.Fatalf("pin beyond the descriptor quota: %v, want ENOSPC", e)
	}
	if _, err := os.Lstat(filepath.Join(base, "pins", "c")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused pin left its file")
	}
	if st := srv.Stats(); st.Pins != 2 || len(st.UIDs) != 1 || st.UIDs[0].Descriptors != 3 {
		t.Fatalf("stats %+v", st)
	}
	if err := os.Remove(filepath.Join(base, "pins", "a")); err != nil {
		t.Fatal(err)
	}
	waitStats(t, srv, "the unpinned pin uncharged", func(st Stats) bool { return st.Pins == 1 })
	if e := c.pin(h, 0o600, "c"); e != 0 {
		t.Fatalf("pin after an unpin: %v", e)
	}
}

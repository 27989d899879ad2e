package demux

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// TestPinProgArrayPersisted: a program array can be pinned with a
// persister (its slots are not saved: they name programs of this run) and
// comes back empty, with its pin, after a restart.
func TestPinProgArrayPersisted(t *testing.T) {
	base := traversableDir(t)
	per := &memPersister{}
	e, stop := startPinServer(t, base, per)
	c := dial(t, e.sock)
	h, _ := c.createMap(maps.TypeProgArray, 4, 4, 4, 0)
	if e := c.pin(h, 0o600, "jmp"); e != 0 {
		t.Fatalf("pin a program array: %v", e)
	}
	po := per.only(t)
	if po.Spec.Type != maps.TypeProgArray || len(po.Entries) != 0 || len(po.Pins) != 1 {
		t.Fatalf("record: %+v", po)
	}
	c.nc.Close()
	stop()

	e2, _ := startPinServer(t, base, &memPersister{})
	if n, err := e2.srv.RestorePinned(per.only(t)); err != nil || n != 1 {
		t.Fatalf("RestorePinned = %d, %v", n, err)
	}
	c2 := dial(t, e2.sock)
	r := c2.get(filepath.Join(e2.root, "jmp"), unix.O_RDWR, 0)
	if r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if o := replyInfo(t, r); o.Type != maps.TypeProgArray || o.MaxEntries != 4 {
		t.Fatalf("restored info %+v", o)
	}
	for k := uint32(0); k < 4; k++ {
		if lr := c2.do(wire.CmdMapLookupElem, elemAttr(uint32(r.h.Ret), 0), u32(k)); lr.errno() != unix.ENOENT {
			t.Fatalf("restored program array slot %d not empty: %v %x", k, lr.errno(), lr.data)
		}
	}
}

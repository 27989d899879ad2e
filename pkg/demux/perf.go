package demux

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// perfRing executes CmdPerfRing: attach a perf ring to a slot of a perf
// event array, or detach one (see wire.PerfRingAttr). The ring belongs
// to the handle that attached it: releasing or revoking the handle
// detaches it (releasePerfRings), as closing the map file through which a
// perf event was installed clears its slot in the kernel.
func (c *conn) perfRing(a, data []byte) (int64, error) {
	var at wire.PerfRingAttr
	if !at.Parse(a) || len(data) != 0 || at.Flags&^wire.PerfRingDetach != 0 {
		return 0, ErrInvalid
	}
	hd, err := c.mapHandle(at.Handle, wire.ModeWrite)
	if err != nil {
		return 0, err
	}
	pa, ok := hd.obj.m.(*maps.PerfEventArray)
	if !ok {
		return 0, ErrInvalid
	}
	if at.Flags&wire.PerfRingDetach != 0 {
		return 0, pa.DetachRing(at.Index, at.RingID)
	}
	pa.DetachIf(ownerGone)
	r, err := pa.AttachRing(at.Index, maps.PerfOptions{CPU: int(at.CPU), Pages: int(at.Pages),
		WakeupEvents: at.WakeupEvents, Watermark: at.Watermark}, hd, nil)
	if err != nil {
		return 0, err
	}
	mem, wake, err := r.FDs()
	if err != nil {
		pa.DetachRing(at.Index, r.ID())
		return 0, err
	}
	if hd.dead.Load() { // released while attaching: do not leave the ring behind
		unix.Close(mem)
		unix.Close(wake)
		pa.DetachRing(at.Index, r.ID())
		return 0, ErrBadHandle
	}
	c.addFD(mem)
	c.addFD(wake)
	info := wire.PerfRingInfo{RingID: r.ID(), CPU: uint32(r.CPU()), Size: r.Size()}
	info.Append(c.alloc(wire.PerfRingInfoSize)[:0])
	return 0, nil
}

// ownerGone reports whether a perf ring's owner (the handle that attached
// it) was released or revoked.
func ownerGone(owner any) bool {
	h, ok := owner.(*handle)
	return !ok || h.dead.Load()
}

// releasePerfRings detaches the perf rings h attached (h is dead now).
func releasePerfRings(h *handle) {
	if h.obj == nil {
		return
	}
	if pa, ok := h.obj.m.(*maps.PerfEventArray); ok {
		pa.DetachIf(func(owner any) bool { return owner == h })
	}
}

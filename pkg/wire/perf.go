package wire

// Perf rings: the consumer of a BPF_MAP_TYPE_PERF_EVENT_ARRAY slot (the
// kernel's perf_event_open of PERF_COUNT_SW_BPF_OUTPUT, mmap of its ring
// and map update with its fd, in one command).

// CmdPerfRing attaches a perf ring to a slot of a perf event array, or
// detaches one. See PerfRingAttr.
const CmdPerfRing Cmd = 0x141

func init() { cmdNames[CmdPerfRing] = "PERF_RING" }

// PerfRingDetach (PerfRingAttr.Flags) detaches the ring RingID from slot
// Index instead of attaching one.
const PerfRingDetach uint32 = 1 << 0

// PerfRingAttr is CmdPerfRing's attr (32 bytes). The handle needs write
// mode (EPERM; attaching is the kernel's map update). Attach makes a ring
// of Pages data pages (a power of two) bound to CPU slot CPU in slot
// Index, replacing what the slot held, waking its consumer every
// WakeupEvents samples or past Watermark bytes (at most one of them;
// neither: at half the ring). Reply: fd 0 = the ring's memory (metadata
// page then data pages, O_RDWR: the consumer writes data_tail), fd 1 = an
// eventfd signalled on wakeups and once when the ring is detached, data =
// PerfRingInfo. The ring stays in the slot until it is detached, the slot
// deleted or replaced, the handle that attached it released or revoked,
// or the map freed. Errors: EINVAL (not a perf event array, bad pages,
// CPU or wakeup options, unknown flags), E2BIG (Index beyond
// max_entries), ENOENT (detach of a ring the slot does not hold), EPERM.
type PerfRingAttr struct {
	Handle       uint32
	Index        uint32
	CPU          uint32
	Pages        uint32
	WakeupEvents uint32
	Watermark    uint32
	Flags        uint32
	RingID       uint32
}

// PerfRingAttrSize is the encoded size of PerfRingAttr.
const PerfRingAttrSize = 32

// Append appends a's encoding to b.
func (a *PerfRingAttr) Append(b []byte) []byte {
	b = le.AppendUint32(b, a.Handle)
	b = le.AppendUint32(b, a.Index)
	b = le.AppendUint32(b, a.CPU)
	b = le.AppendUint32(b, a.Pages)
	b = le.AppendUint32(b, a.WakeupEvents)
	b = le.AppendUint32(b, a.Watermark)
	b = le.AppendUint32(b, a.Flags)
	return le.AppendUint32(b, a.RingID)
}

// Parse decodes a from a normalised attr.
func (a *PerfRingAttr) Parse(b []byte) bool {
	if len(b) < PerfRingAttrSize {
		return false
	}
	a.Handle = le.Uint32(b[0:])
	a.Index = le.Uint32(b[4:])
	a.CPU = le.Uint32(b[8:])
	a.Pages = le.Uint32(b[12:])
	a.WakeupEvents = le.Uint32(b[16:])
	a.Watermark = le.Uint32(b[20:])
	a.Flags = le.Uint32(b[24:])
	a.RingID = le.Uint32(b[28:])
	return true
}

// PerfRingInfo is CmdPerfRing's reply data on attach (16 bytes).
type PerfRingInfo struct {
	// RingID names the ring (for detach; the slot's id in dumps).
	RingID uint32
	// CPU is the CPU slot the ring is bound to.
	CPU uint32
	// Size is the ring's memory: the metadata page and the data pages.
	Size uint64
}

// PerfRingInfoSize is the encoded size of PerfRingInfo.
const PerfRingInfoSize = 16

// Append appends i's encoding to b.
func (i *PerfRingInfo) Append(b []byte) []byte {
	b = le.AppendUint32(b, i.RingID)
	b = le.AppendUint32(b, i.CPU)
	return le.AppendUint64(b, i.Size)
}

// Parse decodes i; false if b is shorter than PerfRingInfoSize.
func (i *PerfRingInfo) Parse(b []byte) bool {
	if len(b) < PerfRingInfoSize {
		return false
	}
	i.RingID = le.Uint32(b[0:])
	i.CPU = le.Uint32(b[4:])
	i.Size = le.Uint64(b[8:])
	return true
}

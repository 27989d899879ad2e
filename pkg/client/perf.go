package client

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// PerfEventArray is BPF_MAP_TYPE_PERF_EVENT_ARRAY: programs write
// samples with bpf_perf_event_output to the perf ring of a slot
// (BPF_F_CURRENT_CPU: the slot of the CPU they run on); a PerfReader
// attaches a ring per CPU and reads them. KeySize and ValueSize are 4;
// MaxEntries is usually PossibleCPUs(). On the syscall side a slot holds
// no value a client could store or read: Update returns
// ErrBadDescriptor (the kernel's answer to a descriptor that is not a
// perf event) and Lookup ENOTSUPP, as the kernel.
const PerfEventArray MapType = 4 // BPF_MAP_TYPE_PERF_EVENT_ARRAY

// PerfRecord is one record read from a perf event array, as
// cilium/ebpf's perf.Record.
type PerfRecord struct {
	// CPU is the CPU slot (and map index) of the ring the record was
	// read from.
	CPU int
	// RawSample is the sample's data, padded with zeros so that the
	// record is 8-byte aligned, as the kernel pads it (a copy owned by the
	// caller; ReadInto reuses its capacity). Empty for a lost record.
	RawSample []byte
	// LostSamples is how many samples the ring had no room for, when the
	// record reports a loss (PERF_RECORD_LOST); 0 for a sample.
	LostSamples uint64
	// Remaining is how many bytes of records the ring held beyond this
	// one when it was read.
	Remaining int
}

// PerfReaderOptions tune a PerfReader's rings.
type PerfReaderOptions struct {
	// WakeupEvents wakes the reader every WakeupEvents samples of a ring;
	// Watermark when a ring holds more than Watermark bytes not yet
	// signalled. At most one may be set; with neither the reader wakes on
	// every sample (as cilium/ebpf's default).
	WakeupEvents int
	Watermark    int
}

// PerfReader reads a perf event array's samples the way cilium/ebpf's
// perf.Reader reads the kernel's: one perf ring per CPU slot (index i
// bound to CPU i, for i below min(MaxEntries, PossibleCPUs())), each
// mapped into this process (metadata page and data pages, the kernel's
// struct perf_event_mmap_page layout), so no record costs a round trip.
// Attaching a ring is the kernel's map update: the reader needs write
// mode. A ring belongs to the handle that attached it: closing the
// reader, releasing or revoking the map's descriptor, deleting or
// replacing the slot, or freeing the map detaches it.
//
// Read blocks on the rings' eventfds (the daemon signals them with the
// kernel's wakeup rules), up to the deadline SetDeadline sets; PollFD
// returns a pollable descriptor for an event loop. When a ring is
// detached by someone else, the reader reads what it held and drops it;
// when no ring remains, Read returns ErrBadDescriptor. Read and ReadInto
// must not be called concurrently; SetDeadline and Close may be called
// from any goroutine.
type PerfReader struct {
	m    *Map
	poll *readPoll
	size int // data bytes per ring

	mu    sync.Mutex  // serialises reads
	rings []*perfRing // guarded by mu; nil entries were dropped
	cur   int         // the ring Read continues with
	live  int         // rings not dropped

	closeOnce sync.Once
	closed    chan struct{}
}

type perfRing struct {
	cpu, index int
	id         uint32
	mem        []byte
	wake       int
	rd         *mapview.PerfReader
}

// NewPerfReader attaches a ring of perCPUBuffer bytes (rounded up to a
// power-of-two number of pages) to each CPU's slot of m and returns a
// reader of them; see NewPerfReaderWithOptions.
func NewPerfReader(m *Map, perCPUBuffer int) (*PerfReader, error) {
	return NewPerfReaderWithOptions(m, perCPUBuffer, PerfReaderOptions{})
}

// NewPerfReaderWithOptions is NewPerfReader with wakeup options. It
// returns ErrInvalid for a map that is not a perf event array, a buffer
// size that is not positive or beyond 64 MiB, or both wakeup options;
// ErrPermission without write mode; the daemon's errors otherwise. The
// reader must be closed; it does not close m.
func NewPerfReaderWithOptions(m *Map, perCPUBuffer int, opts PerfReaderOptions) (*PerfReader, error) {
	if m.info.Type != PerfEventArray || perCPUBuffer <= 0 || perCPUBuffer > 64<<20 ||
		opts.WakeupEvents < 0 || opts.Watermark < 0 || opts.WakeupEvents != 0 && opts.Watermark != 0 {
		return nil, ErrInvalid
	}
	if m.info.Mode&ModeWrite == 0 {
		return nil, ErrPermission
	}
	pages := 1
	for pages*mapview.PageSize < perCPUBuffer {
		pages <<= 1
	}
	if opts.WakeupEvents == 0 && opts.Watermark == 0 {
		opts.WakeupEvents = 1
	}
	if opts.Watermark >= pages*mapview.PageSize {
		return nil, ErrInvalid
	}
	poll, err := newReadPoll()
	if err != nil {
		return nil, err
	}
	r := &PerfReader{m: m, poll: poll, size: pages * mapview.PageSize, closed: make(chan struct{})}
	n := min(int(m.info.MaxEntries), PossibleCPUs())
	for cpu := 0; cpu < n; cpu++ {
		ring, err := r.attach(cpu, pages, opts)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.rings = append(r.rings, ring)
		r.live++
	}
	return r, nil
}

// attach asks for a ring in slot cpu bound to CPU cpu and maps it.
func (r *PerfReader) attach(cpu, pages int, opts PerfReaderOptions) (*perfRing, error) {
	at := wire.PerfRingAttr{Handle: r.m.handle, Index: uint32(cpu), CPU: uint32(cpu), Pages: uint32(pages),
		WakeupEvents: uint32(opts.WakeupEvents), Watermark: uint32(opts.Watermark)}
	var ab [wire.PerfRingAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := r.m.c.do(w, &r.m.ref, wire.CmdPerfRing, at.Append(ab[:0]), nil); err != nil {
		return nil, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return nil, err
	}
	data, err := w.payload()
	if err != nil {
		return nil, err
	}
	var info wire.PerfRingInfo
	if !info.Parse(data) || w.nfd < 2 || info.Size != uint64((pages+1)*mapview.PageSize) {
		return nil, errProtocol
	}
	memfd, wake := w.takeFD(0), w.takeFD(1)
	defer unix.Close(memfd)
	ring := &perfRing{cpu: int(info.CPU), index: cpu, id: info.RingID, wake: wake}
	fail := func(err error) (*perfRing, error) {
		ring.release()
		r.detach(ring)
		return nil, err
	}
	if ring.mem, err = unix.Mmap(memfd, 0, int(info.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		ring.mem = nil
		return fail(os.NewSyscallError("mmap", err))
	}
	if ring.rd, err = mapview.NewPerfReader(ring.mem); err != nil {
		return fail(errProtocol)
	}
	if err := r.poll.add(wake); err != nil {
		return fail(err)
	}
	return ring, nil
}

// detach asks the daemon to empty ring's slot if it still holds it
// (errors ignored: the ring may be gone already).
func (r *PerfReader) detach(ring *perfRing) {
	at := wire.PerfRingAttr{Handle: r.m.handle, Index: uint32(ring.index), Flags: wire.PerfRingDetach, RingID: ring.id}
	var ab [wire.PerfRingAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if r.m.c.do(w, &r.m.ref, wire.CmdPerfRing, at.Append(ab[:0]), nil) == nil {
		w.closeFDs()
	}
}

func (ring *perfRing) release() {
	if ring.mem != nil {
		unix.Munmap(ring.mem)
		ring.mem, ring.rd = nil, nil
	}
	if ring.wake >= 0 {
		unix.Close(ring.wake)
		ring.wake = -1
	}
}

// Read returns the next record, waiting for one (see ReadInto).
func (r *PerfReader) Read() (PerfRecord, error) {
	var rec PerfRecord
	err := r.ReadInto(&rec)
	return rec, err
}

// ReadInto copies the next record into rec, reusing rec.RawSample's
// capacity, waiting until one arrives: a sample, or a loss report
// (LostSamples non-zero, RawSample empty). It returns
// os.ErrDeadlineExceeded once the deadline passes (records already there
// are still returned), ErrReaderClosed after Close, ErrBadDescriptor
// once every ring was detached by someone else (the map's descriptor
// revoked, the slots deleted or replaced), and
// mapview.ErrCorruptPerfRecord for a record that cannot be (the ring is
// then skipped to what the producer published).
func (r *PerfReader) ReadInto(rec *PerfRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		select {
		case <-r.closed:
			return ErrReaderClosed
		default:
		}
		for i := 0; i < len(r.rings); i++ {
			ring := r.rings[r.cur]
			if ring == nil {
				r.cur = (r.cur + 1) % len(r.rings)
				continue
			}
			detached := ring.rd.Detached() // before reading: what follows is all there is
			out, pr, ok, err := ring.rd.Next(rec.RawSample)
			if err != nil {
				return err
			}
			if ok && (pr.Type == mapview.PerfRecordSample || pr.Type == mapview.PerfRecordLost) {
				rec.CPU, rec.RawSample, rec.LostSamples = ring.cpu, out, pr.Lost
				rec.Remaining = ring.rd.Pending()
				return nil
			}
			if ok {
				i-- // a record type the reader skips: look at this ring again
				continue
			}
			if detached {
				r.poll.del(ring.wake)
				ring.release()
				r.rings[r.cur] = nil
				r.live--
			}
			r.cur = (r.cur + 1) % len(r.rings)
		}
		if r.live == 0 {
			return ErrBadDescriptor
		}
		if err := r.poll.wait(); err != nil {
			return err
		}
	}
}

// SetDeadline makes Read return os.ErrDeadlineExceeded when no record
// arrives before t; the zero time means no deadline.
func (r *PerfReader) SetDeadline(t time.Time) { r.poll.setDeadline(t) }

// PollFD returns a descriptor (an epoll instance, owned by the reader,
// valid until Close) that polls readable when a ring woke the reader or
// the reader was closed: multiplex readers in an event loop with it, then
// call Read, which does not block when a ring has records.
func (r *PerfReader) PollFD() int { return r.poll.epfd }

// BufferSize returns the data size of each CPU's ring.
func (r *PerfReader) BufferSize() int { return r.size }

// Close detaches the rings and releases them; a Read waiting returns
// ErrReaderClosed. A second Close returns ErrReaderClosed.
func (r *PerfReader) Close() error {
	err := ErrReaderClosed
	r.closeOnce.Do(func() {
		err = nil
		close(r.closed)
		r.poll.stopWait()
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, ring := range r.rings {
			if ring != nil {
				r.detach(ring)
				ring.release()
				r.rings[i] = nil
			}
		}
		r.poll.closeFDs()
	})
	return err
}

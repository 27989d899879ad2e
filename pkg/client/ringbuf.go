package client

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// RingBuf is BPF_MAP_TYPE_RINGBUF: programs write records with
// bpf_ringbuf_output or bpf_ringbuf_reserve/submit; a RingbufReader
// consumes them. MaxEntries is the data size (a power of two, a multiple
// of the page size); KeySize and ValueSize are 0.
const RingBuf MapType = 27 // BPF_MAP_TYPE_RINGBUF

// RingbufRecord is one record read from a ring buffer.
type RingbufRecord struct {
	// RawSample is the record's data (a copy, owned by the caller;
	// ReadInto reuses its capacity).
	RawSample []byte
	// Remaining is how many bytes of records the producers had written
	// beyond this one when it was read.
	Remaining int
}

// ObserverRecheck is how often a ring buffer observer (a reader without
// write mode) waiting for records looks for them when no wakeup came.
const ObserverRecheck = 50 * time.Millisecond

// ErrReaderClosed: the reader was closed (while Read waited, or before).
// It matches os.ErrClosed, as cilium/ebpf's ringbuf and perf readers.
var ErrReaderClosed = os.ErrClosed

// RingbufReader reads a ring buffer's records through its storage mapped
// into this process, the way cilium/ebpf's ringbuf.Reader reads a
// kernel ring buffer: no round trip per record. Read blocks until a
// record arrives, on an eventfd the daemon signals with the kernel's
// wakeup rules (pollable: WakeupFD), up to the deadline SetDeadline sets.
//
// With write mode on the map the reader is the ring's consumer: reading
// frees the space (the position lives in a page only write holders map
// writable). With read mode alone it is an observer with a position of
// its own: it sees records, frees nothing, and misses records the real
// consumer let producers overwrite. Wakeups follow the consumer's
// position (the kernel signals a consumer that has caught up), so an
// observer waiting for records also looks for them every
// ObserverRecheck.
//
// When the map's storage moves (a descriptor of it was revoked), the
// reader maps the new storage; if its own descriptor was revoked, Read
// returns ErrBadDescriptor. Read and ReadInto must not be called
// concurrently; SetDeadline, AvailableBytes and Close may be called from
// any goroutine.
type RingbufReader struct {
	m        *Map
	writable bool

	mu   sync.Mutex // serialises reads and remaps
	mem  []byte     // region + the data pages again (guarded by mu)
	cons []byte     // consumer page (guarded by mu)
	view *mapview.View
	rd   *mapview.RingReader // guarded by mu
	wake atomic.Int32        // the eventfd (replaced on a remap)
	poll *readPoll

	closed atomic.Bool
}

// NewRingbufReader maps m's ring buffer for reading (see RingbufReader).
// It needs read mode (ErrPermission), and uses write mode when m has it.
// It returns ErrInvalid for a map that is not a ring buffer. The reader
// must be closed; it does not close m.
func NewRingbufReader(m *Map) (*RingbufReader, error) {
	if m.info.Type != RingBuf {
		return nil, ErrInvalid
	}
	r := &RingbufReader{m: m, writable: m.info.Mode&ModeWrite != 0}
	r.wake.Store(-1)
	var err error
	if r.poll, err = newReadPoll(); err != nil {
		return nil, err
	}
	if !r.writable {
		// The daemon wakes the ring's consumer (the kernel's rule: when
		// it has caught up), not observers: look every ObserverRecheck.
		r.poll.recheck = ObserverRecheck
	}
	if err := r.attach(); err != nil {
		r.closeFDs()
		return nil, err
	}
	return r, nil
}

// attach maps the ring's current storage (over the old mapping when
// there is one). r.mu is held (or r is not shared yet).
func (r *RingbufReader) attach() error {
	fds, info, err := r.m.ringStorage(r.writable)
	if err != nil {
		return err
	}
	defer func() {
		for _, fd := range fds[:2] {
			unix.Close(fd)
		}
	}()
	size, data := info.Size, info.Size-info.DataOff
	if info.DataOff != mapview.PageSize || data == 0 || data&(data-1) != 0 {
		unix.Close(fds[2])
		return errProtocol
	}
	mem := r.mem
	if mem == nil {
		if mem, err = unix.Mmap(-1, 0, int(size+data), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
			unix.Close(fds[2])
			return os.NewSyscallError("mmap", err)
		}
	} else if uint64(len(mem)) != size+data {
		unix.Close(fds[2])
		return errProtocol
	}
	fail := func(err error) error {
		if r.mem == nil {
			unix.Munmap(mem)
		}
		unix.Close(fds[2])
		return err
	}
	if err := mmapFixed(mem[:size], fds[0], 0, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return fail(err)
	}
	if err := mmapFixed(mem[size:], fds[0], int64(info.DataOff), unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return fail(err)
	}
	prot := unix.PROT_READ
	if info.Flags&wire.StorageWritable != 0 {
		prot |= unix.PROT_WRITE
	}
	cons := r.cons
	if cons == nil {
		if cons, err = unix.Mmap(fds[1], 0, mapview.PageSize, prot, unix.MAP_SHARED); err != nil {
			return fail(os.NewSyscallError("mmap", err))
		}
	} else if err := mmapFixed(cons, fds[1], 0, prot, unix.MAP_SHARED); err != nil {
		return fail(err)
	}
	view, err := mapview.New(mem[:size])
	if err != nil {
		return fail(errProtocol)
	}
	rd, err := mapview.NewRingReader(mem[info.DataOff:], mem[mapview.OffRingProducer:], cons, info.Flags&wire.StorageWritable != 0)
	if err != nil {
		return fail(errProtocol)
	}
	if r.rd != nil && !rd.Writable() {
		// An observer keeps its own position across a remap.
		rd.Advance(r.rd.Position())
	}
	old := int(r.wake.Swap(int32(fds[2])))
	r.poll.add(fds[2])
	if old >= 0 {
		r.poll.del(old)
		unix.Close(old)
	}
	r.mem, r.cons, r.view, r.rd = mem, cons, view, rd
	return nil
}

// ringStorage asks for a ring buffer's storage: region, consumer page,
// eventfd.
func (m *Map) ringStorage(writable bool) ([3]int, wire.MapStorageInfo, error) {
	fds := [3]int{-1, -1, -1}
	var info wire.MapStorageInfo
	at := wire.MapStorageAttr{Handle: m.handle}
	if writable {
		at.Flags = wire.StorageWritable
	}
	var ab [wire.MapStorageAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, wire.CmdMapStorage, at.Append(ab[:0]), nil); err != nil {
		return fds, info, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return fds, info, err
	}
	data, err := w.payload()
	if err != nil {
		return fds, info, err
	}
	if !info.Parse(data) || info.Flags&wire.StorageRing == 0 || w.nfd < 3 || info.Size > mapview.MaxRegionSize {
		return fds, info, errProtocol
	}
	for i := range fds {
		fds[i] = w.takeFD(i)
	}
	return fds, info, nil
}

// Read returns the next record, waiting for one (see ReadInto).
func (r *RingbufReader) Read() (RingbufRecord, error) {
	var rec RingbufRecord
	err := r.ReadInto(&rec)
	return rec, err
}

// ReadInto copies the next record into rec, reusing rec.RawSample's
// capacity, waiting until one arrives. It returns os.ErrDeadlineExceeded
// once the deadline passes (records already there are still returned),
// ErrReaderClosed after Close, ErrBadDescriptor when the map's descriptor
// was revoked, and mapview.ErrCorruptRecord for a record header that
// cannot be (a program wrote outside its record).
func (r *RingbufReader) ReadInto(rec *RingbufRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.closed.Load() {
			return ErrReaderClosed
		}
		if r.view.Retired() {
			if err := r.attach(); err != nil {
				return err
			}
			continue
		}
		data, next, ok, err := r.rd.Next()
		if err != nil {
			return err
		}
		if ok {
			rec.RawSample = append(rec.RawSample[:0], data...)
			r.rd.Advance(next)
			rec.Remaining = r.rd.Pending()
			return nil
		}
		if err := r.poll.wait(); err != nil {
			return err
		}
	}
}

// SetDeadline makes Read return os.ErrDeadlineExceeded when no record
// arrives before t; the zero time means no deadline.
func (r *RingbufReader) SetDeadline(t time.Time) { r.poll.setDeadline(t) }

// WakeupFD returns the eventfd Read waits on (owned by the reader; valid
// until the next Read or Close): poll it for readability to multiplex
// several readers in one event loop. (A poller must not read it: Read
// drains it.)
func (r *RingbufReader) WakeupFD() int { return int(r.wake.Load()) }

// AvailableBytes returns how many bytes of records are waiting.
func (r *RingbufReader) AvailableBytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rd == nil {
		return 0
	}
	return r.rd.Pending()
}

// BufferSize returns the ring's data size.
func (r *RingbufReader) BufferSize() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rd == nil {
		return 0
	}
	return r.rd.Size()
}

// Close stops the reader: a Read waiting returns ErrReaderClosed; the
// mappings are released. A second Close returns ErrReaderClosed.
func (r *RingbufReader) Close() error {
	if r.closed.Swap(true) {
		return ErrReaderClosed
	}
	r.poll.stopWait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.cons != nil {
		unix.Munmap(r.cons)
		r.cons = nil
	}
	r.rd = nil
	r.closeFDs()
	return nil
}

func (r *RingbufReader) closeFDs() {
	if fd := int(r.wake.Swap(-1)); fd >= 0 {
		unix.Close(fd)
	}
	r.poll.closeFDs()
}

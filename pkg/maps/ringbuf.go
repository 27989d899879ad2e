package maps

import (
	"os"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Ring buffer flags (BPF_RB_*), for Output, Commit and Query.
const (
	RingNoWakeup    uint64 = 1 << 0 // BPF_RB_NO_WAKEUP
	RingForceWakeup uint64 = 1 << 1 // BPF_RB_FORCE_WAKEUP
	RingAvailData   uint64 = 0      // BPF_RB_AVAIL_DATA
	RingRingSize    uint64 = 1      // BPF_RB_RING_SIZE
	RingConsPos     uint64 = 2      // BPF_RB_CONS_POS
	RingProdPos     uint64 = 3      // BPF_RB_PROD_POS
)

// ringMaxRecord is RINGBUF_MAX_RECORD_SZ.
const ringMaxRecord = (1<<32 - 1) / 4

// Ringbuf is BPF_MAP_TYPE_RINGBUF: the kernel's ringbuf.c. A
// multi-producer, single-consumer ring of records, each an 8-byte header
// (length with the busy and discard bits, page offset) then the data,
// padded to 8. The data pages follow the header page of the region and are
// mapped twice in a row in the daemon (and in consumers), so a record that
// wraps is contiguous. Producers (programs: Reserve, Commit, Output)
// serialise on a lock word in the region; the consumer position is in a
// page of its own, a second memfd the consumer maps writable
// (ConsumerFD). Committing a record the consumer is waiting for writes to
// an eventfd (WakeupFD) the consumer polls, with the kernel's rules
// (BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP).
//
// The consumer position is written by the consumer, so the daemon never
// trusts it: every position is masked into the ring, and a position that
// makes no sense only makes the ring look full. The syscall side has no
// elements: lookup, update, delete and next key are ErrNotSupported, as
// the kernel. Safe for concurrent use.
type Ringbuf struct {
	base
	mask uint64
	// cons is the consumer page (a memfd mapped read-write); consFD its
	// backing, wake the eventfd. Guarded by moveMu (replaced on a move).
	cons   []byte
	consFD int
	wake   atomic.Int32
}

var _ Map = (*Ringbuf)(nil)

func (r *Ringbuf) initRegion() {}

func newConsumerPage(name string) (int, []byte, error) {
	fd, err := unix.MemfdCreate("bpfd-ringbuf-consumer:"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, nil, os.NewSyscallError("memfd_create", err)
	}
	if err := unix.Ftruncate(fd, mapview.PageSize); err != nil {
		unix.Close(fd)
		return -1, nil, os.NewSyscallError("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return -1, nil, os.NewSyscallError("fcntl(F_ADD_SEALS)", err)
	}
	mem, err := unix.Mmap(fd, 0, mapview.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return -1, nil, mapErr(err)
	}
	return fd, mem, nil
}

// setup makes the consumer page and the eventfd.
func (r *Ringbuf) setup() error {
	fd, mem, err := newConsumerPage(r.spec.Name)
	if err != nil {
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return os.NewSyscallError("eventfd", err)
	}
	r.consFD, r.cons = fd, mem
	r.wake.Store(int32(efd))
	return nil
}

func (r *Ringbuf) u64(off uint64) *uint64 { return (*uint64)(unsafe.Pointer(&r.mem[off])) }
func (r *Ringbuf) consPos() uint64        { return atomic.LoadUint64((*uint64)(unsafe.Pointer(&r.cons[0]))) }
func (r *Ringbuf) prodPos() uint64        { return atomic.LoadUint64(r.u64(mapview.OffRingProducer)) }
func (r *Ringbuf) dataOff(pos uint64) uint64 {
	return r.l.DataOff + pos&r.mask
}

// Data returns the ring's data pages mapped twice in a row (2 × size
// bytes): program-side record pointers point into it (Reserve's offsets
// index it). It aliases storage and is valid until Close.
func (r *Ringbuf) Data() []byte {
	n := r.l.DataOff + 2*r.l.DataSize
	return r.mem[r.l.DataOff:n:n]
}

// Reserve is bpf_ringbuf_reserve: room for a record of size bytes. It
// returns the offset of the record's data within Data, or false when the
// ring has no room (or size is too large), as the kernel's NULL.
func (r *Ringbuf) Reserve(size uint64) (uint64, bool) {
	if size > ringMaxRecord {
		return 0, false
	}
	length := (size + mapview.RingHeaderSize + 7) &^ 7
	if length > r.l.DataSize || r.closed.Load() {
		return 0, false
	}
	cons := r.consPos()
	lock := r.u32(mapview.OffRingLock)
	spinLock(lock)
	atomic.StoreUint64(r.u64(mapview.OffRingConsSeen), cons)
	pend := atomic.LoadUint64(r.u64(mapview.OffRingPending))
	prod := r.prodPos()
	newProd := prod + length
	for steps := uint64(0); pend < prod && steps <= r.l.DataSize/8; steps++ {
		hl := atomic.LoadUint32(r.u32(r.dataOff(pend)))
		if hl&mapview.RingBusyBit != 0 {
			break
		}
		pend += (uint64(hl&^mapview.RingDiscardBit) + mapview.RingHeaderSize + 7) &^ 7
	}
	atomic.StoreUint64(r.u64(mapview.OffRingPending), pend)
	if newProd-cons > r.mask || newProd-pend > r.mask {
		spinUnlock(lock)
		return 0, false
	}
	h := r.dataOff(prod)
	atomic.StoreUint32(r.u32(h), uint32(size)|mapview.RingBusyBit)
	atomic.StoreUint32(r.u32(h+4), uint32((prod&r.mask)/mapview.PageSize)+2)
	atomic.StoreUint64(r.u64(mapview.OffRingProducer), newProd)
	spinUnlock(lock)
	return prod&r.mask + mapview.RingHeaderSize, true
}

// Commit is bpf_ringbuf_submit (discard false) and bpf_ringbuf_discard:
// the record whose data starts at off in Data is complete. It wakes the
// consumer when the consumer waits for this very record, unless
// RingNoWakeup, or always with RingForceWakeup.
func (r *Ringbuf) Commit(off uint64, flags uint64, discard bool) {
	if off < mapview.RingHeaderSize || off >= r.l.DataSize+mapview.RingHeaderSize || r.closed.Load() {
		return
	}
	rec := off - mapview.RingHeaderSize
	p := r.u32(r.l.DataOff + rec)
	hl := atomic.LoadUint32(p)
	n := hl ^ mapview.RingBusyBit
	if discard {
		n |= mapview.RingDiscardBit
	}
	atomic.SwapUint32(p, n)
	cons := r.consPos() & r.mask
	if flags&RingForceWakeup != 0 || cons == rec && flags&RingNoWakeup == 0 {
		r.notify()
	}
}

// notify wakes the consumer (the eventfd's counter goes up).
func (r *Ringbuf) notify() {
	fd := r.wake.Load()
	if fd < 0 {
		return
	}
	one := [8]byte{1}
	unix.Write(int(fd), one[:])
}

// Output is bpf_ringbuf_output: reserve, copy, submit. ErrInvalidFlags
// for flags other than the wakeup ones; ErrRingFull (EAGAIN) without room.
func (r *Ringbuf) Output(data []byte, flags uint64) error {
	if flags&^(RingNoWakeup|RingForceWakeup) != 0 {
		return ErrInvalidFlags
	}
	off, ok := r.Reserve(uint64(len(data)))
	if !ok {
		return ErrRingFull
	}
	copy(r.Data()[off:], data)
	r.Commit(off, flags, false)
	return nil
}

// ErrRingFull: bpf_ringbuf_output found no room (EAGAIN, as the kernel).
var ErrRingFull = errno.New(unix.EAGAIN, "maps: ring buffer has no room for the record")

// Query is bpf_ringbuf_query.
func (r *Ringbuf) Query(flags uint64) uint64 {
	switch flags {
	case RingAvailData:
		return r.prodPos() - r.consPos()
	case RingRingSize:
		return r.l.DataSize
	case RingConsPos:
		return r.consPos()
	case RingProdPos:
		return r.prodPos()
	}
	return 0
}

// ConsumerFD returns a new descriptor of the consumer page, owned by the
// caller: read-write when writable (the consumer advances its position
// there), else read-only. ErrClosed after Close.
func (r *Ringbuf) ConsumerFD(writable bool) (int, error) {
	r.moveMu.Lock()
	defer r.moveMu.Unlock()
	if r.closed.Load() {
		return -1, ErrClosed
	}
	r.sharedOut = true
	flags := unix.O_RDONLY
	if writable {
		flags = unix.O_RDWR
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(r.consFD), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("open consumer page", err)
	}
	return fd, nil
}

// WakeupFD returns a new descriptor of the ring's eventfd, owned by the
// caller: it becomes readable when a record the consumer waits for is
// committed (poll or epoll it; read it to reset). ErrClosed after Close.
func (r *Ringbuf) WakeupFD() (int, error) {
	r.moveMu.Lock()
	defer r.moveMu.Unlock()
	if r.closed.Load() {
		return -1, ErrClosed
	}
	fd, err := unix.FcntlInt(uintptr(r.wake.Load()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	return fd, nil
}

// moveExtra gives the ring a fresh consumer page (with the same
// position) and eventfd on a move, so that revoked holders can neither
// consume nor be woken. Every slot is held.
func (r *Ringbuf) moveExtra() error {
	fd, mem, err := newConsumerPage(r.spec.Name)
	if err != nil {
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return os.NewSyscallError("eventfd", err)
	}
	copy(mem, r.cons)
	unix.Munmap(r.cons)
	unix.Close(r.consFD)
	// Wake whoever waits on the old eventfd once, so a consumer notices
	// the move (its region is retired) and asks for the new storage.
	old := int(r.wake.Swap(int32(efd)))
	one := [8]byte{1}
	unix.Write(old, one[:])
	unix.Close(old)
	r.cons, r.consFD = mem, fd
	return nil
}

func (r *Ringbuf) closeExtra() {
	unix.Munmap(r.cons)
	unix.Close(r.consFD)
	unix.Close(int(r.wake.Swap(-1)))
}

func (r *Ringbuf) noElems() error { return ErrNotSupported }

// Lookup implements Map: ErrNotSupported.
func (r *Ringbuf) Lookup(_, _ []byte) error { return r.noElems() }

// Update implements Map: ErrNotSupported.
func (r *Ringbuf) Update(_, _ []byte, _ uint64) error {
	if err := r.canWrite(); err != nil {
		return err
	}
	return r.noElems()
}

// Delete implements Map: ErrNotSupported.
func (r *Ringbuf) Delete([]byte) error {
	if err := r.canWrite(); err != nil {
		return err
	}
	return r.noElems()
}

// NextKey implements Map: ErrNotSupported.
func (r *Ringbuf) NextKey(_, _ []byte) error { return r.noElems() }

// LookupAndDelete implements Map: ErrNotSupported.
func (r *Ringbuf) LookupAndDelete(_, _ []byte) error {
	if err := r.canWrite(); err != nil {
		return err
	}
	return r.noElems()
}

// ValueRef implements Map: nil.
func (r *Ringbuf) ValueRef([]byte) []byte { return nil }

// ProgLookup implements Map: nil.
func (r *Ringbuf) ProgLookup(int, []byte) []byte { return nil }

// ProgUpdate implements Map: ErrNotSupported.
func (r *Ringbuf) ProgUpdate([]byte, []byte, uint64) error { return r.noElems() }

// ProgUpdateOn implements Map: ErrNotSupported.
func (r *Ringbuf) ProgUpdateOn(int, []byte, []byte, uint64) error { return r.noElems() }

// ProgDelete implements Map: ErrNotSupported.
func (r *Ringbuf) ProgDelete([]byte) error { return r.noElems() }

// ProgDeleteOn implements Map: ErrNotSupported.
func (r *Ringbuf) ProgDeleteOn(int, []byte) error { return r.noElems() }

// LookupBatch implements Map: ErrNotSupported.
func (r *Ringbuf) LookupBatch(b *Batch) error { return noBatches{&r.base}.LookupBatch(b) }

// LookupAndDeleteBatch implements Map: ErrNotSupported.
func (r *Ringbuf) LookupAndDeleteBatch(b *Batch) error {
	return noBatches{&r.base}.LookupAndDeleteBatch(b)
}

// UpdateBatch implements Map: ErrNotSupported.
func (r *Ringbuf) UpdateBatch(b *Batch) error { return noBatches{&r.base}.UpdateBatch(b) }

// DeleteBatch implements Map: ErrNotSupported.
func (r *Ringbuf) DeleteBatch(b *Batch) error { return noBatches{&r.base}.DeleteBatch(b) }

// detachExtra saves the consumer position in the region (a reopened ring
// resumes there) and closes the consumer page and eventfd. Every slot is
// held.
func (r *Ringbuf) detachExtra() {
	atomic.StoreUint64(r.u64(mapview.OffRingConsSeen), r.consPos())
	r.closeExtra()
}

// recordLen is the length of the record whose header word is hl: header,
// data and padding.
func recordLen(hl uint32) uint64 {
	return (uint64(hl&^(mapview.RingBusyBit|mapview.RingDiscardBit)) + mapview.RingHeaderSize + 7) &^ 7
}

// validateInto checks a reopened ring: the producer lock is released,
// the saved consumer position must lie within the produced range (else
// the ring resumes empty, at the producer position: Rebuilt), and every
// record between it and the producer position must chain exactly up to
// it (else likewise). A record still busy — its producer died with it
// reserved — is marked discarded (Leaked), or the consumer would wait
// for it forever. Records consumed after a producer last saw the
// consumer position (a crash rather than Detach) are delivered again.
func (r *Ringbuf) validateInto(rep *Repair) error {
	if atomic.LoadUint32(r.u32(mapview.OffRingLock)) != 0 {
		atomic.StoreUint32(r.u32(mapview.OffRingLock), 0)
		rep.Unlocked++
	}
	prod := r.prodPos()
	cons := atomic.LoadUint64(r.u64(mapview.OffRingConsSeen))
	ok := prod%8 == 0 && cons%8 == 0 && cons <= prod && prod-cons <= r.l.DataSize
	for pos := cons; ok && pos < prod; {
		p := r.u32(r.dataOff(pos))
		hl := atomic.LoadUint32(p)
		n := recordLen(hl)
		if uint64(hl&^(mapview.RingBusyBit|mapview.RingDiscardBit)) > r.l.DataSize || n > prod-pos {
			ok = false
			break
		}
		if hl&mapview.RingBusyBit != 0 {
			atomic.StoreUint32(p, hl&^mapview.RingBusyBit|mapview.RingDiscardBit)
			rep.Leaked++
		}
		pos += n
	}
	if !ok {
		cons = prod
		rep.Rebuilt++
	}
	atomic.StoreUint64(r.u64(mapview.OffRingConsSeen), cons)
	atomic.StoreUint64(r.u64(mapview.OffRingPending), cons)
	if err := r.setup(); err != nil {
		return err
	}
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&r.cons[0])), cons)
	return nil
}

// dump implements dumper: the records the consumer has yet to read,
// oldest first (key empty, value the record's data), up to the first one
// still being written. Discarded records are skipped.
func (r *Ringbuf) dump(buf []byte, fn func(key, value []byte) error) error {
	s, err := r.enter()
	if err != nil {
		return err
	}
	lock := r.u32(mapview.OffRingLock)
	spinLock(lock)
	prod, cons := r.prodPos(), r.consPos()
	if cons > prod || prod-cons > r.l.DataSize {
		cons = prod // the consumer's word: trust nothing
	}
	cons &^= 7
	buf = buf[:0]
	var lens []int
	data := r.Data()
	for pos := cons; pos < prod; {
		hl := atomic.LoadUint32(r.u32(r.dataOff(pos)))
		n := recordLen(hl)
		size := uint64(hl &^ (mapview.RingBusyBit | mapview.RingDiscardBit))
		if hl&mapview.RingBusyBit != 0 || size > r.l.DataSize || n > prod-pos {
			break
		}
		if hl&mapview.RingDiscardBit == 0 {
			at := pos&r.mask + mapview.RingHeaderSize
			buf = append(buf, data[at:at+size]...)
			lens = append(lens, int(size))
		}
		pos += n
	}
	spinUnlock(lock)
	r.leave(s)
	off := 0
	for _, n := range lens {
		if err := fn(nil, buf[off:off+n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// restoreElem appends a record (key empty) without waking the consumer.
func (r *Ringbuf) restoreElem(key, value []byte) error {
	if len(key) != 0 {
		return ErrKeySize
	}
	return r.withSlot(func(int) error { return r.Output(value, RingNoWakeup) })
}

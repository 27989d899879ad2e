package maps

import (
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// PERF_EVENT_ARRAY.
//
// The kernel's slots hold perf events (perf_event_open with
// PERF_COUNT_SW_BPF_OUTPUT), each bound to one CPU and owning a ring the
// consumer maps: one metadata page (struct perf_event_mmap_page: the
// producer's data_head, the consumer's data_tail) and 2^n data pages of
// records. bpfd has no perf events, so its slots hold perf rings made for
// the purpose (AttachRing): the same memory layout, records and wakeup
// rules, with an eventfd the consumer polls in place of the perf fd.
// bpf_perf_event_output (Output) writes PERF_RECORD_SAMPLE records with
// the raw data, and PERF_RECORD_LOST records for what did not fit, as the
// kernel.
//
// Rings are not map data: the region's slots hold ring ids (for dumps and
// the mapped slot view), and a reopened region starts with every slot
// empty — a ring belongs to its consumer, which makes a new one.

// Perf ring metadata page offsets (struct perf_event_mmap_page) and record
// types (PERF_RECORD_*).
const (
	PerfOffVersion = 0
	// PerfOffDetached is bpfd's own word in the page's reserved part:
	// non-zero once the ring left its slot (no record will follow).
	PerfOffDetached   = mapview.PerfOffDetached
	PerfOffDataHead   = mapview.PerfOffDataHead
	PerfOffDataTail   = mapview.PerfOffDataTail
	PerfOffDataOffset = mapview.PerfOffDataOffset
	PerfOffDataSize   = mapview.PerfOffDataSize
	PerfRecordLost    = mapview.PerfRecordLost
	PerfRecordSample  = mapview.PerfRecordSample
	// PerfMaxPages bounds the data pages of one ring (64 MiB).
	PerfMaxPages = 1 << 14
	// perf_event_output flags: the index mask, the current-CPU index and
	// the packet bytes to append (socket filters, XDP).
	PerfIndexMask  uint64 = 0xffffffff
	PerfCurrentCPU uint64 = 0xffffffff
	PerfCtxLenMask uint64 = 0xfffff << 32
)

// Errors of Output and AttachRing, as the kernel's.
var (
	// ErrPerfNoRoom: the record does not fit in the ring (ENOSPC); it is
	// counted as lost.
	ErrPerfNoRoom = errno.New(unix.ENOSPC, "maps: perf ring has no room for the record")
	// ErrPerfWrongCPU: the ring of the slot is bound to another CPU than
	// the program's (EOPNOTSUPP).
	ErrPerfWrongCPU = errno.New(unix.EOPNOTSUPP, "maps: perf ring of this slot is bound to another CPU")
	// ErrPerfNotEvent: a syscall-side update of a perf event array
	// (EBADF, as the kernel's for a descriptor that is not a perf event):
	// slots are filled with AttachRing.
	ErrPerfNotEvent = errno.New(unix.EBADF, "maps: a perf event array slot takes a perf ring, not a value")
)

// PerfOptions are a ring's parameters: its data pages (a power of two, at
// most PerfMaxPages) and when it wakes its consumer — every WakeupEvents
// samples, or when more than Watermark bytes were written since the last
// wakeup (perf_event_attr's wakeup_events and wakeup_watermark with the
// watermark bit); with neither, at half the ring, as the kernel.
type PerfOptions struct {
	CPU          int
	Pages        int
	WakeupEvents uint32
	Watermark    uint32
}

// PerfRing is one perf ring: a memfd of a metadata page and the data
// pages, mapped read-write by the daemon and by its consumer, and an
// eventfd. Exactly one producer writes it at a time — a program running on
// the ring's CPU slot — so the producer state needs no lock. Safe for
// concurrent use.
type PerfRing struct {
	id    uint32
	cpu   int
	fd    int
	wake  int
	mem   []byte
	data  []byte
	mask  uint64
	owner any

	wakeupEvents uint32
	watermark    uint64

	// Producer state: written by the one producer (the holder of slot
	// cpu), or under the array's lock when detached.
	head   uint64 // the true data_head (the page's copy is the consumer's to read)
	lost   uint64
	events uint32
	woken  uint64 // head at the last watermark wakeup

	users  atomic.Int32 // producers in flight
	onFree func()
}

var perfIDs atomic.Uint32

// ID returns the ring's id, unique in the process.
func (r *PerfRing) ID() uint32 { return r.id }

// CPU returns the CPU slot the ring is bound to.
func (r *PerfRing) CPU() int { return r.cpu }

// Owner returns the token given to AttachRing.
func (r *PerfRing) Owner() any { return r.owner }

// Lost returns the samples lost since the last PERF_RECORD_LOST.
func (r *PerfRing) Lost() uint64 { return atomic.LoadUint64(&r.lost) }

// Size returns the ring's memory: the metadata page and the data pages.
func (r *PerfRing) Size() uint64 { return uint64(len(r.mem)) }

// FDs returns new descriptors of the ring's memory (read-write: the
// consumer writes data_tail) and of its eventfd, owned by the caller.
func (r *PerfRing) FDs() (mem, wake int, err error) {
	mem, err = unix.Open("/proc/self/fd/"+strconv.Itoa(r.fd), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, os.NewSyscallError("open perf ring", err)
	}
	wake, err = unix.FcntlInt(uintptr(r.wake), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(mem)
		return -1, -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	return mem, wake, nil
}

func newPerfRing(opt PerfOptions) (*PerfRing, error) {
	if opt.Pages <= 0 || opt.Pages > PerfMaxPages || opt.Pages&(opt.Pages-1) != 0 || opt.WakeupEvents != 0 && opt.Watermark != 0 {
		return nil, ErrInvalid
	}
	size := (opt.Pages + 1) * mapview.PageSize
	fd, err := unix.MemfdCreate("bpfd-perf-ring", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, mapErr(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl(F_ADD_SEALS)", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Close(fd)
		return nil, mapErr(err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	r := &PerfRing{id: perfIDs.Add(1), cpu: opt.CPU, fd: fd, wake: wake, mem: mem,
		data: mem[mapview.PageSize:], mask: uint64(opt.Pages*mapview.PageSize - 1),
		wakeupEvents: opt.WakeupEvents, watermark: uint64(opt.Watermark)}
	if r.wakeupEvents == 0 && r.watermark == 0 {
		r.watermark = uint64(len(r.data)) / 2
	}
	le := binary.LittleEndian
	le.PutUint32(mem[PerfOffVersion:], 0)
	le.PutUint64(mem[PerfOffDataOffset:], uint64(mapview.PageSize))
	le.PutUint64(mem[PerfOffDataSize:], uint64(len(r.data)))
	return r, nil
}

func (r *PerfRing) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&r.mem[off])) }

// free unmaps the ring once no producer is in it. The ring must be
// unpublished first.
func (r *PerfRing) free() {
	for i := 0; r.users.Load() != 0; i++ {
		runtime.Gosched()
	}
	// Wake the consumer so that it notices the ring is gone.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.mem[PerfOffDetached])), 1)
	r.notify()
	unix.Munmap(r.mem)
	unix.Close(r.fd)
	unix.Close(r.wake)
	r.mem, r.data = nil, nil
	if r.onFree != nil {
		r.onFree()
	}
}

func (r *PerfRing) notify() {
	one := [8]byte{1}
	unix.Write(r.wake, one[:])
}

// put copies b into the data at position pos (wrapping).
func (r *PerfRing) put(pos uint64, b []byte) uint64 {
	for len(b) > 0 {
		at := pos & r.mask
		n := copy(r.data[at:], b)
		b = b[n:]
		pos += uint64(n)
	}
	return pos
}

func (r *PerfRing) zero(pos uint64, n int) uint64 {
	var z [8]byte
	for n > 0 {
		k := min(n, len(z))
		pos = r.put(pos, z[:k])
		n -= k
	}
	return pos
}

// write appends one PERF_RECORD_SAMPLE of the raw data parts a then b
// (preceded by a PERF_RECORD_LOST if samples were lost), as the kernel's
// perf_output_begin/perf_output_sample: ErrPerfNoRoom (counted as lost)
// when it does not fit; ErrTooBig beyond the 16-bit record size. Only the
// producer calls it.
func (r *PerfRing) write(a, b []byte) error {
	sum := len(a) + len(b)
	raw := (sum+4+7)&^7 - 4
	size := 8 + 4 + raw
	if size > 0xffff {
		return ErrTooBig
	}
	need := uint64(size)
	lost := r.lost
	if lost != 0 {
		need += 24
	}
	head := r.head
	tail := atomic.LoadUint64(r.u64(PerfOffDataTail)) // the consumer's: masked, never trusted
	if (tail-(head+1))&r.mask < need {
		atomic.AddUint64(&r.lost, 1)
		return ErrPerfNoRoom
	}
	le := binary.LittleEndian
	var hdr [16]byte
	pos := head
	if lost != 0 {
		var rec [24]byte
		le.PutUint32(rec[0:], PerfRecordLost)
		le.PutUint16(rec[6:], 24)
		le.PutUint64(rec[8:], uint64(r.id))
		le.PutUint64(rec[16:], lost)
		pos = r.put(pos, rec[:])
		atomic.AddUint64(&r.lost, -lost)
	}
	le.PutUint32(hdr[0:], PerfRecordSample)
	le.PutUint16(hdr[4:], 0)
	le.PutUint16(hdr[6:], uint16(size))
	le.PutUint32(hdr[8:], uint32(raw))
	pos = r.put(pos, hdr[:12])
	pos = r.put(pos, a)
	pos = r.put(pos, b)
	pos = r.zero(pos, raw-sum)
	r.head = pos
	atomic.StoreUint64(r.u64(PerfOffDataHead), pos)
	wake := false
	if r.wakeupEvents != 0 {
		if r.events++; r.events >= r.wakeupEvents {
			r.events = 0
			wake = true
		}
	} else if pos-r.woken > r.watermark {
		r.woken = pos
		wake = true
	}
	if wake {
		r.notify()
	}
	return nil
}

// PerfEventArray is BPF_MAP_TYPE_PERF_EVENT_ARRAY: the slots of an fd
// array (key and value 4 bytes) holding perf rings. AttachRing fills a
// slot, Delete and DetachRing empty it (freeing the ring); Output is
// bpf_perf_event_output. The syscall side cannot store values (the
// kernel's take perf event fds, which bpfd has not: ErrInvalid) and
// lookups are ErrNotSupported, as the kernel. Safe for concurrent use.
type PerfEventArray struct {
	ProgArray
	mu    sync.Mutex // serialises attaching and detaching
	rings []atomic.Pointer[PerfRing]
}

var _ Map = (*PerfEventArray)(nil)

// AttachRing makes a ring with opt and stores it in slot index, bound to
// CPU slot opt.CPU, replacing (and freeing) what the slot held. owner is
// an opaque token the layer above gives (Owner, DetachIf); onFree, if not
// nil, runs once when the ring is freed. It returns ErrPermission on a
// BPF_F_RDONLY map, ErrIndexRange for an index out of range, ErrInvalid
// for a CPU beyond the possible ones or bad options, ErrClosed after
// Close.
func (p *PerfEventArray) AttachRing(index uint32, opt PerfOptions, owner any, onFree func()) (*PerfRing, error) {
	if err := p.canWrite(); err != nil {
		return nil, err
	}
	if index >= p.spec.MaxEntries {
		return nil, ErrIndexRange
	}
	if opt.CPU < 0 || opt.CPU >= p.pool.N() {
		return nil, ErrInvalid
	}
	r, err := newPerfRing(opt)
	if err != nil {
		return nil, err
	}
	r.owner, r.onFree = owner, onFree
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		r.onFree = nil
		r.free()
		return nil, ErrClosed
	}
	old := p.rings[index].Swap(r)
	p.set(index, r.id)
	p.mu.Unlock()
	if old != nil {
		old.free()
	}
	return r, nil
}

// DetachRing empties slot index if it holds the ring with id, freeing it;
// ErrKeyNotExist otherwise.
func (p *PerfEventArray) DetachRing(index, id uint32) error {
	if index >= p.spec.MaxEntries {
		return ErrIndexRange
	}
	p.mu.Lock()
	r := p.rings[index].Load()
	if r == nil || r.id != id {
		p.mu.Unlock()
		return ErrKeyNotExist
	}
	p.rings[index].Store(nil)
	p.set(index, 0)
	p.mu.Unlock()
	r.free()
	return nil
}

// DetachIf empties the slots whose ring's owner satisfies gone (called
// with p's lock held: it must not call p), freeing the rings, and returns
// how many.
func (p *PerfEventArray) DetachIf(gone func(owner any) bool) int {
	var freed []*PerfRing
	p.mu.Lock()
	for i := range p.rings {
		if r := p.rings[i].Load(); r != nil && gone(r.owner) {
			p.rings[i].Store(nil)
			p.set(uint32(i), 0)
			freed = append(freed, r)
		}
	}
	p.mu.Unlock()
	for _, r := range freed {
		r.free()
	}
	return len(freed)
}

// Owners returns the owners of the occupied slots (for the layer above to
// decide which are gone without holding p's lock).
func (p *PerfEventArray) Owners() []any {
	var out []any
	for i := range p.rings {
		if r := p.rings[i].Load(); r != nil {
			out = append(out, r.owner)
		}
	}
	return out
}

// Ring returns the ring in slot index, or nil.
func (p *PerfEventArray) Ring(index uint32) *PerfRing {
	if index >= uint32(len(p.rings)) {
		return nil
	}
	return p.rings[index].Load()
}

// Output is bpf_perf_event_output for a program running on CPU slot cpu:
// flags' low 32 bits are the slot index (PerfCurrentCPU: cpu's), and
// sample then ctx are the record's raw data (ctx: the packet bytes the
// flags' PerfCtxLenMask asked for; the caller resolves them). Errors as
// the kernel's: ErrInvalidFlags for unknown flag bits, ErrIndexRange
// (E2BIG) beyond max_entries, ErrKeyNotExist for an empty slot,
// ErrPerfWrongCPU for a ring bound to another CPU, ErrPerfNoRoom.
func (p *PerfEventArray) Output(cpu int, flags uint64, sample, ctx []byte) error {
	if flags&^(PerfIndexMask|PerfCtxLenMask) != 0 {
		return ErrInvalidFlags
	}
	i := flags & PerfIndexMask
	if i == PerfCurrentCPU {
		i = uint64(cpu)
	}
	if i >= uint64(p.spec.MaxEntries) {
		return ErrIndexRange
	}
	slot := &p.rings[i]
	r := slot.Load()
	if r == nil {
		return ErrKeyNotExist
	}
	r.users.Add(1)
	defer r.users.Add(-1)
	if slot.Load() != r { // detached meanwhile: free may be unmapping it
		return ErrKeyNotExist
	}
	if r.cpu != cpu {
		return ErrPerfWrongCPU
	}
	return r.write(sample, ctx)
}

// Update implements Map: a slot's value is a perf ring (AttachRing), not
// a number the syscall side could store. As the kernel's fd array update
// given a descriptor that is not a perf event: ErrInvalidFlags for flags
// other than UpdateAny, ErrIndexRange beyond max_entries, ErrPerfNotEvent
// otherwise.
func (p *PerfEventArray) Update(key, value []byte, flags uint64) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	if len(key) != 4 {
		return ErrKeySize
	}
	if len(value) != 4 {
		return ErrValueSize
	}
	if flags != UpdateAny {
		return ErrInvalidFlags
	}
	if index(key) >= p.spec.MaxEntries {
		return ErrIndexRange
	}
	return ErrPerfNotEvent
}

// Swap implements the fd-array update for the layer above: fails as
// Update.
func (p *PerfEventArray) Swap(key, value []byte, flags uint64) (uint32, error) {
	return 0, p.Update(key, value, flags)
}

// ProgUpdate implements Map: ErrInvalid (the verifier refuses it).
func (p *PerfEventArray) ProgUpdate([]byte, []byte, uint64) error { return ErrInvalid }

// ProgUpdateOn implements Map: ErrInvalid.
func (p *PerfEventArray) ProgUpdateOn(int, []byte, []byte, uint64) error { return ErrInvalid }

// Delete implements Map: empties the slot, freeing its ring.
func (p *PerfEventArray) Delete(key []byte) error {
	if err := p.canWrite(); err != nil {
		return err
	}
	_, err := p.Clear(key)
	return err
}

// Clear is Delete without the permission check, returning the ring's id.
func (p *PerfEventArray) Clear(key []byte) (uint32, error) {
	if len(key) != 4 {
		return 0, ErrKeySize
	}
	if p.closed.Load() {
		return 0, ErrClosed
	}
	i := index(key)
	if i >= p.spec.MaxEntries {
		return 0, ErrIndexRange
	}
	p.mu.Lock()
	r := p.rings[i].Swap(nil)
	p.set(i, 0)
	p.mu.Unlock()
	if r == nil {
		return 0, ErrKeyNotExist
	}
	r.free()
	return r.id, nil
}

// ProgDelete implements Map.
func (p *PerfEventArray) ProgDelete(key []byte) error {
	_, err := p.Clear(key)
	return err
}

// ProgDeleteOn implements Map.
func (p *PerfEventArray) ProgDeleteOn(_ int, key []byte) error { return p.ProgDelete(key) }

// closeExtra frees every ring (no program runs: Close holds every slot).
func (p *PerfEventArray) closeExtra() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.rings {
		if r := p.rings[i].Swap(nil); r != nil {
			r.free()
		}
	}
}

// detachExtra: as closeExtra (rings do not outlive the daemon's use).
func (p *PerfEventArray) detachExtra() { p.closeExtra() }

// validateInto empties every slot of a reopened region: the rings the
// ids named belonged to consumers of the previous daemon.
func (p *PerfEventArray) validateInto(rep *Repair) error {
	if err := p.ProgArray.validateInto(rep); err != nil {
		return err
	}
	for i := uint32(0); i < p.spec.MaxEntries; i++ {
		atomic.StoreUint32(p.word(i), 0)
	}
	return nil
}

// dump implements dumper: nothing — rings belong to their consumers,
// they are not map data (as the kernel's perf events are not: a lookup
// is ENOTSUPP).
func (p *PerfEventArray) dump([]byte, func(key, value []byte) error) error { return nil }

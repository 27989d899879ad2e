package client

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// MmapOptions parameterise Map.Mmap; nil means a read-only mapping.
type MmapOptions struct {
	// Writable maps the values of a BPF_F_MMAPABLE array writable, as
	// the kernel's mmap of such a map: it needs a descriptor with read
	// and write modes (ErrPermission), refuses a frozen map
	// (ErrPermission) and a BPF_F_RDONLY_PROG one (ErrAccess), and any
	// other map (ErrNotSupported).
	Writable bool
}

// MapMemory is a mapping of a map's storage into this process (Map.Mmap):
// the bytes the daemon's programs and writers change, read in place. Its
// format is package mapview's; Lookup and NextKey read it without a round
// trip.
//
// A mapping cannot be taken back from a process, so when the daemon moves
// the map's storage (a descriptor of the map was revoked, the map was
// destroyed, or an MMAPABLE array mapped writable was frozen), this
// mapping becomes a retired snapshot: its bytes stay as they were at the
// moment of the move and no later update reaches them (Live reports
// false). Refresh maps the live storage over it, at the same address, if
// m's descriptor still may; a revoked holder keeps only its snapshot —
// what it could have copied anyway while it had access.
//
// The slices it returns alias the mapping: valid until Close, read-only
// unless Writable (writing a read-only one faults). Safe for concurrent
// use; Refresh and Close serialise.
type MapMemory struct {
	m        *Map
	mem      []byte // the whole region
	dataOff  uint64
	writable bool
	view     *mapview.View
	mu       sync.Mutex // serialises Refresh and Close
	closed   bool       // guarded by mu
	// dropped is set before a transparent mapping's memory is replaced
	// by zero pages (sharedReads.dropLocked): a reader that loaded it
	// checks dropped after reading and discards what it read.
	dropped atomic.Bool
}

// Mmap maps m's storage into this process (see MapMemory). It needs read
// mode (ErrPermission for a write-only descriptor: it maps nothing), and
// what opts asks for (MmapOptions). Every map type can be mapped
// read-only. It returns ErrClosed after Close, and an *os.SyscallError if
// the mapping fails. The caller must Close the MapMemory (the Map's Close
// does not).
func (m *Map) Mmap(opts *MmapOptions) (*MapMemory, error) {
	writable := opts != nil && opts.Writable
	fd, info, err := m.storage(writable)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	mem, err := mapRegion(fd, info, nil)
	if err != nil {
		return nil, err
	}
	v, err := mapview.New(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, errProtocol
	}
	return &MapMemory{m: m, mem: mem, dataOff: info.DataOff, writable: info.Flags&wire.StorageWritable != 0, view: v}, nil
}

// storage asks the daemon for a descriptor of m's storage.
func (m *Map) storage(writable bool) (int, wire.MapStorageInfo, error) {
	var info wire.MapStorageInfo
	at := wire.MapStorageAttr{Handle: m.handle}
	if writable {
		at.Flags = wire.StorageWritable
	}
	var ab [wire.MapStorageAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := m.c.do(w, &m.ref, wire.CmdMapStorage, at.Append(ab[:0]), nil); err != nil {
		return -1, info, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return -1, info, err
	}
	data, err := w.payload()
	if err != nil {
		return -1, info, err
	}
	if !info.Parse(data) || info.Size == 0 || info.Size > mapview.MaxRegionSize || info.DataOff > info.Size {
		return -1, info, errProtocol
	}
	fd := w.takeFD(0)
	if fd < 0 {
		return -1, info, errProtocol
	}
	return fd, info, nil
}

// mapRegion maps the region of fd described by info: read-only, with the
// values writable when info says so. With over != nil it maps over that
// existing mapping of the same size (MAP_FIXED, same address), for a
// refresh.
func mapRegion(fd int, info wire.MapStorageInfo, over []byte) ([]byte, error) {
	size := int(info.Size)
	mem := over
	if mem == nil {
		var err error
		if mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
			return nil, os.NewSyscallError("mmap", err)
		}
	} else if err := mmapFixed(mem, fd, 0, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return nil, err
	}
	if info.Flags&wire.StorageWritable != 0 && info.DataOff < info.Size {
		if err := mmapFixed(mem[info.DataOff:], fd, int64(info.DataOff), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			if over == nil {
				unix.Munmap(mem)
			}
			return nil, err
		}
	}
	return mem, nil
}

// mmapFixed maps fd at off over the pages of b (MAP_FIXED: the old
// mapping of those pages is replaced atomically); fd -1 maps zero pages.
func mmapFixed(b []byte, fd int, off int64, prot, flags int) error {
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	_, _, e := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(len(b)), uintptr(prot), uintptr(flags|unix.MAP_FIXED), uintptr(fd), uintptr(off))
	if e != 0 {
		return os.NewSyscallError("mmap", e)
	}
	return nil
}

// Bytes returns the whole region (read-only), in mapview's format.
func (mm *MapMemory) Bytes() []byte { return mm.mem }

// Values returns the values of an array-family map (element i at
// i*Stride(); for a per-CPU array, CPU c's value of element i at
// i*Stride()+c*roundup(ValueSize, 8)), writable if the mapping is; nil
// for other map types.
func (mm *MapMemory) Values() []byte {
	l := mm.view.Layout()
	if l.Family != mapview.FamilyArray {
		return nil
	}
	n := l.ValuesOff + l.ElemSize*uint64(mm.view.Header().MaxEntries)
	return mm.mem[l.ValuesOff:n:n]
}

// Stride returns the distance between consecutive elements in Values.
func (mm *MapMemory) Stride() int { return int(mm.view.Layout().ElemSize) }

// Writable reports whether Values may be written.
func (mm *MapMemory) Writable() bool { return mm.writable }

// Live reports whether the mapping still shows the map's live storage
// (false once the storage moved: see MapMemory).
func (mm *MapMemory) Live() bool { return !mm.view.Retired() }

// Lookup copies key's value from the mapping into value (ValueBufferSize
// bytes). It returns nil, ErrKeyNotExist, ErrInvalid for wrong sizes, and
// ErrStale when the mapping is a retired snapshot or kept racing with
// writers (use Map.Lookup, which falls back to the daemon).
func (mm *MapMemory) Lookup(key, value []byte) error { return viewErr(mm.view.Lookup(key, value)) }

// NextKey is Map.NextKey read from the mapping; errors as Lookup.
func (mm *MapMemory) NextKey(key, next []byte) error { return viewErr(mm.view.NextKey(key, next)) }

// ErrStale: a MapMemory read could not be served from the mapping (it is
// a retired snapshot, or writers kept interfering); ask the daemon.
var ErrStale = errors.New("bpfd: mapped storage is stale or busy; use the daemon")

func viewErr(err error) error {
	switch err {
	case nil:
		return nil
	case mapview.ErrNotFound:
		return ErrKeyNotExist
	case mapview.ErrSize:
		return errValueSize
	case mapview.ErrUnsupported:
		return ErrNotSupported
	}
	return ErrStale
}

// Refresh maps the map's live storage over this mapping, at the same
// address, if it moved. It returns the error of asking for the storage
// (ErrBadDescriptor once m's descriptor was revoked: the snapshot stays),
// or ErrClosed after Close.
func (mm *MapMemory) Refresh() error {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.closed {
		return ErrClosed
	}
	if !mm.view.Retired() {
		return nil
	}
	fd, info, err := mm.m.storage(mm.writable)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if info.Size != uint64(len(mm.mem)) {
		return errProtocol
	}
	_, err = mapRegion(fd, info, mm.mem)
	return err
}

// Close unmaps the storage. Slices from Bytes and Values must not be used
// afterwards. A second Close returns ErrClosed.
func (mm *MapMemory) Close() error {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.closed {
		return ErrClosed
	}
	mm.closed = true
	if err := unix.Munmap(mm.mem); err != nil {
		return os.NewSyscallError("munmap", err)
	}
	return nil
}

// sharedReads is a Map's transparent read path: a read-only mapping made
// on the first lookup, used by Lookup and NextKey while it is live.
type sharedReads struct {
	cur      atomic.Pointer[MapMemory] // nil until set up
	off      atomic.Bool               // disabled by the user, or setup failed, or revoked
	mu       sync.Mutex                // serialises setup, refresh and drop
	attempts int                       // guarded by mu
}

// zeroGrace is how long a dropped mapping stays reserved (zero pages)
// before it is unmapped, so that a Lookup that loaded it just before the
// drop reads zeros, notices dead and falls back, instead of faulting.
const zeroGrace = 10 * time.Second

// SetSharedMemoryReads turns m's shared-memory read path on (the default
// for descriptors with read mode) or off. With it on, Lookup and NextKey
// read the map's storage mapped into this process — no round trip —
// whenever they can (array and hash families), and fall back to the
// daemon otherwise; the mapping is made on first use and follows moves
// of the storage. Off, every call is a round trip.
func (m *Map) SetSharedMemoryReads(on bool) {
	s := m.shared()
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.off.Store(false)
		s.attempts = 0
		return
	}
	s.off.Store(true)
	s.dropLocked()
}

func (m *Map) shared() *sharedReads {
	if s := m.shm.Load(); s != nil {
		return s
	}
	m.shm.CompareAndSwap(nil, &sharedReads{})
	return m.shm.Load()
}

// mapped returns the live mapping to read from, setting it up on first
// use, or nil when reads must go to the daemon.
func (m *Map) mapped() *MapMemory {
	if m.c.down.Load() {
		// As every other operation, reads fail once the connection is
		// closed or lost.
		return nil
	}
	s := m.shm.Load()
	if s != nil {
		if mm := s.cur.Load(); mm != nil {
			return mm
		}
		if s.off.Load() {
			return nil
		}
	}
	if m.info.Mode&ModeRead == 0 || !m.info.Type.mappable() {
		return nil
	}
	s = m.shared()
	s.mu.Lock()
	defer s.mu.Unlock()
	if mm := s.cur.Load(); mm != nil || s.off.Load() {
		return mm
	}
	s.attempts++
	mm, err := m.Mmap(nil)
	if err != nil {
		// A daemon without the command, a revoked descriptor, a closed
		// Map: read through the daemon from now on.
		s.off.Store(true)
		return nil
	}
	s.cur.Store(mm)
	return mm
}

// refresh handles a retired mapping: map the live storage over it, or
// give the mapping up (revoked descriptor).
func (m *Map) refresh(mm *MapMemory) {
	s := m.shared()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.Load() != mm {
		return
	}
	if mm.Refresh() != nil || mm.view.Retired() {
		s.off.Store(true)
		s.dropLocked()
	}
}

// dropLocked stops using the current mapping: it is replaced by zero
// pages at once (a reader that loaded it reads zeros and sees dead) and
// unmapped after zeroGrace. s.mu must be held.
func (s *sharedReads) dropLocked() {
	mm := s.cur.Load()
	if mm == nil {
		return
	}
	mm.dropped.Store(true)
	s.cur.Store(nil)
	mm.mu.Lock()
	mm.closed = true
	mm.mu.Unlock()
	if mmapFixed(mm.mem, -1, 0, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS) != nil {
		return // keep the old mapping mapped rather than risk a fault
	}
	mem := mm.mem
	time.AfterFunc(zeroGrace, func() { unix.Munmap(mem) })
}

// closeShared drops the transparent mapping when m closes.
func (m *Map) closeShared() {
	s := m.shm.Load()
	if s == nil {
		return
	}
	s.mu.Lock()
	s.off.Store(true)
	s.dropLocked()
	s.mu.Unlock()
}

// mappable reports whether t's syscall lookups can be served from the
// mapping (mapview serves the array and hash families, except types
// whose syscall lookup is not a plain read).
func (t MapType) mappable() bool {
	switch t {
	case Hash, Array, PercpuHash, PercpuArray, LRUHash, LRUPercpuHash, ProgArray:
		return true
	}
	return false
}

// sharedLookup tries Lookup through the mapping: done reports whether err
// is the answer.
func (m *Map) sharedLookup(key, value []byte) (done bool, err error) {
	for try := 0; try < 2; try++ {
		mm := m.mapped()
		if mm == nil {
			return false, nil
		}
		err := mm.view.Lookup(key, value)
		if mm.dropped.Load() {
			return false, nil // the mapping was dropped under us
		}
		switch err {
		case nil:
			return true, nil
		case mapview.ErrNotFound:
			return true, ErrKeyNotExist
		case mapview.ErrRetired:
			m.refresh(mm)
			continue
		}
		return false, nil
	}
	return false, nil
}

// sharedNextKey is sharedLookup for NextKey.
func (m *Map) sharedNextKey(key, next []byte) (done bool, err error) {
	for try := 0; try < 2; try++ {
		mm := m.mapped()
		if mm == nil {
			return false, nil
		}
		err := mm.view.NextKey(key, next)
		if mm.dropped.Load() {
			return false, nil
		}
		switch err {
		case nil:
			return true, nil
		case mapview.ErrNotFound:
			return true, ErrKeyNotExist
		case mapview.ErrRetired:
			m.refresh(mm)
			continue
		}
		return false, nil
	}
	return false, nil
}

// Package maps implements bpfd's eBPF map types on flat storage, with the
// kernel's semantics and errnos (the real bpf(2) is the oracle the tests
// compare against).
//
// # Storage
//
// Every map owns one contiguous region: a memfd (or, with Config.Dir, a
// file in that directory), mapped MAP_SHARED into the daemon. The region's
// format is package mapview's: a versioned header page (type, sizes,
// flags, CPU count, seed, frozen flag, generation), then the map's data.
// Entries live at offsets; links between hash entries are 32-bit indices;
// no Go pointer or Go map holds an entry, so a million-entry map costs the
// garbage collector nothing.
//
// All mutable state lives in the region, never only in Go fields: hash
// free lists, spare entries and the bump index (in per-CPU-slot state
// lines), LRU lists and their counts, bucket and element sequence counters,
// the frozen flag, the seed. So a region alone can be reopened into a live
// map (Open): every index and count is validated, what a half-finished
// operation can leave behind (a bucket left locked, an entry on no list) is
// repaired, anything else is refused with ErrCorrupt. Hash entries are
// published by one aligned 32-bit store (the bucket head or a predecessor's
// link) after they are complete.
//
// Readers (pkg/client, through the daemon's MAP_STORAGE command) map a
// read-only descriptor of the same backing (ReadOnlyFD): an O_RDONLY file
// description, whose mappings can never become writable. A memfd backing
// is sealed against resizing and, except for BPF_F_MMAPABLE arrays whose
// write holders may map values writable as in the kernel (WritableFD),
// against writable mappings and write(2). Lock-free readers follow
// mapview's protocol: per-bucket (hash) and per-element (array) sequence
// counters, odd while a writer holds them.
//
// Preallocation: a hash without BPF_F_NO_PREALLOC (and every array) has its
// pages populated at creation (MAP_POPULATE), so a memory shortage shows up
// as ENOMEM from New, like the kernel's preallocation. With
// BPF_F_NO_PREALLOC, semantics are identical but pages are committed as
// entries are first used (freed entries are reused first; fresh ones come
// from a bump index, so pages never used stay untouched). Both charge the
// full region size (MemoryUsage) to the quota.
//
// # Moves (revocation)
//
// A mapping in another process cannot be taken back. Retire moves a map's
// live storage to a fresh backing mapped at the same address in the daemon
// (so program pointers and static regions stay valid), and marks the old
// backing retired: whoever still maps it keeps a frozen snapshot of the
// moment of the move, and mapview readers see Retired and stop using it.
// During the move no program runs and no map operation is under way
// (percpu.Pool.Quiesce), so no store can land in the old backing after
// its contents were copied.
//
// # Syscall side and program side
//
// The Map methods Lookup, Update, Delete, NextKey, LookupAndDelete, the
// batch methods and Freeze are the syscall side: they enforce the map's
// BPF_F_RDONLY / BPF_F_WRONLY caps and freezing with EPERM, exactly as the
// kernel does for every descriptor of such a map. (Per-descriptor modes are
// the demux layer's job.) Per-CPU maps exchange one value per possible CPU
// on this side (Spec.SyscallValueSize). The Prog* methods are the program
// side (the bpf_map_*_elem helpers): they ignore freezing and the syscall
// caps, as the kernel does, and act on the caller's CPU slot;
// BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG are enforced by the verifier.
//
// # CPU slots and concurrency
//
// Every Map is safe for concurrent use, with no map-wide lock. Every
// operation that touches storage runs holding a CPU slot of the map's
// percpu.Pool (the program side uses the slot its invocation holds): that
// is what per-CPU values, per-CPU free lists and LRU local lists are
// indexed by, what lets Close and Retire wait for operations in flight
// (Quiesce), and why no method may be called by a goroutine that already
// holds a slot except the *On methods, which take it as an argument.
// Writers of a hash bucket or an array element take its sequence counter
// (odd = held); readers never block. A slice from ValueRef/ProgLookup
// aliases storage and is read and written by programs without locks, like
// a kernel map value pointer: it may observe concurrent updates, and after
// a delete or a replacing update its entry may be reused for another key
// (as in the kernel's preallocated hash). It stays valid memory until
// Close; the caller (object lifetime) guarantees no program runs on a map
// being closed.
//
// # Allocation
//
// Once a map exists, Lookup, Update, Delete, NextKey, LookupAndDelete,
// ValueRef, the Prog* methods and the batch methods allocate nothing;
// errors are preallocated sentinels.
//
// # PROG_ARRAY
//
// TypeProgArray is a ProgArray: an array of uint32 program ids (0 = empty)
// with the kernel's fd-array rules. The program layer translates descriptors
// or handles to ids before Update and keeps id→program references itself;
// see ProgArray.
//
// # PERF_EVENT_ARRAY (a deliberate difference)
//
// The kernel's perf event array slots hold perf events a consumer opened
// (perf_event_open of PERF_COUNT_SW_BPF_OUTPUT) and stored with a map
// update. bpfd has no perf events: a slot holds a perf ring made for the
// purpose (PerfEventArray.AttachRing, the daemon's PERF_RING command),
// with the same memory layout, records and wakeup rules and an eventfd in
// place of the perf fd. So the syscall-side update of a slot fails as the
// kernel's does for a descriptor that is not a perf event (EBADF), and
// rings are not map data: they are not persisted and a reopened region
// starts with every slot empty.
package maps

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/percpu"
)

// Map is a bpfd map. All methods are safe for concurrent use (see the package
// doc for the slot contract). key and value slices must be exactly
// Spec().KeySize and Spec().SyscallValueSize() long on the syscall side (or
// ValueSize on the program side), or the method returns ErrKeySize /
// ErrValueSize (EINVAL). After Close, methods that reach the storage return
// ErrClosed (EBADF); ValueRef returns nil and FD -1.
type Map interface {
	// Spec returns the spec the map was created with (MaxEntries as the
	// kernel records it).
	Spec() Spec
	// Lookup copies the value of key into value. ErrKeyNotExist (ENOENT) if
	// absent; ErrPermission (EPERM) on a BPF_F_WRONLY map.
	Lookup(key, value []byte) error
	// Update stores value under key. flags: UpdateAny, UpdateNoExist,
	// UpdateExist. ErrKeyExist (EEXIST), ErrKeyNotExist (ENOENT), ErrFull
	// (E2BIG, hash), ErrIndexRange (E2BIG, array), ErrInvalidFlags (EINVAL),
	// ErrPermission (EPERM: frozen or BPF_F_RDONLY).
	Update(key, value []byte, flags uint64) error
	// Delete removes key. ErrKeyNotExist (hash), ErrInvalid (array: arrays
	// cannot delete), ErrPermission.
	Delete(key []byte) error
	// NextKey writes into next the key following key in iteration order;
	// key == nil, or (hash) a key not in the map, gives the first key.
	// ErrKeyNotExist (ENOENT) after the last key or on an empty map.
	NextKey(key, next []byte) error
	// LookupAndDelete copies the value of key into value and removes key.
	// Hash only; arrays return ErrNotSupported (ENOTSUPP, 524) as the kernel.
	LookupAndDelete(key, value []byte) error
	// LookupBatch is BPF_MAP_LOOKUP_BATCH; see Batch.
	LookupBatch(b *Batch) error
	// LookupAndDeleteBatch is BPF_MAP_LOOKUP_AND_DELETE_BATCH (hash only;
	// arrays return ErrNotSupported).
	LookupAndDeleteBatch(b *Batch) error
	// UpdateBatch is BPF_MAP_UPDATE_BATCH: each of b.Count key/value pairs is
	// stored with flags UpdateAny; the first failure stops the batch, b.Count
	// is set to the pairs stored and that failure returned.
	UpdateBatch(b *Batch) error
	// DeleteBatch is BPF_MAP_DELETE_BATCH: deletes b.Count keys, stopping at
	// the first failure (ENOENT for a missing key); b.Count is set to the
	// keys deleted. Arrays return ErrNotSupported.
	DeleteBatch(b *Batch) error
	// Freeze makes the map read-only on the syscall side for good; programs
	// may still write. ErrPermission (EPERM) if already frozen or
	// BPF_F_RDONLY, as the kernel.
	Freeze() error
	// Frozen reports whether Freeze succeeded.
	Frozen() bool

	// ValueRef returns the value of key as a slice aliasing the map's
	// storage (no copy), or nil if key is absent, of the wrong size, or the
	// map is closed. Program side, CPU slot 0's value for per-CPU maps: it
	// ignores freezing and syscall caps. ProgArray returns nil always (its
	// values are not data).
	ValueRef(key []byte) []byte
	// ProgLookup is ValueRef for the program running on CPU slot cpu.
	ProgLookup(cpu int, key []byte) []byte
	// ProgUpdate is Update as the bpf_map_update_elem helper does it: the
	// same flags and errnos, but frozen and BPF_F_RDONLY maps are
	// writable, and value is ValueSize bytes (per-CPU maps: the caller's
	// CPU's value; others' are zeroed for a new key). It takes a slot of
	// its own: never call it while holding one (use ProgUpdateOn).
	ProgUpdate(key, value []byte, flags uint64) error
	// ProgUpdateOn is ProgUpdate for the program running on slot cpu.
	ProgUpdateOn(cpu int, key, value []byte, flags uint64) error
	// ProgDelete is Delete as the bpf_map_delete_elem helper does it (takes
	// a slot, like ProgUpdate).
	ProgDelete(key []byte) error
	// ProgDeleteOn is ProgDelete for the program running on slot cpu.
	ProgDeleteOn(cpu int, key []byte) error

	// MemoryUsage returns the bytes charged for the map (its region size).
	MemoryUsage() uint64
	// FD returns the map's read-write backing descriptor, owned by the map
	// (closed by Close; -1 after). It changes when Retire moves the map.
	FD() int
	// ReadOnlyFD returns a new O_RDONLY descriptor of the map's current
	// backing, owned by the caller, for read-only client mappings. It
	// returns ErrClosed after Close.
	ReadOnlyFD() (int, error)
	// Retire cuts off every mapping of the storage made from a
	// descriptor handed out so far (ReadOnlyFD, WritableFD): it moves the
	// live storage to a fresh backing and leaves the old one a retired
	// snapshot (see the package doc), waiting for every operation and
	// program run in flight on the map's pool. Without such descriptors
	// it does nothing. ErrClosed after Close.
	Retire() error
	// Close marks the storage retired (for mappings that outlive the
	// map), unmaps it and closes the backing (removing its file with the
	// file backend). It waits for operations in flight.
	// Idempotent; returns nil on the second call. No ValueRef slice may be
	// used afterwards.
	Close() error
}

// Batch carries the arguments and results of a batch operation, with the
// kernel's BPF_MAP_*_BATCH semantics. A caller reuses one Batch and its
// buffers; the methods allocate nothing.
//
// Lookup batches walk the map from a cursor. With HasInBatch false they
// start at the beginning; otherwise at InBatch, the OutBatch of a previous
// call. The cursor is opaque (hash: a bucket index; array: the index of the
// last element returned), as in the kernel. They copy up to Count elements
// into Keys and Values (packed: element i at i*KeySize, i*value size, the
// value size being Spec.SyscallValueSize), set Count to the number copied
// and OutBatch to the cursor to resume from, and return ErrBatchEnd
// (ENOENT) when the walk reached the end, possibly with Count > 0 (a
// partial batch). A hash copies whole buckets only: when the next bucket
// does not fit in what remains of Count, the call stops there, returning
// nil, or ErrNoSpace (ENOSPC) with Count 0 if nothing was copied. Count 0
// on entry returns nil at once.
//
// Update and delete batches take Count keys (and values) from Keys (and
// Values) and set Count to the elements done.
//
// ElemFlags must be 0 or, on maps with a spin lock, UpdateLock:
// ErrInvalidFlags otherwise. Keys and Values shorter than Count elements
// give ErrInvalid.
type Batch struct {
	InBatch    uint64
	HasInBatch bool
	OutBatch   uint64
	Keys       []byte
	Values     []byte
	Count      uint32
	ElemFlags  uint64
}

// Config chooses where maps live. The zero value (or nil) means memfd
// backings and the default CPU pool.
type Config struct {
	// Dir, when not empty, makes each map's region a file in this
	// directory (mapped MAP_SHARED, so the page cache keeps its bytes if
	// the daemon dies; put it on tmpfs such as /run). The daemon needs
	// write access to it. Empty means a memfd.
	Dir string
	// Pool is the CPU slot pool the map's operations and programs run
	// on; nil means percpu.Default(). Every map a program uses must share
	// the program's pool.
	Pool *percpu.Pool
}

func (c *Config) pool() *percpu.Pool {
	if c == nil || c.Pool == nil {
		return percpu.Default()
	}
	return c.Pool
}

func (c *Config) dir() string {
	if c == nil {
		return ""
	}
	return c.Dir
}

func defaultNCPU() int { return percpu.Default().N() }

// New creates a map from spec with the default Config (memfd, default
// pool). See NewWith.
func New(spec Spec) (Map, error) { return NewWith(spec, nil) }

// NewWith creates a map from spec in the storage cfg chooses (nil means
// the defaults). It returns the error Spec.Validate returns for bad
// parameters (EINVAL, E2BIG, ENOTSUPP, ENOMEM as the kernel would), or
// ErrNoMemory / a wrapped syscall error if the region cannot be created.
// The caller owns the map and must Close it.
func NewWith(spec Spec, cfg *Config) (Map, error) {
	if spec.isMapInMap() && spec.Inner == nil {
		// The kernel's inner_map_fd is mandatory (an fd that is no
		// map: EINVAL).
		return nil, ErrInvalid
	}
	if spec.Type == TypeDevmap || spec.Type == TypeDevmapHash {
		// The kernel refuses BPF_F_RDONLY_PROG from the caller and adds
		// it itself (programs only read device map entries).
		if spec.Flags&FlagRdonlyProg != 0 {
			return nil, ErrInvalid
		}
		spec.Flags |= FlagRdonlyProg
	}
	pool := cfg.pool()
	l, err := spec.layout(pool.N())
	if err != nil {
		return nil, err
	}
	spec.MaxEntries = spec.maxEntries(pool.N())
	prealloc := spec.Flags&FlagNoPrealloc == 0
	writable := spec.Type == TypeArray && spec.Flags&FlagMmapable != 0 && spec.SpinLock == 0
	var aliasOff, aliasLen uint64
	if l.Family == mapview.FamilyRing {
		aliasOff, aliasLen = l.DataOff, l.DataSize
	}
	r, err := newRegionAlias(cfg.dir(), spec.Name, l.Size, prealloc, writable, aliasOff, aliasLen)
	if err != nil {
		return nil, err
	}
	h := mapview.Header{Type: spec.Type, KeySize: spec.KeySize, ValueSize: spec.ValueSize,
		MaxEntries: spec.MaxEntries, Flags: spec.Flags, NCPU: uint32(pool.N()),
		MapExtra: spec.MapExtra, Size: l.Size, SpinLock: spec.SpinLock}
	copy(h.Name[:], spec.Name)
	if spec.Flags&FlagZeroSeed == 0 {
		var s [8]byte
		rand.Read(s[:])
		h.Seed = binary.LittleEndian.Uint64(s[:])
	}
	mapview.PutHeader(r.mem, &h)
	m, err := build(spec, l, r, pool, h.Seed)
	if err != nil {
		r.close()
		return nil, err
	}
	m.initRegion()
	if rb, ok := m.(*Ringbuf); ok {
		if err := rb.setup(); err != nil {
			r.close()
			return nil, err
		}
	}
	return m, nil
}

// impl is what every map type implements beyond Map.
type impl interface {
	Map
	// initRegion sets up a fresh region's type-specific state.
	initRegion()
	// validateInto checks (and repairs) a reopened region's
	// type-specific state; see Open.
	validateInto(rep *Repair) error
	b() *base
}

// build wraps a mapped region in the map type of spec.
func build(spec Spec, l mapview.Layout, r *region, pool *percpu.Pool, seed uint64) (impl, error) {
	view, err := mapview.New(r.mem[:r.size])
	if err != nil {
		return nil, ErrCorrupt
	}
	var m impl
	switch spec.Type {
	case TypeHashOfMaps:
		m = &HashOfMaps{Hash: &Hash{seed: seed, inPlace: true, view: view}}
	case TypeHash, TypePercpuHash, TypeLRUHash, TypeLRUPercpuHash:
		percpu := spec.Type == TypePercpuHash || spec.Type == TypeLRUPercpuHash
		h := &Hash{seed: seed, percpu: percpu, inPlace: percpu, view: view}
		m = h
		if spec.Type == TypeLRUHash || spec.Type == TypeLRUPercpuHash {
			h.inPlace = true // no spare entries: the LRU supplies nodes
			defer func() { h.lru = newLRU(h) }()
		}
	case TypeArray, TypePercpuArray:
		m = &Array{percpu: spec.Type == TypePercpuArray, mmapable: spec.Flags&FlagMmapable != 0, view: view}
	case TypeProgArray, TypeArrayOfMaps:
		m = &ProgArray{}
	case TypeDevmap, TypeCPUMap, TypeXSKMap:
		m = &DevMap{Array: &Array{view: view}}
	case TypeDevmapHash:
		m = &DevMapHash{Hash: &Hash{seed: seed, view: view}}
	case TypePerfEventArray:
		m = &PerfEventArray{rings: make([]atomic.Pointer[PerfRing], spec.MaxEntries)}
	case TypeQueue, TypeStack:
		m = &Queue{stack: spec.Type == TypeStack}
	case TypeRingbuf:
		m = &Ringbuf{mask: l.DataSize - 1, consFD: -1}
	case TypeLPMTrie:
		ds := spec.KeySize - 4
		m = &LPMTrie{dataSize: ds, maxPrefix: ds * 8, stack: make([]uint32, 0, ds*8+2), keyBuf: make([]byte, spec.KeySize)}
	case TypeBloomFilter:
		k := uint32(spec.MapExtra & 0xf)
		if k == 0 {
			k = 5
		}
		m = &Bloom{nhash: k, seed: uint32(seed), mask: l.BloomMask}
	default:
		return nil, ErrInvalid
	}
	b := m.b()
	b.spec, b.l, b.reg, b.mem, b.pool, b.self = spec, l, r, r.mem, pool, m
	return m, nil
}

// base holds what every map type shares.
type base struct {
	spec Spec
	l    mapview.Layout
	pool *percpu.Pool
	// mem is the daemon's mapping of the region: its address never
	// changes (moves remap under it). Immutable until Close.
	mem []byte
	// reg is the region; its backing fd changes on a move. Guarded by
	// moveMu for fd and path.
	reg    *region
	moveMu sync.Mutex
	closed atomic.Bool
	// frozen mirrors the region's Frozen word (the truth for Open), so
	// that Frozen never touches memory a concurrent Close may unmap.
	frozen atomic.Bool
	// writableOut is set when a writable descriptor of the backing was
	// handed out (MMAPABLE arrays); Freeze then moves the storage first.
	// Guarded by moveMu.
	writableOut bool
	// self is the map this base belongs to (type-specific move and
	// close steps). Immutable.
	self impl
	// sharedOut is set when any descriptor of the backing was handed out
	// since the last move: only then does Retire need to move. Guarded
	// by moveMu.
	sharedOut bool
}

func (b *base) b() *base            { return b }
func (b *base) Spec() Spec          { return b.spec }
func (b *base) MemoryUsage() uint64 { return b.l.Size }

func (b *base) u32(off uint64) *uint32 { return (*uint32)(mapviewPtr(b.mem, off)) }

// Frozen implements Map.
func (b *base) Frozen() bool { return b.frozen.Load() }

// FD implements Map.
func (b *base) FD() int {
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if b.closed.Load() {
		return -1
	}
	return b.reg.fd
}

// ReadOnlyFD implements Map.
func (b *base) ReadOnlyFD() (int, error) {
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if b.closed.Load() {
		return -1, ErrClosed
	}
	fd, err := b.reg.readOnlyFD()
	if err == nil {
		b.sharedOut = true
	}
	return fd, err
}

// WritableFD returns a new read-write descriptor of the map's backing,
// owned by the caller, for a writable mapping of a BPF_F_MMAPABLE array's
// values (at offset Layout().ValuesOff). It returns ErrPermission for any
// other map, or for a frozen or BPF_F_RDONLY_PROG... map the kernel would
// refuse to map writable (frozen, BPF_F_RDONLY), and ErrClosed.
func (b *base) WritableFD() (int, error) {
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if b.closed.Load() {
		return -1, ErrClosed
	}
	if !b.reg.writable || b.spec.Flags&FlagRdonly != 0 || b.frozen.Load() {
		return -1, ErrPermission
	}
	fd, err := b.reg.writableFD()
	if err == nil {
		b.writableOut, b.sharedOut = true, true
	}
	return fd, err
}

// Layout returns the map's region geometry (package mapview).
func (b *base) Layout() mapview.Layout { return b.l }

// Pool returns the CPU slot pool the map runs on.
func (b *base) Pool() *percpu.Pool { return b.pool }

// Retire implements Map.
func (b *base) Retire() error {
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if !b.sharedOut {
		return nil
	}
	return b.moveLocked()
}

// moveLocked moves the storage with every slot held. moveMu is held.
func (b *base) moveLocked() error {
	release := b.pool.Quiesce()
	defer release()
	if err := b.reg.move(); err != nil {
		return err
	}
	if b.self != nil {
		if x, ok := b.self.(interface{ moveExtra() error }); ok {
			if err := x.moveExtra(); err != nil {
				return err
			}
		}
	}
	b.writableOut, b.sharedOut = false, false
	return nil
}

// Close implements Map.
func (b *base) Close() error {
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	// Operations that took a slot before closed was set finish first.
	b.pool.Quiesce()()
	// Mappings of the backing that outlive the map see it is gone.
	atomic.StoreUint32(b.u32(mapview.OffRetired), 1)
	if x, ok := b.self.(interface{ closeExtra() }); ok {
		x.closeExtra()
	}
	err := b.reg.close()
	b.mem = nil
	return err
}

// enter takes a slot for a syscall-side operation and checks the map is
// open; the caller releases the slot with leave.
func (b *base) enter() (int, error) {
	s := b.pool.Get()
	if b.closed.Load() {
		b.pool.Release(s)
		return -1, ErrClosed
	}
	return s, nil
}

func (b *base) leave(s int) { b.pool.Release(s) }

// canRead and canWrite are the kernel's map_get_sys_perms checks.
func (b *base) canRead() error {
	if b.spec.Flags&FlagWronly != 0 {
		return ErrPermission
	}
	return nil
}

func (b *base) canWrite() error {
	if b.spec.Flags&FlagRdonly != 0 || b.Frozen() {
		return ErrPermission
	}
	return nil
}

// Freeze implements Map.
func (b *base) Freeze() error {
	b.moveMu.Lock()
	defer b.moveMu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if b.spec.SpinLock != 0 {
		return ErrNotSupported // map_freeze: no freezing a map with a lock
	}
	if err := b.canWrite(); err != nil {
		return err
	}
	if b.writableOut {
		// Writable client mappings of an MMAPABLE array could still
		// write: cut them off (they keep a retired snapshot). The kernel
		// refuses with EBUSY while writable mappings exist; bpfd cannot
		// see another process unmap, so it moves instead.
		if err := b.moveLocked(); err != nil {
			return err
		}
	}
	atomic.StoreUint32(b.u32(mapview.OffFrozen), 1)
	b.frozen.Store(true)
	return nil
}

// checkBatch validates a batch's flags and buffer sizes for n elements.
func (b *base) checkBatch(bt *Batch, keys, values bool) error {
	if bt.ElemFlags&^UpdateLock != 0 || bt.ElemFlags != 0 && b.spec.SpinLock == 0 {
		return ErrInvalidFlags
	}
	n := uint64(bt.Count)
	if keys && uint64(len(bt.Keys)) < n*uint64(b.spec.KeySize) {
		return ErrInvalid
	}
	if values && uint64(len(bt.Values)) < n*uint64(b.spec.SyscallValueSize()) {
		return ErrInvalid
	}
	return nil
}

func (b *base) keyAt(bt *Batch, i uint32) []byte {
	ks := uint64(b.spec.KeySize)
	o := uint64(i) * ks
	return bt.Keys[o : o+ks : o+ks]
}

func (b *base) valueAt(bt *Batch, i uint32) []byte {
	vs := uint64(b.spec.SyscallValueSize())
	o := uint64(i) * vs
	return bt.Values[o : o+vs : o+vs]
}

// Program-side wrappers that take a slot of their own.

func (b *base) withSlot(f func(cpu int) error) error {
	s, err := b.enter()
	if err != nil {
		return err
	}
	defer b.leave(s)
	return f(s)
}

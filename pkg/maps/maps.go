// Package maps implements bpfd's eBPF map types on flat storage, with the
// kernel's semantics and errnos (the real bpf(2) is the oracle the tests
// compare against).
//
// # Storage
//
// Every map owns one contiguous region: a memfd, sized with ftruncate and
// mapped MAP_SHARED. Entries live at offsets in it; links between hash
// entries are 32-bit indices; no Go pointer or Go map holds an entry, so a
// million-entry map costs the garbage collector nothing. After mapping, the
// memfd is sealed (F_SEAL_SHRINK|GROW|FUTURE_WRITE|SEAL): FD may be handed
// to clients, who can mmap it read-only but neither write nor resize it.
//
// Hash layout: n_buckets = roundup_pow_of_two(max_entries) uint32 bucket
// heads (entry index + 1, 0 = empty) at offset 0, then max_entries entries of
// [next uint32 | hash uint32 | key, padded to 8 | value, padded to 8]. Array
// layout: max_entries values, each padded to 8 bytes, at index*stride.
//
// Preallocation: a hash without BPF_F_NO_PREALLOC (and every array) has its
// pages populated at creation (MAP_POPULATE), so a memory shortage shows up
// as ENOMEM from New, like the kernel's preallocation. With
// BPF_F_NO_PREALLOC, semantics are identical but pages are committed as
// entries are first used (freed entries are reused first, and fresh ones
// come from a bump index, so pages never used stay untouched); memory is not returned
// before Close. Both charge the full region size (MemoryUsage) to the quota,
// so the lazy variant cannot grow a client past its quota later.
//
// # Syscall side and program side
//
// The Map methods Lookup, Update, Delete, NextKey, LookupAndDelete, the
// batch methods and Freeze are the syscall side: they enforce the map's
// BPF_F_RDONLY / BPF_F_WRONLY caps and freezing with EPERM, exactly as the
// kernel does for every descriptor of such a map. (Per-descriptor modes are
// the demux layer's job.) ValueRef, ProgUpdate and ProgDelete are the program
// side (the bpf_map_*_elem helpers): they ignore freezing and the syscall
// caps, as the kernel does; BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG are
// recorded in the Spec for the verifier to enforce.
//
// # Concurrency
//
// Every Map is safe for concurrent use. Each map has one sync.RWMutex:
// lookups, NextKey, ValueRef and batch lookups take it shared; writes take
// it exclusively. A slice from ValueRef aliases storage and is read and
// written by programs without the lock, like a kernel map value pointer: it
// may observe concurrent updates (torn values), and after a Delete its slot
// may be reused for another key (as in the kernel's preallocated hash). It
// stays valid memory until Close; the caller (object lifetime) guarantees no
// program runs on a map being closed.
//
// # Allocation
//
// Once a map exists, Lookup, Update, Delete, NextKey, LookupAndDelete,
// ValueRef and the batch methods allocate nothing; errors are preallocated
// sentinels.
//
// # PROG_ARRAY
//
// TypeProgArray is a ProgArray: an array of uint32 program ids (0 = empty)
// with the kernel's fd-array rules. The program layer translates descriptors
// or handles to ids before Update and keeps id→program references itself;
// see ProgArray.
package maps

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Map is a bpfd map. All methods are safe for concurrent use (see the package
// doc for the locking contract). key and value slices must be exactly
// Spec().KeySize and Spec().ValueSize long, or the method returns
// ErrKeySize / ErrValueSize (EINVAL). After Close, methods that reach the
// storage return ErrClosed (EBADF); ValueRef returns nil and FD -1.
type Map interface {
	// Spec returns the spec the map was created with.
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
	// map is closed. Program side: ignores freezing and syscall caps.
	// ProgArray returns nil always (its values are not data).
	ValueRef(key []byte) []byte
	// ProgUpdate is Update as the bpf_map_update_elem helper does it: the
	// same flags and errnos, but frozen and BPF_F_RDONLY maps are writable.
	ProgUpdate(key, value []byte, flags uint64) error
	// ProgDelete is Delete as the bpf_map_delete_elem helper does it.
	ProgDelete(key []byte) error
	// MemoryUsage returns the bytes charged for the map (its region size).
	MemoryUsage() uint64
	// FD returns the map's sealed memfd, owned by the map (closed by Close;
	// -1 after). Dup it to keep it.
	FD() int
	// Close unmaps the storage and closes the memfd. Idempotent; returns nil
	// on the second call. No ValueRef slice may be used afterwards.
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
// into Keys and Values (packed: element i at i*KeySize, i*ValueSize), set
// Count to the number copied and OutBatch to the cursor to resume from, and
// return ErrBatchEnd (ENOENT) when the walk reached the end, possibly with
// Count > 0 (a partial batch). A hash copies whole buckets only: when the
// next bucket does not fit in what remains of Count, the call stops there,
// returning nil, or ErrNoSpace (ENOSPC) with Count 0 if nothing was copied.
// Count 0 on entry returns nil at once.
//
// Update and delete batches take Count keys (and values) from Keys (and
// Values) and set Count to the elements done.
//
// ElemFlags must be 0 (the kernel accepts only BPF_F_LOCK, which needs a spin
// lock bpfd maps never have): ErrInvalidFlags otherwise. Keys and Values
// shorter than Count elements give ErrInvalid.
type Batch struct {
	InBatch    uint64
	HasInBatch bool
	OutBatch   uint64
	Keys       []byte
	Values     []byte
	Count      uint32
	ElemFlags  uint64
}

// New creates a map from spec. It returns the error Spec.Validate returns
// for bad parameters (EINVAL, E2BIG, ENOMEM as the kernel would), or
// ErrNoMemory / a wrapped syscall error if the region cannot be created.
// The caller owns the map and must Close it.
func New(spec Spec) (Map, error) {
	l, err := spec.layout()
	if err != nil {
		return nil, err
	}
	prealloc := spec.Flags&FlagNoPrealloc == 0
	r, err := newRegion(spec.Name, l.size, prealloc)
	if err != nil {
		return nil, err
	}
	var m Map
	var b *base
	switch spec.Type {
	case TypeHash:
		h := &Hash{seed: maphash.MakeSeed()}
		m, b = h, &h.base
	case TypeArray:
		a := &Array{}
		m, b = a, &a.base
	default:
		p := &ProgArray{}
		m, b = p, &p.base
	}
	b.spec, b.l, b.reg, b.mem = spec, l, r, r.mem
	return m, nil
}

// base holds what every map type shares.
type base struct {
	spec   Spec
	l      layout
	mu     sync.RWMutex
	reg    *region // guarded by mu (nil after Close)
	mem    []byte  // reg.mem; guarded by mu (nil after Close)
	frozen atomic.Bool
}

func (b *base) Spec() Spec          { return b.spec }
func (b *base) Frozen() bool        { return b.frozen.Load() }
func (b *base) MemoryUsage() uint64 { return b.l.size }

func (b *base) FD() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.reg == nil {
		return -1
	}
	return b.reg.fd
}

func (b *base) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reg == nil {
		return nil
	}
	err := b.reg.close()
	b.reg, b.mem = nil, nil
	return err
}

// canRead and canWrite are the kernel's map_get_sys_perms checks.
func (b *base) canRead() error {
	if b.spec.Flags&FlagWronly != 0 {
		return ErrPermission
	}
	return nil
}

func (b *base) canWrite() error {
	if b.spec.Flags&FlagRdonly != 0 || b.frozen.Load() {
		return ErrPermission
	}
	return nil
}

func (b *base) Freeze() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem == nil {
		return ErrClosed
	}
	if err := b.canWrite(); err != nil {
		return err
	}
	b.frozen.Store(true)
	return nil
}

// checkBatch validates a batch's flags and buffer sizes for n elements.
func (b *base) checkBatch(bt *Batch, keys, values bool) error {
	if bt.ElemFlags != 0 {
		return ErrInvalidFlags
	}
	n := uint64(bt.Count)
	if keys && uint64(len(bt.Keys)) < n*uint64(b.spec.KeySize) {
		return ErrInvalid
	}
	if values && uint64(len(bt.Values)) < n*uint64(b.spec.ValueSize) {
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
	vs := uint64(b.spec.ValueSize)
	o := uint64(i) * vs
	return bt.Values[o : o+vs : o+vs]
}

package mapview

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// Map types, kernel numbering (enum bpf_map_type), for the geometries this
// package knows.
const (
	TypeHash           uint32 = 1
	TypeArray          uint32 = 2
	TypeProgArray      uint32 = 3
	TypePerfEventArray uint32 = 4
	TypePercpuHash     uint32 = 5
	TypePercpuArray    uint32 = 6
	TypeLRUHash        uint32 = 9
	TypeLRUPercpuHash  uint32 = 10
	TypeLPMTrie        uint32 = 11
	TypeArrayOfMaps    uint32 = 12
	TypeHashOfMaps     uint32 = 13
	TypeDevmap         uint32 = 14
	TypeCPUMap         uint32 = 16
	TypeXSKMap         uint32 = 17
	TypeQueue          uint32 = 22
	TypeStack          uint32 = 23
	TypeDevmapHash     uint32 = 25
	TypeRingbuf        uint32 = 27
	TypeBloomFilter    uint32 = 30
)

// Map flags that change the geometry (kernel numbering).
const (
	FlagNoCommonLRU = 1 << 1  // BPF_F_NO_COMMON_LRU
	FlagMmapable    = 1 << 10 // BPF_F_MMAPABLE
)

// Format constants.
const (
	// Magic starts every region.
	Magic = "BPFDMAP\x00"
	// Version is the region format version this package reads and writes.
	Version = 1
	// PageSize is the page size regions are laid out in (x86-64).
	PageSize = 4096
	// HeaderSize is the size of the header page (the header proper is
	// the first OffData bytes; data may follow on the same page).
	HeaderSize = PageSize
	// SlotStride is the size of each CPU slot's private state (a cache
	// line, so two slots never share one).
	SlotStride = 64
	// MaxCPUs bounds the CPU count a region may be laid out for.
	MaxCPUs = 8192
	// MaxRegionSize is the largest region (16 GiB).
	MaxRegionSize = 16 << 30
	// HashEntryHeader is the size of the link and hash words that start a
	// hash entry; LRUEntryHeader adds the LRU node.
	HashEntryHeader = 8
	LRUEntryHeader  = 24
	// MaxElemSize bounds key plus value of a hash entry (the kernel's
	// KMALLOC_MAX_SIZE).
	MaxElemSize = 4 << 20
	// MaxRetries bounds a lock-free reader's attempts before it gives up
	// (and a client falls back to a round trip).
	MaxRetries = 64
)

// Header field offsets (all little-endian, naturally aligned). Words the
// daemon changes while the map lives (Frozen, Retired, Generation, and the
// per-type state) are read with atomic loads.
const (
	OffMagic      = 0  // [8]byte
	OffVersion    = 8  // u32
	OffHeaderSize = 12 // u32: HeaderSize
	OffType       = 16 // u32
	OffKeySize    = 20 // u32
	OffValueSize  = 24 // u32
	OffMaxEntries = 28 // u32
	OffFlags      = 32 // u32
	OffNCPU       = 36 // u32: possible CPUs the per-CPU geometry is laid out for
	OffMapExtra   = 40 // u64
	OffName       = 48 // [16]byte
	OffSize       = 64 // u64: region size in bytes
	OffSeed       = 72 // u64: hash seed
	OffFrozen     = 80 // u32: 1 once the map is frozen
	OffRetired    = 84 // u32: 1 in a snapshot left behind by a move (see package doc)
	OffGeneration = 88 // u32: bumped by every move
	// OffSpinLock is one more than the offset, within a value, of the
	// value's struct bpf_spin_lock (hash and array maps created with BTF
	// naming one); 0 means the values hold no lock. Immutable.
	OffSpinLock = 92 // u32
	// OffState is where per-type mutable scalars start (hash: OffBump),
	// up to OffData.
	OffState = 128
	// OffData is where a region's data starts (on the header page, when
	// it fits).
	OffData = 512
	// OffBump (hash family): entries ever handed out from the never-used
	// tail; entries with index > bump are untouched.
	OffBump = OffState
	// Queue and stack: a lock word, then the head and tail indices.
	OffQueueLock = OffState
	OffQueueHead = OffState + 4
	OffQueueTail = OffState + 8
	// LPM trie: a lock word, a sequence counter (odd while a writer
	// changes the trie), the root node (index+1), the number of real
	// entries, the bump index and the free list of the node pool.
	OffTrieLock    = OffState
	OffTrieSeq     = OffState + 4
	OffTrieRoot    = OffState + 8
	OffTrieEntries = OffState + 12
	OffTrieBump    = OffState + 16
	OffTrieFree    = OffState + 20
	// Ring buffer: the producer lock word, then the producer and pending
	// positions (u64, 8-aligned), then the last consumer position a
	// producer saw (or the daemon saved when it detached the map: what a
	// reopened ring resumes from). The live consumer position is at
	// offset 0 of the consumer page.
	OffRingLock     = OffState
	OffRingProducer = OffState + 8
	OffRingPending  = OffState + 16
	OffRingConsSeen = OffState + 24
	// Ring buffer record header bits (len word), as BPF_RINGBUF_*.
	RingBusyBit    = 1 << 31
	RingDiscardBit = 1 << 30
	RingHeaderSize = 8
)

// Layout is the geometry of a region: where everything is, derived from
// the map's parameters alone (Geometry), so a reader recomputes it instead
// of trusting offsets stored in the region.
type Layout struct {
	Size uint64 // region bytes, a multiple of PageSize
	NCPU int    // CPU slots the per-CPU parts are laid out for

	// Per-slot state (hash free lists, LRU local lists): NCPU × SlotStride
	// bytes at SlotOff.
	SlotOff uint64
	// LRU lists (LRU hash maps): at LRUOff, see package maps.
	LRUOff uint64

	// Hash family: NBuckets 8-byte buckets at BucketOff, each a sequence
	// counter (u32, odd while a writer holds the bucket) then the index of
	// the first entry (u32, 1-based, 0 = empty); NEnts entries of EntSize
	// bytes at EntOff, entry i (1-based) at EntOff+(i-1)*EntSize, each
	// [next u32][hash u32][LRU node, 16 bytes: LRU maps only][key, padded to
	// 8][value(s)] with the key at KeyOff and the value at ValOff.
	NBuckets  uint32
	BucketOff uint64
	EntOff    uint64
	EntSize   uint64
	NEnts     uint32
	KeyOff    uint64
	ValOff    uint64

	// Array family: MaxEntries sequence counters (u32) at SeqOff, then the
	// values at ValuesOff (page aligned for BPF_F_MMAPABLE arrays, which
	// clients map from there), element i at ValuesOff+i*ElemSize.
	SeqOff    uint64
	ValuesOff uint64
	ElemSize  uint64

	// ValStride is the value size rounded up to 8: the distance between
	// the per-CPU copies of one value (per-CPU maps), or the padded value.
	ValStride uint64
	// PerCPU is true when every value exists once per CPU slot.
	PerCPU bool
	// Family is FamilyArray, FamilyHash, FamilyQueue, FamilyBloom or
	// FamilyOther.
	Family int

	// Queue, stack and bloom filter: their data (elements, bits) at
	// DataOff, DataSize bytes. BloomMask is the bloom filter's bit mask.
	DataOff   uint64
	DataSize  uint64
	BloomMask uint32
}

// Geometry families.
const (
	FamilyOther = iota
	FamilyArray
	FamilyHash
	FamilyQueue
	FamilyBloom
	FamilyTrie
	FamilyRing
)

// BloomBits returns the bit array size (in bits, as a uint64 since it may
// be 2^32) and mask of a bloom filter with max_entries entries and the
// hash-function count in map_extra (0 means 5), as the kernel computes
// them: max_entries * k * 7/5 rounded up to a power of two, at least 64.
func BloomBits(maxEntries uint32, extra uint64) (uint64, uint32) {
	k := uint32(extra & 0xf)
	if k == 0 {
		k = 5
	}
	nb := uint64(maxEntries) * uint64(k)
	if nb > 1<<32-1 || (nb/5)*7 > 1<<32-1 || (nb/5)*7 > 1<<31 {
		return 1 << 32, 1<<32 - 1
	}
	n := (nb / 5) * 7
	if n <= 64 {
		n = 64
	} else {
		p := uint64(1)
		for p < n {
			p <<= 1
		}
		n = p
	}
	return n, uint32(n - 1)
}

// ErrGeometry: the parameters describe no region this version can lay out
// (unknown type, sizes out of range, region too large).
var ErrGeometry = errors.New("mapview: parameters describe no valid region")

func roundUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// mulOK returns a*b and whether it is at most MaxRegionSize.
func mulOK(a, b uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	return lo, hi == 0 && lo <= MaxRegionSize
}

// Geometry lays out a map of type typ with the given parameters for ncpu
// CPU slots. It checks only what the layout needs (sizes that fit, a known
// type); the kernel's creation rules are package maps' job. Types outside
// the array and hash families get FamilyOther and only a header page here;
// their owners extend the layout.
func Geometry(typ, keySize, valueSize, maxEntries, flags uint32, extra uint64, ncpu int) (Layout, error) {
	var l Layout
	if ncpu < 1 || ncpu > MaxCPUs || maxEntries == 0 {
		return l, ErrGeometry
	}
	l.NCPU = ncpu
	l.ValStride = roundUp(uint64(valueSize), 8)
	switch typ {
	case TypeArray, TypePercpuArray, TypeProgArray, TypePerfEventArray, TypeArrayOfMaps,
		TypeDevmap, TypeCPUMap, TypeXSKMap:
		l.Family = FamilyArray
		l.PerCPU = typ == TypePercpuArray
		l.ElemSize = l.ValStride
		if l.PerCPU {
			l.ElemSize *= uint64(ncpu)
		}
		l.SeqOff = OffData
		l.ValuesOff = roundUp(l.SeqOff+4*uint64(maxEntries), SlotStride)
		if flags&FlagMmapable != 0 {
			l.ValuesOff = roundUp(l.ValuesOff, PageSize)
		}
		vals, ok := mulOK(l.ElemSize, uint64(maxEntries))
		if !ok || valueSize == 0 || keySize != 4 {
			return l, ErrGeometry
		}
		l.Size = roundUp(l.ValuesOff+vals, PageSize)
	case TypeHash, TypePercpuHash, TypeLRUHash, TypeLRUPercpuHash, TypeHashOfMaps, TypeDevmapHash:
		l.Family = FamilyHash
		lru := typ == TypeLRUHash || typ == TypeLRUPercpuHash
		l.PerCPU = typ == TypePercpuHash || typ == TypeLRUPercpuHash
		if keySize == 0 || valueSize == 0 || maxEntries > 1<<31 || uint64(keySize)+uint64(valueSize) >= MaxElemSize {
			return l, ErrGeometry
		}
		nb := uint64(1)
		for nb < uint64(maxEntries) {
			nb <<= 1
		}
		l.NBuckets = uint32(nb)
		l.NEnts = maxEntries
		if !lru && !l.PerCPU && typ != TypeHashOfMaps {
			// Spare entries, one per slot, for replacing updates.
			if uint64(maxEntries)+uint64(ncpu) > 1<<32-1 {
				return l, ErrGeometry
			}
			l.NEnts += uint32(ncpu)
		}
		l.KeyOff = HashEntryHeader
		if lru {
			l.KeyOff = LRUEntryHeader
		}
		l.ValOff = l.KeyOff + roundUp(uint64(keySize), 8)
		vals := l.ValStride
		if l.PerCPU {
			vals *= uint64(ncpu)
		}
		l.EntSize = l.ValOff + vals
		l.SlotOff = OffData
		l.LRUOff = l.SlotOff + uint64(ncpu)*SlotStride
		lruSize := uint64(0)
		if lru {
			lruSize = SlotStride + uint64(ncpu)*SlotStride
		}
		l.BucketOff = roundUp(l.LRUOff+lruSize, SlotStride)
		l.EntOff = roundUp(l.BucketOff+8*nb, SlotStride)
		ents, ok := mulOK(l.EntSize, uint64(l.NEnts))
		if !ok || l.EntOff+ents > MaxRegionSize {
			return l, ErrGeometry
		}
		l.Size = roundUp(l.EntOff+ents, PageSize)
	case TypeQueue, TypeStack:
		// (max_entries+1) values, unpadded, as the kernel's elements[];
		// head and tail at OffQueueHead/OffQueueTail.
		if keySize != 0 || valueSize == 0 || valueSize > MaxElemSize {
			return l, ErrGeometry
		}
		l.Family = FamilyQueue
		l.DataOff = OffData
		n, ok := mulOK(uint64(maxEntries)+1, uint64(valueSize))
		if !ok {
			return l, ErrGeometry
		}
		l.DataSize = n
		l.Size = roundUp(l.DataOff+n, PageSize)
	case TypeLPMTrie:
		// A node pool: 2*max_entries+2 nodes (every real node, every
		// intermediate one, and the two an update allocates before it
		// frees), each [child0 u32][child1 u32][prefixlen u32][flags
		// u32][data padded to 8][value padded to 8]; links are node
		// indices + 1. Root, counts and the free list at OffTrie*.
		if keySize < 5 || keySize > 4+256 || valueSize == 0 || uint64(valueSize) > MaxElemSize {
			return l, ErrGeometry
		}
		l.Family = FamilyTrie
		l.KeyOff = 16
		l.ValOff = l.KeyOff + roundUp(uint64(keySize-4), 8)
		l.EntSize = l.ValOff + l.ValStride
		if uint64(maxEntries)*2+2 > 1<<32-1 {
			return l, ErrGeometry
		}
		l.NEnts = maxEntries*2 + 2
		l.EntOff = OffData
		n, ok := mulOK(l.EntSize, uint64(l.NEnts))
		if !ok {
			return l, ErrGeometry
		}
		l.Size = roundUp(l.EntOff+n, PageSize)
	case TypeRingbuf:
		// The data pages of a BPF ring buffer, after the header page;
		// the consumer position lives in a page of its own (a second
		// backing, writable by the consumer).
		if keySize != 0 || valueSize != 0 || maxEntries&(maxEntries-1) != 0 || maxEntries%PageSize != 0 {
			return l, ErrGeometry
		}
		l.Family = FamilyRing
		l.DataOff = PageSize
		l.DataSize = uint64(maxEntries)
		l.Size = l.DataOff + l.DataSize
	case TypeBloomFilter:
		// The bit array of the kernel's bloom filter (bloom_map_alloc).
		if keySize != 0 || valueSize == 0 || extra&^0xf != 0 {
			return l, ErrGeometry
		}
		l.Family = FamilyBloom
		bits, mask := BloomBits(maxEntries, extra)
		l.BloomMask = mask
		l.DataOff = OffData
		l.DataSize = roundUp((bits+7)/8, 8)
		l.Size = roundUp(l.DataOff+l.DataSize, PageSize)
	default:
		l.Family = FamilyOther
		l.Size = HeaderSize
	}
	if l.Size > MaxRegionSize {
		return l, ErrGeometry
	}
	return l, nil
}

// Header is the decoded fixed part of a region's first page.
type Header struct {
	Version                                     uint32
	Type, KeySize, ValueSize, MaxEntries, Flags uint32
	NCPU                                        uint32
	MapExtra                                    uint64
	Name                                        [16]byte
	Size                                        uint64
	Seed                                        uint64
	// SpinLock is the OffSpinLock word: 1 + the offset of the values'
	// bpf_spin_lock, 0 for none.
	SpinLock uint32
}

// ErrHeader: the bytes are not a region header this version accepts.
var ErrHeader = errors.New("mapview: not a valid map region header")

// PutHeader writes h (with Magic, Version and HeaderSize) into the first
// bytes of b, which must be at least HeaderSize long. It leaves the
// mutable words (Frozen, Retired, Generation, state) alone.
func PutHeader(b []byte, h *Header) {
	le := binary.LittleEndian
	copy(b[OffMagic:], Magic)
	le.PutUint32(b[OffVersion:], Version)
	le.PutUint32(b[OffHeaderSize:], HeaderSize)
	le.PutUint32(b[OffType:], h.Type)
	le.PutUint32(b[OffKeySize:], h.KeySize)
	le.PutUint32(b[OffValueSize:], h.ValueSize)
	le.PutUint32(b[OffMaxEntries:], h.MaxEntries)
	le.PutUint32(b[OffFlags:], h.Flags)
	le.PutUint32(b[OffNCPU:], h.NCPU)
	le.PutUint64(b[OffMapExtra:], h.MapExtra)
	copy(b[OffName:OffName+16], h.Name[:])
	le.PutUint64(b[OffSize:], h.Size)
	le.PutUint64(b[OffSeed:], h.Seed)
	le.PutUint32(b[OffSpinLock:], h.SpinLock)
}

// ParseHeader decodes and checks the header at the start of mem, an
// untrusted region of len(mem) bytes: magic, version, header size, a
// geometry that exists and whose size is exactly len(mem). It returns the
// header and its layout, or ErrHeader / ErrGeometry. It never panics.
func ParseHeader(mem []byte) (Header, Layout, error) {
	var h Header
	if len(mem) < HeaderSize || string(mem[OffMagic:OffMagic+8]) != Magic {
		return h, Layout{}, ErrHeader
	}
	le := binary.LittleEndian
	h.Version = le.Uint32(mem[OffVersion:])
	if h.Version != Version || le.Uint32(mem[OffHeaderSize:]) != HeaderSize {
		return h, Layout{}, ErrHeader
	}
	h.Type = le.Uint32(mem[OffType:])
	h.KeySize = le.Uint32(mem[OffKeySize:])
	h.ValueSize = le.Uint32(mem[OffValueSize:])
	h.MaxEntries = le.Uint32(mem[OffMaxEntries:])
	h.Flags = le.Uint32(mem[OffFlags:])
	h.NCPU = le.Uint32(mem[OffNCPU:])
	h.MapExtra = le.Uint64(mem[OffMapExtra:])
	copy(h.Name[:], mem[OffName:OffName+16])
	h.Size = le.Uint64(mem[OffSize:])
	h.Seed = le.Uint64(mem[OffSeed:])
	h.SpinLock = le.Uint32(mem[OffSpinLock:])
	if h.NCPU == 0 || h.NCPU > MaxCPUs || !spinLockOK(&h) {
		return h, Layout{}, ErrHeader
	}
	l, err := Geometry(h.Type, h.KeySize, h.ValueSize, h.MaxEntries, h.Flags, h.MapExtra, int(h.NCPU))
	if err != nil {
		return h, l, err
	}
	if l.Size != h.Size || uint64(len(mem)) != h.Size {
		return h, l, ErrHeader
	}
	return h, l, nil
}

// spinLockOK checks a header's SpinLock word: none, or a 4-byte aligned
// lock inside the value of a hash or array map.
func spinLockOK(h *Header) bool {
	if h.SpinLock == 0 {
		return true
	}
	off := uint64(h.SpinLock) - 1
	return (h.Type == TypeHash || h.Type == TypeArray) && off%4 == 0 && off+4 <= uint64(h.ValueSize)
}

// ClearSpinLock zeroes the bpf_spin_lock field of value, a value of a map
// whose header is h (nothing when it has none), as the kernel's
// check_and_init_map_value does to what a lookup returns.
func ClearSpinLock(h *Header, value []byte) {
	if h.SpinLock != 0 && uint64(len(value)) >= uint64(h.SpinLock)+3 {
		clear(value[h.SpinLock-1 : h.SpinLock+3])
	}
}

// NameString returns a NUL-padded name as a string.
func NameString(n [16]byte) string {
	for i, c := range n {
		if c == 0 {
			return string(n[:i])
		}
	}
	return string(n[:])
}

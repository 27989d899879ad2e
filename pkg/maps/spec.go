package maps

import (
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// Map types, kernel numbering (enum bpf_map_type).
const (
	TypeHash           uint32 = 1  // BPF_MAP_TYPE_HASH
	TypeArray          uint32 = 2  // BPF_MAP_TYPE_ARRAY
	TypeProgArray      uint32 = 3  // BPF_MAP_TYPE_PROG_ARRAY
	TypePerfEventArray uint32 = 4  // BPF_MAP_TYPE_PERF_EVENT_ARRAY
	TypePercpuHash     uint32 = 5  // BPF_MAP_TYPE_PERCPU_HASH
	TypePercpuArray    uint32 = 6  // BPF_MAP_TYPE_PERCPU_ARRAY
	TypeLRUHash        uint32 = 9  // BPF_MAP_TYPE_LRU_HASH
	TypeLRUPercpuHash  uint32 = 10 // BPF_MAP_TYPE_LRU_PERCPU_HASH
	TypeLPMTrie        uint32 = 11 // BPF_MAP_TYPE_LPM_TRIE
	TypeArrayOfMaps    uint32 = 12 // BPF_MAP_TYPE_ARRAY_OF_MAPS
	TypeHashOfMaps     uint32 = 13 // BPF_MAP_TYPE_HASH_OF_MAPS
	TypeDevmap         uint32 = 14 // BPF_MAP_TYPE_DEVMAP
	TypeCPUMap         uint32 = 16 // BPF_MAP_TYPE_CPUMAP
	TypeXSKMap         uint32 = 17 // BPF_MAP_TYPE_XSKMAP
	TypeQueue          uint32 = 22 // BPF_MAP_TYPE_QUEUE
	TypeStack          uint32 = 23 // BPF_MAP_TYPE_STACK
	TypeDevmapHash     uint32 = 25 // BPF_MAP_TYPE_DEVMAP_HASH
	TypeRingbuf        uint32 = 27 // BPF_MAP_TYPE_RINGBUF
	TypeBloomFilter    uint32 = 30 // BPF_MAP_TYPE_BLOOM_FILTER
)

var typeNames = map[uint32]string{
	TypeHash: "hash", TypeArray: "array", TypeProgArray: "prog_array",
	TypePerfEventArray: "perf_event_array", TypePercpuHash: "percpu_hash",
	TypePercpuArray: "percpu_array", TypeLRUHash: "lru_hash", TypeLRUPercpuHash: "lru_percpu_hash",
	TypeLPMTrie: "lpm_trie", TypeArrayOfMaps: "array_of_maps", TypeHashOfMaps: "hash_of_maps",
	TypeDevmap: "devmap", TypeCPUMap: "cpumap", TypeXSKMap: "xskmap", TypeQueue: "queue",
	TypeStack: "stack", TypeDevmapHash: "devmap_hash", TypeRingbuf: "ringbuf",
	TypeBloomFilter: "bloom_filter",
}

// TypeName returns bpftool's name of map type t ("percpu_hash"), or
// "type(N)" for a type bpfd does not know.
func TypeName(t uint32) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return "type(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// Create flags, kernel numbering (BPF_F_* in include/uapi/linux/bpf.h).
const (
	FlagNoPrealloc    uint32 = 1 << 0  // BPF_F_NO_PREALLOC: hash (semantics unchanged), LPM trie (required)
	FlagNoCommonLRU   uint32 = 1 << 1  // BPF_F_NO_COMMON_LRU: LRU hash, one LRU list per CPU
	FlagNumaNode      uint32 = 1 << 2  // BPF_F_NUMA_NODE: Spec.NumaNode is meaningful
	FlagRdonly        uint32 = 1 << 3  // BPF_F_RDONLY: syscall side may only read
	FlagWronly        uint32 = 1 << 4  // BPF_F_WRONLY: syscall side may only write
	FlagZeroSeed      uint32 = 1 << 6  // BPF_F_ZERO_SEED: hash and bloom filter seeds are 0
	FlagRdonlyProg    uint32 = 1 << 7  // BPF_F_RDONLY_PROG: programs may only read
	FlagWronlyProg    uint32 = 1 << 8  // BPF_F_WRONLY_PROG: programs may only write
	FlagMmapable      uint32 = 1 << 10 // BPF_F_MMAPABLE: array values may be mapped writable
	FlagPreserveElems uint32 = 1 << 11 // BPF_F_PRESERVE_ELEMS: perf event array entries outlive their fd
	FlagInnerMap      uint32 = 1 << 12 // BPF_F_INNER_MAP: inner-map template of any max_entries
)

// Update flags, kernel numbering.
const (
	UpdateAny     uint64 = 0      // BPF_ANY: create or replace
	UpdateNoExist uint64 = 1      // BPF_NOEXIST: create only
	UpdateExist   uint64 = 2      // BPF_EXIST: replace only
	UpdateLock    uint64 = 1 << 2 // BPF_F_LOCK: copy under the value's bpf_spin_lock
)

// Kernel limits reproduced by New.
const (
	// NameLen is BPF_OBJ_NAME_LEN: a name holds at most NameLen-1 bytes.
	NameLen = 16
	// kmallocMax is KMALLOC_MAX_SIZE on x86-64 (4 MiB); htabElemSize is
	// sizeof(struct htab_elem). A hash whose key_size+value_size reaches
	// kmallocMax-htabElemSize gets E2BIG, as in htab_map_alloc_check.
	kmallocMax   = 4 << 20
	htabElemSize = 48
	// maxHashEntries: the kernel refuses (E2BIG) a hash whose bucket count
	// roundup_pow_of_two(max_entries) exceeds U32_MAX/sizeof(struct bucket).
	maxHashEntries = 1 << 28
	// maxArrayValue: array value_size above INT_MAX is E2BIG.
	maxArrayValue = 1<<31 - 1
	// pcpuMinUnitSize is PCPU_MIN_UNIT_SIZE: the largest per-CPU value
	// (rounded up to 8) is E2BIG above it.
	pcpuMinUnitSize = 32 << 10
	// lpmDataMax is LPM_DATA_SIZE_MAX: an LPM trie key holds a 4-byte
	// prefix length and 1..256 bytes of data.
	lpmDataMax = 256
	// lpmNodeSize is sizeof(struct lpm_trie_node) (two child pointers, prefixlen, flags), for the value limit.
	lpmNodeSize = 24
	// maxQueueValue: a queue or stack value above KMALLOC_MAX_SIZE is E2BIG.
	maxQueueValue = kmallocMax
)

// MaxRegionSize is the largest flat region New will create (16 GiB). A spec
// needing more fails with ErrNoMemory, as the kernel's allocation would.
// Per-uid quotas normally refuse much earlier.
const MaxRegionSize = mapview.MaxRegionSize

// Spec describes a map, in the kernel's bpf_attr terms. It is plain data:
// nothing is allocated until New.
type Spec struct {
	Type       uint32 // Type*
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Flags      uint32 // Flag* bits
	Name       string // at most NameLen-1 bytes of [A-Za-z0-9_.]
	// MapExtra is bpf_attr.map_extra: for bloom filters the number of
	// hash functions in its low 4 bits (0 means 5); must be 0 otherwise.
	MapExtra uint64
	// NumaNode is bpf_attr.numa_node, used with FlagNumaNode: it must name
	// an online node (bpfd places nothing by node; the check is the
	// kernel's).
	NumaNode uint32
	// SpinLock, when not 0, is one more than the offset within the value
	// of its struct bpf_spin_lock (the daemon finds it in the value's BTF
	// at creation, as the kernel's map_check_btf); 0 means the values
	// hold no lock. Hash and array maps only. See LockOffset and
	// spinlock.go.
	SpinLock uint32
	// Inner is the inner-map template of an ARRAY_OF_MAPS or HASH_OF_MAPS
	// (the kernel's inner_map_fd): every map stored in it must be
	// compatible (see Compatible). Nil for other types.
	Inner *Spec
}

// Sentinel errors. Each satisfies errors.Is for itself and for the kernel
// errno the kernel returns for the same misuse.
var (
	ErrKeyNotExist  = errno.New(unix.ENOENT, "maps: key does not exist")
	ErrKeyExist     = errno.New(unix.EEXIST, "maps: key already exists")
	ErrFull         = errno.New(unix.E2BIG, "maps: map is full")
	ErrIndexRange   = errno.New(unix.E2BIG, "maps: index out of range")
	ErrInvalid      = errno.New(unix.EINVAL, "maps: invalid argument")
	ErrInvalidFlags = errno.New(unix.EINVAL, "maps: invalid flags")
	ErrKeySize      = errno.New(unix.EINVAL, "maps: key has the wrong size")
	ErrValueSize    = errno.New(unix.EINVAL, "maps: value has the wrong size")
	ErrPermission   = errno.New(unix.EPERM, "maps: operation not permitted on this map")
	ErrBusy         = errno.New(unix.EBUSY, "maps: map is busy")
	ErrTooBig       = errno.New(unix.E2BIG, "maps: map parameters too large")
	ErrNoMemory     = errno.New(unix.ENOMEM, "maps: cannot allocate map memory")
	ErrNoSpace      = errno.New(unix.ENOSPC, "maps: batch buffer too small for a bucket")
	ErrBatchEnd     = errno.New(unix.ENOENT, "maps: no more elements")
	ErrNotSupported = errno.New(ENOTSUPP, "maps: operation not supported by this map type")
	ErrOpNotSupp    = errno.New(unix.EOPNOTSUPP, "maps: operation not supported on this map type")
	ErrClosed       = errno.New(unix.EBADF, "maps: map is closed")
	ErrCorrupt      = errno.New(unix.EUCLEAN, "maps: region is not a consistent map")
)

// ENOTSUPP is the kernel-internal errno 524 that bpf(2) nevertheless returns
// for operations a map type lacks (batch delete on an array, lookup-and-delete
// on an array). golang.org/x/sys does not define it.
const ENOTSUPP = unix.Errno(524)

// Validate checks s against the kernel's map_create rules for its type,
// for the default pool's CPU count, and returns nil or the error New would
// return: ErrInvalid (EINVAL) for unknown types, flags, contradictory flag
// pairs, sizes the type does not allow, bad names; ErrTooBig (E2BIG) where
// the kernel says E2BIG; ErrNotSupported (ENOTSUPP) for an LRU map without
// preallocation; ErrNoMemory (ENOMEM) above MaxRegionSize.
func (s Spec) Validate() error {
	_, err := s.layout(defaultNCPU())
	return err
}

// MemoryUsage returns the bytes a map made from s occupies and charges to its
// owner's quota (the size of its flat region), or the error Validate returns.
// Callers charge the quota with it before New.
func (s Spec) MemoryUsage() (uint64, error) {
	l, err := s.layout(defaultNCPU())
	return l.Size, err
}

// PerCPU reports whether s's values exist once per CPU (PERCPU_ARRAY,
// PERCPU_HASH, LRU_PERCPU_HASH).
func (s Spec) PerCPU() bool {
	return s.Type == TypePercpuArray || s.Type == TypePercpuHash || s.Type == TypeLRUPercpuHash
}

// SyscallValueSize is the size of a value as lookup, update and the batch
// commands exchange it: ValueSize, or for per-CPU maps one value per
// possible CPU, each rounded up to 8 bytes, as the kernel's syscall side.
// Queues, stacks and bloom filters exchange ValueSize bytes; types with
// key size 0 still take a zero-length key.
func (s Spec) SyscallValueSize() int {
	if s.PerCPU() {
		return int(roundUp8(uint64(s.ValueSize))) * defaultNCPU()
	}
	return int(s.ValueSize)
}

func validName(n string) bool {
	if len(n) >= NameLen {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// accessOK is the kernel's bpf_map_flags_access_ok.
func accessOK(f uint32) bool {
	return f&(FlagRdonly|FlagWronly) != FlagRdonly|FlagWronly &&
		f&(FlagRdonlyProg|FlagWronlyProg) != FlagRdonlyProg|FlagWronlyProg
}

const accessMask = FlagRdonly | FlagWronly | FlagRdonlyProg | FlagWronlyProg

func roundUp8(n uint64) uint64 { return (n + 7) &^ 7 }

// implemented lists the types New can create.
var implemented = map[uint32]bool{
	TypeHash: true, TypeArray: true, TypeProgArray: true,
	TypePercpuHash: true, TypePercpuArray: true,
	TypeLRUHash: true, TypeLRUPercpuHash: true,
	TypeQueue: true, TypeStack: true, TypeBloomFilter: true,
	TypeLPMTrie: true, TypeRingbuf: true, TypePerfEventArray: true,
	TypeArrayOfMaps: true, TypeHashOfMaps: true,
	TypeDevmap: true, TypeDevmapHash: true, TypeCPUMap: true, TypeXSKMap: true,
}

// check applies the kernel's map_alloc_check rules for s's type.
func (s Spec) check(ncpu int) error {
	if !validName(s.Name) {
		return ErrInvalid
	}
	if s.MapExtra != 0 && s.Type != TypeBloomFilter {
		return ErrInvalid
	}
	if s.Flags&FlagNumaNode != 0 && s.NumaNode != 0 {
		// bpfd reports a single node, 0, like a non-NUMA machine.
		return ErrInvalid
	}
	if err := s.checkInner(); err != nil {
		return err
	}
	numa := s.Flags&FlagNumaNode != 0
	switch s.Type {
	case TypeHash, TypePercpuHash, TypeLRUHash, TypeLRUPercpuHash, TypeHashOfMaps:
		percpu := s.Type == TypePercpuHash || s.Type == TypeLRUPercpuHash
		lru := s.Type == TypeLRUHash || s.Type == TypeLRUPercpuHash
		const mask = FlagNoPrealloc | FlagNoCommonLRU | FlagNumaNode | accessMask | FlagZeroSeed
		if s.Flags&^mask != 0 || !accessOK(s.Flags) {
			return ErrInvalid
		}
		if s.Type == TypeHashOfMaps && s.ValueSize != 4 {
			// fd_htab_map_alloc_check: unlike the fd arrays, program
			// access flags are accepted.
			return ErrInvalid
		}
		if !lru && s.Flags&FlagNoCommonLRU != 0 {
			return ErrInvalid
		}
		if lru && s.Flags&FlagNoPrealloc != 0 {
			return ErrNotSupported
		}
		if numa && (percpu || s.Flags&FlagNoCommonLRU != 0) {
			return ErrInvalid
		}
		if s.MaxEntries == 0 || s.KeySize == 0 || s.ValueSize == 0 {
			return ErrInvalid
		}
		if uint64(s.KeySize)+uint64(s.ValueSize) >= kmallocMax-htabElemSize {
			return ErrTooBig
		}
		if percpu && roundUp8(uint64(s.ValueSize)) > pcpuMinUnitSize {
			return ErrTooBig
		}
		if s.maxEntries(ncpu) > maxHashEntries {
			return ErrTooBig
		}
	case TypeArray, TypePercpuArray, TypeProgArray, TypePerfEventArray, TypeArrayOfMaps:
		const mask = FlagNumaNode | FlagMmapable | accessMask | FlagPreserveElems | FlagInnerMap
		fd := s.Type != TypeArray && s.Type != TypePercpuArray
		if fd && (s.ValueSize != 4 || s.Flags&(FlagRdonlyProg|FlagWronlyProg) != 0) {
			return ErrInvalid
		}
		if s.MaxEntries == 0 || s.KeySize != 4 || s.ValueSize == 0 || s.Flags&^mask != 0 ||
			!accessOK(s.Flags) || (s.Type == TypePercpuArray && numa) {
			return ErrInvalid
		}
		if s.Type != TypeArray && s.Flags&(FlagMmapable|FlagInnerMap) != 0 {
			return ErrInvalid
		}
		if s.Type != TypePerfEventArray && s.Flags&FlagPreserveElems != 0 {
			return ErrInvalid
		}
		if s.ValueSize > maxArrayValue {
			return ErrTooBig
		}
		if s.Type == TypePercpuArray && roundUp8(uint64(s.ValueSize)) > pcpuMinUnitSize {
			return ErrTooBig
		}
	case TypeQueue, TypeStack:
		if s.MaxEntries == 0 || s.KeySize != 0 || s.ValueSize == 0 ||
			s.Flags&^(FlagNumaNode|accessMask) != 0 || !accessOK(s.Flags) {
			return ErrInvalid
		}
		if s.ValueSize > maxQueueValue {
			return ErrTooBig
		}
	case TypeLPMTrie:
		if s.MaxEntries == 0 || s.Flags&FlagNoPrealloc == 0 || s.Flags&^(FlagNoPrealloc|FlagNumaNode|accessMask) != 0 ||
			!accessOK(s.Flags) || s.KeySize < 4+1 || s.KeySize > 4+lpmDataMax ||
			s.ValueSize < 1 || s.ValueSize > kmallocMax-lpmDataMax-lpmNodeSize {
			return ErrInvalid
		}
	case TypeRingbuf:
		if s.Flags&^FlagNumaNode != 0 {
			return ErrInvalid
		}
		if s.KeySize != 0 || s.ValueSize != 0 || s.MaxEntries == 0 || s.MaxEntries&(s.MaxEntries-1) != 0 || s.MaxEntries%4096 != 0 {
			return ErrInvalid
		}
	case TypeDevmap, TypeDevmapHash, TypeCPUMap, TypeXSKMap:
		return s.checkRedirect()
	case TypeBloomFilter:
		if s.KeySize != 0 || s.ValueSize == 0 || s.MaxEntries == 0 ||
			s.Flags&^(FlagNumaNode|FlagZeroSeed|accessMask) != 0 || !accessOK(s.Flags) || s.MapExtra&^0xf != 0 {
			return ErrInvalid
		}
	default:
		return ErrInvalid
	}
	return nil
}

// maxEntries is the max_entries the kernel records: an LRU map with one
// list per CPU rounds it to a multiple of the CPU count.
func (s Spec) maxEntries(ncpu int) uint32 {
	if (s.Type == TypeLRUHash || s.Type == TypeLRUPercpuHash) && s.Flags&FlagNoCommonLRU != 0 {
		n := uint64(ncpu)
		m := (uint64(s.MaxEntries) + n - 1) / n * n
		if m > 1<<32-1 {
			m = uint64(s.MaxEntries) / n * n
		}
		return uint32(m)
	}
	return s.MaxEntries
}

// layout checks s and returns the geometry of its region for ncpu slots.
func (s Spec) layout(ncpu int) (mapview.Layout, error) {
	if err := s.check(ncpu); err != nil {
		return mapview.Layout{}, err
	}
	if !implemented[s.Type] {
		return mapview.Layout{}, ErrInvalid
	}
	if err := s.checkSpinLock(); err != nil {
		return mapview.Layout{}, err
	}
	l, err := mapview.Geometry(s.Type, s.KeySize, s.ValueSize, s.maxEntries(ncpu), s.Flags, s.MapExtra, ncpu)
	if err != nil {
		return l, ErrNoMemory
	}
	return l, nil
}

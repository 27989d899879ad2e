package maps

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
)

// Map types, kernel numbering (enum bpf_map_type).
const (
	TypeHash      uint32 = 1 // BPF_MAP_TYPE_HASH
	TypeArray     uint32 = 2 // BPF_MAP_TYPE_ARRAY
	TypeProgArray uint32 = 3 // BPF_MAP_TYPE_PROG_ARRAY
)

// Create flags, kernel numbering (BPF_F_* in include/uapi/linux/bpf.h).
const (
	FlagNoPrealloc uint32 = 1 << 0 // BPF_F_NO_PREALLOC: hash only
	FlagRdonly     uint32 = 1 << 3 // BPF_F_RDONLY: syscall side may only read
	FlagWronly     uint32 = 1 << 4 // BPF_F_WRONLY: syscall side may only write
	FlagRdonlyProg uint32 = 1 << 7 // BPF_F_RDONLY_PROG: programs may only read
	FlagWronlyProg uint32 = 1 << 8 // BPF_F_WRONLY_PROG: programs may only write
)

// Update flags, kernel numbering. BPF_F_LOCK is recognised only to be
// refused: bpfd maps have no spin locks, and the kernel answers EINVAL for
// BPF_F_LOCK on a map without one.
const (
	UpdateAny     uint64 = 0      // BPF_ANY: create or replace
	UpdateNoExist uint64 = 1      // BPF_NOEXIST: create only
	UpdateExist   uint64 = 2      // BPF_EXIST: replace only
	UpdateLock    uint64 = 1 << 2 // BPF_F_LOCK: always EINVAL here
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
)

// MaxRegionSize is the largest flat region New will create (16 GiB). A spec
// needing more fails with ErrNoMemory, as the kernel's allocation would.
// Per-uid quotas (package quota) normally refuse much earlier.
const MaxRegionSize = 16 << 30

// Spec describes a map, in the kernel's bpf_attr terms. It is plain data:
// nothing is allocated until New.
type Spec struct {
	Type       uint32 // TypeHash, TypeArray or TypeProgArray
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Flags      uint32 // Flag* bits
	Name       string // at most NameLen-1 bytes of [A-Za-z0-9_.]
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
	ErrClosed       = errno.New(unix.EBADF, "maps: map is closed")
)

// ENOTSUPP is the kernel-internal errno 524 that bpf(2) nevertheless returns
// for operations a map type lacks (batch delete on an array, lookup-and-delete
// on an array). golang.org/x/sys does not define it.
const ENOTSUPP = unix.Errno(524)

// Validate checks s against the kernel's map_create rules for its type and
// returns nil or the error New would return: ErrInvalid (EINVAL) for unknown
// types, flags, contradictory flag pairs, zero sizes, array key size other
// than 4, bad names; ErrTooBig (E2BIG) where the kernel says E2BIG;
// ErrNoMemory (ENOMEM) above MaxRegionSize.
func (s Spec) Validate() error {
	_, err := s.layout()
	return err
}

// MemoryUsage returns the bytes a map made from s occupies and charges to its
// owner's quota (the size of its flat region), or the error Validate returns.
// Callers charge the quota with it before New.
func (s Spec) MemoryUsage() (uint64, error) {
	l, err := s.layout()
	return l.size, err
}

// layout describes the flat region of a map.
type layout struct {
	size     uint64 // region bytes, page aligned
	nBuckets uint32 // hash: bucket count (power of two)
	entOff   uint64 // hash: offset of entry 0
	entSize  uint64 // hash: bytes per entry; array: bytes per value slot
	keyOff   uint64 // hash: key offset within an entry
	valOff   uint64 // hash: value offset within an entry
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

func pageRound(n uint64) uint64 {
	const pg = 4096
	return (n + pg - 1) &^ (pg - 1)
}

func (s Spec) layout() (layout, error) {
	var l layout
	if !validName(s.Name) {
		return l, ErrInvalid
	}
	switch s.Type {
	case TypeHash:
		if s.Flags&^(FlagNoPrealloc|accessMask) != 0 || !accessOK(s.Flags) {
			return l, ErrInvalid
		}
		if s.MaxEntries == 0 || s.KeySize == 0 || s.ValueSize == 0 {
			return l, ErrInvalid
		}
		if uint64(s.KeySize)+uint64(s.ValueSize) >= kmallocMax-htabElemSize {
			return l, ErrTooBig
		}
		if s.MaxEntries > maxHashEntries {
			return l, ErrTooBig
		}
		nb := uint32(1)
		for nb < s.MaxEntries {
			nb <<= 1
		}
		l.nBuckets = nb
		l.keyOff = 8 // next u32, hash u32
		l.valOff = l.keyOff + roundUp8(uint64(s.KeySize))
		l.entSize = l.valOff + roundUp8(uint64(s.ValueSize))
		l.entOff = roundUp8(uint64(nb) * 4)
		l.size = l.entOff + l.entSize*uint64(s.MaxEntries)
	case TypeArray, TypeProgArray:
		if s.Flags&^accessMask != 0 || !accessOK(s.Flags) {
			return l, ErrInvalid
		}
		if s.Type == TypeProgArray && (s.ValueSize != 4 || s.Flags&(FlagRdonlyProg|FlagWronlyProg) != 0) {
			return l, ErrInvalid
		}
		if s.MaxEntries == 0 || s.KeySize != 4 || s.ValueSize == 0 {
			return l, ErrInvalid
		}
		if s.ValueSize > maxArrayValue {
			return l, ErrTooBig
		}
		l.entSize = roundUp8(uint64(s.ValueSize))
		l.size = l.entSize * uint64(s.MaxEntries)
	default:
		return l, ErrInvalid
	}
	if l.size > MaxRegionSize {
		return l, ErrNoMemory
	}
	l.size = pageRound(l.size)
	return l, nil
}

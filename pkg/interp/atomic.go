package interp

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Atomic operations on region memory. When the address is naturally aligned
// they use sync/atomic, so they are atomic with respect to other VMs sharing
// a static region; a misaligned address (which the kernel verifier would
// refuse) gets a plain read-modify-write, still confined to the region.

const (
	aAdd = iota
	aOr
	aAnd
	aXor
	aXchg
)

// rmw32 applies op with v to the 4 bytes of b and returns the old value.
func rmw32(b []byte, op int, v uint32) uint32 {
	b = b[:4]
	if uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		p := (*uint32)(unsafe.Pointer(&b[0]))
		switch op {
		case aAdd:
			return atomic.AddUint32(p, v) - v
		case aOr:
			return atomic.OrUint32(p, v)
		case aAnd:
			return atomic.AndUint32(p, v)
		case aXchg:
			return atomic.SwapUint32(p, v)
		}
		for {
			old := atomic.LoadUint32(p)
			if atomic.CompareAndSwapUint32(p, old, old^v) {
				return old
			}
		}
	}
	old := binary.LittleEndian.Uint32(b)
	binary.LittleEndian.PutUint32(b, apply[uint32](op, uint64(old), uint64(v)))
	return old
}

// rmw64 is rmw32 for 8 bytes.
func rmw64(b []byte, op int, v uint64) uint64 {
	b = b[:8]
	if uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		p := (*uint64)(unsafe.Pointer(&b[0]))
		switch op {
		case aAdd:
			return atomic.AddUint64(p, v) - v
		case aOr:
			return atomic.OrUint64(p, v)
		case aAnd:
			return atomic.AndUint64(p, v)
		case aXchg:
			return atomic.SwapUint64(p, v)
		}
		for {
			old := atomic.LoadUint64(p)
			if atomic.CompareAndSwapUint64(p, old, old^v) {
				return old
			}
		}
	}
	old := binary.LittleEndian.Uint64(b)
	binary.LittleEndian.PutUint64(b, apply[uint64](op, old, v))
	return old
}

func apply[T uint32 | uint64](op int, old, v uint64) T {
	switch op {
	case aAdd:
		return T(old + v)
	case aOr:
		return T(old | v)
	case aAnd:
		return T(old & v)
	case aXor:
		return T(old ^ v)
	}
	return T(v) // aXchg
}

// cmpxchg32 stores v into b if it holds want, and returns the old value.
func cmpxchg32(b []byte, want, v uint32) uint32 {
	b = b[:4]
	if uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		p := (*uint32)(unsafe.Pointer(&b[0]))
		for {
			old := atomic.LoadUint32(p)
			if old != want || atomic.CompareAndSwapUint32(p, old, v) {
				return old
			}
		}
	}
	old := binary.LittleEndian.Uint32(b)
	if old == want {
		binary.LittleEndian.PutUint32(b, v)
	}
	return old
}

// cmpxchg64 is cmpxchg32 for 8 bytes.
func cmpxchg64(b []byte, want, v uint64) uint64 {
	b = b[:8]
	if uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		p := (*uint64)(unsafe.Pointer(&b[0]))
		for {
			old := atomic.LoadUint64(p)
			if old != want || atomic.CompareAndSwapUint64(p, old, v) {
				return old
			}
		}
	}
	old := binary.LittleEndian.Uint64(b)
	if old == want {
		binary.LittleEndian.PutUint64(b, v)
	}
	return old
}

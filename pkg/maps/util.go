package maps

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// mapviewPtr returns a pointer to mem[off] for atomic access to a word of
// a region (regions are page aligned and words naturally aligned).
func mapviewPtr(mem []byte, off uint64) unsafe.Pointer { return unsafe.Pointer(&mem[off]) }

// seqLock takes a sequence counter as a writer: even → odd. Readers that
// see it odd, or changed across their read, retry (package mapview).
func seqLock(p *uint32) {
	for i := 0; ; i++ {
		s := atomic.LoadUint32(p)
		if s&1 == 0 && atomic.CompareAndSwapUint32(p, s, s+1) {
			return
		}
		if i >= 16 {
			runtime.Gosched()
		}
	}
}

// seqUnlock releases a sequence counter taken with seqLock: odd → even.
func seqUnlock(p *uint32) { atomic.AddUint32(p, 1) }

// spinLock and spinUnlock are a plain 0/1 lock word in a region.
func spinLock(p *uint32) {
	for i := 0; !atomic.CompareAndSwapUint32(p, 0, 1); i++ {
		if i >= 16 {
			runtime.Gosched()
		}
	}
}

func spinUnlock(p *uint32) { atomic.StoreUint32(p, 0) }

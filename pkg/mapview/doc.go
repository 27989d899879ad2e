// Package mapview is the format of bpfd's map storage and its lock-free
// reader: what a client that mapped a map's region (pkg/client's Map.Mmap,
// through the MAP_STORAGE command) reads, and what the daemon (pkg/maps)
// writes. It imports nothing of bpfd's, so a client links it without the
// daemon.
//
// # Region
//
// A region is one memfd or file, a whole number of 4 KiB pages. Its first
// page starts with the header (little-endian, offsets Off*):
//
//	0   magic "BPFDMAP\0"       40  map_extra u64
//	8   version u32 (1)         48  name [16]
//	12  header size u32 (4096)  64  region size u64
//	16  map type u32            72  hash seed u64
//	20  key size u32            80  frozen u32 (0/1)
//	24  value size u32          84  retired u32 (0/1)
//	28  max entries u32         88  generation u32
//	32  map flags u32           92  spin lock offset+1 u32 (0: none)
//	36  CPU count u32           128 per-type state (hash: bump u32)
//	                            512 data (OffData)
//
// Everything else is derived from (type, key size, value size, max
// entries, flags, CPU count) by Geometry: a reader recomputes the layout
// and checks that its size is the region's instead of trusting offsets.
//
// Array family (array, per-CPU array, prog array, array of maps, devmap,
// cpumap, perf event array, xskmap): one sequence counter (u32) per
// element at SeqOff, then the values at ValuesOff, element i at
// ValuesOff + i*ElemSize; ElemSize is the value size rounded up to 8,
// times the CPU count for a per-CPU array (CPU c's value at
// c*ValStride within the element, which is also the kernel's syscall
// layout of a per-CPU value). For fd arrays the value is an object id,
// 0 meaning empty.
//
// Hash family (hash, per-CPU hash, LRU hash and its per-CPU form, hash of
// maps, devmap hash): NBuckets = roundup_pow_of_two(max entries) buckets
// of 8 bytes at BucketOff, each [sequence u32][first entry u32]; entries of
// EntSize bytes at EntOff, entry e (1-based; 0 ends a chain) at
// EntOff + (e-1)*EntSize: [next u32][hash u32][LRU node, LRU maps only,
// 16 bytes][key padded to 8 at KeyOff][value(s) at ValOff]. A key is in
// bucket Hash(seed, key) & (NBuckets-1) (Hash documents the function);
// chains are newest first.
//
// # Reading without locks
//
// Writers hold a sequence counter (a hash bucket's, an array element's)
// odd while they change what it covers and make it even again after; an
// entry is published by one aligned 32-bit store of its index once it is
// complete. A reader loads the counter (retrying while odd), reads, and
// loads it again: equal means the read was consistent. View does this for
// lookups and iteration, with bounded retries (MaxRetries) and bounds
// checks on every index it follows, so garbage or concurrently changing
// bytes can make it give up (ErrRetry) but never crash it or keep it
// looping; a client then asks the daemon. Program stores into values
// (and stores through writable mappings of BPF_F_MMAPABLE arrays) do not
// take the counters, as in the kernel, where a program writes a value
// while user space copies it.
//
// A value holding a struct bpf_spin_lock (header word 92) is returned with
// the lock's 4 bytes zeroed, as the kernel's plain lookup does; a lookup
// with BPF_F_LOCK (copied under the lock) must go to the daemon.
//
// # Retired regions
//
// When a map's storage moves (revocation of a descriptor whose holder may
// have mapped it, destroy, freezing an array mapped writable), the daemon
// copies the region to a fresh one and sets Retired in the old one, which
// nobody writes again: every mapping of it is a frozen snapshot of the
// moment of the move. View refuses to read a retired region
// (ErrRetired); a client re-asks the daemon for the current storage, which
// a revoked descriptor no longer gets.
package mapview

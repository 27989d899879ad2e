// Package client is bpfd's Go client library: it connects to the daemon,
// creates and imports maps, and reads and writes them with the kernel's
// bpf(2) semantics and errnos.
//
// # Connections, handles, descriptors
//
// A Conn is one SOCK_SEQPACKET connection to the daemon (Dial). Every
// object this process uses is reached through a descriptor: a real file
// descriptor (the client end of a socketpair the daemon made) that carries
// an access mode, ModeRead and/or ModeWrite. A Map pairs a descriptor with
// the handle naming it on its Conn. NewMap returns a read-write Map;
// Reopen makes a new descriptor with a subset of the mode; FD exposes the
// descriptor, which SendDescriptors passes to another process, where
// ReceiveDescriptors and Conn.ImportMap turn it back into a Map with the
// same (or less) access. The daemon frees an object once no descriptor
// (anywhere, including in flight), handle or other reference remains.
//
// Ownership: a Map owns its descriptor and closes it in Close. ImportMap
// duplicates the fd it is given; the caller keeps (and must close) its own.
// ReceiveDescriptors returns fds the caller owns. SendDescriptors leaves
// ownership with the caller.
//
// # Errors
//
// Failures the daemon reports are the kernel's errnos, returned as the
// sentinels of this package (ErrKeyNotExist, ErrPermission, ...), each
// matching both itself and its errno with errors.Is:
//
//	errors.Is(err, client.ErrKeyNotExist) // true
//	errors.Is(err, unix.ENOENT)           // true
//
// Arguments rejected before anything is sent (wrong key length, bad mode)
// match ErrInvalid. Using a closed Map or Conn, or one whose connection was
// lost, gives errors matching ErrClosed. Errors on the element paths are
// pre-built: a failed Lookup does not allocate.
//
// # Keys and values
//
// Map.Lookup, Update, Delete, NextKey, LookupAndDelete and
// MapIterator.Next take keys and values as any, with cilium/ebpf's
// marshalling rules, so code written for ebpf.Map moves over unchanged:
//
//	var v struct{ Packets, Bytes uint64 }
//	err := m.Lookup(uint32(8), &v)           // fixed-size types, host byte order
//	err = m.Update(uint32(8), v, client.UpdateAny)
//	var perCPU []uint64
//	err = counts.Lookup(uint32(0), &perCPU)  // per-CPU maps: one value per CPU
//
// A []byte is the bytes themselves: the zero-allocation path (for per-CPU
// maps, ValueBufferSize bytes in the kernel's layout). Types implementing
// encoding.BinaryMarshaler/BinaryUnmarshaler encode themselves (the methods
// run on a copy of the value and must not keep it); strings, *string and
// *[]byte, unsafe.Pointer, and a *Program as a program array's value work
// as in cilium/ebpf. A value that does not encode to the map's key or value
// size is ErrInvalid, naming the type and both sizes. Off the []byte path
// each call copies its arguments (a few small allocations; see
// BenchmarkTypedValues).
//
// # Concurrency and pipelining
//
// Conn and Map are safe for concurrent use. Requests from concurrent
// goroutines are pipelined on the connection: each is sent at once and the
// daemon answers in order; one of the waiting goroutines reads replies and
// hands each to the goroutine that asked, so no background goroutine runs.
// Element operations on []byte keys and values allocate nothing in steady
// state; Lookup copies the value straight into the caller's buffer.
//
// # Large payloads
//
// Requests larger than one message (big batch updates) travel in a sealed
// memfd (F_SEAL_WRITE|SHRINK|GROW|SEAL), so the daemon reads bytes this
// process can no longer change; large replies (big batch lookups) arrive
// the same way and are read straight into the caller's buffers.
package client

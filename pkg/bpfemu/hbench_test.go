package bpfemu

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// BenchmarkHandler splits an emulated lookup's and update's cost: the
// supervisor's handler without seccomp (attr and key read from the task,
// kcmp of the fd, the value from the mapped storage written back; for an
// update, key and value read and bpfd's answer) against its baseline, one
// bare round trip to bpfd on the same connection, and the task-memory and
// kcmp system calls the handler makes, measured alone.
func BenchmarkHandler(b *testing.B) {
	h := newHarness(b)
	a := make([]byte, 128)
	put32(a, mcMapType, mapHash)
	put32(a, mcKeySize, 4)
	put32(a, mcValueSize, 8)
	put32(a, mcMaxEntries, 4)
	fd, e := h.bpf(cmdMapCreate, a, 128)
	if e != 0 {
		b.Fatal(e)
	}
	defer h.closeInstalled()
	key, val := make([]byte, 4), make([]byte, 8)
	el := make([]byte, 32)
	put32(el, elMapFD, uint32(fd))
	put64(el, elKey, addr(key))
	put64(el, elValue, addr(val))
	if _, e := h.bpf(cmdMapUpdateElem, el, 32); e != 0 {
		b.Fatal(e)
	}
	b.Run("lookup", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, e := h.bpf(cmdMapLookupElem, el, 32); e != 0 {
				b.Fatal(e)
			}
		}
	})
	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, e := h.bpf(cmdMapUpdateElem, el, 32); e != 0 {
				b.Fatal(e)
			}
		}
	})
	b.Run("bpfd-round-trip", func(b *testing.B) {
		b.ReportAllocs()
		var ab [wire.HelloAttrSize]byte
		attr := (&wire.HelloAttr{Version: wire.Version}).Append(ab[:0])
		for i := 0; i < b.N; i++ {
			if _, err := h.s.conn.do(wire.CmdHello, attr, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("process_vm_readv", func(b *testing.B) {
		b.ReportAllocs()
		local := unix.Iovec{Base: &key[0]}
		local.SetLen(len(key))
		remote := unix.RemoteIovec{Base: uintptr(addr(key)), Len: len(key)}
		for i := 0; i < b.N; i++ {
			processVM(unix.SYS_PROCESS_VM_READV, os.Getpid(), &local, &remote)
		}
	})
	b.Run("kcmp", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sameFile(os.Getpid(), os.Getpid(), fd, fd)
		}
	})
	b.Run("getppid", func(b *testing.B) { // the cheapest system call, for scale
		for i := 0; i < b.N; i++ {
			unix.Getppid()
		}
	})
}

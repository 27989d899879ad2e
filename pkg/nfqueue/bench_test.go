package nfqueue

import (
	"context"
	"testing"
	"unsafe"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// BenchmarkReceive compares the two ways of reading a datagram through
// the runtime poller that mdlayher/socket offers, on a Unix datagram pair
// (the wrapper's cost, not the kernel's): ReadFunc (the library's
// building block, which allocates per call) and SyscallConn().Read with a
// callback built once (what Queue.Receive does). Parse of a queued-packet
// message and a verdict are included in both.
func BenchmarkReceive(b *testing.B) {
	pkt := AppendPacket(nil, samplePacket())
	for _, mode := range []string{"ReadFunc", "RawConn"} {
		b.Run(mode, func(b *testing.B) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fds[1])
			c, err := socket.New(fds[0], "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			rc, _ := c.SyscallConn()
			buf := make([]byte, 4096)
			iov := unix.Iovec{Base: &buf[0]}
			iov.SetLen(len(buf))
			var h mmsghdr
			h.hdr.Iov = &iov
			h.hdr.SetIovlen(1)
			var n int
			recv := func(fd uintptr) bool {
				r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&h)), 1, unix.MSG_DONTWAIT, 0, 0)
				if e == unix.EAGAIN {
					return false
				}
				n = int(r)
				return true
			}
			recvErr := func(fd int) error {
				if !recv(uintptr(fd)) {
					return unix.EAGAIN
				}
				return nil
			}
			ctx := context.Background()
			out := make([]byte, 0, 4096)
			var p Packet
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				unix.Write(fds[1], pkt)
				if mode == "ReadFunc" {
					err = c.ReadFunc(ctx, "recvmmsg", recvErr)
				} else {
					err = rc.Read(recv)
				}
				if err != nil || n != 1 {
					b.Fatal(err, n)
				}
				msg, _, _ := Split(buf[:h.len])
				Parse(msg, &p)
				out = AppendVerdict(out[:0], p.Queue, p.ID, Accept, nil)
			}
		})
	}
}

// Package sealed makes the sealed memfds in which bpfd and its clients hand
// each other bytes too large for one message (requests, replies, an
// upgrade's image, emulated /proc files): once sealed, nobody can change
// what the reader reads.
package sealed

import (
	"os"

	"golang.org/x/sys/unix"
)

// Seals are the seals Memfd adds: no write, shrink or grow, and no
// further change of the seals.
const Seals = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// Memfd returns a new memfd named name (close-on-exec; the caller owns
// and closes it) holding the concatenation of data, sealed with Seals. Its
// errors are *os.SyscallError. Safe for concurrent use.
func Memfd(name string, data ...[]byte) (int, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	off := int64(0)
	for _, d := range data {
		for len(d) > 0 {
			n, err := unix.Pwrite(fd, d, off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				unix.Close(fd)
				return -1, os.NewSyscallError("pwrite", err)
			}
			d, off = d[n:], off+int64(n)
		}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, Seals); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

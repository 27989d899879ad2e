package client

import (
	"os"

	"golang.org/x/sys/unix"
)

// preadFull fills b from fd at off; a short file is errProtocol (the daemon
// said the memfd held more than it does).
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return errProtocol
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

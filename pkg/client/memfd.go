package client

import (
	"os"

	"golang.org/x/sys/unix"
)

// memfdSeals are the seals a request memfd carries, so the daemon reads
// bytes this process can no longer change.
const memfdSeals = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// sealedMemfd returns a new memfd (close-on-exec, owned by the caller)
// holding the concatenation of data, sealed against every change.
func sealedMemfd(data ...[]byte) (int, error) {
	fd, err := unix.MemfdCreate("bpfd-request", unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	off := int64(0)
	for _, d := range data {
		if err := pwriteFull(fd, d, off); err != nil {
			unix.Close(fd)
			return -1, err
		}
		off += int64(len(d))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, memfdSeals); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("pwrite", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

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

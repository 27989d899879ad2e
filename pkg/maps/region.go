package maps

import (
	"os"

	"golang.org/x/sys/unix"
)

// region is a map's flat storage: a memfd mapped MAP_SHARED read-write into
// the daemon. After mapping, the memfd is sealed against shrinking, growing,
// new writable mappings and further seals, so the descriptor can be handed to
// clients for read-only mmap without letting them resize the daemon's memory
// (which would SIGBUS it) or write the bytes.
type region struct {
	fd  int
	mem []byte
}

func newRegion(name string, size uint64, populate bool) (*region, error) {
	fd, err := unix.MemfdCreate("bpfd-map:"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("ftruncate", err)
	}
	flags := unix.MAP_SHARED
	if populate {
		flags |= unix.MAP_POPULATE
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		unix.Close(fd)
		if err == unix.ENOMEM {
			return nil, ErrNoMemory
		}
		return nil, os.NewSyscallError("mmap", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl(F_ADD_SEALS)", err)
	}
	return &region{fd: fd, mem: mem}, nil
}

// close unmaps and closes; callers guarantee nothing uses mem afterwards.
func (r *region) close() error {
	err := unix.Munmap(r.mem)
	r.mem = nil
	if cerr := unix.Close(r.fd); err == nil && cerr != nil {
		err = cerr
	}
	r.fd = -1
	if err != nil {
		return os.NewSyscallError("munmap/close", err)
	}
	return nil
}

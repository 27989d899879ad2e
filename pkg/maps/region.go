package maps

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// region is a map's flat storage: a memfd, or a file under Config.Dir,
// mapped MAP_SHARED read-write into the daemon at an address that never
// changes while the map lives (a move replaces the backing under the same
// address with MAP_FIXED). The backing is sealed against resizing (memfd)
// and, unless the map hands out writable mappings, against new writable
// mappings and write(2); readers get a separate O_RDONLY descriptor of
// the same inode (readOnlyFD).
//
// fd and path are guarded by the owning map's move lock; mem is immutable.
type region struct {
	fd       int    // O_RDWR backing
	path     string // file backend: the file's path ("" for a memfd)
	dir      string // file backend directory
	name     string
	mem      []byte // the mapping: size bytes, then the alias if any
	size     uint64 // the backing's size
	populate bool
	writable bool // no F_SEAL_FUTURE_WRITE: writable client mappings allowed
	// aliasOff and aliasLen: the backing's [aliasOff, aliasOff+aliasLen)
	// is mapped a second time right after the first size bytes (ring
	// buffers: records that wrap are contiguous). aliasLen 0: none.
	aliasOff, aliasLen uint64
}

// newBacking creates an unmapped backing of size bytes: a memfd, or a new
// file in dir. It returns the fd and (file backend) the path.
func newBacking(dir, name string, size uint64) (int, string, error) {
	if dir == "" {
		fd, err := unix.MemfdCreate("bpfd-map:"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return -1, "", os.NewSyscallError("memfd_create", err)
		}
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			unix.Close(fd)
			return -1, "", os.NewSyscallError("ftruncate", err)
		}
		return fd, "", nil
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	path := filepath.Join(dir, "map-"+hex.EncodeToString(rnd[:])+".region")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	// Allocate every page now: a file on a full tmpfs must fail here
	// (ENOMEM, like the kernel's preallocation), never with SIGBUS at a
	// later store. Only a filesystem that cannot preallocate gets a
	// sparse file.
	if err := unix.Fallocate(fd, 0, 0, int64(size)); err != nil {
		if !errNoFallocate(err) {
			unix.Close(fd)
			os.Remove(path)
			if err == unix.ENOSPC || err == unix.ENOMEM || err == unix.EDQUOT {
				return -1, "", ErrNoMemory
			}
			return -1, "", os.NewSyscallError("fallocate", err)
		}
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return -1, "", os.NewSyscallError("ftruncate", err)
		}
	}
	return fd, path, nil
}

// seal applies the seals a memfd backing gets (nothing for files).
func (r *region) seal(fd int) error {
	if r.path != "" {
		return nil
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW
	if !r.writable {
		seals |= unix.F_SEAL_FUTURE_WRITE
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return os.NewSyscallError("fcntl(F_ADD_SEALS)", err)
	}
	return nil
}

func mapErr(err error) error {
	if err == unix.ENOMEM {
		return ErrNoMemory
	}
	return os.NewSyscallError("mmap", err)
}

// newRegion creates and maps a zero-filled region of size bytes.
// populate prefaults every page (kernel-like preallocation: ENOMEM now
// rather than SIGBUS later); writable leaves the backing open to
// writable client mappings (MMAPABLE arrays).
func newRegion(dir, name string, size uint64, populate, writable bool) (*region, error) {
	return newRegionAlias(dir, name, size, populate, writable, 0, 0)
}

// newRegionAlias is newRegion with [aliasOff, aliasOff+aliasLen) of the
// backing mapped again after it (see region.aliasLen).
func newRegionAlias(dir, name string, size uint64, populate, writable bool, aliasOff, aliasLen uint64) (*region, error) {
	fd, path, err := newBacking(dir, name, size)
	if err != nil {
		return nil, err
	}
	r := &region{fd: fd, path: path, dir: dir, name: name, populate: populate, writable: writable,
		size: size, aliasOff: aliasOff, aliasLen: aliasLen}
	mem, err := r.mapAll(fd)
	if err != nil {
		r.discard(fd, path)
		return nil, err
	}
	r.mem = mem
	if err := r.seal(fd); err != nil {
		unix.Munmap(mem)
		r.discard(fd, path)
		return nil, err
	}
	return r, nil
}

// openRegion maps an existing backing (restore): fd is taken over by the
// region (closed on failure). path names the file for the file backend.
func openRegion(fd int, path string) (*region, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fstat", err)
	}
	if st.Size < mapview.HeaderSize || st.Size > MaxRegionSize || st.Size%mapview.PageSize != 0 {
		unix.Close(fd)
		return nil, ErrCorrupt
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, mapErr(err)
	}
	r := &region{fd: fd, path: path, mem: mem, size: uint64(st.Size)}
	if path != "" {
		r.dir = filepath.Dir(path)
	}
	if path != "" {
		r.writable = true // files carry no seals; Open narrows by type
	} else if seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err == nil {
		r.writable = seals&unix.F_SEAL_FUTURE_WRITE == 0
	}
	return r, nil
}

// mapAll maps backing fd as the region (size bytes, then the alias),
// at a new address, or over r.mem when it is set (a move).
func (r *region) mapAll(fd int) ([]byte, error) {
	flags := unix.MAP_SHARED
	if r.populate {
		flags |= unix.MAP_POPULATE
	}
	total := r.size + r.aliasLen
	mem := r.mem
	if mem == nil {
		// Reserve the whole range first, so the alias lands right after.
		res, err := unix.Mmap(-1, 0, int(total), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, mapErr(err)
		}
		mem = res
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	fail := func(e error) ([]byte, error) {
		if r.mem == nil {
			unix.Munmap(mem)
		}
		return nil, mapErr(e)
	}
	if _, _, e := unix.Syscall6(unix.SYS_MMAP, base, uintptr(r.size), unix.PROT_READ|unix.PROT_WRITE,
		uintptr(flags|unix.MAP_FIXED), uintptr(fd), 0); e != 0 {
		return fail(e)
	}
	if r.aliasLen > 0 {
		if _, _, e := unix.Syscall6(unix.SYS_MMAP, base+uintptr(r.size), uintptr(r.aliasLen), unix.PROT_READ|unix.PROT_WRITE,
			uintptr(flags|unix.MAP_FIXED), uintptr(fd), uintptr(r.aliasOff)); e != 0 {
			return fail(e)
		}
	}
	return mem, nil
}

func (r *region) discard(fd int, path string) {
	unix.Close(fd)
	if path != "" {
		os.Remove(path)
	}
}

// readOnlyFD returns a new O_RDONLY descriptor of the backing, owned by
// the caller: mappings made through it can never be made writable
// (mprotect refuses, the file description has no write access).
func (r *region) readOnlyFD() (int, error) {
	p := r.path
	if p == "" {
		p = "/proc/self/fd/" + strconv.Itoa(r.fd)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return fd, nil
}

// writableFD returns a new O_RDWR descriptor of the backing, owned by the
// caller, for a writable client mapping (MMAPABLE arrays only; the
// backing is not sealed against writes).
func (r *region) writableFD() (int, error) {
	fd, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	return fd, nil
}

func (r *region) u32(off uint64) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }

// move gives the region a fresh backing with the same contents, mapped at
// the same address, and leaves the old backing as a retired snapshot
// (header Retired = 1) for whoever still maps it. The caller guarantees
// that nothing writes the region meanwhile (percpu.Pool.Quiesce plus the
// map's own writers stopped). On failure the region is unchanged.
func (r *region) move() error {
	size := r.size
	fd, path, err := newBacking(r.dir, r.name, size)
	if err != nil {
		return err
	}
	// Copy everything (the old header still says live), then retire the
	// old backing and map the new one over the same address.
	if n, err := unix.Pwrite(fd, r.mem[:size], 0); err != nil || uint64(n) != size {
		r.discard(fd, path)
		if err == nil {
			err = unix.EIO
		}
		return fmt.Errorf("maps: copying region for a move: %w", os.NewSyscallError("pwrite", err))
	}
	atomic.StoreUint32(r.u32(mapview.OffRetired), 1)
	if _, err := r.mapAll(fd); err != nil {
		// The first mapping may have been replaced and not the alias;
		// put the old backing back whole.
		r.mapAll(r.fd)
		atomic.StoreUint32(r.u32(mapview.OffRetired), 0)
		r.discard(fd, path)
		return err
	}
	// From here the daemon's mapping is the new backing.
	atomic.StoreUint32(r.u32(mapview.OffRetired), 0)
	atomic.AddUint32(r.u32(mapview.OffGeneration), 1)
	if err := r.seal(fd); err != nil {
		// The new backing works; it is only less sealed. Keep it.
		_ = err
	}
	old, oldPath := r.fd, r.path
	if oldPath != "" {
		// The new file takes the old one's name; the old inode lives on
		// in the mappings that hold it.
		if err := os.Rename(path, oldPath); err != nil {
			r.fd, r.path = fd, path
			unix.Close(old)
			os.Remove(oldPath)
			return nil
		}
		path = oldPath
	}
	r.fd, r.path = fd, path
	unix.Close(old)
	return nil
}

// close unmaps and closes; callers guarantee nothing uses mem afterwards.
// The file backend's file is removed.
func (r *region) close() error {
	err := unix.Munmap(r.mem)
	r.mem = nil
	if cerr := unix.Close(r.fd); err == nil && cerr != nil {
		err = cerr
	}
	r.fd = -1
	if r.path != "" {
		os.Remove(r.path)
	}
	if err != nil {
		return os.NewSyscallError("munmap/close", err)
	}
	return nil
}

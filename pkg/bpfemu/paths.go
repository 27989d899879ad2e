package bpfemu

import (
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// atFDCWD is AT_FDCWD as the 32-bit int the kernel reads.
const atFDCWD = -100

// inFS reports whether the absolute clean path abs names something under
// the bpffs prefix or the daemon's pin root, and returns its path relative
// to the pin root ("" for the root itself).
func (s *Supervisor) inFS(abs string) (rel string, ok bool) {
	if s.pinRoot == "" {
		return "", false
	}
	for _, base := range [2]string{s.bpffs, s.pinRoot} {
		switch {
		case abs == base:
			return "", true
		case base == "/":
			return abs[1:], true
		case strings.HasPrefix(abs, base+"/"):
			return abs[len(base)+1:], true
		}
	}
	return "", false
}

// hostPath returns the pin root path standing for rel.
func (s *Supervisor) hostPath(rel string) string {
	if rel == "" {
		return s.pinRoot
	}
	return s.pinRoot + "/" + rel
}

// absPath makes p (a path the task passed, relative to its dirfd) absolute
// and lexically clean, reading the task's cwd or dirfd from /proc. Errors:
// ENOENT for an empty path, EBADF for a dirfd the task does not have,
// errTaskGone.
func (c *call) absPath(dirfd int32, p string) (string, error) {
	if p == "" {
		return "", unix.ENOENT
	}
	if p[0] == '/' {
		return filepath.Clean(p), nil
	}
	link := "/proc/" + strconv.Itoa(c.tid) + "/cwd"
	if dirfd != atFDCWD {
		if dirfd < 0 {
			return "", unix.EBADF
		}
		link = "/proc/" + strconv.Itoa(c.tid) + "/fd/" + strconv.Itoa(int(dirfd))
	}
	var buf [pathMax]byte
	n, err := unix.Readlink(link, buf[:])
	if verr := c.s.ans.valid(c.id); verr != nil {
		return "", verr
	}
	if err != nil {
		if dirfd != atFDCWD {
			return "", unix.EBADF
		}
		return "", unix.ENOENT
	}
	base := string(buf[:n])
	if !strings.HasPrefix(base, "/") {
		return "", unix.ENOTDIR // a pipe, socket, anon inode: not a directory
	}
	return filepath.Join(base, p), nil
}

// openBeneath opens rel under the pin root as the supervisor (the same
// user as the task, so the kernel checks the task's permissions), never
// leaving the root or following symlinks.
func (s *Supervisor) openBeneath(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS}
	for {
		fd, err := unix.Openat2(s.rootFD, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

package bpfemu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/internal/sealed"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// fsSyscalls are the calls the supervisor answers besides bpf(2): the ones
// tools make around it (see the package doc).
func fsSyscalls() []uint32 {
	return []uint32{unix.SYS_BPF,
		unix.SYS_STATFS, unix.SYS_FSTATFS,
		unix.SYS_OPEN, unix.SYS_OPENAT, unix.SYS_OPENAT2,
		unix.SYS_STAT, unix.SYS_LSTAT, unix.SYS_NEWFSTATAT, unix.SYS_STATX,
		unix.SYS_READLINK, unix.SYS_READLINKAT,
		unix.SYS_ACCESS, unix.SYS_FACCESSAT, unix.SYS_FACCESSAT2,
		unix.SYS_MKDIR, unix.SYS_MKDIRAT, unix.SYS_RMDIR,
		unix.SYS_UNLINK, unix.SYS_UNLINKAT,
		unix.SYS_RENAME, unix.SYS_RENAMEAT, unix.SYS_RENAMEAT2,
		unix.SYS_GETXATTR, unix.SYS_LGETXATTR, unix.SYS_LISTXATTR, unix.SYS_LLISTXATTR,
		unix.SYS_PRLIMIT64, unix.SYS_SETRLIMIT, unix.SYS_GETRLIMIT,
	}
}

var syscallNames = map[uint64]string{
	unix.SYS_STATFS: "statfs", unix.SYS_FSTATFS: "fstatfs", unix.SYS_OPEN: "open",
	unix.SYS_OPENAT: "openat", unix.SYS_OPENAT2: "openat2", unix.SYS_STAT: "stat",
	unix.SYS_LSTAT: "lstat", unix.SYS_NEWFSTATAT: "newfstatat", unix.SYS_STATX: "statx",
	unix.SYS_READLINK: "readlink", unix.SYS_READLINKAT: "readlinkat", unix.SYS_ACCESS: "access",
	unix.SYS_FACCESSAT: "faccessat", unix.SYS_FACCESSAT2: "faccessat2", unix.SYS_MKDIR: "mkdir",
	unix.SYS_MKDIRAT: "mkdirat", unix.SYS_RMDIR: "rmdir", unix.SYS_UNLINK: "unlink",
	unix.SYS_UNLINKAT: "unlinkat", unix.SYS_RENAME: "rename", unix.SYS_RENAMEAT: "renameat",
	unix.SYS_RENAMEAT2: "renameat2", unix.SYS_GETXATTR: "getxattr", unix.SYS_LGETXATTR: "lgetxattr",
	unix.SYS_LISTXATTR: "listxattr", unix.SYS_LLISTXATTR: "llistxattr", unix.SYS_PRLIMIT64: "prlimit64",
	unix.SYS_SETRLIMIT: "setrlimit", unix.SYS_GETRLIMIT: "getrlimit",
}

func syscallName(nr int32) string {
	if s, ok := syscallNames[uint64(nr)]; ok {
		return s
	}
	return "syscall(" + strconv.Itoa(int(nr)) + ")"
}

// fs answers the file system calls. Only absolute paths are looked at
// (relative ones resolve in the kernel as they are, against directories
// the process really has); a path under the bpffs prefix is served from
// the pin root, a /proc/.../fd/N or fdinfo/N naming a bpfd descriptor of
// the task is described as the kernel describes a bpf object, everything
// else runs in the kernel unchanged.
func (c *call) fs() (int64, error) {
	args := &c.notif.Data.Args
	switch c.notif.Data.NR {
	case unix.SYS_OPEN:
		return c.open(atFDCWD, args[0], args[1], args[2])
	case unix.SYS_OPENAT:
		return c.open(int32(args[0]), args[1], args[2], args[3])
	case unix.SYS_OPENAT2:
		return c.openat2(int32(args[0]), args[1], args[2], args[3])
	case unix.SYS_STAT:
		return c.stat(args[0], args[1], 0)
	case unix.SYS_LSTAT:
		return c.stat(args[0], args[1], unix.AT_SYMLINK_NOFOLLOW)
	case unix.SYS_NEWFSTATAT:
		return c.stat(args[1], args[2], int(args[3]))
	case unix.SYS_STATX:
		return c.statx(args[1], int(args[2]), uint32(args[3]), args[4])
	case unix.SYS_STATFS:
		return c.statfs(args[0], args[1])
	case unix.SYS_FSTATFS:
		return c.fstatfs(int32(args[0]), args[1])
	case unix.SYS_READLINK:
		return c.readlink(args[0], args[1], args[2])
	case unix.SYS_READLINKAT:
		return c.readlink(args[1], args[2], args[3])
	case unix.SYS_ACCESS:
		return c.access(args[0], uint32(args[1]), 0)
	case unix.SYS_FACCESSAT:
		return c.access(args[1], uint32(args[2]), 0)
	case unix.SYS_FACCESSAT2:
		return c.access(args[1], uint32(args[2]), int(args[3]))
	case unix.SYS_MKDIR:
		return c.mkdir(args[0], uint32(args[1]))
	case unix.SYS_MKDIRAT:
		return c.mkdir(args[1], uint32(args[2]))
	case unix.SYS_RMDIR:
		return c.unlink(args[0], unix.AT_REMOVEDIR)
	case unix.SYS_UNLINK:
		return c.unlink(args[0], 0)
	case unix.SYS_UNLINKAT:
		return c.unlink(args[1], int(args[2]))
	case unix.SYS_RENAME:
		return c.rename(args[0], args[1], 0)
	case unix.SYS_RENAMEAT:
		return c.rename(args[1], args[3], 0)
	case unix.SYS_RENAMEAT2:
		return c.rename(args[1], args[3], uint(args[4]))
	case unix.SYS_GETXATTR, unix.SYS_LGETXATTR:
		return c.getxattr(args[0], args[1], args[2], args[3], c.notif.Data.NR == unix.SYS_LGETXATTR)
	case unix.SYS_LISTXATTR, unix.SYS_LLISTXATTR:
		return c.listxattr(args[0], args[1], args[2], c.notif.Data.NR == unix.SYS_LLISTXATTR)
	case unix.SYS_PRLIMIT64:
		return c.rlimit(int32(args[0]), args[1], args[2], args[3])
	case unix.SYS_SETRLIMIT:
		return c.rlimit(0, args[0], args[1], 0)
	case unix.SYS_GETRLIMIT:
		return c.rlimit(0, args[0], 0, args[1])
	}
	return 0, errContinue
}

// fsPath reads the path argument at addr and, if it is absolute and under
// the bpffs prefix, returns it relative to the pin root. Anything else,
// including a path that cannot be read (the kernel will say EFAULT
// itself), is errContinue.
func (c *call) fsPath(addr uint64) (rel, abs string, err error) {
	p, err := c.readString(addr, pathMax)
	if err == errTaskGone {
		return "", "", err
	}
	if err != nil || len(p) == 0 || p[0] != '/' {
		return "", "", errContinue
	}
	abs = filepath.Clean(p)
	rel, ok := c.s.inFS(abs)
	if !ok {
		return "", abs, errContinue
	}
	return rel, abs, nil
}

func (c *call) open(dirfd int32, upath, flags, mode uint64) (int64, error) {
	rel, abs, err := c.fsPath(upath)
	if err == errContinue && abs != "" {
		return c.openProc(abs, int(flags))
	}
	if err != nil {
		return 0, err
	}
	return c.openIn(rel, int(flags), uint32(mode))
}

// openHowSize is sizeof(struct open_how).
const openHowSize = 24

func (c *call) openat2(dirfd int32, upath, uhow, size uint64) (int64, error) {
	rel, abs, err := c.fsPath(upath)
	if err == errContinue && abs != "" {
		if size < openHowSize {
			return 0, errContinue
		}
		var how [openHowSize]byte
		if c.read(uhow, how[:]) != nil {
			return 0, errContinue
		}
		return c.openProc(abs, int(*(*uint64)(unsafe.Pointer(&how[0]))))
	}
	if err != nil {
		return 0, err
	}
	if size < openHowSize {
		return 0, unix.EINVAL
	}
	var how unix.OpenHow
	b := (*[openHowSize]byte)(unsafe.Pointer(&how))
	if err := c.read(uhow, b[:]); err != nil {
		return 0, err
	}
	if how.Resolve != 0 {
		// RESOLVE_* flags restrict path walks the supervisor does not
		// reproduce: refuse rather than ignore them.
		return 0, unix.EXDEV
	}
	return c.openIn(rel, int(how.Flags), uint32(how.Mode))
}

// openIn opens rel under the pin root for the task and installs the fd.
// The bpf filesystem creates no regular files: O_CREAT of a missing name
// is EACCES, O_TMPFILE EOPNOTSUPP.
func (c *call) openIn(rel string, flags int, mode uint32) (int64, error) {
	s := c.s
	if flags&unix.O_TMPFILE == unix.O_TMPFILE {
		return 0, unix.EOPNOTSUPP
	}
	if flags&unix.O_CREAT != 0 {
		var st unix.Stat_t
		err := unix.Fstatat(s.rootFD, relOrDot(rel), &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil && flags&unix.O_EXCL != 0:
			return 0, unix.EEXIST
		case err == unix.ENOENT:
			if perr := unix.Fstatat(s.rootFD, relOrDot(dirOfRel(rel)), &st, 0); perr != nil {
				return 0, perr
			}
			return 0, unix.EACCES
		case err != nil:
			return 0, err
		}
		flags &^= unix.O_CREAT | unix.O_EXCL
	}
	cloexec := flags&unix.O_CLOEXEC != 0
	fd, err := s.openBeneath(rel, flags&^unix.O_CLOEXEC|unix.O_NOCTTY, mode)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	nfd, err := s.ans.respondFD(c.id, fd, cloexec)
	if err != nil {
		return 0, err
	}
	return int64(nfd), errAnswered
}

func relOrDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

func dirOfRel(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

// procFD parses /proc/{self,thread-self,PID}[/task/TID]/{fd,fdinfo}/N.
func procFD(abs string) (pid string, info bool, fd int32, ok bool) {
	rest, found := strings.CutPrefix(abs, "/proc/")
	if !found {
		return "", false, 0, false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 3:
	case len(parts) == 5 && parts[1] == "task":
		pid = parts[2] // the task's own view
		parts = []string{parts[2], parts[3], parts[4]}
	default:
		return "", false, 0, false
	}
	if pid == "" {
		pid = parts[0]
	}
	switch parts[1] {
	case "fd":
	case "fdinfo":
		info = true
	default:
		return "", false, 0, false
	}
	n, err := strconv.ParseInt(parts[2], 10, 32)
	if err != nil || n < 0 {
		return "", false, 0, false
	}
	return pid, info, int32(n), true
}

// ownFD resolves a /proc path naming one of the calling task's fds to the
// bpfd object behind it; errContinue if the path names another process or
// the fd is not a bpfd descriptor.
func (c *call) ownFD(abs string, wantInfo bool) (*object, int32, error) {
	pid, info, fd, ok := procFD(abs)
	if !ok || info != wantInfo {
		return nil, 0, errContinue
	}
	switch pid {
	case "self", "thread-self", strconv.Itoa(c.tid):
	default:
		tgid, err := c.tgid()
		if err != nil {
			return nil, 0, err
		}
		if pid != strconv.Itoa(tgid) {
			return nil, 0, errContinue
		}
	}
	o, err := c.resolve(fd)
	if err != nil {
		if err == errTaskGone {
			return nil, 0, err
		}
		return nil, 0, errContinue
	}
	return o, fd, nil
}

// objLink is what readlink of /proc/PID/fd/N says for a kernel bpf object
// (anon_inode_getfd names; links are "bpf_link").
func objLink(t wire.ObjType) string {
	switch t {
	case wire.ObjMap:
		return "anon_inode:bpf-map"
	case wire.ObjProg:
		return "anon_inode:bpf-prog"
	}
	return "anon_inode:bpf_link"
}

// openProc answers the open of /proc/.../fdinfo/N for a bpfd descriptor
// with the kernel's text for a bpf object, and of the task's mount table
// (/proc/self/mounts, mountinfo) with the bpffs prefix listed as a bpf
// file system (bpftool -f walks the bpf mounts it lists).
func (c *call) openProc(abs string, flags int) (int64, error) {
	if which, ok := procMounts(abs); ok {
		text, err := c.mounts(which)
		if err != nil {
			return 0, err
		}
		return c.installText(text, flags)
	}
	o, fd, err := c.ownFD(abs, true)
	if err != nil {
		return 0, err
	}
	defer c.s.put(o)
	text, err := c.fdinfo(o, fd)
	if err != nil {
		return 0, err
	}
	return c.installText(text, flags)
}

// installText installs a read-only fd of a sealed memfd holding text in
// the task, as the open of a /proc file.
func (c *call) installText(text []byte, flags int) (int64, error) {
	if flags&(unix.O_WRONLY|unix.O_RDWR) != 0 {
		return 0, unix.EACCES
	}
	mfd, err := sealed.Memfd("proc", text)
	if err != nil {
		return 0, unix.ENOMEM
	}
	defer unix.Close(mfd)
	// A read-only reopen, so the task gets an O_RDONLY fd at offset 0.
	ro, err := unix.Open("/proc/self/fd/"+strconv.Itoa(mfd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, unix.ENOMEM
	}
	defer unix.Close(ro)
	nfd, err := c.s.ans.respondFD(c.id, ro, flags&unix.O_CLOEXEC != 0)
	if err != nil {
		return 0, err
	}
	return int64(nfd), errAnswered
}

// procMounts recognises the task's own mount table files.
func procMounts(abs string) (which string, ok bool) {
	rest, found := strings.CutPrefix(abs, "/proc/")
	if !found {
		return "", false
	}
	if rest == "mounts" {
		return "mounts", true
	}
	who, which, found := strings.Cut(rest, "/")
	if !found || (which != "mounts" && which != "mountinfo") {
		return "", false
	}
	if who != "self" && who != "thread-self" {
		return "", false
	}
	return which, true
}

// mounts returns the task's mount table with the bpffs prefix added as a
// bpf file system, unless a bpf file system is mounted there already.
func (c *call) mounts(which string) ([]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.tid) + "/" + which)
	if verr := c.s.ans.valid(c.id); verr != nil {
		return nil, verr
	}
	if err != nil {
		return nil, unix.ENOENT
	}
	prefix := c.s.bpffs
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case which == "mounts" && len(f) >= 3 && f[1] == prefix && f[2] == "bpf":
			return b, nil
		case which == "mountinfo" && len(f) >= 9 && f[4] == prefix && slices.Contains(f[6:], "bpf"):
			return b, nil
		}
	}
	if which == "mounts" {
		return append(b, "bpf "+prefix+" bpf rw,relatime,mode=700 0 0\n"...), nil
	}
	return append(b, "9999 1 0:99 / "+prefix+" rw,relatime shared:99 - bpf bpf rw,mode=700\n"...), nil
}

// fdinfo builds the kernel's /proc/PID/fdinfo text of a bpf map or program
// (bpf_map_show_fdinfo, bpf_prog_show_fdinfo) after the generic lines of
// the descriptor itself (pos, flags, mnt_id, ino).
func (c *call) fdinfo(o *object, fd int32) ([]byte, error) {
	var b bytes.Buffer
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(c.tid) + "/fdinfo/" + strconv.Itoa(int(fd)))
	if verr := c.s.ans.valid(c.id); verr != nil {
		return nil, verr
	}
	if err == nil {
		b.Write(raw)
	}
	info := o.info
	var ab [wire.HandleAttrSize]byte
	var out [wire.ObjInfoSize + 64]byte
	if r, err := c.do(wire.CmdObjGetInfo, handleAttr(ab[:], o.handle, 0), nil, out[:]); err == nil {
		closeAll(r.FDs)
		if r.Errno == 0 {
			info.Parse(r.Data)
		}
	}
	switch info.ObjType {
	case wire.ObjMap:
		fmt.Fprintf(&b, "map_type:\t%d\nkey_size:\t%d\nvalue_size:\t%d\nmax_entries:\t%d\nmap_flags:\t%#x\nmap_extra:\t%#x\nmemlock:\t%d\nmap_id:\t%d\nfrozen:\t%d\n",
			info.Type, info.KeySize, info.ValueSize, info.MaxEntries, info.Flags&^(bpfFRdonly|bpfFWronly),
			0, info.MemoryUsage, info.ID, info.Frozen)
	case wire.ObjProg:
		rec, _ := c.record(wire.ObjProg, info.ID)
		fmt.Fprintf(&b, "prog_type:\t%d\nprog_jited:\t0\nprog_tag:\t%x\nmemlock:\t%d\nprog_id:\t%d\nrun_time_ns:\t%d\nrun_cnt:\t%d\nrecursion_misses:\t0\nverified_insns:\t%d\n",
			info.Type, info.Tag[:], info.MemoryUsage, info.ID, rec.RunTimeNs, rec.RunCount, info.InsnCount)
	}
	return b.Bytes(), nil
}

// readlink answers readlink of /proc/.../fd/N for a bpfd descriptor of
// the task (the kernel's "anon_inode:bpf-map", which bpftool checks) and
// of paths under the prefix (pins are never symlinks here: EINVAL, or the
// lookup's errno).
func (c *call) readlink(upath, ubuf, size uint64) (int64, error) {
	rel, abs, err := c.fsPath(upath)
	var text string
	switch {
	case err == errContinue && abs != "":
		o, _, err := c.ownFD(abs, false)
		if err != nil {
			return 0, err
		}
		text = objLink(o.info.ObjType)
		c.s.put(o)
	case err != nil:
		return 0, err
	default:
		var buf [pathMax]byte
		n, err := unix.Readlinkat(c.s.rootFD, relOrDot(rel), buf[:])
		if err != nil {
			return 0, err
		}
		text = string(buf[:n])
	}
	if int32(size) <= 0 {
		return 0, unix.EINVAL
	}
	n := min(len(text), int(int32(size)))
	if err := c.write(ubuf, []byte(text[:n])); err != nil {
		return 0, err
	}
	return int64(n), nil
}

func (c *call) stat(upath, ubuf uint64, flags int) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	if flags&^(unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH|unix.AT_NO_AUTOMOUNT) != 0 {
		return 0, unix.EINVAL
	}
	var st unix.Stat_t
	if err := unix.Fstatat(c.s.rootFD, relOrDot(rel), &st, flags&unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, err
	}
	return 0, c.write(ubuf, unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)))
}

func (c *call) statx(upath uint64, flags int, mask uint32, ubuf uint64) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	var st unix.Statx_t
	if err := unix.Statx(c.s.rootFD, relOrDot(rel), flags&^unix.AT_EMPTY_PATH, int(mask), &st); err != nil {
		return 0, err
	}
	return 0, c.write(ubuf, unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)))
}

// bpffsStatfs makes st look like the bpf filesystem's simple_statfs:
// BPF_FS_MAGIC, page-sized blocks, no block or inode counts.
func bpffsStatfs(st *unix.Statfs_t) {
	st.Type = unix.BPF_FS_MAGIC
	st.Bsize, st.Frsize = 4096, 4096
	st.Blocks, st.Bfree, st.Bavail, st.Files, st.Ffree = 0, 0, 0, 0, 0
	st.Namelen = 255
}

func (c *call) statfs(upath, ubuf uint64) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.s.hostPath(rel), &st); err != nil {
		return 0, err
	}
	bpffsStatfs(&st)
	return 0, c.write(ubuf, unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)))
}

// fstatfs answers for fds of files and directories under the pin root
// (opened through the prefix): bpffs. Other fds run in the kernel.
func (c *call) fstatfs(fd int32, ubuf uint64) (int64, error) {
	if fd < 0 || c.s.pinRoot == "" {
		return 0, errContinue
	}
	var buf [pathMax]byte
	n, err := unix.Readlink("/proc/"+strconv.Itoa(c.tid)+"/fd/"+strconv.Itoa(int(fd)), buf[:])
	if verr := c.s.ans.valid(c.id); verr != nil {
		return 0, verr
	}
	if err != nil || n == 0 || buf[0] != '/' {
		return 0, errContinue
	}
	p := string(buf[:n])
	if p != c.s.pinRoot && !strings.HasPrefix(p, c.s.pinRoot+"/") {
		return 0, errContinue
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.s.pinRoot, &st); err != nil {
		return 0, err
	}
	bpffsStatfs(&st)
	return 0, c.write(ubuf, unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)))
}

func (c *call) access(upath uint64, mode uint32, flags int) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	if err := unix.Faccessat2(c.s.rootFD, relOrDot(rel), mode, flags); err != nil {
		return 0, err
	}
	return 0, nil
}

// mkdir makes a directory under the pin root with bpfd's PIN_MKDIR (the
// pin root may be writable by the daemon only), with the task's umask
// applied as mkdir(2) does.
func (c *call) mkdir(upath uint64, mode uint32) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	if rel == "" {
		return 0, unix.EEXIST
	}
	umask, err := c.umask()
	if err != nil {
		return 0, err
	}
	at := wire.PinMkdirAttr{FileMode: mode & 0o777 &^ umask, PathLen: uint32(len(rel))}
	var ab [wire.PinMkdirAttrSize]byte
	return c.simple(wire.CmdPinMkdir, at.Append(ab[:0]), []byte(rel))
}

func (c *call) unlink(upath uint64, flags int) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	if rel == "" {
		return 0, unix.EBUSY // the bpffs root is a mount point
	}
	if err := unix.Unlinkat(c.s.rootFD, rel, flags); err != nil {
		return 0, err
	}
	return 0, nil
}

// getxattr answers (l)getxattr of paths under the prefix (ls -l asks for
// ACLs and security labels of every name it lists) from the pin root.
func (c *call) getxattr(upath, uname, uvalue, size uint64, nofollow bool) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	name, err := c.readString(uname, 256)
	if err != nil {
		if err == unix.ENAMETOOLONG {
			return 0, unix.ERANGE
		}
		return 0, err
	}
	buf := make([]byte, min(size, 1<<16))
	p := c.s.hostPath(rel)
	var n int
	if nofollow {
		n, err = unix.Lgetxattr(p, name, buf)
	} else {
		n, err = unix.Getxattr(p, name, buf)
	}
	if err != nil {
		return 0, err
	}
	if size > 0 {
		if err := c.write(uvalue, buf[:n]); err != nil {
			return 0, err
		}
	}
	return int64(n), nil
}

// listxattr answers (l)listxattr of paths under the prefix.
func (c *call) listxattr(upath, ulist, size uint64, nofollow bool) (int64, error) {
	rel, _, err := c.fsPath(upath)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, min(size, 1<<16))
	p := c.s.hostPath(rel)
	var n int
	if nofollow {
		n, err = unix.Llistxattr(p, buf)
	} else {
		n, err = unix.Listxattr(p, buf)
	}
	if err != nil {
		return 0, err
	}
	if size > 0 {
		if err := c.write(ulist, buf[:n]); err != nil {
			return 0, err
		}
	}
	return int64(n), nil
}

// rename moves names inside the pin root (pins keep their inode, so they
// stay pins); between the prefix and elsewhere it is EXDEV, as between
// two file systems.
func (c *call) rename(uold, unew uint64, flags uint) (int64, error) {
	relOld, _, errOld := c.fsPath(uold)
	if errOld == errTaskGone {
		return 0, errOld
	}
	relNew, _, errNew := c.fsPath(unew)
	if errNew == errTaskGone {
		return 0, errNew
	}
	switch {
	case errOld == errContinue && errNew == errContinue:
		return 0, errContinue
	case errOld != nil || errNew != nil:
		return 0, unix.EXDEV
	case relOld == "" || relNew == "":
		return 0, unix.EBUSY
	}
	if err := unix.Renameat2(c.s.rootFD, relOld, c.s.rootFD, relNew, flags); err != nil {
		return 0, err
	}
	return 0, nil
}

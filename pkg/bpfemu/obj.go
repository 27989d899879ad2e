package bpfemu

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// objPin answers BPF_OBJ_PIN. A path under the bpffs prefix (or the
// daemon's pin root) becomes a pin of bpfd, made as the calling user with
// the kernel's bpffs file mode (0600 less the task's umask); any other
// path is not on a bpf filesystem: EEXIST or the lookup's errno if the
// kernel would have failed earlier, EPERM otherwise, as bpf_obj_pin_user.
func (c *call) objPin(a *bpfAttr) (int64, error) {
	flags := a.u32(obFileFlags)
	if !a.zeroFrom(obEnd) || flags&^bpfFPathFD != 0 {
		return 0, unix.EINVAL
	}
	dirfd := int32(atFDCWD)
	if flags&bpfFPathFD != 0 {
		dirfd = a.s32(obPathFD)
	} else if a.u32(obPathFD) != 0 {
		return 0, unix.EINVAL
	}
	s := c.s
	o, err := c.resolve(int32(a.u32(obBPFFD)))
	if err != nil {
		return 0, err
	}
	defer s.put(o)
	p, err := c.readString(a.u64(obPathname), pathMax)
	if err != nil {
		return 0, err
	}
	abs, err := c.absPath(dirfd, p)
	if err != nil {
		return 0, err
	}
	rel, ok := s.inFS(abs)
	if !ok {
		return 0, notBPFFS(abs)
	}
	if rel == "" {
		return 0, unix.EEXIST
	}
	umask, err := c.umask()
	if err != nil {
		return 0, err
	}
	at := wire.ObjPinAttr{Handle: o.handle, FileMode: 0o600 &^ umask, PathLen: uint32(len(rel))}
	var ab [wire.ObjPinAttrSize]byte
	return c.simple(wire.CmdObjPin, at.Append(ab[:0]), []byte(rel))
}

// notBPFFS is the errno of pinning at abs outside any bpf filesystem:
// user_path_create fails first for an existing name or a missing
// directory; otherwise the directory is not bpffs (EPERM).
func notBPFFS(abs string) error {
	var st unix.Stat_t
	if unix.Lstat(abs, &st) == nil {
		return unix.EEXIST
	}
	if err := unix.Stat(dirOf(abs), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	return unix.EPERM
}

func dirOf(abs string) string {
	for i := len(abs) - 1; i > 0; i-- {
		if abs[i] == '/' {
			return abs[:i]
		}
	}
	return "/"
}

// objGet answers BPF_OBJ_GET: the supervisor opens the pin file itself
// with the access file_flags ask for (so the kernel checks the file's
// permissions for this user), presents it to bpfd and installs the new
// descriptor. A path outside the bpffs prefix is EACCES (not a bpf
// object), or the lookup's own errno.
func (c *call) objGet(a *bpfAttr) (int64, error) {
	flags := a.u32(obFileFlags)
	if !a.zeroFrom(obEnd) || a.u32(obBPFFD) != 0 || flags&^(bpfFRdonly|bpfFWronly|bpfFPathFD) != 0 {
		return 0, unix.EINVAL
	}
	dirfd := int32(atFDCWD)
	if flags&bpfFPathFD != 0 {
		dirfd = a.s32(obPathFD)
	} else if a.u32(obPathFD) != 0 {
		return 0, unix.EINVAL
	}
	rd, wr, e := fileMode(flags)
	if e != 0 {
		return 0, e
	}
	s := c.s
	p, err := c.readString(a.u64(obPathname), pathMax)
	if err != nil {
		return 0, err
	}
	abs, err := c.absPath(dirfd, p)
	if err != nil {
		return 0, err
	}
	rel, ok := s.inFS(abs)
	if !ok {
		var st unix.Stat_t
		if err := unix.Stat(abs, &st); err != nil {
			return 0, err
		}
		return 0, unix.EACCES
	}
	oflags := unix.O_RDWR
	switch {
	case rd && !wr:
		oflags = unix.O_RDONLY
	case wr && !rd:
		oflags = unix.O_WRONLY
	}
	pin, err := s.openBeneath(rel, oflags|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		switch err {
		case unix.EISDIR, unix.ELOOP, unix.EXDEV:
			return 0, unix.EACCES
		}
		return 0, err
	}
	defer unix.Close(pin)
	var ab [wire.ObjGetAttrSize]byte
	attr := (&wire.ObjGetAttr{}).Append(ab[:0])
	var out [wire.ObjInfoSize + 64]byte
	r, err := c.do(wire.CmdObjGet, attr, []int{pin}, out[:])
	if err != nil {
		return 0, err
	}
	if r.Errno != 0 {
		closeAll(r.FDs)
		if r.Errno == unix.EBADF {
			return 0, unix.EACCES // a file or directory that is not a pin
		}
		return 0, r.Errno
	}
	if len(r.FDs) != 1 {
		closeAll(r.FDs)
		s.releaseHandle(uint32(r.Ret))
		return 0, unix.EIO
	}
	return c.install(r.FDs[0], uint32(r.Ret), r.Data, nil)
}

// idKind maps a GET_NEXT_ID/GET_FD_BY_ID command to the object kind.
func idKind(cmd uint64) wire.ObjType {
	switch cmd {
	case cmdProgGetNextID, cmdProgGetFDByID:
		return wire.ObjProg
	case cmdMapGetNextID, cmdMapGetFDByID:
		return wire.ObjMap
	case cmdLinkGetNextID, cmdLinkGetFDByID:
		return wire.ObjLink
	}
	return wire.ObjBTF
}

// listingFresh bounds how stale the object table may be when a process
// lists ids.
const listingFresh = 100 * time.Millisecond

// getNextID answers BPF_{PROG,MAP,BTF,LINK}_GET_NEXT_ID over the objects
// the caller may see and open: those the traced processes hold
// descriptors of (the supervisor's table, collected first so that closed
// ones are gone), and those of the user's objects (as bpfd lists them)
// that have a pin. The kernel lists every object in the system to
// CAP_SYS_ADMIN only; a bpfd client reaches what it holds and what it
// can open.
func (c *call) getNextID(cmd uint64, a *bpfAttr) (int64, error) {
	start := a.u32(idStartID)
	if !a.zeroFrom(idNextEnd) || start >= 1<<31-1 {
		return 0, unix.EINVAL
	}
	s := c.s
	if time.Since(s.lastListing()) > listingFresh {
		s.collect()
		s.listed.Store(time.Now().UnixNano())
	}
	kind := idKind(cmd)
	next := uint32(0)
	consider := func(id uint32) {
		if id > start && (next == 0 || id < next) {
			next = id
		}
	}
	for id := range s.objects(kind) {
		consider(id)
	}
	if kind != 0 {
		for _, r := range c.list(kind, 0) {
			if len(r.Pinned) > 0 {
				consider(r.ID)
			}
		}
	}
	if next == 0 {
		return 0, unix.ENOENT
	}
	return 0, c.writeAttr32(idNextID, next)
}

func (s *Supervisor) lastListing() time.Time { return time.Unix(0, s.listed.Load()) }

// getFDByID answers BPF_{PROG,MAP,BTF,LINK}_GET_FD_BY_ID for the objects
// getNextID lists: a new descriptor with the access asked for, made from
// the traced processes' own descriptor (REOPEN: never more than it
// grants, EPERM otherwise, where the kernel would need CAP_SYS_ADMIN), or
// else through a pin the user may open; ENOENT for other ids.
func (c *call) getFDByID(cmd uint64, a *bpfAttr) (int64, error) {
	end := 4
	if cmd == cmdMapGetFDByID || cmd == cmdBTFGetFDByID {
		end = idFDEnd
	}
	open := a.u32(idOpenFlags)
	if !a.zeroFrom(end) || open&^(bpfFRdonly|bpfFWronly) != 0 {
		return 0, unix.EINVAL
	}
	rd, wr, e := fileMode(open)
	if e != 0 {
		return 0, e
	}
	s := c.s
	kind := idKind(cmd)
	id := a.u32(idStartID)
	o := s.objects(kind)[id]
	if o == nil {
		if kind == 0 || id == 0 {
			return 0, unix.ENOENT
		}
		if kind == wire.ObjBTF {
			return c.btfOfHolder(id)
		}
		return c.openPinned(kind, id, rd, wr)
	}
	mode := o.info.Mode.Data() // REOPEN never passes on the destroy right
	if o.info.ObjType == wire.ObjMap {
		mode = 0
		if rd {
			mode |= wire.ModeRead
		}
		if wr {
			mode |= wire.ModeWrite
		}
		if mode&^o.info.Mode != 0 {
			return 0, unix.EPERM
		}
	}
	var ab [wire.HandleAttrSize]byte
	var out [wire.ObjInfoSize + 64]byte
	r, err := c.do(wire.CmdReopen, handleAttr(ab[:], o.handle, mode), nil, out[:])
	if err != nil {
		return 0, err
	}
	if r.Errno != 0 || len(r.FDs) != 1 {
		closeAll(r.FDs)
		if r.Errno == 0 {
			s.releaseHandle(uint32(r.Ret))
			return 0, unix.EIO
		}
		if r.Errno == unix.EBADF {
			return 0, unix.ENOENT // revoked or destroyed meanwhile
		}
		return 0, r.Errno
	}
	return c.install(r.FDs[0], uint32(r.Ret), r.Data, nil)
}

// enableStats answers BPF_ENABLE_STATS(BPF_STATS_RUN_TIME) with an fd
// whose lifetime bounds the statistics in the kernel. bpfd counts every
// program's runs and run time always (run_cnt and run_time_ns in program
// info and fdinfo), so there is nothing to switch on: the fd (a memfd
// named "bpf-stats") only stands for the request, as on a kernel where
// the statistics are already on (sysctl kernel.bpf_stats_enabled=1).
func (c *call) enableStats(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(esEnd) {
		return 0, unix.EINVAL
	}
	if a.u32(esType) != bpfStatsRunTime {
		return 0, unix.EINVAL
	}
	fd, err := unix.MemfdCreate("bpf-stats", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, unix.ENOMEM
	}
	defer unix.Close(fd)
	nfd, err := c.s.ans.respondFD(c.id, fd, true)
	if err != nil {
		return 0, err
	}
	return int64(nfd), errAnswered
}

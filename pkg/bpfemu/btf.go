package bpfemu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// BTF (BPF_BTF_LOAD and the BTF fields of MAP_CREATE, PROG_LOAD and
// OBJ_GET_INFO_BY_FD) is bpfd's BTF objects (wire.CmdBTFLoad): a BTF fd
// the task holds is a bpfd descriptor of one, maps and programs created
// with it hold it, and their info reports its id.
//
// Differences from the kernel: bpfd parses BTF with cilium/ebpf's reader
// and does not repeat the kernel's per-kind checks (pkg/demux/btf.go), so
// some malformed blobs the kernel refuses load; no BTF log is written
// (log_true_size is 0 on success, the errno's text on failure).
// A program's func_info and line_info are checked for their record sizes
// and read (EINVAL, EFAULT as the kernel's) but not kept: program info
// reports none, and bpftool's dumps show no source lines.

// bpf_func_info and bpf_line_info record bounds (kernel/bpf/verifier.c).
const (
	minFuncInfoRecSize = 8
	minLineInfoRecSize = 16
	maxInfoRecSize     = 252 // MAX_FUNCINFO_REC_SIZE, MAX_LINEINFO_REC_SIZE
)

// btfLoad answers BPF_BTF_LOAD: the blob goes to bpfd, a BTF descriptor
// comes back into the task.
func (c *call) btfLoad(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(blEnd) {
		return 0, unix.EINVAL
	}
	const bpfFTokenFD = 1 << 16
	flags := a.u32(blBTFFlags)
	if flags&^bpfFTokenFD != 0 || flags&bpfFTokenFD != 0 || a.u32(blTokenFD) != 0 {
		return 0, unix.EINVAL // no BPF tokens: bpfd needs no delegation
	}
	size := a.u32(blBTFSize)
	if size > wire.MaxBTFSize {
		return 0, unix.E2BIG
	}
	lg := verifierLog{level: a.u32(blLogLevel), size: a.u32(blLogSize), buf: a.u64(blLogBuf)}
	if !lg.valid() {
		return 0, unix.EINVAL
	}
	blob := make([]byte, size)
	if err := c.read(a.u64(blBTF), blob); err != nil {
		return 0, err
	}
	var ab [wire.BTFLoadAttrSize]byte
	n, err := c.create(wire.CmdBTFLoad, (&wire.BTFLoadAttr{}).Append(ab[:0]), nil, blob)
	if e, ok := err.(unix.Errno); ok && lg.level != 0 {
		// The kernel explains a refusal in the log; bpfd's reason is
		// the errno.
		if lerr := c.writeBTFLog(&lg, []byte("bpfd refused the BTF: "+e.Error()+"\n")); lerr != nil && lerr != unix.ENOSPC {
			return 0, lerr
		}
	} else if err == nil && lg.level != 0 && c.usize >= blLogTrueSize+4 {
		c.writeAttr32(blLogTrueSize, 0)
	}
	return n, err
}

// writeBTFLog is writeLog for BPF_BTF_LOAD's attr.
func (c *call) writeBTFLog(l *verifierLog, text []byte) error {
	return c.writeLogAt(l, text, blLogTrueSize)
}

// btfObject resolves fd to a BTF object (EBADF; EINVAL for another kind
// of descriptor, as the kernel's btf_get_by_fd). The caller puts it.
func (c *call) btfObject(fd uint32) (*object, error) {
	o, err := c.resolve(int32(fd))
	if err != nil {
		return nil, err
	}
	if o.info.ObjType != wire.ObjBTF {
		c.s.put(o)
		return nil, unix.EINVAL
	}
	return o, nil
}

// progBTFInfo checks a PROG_LOAD's func_info and line_info as
// check_btf_info does (a BTF fd is required for either; record sizes
// within bounds and multiples of 4; the records readable) and reads them,
// which bpfd does not keep.
func (c *call) progBTFInfo(a *bpfAttr) error {
	fcnt, lcnt := a.u32(plFuncInfoCnt), a.u32(plLineInfoCnt)
	if fcnt == 0 && lcnt == 0 {
		return nil
	}
	if a.u32(plProgBTFFD) == 0 {
		return unix.EINVAL
	}
	for _, r := range []struct {
		cnt, size, min uint32
		ptr            uint64
	}{
		{fcnt, a.u32(plFuncInfoRecSize), minFuncInfoRecSize, a.u64(plFuncInfo)},
		{lcnt, a.u32(plLineInfoRecSize), minLineInfoRecSize, a.u64(plLineInfo)},
	} {
		if r.cnt == 0 {
			continue
		}
		if r.size < r.min || r.size > maxInfoRecSize || r.size%4 != 0 {
			return unix.EINVAL
		}
		if uint64(r.cnt)*uint64(r.size) > maxTestData {
			return unix.E2BIG
		}
		b := make([]byte, r.cnt*r.size)
		if err := c.read(r.ptr, b); err != nil {
			return err
		}
	}
	return nil
}

// struct bpf_btf_info.
const (
	btfInfoSize = 32
	biBTF       = 0
	biBTFSize   = 8
	biID        = 12
	biName      = 16
	biNameLen   = 24
	biKernelBTF = 28
)

// btfInfo answers OBJ_GET_INFO_BY_FD for a BTF descriptor as
// btf_get_info_by_fd: the raw BTF copied up to the caller's btf_size,
// the full size, the id, and an empty name (user BTF has none).
func (c *call) btfInfo(o *object, uinfo uint64, ulen uint32) (int64, error) {
	n, err := c.infoLen(uinfo, ulen, btfInfoSize)
	if err != nil {
		return 0, err
	}
	var info [btfInfoSize]byte
	if err := c.read(uinfo, info[:n]); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	var ab [wire.HandleAttrSize]byte
	r, err := c.do(wire.CmdBTFGet, (&wire.HandleAttr{Handle: o.handle}).Append(ab[:0]), nil, nil)
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return 0, r.Errno
	}
	raw := r.Data
	if ubtf := le.Uint64(info[biBTF:]); ubtf != 0 || le.Uint32(info[biBTFSize:]) != 0 {
		if err := c.write(ubtf, raw[:min(len(raw), int(le.Uint32(info[biBTFSize:])))]); err != nil {
			return 0, err
		}
	}
	le.PutUint32(info[biBTFSize:], uint32(len(raw)))
	le.PutUint32(info[biID:], o.info.ID)
	le.PutUint32(info[biKernelBTF:], 0)
	uname, unameLen := le.Uint64(info[biName:]), le.Uint32(info[biNameLen:])
	if (uname == 0) != (unameLen == 0) {
		return 0, unix.EINVAL
	}
	le.PutUint32(info[biNameLen:], 0)
	if uname != 0 {
		if err := c.write(uname, []byte{0}); err != nil {
			return 0, err
		}
	}
	if err := c.write(uinfo, info[:n]); err != nil {
		return 0, err
	}
	return 0, c.writeAttr32(inInfoLen, uint32(n))
}

// btfOfHolder answers BTF_GET_FD_BY_ID for an id no traced process holds
// a BTF descriptor of, but that a map or program it may see was created
// with (one the traced processes hold, or one of the user's with a pin
// the user may open): bpfd hands a map's or program's BTF to any holder
// (BTF_GET), and the supervisor loads it as a BTF object of the user's,
// reported under the id asked for. This is how bpftool prints the keys,
// values and source of objects whose loader has exited, as the kernel
// lets root reopen their BTF by id. ENOENT if no such map or program.
func (c *call) btfOfHolder(id uint32) (int64, error) {
	s := c.s
	var handle uint32
	for _, kind := range [...]wire.ObjType{wire.ObjMap, wire.ObjProg} {
		for _, o := range s.objects(kind) {
			if o.info.BTFID == id {
				s.hold(o)
				defer s.put(o)
				handle = o.handle
				break
			}
		}
		if handle != 0 {
			break
		}
	}
	for _, kind := range [...]wire.ObjType{wire.ObjMap, wire.ObjProg} {
		if handle != 0 {
			break
		}
		for _, rec := range c.list(kind, 0) {
			if rec.BTFID != id || len(rec.Pinned) == 0 {
				continue
			}
			if h, fd, _, err := c.openThroughPin(rec, unix.O_RDONLY); err == nil {
				defer unix.Close(fd)
				defer s.releaseHandle(h)
				handle = h
				break
			}
		}
	}
	if handle == 0 {
		return 0, unix.ENOENT
	}
	var ab [wire.HandleAttrSize]byte
	r, err := c.do(wire.CmdBTFGet, (&wire.HandleAttr{Handle: handle}).Append(ab[:0]), nil, nil)
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return 0, unix.ENOENT
	}
	var lb [wire.BTFLoadAttrSize]byte
	return c.create(wire.CmdBTFLoad, (&wire.BTFLoadAttr{}).Append(lb[:0]), func(o *object) { o.info.ID = id }, r.Data)
}

// openThroughPin opens the object of rec through one of its pins under
// the pin root, as the user (the kernel checks the pin file's
// permissions), with open flags oflags: a bpfd handle, a descriptor and
// the object's info from the reply, the caller's to release and close.
// EPERM when no pin lets the user open it so; the daemon's error if the
// request itself fails.
func (c *call) openThroughPin(rec wire.ObjectRecord, oflags int) (uint32, int, []byte, error) {
	s := c.s
	for _, p := range rec.Pinned {
		rel, inFS := s.inFS(p)
		if !inFS {
			continue
		}
		pin, err := s.openBeneath(rel, oflags|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		var ab [wire.ObjGetAttrSize]byte
		var out [wire.ObjInfoSize + 64]byte
		r, err := c.do(wire.CmdObjGet, (&wire.ObjGetAttr{}).Append(ab[:0]), []int{pin}, out[:])
		unix.Close(pin)
		if err != nil {
			return 0, -1, nil, err
		}
		if r.Errno != 0 || len(r.FDs) != 1 {
			closeAll(r.FDs)
			if r.Errno == 0 {
				s.releaseHandle(uint32(r.Ret))
			}
			continue
		}
		return uint32(r.Ret), r.FDs[0], r.Data, nil
	}
	return 0, -1, nil, unix.EPERM
}

package bpfemu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Map types whose syscall-side layout differs from key/value bytes (enum
// bpf_map_type). These are facts of the bpf(2) ABI, not of bpfd: whether
// bpfd implements a type is the daemon's answer to MAP_CREATE.
const (
	mapHash               = 1
	mapArray              = 2
	mapProgArray          = 3
	mapPerCPUHash         = 5
	mapPerCPUArray        = 6
	mapLRUHash            = 9
	mapLRUPerCPUHash      = 10
	mapLPMTrie            = 11
	mapArrayOfMaps        = 12
	mapHashOfMaps         = 13
	mapPerCPUCgroupStore  = 21
	mapQueue              = 22
	mapStack              = 23
	mapBloomFilter        = 30
	mapTypeKnownUpperEdge = 64

	mapFNoPrealloc = 1 // BPF_F_NO_PREALLOC
)

// syscallValueSize is bpf_map_value_size: what a syscall-side value is
// for a map: one 8-byte-aligned slot per possible CPU for per-CPU maps, a
// u32 (an fd in, an id out) for maps of programs and maps.
func (s *Supervisor) syscallValueSize(o *wire.ObjInfo) int {
	switch o.Type {
	case mapPerCPUHash, mapPerCPUArray, mapLRUPerCPUHash, mapPerCPUCgroupStore:
		return (int(o.ValueSize) + 7) &^ 7 * s.ncpu
	case mapProgArray, mapArrayOfMaps, mapHashOfMaps:
		return 4
	}
	return int(o.ValueSize)
}

// batchCursorSize is the size of a batch command's in_batch/out_batch:
// hash maps walk buckets with a u32, the generic walk (arrays) resumes
// after a key.
func batchCursorSize(o *wire.ObjInfo) int {
	switch o.Type {
	case mapHash, mapPerCPUHash, mapLRUHash, mapLRUPerCPUHash, mapHashOfMaps:
		return 4
	}
	return int(o.KeySize)
}

// mapCreate is BPF_MAP_CREATE: the attr goes to bpfd, whose rules and
// errnos are the kernel's map_create; the new descriptor is installed in
// the task.
func (c *call) mapCreate(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(mcEnd) {
		return 0, unix.EINVAL
	}
	flags := a.u32(mcMapFlags)
	const bpfFNumaNode, bpfFMmapable, bpfFTokenFD = 1 << 2, 1 << 10, 1 << 16
	if flags&bpfFTokenFD != 0 || a.u32(mcMapTokenFD) != 0 {
		return 0, unix.EINVAL // no BPF tokens: bpfd needs no delegation
	}
	if a.u32(mcBTFVmlinuxValueID) != 0 || a.u32(mcValueTypeBTFObjFD) != 0 {
		return 0, unix.EINVAL // struct_ops maps: no kernel structs here
	}
	if a.u32(mcBTFKeyTypeID) != 0 && a.u32(mcBTFValueTypeID) == 0 {
		return 0, unix.EINVAL
	}
	if _, _, e := fileMode(flags); e != 0 {
		return 0, e
	}
	if flags&bpfFNumaNode != 0 && a.u32(mcNumaNode) != 0 {
		return 0, unix.EINVAL // one node: only node 0 is online
	}
	if flags&bpfFMmapable != 0 {
		// A bpfd descriptor is a socket: mmap(2) of it cannot map the
		// map's storage into the task, and the supervisor cannot map
		// anything there. Refused as by a kernel before 5.5, so that
		// cilium/ebpf and libbpf keep global data in plain arrays.
		return 0, unix.EINVAL
	}
	// Fields bpfd has no counterpart of yet: refused like a kernel
	// without them.
	if a.u32(mcInnerMapFD) != 0 || a.u32(mcMapIfindex) != 0 || a.u64(mcMapExtra) != 0 ||
		a.u64(mcExclProgHash) != 0 || a.u32(mcExclProgHashSize) != 0 {
		return 0, unix.EINVAL
	}
	w := wire.MapCreateAttr{MapType: a.u32(mcMapType), KeySize: a.u32(mcKeySize),
		ValueSize: a.u32(mcValueSize), MaxEntries: a.u32(mcMaxEntries), MapFlags: flags &^ bpfFNumaNode}
	if a.u32(mcBTFKeyTypeID) != 0 || a.u32(mcBTFValueTypeID) != 0 {
		// The kernel reads btf_fd only with a value type id.
		bo, err := c.btfObject(a.u32(mcBTFFD))
		if err != nil {
			return 0, err
		}
		defer c.s.put(bo)
		w.BTFHandle, w.BTFKeyTypeID, w.BTFValueTypeID = bo.handle, a.u32(mcBTFKeyTypeID), a.u32(mcBTFValueTypeID)
	}
	copy(w.Name[:], a[mcMapName:mcMapName+bpfObjNameLen])
	var ab [wire.MapCreateAttrSize]byte
	return c.create(wire.CmdMapCreate, w.Append(ab[:0]), nil)
}

// create sends a command that makes a descriptor and installs it. A quota
// refusal (ENOSPC, ENOMEM) is retried once after collecting the objects
// the process closed meanwhile: the kernel would have freed them at
// close(2).
func (c *call) create(cmd wire.Cmd, attr []byte, fill func(o *object), data ...[]byte) (int64, error) {
	s := c.s
	var out [wire.ObjInfoSize + 64]byte
	for try := 0; ; try++ {
		r, err := c.do(cmd, attr, nil, out[:], data...)
		if err != nil {
			return 0, err
		}
		if r.Errno == unix.ENOSPC || r.Errno == unix.ENOMEM {
			closeAll(r.FDs)
			if try == 0 {
				s.collect()
				continue
			}
		}
		if r.Errno != 0 {
			closeAll(r.FDs)
			return 0, r.Errno
		}
		if len(r.FDs) != 1 {
			closeAll(r.FDs)
			s.releaseHandle(uint32(r.Ret))
			return 0, unix.EIO
		}
		return c.install(r.FDs[0], uint32(r.Ret), r.Data, fill)
	}
}

// mapObject resolves fd to a map whose handle has at least mode need, as
// the kernel's __bpf_map_get and map_get_sys_perms: EBADF, EINVAL (not a
// map), EPERM.
func (c *call) mapObject(fd uint32, need wire.Mode) (*object, error) {
	o, err := c.resolve(int32(fd))
	if err != nil {
		return nil, err
	}
	if o.info.ObjType != wire.ObjMap {
		c.s.put(o)
		return nil, unix.EINVAL
	}
	if o.info.Mode&need != need {
		c.s.put(o)
		return nil, unix.EPERM
	}
	return o, nil
}

// readKey copies a key of size ks from ukey into b, as __bpf_copy_key: no
// key (ks 0) must come with a NULL pointer (EINVAL otherwise).
func (c *call) readKey(ukey uint64, b []byte) error {
	if len(b) == 0 {
		if ukey != 0 {
			return unix.EINVAL
		}
		return nil
	}
	return c.read(ukey, b)
}

// elemAttr encodes a wire.ElemAttr.
func elemAttr(b []byte, h uint32, flags uint64) []byte {
	return (&wire.ElemAttr{Handle: h, Flags: flags}).Append(b[:0])
}

// mapElem answers the single-element commands and BPF_MAP_FREEZE in the
// kernel's order: CHECK_ATTR and flags (EINVAL), the fd (EBADF, EINVAL),
// the fd's access (EPERM), the key and value in memory (EFAULT), then the
// map's own answer from bpfd, then the output in memory (EFAULT).
func (c *call) mapElem(cmd uint64, a *bpfAttr) (int64, error) {
	end := elEnd
	switch cmd {
	case cmdMapDeleteElem:
		end = elValue
	case cmdMapGetNextKey:
		end = elFlags
	case cmdMapFreeze:
		end = 4
	}
	if !a.zeroFrom(end) {
		return 0, unix.EINVAL
	}
	flags := a.u64(elFlags)
	if (cmd == cmdMapLookupElem || cmd == cmdMapLookupAndDeleteElem) && flags&^bpfFLock != 0 {
		return 0, unix.EINVAL
	}
	need := wire.ModeRead
	var wcmd wire.Cmd
	switch cmd {
	case cmdMapLookupElem:
		wcmd = wire.CmdMapLookupElem
	case cmdMapUpdateElem:
		wcmd, need = wire.CmdMapUpdateElem, wire.ModeWrite
	case cmdMapDeleteElem:
		wcmd, need = wire.CmdMapDeleteElem, wire.ModeWrite
	case cmdMapGetNextKey:
		wcmd = wire.CmdMapGetNextKey
	case cmdMapLookupAndDeleteElem:
		wcmd, need = wire.CmdMapLookupAndDeleteElem, wire.ModeReadWrite
	case cmdMapFreeze:
		wcmd, need = wire.CmdMapFreeze, wire.ModeWrite
	}
	s := c.s
	o, err := c.mapObject(a.u32(elMapFD), need)
	if err != nil {
		return 0, err
	}
	defer s.put(o)
	ks, vs := int(o.info.KeySize), s.syscallValueSize(&o.info)
	buf := c.scratch(ks + vs)
	key, value := buf[:ks], buf[ks:]
	var ab [wire.ElemAttrSize]byte
	wflags := uint64(0)
	if cmd != cmdMapGetNextKey && cmd != cmdMapFreeze && cmd != cmdMapDeleteElem {
		wflags = flags
	}
	attr := elemAttr(ab[:], o.handle, wflags)
	switch cmd {
	case cmdMapFreeze:
		return c.simple(wcmd, attr)
	case cmdMapGetNextKey:
		if ukey := a.u64(elKey); ukey != 0 {
			if err := c.readKey(ukey, key); err != nil {
				return 0, err
			}
		} else {
			key = nil
		}
		next := c.scratch2(ks)
		if done, err := c.viewNextKey(o, key, next); done {
			if err != nil {
				return 0, err
			}
			return 0, c.write(a.u64(elValue), next)
		}
		r, err := c.do(wcmd, attr, nil, next, key)
		return c.elemOut(r, err, a.u64(elValue), ks)
	case cmdMapUpdateElem:
		if ks == 0 && a.u64(elKey) != 0 {
			return 0, unix.EINVAL
		}
		// Key and value in one read; either faulting is EFAULT, as the
		// kernel's two copies would say.
		if err := c.read2(a.u64(elKey), key, a.u64(elValue), value); err != nil {
			return 0, err
		}
		if o.info.Type == mapProgArray || o.info.Type == mapArrayOfMaps || o.info.Type == mapHashOfMaps {
			h, err := c.fdValue(o, value)
			if err != nil {
				return 0, err
			}
			binary.LittleEndian.PutUint32(value, h)
		}
		return c.simple(wcmd, attr, key, value)
	case cmdMapDeleteElem:
		if err := c.readKey(a.u64(elKey), key); err != nil {
			return 0, err
		}
		return c.simple(wcmd, attr, key)
	}
	// Lookup, lookup-and-delete.
	if err := c.readKey(a.u64(elKey), key); err != nil {
		return 0, err
	}
	if cmd == cmdMapLookupElem && o.info.Type == mapBloomFilter {
		// The value is the input: does the filter maybe hold it?
		if err := c.read(a.u64(elValue), value); err != nil {
			return 0, err
		}
		return c.simple(wcmd, attr, value)
	}
	if cmd == cmdMapLookupElem && flags == 0 {
		if done, err := c.viewLookup(o, key, value); done {
			if err != nil {
				return 0, err
			}
			return 0, c.write(a.u64(elValue), value)
		}
	}
	r, err := c.do(wcmd, attr, nil, value, key)
	return c.elemOut(r, err, a.u64(elValue), vs)
}

// elemOut finishes a command whose reply data (n bytes) goes to uaddr.
func (c *call) elemOut(r rawReply, err error, uaddr uint64, n int) (int64, error) {
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return 0, r.Errno
	}
	if len(r.Data) != n {
		return 0, unix.EIO
	}
	return 0, c.write(uaddr, r.Data)
}

// simple sends a command whose reply is only an errno.
func (c *call) simple(cmd wire.Cmd, attr []byte, data ...[]byte) (int64, error) {
	r, err := c.do(cmd, attr, nil, nil, data...)
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return 0, r.Errno
	}
	return r.Ret, nil
}

// fdValue turns the value of an update of a map of programs or maps (an
// fd of the task, as for the kernel) into the handle bpfd expects.
func (c *call) fdValue(m *object, value []byte) (uint32, error) {
	fd := int32(binary.LittleEndian.Uint32(value))
	o, err := c.resolve(fd)
	if err != nil {
		return 0, err
	}
	defer c.s.put(o)
	want := wire.ObjMap
	if m.info.Type == mapProgArray {
		want = wire.ObjProg
	}
	if o.info.ObjType != want {
		return 0, unix.EINVAL
	}
	return o.handle, nil
}

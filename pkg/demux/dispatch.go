package demux

import (
	"encoding/binary"
	"encoding/json"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// exec decodes and executes one request, writing reply data with c.alloc
// and reply fds with c.addFD. It returns the reply's Ret and error. It does
// not close fds (the caller closes every received fd).
func (c *conn) exec(msg []byte, fds []int) (int64, error) {
	h, attr, data, err := wire.ParseRequest(msg)
	if err != nil {
		if err == wire.ErrTooLarge {
			return 0, ErrTooLarge
		}
		return 0, ErrInvalid
	}
	size, ok := wire.AttrSize(h.Cmd)
	if !ok {
		return 0, ErrUnknownCmd
	}
	a, err := wire.Attr(attr, size, c.ascr[:])
	if err != nil {
		return 0, ErrAttrTail
	}
	if h.Flags&wire.ReqFlagMemfd != 0 {
		if len(fds) == 0 {
			return 0, ErrFDs
		}
		mfd := fds[len(fds)-1]
		fds = fds[:len(fds)-1]
		data, err = c.mapMemfd(mfd, h.DataLen)
		if err != nil {
			return 0, err
		}
		if data != nil {
			defer unix.Munmap(data)
		}
	}
	if h.Cmd != wire.CmdImport && h.Cmd != wire.CmdImportAt && h.Cmd != wire.CmdObjGet && h.Cmd != wire.CmdProgAttach && h.Cmd != wire.CmdLinkCreate && len(fds) != 0 {
		return 0, ErrFDs
	}
	switch h.Cmd {
	case wire.CmdMapLookupElem, wire.CmdMapUpdateElem, wire.CmdMapDeleteElem, wire.CmdMapGetNextKey,
		wire.CmdMapLookupAndDeleteElem, wire.CmdMapFreeze:
		return c.elem(h.Cmd, a, data)
	case wire.CmdMapLookupBatch, wire.CmdMapLookupAndDeleteBatch, wire.CmdMapUpdateBatch, wire.CmdMapDeleteBatch:
		return c.batchOp(h.Cmd, a, data)
	case wire.CmdMapCreate:
		return c.mapCreate(a, data)
	case wire.CmdHello:
		return c.hello(a, data)
	case wire.CmdImport:
		return c.importDesc(a, data, fds)
	case wire.CmdReopen:
		return c.reopen(a, data)
	case wire.CmdRelease:
		return c.release(a, data)
	case wire.CmdObjGetInfo:
		return c.getInfo(a, data)
	case wire.CmdRevoke:
		return c.revoke(a, data)
	case wire.CmdStatus:
		return c.status(data)
	case wire.CmdObjPin:
		return c.objPin(a, data)
	case wire.CmdObjGet:
		return c.objGet(a, data, fds)
	case wire.CmdPinMkdir:
		return c.pinMkdir(a, data)
	case wire.CmdProgLoad:
		return c.progLoad(a, data)
	case wire.CmdProgTestRun:
		return c.progTestRun(a, data)
	case wire.CmdProgDump:
		return c.progDump(a, data)
	case wire.CmdProgAttach:
		return c.progAttach(a, data, fds)
	case wire.CmdDestroy:
		return c.destroy(a, data)
	case wire.CmdMapStorage:
		return c.mapStorage(a, data)
	case wire.CmdPerfRing:
		return c.perfRing(a, data)
	case wire.CmdRevokeNode:
		return c.revokeNode(a, data)
	case wire.CmdLineage:
		return c.lineage(a, data)
	case wire.CmdObjList:
		return c.objList(a, data)
	case wire.CmdBTFLoad:
		return c.btfLoad(a, data)
	case wire.CmdBTFGet:
		return c.btfGet(a, data)
	case wire.CmdLinkCreate, wire.CmdLinkDetach, wire.CmdLinkInfo, wire.CmdLinkList:
		return c.linkCmd(h.Cmd, a, data, fds)
	case wire.CmdDaemonUpgrade:
		return c.daemonUpgrade(data)
	case wire.CmdImportAt:
		return c.importAt(a, data, fds)
	}
	return 0, ErrUnknownCmd
}

// mapHandle returns the map behind handle id if the handle's mode includes
// need: ErrBadHandle, ErrInvalid (not a map) or ErrPermission otherwise.
func (c *conn) mapHandle(id uint32, need wire.Mode) (*handle, error) {
	hd, err := c.lookup(id)
	if err != nil {
		return nil, err
	}
	if hd.obj.m == nil {
		return nil, ErrInvalid
	}
	if hd.mode&need != need {
		return nil, ErrPermission
	}
	return hd, nil
}

// elem executes the single-element map commands. It allocates nothing.
func (c *conn) elem(cmd wire.Cmd, a, data []byte) (int64, error) {
	var at wire.ElemAttr
	if !at.Parse(a) {
		return 0, ErrInvalid
	}
	need := wire.ModeRead
	switch cmd {
	case wire.CmdMapUpdateElem, wire.CmdMapDeleteElem, wire.CmdMapFreeze:
		need = wire.ModeWrite
	case wire.CmdMapLookupAndDeleteElem:
		need = wire.ModeReadWrite
	}
	// As the kernel, before the descriptor: lookups take BPF_F_LOCK
	// only, delete, next key and freeze no flags (CHECK_ATTR).
	if cmd != wire.CmdMapUpdateElem && at.Flags&^elemFlagsAllowed(cmd) != 0 {
		return 0, ErrInvalid
	}
	hd, err := c.mapHandle(at.Handle, need)
	if err != nil {
		return 0, err
	}
	if cmd == wire.CmdMapUpdateElem {
		if err := maps.CheckUpdateLock(hd.obj.m, at.Flags); err != nil {
			return 0, err
		}
	}
	if isProgArray(hd) && (cmd == wire.CmdMapUpdateElem || cmd == wire.CmdMapDeleteElem) {
		return c.progArrayElem(cmd, hd, &at, data)
	}
	if isMapInMap(hd) && (cmd == wire.CmdMapUpdateElem || cmd == wire.CmdMapDeleteElem) {
		return c.mapInMapElem(cmd, hd, &at, data)
	}
	m := hd.obj.m
	ks, vs := int(hd.obj.spec.KeySize), hd.obj.spec.SyscallValueSize()
	switch cmd {
	case wire.CmdMapLookupElem:
		if hd.obj.spec.Type == maps.TypeBloomFilter {
			// The value to test is the input; nothing comes back.
			if len(data) != vs {
				return 0, ErrDataLen
			}
			return 0, maps.LookupFlags(m, nil, data, at.Flags)
		}
		if len(data) != ks {
			return 0, ErrDataLen
		}
		v := c.alloc(vs)
		if v == nil {
			return 0, c.allocErr
		}
		if err := maps.LookupFlags(m, data, v, at.Flags); err != nil {
			c.resetReply()
			return 0, err
		}
	case wire.CmdMapUpdateElem:
		if len(data) != ks+vs {
			return 0, ErrDataLen
		}
		return 0, m.Update(data[:ks], data[ks:], at.Flags)
	case wire.CmdMapDeleteElem:
		if len(data) != ks {
			return 0, ErrDataLen
		}
		return 0, m.Delete(data)
	case wire.CmdMapGetNextKey:
		var key []byte
		switch len(data) {
		case 0:
		case ks:
			key = data
		default:
			return 0, ErrDataLen
		}
		next := c.alloc(ks)
		if next == nil {
			return 0, c.allocErr
		}
		if err := m.NextKey(key, next); err != nil {
			c.resetReply()
			return 0, err
		}
	case wire.CmdMapLookupAndDeleteElem:
		if len(data) != ks {
			return 0, ErrDataLen
		}
		v := c.alloc(vs)
		if v == nil {
			return 0, c.allocErr
		}
		if err := maps.LookupAndDeleteFlags(m, data, v, at.Flags); err != nil {
			c.resetReply()
			return 0, err
		}
	case wire.CmdMapFreeze:
		if len(data) != 0 {
			return 0, ErrDataLen
		}
		return 0, m.Freeze()
	}
	return 0, nil
}

// batchScratch is a connection's reusable batch state.
type batchScratch struct {
	b maps.Batch
}

// batchOp executes the batch commands (see wire.BatchAttr).
func (c *conn) batchOp(cmd wire.Cmd, a, data []byte) (int64, error) {
	var at wire.BatchAttr
	if !at.Parse(a) {
		return 0, ErrInvalid
	}
	need := wire.ModeRead
	switch cmd {
	case wire.CmdMapUpdateBatch, wire.CmdMapDeleteBatch:
		need = wire.ModeWrite
	case wire.CmdMapLookupAndDeleteBatch:
		need = wire.ModeReadWrite
	}
	hd, err := c.mapHandle(at.Handle, need)
	if err != nil {
		return 0, err
	}
	// Like the kernel, only the lookup batches check batch.flags;
	// generic_map_update_batch and generic_map_delete_batch ignore them.
	if at.Flags != 0 && (cmd == wire.CmdMapLookupBatch || cmd == wire.CmdMapLookupAndDeleteBatch) {
		return 0, ErrInvalid
	}
	if isFDMap(hd) && need != wire.ModeRead {
		return 0, ErrProgArrayOp
	}
	m := hd.obj.m
	spec := &hd.obj.spec
	ks, vs := uint64(spec.KeySize), uint64(spec.SyscallValueSize())
	if c.goBulk(batchBytes(cmd, at.Count, spec, len(data)) > bulkBatchBytes) {
		return c.bulk(func(*sched.Turn) (int64, error) { defer c.endBulk(); return c.batchOp(cmd, a, data) })
	}
	b := &c.batch.b
	*b = maps.Batch{ElemFlags: at.ElemFlags, Count: at.Count}
	switch cmd {
	case wire.CmdMapUpdateBatch, wire.CmdMapDeleteBatch:
		if at.HasInBatch != 0 || at.InBatch != 0 {
			return 0, ErrInvalid
		}
		n := uint64(at.Count)
		want := n * ks
		if cmd == wire.CmdMapUpdateBatch {
			want += n * vs
		}
		if uint64(len(data)) != want {
			return 0, ErrDataLen
		}
		b.Keys = data[:n*ks]
		if cmd == wire.CmdMapUpdateBatch {
			b.Values = data[n*ks:]
			err = m.UpdateBatch(b)
		} else {
			err = m.DeleteBatch(b)
		}
		return int64(b.Count), err
	}
	// Lookup batches: never more than the map can hold, so a hostile count
	// cannot make the daemon allocate beyond the map's own (quota-charged)
	// size.
	if len(data) != 0 {
		return 0, ErrDataLen
	}
	n := min(uint64(at.Count), uint64(spec.MaxEntries))
	b.Count = uint32(n)
	b.HasInBatch = at.HasInBatch == 1
	b.InBatch = at.InBatch
	out := c.alloc(int(wire.BatchCursorSize + n*(ks+vs)))
	if out == nil {
		return 0, c.allocErr
	}
	b.Keys = out[wire.BatchCursorSize : wire.BatchCursorSize+n*ks]
	b.Values = out[wire.BatchCursorSize+n*ks:]
	if cmd == wire.CmdMapLookupBatch {
		err = m.LookupBatch(b)
	} else {
		err = m.LookupAndDeleteBatch(b)
	}
	done := uint64(b.Count)
	if done > n {
		done = n
	}
	if err == nil && done == n && uint64(at.Count) > n {
		// The count was capped at what the map can hold and all of it
		// came back: the kernel, asked for more, would have walked off
		// the end and said so.
		err = maps.ErrBatchEnd
	}
	binary.LittleEndian.PutUint64(out, b.OutBatch)
	// Pack: cursor, done keys, done values.
	copy(out[wire.BatchCursorSize+done*ks:], out[wire.BatchCursorSize+n*ks:wire.BatchCursorSize+n*ks+done*vs])
	c.out = c.out[:len(c.out)-len(out)+int(wire.BatchCursorSize+done*(ks+vs))]
	if err != nil && done == 0 && err != maps.ErrBatchEnd {
		c.resetReply()
	}
	return int64(done), err
}

// mapCreate creates a map, its first descriptor and a handle.
func (c *conn) mapCreate(a, data []byte) (int64, error) {
	var at wire.MapCreateAttr
	if !at.Parse(a) || len(data) != 0 {
		return 0, ErrInvalid
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	spec, err := c.mapCreateSpec(&at)
	if err != nil {
		return 0, err
	}
	mem, err := spec.MemoryUsage()
	if err != nil {
		return 0, err
	}
	bref, err := c.btfOf(at.BTFHandle, at.BTFKeyTypeID, at.BTFValueTypeID, at.KeySize, at.ValueSize, true)
	if err != nil {
		return 0, err
	}
	if spec.SpinLock, err = spinLockOf(bref); err != nil {
		return 0, err
	}
	if err := spec.Validate(); err != nil {
		return 0, err // the lock's rules (map_check_btf)
	}
	if c.goBulk(mem > bulkMapBytes) {
		return c.bulk(func(*sched.Turn) (int64, error) { defer c.endBulk(); return c.mapCreate(a, data) })
	}
	r := c.reg
	r.mu.Lock()
	if err := r.reserveNewLocked(c.uid, mem); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	r.mu.Unlock()

	m, err := c.srv.newMap(spec)
	if err != nil {
		r.mu.Lock()
		r.unreserveLocked(c.uid, mem)
		r.mu.Unlock()
		return 0, err
	}
	spec = m.Spec() // as the kernel records it (LRU max_entries rounding)
	o := &Object{kind: wire.ObjMap, cap: wire.ModeReadWrite, mem: mem, name: at.Name, m: m, spec: spec}
	switch {
	case spec.Flags&maps.FlagRdonly != 0:
		o.cap = wire.ModeRead
	case spec.Flags&maps.FlagWronly != 0:
		o.cap = wire.ModeWrite
	}
	if bref.obj == nil {
		return c.install(o, nil)
	}
	return c.install(o, func() error { return r.holdBTFLocked(o, bref) })
}

// install registers o (already reserved for c.uid) with its creating
// descriptor — the root of its lineage — and a handle, both with mode
// o.cap and the destroy right, and puts them in the reply. Under the same lock, extra (if not nil) runs first, e.g. to take
// the references o holds; if anything fails o is closed.
func (c *conn) install(o *Object, extra func() error) (int64, error) {
	c.noteCreator(o)
	r := c.reg
	r.mu.Lock()
	if err := r.addObjectLocked(o, c.uid); err != nil {
		r.unreserveLocked(c.uid, o.mem)
		r.mu.Unlock()
		o.close()
		return 0, err
	}
	var err error
	if extra != nil {
		err = extra()
	}
	mode := o.cap | wire.ModeDestroy
	var d *Descriptor
	var cfd int
	if err == nil {
		r.persistObject(o)
		d, cfd, err = r.newDescLocked(o, mode, c.uid, nil)
	}
	if err != nil {
		o.refs = 1
		free := r.unref(o, nil)
		r.mu.Unlock()
		closeObjects(free)
		return 0, err
	}
	hd := r.newHandleLocked(d, mode, true)
	r.mu.Unlock()
	c.addFD(cfd)
	id := c.addHandle(hd)
	c.putInfo(hd)
	return int64(id), nil
}

// putInfo appends the ObjInfo of hd to the reply.
func (c *conn) putInfo(hd *handle) {
	hd.obj.info(&c.info, hd.mode)
	c.info.Node = hd.src.id
	c.info.Append(c.alloc(wire.ObjInfoSize)[:0])
}

func (c *conn) hello(a, data []byte) (int64, error) {
	var at wire.HelloAttr
	if !at.Parse(a) || len(data) != 0 {
		return 0, ErrInvalid
	}
	copy(c.alloc(len(c.srv.cfg.Version)), c.srv.cfg.Version)
	return wire.Version, nil
}

// importDesc turns a presented descriptor into a handle.
func (c *conn) importDesc(a, data []byte, fds []int) (int64, error) {
	var at wire.ImportAttr
	if !at.Parse(a) || len(data) != 0 {
		return 0, ErrInvalid
	}
	hd, err := c.importHandle(fds, at.Mode)
	if err != nil {
		return 0, err
	}
	id := c.addHandle(hd)
	c.putInfo(hd)
	return int64(id), nil
}

// importHandle checks the one descriptor presented with IMPORT or
// IMPORT_AT and makes a handle of it with mode (0: the descriptor's own),
// which may not exceed the descriptor's. The caller gives the handle its
// number.
func (c *conn) importHandle(fds []int, mode wire.Mode) (*handle, error) {
	if len(fds) != 1 {
		if len(fds) == 0 {
			return nil, ErrBadDescriptor
		}
		return nil, ErrFDs
	}
	if mode != 0 && !mode.Valid() {
		return nil, ErrInvalid
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return nil, ErrTooManyHandles
	}
	r := c.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	d, err := r.lookupDescLocked(fds[0])
	if err != nil {
		return nil, err
	}
	if mode == 0 {
		mode = d.mode
	}
	if mode&^d.mode != 0 {
		return nil, ErrPermission
	}
	return r.newHandleLocked(d, mode, false), nil
}

// reopen makes a new descriptor and handle with a subset of a handle's
// data rights; the new descriptor is a child of the handle's in the
// object's lineage. The destroy right is never passed on.
func (c *conn) reopen(a, data []byte) (int64, error) {
	var at wire.HandleAttr
	at.Parse(a)
	if len(data) != 0 {
		return 0, ErrInvalid
	}
	hd, err := c.lookup(at.Handle)
	if err != nil {
		return 0, err
	}
	if !at.Mode.Valid() {
		return 0, ErrInvalid
	}
	if at.Mode&wire.ModeDestroy != 0 {
		return 0, ErrDestroyNotDelegable
	}
	if at.Mode&^hd.mode != 0 {
		return 0, ErrPermission
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	r := c.reg
	r.mu.Lock()
	if hd.dead.Load() {
		r.mu.Unlock()
		return 0, ErrBadHandle
	}
	d, cfd, err := r.newDescLocked(hd.obj, at.Mode, c.uid, hd.src)
	if err != nil {
		r.mu.Unlock()
		return 0, err
	}
	nh := r.newHandleLocked(d, at.Mode, true)
	r.mu.Unlock()
	c.addFD(cfd)
	id := c.addHandle(nh)
	c.putInfo(nh)
	return int64(id), nil
}

// handleOnly parses the attr of a command that names a handle and nothing
// else: a wire.HandleAttr with mode 0 and no data (ErrInvalid otherwise).
func handleOnly(a, data []byte) (uint32, error) {
	var at wire.HandleAttr
	at.Parse(a)
	if at.Mode != 0 || len(data) != 0 {
		return 0, ErrInvalid
	}
	return at.Handle, nil
}

// release drops a handle. A revoked handle is released without error.
func (c *conn) release(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	if h == 0 || uint64(h) >= uint64(len(c.handles)) || c.handles[h] == nil {
		return 0, ErrBadHandle
	}
	c.removeHandle(h)
	return 0, nil
}

func (c *conn) getInfo(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	hd, err := c.lookup(h)
	if err != nil {
		return 0, err
	}
	c.putInfo(hd)
	return 0, nil
}

// revoke kills the descriptor a maker handle was made with and its whole
// subtree: descriptors reopened from it, handles made from any of them,
// pins made through them (their files are removed) and everything opened
// from those pins.
func (c *conn) revoke(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	hd, err := c.lookup(h)
	if err != nil {
		return 0, err
	}
	if !hd.maker {
		return 0, ErrNotMaker
	}
	root := false
	_, err = c.revokeNodes(hd, func(r *registry, free []*Object, killed *[]*Descriptor) ([]*Object, int) {
		if hd.src.parent == nil {
			// A maker handle's descriptor keeps its parent link (prune
			// only unlinks nodes without handles): nil means the
			// creating descriptor, which revocation does not apply to.
			root = true
			return free, 0
		}
		return r.revokeLocked(hd.src, free, killed), 0
	})
	if root {
		return 0, ErrNotRevocable
	}
	return 0, err
}

func (c *conn) status(data []byte) (int64, error) {
	if len(data) != 0 {
		return 0, ErrInvalid
	}
	st := c.srv.Stats()
	st.Seccomp = c.srv.seccompFor(c.uid)
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	copy(c.alloc(len(b)), b)
	return 0, nil
}

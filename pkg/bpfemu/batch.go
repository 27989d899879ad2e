package bpfemu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// maxBatchChunk bounds the bytes of keys and values one update or delete
// batch request carries to bpfd; longer batches go in several requests,
// which is what the kernel's element-by-element loop amounts to.
const maxBatchChunk = 4 << 20

// enotsupp is the kernel-internal ENOTSUPP (524) bpf(2) returns for
// operations a map type lacks.
const enotsupp = unix.Errno(524)

// mapBatch answers the four batch commands with the kernel's
// bpf_map_do_batch semantics: count in and out, the partial count on
// errors, in_batch/out_batch cursors (a u32 bucket for hash maps, a key
// for the generic walk), ENOENT at the end of a lookup walk.
func (c *call) mapBatch(cmd uint64, a *bpfAttr) (int64, error) {
	if !a.zeroFrom(btEnd) {
		return 0, unix.EINVAL
	}
	need := wire.Mode(0)
	var wcmd wire.Cmd
	switch cmd {
	case cmdMapLookupBatch:
		wcmd, need = wire.CmdMapLookupBatch, wire.ModeRead
	case cmdMapLookupAndDeleteBatch:
		wcmd, need = wire.CmdMapLookupAndDeleteBatch, wire.ModeReadWrite
	case cmdMapUpdateBatch:
		wcmd, need = wire.CmdMapUpdateBatch, wire.ModeWrite
	case cmdMapDeleteBatch:
		wcmd, need = wire.CmdMapDeleteBatch, wire.ModeWrite
	}
	s := c.s
	o, err := c.mapObject(a.u32(btMapFD), need)
	if err != nil {
		return 0, err
	}
	defer s.put(o)
	count := a.u32(btCount)
	elemFlags, flags := a.u64(btElemFlags), a.u64(btFlags)
	if cmd == cmdMapLookupBatch || cmd == cmdMapLookupAndDeleteBatch {
		return c.lookupBatch(o, wcmd, a, count, elemFlags, flags)
	}
	return c.writeBatch(o, wcmd, a, count, elemFlags, flags)
}

// batchStarted reports whether a batch reply's errno comes from inside
// the walk (the kernel has written count then) rather than from the
// checks before it.
func batchStarted(e unix.Errno) bool {
	switch e {
	case unix.EINVAL, unix.EPERM, unix.EBADF, enotsupp:
		return false
	}
	return true
}

func (c *call) lookupBatch(o *object, wcmd wire.Cmd, a *bpfAttr, count uint32, elemFlags, flags uint64) (int64, error) {
	s := c.s
	bt := wire.BatchAttr{Handle: o.handle, Count: count, ElemFlags: elemFlags, Flags: flags}
	csize := batchCursorSize(&o.info)
	if in := a.u64(btInBatch); in != 0 && count != 0 {
		cur := c.scratch2(csize)
		if err := c.read(in, cur); err != nil {
			return 0, err
		}
		bt.HasInBatch, bt.InBatch = 1, cursorValue(cur)
	}
	var ab [wire.BatchAttrSize]byte
	r, err := c.do(wcmd, bt.Append(ab[:0]), nil, nil)
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if count == 0 && r.Errno == 0 {
		return 0, nil
	}
	if !batchStarted(r.Errno) {
		return 0, r.Errno
	}
	ks, vs := int(o.info.KeySize), s.syscallValueSize(&o.info)
	n := int(r.Ret)
	outCur := bt.InBatch // a refusal with nothing done (ENOSPC) leaves the walk where it was
	if len(r.Data) >= wire.BatchCursorSize {
		outCur = binary.LittleEndian.Uint64(r.Data)
	} else if n == 0 {
		r.Data = make([]byte, wire.BatchCursorSize)
	}
	if n < 0 || len(r.Data) < wire.BatchCursorSize+n*(ks+vs) {
		return 0, unix.EIO
	}
	// The kernel zeroes count first; if the output buffers fault, count
	// says 0 and the call fails with EFAULT.
	if err := c.writeAttr32(btCount, 0); err != nil {
		return 0, err
	}
	keys := r.Data[wire.BatchCursorSize : wire.BatchCursorSize+n*ks]
	values := r.Data[wire.BatchCursorSize+n*ks : wire.BatchCursorSize+n*(ks+vs)]
	if err := c.write(a.u64(btKeys), keys); err != nil {
		return 0, err
	}
	if err := c.write(a.u64(btValues), values); err != nil {
		return 0, err
	}
	if csize == 4 || n > 0 {
		cur := c.scratch2(csize)
		putCursor(cur, outCur)
		if err := c.write(a.u64(btOutBatch), cur); err != nil {
			return 0, err
		}
	}
	if err := c.writeAttr32(btCount, uint32(n)); err != nil {
		return 0, err
	}
	if r.Errno != 0 {
		return 0, r.Errno
	}
	return 0, nil
}

// cursorValue decodes an in_batch cursor (little-endian, at most 8 bytes
// significant).
func cursorValue(b []byte) uint64 {
	var v [8]byte
	copy(v[:], b)
	return binary.LittleEndian.Uint64(v[:])
}

func putCursor(b []byte, v uint64) {
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], v)
	clear(b)
	copy(b, w[:])
}

// writeBatch answers update and delete batches: elements go to bpfd in
// order, in chunks; the first failure stops the walk, and count says how
// many elements were done, as the kernel's generic_map_*_batch. Memory
// that stops being readable part way is EFAULT after the elements before
// it were done.
func (c *call) writeBatch(o *object, wcmd wire.Cmd, a *bpfAttr, count uint32, elemFlags, flags uint64) (int64, error) {
	s := c.s
	ks := int(o.info.KeySize)
	vs := 0
	if wcmd == wire.CmdMapUpdateBatch {
		vs = s.syscallValueSize(&o.info)
	}
	esize := max(ks+vs, 1)
	chunk := max(maxBatchChunk/esize, 1)
	ukeys, uvalues := a.u64(btKeys), a.u64(btValues)
	done := uint32(0)
	started := false
	for {
		n := min(int(count-done), chunk)
		buf := c.scratch(n * (ks + vs))
		keys, values := buf[:n*ks], buf[n*ks:]
		// How many whole elements are readable.
		avail := n
		var fault error
		if n > 0 {
			if k := c.readPrefix(ukeys+uint64(done)*uint64(ks), keys); k < len(keys) {
				avail = min(avail, k/max(ks, 1))
				fault = unix.EFAULT
			}
			if vs > 0 {
				if v := c.readPrefix(uvalues+uint64(done)*uint64(vs), values); v < len(values) {
					avail = min(avail, v/vs)
					fault = unix.EFAULT
				}
			}
			if err := c.s.ans.valid(c.id); err != nil {
				return 0, err
			}
		}
		bt := wire.BatchAttr{Handle: o.handle, Count: uint32(avail), ElemFlags: elemFlags, Flags: flags}
		var ab [wire.BatchAttrSize]byte
		data := [][]byte{keys[:avail*ks]}
		if vs > 0 {
			data = append(data, values[:avail*vs])
		}
		r, err := c.do(wcmd, bt.Append(ab[:0]), nil, nil, data...)
		if err != nil {
			return 0, err
		}
		closeAll(r.FDs)
		if count == 0 && r.Errno == 0 {
			return 0, nil
		}
		if !started {
			if !batchStarted(r.Errno) {
				return 0, r.Errno
			}
			started = true
			if err := c.writeAttr32(btCount, 0); err != nil {
				return 0, err
			}
		}
		done += uint32(max(r.Ret, 0))
		if r.Errno != 0 || fault != nil || done >= count {
			werr := c.writeAttr32(btCount, done)
			switch {
			case r.Errno != 0:
				return 0, r.Errno
			case fault != nil:
				return 0, fault
			}
			return 0, werr
		}
	}
}

// readPrefix reads as much of b from addr as is readable and returns how
// many bytes that was (process_vm_readv stops at the first fault).
func (c *call) readPrefix(addr uint64, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	if addr >= userTop || uint64(len(b)) > userTop-addr {
		return 0
	}
	local := unix.Iovec{Base: &b[0]}
	local.SetLen(len(b))
	remote := unix.RemoteIovec{Base: uintptr(addr), Len: len(b)}
	n, err := processVM(unix.SYS_PROCESS_VM_READV, c.tid, &local, &remote)
	if err != nil {
		return 0
	}
	return n
}

package demux

import (
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/mapview"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// ErrStorageRdonlyProg: a writable mapping of a BPF_F_RDONLY_PROG map
// (EACCES, as the kernel's mmap: programs trust its contents not to
// change).
var ErrStorageRdonlyProg = errno.New(unix.EACCES, "demux: a BPF_F_RDONLY_PROG map cannot be mapped writable")

// writableFDer is implemented by maps whose storage may be mapped
// writable (BPF_F_MMAPABLE arrays).
type writableFDer interface {
	WritableFD() (int, error)
}

// mapStorage executes CmdMapStorage: a descriptor of the map's storage for
// the caller to map (see wire.MapStorageAttr).
func (c *conn) mapStorage(a, data []byte) (int64, error) {
	var at wire.MapStorageAttr
	if !at.Parse(a) || len(data) != 0 || at.Flags&^wire.StorageWritable != 0 {
		return 0, ErrInvalid
	}
	need := wire.ModeRead
	writable := at.Flags&wire.StorageWritable != 0
	if writable {
		need = wire.ModeReadWrite
	}
	hd, err := c.mapHandle(at.Handle, need)
	if err != nil {
		return 0, err
	}
	m := hd.obj.m
	spec := m.Spec()
	info := wire.MapStorageInfo{Size: m.MemoryUsage()}
	lay, _ := m.(interface{ Layout() mapview.Layout })
	if lay != nil {
		l := lay.Layout()
		info.DataOff = l.ValuesOff
		if l.Family == mapview.FamilyRing {
			info.DataOff = l.DataOff
		}
	}
	if rb, ok := m.(*maps.Ringbuf); ok {
		return c.ringStorage(rb, &info, writable)
	}
	var fd int
	if writable {
		w, ok := m.(writableFDer)
		switch {
		case !ok || spec.Type != maps.TypeArray || spec.Flags&maps.FlagMmapable == 0 || spec.SpinLock != 0:
			// As bpf_map_mmap: no mapping of values holding a lock (a
			// writer could hold it for ever).
			return 0, maps.ErrNotSupported
		case spec.Flags&maps.FlagRdonlyProg != 0:
			return 0, ErrStorageRdonlyProg
		}
		if fd, err = w.WritableFD(); err != nil {
			return 0, err
		}
		info.Flags |= wire.StorageWritable
	} else if fd, err = m.ReadOnlyFD(); err != nil {
		return 0, err
	}
	c.addFD(fd)
	info.Append(c.alloc(wire.MapStorageInfoSize)[:0])
	return 0, nil
}

// retireStorage cuts mappings of o's storage off after a revocation or
// destroy on o's lineage: the revoked holders may have mapped it, and must
// see no update made from now on (maps.Map.Retire). Called without r.mu.
func (s *Server) retireStorage(o *Object) {
	if o == nil || o.m == nil {
		return
	}
	if err := o.m.Retire(); err != nil && err != maps.ErrClosed {
		s.log.Warn("cannot move a revoked map's storage; mapped readers keep seeing updates",
			zap.Uint32("id", o.id), zap.Error(err))
	}
}

// ringStorage answers MAP_STORAGE for a ring buffer: the region, the
// consumer page (writable when asked for, which needed write mode) and
// the wakeup eventfd.
func (c *conn) ringStorage(rb *maps.Ringbuf, info *wire.MapStorageInfo, writable bool) (int64, error) {
	fds := [3]int{-1, -1, -1}
	var err error
	if fds[0], err = rb.ReadOnlyFD(); err == nil {
		if fds[1], err = rb.ConsumerFD(writable); err == nil {
			fds[2], err = rb.WakeupFD()
		}
	}
	if err != nil {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		return 0, err
	}
	for _, fd := range fds {
		c.addFD(fd)
	}
	info.Flags |= wire.StorageRing
	if writable {
		info.Flags |= wire.StorageWritable
	}
	info.Append(c.alloc(wire.MapStorageInfoSize)[:0])
	return 0, nil
}

package bpfemu

import (
	"encoding/json"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// record returns the daemon's listing record of the object with id (kind
// of objects), as the supervisor's connection may see it: its own uid's
// objects and those it holds. ok is false if the daemon does not list it
// (or has no listing).
func (c *call) record(kind wire.ObjType, id uint32) (wire.ObjectRecord, bool) {
	recs := c.list(kind, id)
	if len(recs) == 1 && recs[0].ID == id {
		return recs[0], true
	}
	return wire.ObjectRecord{}, false
}

// list asks the daemon for the records of kind (id 0: all of them).
func (c *call) list(kind wire.ObjType, id uint32) []wire.ObjectRecord {
	a := wire.ListAttr{Kind: kind, ID: id}
	var ab [wire.ListAttrSize]byte
	r, err := c.do(wire.CmdObjList, a.Append(ab[:0]), nil, nil)
	if err != nil {
		return nil
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return nil
	}
	var recs []wire.ObjectRecord
	if json.Unmarshal(r.Data, &recs) != nil {
		return nil
	}
	return recs
}

// bootTimeOf converts a wall-clock unix time in seconds to CLOCK_BOOTTIME
// nanoseconds, the clock of struct bpf_prog_info's load_time.
func bootTimeOf(unixSec int64) uint64 {
	if unixSec <= 0 {
		return 0
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	bootAt := time.Now().UnixNano() - ts.Nano()
	if t := unixSec*int64(time.Second) - bootAt; t > 0 {
		return uint64(t)
	}
	return 0
}

// openPinned gets a new descriptor of the object with id through one of
// its pins, opened by the supervisor as the user with the access read
// and write ask for, as BPF_OBJ_GET would: the way to an object the
// traced processes do not hold that any process of the user could take.
// ENOENT if it has no pin, EPERM if no pin lets the user open it so.
func (c *call) openPinned(kind wire.ObjType, id uint32, read, write bool) (int64, error) {
	rec, ok := c.record(kind, id)
	if !ok || len(rec.Pinned) == 0 {
		return 0, unix.ENOENT
	}
	oflags := unix.O_RDWR
	switch {
	case read && !write:
		oflags = unix.O_RDONLY
	case write && !read:
		oflags = unix.O_WRONLY
	}
	h, fd, info, err := c.openThroughPin(rec, oflags)
	if err != nil {
		return 0, err
	}
	return c.install(fd, h, info, nil)
}

package bpfemu

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// bpf answers bpf(cmd, uattr, size) as __sys_bpf does: the attr is
// checked and copied (E2BIG for a size beyond a page or a non-zero tail
// beyond union bpf_attr, EFAULT for unreadable memory), then the command
// runs; unknown commands are EINVAL.
func (c *call) bpf() (int64, error) {
	args := &c.notif.Data.Args
	cmd := uint64(uint32(args[0])) // int cmd
	uattr := args[1]
	size := uint64(uint32(args[2])) // unsigned int size
	if size > pageSize {
		return 0, unix.E2BIG
	}
	if size > attrSize {
		tail := c.scratch(int(size) - attrSize)
		if err := c.read(uattr+attrSize, tail); err != nil {
			return 0, err
		}
		for _, b := range tail {
			if b != 0 {
				return 0, unix.E2BIG
			}
		}
	}
	n := min(size, attrSize)
	c.attr = bpfAttr{}
	if err := c.readAttr(uattr, c.attr[:n]); err != nil {
		return 0, err
	}
	c.uattr, c.usize = uattr, uint32(size)
	a := &c.attr
	switch cmd {
	case cmdMapCreate:
		return c.mapCreate(a)
	case cmdMapLookupElem, cmdMapUpdateElem, cmdMapDeleteElem, cmdMapGetNextKey,
		cmdMapLookupAndDeleteElem, cmdMapFreeze:
		return c.mapElem(cmd, a)
	case cmdMapLookupBatch, cmdMapLookupAndDeleteBatch, cmdMapUpdateBatch, cmdMapDeleteBatch:
		return c.mapBatch(cmd, a)
	case cmdProgLoad:
		return c.progLoad(a)
	case cmdProgTestRun:
		return c.progTestRun(a)
	case cmdObjPin:
		return c.objPin(a)
	case cmdObjGet:
		return c.objGet(a)
	case cmdObjGetInfoByFD:
		return c.objInfo(a)
	case cmdProgGetNextID, cmdMapGetNextID, cmdBTFGetNextID, cmdLinkGetNextID:
		return c.getNextID(cmd, a)
	case cmdProgGetFDByID, cmdMapGetFDByID, cmdBTFGetFDByID, cmdLinkGetFDByID:
		return c.getFDByID(cmd, a)
	case cmdEnableStats:
		return c.enableStats(a)
	case cmdBTFLoad:
		return c.btfLoad(a)
	case cmdProgAttach:
		return c.progAttach(a)
	case cmdLinkCreate:
		return c.linkCreate(a)
	case cmdLinkDetach:
		return c.linkDetach(a)
	}
	// Unknown commands, and commands for kernel objects bpfd has no
	// counterpart of (raw tracepoints, task fd queries, iterators,
	// tokens, ...): EINVAL, as a kernel without them, so that feature
	// probes take their fallbacks.
	return 0, unix.EINVAL
}

// writeAttr32 stores an output field of the caller's attr (put_user of
// uattr->field).
func (c *call) writeAttr32(off int, v uint32) error {
	return c.write(c.uattr+uint64(off), le32(v))
}

func le32(v uint32) []byte {
	return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// install hands a descriptor bpfd just made (fd owned by the caller of
// install until it returns; handle and ObjInfo in data) to the task as a
// new O_CLOEXEC fd and completes the call with its number, as the
// kernel's anon_inode_getfd. The supervisor keeps a copy and the handle;
// if the task is gone, both are released at once.
func (c *call) install(fd int, handle uint32, data []byte, fill func(o *object)) (int64, error) {
	s := c.s
	o, err := s.newObject(fd, handle, data)
	if err != nil {
		return 0, err
	}
	if fill != nil {
		fill(o)
	}
	o = s.add(o, fdKey{int32(c.tid), -1})
	newfd, err := s.ans.respondFD(c.id, o.fd, true)
	if err != nil {
		// Not installed: the task died, or its fd table is full.
		s.tab.mu.Lock()
		o.busy--
		if o.busy == 0 && s.tab.byIno[o.ino] == o {
			delete(s.tab.byIno, o.ino)
			s.tab.mu.Unlock()
			s.drop(o)
		} else {
			s.tab.mu.Unlock()
		}
		return 0, err
	}
	s.tab.mu.Lock()
	s.tab.byFD[fdKey{int32(c.tid), int32(newfd)}] = o
	o.busy--
	s.tab.mu.Unlock()
	return int64(newfd), errAnswered
}

// procStatusField reads one field of /proc/TID/status (e.g. "Umask").
func (c *call) procStatusField(name string) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.tid) + "/status")
	if err != nil {
		return "", errTaskGone
	}
	if err := c.s.ans.valid(c.id); err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", unix.EIO
}

// umask returns the calling task's umask.
func (c *call) umask() (uint32, error) {
	v, err := c.procStatusField("Umask")
	if err != nil {
		return 0, err
	}
	m, err := strconv.ParseUint(v, 8, 32)
	if err != nil {
		return 0, unix.EIO
	}
	return uint32(m), nil
}

// handleAttr encodes a wire.HandleAttr.
func handleAttr(b []byte, h uint32, mode wire.Mode) []byte {
	return (&wire.HandleAttr{Handle: h, Mode: mode}).Append(b[:0])
}

package demux

import (
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/errno"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/prog"
	"github.com/bpfd-project/bpfd/pkg/sched"
	"github.com/bpfd-project/bpfd/pkg/verifier"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Program errors.
var (
	ErrNotProg     = errno.New(unix.EINVAL, "demux: handle does not name a program")
	ErrMapRef      = errno.New(unix.EBADF, "demux: program references a handle that is not a map of this connection")
	ErrSlotProg    = errno.New(unix.EINVAL, "demux: program array value must be a program handle of this connection")
	ErrProgArrayOp = errno.New(unix.EINVAL, "demux: batch updates and deletes are not supported on program arrays")
	ErrRunFault    = errno.New(unix.EFAULT, "demux: program faulted during the test run")
)

// progMemory is what a loaded program is charged as object storage: its
// instructions in raw (kept for dumps) and decoded form, its line info,
// the verifier log it keeps, and a fixed part (memory.go).
func progMemory(p *prog.Program) uint64 {
	n := uint64(len(p.Insns())/8)*progInsnCost + uint64(len(p.Log())) + progFixedCost
	for _, l := range p.LineInfo() {
		n += uint64(len(l)) + 32
	}
	return n
}

// progTag is the kernel's legacy program tag: the first 8 bytes of the
// SHA-1 of the instructions with the immediates of map loads zeroed.
func progTag(insns []byte) [8]byte {
	b := append([]byte(nil), insns...)
	for pc := 0; pc+16 <= len(b); pc += 8 {
		if b[pc] == 0x18 {
			if b[pc+1]>>4 == 1 || b[pc+1]>>4 == 2 {
				clear(b[pc+4 : pc+8])
				clear(b[pc+12 : pc+16])
			}
			pc += 8
		}
	}
	sum := sha1.Sum(b)
	var t [8]byte
	copy(t[:], sum[:8])
	return t
}

// progByID resolves a program id stored in a PROG_ARRAY, for tail calls
// (prog.Env.Programs): nil if no such program lives. It takes no lock: a
// program calls it holding a CPU slot, and registry.mu holders (a program
// array update) may wait for one.
func (r *registry) progByID(id uint32) *prog.Program {
	if p, ok := r.progs.Load(id); ok {
		return p.(*prog.Program)
	}
	return nil
}

// indexProg enters o in the table progByID reads, if o is a program.
// r.mu must be held (or o not yet shared).
func (r *registry) indexProg(o *Object) {
	if o.p != nil {
		r.progs.Store(o.id, o.p)
	}
}

// clearSlotsLocked empties a program array's slots and drops the
// references they held. r.mu must be held.
func (r *registry) clearSlotsLocked(o *Object, free []*Object) []*Object {
	for k := range o.slots {
		free = r.clearSlotLocked(o, k, free)
	}
	return free
}

// clearSlotLocked empties slot k of program array o (if occupied), drops
// the reference it held and the use it made of its program handle's node.
// r.mu must be held.
func (r *registry) clearSlotLocked(o *Object, k uint32, free []*Object) []*Object {
	p := o.slots[k]
	if p == nil {
		return free
	}
	delete(o.slots, k)
	if o.m != nil {
		var key [4]byte
		binary.NativeEndian.PutUint32(key[:], k)
		o.m.Delete(key[:])
	}
	if v := o.slotVia[k]; v != nil {
		delete(o.slotVia, k)
		r.dropUseLocked(v, use{array: o, key: k})
	}
	r.persistSlot(o, k)
	return r.unref(p, free)
}

// progHandle returns the program behind handle id if its mode includes
// need.
func (c *conn) progHandle(id uint32, need wire.Mode) (*handle, error) {
	hd, err := c.lookup(id)
	if err != nil {
		return nil, err
	}
	if hd.obj.p == nil {
		return nil, ErrNotProg
	}
	if hd.mode&need != need {
		return nil, ErrPermission
	}
	return hd, nil
}

// progLoad verifies and loads a program. Map references name handles of
// this connection; the program gets each map with the access its handle
// grants (the union, when a map is named through several handles).
func (c *conn) progLoad(a, data []byte) (int64, error) {
	var at wire.ProgLoadAttr
	if !at.Parse(a) || at.ProgFlags != 0 {
		return 0, ErrInvalid
	}
	n := uint64(at.InsnCount) * 8
	if at.InsnCount == 0 || at.InsnCount > prog.MaxInsns ||
		uint64(len(data)) != n+uint64(at.LicenseLen)+uint64(at.LineInfoLen) {
		return 0, ErrDataLen
	}
	if c.nhandles >= c.srv.cfg.MaxHandles {
		return 0, ErrTooManyHandles
	}
	bref, err := c.btfOf(at.BTFHandle, 0, 0, 0, 0, false)
	if err != nil {
		return 0, err
	}
	insns := append([]byte(nil), data[:n]...)
	license := strings.TrimRight(string(data[n:n+uint64(at.LicenseLen)]), "\x00")
	var lines map[int]string
	if at.LineInfoLen > 0 {
		li, ok := wire.ParseLineInfo(data[n+uint64(at.LicenseLen):])
		if !ok {
			return 0, ErrInvalid
		}
		lines = make(map[int]string, len(li))
		for _, l := range li {
			lines[int(l.Insn)] = l.Line
		}
	}

	// Resolve map handles into indexes of the program's map list.
	var refs []prog.MapRef
	var deps []*Object
	var mapHandles []*handle
	index := map[*Object]int{}
	for pc := 0; pc+16 <= len(insns); pc += 8 {
		ins := insns[pc : pc+8]
		if ins[0] != 0x18 {
			continue
		}
		if src := ins[1] >> 4; src == 1 || src == 2 {
			hd, err := c.lookup(binary.LittleEndian.Uint32(ins[4:]))
			if err != nil || hd.obj.m == nil {
				return 0, ErrMapRef
			}
			i, ok := index[hd.obj]
			if !ok {
				i = len(refs)
				index[hd.obj] = i
				refs = append(refs, prog.MapRef{Map: hd.obj.m, Name: wire.NameString(hd.obj.name)})
				deps = append(deps, hd.obj)
			}
			refs[i].Read = refs[i].Read || hd.mode&wire.ModeRead != 0
			refs[i].Write = refs[i].Write || hd.mode&wire.ModeWrite != 0
			mapHandles = append(mapHandles, hd)
			binary.LittleEndian.PutUint32(ins[4:], uint32(i))
		}
		pc += 8
	}

	// The verifier's tables and log, charged for the time of the load
	// (its saved states are charged as it reports them).
	if err := c.chargeReq(verifyFixed + uint64(at.InsnCount)*verifyPerInsn); err != nil {
		return 0, err
	}
	name := wire.NameString(at.Name)
	p, err := c.srv.load(c, c.uid, &prog.Spec{Type: prog.Type(at.ProgType), Insns: insns, Maps: refs,
		License: license, Name: name, LineInfo: lines, LogLevel: at.LogLevel, AttachType: at.ExpectedAttachType},
		&prog.Env{Programs: c.reg.progByID, Maps: c.reg.mapByID, Trace: c.srv.trace})
	if err != nil {
		var ve *verifier.Error
		if errors.As(err, &ve) {
			c.srv.log.Info("program refused by the verifier", zap.Int32("pid", c.pid), zap.String("comm", c.comm()),
				zap.Uint32("uid", c.uid), zap.String("prog", name), zap.Stringer("type", prog.Type(at.ProgType)),
				zap.String("errno", unix.ErrnoName(errnoOf(err))), zap.Int("insn", ve.PC), zap.String("reason", ve.Msg))
		}
		if errors.As(err, &ve) && at.LogSize > 0 {
			log := ve.Log
			if len(log) > int(at.LogSize) {
				log = log[:at.LogSize]
			}
			copy(c.tryAlloc(len(log)), log)
		}
		return 0, err
	}
	if at.LogSize > 0 && p.Log() != "" {
		log := p.Log()
		if len(log) > int(at.LogSize) {
			log = log[:at.LogSize]
		}
		defer func() { copy(c.tryAlloc(len(log)), log) }()
	}

	mem := progMemory(p)
	r := c.reg
	r.mu.Lock()
	if err := r.reserveNewLocked(c.uid, mem); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	for _, d := range deps {
		if d.refs == 0 {
			// A map handle was revoked from another connection since
			// the lookup above.
			r.unreserveLocked(c.uid, mem)
			r.mu.Unlock()
			return 0, ErrMapRef
		}
	}

	r.mu.Unlock()
	o := &Object{kind: wire.ObjProg, cap: wire.ModeReadWrite, mem: mem, name: at.Name, p: p}
	return c.install(o, func() error {
		// Under the registry lock: the program holds its maps, and
		// hangs in the lineage of every map handle it was loaded with
		// — unless one was revoked meanwhile.
		for _, hd := range mapHandles {
			if hd.dead.Load() {
				return ErrMapRef
			}
		}
		o.deps = deps
		for _, d := range deps {
			d.refs++
			d.progRefs++
		}
		for _, hd := range mapHandles {
			addViaLocked(o, hd.src)
		}
		return r.holdBTFLocked(o, bref)
	})
}

// task describes the connection's client as "current" for test runs.
func (c *conn) task() prog.Task {
	if c.ptask == nil {
		t := &prog.StaticTask{PID: uint32(c.pid), TGID: uint32(c.pid), UID: c.uid, GID: c.gid}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(int(c.pid)) + "/comm"); err == nil {
			copy(t.Name[:15], strings.TrimSuffix(string(b), "\n"))
		}
		c.ptask = t
	}
	return c.ptask
}

// progTestRun is BPF_PROG_TEST_RUN: it needs read mode on the program.
func (c *conn) progTestRun(a, data []byte) (int64, error) {
	var at wire.TestRunAttr
	if !at.Parse(a) || at.Flags != 0 {
		return 0, ErrInvalid
	}
	if uint64(len(data)) != uint64(at.DataSizeIn)+uint64(at.CtxSizeIn) {
		return 0, ErrDataLen
	}
	hd, err := c.progHandle(at.Handle, wire.ModeRead)
	if err != nil {
		return 0, err
	}
	// The run's copies of the packet and context, and its result.
	if err := c.chargeReq(2*uint64(len(data)) + 1024); err != nil {
		return 0, err
	}
	opts := prog.RunOptions{Repeat: at.Repeat, Task: c.task()}
	if at.DataSizeIn > 0 {
		opts.Data = data[:at.DataSizeIn]
	}
	if at.CtxSizeIn > 0 {
		opts.Context = data[at.DataSizeIn:]
	}
	var res *prog.RunResult
	_, err = c.bulk(func(t *sched.Turn) (int64, error) {
		opts.Yield = func() (time.Duration, error) { return c.yield(t) }
		var err error
		res, err = hd.obj.p.TestRun(&opts)
		return 0, err
	})
	if err != nil {
		var be *errno.Error
		if errors.As(err, &be) {
			return 0, err
		}
		c.srv.log.Warn("test run faulted", zap.String("prog", hd.obj.p.Name()), zap.Error(err))
		return 0, ErrRunFault
	}
	repeat := uint64(max(at.Repeat, 1))
	hd.obj.RecordRuns(repeat, res.Duration*time.Duration(repeat))
	// Like the kernel: data out larger than the caller's buffer is cut
	// and the call fails with ENOSPC after copying what fits.
	var rerr error
	dout, cout := res.DataOut, res.ContextOut
	if at.DataSizeOut == 0 {
		dout = nil
	} else if len(dout) > int(at.DataSizeOut) {
		dout, rerr = dout[:at.DataSizeOut], unix.ENOSPC
	}
	if at.CtxSizeOut == 0 {
		cout = nil
	} else if len(cout) > int(at.CtxSizeOut) {
		cout, rerr = cout[:at.CtxSizeOut], unix.ENOSPC
	}
	out := wire.TestRunResult{DurationNs: uint32(min(res.Duration.Nanoseconds(), 1<<32-1)),
		DataSizeOut: uint32(len(dout)), CtxSizeOut: uint32(len(cout))}
	out.Append(c.alloc(wire.TestRunResultSize)[:0])
	copy(c.alloc(len(dout)), dout)
	copy(c.alloc(len(cout)), cout)
	return int64(res.Ret), rerr
}

// progDump returns a program's instructions, map references naming map
// ids, and its line info. It needs read mode.
func (c *conn) progDump(a, data []byte) (int64, error) {
	h, err := handleOnly(a, data)
	if err != nil {
		return 0, err
	}
	hd, err := c.progHandle(h, wire.ModeRead)
	if err != nil {
		return 0, err
	}
	p := hd.obj.p
	insns := c.alloc(len(p.Insns()))
	copy(insns, p.Insns())
	for pc := 0; pc+16 <= len(insns); pc += 8 {
		if insns[pc] != 0x18 {
			continue
		}
		if src := insns[pc+1] >> 4; src == 1 || src == 2 {
			i := binary.LittleEndian.Uint32(insns[pc+4:])
			if int(i) < len(hd.obj.deps) {
				binary.LittleEndian.PutUint32(insns[pc+4:], hd.obj.deps[i].id)
			}
		}
		pc += 8
	}
	var li []wire.LineInfo
	for pc, l := range p.LineInfo() {
		li = append(li, wire.LineInfo{Insn: uint32(pc), Line: l})
	}
	enc := wire.AppendLineInfo(nil, li)
	copy(c.alloc(len(enc)), enc)
	return int64(len(p.Insns()) / 8), nil
}

// progArrayElem updates or deletes a PROG_ARRAY slot: the value is a
// program handle of this connection, which needs read mode; the slot takes
// a reference on the program.
func (c *conn) progArrayElem(cmd wire.Cmd, hd *handle, at *wire.ElemAttr, data []byte) (int64, error) {
	if len(data) < 4 {
		return 0, ErrDataLen
	}
	key := data[:4]
	k := binary.NativeEndian.Uint32(key)
	r := c.reg
	if cmd == wire.CmdMapDeleteElem {
		if len(data) != 4 {
			return 0, ErrDataLen
		}
		r.mu.Lock()
		err := hd.obj.m.Delete(key)
		var free []*Object
		if err == nil {
			free = r.clearSlotLocked(hd.obj, k, nil)
		}
		r.mu.Unlock()
		closeObjects(free)
		return 0, err
	}
	if len(data) != 8 {
		return 0, ErrDataLen
	}
	ph, err := c.progHandle(binary.NativeEndian.Uint32(data[4:]), wire.ModeRead)
	if err != nil {
		if errors.Is(err, ErrPermission) {
			return 0, err
		}
		return 0, ErrSlotProg
	}
	var id [4]byte
	binary.NativeEndian.PutUint32(id[:], ph.obj.id)
	r.mu.Lock()
	if ph.dead.Load() || hd.dead.Load() {
		r.mu.Unlock()
		return 0, ErrBadHandle
	}
	if err := hd.obj.m.Update(key, id[:], at.Flags); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	var free []*Object
	if old := hd.obj.slots[k]; old != nil {
		// Replaced: the update above already stored the new id.
		delete(hd.obj.slots, k)
		if v := hd.obj.slotVia[k]; v != nil {
			delete(hd.obj.slotVia, k)
			r.dropUseLocked(v, use{array: hd.obj, key: k})
		}
		free = r.unref(old, nil)
	}
	if hd.obj.slots == nil {
		hd.obj.slots = map[uint32]*Object{}
		hd.obj.slotVia = map[uint32]*Descriptor{}
	}
	hd.obj.slots[k] = ph.obj
	ph.obj.refs++
	// The slot keeps using the program handle's authority: revoking its
	// node clears the slot.
	hd.obj.slotVia[k] = ph.src
	addUseLocked(ph.src, use{array: hd.obj, key: k})
	r.persistSlot(hd.obj, k)
	r.mu.Unlock()
	closeObjects(free)
	return 0, nil
}

// isProgArray reports whether hd names a PROG_ARRAY map.
func isProgArray(hd *handle) bool { return hd.obj.m != nil && hd.obj.spec.Type == maps.TypeProgArray }

// trace logs bpf_trace_printk output of a program (already rate-limited).
func (s *Server) trace(name, msg string) {
	s.log.Info("trace_printk", zap.String("prog", name), zap.String("msg", msg))
}

package bpfemu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Program load limits and flags (linux/bpf.h, kernel/bpf/syscall.c).
const (
	maxInsns        = 1_000_000 // BPF_COMPLEXITY_LIMIT_INSNS: E2BIG beyond
	licenseBufSize  = 128       // the kernel copies at most 127 bytes of license
	bpfFTokenFDProg = 1 << 16
	// progFlagsKnown: BPF_F_STRICT_ALIGNMENT, ANY_ALIGNMENT, TEST_RND_HI32,
	// TEST_STATE_FREQ, SLEEPABLE, XDP_HAS_FRAGS, XDP_DEV_BOUND_ONLY,
	// TEST_REG_INVARIANTS and TOKEN_FD. Other bits are EINVAL before
	// anything else; known ones go to bpfd, which decides.
	progFlagsKnown = 0xff | bpfFTokenFDProg
	// maxTestData bounds the packet a test run copies from the process;
	// bpfd's own limits (the kernel's) are far below it.
	maxTestData = 16 << 20
	// testOutMax is the output size asked from bpfd: more than any
	// program type can return, so the kernel's cut (ENOSPC) and its
	// data_size_out (the full size) are computed here.
	testOutMax = 1 << 20
)

// progLoad answers BPF_PROG_LOAD: instructions, license and name go to
// bpfd with the task's map fds (LD_IMM64 BPF_PSEUDO_MAP_FD/VALUE, or
// indexes into fd_array) replaced by the supervisor's handles of the same
// descriptors, so the program gets each map with the access the task's
// descriptor carries. The verifier log is written to log_buf as the
// kernel's (rotating, or BPF_LOG_FIXED; ENOSPC when cut) and log_true_size
// reported.
func (c *call) progLoad(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(plEnd) {
		return 0, unix.EINVAL
	}
	flags := a.u32(plProgFlags)
	if flags&^progFlagsKnown != 0 || flags&bpfFTokenFDProg != 0 || a.u32(plProgTokenFD) != 0 {
		return 0, unix.EINVAL
	}
	cnt := a.u32(plInsnCnt)
	if cnt == 0 || cnt > maxInsns {
		return 0, unix.E2BIG
	}
	// Fields for kernel objects bpfd has no counterpart of (offload
	// devices, BTF, attach targets, signatures): refused like a kernel
	// built without them.
	if a.u32(plProgIfindex) != 0 || a.u32(plAttachBTFID) != 0 ||
		a.u32(plAttachProgFD) != 0 || a.u32(plCoreReloCnt) != 0 || a.u64(plCoreRelos) != 0 ||
		a.u32(plCoreReloRecSize) != 0 || a.u32(plFDArrayCnt) != 0 || a.u64(plSignature) != 0 ||
		a.u32(plSignatureSize) != 0 || a.u32(plKeyringID) != 0 {
		return 0, unix.EINVAL
	}
	if !validObjName(a[plProgName : plProgName+bpfObjNameLen]) {
		return 0, unix.EINVAL
	}
	s := c.s
	insns := make([]byte, int(cnt)*8)
	if err := c.read(a.u64(plInsns), insns); err != nil {
		return 0, err
	}
	license, err := c.readString(a.u64(plLicense), licenseBufSize-1)
	if err == unix.ENAMETOOLONG {
		// strncpy_from_user of sizeof(license)-1 bytes: longer licenses
		// are cut, not refused.
		b := make([]byte, licenseBufSize-1)
		if err = c.read(a.u64(plLicense), b); err == nil {
			license = string(b)
		}
	}
	if err != nil {
		return 0, err
	}
	lg := verifierLog{level: a.u32(plLogLevel), size: a.u32(plLogSize), buf: a.u64(plLogBuf)}
	if !lg.valid() {
		return 0, unix.EINVAL
	}

	// Map references.
	var used []*object
	defer func() {
		for _, o := range used {
			s.put(o)
		}
	}()
	for pc := 0; pc+16 <= len(insns); pc += 8 {
		if insns[pc] != 0x18 { // BPF_LD | BPF_IMM | BPF_DW
			continue
		}
		src := insns[pc+1] >> 4
		var fd int32
		switch src {
		case bpfPseudoMapFD, bpfPseudoMapValue:
			fd = int32(binary.LittleEndian.Uint32(insns[pc+4:]))
		case bpfPseudoMapIdx, bpfPseudoMapIdxValue:
			arr := a.u64(plFDArray)
			if arr == 0 {
				return c.loadRefused(&lg, unix.EINVAL, "fd_idx without fd_array is invalid\n")
			}
			idx := binary.LittleEndian.Uint32(insns[pc+4:])
			var b [4]byte
			if err := c.read(arr+uint64(idx)*4, b[:]); err != nil {
				return 0, err
			}
			fd = int32(binary.LittleEndian.Uint32(b[:]))
			src -= bpfPseudoMapIdx - bpfPseudoMapFD
		default:
			pc += 8
			continue
		}
		o, err := c.resolve(fd)
		if err == nil && o.info.ObjType != wire.ObjMap {
			s.put(o)
			err = unix.EINVAL
		}
		if err != nil {
			if e, ok := err.(unix.Errno); ok {
				return c.loadRefused(&lg, e, "fd "+itoa(uint64(uint32(fd)))+" is not pointing to valid bpf_map\n")
			}
			return 0, err
		}
		used = append(used, o)
		insns[pc+1] = insns[pc+1]&0x0f | src<<4
		binary.LittleEndian.PutUint32(insns[pc+4:], o.handle)
		pc += 8
	}

	w := wire.ProgLoadAttr{ProgType: a.u32(plProgType), InsnCount: cnt,
		LicenseLen: uint32(len(license)), ProgFlags: flags,
		ExpectedAttachType: a.u32(plExpectedAttachType)}
	if err := c.progBTFInfo(a); err != nil {
		return 0, err
	}
	if fd := a.u32(plProgBTFFD); fd != 0 {
		bo, err := c.btfObject(fd)
		if err != nil {
			return 0, err
		}
		defer s.put(bo)
		w.BTFHandle = bo.handle
	}
	if lg.level != 0 {
		w.LogLevel = min(lg.level&3, 2)
		if w.LogLevel == 0 {
			w.LogLevel = 1 // BPF_LOG_STATS alone: the summary
		}
		w.LogSize = wire.MaxMemfdData // all of it: the cut is the kernel's, below
	}
	copy(w.Name[:], a[plProgName:plProgName+bpfObjNameLen])
	var ab [wire.ProgLoadAttrSize]byte
	r, err := c.do(wire.CmdProgLoad, w.Append(ab[:0]), nil, nil, insns, []byte(license))
	if err != nil {
		return 0, err
	}
	if r.Errno == unix.ENOSPC || r.Errno == unix.ENOMEM {
		// A quota: maybe of objects the process closed already.
		closeAll(r.FDs)
		s.collect()
		r, err = c.do(wire.CmdProgLoad, w.Append(ab[:0]), nil, nil, insns, []byte(license))
		if err != nil {
			return 0, err
		}
	}
	logText := r.Data
	if r.Errno == 0 {
		if len(logText) < wire.ObjInfoSize {
			closeAll(r.FDs)
			s.releaseHandle(uint32(r.Ret))
			return 0, unix.EIO
		}
		logText = logText[wire.ObjInfoSize:]
	}
	lerr := c.writeLog(&lg, logText)
	if r.Errno != 0 || lerr != nil || len(r.FDs) != 1 {
		closeAll(r.FDs)
		if r.Errno == 0 {
			s.releaseHandle(uint32(r.Ret))
		}
		switch {
		case lerr != nil:
			// A cut log (ENOSPC) replaces the verifier's verdict, as
			// in bpf_check; so does EFAULT writing it.
			return 0, lerr
		case r.Errno != 0:
			return 0, r.Errno
		}
		return 0, unix.EIO
	}
	meta := progMeta{gpl: licenseGPL(license), loadTime: bootTimeNS()}
	return c.install(r.FDs[0], uint32(r.Ret), r.Data[:wire.ObjInfoSize], func(o *object) {
		s.progMeta.Store(o.info.ID, meta)
	})
}

// validObjName is the kernel's bpf_obj_name_cpy check: up to the NUL,
// which must come within BPF_OBJ_NAME_LEN bytes, only [A-Za-z0-9_.].
// (bpfd checks map names itself; program names are checked here.)
func validObjName(n []byte) bool {
	for _, c := range n {
		switch {
		case c == 0:
			return true
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.':
		default:
			return false
		}
	}
	return false
}

// progMeta is what the daemon does not report about a program and the
// supervisor saw when it loaded it, for OBJ_GET_INFO_BY_FD (by program id,
// so that it holds whichever descriptor of the program the task asks
// through). Programs loaded elsewhere report no load time and a license
// that is not GPL-compatible.
type progMeta struct {
	loadTime uint64 // CLOCK_BOOTTIME ns at load
	gpl      bool   // the license is GPL-compatible
}

// loadRefused fails a load before bpfd saw it, with msg as the log.
func (c *call) loadRefused(lg *verifierLog, e unix.Errno, msg string) (int64, error) {
	if err := c.writeLog(lg, []byte(msg)); err != nil && err != unix.ENOSPC {
		return 0, err
	}
	return 0, e
}

// verifierLog is a load's log buffer as the kernel's struct
// bpf_verifier_log sees it.
type verifierLog struct {
	level, size uint32
	buf         uint64
}

// valid is bpf_verifier_log_attr_valid (Linux 6.4 and later: a level
// without a buffer only asks for log_true_size).
func (l *verifierLog) valid() bool {
	if (l.buf != 0) != (l.size != 0) {
		return false
	}
	if l.buf != 0 && l.level == 0 {
		return false
	}
	return l.level&^bpfLogMask == 0 && l.size <= bpfLogMaxSize
}

// writeLog stores text (without its NUL) in the task's log buffer as
// bpf_vlog_finalize leaves it: the whole text and a NUL if it fits; else
// the first size-1 bytes with BPF_LOG_FIXED, the last size-1 bytes
// otherwise (the kernel rotates), NUL-terminated, and ENOSPC. The full
// size (NUL included) goes to log_true_size when the attr has it.
func (c *call) writeLog(l *verifierLog, text []byte) error {
	if l.level == 0 {
		return nil
	}
	return c.writeLogAt(l, text, plLogTrueSize)
}

// writeLogAt writes the log as writeLog, whatever the level, with
// log_true_size at offset trueSizeOff of the attr (when the caller's attr
// reaches it).
func (c *call) writeLogAt(l *verifierLog, text []byte, trueSizeOff uint32) error {
	var err error
	if l.buf != 0 {
		out, _, cut := cutLog(l.level, l.size, text)
		if werr := c.write(l.buf, out); werr != nil {
			return werr
		}
		if cut {
			err = unix.ENOSPC
		}
	}
	if c.usize >= trueSizeOff+4 {
		if werr := c.writeAttr32(int(trueSizeOff), uint32(len(text)+1)); werr != nil {
			return unix.EFAULT
		}
	}
	return err
}

// cutLog is what bpf_vlog_finalize leaves of a log of text in a buffer of
// size (> 0) bytes: all of it and a NUL if it fits, else size-1 bytes and
// a NUL, the head with BPF_LOG_FIXED and the tail otherwise; trueSize
// counts the NUL, cut says ENOSPC.
func cutLog(level, size uint32, text []byte) (out []byte, trueSize uint32, cut bool) {
	trueSize = uint32(len(text) + 1)
	n := min(len(text), int(size)-1)
	part := text[:n]
	if level&bpfLogFixed == 0 {
		part = text[len(text)-n:]
	}
	out = make([]byte, n+1)
	copy(out, part)
	return out, trueSize, trueSize > size
}

// licenseGPL is the kernel's license_is_gpl_compatible.
func licenseGPL(l string) bool {
	switch l {
	case "GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL":
		return true
	}
	return false
}

// bootTimeNS is CLOCK_BOOTTIME in ns, the kernel's prog load_time clock.
func bootTimeNS() uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return uint64(ts.Nano())
}

// progTestRun answers BPF_PROG_TEST_RUN: packet and context in from the
// task, the run in bpfd, then bpf_test_finish and bpf_ctx_finish here:
// data_out cut to data_size_out (ENOSPC) or whole when data_size_out is 0
// (the old behaviour), data_size_out/ctx_size_out set to the full sizes,
// retval and duration.
func (c *call) progTestRun(a *bpfAttr) (int64, error) {
	if !a.zeroFrom(trEnd) {
		return 0, unix.EINVAL
	}
	ctxIn, ctxSizeIn := a.u64(trCtxIn), a.u32(trCtxSizeIn)
	ctxOut, ctxSizeOut := a.u64(trCtxOut), a.u32(trCtxSizeOut)
	if (ctxSizeIn != 0) != (ctxIn != 0) || (ctxSizeOut != 0) != (ctxOut != 0) {
		return 0, unix.EINVAL
	}
	s := c.s
	o, err := c.resolve(int32(a.u32(trProgFD)))
	if err != nil {
		return 0, err
	}
	defer s.put(o)
	if o.info.ObjType != wire.ObjProg {
		return 0, unix.EINVAL
	}
	if a.u32(trCPU) != 0 || a.u32(trBatchSize) != 0 {
		return 0, unix.EINVAL // no program type here runs on a chosen CPU or in batches
	}
	dataSizeIn := a.u32(trDataSizeIn)
	if dataSizeIn > maxTestData {
		return 0, unix.ENOMEM
	}
	if ctxSizeIn > pageSize {
		return 0, unix.E2BIG
	}
	in := make([]byte, int(dataSizeIn)+int(ctxSizeIn))
	if err := c.read(a.u64(trDataIn), in[:dataSizeIn]); err != nil {
		return 0, err
	}
	if err := c.read(ctxIn, in[dataSizeIn:]); err != nil {
		return 0, err
	}
	w := wire.TestRunAttr{Handle: o.handle, Repeat: a.u32(trRepeat), DataSizeIn: dataSizeIn,
		DataSizeOut: testOutMax, CtxSizeIn: ctxSizeIn, Flags: a.u32(trFlags)}
	if ctxSizeIn != 0 || ctxOut != 0 {
		w.CtxSizeOut = testOutMax
	}
	var ab [wire.TestRunAttrSize]byte
	r, err := c.do(wire.CmdProgTestRun, w.Append(ab[:0]), nil, nil, in[:dataSizeIn], in[dataSizeIn:])
	if err != nil {
		return 0, err
	}
	closeAll(r.FDs)
	if r.Errno != 0 {
		return 0, r.Errno
	}
	var res wire.TestRunResult
	if !res.Parse(r.Data) || uint64(len(r.Data)) < wire.TestRunResultSize+uint64(res.DataSizeOut)+uint64(res.CtxSizeOut) {
		return 0, unix.EIO
	}
	dout := r.Data[wire.TestRunResultSize : wire.TestRunResultSize+res.DataSizeOut]
	cout := r.Data[wire.TestRunResultSize+res.DataSizeOut:][:res.CtxSizeOut]

	// bpf_test_finish.
	var ret error
	copySize := len(dout)
	if want := a.u32(trDataSizeOut); want != 0 && copySize > int(want) {
		copySize, ret = int(want), unix.ENOSPC
	}
	if uout := a.u64(trDataOut); uout != 0 {
		if err := c.write(uout, dout[:copySize]); err != nil {
			return 0, err
		}
	}
	if err := c.writeAttr32(trDataSizeOut, uint32(len(dout))); err != nil {
		return 0, err
	}
	if err := c.writeAttr32(trRetval, uint32(r.Ret)); err != nil {
		return 0, err
	}
	if err := c.writeAttr32(trDuration, res.DurationNs); err != nil {
		return 0, err
	}
	if ret != nil {
		return 0, ret
	}
	// bpf_ctx_finish.
	if ctxOut != 0 && (ctxSizeIn != 0 || len(cout) > 0) {
		n := len(cout)
		if n > int(ctxSizeOut) {
			n, ret = int(ctxSizeOut), unix.ENOSPC
		}
		if err := c.write(ctxOut, cout[:n]); err != nil {
			return 0, err
		}
		if err := c.writeAttr32(trCtxSizeOut, uint32(len(cout))); err != nil {
			return 0, err
		}
	}
	if ret != nil {
		return 0, ret
	}
	return 0, nil
}

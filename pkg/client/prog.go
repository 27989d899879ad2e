package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// ProgramType is a program type, numbered as the kernel's enum
// bpf_prog_type; Seccomp is bpfd's own, outside the kernel's range.
type ProgramType uint32

// Program types.
const (
	SocketFilter ProgramType = 1
	XDP          ProgramType = 6
	// Seccomp programs decide syscalls routed to bpfd by a seccomp
	// user-notification filter: they run on struct seccomp_data and
	// return a SECCOMP_RET_* action.
	Seccomp ProgramType = 0x1000
)

// String returns the type's name as bpftool prints it.
func (t ProgramType) String() string {
	switch t {
	case SocketFilter:
		return "socket_filter"
	case XDP:
		return "xdp"
	case Seccomp:
		return "seccomp"
	}
	return "type(" + itoa(uint64(t)) + ")"
}

// DefaultLogSize is how much verifier log LoadProgram asks for when
// ProgramSpec.LogSize is 0.
const DefaultLogSize = 64 << 10

// ProgramSpec describes a program to load. It is plain data.
type ProgramSpec struct {
	Type ProgramType
	// Instructions reference maps exactly as with the kernel:
	// asm.LoadMapPtr(asm.R1, m.FD()) (or an instruction associated with a
	// *Map); LoadProgram turns descriptors into handles on the wire.
	Instructions asm.Instructions
	License      string
	Name         string
	// LogLevel 1 keeps the verifier's summary of a successful load
	// (Program.VerifierLog), 2 a trace of every instruction.
	LogLevel uint32
	// LogSize caps the verifier log returned, in bytes (0:
	// DefaultLogSize).
	LogSize int
	// BTF, if set, is the BTF object of the program's source (as the
	// kernel's prog_btf_fd); the program reports its id (ProgramInfo.BTFID)
	// and keeps it alive.
	BTF *BTF
	// AttachType is the kernel's expected_attach_type (cilium/ebpf's
	// ProgramSpec.AttachType): for XDP, ebpf.AttachXDPDevMap or
	// ebpf.AttachXDPCPUMap marks a program for a device or CPU map,
	// which cannot be test run (EINVAL, as in the kernel). 0: none.
	AttachType uint32
}

// ProgramInfo describes a program as seen through one descriptor.
type ProgramInfo struct {
	Type        ProgramType
	ID          uint32
	Name        string
	Mode        Mode // this descriptor's mode
	InsnCount   int
	Tag         [8]byte
	MemoryUsage uint64
	OwnerUID    uint32
	Node        uint64 // the descriptor's lineage node, as MapInfo.Node
	BTFID       uint32 // the program's BTF object (0: none)
}

func progInfo(o *wire.ObjInfo) ProgramInfo {
	return ProgramInfo{Type: ProgramType(o.Type), ID: o.ID, Name: wire.NameString(o.Name),
		Mode: Mode(o.Mode), InsnCount: int(o.InsnCount), Tag: o.Tag,
		MemoryUsage: o.MemoryUsage, OwnerUID: o.OwnerUID, Node: o.Node, BTFID: o.BTFID}
}

// VerifierError is a program refused at load. It matches its errno with
// errors.Is (unix.EACCES for an unsafe program or one that uses a map
// beyond its handle's mode, unix.EINVAL for a malformed one, unix.E2BIG for
// one too complex) and the client sentinel for that errno (ErrAccess,
// ErrInvalid, ErrTooBig).
type VerifierError struct {
	Errno unix.Errno
	// Log names the failing instruction, disassembled, with the register
	// states and the source line when known.
	Log string
}

// Error returns the log's last line, the reason.
func (e *VerifierError) Error() string {
	lines := strings.Split(strings.TrimRight(e.Log, "\n"), "\n")
	return "bpfd: verifier: " + lines[len(lines)-1]
}

// Unwrap returns the errno, so errors.As(err, &errno) works.
func (e *VerifierError) Unwrap() error { return e.Errno }

// Is matches the errno and its sentinel.
func (e *VerifierError) Is(target error) bool {
	if t, ok := target.(unix.Errno); ok {
		return t == e.Errno
	}
	return errors.Is(errnoErr(uint32(e.Errno)), target)
}

// Program is a program reached through one descriptor: a handle on its
// Conn plus the descriptor, a kernel fd the Program owns. Read mode lets
// its holder run and inspect it; write mode, attach and detach it. Safe for
// concurrent use; it must be closed.
type Program struct {
	ref
	info ProgramInfo
	log  string
}

var _ io.Closer = (*Program)(nil)

func (p *Program) pinTarget() *ref { return &p.ref }

// newProgram builds a Program from a reply carrying its handle, ObjInfo
// and descriptor fd (ownership passes). On failure it releases the handle
// and closes fd.
func (c *Conn) newProgram(w *waiter, fd int) (*Program, error) {
	r, o, err := c.newRef(w, fd, wire.ObjProg)
	if err != nil {
		return nil, err
	}
	p := &Program{ref: r, info: progInfo(o)}
	if data, _ := w.payload(); len(data) > wire.ObjInfoSize {
		p.log = string(data[wire.ObjInfoSize:])
	}
	c.byFD.Store(fd, p)
	return p, nil
}

// LoadProgram verifies and loads a program and returns it with a
// read-write descriptor. Each map the instructions reference (by
// descriptor) must be open on c, or be a bpfd descriptor c can import; the
// program gets each map with that descriptor's mode, so a program that
// writes a map through a read-only descriptor is refused. A refusal is a
// *VerifierError; other failures: ErrInvalid (bad spec, unknown map
// descriptor), ErrBadDescriptor (a map reference that is not a bpfd
// descriptor), ErrNoSpace/ErrNoMemory (quota), ErrClosed.
func (c *Conn) LoadProgram(spec ProgramSpec) (*Program, error) {
	if len(spec.Name) >= wire.ObjNameLen {
		return nil, errName
	}
	insns := append(asm.Instructions(nil), spec.Instructions...)
	setAtomicImm(insns)
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		return nil, fmt.Errorf("bpfd: marshal instructions: %w", err)
	}
	raw := buf.Bytes()
	imported, err := c.mapHandles(raw)
	defer func() {
		for _, m := range imported {
			m.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	var li []wire.LineInfo
	iter := insns.Iterate()
	for iter.Next() {
		if l, ok := iter.Ins.Source().(*btf.Line); ok && l != nil {
			li = append(li, wire.LineInfo{Insn: uint32(iter.Offset),
				Line: fmt.Sprintf("%s:%d: %s", filepath.Base(l.FileName()), l.LineNumber(), strings.TrimSpace(l.Line()))})
		}
	}
	lines := wire.AppendLineInfo(nil, li)
	logSize := spec.LogSize
	if logSize <= 0 {
		logSize = DefaultLogSize
	}
	a := wire.ProgLoadAttr{ProgType: uint32(spec.Type), InsnCount: uint32(len(raw) / 8),
		LicenseLen: uint32(len(spec.License)), LineInfoLen: uint32(len(lines)),
		LogLevel: spec.LogLevel, LogSize: uint32(logSize), ExpectedAttachType: spec.AttachType}
	copy(a.Name[:], spec.Name)
	if spec.BTF != nil {
		a.BTFHandle = spec.BTF.handle
	}
	var ab [wire.ProgLoadAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := c.do(w, nil, wire.CmdProgLoad, a.Append(ab[:0]), nil, raw, []byte(spec.License), lines); err != nil {
		return nil, err
	}
	defer w.closeFDs()
	if w.hdr.Errno != 0 {
		data, perr := w.payload()
		if perr == nil && len(data) > 0 {
			return nil, &VerifierError{Errno: unix.Errno(w.hdr.Errno), Log: string(data)}
		}
		return nil, errnoErr(w.hdr.Errno)
	}
	return c.newProgram(w, w.takeFD(0))
}

// mapHandles rewrites the descriptors named by LD_IMM64 map references in
// raw into handles of c, importing descriptors c does not know; the
// caller closes the imported maps once the load is done.
func (c *Conn) mapHandles(raw []byte) (imported []*Map, err error) {
	byFD := map[int]uint32{}
	for pc := 0; pc+16 <= len(raw); pc += 8 {
		if raw[pc] != 0x18 {
			continue
		}
		if src := raw[pc+1] >> 4; src == 1 || src == 2 {
			fd := int(int32(binary.LittleEndian.Uint32(raw[pc+4:])))
			h, ok := byFD[fd]
			if !ok {
				if m := c.mapByFD(fd); m != nil {
					h = m.handle
				} else {
					m, err := c.ImportMap(fd)
					if err != nil {
						return imported, fmt.Errorf("bpfd: instruction %d references fd %d: %w", pc/8, fd, err)
					}
					imported = append(imported, m)
					h = m.handle
				}
				byFD[fd] = h
			}
			binary.LittleEndian.PutUint32(raw[pc+4:], h)
		}
		pc += 8
	}
	return imported, nil
}

// ImportProgram presents a program descriptor received from elsewhere and
// returns a Program with the descriptor's mode. The caller keeps fd;
// ImportProgram works on a duplicate the Program owns. Errors as
// ImportMap; ErrInvalid if fd names a map.
func (c *Conn) ImportProgram(fd int) (*Program, error) {
	var p *Program
	err := c.importFD(fd, func(w *waiter, dup int) (err error) {
		p, err = c.newProgram(w, dup)
		return err
	})
	return p, err
}

// OpenPinnedProgram is OpenPinnedMap for a pinned program.
func (c *Conn) OpenPinnedProgram(path string, mode Mode) (*Program, error) {
	var p *Program
	err := c.openPinned(path, mode, func(w *waiter, fd int) (err error) {
		p, err = c.newProgram(w, fd)
		return err
	})
	return p, err
}

// OpenPinned opens a pin of any kind and returns a *Map, a *Program or a *Link.
func (c *Conn) OpenPinned(path string, mode Mode) (io.Closer, error) {
	var obj io.Closer
	err := c.openPinned(path, mode, func(w *waiter, fd int) error {
		data, err := w.payload()
		var o wire.ObjInfo
		if err == nil && !o.Parse(data) {
			err = errProtocol
		}
		if err != nil {
			c.release(uint32(w.hdr.Ret))
			unix.Close(fd)
			return err
		}
		if o.ObjType == wire.ObjProg {
			obj, err = c.newProgram(w, fd)
		} else if o.ObjType == wire.ObjLink {
			obj, err = c.newLink(w, fd)
		} else {
			obj, err = c.newMap(w, fd)
		}
		return err
	})
	return obj, err
}

// FD returns the program's descriptor, owned by p.
func (p *Program) FD() int { return p.fd }

// Type returns the program type.
func (p *Program) Type() ProgramType { return p.info.Type }

// Mode returns the mode of p's descriptor.
func (p *Program) Mode() Mode { return p.info.Mode }

// VerifierLog returns the verifier's log of the load, kept when
// ProgramSpec.LogLevel > 0 ("" otherwise, and for imported programs).
func (p *Program) VerifierLog() string { return p.log }

// Info asks the daemon for the program's description through p.
func (p *Program) Info() (ProgramInfo, error) {
	w, err := p.c.handleCmd(&p.ref, wire.CmdObjGetInfo, 0)
	if err != nil {
		return ProgramInfo{}, err
	}
	defer putWaiter(w)
	data, err := w.payload()
	if err != nil {
		return ProgramInfo{}, err
	}
	var o wire.ObjInfo
	if !o.Parse(data) {
		return ProgramInfo{}, errProtocol
	}
	return progInfo(&o), nil
}

// Reopen returns a new Program (handle and descriptor) for the same
// program with mode, which must be a subset of p's: ErrPermission
// otherwise.
func (p *Program) Reopen(mode Mode) (*Program, error) {
	if !wire.Mode(mode).Valid() {
		return nil, errMode
	}
	w, err := p.c.handleCmd(&p.ref, wire.CmdReopen, wire.Mode(mode))
	if err != nil {
		return nil, err
	}
	defer putWaiter(w)
	defer w.closeFDs()
	return p.c.newProgram(w, w.takeFD(0))
}

// Dump returns the program's instructions (map references name map ids)
// and its source lines by instruction index. It needs read mode.
func (p *Program) Dump() (insns []byte, lines map[int]string, err error) {
	w, err := p.c.handleCmd(&p.ref, wire.CmdProgDump, 0)
	if err != nil {
		return nil, nil, err
	}
	defer putWaiter(w)
	data, err := w.payload()
	if err != nil {
		return nil, nil, err
	}
	n := int(w.hdr.Ret) * 8
	if n < 0 || n > len(data) {
		return nil, nil, errProtocol
	}
	li, ok := wire.ParseLineInfo(data[n:])
	if !ok {
		return nil, nil, errProtocol
	}
	lines = make(map[int]string, len(li))
	for _, l := range li {
		lines[int(l.Insn)] = l.Line
	}
	return append([]byte(nil), data[:n]...), lines, nil
}

// RunOptions are a test run's inputs and outputs, as cilium/ebpf's
// RunOptions and the kernel's BPF_PROG_TEST_RUN.
type RunOptions struct {
	// Data is the packet (socket filter, XDP): an Ethernet frame.
	Data []byte
	// DataOut, if not nil, receives the packet after the run and is
	// resliced to its length; a buffer too small fails with ErrNoSpace
	// after filling it.
	DataOut []byte
	// Context is the context in: a []byte or a fixed-size value encoded
	// little-endian (for Seccomp, struct seccomp_data).
	Context any
	// ContextOut, if not nil, receives the context after the run: a
	// []byte (resliced) or a pointer to a fixed-size value.
	ContextOut any
	// Repeat runs the program this many times (0 means once).
	Repeat uint32
	// Duration is set by Run to the mean time of one run.
	Duration time.Duration
	// R0 is set by Run to the program's full 64-bit return value.
	R0 uint64
}

// Run runs the program on opts (BPF_PROG_TEST_RUN) and returns its return
// value's low 32 bits, as the kernel reports it (opts.R0 has all 64). It
// needs read mode (ErrPermission). Inputs the kernel would refuse (a
// packet shorter than an Ethernet header, say) give ErrInvalid.
func (p *Program) Run(opts *RunOptions) (uint32, error) {
	if opts == nil {
		opts = &RunOptions{}
	}
	var ctx []byte
	switch v := opts.Context.(type) {
	case nil:
	case []byte:
		ctx = v
	default:
		var b bytes.Buffer
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			return 0, invalid("bpfd: encode context: " + err.Error())
		}
		ctx = b.Bytes()
	}
	ctxOut := 0
	switch v := opts.ContextOut.(type) {
	case nil:
	case []byte:
		ctxOut = len(v)
	default:
		ctxOut = binary.Size(v)
		if ctxOut < 0 {
			return 0, invalid("bpfd: ContextOut must be a []byte or a pointer to a fixed-size value")
		}
	}
	a := wire.TestRunAttr{Handle: p.handle, Repeat: opts.Repeat, DataSizeIn: uint32(len(opts.Data)),
		DataSizeOut: uint32(len(opts.DataOut)), CtxSizeIn: uint32(len(ctx)), CtxSizeOut: uint32(ctxOut)}
	var ab [wire.TestRunAttrSize]byte
	w := getWaiter()
	defer putWaiter(w)
	if err := p.c.do(w, &p.ref, wire.CmdProgTestRun, a.Append(ab[:0]), nil, opts.Data, ctx); err != nil {
		return 0, err
	}
	defer w.closeFDs()
	errRun := errnoErr(w.hdr.Errno)
	if errRun != nil && w.hdr.Errno != uint32(unix.ENOSPC) {
		return 0, errRun
	}
	data, err := w.payload()
	if err != nil {
		return 0, err
	}
	var res wire.TestRunResult
	if !res.Parse(data) || uint64(len(data)) < wire.TestRunResultSize+uint64(res.DataSizeOut)+uint64(res.CtxSizeOut) {
		return 0, errProtocol
	}
	data = data[wire.TestRunResultSize:]
	if opts.DataOut != nil {
		n := copy(opts.DataOut, data[:res.DataSizeOut])
		opts.DataOut = opts.DataOut[:n]
	}
	data = data[res.DataSizeOut:]
	switch v := opts.ContextOut.(type) {
	case nil:
	case []byte:
		n := copy(v, data[:res.CtxSizeOut])
		opts.ContextOut = v[:n]
	default:
		if err := binary.Read(bytes.NewReader(data[:res.CtxSizeOut]), binary.LittleEndian, v); err != nil {
			return 0, invalid("bpfd: decode context out: " + err.Error())
		}
	}
	opts.Duration = time.Duration(res.DurationNs)
	opts.R0 = uint64(w.hdr.Ret)
	return uint32(w.hdr.Ret), errRun
}

// Close releases p's handle and closes its descriptor; the program lives
// on while other references hold it. A second Close returns ErrClosed.
func (p *Program) Close() error { return p.ref.close() }

// handleCmd runs a command whose attr is a HandleAttr on r with mode and
// returns the waiter holding the reply (the caller puts it back), or the
// error.
func (c *Conn) handleCmd(r *ref, cmd wire.Cmd, mode wire.Mode) (*waiter, error) {
	var ab [wire.HandleAttrSize]byte
	attr := (&wire.HandleAttr{Handle: r.handle, Mode: mode}).Append(ab[:0])
	w := getWaiter()
	if err := c.do(w, r, cmd, attr, nil); err != nil {
		putWaiter(w)
		return nil, err
	}
	if err := errnoErr(w.hdr.Errno); err != nil {
		w.closeFDs()
		putWaiter(w)
		return nil, err
	}
	return w, nil
}

// callPayload runs a connection-level command (no handle) with attr and
// hands its reply payload to decode, which may use it only during the
// call. It returns the command's error, or decode's.
func (c *Conn) callPayload(cmd wire.Cmd, attr []byte, decode func([]byte) error) error {
	w := getWaiter()
	defer putWaiter(w)
	if err := c.do(w, nil, cmd, attr, nil); err != nil {
		return err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return err
	}
	data, err := w.payload()
	if err != nil {
		return err
	}
	return decode(data)
}

// errProgFD reports a PROG_ARRAY value that is not a program of this
// connection.
var errProgFD = invalid("bpfd: a program array value must be the descriptor of a Program open on this connection")

// progArrayValue turns a PROG_ARRAY value (a program descriptor, as with
// the kernel) into the program's handle on c.
func (c *Conn) progArrayValue(value []byte) ([]byte, error) {
	fd := int(int32(binary.NativeEndian.Uint32(value)))
	p := c.progByFD(fd)
	if p == nil {
		return nil, errProgFD
	}
	out := make([]byte, 4)
	binary.NativeEndian.PutUint32(out, p.handle)
	return out, nil
}

// Revoke revokes the descriptor p was made with by Reopen, as Map.Revoke.
func (p *Program) Revoke() error { return p.ref.revoke() }

// Destroy destroys the program, as Map.Destroy; attachments using it keep
// it until they end.
func (p *Program) Destroy() error { return p.ref.destroy() }

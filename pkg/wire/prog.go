package wire

// CmdProgDump returns a program's instructions (attr: HandleAttr with Mode
// 0; needs read mode). Reply: Ret = instruction count, data = the
// instructions, with map references naming map ids instead of handles,
// then the line info (AppendLineInfo encoding).
const CmdProgDump Cmd = 0x110

// ProgLoadAttr is CmdProgLoad's attr (56 bytes; older clients send 48).
//
// Request data: InsnCount raw instructions (8 bytes each, bpf_attr.insns
// format) | License (LicenseLen bytes, no NUL needed) | line info
// (LineInfoLen bytes, see AppendLineInfo). Map references are LD_IMM64
// pseudo instructions naming a handle of this connection: src 1
// (BPF_PSEUDO_MAP_FD) with imm = handle, src 2 (BPF_PSEUDO_MAP_VALUE) with
// imm = handle and the second imm = offset into the value; src 4
// (BPF_PSEUDO_FUNC) names a subprogram by relative offset, as the kernel's.
// A program may use a map only as its handle's mode allows.
//
// Reply: Ret = handle, fd 0 = descriptor (mode read-write), data =
// ObjInfo. On failure the errno is EACCES or EINVAL (E2BIG when too
// complex) and the data is the verifier log, cut to LogSize bytes (0 = no
// log).
type ProgLoadAttr struct {
	ProgType    uint32
	InsnCount   uint32
	LicenseLen  uint32
	LineInfoLen uint32
	LogLevel    uint32
	LogSize     uint32
	ProgFlags   uint32
	// ExpectedAttachType is the kernel's expected_attach_type (enum
	// bpf_attach_type); 0 for none. It takes the word that was padding,
	// so older clients send 0.
	ExpectedAttachType uint32
	Name               [ObjNameLen]byte
	// BTFHandle @48 names the BTF object of the program's source (as
	// bpf_attr's prog_btf_fd): its id is reported as the program's
	// btf_id. 0: none. @52 is zero.
	BTFHandle uint32
}

// ProgLoadAttrSize is the encoded size of ProgLoadAttr.
const ProgLoadAttrSize = 56

// Append appends a's encoding to b.
func (a *ProgLoadAttr) Append(b []byte) []byte {
	for _, v := range [...]uint32{a.ProgType, a.InsnCount, a.LicenseLen, a.LineInfoLen,
		a.LogLevel, a.LogSize, a.ProgFlags, a.ExpectedAttachType} {
		b = le.AppendUint32(b, v)
	}
	b = append(b, a.Name[:]...)
	b = le.AppendUint32(b, a.BTFHandle)
	return le.AppendUint32(b, 0)
}

// Parse decodes a from a normalised attr; false if the pad word @52 is
// set.
func (a *ProgLoadAttr) Parse(b []byte) bool {
	f := [...]*uint32{&a.ProgType, &a.InsnCount, &a.LicenseLen, &a.LineInfoLen,
		&a.LogLevel, &a.LogSize, &a.ProgFlags, &a.ExpectedAttachType}
	for i, p := range f {
		*p = le.Uint32(b[4*i:])
	}
	copy(a.Name[:], b[32:48])
	a.BTFHandle = le.Uint32(b[48:])
	return le.Uint32(b[52:]) == 0
}

// LineInfo ties an instruction to a line of source, for verifier logs and
// disassembly.
type LineInfo struct {
	Insn uint32 // instruction index
	Line string // "file.c:12: source text"
}

// AppendLineInfo appends the encoding of lines: per entry, u32 instruction
// index, u32 length, then the text.
func AppendLineInfo(b []byte, lines []LineInfo) []byte {
	for _, l := range lines {
		b = le.AppendUint32(b, l.Insn)
		b = le.AppendUint32(b, uint32(len(l.Line)))
		b = append(b, l.Line...)
	}
	return b
}

// ParseLineInfo decodes AppendLineInfo's encoding; false if b is malformed.
func ParseLineInfo(b []byte) ([]LineInfo, bool) {
	var out []LineInfo
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, false
		}
		insn, n := le.Uint32(b), le.Uint32(b[4:])
		b = b[8:]
		if uint64(n) > uint64(len(b)) {
			return nil, false
		}
		out = append(out, LineInfo{Insn: insn, Line: string(b[:n])})
		b = b[n:]
	}
	return out, true
}

// TestRunAttr is CmdProgTestRun's attr (32 bytes), as BPF_PROG_TEST_RUN.
// The handle needs read mode. Request data: DataSizeIn bytes of packet data
// then CtxSizeIn bytes of context. DataSizeOut and CtxSizeOut are the most
// the caller accepts back (0: none).
//
// Reply: Ret = the program's return value (r0, 64 bits; the kernel reports
// its low 32 bits), data = TestRunResult (16 bytes) | data out | ctx out.
type TestRunAttr struct {
	Handle      uint32
	Repeat      uint32
	DataSizeIn  uint32
	DataSizeOut uint32
	CtxSizeIn   uint32
	CtxSizeOut  uint32
	Flags       uint32
}

// TestRunAttrSize is the encoded size of TestRunAttr.
const TestRunAttrSize = 32

// Append appends a's encoding to b.
func (a *TestRunAttr) Append(b []byte) []byte {
	for _, v := range [...]uint32{a.Handle, a.Repeat, a.DataSizeIn, a.DataSizeOut,
		a.CtxSizeIn, a.CtxSizeOut, a.Flags, 0} {
		b = le.AppendUint32(b, v)
	}
	return b
}

// Parse decodes a from a normalised attr; false if the pad word is set.
func (a *TestRunAttr) Parse(b []byte) bool {
	f := [...]*uint32{&a.Handle, &a.Repeat, &a.DataSizeIn, &a.DataSizeOut,
		&a.CtxSizeIn, &a.CtxSizeOut, &a.Flags}
	for i, p := range f {
		*p = le.Uint32(b[4*i:])
	}
	return le.Uint32(b[28:]) == 0
}

// TestRunResult leads a CmdProgTestRun reply's data.
type TestRunResult struct {
	DurationNs  uint32 // mean time per run, as the kernel's duration
	DataSizeOut uint32 // bytes of data out that follow
	CtxSizeOut  uint32 // bytes of context out that follow them
}

// TestRunResultSize is the encoded size of TestRunResult.
const TestRunResultSize = 16

// Append appends r's encoding to b.
func (r *TestRunResult) Append(b []byte) []byte {
	b = le.AppendUint32(b, r.DurationNs)
	b = le.AppendUint32(b, r.DataSizeOut)
	b = le.AppendUint32(b, r.CtxSizeOut)
	return le.AppendUint32(b, 0)
}

// Parse decodes r; false if b is too short.
func (r *TestRunResult) Parse(b []byte) bool {
	if len(b) < TestRunResultSize {
		return false
	}
	r.DurationNs = le.Uint32(b)
	r.DataSizeOut = le.Uint32(b[4:])
	r.CtxSizeOut = le.Uint32(b[8:])
	return true
}

// CmdDestroy destroys an object (attr: HandleAttr with Mode 0): every
// descriptor and handle of it, in every process, is revoked and every pin
// file of it removed, at once. The handle must hold ModeDestroy: EPERM
// otherwise. Reply: Ret 0.
const CmdDestroy Cmd = 0x111

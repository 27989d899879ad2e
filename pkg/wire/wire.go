// Package wire is bpfd's protocol encoding: the request and reply headers,
// the command numbers and every command's attr layout. It is shared by the
// server (pkg/demux) and the Go client (pkg/client); it lives apart from
// demux so that a client links the encoding without the server.
//
// Every message is one SOCK_SEQPACKET datagram. A request is
//
//	ReqHeader (16 bytes) | attr (AttrLen bytes) | data (DataLen bytes)
//
// and a reply is
//
//	ReplyHeader (24 bytes) | data (DataLen bytes)
//
// all little-endian. When ReqFlagMemfd is set, the data does not follow in
// the message: it is the content of a sealed memfd passed as the request's
// last SCM_RIGHTS fd, DataLen bytes long (ReplyFlagMemfd likewise for
// replies). docs/protocol.md describes each command.
//
// The attr of a command is versioned like bpf_attr: a peer may send a longer
// attr than this version knows; the unknown tail must be zero (E2BIG
// otherwise). A shorter attr is zero-extended.
//
// Functions here are pure and safe for concurrent use.
package wire

import (
	"encoding/binary"
	"errors"
)

// Cmd is a command number. Where a command has a bpf(2) equivalent it has
// the kernel's number (enum bpf_cmd); bpfd's own commands start at 0x100.
type Cmd uint32

// Commands.
const (
	CmdMapCreate               Cmd = 0
	CmdMapLookupElem           Cmd = 1
	CmdMapUpdateElem           Cmd = 2
	CmdMapDeleteElem           Cmd = 3
	CmdMapGetNextKey           Cmd = 4
	CmdProgLoad                Cmd = 5
	CmdObjPin                  Cmd = 6
	CmdObjGet                  Cmd = 7
	CmdProgAttach              Cmd = 8
	CmdProgDetach              Cmd = 9
	CmdProgTestRun             Cmd = 10
	CmdObjGetInfo              Cmd = 15
	CmdMapLookupAndDeleteElem  Cmd = 21
	CmdMapFreeze               Cmd = 22
	CmdMapLookupBatch          Cmd = 24
	CmdMapLookupAndDeleteBatch Cmd = 25
	CmdMapUpdateBatch          Cmd = 26
	CmdMapDeleteBatch          Cmd = 27
	CmdHello                   Cmd = 0x100
	CmdImport                  Cmd = 0x101
	CmdReopen                  Cmd = 0x102
	CmdRelease                 Cmd = 0x103
	CmdStatus                  Cmd = 0x104
	CmdRevoke                  Cmd = 0x105
)

var cmdNames = map[Cmd]string{
	CmdMapCreate: "MAP_CREATE", CmdMapLookupElem: "MAP_LOOKUP_ELEM",
	CmdMapUpdateElem: "MAP_UPDATE_ELEM", CmdMapDeleteElem: "MAP_DELETE_ELEM",
	CmdMapGetNextKey: "MAP_GET_NEXT_KEY", CmdProgLoad: "PROG_LOAD",
	CmdObjPin: "OBJ_PIN", CmdObjGet: "OBJ_GET", CmdProgAttach: "PROG_ATTACH",
	CmdProgDetach: "PROG_DETACH", CmdProgTestRun: "PROG_TEST_RUN",
	CmdObjGetInfo: "OBJ_GET_INFO", CmdMapLookupAndDeleteElem: "MAP_LOOKUP_AND_DELETE_ELEM",
	CmdMapFreeze: "MAP_FREEZE", CmdMapLookupBatch: "MAP_LOOKUP_BATCH",
	CmdMapLookupAndDeleteBatch: "MAP_LOOKUP_AND_DELETE_BATCH",
	CmdMapUpdateBatch:          "MAP_UPDATE_BATCH", CmdMapDeleteBatch: "MAP_DELETE_BATCH",
	CmdHello: "HELLO", CmdImport: "IMPORT", CmdReopen: "REOPEN",
	CmdRelease: "RELEASE", CmdStatus: "STATUS", CmdRevoke: "REVOKE",
	CmdProgDump: "PROG_DUMP", CmdDestroy: "DESTROY",
}

// String returns the command's name, or "CMD(n)" for an unknown one.
func (c Cmd) String() string {
	if s, ok := cmdNames[c]; ok {
		return s
	}
	return "CMD(" + itoa(uint64(c)) + ")"
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// Protocol limits.
const (
	// Version is the protocol version this package speaks (CmdHello).
	Version = 1
	// MaxMessage is the largest datagram either side sends or accepts;
	// larger data travels in a sealed memfd.
	MaxMessage = 64 << 10
	// MaxMemfdData caps the data a peer may pass in a memfd.
	MaxMemfdData = 256 << 20
	// MaxFDs is the most fds one message may carry; more is an error and
	// every fd received is closed.
	MaxFDs = 8
	// MaxAttr caps AttrLen, including any zero tail from a newer peer.
	MaxAttr = 4096
	// ObjNameLen is the size of object names, as BPF_OBJ_NAME_LEN.
	ObjNameLen = 16
)

// Request header flags.
const (
	// ReqFlagMemfd: the request data is in a sealed memfd passed as the
	// last fd (seals required: SealsRequired).
	ReqFlagMemfd uint32 = 1 << 0
)

// Reply header flags.
const (
	// ReplyFlagMemfd: the reply data is in a sealed memfd passed as the
	// reply's last fd.
	ReplyFlagMemfd uint32 = 1 << 0
	// ReplyFlagGoodbye marks a message that answers no request: the
	// daemon is shutting down for good and closes the connection next
	// (Errno ESHUTDOWN). A client that sees the connection end without
	// it may reconnect (the daemon crashed and is being restarted).
	ReplyFlagGoodbye uint32 = 1 << 1
)

// ReqHeaderSize and ReplyHeaderSize are the encoded header sizes.
const (
	ReqHeaderSize   = 16
	ReplyHeaderSize = 24
)

// ReqHeader starts every request.
type ReqHeader struct {
	Cmd     Cmd
	Flags   uint32
	AttrLen uint32
	DataLen uint32
}

// ReplyHeader starts every reply. Errno is 0 on success; a failing reply may
// still carry Ret and data (batch operations report a partial count).
type ReplyHeader struct {
	Errno   uint32
	Flags   uint32
	Ret     int64
	DataLen uint32
	_       uint32
}

// Errors from decoding. They describe malformed messages; the server answers
// them with EINVAL (E2BIG for ErrAttrTail).
var (
	ErrShort    = errors.New("wire: message too short")
	ErrAttrTail = errors.New("wire: non-zero bytes in attr beyond this version")
	ErrTooLarge = errors.New("wire: length exceeds protocol limit")
	ErrFlags    = errors.New("wire: unknown header flags")
)

// AppendReqHeader appends h's encoding to b.
func AppendReqHeader(b []byte, h ReqHeader) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Cmd))
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	b = binary.LittleEndian.AppendUint32(b, h.AttrLen)
	return binary.LittleEndian.AppendUint32(b, h.DataLen)
}

// ParseRequest splits a request datagram into header, attr and inline data.
// With ReqFlagMemfd, data is empty and h.DataLen says how much the memfd
// holds. It returns ErrShort, ErrTooLarge or ErrFlags for malformed input and
// never allocates.
func ParseRequest(msg []byte) (h ReqHeader, attr, data []byte, err error) {
	if len(msg) < ReqHeaderSize {
		return h, nil, nil, ErrShort
	}
	h.Cmd = Cmd(binary.LittleEndian.Uint32(msg[0:]))
	h.Flags = binary.LittleEndian.Uint32(msg[4:])
	h.AttrLen = binary.LittleEndian.Uint32(msg[8:])
	h.DataLen = binary.LittleEndian.Uint32(msg[12:])
	if h.Flags&^ReqFlagMemfd != 0 {
		return h, nil, nil, ErrFlags
	}
	if h.AttrLen > MaxAttr {
		return h, nil, nil, ErrTooLarge
	}
	rest := msg[ReqHeaderSize:]
	if uint64(len(rest)) < uint64(h.AttrLen) {
		return h, nil, nil, ErrShort
	}
	attr, rest = rest[:h.AttrLen], rest[h.AttrLen:]
	if h.Flags&ReqFlagMemfd != 0 {
		if len(rest) != 0 {
			return h, nil, nil, ErrTooLarge
		}
		if h.DataLen > MaxMemfdData {
			return h, nil, nil, ErrTooLarge
		}
		return h, attr, nil, nil
	}
	if uint64(len(rest)) != uint64(h.DataLen) {
		return h, nil, nil, ErrShort
	}
	return h, attr, rest, nil
}

// AppendReplyHeader appends h's encoding to b.
func AppendReplyHeader(b []byte, h ReplyHeader) []byte {
	b = binary.LittleEndian.AppendUint32(b, h.Errno)
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Ret))
	b = binary.LittleEndian.AppendUint32(b, h.DataLen)
	return binary.LittleEndian.AppendUint32(b, 0)
}

// ParseReply splits a reply datagram into header and inline data.
func ParseReply(msg []byte) (h ReplyHeader, data []byte, err error) {
	if len(msg) < ReplyHeaderSize {
		return h, nil, ErrShort
	}
	h.Errno = binary.LittleEndian.Uint32(msg[0:])
	h.Flags = binary.LittleEndian.Uint32(msg[4:])
	h.Ret = int64(binary.LittleEndian.Uint64(msg[8:]))
	h.DataLen = binary.LittleEndian.Uint32(msg[16:])
	if h.Flags&^(ReplyFlagMemfd|ReplyFlagGoodbye) != 0 {
		return h, nil, ErrFlags
	}
	rest := msg[ReplyHeaderSize:]
	if h.Flags&ReplyFlagMemfd != 0 {
		if len(rest) != 0 || h.DataLen > MaxMemfdData {
			return h, nil, ErrTooLarge
		}
		return h, nil, nil
	}
	if uint64(len(rest)) != uint64(h.DataLen) {
		return h, nil, ErrShort
	}
	return h, rest, nil
}

// Attr normalises an attr of a command whose attr this version knows to be
// size bytes long: a longer attr must have an all-zero tail (ErrAttrTail),
// a shorter one is zero-extended into scratch (which must hold size bytes).
// The returned slice is exactly size bytes.
func Attr(attr []byte, size int, scratch []byte) ([]byte, error) {
	if len(attr) >= size {
		for _, c := range attr[size:] {
			if c != 0 {
				return nil, ErrAttrTail
			}
		}
		return attr[:size], nil
	}
	s := scratch[:size]
	n := copy(s, attr)
	clear(s[n:])
	return s, nil
}

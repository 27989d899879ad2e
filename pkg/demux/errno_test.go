package demux

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

func TestCommandErrnos(t *testing.T) {
	_, path := startServer(t, nil)
	c := dial(t, path)
	rw, _ := c.createMap(maps.TypeHash, 4, 8, 4, 0)
	arr, _ := c.createMap(maps.TypeArray, 4, 8, 4, 0)
	mk := func(h uint32, m wire.Mode) uint32 {
		r := c.do(wire.CmdReopen, handleAttr(h, m), nil)
		if r.h.Errno != 0 {
			t.Fatalf("reopen: %v", r.errno())
		}
		return uint32(r.h.Ret)
	}
	ro, wo := mk(rw, wire.ModeRead), mk(rw, wire.ModeWrite)
	rdonlyMap, _ := c.createMap(maps.TypeHash, 4, 8, 4, maps.FlagRdonly)
	val := make([]byte, 8)
	if r := c.do(wire.CmdMapUpdateElem, elemAttr(rw, 0), cat(u32(1), val)); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	tail := func(a []byte, extra ...byte) []byte { return append(append([]byte(nil), a...), extra...) }
	tests := []struct {
		name string
		cmd  wire.Cmd
		attr []byte
		data []byte
		want unix.Errno
	}{
		{name: "unknown command", cmd: 0x999, want: unix.EINVAL},
		{name: "prog load not yet", cmd: wire.CmdProgLoad, want: unix.EINVAL},
		{name: "attr tail zero ok", cmd: wire.CmdMapLookupElem, attr: tail(elemAttr(rw, 0), 0, 0, 0, 0), data: u32(1), want: 0},
		{name: "attr tail non-zero", cmd: wire.CmdMapLookupElem, attr: tail(elemAttr(rw, 0), 0, 1), data: u32(1), want: unix.E2BIG},
		{name: "short attr zero-extended", cmd: wire.CmdObjGetInfo, attr: u32(rw), want: 0},
		{name: "attr pad non-zero", cmd: wire.CmdMapLookupElem, attr: []byte{byte(rw), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, data: u32(1), want: unix.EINVAL},
		{name: "lookup ok", cmd: wire.CmdMapLookupElem, attr: elemAttr(rw, 0), data: u32(1)},
		{name: "lookup missing", cmd: wire.CmdMapLookupElem, attr: elemAttr(rw, 0), data: u32(2), want: unix.ENOENT},
		{name: "lookup bad handle", cmd: wire.CmdMapLookupElem, attr: elemAttr(999, 0), data: u32(1), want: unix.EBADF},
		{name: "lookup handle 0", cmd: wire.CmdMapLookupElem, attr: elemAttr(0, 0), data: u32(1), want: unix.EBADF},
		{name: "lookup short key", cmd: wire.CmdMapLookupElem, attr: elemAttr(rw, 0), data: []byte{1}, want: unix.EINVAL},
		{name: "lookup flags", cmd: wire.CmdMapLookupElem, attr: elemAttr(rw, 4), data: u32(1), want: unix.EINVAL},
		{name: "lookup write-only", cmd: wire.CmdMapLookupElem, attr: elemAttr(wo, 0), data: u32(1), want: unix.EPERM},
		{name: "lookup read-only ok", cmd: wire.CmdMapLookupElem, attr: elemAttr(ro, 0), data: u32(1)},
		{name: "update read-only", cmd: wire.CmdMapUpdateElem, attr: elemAttr(ro, 0), data: cat(u32(1), val), want: unix.EPERM},
		{name: "update write-only ok", cmd: wire.CmdMapUpdateElem, attr: elemAttr(wo, 0), data: cat(u32(1), val)},
		{name: "update noexist on existing", cmd: wire.CmdMapUpdateElem, attr: elemAttr(rw, 1), data: cat(u32(1), val), want: unix.EEXIST},
		{name: "update exist on missing", cmd: wire.CmdMapUpdateElem, attr: elemAttr(rw, 2), data: cat(u32(9), val), want: unix.ENOENT},
		{name: "update bad flags", cmd: wire.CmdMapUpdateElem, attr: elemAttr(rw, 8), data: cat(u32(1), val), want: unix.EINVAL},
		{name: "update short value", cmd: wire.CmdMapUpdateElem, attr: elemAttr(rw, 0), data: cat(u32(1), val[:4]), want: unix.EINVAL},
		{name: "update array out of range", cmd: wire.CmdMapUpdateElem, attr: elemAttr(arr, 0), data: cat(u32(4), val), want: unix.E2BIG},
		{name: "update BPF_F_RDONLY map", cmd: wire.CmdMapUpdateElem, attr: elemAttr(rdonlyMap, 0), data: cat(u32(1), val), want: unix.EPERM},
		{name: "delete read-only", cmd: wire.CmdMapDeleteElem, attr: elemAttr(ro, 0), data: u32(1), want: unix.EPERM},
		{name: "delete array", cmd: wire.CmdMapDeleteElem, attr: elemAttr(arr, 0), data: u32(1), want: unix.EINVAL},
		{name: "delete missing", cmd: wire.CmdMapDeleteElem, attr: elemAttr(rw, 0), data: u32(7), want: unix.ENOENT},
		{name: "next key first", cmd: wire.CmdMapGetNextKey, attr: elemAttr(ro, 0)},
		{name: "next key write-only", cmd: wire.CmdMapGetNextKey, attr: elemAttr(wo, 0), want: unix.EPERM},
		{name: "next key bad length", cmd: wire.CmdMapGetNextKey, attr: elemAttr(rw, 0), data: []byte{1, 2}, want: unix.EINVAL},
		{name: "lookup-and-delete read-only", cmd: wire.CmdMapLookupAndDeleteElem, attr: elemAttr(ro, 0), data: u32(1), want: unix.EPERM},
		{name: "lookup-and-delete write-only", cmd: wire.CmdMapLookupAndDeleteElem, attr: elemAttr(wo, 0), data: u32(1), want: unix.EPERM},
		{name: "lookup-and-delete array", cmd: wire.CmdMapLookupAndDeleteElem, attr: elemAttr(arr, 0), data: u32(1), want: maps.ENOTSUPP},
		{name: "freeze read-only", cmd: wire.CmdMapFreeze, attr: elemAttr(ro, 0), want: unix.EPERM},
		{name: "freeze with data", cmd: wire.CmdMapFreeze, attr: elemAttr(rw, 0), data: []byte{1}, want: unix.EINVAL},
		{name: "info bad handle", cmd: wire.CmdObjGetInfo, attr: handleAttr(77, 0), want: unix.EBADF},
		{name: "info mode set", cmd: wire.CmdObjGetInfo, attr: handleAttr(rw, 1), want: unix.EINVAL},
		{name: "reopen widen", cmd: wire.CmdReopen, attr: handleAttr(ro, wire.ModeReadWrite), want: unix.EPERM},
		{name: "reopen empty mode", cmd: wire.CmdReopen, attr: handleAttr(rw, 0), want: unix.EINVAL},
		{name: "reopen bad mode bits", cmd: wire.CmdReopen, attr: handleAttr(rw, 8), want: unix.EINVAL},
		{name: "reopen asks destroy", cmd: wire.CmdReopen, attr: handleAttr(rw, wire.ModeRead|wire.ModeDestroy), want: unix.EPERM},
		{name: "reopen bad handle", cmd: wire.CmdReopen, attr: handleAttr(1234, 1), want: unix.EBADF},
		{name: "reopen from BPF_F_RDONLY map", cmd: wire.CmdReopen, attr: handleAttr(rdonlyMap, wire.ModeWrite), want: unix.EPERM},
		{name: "release bad handle", cmd: wire.CmdRelease, attr: handleAttr(555, 0), want: unix.EBADF},
		{name: "import without fd", cmd: wire.CmdImport, attr: importAttr(0), want: unix.EBADF},
		{name: "revoke creating descriptor", cmd: wire.CmdRevoke, attr: handleAttr(rw, 0), want: unix.EINVAL},
		{name: "create zero key", cmd: wire.CmdMapCreate, attr: mapCreateAttr(maps.TypeHash, 0, 4, 1, 0, ""), want: unix.EINVAL},
		{name: "create bad type", cmd: wire.CmdMapCreate, attr: mapCreateAttr(99, 4, 4, 1, 0, ""), want: unix.EINVAL},
		{name: "create prog array bad value size", cmd: wire.CmdMapCreate, attr: mapCreateAttr(maps.TypeProgArray, 4, 8, 1, 0, ""), want: unix.EINVAL},
		{name: "create rdonly+wronly", cmd: wire.CmdMapCreate, attr: mapCreateAttr(maps.TypeHash, 4, 4, 1, maps.FlagRdonly|maps.FlagWronly, ""), want: unix.EINVAL},
		{name: "create with data", cmd: wire.CmdMapCreate, attr: mapCreateAttr(maps.TypeHash, 4, 4, 1, 0, ""), data: []byte{1}, want: unix.EINVAL},
		{name: "batch lookup write-only", cmd: wire.CmdMapLookupBatch, attr: (&wire.BatchAttr{Handle: wo, Count: 4}).Append(nil), want: unix.EPERM},
		{name: "batch update read-only", cmd: wire.CmdMapUpdateBatch, attr: (&wire.BatchAttr{Handle: ro, Count: 1}).Append(nil), data: cat(u32(1), val), want: unix.EPERM},
		{name: "batch update bad length", cmd: wire.CmdMapUpdateBatch, attr: (&wire.BatchAttr{Handle: rw, Count: 2}).Append(nil), data: cat(u32(1), val), want: unix.EINVAL},
		{name: "batch flags", cmd: wire.CmdMapLookupBatch, attr: (&wire.BatchAttr{Handle: rw, Count: 2, Flags: 1}).Append(nil), want: unix.EINVAL},
		{name: "batch lookup-and-delete read-only", cmd: wire.CmdMapLookupAndDeleteBatch, attr: (&wire.BatchAttr{Handle: ro, Count: 2}).Append(nil), want: unix.EPERM},
		{name: "status", cmd: wire.CmdStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.do(tt.cmd, tt.attr, tt.data)
			if r.errno() != tt.want {
				t.Fatalf("errno %d (%v), want %d (%v)", r.h.Errno, r.errno(), uint32(tt.want), tt.want)
			}
			if tt.want != 0 && len(r.fds) != 0 {
				t.Fatalf("failed reply carries fds %v", r.fds)
			}
		})
	}
}

func TestMalformedHeaders(t *testing.T) {
	_, path := startServer(t, nil)
	c := dial(t, path)
	hdr := func(cmd wire.Cmd, flags, alen, dlen uint32) []byte {
		return wire.AppendReqHeader(nil, wire.ReqHeader{Cmd: cmd, Flags: flags, AttrLen: alen, DataLen: dlen})
	}
	tests := []struct {
		name string
		msg  []byte
		want unix.Errno
	}{
		{name: "short header", msg: []byte{1, 2, 3}, want: unix.EINVAL},
		{name: "attr longer than message", msg: hdr(wire.CmdHello, 0, 100, 0), want: unix.EINVAL},
		{name: "attr over limit", msg: hdr(wire.CmdHello, 0, wire.MaxAttr+1, 0), want: unix.E2BIG},
		{name: "data length mismatch", msg: append(hdr(wire.CmdStatus, 0, 0, 5), 1), want: unix.EINVAL},
		{name: "unknown flag", msg: hdr(wire.CmdStatus, 2, 0, 0), want: unix.EINVAL},
		{name: "memfd flag without fd", msg: hdr(wire.CmdStatus, wire.ReqFlagMemfd, 0, 0), want: unix.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.sc.Send(tt.msg, nil); err != nil {
				t.Fatal(err)
			}
			if r := c.recv(); r.errno() != tt.want {
				t.Fatalf("errno %v, want %v", r.errno(), tt.want)
			}
		})
	}
	// Too many fds and an oversized message are answered, in order.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	many := []int{p[0], p[1], p[0], p[1], p[0], p[1], p[0], p[1], p[0]}
	c.send(wire.CmdStatus, 0, nil, nil, many...)
	if r := c.recv(); r.errno() != unix.EINVAL {
		t.Fatalf("too many fds: %v", r.errno())
	}
	c.send(wire.CmdStatus, 0, nil, make([]byte, wire.MaxMessage))
	if r := c.recv(); r.errno() != unix.EMSGSIZE {
		t.Fatalf("oversized message: %v", r.errno())
	}
	c.send(wire.CmdStatus, 0, nil, nil, p[0])
	if r := c.recv(); r.errno() != unix.EINVAL {
		t.Fatalf("unexpected fd: %v", r.errno())
	}
}

func TestPipelining(t *testing.T) {
	_, path := startServer(t, nil)
	c := dial(t, path)
	h, _ := c.createMap(maps.TypeArray, 4, 4, 256, 0)
	const n = 200
	go func() {
		for i := range uint32(n) {
			c.send(wire.CmdMapUpdateElem, 0, elemAttr(h, 0), cat(u32(i), u32(i*3)))
			c.send(wire.CmdMapLookupElem, 0, elemAttr(h, 0), u32(i))
		}
	}()
	for i := range uint32(n) {
		if r := c.recv(); r.h.Errno != 0 || len(r.data) != 0 {
			t.Fatalf("update %d: %v %v", i, r.errno(), r.data)
		}
		r := c.recv()
		if r.h.Errno != 0 || binary.LittleEndian.Uint32(r.data) != i*3 {
			t.Fatalf("lookup %d out of order: %v %v", i, r.errno(), r.data)
		}
	}
}

// memfd returns a memfd holding data with the given seals.
func memfd(t *testing.T, data []byte, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Pwrite(fd, data, 0); err != nil && len(data) > 0 {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func TestMemfd(t *testing.T) {
	_, path := startServer(t, nil)
	c := dial(t, path)
	const ks, vs, n = 8, 64, 2000
	h, _ := c.createMap(maps.TypeHash, ks, vs, n, 0)
	var keys, vals []byte
	for i := range uint64(n) {
		keys = binary.LittleEndian.AppendUint64(keys, i)
		v := bytes.Repeat([]byte{byte(i)}, vs)
		vals = append(vals, v...)
	}
	payload := cat(keys, vals)
	if len(payload) <= wire.MaxMessage {
		t.Fatal("payload should exceed a message")
	}
	battr := (&wire.BatchAttr{Handle: h, Count: n}).Append(nil)
	all := unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW
	tests := []struct {
		name  string
		seals int
		file  bool
		want  unix.Errno
	}{
		{name: "unsealed", seals: 0, want: unix.EINVAL},
		{name: "no write seal", seals: unix.F_SEAL_SHRINK | unix.F_SEAL_GROW, want: unix.EINVAL},
		{name: "future write only", seals: unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW, want: unix.EINVAL},
		{name: "regular file", file: true, want: unix.EINVAL},
		{name: "sealed", seals: all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fd int
			if tt.file {
				f, err := os.CreateTemp(t.TempDir(), "data")
				if err != nil {
					t.Fatal(err)
				}
				f.Write(payload)
				defer f.Close()
				fd = int(f.Fd())
			} else {
				fd = memfd(t, payload, tt.seals)
			}
			c.send(wire.CmdMapUpdateBatch, wire.ReqFlagMemfd, battr, payload, fd)
			r := c.recv()
			if r.errno() != tt.want {
				t.Fatalf("errno %v, want %v", r.errno(), tt.want)
			}
			if tt.want == 0 && r.h.Ret != n {
				t.Fatalf("updated %d, want %d", r.h.Ret, n)
			}
		})
	}
	// A memfd shorter than DataLen is refused.
	short := memfd(t, payload[:100], all)
	c.send(wire.CmdMapUpdateBatch, wire.ReqFlagMemfd, battr, payload, short)
	if r := c.recv(); r.errno() != unix.EINVAL {
		t.Fatalf("short memfd: %v", r.errno())
	}
	// The batch lookup reply exceeds a message: it comes in a sealed memfd.
	r := c.do(wire.CmdMapLookupBatch, (&wire.BatchAttr{Handle: h, Count: n}).Append(nil), nil)
	if r.errno() != 0 && r.errno() != unix.ENOENT {
		t.Fatalf("batch lookup: %v", r.errno())
	}
	if r.h.Flags&wire.ReplyFlagMemfd == 0 || r.h.Ret != n {
		t.Fatalf("batch lookup reply flags %#x count %d", r.h.Flags, r.h.Ret)
	}
	mfd := r.fds[len(r.fds)-1]
	seals, err := unix.FcntlInt(uintptr(mfd), unix.F_GET_SEALS, 0)
	if err != nil || seals&all != all {
		t.Fatalf("reply memfd seals %#x %v", seals, err)
	}
	got := r.data[wire.BatchCursorSize:]
	seen := map[uint64]bool{}
	for i := range n {
		k := binary.LittleEndian.Uint64(got[i*ks:])
		v := got[n*ks+i*vs : n*ks+(i+1)*vs]
		if !bytes.Equal(v, bytes.Repeat([]byte{byte(k)}, vs)) {
			t.Fatalf("key %d has value %v", k, v[:4])
		}
		seen[k] = true
	}
	if len(seen) != n {
		t.Fatalf("batch returned %d distinct keys", len(seen))
	}
}

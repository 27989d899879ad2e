package demux

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// TestQuotaMemoryDefaults: Quota.Memory defaults to the default's, or to
// MapMemory plus the default's headroom; MapMemory never exceeds it.
func TestQuotaMemoryDefaults(t *testing.T) {
	headroom := DefaultQuota.Memory - DefaultQuota.MapMemory
	tests := []struct {
		name    string
		cfg     Config
		uid     uint32
		want    Quota
		wantMem uint64 // Memory only, when want is zero
	}{
		{name: "package default", uid: 1000, want: DefaultQuota},
		{name: "root default", uid: 0, want: DefaultRootQuota},
		{name: "map memory only", uid: 7, cfg: Config{Quotas: map[uint32]Quota{7: {MapMemory: 1 << 20}}},
			wantMem: 1<<20 + headroom},
		{name: "memory only caps map memory", uid: 7, cfg: Config{Quotas: map[uint32]Quota{7: {Memory: 1 << 20}}},
			want: Quota{MapMemory: 1 << 20, Memory: 1 << 20, Objects: DefaultQuota.Objects,
				Descriptors: DefaultQuota.Descriptors, Conns: DefaultQuota.Conns}},
		{name: "configured default", uid: 7, cfg: Config{DefaultQuota: Quota{Memory: 64 << 20, MapMemory: 32 << 20}},
			want: Quota{MapMemory: 32 << 20, Memory: 64 << 20, Objects: DefaultQuota.Objects,
				Descriptors: DefaultQuota.Descriptors, Conns: DefaultQuota.Conns}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.cfg.quotaFor(tt.uid)
			if tt.wantMem != 0 {
				if q.Memory != tt.wantMem {
					t.Fatalf("Memory = %d, want %d", q.Memory, tt.wantMem)
				}
				return
			}
			if q != tt.want {
				t.Fatalf("quota = %+v, want %+v", q, tt.want)
			}
		})
	}
}

// uidMemory is the memory the server charges uid.
func uidMemory(srv *Server, uid uint32) uint64 {
	for _, u := range srv.Stats().UIDs {
		if u.UID == uid {
			return u.Memory
		}
	}
	return 0
}

func batchAttr(h, count uint32) []byte {
	a := wire.BatchAttr{Handle: h, Count: count}
	return a.Append(nil)
}

// TestMemoryCharges: a connection costs connCost; objects and
// descriptors are charged; a reply memfd stays charged while the client
// holds it and is returned when it is closed; a reply the quota cannot
// hold fails with ENOMEM and the connection goes on; requests leave no
// charge behind.
func TestMemoryCharges(t *testing.T) {
	uid := uint32(os.Geteuid())
	const quota = 4 << 20
	srv, path := startServer(t, &Config{Logger: zap.NewNop(),
		Quotas: map[uint32]Quota{uid: {MapMemory: 3 << 20, Memory: quota}}})
	c := dial(t, path)
	if r := c.do(wire.CmdHello, make([]byte, wire.HelloAttrSize), nil); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	if got := uidMemory(srv, uid); got != connCost {
		t.Fatalf("one connection is charged %d, want connCost %d", got, connCost)
	}

	// An array of 8192 8-byte values: its batch lookup reply (96 KiB) is
	// larger than a message and comes in a memfd.
	h, _ := c.createMap(2, 4, 8, 8192, 0)
	st := srv.Stats()
	base := uidMemory(srv, uid)
	if want := connCost + handleChunk*handleCost + st.MapMemory + descCost; base != want {
		t.Fatalf("with a map: %d charged, want %d (conn, handle table, map, descriptor)", base, want)
	}
	r := c.do(wire.CmdMapLookupBatch, batchAttr(h, 8192), nil)
	if r.h.Errno != 0 || r.h.Ret != 8192 || r.h.Flags&wire.ReplyFlagMemfd == 0 {
		t.Fatalf("batch lookup: %v ret %d flags %#x", r.errno(), r.h.Ret, r.h.Flags)
	}
	mfd := r.fds[len(r.fds)-1]
	r.fds[len(r.fds)-1] = -1
	replyBytes := pageRound(uint64(r.h.DataLen))
	if got := uidMemory(srv, uid); got != base+replyBytes {
		t.Fatalf("with the reply memfd held: %d charged, want %d + %d", got, base, replyBytes)
	}
	if st := srv.Stats(); st.ReplyMemfds != 1 {
		t.Fatalf("reply memfds outstanding: %d", st.ReplyMemfds)
	}
	// A reopened copy (through /proc) keeps it alive: still charged.
	cp, err := os.Open("/proc/self/fd/" + itoa(mfd))
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(mfd)
	time.Sleep(20 * time.Millisecond)
	if got := uidMemory(srv, uid); got != base+replyBytes {
		t.Fatalf("memfd still open through a copy but %d charged, want %d", got, base+replyBytes)
	}
	cp.Close()
	waitStats(t, srv, "the reply memfd's charge to return", func(st Stats) bool {
		return uidMemory(srv, uid) == base && st.ReplyMemfds == 0
	})

	// Hold replies until the quota is full: the next one fails with
	// ENOMEM, and the connection still serves.
	var held []int
	for i := 0; ; i++ {
		r := c.do(wire.CmdMapLookupBatch, batchAttr(h, 8192), nil)
		if r.errno() == unix.ENOMEM {
			if len(r.fds) != 0 || r.h.DataLen != 0 {
				t.Fatalf("ENOMEM reply carries %d fds and %d bytes", len(r.fds), r.h.DataLen)
			}
			break
		}
		if r.h.Errno != 0 || i > quota/int(replyBytes) {
			t.Fatalf("batch lookup %d: %v (quota should have run out)", i, r.errno())
		}
		held = append(held, r.fds[len(r.fds)-1])
		r.fds[len(r.fds)-1] = -1
	}
	if len(held) == 0 {
		t.Fatal("no reply fit the quota")
	}
	if got := uidMemory(srv, uid); got > quota {
		t.Fatalf("charged %d beyond the quota %d", got, quota)
	}
	if r := c.do(wire.CmdMapLookupElem, elemAttr(h, 0), u32(5)); r.h.Errno != 0 {
		t.Fatalf("lookup with the quota full: %v", r.errno())
	}
	for _, fd := range held {
		unix.Close(fd)
	}
	waitStats(t, srv, "held replies' charges to return", func(st Stats) bool {
		return uidMemory(srv, uid) == base && st.ReplyMemfds == 0
	})

	// A medium reply (a borrowed big buffer) and a long inline request
	// (received into one) leave nothing charged.
	r = c.do(wire.CmdMapLookupBatch, batchAttr(h, 1000), nil)
	if r.h.Errno != 0 || r.h.Flags&wire.ReplyFlagMemfd != 0 || r.h.DataLen <= smallBuf {
		t.Fatalf("medium batch: %v flags %#x len %d", r.errno(), r.h.Flags, r.h.DataLen)
	}
	keys, vals := make([]byte, 0, 4*1000), make([]byte, 8*1000)
	for i := range uint32(1000) {
		keys = append(keys, u32(i)...)
	}
	r = c.do(wire.CmdMapUpdateBatch, batchAttr(h, 1000), cat(keys, vals))
	if r.h.Errno != 0 || r.h.Ret != 1000 {
		t.Fatalf("update batch of 12 KB inline: %v ret %d", r.errno(), r.h.Ret)
	}
	// (A request's charges are released right after its reply is sent.)
	waitStats(t, srv, "medium requests' charges to return", func(Stats) bool { return uidMemory(srv, uid) == base })
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// TestDaemonMemoryCap: the daemon-wide cap refuses what would pass it,
// whoever asks: objects with ENOMEM, connections by closing them.
func TestDaemonMemoryCap(t *testing.T) {
	capBytes := 3*connCost + 64<<10
	srv, path := startServer(t, &Config{Logger: zap.NewNop(), MaxMemory: capBytes})
	c := dial(t, path)
	if r := c.do(wire.CmdHello, make([]byte, wire.HelloAttrSize), nil); r.h.Errno != 0 {
		t.Fatal(r.errno())
	}
	r := c.do(wire.CmdMapCreate, mapCreateAttr(2, 4, 8, 1<<16, 0, "big"), nil)
	if r.errno() != unix.ENOMEM {
		t.Fatalf("a map beyond the daemon's cap: %v, want ENOMEM", r.errno())
	}
	c.createMap(2, 4, 8, 16, 0) // small ones fit
	// Fill the cap with connections: the one that does not fit is closed
	// at once (its first request reads end of stream).
	var refused bool
	for range 4 {
		nc := dial(t, path)
		msg := wire.AppendReqHeader(nil, wire.ReqHeader{Cmd: wire.CmdHello, AttrLen: wire.HelloAttrSize})
		err := nc.sc.Send(append(msg, make([]byte, wire.HelloAttrSize)...), nil)
		if err == nil {
			var n int
			n, _, _, err = nc.sc.Recv(nc.rbuf, nc.oob, nc.fds)
			if err == nil && n == 0 {
				err = io.EOF
			}
		}
		if err != nil || srv.Stats().Memory > capBytes {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatalf("connections beyond the cap were served: %+v", srv.Stats())
	}
	if st := srv.Stats(); st.Memory > capBytes || st.MaxMemory != capBytes {
		t.Fatalf("memory %d, cap %d (want %d)", st.Memory, st.MaxMemory, capBytes)
	}
}

// TestVerifierMemoryCharged: verifying a program needs its tables and log
// charged first; a uid whose quota cannot hold them gets ENOMEM, and a
// uid that can loads it with nothing left charged afterwards but the
// program.
func TestVerifierMemoryCharged(t *testing.T) {
	uid := uint32(os.Geteuid())
	prog := progBytes(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
	for _, tt := range []struct {
		name  string
		quota uint64
		want  unix.Errno
	}{
		{name: "too small for the verifier", quota: verifyFixed / 2, want: unix.ENOMEM},
		{name: "enough", quota: 2 * verifyFixed, want: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, path := startServer(t, &Config{Logger: zap.NewNop(),
				Quotas: map[uint32]Quota{uid: {Memory: tt.quota}}})
			c := dial(t, path)
			base := connCost
			r := c.do(wire.CmdProgLoad, progLoadAttr(1, uint32(len(prog)/8), 3), cat(prog, []byte("GPL")))
			if r.errno() != tt.want {
				t.Fatalf("load: %v, want %v", r.errno(), tt.want)
			}
			want := base
			if tt.want == 0 {
				want += handleChunk*handleCost + srv.Stats().MapMemory + descCost
			}
			waitStats(t, srv, "the load's charges to return", func(Stats) bool { return uidMemory(srv, uid) == want })
		})
	}
}

func progLoadAttr(typ, insns, licenseLen uint32) []byte {
	a := wire.ProgLoadAttr{ProgType: typ, InsnCount: insns, LicenseLen: licenseLen}
	return a.Append(nil)
}

func progBytes(t *testing.T, insns asm.Instructions) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := insns.Marshal(&b, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

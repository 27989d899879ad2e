package nfqueue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func samplePacket() *Packet {
	return &Packet{Queue: 7, Family: unix.AF_INET, ID: 42, HwProtocol: unix.ETH_P_IP, Hook: HookLocalIn,
		Mark: 0x1234, InDev: 3, HwAddr: []byte{2, 0, 0, 0, 0, 1}, SkbInfo: SkbCsumNotReady,
		Payload: []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2, 0x9c, 0x40, 0x13, 0x88, 0, 8, 0, 0}}
}

func TestParse(t *testing.T) {
	good := AppendPacket(nil, samplePacket())
	cut := samplePacket()
	cut.CapLen = 1500
	cutMsg := AppendPacket(nil, cut)
	noHdr := func() []byte {
		b, off := appendHeader(nil, msgPacket, 0, 0, unix.AF_INET, 7)
		b = appendAttr(b, attrPayload, []byte{1, 2, 3})
		return finish(b, off)
	}()
	badAttr := append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(badAttr[nlmsgHdrLen+nfgenHdrLen:], 200) // first attr longer than the message
	shortHw := func() []byte {
		b, off := appendHeader(nil, msgPacket, 0, 0, unix.AF_INET, 7)
		var ph [packetHdrLen]byte
		b = appendAttr(b, attrPacketHdr, ph[:])
		b = appendAttr(b, attrHwAddr, []byte{0, 6, 0, 0})
		return finish(b, off)
	}()
	verdict := AppendVerdict(nil, 7, 1, Accept, nil)
	tests := []struct {
		name    string
		msg     []byte
		want    error
		check   func(t *testing.T, p *Packet)
		wantCut bool
	}{
		{name: "round trip", msg: good, check: func(t *testing.T, p *Packet) {
			s := samplePacket()
			if p.ID != s.ID || p.Queue != s.Queue || p.HwProtocol != s.HwProtocol || p.Hook != s.Hook ||
				p.Mark != s.Mark || p.InDev != s.InDev || p.SkbInfo != s.SkbInfo || p.Family != s.Family {
				t.Errorf("parsed %+v, want %+v", p, s)
			}
			if !bytes.Equal(p.HwAddr, s.HwAddr) || !bytes.Equal(p.Payload, s.Payload) {
				t.Errorf("hwaddr %x payload %x", p.HwAddr, p.Payload)
			}
			if p.CapLen != uint32(len(s.Payload)) {
				t.Errorf("caplen %d", p.CapLen)
			}
		}},
		{name: "cut payload", msg: cutMsg, wantCut: true, check: func(t *testing.T, p *Packet) {
			if p.CapLen != 1500 {
				t.Errorf("caplen %d, want 1500", p.CapLen)
			}
		}},
		{name: "empty", msg: nil, want: ErrTruncated},
		{name: "header only", msg: good[:nlmsgHdrLen], want: ErrTruncated},
		{name: "length mismatch", msg: good[:len(good)-4], want: ErrTruncated},
		{name: "no packet header", msg: noHdr, want: ErrNoID},
		{name: "attribute past the end", msg: badAttr, want: ErrTruncated},
		{name: "short hw address", msg: shortHw, want: ErrTruncated},
		{name: "verdict message", msg: verdict, want: ErrNotPacket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			err := Parse(tt.msg, &p)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
			if err == nil {
				if p.Truncated() != tt.wantCut {
					t.Errorf("Truncated = %v", p.Truncated())
				}
				if tt.check != nil {
					tt.check(t, &p)
				}
			}
			if tt.want != nil && !errors.Is(err, unix.EINVAL) {
				t.Errorf("%v is not EINVAL", err)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	a := AppendPacket(nil, samplePacket())
	b := AppendVerdictBatch(nil, 7, 9, Drop)
	both := append(append([]byte(nil), a...), b...)
	m1, rest, err := Split(both)
	if err != nil || !bytes.Equal(m1, a) || Classify(m1) != KindPacket {
		t.Fatalf("first: %v %x", err, m1)
	}
	m2, rest, err := Split(rest)
	if err != nil || !bytes.Equal(m2, b) || len(rest) != 0 || Classify(m2) != KindOther {
		t.Fatalf("second: %v %x rest %d", err, m2, len(rest))
	}
	if _, _, err := Split(both[:10]); !errors.Is(err, ErrTruncated) {
		t.Fatalf("short: %v", err)
	}
	// An NLMSG_ERROR carrying -ENOENT.
	e := make([]byte, nlmsgHdrLen+4+nlmsgHdrLen)
	binary.NativeEndian.PutUint32(e, uint32(len(e)))
	binary.NativeEndian.PutUint16(e[4:], unix.NLMSG_ERROR)
	enoent := -int32(unix.ENOENT)
	binary.NativeEndian.PutUint32(e[nlmsgHdrLen:], uint32(enoent))
	if Classify(e) != KindError || ErrorCode(e) != unix.ENOENT {
		t.Fatalf("error message: %v %v", Classify(e), ErrorCode(e))
	}
}

func TestVerdictEncoding(t *testing.T) {
	pl := []byte{1, 2, 3, 4, 5}
	b := AppendVerdict(nil, 0x0102, 0xa0b0c0d0, Accept, pl)
	if int(binary.NativeEndian.Uint32(b)) != len(b) || len(b)%4 != 0 {
		t.Fatalf("length %d of %d", binary.NativeEndian.Uint32(b), len(b))
	}
	if typ := binary.NativeEndian.Uint16(b[4:]); typ != subsysQueue<<8|msgVerdict {
		t.Fatalf("type %#x", typ)
	}
	if q := binary.BigEndian.Uint16(b[nlmsgHdrLen+2:]); q != 0x0102 {
		t.Fatalf("res_id %#x", q)
	}
	a := b[nlmsgHdrLen+nfgenHdrLen:]
	if binary.NativeEndian.Uint16(a[2:]) != attrVerdictHdr || binary.BigEndian.Uint32(a[4:]) != Accept ||
		binary.BigEndian.Uint32(a[8:]) != 0xa0b0c0d0 {
		t.Fatalf("verdict attr %x", a[:12])
	}
	a = a[12:]
	if binary.NativeEndian.Uint16(a) != nlaHdrLen+5 || binary.NativeEndian.Uint16(a[2:]) != attrPayload || !bytes.Equal(a[4:9], pl) {
		t.Fatalf("payload attr %x", a)
	}
	bb := AppendVerdictBatch(nil, 1, 77, Drop)
	if typ := binary.NativeEndian.Uint16(bb[4:]); typ != subsysQueue<<8|msgVerdictBatch {
		t.Fatalf("batch type %#x", typ)
	}
}

func TestNoAllocs(t *testing.T) {
	msg := AppendPacket(nil, samplePacket())
	out := make([]byte, 0, 4096)
	var p Packet
	n := testing.AllocsPerRun(1000, func() {
		m, _, _ := Split(msg)
		if Parse(m, &p) != nil {
			t.Fatal("parse")
		}
		out = AppendVerdict(out[:0], p.Queue, p.ID, Accept, p.Payload)
		out = AppendVerdictBatch(out, p.Queue, p.ID, Drop)
	})
	if n != 0 {
		t.Fatalf("%v allocations per packet, want 0", n)
	}
}

func TestParseStats(t *testing.T) {
	const proc = "    0  12345     0 2 65535     0     0        0  1\n" +
		"    7 -21474     3 2  3506     5     6      100  1\n"
	st, err := ParseStats([]byte(proc), 7)
	if err == nil {
		t.Fatalf("negative portid line parsed: %+v", st)
	}
	const proc2 = "    0  12345     0 2 65535     0     0        0  1\n" +
		"    7   4242     3 2  3506     5     6      100  1\n"
	st, err = ParseStats([]byte(proc2), 7)
	want := KernelStats{Queue: 7, PortID: 4242, Waiting: 3, CopyMode: 2, CopyRange: 3506, QueueDropped: 5, UserDropped: 6, IDSequence: 100}
	if err != nil || st != want {
		t.Fatalf("ParseStats = %+v, %v; want %+v", st, err, want)
	}
	if _, err := ParseStats([]byte(proc2), 8); !errors.Is(err, ErrNoStats) {
		t.Fatalf("missing queue: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(AppendPacket(nil, samplePacket()))
	cut := samplePacket()
	cut.CapLen = 9000
	cut.L2Hdr = make([]byte, 14)
	f.Add(AppendPacket(nil, cut))
	f.Add(AppendVerdict(nil, 1, 2, Accept, []byte{1, 2, 3}))
	f.Add(append(AppendPacket(nil, samplePacket()), AppendVerdictBatch(nil, 7, 9, Drop)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			msg, rest, err := Split(b)
			if err != nil {
				return
			}
			if len(rest) >= len(b) {
				t.Fatal("Split made no progress")
			}
			b = rest
			var p Packet
			if Classify(msg) == KindError {
				ErrorCode(msg)
			}
			if err := Parse(msg, &p); err != nil {
				continue
			}
			// Everything the parser hands out lies inside the message.
			for _, s := range [][]byte{p.Payload, p.HwAddr, p.L2Hdr} {
				if len(s) > len(msg) {
					t.Fatalf("slice of %d bytes from a %d-byte message", len(s), len(msg))
				}
			}
			if p.CapLen < uint32(len(p.Payload)) {
				t.Fatalf("CapLen %d < payload %d", p.CapLen, len(p.Payload))
			}
			// Re-encoding a parsed packet parses to the same packet.
			var q Packet
			if err := Parse(AppendPacket(nil, &p), &q); err != nil || q.ID != p.ID || !bytes.Equal(q.Payload, p.Payload) {
				t.Fatalf("re-encode: %v %+v vs %+v", err, q, p)
			}
		}
	})
}

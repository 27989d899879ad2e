package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	attr := (&ElemAttr{Handle: 7, Flags: 2}).Append(nil)
	data := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	msg := AppendReqHeader(nil, ReqHeader{Cmd: CmdMapUpdateElem, AttrLen: uint32(len(attr)), DataLen: uint32(len(data))})
	msg = append(append(msg, attr...), data...)

	h, gotAttr, gotData, err := ParseRequest(msg)
	if err != nil {
		t.Fatal(err)
	}
	if h.Cmd != CmdMapUpdateElem || !bytes.Equal(gotAttr, attr) || !bytes.Equal(gotData, data) {
		t.Fatalf("got %+v %x %x", h, gotAttr, gotData)
	}
	var a ElemAttr
	if !a.Parse(gotAttr) || a.Handle != 7 || a.Flags != 2 {
		t.Fatalf("attr %+v", a)
	}
}

func TestParseRequestErrors(t *testing.T) {
	hdr := func(h ReqHeader) []byte { return AppendReqHeader(nil, h) }
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short header", make([]byte, 15), ErrShort},
		{"unknown flag", hdr(ReqHeader{Flags: 2}), ErrFlags},
		{"attr too large", hdr(ReqHeader{AttrLen: MaxAttr + 1}), ErrTooLarge},
		{"attr missing", hdr(ReqHeader{AttrLen: 8}), ErrShort},
		{"data short", append(hdr(ReqHeader{DataLen: 4}), 1, 2), ErrShort},
		{"data long", append(hdr(ReqHeader{DataLen: 1}), 1, 2), ErrShort},
		{"memfd with inline data", append(hdr(ReqHeader{Flags: ReqFlagMemfd, DataLen: 1}), 1), ErrTooLarge},
		{"memfd too large", hdr(ReqHeader{Flags: ReqFlagMemfd, DataLen: MaxMemfdData + 1}), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, _, err := ParseRequest(tt.msg); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAttrVersioning(t *testing.T) {
	scratch := make([]byte, MaxAttr)
	tests := []struct {
		name    string
		attr    []byte
		size    int
		want    []byte
		wantErr error
	}{
		{"exact", []byte{1, 2, 3, 4}, 4, []byte{1, 2, 3, 4}, nil},
		{"short is zero-extended", []byte{1, 2}, 4, []byte{1, 2, 0, 0}, nil},
		{"longer with zero tail", []byte{1, 2, 3, 4, 0, 0}, 4, []byte{1, 2, 3, 4}, nil},
		{"longer with non-zero tail", []byte{1, 2, 3, 4, 0, 9}, 4, nil, ErrAttrTail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Attr(tt.attr, tt.size, scratch)
			if !errors.Is(err, tt.wantErr) || !bytes.Equal(got, tt.want) {
				t.Fatalf("Attr = %x, %v; want %x, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	var info ObjInfo
	info.ObjType, info.Mode, info.ID, info.KeySize = ObjMap, ModeRead, 42, 4
	copy(info.Name[:], "ports")
	payload := info.Append(nil)
	if len(payload) != ObjInfoSize {
		t.Fatalf("ObjInfo encodes to %d bytes, want %d", len(payload), ObjInfoSize)
	}
	msg := AppendReplyHeader(nil, ReplyHeader{Errno: 2, Ret: -1, DataLen: uint32(len(payload))})
	msg = append(msg, payload...)
	h, data, err := ParseReply(msg)
	if err != nil || h.Errno != 2 || h.Ret != -1 {
		t.Fatalf("got %+v, %v", h, err)
	}
	var got ObjInfo
	if !got.Parse(data) || got != info || NameString(got.Name) != "ports" {
		t.Fatalf("ObjInfo round trip: %+v", got)
	}
}

func TestAttrSizesMatchEncoding(t *testing.T) {
	tests := []struct {
		name string
		enc  []byte
		size int
	}{
		{"MapCreate", (&MapCreateAttr{}).Append(nil), MapCreateAttrSize},
		{"Elem", (&ElemAttr{}).Append(nil), ElemAttrSize},
		{"Batch", (&BatchAttr{}).Append(nil), BatchAttrSize},
		{"Handle", (&HandleAttr{}).Append(nil), HandleAttrSize},
		{"Import", (&ImportAttr{}).Append(nil), ImportAttrSize},
		{"Hello", (&HelloAttr{}).Append(nil), HelloAttrSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.enc) != tt.size {
				t.Fatalf("encodes to %d bytes, const says %d", len(tt.enc), tt.size)
			}
		})
	}
}

func FuzzParseRequest(f *testing.F) {
	attr := (&ElemAttr{Handle: 1}).Append(nil)
	msg := AppendReqHeader(nil, ReqHeader{Cmd: CmdMapLookupElem, AttrLen: uint32(len(attr)), DataLen: 4})
	f.Add(append(append(msg, attr...), 1, 2, 3, 4))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, attr, data, err := ParseRequest(msg)
		if err != nil {
			return
		}
		if h.Flags&ReqFlagMemfd == 0 && ReqHeaderSize+len(attr)+len(data) != len(msg) {
			t.Fatalf("parsed lengths do not add up: %d+%d+%d != %d", ReqHeaderSize, len(attr), len(data), len(msg))
		}
		if size, ok := AttrSize(h.Cmd); ok {
			scratch := make([]byte, MaxAttr)
			if a, err := Attr(attr, size, scratch); err == nil && len(a) != size {
				t.Fatalf("Attr returned %d bytes, want %d", len(a), size)
			}
		}
	})
}

func TestProgAttrs(t *testing.T) {
	load := ProgLoadAttr{ProgType: 6, InsnCount: 3, LicenseLen: 3, LogSize: 100}
	copy(load.Name[:], "xdp_ports")
	enc := load.Append(nil)
	if len(enc) != ProgLoadAttrSize {
		t.Fatalf("ProgLoadAttr encodes to %d bytes", len(enc))
	}
	var gotLoad ProgLoadAttr
	if !gotLoad.Parse(enc) || gotLoad != load {
		t.Fatalf("ProgLoadAttr round trip: %+v", gotLoad)
	}

	run := TestRunAttr{Handle: 3, Repeat: 10, DataSizeIn: 64, DataSizeOut: 64}
	enc = run.Append(nil)
	if len(enc) != TestRunAttrSize {
		t.Fatalf("TestRunAttr encodes to %d bytes", len(enc))
	}
	var gotRun TestRunAttr
	if !gotRun.Parse(enc) || gotRun != run {
		t.Fatalf("TestRunAttr round trip: %+v", gotRun)
	}

	res := TestRunResult{DurationNs: 5, DataSizeOut: 4}
	var gotRes TestRunResult
	if enc = res.Append(nil); len(enc) != TestRunResultSize || !gotRes.Parse(enc) || gotRes != res {
		t.Fatalf("TestRunResult round trip: %+v", gotRes)
	}
}

func TestLineInfo(t *testing.T) {
	lines := []LineInfo{{0, "a.c:1: int x;"}, {7, ""}, {9, "a.c:3: return 0;"}}
	got, ok := ParseLineInfo(AppendLineInfo(nil, lines))
	if !ok || len(got) != len(lines) {
		t.Fatalf("got %v, %v", got, ok)
	}
	for i := range lines {
		if got[i] != lines[i] {
			t.Fatalf("entry %d: %+v != %+v", i, got[i], lines[i])
		}
	}
	for _, bad := range [][]byte{{1, 2, 3}, {0, 0, 0, 0, 9, 0, 0, 0, 'x'}} {
		if _, ok := ParseLineInfo(bad); ok {
			t.Fatalf("ParseLineInfo(%x) accepted malformed input", bad)
		}
	}
}

func TestModeStringParse(t *testing.T) {
	tests := []struct {
		name string
		m    Mode
		s    string
	}{
		{"none", 0, "-"},
		{"read", ModeRead, "r"},
		{"write", ModeWrite, "w"},
		{"read-write", ModeReadWrite, "rw"},
		{"destroy", ModeDestroy, "d"},
		{"read-destroy", ModeRead | ModeDestroy, "rd"},
		{"write-destroy", ModeWrite | ModeDestroy, "wd"},
		{"all", ModeAll, "rwd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.String(); got != tt.s {
				t.Fatalf("String = %q, want %q", got, tt.s)
			}
			if got, ok := ParseMode(tt.s); !ok || got != tt.m {
				t.Fatalf("ParseMode(%q) = %v, %v", tt.s, got, ok)
			}
			if tt.m.Valid() != (tt.m != 0) {
				t.Fatalf("Valid(%v) = %v", tt.m, tt.m.Valid())
			}
		})
	}
	for _, bad := range []string{"", "wr", "rr", "dr", "x", "r-", "rwdx"} {
		if m, ok := ParseMode(bad); ok {
			t.Errorf("ParseMode(%q) accepted: %v", bad, m)
		}
	}
	if Mode(8).Valid() || (ModeAll | 8).Valid() {
		t.Error("unknown mode bits are valid")
	}
}

package daemon

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

func samplePinned() *demux.PinnedObject {
	return &demux.PinnedObject{
		Key: "00112233445566778899aabbccddeeff", Kind: wire.ObjMap, Owner: 1000,
		Spec:   maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: maps.FlagNoPrealloc, Name: "counts"},
		Frozen: true,
		Entries: []byte{1, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0,
			2, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0},
		Pins: []demux.PinRecord{
			{Path: "a/counts", Mode: wire.ModeReadWrite, Perm: 0o640, UID: 1000, GID: 100, Ino: 42},
			{Path: "ro", Mode: wire.ModeRead, Perm: 0o644, UID: 1000, GID: 100, Ino: 43},
		},
	}
}

func TestStateRoundTrip(t *testing.T) { roundTrip(t, samplePinned()) }

// roundTrip requires po to decode to itself after encoding.
func roundTrip(t *testing.T, po *demux.PinnedObject) {
	t.Helper()
	b, err := EncodeState(po)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, po) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, po)
	}
}

func TestDecodeStateRejects(t *testing.T) {
	good, err := EncodeState(samplePinned())
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-5]},
		{"bad magic", flip(0)},
		{"bad version", flip(8)},
		{"flipped entry byte", flip(len(good) - 6)},
		{"flipped checksum", flip(len(good) - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeState(tt.in); !errors.Is(err, ErrBadState) {
				t.Fatalf("DecodeState = %v, want ErrBadState", err)
			}
		})
	}
	bad := samplePinned()
	bad.Entries = bad.Entries[:5]
	if _, err := EncodeState(bad); err == nil {
		t.Fatal("EncodeState accepted partial entries")
	}
	bad = samplePinned()
	bad.Kind = wire.ObjProg
	if _, err := EncodeState(bad); err == nil {
		t.Fatal("EncodeState accepted a program")
	}
}

func TestStateDirSaveLoadRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	sd, err := OpenStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir %v %v", st, err)
	}
	po := samplePinned()
	if err := sd.SavePinned(po); err != nil {
		t.Fatal(err)
	}
	// Replacing keeps one file; a leftover temporary file and an unrelated
	// file are ignored (the temporary one removed); a corrupt state file is
	// reported and left in place.
	po.Frozen = false
	if err := sd.SavePinned(po); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".tmp-pinned-123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)
	corrupt := filepath.Join(dir, "pinned-ffffffffffffffffffffffffffffffff.state")
	os.WriteFile(corrupt, []byte("garbage"), 0o600)
	objs, errs := sd.Load()
	if len(objs) != 1 || !reflect.DeepEqual(objs[0], po) {
		t.Fatalf("Load = %+v", objs)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrBadState) {
		t.Fatalf("Load errors %v, want one ErrBadState", errs)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-pinned-123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("temporary file not cleaned up")
	}
	if _, err := os.Stat(corrupt); err != nil {
		t.Fatal("corrupt file removed")
	}
	if err := sd.RemovePinned(po.Key); err != nil {
		t.Fatal(err)
	}
	if err := sd.RemovePinned(po.Key); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if objs, _ := sd.Load(); len(objs) != 0 {
		t.Fatalf("objects left after remove: %+v", objs)
	}
	if err := sd.RemovePinned("../../etc/passwd"); err == nil {
		t.Fatal("RemovePinned accepted a path as key")
	}
}

func FuzzDecodeState(f *testing.F) {
	good, err := EncodeState(samplePinned())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte(stateMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		po, err := DecodeState(b)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v is not ErrBadState", err)
			}
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		b2, err := EncodeState(po)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		po2, err := DecodeState(b2)
		if err != nil || !reflect.DeepEqual(po, po2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func TestStateRoundTripProgram(t *testing.T) {
	po := &demux.PinnedObject{
		Key: "ffeeddccbbaa99887766554433221100", Kind: wire.ObjProg, Owner: 1000,
		Pins: []demux.PinRecord{{Path: "fw/prog", Mode: wire.ModeRead, Perm: 0o644, UID: 1000, GID: 100, Ino: 7}},
		Prog: &demux.PinnedProg{Type: 6, Name: "xdp_ports", License: "GPL",
			Insns:    []byte{0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0},
			LineInfo: map[int]string{0: "a.c:3: return XDP_PASS;"},
			Maps: []demux.PinnedProgMap{
				{Key: "00112233445566778899aabbccddeeff", Read: true, Write: true,
					Spec:    maps.Spec{Type: maps.TypeHash, KeySize: 2, ValueSize: 1, MaxEntries: 256, Name: "ports"},
					Entries: []byte{80, 0, 1}},
				{Read: true, Spec: maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 1, Name: "stats"},
					Frozen: true, Entries: []byte{0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0}},
			}},
	}
	roundTrip(t, po)
	// A program record with a map whose entries are not whole pairs.
	po.Prog.Maps[0].Entries = []byte{80, 0}
	if b, err := EncodeState(po); err == nil {
		if _, err := DecodeState(b); !errors.Is(err, ErrBadState) {
			t.Fatalf("malformed program map decoded: %v", err)
		}
	}
}

package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
			{Path: "a/counts", Mode: wire.ModeAll, Node: 2, Parent: 1, Perm: 0o640, UID: 1000, GID: 100, Ino: 42,
				ACL: []byte{2, 0, 0, 0, 1, 0, 6, 0}},
			{Path: "ro", Mode: wire.ModeRead, Node: 7, Parent: 5, Perm: 0o644, UID: 1001, GID: 100, Ino: 43},
		},
		Nodes: []demux.NodeRecord{
			{ID: 1, Mode: wire.ModeAll, UID: 1000},
			{ID: 5, Parent: 1, Mode: wire.ModeRead, UID: 1001},
		},
		NextNode: 9,
		PinRoot:  "/run/bpfd/pins",
	}
}

func TestStateRoundTrip(t *testing.T) { roundTrip(t, samplePinned()) }

// TestStateRoundTripSpinLock: a map whose values hold a bpf_spin_lock
// keeps its lock offset across a restart.
func TestStateRoundTripSpinLock(t *testing.T) {
	po := samplePinned()
	po.Spec = maps.Spec{Type: maps.TypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 2, Name: "locked", SpinLock: 8 + 1}
	po.Frozen = false
	po.Entries = append(make([]byte, 4), bytes.Repeat([]byte{7}, 16)...)
	roundTrip(t, po)
}

// TestStateRoundTripRingbuf: a ring buffer's contents are its unread
// records, of any length (length-prefixed in Entries); they round-trip,
// and a record cut short is refused.
func TestStateRoundTripRingbuf(t *testing.T) {
	po := samplePinned()
	po.Spec = maps.Spec{Type: maps.TypeRingbuf, MaxEntries: 4096, Name: "events"}
	po.Entries = []byte{3, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0, 0, 1, 0, 0, 0, 'x'}
	if n, err := demux.CountEntries(po.Spec, po.Entries); err != nil || n != 3 {
		t.Fatalf("CountEntries = %d, %v; want 3 records", n, err)
	}
	roundTrip(t, po)
	po.Entries = po.Entries[:len(po.Entries)-1]
	if _, err := EncodeState(po); err == nil {
		t.Fatal("EncodeState accepted a record cut short")
	}
}

// roundTrip requires po to decode to itself after encoding to a state
// file and a pins file.
func roundTrip(t *testing.T, po *demux.PinnedObject) {
	t.Helper()
	b, err := EncodeState(po)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := EncodePins(po)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pins != nil || got.Nodes != nil {
		t.Fatalf("version 2 state file carries pins: %+v", got)
	}
	pins, err := DecodePins(pb)
	if err != nil {
		t.Fatal(err)
	}
	got.Pins, got.Nodes, got.NextNode, got.PinRoot = pins.Pins, pins.Nodes, pins.NextNode, pins.PinRoot
	if !reflect.DeepEqual(got, po) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, po)
	}
}

// TestDecodeStateVersion1: a state file of the first format (pins inside,
// no lineage) decodes with a reconstructed lineage: a dead root, every pin
// below it with its recorded access, the destroy right only for pins
// whose file belongs to the object's owner.
func TestDecodeStateVersion1(t *testing.T) {
	meta := `{"kind":"map","key":"00112233445566778899aabbccddeeff","owner_uid":1000,` +
		`"spec":{"type":2,"key_size":4,"value_size":4,"max_entries":1,"flags":0,"name":"a"},"frozen":false,` +
		`"pins":[{"path":"own","mode":"rw","perm":384,"uid":1000,"gid":100,"ino":5},` +
		`{"path":"lent","mode":"r","perm":420,"uid":1001,"gid":100,"ino":6}]}`
	b := []byte(stateMagic)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	po, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []demux.PinRecord{
		{Path: "own", Mode: wire.ModeAll, Node: 2, Parent: 1, Perm: 0o600, UID: 1000, GID: 100, Ino: 5},
		{Path: "lent", Mode: wire.ModeRead, Node: 3, Parent: 1, Perm: 0o644, UID: 1001, GID: 100, Ino: 6},
	}
	if !reflect.DeepEqual(po.Pins, want) || po.NextNode != 3 ||
		!reflect.DeepEqual(po.Nodes, []demux.NodeRecord{{ID: 1, Mode: wire.ModeAll, UID: 1000}}) {
		t.Fatalf("version 1 decoded to pins %+v nodes %+v next %d", po.Pins, po.Nodes, po.NextNode)
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
	sd, err := OpenStateDir(dir, "/run/bpfd/pins")
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
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
	// SavePins changes the pins alone.
	po.Pins = po.Pins[:1]
	po.Pins[0].Perm = 0o600
	if err := sd.SavePins(po); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".tmp-pinned-123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)
	corrupt := filepath.Join(dir, "pinned-ffffffffffffffffffffffffffffffff.state")
	os.WriteFile(corrupt, []byte("garbage"), 0o600)
	// A state file whose pins file is missing is the debris of an
	// unacknowledged pin: removed.
	orphan := *po
	orphan.Key = "0123456789abcdef0123456789abcdef"
	ob, _ := EncodeState(&orphan)
	os.WriteFile(sd.path(orphan.Key), ob, 0o600)
	// A record of another pin root is refused and left in place.
	foreign := *po
	foreign.Key, foreign.PinRoot = "abcdefabcdefabcdefabcdefabcdefab", "/elsewhere/pins"
	if err := sd.SavePinned(&foreign); err != nil {
		t.Fatal(err)
	}
	objs, errs := sd.Load()
	if len(objs) != 1 || !reflect.DeepEqual(objs[0], po) {
		t.Fatalf("Load = %+v\nwant %+v", objs, po)
	}
	if len(errs) != 2 || !errors.Is(errs[0], ErrBadState) && !errors.Is(errs[1], ErrBadState) ||
		!errors.Is(errs[0], ErrStatePinRoot) && !errors.Is(errs[1], ErrStatePinRoot) {
		t.Fatalf("Load errors %v, want one ErrBadState and one ErrStatePinRoot", errs)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-pinned-123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("temporary file not cleaned up")
	}
	if _, err := os.Stat(sd.path(orphan.Key)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("state file without pins file not cleaned up")
	}
	if _, err := os.Stat(corrupt); err != nil {
		t.Fatal("corrupt file removed")
	}
	if _, err := os.Stat(sd.path(foreign.Key)); err != nil {
		t.Fatal("foreign record removed")
	}
	if err := sd.RemovePinned(po.Key); err != nil {
		t.Fatal(err)
	}
	if err := sd.RemovePinned(po.Key); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	for _, p := range []string{sd.path(po.Key), sd.pinsPath(po.Key)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left after remove", p)
		}
	}
	if err := sd.RemovePinned("../../etc/passwd"); err == nil {
		t.Fatal("RemovePinned accepted a path as key")
	}
}

// TestStateDirLock: one daemon per state directory. A second opener (in
// this process too: flock locks belong to the open file) is refused with
// an error naming the holder's pid, until the first closes; a directory
// that belongs to another pin root is refused.
func TestStateDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	sd, err := OpenStateDir(dir, "/a/pins")
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenStateDir(dir, "/a/pins")
	if !errors.Is(err, ErrStateLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second OpenStateDir: %v, want ErrStateLocked naming pid %d", err, os.Getpid())
	}
	if err := sd.Close(); err != nil {
		t.Fatal(err)
	}
	sd2, err := OpenStateDir(dir, "/a/pins")
	if err != nil {
		t.Fatalf("after the holder closed: %v", err)
	}
	sd2.Close()
	if _, err := OpenStateDir(dir, "/b/pins"); !errors.Is(err, ErrStatePinRoot) || !strings.Contains(err.Error(), "/a/pins") {
		t.Fatalf("another pin root: %v, want ErrStatePinRoot naming /a/pins", err)
	}
	if _, err := OpenStateDir(dir, "relative/pins"); err == nil {
		t.Fatal("a relative pin root was accepted")
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
		// Whatever decodes re-encodes (as version 2, without the pins
		// a version 1 file carried) to something that decodes the same.
		b2, err := EncodeState(po)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		po2, err := DecodeState(b2)
		po.Pins, po.Nodes, po.NextNode = nil, nil, 0
		if err != nil || !reflect.DeepEqual(po, po2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodePins(f *testing.F) {
	good, err := EncodePins(samplePinned())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte(pinsMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		po, err := DecodePins(b)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v is not ErrBadState", err)
			}
			return
		}
		b2, err := EncodePins(po)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		po2, err := DecodePins(b2)
		if err != nil || !reflect.DeepEqual(po, po2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, po, po2)
		}
	})
}

func TestStateRoundTripProgram(t *testing.T) {
	po := &demux.PinnedObject{
		Key: "ffeeddccbbaa99887766554433221100", Kind: wire.ObjProg, Owner: 1000,
		Pins:     []demux.PinRecord{{Path: "fw/prog", Mode: wire.ModeRead, Node: 1, Perm: 0o644, UID: 1000, GID: 100, Ino: 7}},
		NextNode: 1, PinRoot: "/run/bpfd/pins",
		Prog: &demux.PinnedProg{Type: 6, Name: "xdp_ports", License: "GPL",
			Insns:    []byte{0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0},
			LineInfo: map[int]string{0: "a.c:3: return XDP_PASS;"},
			Maps: []demux.PinnedProgMap{
				{Key: "00112233445566778899aabbccddeeff", Read: true, Write: true,
					Spec:    maps.Spec{Type: maps.TypeHash, KeySize: 2, ValueSize: 1, MaxEntries: 256, Name: "ports"},
					Entries: []byte{80, 0, 1}, Uses: []uint64{4},
					Nodes: []demux.NodeRecord{{ID: 1, Mode: wire.ModeAll, UID: 1000},
						{ID: 3, Parent: 1, Pin: true, Mode: wire.ModeAll, UID: 1000},
						{ID: 4, Parent: 3, Mode: wire.ModeReadWrite | wire.ModeDestroy, UID: 1000}}},
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

// TestStateRoundTripBTF: a map's BTF survives the state file.
func TestStateRoundTripBTF(t *testing.T) {
	po := samplePinned()
	po.BTF = &demux.PinnedBTF{Raw: []byte{0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 1, 2, 3}, KeyTypeID: 1, ValueTypeID: 2}
	roundTrip(t, po)
}

package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/maps"
)

// sampleImage is a small registry with one of everything.
func sampleImage() *Image {
	return &Image{
		LastID: 9,
		Objects: []Object{
			{ID: 1, Key: strings.Repeat("a", 32), Kind: KindMap, Owner: 1000, Cap: 3, Mem: 8192, Name: "m",
				Map:      &Map{Spec: maps.Spec{Type: maps.TypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 16}, Region: "map-00.region"},
				LastNode: 3, Nodes: []Node{{ID: 1, Mode: 7, UID: 1000, Dead: true}, {ID: 2, Parent: 1, Mode: 1, UID: 1000, Cookie: 77, FD: "d25"}, {ID: 3, Parent: 1, Pin: true, Mode: 3, UID: 1000}}},
			{ID: 2, Key: strings.Repeat("b", 32), Kind: KindMap, Owner: 1000, Cap: 3, Name: "pa",
				Map:      &Map{Spec: maps.Spec{Type: maps.TypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}, Region: "map-01.region"},
				LastNode: 1, Nodes: []Node{{ID: 1, Mode: 7, UID: 1000, Cookie: 78, FD: "d26"}},
				Slots: []Slot{{Key: 1, Prog: 5, Via: 1}}},
			{ID: 5, Key: strings.Repeat("c", 32), Kind: KindProg, Owner: 1000, Cap: 3, Name: "p",
				Prog:     &Prog{Type: 1, Name: "p", License: "GPL", Insns: make([]byte, 16), Maps: []ProgMap{{ID: 1, Read: true, Via: []uint64{2}}}},
				LastNode: 1, Nodes: []Node{{ID: 1, Mode: 7, UID: 1000, Cookie: 79, FD: "d27"}}},
			{ID: 9, Key: strings.Repeat("d", 32), Kind: KindLink, Owner: 0, Cap: 3, Name: "p",
				Link:     &Link{Prog: 5, First: 4, Queues: []string{"q9.0"}, Via: []uint64{1}},
				LastNode: 1, Nodes: []Node{{ID: 1, Mode: 7, Cookie: 80, FD: "d28"}}},
		},
		Attachments: []Attachment{{ID: 1, Prog: 5, UID: 1000, FD: "s1", Via: 1}},
		Conns:       []Conn{{FD: "c0", UID: 1000, PID: 42, Handles: []Handle{{Num: 1, Obj: 1, Node: 2, Mode: 1}}}},
		Listeners:   []string{"l0"},
		FDs:         map[string]int{"d25": 10, "c0": 11},
	}
}

func TestImageRoundTrip(t *testing.T) {
	img := sampleImage()
	b, err := EncodeImage(img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeImage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, img) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, img)
	}
	// Every single-byte corruption is refused, never a panic.
	for i := 0; i < len(b); i += 7 {
		c := append([]byte(nil), b...)
		c[i] ^= 0x5a
		if _, err := DecodeImage(c); !errors.Is(err, ErrFormat) {
			t.Fatalf("corruption at %d accepted: %v", i, err)
		}
	}
}

func TestImageCheck(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Image)
	}{
		{"id zero", func(i *Image) { i.Objects[0].ID = 0 }},
		{"id beyond last", func(i *Image) { i.LastID = 4 }},
		{"id repeated", func(i *Image) { i.Objects[1].ID = 1 }},
		{"kind without part", func(i *Image) { i.Objects[0].Kind = KindProg }},
		{"two parts", func(i *Image) { i.Objects[0].Prog = &Prog{} }},
		{"node zero", func(i *Image) { i.Objects[0].Nodes[0].ID = 0 }},
		{"node beyond last", func(i *Image) { i.Objects[0].LastNode = 2 }},
		{"node repeated", func(i *Image) { i.Objects[0].Nodes[1].ID = 1 }},
		{"unknown parent", func(i *Image) { i.Objects[0].Nodes[1].Parent = 3; i.Objects[0].Nodes[2].Parent = 9 }},
		{"cycle", func(i *Image) { i.Objects[0].Nodes[0].Parent = 2 }},
		{"prog uses a prog", func(i *Image) { i.Objects[2].Prog.Maps[0].ID = 5 }},
		{"prog via unknown node", func(i *Image) { i.Objects[2].Prog.Maps[0].Via = []uint64{9} }},
		{"slot names a map", func(i *Image) { i.Objects[1].Slots[0].Prog = 1 }},
		{"link names a map", func(i *Image) { i.Objects[3].Link.Prog = 1 }},
		{"link without queues", func(i *Image) { i.Objects[3].Link.Queues = nil }},
		{"attachment of a map", func(i *Image) { i.Attachments[0].Prog = 1 }},
		{"handle zero", func(i *Image) { i.Conns[0].Handles[0].Num = 0 }},
		{"handle on unknown node", func(i *Image) { i.Conns[0].Handles[0].Node = 9 }},
	}
	if err := sampleImage().Check(); err != nil {
		t.Fatalf("sample: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := sampleImage()
			tt.edit(img)
			if err := img.Check(); !errors.Is(err, ErrFormat) {
				t.Fatalf("Check = %v, want ErrFormat", err)
			}
		})
	}
}

// TestJournal replays every kind of record, then compacts.
func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	base := sampleImage()
	j, err := CreateJournal(path, base)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	recs := []Record{
		{Op: OpObject, Object: &Object{ID: 12, Key: strings.Repeat("e", 32), Kind: KindMap, Map: &Map{Region: "map-02.region"},
			Nodes: []Node{{ID: 1, Mode: 7, Cookie: 90, FD: "d2i"}}}},
		{Op: OpNode, ID: 12, Node: &Node{ID: 2, Parent: 1, Mode: 1, Cookie: 91, FD: "d2j"}},
		{Op: OpDead, ID: 12, NodeID: 1},
		{Op: OpNode, ID: 1, Node: &Node{ID: 4, Parent: 2, Mode: 1}},
		{Op: OpDrop, ID: 1, NodeID: 3},
		{Op: OpUnslot, ID: 2, Key: 1},
		{Op: OpSlot, ID: 2, Slot: &Slot{Key: 3, Prog: 5}},
		{Op: OpDetach, ID: 1},
		{Op: OpAttach, Attachment: &Attachment{ID: 2, Prog: 5, FD: "s2"}},
		{Op: OpDelete, ID: 9},
		{Op: OpNode, ID: 77, Node: &Node{ID: 1}}, // an object that does not exist: ignored
	}
	for i := range recs {
		if err := j.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	img, torn, err := ReadJournal(path)
	if err != nil || torn {
		t.Fatalf("ReadJournal: torn %v, %v", torn, err)
	}
	if err := img.Check(); err != nil {
		t.Fatal(err)
	}
	byID := map[uint32]Object{}
	for _, o := range img.Objects {
		byID[o.ID] = o
	}
	if img.LastID != 12 || len(img.Objects) != 4 || byID[9].ID != 0 {
		t.Fatalf("objects after replay: last id %d, %+v", img.LastID, img.Objects)
	}
	m := byID[12]
	if len(m.Nodes) != 2 || !m.Nodes[0].Dead || m.Nodes[0].FD != "" || m.Nodes[1].FD != "d2j" || m.LastNode != 2 {
		t.Fatalf("nodes of 12: %+v", m.Nodes)
	}
	if n := byID[1].Nodes; len(n) != 3 || n[2].ID != 4 {
		t.Fatalf("nodes of 1: %+v", n)
	}
	if s := byID[2].Slots; len(s) != 1 || s[0].Key != 3 {
		t.Fatalf("slots: %+v", s)
	}
	if len(img.Attachments) != 1 || img.Attachments[0].ID != 2 {
		t.Fatalf("attachments: %+v", img.Attachments)
	}

	// A torn last record is dropped, and said so.
	b, _ := os.ReadFile(path)
	for _, cut := range []int{1, 5, 9} {
		img2, torn, err := DecodeJournal(b[:len(b)-cut])
		if err != nil || !torn {
			t.Fatalf("cut %d: torn %v, %v", cut, torn, err)
		}
		if img2.LastID != 12 {
			t.Fatalf("cut %d: last id %d", cut, img2.LastID)
		}
	}
	// A bad record before the end is an error.
	c := append([]byte(nil), b...)
	c[journalHeader+20] ^= 1
	if _, _, err := DecodeJournal(c); !errors.Is(err, ErrFormat) {
		t.Fatalf("corrupt first record: %v", err)
	}

	// Compaction leaves exactly the image.
	if err := j.Compact(img); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(&Record{Op: OpDelete, ID: 12}); err != nil {
		t.Fatal(err)
	}
	img3, torn, err := ReadJournal(path)
	if err != nil || torn || len(img3.Objects) != 3 {
		t.Fatalf("after compaction: %v torn %v objects %d", err, torn, len(img3.Objects))
	}
}

// TestJournalDropsDangling checks that replay drops what names missing
// objects or nodes.
func TestJournalDropsDangling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := CreateJournal(path, sampleImage())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.Append(&Record{Op: OpDelete, ID: 1})          // the map program 5 uses
	j.Append(&Record{Op: OpDrop, ID: 2, NodeID: 1}) // the prog array's root
	img, _, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range img.Objects {
		if o.ID == 5 || o.ID == 9 {
			t.Errorf("object %d survived although what it uses is gone", o.ID)
		}
		if o.ID == 2 && len(o.Slots) != 0 {
			t.Errorf("slot naming a dropped program kept: %+v", o.Slots)
		}
	}
	if len(img.Attachments) != 0 {
		t.Errorf("attachment of a dropped program kept")
	}
	if err := img.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestFDName(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		ids    []uint64
		want   string
	}{
		{"descriptor", PrefixDescriptor, []uint64{77}, "d25"},
		{"queue", PrefixQueue, []uint64{9, 0}, "q9.0"},
		{"max", PrefixSeccomp, []uint64{1<<64 - 1}, "s3w5e11264sgsf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FDName(tt.prefix, tt.ids...)
			if got != tt.want {
				t.Fatalf("FDName = %q, want %q", got, tt.want)
			}
			p, ids, ok := ParseFDName(got)
			if !ok || p != tt.prefix || !reflect.DeepEqual(ids, tt.ids) {
				t.Fatalf("ParseFDName(%q) = %q %v %v", got, p, ids, ok)
			}
		})
	}
	for _, bad := range []string{"", "d", "D1", "d-1", "d1..2", "bpfd.socket", "d01", "dzzzzzzzzzzzzzzzzz", "x1"} {
		if _, _, ok := ParseFDName(bad); ok {
			t.Errorf("ParseFDName(%q) accepted", bad)
		}
	}
}

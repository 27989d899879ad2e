package state

import (
	"testing"
)

// FuzzDecodeImage feeds arbitrary bytes to DecodeImage: an error or an
// image that passes Check, never a panic.
func FuzzDecodeImage(f *testing.F) {
	if b, err := EncodeImage(sampleImage()); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := DecodeImage(b)
		if err != nil {
			return
		}
		if err := img.Check(); err != nil {
			t.Fatalf("decoded image fails Check: %v", err)
		}
		if _, err := EncodeImage(img); err != nil {
			t.Fatalf("decoded image does not encode: %v", err)
		}
	})
}

// FuzzDecodeJournal feeds arbitrary bytes to DecodeJournal: an error or
// a registry that passes Check, never a panic.
func FuzzDecodeJournal(f *testing.F) {
	for _, b := range sampleJournals() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, _, err := DecodeJournal(b)
		if err != nil {
			return
		}
		if err := img.Check(); err != nil {
			t.Fatalf("replayed registry fails Check: %v", err)
		}
	})
}

// sampleJournals returns a journal holding the sample image and a few
// records of every op.
func sampleJournals() [][]byte {
	img := sampleImage()
	img.FDs = nil
	rec, _ := frame(nil, &Record{Op: OpImage, Image: img})
	b := append([]byte(journalMagic), 1, 0, 0, 0)
	b = append(b, rec...)
	out := [][]byte{append([]byte(nil), b...)}
	for _, r := range []Record{
		{Op: OpObject, Object: &Object{ID: 12, Kind: KindMap, Map: &Map{}, Nodes: []Node{{ID: 1, Mode: 7}}}},
		{Op: OpNode, ID: 12, Node: &Node{ID: 2, Parent: 1, Mode: 1, Cookie: 5, FD: "d5"}},
		{Op: OpDead, ID: 12, NodeID: 2},
		{Op: OpDrop, ID: 1, NodeID: 3},
		{Op: OpSlot, ID: 2, Slot: &Slot{Key: 2, Prog: 5}},
		{Op: OpUnslot, ID: 2, Key: 1},
		{Op: OpAttach, Attachment: &Attachment{ID: 3, Prog: 5, FD: "s3"}},
		{Op: OpDetach, ID: 1},
		{Op: OpDelete, ID: 9},
	} {
		b, _ = frame(b, &r)
	}
	return append(out, b)
}

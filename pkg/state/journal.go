package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// Journal ops (Record.Op).
const (
	OpImage  = "image"  // Image: the whole registry (the first record after a compaction)
	OpObject = "object" // Object: a new object (with its nodes so far); LastID grows to its id
	OpDelete = "delete" // ID: the object is gone
	OpNode   = "node"   // ID, Node: a node added to object ID (or replaced)
	OpDead   = "dead"   // ID, NodeID: the node died (closed, revoked, unpinned); it stays for its subtree
	OpDrop   = "drop"   // ID, NodeID: the node was pruned
	OpSlot   = "slot"   // ID, Slot: a program-array slot filled (or replaced)
	OpUnslot = "unslot" // ID, Key: a program-array slot emptied
	OpAttach = "attach" // Attachment: a seccomp listener attached
	OpDetach = "detach" // ID: attachment ID ended
)

// Record is one journal record: a change to the registry.
type Record struct {
	Op         string      `json:"op"`
	Image      *Image      `json:"image,omitempty"`
	Object     *Object     `json:"object,omitempty"`
	ID         uint32      `json:"id,omitempty"`
	Node       *Node       `json:"node,omitempty"`
	NodeID     uint64      `json:"node_id,omitempty"`
	Slot       *Slot       `json:"slot,omitempty"`
	Key        uint32      `json:"key,omitempty"`
	Attachment *Attachment `json:"attachment,omitempty"`
}

// Journal file framing: "BPFDJNL\0", u32 version, then records, each a
// u32 length, a u32 CRC-32C of the payload, and the payload (a JSON
// Record), little-endian.
const (
	journalMagic   = "BPFDJNL\x00"
	journalVersion = 1
	journalHeader  = 12
	// MaxRecord bounds one record (an image record holds everything).
	MaxRecord = MaxImage
)

// Journal appends registry changes to a file in the runtime directory.
// Safe for concurrent use; appends are serialised. A failed append makes
// the journal broken (Err): later appends are dropped, since a journal
// with a hole would restore a registry that never existed.
type Journal struct {
	mu   sync.Mutex
	path string
	fd   int   // guarded by mu
	size int64 // guarded by mu: bytes in the file
	base int64 // guarded by mu: size right after the last compaction
	err  error // guarded by mu: sticky failure
	buf  []byte
}

// CreateJournal writes a new journal at path holding img as its first
// record (a temporary file renamed over path, so a crash leaves the old
// journal or the new one) and opens it for appending. img's FDs are not
// recorded. It returns the file system error, if any.
func CreateJournal(path string, img *Image) (*Journal, error) {
	j := &Journal{path: path, fd: -1}
	if err := j.rewrite(img); err != nil {
		return nil, err
	}
	return j, nil
}

// rewrite replaces the file with one holding img. mu is held (or j is
// not shared yet).
func (j *Journal) rewrite(img *Image) error {
	cp := *img
	cp.FDs = nil
	rec, err := frame(nil, &Record{Op: OpImage, Image: &cp})
	if err != nil {
		return err
	}
	b := make([]byte, 0, journalHeader+len(rec))
	b = append(b, journalMagic...)
	b = binary.LittleEndian.AppendUint32(b, journalVersion)
	b = append(b, rec...)
	tmp := j.path + ".tmp"
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "open", Path: tmp, Err: err}
	}
	if err := writeAll(fd, b); err != nil {
		unix.Close(fd)
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		unix.Close(fd)
		os.Remove(tmp)
		return err
	}
	if j.fd >= 0 {
		unix.Close(j.fd)
	}
	// Reopen for appending (the fd above was O_WRONLY without O_APPEND).
	unix.Close(fd)
	afd, err := unix.Open(j.path, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		j.fd = -1
		return &os.PathError{Op: "open", Path: j.path, Err: err}
	}
	j.fd, j.size, j.base, j.err = afd, int64(len(b)), int64(len(b)), nil
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		b = b[n:]
	}
	return nil
}

// frame appends r's framed encoding to b.
func frame(b []byte, r *Record) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(js) > MaxRecord {
		return nil, fmt.Errorf("state: journal record of %d bytes is too large", len(js))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(js)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(js, crcTable))
	return append(b, js...), nil
}

// Append writes r with one write(2). It returns the journal's sticky
// error once an append has failed (nothing more is written then).
func (j *Journal) Append(r *Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return j.err
	}
	if j.fd < 0 {
		return errClosedJournal
	}
	b, err := frame(j.buf[:0], r)
	if err != nil {
		return err
	}
	j.buf = b
	if n, err := unix.Write(j.fd, b); err != nil || n != len(b) {
		if err == nil {
			err = io.ErrShortWrite
		}
		j.err = fmt.Errorf("state: journal %s: %w", j.path, os.NewSyscallError("write", err))
		return j.err
	}
	j.size += int64(len(b))
	if cap(j.buf) > 1<<20 {
		j.buf = nil
	}
	return nil
}

var errClosedJournal = errors.New("state: journal closed")

// Err returns the error that broke the journal, or nil.
func (j *Journal) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// NeedsCompaction reports whether the records appended since the last
// compaction outweigh the image it started with (and 1 MiB), so that
// Compact is worth its cost.
func (j *Journal) NeedsCompaction() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	grown := j.size - j.base
	return grown > 1<<20 && grown > 2*j.base
}

// Size returns the journal's size in bytes.
func (j *Journal) Size() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

// Compact replaces the journal with one holding img alone (see
// CreateJournal). The caller makes sure no change is appended between
// taking img and Compact returning (it holds the registry's lock). A
// failed compaction leaves the old journal in use, or the journal broken.
func (j *Journal) Compact(img *Image) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fd < 0 {
		return errClosedJournal
	}
	return j.rewrite(img)
}

// Close closes the journal's file (it stays on disk).
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fd < 0 {
		return nil
	}
	err := unix.Close(j.fd)
	j.fd = -1
	return err
}

// Remove closes the journal and removes its file (the registry it
// describes is gone: a clean shutdown that kept nothing).
func (j *Journal) Remove() error {
	j.Close()
	return os.Remove(j.path)
}

// ReadJournal replays the journal at path and returns the registry it
// describes (FDs empty), whether its tail was torn (a record cut short or
// failing its checksum: the last append was interrupted), and an error
// wrapping ErrFormat if the file is not a journal or a record in the
// middle is bad, or os.ErrNotExist. Records that make no sense against
// what came before (a node of an object that does not exist) are
// ignored; the result passes Image.Check.
func ReadJournal(path string) (img *Image, torn bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	return DecodeJournal(b)
}

// DecodeJournal is ReadJournal on the file's bytes.
func DecodeJournal(b []byte) (*Image, bool, error) {
	bad := func(why string) (*Image, bool, error) {
		return nil, false, fmt.Errorf("%w: journal: %s", ErrFormat, why)
	}
	if len(b) < journalHeader || string(b[:8]) != journalMagic {
		return bad("no journal magic")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != journalVersion {
		return bad(fmt.Sprintf("version %d, want %d", v, journalVersion))
	}
	rp := newReplay()
	b = b[journalHeader:]
	first := true
	for len(b) > 0 {
		if len(b) < 8 {
			return rp.image(), true, nil
		}
		n := uint64(binary.LittleEndian.Uint32(b))
		if n > MaxRecord {
			return bad("record length out of range")
		}
		if uint64(len(b)) < 8+n {
			return rp.image(), true, nil // cut short: the last append
		}
		payload := b[8 : 8+n]
		if binary.LittleEndian.Uint32(b[4:]) != crc32.Checksum(payload, crcTable) {
			if uint64(len(b)) == 8+n {
				return rp.image(), true, nil // the last record, torn
			}
			return bad("record checksum mismatch before the end")
		}
		var r Record
		if err := json.Unmarshal(payload, &r); err != nil {
			return bad(err.Error())
		}
		if first && r.Op != OpImage {
			return bad("does not start with an image")
		}
		first = false
		rp.apply(&r)
		b = b[8+n:]
	}
	if first {
		return bad("empty")
	}
	return rp.image(), false, nil
}

// replay is the registry being rebuilt from records.
type replay struct {
	lastID uint32
	objs   map[uint32]*Object
	atts   map[uint32]*Attachment
}

func newReplay() *replay {
	return &replay{objs: map[uint32]*Object{}, atts: map[uint32]*Attachment{}}
}

func (rp *replay) apply(r *Record) {
	switch r.Op {
	case OpImage:
		if r.Image == nil {
			return
		}
		*rp = *newReplay()
		rp.lastID = r.Image.LastID
		for i := range r.Image.Objects {
			o := r.Image.Objects[i]
			if o.ID != 0 && o.ID <= rp.lastID {
				rp.objs[o.ID] = &o
			}
		}
		for i := range r.Image.Attachments {
			a := r.Image.Attachments[i]
			rp.atts[a.ID] = &a
		}
	case OpObject:
		if r.Object == nil || r.Object.ID == 0 {
			return
		}
		o := *r.Object
		rp.objs[o.ID] = &o
		rp.lastID = max(rp.lastID, o.ID)
		for _, n := range o.Nodes {
			o.LastNode = max(o.LastNode, n.ID)
		}
	case OpDelete:
		delete(rp.objs, r.ID)
	case OpNode:
		o := rp.objs[r.ID]
		if o == nil || r.Node == nil || r.Node.ID == 0 {
			return
		}
		o.LastNode = max(o.LastNode, r.Node.ID)
		for i := range o.Nodes {
			if o.Nodes[i].ID == r.Node.ID {
				o.Nodes[i] = *r.Node
				return
			}
		}
		o.Nodes = append(o.Nodes, *r.Node)
	case OpDead, OpDrop:
		o := rp.objs[r.ID]
		if o == nil {
			return
		}
		for i := range o.Nodes {
			if o.Nodes[i].ID != r.NodeID {
				continue
			}
			if r.Op == OpDrop {
				o.Nodes = append(o.Nodes[:i], o.Nodes[i+1:]...)
			} else {
				o.Nodes[i].Dead, o.Nodes[i].Cookie, o.Nodes[i].FD = true, 0, ""
			}
			return
		}
	case OpSlot:
		o := rp.objs[r.ID]
		if o == nil || r.Slot == nil {
			return
		}
		for i := range o.Slots {
			if o.Slots[i].Key == r.Slot.Key {
				o.Slots[i] = *r.Slot
				return
			}
		}
		o.Slots = append(o.Slots, *r.Slot)
	case OpUnslot:
		o := rp.objs[r.ID]
		if o == nil {
			return
		}
		for i := range o.Slots {
			if o.Slots[i].Key == r.Key {
				o.Slots = append(o.Slots[:i], o.Slots[i+1:]...)
				return
			}
		}
	case OpAttach:
		if r.Attachment != nil {
			a := *r.Attachment
			rp.atts[a.ID] = &a
		}
	case OpDetach:
		delete(rp.atts, r.ID)
	}
}

// image returns the replayed registry without what no longer holds
// together (see ReadJournal): a node whose parent is missing is dropped
// with its subtree; a slot naming a missing program is emptied; a
// program or link naming a missing object or node is dropped (and,
// in turn, what names it).
func (rp *replay) image() *Image {
	img := &Image{LastID: rp.lastID}
	ids := make([]uint32, 0, len(rp.objs))
	for id := range rp.objs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		o := rp.objs[id]
		o.Nodes = pruneOrphans(o.Nodes)
		for _, n := range o.Nodes {
			o.LastNode = max(o.LastNode, n.ID)
		}
	}
	// Drop objects naming what is missing, until nothing changes.
	for changed := true; changed; {
		changed = false
		for _, id := range ids {
			o := rp.objs[id]
			if o == nil || refsOK(rp.objs, o) {
				continue
			}
			delete(rp.objs, id)
			changed = true
		}
	}
	for _, id := range ids {
		if o := rp.objs[id]; o != nil {
			img.Objects = append(img.Objects, *o)
		}
	}
	aids := make([]uint32, 0, len(rp.atts))
	for id := range rp.atts {
		aids = append(aids, id)
	}
	sort.Slice(aids, func(i, j int) bool { return aids[i] < aids[j] })
	for _, id := range aids {
		a := rp.atts[id]
		if o := rp.objs[a.Prog]; o != nil && o.Kind == KindProg && a.FD != "" && (a.Via == 0 || hasNode(o, a.Via)) {
			img.Attachments = append(img.Attachments, *a)
		}
	}
	return img
}

// pruneOrphans removes nodes whose parent is not among nodes (and, in
// turn, their children), and repeated ids.
func pruneOrphans(nodes []Node) []Node {
	for {
		ids := map[uint64]int{}
		for _, n := range nodes {
			ids[n.ID]++
		}
		out := nodes[:0:0]
		for _, n := range nodes {
			if n.ID == 0 || ids[n.ID] > 1 || n.Parent != 0 && ids[n.Parent] == 0 || n.Parent == n.ID {
				continue
			}
			out = append(out, n)
		}
		if len(out) == len(nodes) {
			// Cycles: nodes that never reach a root.
			parent := map[uint64]uint64{}
			for _, n := range out {
				parent[n.ID] = n.Parent
			}
			final := out[:0:0]
			for _, n := range out {
				cur, ok := n.ID, false
				for steps := 0; steps <= len(parent); steps++ {
					if parent[cur] == 0 {
						ok = true
						break
					}
					cur = parent[cur]
				}
				if ok {
					final = append(final, n)
				}
			}
			return final
		}
		nodes = out
	}
}

func hasNode(o *Object, id uint64) bool {
	for _, n := range o.Nodes {
		if n.ID == id {
			return true
		}
	}
	return false
}

// refsOK reports whether everything o names exists.
func refsOK(objs map[uint32]*Object, o *Object) bool {
	is := func(id uint32, kind string) bool { return objs[id] != nil && objs[id].Kind == kind }
	parts := 0
	for _, p := range []bool{o.Map != nil, o.Prog != nil, o.Link != nil} {
		if p {
			parts++
		}
	}
	want := map[string]bool{KindMap: o.Map != nil, KindProg: o.Prog != nil, KindLink: o.Link != nil}
	if parts != 1 || !want[o.Kind] {
		return false
	}
	if o.Prog != nil {
		for _, pm := range o.Prog.Maps {
			if !is(pm.ID, KindMap) {
				return false
			}
			for _, v := range pm.Via {
				if !hasNode(objs[pm.ID], v) {
					return false
				}
			}
		}
	}
	if o.Link != nil {
		if !is(o.Link.Prog, KindProg) || len(o.Link.Queues) == 0 {
			return false
		}
		for _, v := range o.Link.Via {
			if !hasNode(objs[o.Link.Prog], v) {
				return false
			}
		}
	}
	keep := o.Slots[:0:0]
	for _, s := range o.Slots {
		if o.Map != nil && is(s.Prog, KindProg) && (s.Via == 0 || hasNode(objs[s.Prog], s.Via)) {
			keep = append(keep, s)
		}
	}
	o.Slots = keep
	return true
}

// JournalPath returns the journal's path in runtime directory dir.
func JournalPath(dir string) string { return filepath.Join(dir, "journal") }

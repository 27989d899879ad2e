package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/bpfd-project/bpfd/pkg/maps"
)

// Image is the server's registry at one instant (see the package doc).
// File descriptors are named, never numbered: FDs maps each name to the
// descriptor number in the process that reads the image (filled by
// whoever hands the fds over), so the same Image works with fds
// inherited across exec and with fds handed back by systemd.
// It is plain data.
type Image struct {
	// LastID is the last object id given out; the new process continues
	// above it, so ids are not reused across a restart.
	LastID uint32 `json:"last_id"`
	// Objects are the live objects, with their authority trees.
	Objects []Object `json:"objects"`
	// Attachments are the seccomp listeners being served.
	Attachments []Attachment `json:"attachments,omitempty"`
	// Conns are client connections (upgrades only: a crash ends them).
	Conns []Conn `json:"conns,omitempty"`
	// Listeners name the listening sockets (upgrades only).
	Listeners []string `json:"listeners,omitempty"`
	// Extra names other fds handed over (upgrades only): the state
	// directory's lock, the journal.
	Extra map[string]string `json:"extra,omitempty"`
	// FDs maps fd names to numbers in the receiving process. Not part of
	// a journal.
	FDs map[string]int `json:"fds,omitempty"`
	// Stored names the fds systemd's store holds for the daemon
	// (upgrades only: the new process need not store them again).
	Stored []string `json:"stored,omitempty"`
	// Version is the handing-over binary's version, Started when it
	// stopped taking requests (unix nanoseconds): the new process reports
	// both and the pause (upgrades only).
	Version string `json:"version,omitempty"`
	Started int64  `json:"started,omitempty"`
}

// Object kinds.
const (
	KindMap  = "map"
	KindProg = "prog"
	KindLink = "link"
)

// Object is one registry object.
type Object struct {
	ID    uint32 `json:"id"`
	Key   string `json:"key"` // 32 hex digits, stable across restarts (the pin records' key)
	Kind  string `json:"kind"`
	Owner uint32 `json:"owner"`
	Cap   uint8  `json:"cap"` // wire.Mode: the cap on every descriptor's data rights
	Mem   uint64 `json:"mem"`
	Name  string `json:"name"`
	Map   *Map   `json:"map,omitempty"`
	Prog  *Prog  `json:"prog,omitempty"`
	Link  *Link  `json:"link,omitempty"`
	// LastNode is the last lineage node id given out.
	LastNode uint64 `json:"last_node"`
	// Nodes are the object's lineage nodes: live descriptors, pins, and
	// dead nodes kept for what hangs below them.
	Nodes []Node `json:"nodes,omitempty"`
	// Slots are a program array's occupied slots.
	Slots []Slot `json:"slots,omitempty"`
}

// Map is a map object's storage.
type Map struct {
	Spec maps.Spec `json:"spec"`
	// Region is the base name of the region file in the runtime
	// directory ("" for a memfd backing, which must then come as FD).
	Region string `json:"region,omitempty"`
	// FD names the region's descriptor when it is handed over.
	FD string `json:"fd,omitempty"`
}

// Prog is a program object: what loads it again.
type Prog struct {
	Type     uint32         `json:"type"`
	Name     string         `json:"name"`
	License  string         `json:"license"`
	Insns    []byte         `json:"insns"`
	LineInfo map[int]string `json:"line_info,omitempty"`
	// Maps are the maps it uses, in the order its instructions index
	// them.
	Maps []ProgMap `json:"maps"`
}

// ProgMap is one map a program uses.
type ProgMap struct {
	ID          uint32 `json:"id"`
	Read, Write bool
	// Via are the map's lineage nodes whose authority the program uses.
	Via []uint64 `json:"via,omitempty"`
}

// Link is a netfilter-queue link.
type Link struct {
	Prog    uint32   `json:"prog"`
	First   uint16   `json:"first"`
	Flags   uint32   `json:"flags"`
	MaxLen  uint32   `json:"max_len"`
	Created int64    `json:"created"` // unix seconds
	Queues  []string `json:"queues"`  // fd names of the queue sockets, first queue first
	// Via are the program's lineage nodes the link was made through.
	Via []uint64 `json:"via,omitempty"`
}

// Node is one lineage node of an object.
type Node struct {
	ID     uint64 `json:"id"`
	Parent uint64 `json:"parent,omitempty"`
	Pin    bool   `json:"pin,omitempty"`
	Mode   uint8  `json:"mode"` // wire.Mode
	UID    uint32 `json:"uid"`
	Dead   bool   `json:"dead,omitempty"`
	// Cookie is a live descriptor's client-end SO_COOKIE.
	Cookie uint64 `json:"cookie,omitempty"`
	// FD names the daemon's end of a live descriptor.
	FD string `json:"fd,omitempty"`
}

// Slot is an occupied program-array slot.
type Slot struct {
	Key  uint32 `json:"key"`
	Prog uint32 `json:"prog"`
	Via  uint64 `json:"via,omitempty"` // the program's node the slot was filled through
}

// Attachment is a seccomp listener served by a program.
type Attachment struct {
	ID   uint32 `json:"id"`
	Prog uint32 `json:"prog"`
	UID  uint32 `json:"uid"`
	FD   string `json:"fd"`
	Via  uint64 `json:"via,omitempty"`
}

// Conn is a client connection and its handle table.
type Conn struct {
	FD      string   `json:"fd"`
	UID     uint32   `json:"uid"`
	GID     uint32   `json:"gid"`
	PID     int32    `json:"pid"`
	Handles []Handle `json:"handles,omitempty"`
	// Pending is set on the connection whose CmdDaemonUpgrade the new
	// process answers.
	Pending bool `json:"pending,omitempty"`
}

// Handle is one handle of a connection.
type Handle struct {
	Num   uint32 `json:"num"`
	Obj   uint32 `json:"obj"`
	Node  uint64 `json:"node"` // the descriptor node it hangs on
	Mode  uint8  `json:"mode"`
	Maker bool   `json:"maker,omitempty"`
	// Dead marks a revoked handle still in the table (it answers EBADF,
	// and releasing it succeeds); Obj and Node are then 0.
	Dead bool `json:"dead,omitempty"`
}

// Image file framing.
const (
	imageMagic   = "BPFDIMG\x00"
	imageVersion = 1
	// MaxImage bounds an encoded image (a program carries up to 8 MiB of
	// instructions; many of them fit).
	MaxImage = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrFormat wraps every decoding error of this package.
var ErrFormat = errors.New("state: malformed image or journal")

// EncodeImage returns img's encoding: "BPFDIMG\0", u32 version, u64
// length, that many bytes of JSON, u32 CRC-32C of everything before it,
// little-endian.
func EncodeImage(img *Image) ([]byte, error) {
	js, err := json.Marshal(img)
	if err != nil {
		return nil, err
	}
	if len(js) > MaxImage {
		return nil, fmt.Errorf("state: image of %d bytes is too large", len(js))
	}
	b := make([]byte, 0, len(imageMagic)+12+len(js)+4)
	b = append(b, imageMagic...)
	b = binary.LittleEndian.AppendUint32(b, imageVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(js)))
	b = append(b, js...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable)), nil
}

// DecodeImage parses an EncodeImage encoding. It returns an error
// wrapping ErrFormat for anything else, and checks the image's own
// consistency (Check).
func DecodeImage(b []byte) (*Image, error) {
	bad := func(why string) (*Image, error) { return nil, fmt.Errorf("%w: %s", ErrFormat, why) }
	if len(b) < len(imageMagic)+16 || string(b[:len(imageMagic)]) != imageMagic {
		return bad("no image magic")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != imageVersion {
		return bad(fmt.Sprintf("image version %d, want %d", v, imageVersion))
	}
	n := binary.LittleEndian.Uint64(b[12:])
	if n > MaxImage || uint64(len(b)) != 20+n+4 {
		return bad("bad image length")
	}
	if binary.LittleEndian.Uint32(b[20+n:]) != crc32.Checksum(b[:20+n], crcTable) {
		return bad("image checksum mismatch")
	}
	img := &Image{}
	if err := json.Unmarshal(b[20:20+n], img); err != nil {
		return bad(err.Error())
	}
	if err := img.Check(); err != nil {
		return nil, err
	}
	return img, nil
}

// Check validates what the server relies on before it looks at an image:
// object ids unique, non-zero and at most LastID; each object of exactly
// its kind's part; node ids unique, non-zero, at most the object's
// LastNode, parents known, no cycles; slots, program maps, links,
// attachments and handles naming objects and nodes that exist. Modes,
// quotas and map regions are the server's to check. It returns an error
// wrapping ErrFormat.
func (img *Image) Check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, a...))
	}
	objs := map[uint32]*Object{}
	for i := range img.Objects {
		o := &img.Objects[i]
		if o.ID == 0 || o.ID > img.LastID {
			return bad("object id %d out of range", o.ID)
		}
		if objs[o.ID] != nil {
			return bad("object id %d repeated", o.ID)
		}
		objs[o.ID] = o
		parts := 0
		for _, p := range []bool{o.Map != nil, o.Prog != nil, o.Link != nil} {
			if p {
				parts++
			}
		}
		want := map[string]bool{KindMap: o.Map != nil, KindProg: o.Prog != nil, KindLink: o.Link != nil}
		if parts != 1 || !want[o.Kind] {
			return bad("object %d of kind %q has the wrong parts", o.ID, o.Kind)
		}
		if err := checkNodes(o); err != nil {
			return bad("object %d: %v", o.ID, err)
		}
	}
	node := func(obj uint32, id uint64) bool {
		o := objs[obj]
		if o == nil {
			return false
		}
		for _, n := range o.Nodes {
			if n.ID == id {
				return true
			}
		}
		return false
	}
	isKind := func(id uint32, kind string) bool { return objs[id] != nil && objs[id].Kind == kind }
	for _, o := range img.Objects {
		if o.Prog != nil {
			for _, pm := range o.Prog.Maps {
				if !isKind(pm.ID, KindMap) {
					return bad("program %d uses %d, not a map", o.ID, pm.ID)
				}
				for _, v := range pm.Via {
					if !node(pm.ID, v) {
						return bad("program %d uses unknown node %d of map %d", o.ID, v, pm.ID)
					}
				}
			}
		}
		if o.Link != nil {
			if !isKind(o.Link.Prog, KindProg) || len(o.Link.Queues) == 0 {
				return bad("link %d: bad program or no queues", o.ID)
			}
			for _, v := range o.Link.Via {
				if !node(o.Link.Prog, v) {
					return bad("link %d uses unknown node %d", o.ID, v)
				}
			}
		}
		for _, s := range o.Slots {
			if o.Map == nil || !isKind(s.Prog, KindProg) || s.Via != 0 && !node(s.Prog, s.Via) {
				return bad("object %d: bad slot %d", o.ID, s.Key)
			}
		}
	}
	for _, a := range img.Attachments {
		if !isKind(a.Prog, KindProg) || a.FD == "" || a.Via != 0 && !node(a.Prog, a.Via) {
			return bad("attachment %d: bad program or fd", a.ID)
		}
	}
	for _, c := range img.Conns {
		seen := map[uint32]bool{}
		for _, h := range c.Handles {
			if h.Num == 0 || seen[h.Num] || !h.Dead && !node(h.Obj, h.Node) {
				return bad("connection %s: bad handle %d", c.FD, h.Num)
			}
			seen[h.Num] = true
		}
	}
	return nil
}

// checkNodes checks an object's lineage (see Check).
func checkNodes(o *Object) error {
	parent := map[uint64]uint64{}
	for _, n := range o.Nodes {
		if n.ID == 0 || n.ID > o.LastNode {
			return fmt.Errorf("node id %d out of range", n.ID)
		}
		if _, dup := parent[n.ID]; dup {
			return fmt.Errorf("node id %d repeated", n.ID)
		}
		parent[n.ID] = n.Parent
	}
	for id := range parent {
		cur := id
		for steps := 0; parent[cur] != 0; steps++ {
			p := parent[cur]
			if _, ok := parent[p]; !ok {
				return fmt.Errorf("node %d has an unknown parent %d", cur, p)
			}
			if steps > len(parent) {
				return errors.New("cycle in the lineage")
			}
			cur = p
		}
	}
	return nil
}

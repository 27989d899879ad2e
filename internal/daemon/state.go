package daemon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/state"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// State files.
//
// Each pinned object has two files in the state directory, each written
// atomically (a temporary file in the same directory, fsync, rename,
// fsync of the directory):
//
// "pinned-<key>.state", the object: written when it is first pinned, when
// another pin is added, and at shutdown:
//
//	magic    8 bytes  "BPFDPIN\x00"
//	version  u32      stateVersion (2; version 1 also held the pins)
//	metaLen  u32      length of meta
//	meta     JSON     stateMeta: kind, key, owner, spec, frozen, prog
//	count    u64      number of entries
//	entries  count × (key_size + value_size) bytes: key ‖ value
//	crc      u32      CRC-32C of everything before it
//
// "pinned-<key>.pins", its pins and their lineage: written with the
// object and on its own whenever only they change (a pin unlinked or
// revoked, a pin file's mode, owner or ACL changed), so that it is always
// the last word on who may open what:
//
//	magic    8 bytes  "BPFDPNS\x00"
//	version  u32      pinsVersion (1)
//	metaLen  u32      length of meta
//	meta     JSON     statePins: key, pin_root, next_node, nodes, pins
//	crc      u32      CRC-32C of everything before it
//
// all little-endian. "kind" is "map" or "prog"; a program's record has no
// entries of its own: its instructions and the snapshots of the maps it
// uses are in meta.prog. An object is restored only with both files (or a
// version 1 state file alone).
//
// The directory also holds "lock" (flocked for the daemon's life; it
// holds the daemon's pid) and "pin-root" (the absolute pin root the state
// belongs to; a daemon with another pin root refuses the directory).
const (
	stateMagic   = "BPFDPIN\x00"
	stateVersion = 2
	pinsMagic    = "BPFDPNS\x00"
	pinsVersion  = 1
	stateSuffix  = ".state"
	pinsSuffix   = ".pins"
	statePrefix  = "pinned-"
	lockName     = "lock"
	pinRootName  = "pin-root"
	// maxStateMeta caps the JSON metadata of one state file (a program's
	// carries its instructions and the contents of its maps).
	maxStateMeta = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var keyRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// stateMeta is the JSON part of a state file.
// stateBTF is a map's BTF: the raw blob and the key and value type ids.
type stateBTF struct {
	Raw         []byte `json:"raw"`
	KeyTypeID   uint32 `json:"key_type_id"`
	ValueTypeID uint32 `json:"value_type_id"`
}

type stateMeta struct {
	Kind    string    `json:"kind"`
	Key     string    `json:"key"`
	Owner   uint32    `json:"owner_uid"`
	Spec    stateSpec `json:"spec"`
	Frozen  bool      `json:"frozen"`
	Partial bool      `json:"partial,omitempty"`
	// Region is the map's region file in the runtime directory (the
	// live storage, after a restart in the same boot).
	Region string     `json:"region,omitempty"`
	Pins   []statePin `json:"pins,omitempty"` // version 1 only
	Prog   *stateProg `json:"prog,omitempty"`
	BTF    *stateBTF  `json:"btf,omitempty"` // a map's type information
}

// statePins is the JSON part of a pins file.
type statePins struct {
	Key      string      `json:"key"`
	PinRoot  string      `json:"pin_root"`
	NextNode uint64      `json:"next_node"`
	Nodes    []stateNode `json:"nodes"`
	Pins     []statePin  `json:"pins"`
}

// stateNode is a dead lineage node above the pins.
type stateNode struct {
	ID     uint64 `json:"id"`
	Parent uint64 `json:"parent,omitempty"`
	Kind   string `json:"kind"` // "descriptor" or "pin"
	Mode   string `json:"mode"` // wire.Mode.String()
	UID    uint32 `json:"uid"`
}

// stateProg is a program record (kind "prog").
type stateProg struct {
	Type       uint32         `json:"type"`
	AttachType uint32         `json:"attach_type,omitempty"`
	Name       string         `json:"name"`
	License    string         `json:"license"`
	Insns      []byte         `json:"insns"`
	LineInfo   []stateLine    `json:"line_info,omitempty"`
	Maps       []stateProgMap `json:"maps"`
}

type stateLine struct {
	Insn int    `json:"insn"`
	Line string `json:"line"`
}

type stateProgMap struct {
	Key     string    `json:"key,omitempty"`
	Read    bool      `json:"read"`
	Write   bool      `json:"write"`
	Spec    stateSpec `json:"spec"`
	Frozen  bool      `json:"frozen"`
	Partial bool      `json:"partial,omitempty"`
	Entries []byte    `json:"entries"`
	Region  string    `json:"region,omitempty"`
	// Uses and Nodes place the program in the map's lineage (see
	// demux.PinnedProgMap).
	Uses  []uint64    `json:"uses,omitempty"`
	Nodes []stateNode `json:"nodes,omitempty"`
}

func toStateNodes(ns []demux.NodeRecord) []stateNode {
	var out []stateNode
	for _, n := range ns {
		kind := wire.NodeDescriptor
		if n.Pin {
			kind = wire.NodePin
		}
		out = append(out, stateNode{ID: n.ID, Parent: n.Parent, Kind: kind, Mode: n.Mode.String(), UID: n.UID})
	}
	return out
}

func fromStateNodes(ns []stateNode) ([]demux.NodeRecord, bool) {
	var out []demux.NodeRecord
	for _, n := range ns {
		mode, ok := wire.ParseMode(n.Mode)
		if !ok || n.ID == 0 || n.Kind != wire.NodeDescriptor && n.Kind != wire.NodePin {
			return nil, false
		}
		out = append(out, demux.NodeRecord{ID: n.ID, Parent: n.Parent, Pin: n.Kind == wire.NodePin, Mode: mode, UID: n.UID})
	}
	return out, true
}

func toStateSpec(s maps.Spec) stateSpec {
	ss := stateSpec{Type: s.Type, KeySize: s.KeySize, ValueSize: s.ValueSize,
		MaxEntries: s.MaxEntries, Flags: s.Flags, Name: s.Name, MapExtra: s.MapExtra, SpinLock: s.SpinLock}
	if s.Inner != nil {
		in := toStateSpec(*s.Inner)
		ss.Inner = &in
	}
	return ss
}

func fromStateSpec(s stateSpec) maps.Spec {
	ms := maps.Spec{Type: s.Type, KeySize: s.KeySize, ValueSize: s.ValueSize,
		MaxEntries: s.MaxEntries, Flags: s.Flags, Name: s.Name, MapExtra: s.MapExtra, SpinLock: s.SpinLock}
	if s.Inner != nil {
		in := fromStateSpec(*s.Inner)
		ms.Inner = &in
	}
	return ms
}

type stateSpec struct {
	Type       uint32 `json:"type"`
	KeySize    uint32 `json:"key_size"`
	ValueSize  uint32 `json:"value_size"`
	MaxEntries uint32 `json:"max_entries"`
	Flags      uint32 `json:"flags"`
	Name       string `json:"name"`
	MapExtra   uint64 `json:"map_extra,omitempty"`
	// SpinLock is maps.Spec.SpinLock: 1 + the offset of the values'
	// bpf_spin_lock, 0 (left out) for none.
	SpinLock uint32 `json:"spin_lock,omitempty"`
	// Inner is a map of maps' inner-map template.
	Inner *stateSpec `json:"inner,omitempty"`
}

type statePin struct {
	Path   string `json:"path"`
	Mode   string `json:"mode"` // wire.Mode.String(): "r", "rw", "rwd", ...
	Node   uint64 `json:"node,omitempty"`
	Parent uint64 `json:"parent,omitempty"`
	Perm   uint32 `json:"perm"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	ACL    []byte `json:"acl,omitempty"` // system.posix_acl_access
	Ino    uint64 `json:"ino"`
}

// ErrBadState wraps every error of DecodeState.
var ErrBadState = errors.New("malformed state file")

func parseMode(s string) (wire.Mode, bool) {
	m, ok := wire.ParseMode(s)
	return m, ok && m.Valid()
}

// EncodeState returns the state file encoding of po's object (everything
// but its pins: see EncodePins). It fails for a kind other than
// wire.ObjMap and wire.ObjProg, or entries that are not whole key/value
// pairs.
//
// A map created with BTF records it in meta.btf (raw BTF, base64, and the
// key and value type ids), restored with the map.
func EncodeState(po *demux.PinnedObject) ([]byte, error) {
	if !keyRE.MatchString(po.Key) {
		return nil, fmt.Errorf("bad state key %q", po.Key)
	}
	m := stateMeta{Key: po.Key, Owner: po.Owner}
	count := 0
	switch {
	case po.Kind == wire.ObjMap:
		// Values in the syscall layout: one per possible CPU for
		// per-CPU maps.
		n, err := demux.CountEntries(po.Spec, po.Entries)
		if err != nil {
			return nil, err
		}
		count = n
		m.Kind, m.Frozen, m.Partial, m.Spec = "map", po.Frozen, po.Partial, toStateSpec(po.Spec)
		m.Region = po.Region
		if b := po.BTF; b != nil {
			m.BTF = &stateBTF{Raw: b.Raw, KeyTypeID: b.KeyTypeID, ValueTypeID: b.ValueTypeID}
		}
	case po.Kind == wire.ObjProg && po.Prog != nil && len(po.Entries) == 0:
		pp := po.Prog
		sp := &stateProg{Type: pp.Type, AttachType: pp.AttachType, Name: pp.Name, License: pp.License, Insns: pp.Insns, Maps: []stateProgMap{}}
		for insn, line := range pp.LineInfo {
			sp.LineInfo = append(sp.LineInfo, stateLine{Insn: insn, Line: line})
		}
		sort.Slice(sp.LineInfo, func(i, j int) bool { return sp.LineInfo[i].Insn < sp.LineInfo[j].Insn })
		for _, pm := range pp.Maps {
			sp.Maps = append(sp.Maps, stateProgMap{Key: pm.Key, Read: pm.Read, Write: pm.Write,
				Spec: toStateSpec(pm.Spec), Frozen: pm.Frozen, Partial: pm.Partial, Entries: pm.Entries,
				Region: pm.Region, Uses: pm.Uses, Nodes: toStateNodes(pm.Nodes)})
		}
		m.Kind, m.Prog = "prog", sp
	default:
		return nil, fmt.Errorf("cannot persist object kind %d", po.Kind)
	}
	meta, err := json.Marshal(&m)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(stateMagic)+8+len(meta)+8+len(po.Entries)+4)
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint32(b, stateVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = binary.LittleEndian.AppendUint64(b, uint64(count))
	b = append(b, po.Entries...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable)), nil
}

// EncodePins returns the pins file encoding of po's pin part: Key,
// PinRoot, NextNode, Nodes and Pins.
func EncodePins(po *demux.PinnedObject) ([]byte, error) {
	if !keyRE.MatchString(po.Key) {
		return nil, fmt.Errorf("bad state key %q", po.Key)
	}
	m := statePins{Key: po.Key, PinRoot: po.PinRoot, NextNode: po.NextNode, Nodes: []stateNode{}, Pins: []statePin{}}
	m.Nodes = append(m.Nodes, toStateNodes(po.Nodes)...)
	for _, p := range po.Pins {
		m.Pins = append(m.Pins, statePin{Path: p.Path, Mode: p.Mode.String(), Node: p.Node, Parent: p.Parent,
			Perm: uint32(p.Perm.Perm()), UID: p.UID, GID: p.GID, ACL: p.ACL, Ino: p.Ino})
	}
	meta, err := json.Marshal(&m)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(pinsMagic)+8+len(meta)+4)
	b = append(b, pinsMagic...)
	b = binary.LittleEndian.AppendUint32(b, pinsVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable)), nil
}

// DecodePins parses a pins file into a PinnedObject holding only the pin
// part (Key, PinRoot, NextNode, Nodes, Pins). Every malformation is an
// error wrapping ErrBadState.
func DecodePins(b []byte) (*demux.PinnedObject, error) {
	bad := func(why string) (*demux.PinnedObject, error) {
		return nil, fmt.Errorf("%w: pins: %s", ErrBadState, why)
	}
	hdr := len(pinsMagic) + 8
	if len(b) < hdr+4 {
		return bad("too short")
	}
	if string(b[:len(pinsMagic)]) != pinsMagic {
		return bad("bad magic")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return bad("checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[len(pinsMagic):]); v != pinsVersion {
		return bad(fmt.Sprintf("unknown version %d", v))
	}
	if ml := uint64(binary.LittleEndian.Uint32(b[len(pinsMagic)+4:])); uint64(hdr)+ml != uint64(len(body)) {
		return bad("bad metadata length")
	}
	var m statePins
	dec := json.NewDecoder(bytes.NewReader(body[hdr:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return bad("metadata: " + err.Error())
	}
	if !keyRE.MatchString(m.Key) {
		return bad("bad key")
	}
	if m.PinRoot == "" || !filepath.IsAbs(m.PinRoot) {
		return bad("pin root missing or not absolute")
	}
	po := &demux.PinnedObject{Key: m.Key, PinRoot: m.PinRoot, NextNode: m.NextNode}
	var ok bool
	if po.Nodes, ok = fromStateNodes(m.Nodes); !ok {
		return bad("bad lineage node")
	}
	for _, p := range m.Pins {
		rec, ok := decodePin(p)
		if !ok || rec.Node == 0 {
			return bad("bad pin record")
		}
		po.Pins = append(po.Pins, rec)
	}
	return po, nil
}

func decodePin(p statePin) (demux.PinRecord, bool) {
	mode, ok := parseMode(p.Mode)
	if !ok || p.Perm&^0o777 != 0 || p.Path == "" {
		return demux.PinRecord{}, false
	}
	return demux.PinRecord{Path: p.Path, Mode: mode, Node: p.Node, Parent: p.Parent, Perm: os.FileMode(p.Perm),
		UID: p.UID, GID: p.GID, ACL: p.ACL, Ino: p.Ino}, true
}

// DecodeState parses a state file. Every malformation (bad magic, version,
// checksum, lengths, JSON, kind, key, mode) is an error wrapping
// ErrBadState. The entries alias b. A version 2 file has no pins (they are
// in the pins file: DecodePins); a version 1 file has them, and their
// lineage is reconstructed: a dead root (node 1) with every pin below it,
// each keeping its recorded access, and the destroy right for pins whose
// file belongs to the object's owner (version 1 recorded no more).
func DecodeState(b []byte) (*demux.PinnedObject, error) {
	bad := func(why string) (*demux.PinnedObject, error) { return nil, fmt.Errorf("%w: %s", ErrBadState, why) }
	hdr := len(stateMagic) + 8
	if len(b) < hdr+8+4 {
		return bad("too short")
	}
	if string(b[:len(stateMagic)]) != stateMagic {
		return bad("bad magic")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return bad("checksum mismatch")
	}
	v := binary.LittleEndian.Uint32(b[len(stateMagic):])
	if v != stateVersion && v != 1 {
		return bad(fmt.Sprintf("unknown version %d", v))
	}
	ml := uint64(binary.LittleEndian.Uint32(b[len(stateMagic)+4:]))
	if ml > maxStateMeta || uint64(hdr)+ml+8 > uint64(len(body)) {
		return bad("bad metadata length")
	}
	var m stateMeta
	dec := json.NewDecoder(bytes.NewReader(body[hdr : hdr+int(ml)]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return bad("metadata: " + err.Error())
	}
	if !keyRE.MatchString(m.Key) {
		return bad("bad key")
	}
	rest := body[hdr+int(ml):]
	count := binary.LittleEndian.Uint64(rest)
	rest = rest[8:]
	var po *demux.PinnedObject
	switch m.Kind {
	case "map":
		if n, err := demux.CountEntries(fromStateSpec(m.Spec), rest); err != nil || uint64(n) != count {
			return bad("entry count does not match the data")
		}
		if m.Region != "" && !maps.IsRegionFile(m.Region) {
			return bad("bad region file name")
		}
		po = &demux.PinnedObject{Key: m.Key, Kind: wire.ObjMap, Owner: m.Owner, Frozen: m.Frozen, Partial: m.Partial,
			Spec: fromStateSpec(m.Spec), Entries: rest, Region: m.Region}
		if b := m.BTF; b != nil {
			if len(b.Raw) == 0 {
				return bad("empty BTF")
			}
			po.BTF = &demux.PinnedBTF{Raw: b.Raw, KeyTypeID: b.KeyTypeID, ValueTypeID: b.ValueTypeID}
		}
	case "prog":
		sp := m.Prog
		if sp == nil || count != 0 || len(rest) != 0 || len(sp.Insns) == 0 || len(sp.Insns)%8 != 0 {
			return bad("malformed program record")
		}
		pp := &demux.PinnedProg{Type: sp.Type, AttachType: sp.AttachType, Name: sp.Name, License: sp.License, Insns: sp.Insns}
		if len(sp.LineInfo) > 0 {
			pp.LineInfo = make(map[int]string, len(sp.LineInfo))
			for _, l := range sp.LineInfo {
				pp.LineInfo[l.Insn] = l.Line
			}
		}
		for _, pm := range sp.Maps {
			_, err := demux.CountEntries(fromStateSpec(pm.Spec), pm.Entries)
			if err != nil || pm.Key != "" && !keyRE.MatchString(pm.Key) ||
				pm.Region != "" && !maps.IsRegionFile(pm.Region) {
				return bad("malformed map of a program record")
			}
			nodes, ok := fromStateNodes(pm.Nodes)
			if !ok {
				return bad("malformed lineage of a map of a program record")
			}
			pp.Maps = append(pp.Maps, demux.PinnedProgMap{Key: pm.Key, Read: pm.Read, Write: pm.Write,
				Spec: fromStateSpec(pm.Spec), Frozen: pm.Frozen, Partial: pm.Partial, Entries: pm.Entries,
				Uses: pm.Uses, Nodes: nodes, Region: pm.Region})
		}
		po = &demux.PinnedObject{Key: m.Key, Kind: wire.ObjProg, Owner: m.Owner, Prog: pp}
	default:
		return bad(fmt.Sprintf("unknown kind %q", m.Kind))
	}
	if v == stateVersion {
		if len(m.Pins) != 0 {
			return bad("pins in a version 2 state file")
		}
		return po, nil
	}
	if len(m.Pins) == 0 {
		return bad("version 1 state file without pins")
	}
	po.Nodes = []demux.NodeRecord{{ID: 1, Mode: wire.ModeAll, UID: po.Owner}}
	for i, p := range m.Pins {
		rec, ok := decodePin(p)
		if !ok || rec.Mode&wire.ModeDestroy != 0 {
			return bad("bad pin record")
		}
		rec.Node, rec.Parent = uint64(i+2), 1
		if rec.UID == po.Owner {
			rec.Mode |= wire.ModeDestroy
		}
		po.Pins = append(po.Pins, rec)
	}
	po.NextNode = uint64(len(po.Pins) + 1)
	return po, nil
}

// StateDir is a directory of state files; it implements demux.Persister.
// It holds the directory's lock for its life (one daemon per state
// directory). Its methods are safe for concurrent use (each file is
// replaced atomically; the server serialises calls anyway).
type StateDir struct {
	dir     string
	pinRoot string
	lock    *os.File
}

var _ demux.Persister = (*StateDir)(nil)

// State directory errors.
var (
	// ErrStateLocked: another daemon holds the state directory.
	ErrStateLocked = errors.New("state directory is in use by another bpfd")
	// ErrStatePinRoot: the state directory belongs to another pin root.
	ErrStatePinRoot = errors.New("state directory belongs to another pin root")
)

// OpenStateDir opens (creating it 0700 if missing) the state directory
// for a daemon whose pin root is pinRoot (absolute). It takes the
// directory's lock (flock on "lock", holding this process's pid) for as
// long as the StateDir is open: if another process holds it, it fails
// with an error wrapping ErrStateLocked that names the holder's pid. The
// directory records the pin root it belongs to ("pin-root"); one that
// belongs to another pin root is refused with ErrStatePinRoot. Close
// releases the lock.
func OpenStateDir(dir, pinRoot string) (*StateDir, error) {
	if !filepath.IsAbs(pinRoot) {
		return nil, fmt.Errorf("state directory: pin root %q is not absolute", pinRoot)
	}
	pinRoot = filepath.Clean(pinRoot)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := state.LockFile(filepath.Join(dir, lockName), ErrStateLocked, "--state-dir")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*StateDir, error) {
		lock.Close()
		return nil, err
	}
	d := &StateDir{dir: dir, pinRoot: pinRoot, lock: lock}
	b, err := os.ReadFile(filepath.Join(dir, pinRootName))
	switch {
	case err == nil:
		if got := strings.TrimSuffix(string(b), "\n"); got != pinRoot {
			return fail(fmt.Errorf("%s: %w: it holds the pins of %s, not %s; give this daemon its own --state-dir",
				dir, ErrStatePinRoot, got, pinRoot))
		}
	case errors.Is(err, os.ErrNotExist):
		if err := d.writeFile(pinRootName, []byte(pinRoot+"\n")); err != nil {
			return fail(err)
		}
	default:
		return fail(err)
	}
	return d, nil
}

// Close releases the directory's lock. Idempotent.
func (d *StateDir) Close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// Dir returns the directory.
func (d *StateDir) Dir() string { return d.dir }

// PinRoot returns the pin root the directory belongs to.
func (d *StateDir) PinRoot() string { return d.pinRoot }

func (d *StateDir) path(key string) string {
	return filepath.Join(d.dir, statePrefix+key+stateSuffix)
}

func (d *StateDir) pinsPath(key string) string {
	return filepath.Join(d.dir, statePrefix+key+pinsSuffix)
}

// SavePinned implements demux.Persister: it writes po's state file, then
// its pins file.
func (d *StateDir) SavePinned(po *demux.PinnedObject) error {
	b, err := EncodeState(po)
	if err != nil {
		return err
	}
	p, err := EncodePins(d.withRoot(po))
	if err != nil {
		return err
	}
	if err := d.writeFile(filepath.Base(d.path(po.Key)), b); err != nil {
		return err
	}
	return d.writeFile(filepath.Base(d.pinsPath(po.Key)), p)
}

// SavePins implements demux.Persister: it writes po's pins file only.
func (d *StateDir) SavePins(po *demux.PinnedObject) error {
	p, err := EncodePins(d.withRoot(po))
	if err != nil {
		return err
	}
	return d.writeFile(filepath.Base(d.pinsPath(po.Key)), p)
}

// withRoot returns po with PinRoot set to the directory's when empty.
func (d *StateDir) withRoot(po *demux.PinnedObject) *demux.PinnedObject {
	if po.PinRoot != "" {
		return po
	}
	cp := *po
	cp.PinRoot = d.pinRoot
	return &cp
}

// writeFile replaces name in the directory atomically (temporary file,
// fsync, rename, fsync of the directory), so that after a crash it holds
// either the previous or the new content.
func (d *StateDir) writeFile(name string, b []byte) error {
	f, err := os.CreateTemp(d.dir, ".tmp-"+statePrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return d.syncDir()
}

// RemovePinned implements demux.Persister: it removes key's pins file,
// then its state file (a missing file is not an error), and syncs the
// directory.
func (d *StateDir) RemovePinned(key string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("bad state key %q", key)
	}
	for _, p := range []string{d.pinsPath(key), d.path(key)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return d.syncDir()
}

func (d *StateDir) syncDir() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Load reads every state file with its pins file. Files that cannot be
// read or decoded, and records of another pin root, are reported in errs
// (and left in place for an operator to inspect); leftover temporary
// files of an interrupted write are removed, and so is a version 2 state
// file without its pins file (what a crash leaves of a pin that was never
// acknowledged, or of an unpin).
func (d *StateDir) Load() (objs []*demux.PinnedObject, errs []error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, []error{err}
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-"+statePrefix) {
			os.Remove(filepath.Join(d.dir, name))
			continue
		}
		if !e.Type().IsRegular() || !strings.HasPrefix(name, statePrefix) || !strings.HasSuffix(name, stateSuffix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		po, err := DecodeState(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if d.path(po.Key) != filepath.Join(d.dir, name) {
			errs = append(errs, fmt.Errorf("%s: %w: key %s does not match the file name", name, ErrBadState, po.Key))
			continue
		}
		if len(po.Pins) == 0 { // version 2: the pins are in their own file
			pb, err := os.ReadFile(d.pinsPath(po.Key))
			if errors.Is(err, os.ErrNotExist) {
				os.Remove(filepath.Join(d.dir, name))
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			pp, err := DecodePins(pb)
			if err == nil && pp.Key != po.Key {
				err = fmt.Errorf("%w: key %s in the pins file of %s", ErrBadState, pp.Key, po.Key)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(d.pinsPath(po.Key)), err))
				continue
			}
			po.PinRoot, po.NextNode, po.Nodes, po.Pins = pp.PinRoot, pp.NextNode, pp.Nodes, pp.Pins
		} else {
			po.PinRoot = d.pinRoot // version 1: the directory's
		}
		if po.PinRoot != d.pinRoot {
			errs = append(errs, fmt.Errorf("%s: %w: recorded for pin root %s, not %s", name, ErrStatePinRoot, po.PinRoot, d.pinRoot))
			continue
		}
		objs = append(objs, po)
	}
	return objs, errs
}

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
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// State files.
//
// Each pinned object has one file in the state directory,
// "pinned-<key>.state", written atomically (a temporary file in the same
// directory, fsync, rename, fsync of the directory). Its layout:
//
//	magic    8 bytes  "BPFDPIN\x00"
//	version  u32      stateVersion
//	metaLen  u32      length of meta
//	meta     JSON     stateMeta: kind, key, owner, spec, frozen, pins, prog
//	count    u64      number of entries
//	entries  count × (key_size + value_size) bytes: key ‖ value
//	crc      u32      CRC-32C of everything before it
//
// all little-endian. "kind" is "map" or "prog"; a program's record has no
// entries of its own: its instructions and the snapshots of the maps it
// uses are in meta.prog.
const (
	stateMagic   = "BPFDPIN\x00"
	stateVersion = 1
	stateSuffix  = ".state"
	statePrefix  = "pinned-"
	// maxStateMeta caps the JSON metadata of one state file (a program's
	// carries its instructions and the contents of its maps).
	maxStateMeta = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var keyRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// stateMeta is the JSON part of a state file.
type stateMeta struct {
	Kind    string     `json:"kind"`
	Key     string     `json:"key"`
	Owner   uint32     `json:"owner_uid"`
	Spec    stateSpec  `json:"spec"`
	Frozen  bool       `json:"frozen"`
	Partial bool       `json:"partial,omitempty"`
	Pins    []statePin `json:"pins"`
	Prog    *stateProg `json:"prog,omitempty"`
}

// stateProg is a program record (kind "prog").
type stateProg struct {
	Type     uint32         `json:"type"`
	Name     string         `json:"name"`
	License  string         `json:"license"`
	Insns    []byte         `json:"insns"`
	LineInfo []stateLine    `json:"line_info,omitempty"`
	Maps     []stateProgMap `json:"maps"`
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
}

func toStateSpec(s maps.Spec) stateSpec {
	return stateSpec{Type: s.Type, KeySize: s.KeySize, ValueSize: s.ValueSize,
		MaxEntries: s.MaxEntries, Flags: s.Flags, Name: s.Name}
}

func fromStateSpec(s stateSpec) maps.Spec {
	return maps.Spec{Type: s.Type, KeySize: s.KeySize, ValueSize: s.ValueSize,
		MaxEntries: s.MaxEntries, Flags: s.Flags, Name: s.Name}
}

type stateSpec struct {
	Type       uint32 `json:"type"`
	KeySize    uint32 `json:"key_size"`
	ValueSize  uint32 `json:"value_size"`
	MaxEntries uint32 `json:"max_entries"`
	Flags      uint32 `json:"flags"`
	Name       string `json:"name"`
}

type statePin struct {
	Path string `json:"path"`
	Mode string `json:"mode"` // "r", "w", "rw"
	Perm uint32 `json:"perm"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Ino  uint64 `json:"ino"`
}

// ErrBadState wraps every error of DecodeState.
var ErrBadState = errors.New("malformed state file")

func parseMode(s string) (wire.Mode, bool) {
	switch s {
	case "r":
		return wire.ModeRead, true
	case "w":
		return wire.ModeWrite, true
	case "rw":
		return wire.ModeReadWrite, true
	}
	return 0, false
}

// EncodeState returns the state file encoding of po. It fails for a kind
// other than wire.ObjMap and wire.ObjProg, or entries that are not whole
// key/value pairs.
func EncodeState(po *demux.PinnedObject) ([]byte, error) {
	if !keyRE.MatchString(po.Key) {
		return nil, fmt.Errorf("bad state key %q", po.Key)
	}
	m := stateMeta{Key: po.Key, Owner: po.Owner, Pins: []statePin{}}
	es := 1
	switch {
	case po.Kind == wire.ObjMap:
		es = int(po.Spec.KeySize) + int(po.Spec.ValueSize)
		if es == 0 || len(po.Entries)%es != 0 {
			return nil, errors.New("entries are not whole key/value pairs")
		}
		m.Kind, m.Frozen, m.Partial, m.Spec = "map", po.Frozen, po.Partial, toStateSpec(po.Spec)
	case po.Kind == wire.ObjProg && po.Prog != nil && len(po.Entries) == 0:
		pp := po.Prog
		sp := &stateProg{Type: pp.Type, Name: pp.Name, License: pp.License, Insns: pp.Insns, Maps: []stateProgMap{}}
		for insn, line := range pp.LineInfo {
			sp.LineInfo = append(sp.LineInfo, stateLine{Insn: insn, Line: line})
		}
		sort.Slice(sp.LineInfo, func(i, j int) bool { return sp.LineInfo[i].Insn < sp.LineInfo[j].Insn })
		for _, pm := range pp.Maps {
			sp.Maps = append(sp.Maps, stateProgMap{Key: pm.Key, Read: pm.Read, Write: pm.Write,
				Spec: toStateSpec(pm.Spec), Frozen: pm.Frozen, Partial: pm.Partial, Entries: pm.Entries})
		}
		m.Kind, m.Prog = "prog", sp
	default:
		return nil, fmt.Errorf("cannot persist object kind %d", po.Kind)
	}
	for _, p := range po.Pins {
		m.Pins = append(m.Pins, statePin{Path: p.Path, Mode: p.Mode.String(), Perm: uint32(p.Perm.Perm()),
			UID: p.UID, GID: p.GID, Ino: p.Ino})
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
	b = binary.LittleEndian.AppendUint64(b, uint64(len(po.Entries)/es))
	b = append(b, po.Entries...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable)), nil
}

// DecodeState parses a state file. Every malformation (bad magic, version,
// checksum, lengths, JSON, kind, key, mode) is an error wrapping
// ErrBadState. The entries alias b.
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
	if v := binary.LittleEndian.Uint32(b[len(stateMagic):]); v != stateVersion {
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
		es := uint64(m.Spec.KeySize) + uint64(m.Spec.ValueSize)
		if es == 0 || count > uint64(len(rest)) || count*es != uint64(len(rest)) {
			return bad("entry count does not match the data")
		}
		po = &demux.PinnedObject{Key: m.Key, Kind: wire.ObjMap, Owner: m.Owner, Frozen: m.Frozen, Partial: m.Partial,
			Spec: fromStateSpec(m.Spec), Entries: rest}
	case "prog":
		sp := m.Prog
		if sp == nil || count != 0 || len(rest) != 0 || len(sp.Insns) == 0 || len(sp.Insns)%8 != 0 {
			return bad("malformed program record")
		}
		pp := &demux.PinnedProg{Type: sp.Type, Name: sp.Name, License: sp.License, Insns: sp.Insns}
		if len(sp.LineInfo) > 0 {
			pp.LineInfo = make(map[int]string, len(sp.LineInfo))
			for _, l := range sp.LineInfo {
				pp.LineInfo[l.Insn] = l.Line
			}
		}
		for _, pm := range sp.Maps {
			es := int(pm.Spec.KeySize) + int(pm.Spec.ValueSize)
			if es == 0 || len(pm.Entries)%es != 0 || pm.Key != "" && !keyRE.MatchString(pm.Key) {
				return bad("malformed map of a program record")
			}
			pp.Maps = append(pp.Maps, demux.PinnedProgMap{Key: pm.Key, Read: pm.Read, Write: pm.Write,
				Spec: fromStateSpec(pm.Spec), Frozen: pm.Frozen, Partial: pm.Partial, Entries: pm.Entries})
		}
		po = &demux.PinnedObject{Key: m.Key, Kind: wire.ObjProg, Owner: m.Owner, Prog: pp}
	default:
		return bad(fmt.Sprintf("unknown kind %q", m.Kind))
	}
	for _, p := range m.Pins {
		mode, ok := parseMode(p.Mode)
		if !ok || p.Perm&^0o777 != 0 || p.Path == "" {
			return bad("bad pin record")
		}
		po.Pins = append(po.Pins, demux.PinRecord{Path: p.Path, Mode: mode, Perm: os.FileMode(p.Perm),
			UID: p.UID, GID: p.GID, Ino: p.Ino})
	}
	return po, nil
}

// StateDir is a directory of state files; it implements demux.Persister.
// Its methods are safe for concurrent use (each file is replaced
// atomically; the server serialises calls anyway).
type StateDir struct {
	dir string
}

var _ demux.Persister = (*StateDir)(nil)

// OpenStateDir opens (creating it 0700 if missing) the state directory.
func OpenStateDir(dir string) (*StateDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &StateDir{dir: dir}, nil
}

// Dir returns the directory.
func (d *StateDir) Dir() string { return d.dir }

func (d *StateDir) path(key string) string {
	return filepath.Join(d.dir, statePrefix+key+stateSuffix)
}

// SavePinned implements demux.Persister: it writes po's state file
// atomically (temporary file, fsync, rename, fsync of the directory), so
// that after a crash the file holds either the previous or the new state.
func (d *StateDir) SavePinned(po *demux.PinnedObject) error {
	b, err := EncodeState(po)
	if err != nil {
		return err
	}
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
		err = os.Rename(tmp, d.path(po.Key))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return d.syncDir()
}

// RemovePinned implements demux.Persister: it removes key's state file
// (a missing file is not an error) and syncs the directory.
func (d *StateDir) RemovePinned(key string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("bad state key %q", key)
	}
	if err := os.Remove(d.path(key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
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

// Load reads every state file. Files that cannot be read or decoded are
// reported in errs (and left in place for an operator to inspect);
// leftover temporary files of an interrupted write are removed.
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
		objs = append(objs, po)
	}
	return objs, errs
}

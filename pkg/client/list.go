package client

import (
	"encoding/json"
	"errors"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// ObjectRecord describes one object as Objects lists it (see
// wire.ObjectRecord): kind, type, name, owner, creation, memory, pins and
// holder processes, and per kind sizes, run statistics, map ids, seccomp
// counters.
type ObjectRecord = wire.ObjectRecord

// PidRecord is a process holding a descriptor (ObjectRecord.Pids).
type PidRecord = wire.PidRecord

// SeccompRecord is a seccomp attachment of a program, with its decision
// counters (ObjectRecord.Seccomp).
type SeccompRecord = wire.SeccompRecord

// ObjectFilter selects what Objects lists. The zero value lists every
// object the caller may see, without holder processes.
type ObjectFilter struct {
	// Kind: "" for all, else "map", "prog", "link" or "btf".
	Kind string
	// ID, if not 0, lists only that object.
	ID uint32
	// Name, if not "", lists only objects of that name.
	Name string
	// Holders finds the processes holding descriptors of each object
	// (Pids, OtherPids): a scan of /proc by the daemon, slower.
	Holders bool
}

var objKinds = map[string]wire.ObjType{"": 0, "map": wire.ObjMap, "prog": wire.ObjProg, "link": wire.ObjLink, "btf": wire.ObjBTF}

// Objects lists the objects the caller may see, sorted by id: those its
// uid owns and those it holds on this connection (every object for uid
// 0), with metadata only (never contents). It returns ErrInvalid for an
// unknown kind or a name of 16 bytes or more, ErrClosed if c is closed.
func (c *Conn) Objects(f ObjectFilter) ([]ObjectRecord, error) {
	kind, ok := objKinds[f.Kind]
	if !ok || len(f.Name) >= wire.ObjNameLen {
		return nil, ErrInvalid
	}
	a := wire.ListAttr{Kind: kind, ID: f.ID}
	copy(a.Name[:], f.Name)
	if f.Holders {
		a.Flags |= wire.ListFlagHolders
	}
	var ab [wire.ListAttrSize]byte
	var out []ObjectRecord
	if err := c.callPayload(wire.CmdObjList, a.Append(ab[:0]), func(data []byte) error {
		if err := json.Unmarshal(data, &out); err != nil {
			return errors.Join(errProtocol, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// Record returns m's listing record (pins, holders with holders set,
// creation, programs using it).
func (m *Map) Record(holders bool) (ObjectRecord, error) {
	return m.c.record(m.info.ID, "map", holders)
}

// Record returns p's listing record (run count and time, map ids, pins,
// holders with holders set, seccomp attachments and their counters).
func (p *Program) Record(holders bool) (ObjectRecord, error) {
	info, err := p.Info()
	if err != nil {
		return ObjectRecord{}, err
	}
	return p.c.record(info.ID, "prog", holders)
}

func (c *Conn) record(id uint32, kind string, holders bool) (ObjectRecord, error) {
	recs, err := c.Objects(ObjectFilter{Kind: kind, ID: id, Holders: holders})
	if err != nil {
		return ObjectRecord{}, err
	}
	if len(recs) != 1 {
		return ObjectRecord{}, ErrKeyNotExist
	}
	return recs[0], nil
}

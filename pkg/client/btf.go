package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

var _ io.Closer = (*BTF)(nil)

// BTF is a BTF object in the daemon (BTF_LOAD, as the kernel's
// BPF_BTF_LOAD): type information maps and programs are created with, so
// that their keys and values can be printed and parsed as types. Maps and
// programs made with it keep it alive; close it once they are made.
//
// A BTF is safe for concurrent use. It owns its descriptor.
type BTF struct {
	ref
	id uint32
}

// LoadBTF loads raw BTF (the kernel's format: what btf.Builder.Marshal
// writes, or an ELF object's .BTF section). It returns ErrInvalid for BTF
// the daemon cannot parse, ErrTooBig beyond 16 MiB, ErrNoMemory or
// ErrNoSpace when a quota is exhausted, ErrClosed if c is closed.
func (c *Conn) LoadBTF(raw []byte) (*BTF, error) {
	var ab [wire.BTFLoadAttrSize]byte
	attr := (&wire.BTFLoadAttr{}).Append(ab[:0])
	w := getWaiter()
	defer putWaiter(w)
	if err := c.do(w, nil, wire.CmdBTFLoad, attr, nil, raw); err != nil {
		return nil, err
	}
	defer w.closeFDs()
	if err := errnoErr(w.hdr.Errno); err != nil {
		return nil, err
	}
	r, o, err := c.newRef(w, w.takeFD(0), wire.ObjBTF)
	if err != nil {
		return nil, err
	}
	return &BTF{ref: r, id: o.ID}, nil
}

// NewBTF marshals types (and every type they refer to) into raw BTF with
// cilium/ebpf's btf.Builder and loads it; it returns the BTF and each
// type's id in it, in order. Errors as LoadBTF, and the Builder's.
func (c *Conn) NewBTF(types ...btf.Type) (*BTF, []btf.TypeID, error) {
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]btf.TypeID, len(types))
	for i, t := range types {
		if ids[i], err = b.Add(t); err != nil {
			return nil, nil, fmt.Errorf("bpfd: BTF of %v: %w", t, err)
		}
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("bpfd: marshalling BTF: %w", err)
	}
	bt, err := c.LoadBTF(raw)
	if err != nil {
		return nil, nil, err
	}
	return bt, ids, nil
}

// ID returns the BTF object's daemon-wide id.
func (b *BTF) ID() uint32 { return b.id }

// FD returns the BTF object's descriptor, owned by b.
func (b *BTF) FD() int { return b.fd }

// Close releases b's handle and descriptor; maps and programs made with
// it keep the BTF object.
func (b *BTF) Close() error { return b.ref.close() }

// specBTF fills a's BTF fields from spec: a given BTF object and type
// ids, or spec.Key/Value loaded as a new BTF object (closed by the
// returned function once the map holds it).
func (c *Conn) specBTF(spec *MapSpec, a *wire.MapCreateAttr) (func(), error) {
	none := func() {}
	switch {
	case spec.BTF != nil:
		if spec.Key != nil || spec.Value != nil {
			return none, invalid("bpfd: MapSpec: give BTF with type ids, or Key/Value types, not both")
		}
		a.BTFHandle, a.BTFKeyTypeID, a.BTFValueTypeID = spec.BTF.handle, uint32(spec.KeyTypeID), uint32(spec.ValueTypeID)
		return none, nil
	case spec.Value != nil:
		types := []btf.Type{spec.Value}
		if spec.Key != nil {
			types = append(types, spec.Key)
		}
		bt, ids, err := c.NewBTF(types...)
		if err != nil {
			return none, err
		}
		a.BTFHandle, a.BTFValueTypeID = bt.handle, uint32(ids[0])
		if spec.Key != nil {
			a.BTFKeyTypeID = uint32(ids[1])
		}
		return func() { bt.Close() }, nil
	case spec.Key != nil:
		return none, invalid("bpfd: MapSpec: a Key type needs a Value type too")
	}
	return none, nil
}

// errNoBTF is Types' error for a map created without type information.
var errNoBTF = fmt.Errorf("%w: the map has no BTF", ErrKeyNotExist)

// BTFSpec returns the raw BTF of the object behind r (a map, program or
// BTF object), parsed with cilium/ebpf, and its BTF id.
func (c *Conn) btfOf(r *ref) (*btf.Spec, uint32, error) {
	w, err := c.handleCmd(r, wire.CmdBTFGet, 0)
	if err != nil {
		if errors.Is(err, ErrKeyNotExist) {
			return nil, 0, errNoBTF
		}
		return nil, 0, err
	}
	defer putWaiter(w)
	defer w.closeFDs()
	data, err := w.payload()
	if err != nil {
		return nil, 0, err
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(data))
	if err != nil {
		return nil, 0, errors.Join(errProtocol, err)
	}
	return spec, uint32(w.hdr.Ret), nil
}

// Types returns the map's key and value types (key is nil if the map was
// created with a value type only). It returns an error matching
// ErrKeyNotExist if the map has no BTF, ErrClosed after Close.
func (m *Map) Types() (key, value btf.Type, err error) {
	info, err := m.Info()
	if err != nil {
		return nil, nil, err
	}
	if info.BTFID == 0 {
		return nil, nil, errNoBTF
	}
	spec, _, err := m.c.btfOf(&m.ref)
	if err != nil {
		return nil, nil, err
	}
	if info.BTFKeyTypeID != 0 {
		if key, err = spec.TypeByID(info.BTFKeyTypeID); err != nil {
			return nil, nil, errors.Join(errProtocol, err)
		}
	}
	if value, err = spec.TypeByID(info.BTFValueTypeID); err != nil {
		return nil, nil, errors.Join(errProtocol, err)
	}
	return key, value, nil
}

// collTypes is the BTF of a collection being loaded: one BTF object with
// every map's key and value type, and their ids. A nil *collTypes (or one
// whose BTF could not be made) gives no type information.
type collTypes struct {
	bt  *BTF
	ids map[btf.Type]btf.TypeID
}

// collectionBTF loads the key and value types of spec's maps as one BTF
// object; nil if the object has no BTF or it cannot be loaded (the
// collection then loads without type information).
func (c *Conn) collectionBTF(spec *ebpf.CollectionSpec) *collTypes {
	if spec.Types == nil {
		return nil
	}
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		return nil
	}
	ct := &collTypes{ids: map[btf.Type]btf.TypeID{}}
	for _, name := range sortedKeys(spec.Maps) {
		ms := spec.Maps[name]
		for _, t := range []btf.Type{ms.Key, ms.Value} {
			if t == nil {
				continue
			}
			if _, done := ct.ids[t]; done {
				continue
			}
			if id, err := b.Add(t); err == nil {
				ct.ids[t] = id
			}
		}
	}
	if len(ct.ids) == 0 {
		return nil
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		return nil
	}
	if ct.bt, err = c.LoadBTF(raw); err != nil {
		return nil
	}
	return ct
}

// forMap sets spec's BTF from the ELF map ms's key and value types, when
// their sizes are the map's (a data section's key has no type).
func (ct *collTypes) forMap(spec *MapSpec, ms *ebpf.MapSpec) {
	if ct == nil || ct.bt == nil || ms.Value == nil {
		return
	}
	vid, ok := ct.ids[ms.Value]
	if n, err := btf.Sizeof(ms.Value); !ok || err != nil || n != int(ms.ValueSize) {
		return
	}
	var kid btf.TypeID
	if ms.Key != nil {
		if id, ok := ct.ids[ms.Key]; ok {
			if n, err := btf.Sizeof(ms.Key); err == nil && n == int(ms.KeySize) {
				kid = id
			}
		}
	}
	spec.BTF, spec.KeyTypeID, spec.ValueTypeID = ct.bt, kid, vid
}

func (ct *collTypes) close() {
	if ct != nil && ct.bt != nil {
		ct.bt.Close()
	}
}

// btfObj is the collection's BTF object, nil if none.
func (ct *collTypes) btfObj() *BTF {
	if ct == nil {
		return nil
	}
	return ct.bt
}

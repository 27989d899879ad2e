package client

import (
	"encoding/binary"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// Maps of maps (ArrayOfMaps, HashOfMaps), as the kernel's:
//
//   - NewMap takes the inner-map template as MapSpec.InnerMap. Maps
//     stored later must match it as the kernel's map_meta_equal demands
//     (same type, key size, value size and flags; for arrays also
//     max_entries unless the template has FlagInnerMap), or Update
//     returns ErrInvalid.
//   - Update's value is the descriptor of a Map open on the same Conn (a
//     native-endian uint32, as a kernel fd); the Map must be readable and
//     writable (as far as its own FlagRdonly/FlagWronly allow), since
//     programs holding the outer map reach it: ErrPermission otherwise.
//   - Lookup returns the inner map's id (MapInfo.ID), never a descriptor.
//   - Programs' bpf_map_lookup_elem on the outer map returns the inner
//     map; replacing an entry is atomic for running programs.
//   - An entry lasts until it is deleted or replaced, the outer map dies,
//     or the descriptor it was stored with is revoked (or the inner map
//     destroyed): revoking a descriptor also takes back what was stored
//     with it. Batch updates and deletes are refused (ErrInvalid).

// errInnerFD reports a map-of-maps value that is not a map of this
// connection.
var errInnerFD = invalid("bpfd: a map-of-maps value must be the descriptor of a Map open on this connection")

// errInnerMap reports a map of maps created without an inner map.
var errInnerMap = invalid("bpfd: ArrayOfMaps and HashOfMaps need MapSpec.InnerMap, a Map open on this connection")

// innerMapAttr puts spec's inner-map template into a.
func (c *Conn) innerMapAttr(spec *MapSpec, a *wire.MapCreateAttr) error {
	if spec.Type != ArrayOfMaps && spec.Type != HashOfMaps {
		return nil
	}
	in := spec.InnerMap
	if in == nil || in.c != c {
		return errInnerMap
	}
	a.InnerMapHandle = in.handle
	return nil
}

// mapInMapValue turns a map-of-maps value (a map descriptor, as with the
// kernel) into the map's handle on c.
func (c *Conn) mapInMapValue(value []byte) ([]byte, error) {
	fd := int(int32(binary.NativeEndian.Uint32(value)))
	m := c.mapByFD(fd)
	if m == nil {
		return nil, errInnerFD
	}
	out := make([]byte, 4)
	binary.NativeEndian.PutUint32(out, m.handle)
	return out, nil
}

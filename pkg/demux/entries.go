package demux

import (
	"encoding/binary"
	"fmt"

	"github.com/bpfd-project/bpfd/pkg/maps"
)

// The encoding of a map's contents in PinnedObject.Entries and
// PinnedProgMap.Entries: the elements maps.Dump gives, in order, each
// its key (maps.DumpSizes key bytes) then its value — of the fixed size
// DumpSizes gives, or, for a type whose values have no fixed size (a
// ring buffer's records: DumpSizes value -1), a u32 little-endian length
// and that many bytes.

// appendEntry appends one element to b in the Entries encoding of spec.
func appendEntry(b []byte, spec maps.Spec, key, value []byte) []byte {
	b = append(b, key...)
	if _, vs := maps.DumpSizes(spec); vs < 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(value)))
	}
	return append(b, value...)
}

// EachEntry calls fn with every element of entries, encoded for maps of
// spec (see above), and returns fn's first error, or an error wrapping
// ErrInvalid when entries are not whole elements. key and value alias
// entries.
func EachEntry(spec maps.Spec, entries []byte, fn func(key, value []byte) error) error {
	ks, vs := maps.DumpSizes(spec)
	if ks < 0 || ks+vs == 0 && vs >= 0 {
		return fmt.Errorf("%w: %s maps have no contents to restore", ErrInvalid, maps.TypeName(spec.Type))
	}
	for off := 0; off < len(entries); {
		if len(entries)-off < ks {
			return fmt.Errorf("%w: entries are not whole key/value pairs", ErrInvalid)
		}
		key := entries[off : off+ks]
		off += ks
		n := vs
		if vs < 0 {
			if len(entries)-off < 4 {
				return fmt.Errorf("%w: entries are not whole key/value pairs", ErrInvalid)
			}
			n = int(binary.LittleEndian.Uint32(entries[off:]))
			off += 4
		}
		if n < 0 || len(entries)-off < n {
			return fmt.Errorf("%w: entries are not whole key/value pairs", ErrInvalid)
		}
		if err := fn(key, entries[off:off+n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// CountEntries returns how many elements entries holds for maps of spec,
// or an error wrapping ErrInvalid when entries are not whole elements.
func CountEntries(spec maps.Spec, entries []byte) (int, error) {
	n := 0
	err := EachEntry(spec, entries, func(_, _ []byte) error { n++; return nil })
	return n, err
}

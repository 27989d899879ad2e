package prog

import (
	"testing"

	"github.com/bpfd-project/bpfd/pkg/maps"
)

// auditMaps are the maps the audit harness's program references after its
// hash map (index 0): a queue (1) and a ring buffer (2), for the map
// helpers' rows below, and a perf event array (3).
func auditMaps(t *testing.T) []MapRef {
	t.Helper()
	var refs []MapRef
	for _, s := range []maps.Spec{
		{Type: maps.TypeQueue, ValueSize: 8, MaxEntries: 4},
		{Type: maps.TypeRingbuf, MaxEntries: 4096},
		{Type: maps.TypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1},
	} {
		m, err := maps.New(s)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		refs = append(refs, MapRef{Map: m, Read: true, Write: true})
	}
	return refs
}

func init() {
	queue := func(h *auditHarness, r *[5]uint64) { r[0] = h.queuePtr }
	ring := func(h *auditHarness, r *[5]uint64) { r[0] = h.ringPtr }
	for n, row := range map[int32]auditRow{
		HelperMapPushElem: {memory: "reads the value (r2, value_size bytes)",
			args:  []auditArg{{reg: 2}},
			setup: func(h *auditHarness, r *[5]uint64) { r[0], r[2] = h.queuePtr, 0 }},
		HelperMapPopElem: {memory: "writes the value (r2, value_size bytes)",
			args: []auditArg{{reg: 2, write: true}}, setup: queue},
		HelperMapPeekElem: {memory: "writes the value (r2, value_size bytes)",
			args: []auditArg{{reg: 2, write: true}}, setup: queue},
		HelperRingbufOutput: {memory: "reads the data (r2, r3 bytes)",
			args:  []auditArg{{reg: 2, size: 8, sizeReg: 3}},
			setup: func(h *auditHarness, r *[5]uint64) { r[0], r[3] = h.ringPtr, 0 }},
		HelperRingbufReserve: {memory: "none: returns a pointer into the ring's data",
			setup: func(h *auditHarness, r *[5]uint64) { r[0], r[1], r[2] = h.ringPtr, 8, 0 }},
		HelperRingbufSubmit:  {memory: "none: r1 must be a record pointer, which is not dereferenced"},
		HelperRingbufDiscard: {memory: "none: r1 must be a record pointer, which is not dereferenced"},
		HelperRingbufQuery:   {memory: "none", setup: ring},
		HelperPerfEventOutput: {memory: "reads the data (r4, r5 bytes); reads the run's packet (flags' ctx length)",
			args:  []auditArg{{reg: 4, size: 8, sizeReg: 5}},
			setup: func(h *auditHarness, r *[5]uint64) { r[1], r[2] = mapPtrTag|3, 0 }},
		HelperMapLookupPercpuElem: {memory: "reads the key (r2, key_size bytes)",
			args:  []auditArg{{reg: 2}},
			setup: func(h *auditHarness, r *[5]uint64) { r[0], r[2] = h.hashPtr, 0 }},
	} {
		helperAudit[n] = row
	}
}

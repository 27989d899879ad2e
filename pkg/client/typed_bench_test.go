package client

import (
	"encoding/binary"
	"testing"
)

// BenchmarkTypedValues measures Lookup and Update with typed keys and
// values against the []byte path (the baseline, in the same run), on
// round trips to a daemon in another process and on reads from the
// mapped storage: allocations per operation show what the typed path
// costs (a copy of the argument and a buffer) and that the []byte path,
// passed as an any, allocates nothing.
func BenchmarkTypedValues(b *testing.B) {
	c, err := Dial(startDaemonChild(b))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 16, MaxEntries: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	m.SetSharedMemoryReads(false)
	pc, err := c.NewMap(MapSpec{Type: PercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	key, value := make([]byte, 4), make([]byte, 16)
	binary.NativeEndian.PutUint32(key, 1)
	if err := m.Update(key, value, UpdateAny); err != nil {
		b.Fatal(err)
	}
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		b.Fatal(err)
	}
	defer ro.Close()
	var k uint32 = 1
	var v flatValue
	var pv paddedKeyValue
	percpu := make([]uint64, PossibleCPUs())
	for _, bc := range []struct {
		name string
		op   func() error
	}{
		{"Lookup/bytes", func() error { return m.Lookup(key, value) }},
		{"Lookup/pointers", func() error { return m.Lookup(&k, &v) }},
		{"Lookup/key-by-value", func() error { return m.Lookup(k, &v) }},
		{"Lookup/marshaler", func() error { return m.Lookup(marshalKey{0x01000000}, &pv) }},
		{"Update/bytes", func() error { return m.Update(key, value, UpdateAny) }},
		{"Update/pointers", func() error { return m.Update(&k, &v, UpdateAny) }},
		{"Update/values", func() error { return m.Update(k, v, UpdateAny) }},
		{"PerCPU/bytes", nil},
		{"PerCPU/slice", func() error { return pc.Lookup(k, percpu) }},
		{"Mapped/bytes", func() error { return ro.Lookup(key, value) }},
		{"Mapped/pointers", func() error { return ro.Lookup(&k, &v) }},
	} {
		if bc.name == "PerCPU/bytes" {
			buf := make([]byte, pc.ValueBufferSize())
			bc.op = func() error { return pc.Lookup(key, buf) }
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// paddedKeyValue is 16 bytes, like the benchmark map's values.
type paddedKeyValue struct {
	A, B uint64
}

package maps

import (
	"bytes"
	"testing"
)

// TestBloomRebuiltKeepsMembers: a bloom filter with a random seed rebuilt
// from its dump (as after a reboot) still holds every value added — its
// bits only mean something under the seed they were set with, so the
// dump carries it.
func TestBloomRebuiltKeepsMembers(t *testing.T) {
	spec := Spec{Type: TypeBloomFilter, ValueSize: 12, MaxEntries: 1000}
	m, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fillBloom(t, m)
	for try := 0; try < 3; try++ { // three fresh seeds
		m2, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		if err := Dump(m, func(k, v []byte) error { return RestoreElem(m2, k, v) }); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 40; i++ {
			if err := m2.(Pusher).Peek(0, bytes.Repeat([]byte{byte(i + 1)}, 12)); err != nil {
				t.Fatalf("value %d lost by the rebuilt filter: %v", i, err)
			}
		}
	}
}

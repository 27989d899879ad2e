package client

import (
	"errors"
	"testing"
)

// TestBloomFilterThroughDaemon: a bloom filter's lookup sends the value to
// test and gets only an answer back, as bpf(2).
func TestBloomFilterThroughDaemon(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m, err := c.NewMap(MapSpec{Type: BloomFilter, ValueSize: 8, MaxEntries: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := uint64(0); i < 50; i++ {
		if err := m.Update(nil, u64(i), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(0); i < 50; i++ {
		if err := m.Lookup(nil, u64(i)); err != nil {
			t.Fatalf("value %d added but absent: %v", i, err)
		}
	}
	absent := 0
	for i := uint64(1000); i < 1100; i++ {
		if err := m.Lookup(nil, u64(i)); errors.Is(err, ErrKeyNotExist) {
			absent++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if absent < 50 {
		t.Fatalf("only %d of 100 never-added values reported absent", absent)
	}
	if err := m.Update(nil, u64(1), UpdateNoExist); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update with BPF_NOEXIST: %v", err)
	}
}

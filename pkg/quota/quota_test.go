package quota

import (
	"errors"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCharge(t *testing.T) {
	cfg := &Config{
		Default: Limits{MaxBytes: 100, MaxObjects: 3},
		PerUID:  map[uint32]Limits{0: {MaxBytes: UnlimitedBytes, MaxObjects: UnlimitedObjects}, 7: {MaxObjects: 1}},
	}
	type op struct {
		uid     uint32
		bytes   uint64
		release bool
		want    unix.Errno
	}
	tests := []struct {
		name string
		ops  []op
		uid  uint32
		use  Usage
	}{
		{name: "fits", ops: []op{{uid: 1, bytes: 60}, {uid: 1, bytes: 40}}, uid: 1, use: Usage{100, 2}},
		{name: "single object too big", ops: []op{{uid: 1, bytes: 101, want: unix.E2BIG}}, uid: 1},
		{name: "bytes exhausted", ops: []op{{uid: 1, bytes: 60}, {uid: 1, bytes: 41, want: unix.ENOMEM}}, uid: 1, use: Usage{60, 1}},
		{name: "objects exhausted", ops: []op{{uid: 1}, {uid: 1}, {uid: 1}, {uid: 1, want: unix.ENOSPC}}, uid: 1, use: Usage{0, 3}},
		{name: "release frees room", ops: []op{{uid: 1, bytes: 90}, {uid: 1, bytes: 90, release: true}, {uid: 1, bytes: 100}}, uid: 1, use: Usage{100, 1}},
		{name: "uids independent", ops: []op{{uid: 1, bytes: 100}, {uid: 2, bytes: 100}}, uid: 2, use: Usage{100, 1}},
		{name: "root unlimited", ops: []op{{uid: 0, bytes: 1 << 40}, {uid: 0, bytes: 1 << 40}, {uid: 0}, {uid: 0}}, uid: 0, use: Usage{2 << 40, 4}},
		{name: "per-uid override keeps default bytes", ops: []op{{uid: 7, bytes: 100}, {uid: 7, want: unix.ENOSPC}}, uid: 7, use: Usage{100, 1}},
		{name: "over-release clamps", ops: []op{{uid: 1, bytes: 10}, {uid: 1, bytes: 50, release: true}, {uid: 1, bytes: 5, release: true}}, uid: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New(cfg)
			for i, o := range tc.ops {
				if o.release {
					q.Release(o.uid, o.bytes)
					continue
				}
				err := q.Charge(o.uid, o.bytes)
				if o.want == 0 && err != nil || o.want != 0 && !errors.Is(err, o.want) {
					t.Fatalf("op %d: Charge(%d, %d) = %v, want errno %v", i, o.uid, o.bytes, err, o.want)
				}
			}
			if got := q.Usage(tc.uid); got != tc.use {
				t.Fatalf("Usage(%d) = %+v, want %+v", tc.uid, got, tc.use)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	q := New(nil)
	if l := q.Limits(1000); l.MaxBytes != DefaultMaxBytes || l.MaxObjects != DefaultMaxObjects {
		t.Fatalf("Limits = %+v", l)
	}
	if err := q.Charge(1000, DefaultMaxBytes+1); !errors.Is(err, ErrTooBig) {
		t.Fatalf("Charge over default: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	q := New(&Config{Default: Limits{MaxBytes: 1000, MaxObjects: 1000}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if q.Charge(5, 3) == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ok != 333 || q.Usage(5) != (Usage{999, 333}) {
		t.Fatalf("ok=%d usage=%+v, want 333 charges of 3 bytes", ok, q.Usage(5))
	}
}

package mapview_test

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// FuzzPerfReader feeds a perf ring reader arbitrary mapped bytes (the
// data page, data_head and data_tail a hostile or broken producer could
// leave): it must neither crash nor loop, never return more than the
// record claims or the ring holds, and stop at data_head. Seeds include
// rings a real producer (maps.PerfEventArray) wrote, wrapped and lost
// records included.
func FuzzPerfReader(f *testing.F) {
	f.Add(uint64(0), uint64(0), []byte{})
	f.Add(uint64(24), uint64(0), []byte{9, 0, 0, 0, 0, 0, 24, 0, 12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0})
	f.Add(uint64(16), uint64(0), []byte{9, 0, 0, 0, 0, 0, 16, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint64(24), uint64(0), []byte{2, 0, 0, 0, 0, 0, 24, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7})
	f.Add(uint64(4100), uint64(4090), []byte{})
	f.Add(uint64(1<<40), uint64(3), []byte{0, 0, 0, 0, 0, 0, 8, 0})
	// Real rings: samples, a wrap, a lost record.
	for _, n := range []int{1, 3, 170, 200} {
		m, err := maps.New(maps.Spec{Type: maps.TypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			f.Fatal(err)
		}
		pa := m.(*maps.PerfEventArray)
		r, err := pa.AttachRing(0, maps.PerfOptions{CPU: 0, Pages: 1}, nil, nil)
		if err != nil {
			f.Fatal(err)
		}
		memfd, wake, _ := r.FDs()
		mem, err := unix.Mmap(memfd, 0, int(r.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			f.Fatal(err)
		}
		rd, _ := mapview.NewPerfReader(mem)
		for i := 0; i < n; i++ {
			pa.Output(0, 0, []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, nil)
			if i == n/2 && n > 100 {
				for j := 0; j < 60; j++ { // make room: the ring wraps
					rd.Next(nil)
				}
			}
		}
		le := binary.LittleEndian
		f.Add(le.Uint64(mem[mapview.PerfOffDataHead:]), le.Uint64(mem[mapview.PerfOffDataTail:]), append([]byte(nil), mem[mapview.PageSize:]...))
		unix.Munmap(mem)
		unix.Close(memfd)
		unix.Close(wake)
		m.Close()
	}
	mem, err := unix.Mmap(-1, 0, 2*mapview.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { unix.Munmap(mem) })
	f.Fuzz(func(t *testing.T, head, tail uint64, data []byte) {
		clear(mem)
		le := binary.LittleEndian
		le.PutUint64(mem[mapview.PerfOffDataOffset:], mapview.PageSize)
		le.PutUint64(mem[mapview.PerfOffDataSize:], mapview.PageSize)
		le.PutUint64(mem[mapview.PerfOffDataHead:], head)
		le.PutUint64(mem[mapview.PerfOffDataTail:], tail)
		copy(mem[mapview.PageSize:], data)
		rd, err := mapview.NewPerfReader(mem)
		if err != nil {
			t.Fatal(err)
		}
		var buf []byte
		// Each record is at least 8 bytes: a page holds at most 512.
		for i := 0; ; i++ {
			if i > mapview.PageSize/mapview.PerfHeaderSize {
				t.Fatal("the reader loops")
			}
			out, rec, ok, err := rd.Next(buf)
			if err != nil || !ok {
				if rd.Pending() != 0 && err == nil {
					t.Fatalf("stopped with %d bytes pending", rd.Pending())
				}
				break
			}
			if len(out) > mapview.PageSize || rec.Type == mapview.PerfRecordSample && len(out) > rd.Size() {
				t.Fatalf("sample of %d bytes from a %d-byte ring", len(out), rd.Size())
			}
			buf = out
		}
		if got := le.Uint64(mem[mapview.PerfOffDataTail:]); got != head {
			t.Fatalf("data_tail %d after reading, want data_head %d", got, head)
		}
	})
}

// TestPerfReaderGeometry: a mapping that is not a perf ring is refused.
func TestPerfReaderGeometry(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, 4*mapview.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	le := binary.LittleEndian
	tests := []struct {
		name       string
		mem        []byte
		off, size  uint64
		wantRefuse bool
	}{
		{name: "one data page", mem: mem[:2*mapview.PageSize], off: mapview.PageSize, size: mapview.PageSize},
		{name: "three data pages", mem: mem[:4*mapview.PageSize], off: mapview.PageSize, size: 3 * mapview.PageSize, wantRefuse: true},
		{name: "no data page", mem: mem[:mapview.PageSize], off: mapview.PageSize, size: 0, wantRefuse: true},
		{name: "wrong data_offset", mem: mem[:2*mapview.PageSize], off: 0, size: mapview.PageSize, wantRefuse: true},
		{name: "wrong data_size", mem: mem[:2*mapview.PageSize], off: mapview.PageSize, size: 2 * mapview.PageSize, wantRefuse: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			le.PutUint64(mem[mapview.PerfOffDataOffset:], tc.off)
			le.PutUint64(mem[mapview.PerfOffDataSize:], tc.size)
			_, err := mapview.NewPerfReader(tc.mem)
			if (err != nil) != tc.wantRefuse {
				t.Fatalf("NewPerfReader: %v, refuse %v", err, tc.wantRefuse)
			}
		})
	}
}

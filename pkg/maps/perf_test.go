package maps

import (
	"bytes"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

var perf4 = Spec{Type: TypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}

var perfCases = []tableCase{
	{name: "create perf event array", spec: perf4},
	{name: "create perf event array preserve elems", spec: withFlags(perf4, FlagPreserveElems)},
	{name: "create perf event array key 8", spec: Spec{Type: TypePerfEventArray, KeySize: 8, ValueSize: 4, MaxEntries: 4}, createErr: unix.EINVAL},
	{name: "create perf event array value 8", spec: Spec{Type: TypePerfEventArray, KeySize: 4, ValueSize: 8, MaxEntries: 4}, createErr: unix.EINVAL},
	{name: "create perf event array zero entries", spec: Spec{Type: TypePerfEventArray, KeySize: 4, ValueSize: 4}, createErr: unix.EINVAL},
	{name: "create perf event array mmapable", spec: withFlags(perf4, FlagMmapable), createErr: unix.EINVAL},
	{name: "create perf event array no prealloc", spec: withFlags(perf4, FlagNoPrealloc), createErr: unix.EINVAL},
	{name: "create perf event array rdonly", spec: withFlags(perf4, FlagRdonly)},
	{name: "perf event array syscall side", spec: perf4, steps: []step{
		{op: opLookup, key: k32(0), want: ENOTSUPP},
		{op: opLookup, key: k32(9), want: ENOTSUPP},
		// The value is a perf event fd: fd 1 is none (EBADF), as no
		// number a bpfd client could send is.
		{op: opUpdate, key: k32(0), val: k32(1), want: unix.EBADF},
		{op: opUpdate, key: k32(4), val: k32(1), want: unix.E2BIG},
		{op: opUpdate, key: k32(0), val: k32(1), flags: UpdateNoExist, want: unix.EINVAL},
		{op: opUpdate, key: k32(0), val: k32(1), flags: UpdateExist, want: unix.EINVAL},
		{op: opDelete, key: k32(0), want: unix.ENOENT},
		{op: opDelete, key: k32(4), want: unix.E2BIG},
		{op: opNext, val: k32(0)},
		{op: opNext, key: k32(2), val: k32(3)},
		{op: opNext, key: k32(3), want: unix.ENOENT},
		{op: opNext, key: k32(7), val: k32(0)},
		{op: opLookupAndDelete, key: k32(0), want: ENOTSUPP},
		{op: opFreeze},
		{op: opDelete, key: k32(0), want: unix.EPERM},
		{op: opUpdate, key: k32(0), val: k32(1), want: unix.EPERM},
	}},
	{name: "perf event array rdonly", spec: withFlags(perf4, FlagRdonly), steps: []step{
		{op: opUpdate, key: k32(0), val: k32(1), want: unix.EPERM},
		{op: opDelete, key: k32(0), want: unix.EPERM},
		{op: opLookup, key: k32(0), want: ENOTSUPP},
	}},
}

func init() { tableCases = append(tableCases, perfCases...) }

func newPerf(t *testing.T, s Spec) *PerfEventArray {
	t.Helper()
	m, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m.(*PerfEventArray)
}

// perfReader maps r's memory as a consumer would.
func perfReader(t *testing.T, r *PerfRing) (*mapview.PerfReader, int) {
	t.Helper()
	memfd, wake, err := r.FDs()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(memfd, 0, int(r.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(memfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem); unix.Close(wake) })
	rd, err := mapview.NewPerfReader(mem)
	if err != nil {
		t.Fatal(err)
	}
	return rd, wake
}

func TestPerfOutput(t *testing.T) {
	p := newPerf(t, perf4)
	r, err := p.AttachRing(1, PerfOptions{CPU: 0, Pages: 1, WakeupEvents: 1}, "owner", nil)
	if err != nil {
		t.Fatal(err)
	}
	rd, wake := perfReader(t, r)
	var id [4]byte
	if err := p.ProgArray.dump(make([]byte, 8), func(k, v []byte) error {
		if index(k) == 1 {
			copy(id[:], v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := ne.Uint32(id[:]); got != r.ID() {
		t.Fatalf("slot 1 holds id %d, want the ring's %d", got, r.ID())
	}
	tests := []struct {
		name        string
		cpu         int
		flags       uint64
		sample, ctx []byte
		want        error
	}{
		{name: "index 1", cpu: 0, flags: 1, sample: []byte("hello"), ctx: []byte("+pkt")},
		{name: "empty sample", cpu: 0, flags: 1},
		{name: "current cpu on slot 0 (empty)", cpu: 0, flags: PerfCurrentCPU, sample: []byte("x"), want: ErrKeyNotExist},
		{name: "current cpu 1 (ring bound to cpu 0)", cpu: 1, flags: PerfCurrentCPU, sample: []byte("x"), want: ErrPerfWrongCPU},
		{name: "index beyond max_entries", cpu: 0, flags: 4, sample: []byte("x"), want: ErrIndexRange},
		{name: "unknown flag bit", cpu: 0, flags: 1 | 1<<60, sample: []byte("x"), want: ErrInvalidFlags},
		{name: "ctx length bits allowed", cpu: 0, flags: 1 | 3<<32, sample: []byte("abc"), ctx: []byte("def")},
	}
	want := [][]byte{}
	for _, tc := range tests {
		err := p.Output(tc.cpu, tc.flags, tc.sample, tc.ctx)
		if err != tc.want {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err == nil {
			want = append(want, append(append([]byte{}, tc.sample...), tc.ctx...))
		}
	}
	var b [8]byte
	if n, err := unix.Read(wake, b[:]); n != 8 || err != nil {
		t.Fatalf("eventfd not signalled: %d %v", n, err)
	}
	var buf []byte
	for i, w := range want {
		out, rec, ok, err := rd.Next(buf)
		if err != nil || !ok || rec.Type != mapview.PerfRecordSample {
			t.Fatalf("record %d: %v %v %+v", i, ok, err, rec)
		}
		// Raw data is padded so that the record is 8-byte aligned.
		if len(out) < len(w) || !bytes.Equal(out[:len(w)], w) || (len(out)+4)%8 != 0 {
			t.Fatalf("record %d: %q, want %q padded", i, out, w)
		}
		buf = out
	}
	if _, _, ok, err := rd.Next(buf); ok || err != nil {
		t.Fatalf("extra record: %v %v", ok, err)
	}
}

func TestPerfLost(t *testing.T) {
	p := newPerf(t, perf4)
	r, err := p.AttachRing(0, PerfOptions{CPU: 0, Pages: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rd, _ := perfReader(t, r)
	sample := make([]byte, 1000)
	n := 0
	for ; ; n++ {
		sample[0] = byte(n)
		if err := p.Output(0, 0, sample, nil); err != nil {
			if err != ErrPerfNoRoom {
				t.Fatal(err)
			}
			break
		}
	}
	p.Output(0, 0, sample, nil) // a second loss
	if r.Lost() != 2 {
		t.Fatalf("lost %d, want 2", r.Lost())
	}
	var buf []byte
	for i := 0; i < n; i++ {
		out, rec, ok, err := rd.Next(buf)
		if !ok || err != nil || rec.Type != mapview.PerfRecordSample || out[0] != byte(i) {
			t.Fatalf("record %d: %v %v %+v", i, ok, err, rec)
		}
	}
	// Room again: the next sample comes after a LOST record.
	sample[0] = 0xee
	if err := p.Output(0, 0, sample, nil); err != nil {
		t.Fatal(err)
	}
	_, rec, ok, err := rd.Next(buf)
	if !ok || err != nil || rec.Type != mapview.PerfRecordLost || rec.Lost != 2 {
		t.Fatalf("want a LOST record of 2: %v %v %+v", ok, err, rec)
	}
	out, rec, ok, err := rd.Next(buf)
	if !ok || err != nil || rec.Type != mapview.PerfRecordSample || out[0] != 0xee {
		t.Fatalf("want the sample after the loss: %v %v %+v", ok, err, rec)
	}
	if r.Lost() != 0 {
		t.Fatalf("lost %d after the LOST record", r.Lost())
	}
}

func TestPerfWakeupWatermark(t *testing.T) {
	p := newPerf(t, perf4)
	r, err := p.AttachRing(0, PerfOptions{CPU: 0, Pages: 1, Watermark: 100}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, wake := perfReader(t, r)
	var b [8]byte
	p.Output(0, 0, make([]byte, 40), nil)
	if _, err := unix.Read(wake, b[:]); err != unix.EAGAIN {
		t.Fatalf("woken below the watermark: %v", err)
	}
	p.Output(0, 0, make([]byte, 80), nil)
	if _, err := unix.Read(wake, b[:]); err != nil {
		t.Fatalf("not woken past the watermark: %v", err)
	}
}

func TestPerfAttachDetach(t *testing.T) {
	p := newPerf(t, perf4)
	tests := []struct {
		name  string
		index uint32
		opt   PerfOptions
		want  error
	}{
		{name: "ok", index: 0, opt: PerfOptions{CPU: 0, Pages: 2}},
		{name: "index out of range", index: 4, opt: PerfOptions{CPU: 0, Pages: 2}, want: ErrIndexRange},
		{name: "cpu out of range", index: 0, opt: PerfOptions{CPU: 1 << 20, Pages: 2}, want: ErrInvalid},
		{name: "pages not a power of two", index: 0, opt: PerfOptions{CPU: 0, Pages: 3}, want: ErrInvalid},
		{name: "zero pages", index: 0, opt: PerfOptions{CPU: 0}, want: ErrInvalid},
		{name: "both wakeup rules", index: 0, opt: PerfOptions{CPU: 0, Pages: 1, WakeupEvents: 1, Watermark: 1}, want: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.AttachRing(tc.index, tc.opt, nil, nil)
			if err != tc.want {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	freed := 0
	r, err := p.AttachRing(2, PerfOptions{CPU: 0, Pages: 1}, "a", func() { freed++ })
	if err != nil {
		t.Fatal(err)
	}
	if err := p.DetachRing(2, r.ID()+1000); err != ErrKeyNotExist {
		t.Fatalf("detach of another ring: %v", err)
	}
	if n := p.DetachIf(func(o any) bool { return o == "b" }); n != 0 {
		t.Fatalf("DetachIf freed %d", n)
	}
	if n := p.DetachIf(func(o any) bool { return o == "a" }); n != 1 || freed != 1 {
		t.Fatalf("DetachIf freed %d (onFree %d)", n, freed)
	}
	if err := p.Output(0, 2, []byte("x"), nil); err != ErrKeyNotExist {
		t.Fatalf("output to a detached slot: %v", err)
	}
	if err := p.Delete(k32(0)); err != nil {
		t.Fatalf("delete of slot 0: %v", err)
	}
	if err := p.Delete(k32(0)); err != ErrKeyNotExist {
		t.Fatalf("second delete: %v", err)
	}
}

// TestPerfConcurrentDetach runs producers while slots are attached and
// detached: no producer writes a freed ring (the race detector and the
// unmapped memory would say so).
func TestPerfConcurrentDetach(t *testing.T) {
	p := newPerf(t, perf4)
	ncpu := min(2, p.Pool().N())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for cpu := 0; cpu < ncpu; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				p.Output(cpu, uint64(cpu), []byte("sample"), nil)
			}
		}()
	}
	for i := 0; i < 200; i++ {
		r, err := p.AttachRing(uint32(i%ncpu), PerfOptions{CPU: i % ncpu, Pages: 1}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := p.DetachRing(uint32(i%ncpu), r.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
}

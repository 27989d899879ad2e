package maps

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

var ring8k = Spec{Type: TypeRingbuf, MaxEntries: 8192}

var ringCases = []tableCase{
	{name: "create ringbuf", spec: ring8k},
	{name: "create ringbuf one page", spec: Spec{Type: TypeRingbuf, MaxEntries: 4096}},
	{name: "create ringbuf not a power of two", spec: Spec{Type: TypeRingbuf, MaxEntries: 12288}, createErr: unix.EINVAL},
	{name: "create ringbuf not page aligned", spec: Spec{Type: TypeRingbuf, MaxEntries: 2048}, createErr: unix.EINVAL},
	{name: "create ringbuf zero", spec: Spec{Type: TypeRingbuf}, createErr: unix.EINVAL},
	{name: "create ringbuf key", spec: Spec{Type: TypeRingbuf, KeySize: 4, MaxEntries: 4096}, createErr: unix.EINVAL},
	{name: "create ringbuf value", spec: Spec{Type: TypeRingbuf, ValueSize: 4, MaxEntries: 4096}, createErr: unix.EINVAL},
	{name: "create ringbuf rdonly", spec: withFlags(ring8k, FlagRdonly), createErr: unix.EINVAL},
	{name: "create ringbuf numa", spec: withFlags(ring8k, FlagNumaNode)},
	{name: "ringbuf has no elements", spec: ring8k, steps: []step{
		{op: opLookup, want: ENOTSUPP},
		{op: opUpdate, want: ENOTSUPP},
		{op: opDelete, want: ENOTSUPP},
		{op: opNext, want: ENOTSUPP},
		{op: opLookupAndDelete, want: ENOTSUPP},
		{op: opFreeze},
	}},
}

func init() { tableCases = append(tableCases, ringCases...) }

// ringReader reads r's records as a consumer would.
func ringReader(t *testing.T, r *Ringbuf) *mapview.RingReader {
	t.Helper()
	rd, err := mapview.NewRingReader(r.Data(), r.mem[mapview.OffRingProducer:], r.cons, true)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

func drain(t *testing.T, rd *mapview.RingReader) []string {
	t.Helper()
	var out []string
	for {
		rec, next, ok, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(rec))
		rd.Advance(next)
	}
}

// TestRingbufRecords: output, reserve/submit, reserve/discard, the order
// a consumer sees them in, wrapping, a full ring, query.
func TestRingbufRecords(t *testing.T) {
	r := mustNew(t, Spec{Type: TypeRingbuf, MaxEntries: 4096}).(*Ringbuf)
	rd := ringReader(t, r)
	if err := r.Output([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	off, ok := r.Reserve(3)
	if !ok {
		t.Fatal("reserve failed")
	}
	copy(r.Data()[off:], "abc")
	// Not committed yet: the consumer sees "hello" only.
	if got := drain(t, rd); fmt.Sprint(got) != "[hello]" {
		t.Fatalf("before commit: %q", got)
	}
	d, _ := r.Reserve(4)
	r.Commit(d, 0, true) // discarded
	r.Commit(off, 0, false)
	if got := drain(t, rd); fmt.Sprint(got) != "[abc]" {
		t.Fatalf("after commit: %q", got)
	}
	if q := r.Query(RingRingSize); q != 4096 {
		t.Fatalf("ring size %d", q)
	}
	if a := r.Query(RingAvailData); a != 0 {
		t.Fatalf("available %d after draining", a)
	}
	// Fill: records of 1000 bytes (1008 with the header) fit 4 at a time
	// (never more than size-1 bytes ahead of the consumer).
	big := bytes.Repeat([]byte{7}, 1000)
	n := 0
	for ; r.Output(big, 0) == nil; n++ {
	}
	if n != 4 {
		t.Fatalf("%d records of 1000 bytes fit, want 4", n)
	}
	if err := r.Output(big, 0); !errors.Is(err, ErrRingFull) || !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("output to a full ring: %v", err)
	}
	if r.Query(RingAvailData) != 4*1008 || r.Query(RingProdPos)-r.Query(RingConsPos) != 4*1008 {
		t.Fatalf("query: avail %d prod %d cons %d", r.Query(RingAvailData), r.Query(RingProdPos), r.Query(RingConsPos))
	}
	got := drain(t, rd)
	if len(got) != 4 || got[3] != string(big) {
		t.Fatalf("drained %d records", len(got))
	}
	// Records wrap around the end and stay contiguous.
	for i := 0; i < 20; i++ {
		rec := bytes.Repeat([]byte{byte(i)}, 700+i)
		if err := r.Output(rec, 0); err != nil {
			t.Fatal(err)
		}
		if g := drain(t, rd); len(g) != 1 || g[0] != string(rec) {
			t.Fatalf("record %d across the wrap: %d records", i, len(g))
		}
	}
	if _, ok := r.Reserve(4096); ok {
		t.Fatal("a record as large as the ring was reserved")
	}
	if err := r.Output(nil, 1<<5); !errors.Is(err, ErrInvalidFlags) {
		t.Fatalf("bad flags: %v", err)
	}
}

// TestRingbufWakeup checks the kernel's wakeup rules: a committed record
// the consumer waits for signals the eventfd, unless BPF_RB_NO_WAKEUP;
// FORCE always does; a record behind unconsumed ones does not.
func TestRingbufWakeup(t *testing.T) {
	r := mustNew(t, ring8k).(*Ringbuf)
	efd, err := r.WakeupFD()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	woken := func() bool {
		var b [8]byte
		_, err := unix.Read(efd, b[:])
		return err == nil
	}
	rd := ringReader(t, r)
	r.Output([]byte("a"), 0)
	if !woken() {
		t.Fatal("first record did not wake the consumer")
	}
	r.Output([]byte("b"), 0)
	if woken() {
		t.Fatal("a record behind an unconsumed one woke the consumer")
	}
	r.Output([]byte("c"), RingForceWakeup)
	if !woken() {
		t.Fatal("BPF_RB_FORCE_WAKEUP did not wake")
	}
	drain(t, rd)
	r.Output([]byte("d"), RingNoWakeup)
	if woken() {
		t.Fatal("BPF_RB_NO_WAKEUP woke")
	}
}

// TestRingbufConcurrentProducers: producers on every CPU slot, one
// consumer: every record arrives whole, each producer's in order.
func TestRingbufConcurrentProducers(t *testing.T) {
	r := mustNew(t, Spec{Type: TypeRingbuf, MaxEntries: 1 << 16}).(*Ringbuf)
	rd := ringReader(t, r)
	const per = 2000
	var wg sync.WaitGroup
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; {
				rec := []byte(fmt.Sprintf("p%d-%06d", p, i))
				if r.Output(rec, RingNoWakeup) == nil {
					i++
				}
			}
		}()
	}
	next := map[byte]int{}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	total := 0
	for total < 3*per {
		rec, after, ok, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		var p byte
		var i int
		if _, err := fmt.Sscanf(string(rec), "p%c-%06d", &p, &i); err != nil {
			t.Fatalf("torn record %q", rec)
		}
		if i != next[p] {
			t.Fatalf("producer %c: record %d after %d", p, i, next[p]-1)
		}
		next[p]++
		total++
		rd.Advance(after)
	}
	<-done
}

// TestRingbufRetire: a move gives the ring a fresh consumer page and
// eventfd (revoked consumers can neither consume nor be woken), keeps the
// position and the records.
func TestRingbufRetire(t *testing.T) {
	r := mustNew(t, ring8k).(*Ringbuf)
	r.Output([]byte("one"), 0)
	oldCons, err := r.ConsumerFD(true)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(oldCons)
	if err := r.Retire(); err != nil {
		t.Fatal(err)
	}
	old, err := unix.Mmap(oldCons, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(old)
	ne.PutUint64(old, 1<<40) // a revoked consumer scribbles its old page
	rd := ringReader(t, r)
	if got := drain(t, rd); fmt.Sprint(got) != "[one]" {
		t.Fatalf("after the move: %q", got)
	}
	if err := r.Output([]byte("two"), 0); err != nil {
		t.Fatalf("the old consumer page still reaches the ring: %v", err)
	}
}

// TestRingCrashReopen reopens a copy of a ring's region file taken while
// it was live (as after kill -9): the record a dead producer held
// reserved is discarded (or the consumer would wait forever), records
// the consumer had read before a producer last saw its position are not
// delivered again, the rest are, in order, and the reopened ring takes
// new records after them. A damaged chain of records resumes empty.
func TestRingCrashReopen(t *testing.T) {
	r, err := NewWith(Spec{Type: TypeRingbuf, MaxEntries: 4096}, &Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rb := r.(*Ringbuf)
	for i := 1; i <= 4; i++ {
		if err := rb.Output(bytes.Repeat([]byte{byte(i)}, i), 0); err != nil {
			t.Fatal(err)
		}
	}
	ne.PutUint64(rb.cons, recordLen(1)) // the consumer read record 1
	if _, ok := rb.Reserve(16); !ok {   // a producer that will die; it sees the consumer
		t.Fatal("Reserve failed")
	}
	img, err := os.ReadFile(RegionPath(r))
	if err != nil {
		t.Fatal(err)
	}
	reopen := func(t *testing.T, img []byte) (*Ringbuf, Repair) {
		cp := filepath.Join(t.TempDir(), "copy")
		if err := os.WriteFile(cp, img, 0o600); err != nil {
			t.Fatal(err)
		}
		m, rep, err := OpenFile(cp, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m.(*Ringbuf), rep
	}
	records := func(t *testing.T, m Map) []string {
		var got []string
		if err := Dump(m, func(_, v []byte) error { got = append(got, fmt.Sprintf("%x", v)); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	m, rep := reopen(t, img)
	if rep != (Repair{Leaked: 1}) {
		t.Fatalf("repairs %+v, want the busy record discarded", rep)
	}
	if err := m.Output([]byte{5, 5, 5, 5, 5}, 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"0202", "030303", "04040404", "0505050505"}
	if got := records(t, m); !slicesEqual(got, want) {
		t.Fatalf("records after reopening %v, want %v", got, want)
	}
	if got := m.Query(RingConsPos); got != recordLen(1) {
		t.Fatalf("consumer position %d, want %d", got, recordLen(1))
	}

	// Damage the length of record 3: the chain no longer ends at the
	// producer position.
	bad := append([]byte(nil), img...)
	ne.PutUint32(bad[rb.l.DataOff+recordLen(1)+recordLen(2):], 3000)
	m, rep = reopen(t, bad)
	if rep.Rebuilt != 1 || len(records(t, m)) != 0 {
		t.Fatalf("damaged chain: repairs %+v, records %v; want an empty ring", rep, records(t, m))
	}
	if m.Query(RingConsPos) != m.Query(RingProdPos) {
		t.Fatal("consumer not at the producer position")
	}
}

package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/mapview"
)

// sentCount returns how many requests c sent so far.
func sentCount(c *Conn) uint64 {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.sent
}

func fillValue(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// TestSharedReads checks the transparent path: through a read-only
// descriptor, Lookup and NextKey answer from the mapped storage (one
// MAP_STORAGE request, then no round trips), with the same answers as the
// daemon, for every mappable map type.
func TestSharedReads(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	specs := []MapSpec{
		{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64},
		{Type: Hash, KeySize: 12, ValueSize: 64, MaxEntries: 8},
		{Type: Array, KeySize: 4, ValueSize: 20, MaxEntries: 16},
		{Type: PercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 8},
		{Type: PercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 64},
		{Type: LRUPercpuHash, KeySize: 8, ValueSize: 4, MaxEntries: 16, Flags: FlagNoCommonLRU},
	}
	for _, spec := range specs {
		t.Run(spec.Type.String(), func(t *testing.T) {
			m, err := c.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			vs := m.ValueBufferSize()
			key := func(i uint32) []byte {
				k := make([]byte, spec.KeySize)
				binary.LittleEndian.PutUint32(k, i)
				return k
			}
			for i := uint32(0); i < spec.MaxEntries; i += 2 {
				if err := m.Update(key(i), fillValue(vs, byte(i+1)), UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			ro, err := m.Reopen(ModeRead)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			// Reference answers from the daemon.
			daemon, err := m.Reopen(ModeRead)
			if err != nil {
				t.Fatal(err)
			}
			defer daemon.Close()
			daemon.SetSharedMemoryReads(false)

			v, w := make([]byte, vs), make([]byte, vs)
			ro.Lookup(key(0), v) // sets the mapping up
			before := sentCount(c)
			for i := uint32(0); i < spec.MaxEntries+3; i++ {
				e1, e2 := ro.Lookup(key(i), v), daemon.Lookup(key(i), w)
				if (e1 == nil) != (e2 == nil) || e1 == nil && !bytes.Equal(v, w) {
					t.Fatalf("key %d: mapped %x %v, daemon %x %v", i, v, e1, w, e2)
				}
				if e1 != nil && !errors.Is(e1, ErrKeyNotExist) {
					t.Fatalf("key %d: %v", i, e1)
				}
			}
			var k1, k2 []byte
			n1, n2 := make([]byte, spec.KeySize), make([]byte, spec.KeySize)
			for i := 0; ; i++ {
				e1, e2 := ro.NextKey(k1, n1), daemon.NextKey(k2, n2)
				if (e1 == nil) != (e2 == nil) || e1 == nil && !bytes.Equal(n1, n2) {
					t.Fatalf("next %d: mapped %x %v, daemon %x %v", i, n1, e1, n2, e2)
				}
				if e1 != nil {
					break
				}
				k1, k2 = bytes.Clone(n1), bytes.Clone(n2)
			}
			// Only the reference's requests went to the daemon.
			got := sentCount(c) - before
			refRequests := uint64(spec.MaxEntries+3) + uint64(countKeys(t, daemon))
			if got != refRequests {
				t.Fatalf("%d requests during mapped reads, want %d (the reference's only)", got, refRequests)
			}
			// Updates are visible at once.
			if err := m.Update(key(1), fillValue(vs, 0x77), UpdateAny); err != nil {
				t.Fatal(err)
			}
			if err := ro.Lookup(key(1), v); err != nil || !bytes.Equal(v, fillValue(vs, 0x77)) {
				t.Fatalf("after update: %x, %v", v, err)
			}
			// Turned off, every read is a round trip.
			ro.SetSharedMemoryReads(false)
			before = sentCount(c)
			ro.Lookup(key(1), v)
			if sentCount(c) != before+1 {
				t.Fatal("a lookup with shared reads off did not go to the daemon")
			}
			ro.SetSharedMemoryReads(true)
			ro.Lookup(key(1), v)
			before = sentCount(c)
			ro.Lookup(key(1), v)
			if sentCount(c) != before {
				t.Fatal("shared reads did not come back on")
			}
		})
	}
}

func countKeys(t *testing.T, m *Map) int {
	t.Helper()
	n := 0
	var k []byte
	next := make([]byte, m.KeySize())
	for m.NextKey(k, next) == nil {
		n++
		k = bytes.Clone(next)
	}
	return n + 1 // the failing call counts too
}

// TestMmapModes checks who may map what, as the kernel's mmap of a map.
func TestMmapModes(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	mk := func(spec MapSpec) *Map {
		m, err := c.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	plain := mk(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	mmapable := mk(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagMmapable})
	rdonlyProg := mk(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagMmapable | FlagRdonlyProg})
	frozen := mk(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: FlagMmapable})
	if err := frozen.Freeze(); err != nil {
		t.Fatal(err)
	}
	hash := mk(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	reopen := func(m *Map, mode Mode) *Map {
		r, err := m.Reopen(mode)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	tests := []struct {
		name     string
		m        *Map
		writable bool
		want     error
	}{
		{name: "array read-only", m: plain},
		{name: "hash read-only", m: hash},
		{name: "read descriptor", m: reopen(hash, ModeRead)},
		{name: "write-only descriptor maps nothing", m: reopen(hash, ModeWrite), want: ErrPermission},
		{name: "write-only descriptor, writable", m: reopen(mmapable, ModeWrite), writable: true, want: ErrPermission},
		{name: "mmapable writable", m: mmapable, writable: true},
		{name: "mmapable writable through read-only", m: reopen(mmapable, ModeRead), writable: true, want: ErrPermission},
		{name: "plain array writable", m: plain, writable: true, want: ErrNotSupported},
		{name: "hash writable", m: hash, writable: true, want: ErrNotSupported},
		{name: "rdonly_prog writable", m: rdonlyProg, writable: true, want: ErrAccess},
		{name: "rdonly_prog read-only", m: rdonlyProg},
		{name: "frozen writable", m: frozen, writable: true, want: ErrPermission},
		{name: "frozen read-only", m: frozen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mm, err := tc.m.Mmap(&MmapOptions{Writable: tc.writable})
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Mmap: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer mm.Close()
			if mm.Writable() != tc.writable {
				t.Fatalf("Writable() = %v", mm.Writable())
			}
			if !mm.Live() {
				t.Fatal("fresh mapping not live")
			}
			b := mm.Bytes()
			// A read-only mapping can never be made writable.
			if err := unix.Mprotect(b[:4096], unix.PROT_READ|unix.PROT_WRITE); err == nil && !tc.writable {
				t.Fatal("mprotect made a read-only mapping writable")
			}
			if tc.writable {
				vals := mm.Values()
				if err := unix.Mprotect(vals[:len(vals)&^4095], unix.PROT_READ|unix.PROT_WRITE); len(vals) >= 4096 && err != nil {
					t.Fatalf("values not writable: %v", err)
				}
			}
		})
	}
}

// TestMmapableWritable writes an MMAPABLE array through a writable
// mapping, as libbpf does for global data, and checks the daemon sees it;
// then Freeze cuts the writable mapping off (it keeps writing into a
// retired snapshot) and the frozen contents are what was written before.
func TestMmapableWritable(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m, err := c.NewMap(MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1024, Flags: FlagMmapable})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mm, err := m.Mmap(&MmapOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mm.Close()
	vals := mm.Values()
	if len(vals) != 8*1024 || mm.Stride() != 8 {
		t.Fatalf("values %d bytes, stride %d", len(vals), mm.Stride())
	}
	binary.LittleEndian.PutUint64(vals[8*5:], 0xfeed)
	v := make([]byte, 8)
	m.SetSharedMemoryReads(false)
	if err := m.Lookup(u32(5), v); err != nil || binary.LittleEndian.Uint64(v) != 0xfeed {
		t.Fatalf("daemon sees %x, %v", v, err)
	}
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if mm.Live() {
		t.Fatal("writable mapping still live after Freeze")
	}
	binary.LittleEndian.PutUint64(vals[8*5:], 0xdead) // lands in the snapshot
	if err := m.Lookup(u32(5), v); err != nil || binary.LittleEndian.Uint64(v) != 0xfeed {
		t.Fatalf("frozen map changed through an old mapping: %x, %v", v, err)
	}
	if err := mm.Refresh(); !errors.Is(err, ErrPermission) {
		t.Fatalf("Refresh of a writable mapping of a frozen map: %v, want EPERM", err)
	}
	ro, err := m.Mmap(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := binary.LittleEndian.Uint64(ro.Values()[8*5:]); got != 0xfeed {
		t.Fatalf("new read-only mapping shows %x", got)
	}
}

// TestRevokedMapping is the revocation test with real processes:
// a child maps the storage through a read-only descriptor it received;
// the parent revokes that descriptor and updates the map. The child's
// mapping keeps the value of the moment of revocation (it says it is no
// longer live), Refresh and Lookup fail with EBADF, and no update made
// after the revoke reaches it. The parent's own mapping follows the move.
func TestRevokedMapping(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	m, err := c.NewMap(MapSpec{Type: Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Name: "revoked"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Update(u32(1), u64(1), UpdateAny); err != nil {
		t.Fatal(err)
	}
	mine, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	v := make([]byte, 8)
	mine.Lookup(u32(1), v) // my own mapping, before the move
	ro, err := m.Reopen(ModeRead)
	if err != nil {
		t.Fatal(err)
	}
	peer, out, wait := startChild(t, "mapreader", socketEnvTest+"="+s.path)
	pc, err := fdConn(int(peer.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := SendDescriptors(pc, ro.FD()); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(pc, b[:]); err != nil {
		t.Fatalf("reader did not report: %v\n%s", err, trimOutput(out.Bytes()))
	}
	if err := ro.Revoke(); err != nil {
		t.Fatal(err)
	}
	for i := uint64(2); i < 10; i++ {
		if err := m.Update(u32(1), u64(i), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Update(u32(2), u64(2), UpdateAny); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("reader: %v\n%s", err, trimOutput(out.Bytes()))
	}
	t.Logf("reader:\n%s", trimOutput(out.Bytes()))
	// My mapping followed the move: the new value, without a round trip.
	before := sentCount(c)
	if err := mine.Lookup(u32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 9 {
		t.Fatalf("my lookup after the move: %x, %v", v, err)
	}
	if err := mine.Lookup(u32(1), v); err != nil || sentCount(c) > before+1 {
		t.Fatalf("lookups after the move: %v, %d requests", err, sentCount(c)-before)
	}
}

// childMapReader is the child of TestRevokedMapping.
func childMapReader() error {
	pc, err := fdConn(3)
	if err != nil {
		return err
	}
	defer pc.Close()
	fds, err := ReceiveDescriptors(pc, 1)
	if err != nil {
		return err
	}
	c, err := Dial(os.Getenv(socketEnvTest))
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := c.ImportMap(fds[0])
	unix.Close(fds[0])
	if err != nil {
		return err
	}
	defer m.Close()
	mm, err := m.Mmap(nil)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	defer mm.Close()
	v := make([]byte, 8)
	if err := mm.Lookup(u32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 1 {
		return fmt.Errorf("mapped lookup before revoke: %x, %v", v, err)
	}
	if err := m.Lookup(u32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 1 {
		return fmt.Errorf("transparent lookup before revoke: %x, %v", v, err)
	}
	if _, err := pc.Write([]byte{1}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := pc.Read(b[:]); err != nil {
		return err
	}
	// Revoked, and the parent updated key 1 eight times and added key 2.
	if mm.Live() {
		return errors.New("mapping still live after revocation")
	}
	if err := mm.Lookup(u32(1), v); !errors.Is(err, ErrStale) {
		return fmt.Errorf("mapped lookup after revoke: %v, want ErrStale", err)
	}
	if err := mm.Refresh(); !errors.Is(err, ErrBadDescriptor) {
		return fmt.Errorf("Refresh after revoke: %v, want EBADF", err)
	}
	if err := m.Lookup(u32(1), v); !errors.Is(err, ErrBadDescriptor) {
		return fmt.Errorf("Lookup after revoke: %x, %v, want EBADF", v, err)
	}
	// What the revoked holder keeps: the bytes of the moment of the
	// revocation, and nothing written since.
	// Read the snapshot as a live region (a copy with the retired word
	// cleared): key 1 is 1, key 2 absent.
	snap := bytes.Clone(mm.Bytes())
	binary.LittleEndian.PutUint32(snap[mapview.OffRetired:], 0)
	sv, err := mapview.New(snap)
	if err != nil {
		return err
	}
	if err := sv.Lookup(u32(1), v); err != nil || binary.LittleEndian.Uint64(v) != 1 {
		return fmt.Errorf("snapshot key 1: %x, %v; want the value of the moment of revocation", v, err)
	}
	if err := sv.Lookup(u32(2), v); !errors.Is(err, mapview.ErrNotFound) {
		return fmt.Errorf("key 2, added after the revoke, reached the revoked mapping: %x, %v", v, err)
	}
	fmt.Println("revoked mapping: snapshot of value 1 kept, later updates absent, reads refused")
	return nil
}

// TestSharedReadsConcurrent reads through the transparent path while
// writers update values (all bytes equal) and other descriptors are
// revoked (each revocation moves the storage): every value read is one a
// writer wrote, never torn, and no read fails.
func TestSharedReadsConcurrent(t *testing.T) {
	s := startServer(t)
	c := s.dial(t)
	for _, spec := range []MapSpec{
		{Type: Hash, KeySize: 4, ValueSize: 64, MaxEntries: 8},
		{Type: Array, KeySize: 4, ValueSize: 64, MaxEntries: 8},
	} {
		t.Run(spec.Type.String(), func(t *testing.T) {
			m, err := c.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for i := uint32(0); i < 4; i++ {
				m.Update(u32(i), fillValue(64, 1), UpdateAny)
			}
			ro, err := m.Reopen(ModeRead)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { // writer
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					if err := m.Update(u32(uint32(i%4)), fillValue(64, byte(i)), UpdateAny); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			go func() { // revoker: each revocation moves the storage
				defer wg.Done()
				for !stop.Load() {
					r, err := m.Reopen(ModeRead)
					if err != nil {
						t.Error(err)
						return
					}
					r.Lookup(u32(0), make([]byte, 64)) // r maps the storage
					if err := r.Revoke(); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			v := make([]byte, 64)
			for n := 0; n < 5000; n++ {
				if err := ro.Lookup(u32(uint32(n%4)), v); err != nil {
					t.Fatalf("read %d: %v", n, err)
				}
				if !bytes.Equal(v, fillValue(64, v[0])) {
					t.Fatalf("torn value %x", v)
				}
			}
			stop.Store(true)
			wg.Wait()
		})
	}
}

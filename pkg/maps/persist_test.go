package maps

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// persistCase says how to make and fill a map of one type for the
// persistence tests. Every type New accepts needs one: TestPersistEveryType
// fails for a type without it, so that no map type can be added without
// being dumped, restored and reopened after a crash.
type persistCase struct {
	spec Spec
	// fill writes some elements (the syscall side, or RestoreSlot for fd
	// arrays); nil means Update of keys 0..n-1 with distinct values.
	fill func(t *testing.T, m Map)
	// runtimeOnly: the type's contents are not map data (perf event
	// arrays hold the rings of live consumers): fill attaches some, and
	// the dump, the reopened region and the rebuilt map hold nothing.
	runtimeOnly bool
}

var persistCases = map[uint32]persistCase{
	TypeHash:        {spec: Spec{Type: TypeHash, KeySize: 4, ValueSize: 12, MaxEntries: 64}},
	TypeArray:       {spec: Spec{Type: TypeArray, KeySize: 4, ValueSize: 12, MaxEntries: 64}},
	TypePercpuHash:  {spec: Spec{Type: TypePercpuHash, KeySize: 4, ValueSize: 12, MaxEntries: 64}},
	TypePercpuArray: {spec: Spec{Type: TypePercpuArray, KeySize: 4, ValueSize: 12, MaxEntries: 64}},
	TypeProgArray:   {spec: Spec{Type: TypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 16}, fill: fillSlots},
	// Room enough that the LRU evicts nothing (it evicts before it is
	// full).
	TypeLRUHash:       {spec: Spec{Type: TypeLRUHash, KeySize: 4, ValueSize: 12, MaxEntries: 1024}},
	TypeLRUPercpuHash: {spec: Spec{Type: TypeLRUPercpuHash, KeySize: 4, ValueSize: 12, MaxEntries: 1024}},
	TypeQueue:         {spec: Spec{Type: TypeQueue, ValueSize: 12, MaxEntries: 64}, fill: fillPushed},
	TypeStack:         {spec: Spec{Type: TypeStack, ValueSize: 12, MaxEntries: 64}, fill: fillPushed},
	TypeBloomFilter:   {spec: Spec{Type: TypeBloomFilter, ValueSize: 12, MaxEntries: 64}, fill: fillBloom},
	TypeLPMTrie:       {spec: Spec{Type: TypeLPMTrie, KeySize: 8, ValueSize: 12, MaxEntries: 64, Flags: FlagNoPrealloc}, fill: fillLPM},
	TypeRingbuf:       {spec: Spec{Type: TypeRingbuf, MaxEntries: 4096}, fill: fillRing},
	// Maps of maps keep inner map ids (the layer above's references).
	TypeArrayOfMaps: {spec: Spec{Type: TypeArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 16, Inner: &innerHash}, fill: fillSlots},
	TypeHashOfMaps:  {spec: Spec{Type: TypeHashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 64, Inner: &innerHash}},
	TypePerfEventArray: {spec: Spec{Type: TypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}, fill: fillPerfRings,
		runtimeOnly: true},
	TypeDevmap:     {spec: Spec{Type: TypeDevmap, KeySize: 4, ValueSize: 8, MaxEntries: 8}, fill: fillRedirect},
	TypeDevmapHash: {spec: Spec{Type: TypeDevmapHash, KeySize: 4, ValueSize: 4, MaxEntries: 8}, fill: fillRedirect},
	TypeCPUMap:     {spec: Spec{Type: TypeCPUMap, KeySize: 4, ValueSize: 8, MaxEntries: 2}, fill: fillRedirect},
	// bpfd holds no AF_XDP sockets: an XSKMAP is always empty.
	TypeXSKMap: {spec: Spec{Type: TypeXSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4}, fill: func(*testing.T, Map) {},
		runtimeOnly: true},
}

// fillRedirect stores entries naming the loopback interface (ifindex 1),
// or a queue size of 1 for CPU maps, in keys 0 and 1.
func fillRedirect(t *testing.T, m Map) {
	t.Helper()
	v := make([]byte, m.Spec().ValueSize)
	v[0] = 1
	for i := uint32(0); i < 2; i++ {
		if err := RestoreElem(m, k32(i), v); err != nil {
			t.Fatal(err)
		}
	}
}

// fillPerfRings attaches a ring to slot 0 (where the map's caps allow).
func fillPerfRings(t *testing.T, m Map) {
	t.Helper()
	if _, err := m.(*PerfEventArray).AttachRing(0, PerfOptions{CPU: 0, Pages: 1}, nil, nil); err != nil && err != ErrPermission {
		t.Fatal(err)
	}
}

// fillRing writes 40 records of different sizes, discards one and
// consumes the first three (the dump lists the rest, in order).
func fillRing(t *testing.T, m Map) {
	t.Helper()
	r := m.(*Ringbuf)
	for i := 0; i < 40; i++ {
		if err := RestoreElem(m, nil, bytes.Repeat([]byte{byte(i + 1)}, 1+i%13)); err != nil {
			t.Fatal(err)
		}
	}
	off, ok := r.Reserve(5)
	if !ok {
		t.Fatal("Reserve failed")
	}
	r.Commit(off, 0, true)
	consumed := uint64(0)
	for i := 0; i < 3; i++ {
		consumed += recordLen(uint32(1 + i%13))
	}
	ne.PutUint64(r.cons, consumed)
}

// fillPushed pushes 40 values into a queue or stack (the order matters:
// the dump lists them oldest or bottom first).
func fillPushed(t *testing.T, m Map) {
	t.Helper()
	for i := 0; i < 40; i++ {
		if err := RestoreElem(m, nil, bytes.Repeat([]byte{byte(i + 1)}, 12)); err != nil {
			t.Fatal(err)
		}
	}
}

// fillBloom adds 40 values to a bloom filter.
func fillBloom(t *testing.T, m Map) {
	t.Helper()
	for i := 0; i < 40; i++ {
		if err := m.(Pusher).Push(0, bytes.Repeat([]byte{byte(i + 1)}, 12), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
}

// fillLPM inserts 40 prefixes of different lengths.
func fillLPM(t *testing.T, m Map) {
	t.Helper()
	for i := 0; i < 40; i++ {
		key := ne.AppendUint32(nil, uint32(8+i%25))
		key = append(key, 10, byte(i), byte(i*7), 0)
		if err := RestoreElem(m, key, bytes.Repeat([]byte{byte(i + 1)}, 12)); err != nil {
			t.Fatal(err)
		}
	}
}

// fillSlots stores ids in a few slots of an fd array.
func fillSlots(t *testing.T, m Map) {
	t.Helper()
	for i := uint32(0); i < m.Spec().MaxEntries; i += 3 {
		if err := RestoreSlot(m, k32(i), 100+i); err != nil {
			t.Fatal(err)
		}
	}
}

// fillDefault updates keys 0..n-1 with distinct values.
func fillDefault(t *testing.T, m Map) {
	t.Helper()
	s := m.Spec()
	vs := s.SyscallValueSize()
	for i := uint32(0); i < min(s.MaxEntries, 40); i++ {
		v := bytes.Repeat([]byte{byte(i*7 + 1)}, vs)
		if err := RestoreElem(m, k32(i), v); err != nil {
			t.Fatalf("RestoreElem: %v", err)
		}
	}
}

// dumpAll returns m's Dump as "key=value" strings, sorted (in dump
// order for queues and stacks, where the order is the contents).
func dumpAll(t *testing.T, m Map) []string {
	t.Helper()
	var out []string
	ks, vs := DumpSizes(m.Spec())
	if err := Dump(m, func(k, v []byte) error {
		if len(k) != ks || vs >= 0 && len(v) != vs {
			t.Fatalf("Dump gave a %d-byte key and a %d-byte value, DumpSizes says %d and %d", len(k), len(v), ks, vs)
		}
		out = append(out, fmt.Sprintf("%x=%x", k, v))
		return nil
	}); err != nil {
		t.Fatalf("Dump: %v", err)
	}
	if typ := m.Spec().Type; typ != TypeQueue && typ != TypeStack && typ != TypeRingbuf {
		sort.Strings(out)
	}
	return out
}

func implementedTypes() []uint32 {
	var ts []uint32
	for t := range implemented {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// TestPersistEveryType checks, for every map type New can create, with
// BPF_F_RDONLY, BPF_F_WRONLY and frozen variants where the type allows
// them: Dump reads the contents from storage whatever the caps; the
// region file, detached and reopened as after a daemon restart,
// validates with no repair and holds the same contents; and a fresh map
// rebuilt from the dump (RestoreElem / RestoreSlot) holds them too.
func TestPersistEveryType(t *testing.T) {
	for _, typ := range implementedTypes() {
		pc, ok := persistCases[typ]
		if !ok {
			t.Errorf("map type %s has no persistence case: add one to persistCases (and make Dump, RestoreElem or RestoreSlot, and Open support it)", TypeName(typ))
			continue
		}
		for _, flags := range []uint32{0, FlagRdonly, FlagWronly} {
			spec := pc.spec
			spec.Flags |= flags
			if spec.Validate() != nil {
				continue // the type does not take this flag
			}
			for _, freeze := range []bool{false, true} {
				name := fmt.Sprintf("%s/flags=%#x/frozen=%v", TypeName(typ), spec.Flags, freeze)
				t.Run(name, func(t *testing.T) { persistRoundTrip(t, spec, pc.fill, freeze, pc.runtimeOnly) })
			}
		}
	}
}

func persistRoundTrip(t *testing.T, spec Spec, fill func(*testing.T, Map), freeze, runtimeOnly bool) {
	dir := t.TempDir()
	m, err := NewWith(spec, &Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if fill == nil {
		fill = fillDefault
	}
	fill(t, m)
	if freeze && spec.Flags&FlagRdonly == 0 {
		if err := m.Freeze(); err != nil {
			t.Fatal(err)
		}
	}
	want := dumpAll(t, m)
	if runtimeOnly && len(want) != 0 {
		t.Fatalf("runtime-only contents dumped: %v", want)
	}
	if len(want) == 0 && !runtimeOnly {
		t.Fatal("nothing dumped")
	}
	path := RegionPath(m)
	if !IsRegionFile(filepath.Base(path)) {
		t.Fatalf("region file %q is not named as IsRegionFile expects", path)
	}
	if err := Detach(m); err != nil {
		t.Fatal(err)
	}
	if err := Detach(m); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Detach: %v, want ErrClosed", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("region file gone after Detach: %v", err)
	}
	m2, rep, err := OpenFile(path, nil)
	if err != nil {
		t.Fatalf("reopening a detached region: %v", err)
	}
	defer m2.Close()
	if rep != (Repair{}) {
		t.Errorf("a detached region needed repairs: %+v", rep)
	}
	if got := dumpAll(t, m2); !slicesEqual(got, want) {
		t.Errorf("reopened contents differ:\n got %v\nwant %v", got, want)
	}
	if m2.Frozen() != (freeze && spec.Flags&FlagRdonly == 0) {
		t.Errorf("frozen = %v after reopening", m2.Frozen())
	}
	// Rebuild from the dump, as after a reboot.
	m3, err := NewWith(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	if err := Dump(m2, func(k, v []byte) error {
		if spec.Type == TypeProgArray || spec.Type == TypePerfEventArray || spec.Type == TypeArrayOfMaps {
			return RestoreSlot(m3, k, ne.Uint32(v))
		}
		return RestoreElem(m3, k, v)
	}); err != nil {
		t.Fatalf("restoring the dump: %v", err)
	}
	if got := dumpAll(t, m3); !slicesEqual(got, want) {
		t.Errorf("rebuilt contents differ:\n got %v\nwant %v", got, want)
	}
}

// TestDumpStopsAtError checks that fn's error ends the dump and is
// returned, and that a closed map answers ErrClosed.
func TestDumpStopsAtError(t *testing.T) {
	m := mustNew(t, persistCases[TypeHash].spec)
	fillDefault(t, m)
	stop := errors.New("stop")
	n := 0
	if err := Dump(m, func(k, v []byte) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Dump = %v after %d calls, want stop after 1", err, n)
	}
	m.Close()
	if err := Dump(m, func(k, v []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Dump of a closed map: %v", err)
	}
}

// TestFileBackendFull checks that a region file that does not fit its
// filesystem fails at creation with ErrNoMemory (ENOMEM, like the
// kernel's preallocation) instead of a sparse file that would fault
// later. It needs a size-limited tmpfs (root).
func TestFileBackendFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := mountTmpfs(dir, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	defer unmount(dir)
	_, err := NewWith(Spec{Type: TypeArray, KeySize: 4, ValueSize: 1024, MaxEntries: 4096}, &Config{Dir: dir})
	if !errors.Is(err, ErrNoMemory) {
		t.Fatalf("4 MiB map on a 1 MiB tmpfs: %v, want ErrNoMemory", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left %d files behind", len(ents))
	}
	m, err := NewWith(Spec{Type: TypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 16}, &Config{Dir: dir})
	if err != nil {
		t.Fatalf("small map: %v", err)
	}
	m.Close()
}

func mountTmpfs(dir, opts string) error {
	return unix.Mount("tmpfs", dir, "tmpfs", 0, opts)
}

func unmount(dir string) { unix.Unmount(dir, unix.MNT_DETACH) }

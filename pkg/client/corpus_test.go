package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The corpus: socket filters and XDP programs from elsewhere, loaded
// unchanged into bpfd and into the kernel (testdata/corpus/README.md).
//
//   - testdata/corpus/*.bpf.o and testdata/bpf/*.bpf.o: bpfd's own, built
//     by `make fixtures`, reproducing public programs' patterns;
//   - libxdp's XDP objects (Debian package libxdp1, installed by .ci/run):
//     /usr/lib/x86_64-linux-gnu/bpf/*.o;
//   - cilium/ebpf's test objects in the module cache.

// corpusObject is one ELF object of the corpus and where it came from.
type corpusObject struct {
	path, origin string
}

func corpusObjects(t *testing.T) []corpusObject {
	var objs []corpusObject
	add := func(origin, glob string) {
		m, _ := filepath.Glob(glob)
		sort.Strings(m)
		for _, p := range m {
			objs = append(objs, corpusObject{p, origin})
		}
	}
	add("bpfd corpus", filepath.Join("..", "..", "testdata", "corpus", "*.bpf.o"))
	add("bpfd fixtures", filepath.Join("..", "..", "testdata", "bpf", "*.bpf.o"))
	add("libxdp1 (Debian)", "/usr/lib/x86_64-linux-gnu/bpf/*.o")
	if dir := filepath.Dir(ciliumTestdataDir(t)); dir != "." {
		add("cilium/ebpf testdata", filepath.Join(dir, "testdata", "*-el.elf"))
		add("cilium/ebpf testdata", filepath.Join(dir, "btf", "testdata", "*-el.elf"))
	}
	return objs
}

// ciliumTestdataDir is cilium/ebpf's testdata directory in the module
// cache, or "" when absent.
func ciliumTestdataDir(t *testing.T) string {
	var dir string
	t.Run("locate cilium testdata", func(t *testing.T) { dir = ciliumTestdata(t, "testdata") })
	return dir
}

// corpusPackets is the varied packet set every program runs on.
func corpusPackets() map[string][]byte {
	mac := func(dst []byte, f []byte) []byte {
		f = bytes.Clone(f)
		copy(f, dst)
		return f
	}
	eth := func(typ uint16, payload []byte) []byte {
		b := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, byte(typ >> 8), byte(typ)}
		return append(b, payload...)
	}
	l4 := func(proto uint8, sport, dport uint16, n int) []byte {
		switch proto {
		case 6:
			h := make([]byte, 20+n)
			binary.BigEndian.PutUint16(h[0:], sport)
			binary.BigEndian.PutUint16(h[2:], dport)
			h[12] = 5 << 4
			h[13] = 0x02
			return h
		case 17:
			h := make([]byte, 8+n)
			binary.BigEndian.PutUint16(h[0:], sport)
			binary.BigEndian.PutUint16(h[2:], dport)
			binary.BigEndian.PutUint16(h[4:], uint16(8+n))
			return h
		}
		h := make([]byte, 8+n) // ICMP echo request
		h[0] = 8
		binary.BigEndian.PutUint16(h[2:], 0xf7ff)
		return h
	}
	v4 := func(proto uint8, sport, dport uint16, n int) []byte {
		seg := l4(proto, sport, dport, n)
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(seg)))
		h[8], h[9] = 64, proto
		copy(h[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(h[i:]))
		}
		sum = sum&0xffff + sum>>16
		binary.BigEndian.PutUint16(h[10:], ^uint16(sum+sum>>16))
		return append(h, seg...)
	}
	v6 := func(proto uint8, sport, dport uint16, ext []byte) []byte {
		seg := l4(proto, sport, dport, 4)
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(seg)))
		h[6], h[7] = proto, 64
		if len(ext) > 0 {
			h[6] = 0 // hop-by-hop first
		}
		h[8], h[23], h[24], h[39] = 0xfd, 1, 0xfd, 2
		return append(append(h, ext...), seg...)
	}
	vlan := func(tpid, id uint16, inner uint16, payload []byte) []byte {
		return eth(tpid, append([]byte{byte(id >> 8), byte(id), byte(inner >> 8), byte(inner)}, payload...))
	}
	hopByHop := []byte{6, 0, 1, 4, 0, 0, 0, 0} // next TCP, 8 bytes, PadN
	ipip := v4(4, 0, 0, 0)
	ipip = append(ipip[:20], v4(17, 1000, 53, 4)...)
	binary.BigEndian.PutUint16(ipip[2:], uint16(len(ipip)))
	r := rand.New(rand.NewPCG(11, 12))
	random := make([]byte, 200)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	pkts := map[string][]byte{
		"ipv4 tcp 22":      eth(0x0800, v4(6, 40000, 22, 0)),
		"ipv4 udp 53":      eth(0x0800, v4(17, 5353, 53, 12)),
		"ipv4 udp from 53": eth(0x0800, v4(17, 53, 40000, 12)),
		"ipv4 icmp echo":   eth(0x0800, v4(1, 0, 0, 16)),
		"ipv4 ttl 1":       eth(0x0800, func() []byte { b := v4(6, 1, 2, 0); b[8] = 1; return b }()),
		"ipv4 options": eth(0x0800, func() []byte {
			b := v4(17, 1, 53, 0)
			b[0] = 0x46
			return append(b[:20], append([]byte{1, 1, 1, 0}, b[20:]...)...)
		}()),
		"ipv4 fragment":         eth(0x0800, func() []byte { b := v4(17, 1, 53, 0); b[7] = 8; return b }()),
		"ipip":                  eth(0x0800, ipip),
		"ipv6 tcp 443":          eth(0x86dd, v6(6, 50000, 443, nil)),
		"ipv6 udp 53":           eth(0x86dd, v6(17, 5353, 53, nil)),
		"ipv6 hop-by-hop tcp":   eth(0x86dd, v6(6, 1, 80, hopByHop)),
		"ipv6 icmpv6":           eth(0x86dd, v6(58, 0, 0, nil)),
		"arp":                   eth(0x0806, make([]byte, 28)),
		"vlan ipv4":             vlan(0x8100, 42, 0x0800, v4(17, 1, 53, 0)),
		"qinq ipv6":             vlan(0x88a8, 7, 0x8100, []byte{0, 42, 0x86, 0xdd}),
		"broadcast arp":         mac([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, eth(0x0806, make([]byte, 28))),
		"multicast ipv4":        mac([]byte{0x01, 0x00, 0x5e, 0, 0, 0xfb}, eth(0x0800, v4(17, 5353, 5353, 20))),
		"to lo mac":             mac(make([]byte, 6), eth(0x0800, v4(6, 1, 22, 0))),
		"802.3 llc":             eth(0x0026, append([]byte{0xaa, 0xaa, 0x03}, make([]byte, 35)...)),
		"802.3 raw":             eth(0x0026, append([]byte{0xff, 0xff}, make([]byte, 36)...)),
		"ethernet only":         eth(0x88b5, nil),
		"ipv4 truncated":        eth(0x0800, v4(6, 1, 22, 0))[:30],
		"ipv4 tcp truncated l4": eth(0x0800, v4(6, 1, 22, 0))[:40],
		"ipv6 truncated":        eth(0x86dd, v6(17, 1, 53, nil))[:40],
		"random":                random,
		"jumbo udp":             eth(0x0800, v4(17, 1, 53, 8800)),
		"large udp":             eth(0x0800, v4(17, 1, 9, 3400)),
	}
	return pkts
}

// TestCorpusMatchesKernel loads every socket filter and XDP program of
// the corpus into the kernel and into bpfd (each program on its own, with
// the maps it uses, as cilium/ebpf's LoadAndAssign), runs it on the
// packet set once and repeated, and requires the same return values,
// data out and map contents after the runs. It reports how many of the
// kernel-loadable programs bpfd loads, why the others do not, and fails
// below 95% or on any run that differs.
func TestCorpusMatchesKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel oracle needs root for bpf(2) and BPF_PROG_TEST_RUN")
	}
	c := newTestConn(t)
	pkts := corpusPackets()
	var names []string
	for n := range pkts {
		names = append(names, n)
	}
	sort.Strings(names)
	if raceEnabled || testing.Short() {
		// A representative subset keeps the race-detector run short;
		// the full set runs without it.
		names = []string{"802.3 llc", "broadcast arp", "ipip", "ipv4 icmp echo", "ipv4 tcp 22", "ipv4 truncated",
			"ipv4 udp 53", "ipv6 hop-by-hop tcp", "jumbo udp", "vlan ipv4"}
	}
	var kernelOK, both, pending, runs, matched, mapsCompared int
	var perCPUCompared []string
	notLoaded := map[string][]string{}
	for _, obj := range corpusObjects(t) {
		spec, err := ebpf.LoadCollectionSpec(obj.path)
		if err != nil {
			t.Logf("%s: not parsed by cilium/ebpf: %v", obj.path, err)
			continue
		}
		var pnames []string
		for n, ps := range spec.Programs {
			if ps.Type == ebpf.SocketFilter || ps.Type == ebpf.XDP {
				pnames = append(pnames, n)
			}
		}
		sort.Strings(pnames)
		for _, pname := range pnames {
			id := filepath.Base(obj.path) + ":" + pname
			kspec := spec.Copy()
			for n := range kspec.Programs {
				if n != pname {
					delete(kspec.Programs, n)
				}
			}
			keep := map[string]bool{}
			for _, ins := range kspec.Programs[pname].Instructions {
				if ins.IsLoadFromMap() && ins.Reference() != "" {
					keep[ins.Reference()] = true
				}
			}
			for n, ms := range kspec.Maps {
				if !keep[n] && !strings.HasPrefix(n, ".") { // variables need their sections
					delete(kspec.Maps, n)
				}
				ms.Pinning = ebpf.PinNone // no bpffs pinning in a test
			}
			kcoll, kerr := ebpf.NewCollectionWithOptions(kspec, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogDisabled: true}})
			if kerr != nil {
				t.Logf("%s (%s): the kernel does not load it: %v", id, obj.origin, firstLine(kerr))
				continue
			}
			kernelOK++
			coll, err := c.LoadCollectionSpec(spec, &CollectionOptions{Programs: []string{pname}})
			if err != nil {
				kcoll.Close()
				reason := firstLine(err)
				if r := pendingMapWork(err); r != "" {
					pending++
					reason = "pending map work (issue 10: " + r + "): " + reason
				}
				notLoaded[reason] = append(notLoaded[reason], id)
				continue
			}
			both++
			p, kp := coll.Programs[pname], kcoll.Programs[pname]
			for _, rep := range []uint32{1, 3} {
				for _, n := range names {
					runs++
					if d := corpusRun(p, kp, pkts[n], rep); d != "" {
						t.Errorf("%s, %s, repeat %d: %s", id, n, rep, d)
						continue
					}
					matched++
				}
			}
			for mname, m := range coll.Maps {
				km := kcoll.Maps[mname]
				if km == nil {
					continue
				}
				if d := compareMaps(m, km); d != "" {
					t.Errorf("%s: map %s after the runs: %s", id, mname, d)
				}
				mapsCompared++
				switch km.Type() {
				case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash:
					perCPUCompared = append(perCPUCompared, id+":"+mname)
				}
			}
			coll.Close()
			kcoll.Close()
		}
	}
	reasons := make([]string, 0, len(notLoaded))
	for r, ids := range notLoaded {
		reasons = append(reasons, fmt.Sprintf("%s: %s", strings.Join(ids, ", "), r))
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		t.Logf("not loaded by bpfd: %s", r)
	}
	if kernelOK == 0 {
		t.Fatal("no corpus program loaded in the kernel")
	}
	pct := 100 * float64(both) / float64(kernelOK)
	pctOwn := 100.0
	if kernelOK > pending {
		pctOwn = 100 * float64(both) / float64(kernelOK-pending)
	}
	t.Logf("corpus: the kernel loads %d programs, bpfd %d of them (%.1f%%; %.1f%% of the %d that need no map type or map helper still being added)",
		kernelOK, both, pct, pctOwn, kernelOK-pending)
	t.Logf("corpus: %d of %d runs match the kernel", matched, runs)
	t.Logf("corpus: %d maps compared after the runs, %d of them per-CPU (%s)", mapsCompared, len(perCPUCompared), strings.Join(perCPUCompared, ", "))
	if pctOwn < 95 {
		t.Errorf("bpfd loads %.1f%% of the kernel-loadable corpus (not counting pending map work), want at least 95%%", pctOwn)
	}
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	var ve *VerifierError
	if errors.As(err, &ve) {
		lines := strings.Split(strings.TrimSpace(ve.Log), "\n")
		s += ": " + lines[len(lines)-1]
	}
	return s
}

// corpusRun runs p and kp on pkt and describes any difference.
func corpusRun(p *Program, kp *ebpf.Program, pkt []byte, repeat uint32) string {
	out := make([]byte, len(pkt)+4096)
	kout := make([]byte, len(pkt)+4096)
	opts := &RunOptions{Data: pkt, DataOut: out, Repeat: repeat}
	ret, err := p.Run(opts)
	kopts := &ebpf.RunOptions{Data: pkt, DataOut: kout, Repeat: repeat}
	// One CPU for every kernel run, so per-CPU map values gather in one
	// slot (comparePerCPUMaps).
	runtime.LockOSThread()
	var old, one unix.CPUSet
	pinned := unix.SchedGetaffinity(0, &old) == nil
	if pinned {
		one.Set(0)
		pinned = unix.SchedSetaffinity(0, &one) == nil
	}
	kret, kerr := kp.Run(kopts)
	if pinned {
		unix.SchedSetaffinity(0, &old)
	}
	runtime.UnlockOSThread()
	if (err != nil) != (kerr != nil) {
		return fmt.Sprintf("bpfd error %v, kernel error %v", err, kerr)
	}
	if err != nil {
		return ""
	}
	if ret != kret {
		return fmt.Sprintf("bpfd returned %#x, kernel %#x", ret, kret)
	}
	if !bytes.Equal(opts.DataOut, kopts.DataOut) {
		i := 0
		for i < len(opts.DataOut) && i < len(kopts.DataOut) && opts.DataOut[i] == kopts.DataOut[i] {
			i++
		}
		return fmt.Sprintf("data out differs at byte %d (bpfd %d bytes, kernel %d)", i, len(opts.DataOut), len(kopts.DataOut))
	}
	return ""
}

// compareMaps compares a bpfd map with the kernel's, entry by entry.
// Per-CPU maps are compared through perCPUEqual.
func compareMaps(m *Map, km *ebpf.Map) string {
	switch km.Type() {
	case ebpf.Hash, ebpf.Array, ebpf.LRUHash:
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash:
		return comparePerCPUMaps(m, km)
	default:
		return "" // special maps (prog arrays, devmaps, ring buffers...): no values to compare
	}
	got := map[string]string{}
	key, next := make([]byte, m.KeySize()), make([]byte, m.KeySize())
	val := make([]byte, m.ValueSize())
	var cur []byte
	for {
		if err := m.NextKey(cur, next); err != nil {
			break
		}
		copy(key, next)
		cur = key
		if err := m.Lookup(key, val); err == nil {
			got[fmt.Sprintf("%x", key)] = fmt.Sprintf("%x", val)
		}
	}
	want := map[string]string{}
	var k, v []byte
	it := km.Iterate()
	for it.Next(&k, &v) {
		want[fmt.Sprintf("%x", k)] = fmt.Sprintf("%x", v)
	}
	if len(got) != len(want) {
		return fmt.Sprintf("bpfd %d entries, kernel %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			return fmt.Sprintf("key %s: bpfd %s, kernel %s", k, got[k], v)
		}
	}
	return ""
}

// comparePerCPUMaps compares per-CPU maps key by key. Which CPU a run
// lands on is the scheduler's in the kernel (the test pins its kernel
// runs to one CPU) and the slot pool's in bpfd, so the per-CPU values of
// a key are compared as a multiset (a program that stores anything: the
// one written slot holds the same bytes) or, failing that, summed over the
// CPUs word by word (counters spread over several slots add up to the
// same totals).
func comparePerCPUMaps(m *Map, km *ebpf.Map) string {
	vs := int(m.ValueSize())
	stride := (vs + 7) &^ 7
	ncpu := PossibleCPUs()
	got := map[string][]byte{}
	key, next := make([]byte, m.KeySize()), make([]byte, m.KeySize())
	var cur []byte
	for {
		if err := m.NextKey(cur, next); err != nil {
			break
		}
		copy(key, next)
		cur = key
		val := make([]byte, m.ValueBufferSize())
		if err := m.Lookup(key, val); err == nil {
			got[string(key)] = val
		}
	}
	want := map[string][]byte{}
	kkey, knext := make([]byte, m.KeySize()), make([]byte, m.KeySize())
	var kcur []byte
	for {
		if err := kernelNextKey(km.FD(), kcur, knext); err != nil {
			break
		}
		copy(kkey, knext)
		kcur = kkey
		val := make([]byte, ncpu*stride)
		if err := kernelLookup(km.FD(), kkey, val); err == nil {
			want[string(kkey)] = val
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("bpfd %d keys, kernel %d", len(got), len(want))
	}
	for k, kv := range want {
		bv, ok := got[k]
		if !ok {
			return fmt.Sprintf("key %x: missing in bpfd", k)
		}
		if !perCPUEqual(bv, kv, ncpu, vs, stride) {
			return fmt.Sprintf("key %x: per-CPU values bpfd %x, kernel %x", k, bv, kv)
		}
	}
	return ""
}

// perCPUEqual reports whether two per-CPU values (ncpu values of size
// bytes, stride apart) hold the same multiset of values, or the same sums
// of their 8-byte (or, for sizes not a multiple of 8, 4-byte) words.
func perCPUEqual(a, b []byte, ncpu, size, stride int) bool {
	sorted := func(v []byte) []string {
		s := make([]string, ncpu)
		for i := range ncpu {
			s[i] = string(v[i*stride : i*stride+size])
		}
		sort.Strings(s)
		return s
	}
	sa, sb := sorted(a), sorted(b)
	if slices.Equal(sa, sb) {
		return true
	}
	word := 8
	if size%8 != 0 {
		word = 4
	}
	if size%word != 0 {
		return false
	}
	for w := 0; w < size; w += word {
		var ta, tb uint64
		for i := range ncpu {
			if word == 8 {
				ta += binary.LittleEndian.Uint64(a[i*stride+w:])
				tb += binary.LittleEndian.Uint64(b[i*stride+w:])
			} else {
				ta += uint64(binary.LittleEndian.Uint32(a[i*stride+w:]))
				tb += uint64(binary.LittleEndian.Uint32(b[i*stride+w:]))
			}
		}
		if ta != tb {
			return false
		}
	}
	return true
}

// kernelLookup and kernelNextKey are BPF_MAP_LOOKUP_ELEM and
// BPF_MAP_GET_NEXT_KEY on a kernel map, with raw buffers (per-CPU values
// as the kernel lays them out).
func kernelLookup(fd int, key, val []byte) error {
	attr := struct {
		fd       uint32
		_        uint32
		key, val uint64
		flags    uint64
	}{fd: uint32(fd), key: uint64(uintptr(unsafe.Pointer(&key[0]))), val: uint64(uintptr(unsafe.Pointer(&val[0])))}
	_, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_LOOKUP_ELEM, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(key)
	runtime.KeepAlive(val)
	if e != 0 {
		return e
	}
	return nil
}

func kernelNextKey(fd int, key, next []byte) error {
	attr := struct {
		fd        uint32
		_         uint32
		key, next uint64
		_         uint64
	}{fd: uint32(fd), next: uint64(uintptr(unsafe.Pointer(&next[0])))}
	if key != nil {
		attr.key = uint64(uintptr(unsafe.Pointer(&key[0])))
	}
	_, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_GET_NEXT_KEY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(key)
	runtime.KeepAlive(next)
	if e != 0 {
		return e
	}
	return nil
}

// pendingMapWork names the map type or map helper a load failed on when
// it is one the maps work (issue 10) is adding, or returns "".
func pendingMapWork(err error) string {
	msg := err.Error()
	var ve *VerifierError
	if errors.As(err, &ve) {
		msg += ve.Log
	}
	for _, h := range []struct{ pat, what string }{
		{"call #25:", "perf_event_output"}, {"call #51:", "redirect_map"},
		{"call #130:", "ringbuf_output"}, {"call #131:", "ringbuf_reserve"}, {"call #87:", "map_push_elem"},
		{"call #88:", "map_pop_elem"}, {"call #89:", "map_peek_elem"},
		{"perf_event_output", "perf_event_output"}, {"redirect_map", "redirect_map"},
	} {
		if strings.Contains(msg, h.pat) {
			return h.what
		}
	}
	// A map bpfd cannot create yet: EINVAL on a map type it lacks.
	if strings.Contains(msg, ": map ") && errors.Is(err, ErrInvalid) {
		return "map type"
	}
	return ""
}

// TestPerCPUEqual: per-CPU values compare as a multiset or by sums,
// never by which CPU holds them.
func TestPerCPUEqual(t *testing.T) {
	val := func(words ...uint64) []byte {
		b := make([]byte, 0, 8*len(words))
		for _, w := range words {
			b = binary.LittleEndian.AppendUint64(b, w)
		}
		return b
	}
	tests := []struct {
		name string
		a, b []byte
		want bool
	}{
		{name: "same CPU", a: val(5, 0), b: val(5, 0), want: true},
		{name: "other CPU", a: val(0, 5), b: val(5, 0), want: true},
		{name: "counter spread over CPUs", a: val(2, 3), b: val(5, 0), want: true},
		{name: "different total", a: val(2, 2), b: val(5, 0), want: false},
		{name: "different stored bytes", a: val(0, 6), b: val(5, 0), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := perCPUEqual(tt.a, tt.b, 2, 8, 8); got != tt.want {
				t.Fatalf("perCPUEqual(%x, %x) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

// Command ciliumprog is a test program of the bpf(2) emulation: a Go
// program that knows nothing of bpfd and uses bpf(2) only through
// github.com/cilium/ebpf, as the tools users already have do. The tests
// build it static and run it twice, against the kernel as root and under
// `bpfctl exec --bpf` as an unprivileged user, and compare what it prints.
//
// Modes:
//
//	ciliumprog -obj emu.bpf.o -pin DIR   transcript: maps, programs, test runs, batches, pins
//	ciliumprog -bench N                  timings of N map lookups and updates (medians)
//	ciliumprog -passfd SOCKET            descriptor exchange with another process over SCM_RIGHTS
//	ciliumprog -churn N                  create and close N maps, say "done", wait for stdin to close
//	ciliumprog -loop                     map and program calls until killed (prints its pid first)
//	ciliumprog -garbage N -seed S        N bpf(2) calls with random commands, attrs, pointers and sizes
//	ciliumprog -inherited                the maps handed in by bpfctl exec --map (BPFD_FDS, BPFD_FDNAMES)
//
// The transcript prints results only (values, return values, errnos),
// never ids, timings or iteration order, so that the two runs compare
// equal when the emulation is faithful.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func main() {
	obj := flag.String("obj", "", "clang object with the programs count_proto and xdp_filter")
	pin := flag.String("pin", "/sys/fs/bpf", "bpffs directory to pin under")
	bench := flag.Int("bench", 0, "time this many lookups and updates")
	passfd := flag.String("passfd", "", "Unix socket to exchange descriptors on")
	churn := flag.Int("churn", 0, "create and close this many maps")
	loop := flag.Bool("loop", false, "make calls until killed")
	garbage := flag.Int("garbage", 0, "make this many random bpf(2) calls")
	seed := flag.Int64("seed", 1, "random seed of -garbage")
	inherited := flag.Bool("inherited", false, "use the maps handed in as fds 3, 4, ... (BPFD_FDS, BPFD_FDNAMES)")
	flag.Parse()
	var err error
	switch {
	case *bench > 0:
		err = runBench(*bench)
	case *passfd != "":
		err = runPassFD(*passfd)
	case *churn > 0:
		err = runChurn(*churn)
	case *loop:
		err = runLoop()
	case *garbage > 0:
		err = runGarbage(*garbage, *seed)
	case *inherited:
		err = runInherited()
	default:
		err = runTranscript(*obj, *pin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ciliumprog:", err)
		os.Exit(1)
	}
}

var out strings.Builder

func say(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }

// errName names an error by its errno, as the transcript compares it.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return "errno " + fmt.Sprint(int(e))
	}
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return "errno 2"
	case errors.Is(err, ebpf.ErrKeyExist):
		return "errno 17"
	case errors.Is(err, ebpf.ErrNotSupported):
		return "not supported"
	}
	return "error " + err.Error()
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// ethernet returns a frame of n bytes with EtherType proto (host order).
func ethernet(proto uint16, n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(i)
	}
	binary.BigEndian.PutUint16(f[12:], proto)
	if proto == 0x0800 && n >= 34 {
		f[14] = 0x45 // IPv4, 20-byte header
		binary.BigEndian.PutUint16(f[16:], uint16(n-14))
	}
	return f
}

func runTranscript(obj, pinDir string) error {
	defer func() { os.Stdout.WriteString(out.String()) }()

	// Hash map: the kernel's element semantics.
	h, err := ebpf.NewMap(&ebpf.MapSpec{Name: "emu_hash", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	defer h.Close()
	for k := uint32(1); k <= 5; k++ {
		say("hash put %d: %s", k, errName(h.Put(u32(k), u64(uint64(k)*10))))
	}
	var v uint64
	say("hash lookup 3: %s %d", errName(h.Lookup(u32(3), &v)), v)
	say("hash update noexist 3: %s", errName(h.Update(u32(3), u64(1), ebpf.UpdateNoExist)))
	say("hash update exist 9: %s", errName(h.Update(u32(9), u64(1), ebpf.UpdateExist)))
	say("hash delete 2: %s", errName(h.Delete(u32(2))))
	say("hash delete 2 again: %s", errName(h.Delete(u32(2))))
	say("hash lookup 2: %s", errName(h.Lookup(u32(2), &v)))
	say("hash lookup-and-delete 4: %s %d", errName(h.LookupAndDelete(u32(4), &v)), v)
	say("hash iterate: %s", iterate(h))
	var next uint32
	say("hash next key of 99: %s", errName(h.NextKey(u32(99), &next)))
	info, err := h.Info()
	if err != nil {
		return fmt.Errorf("hash info: %w", err)
	}
	say("hash info: type %s key %d value %d entries %d flags %#x name %q", info.Type, info.KeySize,
		info.ValueSize, info.MaxEntries, info.Flags, info.Name)

	// Hash full.
	small, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	if err != nil {
		return fmt.Errorf("small hash: %w", err)
	}
	defer small.Close()
	for k := uint32(0); k < 3; k++ {
		say("small put %d: %s", k, errName(small.Put(u32(k), u32(k))))
	}

	// Array map.
	a, err := ebpf.NewMap(&ebpf.MapSpec{Name: "emu_array", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		return fmt.Errorf("array: %w", err)
	}
	defer a.Close()
	say("array put 1: %s", errName(a.Put(u32(1), u32(111))))
	say("array put 4: %s", errName(a.Put(u32(4), u32(1))))
	var av uint32
	say("array lookup 1: %s %d", errName(a.Lookup(u32(1), &av)), av)
	say("array lookup 0: %s %d", errName(a.Lookup(u32(0), &av)), av)
	say("array delete 1: %s", errName(a.Delete(u32(1))))
	say("array lookup-and-delete 1: %s", errName(a.LookupAndDelete(u32(1), &av)))
	say("array iterate: %s", iterate(a))

	// Batches.
	b, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
	if err != nil {
		return fmt.Errorf("batch hash: %w", err)
	}
	defer b.Close()
	keys := make([]uint32, 20)
	vals := make([]uint64, 20)
	for i := range keys {
		keys[i], vals[i] = uint32(i+100), uint64(i)*3
	}
	n, err := b.BatchUpdate(keys, vals, nil)
	say("batch update: %d %s", n, errName(err))
	say("batch lookup: %s", batchAll[uint64](b, false))
	n, err = b.BatchDelete(keys[:5], nil)
	say("batch delete 5: %d %s", n, errName(err))
	n, err = b.BatchDelete([]uint32{1000}, nil)
	say("batch delete missing: %d %s", n, errName(err))
	say("batch lookup-and-delete: %s", batchAll[uint64](b, true))
	say("after: %s", iterate(b))
	ab := make([]uint32, 4)
	for i := range ab {
		ab[i] = uint32(i * 7)
	}
	n, err = a.BatchUpdate([]uint32{0, 1, 2, 3}, ab, nil)
	say("array batch update: %d %s", n, errName(err))
	say("array batch lookup: %s", batchAll[uint32](a, false))

	// Freeze.
	say("array freeze: %s", errName(a.Freeze()))
	say("array put after freeze: %s", errName(a.Put(u32(0), u32(1))))
	say("array lookup after freeze: %s", errName(a.Lookup(u32(0), &av)))

	// Programs from instructions.
	sf, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "emu_len", Type: ebpf.SocketFilter, License: "MIT",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), // skb->len
			asm.Return(),
		}})
	if err != nil {
		return fmt.Errorf("socket filter: %w", err)
	}
	defer sf.Close()
	for _, size := range []int{14, 60, 200} {
		ret, _, err := sf.Test(ethernet(0x86dd, size))
		say("asm socket filter on %d bytes: %s %d", size, errName(err), ret)
	}
	ret, _, err := sf.Test(make([]byte, 10))
	say("asm socket filter on 10 bytes: %s %d", errName(err), ret)
	xp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "emu_xdp", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{
			asm.LoadMapPtr(asm.R1, h.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.StoreImm(asm.R10, -4, 3, asm.Word),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "miss"),
			asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("miss"),
			asm.Return(),
		}})
	if err != nil {
		return fmt.Errorf("xdp: %w", err)
	}
	defer xp.Close()
	ret, _, err = xp.Test(ethernet(0x0800, 64))
	say("asm xdp reading the hash: %s %d", errName(err), ret)
	_, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "MIT",
		Instructions: asm.Instructions{asm.LoadMem(asm.R0, asm.R10, 8, asm.DWord), asm.Return()}})
	var ve *ebpf.VerifierError
	say("unsafe program refused: %v %s", errors.As(err, &ve), errName(errors.Unwrap(err)))

	// Programs and maps from the clang object.
	if obj != "" {
		spec, err := ebpf.LoadCollectionSpec(obj)
		if err != nil {
			return err
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			return fmt.Errorf("collection: %w", err)
		}
		defer coll.Close()
		cp := coll.Programs["count_proto"]
		for _, f := range [][]byte{ethernet(0x0800, 60), ethernet(0x0800, 100), ethernet(0x86dd, 80)} {
			ret, _, err := cp.Test(f)
			say("count_proto: %s %d", errName(err), ret)
		}
		say("by_proto: %s", iterate(coll.Maps["by_proto"]))
		xf := coll.Programs["xdp_filter"]
		for _, f := range [][]byte{ethernet(0x0800, 60), ethernet(0x0806, 42), ethernet(0x0800, 1500)} {
			ret, dout, err := xf.Test(f)
			say("xdp_filter: %s %d same=%v", errName(err), ret, slices.Equal(dout, f))
		}
		say("verdicts: %s", iterate(coll.Maps["verdicts"]))
		say("bss: %s", iterate(coll.Maps[".bss"]))
		var pi *ebpf.ProgramInfo
		if pi, err = xf.Info(); err == nil {
			say("xdp_filter info: type %s name %q", pi.Type, pi.Name)
		} else {
			say("xdp_filter info: %s", errName(err))
		}

		// Pins.
		hp := filepath.Join(pinDir, "emu_hash")
		say("pin map: %s", errName(h.Pin(hp)))
		pm, err := ebpf.LoadPinnedMap(hp, nil)
		say("reopen map: %s", errName(err))
		if err == nil {
			say("through the pin: %s", iterate(pm))
			pm.Close()
		}
		ro, err := ebpf.LoadPinnedMap(hp, &ebpf.LoadPinOptions{ReadOnly: true})
		say("reopen read-only: %s", errName(err))
		if err == nil {
			say("read-only put: %s", errName(ro.Put(u32(1), u64(1))))
			say("read-only lookup 1: %s", errName(ro.Lookup(u32(1), &v)))
			ro.Close()
		}
		pp := filepath.Join(pinDir, "emu_xdp")
		say("pin prog: %s", errName(xf.Pin(pp)))
		lp, err := ebpf.LoadPinnedProgram(pp, nil)
		say("reopen prog: %s", errName(err))
		if err == nil {
			ret, _, err := lp.Test(ethernet(0x0800, 60))
			say("pinned xdp_filter: %s %d", errName(err), ret)
			lp.Close()
		}
		_, err = ebpf.LoadPinnedMap(filepath.Join(pinDir, "nothing_here"), nil)
		say("missing pin: %s", errName(err))
		say("unpin map: %s", errName(h.Unpin()))
		say("unpin prog: %s", errName(xf.Unpin()))
		_, err = ebpf.LoadPinnedMap(hp, nil)
		say("after unpin: %s", errName(err))
	}
	return nil
}

// iterate renders a map's contents sorted by key.
func iterate(m *ebpf.Map) string {
	var lines []string
	k := make([]byte, m.KeySize())
	v := make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(&k, &v) {
		lines = append(lines, fmt.Sprintf("%x=%x", k, v))
	}
	if err := it.Err(); err != nil {
		lines = append(lines, "error "+errName(err))
	}
	sort.Strings(lines)
	return fmt.Sprintf("%d [%s]", len(lines), strings.Join(lines, " "))
}

// batchAll walks a map with BatchLookup (or BatchLookupAndDelete) in
// chunks of 4 and renders the elements sorted. V is the value type.
func batchAll[V any](m *ebpf.Map, del bool) string {
	var lines []string
	var cursor ebpf.MapBatchCursor
	keys := make([]uint32, 4)
	vals := make([]V, 4)
	for {
		var n int
		var err error
		if del {
			n, err = m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		} else {
			n, err = m.BatchLookup(&cursor, keys, vals, nil)
		}
		for i := 0; i < n; i++ {
			lines = append(lines, fmt.Sprintf("%d=%v", keys[i], vals[i]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			lines = append(lines, "error "+errName(err))
			break
		}
	}
	sort.Strings(lines)
	return fmt.Sprintf("%d [%s]", len(lines), strings.Join(lines, " "))
}

// runBench times n lookups and n updates of one hash element and prints
// the medians in ns: "lookup NS update NS".
func runBench(n int) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		return err
	}
	defer m.Close()
	key, val := u32(1), u64(7)
	if err := m.Put(key, val); err != nil {
		return err
	}
	out := make([]byte, 8)
	median := func(f func() error) (time.Duration, error) {
		d := make([]time.Duration, n)
		for i := range d {
			t := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			d[i] = time.Since(t)
		}
		slices.Sort(d)
		return d[n/2], nil
	}
	lk, err := median(func() error { return m.Lookup(key, &out) })
	if err != nil {
		return err
	}
	up, err := median(func() error { return m.Update(key, val, ebpf.UpdateAny) })
	if err != nil {
		return err
	}
	fmt.Printf("lookup %d update %d\n", lk.Nanoseconds(), up.Nanoseconds())
	return nil
}

// runPassFD exchanges descriptors with a peer on a Unix socket: it
// receives a map descriptor, reads key 1 through it and writes key 2,
// then creates a map of its own, stores key 1 = 99 and sends the peer
// that map's descriptor.
func runPassFD(path string) error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer c.Close()
	oob := make([]byte, syscall.CmsgSpace(4))
	buf := make([]byte, 16)
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("no descriptor received: %v", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fmt.Errorf("no descriptor received: %v", err)
	}
	m, err := ebpf.NewMapFromFD(fds[0])
	if err != nil {
		return fmt.Errorf("received map: %w", err)
	}
	defer m.Close()
	var v uint64
	err = m.Lookup(u32(1), &v)
	fmt.Printf("lookup through the received descriptor: %s %d\n", errName(err), v)
	fmt.Printf("update through the received descriptor: %s\n", errName(m.Put(u32(2), u64(v+1))))
	own, err := ebpf.NewMap(&ebpf.MapSpec{Name: "passfd", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		return err
	}
	defer own.Close()
	if err := own.Put(u32(1), u64(99)); err != nil {
		return err
	}
	if _, _, err := c.WriteMsgUnix([]byte("map"), syscall.UnixRights(own.FD()), nil); err != nil {
		return err
	}
	// Wait for the peer to be done with it before the map goes.
	c.Read(buf)
	return nil
}

// runChurn creates and closes n maps, one at a time, then says "done"
// and waits for stdin to close: the test checks meanwhile that the daemon
// freed them, as the kernel frees a map at the close of its last fd.
func runChurn(n int) error {
	for i := 0; i < n; i++ {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
		if err != nil {
			return err
		}
		if err := m.Put(u32(1), u64(uint64(i))); err != nil {
			return err
		}
		m.Close()
	}
	fmt.Println("done")
	b := make([]byte, 1)
	for {
		if _, err := os.Stdin.Read(b); err != nil {
			return nil
		}
	}
}

// runLoop makes map and program calls until killed or until a call fails
// (as when the supervisor is gone: ENOSYS).
func runLoop() error {
	fmt.Printf("pid %d\n", os.Getpid())
	for i := 0; ; i++ {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 64})
		if err != nil {
			return err
		}
		for k := uint32(0); k < 16; k++ {
			if err := m.Put(u32(k), u64(uint64(i))); err != nil {
				return err
			}
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "MIT",
			Instructions: asm.Instructions{
				asm.LoadMapPtr(asm.R1, m.FD()),
				asm.Mov.Reg(asm.R2, asm.R10),
				asm.Add.Imm(asm.R2, -4),
				asm.StoreImm(asm.R10, -4, 3, asm.Word),
				asm.FnMapLookupElem.Call(),
				asm.Mov.Imm(asm.R0, 0),
				asm.Return(),
			}})
		if err != nil {
			return err
		}
		if _, _, err := p.Test(ethernet(0x0800, 64)); err != nil {
			return err
		}
		if i%2 == 0 { // leave every other pair open: exit must free them too
			p.Close()
			m.Close()
		}
	}
}

// runGarbage makes n bpf(2) calls with random commands (known and not),
// attrs of random bytes whose pointer-sized words are random, NULL,
// unmapped, misaligned or pointing at the edge of readable memory, random
// sizes (up to beyond a page) and random fds; then it checks that bpf(2)
// still works. It prints how many calls failed with each errno.
func runGarbage(n int, seed int64) error {
	rng := newRand(seed)
	// A readable page followed by one that is not: pointers at its end
	// make copies fault part way.
	mem, err := syscall.Mmap(-1, 0, 2*4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return err
	}
	if err := syscall.Mprotect(mem[4096:], syscall.PROT_NONE); err != nil {
		return err
	}
	base := uintptr(unsafe.Pointer(&mem[0]))
	pointers := []uintptr{0, 1, 0xdeadbeef000, 1 << 63, base, base + 1, base + 4090, base + 4095, base + 4096, base + 2048}
	errnos := map[syscall.Errno]int{}
	var fds []int
	for i := 0; i < n; i++ {
		for j := range mem[:4096] {
			mem[j] = byte(rng.next())
		}
		// Pointer-sized words of the attr (the attr lives in mem too).
		for off := 0; off+8 <= 256; off += 8 {
			if rng.next()%2 == 0 {
				binary.LittleEndian.PutUint64(mem[off:], uint64(pointers[rng.next()%uint64(len(pointers))]))
			}
		}
		// Small numbers where fds and sizes usually are.
		for off := 0; off+4 <= 64; off += 4 {
			if rng.next()%3 == 0 {
				binary.LittleEndian.PutUint32(mem[off:], uint32(rng.next()%16))
			}
		}
		cmd := uintptr(rng.next() % 40)
		attr := pointers[rng.next()%uint64(len(pointers))]
		if rng.next()%2 == 0 {
			attr = base + uintptr(rng.next()%64)
		}
		size := uintptr(rng.next() % 300)
		if rng.next()%10 == 0 {
			size = uintptr(rng.next() % 5000)
		}
		r, _, e := syscall.Syscall(sysBPF, cmd, attr, size)
		errnos[e]++
		if e == 0 && (cmd == 0 || cmd == 5 || cmd == 7 || cmd == 13 || cmd == 14) {
			fds = append(fds, int(r))
		}
	}
	for _, fd := range fds {
		syscall.Close(fd)
	}
	keys := make([]int, 0, len(errnos))
	for e := range errnos {
		keys = append(keys, int(e))
	}
	sort.Ints(keys)
	for _, e := range keys {
		fmt.Printf("errno %d: %d\n", e, errnos[syscall.Errno(e)])
	}
	// bpf(2) still answers.
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("after the garbage: %w", err)
	}
	defer m.Close()
	if err := m.Put(u32(0), u32(7)); err != nil {
		return fmt.Errorf("after the garbage: %w", err)
	}
	fmt.Println("still answering")
	return nil
}

// sysBPF is SYS_BPF on x86_64.
const sysBPF = 321

// rand is a splitmix64 generator (deterministic, no dependencies).
type rand struct{ s uint64 }

func newRand(seed int64) *rand { return &rand{uint64(seed)} }

func (r *rand) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// runInherited uses the maps bpfctl exec handed in (fds 3, 4, ... named
// by BPFD_FDNAMES) as it would use kernel map fds it inherited: info,
// lookup and update of key 1 through the fd, a program that reads key 1
// and one that writes it, each test-run, and a dup of the fd.
func runInherited() error {
	names := strings.Split(os.Getenv("BPFD_FDNAMES"), ":")
	if os.Getenv("BPFD_FDS") != fmt.Sprint(len(names)) {
		return fmt.Errorf("BPFD_FDS=%q does not match BPFD_FDNAMES=%q", os.Getenv("BPFD_FDS"), os.Getenv("BPFD_FDNAMES"))
	}
	for i, name := range names {
		m, err := ebpf.NewMapFromFD(3 + i)
		if err != nil {
			fmt.Printf("%s: open fd %d: %s\n", name, 3+i, errName(err))
			continue
		}
		info, err := m.Info()
		if err != nil {
			fmt.Printf("%s: info: %s\n", name, errName(err))
		} else {
			fmt.Printf("%s: type %s key %d value %d entries %d name %q\n", name, info.Type, info.KeySize,
				info.ValueSize, info.MaxEntries, info.Name)
		}
		var v uint64
		err = m.Lookup(u32(1), &v)
		fmt.Printf("%s: lookup 1: %s %d\n", name, errName(err), v)
		fmt.Printf("%s: update 1: %s\n", name, errName(m.Put(u32(1), u64(v+1))))

		reader, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "read_" + name, Type: ebpf.SocketFilter, License: "MIT",
			Instructions: asm.Instructions{
				asm.LoadMapPtr(asm.R1, m.FD()),
				asm.Mov.Reg(asm.R2, asm.R10),
				asm.Add.Imm(asm.R2, -4),
				asm.StoreImm(asm.R10, -4, 1, asm.Word),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "miss"),
				asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
				asm.Return(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("miss"),
				asm.Return(),
			}})
		if err != nil {
			fmt.Printf("%s: load a reader: %s\n", name, errName(err))
		} else {
			ret, _, err := reader.Test(ethernet(0x0800, 64))
			fmt.Printf("%s: reader returns: %s %d\n", name, errName(err), ret)
			reader.Close()
		}
		// key 1 = 1000, through bpf_map_update_elem.
		writer, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "write_" + name, Type: ebpf.SocketFilter, License: "MIT",
			Instructions: asm.Instructions{
				asm.StoreImm(asm.R10, -4, 1, asm.Word),
				asm.Mov.Imm(asm.R1, 1000),
				asm.StoreMem(asm.R10, -16, asm.R1, asm.DWord),
				asm.LoadMapPtr(asm.R1, m.FD()),
				asm.Mov.Reg(asm.R2, asm.R10),
				asm.Add.Imm(asm.R2, -4),
				asm.Mov.Reg(asm.R3, asm.R10),
				asm.Add.Imm(asm.R3, -16),
				asm.Mov.Imm(asm.R4, 0),
				asm.FnMapUpdateElem.Call(),
				asm.Return(),
			}})
		if err != nil {
			fmt.Printf("%s: load a writer: %s\n", name, errName(err))
		} else {
			ret, _, err := writer.Test(ethernet(0x0800, 64))
			fmt.Printf("%s: writer returns: %s %d\n", name, errName(err), ret)
			writer.Close()
		}
		d, err := m.Clone()
		if err != nil {
			fmt.Printf("%s: dup: %s\n", name, errName(err))
		} else {
			err = d.Lookup(u32(1), &v)
			fmt.Printf("%s: lookup 1 through a dup: %s %d\n", name, errName(err), v)
			d.Close()
		}
		m.Close()
	}
	return nil
}

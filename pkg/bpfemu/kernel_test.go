package bpfemu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/percpu"
)

// scenario drives raw bpf(2) calls, good and bad, through do and records
// what a caller observes: return values (fds only as "fd"), errnos, and
// the memory the kernel writes back. Run against the kernel and against
// the emulation, the two transcripts must be equal.
type scenario struct {
	do bpfFunc
	// modern: the kernel has the semantics of Linux 6.4 and later that
	// the emulation follows (a log level without a buffer, log_true_size).
	// Cases that differ before are left out on older kernels.
	modern bool
	out    []string
	fds    []int
	keep   [][]byte
}

func (s *scenario) buf(n int) []byte {
	b := make([]byte, n)
	s.keep = append(s.keep, b)
	return b
}

func (s *scenario) attr() []byte { return s.buf(256) }

func (s *scenario) logf(format string, args ...any) {
	s.out = append(s.out, fmt.Sprintf(format, args...))
}

// call records "name: ret" or "name: errno".
func (s *scenario) call(name string, cmd int, a []byte, size int) (int, unix.Errno) {
	r, e := s.do(cmd, a, size)
	switch {
	case e != 0:
		s.logf("%s: %s", name, errnoName(e))
	case cmd == cmdMapCreate || cmd == cmdProgLoad || cmd == cmdObjGet || cmd == cmdMapGetFDByID || cmd == cmdProgGetFDByID:
		s.fds = append(s.fds, r)
		s.logf("%s: fd", name)
	default:
		s.logf("%s: %d", name, r)
	}
	return r, e
}

func errnoName(e unix.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

func (s *scenario) close() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
}

func (s *scenario) mapCreate(name string, typ, ks, vs, n, flags uint32) int {
	a := s.attr()
	put32(a, mcMapType, typ)
	put32(a, mcKeySize, ks)
	put32(a, mcValueSize, vs)
	put32(a, mcMaxEntries, n)
	put32(a, mcMapFlags, flags)
	fd, _ := s.call(name, cmdMapCreate, a, 128)
	return fd
}

func (s *scenario) elem(name string, cmd, fd int, key, value []byte, flags uint64) unix.Errno {
	a := s.attr()
	put32(a, elMapFD, uint32(fd))
	put64(a, elKey, addr(key))
	put64(a, elValue, addr(value))
	put64(a, elFlags, flags)
	_, e := s.call(name, cmd, a, 32)
	return e
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// progLoad loads insns (raw) as type typ with a log of logSize bytes at
// level, and records the log's shape: whether it is NUL-terminated within
// the buffer and whether log_true_size exceeds the buffer.
func (s *scenario) progLoad(name string, typ uint32, insns []byte, level, logSize uint32) int {
	a := s.attr()
	ins := s.buf(len(insns))
	copy(ins, insns)
	lic := s.buf(8)
	copy(lic, "GPL")
	put32(a, plProgType, typ)
	put32(a, plInsnCnt, uint32(len(insns)/8))
	put64(a, plInsns, addr(ins))
	put64(a, plLicense, addr(lic))
	var log []byte
	if logSize > 0 {
		log = s.buf(int(logSize))
		for i := range log {
			log[i] = 0xff
		}
		put64(a, plLogBuf, addr(log))
	}
	put32(a, plLogLevel, level)
	put32(a, plLogSize, logSize)
	fd, e := s.call(name, cmdProgLoad, a, plEnd)
	trueSize := get32(a, plLogTrueSize)
	if level != 0 && s.modern {
		nul := bytes.IndexByte(log, 0)
		s.logf("  log: true size > 1 %v, cut %v, NUL-terminated %v", trueSize > 1,
			trueSize > logSize && logSize > 0, logSize == 0 || (nul >= 0 && (trueSize > logSize) == (nul == int(logSize)-1)))
	}
	if e != 0 {
		return -1
	}
	return fd
}

// Instructions.
var (
	insRet0  = []byte{0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}    // r0 = 0; exit
	insLen   = []byte{0x61, 0x10, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0} // r0 = *(u32 *)(r1 + 0); exit
	insBad   = []byte{0x95, 0, 0, 0, 0, 0, 0, 0}                               // exit with r0 unset
	insXDP   = []byte{0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}    // r0 = XDP_PASS; exit
	insStack = []byte{0x79, 0xa0, 8, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0} // r0 = *(u64 *)(r10 + 8): out of the stack
)

// mapRef returns r1 = map (fd) ; r0 = 0 ; exit.
func mapRef(fd int) []byte {
	return []byte{0x18, 0x11, 0, 0, byte(fd), byte(fd >> 8), byte(fd >> 16), byte(fd >> 24),
		0, 0, 0, 0, 0, 0, 0, 0,
		0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}
}

func (s *scenario) run() {
	// The syscall's own checks.
	a := s.attr()
	s.call("unknown command", 999, a, 64)
	s.call("attr beyond a page", cmdMapCreate, s.buf(4200), 4097)
	big := s.buf(400)
	big[300] = 1
	s.call("non-zero tail beyond union bpf_attr", cmdMapCreate, big, 400)
	s.call("attr at NULL", cmdMapCreate, nil, 64)
	s.call("size 0, NULL attr, unknown command", 999, nil, 0)

	// BPF_MAP_CREATE.
	h := s.mapCreate("hash", mapHash, 4, 8, 8, 0)
	arr := s.mapCreate("array", mapArray, 4, 4, 4, 0)
	s.mapCreate("hash key 0", mapHash, 0, 8, 8, 0)
	s.mapCreate("array key 8", mapArray, 8, 4, 4, 0)
	s.mapCreate("unknown type", 9999, 4, 4, 4, 0)
	s.mapCreate("rdonly|wronly", mapHash, 4, 4, 4, bpfFRdonly|bpfFWronly)
	s.mapCreate("unknown flag", mapHash, 4, 4, 4, 1<<30)
	a = s.attr()
	put32(a, mcMapType, mapHash)
	put32(a, mcKeySize, 4)
	put32(a, mcValueSize, 4)
	put32(a, mcMaxEntries, 4)
	copy(a[mcMapName:], "bad-name")
	s.call("bad name", cmdMapCreate, a, 128)
	a[mcMapName+3] = '_'
	a[120] = 1
	s.call("byte after the last field", cmdMapCreate, a, 128)
	ro := s.mapCreate("rdonly hash", mapHash, 4, 4, 4, bpfFRdonly)
	wo := s.mapCreate("wronly hash", mapHash, 4, 4, 4, bpfFWronly)

	// Elements.
	k1, k2, k9 := le32(1), le32(2), le32(9)
	v := s.buf(8)
	copy(v, le64(10))
	s.elem("update 1", cmdMapUpdateElem, h, k1, v, 0)
	s.elem("update 1 noexist", cmdMapUpdateElem, h, k1, v, 1)
	s.elem("update 2 exist", cmdMapUpdateElem, h, k2, v, 2)
	s.elem("update flags 3", cmdMapUpdateElem, h, k2, v, 3)
	s.elem("update F_LOCK", cmdMapUpdateElem, h, k2, v, bpfFLock)
	s.elem("update key NULL", cmdMapUpdateElem, h, nil, v, 0)
	s.elem("update value NULL", cmdMapUpdateElem, h, k2, nil, 0)
	out := s.buf(8)
	s.elem("lookup 1", cmdMapLookupElem, h, k1, out, 0)
	s.logf("  value %x", out)
	s.elem("lookup 2", cmdMapLookupElem, h, k2, out, 0)
	s.elem("lookup flags 1", cmdMapLookupElem, h, k1, out, 1)
	s.elem("lookup key NULL", cmdMapLookupElem, h, nil, out, 0)
	s.elem("lookup value NULL", cmdMapLookupElem, h, k1, nil, 0)
	s.elem("lookup fd -1", cmdMapLookupElem, -1, k1, out, 0)
	s.elem("lookup fd 1000", cmdMapLookupElem, 1000, k1, out, 0)
	efd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
	s.fds = append(s.fds, efd)
	s.elem("lookup eventfd", cmdMapLookupElem, efd, k1, out, 0)
	s.elem("lookup through wronly", cmdMapLookupElem, wo, k1, out, 0)
	s.elem("update through rdonly", cmdMapUpdateElem, ro, k1, le32(1), 0)
	next := s.buf(4)
	s.elem("next key of NULL", cmdMapGetNextKey, h, nil, next, 0)
	s.logf("  next %x", next)
	s.elem("next key of 9", cmdMapGetNextKey, h, k9, next, 0)
	s.elem("next key of 1", cmdMapGetNextKey, h, k1, next, 0)
	s.elem("next key out NULL", cmdMapGetNextKey, h, nil, nil, 0)
	s.elem("next key flags", cmdMapGetNextKey, h, k1, next, 1)
	s.elem("update 2", cmdMapUpdateElem, h, k2, v, 0)
	s.elem("lookup-and-delete 2", cmdMapLookupAndDeleteElem, h, k2, out, 0)
	s.elem("lookup-and-delete 2 again", cmdMapLookupAndDeleteElem, h, k2, out, 0)
	s.elem("delete 1", cmdMapDeleteElem, h, k1, nil, 0)
	s.elem("delete 1 again", cmdMapDeleteElem, h, k1, nil, 0)
	s.elem("array update 3", cmdMapUpdateElem, arr, le32(3), le32(33), 0)
	s.elem("array update 4", cmdMapUpdateElem, arr, le32(4), le32(44), 0)
	s.elem("array delete", cmdMapDeleteElem, arr, le32(3), nil, 0)
	s.elem("array lookup-and-delete", cmdMapLookupAndDeleteElem, arr, le32(3), out, 0)
	out4 := s.buf(4)
	s.elem("array lookup 3", cmdMapLookupElem, arr, le32(3), out4, 0)
	s.logf("  value %x", out4)

	// Batches.
	keys, vals := s.buf(4*5), s.buf(8*5)
	for i := 0; i < 5; i++ {
		put32(keys, 4*i, uint32(100+i))
		put64(vals, 8*i, uint64(i))
	}
	batch := func(name string, cmd, fd int, in []byte, outb, ks, vs []byte, count uint32, elemFlags uint64) {
		a := s.attr()
		put64(a, btInBatch, addr(in))
		put64(a, btOutBatch, addr(outb))
		put64(a, btKeys, addr(ks))
		put64(a, btValues, addr(vs))
		put32(a, btCount, count)
		put32(a, btMapFD, uint32(fd))
		put64(a, btElemFlags, elemFlags)
		s.call(name, cmd, a, btEnd)
		s.logf("  count %d", get32(a, btCount))
	}
	batch("update batch", cmdMapUpdateBatch, h, nil, nil, keys, vals, 5, 0)
	batch("update batch count 0", cmdMapUpdateBatch, h, nil, nil, keys, vals, 0, 0)
	batch("update batch F_LOCK", cmdMapUpdateBatch, h, nil, nil, keys, vals, 1, bpfFLock)
	batch("update batch keys NULL", cmdMapUpdateBatch, h, nil, nil, nil, vals, 2, 0)
	gotK, gotV, cur := s.buf(4*8), s.buf(8*8), s.buf(4)
	batch("lookup batch", cmdMapLookupBatch, h, nil, cur, gotK, gotV, 8, 0)
	batch("lookup batch F_LOCK|8", cmdMapLookupBatch, h, nil, cur, gotK, gotV, 8, 8)
	batch("lookup batch through wronly", cmdMapLookupBatch, wo, nil, cur, gotK, gotV, 8, 0)
	batch("delete batch 2", cmdMapDeleteBatch, h, nil, nil, keys, nil, 2, 0)
	batch("delete batch again", cmdMapDeleteBatch, h, nil, nil, keys, nil, 2, 0)
	batch("lookup-and-delete batch", cmdMapLookupAndDeleteBatch, h, nil, cur, gotK, gotV, 8, 0)
	batch("array delete batch", cmdMapDeleteBatch, arr, nil, nil, le32(0), nil, 1, 0)
	aK, aV, aCur := s.buf(4*4), s.buf(4*4), s.buf(4)
	batch("array lookup batch 2", cmdMapLookupBatch, arr, nil, aCur, aK, aV, 2, 0)
	s.logf("  keys %x values %x cursor %x", aK[:8], aV[:8], aCur)
	batch("array lookup batch resume", cmdMapLookupBatch, arr, aCur, aCur, aK, aV, 4, 0)
	s.logf("  keys %x values %x cursor %x", aK[:8], aV[:8], aCur)

	// Per-CPU maps: one value per possible CPU, each padded to 8 bytes.
	slots := percpu.Possible()
	pch := s.mapCreate("percpu hash", mapPerCPUHash, 4, 4, 4, 0)
	pca := s.mapCreate("percpu array", mapPerCPUArray, 4, 12, 2, 0)
	pv := s.buf(8 * slots)
	for i := range pv {
		pv[i] = byte(i + 1)
	}
	s.elem("percpu hash update", cmdMapUpdateElem, pch, k1, pv, 0)
	pout := s.buf(8 * slots)
	s.elem("percpu hash lookup", cmdMapLookupElem, pch, k1, pout, 0)
	s.logf("  value %x", pout)
	pv16 := s.buf(16 * slots)
	for i := range pv16 {
		pv16[i] = byte(100 + i)
	}
	s.elem("percpu array update", cmdMapUpdateElem, pca, le32(1), pv16, 0)
	pout16 := s.buf(16 * slots)
	s.elem("percpu array lookup", cmdMapLookupElem, pca, le32(1), pout16, 0)
	s.logf("  value %x", pout16)
	s.elem("percpu array lookup 0", cmdMapLookupElem, pca, le32(0), pout16, 0)
	s.logf("  value %x", pout16)
	pk, pvals, pcur := s.buf(4*4), s.buf(8*slots*4), s.buf(4)
	batch("percpu hash lookup batch", cmdMapLookupBatch, pch, nil, pcur, pk, pvals, 4, 0)
	s.logf("  keys %x values %x", pk[:4], pvals[:8*slots])

	// LRU hash: the least recently used element makes room.
	lru := s.mapCreate("lru hash", mapLRUHash, 4, 8, 4, 0)
	for i := uint32(0); i < 10; i++ {
		s.elem(fmt.Sprintf("lru update %d", i), cmdMapUpdateElem, lru, le32(i), le64(uint64(i)), 0)
	}
	s.elem("lru lookup 9 (the newest)", cmdMapLookupElem, lru, le32(9), out, 0)
	s.logf("  value %x", out)
	// Which older keys were evicted depends on the CPUs the updates ran
	// on (the kernel's per-CPU free lists; bpfd's CPU slots): record only
	// that the map stayed within its 4 entries.
	older := 0
	for i := uint32(0); i < 9; i++ {
		a := s.attr()
		put32(a, elMapFD, uint32(lru))
		put64(a, elKey, addr(le32(i)))
		put64(a, elValue, addr(out))
		if _, e := s.do(cmdMapLookupElem, a, 32); e == 0 {
			older++
		}
	}
	s.logf("lru: at most 3 of the 9 older keys remain: %v", older <= 3)
	s.elem("lru update noexist 9", cmdMapUpdateElem, lru, le32(9), le64(1), 1)

	// LPM trie: longest prefix match on {prefixlen u32, data[4]}.
	lpm := s.mapCreate("lpm trie", mapLPMTrie, 8, 4, 8, mapFNoPrealloc)
	s.mapCreate("lpm trie preallocated", mapLPMTrie, 8, 4, 8, 0)
	pfx := func(bits uint32, a, b, c, d byte) []byte {
		k := s.buf(8)
		put32(k, 0, bits)
		k[4], k[5], k[6], k[7] = a, b, c, d
		return k
	}
	s.elem("lpm update 10/8", cmdMapUpdateElem, lpm, pfx(8, 10, 0, 0, 0), le32(8), 0)
	s.elem("lpm update 10.1/16", cmdMapUpdateElem, lpm, pfx(16, 10, 1, 0, 0), le32(16), 0)
	s.elem("lpm update /33", cmdMapUpdateElem, lpm, pfx(33, 10, 1, 0, 0), le32(1), 0)
	for _, k := range [][]byte{pfx(32, 10, 1, 2, 3), pfx(32, 10, 2, 3, 4), pfx(32, 11, 0, 0, 1), pfx(12, 10, 1, 0, 0)} {
		out4 := s.buf(4)
		s.elem(fmt.Sprintf("lpm lookup %d/%d", k[4], get32(k, 0)), cmdMapLookupElem, lpm, k, out4, 0)
		s.logf("  value %x", out4)
	}
	nk := s.buf(8)
	s.elem("lpm next key of NULL", cmdMapGetNextKey, lpm, nil, nk, 0)
	s.logf("  next %x", nk)
	s.elem("lpm delete 10/8", cmdMapDeleteElem, lpm, pfx(8, 10, 0, 0, 0), nil, 0)
	s.elem("lpm delete 10/8 again", cmdMapDeleteElem, lpm, pfx(8, 10, 0, 0, 0), nil, 0)

	// Queue and stack: no keys; push, peek, pop.
	for _, qs := range []struct {
		name string
		typ  uint32
	}{{"queue", mapQueue}, {"stack", mapStack}} {
		q := s.mapCreate(qs.name, qs.typ, 0, 4, 3, 0)
		s.mapCreate(qs.name+" with a key", qs.typ, 4, 4, 3, 0)
		for i := uint32(1); i <= 4; i++ {
			s.elem(fmt.Sprintf("%s push %d", qs.name, i), cmdMapUpdateElem, q, nil, le32(i), 0)
		}
		s.elem(qs.name+" push 5 over the oldest", cmdMapUpdateElem, q, nil, le32(5), 2)
		s.elem(qs.name+" push with a key", cmdMapUpdateElem, q, le32(1), le32(6), 0)
		o4 := s.buf(4)
		s.elem(qs.name+" peek", cmdMapLookupElem, q, nil, o4, 0)
		s.logf("  value %x", o4)
		for i := 0; i < 4; i++ {
			s.elem(qs.name+" pop", cmdMapLookupAndDeleteElem, q, nil, o4, 0)
			s.logf("  value %x", o4)
		}
		s.elem(qs.name+" delete", cmdMapDeleteElem, q, nil, nil, 0)
		s.elem(qs.name+" next key", cmdMapGetNextKey, q, nil, s.buf(4), 0)
	}

	// Bloom filter: the value is the lookup's input.
	bf := s.mapCreate("bloom filter", mapBloomFilter, 0, 4, 64, 0)
	for _, v := range []uint32{0xdead, 0xbeef} {
		s.elem(fmt.Sprintf("bloom push %#x", v), cmdMapUpdateElem, bf, nil, le32(v), 0)
	}
	s.elem("bloom lookup 0xdead", cmdMapLookupElem, bf, nil, le32(0xdead), 0)
	s.elem("bloom lookup 0x1234567", cmdMapLookupElem, bf, nil, le32(0x1234567), 0)
	s.elem("bloom delete", cmdMapDeleteElem, bf, nil, nil, 0)

	// Freeze.
	a = s.attr()
	put32(a, elMapFD, uint32(arr))
	s.call("freeze", cmdMapFreeze, a, 4)
	s.call("freeze again", cmdMapFreeze, a, 4)
	s.elem("update frozen", cmdMapUpdateElem, arr, le32(0), le32(1), 0)

	// BPF_PROG_LOAD.
	p := s.progLoad("socket filter", 1, insLen, 0, 0)
	xp := s.progLoad("xdp", 6, insXDP, 0, 0)
	if s.modern {
		s.progLoad("log level 1, no buffer", 1, insRet0, 1, 0)
	}
	s.progLoad("unsafe, log 4096", 1, insBad, 1, 4096)
	s.progLoad("unsafe, log 16", 1, insBad, 1, 16)
	s.progLoad("unsafe, log 16 fixed", 1, insBad, 1|bpfLogFixed, 16)
	s.progLoad("out of the stack", 1, insStack, 0, 0)
	s.progLoad("map reference", 1, mapRef(h), 0, 0)
	s.progLoad("map reference to a closed fd", 1, mapRef(1000), 0, 0)
	s.progLoad("map reference to an eventfd", 1, mapRef(efd), 0, 0)
	s.progLoad("unknown type", 9999, insRet0, 0, 0)
	a = s.attr()
	put32(a, plProgType, 1)
	s.call("no instructions", cmdProgLoad, a, plEnd)
	put32(a, plInsnCnt, 2)
	s.call("instructions NULL", cmdProgLoad, a, plEnd)
	ins := s.buf(16)
	copy(ins, insRet0)
	put64(a, plInsns, addr(ins))
	s.call("license NULL", cmdProgLoad, a, plEnd)
	lic := s.buf(4)
	copy(lic, "GPL")
	put64(a, plLicense, addr(lic))
	put32(a, plLogLevel, 0)
	put32(a, plLogSize, 100)
	put64(a, plLogBuf, addr(s.buf(100)))
	s.call("log buffer without level", cmdProgLoad, a, plEnd)
	put32(a, plLogLevel, 16)
	s.call("log level 16", cmdProgLoad, a, plEnd)
	put32(a, plLogLevel, 0)
	put32(a, plLogSize, 0)
	put64(a, plLogBuf, 0)
	put32(a, plProgFlags, 1<<20)
	s.call("unknown prog flag", cmdProgLoad, a, plEnd)
	put32(a, plProgFlags, 0)
	copy(a[plProgName:], "bad name")
	s.call("bad name", cmdProgLoad, a, plEnd)

	// BPF_PROG_TEST_RUN.
	run := func(name string, fd int, data []byte, dataOut []byte, sizeOut uint32, ctxIn []byte, ctxOutSize uint32, repeat, flags, cpu uint32) {
		a := s.attr()
		put32(a, trProgFD, uint32(fd))
		put32(a, trDataSizeIn, uint32(len(data)))
		put64(a, trDataIn, addr(data))
		put32(a, trDataSizeOut, sizeOut)
		put64(a, trDataOut, addr(dataOut))
		put32(a, trRepeat, repeat)
		put32(a, trCtxSizeIn, uint32(len(ctxIn)))
		put64(a, trCtxIn, addr(ctxIn))
		if ctxOutSize > 0 {
			put32(a, trCtxSizeOut, ctxOutSize)
			put64(a, trCtxOut, addr(s.buf(int(ctxOutSize))))
		}
		put32(a, trFlags, flags)
		put32(a, trCPU, cpu)
		_, e := s.call(name, cmdProgTestRun, a, trEnd)
		if e == 0 || e == unix.ENOSPC {
			s.logf("  retval %d data_size_out %d ctx_size_out %d", get32(a, trRetval), get32(a, trDataSizeOut), get32(a, trCtxSizeOut))
		}
	}
	pkt := s.buf(60)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	pkt[12], pkt[13] = 0x86, 0xdd
	dout := s.buf(64)
	run("run", p, pkt, dout, uint32(len(dout)), nil, 0, 1, 0, 0)
	s.logf("  data out equal %v", bytes.Equal(dout[14:60], pkt[14:60]))
	run("run data_size_out 0", p, pkt, dout, 0, nil, 0, 1, 0, 0)
	run("run data_size_out 10", p, pkt, dout, 10, nil, 0, 1, 0, 0)
	run("run no data out", p, pkt, nil, 0, nil, 0, 1, 0, 0)
	run("run repeat 10", p, pkt, nil, 0, nil, 0, 10, 0, 0)
	run("run 10 bytes", p, pkt[:10], nil, 0, nil, 0, 1, 0, 0)
	run("run flags 0x100", p, pkt, nil, 0, nil, 0, 1, 0x100, 0)
	run("run cpu 1", p, pkt, nil, 0, nil, 0, 1, 0, 1)
	run("run xdp", xp, pkt, dout, uint32(len(dout)), nil, 0, 1, 0, 0)
	s.logf("  data out equal %v", bytes.Equal(dout[:60], pkt))
	run("run a map", h, pkt, nil, 0, nil, 0, 1, 0, 0)
	a = s.attr()
	put32(a, trProgFD, uint32(p))
	put32(a, trCtxSizeIn, 4)
	s.call("run ctx size without ctx", cmdProgTestRun, a, trEnd)
	a = s.attr()
	put32(a, trProgFD, uint32(p))
	put32(a, trDataSizeIn, 60)
	s.call("run data NULL", cmdProgTestRun, a, trEnd)

	// BPF_OBJ_GET_INFO_BY_FD.
	info := func(name string, fd int, n int, tail bool) []byte {
		b := s.buf(n + 16)
		if tail {
			b[n-1] = 1
		}
		a := s.attr()
		put32(a, inBPFFD, uint32(fd))
		put32(a, inInfoLen, uint32(n))
		put64(a, inInfo, addr(b))
		_, e := s.call(name, cmdObjGetInfoByFD, a, inEnd)
		if e == 0 {
			// info_len depends on the kernel version beyond the fields
			// every version has; report it only up to those.
			s.logf("  info_len %d", min(get32(a, inInfoLen), 80))
		}
		return b
	}
	mi := info("map info", h, 80, false)
	s.logf("  type %d key %d value %d max %d flags %#x name %q", get32(mi, 0), get32(mi, 8), get32(mi, 12),
		get32(mi, 16), get32(mi, 20), strings.TrimRight(string(mi[24:40]), "\x00"))
	info("map info 16 bytes", h, 16, false)
	info("map info 0 bytes", h, 0, false)
	info("map info, non-zero tail", h, 2048, true)
	info("map info 120 bytes", h, 120, false)
	info("map info 5000 bytes", h, 5000, false)
	info("info of a closed fd", 1000, 80, false)
	info("info of an eventfd", efd, 80, false)
	pi := info("prog info", p, 80, false)
	s.logf("  type %d name %q", get32(pi, 0), strings.TrimRight(string(pi[64:80]), "\x00"))
	a = s.attr()
	put32(a, inBPFFD, uint32(h))
	put32(a, inInfoLen, 80)
	s.call("info NULL", cmdObjGetInfoByFD, a, inEnd)

	// BPF_OBJ_PIN / BPF_OBJ_GET outside any bpffs.
	path := s.buf(64)
	copy(path, "/nonexistent-dir/pin")
	a = s.attr()
	put64(a, obPathname, addr(path))
	put32(a, obBPFFD, uint32(h))
	s.call("pin outside bpffs, missing dir", cmdObjPin, a, obEnd)
	copy(path, "/tmp\x00")
	s.call("pin at an existing path", cmdObjPin, a, obEnd)
	put32(a, obBPFFD, 0)
	s.call("get a non-bpffs file", cmdObjGet, a, obEnd)
	put32(a, obFileFlags, bpfFRdonly|bpfFWronly)
	s.call("get rdonly|wronly", cmdObjGet, a, obEnd)
}

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi)
	return ma > major || ma == major && mi >= minor
}

// TestKernelDifferential runs the same raw bpf(2) calls, valid and
// invalid (bad pointers, sizes, flags, fds, attr tails), against the
// kernel and against the emulation in bpfd, and compares everything a
// caller observes.
func TestKernelDifferential(t *testing.T) {
	requireKernelBPF(t)
	h := newHarness(t)

	modern := kernelAtLeast(t, 6, 4)
	k := &scenario{do: kernelBPF, modern: modern}
	k.run()
	k.close()
	e := &scenario{do: h.bpf, modern: modern}
	e.run()
	e.close()
	for i := 0; i < max(len(k.out), len(e.out)); i++ {
		var kl, el string
		if i < len(k.out) {
			kl = k.out[i]
		}
		if i < len(e.out) {
			el = e.out[i]
		}
		if kl != el {
			t.Errorf("kernel: %s\n           bpfd:   %s", kl, el)
		}
	}
	if t.Failed() {
		t.Logf("kernel transcript:\n%s", strings.Join(k.out, "\n"))
	}
}

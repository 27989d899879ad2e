package bpfemu

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/wire"
)

// testBTF is raw BTF with a 4-byte int (type 1) and an 8-byte struct of
// two of them (type 2).
func testBTF(t *testing.T) []byte {
	t.Helper()
	b, err := btf.NewBuilder([]btf.Type{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	if _, err := b.Add(i); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Add(&btf.Struct{Name: "pair", Size: 8, Members: []btf.Member{
		{Name: "a", Type: i}, {Name: "b", Type: i, Offset: 32}}}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// btfSteps makes the same BTF calls through call (the kernel's bpf(2) or
// the emulation) and returns a transcript of their results: loads of good
// and bad blobs, maps created with type ids that fit or do not, the BTF
// id a map reports, and the BTF's info.
func btfSteps(t *testing.T, call bpfFunc, raw []byte) (transcript []string, btfFD, mapFD int, btfID uint32) {
	say := func(name string, e unix.Errno) { transcript = append(transcript, name+": "+errnoName(e)) }
	load := func(blob []byte, size uint32, ptr uint64) (int, unix.Errno) {
		a := make([]byte, blEnd)
		put64(a, blBTF, ptr)
		put32(a, blBTFSize, size)
		return call(cmdBTFLoad, a, blEnd)
	}
	_, e := load(nil, 64, 8)
	say("load from a bad pointer", e)
	_, e = load(nil, 17<<20, addr(raw))
	say("load more than 16 MiB", e)
	junk := bytes.Repeat([]byte{0x55}, 64)
	_, e = load(junk, 64, addr(junk))
	say("load junk", e)
	a := make([]byte, blEnd)
	put64(a, blBTF, addr(raw))
	put32(a, blBTFSize, uint32(len(raw)))
	put32(a, blBTFFlags, 1)
	_, e = call(cmdBTFLoad, a, blEnd)
	say("load with an unknown flag", e)
	btfFD, e = load(raw, uint32(len(raw)), addr(raw))
	say("load", e)
	if e != 0 {
		return
	}
	create := func(btf int, key, value uint32) (int, unix.Errno) {
		a := make([]byte, 128)
		put32(a, mcMapType, mapHash)
		put32(a, mcKeySize, 4)
		put32(a, mcValueSize, 8)
		put32(a, mcMaxEntries, 4)
		put32(a, mcBTFFD, uint32(btf))
		put32(a, mcBTFKeyTypeID, key)
		put32(a, mcBTFValueTypeID, value)
		return call(cmdMapCreate, a, 128)
	}
	_, e = create(btfFD, 2, 2)
	say("map with a key type of the wrong size", e)
	_, e = create(btfFD, 1, 9)
	say("map with a missing value type", e)
	_, e = create(btfFD, 1, 0)
	say("map with a key type and no value type", e)
	_, e = create(0x7fff, 1, 2)
	say("map with a BTF fd that is not open", e)
	mapFD, e = create(btfFD, 1, 2)
	say("map with key int and value pair", e)
	if e != 0 {
		return
	}
	info := make([]byte, mapInfoSize)
	ia := make([]byte, inEnd)
	put32(ia, inBPFFD, uint32(mapFD))
	put32(ia, inInfoLen, mapInfoSize)
	put64(ia, inInfo, addr(info))
	_, e = call(cmdObjGetInfoByFD, ia, inEnd)
	say("map info", e)
	btfID = get32(info, miBTFID)
	transcript = append(transcript, "map key and value type ids: "+itoa(uint64(get32(info, miBTFKeyTypeID)))+
		" "+itoa(uint64(get32(info, miBTFValueTypeID))))
	transcript = append(transcript, btfInfoLine(call, btfFD, btfID, raw))
	return
}

// btfInfoLine describes OBJ_GET_INFO_BY_FD of a BTF fd: its size, whether
// its id is want and its content raw.
func btfInfoLine(call bpfFunc, fd int, want uint32, raw []byte) string {
	info := make([]byte, btfInfoSize)
	got := make([]byte, len(raw)+16)
	put64(info, biBTF, addr(got))
	put32(info, biBTFSize, uint32(len(got)))
	ia := make([]byte, inEnd)
	put32(ia, inBPFFD, uint32(fd))
	put32(ia, inInfoLen, btfInfoSize)
	put64(ia, inInfo, addr(info))
	if _, e := call(cmdObjGetInfoByFD, ia, inEnd); e != 0 {
		return "btf info: " + errnoName(e)
	}
	return "btf info: size " + itoa(uint64(get32(info, biBTFSize))) + " id matches " +
		boolStr(get32(info, biID) == want) + " content " + boolStr(bytes.Equal(got[:len(raw)], raw))
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestBTF: BPF_BTF_LOAD, maps created with BTF and the BTF's info give
// the kernel's results; a BTF no traced process holds any more is
// reopened by its id through the map created with it.
func TestBTF(t *testing.T) {
	requireKernelBPF(t)
	raw := testBTF(t)
	kt, kbtf, kmap, _ := btfSteps(t, kernelBPF, raw)
	if kbtf > 0 {
		unix.Close(kbtf)
	}
	if kmap > 0 {
		unix.Close(kmap)
	}
	h := newHarness(t)
	defer h.closeInstalled()
	et, ebtf, emap, id := btfSteps(t, h.bpf, raw)
	t.Logf("kernel transcript: %q", kt)
	if len(kt) != len(et) || len(et) < 12 {
		t.Fatalf("transcripts differ:\nkernel: %q\nbpfd:   %q", kt, et)
	}
	for i := range kt {
		if kt[i] != et[i] {
			t.Errorf("kernel: %s\nbpfd:   %s", kt[i], et[i])
		}
	}

	// The BTF fd closed and collected: BTF_GET_FD_BY_ID still finds it
	// through the map, with the same id and content.
	h.closeFD(ebtf)
	h.forget(wire.ObjBTF)
	a := make([]byte, idFDEnd)
	put32(a, idStartID, id)
	fd, e := h.bpf(cmdBTFGetFDByID, a, idFDEnd)
	if e != 0 {
		for _, o := range h.s.objects(wire.ObjMap) {
			t.Logf("held map %d btf %d", o.info.ID, o.info.BTFID)
		}
		t.Fatalf("BTF_GET_FD_BY_ID of the map's BTF %d after its fd closed: %v", id, e)
	}
	if got, want := btfInfoLine(h.bpf, fd, id, raw), "btf info: size "+itoa(uint64(len(raw)))+" id matches true content true"; got != want {
		t.Errorf("reopened by id: %s, want %s", got, want)
	}
	h.closeFD(fd)
	h.closeFD(emap)
	h.forget(wire.ObjBTF)
	h.forget(wire.ObjMap)
	put32(a, idStartID, id)
	if _, e := h.bpf(cmdBTFGetFDByID, a, idFDEnd); e != unix.ENOENT {
		t.Errorf("BTF_GET_FD_BY_ID once nothing holds it: %v, want ENOENT", e)
	}
}

// closeFD closes one fd the stand-in answerer installed.
func (h *harness) closeFD(fd int) {
	h.ans.mu.Lock()
	for i, f := range h.ans.fds {
		if f == fd {
			h.ans.fds = append(h.ans.fds[:i], h.ans.fds[i+1:]...)
			break
		}
	}
	h.ans.mu.Unlock()
	unix.Close(fd)
}

// forget drops the supervisor's objects of kind as collect drops those no
// traced task holds (collect itself cannot tell here: the "task" is the
// supervisor's own process, which holds every copy).
func (h *harness) forget(kind wire.ObjType) {
	t := &h.s.tab
	var victims []*object
	t.mu.Lock()
	for ino, o := range t.byIno {
		if o.info.ObjType == kind {
			delete(t.byIno, ino)
			victims = append(victims, o)
		}
	}
	for k, o := range t.byFD {
		if o.info.ObjType == kind {
			delete(t.byFD, k)
		}
	}
	t.mu.Unlock()
	for _, o := range victims {
		h.s.drop(o)
	}
}

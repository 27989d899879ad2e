package prog

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
)

// The helper memory audit (issue 9, "modes are confidentiality too").
//
// Every helper bpfd implements is listed in helperAudit with the program
// memory it reads or writes on the program's behalf. The test then calls
// each helper directly, bypassing the verifier (which already refuses
// typed pointer arguments into memory of the wrong mode), with every
// memory argument pointing into a region the program may not read (for
// reads) or may not write (for writes), and requires that the helper
// either fails with the interpreter's ErrWriteOnly / ErrReadOnly fault or
// (for helpers that report unreadable memory in their result, like
// trace_printk's %s) that nothing it returns or emits depends on the
// forbidden bytes. A helper listed as touching no program memory is
// called with every argument pointing into a no-access region and must
// not trip an access check.
//
// A helper added to helperTable without a row here fails
// TestHelperMemoryAudit: whoever adds a helper audits it.

// auditArg is one memory argument of a helper.
type auditArg struct {
	reg   int  // 1..5: r1..r5
	write bool // the helper writes the memory (else reads it)
	// size is the byte count the probe passes in sizeReg (0: the helper
	// takes its size from elsewhere, e.g. a map's key size).
	size, sizeReg int
	// leaky: the helper reports unreadable memory in its result rather
	// than faulting; the probe compares results across two secrets.
	leaky bool
}

type auditRow struct {
	memory string // what the audit found, for the listing
	args   []auditArg
	// setup gives the other arguments benign values (h's readable and
	// writable scratch memory, map pointers).
	setup func(h *auditHarness, regs *[5]uint64)
}

var helperAudit = map[int32]auditRow{
	HelperMapLookupElem: {memory: "reads the key (r2, key_size bytes)",
		args:  []auditArg{{reg: 2}},
		setup: func(h *auditHarness, r *[5]uint64) { r[0] = h.hashPtr }},
	HelperMapUpdateElem: {memory: "reads the key (r2) and the value (r3, value_size bytes)",
		args:  []auditArg{{reg: 2}, {reg: 3}},
		setup: func(h *auditHarness, r *[5]uint64) { r[0], r[1], r[2] = h.hashPtr, h.rw, h.rw }},
	HelperMapDeleteElem: {memory: "reads the key (r2)",
		args:  []auditArg{{reg: 2}},
		setup: func(h *auditHarness, r *[5]uint64) { r[0] = h.hashPtr }},
	HelperKtimeGetNs:        {memory: "none"},
	HelperKtimeGetBootNs:    {memory: "none"},
	HelperGetPrandomU32:     {memory: "none"},
	HelperGetSmpProcessorID: {memory: "none"},
	HelperGetCurrentPidTgid: {memory: "none"},
	HelperGetCurrentUidGid:  {memory: "none"},
	HelperTailCall:          {memory: "none (r1 is the context, passed on untouched)"},
	HelperTracePrintk: {memory: "reads the format (r1, r2 bytes); %s reads the string its argument points to, printing (fault) when unreadable",
		args: []auditArg{{reg: 1, size: 3, sizeReg: 2}, {reg: 3, leaky: true}},
		setup: func(h *auditHarness, r *[5]uint64) {
			copy(h.scratch, "%s\x00")
			r[0], r[1] = h.rw, 3
		}},
	HelperGetCurrentComm: {memory: "writes the name (r1, r2 bytes)",
		args: []auditArg{{reg: 1, write: true, size: 16, sizeReg: 2}}},
	HelperSkbLoadBytes: {memory: "writes the copy (r3, r4 bytes); reads the run's packet, not program pointers",
		args:  []auditArg{{reg: 3, write: true, size: 4, sizeReg: 4}},
		setup: func(h *auditHarness, r *[5]uint64) { r[0] = h.rw }},
	HelperSkbLoadBytesRelative: {memory: "writes the copy (r3, r4 bytes); reads the run's frame, not program pointers",
		args:  []auditArg{{reg: 3, write: true, size: 4, sizeReg: 4}},
		setup: func(h *auditHarness, r *[5]uint64) { r[0], r[1], r[4] = h.rw, 0, 1 }},
	HelperGetSocketCookie: {memory: "none (r1 is the context)"},
	HelperGetSocketUID:    {memory: "none (r1 is the context)"},
	HelperRedirect:        {memory: "none"},
	HelperCsumDiff: {memory: "reads from (r1, r2 bytes) and to (r3, r4 bytes)",
		args: []auditArg{{reg: 1, size: 4, sizeReg: 2}, {reg: 3, size: 4, sizeReg: 4}},
		setup: func(h *auditHarness, r *[5]uint64) {
			r[1], r[3] = 4, 4
		}},
	HelperXdpAdjustHead: {memory: "none: moves the run's packet bounds"},
	HelperXdpAdjustMeta: {memory: "none: moves the run's packet bounds"},
	HelperXdpAdjustTail: {memory: "none: moves the run's packet bounds"},
	HelperXdpGetBuffLen: {memory: "none"},
	HelperXdpLoadBytes:  {memory: "writes the copy (r3, r4 bytes); reads the run's packet", args: []auditArg{{reg: 3, write: true, size: 4, sizeReg: 4}}},
	HelperXdpStoreBytes: {memory: "reads the source (r3, r4 bytes); writes the run's packet", args: []auditArg{{reg: 3, size: 4, sizeReg: 4}}},
	HelperFibLookup: {memory: "reads and writes the params (r2, r3 bytes); the lookup reads the namespace's routing tables",
		args: []auditArg{{reg: 2, size: 64, sizeReg: 3}, {reg: 2, write: true, size: 64, sizeReg: 3}}},
	HelperKtimeGetCoarseNs: {memory: "none"},
	HelperKtimeGetTaiNs:    {memory: "none"},
	HelperGetNumaNodeID:    {memory: "none"},
	HelperLoop: {memory: "none: r3 is handed to the callback, whose own loads and stores are checked",
		setup: func(h *auditHarness, r *[5]uint64) { r[0] = 0; r[1] = funcPtrTag }},
}

// auditHarness is a VM outside a run with regions of every access.
type auditHarness struct {
	p         *Program
	vm        *interp.VM
	scratch   []byte // readable and writable
	secret    []byte // write-only
	sealed    []byte // read-only
	locked    []byte // no access
	rw        uint64 // pointer to scratch
	wo        uint64 // pointer to secret
	ro        uint64 // pointer to sealed
	none      uint64 // pointer to locked
	hashPtr   uint64
	queuePtr  uint64 // a queue of 8-byte values (helpers_maps_audit_test.go)
	ringPtr   uint64 // a ring buffer
	traceSeen []string
}

func newAuditHarness(t *testing.T, secret byte) *auditHarness {
	t.Helper()
	hm, err := maps.New(maps.Spec{Type: 1, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hm.Close() })
	h := &auditHarness{}
	more := auditMaps(t)
	p, err := Load(&Spec{Type: SocketFilter, License: "GPL", Name: "audit",
		Insns: []byte{0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0},
		Maps:  append([]MapRef{{Map: hm, Read: true, Write: true}}, more...)},
		&Env{Trace: func(_, msg string) { h.traceSeen = append(h.traceSeen, msg) }})
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	h.vm = interp.NewVM(nil)
	h.vm.Context = &runCtx{p: p, frame: make([]byte, 64), xdp: xdpBuff{buf: make([]byte, xdpFrameSize), meta: xdpHeadroom, data: xdpHeadroom, end: xdpHeadroom + 64, ctx: make([]byte, xdpSize+24)}}
	h.scratch = make([]byte, 64)
	h.secret = bytes.Repeat([]byte{secret}, 64)
	h.sealed = bytes.Repeat([]byte{secret}, 64)
	h.locked = bytes.Repeat([]byte{secret}, 64)
	add := func(b []byte, acc interp.Access) uint64 {
		ptr, err := h.vm.AddRegionAccess(b, acc)
		if err != nil {
			t.Fatal(err)
		}
		return ptr
	}
	h.rw = add(h.scratch, interp.ReadWrite)
	h.wo = add(h.secret, interp.Write)
	h.ro = add(h.sealed, interp.Read)
	h.none = add(h.locked, 0)
	h.hashPtr = mapPtrTag
	h.queuePtr, h.ringPtr = mapPtrTag|1, mapPtrTag|2
	return h
}

// call runs helper n with regs.
func (h *auditHarness) call(n int32, regs [5]uint64) (uint64, error) {
	f := allHelpers()[n]
	return f(h.vm, regs[0], regs[1], regs[2], regs[3], regs[4])
}

// allHelpers is every helper any program type may call.
func allHelpers() map[int32]interp.HelperFunc {
	all := map[int32]interp.HelperFunc{}
	for _, typ := range []Type{SocketFilter, XDP, Seccomp} {
		for n, f := range (&Program{typ: typ}).helperTable() {
			all[n] = f
		}
	}
	return all
}

func TestHelperMemoryAudit(t *testing.T) {
	table := allHelpers()
	var nums []int32
	for n := range table {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for _, n := range nums {
		row, ok := helperAudit[n]
		if !ok {
			t.Errorf("helper %d (%s) is not in the memory audit: list what program memory it reads and writes", n, HelperName(n))
			continue
		}
		t.Logf("%-28s %s", HelperName(n), row.memory)
		t.Run(HelperName(n), func(t *testing.T) {
			if len(row.args) == 0 {
				h := newAuditHarness(t, 0x5a)
				regs := [5]uint64{h.none, h.none, h.none, h.none, h.none}
				if row.setup != nil {
					row.setup(h, &regs)
				}
				_, err := h.call(n, regs)
				if errors.Is(err, interp.ErrWriteOnly) || errors.Is(err, interp.ErrReadOnly) {
					t.Fatalf("audited as touching no program memory, but: %v", err)
				}
				return
			}
			for _, a := range row.args {
				t.Run(fmt.Sprintf("r%d", a.reg), func(t *testing.T) {
					probe := func(secret byte) (uint64, error, []string) {
						h := newAuditHarness(t, secret)
						var regs [5]uint64
						for i := range regs {
							regs[i] = h.rw
						}
						if row.setup != nil {
							row.setup(h, &regs)
						}
						if a.write {
							regs[a.reg-1] = h.ro
						} else {
							regs[a.reg-1] = h.wo
						}
						if a.sizeReg != 0 {
							regs[a.sizeReg-1] = uint64(a.size)
						}
						ret, err := h.call(n, regs)
						return ret, err, h.traceSeen
					}
					ret1, err1, out1 := probe(0x5a)
					want := interp.ErrWriteOnly
					if a.write {
						want = interp.ErrReadOnly
					}
					if a.leaky {
						ret2, err2, out2 := probe(0x00)
						if ret1 != ret2 || (err1 == nil) != (err2 == nil) || !slices.Equal(out1, out2) {
							t.Fatalf("result depends on unreadable bytes: %d %v %q vs %d %v %q", ret1, err1, out1, ret2, err2, out2)
						}
						for _, s := range out1 {
							if bytes.Contains([]byte(s), []byte("ZZ")) {
								t.Fatalf("unreadable bytes reached the output: %q", s)
							}
						}
						return
					}
					if !errors.Is(err1, want) {
						t.Fatalf("helper %s with r%d in a forbidden region: %d, %v; want %v", HelperName(n), a.reg, ret1, err1, want)
					}
				})
			}
		})
	}
	for n := range helperAudit {
		if _, ok := table[n]; !ok {
			t.Errorf("audit lists helper %d, which bpfd does not implement", n)
		}
	}
}

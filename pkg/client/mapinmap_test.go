package client

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// innerProg returns inner[0] (a u64) of the map stored under key 0 of
// outer, 1000 when there is none, 2000 when the inner map has no value.
func innerProg(outer *Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, outer.FD()),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Mov.Imm(asm.R0, 1000), asm.Return(),
		asm.Mov.Reg(asm.R1, asm.R0).WithSymbol("found"),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "val"),
		asm.Mov.Imm(asm.R0, 2000), asm.Return(),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord).WithSymbol("val"),
		asm.Return(),
	}
}

func fdValue(m *Map) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(m.FD())) }

// TestMapInMap: an array of maps and a hash of maps take maps matching
// their template by descriptor, return ids on lookup, and hand programs
// the inner map; swapping an entry shows in the next run.
func TestMapInMap(t *testing.T) {
	c := newTestConn(t)
	inner := MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}
	a, b := newTestMap(t, c, inner), newTestMap(t, c, inner)
	for m, v := range map[*Map]uint64{a: 41, b: 42} {
		if err := m.Update(u32le(0), u64le(v), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.NewMap(MapSpec{Type: ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("map of maps without a template: %v", err)
	}
	for _, typ := range []MapType{ArrayOfMaps, HashOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			outer := newTestMap(t, c, MapSpec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: a})
			p, err := c.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: innerProg(outer), License: "GPL"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			run := func(want uint32) {
				t.Helper()
				if ret, err := p.Run(&RunOptions{Data: ethFrame()}); err != nil || ret != want {
					t.Fatalf("run = %d, %v; want %d", ret, err, want)
				}
			}
			run(1000)
			if err := outer.Update(u32le(0), fdValue(a), UpdateAny); err != nil {
				t.Fatal(err)
			}
			run(41)
			id := make([]byte, 4)
			if err := outer.Lookup(u32le(0), id); err != nil || binary.NativeEndian.Uint32(id) != mustInfo(t, a).ID {
				t.Fatalf("lookup = %d, %v; want the id of the inner map %d", binary.NativeEndian.Uint32(id), err, mustInfo(t, a).ID)
			}
			if err := outer.Update(u32le(0), fdValue(b), UpdateAny); err != nil {
				t.Fatal(err)
			}
			run(42)
			other := newTestMap(t, c, MapSpec{Type: Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
			if err := outer.Update(u32le(1), fdValue(other), UpdateAny); !errors.Is(err, ErrInvalid) {
				t.Fatalf("storing an incompatible map: %v", err)
			}
			ro, err := a.Reopen(ModeRead)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if err := outer.Update(u32le(1), fdValue(ro), UpdateAny); !errors.Is(err, ErrPermission) {
				t.Fatalf("storing a map through a read-only descriptor: %v", err)
			}
			if _, err := outer.BatchUpdate(u32le(1), fdValue(a), nil); !errors.Is(err, ErrInvalid) {
				t.Fatalf("batch update of a map of maps: %v", err)
			}
			if err := outer.Delete(u32le(0)); err != nil {
				t.Fatal(err)
			}
			run(1000)
		})
	}
}

// TestMapInMapRevocation: an outer map is no way around revocation. A
// holder stores a lent inner-map descriptor in its own map of maps and
// reads it through a program; revoking the lent descriptor empties the
// holder's entry, and destroying a map empties its owner's entries.
func TestMapInMapRevocation(t *testing.T) {
	s := startServer(t)
	owner, holder := s.dial(t), s.dial(t)
	inner := MapSpec{Type: Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}
	m := newTestMap(t, owner, inner)
	if err := m.Update(u32le(0), u64le(7), UpdateAny); err != nil {
		t.Fatal(err)
	}
	lent, err := m.Reopen(ModeReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	hm, err := holder.ImportMap(lent.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer hm.Close()
	outer := newTestMap(t, holder, MapSpec{Type: HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: hm})
	if err := outer.Update(u32le(0), fdValue(hm), UpdateAny); err != nil {
		t.Fatal(err)
	}
	p, err := holder.LoadProgram(ProgramSpec{Type: SocketFilter, Instructions: innerProg(outer), License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if ret, err := p.Run(&RunOptions{Data: ethFrame()}); err != nil || ret != 7 {
		t.Fatalf("before the revocation: %d, %v", ret, err)
	}
	if err := lent.Revoke(); err != nil {
		t.Fatal(err)
	}
	if ret, err := p.Run(&RunOptions{Data: ethFrame()}); err != nil || ret != 1000 {
		t.Fatalf("after the revocation: %d, %v; want 1000 (entry gone)", ret, err)
	}
	id := make([]byte, 4)
	if err := outer.Lookup(u32le(0), id); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("entry stored through the revoked descriptor: %v", err)
	}
	// The owner's own map of maps loses the entry when the map is
	// destroyed.
	own := newTestMap(t, owner, MapSpec{Type: ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: m})
	if err := own.Update(u32le(0), fdValue(m), UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	if err := own.Lookup(u32le(0), id); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("entry of a destroyed map: %v", err)
	}
}

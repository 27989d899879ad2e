package verifier

import "golang.org/x/sys/unix"

// This file holds what the verifier knows about map types beyond hash and
// array: the one table of which helper may take which map type (the
// kernel's check_map_func_compatibility, both directions), the prototypes
// of the map helpers, and the argument and return kinds they need —
// inner maps returned by map-in-map lookups, and ring buffer records,
// which are references the program must release (submit or discard)
// before it exits.

// Map types, kernel numbering (enum bpf_map_type).
const (
	MapTypeHash           uint32 = 1
	MapTypeArray          uint32 = 2
	MapTypePerfEventArray uint32 = 4
	MapTypePercpuHash     uint32 = 5
	MapTypePercpuArray    uint32 = 6
	MapTypeLRUHash        uint32 = 9
	MapTypeLRUPercpuHash  uint32 = 10
	MapTypeLPMTrie        uint32 = 11
	MapTypeArrayOfMaps    uint32 = 12
	MapTypeHashOfMaps     uint32 = 13
	MapTypeDevmap         uint32 = 14
	MapTypeCPUMap         uint32 = 16
	MapTypeXSKMap         uint32 = 17
	MapTypeQueue          uint32 = 22
	MapTypeStack          uint32 = 23
	MapTypeDevmapHash     uint32 = 25
	MapTypeRingbuf        uint32 = 27
	MapTypeBloomFilter    uint32 = 30
)

// Map helper numbers (enum bpf_func_id).
const (
	FnRedirect            int32 = 23
	FnPerfEventOutput     int32 = 25
	FnRedirectMap         int32 = 51
	FnMapPushElem         int32 = 87
	FnMapPopElem          int32 = 88
	FnMapPeekElem         int32 = 89
	FnRingbufOutput       int32 = 130
	FnRingbufReserve      int32 = 131
	FnRingbufSubmit       int32 = 132
	FnRingbufDiscard      int32 = 133
	FnRingbufQuery        int32 = 134
	FnMapLookupPercpuElem int32 = 195
)

// Argument and return kinds of the map helpers (numbered apart from the
// others so that both lists can grow).
const (
	// ArgPtrToUninitMapValue needs writable memory of the map's value
	// size, which the helper fills (map_pop_elem, map_peek_elem).
	ArgPtrToUninitMapValue ArgType = 100 + iota
	// ArgConstAllocSizeOrZero is a size known at verification time: the
	// size of the memory the helper allocates (ringbuf_reserve).
	ArgConstAllocSizeOrZero
	// ArgPtrToAllocMem needs the exact pointer an allocating helper
	// returned (no offset), and releases it: every copy becomes unusable
	// (ringbuf_submit, ringbuf_discard).
	ArgPtrToAllocMem
)

// RetPtrToAllocMemOrNull returns memory of the ArgConstAllocSizeOrZero
// size, or NULL; non-NULL, it is a reference the program must release
// before it exits (ringbuf_reserve).
const RetPtrToAllocMemOrNull RetType = 100

// mapOnly lists, for the map types that restrict it, every helper that
// may take the map (part one of check_map_func_compatibility). Lookups,
// updates and deletes of the general-purpose maps are not listed: those
// types take any map helper that accepts them (part two, funcMaps).
var mapOnly = map[uint32][]int32{
	MapTypeProgArray:      {FnTailCall},
	MapTypePerfEventArray: {FnPerfEventOutput},
	MapTypeRingbuf:        {FnRingbufOutput, FnRingbufReserve, FnRingbufQuery},
	MapTypeDevmap:         {FnRedirectMap, FnMapLookupElem},
	MapTypeDevmapHash:     {FnRedirectMap, FnMapLookupElem},
	MapTypeCPUMap:         {FnRedirectMap},
	MapTypeXSKMap:         {FnRedirectMap, FnMapLookupElem},
	MapTypeArrayOfMaps:    {FnMapLookupElem},
	MapTypeHashOfMaps:     {FnMapLookupElem},
	MapTypeQueue:          {FnMapPeekElem, FnMapPopElem, FnMapPushElem},
	MapTypeStack:          {FnMapPeekElem, FnMapPopElem, FnMapPushElem},
	MapTypeBloomFilter:    {FnMapPeekElem, FnMapPushElem},
}

// funcMaps lists, for the helpers that restrict it, every map type they
// take (part two of check_map_func_compatibility).
var funcMaps = map[int32][]uint32{
	FnTailCall:            {MapTypeProgArray},
	FnPerfEventOutput:     {MapTypePerfEventArray},
	FnRingbufOutput:       {MapTypeRingbuf},
	FnRingbufReserve:      {MapTypeRingbuf},
	FnRingbufQuery:        {MapTypeRingbuf},
	FnRedirectMap:         {MapTypeDevmap, MapTypeDevmapHash, MapTypeCPUMap, MapTypeXSKMap},
	FnMapPushElem:         {MapTypeQueue, MapTypeStack, MapTypeBloomFilter},
	FnMapPopElem:          {MapTypeQueue, MapTypeStack},
	FnMapPeekElem:         {MapTypeQueue, MapTypeStack, MapTypeBloomFilter},
	FnMapLookupPercpuElem: {MapTypePercpuArray, MapTypePercpuHash, MapTypeLRUPercpuHash},
	FnForEachMapElem:      forEachMapTypes,
}

// mapFuncCompatible reports whether helper fn may take a map of type t:
// the kernel's check_map_func_compatibility (an unknown type takes only
// what no table restricts).
func mapFuncCompatible(t uint32, fn int32) bool {
	if fns, ok := mapOnly[t]; ok && !containsFn(fns, fn) {
		return false
	}
	if ts, ok := funcMaps[fn]; ok {
		for _, x := range ts {
			if x == t {
				return true
			}
		}
		return false
	}
	return true
}

func containsFn(fns []int32, fn int32) bool {
	for _, x := range fns {
		if x == fn {
			return true
		}
	}
	return false
}

// MapHelpers returns fresh prototypes of the map helpers every program
// type may call, with the kernel's argument and return types and the
// access each needs on its map: map_push_elem 87 (write), map_pop_elem 88
// (read and write), map_peek_elem 89 (read), perf_event_output 25
// (write), ringbuf_output 130, ringbuf_reserve 131 (write),
// ringbuf_submit 132, ringbuf_discard 133, ringbuf_query 134 (read),
// redirect_map 51 (read), map_lookup_percpu_elem 195 (read) and
// for_each_map_elem 164 (read; foreach.go). Which
// map types each takes is mapFuncCompatible's table. KernelHelpers
// includes them.
func MapHelpers() map[int32]*HelperProto {
	return map[int32]*HelperProto{
		FnMapPushElem: {Name: "map_push_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapValue, ArgAnything},
			MapWrite: true},
		FnMapPopElem: {Name: "map_pop_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToUninitMapValue},
			MapRead: true, MapWrite: true},
		FnMapPeekElem: {Name: "map_peek_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToUninitMapValue},
			MapRead: true},
		FnPerfEventOutput: {Name: "perf_event_output",
			Args:     [5]ArgType{ArgPtrToCtx, ArgConstMapPtr, ArgAnything, ArgPtrToMem, ArgConstSizeOrZero},
			MapWrite: true},
		FnRingbufOutput: {Name: "ringbuf_output", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMem, ArgConstSizeOrZero, ArgAnything},
			MapWrite: true},
		FnRingbufReserve: {Name: "ringbuf_reserve", Args: [5]ArgType{ArgConstMapPtr, ArgConstAllocSizeOrZero, ArgAnything},
			Ret: RetPtrToAllocMemOrNull, MapWrite: true},
		FnRingbufSubmit:  {Name: "ringbuf_submit", Args: [5]ArgType{ArgPtrToAllocMem, ArgAnything}, Ret: RetVoid},
		FnRingbufDiscard: {Name: "ringbuf_discard", Args: [5]ArgType{ArgPtrToAllocMem, ArgAnything}, Ret: RetVoid},
		FnRingbufQuery:   {Name: "ringbuf_query", Args: [5]ArgType{ArgConstMapPtr, ArgAnything}, MapRead: true},
		FnRedirectMap:    {Name: "redirect_map", Args: [5]ArgType{ArgConstMapPtr, ArgAnything, ArgAnything}, MapRead: true},
		FnMapLookupPercpuElem: {Name: "map_lookup_percpu_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey, ArgAnything},
			Ret: RetMapValueOrNull, MapRead: true},
		FnForEachMapElem: forEachProto(),                  // foreach.go
		FnSpinLock:       spinLockHelpers()[FnSpinLock],   // spinlock.go
		FnSpinUnlock:     spinLockHelpers()[FnSpinUnlock], // spinlock.go
	}
}

// acquireRef is a reference a path holds: a ring buffer record reserved
// at insn and not yet submitted or discarded.
type acquireRef struct {
	id   uint32
	insn int
}

// mapsArgs collects what the map argument kinds of one call found.
type mapsArgs struct {
	allocSize int64  // ArgConstAllocSizeOrZero's value (-1: none)
	release   uint32 // the reference ArgPtrToAllocMem releases
}

// mapsArg checks argument i (register i+1) of kind at for the map
// helpers; false if at is not one of theirs.
func (v *verifier) mapsArg(st *state, proto *HelperProto, name string, i int, at ArgType, mapIdx int32, ac *mapsArgs) (bool, error) {
	regno := uint8(i + 1)
	r := st.cur().regs[regno]
	switch at {
	case ArgPtrToSpinLock, argPtrToHeldSpinLock:
		return true, v.spinLockArg(st, at == ArgPtrToSpinLock, regno)
	case ArgPtrToUninitMapValue:
		if mapIdx < 0 {
			return true, v.errf(st, st.pc, unix.EACCES, "invalid map_ptr to access map->value")
		}
		return true, v.memArg(st, regno, int(v.env.Maps[mapIdx].ValueSize), false, true)
	case ArgConstAllocSizeOrZero:
		if r.typ != scalarValue {
			return true, v.errf(st, st.pc, unix.EACCES, "R%d type=%s expected=scalar", regno, r.typ)
		}
		if !r.isConst() {
			return true, v.errf(st, st.pc, unix.EACCES, "R%d is not a known constant'", regno)
		}
		ac.allocSize = int64(r.vo.value)
		return true, nil
	case ArgPtrToAllocMem:
		if r.typ != ptrToMapValue || r.ref == 0 {
			return true, v.errf(st, st.pc, unix.EACCES, "R%d type=%s expected=ringbuf_mem (a pointer ringbuf_reserve returned, null-checked)", regno, r.typ)
		}
		if r.off != 0 || r.hasVarOff() {
			return true, v.errf(st, st.pc, unix.EINVAL, "R%d must have zero offset when passed to release func", regno)
		}
		ac.release = r.ref
		return true, nil
	}
	return false, nil
}

// mapsRet is R0 after a call whose return kind is one of the map
// helpers'.
func (v *verifier) mapsRet(st *state, proto *HelperProto, name string, mapIdx int32, ac *mapsArgs) (reg, error) {
	switch proto.Ret {
	case RetPtrToAllocMemOrNull:
		size := ac.allocSize
		if size < 0 || size > 1<<30 {
			return reg{}, v.errf(st, st.pc, unix.EINVAL, "helper %s: allocation size %d out of range", name, size)
		}
		idx := v.recordMap(uint32(size), v.env.Maps[mapIdx].Read)
		ref := v.newID()
		st.refs = append(st.refs, acquireRef{id: ref, insn: st.pc})
		return reg{typ: ptrToMapValueOrNull, idx: idx, id: v.newID(), ref: ref}, nil
	}
	return reg{}, v.errf(st, st.pc, unix.EINVAL, "helper %s prototype: bad return type %d", name, proto.Ret)
}

// recordMap returns the synthetic map entry standing for ring buffer
// records of size bytes: pointers to them are map values of that size,
// writable, and readable when the ring buffer's handle reads.
func (v *verifier) recordMap(size uint32, read bool) int32 {
	key := int64(size) * 2
	if read {
		key++
	}
	if idx, ok := v.recordMaps[key]; ok {
		return idx
	}
	if v.recordMaps == nil {
		v.recordMaps = map[int64]int32{}
	}
	v.env.Maps = append(v.env.Maps, MapInfo{Name: "ringbuf record", ValueSize: size, Read: read, Write: true})
	idx := int32(len(v.env.Maps) - 1)
	v.recordMaps[key] = idx
	return idx
}

// addInnerTemplates appends, for every map-in-map the program uses, its
// inner template as a synthetic map entry: the map pointer a lookup
// returns has that shape, and the access the program has to the outer
// map (the outer handle's modes; the template's own program flags apply
// too).
func (v *verifier) addInnerTemplates() {
	for i := 0; i < v.userMaps; i++ {
		m := v.env.Maps[i]
		if (m.Type != MapTypeArrayOfMaps && m.Type != MapTypeHashOfMaps) || m.Inner == nil {
			continue
		}
		in := *m.Inner
		in.Read = in.Read && m.Read
		in.Write = in.Write && m.Write
		if in.Name == "" {
			in.Name = m.Name + ".inner"
		}
		v.env.Maps = append(v.env.Maps, in)
		if v.innerOf == nil {
			v.innerOf = map[int32]int32{}
		}
		v.innerOf[int32(i)] = int32(len(v.env.Maps) - 1)
	}
}

// innerMap returns the synthetic entry of map idx's inner template, if
// idx is a map-in-map.
func (v *verifier) innerMap(idx int32) (int32, bool) {
	in, ok := v.innerOf[idx]
	return in, ok
}

// releaseRef drops reference ref from st and makes every register and
// spilled copy carrying it unusable, as the kernel's release_reference.
func (v *verifier) releaseRef(st *state, ref uint32) {
	dropRef(st, ref)
	st.forEachReg(func(r *reg) {
		if r.ref == ref {
			*r = reg{}
		}
	})
}

// dropRef removes ref from st's references.
func dropRef(st *state, ref uint32) {
	for i, a := range st.refs {
		if a.id == ref {
			st.refs = append(st.refs[:i:i], st.refs[i+1:]...)
			return
		}
	}
}

// checkRefsReleased fails the program if a path exits holding a
// reference (the kernel's check_reference_leak).
func (v *verifier) checkRefsReleased(st *state) error {
	if len(st.refs) == 0 {
		return nil
	}
	a := st.refs[0]
	return v.errf(st, st.pc, unix.EINVAL, "Unreleased reference id=%d alloc_insn=%d (a ringbuf_reserve without ringbuf_submit or ringbuf_discard)", a.id, a.insn)
}

// refsInclude reports whether cur holds references corresponding to
// old's, in order, under the same id mapping as the registers.
func refsInclude(old, cur *state, im *idmap) bool {
	for i := range old.refs {
		if !im.check(old.refs[i].id, cur.refs[i].id) {
			return false
		}
	}
	return true
}

package verifier

import "golang.org/x/sys/unix"

// FnForEachMapElem is bpf_for_each_map_elem(map, callback_fn,
// callback_ctx, flags), helper 164.
const FnForEachMapElem int32 = 164

// errENOTSUPP is the kernel's ENOTSUPP (524), which unix lacks.
const errENOTSUPP = unix.Errno(524)

// forEachMapTypes are the map types with a map_for_each_callback in the
// kernel: the hashes and the arrays (not maps of maps).
var forEachMapTypes = []uint32{MapTypeHash, MapTypeArray, MapTypePercpuHash, MapTypePercpuArray,
	MapTypeLRUHash, MapTypeLRUPercpuHash}

// forEachProto is bpf_for_each_map_elem's prototype: the kernel's
// (ARG_CONST_MAP_PTR, ARG_PTR_TO_FUNC, ARG_PTR_TO_STACK_OR_NULL,
// ARG_ANYTHING), returning the number of elements the callback saw.
// bpfd adds MapRead: the callback sees every key, so a handle without
// read access (a write-only map handle) may not iterate (issue 9's mode
// checks); values are then writable only if the handle may write.
func forEachProto() *HelperProto {
	return &HelperProto{Name: "for_each_map_elem",
		Args:    [5]ArgType{ArgConstMapPtr, ArgPtrToFunc, ArgPtrToStackOrNull, ArgAnything},
		MapRead: true}
}

// forEachArgs sets a bpf_for_each_map_elem callback's arguments, as the
// kernel's set_map_elem_callback_state: long cb(struct bpf_map *map,
// const void *key, void *value, void *ctx). The key is read-only
// (PTR_TO_MAP_KEY), the value a non-NULL map value (loads and stores
// checked against the handle's mode like any map value), ctx the caller's
// callback_ctx argument.
func forEachArgs(callee *frame, ctx reg, mapIdx int32) {
	callee.regs[1] = reg{typ: constPtrToMap, idx: mapIdx}
	callee.regs[2] = reg{typ: ptrToMapKey, idx: mapIdx}
	callee.regs[3] = reg{typ: ptrToMapValue, idx: mapIdx}
	callee.regs[4] = ctx
	callee.regs[5] = reg{}
}

// keyAccess checks a load (or refuses a store) of size bytes at p+off
// through a callback's key pointer.
func (v *verifier) keyAccess(st *state, rp uint8, p reg, off, size int, write bool) error {
	if write {
		return v.errf(st, st.pc, unix.EACCES, "write to change key R%d not allowed", rp)
	}
	if err := v.mapAccess(st, p.idx, false, "read from key of"); err != nil {
		return err
	}
	return v.boundedAccess(st, rp, p, off, size, int64(v.env.Maps[p.idx].KeySize), "map key")
}

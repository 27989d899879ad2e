package client

import "github.com/bpfd-project/bpfd/pkg/wire"

// Spin locks in map values. A hash or array map created with BTF whose
// value type holds a struct bpf_spin_lock (MapSpec.Value, as with
// cilium/ebpf) has a lock in every value, which programs take with
// bpf_spin_lock. Lookup returns values with the lock's 4 bytes zeroed and
// Update never overwrites the stored lock, as the kernel; LookupWithFlags,
// LookupAndDeleteWithFlags, Update and the batch commands with
// LookupLock / UpdateLock (BPF_F_LOCK) copy the value while holding its
// lock, so they never see or leave half of a program's critical section.

// LookupLock is BPF_F_LOCK for LookupWithFlags, LookupAndDeleteWithFlags
// and BatchOptions.ElemFlags: copy the value under its bpf_spin_lock
// (the same bit as UpdateLock, as cilium/ebpf's ebpf.LookupLock).
const LookupLock uint64 = 4

// LookupWithFlags is Lookup with BPF_MAP_LOOKUP_ELEM's flags: 0 or
// LookupLock. A LookupLock lookup always asks the daemon (the shared
// mapping cannot take the lock). It returns ErrInvalid for other flags
// and for LookupLock on a map without a spin lock; otherwise Lookup's
// errors.
func (m *Map) LookupWithFlags(key, valueOut any, flags uint64) error {
	if flags == 0 {
		return m.Lookup(key, valueOut)
	}
	return m.lookupFlags(wire.CmdMapLookupElem, key, valueOut, flags)
}

// LookupAndDeleteWithFlags is LookupAndDelete with
// BPF_MAP_LOOKUP_AND_DELETE_ELEM's flags: 0 or LookupLock (hash maps
// with a spin lock copy the value under it). It returns ErrInvalid for
// other flags, for any flag on a queue or stack and for LookupLock on a
// map without a spin lock; otherwise LookupAndDelete's errors.
func (m *Map) LookupAndDeleteWithFlags(key, valueOut any, flags uint64) error {
	if flags == 0 {
		return m.LookupAndDelete(key, valueOut)
	}
	return m.lookupFlags(wire.CmdMapLookupAndDeleteElem, key, valueOut, flags)
}

// lookupFlags sends cmd with flags for key and valueOut given as bytes
// or as typed values.
func (m *Map) lookupFlags(cmd wire.Cmd, key, valueOut any, flags uint64) error {
	op := func(k, v []byte) error { return m.lookupFlagsBytes(cmd, k, v, flags) }
	if k, ok := key.([]byte); ok || key == nil {
		if v, ok := valueOut.([]byte); ok {
			return op(k, v)
		}
	}
	keepContents(key)
	keepContents(valueOut)
	return m.lookupTyped(hide(&key), hide(&valueOut), op)
}

func (m *Map) lookupFlagsBytes(cmd wire.Cmd, key, value []byte, flags uint64) error {
	if len(key) != int(m.info.KeySize) {
		return errKeySize
	}
	if len(value) != m.ValueBufferSize() {
		return errValueSize
	}
	if m.info.Type == BloomFilter && cmd == wire.CmdMapLookupElem {
		return m.elem(cmd, flags, nil, value)
	}
	return m.elem(cmd, flags, value, key)
}

// UpdateLock is BPF_F_LOCK for Update and BatchOptions.ElemFlags: store
// the value under its bpf_spin_lock (combine with UpdateAny, UpdateExist
// or UpdateNoExist).
const UpdateLock uint64 = 4

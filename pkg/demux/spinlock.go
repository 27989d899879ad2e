package demux

import (
	"github.com/cilium/ebpf/btf"

	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/wire"
)

// elemFlagsAllowed is what the kernel lets through before it looks at
// the descriptor for the element commands other than update: BPF_F_LOCK
// for the lookups, nothing for the rest.
func elemFlagsAllowed(cmd wire.Cmd) uint64 {
	switch cmd {
	case wire.CmdMapLookupElem, wire.CmdMapLookupAndDeleteElem:
		return maps.UpdateLock
	}
	return 0
}

// spinLockOf returns maps.Spec.SpinLock for a map created with BTF ref
// (0: no lock, or no BTF), or the kernel's error for the value type
// (maps.SpinLockOf).
func spinLockOf(ref btfRef) (uint32, error) {
	if ref.obj == nil || ref.value == 0 {
		return 0, nil
	}
	t, err := ref.obj.btf.spec.TypeByID(btf.TypeID(ref.value))
	if err != nil {
		return 0, ErrBTFType
	}
	return maps.SpinLockOf(t)
}

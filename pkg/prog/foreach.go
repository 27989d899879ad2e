package prog

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
)

// helperForEachMapElem is bpf_for_each_map_elem(map, callback_fn,
// callback_ctx, flags): it calls the callback with (map, &key, &value,
// callback_ctx) for each element (maps.ForEacher: the per-CPU maps give
// the value of the CPU slot the run holds) until it returns 1, and
// returns the number of calls; flags other than 0 give -EINVAL, as the
// kernel. The key is read-only to the callback, the value has the
// program's access to the map (the verifier already refused the loads and
// stores the handle's mode forbids; the regions enforce it again). The
// call holds two regions whatever the map's size: they are rebound to
// each element in turn (interp.VM.SetRegion).
func helperForEachMapElem(vm *interp.VM, r1, r2, r3, r4, _ uint64) (uint64, error) {
	if r4 != 0 {
		return errRet(unix.EINVAL), nil
	}
	rc, ref, _, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	fe, ok := ref.Map.(maps.ForEacher)
	if !ok {
		return errRet(unix.EINVAL), nil
	}
	if r2&tagMask != funcPtrTag {
		return 0, errBadFuncPtr
	}
	pc := int(r2 &^ tagMask)
	var keyPtr, valPtr uint64
	n, err := fe.ProgForEach(rc.cpu, func(key, value []byte) (bool, error) {
		if keyPtr == 0 {
			var err error
			if keyPtr, err = vm.AddRegionAccess(key, interp.Read); err != nil {
				return true, err
			}
			if valPtr, err = vm.AddRegionAccess(value, ref.access()); err != nil {
				return true, err
			}
		} else {
			if err := vm.SetRegion(keyPtr, key, interp.Read); err != nil {
				return true, err
			}
			if err := vm.SetRegion(valPtr, value, ref.access()); err != nil {
				return true, err
			}
		}
		ret, err := vm.Call(pc, r1, keyPtr, valPtr, r3)
		return ret == 1, err
	})
	if err != nil {
		return 0, err
	}
	return uint64(n), nil
}

package prog

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// The map helpers beyond lookup, update and delete: queues, stacks and
// bloom filters (push, pop, peek), ring buffers (output, reserve, submit,
// discard, query) and per-CPU lookups of another CPU's value. Their
// prototypes are pkg/verifier's MapHelpers; every byte of program memory
// they read or write goes through vm.Mem, which checks the region's mode
// as a load or store would.

// Kernel helper numbers of the map helpers.
const (
	HelperMapPushElem         = verifier.FnMapPushElem
	HelperMapPopElem          = verifier.FnMapPopElem
	HelperMapPeekElem         = verifier.FnMapPeekElem
	HelperRingbufOutput       = verifier.FnRingbufOutput
	HelperRingbufReserve      = verifier.FnRingbufReserve
	HelperRingbufSubmit       = verifier.FnRingbufSubmit
	HelperRingbufDiscard      = verifier.FnRingbufDiscard
	HelperRingbufQuery        = verifier.FnRingbufQuery
	HelperMapLookupPercpuElem = verifier.FnMapLookupPercpuElem
)

// mapHelperFuncs returns the implementations of the map helpers.
func mapHelperFuncs() map[int32]interp.HelperFunc {
	return map[int32]interp.HelperFunc{
		HelperMapPushElem:         helperPush,
		HelperMapPopElem:          helperPop,
		HelperMapPeekElem:         helperPeek,
		HelperRingbufOutput:       helperRingbufOutput,
		HelperRingbufReserve:      helperRingbufReserve,
		HelperRingbufSubmit:       helperRingbufSubmit,
		HelperRingbufDiscard:      helperRingbufDiscard,
		HelperRingbufQuery:        helperRingbufQuery,
		HelperMapLookupPercpuElem: helperLookupPercpu,
		HelperPerfEventOutput:     helperPerfEventOutput,
		HelperRedirectMap:         helperRedirectMap,
	}
}

// mapHelperName names the map helpers (HelperName's other half).
func mapHelperName(n int32) string {
	if p, ok := verifier.MapHelpers()[n]; ok {
		return "bpf_" + p.Name
	}
	return ""
}

func helperPush(vm *interp.VM, r1, r2, r3, _, _ uint64) (uint64, error) {
	rc, ref, sl, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	p, ok := ref.Map.(maps.Pusher)
	if !ok {
		return errRet(unix.EINVAL), nil
	}
	val, err := vm.Mem(r2, sl.valueSize, false)
	if err != nil {
		return 0, err
	}
	if err := p.Push(rc.cpu, val, r3); err != nil {
		return errRet(errnoOf(err)), nil
	}
	return 0, nil
}

func popPeek(vm *interp.VM, r1, r2 uint64, pop bool) (uint64, error) {
	rc, ref, sl, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	p, ok := ref.Map.(maps.Pusher)
	if !ok {
		return errRet(unix.EINVAL), nil
	}
	val, err := vm.Mem(r2, sl.valueSize, true)
	if err != nil {
		return 0, err
	}
	if pop {
		err = p.Pop(rc.cpu, val)
	} else {
		err = p.Peek(rc.cpu, val)
	}
	if err != nil {
		return errRet(errnoOf(err)), nil
	}
	return 0, nil
}

func helperPop(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	return popPeek(vm, r1, r2, true)
}
func helperPeek(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	return popPeek(vm, r1, r2, false)
}

func ringArg(vm *interp.VM, r uint64) (*maps.Ringbuf, *mapSlot, error) {
	_, ref, sl, err := mapArg(vm, r)
	if err != nil {
		return nil, nil, err
	}
	rb, ok := ref.Map.(*maps.Ringbuf)
	if !ok {
		return nil, nil, errBadMapPtr
	}
	return rb, sl, nil
}

func helperRingbufOutput(vm *interp.VM, r1, r2, r3, r4, _ uint64) (uint64, error) {
	rb, _, err := ringArg(vm, r1)
	if err != nil {
		return 0, err
	}
	data, err := vm.Mem(r2, int(uint32(r3)), false)
	if err != nil {
		return 0, err
	}
	if err := rb.Output(data, r4); err != nil {
		return errRet(errnoOf(err)), nil
	}
	return 0, nil
}

// helperRingbufReserve returns a pointer into the ring's data (a static
// region of the program): the record's bytes. NULL when flags are set or
// the ring has no room, as the kernel.
func helperRingbufReserve(vm *interp.VM, r1, r2, r3, _, _ uint64) (uint64, error) {
	rb, sl, err := ringArg(vm, r1)
	if err != nil {
		return 0, err
	}
	if r3 != 0 || sl.static < 0 {
		// sl.static < 0: a ring buffer reached as an inner map has no
		// static region in this program, so records cannot be handed
		// out (a documented difference: ringbuf_output works).
		return 0, nil
	}
	off, ok := rb.Reserve(r2)
	if !ok {
		return 0, nil
	}
	return interp.StaticPointer(sl.static, uint32(off)), nil
}

// recordArg finds the ring buffer whose record starts at ptr.
func recordArg(vm *interp.VM, ptr uint64) (*maps.Ringbuf, uint64, error) {
	rc := vm.Context.(*runCtx)
	i, off, ok := interp.StaticIndex(ptr)
	if ok {
		for j := range rc.p.slots {
			if rc.p.slots[j].static == i {
				if rb, isRing := rc.p.refs[j].Map.(*maps.Ringbuf); isRing {
					return rb, uint64(off), nil
				}
			}
		}
	}
	return nil, 0, errBadRecord
}

var errBadRecord = errnoInternal("ringbuf submit or discard of a pointer that is no ring buffer record")

func commit(vm *interp.VM, r1, r2 uint64, discard bool) (uint64, error) {
	rb, off, err := recordArg(vm, r1)
	if err != nil {
		return 0, err
	}
	rb.Commit(off, r2, discard)
	return 0, nil
}

func helperRingbufSubmit(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	return commit(vm, r1, r2, false)
}

func helperRingbufDiscard(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	return commit(vm, r1, r2, true)
}

func helperRingbufQuery(vm *interp.VM, r1, r2, _, _, _ uint64) (uint64, error) {
	rb, _, err := ringArg(vm, r1)
	if err != nil {
		return 0, err
	}
	return rb.Query(r2), nil
}

// helperLookupPercpu is bpf_map_lookup_percpu_elem(map, key, cpu): CPU
// cpu's value of key, or NULL (also for a cpu beyond the possible ones).
func helperLookupPercpu(vm *interp.VM, r1, r2, r3, _, _ uint64) (uint64, error) {
	rc, ref, sl, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	cpu := uint32(r3)
	if int(cpu) >= rc.p.pool().N() {
		return 0, nil
	}
	key, err := vm.Mem(r2, sl.keySize, false)
	if err != nil {
		return 0, err
	}
	if sl.static >= 0 {
		i := binary.NativeEndian.Uint32(key)
		if i >= sl.maxEntries {
			return 0, nil
		}
		return interp.StaticPointer(sl.static, uint32(uint64(i)*sl.stride+uint64(cpu)*sl.valStride)), nil
	}
	v := ref.Map.ProgLookup(int(cpu), key)
	if v == nil {
		return 0, nil
	}
	return valuePointer(vm, rc, ref, v)
}

// resolveMapRegions adds, after the arrays' values, the static regions of
// the other maps whose memory programs address: ring buffer data (records
// are pointers into it). It records them in staticOf.
func (p *Program) resolveMapRegions(statics *[]interp.Region, staticOf map[int]int) error {
	for i, r := range p.refs {
		rb, ok := r.Map.(*maps.Ringbuf)
		if !ok {
			continue
		}
		if len(*statics) >= interp.MaxStaticRegions {
			return ErrTooManyMaps
		}
		*statics = append(*statics, interp.Region{Data: rb.Data(), Writable: r.Write, NoRead: !r.Read})
		staticOf[i] = len(*statics) - 1
	}
	return nil
}

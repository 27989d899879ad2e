package prog

import (
	"golang.org/x/sys/unix"

	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// HelperPerfEventOutput is bpf_perf_event_output(ctx, map, flags, data,
// size).
const HelperPerfEventOutput = verifier.FnPerfEventOutput

// helperPerfEventOutput is bpf_perf_event_output as the kernel's
// per-type variants: a PERF_RECORD_SAMPLE of data[:size] to the perf
// ring in slot flags&BPF_F_INDEX_MASK (BPF_F_CURRENT_CPU: the slot of the
// CPU the program runs on) of a perf event array. Socket filters
// (bpf_skb_event_output) and XDP (bpf_xdp_event_output) may append the
// first (flags&BPF_F_CTXLEN_MASK)>>32 bytes of the packet: -EFAULT if
// the packet is shorter. Other types (bpfd's seccomp programs, as the
// kernel's tracing variant) take index bits only. -EINVAL for other flag
// bits, -E2BIG beyond max_entries, -ENOENT for an empty slot, -EOPNOTSUPP
// for a ring bound to another CPU, -ENOSPC when the ring is full (the
// sample counts as lost).
func helperPerfEventOutput(vm *interp.VM, _, r2, r3, r4, r5 uint64) (uint64, error) {
	rc, ref, _, err := mapArg(vm, r2)
	if err != nil {
		return 0, err
	}
	pa, ok := ref.Map.(*maps.PerfEventArray)
	if !ok {
		return 0, errBadMapPtr
	}
	data, err := vm.Mem(r4, int(uint32(r5)), false)
	if err != nil {
		return 0, err
	}
	flags := r3
	var ctx []byte
	switch rc.p.typ {
	case SocketFilter, XDP:
		if flags&^(maps.PerfIndexMask|maps.PerfCtxLenMask) != 0 {
			return errRet(unix.EINVAL), nil
		}
		n := int((flags & maps.PerfCtxLenMask) >> 32)
		if ctx, ok = rc.ctxBytes(n); !ok {
			return errRet(unix.EFAULT), nil
		}
	default:
		if flags&^maps.PerfIndexMask != 0 {
			return errRet(unix.EINVAL), nil
		}
	}
	if err := pa.Output(rc.cpu, flags&maps.PerfIndexMask, data, ctx); err != nil {
		return errRet(errnoOf(err)), nil
	}
	return 0, nil
}

// ctxBytes returns the first n bytes of the packet (socket filters: from
// skb->data, the network header; XDP: from data, fragments included);
// false if the packet is shorter.
func (rc *runCtx) ctxBytes(n int) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	if rc.p.typ == SocketFilter {
		if n > len(rc.pkt) {
			return nil, false
		}
		return rc.pkt[:n], true
	}
	x := &rc.xdp
	if n > x.length() {
		return nil, false
	}
	if n <= x.end-x.data {
		return x.buf[x.data : x.data+n], true
	}
	out := make([]byte, 0, n) // fragments: gathered (rare; a copy per call)
	x.bytesAt(0, n, func(b []byte) { out = append(out, b...) })
	return out, true
}

package prog

import (
	"github.com/bpfd-project/bpfd/pkg/interp"
	"github.com/bpfd-project/bpfd/pkg/maps"
	"github.com/bpfd-project/bpfd/pkg/verifier"
)

// bpf_redirect_map(map, key, flags) for XDP programs, as the kernel's
// __bpf_xdp_redirect_map: flags beyond the fallback action (low two
// bits) and, for device maps, BPF_F_BROADCAST and BPF_F_EXCLUDE_INGRESS
// give XDP_ABORTED; a key with no target gives the fallback action
// (flags & 3) unless BPF_F_BROADCAST is set; otherwise XDP_REDIRECT. A
// test run returns that action and sends nothing, as the kernel's test
// run without live frames. The maps are pkg/maps' redirect maps (an
// XSKMAP never has a target in bpfd: see maps.DevMap).

// HelperRedirectMap is bpf_redirect_map's number.
const HelperRedirectMap = verifier.FnRedirectMap

func helperRedirectMap(vm *interp.VM, r1, r2, r3, _, _ uint64) (uint64, error) {
	rc, ref, _, err := mapArg(vm, r1)
	if err != nil {
		return 0, err
	}
	allowed := maps.RedirectActionMask
	t := ref.Map.Spec().Type
	if t == maps.TypeDevmap || t == maps.TypeDevmapHash {
		allowed |= maps.RedirectBroadcast | maps.RedirectExcludeIngress
	}
	if r3&^allowed != 0 {
		return xdpAborted, nil
	}
	rm, ok := ref.Map.(maps.Redirector)
	if !ok {
		return xdpAborted, nil
	}
	if !rm.RedirectTarget(rc.cpu, uint32(r2)) && r3&maps.RedirectBroadcast == 0 {
		return r3 & maps.RedirectActionMask, nil
	}
	return xdpRedirect, nil
}

// restrictMapHelpers removes from protos the map helpers program type t
// may not call (the kernel offers bpf_redirect_map to XDP only).
func restrictMapHelpers(t Type, protos map[int32]*verifier.HelperProto) {
	if t != XDP {
		delete(protos, verifier.FnRedirectMap)
	}
}

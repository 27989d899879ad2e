package verifier

import "fmt"

// Kernel helper numbers bpfd implements.
const (
	FnMapLookupElem     int32 = 1
	FnMapUpdateElem     int32 = 2
	FnMapDeleteElem     int32 = 3
	FnKtimeGetNs        int32 = 5
	FnTracePrintk       int32 = 6
	FnGetPrandomU32     int32 = 7
	FnGetSmpProcessorID int32 = 8
	FnTailCall          int32 = 12
	FnGetCurrentPidTgid int32 = 14
	FnGetCurrentUidGid  int32 = 15
	FnGetCurrentComm    int32 = 16
	FnKtimeGetBootNs    int32 = 125
	FnLoop              int32 = 181
)

// KernelHelpers returns fresh prototypes, with the kernel's argument and
// return types, of the helpers bpfd implements: map_lookup_elem 1 (needs
// read mode), map_update_elem 2 and map_delete_elem 3 (need write mode),
// ktime_get_ns 5, trace_printk 6, get_prandom_u32 7, get_smp_processor_id 8,
// tail_call 12 (PROG_ARRAY, needs read mode), get_current_pid_tgid 14,
// get_current_uid_gid 15, get_current_comm 16, ktime_get_boot_ns 125,
// loop 181, and the map helpers (MapHelpers). The caller may modify the
// returned map.
func KernelHelpers() map[int32]*HelperProto {
	m := kernelHelpers()
	for n, p := range MapHelpers() {
		m[n] = p
	}
	return m
}

func kernelHelpers() map[int32]*HelperProto {
	integer := func(name string) *HelperProto { return &HelperProto{Name: name} }
	return map[int32]*HelperProto{
		FnMapLookupElem: {Name: "map_lookup_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey},
			Ret: RetMapValueOrNull, MapRead: true},
		FnMapUpdateElem: {Name: "map_update_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey, ArgPtrToMapValue, ArgAnything},
			MapWrite: true},
		FnMapDeleteElem: {Name: "map_delete_elem", Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey},
			MapWrite: true},
		FnKtimeGetNs: integer("ktime_get_ns"),
		// As the kernel's proto: only the format is checked; the three
		// optional values may be uninitialised (bpf_printk with fewer
		// arguments leaves them so).
		FnTracePrintk:       {Name: "trace_printk", Args: [5]ArgType{ArgPtrToMem, ArgConstSize}},
		FnGetPrandomU32:     integer("get_prandom_u32"),
		FnGetSmpProcessorID: integer("get_smp_processor_id"),
		FnTailCall: {Name: "tail_call", Args: [5]ArgType{ArgPtrToCtx, ArgConstMapPtr, ArgAnything},
			Ret: RetVoid, MapRead: true, MapTypes: []uint32{MapTypeProgArray}, TailCall: true},
		FnGetCurrentPidTgid: integer("get_current_pid_tgid"),
		FnGetCurrentUidGid:  integer("get_current_uid_gid"),
		FnGetCurrentComm:    {Name: "get_current_comm", Args: [5]ArgType{ArgPtrToUninitMem, ArgConstSize}},
		FnKtimeGetBootNs:    integer("ktime_get_boot_ns"),
		FnLoop:              {Name: "loop", Args: [5]ArgType{ArgAnything, ArgPtrToFunc, ArgPtrToStackOrNull, ArgAnything}},
	}
}

// kernelHelperNames names some kernel helpers bpfd does not implement, so
// that "unknown func" errors say which one a program asked for.
var kernelHelperNames = map[int32]string{
	1: "map_lookup_elem", 2: "map_update_elem", 3: "map_delete_elem",
	4: "probe_read", 5: "ktime_get_ns", 6: "trace_printk", 7: "get_prandom_u32",
	8: "get_smp_processor_id", 9: "skb_store_bytes", 10: "l3_csum_replace",
	11: "l4_csum_replace", 12: "tail_call", 13: "clone_redirect",
	14: "get_current_pid_tgid", 15: "get_current_uid_gid", 16: "get_current_comm",
	17: "get_cgroup_classid", 18: "skb_vlan_push", 19: "skb_vlan_pop",
	20: "skb_get_tunnel_key", 21: "skb_set_tunnel_key", 22: "perf_event_read",
	23: "redirect", 24: "get_route_realm", 25: "perf_event_output",
	26: "skb_load_bytes", 27: "get_stackid", 28: "csum_diff",
	35: "get_current_task", 44: "xdp_adjust_head", 45: "probe_read_str",
	51: "redirect_map", 54: "xdp_adjust_meta", 65: "xdp_adjust_tail",
	87: "map_push_elem", 88: "map_pop_elem", 89: "map_peek_elem",
	112: "probe_read_user", 113: "probe_read_kernel", 114: "probe_read_user_str",
	115: "probe_read_kernel_str", 125: "ktime_get_boot_ns", 130: "ringbuf_output",
	131: "ringbuf_reserve", 132: "ringbuf_submit", 133: "ringbuf_discard",
	165: "snprintf", 177: "trace_vprintk", 181: "loop", 194: "strncmp",
}

func helperName(n int32, p *HelperProto) string {
	if p != nil && p.Name != "" {
		return fmt.Sprintf("bpf_%s#%d", p.Name, n)
	}
	if name, ok := kernelHelperNames[n]; ok {
		return fmt.Sprintf("bpf_%s#%d", name, n)
	}
	return fmt.Sprintf("#%d", n)
}

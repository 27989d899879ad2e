// SPDX-License-Identifier: GPL-2.0
// Array lookups with constant keys whose values are used without a NULL
// check, as programs written for kernels since 6.14 do (the verifier knows
// an in-range array element exists): a per-CPU packet counter and a struct
// of byte counters per EtherType class at key 0, and a config array read
// at fixed indexes (0 and 1).
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ck_pkts SEC(".maps");

struct ck_stats { __u64 ipv4, ipv6, other, runt; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ck_stats);
} ck_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} ck_config SEC(".maps");

SEC("xdp")
int xdp_const_key(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, one = 1;
	__u64 len = end - data;

	__u64 *n = bpf_map_lookup_elem(&ck_pkts, &zero);
	*n += 1;
	__u32 *drop_short = bpf_map_lookup_elem(&ck_config, &zero);
	__u32 *min_len = bpf_map_lookup_elem(&ck_config, &one);

	struct ck_stats *st = bpf_map_lookup_elem(&ck_bytes, &zero);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end) {
		__sync_fetch_and_add(&st->runt, len);
		return *drop_short ? XDP_DROP : XDP_PASS;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		__sync_fetch_and_add(&st->ipv4, len);
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		__sync_fetch_and_add(&st->ipv6, len);
	else
		__sync_fetch_and_add(&st->other, len);
	return len < *min_len ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";

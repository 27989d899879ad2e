// SPDX-License-Identifier: GPL-2.0
// Array config map: XDP drops packets longer than config[0] bytes (0 means
// no limit) and, when config[1] is non-zero, packets whose first byte
// matches config[2 + n] for any n < config[1] (bounded index).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define NCFG 16

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NCFG);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

static __always_inline __u32 cfg(__u32 i)
{
	__u32 *v = bpf_map_lookup_elem(&config, &i);
	return v ? *v : 0;
}

SEC("xdp")
int xdp_config(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	__u32 max = cfg(0);

	if (max && len > max)
		return XDP_DROP;
	if (data + 1 > data_end)
		return XDP_PASS;
	__u8 first = *(__u8 *)data;
	__u32 n = cfg(1);
	for (__u32 i = 0; i < NCFG - 2; i++) {
		if (i >= n)
			break;
		if (cfg(2 + i) == first)
			return XDP_DROP;
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";

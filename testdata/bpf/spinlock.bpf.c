// SPDX-License-Identifier: GPL-2.0
// bpf_spin_lock: an XDP program keeping packet and byte counters in an
// array and a per-length hash, each updated as a pair under the value's
// lock, so that a BPF_F_LOCK read from user space always sees a matching
// pair.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pair {
	__u64 packets;
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pair);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct pair);
} by_len SEC(".maps");

static void add(struct pair *p, __u64 len)
{
	bpf_spin_lock(&p->lock);
	p->packets++;
	p->bytes += len;
	bpf_spin_unlock(&p->lock);
}

SEC("xdp")
int count_locked(struct xdp_md *ctx)
{
	__u64 len = ctx->data_end - ctx->data;
	__u32 zero = 0, bucket = len / 64;
	struct pair *p = bpf_map_lookup_elem(&totals, &zero);
	if (!p)
		return XDP_ABORTED;
	add(p, len);
	p = bpf_map_lookup_elem(&by_len, &bucket);
	if (!p) {
		struct pair init = {};
		bpf_map_update_elem(&by_len, &bucket, &init, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&by_len, &bucket);
		if (!p)
			return XDP_ABORTED;
	}
	add(p, len);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";

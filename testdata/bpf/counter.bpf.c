// SPDX-License-Identifier: GPL-2.0
// Hash-map counter: a socket filter counting packets and bytes per
// EtherType (skb->protocol), accepting every packet whole.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct counts);
} by_proto SEC(".maps");

SEC("socket")
int count_proto(struct __sk_buff *skb)
{
	__u32 key = skb->protocol;
	struct counts *c = bpf_map_lookup_elem(&by_proto, &key);
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, skb->len);
	} else {
		struct counts init = { .packets = 1, .bytes = skb->len };
		bpf_map_update_elem(&by_proto, &key, &init, BPF_NOEXIST);
	}
	return skb->len;
}

char _license[] SEC("license") = "GPL";

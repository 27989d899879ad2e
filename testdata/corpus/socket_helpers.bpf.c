// SPDX-License-Identifier: GPL-2.0
// Socket filters using the helpers the kernel offers them: header copies
// relative to the MAC and network headers, the socket's uid, and a hash
// map counting flows by (protocol, destination port).
#include "common.h"

struct flow { __u8 proto; __u8 pad; __u16 dport; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, struct flow);
	__type(value, __u64);
} flows SEC(".maps");

SEC("socket")
int sock_relative(struct __sk_buff *skb)
{
	struct ethhdr eth;
	struct iphdr ip;
	if (bpf_skb_load_bytes_relative(skb, 0, &eth, sizeof(eth), BPF_HDR_START_MAC))
		return 1;
	if (eth.h_proto != bpf_htons(ETH_P_IP))
		return 2;
	if (bpf_skb_load_bytes_relative(skb, 0, &ip, sizeof(ip), BPF_HDR_START_NET))
		return 3;
	if (bpf_get_socket_uid(skb) != 0)
		return 4;
	if (bpf_get_socket_cookie(skb) == 0)
		return 5;
	struct flow f = { .proto = ip.protocol };
	__be16 ports[2];
	if ((ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP) &&
	    !bpf_skb_load_bytes(skb, ip.ihl * 4, ports, sizeof(ports)))
		f.dport = bpf_ntohs(ports[1]);
	__u64 one = 1, *n = bpf_map_lookup_elem(&flows, &f);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&flows, &f, &one, BPF_ANY);
	return skb->len;
}

char _license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
// A header parsing chain as packet counters do: Ethernet, up to two VLAN
// tags, IPv4 (options) or IPv6 with extension headers, TCP/UDP/ICMP;
// counts packets and bytes per L4 protocol and per VLAN in array maps,
// drops malformed packets.
#include "common.h"

struct stats { __u64 packets, bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct stats);
} proto_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u64);
} vlan_count SEC(".maps");

static __always_inline int skip_ipv6_ext(struct cursor *c, __u8 *nexthdr)
{
#pragma unroll
	for (int i = 0; i < 6; i++) {
		switch (*nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			__u8 *h = c->pos;
			if ((void *)(h + 2) > c->end)
				return -1;
			*nexthdr = h[0];
			c->pos = h + (h[1] + 1) * 8;
			break;
		}
		case IPPROTO_FRAGMENT: {
			__u8 *h = c->pos;
			if ((void *)(h + 8) > c->end)
				return -1;
			*nexthdr = h[0];
			c->pos = h + 8;
			break;
		}
		default:
			return 0;
		}
	}
	return 0;
}

SEC("xdp")
int xdp_parse_stats(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	__u64 len = c.end - c.pos;
	__u16 vlan;
	int proto = parse_eth(&c, &vlan);
	__u8 l4;
	if (proto < 0)
		return XDP_DROP;
	if (vlan) {
		__u64 one = 1, *n = bpf_map_lookup_elem(&vlan_count, &vlan);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bpf_map_update_elem(&vlan_count, &vlan, &one, BPF_NOEXIST);
	}
	if (proto == ETH_P_IP) {
		struct iphdr *ip = c.pos;
		if ((void *)(ip + 1) > c.end || ip->ihl < 5)
			return XDP_DROP;
		c.pos = (void *)ip + ip->ihl * 4;
		l4 = ip->protocol;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = c.pos;
		if ((void *)(ip6 + 1) > c.end)
			return XDP_DROP;
		c.pos = ip6 + 1;
		l4 = ip6->nexthdr;
		if (skip_ipv6_ext(&c, &l4) < 0)
			return XDP_DROP;
	} else {
		return XDP_PASS;
	}
	switch (l4) {
	case IPPROTO_TCP:
		if (c.pos + sizeof(struct tcphdr) > c.end)
			return XDP_DROP;
		break;
	case IPPROTO_UDP:
		if (c.pos + sizeof(struct udphdr) > c.end)
			return XDP_DROP;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (c.pos + 4 > c.end)
			return XDP_DROP;
		break;
	}
	__u32 key = l4;
	struct stats *s = bpf_map_lookup_elem(&proto_stats, &key);
	if (s) {
		__sync_fetch_and_add(&s->packets, 1);
		__sync_fetch_and_add(&s->bytes, len);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";

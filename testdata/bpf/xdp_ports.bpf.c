// SPDX-License-Identifier: GPL-2.0
// Packet parser with bounds checks: passes IPv4/IPv6 TCP and UDP packets
// whose destination port is in the "ports" map, drops every other TCP/UDP
// packet, and passes non-IP traffic. Counts verdicts in "stats".
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);   /* destination port, host byte order */
	__type(value, __u8);  /* 1 = allowed */
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);   /* 0 = passed, 1 = dropped */
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int verdict(int v)
{
	__u32 k = v == XDP_PASS ? 0 : 1;
	__u64 *c = bpf_map_lookup_elem(&stats, &k);
	if (c)
		__sync_fetch_and_add(c, 1);
	return v;
}

SEC("xdp")
int xdp_ports(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 proto;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return verdict(XDP_DROP);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return verdict(XDP_DROP);
		if (ip->ihl < 5)
			return verdict(XDP_DROP);
		proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return verdict(XDP_DROP);
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return verdict(XDP_PASS);
	}

	__u16 dport;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return verdict(XDP_DROP);
		dport = bpf_ntohs(tcp->dest);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return verdict(XDP_DROP);
		dport = bpf_ntohs(udp->dest);
	} else {
		return verdict(XDP_PASS);
	}

	__u8 *ok = bpf_map_lookup_elem(&ports, &dport);
	if (ok && *ok)
		return verdict(XDP_PASS);
	return verdict(XDP_DROP);
}

char _license[] SEC("license") = "GPL";

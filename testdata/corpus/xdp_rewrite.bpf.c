// SPDX-License-Identifier: GPL-2.0
// Packet rewriting as forwarding and reflecting programs do: swap MACs
// and bounce (XDP_TX), decrement the IPv4 TTL with an incremental
// checksum update, and answer ICMP echo requests in place.
#include "common.h"

SEC("xdp")
int xdp_swap_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp")
int xdp_ttl(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	__u16 vlan;
	if (parse_eth(&c, &vlan) != ETH_P_IP)
		return XDP_PASS;
	struct iphdr *ip = c.pos;
	if ((void *)(ip + 1) > c.end)
		return XDP_DROP;
	if (ip->ttl <= 1)
		return XDP_DROP;
	__u16 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	csum_replace2(&ip->check, old, *(__u16 *)&ip->ttl);
	return XDP_PASS;
}

SEC("xdp")
int xdp_icmp_echo(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth = c.pos;
	__u16 vlan;
	if (parse_eth(&c, &vlan) != ETH_P_IP)
		return XDP_PASS;
	struct iphdr *ip = c.pos;
	if ((void *)(ip + 1) > c.end || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP)
		return XDP_PASS;
	struct icmphdr *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > c.end || icmp->type != ICMP_ECHO)
		return XDP_PASS;
	__be32 a = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = a;
	__u16 old = *(__u16 *)icmp;
	icmp->type = ICMP_ECHOREPLY;
	csum_replace2(&icmp->checksum, old, *(__u16 *)icmp);
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

// xdp_port_nat rewrites UDP/TCP destination port 53 to 5353 and fixes
// the L4 checksum with bpf_csum_diff.
SEC("xdp")
int xdp_port_nat(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	__u16 vlan;
	if (parse_eth(&c, &vlan) != ETH_P_IP)
		return XDP_PASS;
	struct iphdr *ip = c.pos;
	if ((void *)(ip + 1) > c.end || ip->ihl != 5)
		return XDP_PASS;
	void *l4 = ip + 1;
	__u16 *csum;
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > c.end)
			return XDP_DROP;
		csum = &udp->check;
	} else if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > c.end)
			return XDP_DROP;
		csum = &tcp->check;
	} else {
		return XDP_PASS;
	}
	__be32 *ports = l4;
	if (bpf_ntohs(((__be16 *)ports)[1]) != 53)
		return XDP_PASS;
	__be32 from = *ports;
	((__be16 *)ports)[1] = bpf_htons(5353);
	__be32 to = *ports;
	__s64 d = bpf_csum_diff(&from, 4, &to, 4, ~((__u32)*csum) & 0xffff);
	if (d < 0)
		return XDP_ABORTED;
	*csum = csum_fold16((__u32)d);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";

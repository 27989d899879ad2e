// SPDX-License-Identifier: GPL-2.0
// Head and tail adjustment as load balancers and tunnels do: IPIP
// encapsulation (adjust_head to make room, a new outer IPv4 header with
// its checksum from bpf_csum_diff), decapsulation, VLAN tag push and pop,
// metadata for a later stage, and trimming or padding the tail.
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __be32);
} tunnel_dst SEC(".maps");

SEC("xdp")
int xdp_ipip_encap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *inner = (void *)(eth + 1);
	if ((void *)(inner + 1) > end)
		return XDP_DROP;
	__u16 inner_len = bpf_ntohs(inner->tot_len);
	struct ethhdr saved = *eth;
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > end)
		return XDP_ABORTED;
	*eth = saved;
	__u32 zero = 0;
	__be32 *dst = bpf_map_lookup_elem(&tunnel_dst, &zero);
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = 0;
	outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = 0;
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = bpf_htonl(0x0a000063);
	outer->daddr = dst ? *dst : bpf_htonl(0x0a0000fe);
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)outer, sizeof(*outer), 0);
	if (sum < 0)
		return XDP_ABORTED;
	outer->check = csum_fold16((__u32)sum);
	return XDP_TX;
}

SEC("xdp")
int xdp_ipip_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > end || outer->protocol != IPPROTO_IPIP || outer->ihl != 5)
		return XDP_PASS;
	struct ethhdr saved = *eth;
	if (bpf_xdp_adjust_head(ctx, sizeof(struct iphdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	*eth = saved;
	return XDP_PASS;
}

SEC("xdp")
int xdp_vlan_push(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto == bpf_htons(ETH_P_8021Q))
		return XDP_PASS;
	struct ethhdr saved = *eth;
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct vlan_hdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	struct vlan_hdr *v = (void *)(eth + 1);
	if ((void *)(v + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, saved.h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_source, saved.h_source, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_8021Q);
	v->tci = bpf_htons(42);
	v->proto = saved.h_proto;
	return XDP_PASS;
}

SEC("xdp")
int xdp_vlan_pop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_8021Q))
		return XDP_PASS;
	struct vlan_hdr *v = (void *)(eth + 1);
	if ((void *)(v + 1) > end)
		return XDP_DROP;
	struct ethhdr saved = *eth;
	saved.h_proto = v->proto;
	if (bpf_xdp_adjust_head(ctx, sizeof(struct vlan_hdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	*eth = saved;
	return XDP_PASS;
}

SEC("xdp")
int xdp_meta_mark(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_meta(ctx, -8))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	__u32 *meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 2) > data)
		return XDP_ABORTED;
	meta[0] = 0xfeedf00d;
	meta[1] = ctx->data_end - ctx->data;
	return XDP_PASS;
}

SEC("xdp")
int xdp_tail(struct xdp_md *ctx)
{
	int len = bpf_xdp_get_buff_len(ctx);
	if (len > 128)
		return bpf_xdp_adjust_tail(ctx, 128 - len) ? XDP_ABORTED : XDP_PASS;
	if (len < 60)
		return bpf_xdp_adjust_tail(ctx, 60 - len) ? XDP_ABORTED : XDP_TX;
	return XDP_PASS;
}

// xdp_bytes reads the IP header through bpf_xdp_load_bytes (as programs
// for multi-buffer frames do), stamps the last two bytes of the frame
// with bpf_xdp_store_bytes and returns the total length's low bits.
SEC("xdp.frags")
int xdp_bytes(struct xdp_md *ctx)
{
	struct iphdr ip;
	__u32 len = bpf_xdp_get_buff_len(ctx);
	if (bpf_xdp_load_bytes(ctx, sizeof(struct ethhdr), &ip, sizeof(ip)))
		return XDP_PASS;
	__u16 stamp = bpf_htons(ip.ttl << 8 | ip.protocol);
	if (len >= 2 && len <= 0xffff)
		if (bpf_xdp_store_bytes(ctx, len - 2, &stamp, 2))
			return XDP_ABORTED;
	return XDP_PASS + ((len & 0xff) << 8);
}

SEC("xdp")
int xdp_redirect_port(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	__u16 vlan;
	if (parse_eth(&c, &vlan) != ETH_P_IP)
		return bpf_redirect(7, 1); /* bad flags: XDP_ABORTED */
	return bpf_redirect(1, 0);
}

char _license[] SEC("license") = "GPL";

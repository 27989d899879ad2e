// SPDX-License-Identifier: GPL-2.0
// Socket filters as tcpdump-style classic filters are written: legacy
// packet loads (LD_ABS/LD_IND through llvm's load_byte/half/word
// builtins), with the network and link-layer ancillary offsets, and
// filters on skb fields.
#include "common.h"

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

#define SKF_NET_OFF (-0x100000)
#define SKF_LL_OFF (-0x200000)

// "tcp dst port 22 or udp port 53": IPv4 only, header length from IHL.
SEC("socket")
int sock_ports(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	__u8 proto = load_byte(skb, offsetof(struct iphdr, protocol));
	__u32 ihl = (load_byte(skb, 0) & 0x0f) * 4;
	if (load_half(skb, offsetof(struct iphdr, frag_off)) & 0x1fff)
		return 0;
	__u16 dport = load_half(skb, ihl + 2);
	__u16 sport = load_half(skb, ihl);
	if (proto == IPPROTO_TCP && dport == 22)
		return -1;
	if (proto == IPPROTO_UDP && (dport == 53 || sport == 53))
		return skb->len;
	return 0;
}

// Link-layer checks through SKF_LL_OFF: keep only frames to a multicast
// or broadcast MAC, and report the EtherType.
SEC("socket")
int sock_ll(struct __sk_buff *skb)
{
	__u8 dst0 = load_byte(skb, SKF_LL_OFF);
	__u16 type = load_half(skb, SKF_LL_OFF + 12);
	if (!(dst0 & 1))
		return 0;
	return type;
}

// IPv6 next header and a word past the fixed header, through
// SKF_NET_OFF; programs that read past the end return 0.
SEC("socket")
int sock_ipv6(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return 1;
	__u8 nh = load_byte(skb, SKF_NET_OFF + 6);
	__u32 w = load_word(skb, 40);
	return nh == IPPROTO_TCP ? (w >> 16) : nh;
}

// skb fields: drop what is not for this host, count by pkt_type and
// protocol in cb, truncate to 64 bytes.
SEC("socket")
int sock_fields(struct __sk_buff *skb)
{
	skb->cb[0] += 1;
	skb->cb[1] = skb->pkt_type;
	skb->cb[2] = skb->protocol;
	if (skb->pkt_type == 3 /* PACKET_OTHERHOST */)
		return 0;
	if (skb->protocol == bpf_htons(0x0004) /* ETH_P_802_2 */)
		return 1;
	return skb->len > 64 ? 64 : skb->len;
}

char _license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
// Shared parsing helpers of bpfd's corpus programs (written for bpfd's
// differential tests; they reproduce the patterns of public socket
// filters and XDP programs in code of our own).
#pragma once
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

// ICMP (linux/icmp.h pulls in libc headers).
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

// cursor walks a packet; every read is bounds-checked against end.
struct cursor {
	void *pos;
	void *end;
};

// parse_eth skips the Ethernet header and up to two VLAN tags, returning
// the inner EtherType (host order) or -1.
static __always_inline int parse_eth(struct cursor *c, __u16 *vlan_id)
{
	struct ethhdr *eth = c->pos;
	if ((void *)(eth + 1) > c->end)
		return -1;
	c->pos = eth + 1;
	__u16 proto = bpf_ntohs(eth->h_proto);
	*vlan_id = 0;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		struct vlan_hdr *v = c->pos;
		if ((void *)(v + 1) > c->end)
			return -1;
		c->pos = v + 1;
		*vlan_id = bpf_ntohs(v->tci) & 0x0fff;
		proto = bpf_ntohs(v->proto);
	}
	return proto;
}

// csum_fold16 folds a 32-bit one's complement sum to 16 bits.
static __always_inline __u16 csum_fold16(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

// csum_replace2 updates a checksum for a 16-bit field change (RFC 1624).
static __always_inline void csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
	__u32 c = (__u16)~*sum;
	c += (__u16)~old;
	c += new;
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	*sum = (__u16)~c;
}

// SPDX-License-Identifier: GPL-2.0
// Fixture of the bpf(2) emulation tests (pkg/bpfemu): one object with a
// socket filter and an XDP program, a hash and an array map, and global
// data (.rodata, .bss), loaded unchanged by cilium/ebpf and libbpf against
// the kernel and against bpfd.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);	/* EtherType as skb->protocol has it */
	__type(value, struct counts);
} by_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);	/* an XDP verdict */
	__type(value, __u64);
} verdicts SEC(".maps");

/* The EtherType XDP passes; everything else is dropped. */
const volatile __u16 pass_proto = 0x0008; /* ETH_P_IP, network byte order */

/* Bytes seen by XDP. */
__u64 xdp_bytes = 0;

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

/* No context, map or helper: the kernel's xlated dump of it is the
 * instructions as loaded, so bpftool's dump compares with bpfd's. */
SEC("socket")
int seven(struct __sk_buff *skb)
{
	return 7;
}

SEC("xdp")
int xdp_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;
	__u32 v = XDP_DROP;
	__u64 *n;

	__sync_fetch_and_add(&xdp_bytes, data_end - data);
	if (data + 14 > data_end)
		v = XDP_ABORTED;
	else if ((p[12] | p[13] << 8) == pass_proto)
		v = XDP_PASS;
	n = bpf_map_lookup_elem(&verdicts, &v);
	if (n)
		__sync_fetch_and_add(n, 1);
	return v;
}

char _license[] SEC("license") = "GPL";

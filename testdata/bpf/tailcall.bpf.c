// SPDX-License-Identifier: GPL-2.0
// Tail calls through a PROG_ARRAY: the entry program jumps to slot
// (packet length % 4); slots 0 and 1 hold programs returning 100 and 200;
// an empty slot falls through and returns 1.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jump_table SEC(".maps");

SEC("socket")
int entry(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &jump_table, skb->len % 4);
	return 1;
}

SEC("socket")
int slot0(struct __sk_buff *skb)
{
	return 100;
}

SEC("socket")
int slot1(struct __sk_buff *skb)
{
	return 200;
}

char _license[] SEC("license") = "GPL";

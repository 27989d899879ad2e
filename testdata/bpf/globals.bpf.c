// SPDX-License-Identifier: GPL-2.0
// Global data as libbpf lays it out: .rodata (const), .data (initialised)
// and .bss (zeroed) become single-entry array maps referenced with
// BPF_PSEUDO_MAP_VALUE.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 multiplier = 3;
__u64 runs = 0;           /* .bss */
__u64 total = 100;        /* .data */

SEC("socket")
int globals(struct __sk_buff *skb)
{
	runs++;
	total += skb->len * multiplier;
	return (int)(total & 0x7fffffff);
}

char _license[] SEC("license") = "GPL";

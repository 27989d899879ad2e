// SPDX-License-Identifier: GPL-2.0
// bpf-to-bpf calls: non-inlined subprograms with their own stack frames.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __noinline __u64 fib(__u32 n)
{
	__u64 a = 0, b = 1;
	for (__u32 i = 0; i < n && i < 90; i++) {
		__u64 t = a + b;
		a = b;
		b = t;
	}
	return a;
}

static __noinline __u64 mix(__u64 x, __u64 y)
{
	volatile __u64 buf[4] = { x, y, x ^ y, x + y };
	return buf[0] * 3 + buf[1] * 5 + buf[2] + buf[3];
}

SEC("socket")
int calls(struct __sk_buff *skb)
{
	__u64 f = fib(skb->len % 64);
	return (int)(mix(f, skb->len) & 0x7fffffff);
}

char _license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
// Bounded loops: a checksum over up to 64 packet bytes with a verifier-
// visible bound, and the same sum through bpf_loop with a callback.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int sum_bytes(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *data_end = (void *)(long)ctx->data_end;
	__u32 sum = 0;

	for (int i = 0; i < 64; i++) {
		if (data + i + 1 > data_end)
			break;
		sum += data[i];
	}
	return sum & 3; /* a valid XDP action */
}

struct loop_ctx {
	__u64 acc;
};

static long step(__u64 i, void *arg)
{
	struct loop_ctx *c = arg;
	c->acc += i * i;
	return 0;
}

SEC("socket")
int squares(struct __sk_buff *skb)
{
	struct loop_ctx c = {};
	bpf_loop(10, step, &c, 0);
	return (int)c.acc; /* 0^2 + ... + 9^2 = 285 */
}

char _license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
// Example 03: a seccomp filter that counts the syscalls routed to it, per
// syscall number, and allows them all. The filter writes "counts"; the
// filtered process gets a read-only descriptor of it and reads its own
// counts.
#include <linux/bpf.h>
#include <linux/seccomp.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);   /* syscall number */
	__type(value, __u64); /* calls seen */
} counts SEC(".maps");

SEC("seccomp")
int count(struct seccomp_data *ctx)
{
	__u32 nr = ctx->nr;
	__u64 *n = bpf_map_lookup_elem(&counts, &nr);
	if (n)
		__sync_fetch_and_add(n, 1);
	return SECCOMP_RET_ALLOW;
}

char _license[] SEC("license") = "GPL";

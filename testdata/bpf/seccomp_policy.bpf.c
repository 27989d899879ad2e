// SPDX-License-Identifier: GPL-2.0
// A seccomp policy for bpfd's seccomp program type: syscalls whose number is
// in "denied" fail with the errno stored there; socket(AF_INET6, ...) fails
// with EPERM; every syscall is counted per number in "counts".
#include <linux/bpf.h>
#include <linux/seccomp.h>
#include <bpf/bpf_helpers.h>

#define AF_INET6 10
#define NR_socket 41
#define EPERM 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);   /* syscall number */
	__type(value, __u32); /* errno to return */
} denied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);   /* syscall number */
	__type(value, __u64);
} counts SEC(".maps");

SEC("seccomp")
int policy(struct seccomp_data *ctx)
{
	__u32 nr = ctx->nr;
	__u64 *c = bpf_map_lookup_elem(&counts, &nr);
	if (c)
		__sync_fetch_and_add(c, 1);

	if (nr == NR_socket && ctx->args[0] == AF_INET6)
		return SECCOMP_RET_ERRNO | EPERM;
	__u32 *e = bpf_map_lookup_elem(&denied, &nr);
	if (e)
		return SECCOMP_RET_ERRNO | (*e & SECCOMP_RET_DATA);
	return SECCOMP_RET_ALLOW;
}

char _license[] SEC("license") = "GPL";

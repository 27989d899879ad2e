// SPDX-License-Identifier: GPL-2.0
// Example 04: a seccomp filter that reads its policy from a map a trusted
// process keeps writing: "policy" maps a syscall number to the errno that
// syscall must fail with; syscalls not in the map are allowed. bpfd runs
// the filter for each routed syscall, so a change to the map applies from
// the next syscall on.
#include <linux/bpf.h>
#include <linux/seccomp.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);   /* syscall number */
	__type(value, __u32); /* errno to fail it with */
} policy SEC(".maps");

SEC("seccomp")
int filter(struct seccomp_data *ctx)
{
	__u32 nr = ctx->nr;
	__u32 *err = bpf_map_lookup_elem(&policy, &nr);
	if (err)
		return SECCOMP_RET_ERRNO | (*err & SECCOMP_RET_DATA);
	return SECCOMP_RET_ALLOW;
}

char _license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
// Example 02: a seccomp filter whose policy lives in a map.
//
// "policy" maps a syscall number to the errno that syscall must fail with;
// syscalls not in the map are allowed. The filter only reads the map, so
// it can be loaded through a read-only descriptor of it.
//
// "tamper" is a variant that clears the entry it finds (errno 0: allow)
// instead of obeying it: it writes the map, so bpfd's verifier refuses to
// load it through a read-only descriptor (EACCES), whatever the loader's
// privileges.
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

SEC("seccomp")
int tamper(struct seccomp_data *ctx)
{
	__u32 nr = ctx->nr;
	__u32 *err = bpf_map_lookup_elem(&policy, &nr);
	if (err)
		*err = 0; /* a write to the map: refused through a read-only descriptor */
	return SECCOMP_RET_ALLOW;
}

char _license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
// Example 01: a seccomp filter written in eBPF. bpfd runs it for every
// syscall the filter routes to it and answers with its return value:
// socket(AF_INET6, ...) fails with EPERM, everything else is allowed.
//
// A seccomp program sees struct seccomp_data: the syscall number, the
// architecture, the instruction pointer and the six arguments as integers.
// Memory behind pointer arguments is out of reach, by design.
#include <linux/bpf.h>
#include <linux/seccomp.h>
#include <bpf/bpf_helpers.h>

#define NR_socket 41 /* x86_64 */
#define AF_INET6 10
#define EPERM 1

SEC("seccomp")
int deny_inet6(struct seccomp_data *ctx)
{
	if (ctx->nr == NR_socket && ctx->args[0] == AF_INET6)
		return SECCOMP_RET_ERRNO | EPERM;
	return SECCOMP_RET_ALLOW;
}

char _license[] SEC("license") = "GPL";

// Package bpfemu answers a process's own bpf(2) system calls with bpfd, so
// that unmodified tools (bpftool, libbpf applications, static Go programs
// built on cilium/ebpf) run against bpfd, as any user. `bpfctl exec --bpf`
// is its command-line face; docs/emulation.md is the user's guide.
//
// # Who supervises
//
// The traced process runs under a seccomp filter (installed by the shim of
// pkg/seccomp before its execve, with no_new_privs) that routes bpf(2) and
// a handful of file system calls (Syscalls) to a listener. The Supervisor
// holding that listener is the process's parent, running as the same user
// (so the kernel's ptrace access rules let it read and write the
// process's memory and take its fds), and it is an ordinary bpfd client:
// one connection of its own, handles on it, descriptors like anyone's.
// The daemon gains no privilege and learns nothing new: an emulated
// process can do exactly what a pkg/client program holding the same
// descriptors could, nothing more.
//
// # Descriptors
//
// A map, program or link fd the process holds is a bpfd descriptor (the
// client end of the daemon's socketpair), installed in the process with
// SECCOMP_IOCTL_NOTIF_ADDFD (with SECCOMP_ADDFD_FLAG_SEND where the kernel
// has it, so the fd is installed if and only if the call returns it) and
// O_CLOEXEC, as the kernel's anon_inode_getfd. It can be passed over
// SCM_RIGHTS to non-emulated clients and back, dup'ed, inherited across
// fork. When a call names an fd, the supervisor resolves it to its handle:
// a cached (task, fd) whose kcmp(KCMP_FILE) still matches the
// supervisor's copy of the descriptor; otherwise the fd is fetched with
// pidfd_getfd, recognised by its socket inode, and presented to bpfd with
// IMPORT if it is new, exactly as a pkg/client program presents a
// descriptor it received. An fd that is not a bpfd descriptor is EINVAL
// (the kernel's "not a map"), a closed one EBADF.
//
// The supervisor's copies keep objects alive, so it looks at the traced
// tasks' fd tables (/proc/TID/fd) every CollectInterval, before listing ids
// and before retrying a quota refusal, and drops whatever no task holds
// any more: a close(2) of the last fd frees the object in the daemon soon
// after, as in the kernel. A process that dies mid-call leaks nothing: an
// fd whose installation fails is released at once, and a dead process's
// objects go at the next collection (or with the supervisor).
//
// # Memory
//
// Attrs, keys, values, instructions, logs and buffers are read and written
// with process_vm_readv/process_vm_writev, which fault where the kernel's
// copy_from_user/copy_to_user would (EFAULT, also for read-only pages).
// Every read is followed, and every write preceded, by
// SECCOMP_IOCTL_NOTIF_ID_VALID, so that a pid reused after the task died
// is never trusted (see mem.go for the remaining window). Nothing the
// process passes is trusted: sizes are bounded before anything is
// allocated, pointers are checked against user space, and the decoders
// are fuzzed (FuzzBPF).
//
// # Emulated commands
//
// The attr is checked as __sys_bpf checks it: E2BIG beyond a page or for a
// non-zero tail beyond union bpf_attr (the uapi layout of Linux 6.18, 168
// bytes), EFAULT for unreadable memory, then per command the kernel's
// CHECK_ATTR (EINVAL for a non-zero byte after the command's last field)
// and the kernel's order of checks, so that errnos come out as the
// kernel's for the same misuse (TestKernelDifferential compares them):
//
//   - BPF_MAP_CREATE (to bpfd, with a BTF fd and key/value type ids as
//     bpfd's BTF objects; inner maps, map_extra, NUMA nodes other than 0
//     and offload are refused with EINVAL until bpfd has them;
//     BPF_F_MMAPABLE always, see below), BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM (a program fd as the
//     value of a program array), BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY,
//     BPF_MAP_LOOKUP_AND_DELETE_ELEM, BPF_MAP_FREEZE;
//   - BPF_MAP_LOOKUP_BATCH, BPF_MAP_LOOKUP_AND_DELETE_BATCH,
//     BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH with count in and out,
//     partial counts on errors and the kernel's cursors (a u32 bucket for
//     hash maps, a key for the generic walk);
//   - BPF_PROG_LOAD: instructions with map fds (BPF_PSEUDO_MAP_FD,
//     BPF_PSEUDO_MAP_VALUE, and the BPF_PSEUDO_MAP_IDX forms through
//     fd_array) replaced by handles of the same descriptors, so the program
//     gets each map with the access the process's fd carries; the verifier
//     log written to log_buf as the kernel leaves it (rotating, or
//     BPF_LOG_FIXED; ENOSPC when cut, replacing the verdict), log_true_size;
//     prog_btf_fd passed on, func_info and line_info checked and read but
//     not kept (btf.go);
//   - BPF_BTF_LOAD as bpfd's BTF objects, OBJ_GET_INFO_BY_FD of a BTF fd,
//     and the BTF ids of maps and programs; BPF_BTF_GET_FD_BY_ID of a BTF
//     no traced process holds loads a copy of the BTF of a map or program
//     it may see, under the same id (btf.go);
//   - BPF_PROG_TEST_RUN with bpf_test_finish's rules (data_size_out 0
//     copies all, a smaller one cuts with ENOSPC, the full sizes reported);
//   - BPF_OBJ_PIN and BPF_OBJ_GET (with BPF_F_PATH_FD): paths under the
//     bpffs prefix (Config.BPFFS, default /sys/fs/bpf) or the daemon's pin
//     root are pins of bpfd; the supervisor opens pin files itself, as the
//     same user, so the kernel checks their permissions;
//   - BPF_OBJ_GET_INFO_BY_FD for maps (struct bpf_map_info) and programs
//     (struct bpf_prog_info with map ids, tags, run statistics, load time
//     and GPL flag from bpfd's listing, and the xlated instructions);
//   - BPF_{MAP,PROG,BTF,LINK}_GET_NEXT_ID and _GET_FD_BY_ID over the
//     objects the traced processes hold (a new descriptor with at most the
//     access theirs carries) and the user's pinned objects (opened through
//     a pin, as BPF_OBJ_GET would);
//   - BPF_ENABLE_STATS: an fd that stands for the request; bpfd's run
//     statistics are always on, as on a kernel with bpf_stats_enabled=1;
//   - BPF_PROG_ATTACH to a seccomp listener and BPF_LINK_CREATE to
//     netfilter queues, bpfd's attach points, in a bpf(2) form of bpfd's
//     own (attach types 0x1000 and 0x1001, links.go), BPF_LINK_DETACH,
//     and OBJ_GET_INFO_BY_FD of links (type, id, program id).
//
// Kernel attach types, and every other command (raw tracepoints,
// iterators, tokens, ...) are EINVAL, the answer of a kernel without it, so
// that the feature probes of libbpf and cilium/ebpf choose their
// fallbacks.
//
// # Around bpf(2)
//
// Tools check more than bpf(2). Unless Config.BPFOnly, the supervisor also
// answers, for absolute paths under the bpffs prefix (relative paths and
// everything else run in the kernel unchanged, via
// SECCOMP_USER_NOTIF_FLAG_CONTINUE): statfs (BPF_FS_MAGIC), open/openat
// (the pin root's files; the bpf file system creates no regular files),
// stat/lstat/newfstatat/statx, access/faccessat, getxattr/listxattr,
// mkdir (PIN_MKDIR), rmdir, unlink, rename (EXDEV across the prefix);
// fstatfs of fds under the pin root; readlink of /proc/self/fd/N
// ("anon_inode:bpf-map" for a descriptor, which bpftool checks); the open
// of /proc/self/fdinfo/N for a descriptor (the kernel's map and program
// fdinfo text, which cilium/ebpf and bpftool read); the open of
// /proc/self/mounts and mountinfo (the prefix listed as a bpf mount, which
// bpftool -f walks); and raising RLIMIT_MEMLOCK, which bpfd does not
// charge (rlimit.go).
//
// # Deliberate differences from the kernel
//
//   - Visibility: the kernel lists every object in the system to
//     CAP_SYS_ADMIN and nothing to others; the emulation lists, and opens
//     by id, the objects the traced processes hold descriptors of, with at
//     most their access (EPERM for more), and the user's objects that have
//     a pin the user may open. A freed object leaves the list within a
//     collection period.
//   - Timing of frees: an object closed by the process is freed when the
//     supervisor next collects (CollectInterval), not at close(2).
//   - Descriptors are sockets: fstat shows S_IFSOCK and fstatfs sockfs;
//     only readlink and fdinfo of /proc/self/fd are made to look like the
//     kernel's. The fd flags are O_RDWR whatever the access mode.
//   - No mmap(2) of map fds: a supervisor cannot make mappings in another
//     process, and a descriptor is a socket. BPF_F_MMAPABLE is EINVAL (as
//     before Linux 5.5), so libraries keep global data in plain arrays;
//     a ring buffer can be created and written by programs, but a
//     consumer's mmap of it fails (ENODEV).
//   - There is no JIT: jited_prog_len and the JIT symbols are zero, and
//     so is verified_insns.
//   - Lookups and next-key calls are served from the map's storage mapped
//     into the supervisor (view.go): they see what a concurrent program
//     wrote as a kernel lookup would, without a round trip to bpfd.
//   - BPF_ENABLE_STATS switches nothing: run statistics are always on.
//   - Pin files read as their informational text (the kernel refuses to
//     open a pin of an object without BTF); the preload iterators of a
//     fresh bpffs (maps.debug, progs.debug) do not exist.
//   - Paths are recognised lexically after cleaning, and only when
//     absolute or relative to a pin-root directory the process opened
//     through the prefix; a process cannot chdir into the prefix.
//   - openat2 with RESOLVE_* flags under the prefix is EXDEV.
//   - bpf(2) calls of a process are answered one at a time per supervisor
//     thread; loads, test runs and batches run on goroutines of their own.
//
// # Concurrency
//
// Supervisor is safe for the use its methods document (Serve once, Close
// from anywhere). Internally one thread receives notifications and
// answers element operations and file system calls itself; the object
// table is guarded by one mutex and objects in use carry a busy count that
// collection respects.
package bpfemu

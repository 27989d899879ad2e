// SPDX-License-Identifier: GPL-2.0
// Test program of the bpf(2) emulation (pkg/bpfemu): a C program using
// Debian's libbpf as any libbpf application does. The tests compile it
// with gcc at test time and run it against the kernel as root and under
// `bpfctl exec --bpf` as an unprivileged user; the two outputs must be
// equal. It prints results only, never ids, timings or iteration order.
//
//   libbpfprog OBJ PINDIR
//   libbpfprog -bench N     medians of N hash lookups and updates, in ns
//                           ("lookup NS update NS"), for the benchmark
#include <errno.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return 0;
}

static const char *res(int err)
{
	static char buf[32];

	if (err >= 0)
		return "ok";
	snprintf(buf, sizeof(buf), "errno %d", err == -1 ? errno : -err);
	return buf;
}

static int cmp64(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

/* dump prints a map's elements sorted, each key and value folded to a
 * 64-bit sum of words so that order and width do not matter. */
static void dump(const char *name, int fd, unsigned ks, unsigned vs)
{
	unsigned char key[64], next[64], val[256];
	unsigned long long rows[256];
	int n = 0, err;
	void *prev = NULL;

	while ((err = bpf_map_get_next_key(fd, prev, next)) == 0 && n < 256) {
		unsigned long long r = 0;
		unsigned i;

		memcpy(key, next, ks);
		prev = key;
		if (bpf_map_lookup_elem(fd, key, val))
			continue;
		for (i = 0; i < ks; i++)
			r = r * 131 + key[i];
		r <<= 24;
		for (i = 0; i < vs; i++)
			r += (unsigned long long)val[i] << (8 * (i % 3));
		rows[n++] = r;
	}
	qsort(rows, n, sizeof(rows[0]), cmp64);
	printf("%s: %d elements (end: %s)", name, n, res(err == -ENOENT ? 0 : err));
	for (int i = 0; i < n; i++)
		printf(" %llx", rows[i]);
	printf("\n");
}

static void frame(unsigned char *f, int n, unsigned proto)
{
	for (int i = 0; i < n; i++)
		f[i] = i;
	f[12] = proto >> 8;
	f[13] = proto & 0xff;
	if (proto == 0x0800 && n >= 34) {
		f[14] = 0x45;
		f[16] = (n - 14) >> 8;
		f[17] = (n - 14) & 0xff;
	}
}

static void run(const char *name, int fd, unsigned proto, int n)
{
	unsigned char in[2048], out[2048];
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in, .data_size_in = n,
		    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);
	int err;

	frame(in, n, proto);
	err = bpf_prog_test_run_opts(fd, &o);
	printf("%s %#x/%d: %s retval %u size_out %u same %d\n", name, proto, n, res(err), o.retval,
	       o.data_size_out, memcmp(in, out, n) == 0);
}

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* bench times n lookups and n updates of one element of a hash map made
 * with bpf_map_create, each call alone, and prints the medians. */
static int bench(int n)
{
	unsigned long long *t = calloc(n, sizeof(*t)), v = 1, med[2];
	unsigned k = 1;
	int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "bench", 4, 8, 16, NULL);

	if (!t || fd < 0 || bpf_map_update_elem(fd, &k, &v, 0)) {
		fprintf(stderr, "bench setup: %s\n", res(fd < 0 ? fd : -1));
		return 1;
	}
	for (int op = 0; op < 2; op++) {
		for (int i = 0; i < n; i++) {
			unsigned long long t0 = now_ns();
			int err = op == 0 ? bpf_map_lookup_elem(fd, &k, &v) : bpf_map_update_elem(fd, &k, &v, 0);

			t[i] = now_ns() - t0;
			if (err) {
				fprintf(stderr, "bench: %s\n", res(err));
				return 1;
			}
		}
		qsort(t, n, sizeof(*t), cmp64);
		med[op] = t[n / 2];
	}
	printf("lookup %llu update %llu\n", med[0], med[1]);
	close(fd);
	free(t);
	return 0;
}

int main(int argc, char **argv)
{
	const char *obj_path = argv[1], *pin_dir = argc > 2 ? argv[2] : "/sys/fs/bpf";
	struct bpf_object *obj;
	struct bpf_program *p;
	char path[512];
	int err, fd, h, a;

	if (argc < 2) {
		fprintf(stderr, "usage: libbpfprog OBJ [PINDIR]\n");
		return 2;
	}
	libbpf_set_print(quiet);
	if (argc == 3 && strcmp(argv[1], "-bench") == 0)
		return bench(atoi(argv[2]));

	/* Maps made directly. */
	LIBBPF_OPTS(bpf_map_create_opts, mo);
	h = bpf_map_create(BPF_MAP_TYPE_HASH, "c_hash", 4, 8, 8, &mo);
	printf("create hash: %s\n", res(h));
	a = bpf_map_create(BPF_MAP_TYPE_ARRAY, "c_array", 4, 4, 2, &mo);
	printf("create array: %s\n", res(a));
	printf("create bad: %s\n", res(bpf_map_create(BPF_MAP_TYPE_ARRAY, "c_bad", 8, 4, 2, &mo)));
	for (unsigned k = 1; k <= 4; k++) {
		unsigned long long v = k * 1000;

		printf("update %u: %s\n", k, res(bpf_map_update_elem(h, &k, &v, BPF_NOEXIST)));
	}
	{
		unsigned k = 2;
		unsigned long long v = 0;

		printf("lookup 2: %s %llu\n", res(bpf_map_lookup_elem(h, &k, &v)), v);
		printf("update 2 noexist: %s\n", res(bpf_map_update_elem(h, &k, &v, BPF_NOEXIST)));
		printf("delete 2: %s\n", res(bpf_map_delete_elem(h, &k)));
		printf("delete 2 again: %s\n", res(bpf_map_delete_elem(h, &k)));
		k = 3;
		printf("lookup and delete 3: %s %llu\n", res(bpf_map_lookup_and_delete_elem(h, &k, &v)), v);
		k = 5;
		printf("array update 5: %s\n", res(bpf_map_update_elem(a, &k, &v, 0)));
	}
	dump("hash", h, 4, 8);

	/* Descriptors the process makes itself: dup, fork, and an fd number
	 * reused by another map after close. */
	{
		unsigned k = 50;
		unsigned long long v = 5;
		int d = dup(h), st, m1, m2;
		pid_t pid;

		printf("update through a dup: %s\n", res(bpf_map_update_elem(d, &k, &v, 0)));
		close(d);
		printf("update through the closed dup: %s\n", res(bpf_map_update_elem(d, &k, &v, 0)));
		pid = fork();
		if (pid == 0) {
			k = 51;
			v = 6;
			_exit(bpf_map_update_elem(h, &k, &v, 0) ? 1 : 0);
		}
		waitpid(pid, &st, 0);
		printf("update from a forked child: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "failed");
		k = 51;
		err = bpf_map_lookup_elem(h, &k, &v);
		printf("lookup 51: %s %llu\n", res(err), v);
		bpf_map_delete_elem(h, &k);
		k = 50;
		bpf_map_delete_elem(h, &k);
		m1 = bpf_map_create(BPF_MAP_TYPE_HASH, "c_first", 4, 8, 2, &mo);
		k = 1;
		printf("first map: %s\n", res(bpf_map_update_elem(m1, &k, &v, 0)));
		close(m1);
		m2 = bpf_map_create(BPF_MAP_TYPE_ARRAY, "c_second", 4, 8, 2, &mo);
		printf("same fd number: %d\n", m1 == m2);
		printf("second map is an array: %s\n", res(bpf_map_delete_elem(m2, &k)));
		close(m2);
	}

	/* Batches. */
	{
		unsigned keys[6] = { 10, 11, 12, 13, 14, 15 }, got_k[8];
		unsigned long long vals[6] = { 1, 2, 3, 4, 5, 6 }, got_v[8];
		__u32 count = 6, total = 0, batch;
		LIBBPF_OPTS(bpf_map_batch_opts, bo);
		void *in = NULL;

		err = bpf_map_update_batch(h, keys, vals, &count, &bo);
		printf("update batch: %s count %u\n", res(err), count);
		do {
			count = 8; /* a whole hash bucket must fit (ENOSPC otherwise) */
			err = bpf_map_lookup_batch(h, in, &batch, got_k, got_v, &count, &bo);
			total += count;
			in = &batch;
		} while (!err);
		printf("lookup batch: %s total %u\n", res(err == -ENOENT ? 0 : err), total);
		count = 2;
		err = bpf_map_delete_batch(h, keys, &count, &bo);
		printf("delete batch: %s count %u\n", res(err), count);
	}
	dump("hash after batches", h, 4, 8);

	/* An object: open, load, run. */
	obj = bpf_object__open_file(obj_path, NULL);
	err = libbpf_get_error(obj);
	printf("open: %s\n", res(err));
	if (err)
		return 1;
	err = bpf_object__load(obj);
	printf("load: %s\n", res(err));
	if (err)
		return 1;
	bpf_object__for_each_program(p, obj)
		printf("program %s type %d\n", bpf_program__name(p), bpf_program__type(p));
	fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "count_proto"));
	run("count_proto", fd, 0x0800, 60);
	run("count_proto", fd, 0x0800, 100);
	run("count_proto", fd, 0x86dd, 80);
	dump("by_proto", bpf_object__find_map_fd_by_name(obj, "by_proto"), 4, 16);
	fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "xdp_filter"));
	run("xdp_filter", fd, 0x0800, 60);
	run("xdp_filter", fd, 0x0806, 42);
	run("xdp_filter", fd, 0x0800, 1500);
	dump("verdicts", bpf_object__find_map_fd_by_name(obj, "verdicts"), 4, 8);
	{
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		err = bpf_obj_get_info_by_fd(fd, &info, &len);
		printf("prog info: %s type %u name %s\n", res(err), info.type, info.name);
	}

	/* Pins. */
	snprintf(path, sizeof(path), "%s/c_hash", pin_dir);
	printf("pin: %s\n", res(bpf_obj_pin(h, path)));
	printf("pin again: %s\n", res(bpf_obj_pin(h, path)));
	fd = bpf_obj_get(path);
	printf("get: %s\n", res(fd));
	if (fd >= 0) {
		dump("through the pin", fd, 4, 8);
		close(fd);
	}
	{
		LIBBPF_OPTS(bpf_obj_get_opts, go, .file_flags = BPF_F_RDONLY);
		unsigned k = 1;
		unsigned long long v = 1;

		fd = bpf_obj_get_opts(path, &go);
		printf("get read-only: %s\n", res(fd));
		printf("update read-only: %s\n", res(bpf_map_update_elem(fd, &k, &v, 0)));
		close(fd);
	}
	printf("unlink: %s\n", res(unlink(path)));
	printf("get unlinked: %s\n", res(bpf_obj_get(path)));
	snprintf(path, sizeof(path), "%s/c_progs", pin_dir);
	err = bpf_object__pin_programs(obj, path);
	printf("pin programs: %s\n", res(err));
	snprintf(path, sizeof(path), "%s/c_progs/xdp_filter", pin_dir);
	fd = bpf_obj_get(path);
	printf("get pinned program: %s\n", res(fd));
	if (fd >= 0) {
		run("pinned xdp_filter", fd, 0x0800, 60);
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/c_progs", pin_dir);
	printf("unpin programs: %s\n", res(bpf_object__unpin_programs(obj, path)));
	printf("rmdir: %s\n", res(rmdir(path)));
	bpf_object__close(obj);
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench helpers: time, latency arrays, option parsing, counters.
 *
 * Latency samples are kept in full (8 bytes per lookup: a 2 s shm cell at a
 * few million lookups/s stays in the tens of MB) so that percentiles are
 * exact rather than histogram-bucketed.
 *
 * A server's CPU time is the time on CPU of every thread of the process, from
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds, brought up to date whenever
 * a thread sleeps, which a server does between requests). Where schedstat is
 * missing we fall back to utime + stime of /proc/<pid>/stat, in clock ticks
 * (10 ms at USER_HZ 100), which needs phases of a second or more to mean
 * much. Threads that exit during a phase take their time with them; the
 * servers' threads live as long as the server. Work done for the process in
 * softirq context (a NIC's, or Soft-RoCE's responder) is not in it.
 */
#include "perf/bench.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t
kvdex_bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t
kvdex_bench_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sums over the process's threads of /proc/<pid>/task/<tid>/schedstat's
 * first field (time on CPU, ns) and third (timeslices run): 0, or -ENOENT
 * when there is no schedstat. */
static int
proc_schedstat(pid_t pid, uint64_t *cpu_ns, uint64_t *slices)
{
	char path[64];
	struct dirent *de;
	bool any = false;
	DIR *d;

	*cpu_ns = 0;
	*slices = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d) {
		return -ENOENT;
	}
	while ((de = readdir(d))) {
		char p2[320];
		unsigned long long ns, wait, n;
		FILE *f;

		if (de->d_name[0] == '.') {
			continue;
		}
		snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
		f = fopen(p2, "r");
		if (!f) {
			continue; /* the thread just exited */
		}
		if (fscanf(f, "%llu %llu %llu", &ns, &wait, &n) == 3) {
			*cpu_ns += ns;
			*slices += n;
			any = true;
		}
		fclose(f);
	}
	closedir(d);
	return any ? 0 : -ENOENT;
}

/* utime + stime of /proc/<pid>/stat in ns (clock-tick resolution); 0 if
 * unavailable. */
static uint64_t
proc_stat_cpu_ns(pid_t pid)
{
	unsigned long long ut = 0, st = 0;
	char path[64], line[1024];
	const char *p;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f) {
		return 0;
	}
	p = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
	fclose(f);
	if (!p) {
		return 0;
	}
	/* After "pid (comm)": state is field 3, utime 14, stime 15. */
	n = sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
	if (n != 2) {
		return 0;
	}
	return (ut + st) * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
}

int
kvdex_bench_proc_sched(pid_t pid, uint64_t *cpu_ns, uint64_t *slices)
{
	if (proc_schedstat(pid, cpu_ns, slices) == 0) {
		return 0;
	}
	*slices = 0;
	*cpu_ns = proc_stat_cpu_ns(pid);
	return *cpu_ns ? -ENOENT : -ESRCH;
}

uint64_t
kvdex_bench_proc_cpu_ns(pid_t pid)
{
	uint64_t ns, slices;

	kvdex_bench_proc_sched(pid, &ns, &slices);
	return ns;
}

void
kvdex_bench_print_host(FILE *f)
{
	char load[128] = "?";
	FILE *la = fopen("/proc/loadavg", "r");

	if (la) {
		if (fgets(load, sizeof(load), la)) {
			load[strcspn(load, "\n")] = '\0';
		}
		fclose(la);
	}
	fprintf(f, "# host: %ld CPUs online, /proc/loadavg %s\n", sysconf(_SC_NPROCESSORS_ONLN),
		load);
}

uint64_t
kvdex_bench_incarnation(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) | 1;
}

int
kvdex_bench_lat_add(struct kvdex_bench_lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1u << 16;
		uint64_t *p = realloc(l->ns, cap * sizeof(*p));

		if (!p) {
			return -ENOMEM;
		}
		l->ns = p;
		l->cap = cap;
	}
	l->ns[l->n++] = ns;
	l->sum += ns;
	return 0;
}

void
kvdex_bench_lat_reset(struct kvdex_bench_lat *l)
{
	l->n = 0;
	l->sum = 0;
}

void
kvdex_bench_lat_fini(struct kvdex_bench_lat *l)
{
	if (!l) {
		return;
	}
	free(l->ns);
	memset(l, 0, sizeof(*l));
}

static int
lat_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a;
	uint64_t y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void
kvdex_bench_lat_sort(struct kvdex_bench_lat *l)
{
	if (l->n > 1) {
		qsort(l->ns, l->n, sizeof(*l->ns), lat_cmp);
	}
}

uint64_t
kvdex_bench_lat_pct(const struct kvdex_bench_lat *l, double q)
{
	size_t rank;

	if (l->n == 0) {
		return 0;
	}
	/* Nearest rank: the smallest sample with at least q of them <= it. */
	rank = (size_t)(q * (double)l->n + 0.999999);
	if (rank < 1) {
		rank = 1;
	}
	if (rank > l->n) {
		rank = l->n;
	}
	return l->ns[rank - 1];
}

double
kvdex_bench_lat_mean(const struct kvdex_bench_lat *l)
{
	return l->n ? (double)l->sum / (double)l->n : 0.0;
}

int
kvdex_bench_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr,
			"kvdex-bench: %s: '%s' is not an integer in [%" PRIu64 ", %" PRIu64 "]\n",
			opt, s, min, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int
kvdex_bench_parse_list(const char *opt, const char *s, unsigned min, unsigned max, unsigned *out,
		       unsigned cap)
{
	char buf[256];
	char *save = NULL;
	unsigned n = 0;

	if (strlen(s) >= sizeof(buf)) {
		fprintf(stderr, "kvdex-bench: %s: list too long\n", opt);
		return -EINVAL;
	}
	strcpy(buf, s);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (n == cap) {
			fprintf(stderr, "kvdex-bench: %s: at most %u values\n", opt, cap);
			return -EINVAL;
		}
		if (kvdex_bench_parse_u64(opt, tok, min, max, &v)) {
			return -EINVAL;
		}
		out[n++] = (unsigned)v;
	}
	if (n == 0) {
		fprintf(stderr, "kvdex-bench: %s: empty list\n", opt);
		return -EINVAL;
	}
	return (int)n;
}

int
kvdex_bench_getopt(int argc, char **argv, const char *cmd, const struct option *longopts,
		   kvdex_bench_opt_fn parse_one, kvdex_bench_usage_fn usage, void *opts)
{
	int opt;

	optind = 2; /* argv[1] is the subcommand */
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 1;
		}
		if (opt == '?' || parse_one(opt, optarg, opts)) {
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvdex-bench %s: unexpected argument '%s'\n", cmd, argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static int
arg_needs_quotes(const char *a)
{
	if (!*a) {
		return 1;
	}
	for (; *a; a++) {
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
			    "-_=,.:/+@%",
			    *a)) {
			return 1;
		}
	}
	return 0;
}

void
kvdex_bench_print_cmdline(FILE *f, int argc, char **argv)
{
	fputs("# command:", f);
	for (int i = 0; i < argc; i++) {
		if (!arg_needs_quotes(argv[i])) {
			fprintf(f, " %s", argv[i]);
			continue;
		}
		fputs(" '", f);
		for (const char *p = argv[i]; *p; p++) {
			if (*p == '\'') {
				fputs("'\\''", f);
			} else {
				fputc(*p, f);
			}
		}
		fputc('\'', f);
	}
	fputc('\n', f);
}

int
kvdex_bench_counters(struct kvdex_client *c, const char *const *names, uint64_t *out, unsigned n)
{
	struct kvdex_counter ctr[KVDEX_BENCH_MAX_COUNTERS];
	unsigned nservers = kvdex_client_nservers(c);
	int missing = 0;

	memset(out, 0, n * sizeof(*out));
	for (unsigned s = 0; s < nservers; s++) {
		int nc = kvdex_stats(c, s, ctr, KVDEX_BENCH_MAX_COUNTERS);

		if (nc < 0) {
			return nc;
		}
		if (nc > (int)KVDEX_BENCH_MAX_COUNTERS) {
			nc = KVDEX_BENCH_MAX_COUNTERS;
		}
		for (unsigned i = 0; i < n; i++) {
			int found = 0;

			for (int j = 0; j < nc; j++) {
				if (strncmp(ctr[j].name, names[i], sizeof(ctr[j].name)) == 0) {
					out[i] += ctr[j].value;
					found = 1;
					break;
				}
			}
			missing |= !found;
		}
	}
	return missing ? -ENOENT : 0;
}

int
kvdex_bench_counter(struct kvdex_client *c, const char *name, uint64_t *out)
{
	return kvdex_bench_counters(c, &name, out, 1);
}

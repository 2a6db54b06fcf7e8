/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench helpers: time, latency arrays, option parsing, counters.
 *
 * Latency samples are kept in full (8 bytes per lookup: a 2 s shm cell at a
 * few million lookups/s stays in the tens of MB) so that percentiles are
 * exact rather than histogram-bucketed.
 */
#include "perf/bench.h"

#include <errno.h>
#include <inttypes.h>
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

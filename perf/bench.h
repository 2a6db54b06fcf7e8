/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal helpers shared by the kvdex-bench subcommands: a private kvdexd
 * (spawn, wait for its ready file, SIGTERM and check its exit status), a
 * deterministic PRNG, latency arrays with percentiles, option parsing and
 * server counters.
 *
 * Everything here is single-threaded: kvdex-bench drives one client from its
 * main thread, so nothing is locked.
 */
#ifndef KVDEX_PERF_BENCH_H
#define KVDEX_PERF_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "kvdex/kvdex.h"

/* Exit codes of every subcommand. */
#define KVDEX_BENCH_EXIT_OK 0
#define KVDEX_BENCH_EXIT_FAIL 1 /* an error, or a lookup returned a wrong answer */
#define KVDEX_BENCH_EXIT_USAGE 2

/* ---- PRNG: splitmix64, reproducible from --seed ---------------------------- */

struct kvdex_bench_rng {
	uint64_t s;
};

static inline uint64_t
kvdex_bench_rng_next(struct kvdex_bench_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias below 2^-32 here). */
static inline uint64_t
kvdex_bench_rng_below(struct kvdex_bench_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)kvdex_bench_rng_next(r) * n) >> 64);
}

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t kvdex_bench_now_ns(void);
/* CPU time of the calling thread in nanoseconds (CLOCK_THREAD_CPUTIME_ID):
 * unlike wall time, not inflated when other processes preempt us. */
uint64_t kvdex_bench_thread_cpu_ns(void);
/* CPU time of a process, all threads, in ns: the sum of its threads'
 * /proc/<pid>/task/<tid>/schedstat, else utime + stime of /proc/<pid>/stat
 * (clock ticks); 0 if unreadable. */
uint64_t kvdex_bench_proc_cpu_ns(pid_t pid);
/* The same, and the number of timeslices its threads ran (schedstat's third
 * field: how often they were scheduled, i.e. woken). 0; -ENOENT when only
 * the /proc/<pid>/stat figure was there (*slices = 0); -ESRCH (both 0). */
int kvdex_bench_proc_sched(pid_t pid, uint64_t *cpu_ns, uint64_t *slices);
/* Print "# host: N CPUs, load average ..." (shared machines skew tails). */
void kvdex_bench_print_host(FILE *f);
/* A publisher incarnation: CLOCK_REALTIME in ns, so that a rerun against a
 * long-running server is newer than the previous run (which it purges). */
uint64_t kvdex_bench_incarnation(void);

/* ---- Synthetic chained index (bench_gen.c) ------------------------------------ */

/*
 * The data set of kvdex-bench lookup and baseline: N random 64-bit keys in
 * chains of `len` (chain c = keys [c * len, c * len + len), the last one
 * possibly shorter), chain c held by H distinct workers
 * holders[c * H .. c * H + H) (ids 1..W), holder j in tier j % KVDEX_NTIERS.
 * A given seed always gives the same keys and holders.
 */
struct kvdex_bench_synth {
	uint64_t *keys;
	uint32_t *holders;
	uint64_t nblocks;
	uint64_t nchains; /* including a partial last chain */
	uint64_t nfull;	  /* chains of full length, the ones looked up */
	unsigned len;	  /* chain length = the longest lookup */
	unsigned h;
	unsigned workers;
};

/* Generate it: 0 or -ENOMEM. The caller ensures len > 0, blocks >= len and
 * holders <= workers. */
int kvdex_bench_synth_init(struct kvdex_bench_synth *d, uint64_t blocks, unsigned holders,
			   unsigned workers, unsigned len, uint64_t seed);
/* Free it; accepts NULL and a zeroed or already finished one. */
void kvdex_bench_synth_fini(struct kvdex_bench_synth *d);

/* ---- Latencies ------------------------------------------------------------- */

struct kvdex_bench_lat {
	uint64_t *ns;
	size_t n;
	size_t cap;
	uint64_t sum;
};

/* Append one sample: 0 or -ENOMEM. */
int kvdex_bench_lat_add(struct kvdex_bench_lat *l, uint64_t ns);
void kvdex_bench_lat_reset(struct kvdex_bench_lat *l);
void kvdex_bench_lat_fini(struct kvdex_bench_lat *l);
/* Sort the samples; call before kvdex_bench_lat_pct(). */
void kvdex_bench_lat_sort(struct kvdex_bench_lat *l);
/* Nearest-rank percentile (q in (0, 1]) of sorted samples; 0 if empty. */
uint64_t kvdex_bench_lat_pct(const struct kvdex_bench_lat *l, double q);
double kvdex_bench_lat_mean(const struct kvdex_bench_lat *l);

/* ---- Options ----------------------------------------------------------------- */

/* Parse a decimal integer in [min, max]: 0 or -EINVAL (message on stderr). */
int kvdex_bench_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max,
			  uint64_t *out);
/* Parse "a,b,c" integers in [min, max] into out[cap]: count or -EINVAL. */
int kvdex_bench_parse_list(const char *opt, const char *s, unsigned min, unsigned max,
			   unsigned *out, unsigned cap);
struct option;

/* Parse one option `opt` (getopt's value) with argument `arg` into the
 * subcommand's options struct `opts`: 0 or -EINVAL (message on stderr). */
typedef int (*kvdex_bench_opt_fn)(int opt, const char *arg, void *opts);
/* Print a subcommand's usage text to f. */
typedef void (*kvdex_bench_usage_fn)(FILE *f);

/*
 * The command line of subcommand `cmd`: getopt_long over argv[2..] (argv[1]
 * is the subcommand) with `longopts` and -h, every option handed to
 * parse_one(opt, optarg, opts). 0; 1 after usage on stdout for -h/--help;
 * -EINVAL after usage on stderr for an unknown option or one parse_one
 * rejects, or after "kvdex-bench <cmd>: unexpected argument" for an operand.
 */
int kvdex_bench_getopt(int argc, char **argv, const char *cmd, const struct option *longopts,
		       kvdex_bench_opt_fn parse_one, kvdex_bench_usage_fn usage, void *opts);
/* Print "# command: argv..." with shell quoting where needed. */
void kvdex_bench_print_cmdline(FILE *f, int argc, char **argv);

/* ---- Server counters ------------------------------------------------------- */

#define KVDEX_BENCH_MAX_COUNTERS 128u

/* Sum of counter `name` over every server of the client: 0 or -errno. */
int kvdex_bench_counter(struct kvdex_client *c, const char *name, uint64_t *out);

/* Several counters at once (one stats exchange per server). Missing names
 * read as 0 and make the call return -ENOENT after filling the rest. */
int kvdex_bench_counters(struct kvdex_client *c, const char *const *names, uint64_t *out,
			 unsigned n);

/* ---- A private kvdexd ---------------------------------------------------------- */

struct kvdex_bench_server {
	pid_t pid;    /* 0: not running */
	char dir[64]; /* mkdtemp directory holding the socket and ready file */
	char ready_path[128];
	char unix_path[108]; /* from the ready file */
	char tcp_addr[300];  /* host:port from the ready file */
	char rdma_addr[300]; /* host:port of its rdma_cm listener, "" if none */
};

/* --listen-rdma for the kvdexd that kvdex_bench_server_start() spawns
 * (NULL: kvdexd's default, auto). */
extern const char *kvdex_bench_listen_rdma;
extern const char *kvdex_bench_bucket_size; /* --bucket-size for kvdexd, or NULL */

/*
 * Resolve the kvdexd binary: `opt` (--kvdexd), else $KVDEX_KVDEXD, else
 * <directory of this executable>/../server/kvdexd (the build tree layout).
 */
int kvdex_bench_kvdexd_path(const char *opt, char *buf, size_t len);

/*
 * Start kvdexd listening on 127.0.0.1:0 and a unix socket in a fresh temp
 * directory, sized for `capacity_blocks` (0: server default), and wait up to
 * 15 s for its ready file. 0, or -errno with a message on stderr (nothing left
 * running then). The child gets SIGTERM if kvdex-bench dies first.
 */
int kvdex_bench_server_start(const char *kvdexd, uint64_t capacity_blocks,
			     struct kvdex_bench_server *s);

/*
 * SIGTERM the server, wait up to 15 s (then SIGKILL) and remove the temp
 * directory. 0 if it exited with status 0, -EIO otherwise (message on
 * stderr). Accepts a server that never started.
 */
int kvdex_bench_server_stop(struct kvdex_bench_server *s);

/* ---- Subcommands -------------------------------------------------------------- */

int kvdex_bench_lookup_main(int argc, char **argv);
int kvdex_bench_demo_main(int argc, char **argv);
int kvdex_bench_policy_main(int argc, char **argv);

#endif /* KVDEX_PERF_BENCH_H */

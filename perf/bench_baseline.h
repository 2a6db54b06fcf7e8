/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench baseline: internal interface between the driver
 * (bench_baseline.c) and the systems it compares (bench_baseline_kvdex.c,
 * bench_baseline_redis.c, bench_baseline_mc.c) and their processes
 * (bench_baseline_srv.c).
 *
 * A system is an ops table: reset (empty index), apply (one publisher batch of
 * store/remove events), lookup (one prefix chain -> answer) and fini. Every
 * system answers a lookup with the same struct bl_answer, computed from what
 * that system returned, so answers compare exactly across systems and against
 * the driver's model of the index.
 *
 * Single-threaded like the rest of kvdex-bench: nothing here is locked.
 */
#ifndef KVDEX_PERF_BENCH_BASELINE_H
#define KVDEX_PERF_BENCH_BASELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "perf/bench.h"

#define BL_EV_STORE 0u
#define BL_EV_REMOVE 1u

/* The packed holder record of the redis-mget and memcached layouts (and the
 * Redis function that edits it): worker u32 LE | dp u16 LE | tier u8 | 0. */
#define BL_PACKED_REC 8u

/* One block event of a publisher. dp rank is always 0 in our workloads. */
struct bl_event {
	uint64_t key;
	uint32_t worker;
	uint8_t type; /* BL_EV_* */
	uint8_t tier;
	uint16_t reserved;
};

/* One publish batch: events [first, first + n) of one worker. */
struct bl_batch {
	uint32_t worker;
	uint32_t n;
	size_t first;
};

struct bl_stream {
	struct bl_event *ev;
	size_t nev, capev;
	struct bl_batch *b;
	size_t nb, capb;
};

/*
 * What a lookup found: the longest prefix one worker holds, how many workers
 * hold that much, and an order-independent signature of which ones (sum of
 * bl_mix64(worker id)). Two systems agree on a lookup iff all three match.
 */
struct bl_answer {
	uint32_t longest;
	uint32_t ntop;
	uint64_t topsig;
};

/*
 * Prefix matching over per-block holder lists, the same rule as kvdex's merge
 * (docs/DESIGN.md §5): a worker's matched count grows only while it holds
 * every block so far; the walk stops at the first block where nobody
 * advanced. Generation stamps make begin() O(1).
 */
struct bl_matcher {
	uint16_t *matched;
	uint32_t *stamp;
	uint32_t *touched;
	uint32_t ntouched;
	uint32_t cap; /* worker ids < cap */
	uint32_t gen;
	uint32_t pos; /* blocks walked */
	bool advanced;
	bool alive;
};

int bl_matcher_init(struct bl_matcher *m, uint32_t max_worker);
void bl_matcher_fini(struct bl_matcher *m);
void bl_matcher_begin(struct bl_matcher *m);
/* Holders of block m->pos follow; false once the walk has stopped. */
bool bl_matcher_block(struct bl_matcher *m);
/* One holder of the current block: 0, or -ERANGE for an id >= cap. */
int bl_matcher_holder(struct bl_matcher *m, uint32_t worker);
void bl_matcher_block_end(struct bl_matcher *m);
uint32_t bl_matcher_get(const struct bl_matcher *m, uint32_t worker);
void bl_matcher_answer(const struct bl_matcher *m, struct bl_answer *a);

uint64_t bl_mix64(uint64_t x);
/* Fold one (worker, matched) pair into an answer being built from pairs. */
void bl_answer_add(struct bl_answer *a, uint32_t worker, uint32_t matched);

/* ---- Event streams ----------------------------------------------------------- */

/* Append an event to a new batch (new_batch) or to the last one: 0 or -ENOMEM. */
int bl_stream_add(struct bl_stream *st, bool new_batch, uint32_t worker, uint64_t key, uint8_t type,
		  uint8_t tier);
void bl_stream_fini(struct bl_stream *st);

/* ---- Synthetic index: the data set of kvdex-bench lookup ------------------------ */

/*
 * The data set is struct kvdex_bench_synth (perf/bench.h, perf/bench_gen.c):
 * the same seed gives the same keys and holders as `kvdex-bench lookup`.
 */

/* The initial load: every (block, holder) stored, in per-worker batches of
 * up to `batch` events flushed as they fill (as kvdex-bench lookup loads). */
int bl_synth_load_stream(const struct kvdex_bench_synth *d, unsigned batch, struct bl_stream *st);
/*
 * Churn: whole-chain moves until >= nevents events: a holder of a random full
 * chain drops it (one REMOVE batch) and a worker that does not hold it stores
 * it in the same tier (one STORE batch). Updates d->holders (the model) and
 * records the moved chains. -EINVAL when every worker holds every chain.
 */
int bl_synth_churn_stream(struct kvdex_bench_synth *d, uint64_t nevents, uint64_t seed,
			  struct bl_stream *st, uint64_t **moved, size_t *nmoved);
/*
 * One lookup of L keys: a window at a random offset of full chain `chain`;
 * one time in four its tail from a random position on is replaced by absent
 * keys. exp is the answer the model predicts.
 */
void bl_synth_query(const struct kvdex_bench_synth *d, struct kvdex_bench_rng *rng, uint64_t chain,
		    unsigned L, uint64_t *keys, struct bl_answer *exp);

/* ---- Trace workload (Mooncake JSONL) --------------------------------------------- */

enum bl_route {
	BL_ROUTE_HALF = 0, /* best match if it covers >= half the request, else round robin */
	BL_ROUTE_BEST,	   /* longest match, ties to the worker holding fewest blocks */
	BL_ROUTE_RR,	   /* round robin */
};

/* One request: look up keys[koff .. koff + n), then publish events
 * [ev_first, ev_first + nev) of the stream for `worker` (nev may be 0). */
struct bl_trace_req {
	size_t koff;
	uint32_t n;
	uint32_t worker;
	size_t batch; /* index in st.b, or SIZE_MAX when nev == 0 */
	uint32_t nev;
	struct bl_answer exp;
	struct bl_answer exp_final; /* the same lookup against the final index */
};

struct bl_trace {
	uint64_t *keys;
	size_t nkeys, capkeys;
	struct bl_trace_req *req;
	size_t nreq, capreq;
	struct bl_stream st;
	uint64_t span_ms;
	uint64_t distinct_blocks;
	uint64_t new_blocks; /* block references never seen before (the paper's inserts) */
	uint64_t hit_blocks; /* sum of longest over requests */
	uint32_t max_chain;
};

/*
 * Read up to max_requests (0: all) requests of a Mooncake trace (one JSON
 * object per line with "timestamp" and "hash_ids"), and precompute the
 * workload against a model of the index: each request's expected answer,
 * the worker the route picks, and the STORE events of the blocks that
 * worker does not hold yet, and each request's answer from the final
 * index (after the whole trace). 0, or -errno with a message on stderr.
 */
int bl_trace_load(const char *path, size_t max_requests, unsigned workers, enum bl_route route,
		  struct bl_trace *t);
void bl_trace_fini(struct bl_trace *t);

/* ---- Systems ------------------------------------------------------------------ */

struct bl_sys;

struct bl_sys_ops {
	/* Empty index, ready for apply/lookup. May (re)start the server. */
	int (*reset)(struct bl_sys *s, uint64_t capacity_blocks);
	int (*apply)(struct bl_sys *s, const struct bl_event *ev, uint32_t worker, uint32_t n);
	int (*lookup)(struct bl_sys *s, const uint64_t *keys, uint32_t n, struct bl_answer *a);
	void (*fini)(struct bl_sys *s);
};

struct bl_sys {
	const char *name; /* row label, e.g. "redis-hash" */
	const struct bl_sys_ops *ops;
	pid_t server_pid; /* whose CPU time is charged to this system */
	uint32_t workers; /* registered workers 1..workers */
	void *priv;
};

/* Shared configuration the systems need. */
struct bl_env {
	const char *kvdexd;
	const char *redis_host; /* "127.0.0.1" */
	int redis_port;
	int mc_port;
	uint32_t workers;
};

/* kind: "shm", "tcp" or "verbs". */
int bl_kvdex_create(const struct bl_env *env, const char *kind, struct bl_sys *s);
/* layout: "hash", "mget" or "func"; the function library must be loaded. */
int bl_redis_create(const struct bl_env *env, const char *layout, struct bl_sys *s);
int bl_mc_create(const struct bl_env *env, struct bl_sys *s);

/* Load the Redis function library (perf/redis_chain.lua, embedded at build
 * time) into the server: 0 or -errno with a message on stderr. */
int bl_redis_load_functions(const char *host, int port);

/* ---- Server processes (redis-server, memcached) -------------------------------- */

struct bl_proc {
	pid_t pid; /* 0: not running */
	int port;
	char what[32];
	char dir[64]; /* mkdtemp: the log file, redis' --dir */
	char log[96];
};

/* A free 127.0.0.1 TCP port (bind :0, read it, close): >0 or -errno. */
int bl_free_port(void);
/* Resolve `prog` (a path, or a name searched in $PATH): 0 or -ENOENT. */
int bl_find_program(const char *prog, char *buf, size_t len);
/* Start redis-server / memcached on 127.0.0.1:port and wait until it accepts
 * connections (up to 10 s). 0 or -errno with a message (and the server's
 * log) on stderr; nothing is left running on failure. */
int bl_redis_start(const char *path, struct bl_proc *p);
int bl_mc_start(const char *path, struct bl_proc *p);
/* SIGTERM, wait up to 10 s (then SIGKILL), remove the directory: 0 if it
 * exited with status 0, -EIO otherwise. Accepts a process never started. */
int bl_proc_stop(struct bl_proc *p);
/* First line of `path args` (e.g. "--version"), or "?" */
void bl_program_version(const char *path, const char *arg, char *buf, size_t len);

/* kvdex-bench baseline (argv[1] is "baseline"): an exit status. */
int kvdex_bench_baseline_main(int argc, char **argv);

/* Connect a TCP socket to 127.0.0.1:port with TCP_NODELAY: fd or -errno. */
int bl_tcp_connect(int port);

#endif /* KVDEX_PERF_BENCH_BASELINE_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-replay internals (docs/REPLAY.md): a discrete-event replay of a
 * serving fleet that drives the real kvdexd and libkvdex with simulated
 * workers.
 *
 * The pure parts, which the 'replay' unit tests include directly:
 *   replay_workload.c  workloads: the GSP recipe of kvrouting.md §5.2,
 *                      synthetic multi-turn conversations, block-key chains
 *   replay_mooncake.c  Mooncake JSON-lines traces and timestamp spreading
 *   replay_evq.c       the event queue (a binary heap on (time, seq))
 *   replay_model.c     the worker service-time model, percentiles
 * The rest talks to kvdexd:
 *   replay_sim.c       one run: workers, caches, router, metrics
 *   replay_report.c    CSV, markdown, gnuplot charts
 *   replay_main.c      command line, presets, sweeps
 *
 * Time is simulated, in milliseconds (double); wall-clock time is measured
 * only around the calls whose cost we report (routing, eviction).
 *
 * Everything is single-threaded.
 */
#ifndef KVDEX_PERF_REPLAY_H
#define KVDEX_PERF_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvdex/cache.h"
#include "kvdex/route.h"

/* ---- Workloads ------------------------------------------------------------- */

enum replay_order {
	REPLAY_ORDER_RANDOM = 0,
	REPLAY_ORDER_GROUPED = 1,
	REPLAY_ORDER_ROUND_ROBIN = 2,
};

/* One request. Its chain (keys[key_off ..]) covers the prompt and the
 * output the worker caches at completion: the first nprompt_blocks keys are
 * the prompt's cacheable blocks, all nkeys are inserted at completion. */
struct replay_req {
	double arrival_ms; /* < 0: set when the previous turn completes */
	uint32_t prompt_tokens;
	uint32_t output_tokens;
	uint64_t key_off;
	uint32_t nprompt_blocks;
	uint32_t nkeys;
	uint32_t group;	 /* GSP group, conversation, or 0 */
	int32_t next;	 /* multi-turn: the next turn's index, or -1 */
	double think_ms; /* multi-turn: gap between this turn's end and the next */
};

struct replay_workload {
	char name[32];
	uint32_t block_size; /* tokens per block */
	struct replay_req *req;
	size_t nreq;
	uint64_t *keys;
	size_t nkeys, capkeys;
	uint64_t prompt_tokens; /* sum over requests */
};

/* GSP (KVRouting's generated shared prefix), kvrouting.md §3.1 and §5.2. */
struct replay_gsp_opts {
	uint32_t groups;	 /* 128 */
	uint32_t prompts;	 /* per group, 32 */
	double prefix_ratio;	 /* 0.5 */
	uint32_t lens[8];	 /* 512, 1024, 2048, 4096, 8192 */
	uint32_t nlens;		 /* 5 */
	uint32_t output_tokens;	 /* 4 */
	double rate;		 /* requests/s, 12 */
	enum replay_order order; /* random */
	uint64_t seed;		 /* 1 */
	uint32_t block_size;	 /* 16 */
};

/* Synthetic multi-turn: conversations whose every turn extends the
 * previous prompt (with the previous output) by a new user message. */
struct replay_mt_opts {
	uint32_t conversations; /* 128 */
	uint32_t turns;		/* per conversation, 8 */
	uint32_t header_tokens; /* shared by every conversation (chat template), 25 */
	uint32_t user_tokens;	/* per turn, 1024 */
	uint32_t output_tokens; /* per turn, 4 */
	double rate;		/* conversation starts per s, 12 */
	double think_ms;	/* mean gap between a reply and the next turn, 1000 */
	uint64_t seed;
	uint32_t block_size;
};

/* Mooncake traces: hash_ids are the keys (512-token blocks). */
enum replay_spread {
	REPLAY_SPREAD_NONE = 0,	   /* keep the timestamps (bursts) */
	REPLAY_SPREAD_EVEN = 1,	   /* requests of a timestamp spread evenly to the next one */
	REPLAY_SPREAD_UNIFORM = 2, /* ... at seeded uniform offsets (sorted) */
};

struct replay_mooncake_opts {
	const char *path;
	size_t limit;		   /* first N requests, 0 = all */
	uint32_t block_size;	   /* 512 */
	enum replay_spread spread; /* even */
	double time_scale;	   /* arrival times multiplied by this, 1.0 */
	uint64_t seed;		   /* for REPLAY_SPREAD_UNIFORM and output keys */
};

uint64_t replay_splitmix64(uint64_t x);
void replay_gsp_opts_init(struct replay_gsp_opts *o);
void replay_mt_opts_init(struct replay_mt_opts *o);
void replay_mooncake_opts_init(struct replay_mooncake_opts *o);
int replay_gsp_generate(const struct replay_gsp_opts *o, struct replay_workload *w);
int replay_mt_generate(const struct replay_mt_opts *o, struct replay_workload *w);
int replay_mooncake_load(const struct replay_mooncake_opts *o, struct replay_workload *w);
void replay_workload_fini(struct replay_workload *w);
int replay_order_parse(const char *s, enum replay_order *out);
const char *replay_order_name(enum replay_order o);
/* GSP token `b` of content (kind, a), exactly kvrouting.md §5.2. */
uint32_t replay_gsp_token(uint64_t kind, uint64_t a, uint64_t b, uint64_t seed);
/* Key of a block whose previous block's key is prev (0: first) and whose
 * tokens are tok[0, n): a chained hash, so equal prefixes have equal keys. */
uint64_t replay_block_key(uint64_t prev, const uint32_t *tok, size_t n);

/* Mooncake parsing, one line (exposed for the tests): 0, or -EINVAL. */
struct replay_mc_line {
	double timestamp;
	uint32_t input_length;
	uint32_t output_length;
	uint64_t *hash_ids; /* caller's array */
	size_t nhash, caphash;
};
int replay_mooncake_parse_line(const char *line, struct replay_mc_line *out);
/* Spread timestamps t[0, n) (sorted ascending) in place. */
void replay_spread_times(double *t, size_t n, enum replay_spread how, uint64_t seed);

/* ---- Event queue ------------------------------------------------------------ */

enum replay_ev_type {
	REPLAY_EV_ARRIVAL = 0,	/* idx = request */
	REPLAY_EV_COMPLETE = 1, /* idx = worker */
};

struct replay_ev {
	double t;
	uint64_t seq; /* insertion order: ties at equal t pop first-in first */
	uint32_t type;
	uint32_t idx;
};

struct replay_evq {
	struct replay_ev *h;
	size_t n, cap;
	uint64_t next_seq;
};

int replay_evq_push(struct replay_evq *q, double t, uint32_t type, uint32_t idx);
/* Pop the earliest event: true, or false if empty. */
bool replay_evq_pop(struct replay_evq *q, struct replay_ev *out);
void replay_evq_fini(struct replay_evq *q);

/* ---- Worker model ----------------------------------------------------------------- */

struct replay_model {
	double base_ms;		   /* 10 */
	double prefill_ms_per_tok; /* 0.14 per uncached prompt token */
	double decode_ms_per_tok;  /* 12 per output token */
};

void replay_model_init(struct replay_model *m);
/* Time from service start to the first token (the prefill part). */
double replay_model_prefill_ms(const struct replay_model *m, uint32_t uncached);
/* Whole service time of a request. */
double replay_model_service_ms(const struct replay_model *m, uint32_t uncached,
			       uint32_t output_tokens);

/* Nearest-rank percentile of sorted v[0, n) (q in (0, 1]); 0 if empty. */
double replay_pct(const double *v, size_t n, double q);
void replay_sort(double *v, size_t n);

/* ---- One run ------------------------------------------------------------------------- */

#define REPLAY_MAX_WORKERS 64u

struct replay_run_opts {
	uint32_t workers;
	uint64_t capacity_tokens; /* per worker */
	enum kvdex_route_policy router;
	enum kvdex_cache_policy evict;
	enum kvdex_cache_evict_mode evict_mode;
	uint64_t seed; /* router and RLT seeds derive from it */
	struct replay_model model;
	/* kvdex_route() itself (wall-clock now_ms) instead of lookup + decide
	 * with the simulated clock */
	bool use_kvdex_route;
	bool speculate;
	/* overrides of the route options (< 0: keep the library default) */
	double lbgr_units_per_token;
	double kvdex_prefill_ms_per_token;
	double kvdex_miss_weight;		      /* < 0: the router's default */
	bool kvdex_bound_rel_set, kvdex_bound_ms_set; /* else the router's defaults */
	double kvdex_bound_rel, kvdex_bound_ms;
	double kvdex_queued_req_ms;
	/* server */
	const char *kvdexd;  /* path, when spawning */
	const char *servers; /* existing servers, NULL: spawn one per run */
	bool progress;
	char label[96]; /* for the progress line */
};

struct replay_result {
	/* what ran */
	size_t requests;
	double sim_ms; /* first arrival to last completion */
	double wall_s; /* of the event loop */
	/* cache */
	double hit_rate;       /* cached prompt tokens at service start / prompt tokens */
	double index_hit_rate; /* the router's view: chosen worker's match at routing */
	double ideal_hit_rate; /* infinite cache, one worker, at block granularity */
	/* latency, ms */
	double ttft_p50, ttft_p95, ttft_p99, ttft_mean;
	double e2e_p50, e2e_p95, e2e_p99, e2e_mean;
	double queue_p50;
	/* throughput */
	double req_per_s;
	double tok_per_s; /* prompt + output tokens */
	/* balance: max / mean of per-worker busy time; coefficient of variation */
	double imbalance;
	double busy_cv;
	/* overheads, wall clock */
	double route_ns_mean, route_ns_p99; /* lookup + loads + policy */
	double decide_ns_mean;		    /* the policy alone */
	uint64_t evict_calls, evicted_blocks;
	double evict_ns_per_call, evict_ns_per_block; /* cache work, publish excluded */
	double publish_ns_mean;			      /* per publish call */
	uint64_t lookups, events, publishes, load_reports;
	double lookups_per_s, events_per_s; /* over the wall time of the loop */
	uint64_t dropped_blocks;	    /* blocks a worker could not store */
};

void replay_run_opts_init(struct replay_run_opts *o);
/* Run one replay. 0 or -errno (message on stderr). */
int replay_run(const struct replay_workload *w, const struct replay_run_opts *o,
	       struct replay_result *res);

/* ---- Reporting --------------------------------------------------------------------------- */

/* One finished run with its parameters, for the CSV and the tables. */
struct replay_row {
	char workload[32];
	char router[16];
	char evict[8];
	uint32_t workers;
	uint64_t capacity_tokens;
	double rate;
	char order[16];
	uint64_t seed;
	char x[48]; /* the swept value this row belongs to ("" if none) */
	struct replay_result r;
};

void replay_csv_header(FILE *f);
void replay_csv_row(FILE *f, const struct replay_row *row);
/* Group rows by everything but the seed; print the markdown table. */
void replay_markdown(FILE *f, const struct replay_row *rows, size_t n, const char *xname);
/* Write <dir>/<metric>.png charts with gnuplot (and their .dat and .gp).
 * Returns the number of charts written, or -errno; gnuplot missing is not
 * an error (a warning, 0 charts). */
int replay_charts(const char *dir, const struct replay_row *rows, size_t n, const char *xname);

#endif /* KVDEX_PERF_REPLAY_H */

/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file route.h
 * Routing hints: which worker should serve a request, from what the index
 * says each candidate holds of the request's block chain (per tier, exactly)
 * and what the worker table says about each candidate's load (fresh, with its
 * age). docs/ROUTING.md describes every policy, its constants and sources.
 *
 *   struct kvdex_router *r;
 *   kvdex_route_opts_init(&o, sizeof(o)); o.policy = KVDEX_ROUTE_KVDEX;
 *   kvdex_router_create(&o, &r);
 *   cand[i].worker_id = ...; cand[i].dp_rank = ...;      the candidate set
 *   kvdex_route(r, client, ns, keys, nblocks, ntokens, cand, ncand, &d);
 *   ... send the request to d.worker_id / d.dp_rank ...
 *   kvdex_route_done(r, d.ticket, observed_latency_ms);
 *
 * kvdex_route() is one lookup (with the workers' load rows read in the same
 * round trip) followed by a pure policy function, kvdex_router_decide(),
 * which a trace replay can call directly with synthetic snapshots. With
 * speculation on, the decision also publishes speculative STORED entries
 * ("the chosen worker will soon hold these blocks") that expire after a
 * short TTL unless the worker's real events confirm them.
 *
 * Threads: a struct kvdex_router is used by one thread at a time (no lock, no
 * thread of its own); kvdex_route() uses the client, so the same client rule
 * applies (kvdex.h). Errors: 0 or a count on success, a negative errno.
 */
#ifndef KVDEX_ROUTE_H
#define KVDEX_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvdex/kvdex.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Fresh worker loads --------------------------------------------------- */

/** kvdex_lookup() flag: also read every worker row of the servers the lookup
 * reads, in its first round trip (no extra round trip), so that
 * kvdex_workers_read(..., KVDEX_WORKERS_CACHED, ...) returns loads as fresh as
 * the lookup. */
#define KVDEX_LOOKUP_FRESH_LOADS 0x02u

/** kvdex_workers_read() flag: return the rows cached by the last read (a
 * lookup with KVDEX_LOOKUP_FRESH_LOADS, or a previous kvdex_workers_read());
 * no I/O. Their age is as of that read. */
#define KVDEX_WORKERS_CACHED 0x01u

/** Load age meaning "never reported". */
#define KVDEX_LOAD_AGE_NEVER UINT32_MAX

/** One (worker, dp rank) row of the worker table, with its load. */
struct kvdex_worker_load_row {
	uint32_t worker_id;
	uint16_t dp_rank;
	uint16_t dp_size;
	struct kvdex_load load;
	/** How old the load was when read, in ms, from the server's clock
	 * (1/16 s resolution); KVDEX_LOAD_AGE_NEVER if never reported. With
	 * several servers, the freshest copy. */
	uint32_t load_age_ms;
	uint32_t reserved;
};

/**
 * Read the worker table's load rows with the same one-sided reads as a
 * lookup (one round trip per server: its header and every row, validated).
 * @param c      client
 * @param flags  KVDEX_WORKERS_CACHED: no I/O, rows of the last read
 * @param out    rows, sorted by (worker_id, dp_rank)
 * @param cap    capacity of out
 * @return the number of rows (may exceed cap; only cap are written),
 *         -EINVAL (c NULL, out NULL with cap > 0), -ENOMEM, -EAGAIN, -EPROTO,
 *         connection errors
 * Context: the client's thread; blocks for the reads only (no server CPU on
 * shm and verbs). Ownership: out is the caller's.
 */
int kvdex_workers_read(struct kvdex_client *c, unsigned flags, struct kvdex_worker_load_row *out,
		       size_t cap);

/* ---- Policies -------------------------------------------------------------- */

enum kvdex_route_policy {
	KVDEX_ROUTE_RANDOM = 0,	     /**< "random": uniform, seeded */
	KVDEX_ROUTE_ROUND_ROBIN = 1, /**< "round_robin": over the candidate array */
	KVDEX_ROUTE_LEAST_LOAD = 2,  /**< "least_load": fewest queued + running */
	KVDEX_ROUTE_SGLANG = 3,	     /**< "sglang": SGLang 0.4.6 cache_aware */
	KVDEX_ROUTE_DYNAMO = 4,	     /**< "dynamo": Dynamo's KV router cost */
	KVDEX_ROUTE_LLMD = 5,	     /**< "llmd": llm-d precise prefix + load scorers */
	KVDEX_ROUTE_LBGR = 6,	     /**< "lbgr": KVRouting's LBGR, as implemented */
	KVDEX_ROUTE_KVDEX = 7,	     /**< "kvdex": estimated time to first token */
};
#define KVDEX_ROUTE_NPOLICIES 8u

/** Name of a policy ("random", ...), or NULL. Context: any. */
const char *kvdex_route_policy_name(enum kvdex_route_policy p);

/** Policy of a name: 0 or -EINVAL. Context: any. */
int kvdex_route_policy_parse(const char *name, enum kvdex_route_policy *out);

/** SGLang 0.4.6 cache_aware (sgl-router defaults). */
struct kvdex_route_sglang_opts {
	uint32_t balance_abs;	/**< 32: imbalance if max - min running > this */
	double balance_rel;	/**< 1.0001: ... and max > min * this */
	double cache_threshold; /**< 0.5: matched tokens / tokens must exceed it */
};

/** Dynamo KV router (docs: routing concepts, router configuration). */
struct kvdex_route_dynamo_opts {
	double overlap_credit; /**< 1.0: credit per GPU-held block */
	double host_weight;    /**< 0.75: credit per host-held block */
	double disk_weight;    /**< 0.25: credit per disk-held block */
	double remote_weight;  /**< 0.25: credit per remote (shared) block (assumed) */
	double prefill_scale;  /**< 1.0: prefill_load_scale */
	double temperature;    /**< 0.0: argmin; > 0 softmax sampling */
};

/** llm-d: precise prefix-cache scorer + load scorers, max-score picker. */
struct kvdex_route_llmd_opts {
	double tier_weight[KVDEX_NTIERS]; /**< gpu 1.0, cpu 0.8, storage 0.3, shared 0.4 */
	double prefix_weight;		  /**< 2: precise-prefix-cache-scorer */
	double kv_weight;		  /**< 1: kv-cache-utilization-scorer */
	double queue_weight;		  /**< 1: queue-scorer */
};

/** KVRouting's LBGR, as its router.rs implements it. */
struct kvdex_route_lbgr_opts {
	double units_per_token;	    /**< 1.0: "ms" per uncached token (the original: per char) */
	double alpha_queue;	    /**< 1.0: weight of the decayed load */
	double margin;		    /**< 1.0: a candidate must beat the best by more */
	uint32_t decay_num;	    /**< 31 */
	uint32_t decay_den;	    /**< 32 */
	uint32_t decay_interval_ms; /**< 20 */
	double rls_lambda;	    /**< 0.992 */
	double rls_p0;		    /**< 1e6 */
};

/** kvdex's own policy: estimated time to first token (ms), lowest wins. */
struct kvdex_route_kvdex_opts {
	double prefill_ms_per_token;		 /**< 0.125 (8 K tokens/s) */
	double fetch_ms_per_token[KVDEX_NTIERS]; /**< 0, 0.005 host, 0.025 disk, 0.01 remote */
	double queued_req_ms;			 /**< 2.0 per queued request */
	double running_req_ms;			 /**< 0.5 per running request */
	double spec_miss_frac;	      /**< 0.5: a speculative block costs this much of a miss */
	double affinity_ms_per_block; /**< 0.05 per matched block */
	uint32_t stale_ms;	      /**< 1000: older load rows are stale */
	double stale_penalty_ms;      /**< 50 */
	uint16_t kv_high_permille;    /**< 900: the penalty starts here */
	double kv_full_penalty_ms;    /**< 200 at 1000 permille, linear from high */
	/** An uncached token counts miss_weight times its own prefill: a miss
	 * also spends capacity that later requests of the same prefix would have
	 * saved, which a per-request TTFT estimate does not see. */
	double miss_weight;
	/** The latency bound: a candidate whose own TTFT estimate (at miss
	 * weight 1) is more than bound_rel x the best such estimate + bound_ms
	 * above it ranks after every candidate within the bound. The bound is
	 * divided by the share of candidates with nothing queued, so it
	 * vanishes as the fleet saturates. 0.35 and 100 ms; a negative
	 * bound_ms turns it off. */
	double bound_rel;
	double bound_ms;
};

/** Router options; initialise with kvdex_route_opts_init(). */
struct kvdex_route_opts {
	size_t opts_size;
	enum kvdex_route_policy policy; /**< default KVDEX_ROUTE_KVDEX */
	uint64_t seed;			/**< PRNG seed (random, ties, softmax); default 1 */
	/** Publish speculative entries for the chosen worker (default false). */
	bool speculate;
	uint8_t spec_tier;     /**< tier of speculative entries; default KVDEX_GPU */
	uint32_t spec_ttl_ms;  /**< default 2000, max 7500 */
	uint32_t max_inflight; /**< routed, not yet done requests tracked; 65536 */
	struct kvdex_route_sglang_opts sglang;
	struct kvdex_route_dynamo_opts dynamo;
	struct kvdex_route_llmd_opts llmd;
	struct kvdex_route_lbgr_opts lbgr;
	struct kvdex_route_kvdex_opts kvdex;
};

/**
 * Fill opts with the defaults above (each policy's published constants).
 * @param opts  options to initialise
 * @param size  sizeof(*opts) as the caller knows it
 * Context: any thread. Ownership: nothing retained.
 */
void kvdex_route_opts_init(struct kvdex_route_opts *opts, size_t size);

/* ---- Router ------------------------------------------------------------------ */

struct kvdex_router;

/** A candidate worker. The caller sets worker_id and dp_rank; the rest is
 * the snapshot the policy sees (filled by kvdex_route(), or by the caller of
 * kvdex_router_decide()), and score/rank its verdict. */
struct kvdex_route_cand {
	uint32_t worker_id;
	uint16_t dp_rank;
	uint16_t matched;		    /**< leading blocks held, any tier */
	uint16_t tier_blocks[KVDEX_NTIERS]; /**< of those, by fastest tier */
	uint16_t spec_blocks;		    /**< of those, held only speculatively */
	uint16_t reserved;
	struct kvdex_load load;
	uint32_t load_age_ms; /**< KVDEX_LOAD_AGE_NEVER: no row / never reported */
	double score;	      /**< out: the policy's figure (see docs/ROUTING.md) */
};

/** The request as the policy sees it. */
struct kvdex_route_req {
	uint32_t nblocks;    /**< blocks of the chain */
	uint32_t ntokens;    /**< prompt tokens (0: nblocks * block_size) */
	uint32_t block_size; /**< tokens per block, > 0 */
	uint64_t now_ms;     /**< monotonic ms (LBGR decay, recent assignments) */
};

#define KVDEX_ROUTE_WHY_VALS 8u

/** Why a decision was made: the policy's figures for the chosen candidate
 * (docs/ROUTING.md names them per policy). kvdex_route_reason() renders them
 * as one line; a decision only stores them, since formatting a line on every
 * decision cost as much as the policy itself. */
struct kvdex_route_why {
	uint8_t policy;	 /**< enum kvdex_route_policy */
	uint8_t variant; /**< which of the policy's rules decided (sglang: 0 imbalance,
			  *   1 match above the threshold, 2 smallest tree) */
	uint16_t nvals;	 /**< figures in v */
	uint32_t reserved;
	double v[KVDEX_ROUTE_WHY_VALS];
};

/** What a routing decision says. */
struct kvdex_route_decision {
	uint32_t worker_id; /**< the choice = cand[0] after the call */
	uint16_t dp_rank;
	uint16_t reserved;
	uint64_t ticket;	    /**< pass to kvdex_route_done() */
	struct kvdex_route_why why; /**< why; kvdex_route_reason() renders it */
	uint32_t spec_published;    /**< speculative entries published */
	uint32_t round_trips;	    /**< of the lookup */
	int spec_error;		    /**< 0, or why the speculative publish failed */
};

/**
 * Destroy a router.
 * @param r  router, may be NULL
 * Context: the router's thread. Ownership: frees r.
 */
void kvdex_router_destroy(struct kvdex_router *r);

/**
 * Create a router (policy state: counters, per-worker loads, a seeded PRNG).
 * @param opts  options (borrowed), NULL for defaults
 * @param out   the new router
 * @return 0, -EINVAL (bad policy, zero constants where a positive one is
 *         needed, spec_ttl_ms > 7500, spec_tier >= KVDEX_NTIERS), -ENOMEM
 * Context: any thread. Ownership: the caller owns *out and releases it with
 * kvdex_router_destroy().
 */
int kvdex_router_create(const struct kvdex_route_opts *opts, struct kvdex_router **out);

/**
 * The pure half of a decision: rank the candidates of a snapshot. Sorts cand
 * best first, sets each score, fills d (worker, ticket, why; no I/O
 * fields), and records the assignment in the router's state (round robin
 * counter, SGLang running counts, LBGR loads, recent assignments).
 * @param r     router
 * @param req   the request (borrowed)
 * @param cand  candidates, reordered in place
 * @param n     number of candidates, >= 1
 * @param d     the decision
 * @return 0, -EINVAL (NULL argument, n = 0, block_size = 0), -ENOMEM
 * Context: the router's thread; no I/O, never blocks. Ownership: cand and d
 * are the caller's.
 */
int kvdex_router_decide(struct kvdex_router *r, const struct kvdex_route_req *req,
			struct kvdex_route_cand *cand, size_t n, struct kvdex_route_decision *d);

/**
 * Render a decision's reason (d->why) as one line, e.g.
 * "kvdex: ttft 3.10 ms = queue 0.50 + prefill 2.00 + ...".
 * @param d    a decision filled by kvdex_route() or kvdex_router_decide()
 * @param buf  output, NUL-terminated when len > 0
 * @param len  size of buf (160 bytes holds every policy's line)
 * @return the length of the full line (as snprintf), -EINVAL
 * Context: any thread. Ownership: buf is the caller's.
 */
int kvdex_route_reason(const struct kvdex_route_decision *d, char *buf, size_t len);

/**
 * Route one request: look the chain up (reading the workers' load rows in
 * the same round trip), fill the candidates' snapshot (a candidate the index
 * does not know simply holds nothing), decide, and, if opts.speculate,
 * publish speculative STORED entries for the blocks the chosen worker does
 * not hold yet (an unsequenced publish that does not disturb the worker's
 * own seq stream; a failure there is reported in d->spec_error only).
 * @param r        router
 * @param c        client
 * @param ns       namespace handle (its block_size is the request's)
 * @param keys     the chain's block keys (borrowed)
 * @param nblocks  number of keys, >= 1
 * @param ntokens  prompt tokens (0: nblocks * block_size)
 * @param cand     candidate set, >= 1; reordered best first
 * @param ncand    number of candidates
 * @param d        the decision
 * @return 0, -EINVAL, -ENOMEM, or kvdex_lookup()'s errors
 * Context: the client's and the router's thread; blocks for the lookup (and
 * the speculative publish, one exchange per server concerned).
 * Ownership: keys borrowed; cand and d are the caller's.
 */
int kvdex_route(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns, const uint64_t *keys,
		size_t nblocks, uint32_t ntokens, struct kvdex_route_cand *cand, size_t ncand,
		struct kvdex_route_decision *d);

/**
 * Report that a routed request finished: releases its load in the router's
 * state (SGLang running count, LBGR decayed reservation, Dynamo active
 * blocks) and, with latency_ms >= 0, lets LBGR learn its residual.
 * @param r           router
 * @param ticket      from the decision
 * @param latency_ms  observed end-to-end latency; < 0: failed, learn nothing
 * @return 0, -EINVAL (r NULL), -ENOENT (unknown or already done ticket, or
 *         one pushed out by more than max_inflight later decisions)
 * Context: the router's thread. Ownership: nothing retained.
 */
int kvdex_route_done(struct kvdex_router *r, uint64_t ticket, double latency_ms);

/** Same as kvdex_route_done() with an explicit clock (tests, replays). */
int kvdex_route_done_at(struct kvdex_router *r, uint64_t ticket, double latency_ms,
			uint64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_ROUTE_H */

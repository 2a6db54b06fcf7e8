/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing hints, internals shared by route.c (router state, tickets,
 * kvdex_route), route_policy.c (the pure policies), route_load.c (load rows)
 * and route_spec.c (speculative publishes), and by the route tests, which
 * include the .c files.
 *
 * State per (worker, dp rank) the router has seen lives in `w[]`, found
 * through an open-addressing table. Each decision takes a ticket: a slot of
 * a ring of max_inflight (rounded up to a power of two) reservations that
 * kvdex_route_done() releases; a decision that lands on a slot still in use
 * releases the old reservation without learning (it was never reported).
 *
 * Locking: none; a router is used by one thread at a time.
 */
#ifndef KVDEX_CLIENT_ROUTE_INTERNAL_H
#define KVDEX_CLIENT_ROUTE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/src/internal.h"
#include "kvdex/route.h"

/* kvdex policy: assignments remembered per worker to cover the gap between
 * a decision and the next load report that includes it. */
#define ROUTE_RECENT 8u
/* ... and how long one counts when the worker's row has no age. */
#define ROUTE_RECENT_MAX_MS 2000u

struct route_recent {
	uint64_t at_ms;
	uint32_t tokens;
};

struct route_worker {
	uint32_t worker_id;
	uint16_t dp_rank;
	/* SGLang: requests routed and not done; blocks inserted in its tree */
	uint32_t sgl_running;
	uint64_t sgl_tree_blocks;
	/* LBGR: integer decayed load as of lbgr_tick, RLS bias and its P */
	uint64_t lbgr_load;
	uint64_t lbgr_tick;
	double lbgr_theta;
	double lbgr_p;
	/* Dynamo: the router's active prefill / decode blocks */
	double dyn_prefill;
	double dyn_decode;
	/* kvdex: the last assignments */
	struct route_recent recent[ROUTE_RECENT];
	unsigned recent_pos;
};

struct route_ticket {
	uint64_t ticket; /* 0: free */
	uint32_t widx;
	uint64_t at_ms;
	/* LBGR reservation */
	uint64_t lbgr_inc;
	double lbgr_base;
	double lbgr_cur;
	/* Dynamo blocks added */
	double dyn_prefill;
	double dyn_decode;
	/* kvdex: the recent-assignment entry this request filled */
	unsigned recent_pos;
};

struct kvdex_router {
	struct kvdex_route_opts o;
	uint64_t rng;
	uint64_t rr;
	struct route_worker *w;
	uint32_t nw, capw;
	uint32_t *slots; /* index + 1 into w, 0 = empty; 2 * capw entries */
	struct route_ticket *tk;
	uint32_t tkmask;
	uint64_t next_ticket;
	/* per-decision scratch */
	uint32_t *cw; /* candidate -> worker index */
	size_t capcw;
	struct kvdex_route_cand *tmpc; /* the ranking's copy */
	uint32_t *cw2;		       /* cw in the ranked order */
	double *scratch_own;	       /* kvdex: each candidate's own TTFT estimate */
	/* kvdex_route scratch */
	struct kvdex_holding *hold;
	uint32_t caphold;
};

/* What a policy decided: the chosen candidate and how to rank the rest. */
struct route_verdict {
	size_t best;
	bool higher_better; /* scores: higher is better (else lower) */
};

/* Per-candidate facts derived once per decision. */
struct route_view {
	uint32_t tokens;	 /* request tokens */
	uint32_t matched_tokens; /* min(matched * block_size, tokens) */
	uint32_t uncached;	 /* tokens - matched_tokens */
};

typedef void (*route_policy_fn)(struct kvdex_router *r, const struct kvdex_route_req *q,
				struct kvdex_route_cand *c, size_t n, struct route_verdict *v,
				struct kvdex_route_why *why);

/* route.c */
uint64_t kvdex_route_rng_next(struct kvdex_router *r);
/* Uniform in [0, n), n > 0. */
uint64_t kvdex_route_rng_below(struct kvdex_router *r, uint64_t n);
/* Uniform in [0, 1). */
double kvdex_route_rng_unit(struct kvdex_router *r);
struct route_worker *kvdex_route_worker(struct kvdex_router *r, size_t cand_idx);
void kvdex_route_view(const struct kvdex_route_req *q, const struct kvdex_route_cand *c,
		      struct route_view *v);
uint64_t kvdex_route_now_ms(void);

/* route_policy.c: one function per policy, and their commits (the state a
 * decision leaves behind), and the releases done by kvdex_route_done(). */
extern const route_policy_fn kvdex_route_policies[KVDEX_ROUTE_NPOLICIES];
void kvdex_route_commit(struct kvdex_router *r, const struct kvdex_route_req *q,
			const struct kvdex_route_cand *chosen, struct route_worker *w,
			struct route_ticket *t);
void kvdex_route_release(struct kvdex_router *r, struct route_ticket *t, double latency_ms,
			 uint64_t now_ms);
/* LBGR's load of w decayed to now (advances w's clock). */
uint64_t kvdex_route_lbgr_load(const struct kvdex_router *r, struct route_worker *w,
			       uint64_t now_ms);

/* route_load.c: fill the candidates' load from the client's cached rows. */
void kvdex_route_fill_loads(const struct kvdex_client *c, struct kvdex_route_cand *cand, size_t n);
/* Age in ms of a row's load read at clock `now_ticks`. */
uint32_t kvdex_route_row_age(const struct kvdex_worker_row *row, uint32_t now_ticks);

/* route_spec.c: publish speculative STOREDs of keys[from, n) for the chosen
 * worker. Returns the number published or a negative errno. */
int kvdex_route_speculate(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns,
			  const uint64_t *keys, size_t n, size_t from, uint32_t worker_id,
			  uint16_t dp_rank);

#endif /* KVDEX_CLIENT_ROUTE_INTERNAL_H */

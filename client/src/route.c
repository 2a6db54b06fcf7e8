/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing hints (kvdex/route.h, docs/ROUTING.md): the router object, its
 * per-worker state and tickets, the ranking step shared by every policy, and
 * kvdex_route() = one lookup with fresh load rows + a pure policy + an
 * optional speculative publish.
 *
 * A decision (kvdex_router_decide):
 *   1. map each candidate to its per-(worker, rank) state, creating it on
 *      first sight (open addressing on worker_id/dp_rank, grown at 1/2 load);
 *   2. the policy (route_policy.c) scores every candidate and names the best;
 *   3. the candidates are ranked: the best first, then the others by score
 *      (ties in the caller's order), and the best's state is charged with the
 *      request (kvdex_route_commit), remembered under a ticket.
 * Nothing in a decision reads a clock: the request carries now_ms, so tests
 * and replays are exact and reproducible under a seed.
 *
 * Tickets: ticket t lives in slot t & tkmask of a ring of max_inflight slots
 * (a power of two); kvdex_route_done(t) releases it once. A decision landing
 * on a slot still held releases that reservation first, without learning.
 *
 * Locking: none (one thread per router).
 */
#include "client/src/route_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static_assert(sizeof(struct kvdex_route_opts) == offsetof(struct kvdex_route_opts, kvdex) +
							 sizeof(struct kvdex_route_kvdex_opts),
	      "new options go at the end");

static const char *const policy_names[KVDEX_ROUTE_NPOLICIES] = {
	[KVDEX_ROUTE_RANDOM] = "random",
	[KVDEX_ROUTE_ROUND_ROBIN] = "round_robin",
	[KVDEX_ROUTE_LEAST_LOAD] = "least_load",
	[KVDEX_ROUTE_SGLANG] = "sglang",
	[KVDEX_ROUTE_DYNAMO] = "dynamo",
	[KVDEX_ROUTE_LLMD] = "llmd",
	[KVDEX_ROUTE_LBGR] = "lbgr",
	[KVDEX_ROUTE_KVDEX] = "kvdex",
};

KVDEX_EXPORT const char *
kvdex_route_policy_name(enum kvdex_route_policy p)
{
	return (unsigned)p < KVDEX_ROUTE_NPOLICIES ? policy_names[p] : NULL;
}

KVDEX_EXPORT int
kvdex_route_policy_parse(const char *name, enum kvdex_route_policy *out)
{
	if (name == NULL || out == NULL) {
		return -EINVAL;
	}
	for (unsigned i = 0; i < KVDEX_ROUTE_NPOLICIES; i++) {
		if (strcmp(name, policy_names[i]) == 0) {
			*out = (enum kvdex_route_policy)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* The published constants (docs/ROUTING.md gives each one's source). */
static void
route_defaults(struct kvdex_route_opts *d)
{
	memset(d, 0, sizeof(*d));
	d->opts_size = sizeof(*d);
	d->policy = KVDEX_ROUTE_KVDEX;
	d->seed = 1;
	d->spec_tier = KVDEX_GPU;
	d->spec_ttl_ms = 2000;
	d->max_inflight = 65536;
	d->sglang = (struct kvdex_route_sglang_opts){32, 1.0001, 0.5};
	d->dynamo = (struct kvdex_route_dynamo_opts){1.0, 0.75, 0.25, 0.25, 1.0, 0.0};
	d->llmd = (struct kvdex_route_llmd_opts){{1.0, 0.8, 0.3, 0.4}, 2.0, 1.0, 1.0};
	d->lbgr = (struct kvdex_route_lbgr_opts){1.0, 1.0, 1.0, 31, 32, 20, 0.992, 1e6};
	d->kvdex = (struct kvdex_route_kvdex_opts){
		.prefill_ms_per_token = 0.125,
		.miss_weight = 8.0,
		.bound_rel = 0.35,
		.bound_ms = 100.0,
		.fetch_ms_per_token = {0.0, 0.005, 0.025, 0.01},
		.queued_req_ms = 2.0,
		.running_req_ms = 0.5,
		.spec_miss_frac = 0.5,
		.affinity_ms_per_block = 0.05,
		.stale_ms = 1000,
		.stale_penalty_ms = 50.0,
		.kv_high_permille = 900,
		.kv_full_penalty_ms = 200.0,
	};
}

KVDEX_EXPORT void
kvdex_route_opts_init(struct kvdex_route_opts *opts, size_t size)
{
	struct kvdex_route_opts d;

	if (opts == NULL) {
		return;
	}
	route_defaults(&d);
	if (size > sizeof(d)) {
		size = sizeof(d);
	}
	memcpy(opts, &d, size);
	if (size >= sizeof(opts->opts_size)) {
		opts->opts_size = size;
	}
}

static int
route_opts_check(const struct kvdex_route_opts *o)
{
	const struct kvdex_route_lbgr_opts *l = &o->lbgr;

	if ((unsigned)o->policy >= KVDEX_ROUTE_NPOLICIES || o->spec_tier >= KVDEX_NTIERS ||
	    o->spec_ttl_ms > KVDEX_SPEC_TTL_MAX_MS || o->max_inflight == 0 ||
	    o->max_inflight > (1u << 24)) {
		return -EINVAL;
	}
	if (l->decay_den == 0 || l->decay_num > l->decay_den || l->decay_interval_ms == 0 ||
	    !(l->rls_lambda > 0.0 && l->rls_lambda <= 1.0) || o->dynamo.temperature < 0.0 ||
	    o->kvdex.kv_high_permille >= 1000 || o->kvdex.prefill_ms_per_token < 0.0 ||
	    !(o->kvdex.bound_rel >= 0.0)) {
		return -EINVAL;
	}
	return 0;
}

KVDEX_EXPORT void
kvdex_router_destroy(struct kvdex_router *r)
{
	if (r == NULL) {
		return;
	}
	free(r->w);
	free(r->slots);
	free(r->tk);
	free(r->cw);
	free(r->cw2);
	free(r->tmpc);
	free(r->scratch_own);
	free(r->hold);
	free(r);
}

KVDEX_EXPORT int
kvdex_router_create(const struct kvdex_route_opts *opts, struct kvdex_router **out)
{
	struct kvdex_router *r;
	uint32_t ring = 1;

	if (out == NULL || (opts != NULL && opts->opts_size < sizeof(opts->opts_size))) {
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		return -ENOMEM;
	}
	route_defaults(&r->o);
	if (opts != NULL) {
		memcpy(&r->o, opts,
		       opts->opts_size < sizeof(r->o) ? opts->opts_size : sizeof(r->o));
		r->o.opts_size = sizeof(r->o);
	}
	if (route_opts_check(&r->o) < 0) {
		kvdex_router_destroy(r);
		return -EINVAL;
	}
	while (ring < r->o.max_inflight) {
		ring <<= 1;
	}
	r->tk = calloc(ring, sizeof(*r->tk));
	if (r->tk == NULL) {
		kvdex_router_destroy(r);
		return -ENOMEM;
	}
	r->tkmask = ring - 1;
	r->next_ticket = 1;
	r->rng = r->o.seed;
	*out = r;
	return 0;
}

/* ---- PRNG: splitmix64 (reproducible from opts.seed) ------------------------- */

uint64_t
kvdex_route_rng_next(struct kvdex_router *r)
{
	uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t
kvdex_route_rng_below(struct kvdex_router *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)kvdex_route_rng_next(r) * n) >> 64);
}

double
kvdex_route_rng_unit(struct kvdex_router *r)
{
	return (double)(kvdex_route_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t
kvdex_route_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Per-worker state --------------------------------------------------------- */

static uint32_t
route_hash(uint32_t worker_id, uint16_t dp_rank)
{
	uint64_t h = ((uint64_t)worker_id << 16 | dp_rank) * 0x9e3779b97f4a7c15ull;

	return (uint32_t)(h >> 32);
}

/* Rebuild the table with room for twice as many workers. */
static int
route_grow(struct kvdex_router *r)
{
	uint32_t ncap = r->capw != 0 ? r->capw * 2 : 16;
	struct route_worker *nw = realloc(r->w, ncap * sizeof(*nw));
	uint32_t *ns;

	if (nw == NULL) {
		return -ENOMEM;
	}
	r->w = nw;
	ns = calloc(2 * (size_t)ncap, sizeof(*ns));
	if (ns == NULL) {
		return -ENOMEM;
	}
	free(r->slots);
	r->slots = ns;
	r->capw = ncap;
	for (uint32_t i = 0; i < r->nw; i++) {
		uint32_t h = route_hash(r->w[i].worker_id, r->w[i].dp_rank) & (2 * ncap - 1);

		while (ns[h] != 0) {
			h = (h + 1) & (2 * ncap - 1);
		}
		ns[h] = i + 1;
	}
	return 0;
}

/* Index of (worker_id, dp_rank)'s state, created zeroed on first sight. */
static int
route_worker_index(struct kvdex_router *r, uint32_t worker_id, uint16_t dp_rank, uint32_t *idx)
{
	uint32_t mask, h;

	if (r->nw == r->capw && route_grow(r) < 0) {
		return -ENOMEM;
	}
	mask = 2 * r->capw - 1;
	for (h = route_hash(worker_id, dp_rank) & mask; r->slots[h] != 0; h = (h + 1) & mask) {
		const struct route_worker *w = &r->w[r->slots[h] - 1];

		if (w->worker_id == worker_id && w->dp_rank == dp_rank) {
			*idx = r->slots[h] - 1;
			return 0;
		}
	}
	memset(&r->w[r->nw], 0, sizeof(r->w[0]));
	r->w[r->nw].worker_id = worker_id;
	r->w[r->nw].dp_rank = dp_rank;
	r->w[r->nw].lbgr_p = r->o.lbgr.rls_p0;
	r->slots[h] = r->nw + 1;
	*idx = r->nw++;
	return 0;
}

struct route_worker *
kvdex_route_worker(struct kvdex_router *r, size_t cand_idx)
{
	return &r->w[r->cw[cand_idx]];
}

void
kvdex_route_view(const struct kvdex_route_req *q, const struct kvdex_route_cand *c,
		 struct route_view *v)
{
	uint64_t mt = (uint64_t)c->matched * q->block_size;

	v->tokens = q->ntokens != 0 ? q->ntokens : q->nblocks * q->block_size;
	v->matched_tokens = mt < v->tokens ? (uint32_t)mt : v->tokens;
	v->uncached = v->tokens - v->matched_tokens;
}

static int
route_scratch(struct kvdex_router *r, size_t n)
{
	uint32_t *a, *b;
	struct kvdex_route_cand *t;
	double *o;

	if (n <= r->capcw) {
		return 0;
	}
	a = realloc(r->cw, n * sizeof(*a));
	if (a == NULL) {
		return -ENOMEM;
	}
	r->cw = a;
	b = realloc(r->cw2, n * sizeof(*b));
	if (b == NULL) {
		return -ENOMEM;
	}
	r->cw2 = b;
	t = realloc(r->tmpc, n * sizeof(*t));
	if (t == NULL) {
		return -ENOMEM;
	}
	r->tmpc = t;
	o = realloc(r->scratch_own, n * sizeof(*o));
	if (o == NULL) {
		return -ENOMEM;
	}
	r->scratch_own = o;
	r->capcw = n;
	return 0;
}

/* ---- Ranking ------------------------------------------------------------------------- */

/* Is candidate a ranked before b (scores, then the caller's order)? */
static bool
route_before(const struct kvdex_route_cand *c, size_t a, size_t b, bool higher)
{
	if (c[a].score != c[b].score) {
		return higher ? c[a].score > c[b].score : c[a].score < c[b].score;
	}
	return a < b;
}

/*
 * Reorder cand: the verdict's best first, the rest by score. An insertion
 * sort over indices: candidate sets are small (tens), and it is stable.
 */
static void
route_rank(struct kvdex_router *r, struct kvdex_route_cand *cand, size_t n,
	   const struct route_verdict *v)
{
	uint32_t *ord = r->cw2;
	size_t m = 0;

	ord[m++] = (uint32_t)v->best;
	for (size_t i = 0; i < n; i++) {
		size_t j;

		if (i == v->best) {
			continue;
		}
		for (j = m; j > 1 && route_before(cand, i, ord[j - 1], v->higher_better); j--) {
			ord[j] = ord[j - 1];
		}
		ord[j] = (uint32_t)i;
		m++;
	}
	memcpy(r->tmpc, cand, n * sizeof(*cand));
	for (size_t i = 0; i < n; i++) {
		cand[i] = r->tmpc[ord[i]];
		ord[i] = r->cw[ord[i]]; /* worker index, in ranked order */
	}
	memcpy(r->cw, ord, n * sizeof(*ord));
}

/* ---- Tickets ----------------------------------------------------------------------------- */

static struct route_ticket *
route_ticket_take(struct kvdex_router *r, uint64_t now_ms)
{
	uint64_t t = r->next_ticket++;
	struct route_ticket *tk = &r->tk[t & r->tkmask];

	if (tk->ticket != 0) {
		/* Never reported done: give its load back, learn nothing. */
		kvdex_route_release(r, tk, -1.0, now_ms);
	}
	memset(tk, 0, sizeof(*tk));
	tk->ticket = t;
	tk->at_ms = now_ms;
	return tk;
}

KVDEX_EXPORT int
kvdex_router_decide(struct kvdex_router *r, const struct kvdex_route_req *q,
		    struct kvdex_route_cand *cand, size_t n, struct kvdex_route_decision *d)
{
	struct route_verdict v = {0, false};
	struct route_ticket *tk;
	int rc;

	if (r == NULL || q == NULL || cand == NULL || n == 0 || d == NULL || q->block_size == 0 ||
	    n > UINT32_MAX) {
		return -EINVAL;
	}
	rc = route_scratch(r, n);
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = route_worker_index(r, cand[i].worker_id, cand[i].dp_rank, &r->cw[i]);
	}
	if (rc < 0) {
		return rc;
	}
	memset(d, 0, sizeof(*d));
	d->why.policy = (uint8_t)r->o.policy;
	kvdex_route_policies[r->o.policy](r, q, cand, n, &v, &d->why);
	route_rank(r, cand, n, &v);
	tk = route_ticket_take(r, q->now_ms);
	tk->widx = r->cw[0];
	kvdex_route_commit(r, q, &cand[0], &r->w[r->cw[0]], tk);
	d->worker_id = cand[0].worker_id;
	d->dp_rank = cand[0].dp_rank;
	d->ticket = tk->ticket;
	return 0;
}

KVDEX_EXPORT int
kvdex_route_done_at(struct kvdex_router *r, uint64_t ticket, double latency_ms, uint64_t now_ms)
{
	struct route_ticket *tk;

	if (r == NULL) {
		return -EINVAL;
	}
	tk = &r->tk[ticket & r->tkmask];
	if (ticket == 0 || tk->ticket != ticket) {
		return -ENOENT;
	}
	kvdex_route_release(r, tk, latency_ms, now_ms);
	tk->ticket = 0;
	return 0;
}

KVDEX_EXPORT int
kvdex_route_done(struct kvdex_router *r, uint64_t ticket, double latency_ms)
{
	return kvdex_route_done_at(r, ticket, latency_ms, kvdex_route_now_ms());
}

/* ---- kvdex_route: lookup + policy + speculation ------------------------------------------ */

/* Look the chain up with fresh rows, making room for every holder. */
static int
route_lookup(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns, const uint64_t *keys,
	     size_t n, struct kvdex_lookup_result *res)
{
	int rc;

	for (;;) {
		memset(res, 0, sizeof(*res));
		res->holdings = r->hold;
		res->cap = r->caphold;
		rc = kvdex_lookup(c, ns, keys, n, KVDEX_LOOKUP_FRESH_LOADS, res);
		if (rc < 0 || res->nholdings_total <= r->caphold) {
			return rc;
		}
		/* More holders than room (rare): grow and ask again. */
		free(r->hold);
		r->caphold = res->nholdings_total + 16;
		r->hold = calloc(r->caphold, sizeof(*r->hold));
		if (r->hold == NULL) {
			r->caphold = 0;
			return -ENOMEM;
		}
	}
}

/* Copy each candidate's holding (none: it holds nothing). */
static void
route_fill_holdings(const struct kvdex_lookup_result *res, struct kvdex_route_cand *cand, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct kvdex_route_cand *k = &cand[i];

		k->matched = 0;
		k->spec_blocks = 0;
		memset(k->tier_blocks, 0, sizeof(k->tier_blocks));
		for (uint32_t j = 0; j < res->nholdings; j++) {
			const struct kvdex_holding *h = &res->holdings[j];

			if (h->worker_id == k->worker_id && h->dp_rank == k->dp_rank) {
				k->matched = h->matched;
				k->spec_blocks = h->spec_blocks;
				memcpy(k->tier_blocks, h->tier_blocks, sizeof(k->tier_blocks));
				break;
			}
		}
	}
}

KVDEX_EXPORT int
kvdex_route(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns, const uint64_t *keys,
	    size_t nblocks, uint32_t ntokens, struct kvdex_route_cand *cand, size_t ncand,
	    struct kvdex_route_decision *d)
{
	struct kvdex_lookup_result res;
	struct kvdex_route_req q;
	int rc;

	if (r == NULL || c == NULL || keys == NULL || nblocks == 0 || nblocks > UINT32_MAX ||
	    cand == NULL || ncand == 0 || d == NULL || ns >= c->nns) {
		return -EINVAL;
	}
	if (r->hold == NULL) {
		r->caphold = 64;
		r->hold = calloc(r->caphold, sizeof(*r->hold));
		if (r->hold == NULL) {
			return -ENOMEM;
		}
	}
	rc = route_lookup(r, c, ns, keys, nblocks, &res);
	if (rc < 0) {
		return rc;
	}
	route_fill_holdings(&res, cand, ncand);
	kvdex_route_fill_loads(c, cand, ncand);
	q = (struct kvdex_route_req){
		.nblocks = (uint32_t)nblocks,
		.ntokens = ntokens,
		.block_size = c->ns[ns].block_size != 0 ? c->ns[ns].block_size : 1,
		.now_ms = kvdex_route_now_ms(),
	};
	rc = kvdex_router_decide(r, &q, cand, ncand, d);
	if (rc < 0) {
		return rc;
	}
	d->round_trips = res.round_trips;
	if (r->o.speculate && cand[0].matched < nblocks) {
		rc = kvdex_route_speculate(r, c, ns, keys, nblocks, cand[0].matched, d->worker_id,
					   d->dp_rank);
		if (rc < 0) {
			d->spec_error = rc;
		} else {
			d->spec_published = (uint32_t)rc;
		}
	}
	return 0;
}

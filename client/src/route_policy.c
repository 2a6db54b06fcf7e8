/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The routing policies as pure functions of a snapshot (the candidates'
 * holdings and loads, the request) and the router's state. Each scores every
 * candidate, names the best and says whether a higher score is better; the
 * ranking and the ticket are route.c's. docs/ROUTING.md gives each policy's
 * source and how our units map onto the original's; the short version:
 *
 *   random       uniform (seeded)                                 [KVRouting]
 *   round_robin  counter % n over the candidate array             [KVRouting]
 *   least_load   fewest queued + running (load rows)
 *   sglang       0.4.6 cache_aware: imbalance -> shortest running queue, else
 *                deepest match if matched/len > 0.5, else smallest tree;
 *                running counts and tree sizes are the router's own
 *   dynamo       cost = prefill_scale * max(active_prefill + prompt_blocks -
 *                credits, 0) + active_decode + request blocks; argmin (ties
 *                random) or softmax at temperature > 0
 *   llmd         2 * prefix (tier-weighted consecutive blocks, min-max
 *                normalised) + 1 * (1 - kv util) + 1 * queue (min-max); max
 *   lbgr         pred = max(1, max(1, uncached) + load + theta); a candidate
 *                replaces the best only if pred + margin < best
 *   kvdex        estimated ms to first token (see route_kvdex_ttft)
 *
 * Commits (kvdex_route_commit) charge the chosen worker; releases
 * (kvdex_route_release, at kvdex_route_done) give it back and let LBGR learn.
 *
 * Locking: none (the router's thread).
 */
#include "client/src/route_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- Reasons ---------------------------------------------------------------------- */

/* sglang's rules (kvdex_route_why.variant). */
enum { SGL_IMBALANCE = 0, SGL_MATCH = 1, SGL_SMALLEST_TREE = 2 };

/* Record the figures behind a decision: a few stores. The text is rendered
 * only when asked for (kvdex_route_reason): formatting floating-point figures
 * on every decision cost as much as the policy itself. */
static void
why_fill(struct kvdex_route_why *why, unsigned variant, const double *v, unsigned n)
{
	why->variant = (uint8_t)variant;
	why->nvals = (uint16_t)(n < KVDEX_ROUTE_WHY_VALS ? n : KVDEX_ROUTE_WHY_VALS);
	memcpy(why->v, v, why->nvals * sizeof(v[0]));
}

/* why_set(why, variant, figures...): every figure converted to double. */
#define why_set(why, variant, ...)                                                                 \
	why_fill((why), (variant), (const double[]){__VA_ARGS__},                                  \
		 (unsigned)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))

KVDEX_EXPORT int
kvdex_route_reason(const struct kvdex_route_decision *d, char *buf, size_t len)
{
	const struct kvdex_route_why *w;
	const double *v;

	if (d == NULL || (buf == NULL && len > 0)) {
		return -EINVAL;
	}
	w = &d->why;
	v = w->v;
	switch (w->policy) {
	case KVDEX_ROUTE_RANDOM:
		return snprintf(buf, len, "random: %.0f of %.0f", v[0], v[1]);
	case KVDEX_ROUTE_ROUND_ROBIN:
		return snprintf(buf, len, "round_robin: %.0f of %.0f", v[0], v[1]);
	case KVDEX_ROUTE_LEAST_LOAD:
		return snprintf(buf, len, "least_load: %.0f queued+running", v[0]);
	case KVDEX_ROUTE_SGLANG:
		if (w->variant == SGL_IMBALANCE) {
			return snprintf(buf, len, "sglang: imbalance %.0f-%.0f, shortest queue",
					v[0], v[1]);
		}
		if (w->variant == SGL_MATCH) {
			return snprintf(buf, len, "sglang: match %.0f/%.0f tokens > %.2f", v[0],
					v[1], v[2]);
		}
		return snprintf(
			buf, len,
			"sglang: match %.0f/%.0f tokens <= %.2f, smallest tree (%.0f blocks)", v[0],
			v[1], v[2], v[3]);
	case KVDEX_ROUTE_DYNAMO:
		return snprintf(buf, len, "dynamo: cost %.2f blocks (credit %.2f, decode %.0f)",
				v[0], v[1], v[2]);
	case KVDEX_ROUTE_LLMD:
		return snprintf(buf, len, "llmd: score %.3f (prefix %.1f weighted blocks)", v[0],
				v[1]);
	case KVDEX_ROUTE_LBGR:
		return snprintf(buf, len, "lbgr: pred %.1f (uncached %.0f, load %.0f, theta %.1f)",
				v[0], v[1], v[2], v[3]);
	case KVDEX_ROUTE_KVDEX:
		return snprintf(buf, len,
				"kvdex: ttft %.2f ms = queue %.2f + prefill %.2f + fetch %.2f + "
				"spec %.2f + penalty %.1f - affinity %.2f; %.0f outside the bound",
				v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
	default:
		return snprintf(buf, len, "policy %u", w->policy);
	}
}

/* ---- random, round robin, least load ------------------------------------------ */

static void
pol_random(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	   size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	(void)q;
	v->best = (size_t)kvdex_route_rng_below(r, n);
	v->higher_better = true;
	for (size_t i = 0; i < n; i++) {
		c[i].score = i == v->best ? 1.0 : 0.0;
	}
	why_set(why, 0, (double)v->best, (double)n);
}

static void
pol_round_robin(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
		size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	(void)q;
	v->best = (size_t)(r->rr++ % n);
	v->higher_better = false;
	for (size_t i = 0; i < n; i++) {
		c[i].score = (double)((i + n - v->best) % n); /* turns until its go */
	}
	why_set(why, 0, (double)v->best, (double)n);
}

static void
pol_least_load(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	       size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	(void)r;
	(void)q;
	v->higher_better = false;
	for (size_t i = 0; i < n; i++) {
		c[i].score = (double)c[i].load.queued + c[i].load.running;
		if (c[i].score < c[v->best].score ||
		    (c[i].score == c[v->best].score &&
		     c[i].load.prefill_tokens < c[v->best].load.prefill_tokens)) {
			v->best = i;
		}
	}

	why_set(why, 0, c[v->best].score);
}

/* ---- SGLang 0.4.6 cache_aware ------------------------------------------------------ */

static void
pol_sglang(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	   size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	const struct kvdex_route_sglang_opts *o = &r->o.sglang;
	uint32_t mx = 0, mn = UINT32_MAX;
	size_t deep = 0;
	struct route_view view;

	for (size_t i = 0; i < n; i++) {
		uint32_t run = kvdex_route_worker(r, i)->sgl_running;

		mx = run > mx ? run : mx;
		mn = run < mn ? run : mn;
		if (c[i].matched > c[deep].matched) {
			deep = i; /* the deepest match; ties: the first candidate */
		}
	}
	if (mx - mn > o->balance_abs && (double)mx > (double)mn * o->balance_rel) {
		/* Imbalanced: the shortest running queue, cache ignored. */
		v->higher_better = false;
		for (size_t i = 0; i < n; i++) {
			c[i].score = kvdex_route_worker(r, i)->sgl_running;
			v->best = c[i].score < c[v->best].score ? i : v->best;
		}
		why_set(why, SGL_IMBALANCE, (double)mx, (double)mn);
		return;
	}
	kvdex_route_view(q, &c[deep], &view);
	if (view.tokens > 0 && (double)view.matched_tokens / view.tokens > o->cache_threshold) {
		v->higher_better = true;
		for (size_t i = 0; i < n; i++) {
			c[i].score = c[i].matched;
		}
		v->best = deep;
		why_set(why, SGL_MATCH, (double)view.matched_tokens, (double)view.tokens,
			o->cache_threshold);
		return;
	}
	/* Low match: the tenant with the smallest tree. */
	v->higher_better = false;
	for (size_t i = 0; i < n; i++) {
		c[i].score = (double)kvdex_route_worker(r, i)->sgl_tree_blocks;
		v->best = c[i].score < c[v->best].score ? i : v->best;
	}
	why_set(why, SGL_SMALLEST_TREE, (double)view.matched_tokens, (double)view.tokens,
		o->cache_threshold, c[v->best].score);
}

/* ---- Dynamo ----------------------------------------------------------------------------- */

static double
dyn_credit(const struct kvdex_route_dynamo_opts *o, const struct kvdex_route_cand *c)
{
	return o->overlap_credit * c->tier_blocks[KVDEX_GPU] +
	       o->host_weight * c->tier_blocks[KVDEX_HOST] +
	       o->disk_weight * c->tier_blocks[KVDEX_DISK] +
	       o->remote_weight * c->tier_blocks[KVDEX_REMOTE];
}

/* Softmax over min-max normalised costs (lower cost, higher weight). */
static size_t
dyn_softmax(struct kvdex_router *r, const struct kvdex_route_cand *c, size_t n, double mn,
	    double mx, double temp)
{
	double sum = 0.0, u, acc = 0.0;

	for (size_t i = 0; i < n; i++) {
		sum += mx > mn ? exp(-(c[i].score - mn) / (mx - mn) / temp) : 1.0;
	}
	u = kvdex_route_rng_unit(r) * sum;
	for (size_t i = 0; i < n; i++) {
		acc += mx > mn ? exp(-(c[i].score - mn) / (mx - mn) / temp) : 1.0;
		if (u < acc) {
			return i;
		}
	}
	return n - 1;
}

static void
pol_dynamo(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	   size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	const struct kvdex_route_dynamo_opts *o = &r->o.dynamo;
	double mn = INFINITY, mx = -INFINITY, prompt;
	struct route_view view;
	size_t ties = 0;

	kvdex_route_view(q, &c[0], &view);
	prompt = (double)view.tokens / q->block_size;
	v->higher_better = false;
	for (size_t i = 0; i < n; i++) {
		const struct route_worker *w = kvdex_route_worker(r, i);
		double adj = w->dyn_prefill + prompt - dyn_credit(o, &c[i]);

		c[i].score =
			o->prefill_scale * (adj > 0.0 ? adj : 0.0) + w->dyn_decode + q->nblocks;
		mx = c[i].score > mx ? c[i].score : mx;
		mn = c[i].score < mn ? c[i].score : mn;
	}
	if (o->temperature > 0.0) {
		v->best = dyn_softmax(r, c, n, mn, mx, o->temperature);
	} else {
		/* argmin; ties broken uniformly at random, as Dynamo does */
		for (size_t i = 0; i < n; i++) {
			if (c[i].score == mn && kvdex_route_rng_below(r, ++ties) == 0) {
				v->best = i;
			}
		}
	}
	why_set(why, 0, c[v->best].score, dyn_credit(o, &c[v->best]),
		kvdex_route_worker(r, v->best)->dyn_decode + q->nblocks);
}

/* ---- llm-d -------------------------------------------------------------------------------- */

static double
llmd_prefix(const struct kvdex_route_llmd_opts *o, const struct kvdex_route_cand *c)
{
	double s = 0.0;

	/* Per consecutive block from 0, the weight of the best tier holding
	 * it: exactly tier_blocks weighted, since tiers are fastest-first. */
	for (unsigned t = 0; t < KVDEX_NTIERS; t++) {
		s += o->tier_weight[t] * c->tier_blocks[t];
	}
	return s;
}

static void
pol_llmd(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	 size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	const struct kvdex_route_llmd_opts *o = &r->o.llmd;
	double pmin = INFINITY, pmax = 0.0, best = -INFINITY;
	uint32_t qmin = UINT32_MAX, qmax = 0;
	size_t ties = 0;

	(void)q;
	for (size_t i = 0; i < n; i++) {
		double p = llmd_prefix(o, &c[i]);

		if (p > 0.0) { /* only indexed pods take part in the min-max */
			pmin = p < pmin ? p : pmin;
			pmax = p > pmax ? p : pmax;
		}
		qmin = c[i].load.queued < qmin ? c[i].load.queued : qmin;
		qmax = c[i].load.queued > qmax ? c[i].load.queued : qmax;
	}
	for (size_t i = 0; i < n; i++) {
		double p = llmd_prefix(o, &c[i]);
		double ps = p <= 0.0 ? 0.0 : pmax == pmin ? 1.0 : (p - pmin) / (pmax - pmin);
		double qs = qmax == qmin ? 1.0 : (double)(qmax - c[i].load.queued) / (qmax - qmin);
		double ks = 1.0 - (c[i].load.kv_util_permille > 1000 ? 1000
								     : c[i].load.kv_util_permille) /
					  1000.0;

		c[i].score = o->prefix_weight * ps + o->kv_weight * ks + o->queue_weight * qs;
		best = c[i].score > best ? c[i].score : best;
	}
	v->higher_better = true;
	for (size_t i = 0; i < n; i++) {
		/* max-score picker: ties uniformly at random */
		if (c[i].score == best && kvdex_route_rng_below(r, ++ties) == 0) {
			v->best = i;
		}
	}
	why_set(why, 0, best, llmd_prefix(o, &c[v->best]));
}

/* ---- LBGR ------------------------------------------------------------------------------------ */

uint64_t
kvdex_route_lbgr_load(const struct kvdex_router *r, struct route_worker *w, uint64_t now_ms)
{
	const struct kvdex_route_lbgr_opts *o = &r->o.lbgr;
	uint64_t tick = now_ms / o->decay_interval_ms;

	/* The reference decays every slot by num/den (integer) every
	 * interval; doing the same steps lazily gives the same integers. */
	if (tick > w->lbgr_tick) {
		uint64_t steps = tick - w->lbgr_tick;

		for (uint64_t s = 0; s < steps && w->lbgr_load != 0; s++) {
			if (s >= 4096) {
				w->lbgr_load = 0;
				break;
			}
			w->lbgr_load = w->lbgr_load * o->decay_num / o->decay_den;
		}
	}
	if (tick > w->lbgr_tick || w->lbgr_load == 0) {
		w->lbgr_tick = tick;
	}
	return w->lbgr_load;
}

static double
lbgr_base(const struct kvdex_router *r, const struct kvdex_route_req *q,
	  const struct kvdex_route_cand *c)
{
	struct route_view view;
	double b;

	kvdex_route_view(q, c, &view);
	b = view.uncached * r->o.lbgr.units_per_token;
	return b > 1.0 ? b : 1.0;
}

static void
pol_lbgr(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	 size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	const struct kvdex_route_lbgr_opts *o = &r->o.lbgr;

	v->higher_better = false;
	for (size_t i = 0; i < n; i++) {
		struct route_worker *w = kvdex_route_worker(r, i);
		double cur = (double)kvdex_route_lbgr_load(r, w, q->now_ms);
		double pred = lbgr_base(r, q, &c[i]) + o->alpha_queue * cur + w->lbgr_theta;

		c[i].score = pred > 1.0 ? pred : 1.0;
		/* Must beat the best so far by more than the margin. */
		if (i > 0 && c[i].score + o->margin < c[v->best].score) {
			v->best = i;
		}
	}
	why_set(why, 0, c[v->best].score, lbgr_base(r, q, &c[v->best]),
		(double)kvdex_route_worker(r, v->best)->lbgr_load,
		kvdex_route_worker(r, v->best)->lbgr_theta);
}

/* ---- kvdex --------------------------------------------------------------------------------------
 */

/* Tokens assigned to w recently that its load row (age_ms old) cannot
 * include yet. */
static uint64_t
kvdex_recent_tokens(const struct route_worker *w, uint32_t age_ms, uint64_t now_ms)
{
	uint64_t horizon = age_ms < ROUTE_RECENT_MAX_MS ? age_ms : ROUTE_RECENT_MAX_MS;
	uint64_t sum = 0;

	for (unsigned k = 0; k < ROUTE_RECENT; k++) {
		const struct route_recent *a = &w->recent[k];

		if (a->tokens != 0 && a->at_ms + horizon >= now_ms) {
			sum += a->tokens;
		}
	}
	return sum;
}

struct kvdex_ttft {
	double queue, prefill, fetch, spec, penalty, affinity, total;
};

/*
 * kvdex's estimate of time to first token on candidate c, in ms:
 *   queue    (prefill tokens in flight + our assignments since the row) at the
 *            prefill rate, + per queued and per running request costs;
 *   prefill  uncached tokens at the prefill rate;
 *   fetch    per tier, blocks held there (not speculatively) x block tokens x
 *            the tier's fetch cost;
 *   spec     speculative blocks cost spec_miss_frac of a miss;
 *   penalty  a stale or missing load row; KV utilisation above kv_high;
 *   affinity minus a little per really held block (keeps ties sticky).
 */
static void
kvdex_ttft(const struct kvdex_router *r, const struct kvdex_route_req *q,
	   const struct kvdex_route_cand *c, const struct route_worker *w, double miss_weight,
	   struct kvdex_ttft *t)
{
	const struct kvdex_route_kvdex_opts *o = &r->o.kvdex;
	uint32_t real[KVDEX_NTIERS], spec = c->spec_blocks, held = 0;
	struct route_view view;
	double pr = o->prefill_ms_per_token;

	kvdex_route_view(q, c, &view);
	memcpy(real, c->tier_blocks, sizeof(real));
	for (unsigned k = 0; k < KVDEX_NTIERS && spec > 0; k++) {
		/* Speculative blocks sit in spec_tier first (we publish there). */
		unsigned tier = (r->o.spec_tier + k) % KVDEX_NTIERS;
		uint32_t take = real[tier] < spec ? real[tier] : spec;

		real[tier] -= take;
		spec -= take;
	}
	memset(t, 0, sizeof(*t));
	for (unsigned k = 0; k < KVDEX_NTIERS; k++) {
		t->fetch += (double)real[k] * q->block_size * o->fetch_ms_per_token[k];
		held += real[k];
	}
	t->queue = (double)(c->load.prefill_tokens +
			    kvdex_recent_tokens(w, c->load_age_ms, q->now_ms)) *
			   pr +
		   o->queued_req_ms * c->load.queued + o->running_req_ms * c->load.running;
	t->prefill = view.uncached * pr * miss_weight;
	t->spec = (double)(c->spec_blocks - spec) * q->block_size * o->spec_miss_frac * pr;
	if (c->load_age_ms == KVDEX_LOAD_AGE_NEVER || c->load_age_ms > o->stale_ms) {
		t->penalty += o->stale_penalty_ms;
	}
	if (c->load.kv_util_permille > o->kv_high_permille) {
		uint32_t u = c->load.kv_util_permille > 1000 ? 1000 : c->load.kv_util_permille;

		t->penalty += o->kv_full_penalty_ms * (u - o->kv_high_permille) /
			      (1000.0 - o->kv_high_permille);
	}
	t->affinity = o->affinity_ms_per_block * held;
	t->total = t->queue + t->prefill + t->fetch + t->spec + t->penalty - t->affinity;
}

/*
 * The weight of a miss, scaled by how busy the candidates are: a miss costs
 * future capacity only when capacity is short. With every candidate idle a
 * miss costs just its own prefill (1); with every candidate busy (something
 * queued or running) the full miss_weight.
 */
static double
kvdex_miss_weight(const struct kvdex_router *r, const struct kvdex_route_cand *c, size_t n)
{
	size_t busy = 0;

	for (size_t i = 0; i < n; i++) {
		busy += c[i].load.queued + c[i].load.running > 0;
	}
	return 1.0 + (r->o.kvdex.miss_weight - 1.0) * (n ? (double)busy / (double)n : 1.0);
}

/* Below this share of candidates with nothing queued the fleet counts as
 * saturated and there is no latency bound; a candidate outside the bound
 * gets KVDEX_OUTSIDE_BOUND_MS added to its score. */
#define KVDEX_BOUND_MIN_IDLE 0.02
#define KVDEX_OUTSIDE_BOUND_MS 1e9

/*
 * The latency bound (route.h, docs/ROUTING.md): how far above the best
 * candidate's own TTFT estimate (miss weight 1) a candidate may be and still
 * compete on the weighted estimate. The miss weight trades this request's
 * latency for later requests' hits; that pays while capacity is short and only
 * adds tail latency while it is not, so the bound is divided by the share of
 * candidates with nothing queued: it is tight in an idle fleet and gone in a
 * saturated one. < 0: no bound.
 */
static double
kvdex_bound(const struct kvdex_router *r, const struct kvdex_route_cand *c, size_t n,
	    double best_own)
{
	const struct kvdex_route_kvdex_opts *o = &r->o.kvdex;
	size_t queued = 0;
	double idle_share;

	if (o->bound_ms < 0.0) {
		return -1.0;
	}
	for (size_t i = 0; i < n; i++) {
		queued += c[i].load.queued > 0;
	}
	idle_share = 1.0 - (double)queued / (double)n;
	if (idle_share < KVDEX_BOUND_MIN_IDLE) {
		return -1.0;
	}
	return (o->bound_rel * best_own + o->bound_ms) / idle_share;
}

/* The TTFT estimate at miss weight 1 (the request's own latency) of an
 * estimate made at miss weight mw. */
static double
kvdex_own(const struct kvdex_ttft *t, double mw)
{
	return t->total - t->prefill + t->prefill / mw;
}

static void
pol_kvdex(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
	  size_t n, struct route_verdict *v, struct kvdex_route_why *why)
{
	struct kvdex_ttft t, bt = {0};
	double mw = kvdex_miss_weight(r, c, n);
	double best_own = 0.0, bound, *own = r->scratch_own;
	size_t outside = 0;

	for (size_t i = 0; i < n; i++) {
		kvdex_ttft(r, q, &c[i], kvdex_route_worker(r, i), mw, &t);
		c[i].score = t.total;
		own[i] = kvdex_own(&t, mw);
		best_own = i == 0 || own[i] < best_own ? own[i] : best_own;
	}
	bound = kvdex_bound(r, c, n, best_own);
	v->higher_better = false;
	for (size_t i = 0; i < n; i++) {
		if (bound >= 0.0 && own[i] > best_own + bound) {
			c[i].score += KVDEX_OUTSIDE_BOUND_MS;
			outside++;
		}
		if (i == 0 || c[i].score < c[v->best].score ||
		    (c[i].score == c[v->best].score &&
		     c[i].tier_blocks[KVDEX_GPU] > c[v->best].tier_blocks[KVDEX_GPU])) {
			v->best = i;
		}
	}
	kvdex_ttft(r, q, &c[v->best], kvdex_route_worker(r, v->best), mw, &bt);
	why_set(why, 0, bt.total, bt.queue, bt.prefill, bt.fetch, bt.spec, bt.penalty, bt.affinity,
		(double)outside);
}

const route_policy_fn kvdex_route_policies[KVDEX_ROUTE_NPOLICIES] = {
	[KVDEX_ROUTE_RANDOM] = pol_random,
	[KVDEX_ROUTE_ROUND_ROBIN] = pol_round_robin,
	[KVDEX_ROUTE_LEAST_LOAD] = pol_least_load,
	[KVDEX_ROUTE_SGLANG] = pol_sglang,
	[KVDEX_ROUTE_DYNAMO] = pol_dynamo,
	[KVDEX_ROUTE_LLMD] = pol_llmd,
	[KVDEX_ROUTE_LBGR] = pol_lbgr,
	[KVDEX_ROUTE_KVDEX] = pol_kvdex,
};

/* ---- Commit and release -------------------------------------------------------------------------
 */

void
kvdex_route_commit(struct kvdex_router *r, const struct kvdex_route_req *q,
		   const struct kvdex_route_cand *chosen, struct route_worker *w,
		   struct route_ticket *t)
{
	struct route_view view;
	struct route_recent *a;

	kvdex_route_view(q, chosen, &view);
	/* SGLang: running_queue[w] += 1; the tree gains the unmatched suffix. */
	w->sgl_running++;
	w->sgl_tree_blocks += q->nblocks > chosen->matched ? q->nblocks - chosen->matched : 0;
	/* LBGR: load_slot[best] += round(base), remembered for the release. */
	if (r->o.policy == KVDEX_ROUTE_LBGR) {
		t->lbgr_base = lbgr_base(r, q, chosen);
		t->lbgr_cur = (double)kvdex_route_lbgr_load(r, w, q->now_ms);
		t->lbgr_inc = (uint64_t)llround(t->lbgr_base);
		w->lbgr_load += t->lbgr_inc;
	}
	/* Dynamo: the request's uncached prompt blocks and its active blocks. */
	t->dyn_prefill = (double)view.uncached / q->block_size;
	t->dyn_decode = q->nblocks;
	w->dyn_prefill += t->dyn_prefill;
	w->dyn_decode += t->dyn_decode;
	/* kvdex: the tokens this worker must prefill, until its row shows them. */
	t->recent_pos = w->recent_pos;
	a = &w->recent[w->recent_pos++ % ROUTE_RECENT];
	a->at_ms = q->now_ms;
	a->tokens = view.uncached;
}

/* LBGR's online regression on the residual, bias feature only (lib.rs). */
static void
lbgr_learn(const struct kvdex_router *r, struct route_worker *w, const struct route_ticket *t,
	   double latency_ms)
{
	double y = latency_ms - (t->lbgr_base + r->o.lbgr.alpha_queue * t->lbgr_cur);
	double k;

	y = y > 1.0 ? y : 1.0;
	k = w->lbgr_p / (r->o.lbgr.rls_lambda + w->lbgr_p);
	w->lbgr_theta += k * (y - w->lbgr_theta);
	w->lbgr_p = (w->lbgr_p - k * w->lbgr_p) / r->o.lbgr.rls_lambda;
}

void
kvdex_route_release(struct kvdex_router *r, struct route_ticket *t, double latency_ms,
		    uint64_t now_ms)
{
	struct route_worker *w = &r->w[t->widx];
	const struct kvdex_route_lbgr_opts *o = &r->o.lbgr;

	struct route_recent *a = &w->recent[t->recent_pos % ROUTE_RECENT];

	if (w->sgl_running > 0) {
		w->sgl_running--;
	}
	if (a->at_ms == t->at_ms && w->recent_pos - t->recent_pos <= ROUTE_RECENT) {
		a->tokens = 0; /* done: its prefill is no longer ahead of anyone */
	}
	w->dyn_prefill = w->dyn_prefill > t->dyn_prefill ? w->dyn_prefill - t->dyn_prefill : 0.0;
	w->dyn_decode = w->dyn_decode > t->dyn_decode ? w->dyn_decode - t->dyn_decode : 0.0;
	if (t->lbgr_inc != 0) {
		/* What is left of the reservation after its own decay. */
		uint64_t steps = now_ms > t->at_ms ? (now_ms - t->at_ms) / o->decay_interval_ms : 0;
		double f = pow((double)o->decay_num / o->decay_den, (double)steps);
		uint64_t rem = (uint64_t)llround((double)t->lbgr_inc * f);
		uint64_t cur = kvdex_route_lbgr_load(r, w, now_ms);

		w->lbgr_load = cur > rem ? cur - rem : 0;
		if (latency_ms >= 0.0) {
			lbgr_learn(r, w, t, latency_ms);
		}
	}
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cache manager under randomized workloads (client/src/cache_workload.c):
 * invariants after every call, the event stream replayed into an independent
 * model, reproducibility under a seed, and the RLT victim choice (uniform
 * among unmarked unlocked leaves, marked blocks spared).
 *
 * Everything is deterministic: fixed seeds, no clocks.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "cache_helpers.h"
#include "client/src/cache_workload.h"

TestSuite(cache_random, .timeout = 30);

struct step_ctx {
	struct model *mo;
	uint64_t cap;
	uint64_t explicit_evicted;
	int fail;
};

/* After every request: capacity, model size, and now and then an explicit
 * eviction and a full comparison with the model. */
static int
step(void *arg, struct kvdex_cache *c, uint64_t i)
{
	struct step_ctx *s = arg;
	struct kvdex_cache_stats st = cstats(c);
	uint64_t ev = 0;

	if (st.size > s->cap || (s->mo && s->mo->n > s->cap)) {
		s->fail = 1;
		return -ERANGE;
	}
	if (i % 37 == 36) {
		int rc = kvdex_cache_evict(c, 5, &ev);

		if (rc) {
			return rc;
		}
		s->explicit_evicted += ev;
	}
	if (s->mo && i % 50 == 0 && model_compare(s->mo, c) != 0) {
		s->fail = 2;
		return -EUCLEAN;
	}
	return 0;
}

static struct kvdex_cache_workload
workload(uint64_t seed, uint64_t requests, uint32_t inflight)
{
	return (struct kvdex_cache_workload){
		.seed = seed,
		.requests = requests,
		.groups = 6,
		.questions = 10,
		.prefix_blocks = 8,
		.suffix_min = 2,
		.suffix_max = 12,
		.inflight = inflight,
	};
}

struct cfg {
	enum kvdex_cache_policy pol;
	enum kvdex_cache_evict_mode mode;
	uint32_t inflight;
	uint32_t flags;
};

static void
run_invariants(const struct cfg *cf)
{
	struct rec r = {0};
	struct model mo;
	struct kvdex_cache_opts o;
	struct kvdex_cache *c;
	struct step_ctx s = {.cap = 150};
	struct kvdex_cache_workload w = workload(11, 1500, cf->inflight);
	struct kvdex_cache_workload_result res;
	struct kvdex_cache_stats st;

	model_init(&mo, 1024);
	r.model = &mo;
	s.mo = &mo;
	kvdex_cache_opts_init(&o, sizeof(o));
	o.capacity_blocks = s.cap;
	o.policy = cf->pol;
	o.evict_mode = cf->mode;
	o.flags = cf->flags;
	o.seed = 99;
	o.publish = rec_publish;
	o.publish_arg = &r;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), 0));
	r.cache = c; /* validate + compare with the model at every publish */
	w.step = step;
	w.step_arg = &s;
	cr_assert(eq(i32, kvdex_cache_workload_run(c, &w, &res), 0), "step fail %d", s.fail);
	cr_assert(eq(str, mo.err, ""));
	cr_assert(eq(i32, r.check_rc, 0));
	cr_assert(eq(i32, model_compare(&mo, c), 0));
	st = cstats(c);
	cr_assert(eq(u64, st.locked, 0));
	cr_assert(gt(u64, st.evicted, 500)); /* the workload does stress the cache */
	cr_assert(gt(u64, res.hit_blocks, 0));
	cr_assert(eq(u64, st.evicted, res.evicted + s.explicit_evicted));
	cr_assert(eq(u64, st.inserted - st.evicted, st.size));
	if (cf->pol == KVDEX_CACHE_RLT) {
		cr_assert(gt(u64, st.phase, 5));
	}
	kvdex_cache_destroy(c);
	model_fini(&mo);
	rec_fini(&r);
}

/* 1. Random workloads, every policy x mode x (locks or not): after every
 *    call the cache validates and equals the replay of its events; every
 *    REMOVED names a block with no cached child (prefix closure at each
 *    eviction); the size never exceeds the capacity. */
Test(cache_random, invariants)
{
	static const struct cfg cfgs[] = {
		{KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 0, 0},
		{KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 4, 0},
		{KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_FULL_ALLOCATION, 4, 0},
		{KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 3, KVDEX_CACHE_F_MARK_ON_MATCH},
		{KVDEX_CACHE_LEAF_LRU, KVDEX_CACHE_EVICT_SHORTFALL, 0, 0},
		{KVDEX_CACHE_LEAF_LRU, KVDEX_CACHE_EVICT_SHORTFALL, 4, 0},
		{KVDEX_CACHE_LEAF_LRU, KVDEX_CACHE_EVICT_FULL_ALLOCATION, 4, 0},
	};

	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
		run_invariants(&cfgs[i]);
	}
}

/* Run the workload on a fresh cache and return its event stream. */
static struct rec
stream(enum kvdex_cache_policy pol, uint64_t cache_seed)
{
	struct rec r = {0};
	struct kvdex_cache *c = cache_new(120, pol, KVDEX_CACHE_EVICT_SHORTFALL, cache_seed, &r);
	struct kvdex_cache_workload w = workload(5, 600, 2);

	r.cache = NULL; /* no validation needed here */
	cr_assert(eq(i32, kvdex_cache_workload_run(c, &w, NULL), 0));
	kvdex_cache_destroy(c);
	return r;
}

static bool
same_stream(const struct rec *a, const struct rec *b)
{
	return a->n == b->n && memcmp(a->ev, b->ev, a->n * sizeof(*a->ev)) == 0;
}

/* 2. Same seed, same eviction sequence; another seed, another one (RLT).
 *    LEAF_LRU uses no randomness: the seed changes nothing. */
Test(cache_random, reproducible)
{
	struct rec a = stream(KVDEX_CACHE_RLT, 42), b = stream(KVDEX_CACHE_RLT, 42);
	struct rec d = stream(KVDEX_CACHE_RLT, 43);
	struct rec l1 = stream(KVDEX_CACHE_LEAF_LRU, 42), l2 = stream(KVDEX_CACHE_LEAF_LRU, 43);

	cr_assert(gt(sz, a.n, 1000));
	cr_assert(same_stream(&a, &b));
	cr_assert(not(same_stream(&a, &d)));
	cr_assert(same_stream(&l1, &l2));
	cr_assert(not(same_stream(&a, &l1)));
	rec_fini(&a);
	rec_fini(&b);
	rec_fini(&d);
	rec_fini(&l1);
	rec_fini(&l2);
}

/* 3. Uniformity of the RLT victim, deterministic (seeds 0..3999, one trial
 *    each). Capacity 7, chains [1,2,3] [4] [5] [6] (marked: 6 of 7). evict 1:
 *    1 + 6 >= 7 starts a new phase, so the candidates are the four leaves 3,
 *    4, 5, 6, and each should be the victim about 1000 times (sd ~27); 1 and 2
 *    (inner blocks) never: the 3-block chain is one leaf and gets 1/4 of
 *    the first victims, as a radix leaf does in the reference. */
Test(cache_random, rlt_victim_uniform)
{
	unsigned tally[7] = {0};
	const unsigned trials = 4000;

	for (unsigned t = 0; t < trials; t++) {
		struct rec r = {0};
		struct kvdex_cache *c =
			cache_new(7, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, t, &r);
		uint64_t chain[] = {1, 2, 3}, k;

		cr_assert(eq(i32, kvdex_cache_insert(c, chain, 3, 0, NULL), 0));
		for (k = 4; k <= 6; k++) {
			cr_assert(eq(i32, kvdex_cache_insert(c, &k, 1, 0, NULL), 0));
		}
		cr_assert(eq(i32, kvdex_cache_evict(c, 1, NULL), 0));
		cr_assert(eq(u32, r.ev[r.n - 1].type, KVDEX_EV_REMOVED));
		cr_assert(r.ev[r.n - 1].key <= 6);
		tally[r.ev[r.n - 1].key]++;
		kvdex_cache_destroy(c);
		rec_fini(&r);
	}
	cr_assert(eq(u32, tally[1] + tally[2], 0));
	for (int k = 3; k <= 6; k++) {
		cr_assert(ge(u32, tally[k], 850), "block %d: %u", k, tally[k]);
		cr_assert(le(u32, tally[k], 1150), "block %d: %u", k, tally[k]);
	}
}

/* 4. Marked blocks are never evicted while unmarked candidates exist:
 *    capacity 10, [1] [2] [3] [4]; evict 1 (no free block: new phase, one of
 *    1..4 goes); [5] [6] are marked now; evict 3 takes exactly the three
 *    unmarked survivors of 1..4, whatever the seed. */
Test(cache_random, rlt_spares_marked)
{
	for (uint64_t seed = 0; seed < 200; seed++) {
		struct kvdex_cache *c =
			cache_new(10, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, seed, NULL);
		uint64_t ev;

		for (uint64_t k = 1; k <= 4; k++) {
			cr_assert(eq(i32, kvdex_cache_insert(c, &k, 1, 0, NULL), 0));
		}
		cr_assert(eq(i32, kvdex_cache_evict(c, 1, &ev), 0));
		cr_assert(eq(u64, ev, 1));
		cr_assert(eq(u64, cstats(c).marked, 0));
		for (uint64_t k = 5; k <= 6; k++) {
			cr_assert(eq(i32, kvdex_cache_insert(c, &k, 1, 0, NULL), 0));
		}
		cr_assert(eq(i32, kvdex_cache_evict(c, 3, &ev), 0));
		cr_assert(eq(u64, ev, 3));
		cr_assert(cached(c, 5) && cached(c, 6));
		cr_assert(eq(u64, cstats(c).size, 2));
		cr_assert(eq(u64, cstats(c).phase, 2));
		kvdex_cache_destroy(c);
	}
}

/* 5. The workload driver itself: deterministic results, argument checks. */
Test(cache_random, workload_driver)
{
	struct kvdex_cache *c1 = cache_new(300, KVDEX_CACHE_LEAF_LRU, 0, 0, NULL);
	struct kvdex_cache *c2 = cache_new(300, KVDEX_CACHE_LEAF_LRU, 0, 0, NULL);
	struct kvdex_cache_workload w = workload(3, 400, 0);
	struct kvdex_cache_workload_result a, b;

	cr_assert(eq(i32, kvdex_cache_workload_run(c1, &w, &a), 0));
	cr_assert(eq(i32, kvdex_cache_workload_run(c2, &w, &b), 0));
	cr_assert(eq(i32, memcmp(&a, &b, sizeof(a)), 0));
	cr_assert(eq(u64, a.requests, 400));
	cr_assert(gt(u64, a.hit_blocks, a.blocks / 3)); /* shared prefixes hit */
	cr_assert(lt(u64, a.hit_blocks, a.blocks));
	w.groups = 0;
	cr_assert(eq(i32, kvdex_cache_workload_run(c1, &w, NULL), -EINVAL));
	cr_assert(ne(u64, kvdex_cache_workload_key(0, 1), kvdex_cache_workload_key(1, 1)));
	kvdex_cache_destroy(c1);
	kvdex_cache_destroy(c2);
}

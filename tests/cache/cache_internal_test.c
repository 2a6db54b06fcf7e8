/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cache manager internals: this file #includes client/src/cache_mgr.c (only
 * tests do) to see every victim before it goes (KVDEX_CACHE_EVICT_HOOK) and to
 * force the RLT epoch counter to wrap.
 *
 * At each victim, by brute force over all nodes:
 *   RLT       the victim is an unmarked, unlocked leaf, and the candidate
 *             region holds exactly the unmarked unlocked leaves (so marked
 *             blocks are spared while any unmarked candidate exists);
 *   LEAF_LRU  the victim is an unlocked leaf with the oldest access time.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>

struct kvdex_cache;
static void victim_hook(struct kvdex_cache *c, uint32_t idx);
#define KVDEX_CACHE_EVICT_HOOK(c, idx) victim_hook((c), (idx))

#include "client/src/cache_mgr.c"

#include "cache_helpers.h"
#include "client/src/cache_workload.h"

TestSuite(cache_internal, .timeout = 30);

static unsigned long hook_calls;
static unsigned long hook_failures;

static bool
live(const struct cache_node *n)
{
	return n->parent != CACHE_FREE;
}

static void
victim_hook(struct kvdex_cache *c, uint32_t idx)
{
	const struct cache_node *v = &c->nodes[idx];
	uint32_t unmarked_free_leaves = 0;

	hook_calls++;
	if (!live(v) || v->nchildren || v->lock_ref) {
		hook_failures++;
		return;
	}
	for (uint32_t i = 0; i < c->used; i++) {
		const struct cache_node *n = &c->nodes[i];

		if (!live(n) || n->nchildren || n->lock_ref) {
			continue;
		}
		if (c->rlt) {
			unmarked_free_leaves += !cache_marked(c, n);
		} else if (n->atime < v->atime) {
			hook_failures++;
		}
	}
	if (c->rlt &&
	    (cache_marked(c, v) || v->pos >= c->ncand || unmarked_free_leaves != c->ncand)) {
		hook_failures++;
	}
}

static void
run(enum kvdex_cache_policy pol, enum kvdex_cache_evict_mode mode, uint32_t inflight)
{
	struct kvdex_cache *c = cache_new(100, pol, mode, 7, NULL);
	struct kvdex_cache_workload w = {
		.seed = 21,
		.requests = 800,
		.groups = 5,
		.questions = 8,
		.prefix_blocks = 6,
		.suffix_min = 1,
		.suffix_max = 10,
		.inflight = inflight,
	};

	cr_assert(eq(i32, kvdex_cache_workload_run(c, &w, NULL), 0));
	cr_assert(eq(i32, kvdex_cache_validate(c), 0));
	kvdex_cache_destroy(c);
}

/* 1. Every victim of every policy, mode and lock load passes the hook. */
Test(cache_internal, victims)
{
	hook_calls = hook_failures = 0;
	for (int pol = 0; pol < 2; pol++) {
		for (int mode = 0; mode < 2; mode++) {
			run(pol, mode, 0);
			run(pol, mode, 5);
		}
	}
	cr_assert(gt(u64, hook_calls, 2000));
	cr_assert(eq(u64, hook_failures, 0));
}

static int
validate_step(void *arg, struct kvdex_cache *c, uint64_t i)
{
	return kvdex_cache_validate(c);
}

/* 2. The epoch wraps (once per 2^32 phases): marks stay exact across it. */
Test(cache_internal, epoch_wrap)
{
	struct kvdex_cache *c =
		cache_new(40, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 1, NULL);
	struct kvdex_cache_workload w = {
		.seed = 4,
		.requests = 300,
		.groups = 4,
		.questions = 8,
		.prefix_blocks = 4,
		.suffix_min = 1,
		.suffix_max = 6,
		.inflight = 2,
		.step = validate_step,
	};
	uint64_t phases;

	c->epoch = UINT32_MAX - 3;
	cr_assert(eq(i32, kvdex_cache_workload_run(c, &w, NULL), 0));
	phases = cstats(c).phase - 1;
	cr_assert(gt(u64, phases, 10));
	cr_assert(eq(u32, c->epoch, (uint32_t)(UINT32_MAX - 3 + phases + 1)));
	cr_assert(eq(i32, kvdex_cache_validate(c), 0));
	kvdex_cache_destroy(c);
}

/* 3. The bounded draw covers [0, bound) and stays in it. */
Test(cache_internal, rand_below)
{
	struct kvdex_cache *c = cache_new(4, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 9, NULL);
	unsigned seen[5] = {0};

	for (int i = 0; i < 5000; i++) {
		uint32_t x = cache_rand_below(c, 5);

		cr_assert(lt(u32, x, 5));
		seen[x]++;
	}
	for (int i = 0; i < 5; i++) {
		cr_assert(gt(u32, seen[i], 850));
	}
	cr_assert(eq(u32, cache_rand_below(c, 1), 0));
	kvdex_cache_destroy(c);
}

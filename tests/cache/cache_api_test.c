/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cache manager (kvdex/cache.h) on small hand-worked cases: options, RLT
 * marking and phases, locks, leaf-LRU order, evict modes, the published event
 * stream, conflicts, clear/resync, publish failures and reentrancy.
 *
 * Every recorder validates the cache (kvdex_cache_validate) at each publish;
 * tests assert rec.check_rc == 0 at the end.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "cache_helpers.h"

TestSuite(cache_api, .timeout = 10);

#define K(...) ((const uint64_t[]){__VA_ARGS__})
#define NK(...) (sizeof((const uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t))
#define INSERT(c, res, ...) kvdex_cache_insert((c), K(__VA_ARGS__), NK(__VA_ARGS__), 0, (res))
#define INSERT_LOCK(c, res, ...)                                                                   \
	kvdex_cache_insert((c), K(__VA_ARGS__), NK(__VA_ARGS__), KVDEX_CACHE_LOCK, (res))

/* Index of the one key of `keys` that is no longer cached; -1 if none or several. */
static int
gone_one(const struct kvdex_cache *c, const uint64_t *keys, size_t n)
{
	int at = -1;

	for (size_t i = 0; i < n; i++) {
		if (gone(c, keys[i])) {
			if (at >= 0) {
				return -1;
			}
			at = (int)i;
		}
	}
	return at;
}

/* 1. Options: defaults, every rejected field, a short opts_size. */
Test(cache_api, create_options)
{
	struct kvdex_cache_opts o;
	struct kvdex_cache *c = NULL;

	kvdex_cache_opts_init(&o, sizeof(o));
	cr_assert(eq(sz, o.opts_size, sizeof(o)));
	cr_assert(eq(i32, o.policy, KVDEX_CACHE_RLT));
	cr_assert(eq(i32, o.evict_mode, KVDEX_CACHE_EVICT_SHORTFALL));
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), -EINVAL)); /* capacity 0 */
	cr_assert(eq(i32, kvdex_cache_create(NULL, &c), -EINVAL));
	o.capacity_blocks = (1ull << 31) + 1;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), -EINVAL));
	o.capacity_blocks = 8;
	o.policy = 9;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), -EINVAL));
	o.policy = KVDEX_CACHE_LEAF_LRU;
	o.evict_mode = 9;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), -EINVAL));
	o.evict_mode = KVDEX_CACHE_EVICT_FULL_ALLOCATION;
	o.tier = KVDEX_NTIERS;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), -EINVAL));
	o.tier = KVDEX_DISK;
	o.flags = 0x80;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), -EINVAL));
	o.flags = 0;
	cr_assert(eq(i32, kvdex_cache_create(&o, NULL), -EINVAL));
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), 0));
	cr_assert(eq(u64, cstats(c).capacity, 8));
	kvdex_cache_destroy(c);

	/* A caller that knows only the first three fields gets defaults. */
	memset(&o, 0xee, sizeof(o));
	o.opts_size = offsetof(struct kvdex_cache_opts, evict_mode);
	o.capacity_blocks = 4;
	o.policy = KVDEX_CACHE_RLT;
	cr_assert(eq(i32, kvdex_cache_create(&o, &c), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 1, 2), 0)); /* no callback: events counted */
	cr_assert(eq(u64, cstats(c).events, 2));
	kvdex_cache_destroy(c);
	kvdex_cache_destroy(NULL);
}

/* 2. RLT marking and phases, capacity 4 (SHORTFALL). Expected, step by step:
 *   a. insert [1,2]   store 1, 2; marked {1,2}                          phase 1
 *   b. insert [1,3]   1 matched (already marked), store 3; marked {1,2,3}
 *   c. insert [4]     store 4: marks reach 4 = capacity -> new phase keeping
 *                     4's path: marked {4}                               phase 2
 *                     leaves 2, 3, 4; candidates (unmarked leaves) {2, 3}
 *   d. insert [5]     full: evict 1 (1 + 1 marked < 4, 3 free blocks): a
 *                     random one of {2, 3}; 1 (inner) and 4 (marked) stay
 *   e. insert [6]     evict the other of {2, 3} (3 < 4, 2 free); 1 is now an
 *                     unmarked leaf: a candidate; marked {4,5,6}
 *   f. insert [7]     1 + 3 marked = 4 >= 4: new phase, nothing kept   phase 3
 *                     victim: random one of {1, 4, 5, 6}; marked {7}
 */
Test(cache_api, rlt_phases_capacity4)
{
	struct rec r = {0};
	struct kvdex_cache *c = cache_new(4, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 1, &r);
	struct kvdex_cache_result res;
	int v1, v2;

	cr_assert(ne(ptr, c, NULL));
	/* a */
	cr_assert(eq(i32, INSERT(c, &res, 1, 2), 0));
	cr_assert(eq(u64, res.inserted, 2));
	cr_assert(binfo(c, 1).marked && binfo(c, 2).marked);
	cr_assert(eq(u64, cstats(c).phase, 1));
	/* b */
	cr_assert(eq(i32, INSERT(c, &res, 1, 3), 0));
	cr_assert(eq(u64, res.matched, 1));
	cr_assert(eq(u64, res.inserted, 1));
	cr_assert(eq(u64, cstats(c).marked, 3));
	/* c */
	cr_assert(eq(i32, INSERT(c, &res, 4), 0));
	cr_assert(eq(u64, res.evicted, 0));
	cr_assert(eq(u64, cstats(c).phase, 2));
	cr_assert(eq(u64, cstats(c).phases_full, 1));
	cr_assert(eq(u64, cstats(c).marked, 1));
	cr_assert(binfo(c, 4).marked);
	cr_assert(binfo(c, 1).marked == 0 && binfo(c, 2).marked == 0 && binfo(c, 3).marked == 0);
	cr_assert(binfo(c, 2).candidate && binfo(c, 3).candidate);
	cr_assert(binfo(c, 1).candidate == 0 && binfo(c, 4).candidate == 0);
	cr_assert(eq(u64, cstats(c).candidates, 2));
	/* d */
	cr_assert(eq(i32, INSERT(c, &res, 5), 0));
	cr_assert(eq(u64, res.evicted, 1));
	v1 = gone_one(c, K(1, 2, 3, 4, 5), 5);
	cr_assert(v1 == 1 || v1 == 2, "victim must be block 2 or 3, got index %d", v1);
	cr_assert(eq(u64, cstats(c).phase, 2));
	/* e */
	cr_assert(eq(i32, INSERT(c, &res, 6), 0));
	cr_assert(eq(u64, res.evicted, 1));
	cr_assert(gone(c, 2) && gone(c, 3));
	cr_assert(cached(c, 1) && binfo(c, 1).candidate && binfo(c, 1).marked == 0);
	cr_assert(eq(u64, cstats(c).marked, 3));
	cr_assert(eq(u64, cstats(c).phase, 2));
	/* f */
	cr_assert(eq(i32, INSERT(c, &res, 7), 0));
	cr_assert(eq(u64, res.evicted, 1));
	cr_assert(eq(u64, cstats(c).phase, 3));
	cr_assert(eq(u64, cstats(c).phases_evict, 1));
	v2 = gone_one(c, K(1, 4, 5, 6), 4);
	cr_assert(v2 >= 0, "exactly one of 1, 4, 5, 6 must go");
	cr_assert(binfo(c, 7).marked);
	cr_assert(eq(u64, cstats(c).marked, 1));
	cr_assert(eq(u64, cstats(c).size, 4));
	cr_assert(eq(i32, r.check_rc, 0));
	kvdex_cache_destroy(c);
	rec_fini(&r);
}

/* 3. RLT with a locked path, capacity 4: every victim is forced, whatever the
 *    seed. Expected:
 *   a. insert+lock [1,2,3]  marked {1,2,3}, locked {1,2,3}
 *   b. insert [4]           marks reach 4: new phase keeping 4: marked {4}
 *   c. insert [5]           no unmarked unlocked leaf (3 locked, 4 marked):
 *                           new phase ("short"); victim 4
 *   d. insert [6]           the same: victim 5
 *   e. unlock [1,2,3]       3 becomes an unmarked unlocked leaf
 *   f. insert [7]           1 + 1 marked < 4, 3 free: victim 3 (6 is marked)
 *   g. insert [8]           victim 2 (now a leaf; 6, 7 marked)
 *   h. insert [9]           1 + 3 marked >= 4: new phase; victim one of {1,6,7,8}
 */
Test(cache_api, rlt_locked_path_forced_victims)
{
	for (uint64_t seed = 0; seed < 8; seed++) {
		struct rec r = {0};
		struct kvdex_cache *c =
			cache_new(4, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, seed, &r);
		struct kvdex_cache_result res;

		cr_assert(eq(i32, INSERT_LOCK(c, &res, 1, 2, 3), 0)); /* a */
		cr_assert(eq(u64, res.locked, 3));
		cr_assert(eq(u64, cstats(c).locked, 3));
		cr_assert(eq(i32, INSERT(c, &res, 4), 0)); /* b */
		cr_assert(eq(u64, cstats(c).phases_full, 1));
		cr_assert(eq(i32, INSERT(c, &res, 5), 0)); /* c */
		cr_assert(gone(c, 4) && cached(c, 5));
		cr_assert(eq(u64, cstats(c).phases_short, 1));
		cr_assert(eq(i32, INSERT(c, &res, 6), 0)); /* d */
		cr_assert(gone(c, 5) && cached(c, 6));
		cr_assert(eq(u64, cstats(c).phases_short, 2));
		cr_assert(eq(i32, kvdex_cache_unlock(c, K(1, 2, 3), 3), 0)); /* e */
		cr_assert(binfo(c, 3).candidate);
		cr_assert(eq(i32, INSERT(c, &res, 7), 0)); /* f */
		cr_assert(gone(c, 3) && cached(c, 2) && cached(c, 6));
		cr_assert(eq(i32, INSERT(c, &res, 8), 0)); /* g */
		cr_assert(gone(c, 2) && cached(c, 1));
		cr_assert(eq(u64, cstats(c).phase, 4));
		cr_assert(eq(i32, INSERT(c, &res, 9), 0)); /* h */
		cr_assert(eq(u64, cstats(c).phases_evict, 1));
		cr_assert(gone_one(c, K(1, 6, 7, 8), 4) >= 0);
		cr_assert(eq(i32, r.check_rc, 0));
		kvdex_cache_destroy(c);
		rec_fini(&r);
	}
}

/* 4. Locked blocks are never evicted, under both policies: a full cache of
 *    locked blocks refuses new blocks (dropped) rather than evict. */
Test(cache_api, locked_never_evicted)
{
	for (int pol = 0; pol < 2; pol++) {
		struct rec r = {0};
		struct kvdex_cache *c = cache_new(3, pol, KVDEX_CACHE_EVICT_SHORTFALL, 3, &r);
		struct kvdex_cache_result res;
		size_t m;
		uint64_t ev;

		cr_assert(eq(i32, INSERT(c, &res, 1, 2), 0));
		cr_assert(eq(i32, INSERT(c, &res, 9), 0));
		cr_assert(eq(i32, kvdex_cache_match(c, K(1, 2, 3), 3, KVDEX_CACHE_LOCK, &m), 0));
		cr_assert(eq(sz, m, 2));
		cr_assert(eq(i32, kvdex_cache_lock(c, K(9), 1, &m), 0));
		cr_assert(eq(sz, m, 1));
		cr_assert(eq(i32, INSERT(c, &res, 5, 6), 0));
		cr_assert(eq(u64, res.inserted, 0));
		cr_assert(eq(u64, res.dropped, 2));
		cr_assert(eq(u64, res.evicted, 0));
		cr_assert(eq(i32, kvdex_cache_evict(c, 3, &ev), 0));
		cr_assert(eq(u64, ev, 0));
		cr_assert(cached(c, 1) && cached(c, 2) && cached(c, 9));
		/* Unlock 9 only: it is the one victim. */
		cr_assert(eq(i32, kvdex_cache_unlock(c, K(9), 1), 0));
		cr_assert(eq(i32, INSERT(c, &res, 5), 0));
		cr_assert(eq(u64, res.evicted, 1));
		cr_assert(gone(c, 9) && cached(c, 5) && cached(c, 2));
		cr_assert(eq(u64, cstats(c).dropped, 2));
		cr_assert(eq(i32, r.check_rc, 0));
		kvdex_cache_destroy(c);
		rec_fini(&r);
	}
}

/* 5. Leaf LRU order, capacity 4. Access times are a counter per touched block:
 *   insert [1,2] (1:t1 2:t2), [3] (t3), [4] (t4); match [1,2] (1:t5 2:t6)
 *   insert [5]: leaves 2:t6 3:t3 4:t4       -> evict 3; 5:t7
 *   insert [6]: leaves 2:t6 4:t4 5:t7       -> evict 4; 6:t8
 *   insert [7]: leaves 2:t6 5:t7 6:t8       -> evict 2; 1 becomes a leaf (t5)
 *   insert [8]: leaves 1:t5 5:t7 6:t8 7:t9  -> evict 1
 */
Test(cache_api, lru_order)
{
	struct rec r = {0};
	struct kvdex_cache *c =
		cache_new(4, KVDEX_CACHE_LEAF_LRU, KVDEX_CACHE_EVICT_SHORTFALL, 0, &r);
	static const uint64_t victims[] = {3, 4, 2, 1};
	size_t m;

	cr_assert(eq(i32, INSERT(c, NULL, 1, 2), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 3), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 4), 0));
	cr_assert(eq(i32, kvdex_cache_match(c, K(1, 2), 2, 0, &m), 0));
	cr_assert(eq(u64, binfo(c, 2).atime, 6));
	for (int i = 0; i < 4; i++) {
		uint64_t key = 5 + (uint64_t)i;

		cr_assert(eq(i32, kvdex_cache_insert(c, &key, 1, 0, NULL), 0));
		cr_assert(eq(u64, r.ev[r.n - 2].key, victims[i]));
		cr_assert(eq(u32, r.ev[r.n - 2].type, KVDEX_EV_REMOVED));
		cr_assert(gone(c, victims[i]));
	}
	cr_assert(eq(i32, r.check_rc, 0));
	kvdex_cache_destroy(c);
	rec_fini(&r);
}

/* 6. LRU: a match that ends at an inner block refreshes only that block, and
 *    the block competes with its own time once its children are gone:
 *   insert [1,2] (1:t1 2:t2), [3] (t3); match [1,9] (1:t4)
 *   evict 1: 2 (t2)               1 is a leaf now, with t4
 *   evict 1: 3 (t3) before 1 (t4)
 *   insert [1,4] (1:t5 4:t6), [5] (t7); evict 1: 4 (t6); evict 9: 1 and 5. */
Test(cache_api, lru_inner_touch)
{
	struct kvdex_cache *c =
		cache_new(8, KVDEX_CACHE_LEAF_LRU, KVDEX_CACHE_EVICT_SHORTFALL, 0, NULL);
	uint64_t ev;
	size_t m;

	cr_assert(eq(i32, INSERT(c, NULL, 1, 2), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 3), 0));
	cr_assert(eq(i32, kvdex_cache_match(c, K(1, 9), 2, 0, &m), 0));
	cr_assert(eq(sz, m, 1));
	cr_assert(eq(i32, kvdex_cache_evict(c, 1, &ev), 0));
	cr_assert(gone(c, 2) && cached(c, 1) && cached(c, 3));
	cr_assert(eq(i32, kvdex_cache_evict(c, 1, &ev), 0));
	cr_assert(gone(c, 3) && cached(c, 1));
	cr_assert(eq(i32, INSERT(c, NULL, 1, 4), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 5), 0));
	cr_assert(eq(i32, kvdex_cache_evict(c, 1, &ev), 0));
	cr_assert(gone(c, 4) && cached(c, 5));
	cr_assert(eq(i32, kvdex_cache_evict(c, 9, &ev), 0));
	cr_assert(eq(u64, ev, 2));
	cr_assert(eq(u64, cstats(c).size, 0));
	cr_assert(eq(i32, kvdex_cache_validate(c), 0));
	kvdex_cache_destroy(c);
}

/* 7. SHORTFALL evicts what is missing, FULL_ALLOCATION the whole request, under
 *    both policies: capacity 8 holding 6 blocks, then a 4-block chain. */
Test(cache_api, evict_modes)
{
	for (int pol = 0; pol < 2; pol++) {
		for (int mode = 0; mode < 2; mode++) {
			struct kvdex_cache *c = cache_new(8, pol, mode, 5, NULL);
			struct kvdex_cache_result res;

			for (uint64_t k = 1; k <= 6; k++) {
				cr_assert(eq(i32, kvdex_cache_insert(c, &k, 1, 0, NULL), 0));
			}
			/* 2 fit: no eviction in either mode. */
			cr_assert(eq(i32, INSERT(c, &res, 20, 21), 0));
			cr_assert(eq(u64, res.evicted, 0));
			/* 0 free, 4 needed: 4 in both modes (shortfall = request). */
			cr_assert(eq(i32, INSERT(c, &res, 30, 31, 32, 33), 0));
			cr_assert(eq(u64, res.evicted, 4));
			/* Evict 3 by hand: 3 free, 4 needed: shortfall 1, full 4. */
			cr_assert(eq(i32, kvdex_cache_evict(c, 3, NULL), 0));
			cr_assert(eq(i32, INSERT(c, &res, 40, 41, 42, 43), 0));
			cr_assert(eq(u64, res.evicted, mode ? 4 : 1), "pol %d mode %d", pol, mode);
			cr_assert(eq(u64, res.inserted, 4));
			cr_assert(eq(u64, cstats(c).size, mode ? 5 : 8));
			cr_assert(eq(i32, kvdex_cache_validate(c), 0));
			kvdex_cache_destroy(c);
		}
	}
}

/* 8. Published events: one callback per call, in change order, with the
 *    cache's ns and tier, parent set on all but first blocks. */
Test(cache_api, event_stream)
{
	struct rec r = {0};
	struct kvdex_cache *c =
		cache_new(3, KVDEX_CACHE_LEAF_LRU, KVDEX_CACHE_EVICT_SHORTFALL, 0, &r);
	size_t m;

	cr_assert(eq(i32, INSERT(c, NULL, 1, 2), 0));
	cr_assert(eq(sz, r.calls, 1));
	cr_assert(eq(sz, r.n, 2));
	cr_assert(eq(u32, r.ev[0].type, KVDEX_EV_STORED));
	cr_assert(eq(u64, r.ev[0].key, 1));
	cr_assert(eq(u32, r.ev[0].flags, 0));
	cr_assert(eq(u32, r.ev[0].ns, 7));
	cr_assert(eq(u32, r.ev[0].tier, KVDEX_HOST));
	cr_assert(eq(u32, r.ev[1].flags, KVDEX_EVF_PARENT));
	cr_assert(eq(u64, r.ev[1].parent, 1));
	/* Matches and locks publish nothing. */
	cr_assert(eq(i32, kvdex_cache_match(c, K(1, 2), 2, KVDEX_CACHE_LOCK, &m), 0));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1, 2), 2), 0));
	cr_assert(eq(sz, r.calls, 1));
	/* [3,4] with 1 free: REMOVED 2 (oldest leaf), STORED 3, STORED 4. */
	cr_assert(eq(i32, INSERT(c, NULL, 3, 4), 0));
	cr_assert(eq(sz, r.calls, 2));
	cr_assert(eq(sz, r.last_call_n, 3));
	cr_assert(eq(u32, r.ev[2].type, KVDEX_EV_REMOVED));
	cr_assert(eq(u64, r.ev[2].key, 2));
	cr_assert(eq(u32, r.ev[3].type, KVDEX_EV_STORED));
	cr_assert(eq(u64, r.ev[3].key, 3));
	cr_assert(eq(u32, r.ev[4].flags, KVDEX_EVF_PARENT));
	cr_assert(eq(u64, r.ev[4].parent, 3));
	/* A call that changes nothing publishes nothing. */
	cr_assert(eq(i32, INSERT(c, NULL, 3, 4), 0));
	cr_assert(eq(sz, r.calls, 2));
	cr_assert(eq(u64, cstats(c).events, 5));
	cr_assert(eq(u64, cstats(c).publish_calls, 2));
	cr_assert(eq(i32, r.check_rc, 0));
	kvdex_cache_destroy(c);
	rec_fini(&r);
}

/* 9. A key cached under another parent, or repeated in the chain, stops the
 *    insert there; the rest is dropped and counted. */
Test(cache_api, conflicts)
{
	struct kvdex_cache *c =
		cache_new(16, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 0, NULL);
	struct kvdex_cache_result res;

	cr_assert(eq(i32, INSERT(c, &res, 1, 2), 0));
	cr_assert(eq(i32, INSERT(c, &res, 5, 2, 6), 0));
	cr_assert(eq(u64, res.inserted, 1));
	cr_assert(eq(u64, res.dropped, 2));
	cr_assert(eq(u64, binfo(c, 2).parent, 1));
	cr_assert(eq(i32, INSERT(c, &res, 7, 8, 7, 9), 0));
	cr_assert(eq(u64, res.inserted, 2));
	cr_assert(eq(u64, res.dropped, 2));
	cr_assert(eq(u64, cstats(c).conflicts, 2));
	cr_assert(eq(i32, kvdex_cache_validate(c), 0));
	kvdex_cache_destroy(c);
}

/* 10. Lock and unlock: nesting, the matched-prefix count, and unlock errors
 *     that change nothing. */
Test(cache_api, lock_unlock)
{
	struct kvdex_cache *c = cache_new(8, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 0, NULL);
	size_t m;

	cr_assert(eq(i32, INSERT(c, NULL, 1, 2, 3), 0));
	cr_assert(eq(i32, kvdex_cache_lock(c, K(1, 2, 7), 3, &m), 0));
	cr_assert(eq(sz, m, 2));
	cr_assert(eq(i32, kvdex_cache_lock(c, K(1), 1, &m), 0));
	cr_assert(eq(u32, binfo(c, 1).lock_ref, 2));
	cr_assert(eq(u32, binfo(c, 2).lock_ref, 1));
	cr_assert(eq(u32, binfo(c, 3).lock_ref, 0));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1, 2, 3), 3), -EINVAL)); /* 3 unlocked */
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1, 7), 2), -ENOENT));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(2), 1), -ENOENT)); /* not a first block */
	cr_assert(eq(u32, binfo(c, 1).lock_ref, 2));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1, 2), 2), 0));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1), 1), 0));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1), 1), -EINVAL));
	cr_assert(eq(u64, cstats(c).locked, 0));
	cr_assert(eq(i32, kvdex_cache_lock(c, NULL, 1, &m), -EINVAL));
	cr_assert(eq(i32, kvdex_cache_match(c, K(1), 1, 0x10, &m), -EINVAL));
	cr_assert(eq(i32, kvdex_cache_match(c, K(1), 1, 0, NULL), -EINVAL));
	cr_assert(eq(i32, kvdex_cache_match(c, NULL, 0, 0, &m), 0));
	cr_assert(eq(sz, m, 0));
	cr_assert(eq(i32, kvdex_cache_validate(c), 0));
	kvdex_cache_destroy(c);
}

/* 11. Clear publishes ALL_CLEARED for the tier (refused while locked); resync
 *     republishes everything, parents first, which replays to the same set. */
Test(cache_api, clear_and_resync)
{
	struct rec r = {0};
	struct model mo;
	struct kvdex_cache *c = cache_new(16, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 2, &r);
	size_t m;

	model_init(&mo, 64);
	r.model = &mo;
	cr_assert(eq(i32, INSERT(c, NULL, 1, 2, 3), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 1, 4), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 9, 8), 0));
	cr_assert(eq(i32, kvdex_cache_evict(c, 2, NULL), 0));
	cr_assert(eq(i32, INSERT(c, NULL, 1, 2, 5, 6), 0));
	cr_assert(eq(i32, kvdex_cache_resync(c), 0));
	cr_assert(eq(u32, r.ev[r.n - r.last_call_n].type, KVDEX_EV_ALL_CLEARED));
	cr_assert(eq(sz, r.last_call_n, cstats(c).size + 1));
	cr_assert(eq(str, mo.err, ""));
	cr_assert(eq(i32, model_compare(&mo, c), 0));

	cr_assert(eq(i32, kvdex_cache_lock(c, K(1), 1, &m), 0));
	cr_assert(eq(i32, kvdex_cache_clear(c), -EBUSY));
	cr_assert(eq(i32, kvdex_cache_unlock(c, K(1), 1), 0));
	cr_assert(eq(i32, kvdex_cache_clear(c), 0));
	cr_assert(eq(u32, r.ev[r.n - 1].type, KVDEX_EV_ALL_CLEARED));
	cr_assert(eq(u32, r.ev[r.n - 1].tier_mask, 1u << KVDEX_HOST));
	cr_assert(eq(u64, cstats(c).size, 0));
	cr_assert(gone(c, 1));
	cr_assert(eq(sz, mo.n, 0));
	/* Usable again after a clear. */
	cr_assert(eq(i32, INSERT(c, NULL, 1, 2), 0));
	cr_assert(eq(i32, model_compare(&mo, c), 0));
	cr_assert(eq(i32, r.check_rc, 0));
	kvdex_cache_destroy(c);
	model_fini(&mo);
	rec_fini(&r);
}

/* 12. A failing callback's error comes back, the cache changed anyway and
 *     counts the error; a positive return becomes -EIO. */
Test(cache_api, publish_error)
{
	struct rec r = {0};
	struct kvdex_cache *c = cache_new(4, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 0, &r);

	r.fail_next = -ECONNRESET;
	cr_assert(eq(i32, INSERT(c, NULL, 1), -ECONNRESET));
	cr_assert(cached(c, 1));
	r.fail_next = 3;
	cr_assert(eq(i32, INSERT(c, NULL, 2), -EIO));
	cr_assert(eq(u64, cstats(c).publish_errors, 2));
	cr_assert(eq(i32, INSERT(c, NULL, 3), 0));
	kvdex_cache_destroy(c);
	rec_fini(&r);
}

static int
reenter(struct rec *r)
{
	size_t m;

	if (kvdex_cache_insert(r->cache, K(99), 1, 0, NULL) != -EBUSY ||
	    kvdex_cache_match(r->cache, K(1), 1, 0, &m) != -EBUSY ||
	    kvdex_cache_evict(r->cache, 1, NULL) != -EBUSY || cstats(r->cache).size == 0) {
		return -1;
	}
	return 0;
}

/* 13. From inside the callback, mutating calls get -EBUSY, reads work. */
Test(cache_api, callback_reentry)
{
	struct rec r = {.inner = reenter};
	struct kvdex_cache *c = cache_new(4, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 0, &r);

	cr_assert(eq(i32, INSERT(c, NULL, 1, 2), 0));
	cr_assert(eq(i32, r.inner_rc, 0));
	cr_assert(gone(c, 99));
	cr_assert(eq(i32, r.check_rc, 0));
	kvdex_cache_destroy(c);
	rec_fini(&r);
}

/* 14. RLT: a match marks nothing by default; with MARK_ON_MATCH it marks the
 *     matched path (and only it). */
Test(cache_api, mark_on_match)
{
	for (int flag = 0; flag < 2; flag++) {
		struct kvdex_cache_opts o;
		struct kvdex_cache *c;
		size_t m;

		kvdex_cache_opts_init(&o, sizeof(o));
		o.capacity_blocks = 8;
		o.flags = flag ? KVDEX_CACHE_F_MARK_ON_MATCH : 0;
		cr_assert(eq(i32, kvdex_cache_create(&o, &c), 0));
		cr_assert(eq(i32, INSERT(c, NULL, 1, 2, 3), 0));
		cr_assert(eq(i32, INSERT(c, NULL, 1, 4), 0));
		/* Marked {1,2,3,4}. evict 1: 1 + 4 < 8, but no block is free
		 * (all marked): a new phase empties the marks, then 3 or 4 goes. */
		cr_assert(eq(i32, kvdex_cache_evict(c, 1, NULL), 0));
		cr_assert(eq(u64, cstats(c).phases_short, 1));
		cr_assert(eq(u64, cstats(c).marked, 0));
		cr_assert(eq(i32, kvdex_cache_match(c, K(1, 2), 2, 0, &m), 0));
		cr_assert(eq(sz, m, 2));
		cr_assert(eq(u64, cstats(c).marked, flag ? m : 0));
		cr_assert(eq(i32, binfo(c, 1).marked, flag));
		cr_assert(binfo(c, 4).marked == 0);
		cr_assert(eq(i32, kvdex_cache_validate(c), 0));
		kvdex_cache_destroy(c);
	}
}

/* 15. stats_get writes no more than the size it is given. */
Test(cache_api, stats_size)
{
	struct kvdex_cache *c = cache_new(4, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, 0, NULL);
	struct kvdex_cache_stats st;

	memset(&st, 0xab, sizeof(st));
	kvdex_cache_stats_get(c, &st, offsetof(struct kvdex_cache_stats, size));
	cr_assert(eq(u64, st.capacity, 4));
	cr_assert(eq(u64, st.size, 0xababababababababull));
	kvdex_cache_destroy(c);
}

/* 16. RLT's third phase rule: unmarked candidates exist but cannot cover the
 *     request. Capacity 10:
 *   a. [1] [2] [3] [4]      marked {1,2,3,4}
 *   b. evict 1              1 + 4 < 10, but no candidate: new phase ("short");
 *                           one of 1..4 goes; marked {}
 *   c. [5] [6] [7]          marked {5,6,7}; candidates: the 3 survivors of 1..4
 *   d. evict 5              5 + 3 = 8 < 10 (no "evict" phase), free blocks
 *                           6 - 3 = 3 < 5: new phase ("short"), so 5 of the 6
 *                           go, marked ones included (without the rule: 3). */
Test(cache_api, rlt_short_phase)
{
	for (uint64_t seed = 0; seed < 16; seed++) {
		struct kvdex_cache *c =
			cache_new(10, KVDEX_CACHE_RLT, KVDEX_CACHE_EVICT_SHORTFALL, seed, NULL);
		uint64_t ev;

		for (uint64_t k = 1; k <= 4; k++) { /* a */
			cr_assert(eq(i32, kvdex_cache_insert(c, &k, 1, 0, NULL), 0));
		}
		cr_assert(eq(i32, kvdex_cache_evict(c, 1, &ev), 0)); /* b */
		cr_assert(eq(u64, cstats(c).phases_short, 1));
		for (uint64_t k = 5; k <= 7; k++) { /* c */
			cr_assert(eq(i32, kvdex_cache_insert(c, &k, 1, 0, NULL), 0));
		}
		cr_assert(eq(u64, cstats(c).candidates, 3));
		cr_assert(eq(i32, kvdex_cache_evict(c, 5, &ev), 0)); /* d */
		cr_assert(eq(u64, ev, 5));
		cr_assert(eq(u64, cstats(c).phases_short, 2));
		cr_assert(eq(u64, cstats(c).phases_evict, 0));
		cr_assert(eq(u64, cstats(c).size, 1));
		kvdex_cache_destroy(c);
	}
}

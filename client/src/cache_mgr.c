/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Worker-side KV cache manager (kvdex/cache.h): one worker's blocks as a prefix
 * tree at block granularity, with RLT (KVRouting's randomized marking) or
 * SGLang's leaf LRU, publishing every store and eviction as kvdex events.
 *
 * Data structures
 *   nodes[]    a pool of `capacity` nodes, one per cached block, addressed by
 *              32-bit index (a bump pointer `used` plus a free list, so pages
 *              the cache never fills stay untouched zero pages).
 *   buckets[]  a chained hash table key -> node (2^k >= capacity heads, chains
 *              through node.hnext). Keys are chained block hashes, so one global
 *              map replaces per-node child maps: keys[i] is the child of
 *              keys[i-1] iff its node's parent is keys[i-1]'s node. The tree is
 *              a forest: first blocks have parent CACHE_NIL (the virtual root).
 *   pool[]     the victim pool, one entry per unlocked leaf (node.pos is its
 *              index, CACHE_NIL when not in the pool):
 *              - RLT: split in two regions, [0, ncand) the unmarked leaves
 *                (the candidates) and [ncand, npool) the marked ones;
 *              - LEAF_LRU: a binary min-heap on node.atime.
 *
 * RLT (research/kvrouting.md §1.2, radix_cache_lrt.py + cy_evict.pyx), with
 * one block per node:
 *   - marks: a node is marked iff node.mark_epoch == epoch. A new phase is
 *     epoch++, which unmarks every node at once; in the pool every leaf is now
 *     unmarked, and the split point simply moves: ncand = npool. Then the kept
 *     path (node -> root) is re-marked, which moves at most one pool entry (only
 *     the kept node itself can be a leaf). So a phase change costs O(depth of
 *     the kept node), and O(1) when nothing is kept (phases begun by evict).
 *   - new phase when a node's first mark of the phase brings the marked count
 *     to capacity (keeping that node's path, the reference's
 *     _on_token_access), when an eviction of k blocks finds k + marked >=
 *     capacity, or when the free blocks cannot cover k (no keep). A phase
 *     change that would find no marks is a no-op and is skipped.
 *   - "cap" of the reference (tokens in unmarked unlocked leaves) becomes the
 *     number of free blocks F = size - |marked U locked|. Marks and locks are
 *     always applied to whole root paths, so both sets are closed under
 *     ancestors and the free set is a union of subtrees: exactly the blocks that
 *     leaf-by-leaf eviction can reach. |marked U locked| = nmarked + nlocked -
 *     nmarked_locked, three counters kept exactly on every 0<->1 transition.
 *   - victim: uniform over pool[0, ncand) (unbiased bounded draw from
 *     xoshiro256**), evict it (a one-block leaf), and its parent joins the pool
 *     when it becomes an unlocked leaf: in the candidate region iff unmarked.
 *     Picking a leaf block uniformly is the reference's "pick a leaf node
 *     uniformly, drop its last token": a radix leaf and its last block are in
 *     one-to-one correspondence.
 *   Cost per evicted block: O(1) worst case (one draw, two swaps per pool
 *   removal, one hash unlink with O(1) expected chain length, one event). The
 *   reference needs two full-tree walks per evict call.
 *   Pool maintenance: every transition is O(1): leaf gains a child / loses its
 *   last child, lock 0<->1, first mark of the phase (swap across the split).
 *
 * LEAF_LRU (research/kvrouting.md §1.1, SGLang RadixCache.evict): evict the
 * unlocked leaf with the oldest access time, then its parent competes when it
 * becomes a leaf. Access times are a logical clock bumped per touched block, in
 * path order, so ties never happen and a run is reproducible. match and insert
 * touch every block of the path; only the last one can be in the heap (every
 * other has a child), so a touch is O(1) plus one O(log leaves) sift. Eviction
 * is O(log leaves) per block. Blocks are single nodes here, so "whole leaves"
 * means whole blocks: the reference's overshoot on long radix leaves does not
 * exist at block granularity (FULL_ALLOCATION still reproduces SGLang's
 * over-eviction).
 *
 * Invariants (checked by kvdex_cache_validate()):
 *   - every cached block's parent is cached (prefix closure), child counts are
 *     exact, size <= capacity;
 *   - a node is in the pool iff it has no children and no locks; RLT: its pool
 *     index < ncand iff it is unmarked;
 *   - lock_ref(p) >= sum of its children's lock_ref (locks cover root paths);
 *   - RLT: a marked node's parent is marked.
 *
 * Events: each public call appends to c->ev (reserved before any state change,
 * so -ENOMEM never leaves half an operation) and hands the batch to the publish
 * callback once at the end, in the order the changes happened.
 *
 * Locking: none; one thread at a time per cache (kvdex/cache.h). The publish
 * callback runs with the cache consistent; mutating calls from it get -EBUSY.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kvdex/cache.h"

#define CACHE_NIL UINT32_MAX
#define CACHE_FREE (UINT32_MAX - 1)
#define CACHE_MAX_CAPACITY (1ull << 31)

/* Test seam: tests that #include this file see every victim before it goes. */

#ifndef KVDEX_EXPORT
#define KVDEX_EXPORT __attribute__((visibility("default")))
#endif
#ifndef KVDEX_CACHE_EVICT_HOOK
#define KVDEX_CACHE_EVICT_HOOK(c, idx) ((void)0)
#endif

struct cache_node {
	uint64_t key;
	uint64_t atime;	     /* logical access time */
	uint32_t parent;     /* CACHE_NIL: a first block; CACHE_FREE: unused node */
	uint32_t hnext;	     /* hash chain, or free list */
	uint32_t nchildren;  /* cached children */
	uint32_t lock_ref;   /* lock paths through this node */
	uint32_t mark_epoch; /* RLT: marked iff == c->epoch */
	uint32_t pos;	     /* index in c->pool, CACHE_NIL if not there */
};

struct kvdex_cache {
	struct kvdex_cache_opts opts;
	uint32_t capacity;
	bool rlt;
	bool in_publish;

	struct cache_node *nodes;
	uint32_t used;	    /* nodes[0, used) have been handed out at least once */
	uint32_t free_head; /* free list through hnext */
	uint32_t size;	    /* cached blocks */
	uint32_t nleaves;   /* cached blocks without children, locked or not */

	uint32_t *buckets;
	unsigned hash_shift; /* 64 - log2(number of buckets) */

	uint32_t *pool;
	uint32_t npool; /* unlocked leaves */
	uint32_t ncand; /* RLT: of those, unmarked ones: pool[0, ncand) */

	uint32_t epoch; /* RLT: current phase's mark value, never 0 */
	uint32_t nmarked;
	uint32_t nlocked;
	uint32_t nmarked_locked;
	uint64_t phase;
	uint64_t clock;
	uint64_t rng[4];

	struct kvdex_event *ev;
	size_t nev;
	size_t ev_cap;
	uint32_t *path;
	size_t path_cap;

	struct kvdex_cache_stats st; /* counters only; gauges are filled on read */
};

#if UINTPTR_MAX == UINT64_MAX
/* Fields are only ever appended to the options (STYLE §3). */
_Static_assert(sizeof(struct kvdex_cache_opts) == 64, "kvdex_cache_opts layout changed");
#endif

/* ---- PRNG: splitmix64 seeding xoshiro256** (Blackman & Vigna) ------------- */

static uint64_t
cache_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t
cache_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t
cache_rand(struct kvdex_cache *c)
{
	uint64_t *s = c->rng;
	uint64_t r = cache_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = cache_rotl(s[3], 45);
	return r;
}

/* Uniform in [0, bound), bound >= 1: Lemire's multiply-shift, with rejection
 * of the biased low products so every value has the same probability. */
static uint32_t
cache_rand_below(struct kvdex_cache *c, uint32_t bound)
{
	uint64_t m = (cache_rand(c) >> 32) * bound;

	if ((uint32_t)m < bound) {
		uint32_t threshold = -bound % bound;

		while ((uint32_t)m < threshold) {
			m = (cache_rand(c) >> 32) * bound;
		}
	}
	return (uint32_t)(m >> 32);
}

static void
cache_seed(struct kvdex_cache *c, uint64_t seed)
{
	for (int i = 0; i < 4; i++) {
		c->rng[i] = cache_splitmix64(&seed);
	}
}

/* ---- hash table ----------------------------------------------------------- */

static uint32_t
cache_bucket(const struct kvdex_cache *c, uint64_t key)
{
	uint64_t x = key;

	/* Keys are hashes already, but tests and some engines use small ones. */
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)((x ^ (x >> 31)) >> c->hash_shift);
}

static uint32_t
cache_find(const struct kvdex_cache *c, uint64_t key)
{
	uint32_t i = c->buckets[cache_bucket(c, key)];

	while (i != CACHE_NIL && c->nodes[i].key != key) {
		i = c->nodes[i].hnext;
	}
	return i;
}

static void
cache_hash_add(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t *head = &c->buckets[cache_bucket(c, c->nodes[idx].key)];

	c->nodes[idx].hnext = *head;
	*head = idx;
}

static void
cache_hash_del(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t *link = &c->buckets[cache_bucket(c, c->nodes[idx].key)];

	while (*link != idx) {
		assert(*link != CACHE_NIL);
		link = &c->nodes[*link].hnext;
	}
	*link = c->nodes[idx].hnext;
}

/* ---- victim pool: RLT two-region array ------------------------------------ */

static bool
cache_marked(const struct kvdex_cache *c, const struct cache_node *n)
{
	return n->mark_epoch == c->epoch;
}

static void
rlt_pool_swap(struct kvdex_cache *c, uint32_t i, uint32_t j)
{
	uint32_t a = c->pool[i], b = c->pool[j];

	c->pool[i] = b;
	c->pool[j] = a;
	c->nodes[b].pos = i;
	c->nodes[a].pos = j;
}

static void
rlt_pool_add(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t i = c->npool++;

	c->pool[i] = idx;
	c->nodes[idx].pos = i;
	if (!cache_marked(c, &c->nodes[idx])) {
		rlt_pool_swap(c, i, c->ncand++);
	}
}

static void
rlt_pool_del(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t i = c->nodes[idx].pos;

	if (i < c->ncand) {
		rlt_pool_swap(c, i, --c->ncand);
		i = c->ncand;
	}
	rlt_pool_swap(c, i, --c->npool);
	c->nodes[idx].pos = CACHE_NIL;
}

/* idx has just been marked: leave the candidate region. */
static void
rlt_pool_marked(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t i = c->nodes[idx].pos;

	if (i != CACHE_NIL && i < c->ncand) {
		rlt_pool_swap(c, i, --c->ncand);
	}
}

/* ---- victim pool: LRU min-heap on atime ----------------------------------- */

static bool
lru_less(const struct kvdex_cache *c, uint32_t i, uint32_t j)
{
	return c->nodes[c->pool[i]].atime < c->nodes[c->pool[j]].atime;
}

static void
lru_sift_up(struct kvdex_cache *c, uint32_t i)
{
	while (i > 0 && lru_less(c, i, (i - 1) / 2)) {
		rlt_pool_swap(c, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
lru_sift_down(struct kvdex_cache *c, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, m = i;

		if (l < c->npool && lru_less(c, l, m)) {
			m = l;
		}
		if (l + 1 < c->npool && lru_less(c, l + 1, m)) {
			m = l + 1;
		}
		if (m == i) {
			return;
		}
		rlt_pool_swap(c, i, m);
		i = m;
	}
}

static void
lru_pool_add(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t i = c->npool++;

	c->pool[i] = idx;
	c->nodes[idx].pos = i;
	lru_sift_up(c, i);
}

static void
lru_pool_del(struct kvdex_cache *c, uint32_t idx)
{
	uint32_t i = c->nodes[idx].pos;
	uint32_t last = --c->npool;

	if (i != last) {
		rlt_pool_swap(c, i, last);
		lru_sift_down(c, i);
		lru_sift_up(c, i);
	}
	c->nodes[idx].pos = CACHE_NIL;
}

static void
cache_pool_add(struct kvdex_cache *c, uint32_t idx)
{
	if (c->rlt) {
		rlt_pool_add(c, idx);
	} else {
		lru_pool_add(c, idx);
	}
}

static void
cache_pool_del(struct kvdex_cache *c, uint32_t idx)
{
	if (c->rlt) {
		rlt_pool_del(c, idx);
	} else {
		lru_pool_del(c, idx);
	}
}

/* ---- marks, phases, touches ----------------------------------------------- */

static void
rlt_epoch_wrap(struct kvdex_cache *c)
{
	/* Once per 2^32 phases: no stale mark_epoch may equal a future epoch. */
	for (uint32_t i = 0; i < c->used; i++) {
		c->nodes[i].mark_epoch = 0;
	}
	c->epoch = 1;
}

/* Mark without the phase check (the reference's _mark_prefix). Returns
 * whether the node was unmarked. */
static bool
rlt_set_mark(struct kvdex_cache *c, uint32_t idx)
{
	struct cache_node *n = &c->nodes[idx];

	if (cache_marked(c, n)) {
		return false;
	}
	n->mark_epoch = c->epoch;
	c->nmarked++;
	if (n->lock_ref) {
		c->nmarked_locked++;
	}
	rlt_pool_marked(c, idx);
	return true;
}

/* Start a new phase: every mark goes (O(1)), then the path keep -> root is
 * marked again if keep is a node. */
static void
rlt_new_phase(struct kvdex_cache *c, uint32_t keep, uint64_t *reason)
{
	if (++c->epoch == 0) {
		rlt_epoch_wrap(c);
	}
	c->nmarked = 0;
	c->nmarked_locked = 0;
	c->ncand = c->npool;
	c->phase++;
	(*reason)++;
	for (uint32_t v = keep; v != CACHE_NIL; v = c->nodes[v].parent) {
		rlt_set_mark(c, v);
	}
}

/* The reference's _mark_node + _on_token_access: the first mark of a node in a
 * phase that brings the count to the capacity starts a new phase, keeping it. */
static void
rlt_mark(struct kvdex_cache *c, uint32_t idx)
{
	if (rlt_set_mark(c, idx) && c->nmarked >= c->capacity) {
		rlt_new_phase(c, idx, &c->st.phases_full);
	}
}

static void
cache_touch(struct kvdex_cache *c, uint32_t idx, bool mark)
{
	struct cache_node *n = &c->nodes[idx];

	n->atime = ++c->clock;
	if (c->rlt) {
		if (mark) {
			rlt_mark(c, idx);
		}
	} else if (n->pos != CACHE_NIL) {
		lru_sift_down(c, n->pos); /* atime only grows */
	}
}

/* ---- locks and tree edges ------------------------------------------------- */

static void
cache_lock_node(struct kvdex_cache *c, uint32_t idx)
{
	struct cache_node *n = &c->nodes[idx];

	if (n->lock_ref++ > 0) {
		return;
	}
	c->nlocked++;
	if (cache_marked(c, n)) {
		c->nmarked_locked++;
	}
	if (n->nchildren == 0) {
		cache_pool_del(c, idx);
	}
}

static void
cache_unlock_node(struct kvdex_cache *c, uint32_t idx)
{
	struct cache_node *n = &c->nodes[idx];

	assert(n->lock_ref > 0);
	if (--n->lock_ref > 0) {
		return;
	}
	c->nlocked--;
	if (cache_marked(c, n)) {
		c->nmarked_locked--;
	}
	if (n->nchildren == 0) {
		cache_pool_add(c, idx);
	}
}

static void
cache_child_added(struct kvdex_cache *c, uint32_t p)
{
	struct cache_node *n = &c->nodes[p];

	if (n->nchildren++ > 0) {
		return;
	}
	c->nleaves--;
	if (n->lock_ref == 0) {
		cache_pool_del(c, p);
	}
}

static void
cache_child_removed(struct kvdex_cache *c, uint32_t p)
{
	struct cache_node *n = &c->nodes[p];

	if (--n->nchildren > 0) {
		return;
	}
	c->nleaves++;
	if (n->lock_ref == 0) {
		cache_pool_add(c, p);
	}
}

/* ---- events --------------------------------------------------------------- */

static int
cache_reserve(struct kvdex_cache *c, size_t nev, size_t npath)
{
	if (c->nev + nev > c->ev_cap) {
		size_t cap = c->nev + nev + 64;
		struct kvdex_event *ev = realloc(c->ev, cap * sizeof(*ev));

		if (!ev) {
			return -ENOMEM;
		}
		c->ev = ev;
		c->ev_cap = cap;
	}
	if (npath > c->path_cap) {
		uint32_t *p = realloc(c->path, npath * sizeof(*p));

		if (!p) {
			return -ENOMEM;
		}
		c->path = p;
		c->path_cap = npath;
	}
	return 0;
}

static struct kvdex_event *
cache_emit(struct kvdex_cache *c, uint8_t type)
{
	struct kvdex_event *ev = &c->ev[c->nev++];

	assert(c->nev <= c->ev_cap);
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->tier = c->opts.tier;
	ev->ns = c->opts.ns;
	return ev;
}

static void
cache_emit_block(struct kvdex_cache *c, uint8_t type, uint32_t idx)
{
	const struct cache_node *n = &c->nodes[idx];
	struct kvdex_event *ev = cache_emit(c, type);

	ev->key = n->key;
	if (type == KVDEX_EV_STORED && n->parent != CACHE_NIL) {
		ev->flags = KVDEX_EVF_PARENT;
		ev->parent = c->nodes[n->parent].key;
	}
}

/* One publish call per public call, after every change of that call. */
static int
cache_flush(struct kvdex_cache *c)
{
	size_t n = c->nev;
	int rc;

	if (n == 0) {
		return 0;
	}
	c->nev = 0;
	c->st.events += n;
	if (!c->opts.publish) {
		return 0;
	}
	c->in_publish = true;
	rc = c->opts.publish(c->opts.publish_arg, c->ev, n);
	c->in_publish = false;
	c->st.publish_calls++;
	if (rc != 0) {
		c->st.publish_errors++;
		return rc < 0 ? rc : -EIO;
	}
	return 0;
}

/* ---- nodes ---------------------------------------------------------------- */

/* Store a new leaf under parent (CACHE_NIL: a first block). size < capacity. */
static uint32_t
cache_node_new(struct kvdex_cache *c, uint64_t key, uint32_t parent)
{
	uint32_t idx = c->free_head;
	struct cache_node *n;

	assert(c->size < c->capacity);
	if (idx != CACHE_NIL) {
		c->free_head = c->nodes[idx].hnext;
	} else {
		idx = c->used++;
	}
	n = &c->nodes[idx];
	memset(n, 0, sizeof(*n));
	n->key = key;
	n->atime = ++c->clock; /* before it enters the LRU heap */
	n->parent = parent;
	n->pos = CACHE_NIL;
	cache_hash_add(c, idx);
	c->size++;
	c->nleaves++;
	if (parent != CACHE_NIL) {
		cache_child_added(c, parent);
	}
	cache_pool_add(c, idx);
	cache_emit_block(c, KVDEX_EV_STORED, idx);
	return idx;
}

/* Evict an unlocked leaf; its parent may become a pool member. */
static void
cache_node_evict(struct kvdex_cache *c, uint32_t idx)
{
	struct cache_node *n = &c->nodes[idx];
	uint32_t parent = n->parent;

	KVDEX_CACHE_EVICT_HOOK(c, idx);
	assert(n->nchildren == 0 && n->lock_ref == 0 && n->pos != CACHE_NIL);
	cache_pool_del(c, idx);
	cache_hash_del(c, idx);
	cache_emit_block(c, KVDEX_EV_REMOVED, idx);
	n->parent = CACHE_FREE;
	n->hnext = c->free_head;
	c->free_head = idx;
	c->size--;
	c->nleaves--;
	c->st.evicted++;
	if (parent != CACHE_NIL) {
		cache_child_removed(c, parent);
	}
}

/* ---- eviction ------------------------------------------------------------- */

/* Blocks leaf-by-leaf eviction can reach without a new phase. */
static uint32_t
rlt_free_blocks(const struct kvdex_cache *c)
{
	return c->size - (c->nmarked + c->nlocked - c->nmarked_locked);
}

static uint64_t
rlt_evict(struct kvdex_cache *c, uint64_t want)
{
	uint64_t got = 0;

	if (want + c->nmarked >= c->capacity && c->nmarked > 0) {
		rlt_new_phase(c, CACHE_NIL, &c->st.phases_evict);
	}
	if ((c->ncand == 0 || rlt_free_blocks(c) < want) && c->nmarked > 0) {
		rlt_new_phase(c, CACHE_NIL, &c->st.phases_short);
	}
	while (got < want && c->ncand > 0) {
		cache_node_evict(c, c->pool[cache_rand_below(c, c->ncand)]);
		got++;
	}
	return got;
}

static uint64_t
lru_evict(struct kvdex_cache *c, uint64_t want)
{
	uint64_t got = 0;

	while (got < want && c->npool > 0) {
		cache_node_evict(c, c->pool[0]);
		got++;
	}
	return got;
}

static uint64_t
cache_run_evict(struct kvdex_cache *c, uint64_t want)
{
	if (want == 0) {
		return 0;
	}
	c->st.evict_calls++;
	return c->rlt ? rlt_evict(c, want) : lru_evict(c, want);
}

/* ---- walks ---------------------------------------------------------------- */

/* Length of the longest cached chain prefix of keys; its nodes go to path
 * (if not NULL). */
static size_t
cache_walk(const struct kvdex_cache *c, const uint64_t *keys, size_t n, uint32_t *path)
{
	uint32_t parent = CACHE_NIL;
	size_t i;

	for (i = 0; i < n; i++) {
		uint32_t idx = cache_find(c, keys[i]);

		if (idx == CACHE_NIL || c->nodes[idx].parent != parent) {
			break;
		}
		if (path) {
			path[i] = idx;
		}
		parent = idx;
	}
	return i;
}

static int
cache_check_call(const struct kvdex_cache *c, const uint64_t *keys, size_t n, unsigned flags)
{
	if (!c || (!keys && n > 0) || (flags & ~KVDEX_CACHE_LOCK)) {
		return -EINVAL;
	}
	if (c->in_publish) {
		return -EBUSY;
	}
	return 0;
}

/* ---- public API ----------------------------------------------------------- */

KVDEX_EXPORT void
kvdex_cache_opts_init(struct kvdex_cache_opts *opts, size_t size)
{
	struct kvdex_cache_opts d = {
		.opts_size = sizeof(d),
		.policy = KVDEX_CACHE_RLT,
		.evict_mode = KVDEX_CACHE_EVICT_SHORTFALL,
		.tier = KVDEX_GPU,
	};

	if (!opts) {
		return;
	}
	if (size > sizeof(d)) {
		size = sizeof(d);
	}
	memcpy(opts, &d, size);
	if (size >= sizeof(opts->opts_size)) {
		opts->opts_size = size;
	}
}

KVDEX_EXPORT void
kvdex_cache_destroy(struct kvdex_cache *c)
{
	if (!c) {
		return;
	}
	free(c->path);
	free(c->ev);
	free(c->pool);
	free(c->buckets);
	free(c->nodes);
	free(c);
}

static int
cache_opts_copy(const struct kvdex_cache_opts *opts, struct kvdex_cache_opts *o)
{
	size_t size;

	if (!opts || opts->opts_size < sizeof(opts->opts_size)) {
		return -EINVAL;
	}
	kvdex_cache_opts_init(o, sizeof(*o));
	size = opts->opts_size < sizeof(*o) ? opts->opts_size : sizeof(*o);
	memcpy(o, opts, size);
	o->opts_size = sizeof(*o);
	if (o->capacity_blocks == 0 || o->capacity_blocks > CACHE_MAX_CAPACITY ||
	    (o->policy != KVDEX_CACHE_RLT && o->policy != KVDEX_CACHE_LEAF_LRU) ||
	    (o->evict_mode != KVDEX_CACHE_EVICT_SHORTFALL &&
	     o->evict_mode != KVDEX_CACHE_EVICT_FULL_ALLOCATION) ||
	    o->tier >= KVDEX_NTIERS || (o->flags & ~KVDEX_CACHE_F_MARK_ON_MATCH)) {
		return -EINVAL;
	}
	return 0;
}

KVDEX_EXPORT int
kvdex_cache_create(const struct kvdex_cache_opts *opts, struct kvdex_cache **out)
{
	struct kvdex_cache *c;
	unsigned bits = 4;
	int rc;

	if (!out) {
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		return -ENOMEM;
	}
	rc = cache_opts_copy(opts, &c->opts);
	if (rc) {
		goto err_destroy;
	}
	c->capacity = (uint32_t)c->opts.capacity_blocks;
	c->rlt = c->opts.policy == KVDEX_CACHE_RLT;
	while ((1ull << bits) < c->capacity) {
		bits++;
	}
	c->hash_shift = 64 - bits;
	rc = -ENOMEM;
	c->nodes = calloc(c->capacity, sizeof(*c->nodes));
	c->buckets = malloc(sizeof(*c->buckets) << bits);
	c->pool = malloc(sizeof(*c->pool) * c->capacity);
	if (!c->nodes || !c->buckets || !c->pool) {
		goto err_destroy;
	}
	memset(c->buckets, 0xff, sizeof(*c->buckets) << bits);
	c->free_head = CACHE_NIL;
	c->epoch = 1;
	c->phase = 1;
	cache_seed(c, c->opts.seed);
	*out = c;
	return 0;

err_destroy:
	kvdex_cache_destroy(c);
	return rc;
}

KVDEX_EXPORT int
kvdex_cache_match(struct kvdex_cache *c, const uint64_t *keys, size_t n, unsigned flags,
		  size_t *matched)
{
	bool mark = c && (c->opts.flags & KVDEX_CACHE_F_MARK_ON_MATCH);
	uint32_t parent = CACHE_NIL;
	size_t i;
	int rc;

	rc = cache_check_call(c, keys, n, flags);
	if (rc || !matched) {
		return rc ? rc : -EINVAL;
	}
	for (i = 0; i < n; i++) {
		uint32_t idx = cache_find(c, keys[i]);

		if (idx == CACHE_NIL || c->nodes[idx].parent != parent) {
			break;
		}
		cache_touch(c, idx, mark);
		if (flags & KVDEX_CACHE_LOCK) {
			cache_lock_node(c, idx);
		}
		parent = idx;
	}
	c->st.matches++;
	c->st.match_blocks += i;
	*matched = i;
	return 0;
}

/* How many of keys[m, n) can be stored: up to the first key cached elsewhere. */
static size_t
cache_insertable(struct kvdex_cache *c, const uint64_t *keys, size_t m, size_t n)
{
	size_t j = m;

	while (j < n && cache_find(c, keys[j]) == CACHE_NIL) {
		j++;
	}
	return j - m;
}

/* Store keys[m, m + need) under path[m - 1], as room allows. */
static size_t
cache_store_tail(struct kvdex_cache *c, const uint64_t *keys, size_t m, size_t need, bool *conflict)
{
	uint32_t parent = m ? c->path[m - 1] : CACHE_NIL;
	size_t k;

	for (k = 0; k < need && c->size < c->capacity; k++) {
		uint32_t idx;

		if (cache_find(c, keys[m + k]) != CACHE_NIL) {
			*conflict = true; /* repeated within the chain */
			break;
		}
		idx = cache_node_new(c, keys[m + k], parent);
		if (c->rlt) {
			rlt_mark(c, idx); /* the reference marks each new leaf */
		}
		c->path[m + k] = idx;
		parent = idx;
	}
	return k;
}

/* Lock (or unlock) each of path[0, k). */
static void
cache_lock_path(struct kvdex_cache *c, size_t k, bool lock)
{
	for (size_t i = 0; i < k; i++) {
		if (lock) {
			cache_lock_node(c, c->path[i]);
		} else {
			cache_unlock_node(c, c->path[i]);
		}
	}
}

/* Evict what the evict mode asks for so that `need` new blocks fit. */
static uint64_t
cache_make_room(struct kvdex_cache *c, size_t need)
{
	size_t room = c->capacity - c->size;
	bool full = c->opts.evict_mode == KVDEX_CACHE_EVICT_FULL_ALLOCATION;

	if (need <= room) {
		return 0;
	}
	return cache_run_evict(c, full ? need : need - room);
}

KVDEX_EXPORT int
kvdex_cache_insert(struct kvdex_cache *c, const uint64_t *keys, size_t n, unsigned flags,
		   struct kvdex_cache_result *res)
{
	struct kvdex_cache_result r = {0};
	size_t bound, need;
	bool conflict;
	int rc;

	rc = cache_check_call(c, keys, n, flags);
	if (rc) {
		return rc;
	}
	/* At most `capacity` blocks are stored, evicted, or on a cached path. */
	bound = n < c->capacity ? n : c->capacity;
	rc = cache_reserve(c, 2 * bound, bound);
	if (rc) {
		return rc;
	}
	r.matched = cache_walk(c, keys, n, c->path);
	need = cache_insertable(c, keys, r.matched, n);
	conflict = r.matched + need < n;

	/* Pin the prefix (the reference has it locked by the request while it
	 * allocates), make room, then mark or touch it as the reference's insert
	 * does, and store the tail. */
	cache_lock_path(c, r.matched, true);
	r.evicted = cache_make_room(c, need);
	for (size_t i = 0; i < r.matched; i++) {
		cache_touch(c, c->path[i], true);
	}
	r.inserted = cache_store_tail(c, keys, r.matched, need, &conflict);
	cache_lock_path(c, r.matched, false);
	if (flags & KVDEX_CACHE_LOCK) {
		r.locked = r.matched + r.inserted;
		cache_lock_path(c, r.locked, true);
	}
	r.dropped = n - r.matched - r.inserted;
	c->st.inserts++;
	c->st.inserted += r.inserted;
	c->st.dropped += r.dropped;
	c->st.conflicts += conflict;
	if (res) {
		*res = r;
	}
	return cache_flush(c);
}

KVDEX_EXPORT int
kvdex_cache_lock(struct kvdex_cache *c, const uint64_t *keys, size_t n, size_t *locked)
{
	uint32_t parent = CACHE_NIL;
	size_t i;
	int rc;

	rc = cache_check_call(c, keys, n, 0);
	if (rc || !locked) {
		return rc ? rc : -EINVAL;
	}
	for (i = 0; i < n; i++) {
		uint32_t idx = cache_find(c, keys[i]);

		if (idx == CACHE_NIL || c->nodes[idx].parent != parent) {
			break;
		}
		cache_lock_node(c, idx);
		parent = idx;
	}
	*locked = i;
	return 0;
}

KVDEX_EXPORT int
kvdex_cache_unlock(struct kvdex_cache *c, const uint64_t *keys, size_t n)
{
	int rc;

	rc = cache_check_call(c, keys, n, 0);
	if (rc) {
		return rc;
	}
	if (cache_walk(c, keys, n, NULL) < n) {
		return -ENOENT;
	}
	for (size_t i = 0; i < n; i++) {
		if (c->nodes[cache_find(c, keys[i])].lock_ref == 0) {
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < n; i++) {
		cache_unlock_node(c, cache_find(c, keys[i]));
	}
	return 0;
}

KVDEX_EXPORT int
kvdex_cache_evict(struct kvdex_cache *c, uint64_t nblocks, uint64_t *evicted)
{
	uint64_t got;
	int rc;

	rc = cache_check_call(c, NULL, 0, 0);
	if (rc) {
		return rc;
	}
	if (nblocks > c->size) {
		nblocks = c->size; /* more can never go; keeps the reservation bounded */
	}
	rc = cache_reserve(c, nblocks, 0);
	if (rc) {
		return rc;
	}
	got = cache_run_evict(c, nblocks);
	if (evicted) {
		*evicted = got;
	}
	return cache_flush(c);
}

static void
cache_emit_cleared(struct kvdex_cache *c)
{
	cache_emit(c, KVDEX_EV_ALL_CLEARED)->tier_mask = (uint8_t)(1u << c->opts.tier);
}

KVDEX_EXPORT int
kvdex_cache_clear(struct kvdex_cache *c)
{
	int rc;

	rc = cache_check_call(c, NULL, 0, 0);
	if (rc) {
		return rc;
	}
	if (c->nlocked > 0) {
		return -EBUSY;
	}
	rc = cache_reserve(c, 1, 0);
	if (rc) {
		return rc;
	}
	memset(c->buckets, 0xff, sizeof(*c->buckets) << (64 - c->hash_shift));
	c->used = 0;
	c->free_head = CACHE_NIL;
	c->size = 0;
	c->nleaves = 0;
	c->npool = 0;
	c->ncand = 0;
	c->nmarked = 0;
	c->nmarked_locked = 0;
	cache_emit_cleared(c);
	return cache_flush(c);
}

/* Emit STORED for idx after every not yet emitted ancestor. */
static void
cache_resync_one(struct kvdex_cache *c, uint32_t idx, uint8_t *done, uint32_t *stack)
{
	size_t depth = 0;

	for (uint32_t v = idx; v != CACHE_NIL && !done[v]; v = c->nodes[v].parent) {
		stack[depth++] = v;
	}
	while (depth > 0) {
		uint32_t v = stack[--depth];

		done[v] = 1;
		cache_emit_block(c, KVDEX_EV_STORED, v);
	}
}

KVDEX_EXPORT int
kvdex_cache_resync(struct kvdex_cache *c)
{
	uint32_t *stack;
	uint8_t *done;
	int rc;

	rc = cache_check_call(c, NULL, 0, 0);
	if (rc) {
		return rc;
	}
	rc = cache_reserve(c, (size_t)c->size + 1, 0);
	if (rc) {
		return rc;
	}
	done = calloc(c->used + 1, 1);
	stack = malloc(sizeof(*stack) * (c->size + 1));
	if (!done || !stack) {
		free(done);
		free(stack);
		return -ENOMEM;
	}
	cache_emit_cleared(c);
	for (uint32_t i = 0; i < c->used; i++) {
		if (c->nodes[i].parent != CACHE_FREE) {
			cache_resync_one(c, i, done, stack);
		}
	}
	free(stack);
	free(done);
	return cache_flush(c);
}

KVDEX_EXPORT void
kvdex_cache_stats_get(const struct kvdex_cache *c, struct kvdex_cache_stats *st, size_t size)
{
	struct kvdex_cache_stats s;

	if (!c || !st) {
		return;
	}
	s = c->st;
	s.capacity = c->capacity;
	s.size = c->size;
	s.leaves = c->nleaves;
	s.locked = c->nlocked;
	s.marked = c->nmarked;
	s.candidates = c->rlt ? c->ncand : c->npool;
	s.phase = c->rlt ? c->phase : 0;
	memcpy(st, &s, size < sizeof(s) ? size : sizeof(s));
}

KVDEX_EXPORT int
kvdex_cache_block_info(const struct kvdex_cache *c, uint64_t key, struct kvdex_cache_block *out)
{
	const struct cache_node *n;
	uint32_t idx;

	if (!c || !out) {
		return -EINVAL;
	}
	idx = cache_find(c, key);
	if (idx == CACHE_NIL) {
		return -ENOENT;
	}
	n = &c->nodes[idx];
	memset(out, 0, sizeof(*out));
	out->key = n->key;
	out->has_parent = n->parent != CACHE_NIL;
	out->parent = out->has_parent ? c->nodes[n->parent].key : 0;
	out->atime = n->atime;
	out->lock_ref = n->lock_ref;
	out->children = n->nchildren;
	out->marked = c->rlt && cache_marked(c, n);
	out->candidate = n->pos != CACHE_NIL && (!c->rlt || n->pos < c->ncand);
	return 0;
}

/* ---- validation (tests, debugging) ------------------------------------------ */

#define CACHE_CHECK(cond)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			return -EUCLEAN;                                                           \
		}                                                                                  \
	} while (0)

static int
cache_validate_hash(const struct kvdex_cache *c)
{
	size_t nb = (size_t)1 << (64 - c->hash_shift), seen = 0;

	for (size_t b = 0; b < nb; b++) {
		for (uint32_t i = c->buckets[b]; i != CACHE_NIL; i = c->nodes[i].hnext) {
			CACHE_CHECK(i < c->used && c->nodes[i].parent != CACHE_FREE);
			CACHE_CHECK(cache_bucket(c, c->nodes[i].key) == b);
			CACHE_CHECK(++seen <= c->size);
		}
	}
	CACHE_CHECK(seen == c->size);
	return 0;
}

static int
cache_validate_pool(const struct kvdex_cache *c)
{
	CACHE_CHECK(c->npool <= c->capacity && c->ncand <= c->npool);
	CACHE_CHECK(c->rlt || c->ncand == 0);
	for (uint32_t i = 0; i < c->npool; i++) {
		const struct cache_node *n = &c->nodes[c->pool[i]];

		CACHE_CHECK(c->pool[i] < c->used && n->pos == i);
		CACHE_CHECK(n->parent != CACHE_FREE && n->nchildren == 0 && n->lock_ref == 0);
		if (c->rlt) {
			CACHE_CHECK((i < c->ncand) == !cache_marked(c, n));
		} else if (i > 0) {
			CACHE_CHECK(c->nodes[c->pool[(i - 1) / 2]].atime <= n->atime);
		}
	}
	return 0;
}

/* Per-node checks; children and child lock sums were counted into kids and
 * klocks, the totals go to cnt[]: size, leaves, locked, marked, marked_locked. */
static int
cache_validate_node(const struct kvdex_cache *c, uint32_t i, const uint32_t *kids,
		    const uint64_t *klocks, uint32_t *cnt)
{
	const struct cache_node *n = &c->nodes[i];
	bool marked = cache_marked(c, n);
	bool leaf = n->nchildren == 0;

	CACHE_CHECK(cache_find(c, n->key) == i);
	CACHE_CHECK(n->nchildren == kids[i] && n->lock_ref >= klocks[i]);
	CACHE_CHECK((n->pos != CACHE_NIL) == (leaf && n->lock_ref == 0));
	CACHE_CHECK(!marked || c->rlt);
	if (marked && n->parent != CACHE_NIL) {
		CACHE_CHECK(cache_marked(c, &c->nodes[n->parent]));
	}
	cnt[0]++;
	cnt[1] += leaf;
	cnt[2] += n->lock_ref > 0;
	cnt[3] += marked;
	cnt[4] += marked && n->lock_ref > 0;
	return 0;
}

static int
cache_validate_nodes(const struct kvdex_cache *c, uint32_t *kids, uint64_t *klocks)
{
	uint32_t cnt[5] = {0}, nfree = 0;
	int rc;

	for (uint32_t i = 0; i < c->used; i++) {
		const struct cache_node *n = &c->nodes[i];

		if (n->parent == CACHE_FREE || n->parent == CACHE_NIL) {
			continue;
		}
		CACHE_CHECK(n->parent < c->used && c->nodes[n->parent].parent != CACHE_FREE);
		kids[n->parent]++;
		klocks[n->parent] += n->lock_ref;
	}
	for (uint32_t i = 0; i < c->used; i++) {
		if (c->nodes[i].parent == CACHE_FREE) {
			nfree++;
			continue;
		}
		rc = cache_validate_node(c, i, kids, klocks, cnt);
		if (rc) {
			return rc;
		}
	}
	CACHE_CHECK(cnt[0] == c->size && nfree == c->used - c->size && c->size <= c->capacity);
	CACHE_CHECK(cnt[1] == c->nleaves && cnt[2] == c->nlocked);
	CACHE_CHECK(cnt[3] == c->nmarked && cnt[4] == c->nmarked_locked);
	return 0;
}

KVDEX_EXPORT int
kvdex_cache_validate(const struct kvdex_cache *c)
{
	uint32_t *kids;
	uint64_t *klocks;
	int rc;

	if (!c) {
		return -EINVAL;
	}
	if (c->epoch == 0 || c->used > c->capacity) {
		return -EUCLEAN;
	}
	kids = calloc(c->used + 1, sizeof(*kids));
	klocks = calloc(c->used + 1, sizeof(*klocks));
	rc = -ENOMEM;
	if (kids && klocks) {
		rc = cache_validate_nodes(c, kids, klocks);
	}
	if (!rc) {
		rc = cache_validate_hash(c);
	}
	if (!rc) {
		rc = cache_validate_pool(c);
	}
	free(klocks);
	free(kids);
	return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Synthetic GSP-like workload for the cache manager (cache_workload.h).
 *
 * A request is (group g, question q), both uniform. Its chain is the group's
 * prefix_blocks shared blocks, then the question's suffix, whose length is a
 * hash of (g, q) in [suffix_min, suffix_max]. Block tokens are splitmix64 of
 * (kind, a, b) ^ seed as in research/kvrouting.md §5.2, and keys chain them
 * (key_i = mix(key_{i-1}, token_i)), so equal prefixes give equal keys and
 * nothing else does (up to 64-bit collisions).
 *
 * In-flight requests are a ring of `inflight` chains: a request is inserted
 * with KVDEX_CACHE_LOCK and unlocked when `inflight` newer requests have been
 * inserted, which is how long-running requests pin blocks in a real engine.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/src/cache_workload.h"

struct workload_slot {
	uint64_t *keys;
	size_t nlocked;
};

struct workload_run {
	const struct kvdex_cache_workload *w;
	struct kvdex_cache *c;
	uint64_t rng;
	uint64_t *keys; /* current chain */
	size_t maxlen;
	struct workload_slot *ring;
	uint32_t head; /* oldest in-flight entry */
	uint32_t nring;
	struct kvdex_cache_workload_result res;
};

static uint64_t
wl_mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t
kvdex_cache_workload_key(uint64_t prev, uint64_t token)
{
	return wl_mix(wl_mix(prev) ^ token);
}

static uint64_t
wl_token(uint64_t kind, uint64_t a, uint64_t b, uint64_t seed)
{
	return wl_mix(((kind << 56) | (a << 32) | b) ^ seed);
}

static uint64_t
wl_below(struct workload_run *r, uint64_t bound)
{
	r->rng = wl_mix(r->rng);
	return bound ? r->rng % bound : 0; /* bias < bound / 2^64: irrelevant here */
}

/* Build the chain of (g, q) into r->keys; returns its length. */
static size_t
wl_chain(struct workload_run *r, uint64_t g, uint64_t q)
{
	const struct kvdex_cache_workload *w = r->w;
	uint64_t span = (uint64_t)w->suffix_max - w->suffix_min + 1;
	size_t len = w->suffix_min + wl_token(3, g, q, w->seed) % span;
	uint64_t prev = 0;
	size_t n = 0;

	for (uint32_t i = 0; i < w->prefix_blocks; i++) {
		prev = kvdex_cache_workload_key(prev, wl_token(1, g, i, w->seed));
		r->keys[n++] = prev;
	}
	for (size_t i = 0; i < len; i++) {
		prev = kvdex_cache_workload_key(prev,
						wl_token(2, g * w->questions + q, i, w->seed));
		r->keys[n++] = prev;
	}
	return n;
}

static int
wl_unlock_oldest(struct workload_run *r)
{
	struct workload_slot *s = &r->ring[r->head];
	int rc = kvdex_cache_unlock(r->c, s->keys, s->nlocked);

	r->head = (r->head + 1) % r->w->inflight;
	r->nring--;
	return rc;
}

static int
wl_request(struct workload_run *r, uint64_t i)
{
	const struct kvdex_cache_workload *w = r->w;
	uint64_t g = wl_below(r, w->groups), q = wl_below(r, w->questions);
	unsigned flags = w->inflight ? KVDEX_CACHE_LOCK : 0;
	struct kvdex_cache_result res;
	size_t n = wl_chain(r, g, q), m;
	int rc;

	rc = kvdex_cache_match(r->c, r->keys, n, 0, &m);
	if (!rc) {
		rc = kvdex_cache_insert(r->c, r->keys, n, flags, &res);
	}
	if (rc) {
		return rc;
	}
	r->res.requests++;
	r->res.blocks += n;
	r->res.hit_blocks += m;
	r->res.inserted += res.inserted;
	r->res.evicted += res.evicted;
	r->res.dropped += res.dropped;
	if (w->inflight) {
		struct workload_slot *s;

		if (r->nring == w->inflight) {
			rc = wl_unlock_oldest(r);
			if (rc) {
				return rc;
			}
		}
		s = &r->ring[(r->head + r->nring++) % w->inflight];
		memcpy(s->keys, r->keys, res.locked * sizeof(*s->keys));
		s->nlocked = res.locked;
	}
	return w->step ? w->step(w->step_arg, r->c, i) : 0;
}

static void
wl_free(struct workload_run *r)
{
	if (r->ring) {
		for (uint32_t i = 0; i < r->w->inflight; i++) {
			free(r->ring[i].keys);
		}
	}
	free(r->ring);
	free(r->keys);
}

static int
wl_alloc(struct workload_run *r)
{
	const struct kvdex_cache_workload *w = r->w;

	r->maxlen = (size_t)w->prefix_blocks + w->suffix_max;
	r->keys = calloc(r->maxlen ? r->maxlen : 1, sizeof(*r->keys));
	if (!r->keys) {
		return -ENOMEM;
	}
	if (w->inflight == 0) {
		return 0;
	}
	r->ring = calloc(w->inflight, sizeof(*r->ring));
	if (!r->ring) {
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < w->inflight; i++) {
		r->ring[i].keys = calloc(r->maxlen ? r->maxlen : 1, sizeof(*r->keys));
		if (!r->ring[i].keys) {
			return -ENOMEM;
		}
	}
	return 0;
}

int
kvdex_cache_workload_run(struct kvdex_cache *c, const struct kvdex_cache_workload *w,
			 struct kvdex_cache_workload_result *res)
{
	struct workload_run r = {.w = w, .c = c};
	int rc;

	if (!c || !w || !w->groups || !w->questions || w->suffix_min > w->suffix_max ||
	    w->groups > UINT32_MAX / w->questions) {
		return -EINVAL;
	}
	r.rng = w->seed ^ 0x6b76646578ull; /* its own stream, apart from the keys' */
	rc = wl_alloc(&r);
	for (uint64_t i = 0; !rc && i < w->requests; i++) {
		rc = wl_request(&r, i);
	}
	while (r.nring > 0) {
		int rc2 = wl_unlock_oldest(&r);

		rc = rc ? rc : rc2;
	}
	if (res) {
		*res = r.res;
	}
	wl_free(&r);
	return rc;
}

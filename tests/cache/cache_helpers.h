/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers for the cache manager suites: a recording publish callback and
 * a replay model. The model is an independent set of (key -> parent, number
 * of children) built only from the published events; it checks each event as
 * it applies it (STORED: new key whose parent is present; REMOVED: present
 * key with no present children, i.e. never before its descendants) and can be
 * compared with the cache through the public block_info call.
 *
 * Header-only (static functions) so that every test executable has its own.
 */
#ifndef KVDEX_TESTS_CACHE_HELPERS_H
#define KVDEX_TESTS_CACHE_HELPERS_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvdex/cache.h"

/* ---- replay model: linear probing with backward-shift deletion ----------- */

struct model_ent {
	uint64_t key;
	uint64_t parent;
	uint32_t nchildren;
	bool has_parent;
	bool used;
};

struct model {
	struct model_ent *t;
	size_t mask;
	size_t n;
	char err[160]; /* first violation, "" if none */
};

static __attribute__((unused)) uint64_t
model_hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static __attribute__((unused)) void
model_init(struct model *m, size_t max_entries)
{
	size_t sz = 16;

	while (sz < 4 * max_entries) {
		sz <<= 1;
	}
	memset(m, 0, sizeof(*m));
	m->t = calloc(sz, sizeof(*m->t));
	m->mask = sz - 1;
}

static __attribute__((unused)) void
model_fini(struct model *m)
{
	free(m->t);
	m->t = NULL;
}

static __attribute__((unused)) struct model_ent *
model_find(const struct model *m, uint64_t key)
{
	for (size_t i = model_hash(key) & m->mask;; i = (i + 1) & m->mask) {
		if (!m->t[i].used) {
			return NULL;
		}
		if (m->t[i].key == key) {
			return &m->t[i];
		}
	}
}

static __attribute__((unused)) void
model_put(struct model *m, uint64_t key, bool has_parent, uint64_t parent)
{
	size_t i = model_hash(key) & m->mask;

	while (m->t[i].used) {
		i = (i + 1) & m->mask;
	}
	m->t[i] = (struct model_ent){
		.key = key, .parent = parent, .has_parent = has_parent, .used = true};
	m->n++;
}

static __attribute__((unused)) void
model_del(struct model *m, struct model_ent *e)
{
	size_t i = (size_t)(e - m->t), j = i;

	for (;;) {
		size_t k;

		j = (j + 1) & m->mask;
		if (!m->t[j].used) {
			break;
		}
		k = model_hash(m->t[j].key) & m->mask;
		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
			m->t[i] = m->t[j];
			i = j;
		}
	}
	m->t[i].used = false;
	m->n--;
}

static __attribute__((unused)) void
model_fail(struct model *m, const char *what, uint64_t key)
{
	if (!m->err[0]) {
		snprintf(m->err, sizeof(m->err), "%s (key %#llx)", what, (unsigned long long)key);
	}
}

static __attribute__((unused)) void
model_apply(struct model *m, const struct kvdex_event *ev)
{
	struct model_ent *e = model_find(m, ev->key), *p;

	switch (ev->type) {
	case KVDEX_EV_STORED:
		if (e) {
			model_fail(m, "STORED twice", ev->key);
			return;
		}
		if (ev->flags & KVDEX_EVF_PARENT) {
			p = model_find(m, ev->parent);
			if (!p) {
				model_fail(m, "STORED before its parent", ev->key);
				return;
			}
			p->nchildren++;
		}
		model_put(m, ev->key, ev->flags & KVDEX_EVF_PARENT, ev->parent);
		return;
	case KVDEX_EV_REMOVED:
		if (!e) {
			model_fail(m, "REMOVED a block not stored", ev->key);
			return;
		}
		if (e->nchildren) {
			model_fail(m, "REMOVED before its descendants", ev->key);
			return;
		}
		if (e->has_parent) {
			p = model_find(m, e->parent);
			p->nchildren--;
		}
		model_del(m, e);
		return;
	case KVDEX_EV_ALL_CLEARED:
		memset(m->t, 0, (m->mask + 1) * sizeof(*m->t));
		m->n = 0;
		return;
	default:
		model_fail(m, "unexpected event type", ev->type);
	}
}

/* 0 iff the model and the cache hold the same blocks with the same parents. */
static __attribute__((unused)) int
model_compare(const struct model *m, const struct kvdex_cache *c)
{
	struct kvdex_cache_stats st;

	kvdex_cache_stats_get(c, &st, sizeof(st));
	if (st.size != m->n) {
		return -1;
	}
	for (size_t i = 0; i <= m->mask; i++) {
		const struct model_ent *e = &m->t[i];
		struct kvdex_cache_block b;

		if (!e->used) {
			continue;
		}
		if (kvdex_cache_block_info(c, e->key, &b) != 0 || b.has_parent != e->has_parent ||
		    (e->has_parent && b.parent != e->parent) || b.children != e->nchildren) {
			return -2;
		}
		if (e->has_parent && !model_find(m, e->parent)) {
			return -3; /* prefix closure */
		}
	}
	return 0;
}

/* ---- recording publish callback ------------------------------------------ */

struct rec {
	struct kvdex_event *ev; /* every event, in order */
	size_t n;
	size_t cap;
	size_t calls;
	size_t last_call_n;
	int fail_next;		     /* returned (once) by the next call */
	struct model *model;	     /* events are applied to it, if set */
	struct kvdex_cache *cache;   /* validated and compared at each call, if set */
	int check_rc;		     /* first failure of those checks */
	int (*inner)(struct rec *r); /* extra work inside the callback */
	int inner_rc;
};

static __attribute__((unused)) int
rec_publish(void *arg, const struct kvdex_event *ev, size_t n)
{
	struct rec *r = arg;
	int rc;

	if (r->n + n > r->cap) {
		r->cap = (r->n + n) * 2;
		r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
	}
	memcpy(r->ev + r->n, ev, n * sizeof(*ev));
	r->n += n;
	r->calls++;
	r->last_call_n = n;
	if (r->model) {
		for (size_t i = 0; i < n; i++) {
			model_apply(r->model, &ev[i]);
		}
	}
	if (r->cache && !r->check_rc) {
		r->check_rc = kvdex_cache_validate(r->cache);
		if (!r->check_rc && r->model) {
			r->check_rc = model_compare(r->model, r->cache);
		}
	}
	if (r->inner) {
		r->inner_rc = r->inner(r);
	}
	rc = r->fail_next;
	r->fail_next = 0;
	return rc;
}

static __attribute__((unused)) void
rec_fini(struct rec *r)
{
	free(r->ev);
	memset(r, 0, sizeof(*r));
}

static __attribute__((unused)) struct kvdex_cache *
cache_new(uint64_t cap, enum kvdex_cache_policy pol, enum kvdex_cache_evict_mode mode,
	  uint64_t seed, struct rec *r)
{
	struct kvdex_cache_opts o;
	struct kvdex_cache *c = NULL;

	kvdex_cache_opts_init(&o, sizeof(o));
	o.capacity_blocks = cap;
	o.policy = pol;
	o.evict_mode = mode;
	o.seed = seed;
	o.ns = 7;
	o.tier = KVDEX_HOST;
	o.publish = r ? rec_publish : NULL;
	o.publish_arg = r;
	if (kvdex_cache_create(&o, &c) != 0) {
		return NULL;
	}
	if (r) {
		r->cache = c;
	}
	return c;
}

static __attribute__((unused)) bool
cached(const struct kvdex_cache *c, uint64_t key)
{
	struct kvdex_cache_block b;

	return kvdex_cache_block_info(c, key, &b) == 0;
}

static __attribute__((unused)) bool
gone(const struct kvdex_cache *c, uint64_t key)
{
	return !cached(c, key);
}

static __attribute__((unused)) struct kvdex_cache_block
binfo(const struct kvdex_cache *c, uint64_t key)
{
	struct kvdex_cache_block b;

	memset(&b, 0, sizeof(b));
	kvdex_cache_block_info(c, key, &b);
	return b;
}

static __attribute__((unused)) struct kvdex_cache_stats
cstats(const struct kvdex_cache *c)
{
	struct kvdex_cache_stats st;

	kvdex_cache_stats_get(c, &st, sizeof(st));
	return st;
}

#endif /* KVDEX_TESTS_CACHE_HELPERS_H */

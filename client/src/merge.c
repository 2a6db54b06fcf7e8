/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pure half of a lookup (DESIGN §5 steps 5-6): from the validated bucket
 * images of each block of a chain and the validated worker rows of the server
 * each came from, compute how much of the chain each (worker, dp rank) holds.
 * No I/O: lookup.c feeds it, tests feed it synthetic images.
 *
 * Per block:
 *   - every record of the chain with the block's key and the server's ns id
 *     is merged (a block with many holders spans several records);
 *   - FUSED records never satisfy an exact match; they only set
 *     result.fused when nothing else holds the block;
 *   - a holder counts only if its slot is a LIVE row, its epoch equals the
 *     row's epoch for its tier, and (speculative) it has not expired at the
 *     clock of the header read with the images;
 *   - holders are mapped slot -> (worker_id, dp_rank) and folded per worker:
 *     fastest tier, and whether any copy is non-speculative.
 * Across blocks, in chain order:
 *   - workers holding block 0 start with matched = 1; a worker stays alive
 *     while it holds every block so far; its first missing block freezes it.
 *   - tier_blocks[t] counts matched blocks whose fastest tier held was t;
 *     spec_blocks counts matched blocks held only speculatively (their
 *     speculative tier is still counted in tier_blocks, so the tiers sum to
 *     matched).
 */
#include "client/src/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

void
kvdex_merge_init(struct kvdex_merge *m, unsigned flags)
{
	memset(m, 0, sizeof(*m));
	m->flags = flags;
}

void
kvdex_merge_fini(struct kvdex_merge *m)
{
	if (m == NULL) {
		return;
	}
	free(m->w);
	free(m->cur);
	memset(m, 0, sizeof(*m));
}

static int
merge_grow(struct kvdex_merge_worker **arr, unsigned *cap, unsigned need)
{
	struct kvdex_merge_worker *n;
	unsigned ncap;

	if (need <= *cap) {
		return 0;
	}
	ncap = *cap != 0 ? *cap * 2 : 16;
	while (ncap < need) {
		ncap *= 2;
	}
	n = realloc(*arr, ncap * sizeof(*n));
	if (n == NULL) {
		return -ENOMEM;
	}
	*arr = n;
	*cap = ncap;
	return 0;
}

static struct kvdex_merge_worker *
merge_find(struct kvdex_merge_worker *arr, unsigned n, uint32_t worker_id, uint16_t dp_rank)
{
	for (unsigned i = 0; i < n; i++) {
		if (arr[i].worker_id == worker_id && arr[i].dp_rank == dp_rank) {
			return &arr[i];
		}
	}
	return NULL;
}

/* The row of a holder that is visible now, or NULL. */
static const struct kvdex_worker_row *
merge_visible(const struct kvdex_merge *m, const struct kvdex_merge_srv *srv,
	      const struct kvdex_holder *h)
{
	const struct kvdex_worker_row *row;

	if ((h->bits & KVDEX_H_SPEC) && (m->flags & KVDEX_LOOKUP_NO_SPECULATIVE)) {
		return NULL;
	}
	if (h->slot >= srv->nrows) {
		return NULL;
	}
	row = &srv->rows[h->slot];
	if (row->state != KVDEX_ROW_LIVE || row->worker_id == 0) {
		return NULL;
	}
	if (!kvdex_holder_live(h, row->epoch[kvdex_holder_tier(h)], srv->now_ticks)) {
		return NULL;
	}
	return row;
}

/*
 * Fold one holder into the current block's per-worker set. In `cur`,
 * tier_blocks[0] holds the fastest tier seen and spec_blocks is 1 while every
 * copy seen is speculative.
 */
static int
merge_holder(struct kvdex_merge *m, const struct kvdex_merge_srv *srv, const struct kvdex_holder *h)
{
	const struct kvdex_worker_row *row = merge_visible(m, srv, h);
	struct kvdex_merge_worker *w;
	unsigned tier = kvdex_holder_tier(h);
	bool spec = (h->bits & KVDEX_H_SPEC) != 0;

	if (row == NULL) {
		return 0;
	}
	w = merge_find(m->cur, m->ncur, row->worker_id, row->dp_rank);
	if (w == NULL) {
		if (merge_grow(&m->cur, &m->capcur, m->ncur + 1) < 0) {
			return -ENOMEM;
		}
		w = &m->cur[m->ncur++];
		memset(w, 0, sizeof(*w));
		w->worker_id = row->worker_id;
		w->dp_rank = row->dp_rank;
		w->tier_blocks[0] = tier;
		w->spec_blocks = spec;
		w->load = (uint64_t)row->queued + row->running;
		return 0;
	}
	if (tier < w->tier_blocks[0]) {
		w->tier_blocks[0] = tier;
	}
	if (!spec) {
		w->spec_blocks = 0;
	}
	return 0;
}

/* Fold one record of the block's chain, if it is the block's. */
static int
merge_record(struct kvdex_merge *m, const struct kvdex_merge_block *b,
	     const struct kvdex_record_view *rec, bool *fused)
{
	const struct kvdex_merge_srv *srv = b->srv;

	if (rec->hdr.key != b->key || rec->hdr.ns != srv->ns_id) {
		return 0;
	}
	for (unsigned j = 0; j < rec->hdr.nholders; j++) {
		struct kvdex_holder h;
		int rc;

		memcpy(&h, &rec->holders[j], sizeof(h));
		if (rec->hdr.flags & KVDEX_REC_FUSED) {
			/* Never an exact match; only noted. */
			*fused |= merge_visible(m, srv, &h) != NULL;
			continue;
		}
		rc = merge_holder(m, srv, &h);
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

/* Collect the live holders of one block into m->cur. *fused is set when a
 * FUSED record of the block has a live holder. */
static int
merge_collect(struct kvdex_merge *m, const struct kvdex_merge_block *b, bool *fused)
{
	const struct kvdex_merge_srv *srv = b->srv;
	struct kvdex_record_view rec;
	int rc;

	m->ncur = 0;
	*fused = false;
	if (srv == NULL || srv->ns_id == KVDEX_NS_NONE) {
		return 0;
	}
	if (b->recs_known) {
		/* Known positions: decode just those records. */
		for (unsigned i = 0; i < b->nrecs; i++) {
			size_t pos = b->rec_pos[i];

			rc = kvdex_record_next(b->rec_img[i], srv->bucket_size, &pos, &rec);
			if (rc != 1) {
				return -EPROTO;
			}
			rc = merge_record(m, b, &rec, fused);
			if (rc < 0) {
				return rc;
			}
		}
		return 0;
	}
	for (unsigned i = 0; i < b->nimgs; i++) {
		size_t pos = 0;

		while ((rc = kvdex_record_next(b->imgs[i], srv->bucket_size, &pos, &rec)) == 1) {
			rc = merge_record(m, b, &rec, fused);
			if (rc < 0) {
				return rc;
			}
		}
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

static void
merge_count(struct kvdex_merge_worker *w, const struct kvdex_merge_worker *cur)
{
	w->matched++;
	w->tier_blocks[cur->tier_blocks[0]]++;
	w->spec_blocks += cur->spec_blocks;
}

static int
merge_first_block(struct kvdex_merge *m)
{
	if (merge_grow(&m->w, &m->capw, m->ncur) < 0) {
		return -ENOMEM;
	}
	for (unsigned i = 0; i < m->ncur; i++) {
		struct kvdex_merge_worker *w = &m->w[m->nw++];

		memset(w, 0, sizeof(*w));
		w->worker_id = m->cur[i].worker_id;
		w->dp_rank = m->cur[i].dp_rank;
		w->load = m->cur[i].load;
		w->alive = true;
		merge_count(w, &m->cur[i]);
	}
	return 0;
}

int
kvdex_merge_add(struct kvdex_merge *m, const struct kvdex_merge_block *b)
{
	bool fused;
	int rc;

	rc = merge_collect(m, b, &fused);
	if (rc < 0) {
		return rc;
	}
	if (fused && m->ncur == 0 && m->fused == 0) {
		m->fused = m->pos + 1;
	}
	if (m->pos++ == 0) {
		return merge_first_block(m);
	}
	for (unsigned i = 0; i < m->nw; i++) {
		struct kvdex_merge_worker *w = &m->w[i];
		const struct kvdex_merge_worker *c;

		if (!w->alive) {
			continue;
		}
		c = merge_find(m->cur, m->ncur, w->worker_id, w->dp_rank);
		if (c == NULL) {
			w->alive = false;
			continue;
		}
		merge_count(w, c);
	}
	return 0;
}

bool
kvdex_merge_alive(const struct kvdex_merge *m)
{
	if (m->pos == 0) {
		return true;
	}
	for (unsigned i = 0; i < m->nw; i++) {
		if (m->w[i].alive) {
			return true;
		}
	}
	return false;
}

static int
merge_cmp(const void *pa, const void *pb)
{
	const struct kvdex_merge_worker *a = pa, *b = pb;

	if (a->matched != b->matched) {
		return a->matched > b->matched ? -1 : 1;
	}
	if (a->tier_blocks[KVDEX_GPU] != b->tier_blocks[KVDEX_GPU]) {
		return a->tier_blocks[KVDEX_GPU] > b->tier_blocks[KVDEX_GPU] ? -1 : 1;
	}
	if (a->load != b->load) {
		return a->load < b->load ? -1 : 1;
	}
	if (a->worker_id != b->worker_id) {
		return a->worker_id < b->worker_id ? -1 : 1;
	}
	return a->dp_rank < b->dp_rank ? -1 : (a->dp_rank > b->dp_rank);
}

static uint16_t
sat16(uint32_t v)
{
	return v > UINT16_MAX ? UINT16_MAX : (uint16_t)v;
}

void
kvdex_merge_finish(struct kvdex_merge *m, struct kvdex_lookup_result *res)
{
	uint32_t longest = 0;

	if (m->nw > 1) {
		qsort(m->w, m->nw, sizeof(m->w[0]), merge_cmp);
	}
	res->nholdings_total = m->nw;
	res->nholdings = 0;
	for (unsigned i = 0; i < m->nw; i++) {
		const struct kvdex_merge_worker *w = &m->w[i];

		if (w->matched > longest) {
			longest = w->matched;
		}
		if (i < res->cap) {
			struct kvdex_holding *h = &res->holdings[i];

			memset(h, 0, sizeof(*h));
			h->worker_id = w->worker_id;
			h->dp_rank = w->dp_rank;
			h->matched = sat16(w->matched);
			for (unsigned t = 0; t < KVDEX_NTIERS; t++) {
				h->tier_blocks[t] = sat16(w->tier_blocks[t]);
			}
			h->spec_blocks = sat16(w->spec_blocks);
			res->nholdings++;
		}
	}
	res->best = res->nholdings > 0 ? 0 : -1;
	res->longest = longest;
	res->fused = m->fused;
}

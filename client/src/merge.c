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
	memset(m, 0, sizeof(*m));
}

/* The row of a holder that is visible now, or NULL. */
static inline const struct kvdex_worker_row *
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

/* A (worker, rank) seen holding block 0: alive, appended. */
static struct kvdex_merge_worker *
merge_new(struct kvdex_merge *m, const struct kvdex_worker_row *row)
{
	struct kvdex_merge_worker *w;

	if (m->nw == m->capw) {
		unsigned ncap = m->capw != 0 ? m->capw * 2 : 16;

		w = realloc(m->w, ncap * sizeof(*w));
		if (w == NULL) {
			return NULL;
		}
		m->w = w;
		m->capw = ncap;
	}
	w = &m->w[m->nw++];
	m->nalive++;
	memset(w, 0, sizeof(*w));
	w->worker_id = row->worker_id;
	w->dp_rank = row->dp_rank;
	w->alive = true;
	w->load = (uint64_t)row->queued + row->running;
	return w;
}

/* Count the last block w was seen holding: blocks are counted one late,
 * once the fastest tier it holds them in is known. */
static void
merge_fold(struct kvdex_merge_worker *w)
{
	w->matched++;
	w->tier_blocks[w->blk_tier]++;
	w->spec_blocks += w->blk_spec;
}

/*
 * Note that a visible exact holder has block m->pos. Only a worker alive so
 * far can gain from it; at block 0 every holder starts alive. A worker can
 * hold a block in several tiers and records: keep its fastest tier, and
 * whether every copy is speculative.
 */
static int
merge_holder(struct kvdex_merge *m, const struct kvdex_worker_row *row,
	     const struct kvdex_holder *h)
{
	struct kvdex_merge_worker *w = NULL;
	unsigned tier = kvdex_holder_tier(h);
	bool spec = (h->bits & KVDEX_H_SPEC) != 0;

	for (unsigned i = 0; i < m->nalive; i++) {
		if (m->w[i].worker_id == row->worker_id && m->w[i].dp_rank == row->dp_rank) {
			w = &m->w[i];
			break;
		}
	}
	if (w == NULL) {
		if (m->pos != 0) {
			return 0;
		}
		w = merge_new(m, row);
		if (w == NULL) {
			return -ENOMEM;
		}
	}
	if (w->blk_pos != m->pos + 1) {
		/* First copy of this block: the previous one is complete. */
		if (w->blk_pos != 0) {
			merge_fold(w);
		}
		w->blk_pos = m->pos + 1;
		w->blk_tier = tier;
		w->blk_spec = spec;
		m->blk_seen++;
		return 0;
	}
	if (tier < w->blk_tier) {
		w->blk_tier = tier;
	}
	if (!spec) {
		w->blk_spec = false;
	}
	return 0;
}

void
kvdex_merge_begin(struct kvdex_merge *m)
{
	m->blk_exact = 0;
	m->blk_fused = false;
	m->blk_seen = 0;
}

int
kvdex_merge_record(struct kvdex_merge *m, const struct kvdex_merge_srv *srv,
		   const struct kvdex_record_view *rec)
{
	const struct kvdex_holder *h = rec->holders;

	for (unsigned j = 0; j < rec->hdr.nholders; j++) {
		const struct kvdex_worker_row *row = merge_visible(m, srv, &h[j]);
		int rc;

		if (row == NULL) {
			continue;
		}
		if (rec->hdr.flags & KVDEX_REC_FUSED) {
			/* Never an exact match; only noted. */
			m->blk_fused = true;
			continue;
		}
		m->blk_exact++;
		rc = merge_holder(m, row, &h[j]);
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

void
kvdex_merge_end(struct kvdex_merge *m)
{
	if (m->blk_fused && m->blk_exact == 0 && m->fused == 0) {
		m->fused = m->pos + 1;
	}
	/* Alive workers that lack this block stop here: their last block is
	 * counted and they move past w[nalive) (the order is restored at
	 * finish). When every alive worker was seen, nobody stops. */
	for (unsigned i = 0; m->blk_seen != m->nalive && i < m->nalive;) {
		struct kvdex_merge_worker *w = &m->w[i];
		struct kvdex_merge_worker t;

		if (w->blk_pos == m->pos + 1) {
			i++;
			continue;
		}
		t = *w;
		merge_fold(&t);
		t.alive = false;
		*w = m->w[--m->nalive];
		m->w[m->nalive] = t;
	}
	m->pos++;
}

int
kvdex_merge_add(struct kvdex_merge *m, const struct kvdex_merge_block *b)
{
	const struct kvdex_merge_srv *srv = b->srv;
	struct kvdex_record_view rec;
	int rc;

	kvdex_merge_begin(m);
	for (unsigned i = 0; srv != NULL && srv->ns_id != KVDEX_NS_NONE && i < b->nimgs; i++) {
		size_t pos = 0;

		while ((rc = kvdex_record_next(b->imgs[i], srv->bucket_size, &pos, &rec)) == 1) {
			if (rec.hdr.key != b->key || rec.hdr.ns != srv->ns_id) {
				continue;
			}
			rc = kvdex_merge_record(m, srv, &rec);
			if (rc < 0) {
				return rc;
			}
		}
		if (rc < 0) {
			return rc;
		}
	}
	kvdex_merge_end(m);
	return 0;
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

	/* The workers still alive hold the last block merged: count it. */
	for (unsigned i = 0; i < m->nalive; i++) {
		merge_fold(&m->w[i]);
	}
	m->nalive = 0;
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

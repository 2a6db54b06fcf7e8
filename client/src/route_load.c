/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker load table as readers see it: rows of each server's worker
 * table (validated by lookup.c, read one-sidedly like buckets), with the age
 * of each load computed from the clock of the header read with them.
 *
 * Workers report their load to every server, so each server has a copy; a
 * reader takes, per (worker, dp rank), the copy with the smallest age.
 * Ages have the header clock's resolution (1/16 s) and count from the header
 * read with the rows, so a row read at tick k with load_ticks k is "0 ms".
 *
 * Locking: none (the client's thread).
 */
#include "client/src/route_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint32_t
kvdex_route_row_age(const struct kvdex_worker_row *row, uint32_t now_ticks)
{
	int32_t d;

	if (row->load_ticks == 0) {
		return KVDEX_LOAD_AGE_NEVER;
	}
	d = (int32_t)(now_ticks - row->load_ticks);
	if (d <= 0) {
		return 0;
	}
	return (uint32_t)((uint64_t)d * 1000u / KVDEX_TICKS_PER_SEC);
}

static bool
row_live(const struct kvdex_worker_row *row)
{
	return row->state == KVDEX_ROW_LIVE && row->worker_id != 0;
}

static void
load_from_row(const struct kvdex_worker_row *row, struct kvdex_load *l)
{
	l->queued = row->queued;
	l->running = row->running;
	l->prefill_tokens = row->prefill_tokens;
	l->kv_util_permille = row->kv_util_permille;
}

/*
 * Candidates' loads from the rows every server's cache holds (a lookup with
 * KVDEX_LOOKUP_FRESH_LOADS has just refreshed those it read). O(rows x
 * candidates): both are small next to a lookup's cost at the sizes routed
 * today (tens of workers).
 */
void
kvdex_route_fill_loads(const struct kvdex_client *c, struct kvdex_route_cand *cand, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		memset(&cand[i].load, 0, sizeof(cand[i].load));
		cand[i].load_age_ms = KVDEX_LOAD_AGE_NEVER;
	}
	for (unsigned s = 0; s < c->nsrv; s++) {
		const struct kvdex_server *sv = &c->srv[s];

		if (!sv->rows_valid) {
			continue;
		}
		for (uint32_t k = 0; k < sv->nrows; k++) {
			const struct kvdex_worker_row *row = &sv->rows[k];
			uint32_t age;

			if (!row_live(row)) {
				continue;
			}
			age = kvdex_route_row_age(row, sv->rows_clock);
			for (size_t i = 0; i < n; i++) {
				if (cand[i].worker_id == row->worker_id &&
				    cand[i].dp_rank == row->dp_rank &&
				    (age < cand[i].load_age_ms ||
				     cand[i].load_age_ms == KVDEX_LOAD_AGE_NEVER)) {
					load_from_row(row, &cand[i].load);
					cand[i].load_age_ms = age;
				}
			}
		}
	}
}

static int
wl_cmp(const void *pa, const void *pb)
{
	const struct kvdex_worker_load_row *a = pa, *b = pb;

	if (a->worker_id != b->worker_id) {
		return a->worker_id < b->worker_id ? -1 : 1;
	}
	return (a->dp_rank > b->dp_rank) - (a->dp_rank < b->dp_rank);
}

/* Merge server s's rows into acc[0, *n) (growing it): keep the freshest. */
static int
wl_merge(const struct kvdex_server *sv, struct kvdex_worker_load_row **acc, size_t *n, size_t *cap)
{
	for (uint32_t k = 0; k < sv->nrows; k++) {
		const struct kvdex_worker_row *row = &sv->rows[k];
		struct kvdex_worker_load_row *o = NULL;
		uint32_t age;

		if (!row_live(row)) {
			continue;
		}
		age = kvdex_route_row_age(row, sv->rows_clock);
		for (size_t j = 0; j < *n && o == NULL; j++) {
			if ((*acc)[j].worker_id == row->worker_id &&
			    (*acc)[j].dp_rank == row->dp_rank) {
				o = &(*acc)[j];
			}
		}
		if (o == NULL) {
			if (*n == *cap) {
				size_t nc = *cap != 0 ? *cap * 2 : 64;
				struct kvdex_worker_load_row *p = realloc(*acc, nc * sizeof(*p));

				if (p == NULL) {
					return -ENOMEM;
				}
				*acc = p;
				*cap = nc;
			}
			o = &(*acc)[(*n)++];
			memset(o, 0, sizeof(*o));
			o->worker_id = row->worker_id;
			o->dp_rank = row->dp_rank;
			o->dp_size = row->dp_size;
			o->load_age_ms = KVDEX_LOAD_AGE_NEVER;
		}
		if (o->load_age_ms == KVDEX_LOAD_AGE_NEVER || age < o->load_age_ms) {
			load_from_row(row, &o->load);
			o->load_age_ms = age;
		}
	}
	return 0;
}

KVDEX_EXPORT int
kvdex_workers_read(struct kvdex_client *c, unsigned flags, struct kvdex_worker_load_row *out,
		   size_t cap)
{
	struct kvdex_worker_load_row *acc = NULL;
	size_t n = 0, acap = 0;
	int rc = 0;

	if (c == NULL || (out == NULL && cap > 0)) {
		return -EINVAL;
	}
	c->last_error[0] = '\0';
	for (unsigned s = 0; s < c->nsrv && rc == 0; s++) {
		if (!(flags & KVDEX_WORKERS_CACHED)) {
			rc = kvdex_lookup_read_rows(c, s, NULL, NULL);
		}
		if (rc == 0 && c->srv[s].rows_valid) {
			rc = wl_merge(&c->srv[s], &acc, &n, &acap);
		}
	}
	if (rc == 0) {
		if (n > 1) {
			qsort(acc, n, sizeof(*acc), wl_cmp);
		}
		if (n > 0 && cap > 0) {
			memcpy(out, acc, (n < cap ? n : cap) * sizeof(*acc));
		}
		rc = n > INT32_MAX ? INT32_MAX : (int)n;
	}
	free(acc);
	return rc;
}

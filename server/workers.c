/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Worker table (see workers.h, docs/DESIGN.md §3.7).
 *
 * Slots are handed out contiguously per worker from a bump counter that is
 * also the header's workers_hwm, so a worker's ranks are rows
 * [first_slot, first_slot + dp_size). Each row write builds the image from
 * the row in the region (the writer is its only writer), changes it, bumps
 * its version, seals it with its offset and copies it back.
 *
 * Locking: the writer is the only updater of the hash table; lookups take
 * the RCU read lock. Entries are freed only at destroy, after rcu_barrier().
 */
#include "server/workers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>
#include <urcu/rculfhash.h>
#include <xxhash.h>

#include "common/log.h"

#define LOG_COMP "server.workers"

struct kvdex_worker {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	uint32_t worker_id;
	uint32_t dp_size;
	uint32_t first_slot;
};

struct kvdex_workers {
	struct kvdex_region *rg;
	struct kvdex_index *ix;
	struct cds_lfht *ht;
	uint32_t nslots;
	uint32_t next_slot;
	uint32_t nworkers;
};

static unsigned long
worker_hash(uint32_t id)
{
	return (unsigned long)XXH3_64bits(&id, sizeof(id));
}

static int
worker_match(struct cds_lfht_node *node, const void *key)
{
	const struct kvdex_worker *w = caa_container_of(node, struct kvdex_worker, node);

	return w->worker_id == *(const uint32_t *)key;
}

int
kvdex_workers_create(struct kvdex_region *rg, struct kvdex_index *ix, uint32_t nslots,
		     struct kvdex_workers **out)
{
	struct kvdex_workers *wt = calloc(1, sizeof(*wt));

	if (wt == NULL) {
		return -ENOMEM;
	}
	wt->rg = rg;
	wt->ix = ix;
	wt->nslots = nslots;
	wt->ht = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	if (wt->ht == NULL) {
		free(wt);
		return -ENOMEM;
	}
	*out = wt;
	return 0;
}

static void
worker_free_rcu(struct rcu_head *head)
{
	free(caa_container_of(head, struct kvdex_worker, rcu));
}

void
kvdex_workers_destroy(struct kvdex_workers *wt)
{
	struct cds_lfht_iter it;
	struct kvdex_worker *w;

	if (wt == NULL) {
		return;
	}
	rcu_read_lock();
	cds_lfht_for_each_entry(wt->ht, &it, w, node)
	{
		if (cds_lfht_del(wt->ht, &w->node) == 0) {
			call_rcu(&w->rcu, worker_free_rcu);
		}
	}
	rcu_read_unlock();
	rcu_barrier();
	cds_lfht_destroy(wt->ht, NULL);
	free(wt);
}

static struct kvdex_worker *
worker_find(struct kvdex_workers *wt, uint32_t id)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;

	/* Entries are never removed while the server runs, so the pointer
	 * stays valid after the read-side section. */
	rcu_read_lock();
	cds_lfht_lookup(wt->ht, worker_hash(id), worker_match, &id, &it);
	node = cds_lfht_iter_get_node(&it);
	rcu_read_unlock();
	return node != NULL ? caa_container_of(node, struct kvdex_worker, node) : NULL;
}

static struct kvdex_worker_row *
row_ptr(const struct kvdex_workers *wt, uint32_t slot)
{
	return kvdex_region_ptr(wt->rg, kvdex_row_offset(&wt->rg->hdr, slot));
}

static void
row_write(struct kvdex_workers *wt, uint32_t slot, struct kvdex_worker_row *row)
{
	uint64_t off = kvdex_row_offset(&wt->rg->hdr, slot);

	row->version++;
	kvdex_block_seal(row, sizeof(*row), wt->rg->hdr.hash_seed, off);
	memcpy(row_ptr(wt, slot), row, sizeof(*row));
}

static void
row_set_addr(struct kvdex_worker_row *row, const char *addr)
{
	memset(row->addr, 0, sizeof(row->addr));
	memcpy(row->addr, addr, strnlen(addr, KVDEX_ADDR_MAX - 1));
}

static void
rows_init(struct kvdex_workers *wt, const struct kvdex_worker *w, const char *addr)
{
	for (uint32_t r = 0; r < w->dp_size; r++) {
		struct kvdex_worker_row row;
		uint32_t slot = w->first_slot + r;

		memset(&row, 0, sizeof(row));
		row.worker_id = w->worker_id;
		row.state = KVDEX_ROW_LIVE;
		row.dp_rank = (uint16_t)r;
		row.dp_size = (uint16_t)w->dp_size;
		for (unsigned t = 0; t < KVDEX_NR_TIERS; t++) {
			row.epoch[t] = kvdex_index_epoch(wt->ix, (uint16_t)slot, t);
		}
		row_set_addr(&row, addr);
		row_write(wt, slot, &row);
	}
}

/* Re-register: rewrite the rows if the address changed. */
static bool
rows_update_addr(struct kvdex_workers *wt, const struct kvdex_worker *w, const char *addr)
{
	struct kvdex_worker_row row;
	char want[KVDEX_ADDR_MAX] = {0};

	memcpy(want, addr, strnlen(addr, KVDEX_ADDR_MAX - 1));
	kvdex_workers_row(wt, (uint16_t)w->first_slot, &row);
	if (memcmp(row.addr, want, sizeof(want)) == 0) {
		return false;
	}
	for (uint32_t r = 0; r < w->dp_size; r++) {
		kvdex_workers_row(wt, (uint16_t)(w->first_slot + r), &row);
		row_set_addr(&row, addr);
		row_write(wt, w->first_slot + r, &row);
	}
	return true;
}

static void
hdr_workers_changed(struct kvdex_workers *wt)
{
	wt->rg->hdr.workers_hwm = wt->next_slot;
	wt->rg->hdr.workers_version++;
	kvdex_region_publish_hdr(wt->rg);
}

int
kvdex_workers_register(struct kvdex_workers *wt, uint32_t worker_id, const char *addr,
		       uint32_t dp_size, uint32_t *first_slot)
{
	struct kvdex_worker *w;

	if (worker_id == 0 || dp_size == 0 || dp_size > KVDEX_DP_SIZE_MAX ||
	    strlen(addr) >= KVDEX_ADDR_MAX) {
		return -EINVAL;
	}
	w = worker_find(wt, worker_id);
	if (w != NULL) {
		if (w->dp_size != dp_size) {
			return -EEXIST;
		}
		if (rows_update_addr(wt, w, addr)) {
			hdr_workers_changed(wt);
		}
		*first_slot = w->first_slot;
		return 0;
	}
	if (dp_size > wt->nslots - wt->next_slot) {
		return -ENOSPC;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		return -ENOMEM;
	}
	w->worker_id = worker_id;
	w->dp_size = dp_size;
	w->first_slot = wt->next_slot;
	cds_lfht_node_init(&w->node);
	rcu_read_lock();
	cds_lfht_add(wt->ht, worker_hash(worker_id), &w->node);
	rcu_read_unlock();
	wt->next_slot += dp_size;
	wt->nworkers++;
	rows_init(wt, w, addr);
	hdr_workers_changed(wt);
	*first_slot = w->first_slot;
	KVDEX_LOG_INFO(LOG_COMP, "worker %u (%s) registered: dp_size %u, slots %u..%u", worker_id,
		       addr, dp_size, w->first_slot, w->first_slot + dp_size - 1);
	return 0;
}

int
kvdex_workers_slot(struct kvdex_workers *wt, uint32_t worker_id, uint32_t dp_rank, uint16_t *slot)
{
	struct kvdex_worker *w = worker_find(wt, worker_id);

	if (w == NULL) {
		return -ESRCH;
	}
	if (dp_rank >= w->dp_size) {
		return -ERANGE;
	}
	*slot = (uint16_t)(w->first_slot + dp_rank);
	return 0;
}

void
kvdex_workers_clear(struct kvdex_workers *wt, uint16_t slot, unsigned tier_mask)
{
	struct kvdex_worker_row row;

	kvdex_index_bump_epochs(wt->ix, slot, tier_mask);
	kvdex_workers_row(wt, slot, &row);
	for (unsigned t = 0; t < KVDEX_NR_TIERS; t++) {
		row.epoch[t] = kvdex_index_epoch(wt->ix, slot, t);
	}
	row_write(wt, slot, &row);
	hdr_workers_changed(wt);
}

void
kvdex_workers_set_load(struct kvdex_workers *wt, uint16_t slot,
		       const struct kvdex_worker_load *load, uint32_t now_ticks)
{
	struct kvdex_worker_row row;

	kvdex_workers_row(wt, slot, &row);
	row.queued = load->queued;
	row.running = load->running;
	row.prefill_tokens = load->prefill_tokens;
	row.kv_util_permille =
		(uint16_t)(load->kv_util_permille > 1000 ? 1000 : load->kv_util_permille);
	/* 0 means "never reported", so a report at tick 0 says 1. */
	row.load_ticks = now_ticks != 0 ? now_ticks : 1;
	row_write(wt, slot, &row);
}

void
kvdex_workers_row(const struct kvdex_workers *wt, uint16_t slot, struct kvdex_worker_row *row)
{
	memcpy(row, row_ptr(wt, slot), sizeof(*row));
}

uint32_t
kvdex_workers_count(const struct kvdex_workers *wt)
{
	return wt->nworkers;
}

uint32_t
kvdex_workers_slots_used(const struct kvdex_workers *wt)
{
	return wt->next_slot;
}

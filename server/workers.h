/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker table: registered workers (cds_lfht keyed by worker id) and
 * their slots (rows of the region's worker table, one per dp rank).
 *
 * Rows are validated blocks (sealed with hash_seed ^ row offset) rewritten
 * whole by the writer; their tier epochs mirror the index's. Register,
 * address changes and epoch bumps bump the header's workers_version; load
 * reports do not (clients re-read rows only when the version moves).
 *
 * Context: writer thread for every call except the RCU lookups done by
 * stats readers (none today). Slots are never freed.
 */
#ifndef KVDEX_SERVER_WORKERS_H
#define KVDEX_SERVER_WORKERS_H

#include <stdbool.h>
#include <stdint.h>

#include "server/index.h"
#include "server/region.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_DP_SIZE_MAX 256u

struct kvdex_workers;

struct kvdex_worker_load {
	uint32_t queued;
	uint32_t running;
	uint64_t prefill_tokens;
	uint32_t kv_util_permille;
};

/*
 * @param nslots  rows available (<= the region's workers_cap, <= 65535)
 * @return 0, -ENOMEM. Context: main thread.
 * Ownership: rg and ix are borrowed and outlive the table.
 */
int kvdex_workers_create(struct kvdex_region *rg, struct kvdex_index *ix, uint32_t nslots,
			 struct kvdex_workers **out);

/* Free the table (call after the RCU readers are gone). Accepts NULL. */
void kvdex_workers_destroy(struct kvdex_workers *wt);

/*
 * Register (or re-register) a worker.
 * @return 0 with *first_slot set, -EINVAL (bad id, dp_size or address),
 *         -EEXIST (registered with another dp_size), -ENOSPC (no rows left),
 *         -ENOMEM.
 */
int kvdex_workers_register(struct kvdex_workers *wt, uint32_t worker_id, const char *addr,
			   uint32_t dp_size, uint32_t *first_slot);

/* Slot of (worker, dp_rank): 0, -ESRCH (unknown worker), -ERANGE (rank). */
int kvdex_workers_slot(struct kvdex_workers *wt, uint32_t worker_id, uint32_t dp_rank,
		       uint16_t *slot);

/* Bump the epochs of a slot's tiers (0 = all), rewrite its row, publish. */
void kvdex_workers_clear(struct kvdex_workers *wt, uint16_t slot, unsigned tier_mask);

/* Record a load report in the slot's row (no workers_version bump). */
void kvdex_workers_set_load(struct kvdex_workers *wt, uint16_t slot,
			    const struct kvdex_worker_load *load, uint32_t now_ticks);

/* Copy of a row as written in the region. */
void kvdex_workers_row(const struct kvdex_workers *wt, uint16_t slot, struct kvdex_worker_row *row);

uint32_t kvdex_workers_count(const struct kvdex_workers *wt);
uint32_t kvdex_workers_slots_used(const struct kvdex_workers *wt);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_WORKERS_H */

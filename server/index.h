/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The index writer: the only code that mutates bucket tables in the region.
 *
 * Every change is "decode one chain, change one logical entry, drop the dead
 * holders met on the way, repack, restamp chain_seq, seal, write overflow
 * buckets then the home bucket" (docs/DESIGN.md §3.3-3.7). The index also
 * owns the per-slot tier epochs (the worker table mirrors them in its rows),
 * the speculative-expiry wheel, the incremental sweep and resizes.
 *
 * Context: everything here runs on the writer thread (or a test's thread);
 * nothing is locked and nothing blocks.
 */
#ifndef KVDEX_SERVER_INDEX_H
#define KVDEX_SERVER_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "server/region.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kvdex_index;

struct kvdex_index_opts {
	uint64_t capacity_blocks; /* initial sizing: home buckets = next_pow2(cap / 4) */
	uint32_t slots;		  /* worker table rows (holder slots) */
	uint32_t sweep_per_tick;  /* chains visited per tick by the epoch sweep */
	uint32_t spec_ttl_ms;	  /* default speculative TTL */
	bool general_only;	  /* tests: never take the one-bucket fast path */
};

enum kvdex_index_ev_type {
	KVDEX_IX_STORED = 0,
	KVDEX_IX_REMOVED = 1,
	KVDEX_IX_TOUCHED = 3,
};

/* One block event, already validated (tier < 4, ttl <= 7.5 s, ns known). */
struct kvdex_index_event {
	uint8_t type; /* enum kvdex_index_ev_type */
	uint8_t tier;
	bool spec;
	bool fused;
	bool has_loc;
	uint16_t ns;
	uint16_t slot;
	uint64_t key;
	uint64_t loc_addr;
	uint32_t loc_len;
	uint32_t ttl_ms; /* spec only; 0 = default */
};

/* What kvdex_index_apply() did with an event. */
enum kvdex_index_result {
	KVDEX_IX_APPLIED = 0,
	KVDEX_IX_IGNORED = 1, /* no effect: remove/touch of an absent holder/block */
	KVDEX_IX_FULL = 2,    /* needed room the region cannot give: refused */
};

struct kvdex_index_stats {
	uint64_t blocks; /* live (ns, key) entries */
	uint64_t records;
	uint64_t holders;      /* holders of current epochs */
	uint64_t holders_dead; /* holders of old epochs not yet swept */
	uint64_t home_buckets;
	uint64_t overflow_buckets;
	uint64_t overflow_used;
	uint64_t table_bytes;
	uint64_t resizes;
	uint64_t index_full;
	uint64_t spec_expired;
	uint64_t swept_holders;
	uint64_t sweep_passes;
	uint64_t forced_sweeps;
	uint64_t fast_applies; /* events applied by the one-bucket fast path */
};

/*
 * Create the index: allocate the first table in the region, write every home
 * bucket as a valid empty image, publish the geometry in the header.
 * @return 0, -ENOSPC (the first table does not fit in region_max), -ENOMEM
 * Context: main thread before the writer starts, or a test.
 * Ownership: *out is the caller's, freed with kvdex_index_destroy(); rg is
 * borrowed and must outlive the index.
 */
int kvdex_index_create(struct kvdex_region *rg, const struct kvdex_index_opts *opts,
		       struct kvdex_index **out);

/* Free the index's private memory (the region is left alone). Accepts NULL. */
void kvdex_index_destroy(struct kvdex_index *ix);

/*
 * Apply one event.
 * @return enum kvdex_index_result (>= 0), or -ENOMEM.
 */
int kvdex_index_apply(struct kvdex_index *ix, const struct kvdex_index_event *ev);

/*
 * Start loading the home bucket of (ns, key) into the cache. Calling it for
 * an event a few places ahead of the one being applied hides most of the
 * memory latency of a large table. Changes nothing.
 */
void kvdex_index_prefetch(const struct kvdex_index *ix, uint16_t ns, uint64_t key);

/*
 * Advance the coarse clock to now_ticks: expire speculative holders due by
 * then, run one sweep step, resize if the overflow area is over half used,
 * and publish the header (clock_ticks, records).
 */
void kvdex_index_tick(struct kvdex_index *ix, uint32_t now_ticks);

/* Current clock (ticks) as last given to kvdex_index_tick(). */
uint32_t kvdex_index_now(const struct kvdex_index *ix);

/*
 * Bump the epochs of `slot` for every tier in tier_mask (0 = all tiers): its
 * holders in those tiers die for readers at once. Restarts the sweep pass;
 * forces a synchronous full pass when a (slot, tier) reaches 15 bumps without
 * a completed pass. The caller rewrites the worker row from
 * kvdex_index_epoch().
 */
void kvdex_index_bump_epochs(struct kvdex_index *ix, uint16_t slot, unsigned tier_mask);

uint8_t kvdex_index_epoch(const struct kvdex_index *ix, uint16_t slot, unsigned tier);

/* Sweep every chain now, dropping dead and expired holders. */
void kvdex_index_sweep_all(struct kvdex_index *ix);

/* Double the table (DESIGN §3.6). @return 0, -ENOSPC, -ENOMEM. */
int kvdex_index_resize(struct kvdex_index *ix);

void kvdex_index_get_stats(const struct kvdex_index *ix, struct kvdex_index_stats *st);

/* Live holders of one slot, all tiers (ListWorkers). */
uint64_t kvdex_index_slot_holders(const struct kvdex_index *ix, uint16_t slot);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_INDEX_H */

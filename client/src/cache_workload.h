/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A deterministic synthetic workload for a struct kvdex_cache, shaped like
 * KVRouting's GSP benchmark: requests pick a group (a shared system prompt of
 * prefix_blocks blocks) and a question within it (a suffix of suffix_min ..
 * suffix_max blocks), so chains share prefixes and some repeat whole. Each
 * request is matched, inserted (locked while `inflight` later requests run),
 * then unlocked. Keys are chained hashes, as an engine's block hashes are.
 *
 * Used by the cache tests (through the step hook) and by perf benchmarks,
 * which time kvdex_cache_workload_run(); nothing here reads a clock.
 * Internal to the library: not installed.
 */
#ifndef KVDEX_CLIENT_CACHE_WORKLOAD_H
#define KVDEX_CLIENT_CACHE_WORKLOAD_H

#include <stdint.h>

#include "kvdex/cache.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Called after each request; a nonzero return stops the run with it. */
typedef int (*kvdex_cache_step_fn)(void *arg, struct kvdex_cache *c, uint64_t request);

struct kvdex_cache_workload {
	uint64_t seed;		/**< chooses requests and keys */
	uint64_t requests;	/**< requests to run */
	uint32_t groups;	/**< shared prefixes, >= 1 */
	uint32_t questions;	/**< distinct suffixes per group, >= 1 */
	uint32_t prefix_blocks; /**< blocks per shared prefix */
	uint32_t suffix_min;	/**< blocks per suffix, min */
	uint32_t suffix_max;	/**< and max (>= suffix_min) */
	uint32_t inflight;	/**< requests holding their blocks locked at once */
	kvdex_cache_step_fn step;
	void *step_arg;
};

struct kvdex_cache_workload_result {
	uint64_t requests;
	uint64_t blocks;     /**< blocks asked */
	uint64_t hit_blocks; /**< blocks matched at arrival */
	uint64_t inserted;
	uint64_t evicted;
	uint64_t dropped;
};

/**
 * Run a workload against a cache.
 * @return 0, -EINVAL (bad workload), -ENOMEM, any error of the cache calls
 *         (including the publish callback's) or of the step hook
 * Context: the cache's thread. Ownership: w borrowed; res the caller's.
 */
int kvdex_cache_workload_run(struct kvdex_cache *c, const struct kvdex_cache_workload *w,
			     struct kvdex_cache_workload_result *res);

/** Key of block i of a chain whose previous block has key prev (0: none):
 * the chained hash the workload uses. Context: any. */
uint64_t kvdex_cache_workload_key(uint64_t prev, uint64_t token);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_CLIENT_CACHE_WORKLOAD_H */

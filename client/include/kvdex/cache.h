/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file cache.h
 * Worker-side KV cache manager: the blocks one worker (one dp rank) holds, as a
 * prefix tree at block granularity, with the eviction policies of KVRouting
 * (RLT, randomized marking) and SGLang (leaf LRU).
 *
 * A cache is a forest of blocks under a virtual root. A block is named by its
 * 64-bit key (the engine's chained block hash: a key determines its whole
 * prefix), knows its parent, and is cached only while its parent is (prefix
 * closure: only childless blocks are ever evicted). Requests use it as SGLang's
 * scheduler uses its radix cache:
 *
 *   kvdex_cache_match(c, keys, n, KVDEX_CACHE_LOCK, &m)   longest cached prefix, pinned
 *   ... prefill ...
 *   kvdex_cache_insert(c, keys, n, 0, &res)               store the rest, evicting first
 *   kvdex_cache_unlock(c, keys, m)                        the request is done
 *
 * Every block stored and every block evicted becomes a kvdex_event (STORED with
 * its parent, REMOVED), and the events of one call go out in order through one
 * call of the publish callback at the end of that call, so the index of kvdex
 * servers can follow the cache exactly (kvdex_publish() in production, a
 * recording fake in tests).
 *
 * Threads: a struct kvdex_cache is used by one thread at a time; it has no
 * lock and starts no thread. Nothing blocks except the publish callback. After
 * kvdex_cache_create() no call allocates memory except to grow the event batch
 * and the path scratch, which happens before any state changes (so -ENOMEM
 * leaves the cache unchanged).
 *
 * Errors: 0 or a count on success, a negative errno on failure.
 */
#ifndef KVDEX_CACHE_H
#define KVDEX_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvdex/kvdex.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kvdex_cache;

/** Eviction policy. */
enum kvdex_cache_policy {
	/** Randomized Leaf Token eviction (KVRouting) at block granularity:
	 * marking phases, victims uniformly at random among unmarked, unlocked
	 * leaves. O(1) per evicted block. */
	KVDEX_CACHE_RLT = 0,
	/** SGLang RadixCache: oldest-accessed unlocked leaf first. O(log leaves)
	 * per evicted block. */
	KVDEX_CACHE_LEAF_LRU = 1,
};

/** How much kvdex_cache_insert() evicts when the new blocks do not fit. */
enum kvdex_cache_evict_mode {
	/** Only the shortfall: new blocks - free blocks. */
	KVDEX_CACHE_EVICT_SHORTFALL = 0,
	/** SGLang 0.4.6 (alloc_token_slots): the whole allocation, i.e. as many
	 * blocks as are about to be stored, whenever they do not all fit. */
	KVDEX_CACHE_EVICT_FULL_ALLOCATION = 1,
};

/** Options flag: RLT marks the blocks a match walks (default: only insert
 * marks, see kvdex_cache_match()). No effect under LEAF_LRU. */
#define KVDEX_CACHE_F_MARK_ON_MATCH 0x01u

/** Call flag of match and insert: lock the resulting cached prefix. */
#define KVDEX_CACHE_LOCK 0x01u

/**
 * Publish callback: receives the events of one call, in the order the cache
 * changed (REMOVED of evicted blocks before the STORED of the blocks that
 * replaced them; a stored block after its parent).
 * @param arg  the opts' publish_arg
 * @param ev   events (borrowed for the call)
 * @param n    number of events, >= 1
 * @return 0, or a negative errno, which the cache call returns to its caller
 * Context: called from the cache call that produced the events, on its thread,
 * with the cache consistent; it may use the read-only calls (stats,
 * block_info, validate) and must not call the others (they return -EBUSY).
 */
typedef int (*kvdex_cache_publish_fn)(void *arg, const struct kvdex_event *ev, size_t n);

/**
 * Publisher state for kvdex_cache_publish_client(): one per publisher (one
 * worker's dp rank), set up by the caller after kvdex_worker_register().
 */
struct kvdex_cache_publisher {
	struct kvdex_client *client;
	struct kvdex_publish_hdr hdr;	  /**< identity; seq = the next batch's number */
	size_t max_events;		  /**< events per kvdex_publish() batch; 0 = 65536 */
	struct kvdex_publish_result last; /**< result of the last batch */
};

/**
 * A kvdex_cache_publish_fn that sends the events with kvdex_publish(), in
 * batches of at most max_events, each with the next seq. The seq advances
 * after every attempt, failed or not: a server that applied a batch whose reply
 * was lost must see the next one as new (a gap is reported and harmless, a
 * duplicate would be dropped). After an error, resync the cache
 * (kvdex_cache_resync()).
 * @param arg  a struct kvdex_cache_publisher
 * @return 0 or kvdex_publish()'s error (the remaining batches are not sent)
 * Context: the client's thread; blocks in kvdex_publish(). Ownership: arg
 * borrowed; ev borrowed for the call.
 */
int kvdex_cache_publish_client(void *arg, const struct kvdex_event *ev, size_t n);

/** Cache options; initialise with kvdex_cache_opts_init(). */
struct kvdex_cache_opts {
	size_t opts_size;
	uint64_t capacity_blocks;		/**< 1 .. 2^31; no default */
	enum kvdex_cache_policy policy;		/**< default RLT */
	enum kvdex_cache_evict_mode evict_mode; /**< default SHORTFALL */
	uint64_t seed;				/**< RLT's PRNG seed; default 0 */
	uint32_t flags;				/**< KVDEX_CACHE_F_* */
	uint32_t ns;				/**< ns handle put in every event */
	uint8_t tier;				/**< enum kvdex_tier_id put in every event */
	kvdex_cache_publish_fn publish;		/**< NULL: events are only counted */
	void *publish_arg;
};

/**
 * Fill opts with defaults (capacity 0, which create refuses: set it).
 * @param opts  options to initialise
 * @param size  sizeof(*opts) as the caller knows it
 * Context: any thread. Ownership: nothing retained.
 */
void kvdex_cache_opts_init(struct kvdex_cache_opts *opts, size_t size);

/**
 * Destroy a cache. Publishes nothing (the blocks' fate is the caller's: the
 * worker usually publishes ALL_CLEARED itself when it goes away).
 * @param c  cache, may be NULL
 * Context: the cache's thread. Ownership: frees c.
 */
void kvdex_cache_destroy(struct kvdex_cache *c);

/**
 * Create an empty cache. The node pool and hash table for capacity_blocks
 * blocks are reserved at once (about 48 bytes per block, zero pages until used).
 * @param opts  options (borrowed)
 * @param out   the new cache
 * @return 0, -EINVAL (opts NULL, capacity 0 or above 2^31, unknown policy or
 *         mode, tier >= KVDEX_NTIERS), -ENOMEM
 * Context: any thread. Ownership: the caller owns *out and frees it with
 * kvdex_cache_destroy(); publish_arg is borrowed until then.
 */
int kvdex_cache_create(const struct kvdex_cache_opts *opts, struct kvdex_cache **out);

/**
 * Find the longest cached prefix of a chain. LEAF_LRU: every matched block's
 * access time is refreshed, as SGLang's match_prefix does. RLT: nothing is
 * marked unless the cache has KVDEX_CACHE_F_MARK_ON_MATCH. (The reference
 * marks, on a match, only the part of a radix node consumed by a match that
 * ends inside that node, where it splits the node. Here every node holds
 * exactly one block, so a match never ends inside a node and that rule never
 * fires; the blocks get marked when the request's chain is inserted.)
 * @param c        cache
 * @param keys     the chain's block keys, first block first
 * @param n        number of keys (0 is allowed: matches 0)
 * @param flags    KVDEX_CACHE_LOCK: also lock the matched prefix (unlock it
 *                 with kvdex_cache_unlock(c, keys, *matched))
 * @param matched  number of leading keys cached as a chain
 * @return 0, -EINVAL (c, matched or keys NULL with n > 0, unknown flag),
 *         -EBUSY (called from the publish callback)
 * Context: the cache's thread; never blocks, publishes nothing. O(matched).
 * Ownership: keys borrowed.
 */
int kvdex_cache_match(struct kvdex_cache *c, const uint64_t *keys, size_t n, unsigned flags,
		      size_t *matched);

/** What kvdex_cache_insert() did. */
struct kvdex_cache_result {
	uint64_t matched;  /**< leading keys that were cached already */
	uint64_t inserted; /**< new blocks stored (keys[matched .. matched + inserted)) */
	uint64_t evicted;  /**< blocks evicted to make room */
	uint64_t dropped;  /**< keys not stored: n - matched - inserted */
	uint64_t locked;   /**< KVDEX_CACHE_LOCK: leading keys locked (matched + inserted) */
};

/**
 * Insert a request's chain (after prefill or at completion). The cached
 * prefix is pinned while the cache makes room: if the new blocks do not fit,
 * the policy evicts the shortfall or the full allocation (opts.evict_mode)
 * first. Then the matched blocks are marked (RLT) or touched (LEAF_LRU), and
 * the new blocks are stored in order, each marked or touched as it is added.
 * Keys the cache cannot store are dropped from the tail: when every candidate
 * is locked, or at a key already cached under another parent (a hash
 * collision or a caller bug; counted in stats.conflicts).
 * Events: REMOVED for each evicted block, then STORED for each new block
 * (parent set except for a first block), in one publish call.
 * @param c      cache
 * @param keys   the chain, first block first
 * @param n      number of keys
 * @param flags  KVDEX_CACHE_LOCK: lock the stored prefix afterwards
 * @param res    optional result
 * @return 0, -EINVAL (c NULL, keys NULL with n > 0, unknown flag), -ENOMEM
 *         (cache unchanged), -EBUSY (from the publish callback), or the
 *         publish callback's error (the cache did change; see
 *         kvdex_cache_resync())
 * Context: the cache's thread; blocks only in the publish callback.
 * RLT: O(n + evicted); LEAF_LRU: O(n + (evicted + 1) log leaves).
 * Ownership: keys borrowed.
 */
int kvdex_cache_insert(struct kvdex_cache *c, const uint64_t *keys, size_t n, unsigned flags,
		       struct kvdex_cache_result *res);

/**
 * Lock the longest cached prefix of a chain, without touching or marking
 * it: locked blocks are never evicted (a running request's KV). Locks nest.
 * @param locked  number of leading keys locked; unlock exactly those
 * @return 0, -EINVAL, -EBUSY
 * Context: the cache's thread. O(locked). Ownership: keys borrowed.
 */
int kvdex_cache_lock(struct kvdex_cache *c, const uint64_t *keys, size_t n, size_t *locked);

/**
 * Release one lock on each of the first n keys (as locked by match, insert
 * or lock). Checked first: nothing changes on an error.
 * @return 0, -EINVAL (bad argument, or one of the blocks is not locked),
 *         -ENOENT (the first n keys are not a cached chain), -EBUSY
 * Context: the cache's thread. O(n). Ownership: keys borrowed.
 */
int kvdex_cache_unlock(struct kvdex_cache *c, const uint64_t *keys, size_t n);

/**
 * Evict up to nblocks blocks by the policy (RLT includes its phase rules).
 * Fewer are evicted when the rest is locked. Publishes their REMOVED events.
 * @param evicted  optional: blocks evicted
 * @return 0, -EINVAL, -ENOMEM (cache unchanged), -EBUSY, or the publish
 *         callback's error (the blocks were evicted)
 * Context: the cache's thread. RLT O(evicted), LEAF_LRU O(evicted log leaves).
 */
int kvdex_cache_evict(struct kvdex_cache *c, uint64_t nblocks, uint64_t *evicted);

/**
 * Drop every block and publish one ALL_CLEARED event for the cache's tier.
 * @return 0, -EINVAL, -EBUSY (also when some block is locked: nothing done),
 *         or the publish callback's error (the cache is empty)
 * Context: the cache's thread. O(blocks ever used).
 */
int kvdex_cache_clear(struct kvdex_cache *c);

/**
 * Publish the whole cache again: ALL_CLEARED for the cache's tier, then
 * STORED for every block, each parent before its children. For a publisher
 * whose stream broke (a publish error) or restarted.
 * @return 0, -EINVAL, -ENOMEM, -EBUSY, or the publish callback's error
 * Context: the cache's thread. O(blocks), one publish call.
 */
int kvdex_cache_resync(struct kvdex_cache *c);

/** Counters of a cache. */
struct kvdex_cache_stats {
	uint64_t capacity;     /**< blocks */
	uint64_t size;	       /**< blocks cached */
	uint64_t leaves;       /**< cached blocks without cached children */
	uint64_t locked;       /**< blocks with a lock */
	uint64_t marked;       /**< RLT: blocks marked in the current phase */
	uint64_t candidates;   /**< RLT: unmarked unlocked leaves; LRU: unlocked leaves */
	uint64_t phase;	       /**< RLT: current phase number, from 1 */
	uint64_t phases_full;  /**< new phases: marks reached capacity */
	uint64_t phases_evict; /**< new phases: request + marks reached capacity */
	uint64_t phases_short; /**< new phases: unmarked blocks could not cover a request */
	uint64_t matches;      /**< match calls */
	uint64_t match_blocks; /**< blocks matched */
	uint64_t inserts;      /**< insert calls */
	uint64_t inserted;     /**< blocks stored */
	uint64_t dropped;      /**< blocks an insert could not store */
	uint64_t conflicts;    /**< inserts stopped at a key cached under another parent */
	uint64_t evict_calls;  /**< policy evictions run (by insert or evict) */
	uint64_t evicted;      /**< blocks evicted */
	uint64_t events;       /**< events published (or counted, without a callback) */
	uint64_t publish_calls;
	uint64_t publish_errors;
};

/**
 * Read the counters.
 * @param size  sizeof(*st) as the caller knows it (fields past it are not written)
 * Context: the cache's thread (or its publish callback). O(1).
 */
void kvdex_cache_stats_get(const struct kvdex_cache *c, struct kvdex_cache_stats *st, size_t size);

/** One cached block, as kvdex_cache_block_info() reports it. */
struct kvdex_cache_block {
	uint64_t key;
	uint64_t parent;   /**< parent's key if has_parent */
	uint64_t atime;	   /**< logical access time (a counter, larger = later) */
	uint32_t lock_ref; /**< locks held */
	uint32_t children; /**< cached children */
	bool has_parent;
	bool marked;	/**< RLT: marked in the current phase */
	bool candidate; /**< in the victim pool: RLT an unmarked unlocked leaf,
			 *  LEAF_LRU an unlocked leaf */
};

/**
 * Describe one cached block.
 * @return 0, -EINVAL, -ENOENT (not cached)
 * Context: the cache's thread (or its publish callback). O(1).
 */
int kvdex_cache_block_info(const struct kvdex_cache *c, uint64_t key,
			   struct kvdex_cache_block *out);

/**
 * Check every invariant (hash table, parent links and child counts, prefix
 * closure, lock nesting, marks closed under ancestors, counters, candidate
 * array or heap). For tests and debugging.
 * @return 0, or -EUCLEAN naming nothing more (it is a bug in this file)
 * Context: the cache's thread (or its publish callback). O(blocks); allocates
 * O(blocks) temporarily (-ENOMEM).
 */
int kvdex_cache_validate(const struct kvdex_cache *c);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_CACHE_H */

/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file kvdex.h
 * libkvdex: the client of the kvdex KV-cache metadata service.
 *
 * A client connects to the memory servers of one cluster map (a list of
 * servers with an epoch), registers namespaces and workers, publishes block
 * events, and looks up prefix chains. A lookup maps every (namespace, key) to
 * a server (rendezvous hashing) and to a bucket in that server's index region
 * by itself, issues all bucket reads of the lookup together (one round trip),
 * validates what it read and returns, per worker, how many leading blocks of
 * the chain that worker holds.
 *
 * Threads: a struct kvdex_client is used by one thread at a time (it is not
 * internally locked); create one per thread that needs one. The library
 * starts no threads and installs no signal handlers. Calls block for at most
 * the client's timeout (opts.timeout_ms) per server exchange.
 *
 * Errors: every int-returning call returns 0 (or a count) on success and a
 * negative errno on failure. Server-side refusals map to:
 *   -EPROTONOSUPPORT  protocol version refused     -EACCES   bad auth token
 *   -EBADMSG          the server found the request malformed
 *   -E2BIG            batch or message above the server's limits
 *   -ENOENT           unknown namespace            -ESRCH    unknown worker
 *   -ESTALE           publisher incarnation older than the server's
 *   -ENOSPC           index or worker table full   -EEXIST   conflicting registration
 *   -ETIMEDOUT        no answer in time            -ECONNRESET  connection lost
 *   -EIO              anything else the server reported
 * kvdex_client_last_error() gives the server's message for the last failure.
 */
#ifndef KVDEX_KVDEX_H
#define KVDEX_KVDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 11 && !defined(__clang__)
#define KVDEX_DEALLOC(fn, arg) __attribute__((malloc(fn, arg)))
#else
#define KVDEX_DEALLOC(fn, arg)
#endif

/** Blocks looked up per batch: longer chains take several batches. */
#define KVDEX_LOOKUP_BATCH 64u
#define KVDEX_NTIERS 4u
#define KVDEX_MAX_SERVERS 64u

enum kvdex_transport {
	/** verbs if the server has an RDMA listener a local device reaches, else shm for a
	 * server on this host, else tcp */
	KVDEX_TRANSPORT_AUTO = 0,
	KVDEX_TRANSPORT_SHM = 1,
	KVDEX_TRANSPORT_TCP = 2,
	KVDEX_TRANSPORT_VERBS = 3, /**< RDMA READ + SEND/RECV (rdma:host:port, or host:port) */
};

enum kvdex_tier_id {
	KVDEX_GPU = 0,
	KVDEX_HOST = 1,
	KVDEX_DISK = 2,
	KVDEX_REMOTE = 3,
};

struct kvdex_client;

/** Client options; initialise with kvdex_client_opts_init(). */
struct kvdex_client_opts {
	size_t opts_size;
	/** Comma-separated servers, each "[name=]address" with address
	 * "host:port" (tcp, or shm through auto) or "unix:/path" (shm). The
	 * name, default the address, places keys: every client of a cluster
	 * must use the same names. NULL: take them from config_path. */
	const char *servers;
	/** Optional client config file (see docs/OPERATIONS.md). */
	const char *config_path;
	const char *auth_token; /**< NULL: none */
	enum kvdex_transport transport;
	int timeout_ms;		 /**< per exchange; default 2000 */
	const char *client_name; /**< shown in server logs */
	uint64_t cluster_epoch;	 /**< cluster map epoch; 0 = from config or 1 */
};

/**
 * Fill opts with defaults.
 * @param opts  options to initialise
 * @param size  sizeof(*opts) as the caller knows it
 * Context: any thread. Ownership: strings set later are borrowed for the
 * duration of kvdex_client_create() only.
 */
void kvdex_client_opts_init(struct kvdex_client_opts *opts, size_t size);

/**
 * Destroy a client: close every connection and unmap every region.
 * @param c  client, may be NULL
 * Context: the thread using the client. Ownership: frees c.
 */
void kvdex_client_destroy(struct kvdex_client *c);

/**
 * Connect to every server of the cluster map and say Hello.
 * @param opts  options (borrowed)
 * @param out   the new client
 * @return 0, -EINVAL (no servers, bad address, bad config), -ENOMEM,
 *         -ECONNREFUSED / -ETIMEDOUT (a server unreachable),
 *         -EPROTONOSUPPORT, -EACCES (refused by a server)
 * Context: any thread; blocks up to timeout_ms per server.
 * Ownership: the caller owns *out and releases it with kvdex_client_destroy().
 */
int kvdex_client_create(const struct kvdex_client_opts *opts, struct kvdex_client **out);

/** Number of servers in the client's cluster map. Context: any. */
unsigned kvdex_client_nservers(const struct kvdex_client *c);

/** Name and transport ("shm", "tcp" or "verbs") of server i, or NULL if out of range.
 * Ownership: strings owned by the client, valid until it is destroyed. */
const char *kvdex_client_server_name(const struct kvdex_client *c, unsigned i);
const char *kvdex_client_transport_name(const struct kvdex_client *c, unsigned i);

/** Message of the last failure on this client ("" if none). Ownership: owned
 * by the client, valid until its next call. */
const char *kvdex_client_last_error(const struct kvdex_client *c);

/* ---- Namespaces ----------------------------------------------------------- */

/** A namespace: blocks of different namespaces never match each other. */
struct kvdex_ns_desc {
	const char *model;
	const char *adapter;	 /**< LoRA / adapter name, NULL or "" for none */
	const char *tenant;	 /**< NULL or "" for none */
	uint32_t block_size;	 /**< tokens per block */
	const char *hash_scheme; /**< e.g. "vllm:sha256_cbor:64"; NULL = "opaque" */
};

/**
 * Register a namespace on every server (idempotent) and return its handle.
 * @param c    client
 * @param desc namespace tuple (borrowed)
 * @param ns   handle to pass to publish and lookup; valid for this client only
 * @return 0, -EINVAL, -ENOSPC (namespace table full), or a connection error
 * Context: the client's thread; blocks. Ownership: nothing retained.
 */
int kvdex_ns_register(struct kvdex_client *c, const struct kvdex_ns_desc *desc, uint32_t *ns);

/** As kvdex_ns_register() but never creates: -ENOENT if a server lacks it. */
int kvdex_ns_resolve(struct kvdex_client *c, const struct kvdex_ns_desc *desc, uint32_t *ns);

/* ---- Workers ---------------------------------------------------------------- */

/**
 * Register worker `worker_id` (nonzero, chosen by the deployment) with its
 * address and data-parallel size on every server. Idempotent.
 * @return 0, -EINVAL (id 0, dp_size 0 or > 256, address > 63 bytes),
 *         -EEXIST (registered with another dp_size), -ENOSPC, connection errors
 * Context: the client's thread; blocks. Ownership: nothing retained.
 */
int kvdex_worker_register(struct kvdex_client *c, uint32_t worker_id, const char *address,
			  uint16_t dp_size);

/** A worker's load, as it reports it. */
struct kvdex_load {
	uint32_t queued;
	uint32_t running;
	uint64_t prefill_tokens;
	uint16_t kv_util_permille;
};

/**
 * Report the load of (worker_id, dp_rank) to every server's worker table.
 * @return 0, -ESRCH (not registered), connection errors
 * Context: the client's thread; blocks. Ownership: nothing retained.
 */
int kvdex_worker_load(struct kvdex_client *c, uint32_t worker_id, uint16_t dp_rank,
		      const struct kvdex_load *load);

/** One row of the worker table, as a server reports it. */
struct kvdex_worker_info {
	uint32_t worker_id;
	uint16_t dp_rank;
	uint16_t dp_size;
	uint32_t slot;
	char address[64];
	struct kvdex_load load;
	uint64_t load_age_ms; /**< UINT64_MAX: never reported */
	uint64_t holders;     /**< live (block, tier) holdings on that server */
};

/**
 * List the worker table of server `server`.
 * @return the number of rows (may exceed cap; only cap are written), or
 *         -EINVAL (server out of range), connection errors
 * Context: the client's thread; blocks. Ownership: out is the caller's.
 */
int kvdex_workers_list(struct kvdex_client *c, unsigned server, struct kvdex_worker_info *out,
		       size_t cap);

/* ---- Events --------------------------------------------------------------- */

enum kvdex_event_type {
	KVDEX_EV_STORED = 0,
	KVDEX_EV_REMOVED = 1,
	KVDEX_EV_ALL_CLEARED = 2,
	KVDEX_EV_TOUCHED = 3,
};

#define KVDEX_EVF_SPECULATIVE 0x01u /**< STORED: a routing guess that expires */
#define KVDEX_EVF_FUSED 0x02u	    /**< STORED: lossy representative, no exact match */
#define KVDEX_EVF_PARENT 0x04u	    /**< parent is set */
#define KVDEX_EVF_LOC 0x08u	    /**< loc_addr / loc_len are set */

/** One block event of a publisher (a worker's dp rank). */
struct kvdex_event {
	uint8_t type;	   /**< enum kvdex_event_type */
	uint8_t tier;	   /**< enum kvdex_tier_id */
	uint8_t flags;	   /**< KVDEX_EVF_* */
	uint8_t tier_mask; /**< ALL_CLEARED: bit per tier, 0 = all tiers */
	uint32_t ns;	   /**< handle from kvdex_ns_register() */
	uint64_t key;	   /**< the engine's 64-bit block hash */
	uint64_t parent;   /**< parent block's key if KVDEX_EVF_PARENT */
	uint64_t loc_addr; /**< opaque location if KVDEX_EVF_LOC */
	uint32_t loc_len;
	uint32_t spec_ttl_ms; /**< SPECULATIVE: 0 = server default (2 s), max 7500 */
};

/** Identity and position of a batch in its publisher's stream. */
struct kvdex_publish_hdr {
	uint32_t worker_id;
	uint16_t dp_rank;
	uint64_t incarnation; /**< new value = the publisher restarted: old entries purged */
	uint64_t seq;	      /**< batch number; each server expects last + 1 */
};

/** What the servers did with a batch, summed over servers. */
struct kvdex_publish_result {
	uint64_t applied;
	uint64_t ignored;
	bool duplicate;	       /**< every server had already applied this seq */
	bool gap;	       /**< some server expected an earlier seq */
	bool purged;	       /**< some server purged an older incarnation */
	uint64_t expected_seq; /**< on a gap: the smallest seq a server expected */
};

/**
 * Publish one batch. Events go to the servers that own their keys;
 * ALL_CLEARED goes to all. Every server receives the batch header (possibly
 * with no events) so that each sees every seq and detects gaps exactly.
 * The servers validate the whole batch before applying any of it.
 * @param c    client
 * @param hdr  publisher identity and seq (borrowed)
 * @param ev   events, applied in order per server (borrowed)
 * @param n    number of events
 * @param res  optional result
 * @return 0, -EINVAL (bad handle or field), -ENOENT, -ESRCH, -ESTALE, -E2BIG,
 *         -ENOSPC, connection errors (after trying every server)
 * Context: the client's thread; blocks for one exchange with each server,
 * pipelined. Ownership: nothing retained.
 */
int kvdex_publish(struct kvdex_client *c, const struct kvdex_publish_hdr *hdr,
		  const struct kvdex_event *ev, size_t n, struct kvdex_publish_result *res);

/* ---- Lookup --------------------------------------------------------------- */

/** How much of a chain one (worker, dp rank) holds. */
struct kvdex_holding {
	uint32_t worker_id;
	uint16_t dp_rank;
	uint16_t matched;		    /**< leading blocks held in some tier */
	uint16_t tier_blocks[KVDEX_NTIERS]; /**< of those, by fastest tier holding each */
	uint16_t spec_blocks;		    /**< of those, held only speculatively */
	uint16_t reserved;
};

/** Lookup answer. Set holdings/cap before the call. */
struct kvdex_lookup_result {
	struct kvdex_holding *holdings; /**< caller's array, sorted best first */
	uint32_t cap;			/**< its capacity */
	uint32_t nholdings;		/**< rows written (<= cap) */
	uint32_t nholdings_total;	/**< rows found (may exceed cap) */
	int32_t best;			/**< index of the best row (0), or -1 */
	uint32_t nblocks;		/**< blocks asked */
	uint32_t longest;		/**< longest prefix held by one worker */
	uint32_t fused;	      /**< chain position where only a fused block matched, or 0 */
	uint32_t round_trips; /**< read batches issued */
	uint32_t retries;     /**< torn or stale images re-read */
};

#define KVDEX_LOOKUP_NO_SPECULATIVE 0x01u /**< ignore speculative holders */

/**
 * Look up a prefix chain of n block keys of namespace ns. A worker matches
 * the leading blocks it holds up to its first missing one. Up to
 * KVDEX_LOOKUP_BATCH blocks cost one round trip to all servers concerned;
 * longer chains take more batches, stopping once no worker can still match.
 * The best row has the longest match, then the most GPU blocks, then the
 * lowest queued+running load, then the lowest worker id.
 * @return 0, -EINVAL (bad handle, n = 0, res NULL), -EAGAIN (an image kept
 *         failing validation), -EPROTO (a server sent an impossible image),
 *         connection errors
 * Context: the client's thread; blocks for the reads only. No server CPU is
 * involved on shm (and on verbs); tcp emulates the NIC in a server thread.
 * Ownership: keys borrowed; res->holdings is the caller's.
 */
int kvdex_lookup(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, size_t n,
		 unsigned flags, struct kvdex_lookup_result *res);

/* ---- Stats and logging ---------------------------------------------------- */

struct kvdex_counter {
	char name[48];
	uint64_t value;
};

/**
 * Fetch the counters of server `server`.
 * @return the number of counters (may exceed cap; only cap are written),
 *         -EINVAL, connection errors
 * Context: the client's thread; blocks. Ownership: out is the caller's.
 */
int kvdex_stats(struct kvdex_client *c, unsigned server, struct kvdex_counter *out, size_t cap);

/** Log sink: level is syslog-like (3 err .. 7 debug). */
typedef void (*kvdex_log_fn)(int level, const char *component, const char *msg, void *arg);

/**
 * Install a log sink and level for the library (process-wide). The library
 * is silent until this is called or KVDEX_LOG_LEVEL is set in the environment.
 * @param fn    sink, NULL for stderr
 * @param arg   passed to fn
 * @param level 0 = off, 3 = errors .. 7 = debug
 * Context: any thread, before other calls. Ownership: fn and arg borrowed
 * until replaced.
 */
void kvdex_set_log_fn(kvdex_log_fn fn, void *arg, int level);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_KVDEX_H */

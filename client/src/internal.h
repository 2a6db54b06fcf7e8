/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkvdex internals shared by the client's modules and its unit tests.
 *
 * Module map:
 *   endpoint.c   "[name=]address" parsing, is-this-host checks
 *   config.c     the client config file
 *   placement.c  namespace hashes and rendezvous placement (DESIGN §6)
 *   sock.c       framed messages over a stream socket (shared by shm and tcp)
 *   transport_shm.c, transport_tcp.c   the transports (transport.h)
 *   client.c     connections, Hello, control requests, publish, stats
 *   merge.c      pure "validated images + worker rows -> lookup result"
 *   lookup.c     the read rounds of a lookup (DESIGN §5), fresh worker rows
 *   route*.c     routing hints (kvdex/route.h, docs/ROUTING.md)
 *
 * Nothing here is locked: a client is used by one thread at a time.
 */
#ifndef KVDEX_CLIENT_INTERNAL_H
#define KVDEX_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/layout.h"
#include "kvdex/kvdex.h"
#include "transport.h"

#define KVDEX_EXPORT __attribute__((visibility("default")))

/* Per-server namespace id meaning "this server does not know the namespace". */
#define KVDEX_NS_NONE UINT32_MAX

/* Torn or stale images re-read per lookup before giving up with -EAGAIN. */

#define KVDEX_TIMEOUT_DEFAULT_MS 2000

/* ---- config.c -------------------------------------------------------------- */

struct kvdex_client_config {
	struct kvdex_endpoint *servers;
	unsigned nservers;
	char *auth_token;	/* NULL: not set */
	int transport;		/* -1: not set, else enum kvdex_transport */
	int timeout_ms;		/* -1: not set */
	uint64_t cluster_epoch; /* 0: not set */
};

/* Parse the client config file at `path`. On failure returns -EINVAL (or
 * -errno for I/O) and writes "path:line: reason" into err. */
int kvdex_config_load(const char *path, struct kvdex_client_config *cfg, char *err, size_t errlen);
/* Same, from a string already read (`name` is used in messages). */
int kvdex_config_parse(const char *name, const char *text, struct kvdex_client_config *cfg,
		       char *err, size_t errlen);
void kvdex_config_fini(struct kvdex_client_config *cfg);

/* Parse a comma-separated server list. On failure: -EINVAL, message in err. */
int kvdex_endpoint_list_parse(const char *list, struct kvdex_endpoint **out, unsigned *n, char *err,
			      size_t errlen);

/* ---- placement.c ----------------------------------------------------------- */

/* XXH3_64 of model\0adapter\0tenant\0block_size(decimal)\0hash_scheme. */
uint64_t kvdex_ns_hash(const char *model, const char *adapter, const char *tenant,
		       uint32_t block_size, const char *hash_scheme);
/* Seed of a server in rendezvous hashing: XXH3_64(name). */
uint64_t kvdex_server_seed(const char *name);
/* Rendezvous weight of (ns_hash, key) on the server with `seed`. */
uint64_t kvdex_place_weight(uint64_t ns_hash, uint64_t key, uint64_t seed);
/* Index of the server owning (ns_hash, key): highest weight, lowest index on
 * a tie. n must be > 0. */
unsigned kvdex_place(const uint64_t *seeds, unsigned n, uint64_t ns_hash, uint64_t key);

/* ---- merge.c --------------------------------------------------------------- */

/* What the merge needs to know about the server a block was read from. */
struct kvdex_merge_srv {
	const struct kvdex_worker_row *rows; /* validated rows [0, nrows) */
	uint32_t nrows;
	uint32_t now_ticks; /* clock_ticks of the header read with the images */
	uint32_t bucket_size;
	uint32_t ns_id; /* the namespace's id on that server, or KVDEX_NS_NONE */
};

/* One block of the chain: the validated images of its bucket chain. */
struct kvdex_merge_block {
	uint64_t key;
	const struct kvdex_merge_srv *srv;
	const void *const *imgs; /* 64-byte aligned, validated, chain order */
	unsigned nimgs;
};

struct kvdex_merge_worker {
	uint32_t worker_id;
	uint16_t dp_rank;
	bool alive; /* has held every block so far */
	/* The last block this worker was seen holding: blk_pos = its position
	 * + 1, with the fastest tier seen and whether every copy seen is
	 * speculative. The counts below include it only once it is complete
	 * (the next block seen, the worker stops, or the merge finishes). */
	bool blk_spec;
	uint32_t blk_pos;
	uint32_t blk_tier;
	uint32_t matched;
	uint32_t tier_blocks[KVDEX_NTIERS];
	uint32_t spec_blocks;
	uint64_t load; /* queued + running, from the row first seen */
};

/* Accumulates a lookup over the blocks of a chain, in chain order, across
 * batches. */
struct kvdex_merge {
	unsigned flags; /* KVDEX_LOOKUP_* */
	/* Every (worker, rank) that held block 0: w[0, nalive) still hold every
	 * block so far, w[nalive, nw) stopped somewhere. */
	struct kvdex_merge_worker *w;
	unsigned nw, nalive, capw;
	uint32_t pos;	/* blocks merged so far */
	uint32_t fused; /* see kvdex_lookup_result.fused */
	/* The block being merged: visible exact holders, a visible FUSED one,
	 * alive workers seen holding it. */
	unsigned blk_exact;
	bool blk_fused;
	unsigned blk_seen;
};

void kvdex_merge_init(struct kvdex_merge *m, unsigned flags);
void kvdex_merge_fini(struct kvdex_merge *m);
/* Merge the next block of the chain, scanning its images for its records.
 * 0, -EPROTO (malformed record), -ENOMEM. */
int kvdex_merge_add(struct kvdex_merge *m, const struct kvdex_merge_block *b);
/* The same in steps, for a reader that already found the block's records:
 * begin, then every record of the block (key and ns already matched), then
 * end. kvdex_merge_record returns 0 or -ENOMEM. */
void kvdex_merge_begin(struct kvdex_merge *m);
int kvdex_merge_record(struct kvdex_merge *m, const struct kvdex_merge_srv *srv,
		       const struct kvdex_record_view *rec);
void kvdex_merge_end(struct kvdex_merge *m);
/* Can a later block still change the result? */
static inline bool
kvdex_merge_alive(const struct kvdex_merge *m)
{
	return m->pos == 0 || m->nalive > 0;
}
/* Sort and write the rows, best, longest, fused into res. */
void kvdex_merge_finish(struct kvdex_merge *m, struct kvdex_lookup_result *res);

/* ---- client.c / lookup.c ---------------------------------------------------- */

struct kvdex_client_ns {
	char *model, *adapter, *tenant, *hash_scheme;
	uint32_t block_size;
	uint64_t ns_hash;
	bool created;  /* registered (create) rather than resolved */
	uint32_t *ids; /* per server, KVDEX_NS_NONE if unknown there */
};

struct kvdex_client_worker {
	uint32_t worker_id;
	uint16_t dp_size;
	char address[KVDEX_ADDR_MAX];
};

struct kvdex_server {
	struct kvdex_endpoint ep;
	uint64_t seed;
	struct kvdex_conn *conn; /* NULL: disconnected, reconnect on next use */
	const char *transport_name;
	char server_id[128];
	uint64_t incarnation; /* 0: never connected */
	uint32_t max_batch_events;
	uint32_t bucket_size;
	/* Cached from the last validated header. */
	bool have_hdr;
	struct kvdex_region_hdr hdr;
	struct kvdex_geometry geo;
	/* Worker rows [0, nrows), valid for rows_version. */
	struct kvdex_worker_row *rows; /* 64-byte aligned */
	uint32_t nrows, rows_cap;
	uint32_t rows_version;
	bool rows_valid;
	/* clock_ticks of the header read with (or just before) the rows: the
	 * loads' age is rows_clock - load_ticks (route_load.c). */
	uint32_t rows_clock;
};

struct kvdex_client {
	struct kvdex_server *srv;
	unsigned nsrv;
	uint64_t *seeds; /* per server, for kvdex_place() */
	struct kvdex_client_ns *ns;
	uint32_t nns, ns_cap;
	struct kvdex_client_worker *workers; /* registered through this client */
	unsigned nworkers, workers_cap;
	char *auth_token;
	char *client_name;
	enum kvdex_transport transport;
	int timeout_ms;
	uint64_t cluster_epoch;
	uint32_t next_req_id;
	uint8_t *sendbuf;
	size_t sendcap;
	char last_error[256];
	struct kvdex_lookup_scratch *lk; /* lookup buffers, kept between calls */
	uint64_t retry_deadline_ns;	 /* re-reads of torn images stop here */
	/* Test hook: set when servers were attached by hand (no reconnects). */
	bool no_reconnect;
};

void kvdex_client_set_error(struct kvdex_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Allocate a client with n empty server slots (names from eps), no
 * connections. Used by create and by tests. */
int kvdex_client_alloc(const struct kvdex_endpoint *eps, unsigned n, struct kvdex_client **out);

/* Make sure server i is connected (reconnecting, and re-registering after a
 * restart, if needed). */
int kvdex_client_ensure_conn(struct kvdex_client *c, unsigned i);

/* Drop the connection of server i after a transport failure. */
void kvdex_client_drop_conn(struct kvdex_client *c, unsigned i);

/* kvdex_client_publish() flags. SPECULATIVE_ONLY: a router's guesses, not a
 * worker's stream (docs/PROTOCOL.md): the batch carries no incarnation or
 * seq, goes only to the servers owning some of its events, leaves out events
 * whose namespace their owner does not know, and a share too large for its
 * server fails there alone instead of the whole batch. */
#define KVDEX_PUB_SPECULATIVE_ONLY 0x1u

/* kvdex_publish() for the library's own callers: c and hdr must be valid
 * (the events are still checked) and the last error is not reset. Places
 * each event on its owner, sends every share, then collects the replies (one
 * exchange). Returns the number of events in the shares the servers
 * accepted, or the first error in server order (every server is still
 * tried); res, if given, sums the replies. */
int kvdex_client_publish(struct kvdex_client *c, const struct kvdex_publish_hdr *hdr,
			 const struct kvdex_event *ev, size_t n, unsigned flags,
			 struct kvdex_publish_result *res);

/* The server's header shows a new incarnation: re-register namespaces and
 * workers there. */
int kvdex_client_server_restarted(struct kvdex_client *c, unsigned i, uint64_t incarnation);

/* Read and validate the header of server i, then its worker rows if
 * workers_version moved. Counts round trips and retries if given. */
int kvdex_lookup_refresh_server(struct kvdex_client *c, unsigned i, uint32_t *round_trips,
				uint32_t *retries);

/* Read server i's header and every worker row in one round trip (fresh loads
 * for kvdex_workers_read()); falls back to a second round when rows were torn
 * or the worker table changed meanwhile. Counts round trips and retries if
 * given. */
int kvdex_lookup_read_rows(struct kvdex_client *c, unsigned i, uint32_t *round_trips,
			   uint32_t *retries);

void kvdex_lookup_scratch_free(struct kvdex_lookup_scratch *lk);

/* Allocate `n` bytes aligned to 64 (free with free()). */
void *kvdex_aligned_alloc(size_t n);

#endif /* KVDEX_CLIENT_INTERNAL_H */

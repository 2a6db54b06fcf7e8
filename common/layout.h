/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one-sided-readable index region: the single source of truth for what
 * clients read with RDMA READ (or shm loads, or tcp read requests).
 *
 * Only the server CPU writes the region. Clients never write or CAS it. Every
 * unit a client reads (the region header, a bucket, a worker row) is a
 * "validated block": its first 8 bytes are an XXH3-64 checksum of the rest of
 * the block, seeded with (hash_seed ^ offset of the block in the region). The
 * server writes a block by building the full image privately and copying it
 * in. A reader accepts an image only when the checksum matches, so a read that
 * overlapped a write (torn in any byte order, at any DMA granularity) is
 * rejected and re-read. Seeding with the offset rejects an image read from the
 * wrong place (stale addresses after a resize). The chance of accepting a torn
 * image is that of a 64-bit hash collision. See docs/DESIGN.md §3.
 *
 * All integers are little-endian. Layout version KVDEX_LAYOUT_VERSION; any
 * change to the structs below bumps it.
 *
 * Region map (offsets from the start of the region):
 *
 *   0                         region header (KVDEX_HDR_SIZE bytes)
 *   workers_off               worker table: workers_cap rows of KVDEX_ROW_SIZE
 *   table_off                 home buckets: 2^table_log2 buckets of bucket_size
 *   overflow_off              overflow buckets: overflow_count of bucket_size
 *   ... older tables awaiting reuse, free space up to region_size
 */
#ifndef KVDEX_COMMON_LAYOUT_H
#define KVDEX_COMMON_LAYOUT_H

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_LAYOUT_VERSION 2u
#define KVDEX_REGION_MAGIC 0x5844564bu /* "KVDX" */
#define KVDEX_CACHE_LINE 64u

#define KVDEX_HDR_SIZE 128u
#define KVDEX_ROW_SIZE 128u
#define KVDEX_BUCKET_HDR_SIZE 32u
#define KVDEX_RECORD_HDR_SIZE 16u
#define KVDEX_HOLDER_SIZE 4u
#define KVDEX_LOC_SIZE 16u
#define KVDEX_BUCKET_SIZE_MIN 128u
#define KVDEX_BUCKET_SIZE_MAX 4096u
#define KVDEX_BUCKET_SIZE_DEFAULT 512u

/* Tiers, fastest first. The order is used by "best tier" computations. */
enum kvdex_tier {
	KVDEX_TIER_GPU = 0,
	KVDEX_TIER_HOST = 1,
	KVDEX_TIER_DISK = 2,
	KVDEX_TIER_REMOTE = 3,
};
#define KVDEX_NR_TIERS 4u

/* The coarse clock: the server's monotonic time in 1/16 s ticks since it
 * started, published in the header. */
#define KVDEX_TICKS_PER_SEC 16u
/* A speculative holder's expiry is 8 bits of ticks, compared with wrap-around
 * arithmetic, so a TTL must stay below 128 ticks (8 s). */
#define KVDEX_SPEC_TTL_MAX_MS 7500u

/*
 * Region header, at offset 0, KVDEX_HDR_SIZE bytes, validated block.
 * Clients read it together with the buckets of every lookup (one extra read in
 * the same batch): that is how they learn of growth, resizes, worker-table
 * changes and server restarts without a separate round trip.
 */
struct kvdex_region_hdr {
	uint64_t checksum;
	uint32_t magic;
	uint16_t layout_version;
	uint16_t hdr_size;
	uint64_t server_incarnation; /* random per server start */
	uint64_t region_size;	     /* bytes readable now; never shrinks */
	uint64_t hash_seed;	     /* seeds bucket mapping and checksums */
	uint64_t table_off;
	uint64_t overflow_off;
	uint32_t table_log2; /* home buckets = 1 << table_log2 */
	uint32_t table_gen;  /* bumped at every resize */
	uint32_t overflow_count;
	uint32_t bucket_size;
	uint64_t workers_off;
	uint32_t workers_cap;
	uint32_t workers_hwm;	  /* rows [0, hwm) may be in use */
	uint32_t workers_version; /* bumped when any row changes except load */
	uint32_t clock_ticks;	  /* coarse clock, KVDEX_TICKS_PER_SEC */
	uint64_t clock_base_ms;	  /* unix time (ms) at tick 0 */
	uint64_t records;	  /* informational */
	/* verbs: the memory region readers use now (common/verbs_wire.h);
	 * zero when the server has no RDMA listener */
	uint64_t mr_addr;
	uint32_t mr_rkey;
	uint32_t mr_gen; /* bumped at every re-registration */
};
static_assert(sizeof(struct kvdex_region_hdr) == KVDEX_HDR_SIZE, "header size");

/* Worker row states. */
enum kvdex_row_state {
	KVDEX_ROW_FREE = 0,
	KVDEX_ROW_LIVE = 1,
};

#define KVDEX_ADDR_MAX 64u /* address string, NUL-padded, not NUL-terminated at 64 */

/*
 * Worker table row: one per (worker, data-parallel rank), called a "slot".
 * Holders refer to slots by index (16 bits). Each tier has a 4-bit epoch; a
 * holder is live only while its epoch equals its slot's epoch for its tier.
 * Clearing a worker's tier (AllBlocksCleared, publisher restart) bumps the
 * epoch: every holder of that slot and tier disappears at once for readers,
 * and the server sweeps them out of the buckets in the background.
 */
struct kvdex_worker_row {
	uint64_t checksum;
	uint32_t worker_id;
	uint16_t state; /* enum kvdex_row_state */
	uint16_t dp_rank;
	uint16_t dp_size;
	uint8_t epoch[KVDEX_NR_TIERS];
	uint16_t reserved0;
	uint32_t version;	 /* row write count */
	uint32_t load_ticks;	 /* clock_ticks when the load was reported; 0 = never */
	uint32_t queued;	 /* requests waiting */
	uint32_t running;	 /* requests running */
	uint64_t prefill_tokens; /* prompt tokens in flight */
	uint16_t kv_util_permille;
	uint16_t reserved1[3];
	uint64_t reserved2;
	char addr[KVDEX_ADDR_MAX];
};
static_assert(sizeof(struct kvdex_worker_row) == KVDEX_ROW_SIZE, "row size");

/* Bucket kinds (kvdex_bucket_hdr.flags). */
#define KVDEX_BUCKET_HOME 0x01u
#define KVDEX_BUCKET_OVERFLOW 0x02u
#define KVDEX_BUCKET_RETIRED 0x04u /* table replaced: re-read the header */

/*
 * Bucket header, KVDEX_BUCKET_HDR_SIZE bytes, followed by the record area.
 *
 * A home bucket and the overflow buckets linked from it form a chain. Every
 * bucket of a chain carries the home bucket's index (owner) and the chain's
 * sequence number, which the server bumps and restamps into all of the chain's
 * buckets whenever any of them changes. A reader follows `next` only into a
 * bucket with the same owner and chain_seq as the home image it accepted, so
 * a chain read over several round trips is a consistent snapshot even if
 * overflow buckets were freed and reused in between.
 *
 * A reader follows `next` only while it still needs something: a key it has
 * not found yet whose bit is set in the home bucket's ovf_filter, or a key
 * whose last record seen carries KVDEX_REC_MORE. Records of one key never go
 * to an earlier bucket of the chain than the key's previous record.
 */
struct kvdex_bucket_hdr {
	uint64_t checksum;
	uint32_t table_gen;
	uint32_t chain_seq;
	uint32_t owner; /* home bucket index */
	uint32_t next;	/* overflow bucket index + 1; 0 = end of chain */
	uint16_t used;	/* bytes of record area in use */
	uint8_t flags;
	uint8_t nrecords;
	uint32_t ovf_filter; /* home only: kvdex_ovf_bit() of every key with a record
			      * outside the home bucket */
};
static_assert(sizeof(struct kvdex_bucket_hdr) == KVDEX_BUCKET_HDR_SIZE, "bucket hdr");

/* Record flags. */
#define KVDEX_REC_FUSED 0x01u /* lossy shared representative: never an exact match */
#define KVDEX_REC_MORE 0x02u  /* more records of this key follow in the chain */

/*
 * Record: one block's holders (or part of them: a block with more holders
 * than fit in one record has several records with the same key in its chain,
 * and readers merge them).
 *
 *   16 B header | nholders x 4 B holders, padded to 8 B | nlocs x 16 B locations
 */
struct kvdex_record_hdr {
	uint64_t key;
	uint16_t ns;
	uint8_t nholders;
	uint8_t flags;	/* KVDEX_REC_* */
	uint16_t atime; /* last store or touch, server seconds mod 2^16 */
	uint8_t hits;	/* touches, saturating at 255 */
	uint8_t nlocs;
};
static_assert(sizeof(struct kvdex_record_hdr) == KVDEX_RECORD_HDR_SIZE, "record hdr");

/* Holder bits (kvdex_holder.bits). */
#define KVDEX_H_TIER_MASK 0x03u
#define KVDEX_H_SPEC 0x04u /* speculative: `count` is the expiry tick (mod 256) */
#define KVDEX_H_EPOCH_SHIFT 4
#define KVDEX_H_EPOCH_MASK 0xf0u

/* One (slot, tier) holding of a block, 4 bytes. */
struct kvdex_holder {
	uint16_t slot;
	uint8_t bits;  /* tier | SPEC | epoch << 4 */
	uint8_t count; /* physical copies (1..255); expiry tick if SPEC */
};
static_assert(sizeof(struct kvdex_holder) == KVDEX_HOLDER_SIZE, "holder");

/* Optional opaque location of one holder's copy. */
struct kvdex_loc {
	uint64_t addr;
	uint32_t len;
	uint16_t holder; /* index of the holder in its record */
	uint16_t reserved;
};
static_assert(sizeof(struct kvdex_loc) == KVDEX_LOC_SIZE, "loc");

/* ---- Geometry the client and server both derive from the header -------- */

struct kvdex_geometry {
	uint64_t hash_seed;
	uint64_t table_off;
	uint64_t overflow_off;
	uint32_t table_log2;
	uint32_t table_gen;
	uint32_t overflow_count;
	uint32_t bucket_size;
};

void kvdex_geometry_from_hdr(const struct kvdex_region_hdr *hdr, struct kvdex_geometry *g);

/* 64-bit hash of (namespace, key) under a seed: used for bucket mapping (with
 * the region's seed) and for rendezvous placement (with a server's seed). */
uint64_t kvdex_key_hash(uint16_t ns, uint64_t key, uint64_t seed);

/* Home bucket index of (ns, key): the top table_log2 bits of its hash. */
uint32_t kvdex_home_index(const struct kvdex_geometry *g, uint16_t ns, uint64_t key);

/* The ovf_filter bit of (ns, key): one of 32, from the low bits of the hash
 * whose top bits give the home index. */
uint32_t kvdex_ovf_bit(const struct kvdex_geometry *g, uint16_t ns, uint64_t key);

/* Home index and ovf_filter bit of (ns, key) from one hash computation. */
uint32_t kvdex_home_and_bit(const struct kvdex_geometry *g, uint16_t ns, uint64_t key,
			    uint32_t *bit);

/* Region offset of home bucket `idx` / of overflow bucket `ov` (0-based). */
uint64_t kvdex_home_offset(const struct kvdex_geometry *g, uint32_t idx);
uint64_t kvdex_overflow_offset(const struct kvdex_geometry *g, uint32_t ov);

/* ---- Validated blocks ---------------------------------------------------- */

/* Checksum of a block image of `len` bytes that lives at region offset `off`. */
uint64_t kvdex_block_checksum(const void *img, size_t len, uint64_t seed, uint64_t off);

/* Fill in the checksum field (first 8 bytes) of an image before writing it. */
void kvdex_block_seal(void *img, size_t len, uint64_t seed, uint64_t off);

/* True when the image's checksum matches its contents and offset. */
bool kvdex_block_valid(const void *img, size_t len, uint64_t seed, uint64_t off);

/* The header is sealed with seed 0 (a client does not know the seed before it
 * has read the header). Returns 0, -EAGAIN (torn: re-read) or -EPROTO (not a
 * kvdex region or unsupported layout version). */
int kvdex_hdr_check(const struct kvdex_region_hdr *hdr);

/* Result of checking a bucket image against the reader's geometry. */
enum kvdex_bucket_check {
	KVDEX_BUCKET_OK = 0,
	KVDEX_BUCKET_TORN,    /* checksum mismatch: re-read the bucket */
	KVDEX_BUCKET_STALE,   /* other table generation or retired: re-read header */
	KVDEX_BUCKET_CORRUPT, /* valid checksum but impossible contents */
};

enum kvdex_bucket_check kvdex_bucket_check(const void *img, const struct kvdex_geometry *g,
					   uint64_t off);

/*
 * A bucket's checksum covers its header and the `used` bytes of its record
 * area only: a reader validates (and a shm reader copies) what is in use, not
 * the whole bucket, and never interprets the bytes past `used`. The length is
 * taken from the image's own `used`, which the checksum covers, so a torn
 * `used` only makes the image fail validation. An image whose `used` is out of
 * range is checked over the whole bucket (it can then only be torn or corrupt).
 */
static inline uint16_t
kvdex_bucket_used(const void *img)
{
	uint16_t used;

	memcpy(&used, (const uint8_t *)img + offsetof(struct kvdex_bucket_hdr, used), sizeof(used));
	return used;
}

/* Inline: the shm transport and the bucket check run it for every bucket. */
static inline size_t
kvdex_bucket_sealed_len(const void *img, uint32_t bucket_size)
{
	uint16_t used = kvdex_bucket_used(img);

	if (used > bucket_size - KVDEX_BUCKET_HDR_SIZE) {
		return bucket_size;
	}
	return KVDEX_BUCKET_HDR_SIZE + (size_t)used;
}

void kvdex_bucket_seal(void *img, uint32_t bucket_size, uint64_t seed, uint64_t off);

/* ---- Records -------------------------------------------------------------- */

/* Size in bytes of a record with the given counts. */
static inline size_t
kvdex_record_size(unsigned nholders, unsigned nlocs)
{
	size_t h = (size_t)nholders * KVDEX_HOLDER_SIZE;

	return KVDEX_RECORD_HDR_SIZE + ((h + 7u) & ~(size_t)7u) + (size_t)nlocs * KVDEX_LOC_SIZE;
}

/* Holders one record can carry in a bucket of `bucket_size` (no locations). */
unsigned kvdex_record_max_holders(uint32_t bucket_size);

/* A decoded view of one record inside a bucket image (pointers into it). */
struct kvdex_record_view {
	struct kvdex_record_hdr hdr;
	const struct kvdex_holder *holders; /* hdr.nholders entries */
	const struct kvdex_loc *locs;	    /* hdr.nlocs entries */
	size_t size;
};

/* Point a view whose header is filled in at the record of `size` bytes at p. */
static inline void
kvdex_record_view_set(const uint8_t *p, size_t size, struct kvdex_record_view *rec)
{
	/* Records start 8-byte aligned within an aligned image, so the views
	 * below are properly aligned for their types. */
	rec->holders = (const struct kvdex_holder *)(p + KVDEX_RECORD_HDR_SIZE);
	rec->locs = (const struct kvdex_loc *)(p + size - (size_t)rec->hdr.nlocs * KVDEX_LOC_SIZE);
	rec->size = size;
}

/*
 * The record at offset `pos` of an image's record area, with no checks: only
 * for a record kvdex_record_next() has already accepted in the same bytes.
 */
static inline void
kvdex_record_at(const void *bucket_img, size_t pos, struct kvdex_record_view *rec)
{
	const uint8_t *p = (const uint8_t *)bucket_img + KVDEX_BUCKET_HDR_SIZE + pos;

	memcpy(&rec->hdr, p, sizeof(rec->hdr));
	kvdex_record_view_set(p, kvdex_record_size(rec->hdr.nholders, rec->hdr.nlocs), rec);
}

/*
 * Iterate over the records of a validated bucket image. `*pos` starts at 0.
 * Returns 1 with *rec filled, 0 at the end, -EPROTO if the image is malformed
 * (a record runs past `used`, counts out of range).
 *
 * Inline: a lookup runs it for every record of every bucket it reads.
 */
static inline int
kvdex_record_next(const void *bucket_img, uint32_t bucket_size, size_t *pos,
		  struct kvdex_record_view *rec)
{
	const uint8_t *area = (const uint8_t *)bucket_img + KVDEX_BUCKET_HDR_SIZE;
	size_t used = kvdex_bucket_used(bucket_img);
	size_t at = *pos;
	struct kvdex_record_hdr h;
	size_t size;

	if (used > bucket_size - KVDEX_BUCKET_HDR_SIZE) {
		return -EPROTO;
	}
	if (at >= used) {
		return 0;
	}
	if (used - at < KVDEX_RECORD_HDR_SIZE) {
		return -EPROTO;
	}
	/* Read into a local first: stores into *rec could alias the image. */
	memcpy(&h, area + at, sizeof(h));
	if (h.nholders == 0 || h.nlocs > h.nholders) {
		return -EPROTO;
	}
	size = kvdex_record_size(h.nholders, h.nlocs);
	if (size > used - at) {
		return -EPROTO;
	}
	rec->hdr = h;
	kvdex_record_view_set(area + at, size, rec);
	*pos = at + size;
	return 1;
}

/* Is this holder visible at `now_ticks` given its slot's current epoch? */
static inline bool
kvdex_holder_live(const struct kvdex_holder *h, uint8_t slot_epoch, uint32_t now_ticks)
{
	if (((h->bits & KVDEX_H_EPOCH_MASK) >> KVDEX_H_EPOCH_SHIFT) != (slot_epoch & 0x0fu)) {
		return false;
	}
	if (h->bits & KVDEX_H_SPEC) {
		return (int8_t)(uint8_t)(h->count - (uint8_t)now_ticks) > 0;
	}
	return true;
}

static inline unsigned
kvdex_holder_tier(const struct kvdex_holder *h)
{
	return h->bits & KVDEX_H_TIER_MASK;
}

/* ---- Rows ----------------------------------------------------------------- */

static inline uint64_t
kvdex_row_offset(const struct kvdex_region_hdr *hdr, uint32_t slot)
{
	return hdr->workers_off + (uint64_t)slot * KVDEX_ROW_SIZE;
}

/* Validate a row image read from `off`: 0, -EAGAIN (torn). */
int kvdex_row_check(const struct kvdex_worker_row *row, uint64_t seed, uint64_t off);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_LAYOUT_H */

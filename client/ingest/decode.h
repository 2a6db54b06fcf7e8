/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decoder of vLLM's KVEventBatch (msgspec msgpack), every encoding vLLM has shipped:
 *
 *   batch  = [ts, events]                      (v0.9)
 *          | [ts, events, data_parallel_rank]  (later; more trailing items are skipped)
 *   event  = ["BlockStored", field, ...]       array-like, every field in declaration order
 *          | {"type": "BlockStored", ...}      map, fields equal to their default omitted
 *
 * BlockStored fields: block_hashes, parent_block_hash, token_ids, block_size, lora_id,
 * medium, lora_name, extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window
 * (the first five since v0.9, the rest added one generation at a time; an array event may
 * stop after any of them and may carry unknown trailing fields, which are skipped).
 * BlockRemoved: block_hashes, medium, group_idx. AllBlocksCleared: none.
 *
 * Hashes are msgpack ints (uint64, possibly >= 2^63; a negative int, from vLLM <= 0.9's
 * builtin hash, is taken modulo 2^64 as Python's `& (2**64 - 1)` does) or bin digests
 * (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: 16 or 32 bytes, 32*k for an older variant),
 * projected to 64 bits exactly as maybe_convert_block_hash does: the last 8 bytes read
 * big-endian.
 *
 * The decoder is a hand-written cursor over the payload bytes. It allocates nothing per
 * value (strings point into the payload), rejects an array or map whose count exceeds
 * the configured limit or the bytes left (every element takes at least one byte) before
 * looking at its elements, bounds nesting depth, and never reads past the end. A
 * malformed batch is rejected whole (nothing of it is applied); an event with an unknown
 * tag is skipped, counted in unknown_tags, and the rest of the batch stands.
 *
 * Threads: a struct kvdex_ingest_batch belongs to one thread; decoding is reentrant.
 */
#ifndef KVDEX_INGEST_DECODE_H
#define KVDEX_INGEST_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why a payload was rejected (or, for UNKNOWN_TAG, what was skipped). */
enum kvdex_ingest_derr {
	KVDEX_DERR_OK = 0,
	KVDEX_DERR_WRONG_TYPE,	/* a value of the wrong msgpack type, or a missing field */
	KVDEX_DERR_TRUNCATED,	/* the payload ends inside a value */
	KVDEX_DERR_UNKNOWN_TAG, /* an event whose "type" is not one we know */
	KVDEX_DERR_TOO_LARGE,	/* an array or map above the limit, or nesting too deep */
	KVDEX_DERR_BAD_VALUE,	/* reserved byte 0xc1, bad digest length, trailing bytes */
	KVDEX_DERR_NR,
};

/* Counter suffix of an error kind: "wrong_type", "truncated", ... */
const char *kvdex_ingest_derr_name(enum kvdex_ingest_derr e);

enum kvdex_ingest_evtype {
	KVDEX_INGEST_STORED = 0,
	KVDEX_INGEST_REMOVED = 1,
	KVDEX_INGEST_CLEARED = 2,
};

/* A string inside the payload; p == NULL means nil or absent. */
struct kvdex_ingest_str {
	const char *p;
	uint32_t len;
};

/* One decoded event; its block hashes are keys[first .. first + n). */
struct kvdex_ingest_ev {
	uint8_t type; /* enum kvdex_ingest_evtype */
	bool has_parent;
	bool has_lora_id;
	bool has_group;
	uint32_t first;
	uint32_t n;
	uint64_t parent;
	int64_t lora_id;
	int64_t group_idx;
	uint64_t block_size; /* 0 when nil or absent */
	struct kvdex_ingest_str medium;
	struct kvdex_ingest_str lora_name;
	struct kvdex_ingest_str spec_kind;
};

struct kvdex_ingest_limits {
	uint32_t max_array; /* elements per array or map (block hashes, token ids, events) */
	uint32_t max_depth; /* nesting of skipped values (extra_keys) */
};

#define KVDEX_INGEST_DEFAULT_MAX_ARRAY (1u << 20)
#define KVDEX_INGEST_DEFAULT_MAX_DEPTH 16u

/*
 * A decoded batch. Zero-initialise, decode into it as often as needed (the arrays are
 * reused and grow), release with kvdex_ingest_batch_fini(). Strings point into the
 * payload last decoded and are valid as long as it is.
 */
struct kvdex_ingest_batch {
	double ts;
	bool has_dp_rank;
	int64_t dp_rank;
	uint32_t nev;
	uint32_t nkeys;
	uint32_t unknown_tags; /* events skipped for an unknown tag */
	struct kvdex_ingest_ev *ev;
	uint64_t *keys;
	uint32_t cap_ev;
	uint32_t cap_keys;
	/* Set by a failed decode, and by unknown tags (err = UNKNOWN_TAG with rc 0). */
	enum kvdex_ingest_derr err;
	size_t err_off; /* payload offset where the problem was found */
	char why[96];
};

/**
 * Decode one KVEventBatch payload.
 * @param b    batch to fill (previous contents are replaced)
 * @param buf  the msgpack payload (the third frame of a vLLM message)
 * @param len  its size
 * @param lim  limits, NULL for the defaults
 * @return 0 (b->err is OK, or UNKNOWN_TAG when events were skipped), -EBADMSG (b->err
 *         and b->why say why; b's events are then meaningless), -ENOMEM
 * Context: any thread; does not block. Ownership: buf is borrowed, and strings in b
 * point into it; b's arrays are owned by b.
 */
int kvdex_ingest_decode(struct kvdex_ingest_batch *b, const uint8_t *buf, size_t len,
			const struct kvdex_ingest_limits *lim);

/** Free a batch's arrays (b itself is the caller's). Accepts NULL. */
void kvdex_ingest_batch_fini(struct kvdex_ingest_batch *b);

/** The 64-bit projection of a digest: its last 8 bytes read big-endian. */
uint64_t kvdex_ingest_digest_u64(const uint8_t *p, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_INGEST_DECODE_H */

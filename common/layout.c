/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pure functions over the region layout (layout.h): mapping, checksums and
 * record decoding. Shared by the server (which writes images) and the client
 * (which validates what it read). Nothing here touches the network or keeps
 * state, so all of it is unit-tested directly.
 */
#include "common/layout.h"

#include <errno.h>
#include <string.h>
/* Inline XXH3: every bucket a reader validates or the writer seals is one
 * call, and the shared library call costs twice the inlined code. */
#define XXH_INLINE_ALL
#include <xxhash.h>

void
kvdex_geometry_from_hdr(const struct kvdex_region_hdr *hdr, struct kvdex_geometry *g)
{
	g->hash_seed = hdr->hash_seed;
	g->table_off = hdr->table_off;
	g->overflow_off = hdr->overflow_off;
	g->table_log2 = hdr->table_log2;
	g->table_gen = hdr->table_gen;
	g->overflow_count = hdr->overflow_count;
	g->bucket_size = hdr->bucket_size;
}

uint64_t
kvdex_key_hash(uint16_t ns, uint64_t key, uint64_t seed)
{
	uint8_t buf[10];

	/* Fixed little-endian encoding so every host maps a key alike. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(buf, &key, sizeof(key));
	memcpy(buf + 8, &ns, sizeof(ns));
#else
	for (int i = 0; i < 8; i++) {
		buf[i] = (uint8_t)(key >> (8 * i));
	}
	buf[8] = (uint8_t)ns;
	buf[9] = (uint8_t)(ns >> 8);
#endif
	return XXH3_64bits_withSeed(buf, sizeof(buf), seed);
}

uint32_t
kvdex_home_index(const struct kvdex_geometry *g, uint16_t ns, uint64_t key)
{
	if (g->table_log2 == 0) {
		return 0;
	}
	return (uint32_t)(kvdex_key_hash(ns, key, g->hash_seed) >> (64 - g->table_log2));
}

uint32_t
kvdex_home_and_bit(const struct kvdex_geometry *g, uint16_t ns, uint64_t key, uint32_t *bit)
{
	uint64_t h = kvdex_key_hash(ns, key, g->hash_seed);

	*bit = 1u << (h & 31u);
	return g->table_log2 == 0 ? 0 : (uint32_t)(h >> (64 - g->table_log2));
}

uint32_t
kvdex_ovf_bit(const struct kvdex_geometry *g, uint16_t ns, uint64_t key)
{
	return 1u << (kvdex_key_hash(ns, key, g->hash_seed) & 31u);
}

uint64_t
kvdex_home_offset(const struct kvdex_geometry *g, uint32_t idx)
{
	return g->table_off + (uint64_t)idx * g->bucket_size;
}

uint64_t
kvdex_overflow_offset(const struct kvdex_geometry *g, uint32_t ov)
{
	return g->overflow_off + (uint64_t)ov * g->bucket_size;
}

uint64_t
kvdex_block_checksum(const void *img, size_t len, uint64_t seed, uint64_t off)
{
	assert(len > sizeof(uint64_t));
	return XXH3_64bits_withSeed((const uint8_t *)img + sizeof(uint64_t), len - sizeof(uint64_t),
				    seed ^ off);
}

void
kvdex_block_seal(void *img, size_t len, uint64_t seed, uint64_t off)
{
	uint64_t sum = kvdex_block_checksum(img, len, seed, off);

	memcpy(img, &sum, sizeof(sum));
}

bool
kvdex_block_valid(const void *img, size_t len, uint64_t seed, uint64_t off)
{
	uint64_t sum;

	memcpy(&sum, img, sizeof(sum));
	return sum == kvdex_block_checksum(img, len, seed, off);
}

int
kvdex_hdr_check(const struct kvdex_region_hdr *hdr)
{
	if (!kvdex_block_valid(hdr, sizeof(*hdr), 0, 0)) {
		return -EAGAIN;
	}
	if (hdr->magic != KVDEX_REGION_MAGIC || hdr->layout_version != KVDEX_LAYOUT_VERSION ||
	    hdr->hdr_size != KVDEX_HDR_SIZE) {
		return -EPROTO;
	}
	if (hdr->bucket_size < KVDEX_BUCKET_SIZE_MIN || hdr->bucket_size > KVDEX_BUCKET_SIZE_MAX ||
	    (hdr->bucket_size & (hdr->bucket_size - 1)) != 0 || hdr->table_log2 > 31) {
		return -EPROTO;
	}
	return 0;
}

void
kvdex_bucket_seal(void *img, uint32_t bucket_size, uint64_t seed, uint64_t off)
{
	kvdex_block_seal(img, kvdex_bucket_sealed_len(img, bucket_size), seed, off);
}

enum kvdex_bucket_check
kvdex_bucket_check(const void *img, const struct kvdex_geometry *g, uint64_t off)
{
	struct kvdex_bucket_hdr bh;

	if (!kvdex_block_valid(img, kvdex_bucket_sealed_len(img, g->bucket_size), g->hash_seed,
			       off)) {
		return KVDEX_BUCKET_TORN;
	}
	memcpy(&bh, img, sizeof(bh));
	if (bh.table_gen != g->table_gen || (bh.flags & KVDEX_BUCKET_RETIRED)) {
		return KVDEX_BUCKET_STALE;
	}
	if (bh.used > g->bucket_size - KVDEX_BUCKET_HDR_SIZE ||
	    (bh.next != 0 && bh.next > g->overflow_count)) {
		return KVDEX_BUCKET_CORRUPT;
	}
	return KVDEX_BUCKET_OK;
}

unsigned
kvdex_record_max_holders(uint32_t bucket_size)
{
	size_t room = bucket_size - KVDEX_BUCKET_HDR_SIZE - KVDEX_RECORD_HDR_SIZE;
	size_t n = room / KVDEX_HOLDER_SIZE;

	return n > UINT8_MAX ? UINT8_MAX : (unsigned)n;
}

int
kvdex_row_check(const struct kvdex_worker_row *row, uint64_t seed, uint64_t off)
{
	return kvdex_block_valid(row, sizeof(*row), seed, off) ? 0 : -EAGAIN;
}

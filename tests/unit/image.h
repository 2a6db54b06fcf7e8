/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers that build region images by hand, byte for byte as
 * common/layout.h describes them, without going through the server. The unit
 * suites use them to feed kvdex_bucket_check() and kvdex_record_next() with
 * both well-formed and deliberately malformed images.
 *
 * Images are plain byte arrays; callers provide 64-byte aligned storage so
 * that the record views returned by kvdex_record_next() are aligned.
 */
#ifndef KVDEX_TESTS_UNIT_IMAGE_H
#define KVDEX_TESTS_UNIT_IMAGE_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/layout.h"

/* Start an empty bucket image: header filled, record area zeroed. */
static inline void
tb_init(void *img, uint32_t bucket_size, uint32_t table_gen, uint32_t owner, uint8_t flags)
{
	struct kvdex_bucket_hdr bh = {
		.table_gen = table_gen,
		.chain_seq = 1,
		.owner = owner,
		.flags = flags,
	};

	memset(img, 0, bucket_size);
	memcpy(img, &bh, sizeof(bh));
}

static inline struct kvdex_bucket_hdr
tb_hdr(const void *img)
{
	struct kvdex_bucket_hdr bh;

	memcpy(&bh, img, sizeof(bh));
	return bh;
}

static inline void
tb_set_hdr(void *img, const struct kvdex_bucket_hdr *bh)
{
	memcpy(img, bh, sizeof(*bh));
}

/*
 * Append one record. Returns its offset in the record area, or -ENOSPC if it
 * does not fit in the bucket. Updates used and nrecords.
 */
static inline int
tb_add_record(void *img, uint32_t bucket_size, uint64_t key, uint16_t ns, uint8_t flags,
	      const struct kvdex_holder *h, unsigned nh, const struct kvdex_loc *l, unsigned nl)
{
	struct kvdex_bucket_hdr bh = tb_hdr(img);
	uint8_t *area = (uint8_t *)img + KVDEX_BUCKET_HDR_SIZE;
	size_t size = kvdex_record_size(nh, nl);
	struct kvdex_record_hdr rh = {
		.key = key,
		.ns = ns,
		.nholders = (uint8_t)nh,
		.flags = flags,
		.atime = 7,
		.hits = 3,
		.nlocs = (uint8_t)nl,
	};
	size_t pos = bh.used;

	if (pos + size > bucket_size - KVDEX_BUCKET_HDR_SIZE) {
		return -ENOSPC;
	}
	memset(area + pos, 0, size);
	memcpy(area + pos, &rh, sizeof(rh));
	if (nh > 0) {
		memcpy(area + pos + KVDEX_RECORD_HDR_SIZE, h, nh * sizeof(*h));
	}
	if (nl > 0) {
		memcpy(area + pos + size - nl * sizeof(*l), l, nl * sizeof(*l));
	}
	bh.used = (uint16_t)(pos + size);
	bh.nrecords++;
	tb_set_hdr(img, &bh);
	return (int)pos;
}

static inline struct kvdex_holder
tb_holder(uint16_t slot, unsigned tier, unsigned epoch, int spec, uint8_t count)
{
	struct kvdex_holder h = {
		.slot = slot,
		.bits = (uint8_t)((tier & KVDEX_H_TIER_MASK) | (spec ? KVDEX_H_SPEC : 0) |
				  ((epoch << KVDEX_H_EPOCH_SHIFT) & KVDEX_H_EPOCH_MASK)),
		.count = count,
	};

	return h;
}

/* A plausible, sealed region header (seed 0, offset 0). */
static inline void
th_init(struct kvdex_region_hdr *hdr, uint32_t table_log2, uint32_t bucket_size)
{
	memset(hdr, 0, sizeof(*hdr));
	hdr->magic = KVDEX_REGION_MAGIC;
	hdr->layout_version = KVDEX_LAYOUT_VERSION;
	hdr->hdr_size = KVDEX_HDR_SIZE;
	hdr->server_incarnation = 0x1122334455667788ull;
	hdr->hash_seed = 0xfeedfacecafebeefull;
	hdr->workers_off = 4096;
	hdr->workers_cap = 64;
	hdr->table_off = hdr->workers_off + (uint64_t)hdr->workers_cap * KVDEX_ROW_SIZE;
	hdr->table_log2 = table_log2;
	hdr->table_gen = 3;
	hdr->bucket_size = bucket_size;
	hdr->overflow_off = hdr->table_off + ((uint64_t)bucket_size << table_log2);
	hdr->overflow_count = 16;
	hdr->region_size = hdr->overflow_off + (uint64_t)hdr->overflow_count * bucket_size;
	hdr->clock_ticks = 100;
	kvdex_block_seal(hdr, sizeof(*hdr), 0, 0);
}

#endif /* KVDEX_TESTS_UNIT_IMAGE_H */

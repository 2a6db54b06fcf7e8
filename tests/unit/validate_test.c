/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validated blocks (docs/DESIGN.md §3.2): a sealed image validates; any
 * single changed byte anywhere makes it invalid; an image is only valid at
 * the offset it was sealed for; an all-zero page never validates. On top of
 * the checksum, kvdex_hdr_check() and kvdex_bucket_check() classify images
 * as torn, stale or corrupt.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdlib.h>

#include "common/layout.h"
#include "image.h"

TestSuite(validate, .timeout = 20);

#define SEED 0x0123456789abcdefull

static const uint32_t bucket_sizes[] = {128, 256, 1024, 4096};

/* A bucket with a few records, sealed at `off`. */
static void
make_bucket(uint8_t *img, const struct kvdex_geometry *g, uint64_t off)
{
	struct kvdex_holder h[3] = {
		tb_holder(1, 0, 1, 0, 1),
		tb_holder(2, 1, 2, 0, 2),
		tb_holder(3, 2, 3, 1, 40),
	};
	struct kvdex_loc l = {.addr = 0xdead0000, .len = 4096, .holder = 1};

	tb_init(img, g->bucket_size, g->table_gen, 5, KVDEX_BUCKET_HOME);
	cr_assert(ge(i32, tb_add_record(img, g->bucket_size, 111, 1, 0, h, 3, NULL, 0), 0));
	cr_assert(ge(i32, tb_add_record(img, g->bucket_size, 222, 2, 0, h, 2, &l, 1), 0));
	kvdex_bucket_seal(img, g->bucket_size, g->hash_seed, off);
}

static struct kvdex_geometry
geom(uint32_t bucket_size)
{
	struct kvdex_geometry g = {
		.hash_seed = SEED,
		.table_off = 1 << 20,
		.overflow_off = (1 << 20) + 1024 * bucket_size,
		.table_log2 = 10,
		.table_gen = 9,
		.overflow_count = 128,
		.bucket_size = bucket_size,
	};

	return g;
}

/* 1. Seal then valid, for buckets of every size, rows and the header. */
Test(validate, seal_then_valid)
{
	_Alignas(64) uint8_t img[4096];
	struct kvdex_region_hdr hdr;
	struct kvdex_worker_row row = {.worker_id = 7, .state = KVDEX_ROW_LIVE, .dp_size = 1};

	for (size_t i = 0; i < 4; i++) {
		struct kvdex_geometry g = geom(bucket_sizes[i]);
		uint64_t off = kvdex_home_offset(&g, 17);

		make_bucket(img, &g, off);
		cr_assert(kvdex_block_valid(img, kvdex_bucket_sealed_len(img, g.bucket_size), SEED,
					    off));
		cr_assert(eq(i32, kvdex_bucket_check(img, &g, off), KVDEX_BUCKET_OK));
	}
	kvdex_block_seal(&row, sizeof(row), SEED, 4096 + 128);
	cr_assert(eq(i32, kvdex_row_check(&row, SEED, 4096 + 128), 0));
	th_init(&hdr, 10, 256);
	cr_assert(eq(i32, kvdex_hdr_check(&hdr), 0));
}

/* 2. The checksum is the first 8 bytes and covers exactly the rest. */
Test(validate, checksum_field)
{
	_Alignas(64) uint8_t img[256];
	uint64_t sum;

	memset(img, 0x5a, sizeof(img));
	kvdex_block_seal(img, sizeof(img), SEED, 4096);
	memcpy(&sum, img, sizeof(sum));
	cr_assert(eq(u64, sum, kvdex_block_checksum(img, sizeof(img), SEED, 4096)));
	/* The checksum field itself does not feed the checksum. */
	memset(img, 0, 8);
	cr_assert(eq(u64, sum, kvdex_block_checksum(img, sizeof(img), SEED, 4096)));
}

/* Flip each byte with each mask in turn; every variant must be rejected. */
static void
flip_every_byte(uint8_t *img, size_t len, uint64_t seed, uint64_t off)
{
	static const uint8_t masks[] = {0x01, 0x80, 0xff};

	for (size_t i = 0; i < len; i++) {
		for (size_t m = 0; m < 3; m++) {
			img[i] ^= masks[m];
			cr_assert(not(kvdex_block_valid(img, len, seed, off)),
				  "byte %zu mask %#x still valid", i, masks[m]);
			img[i] ^= masks[m];
		}
	}
	cr_assert(kvdex_block_valid(img, len, seed, off));
}

/* 3. Any single changed byte of a bucket's header or used record area
 * invalidates it (the length sealed is the image's own: flipping `used`
 * changes it too); the bytes past `used` are neither sealed nor read. */
Test(validate, bucket_flip_any_byte)
{
	_Alignas(64) uint8_t img[4096];
	static const uint8_t masks[] = {0x01, 0x80, 0xff};

	for (size_t i = 0; i < 4; i++) {
		struct kvdex_geometry g = geom(bucket_sizes[i]);
		uint64_t off = kvdex_overflow_offset(&g, 3);
		size_t sealed;

		make_bucket(img, &g, off);
		sealed = kvdex_bucket_sealed_len(img, g.bucket_size);
		cr_assert(lt(sz, sealed, g.bucket_size));
		for (size_t b = 0; b < g.bucket_size; b++) {
			for (size_t m = 0; m < 3; m++) {
				enum kvdex_bucket_check want =
					b < sealed ? KVDEX_BUCKET_TORN : KVDEX_BUCKET_OK;

				img[b] ^= masks[m];
				cr_assert(eq(i32, kvdex_bucket_check(img, &g, off), want),
					  "bucket %u: byte %zu mask %#x", g.bucket_size, b,
					  masks[m]);
				img[b] ^= masks[m];
			}
		}
		cr_assert(eq(i32, kvdex_bucket_check(img, &g, off), KVDEX_BUCKET_OK));
	}
}

/* 4. Any single changed byte of a worker row invalidates it. */
Test(validate, row_flip_any_byte)
{
	struct kvdex_worker_row row = {
		.worker_id = 42,
		.state = KVDEX_ROW_LIVE,
		.dp_rank = 1,
		.dp_size = 4,
		.epoch = {1, 2, 3, 4},
		.queued = 5,
		.prefill_tokens = 1 << 20,
	};
	uint64_t off = 4096 + 5 * KVDEX_ROW_SIZE;

	strcpy(row.addr, "10.0.0.1:8000");
	kvdex_block_seal(&row, sizeof(row), SEED, off);
	flip_every_byte((uint8_t *)&row, sizeof(row), SEED, off);
	((uint8_t *)&row)[70] ^= 0x10;
	cr_assert(eq(i32, kvdex_row_check(&row, SEED, off), -EAGAIN));
}

/* 5. Any single changed byte of the header invalidates it (seed 0, off 0),
 * and kvdex_hdr_check() reports it as torn. */
Test(validate, hdr_flip_any_byte)
{
	struct kvdex_region_hdr hdr;
	uint8_t *p = (uint8_t *)&hdr;

	th_init(&hdr, 10, 256);
	flip_every_byte(p, sizeof(hdr), 0, 0);
	for (size_t i = 0; i < sizeof(hdr); i++) {
		p[i] ^= 0x40;
		cr_assert(eq(i32, kvdex_hdr_check(&hdr), -EAGAIN), "byte %zu", i);
		p[i] ^= 0x40;
	}
}

/* 6. An image valid at offset A is invalid at any other offset B (a read
 * from a stale address), including the neighbouring bucket and a row. */
Test(validate, offset_bound)
{
	_Alignas(64) uint8_t img[4096];

	for (size_t i = 0; i < 4; i++) {
		struct kvdex_geometry g = geom(bucket_sizes[i]);
		uint64_t a = kvdex_home_offset(&g, 100);
		const uint64_t others[] = {
			kvdex_home_offset(&g, 99),
			kvdex_home_offset(&g, 101),
			kvdex_overflow_offset(&g, 0),
			a + 1,
			a ^ (1ull << 40),
			0,
		};

		make_bucket(img, &g, a);
		cr_assert(eq(i32, kvdex_bucket_check(img, &g, a), KVDEX_BUCKET_OK));
		for (size_t j = 0; j < sizeof(others) / sizeof(others[0]); j++) {
			cr_assert(not(kvdex_block_valid(img,
							kvdex_bucket_sealed_len(img, g.bucket_size),
							SEED, others[j])));
			cr_assert(
				eq(i32, kvdex_bucket_check(img, &g, others[j]), KVDEX_BUCKET_TORN));
		}
	}
}

/* 7. The seed is part of the checksum: a different region's image fails. */
Test(validate, seed_bound)
{
	_Alignas(64) uint8_t img[256];
	struct kvdex_geometry g = geom(256);

	make_bucket(img, &g, g.table_off);
	g.hash_seed ^= 1;
	cr_assert(eq(i32, kvdex_bucket_check(img, &g, g.table_off), KVDEX_BUCKET_TORN));
}

/* 8. An all-zero image (fresh, unwritten memory) never validates. */
Test(validate, all_zero_invalid)
{
	_Alignas(64) uint8_t zero[4096] = {0};
	struct kvdex_region_hdr hdr = {0};

	for (size_t i = 0; i < 4; i++) {
		struct kvdex_geometry g = geom(bucket_sizes[i]);

		for (uint32_t b = 0; b < 64; b++) {
			uint64_t off = kvdex_home_offset(&g, b);

			cr_assert(not(kvdex_block_valid(zero, g.bucket_size, SEED, off)));
			cr_assert(eq(i32, kvdex_bucket_check(zero, &g, off), KVDEX_BUCKET_TORN));
			g.hash_seed = 0;
			cr_assert(not(kvdex_block_valid(zero, g.bucket_size, 0, off)));
			g.hash_seed = SEED;
		}
	}
	cr_assert(eq(i32, kvdex_hdr_check(&hdr), -EAGAIN));
	cr_assert(eq(i32, kvdex_row_check((const struct kvdex_worker_row *)zero, SEED, 4096),
		     -EAGAIN));
	cr_assert(eq(i32, kvdex_row_check((const struct kvdex_worker_row *)zero, 0, 0), -EAGAIN));
}

/* Reseal a header after a change and return kvdex_hdr_check(). */
static int
hdr_check_after(void (*change)(struct kvdex_region_hdr *))
{
	struct kvdex_region_hdr hdr;

	th_init(&hdr, 10, 256);
	change(&hdr);
	kvdex_block_seal(&hdr, sizeof(hdr), 0, 0);
	return kvdex_hdr_check(&hdr);
}

static void
bad_magic(struct kvdex_region_hdr *h)
{
	h->magic = 0x12345678;
}

static void
bad_version(struct kvdex_region_hdr *h)
{
	h->layout_version = KVDEX_LAYOUT_VERSION + 1;
}

static void
bad_hdr_size(struct kvdex_region_hdr *h)
{
	h->hdr_size = 64;
}

static void
bucket_too_small(struct kvdex_region_hdr *h)
{
	h->bucket_size = 64;
}

static void
bucket_too_big(struct kvdex_region_hdr *h)
{
	h->bucket_size = 8192;
}

static void
bucket_not_pow2(struct kvdex_region_hdr *h)
{
	h->bucket_size = 384;
}

static void
bucket_zero(struct kvdex_region_hdr *h)
{
	h->bucket_size = 0;
}

static void
log2_too_big(struct kvdex_region_hdr *h)
{
	h->table_log2 = 32;
}

static void
bucket_min(struct kvdex_region_hdr *h)
{
	h->bucket_size = KVDEX_BUCKET_SIZE_MIN;
}

static void
bucket_max(struct kvdex_region_hdr *h)
{
	h->bucket_size = KVDEX_BUCKET_SIZE_MAX;
}

static void
log2_max(struct kvdex_region_hdr *h)
{
	h->table_log2 = 31;
}

/* 9. A sealed header with impossible contents is -EPROTO, not -EAGAIN: the
 * reader must not retry forever against a foreign or newer layout. */
Test(validate, hdr_check_eproto)
{
	cr_assert(eq(i32, hdr_check_after(bad_magic), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(bad_version), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(bad_hdr_size), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(bucket_too_small), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(bucket_too_big), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(bucket_not_pow2), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(bucket_zero), -EPROTO));
	cr_assert(eq(i32, hdr_check_after(log2_too_big), -EPROTO));
}

/* 10. The limits themselves are accepted. */
Test(validate, hdr_check_limits_ok)
{
	cr_assert(eq(i32, hdr_check_after(bucket_min), 0));
	cr_assert(eq(i32, hdr_check_after(bucket_max), 0));
	cr_assert(eq(i32, hdr_check_after(log2_max), 0));
}

/* 11. A header sealed with the region seed (not 0) or at another offset is
 * torn: headers always use seed 0, offset 0. */
Test(validate, hdr_check_wrong_seal)
{
	struct kvdex_region_hdr hdr;

	th_init(&hdr, 10, 256);
	kvdex_block_seal(&hdr, sizeof(hdr), hdr.hash_seed, 0);
	cr_assert(eq(i32, kvdex_hdr_check(&hdr), -EAGAIN));
	kvdex_block_seal(&hdr, sizeof(hdr), 0, 4096);
	cr_assert(eq(i32, kvdex_hdr_check(&hdr), -EAGAIN));
}

/* Change a sealed bucket's header, reseal it, classify it. */
static enum kvdex_bucket_check
bucket_check_after(const struct kvdex_geometry *g, void (*change)(struct kvdex_bucket_hdr *))
{
	_Alignas(64) uint8_t img[4096];
	uint64_t off = kvdex_home_offset(g, 3);
	struct kvdex_bucket_hdr bh;

	make_bucket(img, g, off);
	bh = tb_hdr(img);
	change(&bh);
	tb_set_hdr(img, &bh);
	kvdex_bucket_seal(img, g->bucket_size, g->hash_seed, off);
	return kvdex_bucket_check(img, g, off);
}

static void
older_gen(struct kvdex_bucket_hdr *bh)
{
	bh->table_gen--;
}

static void
newer_gen(struct kvdex_bucket_hdr *bh)
{
	bh->table_gen++;
}

static void
retired(struct kvdex_bucket_hdr *bh)
{
	bh->flags |= KVDEX_BUCKET_RETIRED;
}

static void
retired_overflow(struct kvdex_bucket_hdr *bh)
{
	bh->flags = KVDEX_BUCKET_OVERFLOW | KVDEX_BUCKET_RETIRED;
}

static void
used_too_big(struct kvdex_bucket_hdr *bh)
{
	bh->used = 4096;
}

static void
used_one_too_big(struct kvdex_bucket_hdr *bh)
{
	/* geometry bucket_size is 256: room is 224 */
	bh->used = 225;
}

static void
used_full(struct kvdex_bucket_hdr *bh)
{
	bh->used = 224;
}

static void
next_past_overflow(struct kvdex_bucket_hdr *bh)
{
	bh->next = 129; /* overflow_count is 128; next is index + 1 */
}

static void
next_huge(struct kvdex_bucket_hdr *bh)
{
	bh->next = UINT32_MAX;
}

static void
next_last(struct kvdex_bucket_hdr *bh)
{
	bh->next = 128;
}

static void
next_first(struct kvdex_bucket_hdr *bh)
{
	bh->next = 1;
}

/* 12. Other generation or RETIRED → STALE (re-read the header). */
Test(validate, bucket_check_stale)
{
	struct kvdex_geometry g = geom(256);

	cr_assert(eq(i32, bucket_check_after(&g, older_gen), KVDEX_BUCKET_STALE));
	cr_assert(eq(i32, bucket_check_after(&g, newer_gen), KVDEX_BUCKET_STALE));
	cr_assert(eq(i32, bucket_check_after(&g, retired), KVDEX_BUCKET_STALE));
	cr_assert(eq(i32, bucket_check_after(&g, retired_overflow), KVDEX_BUCKET_STALE));
}

/* 13. Valid checksum but impossible contents → CORRUPT. */
Test(validate, bucket_check_corrupt)
{
	struct kvdex_geometry g = geom(256);

	cr_assert(eq(i32, bucket_check_after(&g, used_too_big), KVDEX_BUCKET_CORRUPT));
	cr_assert(eq(i32, bucket_check_after(&g, used_one_too_big), KVDEX_BUCKET_CORRUPT));
	cr_assert(eq(i32, bucket_check_after(&g, next_past_overflow), KVDEX_BUCKET_CORRUPT));
	cr_assert(eq(i32, bucket_check_after(&g, next_huge), KVDEX_BUCKET_CORRUPT));
}

/* 14. The boundary values are fine. */
Test(validate, bucket_check_bounds_ok)
{
	struct kvdex_geometry g = geom(256);

	cr_assert(eq(i32, bucket_check_after(&g, used_full), KVDEX_BUCKET_OK));
	cr_assert(eq(i32, bucket_check_after(&g, next_last), KVDEX_BUCKET_OK));
	cr_assert(eq(i32, bucket_check_after(&g, next_first), KVDEX_BUCKET_OK));
}

/* 15. Torn wins over everything: a stale-and-torn image is TORN (the reader
 * cannot trust any field of an image whose checksum fails). */
Test(validate, bucket_check_torn_first)
{
	_Alignas(64) uint8_t img[256];
	struct kvdex_geometry g = geom(256);
	uint64_t off = kvdex_home_offset(&g, 3);
	struct kvdex_bucket_hdr bh;

	make_bucket(img, &g, off);
	bh = tb_hdr(img);
	bh.table_gen++;
	bh.used = 4000;
	tb_set_hdr(img, &bh); /* not resealed */
	cr_assert(eq(i32, kvdex_bucket_check(img, &g, off), KVDEX_BUCKET_TORN));
}

/* Is mix, as far as a reader looks (header and used records), image x? */
static bool
same_sealed(const uint8_t *mix, const uint8_t *x)
{
	size_t len = kvdex_bucket_sealed_len(mix, 256);

	return len == kvdex_bucket_sealed_len(x, 256) && memcmp(mix, x, len) == 0;
}

/*
 * 16. A torn mixture of two sealed images (prefix of one, suffix of the
 * other, at every 8-byte split) is rejected, whichever comes first, unless
 * what it seals is exactly one of the two (the other's extra bytes lie past
 * its `used`, where nobody reads).
 */
Test(validate, torn_mixture_rejected)
{
	_Alignas(64) uint8_t a[256], b[256], mix[256];
	struct kvdex_geometry g = geom(256);
	uint64_t off = kvdex_home_offset(&g, 3);
	struct kvdex_holder h = tb_holder(9, 0, 0, 0, 1);

	make_bucket(a, &g, off);
	memcpy(b, a, sizeof(b));
	cr_assert(ge(i32, tb_add_record(b, 256, 333, 1, 0, &h, 1, NULL, 0), 0));
	kvdex_bucket_seal(b, 256, SEED, off);
	cr_assert(eq(i32, kvdex_bucket_check(b, &g, off), KVDEX_BUCKET_OK));
	for (size_t split = 8; split < 256; split += 8) {
		for (int order = 0; order < 2; order++) {
			const uint8_t *first = order == 0 ? a : b, *second = order == 0 ? b : a;
			enum kvdex_bucket_check want = KVDEX_BUCKET_TORN;

			memcpy(mix, first, split);
			memcpy(mix + split, second + split, 256 - split);
			if (same_sealed(mix, a) || same_sealed(mix, b)) {
				want = KVDEX_BUCKET_OK;
			}
			cr_assert(eq(i32, kvdex_bucket_check(mix, &g, off), want), "%s split %zu",
				  order == 0 ? "a|b" : "b|a", split);
		}
	}
}

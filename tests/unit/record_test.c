/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Records and holders (docs/DESIGN.md §3.3): record sizes, the holder bits
 * (tier, speculative, epoch), liveness across the 8-bit expiry wrap, and
 * kvdex_record_next() over hand-built buckets, well-formed and malformed.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>

#include "common/layout.h"
#include "image.h"

TestSuite(record, .timeout = 10);

/* 1. Record sizes: 16 B header, holders padded to 8 B, 16 B per location. */
Test(record, record_size)
{
	cr_assert(eq(sz, kvdex_record_size(0, 0), 16));
	cr_assert(eq(sz, kvdex_record_size(1, 0), 24));
	cr_assert(eq(sz, kvdex_record_size(2, 0), 24));
	cr_assert(eq(sz, kvdex_record_size(3, 0), 32));
	cr_assert(eq(sz, kvdex_record_size(4, 0), 32));
	cr_assert(eq(sz, kvdex_record_size(5, 0), 40));
	cr_assert(eq(sz, kvdex_record_size(1, 1), 40));
	cr_assert(eq(sz, kvdex_record_size(3, 2), 64));
	cr_assert(eq(sz, kvdex_record_size(52, 0), 224));
	cr_assert(eq(sz, kvdex_record_size(255, 255), 16 + 1024 + 255 * 16));
	/* Every size is a multiple of 8 so records stay aligned. */
	for (unsigned h = 0; h < 256; h++) {
		for (unsigned l = 0; l <= h; l += 17) {
			cr_assert(eq(sz, kvdex_record_size(h, l) % 8, 0));
		}
	}
}

/* 2. Holders per record: the record area minus the record header, capped at
 * 255 (nholders is a u8). 52 at 256 B, as the design says. */
Test(record, record_max_holders)
{
	cr_assert(eq(u32, kvdex_record_max_holders(128), 20));
	cr_assert(eq(u32, kvdex_record_max_holders(256), 52));
	cr_assert(eq(u32, kvdex_record_max_holders(512), 116));
	cr_assert(eq(u32, kvdex_record_max_holders(1024), 244));
	cr_assert(eq(u32, kvdex_record_max_holders(2048), 255));
	cr_assert(eq(u32, kvdex_record_max_holders(4096), 255));
	for (uint32_t bs = 128; bs <= 4096; bs *= 2) {
		unsigned n = kvdex_record_max_holders(bs);

		cr_assert(le(sz, kvdex_record_size(n, 0), bs - KVDEX_BUCKET_HDR_SIZE));
		if (n < 255) {
			/* One more holder would not fit (it may fit padding-wise
			 * only when n is odd: 4 B of padding were free). */
			cr_assert(gt(sz, kvdex_record_size(n + 2, 0), bs - KVDEX_BUCKET_HDR_SIZE));
		}
	}
}

/* 3. Tier bits survive the spec and epoch bits around them. */
Test(record, holder_tier_bits)
{
	for (unsigned tier = 0; tier < KVDEX_NR_TIERS; tier++) {
		for (unsigned epoch = 0; epoch < 16; epoch++) {
			for (int spec = 0; spec <= 1; spec++) {
				struct kvdex_holder h = tb_holder(7, tier, epoch, spec, 1);

				cr_assert(eq(u32, kvdex_holder_tier(&h), tier));
				cr_assert(eq(u32, (h.bits & KVDEX_H_EPOCH_MASK) >> 4, epoch));
				cr_assert(eq(i32, !!(h.bits & KVDEX_H_SPEC), spec));
				/* bit 3 is unused */
				cr_assert(eq(u32, h.bits & 0x08u, 0));
			}
		}
	}
	cr_assert(eq(u32, KVDEX_H_TIER_MASK | KVDEX_H_SPEC | KVDEX_H_EPOCH_MASK, 0xf7u));
}

/* 4. A holder is live only while its epoch equals its slot's epoch for its
 * tier; only the low 4 bits of the slot epoch count. */
Test(record, holder_live_epoch)
{
	for (unsigned e = 0; e < 16; e++) {
		struct kvdex_holder h = tb_holder(1, 0, e, 0, 1);

		for (unsigned se = 0; se < 16; se++) {
			cr_assert(eq(i32, kvdex_holder_live(&h, (uint8_t)se, 0), e == se),
				  "holder epoch %u slot epoch %u", e, se);
		}
		cr_assert(kvdex_holder_live(&h, (uint8_t)(e | 0x30), 1000));
	}
	/* A copy count does not expire, whatever the clock says. */
	struct kvdex_holder h = tb_holder(1, 1, 2, 0, 0);

	for (uint32_t now = 0; now < 1024; now += 7) {
		cr_assert(kvdex_holder_live(&h, 2, now));
	}
	/* A wrong epoch also hides a speculative holder that has not expired. */
	h = tb_holder(1, 1, 2, 1, 50);
	cr_assert(not(kvdex_holder_live(&h, 3, 10)));
	cr_assert(kvdex_holder_live(&h, 2, 10));
}

/* 5. Speculative expiry: live while (int8_t)(count - now) > 0, so a holder
 * with expiry E is live at E-127..E-1 and dead at E..E+128, across the wrap of
 * the 8-bit tick and of the 32-bit clock. */
Test(record, holder_live_spec_expiry_wrap)
{
	static const uint32_t bases[] = {0,   10,  120, 127,  128,   200,
					 250, 255, 256, 1000, 65535, UINT32_MAX - 5};

	for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
		uint32_t stored_at = bases[b];

		for (unsigned ttl = 1; ttl < 128; ttl += 9) {
			struct kvdex_holder h = tb_holder(3, 0, 5, 1, (uint8_t)(stored_at + ttl));

			/* Live from the store until just before expiry. */
			cr_assert(kvdex_holder_live(&h, 5, stored_at), "base %u ttl %u", stored_at,
				  ttl);
			cr_assert(kvdex_holder_live(&h, 5, stored_at + ttl - 1));
			/* Dead at and after the expiry tick, for half the wrap. */
			cr_assert(not(kvdex_holder_live(&h, 5, stored_at + ttl)), "base %u ttl %u",
				  stored_at, ttl);
			cr_assert(not(kvdex_holder_live(&h, 5, stored_at + ttl + 1)));
			cr_assert(not(kvdex_holder_live(&h, 5, stored_at + ttl + 127)));
			cr_assert(not(kvdex_holder_live(&h, 5, stored_at + ttl + 128)));
		}
	}
}

/* 6. Concrete wrap cases spelled out. */
Test(record, holder_live_spec_examples)
{
	struct kvdex_holder h = tb_holder(3, 2, 1, 1, 4); /* expires at tick 4 (mod 256) */

	cr_assert(kvdex_holder_live(&h, 1, 250)); /* stored at 250, ttl 10: 6 left */
	cr_assert(kvdex_holder_live(&h, 1, 255));
	cr_assert(kvdex_holder_live(&h, 1, 256 + 3));
	cr_assert(not(kvdex_holder_live(&h, 1, 256 + 4)));
	cr_assert(not(kvdex_holder_live(&h, 1, 4)));
	cr_assert(not(kvdex_holder_live(&h, 1, 5)));
	/* 127 ticks ahead: still live; 128 ahead is read as expired. */
	h.count = 127;
	cr_assert(kvdex_holder_live(&h, 1, 0));
	h.count = 128;
	cr_assert(not(kvdex_holder_live(&h, 1, 0)));
	cr_assert(kvdex_holder_live(&h, 1, 1));
	cr_assert(eq(u32, kvdex_holder_tier(&h), KVDEX_TIER_DISK));
}

/* Check one record view against what was written. */
static void
expect_record(const struct kvdex_record_view *r, uint64_t key, uint16_t ns, uint8_t flags,
	      const struct kvdex_holder *h, unsigned nh, const struct kvdex_loc *l, unsigned nl)
{
	cr_assert(eq(u64, r->hdr.key, key));
	cr_assert(eq(u32, r->hdr.ns, ns));
	cr_assert(eq(u32, r->hdr.flags, flags));
	cr_assert(eq(u32, r->hdr.nholders, nh));
	cr_assert(eq(u32, r->hdr.nlocs, nl));
	cr_assert(eq(u32, r->hdr.atime, 7));
	cr_assert(eq(u32, r->hdr.hits, 3));
	cr_assert(eq(sz, r->size, kvdex_record_size(nh, nl)));
	cr_assert(eq(i32, memcmp(r->holders, h, nh * sizeof(*h)), 0));
	if (nl > 0) {
		cr_assert(eq(i32, memcmp(r->locs, l, nl * sizeof(*l)), 0));
	}
	cr_assert(eq(sz, (uintptr_t)r->holders % 4, 0));
	cr_assert(eq(sz, (uintptr_t)r->locs % 8, 0));
}

/* 7. Several records, with and without locations, come back in order, then
 * the iterator reports the end (and keeps doing so). */
Test(record, next_iterates_all)
{
	_Alignas(64) uint8_t img[512];
	struct kvdex_holder h[5] = {
		tb_holder(1, 0, 1, 0, 1),     tb_holder(2, 1, 1, 0, 2),
		tb_holder(3, 2, 4, 1, 77),    tb_holder(4, 3, 15, 0, 255),
		tb_holder(65535, 0, 0, 0, 1),
	};
	struct kvdex_loc l[3] = {
		{.addr = 0x1000, .len = 4096, .holder = 0},
		{.addr = 0xffffffffffff0000ull, .len = 1, .holder = 2},
		{.addr = 42, .len = UINT32_MAX, .holder = 1},
	};
	struct kvdex_record_view r;
	size_t pos = 0;

	tb_init(img, 512, 1, 0, KVDEX_BUCKET_HOME);
	cr_assert(eq(i32, tb_add_record(img, 512, 100, 1, 0, h, 1, NULL, 0), 0));
	cr_assert(eq(i32, tb_add_record(img, 512, 200, 2, KVDEX_REC_FUSED, h, 5, NULL, 0), 24));
	cr_assert(eq(i32, tb_add_record(img, 512, 300, 1, 0, h, 3, l, 2), 24 + 40));
	cr_assert(eq(i32, tb_add_record(img, 512, 100, 1, 0, h + 3, 2, l + 2, 1), 24 + 40 + 64));

	cr_assert(eq(i32, kvdex_record_next(img, 512, &pos, &r), 1));
	expect_record(&r, 100, 1, 0, h, 1, NULL, 0);
	cr_assert(eq(sz, pos, 24));
	cr_assert(eq(i32, kvdex_record_next(img, 512, &pos, &r), 1));
	expect_record(&r, 200, 2, KVDEX_REC_FUSED, h, 5, NULL, 0);
	cr_assert(eq(i32, kvdex_record_next(img, 512, &pos, &r), 1));
	expect_record(&r, 300, 1, 0, h, 3, l, 2);
	cr_assert(eq(i32, kvdex_record_next(img, 512, &pos, &r), 1));
	expect_record(&r, 100, 1, 0, h + 3, 2, l + 2, 1);
	cr_assert(eq(sz, pos, tb_hdr(img).used));
	cr_assert(eq(i32, kvdex_record_next(img, 512, &pos, &r), 0));
	cr_assert(eq(i32, kvdex_record_next(img, 512, &pos, &r), 0));
}

/* 8. An empty bucket has no records. */
Test(record, next_empty)
{
	_Alignas(64) uint8_t img[256];
	struct kvdex_record_view r;
	size_t pos = 0;

	tb_init(img, 256, 1, 0, KVDEX_BUCKET_HOME);
	cr_assert(eq(i32, kvdex_record_next(img, 256, &pos, &r), 0));
}

/* 9. A record of the maximum holder count fills a bucket exactly. */
Test(record, next_full_bucket)
{
	for (uint32_t bs = 128; bs <= 1024; bs *= 2) {
		_Alignas(64) uint8_t img[1024];
		struct kvdex_holder h[255];
		unsigned n = kvdex_record_max_holders(bs);
		struct kvdex_record_view r;
		size_t pos = 0;

		for (unsigned i = 0; i < n; i++) {
			h[i] = tb_holder((uint16_t)i, i % 4, i % 16, 0, 1);
		}
		tb_init(img, bs, 1, 0, KVDEX_BUCKET_HOME);
		cr_assert(eq(i32, tb_add_record(img, bs, 5, 0, 0, h, n, NULL, 0), 0));
		cr_assert(eq(i32, kvdex_record_next(img, bs, &pos, &r), 1));
		expect_record(&r, 5, 0, 0, h, n, NULL, 0);
		cr_assert(eq(i32, kvdex_record_next(img, bs, &pos, &r), 0));
	}
}

/* Overwrite bytes of the record area at `at`. */
static void
poke(uint8_t *img, size_t at, const void *p, size_t n)
{
	memcpy(img + KVDEX_BUCKET_HDR_SIZE + at, p, n);
}

static void
set_used(uint8_t *img, uint16_t used)
{
	struct kvdex_bucket_hdr bh = tb_hdr(img);

	bh.used = used;
	tb_set_hdr(img, &bh);
}

/* Iterate to the end; return the first non-1 result and how many records
 * came back before it. */
static int
walk(const uint8_t *img, uint32_t bs, unsigned *nrec)
{
	struct kvdex_record_view r;
	size_t pos = 0;
	int rc;

	*nrec = 0;
	while ((rc = kvdex_record_next(img, bs, &pos, &r)) == 1) {
		(*nrec)++;
	}
	return rc;
}

/* A bucket with two good records (24 B and 40 B): used = 64. */
static void
two_records(uint8_t *img)
{
	struct kvdex_holder h[2] = {tb_holder(1, 0, 0, 0, 1), tb_holder(2, 0, 0, 0, 1)};
	struct kvdex_loc l = {.addr = 1, .len = 2, .holder = 0};

	tb_init(img, 256, 1, 0, KVDEX_BUCKET_HOME);
	tb_add_record(img, 256, 1, 0, 0, h, 2, NULL, 0);
	tb_add_record(img, 256, 2, 0, 0, h, 1, &l, 1);
}

/* 10. A record that runs past `used` is -EPROTO (after the good ones). */
Test(record, next_record_past_used)
{
	_Alignas(64) uint8_t img[256];
	unsigned n;

	two_records(img);
	cr_assert(eq(i32, walk(img, 256, &n), 0));
	cr_assert(eq(u32, n, 2));
	set_used(img, 63); /* the second record needs 40 B, only 39 left */
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 1));
	set_used(img, 24 + 16); /* a whole header, but not the holders */
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 1));
	set_used(img, 24 + 8); /* not even a record header */
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 1));
}

/* 11. nholders larger than what remains is -EPROTO. */
Test(record, next_nholders_too_big)
{
	_Alignas(64) uint8_t img[256];
	uint8_t big = 200;
	unsigned n;

	two_records(img);
	poke(img, 24 + 10, &big, 1);
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 1));
}

/* 12. A record with no holders is -EPROTO. */
Test(record, next_nholders_zero)
{
	_Alignas(64) uint8_t img[256];
	uint8_t zero = 0;
	unsigned n;

	two_records(img);
	poke(img, 10, &zero, 1);
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 0));
}

/* 13. More locations than holders is -EPROTO, even if it would fit. */
Test(record, next_nlocs_gt_nholders)
{
	_Alignas(64) uint8_t img[256];
	struct kvdex_holder h = tb_holder(1, 0, 0, 0, 1);
	struct kvdex_loc l[2] = {{.addr = 1}, {.addr = 2}};
	uint8_t nlocs = 2;
	unsigned n;

	tb_init(img, 256, 1, 0, KVDEX_BUCKET_HOME);
	/* Build a 1-holder 2-location record by hand: room for it in `used`. */
	cr_assert(ge(i32, tb_add_record(img, 256, 9, 0, 0, &h, 1, l, 1), 0));
	set_used(img, (uint16_t)kvdex_record_size(1, 2));
	poke(img, 15, &nlocs, 1);
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 0));
}

/* 14. `used` beyond the record area is -EPROTO from the first call. */
Test(record, next_used_past_bucket)
{
	_Alignas(64) uint8_t img[256];
	unsigned n;

	two_records(img);
	set_used(img, 256 - KVDEX_BUCKET_HDR_SIZE + 1);
	cr_assert(eq(i32, walk(img, 256, &n), -EPROTO));
	cr_assert(eq(u32, n, 0));
	/* The limit itself is fine: the area is scanned up to `used`. */
	set_used(img, 64);
	cr_assert(eq(i32, walk(img, 256, &n), 0));
	cr_assert(eq(u32, n, 2));
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pure lookup merge (client/src/merge.c) on synthetic bucket images:
 * prefix matching, fastest tier, liveness (epochs, speculative expiry, row
 * state), fused records, records split across a chain, namespace filtering,
 * sorting and truncation.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "tests/client/region.h"

#define BS 256u
#define NS 3u

static uint8_t imgs[8][BS] __attribute__((aligned(64)));
static struct kvdex_worker_row rows[8] __attribute__((aligned(64)));
static struct kvdex_merge_srv srv;

static void
setup(void)
{
	memset(imgs, 0, sizeof(imgs));
	memset(rows, 0, sizeof(rows));
	/* slot i = worker 100 + i, rank 0; slot 5 = worker 100 rank 1 */
	for (unsigned i = 0; i < 8; i++) {
		rows[i].worker_id = 100 + i;
		rows[i].state = KVDEX_ROW_LIVE;
		rows[i].dp_size = 1;
	}
	rows[5].worker_id = 100;
	rows[5].dp_rank = 1;
	rows[6].state = KVDEX_ROW_FREE;
	srv.rows = rows;
	srv.nrows = 8;
	srv.now_ticks = 100;
	srv.bucket_size = BS;
	srv.ns_id = NS;
}

TestSuite(merge, .init = setup, .timeout = 5);

static struct tr_rec
rec(uint64_t key, unsigned nh, const struct kvdex_holder *h)
{
	struct tr_rec r = {.key = key, .ns = NS, .nh = nh};

	memcpy(r.h, h, nh * sizeof(*h));
	return r;
}

/* Merge one block per image (image i holds block keys[i]). */
static int
run(const uint64_t *keys, unsigned n, unsigned flags, struct kvdex_lookup_result *res)
{
	struct kvdex_merge m;
	int rc = 0;

	kvdex_merge_init(&m, flags);
	for (unsigned i = 0; i < n && kvdex_merge_alive(&m); i++) {
		const void *p[1] = {imgs[i]};
		struct kvdex_merge_block b = {.key = keys[i], .srv = &srv, .imgs = p, .nimgs = 1};

		rc = kvdex_merge_add(&m, &b);
		if (rc < 0) {
			break;
		}
	}
	if (rc == 0) {
		kvdex_merge_finish(&m, res);
	}
	kvdex_merge_fini(&m);
	return rc;
}

static void
put(unsigned i, const struct tr_rec *r, unsigned n)
{
	tr_build_bucket(imgs[i], BS, 1, 0, 1, 0, KVDEX_BUCKET_HOME, r, n);
}

/* 1: a worker's match stops at its first missing block, even if it holds
 * later ones. */
Test(merge, prefix_stops_at_first_gap)
{
	uint64_t keys[4] = {11, 12, 13, 14};
	struct kvdex_holder a = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holder b = tr_holder(1, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holder ab[2] = {a, b};
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct tr_rec r;

	r = rec(11, 2, ab);
	put(0, &r, 1);
	r = rec(12, 2, ab);
	put(1, &r, 1);
	r = rec(13, 1, &a);
	put(2, &r, 1);
	r = rec(14, 2, ab);
	put(3, &r, 1);
	cr_assert(eq(int, run(keys, 4, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 2));
	cr_assert(eq(u32, out[0].worker_id, 100));
	cr_assert(eq(u16, out[0].matched, 4));
	cr_assert(eq(u32, out[1].worker_id, 101));
	cr_assert(eq(u16, out[1].matched, 2));
	cr_assert(eq(i32, res.best, 0));
	cr_assert(eq(u32, res.longest, 4));
	cr_assert(eq(u32, res.fused, 0));
}

/* 2: tier_blocks counts each block under the fastest tier held. */
Test(merge, fastest_tier_per_block)
{
	uint64_t keys[2] = {1, 2};
	struct kvdex_holder h0[2] = {tr_holder(0, KVDEX_TIER_HOST, 0, 1),
				     tr_holder(0, KVDEX_TIER_GPU, 0, 2)};
	struct kvdex_holder h1[1] = {tr_holder(0, KVDEX_TIER_DISK, 0, 1)};
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct tr_rec r;

	r = rec(1, 2, h0);
	put(0, &r, 1);
	r = rec(2, 1, h1);
	put(1, &r, 1);
	cr_assert(eq(int, run(keys, 2, 0, &res), 0));
	cr_assert(eq(u16, out[0].matched, 2));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_GPU], 1));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_HOST], 0));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_DISK], 1));
	cr_assert(eq(u16, out[0].spec_blocks, 0));
}

/* 3: a holder whose epoch differs from its slot's epoch for that tier is dead. */
Test(merge, dead_epoch_is_invisible)
{
	uint64_t keys[1] = {5};
	struct kvdex_holder h[2] = {tr_holder(0, KVDEX_TIER_GPU, 1, 1),
				    tr_holder(1, KVDEX_TIER_HOST, 3, 1)};
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct tr_rec r = rec(5, 2, h);

	rows[0].epoch[KVDEX_TIER_GPU] = 2; /* cleared since */
	rows[1].epoch[KVDEX_TIER_HOST] = 3;
	put(0, &r, 1);
	cr_assert(eq(int, run(keys, 1, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u32, out[0].worker_id, 101));
}

/* 4: speculative holders expire at the header's clock; live ones count in
 * spec_blocks; NO_SPECULATIVE drops them. */
Test(merge, speculative_expiry)
{
	uint64_t keys[1] = {5};
	struct kvdex_holder h[3] = {
		tr_spec_holder(0, KVDEX_TIER_GPU, 0, 99),  /* expired (now 100) */
		tr_spec_holder(1, KVDEX_TIER_GPU, 0, 100), /* expires now: dead */
		tr_spec_holder(2, KVDEX_TIER_GPU, 0, 105), /* live */
	};
	struct kvdex_holding out[3];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 3};
	struct tr_rec r = rec(5, 3, h);

	put(0, &r, 1);
	cr_assert(eq(int, run(keys, 1, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u32, out[0].worker_id, 102));
	cr_assert(eq(u16, out[0].spec_blocks, 1));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_GPU], 1));
	cr_assert(eq(int, run(keys, 1, KVDEX_LOOKUP_NO_SPECULATIVE, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 0));
	cr_assert(eq(i32, res.best, -1));
}

/* 5: expiry uses wrap-around tick arithmetic. */
Test(merge, speculative_expiry_wraps)
{
	uint64_t keys[1] = {5};
	struct kvdex_holder h[1] = {tr_spec_holder(0, KVDEX_TIER_GPU, 0, 3)};
	struct kvdex_holding out[1];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 1};
	struct tr_rec r = rec(5, 1, h);

	srv.now_ticks = 254; /* expiry 3 is 5 ticks ahead */
	put(0, &r, 1);
	cr_assert(eq(int, run(keys, 1, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 1));
}

/* 6: FUSED records never match; result.fused marks where only one did. */
Test(merge, fused_never_matches)
{
	uint64_t keys[2] = {1, 2};
	struct kvdex_holder a = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct tr_rec r;

	r = rec(1, 1, &a);
	put(0, &r, 1);
	r = rec(2, 1, &a);
	r.flags = KVDEX_REC_FUSED;
	put(1, &r, 1);
	cr_assert(eq(int, run(keys, 2, 0, &res), 0));
	cr_assert(eq(u16, out[0].matched, 1));
	cr_assert(eq(u32, res.fused, 2));
}

/* 7: a block split over records in several images of its chain is merged;
 * records of other keys and other namespaces are ignored. */
Test(merge, multi_record_merge_and_ns_filter)
{
	struct kvdex_holder a = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holder b = tr_holder(1, KVDEX_TIER_HOST, 0, 1);
	struct kvdex_holder c = tr_holder(2, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct tr_rec r0[3], r1[1];
	struct kvdex_merge m;
	const void *p[2] = {imgs[0], imgs[1]};
	struct kvdex_merge_block blk = {.key = 9, .srv = &srv, .imgs = p, .nimgs = 2};

	r0[0] = rec(8, 1, &c); /* other key */
	r0[1] = rec(9, 1, &a);
	r0[2] = rec(9, 1, &c);
	r0[2].ns = NS + 1; /* other namespace */
	r1[0] = rec(9, 1, &b);
	put(0, r0, 3);
	put(1, r1, 1);
	kvdex_merge_init(&m, 0);
	cr_assert(eq(int, kvdex_merge_add(&m, &blk), 0));
	kvdex_merge_finish(&m, &res);
	kvdex_merge_fini(&m);
	cr_assert(eq(u32, res.nholdings_total, 2));
	cr_assert(eq(u32, out[0].worker_id, 100)); /* GPU first */
	cr_assert(eq(u32, out[1].worker_id, 101));
}

/* 8: holders on free rows or slots past the table are ignored; dp ranks of
 * one worker are separate rows. */
Test(merge, rows_state_and_ranks)
{
	uint64_t keys[1] = {5};
	struct kvdex_holder h[4] = {
		tr_holder(6, KVDEX_TIER_GPU, 0, 1),  /* free row */
		tr_holder(40, KVDEX_TIER_GPU, 0, 1), /* no such slot */
		tr_holder(0, KVDEX_TIER_GPU, 0, 1),
		tr_holder(5, KVDEX_TIER_GPU, 0, 1), /* worker 100 rank 1 */
	};
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct tr_rec r = rec(5, 4, h);

	put(0, &r, 1);
	cr_assert(eq(int, run(keys, 1, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 2));
	cr_assert(eq(u32, out[0].worker_id, 100));
	cr_assert(eq(u16, out[0].dp_rank, 0));
	cr_assert(eq(u32, out[1].worker_id, 100));
	cr_assert(eq(u16, out[1].dp_rank, 1));
}

/* 9: order = longest, then most GPU blocks, then lowest load, then id; only
 * cap rows are written but all are counted. */
Test(merge, sort_and_truncate)
{
	uint64_t keys[1] = {5};
	struct kvdex_holder h[4] = {
		tr_holder(3, KVDEX_TIER_HOST, 0, 1),
		tr_holder(2, KVDEX_TIER_GPU, 0, 1),
		tr_holder(1, KVDEX_TIER_GPU, 0, 1),
		tr_holder(0, KVDEX_TIER_GPU, 0, 1),
	};
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct tr_rec r = rec(5, 4, h);

	rows[0].queued = 5;
	rows[1].running = 1;
	put(0, &r, 1);
	cr_assert(eq(int, run(keys, 1, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 4));
	cr_assert(eq(u32, res.nholdings, 2));
	cr_assert(eq(u32, out[0].worker_id, 102)); /* GPU, load 0 */
	cr_assert(eq(u32, out[1].worker_id, 101)); /* GPU, load 1 */
}

/* 10: a malformed record inside a valid image is an error, not a guess. */
Test(merge, malformed_record)
{
	uint64_t keys[1] = {5};
	struct kvdex_holding out[1];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 1};
	struct kvdex_bucket_hdr bh;
	struct tr_rec r = rec(5, 0, NULL);

	put(0, &r, 1); /* a record with no holders */
	memcpy(&bh, imgs[0], sizeof(bh));
	cr_assert(eq(u16, bh.used, 16));
	cr_assert(eq(int, run(keys, 1, 0, &res), -EPROTO));
}

/* 11: nothing matched at block 0 -> no rows, and no later block can add any. */
Test(merge, no_match_at_first_block)
{
	uint64_t keys[2] = {1, 2};
	struct kvdex_holder a = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[1];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 1};
	struct tr_rec r = rec(2, 1, &a);
	struct kvdex_merge m;
	const void *p0[1] = {imgs[0]}, *p1[1] = {imgs[1]};
	struct kvdex_merge_block b0 = {.key = 1, .srv = &srv, .imgs = p0, .nimgs = 1};
	struct kvdex_merge_block b1 = {.key = 2, .srv = &srv, .imgs = p1, .nimgs = 1};

	(void)keys;
	put(0, NULL, 0);
	put(1, &r, 1);
	kvdex_merge_init(&m, 0);
	cr_assert(eq(int, kvdex_merge_add(&m, &b0), 0));
	cr_assert(not(kvdex_merge_alive(&m)));
	cr_assert(eq(int, kvdex_merge_add(&m, &b1), 0));
	kvdex_merge_finish(&m, &res);
	kvdex_merge_fini(&m);
	cr_assert(eq(u32, res.nholdings_total, 0));
	cr_assert(eq(i32, res.best, -1));
}

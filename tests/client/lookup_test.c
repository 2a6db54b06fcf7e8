/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex_lookup() end to end over a fake transport serving synthetic regions:
 * round trips, torn images (re-read, never returned), stale geometry after a
 * resize, overflow chains (owner / chain_seq checks), worker-row refresh on a
 * workers_version change, placement across two servers, batches.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "tests/client/region.h"

#define NS 7u

TestSuite(lookup, .timeout = 10);

static struct tr_region R;

static void
region_with_workers(struct tr_region *r)
{
	tr_init(r, 6, 8, 256, 16);
	for (uint32_t s = 0; s < 4; s++) {
		tr_set_row(r, s, 100 + s, 0, NULL);
	}
}

/* Add a record of key with holders to its home bucket. */
static uint32_t
store(struct tr_region *r, uint64_t key, unsigned nh, const struct kvdex_holder *h)
{
	struct tr_rec rec = {.key = key, .ns = NS, .nh = nh};

	memcpy(rec.h, h, nh * sizeof(*h));
	tr_add_home_rec(r, &rec);
	return tr_home(r, NS, key);
}

/* Keys 1..n that all land in distinct home buckets. */
static unsigned
distinct_keys(struct tr_region *r, uint64_t *keys, unsigned n)
{
	bool used[1u << 10] = {0};
	unsigned k = 0;

	for (uint64_t key = 1; k < n; key++) {
		uint32_t h = tr_home(r, NS, key);

		if (!used[h]) {
			used[h] = true;
			keys[k++] = key;
		}
	}
	return k;
}

static struct kvdex_client *
one_server(struct fake_conn **fc)
{
	uint32_t ids[1] = {NS};
	struct kvdex_client *c;

	*fc = fake_conn_new(&R);
	c = tc_client(fc, 1, ids);
	cr_assert(not(eq(ptr, c, NULL)));
	return c;
}

/* 1: a chain in one server costs one round trip and reads header + buckets. */
Test(lookup, basic_one_round_trip)
{
	struct kvdex_holder g0 = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holder g1 = tr_holder(1, KVDEX_TIER_HOST, 0, 1);
	struct kvdex_holder both[2] = {g0, g1};
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t keys[3];

	region_with_workers(&R);
	distinct_keys(&R, keys, 3);
	store(&R, keys[0], 2, both);
	store(&R, keys[1], 2, both);
	store(&R, keys[2], 1, &g0);
	c = one_server(&fc);
	fc->rounds = 0;
	fc->ops_total = 0;
	cr_assert(eq(int, kvdex_lookup(c, 0, keys, 3, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 1));
	cr_assert(eq(u32, res.retries, 0));
	cr_assert(eq(u32, fc->ops_total, 4));
	cr_assert(eq(u32, res.nblocks, 3));
	cr_assert(eq(u32, res.nholdings_total, 2));
	cr_assert(eq(u32, out[0].worker_id, 100));
	cr_assert(eq(u16, out[0].matched, 3));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_GPU], 3));
	cr_assert(eq(u32, out[1].worker_id, 101));
	cr_assert(eq(u16, out[1].matched, 2));
	cr_assert(eq(u16, out[1].tier_blocks[KVDEX_HOST], 2));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 2: a torn bucket is re-read, counted, and the good image used. */
Test(lookup, torn_bucket_is_reread)
{
	struct kvdex_holder g0 = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 77;
	uint32_t home;

	region_with_workers(&R);
	home = store(&R, key, 1, &g0);
	c = one_server(&fc);
	fc->torn_off = kvdex_home_offset(&R.geo, home);
	fc->torn_left = 3;
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.retries, 3));
	cr_assert(eq(u32, res.round_trips, 4));
	cr_assert(eq(u16, out[0].matched, 1));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 3: an image that never validates is never returned: -EAGAIN once the
 * client's timeout has passed. */
Test(lookup, always_torn_gives_eagain)
{
	struct kvdex_holder g0 = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 77;
	uint32_t home;

	region_with_workers(&R);
	home = store(&R, key, 1, &g0);
	c = one_server(&fc);
	c->timeout_ms = 50;
	fc->torn_off = kvdex_home_offset(&R.geo, home);
	fc->torn_left = UINT32_MAX;
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), -EAGAIN));
	cr_assert(eq(u32, res.nholdings, 0));
	cr_assert(eq(u32, res.nholdings_total, 0));
	cr_assert(gt(u32, res.retries, 16));
	cr_assert(gt(sz, strlen(kvdex_client_last_error(c)), 0));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 3b: a writer stuck in the middle of a copy (descheduled) tears an image
 * for many re-reads in a row; the lookup backs off and succeeds once the copy
 * completes, well within the timeout. */
Test(lookup, long_tear_is_waited_out)
{
	struct kvdex_holder g0 = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 77;
	uint32_t home;

	region_with_workers(&R);
	home = store(&R, key, 1, &g0);
	c = one_server(&fc);
	fc->torn_off = kvdex_home_offset(&R.geo, home);
	fc->torn_left = 200;
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.retries, 200));
	cr_assert(eq(u16, out[0].matched, 1));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 4: a torn header discards the server's images of that round. */
Test(lookup, torn_header_is_reread)
{
	struct kvdex_holder g0 = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 77;

	region_with_workers(&R);
	store(&R, key, 1, &g0);
	c = one_server(&fc);
	fc->torn_off = 0;
	fc->torn_left = 2;
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.retries, 2));
	cr_assert(eq(u32, res.round_trips, 3));
	cr_assert(eq(u16, out[0].matched, 1));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/*
 * 5: resize after the client cached the geometry: new table elsewhere, new
 * table_gen, old buckets retired. The lookup sees the new header in the same
 * batch, drops the old images and reads the new table.
 */
Test(lookup, stale_generation_after_resize)
{
	struct kvdex_holder g0 = tr_holder(2, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 4242;
	uint64_t old_table, nbuckets;

	region_with_workers(&R);
	store(&R, key, 1, &g0);
	c = one_server(&fc);
	/* The server resizes: table at the end of the region, gen 2. */
	old_table = R.hdr->table_off;
	nbuckets = 1ull << R.hdr->table_log2;
	R.hdr->table_off = R.hdr->region_size;
	R.hdr->table_log2 += 1;
	R.hdr->overflow_off = R.hdr->table_off + 2 * nbuckets * 256;
	R.hdr->region_size = R.hdr->overflow_off + R.hdr->overflow_count * 256;
	R.hdr->table_gen = 2;
	tr_seal_hdr(&R);
	for (uint32_t i = 0; i < 2 * nbuckets; i++) {
		tr_put_home(&R, i, NULL, 0);
	}
	store(&R, key, 1, &g0);
	for (uint32_t i = 0; i < nbuckets; i++) {
		struct kvdex_geometry og = R.geo;

		og.table_off = old_table;
		og.table_gen = 1;
		tr_build_bucket(R.mem + kvdex_home_offset(&og, i), 256, 1, i, 1, 0,
				KVDEX_BUCKET_HOME | KVDEX_BUCKET_RETIRED, NULL, 0);
		kvdex_bucket_seal(R.mem + kvdex_home_offset(&og, i), 256, R.geo.hash_seed,
				  kvdex_home_offset(&og, i));
	}
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 2));
	cr_assert(ge(u32, res.retries, 1));
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u32, out[0].worker_id, 102));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* A home bucket whose chain continues into overflow bucket 0. */
static uint32_t
chain_setup(uint64_t key, uint32_t ov_owner_delta, uint32_t ov_seq)
{
	/* The key's first record says more follow (the server's packing). */
	struct tr_rec home_rec = {.key = key, .ns = NS, .nh = 1, .flags = KVDEX_REC_MORE};
	struct tr_rec ov_rec = {.key = key, .ns = NS, .nh = 1};
	uint32_t home = tr_home(&R, NS, key);

	home_rec.h[0] = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	ov_rec.h[0] = tr_holder(1, KVDEX_TIER_DISK, 0, 1);
	tr_put_bucket(&R, kvdex_home_offset(&R.geo, home), home, 5, 1, KVDEX_BUCKET_HOME, &home_rec,
		      1);
	tr_put_bucket(&R, kvdex_overflow_offset(&R.geo, 0), home + ov_owner_delta, ov_seq, 0,
		      KVDEX_BUCKET_OVERFLOW, &ov_rec, 1);
	return home;
}

/* 6: following next costs a dependent round trip; records of the block in
 * both buckets are merged. */
Test(lookup, overflow_chain_followed)
{
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 99;

	region_with_workers(&R);
	chain_setup(key, 0, 5);
	c = one_server(&fc);
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 2));
	cr_assert(eq(u32, res.retries, 0));
	cr_assert(eq(u32, res.nholdings_total, 2));
	cr_assert(eq(u32, out[0].worker_id, 100));
	cr_assert(eq(u32, out[1].worker_id, 101));
	cr_assert(eq(u16, out[1].tier_blocks[KVDEX_DISK], 1));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 6b: a chain continues, but the key's record in the home bucket is its last
 * (no MORE) and nothing else is asked: no dependent round trip. */
Test(lookup, overflow_not_followed_when_key_settled)
{
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct tr_rec home_rec = {.key = 99, .ns = NS, .nh = 1};
	struct tr_rec ov_rec = {.key = 98, .ns = NS, .nh = 1};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 99;
	uint32_t home;

	region_with_workers(&R);
	home = tr_home(&R, NS, key);
	home_rec.h[0] = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	ov_rec.h[0] = tr_holder(1, KVDEX_TIER_DISK, 0, 1);
	tr_put_bucket(&R, kvdex_home_offset(&R.geo, home), home, 5, 1, KVDEX_BUCKET_HOME, &home_rec,
		      1);
	tr_put_bucket(&R, kvdex_overflow_offset(&R.geo, 0), home, 5, 0, KVDEX_BUCKET_OVERFLOW,
		      &ov_rec, 1);
	c = one_server(&fc);
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 1));
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u32, out[0].worker_id, 100));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 6c: an absent key is looked for in the overflow bucket only when the home
 * bucket's ovf_filter has its bit. */
Test(lookup, overflow_filter_decides_absent_keys)
{
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct tr_rec ov_rec = {.key = 77, .ns = NS, .nh = 1};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 77;
	uint32_t home, bit;
	uint64_t off;

	region_with_workers(&R);
	home = tr_home(&R, NS, key);
	bit = kvdex_ovf_bit(&R.geo, NS, key);
	off = kvdex_home_offset(&R.geo, home);
	ov_rec.h[0] = tr_holder(1, KVDEX_TIER_HOST, 0, 1);
	tr_put_bucket(&R, off, home, 5, 1, KVDEX_BUCKET_HOME, NULL, 0);
	tr_put_bucket(&R, kvdex_overflow_offset(&R.geo, 0), home, 5, 0, KVDEX_BUCKET_OVERFLOW,
		      &ov_rec, 1);
	c = one_server(&fc);
	/* filter without the key's bit: the key is absent after one read */
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 1));
	cr_assert(eq(u32, res.nholdings_total, 0));
	/* with the bit: the overflow bucket is read and the key found there */
	((struct kvdex_bucket_hdr *)(R.mem + off))->ovf_filter = bit;
	kvdex_bucket_seal(R.mem + off, R.geo.bucket_size, R.geo.hash_seed, off);
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 2));
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u32, out[0].worker_id, 101));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 7: an overflow image owned by another chain is never accepted. */
Test(lookup, overflow_owner_mismatch_rejected)
{
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 99;

	region_with_workers(&R);
	chain_setup(key, 1, 5);
	c = one_server(&fc);
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), -EAGAIN));
	cr_assert(eq(u32, res.nholdings, 0));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* The server rewrites the chain between the client's two round trips. */
static void
restamp_hook(struct fake_conn *fc, unsigned round)
{
	uint64_t key = *(uint64_t *)fc->arg;

	if (round == 1) {
		struct tr_rec home_rec = {.key = key, .ns = NS, .nh = 1, .flags = KVDEX_REC_MORE};
		struct tr_rec ov_rec = {.key = key, .ns = NS, .nh = 1};
		uint32_t home = tr_home(fc->r, NS, key);

		home_rec.h[0] = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
		ov_rec.h[0] = tr_holder(2, KVDEX_TIER_HOST, 0, 1);
		tr_put_bucket(fc->r, kvdex_home_offset(&fc->r->geo, home), home, 6, 1,
			      KVDEX_BUCKET_HOME, &home_rec, 1);
		tr_put_bucket(fc->r, kvdex_overflow_offset(&fc->r->geo, 0), home, 6, 0,
			      KVDEX_BUCKET_OVERFLOW, &ov_rec, 1);
	}
}

/* 8: chain_seq moved between round trips: the chain is re-read from home and
 * the result is the new snapshot only (worker 102, never 101). */
Test(lookup, overflow_chain_seq_mismatch_rereads_chain)
{
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 99;

	region_with_workers(&R);
	chain_setup(key, 0, 5);
	c = one_server(&fc);
	fc->rounds = 0;
	fc->hook = restamp_hook;
	fc->arg = &key;
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.retries, 1));
	cr_assert(eq(u32, res.round_trips, 4));
	cr_assert(eq(u32, res.nholdings_total, 2));
	cr_assert(eq(u32, out[0].worker_id, 100));
	cr_assert(eq(u32, out[1].worker_id, 102));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 9: a clear bumps the slot's epoch and workers_version: the client re-reads
 * the rows and the old holders vanish. */
Test(lookup, workers_version_change_rereads_rows)
{
	struct kvdex_holder h[2] = {tr_holder(0, KVDEX_TIER_GPU, 0, 1),
				    tr_holder(1, KVDEX_TIER_GPU, 0, 1)};
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint8_t ep[4] = {1, 0, 0, 0};
	uint64_t key = 5;

	region_with_workers(&R);
	store(&R, key, 2, h);
	c = one_server(&fc);
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.nholdings_total, 2));
	tr_set_row(&R, 0, 100, 0, ep);
	R.hdr->workers_version++;
	tr_seal_hdr(&R);
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 2)); /* buckets, then rows */
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u32, out[0].worker_id, 101));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 10: two servers: each key is read from the server placement names, in the
 * same round trip; a worker's slots differ per server but it is one row. */
Test(lookup, two_servers_one_round_trip)
{
	static struct tr_region R2;
	struct tr_region *regs[2] = {&R, &R2};
	struct fake_conn *fcs[2];
	uint32_t ids[2] = {NS, NS};
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_client *c;
	uint64_t keys[16];
	unsigned on[2] = {0, 0};
	uint64_t seeds[2];

	tr_init(&R, 6, 8, 256, 16);
	tr_init(&R2, 6, 8, 256, 16);
	tr_set_row(&R, 0, 100, 0, NULL); /* worker 100 is slot 0 on s0, slot 3 on s1 */
	tr_set_row(&R2, 3, 100, 0, NULL);
	seeds[0] = kvdex_server_seed("s0");
	seeds[1] = kvdex_server_seed("s1");
	for (unsigned k = 0; k < 16; k++) {
		uint64_t nsh = kvdex_ns_hash("m", "", "", 16, "opaque");
		unsigned s;
		struct kvdex_holder h;

		keys[k] = 1000 + k;
		s = kvdex_place(seeds, 2, nsh, keys[k]);
		on[s]++;
		h = tr_holder(s == 0 ? 0 : 3, KVDEX_TIER_GPU, 0, 1);
		store(regs[s], keys[k], 1, &h);
	}
	cr_assert(gt(u32, on[0], 0));
	cr_assert(gt(u32, on[1], 0));
	fcs[0] = fake_conn_new(&R);
	fcs[1] = fake_conn_new(&R2);
	c = tc_client(fcs, 2, ids);
	cr_assert(not(eq(ptr, c, NULL)));
	cr_assert(eq(int, kvdex_lookup(c, 0, keys, 16, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 1));
	cr_assert(eq(u32, res.nholdings_total, 1));
	cr_assert(eq(u16, out[0].matched, 16));
	kvdex_client_destroy(c);
	tr_fini(&R);
	tr_fini(&R2);
}

/* 11: chains longer than one batch continue while someone still matches,
 * and stop after the first batch when nobody holds block 0. */
Test(lookup, batches_continue_only_while_matching)
{
	struct kvdex_holder g0 = tr_holder(0, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_holding out[2];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 2};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t keys[100];

	tr_init(&R, 9, 8, 256, 16);
	tr_set_row(&R, 0, 100, 0, NULL);
	distinct_keys(&R, keys, 100);
	for (unsigned k = 0; k < 100; k++) {
		store(&R, keys[k], 1, &g0);
	}
	c = one_server(&fc);
	cr_assert(eq(int, kvdex_lookup(c, 0, keys, 100, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 2));
	cr_assert(eq(u16, out[0].matched, 100));
	cr_assert(eq(u32, res.longest, 100));
	tr_put_home(&R, tr_home(&R, NS, keys[0]), NULL, 0);
	cr_assert(eq(int, kvdex_lookup(c, 0, keys, 100, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 1));
	cr_assert(eq(u32, res.nholdings_total, 0));
	cr_assert(eq(i32, res.best, -1));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 11b: each key reads its own chain, so two keys sharing a home bucket read
 * it twice in the one round; a block with more records than the reader notes
 * (a block with many holders) is merged by scanning its images. */
Test(lookup, shared_bucket_and_many_records)
{
	static const unsigned tiers[5] = {KVDEX_TIER_GPU, KVDEX_TIER_HOST, KVDEX_TIER_GPU,
					  KVDEX_TIER_DISK, KVDEX_TIER_HOST};
	struct kvdex_holding out[4];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 4};
	struct kvdex_holder g1 = tr_holder(1, KVDEX_TIER_GPU, 0, 1);
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t keys[2] = {5, 6};

	region_with_workers(&R);
	while (tr_home(&R, NS, keys[1]) != tr_home(&R, NS, keys[0])) {
		keys[1]++;
	}
	/* Block 0: five one-holder records (slots 0, 1, 2, 3, 0), all but the
	 * last saying more follow. */
	for (unsigned i = 0; i < 5; i++) {
		struct tr_rec rec = {.key = keys[0], .ns = NS, .nh = 1};

		rec.flags = i < 4 ? KVDEX_REC_MORE : 0;
		rec.h[0] = tr_holder((uint16_t)(i % 4), tiers[i], 0, 1);
		tr_add_home_rec(&R, &rec);
	}
	store(&R, keys[1], 1, &g1);
	c = one_server(&fc);
	fc->ops_total = 0;
	cr_assert(eq(int, kvdex_lookup(c, 0, keys, 2, 0, &res), 0));
	cr_assert(eq(u32, res.round_trips, 1));
	cr_assert(eq(u32, fc->ops_total, 3)); /* header + the bucket once per key */
	cr_assert(eq(u32, res.nholdings_total, 4));
	cr_assert(eq(u32, out[0].worker_id, 101));
	cr_assert(eq(u16, out[0].matched, 2));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_GPU], 1));
	cr_assert(eq(u16, out[0].tier_blocks[KVDEX_HOST], 1));
	for (unsigned i = 1; i < 4; i++) {
		cr_assert(eq(u16, out[i].matched, 1));
	}
	/* Worker 100 holds block 0 on GPU (slot 0's first record) and host. */
	for (unsigned i = 1; i < 4; i++) {
		if (out[i].worker_id == 100) {
			cr_assert(eq(u16, out[i].tier_blocks[KVDEX_GPU], 1));
		}
	}
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* 12: argument checks. */
Test(lookup, bad_arguments)
{
	struct kvdex_holding out[1];
	struct kvdex_lookup_result res = {.holdings = out, .cap = 1};
	struct kvdex_client *c;
	struct fake_conn *fc;
	uint64_t key = 1;

	region_with_workers(&R);
	c = one_server(&fc);
	cr_assert(eq(int, kvdex_lookup(c, 5, &key, 1, 0, &res), -EINVAL));
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 0, 0, &res), -EINVAL));
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, NULL), -EINVAL));
	res.holdings = NULL;
	cr_assert(eq(int, kvdex_lookup(c, 0, &key, 1, 0, &res), -EINVAL));
	kvdex_client_destroy(c);
	tr_fini(&R);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Index writer tests, driven directly (no sockets). Every check reads the
 * region the way a client does (reader.h): what matters is what a reader
 * sees, plus the server's counters agreeing with a full scan.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <urcu.h>

#include "reader.h"
#include "server/index.h"
#include "server/region.h"
#include "server/workers.h"

#define NS 1
#define MB (1ull << 20)

static struct kvdex_region *rg;
static struct kvdex_index *ix;
static struct kvdex_workers *wt;
static uint32_t nslots;

static void
fx_close(void)
{
	kvdex_workers_destroy(wt);
	kvdex_index_destroy(ix);
	kvdex_region_destroy(rg);
	wt = NULL;
	ix = NULL;
	rg = NULL;
}

/* A region, an index and one worker whose dp ranks are slots 0..slots-1. */
static void
fx_open(uint64_t region_max, uint64_t capacity, uint32_t slots, uint32_t bucket_size)
{
	struct kvdex_region_opts ro = {
		.region_max = region_max,
		.bucket_size = bucket_size,
		.workers_cap = slots,
	};
	struct kvdex_index_opts io = {
		.capacity_blocks = capacity,
		.slots = slots,
		.sweep_per_tick = 1u << 20,
		.spec_ttl_ms = 2000,
	};
	uint32_t first = 99;

	fx_close();
	cr_assert(eq(int, kvdex_region_create(&ro, &rg), 0));
	cr_assert(eq(int, kvdex_index_create(rg, &io, &ix), 0));
	cr_assert(eq(int, kvdex_workers_create(rg, ix, slots, &wt), 0));
	cr_assert(eq(int, kvdex_workers_register(wt, 7, "w7", slots, &first), 0));
	cr_assert(eq(u32, first, 0));
	nslots = slots;
}

static void
setup(void)
{
	rcu_register_thread();
	fx_open(64 * MB, 1024, 8, 256);
}

static void
teardown(void)
{
	fx_close();
	rcu_unregister_thread();
}

TestSuite(index, .init = setup, .fini = teardown, .timeout = 30);

static int
ev(uint8_t type, uint16_t slot, unsigned tier, uint64_t key)
{
	struct kvdex_index_event e = {
		.type = type,
		.tier = (uint8_t)tier,
		.ns = NS,
		.slot = slot,
		.key = key,
	};

	return kvdex_index_apply(ix, &e);
}

static int
store(uint16_t slot, unsigned tier, uint64_t key)
{
	return ev(KVDEX_IX_STORED, slot, tier, key);
}

static int
removed(uint16_t slot, unsigned tier, uint64_t key)
{
	return ev(KVDEX_IX_REMOVED, slot, tier, key);
}

static int
spec_store(uint16_t slot, unsigned tier, uint64_t key, uint32_t ttl_ms)
{
	struct kvdex_index_event e = {
		.type = KVDEX_IX_STORED,
		.tier = (uint8_t)tier,
		.spec = true,
		.ns = NS,
		.slot = slot,
		.key = key,
		.ttl_ms = ttl_ms,
	};

	return kvdex_index_apply(ix, &e);
}

static struct kvdex_index_stats
stats(void)
{
	struct kvdex_index_stats st;

	kvdex_index_get_stats(ix, &st);
	return st;
}

static uint64_t
key_of(unsigned i)
{
	return 0x9e3779b97f4a7c15ull * (i + 1);
}

/* The counters agree with a full validating scan of the table. */
static void
check_consistent(void)
{
	struct kvdex_index_stats st = stats();
	struct rv_totals t;

	cr_assert(eq(int, rv_scan(rg->base, &t), 0));
	cr_assert(eq(u64, st.records, t.records));
	cr_assert(eq(u64, st.holders + st.holders_dead, t.raw_holders));
}

/* 1. A store is visible to a reader with one copy. */
Test(index, store_then_lookup)
{
	struct rv_block b;
	const struct rv_holder *h;

	cr_assert(eq(int, store(0, KVDEX_TIER_GPU, 42), KVDEX_IX_APPLIED));
	cr_assert(eq(int, store(3, KVDEX_TIER_HOST, 42), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 42, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, 2));
	h = rv_find(&b, 0, KVDEX_TIER_GPU);
	cr_assert(ne(ptr, (void *)h, NULL));
	cr_assert(eq(u8, h->count, 1));
	cr_assert(not(h->spec));
	cr_assert(ne(ptr, (void *)rv_find(&b, 3, KVDEX_TIER_HOST), NULL));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 43, &b, NULL), -ENOENT));
	cr_assert(eq(int, rv_lookup(rg->base, NS + 1, 42, &b, NULL), -ENOENT));
	cr_assert(eq(u64, stats().blocks, 1));
	cr_assert(eq(u64, stats().holders, 2));
	cr_assert(eq(u64, kvdex_index_slot_holders(ix, 0), 1));
	check_consistent();
}

/* 2. Copies are counted: two stores and one remove keep the holder. */
Test(index, duplicate_store_single_remove_keeps_holder)
{
	struct rv_block b;

	cr_assert(eq(int, store(1, 0, 5), KVDEX_IX_APPLIED));
	cr_assert(eq(int, store(1, 0, 5), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 5, &b, NULL), 0));
	cr_assert(eq(u8, rv_find(&b, 1, 0)->count, 2));
	cr_assert(eq(int, removed(1, 0, 5), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 5, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, 1));
	cr_assert(eq(u8, rv_find(&b, 1, 0)->count, 1));
	cr_assert(eq(int, removed(1, 0, 5), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 5, &b, NULL), -ENOENT));
	cr_assert(eq(u64, stats().blocks, 0));
	cr_assert(eq(u64, stats().holders, 0));
	check_consistent();
}

/* 3. The copy count saturates at 255 instead of wrapping. */
Test(index, copy_count_saturates)
{
	struct rv_block b;

	for (int i = 0; i < 300; i++) {
		cr_assert(eq(int, store(0, 0, 9), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(int, rv_lookup(rg->base, NS, 9, &b, NULL), 0));
	cr_assert(eq(u8, rv_find(&b, 0, 0)->count, 255));
}

/* 4. Removing what is not there is ignored and changes nothing. */
Test(index, remove_absent_ignored)
{
	struct rv_block b;
	struct rv_chain ch1, ch2;

	cr_assert(eq(int, removed(0, 0, 77), KVDEX_IX_IGNORED));
	cr_assert(eq(int, store(0, 0, 77), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 77, &b, &ch1), 0));
	cr_assert(eq(int, removed(1, 0, 77), KVDEX_IX_IGNORED)); /* other slot */
	cr_assert(eq(int, removed(0, 2, 77), KVDEX_IX_IGNORED)); /* other tier */
	cr_assert(eq(int, ev(KVDEX_IX_TOUCHED, 0, 0, 78), KVDEX_IX_IGNORED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 77, &b, &ch2), 0));
	/* Nothing was rewritten. */
	cr_assert(eq(u32, ch1.seq[0], ch2.seq[0]));
	cr_assert(eq(u8, rv_find(&b, 0, 0)->count, 1));
	check_consistent();
}

/* 5. Touch updates hits and atime; fused follows the last store. */
Test(index, touch_and_fused)
{
	struct kvdex_index_event e = {.type = KVDEX_IX_STORED, .ns = NS, .slot = 0, .key = 3};
	struct rv_block b;

	e.fused = true;
	cr_assert(eq(int, kvdex_index_apply(ix, &e), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 3, &b, NULL), 0));
	cr_assert(eq(u8, b.flags & KVDEX_REC_FUSED, KVDEX_REC_FUSED));
	kvdex_index_tick(ix, 16 * 5); /* 5 s */
	cr_assert(eq(int, ev(KVDEX_IX_TOUCHED, 0, 0, 3), KVDEX_IX_APPLIED));
	cr_assert(eq(int, ev(KVDEX_IX_TOUCHED, 0, 0, 3), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 3, &b, NULL), 0));
	cr_assert(eq(u8, b.hits, 2));
	cr_assert(eq(u16, b.atime, 5));
	e.fused = false;
	e.slot = 1;
	cr_assert(eq(int, kvdex_index_apply(ix, &e), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 3, &b, NULL), 0));
	cr_assert(eq(u8, b.flags & KVDEX_REC_FUSED, 0));
}

/* 6. Locations are kept per holder and replaced by a re-store. */
Test(index, locations)
{
	struct kvdex_index_event e = {.type = KVDEX_IX_STORED,
				      .ns = NS,
				      .slot = 2,
				      .key = 11,
				      .has_loc = true,
				      .loc_addr = 0x1000,
				      .loc_len = 64};
	const struct rv_holder *h;
	struct rv_block b;

	cr_assert(eq(int, kvdex_index_apply(ix, &e), KVDEX_IX_APPLIED));
	cr_assert(eq(int, store(3, 0, 11), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 11, &b, NULL), 0));
	h = rv_find(&b, 2, 0);
	cr_assert(h->has_loc);
	cr_assert(eq(u64, h->loc_addr, 0x1000));
	cr_assert(eq(u32, h->loc_len, 64));
	cr_assert(not(rv_find(&b, 3, 0)->has_loc));
	e.loc_addr = 0x2000;
	cr_assert(eq(int, kvdex_index_apply(ix, &e), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 11, &b, NULL), 0));
	h = rv_find(&b, 2, 0);
	cr_assert(eq(u64, h->loc_addr, 0x2000));
	cr_assert(eq(u8, h->count, 2));
	check_consistent();
}

/* 7. Speculative holders expire by the clock and leave the region. */
Test(index, speculative_expiry)
{
	struct rv_block b;
	const struct rv_holder *h;

	kvdex_index_tick(ix, 10);
	/* 500 ms = 8 ticks: expires at tick 18. */
	cr_assert(eq(int, spec_store(0, 0, 21, 500), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 21, &b, NULL), 0));
	h = rv_find(&b, 0, 0);
	cr_assert(ne(ptr, (void *)h, NULL));
	cr_assert(h->spec);
	cr_assert(eq(u8, h->count, 18));
	kvdex_index_tick(ix, 17);
	cr_assert(eq(int, rv_lookup(rg->base, NS, 21, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, 1));
	kvdex_index_tick(ix, 18);
	cr_assert(eq(int, rv_lookup(rg->base, NS, 21, &b, NULL), -ENOENT));
	cr_assert(eq(u64, stats().spec_expired, 1));
	cr_assert(eq(u64, stats().blocks, 0));
	check_consistent();
}

/* 8. A real store turns a speculative holder into one real copy; a
 * speculative store never downgrades a real one. */
Test(index, speculative_vs_real)
{
	struct rv_block b;

	cr_assert(eq(int, spec_store(1, 1, 22, 0), KVDEX_IX_APPLIED));
	cr_assert(eq(int, store(1, 1, 22), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 22, &b, NULL), 0));
	cr_assert(not(rv_find(&b, 1, 1)->spec));
	cr_assert(eq(u8, rv_find(&b, 1, 1)->count, 1));
	cr_assert(eq(int, spec_store(1, 1, 22, 0), KVDEX_IX_IGNORED));
	/* Far past any TTL: the real copy stays. */
	for (uint32_t t = 1; t <= 300; t += 7) {
		kvdex_index_tick(ix, t);
	}
	cr_assert(eq(int, rv_lookup(rg->base, NS, 22, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, 1));
	cr_assert(eq(u64, stats().spec_expired, 0));
}

/* 9. Expiry still happens when the clock jumps over many ticks. */
Test(index, speculative_expiry_clock_jump)
{
	struct rv_block b;

	for (unsigned i = 0; i < 20; i++) {
		cr_assert(eq(int, spec_store((uint16_t)(i % 4), 0, key_of(i), 100 + 300 * i),
			     KVDEX_IX_APPLIED));
	}
	kvdex_index_tick(ix, 1000);
	for (unsigned i = 0; i < 20; i++) {
		cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(i), &b, NULL), -ENOENT));
	}
	cr_assert(eq(u64, stats().spec_expired, 20));
	cr_assert(eq(u64, stats().holders, 0));
	check_consistent();
}

static unsigned
raw_holders_of(uint16_t slot, unsigned tier, unsigned nkeys)
{
	unsigned n = 0;

	for (unsigned i = 0; i < nkeys; i++) {
		struct kvdex_region_hdr hdr;
		struct kvdex_geometry g;
		struct rv_chain ch;

		rv_hdr(rg->base, &hdr, &g);
		cr_assert(eq(int, rv_chain(rg->base, &g, kvdex_home_index(&g, NS, key_of(i)), &ch),
			     0));
		for (unsigned bkt = 0; bkt < ch.len; bkt++) {
			struct kvdex_record_view rv;
			size_t pos = 0;

			while (kvdex_record_next(rg->base + ch.off[bkt], g.bucket_size, &pos,
						 &rv) == 1) {
				if (rv.hdr.key != key_of(i)) {
					continue;
				}
				for (unsigned h = 0; h < rv.hdr.nholders; h++) {
					struct kvdex_holder kh;

					memcpy(&kh, &rv.holders[h], sizeof(kh));
					n += kh.slot == slot && kvdex_holder_tier(&kh) == tier;
				}
			}
		}
	}
	return n;
}

/* 10. A clear hides the slot's holders in the cleared tiers at once; the
 * sweep then removes them from the buckets. */
Test(index, clear_hides_then_sweep_removes)
{
	const unsigned nkeys = 50;
	struct rv_block b;

	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, store(0, 0, key_of(i)), KVDEX_IX_APPLIED));
		cr_assert(eq(int, store(0, 1, key_of(i)), KVDEX_IX_APPLIED));
		cr_assert(eq(int, store(1, 0, key_of(i)), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(u64, stats().holders, 3 * nkeys));
	kvdex_workers_clear(wt, 0, 1u << KVDEX_TIER_GPU);
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(i), &b, NULL), 0));
		cr_assert(eq(ptr, (void *)rv_find(&b, 0, 0), NULL));
		cr_assert(ne(ptr, (void *)rv_find(&b, 0, 1), NULL));
		cr_assert(ne(ptr, (void *)rv_find(&b, 1, 0), NULL));
	}
	cr_assert(eq(u64, stats().holders, 2 * nkeys));
	cr_assert(eq(u64, kvdex_index_slot_holders(ix, 0), nkeys));
	cr_assert(eq(u32, raw_holders_of(0, 0, nkeys), nkeys)); /* still in the buckets */
	check_consistent();

	kvdex_index_tick(ix, 1);
	cr_assert(eq(u32, raw_holders_of(0, 0, nkeys), 0));
	cr_assert(eq(u32, raw_holders_of(0, 1, nkeys), nkeys));
	cr_assert(eq(u64, stats().swept_holders, nkeys));
	cr_assert(eq(u64, stats().holders_dead, 0));
	check_consistent();

	/* A store after the clear starts a fresh holder. */
	cr_assert(eq(int, store(0, 0, key_of(0)), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(0), &b, NULL), 0));
	cr_assert(eq(u8, rv_find(&b, 0, 0)->count, 1));
}

/* 11. A clear of all tiers (mask 0) drops the slot's blocks entirely. */
Test(index, clear_all_tiers)
{
	struct rv_block b;

	cr_assert(eq(int, store(2, 0, 1), KVDEX_IX_APPLIED));
	cr_assert(eq(int, store(2, 3, 1), KVDEX_IX_APPLIED));
	kvdex_workers_clear(wt, 2, 0);
	cr_assert(eq(int, rv_lookup(rg->base, NS, 1, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, 0));
	kvdex_index_tick(ix, 1);
	cr_assert(eq(int, rv_lookup(rg->base, NS, 1, &b, NULL), -ENOENT));
	cr_assert(eq(u64, stats().blocks, 0));
	check_consistent();
}

/* 12. Sixteen clears bring an epoch value back: the forced pass after the
 * fifteenth must have removed the old holders by then. */
Test(index, epoch_wrap_forces_sweep)
{
	struct rv_block b;

	cr_assert(eq(int, store(0, 0, 5), KVDEX_IX_APPLIED));
	for (int i = 0; i < 16; i++) {
		kvdex_workers_clear(wt, 0, 1);
	}
	cr_assert(eq(u8, kvdex_index_epoch(ix, 0, 0), 0));
	cr_assert(ge(u64, stats().forced_sweeps, 1));
	cr_assert(eq(int, rv_lookup(rg->base, NS, 5, &b, NULL), -ENOENT));
	check_consistent();
}

/* 13. Many keys in one home bucket make an overflow chain; every bucket
 * of the chain carries the same chain_seq, bumped on every change. */
Test(index, overflow_chain_and_chain_seq)
{
	const unsigned nkeys = 40;
	struct rv_chain ch, ch2;
	struct rv_block b;
	struct rv_totals t;

	fx_open(64 * MB, 4, 8, 256); /* one home bucket */
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, store((uint16_t)(i % 8), 0, key_of(i)), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(u64, stats().resizes, 0));
	cr_assert(eq(u64, stats().home_buckets, 1));
	cr_assert(gt(u64, stats().overflow_used, 2));
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(i), &b, &ch), 0));
		cr_assert(eq(u32, b.nholders, 1));
	}
	cr_assert(gt(u32, ch.len, 3));
	for (unsigned i = 1; i < ch.len; i++) {
		cr_assert(eq(u32, ch.seq[i], ch.seq[0]));
	}
	cr_assert(eq(int, store(0, 1, key_of(3)), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(3), &b, &ch2), 0));
	cr_assert(eq(u32, ch2.seq[0], ch.seq[0] + 1));
	for (unsigned i = 1; i < ch2.len; i++) {
		cr_assert(eq(u32, ch2.seq[i], ch2.seq[0]));
	}
	cr_assert(eq(int, rv_scan(rg->base, &t), 0));
	cr_assert(eq(u64, t.chains_multi, 1));
	check_consistent();

	/* Emptying the chain gives its overflow buckets back. */
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, removed((uint16_t)(i % 8), 0, key_of(i)), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(int, removed(0, 1, key_of(3)), KVDEX_IX_APPLIED));
	cr_assert(eq(u64, stats().overflow_used, 0));
	cr_assert(eq(u64, stats().blocks, 0));
	check_consistent();
}

/* 14. A block with more holders than one record holds is split into
 * several records of the same key, which readers merge. */
Test(index, many_holders_split_into_records)
{
	const unsigned n = 120;
	struct kvdex_index_event e = {.type = KVDEX_IX_STORED, .ns = NS, .key = 1234};
	struct rv_block b;

	fx_open(64 * MB, 1024, 200, 256);
	cr_assert(eq(u32, kvdex_record_max_holders(256), 52));
	for (unsigned s = 0; s < n; s++) {
		e.slot = (uint16_t)s;
		e.has_loc = s % 3 == 0 && s < 80;
		e.loc_addr = 0x10000 + s;
		e.loc_len = s;
		cr_assert(eq(int, kvdex_index_apply(ix, &e), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(int, rv_lookup(rg->base, NS, 1234, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, n));
	cr_assert(ge(u32, b.nrecords, 3));
	for (unsigned s = 0; s < n; s++) {
		const struct rv_holder *h = rv_find(&b, (uint16_t)s, 0);

		cr_assert(ne(ptr, (void *)h, NULL));
		cr_assert(eq(int, h->has_loc, s % 3 == 0 && s < 80));
		if (h->has_loc) {
			cr_assert(eq(u64, h->loc_addr, 0x10000 + s));
		}
	}
	cr_assert(eq(u64, stats().blocks, 1));
	cr_assert(eq(u64, stats().holders, n));
	check_consistent();

	e.has_loc = false;
	for (unsigned s = 0; s < 80; s++) {
		cr_assert(eq(int, removed((uint16_t)s, 0, 1234), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(int, rv_lookup(rg->base, NS, 1234, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, n - 80));
	cr_assert(eq(u32, b.nrecords, 1));
	check_consistent();
}

/* 15. An explicit resize keeps every entry, bumps table_gen, and leaves
 * every old bucket RETIRED with a valid checksum (readers go back to the
 * header instead of reading stale data). */
Test(index, resize_preserves_and_retires)
{
	const unsigned nkeys = 60;
	struct kvdex_region_hdr h0, h1;
	struct kvdex_geometry g0;
	struct rv_block b;
	unsigned retired_overflow = 0;

	fx_open(64 * MB, 4, 8, 256); /* one home bucket: a chain of 7 */
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, store((uint16_t)(i % 8), i % 4, key_of(i)), KVDEX_IX_APPLIED));
	}
	cr_assert(eq(u64, stats().resizes, 0));
	cr_assert(eq(int, rv_hdr(rg->base, &h0, &g0), 0));
	cr_assert(eq(int, kvdex_index_resize(ix), 0));
	cr_assert(eq(int, rv_hdr(rg->base, &h1, &(struct kvdex_geometry){0}), 0));
	cr_assert(eq(u32, h1.table_gen, h0.table_gen + 1));
	cr_assert(eq(u32, h1.table_log2, h0.table_log2 + 1));
	cr_assert(ne(u64, h1.table_off, h0.table_off));
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(i), &b, NULL), 0));
		cr_assert(eq(u32, b.nholders, 1));
		cr_assert(ne(ptr, (void *)rv_find(&b, (uint16_t)(i % 8), i % 4), NULL));
	}
	for (uint32_t home = 0; home < (1u << g0.table_log2); home++) {
		uint64_t off = kvdex_home_offset(&g0, home);

		for (;;) {
			struct kvdex_bucket_hdr bh;

			cr_assert(kvdex_block_valid(
				rg->base + off,
				kvdex_bucket_sealed_len(rg->base + off, g0.bucket_size),
				g0.hash_seed, off));
			cr_assert(eq(int, kvdex_bucket_check(rg->base + off, &g0, off),
				     KVDEX_BUCKET_STALE));
			memcpy(&bh, rg->base + off, sizeof(bh));
			cr_assert(eq(u8, bh.flags & KVDEX_BUCKET_RETIRED, KVDEX_BUCKET_RETIRED));
			if (bh.next == 0) {
				break;
			}
			retired_overflow++;
			off = kvdex_overflow_offset(&g0, bh.next - 1);
		}
	}
	cr_assert(ge(u32, retired_overflow, 5));
	cr_assert(eq(u64, stats().resizes, 1));
	cr_assert(eq(u64, stats().blocks, nkeys));
	check_consistent();
}

/* 16. Growing from a tiny table resizes by itself and loses nothing. */
Test(index, automatic_resize)
{
	const unsigned nkeys = 3000;
	struct rv_block b;

	fx_open(256 * MB, 4, 8, 256);
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, store((uint16_t)(i % 8), 0, key_of(i)), KVDEX_IX_APPLIED));
	}
	cr_assert(ge(u64, stats().resizes, 3));
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(i), &b, NULL), 0));
	}
	cr_assert(eq(u64, stats().blocks, nkeys));
	cr_assert(eq(u64, stats().holders, nkeys));
	check_consistent();
}

/* 17. Resize drops holders of cleared epochs instead of copying them. */
Test(index, resize_drops_dead)
{
	const unsigned nkeys = 100;

	fx_open(64 * MB, 64, 8, 256);
	for (unsigned i = 0; i < nkeys; i++) {
		cr_assert(eq(int, store(0, 0, key_of(i)), KVDEX_IX_APPLIED));
		cr_assert(eq(int, store(1, 0, key_of(i)), KVDEX_IX_APPLIED));
	}
	kvdex_workers_clear(wt, 0, 0);
	cr_assert(eq(int, kvdex_index_resize(ix), 0));
	cr_assert(eq(u32, raw_holders_of(0, 0, nkeys), 0));
	cr_assert(eq(u32, raw_holders_of(1, 0, nkeys), nkeys));
	cr_assert(eq(u64, stats().holders_dead, 0));
	check_consistent();
}

/* 18. At region_max new blocks are refused (FULL), existing ones still
 * update, and what was stored stays readable. */
Test(index, full_refuses_new_blocks)
{
	unsigned applied = 0, full = 0;
	struct rv_block b;

	/* 16 rows -> workers end at 8 KiB; one home + 16 overflow buckets
	 * of 256 B fill the next 8 KiB: no room for a resize. */
	fx_open(16384, 4, 16, 256);
	for (unsigned i = 0; i < 400; i++) {
		int rc = store(0, 0, key_of(i));

		cr_assert(rc == KVDEX_IX_APPLIED || rc == KVDEX_IX_FULL);
		applied += rc == KVDEX_IX_APPLIED;
		full += rc == KVDEX_IX_FULL;
	}
	cr_assert(gt(u32, applied, 100));
	cr_assert(gt(u32, full, 0));
	cr_assert(eq(u64, stats().index_full, full));
	cr_assert(eq(u64, stats().resizes, 0));
	cr_assert(eq(u64, stats().blocks, applied));
	cr_assert(eq(u64, kvdex_region_readable(rg), 16384));
	/* Updates that need no room still apply. */
	cr_assert(eq(int, store(0, 0, key_of(0)), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(0), &b, NULL), 0));
	cr_assert(eq(u8, rv_find(&b, 0, 0)->count, 2));
	cr_assert(eq(int, removed(0, 0, key_of(1)), KVDEX_IX_APPLIED));
	cr_assert(eq(int, rv_lookup(rg->base, NS, key_of(1), &b, NULL), -ENOENT));
	check_consistent();
}

/* 19. Every home bucket of a fresh table is a valid empty image, and the
 * header describes the table. */
Test(index, fresh_table_valid)
{
	struct kvdex_region_hdr hdr;
	struct kvdex_geometry g;
	struct rv_totals t;

	cr_assert(eq(int, rv_hdr(rg->base, &hdr, &g), 0));
	cr_assert(eq(u32, 1u << hdr.table_log2, 256)); /* 1024 / 4 */
	cr_assert(eq(u32, hdr.overflow_count, 32));
	cr_assert(eq(u32, hdr.table_gen, 1));
	cr_assert(eq(u32, hdr.workers_hwm, nslots));
	cr_assert(ne(u64, hdr.server_incarnation, 0));
	cr_assert(ge(u64, hdr.region_size, hdr.overflow_off + 32ull * 256));
	cr_assert(eq(int, rv_scan(rg->base, &t), 0));
	cr_assert(eq(u64, t.records, 0));
}

/* One index of a pair driven by the same events (fast_path_matches_general). */
struct twin {
	struct kvdex_region *rg;
	struct kvdex_index *ix;
};

static void
twin_open(struct twin *tw, uint32_t bucket_size, uint64_t capacity, bool general_only)
{
	struct kvdex_region_opts ro = {
		.region_max = 64 * MB,
		.bucket_size = bucket_size,
		.workers_cap = 16,
		.hash_seed = 0x5eed0123456789abull,
	};
	struct kvdex_index_opts io = {
		.capacity_blocks = capacity,
		.slots = 16,
		.sweep_per_tick = 8,
		.spec_ttl_ms = 500,
		.general_only = general_only,
	};

	cr_assert(eq(int, kvdex_region_create(&ro, &tw->rg), 0));
	cr_assert(eq(int, kvdex_index_create(tw->rg, &io, &tw->ix), 0));
}

static void
twin_close(struct twin *tw)
{
	kvdex_index_destroy(tw->ix);
	kvdex_region_destroy(tw->rg);
}

/* The live tables of both regions are the same bytes at the same place. */
static void
twin_compare(const struct twin *a, const struct twin *b)
{
	struct kvdex_region_hdr ha, hb;
	struct kvdex_geometry ga, gb;
	struct kvdex_index_stats sa, sb;
	uint64_t len;

	cr_assert(eq(int, rv_hdr(a->rg->base, &ha, &ga), 0));
	cr_assert(eq(int, rv_hdr(b->rg->base, &hb, &gb), 0));
	cr_assert(eq(u64, ga.table_off, gb.table_off));
	cr_assert(eq(u32, ga.table_log2, gb.table_log2));
	cr_assert(eq(u32, ga.overflow_count, gb.overflow_count));
	len = ((1ull << ga.table_log2) + ga.overflow_count) * ga.bucket_size;
	cr_assert(eq(int, memcmp(a->rg->base + ga.table_off, b->rg->base + gb.table_off, len), 0));
	kvdex_index_get_stats(a->ix, &sa);
	kvdex_index_get_stats(b->ix, &sb);
	sa.fast_applies = sb.fast_applies;
	cr_assert(eq(int, memcmp(&sa, &sb, sizeof(sa)), 0));
}

static uint64_t
twin_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static struct kvdex_index_event
twin_event(uint64_t *rs, unsigned nkeys)
{
	uint64_t r = twin_rand(rs);
	unsigned kind = (unsigned)(r % 100);
	struct kvdex_index_event e = {
		.ns = (uint16_t)(1 + ((r >> 8) & 1)),
		.slot = (uint16_t)((r >> 9) % 16),
		.tier = (uint8_t)((r >> 13) & 3),
		.key = key_of((unsigned)(twin_rand(rs) % nkeys)),
	};

	if (kind < 45) {
		e.type = KVDEX_IX_STORED;
		e.has_loc = ((r >> 16) & 3) == 0;
		e.loc_addr = r;
		e.loc_len = (uint32_t)(r >> 32);
		e.fused = ((r >> 20) & 7) == 0;
	} else if (kind < 60) {
		e.type = KVDEX_IX_STORED;
		e.spec = true;
		e.ttl_ms = (uint32_t)((r >> 24) % 3000);
	} else if (kind < 90) {
		e.type = KVDEX_IX_REMOVED;
	} else {
		e.type = KVDEX_IX_TOUCHED;
	}
	return e;
}

/* 20. The one-bucket fast path writes exactly the images (and keeps exactly
 * the counters) the general decode/repack path would: a random stream of
 * every kind of event, with clears, expiries, overflow chains, split
 * records and resizes, is applied to two indexes, one of them forced onto
 * the general path, and their tables are compared byte for byte after every
 * event. */
Test(index, fast_path_matches_general)
{
	static const struct {
		uint32_t bucket_size;
		uint64_t capacity;
		unsigned nkeys;
	} cfg[] = {
		{128, 64, 200},	   /* splits (20 holders a record), long chains */
		{256, 16, 400},	   /* resizes */
		{512, 1024, 3000}, /* mostly one-bucket chains */
	};
	uint64_t rs = 0x1234567887654321ull;

	for (unsigned c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
		struct twin fast, gen;
		struct kvdex_index_stats sf, sg;
		uint32_t tick = 0;
		const unsigned nev = 20000;

		twin_open(&fast, cfg[c].bucket_size, cfg[c].capacity, false);
		twin_open(&gen, cfg[c].bucket_size, cfg[c].capacity, true);
		for (unsigned i = 0; i < nev; i++) {
			struct kvdex_index_event e = twin_event(&rs, cfg[c].nkeys);

			if (i % 97 == 0) {
				tick += 1 + (uint32_t)(twin_rand(&rs) % 4);
				kvdex_index_tick(fast.ix, tick);
				kvdex_index_tick(gen.ix, tick);
			}
			if (i % 1500 == 0) {
				unsigned mask = (unsigned)(twin_rand(&rs) % 16);

				kvdex_index_bump_epochs(fast.ix, e.slot, mask);
				kvdex_index_bump_epochs(gen.ix, e.slot, mask);
			}
			kvdex_index_prefetch(fast.ix, e.ns, e.key); /* must change nothing */
			cr_assert(eq(int, kvdex_index_apply(fast.ix, &e),
				     kvdex_index_apply(gen.ix, &e)));
			twin_compare(&fast, &gen);
		}
		kvdex_index_get_stats(fast.ix, &sf);
		kvdex_index_get_stats(gen.ix, &sg);
		/* Both paths were exercised, and the general one took every event. */
		cr_assert(gt(u64, sf.fast_applies, nev / 10));
		cr_assert(eq(u64, sg.fast_applies, 0));
		cr_assert(gt(u64, sg.blocks, 0));
		cr_assert(eq(int, rv_scan(fast.rg->base, &(struct rv_totals){0}), 0));
		twin_close(&fast);
		twin_close(&gen);
	}
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One kvdexd, one libkvdex client, every scenario over both shm and tcp:
 * publish then lookup, remove with copy counts, clear by tier mask, publisher
 * restart (purge, then -ESTALE), sequence gaps and duplicates, speculative
 * expiry, fused blocks, the worker table, and the stats counters that track
 * all of it.
 *
 * Each Test(basic, X_shm) / X_tcp pair runs the same scenario function with
 * a transport; each starts its own server (port 0, private directory), so the
 * tests are independent and can run in parallel.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "tests/fakes/counter_names.h"
#include "harness.h"

TestSuite(basic, .init = h_init, .fini = h_cleanup, .timeout = 30);

#define BOTH_TRANSPORTS(name)                                                                      \
	static void name(enum kvdex_transport t);                                                  \
	Test(basic, name##_shm)                                                                    \
	{                                                                                          \
		name(KVDEX_TRANSPORT_SHM);                                                         \
	}                                                                                          \
	Test(basic, name##_tcp)                                                                    \
	{                                                                                          \
		name(KVDEX_TRANSPORT_TCP);                                                         \
	}                                                                                          \
	static void name(enum kvdex_transport t)

static void
expect_lookup(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, size_t n, unsigned flags,
	      struct h_lookup *l)
{
	int rc = h_lookup(c, ns, keys, n, flags, l);

	cr_assert(eq(i32, rc, 0), "lookup: %s (%s)", strerror(-rc), kvdex_client_last_error(c));
	cr_assert(eq(u32, l->res.nblocks, n));
	cr_assert(le(u32, l->res.nholdings, l->res.nholdings_total));
}

/* 1. Stored chains are found with the right prefix lengths and tiers; other
 * namespaces and unknown prefixes find nothing; counters agree. Over shm the
 * server serves no reads; over tcp it does. */
BOTH_TRANSPORTS(publish_lookup)
{
	struct h_server s;
	struct kvdex_client *c;
	uint64_t keys[9];
	struct h_lookup l;
	struct h_stats st;
	uint32_t ns, ns2;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "basic");
	ns2 = h_ns(c, "other");
	cr_assert(ne(u32, ns, ns2));
	h_worker(c, 1, 1);
	h_worker(c, 2, 1);
	h_keys(keys, 9, 1);
	h_store_chain(c, ns, 1, 0, 1, 1, keys, 8, KVDEX_GPU);
	h_store_chain(c, ns, 2, 0, 1, 1, keys, 3, KVDEX_HOST);

	expect_lookup(c, ns, keys, 8, 0, &l);
	cr_assert(eq(u32, l.res.nholdings_total, 2));
	cr_assert(eq(u32, l.res.nholdings, 2));
	cr_assert(eq(i32, l.res.best, 0));
	cr_assert(eq(u32, l.res.longest, 8));
	cr_assert(eq(u32, l.res.fused, 0));
	cr_assert(ge(u32, l.res.round_trips, 1));
	cr_assert(eq(u32, l.rows[0].worker_id, 1), "best row is worker %u", l.rows[0].worker_id);
	cr_assert(eq(u32, l.rows[0].matched, 8));
	cr_assert(eq(u32, l.rows[0].tier_blocks[KVDEX_GPU], 8));
	cr_assert(eq(u32, l.rows[0].spec_blocks, 0));
	cr_assert(eq(u32, l.rows[1].worker_id, 2));
	cr_assert(eq(u32, l.rows[1].matched, 3));
	cr_assert(eq(u32, l.rows[1].tier_blocks[KVDEX_HOST], 3));
	cr_assert(eq(u32, l.rows[1].tier_blocks[KVDEX_GPU], 0));

	/* A chain one block longer than worker 1 holds. */
	expect_lookup(c, ns, keys, 9, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 8));
	cr_assert(eq(u32, l.res.longest, 8));

	/* Same keys, other namespace: nothing. */
	expect_lookup(c, ns2, keys, 8, 0, &l);
	cr_assert(eq(u32, l.res.nholdings_total, 0));
	cr_assert(eq(i32, l.res.best, -1));
	cr_assert(eq(u32, l.res.longest, 0));

	/* An unknown first block: nobody holds a prefix. */
	expect_lookup(c, ns, keys + 8, 1, 0, &l);
	cr_assert(eq(u32, l.res.longest, 0));
	cr_assert(eq(u32, h_matched(&l, 1, 0), 0));

	h_stats_get(c, 0, &st);
	cr_assert(eq(u64, h_stat(&st, "blocks"), 8));
	cr_assert(eq(u64, h_stat(&st, "holders"), 11));
	cr_assert(eq(u64, h_stat(&st, "events_applied"), 11));
	cr_assert(eq(u64, h_stat(&st, "publish_batches"), 2));
	cr_assert(eq(u64, h_stat(&st, "namespaces"), 2));
	cr_assert(eq(u64, h_stat(&st, "slots_used"), 2));
	cr_assert(ge(u64, h_stat(&st, "records"), 8));
	cr_assert(gt(u64, h_stat(&st, "table_bytes"), 0));
	cr_assert(ge(u64, h_stat(&st, "region_bytes"), h_stat(&st, "table_bytes")));
	if (t == KVDEX_TRANSPORT_SHM) {
		cr_assert(eq(u64, h_stat(&st, "tcp_read_batches"), 0),
			  "shm lookups went through the server");
	} else {
		cr_assert(ge(u64, h_stat(&st, "tcp_read_batches"), 4));
		cr_assert(gt(u64, h_stat(&st, "tcp_read_bytes"), 0));
	}
	cr_assert(eq(u64, h_stat(&st, "bad_reads"), 0));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 2. Copies are counted: stored twice, removed once, still held. Removing
 * an absent block, or from a tier that does not hold it, is ignored. */
BOTH_TRANSPORTS(remove_counts_copies)
{
	struct h_server s;
	struct kvdex_client *c;
	struct kvdex_publish_result res;
	struct kvdex_event ev;
	uint64_t keys[3];
	struct h_lookup l;
	uint32_t ns;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "remove");
	h_worker(c, 1, 1);
	h_keys(keys, 3, 2);
	h_store_chain(c, ns, 1, 0, 1, 1, keys, 1, KVDEX_GPU);
	h_store_chain(c, ns, 1, 0, 1, 2, keys, 1, KVDEX_GPU);

	ev = h_ev_remove(ns, keys[0], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 3, &ev, 1, &res), 0));
	cr_assert(eq(u64, res.applied, 1));
	expect_lookup(c, ns, keys, 1, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 1), "one of two copies removed: still held");

	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 4, &ev, 1, &res), 0));
	expect_lookup(c, ns, keys, 1, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 0), "both copies removed: gone");

	/* Absent block. */
	ev = h_ev_remove(ns, keys[1], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 5, &ev, 1, &res), 0));
	cr_assert(eq(u64, res.applied, 0));
	cr_assert(eq(u64, res.ignored, 1));

	/* Held in HOST, removed from GPU: ignored, still held. */
	h_store_chain(c, ns, 1, 0, 1, 6, keys + 2, 1, KVDEX_HOST);
	ev = h_ev_remove(ns, keys[2], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 7, &ev, 1, &res), 0));
	cr_assert(eq(u64, res.ignored, 1));
	expect_lookup(c, ns, keys + 2, 1, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 1));

	cr_assert(eq(u64, h_stat1(c, 0, "blocks"), 1));
	cr_assert(eq(u64, h_stat1(c, 0, "holders"), 1));
	cr_assert(eq(u64, h_stat1(c, 0, "events_ignored"), 2));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* Poll until counter `name` == want (holders are swept asynchronously). */
static void
wait_stat_eq(struct kvdex_client *c, const char *name, uint64_t want)
{
	int64_t deadline = h_now_ms() + 5000;
	uint64_t v;

	while ((v = h_stat1(c, 0, name)) != want && h_now_ms() < deadline) {
		h_sleep_ms(20);
	}
	cr_assert(eq(u64, v, want), "%s = %llu, expected %llu", name, (unsigned long long)v,
		  (unsigned long long)want);
}

/* 3. ALL_CLEARED with a tier mask hides only those tiers of that publisher;
 * mask 0 clears every tier. Other workers are untouched. */
BOTH_TRANSPORTS(clear_tier_mask)
{
	struct h_server s;
	struct kvdex_client *c;
	struct kvdex_publish_result res;
	struct kvdex_event ev;
	const struct kvdex_holding *h;
	uint64_t keys[4];
	struct h_lookup l;
	uint32_t ns;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "clear");
	h_worker(c, 1, 1);
	h_worker(c, 2, 1);
	h_keys(keys, 4, 3);
	h_store_chain(c, ns, 1, 0, 1, 1, keys, 4, KVDEX_GPU);
	h_store_chain(c, ns, 1, 0, 1, 2, keys, 4, KVDEX_HOST);
	h_store_chain(c, ns, 2, 0, 1, 1, keys, 4, KVDEX_GPU);

	ev = h_ev_clear(1u << KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 3, &ev, 1, &res), 0));
	expect_lookup(c, ns, keys, 4, 0, &l);
	h = h_find(&l, 1, 0);
	cr_assert_not_null(h, "worker 1 still holds the chain in HOST");
	cr_assert(eq(u32, h->matched, 4));
	cr_assert(eq(u32, h->tier_blocks[KVDEX_GPU], 0));
	cr_assert(eq(u32, h->tier_blocks[KVDEX_HOST], 4));
	h = h_find(&l, 2, 0);
	cr_assert_not_null(h);
	cr_assert(eq(u32, h->tier_blocks[KVDEX_GPU], 4));
	cr_assert(eq(i32, l.rows[l.res.best].worker_id, 2), "worker 2 has more GPU blocks");

	ev = h_ev_clear(0);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 4, &ev, 1, &res), 0));
	expect_lookup(c, ns, keys, 4, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 0));
	cr_assert(eq(u32, h_matched(&l, 2, 0), 4));
	cr_assert(eq(u64, h_stat1(c, 0, "clears"), 2));
	/* The sweeper removes the dead holders from the buckets. */
	wait_stat_eq(c, "holders", 4);
	wait_stat_eq(c, "blocks", 4);
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 4. A newer incarnation purges the publisher's old holders; the older
 * incarnation is then refused with -ESTALE and changes nothing. */
BOTH_TRANSPORTS(publisher_restart)
{
	struct h_server s;
	struct kvdex_client *c;
	struct kvdex_publish_result res;
	struct kvdex_event ev[2];
	uint64_t keys[8];
	struct h_lookup l;
	struct h_stats st;
	uint32_t ns;
	int rc;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "restart");
	h_worker(c, 1, 1);
	h_worker(c, 2, 1);
	h_keys(keys, 8, 4);
	h_store_chain(c, ns, 1, 0, 100, 1, keys, 4, KVDEX_GPU);
	h_store_chain(c, ns, 2, 0, 7, 1, keys, 4, KVDEX_GPU);

	ev[0] = h_ev_store(ns, keys[4], KVDEX_GPU);
	ev[1] = h_ev_store(ns, keys[5], KVDEX_GPU);
	rc = h_publish(c, 1, 0, 200, 1, ev, 2, &res);
	cr_assert(eq(i32, rc, 0), "%s", strerror(-rc));
	cr_assert(res.purged);
	cr_assert(eq(u64, res.applied, 2));
	cr_assert(not(res.gap));
	cr_assert(not(res.duplicate));

	expect_lookup(c, ns, keys, 4, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 0), "old incarnation's blocks still visible");
	cr_assert(eq(u32, h_matched(&l, 2, 0), 4), "another publisher was purged");
	expect_lookup(c, ns, keys + 4, 2, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 2));

	ev[0] = h_ev_store(ns, keys[6], KVDEX_GPU);
	rc = h_publish(c, 1, 0, 100, 2, ev, 1, &res);
	cr_assert(eq(i32, rc, -ESTALE), "old incarnation: %d (%s)", rc, strerror(-rc));
	expect_lookup(c, ns, keys + 6, 1, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 0));

	/* The current incarnation continues normally. */
	rc = h_publish(c, 1, 0, 200, 2, ev, 1, &res);
	cr_assert(eq(i32, rc, 0));
	cr_assert(not(res.purged));
	cr_assert(not(res.gap));

	h_stats_get(c, 0, &st);
	cr_assert(eq(u64, h_stat(&st, "publisher_restarts"), 1));
	cr_assert(eq(u64, h_stat(&st, "stale_incarnation"), 1));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 5. seq = last + 2 applies and reports the gap; a repeated or older seq is
 * a duplicate and applies nothing. */
BOTH_TRANSPORTS(sequence_gap_duplicate)
{
	struct h_server s;
	struct kvdex_client *c;
	struct kvdex_publish_result res;
	struct kvdex_event ev;
	uint64_t keys[4];
	struct h_lookup l;
	struct h_stats st;
	uint32_t ns;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "seq");
	h_worker(c, 1, 1);
	h_keys(keys, 4, 5);

	ev = h_ev_store(ns, keys[0], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 1, &ev, 1, &res), 0));
	cr_assert(not(res.gap));
	cr_assert(not(res.duplicate));

	ev = h_ev_store(ns, keys[1], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 3, &ev, 1, &res), 0));
	cr_assert(res.gap, "seq 3 after 1 is a gap");
	cr_assert(eq(u64, res.expected_seq, 2));
	cr_assert(eq(u64, res.applied, 1), "a gap batch is still applied");
	expect_lookup(c, ns, keys, 2, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 2));

	ev = h_ev_store(ns, keys[2], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 3, &ev, 1, &res), 0));
	cr_assert(res.duplicate);
	cr_assert(eq(u64, res.applied, 0));
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 2, &ev, 1, &res), 0));
	cr_assert(res.duplicate, "seq 2 after 3 is old: duplicate");
	cr_assert(eq(u64, res.applied, 0));
	expect_lookup(c, ns, keys, 3, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 2), "a duplicate batch was applied");

	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 4, &ev, 1, &res), 0));
	cr_assert(not(res.gap));
	cr_assert(not(res.duplicate));
	cr_assert(eq(u64, res.applied, 1));

	h_stats_get(c, 0, &st);
	cr_assert(eq(u64, h_stat(&st, "seq_gaps"), 1));
	cr_assert(eq(u64, h_stat(&st, "seq_duplicates"), 2));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 6. Speculative holders count as matches (and in spec_blocks) until their
 * TTL passes, are hidden by KVDEX_LOOKUP_NO_SPECULATIVE, then disappear. */
BOTH_TRANSPORTS(speculative_expiry)
{
	struct h_server s;
	struct kvdex_client *c;
	struct kvdex_publish_result res;
	struct kvdex_event ev[5];
	const struct kvdex_holding *h;
	uint64_t keys[4];
	struct h_lookup l;
	int64_t deadline;
	uint32_t ns;
	int rc;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "spec");
	h_worker(c, 1, 1);
	h_worker(c, 2, 1);
	h_keys(keys, 4, 6);
	for (int i = 0; i < 4; i++) {
		ev[i] = h_ev_spec(ns, keys[i], KVDEX_GPU, 300);
	}
	ev[4] = h_ev_store(ns, keys[0], KVDEX_HOST); /* block 0 also held for real */
	rc = h_publish(c, 1, 0, 1, 1, ev, 5, &res);
	cr_assert(eq(i32, rc, 0), "%s (%s)", strerror(-rc), kvdex_client_last_error(c));
	h_store_chain(c, ns, 2, 0, 1, 1, keys, 2, KVDEX_HOST);

	expect_lookup(c, ns, keys, 4, 0, &l);
	h = h_find(&l, 1, 0);
	cr_assert_not_null(h, "speculative holders not visible right after the store");
	cr_assert(eq(u32, h->matched, 4));
	cr_assert(eq(u32, h->spec_blocks, 3), "block 0 is also held for real");
	cr_assert(eq(u32, h->tier_blocks[KVDEX_GPU], 4));

	expect_lookup(c, ns, keys, 4, KVDEX_LOOKUP_NO_SPECULATIVE, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 1));
	cr_assert(eq(u32, h_matched(&l, 2, 0), 2));

	/* Expiry: poll with a bounded deadline rather than sleep a fixed time. */
	deadline = h_now_ms() + 3000;
	do {
		h_sleep_ms(50);
		expect_lookup(c, ns, keys, 4, 0, &l);
	} while (h_matched(&l, 1, 0) != 1 && h_now_ms() < deadline);
	h = h_find(&l, 1, 0);
	cr_assert_not_null(h);
	cr_assert(eq(u32, h->matched, 1), "speculative blocks did not expire after 300 ms + 3 s");
	cr_assert(eq(u32, h->spec_blocks, 0));
	cr_assert(eq(u32, h->tier_blocks[KVDEX_HOST], 1));
	cr_assert(eq(u32, h_matched(&l, 2, 0), 2));

	/* The server sweeps them out and counts them. */
	cr_assert(ge(u64, h_wait_stat(c, 0, "spec_expired", 3, 5000), 3));
	wait_stat_eq(c, "holders", 3);

	/* A TTL above 7.5 s is refused, by the client or the server. */
	ev[0] = h_ev_spec(ns, keys[1], KVDEX_GPU, 8000);
	rc = h_publish(c, 1, 0, 1, 2, ev, 1, &res);
	cr_assert(rc == -EINVAL || rc == -EBADMSG, "ttl 8000 ms: %d (%s)", rc, strerror(-rc));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 7. A fused block never satisfies an exact match: the prefix stops there
 * and the result says where only a fused block matched. */
BOTH_TRANSPORTS(fused_never_matches)
{
	struct h_server s;
	struct kvdex_client *c;
	struct kvdex_publish_result res;
	struct kvdex_event ev[3];
	uint64_t keys[6];
	struct h_lookup l;
	uint32_t ns;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "fused");
	h_worker(c, 1, 1);
	h_worker(c, 2, 1);
	h_keys(keys, 6, 7);
	ev[0] = h_ev_store(ns, keys[0], KVDEX_GPU);
	ev[1] = h_ev_store(ns, keys[1], KVDEX_GPU);
	ev[2] = h_ev_fused(ns, keys[2], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 1, 0, 1, 1, ev, 3, &res), 0));
	cr_assert(eq(u64, res.applied, 3));

	expect_lookup(c, ns, keys, 4, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 2), "the fused block extended the match");
	cr_assert(eq(u32, l.res.longest, 2));
	cr_assert(ne(u32, l.res.fused, 0), "fused position not reported");

	/* A chain whose first block exists only fused: no match at all. */
	ev[0] = h_ev_fused(ns, keys[5], KVDEX_GPU);
	cr_assert(eq(i32, h_publish(c, 2, 0, 1, 1, ev, 1, &res), 0));
	expect_lookup(c, ns, keys + 5, 1, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 2, 0), 0));
	cr_assert(eq(u32, l.res.longest, 0));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

static const struct kvdex_worker_info *
find_info(const struct kvdex_worker_info *w, int n, uint32_t id, uint16_t rank)
{
	for (int i = 0; i < n; i++) {
		if (w[i].worker_id == id && w[i].dp_rank == rank) {
			return &w[i];
		}
	}
	return NULL;
}

/* 8. The worker table: one row per (worker, dp rank), addresses, loads with
 * their age, live holder counts; registration idempotence and conflicts. */
BOTH_TRANSPORTS(worker_table_list)
{
	struct kvdex_load load = {
		.queued = 3, .running = 2, .prefill_tokens = 1000, .kv_util_permille = 500};
	struct kvdex_worker_info w[16];
	const struct kvdex_worker_info *r0, *r1, *r9;
	struct h_server s;
	struct kvdex_client *c;
	uint64_t keys[3];
	uint32_t ns;
	int n, rc;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "workers");
	h_worker(c, 7, 2);
	h_worker(c, 9, 1);
	cr_assert(eq(i32, kvdex_worker_load(c, 7, 1, &load), 0));
	h_keys(keys, 3, 8);
	h_store_chain(c, ns, 7, 1, 1, 1, keys, 3, KVDEX_GPU);

	n = kvdex_workers_list(c, 0, w, 16);
	cr_assert(eq(i32, n, 3), "rows: %d (%s)", n, n < 0 ? strerror(-n) : "");
	r0 = find_info(w, n, 7, 0);
	r1 = find_info(w, n, 7, 1);
	r9 = find_info(w, n, 9, 0);
	cr_assert(r0 != NULL && r1 != NULL && r9 != NULL);
	cr_assert(eq(u32, r0->dp_size, 2));
	cr_assert(eq(u32, r1->dp_size, 2));
	cr_assert(eq(str, (char *)r0->address, "10.0.0.7:8000"));
	cr_assert(ne(u32, r0->slot, r1->slot));
	cr_assert(ne(u32, r0->slot, r9->slot));
	cr_assert(eq(u64, r0->load_age_ms, UINT64_MAX), "rank 0 never reported a load");
	cr_assert(eq(u32, r1->load.queued, 3));
	cr_assert(eq(u32, r1->load.running, 2));
	cr_assert(eq(u64, r1->load.prefill_tokens, 1000));
	cr_assert(eq(u32, r1->load.kv_util_permille, 500));
	cr_assert(lt(u64, r1->load_age_ms, 60000));
	cr_assert(eq(u64, r1->holders, 3));
	cr_assert(eq(u64, r0->holders, 0));
	cr_assert(eq(u64, r9->holders, 0));

	/* A short buffer: the full count comes back, only cap rows written. */
	memset(w, 0xee, sizeof(w));
	cr_assert(eq(i32, kvdex_workers_list(c, 0, w, 1), 3));
	cr_assert(eq(u8, ((uint8_t *)&w[1])[0], 0xee));
	cr_assert(eq(i32, kvdex_workers_list(c, 5, w, 16), -EINVAL));

	/* Same dp_size: idempotent, may change the address. Another: -EEXIST. */
	cr_assert(eq(i32, kvdex_worker_register(c, 7, "10.9.9.9:9000", 2), 0));
	n = kvdex_workers_list(c, 0, w, 16);
	cr_assert(eq(i32, n, 3));
	cr_assert(eq(str, (char *)find_info(w, n, 7, 1)->address, "10.9.9.9:9000"));
	rc = kvdex_worker_register(c, 7, "10.9.9.9:9000", 3);
	cr_assert(eq(i32, rc, -EEXIST), "dp_size change: %d", rc);
	cr_assert(eq(i32, kvdex_worker_load(c, 4242, 0, &load), -ESRCH));
	cr_assert(eq(u64, h_stat1(c, 0, "slots_used"), 3));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 9. Every counter name the tests and operators rely on is reported. */
Test(basic, stats_names)
{
	struct h_server s;
	struct kvdex_client *c;
	struct h_stats st;

	h_server_start(&s, NULL);
	c = h_client1(&s, KVDEX_TRANSPORT_TCP);
	h_stats_get(c, 0, &st);
	for (size_t i = 0; i < KVDEX_TEST_NCOUNTER_NAMES; i++) {
		h_stat(&st, kvdex_test_counter_names[i]);
	}
	/* And nothing else: a counter added to the server must be documented
	 * (docs/OPERATIONS.md) and listed in tests/fakes/counter_names.h. */
	cr_assert(eq(int, st.n, (int)KVDEX_TEST_NCOUNTER_NAMES));
	cr_assert(ge(u64, h_stat(&st, "conns_active"), 1));
	cr_assert(ge(u64, h_stat(&st, "conns_accepted"), 1));
	cr_assert(gt(u64, h_stat(&st, "home_buckets"), 0));
	cr_assert(eq(u64, h_stat(&st, "blocks"), 0));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 10. Client-side argument checks. */
BOTH_TRANSPORTS(lookup_bad_args)
{
	struct h_server s;
	struct kvdex_client *c;
	uint64_t key = 1;
	struct h_lookup l;
	uint32_t ns;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "args");
	cr_assert(eq(i32, h_lookup(c, ns, &key, 0, 0, &l), -EINVAL));
	cr_assert(eq(i32, h_lookup(c, ns + 1000, &key, 1, 0, &l), -EINVAL));
	cr_assert(eq(i32, kvdex_lookup(c, ns, &key, 1, 0, NULL), -EINVAL));
	cr_assert(eq(i32, kvdex_worker_register(c, 0, "x", 1), -EINVAL));
	cr_assert(eq(i32, kvdex_worker_register(c, 5, "x", 0), -EINVAL));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 11. Growing far past the initial table forces resizes; a client whose
 * geometry was cached before them, and a new one, both find every block. */
BOTH_TRANSPORTS(resize_keeps_lookups)
{
	enum { N = 3000, BATCH = 500 };
	struct h_server s;
	struct kvdex_client *c, *c2;
	static uint64_t keys[N];
	struct h_lookup l;
	struct h_stats st;
	uint32_t ns, ns2;

	h_server_start(&s, H_ARGS("--capacity-blocks", "64"));
	c = h_client1(&s, t);
	ns = h_ns(c, "resize");
	h_worker(c, 1, 1);
	h_keys(keys, N, 15);
	expect_lookup(c, ns, keys, 4, 0, &l); /* cache the first geometry */
	cr_assert(eq(u32, l.res.longest, 0));
	for (int b = 0; b < N / BATCH; b++) {
		h_store_chain(c, ns, 1, 0, 1, (uint64_t)b + 1, keys + b * BATCH, BATCH, KVDEX_GPU);
	}
	h_stats_get(c, 0, &st);
	cr_log_info("resizes %llu, home buckets %llu", (unsigned long long)h_stat(&st, "resizes"),
		    (unsigned long long)h_stat(&st, "home_buckets"));
	cr_assert(ge(u64, h_stat(&st, "resizes"), 1));
	cr_assert(eq(u64, h_stat(&st, "blocks"), N));
	cr_assert(eq(u64, h_stat(&st, "index_full"), 0));

	expect_lookup(c, ns, keys, N, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), N));
	c2 = h_client1(&s, t);
	ns2 = h_ns(c2, "resize");
	expect_lookup(c2, ns2, keys, N, 0, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), N));
	kvdex_client_destroy(c2);
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

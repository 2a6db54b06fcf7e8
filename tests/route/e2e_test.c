/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex_route() end to end against a real kvdexd over shm (and tcp): the
 * candidates' holdings and fresh load rows come from one lookup, the choice
 * is right, load rows carry their age, and speculative entries appear for
 * the chosen worker, leave the worker's own seq stream alone, are converted
 * by real stores, and vanish after their TTL.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "kvdex/route.h"

TestSuite(route_e2e, .init = h_init, .fini = h_cleanup, .timeout = 30);

#define NB 64

/* A decision's reason, for assertion messages. */
static const char *
why_text(const struct kvdex_route_decision *d)
{
	static char buf[200];

	kvdex_route_reason(d, buf, sizeof(buf));
	return buf;
}

struct fx {
	struct h_server s;
	struct kvdex_client *c;
	uint32_t ns;
};

static void
fx_start(struct fx *f, enum kvdex_transport t)
{
	h_server_start(&f->s, NULL);
	f->c = h_client1(&f->s, t);
	f->ns = h_ns(f->c, "route-model");
	for (uint32_t w = 1; w <= 4; w++) {
		h_worker(f->c, w, 1);
	}
}

static void
fx_stop(struct fx *f)
{
	kvdex_client_destroy(f->c);
	h_server_stop_ok(&f->s);
}

static void
load(struct kvdex_client *c, uint32_t w, uint32_t queued, uint64_t prefill, uint16_t kv)
{
	struct kvdex_load l = {
		.queued = queued, .running = 1, .prefill_tokens = prefill, .kv_util_permille = kv};

	cr_assert(eq(int, kvdex_worker_load(c, w, 0, &l), 0));
}

static struct kvdex_router *
router(enum kvdex_route_policy p, bool spec, uint32_t ttl_ms)
{
	struct kvdex_route_opts o;
	struct kvdex_router *r = NULL;

	kvdex_route_opts_init(&o, sizeof(o));
	o.policy = p;
	o.speculate = spec;
	o.spec_ttl_ms = ttl_ms;
	cr_assert(eq(int, kvdex_router_create(&o, &r), 0));
	return r;
}

static void
cands(struct kvdex_route_cand *c, unsigned n)
{
	memset(c, 0, n * sizeof(*c));
	for (unsigned i = 0; i < n; i++) {
		c[i].worker_id = i + 1;
	}
}

static const struct kvdex_route_cand *
find(const struct kvdex_route_cand *c, unsigned n, uint32_t w)
{
	for (unsigned i = 0; i < n; i++) {
		if (c[i].worker_id == w) {
			return &c[i];
		}
	}
	cr_assert(false, "worker %u not among the candidates", w);
	return NULL;
}

/* 1. Fresh load rows with ages; a worker that never reported says so. */
Test(route_e2e, workers_read_ages)
{
	struct kvdex_worker_load_row rows[8];
	struct fx f;
	int n;

	fx_start(&f, KVDEX_TRANSPORT_SHM);
	load(f.c, 1, 3, 1000, 250);
	load(f.c, 2, 0, 0, 10);
	n = kvdex_workers_read(f.c, 0, rows, 8);
	cr_assert(eq(int, n, 4));
	cr_assert(eq(u32, rows[0].worker_id, 1));
	cr_assert(eq(u32, rows[0].load.queued, 3));
	cr_assert(eq(u64, rows[0].load.prefill_tokens, 1000));
	cr_assert(eq(u32, rows[0].load.kv_util_permille, 250));
	cr_assert(lt(u32, rows[0].load_age_ms, 1000));
	cr_assert(lt(u32, rows[1].load_age_ms, 1000));
	cr_assert(eq(u32, rows[2].load_age_ms, KVDEX_LOAD_AGE_NEVER));
	cr_assert(eq(u32, rows[3].load_age_ms, KVDEX_LOAD_AGE_NEVER));
	/* The age grows with the server's clock (1/16 s ticks). */
	h_sleep_ms(400);
	n = kvdex_workers_read(f.c, 0, rows, 8);
	cr_assert(eq(int, n, 4));
	cr_assert(ge(u32, rows[0].load_age_ms, 250));
	cr_assert(lt(u32, rows[0].load_age_ms, 3000));
	/* A new report is seen at once (no workers_version bump needed). */
	load(f.c, 1, 7, 5, 300);
	cr_assert(eq(int, kvdex_workers_read(f.c, 0, rows, 8), 4));
	cr_assert(eq(u32, rows[0].load.queued, 7));
	cr_assert(lt(u32, rows[0].load_age_ms, 250));
	cr_assert(eq(int, kvdex_workers_read(f.c, KVDEX_WORKERS_CACHED, rows, 1), 4));
	fx_stop(&f);
}

/* 2. kvdex_route picks the GPU holder over a disk holder and a loaded one,
 * in one round trip, with the candidates' loads filled in. */
static void
route_choice(enum kvdex_transport t)
{
	struct kvdex_route_cand c[4];
	struct kvdex_route_decision d;
	struct kvdex_router *r = router(KVDEX_ROUTE_KVDEX, false, 0);
	uint64_t keys[NB];
	struct fx f;

	fx_start(&f, t);
	h_keys(keys, NB, 77);
	h_store_chain(f.c, f.ns, 1, 0, 1, 1, keys, NB, KVDEX_DISK);
	h_store_chain(f.c, f.ns, 2, 0, 1, 1, keys, NB, KVDEX_GPU);
	h_store_chain(f.c, f.ns, 3, 0, 1, 1, keys, NB, KVDEX_GPU);
	load(f.c, 1, 0, 0, 100);
	load(f.c, 2, 0, 0, 100);
	load(f.c, 3, 50, 60000, 980);
	load(f.c, 4, 0, 0, 0);
	/* Warm the header and row caches; then one round trip per decision. */
	cands(c, 4);
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, NB, 0, c, 4, &d), 0));
	cands(c, 4);
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, NB, 0, c, 4, &d), 0), "%s",
		  kvdex_client_last_error(f.c));
	cr_assert(eq(u32, d.worker_id, 2), "%s", why_text(&d));
	cr_assert(eq(u32, d.round_trips, 1));
	cr_assert(eq(u32, find(c, 4, 1)->tier_blocks[KVDEX_DISK], NB));
	cr_assert(eq(u32, find(c, 4, 3)->matched, NB));
	cr_assert(eq(u32, find(c, 4, 3)->load.queued, 50));
	cr_assert(lt(u32, find(c, 4, 3)->load_age_ms, 1000));
	cr_assert(eq(u32, find(c, 4, 4)->matched, 0));
	cr_assert(eq(int, kvdex_route_done(r, d.ticket, 10.0), 0));
	/* Worker 2 becomes the loaded one: the next decision sees it at once. */
	load(f.c, 2, 50, 60000, 980);
	cands(c, 4);
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, NB, 0, c, 4, &d), 0));
	cr_assert(eq(u32, d.worker_id, 1), "%s", why_text(&d)); /* the disk holder now */
	kvdex_router_destroy(r);
	fx_stop(&f);
}

Test(route_e2e, choice_shm)
{
	route_choice(KVDEX_TRANSPORT_SHM);
}

Test(route_e2e, choice_tcp)
{
	route_choice(KVDEX_TRANSPORT_TCP);
}

static unsigned
spec_held(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, uint32_t w)
{
	struct h_lookup l;
	const struct kvdex_holding *h;

	cr_assert(eq(int, h_lookup(c, ns, keys, NB, 0, &l), 0));
	h = h_find(&l, w, 0);
	return h == NULL ? 0 : h->spec_blocks;
}

/* 3. Speculative entries: published for the chosen worker, unsequenced,
 * gone after their TTL. */
Test(route_e2e, speculative_expire)
{
	struct kvdex_route_cand c[4];
	struct kvdex_route_decision d;
	struct kvdex_router *r = router(KVDEX_ROUTE_ROUND_ROBIN, true, 300);
	struct kvdex_publish_result pr;
	struct kvdex_event ev;
	uint64_t keys[NB], other[1];
	int64_t deadline;
	struct fx f;

	fx_start(&f, KVDEX_TRANSPORT_SHM);
	h_keys(keys, NB, 5);
	h_keys(other, 1, 6);
	/* Worker 1 publishes seq 1 of its own stream first. */
	h_store_chain(f.c, f.ns, 1, 0, 9, 1, other, 1, KVDEX_GPU);
	cands(c, 4);
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, NB, 0, c, 4, &d), 0));
	cr_assert(eq(u32, d.worker_id, 1));
	cr_assert(eq(int, d.spec_error, 0), "%s", kvdex_client_last_error(f.c));
	cr_assert(eq(u32, d.spec_published, NB));
	cr_assert(eq(u32, spec_held(f.c, f.ns, keys, 1), NB));
	cr_assert(eq(u64, h_stat1(f.c, 0, "spec_publishes"), 1));
	/* The worker's stream is untouched: seq 2 is neither a gap nor a dup. */
	ev = h_ev_store(f.ns, other[0] + 1, KVDEX_GPU);
	cr_assert(eq(int, h_publish(f.c, 1, 0, 9, 2, &ev, 1, &pr), 0));
	cr_assert(not(pr.gap));
	cr_assert(not(pr.duplicate));
	cr_assert(eq(u64, h_stat1(f.c, 0, "seq_gaps"), 0));
	deadline = h_now_ms() + 5000;
	while (spec_held(f.c, f.ns, keys, 1) != 0 && h_now_ms() < deadline) {
		h_sleep_ms(50);
	}
	cr_assert(eq(u32, spec_held(f.c, f.ns, keys, 1), 0));
	kvdex_router_destroy(r);
	fx_stop(&f);
}

/* 4. A real store converts a speculative entry: it outlives the TTL. */
Test(route_e2e, speculative_confirmed)
{
	struct kvdex_route_cand c[2];
	struct kvdex_route_decision d;
	struct kvdex_router *r = router(KVDEX_ROUTE_ROUND_ROBIN, true, 300);
	uint64_t keys[NB];
	struct h_lookup l;
	struct fx f;

	fx_start(&f, KVDEX_TRANSPORT_SHM);
	h_keys(keys, NB, 11);
	cands(c, 2);
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, NB, 0, c, 2, &d), 0));
	cr_assert(eq(u32, d.spec_published, NB));
	h_store_chain(f.c, f.ns, d.worker_id, 0, 1, 1, keys, NB, KVDEX_GPU);
	h_sleep_ms(800);
	cr_assert(eq(int, h_lookup(f.c, f.ns, keys, NB, 0, &l), 0));
	cr_assert(eq(u32, h_matched(&l, d.worker_id, 0), NB));
	cr_assert(eq(u32, h_find(&l, d.worker_id, 0)->spec_blocks, 0));
	/* Routing the same chain again publishes nothing for the holder. */
	cands(c, 2);
	c[0].worker_id = d.worker_id;
	c[1].worker_id = d.worker_id == 1 ? 2 : 1;
	kvdex_router_destroy(r);
	r = router(KVDEX_ROUTE_KVDEX, true, 300);
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, NB, 0, c, 2, &d), 0));
	cr_assert(eq(u32, d.worker_id, c[0].worker_id));
	cr_assert(eq(u32, d.spec_published, 0));
	kvdex_router_destroy(r);
	fx_stop(&f);
}

/* 5. Speculating for a worker the server does not know fails in spec_error
 * only: the decision stands. */
Test(route_e2e, unknown_worker_spec_error)
{
	struct kvdex_route_cand c[1];
	struct kvdex_route_decision d;
	struct kvdex_router *r = router(KVDEX_ROUTE_RANDOM, true, 300);
	uint64_t keys[4];
	struct fx f;

	fx_start(&f, KVDEX_TRANSPORT_SHM);
	h_keys(keys, 4, 3);
	cands(c, 1);
	c[0].worker_id = 999; /* not registered */
	cr_assert(eq(int, kvdex_route(r, f.c, f.ns, keys, 4, 0, c, 1, &d), 0));
	cr_assert(eq(u32, d.worker_id, 999));
	cr_assert(eq(int, d.spec_error, -ESRCH));
	cr_assert(eq(u32, d.spec_published, 0));
	kvdex_router_destroy(r);
	fx_stop(&f);
}

/* 6. The server refuses a speculative_only batch holding anything but
 * speculative STOREDs, whole, and counts it; a good one leaves seq alone. */
Test(route_e2e, spec_only_validation)
{
	Kvdex__Publish p = KVDEX__PUBLISH__INIT;
	Kvdex__Event e[2] = {KVDEX__EVENT__INIT, KVDEX__EVENT__INIT};
	Kvdex__Event *pe[2] = {&e[0], &e[1]};
	struct h_frame fr;
	struct fx f;
	int fd;

	fx_start(&f, KVDEX_TRANSPORT_SHM);
	fd = h_raw_connect(&f.s, true);
	h_raw_hello(fd, NULL);
	p.worker_id = 1;
	p.speculative_only = true;
	p.n_events = 2;
	p.events = pe;
	e[0].type = KVDEX__EVENT__TYPE__STORED;
	e[0].ns_id = 1;
	e[0].key = 42;
	e[0].speculative = true;
	e[1] = e[0];
	e[1].key = 43;
	e[1].speculative = false; /* a real store: not a router's business */
	cr_assert(eq(int, h_send_msg(fd, KVDEX_MSG_PUBLISH, 7, &p.base), 0));
	h_expect_error(fd, 7, KVDEX__CODE__MALFORMED, false);
	cr_assert(eq(u64, h_stat1(f.c, 0, "malformed_requests"), 1));
	cr_assert(eq(u64, h_stat1(f.c, 0, "blocks"), 0));
	e[1].speculative = true;
	cr_assert(eq(int, h_send_msg(fd, KVDEX_MSG_PUBLISH, 8, &p.base), 0));
	cr_assert(eq(int, h_recv_frame(fd, &fr, 2000), 0));
	cr_assert(eq(u32, fr.hdr.type, KVDEX_MSG_PUBLISH_REPLY));
	h_frame_free(&fr);
	cr_assert(eq(u64, h_stat1(f.c, 0, "spec_publishes"), 1));
	cr_assert(eq(u64, h_stat1(f.c, 0, "blocks"), 2));
	cr_assert(eq(u64, h_stat1(f.c, 0, "publish_batches"), 0));
	close(fd);
	fx_stop(&f);
}

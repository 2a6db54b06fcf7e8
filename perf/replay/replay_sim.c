/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One replay run: simulated workers in front of a real kvdexd.
 *
 * Setup: a private kvdexd (kvdex_bench_server_start, unless --servers), one
 * libkvdex client on shm, one namespace, and per simulated worker a kvdex
 * worker id (1..N), a struct kvdex_cache (RLT or leaf LRU) whose publish
 * callback sends every store and eviction through kvdex_publish() (the
 * worker's own seq stream), and a FIFO queue.
 *
 * Events (replay_evq, simulated ms):
 *   ARRIVAL r   route r: kvdex_lookup(prompt chain, FRESH_LOADS) + the load
 *               rows + kvdex_router_decide(now = simulated ms); enqueue it on
 *               the chosen worker; start it if the worker is idle
 *   COMPLETE w  the running request finishes: its chain (prompt + output[:-1]
 *               blocks) is inserted into w's cache, its lock released,
 *               kvdex_route_done_at(ticket, e2e, now); the next queued
 *               request starts; a multi-turn request schedules its next turn
 *   start       kvdex_cache_match(prompt, LOCK): the matched prefix is the
 *               hit (the ground truth) and stays pinned until completion;
 *               service time from replay_model.c
 * A worker reports its load (queued, running, prefill tokens = estimated
 * uncached tokens of its queued and running requests, KV utilisation) with
 * kvdex_worker_load() after every change, so the rows the router reads are
 * exact; their age is taken from the simulated clock (the server's clock is
 * wall time, which has nothing to do with simulated time).
 *
 * Why not kvdex_route(): it stamps the decision with the wall clock, and
 * LBGR's decay and kvdex's recent assignments need simulated time. The path
 * here is kvdex_route()'s own body (lookup with fresh loads, candidates from
 * the holdings, kvdex_workers_read(CACHED), decide) with now_ms simulated;
 * --use-kvdex-route calls the real thing instead.
 *
 * Eviction is measured on its own: before the insert, the worker computes
 * what the insert would evict (the new blocks minus the free ones, or all new
 * blocks in full-allocation mode) and calls kvdex_cache_evict() for it, timed
 * with the publish time subtracted; the insert then finds room. With one
 * request at a time per worker, nothing changes the cache between a
 * request's start and its completion, so this is exactly what the insert
 * would have done.
 *
 * Single-threaded; the only blocking calls are the client's.
 */
#include "perf/replay/replay.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "perf/bench.h"

struct sim;

struct sim_worker {
	uint32_t id;
	struct sim *sim;
	struct kvdex_cache *cache;
	struct kvdex_cache_publisher pub;
	uint32_t *fifo; /* ring of request indices */
	size_t head, nq, capq;
	int64_t running; /* request index, -1 idle */
	uint64_t prefill_tokens;
	uint64_t cap_blocks;
	double busy_ms;
	double last_report_ms;
};

struct sim_req {
	double start_ms, ttft_ms, e2e_ms, service_ms;
	uint64_t ticket;
	uint32_t worker;
	uint32_t route_matched; /* blocks, the index's view at routing */
	uint32_t est_uncached;	/* tokens, counted in the worker's load */
	uint32_t matched;	/* blocks matched and locked at start */
	uint32_t uncached;	/* tokens */
	bool done;
};

struct sim {
	const struct replay_workload *w;
	const struct replay_run_opts *o;
	struct kvdex_bench_server srv;
	struct kvdex_client *client;
	uint32_t ns;
	struct kvdex_router *router;
	struct sim_worker *wk;
	struct sim_req *st;
	struct replay_evq q;
	struct kvdex_holding hold[2 * REPLAY_MAX_WORKERS];
	struct kvdex_worker_load_row rows[2 * REPLAY_MAX_WORKERS];
	struct kvdex_route_cand cand[REPLAY_MAX_WORKERS];
	double now;
	size_t done;
	/* ideal hit rate: keys seen so far, open addressing */
	uint64_t *seen;
	size_t seen_mask;
	uint64_t ideal_hit_tokens;
	/* measurements */
	double *route_ns;
	size_t nroute;
	uint64_t decide_ns;
	uint64_t evict_ns, evict_calls, evicted, dropped;
	uint64_t pub_ns, pub_ns_cur, publishes, events;
	uint64_t lookups, load_reports;
	uint64_t hit_tokens, idx_hit_tokens;
	uint64_t last_progress_ns;
};

void
replay_run_opts_init(struct replay_run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->workers = 4;
	o->capacity_tokens = 190000;
	o->router = KVDEX_ROUTE_KVDEX;
	o->evict = KVDEX_CACHE_RLT;
	o->evict_mode = KVDEX_CACHE_EVICT_FULL_ALLOCATION;
	o->seed = 1;
	replay_model_init(&o->model);
	o->lbgr_units_per_token = -1.0;
	o->kvdex_prefill_ms_per_token = -1.0;
	o->kvdex_miss_weight = -1.0;
	o->kvdex_queued_req_ms = -1.0;
}

/* ---- Publishing, timed ---------------------------------------------------------- */

static int
sim_publish(void *arg, const struct kvdex_event *ev, size_t n)
{
	struct sim_worker *wk = arg;
	struct sim *s = wk->sim;
	uint64_t t0 = kvdex_bench_now_ns(), dt;
	int rc = kvdex_cache_publish_client(&wk->pub, ev, n);

	dt = kvdex_bench_now_ns() - t0;
	s->pub_ns += dt;
	s->pub_ns_cur += dt;
	s->publishes++;
	s->events += n;
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: publish of worker %u: %s (%s)\n", wk->id,
			strerror(-rc), kvdex_client_last_error(s->client));
	}
	return rc;
}

static int
sim_report_load(struct sim *s, struct sim_worker *wk)
{
	struct kvdex_cache_stats st;
	struct kvdex_load l;
	int rc;

	kvdex_cache_stats_get(wk->cache, &st, sizeof(st));
	l.queued = (uint32_t)wk->nq;
	l.running = wk->running >= 0 ? 1 : 0;
	l.prefill_tokens = wk->prefill_tokens;
	l.kv_util_permille = (uint16_t)(st.size * 1000 / (st.capacity ? st.capacity : 1));
	rc = kvdex_worker_load(s->client, wk->id, 0, &l);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: load report of worker %u: %s\n", wk->id,
			strerror(-rc));
		return rc;
	}
	wk->last_report_ms = s->now;
	s->load_reports++;
	return 0;
}

/* ---- Ideal hit rate ---------------------------------------------------------------- */

static bool
seen_insert(struct sim *s, uint64_t key)
{
	size_t i = (size_t)replay_splitmix64(key) & s->seen_mask;

	while (s->seen[i] != 0) {
		if (s->seen[i] == key) {
			return false;
		}
		i = (i + 1) & s->seen_mask;
	}
	s->seen[i] = key;
	return true;
}

static bool
seen_has(const struct sim *s, uint64_t key)
{
	size_t i = (size_t)replay_splitmix64(key) & s->seen_mask;

	while (s->seen[i] != 0) {
		if (s->seen[i] == key) {
			return true;
		}
		i = (i + 1) & s->seen_mask;
	}
	return false;
}

/* An infinite cache shared by all: leading blocks seen before, then all. */
static void
sim_ideal(struct sim *s, const struct replay_req *r)
{
	const uint64_t *k = s->w->keys + r->key_off;
	uint64_t m = 0;

	while (m < r->nprompt_blocks && seen_has(s, k[m])) {
		m++;
	}
	m *= s->w->block_size;
	s->ideal_hit_tokens += m < r->prompt_tokens ? m : r->prompt_tokens;
	for (uint32_t i = 0; i < r->nkeys; i++) {
		seen_insert(s, k[i]);
	}
}

/* ---- Routing ---------------------------------------------------------------------------- */

static uint32_t
sim_hit_tokens(const struct sim *s, const struct replay_req *r, uint32_t blocks)
{
	uint64_t t = (uint64_t)blocks * s->w->block_size;

	return t < r->prompt_tokens ? (uint32_t)t : r->prompt_tokens;
}

/* Candidates' holdings from a lookup, loads from the rows it read. */
static int
sim_fill_cands(struct sim *s, const struct kvdex_lookup_result *res, bool looked_up)
{
	int nrows = kvdex_workers_read(s->client, looked_up ? KVDEX_WORKERS_CACHED : 0, s->rows,
				       2 * REPLAY_MAX_WORKERS);

	if (nrows < 0) {
		return nrows;
	}
	for (uint32_t i = 0; i < s->o->workers; i++) {
		struct kvdex_route_cand *c = &s->cand[i];

		memset(c, 0, sizeof(*c));
		c->worker_id = s->wk[i].id;
		c->load_age_ms = KVDEX_LOAD_AGE_NEVER;
		for (uint32_t j = 0; looked_up && j < res->nholdings; j++) {
			if (res->holdings[j].worker_id == c->worker_id) {
				c->matched = res->holdings[j].matched;
				c->spec_blocks = res->holdings[j].spec_blocks;
				memcpy(c->tier_blocks, res->holdings[j].tier_blocks,
				       sizeof(c->tier_blocks));
			}
		}
		for (int j = 0; j < nrows && j < (int)(2 * REPLAY_MAX_WORKERS); j++) {
			if (s->rows[j].worker_id == c->worker_id &&
			    s->rows[j].load_age_ms != KVDEX_LOAD_AGE_NEVER) {
				c->load = s->rows[j].load;
				/* the simulated age of the report, not the server's wall age */
				c->load_age_ms = (uint32_t)(s->now - s->wk[i].last_report_ms);
			}
		}
	}
	return 0;
}

static int
sim_route_decide(struct sim *s, const struct replay_req *r, struct kvdex_route_decision *d,
		 uint64_t *decide_ns)
{
	const uint64_t *keys = s->w->keys + r->key_off;
	struct kvdex_lookup_result res;
	struct kvdex_route_req q;
	uint64_t t0;
	int rc = 0;

	memset(&res, 0, sizeof(res));
	res.holdings = s->hold;
	res.cap = 2 * REPLAY_MAX_WORKERS;
	if (r->nprompt_blocks > 0) {
		rc = kvdex_lookup(s->client, s->ns, keys, r->nprompt_blocks,
				  KVDEX_LOOKUP_FRESH_LOADS, &res);
		s->lookups++;
	}
	if (rc == 0) {
		rc = sim_fill_cands(s, &res, r->nprompt_blocks > 0);
	}
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: lookup: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(s->client));
		return rc;
	}
	q = (struct kvdex_route_req){
		.nblocks = r->nprompt_blocks,
		.ntokens = r->prompt_tokens,
		.block_size = s->w->block_size,
		.now_ms = (uint64_t)s->now,
	};
	t0 = kvdex_bench_now_ns();
	rc = kvdex_router_decide(s->router, &q, s->cand, s->o->workers, d);
	*decide_ns = kvdex_bench_now_ns() - t0;
	return rc;
}

static int
sim_route(struct sim *s, uint32_t ri, uint32_t *widx)
{
	const struct replay_req *r = &s->w->req[ri];
	struct kvdex_route_decision d;
	uint64_t t0 = kvdex_bench_now_ns(), dn = 0;
	int rc;

	if (s->o->use_kvdex_route && r->nprompt_blocks > 0) {
		for (uint32_t i = 0; i < s->o->workers; i++) {
			memset(&s->cand[i], 0, sizeof(s->cand[i]));
			s->cand[i].worker_id = s->wk[i].id;
		}
		rc = kvdex_route(s->router, s->client, s->ns, s->w->keys + r->key_off,
				 r->nprompt_blocks, r->prompt_tokens, s->cand, s->o->workers, &d);
		s->lookups++;
	} else {
		rc = sim_route_decide(s, r, &d, &dn);
	}
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: routing request %u: %s\n", ri, strerror(-rc));
		return rc;
	}
	s->route_ns[s->nroute++] = (double)(kvdex_bench_now_ns() - t0);
	s->decide_ns += dn;
	if (d.worker_id == 0 || d.worker_id > s->o->workers) {
		return -EPROTO;
	}
	*widx = d.worker_id - 1;
	s->st[ri].ticket = d.ticket;
	s->st[ri].worker = *widx;
	s->st[ri].route_matched = s->cand[0].matched;
	s->idx_hit_tokens += sim_hit_tokens(s, r, s->cand[0].matched);
	return 0;
}

/* ---- Workers --------------------------------------------------------------------------- */

static int
fifo_push(struct sim_worker *wk, uint32_t ri)
{
	if (wk->nq == wk->capq) {
		size_t cap = wk->capq ? wk->capq * 2 : 64;
		uint32_t *f = malloc(cap * sizeof(*f));

		if (f == NULL) {
			return -ENOMEM;
		}
		for (size_t i = 0; i < wk->nq; i++) {
			f[i] = wk->fifo[(wk->head + i) % wk->capq];
		}
		free(wk->fifo);
		wk->fifo = f;
		wk->head = 0;
		wk->capq = cap;
	}
	wk->fifo[(wk->head + wk->nq++) % wk->capq] = ri;
	return 0;
}

static uint32_t
fifo_pop(struct sim_worker *wk)
{
	uint32_t ri = wk->fifo[wk->head];

	wk->head = (wk->head + 1) % wk->capq;
	wk->nq--;
	return ri;
}

/* Start the next queued request on an idle worker. */
static int
sim_start(struct sim *s, struct sim_worker *wk)
{
	uint32_t ri = fifo_pop(wk);
	const struct replay_req *r = &s->w->req[ri];
	struct sim_req *st = &s->st[ri];
	size_t m = 0;
	int rc = kvdex_cache_match(wk->cache, s->w->keys + r->key_off, r->nprompt_blocks,
				   KVDEX_CACHE_LOCK, &m);

	if (rc < 0) {
		return rc;
	}
	st->matched = (uint32_t)m;
	st->uncached = r->prompt_tokens - sim_hit_tokens(s, r, st->matched);
	s->hit_tokens += r->prompt_tokens - st->uncached;
	wk->prefill_tokens = wk->prefill_tokens - st->est_uncached + st->uncached;
	st->est_uncached = st->uncached;
	st->start_ms = s->now;
	st->ttft_ms = s->now - r->arrival_ms + replay_model_prefill_ms(&s->o->model, st->uncached);
	st->service_ms = replay_model_service_ms(&s->o->model, st->uncached, r->output_tokens);
	wk->running = ri;
	return replay_evq_push(&s->q, s->now + st->service_ms, REPLAY_EV_COMPLETE,
			       (uint32_t)(wk - s->wk));
}

/* Make the room the insert of r would make, timed (publish excluded). */
static int
sim_evict(struct sim *s, struct sim_worker *wk, const struct replay_req *r, uint32_t matched)
{
	struct kvdex_cache_stats cs;
	uint64_t need, fresh = r->nkeys - matched, free_blocks, t0, got = 0;
	int rc;

	kvdex_cache_stats_get(wk->cache, &cs, sizeof(cs));
	free_blocks = cs.capacity - cs.size;
	if (fresh <= free_blocks) {
		return 0;
	}
	need = s->o->evict_mode == KVDEX_CACHE_EVICT_FULL_ALLOCATION ? fresh : fresh - free_blocks;
	s->pub_ns_cur = 0;
	t0 = kvdex_bench_now_ns();
	rc = kvdex_cache_evict(wk->cache, need, &got);
	s->evict_ns += kvdex_bench_now_ns() - t0 - s->pub_ns_cur;
	s->evict_calls++;
	s->evicted += got;
	return rc;
}

static int
sim_complete(struct sim *s, struct sim_worker *wk)
{
	uint32_t ri = (uint32_t)wk->running;
	const struct replay_req *r = &s->w->req[ri];
	const uint64_t *keys = s->w->keys + r->key_off;
	struct sim_req *st = &s->st[ri];
	struct kvdex_cache_result cr;
	int rc = sim_evict(s, wk, r, st->matched);

	if (rc == 0) {
		rc = kvdex_cache_insert(wk->cache, keys, r->nkeys, 0, &cr);
	}
	if (rc == 0) {
		s->dropped += cr.dropped;
		rc = kvdex_cache_unlock(wk->cache, keys, st->matched);
	}
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: cache of worker %u: %s\n", wk->id, strerror(-rc));
		return rc;
	}
	st->e2e_ms = s->now - r->arrival_ms;
	st->done = true;
	wk->busy_ms += st->service_ms;
	wk->prefill_tokens -= st->uncached;
	wk->running = -1;
	s->done++;
	rc = kvdex_route_done_at(s->router, st->ticket, st->e2e_ms, (uint64_t)s->now);
	if (rc < 0 && rc != -ENOENT) {
		return rc;
	}
	if (r->next >= 0) {
		rc = replay_evq_push(&s->q, s->now + r->think_ms, REPLAY_EV_ARRIVAL,
				     (uint32_t)r->next);
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

/* ---- The loop ------------------------------------------------------------------------------- */

static double
sim_arrival_ms(const struct sim *s, const struct replay_ev *ev)
{
	const struct replay_req *r = &s->w->req[ev->idx];

	return r->arrival_ms >= 0 ? r->arrival_ms : ev->t;
}

static int
sim_on_arrival(struct sim *s, const struct replay_ev *ev, double *arrival)
{
	const struct replay_req *r = &s->w->req[ev->idx];
	struct sim_worker *wk;
	uint32_t widx;
	int rc;

	arrival[ev->idx] = sim_arrival_ms(s, ev);
	sim_ideal(s, r);
	rc = sim_route(s, ev->idx, &widx);
	if (rc < 0) {
		return rc;
	}
	wk = &s->wk[widx];
	s->st[ev->idx].est_uncached = r->prompt_tokens - sim_hit_tokens(s, r, s->cand[0].matched);
	wk->prefill_tokens += s->st[ev->idx].est_uncached;
	rc = fifo_push(wk, ev->idx);
	if (rc == 0 && wk->running < 0) {
		rc = sim_start(s, wk);
	}
	return rc < 0 ? rc : sim_report_load(s, wk);
}

static int
sim_on_complete(struct sim *s, const struct replay_ev *ev)
{
	struct sim_worker *wk = &s->wk[ev->idx];
	int rc = sim_complete(s, wk);

	if (rc == 0 && wk->nq > 0) {
		rc = sim_start(s, wk);
	}
	return rc < 0 ? rc : sim_report_load(s, wk);
}

static void
sim_progress(struct sim *s, bool final)
{
	uint64_t now = kvdex_bench_now_ns();

	if (!s->o->progress || (!final && now - s->last_progress_ns < 200000000ull)) {
		return;
	}
	s->last_progress_ns = now;
	fprintf(stderr, "\r\033[K%s: %zu/%zu requests, simulated %.1f s", s->o->label, s->done,
		s->w->nreq, s->now / 1000.0);
	fflush(stderr);
}

static int
sim_loop(struct sim *s, double *arrival)
{
	struct replay_ev ev;
	uint64_t n = 0;
	int rc = 0;

	for (size_t i = 0; i < s->w->nreq; i++) {
		if (s->w->req[i].arrival_ms >= 0) {
			rc = replay_evq_push(&s->q, s->w->req[i].arrival_ms, REPLAY_EV_ARRIVAL,
					     (uint32_t)i);
			if (rc < 0) {
				return rc;
			}
		}
	}
	while (rc == 0 && replay_evq_pop(&s->q, &ev)) {
		s->now = ev.t;
		rc = ev.type == REPLAY_EV_ARRIVAL ? sim_on_arrival(s, &ev, arrival)
						  : sim_on_complete(s, &ev);
		if ((++n & 63) == 0) {
			sim_progress(s, false);
		}
	}
	sim_progress(s, true);
	return rc;
}

/* ---- Setup and teardown ------------------------------------------------------------------- */

static int
sim_connect(struct sim *s)
{
	struct kvdex_client_opts co;
	struct kvdex_ns_desc nd = {0};
	char servers[160], tenant[48];
	int rc;

	if (s->o->servers == NULL) {
		uint64_t cap =
			(uint64_t)s->o->workers * (s->o->capacity_tokens / s->w->block_size + 1);

		rc = kvdex_bench_server_start(s->o->kvdexd, cap * 2 > 65536 ? cap * 2 : 65536,
					      &s->srv);
		if (rc < 0) {
			return rc;
		}
		snprintf(servers, sizeof(servers), "unix:%s", s->srv.unix_path);
	}
	kvdex_client_opts_init(&co, sizeof(co));
	co.servers = s->o->servers ? s->o->servers : servers;
	co.client_name = "kvdex-replay";
	co.timeout_ms = 10000;
	rc = kvdex_client_create(&co, &s->client);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: connect %s: %s\n", co.servers, strerror(-rc));
		return rc;
	}
	/* a tenant of its own per run: blocks of earlier runs never match */
	snprintf(tenant, sizeof(tenant), "run-%" PRIx64, kvdex_bench_incarnation());
	nd.model = "kvdex-replay";
	nd.tenant = tenant;
	nd.block_size = s->w->block_size;
	rc = kvdex_ns_register(s->client, &nd, &s->ns);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: namespace: %s\n", strerror(-rc));
	}
	return rc;
}

static int
sim_worker_init(struct sim *s, struct sim_worker *wk, uint32_t i)
{
	struct kvdex_cache_opts co;
	char addr[32];
	int rc;

	wk->id = i + 1;
	wk->sim = s;
	wk->running = -1;
	snprintf(addr, sizeof(addr), "sim-worker-%u", wk->id);
	rc = kvdex_worker_register(s->client, wk->id, addr, 1);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: register worker %u: %s\n", wk->id, strerror(-rc));
		return rc;
	}
	wk->pub.client = s->client;
	wk->pub.hdr.worker_id = wk->id;
	wk->pub.hdr.incarnation = kvdex_bench_incarnation();
	wk->pub.hdr.seq = 1;
	kvdex_cache_opts_init(&co, sizeof(co));
	wk->cap_blocks = s->o->capacity_tokens / s->w->block_size;
	co.capacity_blocks = wk->cap_blocks ? wk->cap_blocks : 1;
	co.policy = s->o->evict;
	co.evict_mode = s->o->evict_mode;
	co.seed = replay_splitmix64(s->o->seed * 1000003u + i);
	co.ns = s->ns;
	co.tier = KVDEX_GPU;
	co.publish = sim_publish;
	co.publish_arg = wk;
	rc = kvdex_cache_create(&co, &wk->cache);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: cache of worker %u: %s\n", wk->id, strerror(-rc));
		return rc;
	}
	return sim_report_load(s, wk);
}

static int
sim_router_init(struct sim *s)
{
	struct kvdex_route_opts ro;
	int rc;

	kvdex_route_opts_init(&ro, sizeof(ro));
	ro.policy = s->o->router;
	ro.seed = replay_splitmix64(s->o->seed ^ 0x726f757465ull);
	ro.speculate = s->o->speculate;
	if (s->o->lbgr_units_per_token >= 0) {
		ro.lbgr.units_per_token = s->o->lbgr_units_per_token;
	}
	if (s->o->kvdex_miss_weight >= 0) {
		ro.kvdex.miss_weight = s->o->kvdex_miss_weight;
	}
	if (s->o->kvdex_bound_rel_set) {
		ro.kvdex.bound_rel = s->o->kvdex_bound_rel;
	}
	if (s->o->kvdex_bound_ms_set) {
		ro.kvdex.bound_ms = s->o->kvdex_bound_ms;
	}
	if (s->o->kvdex_prefill_ms_per_token >= 0) {
		ro.kvdex.prefill_ms_per_token = s->o->kvdex_prefill_ms_per_token;
	}
	if (s->o->kvdex_queued_req_ms >= 0) {
		ro.kvdex.queued_req_ms = s->o->kvdex_queued_req_ms;
	}
	rc = kvdex_router_create(&ro, &s->router);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: router: %s\n", strerror(-rc));
	}
	return rc;
}

static int
sim_init(struct sim *s)
{
	size_t nk = 64;
	int rc;

	while (nk < 2 * s->w->nkeys + 2) {
		nk *= 2;
	}
	s->seen = calloc(nk, sizeof(*s->seen));
	s->seen_mask = nk - 1;
	s->wk = calloc(s->o->workers, sizeof(*s->wk));
	s->st = calloc(s->w->nreq, sizeof(*s->st));
	s->route_ns = calloc(s->w->nreq + 1, sizeof(*s->route_ns));
	if (s->seen == NULL || s->wk == NULL || s->st == NULL || s->route_ns == NULL) {
		return -ENOMEM;
	}
	rc = sim_connect(s);
	for (uint32_t i = 0; i < s->o->workers && rc == 0; i++) {
		rc = sim_worker_init(s, &s->wk[i], i);
	}
	return rc == 0 ? sim_router_init(s) : rc;
}

static int
sim_fini(struct sim *s)
{
	int rc = 0;

	kvdex_router_destroy(s->router);
	for (uint32_t i = 0; s->wk != NULL && i < s->o->workers; i++) {
		kvdex_cache_destroy(s->wk[i].cache);
		free(s->wk[i].fifo);
	}
	kvdex_client_destroy(s->client);
	if (s->srv.pid > 0) {
		rc = kvdex_bench_server_stop(&s->srv);
	}
	replay_evq_fini(&s->q);
	free(s->wk);
	free(s->st);
	free(s->seen);
	free(s->route_ns);
	return rc;
}

/* ---- Results ----------------------------------------------------------------------------------
 */

static void
sim_latencies(struct sim *s, struct replay_result *res, const double *arrival)
{
	size_t n = s->w->nreq, k = 0;
	double *ttft = calloc(n + 1, sizeof(double)), *e2e = calloc(n + 1, sizeof(double));
	double *qw = calloc(n + 1, sizeof(double)), first = INFINITY, last = 0.0, tok = 0.0;

	if (ttft == NULL || e2e == NULL || qw == NULL) {
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct sim_req *st = &s->st[i];

		if (!st->done) {
			continue;
		}
		ttft[k] = st->ttft_ms;
		e2e[k] = st->e2e_ms;
		qw[k] = st->start_ms - arrival[i];
		res->ttft_mean += st->ttft_ms;
		res->e2e_mean += st->e2e_ms;
		first = arrival[i] < first ? arrival[i] : first;
		last = arrival[i] + st->e2e_ms > last ? arrival[i] + st->e2e_ms : last;
		tok += s->w->req[i].prompt_tokens + s->w->req[i].output_tokens;
		k++;
	}
	replay_sort(ttft, k);
	replay_sort(e2e, k);
	replay_sort(qw, k);
	res->requests = k;
	res->ttft_mean /= k ? k : 1;
	res->e2e_mean /= k ? k : 1;
	res->ttft_p50 = replay_pct(ttft, k, 0.50);
	res->ttft_p95 = replay_pct(ttft, k, 0.95);
	res->ttft_p99 = replay_pct(ttft, k, 0.99);
	res->e2e_p50 = replay_pct(e2e, k, 0.50);
	res->e2e_p95 = replay_pct(e2e, k, 0.95);
	res->e2e_p99 = replay_pct(e2e, k, 0.99);
	res->queue_p50 = replay_pct(qw, k, 0.50);
	res->sim_ms = k ? last - first : 0.0;
	res->req_per_s = res->sim_ms > 0 ? k / (res->sim_ms / 1000.0) : 0.0;
	res->tok_per_s = res->sim_ms > 0 ? tok / (res->sim_ms / 1000.0) : 0.0;
out:
	free(ttft);
	free(e2e);
	free(qw);
}

static void
sim_results(struct sim *s, struct replay_result *res, const double *arrival, double wall_s)
{
	double mean = 0.0, mx = 0.0, var = 0.0, pt = (double)s->w->prompt_tokens;

	memset(res, 0, sizeof(*res));
	sim_latencies(s, res, arrival);
	res->wall_s = wall_s;
	res->hit_rate = pt > 0 ? s->hit_tokens / pt : 0.0;
	res->index_hit_rate = pt > 0 ? s->idx_hit_tokens / pt : 0.0;
	res->ideal_hit_rate = pt > 0 ? s->ideal_hit_tokens / pt : 0.0;
	for (uint32_t i = 0; i < s->o->workers; i++) {
		mean += s->wk[i].busy_ms / s->o->workers;
		mx = s->wk[i].busy_ms > mx ? s->wk[i].busy_ms : mx;
	}
	for (uint32_t i = 0; i < s->o->workers; i++) {
		var += (s->wk[i].busy_ms - mean) * (s->wk[i].busy_ms - mean) / s->o->workers;
	}
	res->imbalance = mean > 0 ? mx / mean : 0.0;
	res->busy_cv = mean > 0 ? sqrt(var) / mean : 0.0;
	replay_sort(s->route_ns, s->nroute);
	for (size_t i = 0; i < s->nroute; i++) {
		res->route_ns_mean += s->route_ns[i] / s->nroute;
	}
	res->route_ns_p99 = replay_pct(s->route_ns, s->nroute, 0.99);
	res->decide_ns_mean = s->nroute ? (double)s->decide_ns / s->nroute : 0.0;
	res->evict_calls = s->evict_calls;
	res->evicted_blocks = s->evicted;
	res->evict_ns_per_call = s->evict_calls ? (double)s->evict_ns / s->evict_calls : 0.0;
	res->evict_ns_per_block = s->evicted ? (double)s->evict_ns / s->evicted : 0.0;
	res->publish_ns_mean = s->publishes ? (double)s->pub_ns / s->publishes : 0.0;
	res->lookups = s->lookups;
	res->events = s->events;
	res->publishes = s->publishes;
	res->load_reports = s->load_reports;
	res->lookups_per_s = wall_s > 0 ? s->lookups / wall_s : 0.0;
	res->events_per_s = wall_s > 0 ? s->events / wall_s : 0.0;
	res->dropped_blocks = s->dropped;
}

int
replay_run(const struct replay_workload *w, const struct replay_run_opts *o,
	   struct replay_result *res)
{
	struct sim s;
	double *arrival;
	uint64_t t0;
	int rc, frc;

	if (o->workers == 0 || o->workers > REPLAY_MAX_WORKERS || w->nreq == 0 ||
	    w->nreq > UINT32_MAX / 2 || o->capacity_tokens < w->block_size) {
		return -EINVAL;
	}
	memset(&s, 0, sizeof(s));
	s.w = w;
	s.o = o;
	arrival = calloc(w->nreq, sizeof(*arrival));
	rc = arrival ? sim_init(&s) : -ENOMEM;
	if (rc == 0) {
		t0 = kvdex_bench_now_ns();
		rc = sim_loop(&s, arrival);
		if (rc == 0 && s.done != w->nreq) {
			fprintf(stderr, "kvdex-replay: %zu of %zu requests finished\n", s.done,
				w->nreq);
			rc = -EPROTO;
		}
		sim_results(&s, res, arrival, (kvdex_bench_now_ns() - t0) / 1e9);
	}
	frc = sim_fini(&s);
	free(arrival);
	return rc < 0 ? rc : frc;
}

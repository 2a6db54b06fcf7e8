/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench policy: what the cache and routing policies cost, against the
 * KVRouting paper's overheads (0.58 ms per eviction, 0.56 ms per routing
 * decision; docs/PERFORMANCE.md).
 *
 * Eviction (no server): a struct kvdex_cache of --cache-blocks runs the
 * seeded GSP-like workload of client/src/cache_workload.c (groups sharing a
 * prefix, per-request suffixes, a few requests in flight holding locks);
 * every 8 requests the step hook times one kvdex_cache_evict() of 64 blocks
 * from the (full) cache, which the workload then refills. Reported: ns per
 * evicted block and per call, for RLT and leaf LRU. The insert path evicts
 * the same way, so this is the eviction cost inside a serving loop.
 *
 * Routing (a private kvdexd, index on shm): --workers workers register,
 * --chains chains of --blocks blocks are published, each held by 1..3
 * workers in random tiers, and every worker reports a random load. Then
 * --decisions rounds each draw a random chain and time one kvdex_route() per
 * policy on it, with every worker a candidate (one lookup with fresh load rows
 * + the policy), each followed by kvdex_route_done(); the policies take turns
 * within a round, so host noise hits them alike. "(lookup)" is a plain
 * kvdex_lookup() of the same chain. "kvdex+spec" is the kvdex policy
 * publishing speculative entries (one more exchange per decision); it runs
 * alone afterwards, since its entries change what the others would read.
 * The policy step alone (kvdex_router_decide on the last snapshot) is timed
 * too, so the lookup's share is visible, and so is the thread CPU time per
 * decision (cpu_us: unlike wall time, not inflated by preemption on a busy
 * host).
 *
 * Exit status: 1 on any error; speed never decides it.
 */
#include "perf/bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "client/src/cache_workload.h"
#include "kvdex/cache.h"
#include "kvdex/route.h"

#define POL_MAX_WORKERS 256u
#define POL_MAX_BLOCKS 4096u
#define POL_EVICT_EVERY 8u
#define POL_EVICT_BLOCKS 64u
#define POL_BLOCK_SIZE 16u
#define POL_WARMUP 100u /* untimed rounds first */

struct pol_opts {
	uint64_t workers;
	uint64_t blocks;
	uint64_t chains;
	uint64_t decisions;
	uint64_t cache_blocks;
	uint64_t requests;
	uint64_t seed;
	const char *kvdexd;
};

static void
pol_usage(FILE *f)
{
	fputs("usage: kvdex-bench policy [options]\n"
	      "Time cache eviction (RLT, LRU) per evicted block and routing decisions\n"
	      "(kvdex_route, every policy) per decision.\n"
	      "  --workers N       candidate workers (default 16)\n"
	      "  --blocks N        blocks per prompt chain (default 64)\n"
	      "  --chains N        chains published (default 512)\n"
	      "  --decisions N     timed decisions per policy (default 5000)\n"
	      "  --cache-blocks N  eviction: cache capacity (default 65536)\n"
	      "  --requests N      eviction: workload requests (default 100000)\n"
	      "  --seed S          workload seed (default 1)\n"
	      "  --kvdexd PATH     kvdexd to spawn (default $KVDEX_KVDEXD, else\n"
	      "                    <dir of kvdex-bench>/../server/kvdexd)\n"
	      "  -h, --help        this text\n",
	      f);
}

static const struct option pol_longopts[] = {
	{"workers", required_argument, NULL, 'w'},
	{"blocks", required_argument, NULL, 'b'},
	{"chains", required_argument, NULL, 'c'},
	{"decisions", required_argument, NULL, 'd'},
	{"cache-blocks", required_argument, NULL, 'C'},
	{"requests", required_argument, NULL, 'r'},
	{"seed", required_argument, NULL, 's'},
	{"kvdexd", required_argument, NULL, 'k'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int
pol_parse_one(int opt, const char *arg, void *opts)
{
	struct pol_opts *o = opts;

	switch (opt) {
	case 'w':
		return kvdex_bench_parse_u64("--workers", arg, 1, POL_MAX_WORKERS, &o->workers);
	case 'b':
		return kvdex_bench_parse_u64("--blocks", arg, 1, POL_MAX_BLOCKS, &o->blocks);
	case 'c':
		return kvdex_bench_parse_u64("--chains", arg, 1, 1u << 20, &o->chains);
	case 'd':
		return kvdex_bench_parse_u64("--decisions", arg, 1, 10000000, &o->decisions);
	case 'C':
		return kvdex_bench_parse_u64("--cache-blocks", arg, 1024, 1u << 30,
					     &o->cache_blocks);
	case 'r':
		return kvdex_bench_parse_u64("--requests", arg, 1, 100000000, &o->requests);
	case 's':
		return kvdex_bench_parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed);
	case 'k':
		o->kvdexd = arg;
		return 0;
	default:
		return -EINVAL;
	}
}

static int
pol_parse(int argc, char **argv, struct pol_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->workers = 16;
	o->blocks = 64;
	o->chains = 512;
	o->decisions = 5000;
	o->cache_blocks = 65536;
	o->requests = 100000;
	o->seed = 1;
	return kvdex_bench_getopt(argc, argv, "policy", pol_longopts, pol_parse_one, pol_usage, o);
}

/* ---- Eviction --------------------------------------------------------------- */

struct pol_evict {
	uint64_t ns;
	uint64_t blocks;
	uint64_t calls;
};

static int
pol_evict_step(void *arg, struct kvdex_cache *c, uint64_t request)
{
	struct pol_evict *e = arg;
	uint64_t got = 0, t0;
	int rc;

	if (request % POL_EVICT_EVERY != 0) {
		return 0;
	}
	t0 = kvdex_bench_now_ns();
	rc = kvdex_cache_evict(c, POL_EVICT_BLOCKS, &got);
	e->ns += kvdex_bench_now_ns() - t0;
	e->blocks += got;
	e->calls++;
	return rc < 0 ? rc : 0;
}

static int
pol_evict_run(const struct pol_opts *o, enum kvdex_cache_policy p, const char *name)
{
	struct kvdex_cache_workload w = {
		.seed = o->seed,
		.requests = o->requests,
		.groups = 256,
		.questions = 64,
		.prefix_blocks = 32,
		.suffix_min = 4,
		.suffix_max = 64,
		.inflight = 8,
		.step = pol_evict_step,
	};
	struct kvdex_cache_workload_result res;
	struct kvdex_cache_opts co;
	struct kvdex_cache *c = NULL;
	struct pol_evict e = {0};
	int rc;

	kvdex_cache_opts_init(&co, sizeof(co));
	co.capacity_blocks = o->cache_blocks;
	co.policy = p;
	co.seed = o->seed;
	rc = kvdex_cache_create(&co, &c);
	if (rc < 0) {
		fprintf(stderr, "kvdex_cache_create: %s\n", strerror(-rc));
		return rc;
	}
	w.step_arg = &e;
	rc = kvdex_cache_workload_run(c, &w, &res);
	kvdex_cache_destroy(c);
	if (rc < 0) {
		fprintf(stderr, "workload (%s): %s\n", name, strerror(-rc));
		return rc;
	}
	printf("%-8s %10" PRIu64 " %12" PRIu64 " %10.1f %12.2f %10.3f\n", name, e.calls, e.blocks,
	       e.blocks ? (double)e.ns / e.blocks : 0.0,
	       e.calls ? (double)e.ns / e.calls / 1e3 : 0.0,
	       res.blocks ? (double)res.hit_blocks / res.blocks : 0.0);
	return 0;
}

/* ---- Routing ------------------------------------------------------------------ */

struct pol_data {
	struct kvdex_client *c;
	uint32_t ns;
	uint64_t *keys; /* chains x blocks */
	struct kvdex_bench_rng rng;
};

static int
pol_publish(const struct pol_opts *o, struct pol_data *d)
{
	uint64_t inc = kvdex_bench_incarnation();
	struct kvdex_event *ev = calloc(o->blocks, sizeof(*ev));
	uint64_t *seq = calloc(o->workers + 1, sizeof(*seq));
	int rc = 0;

	if (ev == NULL || seq == NULL) {
		rc = -ENOMEM;
	}
	for (uint64_t ch = 0; ch < o->chains && rc == 0; ch++) {
		unsigned holders = 1 + (unsigned)kvdex_bench_rng_below(&d->rng, 3);

		for (unsigned h = 0; h < holders && rc == 0; h++) {
			uint32_t w = 1 + (uint32_t)kvdex_bench_rng_below(&d->rng, o->workers);
			uint8_t tier = (uint8_t)kvdex_bench_rng_below(&d->rng, KVDEX_NTIERS);
			struct kvdex_publish_hdr ph = {.worker_id = w, .incarnation = inc};

			for (uint64_t b = 0; b < o->blocks; b++) {
				ev[b] = (struct kvdex_event){.type = KVDEX_EV_STORED,
							     .tier = tier,
							     .ns = d->ns,
							     .key = d->keys[ch * o->blocks + b]};
			}
			ph.seq = ++seq[w];
			rc = kvdex_publish(d->c, &ph, ev, o->blocks, NULL);
		}
	}
	free(ev);
	free(seq);
	return rc;
}

static int
pol_setup(const struct pol_opts *o, const char *servers, struct pol_data *d)
{
	struct kvdex_client_opts co;
	struct kvdex_ns_desc nd = {.model = "bench-policy", .block_size = POL_BLOCK_SIZE};
	int rc;

	kvdex_client_opts_init(&co, sizeof(co));
	co.servers = servers;
	co.transport = KVDEX_TRANSPORT_SHM;
	rc = kvdex_client_create(&co, &d->c);
	if (rc == 0) {
		rc = kvdex_ns_register(d->c, &nd, &d->ns);
	}
	for (uint32_t w = 1; w <= o->workers && rc == 0; w++) {
		struct kvdex_load l = {
			.queued = (uint32_t)kvdex_bench_rng_below(&d->rng, 8),
			.running = (uint32_t)kvdex_bench_rng_below(&d->rng, 32),
			.prefill_tokens = kvdex_bench_rng_below(&d->rng, 16384),
			.kv_util_permille = (uint16_t)kvdex_bench_rng_below(&d->rng, 1000),
		};

		rc = kvdex_worker_register(d->c, w, "10.0.0.1:8000", 1);
		if (rc == 0) {
			rc = kvdex_worker_load(d->c, w, 0, &l);
		}
	}
	d->keys = calloc(o->chains * o->blocks, sizeof(*d->keys));
	if (rc == 0 && d->keys == NULL) {
		rc = -ENOMEM;
	}
	for (uint64_t k = 0; rc == 0 && k < o->chains * o->blocks; k++) {
		d->keys[k] = kvdex_bench_rng_next(&d->rng);
	}
	if (rc == 0) {
		rc = pol_publish(o, d);
	}
	if (rc < 0) {
		fprintf(stderr, "setup: %s (%s)\n", strerror(-rc),
			d->c != NULL ? kvdex_client_last_error(d->c) : "");
	}
	return rc;
}

static void
pol_cands(const struct pol_opts *o, struct kvdex_route_cand *cand)
{
	memset(cand, 0, o->workers * sizeof(*cand));
	for (uint32_t w = 0; w < o->workers; w++) {
		cand[w].worker_id = w + 1;
	}
}

/* Time the policy step alone on the last snapshot: mean ns. */
static double
pol_decide_ns(struct kvdex_router *r, const struct pol_opts *o, const struct kvdex_route_cand *snap)
{
	struct kvdex_route_cand cand[POL_MAX_WORKERS];
	struct kvdex_route_req q = {.nblocks = (uint32_t)o->blocks, .block_size = POL_BLOCK_SIZE};
	struct kvdex_route_decision dd;
	uint64_t t0, total = 0;
	unsigned n = 2000;

	for (unsigned k = 0; k < n; k++) {
		memcpy(cand, snap, o->workers * sizeof(*cand));
		q.now_ms = k;
		t0 = kvdex_bench_now_ns();
		kvdex_router_decide(r, &q, cand, o->workers, &dd);
		total += kvdex_bench_now_ns() - t0;
		kvdex_route_done_at(r, dd.ticket, 1.0, k);
	}
	return (double)total / n;
}

/* One row of the routing table: a policy's router (or the plain lookup) and
 * what its timed decisions measured. */
struct pol_row {
	const char *name;
	bool lookup_only;
	struct kvdex_router *r;
	struct kvdex_bench_lat lat;
	uint64_t rts, hits, cpu;
	struct kvdex_route_cand last[POL_MAX_WORKERS]; /* the last snapshot */
};

static int
pol_row_init(const struct pol_opts *o, struct pol_row *row, enum kvdex_route_policy p, bool spec)
{
	struct kvdex_route_opts ro;

	memset(row, 0, sizeof(*row));
	row->name = spec ? "kvdex+spec" : kvdex_route_policy_name(p);
	kvdex_route_opts_init(&ro, sizeof(ro));
	ro.policy = p;
	ro.seed = o->seed;
	ro.speculate = spec;
	return kvdex_router_create(&ro, &row->r);
}

/* One decision (or plain lookup) of a row on chain `keys`; timed unless
 * warming up. */
static int
pol_row_step(const struct pol_opts *o, struct pol_data *d, struct pol_row *row,
	     const uint64_t *keys, bool timed)
{
	struct kvdex_holding hold[POL_MAX_WORKERS];
	struct kvdex_lookup_result res = {.holdings = hold, .cap = POL_MAX_WORKERS};
	struct kvdex_route_decision dec = {0};
	uint64_t t0, c0, t1;
	int rc;

	pol_cands(o, row->last);
	c0 = kvdex_bench_thread_cpu_ns();
	t0 = kvdex_bench_now_ns();
	if (row->lookup_only) {
		rc = kvdex_lookup(d->c, d->ns, keys, o->blocks, 0, &res);
		dec.round_trips = res.round_trips;
	} else {
		rc = kvdex_route(row->r, d->c, d->ns, keys, o->blocks, 0, row->last, o->workers,
				 &dec);
	}
	t1 = kvdex_bench_now_ns();
	if (rc == 0 && timed) {
		rc = kvdex_bench_lat_add(&row->lat, t1 - t0);
		row->cpu += kvdex_bench_thread_cpu_ns() - c0;
		row->rts += dec.round_trips;
		row->hits += row->lookup_only ? 0 : row->last[0].matched;
	}
	if (rc == 0 && !row->lookup_only) {
		rc = dec.spec_error != 0 ? dec.spec_error
					 : kvdex_route_done(row->r, dec.ticket, 50.0);
	}
	if (rc < 0) {
		fprintf(stderr, "%s: %s (%s)\n", row->name, strerror(-rc),
			kvdex_client_last_error(d->c));
	}
	return rc;
}

static void
pol_row_print(const struct pol_opts *o, struct pol_row *row)
{
	char decide[32] = "-", matched[32] = "-";

	kvdex_bench_lat_sort(&row->lat);
	if (!row->lookup_only) {
		snprintf(decide, sizeof(decide), "%.0f", pol_decide_ns(row->r, o, row->last));
		snprintf(matched, sizeof(matched), "%.1f", (double)row->hits / o->decisions);
	}
	printf("%-11s %8.2f %8.2f %8.2f %8.2f %8.2f %10s %8.3f %9s\n",
	       row->lookup_only ? "(lookup)" : row->name, kvdex_bench_lat_pct(&row->lat, 0.5) / 1e3,
	       kvdex_bench_lat_pct(&row->lat, 0.99) / 1e3, kvdex_bench_lat_mean(&row->lat) / 1e3,
	       (double)kvdex_bench_lat_pct(&row->lat, 1.0) / 1e3,
	       (double)row->cpu / o->decisions / 1e3, decide, (double)row->rts / o->decisions,
	       matched);
}

static void
pol_row_fini(struct pol_row *row)
{
	kvdex_bench_lat_fini(&row->lat);
	kvdex_router_destroy(row->r);
}

/*
 * Run rows[0, n) interleaved: every round draws one chain and gives it to
 * each row in turn, starting one row later each round. A host that slows
 * down for a while (this bench runs on shared VMs) then slows every row
 * alike, instead of whichever policy happened to run then; the rows compare.
 */
static int
pol_rows_run(const struct pol_opts *o, struct pol_data *d, struct pol_row *rows, unsigned n)
{
	int rc = 0;

	for (uint64_t k = 0; rc == 0 && k < o->decisions + POL_WARMUP; k++) {
		const uint64_t *keys =
			d->keys + kvdex_bench_rng_below(&d->rng, o->chains) * o->blocks;

		for (unsigned i = 0; i < n && rc == 0; i++) {
			rc = pol_row_step(o, d, &rows[(i + k) % n], keys, k >= POL_WARMUP);
		}
	}
	for (unsigned i = 0; i < n && rc == 0; i++) {
		pol_row_print(o, &rows[i]);
	}
	return rc;
}

static int
pol_route_all(const struct pol_opts *o, const char *servers)
{
	struct pol_data d = {.rng = {o->seed}};
	struct pol_row rows[KVDEX_ROUTE_NPOLICIES + 1];
	struct pol_row spec;
	unsigned n = 0;
	int rc = pol_setup(o, servers, &d);

	if (rc == 0) {
		printf("\nrouting: %" PRIu64 " candidates, %" PRIu64 "-block prompts (%u tokens), "
		       "%" PRIu64 " chains held by 1..3 workers in random tiers, shm; "
		       "rows interleaved\n",
		       o->workers, o->blocks, (unsigned)(o->blocks * POL_BLOCK_SIZE), o->chains);
		printf("%-11s %8s %8s %8s %8s %8s %10s %8s %9s\n", "policy", "p50_us", "p99_us",
		       "mean_us", "max_us", "cpu_us", "decide_ns", "rt/dec", "matched");
		memset(&rows[0], 0, sizeof(rows[0]));
		rows[n++].lookup_only = true;
	}
	for (unsigned p = 0; p < KVDEX_ROUTE_NPOLICIES && rc == 0; p++) {
		rc = pol_row_init(o, &rows[n], (enum kvdex_route_policy)p, false);
		n += rc == 0;
	}
	if (rc == 0) {
		rc = pol_rows_run(o, &d, rows, n);
	}
	/* Speculative entries change what the other rows would read: alone,
	 * after them. */
	if (rc == 0) {
		rc = pol_row_init(o, &spec, KVDEX_ROUTE_KVDEX, true);
		if (rc == 0) {
			rc = pol_rows_run(o, &d, &spec, 1);
			pol_row_fini(&spec);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		pol_row_fini(&rows[i]);
	}
	kvdex_client_destroy(d.c);
	free(d.keys);
	return rc;
}

int
kvdex_bench_policy_main(int argc, char **argv)
{
	struct kvdex_bench_server srv = {0};
	char servers[1024], kvdexd[4096];
	struct pol_opts o;
	int rc, src;

	rc = pol_parse(argc, argv, &o);
	if (rc) {
		return rc > 0 ? KVDEX_BENCH_EXIT_OK : KVDEX_BENCH_EXIT_USAGE;
	}
	kvdex_bench_print_cmdline(stdout, argc, argv);
	kvdex_bench_print_host(stdout);
	printf("eviction: cache of %" PRIu64 " blocks, %" PRIu64 " GSP-like requests, "
	       "kvdex_cache_evict(%u) every %u requests\n",
	       o.cache_blocks, o.requests, POL_EVICT_BLOCKS, POL_EVICT_EVERY);
	printf("%-8s %10s %12s %10s %12s %10s\n", "policy", "calls", "evicted", "ns/block",
	       "us/call", "hit_rate");
	rc = pol_evict_run(&o, KVDEX_CACHE_RLT, "rlt");
	if (rc == 0) {
		rc = pol_evict_run(&o, KVDEX_CACHE_LEAF_LRU, "lru");
	}
	if (rc == 0) {
		rc = kvdex_bench_kvdexd_path(o.kvdexd, kvdexd, sizeof(kvdexd));
	}
	if (rc == 0) {
		rc = kvdex_bench_server_start(kvdexd, 2 * o.chains * o.blocks + 65536, &srv);
	}
	if (rc == 0) {
		snprintf(servers, sizeof(servers), "unix:%s", srv.unix_path);
		rc = pol_route_all(&o, servers);
	}
	src = kvdex_bench_server_stop(&srv);
	if (!rc && !src) {
		printf("ok\n");
	}
	return rc || src ? KVDEX_BENCH_EXIT_FAIL : KVDEX_BENCH_EXIT_OK;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench demo: a small synthetic serving workload, end to end.
 *
 * Requests share prefixes the way chat and RAG traffic does: every request
 * starts with the same system prompt (DEMO_SYS_BLOCKS blocks), continues with
 * the document of one of G groups (DEMO_DOC_BLOCKS blocks) and ends with its
 * own suffix (DEMO_SUFFIX_MIN..MAX blocks). Block keys are chained like an
 * engine's block hashes: key_i = XXH3_64(parent key, i, content id), so equal
 * content after a different prefix gets a different key.
 *
 * Phase 1 routes each request: look its chain up, send it to the worker that
 * already holds the longest prefix (ties and misses go to the least recently
 * used candidate, which is round robin on a cold start), and publish the
 * blocks that worker now stores (its own publisher stream: incarnation, seq).
 * Phase 2 looks every routed chain up again, which must find it whole (a
 * shortfall is a failure: exit 1), and then looks up fresh requests with new
 * suffixes, which can match the shared prefixes only.
 *
 * No eviction is modelled: workers keep every block, so the hit figures are
 * the workload's reuse, not a cache policy's.
 */
#include "perf/bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define DEMO_SYS_BLOCKS 8u
#define DEMO_DOC_BLOCKS 32u
#define DEMO_SUFFIX_MIN 2u
#define DEMO_SUFFIX_MAX 16u
#define DEMO_MAX_BLOCKS (DEMO_SYS_BLOCKS + DEMO_DOC_BLOCKS + DEMO_SUFFIX_MAX)
#define DEMO_MAX_WORKERS 1024u

/* Content ids of the three segments. */
#define DEMO_CONTENT_SYS 1ull
#define DEMO_CONTENT_DOC(g) (0x100000000ull + (g))
#define DEMO_CONTENT_SUFFIX(r) (0x200000000ull + (r))

struct demo_opts {
	uint64_t workers;
	uint64_t groups;
	uint64_t requests;
	uint64_t seed;
	const char *servers;
	const char *kvdexd;
};

struct demo_req {
	uint64_t keys[DEMO_MAX_BLOCKS];
	unsigned n;
};

/* Hit figures of one set of lookups. */
struct demo_hits {
	uint64_t requests;
	uint64_t blocks;
	uint64_t found; /* sum of longest */
	uint64_t half;	/* requests whose best worker holds >= 50% of the chain */
	uint64_t whole; /* requests found whole */
};

struct demo {
	const struct demo_opts *o;
	struct kvdex_client *c;
	uint32_t ns;
	struct kvdex_bench_rng rng;
	struct demo_req *reqs;
	struct kvdex_holding *holdings;
	uint64_t *last_used; /* per worker: phase-1 request index + 1, 0 = never */
	uint64_t *seq;	     /* per worker publisher seq */
	uint64_t incarnation;
	uint64_t events;
	uint64_t batches;
	uint64_t publish_ns;
	struct kvdex_bench_lat lat;
};

static void
demo_usage(FILE *f)
{
	fputs("usage: kvdex-bench demo [options]\n"
	      "Route shared-prefix requests over workers with kvdex, publish what they\n"
	      "store, then look everything up again and report latency and hit rates.\n"
	      "  --workers N      inference workers (default 8)\n"
	      "  --groups N       documents shared by groups of requests (default 32)\n"
	      "  --requests N     requests per phase (default 2000)\n"
	      "  --seed S         workload seed (default 1)\n"
	      "  --servers LIST   running servers ([name=]host:port|unix:/path,...);\n"
	      "                   default: spawn a private kvdexd\n"
	      "  --kvdexd PATH    kvdexd to spawn (default $KVDEX_KVDEXD, else\n"
	      "                   <dir of kvdex-bench>/../server/kvdexd)\n"
	      "  -h, --help       this text\n",
	      f);
}

static const struct option demo_longopts[] = {
	{"workers", required_argument, NULL, 'w'},  {"groups", required_argument, NULL, 'g'},
	{"requests", required_argument, NULL, 'r'}, {"seed", required_argument, NULL, 's'},
	{"servers", required_argument, NULL, 'S'},  {"kvdexd", required_argument, NULL, 'k'},
	{"help", no_argument, NULL, 'h'},	    {NULL, 0, NULL, 0},
};

static int
demo_parse_one(int opt, const char *arg, void *opts)
{
	struct demo_opts *o = opts;

	switch (opt) {
	case 'w':
		return kvdex_bench_parse_u64("--workers", arg, 1, DEMO_MAX_WORKERS, &o->workers);
	case 'g':
		return kvdex_bench_parse_u64("--groups", arg, 1, 1u << 20, &o->groups);
	case 'r':
		return kvdex_bench_parse_u64("--requests", arg, 1, 10000000, &o->requests);
	case 's':
		return kvdex_bench_parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed);
	case 'S':
		o->servers = arg;
		return 0;
	case 'k':
		o->kvdexd = arg;
		return 0;
	default:
		return -EINVAL;
	}
}

/* 0, 1 for --help, -EINVAL. */
static int
demo_parse(int argc, char **argv, struct demo_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->workers = 8;
	o->groups = 32;
	o->requests = 2000;
	o->seed = 1;
	return kvdex_bench_getopt(argc, argv, "demo", demo_longopts, demo_parse_one, demo_usage, o);
}

/* ---- Workload ---------------------------------------------------------------- */

static uint64_t
demo_block_key(uint64_t parent, unsigned index, uint64_t content)
{
	uint64_t in[3] = {parent, index, content};

	return XXH3_64bits(in, sizeof(in));
}

/* Request `id` of group `g`: system prompt, document, own suffix. */
static void
demo_make_req(struct demo *dm, uint64_t id, struct demo_req *r)
{
	uint64_t g = kvdex_bench_rng_below(&dm->rng, dm->o->groups);
	unsigned suffix =
		DEMO_SUFFIX_MIN +
		(unsigned)kvdex_bench_rng_below(&dm->rng, DEMO_SUFFIX_MAX - DEMO_SUFFIX_MIN + 1);
	uint64_t parent = 0;

	r->n = DEMO_SYS_BLOCKS + DEMO_DOC_BLOCKS + suffix;
	for (unsigned i = 0; i < r->n; i++) {
		uint64_t content = DEMO_CONTENT_SUFFIX(id);

		if (i < DEMO_SYS_BLOCKS) {
			content = DEMO_CONTENT_SYS;
		} else if (i < DEMO_SYS_BLOCKS + DEMO_DOC_BLOCKS) {
			content = DEMO_CONTENT_DOC(g);
		}
		r->keys[i] = demo_block_key(parent, i, content);
		parent = r->keys[i];
	}
}

/* Timed lookup; latencies are kept only when `lat` is set. */
static int
demo_lookup(struct demo *dm, const struct demo_req *r, struct kvdex_lookup_result *res,
	    struct kvdex_bench_lat *lat)
{
	uint64_t t0;
	int rc;

	memset(res, 0, sizeof(*res));
	res->holdings = dm->holdings;
	res->cap = (uint32_t)dm->o->workers;
	t0 = kvdex_bench_now_ns();
	rc = kvdex_lookup(dm->c, dm->ns, r->keys, r->n, 0, res);
	if (rc) {
		fprintf(stderr, "kvdex-bench: lookup: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(dm->c));
		return rc;
	}
	return lat ? kvdex_bench_lat_add(lat, kvdex_bench_now_ns() - t0) : 0;
}

static void
demo_count(struct demo_hits *h, const struct demo_req *r, const struct kvdex_lookup_result *res)
{
	h->requests++;
	h->blocks += r->n;
	h->found += res->longest;
	h->half += 2u * res->longest >= r->n;
	h->whole += res->longest == r->n;
}

/* The least recently used worker among those matching `longest` blocks (all
 * workers when nothing matched). Returns a 0-based worker index. */
static unsigned
demo_pick(const struct demo *dm, const struct kvdex_lookup_result *res, uint16_t *matched)
{
	unsigned best = 0;
	uint64_t best_used = UINT64_MAX;

	*matched = 0;
	if (res->longest == 0) {
		for (unsigned w = 0; w < dm->o->workers; w++) {
			if (dm->last_used[w] < best_used) {
				best = w;
				best_used = dm->last_used[w];
			}
		}
		return best;
	}
	for (unsigned i = 0; i < res->nholdings; i++) {
		const struct kvdex_holding *h = &res->holdings[i];
		unsigned w = h->worker_id - 1;

		if (h->matched == res->longest && w < dm->o->workers &&
		    dm->last_used[w] < best_used) {
			best = w;
			best_used = dm->last_used[w];
			*matched = h->matched;
		}
	}
	return best;
}

/* Publish blocks [from, n) of r as stored in worker w's GPU tier. */
static int
demo_store(struct demo *dm, unsigned w, const struct demo_req *r, unsigned from)
{
	struct kvdex_event ev[DEMO_MAX_BLOCKS];
	struct kvdex_publish_hdr hdr = {.worker_id = w + 1, .incarnation = dm->incarnation};
	struct kvdex_publish_result res = {0};
	unsigned n = 0;
	uint64_t t0;
	int rc;

	/* Nothing new stored (the worker held the whole chain): no batch. */
	if (from >= r->n) {
		return 0;
	}
	hdr.seq = ++dm->seq[w];
	for (unsigned i = from; i < r->n; i++, n++) {
		memset(&ev[n], 0, sizeof(ev[n]));
		ev[n].type = KVDEX_EV_STORED;
		ev[n].tier = KVDEX_GPU;
		ev[n].ns = dm->ns;
		ev[n].key = r->keys[i];
		if (i > 0) {
			ev[n].flags = KVDEX_EVF_PARENT;
			ev[n].parent = r->keys[i - 1];
		}
	}
	t0 = kvdex_bench_now_ns();
	rc = kvdex_publish(dm->c, &hdr, ev, n, &res);
	dm->publish_ns += kvdex_bench_now_ns() - t0;
	if (rc) {
		fprintf(stderr, "kvdex-bench: publish: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(dm->c));
		return rc;
	}
	dm->events += n;
	dm->batches++;
	return 0;
}

static int
demo_phase1(struct demo *dm, struct demo_hits *h)
{
	struct kvdex_lookup_result res;

	for (uint64_t i = 0; i < dm->o->requests; i++) {
		struct demo_req *r = &dm->reqs[i];
		uint16_t matched;
		unsigned w;
		int rc;

		demo_make_req(dm, i, r);
		rc = demo_lookup(dm, r, &res, NULL);
		if (rc) {
			return rc;
		}
		demo_count(h, r, &res);
		w = demo_pick(dm, &res, &matched);
		dm->last_used[w] = i + 1;
		rc = demo_store(dm, w, r, matched);
		if (rc) {
			return rc;
		}
	}
	return 0;
}

/* Routed chains must now be found whole; fresh ones only share prefixes. */
static int
demo_phase2(struct demo *dm, struct demo_hits *again, struct demo_hits *fresh, uint64_t *wall_ns)
{
	struct kvdex_lookup_result res;
	struct demo_req r;
	uint64_t t0 = kvdex_bench_now_ns();
	int rc;

	for (uint64_t i = 0; i < dm->o->requests; i++) {
		rc = demo_lookup(dm, &dm->reqs[i], &res, &dm->lat);
		if (rc) {
			return rc;
		}
		demo_count(again, &dm->reqs[i], &res);
	}
	for (uint64_t i = 0; i < dm->o->requests; i++) {
		demo_make_req(dm, dm->o->requests + i, &r);
		rc = demo_lookup(dm, &r, &res, &dm->lat);
		if (rc) {
			return rc;
		}
		demo_count(fresh, &r, &res);
	}
	*wall_ns = kvdex_bench_now_ns() - t0;
	return 0;
}

/* ---- Output ---------------------------------------------------------------- */

static double
demo_pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static void
demo_print_hits(const char *label, const struct demo_hits *h)
{
	printf("  %-22s %5.1f%% of blocks found, mean prefix %.1f of %.1f blocks,"
	       " best worker >= 50%%: %5.1f%%\n",
	       label, demo_pct(h->found, h->blocks),
	       h->requests ? (double)h->found / (double)h->requests : 0.0,
	       h->requests ? (double)h->blocks / (double)h->requests : 0.0,
	       demo_pct(h->half, h->requests));
}

static void
demo_print_index(struct demo *dm)
{
	static const char *const names[] = {"blocks", "holders", "table_bytes", "region_bytes"};
	uint64_t v[4];

	if (kvdex_bench_counters(dm->c, names, v, 4) != 0) {
		return;
	}
	printf("index:    %" PRIu64 " blocks, %" PRIu64
	       " holders; table %.1f MiB, region %.1f MiB\n",
	       v[0], v[1], v[2] / 1048576.0, v[3] / 1048576.0);
}

static void
demo_report(struct demo *dm, const struct demo_hits *h1, const struct demo_hits *again,
	    const struct demo_hits *fresh, uint64_t wall_ns)
{
	kvdex_bench_lat_sort(&dm->lat);
	printf("phase 1:  routed %" PRIu64 " requests; published %" PRIu64
	       " block events in %" PRIu64 " batches, %.0f events/s\n",
	       h1->requests, dm->events, dm->batches,
	       dm->publish_ns ? (double)dm->events * 1e9 / (double)dm->publish_ns : 0.0);
	demo_print_hits("hits while routing:", h1);
	printf("phase 2:  %" PRIu64 " lookups\n", again->requests + fresh->requests);
	demo_print_hits("routed requests again:", again);
	demo_print_hits("fresh requests:", fresh);
	printf("lookup:   p50 %.2f us, p99 %.2f us, %.0f lookups/s over %s\n",
	       kvdex_bench_lat_pct(&dm->lat, 0.50) / 1e3, kvdex_bench_lat_pct(&dm->lat, 0.99) / 1e3,
	       wall_ns ? (double)dm->lat.n * 1e9 / (double)wall_ns : 0.0,
	       kvdex_client_transport_name(dm->c, 0));
	demo_print_index(dm);
}

/* ---- Driver ---------------------------------------------------------------- */

static const struct kvdex_ns_desc demo_ns = {
	.model = "kvdex-demo",
	.block_size = 16,
	.hash_scheme = "xxh3:chain",
};

static int
demo_setup(struct demo *dm, const char *servers)
{
	struct kvdex_client_opts co;
	int rc;

	kvdex_client_opts_init(&co, sizeof(co));
	co.servers = servers;
	co.transport = KVDEX_TRANSPORT_AUTO;
	co.client_name = "kvdex-bench-demo";
	rc = kvdex_client_create(&co, &dm->c);
	if (rc) {
		fprintf(stderr, "kvdex-bench: connect to %s: %s\n", servers, strerror(-rc));
		return rc;
	}
	rc = kvdex_ns_register(dm->c, &demo_ns, &dm->ns);
	if (rc) {
		fprintf(stderr, "kvdex-bench: register namespace: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(dm->c));
		return rc;
	}
	for (unsigned w = 1; w <= dm->o->workers; w++) {
		char addr[64];

		snprintf(addr, sizeof(addr), "demo-worker-%u:8000", w);
		rc = kvdex_worker_register(dm->c, w, addr, 1);
		if (rc) {
			fprintf(stderr, "kvdex-bench: register worker %u: %s (%s)\n", w,
				strerror(-rc), kvdex_client_last_error(dm->c));
			return rc;
		}
	}
	return 0;
}

static void
demo_fini(struct demo *dm)
{
	kvdex_client_destroy(dm->c);
	kvdex_bench_lat_fini(&dm->lat);
	free(dm->reqs);
	free(dm->holdings);
	free(dm->last_used);
	free(dm->seq);
}

static int
demo_run(const struct demo_opts *o, const char *servers)
{
	struct demo_hits h1 = {0}, again = {0}, fresh = {0};
	struct demo dm = {.o = o, .rng = {.s = o->seed}};
	uint64_t wall_ns = 0;
	int rc;

	dm.incarnation = kvdex_bench_incarnation();
	dm.reqs = calloc(o->requests, sizeof(*dm.reqs));
	dm.holdings = calloc(o->workers, sizeof(*dm.holdings));
	dm.last_used = calloc(o->workers, sizeof(*dm.last_used));
	dm.seq = calloc(o->workers, sizeof(*dm.seq));
	if (!dm.reqs || !dm.holdings || !dm.last_used || !dm.seq) {
		rc = -ENOMEM;
		goto out;
	}
	rc = demo_setup(&dm, servers);
	if (!rc) {
		rc = demo_phase1(&dm, &h1);
	}
	if (!rc) {
		rc = demo_phase2(&dm, &again, &fresh, &wall_ns);
	}
	if (!rc) {
		demo_report(&dm, &h1, &again, &fresh, wall_ns);
		if (again.whole != again.requests) {
			printf("FAIL: %" PRIu64 " routed requests were not found whole\n",
			       again.requests - again.whole);
			rc = -EPROTO;
		}
	}
out:
	demo_fini(&dm);
	return rc;
}

int
kvdex_bench_demo_main(int argc, char **argv)
{
	struct kvdex_bench_server srv = {0};
	char servers[1024], kvdexd[4096];
	struct demo_opts o;
	int rc, src;

	rc = demo_parse(argc, argv, &o);
	if (rc) {
		return rc > 0 ? KVDEX_BENCH_EXIT_OK : KVDEX_BENCH_EXIT_USAGE;
	}
	printf("kvdex demo: %" PRIu64 " workers, %" PRIu64 " shared documents, %" PRIu64
	       " requests of %u + %u + %u..%u blocks (system prompt + document + suffix)\n",
	       o.workers, o.groups, o.requests, DEMO_SYS_BLOCKS, DEMO_DOC_BLOCKS, DEMO_SUFFIX_MIN,
	       DEMO_SUFFIX_MAX);
	if (o.servers) {
		snprintf(servers, sizeof(servers), "%s", o.servers);
	} else {
		rc = kvdex_bench_kvdexd_path(o.kvdexd, kvdexd, sizeof(kvdexd));
		if (!rc) {
			rc = kvdex_bench_server_start(kvdexd, 0, &srv);
		}
		if (rc) {
			return KVDEX_BENCH_EXIT_FAIL;
		}
		snprintf(servers, sizeof(servers), "unix:%s", srv.unix_path);
	}
	printf("servers:  %s\n", servers);
	fflush(stdout);
	rc = demo_run(&o, servers);
	src = kvdex_bench_server_stop(&srv);
	if (!rc && !src) {
		printf("ok\n");
	}
	return rc || src ? KVDEX_BENCH_EXIT_FAIL : KVDEX_BENCH_EXIT_OK;
}

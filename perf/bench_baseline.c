/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench baseline: the same prefix lookups and the same publish stream
 * against kvdex (shm, tcp, verbs) and against a real redis-server and
 * memcached, side by side from one run.
 *
 * Systems (rows): kvdex-shm, kvdex-tcp, kvdex-verbs, redis-hash, redis-mget,
 * redis-func, memcached; the layouts are described in bench_baseline_redis.c
 * and bench_baseline_mc.c. redis-server and memcached are started once on
 * 127.0.0.1 (bench_baseline_srv.c) and emptied before each row (FLUSHALL,
 * flush_all); each kvdex row gets a fresh kvdexd. The kvdex rows run first:
 * the first of them is the reference every other row is compared with.
 *
 * Synthetic mode (default), per system: load the data set of kvdex-bench
 * lookup (timed: events/s), then per chain length D ms of lookups (one client
 * thread, one lookup in flight, each timed alone), then the churn stream of
 * whole-chain moves (timed per batch), then a fixed set of check lookups on
 * the churned index. Trace mode (--trace): replay the Mooncake trace's
 * requests, each a lookup of its chain then a publish of the blocks its
 * worker lacks (bench_baseline_work.c), closed loop (timestamps are not
 * honoured: the trace's own rate is ~3 requests/s).
 *
 * Correctness: the lookup sequence of a cell is drawn from a per-cell seed,
 * so every system sees the same lookups in the same order. Every answer
 * (longest prefix, how many workers hold it, which ones) is checked against
 * the model ("wrong") and against the reference row's answer to the same
 * lookup ("diff"); any wrong answer, difference or error fails the run.
 *
 * Server CPU per lookup: CPU time of the server process (all threads;
 * bench_baseline_srv.c) over the timed phase, divided by the lookups. For kvdex over shm the server
 * takes no part in a lookup (reads are loads from the shared mapping): what
 * shows is its writer's 1/16 s tick.
 */
#include "perf/bench_baseline.h"

#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define BL_MAX_CHAINS 8u
#define BL_MAX_SYSTEMS 8u
#define BL_MAX_WORKERS 4096u

static const char *const bl_all_systems[] = {
	"kvdex-shm",  "kvdex-tcp",  "kvdex-verbs", "redis-hash",
	"redis-mget", "redis-func", "memcached",
};
#define BL_NSYSTEMS (sizeof(bl_all_systems) / sizeof(bl_all_systems[0]))
#define BL_DEFAULT_SYSTEMS "kvdex-shm,kvdex-tcp,redis-hash,redis-mget,redis-func,memcached"

struct bl_opts {
	uint64_t blocks;
	uint64_t duration_ms;
	uint64_t publish_events;
	uint64_t checks;
	uint64_t seed;
	uint64_t trace_requests;
	unsigned batch;
	unsigned holders;
	unsigned workers;
	unsigned chains[BL_MAX_CHAINS];
	unsigned nchains;
	const char *systems[BL_MAX_SYSTEMS];
	unsigned nsystems;
	const char *trace;
	enum bl_route route;
	const char *redis_server;
	const char *memcached;
	const char *kvdexd;
	const char *csv;
	char sysbuf[256];
};

/* Answers of the reference row, per phase, in lookup order. */
struct bl_ref {
	struct bl_answer *a;
	size_t n, cap;
};

/* A timed phase of one row. */
struct bl_cell {
	uint64_t ops;	  /* lookups, or events for publish phases */
	uint64_t batches; /* publish phases */
	uint64_t wall_ns;
	uint64_t srv_ns;
	uint64_t cli_ns;
	uint64_t p50, p99;
	double mean;
	uint64_t wrong, diff;
	/* trace mode: the publish half of the requests */
	uint64_t pub_p50, pub_p99;
	uint64_t pub_events;
};

struct bl_row {
	struct bl_sys sys;
	bool created;
	bool is_ref;
	struct bl_cell load;
	struct bl_cell cells[BL_MAX_CHAINS];
	struct bl_cell churn;
	struct bl_cell check;
	struct bl_cell trace;
	struct bl_cell trace_final;
};

/* Everything one run needs. */
struct bl_run {
	struct bl_opts o;
	struct bl_env env;
	struct bl_proc redis, mc;
	char kvdexd[4096];
	struct bl_row rows[BL_MAX_SYSTEMS];
	unsigned nrows;
	struct bl_ref ref[BL_MAX_CHAINS + 3]; /* cells, check, trace, trace final */
	struct kvdex_bench_lat lat, lat2;
	uint64_t *qkeys;
	/* synthetic */
	struct kvdex_bench_synth d;
	struct bl_stream load, churn;
	uint64_t *moved;
	size_t nmoved;
	struct kvdex_bench_synth d_after; /* holders after the churn */
	/* trace */
	struct bl_trace t;
};

/* ---- Options ---------------------------------------------------------------------- */

static void
bl_usage(FILE *f)
{
	fputs("usage: kvdex-bench baseline [options]\n"
	      "The same prefix lookups and publish stream against kvdex and a real redis-server\n"
	      "and memcached (started here on 127.0.0.1), side by side. Exit 1 on any wrong or\n"
	      "differing answer, never on speed.\n"
	      "  --blocks N            blocks in the synthetic index (default 200000)\n"
	      "  --holders H           holders per block (default 4)\n"
	      "  --workers W           workers (default 64)\n"
	      "  --chains LIST         lookup lengths in blocks (default 1,8,32,64)\n"
	      "  --duration-ms D       timed lookups per system and chain length (default 2000)\n"
	      "  --publish-events N    churn events after the lookups (default 65536)\n"
	      "  --checks K            check lookups after the churn (default 1000)\n"
	      "  --batch B             events per publish batch while loading (default 4096)\n"
	      "  --trace PATH          replay a Mooncake JSONL trace instead (lookup of each\n"
	      "                        request's chain, then a publish of the blocks its worker\n"
	      "                        lacks)\n"
	      "  --trace-requests N    first N requests of the trace (default all)\n"
	      "  --trace-route R       half (default: best match if it covers half the request,\n"
	      "                        else round robin), best, rr\n"
	      "  --systems LIST        of kvdex-shm,kvdex-tcp,kvdex-verbs,redis-hash,redis-mget,\n"
	      "                        redis-func,memcached (default all but kvdex-verbs)\n"
	      "  --listen-rdma ADDR    --listen-rdma of the spawned kvdexd (kvdex-verbs)\n"
	      "  --redis-server PATH   default redis-server from $PATH\n"
	      "  --memcached PATH      default memcached from $PATH\n"
	      "  --kvdexd PATH         default $KVDEX_KVDEXD, else <dir of "
	      "kvdex-bench>/../server/kvdexd\n"
	      "  --seed S              data set and lookup order (default 1)\n"
	      "  --csv FILE            also write every result as CSV\n"
	      "  -h, --help            this text\n",
	      f);
}

enum {
	OPT_BLOCKS = 256,
	OPT_HOLDERS,
	OPT_WORKERS,
	OPT_CHAINS,
	OPT_DURATION,
	OPT_PUBLISH,
	OPT_CHECKS,
	OPT_BATCH,
	OPT_TRACE,
	OPT_TRACE_REQUESTS,
	OPT_TRACE_ROUTE,
	OPT_SYSTEMS,
	OPT_LISTEN_RDMA,
	OPT_REDIS,
	OPT_MEMCACHED,
	OPT_KVDEXD,
	OPT_SEED,
	OPT_CSV,
};

static const struct option bl_longopts[] = {
	{"blocks", required_argument, NULL, OPT_BLOCKS},
	{"holders", required_argument, NULL, OPT_HOLDERS},
	{"workers", required_argument, NULL, OPT_WORKERS},
	{"chains", required_argument, NULL, OPT_CHAINS},
	{"duration-ms", required_argument, NULL, OPT_DURATION},
	{"publish-events", required_argument, NULL, OPT_PUBLISH},
	{"checks", required_argument, NULL, OPT_CHECKS},
	{"batch", required_argument, NULL, OPT_BATCH},
	{"trace", required_argument, NULL, OPT_TRACE},
	{"trace-requests", required_argument, NULL, OPT_TRACE_REQUESTS},
	{"trace-route", required_argument, NULL, OPT_TRACE_ROUTE},
	{"systems", required_argument, NULL, OPT_SYSTEMS},
	{"listen-rdma", required_argument, NULL, OPT_LISTEN_RDMA},
	{"redis-server", required_argument, NULL, OPT_REDIS},
	{"memcached", required_argument, NULL, OPT_MEMCACHED},
	{"kvdexd", required_argument, NULL, OPT_KVDEXD},
	{"seed", required_argument, NULL, OPT_SEED},
	{"csv", required_argument, NULL, OPT_CSV},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int
bl_parse_systems(const char *s, struct bl_opts *o)
{
	char *save = NULL;

	if (strlen(s) >= sizeof(o->sysbuf)) {
		goto err;
	}
	strcpy(o->sysbuf, s);
	o->nsystems = 0;
	for (char *t = strtok_r(o->sysbuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		unsigned i;

		for (i = 0; i < BL_NSYSTEMS && strcmp(t, bl_all_systems[i]) != 0; i++) {
		}
		if (i == BL_NSYSTEMS || o->nsystems == BL_MAX_SYSTEMS) {
			goto err;
		}
		for (unsigned j = 0; j < o->nsystems; j++) {
			if (o->systems[j] == bl_all_systems[i]) {
				goto err;
			}
		}
		o->systems[o->nsystems++] = bl_all_systems[i];
	}
	if (o->nsystems) {
		return 0;
	}
err:
	fprintf(stderr,
		"kvdex-bench: --systems: expected distinct names among %s,kvdex-verbs: '%s'\n",
		BL_DEFAULT_SYSTEMS, s);
	return -EINVAL;
}

static int
bl_parse_u(const char *opt, const char *arg, uint64_t min, uint64_t max, unsigned *out)
{
	uint64_t v;

	if (kvdex_bench_parse_u64(opt, arg, min, max, &v)) {
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

static int
bl_parse_route(const char *arg, struct bl_opts *o)
{
	if (strcmp(arg, "half") == 0) {
		o->route = BL_ROUTE_HALF;
	} else if (strcmp(arg, "best") == 0) {
		o->route = BL_ROUTE_BEST;
	} else if (strcmp(arg, "rr") == 0) {
		o->route = BL_ROUTE_RR;
	} else {
		fprintf(stderr, "kvdex-bench: --trace-route: half, best or rr: '%s'\n", arg);
		return -EINVAL;
	}
	return 0;
}

static int
bl_parse_one(int opt, const char *arg, void *opts)
{
	struct bl_opts *o = opts;
	int n;

	switch (opt) {
	case OPT_BLOCKS:
		return kvdex_bench_parse_u64("--blocks", arg, 1, 1ull << 32, &o->blocks);
	case OPT_HOLDERS:
		return bl_parse_u("--holders", arg, 1, 64, &o->holders);
	case OPT_WORKERS:
		return bl_parse_u("--workers", arg, 1, BL_MAX_WORKERS, &o->workers);
	case OPT_CHAINS:
		n = kvdex_bench_parse_list("--chains", arg, 1, 4096, o->chains, BL_MAX_CHAINS);
		o->nchains = n > 0 ? (unsigned)n : 0;
		return n < 0 ? n : 0;
	case OPT_DURATION:
		return kvdex_bench_parse_u64("--duration-ms", arg, 1, 3600000, &o->duration_ms);
	case OPT_PUBLISH:
		return kvdex_bench_parse_u64("--publish-events", arg, 0, 1ull << 32,
					     &o->publish_events);
	case OPT_CHECKS:
		return kvdex_bench_parse_u64("--checks", arg, 0, 1u << 24, &o->checks);
	case OPT_BATCH:
		return bl_parse_u("--batch", arg, 1, 65536, &o->batch);
	case OPT_TRACE:
		o->trace = arg;
		return 0;
	case OPT_TRACE_REQUESTS:
		return kvdex_bench_parse_u64("--trace-requests", arg, 1, 1ull << 32,
					     &o->trace_requests);
	case OPT_TRACE_ROUTE:
		return bl_parse_route(arg, o);
	case OPT_SYSTEMS:
		return bl_parse_systems(arg, o);
	case OPT_LISTEN_RDMA:
		kvdex_bench_listen_rdma = arg;
		return 0;
	case OPT_REDIS:
		o->redis_server = arg;
		return 0;
	case OPT_MEMCACHED:
		o->memcached = arg;
		return 0;
	case OPT_KVDEXD:
		o->kvdexd = arg;
		return 0;
	case OPT_SEED:
		return kvdex_bench_parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed);
	case OPT_CSV:
		o->csv = arg;
		return 0;
	default:
		return -EINVAL;
	}
}

/* 0, 1 for --help, -EINVAL. */
static int
bl_parse(int argc, char **argv, struct bl_opts *o)
{
	static const unsigned default_chains[] = {1, 8, 32, 64};
	int rc;

	memset(o, 0, sizeof(*o));
	o->blocks = 200000;
	o->holders = 4;
	o->workers = 64;
	o->duration_ms = 2000;
	o->publish_events = 65536;
	o->checks = 1000;
	o->batch = 4096;
	o->seed = 1;
	o->redis_server = "redis-server";
	o->memcached = "memcached";
	memcpy(o->chains, default_chains, sizeof(default_chains));
	o->nchains = 4;
	if (bl_parse_systems(BL_DEFAULT_SYSTEMS, o)) {
		return -EINVAL;
	}
	rc = kvdex_bench_getopt(argc, argv, "baseline", bl_longopts, bl_parse_one, bl_usage, o);
	if (rc) {
		return rc;
	}
	if (o->holders > o->workers) {
		fprintf(stderr, "kvdex-bench baseline: --holders %u exceeds --workers %u\n",
			o->holders, o->workers);
		return -EINVAL;
	}
	return 0;
}

/* ---- Servers and systems ------------------------------------------------------------ */

static bool
bl_wants(const struct bl_opts *o, const char *prefix)
{
	for (unsigned i = 0; i < o->nsystems; i++) {
		if (strncmp(o->systems[i], prefix, strlen(prefix)) == 0) {
			return true;
		}
	}
	return false;
}

static int
bl_find(const char *prog, const char *pkg, char *buf, size_t len)
{
	if (bl_find_program(prog, buf, len) == 0) {
		return 0;
	}
	fprintf(stderr,
		"kvdex-bench baseline: %s not found: install the Debian package %s "
		"(deploy/install-deps.sh does), pass its path, or leave it out of --systems\n",
		prog, pkg);
	return -ENOENT;
}

/* Print the versions and start redis-server and memcached if needed. */
static int
bl_start_servers(struct bl_run *r)
{
	char path[4096], ver[256];
	int rc;

	if (r->kvdexd[0]) {
		bl_program_version(r->kvdexd, "--version", ver, sizeof(ver));
		printf("# kvdexd: %s (%s)\n", ver, r->kvdexd);
	}
	printf("# hiredis: %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
	if (bl_wants(&r->o, "redis")) {
		rc = bl_find(r->o.redis_server, "redis-server", path, sizeof(path));
		rc = rc ? rc : bl_redis_start(path, &r->redis);
		rc = rc ? rc : bl_redis_load_functions("127.0.0.1", r->redis.port);
		if (rc) {
			return rc;
		}
		bl_program_version(path, "--version", ver, sizeof(ver));
		printf("# redis-server: %s (%s), pid %d, 127.0.0.1:%d, io-threads 1\n", ver, path,
		       (int)r->redis.pid, r->redis.port);
	}
	if (bl_wants(&r->o, "memcached")) {
		rc = bl_find(r->o.memcached, "memcached", path, sizeof(path));
		rc = rc ? rc : bl_mc_start(path, &r->mc);
		if (rc) {
			return rc;
		}
		bl_program_version(path, "-V", ver, sizeof(ver));
		printf("# memcached: %s (%s), pid %d, 127.0.0.1:%d, -t 1\n", ver, path,
		       (int)r->mc.pid, r->mc.port);
	}
	r->env.redis_host = "127.0.0.1";
	r->env.redis_port = r->redis.port;
	r->env.mc_port = r->mc.port;
	r->env.kvdexd = r->kvdexd;
	r->env.workers = r->o.workers;
	fflush(stdout);
	return 0;
}

static int
bl_create_sys(struct bl_run *r, const char *name, struct bl_row *row)
{
	row->sys.name = name;
	if (strncmp(name, "kvdex-", 6) == 0) {
		return bl_kvdex_create(&r->env, name + 6, &row->sys);
	}
	if (strncmp(name, "redis-", 6) == 0) {
		row->sys.server_pid = r->redis.pid;
		return bl_redis_create(&r->env, name + 6, &row->sys);
	}
	row->sys.server_pid = r->mc.pid;
	return bl_mc_create(&r->env, &row->sys);
}

/* Rows in --systems order, kvdex ones first; the first kvdex row is the
 * reference. */
static int
bl_create_rows(struct bl_run *r)
{
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < r->o.nsystems; i++) {
			bool kx = strncmp(r->o.systems[i], "kvdex-", 6) == 0;
			struct bl_row *row;
			int rc;

			if (kx != (pass == 0)) {
				continue;
			}
			row = &r->rows[r->nrows++];
			row->is_ref = kx && r->nrows == 1;
			rc = bl_create_sys(r, r->o.systems[i], row);
			if (rc) {
				fprintf(stderr, "kvdex-bench: %s: %s\n", r->o.systems[i],
					strerror(-rc));
				return rc;
			}
			row->created = true;
		}
	}
	return 0;
}

static int
bl_stop_all(struct bl_run *r)
{
	int rc = 0;

	for (unsigned i = 0; i < r->nrows; i++) {
		if (r->rows[i].created) {
			r->rows[i].sys.ops->fini(&r->rows[i].sys);
		}
	}
	if (bl_proc_stop(&r->redis)) {
		rc = -EIO;
	}
	if (bl_proc_stop(&r->mc)) {
		rc = -EIO;
	}
	return rc;
}

/* ---- Checking ------------------------------------------------------------------------ */

static int
bl_ref_push(struct bl_ref *ref, const struct bl_answer *a)
{
	if (ref->n == ref->cap) {
		size_t cap = ref->cap ? ref->cap * 2 : 4096;
		struct bl_answer *n = realloc(ref->a, cap * sizeof(*n));

		if (!n) {
			return -ENOMEM;
		}
		ref->a = n;
		ref->cap = cap;
	}
	ref->a[ref->n++] = *a;
	return 0;
}

static bool
bl_answer_eq(const struct bl_answer *x, const struct bl_answer *y)
{
	return x->longest == y->longest && x->ntop == y->ntop && x->topsig == y->topsig;
}

/* Lookup number i of a phase: against the model, and against (or recorded
 * as) the reference answer. */
static int
bl_check(const struct bl_row *row, struct bl_ref *ref, size_t i, const struct bl_answer *got,
	 const struct bl_answer *exp, struct bl_cell *cell)
{
	if (!bl_answer_eq(got, exp) && cell->wrong++ < 3) {
		fprintf(stderr,
			"kvdex-bench: %s: wrong answer to lookup %zu: longest %u (%u workers), "
			"expected %u (%u workers)\n",
			row->sys.name, i, got->longest, got->ntop, exp->longest, exp->ntop);
	}
	if (row->is_ref) {
		return bl_ref_push(ref, got);
	}
	if (i < ref->n && !bl_answer_eq(got, &ref->a[i]) && cell->diff++ < 3) {
		fprintf(stderr,
			"kvdex-bench: %s: lookup %zu: longest %u (%u workers), reference %u (%u)\n",
			row->sys.name, i, got->longest, got->ntop, ref->a[i].longest,
			ref->a[i].ntop);
	}
	return 0;
}

static int
bl_lookup_failed(const struct bl_row *row, int rc)
{
	fprintf(stderr, "kvdex-bench: %s: lookup failed: %s\n", row->sys.name, strerror(-rc));
	return rc;
}

/* ---- Timed phases --------------------------------------------------------------------- */

static void
bl_cell_begin(const struct bl_row *row, struct bl_cell *c, uint64_t *t0)
{
	c->srv_ns = row->sys.server_pid ? kvdex_bench_proc_cpu_ns(row->sys.server_pid) : 0;
	c->cli_ns = kvdex_bench_thread_cpu_ns();
	*t0 = kvdex_bench_now_ns();
}

static void
bl_cell_end(const struct bl_row *row, struct bl_cell *c, uint64_t t0, struct kvdex_bench_lat *lat)
{
	c->wall_ns = kvdex_bench_now_ns() - t0;
	c->cli_ns = kvdex_bench_thread_cpu_ns() - c->cli_ns;
	c->srv_ns =
		row->sys.server_pid ? kvdex_bench_proc_cpu_ns(row->sys.server_pid) - c->srv_ns : 0;
	kvdex_bench_lat_sort(lat);
	c->p50 = kvdex_bench_lat_pct(lat, 0.50);
	c->p99 = kvdex_bench_lat_pct(lat, 0.99);
	c->mean = kvdex_bench_lat_mean(lat);
}

/* Apply a stream, timing each batch. */
static int
bl_publish(struct bl_run *r, struct bl_row *row, const struct bl_stream *st, struct bl_cell *c)
{
	uint64_t t0;
	int rc = 0;

	kvdex_bench_lat_reset(&r->lat);
	bl_cell_begin(row, c, &t0);
	for (size_t b = 0; b < st->nb && !rc; b++) {
		const struct bl_batch *bt = &st->b[b];
		uint64_t s = kvdex_bench_now_ns();

		rc = row->sys.ops->apply(&row->sys, &st->ev[bt->first], bt->worker, bt->n);
		rc = rc ? rc : kvdex_bench_lat_add(&r->lat, kvdex_bench_now_ns() - s);
	}
	bl_cell_end(row, c, t0, &r->lat);
	c->ops = st->nev;
	c->batches = st->nb;
	if (rc) {
		fprintf(stderr, "kvdex-bench: %s: publish failed: %s\n", row->sys.name,
			strerror(-rc));
	}
	return rc;
}

/* Timed lookups of length L for D ms, after an untimed warm-up drawn from
 * another seed (so that the timed sequence is the same for every system). */
static int
bl_lookup_cell(struct bl_run *r, struct bl_row *row, unsigned ci, struct bl_cell *c)
{
	unsigned L = r->o.chains[ci];
	struct kvdex_bench_rng warm = {.s = r->o.seed ^ 0x7761726dull ^ L};
	struct kvdex_bench_rng rng = {.s = r->o.seed ^ 0x6c6f6f6b7570ull ^ ((uint64_t)L << 32)};
	uint64_t warm_ms = r->o.duration_ms / 10 < 200 ? r->o.duration_ms / 10 : 200;
	uint64_t t0 = kvdex_bench_now_ns(), end = t0 + warm_ms * 1000000ull, now = t0;
	struct bl_answer got, exp;
	int rc = 0;

	while (now < end) {
		bl_synth_query(&r->d, &warm, kvdex_bench_rng_below(&warm, r->d.nfull), L, r->qkeys,
			       &exp);
		rc = row->sys.ops->lookup(&row->sys, r->qkeys, L, &got);
		if (rc) {
			return bl_lookup_failed(row, rc);
		}
		now = kvdex_bench_now_ns();
	}
	kvdex_bench_lat_reset(&r->lat);
	bl_cell_begin(row, c, &t0);
	end = t0 + r->o.duration_ms * 1000000ull;
	for (now = t0; now < end && !rc; c->ops++) {
		uint64_t s;

		bl_synth_query(&r->d, &rng, kvdex_bench_rng_below(&rng, r->d.nfull), L, r->qkeys,
			       &exp);
		s = kvdex_bench_now_ns();
		rc = row->sys.ops->lookup(&row->sys, r->qkeys, L, &got);
		now = kvdex_bench_now_ns();
		if (rc) {
			return bl_lookup_failed(row, rc);
		}
		rc = kvdex_bench_lat_add(&r->lat, now - s);
		rc = rc ? rc : bl_check(row, &r->ref[ci], c->ops, &got, &exp, c);
	}
	bl_cell_end(row, c, t0, &r->lat);
	return rc;
}

/* Check lookups after the churn: half on moved chains, all on full length. */
static int
bl_check_phase(struct bl_run *r, struct bl_row *row, struct bl_cell *c)
{
	struct kvdex_bench_rng rng = {.s = r->o.seed ^ 0x636865636bull};
	struct bl_answer got, exp;
	uint64_t t0;
	int rc = 0;

	kvdex_bench_lat_reset(&r->lat);
	bl_cell_begin(row, c, &t0);
	for (uint64_t i = 0; i < r->o.checks && !rc; i++) {
		uint64_t chain = (i & 1) && r->nmoved
					 ? r->moved[kvdex_bench_rng_below(&rng, r->nmoved)]
					 : kvdex_bench_rng_below(&rng, r->d.nfull);

		bl_synth_query(&r->d_after, &rng, chain, r->d.len, r->qkeys, &exp);
		rc = row->sys.ops->lookup(&row->sys, r->qkeys, r->d.len, &got);
		if (rc) {
			return bl_lookup_failed(row, rc);
		}
		c->ops++;
		rc = bl_check(row, &r->ref[BL_MAX_CHAINS], i, &got, &exp, c);
	}
	bl_cell_end(row, c, t0, &r->lat);
	return rc;
}

static int
bl_synth_row(struct bl_run *r, struct bl_row *row)
{
	int rc;

	fprintf(stderr, "kvdex-bench: %s: start and load\n", row->sys.name);
	rc = row->sys.ops->reset(&row->sys, r->o.blocks);
	rc = rc ? rc : bl_publish(r, row, &r->load, &row->load);
	for (unsigned ci = 0; ci < r->o.nchains && !rc; ci++) {
		fprintf(stderr, "kvdex-bench: %s: lookups of %u\n", row->sys.name, r->o.chains[ci]);
		rc = bl_lookup_cell(r, row, ci, &row->cells[ci]);
	}
	if (!rc && r->churn.nb) {
		fprintf(stderr, "kvdex-bench: %s: churn and checks\n", row->sys.name);
		rc = bl_publish(r, row, &r->churn, &row->churn);
		rc = rc ? rc : bl_check_phase(r, row, &row->check);
	}
	return rc;
}

/* Trace request i's lookup, timed into r->lat and checked against exp (and
 * the reference ref); counted in c. */
static int
bl_trace_lookup(struct bl_run *r, struct bl_row *row, struct bl_cell *c, size_t i,
		struct bl_ref *ref, const struct bl_answer *exp)
{
	const struct bl_trace_req *q = &r->t.req[i];
	struct bl_answer got;
	uint64_t s = kvdex_bench_now_ns();
	int rc = row->sys.ops->lookup(&row->sys, &r->t.keys[q->koff], q->n, &got);

	if (rc) {
		return bl_lookup_failed(row, rc);
	}
	rc = kvdex_bench_lat_add(&r->lat, kvdex_bench_now_ns() - s);
	c->ops++;
	return rc ? rc : bl_check(row, ref, i, &got, exp, c);
}

/* The trace's lookups again, in order, against the final index and with no
 * publishes in between: the server CPU of lookups alone. */
static int
bl_trace_final(struct bl_run *r, struct bl_row *row)
{
	const struct bl_trace *t = &r->t;
	struct bl_cell *c = &row->trace_final;
	uint64_t t0;
	int rc = 0;

	kvdex_bench_lat_reset(&r->lat);
	bl_cell_begin(row, c, &t0);
	for (size_t i = 0; i < t->nreq && !rc; i++) {
		rc = bl_trace_lookup(r, row, c, i, &r->ref[BL_MAX_CHAINS + 2],
				     &t->req[i].exp_final);
	}
	bl_cell_end(row, c, t0, &r->lat);
	return rc;
}

/* Replay the trace: each request's lookup, then its publish. */
static int
bl_trace_row(struct bl_run *r, struct bl_row *row)
{
	const struct bl_trace *t = &r->t;
	struct bl_cell *c = &row->trace;
	uint64_t t0;
	int rc = row->sys.ops->reset(&row->sys, t->st.nev + 1024);

	fprintf(stderr, "kvdex-bench: %s: trace replay\n", row->sys.name);
	kvdex_bench_lat_reset(&r->lat);
	kvdex_bench_lat_reset(&r->lat2);
	bl_cell_begin(row, c, &t0);
	for (size_t i = 0; i < t->nreq && !rc; i++) {
		const struct bl_trace_req *q = &t->req[i];
		uint64_t s;

		rc = bl_trace_lookup(r, row, c, i, &r->ref[BL_MAX_CHAINS + 1], &q->exp);
		if (rc || q->nev == 0) {
			continue;
		}
		s = kvdex_bench_now_ns();
		rc = row->sys.ops->apply(&row->sys, &t->st.ev[t->st.b[q->batch].first], q->worker,
					 q->nev);
		rc = rc ? rc : kvdex_bench_lat_add(&r->lat2, kvdex_bench_now_ns() - s);
		c->batches++;
		c->pub_events += q->nev;
	}
	bl_cell_end(row, c, t0, &r->lat);
	kvdex_bench_lat_sort(&r->lat2);
	c->pub_p50 = kvdex_bench_lat_pct(&r->lat2, 0.50);
	c->pub_p99 = kvdex_bench_lat_pct(&r->lat2, 0.99);
	return rc ? rc : bl_trace_final(r, row);
}

/* ---- Output ------------------------------------------------------------------------- */

static double
bl_rate(uint64_t n, uint64_t ns)
{
	return ns ? (double)n * 1e9 / (double)ns : 0.0;
}

static double
bl_per_us(uint64_t ns, uint64_t n)
{
	return n ? (double)ns / (double)n / 1e3 : 0.0;
}

static void
bl_print_lookups(const struct bl_run *r)
{
	printf("\nlookups: one client thread, one lookup in flight; srv_cpu = server process CPU "
	       "(all threads) per lookup\n");
	printf("%5s %-11s %9s %10s %9s %9s %9s %11s %11s %6s %6s\n", "chain", "system", "lookups",
	       "lookups/s", "p50_us", "p99_us", "mean_us", "srv_cpu_us", "cli_cpu_us", "wrong",
	       "diff");
	for (unsigned ci = 0; ci < r->o.nchains; ci++) {
		for (unsigned i = 0; i < r->nrows; i++) {
			const struct bl_cell *c = &r->rows[i].cells[ci];

			printf("%5u %-11s %9" PRIu64
			       " %10.0f %9.2f %9.2f %9.2f %11.2f %11.2f %6" PRIu64 " %6" PRIu64
			       "\n",
			       r->o.chains[ci], r->rows[i].sys.name, c->ops,
			       bl_rate(c->ops, c->wall_ns), c->p50 / 1e3, c->p99 / 1e3,
			       c->mean / 1e3, bl_per_us(c->srv_ns, c->ops),
			       bl_per_us(c->cli_ns, c->ops), c->wrong, c->diff);
		}
	}
}

static void
bl_print_publish(const struct bl_run *r)
{
	printf("\npublish: load = the index above in per-worker batches of <= %u; churn = "
	       "whole-chain moves (%zu batches of %u)\n",
	       r->o.batch, r->churn.nb, r->d.len);
	printf("%-11s %9s %10s %11s %9s %10s %10s %10s %11s %7s %6s %6s\n", "system", "load_ev",
	       "load_ev/s", "srv_us/ev", "churn_ev", "churn_ev/s", "batch_p50", "batch_p99",
	       "srv_us/ev", "checks", "wrong", "diff");
	for (unsigned i = 0; i < r->nrows; i++) {
		const struct bl_row *w = &r->rows[i];

		printf("%-11s %9" PRIu64 " %10.0f %11.3f %9" PRIu64 " %10.0f %10.1f %10.1f %11.3f"
		       " %7" PRIu64 " %6" PRIu64 " %6" PRIu64 "\n",
		       w->sys.name, w->load.ops, bl_rate(w->load.ops, w->load.wall_ns),
		       bl_per_us(w->load.srv_ns, w->load.ops), w->churn.ops,
		       bl_rate(w->churn.ops, w->churn.wall_ns), w->churn.p50 / 1e3,
		       w->churn.p99 / 1e3, bl_per_us(w->churn.srv_ns, w->churn.ops), w->check.ops,
		       w->check.wrong, w->check.diff);
	}
}

static void
bl_print_trace(const struct bl_run *r)
{
	printf("\ntrace replay: per request one lookup of its chain, then (if it has new blocks "
	       "for its worker) one publish; closed loop\n");
	printf("%-11s %8s %9s %9s %9s %9s %9s %8s %11s %11s %6s %6s\n", "system", "requests",
	       "req/s", "lk_p50_us", "lk_p99_us", "pub_p50", "pub_p99", "events", "srv_us/req",
	       "cli_us/req", "wrong", "diff");
	for (unsigned i = 0; i < r->nrows; i++) {
		const struct bl_cell *c = &r->rows[i].trace;

		printf("%-11s %8" PRIu64 " %9.0f %9.2f %9.2f %9.2f %9.2f %8" PRIu64 " %11.2f %11.2f"
		       " %6" PRIu64 " %6" PRIu64 "\n",
		       r->rows[i].sys.name, c->ops, bl_rate(c->ops, c->wall_ns), c->p50 / 1e3,
		       c->p99 / 1e3, c->pub_p50 / 1e3, c->pub_p99 / 1e3, c->pub_events,
		       bl_per_us(c->srv_ns, c->ops), bl_per_us(c->cli_ns, c->ops), c->wrong,
		       c->diff);
	}
	printf("\ntrace lookups again against the final index, no publishes: server CPU of "
	       "lookups alone\n");
	printf("%-11s %8s %9s %9s %9s %9s %11s %11s %6s %6s\n", "system", "lookups", "lookups/s",
	       "p50_us", "p99_us", "mean_us", "srv_cpu_us", "cli_cpu_us", "wrong", "diff");
	for (unsigned i = 0; i < r->nrows; i++) {
		const struct bl_cell *c = &r->rows[i].trace_final;

		printf("%-11s %8" PRIu64 " %9.0f %9.2f %9.2f %9.2f %11.2f %11.2f %6" PRIu64
		       " %6" PRIu64 "\n",
		       r->rows[i].sys.name, c->ops, bl_rate(c->ops, c->wall_ns), c->p50 / 1e3,
		       c->p99 / 1e3, c->mean / 1e3, bl_per_us(c->srv_ns, c->ops),
		       bl_per_us(c->cli_ns, c->ops), c->wrong, c->diff);
	}
}

static void
bl_csv_cell(FILE *f, const char *sys, const char *kind, unsigned chain, const struct bl_cell *c)
{
	fprintf(f,
		"%s,%s,%u,%" PRIu64 ",%" PRIu64 ",%.1f,%" PRIu64 ",%" PRIu64
		",%.1f,%.1f,%.1f,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "\n",
		sys, kind, chain, c->ops, c->batches, bl_rate(c->ops, c->wall_ns), c->p50, c->p99,
		c->mean, c->ops ? (double)c->srv_ns / (double)c->ops : 0.0,
		c->ops ? (double)c->cli_ns / (double)c->ops : 0.0, c->wrong, c->diff, c->pub_events,
		c->pub_p50, c->pub_p99);
}

static int
bl_write_csv(const struct bl_run *r)
{
	FILE *f = fopen(r->o.csv, "w");

	if (!f) {
		fprintf(stderr, "kvdex-bench: %s: %s\n", r->o.csv, strerror(errno));
		return -EIO;
	}
	fprintf(f, "system,phase,chain,ops,batches,ops_per_s,p50_ns,p99_ns,mean_ns,"
		   "server_cpu_ns_per_op,client_cpu_ns_per_op,wrong,diff,publish_events,"
		   "publish_p50_ns,publish_p99_ns\n");
	for (unsigned i = 0; i < r->nrows; i++) {
		const struct bl_row *w = &r->rows[i];

		if (r->o.trace) {
			bl_csv_cell(f, w->sys.name, "trace", 0, &w->trace);
			bl_csv_cell(f, w->sys.name, "trace-final-lookups", 0, &w->trace_final);
			continue;
		}
		bl_csv_cell(f, w->sys.name, "load", 0, &w->load);
		for (unsigned ci = 0; ci < r->o.nchains; ci++) {
			bl_csv_cell(f, w->sys.name, "lookup", r->o.chains[ci], &w->cells[ci]);
		}
		bl_csv_cell(f, w->sys.name, "churn", r->d.len, &w->churn);
		bl_csv_cell(f, w->sys.name, "check", r->d.len, &w->check);
	}
	if (fclose(f)) {
		return -EIO;
	}
	return 0;
}

static int
bl_verdict(const struct bl_run *r)
{
	uint64_t wrong = 0, diff = 0;

	for (unsigned i = 0; i < r->nrows; i++) {
		const struct bl_row *w = &r->rows[i];

		for (unsigned ci = 0; ci < r->o.nchains; ci++) {
			wrong += w->cells[ci].wrong;
			diff += w->cells[ci].diff;
		}
		wrong += w->check.wrong + w->trace.wrong + w->trace_final.wrong;
		diff += w->check.diff + w->trace.diff + w->trace_final.diff;
	}
	if (wrong || diff) {
		printf("\nFAIL: %" PRIu64 " wrong answers, %" PRIu64
		       " answers differing from the reference\n",
		       wrong, diff);
		return -EPROTO;
	}
	printf("\nall answers matched the model%s\n",
	       r->nrows && r->rows[0].is_ref ? " and the reference (first kvdex row)" : "");
	return 0;
}

static void
bl_print_loadavg(void)
{
	char load[128] = "?";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (fgets(load, sizeof(load), f)) {
			load[strcspn(load, "\n")] = '\0';
		}
		fclose(f);
	}
	printf("# at the end: /proc/loadavg %s\n", load);
}

/* ---- Driver ------------------------------------------------------------------------- */

static unsigned
bl_max_chain(const struct bl_opts *o)
{
	unsigned m = 0;

	for (unsigned i = 0; i < o->nchains; i++) {
		m = o->chains[i] > m ? o->chains[i] : m;
	}
	return m;
}

static int
bl_prepare_synth(struct bl_run *r)
{
	const struct bl_opts *o = &r->o;
	unsigned len = bl_max_chain(o);
	int rc;

	if (o->blocks < len) {
		fprintf(stderr, "kvdex-bench: --blocks %" PRIu64 " is less than the chain %u\n",
			o->blocks, len);
		return -EINVAL;
	}
	rc = kvdex_bench_synth_init(&r->d, o->blocks, o->holders, o->workers, len, o->seed);
	rc = rc ? rc
		: kvdex_bench_synth_init(&r->d_after, o->blocks, o->holders, o->workers, len,
					 o->seed);
	rc = rc ? rc : bl_synth_load_stream(&r->d, o->batch, &r->load);
	if (!rc && o->publish_events) {
		rc = bl_synth_churn_stream(&r->d_after, o->publish_events, o->seed, &r->churn,
					   &r->moved, &r->nmoved);
	}
	r->qkeys = rc ? NULL : malloc(len * sizeof(*r->qkeys));
	if (!rc && !r->qkeys) {
		rc = -ENOMEM;
	}
	if (rc) {
		return rc;
	}
	printf("baseline: %" PRIu64 " blocks in chains of %u, %u holders each among %u workers; "
	       "%" PRIu64 " ms per cell; churn %zu events (%zu chain moves); %" PRIu64
	       " checks; seed %" PRIu64 "\n",
	       r->d.nblocks, len, o->holders, o->workers, o->duration_ms, r->churn.nev, r->nmoved,
	       o->checks, o->seed);
	printf("lookups: a window of L keys at a random offset of a random chain; one in four "
	       "has its tail from a random position replaced by absent keys\n");
	return 0;
}

static int
bl_prepare_trace(struct bl_run *r)
{
	static const char *const routes[] = {"half", "best", "rr"};
	const struct bl_trace *t = &r->t;
	uint64_t blocks;
	int rc = bl_trace_load(r->o.trace, r->o.trace_requests, r->o.workers, r->o.route, &r->t);

	if (rc) {
		return rc;
	}
	blocks = t->nkeys;
	printf("trace: %s: %zu requests over %.0f s (%.2f req/s, %.0f block lookups/s as "
	       "recorded)\n",
	       r->o.trace, t->nreq, t->span_ms / 1e3,
	       t->span_ms ? t->nreq * 1e3 / (double)t->span_ms : 0.0,
	       t->span_ms ? blocks * 1e3 / (double)t->span_ms : 0.0);
	printf("trace: %" PRIu64 " block lookups (mean chain %.1f, max %u), %" PRIu64
	       " distinct blocks, prefix hits %.1f%%\n",
	       blocks, (double)blocks / (double)t->nreq, t->max_chain, t->distinct_blocks,
	       100.0 * (double)t->hit_blocks / (double)blocks);
	printf("trace: inserts as in the IBM paper (blocks never seen before) %" PRIu64
	       " -> lookup:insert %.2f:1; events published here (route %s, %u workers) %zu in %zu "
	       "batches -> lookup:event %.2f:1\n",
	       t->new_blocks, (double)blocks / (double)(t->new_blocks ? t->new_blocks : 1),
	       routes[r->o.route], r->o.workers, t->st.nev, t->st.nb,
	       (double)blocks / (double)(t->st.nev ? t->st.nev : 1));
	return 0;
}

static int
bl_body(struct bl_run *r)
{
	int rc = r->o.trace ? bl_prepare_trace(r) : bl_prepare_synth(r);

	fflush(stdout);
	rc = rc ? rc : bl_start_servers(r);
	rc = rc ? rc : bl_create_rows(r);
	for (unsigned i = 0; i < r->nrows && !rc; i++) {
		rc = r->o.trace ? bl_trace_row(r, &r->rows[i]) : bl_synth_row(r, &r->rows[i]);
	}
	if (!rc && r->o.trace) {
		bl_print_trace(r);
	} else if (!rc) {
		bl_print_lookups(r);
		bl_print_publish(r);
	}
	bl_print_loadavg();
	if (!rc && r->o.csv) {
		rc = bl_write_csv(r);
	}
	return rc ? rc : bl_verdict(r);
}

static void
bl_run_fini(struct bl_run *r)
{
	for (unsigned i = 0; i < BL_MAX_CHAINS + 3; i++) {
		free(r->ref[i].a);
	}
	kvdex_bench_lat_fini(&r->lat);
	kvdex_bench_lat_fini(&r->lat2);
	free(r->qkeys);
	free(r->moved);
	kvdex_bench_synth_fini(&r->d);
	kvdex_bench_synth_fini(&r->d_after);
	bl_stream_fini(&r->load);
	bl_stream_fini(&r->churn);
	bl_trace_fini(&r->t);
	free(r);
}

int
kvdex_bench_baseline_main(int argc, char **argv)
{
	struct bl_run *r = calloc(1, sizeof(*r));
	int rc, src;

	if (!r) {
		return KVDEX_BENCH_EXIT_FAIL;
	}
	rc = bl_parse(argc, argv, &r->o);
	if (rc) {
		free(r);
		return rc > 0 ? KVDEX_BENCH_EXIT_OK : KVDEX_BENCH_EXIT_USAGE;
	}
	kvdex_bench_print_cmdline(stdout, argc, argv);
	kvdex_bench_print_host(stdout);
	rc = bl_wants(&r->o, "kvdex")
		     ? kvdex_bench_kvdexd_path(r->o.kvdexd, r->kvdexd, sizeof(r->kvdexd))
		     : 0;
	rc = rc ? rc : bl_body(r);
	src = bl_stop_all(r);
	bl_run_fini(r);
	return rc || src ? KVDEX_BENCH_EXIT_FAIL : KVDEX_BENCH_EXIT_OK;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-bench lookup: the latency and throughput of prefix lookups.
 *
 * Data set: N blocks in chains of the longest requested length (Lmax, 64 by
 * default). Every chain is held by H distinct workers drawn from W registered
 * ones, holder j in tier j % 4 (GPU, HOST, DISK, REMOTE), so that any window
 * of a chain is fully held by exactly those H workers and a correct lookup of
 * L of its keys returns longest == L. Keys are random 64-bit values: block
 * hashes are uniformly distributed in practice, and what a lookup costs is the
 * number of buckets it touches, not how the keys were derived.
 *
 * The index is loaded through kvdex_publish() in batches per publisher (one
 * publisher per worker), as a real ingest path would, and the load rate is
 * reported.
 *
 * Measurement: for each transport and chain length, one client thread looks
 * up windows of L consecutive keys starting at a random offset of a random
 * chain, for D ms after a short untimed warm-up. Windows at random offsets
 * rather than chain prefixes only make every bucket of the table equally
 * likely to be read, so small L does not run out of a hot cache set. Each
 * lookup is timed alone (CLOCK_MONOTONIC around the call) and every answer is
 * checked: rc 0, longest == L and the best worker among the chain's holders.
 * Any wrong answer fails the run (exit 1); speed never does. --lookups N
 * times exactly N lookups per cell instead of D ms.
 *
 * Server CPU: when we spawned kvdexd, its CPU time (every thread, from
 * /proc/<pid>/task/<tid>/schedstat) is read right before and right after each
 * timed cell, and once around an idle pause with no client before the first
 * cell, which gives the background rate (the writer's clock ticks) to
 * compare the cells with. One-sided transports (shm, verbs) should cost the
 * server nothing beyond that rate; tcp read emulation costs it per lookup.
 * The timeslices its threads ran (schedstat's third field) are counted too:
 * a server that does nothing per lookup is woken at its tick rate whatever
 * the lookup rate, which holds even where a kernel without
 * CONFIG_IRQ_TIME_ACCOUNTING charges softirq work (Soft-RoCE's responder)
 * to whichever thread happened to be on the CPU. With --servers the pids
 * are not ours and the columns read "-".
 */
#include "perf/bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOOKUP_MAX_CHAINS 16u
#define LOOKUP_MAX_CHAIN_LEN 4096u
#define LOOKUP_MAX_WORKERS 4096u
#define LOOKUP_MAX_HOLDERS 64u
#define LOOKUP_NTRANSPORTS 3u

struct lookup_opts {
	uint64_t blocks;
	uint64_t capacity; /* --capacity-blocks of the spawned kvdexd; 0 = blocks */
	uint64_t batch;
	uint64_t duration_ms;
	uint64_t lookups; /* --lookups: fixed count per cell; 0 = by duration */
	uint64_t seed;
	unsigned holders;
	unsigned workers;
	unsigned chains[LOOKUP_MAX_CHAINS];
	unsigned nchains;
	enum kvdex_transport transports[LOOKUP_NTRANSPORTS];
	unsigned ntransports;
	const char *kvdexd;
	const char *servers;
	const char *csv;
};

/* One (transport, chain length) cell of the results table. */
struct lookup_cell {
	const char *transport;
	unsigned len;
	uint64_t lookups;
	uint64_t wall_ns;
	uint64_t cpu_ns; /* this thread's CPU time over the timed part */
	uint64_t p50, p99, p999;
	double mean;
	uint64_t round_trips;
	uint64_t retries;
	uint64_t mismatches;
	uint64_t errors;
	bool have_srv;	     /* the server's pid is ours: srv_* are valid */
	uint64_t srv_before; /* its CPU time (ns, all threads) before the cell */
	uint64_t srv_after;
	uint64_t srv_slices; /* timeslices its threads ran over the cell */
	int first_err;
	char first_msg[160]; /* kvdex_client_last_error() of the first failure */
};

/* Footprint figures from the servers' counters. */
struct lookup_mem {
	uint64_t v[10];
};

static const char *const mem_names[] = {
	"blocks",  "holders",	   "records",	       "table_bytes",		"region_bytes",
	"resizes", "home_buckets", "overflow_buckets", "overflow_buckets_used", "index_full",
};

enum {
	MEM_BLOCKS,
	MEM_HOLDERS,
	MEM_RECORDS,
	MEM_TABLE_BYTES,
	MEM_REGION_BYTES,
	MEM_RESIZES,
	MEM_HOME,
	MEM_OVERFLOW,
	MEM_OVERFLOW_USED,
	MEM_INDEX_FULL,
};

static void
lookup_usage(FILE *f)
{
	fputs("usage: kvdex-bench lookup [options]\n"
	      "Load an index of chained blocks into kvdexd, then time prefix lookups per\n"
	      "transport and chain length (one client thread). Exit 1 on any wrong answer.\n"
	      "  --blocks N          blocks in the index (default 1000000)\n"
	      "  --holders H         holders (workers) per block (default 4)\n"
	      "  --workers W         registered workers (default 64)\n"
	      "  --chains LIST       lookup lengths in blocks (default 1,8,32,64)\n"
	      "  --transports LIST   shm,tcp,verbs (default shm,tcp)\n"
	      "  --bucket-size B     --bucket-size of the spawned kvdexd (default: its own)\n"
	      "  --listen-rdma ADDR  --listen-rdma of the spawned kvdexd (verbs: an address\n"
	      "                      on an RDMA device, e.g. 198.18.0.1:0)\n"
	      "  --duration-ms D     timed lookups per cell (default 2000)\n"
	      "  --lookups N         time exactly N lookups per cell instead of D ms\n"
	      "  --batch B           events per publish batch while loading (default 4096)\n"
	      "  --seed S            data set and lookup order (default 1)\n"
	      "  --capacity-blocks C --capacity-blocks of the spawned kvdexd (default N)\n"
	      "  --servers LIST      use running servers ([name=]host:port|unix:/path,...)\n"
	      "                      instead of spawning kvdexd; addresses must suit the\n"
	      "                      transports asked for\n"
	      "  --kvdexd PATH       kvdexd to spawn (default $KVDEX_KVDEXD, else\n"
	      "                      <dir of kvdex-bench>/../server/kvdexd)\n"
	      "  --csv FILE          also write the results table as CSV\n"
	      "  -h, --help          this text\n",
	      f);
}

static int
lookup_parse_transports(const char *s, struct lookup_opts *o)
{
	char buf[64];
	char *save = NULL;

	if (strlen(s) >= sizeof(buf)) {
		goto err;
	}
	strcpy(buf, s);
	o->ntransports = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (o->ntransports == LOOKUP_NTRANSPORTS) {
			goto err;
		}
		if (strcmp(t, "shm") == 0) {
			o->transports[o->ntransports++] = KVDEX_TRANSPORT_SHM;
		} else if (strcmp(t, "tcp") == 0) {
			o->transports[o->ntransports++] = KVDEX_TRANSPORT_TCP;
		} else if (strcmp(t, "verbs") == 0) {
			o->transports[o->ntransports++] = KVDEX_TRANSPORT_VERBS;
		} else {
			goto err;
		}
	}
	if (o->ntransports) {
		return 0;
	}
err:
	fprintf(stderr, "kvdex-bench: --transports: expected a list of shm,tcp,verbs: '%s'\n", s);
	return -EINVAL;
}

enum {
	OPT_BLOCKS = 256,
	OPT_HOLDERS,
	OPT_WORKERS,
	OPT_CHAINS,
	OPT_TRANSPORTS,
	OPT_DURATION,
	OPT_BATCH,
	OPT_SEED,
	OPT_SERVERS,
	OPT_KVDEXD,
	OPT_CSV,
	OPT_CAPACITY,
	OPT_LISTEN_RDMA,
	OPT_BUCKET_SIZE,
	OPT_LOOKUPS,
};

static const struct option lookup_longopts[] = {
	{"blocks", required_argument, NULL, OPT_BLOCKS},
	{"holders", required_argument, NULL, OPT_HOLDERS},
	{"workers", required_argument, NULL, OPT_WORKERS},
	{"chains", required_argument, NULL, OPT_CHAINS},
	{"transports", required_argument, NULL, OPT_TRANSPORTS},
	{"duration-ms", required_argument, NULL, OPT_DURATION},
	{"batch", required_argument, NULL, OPT_BATCH},
	{"seed", required_argument, NULL, OPT_SEED},
	{"servers", required_argument, NULL, OPT_SERVERS},
	{"kvdexd", required_argument, NULL, OPT_KVDEXD},
	{"csv", required_argument, NULL, OPT_CSV},
	{"capacity-blocks", required_argument, NULL, OPT_CAPACITY},
	{"listen-rdma", required_argument, NULL, OPT_LISTEN_RDMA},
	{"bucket-size", required_argument, NULL, OPT_BUCKET_SIZE},
	{"lookups", required_argument, NULL, OPT_LOOKUPS},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int
lookup_parse_one(int opt, const char *arg, void *opts)
{
	struct lookup_opts *o = opts;
	uint64_t v;
	int n;

	switch (opt) {
	case OPT_BLOCKS:
		return kvdex_bench_parse_u64("--blocks", arg, 1, 1ull << 32, &o->blocks);
	case OPT_HOLDERS:
		if (kvdex_bench_parse_u64("--holders", arg, 1, LOOKUP_MAX_HOLDERS, &v)) {
			return -EINVAL;
		}
		o->holders = (unsigned)v;
		return 0;
	case OPT_WORKERS:
		if (kvdex_bench_parse_u64("--workers", arg, 1, LOOKUP_MAX_WORKERS, &v)) {
			return -EINVAL;
		}
		o->workers = (unsigned)v;
		return 0;
	case OPT_CHAINS:
		n = kvdex_bench_parse_list("--chains", arg, 1, LOOKUP_MAX_CHAIN_LEN, o->chains,
					   LOOKUP_MAX_CHAINS);
		if (n < 0) {
			return n;
		}
		o->nchains = (unsigned)n;
		return 0;
	case OPT_TRANSPORTS:
		return lookup_parse_transports(arg, o);
	case OPT_DURATION:
		return kvdex_bench_parse_u64("--duration-ms", arg, 1, 3600000, &o->duration_ms);
	case OPT_LOOKUPS:
		return kvdex_bench_parse_u64("--lookups", arg, 1, 1ull << 32, &o->lookups);
	case OPT_BATCH:
		return kvdex_bench_parse_u64("--batch", arg, 1, 65536, &o->batch);
	case OPT_SEED:
		return kvdex_bench_parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed);
	case OPT_SERVERS:
		o->servers = arg;
		return 0;
	case OPT_KVDEXD:
		o->kvdexd = arg;
		return 0;
	case OPT_CSV:
		o->csv = arg;
		return 0;
	case OPT_CAPACITY:
		return kvdex_bench_parse_u64("--capacity-blocks", arg, 1, 1ull << 36, &o->capacity);
	case OPT_BUCKET_SIZE:
		kvdex_bench_bucket_size = arg;
		return 0;
	case OPT_LISTEN_RDMA:
		kvdex_bench_listen_rdma = arg;
		return 0;
	default:
		return -EINVAL;
	}
}

/* 0, 1 for --help, -EINVAL. */
static int
lookup_parse(int argc, char **argv, struct lookup_opts *o)
{
	static const unsigned default_chains[] = {1, 8, 32, 64};
	int rc;

	memset(o, 0, sizeof(*o));
	o->blocks = 1000000;
	o->holders = 4;
	o->workers = 64;
	o->duration_ms = 2000;
	o->batch = 4096;
	o->seed = 1;
	memcpy(o->chains, default_chains, sizeof(default_chains));
	o->nchains = 4;
	o->transports[0] = KVDEX_TRANSPORT_SHM;
	o->transports[1] = KVDEX_TRANSPORT_TCP;
	o->ntransports = 2;

	rc = kvdex_bench_getopt(argc, argv, "lookup", lookup_longopts, lookup_parse_one,
				lookup_usage, o);
	if (rc) {
		return rc;
	}
	if (o->holders > o->workers) {
		fprintf(stderr, "kvdex-bench lookup: --holders %u exceeds --workers %u\n",
			o->holders, o->workers);
		return -EINVAL;
	}
	return 0;
}

static unsigned
lookup_max_chain(const struct lookup_opts *o)
{
	unsigned m = 0;

	for (unsigned i = 0; i < o->nchains; i++) {
		m = o->chains[i] > m ? o->chains[i] : m;
	}
	return m;
}

/* The data set (docs at struct kvdex_bench_synth): 0, -EINVAL (message on
 * stderr) or -ENOMEM. */
static int
lookup_data_init(const struct lookup_opts *o, struct kvdex_bench_synth *d)
{
	unsigned len = lookup_max_chain(o);

	if (o->blocks < len) {
		fprintf(stderr,
			"kvdex-bench lookup: --blocks %" PRIu64
			" is less than the longest chain %u\n",
			o->blocks, len);
		return -EINVAL;
	}
	return kvdex_bench_synth_init(d, o->blocks, o->holders, o->workers, len, o->seed);
}

/* ---- Loading --------------------------------------------------------------- */

/* Per-publisher (= per worker) pending batch. */
struct lookup_pub {
	struct kvdex_event *ev;
	size_t n;
	uint64_t seq;
};

struct lookup_loader {
	struct kvdex_client *c;
	uint32_t ns;
	struct lookup_pub *pubs; /* index = worker id - 1 */
	unsigned npubs;
	size_t batch;
	uint64_t incarnation;
	uint64_t applied;
	uint64_t ignored;
	uint64_t batches;
	uint64_t publish_ns;
};

static int
lookup_flush(struct lookup_loader *ld, unsigned w)
{
	struct lookup_pub *p = &ld->pubs[w];
	struct kvdex_publish_hdr hdr = {
		.worker_id = w + 1,
		.dp_rank = 0,
		.incarnation = ld->incarnation,
		.seq = ++p->seq,
	};
	struct kvdex_publish_result res;
	uint64_t t0;
	int rc;

	if (p->n == 0) {
		return 0;
	}
	memset(&res, 0, sizeof(res));
	t0 = kvdex_bench_now_ns();
	rc = kvdex_publish(ld->c, &hdr, p->ev, p->n, &res);
	ld->publish_ns += kvdex_bench_now_ns() - t0;
	if (rc) {
		fprintf(stderr, "kvdex-bench: publish (worker %u, seq %" PRIu64 "): %s (%s)\n",
			w + 1, hdr.seq, strerror(-rc), kvdex_client_last_error(ld->c));
		return rc;
	}
	if (res.duplicate || res.gap) {
		fprintf(stderr, "kvdex-bench: publish (worker %u, seq %" PRIu64 "): %s\n", w + 1,
			hdr.seq, res.duplicate ? "duplicate" : "sequence gap");
		return -EPROTO;
	}
	ld->applied += res.applied;
	ld->ignored += res.ignored;
	ld->batches++;
	p->n = 0;
	return 0;
}

static int
lookup_add_event(struct lookup_loader *ld, unsigned w, uint64_t key, uint64_t parent, unsigned tier)
{
	struct lookup_pub *p = &ld->pubs[w];
	struct kvdex_event *e = &p->ev[p->n++];

	memset(e, 0, sizeof(*e));
	e->type = KVDEX_EV_STORED;
	e->tier = (uint8_t)tier;
	e->ns = ld->ns;
	e->key = key;
	if (parent) {
		e->flags = KVDEX_EVF_PARENT;
		e->parent = parent;
	}
	return p->n == ld->batch ? lookup_flush(ld, w) : 0;
}

static int
lookup_load_chains(struct lookup_loader *ld, const struct kvdex_bench_synth *d)
{
	for (uint64_t c = 0; c < d->nchains; c++) {
		uint64_t first = c * d->len;
		uint64_t end = first + d->len < d->nblocks ? first + d->len : d->nblocks;

		for (uint64_t i = first; i < end; i++) {
			uint64_t parent = i > first ? d->keys[i - 1] : 0;

			for (unsigned j = 0; j < d->h; j++) {
				unsigned w = d->holders[c * d->h + j] - 1;
				int rc = lookup_add_event(ld, w, d->keys[i], parent,
							  j % KVDEX_NTIERS);

				if (rc) {
					return rc;
				}
			}
		}
	}
	for (unsigned w = 0; w < ld->npubs; w++) {
		int rc = lookup_flush(ld, w);

		if (rc) {
			return rc;
		}
	}
	return 0;
}

static int
lookup_register_workers(struct kvdex_client *c, unsigned workers)
{
	for (unsigned w = 1; w <= workers; w++) {
		char addr[64];
		int rc;

		snprintf(addr, sizeof(addr), "bench-worker-%u:0", w);
		rc = kvdex_worker_register(c, w, addr, 1);
		if (rc) {
			fprintf(stderr, "kvdex-bench: register worker %u: %s (%s)\n", w,
				strerror(-rc), kvdex_client_last_error(c));
			return rc;
		}
	}
	return 0;
}

static const struct kvdex_ns_desc lookup_ns = {
	.model = "kvdex-bench",
	.adapter = "",
	.tenant = "",
	.block_size = 16,
	.hash_scheme = "opaque",
};

static int
lookup_load(const struct lookup_opts *o, struct kvdex_client *c, const struct kvdex_bench_synth *d)
{
	struct lookup_loader ld = {.c = c, .npubs = o->workers, .batch = o->batch};
	uint64_t t0, wall;
	int rc;

	rc = kvdex_ns_register(c, &lookup_ns, &ld.ns);
	if (rc) {
		fprintf(stderr, "kvdex-bench: register namespace: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(c));
		return rc;
	}
	rc = lookup_register_workers(c, o->workers);
	if (rc) {
		return rc;
	}
	ld.incarnation = kvdex_bench_incarnation();
	ld.pubs = calloc(o->workers, sizeof(*ld.pubs));
	if (!ld.pubs) {
		return -ENOMEM;
	}
	for (unsigned w = 0; w < o->workers; w++) {
		ld.pubs[w].ev = malloc(ld.batch * sizeof(*ld.pubs[w].ev));
		if (!ld.pubs[w].ev) {
			rc = -ENOMEM;
			goto out;
		}
	}
	t0 = kvdex_bench_now_ns();
	rc = lookup_load_chains(&ld, d);
	wall = kvdex_bench_now_ns() - t0;
	if (rc) {
		goto out;
	}
	printf("load: %" PRIu64 " events (%" PRIu64 " blocks x %u holders) in %" PRIu64
	       " batches of <= %zu: %.2f s, %.0f events/s (%.0f events/s inside publish)\n",
	       ld.applied + ld.ignored, d->nblocks, d->h, ld.batches, ld.batch, wall / 1e9,
	       (ld.applied + ld.ignored) / (wall / 1e9),
	       (ld.applied + ld.ignored) / (ld.publish_ns / 1e9));
	if (ld.applied != d->nblocks * d->h) {
		fprintf(stderr,
			"kvdex-bench: the servers applied %" PRIu64 " of %" PRIu64
			" events (%" PRIu64 " ignored)\n",
			ld.applied, d->nblocks * d->h, ld.ignored);
		rc = -EPROTO;
	}
out:
	for (unsigned w = 0; w < o->workers; w++) {
		free(ld.pubs[w].ev);
	}
	free(ld.pubs);
	return rc;
}

/* ---- Footprint ------------------------------------------------------------- */

static int
lookup_print_mem(struct kvdex_client *c, const struct kvdex_bench_synth *d, struct lookup_mem *m)
{
	int rc = kvdex_bench_counters(c, mem_names, m->v, sizeof(mem_names) / sizeof(*mem_names));
	uint64_t holders = m->v[MEM_HOLDERS];

	if (rc && rc != -ENOENT) {
		fprintf(stderr, "kvdex-bench: stats: %s\n", strerror(-rc));
		return rc;
	}
	if (rc == -ENOENT) {
		fprintf(stderr, "kvdex-bench: warning: some footprint counters are missing\n");
	}
	printf("index: blocks %" PRIu64 ", holders %" PRIu64 ", records %" PRIu64
	       ", resizes %" PRIu64 ", index_full %" PRIu64 "\n",
	       m->v[MEM_BLOCKS], holders, m->v[MEM_RECORDS], m->v[MEM_RESIZES],
	       m->v[MEM_INDEX_FULL]);
	printf("buckets: home %" PRIu64 ", overflow %" PRIu64 " (used %" PRIu64 ")\n",
	       m->v[MEM_HOME], m->v[MEM_OVERFLOW], m->v[MEM_OVERFLOW_USED]);
	printf("memory: table_bytes %" PRIu64 " (%.1f MiB), region_bytes %" PRIu64
	       " (%.1f MiB), bytes per (block, holder) %.2f\n",
	       m->v[MEM_TABLE_BYTES], m->v[MEM_TABLE_BYTES] / 1048576.0, m->v[MEM_REGION_BYTES],
	       m->v[MEM_REGION_BYTES] / 1048576.0,
	       holders ? (double)m->v[MEM_TABLE_BYTES] / (double)holders : 0.0);
	if (m->v[MEM_BLOCKS] != d->nblocks || holders != d->nblocks * d->h) {
		fprintf(stderr,
			"kvdex-bench: warning: expected %" PRIu64 " blocks and %" PRIu64
			" holders in the index\n",
			d->nblocks, d->nblocks * d->h);
	}
	return 0;
}

/* ---- Timed lookups ----------------------------------------------------------- */

struct lookup_run {
	struct kvdex_client *c;
	uint32_t ns;
	const struct kvdex_bench_synth *d;
	struct kvdex_bench_rng rng;
	struct kvdex_holding *holdings;
	uint32_t cap;
	struct kvdex_bench_lat lat;
	pid_t srv_pid;	/* the kvdexd we spawned, 0 if not ours */
	uint64_t count; /* lookups per cell, 0: duration_ms */
};

/* The server's CPU over an idle pause, the reference for the cells. */
struct lookup_idle {
	uint64_t wall_ns;
	uint64_t before, after; /* ns */
	uint64_t slices;
};

static bool
lookup_best_ok(const struct lookup_run *r, uint64_t chain, const struct kvdex_lookup_result *res)
{
	uint32_t id;

	if (res->best < 0 || res->nholdings == 0) {
		return false;
	}
	id = res->holdings[res->best].worker_id;
	for (unsigned j = 0; j < r->d->h; j++) {
		if (r->d->holders[chain * r->d->h + j] == id) {
			return true;
		}
	}
	return false;
}

/* One lookup of a random window of length len; latency recorded if timed. */
static int
lookup_one(struct lookup_run *r, unsigned len, bool timed, struct lookup_cell *cell)
{
	const struct kvdex_bench_synth *d = r->d;
	uint64_t chain = kvdex_bench_rng_below(&r->rng, d->nfull);
	uint64_t start = chain * d->len + kvdex_bench_rng_below(&r->rng, d->len - len + 1);
	struct kvdex_lookup_result res = {.holdings = r->holdings, .cap = r->cap};
	uint64_t t0, dt;
	int rc;

	t0 = kvdex_bench_now_ns();
	rc = kvdex_lookup(r->c, r->ns, &d->keys[start], len, 0, &res);
	dt = kvdex_bench_now_ns() - t0;
	if (!timed) {
		return rc;
	}
	if (rc) {
		if (!cell->errors++) {
			cell->first_err = rc;
			snprintf(cell->first_msg, sizeof(cell->first_msg), "%s",
				 kvdex_client_last_error(r->c));
		}
		return 0;
	}
	cell->lookups++;
	cell->round_trips += res.round_trips;
	cell->retries += res.retries;
	if (res.longest != len || !lookup_best_ok(r, chain, &res)) {
		if (cell->mismatches++ < 3) {
			fprintf(stderr,
				"kvdex-bench: mismatch: %s chain %" PRIu64 " offset %" PRIu64
				" len %u: longest %u, %u holdings\n",
				cell->transport, chain, start - chain * d->len, len, res.longest,
				res.nholdings_total);
		}
	}
	return kvdex_bench_lat_add(&r->lat, dt);
}

/* Is the timed part of a cell over? A fixed count, or the clock. */
static bool
lookup_cell_done(const struct lookup_run *r, const struct lookup_cell *cell, uint64_t now,
		 uint64_t end)
{
	if (r->count) {
		return cell->lookups + cell->errors >= r->count;
	}
	return now >= end;
}

static int
lookup_cell_run(struct lookup_run *r, unsigned len, uint64_t duration_ms, struct lookup_cell *cell)
{
	uint64_t warm = duration_ms / 10 < 200 ? duration_ms / 10 : 200;
	uint64_t t0 = kvdex_bench_now_ns(), end = t0 + warm * 1000000ull, now = t0;
	uint64_t cpu0, slices0 = 0;
	int rc;

	/* Warm-up: page in the mapping / tcp buffers, fill caches. Errors here
	 * show up again in the timed part, where they are counted. */
	while (now < end) {
		lookup_one(r, len, false, cell);
		now = kvdex_bench_now_ns();
	}
	kvdex_bench_lat_reset(&r->lat);
	if (r->srv_pid) {
		cell->have_srv = true;
		kvdex_bench_proc_sched(r->srv_pid, &cell->srv_before, &slices0);
	}
	cpu0 = kvdex_bench_thread_cpu_ns();
	t0 = kvdex_bench_now_ns();
	now = t0;
	end = t0 + duration_ms * 1000000ull;
	while (!lookup_cell_done(r, cell, now, end)) {
		rc = lookup_one(r, len, true, cell);
		if (rc) {
			return rc;
		}
		/* A dead server would make every call fail fast: stop early. */
		if (cell->errors > 1000 && cell->lookups == 0) {
			break;
		}
		now = kvdex_bench_now_ns();
	}
	cell->wall_ns = now - t0;
	cell->cpu_ns = kvdex_bench_thread_cpu_ns() - cpu0;
	if (r->srv_pid) {
		kvdex_bench_proc_sched(r->srv_pid, &cell->srv_after, &cell->srv_slices);
		cell->srv_slices = cell->srv_slices > slices0 ? cell->srv_slices - slices0 : 0;
	}
	kvdex_bench_lat_sort(&r->lat);
	cell->p50 = kvdex_bench_lat_pct(&r->lat, 0.50);
	cell->p99 = kvdex_bench_lat_pct(&r->lat, 0.99);
	cell->p999 = kvdex_bench_lat_pct(&r->lat, 0.999);
	cell->mean = kvdex_bench_lat_mean(&r->lat);
	return 0;
}

/* ---- Output ---------------------------------------------------------------- */

static void
lookup_print_header(void)
{
	printf("\n%-9s %5s %9s %11s %12s %9s %9s %9s %9s %9s %7s %8s %7s %6s %6s %10s %10s\n",
	       "transport", "chain", "lookups", "lookups/s", "blocks/s", "p50_us", "p99_us",
	       "p999_us", "mean_us", "cpu_us", "rt/lk", "retry/lk", "retries", "wrong", "errors",
	       "srv_cpu_us", "srv_cpu_ms");
}

static double
lookup_per_s(uint64_t n, uint64_t ns)
{
	return ns ? (double)n * 1e9 / (double)ns : 0.0;
}

/* Server CPU over a cell in ns (after - before; a thread that exited takes
 * its time with it, so never below 0). */
static uint64_t
lookup_srv_ns(const struct lookup_cell *c)
{
	return c->srv_after > c->srv_before ? c->srv_after - c->srv_before : 0;
}

static void
lookup_print_cell(const struct lookup_cell *c)
{
	double lk = c->lookups ? (double)c->lookups : 1.0;
	char srv_us[32] = "-", srv_ms[32] = "-";

	if (c->have_srv) {
		snprintf(srv_us, sizeof(srv_us), "%.3f", lookup_srv_ns(c) / lk / 1e3);
		snprintf(srv_ms, sizeof(srv_ms), "%.3f", lookup_srv_ns(c) / 1e6);
	}
	printf("%-9s %5u %9" PRIu64 " %11.0f %12.0f %9.2f %9.2f %9.2f %9.2f %9.2f %7.3f %8.5f"
	       " %7" PRIu64 " %6" PRIu64 " %6" PRIu64 " %10s %10s\n",
	       c->transport, c->len, c->lookups, lookup_per_s(c->lookups, c->wall_ns),
	       lookup_per_s(c->lookups * c->len, c->wall_ns), c->p50 / 1e3, c->p99 / 1e3,
	       c->p999 / 1e3, c->mean / 1e3, c->cpu_ns / lk / 1e3, c->round_trips / lk,
	       c->retries / lk, c->retries, c->mismatches, c->errors, srv_us, srv_ms);
	if (c->errors) {
		printf("%-9s %5u first error: %s (%s)\n", "", c->len, strerror(-c->first_err),
		       c->first_msg);
	}
	fflush(stdout);
}

/*
 * The server's CPU time before and after each cell, next to the idle
 * reference: a transport that costs the server nothing per lookup shows the
 * idle rate (ms of CPU per s of wall time) in its cells too.
 */
static void
lookup_print_srv(const struct lookup_run *r, const struct lookup_idle *idle,
		 const struct lookup_cell *cells, unsigned n)
{
	if (!r->srv_pid) {
		return;
	}
	printf("\nserver cpu: kvdexd pid %d, all threads (/proc/%d/task/*/schedstat), ms\n",
	       (int)r->srv_pid, (int)r->srv_pid);
	printf("server cpu: %-9s %5s %9s lookups in %9.1f ms: before %10.3f, after %10.3f, used "
	       "%8.3f (%.3f ms/s), %" PRIu64 " timeslices (%.1f/s)\n",
	       "idle", "-", "0", idle->wall_ns / 1e6, idle->before / 1e6, idle->after / 1e6,
	       (idle->after - idle->before) / 1e6,
	       lookup_per_s(idle->after - idle->before, idle->wall_ns) / 1e6, idle->slices,
	       lookup_per_s(idle->slices, idle->wall_ns));
	for (unsigned i = 0; i < n; i++) {
		const struct lookup_cell *c = &cells[i];
		uint64_t used = lookup_srv_ns(c);

		printf("server cpu: %-9s %5u %9" PRIu64
		       " lookups in %9.1f ms: before %10.3f, after "
		       "%10.3f, used %8.3f (%.3f ms/s, %.3f us/lookup), %" PRIu64
		       " timeslices (%.1f/s)\n",
		       c->transport, c->len, c->lookups, c->wall_ns / 1e6, c->srv_before / 1e6,
		       c->srv_after / 1e6, used / 1e6, lookup_per_s(used, c->wall_ns) / 1e6,
		       used / (c->lookups ? (double)c->lookups : 1.0) / 1e3, c->srv_slices,
		       lookup_per_s(c->srv_slices, c->wall_ns));
	}
	fflush(stdout);
}

static int
lookup_write_csv(const char *path, const struct lookup_cell *cells, unsigned n,
		 const struct lookup_opts *o, const struct lookup_mem *m)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "kvdex-bench: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	fprintf(f, "transport,chain,lookups,lookups_per_s,blocks_per_s,p50_ns,p99_ns,p999_ns,"
		   "mean_ns,client_cpu_ns_per_lookup,round_trips_per_lookup,retries_per_lookup,"
		   "wrong,errors,index_blocks,index_holders,table_bytes,region_bytes,"
		   "bytes_per_block_holder,holders_per_block,workers,server_cpu_ns_per_lookup,"
		   "server_cpu_ns\n");
	for (unsigned i = 0; i < n; i++) {
		const struct lookup_cell *c = &cells[i];
		double lk = c->lookups ? (double)c->lookups : 1.0;
		uint64_t holders = m->v[MEM_HOLDERS];

		fprintf(f, "%s,%u,%" PRIu64 ",%.1f,%.1f,", c->transport, c->len, c->lookups,
			lookup_per_s(c->lookups, c->wall_ns),
			lookup_per_s(c->lookups * c->len, c->wall_ns));
		fprintf(f, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.1f,%.1f,%.4f,%.6f,", c->p50,
			c->p99, c->p999, c->mean, c->cpu_ns / lk, c->round_trips / lk,
			c->retries / lk);
		fprintf(f,
			"%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
			",%.3f,%u,%u,",
			c->mismatches, c->errors, m->v[MEM_BLOCKS], holders, m->v[MEM_TABLE_BYTES],
			m->v[MEM_REGION_BYTES],
			holders ? (double)m->v[MEM_TABLE_BYTES] / (double)holders : 0.0, o->holders,
			o->workers);
		if (c->have_srv) {
			fprintf(f, "%.1f,%" PRIu64 "\n", lookup_srv_ns(c) / lk, lookup_srv_ns(c));
		} else {
			fprintf(f, ",\n");
		}
	}
	if (fclose(f)) {
		fprintf(stderr, "kvdex-bench: %s: %s\n", path, strerror(errno));
		return -EIO;
	}
	return 0;
}

/* ---- Driver ---------------------------------------------------------------- */

static const char *
lookup_transport_name(enum kvdex_transport t)
{
	return t == KVDEX_TRANSPORT_SHM ? "shm" : t == KVDEX_TRANSPORT_VERBS ? "verbs" : "tcp";
}

/* Servers string for a transport: ours (same placement name for both), or
 * the user's list as given. */
static void
lookup_servers(const struct lookup_opts *o, const struct kvdex_bench_server *srv,
	       enum kvdex_transport t, char *buf, size_t len)
{
	if (o->servers) {
		snprintf(buf, len, "%s", o->servers);
	} else if (t == KVDEX_TRANSPORT_TCP) {
		snprintf(buf, len, "bench=%s", srv->tcp_addr);
	} else if (t == KVDEX_TRANSPORT_VERBS) {
		/* Straight to the rdma_cm listener (tcp may be on loopback). */
		snprintf(buf, len, "bench=rdma:%s", srv->rdma_addr[0] ? srv->rdma_addr : "none:1");
	} else {
		snprintf(buf, len, "bench=unix:%s", srv->unix_path);
	}
}

static int
lookup_connect(const char *servers, enum kvdex_transport t, struct kvdex_client **out)
{
	struct kvdex_client_opts co;
	int rc;

	kvdex_client_opts_init(&co, sizeof(co));
	co.servers = servers;
	co.transport = t;
	co.client_name = "kvdex-bench";
	rc = kvdex_client_create(&co, out);
	if (rc) {
		fprintf(stderr, "kvdex-bench: connect to %s (%s): %s\n", servers,
			t == KVDEX_TRANSPORT_AUTO ? "auto" : lookup_transport_name(t),
			strerror(-rc));
	}
	return rc;
}

/* The client must really use the transport asked for: a silent fallback
 * would report the wrong transport's numbers. */
static int
lookup_check_transport(struct kvdex_client *c, enum kvdex_transport t)
{
	for (unsigned i = 0; i < kvdex_client_nservers(c); i++) {
		const char *name = kvdex_client_transport_name(c, i);

		if (!name || strcmp(name, lookup_transport_name(t)) != 0) {
			fprintf(stderr, "kvdex-bench: server %u uses transport %s, not %s\n", i,
				name ? name : "(none)", lookup_transport_name(t));
			return -EPROTO;
		}
	}
	return 0;
}

static int
lookup_transport_run(const struct lookup_opts *o, const struct kvdex_bench_server *srv, unsigned ti,
		     struct lookup_run *r, struct lookup_cell *cells)
{
	enum kvdex_transport t = o->transports[ti];
	char servers[1024];
	int rc;

	lookup_servers(o, srv, t, servers, sizeof(servers));
	rc = lookup_connect(servers, t, &r->c);
	if (rc) {
		return rc;
	}
	rc = lookup_check_transport(r->c, t);
	if (rc) {
		goto out;
	}
	rc = kvdex_ns_resolve(r->c, &lookup_ns, &r->ns);
	if (rc) {
		fprintf(stderr, "kvdex-bench: resolve namespace: %s\n", strerror(-rc));
		goto out;
	}
	for (unsigned i = 0; i < o->nchains; i++) {
		struct lookup_cell *cell = &cells[ti * o->nchains + i];

		cell->transport = lookup_transport_name(t);
		cell->len = o->chains[i];
		rc = lookup_cell_run(r, o->chains[i], o->duration_ms, cell);
		if (rc) {
			fprintf(stderr, "kvdex-bench: %s\n", strerror(-rc));
			goto out;
		}
		lookup_print_cell(cell);
	}
out:
	kvdex_client_destroy(r->c);
	r->c = NULL;
	return rc;
}

/* The server's CPU over a pause of min(D, 1 s) with no client connected. */
static void
lookup_idle_run(const struct lookup_opts *o, pid_t pid, struct lookup_idle *idle)
{
	uint64_t ms = o->duration_ms < 1000 ? o->duration_ms : 1000;
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
			      .tv_nsec = (long)(ms % 1000) * 1000000L};
	uint64_t t0, slices0;

	kvdex_bench_proc_sched(pid, &idle->before, &slices0);
	t0 = kvdex_bench_now_ns();
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
	idle->wall_ns = kvdex_bench_now_ns() - t0;
	kvdex_bench_proc_sched(pid, &idle->after, &idle->slices);
	idle->after = idle->after > idle->before ? idle->after : idle->before;
	idle->slices = idle->slices > slices0 ? idle->slices - slices0 : 0;
}

static int
lookup_measure(const struct lookup_opts *o, const struct kvdex_bench_server *srv,
	       const struct kvdex_bench_synth *d, struct lookup_cell *cells)
{
	struct lookup_run r = {.d = d, .rng = {.s = o->seed ^ 0x6c6f6f6b7570ull}};
	struct lookup_idle idle = {0};
	int rc = 0;

	r.cap = o->workers;
	r.count = o->lookups;
	r.srv_pid = o->servers ? 0 : srv->pid;
	r.holdings = calloc(r.cap, sizeof(*r.holdings));
	if (!r.holdings) {
		return -ENOMEM;
	}
	if (r.srv_pid) {
		lookup_idle_run(o, r.srv_pid, &idle);
	}
	lookup_print_header();
	for (unsigned ti = 0; ti < o->ntransports && !rc; ti++) {
		rc = lookup_transport_run(o, srv, ti, &r, cells);
	}
	if (!rc) {
		lookup_print_srv(&r, &idle, cells, o->ntransports * o->nchains);
	}
	kvdex_bench_lat_fini(&r.lat);
	free(r.holdings);
	return rc;
}

static int
lookup_verdict(const struct lookup_cell *cells, unsigned n)
{
	uint64_t wrong = 0, errors = 0;

	for (unsigned i = 0; i < n; i++) {
		wrong += cells[i].mismatches;
		errors += cells[i].errors;
	}
	if (wrong || errors) {
		printf("\nFAIL: %" PRIu64 " wrong answers, %" PRIu64 " failed lookups\n", wrong,
		       errors);
		return -EPROTO;
	}
	printf("\nall lookups returned the full chain\n");
	return 0;
}

/* Load, report the footprint, measure. Server lifetime is the caller's. */
static int
lookup_body(const struct lookup_opts *o, const struct kvdex_bench_server *srv,
	    const struct kvdex_bench_synth *d)
{
	struct lookup_cell *cells = calloc(o->ntransports * o->nchains, sizeof(*cells));
	struct kvdex_client *c = NULL;
	struct lookup_mem mem;
	char servers[1024];
	int rc;

	if (!cells) {
		return -ENOMEM;
	}
	lookup_servers(o, srv, KVDEX_TRANSPORT_SHM, servers, sizeof(servers));
	rc = lookup_connect(servers, KVDEX_TRANSPORT_AUTO, &c);
	if (rc) {
		goto out;
	}
	rc = lookup_load(o, c, d);
	if (!rc) {
		rc = lookup_print_mem(c, d, &mem);
	}
	kvdex_client_destroy(c);
	if (rc) {
		goto out;
	}
	rc = lookup_measure(o, srv, d, cells);
	if (!rc && o->csv) {
		rc = lookup_write_csv(o->csv, cells, o->ntransports * o->nchains, o, &mem);
	}
	if (!rc) {
		rc = lookup_verdict(cells, o->ntransports * o->nchains);
	}
out:
	free(cells);
	return rc;
}

int
kvdex_bench_lookup_main(int argc, char **argv)
{
	struct kvdex_bench_server srv = {0};
	struct lookup_opts o;
	struct kvdex_bench_synth d;
	char kvdexd[4096];
	int rc, src;

	rc = lookup_parse(argc, argv, &o);
	if (rc) {
		return rc > 0 ? KVDEX_BENCH_EXIT_OK : KVDEX_BENCH_EXIT_USAGE;
	}
	kvdex_bench_print_cmdline(stdout, argc, argv);
	kvdex_bench_print_host(stdout);
	if (lookup_data_init(&o, &d)) {
		return KVDEX_BENCH_EXIT_USAGE;
	}
	printf("kvdex-bench lookup: %" PRIu64 " blocks in chains of %u, %u holders each among %u"
	       " workers, %" PRIu64 " %s per cell, seed %" PRIu64 "\n",
	       d.nblocks, d.len, d.h, o.workers, o.lookups ? o.lookups : o.duration_ms,
	       o.lookups ? "lookups" : "ms", o.seed);
	if (!o.servers) {
		rc = kvdex_bench_kvdexd_path(o.kvdexd, kvdexd, sizeof(kvdexd));
		if (!rc) {
			rc = kvdex_bench_server_start(kvdexd, o.capacity ? o.capacity : o.blocks,
						      &srv);
		}
		if (rc) {
			kvdex_bench_synth_fini(&d);
			return KVDEX_BENCH_EXIT_FAIL;
		}
		printf("server: %s (pid %d), tcp %s, unix %s\n", kvdexd, (int)srv.pid, srv.tcp_addr,
		       srv.unix_path);
	} else {
		printf("servers: %s\n", o.servers);
	}
	fflush(stdout);
	rc = lookup_body(&o, &srv, &d);
	src = kvdex_bench_server_stop(&srv);
	kvdex_bench_synth_fini(&d);
	return rc || src ? KVDEX_BENCH_EXIT_FAIL : KVDEX_BENCH_EXIT_OK;
}

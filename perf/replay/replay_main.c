/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-replay: command line, presets and sweeps (docs/REPLAY.md).
 *
 * A run is (workload, workers, capacity, rate, order, router + eviction,
 * seed). The command line fixes a base configuration; --policy lists the
 * router+eviction combinations; --seeds the seeds; each --sweep KEY=V1,V2
 * adds a dimension. Every combination runs once, against a fresh kvdexd, and
 * becomes a CSV row as soon as it finishes; at the end the runs are grouped
 * over seeds into a markdown table (stdout and summary.md) and charts.
 *
 * Exit: 0, 1 on a failed run, 2 on a usage error.
 */
#include "perf/replay/replay.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench.h"

#define MAX_POLICIES 16u
#define MAX_SEEDS 16u
#define MAX_SWEEPS 4u
#define MAX_VALUES 16u

struct policy {
	enum kvdex_route_policy router;
	enum kvdex_cache_policy evict;
};

struct sweep {
	char key[24];
	char val[MAX_VALUES][32];
	unsigned n;
};

enum wl_kind { WL_GSP, WL_MOONCAKE, WL_MT };

struct cfg {
	enum wl_kind kind;
	struct replay_gsp_opts gsp;
	struct replay_mt_opts mt;
	struct replay_mooncake_opts mc;
	struct replay_run_opts run;
	struct policy pol[MAX_POLICIES];
	unsigned npol;
	uint64_t seeds[MAX_SEEDS];
	unsigned nseeds;
	struct sweep sw[MAX_SWEEPS];
	unsigned nsw;
	const char *out;
	bool charts;
	char kvdexd[PATH_MAX];
};

static void
usage(FILE *f)
{
	fputs("usage: kvdex-replay [--preset paper|smoke|mooncake|multiturn] [options]\n"
	      "workload:\n"
	      "  --workload gsp|mooncake|multiturn   (gsp)\n"
	      "  --groups N --prompts N --prefix-ratio X --lens a,b,..  GSP (128, 32, 0.5, "
	      "512,...,8192)\n"
	      "  --rate R              requests/s (GSP) or conversation starts/s (12)\n"
	      "  --order random|grouped|round_robin   GSP arrival order (random)\n"
	      "  --output-tokens N     (4)\n"
	      "  --block-size N        tokens per block for gsp/multiturn (16)\n"
	      "  --conversations N --turns N --user-tokens N --header-tokens N --think-ms X\n"
	      "  --trace FILE --limit N --spread none|even|uniform --time-scale X   Mooncake\n"
	      "fleet:\n"
	      "  --workers N (4)   --capacity-tokens N (190000)   --capacity-blocks N\n"
	      "  --policy ROUTER+EVICT[,...]   routers random round_robin least_load sglang\n"
	      "                        dynamo llmd lbgr kvdex; evictions rlt lru\n"
	      "  --evict-mode full|shortfall   (full: SGLang 0.4.6 asks for the whole "
	      "allocation)\n"
	      "  --seed N | --seeds a,b,c\n"
	      "  --base-ms X --prefill-ms X --decode-ms X   service model (10, 0.14, 12)\n"
	      "  --lbgr-units-per-token X --kvdex-prefill-ms X --kvdex-queued-ms X\n"
	      "  --kvdex-miss-weight X --kvdex-bound-rel X --kvdex-bound-ms X (< 0: no bound)\n"
	      "  --use-kvdex-route     call kvdex_route() (wall clock) instead of decide\n"
	      "  --speculate           routers publish speculative entries\n"
	      "sweeps and output:\n"
	      "  --sweep KEY=V1,V2,..  KEY: workers capacity rate order policy time_scale\n"
	      "                        prefix_ratio (repeatable: the product is run)\n"
	      "  --out DIR (perf/results/<timestamp>)  --no-charts  --no-progress\n"
	      "  --kvdexd PATH   --servers LIST (use running servers instead of spawning)\n",
	      f);
}

/* ---- Parsing helpers ---------------------------------------------------------------- */

static int
parse_double(const char *opt, const char *s, double min, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min)) {
		fprintf(stderr, "kvdex-replay: %s: bad value '%s'\n", opt, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int
parse_u32(const char *opt, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v;
	int rc = kvdex_bench_parse_u64(opt, s, min, max, &v);

	*out = (uint32_t)v;
	return rc;
}

static int
parse_policy(const char *s, struct policy *p)
{
	char r[32];
	const char *plus = strchr(s, '+');
	const char *ev = plus ? plus + 1 : "rlt";
	size_t n = plus ? (size_t)(plus - s) : strlen(s);

	if (n >= sizeof(r)) {
		return -EINVAL;
	}
	memcpy(r, s, n);
	r[n] = '\0';
	if (strcmp(r, "cache_aware") == 0) {
		snprintf(r, sizeof(r), "sglang");
	}
	if (kvdex_route_policy_parse(r, &p->router) < 0) {
		return -EINVAL;
	}
	if (strcmp(ev, "rlt") == 0) {
		p->evict = KVDEX_CACHE_RLT;
	} else if (strcmp(ev, "lru") == 0) {
		p->evict = KVDEX_CACHE_LEAF_LRU;
	} else {
		return -EINVAL;
	}
	return 0;
}

static int
parse_policies(struct cfg *c, const char *list)
{
	char buf[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	c->npol = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (c->npol == MAX_POLICIES || parse_policy(t, &c->pol[c->npol]) < 0) {
			fprintf(stderr, "kvdex-replay: --policy: bad policy '%s'\n", t);
			return -EINVAL;
		}
		c->npol++;
	}
	return c->npol ? 0 : -EINVAL;
}

static int
parse_seeds(struct cfg *c, const char *list)
{
	unsigned v[MAX_SEEDS];
	int n = kvdex_bench_parse_list("--seeds", list, 0, UINT32_MAX, v, MAX_SEEDS);

	if (n <= 0) {
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		c->seeds[i] = v[i];
	}
	c->nseeds = (unsigned)n;
	return 0;
}

static int
parse_lens(struct replay_gsp_opts *g, const char *list)
{
	unsigned v[8];
	int n = kvdex_bench_parse_list("--lens", list, 1, 1u << 20, v, 8);

	if (n <= 0) {
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		g->lens[i] = v[i];
	}
	g->nlens = (uint32_t)n;
	return 0;
}

static int
parse_sweep(struct cfg *c, const char *arg)
{
	const char *eq = strchr(arg, '=');
	struct sweep *s;
	char buf[512], *save = NULL;

	if (eq == NULL || c->nsw == MAX_SWEEPS || (size_t)(eq - arg) >= sizeof(s->key)) {
		fprintf(stderr, "kvdex-replay: --sweep KEY=V1,V2,...\n");
		return -EINVAL;
	}
	s = &c->sw[c->nsw];
	memset(s, 0, sizeof(*s));
	memcpy(s->key, arg, (size_t)(eq - arg));
	if (strcmp(s->key, "policy") == 0) {
		return parse_policies(c, eq + 1);
	}
	if (strcmp(s->key, "seed") == 0) {
		return parse_seeds(c, eq + 1);
	}
	snprintf(buf, sizeof(buf), "%s", eq + 1);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (s->n == MAX_VALUES) {
			return -EINVAL;
		}
		snprintf(s->val[s->n++], sizeof(s->val[0]), "%s", t);
	}
	c->nsw++;
	return s->n ? 0 : -EINVAL;
}

/* Apply sweep value `v` of key `k` to the configuration. */
static int
apply_value(struct cfg *c, const char *k, const char *v)
{
	uint64_t u;
	double d;

	if (strcmp(k, "workers") == 0) {
		return parse_u32("workers", v, 1, REPLAY_MAX_WORKERS, &c->run.workers);
	}
	if (strcmp(k, "capacity") == 0) {
		int rc = kvdex_bench_parse_u64("capacity", v, 1, 1ull << 40, &u);

		c->run.capacity_tokens = u;
		return rc;
	}
	if (strcmp(k, "rate") == 0 && parse_double(k, v, 1e-6, &d) == 0) {
		c->gsp.rate = c->mt.rate = d;
		return 0;
	}
	if (strcmp(k, "order") == 0) {
		return replay_order_parse(v, &c->gsp.order);
	}
	if (strcmp(k, "time_scale") == 0) {
		return parse_double(k, v, 1e-6, &c->mc.time_scale);
	}
	if (strcmp(k, "prefix_ratio") == 0) {
		return parse_double(k, v, 0.0, &c->gsp.prefix_ratio);
	}
	fprintf(stderr, "kvdex-replay: unknown sweep key or value %s=%s\n", k, v);
	return -EINVAL;
}

/* ---- Presets ---------------------------------------------------------------------------- */

static void
cfg_defaults(struct cfg *c)
{
	memset(c, 0, sizeof(*c));
	c->kind = WL_GSP;
	replay_gsp_opts_init(&c->gsp);
	replay_mt_opts_init(&c->mt);
	replay_mooncake_opts_init(&c->mc);
	replay_run_opts_init(&c->run);
	c->run.progress = isatty(STDERR_FILENO);
	c->charts = true;
	parse_policies(c, "lbgr+rlt,sglang+lru,kvdex+rlt,kvdex+lru");
	c->seeds[0] = 1;
	c->nseeds = 1;
}

static int
apply_preset(struct cfg *c, const char *name)
{
	if (strcmp(name, "paper") == 0) {
		/* kvrouting.md §3.1: GSP 128 x 32, ratio 0.5, 4 workers x 190K, 12 rps */
		parse_policies(c, "lbgr+rlt,lbgr+lru,sglang+lru,sglang+rlt,kvdex+rlt,kvdex+lru");
		return parse_seeds(c, "1,2,3");
	}
	if (strcmp(name, "smoke") == 0) {
		c->gsp.groups = 8;
		c->gsp.prompts = 4;
		c->gsp.nlens = 2;
		c->mt.conversations = 6;
		c->mt.turns = 3;
		c->mt.user_tokens = 128;
		c->mc.limit = 200;
		c->run.workers = 2;
		c->run.capacity_tokens = 4096;
		c->mc.time_scale = 4.0;
		return parse_policies(c, "lbgr+rlt,kvdex+lru");
	}
	if (strcmp(name, "mooncake") == 0) {
		c->kind = WL_MOONCAKE;
		c->mc.path = "/work/shared/traces/mooncake_fast25_conversation_trace.jsonl";
		c->mc.limit = 2000;
		c->run.workers = 8;
		c->run.capacity_tokens = 1000000;
		parse_policies(c, "random+lru,sglang+lru,lbgr+rlt,lbgr+lru,kvdex+rlt,kvdex+lru");
		return parse_seeds(c, "1,2,3");
	}
	if (strcmp(name, "multiturn") == 0) {
		c->kind = WL_MT;
		parse_policies(c, "random+lru,sglang+lru,lbgr+rlt,kvdex+rlt,kvdex+lru");
		return parse_seeds(c, "1,2,3");
	}
	fprintf(stderr, "kvdex-replay: unknown preset '%s'\n", name);
	return -EINVAL;
}

/* ---- Options ------------------------------------------------------------------------------ */

enum {
	O_WORKLOAD = 256,
	O_GROUPS,
	O_PROMPTS,
	O_RATIO,
	O_LENS,
	O_RATE,
	O_ORDER,
	O_OUTTOK,
	O_BS,
	O_CONVS,
	O_TURNS,
	O_USERTOK,
	O_HDRTOK,
	O_THINK,
	O_TRACE,
	O_LIMIT,
	O_SPREAD,
	O_TSCALE,
	O_WORKERS,
	O_CAPTOK,
	O_CAPBLK,
	O_POLICY,
	O_EVMODE,
	O_SEED,
	O_SEEDS,
	O_BASE,
	O_PREFILL,
	O_DECODE,
	O_LBGRU,
	O_KVPF,
	O_KVQ,
	O_KVMW,
	O_KVBR,
	O_KVBM,
	O_USEROUTE,
	O_SPEC,
	O_SWEEP,
	O_OUT,
	O_NOCHARTS,
	O_NOPROG,
	O_KVDEXD,
	O_SERVERS,
	O_PRESET,
};

static const struct option long_opts[] = {
	{"workload", 1, 0, O_WORKLOAD},
	{"groups", 1, 0, O_GROUPS},
	{"prompts", 1, 0, O_PROMPTS},
	{"prefix-ratio", 1, 0, O_RATIO},
	{"lens", 1, 0, O_LENS},
	{"rate", 1, 0, O_RATE},
	{"order", 1, 0, O_ORDER},
	{"output-tokens", 1, 0, O_OUTTOK},
	{"block-size", 1, 0, O_BS},
	{"conversations", 1, 0, O_CONVS},
	{"turns", 1, 0, O_TURNS},
	{"user-tokens", 1, 0, O_USERTOK},
	{"header-tokens", 1, 0, O_HDRTOK},
	{"think-ms", 1, 0, O_THINK},
	{"trace", 1, 0, O_TRACE},
	{"limit", 1, 0, O_LIMIT},
	{"spread", 1, 0, O_SPREAD},
	{"time-scale", 1, 0, O_TSCALE},
	{"workers", 1, 0, O_WORKERS},
	{"capacity-tokens", 1, 0, O_CAPTOK},
	{"capacity-blocks", 1, 0, O_CAPBLK},
	{"policy", 1, 0, O_POLICY},
	{"evict-mode", 1, 0, O_EVMODE},
	{"seed", 1, 0, O_SEED},
	{"seeds", 1, 0, O_SEEDS},
	{"base-ms", 1, 0, O_BASE},
	{"prefill-ms", 1, 0, O_PREFILL},
	{"decode-ms", 1, 0, O_DECODE},
	{"lbgr-units-per-token", 1, 0, O_LBGRU},
	{"kvdex-prefill-ms", 1, 0, O_KVPF},
	{"kvdex-queued-ms", 1, 0, O_KVQ},
	{"kvdex-miss-weight", 1, 0, O_KVMW},
	{"kvdex-bound-rel", 1, 0, O_KVBR},
	{"kvdex-bound-ms", 1, 0, O_KVBM},
	{"use-kvdex-route", 0, 0, O_USEROUTE},
	{"speculate", 0, 0, O_SPEC},
	{"sweep", 1, 0, O_SWEEP},
	{"out", 1, 0, O_OUT},
	{"no-charts", 0, 0, O_NOCHARTS},
	{"no-progress", 0, 0, O_NOPROG},
	{"kvdexd", 1, 0, O_KVDEXD},
	{"servers", 1, 0, O_SERVERS},
	{"preset", 1, 0, O_PRESET},
	{"help", 0, 0, 'h'},
	{0, 0, 0, 0},
};

static int
opt_workload(struct cfg *c, const char *v)
{
	if (strcmp(v, "gsp") == 0) {
		c->kind = WL_GSP;
	} else if (strcmp(v, "mooncake") == 0) {
		c->kind = WL_MOONCAKE;
	} else if (strcmp(v, "multiturn") == 0) {
		c->kind = WL_MT;
	} else {
		fprintf(stderr, "kvdex-replay: --workload gsp|mooncake|multiturn\n");
		return -EINVAL;
	}
	return 0;
}

static int
opt_spread(struct cfg *c, const char *v)
{
	static const char *const names[] = {"none", "even", "uniform"};

	for (unsigned i = 0; i < 3; i++) {
		if (strcmp(v, names[i]) == 0) {
			c->mc.spread = (enum replay_spread)i;
			return 0;
		}
	}
	return -EINVAL;
}

static int
opt_one(struct cfg *c, int o, const char *v)
{
	uint64_t u = 0;
	int rc = 0;

	switch (o) {
	case O_WORKLOAD:
		return opt_workload(c, v);
	case O_GROUPS:
		return parse_u32("--groups", v, 1, 1u << 16, &c->gsp.groups);
	case O_PROMPTS:
		return parse_u32("--prompts", v, 1, 1u << 16, &c->gsp.prompts);
	case O_RATIO:
		return apply_value(c, "prefix_ratio", v);
	case O_LENS:
		return parse_lens(&c->gsp, v);
	case O_RATE:
		return apply_value(c, "rate", v);
	case O_ORDER:
		return apply_value(c, "order", v);
	case O_OUTTOK:
		rc = parse_u32("--output-tokens", v, 1, 1u << 16, &c->gsp.output_tokens);
		c->mt.output_tokens = c->gsp.output_tokens;
		return rc;
	case O_BS:
		rc = parse_u32("--block-size", v, 1, 1u << 16, &c->gsp.block_size);
		c->mt.block_size = c->gsp.block_size;
		return rc;
	case O_CONVS:
		return parse_u32("--conversations", v, 1, 1u << 20, &c->mt.conversations);
	case O_TURNS:
		return parse_u32("--turns", v, 1, 256, &c->mt.turns);
	case O_USERTOK:
		return parse_u32("--user-tokens", v, 1, 1u << 16, &c->mt.user_tokens);
	case O_HDRTOK:
		return parse_u32("--header-tokens", v, 0, 1u << 16, &c->mt.header_tokens);
	case O_THINK:
		return parse_double("--think-ms", v, 0.0, &c->mt.think_ms);
	case O_TRACE:
		c->mc.path = v;
		c->kind = WL_MOONCAKE;
		return 0;
	case O_LIMIT:
		rc = kvdex_bench_parse_u64("--limit", v, 0, 1ull << 32, &u);
		c->mc.limit = u;
		return rc;
	case O_SPREAD:
		return opt_spread(c, v);
	case O_TSCALE:
		return apply_value(c, "time_scale", v);
	case O_WORKERS:
		return apply_value(c, "workers", v);
	case O_CAPTOK:
		return apply_value(c, "capacity", v);
	case O_CAPBLK:
		rc = kvdex_bench_parse_u64("--capacity-blocks", v, 1, 1u << 31, &u);
		c->run.capacity_tokens = u | (1ull << 63);
		return rc;
	case O_POLICY:
		return parse_policies(c, v);
	case O_EVMODE:
		if (strcmp(v, "full") == 0) {
			c->run.evict_mode = KVDEX_CACHE_EVICT_FULL_ALLOCATION;
		} else if (strcmp(v, "shortfall") == 0) {
			c->run.evict_mode = KVDEX_CACHE_EVICT_SHORTFALL;
		} else {
			return -EINVAL;
		}
		return 0;
	case O_SEED:
	case O_SEEDS:
		return parse_seeds(c, v);
	case O_BASE:
		return parse_double("--base-ms", v, 0.0, &c->run.model.base_ms);
	case O_PREFILL:
		return parse_double("--prefill-ms", v, 0.0, &c->run.model.prefill_ms_per_tok);
	case O_DECODE:
		return parse_double("--decode-ms", v, 0.0, &c->run.model.decode_ms_per_tok);
	case O_LBGRU:
		return parse_double("--lbgr-units-per-token", v, 0.0, &c->run.lbgr_units_per_token);
	case O_KVPF:
		return parse_double("--kvdex-prefill-ms", v, 0.0,
				    &c->run.kvdex_prefill_ms_per_token);
	case O_KVQ:
		return parse_double("--kvdex-queued-ms", v, 0.0, &c->run.kvdex_queued_req_ms);
	case O_KVMW:
		return parse_double("--kvdex-miss-weight", v, 0.0, &c->run.kvdex_miss_weight);
	case O_KVBR:
		c->run.kvdex_bound_rel_set = true;
		return parse_double("--kvdex-bound-rel", v, 0.0, &c->run.kvdex_bound_rel);
	case O_KVBM:
		c->run.kvdex_bound_ms_set = true;
		return parse_double("--kvdex-bound-ms", v, -1e9, &c->run.kvdex_bound_ms);
	case O_USEROUTE:
		c->run.use_kvdex_route = true;
		return 0;
	case O_SPEC:
		c->run.speculate = true;
		return 0;
	case O_SWEEP:
		return parse_sweep(c, v);
	case O_OUT:
		c->out = v;
		return 0;
	case O_NOCHARTS:
		c->charts = false;
		return 0;
	case O_NOPROG:
		c->run.progress = false;
		return 0;
	case O_KVDEXD:
		return kvdex_bench_kvdexd_path(v, c->kvdexd, sizeof(c->kvdexd));
	case O_SERVERS:
		c->run.servers = v;
		return 0;
	case O_PRESET:
		return apply_preset(c, v);
	default:
		return -EINVAL;
	}
}

static int
parse_args(struct cfg *c, int argc, char **argv)
{
	int o;

	/* presets first, so that flags override them wherever they appear */
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--preset") == 0 && apply_preset(c, argv[i + 1]) < 0) {
			return -EINVAL;
		}
	}
	while ((o = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		if (o == 'h') {
			usage(stdout);
			exit(0);
		}
		if (o == O_PRESET) {
			continue;
		}
		if (o == '?' || opt_one(c, o, optarg) < 0) {
			if (o != '?') {
				fprintf(stderr, "kvdex-replay: bad value for an option: %s\n",
					optarg ? optarg : "");
			}
			return -EINVAL;
		}
	}
	if (optind != argc || (c->kind == WL_MOONCAKE && c->mc.path == NULL)) {
		fprintf(stderr, "kvdex-replay: %s\n",
			optind != argc ? "unexpected argument" : "--trace FILE needed");
		return -EINVAL;
	}
	return 0;
}

/* ---- Running ------------------------------------------------------------------------------ */

static uint32_t
cfg_block_size(const struct cfg *c)
{
	return c->kind == WL_GSP  ? c->gsp.block_size
	       : c->kind == WL_MT ? c->mt.block_size
				  : c->mc.block_size;
}

static int
make_workload(struct cfg *c, uint64_t seed, struct replay_workload *w)
{
	switch (c->kind) {
	case WL_GSP:
		c->gsp.seed = seed;
		return replay_gsp_generate(&c->gsp, w);
	case WL_MT:
		c->mt.seed = seed;
		return replay_mt_generate(&c->mt, w);
	case WL_MOONCAKE:
		c->mc.seed = seed;
		return replay_mooncake_load(&c->mc, w);
	}
	return -EINVAL;
}

static void
fill_row(const struct cfg *c, const struct replay_workload *w, const struct policy *p,
	 uint64_t seed, const char *x, struct replay_row *row)
{
	memset(row, 0, sizeof(*row));
	snprintf(row->workload, sizeof(row->workload), "%s", w->name);
	snprintf(row->router, sizeof(row->router), "%s", kvdex_route_policy_name(p->router));
	snprintf(row->evict, sizeof(row->evict), "%s", p->evict == KVDEX_CACHE_RLT ? "rlt" : "lru");
	row->workers = c->run.workers;
	row->capacity_tokens = c->run.capacity_tokens;
	row->rate = c->kind == WL_GSP ? c->gsp.rate : c->kind == WL_MT ? c->mt.rate : 0.0;
	snprintf(row->order, sizeof(row->order), "%s",
		 c->kind == WL_GSP ? replay_order_name(c->gsp.order) : "trace");
	row->seed = seed;
	snprintf(row->x, sizeof(row->x), "%s", x);
}

struct runner {
	struct cfg *c;
	FILE *csv;
	struct replay_row *rows;
	size_t nrows, total;
	const char *xname;
};

static int
run_one(struct runner *rn, const char *x, const struct policy *p, uint64_t seed)
{
	struct cfg *c = rn->c;
	struct replay_workload w;
	struct replay_row *row = &rn->rows[rn->nrows];
	int rc = make_workload(c, seed, &w);

	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: workload: %s\n", strerror(-rc));
		return rc;
	}
	c->run.router = p->router;
	c->run.evict = p->evict;
	c->run.seed = seed;
	c->run.kvdexd = c->kvdexd;
	snprintf(c->run.label, sizeof(c->run.label), "[%zu/%zu] %s%s%s+%s seed %llu", rn->nrows + 1,
		 rn->total, x, x[0] ? " " : "", kvdex_route_policy_name(p->router),
		 p->evict == KVDEX_CACHE_RLT ? "rlt" : "lru", (unsigned long long)seed);
	fill_row(c, &w, p, seed, x, row);
	rc = replay_run(&w, &c->run, &row->r);
	replay_workload_fini(&w);
	if (rc < 0) {
		fprintf(stderr, "\nkvdex-replay: run %s failed: %s\n", c->run.label, strerror(-rc));
		return rc;
	}
	replay_csv_row(rn->csv, row);
	rn->nrows++;
	if (c->run.progress) {
		fprintf(stderr, "\r\033[K%s: hit %.3f, e2e p50 %.2f s, %.1f s wall\n", c->run.label,
			row->r.hit_rate, row->r.e2e_p50 / 1000.0, row->r.wall_s);
	}
	return 0;
}

/* Run every policy and seed at the current sweep point. */
static int
run_point(struct runner *rn, const char *x)
{
	for (unsigned pi = 0; pi < rn->c->npol; pi++) {
		for (unsigned si = 0; si < rn->c->nseeds; si++) {
			int rc = run_one(rn, x, &rn->c->pol[pi], rn->c->seeds[si]);

			if (rc < 0) {
				return rc;
			}
		}
	}
	return 0;
}

/* Walk the product of the sweeps (dimension d onwards). */
static int
run_sweeps(struct runner *rn, unsigned d, char *x, size_t xlen)
{
	size_t base = strlen(x);

	if (d == rn->c->nsw) {
		return run_point(rn, x);
	}
	for (unsigned i = 0; i < rn->c->sw[d].n; i++) {
		const char *k = rn->c->sw[d].key, *v = rn->c->sw[d].val[i];
		int rc;

		if (apply_value(rn->c, k, v) < 0) {
			return -EINVAL;
		}
		snprintf(x + base, xlen - base, "%s%s", base ? " " : "", rn->c->nsw > 1 ? k : "");
		snprintf(x + strlen(x), xlen - strlen(x), "%s%s", rn->c->nsw > 1 ? "=" : "", v);
		rc = run_sweeps(rn, d + 1, x, xlen);
		x[base] = '\0';
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

static int
mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0777) < 0 && errno != EEXIST) {
				return -errno;
			}
			*p = '/';
		}
	}
	return mkdir(buf, 0777) < 0 && errno != EEXIST ? -errno : 0;
}

static int
open_out(struct cfg *c, char *dir, size_t len, FILE **csv)
{
	char path[PATH_MAX + 32];
	int rc;

	if (c->out) {
		snprintf(dir, len, "%s", c->out);
	} else {
		time_t t = time(NULL);
		struct tm tm;
		char stamp[32];

		localtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
		snprintf(dir, len, "perf/results/%s", stamp);
	}
	rc = mkdir_p(dir);
	if (rc < 0) {
		fprintf(stderr, "kvdex-replay: mkdir %s: %s\n", dir, strerror(-rc));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/results.csv", dir);
	*csv = fopen(path, "w");
	if (*csv == NULL) {
		rc = -errno;
		fprintf(stderr, "kvdex-replay: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	replay_csv_header(*csv);
	return 0;
}

/* Our executable is <build>/perf/replay/kvdex-replay; kvdexd is
 * <build>/server/kvdexd (kvdex_bench_kvdexd_path assumes one level less). */
static void
default_kvdexd(struct cfg *c)
{
	char self[PATH_MAX];
	ssize_t n;

	if (c->kvdexd[0] != '\0' || getenv("KVDEX_KVDEXD") != NULL) {
		if (c->kvdexd[0] == '\0') {
			kvdex_bench_kvdexd_path(NULL, c->kvdexd, sizeof(c->kvdexd));
		}
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash != NULL) {
			*slash = '\0';
			snprintf(c->kvdexd, sizeof(c->kvdexd), "%.*s/../../server/kvdexd",
				 PATH_MAX - 32, self);
			if (access(c->kvdexd, X_OK) == 0) {
				return;
			}
		}
	}
	kvdex_bench_kvdexd_path(NULL, c->kvdexd, sizeof(c->kvdexd));
}

static size_t
count_runs(const struct cfg *c)
{
	size_t n = (size_t)c->npol * c->nseeds;

	for (unsigned i = 0; i < c->nsw; i++) {
		n *= c->sw[i].n;
	}
	return n;
}

static void
write_summary(struct runner *rn, const char *dir, int argc, char **argv, const char *xname)
{
	char path[PATH_MAX + 32];
	FILE *f;
	int charts = 0;

	replay_markdown(stdout, rn->rows, rn->nrows, xname);
	fflush(stdout);
	snprintf(path, sizeof(path), "%s/summary.md", dir);
	f = fopen(path, "w");
	if (f != NULL) {
		fputs("# kvdex-replay\n\n", f);
		kvdex_bench_print_cmdline(f, argc, argv);
		kvdex_bench_print_host(f);
		fputs("\n", f);
		replay_markdown(f, rn->rows, rn->nrows, xname);
		fclose(f);
	}
	if (rn->c->charts && rn->nrows > 0) {
		charts = replay_charts(dir, rn->rows, rn->nrows, xname);
	}
	fprintf(stderr, "kvdex-replay: %zu runs; %s/results.csv, %s/summary.md%s\n", rn->nrows, dir,
		dir, charts > 0 ? ", charts *.png" : "");
}

int
main(int argc, char **argv)
{
	static struct cfg c;
	struct runner rn = {0};
	char dir[PATH_MAX], x[256] = "", xname[128] = "";
	int rc;

	cfg_defaults(&c);
	kvdex_bench_listen_rdma = "none"; /* shm is all a replay needs */
	if (parse_args(&c, argc, argv) < 0) {
		usage(stderr);
		return KVDEX_BENCH_EXIT_USAGE;
	}
	if (c.run.capacity_tokens >> 63) {
		c.run.capacity_tokens =
			(c.run.capacity_tokens & ~(1ull << 63)) * cfg_block_size(&c);
	}
	default_kvdexd(&c);
	for (unsigned i = 0; i < c.nsw; i++) {
		snprintf(xname + strlen(xname), sizeof(xname) - strlen(xname), "%s%s", i ? " " : "",
			 c.sw[i].key);
	}
	rn.c = &c;
	rn.total = count_runs(&c);
	rn.rows = calloc(rn.total, sizeof(*rn.rows));
	if (rn.rows == NULL || open_out(&c, dir, sizeof(dir), &rn.csv) < 0) {
		free(rn.rows);
		return KVDEX_BENCH_EXIT_FAIL;
	}
	rc = run_sweeps(&rn, 0, x, sizeof(x));
	fclose(rn.csv);
	write_summary(&rn, dir, argc, argv, xname);
	free(rn.rows);
	return rc < 0 ? KVDEX_BENCH_EXIT_FAIL : KVDEX_BENCH_EXIT_OK;
}

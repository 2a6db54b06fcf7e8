/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexctl: command-line client of kvdex, built on the public libkvdex API
 * only (it links the shared library like any application).
 *
 *   kvdexctl [global options] COMMAND [command options] [args]
 *
 * Exit status: 0 success, 1 failure (server, connection or input file), 2
 * usage error. Output goes to stdout as "key=value" or "name value" lines
 * meant to be read by people and by scripts alike; errors go to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvdex/kvdex.h"

#define EXIT_USAGE 2
#define MAX_KEYS 65536u

struct gopts {
	const char *servers;
	const char *config;
	const char *auth_token;
	enum kvdex_transport transport;
	int timeout_ms;
};

static struct gopts g;

static const char main_usage[] =
	"usage: kvdexctl [global options] COMMAND [options] [args]\n"
	"\n"
	"global options:\n"
	"  --servers LIST         comma-separated [name=]host:port, [name=]unix:/path or\n"
	"                         [name=]rdma:host:port\n"
	"  --config FILE          client config file\n"
	"  --transport T          auto|shm|tcp|verbs (default auto)\n"
	"  --auth-token TOKEN     server auth token\n"
	"  --timeout-ms N         per-exchange timeout (default 2000)\n"
	"  -h, --help             this help; COMMAND --help for a command\n"
	"\n"
	"commands:\n"
	"  stats            server counters\n"
	"  workers          a server's worker table\n"
	"  lookup           how much of a key chain each worker holds\n"
	"  register-ns      register a namespace\n"
	"  register-worker  register a worker\n"
	"  publish          apply an event file\n";

static const char ns_opts_usage[] = "  --model M              model name (required)\n"
				    "  --adapter A            adapter / LoRA name\n"
				    "  --tenant T             tenant\n"
				    "  --block-size N         tokens per block (default 16)\n"
				    "  --hash-scheme S        block hash scheme (default opaque)\n";

static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
err(const char *fmt, ...)
{
	va_list ap;

	fputs("kvdexctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_error(const char *usage, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int
usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;

	fputs("kvdexctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fputs(usage, stderr);
	return EXIT_USAGE;
}

/* Decimal or 0x-hex, the whole string, within max. */
static int
parse_num(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s == '\0' || *s == '-' || *s == '+') {
		return -EINVAL;
	}
	errno = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (s[2] == '\0') {
			return -EINVAL;
		}
		v = strtoull(s + 2, &end, 16);
	} else {
		v = strtoull(s, &end, 10);
	}
	if (errno != 0 || *end != '\0' || v > max) {
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* The library logs through this sink (errors only) so that client creation
 * failures (a bad config line, an unreachable server) reach the user. */
static void
log_sink(int level, const char *component, const char *msg, void *arg)
{
	const char *p = strstr(msg, ": ");

	/* Drop the "function:line: " prefix the library adds. */
	err("%s", p != NULL ? p + 2 : msg);
}

static int
client_open(struct kvdex_client **c)
{
	struct kvdex_client_opts o;
	int rc;

	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = g.servers;
	o.config_path = g.config;
	o.auth_token = g.auth_token;
	o.transport = g.transport;
	o.timeout_ms = g.timeout_ms;
	o.client_name = "kvdexctl";
	kvdex_set_log_fn(log_sink, NULL, 3);
	rc = kvdex_client_create(&o, c);
	kvdex_set_log_fn(NULL, NULL, 0);
	if (rc < 0) {
		err("cannot connect: %s", strerror(-rc));
	}
	return rc;
}

static void
report(struct kvdex_client *c, const char *what, int rc)
{
	const char *m = kvdex_client_last_error(c);

	if (m != NULL && m[0] != '\0') {
		err("%s: %s (%s)", what, strerror(-rc), m);
	} else {
		err("%s: %s", what, strerror(-rc));
	}
}

static bool
wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			return true;
		}
		if (strcmp(argv[i], "--") == 0) {
			break;
		}
	}
	return false;
}

/* ---- stats / workers ----------------------------------------------------------- */

static const char stats_usage[] = "usage: kvdexctl stats [--server I]\n"
				  "  --server I   server index in the cluster map (default: all)\n";
static const char workers_usage[] =
	"usage: kvdexctl workers [--server I]\n"
	"  --server I   server index in the cluster map (default: all)\n";

static int
parse_server_opt(int argc, char **argv, const char *usage, long *server)
{
	static const struct option lo[] = {
		{"server", required_argument, NULL, 's'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int ch;

	*server = -1;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch != 's' || parse_num(optarg, KVDEX_MAX_SERVERS - 1, &v) < 0) {
			return usage_error(usage, "bad option");
		}
		*server = (long)v;
	}
	if (optind != argc) {
		return usage_error(usage, "unexpected argument '%s'", argv[optind]);
	}
	return 0;
}

static int
stats_one(struct kvdex_client *c, unsigned i, bool banner)
{
	struct kvdex_counter ctr[256];
	int n = kvdex_stats(c, i, ctr, 256);

	if (n < 0) {
		report(c, "stats", n);
		return 1;
	}
	if (banner) {
		printf("# server %s\n", kvdex_client_server_name(c, i));
	}
	for (int k = 0; k < n && k < 256; k++) {
		printf("%s %" PRIu64 "\n", ctr[k].name, ctr[k].value);
	}
	return 0;
}

static int
workers_one(struct kvdex_client *c, unsigned i, bool banner)
{
	struct kvdex_worker_info *w;
	int n = kvdex_workers_list(c, i, NULL, 0);

	if (n < 0) {
		report(c, "workers", n);
		return 1;
	}
	w = calloc((size_t)n + 1, sizeof(*w));
	if (w == NULL) {
		return 1;
	}
	n = kvdex_workers_list(c, i, w, (size_t)n + 1);
	if (n < 0) {
		report(c, "workers", n);
		free(w);
		return 1;
	}
	if (banner) {
		printf("# server %s\n", kvdex_client_server_name(c, i));
	}
	printf("%-6s %-10s %-7s %-7s %-8s %-8s %-10s %-8s %-12s %-8s %s\n", "slot", "worker",
	       "dp_rank", "dp_size", "queued", "running", "prefill", "kv_util", "load_age_ms",
	       "holders", "address");
	for (int k = 0; k < n; k++) {
		char age[24];

		if (w[k].load_age_ms == UINT64_MAX) {
			snprintf(age, sizeof(age), "-");
		} else {
			snprintf(age, sizeof(age), "%" PRIu64, w[k].load_age_ms);
		}
		printf("%-6u %-10u %-7u %-7u %-8u %-8u %-10" PRIu64 " %-8u %-12s %-8" PRIu64
		       " %s\n",
		       w[k].slot, w[k].worker_id, w[k].dp_rank, w[k].dp_size, w[k].load.queued,
		       w[k].load.running, w[k].load.prefill_tokens, w[k].load.kv_util_permille, age,
		       w[k].holders, w[k].address);
	}
	free(w);
	return 0;
}

static int
cmd_per_server(int argc, char **argv, const char *usage,
	       int (*fn)(struct kvdex_client *, unsigned, bool))
{
	struct kvdex_client *c;
	long server;
	int rc;

	rc = parse_server_opt(argc, argv, usage, &server);
	if (rc != 0) {
		return rc;
	}
	if (client_open(&c) < 0) {
		return 1;
	}
	if (server >= (long)kvdex_client_nservers(c)) {
		unsigned n = kvdex_client_nservers(c);

		kvdex_client_destroy(c);
		return usage_error(usage, "--server %ld: only %u servers", server, n);
	}
	rc = 0;
	for (unsigned i = 0; i < kvdex_client_nservers(c) && rc == 0; i++) {
		if (server < 0 || (unsigned)server == i) {
			rc = fn(c, i, server < 0 && kvdex_client_nservers(c) > 1);
		}
	}
	kvdex_client_destroy(c);
	return rc;
}

/* ---- namespaces ---------------------------------------------------------------------- */

struct ns_args {
	const char *model, *adapter, *tenant, *hash_scheme;
	uint32_t block_size;
};

enum {
	OPT_MODEL = 256,
	OPT_ADAPTER,
	OPT_TENANT,
	OPT_BLOCK_SIZE,
	OPT_HASH_SCHEME,
	OPT_ID,
	OPT_ADDRESS,
	OPT_DP_SIZE,
	OPT_NO_SPEC,
};

static const struct option ns_long_opts[] = {
	{"model", required_argument, NULL, OPT_MODEL},
	{"adapter", required_argument, NULL, OPT_ADAPTER},
	{"tenant", required_argument, NULL, OPT_TENANT},
	{"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
	{"hash-scheme", required_argument, NULL, OPT_HASH_SCHEME},
	{"no-speculative", no_argument, NULL, OPT_NO_SPEC},
	{NULL, 0, NULL, 0},
};

/* 1 = handled, 0 = not a namespace option, <0 = bad value. */
static int
ns_opt(int ch, struct ns_args *a)
{
	uint64_t v;

	switch (ch) {
	case OPT_MODEL:
		a->model = optarg;
		return 1;
	case OPT_ADAPTER:
		a->adapter = optarg;
		return 1;
	case OPT_TENANT:
		a->tenant = optarg;
		return 1;
	case OPT_BLOCK_SIZE:
		if (parse_num(optarg, UINT32_MAX, &v) < 0 || v == 0) {
			return -EINVAL;
		}
		a->block_size = (uint32_t)v;
		return 1;
	case OPT_HASH_SCHEME:
		a->hash_scheme = optarg;
		return 1;
	default:
		return 0;
	}
}

static void
ns_desc(const struct ns_args *a, struct kvdex_ns_desc *d)
{
	d->model = a->model;
	d->adapter = a->adapter;
	d->tenant = a->tenant;
	d->block_size = a->block_size;
	d->hash_scheme = a->hash_scheme;
}

static const char register_ns_usage[] = "usage: kvdexctl register-ns --model M [--adapter A] "
					"[--tenant T] [--block-size N] [--hash-scheme S]\n";

static int
cmd_register_ns(int argc, char **argv)
{
	struct ns_args a = {.block_size = 16};
	struct kvdex_client *c;
	struct kvdex_ns_desc d;
	uint32_t h;
	int ch, rc;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", ns_long_opts, NULL)) != -1) {
		if (ch == OPT_NO_SPEC || ns_opt(ch, &a) <= 0) {
			return usage_error(register_ns_usage, "bad option");
		}
	}
	if (optind != argc || a.model == NULL) {
		return usage_error(register_ns_usage, "--model is required, no arguments");
	}
	if (client_open(&c) < 0) {
		return 1;
	}
	ns_desc(&a, &d);
	rc = kvdex_ns_register(c, &d, &h);
	if (rc < 0) {
		report(c, "register-ns", rc);
		kvdex_client_destroy(c);
		return 1;
	}
	printf("namespace handle=%u model=%s adapter=%s tenant=%s block_size=%u "
	       "hash_scheme=%s\n",
	       h, a.model, a.adapter != NULL ? a.adapter : "", a.tenant != NULL ? a.tenant : "",
	       a.block_size, a.hash_scheme != NULL ? a.hash_scheme : "opaque");
	for (unsigned i = 0; i < kvdex_client_nservers(c); i++) {
		printf("server %s transport=%s\n", kvdex_client_server_name(c, i),
		       kvdex_client_transport_name(c, i));
	}
	kvdex_client_destroy(c);
	return 0;
}

/* ---- workers ------------------------------------------------------------------------- */

static const char register_worker_usage[] =
	"usage: kvdexctl register-worker --id N --address A [--dp-size N]\n";

static int
cmd_register_worker(int argc, char **argv)
{
	static const struct option lo[] = {
		{"id", required_argument, NULL, OPT_ID},
		{"address", required_argument, NULL, OPT_ADDRESS},
		{"dp-size", required_argument, NULL, OPT_DP_SIZE},
		{NULL, 0, NULL, 0},
	};
	uint64_t id = 0, dp = 1;
	const char *addr = NULL;
	struct kvdex_client *c;
	int ch, rc;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch == OPT_ID && parse_num(optarg, UINT32_MAX, &id) == 0 && id != 0) {
			continue;
		}
		if (ch == OPT_ADDRESS) {
			addr = optarg;
			continue;
		}
		if (ch == OPT_DP_SIZE && parse_num(optarg, 256, &dp) == 0 && dp != 0) {
			continue;
		}
		return usage_error(register_worker_usage, "bad option");
	}
	if (optind != argc || id == 0 || addr == NULL) {
		return usage_error(register_worker_usage, "--id and --address are required");
	}
	if (client_open(&c) < 0) {
		return 1;
	}
	rc = kvdex_worker_register(c, (uint32_t)id, addr, (uint16_t)dp);
	if (rc < 0) {
		report(c, "register-worker", rc);
		kvdex_client_destroy(c);
		return 1;
	}
	printf("worker id=%" PRIu64 " dp_size=%" PRIu64 " address=%s registered\n", id, dp, addr);
	kvdex_client_destroy(c);
	return 0;
}

/* ---- lookup ---------------------------------------------------------------------------- */

static const char lookup_usage[] =
	"usage: kvdexctl lookup --model M [--adapter A] [--tenant T] [--block-size N]\n"
	"                       [--hash-scheme S] [--no-speculative] KEY...\n"
	"  KEY is a block key in decimal or 0x-hex, in chain order\n";

static void
print_lookup(const struct kvdex_lookup_result *r)
{
	printf("nblocks=%u longest=%u holdings=%u round_trips=%u retries=%u fused=%u\n", r->nblocks,
	       r->longest, r->nholdings_total, r->round_trips, r->retries, r->fused);
	for (uint32_t i = 0; i < r->nholdings; i++) {
		const struct kvdex_holding *h = &r->holdings[i];

		printf("worker=%u dp_rank=%u matched=%u gpu=%u host=%u disk=%u remote=%u spec=%u\n",
		       h->worker_id, h->dp_rank, h->matched, h->tier_blocks[KVDEX_GPU],
		       h->tier_blocks[KVDEX_HOST], h->tier_blocks[KVDEX_DISK],
		       h->tier_blocks[KVDEX_REMOTE], h->spec_blocks);
	}
	if (r->best >= 0) {
		const struct kvdex_holding *b = &r->holdings[r->best];

		printf("best worker=%u dp_rank=%u matched=%u\n", b->worker_id, b->dp_rank,
		       b->matched);
	} else {
		printf("best none\n");
	}
}

static int
lookup_run(struct kvdex_client *c, const struct ns_args *a, const uint64_t *keys, size_t n,
	   unsigned flags)
{
	struct kvdex_holding hold[256];
	struct kvdex_lookup_result r = {.holdings = hold, .cap = 256};
	struct kvdex_ns_desc d;
	uint32_t h;
	int rc;

	ns_desc(a, &d);
	rc = kvdex_ns_resolve(c, &d, &h);
	if (rc < 0) {
		report(c, "lookup: namespace", rc);
		return 1;
	}
	rc = kvdex_lookup(c, h, keys, n, flags, &r);
	if (rc < 0) {
		report(c, "lookup", rc);
		return 1;
	}
	print_lookup(&r);
	return 0;
}

static int
cmd_lookup(int argc, char **argv)
{
	struct ns_args a = {.block_size = 16};
	struct kvdex_client *c;
	unsigned flags = 0;
	uint64_t *keys;
	size_t n;
	int ch, rc;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", ns_long_opts, NULL)) != -1) {
		if (ch == OPT_NO_SPEC) {
			flags |= KVDEX_LOOKUP_NO_SPECULATIVE;
		} else if (ns_opt(ch, &a) <= 0) {
			return usage_error(lookup_usage, "bad option");
		}
	}
	n = (size_t)(argc - optind);
	if (a.model == NULL || n == 0 || n > MAX_KEYS) {
		return usage_error(lookup_usage, "--model and at least one KEY are required");
	}
	keys = calloc(n, sizeof(*keys));
	if (keys == NULL) {
		return 1;
	}
	for (size_t k = 0; k < n; k++) {
		if (parse_num(argv[optind + (int)k], UINT64_MAX, &keys[k]) < 0) {
			free(keys);
			return usage_error(lookup_usage, "bad key '%s'", argv[optind + (int)k]);
		}
	}
	if (client_open(&c) < 0) {
		free(keys);
		return 1;
	}
	rc = lookup_run(c, &a, keys, n, flags);
	kvdex_client_destroy(c);
	free(keys);
	return rc;
}

/* ---- publish ------------------------------------------------------------------------------ */

static const char publish_usage[] =
	"usage: kvdexctl publish FILE     (FILE '-' = stdin)\n"
	"lines:\n"
	"  # comment\n"
	"  namespace model=M [adapter=A] [tenant=T] [block_size=16] [hash_scheme=opaque]\n"
	"  worker id=7 address=10.0.0.7:8000 [dp_size=1]\n"
	"  batch worker=7 [dp_rank=0] incarnation=1 seq=1\n"
	"  stored key=K [parent=K] [tier=gpu|host|disk|remote] [spec_ttl_ms=N] [speculative]\n"
	"         [fused] [loc=ADDR:LEN]\n"
	"  removed key=K [tier=...]\n"
	"  cleared [tiers=gpu,host,...]\n"
	"  touched key=K\n"
	"  load worker=7 [dp_rank=0] [queued=N] [running=N] [prefill_tokens=N] "
	"[kv_util=PERMILLE]\n"
	"a batch is sent at the next batch or load line, or at the end of the file\n";

#define PUB_MAX_TOKENS 16

struct pub_state {
	struct kvdex_client *c;
	const char *file;
	unsigned line;
	bool have_ns;
	uint32_t ns;
	bool in_batch;
	unsigned batch_line;
	struct kvdex_publish_hdr hdr;
	struct kvdex_event *ev;
	size_t nev, capev;
};

struct kv {
	char *key;
	char *val; /* NULL for a bare flag */
};

static int pub_err(struct pub_state *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
pub_err(struct pub_state *p, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kvdexctl: %s:%u: ", p->file, p->line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -EINVAL;
}

static int
tokenize(char *s, struct kv *out, unsigned *n)
{
	char *save = NULL;
	char *tok;

	*n = 0;
	for (tok = strtok_r(s, " \t\r\n", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t\r\n", &save)) {
		char *eq = strchr(tok, '=');

		if (*n == PUB_MAX_TOKENS) {
			return -E2BIG;
		}
		out[*n].key = tok;
		out[*n].val = NULL;
		if (eq != NULL) {
			*eq = '\0';
			out[*n].val = eq + 1;
		}
		(*n)++;
	}
	return 0;
}

static int
parse_tier(const char *s)
{
	static const char *const names[] = {"gpu", "host", "disk", "remote"};

	for (int t = 0; t < 4; t++) {
		if (strcmp(s, names[t]) == 0) {
			return t;
		}
	}
	return -EINVAL;
}

static int
kv_num(struct pub_state *p, const struct kv *kv, uint64_t max, uint64_t *out)
{
	if (kv->val == NULL || parse_num(kv->val, max, out) < 0) {
		return pub_err(p, "bad value for %s", kv->key);
	}
	return 0;
}

static int
pub_flush(struct pub_state *p)
{
	struct kvdex_publish_result r;
	int rc;

	if (!p->in_batch) {
		return 0;
	}
	p->in_batch = false;
	rc = kvdex_publish(p->c, &p->hdr, p->ev, p->nev, &r);
	if (rc < 0) {
		fprintf(stderr, "kvdexctl: %s:%u: batch seq=%" PRIu64 ": %s (%s)\n", p->file,
			p->batch_line, p->hdr.seq, strerror(-rc), kvdex_client_last_error(p->c));
		return rc;
	}
	printf("batch worker=%u dp_rank=%u seq=%" PRIu64 " events=%zu: applied=%" PRIu64
	       " ignored=%" PRIu64 "%s%s",
	       p->hdr.worker_id, p->hdr.dp_rank, p->hdr.seq, p->nev, r.applied, r.ignored,
	       r.duplicate ? " duplicate" : "", r.purged ? " purged" : "");
	if (r.gap) {
		printf(" gap expected_seq=%" PRIu64, r.expected_seq);
	}
	printf("\n");
	p->nev = 0;
	return 0;
}

static int
pub_namespace(struct pub_state *p, const struct kv *kv, unsigned n)
{
	struct ns_args a = {.block_size = 16};
	struct kvdex_ns_desc d;
	uint64_t v;
	int rc;

	for (unsigned i = 1; i < n; i++) {
		if (kv[i].val == NULL) {
			return pub_err(p, "expected key=value, got '%s'", kv[i].key);
		}
		if (strcmp(kv[i].key, "model") == 0) {
			a.model = kv[i].val;
		} else if (strcmp(kv[i].key, "adapter") == 0) {
			a.adapter = kv[i].val;
		} else if (strcmp(kv[i].key, "tenant") == 0) {
			a.tenant = kv[i].val;
		} else if (strcmp(kv[i].key, "hash_scheme") == 0) {
			a.hash_scheme = kv[i].val;
		} else if (strcmp(kv[i].key, "block_size") == 0) {
			if (kv_num(p, &kv[i], UINT32_MAX, &v) < 0 || v == 0) {
				return pub_err(p, "bad block_size");
			}
			a.block_size = (uint32_t)v;
		} else {
			return pub_err(p, "unknown namespace field '%s'", kv[i].key);
		}
	}
	if (a.model == NULL) {
		return pub_err(p, "namespace needs model=");
	}
	ns_desc(&a, &d);
	rc = kvdex_ns_register(p->c, &d, &p->ns);
	if (rc < 0) {
		return pub_err(p, "namespace: %s (%s)", strerror(-rc),
			       kvdex_client_last_error(p->c));
	}
	p->have_ns = true;
	printf("namespace handle=%u model=%s\n", p->ns, a.model);
	return 0;
}

static int
pub_worker(struct pub_state *p, const struct kv *kv, unsigned n)
{
	uint64_t id = 0, dp = 1;
	const char *addr = NULL;
	int rc;

	for (unsigned i = 1; i < n; i++) {
		if (strcmp(kv[i].key, "id") == 0) {
			rc = kv_num(p, &kv[i], UINT32_MAX, &id);
		} else if (strcmp(kv[i].key, "dp_size") == 0) {
			rc = kv_num(p, &kv[i], 256, &dp);
		} else if (strcmp(kv[i].key, "address") == 0 && kv[i].val != NULL) {
			addr = kv[i].val;
			rc = 0;
		} else {
			rc = pub_err(p, "unknown worker field '%s'", kv[i].key);
		}
		if (rc < 0) {
			return rc;
		}
	}
	if (id == 0 || addr == NULL || dp == 0) {
		return pub_err(p, "worker needs id= (nonzero) and address=");
	}
	rc = kvdex_worker_register(p->c, (uint32_t)id, addr, (uint16_t)dp);
	if (rc < 0) {
		return pub_err(p, "worker: %s (%s)", strerror(-rc), kvdex_client_last_error(p->c));
	}
	printf("worker id=%" PRIu64 " registered\n", id);
	return 0;
}

static int
pub_batch(struct pub_state *p, const struct kv *kv, unsigned n)
{
	struct kvdex_publish_hdr h = {0};
	bool have_inc = false, have_seq = false;
	uint64_t v;
	int rc = pub_flush(p);

	if (rc < 0) {
		return rc;
	}
	for (unsigned i = 1; i < n; i++) {
		if (strcmp(kv[i].key, "worker") == 0) {
			rc = kv_num(p, &kv[i], UINT32_MAX, &v);
			h.worker_id = (uint32_t)v;
		} else if (strcmp(kv[i].key, "dp_rank") == 0) {
			rc = kv_num(p, &kv[i], UINT16_MAX, &v);
			h.dp_rank = (uint16_t)v;
		} else if (strcmp(kv[i].key, "incarnation") == 0) {
			rc = kv_num(p, &kv[i], UINT64_MAX, &h.incarnation);
			have_inc = true;
		} else if (strcmp(kv[i].key, "seq") == 0) {
			rc = kv_num(p, &kv[i], UINT64_MAX, &h.seq);
			have_seq = true;
		} else {
			rc = pub_err(p, "unknown batch field '%s'", kv[i].key);
		}
		if (rc < 0) {
			return rc;
		}
	}
	if (h.worker_id == 0 || !have_inc || !have_seq) {
		return pub_err(p, "batch needs worker= (nonzero), incarnation= and seq=");
	}
	p->hdr = h;
	p->in_batch = true;
	p->batch_line = p->line;
	p->nev = 0;
	return 0;
}

static int
pub_tiers(struct pub_state *p, char *list, uint8_t *mask)
{
	char *save = NULL;

	*mask = 0;
	for (char *t = strtok_r(list, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		int tier = parse_tier(t);

		if (tier < 0) {
			return pub_err(p, "unknown tier '%s'", t);
		}
		*mask |= (uint8_t)(1u << tier);
	}
	return 0;
}

static int
pub_loc(struct pub_state *p, const char *val, struct kvdex_event *e)
{
	char buf[64];
	char *colon;
	uint64_t len;

	if (val == NULL || strlen(val) >= sizeof(buf)) {
		return pub_err(p, "loc needs ADDR:LEN");
	}
	strcpy(buf, val);
	colon = strchr(buf, ':');
	if (colon == NULL) {
		return pub_err(p, "loc needs ADDR:LEN");
	}
	*colon = '\0';
	if (parse_num(buf, UINT64_MAX, &e->loc_addr) < 0 ||
	    parse_num(colon + 1, UINT32_MAX, &len) < 0) {
		return pub_err(p, "bad loc '%s'", val);
	}
	e->loc_len = (uint32_t)len;
	e->flags |= KVDEX_EVF_LOC;
	return 0;
}

/* One field of an event line. */
static int
pub_event_field(struct pub_state *p, const struct kv *kv, struct kvdex_event *e, bool *have_key)
{
	uint64_t v;
	int t;

	if (strcmp(kv->key, "key") == 0) {
		*have_key = true;
		return kv_num(p, kv, UINT64_MAX, &e->key);
	}
	if (strcmp(kv->key, "parent") == 0 && e->type == KVDEX_EV_STORED) {
		e->flags |= KVDEX_EVF_PARENT;
		return kv_num(p, kv, UINT64_MAX, &e->parent);
	}
	if (strcmp(kv->key, "tier") == 0 && e->type != KVDEX_EV_ALL_CLEARED &&
	    e->type != KVDEX_EV_TOUCHED) {
		t = kv->val != NULL ? parse_tier(kv->val) : -EINVAL;
		if (t < 0) {
			return pub_err(p, "bad tier");
		}
		e->tier = (uint8_t)t;
		return 0;
	}
	if (e->type == KVDEX_EV_STORED && kv->val == NULL && strcmp(kv->key, "speculative") == 0) {
		e->flags |= KVDEX_EVF_SPECULATIVE;
		return 0;
	}
	if (e->type == KVDEX_EV_STORED && kv->val == NULL && strcmp(kv->key, "fused") == 0) {
		e->flags |= KVDEX_EVF_FUSED;
		return 0;
	}
	if (e->type == KVDEX_EV_STORED && strcmp(kv->key, "spec_ttl_ms") == 0) {
		if (kv_num(p, kv, 7500, &v) < 0) {
			return -EINVAL;
		}
		e->spec_ttl_ms = (uint32_t)v;
		return 0;
	}
	if (e->type == KVDEX_EV_STORED && strcmp(kv->key, "loc") == 0) {
		return pub_loc(p, kv->val, e);
	}
	if (e->type == KVDEX_EV_ALL_CLEARED && strcmp(kv->key, "tiers") == 0 && kv->val != NULL) {
		return pub_tiers(p, kv->val, &e->tier_mask);
	}
	return pub_err(p, "unknown field '%s'", kv->key);
}

static int
pub_event(struct pub_state *p, uint8_t type, struct kv *kv, unsigned n)
{
	struct kvdex_event e = {.type = type};
	bool have_key = false;
	int rc;

	if (!p->in_batch) {
		return pub_err(p, "event outside a batch (add a 'batch' line first)");
	}
	if (type != KVDEX_EV_ALL_CLEARED && !p->have_ns) {
		return pub_err(p, "event before any 'namespace' line");
	}
	e.ns = p->have_ns ? p->ns : 0;
	for (unsigned i = 1; i < n; i++) {
		rc = pub_event_field(p, &kv[i], &e, &have_key);
		if (rc < 0) {
			return rc;
		}
	}
	if (type != KVDEX_EV_ALL_CLEARED && !have_key) {
		return pub_err(p, "missing key=");
	}
	if (p->nev == p->capev) {
		size_t ncap = p->capev != 0 ? p->capev * 2 : 64;
		struct kvdex_event *ne = realloc(p->ev, ncap * sizeof(*ne));

		if (ne == NULL) {
			return -ENOMEM;
		}
		p->ev = ne;
		p->capev = ncap;
	}
	p->ev[p->nev++] = e;
	return 0;
}

static int
pub_load(struct pub_state *p, const struct kv *kv, unsigned n)
{
	struct kvdex_load l = {0};
	uint64_t v, worker = 0, rank = 0;
	int rc = pub_flush(p);

	if (rc < 0) {
		return rc;
	}
	for (unsigned i = 1; i < n; i++) {
		const char *k = kv[i].key;

		if (strcmp(k, "worker") == 0) {
			rc = kv_num(p, &kv[i], UINT32_MAX, &worker);
		} else if (strcmp(k, "dp_rank") == 0) {
			rc = kv_num(p, &kv[i], UINT16_MAX, &rank);
		} else if (strcmp(k, "queued") == 0) {
			rc = kv_num(p, &kv[i], UINT32_MAX, &v);
			l.queued = (uint32_t)v;
		} else if (strcmp(k, "running") == 0) {
			rc = kv_num(p, &kv[i], UINT32_MAX, &v);
			l.running = (uint32_t)v;
		} else if (strcmp(k, "prefill_tokens") == 0) {
			rc = kv_num(p, &kv[i], UINT64_MAX, &l.prefill_tokens);
		} else if (strcmp(k, "kv_util") == 0) {
			rc = kv_num(p, &kv[i], 1000, &v);
			l.kv_util_permille = (uint16_t)v;
		} else {
			rc = pub_err(p, "unknown load field '%s'", k);
		}
		if (rc < 0) {
			return rc;
		}
	}
	if (worker == 0) {
		return pub_err(p, "load needs worker= (nonzero)");
	}
	rc = kvdex_worker_load(p->c, (uint32_t)worker, (uint16_t)rank, &l);
	if (rc < 0) {
		return pub_err(p, "load: %s (%s)", strerror(-rc), kvdex_client_last_error(p->c));
	}
	printf("load worker=%" PRIu64 " dp_rank=%" PRIu64 " ok\n", worker, rank);
	return 0;
}

static int
pub_line(struct pub_state *p, char *line)
{
	struct kv kv[PUB_MAX_TOKENS];
	char *hash = strchr(line, '#');
	unsigned n;

	if (hash != NULL) {
		*hash = '\0';
	}
	if (tokenize(line, kv, &n) < 0) {
		return pub_err(p, "too many fields");
	}
	if (n == 0) {
		return 0;
	}
	if (kv[0].val != NULL) {
		return pub_err(p, "expected a directive, got '%s='", kv[0].key);
	}
	if (strcmp(kv[0].key, "namespace") == 0) {
		return pub_namespace(p, kv, n);
	}
	if (strcmp(kv[0].key, "worker") == 0) {
		return pub_worker(p, kv, n);
	}
	if (strcmp(kv[0].key, "batch") == 0) {
		return pub_batch(p, kv, n);
	}
	if (strcmp(kv[0].key, "stored") == 0) {
		return pub_event(p, KVDEX_EV_STORED, kv, n);
	}
	if (strcmp(kv[0].key, "removed") == 0) {
		return pub_event(p, KVDEX_EV_REMOVED, kv, n);
	}
	if (strcmp(kv[0].key, "cleared") == 0) {
		return pub_event(p, KVDEX_EV_ALL_CLEARED, kv, n);
	}
	if (strcmp(kv[0].key, "touched") == 0) {
		return pub_event(p, KVDEX_EV_TOUCHED, kv, n);
	}
	if (strcmp(kv[0].key, "load") == 0) {
		return pub_load(p, kv, n);
	}
	return pub_err(p, "unknown directive '%s'", kv[0].key);
}

static int
pub_run(struct pub_state *p, FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;

	while (getline(&line, &cap, f) >= 0) {
		p->line++;
		rc = pub_line(p, line);
		if (rc < 0) {
			break;
		}
	}
	if (rc == 0) {
		rc = pub_flush(p);
	}
	free(line);
	return rc;
}

static int
cmd_publish(int argc, char **argv)
{
	struct pub_state p = {.file = NULL};
	FILE *f;
	int rc;

	if (argc != 2) {
		return usage_error(publish_usage, "publish takes exactly one FILE");
	}
	p.file = strcmp(argv[1], "-") == 0 ? "<stdin>" : argv[1];
	f = strcmp(argv[1], "-") == 0 ? stdin : fopen(argv[1], "re");
	if (f == NULL) {
		err("%s: %s", argv[1], strerror(errno));
		return 1;
	}
	if (client_open(&p.c) < 0) {
		if (f != stdin) {
			fclose(f);
		}
		return 1;
	}
	rc = pub_run(&p, f);
	if (f != stdin) {
		fclose(f);
	}
	free(p.ev);
	kvdex_client_destroy(p.c);
	return rc < 0 ? 1 : 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

struct command {
	const char *name;
	const char *usage;
	int (*fn)(int argc, char **argv);
};

static int
cmd_stats(int argc, char **argv)
{
	return cmd_per_server(argc, argv, stats_usage, stats_one);
}

static int
cmd_workers(int argc, char **argv)
{
	return cmd_per_server(argc, argv, workers_usage, workers_one);
}

static const struct command commands[] = {
	{"stats", stats_usage, cmd_stats},
	{"workers", workers_usage, cmd_workers},
	{"lookup", lookup_usage, cmd_lookup},
	{"register-ns", register_ns_usage, cmd_register_ns},
	{"register-worker", register_worker_usage, cmd_register_worker},
	{"publish", publish_usage, cmd_publish},
};

static int
parse_global(int argc, char **argv)
{
	static const struct option lo[] = {
		{"servers", required_argument, NULL, 's'},
		{"config", required_argument, NULL, 'c'},
		{"transport", required_argument, NULL, 't'},
		{"auth-token", required_argument, NULL, 'a'},
		{"timeout-ms", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int ch;

	/* '+': stop at the command name. */
	while ((ch = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		switch (ch) {
		case 's':
			g.servers = optarg;
			break;
		case 'c':
			g.config = optarg;
			break;
		case 'a':
			g.auth_token = optarg;
			break;
		case 't':
			if (strcmp(optarg, "auto") == 0) {
				g.transport = KVDEX_TRANSPORT_AUTO;
			} else if (strcmp(optarg, "shm") == 0) {
				g.transport = KVDEX_TRANSPORT_SHM;
			} else if (strcmp(optarg, "tcp") == 0) {
				g.transport = KVDEX_TRANSPORT_TCP;
			} else if (strcmp(optarg, "verbs") == 0) {
				g.transport = KVDEX_TRANSPORT_VERBS;
			} else {
				return usage_error(main_usage, "bad --transport '%s'", optarg);
			}
			break;
		case 'T':
			if (parse_num(optarg, 3600000, &v) < 0 || v == 0) {
				return usage_error(main_usage, "bad --timeout-ms '%s'", optarg);
			}
			g.timeout_ms = (int)v;
			break;
		case 'h':
			fputs(main_usage, stdout);
			return -1;
		default:
			fputs(main_usage, stderr);
			return EXIT_USAGE;
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *name;
	int rc;

	rc = parse_global(argc, argv);
	if (rc != 0) {
		return rc < 0 ? 0 : rc;
	}
	if (optind >= argc) {
		return usage_error(main_usage, "missing COMMAND");
	}
	name = argv[optind];
	argc -= optind;
	argv += optind;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(name, commands[i].name) != 0) {
			continue;
		}
		if (wants_help(argc, argv)) {
			fputs(commands[i].usage, stdout);
			if (commands[i].usage == lookup_usage ||
			    commands[i].usage == register_ns_usage) {
				fputs(ns_opts_usage, stdout);
			}
			return 0;
		}
		if (g.servers == NULL && g.config == NULL) {
			return usage_error(main_usage, "--servers or --config is required");
		}
		return commands[i].fn(argc, argv);
	}
	return usage_error(main_usage, "unknown command '%s'", name);
}

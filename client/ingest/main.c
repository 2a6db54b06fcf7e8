/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-ingest: subscribe to vLLM / SGLang KV-event publishers (ZMQ) and publish their
 * block events to the kvdex index through libkvdex.
 *
 * Design: one thread, one zmq_poll loop over a signalfd, every engine's SUB socket and
 * the DEALER sockets of replays in flight. Timers (replay deadlines, silence, idle replay
 * polls, purges of removed engines, stats) are checked on every wakeup; the poll sleeps at
 * most 100 ms. The memory servers stay the only mutators of the index: this process is
 * one more libkvdex client, and msgpack decoding never runs on a server's writer thread.
 *
 * Signals: SIGHUP reloads the configuration file (engines added, removed, changed);
 * SIGUSR1 logs the counters and rewrites the stats file; SIGTERM/SIGINT exit cleanly.
 * Removed engines are purged after removal-grace-ms even across reloads; at exit the
 * pending purges are not run (the entries stay until a new run purges them at start).
 *
 * Exit: 0 after SIGTERM/SIGINT, 1 on a runtime failure, 2 on a usage or config error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "client/ingest/ingest.h"
#include "common/log.h"

#define LOG_COMP "ingest"
#define POLL_MAX_MS 100
#define MSGS_PER_WAKEUP 256

int kvdex_ingest_bench(int argc, char **argv);

static const char usage_text[] =
	"usage: kvdex-ingest --config FILE [options]\n"
	"       kvdex-ingest --bench N [--servers S] [--bench-blocks B]\n"
	"Subscribe to vLLM/SGLang KV-event publishers and apply their events to kvdex.\n"
	"  --config FILE        engines and global keys (see docs/INGEST.md); SIGHUP reloads\n"
	"  --servers LIST       kvdex servers, comma-separated [name=]host:port|unix:/path\n"
	"                       (overrides the file's servers)\n"
	"  --log-level LEVEL    err|warn|notice|info|debug (default notice)\n"
	"  --ready-file PATH    written (pid=...) once every engine is subscribed\n"
	"  --stats-file PATH    counters as name=value, rewritten every stats interval and on "
	"SIGUSR1\n"
	"  --stats-interval S   seconds between counter logs (info level); default 60, 0 = off\n"
	"  --bench N            measure decode (and, with --servers, decode + publish) over N "
	"block events\n"
	"  -h, --help           this text\n"
	"Exit: 0 after SIGTERM/SIGINT, 1 runtime failure, 2 usage or config error.\n";

struct flags {
	const char *config;
	const char *servers;
	const char *log_level;
	const char *ready_file;
	const char *stats_file;
	const char *stats_interval;
};

static int
apply_flags(struct kvdex_ingest_cfg *cfg, const struct flags *fl, char *err, size_t errlen)
{
	const char *keys[] = {"servers", "log-level", "ready-file", "stats-file", "stats-interval"};
	const char *vals[] = {fl->servers, fl->log_level, fl->ready_file, fl->stats_file,
			      fl->stats_interval};

	for (int i = 0; i < 5; i++) {
		if (vals[i] != NULL &&
		    kvdex_ingest_cfg_set(cfg, keys[i], vals[i], err, errlen) != 0) {
			return -EINVAL;
		}
	}
	return 0;
}

static int
load_config(struct kvdex_ingest_cfg *cfg, const struct flags *fl, char *err, size_t errlen)
{
	int rc;

	kvdex_ingest_cfg_defaults(cfg);
	rc = kvdex_ingest_cfg_load(cfg, fl->config, err, errlen);
	if (rc == 0) {
		rc = apply_flags(cfg, fl, err, errlen);
	}
	if (rc == 0) {
		rc = kvdex_ingest_cfg_check(cfg, err, errlen);
	}
	if (rc != 0) {
		kvdex_ingest_cfg_fini(cfg);
	}
	return rc;
}

/* ---- stats ---------------------------------------------------------------------------- */

static void
ctr_write(FILE *f, const char *prefix, const struct kvdex_ingest_counters *c)
{
#define KVDEX_INGEST_CTR_PRINT(n) fprintf(f, "%s" #n "=%" PRIu64 "\n", prefix, c->n);
	KVDEX_INGEST_COUNTERS(KVDEX_INGEST_CTR_PRINT)
#undef KVDEX_INGEST_CTR_PRINT
}

void
kvdex_ingest_stats_write(struct kvdex_ingest *ing, FILE *f)
{
	char prefix[96];

	fprintf(f, "engines=%u\nevents_per_s=%.0f\n", ing->nengines, ing->events_per_s);
	ctr_write(f, "", &ing->ctr);
	for (unsigned i = 0; i < ing->nengines; i++) {
		const struct kvdex_ingest_engine *e = ing->engines[i];

		snprintf(prefix, sizeof(prefix), "engine.%s.", e->cfg.name);
		fprintf(f, "%sstate=%s\n%slast_seq=%" PRIu64 "\n%shave_seq=%d\n%sbuffered=%u\n",
			prefix,
			e->zombie			  ? "removed"
			: e->state == KVDEX_ENG_REPLAYING ? "replaying"
							  : "live",
			prefix, e->last_seq, prefix, e->have_seq, prefix, e->nbuf - e->head);
		fprintf(f, "%sincarnation=%" PRIu64 "\n%spub_seq=%" PRIu64 "\n", prefix,
			e->incarnation, prefix, e->pub_seq);
		ctr_write(f, prefix, &e->ctr);
	}
}

static int
write_file_atomic(const char *path, struct kvdex_ingest *ing, bool ready)
{
	char tmp[300];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL) {
		return -errno;
	}
	if (ready) {
		fprintf(f, "pid=%d\n", (int)getpid());
	} else {
		kvdex_ingest_stats_write(ing, f);
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		return -errno;
	}
	return 0;
}

static void
stats_tick(struct kvdex_ingest *ing, uint64_t now, bool force)
{
	uint64_t dt = now - ing->rate_t0_ms;
	uint64_t blocks =
		ing->ctr.blocks_stored + ing->ctr.blocks_removed + ing->ctr.events_cleared;
	const struct kvdex_ingest_counters *c = &ing->ctr;

	if (!force && (ing->cfg.stats_interval_ms == 0 || dt < ing->cfg.stats_interval_ms)) {
		return;
	}
	if (dt > 0) {
		ing->events_per_s = (double)(blocks - ing->rate_blocks0) * 1000.0 / (double)dt;
	}
	ing->rate_t0_ms = now;
	ing->rate_blocks0 = blocks;
	KVDEX_LOG(force ? KVDEX_LOG_LVL_NOTICE : KVDEX_LOG_LVL_INFO, LOG_COMP,
		  "engines %u batches %" PRIu64 " blocks stored %" PRIu64 " removed %" PRIu64
		  " clears %" PRIu64 " decode_errors %" PRIu64 " gaps %" PRIu64
		  " replays_ok %" PRIu64 " replay_failed %" PRIu64 " restarts %" PRIu64
		  " purges %" PRIu64 " publish_errors %" PRIu64 " events/s %.0f",
		  ing->nengines, c->batches, c->blocks_stored, c->blocks_removed, c->events_cleared,
		  c->decode_errors, c->gaps, c->replays_ok, c->replay_failed, c->restarts,
		  c->purges, c->publish_errors, ing->events_per_s);
	if (ing->cfg.stats_file[0] != '\0') {
		write_file_atomic(ing->cfg.stats_file, ing, false);
	}
}

/* ---- engines and reload ----------------------------------------------------------------- */

static int
engines_add(struct kvdex_ingest *ing, struct kvdex_ingest_engine *e)
{
	struct kvdex_ingest_engine **p;

	p = realloc(ing->engines, (ing->nengines + 1) * sizeof(*p));
	if (p == NULL) {
		return -ENOMEM;
	}
	ing->engines = p;
	ing->engines[ing->nengines++] = e;
	return 0;
}

static void
engines_del(struct kvdex_ingest *ing, unsigned i)
{
	kvdex_ingest_engine_destroy(ing->engines[i]);
	ing->engines[i] = ing->engines[--ing->nengines];
}

static struct kvdex_ingest_engine *
find_live(struct kvdex_ingest *ing, const char *name)
{
	for (unsigned i = 0; i < ing->nengines; i++) {
		if (!ing->engines[i]->zombie && strcmp(ing->engines[i]->cfg.name, name) == 0) {
			return ing->engines[i];
		}
	}
	return NULL;
}

static const struct kvdex_ingest_engine_cfg *
find_cfg(const struct kvdex_ingest_cfg *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->nengines; i++) {
		if (strcmp(cfg->engines[i].name, name) == 0) {
			return &cfg->engines[i];
		}
	}
	return NULL;
}

/* A new engine publishing as a retired one's (worker, dp_rank) makes its purge moot (the
 * new one starts with a new incarnation) and would race it: drop the retired one. */
static void
drop_zombies_like(struct kvdex_ingest *ing, const struct kvdex_ingest_engine_cfg *c)
{
	for (unsigned i = 0; i < ing->nengines;) {
		struct kvdex_ingest_engine *z = ing->engines[i];

		if (z->zombie && z->cfg.worker == c->worker &&
		    (c->dp_rank < 0 || !z->have_ident || z->dp_rank == c->dp_rank)) {
			engines_del(ing, i);
			continue;
		}
		i++;
	}
}

static int
engine_start(struct kvdex_ingest *ing, const struct kvdex_ingest_engine_cfg *c)
{
	struct kvdex_ingest_engine *e;
	int rc;

	drop_zombies_like(ing, c);
	rc = kvdex_ingest_engine_create(ing, c, &e);
	if (rc != 0) {
		return rc;
	}
	rc = engines_add(ing, e);
	if (rc != 0) {
		kvdex_ingest_engine_destroy(e);
	}
	return rc;
}

static void
reload_engines(struct kvdex_ingest *ing, const struct kvdex_ingest_cfg *ncfg)
{
	const struct kvdex_ingest_engine_cfg *nc;
	struct kvdex_ingest_engine *e;

	for (unsigned i = 0; i < ing->nengines; i++) {
		e = ing->engines[i];
		if (e->zombie) {
			continue;
		}
		nc = find_cfg(ncfg, e->cfg.name);
		if (nc == NULL) {
			KVDEX_LOG_NOTICE(LOG_COMP, "engine %s removed: purge in %" PRIu64 " ms",
					 e->cfg.name, ncfg->removal_grace_ms);
			kvdex_ingest_engine_retire(e, ncfg->removal_grace_ms);
		} else if (!kvdex_ingest_engine_cfg_same(&e->cfg, nc)) {
			KVDEX_LOG_NOTICE(LOG_COMP, "engine %s changed: re-subscribing",
					 e->cfg.name);
			kvdex_ingest_engine_retire(e, 0); /* its successor purges at start */
		}
	}
	for (unsigned i = 0; i < ncfg->nengines; i++) {
		nc = &ncfg->engines[i];
		if (find_live(ing, nc->name) == NULL && engine_start(ing, nc) != 0) {
			KVDEX_LOG_ERR(LOG_COMP, "%s: engine %s not started", nc->src, nc->name);
		}
	}
}

static void
reload(struct kvdex_ingest *ing, const struct flags *fl)
{
	struct kvdex_ingest_cfg ncfg;
	char err[512];

	if (load_config(&ncfg, fl, err, sizeof(err)) != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "reload failed, keeping the old configuration: %s", err);
		return;
	}
	if (strcmp(ncfg.servers, ing->cfg.servers) != 0 ||
	    strcmp(ncfg.auth_token, ing->cfg.auth_token) != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "servers or auth token changed: restart kvdex-ingest to "
					 "apply (keeping the old ones)");
		memcpy(ncfg.servers, ing->cfg.servers, sizeof(ncfg.servers));
		memcpy(ncfg.auth_token, ing->cfg.auth_token, sizeof(ncfg.auth_token));
	}
	if (ncfg.log_level >= 0) {
		kvdex_log_set_level(ncfg.log_level);
	}
	reload_engines(ing, &ncfg);
	/* Engines keep their own copy of their line; swap the globals. */
	kvdex_ingest_cfg_fini(&ing->cfg);
	ing->cfg = ncfg;
	KVDEX_LOG_NOTICE(LOG_COMP, "configuration reloaded: %u engines", ncfg.nengines);
}

/* Retired engines whose grace period is over: clear their entries and forget them. */
static void
reap_zombies(struct kvdex_ingest *ing, uint64_t now)
{
	for (unsigned i = 0; i < ing->nengines;) {
		struct kvdex_ingest_engine *e = ing->engines[i];

		if (e->zombie && now >= e->purge_at_ms) {
			KVDEX_INGEST_CTR(e, purges);
			KVDEX_INGEST_CTR(e, purges_removed);
			kvdex_ingest_engine_clear_all(e);
			engines_del(ing, i);
			continue;
		}
		i++;
	}
}

/* ---- the loop ------------------------------------------------------------------------- */

static int
signals_setup(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* Returns 1 to stop. */
static int
on_signals(struct kvdex_ingest *ing, int sfd, const struct flags *fl)
{
	struct signalfd_siginfo si;
	int stop = 0;

	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			reload(ing, fl);
			break;
		case SIGUSR1:
			stats_tick(ing, kvdex_ingest_now_ms(), true);
			break;
		default: /* SIGTERM, SIGINT */
			stop = 1;
			break;
		}
	}
	return stop;
}

static int
run_loop(struct kvdex_ingest *ing, int sfd, const struct flags *fl)
{
	zmq_pollitem_t *items = NULL;
	struct kvdex_ingest_engine **owner = NULL;
	unsigned cap = 0, n;
	uint64_t now;

	for (;;) {
		if (cap < 1 + 2 * ing->nengines) {
			cap = 2 * (1 + 2 * ing->nengines);
			items = realloc(items, cap * sizeof(*items));
			owner = realloc(owner, cap * sizeof(*owner));
			if (items == NULL || owner == NULL) {
				KVDEX_LOG_ERR(LOG_COMP, "out of memory");
				free(items);
				free(owner);
				return 1;
			}
		}
		items[0] = (zmq_pollitem_t){.fd = sfd, .events = ZMQ_POLLIN};
		n = 1;
		for (unsigned i = 0; i < ing->nengines; i++) {
			struct kvdex_ingest_engine *e = ing->engines[i];

			if (e->sub != NULL) {
				owner[n] = e;
				items[n++] =
					(zmq_pollitem_t){.socket = e->sub, .events = ZMQ_POLLIN};
			}
			if (e->dealer != NULL) {
				owner[n] = e;
				items[n++] =
					(zmq_pollitem_t){.socket = e->dealer, .events = ZMQ_POLLIN};
			}
		}
		if (zmq_poll(items, (int)n, POLL_MAX_MS) < 0 && errno != EINTR) {
			KVDEX_LOG_ERR(LOG_COMP, "zmq_poll: %s", zmq_strerror(errno));
			break;
		}
		/* Sockets first: a reload may free engines the items point at. */
		for (unsigned i = 1; i < n; i++) {
			if (!(items[i].revents & ZMQ_POLLIN)) {
				continue;
			}
			if (items[i].socket == owner[i]->sub) {
				kvdex_ingest_engine_on_sub(owner[i], MSGS_PER_WAKEUP);
			} else if (items[i].socket == owner[i]->dealer) {
				kvdex_ingest_engine_on_replay(owner[i], MSGS_PER_WAKEUP);
			}
		}
		now = kvdex_ingest_now_ms();
		for (unsigned i = 0; i < ing->nengines; i++) {
			kvdex_ingest_engine_tick(ing->engines[i], now);
		}
		reap_zombies(ing, now);
		stats_tick(ing, now, false);
		if ((items[0].revents & ZMQ_POLLIN) && on_signals(ing, sfd, fl)) {
			break;
		}
	}
	free(items);
	free(owner);
	return 0;
}

/* ---- startup ------------------------------------------------------------------------ */

static int
client_create(struct kvdex_ingest *ing)
{
	struct kvdex_client_opts o;
	int rc;

	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = ing->cfg.servers;
	o.auth_token = ing->cfg.auth_token[0] ? ing->cfg.auth_token : NULL;
	o.transport = (enum kvdex_transport)ing->cfg.transport;
	o.timeout_ms = ing->cfg.timeout_ms;
	o.cluster_epoch = ing->cfg.cluster_epoch;
	o.client_name = "kvdex-ingest";
	rc = kvdex_client_create(&o, &ing->client);
	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "connecting to %s: %s", ing->cfg.servers, strerror(-rc));
	}
	return rc;
}

static void
lib_log_sink(int level, const char *component, const char *msg, void *arg)
{
	KVDEX_LOG(level, component, "%s", msg);
}

static void
ingest_fini(struct kvdex_ingest *ing)
{
	for (unsigned i = 0; i < ing->nengines; i++) {
		kvdex_ingest_engine_destroy(ing->engines[i]);
	}
	free(ing->engines);
	free(ing->ev);
	kvdex_ingest_batch_fini(&ing->batch);
	kvdex_client_destroy(ing->client);
	if (ing->zctx != NULL) {
		zmq_ctx_term(ing->zctx);
	}
	kvdex_ingest_cfg_fini(&ing->cfg);
}

static int
parse_flags(int argc, char **argv, struct flags *fl)
{
	static const struct option lo[] = {
		{"config", required_argument, NULL, 'c'},
		{"servers", required_argument, NULL, 's'},
		{"log-level", required_argument, NULL, 'l'},
		{"ready-file", required_argument, NULL, 'r'},
		{"stats-file", required_argument, NULL, 'f'},
		{"stats-interval", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'c':
			fl->config = optarg;
			break;
		case 's':
			fl->servers = optarg;
			break;
		case 'l':
			fl->log_level = optarg;
			break;
		case 'r':
			fl->ready_file = optarg;
			break;
		case 'f':
			fl->stats_file = optarg;
			break;
		case 'i':
			fl->stats_interval = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		default:
			fputs(usage_text, stderr);
			return -EINVAL;
		}
	}
	if (optind != argc || fl->config == NULL) {
		fprintf(stderr, "kvdex-ingest: %s\n%s",
			optind != argc ? "unexpected argument" : "--config is required",
			usage_text);
		return -EINVAL;
	}
	return 0;
}

static int
startup(struct kvdex_ingest *ing, const struct flags *fl)
{
	for (unsigned i = 0; i < ing->cfg.nengines; i++) {
		if (engine_start(ing, &ing->cfg.engines[i]) != 0) {
			return -EINVAL;
		}
	}
	if (ing->cfg.ready_file[0] != '\0' &&
	    write_file_atomic(ing->cfg.ready_file, ing, true) != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "writing %s: %s", ing->cfg.ready_file, strerror(errno));
		return -EIO;
	}
	KVDEX_LOG_NOTICE(LOG_COMP, "ready: %u engines, servers %s", ing->nengines,
			 ing->cfg.servers);
	return 0;
}

int
main(int argc, char **argv)
{
	static struct kvdex_ingest ing;
	struct flags fl = {0};
	char err[512];
	int sfd, rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--bench") == 0) {
			return kvdex_ingest_bench(argc, argv);
		}
	}
	kvdex_log_set_level(KVDEX_LOG_LVL_NOTICE);
	if (parse_flags(argc, argv, &fl) != 0) {
		return 2;
	}
	if (load_config(&ing.cfg, &fl, err, sizeof(err)) != 0) {
		fprintf(stderr, "kvdex-ingest: %s\n", err);
		return 2;
	}
	if (ing.cfg.log_level >= 0) {
		kvdex_log_set_level(ing.cfg.log_level);
	}
	kvdex_set_log_fn(lib_log_sink, NULL, KVDEX_LOG_LVL_WARN);
	sfd = signals_setup();
	ing.zctx = zmq_ctx_new();
	if (sfd < 0 || ing.zctx == NULL || client_create(&ing) != 0) {
		rc = 1;
		goto out;
	}
	ing.rate_t0_ms = kvdex_ingest_now_ms();
	rc = startup(&ing, &fl) == 0 ? run_loop(&ing, sfd, &fl) : 1;
	if (rc == 0) {
		KVDEX_LOG_NOTICE(LOG_COMP, "exiting");
		stats_tick(&ing, kvdex_ingest_now_ms(), true);
	}
out:
	ingest_fini(&ing);
	if (sfd >= 0) {
		close(sfd);
	}
	return rc;
}

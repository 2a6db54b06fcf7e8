/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-ingest configuration (see config.h and docs/INGEST.md).
 *
 * Global keys go through one table, so a flag (--servers) and a file line (servers = ...)
 * accept the same values. Engine lines are `engine NAME key=value ...`; each attribute has
 * a small parser. Errors name the source (file:line) and the offending key.
 */
#include "client/ingest/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfgline.h"
#include "common/log.h"
#include "kvdex/kvdex.h"

static int __attribute__((format(printf, 3, 4)))
cfg_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

void
kvdex_ingest_cfg_defaults(struct kvdex_ingest_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->transport = KVDEX_TRANSPORT_AUTO;
	cfg->timeout_ms = 2000;
	cfg->log_level = -1;
	cfg->silence_grace_ms = 120000;
	cfg->removal_grace_ms = 30000;
	cfg->replay_timeout_ms = 2000;
	cfg->idle_replay_ms = 10000;
	cfg->stats_interval_ms = 60000;
	cfg->max_buffered_batches = 10000;
	cfg->max_array = 1u << 20;
	cfg->max_payload_bytes = 64u << 20;
	cfg->max_publish_events = 16384;
}

static int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s == '\0' || *s == '-') {
		return -EINVAL;
	}
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno != 0 || *end != '\0' || v < min || v > max) {
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int
copy_str(char *dst, size_t cap, const char *val)
{
	size_t n = strlen(val);

	if (n >= cap) {
		return -EINVAL;
	}
	memcpy(dst, val, n + 1);
	return 0;
}

static int
read_token_file(const char *path, char *dst, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL) {
		return -errno;
	}
	n = fread(dst, 1, cap - 1, f);
	fclose(f);
	dst[n] = '\0';
	while (n > 0 && isspace((unsigned char)dst[n - 1])) {
		dst[--n] = '\0';
	}
	return n > 0 ? 0 : -EINVAL;
}

/* "0.5" seconds (stats-interval) → ms. */
static int
parse_seconds_ms(const char *s, uint64_t *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 86400.0 * 365) {
		return -EINVAL;
	}
	*ms = (uint64_t)(v * 1000.0 + 0.5);
	return 0;
}

static int
parse_transport(const char *s, int *t)
{
	static const char *const names[] = {"auto", "shm", "tcp", "verbs"};

	for (int i = 0; i < 4; i++) {
		if (strcmp(s, names[i]) == 0) {
			*t = i;
			return 0;
		}
	}
	return -EINVAL;
}

struct num_key {
	const char *name;
	size_t off;
	uint64_t min;
	uint64_t max;
	unsigned width; /* 4 or 8 */
};

#define GOFF(f) offsetof(struct kvdex_ingest_cfg, f)

static const struct num_key num_keys[] = {
	{"cluster-epoch", GOFF(cluster_epoch), 0, UINT64_MAX, 8},
	{"idle-replay-ms", GOFF(idle_replay_ms), 0, 86400000, 8},
	{"max-array", GOFF(max_array), 16, 1u << 30, 4},
	{"max-buffered-batches", GOFF(max_buffered_batches), 1, 1u << 24, 4},
	{"max-payload-bytes", GOFF(max_payload_bytes), 64, 1u << 30, 4},
	{"max-publish-events", GOFF(max_publish_events), 1, 1u << 20, 4},
	{"removal-grace-ms", GOFF(removal_grace_ms), 0, 86400000ull * 30, 8},
	{"replay-timeout-ms", GOFF(replay_timeout_ms), 1, 3600000, 8},
	{"silence-grace-ms", GOFF(silence_grace_ms), 0, 86400000ull * 30, 8},
	{"timeout-ms", GOFF(timeout_ms), 1, 3600000, 4},
};

static int
set_num(struct kvdex_ingest_cfg *cfg, const struct num_key *k, const char *val)
{
	uint64_t v;

	if (parse_u64(val, k->min, k->max, &v) != 0) {
		return -EINVAL;
	}
	if (k->width == 8) {
		*(uint64_t *)((char *)cfg + k->off) = v;
	} else {
		*(uint32_t *)((char *)cfg + k->off) = (uint32_t)v;
	}
	return 0;
}

/* Canonical key: lower case, '_' → '-'. */
static void
canon_key(const char *in, char *out, size_t cap)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < cap; i++) {
		out[i] = in[i] == '_' ? '-' : (char)tolower((unsigned char)in[i]);
	}
	out[i] = '\0';
}

static int
set_str_key(struct kvdex_ingest_cfg *cfg, const char *k, const char *val, bool *known)
{
	*known = true;
	if (strcmp(k, "servers") == 0 || strcmp(k, "server") == 0) {
		/* repeatable in files: "server = a" lines accumulate */
		size_t n = strlen(cfg->servers);

		if (strcmp(k, "server") == 0 && n > 0) {
			if (n + 1 + strlen(val) >= sizeof(cfg->servers)) {
				return -EINVAL;
			}
			cfg->servers[n] = ',';
			strcpy(cfg->servers + n + 1, val);
			return 0;
		}
		return copy_str(cfg->servers, sizeof(cfg->servers), val);
	}
	if (strcmp(k, "auth-token") == 0) {
		return copy_str(cfg->auth_token, sizeof(cfg->auth_token), val);
	}
	if (strcmp(k, "auth-token-file") == 0) {
		return read_token_file(val, cfg->auth_token, sizeof(cfg->auth_token));
	}
	if (strcmp(k, "stats-file") == 0) {
		return copy_str(cfg->stats_file, sizeof(cfg->stats_file), val);
	}
	if (strcmp(k, "ready-file") == 0) {
		return copy_str(cfg->ready_file, sizeof(cfg->ready_file), val);
	}
	if (strcmp(k, "transport") == 0) {
		return parse_transport(val, &cfg->transport);
	}
	if (strcmp(k, "log-level") == 0) {
		int lvl = kvdex_log_parse_level(val);

		if (lvl < 0) {
			return -EINVAL;
		}
		cfg->log_level = lvl;
		return 0;
	}
	if (strcmp(k, "stats-interval") == 0) {
		return parse_seconds_ms(val, &cfg->stats_interval_ms);
	}
	*known = false;
	return -EINVAL;
}

int
kvdex_ingest_cfg_set(struct kvdex_ingest_cfg *cfg, const char *key, const char *val, char *err,
		     size_t errlen)
{
	char k[64];
	bool known;
	int rc;

	canon_key(key, k, sizeof(k));
	for (size_t i = 0; i < sizeof(num_keys) / sizeof(num_keys[0]); i++) {
		if (strcmp(k, num_keys[i].name) == 0) {
			if (set_num(cfg, &num_keys[i], val) != 0) {
				return cfg_err(err, errlen, "%s: bad value '%s' (%llu..%llu)", k,
					       val, (unsigned long long)num_keys[i].min,
					       (unsigned long long)num_keys[i].max);
			}
			return 0;
		}
	}
	rc = set_str_key(cfg, k, val, &known);
	if (!known) {
		return cfg_err(err, errlen, "unknown key '%s'", key);
	}
	if (rc != 0) {
		return cfg_err(err, errlen, "%s: bad value '%s'", k, val);
	}
	return 0;
}

/* ---- engine lines ---------------------------------------------------------------------- */

int
kvdex_ingest_tier_parse(const char *s, uint8_t *tier)
{
	static const char *const names[] = {"gpu", "host", "disk", "remote"};

	for (uint8_t i = 0; i < 4; i++) {
		if (strcasecmp(s, names[i]) == 0 || (s[0] == '0' + i && s[1] == '\0')) {
			*tier = i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
kvdex_ingest_tier_name(unsigned tier)
{
	static const char *const names[] = {"gpu", "host", "disk", "remote"};

	return tier < 4 ? names[tier] : "?";
}

/* Split "a,b,c" in place; calls fn on each non-empty item. */
static int
for_each_item(char *list, int (*fn)(struct kvdex_ingest_engine_cfg *, char *),
	      struct kvdex_ingest_engine_cfg *e)
{
	char *save = NULL;
	int rc;

	for (char *it = strtok_r(list, ",", &save); it != NULL; it = strtok_r(NULL, ",", &save)) {
		rc = fn(e, it);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

static int
tiermap_item(struct kvdex_ingest_engine_cfg *e, char *it)
{
	char *colon = strchr(it, ':');
	uint8_t tier;

	if (colon == NULL || colon == it || e->ntiers >= KVDEX_INGEST_MAX_TIERMAP) {
		return -EINVAL;
	}
	*colon = '\0';
	if (kvdex_ingest_tier_parse(colon + 1, &tier) != 0 ||
	    copy_str(e->tiers[e->ntiers].medium, sizeof(e->tiers[0].medium), it) != 0) {
		return -EINVAL;
	}
	if (strcmp(it, "*") == 0) {
		e->unknown_tier = tier;
		return 0;
	}
	e->tiers[e->ntiers++].tier = tier;
	return 0;
}

static int
loramap_item(struct kvdex_ingest_engine_cfg *e, char *it)
{
	char *colon = strchr(it, ':');
	uint64_t id;

	if (colon == NULL || e->nloras >= KVDEX_INGEST_MAX_LORAMAP) {
		return -EINVAL;
	}
	*colon = '\0';
	if (parse_u64(it, 0, INT64_MAX, &id) != 0 || colon[1] == '\0') {
		return -EINVAL;
	}
	e->loras[e->nloras].id = (int64_t)id;
	return copy_str(e->loras[e->nloras++].name, sizeof(e->loras[0].name), colon + 1);
}

static int
clear_item(struct kvdex_ingest_engine_cfg *e, char *it)
{
	uint8_t tier;

	if (strcmp(it, "all") == 0) {
		e->clear_mask = 0xf;
		return 0;
	}
	if (kvdex_ingest_tier_parse(it, &tier) != 0) {
		return -EINVAL;
	}
	e->clear_mask |= (uint8_t)(1u << tier);
	return 0;
}

static int
group_item(struct kvdex_ingest_engine_cfg *e, char *it)
{
	uint64_t g;

	if (strcmp(it, "all") == 0) {
		e->groups = ~0ull;
		return 0;
	}
	if (parse_u64(it, 0, 63, &g) != 0) {
		return -EINVAL;
	}
	e->groups |= 1ull << g;
	return 0;
}

static int
parse_bool(const char *v, bool *b)
{
	if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
		*b = true;
	} else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
		*b = false;
	} else {
		return -EINVAL;
	}
	return 0;
}

#define EOFF(f)                                                                                    \
	offsetof(struct kvdex_ingest_engine_cfg, f),                                               \
		sizeof(((struct kvdex_ingest_engine_cfg *)0)->f)

static const struct {
	const char *name;
	size_t off;
	size_t size;
} engine_strs[] = {
	{"address", EOFF(address)},   {"adapter", EOFF(adapter)},
	{"endpoint", EOFF(endpoint)}, {"hash-scheme", EOFF(hash_scheme)},
	{"model", EOFF(model)},	      {"replay", EOFF(replay)},
	{"tenant", EOFF(tenant)},     {"topic", EOFF(topic)},
};

static int
engine_num(struct kvdex_ingest_engine_cfg *e, const char *k, const char *v, bool *known)
{
	uint64_t n;

	*known = true;
	if (strcmp(k, "block-size") == 0) {
		if (parse_u64(v, 1, UINT32_MAX, &n) != 0) {
			return -EINVAL;
		}
		e->block_size = (uint32_t)n;
	} else if (strcmp(k, "worker") == 0) {
		if (parse_u64(v, 1, UINT32_MAX, &n) != 0) {
			return -EINVAL;
		}
		e->worker = (uint32_t)n;
	} else if (strcmp(k, "dp-rank") == 0) {
		if (strcmp(v, "batch") == 0) {
			e->dp_rank = KVDEX_INGEST_DP_FROM_BATCH;
			return 0;
		}
		if (parse_u64(v, 0, 255, &n) != 0) {
			return -EINVAL;
		}
		e->dp_rank = (int32_t)n;
	} else if (strcmp(k, "dp-size") == 0) {
		if (parse_u64(v, 1, 256, &n) != 0) {
			return -EINVAL;
		}
		e->dp_size = (uint16_t)n;
	} else {
		*known = false;
		return -EINVAL;
	}
	return 0;
}

static int
engine_attr(struct kvdex_ingest_engine_cfg *e, const char *k, char *v, bool *known)
{
	int rc;

	for (size_t i = 0; i < sizeof(engine_strs) / sizeof(engine_strs[0]); i++) {
		if (strcmp(k, engine_strs[i].name) == 0) {
			*known = true;
			return copy_str((char *)e + engine_strs[i].off, engine_strs[i].size, v);
		}
	}
	rc = engine_num(e, k, v, known);
	if (*known) {
		return rc;
	}
	*known = true;
	if (strcmp(k, "tier-map") == 0) {
		e->ntiers = 0;
		return for_each_item(v, tiermap_item, e);
	}
	if (strcmp(k, "lora-map") == 0) {
		e->nloras = 0;
		return for_each_item(v, loramap_item, e);
	}
	if (strcmp(k, "clear-tiers") == 0) {
		e->clear_mask = 0;
		return for_each_item(v, clear_item, e);
	}
	if (strcmp(k, "groups") == 0) {
		e->groups = 0;
		return for_each_item(v, group_item, e);
	}
	if (strcmp(k, "bind") == 0) {
		return parse_bool(v, &e->bind);
	}
	*known = false;
	return -EINVAL;
}

static void
engine_defaults(struct kvdex_ingest_engine_cfg *e)
{
	static const struct kvdex_ingest_tiermap defmap[] = {
		{"GPU", KVDEX_GPU},
		{"CPU", KVDEX_HOST},
		{"DISK", KVDEX_DISK},
	};

	memset(e, 0, sizeof(*e));
	e->dp_rank = KVDEX_INGEST_DP_FROM_BATCH;
	e->groups = ~0ull;
	e->unknown_tier = KVDEX_REMOTE;
	e->ntiers = 3;
	memcpy(e->tiers, defmap, sizeof(defmap));
}

/* Default clear mask: every tier this engine can publish into. */
static uint8_t
engine_tiers_mask(const struct kvdex_ingest_engine_cfg *e)
{
	uint8_t m = (uint8_t)(1u << e->unknown_tier);

	for (unsigned i = 0; i < e->ntiers; i++) {
		m |= (uint8_t)(1u << e->tiers[i].tier);
	}
	return m;
}

static int
engine_finish(struct kvdex_ingest_engine_cfg *e, char *err, size_t errlen)
{
	static const char *const req[] = {"endpoint", "model", "hash_scheme"};
	const char *vals[] = {e->endpoint, e->model, e->hash_scheme};

	for (int i = 0; i < 3; i++) {
		if (vals[i][0] == '\0') {
			return cfg_err(err, errlen, "%s: engine %s: %s= is required", e->src,
				       e->name, req[i]);
		}
	}
	if (e->block_size == 0 || e->worker == 0) {
		return cfg_err(err, errlen, "%s: engine %s: block_size= and worker= are required",
			       e->src, e->name);
	}
	if (e->dp_size == 0) {
		e->dp_size = (uint16_t)(e->dp_rank >= 0 ? e->dp_rank + 1 : 1);
	}
	if (e->dp_rank >= (int32_t)e->dp_size) {
		return cfg_err(err, errlen, "%s: engine %s: dp_rank %d >= dp_size %u", e->src,
			       e->name, e->dp_rank, e->dp_size);
	}
	if (e->clear_mask == 0) {
		e->clear_mask = engine_tiers_mask(e);
	}
	if (e->clear_mask == 0xf) {
		e->clear_mask = 0; /* all tiers */
	}
	return 0;
}

static int
engine_line(struct kvdex_ingest_cfg *cfg, char *rest, const char *src, char *err, size_t errlen)
{
	struct kvdex_ingest_engine_cfg *e, *ne;
	char *save = NULL, *tok, *eq;
	char k[64];
	bool known;

	tok = strtok_r(rest, " \t", &save);
	if (tok == NULL) {
		return cfg_err(err, errlen, "%s: engine needs a NAME", src);
	}
	if (cfg->nengines >= KVDEX_INGEST_MAX_ENGINES) {
		return cfg_err(err, errlen, "%s: more than %u engines", src,
			       KVDEX_INGEST_MAX_ENGINES);
	}
	ne = realloc(cfg->engines, (cfg->nengines + 1) * sizeof(*ne));
	if (ne == NULL) {
		return -ENOMEM;
	}
	cfg->engines = ne;
	e = &ne[cfg->nengines];
	engine_defaults(e);
	snprintf(e->src, sizeof(e->src), "%s", src);
	if (copy_str(e->name, sizeof(e->name), tok) != 0) {
		return cfg_err(err, errlen, "%s: engine name too long", src);
	}
	while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
		eq = strchr(tok, '=');
		if (eq == NULL) {
			return cfg_err(err, errlen, "%s: engine %s: '%s' is not key=value", src,
				       e->name, tok);
		}
		*eq = '\0';
		canon_key(tok, k, sizeof(k));
		if (engine_attr(e, k, eq + 1, &known) != 0) {
			return cfg_err(err, errlen, "%s: engine %s: %s '%s'", src, e->name,
				       known ? "bad value for" : "unknown key", tok);
		}
	}
	if (engine_finish(e, err, errlen) != 0) {
		return -EINVAL;
	}
	cfg->nengines++;
	return 0;
}

int
kvdex_ingest_cfg_line(struct kvdex_ingest_cfg *cfg, const char *line, const char *src, char *err,
		      size_t errlen)
{
	char buf[4096];
	char *s, *eq;
	char sub[256];
	int rc;

	if (strlen(line) >= sizeof(buf)) {
		return cfg_err(err, errlen, "%s: line too long", src);
	}
	strcpy(buf, line);
	s = kvdex_cfg_clean(buf);
	if (*s == '\0') {
		return 0;
	}
	if (strncmp(s, "engine", 6) == 0 && isspace((unsigned char)s[6])) {
		return engine_line(cfg, s + 7, src, err, errlen);
	}
	eq = strchr(s, '=');
	if (eq == NULL) {
		return cfg_err(err, errlen, "%s: expected 'key = value' or 'engine NAME ...'", src);
	}
	*eq = '\0';
	rc = kvdex_ingest_cfg_set(cfg, kvdex_cfg_trim(s), kvdex_cfg_trim(eq + 1), sub, sizeof(sub));
	if (rc != 0) {
		return cfg_err(err, errlen, "%s: %s", src, sub);
	}
	return 0;
}

int
kvdex_ingest_cfg_load(struct kvdex_ingest_cfg *cfg, const char *path, char *err, size_t errlen)
{
	char line[4096], src[160];
	unsigned lineno = 0;
	FILE *f;
	int rc = 0;

	f = fopen(path, "r");
	if (f == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		snprintf(src, sizeof(src), "%s:%u", path, lineno);
		rc = kvdex_ingest_cfg_line(cfg, line, src, err, errlen);
	}
	fclose(f);
	return rc;
}

int
kvdex_ingest_cfg_check(const struct kvdex_ingest_cfg *cfg, char *err, size_t errlen)
{
	const struct kvdex_ingest_engine_cfg *a, *b;

	if (cfg->servers[0] == '\0') {
		return cfg_err(err, errlen, "no servers (servers = ... or --servers)");
	}
	for (unsigned i = 0; i < cfg->nengines; i++) {
		a = &cfg->engines[i];
		for (unsigned j = 0; j < i; j++) {
			b = &cfg->engines[j];
			if (strcmp(a->name, b->name) == 0) {
				return cfg_err(err, errlen, "%s: engine %s defined twice", a->src,
					       a->name);
			}
			if (a->worker == b->worker && a->dp_rank >= 0 && a->dp_rank == b->dp_rank) {
				return cfg_err(err, errlen,
					       "%s: engines %s and %s both publish as worker %u "
					       "dp_rank %d",
					       a->src, b->name, a->name, a->worker, a->dp_rank);
			}
		}
	}
	return 0;
}

void
kvdex_ingest_cfg_fini(struct kvdex_ingest_cfg *cfg)
{
	if (cfg == NULL) {
		return;
	}
	free(cfg->engines);
	cfg->engines = NULL;
	cfg->nengines = 0;
}

bool
kvdex_ingest_engine_cfg_same(const struct kvdex_ingest_engine_cfg *a,
			     const struct kvdex_ingest_engine_cfg *b)
{
	return memcmp(a, b, offsetof(struct kvdex_ingest_engine_cfg, src)) == 0;
}

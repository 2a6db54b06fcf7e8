/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-ingest configuration: global `key = value` lines and one `engine NAME key=value ...`
 * line per engine (docs/INGEST.md has the full syntax). Keys accept '-' or '_' alike.
 *
 * A configuration is a plain value: kvdex_ingest_cfg_load() fills a fresh one, and a
 * reload compares the engines of the old and new values with kvdex_ingest_engine_cfg_same().
 * Not thread-safe; kvdex-ingest has one thread.
 */
#ifndef KVDEX_INGEST_CONFIG_H
#define KVDEX_INGEST_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVDEX_INGEST_MAX_ENGINES 1024u
#define KVDEX_INGEST_MAX_TIERMAP 8u
#define KVDEX_INGEST_MAX_LORAMAP 32u
#define KVDEX_INGEST_DP_FROM_BATCH (-1)

struct kvdex_ingest_tiermap {
	char medium[24]; /* "*" = any medium not listed */
	uint8_t tier;	 /* enum kvdex_tier_id */
};

struct kvdex_ingest_loramap {
	int64_t id;
	char name[64];
};

/* One engine line. Everything before `src` is compared on reload. */
struct kvdex_ingest_engine_cfg {
	char name[64];
	char endpoint[256];
	char replay[256]; /* "" = no replay endpoint */
	char topic[64];
	bool bind; /* bind the SUB socket (engine started with a connecting endpoint) */
	char model[128];
	char adapter[64]; /* adapter of events without LoRA */
	char tenant[64];
	char hash_scheme[64];
	char address[64];
	uint32_t block_size;
	uint32_t worker;
	int32_t dp_rank; /* KVDEX_INGEST_DP_FROM_BATCH: the batch's data_parallel_rank */
	uint16_t dp_size;
	uint8_t unknown_tier; /* tier of a medium not in tiers[] */
	uint8_t clear_mask;   /* tiers AllBlocksCleared drops; 0 = all */
	uint64_t groups;      /* bit g: ingest group_idx g; ~0 = all */
	unsigned ntiers;
	unsigned nloras;
	struct kvdex_ingest_tiermap tiers[KVDEX_INGEST_MAX_TIERMAP];
	struct kvdex_ingest_loramap loras[KVDEX_INGEST_MAX_LORAMAP];
	char src[160]; /* file:line, for messages */
};

struct kvdex_ingest_cfg {
	char servers[2048];
	char auth_token[256];
	char stats_file[256];
	char ready_file[256];
	int transport; /* enum kvdex_transport */
	int timeout_ms;
	int log_level; /* -1: not set */
	uint64_t cluster_epoch;
	uint64_t silence_grace_ms; /* 0 disables */
	uint64_t removal_grace_ms;
	uint64_t replay_timeout_ms;
	uint64_t idle_replay_ms; /* poll replay after this much silence; 0 disables */
	uint64_t stats_interval_ms;
	uint32_t max_buffered_batches;
	uint32_t max_array;
	uint32_t max_payload_bytes;
	uint32_t max_publish_events;
	unsigned nengines;
	struct kvdex_ingest_engine_cfg *engines;
};

/** Fill cfg with the defaults (no engines). */
void kvdex_ingest_cfg_defaults(struct kvdex_ingest_cfg *cfg);

/**
 * Parse a configuration file into cfg (which should hold the defaults).
 * @return 0, -EINVAL (err names file:line and the problem), -ENOENT/-EACCES (file),
 *         -ENOMEM. Ownership: cfg->engines is allocated; release with kvdex_ingest_cfg_fini().
 */
int kvdex_ingest_cfg_load(struct kvdex_ingest_cfg *cfg, const char *path, char *err, size_t errlen);

/**
 * Apply one line (global `key = value` or `engine ...`); src names it in errors.
 * @return 0, -EINVAL, -ENOMEM
 */
int kvdex_ingest_cfg_line(struct kvdex_ingest_cfg *cfg, const char *line, const char *src,
			  char *err, size_t errlen);

/** Set one global key (as a flag would); -EINVAL with err on a bad key or value. */
int kvdex_ingest_cfg_set(struct kvdex_ingest_cfg *cfg, const char *key, const char *val, char *err,
			 size_t errlen);

/** Check the whole configuration (required keys, unique engines). */
int kvdex_ingest_cfg_check(const struct kvdex_ingest_cfg *cfg, char *err, size_t errlen);

/** Free cfg's engines. Accepts NULL. */
void kvdex_ingest_cfg_fini(struct kvdex_ingest_cfg *cfg);

/** Whether two engine lines describe the same subscription. */
bool kvdex_ingest_engine_cfg_same(const struct kvdex_ingest_engine_cfg *a,
				  const struct kvdex_ingest_engine_cfg *b);

/** Parse a tier name (gpu|host|disk|remote or 0-3); -EINVAL. */
int kvdex_ingest_tier_parse(const char *s, uint8_t *tier);
const char *kvdex_ingest_tier_name(unsigned tier);

#endif /* KVDEX_INGEST_CONFIG_H */

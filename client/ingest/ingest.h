/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-ingest internals: the daemon (struct kvdex_ingest), its engines, counters.
 *
 * One thread runs everything: a zmq_poll loop over a signalfd and, per engine, a SUB
 * socket (live batches) and, while a replay is in flight, a DEALER socket. Every call into
 * libkvdex blocks that thread for at most the client's timeout. No locks.
 */
#ifndef KVDEX_INGEST_INGEST_H
#define KVDEX_INGEST_INGEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <zmq.h>

#include "client/ingest/config.h"
#include "client/ingest/decode.h"
#include "kvdex/kvdex.h"

/* Counters, global and per engine. X(name) */
#define KVDEX_INGEST_COUNTERS(X)                                                                   \
	X(batches)                                                                                 \
	X(batches_replayed)                                                                        \
	X(events_stored)                                                                           \
	X(events_removed)                                                                          \
	X(events_cleared)                                                                          \
	X(blocks_stored)                                                                           \
	X(blocks_removed)                                                                          \
	X(events_filtered)                                                                         \
	X(unknown_medium)                                                                          \
	X(decode_errors)                                                                           \
	X(decode_wrong_type)                                                                       \
	X(decode_truncated)                                                                        \
	X(decode_unknown_tag)                                                                      \
	X(decode_too_large)                                                                        \
	X(decode_bad_value)                                                                        \
	X(bad_frames)                                                                              \
	X(gaps)                                                                                    \
	X(replays)                                                                                 \
	X(replays_ok)                                                                              \
	X(replay_failed)                                                                           \
	X(replay_too_old)                                                                          \
	X(replay_timeouts)                                                                         \
	X(idle_replays)                                                                            \
	X(restarts)                                                                                \
	X(purges)                                                                                  \
	X(purges_silence)                                                                          \
	X(purges_removed)                                                                          \
	X(buffer_overflows)                                                                        \
	X(publish_batches)                                                                         \
	X(publish_events)                                                                          \
	X(publish_errors)                                                                          \
	X(namespaces)

struct kvdex_ingest_counters {
#define KVDEX_INGEST_CTR_FIELD(n) uint64_t n;
	KVDEX_INGEST_COUNTERS(KVDEX_INGEST_CTR_FIELD)
#undef KVDEX_INGEST_CTR_FIELD
};

enum kvdex_ingest_estate {
	KVDEX_ENG_LIVE = 0,
	KVDEX_ENG_REPLAYING = 1,
};

struct kvdex_ingest_pending {
	uint64_t seq;
	zmq_msg_t msg;
};

struct kvdex_ingest_nsent {
	char adapter[256];
	uint32_t ns;
};

/* Hashes stored under a namespace other than the engine's default (LoRA blocks), with
 * their copy counts: BlockRemoved names no adapter, so a removal is sent to the namespace
 * its hash was stored in. Open addressing, linear probing, backward-shift deletion. */
struct kvdex_ingest_nsmap_slot {
	uint64_t key;
	uint32_t ns;
	uint32_t copies; /* 0 = empty slot */
};

struct kvdex_ingest_nsmap {
	struct kvdex_ingest_nsmap_slot *slots;
	uint32_t mask;
	uint32_t used;
};

struct kvdex_ingest;

struct kvdex_ingest_engine {
	struct kvdex_ingest *ing;
	struct kvdex_ingest_engine_cfg cfg;
	void *sub;    /* NULL in bench mode */
	void *dealer; /* replay client, created on demand */
	/* vLLM stream */
	bool have_seq;
	uint64_t last_seq;
	enum kvdex_ingest_estate state;
	bool replay_idle;     /* an idle poll, not a gap */
	bool replay_got_any;  /* some batch of this replay arrived */
	bool replay_lossy;    /* it did not reach back far enough: counted as failed */
	uint64_t replay_from; /* requested start seq */
	uint64_t replay_deadline_ms;
	uint64_t last_rx_ms;
	uint64_t last_poll_ms;
	bool silence_purged;
	/* live batches buffered during a replay, FIFO buf[head .. nbuf) */
	struct kvdex_ingest_pending *buf;
	uint32_t head;
	uint32_t nbuf;
	uint32_t capbuf;
	/* kvdex publisher */
	bool registered;
	bool have_ident;
	bool need_new_inc;
	bool published;
	uint16_t dp_rank;
	uint64_t incarnation;
	uint64_t pub_seq;
	struct kvdex_ingest_nsent *ns;
	unsigned nns;
	struct kvdex_ingest_nsmap lora_keys;
	/* removed from the configuration: purge at purge_at_ms, then free */
	bool zombie;
	uint64_t purge_at_ms;
	struct kvdex_ingest_counters ctr;
};

struct kvdex_ingest {
	struct kvdex_ingest_cfg cfg;
	struct kvdex_client *client;
	void *zctx;
	struct kvdex_ingest_engine **engines;
	unsigned nengines;
	struct kvdex_ingest_batch batch; /* decode scratch */
	struct kvdex_event *ev;		 /* publish scratch */
	size_t capev;
	uint64_t last_incarnation;
	struct kvdex_ingest_counters ctr;
	/* rate of events for the stats line */
	uint64_t rate_t0_ms;
	uint64_t rate_blocks0;
	double events_per_s;
};

uint64_t kvdex_ingest_now_ms(void);

/* A new publisher incarnation: max(previous + 1, wall clock in µs), so that one from a
 * later kvdex-ingest run is larger too (the servers refuse older ones). */
uint64_t kvdex_ingest_next_incarnation(struct kvdex_ingest *ing);

/**
 * Create an engine: subscribe (unless ing->zctx is NULL: bench mode), register its worker
 * and, if its identity is known, purge what an earlier run published for it.
 * @return 0, -ENOMEM, -EINVAL (bad endpoint)
 */
int kvdex_ingest_engine_create(struct kvdex_ingest *ing, const struct kvdex_ingest_engine_cfg *cfg,
			       struct kvdex_ingest_engine **out);
/** Close sockets and free. Accepts NULL. Publishes nothing. */
void kvdex_ingest_engine_destroy(struct kvdex_ingest_engine *e);

/** Stop consuming and schedule the purge of an engine after `grace_ms`. */
void kvdex_ingest_engine_retire(struct kvdex_ingest_engine *e, uint64_t grace_ms);

/** Purge the engine's entries now with ALL_CLEARED (all tiers) through its publisher. */
void kvdex_ingest_engine_clear_all(struct kvdex_ingest_engine *e);

/** Receive and handle up to `max` messages from the SUB socket. @return messages read */
int kvdex_ingest_engine_on_sub(struct kvdex_ingest_engine *e, int max);
/** Handle replay replies on the DEALER socket. */
void kvdex_ingest_engine_on_replay(struct kvdex_ingest_engine *e, int max);
/** Timers: replay deadline, silence, idle replay polls. */
void kvdex_ingest_engine_tick(struct kvdex_ingest_engine *e, uint64_t now_ms);

/** Feed one batch (seq, payload) as if it arrived live. */
void kvdex_ingest_engine_feed(struct kvdex_ingest_engine *e, uint64_t seq, const uint8_t *data,
			      size_t len);

/** Write counters as `name=value` lines (global, then per engine). */
void kvdex_ingest_stats_write(struct kvdex_ingest *ing, FILE *f);

#define KVDEX_INGEST_CTR(e, name)                                                                  \
	do {                                                                                       \
		(e)->ctr.name++;                                                                   \
		(e)->ing->ctr.name++;                                                              \
	} while (0)
#define KVDEX_INGEST_CTR_ADD(e, name, v)                                                           \
	do {                                                                                       \
		(e)->ctr.name += (v);                                                              \
		(e)->ing->ctr.name += (v);                                                         \
	} while (0)

#endif /* KVDEX_INGEST_INGEST_H */

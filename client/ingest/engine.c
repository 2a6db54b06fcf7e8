/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One vLLM (or SGLang) engine: its ZMQ sockets, its sequence tracking and replay, and its
 * kvdex publisher.
 *
 * Stream state (vLLM seq numbers). `last_seq` is the seq of the last batch applied (or
 * skipped as malformed: a batch that cannot be decoded is consumed, never replayed). For
 * each batch, in stream order:
 *   no seq yet           apply, start tracking
 *   seq == last + 1      apply
 *   seq <= last          the engine restarted (vLLM restarts at 0 and sends no clear):
 *                        purge, apply as the first batch of a new stream
 *   seq >  last + 1      a gap: with a replay endpoint, ask replay from last + 1 and buffer
 *                        live batches until END; without one, purge and go on from here
 * During a replay (state REPLAYING) live batches are buffered (moved zmq_msg_t, no copy)
 * and replies are applied in order; a reply at or below last is a duplicate. The replay
 * fails if the first reply is past the requested seq (the engine's buffer no longer
 * reaches back), if a reply skips a seq, or on timeout; then the engine is purged and the
 * stream restarts from the first batch that follows (the replayed ones, then the buffer).
 * After END the buffer drains in order, dropping seqs already applied.
 *
 * Publisher state (kvdex). Each engine publishes as (worker, dp_rank) with its own
 * incarnation and a seq of its own (1, 2, ... per incarnation), independent of vLLM's. A
 * purge = the next publish carries a new incarnation, which makes every server drop all
 * of that publisher's holders; an empty batch is published at once so the purge does not
 * wait for the next event. A failed publish also forces a new incarnation, since some
 * servers may have applied the batch and others not.
 *
 * Threads: the daemon's only thread. Calls into libkvdex block it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/ingest/ingest.h"
#include "common/log.h"

#define LOG_COMP "ingest.engine"
#define END_SEQ UINT64_MAX

uint64_t
kvdex_ingest_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
kvdex_ingest_next_incarnation(struct kvdex_ingest *ing)
{
	struct timespec ts;
	uint64_t us;

	clock_gettime(CLOCK_REALTIME, &ts);
	us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	ing->last_incarnation = us > ing->last_incarnation ? us : ing->last_incarnation + 1;
	return ing->last_incarnation;
}

static uint64_t
be64(const void *p)
{
	const uint8_t *b = p;
	uint64_t v = 0;

	for (int i = 0; i < 8; i++) {
		v = v << 8 | b[i];
	}
	return v;
}

static void nsmap_clear(struct kvdex_ingest_nsmap *m);

/* ---- kvdex publisher ------------------------------------------------------------------ */

static int
engine_register(struct kvdex_ingest_engine *e)
{
	int rc;

	if (e->registered) {
		return 0;
	}
	rc = kvdex_worker_register(e->ing->client, e->cfg.worker, e->cfg.address, e->cfg.dp_size);
	if (rc != 0) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP,
				    "engine %s: registering worker %u: %s (%s)", e->cfg.name,
				    e->cfg.worker, strerror(-rc),
				    kvdex_client_last_error(e->ing->client));
		return rc;
	}
	e->registered = true;
	return 0;
}

/* Publish one kvdex batch through the engine's publisher. */
static int
engine_publish(struct kvdex_ingest_engine *e, const struct kvdex_event *ev, size_t n)
{
	struct kvdex_publish_hdr hdr;
	int rc;

	if (!e->have_ident) {
		return 0; /* nothing was ever published: nothing to purge */
	}
	rc = engine_register(e);
	if (rc != 0) {
		goto err;
	}
	if (e->need_new_inc || !e->published) {
		e->incarnation = kvdex_ingest_next_incarnation(e->ing);
		e->pub_seq = 0;
		e->need_new_inc = false;
		e->published = true;
	}
	hdr = (struct kvdex_publish_hdr){
		.worker_id = e->cfg.worker,
		.dp_rank = e->dp_rank,
		.incarnation = e->incarnation,
		.seq = ++e->pub_seq,
	};
	rc = kvdex_publish(e->ing->client, &hdr, ev, n, NULL);
	if (rc != 0) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP, "engine %s: publish: %s (%s)",
				    e->cfg.name, strerror(-rc),
				    kvdex_client_last_error(e->ing->client));
		goto err;
	}
	KVDEX_INGEST_CTR(e, publish_batches);
	KVDEX_INGEST_CTR_ADD(e, publish_events, n);
	return 0;
err:
	/* Some servers may hold this batch and others not: start over. */
	KVDEX_INGEST_CTR(e, publish_errors);
	e->need_new_inc = true;
	return rc;
}

/* Start a new incarnation and announce it at once (an empty batch): every server drops
 * what this publisher held. Nothing to do before the first publish. */
static void
engine_reincarnate(struct kvdex_ingest_engine *e)
{
	nsmap_clear(&e->lora_keys);
	if (!e->published) {
		return;
	}
	e->need_new_inc = true;
	engine_publish(e, NULL, 0);
}

/* Purge everything this engine published. */
static void
engine_purge(struct kvdex_ingest_engine *e, const char *why)
{
	KVDEX_INGEST_CTR(e, purges);
	KVDEX_LOG_NOTICE(LOG_COMP, "engine %s: purging its entries: %s", e->cfg.name, why);
	engine_reincarnate(e);
}

void
kvdex_ingest_engine_clear_all(struct kvdex_ingest_engine *e)
{
	struct kvdex_event ev = {.type = KVDEX_EV_ALL_CLEARED, .tier_mask = 0};

	if (e->published) {
		engine_publish(e, &ev, 1);
	}
}

/* ---- namespaces of LoRA-stored hashes ------------------------------------------------ */

static uint32_t
nsmap_home(const struct kvdex_ingest_nsmap *m, uint64_t key)
{
	return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & m->mask;
}

static struct kvdex_ingest_nsmap_slot *
nsmap_find(struct kvdex_ingest_nsmap *m, uint64_t key)
{
	if (m->slots == NULL) {
		return NULL;
	}
	for (uint32_t i = nsmap_home(m, key);; i = (i + 1) & m->mask) {
		if (m->slots[i].copies == 0) {
			return NULL;
		}
		if (m->slots[i].key == key) {
			return &m->slots[i];
		}
	}
}

static int nsmap_add(struct kvdex_ingest_nsmap *m, uint64_t key, uint32_t ns);

static int
nsmap_grow(struct kvdex_ingest_nsmap *m)
{
	struct kvdex_ingest_nsmap old = *m;
	uint32_t cap = m->slots ? (m->mask + 1) * 2 : 1024;

	m->slots = calloc(cap, sizeof(*m->slots));
	if (m->slots == NULL) {
		*m = old;
		return -ENOMEM;
	}
	m->mask = cap - 1;
	m->used = 0;
	for (uint32_t i = 0; old.slots != NULL && i <= old.mask; i++) {
		for (uint32_t c = 0; c < old.slots[i].copies; c++) {
			nsmap_add(m, old.slots[i].key, old.slots[i].ns);
		}
	}
	free(old.slots);
	return 0;
}

static int
nsmap_add(struct kvdex_ingest_nsmap *m, uint64_t key, uint32_t ns)
{
	struct kvdex_ingest_nsmap_slot *s = nsmap_find(m, key);
	uint32_t i;

	if (s != NULL) {
		s->ns = ns;
		s->copies++;
		return 0;
	}
	if ((m->used + 1) * 4 > (m->slots ? m->mask + 1 : 0) * 3 && nsmap_grow(m) != 0) {
		return -ENOMEM;
	}
	for (i = nsmap_home(m, key); m->slots[i].copies != 0; i = (i + 1) & m->mask) {
	}
	m->slots[i] = (struct kvdex_ingest_nsmap_slot){.key = key, .ns = ns, .copies = 1};
	m->used++;
	return 0;
}

/* Drop one copy; at zero, shift the following cluster back over the hole. */
static void
nsmap_put(struct kvdex_ingest_nsmap *m, struct kvdex_ingest_nsmap_slot *s)
{
	uint32_t hole, j, home;

	if (--s->copies > 0) {
		return;
	}
	m->used--;
	hole = (uint32_t)(s - m->slots);
	for (j = (hole + 1) & m->mask; m->slots[j].copies != 0; j = (j + 1) & m->mask) {
		home = nsmap_home(m, m->slots[j].key);
		/* move j into the hole unless its home lies cyclically in (hole, j] */
		if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
			m->slots[hole] = m->slots[j];
			m->slots[j].copies = 0;
			hole = j;
		}
	}
}

static void
nsmap_clear(struct kvdex_ingest_nsmap *m)
{
	free(m->slots);
	*m = (struct kvdex_ingest_nsmap){0};
}

/* ---- applying a decoded batch ---------------------------------------------------------- */

static int
ns_for(struct kvdex_ingest_engine *e, const char *adapter, size_t alen, uint32_t *ns)
{
	struct kvdex_ingest_nsent *ne;
	struct kvdex_ns_desc d;
	int rc;

	for (unsigned i = 0; i < e->nns; i++) {
		if (strlen(e->ns[i].adapter) == alen &&
		    memcmp(e->ns[i].adapter, adapter, alen) == 0) {
			*ns = e->ns[i].ns;
			return 0;
		}
	}
	if (alen >= sizeof(ne->adapter)) {
		return -EINVAL;
	}
	ne = realloc(e->ns, (e->nns + 1) * sizeof(*ne));
	if (ne == NULL) {
		return -ENOMEM;
	}
	e->ns = ne;
	ne = &e->ns[e->nns];
	memcpy(ne->adapter, adapter, alen);
	ne->adapter[alen] = '\0';
	d = (struct kvdex_ns_desc){
		.model = e->cfg.model,
		.adapter = ne->adapter,
		.tenant = e->cfg.tenant,
		.block_size = e->cfg.block_size,
		.hash_scheme = e->cfg.hash_scheme,
	};
	rc = kvdex_ns_register(e->ing->client, &d, &ne->ns);
	if (rc != 0) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP,
				    "engine %s: registering namespace (%s, \"%s\"): %s",
				    e->cfg.name, e->cfg.model, ne->adapter, strerror(-rc));
		return rc;
	}
	KVDEX_INGEST_CTR(e, namespaces);
	*ns = ne->ns;
	e->nns++;
	return 0;
}

/* The adapter of an event: lora_name, else lora_map[lora_id] or "lora-<id>", else the
 * engine's adapter= (default ""). */
static int
ev_ns(struct kvdex_ingest_engine *e, const struct kvdex_ingest_ev *v, uint32_t *ns)
{
	char tmp[32];

	if (v->lora_name.p != NULL) {
		return ns_for(e, v->lora_name.p, v->lora_name.len, ns);
	}
	if (v->has_lora_id) {
		for (unsigned i = 0; i < e->cfg.nloras; i++) {
			if (e->cfg.loras[i].id == v->lora_id) {
				return ns_for(e, e->cfg.loras[i].name, strlen(e->cfg.loras[i].name),
					      ns);
			}
		}
		snprintf(tmp, sizeof(tmp), "lora-%" PRId64, v->lora_id);
		return ns_for(e, tmp, strlen(tmp), ns);
	}
	return ns_for(e, e->cfg.adapter, strlen(e->cfg.adapter), ns);
}

static uint8_t
ev_tier(struct kvdex_ingest_engine *e, const struct kvdex_ingest_str *medium)
{
	const char *m = medium->p ? medium->p : "GPU"; /* v0.9 had no medium: GPU */
	size_t len = medium->p ? medium->len : 3;

	for (unsigned i = 0; i < e->cfg.ntiers; i++) {
		if (strlen(e->cfg.tiers[i].medium) == len &&
		    memcmp(e->cfg.tiers[i].medium, m, len) == 0) {
			return e->cfg.tiers[i].tier;
		}
	}
	KVDEX_INGEST_CTR(e, unknown_medium);
	return e->cfg.unknown_tier;
}

static int
ev_reserve(struct kvdex_ingest *ing, size_t n)
{
	struct kvdex_event *p;
	size_t cap = ing->capev ? ing->capev : 1024;

	if (n <= ing->capev) {
		return 0;
	}
	while (cap < n) {
		cap *= 2;
	}
	p = realloc(ing->ev, cap * sizeof(*p));
	if (p == NULL) {
		return -ENOMEM;
	}
	ing->ev = p;
	ing->capev = cap;
	return 0;
}

/* Stores outside the default namespace are remembered; a removal (which names no
 * adapter) goes to the namespace its hash was stored in. */
static int
lora_track(struct kvdex_ingest_engine *e, struct kvdex_event *out, uint32_t def_ns)
{
	struct kvdex_ingest_nsmap_slot *s;

	if (out->type == KVDEX_EV_STORED) {
		return out->ns == def_ns ? 0 : nsmap_add(&e->lora_keys, out->key, out->ns);
	}
	s = nsmap_find(&e->lora_keys, out->key);
	if (s != NULL) {
		out->ns = s->ns;
		nsmap_put(&e->lora_keys, s);
	}
	return 0;
}

/* Expand one vLLM event into kvdex events at ing->ev[*n ...]. */
static int
ev_expand(struct kvdex_ingest_engine *e, const struct kvdex_ingest_ev *v, size_t *n)
{
	struct kvdex_ingest *ing = e->ing;
	const uint64_t *keys = ing->batch.keys + v->first;
	struct kvdex_event *out;
	uint32_t ns, def_ns;
	uint8_t tier;
	int rc;

	if (v->type == KVDEX_INGEST_CLEARED) {
		KVDEX_INGEST_CTR(e, events_cleared);
		nsmap_clear(&e->lora_keys);
		ing->ev[(*n)++] = (struct kvdex_event){
			.type = KVDEX_EV_ALL_CLEARED,
			.tier_mask = e->cfg.clear_mask,
		};
		return 0;
	}
	if (v->has_group &&
	    (v->group_idx < 0 || v->group_idx > 63 || !(e->cfg.groups & (1ull << v->group_idx)))) {
		KVDEX_INGEST_CTR(e, events_filtered);
		return 0;
	}
	rc = ev_ns(e, v, &ns);
	if (rc == 0) {
		rc = ns_for(e, e->cfg.adapter, strlen(e->cfg.adapter), &def_ns);
	}
	if (rc != 0) {
		return rc;
	}
	tier = ev_tier(e, &v->medium);
	out = ing->ev + *n;
	for (uint32_t i = 0; i < v->n; i++) {
		out[i] = (struct kvdex_event){
			.type = v->type == KVDEX_INGEST_STORED ? KVDEX_EV_STORED : KVDEX_EV_REMOVED,
			.tier = tier,
			.ns = ns,
			.key = keys[i],
		};
		rc = lora_track(e, &out[i], def_ns);
		if (rc != 0) {
			return rc;
		}
		if (v->type == KVDEX_INGEST_STORED && (i > 0 || v->has_parent)) {
			out[i].flags = KVDEX_EVF_PARENT;
			out[i].parent = i > 0 ? keys[i - 1] : v->parent;
		}
	}
	*n += v->n;
	if (v->type == KVDEX_INGEST_STORED) {
		KVDEX_INGEST_CTR(e, events_stored);
		KVDEX_INGEST_CTR_ADD(e, blocks_stored, v->n);
	} else {
		KVDEX_INGEST_CTR(e, events_removed);
		KVDEX_INGEST_CTR_ADD(e, blocks_removed, v->n);
	}
	return 0;
}

static void
decode_error(struct kvdex_ingest_engine *e, uint64_t seq, const struct kvdex_ingest_batch *b)
{
	switch (b->err) {
	case KVDEX_DERR_WRONG_TYPE:
		KVDEX_INGEST_CTR(e, decode_wrong_type);
		break;
	case KVDEX_DERR_TRUNCATED:
		KVDEX_INGEST_CTR(e, decode_truncated);
		break;
	case KVDEX_DERR_UNKNOWN_TAG:
		KVDEX_INGEST_CTR_ADD(e, decode_unknown_tag, b->unknown_tags);
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
				    "engine %s: batch %" PRIu64 ": %u event(s) skipped: %s",
				    e->cfg.name, seq, b->unknown_tags, b->why);
		return;
	case KVDEX_DERR_TOO_LARGE:
		KVDEX_INGEST_CTR(e, decode_too_large);
		break;
	default:
		KVDEX_INGEST_CTR(e, decode_bad_value);
		break;
	}
	KVDEX_INGEST_CTR(e, decode_errors);
	KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
			    "engine %s: batch %" PRIu64 " dropped: %s at byte %zu: %s", e->cfg.name,
			    seq, kvdex_ingest_derr_name(b->err), b->err_off, b->why);
}

/* The publisher identity: dp_rank from the configuration, else from the first batch. */
static int
engine_ident(struct kvdex_ingest_engine *e, const struct kvdex_ingest_batch *b)
{
	int64_t dp = b->has_dp_rank ? b->dp_rank : 0;

	if (e->have_ident) {
		return 0;
	}
	if (dp < 0 || dp >= e->cfg.dp_size) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
				    "engine %s: data_parallel_rank %" PRId64 " outside dp_size %u",
				    e->cfg.name, dp, e->cfg.dp_size);
		return -EINVAL;
	}
	e->dp_rank = (uint16_t)dp;
	e->have_ident = true;
	return 0;
}

/* Decode and publish one batch (already placed in stream order). */
static void
engine_apply(struct kvdex_ingest_engine *e, uint64_t seq, const uint8_t *data, size_t len)
{
	struct kvdex_ingest *ing = e->ing;
	struct kvdex_ingest_batch *b = &ing->batch;
	const struct kvdex_ingest_limits lim = {
		.max_array = ing->cfg.max_array,
		.max_depth = KVDEX_INGEST_DEFAULT_MAX_DEPTH,
	};
	size_t n = 0, off;
	int rc;

	KVDEX_INGEST_CTR(e, batches);
	if (len > ing->cfg.max_payload_bytes) {
		b->err = KVDEX_DERR_TOO_LARGE;
		b->err_off = 0;
		snprintf(b->why, sizeof(b->why), "payload of %zu bytes", len);
		decode_error(e, seq, b);
		return;
	}
	rc = kvdex_ingest_decode(b, data, len, &lim);
	if (rc != 0 || b->err != KVDEX_DERR_OK) {
		decode_error(e, seq, b);
		if (rc != 0) {
			return;
		}
	}
	if (engine_ident(e, b) != 0) {
		KVDEX_INGEST_CTR(e, decode_bad_value);
		KVDEX_INGEST_CTR(e, decode_errors);
		return;
	}
	if (ev_reserve(ing, (size_t)b->nkeys + b->nev) != 0) {
		goto err;
	}
	for (uint32_t i = 0; i < b->nev; i++) {
		if (ev_expand(e, &b->ev[i], &n) != 0) {
			goto err;
		}
	}
	for (off = 0; off < n; off += ing->cfg.max_publish_events) {
		size_t k = n - off < ing->cfg.max_publish_events ? n - off
								 : ing->cfg.max_publish_events;

		engine_publish(e, ing->ev + off, k);
	}
	return;
err:
	/* Namespace registration failed (or no memory): the batch is lost, so the index
	 * may now disagree with the engine. Start over with a purge. */
	KVDEX_INGEST_CTR(e, publish_errors);
	engine_purge(e, "a batch could not be applied");
}

/* ---- sequence tracking and replay ---------------------------------------------------- */

static void
pending_free(struct kvdex_ingest_engine *e)
{
	for (uint32_t i = e->head; i < e->nbuf; i++) {
		zmq_msg_close(&e->buf[i].msg);
	}
	e->head = 0;
	e->nbuf = 0;
}

static int
pending_push(struct kvdex_ingest_engine *e, uint64_t seq, zmq_msg_t *msg)
{
	struct kvdex_ingest_pending *p;

	if (e->nbuf - e->head >= e->ing->cfg.max_buffered_batches) {
		return -ENOBUFS;
	}
	if (e->head > 0 && e->nbuf == e->capbuf) {
		memmove(e->buf, e->buf + e->head, (e->nbuf - e->head) * sizeof(*e->buf));
		e->nbuf -= e->head;
		e->head = 0;
	}
	if (e->nbuf == e->capbuf) {
		uint32_t cap = e->capbuf ? e->capbuf * 2 : 64;

		p = realloc(e->buf, cap * sizeof(*p));
		if (p == NULL) {
			return -ENOMEM;
		}
		e->buf = p;
		e->capbuf = cap;
	}
	p = &e->buf[e->nbuf++];
	p->seq = seq;
	zmq_msg_init(&p->msg);
	zmq_msg_move(&p->msg, msg);
	return 0;
}

static void
dealer_close(struct kvdex_ingest_engine *e)
{
	if (e->dealer != NULL) {
		zmq_close(e->dealer);
		e->dealer = NULL;
	}
}

/* Ask the engine's ROUTER for every buffered batch from `from` on. */
static int
replay_start(struct kvdex_ingest_engine *e, uint64_t from, bool idle)
{
	uint8_t seq8[8];
	int linger = 0;

	if (e->dealer == NULL) {
		e->dealer = zmq_socket(e->ing->zctx, ZMQ_DEALER);
		if (e->dealer == NULL) {
			return -errno;
		}
		zmq_setsockopt(e->dealer, ZMQ_LINGER, &linger, sizeof(linger));
		if (zmq_connect(e->dealer, e->cfg.replay) != 0) {
			int rc = -errno;

			dealer_close(e);
			return rc;
		}
	}
	for (int i = 0; i < 8; i++) {
		seq8[i] = (uint8_t)(from >> (56 - 8 * i));
	}
	if (zmq_send(e->dealer, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(e->dealer, seq8, 8, ZMQ_DONTWAIT) < 0) {
		int rc = -errno;

		dealer_close(e);
		return rc;
	}
	e->state = KVDEX_ENG_REPLAYING;
	e->replay_idle = idle;
	e->replay_got_any = false;
	e->replay_lossy = false;
	e->replay_from = from;
	e->replay_deadline_ms = kvdex_ingest_now_ms() + e->ing->cfg.replay_timeout_ms;
	if (idle) {
		KVDEX_INGEST_CTR(e, idle_replays);
	} else {
		KVDEX_INGEST_CTR(e, replays);
	}
	KVDEX_LOG_INFO(LOG_COMP, "engine %s: %s replay from seq %" PRIu64, e->cfg.name,
		       idle ? "idle" : "gap", from);
	return 0;
}

static void in_order(struct kvdex_ingest_engine *e, uint64_t seq, zmq_msg_t *msg,
		     const uint8_t *data, size_t len);

/* Replay over (END, failure or timeout): back to live, drain the buffer in order. */
static void
replay_end(struct kvdex_ingest_engine *e, bool failed, const char *why)
{
	e->state = KVDEX_ENG_LIVE;
	if (failed) {
		/* Late replies of this replay must not be mistaken for a later one's. */
		dealer_close(e);
		if (!e->replay_idle) {
			KVDEX_INGEST_CTR(e, replay_failed);
			engine_purge(e, why);
			e->have_seq = false;
		}
	} else if (!e->replay_idle && !e->replay_lossy) {
		KVDEX_INGEST_CTR(e, replays_ok);
	}
	while (e->head < e->nbuf && e->state == KVDEX_ENG_LIVE) {
		struct kvdex_ingest_pending *p = &e->buf[e->head];

		if (e->have_seq && p->seq <= e->last_seq && p->seq >= e->replay_from) {
			/* already applied through the replay */
			zmq_msg_close(&p->msg);
			e->head++;
			continue;
		}
		if (e->have_seq && p->seq > e->last_seq + 1 && e->cfg.replay[0] != '\0' &&
		    replay_start(e, e->last_seq + 1, false) == 0) {
			/* another gap: the batch stays first in the buffer */
			KVDEX_INGEST_CTR(e, gaps);
			break;
		}
		e->head++;
		in_order(e, p->seq, NULL, zmq_msg_data(&p->msg), zmq_msg_size(&p->msg));
		zmq_msg_close(&p->msg);
	}
	if (e->head == e->nbuf) {
		e->head = 0;
		e->nbuf = 0;
	}
}

static void
accept_batch(struct kvdex_ingest_engine *e, uint64_t seq, const uint8_t *data, size_t len)
{
	engine_apply(e, seq, data, len);
	e->last_seq = seq;
	e->have_seq = true;
}

/*
 * One batch in stream order (live, or drained from the buffer). msg, when not NULL, holds
 * data and may be moved into the buffer.
 */
static void
in_order(struct kvdex_ingest_engine *e, uint64_t seq, zmq_msg_t *msg, const uint8_t *data,
	 size_t len)
{
	if (!e->have_seq || seq == e->last_seq + 1) {
		accept_batch(e, seq, data, len);
		return;
	}
	if (seq <= e->last_seq) {
		KVDEX_INGEST_CTR(e, restarts);
		engine_purge(e, "the engine restarted (seq went back)");
		accept_batch(e, seq, data, len);
		return;
	}
	KVDEX_INGEST_CTR(e, gaps);
	if (e->cfg.replay[0] != '\0' && msg != NULL &&
	    replay_start(e, e->last_seq + 1, false) == 0) {
		if (pending_push(e, seq, msg) == 0) {
			/* pending_push moved msg; callers close the empty husk */
			return;
		}
		KVDEX_INGEST_CTR(e, buffer_overflows);
		replay_end(e, true, "replay buffer full");
		accept_batch(e, seq, data, len);
		return;
	}
	engine_purge(e,
		     e->cfg.replay[0] ? "gap, replay request failed" : "gap, no replay endpoint");
	accept_batch(e, seq, data, len);
}

void
kvdex_ingest_engine_feed(struct kvdex_ingest_engine *e, uint64_t seq, const uint8_t *data,
			 size_t len)
{
	e->last_rx_ms = kvdex_ingest_now_ms();
	in_order(e, seq, NULL, data, len);
}

static void
on_live(struct kvdex_ingest_engine *e, uint64_t seq, zmq_msg_t *msg)
{
	e->last_rx_ms = kvdex_ingest_now_ms();
	e->silence_purged = false;
	if (e->state == KVDEX_ENG_REPLAYING) {
		if (pending_push(e, seq, msg) == 0) {
			return;
		}
		/* Give up on the replay; its purge restarts the stream from the buffer. */
		KVDEX_INGEST_CTR(e, buffer_overflows);
		replay_end(e, true, "too many live batches buffered during a replay");
		if (e->state == KVDEX_ENG_REPLAYING && pending_push(e, seq, msg) == 0) {
			return;
		}
	}
	in_order(e, seq, msg, zmq_msg_data(msg), zmq_msg_size(msg));
}

/* One replayed batch. */
static void
on_replayed(struct kvdex_ingest_engine *e, uint64_t seq, const uint8_t *data, size_t len)
{
	bool first = !e->replay_got_any;

	e->replay_got_any = true;
	if (first && seq > e->replay_from) {
		KVDEX_INGEST_CTR(e, replay_too_old);
		KVDEX_INGEST_CTR(e, replay_failed);
		e->replay_lossy = true;
		engine_purge(e, "gap older than the engine's replay buffer");
		e->have_seq = false;
	} else if (first && e->replay_idle) {
		/* an idle poll found batches we never saw */
		KVDEX_INGEST_CTR(e, gaps);
	}
	if (e->have_seq && seq <= e->last_seq) {
		return; /* duplicate */
	}
	if (e->have_seq && seq > e->last_seq + 1) {
		KVDEX_INGEST_CTR(e, replay_failed);
		e->replay_lossy = true;
		engine_purge(e, "replay skipped a seq");
	}
	KVDEX_INGEST_CTR(e, batches_replayed);
	accept_batch(e, seq, data, len);
}

/* Receive one multipart message into fr[0..max); extra frames are dropped.
 * Returns the frame count, 0 when nothing is waiting, < 0 on error. */
static int
recv_multipart(void *sock, zmq_msg_t *fr, int max)
{
	int n = 0, more;
	size_t ml = sizeof(more);
	zmq_msg_t junk;

	for (;;) {
		zmq_msg_t *m = n < max ? &fr[n] : &junk;

		zmq_msg_init(m);
		if (zmq_msg_recv(m, sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
			int rc = errno == EAGAIN ? 0 : -errno;

			zmq_msg_close(m);
			return n > 0 ? n : rc;
		}
		zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ml);
		if (m == &junk) {
			zmq_msg_close(&junk);
		}
		n++;
		if (!more) {
			return n;
		}
	}
}

static void
close_frames(zmq_msg_t *fr, int n, int max)
{
	for (int i = 0; i < n && i < max; i++) {
		zmq_msg_close(&fr[i]);
	}
}

int
kvdex_ingest_engine_on_sub(struct kvdex_ingest_engine *e, int max)
{
	zmq_msg_t fr[3];
	int got = 0, n;

	while (got < max && e->sub != NULL && !e->zombie) {
		n = recv_multipart(e->sub, fr, 3);
		if (n <= 0) {
			break;
		}
		got++;
		/* [topic, seq (8 bytes big-endian), payload] */
		if (n != 3 || zmq_msg_size(&fr[1]) != 8) {
			KVDEX_INGEST_CTR(e, bad_frames);
			KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
					    "engine %s: message of %d frames (want topic, seq, "
					    "payload) dropped",
					    e->cfg.name, n);
		} else {
			on_live(e, be64(zmq_msg_data(&fr[1])), &fr[2]);
		}
		close_frames(fr, n, 3);
	}
	return got;
}

/* A replay reply: [b"", seq, payload], or [b"", topic, seq, payload] from vLLM versions
 * that resend the topic. Returns false when the message is malformed. */
static bool
replay_frames(zmq_msg_t *fr, int n, uint64_t *seq, zmq_msg_t **payload)
{
	int s = n == 3 ? 1 : 2;

	if ((n != 3 && n != 4) || zmq_msg_size(&fr[0]) != 0 || zmq_msg_size(&fr[s]) != 8) {
		return false;
	}
	*seq = be64(zmq_msg_data(&fr[s]));
	*payload = &fr[s + 1];
	return true;
}

void
kvdex_ingest_engine_on_replay(struct kvdex_ingest_engine *e, int max)
{
	zmq_msg_t fr[4], *payload;
	uint64_t seq;
	int n;

	for (int i = 0; i < max && e->dealer != NULL; i++) {
		n = recv_multipart(e->dealer, fr, 4);
		if (n <= 0) {
			break;
		}
		if (e->state != KVDEX_ENG_REPLAYING) {
			close_frames(fr, n, 4); /* a late reply */
			continue;
		}
		if (!replay_frames(fr, n, &seq, &payload)) {
			KVDEX_INGEST_CTR(e, bad_frames);
			close_frames(fr, n, 4);
			replay_end(e, true, "malformed replay reply");
			continue;
		}
		if (seq == END_SEQ) {
			close_frames(fr, n, 4);
			replay_end(e, false, NULL);
			continue;
		}
		e->last_rx_ms = kvdex_ingest_now_ms();
		on_replayed(e, seq, zmq_msg_data(payload), zmq_msg_size(payload));
		close_frames(fr, n, 4);
	}
}

void
kvdex_ingest_engine_tick(struct kvdex_ingest_engine *e, uint64_t now)
{
	const struct kvdex_ingest_cfg *g = &e->ing->cfg;

	if (e->state == KVDEX_ENG_REPLAYING && now >= e->replay_deadline_ms) {
		if (!e->replay_idle) {
			KVDEX_INGEST_CTR(e, replay_timeouts);
		}
		replay_end(e, true, "replay timed out");
		return;
	}
	if (e->state != KVDEX_ENG_LIVE || e->zombie) {
		return;
	}
	if (g->silence_grace_ms > 0 && !e->silence_purged && e->published && e->have_seq &&
	    now - e->last_rx_ms >= g->silence_grace_ms) {
		e->silence_purged = true;
		KVDEX_INGEST_CTR(e, purges);
		KVDEX_INGEST_CTR(e, purges_silence);
		KVDEX_LOG_NOTICE(LOG_COMP,
				 "engine %s: silent for %" PRIu64 " ms: clearing its entries",
				 e->cfg.name, now - e->last_rx_ms);
		kvdex_ingest_engine_clear_all(e);
		return;
	}
	/* A drop of the engine's last batch shows only if we ask: poll replay when idle. */
	if (g->idle_replay_ms > 0 && e->cfg.replay[0] && e->have_seq &&
	    now - e->last_rx_ms >= g->idle_replay_ms &&
	    now - e->last_poll_ms >= g->idle_replay_ms) {
		e->last_poll_ms = now;
		replay_start(e, e->last_seq + 1, true);
	}
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int
engine_subscribe(struct kvdex_ingest_engine *e)
{
	int linger = 0, hwm = 0;
	int rc;

	e->sub = zmq_socket(e->ing->zctx, ZMQ_SUB);
	if (e->sub == NULL) {
		return -errno;
	}
	zmq_setsockopt(e->sub, ZMQ_LINGER, &linger, sizeof(linger));
	/* No high-water mark: a burst is buffered rather than dropped (vLLM's own is 100k). */
	zmq_setsockopt(e->sub, ZMQ_RCVHWM, &hwm, sizeof(hwm));
	zmq_setsockopt(e->sub, ZMQ_SUBSCRIBE, e->cfg.topic, strlen(e->cfg.topic));
	rc = e->cfg.bind ? zmq_bind(e->sub, e->cfg.endpoint) : zmq_connect(e->sub, e->cfg.endpoint);
	if (rc != 0) {
		rc = -errno;
		KVDEX_LOG_ERR(LOG_COMP, "%s: engine %s: %s %s: %s", e->cfg.src, e->cfg.name,
			      e->cfg.bind ? "bind" : "connect", e->cfg.endpoint, zmq_strerror(-rc));
		return rc;
	}
	return 0;
}

int
kvdex_ingest_engine_create(struct kvdex_ingest *ing, const struct kvdex_ingest_engine_cfg *cfg,
			   struct kvdex_ingest_engine **out)
{
	struct kvdex_ingest_engine *e;
	int rc;

	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		return -ENOMEM;
	}
	e->ing = ing;
	e->cfg = *cfg;
	e->last_rx_ms = kvdex_ingest_now_ms();
	e->last_poll_ms = e->last_rx_ms;
	if (cfg->dp_rank >= 0) {
		e->have_ident = true;
		e->dp_rank = (uint16_t)cfg->dp_rank;
	}
	if (ing->zctx != NULL) {
		rc = engine_subscribe(e);
		if (rc != 0) {
			goto err_destroy;
		}
	}
	engine_register(e); /* retried before each publish if the servers are away */
	/* Whatever an earlier run (or configuration) published as this publisher is stale. */
	if (e->have_ident) {
		e->published = true;
		engine_reincarnate(e);
	}
	KVDEX_LOG_NOTICE(LOG_COMP, "engine %s: %s %s as worker %u dp_rank %s%s%s", cfg->name,
			 cfg->bind ? "bound" : "subscribed to", cfg->endpoint, cfg->worker,
			 cfg->dp_rank >= 0 ? "from config" : "from batches",
			 cfg->replay[0] ? ", replay " : "", cfg->replay);
	*out = e;
	return 0;
err_destroy:
	kvdex_ingest_engine_destroy(e);
	return rc;
}

void
kvdex_ingest_engine_retire(struct kvdex_ingest_engine *e, uint64_t grace_ms)
{
	if (e->sub != NULL) {
		zmq_close(e->sub);
		e->sub = NULL;
	}
	dealer_close(e);
	pending_free(e);
	e->state = KVDEX_ENG_LIVE;
	e->zombie = true;
	e->purge_at_ms = kvdex_ingest_now_ms() + grace_ms;
}

void
kvdex_ingest_engine_destroy(struct kvdex_ingest_engine *e)
{
	if (e == NULL) {
		return;
	}
	if (e->sub != NULL) {
		zmq_close(e->sub);
	}
	dealer_close(e);
	pending_free(e);
	free(e->buf);
	free(e->ns);
	nsmap_clear(&e->lora_keys);
	free(e);
}

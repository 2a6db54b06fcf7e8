/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The writer thread: the only mutator of the region (docs/DESIGN.md §4).
 *
 * It pops requests queued by the io thread, decodes their protobuf payload
 * (freed in the same handler), dispatches through the command table
 * {type, handler, needs_hello}, builds replies on the stack and queues them
 * back to the io thread. Every 1/16 s it ticks the index (header clock,
 * speculative expiry, sweep, resize).
 *
 * Error policy (common brief): a bad Hello, bad version, bad auth or a
 * request before Hello gets a fatal ErrorReply and the connection closes; a
 * malformed payload, oversize batch, unknown namespace or worker, or stale
 * incarnation gets a non-fatal ErrorReply. Every case bumps its counter.
 * A Publish batch is validated whole before any of it applies.
 *
 * Locking: none; writer-owned state only, counters via uatomic.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

#include "common/frame.h"
#include "common/log.h"
#include "kvdex.pb-c.h"
#include "server/server.h"

#define LOG_COMP "server.writer"
#define TICK_NS (1000000000ull / KVDEX_TICKS_PER_SEC)

typedef void (*kvdex_handler_fn)(struct kvdex_server *srv, struct kvdex_sconn *conn,
				 const struct kvdex_req *req);

struct kvdex_cmd {
	uint16_t type;
	kvdex_handler_fn fn;
	bool needs_hello;
};

static bool replies_queued;

/* ---- replies ----------------------------------------------------------- */

static void
reply_msg(struct kvdex_server *srv, struct kvdex_sconn *conn, uint16_t type, uint32_t req_id,
	  const ProtobufCMessage *msg, uint32_t flags)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	struct kvdex_rep *rep = kvdex_rep_alloc(conn, type, req_id, len);

	if (rep == NULL) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP,
				    "no memory for a %zu-byte reply: dropped", len);
		return;
	}
	protobuf_c_message_pack(msg, rep->data + KVDEX_FRAME_HDR_SIZE);
	rep->flags = flags;
	if (flags & KVDEX_REP_CLOSE) {
		conn->dead_w = true;
	}
	cds_wfcq_enqueue(&srv->rep_head, &srv->rep_tail, &rep->qn);
	replies_queued = true;
}

static void reply_error(struct kvdex_server *srv, struct kvdex_sconn *conn, uint32_t req_id,
			Kvdex__Code code, bool fatal, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static void
reply_error(struct kvdex_server *srv, struct kvdex_sconn *conn, uint32_t req_id, Kvdex__Code code,
	    bool fatal, const char *fmt, ...)
{
	Kvdex__ErrorReply er = KVDEX__ERROR_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	st.code = code;
	st.message = msg;
	er.status = &st;
	er.fatal = fatal;
	KVDEX_LOG_INFO(LOG_COMP, "conn %llu: error %d%s: %s", (unsigned long long)conn->id, code,
		       fatal ? " (closing)" : "", msg);
	reply_msg(srv, conn, KVDEX_MSG_ERROR, req_id, &er.base, fatal ? KVDEX_REP_CLOSE : 0);
}

static void
reply_bad_payload(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	KVDEX_CTR_INC(srv, bad_protobuf);
	reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
		    "%s payload does not decode", kvdex_msg_type_name(req->type));
}

/* ---- Hello ------------------------------------------------------------- */

/* Compare in time that depends only on the lengths, not on where the first
 * difference is. */
static bool
token_eq(const char *given, const char *want)
{
	size_t lg = strlen(given);
	size_t lw = strlen(want);
	unsigned char d = lg != lw;

	for (size_t i = 0; i < lw; i++) {
		unsigned char g = i < lg ? (unsigned char)given[i] : 0;

		d |= (unsigned char)(g ^ (unsigned char)want[i]);
	}
	return d == 0;
}

static void
hello_ok(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
	 const Kvdex__Hello *m)
{
	Kvdex__HelloReply r = KVDEX__HELLO_REPLY__INIT;
	Kvdex__RegionDesc rd = KVDEX__REGION_DESC__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	bool attach = m->want_region_fd && conn->is_unix;

	rd.layout_version = KVDEX_LAYOUT_VERSION;
	rd.region_size = kvdex_region_readable(srv->rg);
	rd.region_max = srv->rg->max;
	rd.bucket_size = srv->rg->hdr.bucket_size;
	rd.header_size = KVDEX_HDR_SIZE;
	rd.hash_seed = srv->rg->hdr.hash_seed;
	rd.server_incarnation = srv->rg->hdr.server_incarnation;
	/* verbs: the MR named by the header, consistent with region_size
	 * (both are this thread's, set by the last publish). */
	rd.remote_addr = srv->rg->hdr.mr_addr;
	rd.rkey = srv->rg->hdr.mr_rkey;
	r.status = &st;
	r.protocol_version = KVDEX_PROTOCOL_VERSION;
	r.server_id = srv->server_id;
	r.cluster_epoch = srv->cfg.cluster_epoch;
	r.region = &rd;
	r.max_msg_bytes = (uint32_t)srv->cfg.max_msg_bytes;
	r.max_batch_events = (uint32_t)srv->cfg.max_batch_events;
	r.region_fd_attached = attach;
	r.unix_path = srv->unix_path;
	r.rdma_listen = srv->rdma_listen;
	conn->hello_w = true;
	KVDEX_LOG_INFO(LOG_COMP, "conn %llu: hello from '%s'%s", (unsigned long long)conn->id,
		       m->client_name, attach ? " (shm)" : "");
	reply_msg(srv, conn, KVDEX_MSG_HELLO_REPLY, req->req_id, &r.base,
		  KVDEX_REP_HELLO_OK | (attach ? KVDEX_REP_FD : 0));
}

static void
h_hello(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__Hello *m = kvdex__hello__unpack(NULL, req->len, req->payload);

	if (m == NULL) {
		KVDEX_CTR_INC(srv, bad_protobuf);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, true,
			    "Hello payload does not decode");
		return;
	}
	if (m->protocol_version != KVDEX_PROTOCOL_VERSION) {
		KVDEX_CTR_INC(srv, bad_version);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__BAD_VERSION, true,
			    "protocol version %u not supported (server speaks %u)",
			    m->protocol_version, KVDEX_PROTOCOL_VERSION);
	} else if (srv->cfg.auth_token[0] != '\0' &&
		   !token_eq(m->auth_token, srv->cfg.auth_token)) {
		KVDEX_CTR_INC(srv, bad_auth);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__BAD_AUTH, true, "bad auth token");
	} else {
		hello_ok(srv, conn, req, m);
	}
	kvdex__hello__free_unpacked(m, NULL);
}

/* ---- RegisterNamespace --------------------------------------------------- */

static void
ns_reply(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req, int rc,
	 uint16_t id, bool created)
{
	Kvdex__RegisterNamespaceReply r = KVDEX__REGISTER_NAMESPACE_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;

	switch (rc) {
	case 0:
		r.status = &st;
		r.ns_id = id;
		r.created = created;
		reply_msg(srv, conn, KVDEX_MSG_REGISTER_NS_REPLY, req->req_id, &r.base, 0);
		break;
	case -ENOENT:
		KVDEX_CTR_INC(srv, unknown_namespace);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__UNKNOWN_NAMESPACE, false,
			    "no such namespace");
		break;
	case -ENOSPC:
		reply_error(srv, conn, req->req_id, KVDEX__CODE__FULL, false,
			    "namespace table full (%llu)",
			    (unsigned long long)srv->cfg.max_namespaces);
		break;
	case -EINVAL:
		KVDEX_CTR_INC(srv, malformed_requests);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
			    "namespace string longer than %u bytes", KVDEX_NS_STR_MAX);
		break;
	default:
		reply_error(srv, conn, req->req_id, KVDEX__CODE__INTERNAL, false, "%s",
			    strerror(-rc));
		break;
	}
}

static void
h_register_ns(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__RegisterNamespace *m =
		kvdex__register_namespace__unpack(NULL, req->len, req->payload);
	struct kvdex_ns_key k;
	bool created = false;
	uint16_t id = 0;
	int rc;

	if (m == NULL) {
		reply_bad_payload(srv, conn, req);
		return;
	}
	k = (struct kvdex_ns_key){
		.model = m->model,
		.adapter = m->adapter,
		.tenant = m->tenant,
		.block_size = m->block_size,
		.hash_scheme = m->hash_scheme,
	};
	rc = kvdex_namespaces_get(srv->nss, &k, m->create, &id, &created);
	ns_reply(srv, conn, req, rc, id, created);
	kvdex__register_namespace__free_unpacked(m, NULL);
}

/* ---- RegisterWorker ------------------------------------------------------ */

static void
worker_reply(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
	     uint32_t worker_id, uint32_t dp_size, uint32_t first)
{
	Kvdex__RegisterWorkerReply r = KVDEX__REGISTER_WORKER_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	uint32_t slots[KVDEX_DP_SIZE_MAX];

	for (uint32_t i = 0; i < dp_size; i++) {
		slots[i] = first + i;
	}
	r.status = &st;
	r.worker_id = worker_id;
	r.n_slots = dp_size;
	r.slots = slots;
	reply_msg(srv, conn, KVDEX_MSG_REGISTER_WORKER_REPLY, req->req_id, &r.base, 0);
}

static void
h_register_worker(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__RegisterWorker *m = kvdex__register_worker__unpack(NULL, req->len, req->payload);
	uint32_t first = 0;
	int rc;

	if (m == NULL) {
		reply_bad_payload(srv, conn, req);
		return;
	}
	rc = kvdex_workers_register(srv->wt, m->worker_id, m->address, m->dp_size, &first);
	if (rc == 0) {
		worker_reply(srv, conn, req, m->worker_id, m->dp_size, first);
	} else if (rc == -EINVAL) {
		KVDEX_CTR_INC(srv, malformed_requests);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
			    "worker id must be nonzero, dp_size 1..%u, address <= %u bytes",
			    KVDEX_DP_SIZE_MAX, KVDEX_ADDR_MAX - 1);
	} else if (rc == -EEXIST) {
		reply_error(srv, conn, req->req_id, KVDEX__CODE__EXISTS, false,
			    "worker %u is registered with another dp_size", m->worker_id);
	} else if (rc == -ENOSPC) {
		reply_error(srv, conn, req->req_id, KVDEX__CODE__FULL, false,
			    "worker table full (%u of %llu slots used)",
			    kvdex_workers_slots_used(srv->wt),
			    (unsigned long long)srv->cfg.max_workers);
	} else {
		reply_error(srv, conn, req->req_id, KVDEX__CODE__INTERNAL, false, "%s",
			    strerror(-rc));
	}
	kvdex__register_worker__free_unpacked(m, NULL);
}

/* ---- Publish ----------------------------------------------------------- */

struct pub_ctx {
	uint16_t slot;
	uint64_t applied;
	uint64_t ignored;
	uint64_t full;
};

/* Check one event; 0 or an error already replied. */
static int
publish_check_event(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
		    const Kvdex__Event *e, size_t i)
{
	if (e->type == KVDEX__EVENT__TYPE__ALL_CLEARED) {
		if (e->tier_mask > 0xf) {
			KVDEX_CTR_INC(srv, malformed_requests);
			reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
				    "event %zu: tier_mask 0x%x has bits above the 4 tiers", i,
				    e->tier_mask);
			return -EINVAL;
		}
		return 0;
	}
	if (e->type != KVDEX__EVENT__TYPE__STORED && e->type != KVDEX__EVENT__TYPE__REMOVED &&
	    e->type != KVDEX__EVENT__TYPE__TOUCHED) {
		KVDEX_CTR_INC(srv, malformed_requests);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
			    "event %zu: unknown type %d", i, (int)e->type);
		return -EINVAL;
	}
	if (e->tier >= KVDEX_NR_TIERS || e->spec_ttl_ms > KVDEX_SPEC_TTL_MAX_MS) {
		KVDEX_CTR_INC(srv, malformed_requests);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
			    "event %zu: tier %u (max 3) or spec_ttl_ms %u (max %u) out of range", i,
			    e->tier, e->spec_ttl_ms, KVDEX_SPEC_TTL_MAX_MS);
		return -EINVAL;
	}
	if (!kvdex_namespaces_valid(srv->nss, e->ns_id)) {
		KVDEX_CTR_INC(srv, unknown_namespace);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__UNKNOWN_NAMESPACE, false,
			    "event %zu: unknown namespace %u", i, e->ns_id);
		return -ENOENT;
	}
	return 0;
}

/* A speculative-only batch (a router's guesses) may carry nothing but
 * speculative STOREDs: anything else would let a router change what a
 * worker really holds without going through the worker's seq stream. */
static int
publish_check_spec_only(struct kvdex_server *srv, struct kvdex_sconn *conn,
			const struct kvdex_req *req, const Kvdex__Publish *m)
{
	for (size_t i = 0; i < m->n_events; i++) {
		const Kvdex__Event *e = m->events[i];

		if (e->type != KVDEX__EVENT__TYPE__STORED || !e->speculative || e->fused) {
			KVDEX_CTR_INC(srv, malformed_requests);
			reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, false,
				    "event %zu: a speculative_only batch holds only speculative "
				    "STORED events",
				    i);
			return -EINVAL;
		}
	}
	return 0;
}

/* Step 1 of DESIGN §4: validate the whole batch. */
static int
publish_validate(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
		 const Kvdex__Publish *m, uint16_t *slot)
{
	int rc;

	if (m->n_events > srv->cfg.max_batch_events) {
		KVDEX_CTR_INC(srv, oversize_batches);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__TOO_LARGE, false,
			    "batch of %zu events over max-batch-events %llu", m->n_events,
			    (unsigned long long)srv->cfg.max_batch_events);
		return -E2BIG;
	}
	rc = kvdex_workers_slot(srv->wt, m->worker_id, m->dp_rank, slot);
	if (rc != 0) {
		KVDEX_CTR_INC(srv, unknown_worker);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__UNKNOWN_WORKER, false,
			    rc == -ESRCH ? "worker %u is not registered"
					 : "worker %u has no dp rank %u",
			    m->worker_id, m->dp_rank);
		return rc;
	}
	for (size_t i = 0; i < m->n_events; i++) {
		rc = publish_check_event(srv, conn, req, m->events[i], i);
		if (rc != 0) {
			return rc;
		}
	}
	return m->speculative_only ? publish_check_spec_only(srv, conn, req, m) : 0;
}

static void
publish_apply_event(struct kvdex_server *srv, struct pub_ctx *pc, const Kvdex__Event *e)
{
	struct kvdex_index_event ev;
	int rc;

	if (e->type == KVDEX__EVENT__TYPE__ALL_CLEARED) {
		kvdex_workers_clear(srv->wt, pc->slot, e->tier_mask);
		KVDEX_CTR_INC(srv, clears);
		pc->applied++;
		return;
	}
	ev = (struct kvdex_index_event){
		.type = (uint8_t)e->type,
		.tier = (uint8_t)e->tier,
		.spec = e->speculative,
		.fused = e->fused,
		.has_loc = e->has_loc,
		.ns = (uint16_t)e->ns_id,
		.slot = pc->slot,
		.key = e->key,
		.loc_addr = e->loc_addr,
		.loc_len = e->loc_len,
		.ttl_ms = e->spec_ttl_ms,
	};
	rc = kvdex_index_apply(srv->ix, &ev);
	if (rc == KVDEX_IX_APPLIED) {
		pc->applied++;
	} else {
		pc->ignored++;
		if (rc == KVDEX_IX_FULL) {
			pc->full++;
		} else if (rc < 0) {
			KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP, "event not applied: %s",
					    strerror(-rc));
		}
	}
}

/* Events of a batch touch random buckets of a table far larger than the
 * caches: start fetching the home bucket of an event a few places ahead, so
 * its misses overlap with the work on the current one. */
#define PUBLISH_PREFETCH_AHEAD 8u

static void
publish_apply_events(struct kvdex_server *srv, struct pub_ctx *pc, const Kvdex__Publish *m)
{
	for (size_t i = 0; i < m->n_events; i++) {
		if (i + PUBLISH_PREFETCH_AHEAD < m->n_events) {
			const Kvdex__Event *ahead = m->events[i + PUBLISH_PREFETCH_AHEAD];

			if (ahead->type != KVDEX__EVENT__TYPE__ALL_CLEARED) {
				kvdex_index_prefetch(srv->ix, (uint16_t)ahead->ns_id, ahead->key);
			}
		}
		publish_apply_event(srv, pc, m->events[i]);
	}
}

/* Step 2: incarnation. Returns the publisher, or NULL after an error reply
 * (stale, or out of memory). *fresh when its seq stream starts with this
 * batch (first batch seen, or a restart: then *purged too). */
static struct kvdex_publisher *
publish_incarnation(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
		    const Kvdex__Publish *m, uint16_t slot, bool *fresh, bool *purged)
{
	struct kvdex_publisher *p = kvdex_publishers_find(srv->pubs, slot);

	*purged = false;
	*fresh = false;
	if (p == NULL) {
		p = kvdex_publishers_add(srv->pubs, slot, m->incarnation, 0);
		if (p == NULL) {
			reply_error(srv, conn, req->req_id, KVDEX__CODE__INTERNAL, false,
				    "out of memory");
		}
		*fresh = true;
		return p;
	}
	if (m->incarnation < p->incarnation) {
		KVDEX_CTR_INC(srv, stale_incarnation);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__STALE_INCARNATION, false,
			    "incarnation %llu is older than %llu",
			    (unsigned long long)m->incarnation, (unsigned long long)p->incarnation);
		return NULL;
	}
	if (m->incarnation > p->incarnation) {
		/* The publisher restarted: everything it published before is
		 * gone from its engine. Purge its slot (all tiers). */
		kvdex_workers_clear(srv->wt, slot, 0);
		KVDEX_CTR_INC(srv, publisher_restarts);
		KVDEX_CTR_INC(srv, clears);
		p->incarnation = m->incarnation;
		*purged = true;
		*fresh = true;
	}
	return p;
}

static void
publish_reply(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
	      Kvdex__PublishReply *r, const struct pub_ctx *pc)
{
	Kvdex__Status st = KVDEX__STATUS__INIT;
	char msg[96];

	if (pc->full > 0) {
		/* Refused stores are reported as ignored with status OK: the
		 * rest of the batch did apply, and the publisher must not
		 * resend it. The message and index_full say why. */
		snprintf(msg, sizeof(msg), "index full: %llu stores refused",
			 (unsigned long long)pc->full);
		st.message = msg;
	}
	r->status = &st;
	r->applied = pc->applied;
	r->ignored = pc->ignored;
	reply_msg(srv, conn, KVDEX_MSG_PUBLISH_REPLY, req->req_id, &r->base, 0);
}

static void
publish_run(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
	    const Kvdex__Publish *m, uint16_t slot)
{
	Kvdex__PublishReply r = KVDEX__PUBLISH_REPLY__INIT;
	struct pub_ctx pc = {.slot = slot};
	struct kvdex_publisher *p;
	bool purged;
	bool fresh;

	p = publish_incarnation(srv, conn, req, m, slot, &fresh, &purged);
	if (p == NULL) {
		return;
	}
	r.purged = purged;
	/* A fresh stream starts wherever the publisher says it does. */
	r.expected_seq = fresh ? m->seq : p->last_seq + 1;
	if (!fresh && m->seq <= p->last_seq) {
		KVDEX_CTR_INC(srv, seq_duplicates);
		r.duplicate = true;
	} else {
		if (!fresh && m->seq > p->last_seq + 1) {
			KVDEX_CTR_INC(srv, seq_gaps);
			r.gap = true;
		}
		publish_apply_events(srv, &pc, m);
		p->last_seq = m->seq;
		KVDEX_CTR_INC(srv, publish_batches);
		KVDEX_CTR_ADD(srv, events_applied, pc.applied);
		KVDEX_CTR_ADD(srv, events_ignored, pc.ignored);
	}
	r.last_seq = p->last_seq;
	publish_reply(srv, conn, req, &r, &pc);
}

/*
 * A speculative-only batch: a router saying "this worker will soon hold these
 * blocks". The router is not the worker's publisher, so the batch bypasses
 * steps 2 and 3 (incarnation, seq) and leaves the publisher's state alone; a
 * later real STORED of the same block converts the speculative holder.
 */
static void
publish_run_spec(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req,
		 const Kvdex__Publish *m, uint16_t slot)
{
	Kvdex__PublishReply r = KVDEX__PUBLISH_REPLY__INIT;
	struct pub_ctx pc = {.slot = slot};

	publish_apply_events(srv, &pc, m);
	KVDEX_CTR_INC(srv, spec_publishes);
	KVDEX_CTR_ADD(srv, events_applied, pc.applied);
	KVDEX_CTR_ADD(srv, events_ignored, pc.ignored);
	publish_reply(srv, conn, req, &r, &pc);
}

static void
h_publish(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__Publish *m = kvdex__publish__unpack(NULL, req->len, req->payload);
	uint16_t slot;

	if (m == NULL) {
		reply_bad_payload(srv, conn, req);
		return;
	}
	if (publish_validate(srv, conn, req, m, &slot) == 0) {
		if (m->speculative_only) {
			publish_run_spec(srv, conn, req, m, slot);
		} else {
			publish_run(srv, conn, req, m, slot);
		}
	}
	kvdex__publish__free_unpacked(m, NULL);
}

/* ---- WorkerLoad -------------------------------------------------------- */

static void
h_worker_load(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__WorkerLoad *m = kvdex__worker_load__unpack(NULL, req->len, req->payload);
	Kvdex__WorkerLoadReply r = KVDEX__WORKER_LOAD_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	struct kvdex_worker_load load;
	uint16_t slot;

	if (m == NULL) {
		reply_bad_payload(srv, conn, req);
		return;
	}
	if (kvdex_workers_slot(srv->wt, m->worker_id, m->dp_rank, &slot) != 0) {
		KVDEX_CTR_INC(srv, unknown_worker);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__UNKNOWN_WORKER, false,
			    "worker %u dp rank %u is not registered", m->worker_id, m->dp_rank);
	} else {
		load = (struct kvdex_worker_load){
			.queued = m->queued,
			.running = m->running,
			.prefill_tokens = m->prefill_tokens,
			.kv_util_permille = m->kv_util_permille,
		};
		kvdex_workers_set_load(srv->wt, slot, &load, kvdex_index_now(srv->ix));
		KVDEX_CTR_INC(srv, worker_loads);
		r.status = &st;
		reply_msg(srv, conn, KVDEX_MSG_WORKER_LOAD_REPLY, req->req_id, &r.base, 0);
	}
	kvdex__worker_load__free_unpacked(m, NULL);
}

/* ---- Stats ----------------------------------------------------------------- */

static const char *const counter_names[] = {
#define KVDEX_CTR_NAME(n) #n,
	KVDEX_COUNTERS(KVDEX_CTR_NAME)
#undef KVDEX_CTR_NAME
};

#define NCOUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))

/* Counters, with the gauges filled in from their owners. */
static void
stats_snapshot(struct kvdex_server *srv, struct kvdex_counters *c)
{
	struct kvdex_index_stats is;
	uint64_t *dst = (uint64_t *)c;
	const uint64_t *src = (const uint64_t *)&srv->ctr;

	for (size_t i = 0; i < NCOUNTERS; i++) {
		dst[i] = uatomic_read(&src[i]);
	}
	kvdex_index_get_stats(srv->ix, &is);
	c->index_full = is.index_full;
	c->blocks = is.blocks;
	c->records = is.records;
	c->holders = is.holders;
	c->home_buckets = is.home_buckets;
	c->overflow_buckets = is.overflow_buckets;
	c->overflow_buckets_used = is.overflow_used;
	c->table_bytes = is.table_bytes;
	c->region_bytes = kvdex_region_readable(srv->rg);
	c->resizes = is.resizes;
	c->spec_expired = is.spec_expired;
	c->swept_holders = is.swept_holders;
	c->namespaces = kvdex_namespaces_count(srv->nss);
	c->workers = kvdex_workers_count(srv->wt);
	c->slots_used = kvdex_workers_slots_used(srv->wt);
	c->uptime_s = (kvdex_server_now_ns() - srv->start_ns) / 1000000000ull;
}

static void
h_stats(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__StatsRequest *m = kvdex__stats_request__unpack(NULL, req->len, req->payload);
	Kvdex__StatsReply r = KVDEX__STATS_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	Kvdex__Counter ctrs[NCOUNTERS];
	Kvdex__Counter *ptrs[NCOUNTERS];
	struct kvdex_counters c;
	const uint64_t *v = (const uint64_t *)&c;

	if (m == NULL) {
		reply_bad_payload(srv, conn, req);
		return;
	}
	kvdex__stats_request__free_unpacked(m, NULL);
	stats_snapshot(srv, &c);
	for (size_t i = 0; i < NCOUNTERS; i++) {
		kvdex__counter__init(&ctrs[i]);
		ctrs[i].name = (char *)counter_names[i];
		ctrs[i].value = v[i];
		ptrs[i] = &ctrs[i];
	}
	r.status = &st;
	r.n_counters = NCOUNTERS;
	r.counters = ptrs;
	reply_msg(srv, conn, KVDEX_MSG_STATS_REPLY, req->req_id, &r.base, 0);
}

/* ---- ListWorkers ----------------------------------------------------------- */

static void
worker_info_fill(struct kvdex_server *srv, uint16_t slot, Kvdex__WorkerInfo *wi, char *addr)
{
	struct kvdex_worker_row row;
	uint32_t now = kvdex_index_now(srv->ix);

	kvdex_workers_row(srv->wt, slot, &row);
	kvdex__worker_info__init(wi);
	memcpy(addr, row.addr, KVDEX_ADDR_MAX);
	addr[KVDEX_ADDR_MAX] = '\0';
	wi->worker_id = row.worker_id;
	wi->address = addr;
	wi->dp_size = row.dp_size;
	wi->dp_rank = row.dp_rank;
	wi->slot = slot;
	wi->queued = row.queued;
	wi->running = row.running;
	wi->prefill_tokens = row.prefill_tokens;
	wi->kv_util_permille = row.kv_util_permille;
	if (row.load_ticks == 0) {
		wi->load_age_ms = UINT64_MAX; /* never reported */
	} else if ((int32_t)(now - row.load_ticks) <= 0) {
		wi->load_age_ms = 0; /* reported at tick 0, stored as 1 */
	} else {
		wi->load_age_ms = (uint64_t)(now - row.load_ticks) * 1000u / KVDEX_TICKS_PER_SEC;
	}
	wi->holders = kvdex_index_slot_holders(srv->ix, slot);
}

static void
h_list_workers(struct kvdex_server *srv, struct kvdex_sconn *conn, const struct kvdex_req *req)
{
	Kvdex__ListWorkers *m = kvdex__list_workers__unpack(NULL, req->len, req->payload);
	Kvdex__ListWorkersReply r = KVDEX__LIST_WORKERS_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	uint32_t n = kvdex_workers_slots_used(srv->wt);
	Kvdex__WorkerInfo *wi;
	Kvdex__WorkerInfo **ptrs;
	char(*addrs)[KVDEX_ADDR_MAX + 1];

	if (m == NULL) {
		reply_bad_payload(srv, conn, req);
		return;
	}
	kvdex__list_workers__free_unpacked(m, NULL);
	wi = calloc(n + 1, sizeof(*wi));
	ptrs = calloc(n + 1, sizeof(*ptrs));
	addrs = calloc(n + 1, sizeof(*addrs));
	if (wi == NULL || ptrs == NULL || addrs == NULL) {
		reply_error(srv, conn, req->req_id, KVDEX__CODE__INTERNAL, false, "out of memory");
		goto out;
	}
	for (uint32_t s = 0; s < n; s++) {
		worker_info_fill(srv, (uint16_t)s, &wi[s], addrs[s]);
		ptrs[s] = &wi[s];
	}
	r.status = &st;
	r.n_workers = n;
	r.workers = ptrs;
	reply_msg(srv, conn, KVDEX_MSG_LIST_WORKERS_REPLY, req->req_id, &r.base, 0);
out:
	free(addrs);
	free(ptrs);
	free(wi);
}

/* ---- dispatch ------------------------------------------------------------- */

static const struct kvdex_cmd cmd_table[] = {
	{KVDEX_MSG_HELLO, h_hello, false},
	{KVDEX_MSG_REGISTER_NS, h_register_ns, true},
	{KVDEX_MSG_REGISTER_WORKER, h_register_worker, true},
	{KVDEX_MSG_PUBLISH, h_publish, true},
	{KVDEX_MSG_WORKER_LOAD, h_worker_load, true},
	{KVDEX_MSG_STATS, h_stats, true},
	{KVDEX_MSG_LIST_WORKERS, h_list_workers, true},
};

static const struct kvdex_cmd *
cmd_find(uint16_t type)
{
	for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++) {
		if (cmd_table[i].type == type) {
			return &cmd_table[i];
		}
	}
	return NULL;
}

void
kvdex_writer_handle(struct kvdex_server *srv, struct kvdex_req *req)
{
	struct kvdex_sconn *conn = req->conn;
	const struct kvdex_cmd *cmd;

	if (conn->dead_w) {
		goto out; /* a fatal error was answered: the rest is dropped */
	}
	cmd = cmd_find(req->type);
	if (cmd == NULL) {
		KVDEX_CTR_INC(srv, bad_frames);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__MALFORMED, true,
			    "message type %u is not a request", req->type);
	} else if (cmd->needs_hello && !conn->hello_w) {
		KVDEX_CTR_INC(srv, not_ready);
		reply_error(srv, conn, req->req_id, KVDEX__CODE__NOT_READY, true, "%s before Hello",
			    kvdex_msg_type_name(req->type));
	} else {
		cmd->fn(srv, conn, req);
	}
out:
	kvdex_sconn_put(conn);
	free(req);
}

/* ---- the thread ------------------------------------------------------------ */

uint32_t
kvdex_writer_ticks(const struct kvdex_server *srv)
{
	return (uint32_t)((kvdex_server_now_ns() - srv->start_ns) / TICK_NS);
}

static int
writer_wait(struct kvdex_server *srv)
{
	uint64_t now = kvdex_server_now_ns() - srv->start_ns;
	uint64_t next = (now / TICK_NS + 1) * TICK_NS;
	struct pollfd pfd = {.fd = srv->writer_efd, .events = POLLIN};
	int timeout = (int)((next - now + 999999) / 1000000);
	uint64_t v;

	if (poll(&pfd, 1, timeout) > 0 && read(srv->writer_efd, &v, sizeof(v)) < 0 &&
	    errno != EAGAIN) {
		return -errno;
	}
	return 0;
}

/* Drain the request queue. Returns how many were handled. */
static unsigned
writer_drain(struct kvdex_server *srv)
{
	struct cds_wfcq_node *node;
	unsigned n = 0;

	while ((node = cds_wfcq_dequeue_blocking(&srv->req_head, &srv->req_tail)) != NULL) {
		kvdex_writer_handle(srv, caa_container_of(node, struct kvdex_req, qn));
		if (++n % 64 == 0) {
			/* Long queues: keep the clock and the replies moving. */
			kvdex_index_tick(srv->ix, kvdex_writer_ticks(srv));
			if (replies_queued) {
				kvdex_server_kick(srv->io_efd);
				replies_queued = false;
			}
		}
	}
	return n;
}

static void *
writer_main(void *arg)
{
	struct kvdex_server *srv = arg;
	uint32_t last_tick = 0;

	rcu_register_thread();
	for (;;) {
		uint32_t now;

		if (writer_wait(srv) != 0) {
			KVDEX_LOG_ERR(LOG_COMP, "eventfd read: %s", strerror(errno));
			uatomic_set(&srv->io_failed, 1);
		}
		writer_drain(srv);
		now = kvdex_writer_ticks(srv);
		if (now != last_tick) {
			kvdex_index_tick(srv->ix, now);
			last_tick = now;
		}
		if (replies_queued) {
			kvdex_server_kick(srv->io_efd);
			replies_queued = false;
		}
		/* io stops queueing before it sets io_quiesced, so an empty
		 * queue after that means everything was handled. */
		if (uatomic_read(&srv->io_quiesced) &&
		    cds_wfcq_empty(&srv->req_head, &srv->req_tail)) {
			break;
		}
	}
	uatomic_set(&srv->writer_done, 1);
	kvdex_server_kick(srv->io_efd);
	rcu_unregister_thread();
	return NULL;
}

int
kvdex_writer_start(struct kvdex_server *srv)
{
	int rc = pthread_create(&srv->writer_thread, NULL, writer_main, srv);

	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "pthread_create(writer): %s", strerror(rc));
		return -rc;
	}
	srv->writer_started = true;
	return 0;
}

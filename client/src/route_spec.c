/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Speculative entries of routing decisions: "the chosen worker will soon
 * hold these blocks", published as speculative STORED events that expire
 * after spec_ttl_ms unless the worker's real STORED converts them (the
 * server turns a speculative holder into a real one on a real store).
 *
 * A router is not the worker's publisher, so these go out as Publish
 * batches with speculative_only set: the server checks that every event is
 * a speculative STORED and leaves the worker's incarnation and seq stream
 * alone (docs/PROTOCOL.md). Each server gets the events of the keys it owns
 * (rendezvous placement, as kvdex_publish()); all are sent first, then the
 * replies are collected, so the cost is one exchange whatever the number of
 * servers.
 *
 * This module frames its own requests over the client's connections
 * (client.c's request helpers are private to it); request ids follow the
 * same rule (top bit clear, never 0), and replies to other requests that
 * arrive meanwhile are skipped, as client.c does for late replies.
 *
 * Locking: none (the client's thread).
 */
#include "client/src/route_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/src/sock.h"
#include "common/frame.h"
#include "kvdex.pb-c.h"

struct spec_srv {
	Kvdex__Publish msg;
	uint32_t req_id;
	int rc; /* 1: nothing to send */
};

static uint32_t
spec_req_id(struct kvdex_client *c)
{
	c->next_req_id = (c->next_req_id + 1) & 0x7fffffffu;
	if (c->next_req_id == 0) {
		c->next_req_id = 1;
	}
	return c->next_req_id;
}

static int
spec_send(struct kvdex_client *c, unsigned i, struct spec_srv *ss)
{
	struct kvdex_conn *conn;
	size_t len = kvdex__publish__get_packed_size(&ss->msg);
	int rc = kvdex_client_ensure_conn(c, i);

	if (rc < 0) {
		return rc;
	}
	conn = c->srv[i].conn;
	if (len + KVDEX_FRAME_HDR_SIZE > conn->max_msg) {
		return -E2BIG;
	}
	if (len > c->sendcap) {
		uint8_t *nb = realloc(c->sendbuf, len);

		if (nb == NULL) {
			return -ENOMEM;
		}
		c->sendbuf = nb;
		c->sendcap = len;
	}
	kvdex__publish__pack(&ss->msg, c->sendbuf);
	ss->req_id = spec_req_id(c);
	rc = conn->ops->send_msg(conn, KVDEX_MSG_PUBLISH, ss->req_id, c->sendbuf, len);
	if (rc < 0) {
		kvdex_client_drop_conn(c, i);
	}
	return rc;
}

/* The error a refusal maps to (kvdex.h's table), its message kept. */
static int
spec_error(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m)
{
	Kvdex__ErrorReply *er = kvdex__error_reply__unpack(NULL, m->len, m->payload);
	int rc = -EIO;

	if (er == NULL) {
		return -EPROTO;
	}
	if (er->status != NULL) {
		switch (er->status->code) {
		case KVDEX__CODE__MALFORMED:
			rc = -EBADMSG;
			break;
		case KVDEX__CODE__UNKNOWN_WORKER:
			rc = -ESRCH;
			break;
		case KVDEX__CODE__UNKNOWN_NAMESPACE:
			rc = -ENOENT;
			break;
		case KVDEX__CODE__TOO_LARGE:
			rc = -E2BIG;
			break;
		default:
			break;
		}
		kvdex_client_set_error(c, "server %s: speculative publish: %s", c->srv[i].ep.name,
				       er->status->message != NULL ? er->status->message : "");
	}
	if (er->fatal) {
		kvdex_client_drop_conn(c, i);
	}
	kvdex__error_reply__free_unpacked(er, NULL);
	return rc;
}

static int
spec_wait(struct kvdex_client *c, unsigned i, uint32_t req_id, uint64_t deadline)
{
	struct kvdex_msg m;
	int rc;

	for (;;) {
		if (c->srv[i].conn == NULL) {
			return -ECONNRESET;
		}
		rc = c->srv[i].conn->ops->recv_msg(c->srv[i].conn, &m, kvdex_ms_left(deadline));
		if (rc < 0) {
			kvdex_client_drop_conn(c, i);
			return rc;
		}
		if (m.fd >= 0) {
			close(m.fd);
		}
		if (m.req_id != req_id) {
			continue; /* a late reply to an earlier request */
		}
		if (m.type == KVDEX_MSG_ERROR) {
			return spec_error(c, i, &m);
		}
		return m.type == KVDEX_MSG_PUBLISH_REPLY ? 0 : -EPROTO;
	}
}

/* Fill each server's batch with the events of the keys it owns. */
static void
spec_build(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns, const uint64_t *keys,
	   size_t n, size_t from, struct spec_srv *ss, Kvdex__Event **ptrs, Kvdex__Event *evs)
{
	const struct kvdex_client_ns *cns = &c->ns[ns];
	size_t used = 0;

	for (unsigned i = 0; i < c->nsrv; i++) {
		ss[i].msg.events = &ptrs[used];
		for (size_t k = from; k < n; k++) {
			if (cns->ids[i] == KVDEX_NS_NONE ||
			    kvdex_place(c->seeds, c->nsrv, cns->ns_hash, keys[k]) != i) {
				continue;
			}
			kvdex__event__init(&evs[used]);
			evs[used].type = KVDEX__EVENT__TYPE__STORED;
			evs[used].ns_id = cns->ids[i];
			evs[used].key = keys[k];
			evs[used].tier = r->o.spec_tier;
			evs[used].speculative = true;
			evs[used].spec_ttl_ms = r->o.spec_ttl_ms;
			ptrs[used] = &evs[used];
			used++;
			ss[i].msg.n_events++;
		}
		ss[i].rc = ss[i].msg.n_events > 0 ? 0 : 1;
	}
}

int
kvdex_route_speculate(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns,
		      const uint64_t *keys, size_t n, size_t from, uint32_t worker_id,
		      uint16_t dp_rank)
{
	struct spec_srv ss[KVDEX_MAX_SERVERS];
	Kvdex__Event **ptrs = calloc(n - from, sizeof(*ptrs));
	Kvdex__Event *evs = calloc(n - from, sizeof(*evs));
	uint64_t deadline;
	int first = 0, sent = 0;

	if (ptrs == NULL || evs == NULL) {
		free(ptrs);
		free(evs);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < c->nsrv; i++) {
		kvdex__publish__init(&ss[i].msg);
		ss[i].msg.worker_id = worker_id;
		ss[i].msg.dp_rank = dp_rank;
		ss[i].msg.speculative_only = true;
	}
	spec_build(r, c, ns, keys, n, from, ss, ptrs, evs);
	for (unsigned i = 0; i < c->nsrv; i++) {
		if (ss[i].rc == 0) {
			ss[i].rc = spec_send(c, i, &ss[i]);
		}
	}
	deadline = kvdex_now_ms() + (uint64_t)c->timeout_ms;
	for (unsigned i = 0; i < c->nsrv; i++) {
		if (ss[i].rc == 0) {
			ss[i].rc = spec_wait(c, i, ss[i].req_id, deadline);
		}
		if (ss[i].rc == 0) {
			sent += (int)ss[i].msg.n_events;
		} else if (ss[i].rc < 0 && first == 0) {
			first = ss[i].rc;
		}
	}
	free(ptrs);
	free(evs);
	return first < 0 ? first : sent;
}

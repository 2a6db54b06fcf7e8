/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tcp transport: control messages and one-sided read emulation share one
 * stream connection (TCP, or a unix socket when forced with unix: + tcp).
 *
 * post_reads sends one KVDEX_MSG_READ frame for the whole batch; the server's
 * io thread answers with one READ_REPLY carrying per-op status and the data.
 * poll_reads waits for that reply (matched by req_id) and scatters it into
 * the op buffers.
 *
 * Read request ids have the top bit set; the client's control ids never do,
 * so the two streams of requests cannot be confused. Frames arriving out of
 * turn are kept, never lost:
 *   - a control reply that arrives while poll_reads waits is copied onto a
 *     stash queue that recv_msg drains first;
 *   - the READ_REPLY of the posted batch arriving while recv_msg waits is
 *     scattered at once and the batch marked complete.
 * A READ_REPLY for an older batch (one that timed out) is dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/src/sock.h"
#include "common/frame.h"
#include "common/log.h"

#define TCP_READ_ID_BIT 0x80000000u

struct tcp_stash {
	struct tcp_stash *next;
	uint16_t type;
	uint32_t req_id;
	size_t len;
	uint8_t data[];
};

struct tcp_conn {
	struct kvdex_conn base;
	struct kvdex_sock sk;
	int send_timeout_ms;
	struct kvdex_read_op *ops;
	unsigned nops;
	uint32_t read_id;
	uint32_t read_seq;
	bool read_pending;
	int read_status; /* result of the completed batch */
	struct tcp_stash *stash_head, *stash_tail;
	struct tcp_stash *stash_out; /* returned by recv_msg, freed at the next one */
};

static int
tcp_connect(const struct kvdex_endpoint *ep, int timeout_ms, struct kvdex_conn **out)
{
	struct tcp_conn *tc = calloc(1, sizeof(*tc));
	int rc;

	if (tc == NULL) {
		return -ENOMEM;
	}
	rc = kvdex_sock_connect(&tc->sk, ep, timeout_ms);
	if (rc < 0) {
		free(tc);
		return rc;
	}
	tc->base.ops = &kvdex_transport_tcp;
	tc->base.max_msg = KVDEX_MAX_MSG_DEFAULT;
	tc->send_timeout_ms = timeout_ms;
	*out = &tc->base;
	return 0;
}

static int
tcp_attach_region(struct kvdex_conn *conn, int region_fd, uint64_t region_max)
{
	/* Nothing to map: every read goes through the server. */
	return 0;
}

static int
tcp_post_reads(struct kvdex_conn *conn, struct kvdex_read_op *ops, unsigned n)
{
	struct tcp_conn *tc = (struct tcp_conn *)conn;
	struct kvdex_read_req req[KVDEX_READ_MAX_OPS];
	int rc;

	if (n == 0 || n > KVDEX_READ_MAX_OPS) {
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		if (ops[i].len > KVDEX_READ_MAX_LEN) {
			return -EINVAL;
		}
		req[i].off = ops[i].off;
		req[i].len = ops[i].len;
		req[i].reserved = 0;
		ops[i].status = -EINPROGRESS;
	}
	tc->read_id = TCP_READ_ID_BIT | (++tc->read_seq & ~TCP_READ_ID_BIT);
	rc = kvdex_sock_send(&tc->sk, KVDEX_MSG_READ, tc->read_id, req, n * sizeof(req[0]), NULL, 0,
			     tc->send_timeout_ms);
	if (rc < 0) {
		return rc;
	}
	tc->ops = ops;
	tc->nops = n;
	tc->read_pending = true;
	tc->read_status = 0;
	return 0;
}

/* Copy a READ_REPLY payload into the posted ops. */
static int
tcp_scatter(struct tcp_conn *tc, const uint8_t *p, size_t len)
{
	size_t hdr = 8 + (size_t)tc->nops * sizeof(struct kvdex_read_rsp);
	const uint8_t *data = p + hdr;
	size_t left;
	uint32_t nops;

	if (len < 8) {
		return -EPROTO;
	}
	memcpy(&nops, p, sizeof(nops));
	if (nops != tc->nops || len < hdr) {
		return -EPROTO;
	}
	left = len - hdr;
	for (unsigned i = 0; i < tc->nops; i++) {
		struct kvdex_read_rsp rsp;

		memcpy(&rsp, p + 8 + i * sizeof(rsp), sizeof(rsp));
		if (rsp.status != 0) {
			tc->ops[i].status = rsp.status < 0 ? rsp.status : -EIO;
			continue;
		}
		if (rsp.len != tc->ops[i].len || rsp.len > left) {
			return -EPROTO;
		}
		memcpy(tc->ops[i].buf, data, rsp.len);
		tc->ops[i].status = 0;
		data += rsp.len;
		left -= rsp.len;
	}
	return left == 0 ? 0 : -EPROTO;
}

static int
tcp_stash(struct tcp_conn *tc, const struct kvdex_msg *m)
{
	struct tcp_stash *st = malloc(sizeof(*st) + m->len);

	if (st == NULL) {
		return -ENOMEM;
	}
	st->next = NULL;
	st->type = m->type;
	st->req_id = m->req_id;
	st->len = m->len;
	memcpy(st->data, m->payload, m->len);
	if (tc->stash_tail != NULL) {
		tc->stash_tail->next = st;
	} else {
		tc->stash_head = st;
	}
	tc->stash_tail = st;
	return 0;
}

/* A READ_REPLY (or an ERROR about a read) arrived: complete the batch if it
 * is ours, drop it otherwise. */
static void
tcp_read_reply(struct tcp_conn *tc, const struct kvdex_msg *m)
{
	int rc;

	if (!tc->read_pending || m->req_id != tc->read_id) {
		KVDEX_LOG_DEBUG("client.tcp", "dropping stale read reply %u", m->req_id);
		return;
	}
	if (m->type == KVDEX_MSG_READ_REPLY) {
		rc = tcp_scatter(tc, m->payload, m->len);
	} else {
		rc = -EIO; /* the server refused the READ frame itself */
	}
	if (rc < 0) {
		for (unsigned i = 0; i < tc->nops; i++) {
			tc->ops[i].status = rc;
		}
	}
	tc->read_status = rc;
	tc->read_pending = false;
}

static bool
tcp_is_read_frame(const struct kvdex_msg *m)
{
	return m->type == KVDEX_MSG_READ_REPLY ||
	       (m->type == KVDEX_MSG_ERROR && (m->req_id & TCP_READ_ID_BIT));
}

static int
tcp_poll_reads(struct kvdex_conn *conn, int timeout_ms)
{
	struct tcp_conn *tc = (struct tcp_conn *)conn;
	uint64_t deadline = kvdex_now_ms() + (uint64_t)timeout_ms;
	struct kvdex_msg m;
	int rc;

	while (tc->read_pending) {
		rc = kvdex_sock_recv(&tc->sk, &m, kvdex_ms_left(deadline));
		if (rc < 0) {
			tc->read_pending = false;
			return rc;
		}
		if (tcp_is_read_frame(&m)) {
			tcp_read_reply(tc, &m);
			continue;
		}
		if (m.fd >= 0) {
			close(m.fd);
		}
		rc = tcp_stash(tc, &m);
		if (rc < 0) {
			return rc;
		}
	}
	return tc->read_status == -EPROTO ? -EPROTO : 0;
}

static int
tcp_send_msg(struct kvdex_conn *conn, uint16_t type, uint32_t req_id, const void *payload,
	     size_t len)
{
	struct tcp_conn *tc = (struct tcp_conn *)conn;

	return kvdex_sock_send(&tc->sk, type, req_id, payload, len, NULL, 0, tc->send_timeout_ms);
}

static int
tcp_recv_msg(struct kvdex_conn *conn, struct kvdex_msg *msg, int timeout_ms)
{
	struct tcp_conn *tc = (struct tcp_conn *)conn;
	uint64_t deadline = kvdex_now_ms() + (uint64_t)timeout_ms;
	int rc;

	free(tc->stash_out);
	tc->stash_out = NULL;
	if (tc->stash_head != NULL) {
		struct tcp_stash *st = tc->stash_head;

		tc->stash_head = st->next;
		if (tc->stash_head == NULL) {
			tc->stash_tail = NULL;
		}
		tc->stash_out = st;
		msg->type = st->type;
		msg->req_id = st->req_id;
		msg->payload = st->data;
		msg->len = st->len;
		msg->fd = -1;
		return 0;
	}
	for (;;) {
		rc = kvdex_sock_recv(&tc->sk, msg, kvdex_ms_left(deadline));
		if (rc < 0) {
			return rc;
		}
		if (!tcp_is_read_frame(msg)) {
			return 0;
		}
		tcp_read_reply(tc, msg);
	}
}

static void
tcp_close(struct kvdex_conn *conn)
{
	struct tcp_conn *tc = (struct tcp_conn *)conn;

	if (tc == NULL) {
		return;
	}
	while (tc->stash_head != NULL) {
		struct tcp_stash *st = tc->stash_head;

		tc->stash_head = st->next;
		free(st);
	}
	free(tc->stash_out);
	kvdex_sock_close(&tc->sk);
	free(tc);
}

const struct kvdex_transport_ops kvdex_transport_tcp = {
	.name = "tcp",
	.connect = tcp_connect,
	.attach_region = tcp_attach_region,
	.post_reads = tcp_post_reads,
	.poll_reads = tcp_poll_reads,
	.send_msg = tcp_send_msg,
	.recv_msg = tcp_recv_msg,
	.close = tcp_close,
};

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verbs transport (docs/DESIGN.md §7.1; wire format common/verbs_wire.h).
 *
 * Connection: rdma_cm on a private non-blocking event channel, RC QP,
 * RDMA_PS_TCP; CONNECT_REQUEST private data = struct kvdex_cm_req (protocol
 * version, XXH3-128 of the auth token). rdma_cm picks the device, GID and
 * path MTU from the address; nothing here hard-codes them. A REJECTED
 * without kvdex data (Soft-RoCE sometimes rejects a first connect under
 * load) and UNREACHABLE are retried while the timeout allows.
 *
 * Reads: one landing buffer per connection, registered once
 * (IBV_ACCESS_LOCAL_WRITE) and re-registered only when a batch needs more
 * room. post_reads lays the batch out in it (64-byte aligned), then posts
 * the READs as linked WR lists of at most max_rd WRs (the QP's negotiated
 * max_rd_atomic), only the last WR of a list signaled, as many lists back to
 * back as the send queue's read budget holds; poll_reads busy-polls the CQ
 * (then sleeps on the completion channel) until every list completed or the
 * timeout, posting further lists as earlier ones complete, then copies the
 * images out. Every READ stays below the region_size of the header that
 * gave its rkey: the transport adopts mr_addr/mr_rkey/region_size from any
 * header image (offset 0) that validates with a newer mr_gen. An error or
 * flush completion fails the batch: -EIO, or -ECONNRESET when the peer is
 * gone or the rkey went stale (the client reconnects and gets a fresh one);
 * the wc status string is kept in conn->err.
 *
 * Messages: KVDEX_VERBS_RECV_DEPTH receives of KVDEX_VERBS_FRAG_SIZE bytes
 * are always posted; received bytes are appended to a stream buffer and
 * framed exactly like a socket's. A frame to send is cut into
 * SEND_WITH_IMM fragments of at most the server's frag_size. Credits per
 * verbs_wire.h: a data SEND needs two (the last is kept for a credit-only
 * SEND, sent once half the receives were re-posted with nothing to carry
 * the count); the immediate returns the receives re-posted since our
 * previous SEND.
 *
 * Waits: every wait is bounded by the caller's timeout. The CQ is polled for
 * BUSY_NS first, then the CQ is armed and the thread sleeps in poll(2) on
 * the completion channel and the CM channel (DISCONNECTED, DEVICE_REMOVAL).
 *
 * Teardown (close): rdma_disconnect, QP to ERR, a zero-length marker WR on
 * each queue, wait (bounded) until both come back, then destroy QP -> CQ
 * (events acked) -> comp channel -> MRs -> put PD -> ack CM events ->
 * destroy id -> destroy event channel. After DEVICE_REMOVAL only the
 * destroy calls run.
 *
 * A connection is used by one thread at a time; nothing here is locked
 * (the PD registry in common/verbs.c is).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/src/sock.h"
#include "common/frame.h"
#include "common/layout.h"
#include "common/log.h"
#include "common/verbs.h"

#define LOG_COMP "client.rdma"
#define RX_DEPTH KVDEX_VERBS_RECV_DEPTH
#define TX_SLOTS KVDEX_VERBS_RECV_DEPTH
#define FRAG KVDEX_VERBS_FRAG_SIZE
#define READ_BUDGET 128u /* READ WRs in the send queue at once */
#define MAX_LISTS 512u	 /* a batch of up to 512 ops (KVDEX_READ_MAX_OPS) */
#define CQ_BATCH 16
#define BUSY_NS 200000ull
#define CLOSE_DRAIN_MS 1000
#define CONNECT_TRIES 3

enum wr_tag {
	WR_RECV = 1,
	WR_SEND,
	WR_READ,
	WR_DRAIN_SQ,
	WR_DRAIN_RQ,
};

struct wr_ctx {
	enum wr_tag tag;
	uint32_t idx;
};

struct vb_conn {
	struct kvdex_conn base;
	struct rdma_event_channel *ech;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *ch;
	struct ibv_cq *cq;
	unsigned cq_unacked;
	bool armed;
	bool connected;
	bool device_removed;
	bool dead; /* QP or connection failed: every call returns dead_rc */
	int dead_rc;
	bool closing; /* draining in close: errors are expected */
	int send_timeout_ms;
	uint64_t cm_checked_ns; /* last look at the CM channel */
	/* messages */
	uint8_t *rx_buf;
	struct ibv_mr *rx_mr;
	struct wr_ctx rx_ctx[RX_DEPTH];
	uint8_t *tx_buf;
	struct ibv_mr *tx_mr;
	struct wr_ctx tx_ctx[TX_SLOTS];
	uint32_t tx_free[TX_SLOTS];
	unsigned ntx_free;
	uint32_t credits, peer_frag, reposted;
	uint32_t rx_posted; /* receives on the RQ */
	uint8_t *sbuf;	    /* received stream: [shead, stail) unconsumed */
	size_t scap, shead, stail;
	uint8_t *msg_out; /* the frame recv_msg returned last */
	size_t msg_cap;
	/* reads */
	uint8_t *land;
	size_t land_cap;
	struct ibv_mr *land_mr;
	uint32_t max_rd;
	uint64_t raddr;
	uint32_t rkey;
	uint64_t rsize;
	uint32_t mr_gen;
	bool have_gen;
	uint64_t incarnation;
	struct kvdex_read_op *ops;
	unsigned nops;
	size_t *op_land; /* landing offset of each op */
	bool *op_post;	 /* op is read (in range, len > 0) */
	unsigned cap_ops;
	struct ibv_send_wr *wrs;
	struct ibv_sge *sges;
	unsigned nwrs; /* READ WRs of the batch */
	unsigned next_wr;
	unsigned lists_out; /* posted, not completed */
	unsigned wrs_out;
	struct wr_ctx list_ctx[MAX_LISTS];
	unsigned list_len[MAX_LISTS];
	unsigned nlists;
	bool read_pending;
	bool read_failed;
	struct wr_ctx drain_sq, drain_rq;
	bool sq_drained, rq_drained;
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
vb_fail(struct vb_conn *vc, int rc, const char *fmt, const char *arg)
{
	if (!vc->dead && !vc->closing) {
		vc->dead = true;
		vc->dead_rc = rc;
		snprintf(vc->base.err, sizeof(vc->base.err), fmt, arg);
		KVDEX_LOG_INFO(LOG_COMP, "verbs connection failed: %s", vc->base.err);
	}
}

/* ---- CM events ---------------------------------------------------------------- */

/* Handle what the CM says after the connection is up. At most once per
 * millisecond unless forced: it costs a system call. */
static void
vb_cm_poll_at(struct vb_conn *vc, bool force)
{
	struct rdma_cm_event *ev;
	uint64_t now = now_ns();

	if (!force && now - vc->cm_checked_ns < 1000000ull) {
		return;
	}
	vc->cm_checked_ns = now;

	while (kvdex_verbs_get_cm_event(vc->ech, &ev) > 0) {
		enum rdma_cm_event_type t = ev->event;

		rdma_ack_cm_event(ev);
		switch (t) {
		case RDMA_CM_EVENT_DISCONNECTED:
			vc->connected = false;
			vb_fail(vc, -ECONNRESET, "%s", "server disconnected");
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			vc->device_removed = true;
			vb_fail(vc, -ECONNRESET, "%s", "RDMA device removed");
			break;
		case RDMA_CM_EVENT_TIMEWAIT_EXIT:
			/* The QP left timewait: we never reuse QPs. */
			break;
		case RDMA_CM_EVENT_ADDR_CHANGE:
			/* A moved address shows up as completion errors or
			 * DISCONNECTED; nothing to redo on a live connection. */
			break;
		case RDMA_CM_EVENT_ADDR_RESOLVED:
		case RDMA_CM_EVENT_ADDR_ERROR:
		case RDMA_CM_EVENT_ROUTE_RESOLVED:
		case RDMA_CM_EVENT_ROUTE_ERROR:
		case RDMA_CM_EVENT_CONNECT_REQUEST:
		case RDMA_CM_EVENT_CONNECT_RESPONSE:
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
		case RDMA_CM_EVENT_REJECTED:
		case RDMA_CM_EVENT_ESTABLISHED:
			/* Connection setup events: vb_cm_expect consumed those
			 * of our setup; none can come after ESTABLISHED. */
			break;
		case RDMA_CM_EVENT_MULTICAST_JOIN:
		case RDMA_CM_EVENT_MULTICAST_ERROR:
			/* We never join multicast groups. */
			break;
		default:
			KVDEX_LOG_INFO(LOG_COMP, "unexpected rdma_cm event %d", (int)t);
			break;
		}
	}
}

static void
vb_cm_poll(struct vb_conn *vc)
{
	vb_cm_poll_at(vc, false);
}

/* Wait for one CM event during connection setup. The caller acks it. */
static int
vb_cm_wait(struct vb_conn *vc, uint64_t deadline_ms, struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd p = {.fd = vc->ech->fd, .events = POLLIN};
		int rc = kvdex_verbs_get_cm_event(vc->ech, ev);

		if (rc != 0) {
			return rc < 0 ? rc : 0;
		}
		rc = poll(&p, 1, kvdex_ms_left(deadline_ms));
		if (rc == 0) {
			return -ETIMEDOUT;
		}
		if (rc < 0 && errno != EINTR) {
			return -errno;
		}
	}
}

/* Wait for `want`; other events map to errors. The event is acked here
 * except when returned in *keep (ESTABLISHED / REJECTED: private data). */
static int
vb_cm_expect(struct vb_conn *vc, enum rdma_cm_event_type want, uint64_t deadline_ms,
	     struct rdma_cm_event **keep)
{
	struct rdma_cm_event *ev;
	enum rdma_cm_event_type t;
	int rc = vb_cm_wait(vc, deadline_ms, &ev);

	if (rc != 0) {
		return rc;
	}
	t = ev->event;
	if (keep != NULL && (t == want || t == RDMA_CM_EVENT_REJECTED)) {
		*keep = ev;
		return 0;
	}
	rdma_ack_cm_event(ev);
	if (t == want) {
		return 0;
	}
	snprintf(vc->base.err, sizeof(vc->base.err), "rdma_cm: %s", rdma_event_str(t));
	switch (t) {
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return -EAGAIN; /* retried while time allows */
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		vc->device_removed = true;
		return -ENODEV;
	default:
		return -ECONNREFUSED;
	}
}

/* ---- setup ---------------------------------------------------------------------- */

static int
vb_post_recv(struct vb_conn *vc, uint32_t idx)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(vc->rx_buf + (size_t)idx * FRAG),
		.length = FRAG,
		.lkey = vc->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = {
		.wr_id = (uintptr_t)&vc->rx_ctx[idx],
		.sg_list = &sge,
		.num_sge = 1,
	};
	int rc = kvdex_verbs_post_recv(vc->id->qp, &wr);

	vc->rx_posted += rc == 0;
	return rc;
}

static int
vb_buffers(struct vb_conn *vc)
{
	int rc;

	if (posix_memalign((void **)&vc->rx_buf, 4096, (size_t)RX_DEPTH * FRAG) != 0 ||
	    posix_memalign((void **)&vc->tx_buf, 4096, (size_t)TX_SLOTS * FRAG) != 0) {
		return -ENOMEM;
	}
	rc = kvdex_verbs_reg_mr(vc->pd, vc->rx_buf, (size_t)RX_DEPTH * FRAG, IBV_ACCESS_LOCAL_WRITE,
				&vc->rx_mr);
	if (rc == 0) {
		rc = kvdex_verbs_reg_mr(vc->pd, vc->tx_buf, (size_t)TX_SLOTS * FRAG, 0, &vc->tx_mr);
	}
	if (rc != 0) {
		return rc;
	}
	for (uint32_t i = 0; i < TX_SLOTS; i++) {
		vc->tx_ctx[i] = (struct wr_ctx){.tag = WR_SEND, .idx = i};
		vc->tx_free[vc->ntx_free++] = TX_SLOTS - 1 - i;
	}
	for (uint32_t i = 0; i < MAX_LISTS; i++) {
		vc->list_ctx[i] = (struct wr_ctx){.tag = WR_READ, .idx = i};
	}
	vc->drain_sq.tag = WR_DRAIN_SQ;
	vc->drain_rq.tag = WR_DRAIN_RQ;
	for (uint32_t i = 0; i < RX_DEPTH; i++) {
		vc->rx_ctx[i] = (struct wr_ctx){.tag = WR_RECV, .idx = i};
		rc = vb_post_recv(vc, i);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

static int
vb_qp(struct vb_conn *vc)
{
	struct ibv_qp_init_attr a = {
		.send_cq = vc->cq,
		.recv_cq = vc->cq,
		.cap =
			{
				.max_send_wr = TX_SLOTS + READ_BUDGET + 1,
				.max_recv_wr = RX_DEPTH + 1,
				.max_send_sge = 1,
				.max_recv_sge = 1,
			},
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 0,
	};

	if (rdma_create_qp(vc->id, vc->pd, &a) != 0) {
		return errno != 0 ? -errno : -EIO;
	}
	return 0;
}

/* Verbs resources on the device rdma_cm resolved to (STYLE §7 order). */
static int
vb_resources(struct vb_conn *vc)
{
	struct ibv_context *ctx = vc->id->verbs;
	int rc;

	rc = kvdex_verbs_pd_get(ctx, &vc->pd);
	if (rc == 0) {
		rc = kvdex_verbs_comp_channel_create(ctx, &vc->ch);
	}
	if (rc == 0) {
		rc = kvdex_verbs_cq_create(ctx, (int)(RX_DEPTH + TX_SLOTS + READ_BUDGET + 4), vc,
					   vc->ch, &vc->cq);
	}
	if (rc == 0) {
		rc = vb_qp(vc);
	}
	if (rc == 0) {
		rc = vb_buffers(vc);
	}
	if (rc != 0) {
		snprintf(vc->base.err, sizeof(vc->base.err), "verbs setup: %s", strerror(-rc));
	}
	return rc;
}

static int
vb_resolve(struct vb_conn *vc, const struct kvdex_endpoint *ep, uint64_t deadline_ms)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai;
	int ms = kvdex_ms_left(deadline_ms);
	int rc;

	rc = getaddrinfo(ep->host, ep->port, &hints, &ai);
	if (rc != 0) {
		snprintf(vc->base.err, sizeof(vc->base.err), "%s", gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	rc = rdma_resolve_addr(vc->id, NULL, ai->ai_addr, ms > 0 ? ms : 1) == 0 ? 0 : -errno;
	freeaddrinfo(ai);
	if (rc != 0) {
		snprintf(vc->base.err, sizeof(vc->base.err), "rdma_resolve_addr: %s",
			 strerror(-rc));
		return rc == -ENODEV ? -ENODEV : -EHOSTUNREACH;
	}
	rc = vb_cm_expect(vc, RDMA_CM_EVENT_ADDR_RESOLVED, deadline_ms, NULL);
	if (rc == 0 && vc->id->verbs == NULL) {
		rc = -ENODEV;
	}
	if (rc == 0) {
		ms = kvdex_ms_left(deadline_ms);
		rc = rdma_resolve_route(vc->id, ms > 0 ? ms : 1) == 0 ? 0 : -errno;
	}
	if (rc == 0) {
		rc = vb_cm_expect(vc, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline_ms, NULL);
	}
	return rc;
}

static int
rej_errno(uint16_t code)
{
	switch (code) {
	case 1: /* BAD_VERSION */
		return -EPROTONOSUPPORT;
	case 2: /* BAD_AUTH */
		return -EACCES;
	case 4: /* MALFORMED */
		return -EPROTO;
	default:
		return -ECONNREFUSED;
	}
}

/* ESTABLISHED or REJECTED: take what the server said. Acks ev. */
static int
vb_connected(struct vb_conn *vc, struct rdma_cm_event *ev)
{
	struct kvdex_cm_rej rej;
	struct kvdex_cm_rep rep;
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;
	int rc = 0;

	if (ev->event == RDMA_CM_EVENT_REJECTED) {
		rc = kvdex_cm_rej_find(ev->param.conn.private_data, ev->param.conn.private_data_len,
				       &rej);
		if (rc == 0) {
			snprintf(vc->base.err, sizeof(vc->base.err), "rejected by the server: %.*s",
				 (int)rej.len, rej.reason);
			rc = rej_errno(rej.code);
		} else {
			snprintf(vc->base.err, sizeof(vc->base.err),
				 "rdma_cm: REJECTED (status %d)", ev->status);
			rc = -EAGAIN; /* no kvdex data: no listener yet, or a CM hiccup */
		}
		rdma_ack_cm_event(ev);
		return rc;
	}
	if (ev->param.conn.private_data == NULL || ev->param.conn.private_data_len < sizeof(rep)) {
		rc = -EPROTO;
	} else {
		memcpy(&rep, ev->param.conn.private_data, sizeof(rep));
		if (rep.magic != KVDEX_CM_MAGIC || rep.recv_depth < 2 ||
		    rep.frag_size < KVDEX_FRAME_HDR_SIZE) {
			rc = -EPROTO;
		}
	}
	rdma_ack_cm_event(ev);
	if (rc != 0) {
		snprintf(vc->base.err, sizeof(vc->base.err), "%s",
			 "bad accept data from the server");
		return rc;
	}
	vc->connected = true;
	vc->credits = rep.recv_depth;
	vc->peer_frag = rep.frag_size < FRAG ? rep.frag_size : FRAG;
	/* The reads the QP may have outstanding, as negotiated. */
	if (ibv_query_qp(vc->id->qp, &qa, IBV_QP_MAX_QP_RD_ATOMIC, &qi) == 0) {
		vc->max_rd = qa.max_rd_atomic;
	}
	if (vc->max_rd == 0) {
		vc->max_rd = 1;
	}
	if (vc->max_rd > READ_BUDGET) {
		vc->max_rd = READ_BUDGET;
	}
	return 0;
}

static int
vb_connect_req(struct vb_conn *vc, const char *token, uint64_t deadline_ms)
{
	struct kvdex_cm_req req = {
		.magic = KVDEX_CM_MAGIC,
		.protocol_version = KVDEX_PROTOCOL_VERSION,
		.recv_depth = RX_DEPTH,
		.frag_size = FRAG,
	};
	struct rdma_conn_param p = {
		.private_data = &req,
		.private_data_len = sizeof(req),
		.responder_resources = 0, /* the server never reads from us */
		.retry_count = 7,
		.rnr_retry_count = 7,
	};
	struct ibv_device_attr da;
	struct rdma_cm_event *ev = NULL;
	int rc;

	kvdex_verbs_token_digest(token, req.token_digest);
	rc = ibv_query_device(vc->id->verbs, &da);
	if (rc != 0) {
		return -rc;
	}
	/* Outstanding READs we ask for; the server grants up to its device's
	 * max_qp_rd_atom and the QP ends up with the minimum (read back in
	 * vb_connected). */
	p.initiator_depth =
		(uint8_t)(da.max_qp_init_rd_atom < (int)READ_BUDGET
				  ? (da.max_qp_init_rd_atom > 0 ? da.max_qp_init_rd_atom : 1)
				  : (int)READ_BUDGET);
	if (rdma_connect(vc->id, &p) != 0) {
		rc = -errno;
		snprintf(vc->base.err, sizeof(vc->base.err), "rdma_connect: %s", strerror(-rc));
		return rc;
	}
	rc = vb_cm_expect(vc, RDMA_CM_EVENT_ESTABLISHED, deadline_ms, &ev);
	if (rc != 0) {
		if (rc == -ETIMEDOUT) {
			snprintf(vc->base.err, sizeof(vc->base.err), "%s",
				 "no answer to the connect request");
		}
		return rc;
	}
	return vb_connected(vc, ev);
}

static void vb_destroy(struct vb_conn *vc);

static int
vb_connect_once(const struct kvdex_endpoint *ep, const char *token, uint64_t deadline_ms,
		struct vb_conn **out)
{
	struct vb_conn *vc = calloc(1, sizeof(*vc));
	int rc;

	if (vc == NULL) {
		return -ENOMEM;
	}
	vc->base.ops = &kvdex_transport_verbs;
	vc->base.max_msg = KVDEX_MAX_MSG_DEFAULT;
	vc->send_timeout_ms = (int)(deadline_ms - kvdex_now_ms());
	if (vc->send_timeout_ms < 1000) {
		vc->send_timeout_ms = 1000;
	}
	rc = kvdex_verbs_event_channel_create(&vc->ech);
	if (rc != 0) {
		snprintf(vc->base.err, sizeof(vc->base.err), "rdma_cm unavailable: %s",
			 strerror(-rc));
		rc = -ENODEV;
	} else if (rdma_create_id(vc->ech, &vc->id, vc, RDMA_PS_TCP) != 0) {
		rc = -errno;
	}
	if (rc == 0) {
		rc = vb_resolve(vc, ep, deadline_ms);
	}
	if (rc == 0) {
		rc = vb_resources(vc);
	}
	if (rc == 0) {
		rc = vb_connect_req(vc, token, deadline_ms);
	}
	*out = vc;
	return rc;
}

int
kvdex_verbs_connect(const struct kvdex_endpoint *ep, const char *auth_token, int timeout_ms,
		    struct kvdex_conn **out, char *err, size_t errlen)
{
	uint64_t deadline = kvdex_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
	struct vb_conn *vc = NULL;
	int rc = -ECONNREFUSED;

	for (int t = 0; t < CONNECT_TRIES; t++) {
		if (t > 0) {
			struct timespec ts = {0, 20000000L * t};

			if (kvdex_ms_left(deadline) <= 20 * t) {
				break;
			}
			nanosleep(&ts, NULL);
		}
		rc = vb_connect_once(ep, auth_token, deadline, &vc);
		if (rc == 0) {
			*out = &vc->base;
			return 0;
		}
		if (err != NULL && errlen > 0) {
			snprintf(err, errlen, "%s", vc != NULL ? vc->base.err : "");
		}
		vb_destroy(vc);
		vc = NULL;
		if (rc != -EAGAIN) {
			break;
		}
	}
	return rc == -EAGAIN ? -ECONNREFUSED : rc;
}

static int
vb_connect_op(const struct kvdex_endpoint *ep, int timeout_ms, struct kvdex_conn **out)
{
	return kvdex_verbs_connect(ep, NULL, timeout_ms, out, NULL, 0);
}

static int
vb_attach_region(struct kvdex_conn *conn, int region_fd, uint64_t region_max)
{
	return 0; /* nothing to map: reads are RDMA READs */
}

static int
vb_attach_remote(struct kvdex_conn *conn, uint64_t remote_addr, uint32_t rkey, uint64_t region_size)
{
	struct vb_conn *vc = (struct vb_conn *)conn;

	if (rkey == 0 || remote_addr == 0) {
		snprintf(vc->base.err, sizeof(vc->base.err), "%s",
			 "the server did not register its region for RDMA");
		return -EPROTONOSUPPORT;
	}
	vc->raddr = remote_addr;
	vc->rkey = rkey;
	vc->rsize = region_size;
	vc->have_gen = false; /* the first header read fixes mr_gen */
	return 0;
}

/* ---- sends ----------------------------------------------------------------------- */

static int
vb_post_send(struct vb_conn *vc, uint32_t slot, uint32_t len)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(vc->tx_buf + (size_t)slot * FRAG),
		.length = len,
		.lkey = vc->tx_mr->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = (uintptr_t)&vc->tx_ctx[slot],
		.sg_list = &sge,
		.num_sge = len > 0 ? 1 : 0,
		.opcode = IBV_WR_SEND_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(vc->reposted),
	};
	int rc = kvdex_verbs_post_send(vc->id->qp, &wr);

	if (rc != 0) {
		vc->tx_free[vc->ntx_free++] = slot;
		vb_fail(vc, -ECONNRESET, "post SEND: %s", strerror(-rc));
		return rc;
	}
	vc->credits--;
	vc->reposted = 0;
	return 0;
}

static void
vb_credit_only(struct vb_conn *vc)
{
	if (vc->dead || vc->reposted < RX_DEPTH / 2 || vc->credits < 1 || vc->ntx_free == 0) {
		return;
	}
	vb_post_send(vc, vc->tx_free[--vc->ntx_free], 0);
}

/* ---- completions ------------------------------------------------------------------ */

static int
vb_stream_append(struct vb_conn *vc, const uint8_t *p, size_t n)
{
	if (vc->shead > 0 && vc->stail + n > vc->scap) {
		memmove(vc->sbuf, vc->sbuf + vc->shead, vc->stail - vc->shead);
		vc->stail -= vc->shead;
		vc->shead = 0;
	}
	if (vc->stail + n > vc->scap) {
		size_t cap = vc->scap ? vc->scap : (64u << 10);
		uint8_t *nb;

		while (cap < vc->stail + n) {
			cap *= 2;
		}
		nb = realloc(vc->sbuf, cap);
		if (nb == NULL) {
			return -ENOMEM;
		}
		vc->sbuf = nb;
		vc->scap = cap;
	}
	memcpy(vc->sbuf + vc->stail, p, n);
	vc->stail += n;
	return 0;
}

static void
vb_recv_done(struct vb_conn *vc, const struct ibv_wc *wc, uint32_t idx)
{
	int rc;

	if (wc->wc_flags & IBV_WC_WITH_IMM) {
		vc->credits += ntohl(wc->imm_data);
	}
	if (wc->byte_len > 0 &&
	    vb_stream_append(vc, vc->rx_buf + (size_t)idx * FRAG, wc->byte_len) != 0) {
		vb_fail(vc, -ENOMEM, "%s", "out of memory for received data");
		return;
	}
	rc = vb_post_recv(vc, idx);
	if (rc != 0) {
		vb_fail(vc, -ECONNRESET, "re-post RECV: %s", strerror(-rc));
		return;
	}
	vc->reposted++;
}

static void vb_post_lists(struct vb_conn *vc);

static int
wc_errno(enum ibv_wc_status st)
{
	switch (st) {
	case IBV_WC_WR_FLUSH_ERR:  /* the QP went down */
	case IBV_WC_RETRY_EXC_ERR: /* the server stopped answering */
	case IBV_WC_RNR_RETRY_EXC_ERR:
	case IBV_WC_REM_ACCESS_ERR: /* an rkey past its grace period: reconnect */
	case IBV_WC_REM_INV_REQ_ERR:
		return -ECONNRESET;
	default:
		return -EIO;
	}
}

static void
vb_wc(struct vb_conn *vc, const struct ibv_wc *wc)
{
	const struct wr_ctx *x = (const struct wr_ctx *)(uintptr_t)wc->wr_id;

	switch (x->tag) {
	case WR_DRAIN_SQ:
		vc->sq_drained = true;
		return;
	case WR_DRAIN_RQ:
		vc->rq_drained = true;
		return;
	case WR_SEND:
		vc->tx_free[vc->ntx_free++] = x->idx;
		break;
	case WR_READ:
		/* Unsignaled READs of a failed list complete with errors too. */
		if (wc->status != IBV_WC_SUCCESS) {
			vc->read_failed = true;
		} else if (vc->read_pending && x->idx < vc->nlists && vc->list_len[x->idx] > 0) {
			vc->wrs_out -= vc->list_len[x->idx];
			vc->list_len[x->idx] = 0;
			vc->lists_out--;
		}
		break;
	case WR_RECV:
		vc->rx_posted--;
		break;
	}
	if (wc->status != IBV_WC_SUCCESS) {
		/* Only wr_id and status are valid on an error completion. */
		vb_fail(vc, wc_errno(wc->status), "completion error: %s",
			ibv_wc_status_str(wc->status));
		return;
	}
	if (x->tag == WR_RECV && !vc->dead && !vc->closing) {
		vb_recv_done(vc, wc, x->idx);
	}
}

/* Poll the CQ dry. Returns completions seen. */
static int
vb_progress(struct vb_conn *vc)
{
	struct ibv_wc wc[CQ_BATCH];
	int total = 0;
	int n;

	do {
		n = kvdex_verbs_poll_cq(vc->cq, CQ_BATCH, wc);
		if (n < 0) {
			vb_fail(vc, -EIO, "%s", "ibv_poll_cq failed");
			return total;
		}
		for (int i = 0; i < n; i++) {
			vb_wc(vc, &wc[i]);
		}
		total += n;
	} while (n == CQ_BATCH);
	if (total > 0 && !vc->dead && !vc->closing) {
		if (vc->read_pending && !vc->read_failed) {
			vb_post_lists(vc);
		}
		vb_credit_only(vc);
	}
	return total;
}

typedef bool (*vb_done_fn)(const struct vb_conn *vc);

/* Sleep until the CQ or the CM channel has something, or the deadline. */
static void
vb_sleep(struct vb_conn *vc, uint64_t deadline_ms)
{
	struct pollfd p[2] = {{.fd = vc->ch->fd, .events = POLLIN},
			      {.fd = vc->ech->fd, .events = POLLIN}};
	struct ibv_cq *cq;
	int ms = kvdex_ms_left(deadline_ms);

	if (poll(p, 2, ms > 100 ? 100 : ms) <= 0) {
		return;
	}
	if (p[0].revents & POLLIN) {
		while (kvdex_verbs_get_cq_event(vc->ch, &cq) > 0) {
			vc->cq_unacked++;
			vc->armed = false;
		}
		if (vc->cq_unacked >= 16) {
			ibv_ack_cq_events(vc->cq, vc->cq_unacked);
			vc->cq_unacked = 0;
		}
	}
	if (p[1].revents & POLLIN) {
		vb_cm_poll_at(vc, true);
	}
}

/*
 * Drive the connection until done(vc), failure or the deadline: busy-poll
 * for up to BUSY_NS (when busy), then arm the CQ, poll once more (a
 * completion that beat the arming raises no event) and sleep.
 */
static uint64_t
busy_ns(void)
{
	static uint64_t v;

	if (v == 0) {
		const char *e = getenv("KVDEX_VERBS_BUSY_US");

		v = e != NULL ? strtoull(e, NULL, 10) * 1000u + 1 : BUSY_NS;
	}
	return v;
}

static int
vb_wait(struct vb_conn *vc, vb_done_fn done, uint64_t deadline_ms, bool busy)
{
	uint64_t busy_until = now_ns() + (busy ? busy_ns() : 0);

	for (;;) {
		int n = vb_progress(vc);

		if (done(vc)) {
			return 0;
		}
		if (vc->dead && !vc->closing) {
			return vc->dead_rc;
		}
		if (kvdex_now_ms() >= deadline_ms) {
			return -ETIMEDOUT;
		}
		if (n > 0) {
			continue;
		}
		if (now_ns() < busy_until) {
			vb_cm_poll(vc);
			continue;
		}
		if (!vc->armed) {
			if (kvdex_verbs_req_notify(vc->cq) != 0) {
				vb_fail(vc, -EIO, "%s", "ibv_req_notify_cq failed");
				continue;
			}
			vc->armed = true;
			continue;
		}
		vb_sleep(vc, deadline_ms);
	}
}

/* ---- reads -------------------------------------------------------------------------- */

static int
vb_land_reserve(struct vb_conn *vc, size_t need)
{
	size_t cap = vc->land_cap ? vc->land_cap : (64u << 10);
	uint8_t *nb;
	int rc;

	if (need <= vc->land_cap) {
		return 0;
	}
	while (cap < need) {
		cap *= 2;
	}
	if (posix_memalign((void **)&nb, 4096, cap) != 0) {
		return -ENOMEM;
	}
	/* Re-registered only when the batch outgrows it: never per request. */
	kvdex_verbs_dereg_mr(&vc->land_mr, LOG_COMP);
	free(vc->land);
	vc->land = nb;
	vc->land_cap = cap;
	rc = kvdex_verbs_reg_mr(vc->pd, nb, cap, IBV_ACCESS_LOCAL_WRITE, &vc->land_mr);
	if (rc != 0) {
		free(vc->land);
		vc->land = NULL;
		vc->land_cap = 0;
	}
	return rc;
}

static int
vb_ops_reserve(struct vb_conn *vc, unsigned n)
{
	if (n <= vc->cap_ops) {
		return 0;
	}
	free(vc->op_land);
	free(vc->op_post);
	free(vc->wrs);
	free(vc->sges);
	vc->op_land = calloc(n, sizeof(*vc->op_land));
	vc->op_post = calloc(n, sizeof(*vc->op_post));
	vc->wrs = calloc(n, sizeof(*vc->wrs));
	vc->sges = calloc(n, sizeof(*vc->sges));
	if (vc->op_land == NULL || vc->op_post == NULL || vc->wrs == NULL || vc->sges == NULL) {
		vc->cap_ops = 0;
		return -ENOMEM;
	}
	vc->cap_ops = n;
	return 0;
}

/* Post further WR lists while the send queue's read budget allows. */
static void
vb_post_lists(struct vb_conn *vc)
{
	while (vc->next_wr < vc->nwrs) {
		unsigned len = vc->nwrs - vc->next_wr;
		unsigned li = vc->nlists;
		struct ibv_send_wr *first = &vc->wrs[vc->next_wr];
		int rc;

		if (len > vc->max_rd) {
			len = vc->max_rd;
		}
		if (vc->wrs_out + len > READ_BUDGET || li >= MAX_LISTS) {
			return;
		}
		for (unsigned k = 0; k < len; k++) {
			struct ibv_send_wr *w = &vc->wrs[vc->next_wr + k];

			w->wr_id = (uintptr_t)&vc->list_ctx[li];
			w->next = k + 1 < len ? w + 1 : NULL;
			w->send_flags = k + 1 < len ? 0 : IBV_SEND_SIGNALED;
		}
		/* One doorbell per list. */
		rc = kvdex_verbs_post_send(vc->id->qp, first);
		if (rc != 0) {
			vb_fail(vc, -ECONNRESET, "post READ: %s", strerror(-rc));
			vc->read_failed = true;
			return;
		}
		vc->list_len[li] = len;
		vc->nlists++;
		vc->lists_out++;
		vc->wrs_out += len;
		vc->next_wr += len;
	}
}

/* Lay the batch out in the landing buffer and build its WRs. */
static int
vb_plan(struct vb_conn *vc, struct kvdex_read_op *ops, unsigned n)
{
	size_t off = 0;
	int rc;

	rc = vb_ops_reserve(vc, n);
	for (unsigned i = 0; i < n && rc == 0; i++) {
		vc->op_land[i] = off;
		off += ((size_t)ops[i].len + KVDEX_CACHE_LINE - 1) &
		       ~(size_t)(KVDEX_CACHE_LINE - 1);
	}
	if (rc == 0) {
		rc = vb_land_reserve(vc, off);
	}
	if (rc != 0) {
		return rc;
	}
	vc->nwrs = 0;
	for (unsigned i = 0; i < n; i++) {
		struct ibv_send_wr *w = &vc->wrs[vc->nwrs];
		struct ibv_sge *sg = &vc->sges[vc->nwrs];

		ops[i].status = -EINPROGRESS;
		/* Never past the region_size that goes with our rkey. */
		vc->op_post[i] = ops[i].len > 0 && ops[i].off <= vc->rsize &&
				 ops[i].len <= vc->rsize - ops[i].off;
		if (!vc->op_post[i]) {
			ops[i].status = ops[i].len == 0 ? 0 : -ERANGE;
			continue;
		}
		sg->addr = (uintptr_t)(vc->land + vc->op_land[i]);
		sg->length = ops[i].len;
		sg->lkey = vc->land_mr->lkey;
		memset(w, 0, sizeof(*w));
		w->sg_list = sg;
		w->num_sge = 1;
		w->opcode = IBV_WR_RDMA_READ;
		w->wr.rdma.remote_addr = vc->raddr + ops[i].off;
		w->wr.rdma.rkey = vc->rkey;
		vc->nwrs++;
	}
	return 0;
}

static int
vb_post_reads(struct kvdex_conn *conn, struct kvdex_read_op *ops, unsigned n)
{
	struct vb_conn *vc = (struct vb_conn *)conn;
	int rc;

	if (n == 0 || n > MAX_LISTS) {
		return -EINVAL;
	}
	vb_cm_poll(vc);
	if (vc->dead) {
		return vc->dead_rc;
	}
	if (vc->read_pending || vc->rkey == 0) {
		return -EINVAL;
	}
	rc = vb_plan(vc, ops, n);
	if (rc != 0) {
		return rc;
	}
	vc->ops = ops;
	vc->nops = n;
	vc->next_wr = 0;
	vc->nlists = 0;
	vc->lists_out = 0;
	vc->wrs_out = 0;
	vc->read_failed = false;
	vc->read_pending = true;
	vb_post_lists(vc);
	if (vc->dead) {
		vc->read_pending = false;
		return vc->dead_rc;
	}
	return 0;
}

static bool
vb_reads_done(const struct vb_conn *vc)
{
	return vc->next_wr == vc->nwrs && vc->lists_out == 0;
}

/* A validated header with a newer mr_gen names the MR to read from now. */
static void
vb_adopt_hdr(struct vb_conn *vc, const struct kvdex_read_op *op)
{
	struct kvdex_region_hdr h;

	if (op->off != 0 || op->len < KVDEX_HDR_SIZE || op->status != 0) {
		return;
	}
	memcpy(&h, op->buf, sizeof(h));
	if (kvdex_hdr_check(&h) != 0 || h.mr_rkey == 0) {
		return;
	}
	if (vc->have_gen && h.server_incarnation == vc->incarnation &&
	    (int32_t)(h.mr_gen - vc->mr_gen) <= 0) {
		return;
	}
	if (vc->have_gen && (h.mr_rkey != vc->rkey || h.mr_addr != vc->raddr)) {
		KVDEX_LOG_DEBUG(LOG_COMP, "region MR %u -> %u (%llu bytes)", vc->mr_gen, h.mr_gen,
				(unsigned long long)h.region_size);
	}
	vc->raddr = h.mr_addr;
	vc->rkey = h.mr_rkey;
	vc->rsize = h.region_size;
	vc->mr_gen = h.mr_gen;
	vc->incarnation = h.server_incarnation;
	vc->have_gen = true;
}

static int
vb_poll_reads(struct kvdex_conn *conn, int timeout_ms)
{
	struct vb_conn *vc = (struct vb_conn *)conn;
	int rc;

	if (!vc->read_pending) {
		return -EINVAL;
	}
	rc = vb_wait(vc, vb_reads_done, kvdex_now_ms() + (uint64_t)timeout_ms, true);
	vc->read_pending = false;
	if (rc == 0 && vc->read_failed) {
		rc = vc->dead ? vc->dead_rc : -EIO;
	}
	if (rc != 0) {
		for (unsigned i = 0; i < vc->nops; i++) {
			vc->ops[i].status = rc;
		}
		return rc;
	}
	for (unsigned i = 0; i < vc->nops; i++) {
		struct kvdex_read_op *op = &vc->ops[i];

		if (vc->op_post[i]) {
			memcpy(op->buf, vc->land + vc->op_land[i], op->len);
			op->status = 0;
		}
	}
	/* After the copies: adopting may change what the next batch reads. */
	for (unsigned i = 0; i < vc->nops; i++) {
		vb_adopt_hdr(vc, &vc->ops[i]);
	}
	return 0;
}

/* ---- messages ------------------------------------------------------------------------- */

static bool
vb_can_send(const struct vb_conn *vc)
{
	return vc->credits >= 2 && vc->ntx_free > 0;
}

static int
vb_send_msg(struct kvdex_conn *conn, uint16_t type, uint32_t req_id, const void *payload,
	    size_t len)
{
	struct vb_conn *vc = (struct vb_conn *)conn;
	uint64_t deadline = kvdex_now_ms() + (uint64_t)vc->send_timeout_ms;
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	size_t total = sizeof(hdr) + len;
	size_t pos = 0;

	if (len > UINT32_MAX - sizeof(hdr)) {
		return -E2BIG;
	}
	vb_cm_poll(vc);
	if (vc->dead) {
		return vc->dead_rc;
	}
	kvdex_frame_hdr_encode(hdr, type, (uint32_t)len, req_id);
	while (pos < total) {
		uint32_t slot;
		uint32_t used = 0;
		uint8_t *dst;
		int rc = vb_wait(vc, vb_can_send, deadline, false);

		if (rc != 0) {
			return rc;
		}
		slot = vc->tx_free[--vc->ntx_free];
		dst = vc->tx_buf + (size_t)slot * FRAG;
		while (used < vc->peer_frag && pos < total) {
			size_t take = vc->peer_frag - used;
			const uint8_t *src;

			if (pos < sizeof(hdr)) {
				src = hdr + pos;
				take = take < sizeof(hdr) - pos ? take : sizeof(hdr) - pos;
			} else {
				src = (const uint8_t *)payload + (pos - sizeof(hdr));
				take = take < total - pos ? take : total - pos;
			}
			memcpy(dst + used, src, take);
			used += (uint32_t)take;
			pos += take;
		}
		rc = vb_post_send(vc, slot, used);
		if (rc != 0) {
			return vc->dead_rc;
		}
	}
	return 0;
}

static bool
vb_have_frame(const struct vb_conn *vc)
{
	struct kvdex_frame_hdr h;
	size_t avail = vc->stail - vc->shead;
	int rc = kvdex_frame_hdr_decode(vc->sbuf + vc->shead, avail, KVDEX_SOCK_MAX_FRAME, &h);

	/* A bad frame counts as "done": recv_msg reports it. */
	return rc != 0 && (rc < 0 || avail >= KVDEX_FRAME_HDR_SIZE + (size_t)h.len);
}

static int
vb_recv_msg(struct kvdex_conn *conn, struct kvdex_msg *msg, int timeout_ms)
{
	struct vb_conn *vc = (struct vb_conn *)conn;
	struct kvdex_frame_hdr h;
	size_t need;
	int rc;

	if (vc->sbuf == NULL || !vb_have_frame(vc)) {
		vb_cm_poll(vc);
		rc = vb_wait(vc, vb_have_frame, kvdex_now_ms() + (uint64_t)timeout_ms, false);
		if (rc != 0) {
			return rc;
		}
	}
	rc = kvdex_frame_hdr_decode(vc->sbuf + vc->shead, vc->stail - vc->shead,
				    KVDEX_SOCK_MAX_FRAME, &h);
	if (rc < 0) {
		vb_fail(vc, -EPROTO, "%s", "bad frame from the server");
		return -EPROTO;
	}
	need = KVDEX_FRAME_HDR_SIZE + (size_t)h.len;
	if (h.len > vc->msg_cap || vc->msg_out == NULL) {
		uint8_t *nb = realloc(vc->msg_out, h.len != 0 ? h.len : 1);

		if (nb == NULL) {
			return -ENOMEM;
		}
		vc->msg_out = nb;
		vc->msg_cap = h.len;
	}
	/* A copy: sends may append to the stream before the caller is done. */
	memcpy(vc->msg_out, vc->sbuf + vc->shead + KVDEX_FRAME_HDR_SIZE, h.len);
	vc->shead += need;
	if (vc->shead == vc->stail) {
		vc->shead = vc->stail = 0;
	}
	msg->type = h.type;
	msg->req_id = h.req_id;
	msg->payload = vc->msg_out;
	msg->len = h.len;
	msg->fd = -1;
	return 0;
}

/* ---- teardown ---------------------------------------------------------------------------- */

/* SQ: the marker is back. RQ: every RECV completed (see server/rdma.c
 * for why the RQ is counted rather than marked). */
static bool
vb_drained(const struct vb_conn *vc)
{
	return vc->sq_drained && vc->rx_posted == 0;
}

static void
vb_drain(struct vb_conn *vc)
{
	struct ibv_qp_attr qa = {.qp_state = IBV_QPS_ERR};
	struct ibv_send_wr swr = {
		.wr_id = (uintptr_t)&vc->drain_sq,
		.opcode = IBV_WR_SEND,
		.send_flags = IBV_SEND_SIGNALED,
	};
	int rc;

	if (vc->connected && rdma_disconnect(vc->id) != 0) {
		KVDEX_LOG_DEBUG(LOG_COMP, "rdma_disconnect: %s", strerror(errno));
	}
	rc = ibv_modify_qp(vc->id->qp, &qa, IBV_QP_STATE);
	if (rc != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "QP to ERR: %s", strerror(rc));
	}
	/* In the error state everything flushes in order: once the SQ marker
	 * is back and every RECV completed, no WR is left. A marker we cannot
	 * post: we stop waiting for the SQ. */
	vc->closing = true; /* flush errors are expected from here on */
	vc->read_pending = false;
	vc->sq_drained = kvdex_verbs_post_send(vc->id->qp, &swr) != 0;
	if (vb_wait(vc, vb_drained, kvdex_now_ms() + CLOSE_DRAIN_MS, false) != 0) {
		KVDEX_LOG_WARN(LOG_COMP,
			       "drain timed out (SQ %s, %u RECVs left): destroying the QP",
			       vc->sq_drained ? "drained" : "not drained", vc->rx_posted);
	}
}

static void
vb_destroy(struct vb_conn *vc)
{
	struct rdma_cm_event *ev;

	if (vc == NULL) {
		return;
	}
	if (vc->id != NULL && vc->id->qp != NULL && !vc->device_removed) {
		vb_drain(vc);
	}
	kvdex_verbs_destroy_qp(vc->id, LOG_COMP);
	kvdex_verbs_cq_destroy(&vc->cq, vc->cq_unacked, LOG_COMP);
	kvdex_verbs_comp_channel_destroy(&vc->ch, LOG_COMP);
	kvdex_verbs_dereg_mr(&vc->land_mr, LOG_COMP);
	kvdex_verbs_dereg_mr(&vc->rx_mr, LOG_COMP);
	kvdex_verbs_dereg_mr(&vc->tx_mr, LOG_COMP);
	kvdex_verbs_pd_put(&vc->pd, LOG_COMP);
	/* rdma_destroy_id waits for every event of the id to be acked. */
	while (vc->ech != NULL && kvdex_verbs_get_cm_event(vc->ech, &ev) > 0) {
		rdma_ack_cm_event(ev);
	}
	kvdex_verbs_destroy_id(&vc->id, LOG_COMP);
	kvdex_verbs_event_channel_destroy(&vc->ech, LOG_COMP);
	free(vc->land);
	free(vc->rx_buf);
	free(vc->tx_buf);
	free(vc->sbuf);
	free(vc->msg_out);
	free(vc->op_land);
	free(vc->op_post);
	free(vc->wrs);
	free(vc->sges);
	free(vc);
}

static void
vb_close(struct kvdex_conn *conn)
{
	vb_destroy((struct vb_conn *)conn);
}

const struct kvdex_transport_ops kvdex_transport_verbs = {
	.name = "verbs",
	.connect = vb_connect_op,
	.attach_region = vb_attach_region,
	.post_reads = vb_post_reads,
	.poll_reads = vb_poll_reads,
	.send_msg = vb_send_msg,
	.recv_msg = vb_recv_msg,
	.close = vb_close,
	.attach_remote = vb_attach_remote,
};

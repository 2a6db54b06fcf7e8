/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd's verbs transport (docs/DESIGN.md §7.1; the wire format is
 * common/verbs_wire.h). Runs on the io thread, inside its epoll loop.
 *
 * Listener: one rdma_cm id (RDMA_PS_TCP) on a non-blocking event channel in
 * epoll. The region is registered on the listener's device (the first device
 * for a wildcard address) and a CONNECT_REQUEST arriving on another device is
 * rejected: its QP could not read the region.
 *
 * CM events: at most CM_EVENTS_PER_WAKEUP per wakeup. Each event is copied
 * (private data included) and acked at once, before anything can destroy its
 * id, then handled in a switch over every event type. A CONNECT_REQUEST is
 * validated (magic, length, protocol version, token digest, max-conns,
 * device) and rejected with struct kvdex_cm_rej, counted, or accepted: setup
 * per STYLE §7 is comp channel -> CQ -> req_notify -> QP -> MRs -> every
 * receive posted -> accept.
 *
 * Data path: a verbs connection is a kvdex_sconn with an rdma pointer (see
 * io.c). Every RECV is appended to the connection's frame parser, exactly as
 * bytes from a socket, and re-posted at once. Replies leave the same reply
 * queue in SEND_WITH_IMM fragments of at most the peer's frag_size; several
 * small replies share one fragment. Credits (verbs_wire.h): a SEND needs
 * one; data SENDs leave the last one for a zero-byte credit-only SEND,
 * which goes out once half of our receives were re-posted with no data SEND
 * to carry the count. Every SEND is signaled (it frees its buffer slot).
 *
 * Teardown: the io side closes a connection (peer DISCONNECTED, fatal
 * error, shutdown) -> rdma_disconnect and QP to ERR -> a zero-length marker
 * WR on each queue -> when both markers come back (every WR posted before
 * them has completed or flushed) destroy QP -> CQ (its events acked) -> comp
 * channel -> MRs -> put PD -> destroy id. A drain that does not finish in
 * DRAIN_MS is cut short (destroying the QP stops all DMA, so the buffers
 * can go) and logged. After DEVICE_REMOVAL only the destroy calls run.
 *
 * wr_id points at a struct wr_ctx whose first member is its tag; on an
 * error completion only wr_id and status are used.
 *
 * Locking: none; io thread only (listen/fini run on main while the io thread
 * does not exist).
 */
#include "server/rdma.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/frame.h"
#include "common/log.h"
#include "common/verbs.h"
#include "kvdex.pb-c.h"

#define LOG_COMP "server.cm"
#define CM_EVENTS_PER_WAKEUP 32
#define CQ_BATCH 16
#define RX_DEPTH KVDEX_VERBS_RECV_DEPTH
#define TX_SLOTS KVDEX_VERBS_RECV_DEPTH
#define FRAG KVDEX_VERBS_FRAG_SIZE
#define DRAIN_MS 2000u
#define ACK_BATCH 16u
#define PRIV_MAX 256u

enum wr_tag {
	WR_RECV = 1,
	WR_SEND,
	WR_DRAIN_SQ,
	WR_DRAIN_RQ,
};

struct wr_ctx {
	enum wr_tag tag;
	uint32_t idx;
};

struct kvdex_rconn {
	enum kvdex_src_kind kind; /* KVDEX_SRC_RDMA_CQ: epoll data of the comp channel */
	struct kvdex_server *srv;
	struct kvdex_sconn *conn; /* NULL once the io side closed it */
	uint64_t conn_id;	  /* for logs */
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *ch;
	struct ibv_cq *cq;
	unsigned cq_unacked;
	uint8_t *rx_buf;
	struct ibv_mr *rx_mr;
	struct wr_ctx rx_ctx[RX_DEPTH];
	uint8_t *tx_buf;
	struct ibv_mr *tx_mr;
	struct wr_ctx tx_ctx[TX_SLOTS];
	uint32_t tx_free[TX_SLOTS];
	unsigned ntx_free;
	uint32_t credits;   /* peer receives we may consume */
	uint32_t peer_frag; /* bytes per SEND */
	uint32_t reposted;  /* our receives re-posted since our last SEND */
	uint32_t rx_posted; /* receives on the RQ (completed ones not counted) */
	struct wr_ctx drain_sq, drain_rq;
	bool in_epoll;
	bool lingering; /* closed with SENDs in flight: disconnect once they complete */
	bool failed;	/* the QP reported an error: nothing more will complete normally */
	bool draining;
	bool sq_drained, rq_drained;
	bool device_removed;
	bool peer_gone; /* DISCONNECTED (or setup failure) seen */
	uint64_t drain_deadline_ns;
	struct cds_list_head link; /* kvdex_rdma.conns */
};

struct kvdex_rdma {
	enum kvdex_src_kind kind; /* KVDEX_SRC_RDMA_CM */
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listen_id;
	struct ibv_context *ctx; /* the device the region is registered on */
	uint32_t max_qp_rd_atom;
	bool check_token;
	uint8_t token_digest[16];
	bool in_epoll;
	struct cds_list_head conns;
	unsigned ndraining;
};

/* A CM event copied out before it is acked. */
struct cm_ev {
	enum rdma_cm_event_type type;
	int status;
	struct rdma_cm_id *id;
	uint8_t initiator_depth;
	uint8_t responder_resources;
	uint8_t priv_len;
	uint8_t priv[PRIV_MAX];
};

/* ---- connections: setup and teardown -------------------------------------- */

static void
rconn_destroy(struct kvdex_server *srv, struct kvdex_rconn *rc)
{
	struct kvdex_rdma *r = srv->rdma;

	if (rc->in_epoll) {
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, rc->ch->fd, NULL);
	}
	/* STYLE §7: QP, CQ, comp channel, (MRs), PD, id. */
	kvdex_verbs_destroy_qp(rc->id, LOG_COMP);
	kvdex_verbs_cq_destroy(&rc->cq, rc->cq_unacked, LOG_COMP);
	kvdex_verbs_comp_channel_destroy(&rc->ch, LOG_COMP);
	kvdex_verbs_dereg_mr(&rc->rx_mr, LOG_COMP);
	kvdex_verbs_dereg_mr(&rc->tx_mr, LOG_COMP);
	free(rc->rx_buf);
	free(rc->tx_buf);
	kvdex_verbs_pd_put(&rc->pd, LOG_COMP);
	if (rc->id != NULL) {
		rc->id->context = NULL;
	}
	kvdex_verbs_destroy_id(&rc->id, LOG_COMP);
	if (rc->draining) {
		r->ndraining--;
	}
	cds_list_del(&rc->link);
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu: verbs resources destroyed",
			(unsigned long long)rc->conn_id);
	free(rc);
}

static int
rconn_post_recv(struct kvdex_rconn *rc, uint32_t idx)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(rc->rx_buf + (size_t)idx * FRAG),
		.length = FRAG,
		.lkey = rc->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = {
		.wr_id = (uintptr_t)&rc->rx_ctx[idx],
		.sg_list = &sge,
		.num_sge = 1,
	};
	int err = kvdex_verbs_post_recv(rc->id->qp, &wr);

	rc->rx_posted += err == 0;
	return err;
}

static int
rconn_buffers(struct kvdex_rconn *rc)
{
	int rc2;

	if (posix_memalign((void **)&rc->rx_buf, 4096, (size_t)RX_DEPTH * FRAG) != 0 ||
	    posix_memalign((void **)&rc->tx_buf, 4096, (size_t)TX_SLOTS * FRAG) != 0) {
		return -ENOMEM;
	}
	rc2 = kvdex_verbs_reg_mr(rc->pd, rc->rx_buf, (size_t)RX_DEPTH * FRAG,
				 IBV_ACCESS_LOCAL_WRITE, &rc->rx_mr);
	if (rc2 == 0) {
		rc2 = kvdex_verbs_reg_mr(rc->pd, rc->tx_buf, (size_t)TX_SLOTS * FRAG, 0,
					 &rc->tx_mr);
	}
	if (rc2 != 0) {
		return rc2;
	}
	for (uint32_t i = 0; i < TX_SLOTS; i++) {
		rc->tx_ctx[i] = (struct wr_ctx){.tag = WR_SEND, .idx = i};
		rc->tx_free[rc->ntx_free++] = TX_SLOTS - 1 - i;
	}
	for (uint32_t i = 0; i < RX_DEPTH; i++) {
		rc->rx_ctx[i] = (struct wr_ctx){.tag = WR_RECV, .idx = i};
		rc2 = rconn_post_recv(rc, i);
		if (rc2 != 0) {
			return rc2;
		}
	}
	rc->drain_sq.tag = WR_DRAIN_SQ;
	rc->drain_rq.tag = WR_DRAIN_RQ;
	return 0;
}

static int
rconn_qp(struct kvdex_rconn *rc)
{
	struct ibv_qp_init_attr a = {
		.send_cq = rc->cq,
		.recv_cq = rc->cq,
		.cap =
			{
				.max_send_wr = TX_SLOTS + 1, /* + the drain marker */
				.max_recv_wr = RX_DEPTH + 1,
				.max_send_sge = 1,
				.max_recv_sge = 1,
			},
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 0,
	};

	if (rdma_create_qp(rc->id, rc->pd, &a) != 0) {
		return errno != 0 ? -errno : -EIO;
	}
	return 0;
}

/* Allocate the verbs resources of an incoming connection. On failure the id
 * is left to the caller (it rejects and destroys it). */
static int
rconn_create(struct kvdex_server *srv, struct rdma_cm_id *id, const struct kvdex_cm_req *req,
	     struct kvdex_rconn **out)
{
	struct kvdex_rconn *rc = calloc(1, sizeof(*rc));
	struct epoll_event ev = {.events = EPOLLIN};
	int err;

	if (rc == NULL) {
		return -ENOMEM;
	}
	rc->kind = KVDEX_SRC_RDMA_CQ;
	rc->srv = srv;
	rc->id = id;
	cds_list_add_tail(&rc->link, &srv->rdma->conns);
	err = kvdex_verbs_pd_get(id->verbs, &rc->pd);
	if (err == 0) {
		err = kvdex_verbs_comp_channel_create(id->verbs, &rc->ch);
	}
	if (err == 0) {
		err = kvdex_verbs_cq_create(id->verbs, RX_DEPTH + TX_SLOTS + 4, rc, rc->ch,
					    &rc->cq);
	}
	if (err == 0) {
		err = kvdex_verbs_req_notify(rc->cq);
	}
	if (err == 0) {
		err = rconn_qp(rc);
	}
	if (err == 0) {
		err = rconn_buffers(rc);
	}
	if (err == 0) {
		ev.data.ptr = rc;
		err = epoll_ctl(srv->epfd, EPOLL_CTL_ADD, rc->ch->fd, &ev) == 0 ? 0 : -errno;
		rc->in_epoll = err == 0;
	}
	if (err != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "verbs connection setup: %s", strerror(-err));
		rc->id = NULL; /* the caller's */
		kvdex_verbs_destroy_qp(id, LOG_COMP);
		rconn_destroy(srv, rc);
		return err;
	}
	rc->credits = req->recv_depth;
	rc->peer_frag = req->frag_size < FRAG ? req->frag_size : FRAG;
	id->context = rc;
	*out = rc;
	return 0;
}

static void
rconn_post_drain(struct kvdex_rconn *rc)
{
	struct ibv_send_wr swr = {
		.wr_id = (uintptr_t)&rc->drain_sq,
		.opcode = IBV_WR_SEND,
		.send_flags = IBV_SEND_SIGNALED,
	};
	int err;

	/* In the error state every WR completes (flushed) in order: when the
	 * marker comes back, every SEND posted before it did. A marker that
	 * cannot be posted leaves the SQ to the drain timeout. The RQ is
	 * drained by count instead (every RECV completes, flushed or not): a
	 * marker RECV posted after the QP went to ERR is not flushed by every
	 * provider (rxe's user-space post_recv does not kick the kernel). */
	err = kvdex_verbs_post_send(rc->id->qp, &swr);
	if (err != 0) {
		KVDEX_LOG_INFO(LOG_COMP, "conn %llu: SQ drain marker: %s",
			       (unsigned long long)rc->conn_id, strerror(-err));
	}
}

static void rconn_disconnect(struct kvdex_rconn *rc);

void
kvdex_rdma_conn_close(struct kvdex_server *srv, struct kvdex_rconn *rc)
{
	rc->conn = NULL;
	if (rc->draining) {
		return;
	}
	rc->draining = true;
	srv->rdma->ndraining++;
	rc->drain_deadline_ns = kvdex_server_now_ns() + DRAIN_MS * 1000000ull;
	if (rc->device_removed) {
		rconn_destroy(srv, rc); /* after DEVICE_REMOVAL: destroy calls only */
		return;
	}
	if (rc->ntx_free < TX_SLOTS && !rc->failed && !rc->peer_gone) {
		/* The last replies (a fatal ErrorReply, say) are still going
		 * out: disconnecting now would flush them. */
		rc->lingering = true;
		return;
	}
	rconn_disconnect(rc);
}

static void
rconn_disconnect(struct kvdex_rconn *rc)
{
	struct ibv_qp_attr qa = {.qp_state = IBV_QPS_ERR};
	int err;

	rc->lingering = false;
	if (rdma_disconnect(rc->id) != 0) {
		/* EINVAL when the connection never got established. */
		KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu: rdma_disconnect: %s",
				(unsigned long long)rc->conn_id, strerror(errno));
	}
	/* rdma_disconnect moves a connected QP to ERR; one that never connected
	 * gets there here, so that its receives flush too. */
	err = ibv_modify_qp(rc->id->qp, &qa, IBV_QP_STATE);
	if (err != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "conn %llu: QP to ERR: %s",
			       (unsigned long long)rc->conn_id, strerror(err));
	}
	rconn_post_drain(rc);
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu: disconnecting, draining",
			(unsigned long long)rc->conn_id);
}

/* ---- sends ------------------------------------------------------------------ */

static int
rconn_post_send(struct kvdex_rconn *rc, uint32_t slot, uint32_t len)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(rc->tx_buf + (size_t)slot * FRAG),
		.length = len,
		.lkey = rc->tx_mr->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = (uintptr_t)&rc->tx_ctx[slot],
		.sg_list = &sge,
		.num_sge = len > 0 ? 1 : 0,
		.opcode = IBV_WR_SEND_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(rc->reposted),
	};
	int err = kvdex_verbs_post_send(rc->id->qp, &wr);

	if (err != 0) {
		rc->tx_free[rc->ntx_free++] = slot;
		return err;
	}
	rc->credits--;
	rc->reposted = 0;
	return 0;
}

/* Fill one fragment from the reply queue; returns its length. */
static uint32_t
rconn_fill(struct kvdex_sconn *c, uint8_t *dst, uint32_t room)
{
	uint32_t used = 0;

	while (used < room && c->wq_head != NULL) {
		struct kvdex_rep *rep = c->wq_head;
		size_t take = rep->len - c->woff;

		if (take > room - used) {
			take = room - used;
		}
		memcpy(dst + used, rep->data + c->woff, take);
		used += (uint32_t)take;
		c->woff += take;
		if (c->woff == rep->len) {
			c->wq_head = rep->next;
			if (c->wq_head == NULL) {
				c->wq_tail = NULL;
			}
			c->woff = 0;
			kvdex_rep_free(rep);
		}
	}
	return used;
}

int
kvdex_rdma_send(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	struct kvdex_rconn *rc = c->rdma;

	/* Data SENDs keep the last credit for a credit-only SEND. */
	while (c->wq_head != NULL && rc->credits >= 2 && rc->ntx_free > 0) {
		uint32_t slot = rc->tx_free[--rc->ntx_free];
		uint32_t len = rconn_fill(c, rc->tx_buf + (size_t)slot * FRAG, rc->peer_frag);
		int err = rconn_post_send(rc, slot, len);

		if (err != 0) {
			KVDEX_LOG_WARN(LOG_COMP, "conn %llu: post SEND: %s",
				       (unsigned long long)rc->conn_id, strerror(-err));
			KVDEX_CTR_INC(srv, rdma_qp_errors);
			return err;
		}
	}
	return 0;
}

/* Return credits with a zero-byte SEND when no data SEND carried them. */
static void
rconn_credit_only(struct kvdex_server *srv, struct kvdex_rconn *rc)
{
	if (rc->draining || rc->reposted < RX_DEPTH / 2 || rc->credits < 1 || rc->ntx_free == 0) {
		return;
	}
	if (rconn_post_send(rc, rc->tx_free[--rc->ntx_free], 0) != 0) {
		KVDEX_CTR_INC(srv, rdma_qp_errors);
	}
}

/* ---- completions ------------------------------------------------------------- */

static int
rconn_recv_done(struct kvdex_server *srv, struct kvdex_rconn *rc, const struct ibv_wc *wc,
		uint32_t idx)
{
	int err;

	if (wc->wc_flags & IBV_WC_WITH_IMM) {
		rc->credits += ntohl(wc->imm_data);
	}
	if (rc->draining) {
		return 0;
	}
	if (rc->conn != NULL && wc->byte_len > 0) {
		/* Copied into the parser's buffer before the receive is reused. */
		kvdex_io_conn_input(srv, rc->conn, rc->rx_buf + (size_t)idx * FRAG, wc->byte_len);
	}
	if (rc->draining) {
		return 0; /* the input closed the connection */
	}
	err = rconn_post_recv(rc, idx);
	if (err != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "conn %llu: re-post RECV: %s",
			       (unsigned long long)rc->conn_id, strerror(-err));
		return err;
	}
	rc->reposted++;
	return 0;
}

static int
rconn_wc(struct kvdex_server *srv, struct kvdex_rconn *rc, const struct ibv_wc *wc)
{
	const struct wr_ctx *x = (const struct wr_ctx *)(uintptr_t)wc->wr_id;

	switch (x->tag) {
	case WR_DRAIN_SQ:
		rc->sq_drained = true;
		return 0;
	case WR_DRAIN_RQ:
		rc->rq_drained = true;
		return 0;
	case WR_SEND:
		rc->tx_free[rc->ntx_free++] = x->idx;
		break;
	case WR_RECV:
		rc->rx_posted--;
		break;
	}
	if (wc->status != IBV_WC_SUCCESS) {
		/* Only wr_id and status are valid here. Flushes while we close
		 * are normal; anything else broke the QP. */
		if (rc->draining) {
			return 0;
		}
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 5, LOG_COMP,
				    "conn %llu: completion error: %s (vendor %#x)",
				    (unsigned long long)rc->conn_id, ibv_wc_status_str(wc->status),
				    wc->vendor_err);
		KVDEX_CTR_INC(srv, rdma_qp_errors);
		rc->failed = true;
		return wc->status == IBV_WC_WR_FLUSH_ERR ? -ECONNRESET : -EIO;
	}
	if (x->tag == WR_RECV) {
		return rconn_recv_done(srv, rc, wc, x->idx);
	}
	return 0;
}

/* Poll the CQ dry; may destroy rc. */
static void
rconn_poll(struct kvdex_server *srv, struct kvdex_rconn *rc)
{
	struct kvdex_sconn *c = rc->conn;
	struct ibv_wc wc[CQ_BATCH];
	int err = 0;
	int n;

	if (c != NULL) {
		kvdex_sconn_get(c);
	}
	do {
		n = kvdex_verbs_poll_cq(rc->cq, CQ_BATCH, wc);
		if (n < 0) {
			err = n;
			KVDEX_CTR_INC(srv, rdma_qp_errors);
		}
		for (int i = 0; i < n; i++) {
			int e = rconn_wc(srv, rc, &wc[i]);

			if (e != 0 && err == 0) {
				err = e;
			}
		}
	} while (n == CQ_BATCH);
	if (c != NULL) {
		if (rc->conn != NULL && err != 0) {
			kvdex_io_conn_close(srv, c);
		} else if (rc->conn != NULL) {
			kvdex_io_conn_flush(srv, c);
			if (rc->conn != NULL) {
				rconn_credit_only(srv, rc);
			}
		}
		kvdex_sconn_put(c);
	}
	if (rc->lingering && (rc->ntx_free == TX_SLOTS || rc->failed || err != 0)) {
		rconn_disconnect(rc);
	}
	if (rc->draining && !rc->lingering && rc->sq_drained && rc->rx_posted == 0) {
		rconn_destroy(srv, rc);
	}
}

void
kvdex_rdma_cq_event(struct kvdex_server *srv, struct kvdex_rconn *rc)
{
	struct ibv_cq *cq;
	int got;

	/* get -> ack (batched) -> re-arm -> poll dry; EAGAIN is spurious. */
	while ((got = kvdex_verbs_get_cq_event(rc->ch, &cq)) > 0) {
		rc->cq_unacked++;
	}
	if (got < 0) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 5, LOG_COMP, "ibv_get_cq_event: %s",
				    strerror(-got));
	}
	if (rc->cq_unacked >= ACK_BATCH) {
		ibv_ack_cq_events(rc->cq, rc->cq_unacked);
		rc->cq_unacked = 0;
	}
	if (kvdex_verbs_req_notify(rc->cq) != 0) {
		KVDEX_CTR_INC(srv, rdma_qp_errors);
	}
	rconn_poll(srv, rc);
}

/* ---- CM events ---------------------------------------------------------------- */

static void
cm_reject(struct rdma_cm_id *id, uint16_t code, const char *why)
{
	struct kvdex_cm_rej rej;

	kvdex_cm_rej_fill(&rej, code, why);
	if (rdma_reject(id, &rej, sizeof(rej)) != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "rdma_reject: %s", strerror(errno));
	}
}

static bool
digest_eq(const uint8_t *a, const uint8_t *b)
{
	uint8_t d = 0;

	for (unsigned i = 0; i < 16; i++) {
		d |= (uint8_t)(a[i] ^ b[i]);
	}
	return d == 0;
}

/* Validate a CONNECT_REQUEST: 0 or a proto Code with *why set. */
static uint16_t
cm_req_check(struct kvdex_server *srv, const struct cm_ev *e, struct kvdex_cm_req *req,
	     const char **why)
{
	struct kvdex_rdma *r = srv->rdma;

	if (e->priv_len < sizeof(*req)) {
		*why = "no kvdex connect data";
		return KVDEX__CODE__MALFORMED;
	}
	memcpy(req, e->priv, sizeof(*req));
	if (req->magic != KVDEX_CM_MAGIC) {
		*why = "bad connect data magic";
		return KVDEX__CODE__MALFORMED;
	}
	if (req->protocol_version != KVDEX_PROTOCOL_VERSION) {
		KVDEX_CTR_INC(srv, bad_version);
		*why = "protocol version not supported";
		return KVDEX__CODE__BAD_VERSION;
	}
	if (r->check_token && !digest_eq(req->token_digest, r->token_digest)) {
		KVDEX_CTR_INC(srv, bad_auth);
		*why = "bad auth token";
		return KVDEX__CODE__BAD_AUTH;
	}
	if (req->recv_depth < 2 || req->frag_size < KVDEX_FRAME_HDR_SIZE) {
		*why = "recv_depth or frag_size too small";
		return KVDEX__CODE__MALFORMED;
	}
	if (kvdex_io_quiesced()) {
		*why = "server shutting down";
		return KVDEX__CODE__INTERNAL;
	}
	if (uatomic_read(&srv->ctr.conns_active) >= srv->cfg.max_conns) {
		*why = "max-conns reached";
		return KVDEX__CODE__FULL;
	}
	if (e->id->verbs != r->ctx) {
		*why = "index not registered on this device";
		return KVDEX__CODE__INTERNAL;
	}
	return 0;
}

static int
cm_accept(struct kvdex_rdma *r, struct kvdex_rconn *rc, const struct cm_ev *e)
{
	struct kvdex_cm_rep rep = {
		.magic = KVDEX_CM_MAGIC,
		.protocol_version = KVDEX_PROTOCOL_VERSION,
		.recv_depth = RX_DEPTH,
		.frag_size = FRAG,
	};
	struct rdma_conn_param p = {
		.private_data = &rep,
		.private_data_len = sizeof(rep),
		/* The client READs: accept as many outstanding reads as it
		 * asks for, up to what the device allows. We never read. In a
		 * CONNECT_REQUEST event the CM reports the peer's initiator
		 * depth as our responder_resources (rdma_accept(3)). */
		.responder_resources = e->responder_resources < r->max_qp_rd_atom
					       ? e->responder_resources
					       : r->max_qp_rd_atom,
		.initiator_depth = 0,
		.retry_count = 7,
		.rnr_retry_count = 7,
	};

	if (rdma_accept(rc->id, &p) != 0) {
		return errno != 0 ? -errno : -EIO;
	}
	return 0;
}

static void
cm_connect_request(struct kvdex_server *srv, const struct cm_ev *e)
{
	struct kvdex_cm_req req;
	struct kvdex_rconn *rc = NULL;
	struct kvdex_sconn *c;
	const char *why = "";
	uint16_t code;
	int err;

	code = cm_req_check(srv, e, &req, &why);
	if (code == 0 && rconn_create(srv, e->id, &req, &rc) != 0) {
		code = KVDEX__CODE__INTERNAL;
		why = "out of verbs resources";
	}
	if (code != 0) {
		struct rdma_cm_id *id = e->id;

		KVDEX_LOG_INFO(LOG_COMP, "rejecting a verbs connection: %s", why);
		cm_reject(id, code, why);
		KVDEX_CTR_INC(srv, rdma_conns_rejected);
		kvdex_verbs_destroy_id(&id, LOG_COMP);
		return;
	}
	c = kvdex_io_conn_new_rdma(srv, rc);
	if (c == NULL) {
		cm_reject(rc->id, KVDEX__CODE__INTERNAL, "out of memory");
		KVDEX_CTR_INC(srv, rdma_conns_rejected);
		rconn_destroy(srv, rc);
		return;
	}
	rc->conn = c;
	rc->conn_id = c->id;
	err = cm_accept(srv->rdma, rc, e);
	if (err != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "rdma_accept: %s", strerror(-err));
		KVDEX_CTR_INC(srv, rdma_conns_rejected);
		kvdex_io_conn_close(srv, c);
		return;
	}
	KVDEX_CTR_INC(srv, rdma_conns_accepted);
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu: verbs connection accepted",
			(unsigned long long)c->id);
}

/* The connection is gone or never came up: close it through the io side. */
static void
cm_conn_gone(struct kvdex_server *srv, struct kvdex_rconn *rc, const char *what)
{
	if (rc == NULL) {
		return;
	}
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu: %s", (unsigned long long)rc->conn_id, what);
	rc->peer_gone = true;
	if (rc->conn != NULL) {
		kvdex_io_conn_close(srv, rc->conn);
	} else if (!rc->draining) {
		kvdex_rdma_conn_close(srv, rc);
	} else if (rc->lingering) {
		rconn_disconnect(rc); /* nobody left to receive them */
	}
}

static void
cm_device_removal(struct kvdex_server *srv, const struct cm_ev *e, struct kvdex_rconn *rc)
{
	struct kvdex_rdma *r = srv->rdma;

	if (e->id == r->listen_id) {
		/* The listener's device is gone: no new verbs connections. The
		 * id is destroyed at shutdown (destroy calls only until then). */
		KVDEX_LOG_ERR(LOG_COMP, "RDMA device removed: the verbs listener stops");
		return;
	}
	if (rc == NULL) {
		return;
	}
	rc->device_removed = true;
	if (rc->draining) {
		rconn_destroy(srv, rc);
	} else {
		cm_conn_gone(srv, rc, "device removed");
	}
}

static void
cm_dispatch(struct kvdex_server *srv, const struct cm_ev *e)
{
	struct kvdex_rconn *rc = e->id->context == srv->rdma ? NULL : e->id->context;

	switch (e->type) {
	case RDMA_CM_EVENT_CONNECT_REQUEST:
		cm_connect_request(srv, e);
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
		if (rc != NULL && rc->conn != NULL) {
			kvdex_io_conn_flush(srv, rc->conn);
		}
		break;
	case RDMA_CM_EVENT_DISCONNECTED:
		cm_conn_gone(srv, rc, "disconnected");
		break;
	case RDMA_CM_EVENT_REJECTED:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		/* Our accept did not complete (the client went away or
		 * rejected our REP): the connection never came up. */
		cm_conn_gone(srv, rc, rdma_event_str(e->type));
		break;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		cm_device_removal(srv, e, rc);
		break;
	case RDMA_CM_EVENT_TIMEWAIT_EXIT:
		/* The QP left timewait; we never reuse QPs, and this may arrive
		 * after the QP is already destroyed. */
		break;
	case RDMA_CM_EVENT_ADDR_CHANGE:
		/* The listener's address moved to another device or went away.
		 * Established connections keep working; nothing to redo here. */
		KVDEX_LOG_NOTICE(LOG_COMP, "rdma_cm: address change on the listener");
		break;
	case RDMA_CM_EVENT_ADDR_RESOLVED:
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_CONNECT_RESPONSE:
		/* Active-side events: the server never resolves or connects. */
		break;
	case RDMA_CM_EVENT_MULTICAST_JOIN:
	case RDMA_CM_EVENT_MULTICAST_ERROR:
		/* The server never joins multicast groups. */
		break;
	default:
		KVDEX_LOG_NOTICE(LOG_COMP, "rdma_cm: unexpected event %d", (int)e->type);
		break;
	}
}

void
kvdex_rdma_cm_event(struct kvdex_server *srv)
{
	struct kvdex_rdma *r = srv->rdma;

	for (int i = 0; i < CM_EVENTS_PER_WAKEUP; i++) {
		struct rdma_cm_event *ev;
		struct cm_ev e;
		int got = kvdex_verbs_get_cm_event(r->ch, &ev);

		if (got <= 0) {
			if (got < 0) {
				KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 5, LOG_COMP,
						    "rdma_get_cm_event: %s", strerror(-got));
			}
			return;
		}
		memset(&e, 0, sizeof(e));
		e.type = ev->event;
		e.status = ev->status;
		e.id = ev->id;
		/* param.conn is only meaningful for a connect request here. */
		if (e.type == RDMA_CM_EVENT_CONNECT_REQUEST) {
			e.priv_len = ev->param.conn.private_data_len;
			if (e.priv_len > 0 && ev->param.conn.private_data != NULL) {
				memcpy(e.priv, ev->param.conn.private_data, e.priv_len);
			} else {
				e.priv_len = 0;
			}
			e.initiator_depth = ev->param.conn.initiator_depth;
			e.responder_resources = ev->param.conn.responder_resources;
		}
		/* Ack once, now: nothing below may destroy an id with an
		 * unacked event. */
		rdma_ack_cm_event(ev);
		KVDEX_CTR_INC(srv, rdma_cm_events);
		KVDEX_LOG_DEBUG(LOG_COMP, "cm event %s (status %d)", rdma_event_str(e.type),
				e.status);
		cm_dispatch(srv, &e);
	}
}

/* ---- listener ------------------------------------------------------------------ */

static int
listen_bind(struct kvdex_rdma *r, const char *host, uint16_t port)
{
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;
	char ps[8];
	int rc;

	snprintf(ps, sizeof(ps), "%u", port);
	rc = getaddrinfo(host, ps, &hints, &ai);
	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "listen-rdma %s:%s: %s", host, ps, gai_strerror(rc));
		return -EINVAL;
	}
	rc = rdma_bind_addr(r->listen_id, ai->ai_addr) == 0 ? 0 : -errno;
	freeaddrinfo(ai);
	if (rc == 0 && rdma_listen(r->listen_id, 128) != 0) {
		rc = -errno;
	}
	return rc;
}

/* The device the region is registered on: the listener's, or (wildcard
 * address) the first one rdma_cm knows. */
static struct ibv_context *
listen_device(struct kvdex_rdma *r)
{
	struct ibv_context **l;
	struct ibv_context *ctx = NULL;
	int n = 0;

	if (r->listen_id->verbs != NULL) {
		return r->listen_id->verbs;
	}
	l = rdma_get_devices(&n);
	if (l != NULL && n > 0) {
		ctx = l[0]; /* librdmacm keeps its contexts open */
	}
	if (l != NULL) {
		rdma_free_devices(l);
	}
	return ctx;
}

static int
listen_region(struct kvdex_server *srv, struct kvdex_rdma *r)
{
	struct ibv_device_attr da;
	struct ibv_pd *pd;
	int rc;

	r->ctx = listen_device(r);
	if (r->ctx == NULL) {
		return -ENODEV;
	}
	rc = ibv_query_device(r->ctx, &da);
	if (rc != 0) {
		return -rc;
	}
	r->max_qp_rd_atom = da.max_qp_rd_atom > 255 ? 255 : (uint32_t)da.max_qp_rd_atom;
	rc = kvdex_verbs_pd_get(r->ctx, &pd);
	if (rc != 0) {
		return rc;
	}
	rc = kvdex_region_rdma_attach(srv->rg, pd);
	kvdex_verbs_pd_put(&pd, LOG_COMP); /* the region holds its own */
	return rc;
}

static int
listen_setup(struct kvdex_server *srv, const char *host, uint16_t port)
{
	struct kvdex_rdma *r = calloc(1, sizeof(*r));
	bool v6 = strchr(host, ':') != NULL;
	int rc;

	if (r == NULL) {
		return -ENOMEM;
	}
	r->kind = KVDEX_SRC_RDMA_CM;
	CDS_INIT_LIST_HEAD(&r->conns);
	srv->rdma = r;
	rc = kvdex_verbs_event_channel_create(&r->ch);
	if (rc == 0 && rdma_create_id(r->ch, &r->listen_id, r, RDMA_PS_TCP) != 0) {
		rc = -errno;
	}
	if (rc == 0) {
		rc = listen_bind(r, host, port);
	}
	if (rc == 0) {
		rc = listen_region(srv, r);
	}
	if (rc != 0) {
		return rc;
	}
	port = ntohs(rdma_get_src_port(r->listen_id));
	snprintf(srv->rdma_listen, sizeof(srv->rdma_listen), v6 ? "[%s]:%u" : "%s:%u", host, port);
	r->check_token = srv->cfg.auth_token[0] != '\0';
	kvdex_verbs_token_digest(srv->cfg.auth_token, r->token_digest);
	return 0;
}

int
kvdex_rdma_listen(struct kvdex_server *srv)
{
	const struct kvdex_config *cfg = &srv->cfg;
	const char *host = cfg->rdma_host;
	unsigned port = cfg->rdma_port;
	int rc;

	if (cfg->rdma_mode == KVDEX_RDMA_NONE) {
		return 0;
	}
	if (cfg->rdma_mode == KVDEX_RDMA_AUTO) {
		if (srv->tcp_fd < 0 || srv->tcp_port == 65535 || !kvdex_verbs_have_device()) {
			KVDEX_LOG_INFO(LOG_COMP, "listen-rdma auto: no RDMA device or no tcp "
						 "listener: verbs transport off");
			return 0;
		}
		host = cfg->tcp_host;
		port = srv->tcp_port + 1u;
	}
	rc = listen_setup(srv, host, (uint16_t)port);
	if (rc == 0) {
		return 0;
	}
	kvdex_rdma_fini(srv);
	if (cfg->rdma_mode == KVDEX_RDMA_AUTO) {
		KVDEX_LOG_WARN(LOG_COMP, "listen-rdma auto: cannot listen on %s:%u: %s; verbs off",
			       host, port, strerror(-rc));
		return 0;
	}
	KVDEX_LOG_ERR(LOG_COMP, "listen-rdma %s:%u: %s", host, port, strerror(-rc));
	return rc;
}

int
kvdex_rdma_start(struct kvdex_server *srv)
{
	struct kvdex_rdma *r = srv->rdma;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};

	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, r->ch->fd, &ev) != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "epoll_ctl(ADD rdma_cm): %s", strerror(errno));
		return -errno;
	}
	r->in_epoll = true;
	return 0;
}

/* ---- drain and shutdown ------------------------------------------------------- */

int
kvdex_rdma_timeout_ms(const struct kvdex_server *srv)
{
	return srv->rdma != NULL && srv->rdma->ndraining > 0 ? 100 : -1;
}

void
kvdex_rdma_tick(struct kvdex_server *srv)
{
	struct kvdex_rconn *rc, *tmp;
	uint64_t now;

	if (srv->rdma == NULL || srv->rdma->ndraining == 0) {
		return;
	}
	now = kvdex_server_now_ns();
	cds_list_for_each_entry_safe(rc, tmp, &srv->rdma->conns, link)
	{
		if (rc->draining && now >= rc->drain_deadline_ns) {
			KVDEX_LOG_WARN(
				LOG_COMP,
				"conn %llu: drain timed out (SQ %s, RQ %s): destroying the QP",
				(unsigned long long)rc->conn_id,
				rc->sq_drained ? "drained" : "not drained",
				rc->rx_posted == 0 ? "drained" : "not drained");
			rconn_destroy(srv, rc);
		}
	}
}

void
kvdex_rdma_drain_all(struct kvdex_server *srv, unsigned timeout_ms)
{
	uint64_t deadline = kvdex_server_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct epoll_event evs[32];

	if (srv->rdma == NULL) {
		return;
	}
	while (srv->rdma->ndraining > 0 && kvdex_server_now_ns() < deadline) {
		int n = epoll_wait(srv->epfd, evs, 32, 50);

		for (int i = 0; i < n; i++) {
			enum kvdex_src_kind *k = evs[i].data.ptr;

			if (*k == KVDEX_SRC_RDMA_CQ) {
				kvdex_rdma_cq_event(srv, evs[i].data.ptr);
			} else if (*k == KVDEX_SRC_RDMA_CM) {
				kvdex_rdma_cm_event(srv);
			}
		}
	}
	while (!cds_list_empty(&srv->rdma->conns)) {
		struct kvdex_rconn *rc =
			cds_list_first_entry(&srv->rdma->conns, struct kvdex_rconn, link);

		if (!rc->sq_drained || rc->rx_posted != 0) {
			KVDEX_LOG_WARN(LOG_COMP, "conn %llu: not drained at shutdown",
				       (unsigned long long)rc->conn_id);
		}
		rconn_destroy(srv, rc);
	}
}

void
kvdex_rdma_fini(struct kvdex_server *srv)
{
	struct kvdex_rdma *r = srv->rdma;

	if (r == NULL) {
		return;
	}
	while (!cds_list_empty(&r->conns)) {
		rconn_destroy(srv, cds_list_first_entry(&r->conns, struct kvdex_rconn, link));
	}
	if (r->in_epoll && srv->epfd >= 0) {
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, r->ch->fd, NULL);
	}
	kvdex_verbs_destroy_id(&r->listen_id, LOG_COMP);
	kvdex_verbs_event_channel_destroy(&r->ch, LOG_COMP);
	free(r);
	srv->rdma = NULL;
}

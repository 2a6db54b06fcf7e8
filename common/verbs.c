/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Verbs wrappers and the per-device PD registry (see verbs.h).
 *
 * The registry is a short list (one entry per device context in use),
 * searched linearly under a mutex. An entry lives while its refcount is
 * positive; ibv_dealloc_pd fails with EBUSY if an MR or QP still uses the
 * PD, which we log: it means a caller broke the teardown order.
 */
#include "common/verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"

struct pd_entry {
	struct pd_entry *next;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	unsigned refs;
};

static pthread_mutex_t pd_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pd_entry *pd_list;

bool
kvdex_verbs_have_device(void)
{
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);

	if (l != NULL) {
		ibv_free_device_list(l);
	}
	return n > 0;
}

void
kvdex_verbs_token_digest(const char *token, uint8_t out[16])
{
	XXH128_hash_t h;
	XXH128_canonical_t canon;

	memset(out, 0, 16);
	if (token == NULL || token[0] == '\0') {
		return;
	}
	h = XXH3_128bits(token, strlen(token));
	XXH128_canonicalFromHash(&canon, h);
	memcpy(out, canon.digest, 16);
}

int
kvdex_cm_rej_find(const void *data, size_t len, struct kvdex_cm_rej *rej)
{
	const uint8_t *p = data;
	uint32_t magic = KVDEX_CM_MAGIC;

	if (p == NULL) {
		return -ENOENT;
	}
	/* Some CMs prefix the consumer's data; scan 4-byte aligned offsets. */
	for (size_t off = 0; off + sizeof(*rej) <= len; off += 4) {
		if (memcmp(p + off, &magic, sizeof(magic)) == 0) {
			memcpy(rej, p + off, sizeof(*rej));
			if (rej->len > sizeof(rej->reason)) {
				rej->len = sizeof(rej->reason);
			}
			return 0;
		}
	}
	return -ENOENT;
}

void
kvdex_cm_rej_fill(struct kvdex_cm_rej *rej, uint16_t code, const char *reason)
{
	size_t n = strlen(reason);

	memset(rej, 0, sizeof(*rej));
	rej->magic = KVDEX_CM_MAGIC;
	rej->code = code;
	if (n > sizeof(rej->reason)) {
		n = sizeof(rej->reason);
	}
	memcpy(rej->reason, reason, n);
	rej->len = (uint16_t)n;
}

int
kvdex_verbs_pd_get(struct ibv_context *ctx, struct ibv_pd **out)
{
	struct pd_entry *e;
	int rc = 0;

	if (ctx == NULL) {
		return -ENODEV;
	}
	pthread_mutex_lock(&pd_lock);
	for (e = pd_list; e != NULL && e->ctx != ctx; e = e->next) {
	}
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		e->pd = ibv_alloc_pd(ctx);
		if (e->pd == NULL) {
			rc = errno != 0 ? -errno : -ENOMEM;
			free(e);
			goto out;
		}
		e->ctx = ctx;
		e->next = pd_list;
		pd_list = e;
	}
	e->refs++;
	*out = e->pd;
out:
	pthread_mutex_unlock(&pd_lock);
	return rc;
}

void
kvdex_verbs_pd_put(struct ibv_pd **pd, const char *comp)
{
	struct pd_entry **pp;

	if (pd == NULL || *pd == NULL) {
		return;
	}
	pthread_mutex_lock(&pd_lock);
	for (pp = &pd_list; *pp != NULL && (*pp)->pd != *pd; pp = &(*pp)->next) {
	}
	if (*pp != NULL && --(*pp)->refs == 0) {
		struct pd_entry *e = *pp;
		int rc = ibv_dealloc_pd(e->pd);

		if (rc != 0) {
			KVDEX_LOG_WARN(comp, "ibv_dealloc_pd: %s", strerror(rc));
		}
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&pd_lock);
	*pd = NULL;
}

int
kvdex_verbs_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access, struct ibv_mr **out)
{
	struct ibv_mr *mr = ibv_reg_mr(pd, addr, len, access);

	if (mr == NULL) {
		return errno != 0 ? -errno : -ENOMEM;
	}
	*out = mr;
	return 0;
}

void
kvdex_verbs_dereg_mr(struct ibv_mr **mr, const char *comp)
{
	int rc;

	if (mr == NULL || *mr == NULL) {
		return;
	}
	rc = ibv_dereg_mr(*mr);
	if (rc != 0) {
		KVDEX_LOG_WARN(comp, "ibv_dereg_mr: %s", strerror(rc));
	}
	*mr = NULL;
}

static int
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		return -errno;
	}
	return 0;
}

int
kvdex_verbs_comp_channel_create(struct ibv_context *ctx, struct ibv_comp_channel **out)
{
	struct ibv_comp_channel *ch = ibv_create_comp_channel(ctx);
	int rc;

	if (ch == NULL) {
		return errno != 0 ? -errno : -ENOMEM;
	}
	rc = set_nonblock(ch->fd);
	if (rc != 0) {
		ibv_destroy_comp_channel(ch);
		return rc;
	}
	*out = ch;
	return 0;
}

void
kvdex_verbs_comp_channel_destroy(struct ibv_comp_channel **ch, const char *comp)
{
	int rc;

	if (ch == NULL || *ch == NULL) {
		return;
	}
	rc = ibv_destroy_comp_channel(*ch);
	if (rc != 0) {
		KVDEX_LOG_WARN(comp, "ibv_destroy_comp_channel: %s", strerror(rc));
	}
	*ch = NULL;
}

int
kvdex_verbs_cq_create(struct ibv_context *ctx, int depth, void *cq_ctx, struct ibv_comp_channel *ch,
		      struct ibv_cq **out)
{
	struct ibv_cq *cq = ibv_create_cq(ctx, depth, cq_ctx, ch, 0);

	if (cq == NULL) {
		return errno != 0 ? -errno : -ENOMEM;
	}
	*out = cq;
	return 0;
}

void
kvdex_verbs_cq_destroy(struct ibv_cq **cq, unsigned unacked, const char *comp)
{
	int rc;

	if (cq == NULL || *cq == NULL) {
		return;
	}
	if (unacked > 0) {
		ibv_ack_cq_events(*cq, unacked);
	}
	rc = ibv_destroy_cq(*cq);
	if (rc != 0) {
		KVDEX_LOG_WARN(comp, "ibv_destroy_cq: %s", strerror(rc));
	}
	*cq = NULL;
}

int
kvdex_verbs_req_notify(struct ibv_cq *cq)
{
	int rc = ibv_req_notify_cq(cq, 0);

	return rc != 0 ? -rc : 0;
}

int
kvdex_verbs_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	int rc = ibv_poll_cq(cq, n, wc);

	return rc < 0 ? -EIO : rc;
}

int
kvdex_verbs_get_cq_event(struct ibv_comp_channel *ch, struct ibv_cq **cq)
{
	void *ctx;

	if (ibv_get_cq_event(ch, cq, &ctx) != 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return 0;
		}
		return errno != 0 ? -errno : -EIO;
	}
	return 1;
}

int
kvdex_verbs_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad = NULL;
	int rc = ibv_post_send(qp, wr, &bad);

	return rc != 0 ? -rc : 0;
}

int
kvdex_verbs_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr)
{
	struct ibv_recv_wr *bad = NULL;
	int rc = ibv_post_recv(qp, wr, &bad);

	return rc != 0 ? -rc : 0;
}

int
kvdex_verbs_event_channel_create(struct rdma_event_channel **out)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	int rc;

	if (ch == NULL) {
		return errno != 0 ? -errno : -ENODEV;
	}
	rc = set_nonblock(ch->fd);
	if (rc != 0) {
		rdma_destroy_event_channel(ch);
		return rc;
	}
	*out = ch;
	return 0;
}

void
kvdex_verbs_event_channel_destroy(struct rdma_event_channel **ch, const char *comp)
{
	if (ch == NULL || *ch == NULL) {
		return;
	}
	/* void in librdmacm: nothing to log. */
	rdma_destroy_event_channel(*ch);
	*ch = NULL;
}

int
kvdex_verbs_get_cm_event(struct rdma_event_channel *ch, struct rdma_cm_event **ev)
{
	if (rdma_get_cm_event(ch, ev) != 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return 0;
		}
		return errno != 0 ? -errno : -EIO;
	}
	return 1;
}

void
kvdex_verbs_destroy_id(struct rdma_cm_id **id, const char *comp)
{
	if (id == NULL || *id == NULL) {
		return;
	}
	if (rdma_destroy_id(*id) != 0) {
		KVDEX_LOG_WARN(comp, "rdma_destroy_id: %s", strerror(errno));
	}
	*id = NULL;
}

void
kvdex_verbs_destroy_qp(struct rdma_cm_id *id, const char *comp)
{
	int rc;

	if (id == NULL || id->qp == NULL) {
		return;
	}
	/* rdma_destroy_qp is void; ibv_destroy_qp's result is what we log. */
	rc = ibv_destroy_qp(id->qp);
	if (rc != 0) {
		KVDEX_LOG_WARN(comp, "ibv_destroy_qp: %s", strerror(rc));
	}
	id->qp = NULL;
}

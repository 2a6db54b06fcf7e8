/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Thin libibverbs / librdmacm wrappers shared by kvdexd and libkvdex
 * (docs/DESIGN.md §7.1, STYLE §4 and §7).
 *
 * Errors: every wrapper returns 0 or -errno. ibv_* calls that return a
 * positive errno become -rc, NULL from ibv_create_* / ibv_reg_mr becomes
 * -errno, rdma_* -1 becomes -errno, ibv_poll_cq < 0 becomes -EIO. Nothing
 * outside this file converts verbs errors.
 *
 * Protection domains: one per device context, reference counted and shared
 * by every user in the process (the server's listener, its connections and
 * its region MRs; every client connection on that device). The last put
 * deallocates it. The registry is guarded by a mutex: several client
 * threads, each with its own kvdex_client, may connect at once.
 *
 * Destroy helpers accept NULL, NULL the handle and log a failed destroy
 * (a leak we want to see) at warning level under the caller's component.
 */
#ifndef KVDEX_COMMON_VERBS_H
#define KVDEX_COMMON_VERBS_H

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/verbs_wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Is there at least one RDMA device (ibv_get_device_list)? Context: any. */
bool kvdex_verbs_have_device(void);

/* XXH3-128 of the auth token (XXH3_128bits), zeros for NULL or "". */
void kvdex_verbs_token_digest(const char *token, uint8_t out[16]);

/* Find a struct kvdex_cm_rej in REJECTED private data (the CM may prefix
 * it): a copy in *rej and 0, or -ENOENT when no kvdex magic is there. */
int kvdex_cm_rej_find(const void *data, size_t len, struct kvdex_cm_rej *rej);

/* Fill a reject message: code (proto Code) and a reason (truncated). */
void kvdex_cm_rej_fill(struct kvdex_cm_rej *rej, uint16_t code, const char *reason);

/*
 * Take a reference on the PD of a device context, allocating it on first use.
 * @return 0, -ENOMEM, -errno of ibv_alloc_pd.
 * Context: any thread. Ownership: release with kvdex_verbs_pd_put().
 */
int kvdex_verbs_pd_get(struct ibv_context *ctx, struct ibv_pd **out);

/* Drop a reference taken by kvdex_verbs_pd_get(); NULLs *pd. Accepts NULL. */
void kvdex_verbs_pd_put(struct ibv_pd **pd, const char *comp);

/* ibv_reg_mr. @return 0 or -errno. Ownership: kvdex_verbs_dereg_mr(). */
int kvdex_verbs_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access, struct ibv_mr **out);
void kvdex_verbs_dereg_mr(struct ibv_mr **mr, const char *comp);

/* A completion channel whose fd is non-blocking (for epoll / poll). */
int kvdex_verbs_comp_channel_create(struct ibv_context *ctx, struct ibv_comp_channel **out);
void kvdex_verbs_comp_channel_destroy(struct ibv_comp_channel **ch, const char *comp);

int kvdex_verbs_cq_create(struct ibv_context *ctx, int depth, void *cq_ctx,
			  struct ibv_comp_channel *ch, struct ibv_cq **out);
/* Acks `unacked` pending CQ events first (required before destroy). */
void kvdex_verbs_cq_destroy(struct ibv_cq **cq, unsigned unacked, const char *comp);

int kvdex_verbs_req_notify(struct ibv_cq *cq);
/* Completions polled (>= 0) or -EIO. */
int kvdex_verbs_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc);
/* Take one CQ event from a non-blocking channel: 1 (got one, not yet
 * acked), 0 (none: spurious wakeup), -errno. */
int kvdex_verbs_get_cq_event(struct ibv_comp_channel *ch, struct ibv_cq **cq);

int kvdex_verbs_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr);
int kvdex_verbs_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr);

/* An rdma_cm event channel whose fd is non-blocking. */
int kvdex_verbs_event_channel_create(struct rdma_event_channel **out);
void kvdex_verbs_event_channel_destroy(struct rdma_event_channel **ch, const char *comp);
/* 1 with *ev (ack it with rdma_ack_cm_event), 0 if none pending, -errno. */
int kvdex_verbs_get_cm_event(struct rdma_event_channel *ch, struct rdma_cm_event **ev);
void kvdex_verbs_destroy_id(struct rdma_cm_id **id, const char *comp);
void kvdex_verbs_destroy_qp(struct rdma_cm_id *id, const char *comp);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_VERBS_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd's verbs transport: the rdma_cm listener and the RC queue pairs of
 * verbs clients (docs/DESIGN.md §7.1, common/verbs_wire.h).
 *
 * Threads: kvdex_rdma_listen() and kvdex_rdma_fini() run on main (before the
 * io thread starts / after it ended); everything else runs on the io thread.
 */
#ifndef KVDEX_SERVER_RDMA_H
#define KVDEX_SERVER_RDMA_H

#include <stdbool.h>

#include "server/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Start the rdma_cm listener named by --listen-rdma (after the tcp listener
 * is bound: auto uses its host and port + 1), register the region on the
 * listener's device and fill srv->rdma_listen.
 * @return 0 (also when auto finds no device or cannot bind: a warning),
 *         -errno when an explicit address fails (kvdexd exits 1).
 * Context: main thread, before the writer and io threads start.
 */
int kvdex_rdma_listen(struct kvdex_server *srv);

/* Add the CM event channel to the io thread's epoll. Context: main. */
int kvdex_rdma_start(struct kvdex_server *srv);

/* epoll callbacks (io thread). */
void kvdex_rdma_cm_event(struct kvdex_server *srv);
void kvdex_rdma_cq_event(struct kvdex_server *srv, struct kvdex_rconn *rc);

/* Move the connection's reply queue into SENDs as credits allow.
 * @return 0, or -errno when the QP failed (the caller closes). io thread. */
int kvdex_rdma_send(struct kvdex_server *srv, struct kvdex_sconn *c);

/* The io side closed the connection: disconnect, then drain and destroy the
 * QP asynchronously. io thread. */
void kvdex_rdma_conn_close(struct kvdex_server *srv, struct kvdex_rconn *rc);

/* epoll_wait timeout while connections drain (-1: none). io thread. */
int kvdex_rdma_timeout_ms(const struct kvdex_server *srv);
/* Destroy connections whose drain timed out. io thread. */
void kvdex_rdma_tick(struct kvdex_server *srv);
/* At the end of the io thread: wait (bounded) for every closing connection
 * to drain, then destroy them all. */
void kvdex_rdma_drain_all(struct kvdex_server *srv, unsigned timeout_ms);

/* Destroy the listener and the event channel. Accepts srv->rdma == NULL.
 * Context: main, after the io thread ended and the region (its MRs and PD
 * reference) was destroyed. */
void kvdex_rdma_fini(struct kvdex_server *srv);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_RDMA_H */

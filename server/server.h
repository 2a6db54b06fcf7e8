/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdexd: the pieces every thread of the daemon shares.
 *
 * Threads (docs/DESIGN.md §4):
 *   main    parses the configuration, builds the region, starts the others,
 *           waits on a signalfd, then shuts down in order;
 *   io      one epoll loop: listeners, connections, an eventfd. Answers tcp
 *           READ frames itself, queues every other frame to the writer;
 *   writer  the only mutator of the region: decodes requests, runs the
 *           command table, ticks the clock every 1/16 s.
 *
 * Messages, not shared state: io -> writer requests (struct kvdex_req) and
 * writer -> io replies (struct kvdex_rep) travel on cds_wfcq queues, each
 * holding a reference (urcu_ref) on its connection; an eventfd per side
 * wakes the consumer. Counters are updated with uatomic ops from both
 * threads and read by the writer for Stats.
 */
#ifndef KVDEX_SERVER_SERVER_H
#define KVDEX_SERVER_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <urcu/compiler.h>
#include <urcu/list.h>
#include <urcu/ref.h>
#include <urcu/uatomic.h>
#include <urcu/wfcqueue.h>

#include "server/config.h"
#include "server/index.h"
#include "server/region.h"
#include "server/registry.h"
#include "server/workers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every counter reported by Stats, in reporting order. */
#define KVDEX_COUNTERS(X)                                                                          \
	X(conns_accepted)                                                                          \
	X(conns_active)                                                                            \
	X(conns_rejected)                                                                          \
	X(frames_rx)                                                                               \
	X(bad_frames)                                                                              \
	X(oversize_frames)                                                                         \
	X(bad_protobuf)                                                                            \
	X(bad_version)                                                                             \
	X(bad_auth)                                                                                \
	X(not_ready)                                                                               \
	X(disconnect_mid_msg)                                                                      \
	X(oversize_batches)                                                                        \
	X(unknown_namespace)                                                                       \
	X(unknown_worker)                                                                          \
	X(stale_incarnation)                                                                       \
	X(malformed_requests)                                                                      \
	X(publish_batches)                                                                         \
	X(spec_publishes)                                                                          \
	X(events_applied)                                                                          \
	X(events_ignored)                                                                          \
	X(seq_gaps)                                                                                \
	X(seq_duplicates)                                                                          \
	X(publisher_restarts)                                                                      \
	X(clears)                                                                                  \
	X(index_full)                                                                              \
	X(blocks)                                                                                  \
	X(records)                                                                                 \
	X(holders)                                                                                 \
	X(home_buckets)                                                                            \
	X(overflow_buckets)                                                                        \
	X(overflow_buckets_used)                                                                   \
	X(table_bytes)                                                                             \
	X(region_bytes)                                                                            \
	X(resizes)                                                                                 \
	X(tcp_read_batches)                                                                        \
	X(tcp_read_ops)                                                                            \
	X(tcp_read_bytes)                                                                          \
	X(bad_reads)                                                                               \
	X(rdma_conns_accepted)                                                                     \
	X(rdma_conns_rejected)                                                                     \
	X(rdma_cm_events)                                                                          \
	X(rdma_qp_errors)                                                                          \
	X(spec_expired)                                                                            \
	X(swept_holders)                                                                           \
	X(namespaces)                                                                              \
	X(workers)                                                                                 \
	X(slots_used)                                                                              \
	X(worker_loads)                                                                            \
	X(uptime_s)

struct kvdex_counters {
#define KVDEX_CTR_FIELD(n) uint64_t n;
	KVDEX_COUNTERS(KVDEX_CTR_FIELD)
#undef KVDEX_CTR_FIELD
};

#define KVDEX_CTR_INC(srv, n) uatomic_inc(&(srv)->ctr.n)
#define KVDEX_CTR_ADD(srv, n, v) uatomic_add(&(srv)->ctr.n, (v))

/* epoll sources: the first member of every object registered in epoll. */
enum kvdex_src_kind {
	KVDEX_SRC_LISTEN_TCP = 1,
	KVDEX_SRC_LISTEN_UNIX,
	KVDEX_SRC_EVENTFD,
	KVDEX_SRC_CONN,
	KVDEX_SRC_RDMA_CM, /* the rdma_cm event channel (server/rdma.c) */
	KVDEX_SRC_RDMA_CQ, /* a verbs connection's completion channel */
};

struct kvdex_rep;
struct kvdex_rconn;
struct kvdex_rdma;

/*
 * A client connection. The io thread owns the fd and everything under
 * "io"; the writer owns what is under "writer". Lifetime: one reference for
 * the io thread (dropped when it closes the fd) plus one per queued request
 * or reply; the last put frees it.
 */
struct kvdex_sconn {
	enum kvdex_src_kind kind; /* KVDEX_SRC_CONN */
	struct urcu_ref ref;
	uint64_t id;
	bool is_unix;
	/* io */
	bool open;		  /* until conn_close */
	int fd;			  /* socket; -1 for verbs connections */
	struct kvdex_rconn *rdma; /* verbs connection state (server/rdma.c), or NULL */
	struct cds_list_head link;
	uint8_t *rbuf;
	size_t rlen;
	size_t rcap;
	struct kvdex_rep *wq_head; /* replies waiting to be written */
	struct kvdex_rep *wq_tail;
	size_t woff;
	uint32_t ev_mask;
	bool hello_io; /* a successful Hello reply went out: READ allowed */
	bool closing;  /* fatal error sent: write what is queued, then close */
	bool read_off; /* shutting down: stop reading */
	/* writer */
	bool hello_w;
	bool dead_w; /* a fatal reply was queued: ignore further requests */
};

/* A request frame queued io -> writer. */
struct kvdex_req {
	struct cds_wfcq_node qn;
	struct kvdex_sconn *conn; /* holds a reference */
	uint16_t type;
	uint32_t req_id;
	uint32_t len;
	uint8_t payload[];
};

#define KVDEX_REP_CLOSE 0x1u	/* close the connection once written */
#define KVDEX_REP_FD 0x2u	/* attach the region fd (SCM_RIGHTS) */
#define KVDEX_REP_HELLO_OK 0x4u /* the Hello succeeded: allow READ frames */

/* A reply frame (header included) queued writer -> io. */
struct kvdex_rep {
	struct cds_wfcq_node qn;
	struct kvdex_rep *next;	  /* io's per-connection write queue */
	struct kvdex_sconn *conn; /* holds a reference */
	uint32_t flags;
	size_t len;
	uint8_t data[];
};

struct kvdex_server {
	struct kvdex_config cfg;
	struct kvdex_region *rg;
	struct kvdex_index *ix;
	struct kvdex_workers *wt;
	struct kvdex_namespaces *nss;
	struct kvdex_publishers *pubs;
	struct kvdex_counters ctr;

	struct cds_wfcq_head req_head;
	struct cds_wfcq_tail req_tail;
	struct cds_wfcq_head rep_head;
	struct cds_wfcq_tail rep_tail;

	int writer_efd;
	int io_efd;
	int epfd;
	int tcp_fd;
	int unix_fd;
	uint16_t tcp_port; /* actual port */
	char unix_path[KVDEX_UNIX_PATH_MAX];
	bool unix_bound;		     /* we created unix_path: remove it at exit */
	struct kvdex_rdma *rdma;	     /* NULL: no RDMA listener */
	char rdma_listen[KVDEX_CFG_STR + 8]; /* "host:port" for HelloReply, "" if none */
	char server_id[KVDEX_CFG_STR];
	uint64_t start_ns; /* CLOCK_MONOTONIC at start */

	pthread_t io_thread;
	pthread_t writer_thread;
	bool io_started;
	bool writer_started;
	int stopping;	 /* main -> io: shut down */
	int io_quiesced; /* io -> writer: nothing more will be queued */
	int writer_done; /* writer -> io: every reply is queued */
	int io_failed;	 /* a thread hit a runtime failure: exit 1 */
};

/* Monotonic nanoseconds. */
uint64_t kvdex_server_now_ns(void);

/* Wake the consumer behind an eventfd. */
void kvdex_server_kick(int efd);

/* Release one reference on a connection (frees it on the last). */
void kvdex_sconn_put(struct kvdex_sconn *conn);
static inline void
kvdex_sconn_get(struct kvdex_sconn *conn)
{
	urcu_ref_get(&conn->ref);
}

/* Allocate a reply of `len` payload bytes with its frame header filled. */
struct kvdex_rep *kvdex_rep_alloc(struct kvdex_sconn *conn, uint16_t type, uint32_t req_id,
				  size_t len);
void kvdex_rep_free(struct kvdex_rep *rep);

/* io.c */
int kvdex_io_listen(struct kvdex_server *srv);
int kvdex_io_start(struct kvdex_server *srv);
void kvdex_io_close_listeners(struct kvdex_server *srv);
/* For server/rdma.c (io thread): a verbs connection joins the io loop, feeds
 * it the bytes it receives (the same frame parser as sockets), has its reply
 * queue flushed, and is closed (conn_close calls kvdex_rdma_conn_close). */
struct kvdex_sconn *kvdex_io_conn_new_rdma(struct kvdex_server *srv, struct kvdex_rconn *rc);
void kvdex_io_conn_input(struct kvdex_server *srv, struct kvdex_sconn *c, const uint8_t *p,
			 size_t n);
void kvdex_io_conn_flush(struct kvdex_server *srv, struct kvdex_sconn *c);
void kvdex_io_conn_close(struct kvdex_server *srv, struct kvdex_sconn *c);
bool kvdex_io_quiesced(void);

/* writer.c */
int kvdex_writer_start(struct kvdex_server *srv);
/* Handle one request (writer thread; exposed for tests). Consumes req. */
void kvdex_writer_handle(struct kvdex_server *srv, struct kvdex_req *req);
/* Current clock ticks since start. */
uint32_t kvdex_writer_ticks(const struct kvdex_server *srv);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_SERVER_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client's transport interface: one shape that fits RDMA verbs.
 *
 *   - one-sided reads: post a batch of (remote offset, length) reads into
 *     local buffers with one "doorbell", then poll for the batch's completion;
 *   - two-sided messages: send a framed message, receive one.
 *
 * shm:  reads are memcpy from a read-only mapping of the server's memfd;
 *       messages go over the unix socket the memfd came through.
 * tcp:  reads become one KVDEX_MSG_READ frame per batch, answered by the
 *       server's I/O thread (the "NIC"); messages share the connection.
 * verbs: RDMA READ work-request lists into a registered landing buffer,
 *       SEND/RECV messages with credits (transport_verbs.c).
 *
 * Validation never lives in a transport: every transport hands back raw
 * images and the lookup code (lookup.c) checks them the same way.
 *
 * A connection is used by one thread at a time. Calls block for at most the
 * timeout given. Errors are negative errno values.
 */
#ifndef KVDEX_CLIENT_TRANSPORT_H
#define KVDEX_CLIENT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvdex/kvdex.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kvdex_endpoint {
	enum kvdex_transport kind; /* SHM for unix:, TCP for host:port, VERBS for rdma: */
	char name[128];		   /* placement name (rendezvous identity) */
	char path[108];		   /* unix socket path */
	char host[256];
	char port[16];
};

/* Parse "[name=]unix:/path", "[name=]host:port" ("[v6addr]:port" too) or
 * "[name=]rdma:host:port" (an rdma_cm listener: verbs only). */
int kvdex_endpoint_parse(const char *s, struct kvdex_endpoint *ep);

/* True if host names this machine (loopback, or an address of a local
 * interface): auto transport may switch such a server to shm. */
int kvdex_host_is_local(const char *host);

/* kvdex_read_op.flags. KVDEX_READ_BUCKET: the op reads a bucket image, and a
 * transport that copies (shm) may stop after its sealed length
 * (kvdex_bucket_sealed_len). */
#define KVDEX_READ_BUCKET 0x1u

/* One read of a batch. The transport fills `status` (0 or -errno). */
struct kvdex_read_op {
	uint64_t off;
	uint32_t len;
	int32_t status;
	void *buf;	/* len bytes, 64-byte aligned */
	uint32_t flags; /* KVDEX_READ_* */
};

/* A received message. payload is owned by the connection and valid until
 * the next recv on it. fd is an SCM_RIGHTS descriptor (shm Hello reply) now
 * owned by the caller, or -1. */
struct kvdex_msg {
	uint16_t type;
	uint32_t req_id;
	const uint8_t *payload;
	size_t len;
	int fd;
};

struct kvdex_conn;

struct kvdex_transport_ops {
	const char *name;
	int (*connect)(const struct kvdex_endpoint *ep, int timeout_ms, struct kvdex_conn **out);
	/* After Hello: make the region readable (shm maps region_fd). */
	int (*attach_region)(struct kvdex_conn *conn, int region_fd, uint64_t region_max);
	/* Start every read of the batch at once. At most one batch in flight. */
	int (*post_reads)(struct kvdex_conn *conn, struct kvdex_read_op *ops, unsigned n);
	/* Wait until the posted batch completes: 0, -ETIMEDOUT, -ECONNRESET. */
	int (*poll_reads)(struct kvdex_conn *conn, int timeout_ms);
	int (*send_msg)(struct kvdex_conn *conn, uint16_t type, uint32_t req_id,
			const void *payload, size_t len);
	int (*recv_msg)(struct kvdex_conn *conn, struct kvdex_msg *msg, int timeout_ms);
	void (*close)(struct kvdex_conn *conn);
	/* Optional (verbs): after Hello, the region's remote address and rkey
	 * and the region_size they cover (HelloReply.region). */
	int (*attach_remote)(struct kvdex_conn *conn, uint64_t remote_addr, uint32_t rkey,
			     uint64_t region_size);
};

/* Every transport's connection starts with this. */
struct kvdex_conn {
	const struct kvdex_transport_ops *ops;
	uint32_t max_msg; /* server's limit, learned from Hello */
	char err[96];	  /* detail of the last transport failure, "" if none */
};

extern const struct kvdex_transport_ops kvdex_transport_shm;
extern const struct kvdex_transport_ops kvdex_transport_tcp;
extern const struct kvdex_transport_ops kvdex_transport_verbs;

/*
 * Connect over verbs with the auth token's digest in the CM private data
 * (kvdex_transport_verbs.connect is this without a token). On failure err
 * holds a reason (a server's reject reason when it gave one).
 * @return 0, -ENODEV / -EHOSTUNREACH (rdma_cm cannot reach ep from a local
 *         RDMA device), -ECONNREFUSED, -EACCES (bad token),
 *         -EPROTONOSUPPORT (version), -ETIMEDOUT, -ENOMEM, -errno.
 */
int kvdex_verbs_connect(const struct kvdex_endpoint *ep, const char *auth_token, int timeout_ms,
			struct kvdex_conn **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_CLIENT_TRANSPORT_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client: connections to every server of the cluster map, Hello, and the
 * two-sided requests (namespaces, workers, publish, stats). Lookups live in
 * lookup.c. Routers publish their speculative entries through
 * kvdex_client_publish() too (route_spec.c), so every request goes through
 * the helpers below.
 *
 * Connections. A server whose connection failed (reset, timeout, fatal
 * error) is marked disconnected; the next call that needs it reconnects and
 * says Hello again. If the new Hello (or a header read by a lookup) shows a
 * new server_incarnation, the server restarted with an empty index: the
 * client re-registers there every namespace and worker it registered (and
 * re-resolves the ones it only resolved) so that handles stay valid.
 *
 * Requests to several servers are pipelined: send to all, then collect all
 * replies, so a broadcast costs one round trip, not one per server. Replies
 * are matched by req_id; a late reply to an earlier, timed-out request is
 * dropped. Control req_ids never have the top bit set (the tcp transport
 * uses it for reads).
 *
 * Errors from a server (ErrorReply or a non-OK Status) are mapped to errno
 * values as kvdex.h documents, and the server's message is kept for
 * kvdex_client_last_error().
 *
 * Transports (DESIGN §7): "rdma:host:port" connects over verbs and says
 * Hello there. A host:port server is first reached over tcp; with the auto
 * (or verbs) transport, a Hello reply naming an rdma_cm listener makes the
 * client try verbs (rdma_cm resolves the address to a local RDMA device or
 * fails fast), then shm for a server on this host, else it stays on tcp.
 * The tcp connection is closed once another transport said Hello.
 */
#include "client/src/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/src/sock.h"
#include "common/frame.h"
#include "common/log.h"
#include "kvdex.pb-c.h"

#define LOG_COMP "client"

static_assert(sizeof(struct kvdex_client_opts) ==
		      offsetof(struct kvdex_client_opts, cluster_epoch) + sizeof(uint64_t),
	      "kvdex_client_opts: add fields only at the end");

/* ---- Small helpers ---------------------------------------------------------- */

void *
kvdex_aligned_alloc(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, KVDEX_CACHE_LINE, n != 0 ? n : KVDEX_CACHE_LINE) != 0) {
		return NULL;
	}
	return p;
}

void
kvdex_client_set_error(struct kvdex_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
	KVDEX_LOG_INFO(LOG_COMP, "%s", c->last_error);
}

static void
api_begin(struct kvdex_client *c)
{
	c->last_error[0] = '\0';
}

static uint32_t
next_req_id(struct kvdex_client *c)
{
	c->next_req_id = (c->next_req_id + 1) & 0x7fffffffu;
	if (c->next_req_id == 0) {
		c->next_req_id = 1;
	}
	return c->next_req_id;
}

static int
code_to_errno(int code)
{
	switch (code) {
	case KVDEX__CODE__OK:
		return 0;
	case KVDEX__CODE__BAD_VERSION:
		return -EPROTONOSUPPORT;
	case KVDEX__CODE__BAD_AUTH:
		return -EACCES;
	case KVDEX__CODE__MALFORMED:
		return -EBADMSG;
	case KVDEX__CODE__TOO_LARGE:
		return -E2BIG;
	case KVDEX__CODE__UNKNOWN_NAMESPACE:
		return -ENOENT;
	case KVDEX__CODE__UNKNOWN_WORKER:
		return -ESRCH;
	case KVDEX__CODE__STALE_INCARNATION:
		return -ESTALE;
	case KVDEX__CODE__FULL:
		return -ENOSPC;
	case KVDEX__CODE__EXISTS:
		return -EEXIST;
	default:
		return -EIO;
	}
}

/* Map a reply's Status; 0 when absent or OK. */
static int
status_err(struct kvdex_client *c, unsigned i, const Kvdex__Status *st)
{
	int rc;

	if (st == NULL || st->code == KVDEX__CODE__OK) {
		return 0;
	}
	rc = code_to_errno(st->code);
	kvdex_client_set_error(c, "server %s: %s", c->srv[i].ep.name,
			       st->message != NULL && st->message[0] != '\0' ? st->message
									     : strerror(-rc));
	return rc;
}

/* ---- Connections ------------------------------------------------------------- */

void
kvdex_client_drop_conn(struct kvdex_client *c, unsigned i)
{
	struct kvdex_server *s = &c->srv[i];

	if (s->conn != NULL && s->conn->err[0] != '\0' && c->last_error[0] != '\0') {
		/* The transport's detail (a verbs completion status, ...). */
		size_t n = strlen(c->last_error);

		snprintf(c->last_error + n, sizeof(c->last_error) - n, " (%s)", s->conn->err);
	}
	if (s->conn != NULL) {
		s->conn->ops->close(s->conn);
		s->conn = NULL;
	}
}

/* A transport call failed with rc: decide whether the connection survives. */
static int
conn_failed(struct kvdex_client *c, unsigned i, int rc, const char *what)
{
	if (c->last_error[0] == '\0') {
		kvdex_client_set_error(c, "server %s: %s: %s", c->srv[i].ep.name, what,
				       strerror(-rc));
	}
	/* After a timeout or a broken frame the stream position is unknown. */
	if (rc == -ECONNRESET || rc == -ETIMEDOUT || rc == -EPROTO || rc == -EPIPE) {
		kvdex_client_drop_conn(c, i);
	}
	return rc;
}

static int
srv_send(struct kvdex_client *c, unsigned i, uint16_t type, const ProtobufCMessage *m,
	 uint32_t *req_id)
{
	struct kvdex_server *s = &c->srv[i];
	size_t len = protobuf_c_message_get_packed_size(m);
	int rc;

	if (s->conn == NULL) {
		return -ECONNRESET;
	}
	if (len + KVDEX_FRAME_HDR_SIZE > s->conn->max_msg) {
		kvdex_client_set_error(c, "server %s: message of %zu bytes above its limit %u",
				       s->ep.name, len, s->conn->max_msg);
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
	protobuf_c_message_pack(m, c->sendbuf);
	*req_id = next_req_id(c);
	rc = s->conn->ops->send_msg(s->conn, type, *req_id, c->sendbuf, len);
	if (rc < 0) {
		return conn_failed(c, i, rc, "send");
	}
	return 0;
}

static int
srv_error_reply(struct kvdex_client *c, unsigned i, const struct kvdex_msg *msg)
{
	Kvdex__ErrorReply *er = kvdex__error_reply__unpack(NULL, msg->len, msg->payload);
	int rc;

	if (er == NULL) {
		kvdex_client_set_error(c, "server %s: undecodable error reply", c->srv[i].ep.name);
		return conn_failed(c, i, -EPROTO, "error reply");
	}
	rc = status_err(c, i, er->status);
	if (rc == 0) {
		rc = -EIO;
	}
	if (er->fatal) {
		kvdex_client_drop_conn(c, i);
	}
	kvdex__error_reply__free_unpacked(er, NULL);
	return rc;
}

/* Wait for the reply to req_id. On success msg holds a frame of type `want`
 * (payload valid until the next receive on that connection). */
static int
srv_wait(struct kvdex_client *c, unsigned i, uint32_t req_id, uint16_t want, uint64_t deadline,
	 struct kvdex_msg *msg)
{
	struct kvdex_server *s = &c->srv[i];
	int rc;

	for (;;) {
		if (s->conn == NULL) {
			return -ECONNRESET;
		}
		rc = s->conn->ops->recv_msg(s->conn, msg, kvdex_ms_left(deadline));
		if (rc < 0) {
			return conn_failed(c, i, rc, "receive");
		}
		if (msg->req_id != req_id) {
			/* The reply to a request that timed out earlier. */
			if (msg->fd >= 0) {
				close(msg->fd);
			}
			continue;
		}
		if (msg->type == KVDEX_MSG_ERROR) {
			if (msg->fd >= 0) {
				close(msg->fd);
			}
			return srv_error_reply(c, i, msg);
		}
		if (msg->type != want) {
			if (msg->fd >= 0) {
				close(msg->fd);
			}
			kvdex_client_set_error(c, "server %s: unexpected %s reply", s->ep.name,
					       kvdex_msg_type_name(msg->type));
			return conn_failed(c, i, -EPROTO, "reply");
		}
		return 0;
	}
}

/*
 * Send msgs[i] (NULL: skip server i) to every server, then collect every
 * reply and hand each to fn. Returns the first error in server order; every
 * server is still tried.
 */
typedef int (*kvdex_reply_fn)(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m,
			      void *arg);

static int
bcast(struct kvdex_client *c, uint16_t type, const ProtobufCMessage *const *msgs, uint16_t want,
      kvdex_reply_fn fn, void *arg)
{
	uint32_t ids[KVDEX_MAX_SERVERS];
	int rcs[KVDEX_MAX_SERVERS];
	uint64_t deadline;
	int first = 0;

	for (unsigned i = 0; i < c->nsrv; i++) {
		rcs[i] = 1; /* not sent */
		if (msgs[i] == NULL) {
			continue;
		}
		rcs[i] = kvdex_client_ensure_conn(c, i);
		if (rcs[i] == 0) {
			rcs[i] = srv_send(c, i, type, msgs[i], &ids[i]);
		}
	}
	deadline = kvdex_now_ms() + (uint64_t)c->timeout_ms;
	for (unsigned i = 0; i < c->nsrv; i++) {
		struct kvdex_msg m;

		if (rcs[i] == 0) {
			rcs[i] = srv_wait(c, i, ids[i], want, deadline, &m);
			if (rcs[i] == 0 && fn != NULL) {
				rcs[i] = fn(c, i, &m, arg);
			}
		}
		if (rcs[i] < 0 && first == 0) {
			first = rcs[i];
		}
	}
	return first;
}

/* Same message to one server. */
static int
call_one(struct kvdex_client *c, unsigned i, uint16_t type, const ProtobufCMessage *m,
	 uint16_t want, kvdex_reply_fn fn, void *arg)
{
	const ProtobufCMessage *msgs[KVDEX_MAX_SERVERS] = {0};

	msgs[i] = m;
	return bcast(c, type, msgs, want, fn, arg);
}

/* Same message to every server. */
static int
call_all(struct kvdex_client *c, uint16_t type, const ProtobufCMessage *m, uint16_t want,
	 kvdex_reply_fn fn, void *arg)
{
	const ProtobufCMessage *msgs[KVDEX_MAX_SERVERS];

	for (unsigned i = 0; i < c->nsrv; i++) {
		msgs[i] = m;
	}
	return bcast(c, type, msgs, want, fn, arg);
}

/* ---- Hello -------------------------------------------------------------------- */

struct hello_info {
	uint64_t incarnation;
	uint64_t region_max;
	uint32_t bucket_size;
	uint32_t max_msg;
	uint32_t max_batch_events;
	uint64_t cluster_epoch;
	char server_id[128];
	char unix_path[108];
	char rdma_listen[280];
	uint64_t region_size;
	uint64_t remote_addr;
	uint32_t rkey;
	int fd;
};

static int
hello_parse(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, struct hello_info *info)
{
	Kvdex__HelloReply *r = kvdex__hello_reply__unpack(NULL, m->len, m->payload);
	int rc;

	if (r == NULL) {
		kvdex_client_set_error(c, "server %s: undecodable Hello reply", c->srv[i].ep.name);
		return -EPROTO;
	}
	rc = status_err(c, i, r->status);
	if (rc == 0 && (r->region == NULL || r->region->layout_version != KVDEX_LAYOUT_VERSION)) {
		kvdex_client_set_error(c, "server %s: unsupported region layout",
				       c->srv[i].ep.name);
		rc = -EPROTONOSUPPORT;
	}
	if (rc == 0) {
		info->incarnation = r->region->server_incarnation;
		info->region_max = r->region->region_max;
		info->bucket_size = r->region->bucket_size;
		info->max_msg = r->max_msg_bytes;
		info->max_batch_events = r->max_batch_events;
		info->cluster_epoch = r->cluster_epoch;
		snprintf(info->server_id, sizeof(info->server_id), "%s",
			 r->server_id != NULL ? r->server_id : "");
		snprintf(info->unix_path, sizeof(info->unix_path), "%s",
			 r->unix_path != NULL ? r->unix_path : "");
		snprintf(info->rdma_listen, sizeof(info->rdma_listen), "%s",
			 r->rdma_listen != NULL ? r->rdma_listen : "");
		info->region_size = r->region->region_size;
		info->remote_addr = r->region->remote_addr;
		info->rkey = r->region->rkey;
	}
	kvdex__hello_reply__free_unpacked(r, NULL);
	return rc;
}

static int
hello_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	struct hello_info *info = arg;
	int rc;

	info->fd = m->fd;
	rc = hello_parse(c, i, m, info);
	if (rc < 0) {
		return conn_failed(c, i, rc == -EPROTO ? -EPROTO : rc, "hello");
	}
	return 0;
}

/* Open a connection with `ops` to ep as server i's connection and say Hello. */
static int
srv_open(struct kvdex_client *c, unsigned i, const struct kvdex_transport_ops *ops,
	 const struct kvdex_endpoint *ep, bool want_fd, struct hello_info *info)
{
	struct kvdex_server *s = &c->srv[i];
	Kvdex__Hello h = KVDEX__HELLO__INIT;
	struct kvdex_conn *conn;
	uint32_t id;
	struct kvdex_msg m;
	int rc;

	if (ops == &kvdex_transport_verbs) {
		char why[128] = "";

		rc = kvdex_verbs_connect(ep, c->auth_token, c->timeout_ms, &conn, why, sizeof(why));
		if (rc < 0) {
			kvdex_client_set_error(c, "server %s: verbs connect: %s%s%s", s->ep.name,
					       strerror(-rc), why[0] != '\0' ? ": " : "", why);
			return rc;
		}
	} else {
		rc = ops->connect(ep, c->timeout_ms, &conn);
		if (rc < 0) {
			kvdex_client_set_error(c, "server %s: connect: %s", s->ep.name,
					       strerror(-rc));
			return rc;
		}
	}
	s->conn = conn;
	h.protocol_version = KVDEX_PROTOCOL_VERSION;
	h.auth_token = c->auth_token != NULL ? c->auth_token : "";
	h.client_name = c->client_name;
	h.want_region_fd = want_fd;
	info->fd = -1;
	rc = srv_send(c, i, KVDEX_MSG_HELLO, &h.base, &id);
	if (rc == 0) {
		rc = srv_wait(c, i, id, KVDEX_MSG_HELLO_REPLY,
			      kvdex_now_ms() + (uint64_t)c->timeout_ms, &m);
	}
	if (rc == 0) {
		rc = hello_reply_fn(c, i, &m, info);
	}
	if (rc == 0 && want_fd) {
		rc = info->fd >= 0
			     ? s->conn->ops->attach_region(s->conn, info->fd, info->region_max)
			     : -EPROTO;
		if (rc < 0) {
			kvdex_client_set_error(c, "server %s: cannot map its region: %s",
					       s->ep.name, strerror(-rc));
		}
	}
	if (info->fd >= 0) {
		close(info->fd); /* the mapping keeps the region */
		info->fd = -1;
	}
	if (rc == 0 && s->conn->ops->attach_remote != NULL) {
		rc = s->conn->ops->attach_remote(s->conn, info->remote_addr, info->rkey,
						 info->region_size);
		if (rc < 0) {
			kvdex_client_set_error(c, "server %s: %s", s->ep.name, s->conn->err);
		}
	}
	if (rc < 0) {
		kvdex_client_drop_conn(c, i);
		return rc;
	}
	s->conn->max_msg = info->max_msg != 0 ? info->max_msg : KVDEX_MAX_MSG_DEFAULT;
	s->transport_name = ops->name;
	return 0;
}

/* The verbs endpoint a Hello reply names: its rdma_listen, with a wildcard
 * host meaning the host we reached the server at. */
static int
verbs_ep(const struct kvdex_server *s, const char *listen, struct kvdex_endpoint *ep)
{
	char addr[300];

	snprintf(addr, sizeof(addr), "rdma:%s", listen);
	if (kvdex_endpoint_parse(addr, ep) < 0) {
		return -EPROTO;
	}
	if (strcmp(ep->host, "0.0.0.0") == 0 || strcmp(ep->host, "::") == 0 ||
	    strcmp(ep->host, "*") == 0) {
		snprintf(ep->host, sizeof(ep->host), "%s", s->ep.host);
	}
	snprintf(ep->name, sizeof(ep->name), "%s", s->ep.name);
	return 0;
}

/* Server i is on tcp and its Hello named an rdma_cm listener: switch to
 * verbs. On failure the tcp connection stays (auto) and the error is
 * returned. */
static int
srv_try_verbs(struct kvdex_client *c, unsigned i, struct hello_info *info)
{
	struct kvdex_server *s = &c->srv[i];
	struct kvdex_endpoint vep;
	struct hello_info tcp_info = *info;
	struct kvdex_conn *tcp = s->conn;
	int rc;

	rc = verbs_ep(s, info->rdma_listen, &vep);
	if (rc < 0) {
		kvdex_client_set_error(c, "server %s: bad rdma_listen '%s'", s->ep.name,
				       info->rdma_listen);
		return rc;
	}
	s->conn = NULL;
	rc = srv_open(c, i, &kvdex_transport_verbs, &vep, false, info);
	if (rc < 0) {
		s->conn = tcp;
		s->transport_name = kvdex_transport_tcp.name;
		*info = tcp_info;
		return rc;
	}
	tcp->ops->close(tcp);
	return 0;
}

/* host:port server: tcp first, then verbs or shm as the Hello reply offers. */
static int
srv_open_hostport(struct kvdex_client *c, unsigned i, struct hello_info *info)
{
	struct kvdex_server *s = &c->srv[i];
	struct kvdex_endpoint shm_ep;
	struct kvdex_conn *tcp;
	struct hello_info tcp_info;
	int rc;

	rc = srv_open(c, i, &kvdex_transport_tcp, &s->ep, false, info);
	if (rc < 0 || c->transport == KVDEX_TRANSPORT_TCP) {
		return rc;
	}
	if (c->transport == KVDEX_TRANSPORT_VERBS || c->transport == KVDEX_TRANSPORT_AUTO) {
		if (info->rdma_listen[0] != '\0') {
			rc = srv_try_verbs(c, i, info);
			if (rc == 0 || c->transport == KVDEX_TRANSPORT_VERBS) {
				if (rc < 0) {
					kvdex_client_drop_conn(c, i);
				}
				return rc;
			}
			KVDEX_LOG_NOTICE(LOG_COMP, "server %s: verbs via %s failed (%d)",
					 s->ep.name, info->rdma_listen, rc);
			c->last_error[0] = '\0';
		} else if (c->transport == KVDEX_TRANSPORT_VERBS) {
			kvdex_client_set_error(c, "server %s has no RDMA listener", s->ep.name);
			kvdex_client_drop_conn(c, i);
			return -EPROTONOSUPPORT;
		}
	}
	if (c->transport == KVDEX_TRANSPORT_AUTO && !kvdex_host_is_local(s->ep.host)) {
		return 0;
	}
	if (info->unix_path[0] == '\0') {
		if (c->transport == KVDEX_TRANSPORT_SHM) {
			kvdex_client_set_error(c, "server %s offers no unix socket for shm",
					       s->ep.name);
			kvdex_client_drop_conn(c, i);
			return -EPROTONOSUPPORT;
		}
		return 0;
	}
	memset(&shm_ep, 0, sizeof(shm_ep));
	shm_ep.kind = KVDEX_TRANSPORT_SHM;
	snprintf(shm_ep.name, sizeof(shm_ep.name), "%s", s->ep.name);
	snprintf(shm_ep.path, sizeof(shm_ep.path), "%s", info->unix_path);
	tcp = s->conn;
	tcp_info = *info;
	s->conn = NULL;
	rc = srv_open(c, i, &kvdex_transport_shm, &shm_ep, true, info);
	if (rc < 0 && c->transport == KVDEX_TRANSPORT_AUTO) {
		KVDEX_LOG_NOTICE(LOG_COMP, "server %s: shm via %s failed (%d), staying on tcp",
				 s->ep.name, shm_ep.path, rc);
		c->last_error[0] = '\0';
		s->conn = tcp;
		s->transport_name = kvdex_transport_tcp.name;
		*info = tcp_info;
		return 0;
	}
	tcp->ops->close(tcp);
	return rc;
}

static int
srv_connect(struct kvdex_client *c, unsigned i, struct hello_info *info)
{
	struct kvdex_server *s = &c->srv[i];

	if (s->ep.kind == KVDEX_TRANSPORT_VERBS) {
		if (c->transport == KVDEX_TRANSPORT_SHM || c->transport == KVDEX_TRANSPORT_TCP) {
			kvdex_client_set_error(c,
					       "server %s: an rdma: address needs the verbs "
					       "or auto transport",
					       s->ep.name);
			return -EPROTONOSUPPORT;
		}
		return srv_open(c, i, &kvdex_transport_verbs, &s->ep, false, info);
	}
	if (s->ep.kind == KVDEX_TRANSPORT_SHM && c->transport == KVDEX_TRANSPORT_VERBS) {
		kvdex_client_set_error(c, "server %s: a unix: address cannot use verbs",
				       s->ep.name);
		return -EPROTONOSUPPORT;
	}
	if (s->ep.kind == KVDEX_TRANSPORT_SHM) {
		/* unix: + tcp = the tcp transport's READ frames over the unix socket. */
		if (c->transport == KVDEX_TRANSPORT_TCP) {
			return srv_open(c, i, &kvdex_transport_tcp, &s->ep, false, info);
		}
		return srv_open(c, i, &kvdex_transport_shm, &s->ep, true, info);
	}
	return srv_open_hostport(c, i, info);
}

int
kvdex_client_ensure_conn(struct kvdex_client *c, unsigned i)
{
	struct kvdex_server *s = &c->srv[i];
	struct hello_info info;
	int rc;

	if (s->conn != NULL) {
		return 0;
	}
	if (c->no_reconnect) {
		return -ECONNRESET;
	}
	memset(&info, 0, sizeof(info));
	rc = srv_connect(c, i, &info);
	if (rc < 0) {
		return rc;
	}
	snprintf(s->server_id, sizeof(s->server_id), "%s", info.server_id);
	s->max_batch_events = info.max_batch_events;
	s->bucket_size = info.bucket_size;
	if (info.cluster_epoch != c->cluster_epoch) {
		KVDEX_LOG_WARN(LOG_COMP, "server %s runs cluster epoch %llu, client map is %llu",
			       s->ep.name, (unsigned long long)info.cluster_epoch,
			       (unsigned long long)c->cluster_epoch);
	}
	if (s->incarnation != 0 && s->incarnation != info.incarnation) {
		rc = kvdex_client_server_restarted(c, i, info.incarnation);
		if (rc < 0) {
			return rc;
		}
	}
	s->incarnation = info.incarnation;
	return kvdex_lookup_refresh_server(c, i, NULL, NULL);
}

/* ---- Create / destroy ----------------------------------------------------------- */

KVDEX_EXPORT void
kvdex_client_opts_init(struct kvdex_client_opts *opts, size_t size)
{
	struct kvdex_client_opts d = {0};

	d.opts_size = size < sizeof(d) ? size : sizeof(d);
	d.transport = KVDEX_TRANSPORT_AUTO;
	/* 0 = the config file's timeout_ms, else KVDEX_TIMEOUT_DEFAULT_MS. */
	d.timeout_ms = 0;
	memcpy(opts, &d, d.opts_size);
}

int
kvdex_client_alloc(const struct kvdex_endpoint *eps, unsigned n, struct kvdex_client **out)
{
	struct kvdex_client *c;

	if (n == 0 || n > KVDEX_MAX_SERVERS) {
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return -ENOMEM;
	}
	c->srv = calloc(n, sizeof(*c->srv));
	c->seeds = calloc(n, sizeof(*c->seeds));
	if (c->srv == NULL || c->seeds == NULL) {
		kvdex_client_destroy(c);
		return -ENOMEM;
	}
	c->nsrv = n;
	for (unsigned i = 0; i < n; i++) {
		c->srv[i].ep = eps[i];
		c->srv[i].seed = kvdex_server_seed(eps[i].name);
		c->srv[i].transport_name = "none";
		c->seeds[i] = c->srv[i].seed;
		for (unsigned j = 0; j < i; j++) {
			if (strcmp(eps[j].name, eps[i].name) == 0) {
				kvdex_client_destroy(c);
				return -EINVAL; /* two servers with one placement name */
			}
		}
	}
	c->timeout_ms = KVDEX_TIMEOUT_DEFAULT_MS;
	c->cluster_epoch = 1;
	*out = c;
	return 0;
}

/* Merge options over the config file into the client. */
static int
client_configure(const struct kvdex_client_opts *o, struct kvdex_client_config *cfg,
		 struct kvdex_client **out, char *err, size_t errlen)
{
	struct kvdex_endpoint *eps = cfg->servers;
	unsigned n = cfg->nservers;
	struct kvdex_client *c;
	bool own = false;
	int rc;

	if (o->servers != NULL) {
		rc = kvdex_endpoint_list_parse(o->servers, &eps, &n, err, errlen);
		if (rc < 0) {
			return rc;
		}
		own = true;
	} else if (n == 0) {
		snprintf(err, errlen, "no servers given");
		return -EINVAL;
	}
	rc = kvdex_client_alloc(eps, n, &c);
	if (own) {
		free(eps);
	}
	if (rc < 0) {
		snprintf(err, errlen,
			 rc == -EINVAL ? "two servers share a placement name" : "out of memory");
		return rc;
	}
	c->transport = o->transport != KVDEX_TRANSPORT_AUTO ? o->transport
		       : cfg->transport >= 0		    ? (enum kvdex_transport)cfg->transport
							    : KVDEX_TRANSPORT_AUTO;
	c->timeout_ms = o->timeout_ms > 0     ? o->timeout_ms
			: cfg->timeout_ms > 0 ? cfg->timeout_ms
					      : KVDEX_TIMEOUT_DEFAULT_MS;
	c->cluster_epoch = o->cluster_epoch != 0     ? o->cluster_epoch
			   : cfg->cluster_epoch != 0 ? cfg->cluster_epoch
						     : 1;
	c->auth_token = o->auth_token != NULL	  ? strdup(o->auth_token)
			: cfg->auth_token != NULL ? strdup(cfg->auth_token)
						  : NULL;
	c->client_name = strdup(o->client_name != NULL ? o->client_name : "libkvdex");
	if (c->client_name == NULL) {
		kvdex_client_destroy(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

KVDEX_EXPORT int
kvdex_client_create(const struct kvdex_client_opts *opts, struct kvdex_client **out)
{
	struct kvdex_client_opts o;
	struct kvdex_client_config cfg = {.transport = -1, .timeout_ms = -1};
	struct kvdex_client *c = NULL;
	char err[512] = "";
	int rc;

	if (opts == NULL || out == NULL) {
		return -EINVAL;
	}
	kvdex_log_init_from_env();
	kvdex_client_opts_init(&o, sizeof(o));
	memcpy(&o, opts, opts->opts_size < sizeof(o) ? opts->opts_size : sizeof(o));
	if (o.config_path != NULL) {
		rc = kvdex_config_load(o.config_path, &cfg, err, sizeof(err));
		if (rc < 0) {
			KVDEX_LOG_ERR(LOG_COMP, "%s", err);
			return rc == -ENOMEM ? rc : -EINVAL;
		}
	}
	rc = client_configure(&o, &cfg, &c, err, sizeof(err));
	kvdex_config_fini(&cfg);
	if (rc < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "%s", err);
		return rc;
	}
	for (unsigned i = 0; i < c->nsrv; i++) {
		rc = kvdex_client_ensure_conn(c, i);
		if (rc < 0) {
			KVDEX_LOG_ERR(LOG_COMP, "%s",
				      c->last_error[0] != '\0' ? c->last_error : strerror(-rc));
			kvdex_client_destroy(c);
			return rc;
		}
	}
	*out = c;
	return 0;
}

KVDEX_EXPORT void
kvdex_client_destroy(struct kvdex_client *c)
{
	if (c == NULL) {
		return;
	}
	for (unsigned i = 0; c->srv != NULL && i < c->nsrv; i++) {
		kvdex_client_drop_conn(c, i);
		free(c->srv[i].rows);
	}
	for (uint32_t i = 0; i < c->nns; i++) {
		struct kvdex_client_ns *ns = &c->ns[i];

		free(ns->model);
		free(ns->adapter);
		free(ns->tenant);
		free(ns->hash_scheme);
		free(ns->ids);
	}
	kvdex_lookup_scratch_free(c->lk);
	free(c->ns);
	free(c->workers);
	free(c->srv);
	free(c->seeds);
	free(c->auth_token);
	free(c->client_name);
	free(c->sendbuf);
	free(c);
}

KVDEX_EXPORT unsigned
kvdex_client_nservers(const struct kvdex_client *c)
{
	return c != NULL ? c->nsrv : 0;
}

KVDEX_EXPORT const char *
kvdex_client_server_name(const struct kvdex_client *c, unsigned i)
{
	return c != NULL && i < c->nsrv ? c->srv[i].ep.name : NULL;
}

KVDEX_EXPORT const char *
kvdex_client_transport_name(const struct kvdex_client *c, unsigned i)
{
	return c != NULL && i < c->nsrv ? c->srv[i].transport_name : NULL;
}

KVDEX_EXPORT const char *
kvdex_client_last_error(const struct kvdex_client *c)
{
	return c != NULL ? c->last_error : "";
}

KVDEX_EXPORT void
kvdex_set_log_fn(kvdex_log_fn fn, void *arg, int level)
{
	kvdex_log_set_sink(fn, arg);
	kvdex_log_set_level(level);
}

/* ---- Namespaces -------------------------------------------------------------------- */

struct ns_reply_ctx {
	uint32_t ids[KVDEX_MAX_SERVERS];
};

static int
ns_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	struct ns_reply_ctx *x = arg;
	Kvdex__RegisterNamespaceReply *r =
		kvdex__register_namespace_reply__unpack(NULL, m->len, m->payload);
	int rc;

	if (r == NULL) {
		return conn_failed(c, i, -EPROTO, "namespace reply");
	}
	rc = status_err(c, i, r->status);
	if (rc == 0 && r->ns_id > UINT16_MAX) {
		kvdex_client_set_error(c, "server %s: namespace id %u out of range",
				       c->srv[i].ep.name, r->ns_id);
		rc = -EPROTO;
	}
	if (rc == 0) {
		x->ids[i] = r->ns_id;
	}
	kvdex__register_namespace_reply__free_unpacked(r, NULL);
	return rc;
}

static void
ns_fill_msg(const struct kvdex_client_ns *ns, bool create, Kvdex__RegisterNamespace *m)
{
	m->model = ns->model;
	m->adapter = ns->adapter;
	m->tenant = ns->tenant;
	m->block_size = ns->block_size;
	m->hash_scheme = ns->hash_scheme;
	m->create = create;
}

/* Register (or resolve) ns on the servers with msgs set; ids land in x. */
static int
ns_send(struct kvdex_client *c, const struct kvdex_client_ns *ns, bool create, int only,
	struct ns_reply_ctx *x)
{
	Kvdex__RegisterNamespace m = KVDEX__REGISTER_NAMESPACE__INIT;

	ns_fill_msg(ns, create, &m);
	for (unsigned i = 0; i < c->nsrv; i++) {
		x->ids[i] = KVDEX_NS_NONE;
	}
	if (only >= 0) {
		return call_one(c, (unsigned)only, KVDEX_MSG_REGISTER_NS, &m.base,
				KVDEX_MSG_REGISTER_NS_REPLY, ns_reply_fn, x);
	}
	return call_all(c, KVDEX_MSG_REGISTER_NS, &m.base, KVDEX_MSG_REGISTER_NS_REPLY, ns_reply_fn,
			x);
}

static bool
ns_same(const struct kvdex_client_ns *a, const struct kvdex_client_ns *b)
{
	return a->block_size == b->block_size && strcmp(a->model, b->model) == 0 &&
	       strcmp(a->adapter, b->adapter) == 0 && strcmp(a->tenant, b->tenant) == 0 &&
	       strcmp(a->hash_scheme, b->hash_scheme) == 0;
}

static int
ns_desc_check(const struct kvdex_ns_desc *d)
{
	if (d == NULL || d->model == NULL || d->model[0] == '\0' || d->block_size == 0) {
		return -EINVAL;
	}
	if (strlen(d->model) > 255 || (d->adapter != NULL && strlen(d->adapter) > 255) ||
	    (d->tenant != NULL && strlen(d->tenant) > 255) ||
	    (d->hash_scheme != NULL && strlen(d->hash_scheme) > 255)) {
		return -EINVAL;
	}
	return 0;
}

static void
ns_free_strings(struct kvdex_client_ns *ns)
{
	free(ns->model);
	free(ns->adapter);
	free(ns->tenant);
	free(ns->hash_scheme);
	free(ns->ids);
}

static int
ns_from_desc(const struct kvdex_client *c, const struct kvdex_ns_desc *d,
	     struct kvdex_client_ns *ns)
{
	memset(ns, 0, sizeof(*ns));
	ns->model = strdup(d->model);
	ns->adapter = strdup(d->adapter != NULL ? d->adapter : "");
	ns->tenant = strdup(d->tenant != NULL ? d->tenant : "");
	ns->hash_scheme = strdup(
		d->hash_scheme != NULL && d->hash_scheme[0] != '\0' ? d->hash_scheme : "opaque");
	ns->ids = malloc(c->nsrv * sizeof(*ns->ids));
	if (ns->model == NULL || ns->adapter == NULL || ns->tenant == NULL ||
	    ns->hash_scheme == NULL || ns->ids == NULL) {
		ns_free_strings(ns);
		return -ENOMEM;
	}
	ns->block_size = d->block_size;
	ns->ns_hash =
		kvdex_ns_hash(ns->model, ns->adapter, ns->tenant, ns->block_size, ns->hash_scheme);
	return 0;
}

static int
ns_register_common(struct kvdex_client *c, const struct kvdex_ns_desc *d, bool create,
		   uint32_t *handle)
{
	struct kvdex_client_ns tmp;
	struct ns_reply_ctx x;
	uint32_t h;
	int rc;

	if (c == NULL || handle == NULL || ns_desc_check(d) < 0) {
		return -EINVAL;
	}
	api_begin(c);
	rc = ns_from_desc(c, d, &tmp);
	if (rc < 0) {
		return rc;
	}
	for (h = 0; h < c->nns && !ns_same(&c->ns[h], &tmp); h++) {
	}
	rc = ns_send(c, &tmp, create, -1, &x);
	if (rc < 0) {
		ns_free_strings(&tmp);
		return rc;
	}
	if (h == c->nns) {
		if (c->nns == c->ns_cap) {
			uint32_t ncap = c->ns_cap != 0 ? c->ns_cap * 2 : 8;
			struct kvdex_client_ns *n = realloc(c->ns, ncap * sizeof(*n));

			if (n == NULL) {
				ns_free_strings(&tmp);
				return -ENOMEM;
			}
			c->ns = n;
			c->ns_cap = ncap;
		}
		c->ns[c->nns++] = tmp;
	} else {
		ns_free_strings(&tmp);
	}
	c->ns[h].created |= create;
	memcpy(c->ns[h].ids, x.ids, c->nsrv * sizeof(x.ids[0]));
	*handle = h;
	return 0;
}

KVDEX_EXPORT int
kvdex_ns_register(struct kvdex_client *c, const struct kvdex_ns_desc *desc, uint32_t *ns)
{
	return ns_register_common(c, desc, true, ns);
}

KVDEX_EXPORT int
kvdex_ns_resolve(struct kvdex_client *c, const struct kvdex_ns_desc *desc, uint32_t *ns)
{
	return ns_register_common(c, desc, false, ns);
}

/* ---- Workers ------------------------------------------------------------------------ */

static int
worker_msg_init(uint32_t worker_id, const char *address, uint16_t dp_size, Kvdex__RegisterWorker *m)
{
	if (worker_id == 0 || address == NULL || strlen(address) >= KVDEX_ADDR_MAX ||
	    dp_size == 0 || dp_size > 256) {
		return -EINVAL;
	}
	m->worker_id = worker_id;
	m->address = (char *)address;
	m->dp_size = dp_size;
	return 0;
}

static int
worker_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	Kvdex__RegisterWorkerReply *r =
		kvdex__register_worker_reply__unpack(NULL, m->len, m->payload);
	int rc;

	if (r == NULL) {
		return conn_failed(c, i, -EPROTO, "worker reply");
	}
	rc = status_err(c, i, r->status);
	kvdex__register_worker_reply__free_unpacked(r, NULL);
	return rc;
}

static int
worker_remember(struct kvdex_client *c, uint32_t worker_id, const char *address, uint16_t dp_size)
{
	struct kvdex_client_worker *w = NULL;

	for (unsigned i = 0; i < c->nworkers; i++) {
		if (c->workers[i].worker_id == worker_id) {
			w = &c->workers[i];
		}
	}
	if (w == NULL) {
		if (c->nworkers == c->workers_cap) {
			unsigned ncap = c->workers_cap != 0 ? c->workers_cap * 2 : 8;
			struct kvdex_client_worker *n = realloc(c->workers, ncap * sizeof(*n));

			if (n == NULL) {
				return -ENOMEM;
			}
			c->workers = n;
			c->workers_cap = ncap;
		}
		w = &c->workers[c->nworkers++];
	}
	w->worker_id = worker_id;
	w->dp_size = dp_size;
	snprintf(w->address, sizeof(w->address), "%s", address);
	return 0;
}

KVDEX_EXPORT int
kvdex_worker_register(struct kvdex_client *c, uint32_t worker_id, const char *address,
		      uint16_t dp_size)
{
	Kvdex__RegisterWorker m = KVDEX__REGISTER_WORKER__INIT;
	int rc;

	if (c == NULL || worker_msg_init(worker_id, address, dp_size, &m) < 0) {
		return -EINVAL;
	}
	api_begin(c);
	rc = call_all(c, KVDEX_MSG_REGISTER_WORKER, &m.base, KVDEX_MSG_REGISTER_WORKER_REPLY,
		      worker_reply_fn, NULL);
	if (rc < 0) {
		return rc;
	}
	return worker_remember(c, worker_id, address, dp_size);
}

static int
status_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	Kvdex__WorkerLoadReply *r = kvdex__worker_load_reply__unpack(NULL, m->len, m->payload);
	int rc;

	if (r == NULL) {
		return conn_failed(c, i, -EPROTO, "load reply");
	}
	rc = status_err(c, i, r->status);
	kvdex__worker_load_reply__free_unpacked(r, NULL);
	return rc;
}

KVDEX_EXPORT int
kvdex_worker_load(struct kvdex_client *c, uint32_t worker_id, uint16_t dp_rank,
		  const struct kvdex_load *load)
{
	Kvdex__WorkerLoad m = KVDEX__WORKER_LOAD__INIT;

	if (c == NULL || load == NULL || worker_id == 0) {
		return -EINVAL;
	}
	api_begin(c);
	m.worker_id = worker_id;
	m.dp_rank = dp_rank;
	m.queued = load->queued;
	m.running = load->running;
	m.prefill_tokens = load->prefill_tokens;
	m.kv_util_permille = load->kv_util_permille;
	return call_all(c, KVDEX_MSG_WORKER_LOAD, &m.base, KVDEX_MSG_WORKER_LOAD_REPLY,
			status_reply_fn, NULL);
}

struct list_ctx {
	struct kvdex_worker_info *out;
	size_t cap;
	int n;
};

static void
worker_info_fill(const Kvdex__WorkerInfo *w, struct kvdex_worker_info *o)
{
	memset(o, 0, sizeof(*o));
	o->worker_id = w->worker_id;
	o->dp_rank = (uint16_t)w->dp_rank;
	o->dp_size = (uint16_t)w->dp_size;
	o->slot = w->slot;
	snprintf(o->address, sizeof(o->address), "%s", w->address != NULL ? w->address : "");
	o->load.queued = w->queued;
	o->load.running = w->running;
	o->load.prefill_tokens = w->prefill_tokens;
	o->load.kv_util_permille = (uint16_t)w->kv_util_permille;
	o->load_age_ms = w->load_age_ms;
	o->holders = w->holders;
}

static int
list_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	Kvdex__ListWorkersReply *r = kvdex__list_workers_reply__unpack(NULL, m->len, m->payload);
	struct list_ctx *x = arg;
	int rc;

	if (r == NULL) {
		return conn_failed(c, i, -EPROTO, "list reply");
	}
	rc = status_err(c, i, r->status);
	if (rc == 0) {
		for (size_t k = 0; k < r->n_workers && k < x->cap; k++) {
			worker_info_fill(r->workers[k], &x->out[k]);
		}
		x->n = r->n_workers > INT32_MAX ? INT32_MAX : (int)r->n_workers;
	}
	kvdex__list_workers_reply__free_unpacked(r, NULL);
	return rc;
}

KVDEX_EXPORT int
kvdex_workers_list(struct kvdex_client *c, unsigned server, struct kvdex_worker_info *out,
		   size_t cap)
{
	Kvdex__ListWorkers m = KVDEX__LIST_WORKERS__INIT;
	struct list_ctx x = {.out = out, .cap = out != NULL ? cap : 0};
	int rc;

	if (c == NULL || server >= c->nsrv) {
		return -EINVAL;
	}
	api_begin(c);
	rc = call_one(c, server, KVDEX_MSG_LIST_WORKERS, &m.base, KVDEX_MSG_LIST_WORKERS_REPLY,
		      list_reply_fn, &x);
	return rc < 0 ? rc : x.n;
}

/* ---- Stats ---------------------------------------------------------------------------- */

struct stats_ctx {
	struct kvdex_counter *out;
	size_t cap;
	int n;
};

static int
stats_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	Kvdex__StatsReply *r = kvdex__stats_reply__unpack(NULL, m->len, m->payload);
	struct stats_ctx *x = arg;
	int rc;

	if (r == NULL) {
		return conn_failed(c, i, -EPROTO, "stats reply");
	}
	rc = status_err(c, i, r->status);
	if (rc == 0) {
		for (size_t k = 0; k < r->n_counters && k < x->cap; k++) {
			snprintf(x->out[k].name, sizeof(x->out[k].name), "%s",
				 r->counters[k]->name != NULL ? r->counters[k]->name : "");
			x->out[k].value = r->counters[k]->value;
		}
		x->n = r->n_counters > INT32_MAX ? INT32_MAX : (int)r->n_counters;
	}
	kvdex__stats_reply__free_unpacked(r, NULL);
	return rc;
}

KVDEX_EXPORT int
kvdex_stats(struct kvdex_client *c, unsigned server, struct kvdex_counter *out, size_t cap)
{
	Kvdex__StatsRequest m = KVDEX__STATS_REQUEST__INIT;
	struct stats_ctx x = {.out = out, .cap = out != NULL ? cap : 0};
	int rc;

	if (c == NULL || server >= c->nsrv) {
		return -EINVAL;
	}
	api_begin(c);
	rc = call_one(c, server, KVDEX_MSG_STATS, &m.base, KVDEX_MSG_STATS_REPLY, stats_reply_fn,
		      &x);
	return rc < 0 ? rc : x.n;
}

/* ---- Restarted servers ------------------------------------------------------------------ */

int
kvdex_client_server_restarted(struct kvdex_client *c, unsigned i, uint64_t incarnation)
{
	struct kvdex_server *s = &c->srv[i];
	int rc = 0;

	KVDEX_LOG_NOTICE(LOG_COMP, "server %s restarted (incarnation %llx -> %llx)", s->ep.name,
			 (unsigned long long)s->incarnation, (unsigned long long)incarnation);
	s->incarnation = incarnation;
	s->rows_valid = false;
	s->have_hdr = false;
	for (unsigned w = 0; w < c->nworkers && rc == 0; w++) {
		Kvdex__RegisterWorker m = KVDEX__REGISTER_WORKER__INIT;

		worker_msg_init(c->workers[w].worker_id, c->workers[w].address,
				c->workers[w].dp_size, &m);
		rc = call_one(c, i, KVDEX_MSG_REGISTER_WORKER, &m.base,
			      KVDEX_MSG_REGISTER_WORKER_REPLY, worker_reply_fn, NULL);
	}
	for (uint32_t h = 0; h < c->nns && rc == 0; h++) {
		struct ns_reply_ctx x;

		rc = ns_send(c, &c->ns[h], c->ns[h].created, (int)i, &x);
		if (rc == -ENOENT && !c->ns[h].created) {
			rc = 0; /* resolved only: the server does not know it (yet) */
		}
		c->ns[h].ids[i] = x.ids[i];
	}
	return rc;
}

/* ---- Publish ------------------------------------------------------------------------------ */

struct pub_batch {
	Kvdex__Publish msg[KVDEX_MAX_SERVERS];
	Kvdex__Event **ptrs; /* per-server slices */
	Kvdex__Event *evs;
	int *owner; /* per event: server index, -1 = all */
};

struct pub_ctx {
	const struct pub_batch *b;
	struct kvdex_publish_result res;
	unsigned replies, duplicates;
	size_t delivered; /* events in the batches a server accepted */
};

static int
pub_reply_fn(struct kvdex_client *c, unsigned i, const struct kvdex_msg *m, void *arg)
{
	Kvdex__PublishReply *r = kvdex__publish_reply__unpack(NULL, m->len, m->payload);
	struct pub_ctx *x = arg;
	int rc;

	if (r == NULL) {
		return conn_failed(c, i, -EPROTO, "publish reply");
	}
	rc = status_err(c, i, r->status);
	if (rc == 0) {
		x->replies++;
		x->delivered += x->b->msg[i].n_events;
		x->res.applied += r->applied;
		x->res.ignored += r->ignored;
		x->duplicates += r->duplicate;
		x->res.purged |= r->purged;
		if (r->gap) {
			if (!x->res.gap || r->expected_seq < x->res.expected_seq) {
				x->res.expected_seq = r->expected_seq;
			}
			x->res.gap = true;
		}
	}
	kvdex__publish_reply__free_unpacked(r, NULL);
	return rc;
}

static int
pub_check_event(const struct kvdex_client *c, const struct kvdex_event *e)
{
	if (e->type > KVDEX_EV_TOUCHED || e->tier >= KVDEX_NTIERS) {
		return -EINVAL;
	}
	if (e->type != KVDEX_EV_ALL_CLEARED && e->ns >= c->nns) {
		return -EINVAL;
	}
	if ((e->flags & KVDEX_EVF_SPECULATIVE) && e->spec_ttl_ms > KVDEX_SPEC_TTL_MAX_MS) {
		return -EINVAL;
	}
	return 0;
}

static void
pub_fill_event(const struct kvdex_event *e, uint32_t ns_id, Kvdex__Event *p)
{
	kvdex__event__init(p);
	p->type = (Kvdex__Event__Type)e->type;
	p->ns_id = ns_id;
	p->key = e->key;
	p->has_parent = (e->flags & KVDEX_EVF_PARENT) != 0;
	p->parent = p->has_parent ? e->parent : 0;
	p->tier = e->tier;
	p->speculative = (e->flags & KVDEX_EVF_SPECULATIVE) != 0;
	p->spec_ttl_ms = p->speculative ? e->spec_ttl_ms : 0;
	p->fused = (e->flags & KVDEX_EVF_FUSED) != 0;
	p->has_loc = (e->flags & KVDEX_EVF_LOC) != 0;
	p->loc_addr = p->has_loc ? e->loc_addr : 0;
	p->loc_len = p->has_loc ? e->loc_len : 0;
	p->tier_mask = e->type == KVDEX_EV_ALL_CLEARED ? e->tier_mask : 0;
}

/* Which server an event goes to; -1 = all (ALL_CLEARED). */
static int
pub_owner(const struct kvdex_client *c, const struct kvdex_event *e)
{
	if (e->type == KVDEX_EV_ALL_CLEARED) {
		return -1;
	}
	return (int)kvdex_place(c->seeds, c->nsrv, c->ns[e->ns].ns_hash, e->key);
}

/* Build each server's Publish: its events, in order, plus every ALL_CLEARED.
 * A speculative-only batch has no place in the worker's stream (no
 * incarnation, no seq), and an event whose namespace its owner does not know
 * is left out: a guess that cannot land is not worth failing the others. */
static int
pub_build(struct kvdex_client *c, const struct kvdex_publish_hdr *hdr, const struct kvdex_event *ev,
	  size_t n, unsigned flags, struct pub_batch *b)
{
	bool spec = (flags & KVDEX_PUB_SPECULATIVE_ONLY) != 0;
	size_t nall = 0, used = 0;

	b->owner = calloc(n != 0 ? n : 1, sizeof(*b->owner));
	if (b->owner == NULL) {
		return -ENOMEM;
	}
	for (size_t k = 0; k < n; k++) {
		b->owner[k] = pub_owner(c, &ev[k]);
		nall += b->owner[k] < 0;
	}
	/* Each event once, plus ALL_CLEARED once more per extra server. */
	b->evs = calloc(n + nall * c->nsrv + 1, sizeof(*b->evs));
	b->ptrs = calloc(n + nall * c->nsrv + 1, sizeof(*b->ptrs));
	if (b->evs == NULL || b->ptrs == NULL) {
		return -ENOMEM;
	}
	for (unsigned i = 0; i < c->nsrv; i++) {
		Kvdex__Publish *p = &b->msg[i];

		kvdex__publish__init(p);
		p->worker_id = hdr->worker_id;
		p->dp_rank = hdr->dp_rank;
		p->incarnation = spec ? 0 : hdr->incarnation;
		p->seq = spec ? 0 : hdr->seq;
		p->speculative_only = spec;
		p->events = &b->ptrs[used];
		for (size_t k = 0; k < n; k++) {
			int o = b->owner[k];
			uint32_t id = 0;

			if (o >= 0 && (unsigned)o != i) {
				continue;
			}
			if (ev[k].ns < c->nns) {
				id = c->ns[ev[k].ns].ids[i];
			}
			if (id == KVDEX_NS_NONE) {
				if (o >= 0 && spec) {
					continue;
				}
				if (o >= 0) {
					kvdex_client_set_error(c,
							       "namespace %u unknown on server %s",
							       ev[k].ns, c->srv[i].ep.name);
					return -ENOENT;
				}
				id = 0;
			}
			pub_fill_event(&ev[k], id, &b->evs[used]);
			b->ptrs[used] = &b->evs[used];
			used++;
			p->n_events++;
		}
	}
	return 0;
}

/* Refuse before sending anything if some server's share is too large: an
 * oversize frame would make that server close the connection. */
static int
pub_check_sizes(struct kvdex_client *c, struct pub_batch *b)
{
	for (unsigned i = 0; i < c->nsrv; i++) {
		size_t len = kvdex__publish__get_packed_size(&b->msg[i]);
		uint32_t max =
			c->srv[i].conn != NULL ? c->srv[i].conn->max_msg : KVDEX_MAX_MSG_DEFAULT;

		if (len + KVDEX_FRAME_HDR_SIZE > max ||
		    (c->srv[i].max_batch_events != 0 &&
		     b->msg[i].n_events > c->srv[i].max_batch_events)) {
			kvdex_client_set_error(c,
					       "batch too large for server %s (%zu bytes, "
					       "%zu events)",
					       c->srv[i].ep.name, len, b->msg[i].n_events);
			return -E2BIG;
		}
	}
	return 0;
}

int
kvdex_client_publish(struct kvdex_client *c, const struct kvdex_publish_hdr *hdr,
		     const struct kvdex_event *ev, size_t n, unsigned flags,
		     struct kvdex_publish_result *res)
{
	const ProtobufCMessage *msgs[KVDEX_MAX_SERVERS];
	struct pub_batch b = {.ptrs = NULL, .evs = NULL, .owner = NULL};
	bool spec = (flags & KVDEX_PUB_SPECULATIVE_ONLY) != 0;
	struct pub_ctx x;
	int rc;

	for (size_t k = 0; k < n; k++) {
		if (pub_check_event(c, &ev[k]) < 0) {
			kvdex_client_set_error(c, "event %zu: bad type, tier, namespace or ttl", k);
			return -EINVAL;
		}
	}
	memset(&x, 0, sizeof(x));
	x.b = &b;
	rc = pub_build(c, hdr, ev, n, flags, &b);
	/* A worker's batch goes everywhere or nowhere; a speculative one is
	 * best effort per server, so a share too large fails only there
	 * (srv_send's size check, or the server's TOO_LARGE). */
	if (rc == 0 && !spec) {
		rc = pub_check_sizes(c, &b);
	}
	if (rc == 0) {
		for (unsigned i = 0; i < c->nsrv; i++) {
			/* Servers owning none of the guesses get nothing. */
			msgs[i] = spec && b.msg[i].n_events == 0 ? NULL : &b.msg[i].base;
		}
		rc = bcast(c, KVDEX_MSG_PUBLISH, msgs, KVDEX_MSG_PUBLISH_REPLY, pub_reply_fn, &x);
	}
	free(b.evs);
	free(b.ptrs);
	free(b.owner);
	x.res.duplicate = x.replies > 0 && x.duplicates == x.replies;
	if (res != NULL) {
		*res = x.res;
	}
	return rc < 0 ? rc : (int)x.delivered;
}

KVDEX_EXPORT int
kvdex_publish(struct kvdex_client *c, const struct kvdex_publish_hdr *hdr,
	      const struct kvdex_event *ev, size_t n, struct kvdex_publish_result *res)
{
	int rc;

	if (c == NULL || hdr == NULL || hdr->worker_id == 0 || (n > 0 && ev == NULL)) {
		return -EINVAL;
	}
	api_begin(c);
	rc = kvdex_client_publish(c, hdr, ev, n, 0, res);
	return rc < 0 ? rc : 0;
}

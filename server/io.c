/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The io thread: kvdexd's "NIC" (docs/DESIGN.md §4, §7).
 *
 * One level-triggered epoll loop over the tcp and unix listeners, every
 * connection and an eventfd the writer kicks when replies are queued.
 * Sockets are non-blocking. Frames are parsed incrementally from a
 * per-connection buffer (kvdex_frame_hdr_decode); tcp READ frames are
 * answered here with a memcpy from the region (range-checked against the
 * published region_size: a torn image is the reader's problem, it validates
 * checksums); every other request frame is copied into a kvdex_req and
 * queued to the writer with a reference on its connection.
 *
 * Writing: replies (from the writer, or built here) go on a per-connection
 * list and are sent with sendmsg; EPOLLOUT is armed only while something is
 * pending. A Hello reply flagged KVDEX_REP_FD carries the region's
 * read-only fd (SCM_RIGHTS) on its first byte.
 *
 * Framing errors (bad magic or type, oversize, a request before Hello) get a
 * fatal ErrorReply: the connection stops reading, flushes, then closes.
 *
 * Shutdown: when main sets `stopping`, the io thread closes the listeners,
 * stops reading, sets io_quiesced and kicks the writer; once the writer says
 * writer_done it writes out every queued reply (bounded wait), closes all
 * connections and exits.
 *
 * Verbs connections (server/rdma.c) are the same kvdex_sconn with an
 * rdma pointer and no socket: rdma.c feeds the bytes of every RECV into
 * kvdex_io_conn_input() (the same frame parser), and conn_flush hands the
 * reply queue to kvdex_rdma_send() instead of sendmsg. The CM event channel
 * and each connection's completion channel are epoll sources of their own.
 *
 * Locking: none. Connections are io-owned except for their refcount and
 * the writer-owned fields documented in server.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <urcu.h>

#include "common/frame.h"
#include "common/log.h"
#include "kvdex.pb-c.h"
#include "server/rdma.h"
#include "server/server.h"

#define LOG_COMP "server.io"
#define IO_EVENTS 64
#define RBUF_INIT (64u << 10)
#define READS_PER_EVENT 16
#define FINAL_FLUSH_MS 2000

struct io_src {
	enum kvdex_src_kind kind;
};

static struct io_src src_tcp = {KVDEX_SRC_LISTEN_TCP};
static struct io_src src_unix = {KVDEX_SRC_LISTEN_UNIX};
static struct io_src src_efd = {KVDEX_SRC_EVENTFD};

static CDS_LIST_HEAD(io_conns);
static uint64_t io_next_id;
static bool io_kick_writer;
static bool io_is_quiesced;

/* ---- shared helpers ------------------------------------------------------ */

uint64_t
kvdex_server_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void
kvdex_server_kick(int efd)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is saturated: the consumer will wake. */
	if (write(efd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP, "eventfd write: %s",
				    strerror(errno));
	}
}

static void
sconn_release(struct urcu_ref *ref)
{
	struct kvdex_sconn *c = caa_container_of(ref, struct kvdex_sconn, ref);

	free(c->rbuf);
	free(c);
}

void
kvdex_sconn_put(struct kvdex_sconn *conn)
{
	urcu_ref_put(&conn->ref, sconn_release);
}

struct kvdex_rep *
kvdex_rep_alloc(struct kvdex_sconn *conn, uint16_t type, uint32_t req_id, size_t len)
{
	struct kvdex_rep *rep;

	if (len > UINT32_MAX) {
		return NULL;
	}
	rep = malloc(sizeof(*rep) + KVDEX_FRAME_HDR_SIZE + len);
	if (rep == NULL) {
		return NULL;
	}
	cds_wfcq_node_init(&rep->qn);
	rep->next = NULL;
	rep->conn = conn;
	rep->flags = 0;
	rep->len = KVDEX_FRAME_HDR_SIZE + len;
	kvdex_frame_hdr_encode(rep->data, type, (uint32_t)len, req_id);
	kvdex_sconn_get(conn);
	return rep;
}

void
kvdex_rep_free(struct kvdex_rep *rep)
{
	if (rep == NULL) {
		return;
	}
	kvdex_sconn_put(rep->conn);
	free(rep);
}

/* ---- connections --------------------------------------------------------- */

static void
conn_set_mask(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	uint32_t want = 0;
	struct epoll_event ev;

	if (c->rdma != NULL) {
		return; /* completions drive verbs connections */
	}
	if (!c->read_off && !c->closing) {
		want |= EPOLLIN;
	}
	if (c->wq_head != NULL) {
		want |= EPOLLOUT;
	}
	if (want == c->ev_mask) {
		return;
	}
	ev.events = want;
	ev.data.ptr = c;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
		c->ev_mask = want;
	}
}

static void
conn_close(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	if (!c->open) {
		return;
	}
	c->open = false;
	if (c->rdma != NULL) {
		/* Disconnect and drain; rdma.c destroys the QP when drained. */
		kvdex_rdma_conn_close(srv, c->rdma);
		c->rdma = NULL;
	} else {
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	cds_list_del(&c->link);
	uatomic_dec(&srv->ctr.conns_active);
	while (c->wq_head != NULL) {
		struct kvdex_rep *rep = c->wq_head;

		c->wq_head = rep->next;
		kvdex_rep_free(rep);
	}
	c->wq_tail = NULL;
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu closed", (unsigned long long)c->id);
	kvdex_sconn_put(c); /* the io thread's reference */
}

static void
conn_new(struct kvdex_server *srv, int fd, bool is_unix)
{
	struct kvdex_sconn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = {.events = EPOLLIN};
	int one = 1;

	if (c == NULL) {
		close(fd);
		return;
	}
	c->kind = KVDEX_SRC_CONN;
	urcu_ref_init(&c->ref);
	c->id = ++io_next_id;
	c->is_unix = is_unix;
	c->open = true;
	c->fd = fd;
	c->ev_mask = EPOLLIN;
	ev.data.ptr = c;
	if (!is_unix) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "epoll_ctl(ADD conn): %s", strerror(errno));
		close(fd);
		free(c);
		return;
	}
	cds_list_add_tail(&c->link, &io_conns);
	KVDEX_CTR_INC(srv, conns_accepted);
	uatomic_inc(&srv->ctr.conns_active);
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu accepted (%s)", (unsigned long long)c->id,
			is_unix ? "unix" : "tcp");
}

struct kvdex_sconn *
kvdex_io_conn_new_rdma(struct kvdex_server *srv, struct kvdex_rconn *rc)
{
	struct kvdex_sconn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		return NULL;
	}
	c->kind = KVDEX_SRC_CONN;
	urcu_ref_init(&c->ref);
	c->id = ++io_next_id;
	c->open = true;
	c->fd = -1;
	c->rdma = rc;
	c->read_off = io_is_quiesced;
	cds_list_add_tail(&c->link, &io_conns);
	KVDEX_CTR_INC(srv, conns_accepted);
	uatomic_inc(&srv->ctr.conns_active);
	KVDEX_LOG_DEBUG(LOG_COMP, "conn %llu accepted (rdma)", (unsigned long long)c->id);
	return c;
}

bool
kvdex_io_quiesced(void)
{
	return io_is_quiesced;
}

/* Write as much of the queue as the socket takes. May close (and free) c. */
static void
conn_flush(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	if (c->rdma != NULL) {
		if (kvdex_rdma_send(srv, c) != 0) {
			conn_close(srv, c);
			return;
		}
	}
	while (c->rdma == NULL && c->wq_head != NULL) {
		struct kvdex_rep *rep = c->wq_head;
		struct iovec iov = {.iov_base = rep->data + c->woff, .iov_len = rep->len - c->woff};
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} cm;
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (c->woff == 0 && (rep->flags & KVDEX_REP_FD)) {
			struct cmsghdr *ch;

			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = sizeof(cm.buf);
			ch = CMSG_FIRSTHDR(&mh);
			ch->cmsg_level = SOL_SOCKET;
			ch->cmsg_type = SCM_RIGHTS;
			ch->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(ch), &srv->rg->ro_fd, sizeof(int));
		}
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				break;
			}
			conn_close(srv, c);
			return;
		}
		c->woff += (size_t)n;
		if (c->woff == rep->len) {
			c->wq_head = rep->next;
			if (c->wq_head == NULL) {
				c->wq_tail = NULL;
			}
			c->woff = 0;
			kvdex_rep_free(rep);
		}
	}
	if (c->wq_head == NULL && c->closing) {
		conn_close(srv, c);
		return;
	}
	conn_set_mask(srv, c);
}

static void
conn_push(struct kvdex_sconn *c, struct kvdex_rep *rep)
{
	rep->next = NULL;
	if (c->wq_tail != NULL) {
		c->wq_tail->next = rep;
	} else {
		c->wq_head = rep;
	}
	c->wq_tail = rep;
	if (rep->flags & KVDEX_REP_HELLO_OK) {
		c->hello_io = true;
	}
	if (rep->flags & KVDEX_REP_CLOSE) {
		c->closing = true;
	}
}

/* An ErrorReply built by the io thread itself. */
static void
io_error(struct kvdex_server *srv, struct kvdex_sconn *c, uint32_t req_id, Kvdex__Code code,
	 bool fatal, const char *msg)
{
	Kvdex__ErrorReply er = KVDEX__ERROR_REPLY__INIT;
	Kvdex__Status st = KVDEX__STATUS__INIT;
	struct kvdex_rep *rep;
	size_t len;

	st.code = code;
	st.message = (char *)msg;
	er.status = &st;
	er.fatal = fatal;
	len = kvdex__error_reply__get_packed_size(&er);
	rep = kvdex_rep_alloc(c, KVDEX_MSG_ERROR, req_id, len);
	KVDEX_LOG_INFO(LOG_COMP, "conn %llu: error %d%s: %s", (unsigned long long)c->id, code,
		       fatal ? " (closing)" : "", msg);
	if (rep == NULL) {
		if (fatal) {
			c->closing = true;
		}
		return;
	}
	kvdex__error_reply__pack(&er, rep->data + KVDEX_FRAME_HDR_SIZE);
	rep->flags = fatal ? KVDEX_REP_CLOSE : 0;
	conn_push(c, rep);
}

/* ---- tcp READ ------------------------------------------------------------ */

static int32_t
read_op_check(const struct kvdex_read_req *op, uint64_t size)
{
	if (op->len > KVDEX_READ_MAX_LEN) {
		return -EINVAL;
	}
	if (op->off > size || op->len > size - op->off) {
		return -ERANGE;
	}
	return 0;
}

static void
read_fill(struct kvdex_server *srv, struct kvdex_rep *rep, const struct kvdex_read_req *ops,
	  uint32_t nops, uint64_t size)
{
	uint8_t *p = rep->data + KVDEX_FRAME_HDR_SIZE;
	uint8_t *data = p + 8 + (size_t)nops * sizeof(struct kvdex_read_rsp);
	uint32_t hdr[2] = {nops, 0};
	uint64_t bytes = 0;

	memcpy(p, hdr, sizeof(hdr));
	for (uint32_t i = 0; i < nops; i++) {
		struct kvdex_read_rsp rsp = {.status = read_op_check(&ops[i], size)};

		if (rsp.status == 0) {
			rsp.len = ops[i].len;
			/* The writer may be rewriting these bytes: the reader
			 * validates the checksum of what it gets. */
			memcpy(data, kvdex_region_ptr(srv->rg, ops[i].off), ops[i].len);
			data += ops[i].len;
			bytes += ops[i].len;
		} else {
			KVDEX_CTR_INC(srv, bad_reads);
		}
		memcpy(p + 8 + (size_t)i * sizeof(rsp), &rsp, sizeof(rsp));
	}
	KVDEX_CTR_INC(srv, tcp_read_batches);
	KVDEX_CTR_ADD(srv, tcp_read_ops, nops);
	KVDEX_CTR_ADD(srv, tcp_read_bytes, bytes);
}

static void
io_read(struct kvdex_server *srv, struct kvdex_sconn *c, const struct kvdex_frame_hdr *h,
	const uint8_t *payload)
{
	uint32_t nops = h->len / sizeof(struct kvdex_read_req);
	uint64_t size = kvdex_region_readable(srv->rg);
	struct kvdex_read_req ops[KVDEX_READ_MAX_OPS];
	struct kvdex_rep *rep;
	size_t len;

	if (!c->hello_io) {
		KVDEX_CTR_INC(srv, not_ready);
		io_error(srv, c, h->req_id, KVDEX__CODE__NOT_READY, true, "READ before Hello");
		return;
	}
	if (h->len % sizeof(struct kvdex_read_req) != 0 || nops == 0 || nops > KVDEX_READ_MAX_OPS) {
		KVDEX_CTR_INC(srv, malformed_requests);
		io_error(srv, c, h->req_id, KVDEX__CODE__MALFORMED, false,
			 "READ payload must be 1..512 ops of 16 bytes");
		return;
	}
	memcpy(ops, payload, h->len);
	len = 8 + (size_t)nops * sizeof(struct kvdex_read_rsp);
	for (uint32_t i = 0; i < nops; i++) {
		if (read_op_check(&ops[i], size) == 0) {
			len += ops[i].len;
		}
	}
	rep = kvdex_rep_alloc(c, KVDEX_MSG_READ_REPLY, h->req_id, len);
	if (rep == NULL) {
		io_error(srv, c, h->req_id, KVDEX__CODE__INTERNAL, false, "out of memory");
		return;
	}
	read_fill(srv, rep, ops, nops, size);
	conn_push(c, rep);
}

/* ---- frames ---------------------------------------------------------------- */

static bool
is_request(uint16_t type)
{
	switch (type) {
	case KVDEX_MSG_HELLO:
	case KVDEX_MSG_REGISTER_NS:
	case KVDEX_MSG_REGISTER_WORKER:
	case KVDEX_MSG_PUBLISH:
	case KVDEX_MSG_WORKER_LOAD:
	case KVDEX_MSG_STATS:
	case KVDEX_MSG_LIST_WORKERS:
		return true;
	default:
		return false;
	}
}

static void
io_queue(struct kvdex_server *srv, struct kvdex_sconn *c, const struct kvdex_frame_hdr *h,
	 const uint8_t *payload)
{
	struct kvdex_req *req = malloc(sizeof(*req) + h->len);

	if (req == NULL) {
		io_error(srv, c, h->req_id, KVDEX__CODE__INTERNAL, false, "out of memory");
		return;
	}
	cds_wfcq_node_init(&req->qn);
	kvdex_sconn_get(c);
	req->conn = c;
	req->type = h->type;
	req->req_id = h->req_id;
	req->len = h->len;
	memcpy(req->payload, payload, h->len);
	cds_wfcq_enqueue(&srv->req_head, &srv->req_tail, &req->qn);
	io_kick_writer = true;
}

static void
io_frame(struct kvdex_server *srv, struct kvdex_sconn *c, const struct kvdex_frame_hdr *h,
	 const uint8_t *payload)
{
	KVDEX_CTR_INC(srv, frames_rx);
	if (h->type == KVDEX_MSG_READ) {
		io_read(srv, c, h, payload);
	} else if (is_request(h->type)) {
		io_queue(srv, c, h, payload);
	} else {
		KVDEX_CTR_INC(srv, bad_frames);
		io_error(srv, c, h->req_id, KVDEX__CODE__MALFORMED, true,
			 "message type is not a request");
	}
}

/* Parse every complete frame in the buffer. Returns the size the buffer
 * needs for the next incomplete frame (0 if none). */
static size_t
conn_parse(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	size_t pos = 0;
	size_t want = 0;

	while (!c->closing) {
		struct kvdex_frame_hdr h;
		int rc = kvdex_frame_hdr_decode(c->rbuf + pos, c->rlen - pos,
						srv->cfg.max_msg_bytes, &h);
		size_t need;

		if (rc == 0) {
			break;
		}
		if (rc == -EPROTO) {
			KVDEX_CTR_INC(srv, bad_frames);
			io_error(srv, c, h.req_id, KVDEX__CODE__MALFORMED, true,
				 "bad frame magic or unknown message type");
			break;
		}
		if (rc == -EMSGSIZE) {
			KVDEX_CTR_INC(srv, oversize_frames);
			io_error(srv, c, h.req_id, KVDEX__CODE__TOO_LARGE, true,
				 "frame larger than max-msg-bytes");
			break;
		}
		need = KVDEX_FRAME_HDR_SIZE + (size_t)h.len;
		if (c->rlen - pos < need) {
			want = need;
			break;
		}
		io_frame(srv, c, &h, c->rbuf + pos + KVDEX_FRAME_HDR_SIZE);
		pos += need;
	}
	memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
	c->rlen -= pos;
	return want;
}

static int
rbuf_reserve(struct kvdex_sconn *c, size_t want)
{
	size_t cap = c->rcap ? c->rcap : RBUF_INIT;
	uint8_t *p;

	if (want < c->rlen + 1) {
		want = c->rlen + 1;
	}
	while (cap < want) {
		cap *= 2;
	}
	if (cap == c->rcap) {
		return 0;
	}
	p = realloc(c->rbuf, cap);
	if (p == NULL) {
		return -ENOMEM;
	}
	c->rbuf = p;
	c->rcap = cap;
	return 0;
}

void
kvdex_io_conn_flush(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	if (!c->open) {
		return;
	}
	kvdex_sconn_get(c);
	conn_flush(srv, c);
	kvdex_sconn_put(c);
}

void
kvdex_io_conn_close(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	conn_close(srv, c);
}

/* Bytes a verbs connection received: the same parser as sockets. The
 * caller holds a reference on c; this may close it. */
void
kvdex_io_conn_input(struct kvdex_server *srv, struct kvdex_sconn *c, const uint8_t *p, size_t n)
{
	if (!c->open || c->read_off || c->closing) {
		return;
	}
	if (rbuf_reserve(c, c->rlen + n) != 0) {
		conn_close(srv, c);
		return;
	}
	memcpy(c->rbuf + c->rlen, p, n);
	c->rlen += n;
	conn_parse(srv, c);
	/* A large frame needs a large buffer; the next bytes find it. */
}

/* May close (and free) c. */
static void
conn_readable(struct kvdex_server *srv, struct kvdex_sconn *c)
{
	size_t want = 0;

	for (int i = 0; i < READS_PER_EVENT && !c->closing; i++) {
		ssize_t n;

		if (rbuf_reserve(c, want) != 0) {
			conn_close(srv, c);
			return;
		}
		n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
		if (n > 0) {
			c->rlen += (size_t)n;
			want = conn_parse(srv, c);
			continue;
		}
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		}
		/* EOF or a reset. */
		if (c->rlen > 0) {
			KVDEX_CTR_INC(srv, disconnect_mid_msg);
		}
		conn_close(srv, c);
		return;
	}
	conn_flush(srv, c);
}

static void
conn_event(struct kvdex_server *srv, struct kvdex_sconn *c, uint32_t events)
{
	/* Hold a reference: closing drops the io thread's own. */
	kvdex_sconn_get(c);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (!c->read_off && !c->closing) {
			conn_readable(srv, c);
		} else if (events & (EPOLLHUP | EPOLLERR)) {
			conn_close(srv, c);
		}
	}
	if (c->open && (events & EPOLLOUT)) {
		conn_flush(srv, c);
	}
	kvdex_sconn_put(c);
}

/* ---- listeners --------------------------------------------------------------- */

static void
io_accept(struct kvdex_server *srv, int lfd, bool is_unix)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED) {
				continue;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 5, LOG_COMP, "accept: %s",
						    strerror(errno));
			}
			return;
		}
		if (uatomic_read(&srv->ctr.conns_active) >= srv->cfg.max_conns) {
			close(fd);
			KVDEX_CTR_INC(srv, conns_rejected);
			KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
					    "max-conns %llu reached: rejecting connections",
					    (unsigned long long)srv->cfg.max_conns);
			continue;
		}
		conn_new(srv, fd, is_unix);
	}
}

static int
listen_tcp(struct kvdex_server *srv)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct addrinfo *ai;
	char port[8];
	int one = 1;
	int rc;
	int fd;

	snprintf(port, sizeof(port), "%u", srv->cfg.tcp_port);
	rc = getaddrinfo(srv->cfg.tcp_host, port, &hints, &ai);
	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "listen-tcp %s:%s: %s", srv->cfg.tcp_host, port,
			      gai_strerror(rc));
		return -EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		KVDEX_LOG_ERR(LOG_COMP, "socket: %s", strerror(errno));
		goto err_free;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
		rc = -errno;
		KVDEX_LOG_ERR(LOG_COMP, "bind/listen tcp %s:%s: %s", srv->cfg.tcp_host, port,
			      strerror(errno));
		goto err_close;
	}
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	srv->tcp_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						       : ((struct sockaddr_in *)&ss)->sin_port);
	srv->tcp_fd = fd;
	freeaddrinfo(ai);
	return 0;

err_close:
	close(fd);
err_free:
	freeaddrinfo(ai);
	return rc;
}

/* A leftover socket file from a dead server is removed; a live one is an
 * error (two servers must not share a path). */
static int
unix_clear_stale(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;
	int rc;

	if (lstat(path, &st) != 0) {
		return 0;
	}
	if (!S_ISSOCK(st.st_mode)) {
		KVDEX_LOG_ERR(LOG_COMP, "listen-unix %s: exists and is not a socket", path);
		return -EEXIST;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (rc == 0) {
		KVDEX_LOG_ERR(LOG_COMP, "listen-unix %s: another server is listening there", path);
		return -EADDRINUSE;
	}
	unlink(path);
	return 0;
}

static int
listen_unix(struct kvdex_server *srv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int rc;
	int fd;

	rc = unix_clear_stale(srv->unix_path);
	if (rc != 0) {
		return rc;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv->unix_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "socket(AF_UNIX): %s", strerror(errno));
		return -errno;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1024) != 0) {
		rc = -errno;
		KVDEX_LOG_ERR(LOG_COMP, "bind/listen unix %s: %s", srv->unix_path, strerror(errno));
		close(fd);
		return rc;
	}
	srv->unix_fd = fd;
	srv->unix_bound = true;
	return 0;
}

static void
default_names(struct kvdex_server *srv)
{
	char host[200] = "localhost";

	if (srv->cfg.unix_enabled) {
		if (srv->cfg.unix_path[0] != '\0') {
			snprintf(srv->unix_path, sizeof(srv->unix_path), "%s", srv->cfg.unix_path);
		} else if (srv->cfg.tcp_enabled) {
			snprintf(srv->unix_path, sizeof(srv->unix_path), "/tmp/kvdexd-%u.sock",
				 srv->tcp_port);
		} else {
			snprintf(srv->unix_path, sizeof(srv->unix_path), "/tmp/kvdexd.sock");
		}
	}
	if (srv->cfg.server_id[0] != '\0') {
		snprintf(srv->server_id, sizeof(srv->server_id), "%s", srv->cfg.server_id);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	if (srv->cfg.tcp_enabled) {
		snprintf(srv->server_id, sizeof(srv->server_id), "%s:%u", host, srv->tcp_port);
	} else {
		snprintf(srv->server_id, sizeof(srv->server_id), "%s:%s", host, srv->unix_path);
	}
}

int
kvdex_io_listen(struct kvdex_server *srv)
{
	int rc;

	if (srv->cfg.tcp_enabled) {
		rc = listen_tcp(srv);
		if (rc != 0) {
			return rc;
		}
	}
	default_names(srv);
	if (srv->cfg.unix_enabled) {
		rc = listen_unix(srv);
		if (rc != 0) {
			kvdex_io_close_listeners(srv);
			return rc;
		}
	}
	return 0;
}

void
kvdex_io_close_listeners(struct kvdex_server *srv)
{
	if (srv->tcp_fd >= 0) {
		if (srv->epfd >= 0) {
			epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->tcp_fd, NULL);
		}
		close(srv->tcp_fd);
		srv->tcp_fd = -1;
	}
	if (srv->unix_fd >= 0) {
		if (srv->epfd >= 0) {
			epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->unix_fd, NULL);
		}
		close(srv->unix_fd);
		srv->unix_fd = -1;
	}
}

/* ---- the loop ------------------------------------------------------------------ */

static void
io_drain_replies(struct kvdex_server *srv)
{
	struct cds_wfcq_node *node;

	while ((node = cds_wfcq_dequeue_blocking(&srv->rep_head, &srv->rep_tail)) != NULL) {
		struct kvdex_rep *rep = caa_container_of(node, struct kvdex_rep, qn);
		struct kvdex_sconn *c = rep->conn;

		if (!c->open) {
			kvdex_rep_free(rep); /* the connection is gone */
			continue;
		}
		conn_push(c, rep);
		kvdex_sconn_get(c);
		conn_flush(srv, c);
		kvdex_sconn_put(c);
	}
}

static void
io_quiesce(struct kvdex_server *srv)
{
	struct kvdex_sconn *c;

	kvdex_io_close_listeners(srv);
	io_is_quiesced = true; /* rdma.c rejects new CONNECT_REQUESTs from now on */
	cds_list_for_each_entry(c, &io_conns, link)
	{
		c->read_off = true;
		conn_set_mask(srv, c);
	}
	uatomic_set(&srv->io_quiesced, 1);
	kvdex_server_kick(srv->writer_efd);
}

static bool
io_pending_writes(void)
{
	struct kvdex_sconn *c;

	cds_list_for_each_entry(c, &io_conns, link)
	{
		if (c->wq_head != NULL) {
			return true;
		}
	}
	return false;
}

static void
io_dispatch(struct kvdex_server *srv, struct epoll_event *ev)
{
	struct io_src *src = ev->data.ptr;
	uint64_t v;

	switch (src->kind) {
	case KVDEX_SRC_LISTEN_TCP:
		io_accept(srv, srv->tcp_fd, false);
		break;
	case KVDEX_SRC_LISTEN_UNIX:
		io_accept(srv, srv->unix_fd, true);
		break;
	case KVDEX_SRC_EVENTFD:
		if (read(srv->io_efd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
			KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_ERR, 5, LOG_COMP, "eventfd read: %s",
					    strerror(errno));
		}
		break;
	case KVDEX_SRC_CONN:
		conn_event(srv, (struct kvdex_sconn *)src, ev->events);
		break;
	case KVDEX_SRC_RDMA_CM:
		kvdex_rdma_cm_event(srv);
		break;
	case KVDEX_SRC_RDMA_CQ:
		kvdex_rdma_cq_event(srv, (struct kvdex_rconn *)src);
		break;
	}
}

/* After the writer finished: write what is queued, for a bounded time. */
static void
io_final_flush(struct kvdex_server *srv)
{
	uint64_t deadline = kvdex_server_now_ns() + FINAL_FLUSH_MS * 1000000ull;
	struct epoll_event evs[IO_EVENTS];

	io_drain_replies(srv);
	while (io_pending_writes() && kvdex_server_now_ns() < deadline) {
		int n = epoll_wait(srv->epfd, evs, IO_EVENTS, 50);

		for (int i = 0; i < n; i++) {
			struct io_src *src = evs[i].data.ptr;

			/* Verbs replies move as credits come back: completions
			 * and CM events still count here. */
			if (src->kind == KVDEX_SRC_CONN || src->kind == KVDEX_SRC_RDMA_CQ ||
			    src->kind == KVDEX_SRC_RDMA_CM) {
				io_dispatch(srv, &evs[i]);
			}
		}
	}
	while (!cds_list_empty(&io_conns)) {
		conn_close(srv, cds_list_first_entry(&io_conns, struct kvdex_sconn, link));
	}
	/* Every verbs connection is disconnecting: drain and destroy them. */
	kvdex_rdma_drain_all(srv, FINAL_FLUSH_MS);
}

static void *
io_main(void *arg)
{
	struct kvdex_server *srv = arg;
	struct epoll_event evs[IO_EVENTS];
	bool quiesced = false;

	rcu_register_thread();
	for (;;) {
		int tmo = kvdex_rdma_timeout_ms(srv);
		int n = epoll_wait(srv->epfd, evs, IO_EVENTS, quiesced ? 50 : tmo);

		if (n < 0 && errno != EINTR) {
			KVDEX_LOG_ERR(LOG_COMP, "epoll_wait: %s", strerror(errno));
			uatomic_set(&srv->io_failed, 1);
			break;
		}
		for (int i = 0; i < n; i++) {
			io_dispatch(srv, &evs[i]);
		}
		kvdex_rdma_tick(srv);
		if (io_kick_writer) {
			io_kick_writer = false;
			kvdex_server_kick(srv->writer_efd);
		}
		io_drain_replies(srv);
		if (!quiesced && uatomic_read(&srv->stopping)) {
			io_quiesce(srv);
			quiesced = true;
		}
		if (quiesced && uatomic_read(&srv->writer_done)) {
			break;
		}
	}
	if (!quiesced) {
		io_quiesce(srv);
	}
	io_final_flush(srv);
	rcu_unregister_thread();
	return NULL;
}

static int
epoll_add(struct kvdex_server *srv, int fd, struct io_src *src)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = src};

	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "epoll_ctl(ADD): %s", strerror(errno));
		return -errno;
	}
	return 0;
}

int
kvdex_io_start(struct kvdex_server *srv)
{
	int rc;

	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->epfd < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "epoll_create1: %s", strerror(errno));
		return -errno;
	}
	rc = epoll_add(srv, srv->io_efd, &src_efd);
	if (rc == 0 && srv->tcp_fd >= 0) {
		rc = epoll_add(srv, srv->tcp_fd, &src_tcp);
	}
	if (rc == 0 && srv->unix_fd >= 0) {
		rc = epoll_add(srv, srv->unix_fd, &src_unix);
	}
	if (rc == 0 && srv->rdma != NULL) {
		rc = kvdex_rdma_start(srv);
	}
	if (rc != 0) {
		return rc;
	}
	rc = pthread_create(&srv->io_thread, NULL, io_main, srv);
	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "pthread_create(io): %s", strerror(rc));
		return -rc;
	}
	srv->io_started = true;
	return 0;
}

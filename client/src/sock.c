/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Framed stream I/O for the client transports. See sock.h.
 *
 * Receive buffer: bytes [head, tail) are received and unparsed. The frame
 * returned last occupies [head, head + consume) and is dropped at the next
 * recv, which keeps its payload valid until then. The buffer is compacted
 * (moved to offset 0) only when room is needed, and `base` tracks the stream
 * position of buf[0] so that an SCM_RIGHTS fd can be tied to its frame.
 */
#include "client/src/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/log.h"

#define SOCK_INITIAL_BUF 65536u

uint64_t
kvdex_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int
kvdex_ms_left(uint64_t deadline)
{
	uint64_t now = kvdex_now_ms();

	if (now >= deadline) {
		return 0;
	}
	return deadline - now > INT32_MAX ? INT32_MAX : (int)(deadline - now);
}

static int
sock_wait(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	int rc;

	for (;;) {
		rc = poll(&pfd, 1, kvdex_ms_left(deadline));
		if (rc > 0) {
			return 0;
		}
		if (rc == 0) {
			return -ETIMEDOUT;
		}
		if (errno != EINTR) {
			return -errno;
		}
	}
}

static int
sock_finish_connect(int fd, uint64_t deadline)
{
	socklen_t len = sizeof(int);
	int err = 0;
	int rc;

	rc = sock_wait(fd, POLLOUT, deadline);
	if (rc < 0) {
		return rc;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
		return -errno;
	}
	return -err;
}

static int
sock_connect_addr(int family, const struct sockaddr *sa, socklen_t salen, uint64_t deadline,
		  int *out)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc = 0;

	if (fd < 0) {
		return -errno;
	}
	if (connect(fd, sa, salen) < 0) {
		rc = -errno;
		if (rc == -EINPROGRESS || rc == -EAGAIN) {
			rc = sock_finish_connect(fd, deadline);
		}
	}
	if (rc < 0) {
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

static int
sock_connect_unix(const char *path, uint64_t deadline, int *fd)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	if (strlen(path) >= sizeof(sun.sun_path)) {
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	return sock_connect_addr(AF_UNIX, (struct sockaddr *)&sun, sizeof(sun), deadline, fd);
}

static int
sock_connect_tcp(const char *host, const char *port, uint64_t deadline, int *fd)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int rc = -EHOSTUNREACH;
	int one = 1;

	if (getaddrinfo(host, port, &hints, &res) != 0) {
		return -EHOSTUNREACH;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		rc = sock_connect_addr(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline, fd);
		if (rc == 0 || rc == -ETIMEDOUT) {
			break;
		}
	}
	freeaddrinfo(res);
	if (rc == 0) {
		/* Small request/response frames: never wait for Nagle. */
		setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return rc;
}

int
kvdex_sock_connect(struct kvdex_sock *s, const struct kvdex_endpoint *ep, int timeout_ms)
{
	uint64_t deadline = kvdex_now_ms() + (uint64_t)timeout_ms;
	int rc;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->pend_fd = -1;
	s->buf = malloc(SOCK_INITIAL_BUF);
	if (s->buf == NULL) {
		return -ENOMEM;
	}
	s->cap = SOCK_INITIAL_BUF;
	if (ep->kind == KVDEX_TRANSPORT_SHM) {
		rc = sock_connect_unix(ep->path, deadline, &s->fd);
	} else {
		rc = sock_connect_tcp(ep->host, ep->port, deadline, &s->fd);
	}
	if (rc < 0) {
		free(s->buf);
		s->buf = NULL;
		/* A missing unix socket is a server that is not there. */
		return rc == -ENOENT ? -ECONNREFUSED : rc;
	}
	return 0;
}

void
kvdex_sock_close(struct kvdex_sock *s)
{
	if (s->fd >= 0) {
		close(s->fd);
	}
	if (s->pend_fd >= 0) {
		close(s->pend_fd);
	}
	free(s->buf);
	s->buf = NULL;
	s->fd = -1;
	s->pend_fd = -1;
}

static int
sock_err(struct kvdex_sock *s, int err)
{
	if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN || err == -ECONNABORTED) {
		err = -ECONNRESET;
	}
	if (err == -ECONNRESET || err == -EPROTO) {
		s->dead = true;
	}
	return err;
}

int
kvdex_sock_send(struct kvdex_sock *s, uint16_t type, uint32_t req_id, const void *p1, size_t l1,
		const void *p2, size_t l2, int timeout_ms)
{
	uint64_t deadline = kvdex_now_ms() + (uint64_t)timeout_ms;
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	struct iovec iov[3] = {
		{.iov_base = hdr, .iov_len = sizeof(hdr)},
		{.iov_base = (void *)p1, .iov_len = l1},
		{.iov_base = (void *)p2, .iov_len = l2},
	};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 3};
	int rc;

	if (s->dead) {
		return -ECONNRESET;
	}
	if (l1 + l2 > UINT32_MAX) {
		return -E2BIG;
	}
	kvdex_frame_hdr_encode(hdr, type, (uint32_t)(l1 + l2), req_id);
	while (mh.msg_iovlen > 0) {
		ssize_t n = sendmsg(s->fd, &mh, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				return sock_err(s, -errno);
			}
			rc = sock_wait(s->fd, POLLOUT, deadline);
			if (rc < 0) {
				/* A partial frame on the wire cannot be taken back. */
				s->dead = true;
				return rc;
			}
			continue;
		}
		while (mh.msg_iovlen > 0 && (size_t)n >= mh.msg_iov->iov_len) {
			n -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
			mh.msg_iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Make room for at least `need` more bytes after tail. */
static int
sock_reserve(struct kvdex_sock *s, size_t need)
{
	size_t live = s->tail - s->head;
	uint8_t *nb;
	size_t ncap;

	if (s->cap - s->tail >= need) {
		return 0;
	}
	if (s->head > 0) {
		memmove(s->buf, s->buf + s->head, live);
		s->base += s->head;
		s->tail = live;
		s->head = 0;
		if (s->cap - s->tail >= need) {
			return 0;
		}
	}
	ncap = s->cap;
	while (ncap - live < need) {
		ncap *= 2;
	}
	nb = realloc(s->buf, ncap);
	if (nb == NULL) {
		return -ENOMEM;
	}
	s->buf = nb;
	s->cap = ncap;
	return 0;
}

static void
sock_take_fds(struct kvdex_sock *s, struct msghdr *mh, uint64_t pos)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
		size_t nfd;
		int fds[4];

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
			continue;
		}
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (nfd > 4) {
			nfd = 4;
		}
		memcpy(fds, CMSG_DATA(cm), nfd * sizeof(int));
		for (size_t i = 0; i < nfd; i++) {
			/* Only one fd is ever expected (the region); extras are closed. */
			if (s->pend_fd < 0) {
				s->pend_fd = fds[i];
				s->pend_pos = pos;
			} else {
				close(fds[i]);
			}
		}
	}
}

/* Receive what is available (waiting until deadline for something). */
static int
sock_fill(struct kvdex_sock *s, size_t want, uint64_t deadline)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov;
	struct msghdr mh;
	ssize_t n;
	int rc;

	rc = sock_reserve(s, want);
	if (rc < 0) {
		return rc;
	}
	for (;;) {
		iov.iov_base = s->buf + s->tail;
		iov.iov_len = s->cap - s->tail;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		n = recvmsg(s->fd, &mh, MSG_CMSG_CLOEXEC);
		if (n > 0) {
			sock_take_fds(s, &mh, s->base + s->tail);
			s->tail += (size_t)n;
			return 0;
		}
		if (n == 0) {
			return sock_err(s, -ECONNRESET);
		}
		if (errno == EINTR) {
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			return sock_err(s, -errno);
		}
		rc = sock_wait(s->fd, POLLIN, deadline);
		if (rc < 0) {
			return rc;
		}
	}
}

int
kvdex_sock_recv(struct kvdex_sock *s, struct kvdex_msg *msg, int timeout_ms)
{
	uint64_t deadline = kvdex_now_ms() + (uint64_t)timeout_ms;
	struct kvdex_frame_hdr h;
	size_t total;
	int rc;

	if (s->dead) {
		return -ECONNRESET;
	}
	s->head += s->consume;
	s->consume = 0;
	for (;;) {
		rc = kvdex_frame_hdr_decode(s->buf + s->head, s->tail - s->head,
					    KVDEX_SOCK_MAX_FRAME, &h);
		if (rc < 0) {
			KVDEX_LOG_WARN("client.sock", "bad frame from server: %d", rc);
			return sock_err(s, -EPROTO);
		}
		total = KVDEX_FRAME_HDR_SIZE + (rc == 1 ? h.len : 0);
		if (rc == 1 && s->tail - s->head >= total) {
			break;
		}
		rc = sock_fill(s, rc == 1 ? total - (s->tail - s->head) : KVDEX_FRAME_HDR_SIZE,
			       deadline);
		if (rc < 0) {
			return rc;
		}
	}
	msg->type = h.type;
	msg->req_id = h.req_id;
	msg->payload = s->buf + s->head + KVDEX_FRAME_HDR_SIZE;
	msg->len = h.len;
	msg->fd = -1;
	if (s->pend_fd >= 0 && s->pend_pos < s->base + s->head + total) {
		msg->fd = s->pend_fd;
		s->pend_fd = -1;
	}
	s->consume = total;
	return 0;
}

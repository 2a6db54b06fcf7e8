/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transports against a scripted peer on a unix socket (a thread playing
 * the server): tcp read emulation with replies out of turn (kept, not lost),
 * shm fd passing and range checks, connection loss.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/src/internal.h"
#include "common/frame.h"

TestSuite(transport, .timeout = 10);

struct peer {
	int lfd;
	char path[108];
	int script;
	pthread_t th;
};

static int
read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (uint8_t *)buf + got, len - got);

		if (n <= 0) {
			return -1;
		}
		got += (size_t)n;
	}
	return 0;
}

static void
send_frame(int fd, uint16_t type, uint32_t id, const void *p, size_t len, int pass_fd)
{
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)p, len}};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} cb;
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};

	kvdex_frame_hdr_encode(hdr, type, (uint32_t)len, id);
	if (pass_fd >= 0) {
		struct cmsghdr *cm;

		mh.msg_control = cb.buf;
		mh.msg_controllen = sizeof(cb.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	sendmsg(fd, &mh, MSG_NOSIGNAL);
}

/* Read one frame; returns its payload (malloc) and header. */
static uint8_t *
recv_frame(int fd, struct kvdex_frame_hdr *h)
{
	uint8_t hb[KVDEX_FRAME_HDR_SIZE];
	uint8_t *p;

	if (read_full(fd, hb, sizeof(hb)) < 0 ||
	    kvdex_frame_hdr_decode(hb, sizeof(hb), 1 << 24, h) != 1) {
		return NULL;
	}
	p = malloc(h->len + 1);
	if (read_full(fd, p, h->len) < 0) {
		free(p);
		return NULL;
	}
	return p;
}

/* READ_REPLY for ops of a READ payload: data = byte pattern (off + i). */
static void
answer_read(int fd, uint32_t id, const uint8_t *req, size_t len)
{
	unsigned n = (unsigned)(len / sizeof(struct kvdex_read_req));
	size_t total = 8 + n * sizeof(struct kvdex_read_rsp);
	uint8_t *out;
	size_t pos;
	uint32_t nops = n;

	for (unsigned i = 0; i < n; i++) {
		struct kvdex_read_req r;

		memcpy(&r, req + i * sizeof(r), sizeof(r));
		total += r.off >= 1000000 ? 0 : r.len;
	}
	out = calloc(1, total);
	memcpy(out, &nops, 4);
	pos = 8 + n * sizeof(struct kvdex_read_rsp);
	for (unsigned i = 0; i < n; i++) {
		struct kvdex_read_req r;
		struct kvdex_read_rsp s = {0};

		memcpy(&r, req + i * sizeof(r), sizeof(r));
		if (r.off >= 1000000) {
			s.status = -ERANGE;
		} else {
			s.len = r.len;
			for (uint32_t b = 0; b < r.len; b++) {
				out[pos + b] = (uint8_t)(r.off + b);
			}
			pos += r.len;
		}
		memcpy(out + 8 + i * sizeof(s), &s, sizeof(s));
	}
	send_frame(fd, KVDEX_MSG_READ_REPLY, id, out, total, -1);
	free(out);
}

static void *
peer_main(void *arg)
{
	struct peer *p = arg;
	struct kvdex_frame_hdr h;
	int fd = accept(p->lfd, NULL, NULL);
	uint8_t *pl;

	if (fd < 0) {
		return NULL;
	}
	switch (p->script) {
	case 0: /* a control reply overtakes the read reply */
		pl = recv_frame(fd, &h);
		send_frame(fd, KVDEX_MSG_STATS_REPLY, 7, "abc", 3, -1);
		answer_read(fd, h.req_id, pl, h.len);
		free(pl);
		break;
	case 1: /* the read reply arrives while the client waits for a message */
		pl = recv_frame(fd, &h);
		answer_read(fd, h.req_id, pl, h.len);
		free(pl);
		send_frame(fd, KVDEX_MSG_STATS_REPLY, 9, "xy", 2, -1);
		break;
	case 2: { /* shm: Hello reply with a memfd */
		int mfd = memfd_create("kvdex-test", MFD_CLOEXEC);
		uint8_t *m;

		ftruncate(mfd, 8192);
		m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
		memset(m, 0, 8192);
		for (int i = 200; i < 8192; i++) {
			m[i] = (uint8_t)i;
		}
		/* A bucket at 1024 whose header says 40 bytes of records are used
		 * (the rest is the pattern, as stale bytes would be). */
		m[1024 + offsetof(struct kvdex_bucket_hdr, used)] = 40;
		m[1024 + offsetof(struct kvdex_bucket_hdr, used) + 1] = 0;
		/* A valid header saying only 4096 bytes are readable. */
		{
			struct kvdex_region_hdr *hd = (struct kvdex_region_hdr *)m;

			hd->magic = KVDEX_REGION_MAGIC;
			hd->layout_version = KVDEX_LAYOUT_VERSION;
			hd->hdr_size = KVDEX_HDR_SIZE;
			hd->bucket_size = 256;
			hd->region_size = 4096;
			kvdex_block_seal(hd, KVDEX_HDR_SIZE, 0, 0);
		}
		munmap(m, 8192);
		pl = recv_frame(fd, &h);
		free(pl);
		send_frame(fd, KVDEX_MSG_HELLO_REPLY, h.req_id, "", 0, mfd);
		close(mfd);
		pl = recv_frame(fd, &h); /* wait for the client to close */
		free(pl);
		break;
	}
	case 3: /* vanish mid-frame */
		pl = recv_frame(fd, &h);
		free(pl);
		write(fd, "\x44\x4b\x0d\x00", 4);
		break;
	}
	close(fd);
	return NULL;
}

static void
peer_start(struct peer *p, int script, struct kvdex_endpoint *ep)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	p->script = script;
	snprintf(p->path, sizeof(p->path), "/tmp/kvdex-tt-%d-%d.sock", (int)getpid(), script);
	unlink(p->path);
	strcpy(sun.sun_path, p->path);
	p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert(eq(int, bind(p->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0));
	cr_assert(eq(int, listen(p->lfd, 4), 0));
	pthread_create(&p->th, NULL, peer_main, p);
	memset(ep, 0, sizeof(*ep));
	ep->kind = KVDEX_TRANSPORT_SHM;
	strcpy(ep->path, p->path);
	strcpy(ep->name, "peer");
}

static void
peer_stop(struct peer *p)
{
	pthread_join(p->th, NULL);
	close(p->lfd);
	unlink(p->path);
}

static void
check_pattern(const uint8_t *buf, uint64_t off, uint32_t len)
{
	for (uint32_t b = 0; b < len; b++) {
		cr_assert(eq(u8, buf[b], (uint8_t)(off + b)));
	}
}

/* 1: a control reply that arrives before the READ_REPLY is kept. */
Test(transport, tcp_control_reply_kept_during_reads)
{
	static uint8_t b0[64] __attribute__((aligned(64))), b1[128] __attribute__((aligned(64)));
	struct kvdex_read_op ops[3] = {
		{.off = 10, .len = 64, .buf = b0},
		{.off = 1000000, .len = 64, .buf = b0},
		{.off = 300, .len = 128, .buf = b1},
	};
	struct kvdex_endpoint ep;
	struct kvdex_conn *conn;
	struct kvdex_msg m;
	struct peer p;

	ops[1].buf = malloc(64);
	peer_start(&p, 0, &ep);
	cr_assert(eq(int, kvdex_transport_tcp.connect(&ep, 2000, &conn), 0));
	cr_assert(eq(int, conn->ops->post_reads(conn, ops, 3), 0));
	cr_assert(eq(int, conn->ops->poll_reads(conn, 2000), 0));
	cr_assert(eq(int, ops[0].status, 0));
	cr_assert(eq(int, ops[1].status, -ERANGE));
	cr_assert(eq(int, ops[2].status, 0));
	check_pattern(b0, 10, 64);
	check_pattern(b1, 300, 128);
	cr_assert(eq(int, conn->ops->recv_msg(conn, &m, 2000), 0));
	cr_assert(eq(u16, m.type, KVDEX_MSG_STATS_REPLY));
	cr_assert(eq(u32, m.req_id, 7));
	cr_assert(eq(sz, m.len, 3));
	cr_assert(eq(int, memcmp(m.payload, "abc", 3), 0));
	conn->ops->close(conn);
	free(ops[1].buf);
	peer_stop(&p);
}

/* 2: the READ_REPLY arriving while recv_msg waits completes the batch. */
Test(transport, tcp_read_reply_during_recv)
{
	static uint8_t b0[64] __attribute__((aligned(64)));
	struct kvdex_read_op op = {.off = 77, .len = 64, .buf = b0};
	struct kvdex_endpoint ep;
	struct kvdex_conn *conn;
	struct kvdex_msg m;
	struct peer p;

	peer_start(&p, 1, &ep);
	cr_assert(eq(int, kvdex_transport_tcp.connect(&ep, 2000, &conn), 0));
	cr_assert(eq(int, conn->ops->post_reads(conn, &op, 1), 0));
	cr_assert(eq(int, conn->ops->recv_msg(conn, &m, 2000), 0));
	cr_assert(eq(u32, m.req_id, 9));
	cr_assert(eq(int, conn->ops->poll_reads(conn, 0), 0));
	cr_assert(eq(int, op.status, 0));
	check_pattern(b0, 77, 64);
	conn->ops->close(conn);
	peer_stop(&p);
}

/* A shm connection to peer script 2, its region (the memfd that came with the
 * Hello reply) attached. */
static struct kvdex_conn *
shm_attached(struct peer *p)
{
	struct kvdex_endpoint ep;
	struct kvdex_conn *conn;
	struct kvdex_msg m;

	peer_start(p, 2, &ep);
	cr_assert(eq(int, kvdex_transport_shm.connect(&ep, 2000, &conn), 0));
	cr_assert(eq(int, conn->ops->send_msg(conn, KVDEX_MSG_HELLO, 1, "", 0), 0));
	cr_assert(eq(int, conn->ops->recv_msg(conn, &m, 2000), 0));
	cr_assert(eq(u16, m.type, KVDEX_MSG_HELLO_REPLY));
	cr_assert(ge(int, m.fd, 0));
	cr_assert(eq(int, conn->ops->attach_region(conn, m.fd, 1 << 20), 0));
	close(m.fd);
	return conn;
}

/* 3: shm gets the memfd with the Hello reply, maps it, and refuses reads past
 * the header's region_size with -ERANGE (never SIGBUS, never past it). */
Test(transport, shm_fd_passing_and_range)
{
	static uint8_t buf[256] __attribute__((aligned(64)));
	struct kvdex_read_op ops[2] = {
		{.off = 256, .len = 256, .buf = buf},
		{.off = 4000, .len = 256, .buf = buf},
	};
	struct kvdex_conn *conn;
	struct peer p;

	conn = shm_attached(&p);
	cr_assert(eq(int, conn->ops->post_reads(conn, ops, 2), 0));
	cr_assert(eq(int, conn->ops->poll_reads(conn, 0), 0));
	cr_assert(eq(int, ops[0].status, 0));
	cr_assert(eq(int, ops[1].status, -ERANGE));
	check_pattern(buf, 256, 256);
	conn->ops->close(conn);
	peer_stop(&p);
}

/* 3b: a bucket read (KVDEX_READ_BUCKET) copies only what the bucket seals,
 * its header and `used` record bytes; a plain read of the same place copies
 * all of it. */
Test(transport, shm_bucket_read_stops_at_used)
{
	static uint8_t buf[256] __attribute__((aligned(64)));
	struct kvdex_read_op op = {.off = 1024, .len = 256, .buf = buf, .flags = KVDEX_READ_BUCKET};
	const size_t sealed = KVDEX_BUCKET_HDR_SIZE + 40;
	struct kvdex_conn *conn;
	struct peer p;

	conn = shm_attached(&p);
	memset(buf, 0xee, sizeof(buf));
	cr_assert(eq(int, conn->ops->post_reads(conn, &op, 1), 0));
	cr_assert(eq(int, op.status, 0));
	cr_assert(eq(sz, kvdex_bucket_sealed_len(buf, 256), sealed));
	for (size_t b = 0; b < sizeof(buf); b++) {
		if (b >= sealed) {
			cr_assert(eq(u8, buf[b], 0xee), "byte %zu copied past the sealed length",
				  b);
		} else if (b != offsetof(struct kvdex_bucket_hdr, used) &&
			   b != offsetof(struct kvdex_bucket_hdr, used) + 1) {
			cr_assert(eq(u8, buf[b], (uint8_t)(1024 + b)), "byte %zu", b);
		}
	}
	op.flags = 0;
	memset(buf, 0xee, sizeof(buf));
	cr_assert(eq(int, conn->ops->post_reads(conn, &op, 1), 0));
	check_pattern(buf + sealed, 1024 + sealed, (uint32_t)(sizeof(buf) - sealed));
	conn->ops->close(conn);
	peer_stop(&p);
}

/* 4: the peer vanishing mid-frame is -ECONNRESET, and stays so. */
Test(transport, connection_loss)
{
	static uint8_t b0[64] __attribute__((aligned(64)));
	struct kvdex_read_op op = {.off = 0, .len = 64, .buf = b0};
	struct kvdex_endpoint ep;
	struct kvdex_conn *conn;
	struct kvdex_msg m;
	struct peer p;

	peer_start(&p, 3, &ep);
	cr_assert(eq(int, kvdex_transport_tcp.connect(&ep, 2000, &conn), 0));
	cr_assert(eq(int, conn->ops->post_reads(conn, &op, 1), 0));
	cr_assert(eq(int, conn->ops->poll_reads(conn, 2000), -ECONNRESET));
	cr_assert(eq(int, conn->ops->recv_msg(conn, &m, 100), -ECONNRESET));
	conn->ops->close(conn);
	peer_stop(&p);
}

/* 5: nobody listening: -ECONNREFUSED; a silent peer: -ETIMEDOUT. */
Test(transport, connect_refused)
{
	struct kvdex_endpoint ep = {.kind = KVDEX_TRANSPORT_SHM};
	struct kvdex_conn *conn;

	strcpy(ep.path, "/tmp/kvdex-no-such-socket.sock");
	cr_assert(eq(int, kvdex_transport_shm.connect(&ep, 500, &conn), -ECONNREFUSED));
}

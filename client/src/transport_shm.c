/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shm transport: the server on this host passes its region memfd with the
 * Hello reply (SCM_RIGHTS over the unix socket); the client maps region_max
 * bytes of it read-only and shared, and "reads" are memcpy from the mapping.
 * Control messages use the unix socket.
 *
 * The mapping spans region_max, but only [0, region_size) is backed by the
 * file: touching beyond it would raise SIGBUS. Every op is therefore checked
 * against `safe`, the region_size of the last header image that validated
 * (the header is itself read from the mapping, checksum-checked, so a torn
 * region_size is never trusted). The region only grows, so `safe` is refreshed
 * only when an op goes past it; an op still outside gets -ERANGE.
 *
 * Reads complete inside post_reads; poll_reads has nothing to wait for.
 *
 * Server death: reads from the mapping keep "working" after the server
 * exits (the memfd lives on in our mapping, frozen), so loads alone would
 * return stale data forever. post_reads therefore checks, at most once per
 * SHM_LIVENESS_MS, whether the server hung up the unix socket (POLLRDHUP /
 * POLLHUP) and fails with -ECONNRESET if so; the client then reconnects and
 * sees the new incarnation.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client/src/sock.h"
#include "common/frame.h"
#include "common/layout.h"
#include "common/log.h"

/* Attempts to get an untorn header when refreshing `safe`. */
#define SHM_HDR_TRIES 16
/* How stale a dead server's region may be read: one liveness poll per ms. */
#define SHM_LIVENESS_MS 1u

struct shm_conn {
	struct kvdex_conn base;
	struct kvdex_sock sk;
	int send_timeout_ms;
	const uint8_t *map;
	uint64_t map_len;
	uint64_t safe;	     /* bytes known to be backed */
	uint64_t checked_ms; /* last liveness check */
};

static int
shm_connect(const struct kvdex_endpoint *ep, int timeout_ms, struct kvdex_conn **out)
{
	struct shm_conn *sc = calloc(1, sizeof(*sc));
	int rc;

	if (sc == NULL) {
		return -ENOMEM;
	}
	if (ep->kind != KVDEX_TRANSPORT_SHM) {
		free(sc);
		return -EINVAL;
	}
	rc = kvdex_sock_connect(&sc->sk, ep, timeout_ms);
	if (rc < 0) {
		free(sc);
		return rc;
	}
	sc->base.ops = &kvdex_transport_shm;
	sc->base.max_msg = KVDEX_MAX_MSG_DEFAULT;
	sc->send_timeout_ms = timeout_ms;
	*out = &sc->base;
	return 0;
}

/* Re-derive the backed size from a validated header image in the mapping. */
static void
shm_refresh_safe(struct shm_conn *sc)
{
	struct kvdex_region_hdr hdr __attribute__((aligned(64)));

	for (int i = 0; i < SHM_HDR_TRIES; i++) {
		memcpy(&hdr, sc->map, sizeof(hdr));
		if (kvdex_hdr_check(&hdr) == 0) {
			uint64_t sz = hdr.region_size < sc->map_len ? hdr.region_size : sc->map_len;

			if (sz > sc->safe) {
				sc->safe = sz;
			}
			return;
		}
	}
}

static int
shm_attach_region(struct kvdex_conn *conn, int region_fd, uint64_t region_max)
{
	struct shm_conn *sc = (struct shm_conn *)conn;
	void *p;

	if (region_fd < 0 || region_max < KVDEX_HDR_SIZE) {
		return -EPROTO;
	}
	p = mmap(NULL, region_max, PROT_READ, MAP_SHARED, region_fd, 0);
	if (p == MAP_FAILED) {
		return -errno;
	}
	/* Map the server's huge pages as huge pages where the kernel allows it
	 * (kvdexd asks for them: server/region.c); advice only. */
	(void)madvise(p, region_max, MADV_HUGEPAGE);
	sc->map = p;
	sc->map_len = region_max;
	/* The header page always exists once a server answers Hello. */
	sc->safe = KVDEX_HDR_SIZE;
	shm_refresh_safe(sc);
	return 0;
}

static bool
shm_op_ok(struct shm_conn *sc, const struct kvdex_read_op *op)
{
	uint64_t end = op->off + op->len;

	if (end < op->off) {
		return false;
	}
	if (end > sc->safe) {
		shm_refresh_safe(sc);
	}
	return end <= sc->safe;
}

/* Has the server closed its end of the socket? */
static bool
shm_peer_gone(struct shm_conn *sc)
{
	struct pollfd pfd = {.fd = sc->sk.fd, .events = POLLRDHUP};
	uint64_t now = kvdex_now_ms();

	if (sc->sk.dead) {
		return true;
	}
	if (now - sc->checked_ms < SHM_LIVENESS_MS) {
		return false;
	}
	sc->checked_ms = now;
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
		sc->sk.dead = true;
		return true;
	}
	return false;
}

/* How many ops ahead of the copy their cache lines are prefetched. */
#define SHM_PREFETCH_OPS 16u

static void
shm_prefetch(const struct shm_conn *sc, const struct kvdex_read_op *op)
{
	/* Only what is known to be backed: a prefetch never faults, but keep
	 * to the mapping we are allowed to read. */
	if (op->off + op->len > sc->safe || op->off + op->len < op->off) {
		return;
	}
	/* The first line starts the miss: it holds the header, whose `used`
	 * says how much more a bucket copy needs, and the streamer brings the
	 * next lines once the copy walks on. Prefetching more lines per op
	 * only stalls on the line-fill buffers. */
	__builtin_prefetch(sc->map + op->off);
}

/* Copy one op out of the mapping. A bucket is copied only as far as its
 * sealed length says (header and used records): the first line is copied,
 * its `used` read from the copy, then the rest. A torn `used` makes a torn
 * image, which validation rejects like any other. */
static void
shm_copy(const struct shm_conn *sc, const struct kvdex_read_op *op)
{
	const uint8_t *src = sc->map + op->off;
	size_t len = op->len;

	if ((op->flags & KVDEX_READ_BUCKET) && len > KVDEX_CACHE_LINE) {
		memcpy(op->buf, src, KVDEX_CACHE_LINE);
		len = kvdex_bucket_sealed_len(op->buf, op->len);
		if (len <= KVDEX_CACHE_LINE) {
			return;
		}
		memcpy((uint8_t *)op->buf + KVDEX_CACHE_LINE, src + KVDEX_CACHE_LINE,
		       len - KVDEX_CACHE_LINE);
		return;
	}
	memcpy(op->buf, src, len);
}

static int
shm_post_reads(struct kvdex_conn *conn, struct kvdex_read_op *ops, unsigned n)
{
	struct shm_conn *sc = (struct shm_conn *)conn;

	if (sc->map == NULL) {
		return -ENOTCONN;
	}
	if (shm_peer_gone(sc)) {
		return -ECONNRESET;
	}
	for (unsigned i = 0; i < n && i < SHM_PREFETCH_OPS; i++) {
		shm_prefetch(sc, &ops[i]);
	}
	for (unsigned i = 0; i < n; i++) {
		/* The buckets of a lookup are scattered over a large region, so
		 * each copy is a few DRAM misses: keep the next ones in flight
		 * while this one copies, as a NIC's parallel READs would. */
		if (i + SHM_PREFETCH_OPS < n) {
			shm_prefetch(sc, &ops[i + SHM_PREFETCH_OPS]);
		}
		if (!shm_op_ok(sc, &ops[i])) {
			ops[i].status = -ERANGE;
			continue;
		}
		shm_copy(sc, &ops[i]);
		ops[i].status = 0;
	}
	return 0;
}

static int
shm_poll_reads(struct kvdex_conn *conn, int timeout_ms)
{
	return 0;
}

static int
shm_send_msg(struct kvdex_conn *conn, uint16_t type, uint32_t req_id, const void *payload,
	     size_t len)
{
	struct shm_conn *sc = (struct shm_conn *)conn;

	return kvdex_sock_send(&sc->sk, type, req_id, payload, len, NULL, 0, sc->send_timeout_ms);
}

static int
shm_recv_msg(struct kvdex_conn *conn, struct kvdex_msg *msg, int timeout_ms)
{
	struct shm_conn *sc = (struct shm_conn *)conn;

	return kvdex_sock_recv(&sc->sk, msg, timeout_ms);
}

static void
shm_close(struct kvdex_conn *conn)
{
	struct shm_conn *sc = (struct shm_conn *)conn;

	if (sc == NULL) {
		return;
	}
	if (sc->map != NULL) {
		munmap((void *)sc->map, sc->map_len);
	}
	kvdex_sock_close(&sc->sk);
	free(sc);
}

const struct kvdex_transport_ops kvdex_transport_shm = {
	.name = "shm",
	.connect = shm_connect,
	.attach_region = shm_attach_region,
	.post_reads = shm_post_reads,
	.poll_reads = shm_poll_reads,
	.send_msg = shm_send_msg,
	.recv_msg = shm_recv_msg,
	.close = shm_close,
};

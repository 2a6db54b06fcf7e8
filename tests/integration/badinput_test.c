/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bad input (docs/DESIGN.md §9, common.md error policy), sent on raw
 * sockets in the frame format. For each case: the ErrorReply code, its fatal
 * flag and whether the server closes, the one error counter that grows (read
 * through libkvdex from a separate healthy client, which also shows the
 * server still answers), and a fresh client can still publish and look up.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/layout.h"
#include "harness.h"

TestSuite(badinput, .init = h_init, .fini = h_cleanup, .timeout = 30);

/* A server, a healthy tcp client for stats, and a snapshot of counters. */
struct fixture {
	struct h_server s;
	struct kvdex_client *stats;
	struct h_stats before;
	unsigned tag;
};

static void
fx_start(struct fixture *fx, const char *const *extra)
{
	memset(fx, 0, sizeof(*fx));
	h_server_start(&fx->s, extra);
	fx->stats = h_client1(&fx->s, KVDEX_TRANSPORT_TCP);
	h_stats_get(fx->stats, 0, &fx->before);
}

/* Exactly `name` grew by `delta`; the server still serves over both
 * transports; it exits cleanly. */
static void
fx_finish(struct fixture *fx, const char *name, uint64_t delta)
{
	struct h_stats after;

	h_stats_get(fx->stats, 0, &after);
	h_assert_error_delta(&fx->before, &after, name, delta);
	h_assert_serving(&fx->s, KVDEX_TRANSPORT_TCP, fx->tag++);
	h_assert_serving(&fx->s, KVDEX_TRANSPORT_SHM, fx->tag++);
	kvdex_client_destroy(fx->stats);
	h_server_stop_ok(&fx->s);
}

/* Like fx_finish, for asynchronous counters: wait for the count first. */
static void
fx_finish_wait(struct fixture *fx, const char *name, uint64_t delta)
{
	h_wait_stat(fx->stats, 0, name, h_stat(&fx->before, name) + delta, 5000);
	fx_finish(fx, name, delta);
}

/* Raw connection with a completed Hello. */
static int
raw_ready(const struct fixture *fx, bool tcp)
{
	int fd = h_raw_connect(&fx->s, tcp);

	h_raw_hello(fd, fx->s.auth_token);
	return fd;
}

/* Register a namespace and worker `id` on a raw connection; returns ns_id. */
static uint32_t
raw_setup(int fd, uint32_t worker_id)
{
	Kvdex__RegisterNamespace rn = KVDEX__REGISTER_NAMESPACE__INIT;
	Kvdex__RegisterWorker rw = KVDEX__REGISTER_WORKER__INIT;
	Kvdex__RegisterNamespaceReply *nsr;
	struct h_frame f;
	uint32_t ns;

	rn.model = "raw";
	rn.block_size = 16;
	rn.hash_scheme = "opaque";
	rn.create = true;
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_REGISTER_NS, 10, &rn.base), 0));
	cr_assert(eq(i32, h_recv_frame(fd, &f, 5000), 0));
	cr_assert(eq(u32, f.hdr.type, KVDEX_MSG_REGISTER_NS_REPLY), "got %s",
		  kvdex_msg_type_name(f.hdr.type));
	nsr = kvdex__register_namespace_reply__unpack(NULL, f.hdr.len, f.payload);
	cr_assert_not_null(nsr);
	ns = nsr->ns_id;
	kvdex__register_namespace_reply__free_unpacked(nsr, NULL);
	h_frame_free(&f);

	rw.worker_id = worker_id;
	rw.address = "raw:1";
	rw.dp_size = 1;
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_REGISTER_WORKER, 11, &rw.base), 0));
	cr_assert(eq(i32, h_recv_frame(fd, &f, 5000), 0));
	cr_assert(eq(u32, f.hdr.type, KVDEX_MSG_REGISTER_WORKER_REPLY), "got %s",
		  kvdex_msg_type_name(f.hdr.type));
	h_frame_free(&f);
	return ns;
}

/* A Publish of n STORED events of namespace ns. Pointers into static
 * storage: valid until the next call. */
static Kvdex__Publish *
make_publish(uint32_t worker, uint32_t ns, size_t n, unsigned tier)
{
	static Kvdex__Event evs[16];
	static Kvdex__Event *evp[16];
	static Kvdex__Publish p;

	cr_assert(le(sz, n, 16));
	kvdex__publish__init(&p);
	p.worker_id = worker;
	p.incarnation = 1;
	p.seq = 1;
	p.n_events = n;
	p.events = evp;
	for (size_t i = 0; i < n; i++) {
		kvdex__event__init(&evs[i]);
		evs[i].type = KVDEX__EVENT__TYPE__STORED;
		evs[i].ns_id = ns;
		evs[i].key = 0xabc000 + i;
		evs[i].tier = tier;
		evp[i] = &evs[i];
	}
	return &p;
}

static void
expect_reply(int fd, uint16_t type, uint32_t req_id)
{
	struct h_frame f;
	int rc = h_recv_frame(fd, &f, 5000);

	cr_assert(eq(i32, rc, 0), "%s", strerror(-rc));
	cr_assert(eq(u32, f.hdr.type, type), "got %s, expected %s", kvdex_msg_type_name(f.hdr.type),
		  kvdex_msg_type_name(type));
	cr_assert(eq(u32, f.hdr.req_id, req_id));
	h_frame_free(&f);
}

/* 1. A frame with a wrong magic: MALFORMED, fatal, closed; bad_frames. Over
 * both listeners, before and after Hello. */
Test(badinput, garbage_magic)
{
	static const uint8_t junk[12] = {0xef, 0xbe, 0x02, 0x00, 0, 0, 0, 0, 7, 0, 0, 0};
	struct fixture fx;
	int fd;

	fx_start(&fx, NULL);
	fd = h_raw_connect(&fx.s, true);
	cr_assert(eq(i32, h_raw_send(fd, junk, sizeof(junk)), 0));
	h_expect_error(fd, H_ANY_REQ, KVDEX__CODE__MALFORMED, true);
	close(fd);

	fd = raw_ready(&fx, false);
	cr_assert(eq(i32, h_raw_send(fd, junk, sizeof(junk)), 0));
	h_expect_error(fd, H_ANY_REQ, KVDEX__CODE__MALFORMED, true);
	close(fd);
	fx_finish(&fx, "bad_frames", 2);
}

/* 2. An unknown frame type: MALFORMED, fatal, closed; bad_frames. */
Test(badinput, unknown_type)
{
	struct fixture fx;
	int fd;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	cr_assert(eq(i32, h_send_frame(fd, 20, 33, NULL, 0), 0));
	h_expect_error(fd, H_ANY_REQ, KVDEX__CODE__MALFORMED, true);
	close(fd);
	fx_finish(&fx, "bad_frames", 1);
}

/* 3. A frame over --max-msg-bytes: TOO_LARGE, fatal, closed; oversize_frames.
 * Only the header is sent: the server must not wait for the payload. */
Test(badinput, oversize_frame)
{
	struct fixture fx;
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	int fd;

	fx_start(&fx, H_ARGS("--max-msg-bytes", "4096"));
	fd = raw_ready(&fx, true);
	kvdex_frame_hdr_encode(hdr, KVDEX_MSG_PUBLISH, 4097, 44);
	cr_assert(eq(i32, h_raw_send(fd, hdr, sizeof(hdr)), 0));
	h_expect_error(fd, H_ANY_REQ, KVDEX__CODE__TOO_LARGE, true);
	close(fd);
	fx_finish(&fx, "oversize_frames", 1);
}

/* 4. A Hello whose payload is truncated or garbage: MALFORMED, fatal (a
 * malformed Hello ends the session); bad_protobuf. */
Test(badinput, malformed_hello)
{
	static const uint8_t garbage[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	Kvdex__Hello hello = KVDEX__HELLO__INIT;
	struct fixture fx;
	uint8_t *buf;
	size_t len;
	int fd;

	fx_start(&fx, NULL);
	hello.protocol_version = 1;
	hello.client_name = "a-client-name-long-enough-to-truncate";
	buf = h_pack(&hello.base, &len);
	fd = h_raw_connect(&fx.s, true);
	cr_assert(eq(i32, h_send_frame(fd, KVDEX_MSG_HELLO, 1, buf, len - 5), 0));
	h_expect_error(fd, 1, KVDEX__CODE__MALFORMED, true);
	close(fd);
	free(buf);

	fd = h_raw_connect(&fx.s, false);
	cr_assert(eq(i32, h_send_frame(fd, KVDEX_MSG_HELLO, 2, garbage, sizeof(garbage)), 0));
	h_expect_error(fd, 2, KVDEX__CODE__MALFORMED, true);
	close(fd);
	fx_finish(&fx, "bad_protobuf", 2);
}

/* 5. After Hello, a request whose payload does not decode: MALFORMED, not
 * fatal, the same connection keeps working; bad_protobuf. */
Test(badinput, malformed_request_payload)
{
	static const uint8_t garbage[8] = {0x0a, 0x7f, 0x01, 0x02, 0xff, 0xff, 0xff, 0xff};
	struct fixture fx;
	uint8_t *buf;
	size_t len;
	uint32_t ns;
	int fd;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	ns = raw_setup(fd, 5);
	cr_assert(
		eq(i32, h_send_frame(fd, KVDEX_MSG_REGISTER_NS, 20, garbage, sizeof(garbage)), 0));
	h_expect_error(fd, 20, KVDEX__CODE__MALFORMED, false);
	h_raw_stats_ok(fd, 21);

	/* A Publish cut short in its last event. */
	buf = h_pack(&make_publish(5, ns, 3, 0)->base, &len);
	cr_assert(eq(i32, h_send_frame(fd, KVDEX_MSG_PUBLISH, 22, buf, len - 3), 0));
	free(buf);
	h_expect_error(fd, 22, KVDEX__CODE__MALFORMED, false);
	h_raw_stats_ok(fd, 23);
	close(fd);
	fx_finish(&fx, "bad_protobuf", 2);
}

/* 6. A Publish that decodes but has an impossible field (tier 7):
 * MALFORMED, not fatal, nothing applied; malformed_requests. */
Test(badinput, malformed_field)
{
	struct fixture fx;
	uint32_t ns;
	int fd;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	ns = raw_setup(fd, 5);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_PUBLISH, 30, &make_publish(5, ns, 2, 7)->base),
		     0));
	h_expect_error(fd, 30, KVDEX__CODE__MALFORMED, false);
	h_raw_stats_ok(fd, 31);
	close(fd);
	cr_assert(eq(u64, h_stat1(fx.stats, 0, "blocks"), 0), "part of a bad batch applied");
	fx_finish(&fx, "malformed_requests", 1);
}

/* 7. A batch over --max-batch-events: TOO_LARGE, not fatal, nothing applied,
 * seq not advanced; oversize_batches. libkvdex knows the limit from the
 * HelloReply and reports -E2BIG (whether or not it sends the batch). */
Test(badinput, oversize_batch)
{
	struct kvdex_publish_result res;
	struct kvdex_event ev[5];
	struct kvdex_client *c;
	struct fixture fx;
	uint32_t ns, cns;
	int fd, rc;

	fx_start(&fx, H_ARGS("--max-batch-events", "4"));
	c = h_client1(&fx.s, KVDEX_TRANSPORT_SHM);
	cns = h_ns(c, "big");
	h_worker(c, 6, 1);
	for (int i = 0; i < 5; i++) {
		ev[i] = h_ev_store(cns, 1000 + i, KVDEX_GPU);
	}
	rc = h_publish(c, 6, 0, 1, 1, ev, 5, &res);
	cr_assert(eq(i32, rc, -E2BIG), "5 events over a limit of 4: %d (%s)", rc, strerror(-rc));
	kvdex_client_destroy(c);
	h_stats_get(fx.stats, 0, &fx.before);

	fd = raw_ready(&fx, true);
	ns = raw_setup(fd, 5);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_PUBLISH, 40, &make_publish(5, ns, 5, 0)->base),
		     0));
	h_expect_error(fd, 40, KVDEX__CODE__TOO_LARGE, false);
	/* Four events with the same seq: accepted, not a duplicate. */
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_PUBLISH, 41, &make_publish(5, ns, 4, 0)->base),
		     0));
	expect_reply(fd, KVDEX_MSG_PUBLISH_REPLY, 41);
	close(fd);
	cr_assert(eq(u64, h_stat1(fx.stats, 0, "blocks"), 4));
	fx_finish(&fx, "oversize_batches", 1);
}

/* 8. Another protocol version: BAD_VERSION, fatal, closed; bad_version. */
Test(badinput, wrong_version)
{
	Kvdex__Hello hello = KVDEX__HELLO__INIT;
	struct fixture fx;
	int fd;

	fx_start(&fx, NULL);
	hello.protocol_version = KVDEX_PROTOCOL_VERSION + 1;
	fd = h_raw_connect(&fx.s, true);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_HELLO, 5, &hello.base), 0));
	h_expect_error(fd, 5, KVDEX__CODE__BAD_VERSION, true);
	close(fd);
	hello.protocol_version = 0;
	fd = h_raw_connect(&fx.s, false);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_HELLO, 6, &hello.base), 0));
	h_expect_error(fd, 6, KVDEX__CODE__BAD_VERSION, true);
	close(fd);
	fx_finish(&fx, "bad_version", 2);
}

/* 9. A wrong or missing auth token: BAD_AUTH, fatal, closed; bad_auth.
 * libkvdex reports -EACCES. */
Test(badinput, wrong_auth)
{
	Kvdex__Hello hello = KVDEX__HELLO__INIT;
	struct kvdex_client *c = NULL;
	struct fixture fx;
	int fd, rc;

	fx_start(&fx, H_ARGS("--auth-token", "s3cret"));
	hello.protocol_version = 1;
	hello.auth_token = "wrong";
	fd = h_raw_connect(&fx.s, true);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_HELLO, 1, &hello.base), 0));
	h_expect_error(fd, 1, KVDEX__CODE__BAD_AUTH, true);
	close(fd);
	hello.auth_token = "";
	fd = h_raw_connect(&fx.s, false);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_HELLO, 1, &hello.base), 0));
	h_expect_error(fd, 1, KVDEX__CODE__BAD_AUTH, true);
	close(fd);

	rc = h_client_try(fx.s.addr_tcp, KVDEX_TRANSPORT_TCP, "s3cre", &c);
	cr_assert(eq(i32, rc, -EACCES), "wrong token: %d (%s)", rc, strerror(-rc));
	rc = h_client_try(fx.s.addr_unix, KVDEX_TRANSPORT_SHM, NULL, &c);
	cr_assert(eq(i32, rc, -EACCES), "no token: %d (%s)", rc, strerror(-rc));
	fx_finish(&fx, "bad_auth", 4);
}

/* 10. Any request before Hello: NOT_READY, fatal, closed; not_ready. */
Test(badinput, request_before_hello)
{
	Kvdex__StatsRequest sr = KVDEX__STATS_REQUEST__INIT;
	struct fixture fx;
	uint8_t *buf;
	size_t len;
	int fd;

	fx_start(&fx, NULL);
	fd = h_raw_connect(&fx.s, true);
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_STATS, 3, &sr.base), 0));
	h_expect_error(fd, 3, KVDEX__CODE__NOT_READY, true);
	close(fd);

	buf = h_pack(&make_publish(1, 1, 1, 0)->base, &len);
	fd = h_raw_connect(&fx.s, false);
	cr_assert(eq(i32, h_send_frame(fd, KVDEX_MSG_PUBLISH, 4, buf, len), 0));
	h_expect_error(fd, 4, KVDEX__CODE__NOT_READY, true);
	close(fd);
	free(buf);
	fx_finish(&fx, "not_ready", 2);
}

/* 11. A Publish naming an unknown namespace: UNKNOWN_NAMESPACE, not fatal,
 * nothing applied; unknown_namespace. */
Test(badinput, unknown_namespace)
{
	Kvdex__Publish *p;
	struct fixture fx;
	uint32_t ns;
	int fd;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	ns = raw_setup(fd, 5);
	p = make_publish(5, ns, 3, 0);
	p->events[2]->ns_id = ns + 999; /* one bad event spoils the batch */
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_PUBLISH, 50, &p->base), 0));
	h_expect_error(fd, 50, KVDEX__CODE__UNKNOWN_NAMESPACE, false);
	h_raw_stats_ok(fd, 51);
	close(fd);
	cr_assert(eq(u64, h_stat1(fx.stats, 0, "blocks"), 0), "part of a bad batch applied");
	fx_finish(&fx, "unknown_namespace", 1);
}

/* 12. A Publish from an unregistered worker: UNKNOWN_WORKER, not fatal;
 * unknown_worker. libkvdex reports -ESRCH. */
Test(badinput, unknown_worker)
{
	struct kvdex_event ev;
	struct kvdex_client *c;
	struct fixture fx;
	uint32_t ns, cns;
	int fd, rc;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	ns = raw_setup(fd, 5);
	cr_assert(eq(i32,
		     h_send_msg(fd, KVDEX_MSG_PUBLISH, 60, &make_publish(12345, ns, 1, 0)->base),
		     0));
	h_expect_error(fd, 60, KVDEX__CODE__UNKNOWN_WORKER, false);
	h_raw_stats_ok(fd, 61);
	close(fd);

	c = h_client1(&fx.s, KVDEX_TRANSPORT_TCP);
	cns = h_ns(c, "raw");
	ev = h_ev_store(cns, 1, KVDEX_GPU);
	rc = h_publish(c, 777, 0, 1, 1, &ev, 1, NULL);
	cr_assert(eq(i32, rc, -ESRCH), "unregistered worker: %d (%s)", rc, strerror(-rc));
	kvdex_client_destroy(c);
	fx_finish(&fx, "unknown_worker", 2);
}

/* 13. A peer that vanishes in the middle of a frame: counted, the server
 * carries on; disconnect_mid_msg. */
Test(badinput, disconnect_mid_message)
{
	static const uint8_t part[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	struct fixture fx;
	int fd;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	kvdex_frame_hdr_encode(hdr, KVDEX_MSG_PUBLISH, 100, 70);
	cr_assert(eq(i32, h_raw_send(fd, hdr, sizeof(hdr)), 0));
	cr_assert(eq(i32, h_raw_send(fd, part, sizeof(part)), 0));
	h_sleep_ms(50); /* let the server take in the partial frame first */
	close(fd);
	fx_finish_wait(&fx, "disconnect_mid_msg", 1);
}

/* Send a READ of `n` ops and return the reply frame (asserted READ_REPLY). */
static void
raw_read(int fd, const struct kvdex_read_req *ops, uint32_t n, uint32_t req_id, struct h_frame *f)
{
	int rc;

	cr_assert(eq(i32, h_send_frame(fd, KVDEX_MSG_READ, req_id, ops, n * sizeof(*ops)), 0));
	rc = h_recv_frame(fd, f, 5000);
	cr_assert(eq(i32, rc, 0), "%s", strerror(-rc));
	cr_assert(eq(u32, f->hdr.type, KVDEX_MSG_READ_REPLY), "got %s",
		  kvdex_msg_type_name(f->hdr.type));
	cr_assert(eq(u32, f->hdr.req_id, req_id));
}

/* 14. tcp READ ops outside [0, region_size) get -ERANGE each, the others in
 * the same frame are served; bad_reads counts the bad ops. */
Test(badinput, tcp_read_out_of_range)
{
	struct kvdex_read_req ops[4] = {{.off = 0, .len = KVDEX_HDR_SIZE}};
	struct kvdex_read_rsp rsp[4];
	struct kvdex_region_hdr hdr;
	struct fixture fx;
	struct h_frame f;
	uint32_t nops;
	int fd;

	fx_start(&fx, NULL);
	fd = raw_ready(&fx, true);
	raw_read(fd, ops, 1, 80, &f);
	cr_assert(eq(u32, f.hdr.len, 8 + sizeof(rsp[0]) + KVDEX_HDR_SIZE));
	memcpy(&hdr, f.payload + 8 + sizeof(rsp[0]), sizeof(hdr));
	cr_assert(eq(i32, kvdex_hdr_check(&hdr), 0), "header read over tcp does not validate");
	h_frame_free(&f);

	ops[1] = (struct kvdex_read_req){.off = hdr.region_size + 4096, .len = 64};
	ops[2] = (struct kvdex_read_req){.off = UINT64_MAX - 8, .len = 64};
	ops[3] = (struct kvdex_read_req){.off = hdr.region_size - 64, .len = 128};
	raw_read(fd, ops, 4, 81, &f);
	memcpy(&nops, f.payload, 4);
	cr_assert(eq(u32, nops, 4));
	memcpy(rsp, f.payload + 8, sizeof(rsp));
	cr_assert(eq(i32, rsp[0].status, 0));
	cr_assert(eq(u32, rsp[0].len, KVDEX_HDR_SIZE));
	cr_assert(eq(i32, rsp[1].status, -ERANGE));
	cr_assert(eq(i32, rsp[2].status, -ERANGE), "offset near 2^64 (overflow check)");
	cr_assert(eq(i32, rsp[3].status, -ERANGE), "read straddling the end of the region");
	cr_assert(eq(u32, f.hdr.len, 8 + sizeof(rsp) + KVDEX_HDR_SIZE),
		  "only the good op carries data");
	h_frame_free(&f);
	/* The connection is kept. */
	raw_read(fd, ops, 1, 82, &f);
	h_frame_free(&f);
	close(fd);
	fx_finish(&fx, "bad_reads", 3);
}

/* 15. Connections beyond --max-conns are accepted and closed at once;
 * conns_rejected counts them; the server serves again once some close. */
Test(badinput, too_many_conns)
{
	struct fixture fx;
	int64_t deadline;
	int a, b, x;

	fx_start(&fx, H_ARGS("--max-conns", "3"));
	a = raw_ready(&fx, true);
	b = raw_ready(&fx, false);
	x = h_raw_connect(&fx.s, true);
	cr_assert(h_peer_closed(x, 5000), "a connection over --max-conns was kept");
	close(x);
	cr_assert(eq(u64,
		     h_stat1(fx.stats, 0, "conns_rejected") - h_stat(&fx.before, "conns_rejected"),
		     1));
	close(a);
	close(b);
	deadline = h_now_ms() + 5000;
	while (h_stat1(fx.stats, 0, "conns_active") > 1 && h_now_ms() < deadline) {
		h_sleep_ms(10);
	}
	cr_assert(eq(u64, h_stat1(fx.stats, 0, "conns_active"), 1));
	fx_finish(&fx, "bad_frames", 0);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The writer's command handlers, driven with a fake connection: requests
 * are packed and handed to kvdex_writer_handle(), replies are taken off the
 * writer -> io queue and unpacked. Covers Hello (version, auth), the
 * registrations, Publish (validation, incarnation, seq) and the counters.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "tests/fakes/counter_names.h"
#include "common/frame.h"
#include "kvdex.pb-c.h"
#include "reader.h"
#include "server/server.h"

static struct kvdex_server srv;
static struct kvdex_sconn *conn;

static struct kvdex_sconn *
fake_conn(bool is_unix)
{
	struct kvdex_sconn *c = calloc(1, sizeof(*c));

	cr_assert(ne(ptr, c, NULL));
	c->kind = KVDEX_SRC_CONN;
	urcu_ref_init(&c->ref);
	c->is_unix = is_unix;
	c->fd = -1;
	return c;
}

static void
setup_with(const char *token)
{
	struct kvdex_region_opts ro = {
		.region_max = 64ull << 20, .bucket_size = 256, .workers_cap = 64};
	struct kvdex_index_opts io = {
		.capacity_blocks = 1024, .slots = 64, .sweep_per_tick = 1024, .spec_ttl_ms = 2000};

	rcu_register_thread();
	memset(&srv, 0, sizeof(srv));
	kvdex_config_defaults(&srv.cfg);
	srv.cfg.max_batch_events = 8;
	srv.cfg.max_workers = 64;
	srv.cfg.max_namespaces = 2;
	snprintf(srv.cfg.auth_token, sizeof(srv.cfg.auth_token), "%s", token);
	snprintf(srv.server_id, sizeof(srv.server_id), "test-server");
	snprintf(srv.unix_path, sizeof(srv.unix_path), "/tmp/none.sock");
	cds_wfcq_init(&srv.req_head, &srv.req_tail);
	cds_wfcq_init(&srv.rep_head, &srv.rep_tail);
	srv.start_ns = kvdex_server_now_ns();
	cr_assert(eq(int, kvdex_region_create(&ro, &srv.rg), 0));
	cr_assert(eq(int, kvdex_index_create(srv.rg, &io, &srv.ix), 0));
	cr_assert(eq(int, kvdex_workers_create(srv.rg, srv.ix, 64, &srv.wt), 0));
	cr_assert(eq(int, kvdex_namespaces_create(2, &srv.nss), 0));
	cr_assert(eq(int, kvdex_publishers_create(&srv.pubs), 0));
	conn = fake_conn(true);
}

static void
setup(void)
{
	setup_with("");
}

static void
setup_auth(void)
{
	setup_with("sesame");
}

static void
teardown(void)
{
	struct cds_wfcq_node *n;

	while ((n = cds_wfcq_dequeue_blocking(&srv.rep_head, &srv.rep_tail)) != NULL) {
		kvdex_rep_free(caa_container_of(n, struct kvdex_rep, qn));
	}
	kvdex_sconn_put(conn);
	kvdex_publishers_destroy(srv.pubs);
	kvdex_namespaces_destroy(srv.nss);
	kvdex_workers_destroy(srv.wt);
	kvdex_index_destroy(srv.ix);
	kvdex_region_destroy(srv.rg);
	rcu_unregister_thread();
}

TestSuite(writer, .init = setup, .fini = teardown, .timeout = 30);
TestSuite(writer_auth, .init = setup_auth, .fini = teardown, .timeout = 30);

/* Hand one packed message to the writer. */
static void
send_msg(struct kvdex_sconn *c, uint16_t type, uint32_t req_id, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	struct kvdex_req *req = malloc(sizeof(*req) + len);

	cr_assert(ne(ptr, req, NULL));
	protobuf_c_message_pack(m, req->payload);
	kvdex_sconn_get(c);
	req->conn = c;
	req->type = type;
	req->req_id = req_id;
	req->len = (uint32_t)len;
	kvdex_writer_handle(&srv, req);
}

static void
send_raw(struct kvdex_sconn *c, uint16_t type, const void *payload, size_t len)
{
	struct kvdex_req *req = malloc(sizeof(*req) + len);

	memcpy(req->payload, payload, len);
	kvdex_sconn_get(c);
	req->conn = c;
	req->type = type;
	req->req_id = 1;
	req->len = (uint32_t)len;
	kvdex_writer_handle(&srv, req);
}

/* The next reply: its type, flags and payload (caller frees *buf). */
struct reply {
	uint16_t type;
	uint32_t req_id;
	uint32_t flags;
	uint8_t *payload;
	size_t len;
};

static struct reply
next_reply(void)
{
	struct cds_wfcq_node *n = cds_wfcq_dequeue_blocking(&srv.rep_head, &srv.rep_tail);
	struct kvdex_frame_hdr h;
	struct kvdex_rep *rep;
	struct reply r;

	cr_assert(ne(ptr, n, NULL), "no reply queued");
	rep = caa_container_of(n, struct kvdex_rep, qn);
	cr_assert(eq(int, kvdex_frame_hdr_decode(rep->data, rep->len, 1u << 30, &h), 1));
	r.type = h.type;
	r.req_id = h.req_id;
	r.flags = rep->flags;
	r.len = h.len;
	r.payload = malloc(h.len + 1);
	memcpy(r.payload, rep->data + KVDEX_FRAME_HDR_SIZE, h.len);
	kvdex_rep_free(rep);
	return r;
}

static void
no_more_replies(void)
{
	cr_assert(cds_wfcq_empty(&srv.rep_head, &srv.rep_tail));
}

/* Expect an ErrorReply with `code`; returns its fatal flag. */
static bool
expect_error(Kvdex__Code code)
{
	struct reply r = next_reply();
	Kvdex__ErrorReply *er;
	bool fatal;

	cr_assert(eq(u16, r.type, KVDEX_MSG_ERROR));
	er = kvdex__error_reply__unpack(NULL, r.len, r.payload);
	cr_assert(ne(ptr, er, NULL));
	cr_assert(eq(int, er->status->code, code), "message: %s", er->status->message);
	fatal = er->fatal;
	cr_assert(eq(int, fatal, (r.flags & KVDEX_REP_CLOSE) != 0));
	kvdex__error_reply__free_unpacked(er, NULL);
	free(r.payload);
	return fatal;
}

static uint64_t
counter(const char *name)
{
	Kvdex__StatsRequest m = KVDEX__STATS_REQUEST__INIT;
	Kvdex__StatsReply *sr;
	struct reply r;
	uint64_t v = UINT64_MAX;

	send_msg(conn, KVDEX_MSG_STATS, 9, &m.base);
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_STATS_REPLY));
	sr = kvdex__stats_reply__unpack(NULL, r.len, r.payload);
	for (size_t i = 0; i < sr->n_counters; i++) {
		if (strcmp(sr->counters[i]->name, name) == 0) {
			v = sr->counters[i]->value;
		}
	}
	kvdex__stats_reply__free_unpacked(sr, NULL);
	free(r.payload);
	cr_assert(ne(u64, v, UINT64_MAX), "counter %s missing", name);
	return v;
}

static void
hello(struct kvdex_sconn *c, const char *token, bool want_fd)
{
	Kvdex__Hello m = KVDEX__HELLO__INIT;

	m.protocol_version = KVDEX_PROTOCOL_VERSION;
	m.auth_token = (char *)token;
	m.client_name = "test";
	m.want_region_fd = want_fd;
	send_msg(c, KVDEX_MSG_HELLO, 1, &m.base);
}

static Kvdex__HelloReply *
hello_ok(struct kvdex_sconn *c, const char *token, bool want_fd, uint32_t *flags)
{
	Kvdex__HelloReply *hr;
	struct reply r;

	hello(c, token, want_fd);
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_HELLO_REPLY));
	*flags = r.flags;
	hr = kvdex__hello_reply__unpack(NULL, r.len, r.payload);
	free(r.payload);
	cr_assert(ne(ptr, hr, NULL));
	return hr;
}

static uint32_t
register_ns(const char *model, bool create, Kvdex__Code want)
{
	Kvdex__RegisterNamespace m = KVDEX__REGISTER_NAMESPACE__INIT;
	Kvdex__RegisterNamespaceReply *rr;
	struct reply r;
	uint32_t id;

	m.model = (char *)model;
	m.block_size = 16;
	m.hash_scheme = "opaque";
	m.create = create;
	send_msg(conn, KVDEX_MSG_REGISTER_NS, 2, &m.base);
	if (want != KVDEX__CODE__OK) {
		expect_error(want);
		return 0;
	}
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_REGISTER_NS_REPLY));
	rr = kvdex__register_namespace_reply__unpack(NULL, r.len, r.payload);
	id = rr->ns_id;
	kvdex__register_namespace_reply__free_unpacked(rr, NULL);
	free(r.payload);
	return id;
}

static void
register_worker(uint32_t id, const char *addr, uint32_t dp, Kvdex__Code want, uint32_t *first)
{
	Kvdex__RegisterWorker m = KVDEX__REGISTER_WORKER__INIT;
	Kvdex__RegisterWorkerReply *rr;
	struct reply r;

	m.worker_id = id;
	m.address = (char *)addr;
	m.dp_size = dp;
	send_msg(conn, KVDEX_MSG_REGISTER_WORKER, 3, &m.base);
	if (want != KVDEX__CODE__OK) {
		expect_error(want);
		return;
	}
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_REGISTER_WORKER_REPLY));
	rr = kvdex__register_worker_reply__unpack(NULL, r.len, r.payload);
	cr_assert(eq(sz, rr->n_slots, dp));
	if (first != NULL) {
		*first = rr->slots[0];
	}
	kvdex__register_worker_reply__free_unpacked(rr, NULL);
	free(r.payload);
}

/* Publish; returns the reply (caller frees) or NULL after checking an
 * expected error. */
static Kvdex__PublishReply *
publish(uint32_t worker, uint32_t rank, uint64_t inc, uint64_t seq, Kvdex__Event **ev, size_t n,
	Kvdex__Code want)
{
	Kvdex__Publish m = KVDEX__PUBLISH__INIT;
	Kvdex__PublishReply *pr;
	struct reply r;

	m.worker_id = worker;
	m.dp_rank = rank;
	m.incarnation = inc;
	m.seq = seq;
	m.n_events = n;
	m.events = ev;
	send_msg(conn, KVDEX_MSG_PUBLISH, 4, &m.base);
	if (want != KVDEX__CODE__OK) {
		expect_error(want);
		return NULL;
	}
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_PUBLISH_REPLY));
	pr = kvdex__publish_reply__unpack(NULL, r.len, r.payload);
	free(r.payload);
	return pr;
}

static Kvdex__Event
stored(uint32_t ns, uint64_t key)
{
	Kvdex__Event e = KVDEX__EVENT__INIT;

	e.type = KVDEX__EVENT__TYPE__STORED;
	e.ns_id = ns;
	e.key = key;
	return e;
}

static void
ready(void)
{
	uint32_t flags;
	Kvdex__HelloReply *hr = hello_ok(conn, "", false, &flags);

	kvdex__hello_reply__free_unpacked(hr, NULL);
	cr_assert(eq(u32, register_ns("m", true, KVDEX__CODE__OK), 1));
	register_worker(10, "10.0.0.1:8000", 2, KVDEX__CODE__OK, NULL);
}

/* 1. Hello answers with the region description; shm Hello asks for the fd. */
Test(writer, hello_reply)
{
	struct kvdex_sconn *tcp = fake_conn(false);
	Kvdex__HelloReply *hr;
	uint32_t flags;

	hr = hello_ok(conn, "anything", true, &flags);
	cr_assert(eq(int, hr->status->code, KVDEX__CODE__OK));
	cr_assert(eq(u32, hr->protocol_version, KVDEX_PROTOCOL_VERSION));
	cr_assert(eq(str, hr->server_id, "test-server"));
	cr_assert(eq(str, hr->unix_path, "/tmp/none.sock"));
	cr_assert(eq(u64, hr->cluster_epoch, 1));
	cr_assert(eq(u32, hr->region->bucket_size, 256));
	cr_assert(eq(u32, hr->region->header_size, KVDEX_HDR_SIZE));
	cr_assert(eq(u64, hr->region->hash_seed, srv.rg->hdr.hash_seed));
	cr_assert(eq(u64, hr->region->region_size, kvdex_region_readable(srv.rg)));
	cr_assert(hr->region_fd_attached);
	cr_assert(eq(u32, flags, KVDEX_REP_HELLO_OK | KVDEX_REP_FD));
	kvdex__hello_reply__free_unpacked(hr, NULL);

	/* tcp: no fd even if asked. */
	hr = hello_ok(tcp, "", true, &flags);
	cr_assert(not(hr->region_fd_attached));
	cr_assert(eq(u32, flags, KVDEX_REP_HELLO_OK));
	kvdex__hello_reply__free_unpacked(hr, NULL);
	kvdex_sconn_put(tcp);
}

/* 2. Wrong version, malformed Hello and requests before Hello are fatal
 * and counted; after a fatal error the connection's requests are dropped. */
Test(writer, hello_errors)
{
	Kvdex__StatsRequest st = KVDEX__STATS_REQUEST__INIT;
	Kvdex__Hello m = KVDEX__HELLO__INIT;
	struct kvdex_sconn *c2 = fake_conn(false);
	struct kvdex_sconn *c3 = fake_conn(false);
	struct kvdex_sconn *c4 = fake_conn(false);
	uint32_t flags;

	m.protocol_version = 99;
	send_msg(c2, KVDEX_MSG_HELLO, 1, &m.base);
	cr_assert(expect_error(KVDEX__CODE__BAD_VERSION));
	hello(c2, "", false);
	no_more_replies();

	send_msg(c3, KVDEX_MSG_STATS, 5, &st.base);
	cr_assert(expect_error(KVDEX__CODE__NOT_READY));

	send_raw(c4, KVDEX_MSG_HELLO, "\xff\xff\xff", 3);
	cr_assert(expect_error(KVDEX__CODE__MALFORMED));

	kvdex__hello_reply__free_unpacked(hello_ok(conn, "", false, &flags), NULL);
	cr_assert(eq(u64, counter("bad_version"), 1));
	cr_assert(eq(u64, counter("not_ready"), 1));
	cr_assert(eq(u64, counter("bad_protobuf"), 1));
	kvdex_sconn_put(c2);
	kvdex_sconn_put(c3);
	kvdex_sconn_put(c4);
}

/* 3. With a token configured, only the right token gets in. */
Test(writer_auth, token_checked)
{
	struct kvdex_sconn *c2 = fake_conn(false);
	struct kvdex_sconn *c3 = fake_conn(false);
	uint32_t flags;

	hello(c2, "sesamx", false);
	cr_assert(expect_error(KVDEX__CODE__BAD_AUTH));
	hello(c3, "sesame-longer", false);
	cr_assert(expect_error(KVDEX__CODE__BAD_AUTH));
	kvdex__hello_reply__free_unpacked(hello_ok(conn, "sesame", false, &flags), NULL);
	cr_assert(eq(u64, counter("bad_auth"), 2));
	kvdex_sconn_put(c2);
	kvdex_sconn_put(c3);
}

/* 4. Namespaces: dense ids, idempotent, resolve-only, table limit. */
Test(writer, namespaces)
{
	uint32_t flags;

	kvdex__hello_reply__free_unpacked(hello_ok(conn, "", false, &flags), NULL);
	register_ns("b", false, KVDEX__CODE__UNKNOWN_NAMESPACE);
	cr_assert(eq(u32, register_ns("a", true, KVDEX__CODE__OK), 1));
	cr_assert(eq(u32, register_ns("b", true, KVDEX__CODE__OK), 2));
	cr_assert(eq(u32, register_ns("a", true, KVDEX__CODE__OK), 1));
	cr_assert(eq(u32, register_ns("b", false, KVDEX__CODE__OK), 2));
	register_ns("c", true, KVDEX__CODE__FULL); /* max-namespaces 2 */
	cr_assert(eq(u64, counter("namespaces"), 2));
	cr_assert(eq(u64, counter("unknown_namespace"), 1));
}

/* 5. Workers: slots, idempotent re-register, conflicts, validation; the
 * rows in the region are valid and the header's hwm/version move. */
Test(writer, workers)
{
	struct kvdex_worker_row row;
	uint32_t first = 0, flags;
	uint32_t version;

	kvdex__hello_reply__free_unpacked(hello_ok(conn, "", false, &flags), NULL);
	register_worker(5, "a:1", 4, KVDEX__CODE__OK, &first);
	cr_assert(eq(u32, first, 0));
	register_worker(6, "b:1", 2, KVDEX__CODE__OK, &first);
	cr_assert(eq(u32, first, 4));
	version = srv.rg->hdr.workers_version;
	register_worker(5, "a:1", 4, KVDEX__CODE__OK, &first);
	cr_assert(eq(u32, first, 0));
	cr_assert(eq(u32, srv.rg->hdr.workers_version, version));
	register_worker(5, "a:2", 4, KVDEX__CODE__OK, &first);
	cr_assert(gt(u32, srv.rg->hdr.workers_version, version));
	register_worker(5, "a:2", 3, KVDEX__CODE__EXISTS, NULL);
	register_worker(0, "z", 1, KVDEX__CODE__MALFORMED, NULL);
	register_worker(8, "z", 0, KVDEX__CODE__MALFORMED, NULL);
	register_worker(8, "z", 257, KVDEX__CODE__MALFORMED, NULL);
	register_worker(8, "0123456789012345678901234567890123456789012345678901234567890123", 1,
			KVDEX__CODE__MALFORMED, NULL);
	register_worker(9, "big", 60, KVDEX__CODE__FULL, NULL); /* 64 rows, 6 used */
	cr_assert(eq(u32, srv.rg->hdr.workers_hwm, 6));
	memcpy(&row, srv.rg->base + kvdex_row_offset(&srv.rg->hdr, 3), sizeof(row));
	cr_assert(
		eq(int,
		   kvdex_row_check(&row, srv.rg->hdr.hash_seed, kvdex_row_offset(&srv.rg->hdr, 3)),
		   0));
	cr_assert(eq(u32, row.worker_id, 5));
	cr_assert(eq(u16, row.dp_rank, 3));
	cr_assert(eq(str, row.addr, "a:2"));
	cr_assert(eq(u64, counter("workers"), 2));
	cr_assert(eq(u64, counter("slots_used"), 6));
}

/* 6. Publish: in-order, duplicate and gap handling. */
Test(writer, publish_seq)
{
	Kvdex__Event e1 = stored(1, 100), e2 = stored(1, 200);
	Kvdex__Event *evs[] = {&e1, &e2};
	Kvdex__PublishReply *pr;
	struct rv_block b;

	ready();
	pr = publish(10, 1, 7, 5, evs, 2, KVDEX__CODE__OK);
	cr_assert(eq(u64, pr->applied, 2));
	cr_assert(eq(u64, pr->last_seq, 5));
	cr_assert(not(pr->gap));
	cr_assert(not(pr->duplicate));
	kvdex__publish_reply__free_unpacked(pr, NULL);
	cr_assert(eq(int, rv_lookup(srv.rg->base, 1, 100, &b, NULL), 0));
	cr_assert(ne(ptr, (void *)rv_find(&b, 1, 0), NULL)); /* worker 10 rank 1 = slot 1 */

	pr = publish(10, 1, 7, 5, evs, 2, KVDEX__CODE__OK);
	cr_assert(pr->duplicate);
	cr_assert(eq(u64, pr->applied, 0));
	kvdex__publish_reply__free_unpacked(pr, NULL);
	cr_assert(eq(int, rv_lookup(srv.rg->base, 1, 100, &b, NULL), 0));
	cr_assert(eq(u8, rv_find(&b, 1, 0)->count, 1));

	pr = publish(10, 1, 7, 6, NULL, 0, KVDEX__CODE__OK);
	cr_assert(not(pr->gap));
	kvdex__publish_reply__free_unpacked(pr, NULL);

	pr = publish(10, 1, 7, 9, evs, 1, KVDEX__CODE__OK);
	cr_assert(pr->gap);
	cr_assert(eq(u64, pr->expected_seq, 7));
	cr_assert(eq(u64, pr->applied, 1));
	cr_assert(eq(u64, pr->last_seq, 9));
	kvdex__publish_reply__free_unpacked(pr, NULL);

	cr_assert(eq(u64, counter("seq_duplicates"), 1));
	cr_assert(eq(u64, counter("seq_gaps"), 1));
	cr_assert(eq(u64, counter("publish_batches"), 3));
	cr_assert(eq(u64, counter("events_applied"), 3));
	cr_assert(eq(u64, counter("blocks"), 2));
	cr_assert(eq(u64, counter("holders"), 2));
}

/* 7. Incarnations: older is refused, newer purges the publisher's blocks. */
Test(writer, publish_incarnation)
{
	Kvdex__Event e1 = stored(1, 100);
	Kvdex__Event *evs[] = {&e1};
	Kvdex__PublishReply *pr;
	struct rv_block b;

	ready();
	kvdex__publish_reply__free_unpacked(publish(10, 0, 7, 1, evs, 1, KVDEX__CODE__OK), NULL);
	publish(10, 0, 6, 2, evs, 1, KVDEX__CODE__STALE_INCARNATION);
	pr = publish(10, 0, 8, 1, NULL, 0, KVDEX__CODE__OK);
	cr_assert(pr->purged);
	cr_assert(not(pr->duplicate));
	cr_assert(eq(u64, pr->last_seq, 1));
	kvdex__publish_reply__free_unpacked(pr, NULL);
	cr_assert(eq(int, rv_lookup(srv.rg->base, 1, 100, &b, NULL), 0));
	cr_assert(eq(u32, b.nholders, 0)); /* hidden at once */
	cr_assert(eq(u64, counter("stale_incarnation"), 1));
	cr_assert(eq(u64, counter("publisher_restarts"), 1));
	cr_assert(eq(u64, counter("holders"), 0));
}

/* 8. A batch with any bad event is refused whole. */
Test(writer, publish_validated_whole)
{
	Kvdex__Event ok = stored(1, 1), bad_ns = stored(2, 2), bad_tier = stored(1, 3);
	Kvdex__Event bad_ttl = stored(1, 4), bad_mask = KVDEX__EVENT__INIT;
	Kvdex__Event *ev_ns[] = {&ok, &bad_ns};
	Kvdex__Event *ev_tier[] = {&ok, &bad_tier};
	Kvdex__Event *ev_ttl[] = {&ok, &bad_ttl};
	Kvdex__Event *ev_mask[] = {&ok, &bad_mask};
	Kvdex__Event *ev_many[9];
	struct rv_block b;

	ready();
	bad_tier.tier = 4;
	bad_ttl.speculative = true;
	bad_ttl.spec_ttl_ms = 7501;
	bad_mask.type = KVDEX__EVENT__TYPE__ALL_CLEARED;
	bad_mask.tier_mask = 0x10;
	for (int i = 0; i < 9; i++) {
		ev_many[i] = &ok;
	}
	publish(10, 0, 1, 1, ev_ns, 2, KVDEX__CODE__UNKNOWN_NAMESPACE);
	publish(10, 0, 1, 1, ev_tier, 2, KVDEX__CODE__MALFORMED);
	publish(10, 0, 1, 1, ev_ttl, 2, KVDEX__CODE__MALFORMED);
	publish(10, 0, 1, 1, ev_mask, 2, KVDEX__CODE__MALFORMED);
	publish(10, 0, 1, 1, ev_many, 9, KVDEX__CODE__TOO_LARGE);
	publish(11, 0, 1, 1, ev_tier, 1, KVDEX__CODE__UNKNOWN_WORKER);
	publish(10, 2, 1, 1, ev_tier, 1, KVDEX__CODE__UNKNOWN_WORKER);
	send_raw(conn, KVDEX_MSG_PUBLISH, "\x0a\xff", 2);
	cr_assert(not(expect_error(KVDEX__CODE__MALFORMED)));
	cr_assert(eq(int, rv_lookup(srv.rg->base, 1, 1, &b, NULL), -ENOENT));
	cr_assert(eq(u64, counter("unknown_namespace"), 1));
	cr_assert(eq(u64, counter("malformed_requests"), 3));
	cr_assert(eq(u64, counter("oversize_batches"), 1));
	cr_assert(eq(u64, counter("unknown_worker"), 2));
	cr_assert(eq(u64, counter("bad_protobuf"), 1));
	cr_assert(eq(u64, counter("publish_batches"), 0));
	/* Nothing advanced the seq: seq 1 is still the first batch. */
	kvdex__publish_reply__free_unpacked(publish(10, 0, 1, 1, ev_ns, 1, KVDEX__CODE__OK), NULL);
	cr_assert(eq(int, rv_lookup(srv.rg->base, 1, 1, &b, NULL), 0));
}

/* 9. AllBlocksCleared for some tiers, removes, ignored events. */
Test(writer, publish_clear_and_remove)
{
	Kvdex__Event s0 = stored(1, 1), s1 = stored(1, 1), rm = stored(1, 1),
		     rm_absent = stored(1, 9);
	Kvdex__Event clr = KVDEX__EVENT__INIT;
	Kvdex__Event *batch1[] = {&s0, &s1};
	Kvdex__Event *batch2[] = {&clr, &rm, &rm_absent};
	Kvdex__PublishReply *pr;
	struct rv_block b;

	ready();
	s1.tier = 1;
	rm.type = KVDEX__EVENT__TYPE__REMOVED;
	rm.tier = 1;
	rm_absent.type = KVDEX__EVENT__TYPE__REMOVED;
	clr.type = KVDEX__EVENT__TYPE__ALL_CLEARED;
	clr.tier_mask = 1; /* GPU only */
	kvdex__publish_reply__free_unpacked(publish(10, 0, 1, 1, batch1, 2, KVDEX__CODE__OK), NULL);
	pr = publish(10, 0, 1, 2, batch2, 3, KVDEX__CODE__OK);
	cr_assert(eq(u64, pr->applied, 2));
	cr_assert(eq(u64, pr->ignored, 1));
	kvdex__publish_reply__free_unpacked(pr, NULL);
	/* The remove rewrote the chain without the cleared GPU holder: the
	 * block is gone from the bucket, not just hidden. */
	cr_assert(eq(int, rv_lookup(srv.rg->base, 1, 1, &b, NULL), -ENOENT));
	cr_assert(eq(u64, counter("clears"), 1));
	cr_assert(eq(u64, counter("events_ignored"), 1));
}

/* 10. Worker loads land in the row and in ListWorkers. */
Test(writer, load_and_list)
{
	Kvdex__WorkerLoad wl = KVDEX__WORKER_LOAD__INIT;
	Kvdex__ListWorkers lw = KVDEX__LIST_WORKERS__INIT;
	Kvdex__Event e1 = stored(1, 1);
	Kvdex__Event *evs[] = {&e1};
	Kvdex__ListWorkersReply *lr;
	struct kvdex_worker_row row;
	struct reply r;

	ready();
	kvdex__publish_reply__free_unpacked(publish(10, 1, 1, 1, evs, 1, KVDEX__CODE__OK), NULL);
	wl.worker_id = 10;
	wl.dp_rank = 1;
	wl.queued = 3;
	wl.running = 4;
	wl.prefill_tokens = 5000;
	wl.kv_util_permille = 250;
	send_msg(conn, KVDEX_MSG_WORKER_LOAD, 6, &wl.base);
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_WORKER_LOAD_REPLY));
	cr_assert(eq(u32, r.req_id, 6));
	free(r.payload);
	wl.dp_rank = 2;
	send_msg(conn, KVDEX_MSG_WORKER_LOAD, 6, &wl.base);
	expect_error(KVDEX__CODE__UNKNOWN_WORKER);
	memcpy(&row, srv.rg->base + kvdex_row_offset(&srv.rg->hdr, 1), sizeof(row));
	cr_assert(eq(u32, row.queued, 3));
	cr_assert(eq(u16, row.kv_util_permille, 250));
	cr_assert(ne(u32, row.load_ticks, 0));

	send_msg(conn, KVDEX_MSG_LIST_WORKERS, 7, &lw.base);
	r = next_reply();
	cr_assert(eq(u16, r.type, KVDEX_MSG_LIST_WORKERS_REPLY));
	lr = kvdex__list_workers_reply__unpack(NULL, r.len, r.payload);
	free(r.payload);
	cr_assert(eq(sz, lr->n_workers, 2));
	cr_assert(eq(u32, lr->workers[1]->worker_id, 10));
	cr_assert(eq(u32, lr->workers[1]->dp_rank, 1));
	cr_assert(eq(u32, lr->workers[1]->running, 4));
	cr_assert(eq(u64, lr->workers[1]->holders, 1));
	cr_assert(lt(u64, lr->workers[1]->load_age_ms, 60000));
	cr_assert(eq(u64, lr->workers[0]->load_age_ms, UINT64_MAX));
	cr_assert(eq(str, lr->workers[0]->address, "10.0.0.1:8000"));
	kvdex__list_workers_reply__free_unpacked(lr, NULL);
	cr_assert(eq(u64, counter("worker_loads"), 1));
}

/* 11. Stats lists every documented counter, by its exact name. */
Test(writer, stats_names)
{
	uint32_t flags;

	kvdex__hello_reply__free_unpacked(hello_ok(conn, "", false, &flags), NULL);
	for (size_t i = 0; i < KVDEX_TEST_NCOUNTER_NAMES; i++) {
		(void)counter(kvdex_test_counter_names[i]);
	}
	cr_assert(eq(u64, counter("home_buckets"), 256));
	cr_assert(eq(u64, counter("table_bytes"), (256 + 32) * 256));
	cr_assert(eq(u64, counter("region_bytes"), kvdex_region_readable(srv.rg)));
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verbs transport against real kvdexd processes on Soft-RoCE (suite
 * 'rdma', run inside the VM by tests/rdma/run-rdma-suite.sh).
 *
 * Servers listen on $RXE_IP (tcp port 0 or fixed, --listen-rdma on the same
 * address); clients use "rdma:IP:port" with the verbs transport, or the tcp
 * address with auto. The executable exits 77 (skip) when there is no RDMA
 * device or no address to use ($RXE_IP, else $KVDEX_RDMA_IP).
 *
 * Cases:
 *   1. lookup_publish    publish and look up over verbs, long chains (several
 *                        READ lists per batch), auto picks verbs, counters
 *   2. server_restart    clients reconnect to a restarted server at the same
 *                        address and see its new, empty index
 *   3. client_killed     a client SIGKILLed in its lookup loop: the server
 *                        keeps serving and cleans the connection up
 *   4. bad_connect       raw rdma_cm connects with a wrong version, a wrong
 *                        token digest and no kvdex data: REJECTED with the
 *                        right code, counted
 *   5. region_growth     a tiny table grows (re-registering the region, mr_gen
 *                        advances) while another client looks up: answers stay
 *                        exact
 *   6. torn_stress       a publisher rewrites blocks while a verbs reader
 *                        validates >= 10^5 lookups; prints the retries seen
 *
 * Helper processes (lookup loops, readers, a rewriter) are this executable
 * run again with "--child KIND ..." (fork + exec): a child that only forked
 * would share the parent's verbs contexts, which libibverbs does not
 * support. They never call cr_assert and report through pipes and their
 * exit status.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Before <netdb.h> (via rdma_cma.h): it #defines h_addr, a harness name. */
#include "harness.h"

#include <netdb.h>

#include "common/verbs.h"

#define NS_MODEL "rdma-model"

static const char *
vt_ip(void)
{
	const char *ip = getenv("RXE_IP");

	if (ip == NULL || ip[0] == '\0') {
		ip = getenv("KVDEX_RDMA_IP");
	}
	return ip != NULL && ip[0] != '\0' ? ip : NULL;
}

static void
vt_init(void)
{
	h_init();
	if (vt_ip() == NULL || !kvdex_verbs_have_device()) {
		cr_skip_test("no RDMA device or address");
	}
}

TestSuite(verbs, .init = vt_init, .fini = h_cleanup, .timeout = 480);

/* The rdma= line of the server's ready file, as "rdma:host:port". */
static void
vt_rdma_addr(const struct h_server *s, char *out, size_t len)
{
	char path[PATH_MAX + 16], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/ready", s->dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	out[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "rdma=", 5) == 0) {
			snprintf(out, len, "rdma:%.100s", line + 5);
		}
	}
	fclose(f);
	cr_assert(ne(str, out, ""), "server has no rdma= line in its ready file");
}

static void
vt_server(struct h_server *s, const char *tcp_port, const char *rdma_port, const char *const *more)
{
	static char tcp[96], rdma[96];
	const char *argv[32];
	size_t n = 0;

	snprintf(tcp, sizeof(tcp), "%s:%s", vt_ip(), tcp_port);
	snprintf(rdma, sizeof(rdma), "%s:%s", vt_ip(), rdma_port);
	argv[n++] = "--listen-tcp";
	argv[n++] = tcp;
	argv[n++] = "--listen-rdma";
	argv[n++] = rdma;
	for (size_t i = 0; more != NULL && more[i] != NULL && n < 30; i++) {
		argv[n++] = more[i];
	}
	argv[n] = NULL;
	h_server_start(s, argv);
}

static int
vt_client_try(const char *servers, const char *token, struct kvdex_client **c)
{
	struct kvdex_client_opts o;

	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = servers;
	o.transport = KVDEX_TRANSPORT_VERBS;
	o.auth_token = token;
	o.timeout_ms = 5000;
	o.client_name = "rdma-test";
	return kvdex_client_create(&o, c);
}

static struct kvdex_client *
vt_client(const char *servers)
{
	struct kvdex_client *c = NULL;
	int rc = vt_client_try(servers, NULL, &c);

	cr_assert(eq(i32, rc, 0), "verbs client for %s: %s", servers, strerror(-rc));
	cr_assert(eq(str, (char *)kvdex_client_transport_name(c, 0), "verbs"));
	return c;
}

/* Register worker w and store keys in GPU as one batch per `per` events. */
static void
vt_store(struct kvdex_client *c, uint32_t ns, uint32_t w, uint64_t *seq, const uint64_t *keys,
	 size_t n, size_t per)
{
	for (size_t off = 0; off < n; off += per) {
		size_t k = n - off < per ? n - off : per;

		h_store_chain(c, ns, w, 0, 1, (*seq)++, keys + off, k, KVDEX_GPU);
	}
}

/* 1 */
Test(verbs, lookup_publish)
{
	struct h_server s;
	char raddr[128];
	struct kvdex_client *c, *a;
	uint64_t keys[200];
	struct h_lookup l;
	uint64_t seq = 1;
	uint32_t ns;

	vt_server(&s, "0", "0", NULL);
	vt_rdma_addr(&s, raddr, sizeof(raddr));
	c = vt_client(raddr);
	ns = h_ns(c, NS_MODEL);
	h_worker(c, 7, 1);
	h_keys(keys, 200, 1);
	vt_store(c, ns, 7, &seq, keys, 200, 200);
	cr_assert(eq(i32, h_lookup(c, ns, keys, 200, 0, &l), 0), "%s", kvdex_client_last_error(c));
	cr_assert(eq(u32, h_matched(&l, 7, 0), 200));
	cr_assert(eq(u32, h_find(&l, 7, 0)->tier_blocks[KVDEX_GPU], 200));
	/* A key that was never stored ends the chain. */
	keys[150] ^= 1;
	cr_assert(eq(i32, h_lookup(c, ns, keys, 200, 0, &l), 0));
	cr_assert(eq(u32, h_matched(&l, 7, 0), 150));

	/* auto over the tcp address switches to verbs. */
	a = h_client(s.addr_tcp, KVDEX_TRANSPORT_AUTO, NULL);
	cr_assert(eq(str, (char *)kvdex_client_transport_name(a, 0), "verbs"));
	ns = h_ns(a, NS_MODEL);
	cr_assert(eq(i32, h_lookup(a, ns, keys, 100, 0, &l), 0));
	cr_assert(eq(u32, h_matched(&l, 7, 0), 100));
	cr_assert(ge(u64, h_stat1(a, 0, "rdma_conns_accepted"), 2));
	cr_assert(eq(u64, h_stat1(a, 0, "rdma_qp_errors"), 0));
	cr_assert(eq(u64, h_stat1(a, 0, "tcp_read_batches"), 0), "reads must be RDMA READs");
	kvdex_client_destroy(a);
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* 2 */
Test(verbs, server_restart)
{
	struct h_server s;
	char raddr[128];
	struct kvdex_client *c, *d;
	uint64_t keys[16];
	struct h_lookup l;
	uint64_t seq = 1;
	uint32_t ns, ns2;
	int rc;

	vt_server(&s, "7480", "7481", NULL);
	vt_rdma_addr(&s, raddr, sizeof(raddr));
	c = vt_client(raddr);
	d = h_client(s.addr_tcp, KVDEX_TRANSPORT_AUTO, NULL);
	ns = h_ns(c, NS_MODEL);
	ns2 = h_ns(d, NS_MODEL);
	h_worker(c, 7, 1);
	h_keys(keys, 16, 2);
	vt_store(c, ns, 7, &seq, keys, 16, 16);
	cr_assert(eq(i32, h_lookup(d, ns2, keys, 16, 0, &l), 0));
	cr_assert(eq(u32, h_matched(&l, 7, 0), 16));

	h_server_stop_ok(&s);
	vt_server(&s, "7480", "7481", NULL);
	/* Both clients reconnect by themselves and see the empty index. */
	rc = h_lookup(c, ns, keys, 16, 0, &l);
	cr_assert(eq(i32, rc, 0), "lookup after restart: %s (%s)", strerror(-rc),
		  kvdex_client_last_error(c));
	cr_assert(eq(u32, l.res.nholdings, 0));
	rc = h_lookup(d, ns2, keys, 16, 0, &l);
	cr_assert(eq(i32, rc, 0), "lookup after restart: %s (%s)", strerror(-rc),
		  kvdex_client_last_error(d));
	cr_assert(eq(u32, l.res.nholdings, 0));
	cr_assert(eq(str, (char *)kvdex_client_transport_name(d, 0), "verbs"));
	/* And the index works again. */
	vt_store(c, ns, 7, &seq, keys, 8, 8);
	cr_assert(eq(i32, h_lookup(d, ns2, keys, 16, 0, &l), 0));
	cr_assert(eq(u32, h_matched(&l, 7, 0), 8));
	kvdex_client_destroy(c);
	kvdex_client_destroy(d);
	h_server_stop_ok(&s);
}

/* A helper's client: exits 2 with a message when it cannot get one. */
static void
child_client(const char *raddr, struct kvdex_client **c, const struct kvdex_ns_desc *d,
	     uint32_t *ns)
{
	int rc = vt_client_try(raddr, NULL, c);

	if (rc == 0) {
		rc = kvdex_ns_resolve(*c, d, ns);
	}
	if (rc != 0) {
		fprintf(stderr, "child: client for %s: %s (%s)\n", raddr, strerror(-rc),
			*c != NULL ? kvdex_client_last_error(*c) : "");
		_exit(2);
	}
}

/* Run this executable as a helper: argv after the program name. Only
 * stdio and the fds keep1/keep2 (-1: none) stay open in it, so that it holds
 * no other end of the test's pipes. */
static pid_t
spawn_child(const char *const *args, int keep1, int keep2)
{
	const char *argv[16] = {"/proc/self/exe", "--child"};
	size_t n = 2;
	pid_t pid;

	for (size_t i = 0; args[i] != NULL && n < 15; i++) {
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid = fork();
	cr_assert(ge(i32, pid, 0));
	if (pid == 0) {
		extern char **environ;
		char *env[256];
		size_t k = 0;

		/* Criterion's sandbox (BoxFort) marks its workers through the
		 * environment; a helper that inherited it would take itself for
		 * one and abort. */
		for (char **e = environ; *e != NULL && k < 255; e++) {
			if (strncmp(*e, "BXF", 3) != 0 && strncmp(*e, "CRITERION", 9) != 0) {
				env[k++] = *e;
			}
		}
		env[k] = NULL;
		for (int fd = 3; fd < 1024; fd++) {
			if (fd != keep1 && fd != keep2) {
				close(fd);
			}
		}
		execve(argv[0], (char *const *)argv, env);
		_exit(127);
	}
	return pid;
}

static char *
fmt_u64(char *buf, uint64_t v)
{
	sprintf(buf, "%llu", (unsigned long long)v);
	return buf;
}

/* A child looping lookups until killed; writes one byte once it runs. */
static void
lookup_loop_child(const char *raddr, const uint64_t *keys, size_t n, int ready_fd)
{
	struct kvdex_client *c = NULL;
	struct kvdex_ns_desc d = {.model = NS_MODEL, .block_size = 16, .hash_scheme = "opaque"};
	struct kvdex_holding rows[8];
	struct kvdex_lookup_result r = {.holdings = rows, .cap = 8};
	uint32_t ns;
	char one = 1;

	child_client(raddr, &c, &d, &ns);
	if (kvdex_lookup(c, ns, keys, n, 0, &r) != 0 || write(ready_fd, &one, 1) != 1) {
		_exit(3);
	}
	for (;;) {
		kvdex_lookup(c, ns, keys, n, 0, &r);
	}
}

/* 3 */
Test(verbs, client_killed)
{
	struct h_server s;
	char raddr[128];
	struct kvdex_client *c;
	uint64_t keys[64];
	struct h_lookup l;
	uint64_t seq = 1, active;
	uint32_t ns;
	int pfd[2], status;
	char b;
	pid_t pid;

	vt_server(&s, "0", "0", NULL);
	vt_rdma_addr(&s, raddr, sizeof(raddr));
	c = vt_client(raddr);
	ns = h_ns(c, NS_MODEL);
	h_worker(c, 7, 1);
	h_keys(keys, 64, 3);
	vt_store(c, ns, 7, &seq, keys, 64, 64);
	cr_assert(eq(i32, pipe(pfd), 0));
	{
		char fd[24];

		pid = spawn_child(H_ARGS("loop", raddr, "3", "64", fmt_u64(fd, (uint64_t)pfd[1])),
				  pfd[1], -1);
	}
	close(pfd[1]);
	cr_assert(eq(i64, read(pfd[0], &b, 1), 1), "child never looked up");
	close(pfd[0]);
	h_sleep_ms(300); /* mid-lookup, most likely */
	cr_assert(eq(u64, h_stat1(c, 0, "conns_active"), 2));
	kill(pid, SIGKILL);
	cr_assert(eq(i32, waitpid(pid, &status, 0), pid));
	/* The server notices (DISCONNECTED from the dead process's CM) and
	 * destroys the connection; it keeps serving us meanwhile. */
	for (int64_t end = h_now_ms() + 20000; h_now_ms() < end;) {
		cr_assert(eq(i32, h_lookup(c, ns, keys, 64, 0, &l), 0), "%s",
			  kvdex_client_last_error(c));
		cr_assert(eq(u32, h_matched(&l, 7, 0), 64));
		active = h_stat1(c, 0, "conns_active");
		if (active == 1) {
			break;
		}
		h_sleep_ms(50);
	}
	cr_assert(eq(u64, h_stat1(c, 0, "conns_active"), 1), "dead client's connection kept");
	cr_assert(eq(u64, h_stat1(c, 0, "rdma_conns_accepted"), 2));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* ---- 4: raw rdma_cm connects ------------------------------------------------- */

struct raw_cm {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
};

static struct rdma_cm_event *
raw_event(struct raw_cm *r, int timeout_ms)
{
	struct rdma_cm_event *ev = NULL;
	struct pollfd p = {.fd = r->ch->fd, .events = POLLIN};

	cr_assert(gt(i32, poll(&p, 1, timeout_ms), 0), "no CM event");
	cr_assert(eq(i32, rdma_get_cm_event(r->ch, &ev), 0));
	return ev;
}

/* Resolve and connect with `priv`; returns the REJECTED code found (or -1
 * if no kvdex reject data came back, -2 if it connected). */
static int
raw_connect(const char *raddr, const void *priv, uint8_t len)
{
	struct raw_cm r = {0};
	struct addrinfo *ai;
	struct rdma_cm_event *ev;
	struct ibv_qp_init_attr qa = {
		.cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1},
		.qp_type = IBV_QPT_RC};
	struct rdma_conn_param p = {.private_data = priv,
				    .private_data_len = len,
				    .initiator_depth = 1,
				    .retry_count = 7};
	struct kvdex_cm_rej rej;
	char host[64];
	const char *colon = strrchr(raddr, ':');
	int code = -1;

	snprintf(host, sizeof(host), "%.*s", (int)(colon - raddr - 5), raddr + 5);
	cr_assert(eq(i32, getaddrinfo(host, colon + 1, NULL, &ai), 0));
	r.ch = rdma_create_event_channel();
	cr_assert_not_null(r.ch);
	cr_assert(eq(i32, rdma_create_id(r.ch, &r.id, NULL, RDMA_PS_TCP), 0));
	cr_assert(eq(i32, rdma_resolve_addr(r.id, NULL, ai->ai_addr, 2000), 0));
	freeaddrinfo(ai);
	ev = raw_event(&r, 5000);
	cr_assert(eq(i32, ev->event, RDMA_CM_EVENT_ADDR_RESOLVED));
	rdma_ack_cm_event(ev);
	cr_assert(eq(i32, rdma_resolve_route(r.id, 2000), 0));
	ev = raw_event(&r, 5000);
	cr_assert(eq(i32, ev->event, RDMA_CM_EVENT_ROUTE_RESOLVED));
	rdma_ack_cm_event(ev);
	r.pd = ibv_alloc_pd(r.id->verbs);
	r.cq = ibv_create_cq(r.id->verbs, 4, NULL, NULL, 0);
	cr_assert(r.pd != NULL && r.cq != NULL);
	qa.send_cq = qa.recv_cq = r.cq;
	cr_assert(eq(i32, rdma_create_qp(r.id, r.pd, &qa), 0));
	cr_assert(eq(i32, rdma_connect(r.id, &p), 0));
	ev = raw_event(&r, 10000);
	if (ev->event == RDMA_CM_EVENT_REJECTED &&
	    kvdex_cm_rej_find(ev->param.conn.private_data, ev->param.conn.private_data_len, &rej) ==
		    0) {
		code = rej.code;
	} else if (ev->event == RDMA_CM_EVENT_ESTABLISHED) {
		code = -2;
	}
	rdma_ack_cm_event(ev);
	if (code == -2) {
		rdma_disconnect(r.id);
	}
	rdma_destroy_qp(r.id);
	ibv_destroy_cq(r.cq);
	ibv_dealloc_pd(r.pd);
	rdma_destroy_id(r.id);
	rdma_destroy_event_channel(r.ch);
	return code;
}

Test(verbs, bad_connect)
{
	struct h_server s;
	char raddr[128];
	struct kvdex_client *c = NULL;
	struct kvdex_cm_req req = {
		.magic = KVDEX_CM_MAGIC,
		.protocol_version = KVDEX_PROTOCOL_VERSION,
		.recv_depth = KVDEX_VERBS_RECV_DEPTH,
		.frag_size = KVDEX_VERBS_FRAG_SIZE,
	};
	uint8_t junk[32] = {1, 2, 3};
	int rc;

	vt_server(&s, "0", "0", H_ARGS("--auth-token", "sesame"));
	vt_rdma_addr(&s, raddr, sizeof(raddr));

	/* 4a: wrong protocol version (right token). */
	kvdex_verbs_token_digest("sesame", req.token_digest);
	req.protocol_version = KVDEX_PROTOCOL_VERSION + 1;
	cr_assert(eq(i32, raw_connect(raddr, &req, sizeof(req)), KVDEX__CODE__BAD_VERSION));
	/* 4b: wrong token digest. */
	req.protocol_version = KVDEX_PROTOCOL_VERSION;
	kvdex_verbs_token_digest("open", req.token_digest);
	cr_assert(eq(i32, raw_connect(raddr, &req, sizeof(req)), KVDEX__CODE__BAD_AUTH));
	/* 4c: no kvdex data at all. */
	cr_assert(eq(i32, raw_connect(raddr, junk, sizeof(junk)), KVDEX__CODE__MALFORMED));
	/* 4d: the library reports a bad token as -EACCES, before any Hello. */
	rc = vt_client_try(raddr, "wrong", &c);
	cr_assert(eq(i32, rc, -EACCES), "%s", strerror(-rc));
	/* 4e: the right ones get in. */
	rc = vt_client_try(raddr, "sesame", &c);
	cr_assert(eq(i32, rc, 0), "%s", strerror(-rc));
	cr_assert(eq(u64, h_stat1(c, 0, "rdma_conns_rejected"), 4));
	cr_assert(eq(u64, h_stat1(c, 0, "bad_version"), 1));
	cr_assert(eq(u64, h_stat1(c, 0, "bad_auth"), 2));
	cr_assert(eq(u64, h_stat1(c, 0, "rdma_conns_accepted"), 1));
	cr_assert(ge(u64, h_stat1(c, 0, "rdma_cm_events"), 6));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* ---- 5, 6: readers racing a writer -------------------------------------------- */

struct reader_report {
	uint64_t lookups;
	uint64_t wrong;
	uint64_t errors;
	uint64_t retries;
	int first_err;
};

/* Look up `keys` (held by worker 7 in GPU, never changed) until stop_fd is
 * readable or `count` lookups were done (0: no limit); each answer must be
 * exactly n blocks for worker 7. */
static void
reader_child(const char *raddr, const uint64_t *keys, size_t n, uint64_t count, int stop_fd,
	     int out_fd)
{
	struct kvdex_client *c = NULL;
	struct kvdex_ns_desc d = {.model = NS_MODEL, .block_size = 16, .hash_scheme = "opaque"};
	struct kvdex_holding rows[8];
	struct kvdex_lookup_result r;
	struct reader_report rep = {0};
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};
	uint32_t ns;

	child_client(raddr, &c, &d, &ns);
	bool debug = getenv("KVDEX_TEST_DEBUG") != NULL;
	int64_t next_print = h_now_ms() + 2000;

	while ((count == 0 || rep.lookups < count) &&
	       ((rep.lookups & 15) != 0 || poll(&p, 1, 0) == 0)) {
		if (debug && h_now_ms() > next_print) {
			fprintf(stderr,
				"reader: %llu lookups %llu retries %llu errors (%d) %llu wrong\n",
				(unsigned long long)rep.lookups, (unsigned long long)rep.retries,
				(unsigned long long)rep.errors, rep.first_err,
				(unsigned long long)rep.wrong);
			next_print += 2000;
		}
		const struct kvdex_holding *h = NULL;
		int rc;

		memset(&r, 0, sizeof(r));
		r.holdings = rows;
		r.cap = 8;
		rc = kvdex_lookup(c, ns, keys, n, 0, &r);
		rep.lookups++;
		rep.retries += r.retries;
		if (rc != 0) {
			rep.errors++;
			if (rep.first_err == 0) {
				rep.first_err = rc;
			}
			continue;
		}
		for (uint32_t i = 0; i < r.nholdings; i++) {
			if (rows[i].worker_id == 7) {
				h = &rows[i];
			}
		}
		if (h == NULL || h->matched != n || h->tier_blocks[KVDEX_GPU] != n) {
			rep.wrong++;
		}
	}
	if (write(out_fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
		_exit(4);
	}
	kvdex_client_destroy(c);
	_exit(0);
}

/* keys = h_keys(n, base) */
static pid_t
start_reader(const char *raddr, uint64_t base, size_t n, uint64_t count, int *stop_w, int *out_r)
{
	char b[24], nn[24], cn[24], sf[24], of[24];
	int sp[2], op[2];
	pid_t pid;

	cr_assert(eq(i32, pipe(sp), 0));
	cr_assert(eq(i32, pipe(op), 0));
	pid = spawn_child(H_ARGS("reader", raddr, fmt_u64(b, base), fmt_u64(nn, n),
				 fmt_u64(cn, count), fmt_u64(sf, (uint64_t)sp[0]),
				 fmt_u64(of, (uint64_t)op[1])),
			  sp[0], op[1]);
	close(sp[0]);
	close(op[1]);
	*stop_w = sp[1];
	*out_r = op[0];
	return pid;
}

static void
stop_reader(pid_t pid, int stop_w, int out_r, struct reader_report *rep)
{
	int status;
	ssize_t n;

	close(stop_w);
	n = read(out_r, rep, sizeof(*rep));
	close(out_r);
	cr_assert(eq(i32, waitpid(pid, &status, 0), pid));
	cr_assert(eq(i64, n, (int64_t)sizeof(*rep)), "reader reported nothing, status %#x", status);
	cr_assert(eq(i32, status, 0), "reader exit status %#x", status);
}

/* Server log lines "re-registered ... mr_gen N": the highest N. */
static unsigned
max_mr_gen(const struct h_server *s)
{
	FILE *f = fopen(s->log_path, "r");
	char line[1024];
	unsigned best = 1;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		const char *p = strstr(line, "mr_gen ");

		if (strstr(line, "re-registered") != NULL && p != NULL &&
		    (unsigned)atoi(p + 7) > best) {
			best = (unsigned)atoi(p + 7);
		}
	}
	fclose(f);
	return best;
}

/* 5 */
Test(verbs, region_growth)
{
	struct h_server s;
	char raddr[128];
	struct kvdex_client *c;
	static uint64_t keys[32], more[1000];
	struct reader_report rep;
	uint64_t seq = 1, region0;
	int stop_w, out_r;
	uint32_t ns;
	pid_t pid;

	vt_server(&s, "0", "0", H_ARGS("--capacity-blocks", "64"));
	vt_rdma_addr(&s, raddr, sizeof(raddr));
	c = vt_client(raddr);
	ns = h_ns(c, NS_MODEL);
	h_worker(c, 7, 1);
	h_worker(c, 8, 1);
	h_keys(keys, 32, 5);
	vt_store(c, ns, 7, &seq, keys, 32, 32);
	region0 = h_stat1(c, 0, "region_bytes");
	pid = start_reader(raddr, 5, 32, 0, &stop_w, &out_r);
	/* Worker 8 stores new blocks until the region grew twice over. */
	for (uint64_t b = 100; b < 400 && h_stat1(c, 0, "region_bytes") < 3 * region0; b++) {
		h_keys(more, 1000, b);
		h_store_chain(c, ns, 8, 0, 1, b, more, 1000, KVDEX_HOST);
	}
	h_sleep_ms(300); /* the reader runs against the final MR too */
	stop_reader(pid, stop_w, out_r, &rep);
	printf("region_growth: region %llu -> %llu bytes, resizes %llu, mr_gen %u, "
	       "%llu lookups, %llu retries, %llu errors (first %d)\n",
	       (unsigned long long)region0, (unsigned long long)h_stat1(c, 0, "region_bytes"),
	       (unsigned long long)h_stat1(c, 0, "resizes"), max_mr_gen(&s),
	       (unsigned long long)rep.lookups, (unsigned long long)rep.retries,
	       (unsigned long long)rep.errors, rep.first_err);
	cr_assert(ge(u64, h_stat1(c, 0, "region_bytes"), 3 * region0), "region did not grow");
	cr_assert(ge(u32, max_mr_gen(&s), 2), "region MR never re-registered");
	cr_assert(gt(u64, rep.lookups, 100));
	cr_assert(eq(u64, rep.wrong, 0), "wrong answers");
	cr_assert(eq(u64, rep.errors, 0), "lookup errors (first %d)", rep.first_err);
	cr_assert(eq(u64, h_stat1(c, 0, "rdma_qp_errors"), 0));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* The publisher of case 6: rewrites the chains of worker 8 (store / remove)
 * over the reader's keys until killed. */
static void
rewriter_child(const char *raddr, const uint64_t *keys, size_t n)
{
	struct kvdex_client *c = NULL;
	struct kvdex_ns_desc d = {.model = NS_MODEL, .block_size = 16, .hash_scheme = "opaque"};
	struct kvdex_event ev[64];
	struct kvdex_publish_hdr hdr = {.worker_id = 8, .incarnation = 1};
	uint32_t ns;

	child_client(raddr, &c, &d, &ns);
	for (uint64_t seq = 1;; seq++) {
		for (size_t i = 0; i < n; i++) {
			ev[i] = (seq & 1) ? h_ev_store(ns, keys[i], (unsigned)(seq >> 1) % 4)
					  : h_ev_remove(ns, keys[i], (unsigned)(seq >> 1) % 4);
		}
		hdr.seq = seq;
		kvdex_publish(c, &hdr, ev, n, NULL);
		/* Still hundreds of rewrites a second, but the VM's two CPUs
		 * must also run the reader, the server and Soft-RoCE. */
		usleep(1000);
	}
}

/* 6 */
Test(verbs, torn_stress)
{
	struct h_server s;
	char raddr[128];
	struct kvdex_client *c;
	uint64_t keys[16];
	struct reader_report rep;
	uint64_t seq = 1, want = 100000;
	int stop_w, out_r, status;
	uint32_t ns;
	pid_t rpid, wpid;
	const char *env = getenv("KVDEX_TORN_LOOKUPS");

	if (env != NULL) {
		want = strtoull(env, NULL, 10);
	}
	vt_server(&s, "0", "0", NULL);
	vt_rdma_addr(&s, raddr, sizeof(raddr));
	c = vt_client(raddr);
	ns = h_ns(c, NS_MODEL);
	h_worker(c, 7, 1);
	h_worker(c, 8, 1);
	h_keys(keys, 16, 6);
	vt_store(c, ns, 7, &seq, keys, 16, 16);
	wpid = spawn_child(H_ARGS("rewriter", raddr, "6", "16"), -1, -1);
	rpid = start_reader(raddr, 6, 16, want, &stop_w, &out_r);
	/* The reader reports once it did `want` lookups (or died). */
	{
		struct pollfd p = {.fd = out_r, .events = POLLIN};

		cr_assert(gt(i32, poll(&p, 1, 420000), 0), "reader still running after 420 s");
	}
	stop_reader(rpid, stop_w, out_r, &rep);
	kill(wpid, SIGKILL);
	waitpid(wpid, &status, 0);
	printf("torn_stress: %llu lookups, %llu retries (torn/stale images re-read), "
	       "%llu errors (first %d), %llu wrong, publisher batches %llu\n",
	       (unsigned long long)rep.lookups, (unsigned long long)rep.retries,
	       (unsigned long long)rep.errors, rep.first_err, (unsigned long long)rep.wrong,
	       (unsigned long long)h_stat1(c, 0, "publish_batches"));
	cr_assert(eq(u64, rep.wrong, 0), "wrong answers");
	cr_assert(eq(u64, rep.errors, 0), "lookup errors (first %d)", rep.first_err);
	cr_assert(ge(u64, rep.lookups, want), "only %llu lookups", (unsigned long long)rep.lookups);
	cr_assert(gt(u64, h_stat1(c, 0, "publish_batches"), 100), "the publisher did not run");
	cr_assert(gt(u64, rep.retries, 0), "no torn or stale image was ever seen: no race tested");
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

/* "--child KIND RADDR BASE N [...]": a helper process (see spawn_child). */
static int
child_main(int argc, char *argv[])
{
	static uint64_t keys[1024];
	size_t n;

	if (argc < 6) {
		return 2;
	}
	n = strtoull(argv[5], NULL, 10);
	if (n > 1024) {
		return 2;
	}
	h_keys(keys, n, strtoull(argv[4], NULL, 10));
	if (strcmp(argv[2], "loop") == 0 && argc >= 7) {
		lookup_loop_child(argv[3], keys, n, atoi(argv[6]));
	} else if (strcmp(argv[2], "reader") == 0 && argc >= 9) {
		reader_child(argv[3], keys, n, strtoull(argv[6], NULL, 10), atoi(argv[7]),
			     atoi(argv[8]));
	} else if (strcmp(argv[2], "rewriter") == 0) {
		rewriter_child(argv[3], keys, n);
	}
	return 2;
}

int
main(int argc, char *argv[])
{
	struct criterion_test_set *tests;
	int rc = 0;

	if (argc > 1 && strcmp(argv[1], "--child") == 0) {
		return child_main(argc, argv);
	}
	if (vt_ip() == NULL || !kvdex_verbs_have_device()) {
		printf("no RDMA device or no address ($RXE_IP / $KVDEX_RDMA_IP): skipped\n");
		return 77;
	}
	tests = criterion_initialize();
	if (criterion_handle_args(argc, argv, true)) {
		rc = !criterion_run_all_tests(tests);
	}
	criterion_finalize(tests);
	return rc;
}

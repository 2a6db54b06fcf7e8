/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Several parties at once: two clients of one server (in one process, over
 * different transports, and in two processes), and one chain whose blocks
 * live on two servers (rendezvous placement by server name).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(multi, .init = h_init, .fini = h_cleanup, .timeout = 40);

static enum kvdex_transport
other(enum kvdex_transport t)
{
	return t == KVDEX_TRANSPORT_SHM ? KVDEX_TRANSPORT_TCP : KVDEX_TRANSPORT_SHM;
}

static void
expect_lookup(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, size_t n,
	      struct h_lookup *l)
{
	int rc = h_lookup(c, ns, keys, n, 0, l);

	cr_assert(eq(i32, rc, 0), "lookup: %s (%s)", strerror(-rc), kvdex_client_last_error(c));
}

/* 1. Two clients in one process, one per transport: what one publishes, the
 * other finds, both ways. Namespace handles are per client but name the same
 * namespace. */
static void
two_clients(enum kvdex_transport t)
{
	struct h_server s;
	struct kvdex_client *a, *b;
	uint64_t keys[16];
	struct h_lookup l;
	uint32_t nsa, nsb;

	h_server_start(&s, NULL);
	a = h_client1(&s, t);
	b = h_client1(&s, other(t));
	nsa = h_ns(a, "shared");
	nsb = h_ns(b, "shared");
	h_worker(a, 1, 1);
	h_worker(b, 2, 1);
	h_keys(keys, 16, 11);
	h_store_chain(a, nsa, 1, 0, 1, 1, keys, 16, KVDEX_GPU);
	expect_lookup(b, nsb, keys, 16, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 16), "client b does not see a's blocks");

	h_store_chain(b, nsb, 2, 0, 1, 1, keys, 5, KVDEX_DISK);
	expect_lookup(a, nsa, keys, 16, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 16));
	cr_assert(eq(u32, h_matched(&l, 2, 0), 5));
	cr_assert(eq(u32, h_find(&l, 2, 0)->tier_blocks[KVDEX_DISK], 5));
	cr_assert(ge(u64, h_stat1(a, 0, "conns_active"), 2));
	kvdex_client_destroy(a);
	kvdex_client_destroy(b);
	h_server_stop_ok(&s);
}

Test(multi, two_clients_shm_tcp)
{
	two_clients(KVDEX_TRANSPORT_SHM);
}

Test(multi, two_clients_tcp_shm)
{
	two_clients(KVDEX_TRANSPORT_TCP);
}

/* Child process body: its own client publishes a chain. No Criterion
 * asserts here; the exit code tells the parent what failed. */
static int
child_publish(const struct h_server *s, enum kvdex_transport t, const uint64_t *keys, size_t n)
{
	struct kvdex_client_opts o;
	struct kvdex_client *c = NULL;
	struct kvdex_ns_desc d = {.model = "procs", .block_size = 16, .hash_scheme = "opaque"};
	struct kvdex_publish_hdr h = {.worker_id = 3, .incarnation = 1, .seq = 1};
	struct kvdex_event ev[32];
	uint32_t ns;

	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = h_addr(s, t);
	o.transport = t;
	if (kvdex_client_create(&o, &c) != 0) {
		return 10;
	}
	if (kvdex_ns_register(c, &d, &ns) != 0) {
		return 11;
	}
	if (kvdex_worker_register(c, 3, "child:1", 1) != 0) {
		return 12;
	}
	for (size_t i = 0; i < n; i++) {
		memset(&ev[i], 0, sizeof(ev[i]));
		ev[i].type = KVDEX_EV_STORED;
		ev[i].ns = ns;
		ev[i].key = keys[i];
	}
	if (kvdex_publish(c, &h, ev, n, NULL) != 0) {
		return 13;
	}
	kvdex_client_destroy(c);
	return 0;
}

/* 2. Two processes: a child publishes through its own client, the parent
 * (already connected before the child ran) finds the blocks. */
static void
two_processes(enum kvdex_transport t)
{
	struct h_server s;
	struct kvdex_client *c;
	uint64_t keys[32];
	struct h_lookup l;
	int status = -1;
	uint32_t ns;
	pid_t pid;
	bool ok;

	h_server_start(&s, NULL);
	c = h_client1(&s, t);
	ns = h_ns(c, "procs");
	h_keys(keys, 32, 12);
	fflush(NULL);
	pid = fork();
	cr_assert(ge(i32, pid, 0));
	if (pid == 0) {
		_exit(child_publish(&s, other(t), keys, 32));
	}
	cr_assert(eq(i32, waitpid(pid, &status, 0), pid));
	ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	cr_assert(ok, "child failed: status %#x", status);
	expect_lookup(c, ns, keys, 32, &l);
	cr_assert(eq(u32, h_matched(&l, 3, 0), 32));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

Test(multi, two_processes_shm)
{
	two_processes(KVDEX_TRANSPORT_SHM);
}

Test(multi, two_processes_tcp)
{
	two_processes(KVDEX_TRANSPORT_TCP);
}

/*
 * 3. A chain spread over two servers: each server holds part of it (blocks
 * counters), the parts add up to the chain, and a lookup matches the whole
 * chain, also across several lookup batches. Every server sees every batch
 * header. A client listing the servers in the other order places keys the
 * same way (placement is by name).
 */
static void
two_servers(enum kvdex_transport t)
{
	enum { N = 150 };
	struct h_server sa, sb;
	struct kvdex_client *c, *c2;
	char list[2 * PATH_MAX + 32], rlist[2 * PATH_MAX + 32];
	uint64_t keys[N];
	struct h_lookup l;
	uint64_t ba, bb;
	uint32_t ns, ns2;

	h_server_start(&sa, H_ARGS("--server-id", "a"));
	h_server_start(&sb, H_ARGS("--server-id", "b"));
	snprintf(list, sizeof(list), "a=%s,b=%s", h_addr(&sa, t), h_addr(&sb, t));
	snprintf(rlist, sizeof(rlist), "b=%s,a=%s", h_addr(&sb, t), h_addr(&sa, t));
	c = h_client(list, t, NULL);
	cr_assert(eq(u32, kvdex_client_nservers(c), 2));
	cr_assert(eq(str, (char *)kvdex_client_server_name(c, 0), "a"));
	cr_assert(eq(str, (char *)kvdex_client_server_name(c, 1), "b"));
	ns = h_ns(c, "spread");
	h_worker(c, 1, 1);
	h_worker(c, 2, 1);
	h_keys(keys, N, 13);
	h_store_chain(c, ns, 1, 0, 1, 1, keys, 100, KVDEX_GPU);
	h_store_chain(c, ns, 1, 0, 1, 2, keys + 100, N - 100, KVDEX_GPU);
	h_store_chain(c, ns, 2, 0, 1, 1, keys, 70, KVDEX_HOST);

	ba = h_stat1(c, 0, "blocks");
	bb = h_stat1(c, 1, "blocks");
	cr_log_info("server a holds %llu blocks, b %llu", (unsigned long long)ba,
		    (unsigned long long)bb);
	cr_assert(gt(u64, ba, 0), "server a holds no part of the chain");
	cr_assert(gt(u64, bb, 0), "server b holds no part of the chain");
	cr_assert(eq(u64, ba + bb, N));
	cr_assert(eq(u64, h_stat1(c, 0, "publish_batches"), 3));
	cr_assert(eq(u64, h_stat1(c, 1, "publish_batches"), 3));
	cr_assert(eq(u64, h_stat1(c, 0, "seq_gaps") + h_stat1(c, 1, "seq_gaps"), 0));
	cr_assert(eq(u64, h_stat1(c, 0, "slots_used"), 2), "workers register on every server");
	cr_assert(eq(u64, h_stat1(c, 1, "slots_used"), 2));

	expect_lookup(c, ns, keys, N, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), N));
	cr_assert(eq(u32, h_matched(&l, 2, 0), 70));
	cr_assert(eq(u32, l.res.longest, N));
	cr_assert(ge(u32, l.res.round_trips, 3), "150 blocks need 3 batches of 64");

	c2 = h_client(rlist, t, NULL);
	ns2 = h_ns(c2, "spread");
	expect_lookup(c2, ns2, keys, N, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), N), "server order changed the placement");

	/* Clearing goes to every server. */
	{
		struct kvdex_event ev = h_ev_clear(0);
		struct kvdex_publish_result res;

		cr_assert(eq(i32, h_publish(c2, 1, 0, 1, 3, &ev, 1, &res), 0));
		cr_assert(not(res.gap));
	}
	expect_lookup(c, ns, keys, N, &l);
	cr_assert(eq(u32, h_matched(&l, 1, 0), 0));
	cr_assert(eq(u32, h_matched(&l, 2, 0), 70));
	cr_assert(eq(u64, h_stat1(c, 0, "clears"), 1));
	cr_assert(eq(u64, h_stat1(c, 1, "clears"), 1));

	kvdex_client_destroy(c);
	kvdex_client_destroy(c2);
	h_server_stop_ok(&sa);
	h_server_stop_ok(&sb);
}

Test(multi, two_servers_shm)
{
	two_servers(KVDEX_TRANSPORT_SHM);
}

Test(multi, two_servers_tcp)
{
	two_servers(KVDEX_TRANSPORT_TCP);
}

/* 4. A client cannot be created against a server that is not there. */
Test(multi, unreachable_server)
{
	struct h_server s;
	struct kvdex_client *c = NULL;
	char addr[PATH_MAX + 8];
	int rc;

	h_server_start(&s, NULL);
	snprintf(addr, sizeof(addr), "%s", h_addr(&s, KVDEX_TRANSPORT_TCP));
	h_server_stop_ok(&s);
	rc = h_client_try(addr, KVDEX_TRANSPORT_TCP, NULL, &c);
	cr_assert(eq(i32, rc, -ECONNREFUSED), "client to a stopped server: %d", rc);
	cr_assert_null(c);
}

/* Child body: publish `nbatches` batches that each remove the previous
 * batch's keys and store new ones, so buckets keep being rewritten. */
static int
child_churn(const char *addr, enum kvdex_transport t, unsigned nbatches)
{
	struct kvdex_client_opts o;
	struct kvdex_client *c = NULL;
	struct kvdex_ns_desc d = {.model = "churn", .block_size = 16, .hash_scheme = "opaque"};
	struct kvdex_event ev[64];
	uint64_t prev[32], cur[32];
	uint32_t ns;

	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = addr;
	o.transport = t;
	if (kvdex_client_create(&o, &c) != 0 || kvdex_ns_register(c, &d, &ns) != 0 ||
	    kvdex_worker_register(c, 2, "churn:1", 1) != 0) {
		return 20;
	}
	for (unsigned b = 0; b < nbatches; b++) {
		struct kvdex_publish_hdr h = {.worker_id = 2, .incarnation = 1, .seq = b + 1};
		size_t n = 0;

		h_keys(cur, 32, 100000 + b);
		for (size_t i = 0; b > 0 && i < 32; i++) {
			ev[n] = (struct kvdex_event){
				.type = KVDEX_EV_REMOVED, .ns = ns, .key = prev[i]};
			n++;
		}
		for (size_t i = 0; i < 32; i++) {
			ev[n] = (struct kvdex_event){
				.type = KVDEX_EV_STORED, .ns = ns, .key = cur[i]};
			n++;
		}
		if (kvdex_publish(c, &h, ev, n, NULL) != 0) {
			return 21;
		}
		memcpy(prev, cur, sizeof(prev));
	}
	kvdex_client_destroy(c);
	return 0;
}

/*
 * 5. Lookups while another process keeps rewriting buckets (the same
 * namespace, so its keys share buckets with the chain): every lookup
 * succeeds and sees the whole stable chain, whatever it had to re-read.
 */
static void
concurrent_publish_lookup(enum kvdex_transport t)
{
	struct h_server s;
	struct kvdex_client *c;
	unsigned long lookups = 0, retries = 0;
	uint64_t keys[64];
	struct h_lookup l;
	int status = -1;
	uint32_t ns;
	pid_t pid;
	bool ok;

	h_server_start(&s, H_ARGS("--capacity-blocks", "16384"));
	c = h_client1(&s, t);
	ns = h_ns(c, "churn");
	h_worker(c, 1, 1);
	h_keys(keys, 64, 14);
	h_store_chain(c, ns, 1, 0, 1, 1, keys, 64, KVDEX_GPU);
	fflush(NULL);
	pid = fork();
	cr_assert(ge(i32, pid, 0));
	if (pid == 0) {
		_exit(child_churn(h_addr(&s, KVDEX_TRANSPORT_TCP), KVDEX_TRANSPORT_TCP, 1500));
	}
	while (waitpid(pid, &status, WNOHANG) == 0) {
		int rc = h_lookup(c, ns, keys, 64, 0, &l);

		cr_assert(eq(i32, rc, 0), "lookup %lu under churn: %s", lookups, strerror(-rc));
		cr_assert(eq(u32, h_matched(&l, 1, 0), 64), "lookup %lu saw %u of 64 blocks",
			  lookups, h_matched(&l, 1, 0));
		lookups++;
		retries += l.res.retries;
	}
	ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	cr_assert(ok, "churn child failed: status %#x", status);
	cr_log_info("%s: %lu lookups under churn, %lu re-reads", h_transport_name(t), lookups,
		    retries);
	cr_assert(gt(u64, lookups, 0));
	cr_assert(eq(u64, h_stat1(c, 0, "publish_batches"), 1501));
	cr_assert(eq(u64, h_stat1(c, 0, "blocks"), 64 + 32));
	kvdex_client_destroy(c);
	h_server_stop_ok(&s);
}

Test(multi, concurrent_publish_lookup_shm)
{
	concurrent_publish_lookup(KVDEX_TRANSPORT_SHM);
}

Test(multi, concurrent_publish_lookup_tcp)
{
	concurrent_publish_lookup(KVDEX_TRANSPORT_TCP);
}

/* 6. SIGINT shuts down as cleanly as SIGTERM (exit 0, socket removed). */
Test(multi, sigint_clean_exit)
{
	struct h_server s;
	char sock[sizeof(s.unix_path)];
	int st;

	h_server_start(&s, NULL);
	memcpy(sock, s.unix_path, sizeof(sock));
	st = h_server_signal_wait(&s, SIGINT);
	cr_assert(eq(i32, st, 0), "exit status after SIGINT: %#x", st);
	cr_assert(ne(i32, access(sock, F_OK), 0), "unix socket left behind");
}

static int
exit_code(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* 7. Usage and config errors exit 2 and name the problem (file:line). */
Test(multi, usage_errors)
{
	char out[4096], conf[] = "/tmp/kvdex-it-conf-XXXXXX";
	static const char text[] = "# comment\nmax-conns = 5\nno-such-key = 1\n";
	int fd, st;

	st = h_run_kvdexd(H_ARGS("--no-such-option"), out, sizeof(out));
	cr_assert(eq(i32, exit_code(st), 2), "unknown option: %s", out);
	st = h_run_kvdexd(
		H_ARGS("--bucket-size", "100", "--listen-tcp", "none", "--listen-unix", "none"),
		out, sizeof(out));
	cr_assert(eq(i32, exit_code(st), 2), "bad bucket size: %s", out);

	fd = mkstemp(conf);
	cr_assert(ge(i32, fd, 0));
	cr_assert(eq(i64, write(fd, text, sizeof(text) - 1), (int64_t)sizeof(text) - 1));
	close(fd);
	st = h_run_kvdexd(H_ARGS("--config", conf), out, sizeof(out));
	unlink(conf);
	cr_assert(eq(i32, exit_code(st), 2), "bad config key: %s", out);
	{
		char where[sizeof(conf) + 8];

		snprintf(where, sizeof(where), "%s:3", conf);
		cr_assert(not(eq(ptr, strstr(out, where), NULL)), "no %s in: %s", where, out);
	}
}

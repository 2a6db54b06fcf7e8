/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration harness (harness.h): process management for kvdexd, libkvdex
 * conveniences, stats lookups and raw framing.
 *
 * Invariants: every pid in `servers` is a child we started and have not
 * reaped; h_cleanup() reaps them all. Raw sockets never raise SIGPIPE
 * (MSG_NOSIGNAL), so a server closing on us shows up as an error code.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVERS 8
#define READY_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 10000

static struct h_server *servers[MAX_SERVERS];

const char *const h_error_counters[] = {
	"bad_frames",	      "oversize_frames",
	"bad_protobuf",	      "bad_version",
	"bad_auth",	      "not_ready",
	"disconnect_mid_msg", "oversize_batches",
	"unknown_namespace",  "unknown_worker",
	"stale_incarnation",  "malformed_requests",
	"bad_reads",	      NULL,
};

/* strlcpy: copy with truncation (paths here are short by construction). */
static void
copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

int64_t
h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
h_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* ---- Servers ------------------------------------------------------------------ */

static const char *
kvdexd_path(void)
{
	static char buf[PATH_MAX];
	const char *p = getenv("KVDEX_KVDEXD");

	if (p != NULL && *p != '\0') {
		return p;
	}
	p = getenv("KVDEX_BUILD_ROOT");
	snprintf(buf, sizeof(buf), "%s/server/kvdexd", p != NULL ? p : "build");
	return buf;
}

static bool
extra_has(const char *const *extra, const char *opt)
{
	for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
		if (strcmp(extra[i], opt) == 0) {
			return true;
		}
	}
	return false;
}

static void
dump_log(const struct h_server *s, const char *why)
{
	char line[512];
	FILE *f = fopen(s->log_path, "r");

	fprintf(stderr, "---- kvdexd log (%s): %s ----\n", why, s->log_path);
	if (f == NULL) {
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		fputs(line, stderr);
	}
	fclose(f);
	fprintf(stderr, "---- end of kvdexd log ----\n");
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void
remove_dir(const char *dir)
{
	if (dir[0] != '\0' && getenv("KVDEX_TEST_KEEP") == NULL) {
		nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	}
}

static void
track(struct h_server *s, bool add)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (add && servers[i] == NULL) {
			servers[i] = s;
			return;
		}
		if (!add && servers[i] == s) {
			servers[i] = NULL;
			return;
		}
	}
	cr_assert(not(add), "too many servers in one test");
}

/* Build argv: binary, harness defaults not overridden by extra, extra. */
static void
build_argv(const struct h_server *s, const char *const *extra, const char **argv, size_t cap,
	   char *ready, char *sock)
{
	static const char *const defaults[][2] = {
		{"--listen-tcp", "127.0.0.1:0"}, {"--listen-unix", NULL},
		{"--ready-file", NULL},		 {"--capacity-blocks", "4096"},
		{"--max-region-mb", "64"},	 {"--max-workers", "256"},
		{"--log-level", "info"},
	};
	size_t n = 0;

	argv[n++] = kvdexd_path();
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (extra_has(extra, defaults[i][0])) {
			continue;
		}
		argv[n++] = defaults[i][0];
		if (strcmp(defaults[i][0], "--listen-unix") == 0) {
			argv[n++] = sock;
		} else if (strcmp(defaults[i][0], "--ready-file") == 0) {
			argv[n++] = ready;
		} else {
			argv[n++] = defaults[i][1];
		}
	}
	for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
		cr_assert(lt(sz, n, cap - 1));
		argv[n++] = extra[i];
	}
	argv[n] = NULL;
	(void)s;
}

static void
exec_server(const char *const *argv, const char *log_path)
{
	int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	/* Die with the test process, whatever kills it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	execv(argv[0], (char *const *)argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Parse "pid=..\ntcp=host:port\nunix=path\n". 0 when complete. */
static int
parse_ready(struct h_server *s, const char *path)
{
	char line[PATH_MAX + 16];
	bool have_pid = false;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		return -errno;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "pid=", 4) == 0) {
			have_pid = atol(line + 4) == (long)s->pid;
		} else if (strncmp(line, "tcp=", 4) == 0) {
			char *colon = strrchr(line + 4, ':');

			if (colon != NULL) {
				*colon = '\0';
				copy_str(s->tcp_host, sizeof(s->tcp_host), line + 4);
				s->tcp_port = (uint16_t)atoi(colon + 1);
			}
		} else if (strncmp(line, "unix=", 5) == 0) {
			copy_str(s->unix_path, sizeof(s->unix_path), line + 5);
		}
	}
	fclose(f);
	return have_pid ? 0 : -EAGAIN;
}

void
h_server_start(struct h_server *s, const char *const *extra)
{
	char ready[PATH_MAX + 16], sock[PATH_MAX + 16];
	const char *argv[64];
	int64_t deadline;
	int status;

	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/kvdex-it-XXXXXX");
	cr_assert_not_null(mkdtemp(s->dir), "mkdtemp: %s", strerror(errno));
	snprintf(ready, sizeof(ready), "%s/ready", s->dir);
	snprintf(sock, sizeof(sock), "%s/kvdexd.sock", s->dir);
	snprintf(s->log_path, sizeof(s->log_path), "%s/kvdexd.log", s->dir);
	build_argv(s, extra, argv, sizeof(argv) / sizeof(argv[0]), ready, sock);
	if (extra_has(extra, "--auth-token")) {
		for (size_t i = 0; extra[i] != NULL; i++) {
			if (strcmp(extra[i], "--auth-token") == 0) {
				s->auth_token = extra[i + 1];
			}
		}
	}

	s->pid = fork();
	cr_assert(ge(i32, s->pid, 0), "fork: %s", strerror(errno));
	if (s->pid == 0) {
		exec_server(argv, s->log_path);
	}
	track(s, true);

	deadline = h_now_ms() + READY_TIMEOUT_MS;
	while (parse_ready(s, ready) != 0) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = 0;
			track(s, false);
			dump_log(s, "exited before ready");
			cr_fatal("kvdexd (%s) exited before ready: status %#x", argv[0], status);
		}
		if (h_now_ms() > deadline) {
			dump_log(s, "not ready");
			cr_fatal("kvdexd not ready after %d ms", READY_TIMEOUT_MS);
		}
		h_sleep_ms(5);
	}
	snprintf(s->addr_unix, sizeof(s->addr_unix), "unix:%s", s->unix_path);
	snprintf(s->addr_tcp, sizeof(s->addr_tcp), "%s:%u", s->tcp_host, s->tcp_port);
}

int
h_server_stop(struct h_server *s)
{
	return h_server_signal_wait(s, SIGTERM);
}

int
h_server_signal_wait(struct h_server *s, int sig)
{
	int64_t deadline = h_now_ms() + STOP_TIMEOUT_MS;
	int status = -1;

	if (s->pid <= 0) {
		return -1;
	}
	kill(s->pid, sig);
	for (;;) {
		pid_t r = waitpid(s->pid, &status, WNOHANG);

		if (r == s->pid || (r < 0 && errno != EINTR)) {
			break;
		}
		if (h_now_ms() > deadline) {
			fprintf(stderr, "kvdexd %d ignored signal %d for %d ms: SIGKILL\n", s->pid,
				sig, STOP_TIMEOUT_MS);
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &status, 0);
			status = -1;
			break;
		}
		h_sleep_ms(5);
	}
	if (status != 0) {
		dump_log(s, "unclean exit");
	}
	s->pid = 0;
	track(s, false);
	remove_dir(s->dir);
	return status;
}

void
h_server_stop_ok(struct h_server *s)
{
	char sock[sizeof(s->unix_path)];
	int st;

	copy_str(sock, sizeof(sock), s->unix_path);
	st = h_server_stop(s);
	if (st == 0 && sock[0] != '\0') {
		cr_expect(ne(i32, access(sock, F_OK), 0), "unix socket %s left behind", sock);
	}

	cr_assert(eq(i32, st, 0), "kvdexd exit status %#x (exited %d code %d, signal %d)", st,
		  st >= 0 && WIFEXITED(st), st >= 0 ? WEXITSTATUS(st) : -1,
		  st >= 0 && WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int
h_run_kvdexd(const char *const *args, char *out, size_t cap)
{
	const char *argv[32];
	char path[] = "/tmp/kvdex-it-run-XXXXXX";
	int fd = mkstemp(path);
	size_t n = 0;
	ssize_t got;
	int status = -1;
	pid_t pid;

	cr_assert(ge(i32, fd, 0));
	argv[n++] = kvdexd_path();
	for (size_t i = 0; args[i] != NULL && n < 31; i++) {
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid = fork();
	cr_assert(ge(i32, pid, 0));
	if (pid == 0) {
		exec_server(argv, path);
	}
	cr_assert(eq(i32, waitpid(pid, &status, 0), pid));
	got = pread(fd, out, cap - 1, 0);
	out[got > 0 ? got : 0] = '\0';
	close(fd);
	unlink(path);
	return status;
}

void
h_init(void)
{
	memset(servers, 0, sizeof(servers));
}

void
h_cleanup(void)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		struct h_server *s = servers[i];

		if (s == NULL) {
			continue;
		}
		dump_log(s, "left running by the test");
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		remove_dir(s->dir);
		servers[i] = NULL;
	}
}

const char *
h_addr(const struct h_server *s, enum kvdex_transport t)
{
	return t == KVDEX_TRANSPORT_TCP ? s->addr_tcp : s->addr_unix;
}

const char *
h_transport_name(enum kvdex_transport t)
{
	return t == KVDEX_TRANSPORT_TCP ? "tcp" : t == KVDEX_TRANSPORT_SHM ? "shm" : "auto";
}

/* ---- Clients ------------------------------------------------------------------ */

int
h_client_try(const char *srv, enum kvdex_transport t, const char *token, struct kvdex_client **out)
{
	struct kvdex_client_opts o;

	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = srv;
	o.transport = t;
	o.auth_token = token;
	o.timeout_ms = 5000;
	o.client_name = "integration-test";
	return kvdex_client_create(&o, out);
}

struct kvdex_client *
h_client(const char *srv, enum kvdex_transport t, const char *token)
{
	struct kvdex_client *c = NULL;
	int rc = h_client_try(srv, t, token, &c);

	cr_assert(eq(i32, rc, 0), "kvdex_client_create(%s, %s): %s", srv, h_transport_name(t),
		  strerror(-rc));
	cr_assert_not_null(c);
	for (unsigned i = 0; i < kvdex_client_nservers(c); i++) {
		if (t != KVDEX_TRANSPORT_AUTO) {
			cr_assert(eq(str, (char *)kvdex_client_transport_name(c, i),
				     (char *)h_transport_name(t)));
		}
	}
	return c;
}

struct kvdex_client *
h_client1(const struct h_server *s, enum kvdex_transport t)
{
	return h_client(h_addr(s, t), t, s->auth_token);
}

/* ---- Data ---------------------------------------------------------------------- */

uint32_t
h_ns(struct kvdex_client *c, const char *model)
{
	struct kvdex_ns_desc d = {
		.model = model,
		.block_size = 16,
		.hash_scheme = "opaque",
	};
	uint32_t ns = UINT32_MAX;
	int rc = kvdex_ns_register(c, &d, &ns);

	cr_assert(eq(i32, rc, 0), "ns_register(%s): %s (%s)", model, strerror(-rc),
		  kvdex_client_last_error(c));
	return ns;
}

void
h_worker(struct kvdex_client *c, uint32_t worker_id, uint16_t dp_size)
{
	char addr[64];
	int rc;

	snprintf(addr, sizeof(addr), "10.0.0.%u:8000", worker_id % 250);
	rc = kvdex_worker_register(c, worker_id, addr, dp_size);
	cr_assert(eq(i32, rc, 0), "worker_register(%u): %s (%s)", worker_id, strerror(-rc),
		  kvdex_client_last_error(c));
}

struct kvdex_event
h_ev_store(uint32_t ns, uint64_t key, unsigned tier)
{
	struct kvdex_event e = {
		.type = KVDEX_EV_STORED,
		.tier = (uint8_t)tier,
		.ns = ns,
		.key = key,
	};

	return e;
}

struct kvdex_event
h_ev_spec(uint32_t ns, uint64_t key, unsigned tier, uint32_t ttl_ms)
{
	struct kvdex_event e = h_ev_store(ns, key, tier);

	e.flags = KVDEX_EVF_SPECULATIVE;
	e.spec_ttl_ms = ttl_ms;
	return e;
}

struct kvdex_event
h_ev_fused(uint32_t ns, uint64_t key, unsigned tier)
{
	struct kvdex_event e = h_ev_store(ns, key, tier);

	e.flags = KVDEX_EVF_FUSED;
	return e;
}

struct kvdex_event
h_ev_remove(uint32_t ns, uint64_t key, unsigned tier)
{
	struct kvdex_event e = h_ev_store(ns, key, tier);

	e.type = KVDEX_EV_REMOVED;
	return e;
}

struct kvdex_event
h_ev_clear(uint8_t tier_mask)
{
	struct kvdex_event e = {
		.type = KVDEX_EV_ALL_CLEARED,
		.tier_mask = tier_mask,
	};

	return e;
}

int
h_publish(struct kvdex_client *c, uint32_t worker, uint16_t rank, uint64_t inc, uint64_t seq,
	  const struct kvdex_event *ev, size_t n, struct kvdex_publish_result *res)
{
	struct kvdex_publish_hdr h = {
		.worker_id = worker,
		.dp_rank = rank,
		.incarnation = inc,
		.seq = seq,
	};

	if (res != NULL) {
		memset(res, 0, sizeof(*res));
	}
	return kvdex_publish(c, &h, ev, n, res);
}

void
h_store_chain(struct kvdex_client *c, uint32_t ns, uint32_t worker, uint16_t rank, uint64_t inc,
	      uint64_t seq, const uint64_t *keys, size_t n, unsigned tier)
{
	struct kvdex_event *ev = calloc(n, sizeof(*ev));
	struct kvdex_publish_result res;
	int rc;

	cr_assert_not_null(ev);
	for (size_t i = 0; i < n; i++) {
		ev[i] = h_ev_store(ns, keys[i], tier);
	}
	rc = h_publish(c, worker, rank, inc, seq, ev, n, &res);
	free(ev);
	cr_assert(eq(i32, rc, 0), "publish: %s (%s)", strerror(-rc), kvdex_client_last_error(c));
	cr_assert(eq(u64, res.applied, n));
}

int
h_lookup(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, size_t n, unsigned flags,
	 struct h_lookup *out)
{
	memset(out, 0, sizeof(*out));
	out->res.holdings = out->rows;
	out->res.cap = H_MAX_HOLDINGS;
	return kvdex_lookup(c, ns, keys, n, flags, &out->res);
}

const struct kvdex_holding *
h_find(const struct h_lookup *l, uint32_t worker, uint16_t rank)
{
	for (uint32_t i = 0; i < l->res.nholdings; i++) {
		if (l->rows[i].worker_id == worker && l->rows[i].dp_rank == rank) {
			return &l->rows[i];
		}
	}
	return NULL;
}

unsigned
h_matched(const struct h_lookup *l, uint32_t worker, uint16_t rank)
{
	const struct kvdex_holding *h = h_find(l, worker, rank);

	return h == NULL ? 0 : h->matched;
}

void
h_keys(uint64_t *keys, size_t n, uint64_t base)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t z = base * 1000003 + i + 1;

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		keys[i] = z ^ (z >> 31);
	}
}

/* ---- Stats ---------------------------------------------------------------------- */

void
h_stats_get(struct kvdex_client *c, unsigned server, struct h_stats *st)
{
	int rc = kvdex_stats(c, server, st->c, H_MAX_COUNTERS);

	cr_assert(gt(i32, rc, 0), "kvdex_stats: %s (%s)", strerror(-rc),
		  kvdex_client_last_error(c));
	st->n = rc < H_MAX_COUNTERS ? rc : H_MAX_COUNTERS;
}

static bool
stat_find(const struct h_stats *st, const char *name, uint64_t *v)
{
	for (int i = 0; i < st->n; i++) {
		if (strcmp(st->c[i].name, name) == 0) {
			*v = st->c[i].value;
			return true;
		}
	}
	return false;
}

uint64_t
h_stat(const struct h_stats *st, const char *name)
{
	uint64_t v = 0;

	cr_assert(stat_find(st, name, &v), "no counter named \"%s\"", name);
	return v;
}

uint64_t
h_stat1(struct kvdex_client *c, unsigned server, const char *name)
{
	struct h_stats st;

	h_stats_get(c, server, &st);
	return h_stat(&st, name);
}

uint64_t
h_wait_stat(struct kvdex_client *c, unsigned server, const char *name, uint64_t want,
	    int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	uint64_t v;

	while ((v = h_stat1(c, server, name)) < want && h_now_ms() < deadline) {
		h_sleep_ms(10);
	}
	return v;
}

void
h_assert_error_delta(const struct h_stats *before, const struct h_stats *after, const char *name,
		     uint64_t delta)
{
	bool listed = false;

	for (size_t i = 0; h_error_counters[i] != NULL; i++) {
		const char *n = h_error_counters[i];
		uint64_t d = h_stat(after, n) - h_stat(before, n);

		if (strcmp(n, name) == 0) {
			listed = true;
			cr_assert(eq(u64, d, delta), "counter %s grew by %llu, expected %llu", n,
				  (unsigned long long)d, (unsigned long long)delta);
		} else {
			cr_expect(eq(u64, d, 0), "counter %s also grew by %llu (expected only %s)",
				  n, (unsigned long long)d, name);
		}
	}
	cr_assert(listed, "%s is not an error counter", name);
}

void
h_assert_serving(const struct h_server *s, enum kvdex_transport t, unsigned tag)
{
	struct kvdex_client *c = h_client1(s, t);
	uint32_t worker = 50000 + tag;
	uint64_t keys[4];
	struct h_lookup l;
	uint32_t ns;
	int rc;

	h_keys(keys, 4, 0x5e2e0000u + tag);
	ns = h_ns(c, "serving-check");
	h_worker(c, worker, 1);
	h_store_chain(c, ns, worker, 0, 1, 1, keys, 4, KVDEX_GPU);
	rc = h_lookup(c, ns, keys, 4, 0, &l);
	cr_assert(eq(i32, rc, 0), "lookup: %s", strerror(-rc));
	cr_assert(eq(u32, h_matched(&l, worker, 0), 4), "server no longer serves lookups");
	kvdex_client_destroy(c);
}

/* ---- Raw frames ------------------------------------------------------------------ */

int
h_raw_connect(const struct h_server *s, bool tcp)
{
	int fd;

	if (tcp) {
		struct sockaddr_in sa = {
			.sin_family = AF_INET,
			.sin_port = htons(s->tcp_port),
			.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
		};
		int one = 1;

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert(ge(i32, fd, 0));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		cr_assert(eq(i32, connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0),
			  "connect tcp %u: %s", s->tcp_port, strerror(errno));
	} else {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};

		copy_str(sa.sun_path, sizeof(sa.sun_path), s->unix_path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert(ge(i32, fd, 0));
		cr_assert(eq(i32, connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0),
			  "connect %s: %s", s->unix_path, strerror(errno));
	}
	return fd;
}

int
h_raw_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
h_send_frame(int fd, uint16_t type, uint32_t req_id, const void *payload, size_t len)
{
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	int rc;

	kvdex_frame_hdr_encode(hdr, type, (uint32_t)len, req_id);
	rc = h_raw_send(fd, hdr, sizeof(hdr));
	if (rc == 0 && len > 0) {
		rc = h_raw_send(fd, payload, len);
	}
	return rc;
}

uint8_t *
h_pack(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n + 1);

	cr_assert_not_null(buf);
	*len = protobuf_c_message_pack(m, buf);
	cr_assert(eq(sz, *len, n));
	return buf;
}

int
h_send_msg(int fd, uint16_t type, uint32_t req_id, const ProtobufCMessage *m)
{
	size_t len;
	uint8_t *buf = h_pack(m, &len);
	int rc = h_send_frame(fd, type, req_id, buf, len);

	free(buf);
	return rc;
}

/* Read exactly len bytes before the deadline. */
static int
recv_full(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(deadline - h_now_ms());
		ssize_t n;

		if (left <= 0) {
			return -ETIMEDOUT;
		}
		if (poll(&p, 1, left) == 0) {
			return -ETIMEDOUT;
		}
		n = recv(fd, buf, len, 0);
		if (n == 0) {
			return -ECONNRESET;
		}
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				continue;
			}
			return errno == ECONNRESET ? -ECONNRESET : -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int
h_recv_frame(int fd, struct h_frame *f, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	uint8_t hdr[KVDEX_FRAME_HDR_SIZE];
	int rc;

	memset(f, 0, sizeof(*f));
	rc = recv_full(fd, hdr, sizeof(hdr), deadline);
	if (rc != 0) {
		return rc;
	}
	if (kvdex_frame_hdr_decode(hdr, sizeof(hdr), 64u << 20, &f->hdr) != 1) {
		return -EPROTO;
	}
	f->payload = malloc(f->hdr.len + 1);
	cr_assert_not_null(f->payload);
	rc = recv_full(fd, f->payload, f->hdr.len, deadline);
	if (rc != 0) {
		h_frame_free(f);
	}
	return rc;
}

void
h_frame_free(struct h_frame *f)
{
	free(f->payload);
	f->payload = NULL;
}

void
h_raw_hello(int fd, const char *token)
{
	Kvdex__Hello hello = KVDEX__HELLO__INIT;
	Kvdex__HelloReply *rep;
	struct h_frame f;
	int rc;

	hello.protocol_version = KVDEX_PROTOCOL_VERSION;
	hello.auth_token = (char *)(token != NULL ? token : "");
	hello.client_name = "raw-test";
	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_HELLO, 1, &hello.base), 0));
	rc = h_recv_frame(fd, &f, 5000);
	cr_assert(eq(i32, rc, 0), "hello reply: %s", strerror(-rc));
	cr_assert(eq(u32, f.hdr.type, KVDEX_MSG_HELLO_REPLY), "got %s",
		  kvdex_msg_type_name(f.hdr.type));
	cr_assert(eq(u32, f.hdr.req_id, 1));
	rep = kvdex__hello_reply__unpack(NULL, f.hdr.len, f.payload);
	cr_assert_not_null(rep);
	cr_assert(eq(u32, rep->protocol_version, KVDEX_PROTOCOL_VERSION));
	cr_assert(rep->status == NULL || rep->status->code == KVDEX__CODE__OK);
	kvdex__hello_reply__free_unpacked(rep, NULL);
	h_frame_free(&f);
}

bool
h_peer_closed(int fd, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	uint8_t buf[256];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(deadline - h_now_ms());
		ssize_t n;

		if (left <= 0 || poll(&p, 1, left) == 0) {
			return false;
		}
		n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			return true;
		}
		/* Anything else the server sends before closing is skipped. */
	}
}

void
h_expect_error(int fd, uint32_t req_id, Kvdex__Code code, bool fatal)
{
	Kvdex__ErrorReply *er;
	struct h_frame f;
	int rc = h_recv_frame(fd, &f, 5000);

	cr_assert(eq(i32, rc, 0), "expected ERROR code %d, got %s", code, strerror(-rc));
	cr_assert(eq(u32, f.hdr.type, KVDEX_MSG_ERROR), "expected ERROR code %d, got %s", code,
		  kvdex_msg_type_name(f.hdr.type));
	if (req_id != H_ANY_REQ) {
		cr_assert(eq(u32, f.hdr.req_id, req_id));
	}
	er = kvdex__error_reply__unpack(NULL, f.hdr.len, f.payload);
	cr_assert_not_null(er, "ErrorReply does not decode");
	cr_assert_not_null(er->status);
	cr_assert(eq(i32, er->status->code, code), "ERROR code %d (%s), expected %d",
		  er->status->code, er->status->message ? er->status->message : "", code);
	cr_assert(eq(i32, er->fatal, fatal), "fatal flag %d for code %d", er->fatal, code);
	kvdex__error_reply__free_unpacked(er, NULL);
	h_frame_free(&f);
	if (fatal) {
		cr_assert(h_peer_closed(fd, 5000),
			  "server kept the connection after a fatal error");
	}
}

void
h_raw_stats_ok(int fd, uint32_t req_id)
{
	Kvdex__StatsRequest req = KVDEX__STATS_REQUEST__INIT;
	struct h_frame f;
	int rc;

	cr_assert(eq(i32, h_send_msg(fd, KVDEX_MSG_STATS, req_id, &req.base), 0));
	rc = h_recv_frame(fd, &f, 5000);
	cr_assert(eq(i32, rc, 0), "stats reply: %s", strerror(-rc));
	cr_assert(eq(u32, f.hdr.type, KVDEX_MSG_STATS_REPLY), "got %s",
		  kvdex_msg_type_name(f.hdr.type));
	cr_assert(eq(u32, f.hdr.req_id, req_id));
	h_frame_free(&f);
}

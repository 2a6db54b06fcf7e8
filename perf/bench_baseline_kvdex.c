/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex as one of the systems of kvdex-bench baseline, over shm, tcp or verbs.
 *
 * reset() starts a fresh private kvdexd (bench_server.c) sized for the run,
 * since kvdex has no "flush everything" request: a new server is the empty
 * index. The client is created with the transport forced and checked (a
 * silent fallback would report another transport's numbers), and registers
 * the namespace and workers 1..W. apply() is one kvdex_publish() per batch,
 * with that worker's publisher sequence; lookup() is kvdex_lookup() and the
 * answer is taken from its holdings (matched per worker).
 */
#include "perf/bench_baseline.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KVDEX_SYS_MAX_BATCH 65536u

struct kx_priv {
	const char *kind; /* "shm", "tcp", "verbs" */
	enum kvdex_transport transport;
	const char *kvdexd;
	struct kvdex_bench_server srv;
	struct kvdex_client *c;
	uint32_t ns;
	uint64_t incarnation;
	uint64_t *seq; /* per worker, index = id - 1 */
	struct kvdex_event *ev;
	struct kvdex_holding *holdings;
	uint32_t workers;
};

static const struct kvdex_ns_desc kx_ns = {
	.model = "kvdex-bench-baseline",
	.adapter = "",
	.tenant = "",
	.block_size = 512,
	.hash_scheme = "opaque",
};

static void
kx_disconnect(struct kx_priv *p, struct bl_sys *s)
{
	kvdex_client_destroy(p->c);
	p->c = NULL;
	if (kvdex_bench_server_stop(&p->srv)) {
		fprintf(stderr, "kvdex-bench: kvdexd (%s) did not stop cleanly\n", p->kind);
	}
	s->server_pid = 0;
}

static int
kx_connect(struct kx_priv *p)
{
	struct kvdex_client_opts co;
	char servers[512];
	const char *tname;
	int rc;

	if (p->transport == KVDEX_TRANSPORT_TCP) {
		snprintf(servers, sizeof(servers), "bench=%s", p->srv.tcp_addr);
	} else if (p->transport == KVDEX_TRANSPORT_VERBS) {
		snprintf(servers, sizeof(servers), "bench=rdma:%s",
			 p->srv.rdma_addr[0] ? p->srv.rdma_addr : "none:1");
	} else {
		snprintf(servers, sizeof(servers), "bench=unix:%s", p->srv.unix_path);
	}
	kvdex_client_opts_init(&co, sizeof(co));
	co.servers = servers;
	co.transport = p->transport;
	co.client_name = "kvdex-bench-baseline";
	rc = kvdex_client_create(&co, &p->c);
	if (rc) {
		fprintf(stderr, "kvdex-bench: connect to %s (%s): %s\n", servers, p->kind,
			strerror(-rc));
		return rc;
	}
	tname = kvdex_client_transport_name(p->c, 0);
	if (!tname || strcmp(tname, p->kind) != 0) {
		fprintf(stderr, "kvdex-bench: kvdex client uses %s, not %s\n",
			tname ? tname : "(none)", p->kind);
		return -EPROTO;
	}
	return 0;
}

static int
kx_register(struct kx_priv *p)
{
	int rc = kvdex_ns_register(p->c, &kx_ns, &p->ns);

	for (uint32_t w = 1; !rc && w <= p->workers; w++) {
		char addr[64];

		snprintf(addr, sizeof(addr), "baseline-worker-%u:0", w);
		rc = kvdex_worker_register(p->c, w, addr, 1);
	}
	if (rc) {
		fprintf(stderr, "kvdex-bench: kvdex register: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(p->c));
	}
	return rc;
}

static int
kx_reset(struct bl_sys *s, uint64_t capacity_blocks)
{
	struct kx_priv *p = s->priv;
	int rc;

	kx_disconnect(p, s);
	rc = kvdex_bench_server_start(p->kvdexd, capacity_blocks, &p->srv);
	if (rc) {
		return rc;
	}
	s->server_pid = p->srv.pid;
	rc = kx_connect(p);
	rc = rc ? rc : kx_register(p);
	memset(p->seq, 0, p->workers * sizeof(*p->seq));
	p->incarnation = kvdex_bench_incarnation();
	return rc;
}

static int
kx_apply(struct bl_sys *s, const struct bl_event *ev, uint32_t worker, uint32_t n)
{
	struct kx_priv *p = s->priv;
	struct kvdex_publish_hdr hdr = {
		.worker_id = worker,
		.incarnation = p->incarnation,
	};
	struct kvdex_publish_result res;
	int rc;

	if (worker == 0 || worker > p->workers || n > KVDEX_SYS_MAX_BATCH) {
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct kvdex_event *e = &p->ev[i];

		memset(e, 0, sizeof(*e));
		e->type = ev[i].type == BL_EV_STORE ? KVDEX_EV_STORED : KVDEX_EV_REMOVED;
		e->tier = ev[i].tier;
		e->ns = p->ns;
		e->key = ev[i].key;
	}
	hdr.seq = ++p->seq[worker - 1];
	memset(&res, 0, sizeof(res));
	rc = kvdex_publish(p->c, &hdr, p->ev, n, &res);
	if (rc) {
		fprintf(stderr, "kvdex-bench: kvdex publish: %s (%s)\n", strerror(-rc),
			kvdex_client_last_error(p->c));
		return rc;
	}
	if (res.duplicate || res.gap || res.applied + res.ignored != n) {
		fprintf(stderr,
			"kvdex-bench: kvdex publish: %" PRIu64 " applied, %" PRIu64
			" ignored of %u%s%s\n",
			res.applied, res.ignored, n, res.duplicate ? ", duplicate" : "",
			res.gap ? ", gap" : "");
		return -EPROTO;
	}
	return 0;
}

static int
kx_lookup(struct bl_sys *s, const uint64_t *keys, uint32_t n, struct bl_answer *a)
{
	struct kx_priv *p = s->priv;
	struct kvdex_lookup_result res = {.holdings = p->holdings, .cap = p->workers};
	int rc = kvdex_lookup(p->c, p->ns, keys, n, 0, &res);

	memset(a, 0, sizeof(*a));
	if (rc) {
		return rc;
	}
	if (res.nholdings != res.nholdings_total) {
		return -EOVERFLOW;
	}
	for (uint32_t i = 0; i < res.nholdings; i++) {
		bl_answer_add(a, res.holdings[i].worker_id, res.holdings[i].matched);
	}
	if (a->longest != res.longest) {
		return -EPROTO;
	}
	return 0;
}

static void
kx_fini(struct bl_sys *s)
{
	struct kx_priv *p = s ? s->priv : NULL;

	if (!p) {
		return;
	}
	kx_disconnect(p, s);
	free(p->seq);
	free(p->ev);
	free(p->holdings);
	free(p);
	s->priv = NULL;
}

static const struct bl_sys_ops kx_ops = {
	.reset = kx_reset,
	.apply = kx_apply,
	.lookup = kx_lookup,
	.fini = kx_fini,
};

int
bl_kvdex_create(const struct bl_env *env, const char *kind, struct bl_sys *s)
{
	struct kx_priv *p = calloc(1, sizeof(*p));

	if (!p) {
		return -ENOMEM;
	}
	s->priv = p;
	s->ops = &kx_ops;
	s->workers = env->workers;
	p->kind = kind;
	p->transport = strcmp(kind, "tcp") == 0	    ? KVDEX_TRANSPORT_TCP
		       : strcmp(kind, "verbs") == 0 ? KVDEX_TRANSPORT_VERBS
						    : KVDEX_TRANSPORT_SHM;
	p->kvdexd = env->kvdexd;
	p->workers = env->workers;
	p->seq = calloc(env->workers, sizeof(*p->seq));
	p->ev = calloc(KVDEX_SYS_MAX_BATCH, sizeof(*p->ev));
	p->holdings = calloc(env->workers, sizeof(*p->holdings));
	if (!p->seq || !p->ev || !p->holdings) {
		kx_fini(s);
		return -ENOMEM;
	}
	return 0;
}

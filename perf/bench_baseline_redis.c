/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Redis as a prefix index, in the three layouts kvdex-bench baseline measures,
 * each given its most favourable access pattern (hiredis, one TCP connection
 * to 127.0.0.1, TCP_NODELAY, one round trip per lookup and per batch):
 *
 *   hash  one hash per block "blk:1:<key>", field "worker:dp" = tier.
 *         Lookup: a pipeline of HGETALL, one per block; the client walks the
 *         chain. Publish: a pipeline of HSET / HDEL (each one atomic).
 *   mget  one string per block "pk:1:<key>": packed 8-byte holder records.
 *         Lookup: one MGET of the chain; the client walks it. Publish: the
 *         kvdex_pk_apply function (perf/redis_chain.lua), one FCALL per
 *         batch, so each read-modify-write is atomic on the server.
 *   func  the hash layout, walked on the server by the kvdex_walk function:
 *         one FCALL_RO per lookup returns per-worker matched counts.
 *
 * Caveats against kvdex's semantics, none of which our workloads exercise:
 * a (block, worker) has one tier here (kvdex keeps each tier, with copy
 * counts), a remove drops the holder whatever its tier, and there are no
 * speculative holders or epochs. The layouts hold the same blocks and holders
 * as kvdex; the driver checks every answer.
 */
#include "perf/bench_baseline.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_chain_lua.h"

#define REDIS_KEY_LEN 24 /* "blk:1:" + 16 hex digits + NUL */

enum redis_layout {
	REDIS_HASH,
	REDIS_MGET,
	REDIS_FUNC,
};

struct redis_priv {
	redisContext *c;
	enum redis_layout layout;
	struct bl_matcher m;
	/* Argument vectors, sized for the largest batch or chain seen. */
	const char **argv;
	size_t *argvlen;
	char (*keys)[REDIS_KEY_LEN];
	char (*fields)[16];
	char *ops;
	size_t cap;
};

static int
redis_connect(const char *host, int port, redisContext **out)
{
	struct timeval tv = {.tv_sec = 5};
	redisContext *c = redisConnectWithTimeout(host, port, tv);

	if (!c || c->err) {
		fprintf(stderr, "kvdex-bench: redis %s:%d: %s\n", host, port,
			c ? c->errstr : "out of memory");
		redisFree(c);
		return -ECONNREFUSED;
	}
	*out = c;
	return 0;
}

/* One command, reply checked: 0, or -EIO with the error on stderr. */
static int
redis_simple(redisContext *c, int argc, const char **argv, const size_t *lens)
{
	redisReply *r = redisCommandArgv(c, argc, argv, lens);
	int rc = 0;

	if (!r || r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "kvdex-bench: redis %s: %s\n", argv[0], r ? r->str : c->errstr);
		rc = -EIO;
	}
	freeReplyObject(r);
	return rc;
}

int
bl_redis_load_functions(const char *host, int port)
{
	const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", bl_redis_chain_lua};
	size_t lens[] = {8, 4, 7, sizeof(bl_redis_chain_lua) - 1};
	redisContext *c;
	int rc = redis_connect(host, port, &c);

	if (rc) {
		return rc;
	}
	rc = redis_simple(c, 4, argv, lens);
	redisFree(c);
	return rc;
}

static int
redis_grow(struct redis_priv *p, size_t n)
{
	size_t cap = p->cap ? p->cap : 64;
	void *a, *b, *k, *f, *o;

	if (n <= p->cap) {
		return 0;
	}
	while (cap < n) {
		cap *= 2;
	}
	/* +4: command, function name, numkeys and the ops string around the keys. */
	a = realloc(p->argv, (cap + 4) * sizeof(*p->argv));
	if (a) {
		p->argv = a;
	}
	b = realloc(p->argvlen, (cap + 4) * sizeof(*p->argvlen));
	if (b) {
		p->argvlen = b;
	}
	k = realloc(p->keys, cap * sizeof(*p->keys));
	if (k) {
		p->keys = k;
	}
	f = realloc(p->fields, cap * sizeof(*p->fields));
	if (f) {
		p->fields = f;
	}
	o = realloc(p->ops, cap * BL_PACKED_REC);
	if (o) {
		p->ops = o;
	}
	if (!a || !b || !k || !f || !o) {
		return -ENOMEM;
	}
	p->cap = cap;
	return 0;
}

static size_t
redis_key(struct redis_priv *p, size_t i, uint64_t key)
{
	const char *prefix = p->layout == REDIS_MGET ? "pk" : "blk";

	return (size_t)snprintf(p->keys[i], REDIS_KEY_LEN, "%s:1:%016" PRIx64, prefix, key);
}

/* ---- reset -------------------------------------------------------------------- */

static int
redis_reset(struct bl_sys *s, uint64_t capacity_blocks)
{
	struct redis_priv *p = s->priv;
	const char *argv[] = {"FLUSHALL", "SYNC"};
	size_t lens[] = {8, 4};

	return redis_simple(p->c, 2, argv, lens);
}

/* ---- publish ------------------------------------------------------------------ */

/* Read n pipelined replies; the first error is reported, all are consumed. */
static int
redis_drain(struct redis_priv *p, size_t n, const char *what)
{
	int rc = 0;

	for (size_t i = 0; i < n; i++) {
		redisReply *r = NULL;

		if (redisGetReply(p->c, (void **)&r) != REDIS_OK) {
			fprintf(stderr, "kvdex-bench: redis %s: %s\n", what, p->c->errstr);
			return -EIO;
		}
		if (r->type == REDIS_REPLY_ERROR && !rc) {
			fprintf(stderr, "kvdex-bench: redis %s: %s\n", what, r->str);
			rc = -EIO;
		}
		freeReplyObject(r);
	}
	return rc;
}

static int
redis_apply_hash(struct redis_priv *p, const struct bl_event *ev, uint32_t worker, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		char tier[4];
		const char *argv[4];
		size_t lens[4];
		int argc = 3;

		lens[1] = redis_key(p, i, ev[i].key);
		argv[1] = p->keys[i];
		lens[2] = (size_t)snprintf(p->fields[i], sizeof(p->fields[i]), "%u:0", worker);
		argv[2] = p->fields[i];
		if (ev[i].type == BL_EV_STORE) {
			argv[0] = "HSET";
			lens[0] = 4;
			lens[3] = (size_t)snprintf(tier, sizeof(tier), "%u", ev[i].tier);
			argv[3] = tier;
			argc = 4;
		} else {
			argv[0] = "HDEL";
			lens[0] = 4;
		}
		/* hiredis copies the arguments into its output buffer here. */
		if (redisAppendCommandArgv(p->c, argc, argv, lens) != REDIS_OK) {
			return -ENOMEM;
		}
	}
	return redis_drain(p, n, "HSET/HDEL");
}

static void
redis_pack(char *rec, uint32_t worker, uint8_t tier, uint8_t op)
{
	rec[0] = (char)(worker & 0xff);
	rec[1] = (char)((worker >> 8) & 0xff);
	rec[2] = (char)((worker >> 16) & 0xff);
	rec[3] = (char)((worker >> 24) & 0xff);
	rec[4] = 0; /* dp rank 0 */
	rec[5] = 0;
	rec[6] = (char)tier;
	rec[7] = (char)op;
}

static int
redis_apply_packed(struct redis_priv *p, const struct bl_event *ev, uint32_t worker, uint32_t n)
{
	char numkeys[16];

	p->argv[0] = "FCALL";
	p->argvlen[0] = 5;
	p->argv[1] = "kvdex_pk_apply";
	p->argvlen[1] = 14;
	p->argvlen[2] = (size_t)snprintf(numkeys, sizeof(numkeys), "%u", n);
	p->argv[2] = numkeys;
	for (uint32_t i = 0; i < n; i++) {
		p->argvlen[3 + i] = redis_key(p, i, ev[i].key);
		p->argv[3 + i] = p->keys[i];
		redis_pack(p->ops + (size_t)i * BL_PACKED_REC, worker, ev[i].tier,
			   ev[i].type == BL_EV_REMOVE);
	}
	p->argv[3 + n] = p->ops;
	p->argvlen[3 + n] = (size_t)n * BL_PACKED_REC;
	return redis_simple(p->c, (int)n + 4, p->argv, p->argvlen);
}

static int
redis_apply(struct bl_sys *s, const struct bl_event *ev, uint32_t worker, uint32_t n)
{
	struct redis_priv *p = s->priv;
	int rc = redis_grow(p, n);

	if (rc) {
		return rc;
	}
	return p->layout == REDIS_MGET ? redis_apply_packed(p, ev, worker, n)
				       : redis_apply_hash(p, ev, worker, n);
}

/* ---- lookup ------------------------------------------------------------------- */

/* "worker:dp" -> worker; dp must be 0 (our workloads never use another). */
static int
redis_parse_holder(const char *s, size_t len, uint32_t *worker)
{
	char *end;
	unsigned long w = strtoul(s, &end, 10);

	if (end == s || (size_t)(end - s) + 2 != len || end[0] != ':' || end[1] != '0') {
		return -EPROTO;
	}
	*worker = (uint32_t)w;
	return 0;
}

static int
redis_lookup_hash(struct redis_priv *p, const uint64_t *keys, uint32_t n, struct bl_answer *a)
{
	int rc = 0;

	for (uint32_t i = 0; i < n; i++) {
		const char *argv[2] = {"HGETALL", p->keys[i]};
		size_t lens[2] = {7, redis_key(p, i, keys[i])};

		if (redisAppendCommandArgv(p->c, 2, argv, lens) != REDIS_OK) {
			return -ENOMEM;
		}
	}
	bl_matcher_begin(&p->m);
	for (uint32_t i = 0; i < n; i++) {
		redisReply *r = NULL;
		bool walk;

		if (redisGetReply(p->c, (void **)&r) != REDIS_OK) {
			fprintf(stderr, "kvdex-bench: redis HGETALL: %s\n", p->c->errstr);
			return -EIO;
		}
		walk = bl_matcher_block(&p->m);
		if (r->type != REDIS_REPLY_ARRAY) {
			rc = rc ? rc : -EPROTO;
			walk = false;
		}
		for (size_t j = 0; walk && j + 1 < r->elements; j += 2) {
			uint32_t w;

			if (redis_parse_holder(r->element[j]->str, r->element[j]->len, &w) ||
			    bl_matcher_holder(&p->m, w)) {
				rc = rc ? rc : -EPROTO;
				break;
			}
		}
		if (walk) {
			bl_matcher_block_end(&p->m);
		}
		freeReplyObject(r);
	}
	bl_matcher_answer(&p->m, a);
	return rc;
}

/* Walk one packed holder list (NULL: the block is absent). */
static int
redis_walk_packed(struct bl_matcher *m, const char *v, size_t len)
{
	if (!bl_matcher_block(m)) {
		return 0;
	}
	if (len % BL_PACKED_REC) {
		return -EPROTO;
	}
	for (size_t off = 0; off < len; off += BL_PACKED_REC) {
		const unsigned char *r = (const unsigned char *)v + off;
		uint32_t w =
			r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 24;

		if (r[4] || r[5] || bl_matcher_holder(m, w)) {
			return -EPROTO;
		}
	}
	bl_matcher_block_end(m);
	return 0;
}

static int
redis_lookup_mget(struct redis_priv *p, const uint64_t *keys, uint32_t n, struct bl_answer *a)
{
	redisReply *r;
	int rc = 0;

	p->argv[0] = "MGET";
	p->argvlen[0] = 4;
	for (uint32_t i = 0; i < n; i++) {
		p->argvlen[1 + i] = redis_key(p, i, keys[i]);
		p->argv[1 + i] = p->keys[i];
	}
	r = redisCommandArgv(p->c, (int)n + 1, p->argv, p->argvlen);
	if (!r) {
		fprintf(stderr, "kvdex-bench: redis MGET: %s\n", p->c->errstr);
		return -EIO;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
		freeReplyObject(r);
		return -EPROTO;
	}
	bl_matcher_begin(&p->m);
	for (uint32_t i = 0; i < n && !rc; i++) {
		const redisReply *e = r->element[i];

		rc = redis_walk_packed(&p->m, e->type == REDIS_REPLY_STRING ? e->str : NULL,
				       e->type == REDIS_REPLY_STRING ? e->len : 0);
	}
	bl_matcher_answer(&p->m, a);
	freeReplyObject(r);
	return rc;
}

static int
redis_lookup_func(struct redis_priv *p, const uint64_t *keys, uint32_t n, struct bl_answer *a)
{
	char numkeys[16];
	redisReply *r;
	int rc = 0;

	p->argv[0] = "FCALL_RO";
	p->argvlen[0] = 8;
	p->argv[1] = "kvdex_walk";
	p->argvlen[1] = 10;
	p->argvlen[2] = (size_t)snprintf(numkeys, sizeof(numkeys), "%u", n);
	p->argv[2] = numkeys;
	for (uint32_t i = 0; i < n; i++) {
		p->argvlen[3 + i] = redis_key(p, i, keys[i]);
		p->argv[3 + i] = p->keys[i];
	}
	r = redisCommandArgv(p->c, (int)n + 3, p->argv, p->argvlen);
	if (!r) {
		fprintf(stderr, "kvdex-bench: redis FCALL_RO: %s\n", p->c->errstr);
		return -EIO;
	}
	memset(a, 0, sizeof(*a));
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
		fprintf(stderr, "kvdex-bench: redis FCALL_RO kvdex_walk: %s\n",
			r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		rc = -EPROTO;
	}
	for (size_t j = 0; !rc && j < r->elements; j += 2) {
		uint32_t w;

		if (redis_parse_holder(r->element[j]->str, r->element[j]->len, &w) ||
		    r->element[j + 1]->type != REDIS_REPLY_INTEGER) {
			rc = -EPROTO;
			break;
		}
		bl_answer_add(a, w, (uint32_t)r->element[j + 1]->integer);
	}
	freeReplyObject(r);
	return rc;
}

static int
redis_lookup(struct bl_sys *s, const uint64_t *keys, uint32_t n, struct bl_answer *a)
{
	struct redis_priv *p = s->priv;
	int rc = redis_grow(p, n);

	if (rc) {
		return rc;
	}
	switch (p->layout) {
	case REDIS_HASH:
		return redis_lookup_hash(p, keys, n, a);
	case REDIS_MGET:
		return redis_lookup_mget(p, keys, n, a);
	default:
		return redis_lookup_func(p, keys, n, a);
	}
}

static void
redis_fini(struct bl_sys *s)
{
	struct redis_priv *p = s ? s->priv : NULL;

	if (!p) {
		return;
	}
	redisFree(p->c);
	bl_matcher_fini(&p->m);
	free(p->argv);
	free(p->argvlen);
	free(p->keys);
	free(p->fields);
	free(p->ops);
	free(p);
	s->priv = NULL;
}

static const struct bl_sys_ops redis_ops = {
	.reset = redis_reset,
	.apply = redis_apply,
	.lookup = redis_lookup,
	.fini = redis_fini,
};

int
bl_redis_create(const struct bl_env *env, const char *layout, struct bl_sys *s)
{
	struct redis_priv *p = calloc(1, sizeof(*p));
	int rc;

	if (!p) {
		return -ENOMEM;
	}
	s->priv = p;
	s->ops = &redis_ops;
	s->workers = env->workers;
	p->layout = strcmp(layout, "hash") == 0	  ? REDIS_HASH
		    : strcmp(layout, "mget") == 0 ? REDIS_MGET
						  : REDIS_FUNC;
	rc = bl_matcher_init(&p->m, env->workers);
	if (!rc) {
		rc = redis_grow(p, 64);
	}
	if (!rc) {
		rc = redis_connect(env->redis_host, env->redis_port, &p->c);
	}
	if (rc) {
		redis_fini(s);
	}
	return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Generated workloads of kvdex-replay, as arrays of requests with block-key
 * chains (pure: no I/O, no clock; same options, same workload).
 *
 * Tokens are content ids, never text: token = splitmix64(((kind << 56) |
 * (a << 32) | b) ^ seed) % 128000, kvrouting.md §5.2 (kind 1 = system prompt
 * of group a at position b, 2 = question of request a = g * prompts + j,
 * 3 = output of request rid; BOS = 128000 and SEP = 128001 are literal).
 * Multi-turn uses kinds 6 (the shared header), 7 (user message a = conv *
 * turns + turn) and 8 (reply a). A block key chains the previous block's key
 * with the block's tokens, so two prompts share exactly the keys of the full
 * blocks of their common token prefix. Only full blocks get keys: a partial
 * tail block is never cached (an engine hashes full blocks only).
 *
 * A request's chain holds its prompt's blocks and then the blocks that
 * complete with its output: the worker caches prompt + output[:-1] when the
 * request finishes (SGLang's cache_finished_req), so the chain is the full
 * blocks of that token sequence; the prompt's full blocks are a prefix of it.
 */
#include "perf/replay/replay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GSP_VOCAB 128000u
#define GSP_BOS 128000u
#define GSP_SEP 128001u

uint64_t
replay_splitmix64(uint64_t x)
{
	uint64_t z = x + 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint32_t
replay_gsp_token(uint64_t kind, uint64_t a, uint64_t b, uint64_t seed)
{
	return (uint32_t)(replay_splitmix64(((kind << 56) | (a << 32) | b) ^ seed) % GSP_VOCAB);
}

uint64_t
replay_block_key(uint64_t prev, const uint32_t *tok, size_t n)
{
	uint64_t h = replay_splitmix64(prev ^ 0x6b76646578626c6bull); /* "kvdexblk" */

	for (size_t i = 0; i < n; i++) {
		h = replay_splitmix64(h ^ tok[i]);
	}
	return h != 0 ? h : 1; /* 0 is nobody's key */
}

static const char *const order_names[] = {"random", "grouped", "round_robin"};

int
replay_order_parse(const char *s, enum replay_order *out)
{
	for (unsigned i = 0; i < 3; i++) {
		if (strcmp(s, order_names[i]) == 0) {
			*out = (enum replay_order)i;
			return 0;
		}
	}
	/* the generator's aliases */
	if (strcmp(s, "best") == 0) {
		*out = REPLAY_ORDER_GROUPED;
		return 0;
	}
	if (strcmp(s, "worst") == 0 || strcmp(s, "rr") == 0) {
		*out = REPLAY_ORDER_ROUND_ROBIN;
		return 0;
	}
	return -EINVAL;
}

const char *
replay_order_name(enum replay_order o)
{
	return (unsigned)o < 3 ? order_names[o] : "?";
}

void
replay_gsp_opts_init(struct replay_gsp_opts *o)
{
	static const uint32_t lens[] = {512, 1024, 2048, 4096, 8192};

	memset(o, 0, sizeof(*o));
	o->groups = 128;
	o->prompts = 32;
	o->prefix_ratio = 0.5;
	memcpy(o->lens, lens, sizeof(lens));
	o->nlens = 5;
	o->output_tokens = 4;
	o->rate = 12.0;
	o->order = REPLAY_ORDER_RANDOM;
	o->seed = 1;
	o->block_size = 16;
}

void
replay_mt_opts_init(struct replay_mt_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->conversations = 128;
	o->turns = 8;
	o->header_tokens = 25;
	o->user_tokens = 1024;
	o->output_tokens = 4;
	o->rate = 12.0;
	o->think_ms = 1000.0;
	o->seed = 1;
	o->block_size = 16;
}

void
replay_workload_fini(struct replay_workload *w)
{
	if (w == NULL) {
		return;
	}
	free(w->req);
	free(w->keys);
	memset(w, 0, sizeof(*w));
}

static int
wl_reserve_keys(struct replay_workload *w, size_t more)
{
	uint64_t *k;
	size_t cap;

	if (w->nkeys + more <= w->capkeys) {
		return 0;
	}
	cap = w->capkeys ? w->capkeys : 4096;
	while (cap < w->nkeys + more) {
		cap *= 2;
	}
	k = realloc(w->keys, cap * sizeof(*k));
	if (k == NULL) {
		return -ENOMEM;
	}
	w->keys = k;
	w->capkeys = cap;
	return 0;
}

/* Append the chain of tok[0, n) (full blocks only) to w->keys for r. */
static int
wl_add_chain(struct replay_workload *w, struct replay_req *r, const uint32_t *tok, size_t n)
{
	size_t nb = n / w->block_size;
	uint64_t prev = 0;
	int rc = wl_reserve_keys(w, nb);

	if (rc < 0) {
		return rc;
	}
	r->key_off = w->nkeys;
	r->nkeys = (uint32_t)nb;
	r->nprompt_blocks = r->prompt_tokens / w->block_size;
	if (r->nprompt_blocks > r->nkeys) {
		r->nprompt_blocks = r->nkeys;
	}
	for (size_t b = 0; b < nb; b++) {
		prev = replay_block_key(prev, tok + b * w->block_size, w->block_size);
		w->keys[w->nkeys++] = prev;
	}
	return 0;
}

/* Uniform in [0, 1) from a hash, 53 bits (kvrouting.md §5.2). */
static double
wl_unit(uint64_t h)
{
	return (double)(h >> 11) * 0x1.0p-53;
}

static double
wl_exp_gap_s(uint64_t h, double rate)
{
	return -log(1.0 - wl_unit(h)) / rate;
}

struct gsp_item {
	uint64_t sort_key;
	uint32_t a; /* g * prompts + j */
};

static int
gsp_cmp(const void *pa, const void *pb)
{
	const struct gsp_item *x = pa, *y = pb;

	if (x->sort_key != y->sort_key) {
		return x->sort_key < y->sort_key ? -1 : 1;
	}
	return (x->a > y->a) - (x->a < y->a);
}

/* The arrival order of a = g * prompts + j, as sort keys. */
static void
gsp_order(const struct replay_gsp_opts *o, struct gsp_item *it, size_t n)
{
	for (size_t a = 0; a < n; a++) {
		uint64_t g = a / o->prompts, j = a % o->prompts;

		it[a].a = (uint32_t)a;
		switch (o->order) {
		case REPLAY_ORDER_RANDOM:
			it[a].sort_key =
				replay_splitmix64((4ull << 56) | (((uint64_t)a << 32) ^ o->seed));
			break;
		case REPLAY_ORDER_GROUPED:
			it[a].sort_key = a;
			break;
		case REPLAY_ORDER_ROUND_ROBIN:
			it[a].sort_key = j * o->groups + g;
			break;
		}
	}
	qsort(it, n, sizeof(*it), gsp_cmp);
}

/* Tokens of GSP request a (arrival rank rid): prompt, then output[:-1]. */
static size_t
gsp_tokens(const struct replay_gsp_opts *o, uint32_t a, uint64_t rid, uint32_t *tok,
	   uint32_t *prompt_tokens)
{
	uint32_t g = a / o->prompts;
	uint32_t len = o->lens[g % o->nlens];
	uint32_t s = (uint32_t)nearbyint(o->prefix_ratio * len); /* Python round() */
	uint32_t q = len - s;
	size_t n = 0;

	tok[n++] = GSP_BOS;
	for (uint32_t b = 0; b < s; b++) {
		tok[n++] = replay_gsp_token(1, g, b, o->seed);
	}
	tok[n++] = GSP_SEP;
	for (uint32_t b = 0; b < q; b++) {
		tok[n++] = replay_gsp_token(2, a, b, o->seed);
	}
	*prompt_tokens = (uint32_t)n;
	for (uint32_t b = 0; b + 1 < o->output_tokens; b++) {
		tok[n++] = replay_gsp_token(3, rid, b, o->seed);
	}
	return n;
}

static int
gsp_check(const struct replay_gsp_opts *o)
{
	if (o->groups == 0 || o->prompts == 0 || o->nlens == 0 || o->nlens > 8 ||
	    o->block_size == 0 || !(o->rate > 0.0) || !(o->prefix_ratio >= 0.0) ||
	    o->prefix_ratio > 1.0 || (uint64_t)o->groups * o->prompts > (1u << 24)) {
		return -EINVAL;
	}
	for (uint32_t i = 0; i < o->nlens; i++) {
		if (o->lens[i] == 0 || o->lens[i] > (1u << 20)) {
			return -EINVAL;
		}
	}
	return 0;
}

int
replay_gsp_generate(const struct replay_gsp_opts *o, struct replay_workload *w)
{
	size_t n = (size_t)o->groups * o->prompts, maxlen = 0;
	struct gsp_item *it = NULL;
	uint32_t *tok = NULL;
	double t = 0.0;
	int rc = gsp_check(o);

	if (rc < 0) {
		return rc;
	}
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "gsp");
	w->block_size = o->block_size;
	for (uint32_t i = 0; i < o->nlens; i++) {
		maxlen = o->lens[i] > maxlen ? o->lens[i] : maxlen;
	}
	it = calloc(n, sizeof(*it));
	tok = calloc(maxlen + 2 + o->output_tokens, sizeof(*tok));
	w->req = calloc(n, sizeof(*w->req));
	if (it == NULL || tok == NULL || w->req == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	gsp_order(o, it, n);
	for (size_t rid = 0; rid < n && rc == 0; rid++) {
		struct replay_req *r = &w->req[rid];
		uint32_t pt;
		size_t nt = gsp_tokens(o, it[rid].a, rid, tok, &pt);

		r->arrival_ms = t * 1000.0;
		t += wl_exp_gap_s(
			replay_splitmix64((5ull << 56) | (((uint64_t)rid << 32) ^ o->seed)),
			o->rate);
		r->prompt_tokens = pt;
		r->output_tokens = o->output_tokens;
		r->group = it[rid].a / o->prompts;
		r->next = -1;
		w->prompt_tokens += pt;
		rc = wl_add_chain(w, r, tok, nt);
		w->nreq = rid + 1;
	}
out:
	free(it);
	free(tok);
	if (rc < 0) {
		replay_workload_fini(w);
	}
	return rc;
}

/* ---- Multi-turn ---------------------------------------------------------------- */

/* Tokens of turn t of conversation c: header, then per earlier turn its user
 * message and its whole reply, then this turn's message; then output[:-1]. */
static size_t
mt_tokens(const struct replay_mt_opts *o, uint32_t c, uint32_t t, uint32_t *tok,
	  uint32_t *prompt_tokens)
{
	size_t n = 0;

	for (uint32_t b = 0; b < o->header_tokens; b++) {
		tok[n++] = replay_gsp_token(6, 0, b, o->seed);
	}
	for (uint32_t k = 0; k <= t; k++) {
		uint64_t a = (uint64_t)c * o->turns + k;

		for (uint32_t b = 0; b < o->user_tokens; b++) {
			tok[n++] = replay_gsp_token(7, a, b, o->seed);
		}
		if (k == t) {
			break;
		}
		for (uint32_t b = 0; b < o->output_tokens; b++) {
			tok[n++] = replay_gsp_token(8, a, b, o->seed);
		}
	}
	*prompt_tokens = (uint32_t)n;
	for (uint32_t b = 0; b + 1 < o->output_tokens; b++) {
		tok[n++] = replay_gsp_token(8, (uint64_t)c * o->turns + t, b, o->seed);
	}
	return n;
}

int
replay_mt_generate(const struct replay_mt_opts *o, struct replay_workload *w)
{
	size_t n = (size_t)o->conversations * o->turns;
	size_t maxtok = o->header_tokens + (size_t)o->turns * (o->user_tokens + o->output_tokens);
	uint32_t *tok;
	double start = 0.0;
	int rc = 0;

	if (o->conversations == 0 || o->turns == 0 || o->block_size == 0 || !(o->rate > 0.0) ||
	    o->think_ms < 0.0 || n > (1u << 24) || maxtok > (1u << 24)) {
		return -EINVAL;
	}
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "multiturn");
	w->block_size = o->block_size;
	tok = calloc(maxtok + 1, sizeof(*tok));
	w->req = calloc(n, sizeof(*w->req));
	if (tok == NULL || w->req == NULL) {
		free(tok);
		replay_workload_fini(w);
		return -ENOMEM;
	}
	for (uint32_t c = 0; c < o->conversations && rc == 0; c++) {
		for (uint32_t t = 0; t < o->turns && rc == 0; t++) {
			size_t i = (size_t)c * o->turns + t;
			struct replay_req *r = &w->req[i];
			uint32_t pt;
			size_t nt = mt_tokens(o, c, t, tok, &pt);
			uint64_t h = replay_splitmix64((10ull << 56) | ((i << 32) ^ o->seed));

			r->arrival_ms = t == 0 ? start * 1000.0 : -1.0;
			r->prompt_tokens = pt;
			r->output_tokens = o->output_tokens;
			r->group = c;
			r->next = t + 1 < o->turns ? (int32_t)(i + 1) : -1;
			r->think_ms =
				o->think_ms > 0.0 ? -log(1.0 - wl_unit(h)) * o->think_ms : 0.0;
			w->prompt_tokens += pt;
			rc = wl_add_chain(w, r, tok, nt);
			w->nreq = i + 1;
		}
		start += wl_exp_gap_s(
			replay_splitmix64((9ull << 56) | (((uint64_t)c << 32) ^ o->seed)), o->rate);
	}
	free(tok);
	if (rc < 0) {
		replay_workload_fini(w);
	}
	return rc;
}

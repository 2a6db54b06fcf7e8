/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workloads of kvdex-bench baseline and the model that predicts every
 * answer.
 *
 * Synthetic: the data set of kvdex-bench lookup (perf/bench_gen.c: same seed,
 * same keys and holders), loaded the same way, then a churn of whole-chain
 * moves between workers. Every chain always has exactly H holders that hold
 * all of it, so a window's expected answer is known from the chain alone.
 *
 * Trace: a Mooncake conversation trace (512-token blocks, chained hash ids:
 * an id always has the same predecessor, so a match is always a prefix).
 * Each request is a lookup of its chain, then a publish of the blocks the
 * routed worker does not hold yet, which is the lookups-plus-inserts shape the
 * IBM paper drives Redis with. The whole request sequence, with the expected
 * answer of every lookup and the events of every publish, is computed here
 * once against a model (holders per block), so every system replays exactly
 * the same operations and is checked against the same answers. There is no
 * eviction: workers keep what they store for the whole trace.
 */
#include "perf/bench_baseline.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t
bl_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

void
bl_answer_add(struct bl_answer *a, uint32_t worker, uint32_t matched)
{
	if (matched == 0 || matched < a->longest) {
		return;
	}
	if (matched > a->longest) {
		a->longest = matched;
		a->ntop = 0;
		a->topsig = 0;
	}
	a->ntop++;
	a->topsig += bl_mix64(worker);
}

/* ---- Matcher ------------------------------------------------------------------ */

int
bl_matcher_init(struct bl_matcher *m, uint32_t max_worker)
{
	memset(m, 0, sizeof(*m));
	m->cap = max_worker + 1;
	m->matched = calloc(m->cap, sizeof(*m->matched));
	m->stamp = calloc(m->cap, sizeof(*m->stamp));
	m->touched = calloc(m->cap, sizeof(*m->touched));
	if (!m->matched || !m->stamp || !m->touched) {
		bl_matcher_fini(m);
		return -ENOMEM;
	}
	return 0;
}

void
bl_matcher_fini(struct bl_matcher *m)
{
	if (!m) {
		return;
	}
	free(m->matched);
	free(m->stamp);
	free(m->touched);
	memset(m, 0, sizeof(*m));
}

void
bl_matcher_begin(struct bl_matcher *m)
{
	if (++m->gen == 0) {
		memset(m->stamp, 0, m->cap * sizeof(*m->stamp));
		m->gen = 1;
	}
	m->ntouched = 0;
	m->pos = 0;
	m->alive = true;
}

bool
bl_matcher_block(struct bl_matcher *m)
{
	m->advanced = false;
	return m->alive;
}

uint32_t
bl_matcher_get(const struct bl_matcher *m, uint32_t worker)
{
	return worker < m->cap && m->stamp[worker] == m->gen ? m->matched[worker] : 0;
}

int
bl_matcher_holder(struct bl_matcher *m, uint32_t worker)
{
	if (worker >= m->cap) {
		return -ERANGE;
	}
	/* Only a worker that held every earlier block advances; a holder listed
	 * twice (two tiers) advances once. */
	if (bl_matcher_get(m, worker) != m->pos) {
		return 0;
	}
	if (m->stamp[worker] != m->gen) {
		m->stamp[worker] = m->gen;
		m->touched[m->ntouched++] = worker;
	}
	m->matched[worker] = (uint16_t)(m->pos + 1);
	m->advanced = true;
	return 0;
}

void
bl_matcher_block_end(struct bl_matcher *m)
{
	if (!m->advanced) {
		m->alive = false;
		return;
	}
	m->pos++;
}

void
bl_matcher_answer(const struct bl_matcher *m, struct bl_answer *a)
{
	memset(a, 0, sizeof(*a));
	for (uint32_t i = 0; i < m->ntouched; i++) {
		uint32_t w = m->touched[i];

		bl_answer_add(a, w, m->matched[w]);
	}
}

/* ---- Streams ------------------------------------------------------------------ */

int
bl_stream_add(struct bl_stream *st, bool new_batch, uint32_t worker, uint64_t key, uint8_t type,
	      uint8_t tier)
{
	if (st->nev == st->capev) {
		size_t cap = st->capev ? st->capev * 2 : 4096;
		struct bl_event *n = realloc(st->ev, cap * sizeof(*n));

		if (!n) {
			return -ENOMEM;
		}
		st->ev = n;
		st->capev = cap;
	}
	if (new_batch || st->nb == 0) {
		if (st->nb == st->capb) {
			size_t cap = st->capb ? st->capb * 2 : 256;
			struct bl_batch *n = realloc(st->b, cap * sizeof(*n));

			if (!n) {
				return -ENOMEM;
			}
			st->b = n;
			st->capb = cap;
		}
		st->b[st->nb++] = (struct bl_batch){.worker = worker, .first = st->nev};
	}
	st->ev[st->nev++] =
		(struct bl_event){.key = key, .worker = worker, .type = type, .tier = tier};
	st->b[st->nb - 1].n++;
	return 0;
}

void
bl_stream_fini(struct bl_stream *st)
{
	if (!st) {
		return;
	}
	free(st->ev);
	free(st->b);
	memset(st, 0, sizeof(*st));
}

/* ---- Synthetic ------------------------------------------------------------------ */

/* Per-worker pending events, emitted as one batch when full. */
struct synth_pending {
	uint64_t *key;
	uint8_t *tier;
	unsigned n;
};

static int
synth_emit(struct bl_stream *st, struct synth_pending *p, uint32_t worker)
{
	for (unsigned i = 0; i < p->n; i++) {
		int rc = bl_stream_add(st, i == 0, worker, p->key[i], BL_EV_STORE, p->tier[i]);

		if (rc) {
			return rc;
		}
	}
	p->n = 0;
	return 0;
}

static int
synth_load_chains(const struct kvdex_bench_synth *d, unsigned batch, struct synth_pending *pend,
		  struct bl_stream *st)
{
	for (uint64_t c = 0; c < d->nchains; c++) {
		uint64_t end = (c + 1) * d->len < d->nblocks ? (c + 1) * d->len : d->nblocks;

		for (uint64_t i = c * d->len; i < end; i++) {
			for (unsigned j = 0; j < d->h; j++) {
				uint32_t w = d->holders[c * d->h + j];
				struct synth_pending *p = &pend[w - 1];
				int rc = 0;

				p->key[p->n] = d->keys[i];
				p->tier[p->n++] = (uint8_t)(j % KVDEX_NTIERS);
				if (p->n == batch) {
					rc = synth_emit(st, p, w);
				}
				if (rc) {
					return rc;
				}
			}
		}
	}
	for (unsigned w = 0; w < d->workers; w++) {
		int rc = synth_emit(st, &pend[w], w + 1);

		if (rc) {
			return rc;
		}
	}
	return 0;
}

int
bl_synth_load_stream(const struct kvdex_bench_synth *d, unsigned batch, struct bl_stream *st)
{
	struct synth_pending *pend = calloc(d->workers, sizeof(*pend));
	int rc = pend ? 0 : -ENOMEM;

	for (unsigned w = 0; w < d->workers && !rc; w++) {
		pend[w].key = malloc(batch * sizeof(*pend[w].key));
		pend[w].tier = malloc(batch);
		rc = pend[w].key && pend[w].tier ? 0 : -ENOMEM;
	}
	rc = rc ? rc : synth_load_chains(d, batch, pend, st);
	for (unsigned w = 0; pend && w < d->workers; w++) {
		free(pend[w].key);
		free(pend[w].tier);
	}
	free(pend);
	return rc;
}

static bool
synth_holds(const struct kvdex_bench_synth *d, uint64_t c, uint32_t w)
{
	for (unsigned j = 0; j < d->h; j++) {
		if (d->holders[c * d->h + j] == w) {
			return true;
		}
	}
	return false;
}

/* Move chain c's holder j to a worker that does not hold it. */
static int
synth_move(struct kvdex_bench_synth *d, struct kvdex_bench_rng *rng, uint64_t c, unsigned j,
	   struct bl_stream *st)
{
	uint32_t from = d->holders[c * d->h + j], to;
	uint8_t tier = (uint8_t)(j % KVDEX_NTIERS);
	int rc = 0;

	do {
		to = 1 + (uint32_t)kvdex_bench_rng_below(rng, d->workers);
	} while (synth_holds(d, c, to));
	for (unsigned i = 0; i < d->len && !rc; i++) {
		rc = bl_stream_add(st, i == 0, from, d->keys[c * d->len + i], BL_EV_REMOVE, tier);
	}
	for (unsigned i = 0; i < d->len && !rc; i++) {
		rc = bl_stream_add(st, i == 0, to, d->keys[c * d->len + i], BL_EV_STORE, tier);
	}
	d->holders[c * d->h + j] = to;
	return rc;
}

int
bl_synth_churn_stream(struct kvdex_bench_synth *d, uint64_t nevents, uint64_t seed,
		      struct bl_stream *st, uint64_t **moved, size_t *nmoved)
{
	struct kvdex_bench_rng rng = {.s = seed ^ 0x636875726eull};
	size_t nm = (size_t)((nevents + 2 * d->len - 1) / (2 * d->len));
	uint64_t *m;
	int rc = 0;

	*moved = NULL;
	*nmoved = 0;
	if (d->h >= d->workers) {
		fprintf(stderr, "kvdex-bench: no churn: every worker holds every chain\n");
		return -EINVAL;
	}
	m = malloc((nm ? nm : 1) * sizeof(*m));
	if (!m) {
		return -ENOMEM;
	}
	for (size_t i = 0; i < nm && !rc; i++) {
		m[i] = kvdex_bench_rng_below(&rng, d->nfull);
		rc = synth_move(d, &rng, m[i], (unsigned)kvdex_bench_rng_below(&rng, d->h), st);
	}
	if (rc) {
		free(m);
		return rc;
	}
	*moved = m;
	*nmoved = nm;
	return 0;
}

void
bl_synth_query(const struct kvdex_bench_synth *d, struct kvdex_bench_rng *rng, uint64_t chain,
	       unsigned L, uint64_t *keys, struct bl_answer *exp)
{
	uint64_t start = chain * d->len + kvdex_bench_rng_below(rng, d->len - L + 1);
	unsigned hit = L;

	memcpy(keys, &d->keys[start], L * sizeof(*keys));
	if (kvdex_bench_rng_below(rng, 4) == 0) {
		hit = (unsigned)kvdex_bench_rng_below(rng, L);
		/* Random 64-bit keys: absent from the index but for a 2^-64 chance. */
		for (unsigned i = hit; i < L; i++) {
			keys[i] = kvdex_bench_rng_next(rng);
		}
	}
	memset(exp, 0, sizeof(*exp));
	for (unsigned j = 0; hit && j < d->h; j++) {
		bl_answer_add(exp, d->holders[chain * d->h + j], hit);
	}
}

/* ---- Trace ---------------------------------------------------------------------- */

/* The model: hash id -> dense block index (open addressing), holders per
 * block, blocks stored per worker (the route's tie-break). */
struct trace_model {
	uint64_t *ids; /* slot -> id + 1 (0: empty) */
	uint32_t *idx;
	size_t cap, n;
	struct {
		uint16_t *w;
		uint16_t n, cap;
	} * hold;
	size_t holdcap;
	uint64_t *stored; /* per worker id */
	struct bl_matcher m;
	uint32_t *chain; /* the current request's part of `all` */
	uint32_t *all;	 /* dense index of every key of the trace (parallel to t->keys) */
	size_t allcap;
};

static int
model_grow_map(struct trace_model *tm)
{
	size_t ncap = tm->cap ? tm->cap * 2 : 1u << 16;
	uint64_t *ids = calloc(ncap, sizeof(*ids));
	uint32_t *idx = calloc(ncap, sizeof(*idx));

	if (!ids || !idx) {
		free(ids);
		free(idx);
		return -ENOMEM;
	}
	for (size_t s = 0; s < tm->cap; s++) {
		size_t h;

		if (!tm->ids[s]) {
			continue;
		}
		for (h = bl_mix64(tm->ids[s]) & (ncap - 1); ids[h]; h = (h + 1) & (ncap - 1)) {
		}
		ids[h] = tm->ids[s];
		idx[h] = tm->idx[s];
	}
	free(tm->ids);
	free(tm->idx);
	tm->ids = ids;
	tm->idx = idx;
	tm->cap = ncap;
	return 0;
}

/* Dense index of hash id `id`, created if new (*fresh set): >= 0 or -ENOMEM. */
static int64_t
model_block(struct trace_model *tm, uint64_t id, bool *fresh)
{
	size_t h;

	*fresh = false;
	if (2 * (tm->n + 1) > tm->cap && model_grow_map(tm)) {
		return -ENOMEM;
	}
	for (h = bl_mix64(id + 1) & (tm->cap - 1); tm->ids[h]; h = (h + 1) & (tm->cap - 1)) {
		if (tm->ids[h] == id + 1) {
			return tm->idx[h];
		}
	}
	if (tm->n == tm->holdcap) {
		size_t ncap = tm->holdcap ? tm->holdcap * 2 : 1u << 16;
		void *n = realloc(tm->hold, ncap * sizeof(*tm->hold));

		if (!n) {
			return -ENOMEM;
		}
		tm->hold = n;
		tm->holdcap = ncap;
	}
	memset(&tm->hold[tm->n], 0, sizeof(*tm->hold));
	tm->ids[h] = id + 1;
	tm->idx[h] = (uint32_t)tm->n;
	*fresh = true;
	return (int64_t)tm->n++;
}

static bool
model_holds(const struct trace_model *tm, uint32_t b, uint32_t w)
{
	for (uint16_t i = 0; i < tm->hold[b].n; i++) {
		if (tm->hold[b].w[i] == w) {
			return true;
		}
	}
	return false;
}

static int
model_add(struct trace_model *tm, uint32_t b, uint32_t w)
{
	if (tm->hold[b].n == tm->hold[b].cap) {
		uint16_t ncap = tm->hold[b].cap ? (uint16_t)(tm->hold[b].cap * 2) : 4;
		uint16_t *n = realloc(tm->hold[b].w, ncap * sizeof(*n));

		if (!n) {
			return -ENOMEM;
		}
		tm->hold[b].w = n;
		tm->hold[b].cap = ncap;
	}
	tm->hold[b].w[tm->hold[b].n++] = (uint16_t)w;
	tm->stored[w]++;
	return 0;
}

static void
model_fini(struct trace_model *tm, unsigned workers)
{
	for (size_t b = 0; b < tm->n; b++) {
		free(tm->hold[b].w);
	}
	free(tm->hold);
	free(tm->ids);
	free(tm->idx);
	free(tm->stored);
	free(tm->all);
	bl_matcher_fini(&tm->m);
}

/* Walk the model over dense blocks chain[0..n): the answer, and the
 * per-worker matched counts left in tm->m. */
static void
model_walk(struct trace_model *tm, const uint32_t *chain, uint32_t n, struct bl_answer *a)
{
	bl_matcher_begin(&tm->m);
	for (uint32_t i = 0; i < n && bl_matcher_block(&tm->m); i++) {
		for (uint16_t j = 0; j < tm->hold[chain[i]].n; j++) {
			bl_matcher_holder(&tm->m, tm->hold[chain[i]].w[j]);
		}
		bl_matcher_block_end(&tm->m);
	}
	bl_matcher_answer(&tm->m, a);
}

/* The worker the route sends request r to, given the model's walk. */
static uint32_t
model_route(const struct trace_model *tm, enum bl_route route, size_t r, uint32_t n,
	    unsigned workers, const struct bl_answer *a)
{
	uint32_t best = 0;

	if (route == BL_ROUTE_RR || a->longest == 0 ||
	    (route == BL_ROUTE_HALF && 2 * a->longest < n)) {
		return (uint32_t)(r % workers) + 1;
	}
	for (uint32_t i = 0; i < tm->m.ntouched; i++) {
		uint32_t w = tm->m.touched[i];

		if (tm->m.matched[w] != a->longest) {
			continue;
		}
		if (!best || tm->stored[w] < tm->stored[best] ||
		    (tm->stored[w] == tm->stored[best] && w < best)) {
			best = w;
		}
	}
	return best;
}

static int
trace_push_key(struct bl_trace *t, uint64_t key)
{
	if (t->nkeys == t->capkeys) {
		size_t cap = t->capkeys ? t->capkeys * 2 : 1u << 16;
		uint64_t *n = realloc(t->keys, cap * sizeof(*n));

		if (!n) {
			return -ENOMEM;
		}
		t->keys = n;
		t->capkeys = cap;
	}
	t->keys[t->nkeys++] = key;
	return 0;
}

static int
trace_push_req(struct bl_trace *t)
{
	if (t->nreq == t->capreq) {
		size_t cap = t->capreq ? t->capreq * 2 : 4096;
		struct bl_trace_req *n = realloc(t->req, cap * sizeof(*n));

		if (!n) {
			return -ENOMEM;
		}
		t->req = n;
		t->capreq = cap;
	}
	memset(&t->req[t->nreq++], 0, sizeof(*t->req));
	return 0;
}

/* Parse one line's hash_ids into the model's chain and the trace's keys:
 * the number of blocks, or -EPROTO. */
static int
trace_parse_line(char *line, struct trace_model *tm, struct bl_trace *t, uint64_t *ts)
{
	char *p = strstr(line, "\"timestamp\"");
	uint32_t n = 0;

	*ts = p ? strtoull(strchr(p, ':') ? strchr(p, ':') + 1 : p, NULL, 10) : 0;
	p = strstr(line, "\"hash_ids\"");
	p = p ? strchr(p, '[') : NULL;
	if (!p) {
		return -EPROTO;
	}
	for (p++;;) {
		char *end;
		unsigned long long id;
		bool fresh;
		int64_t b;

		while (*p == ' ' || *p == ',') {
			p++;
		}
		if (*p == ']') {
			return (int)n;
		}
		id = strtoull(p, &end, 10);
		if (end == p) {
			return -EPROTO;
		}
		p = end;
		b = model_block(tm, id, &fresh);
		if (b < 0 || trace_push_key(t, bl_mix64(id ^ 0x6d6f6f6e63616b65ull) | 1)) {
			return -ENOMEM;
		}
		if (t->nkeys > tm->allcap) {
			size_t cap = tm->allcap ? tm->allcap * 2 : 1u << 16;
			uint32_t *c = realloc(tm->all, cap * sizeof(*c));

			if (!c) {
				return -ENOMEM;
			}
			tm->all = c;
			tm->allcap = cap;
		}
		tm->all[t->nkeys - 1] = (uint32_t)b;
		tm->chain = &tm->all[t->nkeys - 1 - n];
		n++;
		t->new_blocks += fresh;
	}
}

/* Walk the model for the request just parsed; route it; emit its stores. */
static int
trace_plan(struct trace_model *tm, struct bl_trace *t, enum bl_route route, unsigned workers)
{
	struct bl_trace_req *rq = &t->req[t->nreq - 1];
	uint32_t w, m_w;

	model_walk(tm, tm->chain, rq->n, &rq->exp);
	t->hit_blocks += rq->exp.longest;
	w = model_route(tm, route, t->nreq - 1, rq->n, workers, &rq->exp);
	m_w = bl_matcher_get(&tm->m, w);
	rq->worker = w;
	rq->batch = SIZE_MAX;
	for (uint32_t i = m_w; i < rq->n; i++) {
		int rc;

		/* A block the worker already has (a repeated id) is not stored twice:
		 * kvdex would count a second copy, the others would not. */
		if (model_holds(tm, tm->chain[i], w)) {
			continue;
		}
		if (rq->nev == 0) {
			rq->batch = t->st.nb;
		}
		rc = bl_stream_add(&t->st, rq->nev == 0, w, t->keys[rq->koff + i], BL_EV_STORE,
				   KVDEX_GPU);
		rc = rc ? rc : model_add(tm, tm->chain[i], w);
		if (rc) {
			return rc;
		}
		rq->nev++;
	}
	return 0;
}

static int
trace_read(FILE *f, const char *path, size_t max_requests, unsigned workers, enum bl_route route,
	   struct trace_model *tm, struct bl_trace *t)
{
	char *line = NULL;
	size_t cap = 0, lineno = 0;
	uint64_t ts = 0, first_ts = 0;
	int rc = 0;

	while ((max_requests == 0 || t->nreq < max_requests) && getline(&line, &cap, f) > 0) {
		size_t koff = t->nkeys;
		int n;

		lineno++;
		n = trace_parse_line(line, tm, t, &ts);
		if (n <= 0) {
			fprintf(stderr, "kvdex-bench: %s:%zu: %s\n", path, lineno,
				n == 0 ? "empty hash_ids" : "no hash_ids array");
			rc = n == 0 ? -EPROTO : n;
			break;
		}
		first_ts = t->nreq == 0 ? ts : first_ts;
		t->span_ms = ts - first_ts;
		rc = trace_push_req(t);
		if (rc) {
			break;
		}
		t->req[t->nreq - 1].koff = koff;
		t->req[t->nreq - 1].n = (uint32_t)n;
		t->max_chain = (uint32_t)n > t->max_chain ? (uint32_t)n : t->max_chain;
		rc = trace_plan(tm, t, route, workers);
		if (rc) {
			break;
		}
	}
	free(line);
	return rc;
}

int
bl_trace_load(const char *path, size_t max_requests, unsigned workers, enum bl_route route,
	      struct bl_trace *t)
{
	struct trace_model tm = {0};
	FILE *f = fopen(path, "r");
	int rc;

	memset(t, 0, sizeof(*t));
	if (!f) {
		rc = -errno;
		fprintf(stderr, "kvdex-bench: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	tm.stored = calloc(workers + 1, sizeof(*tm.stored));
	rc = tm.stored ? bl_matcher_init(&tm.m, workers) : -ENOMEM;
	rc = rc ? rc : trace_read(f, path, max_requests, workers, route, &tm, t);
	/* The answers the same lookups get from the final index. */
	for (size_t i = 0; !rc && i < t->nreq; i++) {
		model_walk(&tm, &tm.all[t->req[i].koff], t->req[i].n, &t->req[i].exp_final);
	}
	if (!rc && t->nreq == 0) {
		fprintf(stderr, "kvdex-bench: %s: no requests\n", path);
		rc = -EPROTO;
	}
	t->distinct_blocks = tm.n;
	model_fini(&tm, workers);
	fclose(f);
	if (rc) {
		bl_trace_fini(t);
	}
	return rc;
}

void
bl_trace_fini(struct bl_trace *t)
{
	if (!t) {
		return;
	}
	free(t->keys);
	free(t->req);
	bl_stream_fini(&t->st);
	memset(t, 0, sizeof(*t));
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mooncake FAST'25 traces (JSON lines: timestamp ms, input_length,
 * output_length, hash_ids = one id per 512-token block of the input, chained
 * and global to the file; /work/shared/traces/README.md) as a replay
 * workload.
 *
 * Keys: key = splitmix64(hash_id ^ salt), so equal ids are equal keys and the
 * trace's prefix tree is kept. The prompt's blocks are its hash_ids (the last
 * one may be partial: a hit on it counts at most the prompt's tokens). At
 * completion a worker caches prompt + output[:-1]; the blocks past the
 * prompt's get keys of their own (request and position), which no later
 * request shares, since the trace's next turns carry ids of their own.
 *
 * Timestamps: the conversation trace has ~3 s buckets; replaying them as is
 * sends bursts. REPLAY_SPREAD_EVEN spreads the k requests of a timestamp T
 * evenly over [T, T') where T' is the next distinct timestamp (the last
 * bucket uses the median bucket width); UNIFORM draws k seeded offsets in
 * [T, T') and sorts them, keeping the file order inside the bucket.
 *
 * The parser accepts exactly the four keys it needs in any order, ignores
 * others with scalar values, and rejects anything else (nested objects,
 * missing keys, negative or non-integer lengths) with -EINVAL.
 */
#include "perf/replay/replay.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MC_KEY_SALT 0x6d6f6f6e63616b65ull /* "mooncake" */
#define MC_OUT_SALT 0x6f75747075746b76ull

void
replay_mooncake_opts_init(struct replay_mooncake_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->block_size = 512;
	o->spread = REPLAY_SPREAD_EVEN;
	o->time_scale = 1.0;
	o->seed = 1;
}

static const char *
mc_ws(const char *p)
{
	while (*p != '\0' && isspace((unsigned char)*p)) {
		p++;
	}
	return p;
}

static const char *
mc_number(const char *p, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(p, &end);
	if (end == p || errno != 0 || !isfinite(*v)) {
		return NULL;
	}
	return end;
}

static int
mc_push_hash(struct replay_mc_line *l, double v)
{
	if (v < 0 || v != floor(v) || v > 9.007199254740992e15) {
		return -EINVAL;
	}
	if (l->nhash == l->caphash) {
		size_t cap = l->caphash ? l->caphash * 2 : 64;
		uint64_t *h = realloc(l->hash_ids, cap * sizeof(*h));

		if (h == NULL) {
			return -ENOMEM;
		}
		l->hash_ids = h;
		l->caphash = cap;
	}
	l->hash_ids[l->nhash++] = (uint64_t)v;
	return 0;
}

static const char *
mc_array(const char *p, struct replay_mc_line *l)
{
	double v;

	p = mc_ws(p + 1);
	if (*p == ']') {
		return p + 1;
	}
	for (;;) {
		p = mc_number(mc_ws(p), &v);
		if (p == NULL || mc_push_hash(l, v) < 0) {
			return NULL;
		}
		p = mc_ws(p);
		if (*p == ']') {
			return p + 1;
		}
		if (*p != ',') {
			return NULL;
		}
		p++;
	}
}

static int
mc_len(double v, uint32_t *out)
{
	if (v < 0 || v != floor(v) || v > (double)UINT32_MAX) {
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

/* One "key": value pair at p; *seen gets a bit per known key. */
static const char *
mc_pair(const char *p, struct replay_mc_line *l, unsigned *seen)
{
	const char *k = p + 1, *ke = strchr(k, '"');
	size_t kl;
	double v;

	if (ke == NULL) {
		return NULL;
	}
	kl = (size_t)(ke - k);
	p = mc_ws(ke + 1);
	if (*p != ':') {
		return NULL;
	}
	p = mc_ws(p + 1);
	if (kl == 8 && memcmp(k, "hash_ids", 8) == 0) {
		*seen |= 8;
		return *p == '[' ? mc_array(p, l) : NULL;
	}
	p = mc_number(p, &v);
	if (p == NULL) {
		return NULL;
	}
	if (kl == 9 && memcmp(k, "timestamp", 9) == 0) {
		l->timestamp = v;
		*seen |= 1;
	} else if (kl == 12 && memcmp(k, "input_length", 12) == 0) {
		*seen |= 2;
		return mc_len(v, &l->input_length) == 0 ? p : NULL;
	} else if (kl == 13 && memcmp(k, "output_length", 13) == 0) {
		*seen |= 4;
		return mc_len(v, &l->output_length) == 0 ? p : NULL;
	}
	return p;
}

int
replay_mooncake_parse_line(const char *line, struct replay_mc_line *out)
{
	const char *p = mc_ws(line);
	unsigned seen = 0;

	out->nhash = 0;
	if (*p != '{') {
		return -EINVAL;
	}
	p = mc_ws(p + 1);
	while (*p == '"') {
		p = mc_pair(p, out, &seen);
		if (p == NULL) {
			return -EINVAL;
		}
		p = mc_ws(p);
		if (*p == ',') {
			p = mc_ws(p + 1);
		}
	}
	if (*p != '}' || *mc_ws(p + 1) != '\0' || seen != 15 || out->timestamp < 0) {
		return -EINVAL;
	}
	return 0;
}

static int
dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median width between consecutive distinct timestamps (0 if fewer than 2). */
static double
spread_median_width(const double *t, size_t n)
{
	double *w = malloc((n ? n : 1) * sizeof(*w)), m;
	size_t k = 0;

	if (w == NULL) {
		return 0.0;
	}
	for (size_t i = 1; i < n; i++) {
		if (t[i] > t[i - 1]) {
			w[k++] = t[i] - t[i - 1];
		}
	}
	qsort(w, k, sizeof(*w), dbl_cmp);
	m = k ? w[k / 2] : 0.0;
	free(w);
	return m;
}

void
replay_spread_times(double *t, size_t n, enum replay_spread how, uint64_t seed)
{
	double last_w;
	size_t i = 0;

	if (how == REPLAY_SPREAD_NONE || n == 0) {
		return;
	}
	last_w = spread_median_width(t, n);
	while (i < n) {
		size_t j = i;
		double t0 = t[i], width;

		while (j < n && t[j] == t0) {
			j++;
		}
		width = j < n ? t[j] - t0 : last_w;
		for (size_t k = i; k < j; k++) {
			double u = how == REPLAY_SPREAD_EVEN
					   ? (double)(k - i) / (double)(j - i)
					   : (double)(replay_splitmix64(seed ^ (k * 0x9e37ull)) >>
						      11) *
						     0x1.0p-53;

			t[k] = t0 + u * width;
		}
		if (how == REPLAY_SPREAD_UNIFORM) {
			qsort(t + i, j - i, sizeof(*t), dbl_cmp);
		}
		i = j;
	}
}

/* Append request `rid` of line l to w. */
static int
mc_add(struct replay_workload *w, const struct replay_mc_line *l, size_t rid, uint64_t seed)
{
	struct replay_req *r = &w->req[rid];
	uint64_t total = (uint64_t)l->input_length + (l->output_length ? l->output_length - 1 : 0);
	size_t nb = (size_t)((total + w->block_size - 1) / w->block_size);
	size_t cap;

	nb = nb > l->nhash ? nb : l->nhash;
	if (w->nkeys + nb > w->capkeys) {
		uint64_t *k;

		cap = w->capkeys ? w->capkeys : 4096;
		while (cap < w->nkeys + nb) {
			cap *= 2;
		}
		k = realloc(w->keys, cap * sizeof(*k));
		if (k == NULL) {
			return -ENOMEM;
		}
		w->keys = k;
		w->capkeys = cap;
	}
	r->arrival_ms = l->timestamp;
	r->prompt_tokens = l->input_length;
	r->output_tokens = l->output_length;
	r->key_off = w->nkeys;
	r->nprompt_blocks = (uint32_t)l->nhash;
	r->nkeys = (uint32_t)nb;
	r->next = -1;
	for (size_t i = 0; i < nb; i++) {
		uint64_t k = i < l->nhash ? replay_splitmix64(l->hash_ids[i] ^ MC_KEY_SALT)
					  : replay_splitmix64(((uint64_t)rid << 20 | i) ^
							      MC_OUT_SALT ^ (seed << 44));

		w->keys[w->nkeys++] = k ? k : 1;
	}
	w->prompt_tokens += l->input_length;
	return 0;
}

static int
mc_grow(struct replay_workload *w, size_t *cap)
{
	size_t nc = *cap ? *cap * 2 : 1024;
	struct replay_req *r = realloc(w->req, nc * sizeof(*r));

	if (r == NULL) {
		return -ENOMEM;
	}
	memset(r + *cap, 0, (nc - *cap) * sizeof(*r));
	w->req = r;
	*cap = nc;
	return 0;
}

/* Spread and scale the arrival times (file order = arrival order). */
static int
mc_times(const struct replay_mooncake_opts *o, struct replay_workload *w)
{
	double *t = malloc((w->nreq ? w->nreq : 1) * sizeof(*t)), t0;

	if (t == NULL) {
		return -ENOMEM;
	}
	for (size_t i = 0; i < w->nreq; i++) {
		t[i] = w->req[i].arrival_ms;
		if (i > 0 && t[i] < t[i - 1]) {
			t[i] = t[i - 1]; /* out of order: keep file order */
		}
	}
	replay_spread_times(t, w->nreq, o->spread, o->seed);
	t0 = w->nreq ? t[0] : 0.0;
	for (size_t i = 0; i < w->nreq; i++) {
		w->req[i].arrival_ms = (t[i] - t0) * o->time_scale;
	}
	free(t);
	return 0;
}

int
replay_mooncake_load(const struct replay_mooncake_opts *o, struct replay_workload *w)
{
	struct replay_mc_line l = {0};
	char *line = NULL;
	size_t linecap = 0, cap = 0, lineno = 0;
	ssize_t len;
	FILE *f;
	int rc = 0;

	if (o->path == NULL || o->block_size == 0 || !(o->time_scale > 0.0)) {
		return -EINVAL;
	}
	f = fopen(o->path, "r");
	if (f == NULL) {
		rc = -errno;
		fprintf(stderr, "kvdex-replay: %s: %s\n", o->path, strerror(errno));
		return rc;
	}
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "mooncake");
	w->block_size = o->block_size;
	while ((o->limit == 0 || w->nreq < o->limit) && (len = getline(&line, &linecap, f)) >= 0) {
		lineno++;
		if (len == 0 || *mc_ws(line) == '\0') {
			continue;
		}
		if (replay_mooncake_parse_line(line, &l) < 0) {
			fprintf(stderr, "kvdex-replay: %s:%zu: not a Mooncake trace line\n",
				o->path, lineno);
			rc = -EINVAL;
			break;
		}
		if (w->nreq == cap && (rc = mc_grow(w, &cap)) < 0) {
			break;
		}
		rc = mc_add(w, &l, w->nreq, o->seed);
		if (rc < 0) {
			break;
		}
		w->nreq++;
	}
	free(line);
	free(l.hash_ids);
	fclose(f);
	if (rc == 0 && w->nreq == 0) {
		fprintf(stderr, "kvdex-replay: %s: no requests\n", o->path);
		rc = -EINVAL;
	}
	if (rc == 0) {
		rc = mc_times(o, w);
	}
	if (rc < 0) {
		replay_workload_fini(w);
	}
	return rc;
}

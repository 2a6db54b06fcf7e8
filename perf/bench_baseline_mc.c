/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memcached as a prefix index for kvdex-bench baseline: one item per block
 * ("pk:1:<key>"), whose value is the packed holder list of the redis-mget
 * layout (8-byte records: worker u32 LE, dp u16 LE, tier u8, pad).
 *
 * We speak the text protocol over one blocking TCP socket rather than link
 * libmemcached: we need three commands (get/gets, add/cas, flush_all) and full
 * control over pipelining, which is a couple of hundred lines here; the
 * library would add a dependency and its own buffering and key hashing
 * between us and the wire.
 *
 * Lookup: one multi-get of the chain ("get k1 k2 ...", split into several
 * pipelined commands of at most ~2 KB so no line limit applies): one round
 * trip; memcached returns the hits in request order and the client walks
 * them.
 *
 * Publish: memcached has no operation that edits part of a value, so a batch
 * is a read-modify-write with compare-and-swap: one pipelined "gets" of the
 * batch's distinct keys, then one pipelined round of "cas" (or "add" for an
 * absent key), and the keys whose cas or add lost a race (EXISTS, NOT_FOUND,
 * NOT_STORED) go round again. Two round trips per batch without contention.
 * Caveats: memcached may evict or expire items under memory pressure (the
 * server gets -m 1024, far above what we load), a holder list that becomes
 * empty stays as an empty item (a cas'd delete needs the meta protocol), and
 * an item cannot exceed 1 MB (131072 holders).
 */
#include "perf/bench_baseline.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MC_KEY_LEN 24
#define MC_LINE_KEYS_BYTES 2000u
#define MC_MAX_ROUNDS 16u

/* One distinct key of a batch, or one block of a lookup. */
struct mc_item {
	char key[MC_KEY_LEN];
	uint8_t klen;
	bool present;
	bool done;
	uint64_t cas;
	size_t voff, vlen; /* into vbuf */
};

struct mc_priv {
	int fd;
	char *rbuf;
	size_t rcap, rpos, rlen;
	char *wbuf;
	size_t wcap, wlen;
	char *vbuf;
	size_t vcap, vlen;
	struct mc_item *it;
	uint32_t *order;
	size_t itcap;
	struct bl_matcher m;
};

/* ---- buffers and socket ---------------------------------------------------------- */

static int
mc_reserve(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 4096;
	char *n;

	if (need <= *cap) {
		return 0;
	}
	while (ncap < need) {
		ncap *= 2;
	}
	n = realloc(*buf, ncap);
	if (!n) {
		return -ENOMEM;
	}
	*buf = n;
	*cap = ncap;
	return 0;
}

static int
mc_put(struct mc_priv *p, const void *data, size_t len)
{
	if (mc_reserve(&p->wbuf, &p->wcap, p->wlen + len)) {
		return -ENOMEM;
	}
	memcpy(p->wbuf + p->wlen, data, len);
	p->wlen += len;
	return 0;
}

static int
mc_flush(struct mc_priv *p)
{
	for (size_t off = 0; off < p->wlen;) {
		ssize_t w = write(p->fd, p->wbuf + off, p->wlen - off);

		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w <= 0) {
			return w < 0 ? -errno : -ECONNRESET;
		}
		off += (size_t)w;
	}
	p->wlen = 0;
	return 0;
}

/* Make at least n unread bytes available in rbuf[rpos..]. */
static int
mc_fill(struct mc_priv *p, size_t n)
{
	if (p->rpos && p->rlen - p->rpos < n) {
		memmove(p->rbuf, p->rbuf + p->rpos, p->rlen - p->rpos);
		p->rlen -= p->rpos;
		p->rpos = 0;
	}
	if (mc_reserve(&p->rbuf, &p->rcap, p->rpos + n + 1)) {
		return -ENOMEM;
	}
	while (p->rlen - p->rpos < n) {
		ssize_t r = read(p->fd, p->rbuf + p->rlen, p->rcap - p->rlen - 1);

		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r <= 0) {
			return r < 0 ? -errno : -ECONNRESET;
		}
		p->rlen += (size_t)r;
	}
	return 0;
}

/* Next "\r\n"-terminated line, NUL-terminated in place (valid until the next
 * read). */
static int
mc_line(struct mc_priv *p, char **line)
{
	size_t scanned = 0;

	for (;;) {
		char *start = p->rbuf + p->rpos;
		size_t avail = p->rlen - p->rpos;
		char *nl = avail > scanned ? memchr(start + scanned, '\n', avail - scanned) : NULL;
		int rc;

		if (nl) {
			if (nl == start || nl[-1] != '\r') {
				return -EPROTO;
			}
			nl[-1] = '\0';
			*line = start;
			p->rpos += (size_t)(nl - start) + 1;
			return 0;
		}
		scanned = avail;
		rc = mc_fill(p, avail + 1);
		if (rc) {
			return rc;
		}
	}
}

/* ---- multi-get ------------------------------------------------------------------ */

static int
mc_item_grow(struct mc_priv *p, size_t n)
{
	size_t cap = p->itcap ? p->itcap : 64;
	void *a, *b;

	if (n <= p->itcap) {
		return 0;
	}
	while (cap < n) {
		cap *= 2;
	}
	a = realloc(p->it, cap * sizeof(*p->it));
	if (a) {
		p->it = a;
	}
	b = realloc(p->order, cap * sizeof(*p->order));
	if (b) {
		p->order = b;
	}
	if (!a || !b) {
		return -ENOMEM;
	}
	p->itcap = cap;
	return 0;
}

static void
mc_set_key(struct mc_item *it, uint64_t key)
{
	it->klen = (uint8_t)snprintf(it->key, sizeof(it->key), "pk:1:%016" PRIx64, key);
}

/* Queue "get"/"gets" commands for items idx[0..n) (lines of <= ~2 KB). */
static int
mc_queue_get(struct mc_priv *p, const char *cmd, const uint32_t *idx, size_t n, unsigned *ncmds)
{
	size_t line = 0;
	int rc = 0;

	*ncmds = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		const struct mc_item *it = &p->it[idx[i]];

		if (line == 0) {
			rc = mc_put(p, cmd, strlen(cmd));
			(*ncmds)++;
		}
		rc = rc ? rc : mc_put(p, " ", 1);
		rc = rc ? rc : mc_put(p, it->key, it->klen);
		line += it->klen + 1u;
		if (line >= MC_LINE_KEYS_BYTES || i + 1 == n) {
			rc = rc ? rc : mc_put(p, "\r\n", 2);
			line = 0;
		}
	}
	return rc;
}

/* One VALUE line: key, bytes and (for gets) the cas unique. */
static int
mc_parse_value(char *line, bool with_cas, char **key, size_t *bytes, uint64_t *cas)
{
	char *save = NULL, *tok;
	unsigned long long v;

	if (strncmp(line, "VALUE ", 6) != 0) {
		return -EPROTO;
	}
	*key = strtok_r(line + 6, " ", &save);
	tok = *key ? strtok_r(NULL, " ", &save) : NULL; /* flags */
	tok = tok ? strtok_r(NULL, " ", &save) : NULL;
	if (!tok) {
		return -EPROTO;
	}
	*bytes = strtoull(tok, NULL, 10);
	if (with_cas) {
		tok = strtok_r(NULL, " ", &save);
		if (!tok) {
			return -EPROTO;
		}
		v = strtoull(tok, NULL, 10);
		*cas = v;
	}
	return 0;
}

/* Read the replies of mc_queue_get: hits come back in request order, so each
 * VALUE belongs to the next requested item with that key. Values go to vbuf. */
static int
mc_read_get(struct mc_priv *p, const uint32_t *idx, size_t n, unsigned ncmds, bool with_cas)
{
	size_t next = 0;

	p->vlen = 0;
	for (size_t i = 0; i < n; i++) {
		p->it[idx[i]].present = false;
		p->it[idx[i]].vlen = 0;
	}
	while (ncmds) {
		char *line, *key;
		size_t bytes;
		uint64_t cas = 0;
		int rc = mc_line(p, &line);

		if (rc) {
			return rc;
		}
		if (strcmp(line, "END") == 0) {
			ncmds--;
			continue;
		}
		if (mc_parse_value(line, with_cas, &key, &bytes, &cas)) {
			fprintf(stderr, "kvdex-bench: memcached: unexpected reply '%s'\n", line);
			return -EPROTO;
		}
		while (next < n && strcmp(p->it[idx[next]].key, key) != 0) {
			next++;
		}
		if (next == n || mc_fill(p, bytes + 2) ||
		    mc_reserve(&p->vbuf, &p->vcap, p->vlen + bytes)) {
			return -EPROTO;
		}
		p->it[idx[next]].present = true;
		p->it[idx[next]].cas = cas;
		p->it[idx[next]].voff = p->vlen;
		p->it[idx[next]].vlen = bytes;
		memcpy(p->vbuf + p->vlen, p->rbuf + p->rpos, bytes);
		p->vlen += bytes;
		p->rpos += bytes + 2;
		next++;
	}
	return 0;
}

/* ---- lookup ------------------------------------------------------------------- */

static int
mc_lookup(struct bl_sys *s, const uint64_t *keys, uint32_t n, struct bl_answer *a)
{
	struct mc_priv *p = s->priv;
	unsigned ncmds;
	int rc = mc_item_grow(p, n);

	for (uint32_t i = 0; i < n && !rc; i++) {
		mc_set_key(&p->it[i], keys[i]);
		p->order[i] = i;
	}
	rc = rc ? rc : mc_queue_get(p, "get", p->order, n, &ncmds);
	rc = rc ? rc : mc_flush(p);
	rc = rc ? rc : mc_read_get(p, p->order, n, ncmds, false);
	if (rc) {
		return rc;
	}
	bl_matcher_begin(&p->m);
	for (uint32_t i = 0; i < n && bl_matcher_block(&p->m); i++) {
		const struct mc_item *it = &p->it[i];

		if (it->present && it->vlen % BL_PACKED_REC) {
			return -EPROTO;
		}
		for (size_t off = 0; it->present && off < it->vlen; off += BL_PACKED_REC) {
			const unsigned char *r = (const unsigned char *)p->vbuf + it->voff + off;
			uint32_t w = r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 |
				     (uint32_t)r[3] << 24;

			if (r[4] || r[5] || bl_matcher_holder(&p->m, w)) {
				return -EPROTO;
			}
		}
		bl_matcher_block_end(&p->m);
	}
	bl_matcher_answer(&p->m, a);
	return 0;
}

/* ---- publish ------------------------------------------------------------------ */

static const struct bl_event *mc_sort_ev;

/* By key, then by position: a key's events stay in publish order. */
static int
mc_cmp_order(const void *x, const void *y)
{
	uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
	uint64_t a = mc_sort_ev[i].key, b = mc_sort_ev[j].key;

	return a < b ? -1 : a > b ? 1 : (i > j) - (i < j);
}

/* The new holder list of one key: its current value with events
 * ev[order[from..to)] applied in order, written to out (enough room). */
static size_t
mc_edit(const char *cur, size_t len, const struct bl_event *ev, const uint32_t *order, size_t from,
	size_t to, uint32_t worker, char *out)
{
	size_t n = 0;

	memcpy(out, cur, len);
	n = len;
	for (size_t k = from; k < to; k++) {
		const struct bl_event *e = &ev[order[k]];
		unsigned char rec[BL_PACKED_REC] = {
			(unsigned char)worker,
			(unsigned char)(worker >> 8),
			(unsigned char)(worker >> 16),
			(unsigned char)(worker >> 24),
			0,
			0,
			e->tier,
			0,
		};
		size_t at = n;

		for (size_t off = 0; off < n; off += BL_PACKED_REC) {
			if (memcmp(out + off, rec, 6) == 0) {
				at = off;
				break;
			}
		}
		if (e->type == BL_EV_REMOVE) {
			if (at < n) {
				memmove(out + at, out + at + BL_PACKED_REC, n - at - BL_PACKED_REC);
				n -= BL_PACKED_REC;
			}
			continue;
		}
		memcpy(out + at, rec, BL_PACKED_REC);
		n = at == n ? n + BL_PACKED_REC : n;
	}
	return n;
}

/* Queue the cas/add of every pending distinct key. */
static int
mc_queue_store(struct mc_priv *p, const struct bl_event *ev, const uint32_t *ord, const size_t *grp,
	       const uint32_t *pend, size_t npend, uint32_t worker, char *tmp)
{
	int rc = 0;

	for (size_t g = 0; g < npend && !rc; g++) {
		struct mc_item *it = &p->it[pend[g]];
		size_t from = grp[pend[g]], to = grp[pend[g] + 1];
		size_t len = mc_edit(it->present ? p->vbuf + it->voff : "",
				     it->present ? it->vlen : 0, ev, ord, from, to, worker, tmp);
		char hdr[96];
		int hl;

		if (it->present) {
			hl = snprintf(hdr, sizeof(hdr), "cas %s 0 0 %zu %" PRIu64 "\r\n", it->key,
				      len, it->cas);
		} else {
			hl = snprintf(hdr, sizeof(hdr), "add %s 0 0 %zu\r\n", it->key, len);
		}
		rc = mc_put(p, hdr, (size_t)hl);
		rc = rc ? rc : mc_put(p, tmp, len);
		rc = rc ? rc : mc_put(p, "\r\n", 2);
	}
	return rc;
}

/* Read the store replies; keys that lost a race stay pending. */
static int
mc_read_store(struct mc_priv *p, uint32_t *pend, size_t *npend)
{
	size_t keep = 0;

	for (size_t g = 0; g < *npend; g++) {
		char *line;
		int rc = mc_line(p, &line);

		if (rc) {
			return rc;
		}
		if (strcmp(line, "STORED") == 0) {
			continue;
		}
		if (strcmp(line, "EXISTS") && strcmp(line, "NOT_FOUND") &&
		    strcmp(line, "NOT_STORED")) {
			fprintf(stderr, "kvdex-bench: memcached store: '%s'\n", line);
			return -EIO;
		}
		pend[keep++] = pend[g];
	}
	*npend = keep;
	return 0;
}

/* Group the batch by key: items 0..ng-1 are the distinct keys, grp[g] the
 * first position in ord of group g (grp[ng] = n). */
static int
mc_group(struct mc_priv *p, const struct bl_event *ev, uint32_t n, uint32_t *ord, size_t *grp,
	 size_t *ng)
{
	size_t g = 0;

	for (uint32_t i = 0; i < n; i++) {
		ord[i] = i;
	}
	mc_sort_ev = ev;
	qsort(ord, n, sizeof(*ord), mc_cmp_order);
	for (uint32_t i = 0; i < n; i++) {
		if (i && ev[ord[i]].key == ev[ord[i - 1]].key) {
			continue;
		}
		mc_set_key(&p->it[g], ev[ord[i]].key);
		grp[g++] = i;
	}
	grp[g] = n;
	*ng = g;
	return 0;
}

static int
mc_apply(struct bl_sys *s, const struct bl_event *ev, uint32_t worker, uint32_t n)
{
	struct mc_priv *p = s->priv;
	uint32_t *ord = malloc(n * sizeof(*ord));
	size_t *grp = malloc((n + 1) * sizeof(*grp));
	char *tmp = NULL;
	size_t ng = 0, npend;
	unsigned ncmds, round = 0;
	int rc = ord && grp ? mc_item_grow(p, n) : -ENOMEM;

	rc = rc ? rc : mc_group(p, ev, n, ord, grp, &ng);
	for (size_t g = 0; g < ng && !rc; g++) {
		p->order[g] = (uint32_t)g;
	}
	npend = ng;
	while (!rc && npend) {
		size_t maxv = 0;

		if (round++ == MC_MAX_ROUNDS) {
			fprintf(stderr, "kvdex-bench: memcached: cas kept failing\n");
			rc = -EAGAIN;
			break;
		}
		rc = mc_queue_get(p, "gets", p->order, npend, &ncmds);
		rc = rc ? rc : mc_flush(p);
		rc = rc ? rc : mc_read_get(p, p->order, npend, ncmds, true);
		for (size_t g = 0; g < npend && !rc; g++) {
			size_t v = p->it[p->order[g]].vlen;

			maxv = v > maxv ? v : maxv;
		}
		/* Room for the largest current list plus one record per event. */
		if (!rc && !(tmp = realloc(tmp, maxv + (size_t)n * BL_PACKED_REC))) {
			rc = -ENOMEM;
		}
		rc = rc ? rc : mc_queue_store(p, ev, ord, grp, p->order, npend, worker, tmp);
		rc = rc ? rc : mc_flush(p);
		rc = rc ? rc : mc_read_store(p, p->order, &npend);
	}
	free(tmp);
	free(grp);
	free(ord);
	return rc;
}

/* ---- reset / lifecycle ------------------------------------------------------------ */

static int
mc_reset(struct bl_sys *s, uint64_t capacity_blocks)
{
	struct mc_priv *p = s->priv;
	char *line;
	int rc = mc_put(p, "flush_all\r\n", 11);

	rc = rc ? rc : mc_flush(p);
	rc = rc ? rc : mc_line(p, &line);
	if (!rc && strcmp(line, "OK") != 0) {
		fprintf(stderr, "kvdex-bench: memcached flush_all: '%s'\n", line);
		rc = -EIO;
	}
	return rc;
}

static void
mc_fini(struct bl_sys *s)
{
	struct mc_priv *p = s ? s->priv : NULL;

	if (!p) {
		return;
	}
	if (p->fd >= 0) {
		close(p->fd);
	}
	free(p->rbuf);
	free(p->wbuf);
	free(p->vbuf);
	free(p->it);
	free(p->order);
	bl_matcher_fini(&p->m);
	free(p);
	s->priv = NULL;
}

static const struct bl_sys_ops mc_ops = {
	.reset = mc_reset,
	.apply = mc_apply,
	.lookup = mc_lookup,
	.fini = mc_fini,
};

int
bl_mc_create(const struct bl_env *env, struct bl_sys *s)
{
	struct mc_priv *p = calloc(1, sizeof(*p));
	int rc;

	if (!p) {
		return -ENOMEM;
	}
	p->fd = -1;
	s->priv = p;
	s->ops = &mc_ops;
	s->workers = env->workers;
	rc = bl_matcher_init(&p->m, env->workers);
	if (!rc) {
		p->fd = bl_tcp_connect(env->mc_port);
		rc = p->fd < 0 ? p->fd : 0;
		if (rc) {
			fprintf(stderr, "kvdex-bench: memcached 127.0.0.1:%d: %s\n", env->mc_port,
				strerror(-rc));
		}
	}
	if (rc) {
		mc_fini(s);
	}
	return rc;
}

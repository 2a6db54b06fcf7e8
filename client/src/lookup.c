/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lookup: the read rounds (DESIGN §5 steps 1-4). merge.c does steps 5-6.
 *
 * A chain of n keys is looked up in batches of at most KVDEX_LOOKUP_BATCH.
 * For one batch:
 *   1. each key goes to its server (rendezvous) and to its home bucket under
 *      that server's cached geometry; each key reads its own bucket chain
 *      (two keys of a batch rarely share a home bucket at the table's load,
 *      and then that bucket is simply read twice);
 *   2. a round posts, to every server concerned, the header plus one bucket
 *      per unfinished chain (the home bucket, or the next overflow bucket),
 *      then polls every server: one round trip per round;
 *   3. the header is validated first. A torn header discards that server's
 *      images of the round (they are re-read). A new incarnation (restart:
 *      namespaces re-registered) or a new geometry (resize) plans the whole
 *      batch again under the new header (home buckets, namespace ids);
 *   4. each bucket image is checked: torn -> re-read the same bucket; stale
 *      (other table_gen, retired, or out of the region) -> restart the chain
 *      (the next round's header gives the new geometry); corrupt -> -EPROTO.
 *      An overflow image must carry the home index as owner and the home
 *      image's chain_seq, else the whole chain is re-read. A chain with
 *      next != 0 continues in the next round (a dependent read).
 * Torn and stale images count in `retries`. Re-reads back off (yield, then
 * sleep up to 1 ms: a writer descheduled in the middle of a copy leaves its
 * image torn for a scheduler quantum) and stop with -EAGAIN only when the
 * client's timeout has passed since the lookup began: nothing unvalidated is
 * ever returned, and a slow writer is not an error. After the rounds, servers whose header shows a
 * new workers_version (or whose rows were never read) get their worker rows re-read and validated;
 * then the images are merged in chain order. The next batch runs only while some worker still holds
 * every block so far.
 *
 * All read buffers are 64-byte aligned slots of one pool, reset per batch;
 * images are referred to by slot index because the pool may move when it
 * grows (only between rounds, never while reads are posted).
 *
 * Fresh loads (KVDEX_LOOKUP_FRESH_LOADS, kvdex/route.h): the first round of
 * the first batch also reads every worker row of each server concerned, in
 * the same post as the header and the buckets, straight into the server's
 * row cache (which is marked invalid until the rows validate). Rows read
 * that way are adopted only if the header read with them shows the worker
 * table unchanged (same workers_version and hwm as the cached rows): a read
 * batch has no internal ordering, so a row table that changed meanwhile is
 * re-read after the header instead (rows_refresh), as without the flag.
 */
#include "client/src/internal.h"
#include "kvdex/route.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

#define LOG_COMP "client.lookup"
#define ROWS_PER_OP 512u  /* 64 KiB of rows per read op (KVDEX_READ_MAX_LEN) */
#define ROWS_MAX_OPS 512u /* KVDEX_READ_MAX_OPS */
/* Row reads riding in a lookup round: up to 8 x 512 rows; a larger worker
 * table is read by rows_refresh in its own round trips. */
#define LK_ROW_OPS 8u
#define OPS_PER_SRV (1u + KVDEX_LOOKUP_BATCH + LK_ROW_OPS)
#define LK_OP_HDR (-1)
#define LK_OP_ROWS (-2)
/* Records of one key whose place the reader notes; a key with more (a block
 * with hundreds of holders) is merged by scanning its chain's images. */
#define LK_MAX_RECS 4u

enum lk_state {
	LK_HOME = 0, /* read the home bucket next */
	LK_NEXT,     /* read overflow bucket next - 1 */
	LK_DONE,
};

/* Key k's bucket chain: chains[k] of the batch. */
struct lk_chain {
	unsigned srv;
	uint32_t ns_id;
	uint32_t home;
	uint32_t chain_seq;
	uint32_t next;
	uint32_t len;	 /* images accepted so far */
	uint32_t filter; /* the home image's ovf_filter */
	enum lk_state state;
};

/* What a chain has told us about its key so far. */
enum lk_key_state {
	LK_KEY_UNSEEN = 0, /* no record yet */
	LK_KEY_MORE,	   /* records seen, the last one says more follow */
	LK_KEY_SETTLED,	   /* all of its records seen */
};

struct lk_img {
	int chain; /* -1: discarded */
	uint32_t slot;
};

struct kvdex_lookup_scratch {
	unsigned nsrv;
	size_t slot_size;
	uint8_t *pool;
	uint32_t nslots, capslots;
	uint32_t ns;
	struct lk_chain chains[KVDEX_LOOKUP_BATCH]; /* one per key */
	unsigned nchains;
	unsigned key_srv[KVDEX_LOOKUP_BATCH];
	uint32_t key_bit[KVDEX_LOOKUP_BATCH];  /* ovf_filter bit */
	uint8_t key_state[KVDEX_LOOKUP_BATCH]; /* enum lk_key_state */
	/* The key's records found so far: pool slot and offset of each, for the
	 * merge; LK_MAX_RECS + 1 = more than we note (merge scans). */
	uint8_t key_nrec[KVDEX_LOOKUP_BATCH];
	uint32_t key_rec_slot[KVDEX_LOOKUP_BATCH][LK_MAX_RECS];
	uint16_t key_rec_pos[KVDEX_LOOKUP_BATCH][LK_MAX_RECS];
	const uint64_t *keys; /* the batch's keys */
	struct lk_img *imgs;
	unsigned nimgs, capimgs;
	struct kvdex_read_op *ops; /* nsrv x OPS_PER_SRV */
	int *op_chain;
	uint32_t *op_slot;
	unsigned *srv_nops;
	struct kvdex_geometry *used_geo;
	bool *srv_used;
	struct kvdex_merge_srv *views;
	bool *rows_want;      /* per server: fresh rows still to read this lookup */
	bool *rows_was_valid; /* per server: row cache valid when the read was posted */
	bool *rows_pending;   /* per server: rows invalidated by this lookup's reads */
	uint32_t *rows_hwm;   /* per server: rows covered by the posted reads */
	const void **gather;  /* images grouped by chain */
	unsigned capgather;
	unsigned cstart[KVDEX_LOOKUP_BATCH];
	unsigned ccount[KVDEX_LOOKUP_BATCH];
	struct kvdex_merge merge;
};

/* ---- Retries ---- */

static uint64_t
lk_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
lk_retry_start(struct kvdex_client *c)
{
	c->retry_deadline_ns = lk_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
}

/* May a lookup that has needed `retries` re-reads so far go on? Backs off
 * first when re-reads keep coming. */
static bool
lk_retry_ok(const struct kvdex_client *c, uint32_t retries)
{
	if (retries <= 8) {
		return true;
	}
	if (lk_now_ns() > c->retry_deadline_ns) {
		return false;
	}
	if (retries <= 16) {
		sched_yield();
	} else {
		unsigned shift = retries - 16 < 10 ? retries - 16 : 10;
		struct timespec ts = {.tv_nsec = 1000L << shift}; /* 1 us .. ~1 ms */

		nanosleep(&ts, NULL);
	}
	return true;
}

void
kvdex_lookup_scratch_free(struct kvdex_lookup_scratch *lk)
{
	if (lk == NULL) {
		return;
	}
	free(lk->pool);
	free(lk->imgs);
	free(lk->ops);
	free(lk->op_chain);
	free(lk->op_slot);
	free(lk->srv_nops);
	free(lk->used_geo);
	free(lk->srv_used);
	free(lk->views);
	free(lk->rows_want);
	free(lk->rows_was_valid);
	free(lk->rows_hwm);
	free(lk->rows_pending);
	free(lk->gather);
	kvdex_merge_fini(&lk->merge);
	free(lk);
}

static struct kvdex_lookup_scratch *
lk_get(struct kvdex_client *c)
{
	struct kvdex_lookup_scratch *lk = c->lk;
	unsigned n = c->nsrv;

	if (lk != NULL) {
		return lk;
	}
	lk = calloc(1, sizeof(*lk));
	if (lk == NULL) {
		return NULL;
	}
	lk->nsrv = n;
	lk->slot_size = KVDEX_BUCKET_SIZE_MAX;
	lk->ops = calloc(n * OPS_PER_SRV, sizeof(*lk->ops));
	lk->op_chain = calloc(n * OPS_PER_SRV, sizeof(*lk->op_chain));
	lk->op_slot = calloc(n * OPS_PER_SRV, sizeof(*lk->op_slot));
	lk->srv_nops = calloc(n, sizeof(*lk->srv_nops));
	lk->used_geo = calloc(n, sizeof(*lk->used_geo));
	lk->srv_used = calloc(n, sizeof(*lk->srv_used));
	lk->views = calloc(n, sizeof(*lk->views));
	lk->rows_want = calloc(n, sizeof(*lk->rows_want));
	lk->rows_was_valid = calloc(n, sizeof(*lk->rows_was_valid));
	lk->rows_hwm = calloc(n, sizeof(*lk->rows_hwm));
	lk->rows_pending = calloc(n, sizeof(*lk->rows_pending));
	if (lk->ops == NULL || lk->op_chain == NULL || lk->op_slot == NULL ||
	    lk->srv_nops == NULL || lk->used_geo == NULL || lk->srv_used == NULL ||
	    lk->views == NULL || lk->rows_want == NULL || lk->rows_was_valid == NULL ||
	    lk->rows_hwm == NULL || lk->rows_pending == NULL) {
		kvdex_lookup_scratch_free(lk);
		return NULL;
	}
	c->lk = lk;
	return lk;
}

static void *
lk_slot_ptr(struct kvdex_lookup_scratch *lk, uint32_t slot)
{
	return lk->pool + (size_t)slot * lk->slot_size;
}

/* Room for n more slots; may move the pool (callers re-derive pointers
 * afterwards). A round reserves all its slots before planning. */
static int
lk_slots_reserve(struct kvdex_lookup_scratch *lk, uint32_t n)
{
	if (lk->capslots - lk->nslots < n) {
		uint32_t ncap = lk->capslots != 0 ? lk->capslots : 128;
		uint8_t *np;

		while (ncap - lk->nslots < n) {
			ncap *= 2;
		}
		np = kvdex_aligned_alloc((size_t)ncap * lk->slot_size);

		if (np == NULL) {
			return -ENOMEM;
		}
		if (lk->pool != NULL) {
			memcpy(np, lk->pool, (size_t)lk->nslots * lk->slot_size);
			free(lk->pool);
		}
		lk->pool = np;
		lk->capslots = ncap;
	}
	return 0;
}

/* A reserved slot. */
static uint32_t
lk_slot_take(struct kvdex_lookup_scratch *lk)
{
	return lk->nslots++;
}

static int
lk_img_add(struct kvdex_lookup_scratch *lk, int chain, uint32_t slot)
{
	if (lk->nimgs == lk->capimgs) {
		unsigned ncap = lk->capimgs != 0 ? lk->capimgs * 2 : 128;
		struct lk_img *n = realloc(lk->imgs, ncap * sizeof(*n));

		if (n == NULL) {
			return -ENOMEM;
		}
		lk->imgs = n;
		lk->capimgs = ncap;
	}
	lk->imgs[lk->nimgs].chain = chain;
	lk->imgs[lk->nimgs].slot = slot;
	lk->nimgs++;
	return 0;
}

/* ---- Headers and rows ------------------------------------------------------- */

static int
hdr_sane(const struct kvdex_region_hdr *h)
{
	uint64_t home_end = h->table_off + ((uint64_t)1 << h->table_log2) * h->bucket_size;
	uint64_t ov_end = h->overflow_off + (uint64_t)h->overflow_count * h->bucket_size;
	uint64_t rows_end = h->workers_off + (uint64_t)h->workers_hwm * KVDEX_ROW_SIZE;

	if (h->workers_hwm > h->workers_cap || home_end > h->region_size ||
	    ov_end > h->region_size || rows_end > h->region_size ||
	    (h->table_off % KVDEX_CACHE_LINE) != 0 || (h->overflow_off % KVDEX_CACHE_LINE) != 0) {
		return -EPROTO;
	}
	return 0;
}

static bool
geo_equal(const struct kvdex_geometry *a, const struct kvdex_geometry *b)
{
	return a->hash_seed == b->hash_seed && a->table_off == b->table_off &&
	       a->overflow_off == b->overflow_off && a->table_log2 == b->table_log2 &&
	       a->table_gen == b->table_gen && a->overflow_count == b->overflow_count &&
	       a->bucket_size == b->bucket_size;
}

/*
 * Adopt a validated header for server i. *reset is set when images read
 * under the previous geometry (or incarnation) must not be used.
 */
static int
lk_apply_hdr(struct kvdex_client *c, unsigned i, const struct kvdex_region_hdr *h,
	     const struct kvdex_geometry *used, bool *reset)
{
	struct kvdex_server *s = &c->srv[i];
	struct kvdex_geometry g;
	int rc;

	*reset = false;
	if (hdr_sane(h) < 0) {
		kvdex_client_set_error(c, "server %s: impossible region header", s->ep.name);
		return -EPROTO;
	}
	if (s->incarnation != 0 && h->server_incarnation != s->incarnation) {
		rc = kvdex_client_server_restarted(c, i, h->server_incarnation);
		if (rc < 0) {
			return rc;
		}
		*reset = true;
	}
	s->incarnation = h->server_incarnation;
	kvdex_geometry_from_hdr(h, &g);
	if (used != NULL && !geo_equal(&g, used)) {
		*reset = true;
	}
	s->hdr = *h;
	s->geo = g;
	s->have_hdr = true;
	return 0;
}

static int
lk_read(struct kvdex_client *c, unsigned i, struct kvdex_read_op *ops, unsigned n)
{
	struct kvdex_conn *conn = c->srv[i].conn;
	int rc;

	if (conn == NULL) {
		return -ECONNRESET;
	}
	rc = conn->ops->post_reads(conn, ops, n);
	if (rc == 0) {
		rc = conn->ops->poll_reads(conn, c->timeout_ms);
	}
	if (rc < 0) {
		kvdex_client_set_error(c, "server %s: read failed: %s", c->srv[i].ep.name,
				       strerror(-rc));
		kvdex_client_drop_conn(c, i);
	}
	return rc;
}

static int
rows_reserve(struct kvdex_server *s, uint32_t n)
{
	struct kvdex_worker_row *r;

	if (n <= s->rows_cap) {
		return 0;
	}
	r = kvdex_aligned_alloc((size_t)n * KVDEX_ROW_SIZE);
	if (r == NULL) {
		return -ENOMEM;
	}
	free(s->rows);
	s->rows = r;
	s->rows_cap = n;
	s->rows_valid = false;
	return 0;
}

/* A row never written by the server is all zeroes: it cannot validate. */
static bool
row_is_blank(const struct kvdex_worker_row *r)
{
	static const struct kvdex_worker_row zero;

	return memcmp(r, &zero, sizeof(*r)) == 0;
}

/* Build read ops for rows still needed: runs of consecutive rows. */
static unsigned
rows_plan(struct kvdex_server *s, const uint8_t *need, uint32_t hwm, struct kvdex_read_op *ops)
{
	unsigned nops = 0;
	uint32_t r = 0;

	while (r < hwm && nops < ROWS_MAX_OPS) {
		uint32_t start;

		if (!need[r]) {
			r++;
			continue;
		}
		start = r;
		while (r < hwm && need[r] && r - start < ROWS_PER_OP) {
			r++;
		}
		ops[nops].off = kvdex_row_offset(&s->hdr, start);
		ops[nops].len = (r - start) * KVDEX_ROW_SIZE;
		ops[nops].buf = &s->rows[start];
		ops[nops].status = 0;
		ops[nops].flags = 0;
		nops++;
	}
	return nops;
}

/* Validate the rows of one completed op; returns how many were torn. */
static unsigned
rows_check(struct kvdex_server *s, const struct kvdex_read_op *op, uint8_t *need)
{
	uint32_t first = (uint32_t)((op->off - s->hdr.workers_off) / KVDEX_ROW_SIZE);
	uint32_t cnt = op->len / KVDEX_ROW_SIZE;
	unsigned torn = 0;

	for (uint32_t r = first; r < first + cnt; r++) {
		uint64_t off = kvdex_row_offset(&s->hdr, r);

		if (op->status == 0 && (kvdex_row_check(&s->rows[r], s->hdr.hash_seed, off) == 0 ||
					row_is_blank(&s->rows[r]))) {
			need[r] = 0;
		} else {
			torn++;
		}
	}
	return torn;
}

static int
rows_refresh(struct kvdex_client *c, unsigned i, uint32_t *rt, uint32_t *retries)
{
	struct kvdex_server *s = &c->srv[i];
	uint32_t hwm = s->hdr.workers_hwm;
	struct kvdex_read_op *ops;
	uint8_t *need;
	unsigned left = hwm;
	int rc = 0;

	if (rows_reserve(s, hwm) < 0) {
		return -ENOMEM;
	}
	need = malloc(hwm + 1u);
	ops = calloc(ROWS_MAX_OPS, sizeof(*ops));
	if (need == NULL || ops == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	memset(need, 1, hwm);
	while (left > 0) {
		unsigned nops = rows_plan(s, need, hwm, ops);

		rc = lk_read(c, i, ops, nops);
		if (rc < 0) {
			goto out;
		}
		(*rt)++;
		for (unsigned k = 0; k < nops; k++) {
			unsigned torn = rows_check(s, &ops[k], need);

			*retries += torn;
		}
		left = 0;
		for (uint32_t r = 0; r < hwm; r++) {
			left += need[r];
		}
		if (!lk_retry_ok(c, *retries)) {
			kvdex_client_set_error(c, "server %s: worker rows kept failing validation",
					       s->ep.name);
			rc = -EAGAIN;
			goto out;
		}
	}
	s->nrows = hwm;
	s->rows_version = s->hdr.workers_version;
	s->rows_valid = true;
	s->rows_clock = s->hdr.clock_ticks;
out:
	free(need);
	free(ops);
	return rc;
}

static bool
rows_stale(const struct kvdex_server *s)
{
	return !s->rows_valid || s->rows_version != s->hdr.workers_version ||
	       s->nrows != s->hdr.workers_hwm;
}

/* ---- Fresh rows: read in the same batch as a header ------------------------------- */

/*
 * Plan reads of rows [0, hwm) of the cached header straight into s->rows, at
 * most `max` ops. Returns the number of ops (or -ENOMEM) and the rows they
 * cover. The row cache is invalid from here until rows_adopt() accepts it.
 */
static int
rows_plan_fresh(struct kvdex_server *s, struct kvdex_read_op *ops, unsigned max, uint32_t *covered)
{
	uint32_t hwm = s->hdr.workers_hwm;
	uint32_t r = 0;
	unsigned n = 0;

	if (rows_reserve(s, hwm) < 0) {
		return -ENOMEM;
	}
	s->rows_valid = false;
	for (; r < hwm && n < max; r += ROWS_PER_OP, n++) {
		uint32_t cnt = hwm - r < ROWS_PER_OP ? hwm - r : ROWS_PER_OP;

		ops[n].off = kvdex_row_offset(&s->hdr, r);
		ops[n].len = cnt * KVDEX_ROW_SIZE;
		ops[n].buf = &s->rows[r];
		ops[n].status = 0;
		ops[n].flags = 0;
	}
	*covered = r < hwm ? r : hwm;
	return (int)n;
}

/* Did every row of the completed ops validate (or is it a never-written row)? */
static bool
rows_check_fresh(const struct kvdex_server *s, const struct kvdex_read_op *ops, unsigned n)
{
	for (unsigned k = 0; k < n; k++) {
		uint32_t first = (uint32_t)((ops[k].off - s->hdr.workers_off) / KVDEX_ROW_SIZE);

		if (ops[k].status != 0) {
			return false;
		}
		for (uint32_t r = first; r < first + ops[k].len / KVDEX_ROW_SIZE; r++) {
			if (kvdex_row_check(&s->rows[r], s->hdr.hash_seed,
					    kvdex_row_offset(&s->hdr, r)) != 0 &&
			    !row_is_blank(&s->rows[r])) {
				return false;
			}
		}
	}
	return true;
}

/*
 * Accept rows [0, covered) read in the same batch as the header now cached,
 * only if the worker table cannot have changed under them: the cache held
 * valid rows of the same workers_version before, and they cover its hwm.
 * Otherwise the cache stays invalid and rows_refresh() re-reads it.
 */
static void
rows_adopt(struct kvdex_server *s, bool was_valid, uint32_t covered, bool ok)
{
	if (ok && was_valid && covered == s->hdr.workers_hwm &&
	    s->rows_version == s->hdr.workers_version) {
		s->nrows = covered;
		s->rows_valid = true;
		s->rows_clock = s->hdr.clock_ticks;
	}
}

int
kvdex_lookup_refresh_server(struct kvdex_client *c, unsigned i, uint32_t *round_trips,
			    uint32_t *retries)
{
	struct kvdex_region_hdr hdr __attribute__((aligned(64)));
	struct kvdex_read_op op = {.off = 0, .len = KVDEX_HDR_SIZE, .buf = &hdr};
	uint32_t rt = 0, rty = 0;
	bool reset;
	int rc;

	uint32_t *prt = round_trips != NULL ? round_trips : &rt;
	uint32_t *prty = retries != NULL ? retries : &rty;

	if (retries == NULL) {
		lk_retry_start(c); /* not inside a lookup: this call's own deadline */
	}
	for (;;) {
		rc = lk_read(c, i, &op, 1);
		if (rc < 0) {
			return rc;
		}
		(*prt)++;
		rc = op.status < 0 ? op.status : kvdex_hdr_check(&hdr);
		if (rc == 0) {
			break;
		}
		if (rc != -EAGAIN || !lk_retry_ok(c, ++(*prty))) {
			kvdex_client_set_error(c, "server %s: cannot read a valid region header",
					       c->srv[i].ep.name);
			return rc == -EAGAIN ? -EAGAIN : -EPROTO;
		}
	}
	rc = lk_apply_hdr(c, i, &hdr, NULL, &reset);
	if (rc < 0) {
		return rc;
	}
	if (rows_stale(&c->srv[i])) {
		return rows_refresh(c, i, prt, prty);
	}
	return 0;
}

int
kvdex_lookup_read_rows(struct kvdex_client *c, unsigned i, uint32_t *round_trips, uint32_t *retries)
{
	struct kvdex_region_hdr hdr __attribute__((aligned(64)));
	struct kvdex_read_op ops[1 + LK_ROW_OPS];
	struct kvdex_server *s = &c->srv[i];
	uint32_t rt = 0, rty = 0, covered = 0;
	uint32_t *prt = round_trips != NULL ? round_trips : &rt;
	uint32_t *prty = retries != NULL ? retries : &rty;
	bool was_valid, reset;
	int n, rc;

	if (retries == NULL) {
		lk_retry_start(c);
	}
	rc = kvdex_client_ensure_conn(c, i);
	if (rc < 0) {
		return rc;
	}
	if (!s->have_hdr) {
		/* First contact: header, then every row, both fresh. */
		return kvdex_lookup_refresh_server(c, i, prt, prty);
	}
	was_valid = s->rows_valid;
	for (;;) {
		n = rows_plan_fresh(s, ops + 1, LK_ROW_OPS, &covered);
		if (n < 0) {
			return n;
		}
		ops[0] = (struct kvdex_read_op){.off = 0, .len = KVDEX_HDR_SIZE, .buf = &hdr};
		rc = lk_read(c, i, ops, (unsigned)n + 1);
		if (rc < 0) {
			return rc;
		}
		(*prt)++;
		rc = ops[0].status < 0 ? ops[0].status : kvdex_hdr_check(&hdr);
		if (rc == 0) {
			break;
		}
		if (rc != -EAGAIN || !lk_retry_ok(c, ++(*prty))) {
			kvdex_client_set_error(c, "server %s: cannot read a valid region header",
					       s->ep.name);
			return rc == -EAGAIN ? -EAGAIN : -EPROTO;
		}
	}
	rc = lk_apply_hdr(c, i, &hdr, NULL, &reset);
	if (rc < 0) {
		return rc;
	}
	rows_adopt(s, was_valid, covered, rows_check_fresh(s, ops + 1, (unsigned)n));
	if (rows_stale(s)) {
		return rows_refresh(c, i, prt, prty);
	}
	return 0;
}

/* ---- Chains ------------------------------------------------------------------- */

/* Point key k's chain at its home bucket under its server's cached
 * geometry, with nothing read yet. */
static void
lk_chain_home(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned k)
{
	struct lk_chain *ch = &lk->chains[k];
	unsigned srv = lk->key_srv[k];

	ch->srv = srv;
	ch->ns_id = c->ns[lk->ns].ids[srv];
	ch->len = 0;
	ch->next = 0;
	ch->filter = 0;
	ch->chain_seq = 0;
	lk->key_state[k] = LK_KEY_UNSEEN;
	lk->key_nrec[k] = 0;
	lk->key_bit[k] = 0;
	if (ch->ns_id == KVDEX_NS_NONE) {
		ch->home = 0;
		ch->state = LK_DONE;
		return;
	}
	ch->home = kvdex_home_and_bit(&c->srv[srv].geo, (uint16_t)ch->ns_id, lk->keys[k],
				      &lk->key_bit[k]);
	ch->state = LK_HOME;
}

/* Drop what chain k read and read it again from its home bucket. */
static void
lk_chain_reset(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned k)
{
	for (unsigned i = 0; i < lk->nimgs; i++) {
		if (lk->imgs[i].chain == (int)k) {
			lk->imgs[i].chain = -1;
		}
	}
	lk_chain_home(c, lk, k);
}

/* Map the batch's keys to their chains. */
static void
lk_plan(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, const uint64_t *keys, unsigned n)
{
	size_t slot = KVDEX_HDR_SIZE;

	/* Slots as large as the largest bucket of the servers concerned. */
	for (unsigned s = 0; s < c->nsrv; s++) {
		if (lk->srv_used[s] && c->srv[s].geo.bucket_size > slot) {
			slot = c->srv[s].geo.bucket_size;
		}
	}
	if (slot != lk->slot_size) {
		free(lk->pool);
		lk->pool = NULL;
		lk->capslots = 0;
		lk->slot_size = slot;
	}
	lk->nimgs = 0;
	lk->nslots = 0;
	lk->keys = keys;
	lk->nchains = n;
	for (unsigned k = 0; k < n; k++) {
		lk_chain_home(c, lk, k);
	}
}

/* ---- Rounds --------------------------------------------------------------------- */

/* The header op of server s's round: the first op. */
static void
lk_plan_hdr(struct kvdex_lookup_scratch *lk, unsigned base)
{
	lk->op_slot[base] = lk_slot_take(lk);
	lk->op_chain[base] = LK_OP_HDR;
	lk->ops[base].buf = lk_slot_ptr(lk, lk->op_slot[base]);
	lk->ops[base].off = 0;
	lk->ops[base].len = KVDEX_HDR_SIZE;
	lk->ops[base].flags = 0;
}

/* Fresh loads: append reads of server s's worker rows to its round. */
static int
lk_plan_rows(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned s, unsigned *n)
{
	unsigned base = s * OPS_PER_SRV;
	struct kvdex_server *sv = &c->srv[s];
	int rc;

	if (*n == 0) {
		lk_plan_hdr(lk, base);
		*n = 1;
	}
	if (!lk->rows_pending[s]) {
		/* Whether the cache was valid before our reads clobbered it. */
		lk->rows_was_valid[s] = sv->rows_valid;
		lk->rows_pending[s] = true;
	}
	rc = rows_plan_fresh(sv, &lk->ops[base + *n], LK_ROW_OPS, &lk->rows_hwm[s]);
	if (rc < 0) {
		return rc;
	}
	for (int k = 0; k < rc; k++) {
		lk->op_chain[base + *n + (unsigned)k] = LK_OP_ROWS;
	}
	*n += (unsigned)rc;
	return 0;
}

/* Plan server s's ops of the round. The slots are reserved, so the pool does
 * not move and the ops point into it directly. */
static int
lk_plan_server(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned s)
{
	unsigned base = s * OPS_PER_SRV;
	const struct kvdex_geometry *g = &c->srv[s].geo;
	unsigned n = 0;
	int rc;

	lk->srv_nops[s] = 0;
	for (unsigned k = 0; k < lk->nchains; k++) {
		const struct lk_chain *ch = &lk->chains[k];

		if (ch->srv != s || ch->state == LK_DONE) {
			continue;
		}
		if (n == 0) {
			/* The header rides in every round of a server. */
			lk_plan_hdr(lk, base);
			n = 1;
		}
		lk->op_slot[base + n] = lk_slot_take(lk);
		lk->op_chain[base + n] = (int)k;
		lk->ops[base + n].buf = lk_slot_ptr(lk, lk->op_slot[base + n]);
		lk->ops[base + n].off = ch->state == LK_HOME
						? kvdex_home_offset(g, ch->home)
						: kvdex_overflow_offset(g, ch->next - 1);
		lk->ops[base + n].len = g->bucket_size;
		lk->ops[base + n].flags = KVDEX_READ_BUCKET;
		n++;
	}
	if (lk->rows_want[s] && lk->srv_used[s]) {
		rc = lk_plan_rows(c, lk, s, &n);
		if (rc < 0) {
			return rc;
		}
	}
	lk->srv_nops[s] = n;
	lk->used_geo[s] = c->srv[s].geo;
	return 0;
}

/* Note where the image has records of chain ci's key, and whether the
 * last of them says more follow. */
static int
lk_note_key(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned ci, const void *img,
	    uint32_t slot)
{
	const struct lk_chain *ch = &lk->chains[ci];
	uint32_t bs = lk->used_geo[ch->srv].bucket_size;
	uint64_t key = lk->keys[ci];
	struct kvdex_record_view rec;
	size_t pos = 0, at = 0;
	int rc;

	for (; (rc = kvdex_record_next(img, bs, &pos, &rec)) == 1; at = pos) {
		uint8_t nrec = lk->key_nrec[ci];

		if (rec.hdr.key != key || rec.hdr.ns != ch->ns_id) {
			continue;
		}
		lk->key_state[ci] = (rec.hdr.flags & KVDEX_REC_MORE) ? LK_KEY_MORE : LK_KEY_SETTLED;
		if (nrec < LK_MAX_RECS) {
			lk->key_rec_slot[ci][nrec] = slot;
			lk->key_rec_pos[ci][nrec] = (uint16_t)at;
		}
		if (nrec <= LK_MAX_RECS) {
			lk->key_nrec[ci] = nrec + 1;
		}
	}
	if (rc < 0) {
		kvdex_client_set_error(c, "server %s: malformed record", c->srv[ch->srv].ep.name);
	}
	return rc;
}

/* Does chain ci still hold something we need past the images read? A key
 * not seen yet may only be in an overflow bucket if the home image's
 * ovf_filter has its bit; a key whose last record said MORE has more. */
static bool
lk_chain_needs_more(const struct kvdex_lookup_scratch *lk, unsigned ci)
{
	return lk->key_state[ci] == LK_KEY_MORE ||
	       (lk->key_state[ci] == LK_KEY_UNSEEN && (lk->chains[ci].filter & lk->key_bit[ci]));
}

/* Accept one validated bucket image into its chain. */
static int
lk_accept(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned ci, const void *img,
	  uint32_t slot, uint32_t *retries)
{
	struct lk_chain *ch = &lk->chains[ci];
	const struct kvdex_geometry *g = &lk->used_geo[ch->srv];
	struct kvdex_bucket_hdr bh;
	int rc;

	memcpy(&bh, img, sizeof(bh));
	if (ch->state == LK_NEXT && (bh.owner != ch->home || bh.chain_seq != ch->chain_seq)) {
		/* The chain changed between round trips: read it again. */
		(*retries)++;
		lk_chain_reset(c, lk, ci);
		return 0;
	}
	if (ch->state == LK_HOME) {
		ch->chain_seq = bh.chain_seq;
		ch->filter = bh.ovf_filter;
	}
	rc = lk_img_add(lk, (int)ci, slot);
	if (rc < 0) {
		return rc;
	}
	ch->len++;
	rc = lk_note_key(c, lk, ci, img, slot);
	if (rc < 0) {
		return rc;
	}
	if (bh.next == 0 || !lk_chain_needs_more(lk, ci)) {
		ch->state = LK_DONE;
		return 0;
	}
	if (ch->len > g->overflow_count) {
		kvdex_client_set_error(c, "server %s: overflow chain loops",
				       c->srv[ch->srv].ep.name);
		return -EPROTO;
	}
	ch->state = LK_NEXT;
	ch->next = bh.next;
	return 0;
}

static int
lk_check_bucket(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned op,
		uint32_t *retries)
{
	const struct kvdex_read_op *o = &lk->ops[op];
	unsigned ci = (unsigned)lk->op_chain[op];
	unsigned s = lk->chains[ci].srv;

	if (o->status == -ERANGE) {
		/* Outside the region we know: the geometry is stale. */
		(*retries)++;
		lk_chain_reset(c, lk, ci);
		return 0;
	}
	if (o->status < 0) {
		return o->status;
	}
	switch (kvdex_bucket_check(o->buf, &lk->used_geo[s], o->off)) {
	case KVDEX_BUCKET_OK:
		return lk_accept(c, lk, ci, o->buf, lk->op_slot[op], retries);
	case KVDEX_BUCKET_TORN:
		(*retries)++; /* same bucket again next round */
		return 0;
	case KVDEX_BUCKET_STALE:
		(*retries)++;
		lk_chain_reset(c, lk, ci);
		return 0;
	case KVDEX_BUCKET_CORRUPT:
	default:
		kvdex_client_set_error(c, "server %s: corrupt bucket at offset %llu",
				       c->srv[s].ep.name, (unsigned long long)o->off);
		return -EPROTO;
	}
}

/* Validate server s's header and images of this round: 0, 1 (geometry or
 * incarnation changed: plan the batch again) or a negative errno. */
static int
lk_process_server(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, unsigned s,
		  uint32_t *retries)
{
	unsigned base = s * OPS_PER_SRV;
	const struct kvdex_region_hdr *hdr = lk->ops[base].buf;
	bool reset;
	int rc;

	if (lk->ops[base].status < 0) {
		return lk->ops[base].status == -ERANGE ? -EPROTO : lk->ops[base].status;
	}
	rc = kvdex_hdr_check(hdr);
	if (rc == -EAGAIN) {
		(*retries)++; /* every image of this server is read again */
		return 0;
	}
	if (rc < 0) {
		kvdex_client_set_error(c, "server %s: not a kvdex region", c->srv[s].ep.name);
		return rc;
	}
	rc = lk_apply_hdr(c, s, hdr, &lk->used_geo[s], &reset);
	if (rc < 0) {
		return rc;
	}
	if (reset) {
		/* Keys that shared a bucket under the old geometry need not share
		 * one now (nor keep their ns id after a restart): plan again. */
		(*retries)++;
		return 1;
	}
	for (unsigned k = 1; k < lk->srv_nops[s]; k++) {
		if (lk->op_chain[base + k] == LK_OP_ROWS) {
			/* Rows come last: every op from here on is a row read. */
			rows_adopt(&c->srv[s], lk->rows_was_valid[s], lk->rows_hwm[s],
				   rows_check_fresh(&c->srv[s], &lk->ops[base + k],
						    lk->srv_nops[s] - k));
			lk->rows_want[s] = false;
			break;
		}
		rc = lk_check_bucket(c, lk, base + k, retries);
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

/* One round trip to every server with pending chains. Returns 1 when a
 * server's geometry or incarnation changed and the batch must be planned
 * again, 0 otherwise, or a negative errno. */
static int
lk_round(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, uint32_t *rt, uint32_t *retries)
{
	bool replan = false;
	int rc;

	/* A header per server and a bucket per chain at most. */
	rc = lk_slots_reserve(lk, c->nsrv + lk->nchains);
	if (rc < 0) {
		return rc;
	}
	for (unsigned s = 0; s < c->nsrv; s++) {
		rc = lk_plan_server(c, lk, s);
		if (rc < 0) {
			return rc;
		}
	}
	for (unsigned s = 0; s < c->nsrv; s++) {
		unsigned base = s * OPS_PER_SRV;

		if (lk->srv_nops[s] > 0) {
			struct kvdex_conn *conn = c->srv[s].conn;

			rc = conn != NULL
				     ? conn->ops->post_reads(conn, &lk->ops[base], lk->srv_nops[s])
				     : -ECONNRESET;
			if (rc < 0) {
				kvdex_client_drop_conn(c, s);
				return rc;
			}
		}
	}
	for (unsigned s = 0; s < c->nsrv; s++) {
		if (lk->srv_nops[s] > 0) {
			rc = c->srv[s].conn->ops->poll_reads(c->srv[s].conn, c->timeout_ms);
			if (rc < 0) {
				kvdex_client_set_error(c, "server %s: read failed: %s",
						       c->srv[s].ep.name, strerror(-rc));
				kvdex_client_drop_conn(c, s);
				return rc;
			}
		}
	}
	(*rt)++;
	for (unsigned s = 0; s < c->nsrv; s++) {
		if (lk->srv_nops[s] > 0) {
			rc = lk_process_server(c, lk, s, retries);
			if (rc < 0) {
				return rc;
			}
			replan |= rc == 1;
		}
	}
	if (!lk_retry_ok(c, *retries)) {
		kvdex_client_set_error(c, "images kept failing validation (%u retries in %d ms)",
				       *retries, c->timeout_ms);
		return -EAGAIN;
	}
	return replan ? 1 : 0;
}

static bool
lk_pending(const struct kvdex_lookup_scratch *lk)
{
	for (unsigned k = 0; k < lk->nchains; k++) {
		if (lk->chains[k].state != LK_DONE) {
			return true;
		}
	}
	return false;
}

/* ---- Batches ---------------------------------------------------------------------- */

/* Connect the servers the batch needs and make sure their geometry is known. */
static int
lk_prepare(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, const uint64_t *keys,
	   unsigned n, uint32_t *rt, uint32_t *retries)
{
	const struct kvdex_client_ns *ns = &c->ns[lk->ns];
	int rc;

	memset(lk->srv_used, 0, c->nsrv * sizeof(*lk->srv_used));
	for (unsigned k = 0; k < n; k++) {
		lk->key_srv[k] = kvdex_place(c->seeds, c->nsrv, ns->ns_hash, keys[k]);
		lk->srv_used[lk->key_srv[k]] = true;
	}
	for (unsigned s = 0; s < c->nsrv; s++) {
		if (!lk->srv_used[s]) {
			continue;
		}
		rc = kvdex_client_ensure_conn(c, s);
		if (rc == 0 && !c->srv[s].have_hdr) {
			rc = kvdex_lookup_refresh_server(c, s, rt, retries);
		}
		if (rc < 0) {
			return rc;
		}
	}
	return 0;
}

/*
 * Group the accepted images by chain, keeping their order (home first):
 * gather[cstart[ci] .. cstart[ci] + ccount[ci]) are chain ci's images.
 */
static int
lk_group(struct kvdex_lookup_scratch *lk)
{
	unsigned pos = 0;

	if (lk->capgather < lk->nimgs) {
		const void **g = realloc(lk->gather, lk->nimgs * sizeof(*g));

		if (g == NULL) {
			return -ENOMEM;
		}
		lk->gather = g;
		lk->capgather = lk->nimgs;
	}
	memset(lk->ccount, 0, sizeof(lk->ccount));
	for (unsigned k = 0; k < lk->nimgs; k++) {
		if (lk->imgs[k].chain >= 0) {
			lk->ccount[lk->imgs[k].chain]++;
		}
	}
	for (unsigned ci = 0; ci < lk->nchains; ci++) {
		lk->cstart[ci] = pos;
		pos += lk->ccount[ci];
		lk->ccount[ci] = 0;
	}
	for (unsigned k = 0; k < lk->nimgs; k++) {
		int ci = lk->imgs[k].chain;

		if (ci >= 0) {
			lk->gather[lk->cstart[ci] + lk->ccount[ci]++] =
				lk_slot_ptr(lk, lk->imgs[k].slot);
		}
	}
	return 0;
}

/* Merge key k from the records lk_note_key found. */
static int
lk_merge_noted(struct kvdex_lookup_scratch *lk, const struct kvdex_merge_srv *v, unsigned k)
{
	struct kvdex_record_view rec;

	kvdex_merge_begin(&lk->merge);
	for (unsigned r = 0; r < lk->key_nrec[k]; r++) {
		int rc;

		kvdex_record_at(lk_slot_ptr(lk, lk->key_rec_slot[k][r]), lk->key_rec_pos[k][r],
				&rec);
		rc = kvdex_merge_record(&lk->merge, v, &rec);
		if (rc < 0) {
			return rc;
		}
	}
	kvdex_merge_end(&lk->merge);
	return 0;
}

static int
lk_merge_batch(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, const uint64_t *keys,
	       unsigned n)
{
	bool grouped = false;
	int rc;

	for (unsigned s = 0; s < c->nsrv; s++) {
		struct kvdex_merge_srv *v = &lk->views[s];

		v->rows = c->srv[s].rows;
		v->nrows = c->srv[s].rows_valid ? c->srv[s].nrows : 0;
		v->now_ticks = c->srv[s].hdr.clock_ticks;
		v->bucket_size = c->srv[s].geo.bucket_size;
		v->ns_id = c->ns[lk->ns].ids[s];
	}
	for (unsigned k = 0; k < n; k++) {
		const struct kvdex_merge_srv *v = &lk->views[lk->chains[k].srv];

		if (lk->key_nrec[k] <= LK_MAX_RECS) {
			rc = lk_merge_noted(lk, v, k);
		} else {
			/* More records than noted: the merge scans the chain. */
			struct kvdex_merge_block b = {.key = keys[k], .srv = v};

			if (!grouped) {
				rc = lk_group(lk);
				if (rc < 0) {
					return rc;
				}
				grouped = true;
			}
			b.imgs = lk->gather + lk->cstart[k];
			b.nimgs = lk->ccount[k];
			rc = kvdex_merge_add(&lk->merge, &b);
		}
		if (rc < 0) {
			if (rc == -EPROTO) {
				kvdex_client_set_error(c, "server %s: malformed record",
						       c->srv[lk->chains[k].srv].ep.name);
			}
			return rc;
		}
		if (!kvdex_merge_alive(&lk->merge)) {
			break;
		}
	}
	return 0;
}

static int
lk_batch(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, const uint64_t *keys, unsigned n,
	 uint32_t *rt, uint32_t *retries)
{
	int rc;

	rc = lk_prepare(c, lk, keys, n, rt, retries);
	if (rc < 0) {
		return rc;
	}
	lk_plan(c, lk, keys, n);
	while (lk_pending(lk)) {
		rc = lk_round(c, lk, rt, retries);
		if (rc < 0) {
			return rc;
		}
		if (rc == 1) {
			lk_plan(c, lk, keys, n);
		}
	}
	for (unsigned s = 0; s < c->nsrv; s++) {
		if (lk->srv_used[s] && rows_stale(&c->srv[s])) {
			rc = rows_refresh(c, s, rt, retries);
			if (rc < 0) {
				return rc;
			}
		}
	}
	return lk_merge_batch(c, lk, keys, n);
}

static int
lk_run(struct kvdex_client *c, struct kvdex_lookup_scratch *lk, const uint64_t *keys, size_t n,
       unsigned flags, uint32_t *rt, uint32_t *retries)
{
	int rc = 0;

	kvdex_merge_fini(&lk->merge);
	kvdex_merge_init(&lk->merge, flags & ~KVDEX_LOOKUP_FRESH_LOADS);
	for (unsigned s = 0; s < c->nsrv; s++) {
		/* Fresh loads ride with the first batch only. */
		lk->rows_want[s] = (flags & KVDEX_LOOKUP_FRESH_LOADS) != 0;
		lk->rows_pending[s] = false;
	}
	for (size_t off = 0; off < n && kvdex_merge_alive(&lk->merge); off += KVDEX_LOOKUP_BATCH) {
		size_t cnt = n - off < KVDEX_LOOKUP_BATCH ? n - off : KVDEX_LOOKUP_BATCH;

		rc = lk_batch(c, lk, keys + off, (unsigned)cnt, rt, retries);
		if (rc < 0) {
			break;
		}
		memset(lk->rows_want, 0, c->nsrv * sizeof(*lk->rows_want));
	}
	return rc;
}

KVDEX_EXPORT int
kvdex_lookup(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, size_t n, unsigned flags,
	     struct kvdex_lookup_result *res)
{
	struct kvdex_lookup_scratch *lk;
	uint32_t rt = 0, retries = 0;
	int rc = 0;

	if (c == NULL || res == NULL || keys == NULL || n == 0 || n > UINT32_MAX ||
	    (res->cap > 0 && res->holdings == NULL)) {
		return -EINVAL;
	}
	c->last_error[0] = '\0';
	res->nholdings = 0;
	res->nholdings_total = 0;
	res->best = -1;
	res->longest = 0;
	res->fused = 0;
	res->nblocks = (uint32_t)n;
	if (ns >= c->nns) {
		kvdex_client_set_error(c, "bad namespace handle %u", ns);
		return -EINVAL;
	}
	lk = lk_get(c);
	if (lk == NULL) {
		return -ENOMEM;
	}
	lk->ns = ns;
	lk_retry_start(c);
	for (int attempt = 0; attempt < 2; attempt++) {
		rc = lk_run(c, lk, keys, n, flags, &rt, &retries);
		/* A lost connection (server restart): reconnect once and redo the
		 * whole lookup; reads have no side effects. */
		if (rc != -ECONNRESET || c->no_reconnect) {
			break;
		}
		c->last_error[0] = '\0';
	}
	if (rc == 0) {
		kvdex_merge_finish(&lk->merge, res);
	}
	res->round_trips = rt;
	res->retries = retries;
	kvdex_merge_fini(&lk->merge);
	return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The index writer (see index.h and docs/DESIGN.md §3.3-3.7).
 *
 * Design
 *   The region itself is the index: the writer keeps no shadow copy of the
 *   buckets. To change a block it decodes the block's chain (home bucket and
 *   its overflow buckets) from the region into scratch "logical entries"
 *   (one per (ns, key), holders merged across split records), changes one
 *   entry, drops every dead holder of the chain (old epoch, expired
 *   speculative), repacks all entries first-fit into bucket images, stamps
 *   chain_seq + 1 into every image, seals each with its offset and copies
 *   the overflow images in before the home image. A reader that catches the
 *   chain half-written sees a home image whose chain_seq differs from an
 *   overflow image's, or a torn image, and re-reads.
 *   That is the one general mechanism. A fast path (apply_fast) handles the
 *   common event on a one-bucket chain with nothing to drop by rewriting
 *   only the event's record in a copy of the home image; it writes the
 *   bytes the general path would, and declines everything else.
 *
 * Invariants
 *   - Every home bucket of the live table holds a valid image.
 *   - All records of a chain use the current table_gen; overflow buckets of a
 *     chain carry owner = home index and the chain's chain_seq.
 *   - A holder in the region has (slot, tier) unique within its block.
 *   - Accounting (blocks, records, holders, live[]) is changed only when a
 *     chain image is committed: old holders of the chain are uncounted and
 *     the new ones counted, so a refused write (FULL) changes nothing.
 *   - live[slot][tier] counts holders whose epoch is the slot's current one;
 *     holders_dead counts those of older epochs still in the region. An
 *     epoch bump moves live[] into holders_dead.
 *   - pending[slot][tier] counts epoch bumps since the last completed sweep
 *     pass; it never reaches 16, so an epoch value is never reused while a
 *     holder carrying it remains.
 *
 * Speculative holders expire by the clock: a wheel of 128 tick slots (TTL <
 * 128 ticks) remembers which (ns, key) to revisit at which tick, so expired
 * holders leave the region before their 8-bit expiry could wrap around.
 *
 * Locking: none. Writer thread only.
 */
#include "server/index.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define LOG_COMP "server.index"
#define WHEEL_SLOTS 128u
#define SPEC_TTL_MAX_TICKS 120u
#define MAX_COUNT 255u

struct ix_holder {
	uint16_t slot;
	uint8_t bits;
	uint8_t count;
	uint8_t has_loc;
	uint32_t loc_len;
	uint64_t loc_addr;
};

struct ix_entry {
	uint64_t key;
	uint16_t ns;
	uint8_t flags;
	uint8_t hits;
	uint16_t atime;
	uint32_t hstart; /* first holder in ix_chain.h */
	uint32_t hcount;
	uint32_t hcap; /* room reserved at hstart */
};

/* One table generation: geometry, extent, free overflow buckets. */
struct ix_table {
	struct kvdex_geometry g;
	uint64_t ext_off;
	uint64_t ext_len;
	uint32_t *ov_free; /* stack of free overflow indices */
	uint32_t nfree;
};

/* A decoded chain (scratch, reused). */
struct ix_chain {
	uint32_t home;
	uint32_t seq;
	uint32_t nrecords;
	uint32_t *ov;
	uint32_t nov;
	uint32_t ovcap;
	struct ix_entry *ent;
	uint32_t nent;
	uint32_t entcap;
	struct ix_holder *h;
	uint32_t nh; /* slots of h in use, including reserved room */
	uint32_t hcap;
	uint32_t *rec_ent;
	uint32_t reccap;
	/* holders as decoded, for accounting at commit */
	struct ix_holder *old;
	uint32_t nold;
	uint32_t oldcap;
	uint32_t old_nent;
	uint32_t dropped_spec;
	uint32_t dropped_dead;
	bool dirty;
};

struct ix_spec_item {
	uint64_t key;
	uint32_t expiry;
	uint16_t ns;
};

struct ix_wheel_slot {
	struct ix_spec_item *v;
	uint32_t n;
	uint32_t cap;
};

/* Bucket images being built. */
struct ix_bins {
	uint8_t *img;
	uint32_t *used;
	uint32_t *nrec;
	uint32_t n;
	uint32_t cap;
	uint32_t filter; /* the home bucket's ovf_filter */
};

struct kvdex_index {
	struct kvdex_region *rg;
	struct kvdex_index_opts opts;
	struct ix_table t;
	uint32_t now;
	uint8_t *epoch;	  /* [slot * 4 + tier] */
	uint8_t *pending; /* bumps since the last completed pass */
	uint32_t *live;	  /* current-epoch holders */
	struct kvdex_index_stats st;
	uint32_t sweep_pos;
	bool sweep_active;
	bool pass_failed;
	bool resize_blocked;
	bool expire_all_spec; /* the clock jumped past every TTL */
	struct ix_wheel_slot wheel[WHEEL_SLOTS];
	uint32_t wheel_tick;
	struct ix_chain ch;
	struct ix_chain split[2];
	struct ix_bins bins;
};

/* ---- small helpers -------------------------------------------------------- */

static int
grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
	uint32_t n;
	void *q;

	if (need <= *cap) {
		return 0;
	}
	n = *cap ? *cap : 16;
	while (n < need) {
		n *= 2;
	}
	q = realloc(*p, (size_t)n * elem);
	if (q == NULL) {
		return -ENOMEM;
	}
	*p = q;
	*cap = n;
	return 0;
}

#define GROW(ptr, cap, need) grow((void **)&(ptr), &(cap), (need), sizeof(*(ptr)))

static unsigned
h_tier(const struct ix_holder *h)
{
	return h->bits & KVDEX_H_TIER_MASK;
}

static unsigned
h_epoch(const struct ix_holder *h)
{
	return (h->bits & KVDEX_H_EPOCH_MASK) >> KVDEX_H_EPOCH_SHIFT;
}

static uint32_t
st_idx(uint16_t slot, unsigned tier)
{
	return (uint32_t)slot * KVDEX_NR_TIERS + tier;
}

static uint16_t
now_secs(const struct kvdex_index *ix)
{
	return (uint16_t)(ix->now / KVDEX_TICKS_PER_SEC);
}

static uint8_t *
bucket_at(const struct kvdex_index *ix, uint64_t off)
{
	return kvdex_region_ptr(ix->rg, off);
}

static uint64_t
chain_bucket_off(const struct ix_table *t, const struct ix_chain *c, uint32_t i)
{
	return i == 0 ? kvdex_home_offset(&t->g, c->home)
		      : kvdex_overflow_offset(&t->g, c->ov[i - 1]);
}

static void
hdr_get(const uint8_t *img, struct kvdex_bucket_hdr *bh)
{
	memcpy(bh, img, sizeof(*bh));
}

/* 0 live, 1 dead (old epoch or unknown slot), 2 expired speculative. */
static int
holder_state_raw(const struct kvdex_index *ix, uint16_t slot, uint8_t bits, uint8_t count)
{
	unsigned tier = bits & KVDEX_H_TIER_MASK;
	unsigned epoch = (bits & KVDEX_H_EPOCH_MASK) >> KVDEX_H_EPOCH_SHIFT;

	if (slot >= ix->opts.slots || epoch != ix->epoch[st_idx(slot, tier)]) {
		return 1;
	}
	if ((bits & KVDEX_H_SPEC) &&
	    (ix->expire_all_spec || (int8_t)(uint8_t)(count - (uint8_t)ix->now) <= 0)) {
		return 2;
	}
	return 0;
}

static int
holder_state(const struct kvdex_index *ix, const struct ix_holder *h)
{
	return holder_state_raw(ix, h->slot, h->bits, h->count);
}

/* ---- decoding ------------------------------------------------------------- */

static int
chain_find(const struct ix_chain *c, uint16_t ns, uint64_t key)
{
	/* Records of one block are adjacent, so look at the last entry first. */
	if (c->nent > 0 && c->ent[c->nent - 1].key == key && c->ent[c->nent - 1].ns == ns) {
		return (int)c->nent - 1;
	}
	for (uint32_t i = 0; i < c->nent; i++) {
		if (c->ent[i].key == key && c->ent[i].ns == ns) {
			return (int)i;
		}
	}
	return -1;
}

/* Append an empty entry with room for `room` holders. */
static int
chain_add_entry(struct ix_chain *c, uint16_t ns, uint64_t key, uint32_t room)
{
	struct ix_entry *e;

	if (GROW(c->ent, c->entcap, c->nent + 1) != 0 || GROW(c->h, c->hcap, c->nh + room) != 0) {
		return -ENOMEM;
	}
	e = &c->ent[c->nent];
	memset(e, 0, sizeof(*e));
	e->key = key;
	e->ns = ns;
	e->hstart = c->nh;
	e->hcap = room;
	c->nh += room;
	return (int)c->nent++;
}

static int
chain_collect_ov(const struct kvdex_index *ix, const struct ix_table *t, struct ix_chain *c)
{
	struct kvdex_bucket_hdr bh;

	hdr_get(bucket_at(ix, kvdex_home_offset(&t->g, c->home)), &bh);
	c->seq = bh.chain_seq;
	while (bh.next != 0) {
		uint32_t ov = bh.next - 1;

		if (ov >= t->g.overflow_count || c->nov >= t->g.overflow_count) {
			KVDEX_DIE(LOG_COMP, "chain %u: bad overflow link %u", c->home, bh.next);
		}
		if (GROW(c->ov, c->ovcap, c->nov + 1) != 0) {
			return -ENOMEM;
		}
		c->ov[c->nov++] = ov;
		hdr_get(bucket_at(ix, kvdex_overflow_offset(&t->g, ov)), &bh);
	}
	return 0;
}

/* Pass 1: find each record's entry and count holders per entry. */
static int
chain_count_records(const struct kvdex_index *ix, const struct ix_table *t, struct ix_chain *c)
{
	struct kvdex_record_view rv;

	for (uint32_t b = 0; b <= c->nov; b++) {
		const uint8_t *img = bucket_at(ix, chain_bucket_off(t, c, b));
		size_t pos = 0;
		int rc;

		while ((rc = kvdex_record_next(img, t->g.bucket_size, &pos, &rv)) == 1) {
			int ei = chain_find(c, rv.hdr.ns, rv.hdr.key);

			if (ei < 0) {
				if (GROW(c->ent, c->entcap, c->nent + 1) != 0) {
					return -ENOMEM;
				}
				ei = (int)c->nent++;
				memset(&c->ent[ei], 0, sizeof(c->ent[ei]));
				c->ent[ei].key = rv.hdr.key;
				c->ent[ei].ns = rv.hdr.ns;
				c->ent[ei].flags =
					rv.hdr.flags & ~KVDEX_REC_MORE; /* a packing detail */
				c->ent[ei].atime = rv.hdr.atime;
				c->ent[ei].hits = rv.hdr.hits;
			}
			c->ent[ei].hcount += rv.hdr.nholders;
			if (GROW(c->rec_ent, c->reccap, c->nrecords + 1) != 0) {
				return -ENOMEM;
			}
			c->rec_ent[c->nrecords++] = (uint32_t)ei;
		}
		if (rc < 0) {
			KVDEX_DIE(LOG_COMP, "chain %u: malformed bucket %u", c->home, b);
		}
	}
	return 0;
}

/* Copy one record's holders and locations to base[0..nholders). */
static void
record_read_holders(const struct kvdex_record_view *rv, struct ix_holder *base)
{
	for (unsigned i = 0; i < rv->hdr.nholders; i++) {
		struct kvdex_holder kh;

		memcpy(&kh, &rv->holders[i], sizeof(kh));
		base[i] = (struct ix_holder){.slot = kh.slot, .bits = kh.bits, .count = kh.count};
	}
	for (unsigned i = 0; i < rv->hdr.nlocs; i++) {
		struct kvdex_loc kl;

		memcpy(&kl, &rv->locs[i], sizeof(kl));
		if (kl.holder < rv->hdr.nholders) {
			base[kl.holder].has_loc = 1;
			base[kl.holder].loc_addr = kl.addr;
			base[kl.holder].loc_len = kl.len;
		}
	}
}

/* Pass 2: copy holders and locations into each entry's range. */
static void
chain_fill_holders(const struct kvdex_index *ix, const struct ix_table *t, struct ix_chain *c)
{
	struct kvdex_record_view rv;
	uint32_t r = 0;

	for (uint32_t b = 0; b <= c->nov; b++) {
		const uint8_t *img = bucket_at(ix, chain_bucket_off(t, c, b));
		size_t pos = 0;

		while (kvdex_record_next(img, t->g.bucket_size, &pos, &rv) == 1) {
			struct ix_entry *e = &c->ent[c->rec_ent[r++]];

			record_read_holders(&rv, &c->h[e->hstart + e->hcount]);
			e->hcount += rv.hdr.nholders;
		}
	}
}

static int
chain_snapshot_old(struct ix_chain *c)
{
	c->nold = 0;
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct ix_entry *e = &c->ent[i];

		if (GROW(c->old, c->oldcap, c->nold + e->hcount) != 0) {
			return -ENOMEM;
		}
		memcpy(&c->old[c->nold], &c->h[e->hstart], e->hcount * sizeof(*c->h));
		c->nold += e->hcount;
	}
	c->old_nent = c->nent;
	return 0;
}

/* Decode the chain of home bucket `home` of table t into c. */
static int
chain_decode(const struct kvdex_index *ix, const struct ix_table *t, uint32_t home,
	     struct ix_chain *c)
{
	uint32_t total = 0;
	int rc;

	c->home = home;
	c->nov = 0;
	c->nent = 0;
	c->nh = 0;
	c->nrecords = 0;
	c->dropped_dead = 0;
	c->dropped_spec = 0;
	c->dirty = false;
	rc = chain_collect_ov(ix, t, c);
	if (rc == 0) {
		rc = chain_count_records(ix, t, c);
	}
	if (rc != 0) {
		return rc;
	}
	/* Lay the entries out with one spare holder each, so that adding a
	 * holder to any entry needs no move. */
	for (uint32_t i = 0; i < c->nent; i++) {
		c->ent[i].hstart = total;
		c->ent[i].hcap = c->ent[i].hcount + 1;
		total += c->ent[i].hcap;
		c->ent[i].hcount = 0;
	}
	if (GROW(c->h, c->hcap, total) != 0) {
		return -ENOMEM;
	}
	c->nh = total;
	chain_fill_holders(ix, t, c);
	return chain_snapshot_old(c);
}

/* Remove dead and expired holders, and entries left without holders. */
static void
chain_drop_dead(const struct kvdex_index *ix, struct ix_chain *c)
{
	uint32_t ne = 0;

	for (uint32_t i = 0; i < c->nent; i++) {
		struct ix_entry *e = &c->ent[i];
		struct ix_holder *h = &c->h[e->hstart];
		uint32_t n = 0;

		for (uint32_t j = 0; j < e->hcount; j++) {
			int s = holder_state(ix, &h[j]);

			if (s == 0) {
				h[n++] = h[j];
			} else if (s == 1) {
				c->dropped_dead++;
			} else {
				c->dropped_spec++;
			}
		}
		if (n != e->hcount) {
			c->dirty = true;
		}
		e->hcount = n;
		if (n > 0) {
			c->ent[ne++] = *e;
		}
	}
	c->nent = ne;
}

/* ---- packing -------------------------------------------------------------- */

static int
bins_add(struct ix_bins *bn, uint32_t bs)
{
	if (bn->n == bn->cap) {
		uint32_t cap = bn->cap ? bn->cap * 2 : 8;
		uint8_t *img = realloc(bn->img, (size_t)cap * bs);
		uint32_t *used = realloc(bn->used, cap * sizeof(*used));
		uint32_t *nrec;

		if (img != NULL) {
			bn->img = img;
		}
		if (used != NULL) {
			bn->used = used;
		}
		nrec = realloc(bn->nrec, cap * sizeof(*nrec));
		if (nrec != NULL) {
			bn->nrec = nrec;
		}
		if (img == NULL || used == NULL || nrec == NULL) {
			return -ENOMEM;
		}
		bn->cap = cap;
	}
	memset(bn->img + (size_t)bn->n * bs, 0, bs);
	bn->used[bn->n] = 0;
	bn->nrec[bn->n] = 0;
	bn->n++;
	return 0;
}

static unsigned
count_locs(const struct ix_holder *h, uint32_t n)
{
	unsigned nl = 0;

	for (uint32_t i = 0; i < n; i++) {
		nl += h[i].has_loc;
	}
	return nl;
}

static void
record_write(uint8_t *dst, const struct ix_entry *e, const struct ix_holder *h, uint32_t n,
	     unsigned nl)
{
	struct kvdex_record_hdr rh = {
		.key = e->key,
		.ns = e->ns,
		.nholders = (uint8_t)n,
		.flags = e->flags,
		.atime = e->atime,
		.hits = e->hits,
		.nlocs = (uint8_t)nl,
	};
	size_t size = kvdex_record_size(n, nl);
	uint8_t *loc = dst + size - (size_t)nl * KVDEX_LOC_SIZE;

	memcpy(dst, &rh, sizeof(rh));
	for (uint32_t i = 0; i < n; i++) {
		struct kvdex_holder kh = {
			.slot = h[i].slot, .bits = h[i].bits, .count = h[i].count};

		memcpy(dst + KVDEX_RECORD_HDR_SIZE + i * KVDEX_HOLDER_SIZE, &kh, sizeof(kh));
		if (h[i].has_loc) {
			struct kvdex_loc kl = {
				.addr = h[i].loc_addr, .len = h[i].loc_len, .holder = (uint16_t)i};

			memcpy(loc, &kl, sizeof(kl));
			loc += KVDEX_LOC_SIZE;
		}
	}
}

/*
 * Put one record (holders h[0..n)) into the first bin at or after *bin with
 * room; *bin and *at return where it went. Starting at the bin of the key's
 * previous record keeps a key's records in chain order, which readers rely on
 * when they stop at a record without KVDEX_REC_MORE.
 */
static int
bins_place(struct ix_bins *bn, uint32_t bs, const struct ix_entry *e, const struct ix_holder *h,
	   uint32_t n, uint32_t *bin, uint8_t **at)
{
	unsigned nl = count_locs(h, n);
	uint32_t size = (uint32_t)kvdex_record_size(n, nl);
	uint32_t area = bs - KVDEX_BUCKET_HDR_SIZE;
	uint32_t b;

	for (b = *bin; b < bn->n; b++) {
		if (bn->used[b] + size <= area) {
			break;
		}
	}
	if (b == bn->n && bins_add(bn, bs) != 0) {
		return -ENOMEM;
	}
	*at = bn->img + (size_t)b * bs + KVDEX_BUCKET_HDR_SIZE + bn->used[b];
	*bin = b;
	record_write(*at, e, h, n, nl);
	bn->used[b] += size;
	bn->nrec[b]++;
	return 0;
}

/* Mark the record at `rec` as followed by more records of its key. */
static void
record_set_more(uint8_t *rec)
{
	rec[offsetof(struct kvdex_record_hdr, flags)] |= KVDEX_REC_MORE;
}

/* Largest prefix of h[0..n) that fits one record in an empty bucket. */
static uint32_t
split_chunk(const struct ix_holder *h, uint32_t n, uint32_t area)
{
	uint32_t k = 0;
	unsigned nl = 0;

	while (k < n && k < MAX_COUNT) {
		unsigned add = h[k].has_loc;

		if (kvdex_record_size(k + 1, nl + add) > area) {
			break;
		}
		nl += add;
		k++;
	}
	return k;
}

/*
 * Build the chain's bucket images into ix->bins: first fit, an entry split
 * into several records when one does not fit a bucket (all but its last
 * record flagged KVDEX_REC_MORE), and the home image's ovf_filter naming
 * every entry with a record outside the home bucket.
 */
static int
chain_pack(struct kvdex_index *ix, const struct kvdex_geometry *g, const struct ix_chain *c)
{
	uint32_t bs = g->bucket_size;
	uint32_t area = bs - KVDEX_BUCKET_HDR_SIZE;
	struct ix_bins *bn = &ix->bins;
	int rc;

	bn->n = 0;
	bn->filter = 0;
	rc = bins_add(bn, bs);
	for (uint32_t i = 0; rc == 0 && i < c->nent; i++) {
		const struct ix_entry *e = &c->ent[i];
		const struct ix_holder *h = &c->h[e->hstart];
		uint32_t done = 0, bin = 0;
		size_t prev = SIZE_MAX; /* offset of the entry's previous record */

		while (rc == 0 && done < e->hcount) {
			uint32_t k = split_chunk(h + done, e->hcount - done, area);
			uint8_t *at;

			rc = bins_place(bn, bs, e, h + done, k, &bin, &at);
			if (rc != 0) {
				break;
			}
			if (prev != SIZE_MAX) {
				/* by offset: bins_add may have moved the images */
				record_set_more(bn->img + prev);
			}
			prev = (size_t)(at - bn->img);
			done += k;
		}
		if (rc == 0 && bin > 0) {
			bn->filter |= kvdex_ovf_bit(g, e->ns, e->key);
		}
	}
	return rc;
}

/* ---- committing ------------------------------------------------------------ */

static void
holder_count(struct kvdex_index *ix, const struct ix_holder *h, int delta)
{
	uint32_t idx = st_idx(h->slot, h_tier(h));

	if (h->slot < ix->opts.slots && h_epoch(h) == ix->epoch[idx]) {
		ix->live[idx] += (uint32_t)delta;
		ix->st.holders += (uint64_t)(int64_t)delta;
	} else {
		ix->st.holders_dead += (uint64_t)(int64_t)delta;
	}
}

static void
chain_account(struct kvdex_index *ix, const struct ix_chain *c, uint32_t nrecords)
{
	for (uint32_t i = 0; i < c->nold; i++) {
		holder_count(ix, &c->old[i], -1);
	}
	for (uint32_t i = 0; i < c->nent; i++) {
		for (uint32_t j = 0; j < c->ent[i].hcount; j++) {
			holder_count(ix, &c->h[c->ent[i].hstart + j], 1);
		}
	}
	ix->st.blocks += (uint64_t)c->nent - c->old_nent;
	ix->st.records += (uint64_t)nrecords - c->nrecords;
	ix->st.spec_expired += c->dropped_spec;
	ix->st.swept_holders += c->dropped_dead;
}

/* Stamp, seal and write the images in ix->bins as chain c of table t. */
static void
chain_write(struct kvdex_index *ix, struct ix_table *t, struct ix_chain *c)
{
	struct ix_bins *bn = &ix->bins;
	uint32_t bs = t->g.bucket_size;
	uint32_t nov_new = bn->n - 1;
	uint32_t seq = c->seq + 1;

	/* Overflow buckets: keep the chain's, take more from the free stack,
	 * give back the ones no longer needed. The caller checked that the
	 * stack has enough. Readers holding the old home image may still read
	 * a freed bucket; its owner or chain_seq will not match once reused. */
	for (uint32_t i = c->nov; i < nov_new; i++) {
		c->ov[i] = t->ov_free[--t->nfree];
	}
	for (uint32_t i = nov_new; i < c->nov; i++) {
		t->ov_free[t->nfree++] = c->ov[i];
	}
	c->nov = nov_new;
	for (uint32_t b = bn->n; b-- > 0;) {
		uint8_t *img = bn->img + (size_t)b * bs;
		uint64_t off = chain_bucket_off(t, c, b);
		struct kvdex_bucket_hdr bh = {
			.table_gen = t->g.table_gen,
			.chain_seq = seq,
			.owner = c->home,
			.next = b + 1 < bn->n ? c->ov[b] + 1 : 0,
			.used = (uint16_t)bn->used[b],
			.flags = b == 0 ? KVDEX_BUCKET_HOME : KVDEX_BUCKET_OVERFLOW,
			.nrecords = (uint8_t)bn->nrec[b],
			.ovf_filter = b == 0 ? bn->filter : 0,
		};

		memcpy(img, &bh, sizeof(bh));
		kvdex_bucket_seal(img, bs, t->g.hash_seed, off);
		/* Overflow buckets first (b descending), the home bucket last. */
		memcpy(bucket_at(ix, off), img, bs);
	}
	c->seq = seq;
}

static uint32_t
bins_records(const struct ix_bins *bn)
{
	uint32_t n = 0;

	for (uint32_t b = 0; b < bn->n; b++) {
		n += bn->nrec[b];
	}
	return n;
}

/* Pack and write chain c into the live table. -ENOSPC: no overflow left. */
static int
chain_commit(struct kvdex_index *ix, struct ix_chain *c)
{
	struct ix_table *t = &ix->t;
	int rc;

	rc = chain_pack(ix, &t->g, c);
	if (rc != 0) {
		return rc;
	}
	if (ix->bins.n - 1 > c->nov && ix->bins.n - 1 - c->nov > t->nfree) {
		return -ENOSPC;
	}
	if (GROW(c->ov, c->ovcap, ix->bins.n) != 0) {
		return -ENOMEM;
	}
	chain_account(ix, c, bins_records(&ix->bins));
	chain_write(ix, t, c);
	ix->st.overflow_used = t->g.overflow_count - t->nfree;
	return 0;
}

/* ---- events ---------------------------------------------------------------- */

static int
entry_find_holder(const struct ix_chain *c, const struct ix_entry *e, uint16_t slot, unsigned tier)
{
	for (uint32_t j = 0; j < e->hcount; j++) {
		const struct ix_holder *h = &c->h[e->hstart + j];

		if (h->slot == slot && h_tier(h) == tier) {
			return (int)j;
		}
	}
	return -1;
}

static uint32_t
ttl_ticks(const struct kvdex_index *ix, uint32_t ttl_ms)
{
	uint32_t t;

	if (ttl_ms == 0) {
		ttl_ms = ix->opts.spec_ttl_ms;
	}
	t = (ttl_ms * KVDEX_TICKS_PER_SEC + 999u) / 1000u;
	if (t == 0) {
		t = 1;
	}
	return t > SPEC_TTL_MAX_TICKS ? SPEC_TTL_MAX_TICKS : t;
}

static int
wheel_add(struct kvdex_index *ix, uint16_t ns, uint64_t key, uint32_t expiry)
{
	struct ix_wheel_slot *w = &ix->wheel[expiry % WHEEL_SLOTS];

	if (GROW(w->v, w->cap, w->n + 1) != 0) {
		return -ENOMEM;
	}
	w->v[w->n++] = (struct ix_spec_item){.key = key, .expiry = expiry, .ns = ns};
	return 0;
}

static struct ix_holder *
entry_add_holder(struct ix_chain *c, struct ix_entry *e)
{
	assert(e->hcount < e->hcap);
	return &c->h[e->hstart + e->hcount++];
}

static int
apply_spec(struct kvdex_index *ix, struct ix_chain *c, struct ix_entry *e,
	   const struct kvdex_index_event *ev, int hi)
{
	uint32_t expiry = ix->now + ttl_ticks(ix, ev->ttl_ms);
	struct ix_holder *h;

	if (hi >= 0 && !(c->h[e->hstart + hi].bits & KVDEX_H_SPEC)) {
		return KVDEX_IX_IGNORED; /* a real copy beats a routing guess */
	}
	if (wheel_add(ix, ev->ns, ev->key, expiry) != 0) {
		return -ENOMEM;
	}
	if (hi >= 0) {
		h = &c->h[e->hstart + hi];
	} else {
		h = entry_add_holder(c, e);
		*h = (struct ix_holder){
			.slot = ev->slot,
			.bits = (uint8_t)(ev->tier | KVDEX_H_SPEC |
					  ix->epoch[st_idx(ev->slot, ev->tier)]
						  << KVDEX_H_EPOCH_SHIFT),
		};
	}
	h->count = (uint8_t)expiry;
	return KVDEX_IX_APPLIED;
}

static void
apply_real(struct kvdex_index *ix, struct ix_chain *c, struct ix_entry *e,
	   const struct kvdex_index_event *ev, int hi)
{
	struct ix_holder *h;

	if (hi < 0) {
		h = entry_add_holder(c, e);
		*h = (struct ix_holder){
			.slot = ev->slot,
			.bits = (uint8_t)(ev->tier | ix->epoch[st_idx(ev->slot, ev->tier)]
							     << KVDEX_H_EPOCH_SHIFT),
			.count = 1,
		};
		return;
	}
	h = &c->h[e->hstart + hi];
	if (h->bits & KVDEX_H_SPEC) {
		h->bits &= (uint8_t)~KVDEX_H_SPEC;
		h->count = 1;
	} else if (h->count < MAX_COUNT) {
		h->count++;
	}
}

static int
apply_stored(struct kvdex_index *ix, struct ix_chain *c, const struct kvdex_index_event *ev)
{
	int ei = chain_find(c, ev->ns, ev->key);
	struct ix_entry *e;
	int hi = -1;
	int rc;

	if (ei < 0) {
		ei = chain_add_entry(c, ev->ns, ev->key, 1);
		if (ei < 0) {
			return ei;
		}
	}
	e = &c->ent[ei];
	hi = entry_find_holder(c, e, ev->slot, ev->tier);
	if (ev->spec) {
		rc = apply_spec(ix, c, e, ev, hi);
		if (rc != KVDEX_IX_APPLIED) {
			return rc;
		}
	} else {
		apply_real(ix, c, e, ev, hi);
	}
	if (ev->has_loc) {
		struct ix_holder *h = &c->h[e->hstart + (hi >= 0 ? (uint32_t)hi : e->hcount - 1)];

		h->has_loc = 1;
		h->loc_addr = ev->loc_addr;
		h->loc_len = ev->loc_len;
	}
	e->flags = (uint8_t)((e->flags & ~KVDEX_REC_FUSED) | (ev->fused ? KVDEX_REC_FUSED : 0));
	e->atime = now_secs(ix);
	c->dirty = true;
	return KVDEX_IX_APPLIED;
}

static int
apply_removed(struct kvdex_index *ix, struct ix_chain *c, const struct kvdex_index_event *ev)
{
	int ei = chain_find(c, ev->ns, ev->key);
	struct ix_entry *e;
	struct ix_holder *h;
	int hi;

	if (ei < 0) {
		return KVDEX_IX_IGNORED;
	}
	e = &c->ent[ei];
	hi = entry_find_holder(c, e, ev->slot, ev->tier);
	if (hi < 0) {
		return KVDEX_IX_IGNORED;
	}
	h = &c->h[e->hstart + hi];
	c->dirty = true;
	if (!(h->bits & KVDEX_H_SPEC) && h->count > 1) {
		h->count--;
		return KVDEX_IX_APPLIED;
	}
	/* Last copy (or a speculative holder): the holder goes; an entry
	 * without holders is dropped at repack. */
	memmove(h, h + 1, (e->hcount - (uint32_t)hi - 1) * sizeof(*h));
	e->hcount--;
	if (e->hcount == 0) {
		memmove(e, e + 1, (c->nent - (uint32_t)ei - 1) * sizeof(*e));
		c->nent--;
	}
	return KVDEX_IX_APPLIED;
}

static int
apply_touched(struct kvdex_index *ix, struct ix_chain *c, const struct kvdex_index_event *ev)
{
	int ei = chain_find(c, ev->ns, ev->key);
	struct ix_entry *e;

	if (ei < 0) {
		return KVDEX_IX_IGNORED;
	}
	e = &c->ent[ei];
	e->atime = now_secs(ix);
	if (e->hits < UINT8_MAX) {
		e->hits++;
	}
	c->dirty = true;
	return KVDEX_IX_APPLIED;
}

static int
apply_event(struct kvdex_index *ix, struct ix_chain *c, const struct kvdex_index_event *ev)
{
	switch (ev->type) {
	case KVDEX_IX_STORED:
		return apply_stored(ix, c, ev);
	case KVDEX_IX_REMOVED:
		return apply_removed(ix, c, ev);
	case KVDEX_IX_TOUCHED:
		return apply_touched(ix, c, ev);
	default:
		return -EINVAL;
	}
}

/* ---- the one-bucket fast path ---------------------------------------------- */

/*
 * Most events touch a chain of one bucket with nothing in it to drop. For
 * those the general path's result is known without decoding the chain:
 * first fit puts every entry, in chain order, back into the home bucket, so
 * its image is the old one with the event's record rewritten in place
 * (appended for a new block, cut out for a block's last holder) and every
 * other byte unchanged, since every image was written by the packer. The
 * fast path decodes only that record into a one-entry chain, applies the
 * event with the same apply_* code, and splices the re-encoded record into
 * a copy of the image. It declines (-EAGAIN) before changing anything
 * whenever the general path might do more: an overflow chain, a record
 * flagged MORE, a dead or expired holder anywhere in the bucket, a store
 * that might not fit. index_test runs random streams through both paths
 * and compares the region bytes.
 */

/* Where the event's record is in a home image, if anywhere. */
struct fast_pos {
	struct kvdex_record_view rv;
	size_t at; /* its offset in the record area, or `used` if absent */
	bool found;
	uint32_t nrec;
	uint32_t used;
};

/* true when the fast path applies to the home image img. */
static bool
fast_scan(const struct kvdex_index *ix, const uint8_t *img, const struct kvdex_index_event *ev,
	  struct fast_pos *fp)
{
	uint32_t bs = ix->t.g.bucket_size;
	struct kvdex_bucket_hdr bh;
	struct kvdex_record_view rv;
	size_t pos = 0, at = 0;
	int rc;

	hdr_get(img, &bh);
	if (bh.next != 0) {
		return false;
	}
	fp->found = false;
	while ((rc = kvdex_record_next(img, bs, &pos, &rv)) == 1) {
		if (rv.hdr.flags & KVDEX_REC_MORE) {
			return false;
		}
		for (unsigned i = 0; i < rv.hdr.nholders; i++) {
			struct kvdex_holder kh;

			memcpy(&kh, &rv.holders[i], sizeof(kh));
			if (holder_state_raw(ix, kh.slot, kh.bits, kh.count) != 0) {
				return false;
			}
		}
		if (rv.hdr.key == ev->key && rv.hdr.ns == ev->ns) {
			if (fp->found) {
				return false;
			}
			fp->found = true;
			fp->rv = rv;
			fp->at = at;
		}
		at = pos;
	}
	if (rc < 0) {
		return false; /* the general path reports it */
	}
	fp->nrec = bh.nrecords;
	fp->used = bh.used;
	if (!fp->found) {
		fp->at = bh.used;
	}
	/* A store grows its record by at most one holder and one location, or
	 * adds a record of one holder with a location. */
	if (ev->type == KVDEX_IX_STORED &&
	    (bh.used + kvdex_record_size(1, 1) > bs - KVDEX_BUCKET_HDR_SIZE ||
	     (fp->found && fp->rv.hdr.nholders >= MAX_COUNT))) {
		return false;
	}
	return true;
}

/* Decode the one record at fp into c as a one-entry chain (or none). */
static int
fast_decode(struct ix_chain *c, uint32_t home, uint32_t seq, const struct fast_pos *fp)
{
	const struct kvdex_record_hdr *rh = &fp->rv.hdr;

	c->home = home;
	c->seq = seq;
	c->nov = 0;
	c->nent = 0;
	c->nh = 0;
	c->nrecords = fp->found;
	c->dropped_dead = 0;
	c->dropped_spec = 0;
	c->dirty = false;
	if (fp->found) {
		if (GROW(c->ent, c->entcap, 1) != 0 ||
		    GROW(c->h, c->hcap, rh->nholders + 1u) != 0) {
			return -ENOMEM;
		}
		c->ent[0] = (struct ix_entry){
			.key = rh->key,
			.ns = rh->ns,
			.flags = rh->flags,
			.hits = rh->hits,
			.atime = rh->atime,
			.hcount = rh->nholders,
			.hcap = rh->nholders + 1u,
		};
		record_read_holders(&fp->rv, c->h);
		c->nent = 1;
		c->nh = rh->nholders + 1u;
	}
	return chain_snapshot_old(c);
}

/* Splice c's entry (or its absence) over the record at fp in a copy of the
 * home image, then account, stamp, seal and write it as chain_commit does. */
static void
fast_commit(struct kvdex_index *ix, struct ix_chain *c, const uint8_t *img,
	    const struct fast_pos *fp)
{
	struct ix_bins *bn = &ix->bins;
	uint32_t bs = ix->t.g.bucket_size;
	uint8_t *area = bn->img + KVDEX_BUCKET_HDR_SIZE;
	size_t old_size = fp->found ? fp->rv.size : 0;
	size_t new_size = 0;
	uint32_t used;
	unsigned nl = 0;

	if (c->nent == 1) {
		nl = count_locs(c->h, c->ent[0].hcount);
		new_size = kvdex_record_size(c->ent[0].hcount, nl);
	}
	used = (uint32_t)(fp->used - old_size + new_size);
	assert(used <= bs - KVDEX_BUCKET_HDR_SIZE &&
	       (c->nent == 0 || c->ent[0].hcount <= MAX_COUNT));
	memcpy(bn->img, img, bs);
	memmove(area + fp->at + new_size, area + fp->at + old_size, fp->used - fp->at - old_size);
	if (new_size > 0) {
		/* zeroed first: record_write leaves the holder padding alone */
		memset(area + fp->at, 0, new_size);
		record_write(area + fp->at, &c->ent[0], c->h, c->ent[0].hcount, nl);
	}
	if (used < fp->used) {
		memset(area + used, 0, fp->used - used);
	}
	bn->n = 1;
	bn->used[0] = used;
	bn->nrec[0] = fp->nrec - c->nrecords + c->nent;
	bn->filter = 0;
	chain_account(ix, c, c->nent);
	chain_write(ix, &ix->t, c);
	ix->st.fast_applies++;
}

/* Apply ev through the fast path; -EAGAIN when it does not apply. */
static int
apply_fast(struct kvdex_index *ix, uint32_t home, const struct kvdex_index_event *ev)
{
	const uint8_t *img = bucket_at(ix, kvdex_home_offset(&ix->t.g, home));
	struct ix_chain *c = &ix->ch;
	struct kvdex_bucket_hdr bh;
	struct fast_pos fp;
	int res;

	/* The bucket is most likely not in cache: ask for all of its lines at
	 * once instead of missing on each in turn. */
	for (uint32_t l = 0; l < ix->t.g.bucket_size; l += KVDEX_CACHE_LINE) {
		__builtin_prefetch(img + l);
	}
	if (ix->opts.general_only || !fast_scan(ix, img, ev, &fp)) {
		return -EAGAIN;
	}
	hdr_get(img, &bh);
	res = fast_decode(c, home, bh.chain_seq, &fp);
	if (res != 0) {
		return res;
	}
	res = apply_event(ix, c, ev);
	if (res >= 0 && c->dirty) {
		fast_commit(ix, c, img, &fp);
	}
	return res;
}

void
kvdex_index_prefetch(const struct kvdex_index *ix, uint16_t ns, uint64_t key)
{
	const uint8_t *img =
		bucket_at(ix, kvdex_home_offset(&ix->t.g, kvdex_home_index(&ix->t.g, ns, key)));

	for (uint32_t l = 0; l < ix->t.g.bucket_size; l += KVDEX_CACHE_LINE) {
		__builtin_prefetch(img + l);
	}
}

static int
apply_once(struct kvdex_index *ix, const struct kvdex_index_event *ev)
{
	struct ix_chain *c = &ix->ch;
	uint32_t home = kvdex_home_index(&ix->t.g, ev->ns, ev->key);
	int res;
	int rc;

	res = apply_fast(ix, home, ev);
	if (res != -EAGAIN) {
		return res;
	}
	rc = chain_decode(ix, &ix->t, home, c);
	if (rc != 0) {
		return rc;
	}
	chain_drop_dead(ix, c);
	res = apply_event(ix, c, ev);
	if (res < 0 || !c->dirty) {
		return res;
	}
	rc = chain_commit(ix, c);
	return rc != 0 ? rc : res;
}

static bool
overflow_pressure(const struct kvdex_index *ix)
{
	return (uint64_t)(ix->t.g.overflow_count - ix->t.nfree) * 2 > ix->t.g.overflow_count;
}

static void
maybe_resize(struct kvdex_index *ix)
{
	if (overflow_pressure(ix) && !ix->resize_blocked) {
		(void)kvdex_index_resize(ix);
	}
}

int
kvdex_index_apply(struct kvdex_index *ix, const struct kvdex_index_event *ev)
{
	int rc;

	assert(ev->slot < ix->opts.slots && ev->tier < KVDEX_NR_TIERS);
	rc = apply_once(ix, ev);
	if (rc == -ENOSPC && !ix->resize_blocked && kvdex_index_resize(ix) == 0) {
		rc = apply_once(ix, ev);
	}
	if (rc == -ENOSPC) {
		ix->st.index_full++;
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
				    "index full: refusing a store (region max reached, %llu "
				    "refused so far)",
				    (unsigned long long)ix->st.index_full);
		return KVDEX_IX_FULL;
	}
	if (rc >= 0) {
		maybe_resize(ix);
	}
	return rc;
}

/* ---- epochs and sweeping --------------------------------------------------- */

uint8_t
kvdex_index_epoch(const struct kvdex_index *ix, uint16_t slot, unsigned tier)
{
	return ix->epoch[st_idx(slot, tier)];
}

static bool
chain_has_dead(const struct kvdex_index *ix, uint32_t home)
{
	const struct ix_table *t = &ix->t;
	uint64_t off = kvdex_home_offset(&t->g, home);

	for (;;) {
		const uint8_t *img = bucket_at(ix, off);
		struct kvdex_record_view rv;
		struct kvdex_bucket_hdr bh;
		size_t pos = 0;

		while (kvdex_record_next(img, t->g.bucket_size, &pos, &rv) == 1) {
			for (unsigned i = 0; i < rv.hdr.nholders; i++) {
				struct kvdex_holder kh;
				struct ix_holder h;

				memcpy(&kh, &rv.holders[i], sizeof(kh));
				h = (struct ix_holder){
					.slot = kh.slot, .bits = kh.bits, .count = kh.count};
				if (holder_state(ix, &h) != 0) {
					return true;
				}
			}
		}
		hdr_get(img, &bh);
		if (bh.next == 0 || bh.next > t->g.overflow_count) {
			return false;
		}
		off = kvdex_overflow_offset(&t->g, bh.next - 1);
	}
}

/* Rewrite chain `home` without its dead holders. false if it could not. */
static bool
sweep_chain(struct kvdex_index *ix, uint32_t home)
{
	struct ix_chain *c = &ix->ch;

	if (!chain_has_dead(ix, home)) {
		return true;
	}
	if (chain_decode(ix, &ix->t, home, c) != 0) {
		return false;
	}
	chain_drop_dead(ix, c);
	if (c->dirty && chain_commit(ix, c) != 0) {
		KVDEX_LOG_RATELIMIT(KVDEX_LOG_LVL_WARN, 10, LOG_COMP,
				    "sweep could not repack chain %u", home);
		return false;
	}
	return true;
}

static void
sweep_pass_done(struct kvdex_index *ix)
{
	if (!ix->pass_failed) {
		memset(ix->pending, 0, (size_t)ix->opts.slots * KVDEX_NR_TIERS);
		ix->sweep_active = false;
	}
	ix->pass_failed = false;
	ix->sweep_pos = 0;
	ix->st.sweep_passes++;
}

static void
sweep_step(struct kvdex_index *ix, uint32_t budget)
{
	uint32_t nhome = 1u << ix->t.g.table_log2;

	if (!ix->sweep_active) {
		return;
	}
	if (ix->st.holders_dead == 0) {
		/* Nothing of an old epoch is left anywhere: every epoch value
		 * may be reused. */
		ix->pass_failed = false;
		sweep_pass_done(ix);
		return;
	}
	while (budget-- > 0 && ix->sweep_active) {
		if (!sweep_chain(ix, ix->sweep_pos)) {
			ix->pass_failed = true;
		}
		if (++ix->sweep_pos >= nhome) {
			sweep_pass_done(ix);
		}
	}
}

void
kvdex_index_sweep_all(struct kvdex_index *ix)
{
	uint32_t nhome = 1u << ix->t.g.table_log2;

	ix->pass_failed = false;
	for (uint32_t i = 0; i < nhome; i++) {
		if (!sweep_chain(ix, i)) {
			ix->pass_failed = true;
		}
	}
	if (ix->pass_failed) {
		KVDEX_LOG_ERR(LOG_COMP, "full sweep left dead holders behind");
	}
	ix->sweep_active = true;
	sweep_pass_done(ix);
}

void
kvdex_index_bump_epochs(struct kvdex_index *ix, uint16_t slot, unsigned tier_mask)
{
	bool force = false;

	assert(slot < ix->opts.slots);
	if (tier_mask == 0) {
		tier_mask = (1u << KVDEX_NR_TIERS) - 1;
	}
	for (unsigned tier = 0; tier < KVDEX_NR_TIERS; tier++) {
		uint32_t idx = st_idx(slot, tier);

		if (!(tier_mask & (1u << tier))) {
			continue;
		}
		ix->epoch[idx] = (uint8_t)((ix->epoch[idx] + 1) & 0x0f);
		ix->st.holders_dead += ix->live[idx];
		ix->st.holders -= ix->live[idx];
		ix->live[idx] = 0;
		if (++ix->pending[idx] >= 15) {
			force = true;
		}
	}
	/* Holders met before this bump in the running pass were judged by the
	 * old epochs: start over. */
	ix->sweep_active = true;
	ix->sweep_pos = 0;
	ix->pass_failed = false;
	if (force) {
		ix->st.forced_sweeps++;
		kvdex_index_sweep_all(ix);
	}
}

/* ---- speculative expiry ---------------------------------------------------- */

static void
wheel_run_slot(struct kvdex_index *ix, struct ix_wheel_slot *w)
{
	uint32_t keep = 0;

	for (uint32_t i = 0; i < w->n; i++) {
		struct ix_spec_item it = w->v[i];
		struct ix_chain *c = &ix->ch;

		if (!ix->expire_all_spec && (int32_t)(it.expiry - ix->now) > 0) {
			w->v[keep++] = it;
			continue;
		}
		if (chain_decode(ix, &ix->t, kvdex_home_index(&ix->t.g, it.ns, it.key), c) != 0) {
			w->v[keep++] = it; /* out of memory: try next round */
			continue;
		}
		chain_drop_dead(ix, c);
		if (c->dirty) {
			(void)chain_commit(ix, c);
		}
	}
	w->n = keep;
}

/*
 * Run the wheel for every tick since the last call, with the clock set to
 * that tick, so that the 8-bit expiry comparisons stay exact. A jump of
 * more than WHEEL_SLOTS ticks (the writer stalled for 8 s) means every
 * speculative holder has expired (TTLs are below 128 ticks and were set
 * against the old clock): expire them all, whatever their 8-bit value says.
 */
static void
wheel_advance(struct kvdex_index *ix, uint32_t now)
{
	uint32_t steps = now - ix->wheel_tick;

	if (steps > WHEEL_SLOTS) {
		ix->now = now;
		ix->expire_all_spec = true;
		for (uint32_t i = 0; i < WHEEL_SLOTS; i++) {
			wheel_run_slot(ix, &ix->wheel[i]);
		}
		ix->expire_all_spec = false;
	} else {
		for (uint32_t t = ix->wheel_tick + 1; t != now + 1; t++) {
			ix->now = t;
			wheel_run_slot(ix, &ix->wheel[t % WHEEL_SLOTS]);
		}
	}
	ix->now = now;
	ix->wheel_tick = now;
}

void
kvdex_index_tick(struct kvdex_index *ix, uint32_t now_ticks)
{
	wheel_advance(ix, now_ticks);
	sweep_step(ix, ix->opts.sweep_per_tick);
	maybe_resize(ix);
	ix->rg->hdr.clock_ticks = now_ticks;
	ix->rg->hdr.records = ix->st.records;
	kvdex_region_publish_hdr(ix->rg);
}

uint32_t
kvdex_index_now(const struct kvdex_index *ix)
{
	return ix->now;
}

/* ---- tables and resize ----------------------------------------------------- */

static int
table_alloc(struct kvdex_index *ix, struct ix_table *t, uint32_t log2, uint32_t gen)
{
	uint32_t nhome = 1u << log2;
	uint32_t nov = nhome / 8 > 16 ? nhome / 8 : 16;
	uint32_t bs = ix->rg->hdr.bucket_size;
	uint64_t len = ((uint64_t)nhome + nov) * bs;
	int rc;

	memset(t, 0, sizeof(*t));
	t->ov_free = malloc((size_t)nov * sizeof(*t->ov_free));
	if (t->ov_free == NULL) {
		return -ENOMEM;
	}
	rc = kvdex_region_alloc(ix->rg, len, &t->ext_off);
	if (rc != 0) {
		free(t->ov_free);
		t->ov_free = NULL;
		return rc;
	}
	t->ext_len = len;
	/* Pop order hands out low indices first. */
	for (uint32_t i = 0; i < nov; i++) {
		t->ov_free[i] = nov - 1 - i;
	}
	t->nfree = nov;
	t->g = (struct kvdex_geometry){
		.hash_seed = ix->rg->hdr.hash_seed,
		.table_off = t->ext_off,
		.overflow_off = t->ext_off + (uint64_t)nhome * bs,
		.table_log2 = log2,
		.table_gen = gen,
		.overflow_count = nov,
		.bucket_size = bs,
	};
	return 0;
}

static void
table_publish(struct kvdex_index *ix)
{
	struct kvdex_region_hdr *h = &ix->rg->hdr;
	const struct kvdex_geometry *g = &ix->t.g;

	h->table_off = g->table_off;
	h->overflow_off = g->overflow_off;
	h->table_log2 = g->table_log2;
	h->table_gen = g->table_gen;
	h->overflow_count = g->overflow_count;
	h->records = ix->st.records;
	kvdex_region_publish_hdr(ix->rg);
	ix->st.home_buckets = 1u << g->table_log2;
	ix->st.overflow_buckets = g->overflow_count;
	ix->st.overflow_used = g->overflow_count - ix->t.nfree;
	ix->st.table_bytes = ((uint64_t)ix->st.home_buckets + g->overflow_count) * g->bucket_size;
}

static void
write_empty_home(struct kvdex_index *ix, const struct ix_table *t, uint32_t home)
{
	uint32_t bs = t->g.bucket_size;
	uint8_t *img = ix->bins.img;
	uint64_t off = kvdex_home_offset(&t->g, home);
	struct kvdex_bucket_hdr bh = {
		.table_gen = t->g.table_gen,
		.owner = home,
		.flags = KVDEX_BUCKET_HOME,
	};

	memset(img, 0, bs);
	memcpy(img, &bh, sizeof(bh));
	kvdex_bucket_seal(img, bs, t->g.hash_seed, off);
	memcpy(bucket_at(ix, off), img, bs);
}

/* Partition ch's entries by home index in table nt into split[0] (even) and
 * split[1] (odd). Doubling maps old home i to 2i or 2i + 1. */
static int
resize_split(struct kvdex_index *ix, const struct ix_table *nt, const struct ix_chain *c)
{
	for (int s = 0; s < 2; s++) {
		struct ix_chain *d = &ix->split[s];

		d->home = c->home * 2 + (uint32_t)s;
		d->seq = 0;
		d->nov = 0;
		d->nent = 0;
		d->nh = 0;
	}
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct ix_entry *e = &c->ent[i];
		uint32_t home = kvdex_home_index(&nt->g, e->ns, e->key);
		struct ix_chain *d;
		int ei;

		if (home >> 1 != c->home) {
			KVDEX_DIE(LOG_COMP, "resize: entry of chain %u maps to %u", c->home, home);
		}
		d = &ix->split[home & 1];
		ei = chain_add_entry(d, e->ns, e->key, e->hcount);
		if (ei < 0) {
			return ei;
		}
		d->ent[ei].flags = e->flags;
		d->ent[ei].atime = e->atime;
		d->ent[ei].hits = e->hits;
		d->ent[ei].hcount = e->hcount;
		memcpy(&d->h[d->ent[ei].hstart], &c->h[e->hstart], e->hcount * sizeof(*c->h));
	}
	return 0;
}

struct resize_acc {
	uint32_t *live;
	uint64_t blocks;
	uint64_t records;
	uint64_t holders;
	uint64_t spec_expired;
	uint64_t swept;
};

static int
resize_write_split(struct kvdex_index *ix, struct ix_table *nt, struct resize_acc *acc)
{
	for (int s = 0; s < 2; s++) {
		struct ix_chain *d = &ix->split[s];
		int rc = chain_pack(ix, &nt->g, d);

		if (rc != 0) {
			return rc;
		}
		if (ix->bins.n - 1 > nt->nfree) {
			return -ENOSPC;
		}
		if (GROW(d->ov, d->ovcap, ix->bins.n) != 0) {
			return -ENOMEM;
		}
		chain_write(ix, nt, d);
		acc->records += bins_records(&ix->bins);
		acc->blocks += d->nent;
		for (uint32_t i = 0; i < d->nent; i++) {
			for (uint32_t j = 0; j < d->ent[i].hcount; j++) {
				const struct ix_holder *h = &d->h[d->ent[i].hstart + j];

				acc->live[st_idx(h->slot, h_tier(h))]++;
				acc->holders++;
			}
		}
	}
	return 0;
}

/* Copy every live entry of the current table into nt. */
static int
resize_copy(struct kvdex_index *ix, struct ix_table *nt, struct resize_acc *acc)
{
	uint32_t nhome = 1u << ix->t.g.table_log2;
	int rc = 0;

	for (uint32_t i = 0; rc == 0 && i < nhome; i++) {
		struct ix_chain *c = &ix->ch;

		rc = chain_decode(ix, &ix->t, i, c);
		if (rc != 0) {
			break;
		}
		chain_drop_dead(ix, c);
		acc->spec_expired += c->dropped_spec;
		acc->swept += c->dropped_dead;
		rc = resize_split(ix, nt, c);
		if (rc == 0) {
			rc = resize_write_split(ix, nt, acc);
		}
	}
	return rc;
}

/* Mark every bucket of the old table RETIRED (re-sealed in place). */
static void
resize_retire(struct kvdex_index *ix, const struct ix_table *ot)
{
	uint32_t nhome = 1u << ot->g.table_log2;
	uint32_t bs = ot->g.bucket_size;
	uint8_t *img = ix->bins.img;

	for (uint32_t i = 0; i < nhome; i++) {
		uint64_t off = kvdex_home_offset(&ot->g, i);
		uint32_t guard = 0;

		for (;;) {
			struct kvdex_bucket_hdr bh;

			memcpy(img, bucket_at(ix, off), bs);
			hdr_get(img, &bh);
			bh.flags |= KVDEX_BUCKET_RETIRED;
			memcpy(img, &bh, sizeof(bh));
			kvdex_bucket_seal(img, bs, ot->g.hash_seed, off);
			memcpy(bucket_at(ix, off), img, bs);
			if (bh.next == 0 || bh.next > ot->g.overflow_count ||
			    ++guard > ot->g.overflow_count) {
				break;
			}
			off = kvdex_overflow_offset(&ot->g, bh.next - 1);
		}
	}
}

static void
resize_install(struct kvdex_index *ix, struct ix_table *nt, struct resize_acc *acc)
{
	struct ix_table ot = ix->t;
	size_t nst = (size_t)ix->opts.slots * KVDEX_NR_TIERS;

	ix->t = *nt;
	memcpy(ix->live, acc->live, nst * sizeof(*ix->live));
	ix->st.blocks = acc->blocks;
	ix->st.records = acc->records;
	ix->st.holders = acc->holders;
	ix->st.holders_dead = 0;
	ix->st.spec_expired += acc->spec_expired;
	ix->st.swept_holders += acc->swept;
	ix->st.resizes++;
	/* The copy was a complete pass: no old epoch survives it. */
	memset(ix->pending, 0, nst);
	ix->sweep_active = false;
	ix->sweep_pos = 0;
	/* Flip (readers now compute new addresses), retire the old buckets
	 * (readers with the old geometry go back to the header), and only
	 * then let the old extent be reused. */
	table_publish(ix);
	resize_retire(ix, &ot);
	kvdex_region_free(ix->rg, ot.ext_off, ot.ext_len);
	free(ot.ov_free);
}

int
kvdex_index_resize(struct kvdex_index *ix)
{
	struct resize_acc acc = {0};
	struct ix_table nt;
	int rc;

	if (ix->t.g.table_log2 >= 31) {
		return -ENOSPC;
	}
	rc = table_alloc(ix, &nt, ix->t.g.table_log2 + 1, ix->t.g.table_gen + 1);
	if (rc != 0) {
		goto err_log;
	}
	acc.live = calloc((size_t)ix->opts.slots * KVDEX_NR_TIERS, sizeof(*acc.live));
	if (acc.live == NULL) {
		rc = -ENOMEM;
		goto err_free_table;
	}
	rc = resize_copy(ix, &nt, &acc);
	if (rc != 0) {
		goto err_free_acc;
	}
	resize_install(ix, &nt, &acc);
	free(acc.live);
	KVDEX_LOG_NOTICE(LOG_COMP, "resized: %u home + %u overflow buckets at %llu, gen %u",
			 1u << ix->t.g.table_log2, ix->t.g.overflow_count,
			 (unsigned long long)ix->t.g.table_off, ix->t.g.table_gen);
	return 0;

err_free_acc:
	free(acc.live);
err_free_table:
	/* Nothing of the new table was published: dropping it is invisible. */
	kvdex_region_free(ix->rg, nt.ext_off, nt.ext_len);
	free(nt.ov_free);
err_log:
	if (rc == -ENOSPC) {
		ix->resize_blocked = true;
		KVDEX_LOG_WARN(LOG_COMP,
			       "cannot resize the index (region max %llu bytes reached): new "
			       "blocks will be refused once the overflow area is exhausted",
			       (unsigned long long)ix->rg->max);
	}
	return rc;
}

/* ---- create / destroy / stats ---------------------------------------------- */

static uint32_t
initial_log2(uint64_t capacity_blocks, uint32_t bucket_size)
{
	/* About four 4-holder records (32 B each) per 256 bytes of bucket: half
	 * full on average, so a full bucket stays rare (the Poisson tail) and a
	 * lookup rarely needs a dependent overflow read. */
	uint64_t want = capacity_blocks / ((bucket_size - KVDEX_BUCKET_HDR_SIZE) / 56u);
	uint32_t log2 = 0;

	while ((1ull << log2) < want && log2 < 30) {
		log2++;
	}
	return log2;
}

static int
index_alloc_arrays(struct kvdex_index *ix)
{
	size_t n = (size_t)ix->opts.slots * KVDEX_NR_TIERS;

	ix->epoch = calloc(n, 1);
	ix->pending = calloc(n, 1);
	ix->live = calloc(n, sizeof(*ix->live));
	if (ix->epoch == NULL || ix->pending == NULL || ix->live == NULL) {
		return -ENOMEM;
	}
	return bins_add(&ix->bins, ix->rg->hdr.bucket_size);
}

int
kvdex_index_create(struct kvdex_region *rg, const struct kvdex_index_opts *opts,
		   struct kvdex_index **out)
{
	struct kvdex_index *ix;
	int rc;

	ix = calloc(1, sizeof(*ix));
	if (ix == NULL) {
		return -ENOMEM;
	}
	ix->rg = rg;
	ix->opts = *opts;
	if (ix->opts.spec_ttl_ms == 0) {
		ix->opts.spec_ttl_ms = 2000;
	}
	ix->t.ext_len = 0;
	rc = index_alloc_arrays(ix);
	if (rc != 0) {
		goto err_destroy;
	}
	rc = table_alloc(ix, &ix->t, initial_log2(opts->capacity_blocks, rg->hdr.bucket_size), 1);
	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP,
			      "the initial table (%u home buckets of %u bytes) does not fit in "
			      "the region (max %llu bytes): %s",
			      1u << initial_log2(opts->capacity_blocks, rg->hdr.bucket_size),
			      rg->hdr.bucket_size, (unsigned long long)rg->max, strerror(-rc));
		goto err_destroy;
	}
	for (uint32_t i = 0; i < (1u << ix->t.g.table_log2); i++) {
		write_empty_home(ix, &ix->t, i);
	}
	table_publish(ix);
	*out = ix;
	return 0;

err_destroy:
	kvdex_index_destroy(ix);
	return rc;
}

static void
chain_free(struct ix_chain *c)
{
	free(c->ov);
	free(c->ent);
	free(c->h);
	free(c->rec_ent);
	free(c->old);
}

void
kvdex_index_destroy(struct kvdex_index *ix)
{
	if (ix == NULL) {
		return;
	}
	chain_free(&ix->ch);
	chain_free(&ix->split[0]);
	chain_free(&ix->split[1]);
	for (unsigned i = 0; i < WHEEL_SLOTS; i++) {
		free(ix->wheel[i].v);
	}
	free(ix->bins.img);
	free(ix->bins.used);
	free(ix->bins.nrec);
	free(ix->t.ov_free);
	free(ix->epoch);
	free(ix->pending);
	free(ix->live);
	free(ix);
}

void
kvdex_index_get_stats(const struct kvdex_index *ix, struct kvdex_index_stats *st)
{
	*st = ix->st;
}

uint64_t
kvdex_index_slot_holders(const struct kvdex_index *ix, uint16_t slot)
{
	uint64_t n = 0;

	if (slot >= ix->opts.slots) {
		return 0;
	}
	for (unsigned t = 0; t < KVDEX_NR_TIERS; t++) {
		n += ix->live[st_idx(slot, t)];
	}
	return n;
}

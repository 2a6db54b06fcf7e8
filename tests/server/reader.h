/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reader's view of a region, for server tests: everything here decodes
 * the region only through common/layout.h, the way a client does (header
 * check, home bucket, chain with owner/chain_seq checks, record merge,
 * holder liveness against the worker rows and the header clock). Tests
 * assert on what a client would see, not on the writer's internals.
 */
#ifndef KVDEX_TESTS_SERVER_READER_H
#define KVDEX_TESTS_SERVER_READER_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/layout.h"

#define RV_MAX_HOLDERS 2048
#define RV_MAX_CHAIN 256

struct rv_holder {
	uint16_t slot;
	unsigned tier;
	bool spec;
	uint8_t count;
	bool has_loc;
	uint64_t loc_addr;
	uint32_t loc_len;
};

struct rv_block {
	unsigned nrecords; /* records of this key */
	unsigned nholders; /* live holders (reader's view) */
	unsigned nraw;	   /* holders present, dead or alive */
	uint8_t flags;
	uint16_t atime;
	uint8_t hits;
	struct rv_holder h[RV_MAX_HOLDERS];
};

struct rv_chain {
	unsigned len;
	uint64_t off[RV_MAX_CHAIN];
	uint32_t seq[RV_MAX_CHAIN];
};

static inline int
rv_hdr(const uint8_t *base, struct kvdex_region_hdr *hdr, struct kvdex_geometry *g)
{
	memcpy(hdr, base, sizeof(*hdr));
	if (kvdex_hdr_check(hdr) != 0) {
		return -EPROTO;
	}
	kvdex_geometry_from_hdr(hdr, g);
	return 0;
}

/* Walk the chain of `home`: every image must check OK, carry the home's
 * owner and chain_seq. Fills ch. */
static inline int
rv_chain(const uint8_t *base, const struct kvdex_geometry *g, uint32_t home, struct rv_chain *ch)
{
	uint64_t off = kvdex_home_offset(g, home);
	struct kvdex_bucket_hdr bh;
	uint32_t seq = 0;

	ch->len = 0;
	for (;;) {
		const uint8_t *img = base + off;

		if (kvdex_bucket_check(img, g, off) != KVDEX_BUCKET_OK || ch->len >= RV_MAX_CHAIN) {
			return -EPROTO;
		}
		memcpy(&bh, img, sizeof(bh));
		if (ch->len == 0) {
			seq = bh.chain_seq;
			if (!(bh.flags & KVDEX_BUCKET_HOME)) {
				return -EPROTO;
			}
		} else if (bh.chain_seq != seq || !(bh.flags & KVDEX_BUCKET_OVERFLOW)) {
			return -EPROTO;
		}
		if (bh.owner != home) {
			return -EPROTO;
		}
		ch->off[ch->len] = off;
		ch->seq[ch->len] = bh.chain_seq;
		ch->len++;
		if (bh.next == 0) {
			return 0;
		}
		off = kvdex_overflow_offset(g, bh.next - 1);
	}
}

static inline bool
rv_slot_epoch(const uint8_t *base, const struct kvdex_region_hdr *hdr, uint16_t slot, unsigned tier,
	      uint8_t *epoch)
{
	struct kvdex_worker_row row;
	uint64_t off = kvdex_row_offset(hdr, slot);

	if (slot >= hdr->workers_hwm) {
		return false;
	}
	memcpy(&row, base + off, sizeof(row));
	if (kvdex_row_check(&row, hdr->hash_seed, off) != 0 || row.state != KVDEX_ROW_LIVE) {
		return false;
	}
	*epoch = row.epoch[tier];
	return true;
}

static inline void
rv_add_record(const uint8_t *base, const struct kvdex_region_hdr *hdr,
	      const struct kvdex_record_view *rv, struct rv_block *out)
{
	out->nrecords++;
	out->flags = rv->hdr.flags;
	out->atime = rv->hdr.atime;
	out->hits = rv->hdr.hits;
	for (unsigned i = 0; i < rv->hdr.nholders; i++) {
		struct kvdex_holder h;
		struct rv_holder *o;
		uint8_t epoch;

		memcpy(&h, &rv->holders[i], sizeof(h));
		out->nraw++;
		if (!rv_slot_epoch(base, hdr, h.slot, kvdex_holder_tier(&h), &epoch) ||
		    !kvdex_holder_live(&h, epoch, hdr->clock_ticks) ||
		    out->nholders >= RV_MAX_HOLDERS) {
			continue;
		}
		o = &out->h[out->nholders++];
		memset(o, 0, sizeof(*o));
		o->slot = h.slot;
		o->tier = kvdex_holder_tier(&h);
		o->spec = (h.bits & KVDEX_H_SPEC) != 0;
		o->count = h.count;
		for (unsigned l = 0; l < rv->hdr.nlocs; l++) {
			struct kvdex_loc loc;

			memcpy(&loc, &rv->locs[l], sizeof(loc));
			if (loc.holder == i) {
				o->has_loc = true;
				o->loc_addr = loc.addr;
				o->loc_len = loc.len;
			}
		}
	}
}

/*
 * Look (ns, key) up as a client would.
 * @return 0 when at least one record exists (out->nholders may be 0 if all
 *         are dead), -ENOENT when none, -EPROTO if anything fails validation.
 */
static inline int
rv_lookup(const uint8_t *base, uint16_t ns, uint64_t key, struct rv_block *out,
	  struct rv_chain *ch_out)
{
	struct kvdex_region_hdr hdr;
	struct kvdex_geometry g;
	struct rv_chain ch;

	memset(out, 0, sizeof(*out));
	if (rv_hdr(base, &hdr, &g) != 0 ||
	    rv_chain(base, &g, kvdex_home_index(&g, ns, key), &ch) != 0) {
		return -EPROTO;
	}
	for (unsigned b = 0; b < ch.len; b++) {
		struct kvdex_record_view rv;
		size_t pos = 0;
		int rc;

		while ((rc = kvdex_record_next(base + ch.off[b], g.bucket_size, &pos, &rv)) == 1) {
			if (rv.hdr.key == key && rv.hdr.ns == ns) {
				rv_add_record(base, &hdr, &rv, out);
			}
		}
		if (rc < 0) {
			return -EPROTO;
		}
	}
	if (ch_out != NULL) {
		*ch_out = ch;
	}
	return out->nrecords > 0 ? 0 : -ENOENT;
}

/* The live holder (slot, tier) of a looked-up block, or NULL. */
static inline const struct rv_holder *
rv_find(const struct rv_block *b, uint16_t slot, unsigned tier)
{
	for (unsigned i = 0; i < b->nholders; i++) {
		if (b->h[i].slot == slot && b->h[i].tier == tier) {
			return &b->h[i];
		}
	}
	return NULL;
}

struct rv_totals {
	uint64_t records;
	uint64_t raw_holders;
	uint64_t chains_multi; /* chains longer than one bucket */
};

/*
 * The packing contract readers rely on to stop early: per key, every record
 * but the last in chain order carries KVDEX_REC_MORE and the last does not;
 * a key with a record outside the home bucket has its bit in the home
 * bucket's ovf_filter.
 */
static inline int
rv_check_packing(const uint8_t *base, const struct kvdex_geometry *g, const struct rv_chain *ch)
{
	struct {
		uint64_t key;
		uint16_t ns;
		uint8_t flags;
		unsigned bucket;
	} recs[1024];
	struct kvdex_bucket_hdr home;
	unsigned n = 0;

	memcpy(&home, base + ch->off[0], sizeof(home));
	for (unsigned b = 0; b < ch->len; b++) {
		struct kvdex_record_view rv;
		size_t pos = 0;

		while (kvdex_record_next(base + ch->off[b], g->bucket_size, &pos, &rv) == 1) {
			if (n == sizeof(recs) / sizeof(recs[0])) {
				return -E2BIG;
			}
			recs[n].key = rv.hdr.key;
			recs[n].ns = rv.hdr.ns;
			recs[n].flags = rv.hdr.flags;
			recs[n].bucket = b;
			n++;
		}
	}
	for (unsigned i = 0; i < n; i++) {
		bool later = false;

		for (unsigned j = i + 1; j < n; j++) {
			later |= recs[j].key == recs[i].key && recs[j].ns == recs[i].ns;
		}
		if (later != ((recs[i].flags & KVDEX_REC_MORE) != 0)) {
			return -EPROTO;
		}
		if (recs[i].bucket > 0 &&
		    !(home.ovf_filter & kvdex_ovf_bit(g, recs[i].ns, recs[i].key))) {
			return -EPROTO;
		}
	}
	return 0;
}

/* Validate every chain of the live table and count what it holds. */
static inline int
rv_scan(const uint8_t *base, struct rv_totals *t)
{
	struct kvdex_region_hdr hdr;
	struct kvdex_geometry g;

	memset(t, 0, sizeof(*t));
	if (rv_hdr(base, &hdr, &g) != 0) {
		return -EPROTO;
	}
	for (uint32_t home = 0; home < (1u << g.table_log2); home++) {
		struct rv_chain ch;

		if (rv_chain(base, &g, home, &ch) != 0) {
			return -EPROTO;
		}
		if (rv_check_packing(base, &g, &ch) != 0) {
			return -EPROTO;
		}
		t->chains_multi += ch.len > 1;
		for (unsigned b = 0; b < ch.len; b++) {
			struct kvdex_record_view rv;
			size_t pos = 0;
			int rc;

			while ((rc = kvdex_record_next(base + ch.off[b], g.bucket_size, &pos,
						       &rv)) == 1) {
				if (kvdex_home_index(&g, rv.hdr.ns, rv.hdr.key) != home) {
					return -EPROTO;
				}
				t->records++;
				t->raw_holders += rv.hdr.nholders;
			}
			if (rc < 0) {
				return -EPROTO;
			}
		}
	}
	return 0;
}

#endif /* KVDEX_TESTS_SERVER_READER_H */

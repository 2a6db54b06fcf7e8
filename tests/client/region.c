/* SPDX-License-Identifier: Apache-2.0 */
/* Synthetic regions and the fake transport: see region.h. */
#include "tests/client/region.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TR_SEED 0x5eed5eed12345678ull
#define TR_INCARNATION 42u

struct kvdex_holder
tr_holder(uint16_t slot, unsigned tier, unsigned epoch, unsigned count)
{
	struct kvdex_holder h = {
		.slot = slot,
		.bits = (uint8_t)(tier | (epoch << KVDEX_H_EPOCH_SHIFT)),
		.count = (uint8_t)count,
	};

	return h;
}

struct kvdex_holder
tr_spec_holder(uint16_t slot, unsigned tier, unsigned epoch, uint8_t expiry)
{
	struct kvdex_holder h = tr_holder(slot, tier, epoch, expiry);

	h.bits |= KVDEX_H_SPEC;
	return h;
}

void
tr_seal_hdr(struct tr_region *r)
{
	kvdex_block_seal(r->hdr, KVDEX_HDR_SIZE, 0, 0);
	kvdex_geometry_from_hdr(r->hdr, &r->geo);
}

void
tr_build_bucket(void *img, uint32_t bucket_size, uint32_t table_gen, uint32_t owner,
		uint32_t chain_seq, uint32_t next, uint8_t flags, const struct tr_rec *recs,
		unsigned n)
{
	struct kvdex_bucket_hdr bh = {0};
	uint8_t *area = (uint8_t *)img + KVDEX_BUCKET_HDR_SIZE;
	size_t pos = 0;

	memset(img, 0, bucket_size);
	for (unsigned i = 0; i < n; i++) {
		struct kvdex_record_hdr rh = {
			.key = recs[i].key,
			.ns = recs[i].ns,
			.nholders = (uint8_t)recs[i].nh,
			.flags = recs[i].flags,
		};

		memcpy(area + pos, &rh, sizeof(rh));
		memcpy(area + pos + sizeof(rh), recs[i].h, recs[i].nh * sizeof(recs[i].h[0]));
		pos += kvdex_record_size(recs[i].nh, 0);
	}
	bh.table_gen = table_gen;
	bh.chain_seq = chain_seq;
	bh.owner = owner;
	bh.next = next;
	bh.used = (uint16_t)pos;
	bh.flags = flags;
	bh.nrecords = (uint8_t)n;
	memcpy(img, &bh, sizeof(bh));
}

void
tr_put_bucket(struct tr_region *r, uint64_t off, uint32_t owner, uint32_t chain_seq, uint32_t next,
	      uint8_t flags, const struct tr_rec *recs, unsigned n)
{
	tr_build_bucket(r->mem + off, r->geo.bucket_size, r->geo.table_gen, owner, chain_seq, next,
			flags, recs, n);
	kvdex_bucket_seal(r->mem + off, r->geo.bucket_size, r->geo.hash_seed, off);
}

void
tr_put_home(struct tr_region *r, uint32_t home, const struct tr_rec *recs, unsigned n)
{
	tr_put_bucket(r, kvdex_home_offset(&r->geo, home), home, 1, 0, KVDEX_BUCKET_HOME, recs, n);
}

uint32_t
tr_home(const struct tr_region *r, uint16_t ns, uint64_t key)
{
	return kvdex_home_index(&r->geo, ns, key);
}

void
tr_init(struct tr_region *r, uint32_t log2, uint32_t ov, uint32_t bucket_size, uint32_t workers_cap)
{
	struct kvdex_region_hdr *h;
	uint64_t table_off = 4096 + (((uint64_t)workers_cap * KVDEX_ROW_SIZE + 4095) & ~4095ull);
	uint64_t ov_off = table_off + ((uint64_t)1 << log2) * bucket_size;
	uint64_t size = ov_off + (uint64_t)ov * bucket_size;

	/* Room to build a second table (resize tests). */
	r->size = size * 4;
	r->mem = kvdex_aligned_alloc(r->size);
	memset(r->mem, 0, r->size);
	h = (struct kvdex_region_hdr *)r->mem;
	r->hdr = h;
	h->magic = KVDEX_REGION_MAGIC;
	h->layout_version = KVDEX_LAYOUT_VERSION;
	h->hdr_size = KVDEX_HDR_SIZE;
	h->server_incarnation = TR_INCARNATION;
	h->region_size = size;
	h->hash_seed = TR_SEED;
	h->table_off = table_off;
	h->overflow_off = ov_off;
	h->table_log2 = log2;
	h->table_gen = 1;
	h->overflow_count = ov;
	h->bucket_size = bucket_size;
	h->workers_off = 4096;
	h->workers_cap = workers_cap;
	h->workers_version = 1;
	h->clock_ticks = 100;
	tr_seal_hdr(r);
	for (uint32_t i = 0; i < (1u << log2); i++) {
		tr_put_home(r, i, NULL, 0);
	}
	for (uint32_t i = 0; i < ov; i++) {
		tr_put_bucket(r, kvdex_overflow_offset(&r->geo, i), UINT32_MAX, 0, 0,
			      KVDEX_BUCKET_OVERFLOW, NULL, 0);
	}
}

void
tr_fini(struct tr_region *r)
{
	free(r->mem);
	memset(r, 0, sizeof(*r));
}

void
tr_set_row(struct tr_region *r, uint32_t slot, uint32_t worker_id, uint16_t dp_rank,
	   const uint8_t epoch[4])
{
	uint64_t off = kvdex_row_offset(r->hdr, slot);
	struct kvdex_worker_row row = {0};

	row.worker_id = worker_id;
	row.state = KVDEX_ROW_LIVE;
	row.dp_rank = dp_rank;
	row.dp_size = 1;
	if (epoch != NULL) {
		memcpy(row.epoch, epoch, 4);
	}
	snprintf(row.addr, sizeof(row.addr), "10.0.0.%u:8000", worker_id);
	kvdex_block_seal(&row, sizeof(row), r->hdr->hash_seed, off);
	memcpy(r->mem + off, &row, sizeof(row));
	if (slot + 1 > r->hdr->workers_hwm) {
		r->hdr->workers_hwm = slot + 1;
	}
	tr_seal_hdr(r);
}

/* ---- fake transport ---- */

static int
fake_connect(const struct kvdex_endpoint *ep, int timeout_ms, struct kvdex_conn **out)
{
	return -ENOTSUP;
}

static int
fake_attach(struct kvdex_conn *conn, int fd, uint64_t max)
{
	return 0;
}

static int
fake_post(struct kvdex_conn *conn, struct kvdex_read_op *ops, unsigned n)
{
	struct fake_conn *fc = (struct fake_conn *)conn;

	for (unsigned i = 0; i < n; i++) {
		fc->ops_total++;
		if (ops[i].off + ops[i].len > fc->r->hdr->region_size) {
			ops[i].status = -ERANGE;
			continue;
		}
		memcpy(ops[i].buf, fc->r->mem + ops[i].off, ops[i].len);
		ops[i].status = 0;
		if (fc->torn_left > 0 && ops[i].off == fc->torn_off) {
			/* A read that overlapped a write: one byte of another image,
			 * in the part every block seals (a bucket seals only its
			 * header and used records). */
			((uint8_t *)ops[i].buf)[KVDEX_BUCKET_HDR_SIZE / 2] ^= 0x5a;
			fc->torn_left--;
		}
	}
	return 0;
}

static int
fake_poll(struct kvdex_conn *conn, int timeout_ms)
{
	struct fake_conn *fc = (struct fake_conn *)conn;

	fc->rounds++;
	if (fc->hook != NULL) {
		fc->hook(fc, fc->rounds);
	}
	return 0;
}

static int
fake_send(struct kvdex_conn *conn, uint16_t type, uint32_t id, const void *p, size_t len)
{
	return -ECONNRESET;
}

static int
fake_recv(struct kvdex_conn *conn, struct kvdex_msg *m, int timeout_ms)
{
	return -ECONNRESET;
}

static void
fake_close(struct kvdex_conn *conn)
{
	free(conn);
}

const struct kvdex_transport_ops fake_transport_ops = {
	.name = "fake",
	.connect = fake_connect,
	.attach_region = fake_attach,
	.post_reads = fake_post,
	.poll_reads = fake_poll,
	.send_msg = fake_send,
	.recv_msg = fake_recv,
	.close = fake_close,
};

struct fake_conn *
fake_conn_new(struct tr_region *r)
{
	struct fake_conn *fc = calloc(1, sizeof(*fc));

	fc->base.ops = &fake_transport_ops;
	fc->base.max_msg = 1u << 20;
	fc->r = r;
	fc->torn_off = UINT64_MAX;
	return fc;
}

struct kvdex_client *
tc_client(struct fake_conn **fcs, unsigned n, const uint32_t *ns_ids)
{
	struct kvdex_endpoint eps[8];
	struct kvdex_client *c = NULL;
	struct kvdex_client_ns *ns;

	memset(eps, 0, sizeof(eps));
	for (unsigned i = 0; i < n; i++) {
		eps[i].kind = KVDEX_TRANSPORT_SHM;
		snprintf(eps[i].name, sizeof(eps[i].name), "s%u", i);
		snprintf(eps[i].path, sizeof(eps[i].path), "/nonexistent/s%u", i);
	}
	if (kvdex_client_alloc(eps, n, &c) < 0) {
		return NULL;
	}
	c->no_reconnect = true;
	for (unsigned i = 0; i < n; i++) {
		c->srv[i].conn = &fcs[i]->base;
		c->srv[i].transport_name = "fake";
		if (kvdex_lookup_refresh_server(c, i, NULL, NULL) < 0) {
			kvdex_client_destroy(c);
			return NULL;
		}
	}
	c->ns = calloc(1, sizeof(*c->ns));
	c->ns_cap = 1;
	c->nns = 1;
	ns = &c->ns[0];
	ns->model = strdup("m");
	ns->adapter = strdup("");
	ns->tenant = strdup("");
	ns->hash_scheme = strdup("opaque");
	ns->block_size = 16;
	ns->ns_hash = kvdex_ns_hash("m", "", "", 16, "opaque");
	ns->created = true;
	ns->ids = malloc(n * sizeof(*ns->ids));
	memcpy(ns->ids, ns_ids, n * sizeof(*ns_ids));
	return c;
}

void
tr_add_home_rec(struct tr_region *r, const struct tr_rec *rec)
{
	uint32_t home = tr_home(r, rec->ns, rec->key);
	const uint8_t *img = r->mem + kvdex_home_offset(&r->geo, home);
	struct tr_rec recs[16];
	struct kvdex_record_view v;
	unsigned n = 0;
	size_t pos = 0;

	while (n < 15 && kvdex_record_next(img, r->geo.bucket_size, &pos, &v) == 1) {
		recs[n].key = v.hdr.key;
		recs[n].ns = v.hdr.ns;
		recs[n].flags = v.hdr.flags;
		recs[n].nh = v.hdr.nholders;
		memcpy(recs[n].h, v.holders, v.hdr.nholders * sizeof(recs[n].h[0]));
		n++;
	}
	recs[n++] = *rec;
	tr_put_home(r, home, recs, n);
}

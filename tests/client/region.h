/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers: build synthetic index regions and bucket images with
 * common/layout.h exactly as the server lays them out, and a fake transport
 * (transport.h) that serves reads from such a region in memory, optionally
 * tearing chosen images a number of times.
 */
#ifndef KVDEX_TESTS_CLIENT_REGION_H
#define KVDEX_TESTS_CLIENT_REGION_H

#include <stdbool.h>
#include <stdint.h>

#include "client/src/internal.h"
#include "common/layout.h"

struct tr_region {
	uint8_t *mem;
	uint64_t size;
	struct kvdex_region_hdr *hdr;
	struct kvdex_geometry geo;
};

struct tr_rec {
	uint64_t key;
	uint16_t ns;
	uint8_t flags;
	unsigned nh;
	struct kvdex_holder h[16];
};

/* A holder: slot, tier, epoch; spec = expiry tick when speculative. */
struct kvdex_holder tr_holder(uint16_t slot, unsigned tier, unsigned epoch, unsigned count);
struct kvdex_holder tr_spec_holder(uint16_t slot, unsigned tier, unsigned epoch, uint8_t expiry);

/* New region: 2^log2 home buckets, ov overflow buckets, sealed empty. */
void tr_init(struct tr_region *r, uint32_t log2, uint32_t ov, uint32_t bucket_size,
	     uint32_t workers_cap);
void tr_fini(struct tr_region *r);
void tr_seal_hdr(struct tr_region *r);

/* Write and seal a worker row (bumps hwm, not workers_version). */
void tr_set_row(struct tr_region *r, uint32_t slot, uint32_t worker_id, uint16_t dp_rank,
		const uint8_t epoch[4]);

/* Build a bucket image (not sealed) into img of geo.bucket_size bytes. */
void tr_build_bucket(void *img, uint32_t bucket_size, uint32_t table_gen, uint32_t owner,
		     uint32_t chain_seq, uint32_t next, uint8_t flags, const struct tr_rec *recs,
		     unsigned n);

/* Build, seal and store a bucket at region offset off. */
void tr_put_bucket(struct tr_region *r, uint64_t off, uint32_t owner, uint32_t chain_seq,
		   uint32_t next, uint8_t flags, const struct tr_rec *recs, unsigned n);

/* Put recs (all of one home bucket) into home bucket `home`. */
void tr_put_home(struct tr_region *r, uint32_t home, const struct tr_rec *recs, unsigned n);

/* Append rec to the records of its home bucket. */
void tr_add_home_rec(struct tr_region *r, const struct tr_rec *rec);

uint32_t tr_home(const struct tr_region *r, uint16_t ns, uint64_t key);

/* ---- fake transport ---- */

struct fake_conn;
typedef void (*fake_hook_fn)(struct fake_conn *fc, unsigned round);

struct fake_conn {
	struct kvdex_conn base;
	struct tr_region *r;
	uint64_t torn_off; /* UINT64_MAX: none */
	unsigned torn_left;
	unsigned rounds;
	unsigned ops_total;
	fake_hook_fn hook;
	void *arg;
};

extern const struct kvdex_transport_ops fake_transport_ops;
struct fake_conn *fake_conn_new(struct tr_region *r);

/* A client over fake connections (one per region), with one namespace
 * (handle 0) whose id is ns_ids[i] on server i. Servers are named s0, s1... */
struct kvdex_client *tc_client(struct fake_conn **fcs, unsigned n, const uint32_t *ns_ids);

#endif

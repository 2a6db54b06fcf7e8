/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-ingest --bench N: throughput of the ingest path.
 *
 * Payloads are built with msgpack-c's packer in vLLM's current array-like encoding:
 * batches of `events` BlockStored events of `blocks` hashes each (uint64 >= 2^63, 16
 * token ids per block, extra_keys, group_idx, spec kind), and matching BlockRemoved
 * batches, so a long run keeps the index bounded.
 *
 *   decode      kvdex_ingest_decode() over the payloads until N block events are decoded
 *   end-to-end  (with --servers) decode + expand + kvdex_publish through an engine, as the
 *               daemon does, alternating store and remove batches over 64 key sets
 *
 * Figures are block events per second on one thread (the process is single-threaded).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/ingest/ingest.h"
#include "common/log.h"

#define NSETS 64

int kvdex_ingest_bench(int argc, char **argv);

static void
pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

/* One batch: `events` events of `blocks` blocks; keys from `base`. */
static void
pack_batch(msgpack_sbuffer *sb, bool removed, uint64_t base, unsigned events, unsigned blocks)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_double(&pk, 1700000000.5);
	msgpack_pack_array(&pk, removed ? events * blocks : events);
	for (unsigned e = 0; e < events; e++) {
		uint64_t k0 = base + (uint64_t)e * blocks;

		if (removed) {
			for (unsigned b = 0; b < blocks; b++) {
				msgpack_pack_array(&pk, 4);
				pack_str(&pk, "BlockRemoved");
				msgpack_pack_array(&pk, 1);
				msgpack_pack_uint64(&pk, k0 + b);
				pack_str(&pk, "GPU");
				msgpack_pack_uint64(&pk, 0);
			}
			continue;
		}
		msgpack_pack_array(&pk, 12);
		pack_str(&pk, "BlockStored");
		msgpack_pack_array(&pk, blocks);
		for (unsigned b = 0; b < blocks; b++) {
			msgpack_pack_uint64(&pk, k0 + b);
		}
		msgpack_pack_uint64(&pk, k0 - 1);
		msgpack_pack_array(&pk, blocks * 16);
		for (unsigned t = 0; t < blocks * 16; t++) {
			msgpack_pack_uint32(&pk, 1000 + t * 37);
		}
		msgpack_pack_uint64(&pk, 16);
		msgpack_pack_nil(&pk);
		pack_str(&pk, "GPU");
		msgpack_pack_nil(&pk);
		msgpack_pack_array(&pk, blocks);
		for (unsigned b = 0; b < blocks; b++) {
			msgpack_pack_nil(&pk);
		}
		msgpack_pack_uint64(&pk, 0);
		pack_str(&pk, "full_attention");
		msgpack_pack_nil(&pk);
	}
	msgpack_pack_uint64(&pk, 0);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
bench_decode(msgpack_sbuffer *st, uint64_t n, unsigned per_batch)
{
	struct kvdex_ingest_batch b = {0};
	uint64_t done = 0, iters = 0;
	double t0 = now_s(), dt;

	while (done < n) {
		if (kvdex_ingest_decode(&b, (const uint8_t *)st[iters % NSETS].data,
					st[iters % NSETS].size, NULL) != 0) {
			fprintf(stderr, "decode failed: %s\n", b.why);
			return 1;
		}
		done += b.nkeys;
		iters++;
	}
	dt = now_s() - t0;
	printf("decode: %" PRIu64 " block events in %.3f s = %.2f M block events/s "
	       "(%u blocks/batch, %zu bytes/batch, %.0f MB/s)\n",
	       done, dt, (double)done / dt / 1e6, per_batch, st[0].size,
	       (double)st[0].size * (double)iters / dt / 1e6);
	kvdex_ingest_batch_fini(&b);
	return 0;
}

static int
bench_e2e(const char *servers, msgpack_sbuffer *st, msgpack_sbuffer *rm, uint64_t n)
{
	static struct kvdex_ingest ing;
	struct kvdex_ingest_engine_cfg c = {0};
	struct kvdex_ingest_engine *e;
	struct kvdex_client_opts o;
	uint64_t seq = 0, done;
	double t0, dt;
	int rc;

	kvdex_ingest_cfg_defaults(&ing.cfg);
	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = servers;
	o.client_name = "kvdex-ingest-bench";
	rc = kvdex_client_create(&o, &ing.client);
	if (rc != 0) {
		fprintf(stderr, "kvdex_client_create(%s): %s\n", servers, strerror(-rc));
		return 1;
	}
	snprintf(c.name, sizeof(c.name), "bench");
	snprintf(c.model, sizeof(c.model), "bench-model");
	snprintf(c.hash_scheme, sizeof(c.hash_scheme), "vllm:sha256_cbor:64");
	c.block_size = 16;
	c.worker = 4242;
	c.dp_rank = 0;
	c.dp_size = 1;
	c.groups = ~0ull;
	c.unknown_tier = KVDEX_REMOTE;
	c.ntiers = 1;
	snprintf(c.tiers[0].medium, sizeof(c.tiers[0].medium), "GPU");
	rc = kvdex_ingest_engine_create(&ing, &c, &e);
	if (rc != 0) {
		fprintf(stderr, "engine: %s\n", strerror(-rc));
		return 1;
	}
	t0 = now_s();
	for (uint64_t i = 0; ing.ctr.blocks_stored + ing.ctr.blocks_removed < n; i++) {
		msgpack_sbuffer *sb = (i & 1) ? &rm[(i / 2) % NSETS] : &st[(i / 2) % NSETS];

		kvdex_ingest_engine_feed(e, seq++, (const uint8_t *)sb->data, sb->size);
	}
	dt = now_s() - t0;
	done = ing.ctr.blocks_stored + ing.ctr.blocks_removed;
	printf("end-to-end (decode + publish to %s): %" PRIu64 " block events in %.3f s = "
	       "%.3f M block events/s, %" PRIu64 " publishes, %" PRIu64 " errors, "
	       "%" PRIu64 " decode errors\n",
	       servers, done, dt, (double)done / dt / 1e6, ing.ctr.publish_batches,
	       ing.ctr.publish_errors, ing.ctr.decode_errors);
	rc = ing.ctr.publish_errors || ing.ctr.decode_errors ? 1 : 0;
	kvdex_ingest_engine_destroy(e);
	kvdex_client_destroy(ing.client);
	free(ing.ev);
	kvdex_ingest_batch_fini(&ing.batch);
	return rc;
}

int
kvdex_ingest_bench(int argc, char **argv)
{
	static const struct option lo[] = {
		{"bench", required_argument, NULL, 'n'},
		{"servers", required_argument, NULL, 's'},
		{"bench-events", required_argument, NULL, 'e'},
		{"bench-blocks", required_argument, NULL, 'b'},
		{NULL, 0, NULL, 0},
	};
	msgpack_sbuffer st[NSETS], rm[NSETS];
	const char *servers = NULL;
	unsigned events = 16, blocks = 16;
	uint64_t n = 0;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'n':
			n = strtoull(optarg, NULL, 0);
			break;
		case 's':
			servers = optarg;
			break;
		case 'e':
			events = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 'b':
			blocks = (unsigned)strtoul(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: kvdex-ingest --bench N [--servers S] "
					"[--bench-events E] [--bench-blocks B]\n");
			return 2;
		}
	}
	if (n == 0 || events == 0 || blocks == 0) {
		fprintf(stderr, "kvdex-ingest: --bench needs N > 0\n");
		return 2;
	}
	for (unsigned i = 0; i < NSETS; i++) {
		uint64_t base = 0x8000000000000000ull + (uint64_t)i * events * blocks + 1;

		msgpack_sbuffer_init(&st[i]);
		msgpack_sbuffer_init(&rm[i]);
		pack_batch(&st[i], false, base, events, blocks);
		pack_batch(&rm[i], true, base, events, blocks);
	}
	rc = bench_decode(st, n, events * blocks);
	if (rc == 0 && servers != NULL) {
		rc = bench_e2e(servers, st, rm, n);
	}
	for (unsigned i = 0; i < NSETS; i++) {
		msgpack_sbuffer_destroy(&st[i]);
		msgpack_sbuffer_destroy(&rm[i]);
	}
	return rc;
}

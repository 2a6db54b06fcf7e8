/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ingest-lookup: print who holds each key, for the end-to-end ingest tests.
 *
 *   ingest-lookup --servers S < queries
 *
 * Query lines:
 *   ns MODEL ADAPTER TENANT BLOCK_SIZE HASH_SCHEME   select a namespace ("-" = empty)
 *   KEY                                              a decimal u64 block key
 * Output, one line per KEY: "KEY W:DP:TIER ..." sorted, where TIER is the fastest tier in
 * which (worker W, dp rank DP) holds the key; no holders (or an unknown namespace) prints
 * the key alone. Each key is looked up as a chain of one, so a holding row means exactly
 * "this publisher holds this key". Exit 0, or 1 on an error (message on stderr).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvdex/kvdex.h"

struct row {
	uint32_t worker;
	uint16_t dp;
	unsigned tier;
};

static int
row_cmp(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->worker != y->worker) {
		return x->worker < y->worker ? -1 : 1;
	}
	return (int)x->dp - (int)y->dp;
}

static const char *
dash(const char *s)
{
	return strcmp(s, "-") == 0 ? "" : s;
}

static int
select_ns(struct kvdex_client *c, char *line, uint32_t *ns, bool *have)
{
	char model[256], adapter[256], tenant[256], scheme[256];
	unsigned bs;
	struct kvdex_ns_desc d;
	int rc;

	if (sscanf(line, "ns %255s %255s %255s %u %255s", model, adapter, tenant, &bs, scheme) !=
	    5) {
		fprintf(stderr, "ingest-lookup: bad ns line: %s", line);
		return -EINVAL;
	}
	d = (struct kvdex_ns_desc){
		.model = dash(model),
		.adapter = dash(adapter),
		.tenant = dash(tenant),
		.block_size = bs,
		.hash_scheme = dash(scheme),
	};
	rc = kvdex_ns_resolve(c, &d, ns);
	*have = rc == 0;
	return rc == -ENOENT ? 0 : rc;
}

static int
lookup_key(struct kvdex_client *c, uint32_t ns, bool have, uint64_t key)
{
	struct kvdex_holding h[256];
	struct kvdex_lookup_result r = {.holdings = h, .cap = 256};
	struct row rows[256];
	unsigned n = 0;
	int rc;

	printf("%" PRIu64, key);
	if (have) {
		rc = kvdex_lookup(c, ns, &key, 1, 0, &r);
		if (rc != 0) {
			fprintf(stderr, "ingest-lookup: lookup %" PRIu64 ": %s\n", key,
				strerror(-rc));
			return rc;
		}
		for (uint32_t i = 0; i < r.nholdings; i++) {
			if (h[i].matched == 0) {
				continue;
			}
			rows[n] = (struct row){.worker = h[i].worker_id, .dp = h[i].dp_rank};
			for (unsigned t = 0; t < KVDEX_NTIERS; t++) {
				if (h[i].tier_blocks[t] > 0) {
					rows[n].tier = t;
					break;
				}
			}
			n++;
		}
	}
	qsort(rows, n, sizeof(rows[0]), row_cmp);
	for (unsigned i = 0; i < n; i++) {
		printf(" %u:%u:%u", rows[i].worker, rows[i].dp, rows[i].tier);
	}
	printf("\n");
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"servers", required_argument, NULL, 's'},
		{NULL, 0, NULL, 0},
	};
	struct kvdex_client_opts o;
	struct kvdex_client *c;
	const char *servers = NULL;
	char line[2048];
	uint32_t ns = 0;
	bool have = false;
	int ch, rc = 0;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch != 's') {
			return 2;
		}
		servers = optarg;
	}
	if (servers == NULL) {
		fprintf(stderr, "usage: ingest-lookup --servers S < queries\n");
		return 2;
	}
	kvdex_client_opts_init(&o, sizeof(o));
	o.servers = servers;
	rc = kvdex_client_create(&o, &c);
	if (rc != 0) {
		fprintf(stderr, "ingest-lookup: %s: %s\n", servers, strerror(-rc));
		return 1;
	}
	while (rc == 0 && fgets(line, sizeof(line), stdin) != NULL) {
		if (strncmp(line, "ns ", 3) == 0) {
			rc = select_ns(c, line, &ns, &have);
		} else if (line[0] >= '0' && line[0] <= '9') {
			rc = lookup_key(c, ns, have, strtoull(line, NULL, 10));
		}
	}
	kvdex_client_destroy(c);
	return rc == 0 ? 0 : 1;
}

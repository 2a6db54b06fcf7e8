/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placement of blocks across memory servers (DESIGN §6): rendezvous hashing.
 * Block (ns, key) belongs to the server with the highest
 * XXH3_64(ns_hash ‖ key, seed = XXH3_64(server name)), both integers in
 * little-endian. Removing a server moves only the keys it owned; adding one
 * moves only the keys it now wins. The names, not the addresses, place keys,
 * so every client of a cluster must use the same names.
 *
 * ns_hash identifies the namespace tuple globally (per-server ns ids differ):
 * XXH3_64 (seed 0) of model \0 adapter \0 tenant \0 block_size in decimal \0
 * hash_scheme, with NULL strings as "" (hash_scheme "opaque").
 */
#include "client/src/internal.h"

#include <stdio.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

static void
hash_str(XXH3_state_t *st, const char *s, bool sep)
{
	XXH3_64bits_update(st, s, strlen(s));
	if (sep) {
		XXH3_64bits_update(st, "", 1);
	}
}

uint64_t
kvdex_ns_hash(const char *model, const char *adapter, const char *tenant, uint32_t block_size,
	      const char *hash_scheme)
{
	XXH3_state_t st;
	char bs[16];

	snprintf(bs, sizeof(bs), "%u", block_size);
	XXH3_64bits_reset(&st);
	hash_str(&st, model != NULL ? model : "", true);
	hash_str(&st, adapter != NULL ? adapter : "", true);
	hash_str(&st, tenant != NULL ? tenant : "", true);
	hash_str(&st, bs, true);
	hash_str(&st, hash_scheme != NULL ? hash_scheme : "opaque", false);
	return XXH3_64bits_digest(&st);
}

uint64_t
kvdex_server_seed(const char *name)
{
	return XXH3_64bits(name, strlen(name));
}

uint64_t
kvdex_place_weight(uint64_t ns_hash, uint64_t key, uint64_t seed)
{
	uint8_t buf[16];

	for (int i = 0; i < 8; i++) {
		buf[i] = (uint8_t)(ns_hash >> (8 * i));
		buf[8 + i] = (uint8_t)(key >> (8 * i));
	}
	return XXH3_64bits_withSeed(buf, sizeof(buf), seed);
}

unsigned
kvdex_place(const uint64_t *seeds, unsigned n, uint64_t ns_hash, uint64_t key)
{
	unsigned best = 0;
	uint64_t best_w = 0;

	if (n == 1) {
		return 0;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t w = kvdex_place_weight(ns_hash, key, seeds[i]);

		if (i == 0 || w > best_w) {
			best = i;
			best_w = w;
		}
	}
	return best;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Rendezvous placement and namespace hashes (client/src/placement.c). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "client/src/internal.h"

TestSuite(placement, .timeout = 5);

/* 1: the weight is XXH3_64 over (ns_hash LE, key LE) seeded with XXH3(name). */
Test(placement, weight_formula)
{
	uint64_t nsh = 0x0102030405060708ull, key = 0x1112131415161718ull;
	uint8_t buf[16];

	for (int i = 0; i < 8; i++) {
		buf[i] = (uint8_t)(nsh >> (8 * i));
		buf[8 + i] = (uint8_t)(key >> (8 * i));
	}
	cr_assert(eq(u64, kvdex_server_seed("srv-a"), XXH3_64bits("srv-a", 5)));
	cr_assert(eq(u64, kvdex_place_weight(nsh, key, 99), XXH3_64bits_withSeed(buf, 16, 99)));
}

/* 2: ns_hash covers every field, with NUL separators (no ambiguity). */
Test(placement, ns_hash_fields)
{
	const char raw[] = "m\0a\0t\0"
			   "16\0opaque";
	uint64_t base = kvdex_ns_hash("m", "a", "t", 16, "opaque");

	cr_assert(eq(u64, base, XXH3_64bits(raw, sizeof(raw) - 1)));
	cr_assert(eq(u64, kvdex_ns_hash("m", "a", "t", 16, NULL), base));
	cr_assert(not(eq(u64, kvdex_ns_hash("m", "t", "a", 16, "opaque"), base)));
	cr_assert(not(eq(u64, kvdex_ns_hash("m", "a", "t", 32, "opaque"), base)));
	cr_assert(not(eq(u64, kvdex_ns_hash("ma", "", "t", 16, "opaque"), base)));
	cr_assert(eq(u64, kvdex_ns_hash("m", NULL, NULL, 16, NULL),
		     kvdex_ns_hash("m", "", "", 16, "opaque")));
}

/* 3: deterministic and roughly even over three servers. */
Test(placement, deterministic_and_spread)
{
	uint64_t seeds[3] = {kvdex_server_seed("a"), kvdex_server_seed("b"),
			     kvdex_server_seed("c")};
	uint64_t nsh = kvdex_ns_hash("llama", "", "", 16, "opaque");
	unsigned cnt[3] = {0};

	for (uint64_t k = 0; k < 30000; k++) {
		unsigned s = kvdex_place(seeds, 3, nsh, k * 0x9e3779b97f4a7c15ull);

		cr_assert(eq(u32, s, kvdex_place(seeds, 3, nsh, k * 0x9e3779b97f4a7c15ull)));
		cnt[s]++;
	}
	for (int i = 0; i < 3; i++) {
		cr_assert(gt(u32, cnt[i], 9000));
		cr_assert(lt(u32, cnt[i], 11000));
	}
}

/* 4: removing a server moves only its keys; the others keep their owner. */
Test(placement, removal_moves_only_its_keys)
{
	uint64_t all[4] = {kvdex_server_seed("a"), kvdex_server_seed("b"), kvdex_server_seed("c"),
			   kvdex_server_seed("d")};
	uint64_t less[3] = {all[0], all[2], all[3]}; /* b removed */
	unsigned map_less[4] = {0, 99, 1, 2};
	uint64_t nsh = kvdex_ns_hash("m", "", "", 16, "opaque");
	unsigned moved = 0;

	for (uint64_t k = 0; k < 20000; k++) {
		unsigned before = kvdex_place(all, 4, nsh, k);
		unsigned after = kvdex_place(less, 3, nsh, k);

		if (before == 1) {
			moved++;
			continue;
		}
		cr_assert(eq(u32, after, map_less[before]));
	}
	cr_assert(gt(u32, moved, 4000));
}

/* 5: the order of the server list does not matter, only the names. */
Test(placement, list_order_irrelevant)
{
	uint64_t ab[2] = {kvdex_server_seed("a"), kvdex_server_seed("b")};
	uint64_t ba[2] = {ab[1], ab[0]};

	for (uint64_t k = 0; k < 1000; k++) {
		cr_assert(eq(u32, kvdex_place(ab, 2, 7, k), 1 - kvdex_place(ba, 2, 7, k)));
	}
}

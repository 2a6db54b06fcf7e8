/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layout: the byte offsets of every struct clients read one-sidedly (they are
 * a wire format: any change must bump KVDEX_LAYOUT_VERSION), the geometry a
 * client derives from the header, and the key-to-bucket mapping (range,
 * determinism, dependence on namespace and seed, distribution).
 *
 * The distribution check uses fixed inputs, so its result is deterministic:
 * it cannot flake, it can only break if the mapping changes.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <xxhash.h>

#include "common/layout.h"
#include "image.h"

TestSuite(layout, .timeout = 10);

#define OFF(type, field, want) cr_assert(eq(sz, offsetof(type, field), (size_t)(want)), #field)

/* 1. Struct sizes match the constants the wire format is built on. */
Test(layout, struct_sizes)
{
	cr_assert(eq(sz, sizeof(struct kvdex_region_hdr), 128));
	cr_assert(eq(sz, sizeof(struct kvdex_worker_row), 128));
	cr_assert(eq(sz, sizeof(struct kvdex_bucket_hdr), 32));
	cr_assert(eq(sz, sizeof(struct kvdex_record_hdr), 16));
	cr_assert(eq(sz, sizeof(struct kvdex_holder), 4));
	cr_assert(eq(sz, sizeof(struct kvdex_loc), 16));
	cr_assert(eq(u32, KVDEX_HDR_SIZE, 128));
	cr_assert(eq(u32, KVDEX_ROW_SIZE, 128));
	cr_assert(eq(u32, KVDEX_BUCKET_HDR_SIZE, 32));
	cr_assert(eq(u32, KVDEX_RECORD_HDR_SIZE, 16));
	cr_assert(eq(u32, KVDEX_HOLDER_SIZE, 4));
	cr_assert(eq(u32, KVDEX_LOC_SIZE, 16));
}

/* 2. Region header offsets. */
Test(layout, region_hdr_offsets)
{
	OFF(struct kvdex_region_hdr, checksum, 0);
	OFF(struct kvdex_region_hdr, magic, 8);
	OFF(struct kvdex_region_hdr, layout_version, 12);
	OFF(struct kvdex_region_hdr, hdr_size, 14);
	OFF(struct kvdex_region_hdr, server_incarnation, 16);
	OFF(struct kvdex_region_hdr, region_size, 24);
	OFF(struct kvdex_region_hdr, hash_seed, 32);
	OFF(struct kvdex_region_hdr, table_off, 40);
	OFF(struct kvdex_region_hdr, overflow_off, 48);
	OFF(struct kvdex_region_hdr, table_log2, 56);
	OFF(struct kvdex_region_hdr, table_gen, 60);
	OFF(struct kvdex_region_hdr, overflow_count, 64);
	OFF(struct kvdex_region_hdr, bucket_size, 68);
	OFF(struct kvdex_region_hdr, workers_off, 72);
	OFF(struct kvdex_region_hdr, workers_cap, 80);
	OFF(struct kvdex_region_hdr, workers_hwm, 84);
	OFF(struct kvdex_region_hdr, workers_version, 88);
	OFF(struct kvdex_region_hdr, clock_ticks, 92);
	OFF(struct kvdex_region_hdr, clock_base_ms, 96);
	OFF(struct kvdex_region_hdr, records, 104);
	OFF(struct kvdex_region_hdr, mr_addr, 112);
	OFF(struct kvdex_region_hdr, mr_rkey, 120);
	OFF(struct kvdex_region_hdr, mr_gen, 124);
}

/* 3. Worker row offsets. */
Test(layout, worker_row_offsets)
{
	OFF(struct kvdex_worker_row, checksum, 0);
	OFF(struct kvdex_worker_row, worker_id, 8);
	OFF(struct kvdex_worker_row, state, 12);
	OFF(struct kvdex_worker_row, dp_rank, 14);
	OFF(struct kvdex_worker_row, dp_size, 16);
	OFF(struct kvdex_worker_row, epoch, 18);
	OFF(struct kvdex_worker_row, reserved0, 22);
	OFF(struct kvdex_worker_row, version, 24);
	OFF(struct kvdex_worker_row, load_ticks, 28);
	OFF(struct kvdex_worker_row, queued, 32);
	OFF(struct kvdex_worker_row, running, 36);
	OFF(struct kvdex_worker_row, prefill_tokens, 40);
	OFF(struct kvdex_worker_row, kv_util_permille, 48);
	OFF(struct kvdex_worker_row, reserved1, 50);
	OFF(struct kvdex_worker_row, reserved2, 56);
	OFF(struct kvdex_worker_row, addr, 64);
	cr_assert(eq(sz, sizeof(((struct kvdex_worker_row *)0)->addr), KVDEX_ADDR_MAX));
}

/* 4. Bucket header, record, holder and location offsets. */
Test(layout, bucket_and_record_offsets)
{
	OFF(struct kvdex_bucket_hdr, checksum, 0);
	OFF(struct kvdex_bucket_hdr, table_gen, 8);
	OFF(struct kvdex_bucket_hdr, chain_seq, 12);
	OFF(struct kvdex_bucket_hdr, owner, 16);
	OFF(struct kvdex_bucket_hdr, next, 20);
	OFF(struct kvdex_bucket_hdr, used, 24);
	OFF(struct kvdex_bucket_hdr, flags, 26);
	OFF(struct kvdex_bucket_hdr, nrecords, 27);
	OFF(struct kvdex_bucket_hdr, ovf_filter, 28);

	OFF(struct kvdex_record_hdr, key, 0);
	OFF(struct kvdex_record_hdr, ns, 8);
	OFF(struct kvdex_record_hdr, nholders, 10);
	OFF(struct kvdex_record_hdr, flags, 11);
	OFF(struct kvdex_record_hdr, atime, 12);
	OFF(struct kvdex_record_hdr, hits, 14);
	OFF(struct kvdex_record_hdr, nlocs, 15);

	OFF(struct kvdex_holder, slot, 0);
	OFF(struct kvdex_holder, bits, 2);
	OFF(struct kvdex_holder, count, 3);

	OFF(struct kvdex_loc, addr, 0);
	OFF(struct kvdex_loc, len, 8);
	OFF(struct kvdex_loc, holder, 12);
	OFF(struct kvdex_loc, reserved, 14);
}

/* 5. Constants the design fixes. */
Test(layout, constants)
{
	cr_assert(eq(u32, KVDEX_REGION_MAGIC, 0x5844564bu));
	/* "KVDX" in memory order on a little-endian host. */
	cr_assert(eq(i32, memcmp(&(uint32_t){KVDEX_REGION_MAGIC}, "KVDX", 4), 0));
	cr_assert(eq(u32, KVDEX_BUCKET_SIZE_MIN, 128));
	cr_assert(eq(u32, KVDEX_BUCKET_SIZE_MAX, 4096));
	cr_assert(eq(u32, KVDEX_BUCKET_SIZE_DEFAULT, 512));
	cr_assert(eq(u32, KVDEX_NR_TIERS, 4));
	cr_assert(eq(u32, KVDEX_TICKS_PER_SEC, 16));
	/* TTL in ticks must stay below 128 for the 8-bit wrap compare. */
	cr_assert(lt(u32, KVDEX_SPEC_TTL_MAX_MS * KVDEX_TICKS_PER_SEC / 1000, 128));
}

/* 6. Geometry copies every field the client needs from the header. */
Test(layout, geometry_from_hdr)
{
	struct kvdex_region_hdr hdr;
	struct kvdex_geometry g;

	th_init(&hdr, 12, 512);
	memset(&g, 0xa5, sizeof(g));
	kvdex_geometry_from_hdr(&hdr, &g);
	cr_assert(eq(u64, g.hash_seed, hdr.hash_seed));
	cr_assert(eq(u64, g.table_off, hdr.table_off));
	cr_assert(eq(u64, g.overflow_off, hdr.overflow_off));
	cr_assert(eq(u32, g.table_log2, 12));
	cr_assert(eq(u32, g.table_gen, hdr.table_gen));
	cr_assert(eq(u32, g.overflow_count, hdr.overflow_count));
	cr_assert(eq(u32, g.bucket_size, 512));
}

/* 7. The key hash is XXH3-64 of key (LE u64) ‖ ns (LE u16) with the seed. */
Test(layout, key_hash_definition)
{
	static const uint64_t seeds[] = {0, 1, 0xfeedfacecafebeefull};
	static const uint64_t keys[] = {0, 1, 0x0102030405060708ull, UINT64_MAX};
	static const uint16_t nss[] = {0, 1, 0x1234, UINT16_MAX};

	for (size_t s = 0; s < 3; s++) {
		for (size_t k = 0; k < 4; k++) {
			for (size_t n = 0; n < 4; n++) {
				uint8_t buf[10];

				for (int i = 0; i < 8; i++) {
					buf[i] = (uint8_t)(keys[k] >> (8 * i));
				}
				buf[8] = (uint8_t)nss[n];
				buf[9] = (uint8_t)(nss[n] >> 8);
				cr_assert(eq(u64, kvdex_key_hash(nss[n], keys[k], seeds[s]),
					     XXH3_64bits_withSeed(buf, sizeof(buf), seeds[s])));
			}
		}
	}
}

/* 8. The home index is in range, is the top bits of the hash, and is a pure
 * function of (seed, log2, ns, key). */
Test(layout, home_index_range_and_determinism)
{
	struct kvdex_geometry g = {.hash_seed = 42, .bucket_size = 256};

	for (uint32_t log2 = 0; log2 <= 31; log2++) {
		g.table_log2 = log2;
		for (uint64_t key = 0; key < 2000; key++) {
			uint64_t k = key * 0x9e3779b97f4a7c15ull;
			uint32_t idx = kvdex_home_index(&g, 7, k);
			uint64_t want = log2 == 0 ? 0 : kvdex_key_hash(7, k, 42) >> (64 - log2);

			cr_assert(lt(u64, (uint64_t)idx, 1ull << log2), "log2 %u key %llu", log2,
				  (unsigned long long)k);
			cr_assert(eq(u64, (uint64_t)idx, want));
			cr_assert(eq(u32, kvdex_home_index(&g, 7, k), idx));
		}
	}
}

/* 9. The same key in two namespaces lands in different buckets (in general):
 * at 2^16 buckets, a few coincidences out of 4096 keys are expected (~0.06),
 * not dozens. */
Test(layout, namespace_changes_bucket)
{
	struct kvdex_geometry g = {.hash_seed = 0xabcdef, .table_log2 = 16, .bucket_size = 256};
	unsigned same = 0;

	for (uint64_t key = 1; key <= 4096; key++) {
		if (kvdex_home_index(&g, 1, key) == kvdex_home_index(&g, 2, key)) {
			same++;
		}
	}
	cr_assert(le(u32, same, 8), "%u of 4096 keys share a bucket across namespaces", same);
	cr_assert(ne(u64, kvdex_key_hash(1, 99, 5), kvdex_key_hash(2, 99, 5)));
}

/* 10. The seed changes the mapping (a restarted server reshuffles). */
Test(layout, seed_changes_bucket)
{
	struct kvdex_geometry a = {.hash_seed = 1, .table_log2 = 16, .bucket_size = 256};
	struct kvdex_geometry b = a;
	unsigned same = 0;

	b.hash_seed = 2;
	for (uint64_t key = 1; key <= 4096; key++) {
		same += kvdex_home_index(&a, 3, key) == kvdex_home_index(&b, 3, key);
	}
	cr_assert(le(u32, same, 8), "%u of 4096 keys keep their bucket across seeds", same);
}

/*
 * Chi-square statistic of `nkeys` keys over 2^log2 buckets. Keys are
 * generated by `gen` from an index, so the input (and the result) is fixed.
 */
static double
chi_square(const struct kvdex_geometry *g, uint16_t ns, uint32_t nkeys, uint64_t (*gen)(uint32_t),
	   uint32_t *max_load)
{
	uint32_t nb = 1u << g->table_log2;
	uint32_t *cnt = calloc(nb, sizeof(*cnt));
	double expect = (double)nkeys / nb;
	double chi = 0;

	cr_assert_not_null(cnt);
	for (uint32_t i = 0; i < nkeys; i++) {
		cnt[kvdex_home_index(g, ns, gen(i))]++;
	}
	*max_load = 0;
	for (uint32_t b = 0; b < nb; b++) {
		double d = cnt[b] - expect;

		chi += d * d / expect;
		if (cnt[b] > *max_load) {
			*max_load = cnt[b];
		}
	}
	free(cnt);
	return chi;
}

static uint64_t
gen_sequential(uint32_t i)
{
	return i;
}

static uint64_t
gen_strided(uint32_t i)
{
	/* Keys that differ only in high bits: a weak hash would collapse them. */
	return (uint64_t)i << 40;
}

static uint64_t
gen_splitmix(uint32_t i)
{
	uint64_t z = (uint64_t)i * 0x9e3779b97f4a7c15ull + 0x12345;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * 11. Distribution: 2^16 keys over 2^10 buckets (64 per bucket expected).
 * With 1023 degrees of freedom the statistic has mean 1023 and sd ~45; the
 * bound 1023 + 10 sd only trips on a genuinely skewed mapping. Max load is
 * bounded loosely too (Poisson(64) tail at 1024 buckets stays well under 120).
 */
Test(layout, distribution_chi_square)
{
	uint64_t (*gens[])(uint32_t) = {gen_sequential, gen_strided, gen_splitmix};
	static const uint64_t seeds[] = {0, 0xfeedfacecafebeefull, 12345};
	const double bound = 1023.0 + 10 * 45.2;

	for (size_t s = 0; s < 3; s++) {
		for (size_t k = 0; k < 3; k++) {
			struct kvdex_geometry g = {
				.hash_seed = seeds[s], .table_log2 = 10, .bucket_size = 256};
			uint32_t max_load;
			double chi =
				chi_square(&g, (uint16_t)(s + k), 1u << 16, gens[k], &max_load);

			cr_log_info("seed %zu gen %zu: chi2 %.1f max load %u", s, k, chi, max_load);
			cr_assert(lt(dbl, chi, bound), "seed %zu gen %zu chi2 %.1f", s, k, chi);
			cr_assert(lt(u32, max_load, 120));
		}
	}
}

/* 12. Bucket offsets: home buckets from table_off, overflow from overflow_off. */
Test(layout, bucket_offsets)
{
	struct kvdex_region_hdr hdr;
	struct kvdex_geometry g;

	th_init(&hdr, 8, 256);
	kvdex_geometry_from_hdr(&hdr, &g);
	cr_assert(eq(u64, kvdex_home_offset(&g, 0), hdr.table_off));
	cr_assert(eq(u64, kvdex_home_offset(&g, 1), hdr.table_off + 256));
	cr_assert(eq(u64, kvdex_home_offset(&g, 255), hdr.table_off + 255 * 256));
	cr_assert(eq(u64, kvdex_home_offset(&g, 255) + 256, hdr.overflow_off));
	cr_assert(eq(u64, kvdex_overflow_offset(&g, 0), hdr.overflow_off));
	cr_assert(eq(u64, kvdex_overflow_offset(&g, 15), hdr.overflow_off + 15 * 256));

	/* 64-bit arithmetic: a large table does not wrap at 4 GiB. */
	g.table_off = 1ull << 33;
	g.bucket_size = 4096;
	cr_assert(eq(u64, kvdex_home_offset(&g, 0x80000000u), (1ull << 33) + (1ull << 43)));
	g.overflow_off = 1ull << 40;
	cr_assert(eq(u64, kvdex_overflow_offset(&g, 0x100000u), (1ull << 40) + (1ull << 32)));
}

/* 13. Row offsets follow workers_off. */
Test(layout, row_offsets)
{
	struct kvdex_region_hdr hdr;

	th_init(&hdr, 8, 256);
	cr_assert(eq(u64, kvdex_row_offset(&hdr, 0), 4096));
	cr_assert(eq(u64, kvdex_row_offset(&hdr, 3), 4096 + 3 * 128));
	cr_assert(eq(u64, kvdex_row_offset(&hdr, 65535), 4096 + 65535ull * 128));
}

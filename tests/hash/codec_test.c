/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The serializers of common/vllm_hash.c on hand-worked bytes (opcodes from
 * Lib/pickletools.py, heads from RFC 8949), the two-pass streaming path, the 64-bit
 * projection and the API's argument checks. Python-generated vectors are in
 * vectors_test.c.
 */
#include "common/vllm_hash.c"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>
#include <stdlib.h>

#include "hex.h"

TestSuite(hash_codec, .timeout = 10);

#define HEXBUF 512

/* Serialize with @fn into a fresh unframed sink and return the hex. */
static char *
enc_hex(void (*fn)(struct vh_sink *, int64_t), int64_t v, char *out)
{
	uint8_t buf[64];
	struct vh_sink s;

	sink_init(&s, buf, sizeof(buf));
	fn(&s, v);
	return hex_encode(buf, s.len, out);
}

struct int_case {
	int64_t v;
	char hex[24];
};

/* 1. Pickle ints: BININT1, BININT2, BININT (signed), LONG1 (minimal two's complement). */
ParameterizedTestParameters(hash_codec, pickle_int)
{
	static struct int_case cases[] = {
		{0, "4b00"},
		{255, "4bff"},
		{256, "4d0001"},
		{65535, "4dffff"},
		{65536, "4a00000100"},
		{-1, "4affffffff"},
		{INT32_MAX, "4affffff7f"},
		{INT32_MIN, "4a00000080"},
		{(int64_t)1 << 31, "8a050000008000"},
		{UINT32_MAX, "8a05ffffffff00"},
		{(int64_t)INT32_MIN - 1, "8a05ffffff7fff"},
		{(int64_t)1 << 39, "8a06000000008000"},
		{-((int64_t)1 << 40), "8a060000000000ff"},
		{INT64_MAX, "8a08ffffffffffffff7f"},
		{INT64_MIN, "8a080000000000000080"},
	};

	return cr_make_param_array(struct int_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct int_case *c, hash_codec, pickle_int)
{
	char hex[HEXBUF];

	cr_assert(eq(str, enc_hex(pk_int, c->v, hex), (char *)c->hex), "%lld", (long long)c->v);
}

/* 2. CBOR ints: shortest head, major type 0 or 1 (-1 - v). */
ParameterizedTestParameters(hash_codec, cbor_int)
{
	static struct int_case cases[] = {
		{0, "00"},
		{23, "17"},
		{24, "1818"},
		{255, "18ff"},
		{256, "190100"},
		{65535, "19ffff"},
		{65536, "1a00010000"},
		{UINT32_MAX, "1affffffff"},
		{(int64_t)1 << 32, "1b0000000100000000"},
		{-1, "20"},
		{-24, "37"},
		{-25, "3818"},
		{-256, "38ff"},
		{-257, "390100"},
		{INT64_MIN, "3b7fffffffffffffff"},
	};

	return cr_make_param_array(struct int_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct int_case *c, hash_codec, cbor_int)
{
	char hex[HEXBUF];

	cr_assert(eq(str, enc_hex(cb_int, c->v, hex), (char *)c->hex), "%lld", (long long)c->v);
}

static char *
value_hex(enum kvdex_vllm_hash_algo algo, const struct vh_value *v, char *out)
{
	uint8_t buf[HEXBUF / 2];
	struct vh_sink s;

	sink_init(&s, buf, sizeof(buf));
	value_encode(&s, algo, v);
	cr_assert(not(s.overflow));
	return hex_encode(buf, s.len, out);
}

static struct vh_value
seed_value(const char *seed)
{
	struct vh_value v = {.seed = (const uint8_t *)seed, .seed_len = strlen(seed)};

	return v;
}

/* 3. Roots: the seed as a str (notes A3; Mooncake's seed fixtures). */
Test(hash_codec, root_encoding)
{
	struct vh_value v = seed_value("0");
	char hex[HEXBUF];

	cr_assert(eq(str, value_hex(KVDEX_VLLM_SHA256_CBOR, &v, hex), "6130"));
	cr_assert(
		eq(str, value_hex(KVDEX_VLLM_SHA256, &v, hex), "80059505000000000000008c0130942e"));
	v = seed_value("random");
	cr_assert(eq(str, value_hex(KVDEX_VLLM_XXHASH, &v, hex),
		     "8005950a000000000000008c0672616e646f6d942e"));
	v = seed_value("");
	cr_assert(eq(str, value_hex(KVDEX_VLLM_SHA256, &v, hex), "80059504000000000000008c00942e"));
	cr_assert(eq(str, value_hex(KVDEX_VLLM_XXHASH_CBOR, &v, hex), "60"));
}

/* 4. Root digests: sha256_cbor("0") from the notes, sha256("0") from Mooncake. */
Test(hash_codec, root_digest)
{
	struct kvdex_vllm_hasher h;
	char hex[2 * KVDEX_VLLM_ROOT_MAX + 1];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256_CBOR, "0", 1), 0));
	cr_assert(eq(str, hex_encode(h.root, h.root_len, hex),
		     "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e"));
	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256, "0", 1), 0));
	cr_assert(eq(str, hex_encode(h.root, h.root_len, hex),
		     "1973e23848344dc43a988a9b478663803cfffe1243480253f9a3cf004b14aa7c"));
	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_XXHASH_CBOR, "0", 1), 0));
	cr_assert(eq(u32, h.root_len, 16));
	cr_assert(eq(u32, h.digest_len, 16));
}

static const uint32_t toks1234[] = {1, 2, 3, 4};

/* 5. A block in pickle: Mooncake's spec_unsalted and lora_then_salt pickle_hex. */
Test(hash_codec, pickle_block)
{
	struct kvdex_vllm_block_keys k = {
		.lora_name = "adapter-A",
		.lora_name_len = 9,
		.cache_salt = "tenant-salt",
		.cache_salt_len = 11,
	};
	struct kvdex_vllm_hasher h;
	struct vh_value v;
	char hex[HEXBUF];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256, "0", 1), 0));
	cr_assert(eq(int, block_value(&v, &h, NULL, 0, toks1234, 4, NULL), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "800595320000000000000043201973e23848344dc43a988a9b478663803cfffe1243480253"
		     "f9a3cf004b14aa7c94284b014b024b034b0474944e87942e"));
	cr_assert(eq(int, block_value(&v, &h, NULL, 0, toks1234, 4, &k), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "8005954d0000000000000043201973e23848344dc43a988a9b478663803cfffe1243480253"
		     "f9a3cf004b14aa7c94284b014b024b034b0474948c09616461707465722d41948c0b74656e"
		     "616e742d73616c7494869487942e"));
}

/* 6. A block in CBOR: array(3) of bytes, array of uints, null or array of keys. */
Test(hash_codec, cbor_block)
{
	static const uint8_t parent[16] = {[0] = 0xab, [15] = 0xcd};
	struct kvdex_vllm_mm_key mm = {.identifier = "x", .identifier_len = 1, .offset = -1};
	struct kvdex_vllm_block_keys k = {
		.lora_name = "ab", .lora_name_len = 2, .mm = &mm, .n_mm = 1};
	struct kvdex_vllm_hasher h;
	struct vh_value v;
	char hex[HEXBUF];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_XXHASH_CBOR, "0", 1), 0));
	cr_assert(eq(int, block_value(&v, &h, parent, 16, toks1234, 4, NULL), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "8350ab0000000000000000000000000000cd8401020304f6"));
	cr_assert(eq(int, block_value(&v, &h, parent, 16, toks1234, 4, &k), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "8350ab0000000000000000000000000000cd8401020304"
		     "8262616282617820"));
}

/* 7. Pickle tuples: EMPTY_TUPLE (no memo), TUPLE1..3, MARK..TUPLE; None extras. */
Test(hash_codec, pickle_tuples)
{
	static const uint8_t parent[1] = {0x00};
	static const uint32_t t[5] = {1, 2, 3, 4, 5};
	struct kvdex_vllm_hasher h;
	struct vh_value v;
	char hex[HEXBUF];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256, "0", 1), 0));
	cr_assert(eq(int, block_value(&v, &h, parent, 1, t, 0, NULL), 0));
	/* C 01 00 94 | ) | N | TUPLE3 94 | . */
	cr_assert(eq(str, value_hex(h.algo, &v, hex), "800595090000000000000043010094294e87942e"));
	cr_assert(eq(int, block_value(&v, &h, parent, 1, t, 1, NULL), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "8005950c00000000000000430100944b0185944e87942e"));
	cr_assert(eq(int, block_value(&v, &h, parent, 1, t, 3, NULL), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "800595100000000000000043010094"
		     "4b014b024b0387944e87942e"));
	cr_assert(eq(int, block_value(&v, &h, parent, 1, t, 5, NULL), 0));
	cr_assert(eq(str, value_hex(h.algo, &v, hex),
		     "800595150000000000000043010094"
		     "284b014b024b034b044b0574944e87942e"));
}

/* 8. A str of >= 64 KiB is written outside any frame; a tail of < 4 bytes loses its header. */
Test(hash_codec, pickle_big_str_unframed)
{
	size_t n = 65536, cap = n + 64;
	uint8_t *buf = malloc(cap);
	char *seed = malloc(n);
	struct vh_value v;
	struct vh_sink s;

	cr_assert(buf && seed);
	memset(seed, 'a', n);
	v = (struct vh_value){.seed = (uint8_t *)seed, .seed_len = n};
	sink_init(&s, buf, cap);
	value_encode(&s, KVDEX_VLLM_SHA256, &v);
	/* 80 05 | X 00 00 01 00 <65536 a> | 94 2e (no FRAME: 2 bytes) */
	cr_assert(eq(sz, s.len, 2 + 5 + n + 2));
	cr_assert(eq(int, memcmp(buf, "\x80\x05\x58\x00\x00\x01\x00", 7), 0));
	cr_assert(eq(int, memcmp(buf + 7 + n, "\x94\x2e", 2), 0));
	cr_assert(eq(u32, s.n_frames, 1));
	free(seed);
	free(buf);
}

/* 9. Values larger than the stage buffer take the two-pass streaming path, same digest. */
Test(hash_codec, streaming_matches_oneshot)
{
	static uint32_t tokens[30000];
	size_t cap = 8 * 30000 + 256;
	uint8_t *buf = malloc(cap), want[32], got[32];
	struct kvdex_vllm_hasher h;
	struct vh_value v;
	struct vh_sink s;

	cr_assert(not(eq(ptr, buf, NULL)));
	for (size_t i = 0; i < 30000; i++) {
		tokens[i] = (uint32_t)(i * 2654435761u);
	}
	for (int algo = 0; algo < 4; algo++) {
		cr_assert(eq(int, kvdex_vllm_hasher_init(&h, algo, "7", 1), 0));
		for (size_t n = 500; n <= 30000; n += 9833) {
			cr_assert(eq(int, block_value(&v, &h, NULL, 0, tokens, n, NULL), 0));
			sink_init(&s, buf, cap);
			value_encode(&s, h.algo, &v);
			cr_assert(not(s.overflow));
			digest_oneshot(h.algo, buf, s.len, want);
			cr_assert(eq(int, kvdex_vllm_hash_block(&h, NULL, 0, tokens, n, NULL, got),
				     0));
			cr_assert(eq(int, memcmp(got, want, h.digest_len), 0), "algo %d n %zu",
				  algo, n);
		}
	}
	free(buf);
}

/* 10. The event value: last 8 bytes, big-endian. */
Test(hash_codec, u64_projection)
{
	uint8_t d[32];

	for (int i = 0; i < 32; i++) {
		d[i] = (uint8_t)i;
	}
	cr_assert(eq(u64, kvdex_vllm_hash_u64(d, 32), 0x18191a1b1c1d1e1full));
	cr_assert(eq(u64, kvdex_vllm_hash_u64(d, 16), 0x08090a0b0c0d0e0full));
	cr_assert(eq(u64, kvdex_vllm_hash_u64(d + 1, 3), 0x010203ull));
	cr_assert(eq(u64, kvdex_vllm_hash_u64(d, 0), 0));
}

/* 11. The parent: NULL or empty means the root; out may alias the parent. */
Test(hash_codec, parent_root_and_alias)
{
	struct kvdex_vllm_hasher h;
	uint8_t a[32], b[32], c[32];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256_CBOR, "0", 1), 0));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, NULL, 0, toks1234, 4, NULL, a), 0));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, h.root, h.root_len, toks1234, 4, NULL, b), 0));
	cr_assert(eq(int, memcmp(a, b, 32), 0));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, a, 32, toks1234, 4, NULL, c), 0));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, a, 32, toks1234, 4, NULL, a), 0));
	cr_assert(eq(int, memcmp(a, c, 32), 0));
	/* Mooncake spec_unsalted, block 0 */
	cr_assert(eq(u64, kvdex_vllm_hash_u64(b, 32), 2164874634404590027ull));
}

/* 12. Mooncake's spec_unsalted chain: seed "0", sha256_cbor, block size 4, tokens 1..8. */
Test(hash_codec, spec_unsalted_chain)
{
	static const uint32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	struct kvdex_vllm_request req = {.tokens = t, .n_tokens = 8};
	struct kvdex_vllm_hasher h;
	uint64_t u64[2];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256_CBOR, "0", 1), 0));
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 4, 4, NULL, u64, 8), 2));
	cr_assert(eq(u64, u64[0], 2164874634404590027ull));
	cr_assert(eq(u64, u64[1], 17270480062156288726ull));
	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256, "0", 1), 0));
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 4, 4, NULL, u64, 8), 2));
	cr_assert(eq(u64, u64[0], 10362225831949560093ull));
	cr_assert(eq(u64, u64[1], 12472515041799373675ull));
}

/* 13. Names and sizes of the algorithms. */
Test(hash_codec, algo_names)
{
	static const char *const names[] = {"sha256", "sha256_cbor", "xxhash", "xxhash_cbor"};
	enum kvdex_vllm_hash_algo a;

	for (int i = 0; i < 4; i++) {
		cr_assert(eq(int, kvdex_vllm_hash_algo_parse(names[i], &a), 0));
		cr_assert(eq(int, a, i));
		cr_assert(eq(str, (char *)kvdex_vllm_hash_algo_name(a), (char *)names[i]));
		cr_assert(eq(sz, kvdex_vllm_hash_digest_len(a), i < 2 ? 32 : 16));
	}
	cr_assert(eq(int, kvdex_vllm_hash_algo_parse("sha256_cbor_64bit", &a), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hash_algo_parse(NULL, &a), -EINVAL));
	cr_assert(eq(ptr, (void *)kvdex_vllm_hash_algo_name(4), NULL));
	cr_assert(eq(sz, kvdex_vllm_hash_digest_len(4), 0));
}

/* 14. Argument errors. */
Test(hash_codec, einval)
{
	struct kvdex_vllm_mm_key bad_mm = {.identifier = NULL, .identifier_len = 3};
	struct kvdex_vllm_block_keys k = {.mm = &bad_mm, .n_mm = 1};
	struct kvdex_vllm_request req = {.tokens = toks1234, .n_tokens = 4};
	struct kvdex_vllm_hasher h;
	uint8_t root[65] = {0}, out[32];

	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, 4, "0", 1), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256, NULL, 1), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hasher_init(&h, KVDEX_VLLM_SHA256, NULL, 0), 0));
	cr_assert(eq(int, kvdex_vllm_hasher_init_root(&h, KVDEX_VLLM_XXHASH, root, 0), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hasher_init_root(&h, KVDEX_VLLM_XXHASH, root, 65), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hasher_init_root(&h, KVDEX_VLLM_XXHASH, NULL, 32), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hasher_init_root(&h, KVDEX_VLLM_XXHASH, root, 32), 0));
	cr_assert(eq(u32, h.root_len, 32));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, NULL, 5, toks1234, 4, NULL, out), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, NULL, 0, NULL, 4, NULL, out), -EINVAL));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, NULL, 0, toks1234, 4, &k, out), -EINVAL));
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 0, 4, NULL, NULL, 1), -EINVAL));
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 4, 6, NULL, NULL, 1), -EINVAL));
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 4, 0, NULL, NULL, 1), -EINVAL));
	req.cache_salt_len = 2;
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 4, 4, NULL, NULL, 1), -EINVAL));
}

/* 15. A random (32-byte) root with a 16-byte algorithm: first parent is 32 bytes. */
Test(hash_codec, random_root_xxhash)
{
	uint8_t root[32], d0[16], d1[16];
	struct kvdex_vllm_request req = {.tokens = toks1234, .n_tokens = 4};
	struct kvdex_vllm_hasher h;
	struct vh_value v;
	uint8_t buf[256];
	struct vh_sink s;

	for (int i = 0; i < 32; i++) {
		root[i] = (uint8_t)(0xa0 + i);
	}
	cr_assert(eq(int, kvdex_vllm_hasher_init_root(&h, KVDEX_VLLM_XXHASH_CBOR, root, 32), 0));
	cr_assert(eq(int, block_value(&v, &h, NULL, 0, toks1234, 4, NULL), 0));
	sink_init(&s, buf, sizeof(buf));
	value_encode(&s, h.algo, &v);
	cr_assert(eq(int, memcmp(buf, "\x83\x58\x20\xa0", 4), 0));
	cr_assert(eq(int, kvdex_vllm_hash_block(&h, NULL, 0, toks1234, 4, NULL, d0), 0));
	cr_assert(eq(long, (long)kvdex_vllm_hash_chain(&h, &req, 4, 4, d1, NULL, 1), 1));
	cr_assert(eq(int, memcmp(d0, d1, 16), 0));
}

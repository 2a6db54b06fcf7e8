/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KVEventBatch decoder (client/ingest/decode.c) and the kvdex-ingest configuration
 * parser (client/ingest/config.c).
 *
 * Valid batches: the byte examples of vllm-interop.md Part B verbatim, and batches of
 * every field generation in both encodings built with msgpack-c's packer. Malformed ones:
 * each error kind, every truncation of valid payloads (cross-checked with msgpack-c's
 * unpacker, which must also find them incomplete), and random byte corruption (must
 * never crash or read out of bounds; run under ASan to see the latter).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "client/ingest/config.h"
#include "client/ingest/decode.h"

static struct kvdex_ingest_batch b;

static void
fini(void)
{
	kvdex_ingest_batch_fini(&b);
}

TestSuite(ingest, .fini = fini, .timeout = 30);

static size_t
unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;

	for (; hex[0] && hex[1]; hex += 2) {
		unsigned v;

		while (*hex == ' ') {
			hex++;
		}
		sscanf(hex, "%2x", &v);
		out[n++] = (uint8_t)v;
	}
	return n;
}

/* The notes' examples (seed "0", sha256_cbor, block_size 4, tokens 1..8). */
#define H1 2164874634404590027ull
#define H2 17270480062156288726ull
static const char array_stored[] =
	"93cb41d954fc40200000919aab426c6f636b53746f72656492cf1e0b2e028ef071cbcfefad121d154a"
	"b2d6c098010203040506070804c0a3475055c092c0c00000";
static const char array_removed[] =
	"93cb41d954fc402000009194ac426c6f636b52656d6f76656491cfefad121d154ab2d6a34750550000";
static const char map_stored[] =
	"93cb41d954fc40200000918ba474797065ab426c6f636b53746f726564ac626c6f636b5f6861736865"
	"7392cf1e0b2e028ef071cbcfefad121d154ab2d6b1706172656e745f626c6f636b5f68617368c0a974"
	"6f6b656e5f696473980102030405060708aa626c6f636b5f73697a6504a76c6f72615f6964c0a66d65"
	"6469756da3475055a96c6f72615f6e616d65c0aa65787472615f6b65797392c0c0a967726f75705f69"
	"647800b26b765f63616368655f737065635f6b696e64ae66756c6c5f617474656e74696f6e00";
static const char map_removed[] =
	"93cb41d954fc402000009184a474797065ac426c6f636b52656d6f766564ac626c6f636b5f68617368"
	"657391cfefad121d154ab2d6a66d656469756da3475055a967726f75705f6964780000";
static const char array_cleared[] = "93cb41d954fc402000009191b0416c6c426c6f636b73436c656172656400";
static const char map_cleared[] =
	"93cb41d954fc402000009181a474797065b0416c6c426c6f636b73436c656172656400";

static int
dec_hex(const char *hex)
{
	static uint8_t buf[4096];
	size_t n = unhex(hex, buf);

	return kvdex_ingest_decode(&b, buf, n, NULL);
}

static bool
str_is(const struct kvdex_ingest_str *s, const char *want)
{
	return s->p != NULL && s->len == strlen(want) && memcmp(s->p, want, s->len) == 0;
}

/* 1. The notes' array-like BlockStored: two uint64 hashes, no parent, GPU, group 0. */
Test(ingest, notes_array_stored)
{
	cr_assert(eq(int, dec_hex(array_stored), 0), "%s", b.why);
	cr_assert(eq(u32, b.nev, 1));
	cr_assert(b.has_dp_rank && b.dp_rank == 0);
	cr_assert(b.ts == 1700000000.5);
	cr_assert(eq(u8, b.ev[0].type, KVDEX_INGEST_STORED));
	cr_assert(eq(u32, b.ev[0].n, 2));
	cr_assert(eq(u64, b.keys[0], H1));
	cr_assert(eq(u64, b.keys[1], H2));
	cr_assert(not(b.ev[0].has_parent || b.ev[0].has_lora_id));
	cr_assert(str_is(&b.ev[0].medium, "GPU"));
	cr_assert(b.ev[0].lora_name.p == NULL);
	cr_assert(b.ev[0].has_group && b.ev[0].group_idx == 0);
	cr_assert(eq(u64, b.ev[0].block_size, 4));
}

/* 2. The notes' map BlockStored with kv_cache_spec_kind. */
Test(ingest, notes_map_stored)
{
	cr_assert(eq(int, dec_hex(map_stored), 0), "%s", b.why);
	cr_assert(eq(u32, b.nev, 1));
	cr_assert(eq(u32, b.ev[0].n, 2));
	cr_assert(eq(u64, b.keys[1], H2));
	cr_assert(str_is(&b.ev[0].spec_kind, "full_attention"));
	cr_assert(str_is(&b.ev[0].medium, "GPU"));
}

/* 3. Removed and cleared, both encodings. */
Test(ingest, notes_removed_and_cleared)
{
	const char *removed[] = {array_removed, map_removed};
	const char *cleared[] = {array_cleared, map_cleared};

	for (int i = 0; i < 2; i++) {
		cr_assert(eq(int, dec_hex(removed[i]), 0), "%s", b.why);
		cr_assert(eq(u8, b.ev[0].type, KVDEX_INGEST_REMOVED));
		cr_assert(eq(u32, b.ev[0].n, 1));
		cr_assert(eq(u64, b.keys[0], H2));
		cr_assert(eq(int, dec_hex(cleared[i]), 0), "%s", b.why);
		cr_assert(eq(u32, b.nev, 1));
		cr_assert(eq(u8, b.ev[0].type, KVDEX_INGEST_CLEARED));
	}
}

/* ---- generations built with msgpack-c ---------------------------------------------- */

enum gen { GEN_V09, GEN_V011, GEN_V015, GEN_STABLE, GEN_LATEST, GEN_NR };

static const unsigned stored_nfields[GEN_NR] = {5, 6, 7, 9, 11};
static const unsigned removed_nfields[GEN_NR] = {1, 2, 2, 3, 3};

static void
pstr(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

/* BlockStored [hashes 3, parent, tokens, 16, lora_id 7, "CPU", "sql", [nil,["sql"],nil], 1,
 * "full_attention", nil], array-like or map (map omits None defaults). */
static void
pack_stored(msgpack_packer *pk, enum gen g, bool map)
{
	const unsigned nf = stored_nfields[g];
	const char *names[] = {"block_hashes",
			       "parent_block_hash",
			       "token_ids",
			       "block_size",
			       "lora_id",
			       "medium",
			       "lora_name",
			       "extra_keys",
			       "group_idx",
			       "kv_cache_spec_kind",
			       "kv_cache_spec_sliding_window"};
	unsigned nmap = 1 + nf - (g == GEN_LATEST ? 1 : 0); /* sliding window omitted */

	if (map) {
		msgpack_pack_map(pk, nmap);
		pstr(pk, "type");
	} else {
		msgpack_pack_array(pk, 1 + nf);
	}
	pstr(pk, "BlockStored");
	for (unsigned f = 0; f < nf; f++) {
		if (map && f == 10) {
			continue;
		}
		if (map) {
			pstr(pk, names[f]);
		}
		switch (f) {
		case 0:
			msgpack_pack_array(pk, 3);
			msgpack_pack_uint64(pk, UINT64_MAX);
			msgpack_pack_uint64(pk, 1);
			msgpack_pack_uint64(pk, 0x8000000000000000ull);
			break;
		case 1:
			msgpack_pack_uint64(pk, 42);
			break;
		case 2:
			msgpack_pack_array(pk, 48);
			for (int t = 0; t < 48; t++) {
				msgpack_pack_int(pk, t * 4001);
			}
			break;
		case 3:
			msgpack_pack_int(pk, 16);
			break;
		case 4:
			msgpack_pack_int(pk, 7);
			break;
		case 5:
			pstr(pk, "CPU");
			break;
		case 6:
			pstr(pk, "sql");
			break;
		case 7:
			msgpack_pack_array(pk, 3);
			msgpack_pack_nil(pk);
			msgpack_pack_array(pk, 2);
			pstr(pk, "sql");
			msgpack_pack_array(pk, 2);
			pstr(pk, "mm-1");
			msgpack_pack_int(pk, -3);
			msgpack_pack_nil(pk);
			break;
		case 8:
			msgpack_pack_int(pk, 1);
			break;
		case 9:
			pstr(pk, "full_attention");
			break;
		default:
			msgpack_pack_nil(pk);
			break;
		}
	}
}

static void
pack_removed(msgpack_packer *pk, enum gen g, bool map)
{
	const unsigned nf = removed_nfields[g];

	if (map) {
		msgpack_pack_map(pk, 1 + nf);
		pstr(pk, "type");
	} else {
		msgpack_pack_array(pk, 1 + nf);
	}
	pstr(pk, "BlockRemoved");
	if (map) {
		pstr(pk, "block_hashes");
	}
	msgpack_pack_array(pk, 1);
	msgpack_pack_uint64(pk, 99);
	if (nf >= 2) {
		if (map) {
			pstr(pk, "medium");
		}
		pstr(pk, "DISK");
	}
	if (nf >= 3) {
		if (map) {
			pstr(pk, "group_idx");
		}
		msgpack_pack_int(pk, 0);
	}
}

static void
pack_gen(msgpack_sbuffer *sb, enum gen g, bool map)
{
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, g == GEN_V09 ? 2 : 3);
	msgpack_pack_double(&pk, 1.5);
	msgpack_pack_array(&pk, 3);
	pack_stored(&pk, g, map);
	pack_removed(&pk, g, map);
	if (map) {
		msgpack_pack_map(&pk, 1);
		pstr(&pk, "type");
	} else {
		msgpack_pack_array(&pk, 1);
	}
	pstr(&pk, "AllBlocksCleared");
	if (g != GEN_V09) {
		msgpack_pack_int(&pk, 3);
	}
}

static void
check_gen(enum gen g, bool map)
{
	msgpack_sbuffer sb;
	const struct kvdex_ingest_ev *s, *r;

	pack_gen(&sb, g, map);
	cr_assert(eq(int, kvdex_ingest_decode(&b, (uint8_t *)sb.data, sb.size, NULL), 0),
		  "gen %d map %d: %s", g, map, b.why);
	cr_assert(eq(u32, b.nev, 3));
	cr_assert(eq(int, b.has_dp_rank, g != GEN_V09));
	if (g != GEN_V09) {
		cr_assert(eq(i64, b.dp_rank, 3));
	}
	s = &b.ev[0];
	r = &b.ev[1];
	cr_assert(eq(u8, s->type, KVDEX_INGEST_STORED));
	cr_assert(eq(u32, s->n, 3));
	cr_assert(eq(u64, b.keys[s->first], UINT64_MAX));
	cr_assert(eq(u64, b.keys[s->first + 2], 0x8000000000000000ull));
	cr_assert(s->has_parent && s->parent == 42);
	cr_assert(s->has_lora_id && s->lora_id == 7);
	cr_assert(eq(u64, s->block_size, 16));
	cr_assert(eq(int, s->medium.p != NULL, g >= GEN_V011));
	cr_assert(eq(int, s->lora_name.p != NULL, g >= GEN_V015));
	cr_assert(eq(int, s->has_group, g >= GEN_STABLE));
	cr_assert(eq(int, s->spec_kind.p != NULL, g >= GEN_LATEST));
	cr_assert(eq(u8, r->type, KVDEX_INGEST_REMOVED));
	cr_assert(eq(u64, b.keys[r->first], 99));
	cr_assert(eq(int, r->medium.p != NULL && str_is(&r->medium, "DISK"), g >= GEN_V011));
	cr_assert(eq(u8, b.ev[2].type, KVDEX_INGEST_CLEARED));
	msgpack_sbuffer_destroy(&sb);
}

/* 4. Every generation, array-like and map. */
Test(ingest, every_generation_both_encodings)
{
	for (int g = 0; g < GEN_NR; g++) {
		check_gen((enum gen)g, false);
		check_gen((enum gen)g, true);
	}
}

/* 5. bin digests: last 8 bytes big-endian (32, 16, 64 bytes); negative ints mod 2^64. */
Test(ingest, digest_projection_and_negative_ints)
{
	uint8_t d32[32], d16[16];
	msgpack_sbuffer sb;
	msgpack_packer pk;

	for (int i = 0; i < 32; i++) {
		d32[i] = (uint8_t)(i + 1);
	}
	for (int i = 0; i < 16; i++) {
		d16[i] = (uint8_t)(0xf0 + i);
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_double(&pk, 1.0);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_array(&pk, 6);
	pstr(&pk, "BlockStored");
	msgpack_pack_array(&pk, 3);
	msgpack_pack_bin(&pk, 32);
	msgpack_pack_bin_body(&pk, d32, 32);
	msgpack_pack_bin(&pk, 16);
	msgpack_pack_bin_body(&pk, d16, 16);
	msgpack_pack_int64(&pk, -2);
	msgpack_pack_bin(&pk, 32);
	msgpack_pack_bin_body(&pk, d32, 32);
	msgpack_pack_nil(&pk);
	msgpack_pack_int(&pk, 4);
	msgpack_pack_nil(&pk);
	msgpack_pack_int(&pk, 0);
	cr_assert(eq(int, kvdex_ingest_decode(&b, (uint8_t *)sb.data, sb.size, NULL), 0), "%s",
		  b.why);
	cr_assert(eq(u64, b.keys[0], 0x191a1b1c1d1e1f20ull));
	cr_assert(eq(u64, b.keys[1], 0xf8f9fafbfcfdfeffull));
	cr_assert(eq(u64, b.keys[2], UINT64_MAX - 1));
	cr_assert(eq(u64, b.ev[0].parent, 0x191a1b1c1d1e1f20ull));
	cr_assert(eq(u64, kvdex_ingest_digest_u64(d32, 32), 0x191a1b1c1d1e1f20ull));
	msgpack_sbuffer_destroy(&sb);
}

/* ---- malformed payloads ------------------------------------------------------------ */

struct bad_case {
	const char *hex;
	enum kvdex_ingest_derr want;
};

static const struct bad_case bad_cases[] = {
	/* 6. wrong types */
	{"93 a3747321 90 00", KVDEX_DERR_WRONG_TYPE},		   /* ts is a str */
	{"93 cb41d954fc40200000 05 00", KVDEX_DERR_WRONG_TYPE},	   /* events is an int */
	{"93 cb41d954fc40200000 91 05 00", KVDEX_DERR_WRONG_TYPE}, /* an event is an int */
	{"93 cb41d954fc40200000 91 81 a474797065 05 00", KVDEX_DERR_WRONG_TYPE}, /* tag int */
	{"93 cb41d954fc40200000 91 96 ab426c6f636b53746f726564 91a178 c0 90 04 c0 00",
	 KVDEX_DERR_WRONG_TYPE}, /* hash is a str */
	{"93 cb41d954fc40200000 91 94 ab426c6f636b53746f726564 90 c0 90 00",
	 KVDEX_DERR_WRONG_TYPE}, /* BlockStored with 3 fields */
	{"93 cb41d954fc40200000 91 81 a474797065 ac426c6f636b52656d6f766564 00",
	 KVDEX_DERR_WRONG_TYPE}, /* BlockRemoved map without block_hashes */
	{"93 cb41d954fc40200000 91 81 a6 6d656469756d a3475055 00",
	 KVDEX_DERR_WRONG_TYPE},				  /* map without "type" */
	{"91 cb41d954fc40200000", KVDEX_DERR_WRONG_TYPE},	  /* batch of 1 item */
	{"93 cb41d954fc40200000 90 a178", KVDEX_DERR_WRONG_TYPE}, /* dp rank is a str */
	/* 7. truncated */
	{"93 cb41d954fc40200000 91 9a ab426c6f636b5374", KVDEX_DERR_TRUNCATED},
	{"93 cb41d954", KVDEX_DERR_TRUNCATED},
	{"", KVDEX_DERR_TRUNCATED},
	{"93 cb41d954fc40200000 dc 0100 00", KVDEX_DERR_TRUNCATED}, /* 256 events in 1 byte */
	/* 8. huge arrays */
	{"93 cb41d954fc40200000 dd 7fffffff 00", KVDEX_DERR_TOO_LARGE},
	{"93 cb41d954fc40200000 dd ffffffff", KVDEX_DERR_TOO_LARGE},
	{"93 cb41d954fc40200000 91 92 ab426c6f636b53746f726564 de ffff", KVDEX_DERR_WRONG_TYPE},
	{"dd ffffffff", KVDEX_DERR_TOO_LARGE},
	/* 9. bad values */
	{"93 cb41d954fc40200000 90 00 00", KVDEX_DERR_BAD_VALUE}, /* trailing byte */
	{"93 cb41d954fc40200000 91 96 ab426c6f636b53746f726564 91c400 c0 90 04 c0 00",
	 KVDEX_DERR_BAD_VALUE}, /* empty digest */
	{"93 cb41d954fc40200000 91 99 ab426c6f636b53746f726564 90 c0 90 04 c0 c0 c0 91c1 00 00",
	 KVDEX_DERR_BAD_VALUE}, /* 0xc1 inside extra_keys */
};

/* 6-9. Each malformed payload is rejected with its kind. */
Test(ingest, malformed_payloads_have_their_kind)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		int rc = dec_hex(bad_cases[i].hex);

		cr_assert(eq(int, rc, -EBADMSG), "case %zu: rc %d", i, rc);
		cr_assert(eq(int, b.err, bad_cases[i].want), "case %zu: got %s (%s), want %s", i,
			  kvdex_ingest_derr_name(b.err), b.why,
			  kvdex_ingest_derr_name(bad_cases[i].want));
		cr_assert(b.why[0] != '\0');
	}
}

/* 10. A limit below the array size: TOO_LARGE even when the bytes are all there. */
Test(ingest, array_limit)
{
	struct kvdex_ingest_limits lim = {.max_array = 16, .max_depth = 8};
	msgpack_sbuffer sb;

	pack_gen(&sb, GEN_LATEST, false); /* 48 token ids */
	cr_assert(eq(int, kvdex_ingest_decode(&b, (uint8_t *)sb.data, sb.size, &lim), -EBADMSG));
	cr_assert(eq(int, b.err, KVDEX_DERR_TOO_LARGE), "%s", b.why);
	msgpack_sbuffer_destroy(&sb);
}

/* 11. Deep nesting in a skipped value (extra_keys). */
Test(ingest, nesting_depth)
{
	uint8_t buf[256];
	size_t n = unhex("93cb41d954fc40200000 91 99 ab426c6f636b53746f726564 90 c0 90 04 c0 c0 c0",
			 buf);

	for (int i = 0; i < 40; i++) {
		buf[n++] = 0x91;
	}
	buf[n++] = 0xc0;
	buf[n++] = 0x00;
	cr_assert(eq(int, kvdex_ingest_decode(&b, buf, n, NULL), -EBADMSG));
	cr_assert(eq(int, b.err, KVDEX_DERR_TOO_LARGE), "%s", b.why);
}

/* 12. Unknown event tags are skipped (array and map), the rest of the batch stands. */
Test(ingest, unknown_tag_skipped)
{
	cr_assert(eq(int,
		     dec_hex("93cb41d954fc40200000 93 93 ac426c6f636b546f7563686564 9201 02 c0 "
			     "81 a474797065 a3466f6f 92 ac426c6f636b52656d6f766564 9107 00"),
		     0),
		  "%s", b.why);
	cr_assert(eq(u32, b.unknown_tags, 2));
	cr_assert(eq(int, b.err, KVDEX_DERR_UNKNOWN_TAG));
	cr_assert(eq(u32, b.nev, 1));
	cr_assert(eq(u8, b.ev[0].type, KVDEX_INGEST_REMOVED));
	cr_assert(eq(u32, b.nkeys, 1));
	cr_assert(eq(u64, b.keys[0], 7));
}

/* 13. Unknown trailing fields (array) and unknown keys (map) are skipped. */
Test(ingest, unknown_fields_skipped)
{
	cr_assert(eq(int,
		     dec_hex("93cb41d954fc40200000 92 95 ac426c6f636b52656d6f766564 9107 a3475055 "
			     "00 cb3ff0000000000000 83 a474797065 ac426c6f636b52656d6f766564 a3"
			     "6e6577 92c0c0 ac626c6f636b5f686173686573 9108 00"),
		     0),
		  "%s", b.why);
	cr_assert(eq(u32, b.nev, 2));
	cr_assert(eq(u64, b.keys[0], 7));
	cr_assert(eq(u64, b.keys[1], 8));
}

/* 14. Every truncation of valid payloads is TRUNCATED, and msgpack-c agrees. */
Test(ingest, every_truncation)
{
	const char *hexes[] = {array_stored, array_removed, map_stored,
			       map_removed,  array_cleared, map_cleared};
	uint8_t buf[4096];

	for (int g = 0; g < GEN_NR; g++) {
		for (int map = 0; map < 2; map++) {
			msgpack_sbuffer sb;

			pack_gen(&sb, (enum gen)g, map);
			for (size_t cut = 0; cut < sb.size; cut++) {
				msgpack_unpacked up;
				size_t off = 0;

				cr_assert(eq(int,
					     kvdex_ingest_decode(&b, (uint8_t *)sb.data, cut, NULL),
					     -EBADMSG));
				cr_assert(eq(int, b.err, KVDEX_DERR_TRUNCATED),
					  "gen %d map %d cut %zu: %s (%s)", g, map, cut,
					  kvdex_ingest_derr_name(b.err), b.why);
				msgpack_unpacked_init(&up);
				cr_assert(eq(int, msgpack_unpack_next(&up, sb.data, cut, &off),
					     MSGPACK_UNPACK_CONTINUE));
				msgpack_unpacked_destroy(&up);
			}
			msgpack_sbuffer_destroy(&sb);
		}
	}
	for (size_t i = 0; i < sizeof(hexes) / sizeof(hexes[0]); i++) {
		size_t n = unhex(hexes[i], buf);

		for (size_t cut = 0; cut < n; cut++) {
			cr_assert(eq(int, kvdex_ingest_decode(&b, buf, cut, NULL), -EBADMSG));
			cr_assert(eq(int, b.err, KVDEX_DERR_TRUNCATED), "example %zu cut %zu", i,
				  cut);
		}
	}
}

/* 15. Random corruption: never a crash; every result is OK or a known kind. Each
 * payload is copied to an exact-size heap buffer so ASan sees any overread. */
Test(ingest, random_corruption)
{
	unsigned seed = 12345;

	for (int g = 0; g < GEN_NR; g++) {
		msgpack_sbuffer sb;

		pack_gen(&sb, (enum gen)g, g & 1);
		for (int iter = 0; iter < 3000; iter++) {
			uint8_t *p = malloc(sb.size);
			int rc;

			memcpy(p, sb.data, sb.size);
			for (int k = 0; k < 1 + iter % 4; k++) {
				p[rand_r(&seed) % sb.size] = (uint8_t)rand_r(&seed);
			}
			rc = kvdex_ingest_decode(&b, p, sb.size, NULL);
			cr_assert(rc == 0 || rc == -EBADMSG);
			cr_assert(rc == 0 || (b.err > KVDEX_DERR_OK && b.err < KVDEX_DERR_NR));
			if (rc == 0) {
				for (uint32_t e = 0; e < b.nev; e++) {
					cr_assert(b.ev[e].first + b.ev[e].n <= b.nkeys);
				}
			}
			free(p);
		}
		msgpack_sbuffer_destroy(&sb);
	}
}

/* ---- configuration ----------------------------------------------------------------- */

/* 16. An engine line with every attribute. */
Test(ingest, config_engine_line)
{
	struct kvdex_ingest_cfg cfg;
	const struct kvdex_ingest_engine_cfg *e;
	char err[256];

	kvdex_ingest_cfg_defaults(&cfg);
	cr_assert(eq(int,
		     kvdex_ingest_cfg_line(
			     &cfg,
			     "engine e1 endpoint=tcp://h:5557 replay=tcp://h:5558 "
			     "model=llama adapter=base tenant=t block_size=16 "
			     "hash_scheme=vllm:sha256_cbor:64 worker=7 dp_rank=1 "
			     "dp_size=2 address=h:8000 tier_map=GPU:gpu,CPU:host,*:disk "
			     "lora_map=3:sql,4:chat groups=0 # comment",
			     "t:1", err, sizeof(err)),
		     0),
		  "%s", err);
	cr_assert(eq(u32, cfg.nengines, 1));
	e = &cfg.engines[0];
	cr_assert(eq(str, (char *)e->replay, "tcp://h:5558"));
	cr_assert(eq(u32, e->block_size, 16));
	cr_assert(eq(i32, e->dp_rank, 1));
	cr_assert(eq(u32, e->ntiers, 2));
	cr_assert(eq(u8, e->unknown_tier, 2));
	cr_assert(eq(u32, e->nloras, 2));
	cr_assert(eq(str, (char *)e->loras[1].name, "chat"));
	cr_assert(eq(u64, e->groups, 1));
	cr_assert(eq(u8, e->clear_mask, 0x7)); /* gpu, host, disk */
	cr_assert(
		eq(int,
		   kvdex_ingest_cfg_line(&cfg, "silence_grace_ms = 5000", "t:2", err, sizeof(err)),
		   0));
	cr_assert(eq(u64, cfg.silence_grace_ms, 5000));
	kvdex_ingest_cfg_fini(&cfg);
}

/* 17. Errors name the source and the key; duplicates are refused. */
Test(ingest, config_errors)
{
	struct kvdex_ingest_cfg cfg;
	char err[256];

	kvdex_ingest_cfg_defaults(&cfg);
	cr_assert(eq(int, kvdex_ingest_cfg_line(&cfg, "bogus = 1", "f:3", err, sizeof(err)),
		     -EINVAL));
	cr_assert(strstr(err, "f:3") != NULL && strstr(err, "bogus") != NULL, "%s", err);
	cr_assert(eq(int,
		     kvdex_ingest_cfg_line(&cfg, "engine x endpoint=tcp://a:1 model=m", "f:4", err,
					   sizeof(err)),
		     -EINVAL));
	cr_assert(strstr(err, "hash_scheme") != NULL, "%s", err);
	cr_assert(eq(int,
		     kvdex_ingest_cfg_line(&cfg, "engine x endpoint=tcp://a:1 colour=red", "f:5",
					   err, sizeof(err)),
		     -EINVAL));
	cr_assert(strstr(err, "unknown key") != NULL, "%s", err);
	cr_assert(
		eq(int, kvdex_ingest_cfg_set(&cfg, "servers", "127.0.0.1:1", err, sizeof(err)), 0));
	for (int i = 0; i < 2; i++) {
		cr_assert(eq(int,
			     kvdex_ingest_cfg_line(&cfg,
						   "engine x endpoint=tcp://a:1 model=m "
						   "block_size=4 hash_scheme=s worker=3 dp_rank=0",
						   "f:6", err, sizeof(err)),
			     0));
	}
	cr_assert(eq(int, kvdex_ingest_cfg_check(&cfg, err, sizeof(err)), -EINVAL));
	cr_assert(strstr(err, "twice") != NULL, "%s", err);
	kvdex_ingest_cfg_fini(&cfg);
}

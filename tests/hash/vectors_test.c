/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vLLM block hashes against tests/data/vllm_hash_vectors.json, written by
 * tests/hash/gen_vectors.py from Python's pickle, cbor2, hashlib and xxhash. Every
 * vector checks the digest, the 64-bit event value, and the serialized bytes (in full
 * when the generator recorded them, else their length and SHA-256).
 *
 * The module is included so the tests can run the serializers on their own.
 */
#include "common/vllm_hash.c"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "hex.h"
#include "json_mini.h"

#ifndef KVDEX_HASH_VECTORS
#error "the build passes the vectors path as KVDEX_HASH_VECTORS"
#endif

static struct jm_val *doc;

/* Heap buffers of one vector, freed together. */
struct owned {
	void *p[64];
	int n;
};

static void *
own(struct owned *o, size_t size)
{
	void *p = calloc(1, size ? size : 1);

	cr_assert(not(eq(ptr, p, NULL)));
	cr_assert(lt(int, o->n, 64));
	o->p[o->n++] = p;
	return p;
}

static void
own_free(struct owned *o)
{
	while (o->n > 0) {
		free(o->p[--o->n]);
	}
}

static void
load(void)
{
	const char *path = getenv("KVDEX_HASH_VECTORS");

	doc = jm_parse_file(path ? path : KVDEX_HASH_VECTORS);
	cr_assert(not(eq(ptr, doc, NULL)), "cannot read %s", path ? path : KVDEX_HASH_VECTORS);
}

static void
unload(void)
{
	jm_free(doc);
	doc = NULL;
}

TestSuite(hash_vectors, .init = load, .fini = unload, .timeout = 60);

/* A string spec {"hex": h, "rep": n} (h repeated n times), or NULL for null. */
static uint8_t *
spec_bytes(const struct jm_val *spec, struct owned *o, size_t *len)
{
	const char *hex = jm_str(jm_get(spec, "hex"));
	size_t unit = strlen(hex) / 2, rep;
	uint8_t *p;

	*len = 0;
	if (jm_is_null(spec)) {
		return NULL;
	}
	rep = (size_t)jm_u64(jm_get(spec, "rep"));
	p = own(o, unit * rep);
	for (size_t i = 0; i < rep; i++) {
		cr_assert(eq(long, hex_decode(hex, p + i * unit), (long)unit));
	}
	*len = unit * rep;
	return p;
}

static uint32_t *
spec_tokens(const struct jm_val *spec, struct owned *o, size_t *n)
{
	const struct jm_val *ids = jm_get(spec, "ids");
	size_t rep = (size_t)jm_u64(jm_get(spec, "rep"));
	uint32_t *t = own(o, ids->n * rep * sizeof(*t));

	for (size_t r = 0; r < rep; r++) {
		for (size_t i = 0; i < ids->n; i++) {
			t[r * ids->n + i] = (uint32_t)jm_u64(jm_at(ids, i));
		}
	}
	*n = ids->n * rep;
	return t;
}

static enum kvdex_vllm_hash_algo
vec_algo(const struct jm_val *v)
{
	enum kvdex_vllm_hash_algo algo;

	cr_assert(eq(int, kvdex_vllm_hash_algo_parse(jm_str(jm_get(v, "algo")), &algo), 0));
	return algo;
}

static void
vec_hasher(const struct jm_val *v, struct kvdex_vllm_hasher *h, struct owned *o)
{
	size_t seed_len;
	uint8_t *seed = spec_bytes(jm_get(v, "seed"), o, &seed_len);

	cr_assert(eq(int, kvdex_vllm_hasher_init(h, vec_algo(v), (char *)seed, seed_len), 0));
}

/* Serialize @val with the module's own encoder and compare with the recorded bytes. */
static void
check_encoding(const struct jm_val *vec, enum kvdex_vllm_hash_algo algo, const struct vh_value *val,
	       const char *name)
{
	size_t want_len = (size_t)jm_u64(jm_get(vec, "encoded_len"));
	const struct jm_val *want_hex = jm_get(vec, "encoded_hex");
	uint8_t *buf = malloc(want_len + 64), md[32];
	char *hex = malloc(2 * (want_len + 64) + 1), md_hex[65];
	struct vh_sink s;

	cr_assert(buf && hex);
	sink_init(&s, buf, want_len + 64);
	value_encode(&s, algo, val);
	cr_assert(eq(int, s.err, 0), "%s", name);
	cr_assert(not(s.overflow), "%s", name);
	cr_assert(eq(sz, s.len, want_len), "%s: serialized length", name);
	SHA256(buf, s.len, md);
	cr_assert(
		eq(str, hex_encode(md, 32, md_hex), (char *)jm_str(jm_get(vec, "encoded_sha256"))),
		"%s: serialized bytes", name);
	if (!jm_is_null(want_hex)) {
		cr_assert(eq(str, hex_encode(buf, s.len, hex), (char *)jm_str(want_hex)),
			  "%s: serialized bytes", name);
	}
	free(hex);
	free(buf);
}

static void
check_digest(const uint8_t *d, size_t len, const struct jm_val *want, const char *what,
	     const char *name)
{
	char hex[2 * KVDEX_VLLM_ROOT_MAX + 1];

	cr_assert(eq(str, hex_encode(d, len, hex), (char *)jm_str(want)), "%s: %s", name, what);
}

/* 1. Roots: NONE_HASH = hash_fn(seed str) for every algorithm and seed. */
Test(hash_vectors, roots)
{
	const struct jm_val *roots = jm_get(doc, "roots");
	struct kvdex_vllm_hasher h;
	struct vh_value val;
	struct owned o = {0};
	char name[64];

	cr_assert(gt(sz, roots->n, 0));
	for (size_t i = 0; i < roots->n; i++) {
		const struct jm_val *v = jm_at(roots, i);

		snprintf(name, sizeof(name), "root %zu (%s)", i, jm_str(jm_get(v, "algo")));
		vec_hasher(v, &h, &o);
		cr_assert(eq(u32, h.root_len, h.digest_len));
		check_digest(h.root, h.root_len, jm_get(v, "digest_hex"), "root", name);
		memset(&val, 0, sizeof(val));
		val.seed = spec_bytes(jm_get(v, "seed"), &o, &val.seed_len);
		check_encoding(v, h.algo, &val, name);
		own_free(&o);
	}
}

static const struct kvdex_vllm_block_keys *
vec_keys(const struct jm_val *jk, struct kvdex_vllm_block_keys *k, struct owned *o)
{
	const struct jm_val *mm = jm_get(jk, "mm"), *emb = jm_get(jk, "embeds_hex");
	struct kvdex_vllm_mm_key *keys = own(o, mm->n * sizeof(*keys));

	memset(k, 0, sizeof(*k));
	k->lora_name = (char *)spec_bytes(jm_get(jk, "lora"), o, &k->lora_name_len);
	k->cache_salt = (char *)spec_bytes(jm_get(jk, "salt"), o, &k->cache_salt_len);
	for (size_t i = 0; i < mm->n; i++) {
		keys[i].identifier =
			(char *)spec_bytes(jm_get(jm_at(mm, i), "id"), o, &keys[i].identifier_len);
		keys[i].offset = jm_i64(jm_get(jm_at(mm, i), "offset"));
	}
	k->mm = keys;
	k->n_mm = mm->n;
	if (!jm_is_null(emb)) {
		uint8_t *d = own(o, KVDEX_VLLM_EMBEDS_DIGEST_LEN);

		cr_assert(eq(long, hex_decode(jm_str(emb), d), 32));
		k->embeds_digest = d;
	}
	return k;
}

/* 2. Single blocks: parents, token edge values, every kind of extra key, frames. */
Test(hash_vectors, blocks)
{
	const struct jm_val *blocks = jm_get(doc, "blocks");
	struct kvdex_vllm_block_keys keys;
	struct kvdex_vllm_hasher h;
	uint8_t digest[KVDEX_VLLM_DIGEST_MAX], parent[KVDEX_VLLM_ROOT_MAX];
	struct vh_value val;
	struct owned o = {0};
	char name[96];

	cr_assert(gt(sz, blocks->n, 0));
	for (size_t i = 0; i < blocks->n; i++) {
		const struct jm_val *v = jm_at(blocks, i), *ph = jm_get(v, "parent_hex");
		size_t n_tokens, parent_len = 0;
		uint32_t *tokens;

		snprintf(name, sizeof(name), "block %s (%s)", jm_str(jm_get(v, "name")),
			 jm_str(jm_get(v, "algo")));
		vec_hasher(v, &h, &o);
		tokens = spec_tokens(jm_get(v, "tokens"), &o, &n_tokens);
		vec_keys(jm_get(v, "keys"), &keys, &o);
		if (!jm_is_null(ph)) {
			parent_len = (size_t)hex_decode(jm_str(ph), parent);
		}
		cr_assert(eq(int,
			     kvdex_vllm_hash_block(&h, parent_len ? parent : NULL, parent_len,
						   tokens, n_tokens, &keys, digest),
			     0),
			  "%s", name);
		check_digest(digest, h.digest_len, jm_get(v, "digest_hex"), "digest", name);
		cr_assert(eq(u64, kvdex_vllm_hash_u64(digest, h.digest_len),
			     jm_u64(jm_get(v, "u64"))),
			  "%s: u64", name);
		cr_assert(eq(int,
			     block_value(&val, &h, parent, parent_len, tokens, n_tokens, &keys),
			     0));
		check_encoding(v, h.algo, &val, name);
		own_free(&o);
	}
}

struct vec_chain {
	struct kvdex_vllm_hasher h;
	struct kvdex_vllm_request req;
	size_t hbs;
	size_t bs;
};

static void
vec_request(const struct jm_val *v, struct vec_chain *c, struct owned *o)
{
	const struct jm_val *mm = jm_get(v, "mm"), *emb = jm_get(v, "embeds_hex");
	struct kvdex_vllm_mm_item *items = own(o, mm->n * sizeof(*items));
	struct kvdex_vllm_request *r = &c->req;

	vec_hasher(v, &c->h, o);
	memset(r, 0, sizeof(*r));
	r->tokens = spec_tokens(jm_get(v, "tokens"), o, &r->n_tokens);
	r->lora_name = (char *)spec_bytes(jm_get(v, "lora"), o, &r->lora_name_len);
	r->cache_salt = (char *)spec_bytes(jm_get(v, "salt"), o, &r->cache_salt_len);
	for (size_t i = 0; i < mm->n; i++) {
		const struct jm_val *it = jm_at(mm, i);

		items[i].identifier =
			(char *)spec_bytes(jm_get(it, "id"), o, &items[i].identifier_len);
		items[i].offset = jm_u64(jm_get(it, "offset"));
		items[i].length = jm_u64(jm_get(it, "length"));
	}
	r->mm = items;
	r->n_mm = mm->n;
	if (!jm_is_null(emb)) {
		uint8_t *d = own(o, emb->n * KVDEX_VLLM_EMBEDS_DIGEST_LEN);

		for (size_t i = 0; i < emb->n; i++) {
			hex_decode(jm_str(jm_at(emb, i)), d + i * KVDEX_VLLM_EMBEDS_DIGEST_LEN);
		}
		r->embeds_digests = d;
	}
	c->hbs = (size_t)jm_u64(jm_get(v, "hash_block_size"));
	c->bs = (size_t)jm_u64(jm_get(v, "block_size"));
}

/* Run the chain with @bs and compare digests (@hex_key) and u64s (@u64_key, or NULL). */
static void
check_chain(const struct jm_val *v, struct vec_chain *c, size_t bs, const char *hex_key,
	    const char *u64_key, struct owned *o, const char *name)
{
	const struct jm_val *want = jm_get(v, hex_key), *want_u64 = jm_get(v, u64_key);
	size_t dlen = c->h.digest_len, cap = want->n + 1;
	uint8_t *out = own(o, cap * dlen);
	uint64_t *u64 = own(o, cap * sizeof(*u64));
	ssize_t n;

	n = kvdex_vllm_hash_chain(&c->h, &c->req, c->hbs, bs, out, u64, SIZE_MAX);
	cr_assert(eq(sz, (size_t)n, want->n), "%s: %s count", name, hex_key);
	for (size_t j = 0; j < want->n; j++) {
		check_digest(out + j * dlen, dlen, jm_at(want, j), hex_key, name);
		cr_assert(eq(u64, u64[j], kvdex_vllm_hash_u64(out + j * dlen, dlen)));
		if (want_u64) {
			cr_assert(eq(u64, u64[j], jm_u64(jm_at(want_u64, j))), "%s: %s[%zu]", name,
				  u64_key, j);
		}
	}
}

/* 3. Whole requests: chain, extra-key placement, multimodal scan, physical blocks. */
Test(hash_vectors, chains)
{
	const struct jm_val *chains = jm_get(doc, "chains");
	struct owned o = {0};
	struct vec_chain c;
	char name[96];

	cr_assert(gt(sz, chains->n, 0));
	for (size_t i = 0; i < chains->n; i++) {
		const struct jm_val *v = jm_at(chains, i);

		snprintf(name, sizeof(name), "chain %s (%s)", jm_str(jm_get(v, "name")),
			 jm_str(jm_get(v, "algo")));
		vec_request(v, &c, &o);
		check_digest(c.h.root, c.h.root_len, jm_get(v, "root_hex"), "root", name);
		check_chain(v, &c, c.hbs, "hash_hex", "", &o, name);
		check_chain(v, &c, c.bs, "block_hex", "block_u64", &o, name);
		own_free(&o);
	}
}

/* 4. The older physical naming (k hashes concatenated) projects to the same u64s. */
Test(hash_vectors, concat_projection)
{
	const struct jm_val *chains = jm_get(doc, "chains");
	struct owned o = {0};
	struct vec_chain c;

	for (size_t i = 0; i < chains->n; i++) {
		const struct jm_val *v = jm_at(chains, i), *want = jm_get(v, "block_concat_u64");
		size_t dlen, k;
		uint8_t *fine;
		ssize_t n;

		vec_request(v, &c, &o);
		dlen = c.h.digest_len;
		k = c.bs / c.hbs;
		fine = own(&o, (want->n * k + 1) * dlen);
		n = kvdex_vllm_hash_chain(&c.h, &c.req, c.hbs, c.hbs, fine, NULL, want->n * k);
		cr_assert(eq(sz, (size_t)n, want->n * k));
		for (size_t j = 0; j < want->n; j++) {
			cr_assert(eq(u64, kvdex_vllm_hash_u64(fine + j * k * dlen, k * dlen),
				     jm_u64(jm_at(want, j))));
		}
		own_free(&o);
	}
}

/* 5. max_blocks hashes a prefix of the chain only, with the same digests. */
Test(hash_vectors, chain_prefix)
{
	const struct jm_val *chains = jm_get(doc, "chains");
	uint8_t out[2 * KVDEX_VLLM_DIGEST_MAX];
	struct owned o = {0};
	struct vec_chain c;

	for (size_t i = 0; i < chains->n; i++) {
		const struct jm_val *v = jm_at(chains, i), *want = jm_get(v, "block_hex");
		size_t n_want = want->n < 2 ? want->n : 2;

		vec_request(v, &c, &o);
		cr_assert(eq(sz,
			     (size_t)kvdex_vllm_hash_chain(&c.h, &c.req, c.hbs, c.bs, out, NULL, 2),
			     n_want));
		for (size_t j = 0; j < n_want; j++) {
			check_digest(out + j * c.h.digest_len, c.h.digest_len, jm_at(want, j),
				     "prefix", jm_str(jm_get(v, "name")));
		}
		own_free(&o);
	}
}

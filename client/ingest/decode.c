/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KVEventBatch decoder (see decode.h for the formats).
 *
 * Design: a cursor {p, end} over the payload and a handful of readers, one per msgpack
 * shape we expect (array header, map header, int, str, bin-or-int hash, nil). Each reader
 * either consumes exactly one value and returns 0, or records the error kind, the offset
 * and a reason in the batch and returns -EBADMSG; callers propagate that at once, so the
 * first error wins and nothing is read after it.
 *
 * Invariants: the cursor never passes `end`; a container count is checked against the
 * limit and against the bytes left (an element takes at least one byte, a map entry two)
 * before any element is read, so a 5-byte payload claiming 2^32 elements fails at once
 * and costs nothing; skipping an unknown value recurses at most lim->max_depth deep.
 *
 * Why not msgpack_unpack(): it allocates count * sizeof(msgpack_object) for every array
 * header before reading a single element (a 5-byte payload asks for up to 96 GiB), and
 * it builds a tree we would only walk once. The test suite uses msgpack-c's packer to
 * build payloads and its unpacker as a second opinion on truncated ones.
 */
#include "client/ingest/decode.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST_MAX 4096u /* longest bin hash accepted (32 * k bytes, k <= 128) */

struct cur {
	const uint8_t *base;
	const uint8_t *p;
	const uint8_t *end;
	struct kvdex_ingest_batch *b;
	const struct kvdex_ingest_limits *lim;
};

static const char *const derr_names[KVDEX_DERR_NR] = {
	[KVDEX_DERR_OK] = "ok",
	[KVDEX_DERR_WRONG_TYPE] = "wrong_type",
	[KVDEX_DERR_TRUNCATED] = "truncated",
	[KVDEX_DERR_UNKNOWN_TAG] = "unknown_tag",
	[KVDEX_DERR_TOO_LARGE] = "too_large",
	[KVDEX_DERR_BAD_VALUE] = "bad_value",
};

const char *
kvdex_ingest_derr_name(enum kvdex_ingest_derr e)
{
	return (unsigned)e < KVDEX_DERR_NR ? derr_names[e] : "?";
}

uint64_t
kvdex_ingest_digest_u64(const uint8_t *p, size_t len)
{
	uint64_t v = 0;
	size_t i = len > 8 ? len - 8 : 0;

	for (; i < len; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

static int __attribute__((format(printf, 3, 4)))
fail(struct cur *c, enum kvdex_ingest_derr e, const char *fmt, ...)
{
	va_list ap;

	c->b->err = e;
	c->b->err_off = (size_t)(c->p - c->base);
	va_start(ap, fmt);
	vsnprintf(c->b->why, sizeof(c->b->why), fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static size_t
left(const struct cur *c)
{
	return (size_t)(c->end - c->p);
}

/* Read an n-byte big-endian number after the type byte. */
static int
rd_be(struct cur *c, unsigned n, uint64_t *v)
{
	if (left(c) < n) {
		return fail(c, KVDEX_DERR_TRUNCATED, "payload ends inside a %u-byte field", n);
	}
	*v = 0;
	for (unsigned i = 0; i < n; i++) {
		*v = *v << 8 | *c->p++;
	}
	return 0;
}

static int
need_byte(struct cur *c)
{
	if (c->p >= c->end) {
		return fail(c, KVDEX_DERR_TRUNCATED, "payload ends where a value was expected");
	}
	return 0;
}

/* A container of n elements of at least `unit` bytes each. */
static int
check_count(struct cur *c, uint64_t n, unsigned unit, const char *what)
{
	if (n > c->lim->max_array) {
		return fail(c, KVDEX_DERR_TOO_LARGE, "%s of %llu elements (limit %u)", what,
			    (unsigned long long)n, c->lim->max_array);
	}
	if (n * unit > left(c)) {
		return fail(c, KVDEX_DERR_TRUNCATED, "%s of %llu elements in %zu bytes", what,
			    (unsigned long long)n, left(c));
	}
	return 0;
}

/* Classify the next value without consuming it (for error messages). */
static const char *
peek_kind(const struct cur *c)
{
	uint8_t t = *c->p;

	if (t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xd3)) {
		return "int";
	}
	if ((t & 0xf0) == 0x80 || t == 0xde || t == 0xdf) {
		return "map";
	}
	if ((t & 0xf0) == 0x90 || t == 0xdc || t == 0xdd) {
		return "array";
	}
	if ((t & 0xe0) == 0xa0 || (t >= 0xd9 && t <= 0xdb)) {
		return "str";
	}
	if (t >= 0xc4 && t <= 0xc6) {
		return "bin";
	}
	if (t == 0xca || t == 0xcb) {
		return "float";
	}
	if (t == 0xc0) {
		return "nil";
	}
	if (t == 0xc2 || t == 0xc3) {
		return "bool";
	}
	return "ext";
}

static bool
at_int(const struct cur *c)
{
	return peek_kind(c)[0] == 'i';
}

static bool
at_array(const struct cur *c)
{
	return peek_kind(c)[0] == 'a';
}

static bool
at_map(const struct cur *c)
{
	return peek_kind(c)[0] == 'm';
}

static int
wrong(struct cur *c, const char *want, const char *field)
{
	return fail(c, KVDEX_DERR_WRONG_TYPE, "%s: expected %s, got %s", field, want, peek_kind(c));
}

static bool
is_nil(struct cur *c)
{
	if (c->p < c->end && *c->p == 0xc0) {
		c->p++;
		return true;
	}
	return false;
}

static int
rd_array(struct cur *c, uint32_t *n, const char *field)
{
	uint64_t v;
	int rc;

	if ((rc = need_byte(c)) != 0) {
		return rc;
	}
	if ((*c->p & 0xf0) == 0x90) {
		v = *c->p++ & 0x0f;
	} else if (*c->p == 0xdc || *c->p == 0xdd) {
		rc = rd_be(c, *c->p++ == 0xdc ? 2 : 4, &v);
		if (rc != 0) {
			return rc;
		}
	} else {
		return wrong(c, "array", field);
	}
	rc = check_count(c, v, 1, field);
	*n = (uint32_t)v;
	return rc;
}

static int
rd_map(struct cur *c, uint32_t *n, const char *field)
{
	uint64_t v;
	int rc;

	if ((rc = need_byte(c)) != 0) {
		return rc;
	}
	if ((*c->p & 0xf0) == 0x80) {
		v = *c->p++ & 0x0f;
	} else if (*c->p == 0xde || *c->p == 0xdf) {
		rc = rd_be(c, *c->p++ == 0xde ? 2 : 4, &v);
		if (rc != 0) {
			return rc;
		}
	} else {
		return wrong(c, "map", field);
	}
	rc = check_count(c, v, 2, field);
	*n = (uint32_t)v;
	return rc;
}

/* Any msgpack integer, as its 64-bit two's complement pattern; *neg if it was signed. */
static int
rd_int(struct cur *c, uint64_t *v, bool *neg, const char *field)
{
	uint8_t t;
	uint64_t u;
	int rc;

	if ((rc = need_byte(c)) != 0) {
		return rc;
	}
	t = *c->p;
	*neg = false;
	if (t <= 0x7f) {
		c->p++;
		*v = t;
		return 0;
	}
	if (t >= 0xe0) {
		c->p++;
		*v = (uint64_t)(int64_t)(int8_t)t;
		*neg = true;
		return 0;
	}
	if (t >= 0xcc && t <= 0xcf) {
		c->p++;
		return rd_be(c, 1u << (t - 0xcc), v);
	}
	if (t >= 0xd0 && t <= 0xd3) {
		unsigned n = 1u << (t - 0xd0);

		c->p++;
		rc = rd_be(c, n, &u);
		if (rc != 0) {
			return rc;
		}
		/* sign-extend from n bytes */
		if (n < 8 && (u >> (8 * n - 1)) != 0) {
			u |= ~0ull << (8 * n);
		}
		*v = u;
		*neg = (int64_t)u < 0;
		return 0;
	}
	return wrong(c, "int", field);
}

static int
rd_int_or_nil(struct cur *c, bool *present, int64_t *v, const char *field)
{
	uint64_t u;
	bool neg;
	int rc;

	*present = false;
	if (is_nil(c)) {
		return 0;
	}
	rc = rd_int(c, &u, &neg, field);
	if (rc == 0) {
		*present = true;
		*v = (int64_t)u;
	}
	return rc;
}

/* str (UTF-8 is not checked: the value is only compared and copied). */
static int
rd_str(struct cur *c, struct kvdex_ingest_str *s, bool nil_ok, const char *field)
{
	uint64_t n;
	int rc;

	if (nil_ok && is_nil(c)) {
		s->p = NULL;
		s->len = 0;
		return 0;
	}
	if ((rc = need_byte(c)) != 0) {
		return rc;
	}
	if ((*c->p & 0xe0) == 0xa0) {
		n = *c->p++ & 0x1f;
	} else if (*c->p >= 0xd9 && *c->p <= 0xdb) {
		rc = rd_be(c, 1u << (*c->p++ - 0xd9), &n);
		if (rc != 0) {
			return rc;
		}
	} else {
		return wrong(c, nil_ok ? "str or nil" : "str", field);
	}
	if (n > left(c)) {
		return fail(c, KVDEX_DERR_TRUNCATED, "%s: string of %llu bytes in %zu", field,
			    (unsigned long long)n, left(c));
	}
	s->p = (const char *)c->p;
	s->len = (uint32_t)n;
	c->p += n;
	return 0;
}

/* A block hash: int (mod 2^64) or bin digest (last 8 bytes, big-endian). */
static int
rd_hash(struct cur *c, uint64_t *h, const char *field)
{
	uint64_t n;
	bool neg;
	int rc;

	if ((rc = need_byte(c)) != 0) {
		return rc;
	}
	if (*c->p < 0xc4 || *c->p > 0xc6) {
		if (!at_int(c)) {
			return wrong(c, "int or bin hash", field);
		}
		return rd_int(c, h, &neg, field);
	}
	rc = rd_be(c, 1u << (*c->p++ - 0xc4), &n);
	if (rc != 0) {
		return rc;
	}
	if (n > left(c)) {
		return fail(c, KVDEX_DERR_TRUNCATED, "%s: digest of %llu bytes in %zu", field,
			    (unsigned long long)n, left(c));
	}
	if (n == 0 || n > DIGEST_MAX) {
		return fail(c, KVDEX_DERR_BAD_VALUE, "%s: digest of %llu bytes", field,
			    (unsigned long long)n);
	}
	*h = kvdex_ingest_digest_u64(c->p, n);
	c->p += n;
	return 0;
}

static int skip_value(struct cur *c, unsigned depth);

static int
skip_n(struct cur *c, uint64_t n, unsigned depth)
{
	int rc;

	for (uint64_t i = 0; i < n; i++) {
		rc = skip_value(c, depth + 1);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

static int
skip_bytes(struct cur *c, uint64_t n)
{
	if (n > left(c)) {
		return fail(c, KVDEX_DERR_TRUNCATED, "value of %llu bytes in %zu",
			    (unsigned long long)n, left(c));
	}
	c->p += n;
	return 0;
}

/* Containers: fixarray, fixmap, array16/32, map16/32. */
static int
skip_container(struct cur *c, uint8_t t, unsigned depth)
{
	uint64_t n;
	unsigned unit;
	int rc;

	if (depth >= c->lim->max_depth) {
		return fail(c, KVDEX_DERR_TOO_LARGE, "values nested deeper than %u",
			    c->lim->max_depth);
	}
	unit = ((t & 0xf0) == 0x80 || t == 0xde || t == 0xdf) ? 2 : 1;
	if ((t & 0xe0) == 0x80) {
		n = t & 0x0f;
	} else {
		rc = rd_be(c, (t == 0xdc || t == 0xde) ? 2 : 4, &n);
		if (rc != 0) {
			return rc;
		}
	}
	rc = check_count(c, n, unit, unit == 2 ? "map" : "array");
	if (rc != 0) {
		return rc;
	}
	return skip_n(c, n * unit, depth);
}

/* Skip any one value, validating its framing. */
static int
skip_value(struct cur *c, unsigned depth)
{
	static const uint8_t fixed[] = {
		/* 0xc0..0xdf: bytes after the type byte (0xff: variable, handled below) */
		0, 0xff, 0,  0,	   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 4,
		8, 1,	 2,  4,	   8,	 1,    2,    4,	   8,	 2,    3,
		5, 9,	 17, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	};
	uint64_t n;
	uint8_t t;
	int rc;

	if ((rc = need_byte(c)) != 0) {
		return rc;
	}
	t = *c->p++;
	if (t <= 0x7f || t >= 0xe0) {
		return 0;
	}
	if ((t & 0xe0) == 0x80 || (t >= 0xdc && t <= 0xdf)) {
		return skip_container(c, t, depth);
	}
	if ((t & 0xe0) == 0xa0) {
		return skip_bytes(c, t & 0x1f);
	}
	if (t == 0xc1) {
		c->p--;
		return fail(c, KVDEX_DERR_BAD_VALUE, "reserved byte 0xc1");
	}
	if (fixed[t - 0xc0] != 0xff) {
		return skip_bytes(c, fixed[t - 0xc0]);
	}
	if (t >= 0xc4 && t <= 0xc6) { /* bin */
		rc = rd_be(c, 1u << (t - 0xc4), &n);
	} else if (t >= 0xd9 && t <= 0xdb) { /* str */
		rc = rd_be(c, 1u << (t - 0xd9), &n);
	} else { /* ext 8/16/32: length, then a type byte */
		rc = rd_be(c, 1u << (t - 0xc7), &n);
		n++;
	}
	if (rc != 0) {
		return rc;
	}
	return skip_bytes(c, n);
}

/* ---- batch arrays ------------------------------------------------------------------- */

static int
grow(void **arr, uint32_t *cap, uint64_t need, size_t elem)
{
	uint64_t ncap = *cap ? *cap : 64;
	void *p;

	if (need <= *cap) {
		return 0;
	}
	while (ncap < need) {
		ncap *= 2;
	}
	if (ncap > UINT32_MAX) {
		return -ENOMEM;
	}
	p = realloc(*arr, (size_t)ncap * elem);
	if (p == NULL) {
		return -ENOMEM;
	}
	*arr = p;
	*cap = (uint32_t)ncap;
	return 0;
}

static int
rd_hashes(struct cur *c, struct kvdex_ingest_ev *ev)
{
	struct kvdex_ingest_batch *b = c->b;
	uint32_t n;
	int rc;

	rc = rd_array(c, &n, "block_hashes");
	if (rc != 0) {
		return rc;
	}
	rc = grow((void **)&b->keys, &b->cap_keys, (uint64_t)b->nkeys + n, sizeof(uint64_t));
	if (rc != 0) {
		return rc;
	}
	ev->first = b->nkeys;
	ev->n = n;
	for (uint32_t i = 0; i < n; i++) {
		rc = rd_hash(c, &b->keys[b->nkeys], "block_hashes[]");
		if (rc != 0) {
			return rc;
		}
		b->nkeys++;
	}
	return 0;
}

static int
rd_parent(struct cur *c, struct kvdex_ingest_ev *ev)
{
	if (is_nil(c)) {
		return 0;
	}
	ev->has_parent = true;
	return rd_hash(c, &ev->parent, "parent_block_hash");
}

/* token_ids are not stored, but must be an array of ints (or nil). */
static int
skip_tokens(struct cur *c)
{
	uint32_t n;
	uint64_t v;
	bool neg;
	int rc;

	if (is_nil(c)) {
		return 0;
	}
	rc = rd_array(c, &n, "token_ids");
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		if (c->p < c->end && *c->p <= 0x7f) { /* the common case: fixint */
			c->p++;
			continue;
		}
		rc = rd_int(c, &v, &neg, "token_ids[]");
	}
	return rc;
}

static int
rd_block_size(struct cur *c, struct kvdex_ingest_ev *ev)
{
	bool present;
	int64_t v;
	int rc;

	rc = rd_int_or_nil(c, &present, &v, "block_size");
	if (rc == 0 && present) {
		if (v < 0) {
			return fail(c, KVDEX_DERR_BAD_VALUE, "block_size %lld", (long long)v);
		}
		ev->block_size = (uint64_t)v;
	}
	return rc;
}

/* extra_keys: nil, or an array of per-block nil / tuples; contents are skipped. */
static int
skip_extra_keys(struct cur *c)
{
	if (is_nil(c)) {
		return 0;
	}
	if (need_byte(c) != 0) {
		return -EBADMSG;
	}
	if (!at_array(c)) {
		return wrong(c, "array or nil", "extra_keys");
	}
	return skip_value(c, 0);
}

/* ---- fields, by name (maps) and by position (arrays) --------------------------------- */

enum field {
	F_HASHES,
	F_PARENT,
	F_TOKENS,
	F_BLOCK_SIZE,
	F_LORA_ID,
	F_MEDIUM,
	F_LORA_NAME,
	F_EXTRA_KEYS,
	F_GROUP,
	F_SPEC_KIND,
	F_SPEC_WINDOW,
	F_UNKNOWN,
};

static const char *const field_names[F_UNKNOWN] = {
	"block_hashes",
	"parent_block_hash",
	"token_ids",
	"block_size",
	"lora_id",
	"medium",
	"lora_name",
	"extra_keys",
	"group_idx",
	"kv_cache_spec_kind",
	"kv_cache_spec_sliding_window",
};

/* Positional layouts of the array-like events, in declaration order. */
static const uint8_t stored_fields[] = {
	F_HASHES,    F_PARENT,	   F_TOKENS, F_BLOCK_SIZE, F_LORA_ID,	  F_MEDIUM,
	F_LORA_NAME, F_EXTRA_KEYS, F_GROUP,  F_SPEC_KIND,  F_SPEC_WINDOW,
};
static const uint8_t removed_fields[] = {F_HASHES, F_MEDIUM, F_GROUP};

static enum field
field_lookup(const struct kvdex_ingest_str *k)
{
	for (int f = 0; f < F_UNKNOWN; f++) {
		if (strlen(field_names[f]) == k->len && memcmp(field_names[f], k->p, k->len) == 0) {
			return (enum field)f;
		}
	}
	return F_UNKNOWN;
}

static int
rd_field(struct cur *c, struct kvdex_ingest_ev *ev, enum field f, uint32_t *seen)
{
	bool present;
	int64_t v;

	if (f != F_UNKNOWN) {
		*seen |= 1u << f;
	}
	switch (f) {
	case F_HASHES:
		return rd_hashes(c, ev);
	case F_PARENT:
		return rd_parent(c, ev);
	case F_TOKENS:
		return skip_tokens(c);
	case F_BLOCK_SIZE:
		return rd_block_size(c, ev);
	case F_LORA_ID:
		return rd_int_or_nil(c, &ev->has_lora_id, &ev->lora_id, "lora_id");
	case F_MEDIUM:
		return rd_str(c, &ev->medium, true, "medium");
	case F_LORA_NAME:
		return rd_str(c, &ev->lora_name, true, "lora_name");
	case F_EXTRA_KEYS:
		return skip_extra_keys(c);
	case F_GROUP:
		return rd_int_or_nil(c, &ev->has_group, &ev->group_idx, "group_idx");
	case F_SPEC_KIND:
		return rd_str(c, &ev->spec_kind, true, "kv_cache_spec_kind");
	case F_SPEC_WINDOW:
		return rd_int_or_nil(c, &present, &v, "kv_cache_spec_sliding_window");
	case F_UNKNOWN:
		break;
	}
	/* A field a newer vLLM added: skip it. */
	return skip_value(c, 1);
}

static int
tag_lookup(const struct kvdex_ingest_str *tag)
{
	static const char *const tags[] = {"BlockStored", "BlockRemoved", "AllBlocksCleared"};

	for (int i = 0; i < 3; i++) {
		if (strlen(tags[i]) == tag->len && memcmp(tags[i], tag->p, tag->len) == 0) {
			return i;
		}
	}
	return -1;
}

/* An unknown tag: remember the first for the log, count it, skip the rest. */
static int
unknown_tag(struct cur *c, const struct kvdex_ingest_str *tag, uint64_t rest)
{
	struct kvdex_ingest_batch *b = c->b;

	if (b->unknown_tags++ == 0) {
		b->err = KVDEX_DERR_UNKNOWN_TAG;
		b->err_off = (size_t)(c->p - c->base);
		snprintf(b->why, sizeof(b->why), "unknown event type \"%.*s\"",
			 (int)(tag->len > 40 ? 40 : tag->len), tag->p);
	}
	return skip_n(c, rest, 0);
}

static int
ev_array(struct cur *c, struct kvdex_ingest_ev *ev, uint32_t n)
{
	struct kvdex_ingest_str tag;
	const uint8_t *layout;
	uint32_t nlayout, seen = 0;
	int rc, t;

	if (n == 0) {
		return fail(c, KVDEX_DERR_WRONG_TYPE, "event: empty array");
	}
	rc = rd_str(c, &tag, false, "event tag");
	if (rc != 0) {
		return rc;
	}
	t = tag_lookup(&tag);
	if (t < 0) {
		rc = unknown_tag(c, &tag, n - 1);
		return rc != 0 ? rc : 1;
	}
	ev->type = (uint8_t)t;
	layout = t == KVDEX_INGEST_STORED ? stored_fields : removed_fields;
	nlayout = t == KVDEX_INGEST_STORED ? sizeof(stored_fields) : sizeof(removed_fields);
	if (t == KVDEX_INGEST_CLEARED) {
		nlayout = 0;
	}
	/* v0.9 BlockStored had 5 fields, BlockRemoved 1: anything shorter is malformed. */
	if ((t == KVDEX_INGEST_STORED && n - 1 < 5) || (t == KVDEX_INGEST_REMOVED && n - 1 < 1)) {
		return fail(c, KVDEX_DERR_WRONG_TYPE, "%.*s with %u fields", (int)tag.len, tag.p,
			    n - 1);
	}
	for (uint32_t i = 1; i < n; i++) {
		enum field f = i - 1 < nlayout ? (enum field)layout[i - 1] : F_UNKNOWN;

		rc = rd_field(c, ev, f, &seen);
		if (rc != 0) {
			return rc;
		}
	}
	return 0;
}

static int
ev_map(struct cur *c, struct kvdex_ingest_ev *ev, uint32_t n)
{
	struct kvdex_ingest_str key, tag = {0};
	uint32_t seen = 0;
	int rc, t = -1;

	for (uint32_t i = 0; i < n; i++) {
		rc = rd_str(c, &key, false, "event field name");
		if (rc != 0) {
			return rc;
		}
		if (key.len == 4 && memcmp(key.p, "type", 4) == 0) {
			rc = rd_str(c, &tag, false, "type");
			if (rc != 0) {
				return rc;
			}
			t = tag_lookup(&tag);
			/* msgspec writes the tag first: an unknown one skips the rest. */
			if (t < 0) {
				rc = unknown_tag(c, &tag, 2ull * (n - 1 - i));
				return rc != 0 ? rc : 1;
			}
			continue;
		}
		rc = rd_field(c, ev, field_lookup(&key), &seen);
		if (rc != 0) {
			return rc;
		}
	}
	if (tag.p == NULL) {
		return fail(c, KVDEX_DERR_WRONG_TYPE, "event map without \"type\"");
	}
	ev->type = (uint8_t)t;
	if (t != KVDEX_INGEST_CLEARED && !(seen & (1u << F_HASHES))) {
		return fail(c, KVDEX_DERR_WRONG_TYPE, "%.*s without block_hashes", (int)tag.len,
			    tag.p);
	}
	return 0;
}

/* One event; 0 = decoded into b->ev[b->nev], 1 = skipped (unknown tag). */
static int
rd_event(struct cur *c)
{
	struct kvdex_ingest_batch *b = c->b;
	struct kvdex_ingest_ev *ev = &b->ev[b->nev];
	uint32_t keys0 = b->nkeys;
	uint32_t n;
	int rc;

	memset(ev, 0, sizeof(*ev));
	if (need_byte(c) != 0) {
		return -EBADMSG;
	}
	if (at_array(c)) {
		rc = rd_array(c, &n, "event");
		if (rc == 0) {
			rc = ev_array(c, ev, n);
		}
	} else if (at_map(c)) {
		rc = rd_map(c, &n, "event");
		if (rc == 0) {
			rc = ev_map(c, ev, n);
		}
	} else {
		return wrong(c, "array or map", "event");
	}
	if (rc == 1) {
		b->nkeys = keys0;
	}
	return rc;
}

static int
rd_ts(struct cur *c, double *ts)
{
	uint64_t v;
	bool neg;
	int rc;

	if (need_byte(c) != 0) {
		return -EBADMSG;
	}
	if (*c->p == 0xcb || *c->p == 0xca) {
		bool dbl = *c->p++ == 0xcb;
		union {
			uint64_t u;
			double d;
		} u64;
		union {
			uint32_t u;
			float f;
		} u32;

		rc = rd_be(c, dbl ? 8 : 4, &v);
		if (rc == 0 && dbl) {
			u64.u = v;
			*ts = u64.d;
		} else if (rc == 0) {
			u32.u = (uint32_t)v;
			*ts = u32.f;
		}
		return rc;
	}
	if (!at_int(c)) {
		return wrong(c, "float", "ts");
	}
	rc = rd_int(c, &v, &neg, "ts");
	*ts = neg ? (double)(int64_t)v : (double)v;
	return rc;
}

static int
rd_events(struct cur *c)
{
	struct kvdex_ingest_batch *b = c->b;
	uint32_t n;
	int rc;

	rc = rd_array(c, &n, "events");
	if (rc != 0) {
		return rc;
	}
	rc = grow((void **)&b->ev, &b->cap_ev, n, sizeof(*b->ev));
	if (rc != 0) {
		return rc;
	}
	for (uint32_t i = 0; i < n; i++) {
		rc = rd_event(c);
		if (rc < 0) {
			return rc;
		}
		if (rc == 0) {
			b->nev++;
		}
	}
	return 0;
}

static int
decode_batch(struct cur *c)
{
	struct kvdex_ingest_batch *b = c->b;
	uint32_t n;
	int rc;

	rc = rd_array(c, &n, "batch");
	if (rc != 0) {
		return rc;
	}
	if (n < 2) {
		return fail(c, KVDEX_DERR_WRONG_TYPE, "batch of %u items (want ts, events)", n);
	}
	rc = rd_ts(c, &b->ts);
	if (rc == 0) {
		rc = rd_events(c);
	}
	if (rc == 0 && n >= 3) {
		rc = rd_int_or_nil(c, &b->has_dp_rank, &b->dp_rank, "data_parallel_rank");
	}
	if (rc == 0 && n > 3) {
		rc = skip_n(c, n - 3, 0);
	}
	if (rc == 0 && c->p != c->end) {
		rc = fail(c, KVDEX_DERR_BAD_VALUE, "%zu trailing bytes after the batch", left(c));
	}
	return rc;
}

int
kvdex_ingest_decode(struct kvdex_ingest_batch *b, const uint8_t *buf, size_t len,
		    const struct kvdex_ingest_limits *lim)
{
	static const struct kvdex_ingest_limits defaults = {
		.max_array = KVDEX_INGEST_DEFAULT_MAX_ARRAY,
		.max_depth = KVDEX_INGEST_DEFAULT_MAX_DEPTH,
	};
	struct cur c = {
		.base = buf,
		.p = buf,
		.end = buf + len,
		.b = b,
		.lim = lim ? lim : &defaults,
	};
	int rc;

	b->ts = 0;
	b->has_dp_rank = false;
	b->dp_rank = 0;
	b->nev = 0;
	b->nkeys = 0;
	b->unknown_tags = 0;
	b->err = KVDEX_DERR_OK;
	b->err_off = 0;
	b->why[0] = '\0';
	rc = decode_batch(&c);
	if (rc == -ENOMEM) {
		b->err = KVDEX_DERR_TOO_LARGE;
		snprintf(b->why, sizeof(b->why), "out of memory");
	}
	return rc;
}

void
kvdex_ingest_batch_fini(struct kvdex_ingest_batch *b)
{
	if (b == NULL) {
		return;
	}
	free(b->ev);
	free(b->keys);
	b->ev = NULL;
	b->keys = NULL;
	b->cap_ev = 0;
	b->cap_keys = 0;
}

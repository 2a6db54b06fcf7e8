/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vLLM-exact block hashes: two serializers (CPython pickle protocol 5, canonical CBOR)
 * for exactly the Python values vLLM hashes, feeding SHA-256 (OpenSSL) or XXH3-128
 * (libxxhash).
 *
 * Values. Two shapes only: the root, a str (the seed); and a block,
 * (bytes parent, tuple of ints, None | tuple of extra keys), where an extra key is a
 * str, a bytes, or a (str, int) pair.
 *
 * Pickle is CPython's C pickler (Modules/_pickle.c), protocol 5, whose output depends
 * on more than the value:
 *  - Framing. After PROTO (80 05) the output is cut into frames, each introduced by
 *    FRAME (95) and its 8-byte little-endian length. A frame is committed at the start
 *    of the save of any object once it holds >= 64 KiB, and at the end; a frame of
 *    fewer than 4 bytes is written without its header. A str or bytes payload of
 *    >= 64 KiB commits the open frame and is written outside any frame.
 *  - Memo. Every str, bytes and non-empty tuple is followed by MEMOIZE (94); a second
 *    reference to the *same object* becomes BINGET. vLLM builds fresh objects, except
 *    that CPython shares "" and the 1-character strings below U+0100, so two equal such
 *    strings in one value are one object: we emit BINGET for them (str only; the bytes
 *    in a value are 16/32-byte digests, never shared).
 *  - Ints: BININT1 / BININT2 for 0..65535, BININT (signed 32-bit), else LONG1 with
 *    the minimal two's-complement little-endian bytes.
 * CBOR is cbor2.dumps(canonical=True): shortest heads, tuples as definite arrays,
 * None as f6. It has none of pickle's context.
 *
 * Buffering. A value is serialized into a 4 KiB stack buffer (a 16-token block takes
 * about 100 bytes) and hashed in one shot. Pickle's frame header needs the frame's
 * length before its content: the first pass leaves a placeholder and patches it. If
 * the value outgrows the buffer, the first pass keeps only counting (and records every
 * frame length), and a second pass serializes again, streaming the buffer into an
 * incremental hash whenever it fills, writing frame headers from the recorded lengths.
 * So nothing is allocated and any size up to VH_MAX_FRAMES frames works.
 *
 * SHA-256 uses OpenSSL's low-level SHA256_Init/Update/Final: deprecated in 3.0, but
 * the 3.0 one-shot SHA256() fetches the algorithm on every call, and a reused
 * EVP_MD_CTX costs a heap object per thread and 50-100 ns more per 100-byte digest
 * (measured with OpenSSL 3.0.19; Mooncake saw 68 vs 197 ns/block). All of them run the
 * same SHA-NI/AVX2 block function.
 *
 * Speed. Token ids are random, so the usual block head (PROTO..token tuple, or the
 * CBOR array, parent and token array) is written in one go with branch-free per-id
 * encoders (pk_block_head_fast(), cb_block_head_fast()); the general, checked path
 * serves small, huge and streamed values. Both are compared with Python's bytes.
 *
 * Thread safety: no state outside the caller's stack and the read-only hasher.
 */
/* The low-level SHA-256 API: see above. */
#define OPENSSL_SUPPRESS_DEPRECATED
/* XXH3_state_t on the stack for the streaming pass. */
#define XXH_STATIC_LINKING_ONLY

#include "common/vllm_hash.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/sha.h>
#include <xxhash.h>

#ifdef OPENSSL_NO_DEPRECATED_3_0
#error "vllm_hash.c needs OpenSSL's SHA256_Init/Update/Final (built without deprecated APIs)"
#endif

#define VH_STAGE 4096u
/* CPython _pickle.c: FRAME_SIZE_TARGET, FRAME_SIZE_MIN, FRAME_HEADER_SIZE. */
#define VH_FRAME_TARGET 65536u
#define VH_FRAME_MIN 4u
#define VH_FRAME_HDR 9u
/* Bounds the serialized value to about 16 MiB (frames are >= 64 KiB but for big strs). */
#define VH_MAX_FRAMES 256u
/* The CPython singleton strings: "" and one code point below U+0100. */
#define VH_SINGLETONS 257u

/* Pickle opcodes (Lib/pickletools.py). */
enum {
	PK_MARK = 0x28,
	PK_EMPTY_TUPLE = 0x29,
	PK_STOP = 0x2e,
	PK_BINBYTES = 0x42,
	PK_SHORT_BINBYTES = 0x43,
	PK_BININT = 0x4a,
	PK_BININT1 = 0x4b,
	PK_BININT2 = 0x4d,
	PK_NONE = 0x4e,
	PK_BINUNICODE = 0x58,
	PK_BINGET = 0x68,
	PK_LONG_BINGET = 0x6a,
	PK_TUPLE = 0x74,
	PK_PROTO = 0x80,
	PK_LONG1 = 0x8a,
	PK_SHORT_BINUNICODE = 0x8c,
	PK_BINUNICODE8 = 0x8d,
	PK_BINBYTES8 = 0x8e,
	PK_TUPLE1 = 0x85,
	PK_MEMOIZE = 0x94,
	PK_FRAME = 0x95,
};

/* CBOR major types (RFC 8949 §3.1) and the simple value null. */
enum {
	CB_UINT = 0,
	CB_NINT = 1,
	CB_BYTES = 2,
	CB_TEXT = 3,
	CB_ARRAY = 4,
	CB_NULL = 0xf6,
};

/* Where a block's multimodal keys come from: explicit keys, or vLLM's scan of a request. */
struct vh_mm_src {
	const struct kvdex_vllm_mm_key *keys;
	size_t n_keys;
	const struct kvdex_vllm_mm_item *items;
	size_t n_items;
	size_t first; /* scan start (vLLM's start_mm_idx) */
	uint64_t start;
	uint64_t end;
};

struct vh_mm_cursor {
	size_t idx;
	bool done;
};

/* The value to serialize: a root (seed != NULL) or a block. */
struct vh_value {
	const uint8_t *seed;
	size_t seed_len;
	const uint8_t *parent;
	size_t parent_len;
	const uint32_t *tokens;
	size_t n_tokens;
	const struct kvdex_vllm_block_keys *keys; /* lora, salt, embeds; mm via mm_src */
	struct vh_mm_src mm;
	size_t n_mm;
	size_t n_extra;
};

struct vh_stream {
	bool sha;
	SHA256_CTX sha_ctx;
	XXH3_state_t xxh;
};

struct vh_sink {
	uint8_t *buf;
	size_t cap;
	size_t len;
	bool overflow;		  /* first pass outgrew buf: only count from here on */
	struct vh_stream *stream; /* second pass: flush buf here when full */
	int err;
	/* pickle framing */
	bool framing;
	bool frame_open;
	size_t frame_len;
	size_t frame_hdr;
	unsigned int n_frames;
	unsigned int next_frame;
	uint32_t frames[VH_MAX_FRAMES];
	/* pickle memo */
	uint32_t memo_next;
	bool singletons_used;
	uint64_t singleton_seen[(VH_SINGLETONS + 63) / 64];
	uint32_t singleton_memo[VH_SINGLETONS];
};

/* ---- sink: buffer, stream, pickle frames ---- */

static void
sink_init(struct vh_sink *s, uint8_t *buf, size_t cap)
{
	s->buf = buf;
	s->cap = cap;
	s->len = 0;
	s->overflow = false;
	s->stream = NULL;
	s->err = 0;
	s->framing = false;
	s->frame_open = false;
	s->frame_len = 0;
	s->frame_hdr = 0;
	s->n_frames = 0;
	s->next_frame = 0;
	s->memo_next = 0;
	s->singletons_used = false;
}

/* Rewind for the streaming pass, keeping the frame lengths the first pass recorded. */
static void
sink_rewind(struct vh_sink *s, struct vh_stream *st)
{
	unsigned int n_frames = s->n_frames;

	sink_init(s, s->buf, s->cap);
	s->n_frames = n_frames;
	s->stream = st;
}

static void
stream_update(struct vh_stream *st, const uint8_t *p, size_t n)
{
	if (st->sha) {
		SHA256_Update(&st->sha_ctx, p, n);
	} else {
		XXH3_128bits_update(&st->xxh, p, n);
	}
}

static void
sink_raw_slow(struct vh_sink *s, const uint8_t *p, size_t n)
{
	if (!s->stream) {
		s->overflow = true;
		return;
	}
	while (n > 0) {
		size_t room = s->cap - s->len;
		size_t chunk = n < room ? n : room;

		memcpy(s->buf + s->len, p, chunk);
		s->len += chunk;
		p += chunk;
		n -= chunk;
		if (s->len == s->cap) {
			stream_update(s->stream, s->buf, s->len);
			s->len = 0;
		}
	}
}

static inline void
sink_raw(struct vh_sink *s, const void *p, size_t n)
{
	if (!s->overflow && s->len + n <= s->cap) {
		memcpy(s->buf + s->len, p, n);
		s->len += n;
		return;
	}
	sink_raw_slow(s, p, n);
}

static void
put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

/*
 * Open a frame. The first pass writes a placeholder that sink_commit() patches; the
 * streaming pass already knows the length from the first pass.
 */
static void
sink_frame_open(struct vh_sink *s)
{
	uint8_t hdr[VH_FRAME_HDR] = {PK_FRAME};

	s->frame_open = true;
	s->frame_len = 0;
	if (!s->stream) {
		s->frame_hdr = s->len;
		sink_raw(s, hdr, sizeof(hdr));
		return;
	}
	assert(s->next_frame < s->n_frames);
	if (s->frames[s->next_frame] >= VH_FRAME_MIN) {
		put_le64(hdr + 1, s->frames[s->next_frame]);
		sink_raw(s, hdr, sizeof(hdr));
	}
	s->next_frame++;
}

static void
sink_commit(struct vh_sink *s)
{
	uint8_t *hdr;

	if (!s->frame_open) {
		return;
	}
	s->frame_open = false;
	if (s->stream) {
		return;
	}
	if (s->n_frames == VH_MAX_FRAMES) {
		s->err = -E2BIG;
		return;
	}
	s->frames[s->n_frames++] = (uint32_t)s->frame_len;
	if (s->overflow) {
		return;
	}
	hdr = s->buf + s->frame_hdr;
	if (s->frame_len >= VH_FRAME_MIN) {
		hdr[0] = PK_FRAME;
		put_le64(hdr + 1, s->frame_len);
	} else {
		/* _Pickler_CommitFrame drops the header of a tiny frame. */
		memmove(hdr, hdr + VH_FRAME_HDR, s->frame_len);
		s->len -= VH_FRAME_HDR;
	}
}

static inline void
sink_put(struct vh_sink *s, const void *p, size_t n)
{
	if (s->framing && !s->frame_open) {
		sink_frame_open(s);
	}
	if (s->frame_open) {
		s->frame_len += n;
	}
	sink_raw(s, p, n);
}

static inline void
sink_byte(struct vh_sink *s, uint8_t b)
{
	sink_put(s, &b, 1);
}

/*
 * Room for up to @max bytes written straight into the buffer (then sink_advance()), or
 * NULL if the caller must go through sink_put(): the buffer is nearly full, overflowed,
 * or a frame still has to be opened.
 */
static inline uint8_t *
sink_reserve(struct vh_sink *s, size_t max)
{
	if (s->overflow || s->cap - s->len < max || (s->framing && !s->frame_open)) {
		return NULL;
	}
	return s->buf + s->len;
}

static inline void
sink_advance(struct vh_sink *s, size_t n)
{
	s->len += n;
	if (s->frame_open) {
		s->frame_len += n;
	}
}

/* _Pickler_OpcodeBoundary: CPython checks at the start of saving every object. */
static inline void
sink_boundary(struct vh_sink *s)
{
	if (s->frame_open && s->frame_len >= VH_FRAME_TARGET) {
		sink_commit(s);
	}
}

/* _Pickler_write_bytes: a payload of >= 64 KiB goes out unframed, header included. */
static void
sink_put_payload(struct vh_sink *s, const uint8_t *hdr, size_t hdr_len, const void *p, size_t n)
{
	bool framing = s->framing;

	if (framing && n >= VH_FRAME_TARGET) {
		sink_commit(s);
		s->framing = false;
	}
	sink_put(s, hdr, hdr_len);
	sink_put(s, p, n);
	s->framing = framing;
}

/* ---- pickle protocol 5 ---- */

static void
pk_memoize(struct vh_sink *s)
{
	sink_byte(s, PK_MEMOIZE);
	s->memo_next++;
}

static void
pk_int(struct vh_sink *s, int64_t v)
{
	uint8_t b[10];
	size_t n;

	sink_boundary(s);
	if (v >= 0 && v <= 0xff) {
		b[0] = PK_BININT1;
		b[1] = (uint8_t)v;
		sink_put(s, b, 2);
	} else if (v >= 0 && v <= 0xffff) {
		b[0] = PK_BININT2;
		b[1] = (uint8_t)v;
		b[2] = (uint8_t)(v >> 8);
		sink_put(s, b, 3);
	} else if (v >= INT32_MIN && v <= INT32_MAX) {
		b[0] = PK_BININT;
		for (int i = 0; i < 4; i++) {
			b[1 + i] = (uint8_t)((uint64_t)v >> (8 * i));
		}
		sink_put(s, b, 5);
	} else {
		/* encode_long(): minimal two's complement, little-endian. */
		put_le64(b + 2, (uint64_t)v);
		n = 8;
		while (n > 1 && ((b[1 + n] == 0x00 && !(b[n] & 0x80)) ||
				 (b[1 + n] == 0xff && (b[n] & 0x80)))) {
			n--;
		}
		b[0] = PK_LONG1;
		b[1] = (uint8_t)n;
		sink_put(s, b, 2 + n);
	}
}

/*
 * pk_int() of a token id straight into the buffer, without branches on its size class
 * (token ids are random, so those branches mispredict). Stores 4 bytes after the
 * opcode even for BININT1/BININT2: the caller reserves slack and later items
 * overwrite the excess. Returns the length.
 */
static inline size_t
pk_token(uint8_t *p, uint32_t v)
{
	unsigned int c1 = v > 0xff, c2 = v > 0xffff;
	uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	if (v > INT32_MAX) {
		/* LONG1 of 5 bytes: a 0 byte keeps it positive. */
		p[0] = PK_LONG1;
		p[1] = 5;
		memcpy(p + 2, le, 4);
		p[6] = 0;
		return 7;
	}
	/* BININT1 (4b), BININT2 (4d) or BININT (4a); arithmetic, not tables, keeps the
	 * chain through the returned length short. */
	p[0] = (uint8_t)(PK_BININT1 + 2 * c1 - 3 * c2);
	memcpy(p + 1, le, 4);
	return 2 + c1 + 2 * c2;
}

static void
pk_get(struct vh_sink *s, uint32_t idx)
{
	uint8_t b[5];

	if (idx < 256) {
		b[0] = PK_BINGET;
		b[1] = (uint8_t)idx;
		sink_put(s, b, 2);
		return;
	}
	b[0] = PK_LONG_BINGET;
	for (int i = 0; i < 4; i++) {
		b[1 + i] = (uint8_t)(idx >> (8 * i));
	}
	sink_put(s, b, 5);
}

/*
 * The CPython singleton a UTF-8 string decodes to, if any: 0 for "", 1 + code point
 * for one code point below U+0100 (one ASCII byte, or C2/C3 and a continuation byte).
 */
static int
pk_singleton(const uint8_t *p, size_t n)
{
	if (n == 0) {
		return 0;
	}
	if (n == 1 && p[0] < 0x80) {
		return 1 + p[0];
	}
	if (n == 2 && (p[0] == 0xc2 || p[0] == 0xc3) && (p[1] & 0xc0) == 0x80) {
		return 1 + (((p[0] & 0x1f) << 6) | (p[1] & 0x3f));
	}
	return -1;
}

static void
pk_header(struct vh_sink *s, uint8_t op1, uint8_t op4, uint8_t op8, const void *p, size_t n)
{
	uint8_t hdr[9];
	size_t hdr_len;

	if (n <= 0xff) {
		hdr[0] = op1;
		hdr[1] = (uint8_t)n;
		hdr_len = 2;
	} else if ((uint64_t)n <= 0xffffffffu) {
		hdr[0] = op4;
		for (int i = 0; i < 4; i++) {
			hdr[1 + i] = (uint8_t)(n >> (8 * i));
		}
		hdr_len = 5;
	} else {
		hdr[0] = op8;
		put_le64(hdr + 1, n);
		hdr_len = 9;
	}
	sink_put_payload(s, hdr, hdr_len, p, n);
}

static void
pk_str(struct vh_sink *s, const void *p, size_t n)
{
	int single = pk_singleton(p, n);
	uint64_t bit;

	sink_boundary(s);
	if (single >= 0) {
		if (!s->singletons_used) {
			memset(s->singleton_seen, 0, sizeof(s->singleton_seen));
			s->singletons_used = true;
		}
		bit = 1ull << (single % 64);
		if (s->singleton_seen[single / 64] & bit) {
			pk_get(s, s->singleton_memo[single]);
			return;
		}
		s->singleton_seen[single / 64] |= bit;
		s->singleton_memo[single] = s->memo_next;
	}
	pk_header(s, PK_SHORT_BINUNICODE, PK_BINUNICODE, PK_BINUNICODE8, p, n);
	pk_memoize(s);
}

static void
pk_bytes(struct vh_sink *s, const void *p, size_t n)
{
	sink_boundary(s);
	pk_header(s, PK_SHORT_BINBYTES, PK_BINBYTES, PK_BINBYTES8, p, n);
	pk_memoize(s);
}

static void
pk_tuple_begin(struct vh_sink *s, size_t n)
{
	sink_boundary(s);
	if (n == 0) {
		sink_byte(s, PK_EMPTY_TUPLE);
	} else if (n > 3) {
		sink_byte(s, PK_MARK);
	}
}

static void
pk_tuple_end(struct vh_sink *s, size_t n)
{
	if (n == 0) {
		return; /* EMPTY_TUPLE is not memoized */
	}
	sink_byte(s, n <= 3 ? (uint8_t)(PK_TUPLE1 + n - 1) : PK_TUPLE);
	pk_memoize(s);
}

static void
pk_none(struct vh_sink *s)
{
	sink_boundary(s);
	sink_byte(s, PK_NONE);
}

/* ---- canonical CBOR ---- */

static void
cb_head(struct vh_sink *s, unsigned int major, uint64_t v)
{
	uint8_t b[9];
	size_t n;

	if (v < 24) {
		b[0] = (uint8_t)(major << 5 | v);
		n = 0;
	} else if (v <= 0xff) {
		b[0] = (uint8_t)(major << 5 | 24);
		n = 1;
	} else if (v <= 0xffff) {
		b[0] = (uint8_t)(major << 5 | 25);
		n = 2;
	} else if (v <= 0xffffffffu) {
		b[0] = (uint8_t)(major << 5 | 26);
		n = 4;
	} else {
		b[0] = (uint8_t)(major << 5 | 27);
		n = 8;
	}
	for (size_t i = 0; i < n; i++) {
		b[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	}
	sink_put(s, b, 1 + n);
}

static void
cb_int(struct vh_sink *s, int64_t v)
{
	if (v >= 0) {
		cb_head(s, CB_UINT, (uint64_t)v);
	} else {
		cb_head(s, CB_NINT, ~(uint64_t)v); /* -1 - v */
	}
}

static void
cb_string(struct vh_sink *s, unsigned int major, const void *p, size_t n)
{
	cb_head(s, major, n);
	sink_put(s, p, n);
}

/*
 * cb_head(CB_UINT, v) of a token id straight into the buffer, without branches on its
 * size class. Always stores 4 payload bytes (see pk_token()). Returns the length.
 */
static inline size_t
cb_token(uint8_t *p, uint32_t v)
{
	unsigned int c0 = v >= 24, c1 = v > 0xff, c2 = v > 0xffff;
	unsigned int plen = c0 + c1 + 2 * c2; /* 0, 1, 2 or 4 payload bytes */
	/* Left-align the payload, then store it big-endian. */
	uint32_t w = (uint32_t)((uint64_t)v << (8 * (4 - plen)));
	uint8_t be[4] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w};

	/* Major type 0: the value itself below 24, else additional info 24, 25 or 26. */
	p[0] = c0 ? (uint8_t)(23 + c0 + c1 + c2) : (uint8_t)v;
	memcpy(p + 1, be, 4);
	return 1 + plen;
}

/* ---- values ---- */

/*
 * One step of vLLM's _gen_mm_extra_hash_keys() scan over the request's items (sorted
 * by offset), or the next explicit key. Returns false when the block has no more keys.
 */
static bool
mm_next(const struct vh_mm_src *src, struct vh_mm_cursor *c, const char **id, size_t *id_len,
	int64_t *off)
{
	const struct kvdex_vllm_mm_item *it;

	if (src->keys) {
		if (c->idx >= src->n_keys) {
			return false;
		}
		*id = src->keys[c->idx].identifier;
		*id_len = src->keys[c->idx].identifier_len;
		*off = src->keys[c->idx].offset;
		c->idx++;
		return true;
	}
	while (!c->done && c->idx < src->n_items) {
		it = &src->items[c->idx];
		if (src->end <= it->offset) {
			c->done = true; /* the block has not reached this item */
			break;
		}
		if (src->start >= it->offset + it->length) {
			c->idx++; /* the block is past this item */
			continue;
		}
		/* Overlap. Move on only if the item ends in this block. */
		if (src->end >= it->offset + it->length) {
			c->idx++;
		} else {
			c->done = true;
		}
		*id = it->identifier;
		*id_len = it->identifier_len;
		*off = (int64_t)(it->offset - src->start);
		return true;
	}
	return false;
}

/* Count the block's mm keys; *next receives the scan position for the next block. */
static size_t
mm_count(const struct vh_mm_src *src, size_t *next)
{
	struct vh_mm_cursor c = {.idx = src->first};
	const char *id;
	size_t id_len, n = 0;
	int64_t off;

	while (mm_next(src, &c, &id, &id_len, &off)) {
		n++;
	}
	if (next) {
		*next = c.idx;
	}
	return n;
}

static bool
has_salt(const struct kvdex_vllm_block_keys *k)
{
	return k->cache_salt && k->cache_salt_len > 0;
}

static void
value_count_extra(struct vh_value *v)
{
	const struct kvdex_vllm_block_keys *k = v->keys;

	v->n_extra = v->n_mm;
	if (k) {
		v->n_extra += (k->lora_name != NULL) + has_salt(k) + (k->embeds_digest != NULL);
	}
}

static void
pk_extra(struct vh_sink *s, const struct vh_value *v)
{
	const struct kvdex_vllm_block_keys *k = v->keys;
	struct vh_mm_cursor c = {.idx = v->mm.first};
	const char *id;
	size_t id_len;
	int64_t off;

	if (v->n_extra == 0) {
		pk_none(s);
		return;
	}
	pk_tuple_begin(s, v->n_extra);
	if (k && k->lora_name) {
		pk_str(s, k->lora_name, k->lora_name_len);
	}
	while (mm_next(&v->mm, &c, &id, &id_len, &off)) {
		pk_tuple_begin(s, 2);
		pk_str(s, id, id_len);
		pk_int(s, off);
		pk_tuple_end(s, 2);
	}
	if (k && has_salt(k)) {
		pk_str(s, k->cache_salt, k->cache_salt_len);
	}
	if (k && k->embeds_digest) {
		pk_bytes(s, k->embeds_digest, KVDEX_VLLM_EMBEDS_DIGEST_LEN);
	}
	pk_tuple_end(s, v->n_extra);
}

/*
 * The usual block head in one go: PROTO, a FRAME placeholder, the parent and a token
 * tuple of 4 or more ids, written directly into a fresh first-pass buffer. The frame
 * stays far below VH_FRAME_TARGET, so no commit check can fire on the way. Returns
 * false (having written nothing) when pk_block_head() must do it.
 */
static bool
pk_block_head_fast(struct vh_sink *s, const struct vh_value *v)
{
	size_t n = v->n_tokens, head = 2 + VH_FRAME_HDR;
	uint8_t *p, *q;

	if (s->len || s->stream || n < 4 || v->parent_len > 0xff ||
	    v->parent_len + 7 * n + 64 >= VH_FRAME_TARGET) {
		return false;
	}
	p = sink_reserve(s, head + 2 + v->parent_len + 1 + 1 + 7 * n + 2 + 8);
	if (!p) {
		return false;
	}
	q = p;
	*q++ = PK_PROTO;
	*q++ = 5;
	q[0] = PK_FRAME; /* the length is patched by sink_commit() */
	q += VH_FRAME_HDR;
	*q++ = PK_SHORT_BINBYTES;
	*q++ = (uint8_t)v->parent_len;
	memcpy(q, v->parent, v->parent_len);
	q += v->parent_len;
	*q++ = PK_MEMOIZE;
	*q++ = PK_MARK;
	for (size_t i = 0; i < n; i++) {
		q += pk_token(q, v->tokens[i]);
	}
	*q++ = PK_TUPLE;
	*q++ = PK_MEMOIZE;
	s->len = (size_t)(q - p);
	s->framing = true;
	s->frame_open = true;
	s->frame_hdr = 2;
	s->frame_len = s->len - head;
	s->memo_next = 2; /* the parent, the token tuple */
	return true;
}

static void
pk_block_head(struct vh_sink *s, const struct vh_value *v)
{
	static const uint8_t proto[2] = {PK_PROTO, 5};

	sink_put(s, proto, sizeof(proto));
	s->framing = true;
	pk_tuple_begin(s, 3);
	pk_bytes(s, v->parent, v->parent_len);
	pk_tuple_begin(s, v->n_tokens);
	for (size_t i = 0; i < v->n_tokens; i++) {
		pk_int(s, v->tokens[i]);
	}
	pk_tuple_end(s, v->n_tokens);
}

static void
pk_value(struct vh_sink *s, const struct vh_value *v)
{
	static const uint8_t proto[2] = {PK_PROTO, 5};

	if (v->seed) {
		sink_put(s, proto, sizeof(proto));
		s->framing = true;
		pk_str(s, v->seed, v->seed_len);
	} else {
		if (!pk_block_head_fast(s, v)) {
			pk_block_head(s, v);
		}
		pk_extra(s, v);
		pk_tuple_end(s, 3);
	}
	sink_byte(s, PK_STOP);
	sink_commit(s);
}

static void
cb_extra(struct vh_sink *s, const struct vh_value *v)
{
	const struct kvdex_vllm_block_keys *k = v->keys;
	struct vh_mm_cursor c = {.idx = v->mm.first};
	const char *id;
	size_t id_len;
	int64_t off;

	if (v->n_extra == 0) {
		sink_byte(s, CB_NULL);
		return;
	}
	cb_head(s, CB_ARRAY, v->n_extra);
	if (k && k->lora_name) {
		cb_string(s, CB_TEXT, k->lora_name, k->lora_name_len);
	}
	while (mm_next(&v->mm, &c, &id, &id_len, &off)) {
		cb_head(s, CB_ARRAY, 2);
		cb_string(s, CB_TEXT, id, id_len);
		cb_int(s, off);
	}
	if (k && has_salt(k)) {
		cb_string(s, CB_TEXT, k->cache_salt, k->cache_salt_len);
	}
	if (k && k->embeds_digest) {
		cb_string(s, CB_BYTES, k->embeds_digest, KVDEX_VLLM_EMBEDS_DIGEST_LEN);
	}
}

/* The usual block head in one go, as pk_block_head_fast(); false if it does not fit. */
static bool
cb_block_head_fast(struct vh_sink *s, const struct vh_value *v)
{
	size_t n = v->n_tokens, plen = v->parent_len;
	uint8_t *p, *q;

	if (plen > 0xff || n > 0xffff) {
		return false;
	}
	p = sink_reserve(s, 1 + 2 + plen + 3 + 5 * n + 8);
	if (!p) {
		return false;
	}
	q = p;
	*q++ = CB_ARRAY << 5 | 3;
	if (plen < 24) {
		*q++ = (uint8_t)(CB_BYTES << 5 | plen);
	} else {
		*q++ = CB_BYTES << 5 | 24;
		*q++ = (uint8_t)plen;
	}
	memcpy(q, v->parent, plen);
	q += plen;
	if (n < 24) {
		*q++ = (uint8_t)(CB_ARRAY << 5 | n);
	} else if (n <= 0xff) {
		*q++ = CB_ARRAY << 5 | 24;
		*q++ = (uint8_t)n;
	} else {
		*q++ = CB_ARRAY << 5 | 25;
		*q++ = (uint8_t)(n >> 8);
		*q++ = (uint8_t)n;
	}
	for (size_t i = 0; i < n; i++) {
		q += cb_token(q, v->tokens[i]);
	}
	sink_advance(s, (size_t)(q - p));
	return true;
}

static void
cb_value(struct vh_sink *s, const struct vh_value *v)
{
	if (v->seed) {
		cb_string(s, CB_TEXT, v->seed, v->seed_len);
		return;
	}
	if (!cb_block_head_fast(s, v)) {
		cb_head(s, CB_ARRAY, 3);
		cb_string(s, CB_BYTES, v->parent, v->parent_len);
		cb_head(s, CB_ARRAY, v->n_tokens);
		for (size_t i = 0; i < v->n_tokens; i++) {
			cb_head(s, CB_UINT, v->tokens[i]);
		}
	}
	cb_extra(s, v);
}

static bool
algo_is_pickle(enum kvdex_vllm_hash_algo algo)
{
	return algo == KVDEX_VLLM_SHA256 || algo == KVDEX_VLLM_XXHASH;
}

static bool
algo_is_sha(enum kvdex_vllm_hash_algo algo)
{
	return algo == KVDEX_VLLM_SHA256 || algo == KVDEX_VLLM_SHA256_CBOR;
}

static void
value_encode(struct vh_sink *s, enum kvdex_vllm_hash_algo algo, const struct vh_value *v)
{
	if (algo_is_pickle(algo)) {
		pk_value(s, v);
	} else {
		cb_value(s, v);
	}
}

/* ---- digests ---- */

static void
xxh_canonical(XXH128_hash_t x, uint8_t *out)
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, x); /* high 64 bits first, big-endian */
	memcpy(out, c.digest, KVDEX_VLLM_XXH3_128_LEN);
}

static void
digest_oneshot(enum kvdex_vllm_hash_algo algo, const uint8_t *p, size_t n, uint8_t *out)
{
	SHA256_CTX c;

	if (algo_is_sha(algo)) {
		SHA256_Init(&c);
		SHA256_Update(&c, p, n);
		SHA256_Final(out, &c);
	} else {
		xxh_canonical(XXH3_128bits(p, n), out);
	}
}

/* Second pass for values larger than the stage buffer; kept out of the hot path. */
static __attribute__((noinline)) int
digest_streamed(enum kvdex_vllm_hash_algo algo, struct vh_sink *s, const struct vh_value *v,
		uint8_t *out)
{
	struct vh_stream st;

	st.sha = algo_is_sha(algo);
	if (st.sha) {
		SHA256_Init(&st.sha_ctx);
	} else if (XXH3_128bits_reset(&st.xxh) != XXH_OK) {
		return -EINVAL;
	}
	sink_rewind(s, &st);
	value_encode(s, algo, v);
	assert(!s->err && s->next_frame == s->n_frames);
	stream_update(&st, s->buf, s->len);
	if (st.sha) {
		SHA256_Final(out, &st.sha_ctx);
	} else {
		xxh_canonical(XXH3_128bits_digest(&st.xxh), out);
	}
	return 0;
}

static int
value_digest(enum kvdex_vllm_hash_algo algo, const struct vh_value *v, uint8_t *out)
{
	uint8_t buf[VH_STAGE];
	struct vh_sink s;

	sink_init(&s, buf, sizeof(buf));
	value_encode(&s, algo, v);
	if (s.err) {
		return s.err;
	}
	if (s.overflow) {
		return digest_streamed(algo, &s, v, out);
	}
	digest_oneshot(algo, buf, s.len, out);
	return 0;
}

/* ---- API ---- */

static const char *const algo_names[] = {
	[KVDEX_VLLM_SHA256] = "sha256",
	[KVDEX_VLLM_SHA256_CBOR] = "sha256_cbor",
	[KVDEX_VLLM_XXHASH] = "xxhash",
	[KVDEX_VLLM_XXHASH_CBOR] = "xxhash_cbor",
};

#define ALGO_COUNT (sizeof(algo_names) / sizeof(algo_names[0]))

static bool
algo_valid(enum kvdex_vllm_hash_algo algo)
{
	return (unsigned int)algo < ALGO_COUNT;
}

int
kvdex_vllm_hash_algo_parse(const char *name, enum kvdex_vllm_hash_algo *out)
{
	if (!name) {
		return -EINVAL;
	}
	for (unsigned int i = 0; i < ALGO_COUNT; i++) {
		if (strcmp(name, algo_names[i]) == 0) {
			*out = (enum kvdex_vllm_hash_algo)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
kvdex_vllm_hash_algo_name(enum kvdex_vllm_hash_algo algo)
{
	return algo_valid(algo) ? algo_names[algo] : NULL;
}

size_t
kvdex_vllm_hash_digest_len(enum kvdex_vllm_hash_algo algo)
{
	if (!algo_valid(algo)) {
		return 0;
	}
	return algo_is_sha(algo) ? KVDEX_VLLM_SHA256_LEN : KVDEX_VLLM_XXH3_128_LEN;
}

int
kvdex_vllm_hasher_init(struct kvdex_vllm_hasher *h, enum kvdex_vllm_hash_algo algo,
		       const char *seed, size_t seed_len)
{
	struct vh_value v = {.seed = (const uint8_t *)seed, .seed_len = seed_len};
	uint8_t root[KVDEX_VLLM_DIGEST_MAX];
	int rc;

	assert(h);
	if (!algo_valid(algo) || (!seed && seed_len > 0)) {
		return -EINVAL;
	}
	if (!seed) {
		v.seed = (const uint8_t *)""; /* marks the value as a root */
	}
	rc = value_digest(algo, &v, root);
	if (rc) {
		return rc;
	}
	return kvdex_vllm_hasher_init_root(h, algo, root, kvdex_vllm_hash_digest_len(algo));
}

int
kvdex_vllm_hasher_init_root(struct kvdex_vllm_hasher *h, enum kvdex_vllm_hash_algo algo,
			    const uint8_t *root, size_t root_len)
{
	assert(h);
	if (!algo_valid(algo) || !root || root_len == 0 || root_len > KVDEX_VLLM_ROOT_MAX) {
		return -EINVAL;
	}
	memset(h, 0, sizeof(*h));
	h->algo = algo;
	h->digest_len = (uint32_t)kvdex_vllm_hash_digest_len(algo);
	h->root_len = (uint32_t)root_len;
	memcpy(h->root, root, root_len);
	return 0;
}

static bool
keys_valid(const struct kvdex_vllm_block_keys *k)
{
	if (!k) {
		return true;
	}
	if ((!k->lora_name && k->lora_name_len) || (!k->cache_salt && k->cache_salt_len) ||
	    (!k->mm && k->n_mm)) {
		return false;
	}
	for (size_t i = 0; i < k->n_mm; i++) {
		if (!k->mm[i].identifier && k->mm[i].identifier_len) {
			return false;
		}
	}
	return true;
}

/* The Python value (parent or root, tuple(tokens), extra_keys) of one block. */
static int
block_value(struct vh_value *v, const struct kvdex_vllm_hasher *h, const uint8_t *parent,
	    size_t parent_len, const uint32_t *tokens, size_t n_tokens,
	    const struct kvdex_vllm_block_keys *keys)
{
	if ((!parent && parent_len) || (!tokens && n_tokens) || !keys_valid(keys) ||
	    !algo_valid(h->algo)) {
		return -EINVAL;
	}
	memset(v, 0, sizeof(*v));
	if (parent_len == 0) {
		parent = h->root;
		parent_len = h->root_len;
	}
	v->parent = parent;
	v->parent_len = parent_len;
	v->tokens = tokens;
	v->n_tokens = n_tokens;
	v->keys = keys;
	if (keys) {
		v->mm.keys = keys->mm;
		v->mm.n_keys = keys->n_mm;
		v->n_mm = keys->n_mm;
	}
	value_count_extra(v);
	return 0;
}

int
kvdex_vllm_hash_block(const struct kvdex_vllm_hasher *h, const uint8_t *parent, size_t parent_len,
		      const uint32_t *tokens, size_t n_tokens,
		      const struct kvdex_vllm_block_keys *keys, uint8_t *out)
{
	struct vh_value v;
	int rc;

	assert(h && out);
	rc = block_value(&v, h, parent, parent_len, tokens, n_tokens, keys);
	if (rc) {
		return rc;
	}
	return value_digest(h->algo, &v, out);
}

static bool
request_valid(const struct kvdex_vllm_request *req)
{
	if ((!req->tokens && req->n_tokens) || (!req->lora_name && req->lora_name_len) ||
	    (!req->cache_salt && req->cache_salt_len) || (!req->mm && req->n_mm)) {
		return false;
	}
	for (size_t i = 0; i < req->n_mm; i++) {
		if (!req->mm[i].identifier && req->mm[i].identifier_len) {
			return false;
		}
	}
	return true;
}

/*
 * Hash block i of the request: extra keys as generate_block_hash_extra_keys() builds
 * them. *mm_idx carries vLLM's curr_mm_idx from block to block.
 */
static int
chain_block(const struct kvdex_vllm_hasher *h, const struct kvdex_vllm_request *req, size_t hbs,
	    size_t i, const uint8_t *parent, size_t parent_len, size_t *mm_idx, uint8_t *out)
{
	struct kvdex_vllm_block_keys keys = {
		.lora_name = req->lora_name,
		.lora_name_len = req->lora_name_len,
	};
	struct vh_value v = {
		.parent = parent,
		.parent_len = parent_len,
		.tokens = req->tokens + i * hbs,
		.n_tokens = hbs,
		.keys = &keys,
		.mm = {.items = req->mm, .n_items = req->n_mm, .first = *mm_idx},
	};

	v.mm.start = (uint64_t)i * hbs;
	v.mm.end = v.mm.start + hbs;
	if (i == 0) {
		keys.cache_salt = req->cache_salt;
		keys.cache_salt_len = req->cache_salt_len;
	}
	if (req->embeds_digests) {
		keys.embeds_digest = req->embeds_digests + i * KVDEX_VLLM_EMBEDS_DIGEST_LEN;
	}
	v.n_mm = mm_count(&v.mm, mm_idx);
	value_count_extra(&v);
	return value_digest(h->algo, &v, out);
}

ssize_t
kvdex_vllm_hash_chain(const struct kvdex_vllm_hasher *h, const struct kvdex_vllm_request *req,
		      size_t hash_block_size, size_t block_size, uint8_t *out, uint64_t *out_u64,
		      size_t max_blocks)
{
	uint8_t digest[KVDEX_VLLM_DIGEST_MAX];
	size_t k, n_blocks, mm_idx = 0;
	int rc;

	assert(h && req);
	if (hash_block_size == 0 || block_size == 0 || block_size % hash_block_size ||
	    !request_valid(req) || !algo_valid(h->algo)) {
		return -EINVAL;
	}
	k = block_size / hash_block_size;
	n_blocks = req->n_tokens / block_size;
	if (n_blocks > max_blocks) {
		n_blocks = max_blocks;
	}
	for (size_t i = 0; i < n_blocks * k; i++) {
		/* The first block's parent is the root; later ones the previous digest. */
		rc = chain_block(h, req, hash_block_size, i, i ? digest : h->root,
				 i ? h->digest_len : h->root_len, &mm_idx, digest);
		if (rc) {
			return rc;
		}
		if ((i + 1) % k) {
			continue;
		}
		if (out) {
			memcpy(out + (i / k) * h->digest_len, digest, h->digest_len);
		}
		if (out_u64) {
			out_u64[i / k] = kvdex_vllm_hash_u64(digest, h->digest_len);
		}
	}
	return (ssize_t)n_blocks;
}

uint64_t
kvdex_vllm_hash_u64(const uint8_t *digest, size_t len)
{
	uint64_t v = 0;

	for (size_t i = len > 8 ? len - 8 : 0; i < len; i++) {
		v = v << 8 | digest[i];
	}
	return v;
}

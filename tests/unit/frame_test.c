/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Framing (common/frame.h): the 12-byte little-endian header, its decoder's
 * three outcomes (need more, bad, too large) and the message type table.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/frame.h"

TestSuite(frame, .timeout = 10);

struct type_name {
	uint16_t type;
	const char *name;
};

static const struct type_name known[] = {
	{KVDEX_MSG_ERROR, "ERROR"},
	{KVDEX_MSG_HELLO, "HELLO"},
	{KVDEX_MSG_HELLO_REPLY, "HELLO_REPLY"},
	{KVDEX_MSG_REGISTER_NS, "REGISTER_NS"},
	{KVDEX_MSG_REGISTER_NS_REPLY, "REGISTER_NS_REPLY"},
	{KVDEX_MSG_REGISTER_WORKER, "REGISTER_WORKER"},
	{KVDEX_MSG_REGISTER_WORKER_REPLY, "REGISTER_WORKER_REPLY"},
	{KVDEX_MSG_PUBLISH, "PUBLISH"},
	{KVDEX_MSG_PUBLISH_REPLY, "PUBLISH_REPLY"},
	{KVDEX_MSG_WORKER_LOAD, "WORKER_LOAD"},
	{KVDEX_MSG_WORKER_LOAD_REPLY, "WORKER_LOAD_REPLY"},
	{KVDEX_MSG_STATS, "STATS"},
	{KVDEX_MSG_STATS_REPLY, "STATS_REPLY"},
	{KVDEX_MSG_LIST_WORKERS, "LIST_WORKERS"},
	{KVDEX_MSG_LIST_WORKERS_REPLY, "LIST_WORKERS_REPLY"},
	{KVDEX_MSG_READ, "READ"},
	{KVDEX_MSG_READ_REPLY, "READ_REPLY"},
};
#define NKNOWN (sizeof(known) / sizeof(known[0]))

/* 1. The encoding is little-endian, magic first ("DK" on the wire). */
Test(frame, encode_bytes)
{
	uint8_t b[KVDEX_FRAME_HDR_SIZE];
	static const uint8_t want[] = {0x44, 0x4b, 0x08, 0x00, 0x04, 0x03,
				       0x02, 0x01, 0xdd, 0xcc, 0xbb, 0xaa};

	kvdex_frame_hdr_encode(b, KVDEX_MSG_PUBLISH, 0x01020304u, 0xaabbccddu);
	cr_assert(eq(i32, memcmp(b, want, sizeof(want)), 0));
	cr_assert(eq(u32, KVDEX_FRAME_HDR_SIZE, 12));
	cr_assert(eq(u32, KVDEX_FRAME_MAGIC, 0x4b44));
	cr_assert(eq(u32, KVDEX_PROTOCOL_VERSION, 1));
}

/* 2. Encode then decode gives back every field, for every known type. */
Test(frame, roundtrip_all_types)
{
	static const uint32_t lens[] = {0, 1, 12, 4096, KVDEX_MAX_MSG_DEFAULT};
	static const uint32_t ids[] = {0, 1, 0x7fffffff, UINT32_MAX};

	for (size_t t = 0; t < NKNOWN; t++) {
		for (size_t l = 0; l < 5; l++) {
			for (size_t i = 0; i < 4; i++) {
				uint8_t b[KVDEX_FRAME_HDR_SIZE];
				struct kvdex_frame_hdr h;

				kvdex_frame_hdr_encode(b, known[t].type, lens[l], ids[i]);
				cr_assert(eq(i32,
					     kvdex_frame_hdr_decode(b, sizeof(b),
								    KVDEX_MAX_MSG_DEFAULT, &h),
					     1));
				cr_assert(eq(u32, h.magic, KVDEX_FRAME_MAGIC));
				cr_assert(eq(u32, h.type, known[t].type));
				cr_assert(eq(u32, h.len, lens[l]));
				cr_assert(eq(u32, h.req_id, ids[i]));
			}
		}
	}
}

/* 3. Fewer than 12 bytes: need more (0), whatever the bytes are. */
Test(frame, need_more)
{
	uint8_t b[KVDEX_FRAME_HDR_SIZE + 4];
	struct kvdex_frame_hdr h;

	kvdex_frame_hdr_encode(b, KVDEX_MSG_HELLO, 10, 1);
	for (size_t n = 0; n < KVDEX_FRAME_HDR_SIZE; n++) {
		cr_assert(eq(i32, kvdex_frame_hdr_decode(b, n, 1 << 20, &h), 0), "avail %zu", n);
	}
	/* Garbage is not judged before 12 bytes are there either. */
	memset(b, 0xff, sizeof(b));
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, 11, 1 << 20, &h), 0));
	/* Extra bytes after the header do not matter. */
	kvdex_frame_hdr_encode(b, KVDEX_MSG_HELLO, 10, 1);
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1 << 20, &h), 1));
}

/* 4. A wrong magic is -EPROTO, in either byte or byte-swapped. */
Test(frame, bad_magic)
{
	uint8_t b[KVDEX_FRAME_HDR_SIZE];
	struct kvdex_frame_hdr h;

	kvdex_frame_hdr_encode(b, KVDEX_MSG_HELLO, 10, 1);
	b[0] ^= 1;
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1 << 20, &h), -EPROTO));
	kvdex_frame_hdr_encode(b, KVDEX_MSG_HELLO, 10, 1);
	b[0] = 0x4b;
	b[1] = 0x44;
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1 << 20, &h), -EPROTO));
	memcpy(b, "GET / HTTP/1", 12);
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1 << 20, &h), -EPROTO));
}

/* 5. Unknown types are -EPROTO: the gaps, 0, and beyond the table. */
Test(frame, unknown_type)
{
	static const uint16_t bad[] = {0, 16, 17, 31, 34, 35, 255, 256, 0x8000, 0xffff};
	uint8_t b[KVDEX_FRAME_HDR_SIZE];
	struct kvdex_frame_hdr h;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kvdex_frame_hdr_encode(b, bad[i], 0, 1);
		cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1 << 20, &h), -EPROTO),
			  "type %u", bad[i]);
		cr_assert(eq(i32, kvdex_msg_type_known(bad[i]), 0));
		cr_assert(eq(str, (char *)kvdex_msg_type_name(bad[i]), "?"));
	}
}

/* 6. len > max is -EMSGSIZE; len == max is fine. A bad magic is reported
 * as -EPROTO even when the length is also too large. */
Test(frame, too_large)
{
	uint8_t b[KVDEX_FRAME_HDR_SIZE];
	struct kvdex_frame_hdr h;

	kvdex_frame_hdr_encode(b, KVDEX_MSG_PUBLISH, 1025, 1);
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1024, &h), -EMSGSIZE));
	kvdex_frame_hdr_encode(b, KVDEX_MSG_PUBLISH, 1024, 1);
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1024, &h), 1));
	kvdex_frame_hdr_encode(b, KVDEX_MSG_PUBLISH, UINT32_MAX, 1);
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), KVDEX_MAX_MSG_DEFAULT, &h),
		     -EMSGSIZE));
	kvdex_frame_hdr_encode(b, KVDEX_MSG_PUBLISH, 1, 1);
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 0, &h), -EMSGSIZE));
	kvdex_frame_hdr_encode(b, KVDEX_MSG_PUBLISH, UINT32_MAX, 1);
	b[1] = 0;
	cr_assert(eq(i32, kvdex_frame_hdr_decode(b, sizeof(b), 1024, &h), -EPROTO));
}

/* 7. Every known type has its name; the table has exactly those types. */
Test(frame, type_names)
{
	unsigned nknown = 0;

	for (size_t t = 0; t < NKNOWN; t++) {
		cr_assert(kvdex_msg_type_known(known[t].type));
		cr_assert(
			eq(str, (char *)kvdex_msg_type_name(known[t].type), (char *)known[t].name));
	}
	for (uint32_t t = 0; t <= UINT16_MAX; t++) {
		nknown += kvdex_msg_type_known((uint16_t)t) != 0;
	}
	cr_assert(eq(u32, nknown, NKNOWN));
}

/* 8. A reply is its request's type + 1 and named "<REQUEST>_REPLY". */
Test(frame, reply_is_type_plus_one)
{
	for (uint16_t t = KVDEX_MSG_HELLO; t <= KVDEX_MSG_LIST_WORKERS; t += 2) {
		char want[64];

		snprintf(want, sizeof(want), "%s_REPLY", kvdex_msg_type_name(t));
		cr_assert(eq(str, (char *)kvdex_msg_type_name((uint16_t)(t + 1)), want));
	}
	cr_assert(eq(str, (char *)kvdex_msg_type_name(KVDEX_MSG_READ + 1), "READ_REPLY"));
}

/* 9. The raw READ structs have the documented sizes (they are a wire format). */
Test(frame, read_structs)
{
	cr_assert(eq(sz, sizeof(struct kvdex_read_req), 16));
	cr_assert(eq(sz, sizeof(struct kvdex_read_rsp), 8));
	cr_assert(eq(u32, KVDEX_READ_MAX_OPS, 512));
	cr_assert(eq(u32, KVDEX_READ_MAX_LEN, 65536));
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Message framing on a byte stream (unix socket or TCP). Every message is a
 * 12-byte header followed by `len` payload bytes:
 *
 *   u16 magic (0x4b44, "KD")  u16 type  u32 len  u32 req_id     (little-endian)
 *
 * Control messages carry a protobuf-c payload (proto/kvdex.proto). The tcp
 * transport's one-sided read emulation (KVDEX_MSG_READ / READ_REPLY) carries
 * the raw binary structs below, because it plays the NIC's role and must not
 * cost the server more than a memcpy.
 *
 * A reply has the type of its request + 1 and echoes req_id. Errors that end
 * a request come back as KVDEX_MSG_ERROR (an ErrorReply) with the same req_id.
 */
#ifndef KVDEX_COMMON_FRAME_H
#define KVDEX_COMMON_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_PROTOCOL_VERSION 1u
#define KVDEX_FRAME_MAGIC 0x4b44u
#define KVDEX_FRAME_HDR_SIZE 12u
#define KVDEX_MAX_MSG_DEFAULT (4u << 20)

enum kvdex_msg_type {
	KVDEX_MSG_ERROR = 1,
	KVDEX_MSG_HELLO = 2,
	KVDEX_MSG_HELLO_REPLY = 3,
	KVDEX_MSG_REGISTER_NS = 4,
	KVDEX_MSG_REGISTER_NS_REPLY = 5,
	KVDEX_MSG_REGISTER_WORKER = 6,
	KVDEX_MSG_REGISTER_WORKER_REPLY = 7,
	KVDEX_MSG_PUBLISH = 8,
	KVDEX_MSG_PUBLISH_REPLY = 9,
	KVDEX_MSG_WORKER_LOAD = 10,
	KVDEX_MSG_WORKER_LOAD_REPLY = 11,
	KVDEX_MSG_STATS = 12,
	KVDEX_MSG_STATS_REPLY = 13,
	KVDEX_MSG_LIST_WORKERS = 14,
	KVDEX_MSG_LIST_WORKERS_REPLY = 15,
	KVDEX_MSG_READ = 32,
	KVDEX_MSG_READ_REPLY = 33,
};

struct kvdex_frame_hdr {
	uint16_t magic;
	uint16_t type;
	uint32_t len;
	uint32_t req_id;
};

/* KVDEX_MSG_READ payload: nops x struct kvdex_read_req. */
struct kvdex_read_req {
	uint64_t off;
	uint32_t len;
	uint32_t reserved;
};

/* KVDEX_MSG_READ_REPLY payload: u32 nops, u32 reserved, nops x
 * struct kvdex_read_rsp, then the data of every op whose status is 0,
 * concatenated in op order. */
struct kvdex_read_rsp {
	int32_t status; /* 0 or -errno (-ERANGE: outside the region) */
	uint32_t len;
};

#define KVDEX_READ_MAX_OPS 512u
#define KVDEX_READ_MAX_LEN (64u << 10)

/* Encode a header into 12 bytes. */
void kvdex_frame_hdr_encode(uint8_t out[KVDEX_FRAME_HDR_SIZE], uint16_t type, uint32_t len,
			    uint32_t req_id);

/*
 * Decode a header from the first `avail` bytes of a stream buffer.
 * Returns 1 with *h filled, 0 when fewer than 12 bytes are available,
 * -EPROTO on a bad magic or unknown type, -EMSGSIZE when len > max_len.
 */
int kvdex_frame_hdr_decode(const uint8_t *in, size_t avail, size_t max_len,
			   struct kvdex_frame_hdr *h);

/* Is `type` a message type this protocol version defines? */
int kvdex_msg_type_known(uint16_t type);

/* Human-readable name of a message type ("PUBLISH"), "?" if unknown. */
const char *kvdex_msg_type_name(uint16_t type);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_FRAME_H */

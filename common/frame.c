/* SPDX-License-Identifier: Apache-2.0 */
#include "common/frame.h"

#include <errno.h>

static void
put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint16_t
get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

void
kvdex_frame_hdr_encode(uint8_t out[KVDEX_FRAME_HDR_SIZE], uint16_t type, uint32_t len,
		       uint32_t req_id)
{
	put_le16(out, KVDEX_FRAME_MAGIC);
	put_le16(out + 2, type);
	put_le32(out + 4, len);
	put_le32(out + 8, req_id);
}

int
kvdex_frame_hdr_decode(const uint8_t *in, size_t avail, size_t max_len, struct kvdex_frame_hdr *h)
{
	if (avail < KVDEX_FRAME_HDR_SIZE) {
		return 0;
	}
	h->magic = get_le16(in);
	h->type = get_le16(in + 2);
	h->len = get_le32(in + 4);
	h->req_id = get_le32(in + 8);
	if (h->magic != KVDEX_FRAME_MAGIC || !kvdex_msg_type_known(h->type)) {
		return -EPROTO;
	}
	if (h->len > max_len) {
		return -EMSGSIZE;
	}
	return 1;
}

static const char *const msg_names[] = {
	[KVDEX_MSG_ERROR] = "ERROR",
	[KVDEX_MSG_HELLO] = "HELLO",
	[KVDEX_MSG_HELLO_REPLY] = "HELLO_REPLY",
	[KVDEX_MSG_REGISTER_NS] = "REGISTER_NS",
	[KVDEX_MSG_REGISTER_NS_REPLY] = "REGISTER_NS_REPLY",
	[KVDEX_MSG_REGISTER_WORKER] = "REGISTER_WORKER",
	[KVDEX_MSG_REGISTER_WORKER_REPLY] = "REGISTER_WORKER_REPLY",
	[KVDEX_MSG_PUBLISH] = "PUBLISH",
	[KVDEX_MSG_PUBLISH_REPLY] = "PUBLISH_REPLY",
	[KVDEX_MSG_WORKER_LOAD] = "WORKER_LOAD",
	[KVDEX_MSG_WORKER_LOAD_REPLY] = "WORKER_LOAD_REPLY",
	[KVDEX_MSG_STATS] = "STATS",
	[KVDEX_MSG_STATS_REPLY] = "STATS_REPLY",
	[KVDEX_MSG_LIST_WORKERS] = "LIST_WORKERS",
	[KVDEX_MSG_LIST_WORKERS_REPLY] = "LIST_WORKERS_REPLY",
	[KVDEX_MSG_READ] = "READ",
	[KVDEX_MSG_READ_REPLY] = "READ_REPLY",
};

int
kvdex_msg_type_known(uint16_t type)
{
	return type < sizeof(msg_names) / sizeof(msg_names[0]) && msg_names[type] != NULL;
}

const char *
kvdex_msg_type_name(uint16_t type)
{
	return kvdex_msg_type_known(type) ? msg_names[type] : "?";
}

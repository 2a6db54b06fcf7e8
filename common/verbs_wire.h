/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the verbs transport puts on the wire besides the frames of frame.h
 * (docs/DESIGN.md §7.1).
 *
 * Connection: rdma_cm, RC QP, RDMA_PS_TCP. The CONNECT_REQUEST private data
 * is struct kvdex_cm_req; the server accepts with struct kvdex_cm_rep or
 * rejects with struct kvdex_cm_rej (code from proto Code, and a reason).
 *
 * Messages: each side posts KVDEX_VERBS_RECV_DEPTH receive buffers of
 * frag_size bytes. A sender splits its stream of frames (exactly the bytes a
 * tcp connection would carry) into SENDs of at most the peer's frag_size; RC
 * delivers them in order, so the receiver appends them to the same frame
 * parser tcp uses. Every SEND is IBV_WR_SEND_WITH_IMM and its immediate
 * (host order after ntohl) is the number of receive buffers its sender has
 * re-posted since its previous SEND: that returns credits. One credit is one
 * posted receive of the peer. A sender needs a credit per SEND and keeps the
 * last one for a credit-only SEND (zero bytes), which it sends when it has
 * re-posted at least half of its receives without another SEND to carry
 * them, so neither side can wait forever for credits.
 *
 * Reads: the index region is registered with IBV_ACCESS_REMOTE_READ only.
 * Its remote address and rkey are in HelloReply.region and in the region
 * header (mr_addr, mr_rkey, mr_gen); after a growth the server registers a
 * new MR, publishes it in the header, and keeps the old one for
 * KVDEX_VERBS_MR_GRACE_MS so readers with the old rkey can still read the
 * header that names the new one. A reader never reads past the region_size
 * of the header that gave it its rkey.
 */
#ifndef KVDEX_COMMON_VERBS_WIRE_H
#define KVDEX_COMMON_VERBS_WIRE_H

#include <assert.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_CM_MAGIC 0x5244564bu /* "KVDR" */
#define KVDEX_CM_PRIVATE_MAX 56u   /* RC connect private data limit */
#define KVDEX_VERBS_RECV_DEPTH 16u
#define KVDEX_VERBS_FRAG_SIZE (16u << 10)
#define KVDEX_VERBS_MR_GRACE_MS 10000u

/* CONNECT_REQUEST private data. */
struct kvdex_cm_req {
	uint32_t magic;
	uint16_t protocol_version;
	uint16_t flags;
	uint8_t token_digest[16]; /* XXH3-128 of the auth token, zeros if none */
	uint32_t recv_depth;	  /* receives the client posted */
	uint32_t frag_size;	  /* bytes per client receive buffer */
};
static_assert(sizeof(struct kvdex_cm_req) == 32, "cm req");

/* ESTABLISHED / accept private data. */
struct kvdex_cm_rep {
	uint32_t magic;
	uint16_t protocol_version;
	uint16_t reserved;
	uint32_t recv_depth; /* receives the server posted */
	uint32_t frag_size;  /* bytes per server receive buffer */
};
static_assert(sizeof(struct kvdex_cm_rep) == 16, "cm rep");

/* REJECTED private data (as delivered to the client, which may be prefixed
 * by the CM: find it by its magic). */
struct kvdex_cm_rej {
	uint32_t magic;
	uint16_t code; /* proto Code: BAD_VERSION, BAD_AUTH, FULL, ... */
	uint16_t len;  /* bytes of reason used */
	char reason[40];
};
static_assert(sizeof(struct kvdex_cm_rej) == 48, "cm rej");

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_VERBS_WIRE_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Framed messages over a connected stream socket (unix or TCP), shared by the
 * shm and tcp transports. Blocking with deadlines: the socket is non-blocking
 * and every wait is a poll(2) bounded by the caller's timeout.
 *
 * Received frames live in the socket's buffer: a frame returned by
 * kvdex_sock_recv() stays valid until the next kvdex_sock_recv(). File
 * descriptors passed with SCM_RIGHTS are attached to the frame that contains
 * the byte they arrived with.
 */
#ifndef KVDEX_CLIENT_SOCK_H
#define KVDEX_CLIENT_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/src/transport.h"

/* Largest frame the client accepts (a READ_REPLY of 512 x 64 KiB fits). */
#define KVDEX_SOCK_MAX_FRAME ((size_t)40 << 20)

struct kvdex_sock {
	int fd;
	uint8_t *buf;
	size_t cap;
	size_t head;	   /* first unconsumed byte */
	size_t tail;	   /* end of received bytes */
	size_t consume;	   /* bytes to drop at the next recv (the frame returned last) */
	uint64_t base;	   /* stream position of buf[0] */
	int pend_fd;	   /* SCM_RIGHTS fd not yet handed out, or -1 */
	uint64_t pend_pos; /* stream position of the byte it came with */
	bool dead;
};

/* Connect to ep (unix path or host:port) within timeout_ms. */
int kvdex_sock_connect(struct kvdex_sock *s, const struct kvdex_endpoint *ep, int timeout_ms);
void kvdex_sock_close(struct kvdex_sock *s);

/* Send one frame (header + payload). 0, -ETIMEDOUT, -ECONNRESET. */
int kvdex_sock_send(struct kvdex_sock *s, uint16_t type, uint32_t req_id, const void *p1, size_t l1,
		    const void *p2, size_t l2, int timeout_ms);

/* Receive the next frame. 0, -ETIMEDOUT, -ECONNRESET, -EPROTO (bad frame). */
int kvdex_sock_recv(struct kvdex_sock *s, struct kvdex_msg *msg, int timeout_ms);

/* Milliseconds left until deadline (CLOCK_MONOTONIC ms), at least 0. */
int kvdex_ms_left(uint64_t deadline);
uint64_t kvdex_now_ms(void);

#endif /* KVDEX_CLIENT_SOCK_H */

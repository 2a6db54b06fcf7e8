/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration test harness: start real kvdexd processes, talk to them through
 * libkvdex, and speak the raw frame format for bad-input tests.
 *
 * Servers: h_server_start() runs the binary named by $KVDEX_KVDEXD on
 * 127.0.0.1:0 and a unix socket in a fresh mkdtemp directory, waits for its
 * --ready-file and parses it. h_server_stop() sends SIGTERM and reaps it;
 * tests assert the exit status is 0. Every started server is remembered so
 * that h_cleanup() (the suites' .fini) kills whatever a failed test left
 * running; servers also get PR_SET_PDEATHSIG so they never outlive a test
 * process that was killed on timeout.
 *
 * Criterion runs each test in its own process, so the harness keeps plain
 * static state and is not thread-safe.
 *
 * Helpers assert (cr_assert) on anything unexpected, so tests read as the
 * scenario they check.
 */
#ifndef KVDEX_TESTS_INTEGRATION_HARNESS_H
#define KVDEX_TESTS_INTEGRATION_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/frame.h"
#include "kvdex.pb-c.h"
#include "kvdex/kvdex.h"

struct h_server {
	pid_t pid;
	char dir[64];		  /* mkdtemp: socket, ready file, log */
	char unix_path[PATH_MAX]; /* from the ready file */
	char tcp_host[64];
	uint16_t tcp_port;
	char log_path[PATH_MAX];
	char addr_unix[PATH_MAX + 8]; /* "unix:/path" */
	char addr_tcp[96];	      /* "127.0.0.1:port" */
	const char *auth_token;	      /* borrowed: what clients must present */
};

/* NULL-terminated argument list literal: H_ARGS("--max-msg-bytes", "4096"). */
#define H_ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Suite hooks: .init = h_init, .fini = h_cleanup. */
void h_init(void);
void h_cleanup(void);

/* Start kvdexd with the harness defaults plus `extra` (NULL or NULL-ended;
 * an option given in extra replaces the harness default). Asserts it
 * becomes ready within 10 s. */
void h_server_start(struct h_server *s, const char *const *extra);
/* SIGTERM, wait (10 s, then SIGKILL), remove the directory. Returns the
 * wait status. */
int h_server_stop(struct h_server *s);
/* The same with another signal (SIGINT). */
int h_server_signal_wait(struct h_server *s, int sig);
/* h_server_stop() and assert a clean exit (status 0). */
void h_server_stop_ok(struct h_server *s);

/* Run kvdexd with `args` (NULL-ended, no defaults added) to completion,
 * capturing stderr+stdout into out (NUL-terminated, truncated to cap).
 * Returns the wait status. */
int h_run_kvdexd(const char *const *args, char *out, size_t cap);

/* Address of a server for a transport: "unix:/path" for shm, host:port for tcp. */
const char *h_addr(const struct h_server *s, enum kvdex_transport t);
const char *h_transport_name(enum kvdex_transport t);

/* Create a client (asserts success). servers is a kvdex servers string. */
struct kvdex_client *h_client(const char *servers, enum kvdex_transport t, const char *token);
/* A client of one server. */
struct kvdex_client *h_client1(const struct h_server *s, enum kvdex_transport t);
/* Try to create a client; returns the kvdex_client_create() result. */
int h_client_try(const char *servers, enum kvdex_transport t, const char *token,
		 struct kvdex_client **out);

/* ---- Data helpers ------------------------------------------------------------ */

uint32_t h_ns(struct kvdex_client *c, const char *model);
void h_worker(struct kvdex_client *c, uint32_t worker_id, uint16_t dp_size);

struct kvdex_event h_ev_store(uint32_t ns, uint64_t key, unsigned tier);
struct kvdex_event h_ev_spec(uint32_t ns, uint64_t key, unsigned tier, uint32_t ttl_ms);
struct kvdex_event h_ev_fused(uint32_t ns, uint64_t key, unsigned tier);
struct kvdex_event h_ev_remove(uint32_t ns, uint64_t key, unsigned tier);
struct kvdex_event h_ev_clear(uint8_t tier_mask);

int h_publish(struct kvdex_client *c, uint32_t worker, uint16_t rank, uint64_t inc, uint64_t seq,
	      const struct kvdex_event *ev, size_t n, struct kvdex_publish_result *res);
/* Store keys[0..n) in `tier` for (worker, rank) as one batch; asserts rc 0. */
void h_store_chain(struct kvdex_client *c, uint32_t ns, uint32_t worker, uint16_t rank,
		   uint64_t inc, uint64_t seq, const uint64_t *keys, size_t n, unsigned tier);

#define H_MAX_HOLDINGS 64

struct h_lookup {
	struct kvdex_holding rows[H_MAX_HOLDINGS];
	struct kvdex_lookup_result res;
};

int h_lookup(struct kvdex_client *c, uint32_t ns, const uint64_t *keys, size_t n, unsigned flags,
	     struct h_lookup *out);
/* The row of (worker, rank), or NULL. */
const struct kvdex_holding *h_find(const struct h_lookup *l, uint32_t worker, uint16_t rank);
/* Blocks of the chain (worker, rank) matches: 0 if absent. */
unsigned h_matched(const struct h_lookup *l, uint32_t worker, uint16_t rank);

/* keys[i] = base + i * stride-ish pseudo-random spread (deterministic). */
void h_keys(uint64_t *keys, size_t n, uint64_t base);

/* ---- Stats ------------------------------------------------------------------ */

#define H_MAX_COUNTERS 128

struct h_stats {
	struct kvdex_counter c[H_MAX_COUNTERS];
	int n;
};

void h_stats_get(struct kvdex_client *c, unsigned server, struct h_stats *st);
/* Counter value by name; asserts the counter exists. */
uint64_t h_stat(const struct h_stats *st, const char *name);
/* Fetch and return one counter. */
uint64_t h_stat1(struct kvdex_client *c, unsigned server, const char *name);
/* Poll a counter until it is >= want or timeout; returns the last value. */
uint64_t h_wait_stat(struct kvdex_client *c, unsigned server, const char *name, uint64_t want,
		     int timeout_ms);

/* The error counters of DESIGN §9 and common.md. */
extern const char *const h_error_counters[];

/* Assert that among the error counters exactly `name` grew, by `delta`. */
void h_assert_error_delta(const struct h_stats *before, const struct h_stats *after,
			  const char *name, uint64_t delta);

/* A fresh client can still register, publish and look up. `tag` makes the
 * worker id and keys unique per call within one server. */
void h_assert_serving(const struct h_server *s, enum kvdex_transport t, unsigned tag);

/* ---- Raw frames ------------------------------------------------------------- */

struct h_frame {
	struct kvdex_frame_hdr hdr;
	uint8_t *payload; /* malloc'ed, hdr.len bytes */
};

/* Connect a plain socket (tcp: the tcp listener; otherwise the unix one). */
int h_raw_connect(const struct h_server *s, bool tcp);
int h_raw_send(int fd, const void *buf, size_t len);
int h_send_frame(int fd, uint16_t type, uint32_t req_id, const void *payload, size_t len);
int h_send_msg(int fd, uint16_t type, uint32_t req_id, const ProtobufCMessage *m);
/* Pack a message into a malloc'ed buffer. */
uint8_t *h_pack(const ProtobufCMessage *m, size_t *len);
/* 0 with *f filled, -ECONNRESET on EOF or reset, -ETIMEDOUT, -EPROTO. */
int h_recv_frame(int fd, struct h_frame *f, int timeout_ms);
void h_frame_free(struct h_frame *f);
/* Send Hello (version 1, token) and assert a HELLO_REPLY with status OK. */
void h_raw_hello(int fd, const char *token);
/* req_id wildcard for h_expect_error(): framing errors may not echo it. */
#define H_ANY_REQ UINT32_MAX

/* Receive an ERROR frame for req_id and assert its code and fatal flag; a
 * fatal error must also be followed by the server closing the connection. */
void h_expect_error(int fd, uint32_t req_id, Kvdex__Code code, bool fatal);
/* True once the peer has closed (EOF or reset) within timeout. */
bool h_peer_closed(int fd, int timeout_ms);
/* Raw Stats round trip on an established connection: asserts a STATS_REPLY. */
void h_raw_stats_ok(int fd, uint32_t req_id);

/* Monotonic milliseconds. */
int64_t h_now_ms(void);
void h_sleep_ms(int ms);

#endif /* KVDEX_TESTS_INTEGRATION_HARNESS_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hash-bench: cost of vLLM block hashes (common/vllm_hash.c) per block, for each
 * algorithm. A benchmark, not a test: it checks nothing and exits 0.
 *
 * Each run hashes a chain of --blocks blocks of --block-size token ids drawn from a
 * vocabulary of --vocab ids (so ids take vLLM-like 1/3/5-byte encodings), each block's
 * parent being the previous digest, as kvdex_vllm_hash_chain() does. With --lora and
 * --salt the blocks carry those extra keys too. It prints ns per block and per token.
 *
 *   hash-bench [--blocks N] [--block-size B] [--vocab V] [--algo NAME] [--lora NAME]
 *              [--salt SALT] [--chain]
 */
#include "common/vllm_hash.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING_TOKENS (1u << 16)

struct bench_opts {
	size_t blocks;
	size_t block_size;
	uint32_t vocab;
	int algo; /* -1: all */
	const char *lora;
	const char *salt;
	int chain; /* time kvdex_vllm_hash_chain() on one long request instead */
};

/*
 * Thread CPU time, not wall time: the figure should not depend on what else the
 * machine runs (cache sharing still does).
 */
static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap, reproducible token ids. */
static uint32_t
next_token(uint64_t *state, uint32_t vocab)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return (uint32_t)((x * 2685821657736338717ull) >> 32) % vocab;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: hash-bench [--blocks N] [--block-size B] [--vocab V] [--algo NAME]\n"
		   "                  [--lora NAME] [--salt SALT] [--chain]\n"
		   "NAME: sha256, sha256_cbor, xxhash, xxhash_cbor (default: all four)\n");
}

static int
parse_opts(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{"blocks", required_argument, NULL, 'n'},
		{"block-size", required_argument, NULL, 'b'},
		{"vocab", required_argument, NULL, 'v'},
		{"algo", required_argument, NULL, 'a'},
		{"lora", required_argument, NULL, 'l'},
		{"salt", required_argument, NULL, 's'},
		{"chain", no_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	enum kvdex_vllm_hash_algo algo;
	int c;

	*o = (struct bench_opts){.blocks = 1000000, .block_size = 16, .vocab = 151936, .algo = -1};
	while ((c = getopt_long(argc, argv, "n:b:v:a:l:s:ch", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o->blocks = strtoull(optarg, NULL, 0);
			break;
		case 'b':
			o->block_size = strtoull(optarg, NULL, 0);
			break;
		case 'v':
			o->vocab = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'a':
			if (kvdex_vllm_hash_algo_parse(optarg, &algo)) {
				usage(stderr);
				return -EINVAL;
			}
			o->algo = (int)algo;
			break;
		case 'l':
			o->lora = optarg;
			break;
		case 's':
			o->salt = optarg;
			break;
		case 'c':
			o->chain = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (o->blocks == 0 || o->block_size == 0 || o->block_size > RING_TOKENS / 2 ||
	    o->vocab == 0) {
		usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/* Block by block through kvdex_vllm_hash_block(), parent = previous digest. */
static int
run_blocks(const struct kvdex_vllm_hasher *h, const struct bench_opts *o, const uint32_t *ring,
	   uint64_t *ns, uint64_t *sink)
{
	struct kvdex_vllm_block_keys keys = {0};
	uint8_t digest[KVDEX_VLLM_DIGEST_MAX];
	size_t off = 0;
	uint64_t t0;
	int rc;

	if (o->lora) {
		keys.lora_name = o->lora;
		keys.lora_name_len = strlen(o->lora);
	}
	t0 = now_ns();
	for (size_t i = 0; i < o->blocks; i++) {
		/* vLLM puts the salt on block 0 only; here every block pays for it, if given. */
		if (o->salt) {
			keys.cache_salt = o->salt;
			keys.cache_salt_len = strlen(o->salt);
		}
		rc = kvdex_vllm_hash_block(h, i ? digest : NULL, i ? h->digest_len : 0, ring + off,
					   o->block_size, &keys, digest);
		if (rc) {
			return rc;
		}
		off = (off + o->block_size) % (RING_TOKENS - o->block_size);
	}
	*ns = now_ns() - t0;
	*sink ^= kvdex_vllm_hash_u64(digest, h->digest_len);
	return 0;
}

/* One request of ring-many tokens through kvdex_vllm_hash_chain(), repeated. */
static int
run_chain(const struct kvdex_vllm_hasher *h, const struct bench_opts *o, const uint32_t *ring,
	  uint64_t *ns, uint64_t *sink, size_t *blocks)
{
	struct kvdex_vllm_request req = {.tokens = ring, .n_tokens = RING_TOKENS};
	size_t per = RING_TOKENS / o->block_size, reps = (o->blocks + per - 1) / per;
	uint64_t *u64 = malloc(per * sizeof(*u64)), t0;
	ssize_t n = 0;

	if (!u64) {
		return -ENOMEM;
	}
	if (o->lora) {
		req.lora_name = o->lora;
		req.lora_name_len = strlen(o->lora);
	}
	if (o->salt) {
		req.cache_salt = o->salt;
		req.cache_salt_len = strlen(o->salt);
	}
	t0 = now_ns();
	for (size_t r = 0; r < reps; r++) {
		n = kvdex_vllm_hash_chain(h, &req, o->block_size, o->block_size, NULL, u64, per);
		if (n < 0) {
			free(u64);
			return (int)n;
		}
		*sink ^= u64[n - 1];
	}
	*ns = now_ns() - t0;
	*blocks = reps * per;
	free(u64);
	return 0;
}

int
main(int argc, char **argv)
{
	uint32_t *ring = malloc(RING_TOKENS * sizeof(*ring));
	struct kvdex_vllm_hasher h;
	struct bench_opts o;
	uint64_t state = 0x9e3779b97f4a7c15ull, ns = 0, sink = 0;
	size_t blocks;
	int rc = -ENOMEM;

	if (!ring || parse_opts(argc, argv, &o)) {
		goto out;
	}
	for (size_t i = 0; i < RING_TOKENS; i++) {
		ring[i] = next_token(&state, o.vocab);
	}
	printf("%-12s %8s %10s %10s %10s\n", "algo", "tokens", "blocks", "ns/block", "ns/token");
	for (int a = 0; a < 4; a++) {
		if (o.algo >= 0 && a != o.algo) {
			continue;
		}
		rc = kvdex_vllm_hasher_init(&h, (enum kvdex_vllm_hash_algo)a, "0", 1);
		blocks = o.blocks;
		if (!rc) {
			rc = o.chain ? run_chain(&h, &o, ring, &ns, &sink, &blocks)
				     : run_blocks(&h, &o, ring, &ns, &sink);
		}
		if (rc) {
			fprintf(stderr, "hash-bench: %s: %s\n", kvdex_vllm_hash_algo_name(a),
				strerror(-rc));
			goto out;
		}
		printf("%-12s %8zu %10zu %10.1f %10.2f\n", kvdex_vllm_hash_algo_name(a),
		       o.block_size, blocks, (double)ns / (double)blocks,
		       (double)ns / (double)blocks / (double)o.block_size);
	}
	/* Print the fold so the compiler cannot drop the work. */
	printf("# fold %016" PRIx64 "\n", sink);
out:
	free(ring);
	return rc ? 1 : 0;
}

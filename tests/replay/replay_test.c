/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of kvdex-replay's pure parts (suite 'replay'): the GSP
 * generator (determinism against kvrouting.md §5.2, shapes and statistics),
 * the multi-turn generator (each turn extends the previous prompt), the
 * Mooncake parser and timestamp spreading, the event queue and the service
 * time model. The .c files under test are compiled into this binary.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf/replay/replay.h"

TestSuite(replay, .timeout = 30);

/* ---- GSP ------------------------------------------------------------------------ */

static void
gsp_default(struct replay_workload *w, uint64_t seed, enum replay_order order)
{
	struct replay_gsp_opts o;

	replay_gsp_opts_init(&o);
	o.seed = seed;
	o.order = order;
	cr_assert(eq(int, replay_gsp_generate(&o, w), 0));
}

/* 1. splitmix64 is the standard one (reference values of x = 0 and 1). */
Test(replay, splitmix64_reference)
{
	cr_assert(eq(u64, replay_splitmix64(0), 0xe220a8397b1dcdafull));
	cr_assert(eq(u64, replay_splitmix64(1), 0x910a2dec89025cc1ull));
	/* token recipe: kind 1, group 3, position 7, seed 1 */
	cr_assert(
		eq(u32, replay_gsp_token(1, 3, 7, 1),
		   (uint32_t)(replay_splitmix64(((1ull << 56) | (3ull << 32) | 7) ^ 1) % 128000)));
}

/* 2. Same seed, same workload; another seed, another one. */
Test(replay, gsp_deterministic)
{
	struct replay_workload a, b, c;

	gsp_default(&a, 1, REPLAY_ORDER_RANDOM);
	gsp_default(&b, 1, REPLAY_ORDER_RANDOM);
	gsp_default(&c, 2, REPLAY_ORDER_RANDOM);
	cr_assert(eq(sz, a.nreq, 4096));
	cr_assert(eq(sz, a.nkeys, b.nkeys));
	cr_assert(eq(int, memcmp(a.keys, b.keys, a.nkeys * sizeof(*a.keys)), 0));
	for (size_t i = 0; i < a.nreq; i++) {
		cr_assert(eq(dbl, a.req[i].arrival_ms, b.req[i].arrival_ms));
		cr_assert(eq(u32, a.req[i].group, b.req[i].group));
	}
	cr_assert(ne(int, memcmp(a.keys, c.keys, 64 * sizeof(*a.keys)), 0));
	replay_workload_fini(&a);
	replay_workload_fini(&b);
	replay_workload_fini(&c);
}

/* 3. Shape: 128 groups x 32, lengths by group, ~12.8 M prompt tokens,
 * Poisson arrivals at about 12/s, prompts of a group share their prefix. */
Test(replay, gsp_statistics)
{
	struct replay_workload w;
	unsigned per_group[128] = {0};
	double last = -1.0;

	gsp_default(&w, 1, REPLAY_ORDER_RANDOM);
	for (size_t i = 0; i < w.nreq; i++) {
		const struct replay_req *r = &w.req[i];
		static const uint32_t lens[] = {512, 1024, 2048, 4096, 8192};

		cr_assert(ge(dbl, r->arrival_ms, last));
		last = r->arrival_ms;
		per_group[r->group]++;
		cr_assert(eq(u32, r->prompt_tokens, lens[r->group % 5] + 2)); /* BOS, SEP */
		cr_assert(eq(u32, r->nprompt_blocks, r->prompt_tokens / 16));
		cr_assert(eq(u32, r->nkeys, (r->prompt_tokens + 3) / 16));
	}
	for (unsigned g = 0; g < 128; g++) {
		cr_assert(eq(u32, per_group[g], 32));
	}
	/* 32 x (26 x (514 + 1026 + 2050) + 25 x (4098 + 8194)) */
	cr_assert(
		eq(u64, w.prompt_tokens, 32ull * (26 * (514 + 1026 + 2050) + 25 * (4098 + 8194))));
	/* 4095 exponential gaps of mean 1/12 s: within 5 % of 341 s */
	cr_assert(gt(dbl, last, 4095 / 12.0 * 1000 * 0.95));
	cr_assert(lt(dbl, last, 4095 / 12.0 * 1000 * 1.05));
	replay_workload_fini(&w);
}

/* Index of the first request of group g in w. */
static size_t
first_of_group(const struct replay_workload *w, uint32_t g, size_t from)
{
	for (size_t i = from; i < w->nreq; i++) {
		if (w->req[i].group == g) {
			return i;
		}
	}
	return SIZE_MAX;
}

/* 4. Two prompts of a group share exactly the blocks of BOS + system + SEP;
 * prompts of different groups share nothing. */
Test(replay, gsp_prefix_sharing)
{
	struct replay_workload w;
	size_t a, b, c;
	const uint64_t *ka, *kb, *kc;
	uint32_t shared = 0;

	gsp_default(&w, 3, REPLAY_ORDER_GROUPED);
	a = first_of_group(&w, 1, 0); /* length 1024: system 512, shared 514 */
	b = first_of_group(&w, 1, a + 1);
	c = first_of_group(&w, 6, 0); /* same length, another group */
	ka = w.keys + w.req[a].key_off;
	kb = w.keys + w.req[b].key_off;
	kc = w.keys + w.req[c].key_off;
	while (shared < w.req[a].nkeys && ka[shared] == kb[shared]) {
		shared++;
	}
	cr_assert(eq(u32, shared, 514 / 16));
	cr_assert(ne(u64, ka[0], kc[0]));
	cr_assert(eq(u32, w.req[1].group, 0)); /* grouped order */
	replay_workload_fini(&w);
}

/* 5. Round-robin order visits every group before any repeats. */
Test(replay, gsp_round_robin_order)
{
	struct replay_workload w;

	gsp_default(&w, 1, REPLAY_ORDER_ROUND_ROBIN);
	for (size_t i = 0; i < 256; i++) {
		cr_assert(eq(u32, w.req[i].group, (uint32_t)(i % 128)));
	}
	replay_workload_fini(&w);
}

/* 6. Bad options are refused. */
Test(replay, gsp_bad_options)
{
	struct replay_gsp_opts o;
	struct replay_workload w;

	replay_gsp_opts_init(&o);
	o.rate = 0;
	cr_assert(eq(int, replay_gsp_generate(&o, &w), -EINVAL));
	replay_gsp_opts_init(&o);
	o.prefix_ratio = 1.5;
	cr_assert(eq(int, replay_gsp_generate(&o, &w), -EINVAL));
}

/* ---- Multi-turn ------------------------------------------------------------------ */

/* 7. Each turn's prompt contains the previous turn's cached chain. */
Test(replay, multiturn_extends_previous)
{
	struct replay_mt_opts o;
	struct replay_workload w;

	replay_mt_opts_init(&o);
	o.conversations = 4;
	o.turns = 4;
	o.user_tokens = 100;
	cr_assert(eq(int, replay_mt_generate(&o, &w), 0));
	cr_assert(eq(sz, w.nreq, 16));
	for (size_t i = 0; i < w.nreq; i++) {
		const struct replay_req *r = &w.req[i];

		if (i % 4 == 0) {
			cr_assert(ge(dbl, r->arrival_ms, 0.0));
		} else {
			cr_assert(lt(dbl, r->arrival_ms, 0.0)); /* released by the previous turn */
		}
		if (r->next >= 0) {
			const struct replay_req *n = &w.req[r->next];

			cr_assert(eq(u32, n->prompt_tokens, r->prompt_tokens + 4 + 100));
			/* every block cached by turn t is a prefix of turn t + 1 */
			cr_assert(eq(int,
				     memcmp(w.keys + r->key_off, w.keys + n->key_off,
					    r->nkeys * sizeof(uint64_t)),
				     0));
		}
	}
	/* conversations share only the 25-token header: one block at 16 */
	cr_assert(eq(u64, w.keys[w.req[0].key_off], w.keys[w.req[4].key_off]));
	cr_assert(ne(u64, w.keys[w.req[0].key_off + 1], w.keys[w.req[4].key_off + 1]));
	replay_workload_fini(&w);
}

/* ---- Mooncake --------------------------------------------------------------------- */

/* 8. A line parses in any key order; bad lines are refused. */
Test(replay, mooncake_parse_line)
{
	struct replay_mc_line l = {0};

	cr_assert(eq(
		int,
		replay_mooncake_parse_line("{\"timestamp\": 27482, \"input_length\": 6955, "
					   "\"output_length\": 52, \"hash_ids\": [46, 47, 48]}\n",
					   &l),
		0));
	cr_assert(eq(dbl, l.timestamp, 27482.0));
	cr_assert(eq(u32, l.input_length, 6955));
	cr_assert(eq(u32, l.output_length, 52));
	cr_assert(eq(sz, l.nhash, 3));
	cr_assert(eq(u64, l.hash_ids[2], 48));
	cr_assert(eq(int,
		     replay_mooncake_parse_line("{\"hash_ids\":[],\"output_length\":1,"
						"\"input_length\":0,\"timestamp\":5}",
						&l),
		     0));
	cr_assert(eq(sz, l.nhash, 0));
	cr_assert(eq(int, replay_mooncake_parse_line("{\"timestamp\": 1}", &l), -EINVAL));
	cr_assert(eq(int,
		     replay_mooncake_parse_line("{\"timestamp\": 1, \"input_length\": -5, "
						"\"output_length\": 1, \"hash_ids\": [1]}",
						&l),
		     -EINVAL));
	cr_assert(eq(int,
		     replay_mooncake_parse_line("{\"timestamp\": 1, \"input_length\": 5, "
						"\"output_length\": 1, \"hash_ids\": [1,}",
						&l),
		     -EINVAL));
	cr_assert(eq(int, replay_mooncake_parse_line("[1, 2]", &l), -EINVAL));
	free(l.hash_ids);
}

/* 9. Even spreading: a bucket of k requests covers [T, T') in k steps; the
 * last bucket uses the median width. Uniform stays inside and sorted. */
Test(replay, spread_times)
{
	double t[] = {0, 0, 0, 3000, 3000, 6000, 6000};
	double u[] = {0, 0, 0, 0, 3000, 3000};

	replay_spread_times(t, 7, REPLAY_SPREAD_EVEN, 1);
	cr_assert(eq(dbl, t[0], 0.0));
	cr_assert(eq(dbl, t[1], 1000.0));
	cr_assert(eq(dbl, t[2], 2000.0));
	cr_assert(eq(dbl, t[3], 3000.0));
	cr_assert(eq(dbl, t[4], 4500.0));
	cr_assert(eq(dbl, t[5], 6000.0));
	cr_assert(eq(dbl, t[6], 7500.0));
	replay_spread_times(u, 6, REPLAY_SPREAD_UNIFORM, 7);
	for (size_t i = 0; i < 6; i++) {
		cr_assert(ge(dbl, u[i], i < 4 ? 0.0 : 3000.0));
		cr_assert(lt(dbl, u[i], i < 4 ? 3000.0 : 6000.0));
		if (i > 0) {
			cr_assert(ge(dbl, u[i], u[i - 1]));
		}
	}
}

/* 10. A trace file: ids map to keys (equal ids, equal keys), output blocks
 * are extra keys, times are spread and scaled, --limit is honoured. */
Test(replay, mooncake_load)
{
	char path[] = "/tmp/replay-test-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	struct replay_mooncake_opts o;
	struct replay_workload w;

	cr_assert(not(eq(ptr, f, NULL)));
	fputs("{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 600, "
	      "\"hash_ids\": [0, 1]}\n"
	      "{\"timestamp\": 0, \"input_length\": 1500, \"output_length\": 1, "
	      "\"hash_ids\": [0, 1, 2]}\n"
	      "\n"
	      "{\"timestamp\": 3000, \"input_length\": 10, \"output_length\": 1, "
	      "\"hash_ids\": [3]}\n"
	      "{\"timestamp\": 6000, \"input_length\": 10, \"output_length\": 1, "
	      "\"hash_ids\": [4]}\n",
	      f);
	fclose(f);
	replay_mooncake_opts_init(&o);
	o.path = path;
	o.limit = 3;
	o.time_scale = 2.0;
	cr_assert(eq(int, replay_mooncake_load(&o, &w), 0));
	cr_assert(eq(sz, w.nreq, 3));
	cr_assert(eq(u32, w.req[0].nprompt_blocks, 2));
	cr_assert(eq(u32, w.req[0].nkeys, 4)); /* ceil(1599 / 512) */
	cr_assert(eq(u32, w.req[1].nkeys, 3));
	cr_assert(eq(u64, w.keys[w.req[0].key_off + 1], w.keys[w.req[1].key_off + 1]));
	cr_assert(ne(u64, w.keys[w.req[0].key_off + 2], w.keys[w.req[1].key_off + 2]));
	cr_assert(eq(dbl, w.req[1].arrival_ms, 3000.0)); /* 1500 spread, x 2 */
	cr_assert(eq(dbl, w.req[2].arrival_ms, 6000.0));
	replay_workload_fini(&w);
	o.path = "/nonexistent/trace.jsonl";
	cr_assert(lt(int, replay_mooncake_load(&o, &w), 0));
	unlink(path);
}

/* ---- Event queue ------------------------------------------------------------------ */

/* 11. Pops in time order, ties in push order, with random pushes. */
Test(replay, evq_order)
{
	struct replay_evq q = {0};
	struct replay_ev ev, prev = {-1, 0, 0, 0};
	uint64_t x = 42;

	for (uint32_t i = 0; i < 5000; i++) {
		x = replay_splitmix64(x);
		cr_assert(eq(int, replay_evq_push(&q, (double)(x % 100), i & 1, i), 0));
	}
	for (uint32_t i = 0; i < 5000; i++) {
		cr_assert(replay_evq_pop(&q, &ev));
		cr_assert(ge(dbl, ev.t, prev.t));
		if (ev.t == prev.t) {
			cr_assert(gt(u64, ev.seq, prev.seq));
			cr_assert(gt(u32, ev.idx, prev.idx));
		}
		prev = ev;
	}
	cr_assert(not(replay_evq_pop(&q, &ev)));
	replay_evq_fini(&q);
}

/* ---- Service model ----------------------------------------------------------------- */

/* 12. 10 ms + 0.14 ms per uncached token (+ 12 ms per output token). */
Test(replay, service_model)
{
	struct replay_model m;

	replay_model_init(&m);
	cr_assert(eq(dbl, replay_model_prefill_ms(&m, 0), 10.0));
	cr_assert(ieee_ulp_eq(dbl, replay_model_prefill_ms(&m, 1000), 150.0, 4));
	cr_assert(ieee_ulp_eq(dbl, replay_model_service_ms(&m, 1000, 4), 198.0, 4));
	m.decode_ms_per_tok = 0;
	cr_assert(ieee_ulp_eq(dbl, replay_model_service_ms(&m, 1000, 4), 150.0, 4));
}

/* 13. Nearest-rank percentiles. */
Test(replay, percentiles)
{
	double v[] = {5, 1, 4, 2, 3, 10, 9, 8, 7, 6};

	replay_sort(v, 10);
	cr_assert(eq(dbl, replay_pct(v, 10, 0.5), 5.0));
	cr_assert(eq(dbl, replay_pct(v, 10, 0.95), 10.0));
	cr_assert(eq(dbl, replay_pct(v, 10, 0.1), 1.0));
	cr_assert(eq(dbl, replay_pct(v, 0, 0.5), 0.0));
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing policies on crafted snapshots whose right answer is known
 * (kvdex_router_decide: pure, no server). Clocks are explicit (req.now_ms,
 * kvdex_route_done_at), so every case is exact.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "kvdex/route.h"

/* The decision's reason, rendered (one buffer per call site's statement). */
#define REASON(d) reason_of(&(d), (char[200]){0})

static char *
reason_of(const struct kvdex_route_decision *d, char *buf)
{
	int n = kvdex_route_reason(d, buf, 200);

	cr_assert(gt(int, n, 0));
	cr_assert(lt(int, n, 160), "reason longer than documented: %s", buf);
	return buf;
}

TestSuite(route_policy, .timeout = 10);

static struct kvdex_router *
mk(enum kvdex_route_policy p, uint64_t seed)
{
	struct kvdex_route_opts o;
	struct kvdex_router *r = NULL;

	kvdex_route_opts_init(&o, sizeof(o));
	o.policy = p;
	o.seed = seed;
	cr_assert(eq(int, kvdex_router_create(&o, &r), 0));
	return r;
}

static struct kvdex_router *
mk_opts(const struct kvdex_route_opts *o)
{
	struct kvdex_router *r = NULL;

	cr_assert(eq(int, kvdex_router_create(o, &r), 0));
	return r;
}

/* A candidate with a fresh, idle load row. */
static struct kvdex_route_cand
cand(uint32_t id)
{
	struct kvdex_route_cand c;

	memset(&c, 0, sizeof(c));
	c.worker_id = id;
	c.load_age_ms = 10;
	return c;
}

/* Holds the first `n` blocks in `tier`. */
static void
hold(struct kvdex_route_cand *c, unsigned tier, uint16_t n)
{
	c->matched += n;
	c->tier_blocks[tier] += n;
}

static struct kvdex_route_req
req(uint32_t nblocks, uint32_t bs, uint64_t now)
{
	return (struct kvdex_route_req){
		.nblocks = nblocks, .ntokens = nblocks * bs, .block_size = bs, .now_ms = now};
}

static uint32_t
decide(struct kvdex_router *r, const struct kvdex_route_req *q, struct kvdex_route_cand *c,
       size_t n, struct kvdex_route_decision *d)
{
	cr_assert(eq(int, kvdex_router_decide(r, q, c, n, d), 0));
	cr_assert(eq(u32, d->worker_id, c[0].worker_id));
	return d->worker_id;
}

/* 1. Names round-trip; defaults are the published constants. */
Test(route_policy, names_and_defaults)
{
	struct kvdex_route_opts o;
	enum kvdex_route_policy p;

	for (unsigned i = 0; i < KVDEX_ROUTE_NPOLICIES; i++) {
		const char *name = kvdex_route_policy_name((enum kvdex_route_policy)i);

		cr_assert(name != NULL);
		cr_assert(eq(int, kvdex_route_policy_parse(name, &p), 0));
		cr_assert(eq(u32, (unsigned)p, i));
	}
	cr_assert(eq(int, kvdex_route_policy_parse("nope", &p), -EINVAL));
	cr_assert(kvdex_route_policy_name(KVDEX_ROUTE_NPOLICIES) == NULL);
	kvdex_route_opts_init(&o, sizeof(o));
	cr_assert(eq(u32, o.sglang.balance_abs, 32));
	cr_assert(eq(dbl, o.sglang.balance_rel, 1.0001));
	cr_assert(eq(dbl, o.sglang.cache_threshold, 0.5));
	cr_assert(eq(dbl, o.dynamo.host_weight, 0.75));
	cr_assert(eq(dbl, o.dynamo.disk_weight, 0.25));
	cr_assert(eq(dbl, o.dynamo.temperature, 0.0));
	cr_assert(eq(dbl, o.llmd.tier_weight[KVDEX_HOST], 0.8));
	cr_assert(eq(dbl, o.lbgr.rls_lambda, 0.992));
	cr_assert(eq(u32, o.lbgr.decay_num, 31));
	cr_assert(eq(u32, o.lbgr.decay_den, 32));
	cr_assert(eq(u32, o.lbgr.decay_interval_ms, 20));
	cr_assert(eq(u32, o.spec_ttl_ms, 2000));
}

/* 2. Bad options and arguments. */
Test(route_policy, bad_args)
{
	struct kvdex_route_opts o;
	struct kvdex_router *r = NULL;
	struct kvdex_route_cand c = cand(1);
	struct kvdex_route_req q = req(4, 16, 0);
	struct kvdex_route_decision d;

	kvdex_route_opts_init(&o, sizeof(o));
	o.spec_ttl_ms = 7501;
	cr_assert(eq(int, kvdex_router_create(&o, &r), -EINVAL));
	kvdex_route_opts_init(&o, sizeof(o));
	o.policy = KVDEX_ROUTE_NPOLICIES;
	cr_assert(eq(int, kvdex_router_create(&o, &r), -EINVAL));
	r = mk(KVDEX_ROUTE_KVDEX, 1);
	cr_assert(eq(int, kvdex_router_decide(r, &q, &c, 0, &d), -EINVAL));
	q.block_size = 0;
	cr_assert(eq(int, kvdex_router_decide(r, &q, &c, 1, &d), -EINVAL));
	cr_assert(eq(int, kvdex_route_done(r, 12345, 1.0), -ENOENT));
	kvdex_router_destroy(r);
	kvdex_router_destroy(NULL);
}

/* 3. Round robin cycles over the candidate array; ranks the rest in turn. */
Test(route_policy, round_robin)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_ROUND_ROBIN, 1);
	struct kvdex_route_req q = req(4, 16, 0);
	struct kvdex_route_decision d;

	for (unsigned k = 0; k < 7; k++) {
		struct kvdex_route_cand c[3] = {cand(10), cand(11), cand(12)};

		cr_assert(eq(u32, decide(r, &q, c, 3, &d), 10 + k % 3));
		cr_assert(eq(u32, c[1].worker_id, 10 + (k + 1) % 3));
	}
	kvdex_router_destroy(r);
}

/* 4. Random: every candidate gets picked; the same seed replays the same
 * choices and another seed does not. */
Test(route_policy, random_seeded)
{
	struct kvdex_router *a = mk(KVDEX_ROUTE_RANDOM, 7), *b = mk(KVDEX_ROUTE_RANDOM, 7);
	struct kvdex_router *x = mk(KVDEX_ROUTE_RANDOM, 8);
	struct kvdex_route_req q = req(4, 16, 0);
	unsigned seen[4] = {0}, differ = 0;
	struct kvdex_route_decision d;

	for (unsigned k = 0; k < 200; k++) {
		struct kvdex_route_cand c[4] = {cand(1), cand(2), cand(3), cand(4)};
		struct kvdex_route_cand e[4] = {cand(1), cand(2), cand(3), cand(4)};
		struct kvdex_route_cand f[4] = {cand(1), cand(2), cand(3), cand(4)};
		uint32_t wa = decide(a, &q, c, 4, &d);

		cr_assert(eq(u32, decide(b, &q, e, 4, &d), wa));
		differ += decide(x, &q, f, 4, &d) != wa;
		seen[wa - 1]++;
	}
	for (unsigned i = 0; i < 4; i++) {
		cr_assert(gt(u32, seen[i], 20));
	}
	cr_assert(gt(u32, differ, 50));
	kvdex_router_destroy(a);
	kvdex_router_destroy(b);
	kvdex_router_destroy(x);
}

/* 5. Least load: fewest queued + running; prefill tokens break ties. */
Test(route_policy, least_load)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_LEAST_LOAD, 1);
	struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};
	struct kvdex_route_req q = req(4, 16, 0);
	struct kvdex_route_decision d;

	c[0].load.queued = 3;
	c[1].load.running = 2;
	c[1].load.prefill_tokens = 500;
	c[2].load.queued = 1;
	c[2].load.running = 1;
	c[2].load.prefill_tokens = 100;
	hold(&c[0], KVDEX_GPU, 4); /* the cache does not matter */
	cr_assert(eq(u32, decide(r, &q, c, 3, &d), 3));
	cr_assert(eq(u32, c[1].worker_id, 2));
	kvdex_router_destroy(r);
}

/* 6. SGLang: a match above the threshold goes to the deepest holder; at
 * exactly the threshold it does not (strictly greater), and the smallest
 * tree wins. */
Test(route_policy, sglang_threshold)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_SGLANG, 1);
	struct kvdex_route_req q = req(8, 16, 0);
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};

	/* Each decision grows the chosen worker's tree by the unmatched blocks. */
	hold(&c[1], KVDEX_GPU, 5);
	cr_assert(eq(u32, decide(r, &q, c, 3, &d), 2)); /* 5/8 > 0.5 */
	cr_assert(eq(int, kvdex_route_done(r, d.ticket, 1.0), 0));
	{
		struct kvdex_route_cand e[3] = {cand(1), cand(2), cand(3)};

		hold(&e[0], KVDEX_GPU, 4); /* 4/8 = 0.5: not above */
		/* Trees 0, 3, 0: the first smallest. */
		cr_assert(eq(u32, decide(r, &q, e, 3, &d), 1));
		cr_assert(strstr(REASON(d), "smallest tree") != NULL);
	}
	{
		/* Trees now: 1 -> 4 blocks, 2 -> 3 blocks, 3 -> 0. */
		struct kvdex_route_cand e[3] = {cand(1), cand(2), cand(3)};

		hold(&e[0], KVDEX_GPU, 2);
		cr_assert(eq(u32, decide(r, &q, e, 3, &d), 3));
	}
	kvdex_router_destroy(r);
}

/* 7. SGLang imbalance switch: once max - min running > 32 (and max > min *
 * 1.0001) the shortest queue wins even against a full match. */
Test(route_policy, sglang_imbalance)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_SGLANG, 1);
	struct kvdex_route_req q = req(8, 16, 0);
	struct kvdex_route_decision d;

	for (unsigned k = 0; k < 33; k++) {
		struct kvdex_route_cand c[2] = {cand(1), cand(2)};

		hold(&c[0], KVDEX_GPU, 8);
		/* Up to 32 running on worker 1 the gap is <= 32: cache wins. */
		cr_assert(eq(u32, decide(r, &q, c, 2, &d), 1));
	}
	{
		/* 33 vs 0: imbalanced. */
		struct kvdex_route_cand c[2] = {cand(1), cand(2)};

		hold(&c[0], KVDEX_GPU, 8);
		cr_assert(eq(u32, decide(r, &q, c, 2, &d), 2));
		cr_assert(strstr(REASON(d), "imbalance") != NULL);
	}
	kvdex_router_destroy(r);
}

/* 8. Dynamo: tier credits (GPU 1, host 0.75, disk 0.25) and the router's
 * own active blocks. */
Test(route_policy, dynamo_tier_credits)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_DYNAMO, 1);
	struct kvdex_route_req q = req(16, 16, 0);
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};

	hold(&c[0], KVDEX_DISK, 8);
	hold(&c[1], KVDEX_HOST, 8);
	hold(&c[2], KVDEX_GPU, 8);
	cr_assert(eq(u32, decide(r, &q, c, 3, &d), 3));
	/* cost = max(16 - credit, 0) + 16 request blocks */
	cr_assert(eq(dbl, c[0].score, 8.0 + 16.0));
	cr_assert(eq(dbl, c[1].score, 10.0 + 16.0));
	cr_assert(eq(dbl, c[2].score, 14.0 + 16.0));
	{
		/* Worker 3 now carries 8 prefill + 16 decode blocks: host wins. */
		struct kvdex_route_cand e[3] = {cand(1), cand(2), cand(3)};

		hold(&e[0], KVDEX_DISK, 8);
		hold(&e[1], KVDEX_HOST, 8);
		hold(&e[2], KVDEX_GPU, 8);
		cr_assert(eq(u32, decide(r, &q, e, 3, &d), 2));
		cr_assert(eq(dbl, e[2].score, 16.0 + 32.0));
	}
	kvdex_router_destroy(r);
}

/* 9. Dynamo softmax (temperature > 0): seeded, and it spreads. */
Test(route_policy, dynamo_softmax)
{
	struct kvdex_route_opts o;
	struct kvdex_router *a, *b;
	struct kvdex_route_decision d;
	unsigned seen[3] = {0};

	kvdex_route_opts_init(&o, sizeof(o));
	o.policy = KVDEX_ROUTE_DYNAMO;
	o.dynamo.temperature = 1.0;
	o.seed = 42;
	a = mk_opts(&o);
	b = mk_opts(&o);
	for (unsigned k = 0; k < 300; k++) {
		struct kvdex_route_req q = req(16, 16, k);
		struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};
		struct kvdex_route_cand e[3] = {cand(1), cand(2), cand(3)};
		uint32_t w;

		hold(&c[2], KVDEX_GPU, 8);
		hold(&e[2], KVDEX_GPU, 8);
		w = decide(a, &q, c, 3, &d);
		cr_assert(eq(int, kvdex_route_done_at(a, d.ticket, 1.0, k), 0));
		cr_assert(eq(u32, decide(b, &q, e, 3, &d), w));
		cr_assert(eq(int, kvdex_route_done_at(b, d.ticket, 1.0, k), 0));
		seen[w - 1]++;
	}
	/* The holder is likeliest, the others still get some. */
	cr_assert(gt(u32, seen[2], seen[0]));
	cr_assert(gt(u32, seen[0], 0));
	cr_assert(gt(u32, seen[1], 0));
	kvdex_router_destroy(a);
	kvdex_router_destroy(b);
}

/* 10. llm-d: consecutive prefix blocks weighted by tier (gpu 1, cpu 0.8),
 * min-max normalised over indexed pods, plus kv and queue scorers. */
Test(route_policy, llmd_prefix_score)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_LLMD, 1);
	struct kvdex_route_req q = req(8, 16, 0);
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};

	hold(&c[0], KVDEX_GPU, 4); /* 4.0 */
	hold(&c[1], KVDEX_GPU, 2); /* 2.0 + 4 x 0.8 = 5.2 */
	hold(&c[1], KVDEX_HOST, 4);
	cr_assert(eq(u32, decide(r, &q, c, 3, &d), 2));
	/* 2 x 1.0 (prefix) + 1 x 1.0 (kv idle) + 1 x 1.0 (queues equal) */
	cr_assert(eq(dbl, c[0].score, 4.0));
	cr_assert(eq(u32, c[1].worker_id, 1)); /* the minimum prefix: 0 */
	cr_assert(eq(dbl, c[1].score, 2.0));
	cr_assert(eq(u32, c[2].worker_id, 3)); /* not indexed: 0 */
	cr_assert(eq(dbl, c[2].score, 2.0));
	{
		/* Equal prefixes: the shorter waiting queue and emptier KV win. */
		struct kvdex_route_cand e[2] = {cand(1), cand(2)};

		hold(&e[0], KVDEX_GPU, 4);
		hold(&e[1], KVDEX_GPU, 4);
		e[0].load.queued = 5;
		e[1].load.kv_util_permille = 500;
		cr_assert(eq(u32, decide(r, &q, e, 2, &d), 2));
		cr_assert(eq(dbl, e[0].score, 2.0 + 0.5 + 1.0));
		cr_assert(eq(dbl, e[1].score, 2.0 + 1.0 + 0.0)); /* worker 1 */
	}
	kvdex_router_destroy(r);
}

/* 11. LBGR's margin: a later candidate replaces the best only if its
 * prediction is lower by more than 1. */
Test(route_policy, lbgr_margin)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_LBGR, 1);
	struct kvdex_route_req q = {.nblocks = 100, .ntokens = 100, .block_size = 1};
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[2] = {cand(1), cand(2)};

	hold(&c[1], KVDEX_GPU, 1); /* 99 vs 100: not better by > 1 */
	cr_assert(eq(u32, decide(r, &q, c, 2, &d), 1));
	cr_assert(eq(dbl, c[0].score, 100.0));
	cr_assert(eq(int, kvdex_route_done_at(r, d.ticket, -1.0, 0), 0));
	{
		struct kvdex_route_cand e[2] = {cand(1), cand(2)};

		hold(&e[1], KVDEX_GPU, 2); /* 98 + 1 < 100 */
		cr_assert(eq(u32, decide(r, &q, e, 2, &d), 2));
		cr_assert(eq(dbl, e[0].score, 98.0));
	}
	kvdex_router_destroy(r);
}

/* 12. LBGR's load decays by 31/32 (integer) every 20 ms, and a completion
 * releases what is left of its reservation. */
Test(route_policy, lbgr_decay_release)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_LBGR, 1);
	struct kvdex_route_req q = {.nblocks = 100, .ntokens = 100, .block_size = 1, .now_ms = 0};
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[1] = {cand(1)};
	uint64_t t1;

	decide(r, &q, c, 1, &d); /* load 100 */
	t1 = d.ticket;
	q.now_ms = 20;
	decide(r, &q, c, 1, &d); /* pred = 100 + 96 */
	cr_assert(eq(dbl, c[0].score, 100.0 + 96.0));
	q.now_ms = 40; /* (96 + 100) * 31/32 = 189 */
	decide(r, &q, c, 1, &d);
	cr_assert(eq(dbl, c[0].score, 100.0 + 189.0));
	/* Release ticket 1 at 40 ms: round(100 * (31/32)^2) = 94. */
	cr_assert(eq(int, kvdex_route_done_at(r, t1, -1.0, 40), 0));
	cr_assert(eq(int, kvdex_route_done_at(r, t1, -1.0, 40), -ENOENT));
	q.now_ms = 40;
	decide(r, &q, c, 1, &d);
	cr_assert(eq(dbl, c[0].score, 100.0 + (189.0 + 100.0 - 94.0)));
	kvdex_router_destroy(r);
}

/* 13. LBGR learns each worker's bias from completions (RLS, bias only). */
Test(route_policy, lbgr_learns_residual)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_LBGR, 1);
	struct kvdex_route_req q = {.nblocks = 10, .ntokens = 10, .block_size = 1, .now_ms = 0};
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[2] = {cand(1), cand(2)};

	decide(r, &q, c, 2, &d); /* worker 1, base 10, load 0 */
	cr_assert(eq(u32, d.worker_id, 1));
	/* Latency 510: residual 500; P0 = 1e6 makes theta ~ 500 at once. */
	cr_assert(eq(int, kvdex_route_done_at(r, d.ticket, 510.0, 0), 0));
	{
		struct kvdex_route_cand e[2] = {cand(1), cand(2)};

		decide(r, &q, e, 2, &d);
		cr_assert(eq(u32, d.worker_id, 2));
		cr_assert(gt(dbl, e[1].score, 509.0)); /* worker 1: 10 + ~500 */
		cr_assert(lt(dbl, e[1].score, 510.5));
	}
	kvdex_router_destroy(r);
}

/* 14. kvdex: at equal load a GPU holder beats a disk holder. */
Test(route_policy, kvdex_gpu_over_disk)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_KVDEX, 1);
	struct kvdex_route_req q = req(64, 16, 0);
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};

	hold(&c[0], KVDEX_DISK, 64);
	hold(&c[1], KVDEX_GPU, 64);
	for (unsigned i = 0; i < 3; i++) {
		c[i].load.running = 2;
		c[i].load.prefill_tokens = 256;
	}
	cr_assert(eq(u32, decide(r, &q, c, 3, &d), 2));
	cr_assert(eq(u32, c[1].worker_id, 1)); /* disk still beats cold */
	cr_assert(eq(u32, c[2].worker_id, 3));
	cr_assert(strstr(REASON(d), "ttft") != NULL);
	kvdex_router_destroy(r);
}

/* 15. kvdex: a cold idle worker beats an overloaded holder (no hot spot). */
Test(route_policy, kvdex_cold_over_overloaded)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_KVDEX, 1);
	struct kvdex_route_req q = req(64, 16, 0);
	struct kvdex_route_decision d;
	struct kvdex_route_cand c[2] = {cand(1), cand(2)};

	hold(&c[0], KVDEX_GPU, 64);
	c[0].load.queued = 40;
	c[0].load.running = 16;
	c[0].load.prefill_tokens = 40 * 1024;
	cr_assert(eq(u32, decide(r, &q, c, 2, &d), 2));
	{
		/* With a light load the holder keeps its affinity. */
		struct kvdex_route_cand e[2] = {cand(1), cand(2)};

		hold(&e[0], KVDEX_GPU, 64);
		e[0].load.running = 4;
		e[0].load.prefill_tokens = 512;
		cr_assert(eq(u32, decide(r, &q, e, 2, &d), 1));
	}
	kvdex_router_destroy(r);
}

/* 16. kvdex: stale rows and near-full KV are penalised; speculative holders
 * count as cached, discounted. */
Test(route_policy, kvdex_guards)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_KVDEX, 1);
	struct kvdex_route_req q = req(8, 16, 0);
	struct kvdex_route_decision d;

	{
		struct kvdex_route_cand c[2] = {cand(1), cand(2)};

		c[0].load_age_ms = KVDEX_LOAD_AGE_NEVER; /* unknown load */
		cr_assert(eq(u32, decide(r, &q, c, 2, &d), 2));
	}
	{
		struct kvdex_route_cand c[2] = {cand(1), cand(2)};

		c[0].load.kv_util_permille = 990;
		c[1].load.kv_util_permille = 500;
		cr_assert(eq(u32, decide(r, &q, c, 2, &d), 2));
	}
	/* A fresh router: the choices above count as recent work on worker 2. */
	kvdex_router_destroy(r);
	r = mk(KVDEX_ROUTE_KVDEX, 1);
	{
		struct kvdex_route_cand c[3] = {cand(1), cand(2), cand(3)};

		hold(&c[0], KVDEX_GPU, 8); /* held only speculatively */
		c[0].spec_blocks = 8;
		hold(&c[1], KVDEX_GPU, 8); /* really held */
		cr_assert(eq(u32, decide(r, &q, c, 3, &d), 2));
		cr_assert(eq(u32, c[1].worker_id, 1)); /* the guess still beats cold */
	}
	kvdex_router_destroy(r);
}

/* 17. kvdex: its own recent assignments count until the load row shows
 * them, so a burst of identical cold requests spreads. */
Test(route_policy, kvdex_burst_spreads)
{
	struct kvdex_router *r = mk(KVDEX_ROUTE_KVDEX, 1);
	struct kvdex_route_req q = req(64, 16, 100);
	struct kvdex_route_decision d;
	unsigned seen[4] = {0};

	for (unsigned k = 0; k < 4; k++) {
		struct kvdex_route_cand c[4] = {cand(1), cand(2), cand(3), cand(4)};

		for (unsigned i = 0; i < 4; i++) {
			c[i].load_age_ms = 500; /* rows older than the burst */
		}
		seen[decide(r, &q, c, 4, &d) - 1]++;
	}
	for (unsigned i = 0; i < 4; i++) {
		cr_assert(eq(u32, seen[i], 1));
	}
	kvdex_router_destroy(r);
}

/* 17b. kvdex's latency bound: in a fleet with nothing queued, a holder whose
 * own TTFT (its queue) is well above an idle miss's loses to the miss even
 * though the miss weight alone would keep the affinity; once every candidate
 * has a queue the bound is gone and the holder wins again. 64 blocks x 16
 * tokens at 0.125 ms: a miss costs 128 ms; the holder's queue is 300 ms. */
static uint32_t
bound_case(const struct kvdex_route_opts *o, uint32_t queued_each, struct kvdex_route_decision *d)
{
	struct kvdex_router *r = mk_opts(o);
	struct kvdex_route_req q = req(64, 16, 0);
	struct kvdex_route_cand c[4] = {cand(1), cand(2), cand(3), cand(4)};
	uint32_t id;

	hold(&c[0], KVDEX_GPU, 64);
	c[0].load.running = 1;
	c[0].load.prefill_tokens = 2400;
	for (unsigned i = 0; i < 4; i++) {
		c[i].load.queued = queued_each;
	}
	id = decide(r, &q, c, 4, d);
	kvdex_router_destroy(r);
	return id;
}

Test(route_policy, kvdex_latency_bound)
{
	struct kvdex_route_opts o;
	struct kvdex_route_decision d;

	kvdex_route_opts_init(&o, sizeof(o));
	o.policy = KVDEX_ROUTE_KVDEX;
	cr_assert(eq(dbl, o.kvdex.bound_rel, 0.35));
	cr_assert(eq(dbl, o.kvdex.bound_ms, 100.0));
	/* Idle fleet: 300 ms > 128 + 0.35 x 128 + 100: the holder is outside. */
	cr_assert(ne(u32, bound_case(&o, 0, &d), 1));
	cr_assert(strstr(REASON(d), "1 outside the bound") != NULL, "%s", REASON(d));
	/* Without the bound the miss weight keeps the holder. */
	o.kvdex.bound_ms = -1.0;
	cr_assert(eq(u32, bound_case(&o, 0, &d), 1));
	/* Every candidate queued: saturated, no bound. */
	o.kvdex.bound_ms = 100.0;
	cr_assert(eq(u32, bound_case(&o, 1, &d), 1));
	cr_assert(strstr(REASON(d), "0 outside the bound") != NULL, "%s", REASON(d));
	/* A looser bound takes the holder back in. */
	o.kvdex.bound_ms = 200.0;
	cr_assert(eq(u32, bound_case(&o, 0, &d), 1));
	o.kvdex.bound_rel = -0.1;
	cr_assert(eq(int, kvdex_router_create(&o, &(struct kvdex_router *){NULL}), -EINVAL));
}

/* 18. Every policy replays exactly under the same seed. */
Test(route_policy, reproducible)
{
	for (unsigned p = 0; p < KVDEX_ROUTE_NPOLICIES; p++) {
		struct kvdex_router *a = mk((enum kvdex_route_policy)p, 99);
		struct kvdex_router *b = mk((enum kvdex_route_policy)p, 99);
		uint64_t s = 12345;

		for (unsigned k = 0; k < 300; k++) {
			struct kvdex_route_cand c[6], e[6];
			struct kvdex_route_req q = req(32, 16, k * 7);
			struct kvdex_route_decision da, db;

			for (unsigned i = 0; i < 6; i++) {
				s = s * 6364136223846793005ull + 1442695040888963407ull;
				c[i] = cand(i + 1);
				hold(&c[i], (unsigned)(s >> 60) % 4, (uint16_t)((s >> 40) % 33));
				c[i].load.queued = (uint32_t)(s >> 20) % 5;
				c[i].load.prefill_tokens = (s >> 8) % 2000;
				e[i] = c[i];
			}
			decide(a, &q, c, 6, &da);
			decide(b, &q, e, 6, &db);
			cr_assert(eq(u32, da.worker_id, db.worker_id), "policy %u step %u", p, k);
			cr_assert(eq(str, REASON(da), REASON(db)));
			if (k % 3 == 0) {
				kvdex_route_done_at(a, da.ticket, 100.0 + k, k * 7 + 5);
				kvdex_route_done_at(b, db.ticket, 100.0 + k, k * 7 + 5);
			}
		}
		kvdex_router_destroy(a);
		kvdex_router_destroy(b);
	}
}

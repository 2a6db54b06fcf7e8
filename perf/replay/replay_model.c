/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated worker's service-time model (kvrouting.md §5.1, the same
 * constants as the reference simulator kvsim): one request at a time, FCFS,
 *
 *   service = base + prefill_per_token * uncached prompt tokens
 *                  + decode_per_token * output tokens
 *   TTFT    = queueing + base + prefill_per_token * uncached
 *   E2E     = queueing + service
 *
 * with base 10 ms, 0.14 ms per uncached token (about 7 K tokens/s of
 * prefill, an 8B model on one L40) and 12 ms per output token. These are
 * assumptions, not measurements; every constant is a flag.
 */
#include "perf/replay/replay.h"

#include <stdlib.h>

void
replay_model_init(struct replay_model *m)
{
	m->base_ms = 10.0;
	m->prefill_ms_per_tok = 0.14;
	m->decode_ms_per_tok = 12.0;
}

double
replay_model_prefill_ms(const struct replay_model *m, uint32_t uncached)
{
	return m->base_ms + m->prefill_ms_per_tok * uncached;
}

double
replay_model_service_ms(const struct replay_model *m, uint32_t uncached, uint32_t output_tokens)
{
	return replay_model_prefill_ms(m, uncached) + m->decode_ms_per_tok * output_tokens;
}

static int
dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

void
replay_sort(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), dcmp);
}

double
replay_pct(const double *v, size_t n, double q)
{
	size_t k;

	if (n == 0) {
		return 0.0;
	}
	/* nearest rank: the smallest value with at least q * n values <= it */
	k = (size_t)((double)n * q + 0.999999999);
	k = k == 0 ? 1 : k > n ? n : k;
	return v[k - 1];
}

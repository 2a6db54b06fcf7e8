/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The synthetic chained index of kvdex-bench lookup and baseline: one
 * generator, so that the same seed gives both subcommands the same keys and
 * holders, and their results can be read side by side.
 *
 * Draws, in this order, from one splitmix64 stream seeded with the seed: one
 * kvdex_bench_rng_next() per block key, then per chain H draws of a partial
 * Fisher-Yates shuffle of the worker ids 1..W (the permutation carries over
 * from chain to chain). Changing that order changes every published figure
 * that names a seed, so it is fixed.
 */
#include "perf/bench.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
kvdex_bench_synth_fini(struct kvdex_bench_synth *d)
{
	if (!d) {
		return;
	}
	free(d->keys);
	free(d->holders);
	memset(d, 0, sizeof(*d));
}

/* H distinct workers per chain: a partial Fisher-Yates shuffle of the worker
 * ids, the array staying a permutation between draws. */
static void
synth_draw_holders(struct kvdex_bench_synth *d, struct kvdex_bench_rng *rng, uint32_t *perm)
{
	for (unsigned w = 0; w < d->workers; w++) {
		perm[w] = w + 1;
	}
	for (uint64_t c = 0; c < d->nchains; c++) {
		for (unsigned j = 0; j < d->h; j++) {
			unsigned k = j + (unsigned)kvdex_bench_rng_below(rng, d->workers - j);
			uint32_t t = perm[j];

			perm[j] = perm[k];
			perm[k] = t;
			d->holders[c * d->h + j] = perm[j];
		}
	}
}

int
kvdex_bench_synth_init(struct kvdex_bench_synth *d, uint64_t blocks, unsigned holders,
		       unsigned workers, unsigned len, uint64_t seed)
{
	struct kvdex_bench_rng rng = {.s = seed};
	uint32_t *perm;

	assert(len > 0 && blocks >= len && holders <= workers);
	memset(d, 0, sizeof(*d));
	d->len = len;
	d->h = holders;
	d->workers = workers;
	d->nblocks = blocks;
	d->nfull = blocks / len;
	d->nchains = (blocks + len - 1) / len;
	d->keys = malloc(d->nblocks * sizeof(*d->keys));
	d->holders = malloc(d->nchains * d->h * sizeof(*d->holders));
	perm = malloc(workers * sizeof(*perm));
	if (!d->keys || !d->holders || !perm) {
		free(perm);
		kvdex_bench_synth_fini(d);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < d->nblocks; i++) {
		d->keys[i] = kvdex_bench_rng_next(&rng);
	}
	synth_draw_holders(d, &rng, perm);
	free(perm);
	return 0;
}

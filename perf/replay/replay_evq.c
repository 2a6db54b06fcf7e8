/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The replay's event queue: a binary min-heap of (time, seq) so that events
 * at the same simulated time pop in the order they were pushed, which makes
 * a run a pure function of its inputs and seeds.
 */
#include "perf/replay/replay.h"

#include <errno.h>
#include <stdlib.h>

static bool
ev_before(const struct replay_ev *a, const struct replay_ev *b)
{
	if (a->t != b->t) {
		return a->t < b->t;
	}
	return a->seq < b->seq;
}

int
replay_evq_push(struct replay_evq *q, double t, uint32_t type, uint32_t idx)
{
	size_t i;

	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 256;
		struct replay_ev *h = realloc(q->h, cap * sizeof(*h));

		if (h == NULL) {
			return -ENOMEM;
		}
		q->h = h;
		q->cap = cap;
	}
	i = q->n++;
	q->h[i] = (struct replay_ev){t, q->next_seq++, type, idx};
	while (i > 0 && ev_before(&q->h[i], &q->h[(i - 1) / 2])) {
		struct replay_ev tmp = q->h[i];

		q->h[i] = q->h[(i - 1) / 2];
		q->h[(i - 1) / 2] = tmp;
		i = (i - 1) / 2;
	}
	return 0;
}

bool
replay_evq_pop(struct replay_evq *q, struct replay_ev *out)
{
	size_t i = 0;

	if (q->n == 0) {
		return false;
	}
	*out = q->h[0];
	q->h[0] = q->h[--q->n];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		struct replay_ev tmp;

		if (l < q->n && ev_before(&q->h[l], &q->h[m])) {
			m = l;
		}
		if (r < q->n && ev_before(&q->h[r], &q->h[m])) {
			m = r;
		}
		if (m == i) {
			break;
		}
		tmp = q->h[i];
		q->h[i] = q->h[m];
		q->h[m] = tmp;
		i = m;
	}
	return true;
}

void
replay_evq_fini(struct replay_evq *q)
{
	if (q == NULL) {
		return;
	}
	free(q->h);
	q->h = NULL;
	q->n = q->cap = 0;
}

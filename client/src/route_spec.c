/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Speculative entries of routing decisions: "the chosen worker will soon
 * hold these blocks", published as speculative STORED events that expire
 * after spec_ttl_ms unless the worker's real STORED converts them (the
 * server turns a speculative holder into a real one on a real store).
 *
 * A router is not the worker's publisher, so these go out as Publish
 * batches with speculative_only set: the server checks that every event is
 * a speculative STORED and leaves the worker's incarnation and seq stream
 * alone (docs/PROTOCOL.md). The framing, placement and exchange are
 * client.c's (kvdex_client_publish() with KVDEX_PUB_SPECULATIVE_ONLY): each
 * server gets the events of the keys it owns, all are sent first, then the
 * replies are collected, so the cost is one exchange whatever the number of
 * servers.
 *
 * Locking: none (the client's thread).
 */
#include "client/src/route_internal.h"

#include <errno.h>
#include <stdlib.h>

int
kvdex_route_speculate(struct kvdex_router *r, struct kvdex_client *c, uint32_t ns,
		      const uint64_t *keys, size_t n, size_t from, uint32_t worker_id,
		      uint16_t dp_rank)
{
	const struct kvdex_publish_hdr hdr = {.worker_id = worker_id, .dp_rank = dp_rank};
	struct kvdex_event *ev = calloc(n - from, sizeof(*ev));
	int rc;

	if (ev == NULL) {
		return -ENOMEM;
	}
	for (size_t k = from; k < n; k++) {
		ev[k - from] = (struct kvdex_event){
			.type = KVDEX_EV_STORED,
			.tier = r->o.spec_tier,
			.flags = KVDEX_EVF_SPECULATIVE,
			.ns = ns,
			.key = keys[k],
			.spec_ttl_ms = r->o.spec_ttl_ms,
		};
	}
	rc = kvdex_client_publish(c, &hdr, ev, n - from, KVDEX_PUB_SPECULATIVE_ONLY, NULL);
	free(ev);
	return rc;
}

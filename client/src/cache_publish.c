/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Glue from the cache manager's publish callback to kvdex_publish(): the
 * production path of kvdex/cache.h. One call of the callback (one cache
 * call's events) becomes one or more publish batches of consecutive seqs, so
 * the servers apply the events in the cache's order.
 */
#include <errno.h>
#include <stddef.h>

#include "kvdex/cache.h"

#ifndef KVDEX_EXPORT
#define KVDEX_EXPORT __attribute__((visibility("default")))
#endif

#define CACHE_PUBLISH_MAX_EVENTS 65536u

KVDEX_EXPORT int
kvdex_cache_publish_client(void *arg, const struct kvdex_event *ev, size_t n)
{
	struct kvdex_cache_publisher *p = arg;
	size_t max, off = 0;

	if (!p || !p->client || (!ev && n > 0)) {
		return -EINVAL;
	}
	max = p->max_events ? p->max_events : CACHE_PUBLISH_MAX_EVENTS;
	while (off < n) {
		size_t k = n - off < max ? n - off : max;
		int rc = kvdex_publish(p->client, &p->hdr, ev + off, k, &p->last);

		p->hdr.seq++;
		if (rc) {
			return rc;
		}
		off += k;
	}
	return 0;
}

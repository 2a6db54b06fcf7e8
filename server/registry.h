/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Namespaces and publishers: writer-side registries in cds_lfht tables.
 *
 * Namespaces map the tuple (model, adapter, tenant, block size, hash scheme)
 * to a dense u16 id, from 1, local to this server. Publishers are keyed by
 * slot (one per worker dp rank) and carry the incarnation and last seq of
 * the publish stream (docs/DESIGN.md §4).
 *
 * Context: writer thread. Entries live until destroy (after rcu_barrier()).
 */
#ifndef KVDEX_SERVER_REGISTRY_H
#define KVDEX_SERVER_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_NS_STR_MAX 1024u

struct kvdex_namespaces;

struct kvdex_ns_key {
	const char *model;
	const char *adapter;
	const char *tenant;
	uint32_t block_size;
	const char *hash_scheme;
};

/* @return 0, -ENOMEM. Context: main thread. Ownership: *out, destroy. */
int kvdex_namespaces_create(uint32_t max, struct kvdex_namespaces **out);
void kvdex_namespaces_destroy(struct kvdex_namespaces *nss);

/*
 * Resolve a namespace, creating it if `create`.
 * @return 0 with *id (and *created), -ENOENT (absent, !create), -ENOSPC
 *         (table full), -EINVAL (a string over KVDEX_NS_STR_MAX), -ENOMEM.
 * Ownership: strings are copied.
 */
int kvdex_namespaces_get(struct kvdex_namespaces *nss, const struct kvdex_ns_key *k, bool create,
			 uint16_t *id, bool *created);

/* Is id a namespace of this server? */
bool kvdex_namespaces_valid(const struct kvdex_namespaces *nss, uint32_t id);
uint32_t kvdex_namespaces_count(const struct kvdex_namespaces *nss);

struct kvdex_publishers;

struct kvdex_publisher {
	uint64_t incarnation;
	uint64_t last_seq;
};

int kvdex_publishers_create(struct kvdex_publishers **out);
void kvdex_publishers_destroy(struct kvdex_publishers *pubs);

/* State of the publisher on `slot`, NULL if it never published. The pointer
 * stays valid until destroy. */
struct kvdex_publisher *kvdex_publishers_find(struct kvdex_publishers *pubs, uint16_t slot);

/* Start tracking a publisher. @return the new state, NULL on ENOMEM. */
struct kvdex_publisher *kvdex_publishers_add(struct kvdex_publishers *pubs, uint16_t slot,
					     uint64_t incarnation, uint64_t last_seq);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_REGISTRY_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Namespace and publisher registries (see registry.h).
 *
 * Both are cds_lfht tables updated by the writer only (so no add_unique
 * races: the writer looks up, then adds) and read under rcu_read_lock().
 * Nothing is deleted while the server runs; destroy deletes every node,
 * waits for callbacks with rcu_barrier() and destroys the table.
 */
#include "server/registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>
#include <urcu/rculfhash.h>
#include <xxhash.h>

#include "common/log.h"

#define LOG_COMP "server.registry"

struct kvdex_ns {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	uint64_t hash;
	uint16_t id;
	uint32_t block_size;
	char *model;
	char *adapter;
	char *tenant;
	char *hash_scheme;
};

struct kvdex_namespaces {
	struct cds_lfht *ht;
	uint32_t max;
	uint32_t count;
};

static const char *
nz(const char *s)
{
	return s != NULL ? s : "";
}

static uint64_t
ns_hash(const struct kvdex_ns_key *k)
{
	uint8_t buf[4 * (KVDEX_NS_STR_MAX + 1) + 4];
	const char *parts[4] = {nz(k->model), nz(k->adapter), nz(k->tenant), nz(k->hash_scheme)};
	size_t n = 0;

	/* Each string with its NUL, so ("ab","c") != ("a","bc"). The caller
	 * checked the lengths. */
	for (int i = 0; i < 4; i++) {
		size_t l = strlen(parts[i]) + 1;

		memcpy(buf + n, parts[i], l);
		n += l;
	}
	for (int i = 0; i < 4; i++) {
		buf[n++] = (uint8_t)(k->block_size >> (8 * i));
	}
	return XXH3_64bits(buf, n);
}

static int
ns_match(struct cds_lfht_node *node, const void *key)
{
	const struct kvdex_ns *ns = caa_container_of(node, struct kvdex_ns, node);
	const struct kvdex_ns_key *k = key;

	return ns->block_size == k->block_size && strcmp(ns->model, nz(k->model)) == 0 &&
	       strcmp(ns->adapter, nz(k->adapter)) == 0 && strcmp(ns->tenant, nz(k->tenant)) == 0 &&
	       strcmp(ns->hash_scheme, nz(k->hash_scheme)) == 0;
}

int
kvdex_namespaces_create(uint32_t max, struct kvdex_namespaces **out)
{
	struct kvdex_namespaces *nss = calloc(1, sizeof(*nss));

	if (nss == NULL) {
		return -ENOMEM;
	}
	nss->max = max > UINT16_MAX ? UINT16_MAX : max;
	nss->ht = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	if (nss->ht == NULL) {
		free(nss);
		return -ENOMEM;
	}
	*out = nss;
	return 0;
}

static void
ns_free(struct kvdex_ns *ns)
{
	if (ns == NULL) {
		return;
	}
	free(ns->model);
	free(ns->adapter);
	free(ns->tenant);
	free(ns->hash_scheme);
	free(ns);
}

static void
ns_free_rcu(struct rcu_head *head)
{
	ns_free(caa_container_of(head, struct kvdex_ns, rcu));
}

void
kvdex_namespaces_destroy(struct kvdex_namespaces *nss)
{
	struct cds_lfht_iter it;
	struct kvdex_ns *ns;

	if (nss == NULL) {
		return;
	}
	rcu_read_lock();
	cds_lfht_for_each_entry(nss->ht, &it, ns, node)
	{
		if (cds_lfht_del(nss->ht, &ns->node) == 0) {
			call_rcu(&ns->rcu, ns_free_rcu);
		}
	}
	rcu_read_unlock();
	rcu_barrier();
	cds_lfht_destroy(nss->ht, NULL);
	free(nss);
}

static struct kvdex_ns *
ns_new(const struct kvdex_ns_key *k, uint64_t hash, uint16_t id)
{
	struct kvdex_ns *ns = calloc(1, sizeof(*ns));

	if (ns == NULL) {
		return NULL;
	}
	ns->hash = hash;
	ns->id = id;
	ns->block_size = k->block_size;
	ns->model = strdup(nz(k->model));
	ns->adapter = strdup(nz(k->adapter));
	ns->tenant = strdup(nz(k->tenant));
	ns->hash_scheme = strdup(nz(k->hash_scheme));
	if (ns->model == NULL || ns->adapter == NULL || ns->tenant == NULL ||
	    ns->hash_scheme == NULL) {
		ns_free(ns);
		return NULL;
	}
	cds_lfht_node_init(&ns->node);
	return ns;
}

int
kvdex_namespaces_get(struct kvdex_namespaces *nss, const struct kvdex_ns_key *k, bool create,
		     uint16_t *id, bool *created)
{
	struct cds_lfht_node *node;
	struct cds_lfht_iter it;
	struct kvdex_ns *ns;
	uint64_t hash;

	if (strlen(nz(k->model)) > KVDEX_NS_STR_MAX || strlen(nz(k->adapter)) > KVDEX_NS_STR_MAX ||
	    strlen(nz(k->tenant)) > KVDEX_NS_STR_MAX ||
	    strlen(nz(k->hash_scheme)) > KVDEX_NS_STR_MAX) {
		return -EINVAL;
	}
	hash = ns_hash(k);
	*created = false;
	rcu_read_lock();
	cds_lfht_lookup(nss->ht, (unsigned long)hash, ns_match, k, &it);
	node = cds_lfht_iter_get_node(&it);
	if (node != NULL) {
		*id = caa_container_of(node, struct kvdex_ns, node)->id;
	}
	rcu_read_unlock();
	if (node != NULL) {
		return 0;
	}
	if (!create) {
		return -ENOENT;
	}
	if (nss->count >= nss->max) {
		return -ENOSPC;
	}
	ns = ns_new(k, hash, (uint16_t)(nss->count + 1));
	if (ns == NULL) {
		return -ENOMEM;
	}
	rcu_read_lock();
	cds_lfht_add(nss->ht, (unsigned long)hash, &ns->node);
	rcu_read_unlock();
	nss->count++;
	*id = ns->id;
	*created = true;
	KVDEX_LOG_INFO(LOG_COMP, "namespace %u: model '%s' adapter '%s' tenant '%s' block %u '%s'",
		       ns->id, ns->model, ns->adapter, ns->tenant, ns->block_size, ns->hash_scheme);
	return 0;
}

bool
kvdex_namespaces_valid(const struct kvdex_namespaces *nss, uint32_t id)
{
	return id >= 1 && id <= nss->count;
}

uint32_t
kvdex_namespaces_count(const struct kvdex_namespaces *nss)
{
	return nss->count;
}

/* ---- publishers ------------------------------------------------------------ */

struct kvdex_pub_node {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	uint16_t slot;
	struct kvdex_publisher st;
};

struct kvdex_publishers {
	struct cds_lfht *ht;
};

static unsigned long
slot_hash(uint16_t slot)
{
	return (unsigned long)XXH3_64bits(&slot, sizeof(slot));
}

static int
pub_match(struct cds_lfht_node *node, const void *key)
{
	return caa_container_of(node, struct kvdex_pub_node, node)->slot == *(const uint16_t *)key;
}

int
kvdex_publishers_create(struct kvdex_publishers **out)
{
	struct kvdex_publishers *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		return -ENOMEM;
	}
	p->ht = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	if (p->ht == NULL) {
		free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

static void
pub_free_rcu(struct rcu_head *head)
{
	free(caa_container_of(head, struct kvdex_pub_node, rcu));
}

void
kvdex_publishers_destroy(struct kvdex_publishers *pubs)
{
	struct cds_lfht_iter it;
	struct kvdex_pub_node *p;

	if (pubs == NULL) {
		return;
	}
	rcu_read_lock();
	cds_lfht_for_each_entry(pubs->ht, &it, p, node)
	{
		if (cds_lfht_del(pubs->ht, &p->node) == 0) {
			call_rcu(&p->rcu, pub_free_rcu);
		}
	}
	rcu_read_unlock();
	rcu_barrier();
	cds_lfht_destroy(pubs->ht, NULL);
	free(pubs);
}

struct kvdex_publisher *
kvdex_publishers_find(struct kvdex_publishers *pubs, uint16_t slot)
{
	struct cds_lfht_node *node;
	struct cds_lfht_iter it;

	rcu_read_lock();
	cds_lfht_lookup(pubs->ht, slot_hash(slot), pub_match, &slot, &it);
	node = cds_lfht_iter_get_node(&it);
	rcu_read_unlock();
	return node != NULL ? &caa_container_of(node, struct kvdex_pub_node, node)->st : NULL;
}

struct kvdex_publisher *
kvdex_publishers_add(struct kvdex_publishers *pubs, uint16_t slot, uint64_t incarnation,
		     uint64_t last_seq)
{
	struct kvdex_pub_node *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		return NULL;
	}
	p->slot = slot;
	p->st.incarnation = incarnation;
	p->st.last_seq = last_seq;
	cds_lfht_node_init(&p->node);
	rcu_read_lock();
	cds_lfht_add(pubs->ht, slot_hash(slot), &p->node);
	rcu_read_unlock();
	return &p->st;
}

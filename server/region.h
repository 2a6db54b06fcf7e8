/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The server's index region: one memfd mapped once at its maximum size, grown
 * with ftruncate, carved into extents (worker table, bucket tables).
 *
 * Threads: the writer thread owns everything here except the published size,
 * which the io thread reads (kvdex_region_readable()) to range-check tcp READ
 * requests, and the read-only fd, which it passes to shm clients.
 */
#ifndef KVDEX_SERVER_REGION_H
#define KVDEX_SERVER_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "common/layout.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVDEX_REGION_WORKERS_OFF 4096u
#define KVDEX_REGION_ALIGN 4096u
#define KVDEX_REGION_OLD_MRS 16u

struct ibv_pd;
struct ibv_mr;

struct kvdex_region_opts {
	uint64_t region_max;  /* bytes of address space mapped once */
	uint32_t bucket_size; /* recorded in the header */
	uint32_t workers_cap; /* rows of the worker table */
	uint64_t hash_seed;   /* 0: random */
};

struct kvdex_extent {
	uint64_t off;
	uint64_t len;
};

struct kvdex_region {
	int memfd;
	int ro_fd; /* O_RDONLY reopen handed to shm clients */
	uint8_t *base;
	uint64_t max;
	uint64_t file_size; /* current ftruncate size */
	uint64_t published; /* region_size last published; read atomically by io */
	uint64_t bump;	    /* end of the highest extent handed out */
	struct kvdex_extent *free_ext;
	size_t nfree;
	size_t free_cap;
	/* The writer's copy of the header; kvdex_region_publish_hdr() seals it
	 * and copies it to offset 0. */
	struct kvdex_region_hdr hdr;
	/* verbs (writer thread after start-up): the MR named in the header
	 * covers [0, mr_len); MRs it replaced stay registered until their
	 * expiry (KVDEX_VERBS_MR_GRACE_MS) so readers holding the old rkey can
	 * still read the header that names the new one. */
	struct ibv_pd *pd; /* NULL: no RDMA listener */
	struct ibv_mr *mr;
	uint64_t mr_len;
	struct {
		struct ibv_mr *mr;
		uint64_t expire_ns;
	} old_mrs[KVDEX_REGION_OLD_MRS];
	unsigned nold;
	uint64_t mr_fail_ns; /* last failed re-registration (rate-limits retries) */
};

/*
 * Create the memfd, map region_max, lay out header and worker table, seal
 * the memfd against shrinking and new writable mappings, and publish a first
 * header (empty table geometry: the index fills it in).
 * @return 0, -ENOSPC (region_max too small for header + worker table),
 *         -ENOMEM, or -errno of memfd_create/ftruncate/mmap/open.
 * Context: main thread, before other threads start.
 * Ownership: *out belongs to the caller, freed with kvdex_region_destroy().
 */
int kvdex_region_create(const struct kvdex_region_opts *opts, struct kvdex_region **out);

/* Deregister every MR, put the PD, unmap and close. Accepts NULL.
 * Context: after every QP that could read the region is destroyed. */
void kvdex_region_destroy(struct kvdex_region *rg);

/*
 * Make the region readable over RDMA on the device of `pd`: register
 * [0, current size) with IBV_ACCESS_REMOTE_READ only, put its address and
 * rkey in the header (mr_gen 1) and publish it. Later growth re-registers
 * in kvdex_region_publish_hdr().
 * @return 0 or -errno of ibv_reg_mr (the region stays without an MR).
 * Context: main thread, before the writer starts. Ownership: takes its own
 * reference on pd (released by kvdex_region_destroy()).
 */
int kvdex_region_rdma_attach(struct kvdex_region *rg, struct ibv_pd *pd);

/*
 * Allocate an extent of len bytes (rounded up to KVDEX_REGION_ALIGN),
 * first-fit from the free list, else from the end, growing the memfd.
 * @return 0 with *off set, -ENOSPC past region_max, -errno of ftruncate.
 * Context: writer thread.
 */
int kvdex_region_alloc(struct kvdex_region *rg, uint64_t len, uint64_t *off);

/* Return an extent for reuse (merged with its neighbours). Writer thread. */
void kvdex_region_free(struct kvdex_region *rg, uint64_t off, uint64_t len);

/* Seal the header copy (region_size = current file size) and write it.
 * With RDMA, first re-register the region if it grew past the current MR
 * (publishing the new mr_addr/mr_rkey/mr_gen with the new size), and
 * deregister replaced MRs whose grace period is over.
 * Context: writer thread. */
void kvdex_region_publish_hdr(struct kvdex_region *rg);

/* Region size last published, safe from any thread. */
uint64_t kvdex_region_readable(const struct kvdex_region *rg);

static inline void *
kvdex_region_ptr(const struct kvdex_region *rg, uint64_t off)
{
	return rg->base + off;
}

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_SERVER_REGION_H */

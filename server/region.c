/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The index region (see region.h and docs/DESIGN.md §3.1).
 *
 * The memfd is mapped once at region_max (MAP_NORESERVE) so that the mapping
 * never moves; growth is an ftruncate of the file followed by a header that
 * publishes the new region_size. Readers never look past the region_size of
 * the header they validated, so the order "grow, write, publish" is enough.
 *
 * Extents: a bump pointer plus a first-fit free list of retired tables. The
 * region never shrinks (clients mapped it and F_SEAL_SHRINK forbids it), so
 * freeing the last extent only lowers the bump pointer.
 *
 * The memfd is sealed with F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE after our own
 * writable mapping exists: nobody can map it writable again or write() to
 * it, and shm clients get an O_RDONLY reopen through /proc/self/fd.
 *
 * RDMA (docs/DESIGN.md §7.1): the region is registered with
 * IBV_ACCESS_REMOTE_READ only, over [0, file size). Pages past the file
 * size cannot be pinned, so growth means a new MR: publish_hdr registers
 * [0, new size) first, then publishes a header naming the new MR together
 * with the new region_size (mr_gen + 1). A reader never reads past the
 * region_size of the header that gave it its rkey, so the old MR (which
 * covers the old size) stays valid for its reads; it is deregistered
 * KVDEX_VERBS_MR_GRACE_MS later. If a re-registration fails, region_size
 * is still published (shm and tcp readers need it) and the header keeps the
 * old MR; RDMA reads past its end then fail and the client reconnects. The
 * failure is logged and retried at most once a second.
 */
#include "server/region.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <urcu/uatomic.h>

#include "common/log.h"
#include "common/verbs.h"

#define LOG_COMP "server.region"
#define REGION_GROW_STEP (2ull << 20)
#define MR_RETRY_NS 1000000000ull

static uint64_t
align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static uint64_t
random_u64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
		/* getrandom of 8 bytes does not fail once the pool is up;
		 * fall back to something that still differs per start. */
		v = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
	}
	return v;
}

static int
region_grow(struct kvdex_region *rg, uint64_t need)
{
	uint64_t size;

	if (need <= rg->file_size) {
		return 0;
	}
	if (need > rg->max) {
		return -ENOSPC;
	}
	size = align_up(need, REGION_GROW_STEP);
	if (size > rg->max) {
		size = rg->max;
	}
	if (ftruncate(rg->memfd, (off_t)size) != 0) {
		int rc = -errno;

		KVDEX_LOG_ERR(LOG_COMP, "ftruncate(%llu): %s", (unsigned long long)size,
			      strerror(errno));
		return rc;
	}
	rg->file_size = size;
	return 0;
}

static int
region_open_fds(struct kvdex_region *rg)
{
	char path[64];

	rg->memfd = memfd_create("kvdex-index", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (rg->memfd < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "memfd_create: %s", strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", rg->memfd);
	rg->ro_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (rg->ro_fd < 0) {
		KVDEX_LOG_ERR(LOG_COMP, "open(%s, O_RDONLY): %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

#define SHMEM_THP_KNOB "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

/*
 * Ask for transparent huge pages on the region. A lookup reads scattered
 * buckets of a table much larger than a 4 KiB-page TLB covers, so without
 * them nearly every bucket read is also a TLB miss (and a NIC's translation
 * miss). The kernel honours the advice only when shmem THP is "advise" or
 * "always" (SHMEM_THP_KNOB); say so once if it is not. docs/OPERATIONS.md.
 */
static void
region_want_huge_pages(void *base, uint64_t len)
{
	char mode[128] = "";
	FILE *f;

	if (madvise(base, len, MADV_HUGEPAGE) != 0) {
		KVDEX_LOG_INFO(LOG_COMP, "no transparent huge pages for the region: madvise: %s",
			       strerror(errno));
		return;
	}
	f = fopen(SHMEM_THP_KNOB, "r");
	if (f == NULL) {
		return;
	}
	if (fgets(mode, sizeof(mode), f) != NULL && strstr(mode, "[never]") != NULL) {
		KVDEX_LOG_NOTICE(LOG_COMP,
				 "shmem huge pages are off (%s is never): the region uses 4 KiB "
				 "pages; set it to advise for fewer TLB misses per lookup",
				 SHMEM_THP_KNOB);
	}
	fclose(f);
}

static int
region_map(struct kvdex_region *rg)
{
	void *p;

	p = mmap(NULL, rg->max, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, rg->memfd, 0);
	if (p == MAP_FAILED) {
		KVDEX_LOG_ERR(LOG_COMP, "mmap(%llu bytes): %s", (unsigned long long)rg->max,
			      strerror(errno));
		return -errno;
	}
	rg->base = p;
	region_want_huge_pages(p, rg->max);
	/* Our writable mapping exists: from now on nobody may create another
	 * one, write() to the file or shrink it. Growth stays allowed. */
	if (fcntl(rg->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE) != 0) {
		KVDEX_LOG_WARN(LOG_COMP, "sealing the region memfd: %s (continuing unsealed)",
			       strerror(errno));
	}
	return 0;
}

static void
region_init_hdr(struct kvdex_region *rg, const struct kvdex_region_opts *opts)
{
	struct kvdex_region_hdr *h = &rg->hdr;
	struct timespec ts;

	memset(h, 0, sizeof(*h));
	h->magic = KVDEX_REGION_MAGIC;
	h->layout_version = KVDEX_LAYOUT_VERSION;
	h->hdr_size = KVDEX_HDR_SIZE;
	h->server_incarnation = random_u64();
	h->hash_seed = opts->hash_seed != 0 ? opts->hash_seed : random_u64();
	h->bucket_size = opts->bucket_size;
	h->workers_off = KVDEX_REGION_WORKERS_OFF;
	h->workers_cap = opts->workers_cap;
	clock_gettime(CLOCK_REALTIME, &ts);
	h->clock_base_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int
kvdex_region_create(const struct kvdex_region_opts *opts, struct kvdex_region **out)
{
	struct kvdex_region *rg;
	uint64_t workers_end;
	int rc;

	workers_end = KVDEX_REGION_WORKERS_OFF + (uint64_t)opts->workers_cap * KVDEX_ROW_SIZE;
	workers_end = align_up(workers_end, KVDEX_REGION_ALIGN);
	if (workers_end > opts->region_max) {
		KVDEX_LOG_ERR(LOG_COMP,
			      "region max %llu bytes cannot hold the header and %u worker rows "
			      "(%llu bytes)",
			      (unsigned long long)opts->region_max, opts->workers_cap,
			      (unsigned long long)workers_end);
		return -ENOSPC;
	}
	rg = calloc(1, sizeof(*rg));
	if (rg == NULL) {
		return -ENOMEM;
	}
	rg->memfd = -1;
	rg->ro_fd = -1;
	rg->max = opts->region_max;
	rc = region_open_fds(rg);
	if (rc != 0) {
		goto err_destroy;
	}
	rc = region_grow(rg, workers_end);
	if (rc != 0) {
		goto err_destroy;
	}
	rc = region_map(rg);
	if (rc != 0) {
		goto err_destroy;
	}
	rg->bump = workers_end;
	region_init_hdr(rg, opts);
	kvdex_region_publish_hdr(rg);
	*out = rg;
	return 0;

err_destroy:
	kvdex_region_destroy(rg);
	return rc;
}

void
kvdex_region_destroy(struct kvdex_region *rg)
{
	if (rg == NULL) {
		return;
	}
	for (unsigned i = 0; i < rg->nold; i++) {
		kvdex_verbs_dereg_mr(&rg->old_mrs[i].mr, LOG_COMP);
	}
	kvdex_verbs_dereg_mr(&rg->mr, LOG_COMP);
	kvdex_verbs_pd_put(&rg->pd, LOG_COMP);
	if (rg->base != NULL) {
		munmap(rg->base, rg->max);
	}
	if (rg->ro_fd >= 0) {
		close(rg->ro_fd);
	}
	if (rg->memfd >= 0) {
		close(rg->memfd);
	}
	free(rg->free_ext);
	free(rg);
}

static void
free_remove(struct kvdex_region *rg, size_t i)
{
	memmove(&rg->free_ext[i], &rg->free_ext[i + 1],
		(rg->nfree - i - 1) * sizeof(rg->free_ext[0]));
	rg->nfree--;
}

int
kvdex_region_alloc(struct kvdex_region *rg, uint64_t len, uint64_t *off)
{
	int rc;

	len = align_up(len, KVDEX_REGION_ALIGN);
	for (size_t i = 0; i < rg->nfree; i++) {
		struct kvdex_extent *e = &rg->free_ext[i];

		if (e->len >= len) {
			*off = e->off;
			e->off += len;
			e->len -= len;
			if (e->len == 0) {
				free_remove(rg, i);
			}
			return 0;
		}
	}
	if (len > rg->max || rg->bump > rg->max - len) {
		return -ENOSPC;
	}
	rc = region_grow(rg, rg->bump + len);
	if (rc != 0) {
		return rc;
	}
	*off = rg->bump;
	rg->bump += len;
	return 0;
}

static int
free_insert(struct kvdex_region *rg, size_t at, uint64_t off, uint64_t len)
{
	if (rg->nfree == rg->free_cap) {
		size_t cap = rg->free_cap ? rg->free_cap * 2 : 8;
		struct kvdex_extent *n = realloc(rg->free_ext, cap * sizeof(*n));

		if (n == NULL) {
			return -ENOMEM;
		}
		rg->free_ext = n;
		rg->free_cap = cap;
	}
	memmove(&rg->free_ext[at + 1], &rg->free_ext[at], (rg->nfree - at) * sizeof(*rg->free_ext));
	rg->free_ext[at] = (struct kvdex_extent){.off = off, .len = len};
	rg->nfree++;
	return 0;
}

void
kvdex_region_free(struct kvdex_region *rg, uint64_t off, uint64_t len)
{
	size_t i = 0;

	len = align_up(len, KVDEX_REGION_ALIGN);
	/* The list is sorted by offset: find the insertion point, then merge
	 * with the neighbours. */
	while (i < rg->nfree && rg->free_ext[i].off < off) {
		i++;
	}
	if (i > 0 && rg->free_ext[i - 1].off + rg->free_ext[i - 1].len == off) {
		i--;
		rg->free_ext[i].len += len;
	} else if (free_insert(rg, i, off, len) != 0) {
		/* Out of memory for the list: the extent is leaked, never
		 * handed out twice. */
		KVDEX_LOG_WARN(LOG_COMP, "leaking a free extent of %llu bytes",
			       (unsigned long long)len);
		return;
	}
	if (i + 1 < rg->nfree &&
	    rg->free_ext[i].off + rg->free_ext[i].len == rg->free_ext[i + 1].off) {
		rg->free_ext[i].len += rg->free_ext[i + 1].len;
		free_remove(rg, i + 1);
	}
	if (rg->free_ext[i].off + rg->free_ext[i].len == rg->bump) {
		rg->bump = rg->free_ext[i].off;
		free_remove(rg, i);
	}
}

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int
mr_register(struct kvdex_region *rg, struct ibv_mr **out)
{
	int rc = kvdex_verbs_reg_mr(rg->pd, rg->base, rg->file_size, IBV_ACCESS_REMOTE_READ, out);

	if (rc != 0) {
		KVDEX_LOG_ERR(LOG_COMP, "ibv_reg_mr(%llu bytes, REMOTE_READ): %s",
			      (unsigned long long)rg->file_size, strerror(-rc));
	}
	return rc;
}

static void
mr_publish(struct kvdex_region *rg, struct ibv_mr *mr)
{
	rg->mr = mr;
	rg->mr_len = rg->file_size;
	rg->hdr.mr_addr = (uint64_t)(uintptr_t)mr->addr;
	rg->hdr.mr_rkey = mr->rkey;
	rg->hdr.mr_gen++;
}

int
kvdex_region_rdma_attach(struct kvdex_region *rg, struct ibv_pd *pd)
{
	struct ibv_mr *mr;
	int rc;

	rc = kvdex_verbs_pd_get(pd->context, &rg->pd);
	if (rc != 0) {
		return rc;
	}
	rc = mr_register(rg, &mr);
	if (rc != 0) {
		kvdex_verbs_pd_put(&rg->pd, LOG_COMP);
		return rc;
	}
	mr_publish(rg, mr);
	kvdex_region_publish_hdr(rg);
	KVDEX_LOG_INFO(LOG_COMP, "region registered: %llu bytes, rkey %#x",
		       (unsigned long long)rg->mr_len, mr->rkey);
	return 0;
}

/* Deregister replaced MRs whose grace period is over. */
static void
mr_reap(struct kvdex_region *rg, uint64_t now)
{
	unsigned k = 0;

	for (unsigned i = 0; i < rg->nold; i++) {
		if (rg->old_mrs[i].expire_ns <= now) {
			kvdex_verbs_dereg_mr(&rg->old_mrs[i].mr, LOG_COMP);
			continue;
		}
		rg->old_mrs[k++] = rg->old_mrs[i];
	}
	rg->nold = k;
}

/* The region grew past the MR: register the new size, retire the old MR. */
static void
mr_grow(struct kvdex_region *rg, uint64_t now)
{
	struct ibv_mr *mr;

	if (rg->mr_fail_ns != 0 && now - rg->mr_fail_ns < MR_RETRY_NS) {
		return;
	}
	if (rg->nold == KVDEX_REGION_OLD_MRS) {
		/* More growths within one grace period than we keep MRs for:
		 * the oldest goes early (its readers reconnect at worst). */
		KVDEX_LOG_WARN(LOG_COMP, "deregistering a region MR before its grace period");
		kvdex_verbs_dereg_mr(&rg->old_mrs[0].mr, LOG_COMP);
		memmove(&rg->old_mrs[0], &rg->old_mrs[1], (rg->nold - 1) * sizeof(rg->old_mrs[0]));
		rg->nold--;
	}
	if (mr_register(rg, &mr) != 0) {
		rg->mr_fail_ns = now;
		return;
	}
	rg->mr_fail_ns = 0;
	rg->old_mrs[rg->nold].mr = rg->mr;
	rg->old_mrs[rg->nold].expire_ns = now + KVDEX_VERBS_MR_GRACE_MS * 1000000ull;
	rg->nold++;
	mr_publish(rg, mr);
	KVDEX_LOG_INFO(LOG_COMP, "region re-registered: %llu bytes, rkey %#x, mr_gen %u",
		       (unsigned long long)rg->mr_len, mr->rkey, rg->hdr.mr_gen);
}

void
kvdex_region_publish_hdr(struct kvdex_region *rg)
{
	struct kvdex_region_hdr img;

	if (rg->pd != NULL) {
		uint64_t now = mono_ns();

		if (rg->file_size > rg->mr_len) {
			mr_grow(rg, now);
		}
		if (rg->nold > 0) {
			mr_reap(rg, now);
		}
	}
	img = rg->hdr;

	img.region_size = rg->file_size;
	rg->hdr.region_size = rg->file_size;
	kvdex_block_seal(&img, sizeof(img), 0, 0);
	memcpy(rg->base, &img, sizeof(img));
	uatomic_set(&rg->published, rg->file_size);
}

uint64_t
kvdex_region_readable(const struct kvdex_region *rg)
{
	return uatomic_read(&rg->published);
}

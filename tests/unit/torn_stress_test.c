/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Torn-read stress: the checksum scheme of docs/DESIGN.md §3.2 under real
 * concurrency.
 *
 * One writer thread rewrites a small set of buckets in a shared buffer as
 * fast as it can, the way the server's writer does: it builds the complete
 * new image privately, seals it, and copies it over the old one. Its copy is
 * deliberately DMA-like and slow (8-byte words, a pause between words, the
 * checksum first on even iterations and last on odd ones) so that readers
 * overlap it often even on two cores.
 *
 * Reader threads copy buckets out the way transports do (memcpy like shm;
 * word copies in reverse and in shuffled cache-line order like a NIC with no
 * ordering guarantee inside one READ) and classify each copy with
 * kvdex_bucket_check(). Every accepted image must satisfy the invariant the
 * writer builds into its contents: all records of an image carry the same
 * iteration number (in the key, above the record index), the holder count and
 * holder contents follow from it, every holder slot equals the low 16 bits of
 * the iteration, and the bucket's chain_seq is its low 32 bits. A torn image
 * that got accepted would mix two iterations and break it.
 *
 * The run is count-bounded (10^6 accepted reads in total, more with
 * KVDEX_TORN_READS=N in the environment for a soak), with a
 * wall-clock cap only to fail rather than hang. The test also requires that
 * torn images were actually seen, or it would prove nothing.
 *
 * Sharing: the writer stores and the readers load with relaxed 8-byte
 * atomics, except the memcpy reader, which races on purpose exactly as a
 * shm reader does; no other state is shared except counters and a stop flag.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/layout.h"
#include "image.h"

#define NBUCKETS 4u
#define BUCKET_SIZE 256u
#define NREADERS 3u
#define READS_TARGET_DEFAULT 1000000ull
#define WALL_CAP_S 60
#define SEED 0x5eed5eed5eed5eedull
#define BASE_OFF 65536ull
#define TABLE_GEN 7u

static _Alignas(64) uint64_t shared_buf[NBUCKETS * BUCKET_SIZE / 8];

static unsigned long long reads_target = READS_TARGET_DEFAULT;
static atomic_bool stop;
static atomic_ullong total_accepted;

struct reader_stats {
	unsigned id;
	unsigned long long accepted;
	unsigned long long torn;
	unsigned long long stale;
	unsigned long long corrupt;
	unsigned long long bad;	     /* accepted but invariant broken */
	unsigned long long distinct; /* accepted images newer than the last one seen */
	char why[160];
};

static struct kvdex_geometry
geom(void)
{
	struct kvdex_geometry g = {
		.hash_seed = SEED,
		.table_off = BASE_OFF,
		.overflow_off = BASE_OFF + NBUCKETS * BUCKET_SIZE,
		.table_log2 = 2,
		.table_gen = TABLE_GEN,
		.overflow_count = 16,
		.bucket_size = BUCKET_SIZE,
	};

	return g;
}

static inline void
cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static unsigned
nrecords_of(uint64_t iter)
{
	return 1 + (unsigned)(iter % 4);
}

static unsigned
nholders_of(uint64_t iter, unsigned r)
{
	return 1 + (unsigned)((iter + r) % 8);
}

/* Build the image of bucket b at iteration iter (at most 4 x 48 B). */
static void
build_image(uint8_t *img, unsigned b, uint64_t iter)
{
	const struct kvdex_geometry g = geom();
	struct kvdex_bucket_hdr bh;

	tb_init(img, BUCKET_SIZE, TABLE_GEN, b, KVDEX_BUCKET_HOME);
	bh = tb_hdr(img);
	bh.chain_seq = (uint32_t)iter;
	tb_set_hdr(img, &bh);
	for (unsigned r = 0; r < nrecords_of(iter); r++) {
		struct kvdex_holder h[8];
		unsigned nh = nholders_of(iter, r);

		for (unsigned k = 0; k < nh; k++) {
			h[k] = tb_holder((uint16_t)iter, k % 4, (unsigned)(iter >> 16) & 15, 0,
					 (uint8_t)(r + 1));
		}
		tb_add_record(img, BUCKET_SIZE, (iter << 8) | r, (uint16_t)b, 0, h, nh, NULL, 0);
	}
	kvdex_bucket_seal(img, BUCKET_SIZE, SEED, kvdex_home_offset(&g, b));
}

/* Copy an image in, one word at a time with a pause between words, in the
 * order given by `reverse`. */
static void
slow_store(uint64_t *dst, const uint64_t *src, int reverse)
{
	const unsigned nw = BUCKET_SIZE / 8;

	for (unsigned k = 0; k < nw; k++) {
		unsigned w = reverse ? nw - 1 - k : k;

		__atomic_store_n(&dst[w], src[w], __ATOMIC_RELAXED);
		for (int p = 0; p < 4; p++) {
			cpu_pause();
		}
	}
}

static void *
writer_main(void *arg)
{
	unsigned long long *iters = arg;
	_Alignas(64) uint64_t img[BUCKET_SIZE / 8];
	uint64_t iter = NBUCKETS;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned b = (unsigned)(iter % NBUCKETS);

		build_image((uint8_t *)img, b, iter);
		slow_store(&shared_buf[b * BUCKET_SIZE / 8], img, (int)(iter & 1));
		iter++;
	}
	*iters = iter;
	return NULL;
}

/* Copy a bucket out the way reader `mode` does. */
static void
read_bucket(uint64_t *dst, const uint64_t *src, unsigned mode, unsigned salt)
{
	const unsigned nw = BUCKET_SIZE / 8;

	switch (mode) {
	case 0: /* shm transport: plain memcpy from the mapping */
		memcpy(dst, src, BUCKET_SIZE);
		break;
	case 1: /* a DMA engine that fetches backwards */
		for (unsigned k = nw; k-- > 0;) {
			dst[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
		}
		break;
	default: /* cache lines in a rotating order, words forward inside */
		for (unsigned c = 0; c < BUCKET_SIZE / 64; c++) {
			unsigned line = (c + salt) % (BUCKET_SIZE / 64);

			for (unsigned k = 0; k < 8; k++) {
				dst[line * 8 + k] =
					__atomic_load_n(&src[line * 8 + k], __ATOMIC_RELAXED);
			}
		}
		break;
	}
}

/* The invariant of an accepted image. Returns 0 or fills why. */
static int
check_image(const uint8_t *img, unsigned b, char *why, size_t whylen, uint64_t *iter_out)
{
	struct kvdex_bucket_hdr bh = tb_hdr(img);
	struct kvdex_record_view r;
	uint64_t iter = 0;
	unsigned n = 0;
	size_t pos = 0;
	int rc;

	while ((rc = kvdex_record_next(img, BUCKET_SIZE, &pos, &r)) == 1) {
		if (n == 0) {
			iter = r.hdr.key >> 8;
		}
		if (r.hdr.key != ((iter << 8) | n) || r.hdr.ns != b ||
		    r.hdr.nholders != nholders_of(iter, n) || r.hdr.nlocs != 0) {
			snprintf(why, whylen, "record %u key %#llx ns %u nh %u", n,
				 (unsigned long long)r.hdr.key, r.hdr.ns, r.hdr.nholders);
			return -1;
		}
		for (unsigned k = 0; k < r.hdr.nholders; k++) {
			if (r.holders[k].slot != (uint16_t)iter || r.holders[k].count != n + 1 ||
			    kvdex_holder_tier(&r.holders[k]) != k % 4) {
				snprintf(why, whylen, "record %u holder %u slot %u iter %llu", n, k,
					 r.holders[k].slot, (unsigned long long)iter);
				return -1;
			}
		}
		n++;
	}
	if (rc != 0 || n == 0 || n != nrecords_of(iter) || n != bh.nrecords ||
	    bh.chain_seq != (uint32_t)iter || bh.owner != b || iter % NBUCKETS != b) {
		snprintf(why, whylen, "rc %d n %u nrecords %u chain_seq %u iter %llu", rc, n,
			 bh.nrecords, bh.chain_seq, (unsigned long long)iter);
		return -1;
	}
	*iter_out = iter;
	return 0;
}

static void *
reader_main(void *arg)
{
	struct reader_stats *st = arg;
	const struct kvdex_geometry g = geom();
	_Alignas(64) uint64_t copy[BUCKET_SIZE / 8];
	uint64_t last[NBUCKETS] = {0};
	unsigned long long published = 0;
	unsigned salt = st->id;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		for (unsigned b = 0; b < NBUCKETS; b++) {
			uint64_t iter;

			read_bucket(copy, &shared_buf[b * BUCKET_SIZE / 8], st->id % 3, salt++);
			switch (kvdex_bucket_check(copy, &g, kvdex_home_offset(&g, b))) {
			case KVDEX_BUCKET_OK:
				st->accepted++;
				if (check_image((uint8_t *)copy, b, st->why, sizeof(st->why),
						&iter) != 0) {
					st->bad++;
				} else if (iter > last[b]) {
					st->distinct++;
					last[b] = iter;
				}
				break;
			case KVDEX_BUCKET_TORN:
				st->torn++;
				break;
			case KVDEX_BUCKET_STALE:
				st->stale++;
				break;
			default:
				st->corrupt++;
				break;
			}
		}
		/* Publish progress in steps to keep the shared counter cold. */
		if (st->accepted - published >= 4096) {
			atomic_fetch_add_explicit(&total_accepted, st->accepted - published,
						  memory_order_relaxed);
			published = st->accepted;
		}
	}
	atomic_fetch_add_explicit(&total_accepted, st->accepted - published, memory_order_relaxed);
	return NULL;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seed the buffer with valid images so readers start from accepted state. */
static void
init_buffer(void)
{
	for (unsigned b = 0; b < NBUCKETS; b++) {
		build_image((uint8_t *)&shared_buf[b * BUCKET_SIZE / 8], b, b);
	}
}

TestSuite(torn, .timeout = 100);

/*
 * 1. Across >= 10^6 accepted concurrent reads, no accepted image breaks the
 * invariant, torn images were seen and rejected, and nothing valid was
 * classified stale or corrupt (the writer never produces those).
 */
Test(torn, stress)
{
	struct reader_stats st[NREADERS];
	unsigned long long iters = 0, acc = 0, torn = 0, bad = 0, other = 0, distinct = 0;
	pthread_t wr, rd[NREADERS];
	double t0 = now_s(), elapsed;
	bool capped = false;

	if (getenv("KVDEX_TORN_READS") != NULL) {
		reads_target = strtoull(getenv("KVDEX_TORN_READS"), NULL, 10);
		reads_target =
			reads_target < READS_TARGET_DEFAULT ? READS_TARGET_DEFAULT : reads_target;
	}
	init_buffer();
	atomic_store(&stop, false);
	atomic_store(&total_accepted, 0);
	memset(st, 0, sizeof(st));
	cr_assert(eq(i32, pthread_create(&wr, NULL, writer_main, &iters), 0));
	for (unsigned i = 0; i < NREADERS; i++) {
		st[i].id = i;
		cr_assert(eq(i32, pthread_create(&rd[i], NULL, reader_main, &st[i]), 0));
	}
	while (atomic_load(&total_accepted) < reads_target) {
		if (now_s() - t0 > WALL_CAP_S) {
			capped = true;
			break;
		}
		nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
	}
	atomic_store(&stop, true);
	pthread_join(wr, NULL);
	for (unsigned i = 0; i < NREADERS; i++) {
		pthread_join(rd[i], NULL);
	}
	elapsed = now_s() - t0;

	for (unsigned i = 0; i < NREADERS; i++) {
		fprintf(stderr,
			"reader %u (mode %u): accepted %llu torn %llu stale %llu corrupt %llu "
			"bad %llu new-images %llu%s%s\n",
			i, i % 3, st[i].accepted, st[i].torn, st[i].stale, st[i].corrupt, st[i].bad,
			st[i].distinct, st[i].bad ? " first bad: " : "", st[i].why);
		acc += st[i].accepted;
		torn += st[i].torn;
		bad += st[i].bad;
		other += st[i].stale + st[i].corrupt;
		distinct += st[i].distinct;
	}
	fprintf(stderr,
		"torn stress: %.2f s, writer iterations %llu, reads accepted %llu, "
		"torn rejected %llu, invariant violations %llu\n",
		elapsed, iters, acc, torn, bad);

	cr_assert(not(capped), "only %llu accepted reads in %d s", acc, WALL_CAP_S);
	cr_assert(ge(u64, acc, reads_target));
	cr_assert(eq(u64, bad, 0), "%llu accepted images broke the invariant", bad);
	cr_assert(eq(u64, other, 0), "stale/corrupt verdicts on images the writer sealed");
	cr_assert(gt(u64, torn, 0), "no torn read observed: the test proved nothing");
	/* The readers saw the contents move, not one frozen image per bucket. */
	cr_assert(gt(u64, distinct, NBUCKETS * NREADERS));
	cr_assert(gt(u64, iters, 1000));
}

/*
 * image.c — read a tape history as a volume image.
 *
 * offset → grain by division, grain → block by the manifest's reference
 * array (no scans). Blocks are fetched by worker threads as runs: blocks of
 * one pack that sit back to back become one ranged GET (at most TAPE_RUN_BYTES).
 * A run streams straight into its cache entries (tape_getv scatters the body
 * over them); each block is hashed as soon as its last byte arrives and is
 * READY from then on, so a reader waits for its block, not for the run.
 * Every block is compared with its pack-index hash (and the manifest's
 * 8-byte prefix) before it is READY; a mismatch marks the entry FAILED and
 * the read returns -EIO — never the bytes.
 *
 * Cache: bounded LRU of verified blocks keyed by (pack, offset); entries are
 * LOADING (a worker fills it), READY or FAILED. Readers pin what they copy,
 * so nothing they use is evicted; when everything is pinned the cache grows
 * past its bound temporarily instead of blocking (no deadlock between
 * concurrent readers) and shrinks back as pins drop.
 *
 * Read-ahead: a read that starts where the previous one ended keeps the
 * next readahead_bytes scheduled as background runs (queued behind demand
 * runs), in whole aligned runs so that each is one large GET. A
 * reader that knows what it will need (a restore skipping matching grains)
 * says so with tape_image_prefetch, which turns the guessing off.
 *
 * Readers either copy out (tape_image_read) or borrow the pinned entries
 * (tape_image_read_iov: the FUSE reply is written from the cache itself).
 *
 * Locking: im->lock protects the cache, the job queue and read-ahead state;
 * im->idx_lock protects the per-pack index table; a pack index is fetched
 * without it (marked loading meanwhile). Neither is held while copying to
 * the caller or while a worker GETs. Order: idx_lock → pool->lock; never im->lock with
 * either.
 */
#include "fault.h"
#include "hashv.h"
#include "iomem.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUN     1024	     /* blocks in one GET (struct job's arrays) */
#define CHUNK_BYTES (8u << 20)
#define MAX_WORKERS 16
#define SETTLE_BATCH 4 /* blocks verified per lock round while a run streams in */

enum { ENT_LOADING, ENT_READY, ENT_FAILED };

struct cache_ent {
	uint64_t key;		   /* pack << 40 | off */
	uint32_t slen;		   /* stored length of the block (the reference's) */
	uint8_t prefix[8];	   /* the reference's name prefix, checked on arrival */
	int state;
	uint32_t refs;		   /* readers copying from it */
	uint32_t waiting;	   /* readers waiting for it to leave LOADING */
	struct cache_ent *hnext;   /* hash chain */
	struct cache_ent *prev, *next; /* LRU, most recent first */
	uint8_t *data;
};

struct job {
	struct job *next;
	uint32_t pack; /* manifest pack index */
	uint32_t nr;
	uint64_t off0; /* pack offset of ent[0]; the others follow back to back */
	struct cache_ent *ent[];
};

struct pack_idx {
	int loaded;
	bool loading; /* a thread fetches it (idx_lock released); others wait on idx_cond */
	struct tape_pack_entry *e;
	uint32_t nr;
};

struct tier_image {
	struct tier_pool *p;
	struct tape_manifest m;
	char key[TAPE_KEY_MAX];
	uint32_t *pack_nos; /* pinned pool pack numbers */
	bool locked;	    /* holds a reference on the pool's shared lock */
	uint32_t run_max;   /* blocks per GET */
	uint64_t chunk_grains;
	uint64_t ra_grains;
	uint64_t ra_step;    /* read-ahead grows by this many grains: run_max, or less for a small window */
	uint64_t miss_cap;   /* entries in a read's miss array (≥ one read-ahead batch) */

	pthread_mutex_t idx_lock;
	pthread_cond_t idx_cond; /* a pack index finished loading (or failed to) */
	struct pack_idx *pidx; /* per manifest pack; protected by idx_lock */

	pthread_mutex_t lock;
	pthread_cond_t cond;	 /* entries left LOADING */
	pthread_cond_t qcond;	 /* jobs queued / stop */
	struct cache_ent **htab; /* protected by lock */
	uint32_t hcap;
	struct cache_ent *lru_head, *lru_tail;
	struct iomem_slab mem;	  /* entries' data: huge-page backed (iomem.h) */
	uint64_t nr_ents, cap_ents;
	struct job *q_head, *q_tail;
	int stop;
	uint8_t *zero;	     /* one grain of zeros (holes in iov replies) */
	bool driven;	     /* the reader prefetches: no automatic read-ahead */
	uint64_t seq_next;   /* offset a sequential reader reads next */
	uint64_t ra_next;    /* first grain not yet scheduled for read-ahead */
	pthread_t workers[MAX_WORKERS];
	unsigned nr_workers;
	bool v2;	     /* blocks are sealed (codec.h): fetched into a staging
				buffer and opened into the cache, not read in place */
};

static uint64_t ref_key(const struct tape_ref *r)
{
	return (uint64_t)r->pack << 40 | r->off;
}

/* ---- pack indexes ---- */

/* The index of the manifest's pack number pack: from the pool when it knows
 * the pack, else fetched (HEAD, trailer, index). The fetch runs without
 * idx_lock, so workers wanting other packs' indexes do not queue behind it;
 * a second thread wanting the same one waits for it. */
static int image_pack_index(struct tier_image *im, uint32_t pack, struct pack_idx **out)
{
	struct tier_pool *p = im->p;
	struct pack_idx *pi = &im->pidx[pack];
	int rc = 0;
	pthread_mutex_lock(&im->idx_lock);
	while (pi->loading)
		pthread_cond_wait(&im->idx_cond, &im->idx_lock);
	if (pi->loaded)
		goto out_unlock;
	/* the pool may know it already */
	pthread_mutex_lock(&p->lock);
	struct pool_pack *pk = &p->packs[im->pack_nos[pack]];
	if (pk->indexed && pk->state == PACK_STORED && pk->nr_ents) {
		pi->e = malloc(pk->nr_ents * sizeof(*pi->e));
		if (pi->e) {
			memcpy(pi->e, pk->ents, pk->nr_ents * sizeof(*pi->e));
			pi->nr = pk->nr_ents;
			pi->loaded = 1;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (pi->loaded)
		goto out_unlock;
	pi->loading = true;
	pthread_mutex_unlock(&im->idx_lock);

	char key[64];
	struct tape_obj_info oi;
	struct tape_pack_entry *e = NULL;
	uint32_t nr = 0;
	tape_pack_key(im->m.packs[pack], key, sizeof(key));
	rc = p->be->ops->head(p->be, key, &oi);
	if (!rc)
		rc = pool_pack_index_fetch(p, key, oi.size_bytes, &e, &nr);
	if (rc)
		tape_log(TAPE_LOG_ERR, "image %s: index of %s: %s", im->key, key, strerror(-rc));

	pthread_mutex_lock(&im->idx_lock);
	if (!rc) {
		pi->e = e;
		pi->nr = nr;
		pi->loaded = 1;
	}
	pi->loading = false; /* on failure the next asker tries again */
	pthread_cond_broadcast(&im->idx_cond);
out_unlock:
	if (!rc)
		*out = pi;
	pthread_mutex_unlock(&im->idx_lock);
	return rc;
}

/* Checks one stored block fully against its pack index entry and the
 * manifest's prefix: its SHA-256 (version 1) or everything (codec.h). */
static int block_check(struct tier_image *im, struct tape_coder *k, struct pack_idx *pi,
		       uint64_t off, const uint8_t *data, uint32_t len, const uint8_t prefix[8])
{
	uint8_t h[32];
	long i = tape_pack_entry_find(pi->e, pi->nr, off);
	if (i < 0 || pi->e[i].len != len)
		return -EIO;
	if (memcmp(pi->e[i].hash, prefix, 8) != 0)
		return -EIO;
	if (im->v2)
		return tape_block_verify(&im->p->codec, k, pi->e[i].hash, pi->e[i].flags, data, len,
					 im->m.grain_bytes);
	if (tape_sha256(data, len, h) || memcmp(h, pi->e[i].hash, 32) != 0)
		return -EIO;
	return 0;
}

/* Fetches the stored bytes [first, end) of a pack into buf. */
static int fetch_run(struct tier_image *im, uint32_t pack, uint64_t first, uint64_t end,
		     uint8_t *buf)
{
	char key[64];
	size_t want = (size_t)(end - first);
	tape_pack_key(im->m.packs[pack], key, sizeof(key));
	ssize_t n = pool_get(im->p, key, first, buf, want);
	if (n < 0) {
		tape_log(TAPE_LOG_ERR, "image %s: reading %s: %s", im->key, key, strerror((int)-n));
		return -EIO;
	}
	if ((size_t)n != want) {
		tape_log(TAPE_LOG_ERR, "image %s: %s is truncated", im->key, key);
		return -EIO;
	}
	return 0;
}

/* ---- cache (all _locked: im->lock held) ---- */

static uint32_t hslot(struct tier_image *im, uint64_t key)
{
	key ^= key >> 29;
	key *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(key >> 32) & (im->hcap - 1);
}

static struct cache_ent *cache_find_locked(struct tier_image *im, uint64_t key)
{
	for (struct cache_ent *e = im->htab[hslot(im, key)]; e; e = e->hnext)
		if (e->key == key)
			return e;
	return NULL;
}

static void lru_unlink(struct tier_image *im, struct cache_ent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		im->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		im->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct tier_image *im, struct cache_ent *e)
{
	e->prev = NULL;
	e->next = im->lru_head;
	if (im->lru_head)
		im->lru_head->prev = e;
	im->lru_head = e;
	if (!im->lru_tail)
		im->lru_tail = e;
}

static void hash_unlink(struct tier_image *im, struct cache_ent *e)
{
	struct cache_ent **pp = &im->htab[hslot(im, e->key)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
}

/* A dropped entry's data goes back to the slab, which keeps it mapped: a
 * streaming read drops and allocates one per grain, and memory handed back to
 * the system would be faulted in again on the next one. */
static void cache_drop_locked(struct tier_image *im, struct cache_ent *e)
{
	hash_unlink(im, e);
	lru_unlink(im, e);
	im->nr_ents--;
	iomem_slab_put(&im->mem, e->data);
	free(e);
}

/* A new LOADING entry for key; reuses the least recently used idle entry
 * when at capacity; with may_grow = 0 returns NULL instead of growing. */
static struct cache_ent *cache_alloc_locked(struct tier_image *im, const struct tape_ref *r,
					    int may_grow)
{
	uint64_t key = ref_key(r);
	struct cache_ent *e = NULL;
	if (im->nr_ents >= im->cap_ents) {
		for (struct cache_ent *c = im->lru_tail; c; c = c->prev)
			if (!c->refs && c->state != ENT_LOADING) {
				e = c;
				break;
			}
		if (e) {
			hash_unlink(im, e);
			lru_unlink(im, e);
		} else if (!may_grow) {
			return NULL;
		}
	}
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			return NULL;
		/* a file pool reads blocks into it directly, a tape restore
		 * writes from it directly: one disk segment per block */
		e->data = iomem_slab_get(&im->mem);
		if (!e->data) {
			free(e);
			return NULL;
		}
		im->nr_ents++;
	}
	e->key = key;
	e->slen = r->len;
	memcpy(e->prefix, r->prefix, 8);
	e->state = ENT_LOADING;
	e->refs = 0;
	e->waiting = 0;
	uint32_t h = hslot(im, key);
	e->hnext = im->htab[h];
	im->htab[h] = e;
	lru_push(im, e);
	return e;
}

/* Queues the sorted miss list as runs; front = demand reads. */
static int queue_runs_locked(struct tier_image *im, struct cache_ent **miss, uint32_t n, int front)
{
	struct job *first = NULL, *last = NULL;
	const uint64_t off_mask = (1ull << 40) - 1;
	for (uint32_t i = 0; i < n;) {
		struct job *j = calloc(1, sizeof(*j) + im->run_max * sizeof(j->ent[0]));
		if (!j)
			goto out_nomem;
		j->pack = (uint32_t)(miss[i]->key >> 40);
		j->off0 = miss[i]->key & off_mask;
		uint64_t end = j->off0;
		do {
			end = (miss[i]->key & off_mask) + miss[i]->slen;
			j->ent[j->nr++] = miss[i++];
		} while (i < n && j->nr < im->run_max && (miss[i]->key >> 40) == j->pack &&
			 (miss[i]->key & off_mask) == end);
		if (last)
			last->next = j;
		else
			first = j;
		last = j;
	}
	if (!first)
		return 0;
	if (front) {
		last->next = im->q_head;
		im->q_head = first;
		if (!im->q_tail)
			im->q_tail = last;
	} else {
		if (im->q_tail)
			im->q_tail->next = first;
		else
			im->q_head = first;
		im->q_tail = last;
	}
	pthread_cond_broadcast(&im->qcond);
	return 0;
out_nomem:
	while (first) {
		struct job *nx = first->next;
		free(first);
		first = nx;
	}
	return -ENOMEM;
}

static int cmp_ent(const void *a, const void *b)
{
	uint64_t x = (*(struct cache_ent *const *)a)->key, y = (*(struct cache_ent *const *)b)->key;
	return x < y ? -1 : x > y;
}

/* ---- workers ---- */

/* A run in flight: blocks [0, done) are verified and out of LOADING. */
struct run {
	struct tier_image *im;
	struct job *j;
	struct pack_idx *pi;
	uint32_t done;
	const uint8_t *stage;	  /* version 2: the run's stored bytes, from j->off0 */
	struct tape_coder *coder; /* version 2: this worker's */
};

static uint64_t ent_off(const struct cache_ent *e)
{
	return e->key & ((1ull << 40) - 1);
}

/* The index entry of a cache entry's block, if it is the block the
 * manifest's reference describes (length and name prefix), else -1. */
static long ent_index(const struct run *r, const struct cache_ent *e)
{
	long k = tape_pack_entry_find(r->pi->e, r->pi->nr, ent_off(e));
	if (k < 0 || r->pi->e[k].len != e->slen || memcmp(r->pi->e[k].hash, e->prefix, 8))
		return -1;
	return k;
}

/* Version 1: the blocks the pack index knows are checked together
 * (multi-buffer SHA-256); ok[i] for blocks [r->done, r->done + n). */
static void settle_check_v1(struct run *r, uint32_t n, bool fetched, bool *ok)
{
	uint32_t grain = r->im->m.grain_bytes;
	const uint8_t *data[64], *want[64];
	uint32_t at[64], nr_check = 0;
	bool sum_ok[64];
	for (uint32_t i = 0; i < n; i++) {
		struct cache_ent *e = r->j->ent[r->done + i];
		long k = fetched ? ent_index(r, e) : -1;
		ok[i] = false;
		if (k >= 0 && r->pi->e[k].len == grain) {
			data[nr_check] = e->data;
			want[nr_check] = r->pi->e[k].hash;
			at[nr_check++] = i;
		}
	}
	tape_sha256_check(nr_check, data, grain, want, sum_ok);
	for (uint32_t c = 0; c < nr_check; c++)
		ok[at[c]] = sum_ok[c];
}

/* Version 2: each block opened (authenticated, decompressed) from the
 * staging buffer into its cache entry. */
static void settle_check_v2(struct run *r, uint32_t n, bool fetched, bool *ok)
{
	struct tier_image *im = r->im;
	for (uint32_t i = 0; i < n; i++) {
		struct cache_ent *e = r->j->ent[r->done + i];
		long k = fetched ? ent_index(r, e) : -1;
		ok[i] = k >= 0 &&
			!tape_block_open(&im->p->codec, r->coder, r->pi->e[k].hash,
					 r->pi->e[k].flags, r->stage + (ent_off(e) - r->j->off0),
					 e->slen, e->data, im->m.grain_bytes);
	}
}

/* Moves blocks [r->done, upto) out of LOADING: READY if the bytes match the
 * pack index and the manifest, FAILED otherwise. Checking happens outside
 * im->lock. */
static void run_settle(struct run *r, uint32_t upto, bool fetched)
{
	struct tier_image *im = r->im;
	struct job *j = r->j;
	bool ok[64];

	while (r->done < upto) {
		uint32_t n = upto - r->done < 64 ? upto - r->done : 64;
		if (im->v2)
			settle_check_v2(r, n, fetched, ok);
		else
			settle_check_v1(r, n, fetched, ok);
		for (uint32_t i = 0; i < n && fetched; i++) {
			if (ok[i])
				continue;
			char hex[33];
			tape_hex(im->m.packs[j->pack], 16, hex);
			tape_log(TAPE_LOG_ERR,
				 "image %s: block at %llu of pack %s fails its check (damaged, "
				 "not authentic, or not the block the manifest names)",
				 im->key, (unsigned long long)ent_off(j->ent[r->done + i]), hex);
		}
		bool wake = false;
		pthread_mutex_lock(&im->lock);
		for (uint32_t i = 0; i < n; i++) {
			struct cache_ent *e = j->ent[r->done + i];
			e->state = ok[i] ? ENT_READY : ENT_FAILED;
			wake |= e->waiting > 0;
			if (!ok[i] && !e->refs)
				cache_drop_locked(im, e);
		}
		if (wake) /* only readers of these blocks; not every arrival */
			pthread_cond_broadcast(&im->cond);
		pthread_mutex_unlock(&im->lock);
		r->done += n;
	}
}

/* Blocks of the run whose stored bytes lie within the first got bytes. */
static uint32_t run_arrived(const struct run *r, size_t got)
{
	const struct job *j = r->j;
	if (!r->im->v2) {
		uint32_t full = (uint32_t)(got / r->im->m.grain_bytes);
		return full > j->nr ? j->nr : full;
	}
	uint32_t n = r->done;
	while (n < j->nr && ent_off(j->ent[n]) + j->ent[n]->slen - j->off0 <= got)
		n++;
	return n;
}

static void run_progress(void *arg, size_t got)
{
	struct run *r = arg;
	uint32_t full = run_arrived(r, got);

	/* in batches (one lock round per SETTLE_BATCH blocks), the last one whole */
	if (full >= r->done + SETTLE_BATCH || (full == r->j->nr && full > r->done))
		run_settle(r, full, true);
}

static void run_job(struct tier_image *im, struct job *j, struct iovec *iov, uint8_t *stage,
		    struct tape_coder *coder)
{
	struct run r = {.im = im, .j = j, .stage = stage, .coder = coder};
	int rc = image_pack_index(im, j->pack, &r.pi);

	if (!rc) {
		char key[64];
		const struct cache_ent *last = j->ent[j->nr - 1];
		size_t want = (size_t)(ent_off(last) + last->slen - j->off0);
		int iovcnt = 1;
		if (im->v2) {
			iov[0] = (struct iovec){stage, want};
		} else {
			for (uint32_t i = 0; i < j->nr; i++)
				iov[i] = (struct iovec){j->ent[i]->data, im->m.grain_bytes};
			iovcnt = (int)j->nr;
		}
		tape_pack_key(im->m.packs[j->pack], key, sizeof(key));
		ssize_t n = pool_getv(im->p, key, j->off0, iov, iovcnt, run_progress, &r);
		if (n < 0)
			tape_log(TAPE_LOG_ERR, "image %s: reading %s: %s", im->key, key,
				 strerror((int)-n));
		else if ((size_t)n != want)
			tape_log(TAPE_LOG_ERR, "image %s: %s is truncated", im->key, key);
	}
	run_settle(&r, j->nr, false); /* whatever did not arrive */
}

static size_t stage_bytes(const struct tier_image *im)
{
	return (size_t)im->run_max * (im->m.grain_bytes + TAPE_BLOCK_OVERHEAD);
}

static void *image_worker(void *arg)
{
	struct tier_image *im = arg;
	struct iovec *buf = malloc(im->run_max * sizeof(*buf));
	uint8_t *stage = im->v2 ? iomem_alloc(stage_bytes(im)) : NULL;
	struct tape_coder coder = {0};
	bool have = buf && (!im->v2 || stage);
	pthread_mutex_lock(&im->lock);
	for (;;) {
		while (!im->stop && !im->q_head)
			pthread_cond_wait(&im->qcond, &im->lock);
		if (im->stop && !im->q_head)
			break;
		struct job *j = im->q_head;
		im->q_head = j->next;
		if (!im->q_head)
			im->q_tail = NULL;
		pthread_mutex_unlock(&im->lock);
		if (have) {
			run_job(im, j, buf, stage, &coder);
		} else { /* no buffer: fail the job rather than hang readers */
			pthread_mutex_lock(&im->lock);
			for (uint32_t i = 0; i < j->nr; i++)
				j->ent[i]->state = ENT_FAILED;
			pthread_cond_broadcast(&im->cond);
			pthread_mutex_unlock(&im->lock);
		}
		free(j);
		pthread_mutex_lock(&im->lock);
	}
	pthread_mutex_unlock(&im->lock);
	free(buf);
	if (stage)
		iomem_free(stage, stage_bytes(im));
	tape_coder_fini(&coder);
	return NULL;
}

/* ---- open / close ---- */

void tape_image_close(struct tier_image *im)
{
	if (!im)
		return;
	pthread_mutex_lock(&im->lock);
	im->stop = 1;
	pthread_cond_broadcast(&im->qcond);
	pthread_mutex_unlock(&im->lock);
	for (unsigned i = 0; i < im->nr_workers; i++)
		pthread_join(im->workers[i], NULL);
	while (im->lru_head)
		cache_drop_locked(im, im->lru_head);
	iomem_slab_release(&im->mem);
	if (im->pack_nos)
		pool_unpin(im->p, im->pack_nos, im->m.nr_packs);
	for (uint32_t i = 0; im->pidx && i < im->m.nr_packs; i++)
		free(im->pidx[i].e);
	free(im->pidx);
	free(im->pack_nos);
	free(im->htab);
	free(im->zero);
	tape_manifest_release(&im->m);
	if (im->locked)
		pool_unlock_shared(im->p);
	pthread_mutex_destroy(&im->lock);
	pthread_mutex_destroy(&im->idx_lock);
	pthread_cond_destroy(&im->idx_cond);
	pthread_cond_destroy(&im->cond);
	pthread_cond_destroy(&im->qcond);
	free(im);
}

/* The manifest is the one the catalog asked for: under its own key (volume
 * and version in the name), of the catalog's geometry. In a version 2 pool
 * the header is authenticated with its key, so a manifest moved, replayed
 * or edited fails here or in decoding; in version 1 this still catches a
 * swap of whole objects. */
static int image_expect(const struct tier_image *im, const struct tier_manifest_info *x)
{
	const struct tape_manifest *m = &im->m;
	const char *why = NULL;
	if (tape_manifest_key_check(im->key, m->volume, m->version))
		why = "its volume or version is not the one its key names";
	else if (x && x->volume && strcmp(x->volume, m->volume))
		why = "it belongs to another volume";
	else if (x && x->version && x->version != m->version)
		why = "it is of another version";
	else if (x && x->size_bytes && x->size_bytes != m->size_bytes)
		why = "its size is not the volume's";
	else if (x && x->grain_bytes && x->grain_bytes != m->grain_bytes)
		why = "its grain is not the volume's";
	if (!why)
		return 0;
	tape_log(TAPE_LOG_ERR, "image %s: refused: %s (the pool was tampered with or damaged)",
		 im->key, why);
	return -EIO;
}

int tape_image_open(struct tier_pool *p, const char *manifest,
		    const struct tier_manifest_info *expect, struct tier_image **out)
{
	char perr[256];
	int rc = pool_ready(p, perr, sizeof(perr));
	if (rc)
		return rc;
	struct tier_image *im = calloc(1, sizeof(*im));
	if (!im)
		return -ENOMEM;
	im->p = p;
	snprintf(im->key, sizeof(im->key), "%s", manifest);
	pthread_mutex_init(&im->lock, NULL);
	pthread_mutex_init(&im->idx_lock, NULL);
	pthread_cond_init(&im->idx_cond, NULL);
	pthread_cond_init(&im->cond, NULL);
	pthread_cond_init(&im->qcond, NULL);
	/* another host's gc must not repack under an open image; its gc is
	 * refused while we read, and we do not wait for one that runs */
	char err[256];
	rc = pool_lock_shared(p, 0, NULL, err, sizeof(err));
	if (rc) {
		tape_log(TAPE_LOG_ERR, "opening %s: %s", manifest, err);
		goto out_close;
	}
	im->locked = true;
	for (int attempt = 0;; attempt++) {
		rc = pool_manifest_load(p, manifest, &im->m, NULL);
		if (rc == -EBADMSG || rc == -EPROTONOSUPPORT)
			rc = -EIO; /* damaged or not authentic: the reader sees EIO */
		if (rc)
			goto out_close;
		im->pack_nos = malloc((im->m.nr_packs + 1) * sizeof(uint32_t));
		if (!im->pack_nos) {
			rc = -ENOMEM;
			goto out_close;
		}
		rc = pool_pin_manifest(p, &im->m, im->pack_nos);
		if (rc != -EAGAIN || attempt == 10)
			break;
		/* the collector is repacking: wait for its rewrite */
		free(im->pack_nos);
		im->pack_nos = NULL;
		tape_manifest_release(&im->m);
		usleep(200 * 1000);
	}
	if (rc) {
		free(im->pack_nos);
		im->pack_nos = NULL;
		goto out_close;
	}
	rc = image_expect(im, expect);
	if (rc)
		goto out_close;
	im->v2 = p->codec.version == 2;
	uint32_t grain = im->m.grain_bytes;
	rc = iomem_slab_init(&im->mem, grain);
	if (rc)
		goto out_close;
	im->pidx = calloc(im->m.nr_packs + 1, sizeof(*im->pidx));
	im->run_max = TAPE_RUN_BYTES / grain;
	if (im->run_max < 1)
		im->run_max = 1;
	if (im->run_max > MAX_RUN)
		im->run_max = MAX_RUN;
	im->chunk_grains = CHUNK_BYTES / grain ? CHUNK_BYTES / grain : 1;
	im->ra_grains = p->readahead_bytes / grain;
	im->ra_step = im->ra_grains < im->run_max ? (im->ra_grains ? im->ra_grains : 1) : im->run_max;
	im->miss_cap = (im->chunk_grains > im->ra_grains ? im->chunk_grains : im->ra_grains) + 1;
	im->cap_ents = p->cache_bytes / grain;
	/* read-ahead must never evict what it fetched before the reader gets to it */
	if (im->cap_ents < 2 * im->ra_grains + 2 * im->chunk_grains)
		im->cap_ents = 2 * im->ra_grains + 2 * im->chunk_grains;
	im->hcap = 64;
	while (im->hcap < im->cap_ents * 2 && im->hcap < (1u << 24))
		im->hcap *= 2;
	im->htab = calloc(im->hcap, sizeof(*im->htab));
	im->zero = calloc(1, grain);
	if (!im->pidx || !im->htab || !im->zero) {
		rc = -ENOMEM;
		goto out_close;
	}
	im->seq_next = UINT64_MAX;
	unsigned want = p->threads < MAX_WORKERS ? p->threads : MAX_WORKERS;
	for (; im->nr_workers < want; im->nr_workers++)
		if (pthread_create(&im->workers[im->nr_workers], NULL, image_worker, im))
			break;
	if (!im->nr_workers) {
		rc = -EAGAIN;
		goto out_close;
	}
	*out = im;
	return 0;
out_close:
	tape_image_close(im);
	return rc;
}

/* ---- read ---- */

/* Queues the missing blocks of grains [from, to) as background runs, at most
 * tmp_cap of them and never growing the cache; returns the first grain not
 * looked at. */
static uint64_t queue_grains_locked(struct tier_image *im, uint64_t from, uint64_t to,
				   struct cache_ent **tmp, uint32_t tmp_cap)
{
	uint32_t n = 0;
	uint64_t g;
	for (g = from; g < to && n < tmp_cap; g++) {
		const struct tape_ref *r = &im->m.refs[g];
		if (r->pack == TAPE_ZERO_PACK || cache_find_locked(im, ref_key(r)))
			continue;
		struct cache_ent *e = cache_alloc_locked(im, r, 0);
		if (!e)
			break;
		tmp[n++] = e;
	}
	if (n) {
		qsort(tmp, n, sizeof(*tmp), cmp_ent);
		if (queue_runs_locked(im, tmp, n, 0)) {
			for (uint32_t i = 0; i < n; i++)
				cache_drop_locked(im, tmp[i]);
		}
	}
	return g;
}

/* Read-ahead is scheduled in whole steps that end on a multiple of ra_step
 * grains (run_max, or the whole window when that is smaller): an upload lays
 * each claim back to back in a pack (upload.c), and claims start on such
 * multiples, so an aligned window becomes whole-claim GETs. */
static void schedule_readahead_locked(struct tier_image *im, uint64_t from, struct cache_ent **tmp,
				      uint32_t tmp_cap)
{
	uint64_t to = (from + im->ra_grains) / im->ra_step * im->ra_step;
	if (to > im->m.nr_grains)
		to = im->m.nr_grains;
	if (im->ra_next > from)
		from = im->ra_next;
	if (from >= to)
		return;
	uint64_t g = queue_grains_locked(im, from, to, tmp, tmp_cap);
	if (g > im->ra_next)
		im->ra_next = g;
}

int tape_image_prefetch(struct tier_image *im, uint64_t off, size_t len)
{
	uint32_t grain = im->m.grain_bytes;

	if (off >= im->m.size_bytes || !len)
		return 0;
	if (len > im->m.size_bytes - off)
		len = (size_t)(im->m.size_bytes - off);
	uint64_t g0 = off / grain, g1 = (off + len - 1) / grain + 1;
	struct cache_ent **tmp = malloc((size_t)(g1 - g0) * sizeof(*tmp));
	if (!tmp)
		return -ENOMEM;
	pthread_mutex_lock(&im->lock);
	im->driven = true; /* the caller knows what it will read: no guessing */
	queue_grains_locked(im, g0, g1, tmp, (uint32_t)(g1 - g0));
	pthread_mutex_unlock(&im->lock);
	free(tmp);
	return 0;
}

/* Unpins what chunk_pin pinned (im->lock held). */
static void chunk_unpin_locked(struct tier_image *im, struct cache_ent **gent, uint64_t nr)
{
	for (uint64_t i = 0; i < nr; i++) {
		struct cache_ent *e = gent[i];
		if (!e || --e->refs)
			continue;
		if (e->state == ENT_FAILED)
			cache_drop_locked(im, e);
		else if (im->nr_ents > im->cap_ents && e->state == ENT_READY)
			cache_drop_locked(im, e);
	}
}

/* Pins the blocks of grains [g0, g1] (gent[i] = entry of g0+i, NULL for a
 * hole), fetches what is missing, tops up read-ahead and waits until every
 * pinned entry left LOADING. On error nothing stays pinned. */
static int chunk_pin(struct tier_image *im, uint64_t g0, uint64_t g1, uint64_t off, size_t len,
		     struct cache_ent **gent, struct cache_ent **miss)
{
	uint32_t grain = im->m.grain_bytes;
	uint64_t nr = g1 - g0 + 1;
	uint32_t nr_miss = 0;
	int rc = 0;

	memset(gent, 0, nr * sizeof(*gent));
	pthread_mutex_lock(&im->lock);
	for (uint64_t g = g0; g <= g1; g++) {
		const struct tape_ref *r = &im->m.refs[g];
		if (r->pack == TAPE_ZERO_PACK)
			continue;
		uint64_t key = ref_key(r);
		struct cache_ent *e = cache_find_locked(im, key);
		if (!e) {
			e = cache_alloc_locked(im, r, 1);
			if (!e) {
				rc = -ENOMEM;
				goto out_unpin;
			}
			miss[nr_miss++] = e;
		} else if (e->refs == 0) {
			lru_unlink(im, e);
			lru_push(im, e);
		}
		e->refs++; /* once per grain; undone per grain */
		gent[g - g0] = e;
	}
	if (nr_miss) {
		qsort(miss, nr_miss, sizeof(*miss), cmp_ent);
		rc = queue_runs_locked(im, miss, nr_miss, 1);
		if (rc) {
			for (uint32_t i = 0; i < nr_miss; i++)
				miss[i]->state = ENT_FAILED;
			goto out_unpin;
		}
	}
	/* Sequential: near where the last reads ended (FUSE may deliver a
	 * sequential reader's requests slightly out of order). Read-ahead is
	 * topped up as soon as a whole run fits in the window again, so about
	 * ra_grains / run_max GETs of run_max blocks stay in flight. */
	uint64_t win = im->ra_grains * grain;
	bool seq = !im->driven && im->ra_grains && im->seq_next != UINT64_MAX && off <= im->seq_next + win &&
		   off + len + win >= im->seq_next;
	if (seq) {
		uint64_t next = im->ra_next > g1 + 1 ? im->ra_next : g1 + 1;
		if (next + im->ra_step <= g1 + 1 + im->ra_grains || next + im->ra_step > im->m.nr_grains)
			schedule_readahead_locked(im, g1 + 1, miss, (uint32_t)im->miss_cap);
		if (off + len > im->seq_next)
			im->seq_next = off + len;
	} else {
		im->ra_next = 0;
		im->seq_next = off + len;
	}
	/* last first: a run arrives in order, so one wait usually covers all */
	for (uint64_t i = nr; i-- > 0;) {
		if (!gent[i])
			continue;
		while (gent[i]->state == ENT_LOADING) {
			gent[i]->waiting++;
			pthread_cond_wait(&im->cond, &im->lock);
			gent[i]->waiting--;
		}
		if (gent[i]->state == ENT_FAILED)
			rc = -EIO;
	}
out_unpin:
	if (rc)
		chunk_unpin_locked(im, gent, nr);
	pthread_mutex_unlock(&im->lock);
	return rc;
}

static ssize_t read_chunk(struct tier_image *im, uint8_t *buf, uint64_t g0, uint64_t g1,
			  uint64_t off, size_t len, struct cache_ent **gent, struct cache_ent **miss)
{
	uint32_t grain = im->m.grain_bytes;
	int rc = chunk_pin(im, g0, g1, off, len, gent, miss);

	if (rc)
		return rc;
	/* pinned entries are stable: copy without the lock */
	uint64_t pos = off;
	uint8_t *dst = buf;
	for (uint64_t g = g0; g <= g1; g++) {
		uint64_t in = pos - g * grain;
		size_t n = grain - in;
		if (n > off + len - pos)
			n = (size_t)(off + len - pos);
		if (gent[g - g0])
			memcpy(dst, gent[g - g0]->data + in, n);
		else
			memset(dst, 0, n);
		dst += n;
		pos += n;
	}
	pthread_mutex_lock(&im->lock);
	chunk_unpin_locked(im, gent, g1 - g0 + 1);
	pthread_mutex_unlock(&im->lock);
	return (ssize_t)len;
}

int tape_image_read_iov(struct tier_image *im, size_t len, uint64_t off,
			int (*reply)(void *arg, const struct iovec *iov, int iovcnt), void *arg)
{
	uint64_t size = im->m.size_bytes;
	uint32_t grain = im->m.grain_bytes;

	if (off >= size || !len)
		return reply(arg, NULL, 0);
	if (len > size - off)
		len = (size_t)(size - off);
	uint64_t g0 = off / grain, g1 = (off + len - 1) / grain, nr = g1 - g0 + 1;
	if (nr > im->chunk_grains) { /* larger than a FUSE read: copy out */
		uint8_t *buf = malloc(len);
		if (!buf)
			return -ENOMEM;
		ssize_t n = tape_image_read(im, buf, len, off);
		int rc = n < 0 ? (int)n : reply(arg, &(struct iovec){buf, (size_t)n}, 1);
		free(buf);
		return rc;
	}
	struct cache_ent **gent = malloc(nr * sizeof(*gent)),
			 **miss = malloc(((size_t)im->miss_cap + 1) * sizeof(*miss));
	struct iovec *iov = malloc(nr * sizeof(*iov));
	int rc = -ENOMEM;
	if (!gent || !miss || !iov)
		goto out_free;
	rc = chunk_pin(im, g0, g1, off, len, gent, miss);
	if (rc)
		goto out_free;
	uint64_t pos = off;
	for (uint64_t i = 0; i < nr; i++) {
		uint64_t in = pos - (g0 + i) * grain;
		size_t n = grain - in;
		if (n > off + len - pos)
			n = (size_t)(off + len - pos);
		iov[i].iov_base = (gent[i] ? gent[i]->data : im->zero) + in;
		iov[i].iov_len = n;
		pos += n;
	}
	rc = reply(arg, iov, (int)nr);
	pthread_mutex_lock(&im->lock);
	chunk_unpin_locked(im, gent, nr);
	pthread_mutex_unlock(&im->lock);
out_free:
	free(gent);
	free(miss);
	free(iov);
	return rc;
}

ssize_t tape_image_read(struct tier_image *im, void *buf, size_t len, uint64_t off)
{
	uint64_t size = im->m.size_bytes;
	uint32_t grain = im->m.grain_bytes;
	if (off >= size || !len)
		return 0;
	if (len > size - off)
		len = (size_t)(size - off);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	size_t nptr = (size_t)im->chunk_grains + 2;
	struct cache_ent **gent = malloc(nptr * sizeof(*gent)),
			 **miss = malloc(((size_t)im->miss_cap + 1) * sizeof(*miss));
	ssize_t rc = 0;
	size_t done = 0;
	if (!gent || !miss) {
		rc = -ENOMEM;
		goto out_free;
	}
	while (done < len) {
		uint64_t pos = off + done;
		uint64_t g0 = pos / grain;
		uint64_t g1 = g0 + im->chunk_grains - 1;
		uint64_t end = (g1 + 1) * grain;
		if (end > off + len)
			end = off + len;
		g1 = (end - 1) / grain;
		rc = read_chunk(im, (uint8_t *)buf + done, g0, g1, pos, (size_t)(end - pos), gent,
				miss);
		if (rc < 0)
			break;
		done += (size_t)rc;
		rc = 0;
	}
out_free:
	free(gent);
	free(miss);
	if (rc < 0)
		return done ? (ssize_t)done : rc;
	return (ssize_t)done;
}

int64_t tape_image_seek(struct tier_image *im, uint64_t off, int whence)
{
	uint64_t size = im->m.size_bytes;
	uint32_t grain = im->m.grain_bytes;
	if (off >= size)
		return -ENXIO;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	int want_zero = whence == SEEK_HOLE;
	for (uint64_t g = off / grain; g < im->m.nr_grains; g++) {
		int zero = im->m.refs[g].pack == TAPE_ZERO_PACK;
		if (zero == want_zero) {
			uint64_t pos = g * grain;
			return (int64_t)(pos > off ? pos : off);
		}
	}
	return want_zero ? (int64_t)size : -ENXIO;
}

int tape_image_grain_hash(struct tier_image *im, uint64_t g, uint8_t out[32])
{
	if (g >= im->m.nr_grains)
		return -EINVAL;
	const struct tape_ref *r = &im->m.refs[g];
	if (r->pack == TAPE_ZERO_PACK) {
		memset(out, 0, 32);
		return 1;
	}
	struct pack_idx *pi;
	int rc = image_pack_index(im, r->pack, &pi);
	if (rc)
		return rc;
	long i = tape_pack_entry_find(pi->e, pi->nr, r->off);
	if (i < 0 || memcmp(pi->e[i].hash, r->prefix, 8) != 0)
		return -EIO;
	memcpy(out, pi->e[i].hash, 32);
	return 0;
}

int tape_image_block_name(struct tier_image *im, const void *buf, size_t len, uint8_t out[32])
{
	return tape_codec_name(&im->p->codec, buf, len, out);
}

/* A version 2 pack's header must be what its key and the pool say (reads
 * never fetch it: the index's authenticated data is rebuilt from the key,
 * so a damaged header cannot give wrong data, but a reader of the format
 * without acmfs refuses such a pack). 0 matches, -EIO not (logged). */
static int pack_header_check(struct tier_image *im, uint32_t pack)
{
	const struct tape_codec *c = pool_codec(im->p);
	uint8_t want[TAPE_PACK_HEADER_BYTES], got[TAPE_PACK_HEADER_BYTES];
	char key[64];
	if (!c || c->version < 2)
		return 0;
	tape_pack_header_encode(want, im->m.packs[pack], c);
	tape_pack_key(im->m.packs[pack], key, sizeof(key));
	ssize_t n = pool_get(im->p, key, 0, got, sizeof(got));
	if (n == (ssize_t)sizeof(got) && !memcmp(got, want, sizeof(got)))
		return 0;
	tape_log(TAPE_LOG_ERR, "image %s: %s: %s", im->key, key,
		 n < 0 ? strerror((int)-n) : "damaged pack header");
	return -EIO;
}

int tape_image_verify(struct tier_image *im, uint64_t *bad_grains)
{
	size_t cap = stage_bytes(im);
	uint8_t *buf = malloc(cap);
	/* per pack: 0 header not checked yet, 1 good, 2 bad */
	uint8_t *hdr = calloc(im->m.nr_packs ? im->m.nr_packs : 1, 1);
	struct tape_coder coder = {0};
	uint64_t bad = 0;
	if (!buf || !hdr) {
		free(buf);
		free(hdr);
		return -ENOMEM;
	}
	uint64_t g = 0;
	while (g < im->m.nr_grains) {
		const struct tape_ref *r = &im->m.refs[g];
		if (r->pack == TAPE_ZERO_PACK) {
			g++;
			continue;
		}
		/* grains whose blocks follow each other in one pack */
		uint64_t n = 1, end = r->off + r->len;
		while (g + n < im->m.nr_grains && n < im->run_max &&
		       im->m.refs[g + n].pack == r->pack && im->m.refs[g + n].off == end) {
			end += im->m.refs[g + n].len;
			n++;
		}
		struct pack_idx *pi;
		if (!hdr[r->pack])
			hdr[r->pack] = pack_header_check(im, r->pack) ? 2 : 1;
		int rc = hdr[r->pack] == 2 ? -EIO : image_pack_index(im, r->pack, &pi);
		if (!rc)
			rc = fetch_run(im, r->pack, r->off, end, buf);
		for (uint64_t i = 0; i < n; i++) {
			const struct tape_ref *ri = &im->m.refs[g + i];
			if (rc || block_check(im, &coder, pi, ri->off, buf + (ri->off - r->off), ri->len,
					      ri->prefix))
				bad++;
		}
		g += n;
	}
	tape_coder_fini(&coder);
	free(buf);
	free(hdr);
	*bad_grains = bad;
	return 0;
}

/*
 * pool.h — in-core state of an open tape pool (internal to tape/).
 *
 * A pool wraps one backend and keeps, in memory, what it knows of the packs
 * in it: their ids, indexes (hash, offset, length per block), a hash → block
 * table for dedup, and pins held by running uploads and open images. That
 * cache is rebuilt from the pack indexes by listing packs/ (pool_refresh);
 * it is an accelerator, never the truth — manifests and packs in the store
 * are.
 *
 * Locking: pool->lock protects every field marked so, including the packs
 * array and each pack's entries; it is never held across backend I/O.
 * pool->gc_lock serialises collectors and is taken before pool->lock.
 * Lock order: gc_lock → lock → (image locks are independent, never nested
 * inside pool->lock).
 *
 * Pack states: PENDING (being filled by upload `owner`, visible only to it),
 * STORED (durable, shareable), DOOMED (the collector is deleting or
 * repacking it: nobody may take new references), GONE (slot unused).
 */
#ifndef ACMFS_TAPE_POOL_H
#define ACMFS_TAPE_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/tier.h"
#include "backend.h"
#include "codec.h"
#include "format.h"
#include "lock.h"

/* Grains an upload worker claims at once, which then lie back to back in a
 * pack; also the largest ranged GET of an image read (image.c). Large,
 * since an object store charges per request. */
#define TAPE_RUN_BYTES (16u << 20)

enum pool_pack_state { PACK_GONE = 0, PACK_PENDING, PACK_STORED, PACK_DOOMED };

struct pool_pack {
	uint8_t id[16];
	uint8_t state;		       /* enum pool_pack_state */
	uint8_t indexed;	       /* ents holds the pack's full index */
	uint8_t seen;		       /* scratch for pool_refresh */
	uint64_t owner;		       /* upload id while PENDING */
	uint64_t gen;		       /* refresh generation when added/stored */
	uint32_t pins;		       /* running uploads / open images using it */
	uint32_t nr_ents, cap_ents;
	struct tape_pack_entry *ents;  /* sorted by offset */
	uint64_t size_bytes;
	int64_t mtime;
};

struct blk_slot {
	uint32_t pack; /* UINT32_MAX = empty */
	uint32_t ent;
};

struct tier_pool {
	struct tape_backend *be; /* immutable */
	/* options, immutable after open */
	uint64_t pack_bytes;	 /* target pack size (pack_mb=, default 32 MiB) */
	unsigned threads;	 /* upload/read-ahead workers (threads=, default 4) */
	uint64_t cache_bytes;	 /* per-image block cache (cache_mb=, default 64 MiB) */
	uint64_t readahead_bytes;/* read-ahead window (readahead_mb=, default 64 MiB) */

	pthread_mutex_t gc_lock;
	pthread_mutex_t lock;
	struct pool_pack *packs; /* protected by lock */
	uint32_t nr_packs, cap_packs;
	uint32_t *idmap;	 /* open addressing: pack no + 1, 0 = empty; protected by lock */
	uint32_t idmap_cap;
	struct blk_slot *bidx;	 /* hash → block; protected by lock */
	uint64_t bidx_cap, bidx_used;
	uint64_t gen;		 /* refresh generation; protected by lock */
	uint64_t next_upload_id; /* protected by lock */
	int refreshed;		 /* a full listing has been loaded; protected by lock */
	atomic_uint_fast64_t bytes_read; /* payload bytes got from the store (metrics) */
	struct pool_lock lk;	 /* bucket locks shared with other hosts (lock.h) */
	/* format version, keys, compression: read from the pool's config at the
	 * first operation (pool_ready), immutable from then on */
	pthread_mutex_t codec_lock;
	bool codec_ready;	 /* under codec_lock; set once */
	struct tape_codec codec;
	char *opts, *name;	 /* as opened, immutable */
};

/* Reads the pool's config on first use (the passphrase file, the KDF, one
 * HEAD and GET); every operation calls it first. 0 or -errno with err set
 * (-EACCES: wrong or missing key). */
int pool_ready(struct tier_pool *p, char *err, size_t errlen);

/* all "_locked" functions need pool->lock held */
long pool_pack_find_locked(struct tier_pool *p, const uint8_t id[16]);
long pool_pack_add_locked(struct tier_pool *p, const uint8_t id[16], int state);
int pool_bidx_insert_locked(struct tier_pool *p, uint32_t pack, uint32_t ent);
/* returns the slot or NULL */
struct blk_slot *pool_bidx_lookup_locked(struct tier_pool *p, const uint8_t hash[32]);
int pool_bidx_rebuild_locked(struct tier_pool *p);
int pool_pack_append_ent_locked(struct pool_pack *pk, const struct tape_pack_entry *e);

/* Lists packs/ and loads the index of every pack not yet known; forgets
 * stored packs that vanished. Takes pool->lock internally. */
int pool_refresh(struct tier_pool *p);
/* Reads and checks the index of a pack object; *ents is malloc'd. */
int pool_pack_index_fetch(struct tier_pool *p, const char *key, uint64_t size_bytes,
			  struct tape_pack_entry **ents, uint32_t *nr);
/* GET + decode a whole manifest; sha (optional) receives its checksum. In a
 * version 2 pool it is authenticated against its key and the pool's id. */
int pool_manifest_load(struct tier_pool *p, const char *key, struct tape_manifest *m,
		       uint8_t sha[32]);
/* Maps a manifest's pack table to pool pack numbers and pins them. Returns
 * -EAGAIN if one is DOOMED (the collector is rewriting: reload and retry). */
int pool_pin_manifest(struct tier_pool *p, const struct tape_manifest *m, uint32_t *map);
void pool_unpin(struct tier_pool *p, const uint32_t *nos, uint32_t n);
/* The backend's get and getv, with the bytes counted in p->bytes_read: every
 * read of the store goes through these. */
ssize_t pool_get(struct tier_pool *p, const char *key, uint64_t off, void *buf, size_t len);
ssize_t pool_getv(struct tier_pool *p, const char *key, uint64_t off, const struct iovec *iov,
		  int iovcnt, tape_progress_cb progress, void *arg);
/* Reads a whole object (small ones: manifests); *buf malloc'd. */
int pool_get_all(struct tier_pool *p, const char *key, uint8_t **buf, size_t *len);

/* 0 if key is a manifest key of (volume, version), else -EINVAL */
int tape_manifest_key_check(const char *key, const char *volume, uint64_t version);

/* The pool's codec for a version 2 pool (NULL for version 1: format.c's
 * version 1 layouts). */
static inline const struct tape_codec *pool_codec(const struct tier_pool *p)
{
	return p->codec.version == 2 ? &p->codec : NULL;
}

int tape_pool_upload(struct tier_pool *p, const struct tier_upload_req *req,
		     struct tier_upload_res *res, char *err, size_t errlen);
int tape_pool_gc(struct tier_pool *p, int64_t grace_seconds, struct tier_gc_stats *st);

/* image.c */
int tape_image_open(struct tier_pool *p, const char *manifest,
		    const struct tier_manifest_info *expect, struct tier_image **out);
int tape_image_block_name(struct tier_image *im, const void *buf, size_t len, uint8_t out[32]);
ssize_t tape_image_read(struct tier_image *im, void *buf, size_t len, uint64_t off);
int tape_image_prefetch(struct tier_image *im, uint64_t off, size_t len);
int tape_image_read_iov(struct tier_image *im, size_t len, uint64_t off,
			int (*reply)(void *arg, const struct iovec *iov, int iovcnt), void *arg);
int64_t tape_image_seek(struct tier_image *im, uint64_t off, int whence);
int tape_image_grain_hash(struct tier_image *im, uint64_t g, uint8_t out[32]);
int tape_image_verify(struct tier_image *im, uint64_t *bad_grains);
void tape_image_close(struct tier_image *im);

#endif

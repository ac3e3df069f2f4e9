/*
 * tier.h — what the engine needs from the tape tier.
 *
 * The engine (core/) never links libcurl or knows object formats. The daemon
 * hands it a `struct tier_ops` implemented in tape/ (tape/tier.c); unit tests
 * may hand it a fake. Every function returns 0 (or a count) or a negative
 * errno; `err` buffers get a one-line reason without credentials.
 *
 * Threading: a `struct tier_pool` is shared by many threads; every op is
 * thread-safe. A `struct tier_image` may be read by several threads at once.
 */
#ifndef ACMFS_TIER_H
#define ACMFS_TIER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct tier_pool;
struct tier_image;

/* Grain source for an upload: fill `buf` (grain_bytes long) with grain g.
 * The last grain of a volume whose size is not a multiple of the grain is
 * zero-padded by the caller. Returns 0 or -errno. Called from several
 * threads at once. */
struct tier_src {
	int (*read_grain)(void *arg, uint64_t g, void *buf);
	void *arg;
	/* Optional (NULL: every grain is read): the grains [g, returned) hold
	 * zeros and need not be read; returns g when g may hold data. Never
	 * returns more than limit. Called from several threads at once. */
	uint64_t (*zero_until)(void *arg, uint64_t g, uint64_t limit);
};

struct tier_upload_req {
	const char *volume;	  /* volume name */
	uint64_t version;	  /* history version (absolute, per volume) */
	uint64_t size_bytes;	  /* volume size */
	uint32_t grain_bytes;	  /* block size = volume grain */
	int64_t date;		  /* backup time, unix seconds */
	const char *host;	  /* writer: "<host id>:<host name>" (tier_ops.pool_identity) */
	const char *manifest_key; /* store the manifest under this key (from
				     tier_ops.manifest_key), or NULL: the tier picks one */
	const char *parent;	  /* manifest key of this volume's previous tape history, or NULL */
	const uint8_t *changed;	  /* bitmap of nr_grains bits (LSB first): grains that may differ
				     from parent; NULL = read and hash every grain */
	struct tier_src src;
	const atomic_int *cancel; /* non-zero: stop, return -ECANCELED */
	atomic_uint_fast64_t *done_grains; /* progress, grains processed so far */
};

struct tier_upload_res {
	char manifest[256];	 /* key of the stored manifest */
	uint64_t blocks_total;	 /* non-zero blocks the image references */
	uint64_t blocks_new;	 /* blocks the pool did not hold before */
	uint64_t bytes_uploaded; /* payload bytes sent (packs + manifest) */
	uint64_t grains_read;	 /* grains read through src */
};

struct tier_manifest_info {
	const char *manifest; /* key */
	const char *volume;
	uint64_t version;
	uint64_t size_bytes;
	uint32_t grain_bytes;
	int64_t date;
	const char *host;	/* as the writer gave it: "<id>:<name>", or a bare name */
	uint64_t blocks_total;
};

struct tier_gc_stats {
	uint64_t packs_deleted, packs_repacked, blocks_freed, bytes_freed;
	uint64_t manifests;	      /* manifests read (marked) */
	uint64_t manifests_unreadable; /* reported and kept; their packs kept */
	uint64_t locks_reclaimed;     /* stale locks of crashed or stopped hosts removed */
	uint64_t temps_removed;	      /* temporaries of puts a crash interrupted */
	uint64_t requests;	      /* object-store requests the collection made */
	char busy[256];		      /* with -EBUSY: who holds the pool */
};

struct tier_ops {
	/* Open a pool. name: the pool's name (for messages). url:
	 * "file:///abs/dir" or "s3://bucket/prefix". opts: the pool's key=value
	 * options separated by spaces (endpoint=, region=, path_style=1,
	 * credentials=/path/0600-file, ca=..., key=/path/0600-passphrase-file),
	 * may be "". Does no I/O (it may run under the engine's lock): the
	 * pool's config and key are read at the first operation, which then
	 * fails with -EACCES ("wrong key for pool NAME") for a wrong passphrase. */
	int (*pool_open)(const char *name, const char *url, const char *opts,
			 struct tier_pool **out, char *err, size_t errlen);
	/* The same for `pool create`: a new, empty pool gets its format 2
	 * config (encrypted with key=, or encrypt=none); a pool that exists is
	 * joined (same passphrase: same keys, shared dedup). */
	int (*pool_create)(const char *name, const char *url, const char *opts,
			   struct tier_pool **out, char *err, size_t errlen);
	/* Re-wraps an encrypted pool's master key under the passphrase in
	 * keyfile. May be NULL. */
	int (*pool_passwd)(struct tier_pool *p, const char *keyfile, char *err, size_t errlen);
	void (*pool_close)(struct tier_pool *p);
	/* Who this process is, "<host id>:<host name>": written into the bucket
	 * locks that other hosts see. May be NULL. */
	void (*pool_identity)(struct tier_pool *p, const char *holder);
	/* A new, unused manifest key for (volume, version), so that the engine
	 * can record it before the upload starts (a crash after the manifest's
	 * PUT then leaves no orphan it does not know). */
	int (*manifest_key)(const char *volume, uint64_t version, char *out, size_t outlen);
	/* Payload bytes read from the pool's store since it was opened (blocks,
	 * indexes, manifests). May be NULL. */
	uint64_t (*pool_bytes_read)(struct tier_pool *p);

	/* Store one complete tape history: packs first, manifest last. Holds the
	 * pool's shared lock throughout (waits for another host's gc). */
	int (*upload)(struct tier_pool *p, const struct tier_upload_req *req,
		      struct tier_upload_res *res, char *err, size_t errlen);
	/* Remove a history's manifest (its blocks are left to gc). */
	int (*remove)(struct tier_pool *p, const char *manifest);
	/* Reclaim blocks no manifest references; never touches packs younger than
	 * grace_seconds (store time) nor those of an upload that is running, here
	 * or on another host (-EBUSY, st->busy says who, while any other host
	 * holds the pool's lock). */
	int (*gc)(struct tier_pool *p, int64_t grace_seconds, struct tier_gc_stats *st);
	/* Every manifest the pool holds (for `pool import`). cb returning non-zero
	 * stops. A manifest that cannot be decoded comes with only `manifest`
	 * set (volume NULL): skip it, it has been logged. Holds the shared lock
	 * (-EBUSY at once while another host's gc runs). */
	int (*list)(struct tier_pool *p, int (*cb)(void *arg, const struct tier_manifest_info *mi),
		    void *arg);

	/* Read a tape history as an image. Every block is verified against its
	 * hash (or tag): a mismatch gives -EIO, never wrong bytes. expect (may
	 * be NULL) is what the catalog knows of it: volume, version, size_bytes
	 * and grain_bytes must match the manifest, else -EIO (a manifest
	 * swapped, replayed or truncated in the store). */
	int (*image_open)(struct tier_pool *p, const char *manifest,
			  const struct tier_manifest_info *expect, struct tier_image **out);
	ssize_t (*image_read)(struct tier_image *im, void *buf, size_t len, uint64_t off);
	/* The same without a copy: calls reply(arg, iov, iovcnt) once with
	 * segments covering [off, off+len) (clipped at the end of the image; none
	 * past it) that stay valid during the call, and returns what reply
	 * returns; -errno without calling reply when the bytes cannot be had.
	 * May be NULL (the engine then copies through image_read). */
	int (*image_read_iov)(struct tier_image *im, size_t len, uint64_t off,
			      int (*reply)(void *arg, const struct iovec *iov, int iovcnt),
			      void *arg);
	/* Start fetching [off, off+len) in the background (no wait; errors show
	 * at the read). A reader that prefetches drives fetching itself: the
	 * image stops reading ahead on its own guess of sequential access.
	 * May be NULL. */
	int (*image_prefetch)(struct tier_image *im, uint64_t off, size_t len);
	/* whence = SEEK_DATA or SEEK_HOLE; returns offset or -ENXIO */
	int64_t (*image_seek)(struct tier_image *im, uint64_t off, int whence);
	/* Name of grain g's block (its SHA-256, or a keyed hash in an encrypted
	 * pool); returns 1 if the grain is all zero (no block), 0 else */
	int (*image_grain_hash)(struct tier_image *im, uint64_t g, uint8_t out[32]);
	/* The name the image's pool gives a grain of these bytes, to compare
	 * with image_grain_hash. */
	int (*image_block_name)(struct tier_image *im, const void *buf, size_t len,
				uint8_t out[32]);
	/* Re-read and check every block; *bad_grains = damaged grains found. */
	int (*image_verify)(struct tier_image *im, uint64_t *bad_grains);
	void (*image_close)(struct tier_image *im);
};

#endif

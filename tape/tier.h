/*
 * tier.h — the tape tier's public face.
 *
 * `tape_tier_ops` implements core/tier.h over an object-store backend
 * (tape/backend.h). Pool URLs: "file:///abs/dir", "s3://bucket[/prefix]",
 * and "mem:" (an in-memory pool for tests). Pool options (space separated):
 *   endpoint=URL region=R path_style=1 credentials=/0600/file ca=/pem
 *   pack_mb=N (pack target, default 32)  threads=N (default 4)
 *   cache_mb=N (per-image verified-block cache, default 64)
 *   readahead_mb=N (default 64)
 *   multipart_mb=N (S3: objects above it go up in parts of it, default 64)
 *   lock_stale=S (another process's bucket lock unrefreshed for S seconds
 *   of store time is stale, default 1800, at least 6: store times have a
 *   second's grain)  lock_wait=S (an upload waits for a gc, default 1800)
 *   key=/0600/passphrase-file (an encrypted format 2 pool)  encrypt=none
 *   (an unencrypted one; an s3:// pool needs one of the two at creation)
 *   format=1 (create a pool of the old format)  compress=zstd[:L]|none
 *   (format 2 writes, default zstd level 3)
 * Format: docs/tape-format.md.
 */
#ifndef ACMFS_TAPE_TIER_H
#define ACMFS_TAPE_TIER_H

#include "../core/tier.h"
#include "backend.h"

extern const struct tier_ops tape_tier_ops;

/* Open a pool over a backend the caller built (tests: tape_backend_mem_new).
 * On success the pool owns `be`; on failure the caller still does. */
int tape_pool_open_backend(struct tape_backend *be, const char *opts, struct tier_pool **out,
			   char *err, size_t errlen);
/* The same, creating a new pool's config (format 2) as `pool create` does:
 * opts may hold key=FILE, encrypt=none, format=1, compress=, kdf_log2n=. */
int tape_pool_create_backend(struct tape_backend *be, const char *opts, struct tier_pool **out,
			     char *err, size_t errlen);
/* The backend under a pool (tests, tools). */
struct tape_backend *tape_pool_backend(struct tier_pool *p);

#endif

/*
 * backend.h — the object-store method table under the tape tier.
 *
 * A backend stores immutable, whole objects under flat string keys ("packs/…",
 * "manifests/…"); the pool layer (tape/pool.c) knows the format, a backend
 * knows only bytes. Implementations: backend_file.c (file:///dir),
 * backend_s3.c (s3://bucket/prefix, libcurl) and backend_mem.c (in memory,
 * with fault injection, for unit tests). Concrete backends embed
 * `struct tape_backend` as their first member (SQLite's sqlite3_file style).
 *
 * Contract for every implementation:
 *  - every method is thread-safe and may be called from many threads at once;
 *  - put is atomic: a reader sees the old object, no object, or the whole new
 *    one, never a part; once put returns 0 the object is durable;
 *  - get reads [off, off+len) and returns the byte count (short only at the
 *    end of the object) or -errno; -ENOENT for a missing object;
 *  - getv (optional) is get into an iovec that reports progress: progress
 *    (arg, done) is called whenever the first `done` bytes are in place;
 *    bytes once reported are never written again (a retry resumes after
 *    them), so a caller may use them while the rest is still arriving;
 *  - transient failures are retried inside the backend; what comes back is
 *    final. Errors are negative errno; the raw cause (HTTP status, curl
 *    code) is logged once by the backend, never a credential.
 */
#ifndef ACMFS_TAPE_BACKEND_H
#define ACMFS_TAPE_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct tape_backend;

struct tape_obj_info {
	char key[256];	     /* relative to the backend root */
	uint64_t size_bytes;
	int64_t mtime;	     /* unix seconds of the last write */
};

typedef int (*tape_list_cb)(void *arg, const struct tape_obj_info *oi);
typedef void (*tape_progress_cb)(void *arg, size_t done);

struct tape_backend_ops {
	const char *name;
	int (*put)(struct tape_backend *be, const char *key, const void *buf, size_t len);
	ssize_t (*get)(struct tape_backend *be, const char *key, uint64_t off, void *buf,
		       size_t len);
	ssize_t (*getv)(struct tape_backend *be, const char *key, uint64_t off,
			const struct iovec *iov, int iovcnt, tape_progress_cb progress, void *arg);
	int (*head)(struct tape_backend *be, const char *key, struct tape_obj_info *oi);
	/* every object whose key starts with prefix; cb != 0 stops and is returned */
	int (*list)(struct tape_backend *be, const char *prefix, tape_list_cb cb, void *arg);
	int (*del)(struct tape_backend *be, const char *key); /* -ENOENT if absent */
	/* optional: removes what unfinished puts left (a file pool's temporary
	 * files) last written before `before` (store time); *removed counts */
	int (*sweep_temps)(struct tape_backend *be, int64_t before, uint64_t *removed);
	void (*close)(struct tape_backend *be);
};

struct tape_backend {
	const struct tape_backend_ops *ops;
	/* requests sent to the store (S3: HTTP requests, retries included;
	 * file and mem: operations), for gc's statistics and benchmarks */
	atomic_uint_fast64_t requests;
};

/* Open the backend a pool URL names. opts: space-separated key=value (see
 * core/tier.h). err gets a one-line reason. */
int tape_backend_open(const char *url, const char *opts, struct tape_backend **out, char *err,
		      size_t errlen);

int tape_backend_file_open(const char *dir, struct tape_backend **out, char *err, size_t errlen);
int tape_backend_s3_open(const char *bucket_and_prefix, const char *opts, struct tape_backend **out,
			 char *err, size_t errlen);

/* In-memory backend (tests). */
struct tape_backend *tape_backend_mem_new(void);
/* Another reference to the same store, for a second pool over it (another
 * "host"); each reference is closed on its own. */
struct tape_backend *tape_backend_mem_share(struct tape_backend *be);
/* Moves the store's clock (the mtime new objects get) on by seconds. */
void tape_mem_clock_advance(struct tape_backend *be, int64_t seconds);
/* Make the k-th operation from now (1 = the next one) fail with err (negative
 * errno); ops counts put/get/head/list/del. k = 0 disarms. */
void tape_mem_fail_op(struct tape_backend *be, uint64_t k, int err);
struct tape_mem_stats {
	uint64_t puts, gets, heads, lists, dels;
	uint64_t bytes_put, bytes_got;
	uint64_t lock_ops; /* put/head/list/del of locks/ (not in the counts above) */
};
void tape_mem_stats_get(struct tape_backend *be, struct tape_mem_stats *st);
/* Flip one byte of an object (corruption tests); -ENOENT / -EINVAL. */
int tape_mem_corrupt(struct tape_backend *be, const char *key, uint64_t off);
/* Set the mtime of every object to t (grace-period tests). */
void tape_mem_set_mtime_all(struct tape_backend *be, int64_t t);

/* getv through the method table, or get into a bounce buffer (one progress
 * call at the end) for a backend without it. */
ssize_t tape_getv(struct tape_backend *be, const char *key, uint64_t off, const struct iovec *iov,
		  int iovcnt, tape_progress_cb progress, void *arg);
/* Copies src into the iovec starting `pos` bytes in; returns bytes copied. */
size_t tape_iov_store(const struct iovec *iov, int iovcnt, size_t pos, const void *src, size_t n);

/* Option parsing shared by backends: finds key in "a=b c=d" and copies its
 * value; returns 1 if found, 0 if not, -ENAMETOOLONG if it does not fit. */
int tape_opt_get(const char *opts, const char *key, char *val, size_t vallen);

#endif

/*
 * lock.h — the bucket lock protocol that lets many hosts share one pool
 * (internal to tape/). Model: restic's lock objects, with times taken from
 * the object store, never from a local clock.
 *
 * Objects: `locks/<session>-s.lock` (shared) and `locks/<session>-x.lock`
 * (exclusive), where <session> is 32 hex digits drawn when the pool is
 * opened. The body names the holder ("host=<id>:<name>", pid, kind) for
 * messages only; the protocol reads key and server mtime from a listing.
 *
 *   shared     held while anything in this process relies on the packs not
 *              changing under it: a running upload (from before its dedup
 *              decisions to after its manifest), an open image, a manifest
 *              delete, a listing for import. Reference counted: one object
 *              per pool per process, whatever the number of users.
 *   exclusive  held by gc from before its listings to after its last delete.
 *
 * Acquiring: PUT our object, HEAD it (its mtime is the store's "now"), LIST
 * locks/. With strongly consistent listings (S3 since 2020, RGW, a file
 * system) of two acquirers that race, at least one sees the other: a shared
 * acquirer that sees a fresh exclusive lock removes its own and waits; an
 * exclusive acquirer that sees any other fresh lock removes its own and
 * fails with EBUSY. Locks of this same session are not conflicts: inside one
 * process the pool's pins and pack states (pool.h) order uploads and gc.
 *
 * Freshness: a refresher thread re-PUTs held locks every stale/6 seconds. A
 * lock whose mtime is more than `lock_stale` seconds (pool option, default
 * 1800) older than the observer's own freshly written lock is stale: it no
 * longer protects anything, and gc deletes it (a crashed host's leftovers
 * go after one stale period). A holder whose refreshes were more than
 * stale/2 apart, measured in store time, may have been judged stale by a
 * collector: its lock is marked lost (pool_lock_shared_valid says so), and an
 * upload then re-checks that every pack it references still exists before it
 * stores its manifest.
 */
#ifndef ACMFS_TAPE_LOCK_H
#define ACMFS_TAPE_LOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct tier_pool;

struct pool_lock {
	pthread_mutex_t mu;	/* the fields below */
	pthread_cond_t cv;	/* refresher wake-up, state changes */
	pthread_mutex_t io_mu;	/* serialises acquire/refresh/release I/O; never taken under mu */
	char session[33];
	char holder[300];	/* "<host id>:<host name>" */
	int64_t stale_s;	/* lock_stale= */
	int64_t wait_s;		/* lock_wait=: how long an upload waits for a gc */
	unsigned shared_refs;
	bool shared_held;	/* our shared object exists */
	bool shared_lost;	/* a refresh gap may have let a collector in */
	uint64_t shared_epoch;	/* bumped at every (re)acquisition */
	int64_t shared_srv;	/* store mtime of the last refresh */
	int64_t shared_mono;	/* local monotonic seconds of the last refresh */
	bool excl_held;
	int64_t excl_srv;
	bool thr_started, stop;
	pthread_t thr;
};

void pool_lock_init(struct pool_lock *l, int64_t stale_s, int64_t wait_s);
/* Stops the refresher and deletes the objects still held. */
void pool_lock_fini(struct tier_pool *p);
void pool_lock_set_holder(struct tier_pool *p, const char *holder);

/* Takes a reference on the shared lock, acquiring it first if needed. A
 * fresh exclusive lock of another session: wait up to wait_s seconds (0 =
 * not at all), then -EBUSY with the holder in err. *epoch (optional) gets
 * the acquisition's epoch for pool_lock_shared_valid. */
int pool_lock_shared(struct tier_pool *p, int64_t wait_s, uint64_t *epoch, char *err,
		     size_t errlen);
void pool_unlock_shared(struct tier_pool *p);
/* Refreshes the shared lock now and tells whether it protected the holder
 * without a gap since `epoch`: 1 yes, 0 no (the lock was re-acquired, now
 * fresh: the caller must re-check what it relies on), -errno on failure. */
int pool_lock_shared_valid(struct tier_pool *p, uint64_t epoch);

/* Acquires the exclusive lock (no waiting): -EBUSY with the holder of a
 * conflicting fresh lock in err. Deletes other sessions' stale locks
 * (counted in *stale_removed). *srv_now: the store's time. */
int pool_lock_exclusive(struct tier_pool *p, int64_t *srv_now, unsigned *stale_removed, char *err,
			size_t errlen);
/* Refreshes the exclusive lock now: 0 if it held without a gap since it was
 * taken, -ESTALE if a shared acquirer may have taken it as stale (a gc must
 * then stop before deleting anything), other -errno on failure. */
int pool_lock_exclusive_valid(struct tier_pool *p);
void pool_unlock_exclusive(struct tier_pool *p);

/* parses "locks/<32 hex>-<s|x>.lock"; 0 and session/kind set, or -EINVAL */
int pool_lock_key_parse(const char *key, char session[33], char *kind);

#endif

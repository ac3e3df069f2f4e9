/*
 * engine_int.h — the engine's in-memory model, shared by engine.c (store,
 * volumes, commands), vol.c (data path, copy jobs, images), backup.c
 * (backup/restore/history operations), tapejob.c and render.c. Not for fs/.
 *
 * Lock order (never take an earlier one while holding a later one):
 *   e->lock  →  v->barrier  →  v->stripes[]  →  track internals
 * e->lock protects: the volume list, every vol's bvs/hists lists and rows,
 * pools, the catalog, job↔history links. v->barrier (rwlock) read side is held
 * by each TV write; its write side is held to create or retire copy jobs and to
 * snapshot the era map — so v->jobs is stable under either side.
 */
#ifndef ACMFS_ENGINE_INT_H
#define ACMFS_ENGINE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "catalog.h"
#include "cmd.h"
#include "engine.h"
#include "track.h"

#define NSTRIPES 1024

struct job;
struct tjob;

struct bvol {
	struct bv_row row;
	char name[ACM_NAME_MAX + 16]; /* <vol>.bvN */
	char path[PATH_MAX];
	int fd;
	struct history *hist; /* the disk history on it, or NULL */
	struct job *job;      /* running copy to it, or NULL */
	struct bvol *next;
};

struct history {
	struct hist_row row;
	struct bvol *bv;    /* disk side, NULL when none */
	struct job *job;    /* running disk copy */
	struct tjob *tjob;  /* running tape copy, under e->lock */
	atomic_uint_fast64_t tape_done; /* grains processed by the tape job */
	int readers;	    /* open images of this history, under e->lock */
	int fills;	    /* fills reading it (fill.h; counted in readers too) */
	struct history *next; /* ascending version */
};

/* Whether the disk side can serve the history's image; `image` (HIMG_BEST)
 * reads from tape when it cannot. */
static inline bool hist_disk_ok(const struct history *h)
{
	return h->bv && h->row.disk_status != HS_FAILED;
}

struct job {
	struct vol *v;
	struct bvol *bv;
	struct history *h; /* NULL when its history was deleted (copy goes on) */
	uint64_t nr_grains;
	_Atomic uint64_t *pending;
	atomic_uint_fast64_t remaining; /* pending bits still set */
	atomic_uint_fast64_t copied;	/* grains physically copied (copier + COW) */
	uint64_t total;
	atomic_int cancel;
	bool started;	  /* its copier thread runs (under e->lock) */
	bool overlay;	  /* -m TAPE: no copier; the uploader consumes pending */
	struct job *next; /* in v->jobs */
};

struct vol {
	struct engine *e;
	struct vol_row row;
	char dir[3200];
	char tv_path[PATH_MAX];
	int tv_fd;
	uint64_t nr_grains;
	struct track *trk;
	pthread_rwlock_t barrier;
	pthread_mutex_t stripes[NSTRIPES];
	struct job *jobs; /* see lock order */
	struct bvol *bvs;
	struct history *hists;
	int refs;	     /* under e->lock */
	int opens, writers;  /* open data/ctl handles; data handles open for write */
	bool deleted;
	bool restoring;	     /* a restore runs: other writers refused */
	atomic_int restore_pct; /* -1 when none; a fill's progress too */
	struct fill *fill;   /* a fill runs (fill.h): e->lock and barrier write to change */
	atomic_int filling;  /* fill != NULL, for the data path's unlocked test */
	atomic_int_fast64_t mtime;
	pthread_mutex_t log_lock;
	/* vol_io_error's rate limits, [0] reads and [1] writes: when each last
	 * logged (monotonic ms, 0 = never) and how many it left out since */
	atomic_int_fast64_t ioerr_ms[2];
	atomic_uint ioerr_quiet[2];
	struct vol *next;
};

struct pool {
	struct pool_row row;
	struct tier_pool *tp; /* opened lazily */
	int busy;	      /* gc or hosts listing running without e->lock; under e->lock */
	struct pool *next;
};

struct metrics {
	atomic_uint_fast64_t backups_started, backups_succeeded, backups_failed;
	atomic_uint_fast64_t bytes_copied, grains_copied, cow_grains;
	atomic_uint_fast64_t restores, restore_grains, restore_bytes;
	atomic_uint_fast64_t tape_uploads, tape_bytes, tape_blocks_new, tape_failed;
	atomic_uint_fast64_t tape_bytes_read_closed; /* read by pools since closed */
	atomic_uint_fast64_t ctl_errors, io_errors;
};

struct engine {
	uint64_t trash_gen; /* bumped by each manifest put in the trash, under e->lock */
	char store[3072]; /* engine_open refuses longer store paths */
	char mountpoint[PATH_MAX];
	char host[64];	   /* host name (-o host=, else gethostname) */
	char host_id[33];  /* 32 hex digits, drawn once per store (catalog meta host_id) */
	char holder[100];  /* "<host_id>:<host>": written into manifests and bucket locks */
	struct catalog *cat;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when a job ends */
	struct vol *vols;
	struct pool *pools;
	const struct tier_ops *tier;
	void (*inval_data)(void *arg, uint64_t vol_id);
	void *inval_arg;
	int lock_fd;
	int nr_threads; /* running job threads, under lock */
	bool stopping;
	pthread_t flusher;
	bool flusher_started;
	unsigned flush_ms;
	unsigned hook_timeout_s; /* -o hook_timeout= */
	struct metrics m;
};

/* a tape copy of h runs, or waits for h's disk copy to end (BOTH) */
static inline bool tape_copy_pending(const struct history *h)
{
	return h->tjob || h->row.tape_status == HS_EXECUTING;
}

/* engine.c */
/* the history a -g/-v/-t/latest selection names, on the given media
 * (MEDIA_UNSET = either); need_ok: latest only among succeeded ones */
struct history *hist_select(struct vol *v, const struct cmd *c, int media, bool need_ok);
int engine_volume_create(struct engine *e, const struct cmd *c, char *err, size_t errlen,
			 struct sbuf *reply); /* under e->lock */
void vol_log(struct vol *v, const char *fmt, ...) ACM_PRINTF(2, 3);
/* An I/O error returned to a reader or writer of v: counted in metrics and
 * logged as "error: reading|writing WHAT[ of version V] at OFF:
 * strerror(err)" (version 0: none), at most once a second per volume for
 * reads and once for writes; the next line says how many were left out (a
 * reader carrying on past errors, dd conv=noerror, would otherwise log
 * every request). */
void vol_io_error(struct vol *v, bool write, const char *what, uint64_t version, uint64_t off,
		  int err);
void engine_log(struct engine *e, const char *fmt, ...) ACM_PRINTF(2, 3);
struct bvol *vol_bv_by_name(struct vol *v, const char *name);
struct history *vol_hist(struct vol *v, uint64_t version);
/* Hooks STORE/hooks/<op>.pre and <op>.post (op: backup, restore, tapecopy).
 * engine_hook_pre checks both files first (owner, mode, no symlinks: -EPERM,
 * nothing runs), then runs .pre if there is one. 0: go on, and the caller
 * must call engine_hook_post once, whatever the outcome. < 0 (err says why):
 * the operation must not run; if .pre had started, its .post has run already
 * (ACMFS_RESULT=failed). A hook past e->hook_timeout_s is killed (its process
 * group) and fails -ECANCELED. */
int engine_hook_pre(struct engine *e, struct vol *v, const char *op, char *err, size_t errlen);
/* .post with the outcome (rc 0: succeeded, else failed, why: the reason);
 * a refused, failing or timed-out .post is logged, not returned. */
void engine_hook_post(struct engine *e, struct vol *v, const char *op, int rc, const char *why);
void engine_thread_start(struct engine *e); /* under e->lock */
void engine_thread_end(struct engine *e);   /* takes e->lock */
struct pool *engine_pool(struct engine *e, const char *name);
int engine_pool_open(struct engine *e, struct pool *p, char *err, size_t errlen);
void pool_close_counted(struct engine *e, struct pool *p);
uint64_t engine_tape_bytes_read(struct engine *e); /* e->lock held */
int save_hist(struct engine *e, struct history *h);

/* vol.c — data path and copy jobs */
int vol_write_internal(struct vol *v, const void *buf, size_t len, uint64_t off);
/* the same from the segments of iov, through fd: the TV's descriptor or
 * another of the same file (a restore's direct-I/O one) */
int vol_writev_internal(struct vol *v, int fd, const struct iovec *iov, int cnt, uint64_t off);
int vol_punch_internal(struct vol *v, uint64_t off, uint64_t len);
struct job *job_create(struct vol *v, struct bvol *bv, struct history *h, bool full,
		       uint32_t base); /* under e->lock + barrier write */
int job_start(struct job *j);	   /* under e->lock */
struct tier_image *im_tier(struct himg *im);
int grain_read_hist(struct vol *v, struct history *h, uint64_t g, void *buf);
/* start fetching [off, off+len) of a tape image (no-op for disk images) */
void himg_prefetch(struct himg *im, uint64_t off, size_t len);
void prefetch_grains(int fd, const _Atomic uint64_t *bm, uint64_t nbits, uint64_t *next,
		     uint64_t upto, uint32_t grain);
/* the first grain in [g, limit) of fd (a volume-sized file) that may hold
 * data, by SEEK_DATA: limit when all of [g, limit) is a hole */
uint64_t file_zero_until(int fd, uint64_t g, uint64_t limit, uint32_t grain, uint64_t size);
void stripes_lock(struct vol *v, uint64_t g0, uint64_t g1);
void stripes_unlock(struct vol *v, uint64_t g0, uint64_t g1);
/* flush the era map of v (barrier write briefly) */
int vol_track_flush(struct vol *v);

/* backup.c */
int do_backup(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	      char *err, size_t errlen);
int do_restore(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	       char *err, size_t errlen);
int do_histdel(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	       char *err, size_t errlen);
int do_canceltrk(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	         char *err, size_t errlen);
int do_tphistcopy(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	          char *err, size_t errlen);
int do_cancel(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	      char *err, size_t errlen);
int do_verify(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	      char *err, size_t errlen);
/* under e->lock: remove the disk part of h (frees BV unless tracking) */
int hist_drop_disk(struct engine *e, struct vol *v, struct history *h);
int hist_drop_tape(struct engine *e, struct vol *v, struct history *h);
void hist_unlink_if_empty(struct engine *e, struct vol *v, struct history *h);
/* disk job finished: called by the copier thread with e->lock held; unlocks it, frees j */
void job_done(struct job *j);
/* tape side (tapejob.c) */
int tape_backup_direct(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
		       char *err, size_t errlen);
int tape_start_copy(struct engine *e, struct vol *v, struct history *h, bool from_tv,
		    char *err, size_t errlen); /* under e->lock */
int tape_apply_retention(struct engine *e, struct vol *v);
/* host: a host id or name (pool import NAME host=H), NULL = this host. Without
 * e->lock, the pool pinned (busy): lists the pool, then applies under the lock */
int pool_import(struct engine *e, struct pool *p, const char *host, struct sbuf *reply, char *err,
		size_t errlen);
int pool_hosts(struct engine *e, struct pool *p, struct sbuf *reply, char *err, size_t errlen);
int pool_gc(struct engine *e, struct pool *p, int64_t grace_s, struct sbuf *reply, char *err,
	    size_t errlen);
void tape_cancel_all(struct engine *e);
/* delete the manifests in the catalog's trash (under e->lock); failures stay
 * in the trash for the next call */
/* deletes the manifests in the catalog's trash from their pools; without e->lock */
void tape_empty_trash(struct engine *e);

/* render.c */
int disk_generation_of(struct vol *v, struct history *h);
int tape_generation_of(struct vol *v, struct history *h);
const char *bv_mode(struct vol *v, struct bvol *b, bool detailed);
int job_execute_pct(const struct job *j);

#endif

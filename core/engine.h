/*
 * engine.h — the acmfs engine: a store of transaction volumes, their backup
 * volumes, histories, tracking and copy jobs. This is the whole product minus
 * FUSE; fs/ maps each FUSE request onto one call here.
 *
 * Objects handed out (struct vol, struct himg) are reference-counted or
 * owned by the caller as documented; every call is thread-safe.
 *
 * Errors: 0 / count or negative errno. Command failures carry a one-line reason
 * in the reply buffer and in the volume's log.
 */
#ifndef ACMFS_ENGINE_H
#define ACMFS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tier.h"
#include "util.h"

struct engine;
struct vol;
struct himg;

struct engine_opts {
	const char *store;	    /* STORE directory (created if missing) */
	const char *mountpoint;	    /* for hooks' data path and tables; may be NULL */
	const struct tier_ops *tier; /* tape tier, or NULL (tape commands fail EIO) */
	/* called after the engine changed a volume's data behind the kernel's back
	 * (restore): the adapter drops cached pages. May be NULL. */
	void (*inval_data)(void *arg, uint64_t vol_id);
	void *inval_arg;
	unsigned flush_ms;	    /* era-map flush period, default 5000 */
	/* this host's name in tables, status.json and every manifest it writes
	 * (-o host=); NULL: the machine's host name. 1-63 of [A-Za-z0-9._-]. */
	const char *host;
	/* a hook running longer is killed and fails (-o hook_timeout=); 0: the
	 * default, ENGINE_HOOK_TIMEOUT_S */
	unsigned hook_timeout_s;
};

#define ENGINE_HOOK_TIMEOUT_S 300

/* The volumes whose data file is open (a loop device holds it open too):
 * "NAME/data (N open, M for writing), …" into buf; returns how many. */
size_t engine_open_volumes(struct engine *e, char *buf, size_t len);
/* a name -o host= accepts: 1-63 of [A-Za-z0-9._-] */
bool engine_host_name_ok(const char *name);
int engine_open(const struct engine_opts *o, struct engine **out, char *err,
		size_t errlen) ACM_MUST_USE;
/* Start the engine's background threads (the era-map flusher). Separate from
 * engine_open so that a daemon can fork (daemonize) in between: threads do
 * not survive fork. engine_open'ed engines work without it, minus the flusher. */
int engine_start(struct engine *e) ACM_MUST_USE;
void engine_close(struct engine *e);
/* `acmfs --check`: consistency check of an unmounted store (core/check.c).
 * repair only makes things more conservative. Returns problems left, or -errno. */
int engine_check_store(const char *store, bool repair, struct sbuf *report);

/* ---- control files ---- */
/* Run one command written to the global ctl (v == NULL) or a volume's ctl.
 * reply gets "ok …\n[<vol> acmX completed\n]" or "error: …\n". */
int engine_ctl(struct engine *e, struct vol *v, const char *buf, size_t len, struct sbuf *reply);

/* ---- generated text ---- */
enum render_what {
	RENDER_README,
	RENDER_DEVDISP,
	RENDER_TRKSTAT,
	RENDER_HISTDISP,
	RENDER_STATUS_JSON,
	RENDER_METRICS,
	RENDER_INFO,	 /* volume info (v != NULL) */
	RENDER_LOG,	 /* volume or global log tail */
	RENDER_HIST_INFO /* history info: needs version */
};
int engine_render(struct engine *e, struct vol *v, enum render_what what, uint64_t version,
		  struct sbuf *out);

/* ---- volumes ---- */
/* calls cb for each volume (id, name) in name order; cb returning non-zero stops */
int engine_list_volumes(struct engine *e, int (*cb)(void *arg, uint64_t id, const char *name),
			void *arg);
/* reference-counted lookups; NULL if none */
struct vol *engine_vol_by_name(struct engine *e, const char *name);
struct vol *engine_vol_by_id(struct engine *e, uint64_t id);
void vol_put(struct vol *v);
uint64_t vol_id(const struct vol *v);
const char *vol_name(const struct vol *v);
uint64_t vol_size(const struct vol *v);
int64_t vol_mtime(const struct vol *v);

/* data file: open counting (for EBUSY rules), read, write, fsync */
int vol_open_data(struct vol *v, bool write) ACM_MUST_USE;
void vol_close_data(struct vol *v, bool write);
ssize_t vol_read(struct vol *v, void *buf, size_t len, uint64_t off);
ssize_t vol_write(struct vol *v, const void *buf, size_t len, uint64_t off);
int vol_fsync(struct vol *v, bool datasync);
int64_t vol_seek_data(struct vol *v, uint64_t off, int whence);
/* st_blocks of the data file: the 512-byte blocks its backing file (the TV)
 * has allocated, at most the size rounded up. Never 0 while the file holds
 * data (GNU tar takes st_blocks == 0 for a file of holes only). */
uint64_t vol_data_blocks(struct vol *v);

/* ---- histories ---- */
struct hist_entry {
	uint64_t version;
	bool disk, tape;
	bool image_from_tape; /* `image` is read from the tape tier */
	int64_t date;
};
int vol_list_histories(struct vol *v, int (*cb)(void *arg, const struct hist_entry *h),
		       void *arg);
int vol_history(struct vol *v, uint64_t version, struct hist_entry *out); /* -ENOENT */
uint64_t vol_latest_version(struct vol *v);	/* newest succeeded, 0 if none */
/* disk (tape=false) or tape generation n → version, 0 if none; count via n=0 */
uint64_t vol_generation(struct vol *v, bool tape, uint64_t n);
uint64_t vol_generation_count(struct vol *v, bool tape);

enum himg_kind { HIMG_BEST, HIMG_DISK, HIMG_TAPE };
int himg_open(struct vol *v, uint64_t version, enum himg_kind kind, struct himg **out) ACM_MUST_USE;
ssize_t himg_read(struct himg *im, void *buf, size_t len, uint64_t off);
/* A tape image without a copy: reply(arg, iov, cnt) gets segments of the
 * verified-block cache covering the (clipped) range, valid during the call;
 * returns reply's result, -errno on a read error (reply not called), or
 * -EOPNOTSUPP when the image cannot be served this way (use himg_read). */
int himg_read_iov(struct himg *im, size_t len, uint64_t off,
		  int (*reply)(void *arg, const struct iovec *iov, int iovcnt), void *arg);
int64_t himg_seek(struct himg *im, uint64_t off, int whence);
uint64_t himg_size(const struct himg *im);
/* Whether the image is read from the tape tier (HIMG_BEST resolved). */
bool himg_from_tape(const struct himg *im);
/* st_blocks of a history image (kind as himg_open; no image is opened, no
 * tape tier I/O): an upper bound of the 512-byte blocks holding its data, at
 * most the size rounded up, never 0 while it may hold data. A disk image: the
 * allocation of the files its bytes come from; a tape image: its non-zero
 * grains from the catalog. 0 or -ENOENT. */
int vol_image_blocks(struct vol *v, uint64_t version, enum himg_kind kind, uint64_t *out);
void himg_close(struct himg *im);
/* rm disk.img / tape.img / rmdir: histdel of one version and media */
int vol_histdel_version(struct vol *v, uint64_t version, bool disk, bool tape);

#endif

/*
 * backup.c — the per-volume commands: backup (snapshot and differential),
 * history deletion, tracking cancel, restore, tape copy requests, cancel,
 * verify. SPEC §5, §8 and the source text (reference/acm-tso-14.0-7.4.9.txt).
 *
 * Each command decides and records everything under e->lock, inside one
 * catalog transaction, before it reports success; long work (physical copy,
 * tape copy) runs on job threads. A restore runs in the caller's thread with
 * the volume marked `restoring` (durably), so a crash leaves `needs-restore`;
 * a tape restore adds a compare thread it joins before returning.
 */
#include "engine_int.h"
#include "fill.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "iomem.h"
#include "log.h"

#define LOG_PREFIX "backup"

static int errf(char *err, size_t errlen, int rc, const char *fmt, ...) ACM_PRINTF(4, 5);
static int errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

/* ---------- history removal ---------- */

void hist_unlink_if_empty(struct engine *e, struct vol *v, struct history *h)
{
	if (h->bv || h->row.tape_status != HS_NONE || h->readers || h->tjob)
		return;
	for (struct history **pp = &v->hists; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	free(h);
}

/* persist h, or delete its row when neither side remains */
static int hist_persist(struct engine *e, struct history *h)
{
	if (!h->bv && h->row.tape_status == HS_NONE)
		return catalog_del_hist(e->cat, h->row.vol_id, h->row.version);
	return save_hist(e, h);
}

int hist_drop_disk(struct engine *e, struct vol *v, struct history *h)
{
	struct bvol *b = h->bv;

	if (!b)
		return -ENOENT;
	if (h->readers || tape_copy_pending(h))
		return -EBUSY; /* an image reader or the tape copy (running or due) needs this BV */
	pthread_rwlock_wrlock(&v->barrier);
	if (h->job) {
		/* conventional: the BV is released, so its copy stops;
		 * differential: tracking and the copy go on without a history */
		if (!h->row.differential)
			atomic_store(&h->job->cancel, 1);
		h->job->h = NULL;
		h->job = NULL;
	}
	pthread_rwlock_unlock(&v->barrier);
	b->hist = NULL;
	h->bv = NULL;
	h->row.disk_status = HS_NONE;
	if (!h->row.differential && b->row.tracking) {
		b->row.tracking = false;
		int rc = catalog_put_bv(e->cat, &b->row);
		if (rc)
			return rc;
	}
	return hist_persist(e, h);
}

/* Forget h's tape side. Its manifest goes to the catalog's trash in the same
 * transaction; tape_empty_trash() deletes it once that is durable. */
int hist_drop_tape(struct engine *e, struct vol *v, struct history *h)
{
	int rc;

	if (h->row.tape_status == HS_NONE)
		return -ENOENT;
	if (h->tjob || h->readers)
		return -EBUSY;
	if (h->row.manifest[0]) {
		rc = catalog_trash_add(e->cat, h->row.pool, h->row.manifest);
		e->trash_gen++;
		if (rc)
			return rc;
	}
	h->row.tape_status = HS_NONE;
	h->row.manifest[0] = 0;
	h->row.blocks = 0;
	return hist_persist(e, h);
}

/* ---------- backup ---------- */

static struct history *oldest_disk(struct vol *v)
{
	for (struct history *h = v->hists; h; h = h->next)
		if (h->bv)
			return h;
	return NULL;
}

static unsigned disk_count(struct vol *v)
{
	unsigned n = 0;

	for (struct history *h = v->hists; h; h = h->next)
		n += h->bv != NULL;
	return n;
}

/* choose the BV for a new backup; *victim = history to release first */
static struct bvol *choose_bv(struct vol *v, bool differential, struct history **victim)
{
	struct bvol *best = NULL;
	int best_score = -1;

	*victim = disk_count(v) >= v->row.save ? oldest_disk(v) : NULL;
	for (struct bvol *b = v->bvs; b; b = b->next) {
		int score;
		if (b->hist && b->hist != *victim)
			continue;
		/* prefer: -T → a tracking BV (differential copy); plain → a non-tracking one */
		if (differential)
			score = b->row.tracking ? 2 : 1;
		else
			score = b->row.tracking ? 1 : 2;
		if (score > best_score ||
		    (score == best_score && b->row.tracking && best &&
		     b->row.track_base > best->row.track_base)) {
			best = b;
			best_score = score;
		}
	}
	return best;
}

int do_backup(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	      char *err, size_t errlen)
{
	struct history *victim, *h, **pp;
	struct bvol *bv;
	struct job *j;
	uint32_t era = 0, base;
	bool full, old_tracking = false;
	int rc;

	if (atomic_load(&v->filling))
		/* the copy would read grains the fill has not brought yet */
		return errf(err, errlen, -EBUSY,
			    "%s is still filling from a history (%d%% done): back it up once "
			    "the fill has ended",
			    v->row.name, fill_pct(v));
	if (c->media == MEDIA_TAPE)
		return tape_backup_direct(e, v, c, reply, err, errlen);
	rc = engine_hook_pre(e, v, "backup", err, errlen);
	if (rc)
		return rc;
	/* from here on every way out runs backup.post */
	pthread_mutex_lock(&e->lock);
	if (v->restoring) {
		rc = errf(err, errlen, -EBUSY, "a restore of %s is running", v->row.name);
		goto out_unlock;
	}
	if (c->media == MEDIA_BOTH && !engine_pool(e, v->row.pool)) {
		rc = errf(err, errlen, -ENOENT, "tape pool %s does not exist", v->row.pool);
		goto out_unlock;
	}
	bv = choose_bv(v, c->differential, &victim);
	if (!bv) {
		rc = errf(err, errlen, -ENOSPC,
			  "no usable backup volume for %s (save=%u; add one with 'bv add')",
			  v->row.name, v->row.save);
		goto out_unlock;
	}
	char why[200];
	if (victim && fill_pin_reason(v, victim, why, sizeof(why))) {
		rc = errf(err, errlen, -EBUSY, "the oldest generation cannot be released: %s", why);
		goto out_unlock;
	}
	if (victim && (victim->readers || tape_copy_pending(victim))) {
		rc = errf(err, errlen, -EBUSY, "the oldest generation (version %llu) %s",
			  (unsigned long long)victim->row.version,
			  tape_copy_pending(victim) ? "is being copied to tape"
						    : "is open for reading");
		goto out_unlock;
	}
	full = !c->differential || !bv->row.tracking;
	base = bv->row.track_base;
	old_tracking = bv->row.tracking;

	h = calloc(1, sizeof(*h));
	if (!h) {
		rc = -ENOMEM;
		goto out_unlock;
	}
	rc = catalog_begin(e->cat);
	if (rc)
		goto out_free;
	if (victim) {
		uint64_t vv = victim->row.version;
		rc = hist_drop_disk(e, v, victim);
		if (rc)
			goto out_rollback;
		hist_unlink_if_empty(e, v, victim);
		vol_log(v, "generation overflow: disk history version %llu released",
			(unsigned long long)vv);
	}
	era = v->row.era;
	h->row.vol_id = v->row.id;
	h->row.version = v->row.next_version++;
	h->row.date = util_now();
	h->row.differential = c->differential;
	h->row.media = (int)c->media;
	h->row.disk_status = HS_EXECUTING;
	h->row.copy_full = full;
	h->row.tape_status = c->media == MEDIA_BOTH ? HS_EXECUTING : HS_NONE;
	h->row.btype = (int)c->btype;
	h->row.cut_era = era;
	if (c->media == MEDIA_BOTH)
		snprintf(h->row.pool, sizeof(h->row.pool), "%s", v->row.pool);
	h->bv = bv;
	bv->row.tracking = c->differential;
	bv->row.track_base = era;
	v->row.era = era + 1;
	rc = save_hist(e, h);
	if (!rc)
		rc = catalog_put_bv(e->cat, &bv->row);
	if (!rc)
		rc = catalog_put_volume(e->cat, &v->row);
	if (!rc)
		rc = catalog_commit(e->cat);
	if (rc)
		goto out_rollback;

	/* the logical copy: an instant under the barrier */
	pthread_rwlock_wrlock(&v->barrier);
	j = job_create(v, bv, h, full, base);
	if (j)
		track_set_era(v->trk, era + 1);
	pthread_rwlock_unlock(&v->barrier);
	bv->hist = h;
	for (pp = &v->hists; *pp; pp = &(*pp)->next)
		;
	*pp = h;
	if (!j || (rc = job_start(j))) {
		h->row.disk_status = HS_FAILED;
		if (h->row.tape_status == HS_EXECUTING)
			h->row.tape_status = HS_FAILED;
		bv->row.tracking = false;
		if (save_hist(e, h) || catalog_put_bv(e->cat, &bv->row))
			log_err("cannot record failure of version %llu",
				(unsigned long long)h->row.version);
		rc = errf(err, errlen, rc ? rc : -ENOMEM, "cannot start the physical copy");
		goto out_unlock;
	}
	atomic_fetch_add(&e->m.backups_started, 1);
	vol_log(v, "backup version %llu started: %s%s copy to %s (%llu grains), media %s",
		(unsigned long long)h->row.version, c->differential ? "differential " : "",
		full ? "full" : "diff", bv->name, (unsigned long long)j->total,
		c->media == MEDIA_BOTH ? "BOTH" : "DISK");
	sbuf_addf(reply,
		  "ok volume=%s version=%llu bv=%s media=%s differential=%d copy=%s grains=%llu\n"
		  "%s acmbackup completed\n",
		  v->row.name, (unsigned long long)h->row.version, bv->name,
		  c->media == MEDIA_BOTH ? "BOTH" : "DISK", c->differential, full ? "full" : "diff",
		  (unsigned long long)j->total, v->row.name);
	pthread_mutex_unlock(&e->lock);
	engine_hook_post(e, v, "backup", 0, NULL);
	err[0] = 0;
	return 0;
out_rollback:
	catalog_rollback(e->cat);
	/* undo in-memory changes of this attempt (the victim's are durable only on commit) */
	v->row.next_version--;
	v->row.era = era;
	bv->row.tracking = old_tracking;
	bv->row.track_base = base;
out_free:
	free(h);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	if (!err[0])
		errf(err, errlen, rc, "backup failed: %s", strerror(-rc));
	engine_hook_post(e, v, "backup", rc, err);
	return rc;
}

/* copier thread: called with e->lock held */
void job_done(struct job *j)
{
	struct vol *v = j->v;
	struct engine *e = v->e;
	struct history *h = j->h;
	bool ok = atomic_load(&j->remaining) == 0 && !atomic_load(&j->cancel);
	struct job **pp;

	if (!ok) {
		/* a partial copy is worth nothing: give its space back first (a copy
		 * that failed for ENOSPC must not keep the store full) */
		if (ftruncate(j->bv->fd, 0) || ftruncate(j->bv->fd, (off_t)v->row.size_bytes))
			log_warn("cannot free the space of %s", j->bv->name);
	}
	if (!ok && j->bv->row.tracking) {
		/* the BV holds a partial copy: only a full copy can follow */
		j->bv->row.tracking = false;
		if (catalog_put_bv(e->cat, &j->bv->row))
			log_err("cannot record tracking stop of %s", j->bv->name);
	}
	if (h) {
		h->row.grains_copied = atomic_load(&j->copied);
		h->row.grains_total = j->total;
		h->row.disk_status = ok ? HS_SUCCEEDED : HS_FAILED;
		if (!ok && h->row.tape_status == HS_EXECUTING && !h->tjob)
			h->row.tape_status = HS_FAILED;
		if (save_hist(e, h))
			log_err("cannot record the end of version %llu",
				(unsigned long long)h->row.version);
		vol_log(v, "backup version %llu %s: %llu grains copied to %s",
			(unsigned long long)h->row.version, ok ? "succeeded" : "failed",
			(unsigned long long)h->row.grains_copied, j->bv->name);
		atomic_fetch_add(ok ? &e->m.backups_succeeded : &e->m.backups_failed, 1);
	}
	pthread_rwlock_wrlock(&v->barrier);
	for (pp = &v->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	if (h)
		h->job = NULL;
	j->bv->job = NULL;
	pthread_rwlock_unlock(&v->barrier);
	if (ok && h && h->row.tape_status == HS_EXECUTING && !h->tjob) {
		char err[256];
		int rc = tape_start_copy(e, v, h, false, err, sizeof(err));
		if (rc) {
			h->row.tape_status = HS_FAILED;
			if (save_hist(e, h))
				log_err("cannot record tape failure");
			vol_log(v, "error: tape copy of version %llu not started: %s",
				(unsigned long long)h->row.version, err);
		}
	}
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	free(j->pending);
	free(j);
}

/* ---------- history selection ---------- */

/* the history a -g/-v/-t/latest selection names, on the given media
 * (MEDIA_UNSET = either) */
struct history *hist_select(struct vol *v, const struct cmd *c, int media, bool need_ok)
{
	struct history *best = NULL;
	uint64_t n = 0;

	switch (c->sel) {
	case SEL_VERSION: {
		struct history *h = vol_hist(v, c->sel_value);
		if (!h)
			return NULL;
		if (media == MEDIA_DISK && !h->bv)
			return NULL;
		if (media == MEDIA_TAPE && h->row.tape_status == HS_NONE)
			return NULL;
		return h;
	}
	case SEL_GEN: {
		bool tape = media == MEDIA_TAPE;
		uint64_t cnt = 0, idx = 0;
		for (struct history *h = v->hists; h; h = h->next)
			cnt += tape ? h->row.tape_status != HS_NONE : h->bv != NULL;
		if (c->sel_value > cnt)
			return NULL;
		for (struct history *h = v->hists; h; h = h->next) {
			if (!(tape ? h->row.tape_status != HS_NONE : h->bv != NULL))
				continue;
			if (idx++ == cnt - c->sel_value)
				return h;
		}
		return NULL;
	}
	case SEL_DATE:
		for (struct history *h = v->hists; h; h = h->next)
			if (h->row.tape_status == HS_SUCCEEDED && h->row.date <= c->sel_date)
				best = h;
		return best;
	case SEL_LATEST:
	case SEL_ALL:
		for (struct history *h = v->hists; h; h = h->next) {
			bool d = h->bv && (!need_ok || h->row.disk_status == HS_SUCCEEDED);
			bool t = h->row.tape_status != HS_NONE &&
				 (!need_ok || h->row.tape_status == HS_SUCCEEDED);
			if ((media != MEDIA_TAPE && d) || (media != MEDIA_DISK && t))
				best = h;
		}
		(void)n;
		return best;
	}
	return NULL;
}

/* ---------- histdel ---------- */

int do_histdel(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	       char *err, size_t errlen)
{
	/* -z takes every history, however many: sized from the count, and all or
	 * none (no fixed cap that would silently delete only the first ones) */
	struct history *one, **targets = &one;
	size_t nt = 0;
	bool disk = c->media != MEDIA_TAPE, tape = c->media != MEDIA_DISK, emptied = false;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (c->sel == SEL_ALL) {
		size_t want = 0;
		for (struct history *h = v->hists; h; h = h->next)
			if ((disk && h->bv) || (tape && h->row.tape_status != HS_NONE))
				want++;
		if (want > 1 && !(targets = malloc(want * sizeof(*targets)))) {
			targets = &one;
			rc = errf(err, errlen, -ENOMEM,
				  "histdel -z: no memory for a list of %zu histories; nothing deleted",
				  want);
			goto out_unlock;
		}
		for (struct history *h = v->hists; h && nt < want; h = h->next)
			if ((disk && h->bv) || (tape && h->row.tape_status != HS_NONE))
				targets[nt++] = h;
	} else {
		struct history *h =
			hist_select(v, c, c->sel == SEL_GEN && c->media == MEDIA_UNSET ? MEDIA_DISK
										    : (int)c->media,
				    false);
		if (h)
			targets[nt++] = h;
	}
	if (nt == 0 && c->sel != SEL_ALL) {
		rc = errf(err, errlen, -ENOENT, "no such history (%s %llu)",
			  c->sel == SEL_GEN ? "generation" : "version",
			  (unsigned long long)c->sel_value);
		goto out_unlock;
	}
	for (size_t i = 0; i < nt; i++) {
		char why[200];
		if (fill_pin_reason(v, targets[i], why, sizeof(why))) {
			rc = errf(err, errlen, -EBUSY, "%s", why);
			goto out_unlock;
		}
		if (targets[i]->readers) {
			rc = errf(err, errlen, -EBUSY, "history version %llu is open for reading",
				  (unsigned long long)targets[i]->row.version);
			goto out_unlock;
		}
		if ((tape || (disk && targets[i]->bv)) && tape_copy_pending(targets[i])) {
			rc = errf(err, errlen, -EBUSY,
				  "a tape copy of version %llu is running (cancel it first)",
				  (unsigned long long)targets[i]->row.version);
			goto out_unlock;
		}
	}
	rc = catalog_begin(e->cat);
	if (rc)
		goto out_unlock;
	sbuf_addf(reply, "ok volume=%s deleted=", v->row.name);
	for (size_t i = 0; i < nt && !rc; i++) {
		struct history *h = targets[i];
		sbuf_addf(reply, "%s%llu", i ? "," : "", (unsigned long long)h->row.version);
		if (disk && h->bv)
			rc = hist_drop_disk(e, v, h);
		if (!rc && tape && h->row.tape_status != HS_NONE)
			rc = hist_drop_tape(e, v, h);
	}
	if (!rc)
		rc = catalog_commit(e->cat);
	if (rc) {
		catalog_rollback(e->cat);
		errf(err, errlen, rc, "histdel failed: %s (state reloads at next mount)",
		     strerror(-rc));
		goto out_unlock;
	}
	emptied = true; /* the manifests go from the pool after the unlock */
	for (size_t i = 0; i < nt; i++) {
		vol_log(v, "history version %llu deleted (%s)",
			(unsigned long long)targets[i]->row.version,
			disk && tape ? "disk and tape" : disk ? "disk" : "tape");
		hist_unlink_if_empty(e, v, targets[i]);
	}
	sbuf_addf(reply, "\n%s acmhistdel completed\n", v->row.name);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	if (emptied)
		tape_empty_trash(e);
	if (targets != &one)
		free(targets);
	return rc;
}

int vol_histdel_version(struct vol *v, uint64_t version, bool disk, bool tape)
{
	struct cmd c;
	struct sbuf sb;
	char err[256];
	int rc;

	memset(&c, 0, sizeof(c));
	c.kind = CMD_HISTDEL;
	c.sel = SEL_VERSION;
	c.sel_value = version;
	c.media = disk && tape ? MEDIA_UNSET : disk ? MEDIA_DISK : MEDIA_TAPE;
	sbuf_init(&sb, 4096);
	err[0] = 0;
	rc = do_histdel(v->e, v, &c, &sb, err, sizeof(err));
	if (rc)
		vol_log(v, "error: histdel (rm): %s (%s)", err, util_errname(rc));
	sbuf_release(&sb);
	return rc;
}

/* ---------- canceltrk ---------- */

int do_canceltrk(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
		 char *err, size_t errlen)
{
	/* -all takes every tracking pair, however many: sized from the count, and
	 * all or none */
	struct bvol *one, **list = &one;
	size_t n = 0;
	int rc;

	pthread_mutex_lock(&e->lock);
	if (c->all) {
		size_t want = 0;
		for (struct bvol *b = v->bvs; b; b = b->next)
			if (b->row.tracking)
				want++;
		if (want > 1 && !(list = malloc(want * sizeof(*list)))) {
			list = &one;
			rc = errf(err, errlen, -ENOMEM,
				  "canceltrk -all: no memory for a list of %zu backup volumes; "
				  "nothing cancelled",
				  want);
			goto out_unlock;
		}
		for (struct bvol *b = v->bvs; b && n < want; b = b->next)
			if (b->row.tracking)
				list[n++] = b;
	} else {
		struct bvol *b = vol_bv_by_name(v, c->bd);
		if (!b) {
			rc = errf(err, errlen, -ENOENT, "%s is not a backup volume of %s", c->bd,
				  v->row.name);
			goto out_unlock;
		}
		if (!b->row.tracking) {
			rc = errf(err, errlen, -ENOENT, "%s is not tracking", c->bd);
			goto out_unlock;
		}
		list[n++] = b;
	}
	rc = catalog_begin(e->cat);
	for (size_t i = 0; i < n && !rc; i++) {
		list[i]->row.tracking = false;
		rc = catalog_put_bv(e->cat, &list[i]->row);
	}
	if (!rc)
		rc = catalog_commit(e->cat);
	if (rc) {
		catalog_rollback(e->cat);
		for (size_t i = 0; i < n; i++)
			list[i]->row.tracking = true;
		errf(err, errlen, rc, "canceltrk failed: %s", strerror(-rc));
		goto out_unlock;
	}
	sbuf_addf(reply, "ok volume=%s bv=", v->row.name);
	for (size_t i = 0; i < n; i++) {
		sbuf_addf(reply, "%s%s", i ? "," : "", list[i]->name);
		vol_log(v, "tracking to %s cancelled%s; the next differential backup to it is "
			   "a full copy",
			list[i]->name, list[i]->job ? " (its physical copy goes on)" : "");
	}
	sbuf_addf(reply, "\n%s acmcanceltrk completed\n", v->row.name);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	if (list != &one)
		free(list);
	return rc;
}

/* ---------- restore ---------- */

/*
 * A tape restore is a pipeline of two threads. The compare thread judges the
 * target a chunk of consecutive grains at a time: onto the volume itself, a
 * grain its tracking has not seen written since the history's cut matches
 * as it is (nothing read); every other grain is read (one pread per run),
 * hashed if non-zero and compared with the tape block's hash. The chunk
 * leaves it with one verdict per grain, and the image is told at once which
 * runs of it will be read (image_prefetch), so that the GETs for the chunks
 * queued ahead are in flight while the caller writes. It runs up to
 * RESTORE_QUEUE - 1 chunks ahead of the caller's thread, which reads each
 * run of differing non-zero grains from the image (waiting only for what is
 * still arriving), writes it with one write, and punches runs of grains that
 * are zero on tape.
 *
 * The compare thread reads through its own O_DIRECT descriptor when the
 * target allows it: the bytes go straight to the chunk, sparing the CPU a
 * page-cache copy (and the cache pages it would fill) that costs as much as
 * the hashing; it falls back to the ordinary descriptor otherwise. A direct
 * read first writes back any dirty cached pages of its range, so it sees
 * what a buffered read would.
 *
 * The chunks live in a ring of RESTORE_QUEUE slots: a slot is the compare
 * thread's from when the caller releases it until it is published (tail++),
 * then the caller's until it releases it (head++). Memory: RESTORE_QUEUE
 * chunks of RESTORE_CHUNK_BYTES (80 MiB), besides the image's cache. Either side's error stops both: the compare
 * thread ends with its error, the caller stops it and joins it before return.
 */
#define RESTORE_CHUNK_BYTES (16 * ACM_MiB) /* the tape tier's largest GET (an upload's claim) */
#define RESTORE_CHUNK_MAX   (RESTORE_CHUNK_BYTES / (4 * ACM_KiB)) /* grains, at the smallest grain */
#define RESTORE_QUEUE	    5 /* chunks compared and prefetched ahead: ~4 GETs in flight */
#define RESTORE_PIECE_BYTES (4 * ACM_MiB) /* one write from the image's cache */
#define RESTORE_PROBE_EVERY 8 /* fetch-only: every 8th chunk is compared after all */
#define RESTORE_MATCH_MIN   16 /* hashing pays while 1 in 16 compared grains matches */

struct restore_src {
	struct vol *v;
	struct history *h;
	struct tier_image *ti; /* tape source */
	bool tape;
	uint32_t cut;	       /* h's cut era when restoring onto its own volume; else 0
				  (elsewhere, or unknown: imported) */
};

/* Where a restore writes, and what it did there. */
struct restore_dst {
	struct vol *v;
	bool to_tv;	       /* the volume, through its write path; else fd */
	bool blk;	       /* fd is a block device: zeros are written, not punched */
	int fd;		       /* the target path when !to_tv */
	int wfd;	       /* the target (TV or fd) opened for direct writes, or -1 */
	uint64_t copied;       /* grains written or punched */
	uint64_t bytes;	       /* bytes written (zero grains excluded) */
	uint64_t skipped;      /* grains whose content already matched (tape) */
	uint64_t compared;     /* grains of the target read and compared by hash (tape) */
	uint64_t done, total;  /* progress, in grains */
	bool touched;	       /* the target may hold restored data */
};

enum { G_MATCH, G_DATA, G_ZERO }; /* a grain's verdict: keep, fetch and write, punch */

struct rchunk {
	uint64_t g0, nr; /* first grain, grains */
	uint8_t *buf;	 /* nr grains: the target's content, then the fetched runs */
	uint8_t what[RESTORE_CHUNK_MAX];
};

struct rqueue {
	struct restore_src *src;
	int fd;		       /* the target, read by the compare thread */
	int dfd;	       /* the same, O_DIRECT, or -1; the compare thread's */
	uint64_t chunk_grains;
	uint64_t compared;     /* grains read and hashed; the compare thread's */
	bool fetch_only;       /* changed grains rarely match: fetch them unread */
	unsigned since_probe;  /* chunks judged without hashing since the last probe */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rchunk slot[RESTORE_QUEUE]; /* see above for who owns which */
	uint64_t head, tail;   /* chunks released / published; under lock */
	bool stop;	       /* the caller gives up; under lock */
	bool end;	       /* the compare thread is done, with rc; under lock */
	int rc;
};

static int target_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz))
			return -errno;
		*size = sz;
		return 1;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static void sha256(const void *buf, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

/* bytes of nr grains from g, the last grain clipped to the volume's size */
static uint64_t grains_len(struct vol *v, uint64_t g, uint64_t nr)
{
	uint64_t off = g * v->row.grain_bytes, end = off + nr * v->row.grain_bytes;

	return (end > v->row.size_bytes ? v->row.size_bytes : end) - off;
}

static void progress(struct restore_dst *d, uint64_t grains)
{
	d->done += grains;
	atomic_store(&d->v->restore_pct, (int)(d->done * 100 / (d->total ? d->total : 1)));
}

/* Zeros at off: a hole, or written zeros on a block device (scratch: len bytes). */
static int dst_zero(struct restore_dst *d, void *scratch, uint64_t len, uint64_t off)
{
	if (d->to_tv)
		return vol_punch_internal(d->v, off, len);
	if (d->blk)
		return util_pwrite_full(IO_DATA, d->fd, memset(scratch, 0, len), (size_t)len, off);
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		return -errno;
	return 0;
}

static int dst_write(struct restore_dst *d, const void *buf, uint64_t len, uint64_t off)
{
	if (d->to_tv)
		return vol_write_internal(d->v, buf, (size_t)len, off);
	return util_pwrite_full(IO_DATA, d->fd, buf, (size_t)len, off);
}

/* Every grain of the disk history that may differ (all of them unless diff). */
static int restore_disk(struct restore_src *s, struct restore_dst *d, bool diff, uint32_t base)
{
	struct vol *v = s->v;
	uint64_t grain = v->row.grain_bytes, nr = v->nr_grains, pf = 0;
	_Atomic uint64_t *set = calloc(bitmap_words(nr) + 1, 8);
	char *buf = malloc(grain);
	int rc = 0;

	if (!set || !buf) {
		rc = -ENOMEM;
		goto out_free;
	}
	if (diff)
		track_changed(v->trk, base, set);
	else
		for (uint64_t g = 0; g < nr; g++)
			bitmap_set(set, g);
	d->total = bitmap_count(set, nr);
	for (uint64_t g = bitmap_next(set, nr, 0); g < nr && !rc; g = bitmap_next(set, nr, g + 1)) {
		if (s->h->bv->fd >= 0 && pf < g + 2048)
			prefetch_grains(s->h->bv->fd, set, nr, &pf, g + 4096, grain);
		uint64_t off = g * grain, len = grains_len(v, g, 1);
		rc = grain_read_hist(v, s->h, g, buf);
		if (rc)
			break;
		d->touched = true; /* from here on the target may hold restored data */
		if (util_is_zero(buf, (size_t)len)) {
			rc = dst_zero(d, buf, len, off);
		} else {
			rc = dst_write(d, buf, len, off);
			d->bytes += len;
		}
		d->copied++;
		progress(d, 1);
	}
out_free:
	free(set);
	free(buf);
	return rc;
}

/* fd's file opened again for O_DIRECT reads or writes (the same file, not a
 * path that may have changed), or -1 */
static int reopen_direct(int fd, int mode)
{
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	return open(p, mode | O_DIRECT | O_CLOEXEC);
}

/* End of the run of grains with chunk c's verdict at i. */
static uint64_t run_end(const struct rchunk *c, uint64_t i)
{
	uint64_t j = i + 1;

	while (j < c->nr && c->what[j] == c->what[i])
		j++;
	return j;
}

/* Reads grains [i, j) of chunk c from the target into its buffer. */
static int compare_read(struct rqueue *q, struct rchunk *c, uint64_t i, uint64_t j)
{
	struct vol *v = q->src->v;
	uint64_t grain = v->row.grain_bytes, g = c->g0 + i, len = grains_len(v, g, j - i);
	uint8_t *buf = c->buf + i * grain;
	int rc = -EINVAL;

	/* O_DIRECT wants aligned lengths: a short last grain is read buffered */
	if (q->dfd >= 0 && len % IO_DIRECT_ALIGN == 0) {
		rc = util_pread_full(IO_DATA, q->dfd, buf, (size_t)len, g * grain);
		if (rc == -EINVAL) { /* not for this file after all: stay buffered */
			close(q->dfd);
			q->dfd = -1;
		}
	}
	if (rc == -EINVAL)
		rc = util_pread_full(IO_DATA, q->fd, buf, (size_t)len, g * grain);
	/* a short last grain compares zero-padded, as the tape stored it */
	if (!rc)
		memset(buf + len, 0, (size_t)((j - i) * grain - len));
	return rc;
}

/* Read chunk c (from grain g0) of the target and judge each grain against
 * the tape. With a known cut (src->cut), a grain the volume's tracking has not
 * seen written since the history was cut still holds the history's bytes: it
 * matches without being read. The others are read and hashed, unless that
 * has stopped paying: when fewer than 1 in RESTORE_MATCH_MIN compared grains
 * turn out to match (the volume was overwritten), they are fetched unread,
 * and every RESTORE_PROBE_EVERY-th chunk is compared again to notice when
 * matches come back (say, the part an interrupted restore already wrote). */
static int compare_chunk(struct rqueue *q, struct rchunk *c, uint64_t g0)
{
	struct vol *v = q->src->v;
	const struct tier_ops *t = v->e->tier;
	uint64_t grain = v->row.grain_bytes, j, compared = 0, matched = 0;
	uint8_t hl[32], hr[32];
	bool hash = !q->fetch_only || ++q->since_probe >= RESTORE_PROBE_EVERY;
	int rc;

	c->g0 = g0;
	c->nr = v->nr_grains - g0 < q->chunk_grains ? v->nr_grains - g0 : q->chunk_grains;
	for (uint64_t i = 0; i < c->nr; i++)
		c->what[i] = q->src->cut && track_grain_era(v->trk, g0 + i) <= q->src->cut ? G_MATCH
											: G_DATA;
	for (uint64_t i = 0; i < c->nr; i = j) {
		j = run_end(c, i);
		if (c->what[i] == G_MATCH)
			continue;
		if (hash) {
			rc = compare_read(q, c, i, j);
			if (rc)
				return rc;
		}
		for (uint64_t k = i; k < j; k++) {
			const uint8_t *p = c->buf + k * grain;
			int zero_src = t->image_grain_hash(q->src->ti, g0 + k, hr);
			if (zero_src < 0)
				return zero_src;
			if (!hash) { /* unread: a hole punched again costs next to nothing */
				c->what[k] = zero_src ? G_ZERO : G_DATA;
				continue;
			}
			bool local_zero = util_is_zero(p, grain);
			if (zero_src) {
				c->what[k] = local_zero ? G_MATCH : G_ZERO;
			} else if (local_zero) {
				c->what[k] = G_DATA;
			} else {
				rc = 0;
				if (t->image_block_name)
					rc = t->image_block_name(q->src->ti, p, grain, hl);
				else
					sha256(p, grain, hl);
				if (rc)
					return rc;
				c->what[k] = memcmp(hl, hr, 32) ? G_DATA : G_MATCH;
			}
			compared++;
			matched += c->what[k] == G_MATCH;
		}
	}
	q->compared += compared;
	if (hash && compared) {
		q->fetch_only = matched * RESTORE_MATCH_MIN < compared;
		q->since_probe = 0;
	}
	return 0;
}

/* Ask the tape image for exactly the runs of chunk c that will be fetched,
 * so that grains that already match are never downloaded (the image's own
 * read-ahead would guess sequential access and fetch them too). */
static void prefetch_chunk(struct restore_src *s, const struct rchunk *c)
{
	const struct tier_ops *t = s->v->e->tier;
	uint64_t j;

	if (!t->image_prefetch)
		return;
	for (uint64_t i = 0; i < c->nr; i = j) {
		j = run_end(c, i);
		if (c->what[i] == G_DATA)
			t->image_prefetch(s->ti, (c->g0 + i) * s->v->row.grain_bytes,
					  (size_t)grains_len(s->v, c->g0 + i, j - i));
	}
}

static void *compare_main(void *arg)
{
	struct rqueue *q = arg;
	uint64_t nr = q->src->v->nr_grains;
	int rc = 0;

	for (uint64_t g0 = 0; g0 < nr && !rc; g0 += q->chunk_grains) {
		pthread_mutex_lock(&q->lock);
		while (!q->stop && q->tail - q->head == RESTORE_QUEUE)
			pthread_cond_wait(&q->cond, &q->lock);
		struct rchunk *c = q->stop ? NULL : &q->slot[q->tail % RESTORE_QUEUE];
		pthread_mutex_unlock(&q->lock);
		if (!c)
			break;
		rc = compare_chunk(q, c, g0);
		if (rc)
			break;
		prefetch_chunk(q->src, c);
		pthread_mutex_lock(&q->lock);
		q->tail++;
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->lock);
	}
	pthread_mutex_lock(&q->lock);
	q->rc = rc;
	q->end = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* The next compared chunk; NULL at the end or on the compare thread's error (*rc). */
static struct rchunk *rq_next(struct rqueue *q, int *rc)
{
	struct rchunk *c = NULL;

	pthread_mutex_lock(&q->lock);
	while (q->head == q->tail && !q->end)
		pthread_cond_wait(&q->cond, &q->lock);
	if (q->head != q->tail)
		c = &q->slot[q->head % RESTORE_QUEUE];
	else
		*rc = q->rc;
	pthread_mutex_unlock(&q->lock);
	return c;
}

static void rq_release(struct rqueue *q)
{
	pthread_mutex_lock(&q->lock);
	q->head++;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void rq_stop(struct rqueue *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thread, NULL);
}

struct run_put {
	struct restore_dst *d;
	uint64_t off, len; /* the run */
	bool called;
};

/* image_read_iov's reply: write the run from the image's cache, with one
 * write call. Page-aligned pieces (a tape image's cache entries are) go
 * through the direct descriptor: the disk reads them from the cache
 * itself, with no copy into page-cache pages for a volume that is being
 * replaced anyway; the kernel drops any cached pages of the range. */
static int put_iov(void *arg, const struct iovec *iov, int cnt)
{
	struct run_put *r = arg;
	struct restore_dst *d = r->d;
	uint64_t len = 0;

	r->called = true;
	for (int i = 0; i < cnt; i++)
		len += iov[i].iov_len;
	if (len != r->len)
		return -EIO;
	d->touched = true; /* from here on the target may hold restored data */
	for (;;) {
		bool direct = d->wfd >= 0 && io_iov_aligned(iov, cnt, r->off);
		int fd = direct ? d->wfd : d->to_tv ? d->v->tv_fd : d->fd;
		int rc = d->to_tv ? vol_writev_internal(d->v, fd, iov, cnt, r->off)
				  : util_pwritev_full(IO_DATA, fd, iov, cnt, r->off);
		if (rc != -EINVAL || !direct)
			return rc;
		/* the target opened for direct I/O but refuses it (alignment
		 * larger than a page): write this piece and the rest buffered */
		close(d->wfd);
		d->wfd = -1;
	}
}

/* Fetch the run of grains at off and write it: straight from the image's
 * cache when the tier lends it (no copy in user space), in pieces of at
 * most RESTORE_PIECE_BYTES (a tier lends no more than a few MiB at once and
 * copies larger reads out into a fresh buffer), else through the chunk's
 * buffer p. */
static int put_run(struct restore_src *s, struct restore_dst *d, void *p, uint64_t len,
		   uint64_t off)
{
	const struct tier_ops *t = s->v->e->tier;
	uint64_t done = 0;

	while (t->image_read_iov && done < len) {
		uint64_t n = len - done < RESTORE_PIECE_BYTES ? len - done : RESTORE_PIECE_BYTES;
		struct run_put r = { d, off + done, n, false };
		int rc = t->image_read_iov(s->ti, (size_t)n, off + done, put_iov, &r);
		if (rc == -EOPNOTSUPP && !r.called)
			break; /* not lent: copy out the rest */
		if (rc)
			return rc;
		done += n;
	}
	if (done == len)
		return 0;
	ssize_t n = t->image_read(s->ti, (uint8_t *)p + done, (size_t)(len - done), off + done);
	if (n != (ssize_t)(len - done))
		return n < 0 ? (int)n : -EIO;
	d->touched = true;
	return dst_write(d, (uint8_t *)p + done, len - done, off + done);
}

/* Restore chunk c: runs of grains with the same verdict, one call each. */
static int restore_chunk(struct restore_src *s, struct restore_dst *d, struct rchunk *c)
{
	struct vol *v = s->v;
	uint64_t grain = v->row.grain_bytes, j, bytes0 = d->bytes;
	int rc = 0;

	for (uint64_t i = 0; i < c->nr && !rc; i = j) {
		uint8_t what = c->what[i];
		j = run_end(c, i);
		uint64_t off = (c->g0 + i) * grain, len = grains_len(v, c->g0 + i, j - i);
		uint8_t *p = c->buf + i * grain;
		if (what == G_MATCH) {
			d->skipped += j - i;
			progress(d, j - i);
			continue;
		}
		if (what == G_DATA) {
			rc = put_run(s, d, p, len, off);
		} else {
			d->touched = true;
			rc = dst_zero(d, p, len, off);
		}
		if (rc)
			break;
		d->copied += j - i;
		if (what == G_DATA)
			d->bytes += len;
		progress(d, j - i);
	}
	/* Start writing the chunk back now rather than all of the volume at
	 * the final fsync: the disk works while the next chunks arrive. */
	if (!rc && d->bytes > bytes0)
		sync_file_range(d->to_tv ? v->tv_fd : d->fd, (off_t)(c->g0 * grain),
				(off_t)grains_len(v, c->g0, c->nr), SYNC_FILE_RANGE_WRITE);
	return rc;
}

/* Every grain of the tape history, skipping those the target already holds. */
static int restore_tape(struct restore_src *s, struct restore_dst *d)
{
	struct vol *v = s->v;
	uint64_t grain = v->row.grain_bytes;
	struct rqueue *q = calloc(1, sizeof(*q));
	struct rchunk *c;
	int rc = 0, k;

	if (!q)
		return -ENOMEM;
	q->src = s;
	q->fd = d->to_tv ? v->tv_fd : d->fd;
	q->dfd = reopen_direct(q->fd, O_RDONLY);
	d->wfd = reopen_direct(q->fd, O_WRONLY);
	q->chunk_grains = RESTORE_CHUNK_BYTES / grain ? RESTORE_CHUNK_BYTES / grain : 1;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	for (int i = 0; i < RESTORE_QUEUE; i++) {
		/* compared grains are read into it with O_DIRECT */
		q->slot[i].buf = iomem_alloc(q->chunk_grains * grain);
		if (!q->slot[i].buf) {
			rc = -ENOMEM;
			goto out_free;
		}
	}
	d->total = v->nr_grains;
	k = pthread_create(&q->thread, NULL, compare_main, q);
	if (k) {
		rc = -k;
		goto out_free;
	}
	while (!rc && (c = rq_next(q, &rc))) {
		rc = restore_chunk(s, d, c);
		rq_release(q);
	}
	rq_stop(q);
	d->compared = q->compared;
out_free:
	if (q->dfd >= 0)
		close(q->dfd);
	if (d->wfd >= 0)
		close(d->wfd);
	d->wfd = -1;
	for (int i = 0; i < RESTORE_QUEUE; i++)
		iomem_free(q->slot[i].buf, q->chunk_grains * grain);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
	return rc;
}


/* restore -i (under e->lock): the volume presents h's content at once and a
 * fill (fill.h) writes it in underneath */
static int restore_instant(struct engine *e, struct vol *v, struct history *h, bool tape,
			   struct sbuf *reply, char *err, size_t errlen)
{
	uint64_t version = h->row.version, grains = 0;
	int rc;

	v->restoring = true; /* no writer opens while fill_start waits on the source */
	rc = fill_start(e, v, v, version, tape ? HIMG_TAPE : HIMG_DISK, &grains, err, errlen);
	v->restoring = false;
	if (rc)
		return rc;
	pthread_mutex_unlock(&e->lock);
	/* the kernel's cached pages of the volume hold its content before */
	if (e->inval_data)
		e->inval_data(e->inval_arg, (uint64_t)v->row.id);
	pthread_mutex_lock(&e->lock);
	atomic_fetch_add(&e->m.restores, 1);
	vol_log(v, "live restore of version %llu from %s started: %llu grains to fill",
		(unsigned long long)version, tape ? "tape" : "disk", (unsigned long long)grains);
	sbuf_addf(reply,
		  "ok volume=%s version=%llu media=%s target=volume mode=instant "
		  "grains_to_fill=%llu\n%s acmrestore completed\n",
		  v->row.name, (unsigned long long)version, tape ? "TAPE" : "DISK",
		  (unsigned long long)grains, v->row.name);
	err[0] = 0;
	return 0;
}

int do_restore(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	       char *err, size_t errlen)
{
	struct restore_src src = { v, NULL, NULL, false, 0 };
	struct restore_dst d = { .v = v, .to_tv = !c->has_path, .fd = -1, .wfd = -1 };
	bool to_tv = d.to_tv, diff = false, created = false;
	int fd = -1, rc;
	struct pool *p = NULL;
	char manifest[sizeof(((struct history *)0)->row.manifest)] = "";

	rc = engine_hook_pre(e, v, "restore", err, errlen);
	if (rc)
		return rc;
	/* from here on every way out runs restore.post (at out_unlock) */
	pthread_mutex_lock(&e->lock);
	src.h = hist_select(v, c, c->media, true);
	if (!src.h) {
		rc = errf(err, errlen, -ENOENT, "no succeeded history to restore%s",
			  c->sel == SEL_LATEST ? "" : " matches the selection");
		goto out_unlock;
	}
	if (c->media == MEDIA_TAPE)
		src.tape = true;
	else if (c->media == MEDIA_DISK)
		src.tape = false;
	else
		src.tape = !(src.h->bv && src.h->row.disk_status == HS_SUCCEEDED);
	if (!src.tape && (!src.h->bv || src.h->row.disk_status != HS_SUCCEEDED)) {
		rc = errf(err, errlen, src.h->bv ? -EIO : -ENOENT,
			  "version %llu has no succeeded disk history",
			  (unsigned long long)src.h->row.version);
		goto out_unlock;
	}
	if (src.tape && src.h->row.tape_status != HS_SUCCEEDED) {
		rc = errf(err, errlen, src.h->row.tape_status == HS_NONE ? -ENOENT : -EIO,
			  "version %llu has no succeeded tape history",
			  (unsigned long long)src.h->row.version);
		goto out_unlock;
	}
	if (v->restoring) {
		rc = errf(err, errlen, -EBUSY, "a restore of %s is running", v->row.name);
		goto out_unlock;
	}
	if (to_tv && v->writers > 0) {
		rc = errf(err, errlen, -EBUSY, "%s is open for writing", v->row.name);
		goto out_unlock;
	}
	if (to_tv && v->jobs) {
		rc = errf(err, errlen, -EBUSY, "a backup copy of %s is running", v->row.name);
		goto out_unlock;
	}
	if (to_tv && v->fill) {
		rc = errf(err, errlen, -EBUSY,
			  "%s is still filling from a history (%d%% done): restore once the fill "
			  "has ended",
			  v->row.name, fill_pct(v));
		goto out_unlock;
	}
	if (c->instant) {
		rc = restore_instant(e, v, src.h, src.tape, reply, err, errlen);
		goto out_unlock;
	}
	if (!to_tv && !src.tape && (src.h->bv->row.tracking || src.h->bv->job)) {
		rc = errf(err, errlen, -EBUSY,
			  "%s is still %s: restoring elsewhere needs 'canceltrk -bd %s' first",
			  src.h->bv->name, src.h->bv->job ? "copying" : "tracking",
			  src.h->bv->name);
		goto out_unlock;
	}
	if (src.tape) {
		p = engine_pool(e, src.h->row.pool);
		if (!p) {
			rc = errf(err, errlen, -EIO, "pool %s is gone", src.h->row.pool);
			goto out_unlock;
		}
		rc = engine_pool_open(e, p, err, errlen);
		if (rc)
			goto out_unlock;
		snprintf(manifest, sizeof(manifest), "%s", src.h->row.manifest);
	}
	diff = to_tv && !src.tape && src.h->bv->row.tracking;
	src.h->readers++;
	if (to_tv) {
		v->restoring = true;
		snprintf(v->row.state, sizeof(v->row.state), "restoring");
		rc = catalog_put_volume(e->cat, &v->row);
		if (rc) {
			v->restoring = false;
			src.h->readers--;
			snprintf(v->row.state, sizeof(v->row.state), "ok");
			errf(err, errlen, rc, "cannot record the restore: %s", strerror(-rc));
			goto out_unlock;
		}
	}
	uint32_t base = diff ? src.h->bv->row.track_base : 0;
	src.cut = to_tv ? src.h->row.cut_era : 0;
	struct tier_manifest_info expect = {
		.volume = v->row.name,
		.version = src.h->row.version,
		.size_bytes = v->row.size_bytes,
		.grain_bytes = v->row.grain_bytes,
	};
	pthread_mutex_unlock(&e->lock);

	/* the object store may be slow or not answer (issue 17): the image is
	 * opened without the engine lock; the history is pinned (readers) and
	 * the volume marked restoring meanwhile, and out_end undoes both */
	if (src.tape) {
		rc = e->tier->image_open(p->tp, manifest, &expect, &src.ti);
		if (rc) {
			errf(err, errlen, rc, "cannot open tape history %llu: %s",
			     (unsigned long long)expect.version, strerror(-rc));
			goto out_end;
		}
	}

	atomic_store(&v->restore_pct, 0);
	if (!to_tv) {
		uint64_t tsize = 0;
		fd = open(c->path, O_RDWR | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT) {
			fd = open(c->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			created = fd >= 0;
			if (fd >= 0 && ftruncate(fd, (off_t)v->row.size_bytes))
				rc = -errno;
		}
		if (fd < 0) {
			rc = errf(err, errlen, -errno, "cannot open %s: %s", c->path, strerror(errno));
			goto out_end;
		}
		int k = target_size(fd, &tsize);
		if (k < 0) {
			rc = k;
			goto out_end;
		}
		d.blk = k == 1;
		if (d.blk && tsize < v->row.size_bytes) {
			rc = errf(err, errlen, -EINVAL, "%s is smaller than the volume", c->path);
			goto out_end;
		}
		if (!d.blk && tsize != v->row.size_bytes && ftruncate(fd, (off_t)v->row.size_bytes)) {
			rc = -errno;
			goto out_end;
		}
	}
	d.fd = fd;
	if (!rc)
		rc = src.tape ? restore_tape(&src, &d) : restore_disk(&src, &d, diff, base);
	if (!rc) {
		if (to_tv)
			rc = vol_fsync(v, false);
		else if (io_fsync(IO_DATA, fd))
			rc = -errno;
		/* a file the restore created: its name is durable too */
		else if (created)
			rc = util_fsync_dir(IO_DATA, c->path);
	}
	if (rc && !err[0])
		errf(err, errlen, rc, "restore failed after %llu grains: %s",
		     (unsigned long long)d.copied, strerror(-rc));
	if (to_tv && e->inval_data)
		e->inval_data(e->inval_arg, (uint64_t)v->row.id);
out_end:
	if (fd >= 0)
		close(fd);
	if (src.ti)
		e->tier->image_close(src.ti);
	atomic_store(&v->restore_pct, -1);
	pthread_mutex_lock(&e->lock);
	src.h->readers--;
	if (to_tv) {
		v->restoring = false;
		/* a restore that failed after writing leaves mixed content: say so durably */
		snprintf(v->row.state, sizeof(v->row.state), rc && d.touched ? "needs-restore" : "ok");
		int rc2 = catalog_put_volume(e->cat, &v->row);
		if (!rc && rc2)
			rc = rc2;
	}
	if (!rc) {
		atomic_fetch_add(&e->m.restores, 1);
		atomic_fetch_add(&e->m.restore_grains, d.copied);
		atomic_fetch_add(&e->m.restore_bytes, d.bytes);
		vol_log(v, "restore of version %llu from %s to %s: %s, %llu grains written, %llu "
			   "already matching (%llu read and compared)",
			(unsigned long long)src.h->row.version, src.tape ? "tape" : "disk",
			to_tv ? "the volume" : c->path, diff ? "differential" : "full",
			(unsigned long long)d.copied, (unsigned long long)d.skipped,
			(unsigned long long)d.compared);
		sbuf_addf(reply,
			  "ok volume=%s version=%llu media=%s target=%s mode=%s grains_copied=%llu "
			  "bytes_copied=%llu",
			  v->row.name, (unsigned long long)src.h->row.version,
			  src.tape ? "TAPE" : "DISK", to_tv ? "volume" : "path",
			  diff ? "diff" : "full", (unsigned long long)d.copied,
			  (unsigned long long)d.bytes);
		if (src.tape)
			sbuf_addf(reply, " grains_compared=%llu", (unsigned long long)d.compared);
		sbuf_addf(reply, "\n%s acmrestore completed\n", v->row.name);
		err[0] = 0;
	}
out_unlock:
	pthread_mutex_unlock(&e->lock);
	if (rc && !err[0])
		errf(err, errlen, rc, "restore failed: %s", strerror(-rc));
	/* after the volume is usable again (restoring cleared, state recorded) */
	engine_hook_post(e, v, "restore", rc, err);
	return rc;
}

/* ---------- tape requests ---------- */

int do_tphistcopy(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
		  char *err, size_t errlen)
{
	struct history *h;
	int rc;

	rc = engine_hook_pre(e, v, "tapecopy", err, errlen);
	if (rc)
		return rc;
	pthread_mutex_lock(&e->lock);
	h = hist_select(v, c, MEDIA_DISK, true);
	if (!h || !h->bv) {
		rc = errf(err, errlen, -ENOENT, "no such disk history");
		goto out_unlock;
	}
	if (h->row.disk_status != HS_SUCCEEDED) {
		rc = errf(err, errlen, -EBUSY, "disk history %llu is not complete (%s)",
			  (unsigned long long)h->row.version,
			  h->row.disk_status == HS_EXECUTING ? "copying" : "failed");
		goto out_unlock;
	}
	if (h->row.tape_status == HS_EXECUTING || h->tjob) {
		rc = errf(err, errlen, -EBUSY, "a tape copy of version %llu is running",
			  (unsigned long long)h->row.version);
		goto out_unlock;
	}
	if (h->row.tape_status == HS_SUCCEEDED) {
		rc = errf(err, errlen, -EEXIST, "version %llu is already on tape",
			  (unsigned long long)h->row.version);
		goto out_unlock;
	}
	if (!engine_pool(e, v->row.pool)) {
		rc = errf(err, errlen, -ENOENT, "tape pool %s does not exist", v->row.pool);
		goto out_unlock;
	}
	h->row.btype = (int)c->btype;
	snprintf(h->row.pool, sizeof(h->row.pool), "%s", v->row.pool);
	rc = tape_start_copy(e, v, h, false, err, errlen);
	if (rc)
		goto out_unlock;
	sbuf_addf(reply, "ok volume=%s version=%llu pool=%s\n%s acmtphistcopy completed\n",
		  v->row.name, (unsigned long long)h->row.version, h->row.pool, v->row.name);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	/* a copy that started runs tapecopy.post when it ends (tjob_main) */
	if (rc) {
		if (!err[0])
			errf(err, errlen, rc, "tape copy failed: %s", strerror(-rc));
		engine_hook_post(e, v, "tapecopy", rc, err);
	}
	return rc;
}

int do_verify(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
	      char *err, size_t errlen)
{
	struct history *h;
	struct himg *im = NULL;
	uint64_t bad = 0, version;
	bool tape;
	int rc;

	pthread_mutex_lock(&e->lock);
	h = hist_select(v, c, c->media, true);
	if (!h) {
		pthread_mutex_unlock(&e->lock);
		return errf(err, errlen, -ENOENT, "no such succeeded history");
	}
	version = h->row.version;
	tape = c->media == MEDIA_TAPE || (c->media == MEDIA_UNSET && !h->bv);
	pthread_mutex_unlock(&e->lock);

	rc = himg_open(v, version, tape ? HIMG_TAPE : HIMG_DISK, &im);
	if (rc)
		return errf(err, errlen, rc, "cannot open version %llu: %s",
			    (unsigned long long)version, strerror(-rc));
	if (tape) {
		rc = e->tier->image_verify(im_tier(im), &bad);
	} else {
		/* a disk image has no stored checksums: read it all back */
		char *buf = malloc(ACM_MiB);
		if (!buf)
			rc = -ENOMEM;
		for (uint64_t off = 0; buf && off < v->row.size_bytes; off += ACM_MiB) {
			ssize_t n = himg_read(im, buf, ACM_MiB, off);
			if (n < 0)
				bad += ACM_MiB / v->row.grain_bytes;
		}
		free(buf);
	}
	himg_close(im);
	if (rc)
		return errf(err, errlen, rc, "verify failed: %s", strerror(-rc));
	pthread_mutex_lock(&e->lock);
	h = vol_hist(v, version);
	if (h) {
		h->row.verify_state = bad ? 2 : 1;
		h->row.verify_date = util_now();
		if (save_hist(e, h))
			log_err("cannot record verify result");
	}
	pthread_mutex_unlock(&e->lock);
	vol_log(v, "verify of version %llu (%s): %s, %llu damaged grains",
		(unsigned long long)version, tape ? "tape" : "disk", bad ? "DAMAGED" : "ok",
		(unsigned long long)bad);
	if (bad)
		return errf(err, errlen, -EIO, "version %llu is damaged: %llu bad grains",
			    (unsigned long long)version, (unsigned long long)bad);
	sbuf_addf(reply, "ok volume=%s version=%llu media=%s bad_grains=0\n", v->row.name,
		  (unsigned long long)version, tape ? "TAPE" : "DISK");
	return 0;
}
